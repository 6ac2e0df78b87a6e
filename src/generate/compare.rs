//! Cached against naive decoding on the same prompt: the check that the KV cache changes
//! nothing but the speed.

use burn::tensor::Device;
use serde::Serialize;

use super::generator::{DecodeMode, Generation, GenerationConfig, Generator, max_abs_diff};
use super::window::WindowPolicy;
use crate::error::Result;
use crate::model::Gpt;

/// What [`compare_decoding`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecodingComparison {
    /// Whether the model's KV cache is valid at all: only with the causal mask (a leaky mask
    /// lets earlier positions see later tokens on a full recompute, so cached and naive differ
    /// by design, whatever the tokens say).
    pub cache_valid: bool,
    /// Whether both modes chose the same tokens.
    pub identical_tokens: bool,
    /// Largest difference between the logits the two modes chose each token from (see
    /// [`max_abs_diff`]).
    pub max_abs_logit_diff: f32,
    /// New tokens generated.
    pub new_tokens: usize,
    /// Cache length after the prefill.
    pub cache_len_after_prefill: usize,
    /// Cache length at the end.
    pub cache_len_after_decode: usize,
    /// Times the window slid.
    pub window_slides: usize,
    /// Whole-generation throughput, prefill included, so both modes are timed alike.
    pub cached_tokens_per_s: f64,
    /// The same for naive decoding.
    pub naive_tokens_per_s: f64,
    /// `cached_tokens_per_s / naive_tokens_per_s`.
    pub speedup: f64,
    /// Prompt tokens per second of the cached prefill.
    pub prefill_tokens_per_s: f64,
    /// The device both ran on, as Burn prints it.
    pub backend: String,
    /// The tokens the cached mode chose.
    #[serde(skip)]
    pub tokens: Vec<usize>,
}

/// Decode `max_new_tokens` greedy tokens after `prompt` twice, with the KV cache and naively,
/// both past the context as `window` says, and compare the tokens and every step's logits.
///
/// # Errors
/// The generator's errors.
pub fn compare_decoding(
    model: &Gpt,
    prompt: &[usize],
    max_new_tokens: usize,
    window: WindowPolicy,
    device: &Device,
) -> Result<DecodingComparison> {
    let generator = Generator::new(model, device);
    let run = |mode| {
        let config = GenerationConfig::new(max_new_tokens)
            .with_mode(mode)
            .with_window(window)
            .with_record_logits(true);
        generator.generate_all(&[prompt.to_vec()], &config)
    };
    let cached = run(DecodeMode::Cached)?;
    let naive = run(DecodeMode::Naive)?;
    let logit_diff = cached
        .step_logits
        .iter()
        .zip(&naive.step_logits)
        .map(|(a, b)| max_abs_diff(a, b))
        .fold(0.0, f32::max);
    let tokens_per_s = |g: &Generation| {
        g.tokens[0].len() as f64 / (g.stats.prefill_seconds + g.stats.decode_seconds).max(1e-12)
    };
    Ok(DecodingComparison {
        cache_valid: !model.config().mask_mode.is_leaky(),
        identical_tokens: cached.tokens == naive.tokens,
        max_abs_logit_diff: logit_diff,
        new_tokens: cached.tokens[0].len(),
        cache_len_after_prefill: cached.stats.cache_len_after_prefill,
        cache_len_after_decode: cached.stats.cache_len_after_decode,
        window_slides: cached.stats.window_slides,
        cached_tokens_per_s: tokens_per_s(&cached),
        naive_tokens_per_s: tokens_per_s(&naive),
        speedup: tokens_per_s(&cached) / tokens_per_s(&naive),
        prefill_tokens_per_s: cached.stats.prefill_tokens_per_s(),
        backend: format!("{device:?}"),
        tokens: cached.tokens[0].clone(),
    })
}
