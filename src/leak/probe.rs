//! Measurements that tell a causal model from a leaky one: the causality probe and the honest
//! loss.
//!
//! The causality probe asks the question directly: if the token at position `j` changes, do the
//! logits at any earlier position change? For a causal model they cannot; for a leaky one they do.
//!
//! The honest loss asks it through the loss: predict each token from the tokens before it only.
//! A leaky model's teacher-forced loss is low because it reads the answer from the input; its
//! honest loss shows what it can really predict.

use burn::tensor::Device;

use crate::device::{floats, token_tensor};
use crate::error::{Error, Result};
use crate::model::Gpt;
use crate::text::Batch;
use crate::train::cross_entropy;

/// Logits at an earlier position that move by more than this count as a leak. A causal model
/// computes those positions from identical inputs, so they agree to rounding at most.
pub const PROBE_TOLERANCE: f32 = 1e-5;

/// What [`causality_probe`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct CausalityReport {
    /// Probed positions `j` whose change moved the logits of some position before `j`.
    pub violations: usize,
    /// Positions probed (every position but the first, which has nothing before it).
    pub positions_probed: usize,
    /// The largest change seen at any earlier position, `max |Δ logit|`.
    pub max_leak: f32,
}

impl CausalityReport {
    /// Whether no probed position leaked.
    pub fn is_causal(&self) -> bool {
        self.violations == 0
    }
}

/// Change the token at each position `j = 1..T` of `tokens` in turn and count the positions
/// whose change reaches the logits of any position before `j`.
///
/// All `T - 1` perturbed copies run as one batch beside the unperturbed sequence.
///
/// # Errors
/// [`Error::Tokens`] for fewer than two tokens or ids outside the vocabulary, and the model's
/// errors (for instance a sequence longer than its context).
pub fn causality_probe(model: &Gpt, tokens: &[usize], device: &Device) -> Result<CausalityReport> {
    let seq = tokens.len();
    let vocab = model.config().vocab_size;
    if seq < 2 {
        return Err(Error::Tokens(format!(
            "the causality probe needs at least 2 tokens, got {seq}"
        )));
    }
    if let Some(bad) = tokens.iter().find(|&&id| id >= vocab) {
        return Err(Error::Tokens(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    // Row 0 is the original; row j (1..seq) has token j replaced by the next id in the vocabulary.
    let mut rows = Vec::with_capacity(seq * seq);
    for changed in 0..seq {
        rows.extend(tokens.iter().enumerate().map(|(pos, &id)| {
            if changed > 0 && pos == changed {
                (id + 1) % vocab
            } else {
                id
            }
        }));
    }
    let logits = model.forward(token_tensor(&rows, seq, seq, device)?)?;
    let v = logits.dims()[2];
    let logits = floats(logits)?;
    let at = |row: usize, pos: usize| &logits[(row * seq + pos) * v..(row * seq + pos + 1) * v];

    let mut report = CausalityReport {
        violations: 0,
        positions_probed: seq - 1,
        max_leak: 0.0,
    };
    for changed in 1..seq {
        let leak = (0..changed)
            .flat_map(|pos| at(0, pos).iter().zip(at(changed, pos)))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        report.max_leak = report.max_leak.max(leak);
        if leak > PROBE_TOLERANCE {
            report.violations += 1;
        }
    }
    Ok(report)
}

/// Honest loss on `batch`: the cross-entropy of predicting each target from the tokens before
/// it *only*. For every `c` the input is cut to the first `c` tokens of the window, so nothing
/// after the predicted token exists to be peeked at, and the last position's logits predict
/// `targets[c - 1]`. This is what generation faces. It scores the same positions as
/// [`crate::train::teacher_forced_loss`], so for a causal model the two agree.
///
/// # Errors
/// The model's errors.
pub fn honest_loss(model: &Gpt, batch: &Batch, device: &Device) -> Result<f32> {
    let (rows, seq) = (batch.batch_size, batch.seq_len);
    let mut total = 0.0;
    for len in 1..=seq {
        let prefix: Vec<usize> = batch
            .inputs
            .chunks(seq)
            .flat_map(|window| window[..len].iter().copied())
            .collect();
        let logits = model.forward(token_tensor(&prefix, rows, len, device)?)?;
        let vocab = logits.dims()[2];
        let last = logits
            .slice([0..rows, len - 1..len, 0..vocab])
            .reshape([rows, vocab]);
        let targets: Vec<usize> = batch
            .targets
            .chunks(seq)
            .map(|window| window[len - 1])
            .collect();
        let targets = token_tensor(&targets, 1, rows, device)?.reshape([rows]);
        total += cross_entropy(last, targets).into_scalar::<f32>();
    }
    Ok(total / seq as f32)
}
