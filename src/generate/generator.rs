//! The [`Generator`]: continue prompts with the KV cache (prefill the prompt in one pass, then
//! one token per pass) or naively (the whole window recomputed at every step) for comparison.
//! Rows slide their windows past the context on their own schedule (see [`super::window`]).

use std::ops::ControlFlow;
use std::time::Instant;

use burn::config::Config;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::sampler::{Sampler, SamplingConfig};
use super::window::{WindowPolicy, Windows};
use crate::device::{floats, ints, token_tensor};
use crate::error::{Error, Result};
use crate::model::{ForwardOptions, Gpt, KvCache, PositionScheme};

/// How each step's logits are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecodeMode {
    /// Prefill once, then one token per forward pass against the KV cache.
    Cached,
    /// Recompute the whole window at every step: the reference the cache must match.
    Naive,
}

/// What to generate. `GenerationConfig::new(n)` decodes `n` tokens greedily with the cache.
#[derive(Config, Debug)]
pub struct GenerationConfig {
    /// New tokens per prompt (fewer when a row hits a stop sequence).
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    #[config(default = "SamplingConfig::new()")]
    pub sampling: SamplingConfig,
    /// A row stops once its new tokens end with one of these id sequences.
    #[config(default = "Vec::new()")]
    pub stop: Vec<Vec<usize>>,
    /// Cached or naive decoding.
    #[config(default = "DecodeMode::Cached")]
    pub mode: DecodeMode,
    /// Keep every step's logits (for comparing decoding modes).
    #[config(default = false)]
    pub record_logits: bool,
    /// What happens once a row's window is full.
    #[config(default = "WindowPolicy::SlideHalf")]
    pub window: WindowPolicy,
    /// With the cache: also recompute every step's logits naively and report how far the
    /// cached ones are from them ([`NewToken::naive_diff`]). Twice the work; for teaching
    /// and checking, not for speed.
    #[config(default = false)]
    pub verify: bool,
}

/// Where a step's logits came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The prompt's pass (the first new token).
    Prefill,
    /// One new position against the cache (or, naively, the whole window again).
    Decode,
    /// The window slid past the context and its kept part was prefilled again.
    Slide,
}

/// What `on_token` hears of each new token.
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    /// The batch row it belongs to.
    pub row: usize,
    /// The token.
    pub id: usize,
    /// 0 for the first new token, then one per step.
    pub step: usize,
    /// How the logits it was chosen from were computed.
    pub phase: Phase,
    /// Those logits (this row's `V`), with [`GenerationConfig::record_logits`].
    pub logits: Option<&'a [f32]>,
    /// Positions in the KV cache when the logits were computed (0 in naive mode).
    pub cache_len: usize,
    /// Bytes those positions hold ([`KvCache::memory_bytes`]).
    pub cache_bytes: usize,
    /// With [`GenerationConfig::verify`]: the largest |Δ| between the cached logits and the
    /// naive recompute's for the same window (all rows).
    pub naive_diff: Option<f32>,
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
    /// Times the context window was slid (see [`super::window`]).
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
    /// With [`GenerationConfig::record_logits`]: the logits each token was chosen from,
    /// `[step][row · V + id]`.
    pub step_logits: Vec<Vec<f32>>,
    /// With [`GenerationConfig::record_logits`]: the position the model gave the token whose
    /// logits chose each step's token, `[step][row]` (past the context window it differs
    /// from the token's index in the text: see [`super::window`]).
    pub step_positions: Vec<Vec<usize>>,
    /// Whether `on_token` stopped generation early.
    pub stopped: bool,
}

