//! Causal attention, forward and backward, for training on Flex.
//!
//! Under autodiff Burn replaces its fused attention with a composite of recorded ops (scores,
//! a mask built and applied, softmax, weights · V), keeping every intermediate `[B, H, T, S]`
//! tensor alive for the backward pass. Here the forward is two matrix products around one
//! fused pass (scale, mask, softmax with a vectorised `exp`), and the backward four matrix
//! products around one fused pass. The forward keeps the weights for the backward when they
//! are small (up to 64 MB per layer), and otherwise only q, k and v, recomputing the weights
//! in the backward. The causal mask is aligned bottom-right, as everywhere in the crate: query `i` of `T`
//! sees keys `0 ..= i + S − T`.
//!
//! # Grouped queries
//! With fewer key/value heads than query heads (grouped-query attention, `H = G·H_kv`), query
//! head `h` reads key/value head `h / G`. The `G` query heads of a group are adjacent in
//! `[B, H, T, Dh]`, so reshaping the queries to `[B, H_kv, G·T, Dh]` lines each group's queries
//! up against its one key/value head: every product below then runs per key/value head, the
//! keys and values are never repeated, and `dK`, `dV` sum over the group by themselves. Only
//! the mask needs to know that row `r` of a group is query `r mod T`.
//!
//! # Maths
//! `P = softmax(mask(Q Kᵀ · c))` with `c = 1/√Dh`, `O = P V`. Given `dO`:
//! `dV = Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP)) · c`, `dQ = dS K`,
//! `dK = dSᵀ Q`.

use burn::backend::Flex;
use burn::backend::TensorMetadata;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::FloatTensorOps;
use rayon::prelude::*;

use super::flex::{dims, values, values_mut};
use super::gemm::{Matrix, Output, matmul, matmul_into};
use super::math::{dot, exp_in_place, max};
use super::simd::vectorised;

/// Rows handed to one rayon task.
const ROWS_PER_TASK: usize = 16;

/// Turn raw scores `q·kᵀ` into causal attention weights, in place, row by row.
///
/// # Shapes
/// - scores: `[R, S]` with `R = B·H·T` rows; row `r` is query `r mod T`
pub fn causal_softmax(scores: &mut [f32], queries: usize, keys: usize, scale: f32) {
    scores
        .par_chunks_mut(keys)
        .enumerate()
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(row, scores)| {
            let visible = (row % queries + keys - queries + 1).min(keys);
            causal_softmax_row(scores, visible, scale);
        });
}

/// One row of [`causal_softmax`]: the first `visible` scores become weights summing to 1, the
/// rest 0.
pub fn causal_softmax_row(scores: &mut [f32], visible: usize, scale: f32) {
    let (seen, hidden) = scores.split_at_mut(visible);
    vectorised(
        #[inline(always)]
        || {
            let shift = max(seen) * scale;
            let inv = 1.0 / exp_in_place(seen, scale, shift);
            seen.iter_mut().for_each(|s| *s *= inv);
        },
    );
    hidden.fill(0.0);
}

/// The gradient of the (scaled) scores from the weights and their gradient, written over
/// `weight_grads`: `dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale`.
///
/// # Shapes
/// - weights, weight_grads: `[R, S]`
pub fn score_gradient(weights: &[f32], weight_grads: &mut [f32], keys: usize, scale: f32) {
    weight_grads
        .par_chunks_mut(keys)
        .zip(weights.par_chunks(keys))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(dp, p)| score_gradient_row(p, dp, scale));
}

/// One row of [`score_gradient`].
pub fn score_gradient_row(weights: &[f32], weight_grads: &mut [f32], scale: f32) {
    vectorised(
        #[inline(always)]
        || {
            let dot = dot(weight_grads, weights);
            for (d, p) in weight_grads.iter_mut().zip(weights) {
                *d = p * (*d - dot) * scale;
            }
        },
    )
}

/// Above this many attention weights (`B·H·T·S`, 64 MB of `f32`) per layer the forward keeps
/// only q, k and v and the backward recomputes the weights; below it the weights are kept,
/// which saves the backward one matrix product and one softmax.
pub const KEEP_WEIGHTS_UP_TO: usize = 16 << 20;

/// The queries of each key/value head side by side (see the module docs).
///
/// # Shapes
/// - q: `[B, H, T, Dh]` with `H = G·H_kv`, output `[B, H_kv, G·T, Dh]`
fn grouped(q: FlexTensor, kv_heads: usize) -> FlexTensor {
    let [batch, heads, queries, head_dim] = dims(&q)[..] else {
        unreachable!("attention inputs are 4-d")
    };
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{heads} query heads cannot share {kv_heads} key/value heads evenly"
    );
    if heads == kv_heads {
        return q;
    }
    let shape = [batch, kv_heads, heads / kv_heads * queries, head_dim];
    Flex::float_reshape(q, shape.into())
}

/// The causal attention weights `softmax(mask(q·kᵀ / √Dh))` for queries grouped by
/// [`grouped`], `queries` (`T`) positions per head.
///
/// # Shapes
/// - q: `[B, H_kv, G·T, Dh]`, k: `[B, H_kv, S, Dh]`, output `[B, H_kv, G·T, S]`
fn weights_flex(q: FlexTensor, k: FlexTensor, queries: usize) -> FlexTensor {
    let head_dim = dims(&q)[3];
    let keys = dims(&k)[2];
    let mut weights = Flex::float_matmul(q, Flex::float_swap_dims(k, 2, 3));
    causal_softmax(
        values_mut(&mut weights),
        queries,
        keys,
        1.0 / (head_dim as f32).sqrt(),
    );
    weights
}

