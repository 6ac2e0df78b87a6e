//! AdamW's update of one parameter in one pass over its four arrays.
//!
//! Burn's AdamW computes the update as about a dozen tensor operations per parameter (two
//! moment updates of three ops each, the square, two bias corrections, the square root, the
//! division, the decay and the step), each a pass over memory and an allocation. Here every
//! element is read and written once, with the same operations in the same order as Burn's
//! (`tests/adamw.rs` holds the two together over many steps).
//!
//! # Maths
//! With gradient `g` at step `t`: `m ← β₁·m + (1 − β₁)·g`, `v ← β₂·v + (1 − β₂)·g²`,
//! `p ← p·(1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)`; at `t = 1` the moments
//! start from `(1 − β₁)·g` and `(1 − β₂)·g²`.

use rayon::prelude::*;

use super::simd::vectorised;

/// AdamW's constants for one step.
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    /// `β₁`, `β₂`.
    pub betas: [f32; 2],
    /// `ε`.
    pub epsilon: f32,
    /// The learning rate.
    pub lr: f64,
    /// Decoupled weight decay `λ`.
    pub weight_decay: f32,
    /// The step number `t`, from 1.
    pub time: usize,
}

/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// One step in place: `param`, `m` and `v` updated from `grad`; `first` when the moments have
/// no history yet (they are then written, not read).
///
/// # Shapes
/// - param, grad, m, v: `[N]`
pub fn step(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    hyper: Hyper,
    first: bool,
) {
    let [b1, b2] = hyper.betas;
    let (f1, f2) = (1.0 - b1, 1.0 - b2);
    let time = hyper.time as i32;
    let correction_1 = 1.0 - b1.powi(time);
    let correction_2 = 1.0 - b2.powi(time);
    let decay = (1.0 - hyper.lr * hyper.weight_decay as f64) as f32;
    let lr = hyper.lr as f32;
    let eps = hyper.epsilon;
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| {
            vectorised(
                #[inline(always)]
                || {
                    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut())
                    {
                        let (g, square) = (*g, g * g);
                        (*m, *v) = if first {
                            (g * f1, square * f2)
                        } else {
                            (*m * b1 + g * f1, *v * b2 + square * f2)
                        };
                        let delta = (*m / correction_1) / ((*v / correction_2).sqrt() + eps);
                        *p = *p * decay - delta * lr;
                    }
                },
            )
        });
}