/// Generates text from a model, cached or naive.
pub struct Generator<'m> {
    model: &'m Gpt,
    device: Device,
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
    /// window keeps its last `max_seq_len` tokens, except with the rolling window, where every
    /// position sees the last `max_seq_len` up to itself, the prompt's too. `on_token` hears
    /// every new token as it is chosen, with what the step did ([`NewToken`]); returning
    /// [`ControlFlow::Break`] stops generation after that step (a client that went away, a
    /// Ctrl-C), with what was generated so far and [`Generation::stopped`] set.
    ///
    /// # Errors
    /// [`Error::Tokens`] for no prompts, an empty prompt, an empty stop sequence or ids
    /// outside the vocabulary; [`Error::Config`] for bad sampling settings; the model's errors.
    pub fn generate(
        &self,
        prompts: &[Vec<usize>],
        config: &GenerationConfig,
        on_token: &mut dyn FnMut(&NewToken) -> ControlFlow<()>,
    ) -> Result<Generation> {
        self.check(prompts, config)?;
        let mut sampler = Sampler::new(config.sampling.clone())?;
        let capacity = self.model.config().max_seq_len;
        let rolling = config.window == WindowPolicy::Rolling;
        // A rolling window crops nothing: the band hides what lies too far back.
        let mut windows = Windows::new(prompts, (!rolling).then_some(capacity));
        let batch = windows.batch();
        if rolling {
            self.check_rolling(&windows)?;
        }
        let mut cache = match config.mode {
            DecodeMode::Cached if rolling => {
                Some(self.model.new_cache(batch, &self.device).rolling())
            }
            DecodeMode::Cached => Some(self.model.new_cache(batch, &self.device)),
            DecodeMode::Naive => None,
        };
        // Naive decoding with a rolling window runs the whole sequence with the band mask.
        let band = rolling.then_some(capacity);

        let mut out = Generation {
            tokens: vec![Vec::new(); batch],
            ..Default::default()
        };
        let started = Instant::now();
        let mut logits = self.prefill(&windows, cache.as_mut(), band)?;
        let mut phase = Phase::Prefill;
        out.stats.prefill_tokens = batch * windows.len();
        out.stats.prefill_seconds = started.elapsed().as_secs_f64();
        out.stats.cache_len_after_prefill = cache.as_ref().map_or(0, KvCache::len);

        let decode_started = Instant::now();
        let mut finished = vec![false; batch];
        for step in 0..config.max_new_tokens {
            let naive_diff = match (config.verify, &cache) {
                (true, Some(_)) => Some(self.naive_diff(&logits, &windows, band)?),
                _ => None,
            };
            if config.record_logits {
                out.step_positions.push(windows.last_positions());
            }
            let next = self.choose(logits, &mut sampler, config.record_logits, &mut out)?;
            let heard = Heard {
                step,
                phase,
                cache: cache.as_ref(),
                naive_diff,
            };
            heard.hand_out(&next, &mut finished, config, &mut out, on_token);
            if step + 1 == config.max_new_tokens || out.stopped || finished.iter().all(|&f| f) {
                break;
            }
            windows.push(&next);
            (logits, phase) = if let Some(keep) = config.window.keep(capacity)
                && windows.slide(capacity, keep)
            {
                out.stats.window_slides += 1;
                if let Some(cache) = cache.as_mut() {
                    cache.reset();
                }
                (self.prefill(&windows, cache.as_mut(), band)?, Phase::Slide)
            } else {
                (
                    self.step(&windows, &next, cache.as_mut(), band)?,
                    Phase::Decode,
                )
            };
            out.stats.decode_tokens += batch;
        }
        out.stats.decode_seconds = decode_started.elapsed().as_secs_f64();
        out.stats.cache_len_after_decode = cache.as_ref().map_or(0, KvCache::len);
        Ok(out)
    }

    /// [`Generator::generate`] to the end, without hearing each token.
    ///
    /// # Errors
    /// As [`Generator::generate`].
    pub fn generate_all(
        &self,
        prompts: &[Vec<usize>],
        config: &GenerationConfig,
    ) -> Result<Generation> {
        self.generate(prompts, config, &mut |_| ControlFlow::Continue(()))
    }

    /// Refuse what the model cannot take before anything runs.
    fn check(&self, prompts: &[Vec<usize>], config: &GenerationConfig) -> Result<()> {
        let model = self.model.config();
        let vocab = model.vocab_size;
        if config.window.keep(model.max_seq_len) == Some(0) {
            return Err(Error::Config(format!(
                "the {} window keeps half of the context, and a context of {} has no half: use \
                 the crop window",
                config.window, model.max_seq_len
            )));
        }
        if config.mode == DecodeMode::Cached {
            crate::memory::check_fits(
                &format!(
                    "a KV cache for {} sequences of the model's context ({})",
                    prompts.len(),
                    model.max_seq_len
                ),
                crate::memory::cache_bytes(model, prompts.len()),
            )?;
        }
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Tokens(
                "every prompt needs at least one token (this model has no start token)".into(),
            ));
        }
        if config.stop.iter().any(Vec::is_empty) {
            return Err(Error::Tokens("a stop sequence cannot be empty".into()));
        }
        match prompts.iter().flatten().find(|&&id| id >= vocab) {
            Some(bad) => Err(Error::Tokens(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            ))),
            None => Ok(()),
        }
    }

    /// A rolling window needs positions that are not a table, and rows that keep step (one
    /// ring of slots serves the whole batch).
    fn check_rolling(&self, windows: &Windows) -> Result<()> {
        if self.model.config().position != PositionScheme::Rope {
            return Err(Error::Config(
                "the rolling window needs rotary position embedding (a learned position table \
                 ends at max_seq_len): train with `--position rope`, or use `--window \
                 slide-half` or `crop`"
                    .into(),
            ));
        }
        if windows.padding().iter().any(|&pad| pad > 0) {
            return Err(Error::Tokens(
                "the rolling window needs prompts of equal length (after cropping to the \
                 context); generate them one at a time"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Logits of the last position after running every row's whole window (filling the cache
    /// when there is one). A rolling cache takes the window's first `max_seq_len` positions
    /// at once and the rest one at a time: once it is full, a position overwrites the oldest
    /// slot, which the earlier positions of a longer chunk would still need.
    ///
    /// # Shapes
    /// - output: `[B, V]`
    fn prefill(
        &self,
        windows: &Windows,
        cache: Option<&mut KvCache>,
        band: Option<usize>,
    ) -> Result<Tensor<2>> {
        let ids = windows.padded();
        let len = windows.len();
        match cache {
            Some(cache) if cache.is_rolling() && len > cache.capacity() => {
                let first = cache.capacity();
                let column =
                    |t: usize| -> Vec<usize> { ids.chunks(len).map(|row| row[t]).collect() };
                let head: Vec<usize> = ids
                    .chunks(len)
                    .flat_map(|row| row[..first].to_vec())
                    .collect();
                let mut logits = self.last_logits(&head, first, windows, Some(cache), None)?;
                for t in first..len {
                    logits = self.last_logits(&column(t), 1, windows, Some(cache), None)?;
                }
                Ok(logits)
            }
            cache => self.last_logits(&ids, len, windows, cache, band),
        }
    }

    /// The largest |Δ| between `cached` logits and the naive recompute's over the same windows.
    fn naive_diff(
        &self,
        cached: &Tensor<2>,
        windows: &Windows,
        band: Option<usize>,
    ) -> Result<f32> {
        let naive = floats(self.prefill(windows, None, band)?)?;
        Ok(max_abs_diff(&floats(cached.clone())?, &naive))
    }

    /// Logits after feeding the newest token: one cached step, or every window again.
    fn step(
        &self,
        windows: &Windows,
        newest: &[usize],
        cache: Option<&mut KvCache>,
        band: Option<usize>,
    ) -> Result<Tensor<2>> {
        match cache {
            Some(cache) => self.last_logits(newest, 1, windows, Some(cache), None),
            None => self.prefill(windows, None, band),
        }
    }

    /// Run `ids` (`[B, len]`) with the windows' left padding and return the logits of the last
    /// position, `[B, V]`.
    fn last_logits(
        &self,
        ids: &[usize],
        len: usize,
        windows: &Windows,
        cache: Option<&mut KvCache>,
        band: Option<usize>,
    ) -> Result<Tensor<2>> {
        let tokens = token_tensor(ids, windows.batch(), len, &self.device)?;
        let padding = windows.padding();
        let options = ForwardOptions {
            cache,
            left_padding: Some(&padding),
            trace: None,
            last_only: true,
            band,
        };
        let logits = self.model.forward_with(tokens, options)?;
        let [batch, _, vocab] = logits.dims();
        Ok(logits.reshape([batch, vocab]))
    }

    /// The next token of every row, chosen on the device; only the ids are read back (and the
    /// logits too when they are being recorded). A row whose logits are not all finite numbers
    /// comes back as -1, in the same read, and stops generation with an error: a model whose
    /// weights or activations overflowed must not print text as if nothing happened.
    fn choose(
        &self,
        logits: Tensor<2>,
        sampler: &mut Sampler,
        record: bool,
        out: &mut Generation,
    ) -> Result<Vec<usize>> {
        if record {
            out.step_logits.push(floats(logits.clone())?);
        }
        let [batch, _] = logits.dims();
        let broken_rows = logits
            .clone()
            .is_finite()
            .all_dim(1)
            .bool_not()
            .reshape([batch]);
        let ids = ints(sampler.sample(logits).mask_fill(broken_rows, -1))?;
        if let Some(row) = ids.iter().position(|&id| id < 0) {
            return Err(Error::NotFinite {
                what: format!(
                    "the logits of row {row} at generation step {}",
                    out.tokens[row].len()
                ),
                detail: "the model's weights or activations are not finite numbers; check the \
                         checkpoint"
                    .into(),
            });
        }
        Ok(ids.into_iter().map(|id| id as usize).collect())
    }
}

/// Largest `|a[i] - b[i]|`. A NaN on either side counts as an infinite difference, so values
/// that are not numbers can never pass as agreement, and so do slices of different lengths.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let diff = (x - y).abs();
            if diff.is_nan() { f32::INFINITY } else { diff }
        })
        .fold(0.0, f32::max)
}

