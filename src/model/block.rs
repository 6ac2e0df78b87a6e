//! The pre-norm GPT block: `x + attn(ln_1(x))`, then `x + ffn(ln_2(x))`.
//!
//! Pre-norm (LayerNorm before each sub-layer, as in GPT-2) leaves the residual stream itself
//! un-normalised, so gradients reach early layers through the plain additions.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Tensor};

use super::attention::{CausalSelfAttention, CausalSelfAttentionConfig};
use super::cache::LayerKv;
use super::init::INIT_STD;
use super::instruments::{Instrumentation, NoInstruments};
use super::mask::MaskMode;
use super::mlp::Activation;
use super::mlp::{Mlp, MlpConfig};
use super::plan::Plan;
use crate::error::Result;
use crate::kernels::{LAYER_NORM_EPS, layer_norm};

/// Configuration of a [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Width of the residual stream, `D`.
    pub d_model: usize,
    /// Attention heads, `H`.
    pub n_heads: usize,
    /// Key/value heads, `H_kv` (`None`: `H`); see [`CausalSelfAttentionConfig::n_kv_heads`].
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// How attention is masked.
    #[config(default = "MaskMode::Causal")]
    pub mask_mode: MaskMode,
    /// Dropout probability (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Standard deviation of the two projections that write into the residual stream.
    #[config(default = 0.02)]
    pub residual_init_std: f64,
    /// The feed-forward network's activation.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// ε of the two layer norms.
    #[config(default = "LAYER_NORM_EPS")]
    pub layer_norm_epsilon: f64,
}

impl BlockConfig {
    /// Build the block.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for attention sizes that do not fit (see
    /// [`CausalSelfAttentionConfig::validate`]).
    pub fn init(&self, device: &Device) -> Result<Block> {
        let attn = CausalSelfAttentionConfig::new(self.d_model, self.n_heads)
            .with_n_kv_heads(self.n_kv_heads)
            .with_mask_mode(self.mask_mode)
            .with_dropout(self.dropout)
            .with_init_std(INIT_STD)
            .with_output_init_std(self.residual_init_std)
            .init(device)?;
        let mlp = MlpConfig::new(self.d_model, 4 * self.d_model)
            .with_dropout(self.dropout)
            .with_activation(self.activation)
            .with_init_std(INIT_STD)
            .with_output_init_std(self.residual_init_std)
            .init(device);
        Ok(Block {
            ln_1: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device),
            attn,
            ln_2: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device),
            mlp,
            layer_norm_epsilon: self.layer_norm_epsilon,
        })
    }
}

/// One transformer block.
///
/// # Shapes
/// - input: `[B, T, D]`
/// - output: `[B, T, D]`
#[derive(Module, Debug)]
pub struct Block {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm,
    /// Multi-head causal self-attention.
    pub attn: CausalSelfAttention,
    /// LayerNorm before the feed-forward network.
    pub ln_2: LayerNorm,
    /// The feed-forward network (named `mlp` as in GPT-2 and nanoGPT, whose weight names the
    /// checkpoints and safetensors files share).
    pub mlp: Mlp,
    /// ε of both layer norms (the fused layer norm needs it; Burn's keeps its own private).
    #[module(skip)]
    pub layer_norm_epsilon: f64,
}

impl Block {
    /// The block for the `T` new positions of `x`: attention (appending to the layer's cache
    /// when given) and the feed-forward network, each around a residual.
    ///
    /// # Shapes
    /// - x: `[B, T, D]`, output: `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>, cache: Option<&mut LayerKv>, plan: &Plan) -> Tensor<3> {
        let Ok(out) = self.forward_instrumented(x, cache, plan, &mut NoInstruments);
        out
    }

    /// [`Block::forward`] carrying `instruments` (a shape trace, a planted fault; see
    /// [`CausalSelfAttention::forward_instrumented`]).
    ///
    /// # Errors
    /// The checks a planted fault fails.
    pub fn forward_instrumented<I: Instrumentation>(
        &self,
        x: Tensor<3>,
        cache: Option<&mut LayerKv>,
        plan: &Plan,
        instruments: &mut I,
    ) -> Result<Tensor<3>, I::Error> {
        instruments.enter("attn");
        let attended = self.attn.forward_instrumented(
            layer_norm(&self.ln_1, x.clone(), self.layer_norm_epsilon),
            cache,
            plan,
            instruments,
        )?;
        instruments.leave();
        let x = x + attended;
        instruments.record("after_attn", &x.dims());
        let x = x.clone()
            + self
                .mlp
                .forward(layer_norm(&self.ln_2, x, self.layer_norm_epsilon));
        instruments.record("output", &x.dims());
        Ok(x)
    }
}