/// Forward: the weights with one matrix product and a fused masked softmax, then `P·V`.
/// Returns the weights too (grouped, `[B, H_kv, G·T, S]`), for the backward.
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]` with `S ≥ T` and `H_kv` dividing `H`,
///   output `[B, H, T, Dh]`
pub fn forward_flex(q: FlexTensor, k: FlexTensor, v: FlexTensor) -> (FlexTensor, FlexTensor) {
    let shape = dims(&q);
    let weights = weights_flex(grouped(q, dims(&k)[1]), k, shape[2]);
    let out = Flex::float_matmul(weights.clone(), v);
    (Flex::float_reshape(out, shape.into()), weights)
}

/// Query rows per block of [`forward_blocked`].
const QUERY_BLOCK: usize = 64;

/// Forward for inference on long sequences, holding no `[T, S]` weights: each block of
/// [`QUERY_BLOCK`] queries of one head multiplies against only the keys its last query sees
/// (the causal mask leaves the rest out, so about half the products of the full matrix), then
/// a fused softmax per row and the product with the values. Blocks run in parallel, each with
/// its own `[QUERY_BLOCK, S]` scores.
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]` with `S ≥ T` and `H_kv` dividing `H`,
///   output `[B, H, T, Dh]`
pub fn forward_blocked(q: FlexTensor, k: FlexTensor, v: FlexTensor) -> FlexTensor {
    let [batch, heads, queries, head_dim] = dims(&q)[..] else {
        unreachable!("attention inputs are 4-d")
    };
    let [kv_heads, keys] = [dims(&k)[1], dims(&k)[2]];
    let groups = heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let (q, k, v) = (values(&q), values(&k), values(&v));
    let mut out = vec![0.0f32; batch * heads * queries * head_dim];
    out.par_chunks_mut(queries * head_dim)
        .enumerate()
        .flat_map(|(head, out)| {
            out.par_chunks_mut(QUERY_BLOCK * head_dim)
                .enumerate()
                .map(move |(block, out)| (head, block, out))
        })
        .for_each(|(head, block, out)| {
            let [row, h] = [head / heads, head % heads];
            let kv = row * kv_heads + h / groups;
            let first = block * QUERY_BLOCK;
            let rows = out.len() / head_dim;
            // Query `t` sees keys `0 ..= t + S − T`; the block's last query sees the most.
            let seen = (first + rows + keys - queries).min(keys);
            let q = &q[(head * queries + first) * head_dim..][..rows * head_dim];
            let k = &k[kv * keys * head_dim..][..seen * head_dim];
            let v = &v[kv * keys * head_dim..][..seen * head_dim];
            let mut scores = matmul(
                Matrix::row_major(q, rows, head_dim),
                Matrix::row_major(k, seen, head_dim).t(),
            );
            for (r, scores) in scores.chunks_mut(seen).enumerate() {
                let visible = (first + r + keys - queries + 1).min(seen);
                causal_softmax_row(scores, visible, scale);
            }
            matmul_into(
                Output::row_major(out),
                Matrix::row_major(&scores, rows, seen),
                Matrix::row_major(v, seen, head_dim),
                false,
            );
        });
    super::flex::tensor(out, &[batch, heads, queries, head_dim])
}

/// What the backward keeps: q, k, v and, when they are small enough, the weights.
pub fn saved(qkv: [FlexTensor; 3], weights: FlexTensor) -> Saved {
    let weights = (weights.shape().num_elements() <= KEEP_WEIGHTS_UP_TO).then_some(weights);
    Saved { qkv, weights }
}

/// The gradients of `q`, `k` and `v` for an upstream gradient `d_out`.
pub fn backward_flex(saved: Saved, d_out: FlexTensor) -> [FlexTensor; 3] {
    let [q, k, v] = saved.qkv;
    let q_shape = dims(&q);
    let [keys, kv_heads] = [dims(&k)[2], dims(&k)[1]];
    let scale = 1.0 / (q_shape[3] as f32).sqrt();
    let q = grouped(q, kv_heads);
    let d_out = grouped(d_out, kv_heads);
    let weights = match saved.weights {
        Some(weights) => weights,
        None => weights_flex(q.clone(), k.clone(), q_shape[2]),
    };
    // With groups, these products sum over each group's query heads: dK and dV of a shared
    // head collect the gradients of every query head that read it.
    let d_v = Flex::float_matmul(Flex::float_swap_dims(weights.clone(), 2, 3), d_out.clone());
    let mut d_scores = Flex::float_matmul(d_out, Flex::float_swap_dims(v, 2, 3));
    score_gradient(&values(&weights), values_mut(&mut d_scores), keys, scale);
    let d_q = Flex::float_matmul(d_scores.clone(), k);
    let d_k = Flex::float_matmul(Flex::float_swap_dims(d_scores, 2, 3), q);
    [Flex::float_reshape(d_q, q_shape.into()), d_k, d_v]
}

/// What the backward needs: the inputs, and the weights unless they were too large to keep.
#[derive(Clone, Debug)]
pub struct Saved {
    qkv: [FlexTensor; 3],
    weights: Option<FlexTensor>,
}

/// The backward step recorded under autodiff; parents are `[q, k, v]`.
#[derive(Debug)]
pub struct CausalAttentionBackward;

impl Backward<Flex, 3> for CausalAttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_out = grads.consume::<Flex>(&ops.node);
        register_grads!(grads, ops.parents, backward_flex(ops.state, d_out));
    }
}