/// What every row's `on_token` hears of one step (the row and its token aside).
struct Heard<'c> {
    step: usize,
    phase: Phase,
    cache: Option<&'c KvCache>,
    naive_diff: Option<f32>,
}

impl Heard<'_> {
    /// Give each unfinished row its token `next[row]`, tell `on_token`, and mark the rows that
    /// hit a stop sequence; `out.stopped` when `on_token` asked to stop.
    fn hand_out(
        &self,
        next: &[usize],
        finished: &mut [bool],
        config: &GenerationConfig,
        out: &mut Generation,
        on_token: &mut dyn FnMut(&NewToken) -> ControlFlow<()>,
    ) {
        let vocab = out
            .step_logits
            .last()
            .map_or(0, |logits| logits.len() / next.len());
        for (row, &id) in next.iter().enumerate() {
            if finished[row] {
                continue;
            }
            out.tokens[row].push(id);
            let logits = match config.record_logits {
                true => out
                    .step_logits
                    .last()
                    .map(|all| &all[row * vocab..(row + 1) * vocab]),
                false => None,
            };
            let token = NewToken {
                row,
                id,
                step: self.step,
                phase: self.phase,
                logits,
                cache_len: self.cache.map_or(0, KvCache::len),
                cache_bytes: self.cache.map_or(0, KvCache::memory_bytes),
                naive_diff: self.naive_diff,
            };
            out.stopped |= on_token(&token).is_break();
            finished[row] = config
                .stop
                .iter()
                .any(|stop| out.tokens[row].ends_with(stop));
        }
    }
}
