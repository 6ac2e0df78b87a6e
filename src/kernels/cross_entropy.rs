//! Mean cross-entropy of logits against target ids, `-mean_n log softmax(logits_n)[t_n]`,
//! forward and backward in one pass each over the logits.
//!
//! Composite, this is a log-softmax (max, subtract, exp, sum, log, subtract), a gather and a
//! mean, each recorded and each allocating `[N, V]`. Fused, the forward keeps one number per
//! row, `log Σ exp(logits_n)`, and the backward writes `softmax − one_hot` directly.
//!
//! # Maths
//! `loss = mean_n (lse_n − logits[n, t_n])` with `lse_n = log Σ_v exp(logits[n, v])`;
//! `dlogits[n, v] = (exp(logits[n, v] − lse_n) − [v = t_n]) · dloss / N`.

use std::sync::Arc;

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{dims, scalar, tensor, values};
use super::math::{exp, max, sum_exp};
use super::simd::vectorised;

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 64;

/// The loss and each row's log-sum-exp.
pub struct Loss {
    /// The mean over rows.
    pub mean: f32,
    /// `lse_n`, `[N]`.
    pub log_sum_exp: Vec<f32>,
}

/// Forward over `N = targets.len()` rows of `V` logits.
///
/// # Shapes
/// - logits: `[N, V]`, targets: `[N]` ids in `0..V`
///
/// # Panics
/// If a target is not a valid id (callers check token ids before the model runs).
pub fn forward(logits: &[f32], targets: &[usize]) -> Loss {
    let vocab = logits.len() / targets.len();
    let per_row: Vec<(f32, f32)> = logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .with_min_len(ROWS_PER_TASK)
        .map(|(row, &target)| {
            assert!(
                target < vocab,
                "target id {target} outside a vocabulary of {vocab}"
            );
            let max = vectorised(
                #[inline(always)]
                || max(row),
            );
            let lse = max
                + vectorised(
                    #[inline(always)]
                    || sum_exp(row, max),
                )
                .ln();
            (lse, lse - row[target])
        })
        .collect();
    let mean = per_row.iter().map(|&(_, loss)| loss as f64).sum::<f64>() / targets.len() as f64;
    Loss {
        mean: mean as f32,
        log_sum_exp: per_row.into_iter().map(|(lse, _)| lse).collect(),
    }
}

/// Backward of [`forward`] for an upstream gradient `dloss`.
///
/// # Shapes
/// - logits: `[N, V]`, targets and log_sum_exp: `[N]`, returns `[N, V]`
pub fn backward(logits: &[f32], targets: &[usize], log_sum_exp: &[f32], dloss: f32) -> Vec<f32> {
    let vocab = logits.len() / targets.len();
    let scale = dloss / targets.len() as f32;
    let mut grad = vec![0.0; logits.len()];
    grad.par_chunks_mut(vocab)
        .zip(logits.par_chunks(vocab))
        .zip(targets.par_iter().zip(log_sum_exp))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((grad, row), (&target, &lse))| {
            vectorised(
                #[inline(always)]
                || {
                    for (g, &v) in grad.iter_mut().zip(row) {
                        *g = exp(v - lse) * scale;
                    }
                },
            );
            grad[target] -= scale;
        });
    grad
}

/// Target ids read from an integer tensor of any integer type.
pub fn target_ids(targets: &FlexTensor) -> Vec<usize> {
    targets
        .clone()
        .into_data()
        .iter::<i64>()
        .map(|id| usize::try_from(id).unwrap_or(usize::MAX))
        .collect()
}

/// What the backward needs: the logits, the targets and each row's log-sum-exp.
#[derive(Clone, Debug)]
pub struct Saved {
    logits: FlexTensor,
    targets: Arc<Vec<usize>>,
    log_sum_exp: Arc<Vec<f32>>,
}

/// Forward on Flex tensors: logits `[N, V]`, integer targets `[N]`; the loss has shape `[1]`.
pub fn forward_flex(logits: FlexTensor, targets: &FlexTensor) -> (FlexTensor, Saved) {
    let targets = target_ids(targets);
    let loss = forward(&values(&logits), &targets);
    let saved = Saved {
        logits,
        targets: Arc::new(targets),
        log_sum_exp: Arc::new(loss.log_sum_exp),
    };
    (scalar(loss.mean), saved)
}

/// The backward step recorded under autodiff; the one parent is the logits.
#[derive(Debug)]
pub struct CrossEntropyBackward;

impl Backward<Flex, 1> for CrossEntropyBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        let dloss = grads.consume::<Flex>(&ops.node);
        let dloss = values(&dloss)[0];
        let grad = backward(
            &values(&saved.logits),
            &saved.targets,
            &saved.log_sum_exp,
            dloss,
        );
        register_grads!(grads, ops.parents, [tensor(grad, &dims(&saved.logits))]);
    }
}
