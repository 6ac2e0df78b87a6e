//! Multi-head causal self-attention with the head bookkeeping spelled out: project to Q, K, V,
//! `split_heads`, rotate (RoPE), append to the KV cache, attend, `merge_heads`, output
//! projection `W_O`. [`CausalSelfAttention::forward_instrumented`] is those steps in that
//! order; how the attention step itself is computed (the readable formula of
//! [`super::single_head`], or a fast path) is decided in one place, [`super::attention_path`].
//!
//! # Grouped-query attention
//! With `n_kv_heads < n_heads` the key and value projections produce only `H_kv` heads, and
//! each group of `G = H / H_kv` adjacent query heads shares one of them (query head `h` reads
//! key/value head `h / G`); `n_kv_heads = 1` is multi-query attention. The cache then holds
//! `H_kv` heads, `G` times less memory, which is what GQA is for: decoding reads the whole
//! cache at every step. The readable path shows the sharing by repeating each key/value head
//! for its group ([`repeat_kv`]); the crate's kernels share them without copying.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{Device, Tensor};

use super::attention_path::AttentionPath;
use super::cache::LayerKv;
use super::config::validate_heads;
use super::fault::Fault;
use super::heads::{merge_heads, split_heads};
use super::init::normal_linear;
use super::instruments::{Instrumentation, NoInstruments, check_shape};
use super::mask::MaskMode;
use super::plan::Plan;
use super::single_head::Masking;
use crate::error::Result;
use crate::kernels::linear_layer;

/// Configuration of a [`CausalSelfAttention`] layer.
#[derive(Config, Debug)]
pub struct CausalSelfAttentionConfig {
    /// Width of the residual stream, `D`.
    pub d_model: usize,
    /// Number of (query) heads, `H`; each head works in `Dh = D / H` dimensions.
    pub n_heads: usize,
    /// Number of key/value heads, `H_kv`, shared by groups of `H / H_kv` query heads; `None`
    /// (the default) means `H`, plain multi-head attention.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// How the attention logits are masked.
    #[config(default = "MaskMode::Causal")]
    pub mask_mode: MaskMode,
    /// Dropout on the attention weights and on the output (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Standard deviation of the Q, K, V projection weights.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Standard deviation of the output projection's weights. GPT-2 scales it down by
    /// `sqrt(2 · n_layers)` because every block adds its output to the residual stream.
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

impl CausalSelfAttentionConfig {
    /// Check the sizes: non-zero, `d_model` divisible by `n_heads`, `n_kv_heads` dividing
    /// `n_heads`, dropout a probability.
    ///
    /// # Errors
    /// [`crate::Error::Config`] naming the offending sizes.
    pub fn validate(&self) -> Result<()> {
        validate_heads(self.d_model, self.n_heads, self.n_kv_heads, self.dropout)
    }

    /// Build the layer with GPT-2's initialisation: normal weights, zero biases.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when [`CausalSelfAttentionConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Result<CausalSelfAttention> {
        self.validate()?;
        let kv_width = self.kv_heads() * self.d_model / self.n_heads;
        let projection = |width: usize, std: f64| normal_linear(self.d_model, width, std, device);
        Ok(CausalSelfAttention {
            query: projection(self.d_model, self.init_std),
            key: projection(kv_width, self.init_std),
            value: projection(kv_width, self.init_std),
            output: projection(self.d_model, self.output_init_std),
            attn_dropout: DropoutConfig::new(self.dropout).init(),
            resid_dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
            n_kv_heads: self.kv_heads(),
            mask_mode: self.mask_mode,
            fast_paths: true,
        })
    }

    /// Key/value heads, `H_kv`: `n_kv_heads`, or `n_heads` when unset.
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }
}

/// Multi-head causal self-attention, optionally with grouped key/value heads.
///
/// # Shapes
/// - input: `[B, T, D]`
/// - output: `[B, T, D]`
///
/// Inside, with `H` heads of width `Dh = D / H`, `H_kv` key/value heads (`H_kv = H` for plain
/// multi-head attention) and `S` keys (`S = T` without a cache, `S = cached + T` with one):
///
/// | stage                  | shape               |
/// |------------------------|---------------------|
/// | q                      | `[B, T, D]`         |
/// | k, v                   | `[B, T, H_kv·Dh]`   |
/// | split_heads q          | `[B, H, T, Dh]`     |
/// | split_heads k, v       | `[B, H_kv, T, Dh]`  |
/// | keys with cache        | `[B, H_kv, S, Dh]`  |
/// | repeat_kv (readable)   | `[B, H, S, Dh]`     |
/// | scores, weights        | `[B, H, T, S]`      |
/// | attended               | `[B, H, T, Dh]`     |
/// | merge_heads            | `[B, T, D]`         |
/// | output (W_O)           | `[B, T, D]`         |
#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// Query projection `W_Q`, `[D, D]` (Burn stores linear weights as `[in, out]`).
    pub query: Linear,
    /// Key projection `W_K`, `[D, H_kv·Dh]`.
    pub key: Linear,
    /// Value projection `W_V`, `[D, H_kv·Dh]`.
    pub value: Linear,
    /// Output projection `W_O`, mixing the heads back together.
    pub output: Linear,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_heads: usize,
    n_kv_heads: usize,
    #[module(skip)]
    mask_mode: MaskMode,
    #[module(skip)]
    fast_paths: bool,
}

impl CausalSelfAttention {
    /// Number of (query) heads, `H`.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Number of key/value heads, `H_kv` (equal to `H` for plain multi-head attention).
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// The masking rule this layer applies.
    pub fn mask_mode(&self) -> MaskMode {
        self.mask_mode
    }

