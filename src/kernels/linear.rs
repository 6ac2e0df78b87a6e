//! A linear layer, `y = x·W + b`, forward and backward as single matrix products.
//!
//! Burn runs a linear layer under autodiff as a batched matrix product against the weight
//! broadcast over the batch, then a bias add. Its backward multiplies per batch entry for the
//! weight's gradient (`[B, D_in, D_out]`) and sums that over the batch afterwards. Here the
//! rows of every batch entry are one `[N, D_in]` matrix: the forward is one product into an
//! output preloaded with the bias, the backward one product per gradient and a column sum for
//! the bias.
//!
//! # Maths
//! `dx = dy·Wᵀ`, `dW = xᵀ·dy`, `db = Σ_rows dy`.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::flex::{dims, matrix, tensor, values};
use super::gemm::{Matrix, Output, matmul, matmul_into};
use super::simd::vectorised;

/// Rows handed to one rayon task when summing the bias gradient.
const ROWS_PER_TASK: usize = 256;

/// `x·W (+ b)` for `N` rows.
///
/// # Shapes
/// - x: `[N, D_in]` row-major, weight: `[D_in, D_out]`, bias: `[D_out]`, output `[N, D_out]`
pub fn forward(x: &[f32], weight: Matrix<'_>, bias: Option<&[f32]>) -> Vec<f32> {
    let [d_in, d_out] = weight.shape();
    let rows = x.len() / d_in.max(1);
    let x = Matrix::row_major(x, rows, d_in);
    match bias {
        None => matmul(x, weight),
        Some(bias) => {
            let mut out = Vec::with_capacity(rows * d_out);
            for _ in 0..rows {
                out.extend_from_slice(bias);
            }
            matmul_into(Output::row_major(&mut out), x, weight, true);
            out
        }
    }
}

/// `Σ_rows dy`, the bias gradient.
///
/// # Shapes
/// - dy: `[N, W]`, output `[W]`
pub fn column_sums(dy: &[f32], width: usize) -> Vec<f32> {
    dy.par_chunks(width * ROWS_PER_TASK)
        .map(|block| {
            let mut sums = vec![0.0; width];
            vectorised(
                #[inline(always)]
                || {
                    for row in block.chunks(width) {
                        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                    }
                },
            );
            sums
        })
        .reduce(
            || vec![0.0; width],
            |mut a, b| {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

/// What the backward needs: the input and the weight (both shared, not copied).
#[derive(Clone, Debug)]
pub struct Saved {
    x: FlexTensor,
    weight: FlexTensor,
}

/// Forward on Flex tensors; `x` may have any rank (its last dimension is `D_in`). Also returns
/// what the backward needs.
pub fn forward_flex(
    x: FlexTensor,
    weight: FlexTensor,
    bias: Option<FlexTensor>,
) -> (FlexTensor, Saved) {
    let mut shape = dims(&x);
    let mut scratch = None;
    let w = matrix(&weight, &mut scratch);
    let bias = bias.as_ref().map(values);
    let out = forward(&values(&x), w, bias.as_deref());
    *shape.last_mut().expect("x has at least one dimension") = w.shape()[1];
    (tensor(out, &shape), Saved { x, weight })
}

/// The gradients `[dx, dW, db]` for `dy`, each computed only where `wanted`.
pub fn backward_flex(saved: Saved, dy: FlexTensor, wanted: [bool; 3]) -> [Option<FlexTensor>; 3] {
    let mut scratch = None;
    let w = matrix(&saved.weight, &mut scratch);
    let [d_in, d_out] = w.shape();
    let x_shape = dims(&saved.x);
    let dy_values = values(&dy);
    let rows = dy_values.len() / d_out.max(1);
    let dy_matrix = Matrix::row_major(&dy_values, rows, d_out);
    let dx = wanted[0].then(|| tensor(matmul(dy_matrix, w.t()), &x_shape));
    let dw = wanted[1].then(|| {
        let x = values(&saved.x);
        let x = Matrix::row_major(&x, rows, d_in);
        tensor(matmul(x.t(), dy_matrix), &[d_in, d_out])
    });
    let db = wanted[2].then(|| tensor(column_sums(&dy_values, d_out), &[d_out]));
    [dx, dw, db]
}

/// The gradients for the parents present (`[x, W]`, and `b` with a bias), registered.
fn backward_step<const N: usize>(ops: Ops<Saved, N>, grads: &mut Gradients) {
    let dy = grads.consume::<Flex>(&ops.node);
    let mut wanted = [false; 3];
    for (wanted, parent) in wanted.iter_mut().zip(&ops.parents) {
        *wanted = parent.is_some();
    }
    let values = backward_flex(ops.state, dy, wanted);
    for (parent, value) in ops.parents.into_iter().zip(values) {
        if let (Some(node), Some(value)) = (parent, value) {
            grads.register::<Flex>(node.id, value);
        }
    }
}

/// The backward step of a linear layer with a bias; parents are `[x, W, b]`.
#[derive(Debug)]
pub struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_step(ops, grads);
    }
}

/// The backward step of a linear layer without a bias; parents are `[x, W]`.
#[derive(Debug)]
pub struct LinearNoBiasBackward;

impl Backward<Flex, 2> for LinearNoBiasBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        backward_step(ops, grads);
    }
}
