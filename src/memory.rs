//! Sizes that cannot fit in memory are refused before any work starts, naming the size, rather
//! than found out by the operating system halfway through a run.
//!
//! The estimates count what dominates, in `f32` bytes: the parameters (four copies when
//! training: the weights, their gradients and AdamW's two moments), the activations a
//! training step keeps for its backward pass, and the attention weights `[B, H, T, S]` that
//! the readable path materialises. They are estimates, not promises: a run that fits them can
//! still meet a machine that is busy with something else.

use crate::error::{Error, Result};
use crate::model::{GptConfig, PositionScheme};

const F32: f64 = 4.0;

/// Bytes each layer costs beyond its tensors' values when training (the autodiff graph's
/// nodes, every op's allocation): what a deep, narrow model is made of.
const TRAINING_BYTES_PER_LAYER: f64 = 256.0 * 1024.0;

/// The same for a forward pass without autodiff.
const FORWARD_BYTES_PER_LAYER: f64 = 32.0 * 1024.0;

/// The model's parameter count.
pub fn parameters(config: &GptConfig) -> f64 {
    let [v, d, l] = [config.vocab_size, config.d_model, config.n_layers].map(|n| n as f64);
    let kv = config.kv_heads() as f64 * config.head_dim() as f64;
    let positions = match config.position {
        PositionScheme::Learned => (config.max_seq_len as f64) * d,
        PositionScheme::Rope => 0.0,
    };
    // Query and output `D × D`, key and value `D × H_kv·Dh`, with biases; two LayerNorms; the
    // MLP's `D × 4D` and `4D × D` with biases.
    let attention = 2.0 * (d * d + d) + 2.0 * (d * kv + kv);
    let mlp = 8.0 * d * d + 5.0 * d;
    let head = if config.tie_embeddings { 0.0 } else { v * d };
    v * d + positions + l * (attention + 4.0 * d + mlp) + 2.0 * d + head
}

/// About how many bytes a training step of `model` on `batch` windows of `seq` tokens holds.
pub fn training_bytes(model: &GptConfig, batch: usize, seq: usize) -> f64 {
    let [b, t, h] = [batch, seq, model.n_heads].map(|n| n as f64);
    let [d, l, v] = [model.d_model, model.n_layers, model.vocab_size].map(|n| n as f64);
    let (tokens, weights) = (b * t, b * h * t * t);
    // Per layer and token about twenty `D`-wide tensors are kept for the backward pass; the
    // logits and their gradient are `V` wide; every layer keeps its attention weights.
    let activations = tokens * (20.0 * d * l + 2.0 * v) + 2.0 * weights * l;
    (4.0 * parameters(model) + activations) * F32 + l * TRAINING_BYTES_PER_LAYER
}

/// About how many bytes a forward pass of `batch` rows of `seq` tokens holds on the readable
/// path (scores, mask and weights of one layer at a time, beside every layer's activations).
pub fn forward_bytes(model: &GptConfig, batch: usize, seq: usize) -> f64 {
    let [b, t, h] = [batch, seq, model.n_heads].map(|n| n as f64);
    let [d, l, v] = [model.d_model, model.n_layers, model.vocab_size].map(|n| n as f64);
    let (tokens, scores) = (b * t, 3.0 * b * h * t * t);
    (parameters(model) + tokens * (10.0 * d * l + v) + scores) * F32 + l * FORWARD_BYTES_PER_LAYER
}

/// About how many bytes a model of `config` holds once built: its parameters.
pub fn model_bytes(config: &GptConfig) -> f64 {
    parameters(config) * F32 + config.n_layers as f64 * FORWARD_BYTES_PER_LAYER
}

/// The bytes a KV cache for `batch` sequences of `config` allocates (every position of the
/// context, up front).
pub fn cache_bytes(config: &GptConfig, batch: usize) -> f64 {
    let per_position = 2.0 * (config.n_layers * config.kv_heads() * config.head_dim()) as f64;
    per_position * batch as f64 * config.max_seq_len as f64 * F32
}

/// The memory this machine has available now, in bytes (Linux's `MemAvailable`); `None` where
/// the system does not say.
pub fn available_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Refuse `what` when it needs more than the memory available.
///
/// # Errors
/// [`Error::Config`] naming the size and what is available.
pub fn check_fits(what: &str, bytes: f64) -> Result<()> {
    let gib = |bytes: f64| bytes / f64::from(1u32 << 30);
    match available_bytes() {
        Some(available) if bytes > available => Err(Error::Config(format!(
            "{what} needs about {:.1} GiB of memory, more than the {:.1} GiB available here; \
             use smaller sizes",
            gib(bytes),
            gib(available)
        ))),
        _ => Ok(()),
    }
}