    /// Allow (the default) or forbid the fast paths of [`super::attention_path`]; forbidden,
    /// every call runs the readable path, which tests use to check both.
    pub fn set_fast_paths(&mut self, allowed: bool) {
        self.fast_paths = allowed;
    }

    /// Whether a fast path may serve this layer: only where it computes exactly what the
    /// readable path does (the causal mask, no dropout on the weights, which the fast paths do
    /// not have), and unless [`Self::set_fast_paths`] forbade them.
    pub fn fast_paths_apply(&self) -> bool {
        self.fast_paths && self.mask_mode == MaskMode::Causal && self.attn_dropout.prob == 0.0
    }

    /// The path a call on `x` takes (`cached`: with a KV cache; `instrumented`: carrying a
    /// trace or a fault); see [`AttentionPath::choose`].
    pub fn path(
        &self,
        x: &Tensor<3>,
        cached: bool,
        plan: &Plan,
        instrumented: bool,
    ) -> AttentionPath {
        AttentionPath::choose(self.fast_paths_apply(), x, cached, plan, instrumented)
    }

    /// Self-attention for the `T` new positions of `x`. With a cache, their keys and values
    /// are appended to it and the queries attend over everything cached so far; `plan` says
    /// where the positions are and which keys are hidden (see [`Plan`]).
    ///
    /// # Shapes
    /// - x: `[B, T, D]`, output: `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerKv>, plan: &Plan) -> Tensor<3> {
        let Ok(out) = self.forward_instrumented(x, cache, plan, &mut NoInstruments);
        out
    }

    /// [`Self::forward`] carrying `instruments`: every stage's shape recorded, a planted fault
    /// made where it belongs. A call that carries anything runs the readable path.
    ///
    /// # Errors
    /// The checks a planted fault fails: [`Fault::TransposedKey`] (unless `S` happens to equal
    /// `Dh`, when the wrong product has the right shape and only the values are wrong),
    /// [`Fault::MissingMerge`] and [`Fault::CacheWrongAxis`], as [`crate::Error::Shape`].
    pub fn forward_instrumented<I: Instrumentation>(
        &self,
        x: Tensor<3>,
        cache: Option<&mut LayerKv>,
        plan: &Plan,
        instruments: &mut I,
    ) -> Result<Tensor<3>, I::Error> {
        let input = x.dims();
        let path = self.path(&x, cache.is_some(), plan, instruments.is_active());
        // A kernel may do everything up to the merged heads in one go.
        let projections = [&self.query, &self.key, &self.value];
        let heads = [self.n_heads, self.n_kv_heads];
        if let Some(merged) = path.whole_layer(projections, heads, &x, plan) {
            return Ok(self.project_output(merged, instruments));
        }
        let q = linear_layer(&self.query, x.clone()); // [B, T, D]
        let k = linear_layer(&self.key, x.clone()); // [B, T, H_kv·Dh]
        let v = linear_layer(&self.value, x);
        for (stage, tensor) in [("q", &q), ("k", &k), ("v", &v)] {
            instruments.record(stage, &tensor.dims());
        }
        let q = split_heads(q, self.n_heads); // [B, H, T, Dh]
        let k = split_heads(k, self.n_kv_heads); // [B, H_kv, T, Dh]
        let v = split_heads(v, self.n_kv_heads);
        instruments.record("q_heads", &q.dims());
        // RoPE turns queries and keys by their positions' angles (keys before they are cached).
        let (q, k) = plan.rotate(q, k);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v, plan.cache_step(), instruments)?, // [B, H_kv, S, Dh]
            None => (k, v),
        };
        instruments.record("k_heads", &k.dims());
        instruments.record("v_heads", &v.dims());
        let attended = path.attend(q, k, v, &self.masking(plan), instruments)?; // [B, H, T, Dh]
        instruments.record("attended", &attended.dims());
        let merged = merge(attended, input, instruments)?; // [B, T, D]
        Ok(self.project_output(merged, instruments))
    }

    /// What the readable path hides: the layer's rule, the plan's hidden keys, and dropout.
    fn masking(&self, plan: &Plan) -> Masking<'_, 4> {
        Masking {
            mode: self.mask_mode,
            hidden: plan.hidden_keys().cloned(),
            dropout: Some(&self.attn_dropout),
        }
    }

    /// The output projection `W_O` (and dropout) on the merged heads.
    fn project_output<I: Instrumentation>(
        &self,
        merged: Tensor<3>,
        instruments: &mut I,
    ) -> Tensor<3> {
        instruments.record("merged", &merged.dims());
        let out = self
            .resid_dropout
            .forward(linear_layer(&self.output, merged));
        instruments.record("output", &out.dims());
        out
    }
}

/// [`merge_heads`], checked: `W_O` mixes the heads of each position, so it needs them side by
/// side, in the layer's input shape `[B, T, D]`. The missing-merge fault hands it the heads as
/// attention leaves them, `[B, H, T, Dh]`, which the check refuses.
///
/// # Errors
/// With [`Fault::MissingMerge`] planted, the shape check.
fn merge<I: Instrumentation>(
    attended: Tensor<4>,
    input: [usize; 3],
    instruments: &I,
) -> Result<Tensor<3>, I::Error> {
    let merged = merge_heads(attended.clone());
    let handed_on = match instruments.fault() {
        Some(Fault::MissingMerge) => attended.dims().to_vec(),
        _ => merged.dims().to_vec(),
    };
    check_shape(
        instruments,
        "input of the output projection W_O",
        &handed_on,
        &input,
        "the merge step was skipped: merge_heads puts the heads back side by side \
         ([B, H, T, Dh] -> swap to [B, T, H, Dh] -> reshape to [B, T, D]) before W_O",
    )?;
    Ok(merged)
}
