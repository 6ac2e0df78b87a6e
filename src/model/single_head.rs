//! One attention head, written to be read: the scores, the mask and the weights are all in
//! plain sight, and the weights are returned so a test (or a person) can look at them.

use burn::tensor::Tensor;

use super::mask::{MaskMode, masked_softmax};

/// Scaled dot-product attention for a single head.
///
/// `weights = masked_softmax(q · kᵀ / sqrt(d))`, `output = weights · v`.
///
/// # Shapes
/// - query: `[B, Tq, d]`
/// - key: `[B, Tk, d]`
/// - value: `[B, Tk, dv]`
/// - output: `[B, Tq, dv]`
/// - weights: `[B, Tq, Tk]`, row `i` is how much query `i` takes from each key.
///
/// Queries are aligned bottom-right against the keys (see [`super::mask`]), so `Tq < Tk` is the
/// KV-cache case.
pub fn single_head_attention(
    query: Tensor<3>,
    key: Tensor<3>,
    value: Tensor<3>,
    mode: MaskMode,
) -> (Tensor<3>, Tensor<3>) {
    let d = query.dims()[2];
    // [B, Tq, d] x [B, d, Tk] -> [B, Tq, Tk]. Dividing by sqrt(d) keeps the scores' variance
    // near one whatever the head size, so the softmax does not saturate.
    let scores = query
        .matmul(key.swap_dims(1, 2))
        .div_scalar((d as f64).sqrt());
    let weights = masked_softmax(scores, mode, None);
    // [B, Tq, Tk] x [B, Tk, dv] -> [B, Tq, dv]
    let output = weights.clone().matmul(value);
    (output, weights)
}
