//! Turning logits into text: a seeded [`Sampler`] and the [`Generator`], which decodes with the
//! KV cache (prefill the prompt in one pass, then one token per pass) or naively (the whole
//! context recomputed at every step) for comparison.
//!
//! # Past the context window
//! The model has learned positions `0..max_seq_len` only. When a sequence's context is full
//! and one more token must be fed, the generator slides its window: it keeps the last
//! `max_seq_len / 2` tokens, resets the cache and prefills them again at positions
//! `0..max_seq_len / 2`. That happens once every `max_seq_len / 2` new tokens and costs one
//! prefill of `max_seq_len / 2` tokens (counted in [`GenerationStats::window_slides`]), so on
//! average one extra forward position per new token, instead of the whole context per token
//! that naive decoding pays. The naive mode slides at the same moments, so both modes see
//! identical contexts and agree.

use std::time::Instant;

use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::cache::KvCache;
use crate::error::{Error, Result};
use crate::host::{floats, ints, token_tensor};
use crate::model::{ForwardOptions, Gpt};

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Divides the logits before the softmax; `0` means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `p`.
    pub top_p: Option<f32>,
    /// Seeds the sampler's RNG: the same seed gives the same text.
    pub seed: u64,
}

impl SamplingConfig {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }

    /// Sampling at `temperature` with no truncation.
    pub fn with_temperature(temperature: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_k: None,
            top_p: None,
            seed,
        }
    }

    /// Check the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a negative or non-finite temperature, `top_k = 0`, or `top_p`
    /// outside `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Config(format!(
                "temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("top_k must be at least 1".into()));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::Config(format!("top_p must be in (0, 1], got {p}")));
        }
        Ok(())
    }
}

/// Chooses tokens from logits as a [`SamplingConfig`] says, reproducibly.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    ///
    /// # Errors
    /// As [`SamplingConfig::validate`].
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// The probabilities the sampler draws from for one row of logits, after temperature,
    /// top-k and top-p (tokens cut off get exactly 0). Greedy puts all the mass on the argmax.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f32> {
        let mut probs = vec![0.0; logits.len()];
        if self.config.temperature == 0.0 {
            probs[argmax(logits)] = 1.0;
            return probs;
        }
        // Token ids from most to least likely.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let keep = self.config.top_k.unwrap_or(order.len()).min(order.len());
        let order = &order[..keep];

        let max = logits[order[0]];
        let weights: Vec<f32> = order
            .iter()
            .map(|&id| ((logits[id] - max) / self.config.temperature).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        let mut kept_mass = 0.0;
        for (&id, weight) in order.iter().zip(weights) {
            if self.config.top_p.is_some_and(|p| kept_mass >= p) {
                break;
            }
            let p = weight / total;
            probs[id] = p;
            kept_mass += p;
        }
        probs.iter_mut().for_each(|p| *p /= kept_mass);
        probs
    }

    /// Choose one token per row, on the device: only the chosen ids need to come back.
    ///
    /// The same distribution as [`Sampler::distribution`], built with tensor ops: sort each
    /// row's scaled logits, softmax, cut the tail (top-k by rank, top-p by the mass before each
    /// token), renormalise, and pick the first token whose cumulative probability reaches a
    /// uniform draw. The draws come from the sampler's seeded RNG, so runs are reproducible.
    ///
    /// # Shapes
    /// - logits: `[B, V]`
    /// - output: `[B]` token ids
    pub fn sample(&mut self, logits: Tensor<2>) -> Tensor<1, Int> {
        let [batch, vocab] = logits.dims();
        if self.config.temperature == 0.0 {
            return logits.argmax(1).reshape([batch]);
        }
        let device = logits.device();
        let (sorted, order) = logits
            .div_scalar(self.config.temperature)
            .sort_descending_with_indices(1);
        let mut probs = softmax(sorted, 1);
        if let Some(k) = self.config.top_k {
            let rank = Tensor::<1, Int>::arange(0..vocab as i64, &device).reshape([1, vocab]);
            probs = normalise(probs.mask_fill(rank.greater_equal_elem(k as i64), 0.0));
        }
        if let Some(p) = self.config.top_p {
            // Drop a token when the tokens ranked above it already hold at least `p`.
            let mass_before = probs.clone().cumsum(1) - probs.clone();
            probs = normalise(probs.mask_fill(mass_before.greater_equal_elem(p), 0.0));
        }
        let cumulative = probs.cumsum(1);
        // Scale each draw by its row's total so rounding can never push it past the last token.
        let total = cumulative.clone().slice([0..batch, vocab - 1..vocab]);
        let draws: Vec<f32> = (0..batch).map(|_| self.rng.random()).collect();
        let draws = Tensor::<2>::from_data(TensorData::new(draws, [batch, 1]), &device) * total;
        // Tokens whose cumulative probability is still below the draw come before the choice;
        // a token with zero probability never ends that run, so it is never chosen.
        let rank = cumulative
            .lower(draws.expand([batch, vocab]))
            .int()
            .sum_dim(1);
        order.gather(1, rank).reshape([batch])
    }
}

