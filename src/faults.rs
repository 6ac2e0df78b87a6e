//! The failure gallery: every classic attention bug made to happen on purpose, with what a
//! learner sees and the check that catches it (`cargo run --release --example faults`).
//!
//! | failure                                  | inspect first                 | exhibit                          | caught by                                  |
//! |------------------------------------------|-------------------------------|----------------------------------|--------------------------------------------|
//! | low loss but nonsense generation         | mask missing or wrong way     | the leaky [`MaskMode`]s          | the causality probe                        |
//! | shape mismatch in score computation      | wrong transpose of K          | [`Fault::TransposedKey`]         | the score shape check ([`Error::Shape`])   |
//! | output shape stuck at `[B, H, T, Dh]`    | forgot the merge step         | [`Fault::MissingMerge`]          | the `W_O` input check ([`Error::Shape`])   |
//! | cache grows incorrectly                  | concatenating on a wrong axis | [`Fault::CacheWrongAxis`]        | the cache append check ([`Error::Shape`])  |
//! | naive and cached decoding differ         | stale cache                   | [`Fault::StaleCache`]            | cached == naive, and the cache's length    |
//! | naive and cached decoding differ         | position handling             | [`Fault::PositionsRestart`]      | cached == naive                            |
//!
//! The faults are planted with [`Gpt::with_fault`] (see [`crate::model::fault`]); the masks are
//! the model's [`crate::GptConfig::mask_mode`].

use burn::module::Module;
use burn::tensor::Device;
use serde::Serialize;

use crate::device::{floats, token_tensor};
use crate::error::{Error, Result};
use crate::generate::{DecodeMode, GenerationConfig, Generator};
use crate::leak::{CausalityReport, causality_probe};
use crate::model::{Fault, Gpt, MaskMode};

/// Cached and naive logits further apart than this have parted (the tolerance of the cache
/// tests).
pub const PARTED: f32 = 1e-4;

/// One exhibit of the gallery: a planted fault or a leaky mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhibit {
    /// A fault planted with [`Gpt::with_fault`].
    Fault(Fault),
    /// A model built with a leaky mask.
    Mask(MaskMode),
}

impl Exhibit {
    /// Every exhibit: the leaky masks first (the first row of the table), then the faults.
    pub fn all() -> Vec<Exhibit> {
        MaskMode::LEAKY
            .into_iter()
            .map(Exhibit::Mask)
            .chain(Fault::ALL.into_iter().map(Exhibit::Fault))
            .collect()
    }

    /// The name `--fault` takes: the fault's, or `mask-` and the mask's.
    pub fn name(self) -> String {
        match self {
            Exhibit::Fault(fault) => fault.name().into(),
            Exhibit::Mask(mode) => format!("mask-{}", mode.name()),
        }
    }

    /// The exhibit called `name`.
    ///
    /// # Errors
    /// [`Error::Config`] listing the names.
    pub fn from_name(name: &str) -> Result<Exhibit> {
        Exhibit::all()
            .into_iter()
            .find(|exhibit| exhibit.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = Exhibit::all().into_iter().map(Exhibit::name).collect();
                Error::Config(format!(
                    "unknown fault `{name}`; one of: {}",
                    names.join(", ")
                ))
            })
    }

    /// What a learner sees first.
    pub fn symptom(self) -> &'static str {
        match self {
            Exhibit::Fault(fault) => fault.symptom(),
            Exhibit::Mask(_) => "low loss but nonsense generation",
        }
    }

    /// What to inspect first.
    pub fn inspect(self) -> &'static str {
        match self {
            Exhibit::Fault(fault) => fault.inspect(),
            Exhibit::Mask(_) => "missing or wrong mask orientation",
        }
    }

    /// The check that catches it.
    pub fn caught_by(self) -> &'static str {
        match self {
            Exhibit::Mask(_) => "causality probe (tests/causality.rs)",
            Exhibit::Fault(Fault::TransposedKey) => "score shape check (tests/faults.rs)",
            Exhibit::Fault(Fault::MissingMerge) => "W_O input shape check (tests/faults.rs)",
            Exhibit::Fault(Fault::CacheWrongAxis) => "cache append check (tests/faults.rs)",
            Exhibit::Fault(Fault::StaleCache) => {
                "cached == naive and cache length (tests/cache.rs, tests/faults.rs)"
            }
            Exhibit::Fault(Fault::PositionsRestart) => {
                "cached == naive (tests/cache.rs, tests/faults.rs)"
            }
        }
    }
}

/// Where cached and naive greedy decoding part under a fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Divergence {
    /// The first step whose cached logits differ from the naive ones by more than [`PARTED`]:
    /// 0 is the prefill's last position, `k` the `k`-th decode step; `None` if they never do.
    pub first_step: Option<usize>,
    /// The largest |Δ logit| at that step (0 when they never part).
    pub max_abs_diff: f32,
    /// The cache's length after the prefill and after each decode step.
    pub cache_lens: Vec<usize>,
    /// What the lengths should be: the prompt's length, then one more per step.
    pub expected_cache_lens: Vec<usize>,
    /// Greedy tokens decoded with the cache (on their own history).
    pub cached_tokens: Vec<usize>,
    /// Greedy tokens decoded naively (the reference).
    pub naive_tokens: Vec<usize>,
}

