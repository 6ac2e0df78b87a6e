//! Layer normalisation over the last dimension, forward and backward in one pass each.
//!
//! Composite, under autodiff, this is about ten recorded ops (mean, centre, square, mean,
//! add, sqrt, divide, scale, shift), each allocating a tensor the size of the input. Fused,
//! the forward writes the output and keeps two numbers per row (the mean and `1/σ`), and the
//! backward reads them back instead of recomputing the statistics.
//!
//! # Maths
//! For a row `x` of width `D`: `x̂ = (x − μ) / σ` with `σ = sqrt(var(x) + ε)`, `y = γ ⊙ x̂ + β`.
//! Given `dy`: `dβ = Σ_rows dy`, `dγ = Σ_rows dy ⊙ x̂`, and with `g = γ ⊙ dy`,
//! `dx = (g − mean(g) − x̂ · mean(g ⊙ x̂)) / σ`.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{dims, tensor, values};
use super::math::{dot, dot_centred, sum};
use super::simd::vectorised;

/// Rows handed to one rayon task: enough work to pay for the hand-off.
const ROWS_PER_TASK: usize = 64;

/// The normalised rows and their statistics.
pub struct Normalised {
    /// `y`, `[N, D]`.
    pub output: Vec<f32>,
    /// `μ` of each row, `[N]`.
    pub mean: Vec<f32>,
    /// `1/σ` of each row, `[N]`.
    pub inv_std: Vec<f32>,
}

/// Forward on `N` rows of width `D = gamma.len()`.
///
/// # Shapes
/// - x: `[N, D]`, gamma and beta: `[D]`
pub fn forward(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) -> Normalised {
    let width = gamma.len();
    let rows = x.len() / width;
    let mut output = vec![0.0; x.len()];
    let mut mean = vec![0.0; rows];
    let mut inv_std = vec![0.0; rows];
    output
        .par_chunks_mut(width)
        .zip(x.par_chunks(width))
        .zip(mean.par_iter_mut().zip(inv_std.par_iter_mut()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((y, x), (mu, rstd))| {
            vectorised(
                #[inline(always)]
                || (*mu, *rstd) = normalise_row(x, gamma, beta, eps, y),
            )
        });
    Normalised {
        output,
        mean,
        inv_std,
    }
}

/// One row: `y = (x − μ) / σ · γ + β`; returns `μ` and `1/σ`. Inline, so that it runs at the
/// vector width of the [`vectorised`] loop it is called from.
#[inline(always)]
pub fn normalise_row(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    y: &mut [f32],
) -> (f32, f32) {
    let width = gamma.len();
    let m = sum(x) / width as f32;
    // The centred row goes into the output first, then is scaled and shifted there.
    for (y, x) in y.iter_mut().zip(x) {
        *y = x - m;
    }
    let var = dot(y, y) / width as f32;
    let r = 1.0 / (var + eps).sqrt();
    for ((y, g), b) in y.iter_mut().zip(gamma).zip(beta) {
        *y = *y * r * g + b;
    }
    (m, r)
}

/// The gradients of the input and of both parameters.
pub struct Gradient {
    /// `dx`, `[N, D]`.
    pub x: Vec<f32>,
    /// `dγ`, `[D]`.
    pub gamma: Vec<f32>,
    /// `dβ`, `[D]`.
    pub beta: Vec<f32>,
}

/// Backward from the statistics the forward kept.
///
/// # Shapes
/// - x, dy: `[N, D]`, gamma: `[D]`, mean and inv_std: `[N]`
pub fn backward(x: &[f32], gamma: &[f32], mean: &[f32], inv_std: &[f32], dy: &[f32]) -> Gradient {
    let width = gamma.len();
    let mut dx = vec![0.0; x.len()];
    // Each task sums its rows' dγ and dβ into its own accumulator; the partial sums are added
    // at the end, so no two tasks write the same memory.
    let block = width * ROWS_PER_TASK;
    let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(block)
        .zip(x.par_chunks(block))
        .zip(dy.par_chunks(block))
        .enumerate()
        .map(|(task, ((dx, x), dy))| {
            let mut dgamma = vec![0.0; width];
            let mut dbeta = vec![0.0; width];
            let first_row = task * ROWS_PER_TASK;
            for (row, ((dx, x), dy)) in dx
                .chunks_mut(width)
                .zip(x.chunks(width))
                .zip(dy.chunks(width))
                .enumerate()
            {
                let (m, r) = (mean[first_row + row], inv_std[first_row + row]);
                vectorised(
                    #[inline(always)]
                    || {
                        // `g = γ ⊙ dy` goes into dx first; its two means are lane sums over it.
                        for ((((dx, x), dy), g), (dg, db)) in dx
                            .iter_mut()
                            .zip(x)
                            .zip(dy)
                            .zip(gamma)
                            .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
                        {
                            *dg += dy * (x - m) * r;
                            *db += dy;
                            *dx = g * dy;
                        }
                        let mean_g = sum(dx) / width as f32;
                        let mean_g_xhat = dot_centred(dx, x, m) * r / width as f32;
                        for (dx, x) in dx.iter_mut().zip(x) {
                            *dx = (*dx - mean_g - (x - m) * r * mean_g_xhat) * r;
                        }
                    },
                );
            }
            (dgamma, dbeta)
        })
        .collect();
    let mut gamma_grad = vec![0.0; width];
    let mut beta_grad = vec![0.0; width];
    for (dgamma, dbeta) in partial {
        gamma_grad.iter_mut().zip(dgamma).for_each(|(a, b)| *a += b);
        beta_grad.iter_mut().zip(dbeta).for_each(|(a, b)| *a += b);
    }
    Gradient {
        x: dx,
        gamma: gamma_grad,
        beta: beta_grad,
    }
}

/// What the backward needs: the input, `γ` and the per-row statistics.
#[derive(Clone, Debug)]
pub struct Saved {
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    inv_std: FlexTensor,
}

/// Forward on Flex tensors of any rank (the last dimension is normalised); also returns what
/// the backward needs.
pub fn forward_flex(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    eps: f64,
) -> (FlexTensor, Saved) {
    let shape = dims(&x);
    let rows = shape[..shape.len() - 1].iter().product::<usize>();
    let out = forward(&values(&x), &values(&gamma), &values(&beta), eps as f32);
    let saved = Saved {
        x,
        gamma,
        mean: tensor(out.mean, &[rows]),
        inv_std: tensor(out.inv_std, &[rows]),
    };
    (tensor(out.output, &shape), saved)
}

/// The backward step recorded under autodiff; parents are `[x, γ, β]`.
#[derive(Debug)]
pub struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let dy = grads.consume::<Flex>(&ops.node);
        let grad = backward(
            &values(&saved.x),
            &values(&saved.gamma),
            &values(&saved.mean),
            &values(&saved.inv_std),
            &values(&dy),
        );
        let width = [grad.gamma.len()];
        register_grads!(
            grads,
            ops.parents,
            [
                tensor(grad.x, &dims(&saved.x)),
                tensor(grad.gamma, &width),
                tensor(grad.beta, &width),
            ]
        );
    }
}