/// Rescale each row to sum to one.
///
/// # Shapes
/// - probs: `[B, V]`, output: `[B, V]`
fn normalise(probs: Tensor<2>) -> Tensor<2> {
    let total = probs.clone().sum_dim(1);
    probs / total
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(id, _)| id)
}

/// How each step's logits are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecodeMode {
    /// Prefill once, then one token per forward pass against the KV cache.
    Cached,
    /// Recompute the whole context at every step: the reference the cache must match.
    Naive,
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// New tokens per prompt (fewer when a row hits a stop sequence).
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub sampling: SamplingConfig,
    /// A row stops once its new tokens end with one of these id sequences.
    pub stop: Vec<Vec<usize>>,
    /// Cached or naive decoding.
    pub mode: DecodeMode,
    /// Keep every step's logits (for comparing decoding modes).
    pub record_logits: bool,
}

impl GenerateOptions {
    /// Greedy decoding of `max_new_tokens` tokens with the cache.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            sampling: SamplingConfig::greedy(),
            stop: Vec::new(),
            mode: DecodeMode::Cached,
            record_logits: false,
        }
    }
}

/// Where the time went and how the cache behaved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationStats {
    /// Prompt tokens processed by the first prefill (all rows, padding included).
    pub prefill_tokens: usize,
    /// Seconds of the first prefill.
    pub prefill_seconds: f64,
    /// Tokens produced by decode steps (all rows, one per row per step).
    pub decode_tokens: usize,
    /// Seconds of the decode steps, window slides included.
    pub decode_seconds: f64,
    /// Cache length right after the prefill (the prompt length; 0 in naive mode).
    pub cache_len_after_prefill: usize,
    /// Cache length at the end (0 in naive mode).
    pub cache_len_after_decode: usize,
    /// Times the context window was slid (see the module docs).
    pub window_slides: usize,
}

impl GenerationStats {
    /// Prompt tokens per second of the prefill.
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_seconds.max(1e-12)
    }

    /// New tokens per second of decoding.
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_seconds.max(1e-12)
    }
}

/// The result of [`Generator::generate`].
#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// New tokens per prompt, up to and including a stop sequence.
    pub tokens: Vec<Vec<usize>>,
    /// Timing and cache figures.
    pub stats: GenerationStats,
    /// With [`GenerateOptions::record_logits`]: the logits each token was chosen from,
    /// `[step][row · V + id]`.
    pub step_logits: Vec<Vec<f32>>,
}

/// Generates text from a model, cached or naive.
pub struct Generator<'m> {
    model: &'m Gpt,
    device: Device,
}

/// The tokens each row currently sees (its own window), fed to the model left-padded to the
/// longest row.
struct Context {
    rows: Vec<Vec<usize>>,
}

impl Context {
    /// Length of the padded batch: the longest row.
    fn len(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Leading padding of each row.
    fn padding(&self) -> Vec<usize> {
        let len = self.len();
        self.rows.iter().map(|row| len - row.len()).collect()
    }

    /// All rows, left-padded (with id 0, never attended to), row-major.
    fn padded(&self) -> Vec<usize> {
        let len = self.len();
        self.rows
            .iter()
            .flat_map(|row| std::iter::repeat_n(0, len - row.len()).chain(row.iter().copied()))
            .collect()
    }

    /// Shorten every row longer than `window` to its last `keep` tokens; whether any was.
    fn slide(&mut self, window: usize, keep: usize) -> bool {
        let mut slid = false;
        for row in self.rows.iter_mut().filter(|row| row.len() > window) {
            row.drain(..row.len() - keep);
            slid = true;
        }
        slid
    }
}

impl<'m> Generator<'m> {
    /// A generator for `model` on `device`.
    pub fn new(model: &'m Gpt, device: &Device) -> Self {
        Self {
            model,
            device: device.clone(),
        }
    }

