//! The model's configuration, [`GptConfig`]: sizes, masking, positions, and how a config written
//! by an earlier version reads. It is saved beside every checkpoint as JSON. The model is built
//! from it with [`GptConfig::init`] (in [`super::gpt`], beside the model).

use burn::config::Config;

use super::mask::MaskMode;
use super::mlp::Activation;
use super::rope::PositionScheme;
use crate::error::{Error, Result};

/// Configuration of a [`Gpt`]; serialises to JSON with serde (it is saved beside every
/// checkpoint).
#[derive(Config, Debug, PartialEq)]
pub struct GptConfig {
    /// Number of distinct tokens, `V`.
    pub vocab_size: usize,
    /// Width of the residual stream, `D`.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads per block, `H`; `D` must be divisible by `H`.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Key/value heads per block, `H_kv`, each shared by `H / H_kv` query heads
    /// (grouped-query attention; 1 is multi-query attention). `None`, the default, means `H`:
    /// plain multi-head attention.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Number of blocks, `L`.
    #[config(default = 4)]
    pub n_layers: usize,
    /// Context window: the most positions the model can attend over.
    #[config(default = 128)]
    pub max_seq_len: usize,
    /// Dropout probability, active only when training on an autodiff device.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// How attention is masked; anything but `Causal` leaks the future on purpose.
    #[config(default = "MaskMode::Causal")]
    pub mask_mode: MaskMode,
    /// Use the token embedding table, transposed, as the LM head (GPT-2 and nanoGPT do): one
    /// `[V, D]` matrix learns from both ends, and the model has `V·D` fewer parameters.
    #[config(default = false)]
    pub tie_embeddings: bool,
    /// Where positions enter: a learned table added to the embeddings (the default, GPT-2's)
    /// or rotary position embedding of the queries and keys (see [`super::rope`]).
    #[config(default = "PositionScheme::Learned")]
    pub position: PositionScheme,
    /// RoPE's base `theta`: pair `i` of a head turns by `theta^(−2i/Dh)` per position.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
    /// The MLP's GELU: exact (the default, nanoGPT's) or the tanh form (GPT-2's `gelu_new`).
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// ε of every layer norm (GPT-2's and Burn's default, 1e-5).
    #[config(default = 1e-5)]
    pub layer_norm_epsilon: f64,
}

/// Fields added to [`GptConfig`] after 0.2, with the value that gives 0.2's model: a config
/// written before them reads as that model.
fn added_since_0_2() -> [(&'static str, serde_json::Value); 6] {
    [
        ("activation", "gelu".into()),
        ("layer_norm_epsilon", 1e-5.into()),
        ("tie_embeddings", false.into()),
        ("position", "learned".into()),
        ("rope_theta", 10000.0.into()),
        ("n_kv_heads", serde_json::Value::Null),
    ]
}

impl GptConfig {
    /// Read a config from JSON, including one written by an earlier version (fields added
    /// since take the value that gives the earlier model).
    ///
    /// # Errors
    /// The JSON error when `json` is not a config.
    pub fn from_json(json: &str) -> serde_json::Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(json)?;
        if let Some(fields) = value.as_object_mut() {
            for (name, old_value) in added_since_0_2() {
                fields.entry(name).or_insert(old_value);
            }
        }
        serde_json::from_value(value)
    }

    /// Width of one head, `Dh = D / H`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Key/value heads per block, `H_kv`: `n_kv_heads`, or `n_heads` when unset.
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Check every size before anything is allocated.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first size that cannot work.
    pub fn validate(&self) -> Result<()> {
        Error::require_at_least_one(&[
            ("vocab_size", self.vocab_size),
            ("n_layers", self.n_layers),
            ("max_seq_len", self.max_seq_len),
        ])?;
        validate_heads(self.d_model, self.n_heads, self.n_kv_heads, self.dropout)?;
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon > 0.0) {
            return Err(Error::Config(format!(
                "layer_norm_epsilon ({:e}) must be a finite number above 0 (1e-5 is GPT-2's)",
                self.layer_norm_epsilon
            )));
        }
        if self.position == PositionScheme::Rope {
            if !self.head_dim().is_multiple_of(2) {
                return Err(Error::Config(format!(
                    "rotary position embedding turns pairs of features, so each head needs an \
                     even width; d_model / n_heads = {} / {} = {}",
                    self.d_model,
                    self.n_heads,
                    self.head_dim()
                )));
            }
            if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
                return Err(Error::Config(format!(
                    "rope_theta ({:e}) must be a finite number above 1 (10000 is the usual base)",
                    self.rope_theta
                )));
            }
        }
        Ok(())
    }
}

/// Check an attention layer's sizes: non-zero, `d_model` divisible by `n_heads`, `n_kv_heads`
/// (`None`: one per head) dividing `n_heads`, `dropout` a probability.
///
/// # Errors
/// [`Error::Config`] naming the offending sizes, with a size that would work.
pub(crate) fn validate_heads(
    d_model: usize,
    n_heads: usize,
    n_kv_heads: Option<usize>,
    dropout: f64,
) -> Result<()> {
    if d_model == 0 || n_heads == 0 {
        return Err(Error::Config(format!(
            "d_model ({d_model}) and n_heads ({n_heads}) must both be at least 1"
        )));
    }
    if !d_model.is_multiple_of(n_heads) {
        return Err(Error::Config(format!(
            "d_model ({d_model}) must be divisible by n_heads ({n_heads}) so every head gets \
             the same width; try n_heads = {}",
            largest_divisor_at_most(d_model, n_heads)
        )));
    }
    let kv_heads = n_kv_heads.unwrap_or(n_heads);
    if kv_heads == 0 || kv_heads > n_heads || !n_heads.is_multiple_of(kv_heads) {
        return Err(Error::Config(format!(
            "n_kv_heads ({kv_heads}) must divide n_heads ({n_heads}) so every key/value head \
             serves the same number of query heads; try one of {:?}",
            divisors(n_heads)
        )));
    }
    if !(0.0..1.0).contains(&dropout) {
        return Err(Error::Config(format!(
            "dropout ({dropout}) must be in [0, 1)"
        )));
    }
    Ok(())
}

/// The divisors of `n`, in increasing order (the valid key/value head counts for `n` heads).
fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|&k| n.is_multiple_of(k)).collect()
}

/// The largest divisor of `n` that is at most `at_most` (a suggestion for a bad `n_heads`).
fn largest_divisor_at_most(n: usize, at_most: usize) -> usize {
    (1..=at_most.min(n))
        .rev()
        .find(|&k| n.is_multiple_of(k))
        .unwrap_or(1)
}