/// What an exhibit does.
#[derive(Debug)]
pub enum Outcome {
    /// The crate refused the call with its own error (a shape fault).
    Refused(Error),
    /// Cached and naive decoding compared (a cache or position fault).
    Decoded(Divergence),
    /// The causality probe on a model with the mask (a leaky mask).
    Probed(CausalityReport),
}

/// Show `exhibit` on `model` (a correct model; the exhibit is planted into a copy): shape
/// faults run a forward pass over `prompt`, cache and position faults decode `steps` tokens
/// after it both ways, masks rebuild the model with the mask and probe its causality.
///
/// # Errors
/// The model's errors other than the one a shape fault is expected to cause; a shape fault
/// that causes none is [`Error::Config`].
pub fn show(
    exhibit: Exhibit,
    model: &Gpt,
    prompt: &[usize],
    steps: usize,
    device: &Device,
) -> Result<Outcome> {
    match exhibit {
        Exhibit::Mask(mode) => {
            // The same weights behind the leaky mask (the mask is not a weight).
            let config = model.config().clone().with_mask_mode(mode);
            let leaky = config
                .init(device)?
                .load_record(model.clone().into_record());
            Ok(Outcome::Probed(causality_probe(&leaky, prompt, device)?))
        }
        Exhibit::Fault(fault @ (Fault::TransposedKey | Fault::MissingMerge)) => {
            let faulty = model.clone().with_fault(Some(fault));
            let tokens = token_tensor(prompt, 1, prompt.len(), device)?;
            match faulty.forward(tokens) {
                Err(err @ Error::Shape { .. }) => Ok(Outcome::Refused(err)),
                Err(err) => Err(err),
                Ok(_) => Err(Error::Config(format!(
                    "the {fault} fault went unnoticed: with {} tokens and heads of width {} the \
                     wrong product has the right shape; use a prompt of another length",
                    prompt.len(),
                    model.config().head_dim()
                ))),
            }
        }
        Exhibit::Fault(fault) => {
            let faulty = model.clone().with_fault(Some(fault));
            match divergence(&faulty, prompt, steps, device) {
                Err(err @ Error::Shape { .. }) => Ok(Outcome::Refused(err)),
                other => other.map(Outcome::Decoded),
            }
        }
    }
}

/// Greedy decoding of `steps` tokens after `prompt`, naive and cached, on `model` (with its
/// fault, if any). The naive run's logits are compared with those of a cached run fed the
/// naive tokens, so every step compares the same history; the tokens are each path's own.
///
/// # Errors
/// The model's errors (a cache fault's included).
pub fn divergence(
    model: &Gpt,
    prompt: &[usize],
    steps: usize,
    device: &Device,
) -> Result<Divergence> {
    let generator = Generator::new(model, device);
    let greedy = |mode, record_logits| {
        let config = GenerationConfig::new(steps)
            .with_mode(mode)
            .with_record_logits(record_logits);
        generator.generate_all(&[prompt.to_vec()], &config)
    };
    // The naive run keeps the logits each of its tokens was chosen from: the reference.
    let naive = greedy(DecodeMode::Naive, true)?;
    let cached_tokens = greedy(DecodeMode::Cached, false)?.tokens[0].clone();
    let naive_tokens = naive.tokens[0].clone();

    let mut cache = model.new_cache(1, device);
    let mut fed = prompt.to_vec();
    let mut first_step = None;
    let mut max_abs_diff = 0.0;
    let mut cache_lens = Vec::new();
    for (step, (&next, naive_logits)) in naive_tokens.iter().zip(&naive.step_logits).enumerate() {
        let cached = last_logits(model.forward_cached(row(&fed, device)?, &mut cache)?)?;
        cache_lens.push(cache.len());
        let diff = crate::generate::max_abs_diff(&cached, naive_logits);
        if first_step.is_none() && diff > PARTED {
            first_step = Some(step);
            max_abs_diff = diff;
        }
        fed = vec![next];
    }
    let expected_cache_lens = (0..cache_lens.len())
        .map(|step| prompt.len() + step)
        .collect();
    Ok(Divergence {
        first_step,
        max_abs_diff,
        cache_lens,
        expected_cache_lens,
        cached_tokens,
        naive_tokens,
    })
}

fn row(ids: &[usize], device: &Device) -> Result<burn::tensor::Tensor<2, burn::tensor::Int>> {
    token_tensor(ids, 1, ids.len(), device)
}

/// The last position's logits of a `[1, T, V]` output, on the host.
fn last_logits(logits: burn::tensor::Tensor<3>) -> Result<Vec<f32>> {
    let [_, seq, vocab] = logits.dims();
    floats(logits.slice([0..1, seq - 1..seq, 0..vocab]))
}