    /// Continue every prompt. Prompts may differ in length: they are left-padded into one
    /// batch, and every row computes what it would alone (its window slides on its own
    /// schedule; a slide of any row re-prefills the batch). A prompt longer than the context
    /// window keeps its last `max_seq_len` tokens. `on_token(row, id)` hears every new token as
    /// it is chosen (for streaming).
    ///
    /// # Errors
    /// [`Error::Tokens`] for no prompts, an empty prompt, an empty stop sequence or ids
    /// outside the vocabulary; [`Error::Config`] for bad sampling settings; the model's errors.
    pub fn generate(
        &self,
        prompts: &[Vec<usize>],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(usize, usize),
    ) -> Result<Generation> {
        let vocab = self.model.config().vocab_size;
        let window = self.model.config().max_seq_len;
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Tokens(
                "every prompt needs at least one token (this model has no start token)".into(),
            ));
        }
        if options.stop.iter().any(Vec::is_empty) {
            return Err(Error::Tokens("a stop sequence cannot be empty".into()));
        }
        if let Some(bad) = prompts.iter().flatten().find(|&&id| id >= vocab) {
            return Err(Error::Tokens(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        let mut sampler = Sampler::new(options.sampling.clone())?;

        let mut context = Context {
            rows: prompts.to_vec(),
        };
        context.slide(window, window);
        let batch = prompts.len();
        let mut cache = match options.mode {
            DecodeMode::Cached => Some(self.model.new_cache(batch, &self.device)),
            DecodeMode::Naive => None,
        };

        let mut out = Generation {
            tokens: vec![Vec::new(); batch],
            ..Default::default()
        };
        let started = Instant::now();
        let mut logits = self.prefill(&context, cache.as_mut())?;
        out.stats.prefill_tokens = batch * context.len();
        out.stats.prefill_seconds = started.elapsed().as_secs_f64();
        out.stats.cache_len_after_prefill = cache.as_ref().map_or(0, KvCache::len);

        let decode_started = Instant::now();
        let mut finished = vec![false; batch];
        for step in 0..options.max_new_tokens {
            let next = self.choose(
                logits,
                &mut sampler,
                options.record_logits,
                &mut out.step_logits,
            )?;
            for (row, &id) in next.iter().enumerate() {
                if finished[row] {
                    continue;
                }
                out.tokens[row].push(id);
                on_token(row, id);
                finished[row] = options
                    .stop
                    .iter()
                    .any(|stop| out.tokens[row].ends_with(stop));
            }
            if step + 1 == options.max_new_tokens || finished.iter().all(|&done| done) {
                break;
            }
            for (row, &id) in next.iter().enumerate() {
                context.rows[row].push(id);
            }
            logits = if context.slide(window, window / 2) {
                out.stats.window_slides += 1;
                if let Some(cache) = cache.as_mut() {
                    cache.reset();
                }
                self.prefill(&context, cache.as_mut())?
            } else {
                self.step(&context, &next, cache.as_mut())?
            };
            out.stats.decode_tokens += batch;
        }
        out.stats.decode_seconds = decode_started.elapsed().as_secs_f64();
        out.stats.cache_len_after_decode = cache.as_ref().map_or(0, KvCache::len);
        Ok(out)
    }

    /// Logits of the last position after running the whole context (filling the cache when
    /// there is one).
    ///
    /// # Shapes
    /// - output: `[B, V]`
    fn prefill(&self, context: &Context, cache: Option<&mut KvCache>) -> Result<Tensor<2>> {
        let (batch, len) = (context.rows.len(), context.len());
        self.last_logits(&context.padded(), batch, len, context, cache)
    }

    /// Logits after feeding the newest token: one cached step, or the whole context again.
    fn step(
        &self,
        context: &Context,
        newest: &[usize],
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<2>> {
        match cache {
            Some(cache) => self.last_logits(newest, newest.len(), 1, context, Some(cache)),
            None => self.prefill(context, None),
        }
    }

    /// Run `ids` (`[batch, len]`) with the context's left padding and return the logits of the
    /// last position, `[B, V]`.
    fn last_logits(
        &self,
        ids: &[usize],
        batch: usize,
        len: usize,
        context: &Context,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor<2>> {
        let tokens = token_tensor(ids, batch, len, &self.device)?;
        let logits = self.model.forward_with(
            tokens,
            ForwardOptions {
                cache,
                left_padding: Some(&context.padding()),
                trace: None,
                last_only: true,
            },
        )?;
        Ok(last_position(logits))
    }

    /// The next token of every row, chosen on the device; only the ids are read back (and the
    /// logits too when they are being recorded).
    fn choose(
        &self,
        logits: Tensor<2>,
        sampler: &mut Sampler,
        record: bool,
        recorded: &mut Vec<Vec<f32>>,
    ) -> Result<Vec<usize>> {
        if record {
            recorded.push(floats(logits.clone())?);
        }
        let ids = ints(sampler.sample(logits))?;
        Ok(ids.into_iter().map(|id| id as usize).collect())
    }
}

/// The logits of the last position.
///
/// # Shapes
/// - input: `[B, T, V]`, output: `[B, V]`
fn last_position(logits: Tensor<3>) -> Tensor<2> {
    let [batch, seq, vocab] = logits.dims();
    logits
        .slice([0..batch, seq - 1..seq, 0..vocab])
        .reshape([batch, vocab])
}
