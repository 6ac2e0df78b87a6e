//! Bias + GELU, `y = gelu(h + b)`, forward and backward in one pass each, in either form:
//! exact, `gelu(z) = z · Φ(z) = z/2 · (1 + erf(z/√2))` (nanoGPT's, PyTorch's default), or the
//! tanh approximation, `z/2 · (1 + tanh(√(2/π) · (z + 0.044715 z³)))` (GPT-2's `gelu_new`).
//!
//! This is the first half of the MLP: the matrix product `h = x·W` stays Burn's, the bias and
//! the activation are fused so the pre-activation is never stored twice. `erf` and `exp` are
//! the vectorisable ones of [`super::math`].
//!
//! # Maths
//! Exact: `gelu'(z) = Φ(z) + z · φ(z)` with `φ(z) = exp(−z²/2) / √(2π)`. Tanh form, with
//! `u = √(2/π)(z + 0.044715 z³)` and `t = tanh u`: `gelu'(z) = (1 + t)/2 + z/2 · (1 − t²) ·
//! √(2/π)(1 + 3 · 0.044715 z²)`. Both: `dh = dy ⊙ gelu'(h + b)`, `db = Σ_rows dh`.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{dims, tensor, values};
use super::math::{erf, exp};
use super::simd::vectorised;

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 32;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
/// `√(2/π)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic term's coefficient in the tanh form.
const CUBIC: f32 = 0.044_715;

/// `tanh(u) = 1 − 2 / (e^{2u} + 1)`, from the vectorisable [`exp`] (which clamps, so large
/// `|u|` gives ±1, never NaN).
#[inline(always)]
fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

/// `gelu(z)` and `gelu'(z)` in the exact form, or the tanh one when `approximate`.
#[inline(always)]
fn gelu_and_slope(z: f32, approximate: bool) -> (f32, f32) {
    if approximate {
        let t = tanh(SQRT_2_OVER_PI * (z + CUBIC * z * z * z));
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * z * z);
        (
            0.5 * z * (1.0 + t),
            0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * du,
        )
    } else {
        let cdf = 0.5 * (1.0 + erf(z * FRAC_1_SQRT_2));
        let pdf = FRAC_1_SQRT_2PI * exp(-0.5 * z * z);
        (z * cdf, cdf + z * pdf)
    }
}

/// `gelu(z)` alone (the forward needs no slope).
#[inline(always)]
pub(super) fn gelu(z: f32, approximate: bool) -> f32 {
    if approximate {
        0.5 * z * (1.0 + tanh(SQRT_2_OVER_PI * (z + CUBIC * z * z * z)))
    } else {
        0.5 * z * (1.0 + erf(z * FRAC_1_SQRT_2))
    }
}

/// `gelu(h + b)` for `N` rows of width `W = bias.len()`, the tanh form when `approximate`.
///
/// # Shapes
/// - h: `[N, W]`, bias: `[W]`, output: `[N, W]`
pub fn forward(h: &[f32], bias: &[f32], approximate: bool) -> Vec<f32> {
    let width = bias.len();
    let mut out = vec![0.0; h.len()];
    out.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(h.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(out, h)| {
            vectorised(
                #[inline(always)]
                || {
                    for (out, h) in out.chunks_mut(width).zip(h.chunks(width)) {
                        for ((y, h), b) in out.iter_mut().zip(h).zip(bias) {
                            *y = gelu(h + b, approximate);
                        }
                    }
                },
            )
        });
    out
}

/// The gradients of the pre-activation and of the bias.
pub struct Gradient {
    /// `dh`, `[N, W]`.
    pub h: Vec<f32>,
    /// `db`, `[W]`.
    pub bias: Vec<f32>,
}

/// Backward of [`forward`].
///
/// # Shapes
/// - h, dy: `[N, W]`, bias: `[W]`
pub fn backward(h: &[f32], bias: &[f32], dy: &[f32], approximate: bool) -> Gradient {
    let width = bias.len();
    let block = width * ROWS_PER_TASK;
    let mut dh = vec![0.0; h.len()];
    let partial: Vec<Vec<f32>> = dh
        .par_chunks_mut(block)
        .zip(h.par_chunks(block))
        .zip(dy.par_chunks(block))
        .map(|((dh, h), dy)| {
            let mut db = vec![0.0; width];
            vectorised(
                #[inline(always)]
                || {
                    for ((dh, h), dy) in dh
                        .chunks_mut(width)
                        .zip(h.chunks(width))
                        .zip(dy.chunks(width))
                    {
                        for ((((dh, h), dy), b), db) in
                            dh.iter_mut().zip(h).zip(dy).zip(bias).zip(db.iter_mut())
                        {
                            let (_, slope) = gelu_and_slope(h + b, approximate);
                            let grad = dy * slope;
                            *dh = grad;
                            *db += grad;
                        }
                    }
                },
            );
            db
        })
        .collect();
    let mut bias_grad = vec![0.0; width];
    for db in partial {
        bias_grad.iter_mut().zip(db).for_each(|(a, b)| *a += b);
    }
    Gradient {
        h: dh,
        bias: bias_grad,
    }
}

/// What the backward needs: the pre-activation, the bias and the form.
#[derive(Clone, Debug)]
pub struct Saved {
    h: FlexTensor,
    bias: FlexTensor,
    approximate: bool,
}

/// Forward on Flex tensors of any rank (the bias runs along the last dimension).
pub fn forward_flex(h: FlexTensor, bias: FlexTensor, approximate: bool) -> (FlexTensor, Saved) {
    let out = forward(&values(&h), &values(&bias), approximate);
    let out = tensor(out, &dims(&h));
    (
        out,
        Saved {
            h,
            bias,
            approximate,
        },
    )
}

/// The backward step recorded under autodiff; parents are `[h, b]`.
#[derive(Debug)]
pub struct BiasGeluBackward;

impl Backward<Flex, 2> for BiasGeluBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let grad = backward(
            &values(&saved.h),
            &values(&saved.bias),
            &values(&dy),
            saved.approximate,
        );
        let width = [grad.bias.len()];
        register_grads!(
            grads,
            ops.parents,
            [tensor(grad.h, &dims(&saved.h)), tensor(grad.bias, &width)]
        );
    }
}
