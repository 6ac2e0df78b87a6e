//! Scaled dot-product attention, the formula every head computes, written to be read: the
//! scores, the mask and the weights are in plain sight, and the weights are returned so a test
//! (or a person) can look at them.
//!
//! The same lines serve one head (`[B, T, d]` tensors) and every head of a layer at once
//! (`[B, H, T, d]`, the heads one more batch axis): the multi-head layer's readable path is this
//! function ([`super::attention_path::AttentionPath::Readable`]), so what a learner reads here
//! is what the model computes wherever no fast path applies.

use burn::nn::Dropout;
use burn::tensor::{Bool, Tensor};

use super::fault::Fault;
use super::instruments::{Instrumentation, NoInstruments, check_shape};
use super::mask::{MaskMode, masked_softmax};

/// Which keys each query may see, and the dropout on the weights.
///
/// # Shapes
/// - hidden: broadcastable to the scores `[..., Tq, Tk]`, `true` = hidden
#[derive(Clone, Debug)]
pub struct Masking<'a, const D: usize> {
    /// The rule applied to the scores (only [`MaskMode::Causal`] is correct).
    pub mode: MaskMode,
    /// Keys hidden besides the rule: left padding, a sliding window's band.
    pub hidden: Option<Tensor<D, Bool>>,
    /// Dropout on the attention weights (active only when training on an autodiff device).
    pub dropout: Option<&'a Dropout>,
}

impl<const D: usize> Masking<'_, D> {
    /// `mode` alone: no extra hidden keys, no dropout.
    pub fn new(mode: MaskMode) -> Self {
        Self {
            mode,
            hidden: None,
            dropout: None,
        }
    }
}

/// Scaled dot-product attention: `weights = masked_softmax(q · kᵀ / sqrt(d))`,
/// `output = weights · v`, reporting the scores' and weights' shapes to `instruments`.
///
/// # Shapes
/// - q: `[..., Tq, d]`, k: `[..., Tk, d]`, v: `[..., Tk, dv]`
/// - returns the output `[..., Tq, dv]` and the weights `[..., Tq, Tk]`; row `i` of the weights
///   is how much query `i` takes from each key
///
/// Queries are aligned bottom-right against the keys (see [`super::mask`]), so `Tq < Tk` is the
/// KV-cache case.
///
/// # Errors
/// With [`Fault::TransposedKey`] planted, the shape check on the key operand (unless `Tk`
/// happens to equal `d`, when the wrong product has the right shape).
pub fn attention<const D: usize, I: Instrumentation>(
    q: Tensor<D>,
    k: Tensor<D>,
    v: Tensor<D>,
    masking: &Masking<D>,
    instruments: &mut I,
) -> Result<(Tensor<D>, Tensor<D>), I::Error> {
    let d = q.dims()[D - 1];
    // [.., Tq, d] x [.., d, Tk] -> [.., Tq, Tk]. (The transposed-key fault forgets the swap.)
    let mut transposed = k.dims();
    transposed.swap(D - 2, D - 1);
    let key_operand = match instruments.fault() {
        Some(Fault::TransposedKey) => k,
        _ => k.swap_dims(D - 2, D - 1),
    };
    check_shape(
        instruments,
        "attention scores q · kᵀ, the key operand",
        &key_operand.dims(),
        &transposed,
        "K was not transposed: the product needs q's last axis (Dh) to meet K's last axis, so \
         K must enter as kᵀ = k.swap_dims(2, 3), [B, H, Dh, S]",
    )?;
    // Dividing by sqrt(d) keeps the scores' variance near one whatever the head width, so the
    // softmax does not saturate.
    let scores = q.matmul(key_operand).div_scalar((d as f64).sqrt());
    instruments.record("scores", &scores.dims());
    let weights = masked_softmax(scores, masking.mode, masking.hidden.clone());
    let weights = match masking.dropout {
        Some(dropout) => dropout.forward(weights),
        None => weights,
    };
    instruments.record("weights", &weights.dims());
    // [.., Tq, Tk] x [.., Tk, dv] -> [.., Tq, dv]
    Ok((weights.clone().matmul(v), weights))
}

/// [`attention`] for one head with nothing but a mask rule: the form the hand-worked example
/// (`tests/hand_worked.rs`) checks number by number.
///
/// # Shapes
/// - query: `[B, Tq, d]`, key: `[B, Tk, d]`, value: `[B, Tk, dv]`
/// - returns the output `[B, Tq, dv]` and the weights `[B, Tq, Tk]`
pub fn single_head_attention(
    query: Tensor<3>,
    key: Tensor<3>,
    value: Tensor<3>,
    mode: MaskMode,
) -> (Tensor<3>, Tensor<3>) {
    let Ok(result) = attention(query, key, value, &Masking::new(mode), &mut NoInstruments);
    result
}
