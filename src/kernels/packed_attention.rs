//! Causal self-attention from the packed projections `[B, T, 3·D]` (queries, keys and values
//! side by side, as nanoGPT's `c_attn` produces them) straight to the merged heads `[B, T, D]`,
//! forward and backward.
//!
//! Head `h` of batch entry `b` reads its queries, keys and values as strided views of the
//! packed rows (columns `h·Dh ..`, `D + h·Dh ..`, `2D + h·Dh ..`) and writes its output into
//! columns `h·Dh ..` of the merged rows, so neither `split_heads` nor `merge_heads` copies
//! anything, and the backward writes `dq`, `dk` and `dv` into one packed gradient, which is
//! what the single `x·[W_Q | W_K | W_V]` product before it takes. The maths are those of
//! [`super::attention`], per head.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::attention::{KEEP_WEIGHTS_UP_TO, causal_softmax_row, score_gradient_row};
use super::flex::{dims, tensor, values};
use super::gemm::{Matrix, Output, matmul_into};

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    seq: usize,
    d_model: usize,
    heads: usize,
    head_dim: usize,
}

impl Sizes {
    fn new(packed: &[usize], heads: usize) -> Self {
        let [batch, seq, three_d] = packed[..] else {
            panic!("packed projections must be [B, T, 3·D], got {packed:?}")
        };
        let d_model = three_d / 3;
        assert!(
            three_d % 3 == 0 && heads > 0 && d_model.is_multiple_of(heads),
            "packed width {three_d} is not 3·D with D divisible by {heads} heads"
        );
        Self {
            batch,
            seq,
            d_model,
            heads,
            head_dim: d_model / heads,
        }
    }

    /// Elements of one batch entry's packed rows, `T·3D`.
    fn packed_per_entry(&self) -> usize {
        self.seq * 3 * self.d_model
    }

    /// Elements of one batch entry's merged rows, `T·D`.
    fn merged_per_entry(&self) -> usize {
        self.seq * self.d_model
    }

    /// Attention weights of one batch entry, `H·T·T`.
    fn weights_per_entry(&self) -> usize {
        self.heads * self.seq * self.seq
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    /// Part `part` (0 = q, 1 = k, 2 = v) of head `head` in one entry's packed rows: `[T, Dh]`.
    fn part<'a>(&self, packed: &'a [f32], part: usize, head: usize) -> Matrix<'a> {
        let offset = part * self.d_model + head * self.head_dim;
        Matrix::strided(
            packed,
            offset,
            [self.seq, self.head_dim],
            [3 * self.d_model, 1],
        )
    }
}

/// `softmax(mask(q·kᵀ / √Dh))` of one head into `weights` (`[T, T]`, row-major).
fn head_weights(sizes: &Sizes, packed: &[f32], head: usize, weights: &mut [f32]) {
    let q = sizes.part(packed, 0, head);
    let k = sizes.part(packed, 1, head);
    matmul_into(Output::row_major(weights), q, k.t(), false);
    for (row, scores) in weights.chunks_mut(sizes.seq).enumerate() {
        causal_softmax_row(scores, row + 1, sizes.scale());
    }
}

/// Forward: the merged heads `[B, T, D]`, and with `keep_weights` the attention weights
/// `[B, H, T, T]` for the backward.
pub fn forward(
    packed: &[f32],
    shape: &[usize],
    heads: usize,
    keep_weights: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let sizes = Sizes::new(shape, heads);
    let mut merged = vec![0.0; sizes.batch * sizes.merged_per_entry()];
    let mut kept = keep_weights.then(|| vec![0.0; sizes.batch * sizes.weights_per_entry()]);
    let outputs = merged.par_chunks_mut(sizes.merged_per_entry()).enumerate();
    match kept.as_mut() {
        Some(kept) => outputs
            .zip(kept.par_chunks_mut(sizes.weights_per_entry()))
            .for_each(|((entry, out), weights)| {
                forward_entry(&sizes, packed, entry, out, Some(weights))
            }),
        None => outputs.for_each(|(entry, out)| forward_entry(&sizes, packed, entry, out, None)),
    }
    (merged, kept)
}

/// The heads of batch entry `entry`, written into its merged rows `out` (`[T, D]`). The
/// weights go into `kept` (`[H, T, T]`) when given, else into one scratch `[T, T]` reused by
/// every head.
fn forward_entry(
    sizes: &Sizes,
    packed: &[f32],
    entry: usize,
    out: &mut [f32],
    kept: Option<&mut [f32]>,
) {
    let [t, dh] = [sizes.seq, sizes.head_dim];
    let packed = &packed[entry * sizes.packed_per_entry()..][..sizes.packed_per_entry()];
    let mut scratch = Vec::new();
    let (weights, per_head) = match kept {
        Some(kept) => (kept, t * t),
        None => {
            scratch.resize(t * t, 0.0);
            (&mut scratch[..], 0)
        }
    };
    for head in 0..sizes.heads {
        let weights = &mut weights[head * per_head..][..t * t];
        head_weights(sizes, packed, head, weights);
        let v = sizes.part(packed, 2, head);
        let p = Matrix::row_major(weights, t, t);
        matmul_into(Output::strided(out, head * dh, sizes.d_model), p, v, false);
    }
}

/// Backward: the packed gradient `[B, T, 3D]` for the merged heads' gradient `d_merged`.
pub fn backward(
    packed: &[f32],
    shape: &[usize],
    heads: usize,
    kept_weights: Option<&[f32]>,
    d_merged: &[f32],
) -> Vec<f32> {
    let sizes = Sizes::new(shape, heads);
    let [t, dh, d] = [sizes.seq, sizes.head_dim, sizes.d_model];
    let mut d_packed = vec![0.0; packed.len()];
    d_packed
        .par_chunks_mut(sizes.packed_per_entry())
        .enumerate()
        .for_each(|(entry, d_packed)| {
            let packed = &packed[entry * sizes.packed_per_entry()..][..sizes.packed_per_entry()];
            let d_out = &d_merged[entry * sizes.merged_per_entry()..][..sizes.merged_per_entry()];
            let mut recomputed = Vec::new();
            let mut d_scores = vec![0.0; t * t];
            for head in 0..heads {
                let weights: &[f32] = match kept_weights {
                    Some(kept) => &kept[(entry * heads + head) * t * t..][..t * t],
                    None => {
                        recomputed.resize(t * t, 0.0);
                        head_weights(&sizes, packed, head, &mut recomputed);
                        &recomputed
                    }
                };
                let p = Matrix::row_major(weights, t, t);
                let d_o = Matrix::strided(d_out, head * dh, [t, dh], [d, 1]);
                let [q, k, v] = [0, 1, 2].map(|part| sizes.part(packed, part, head));
                // dV = Pᵀ·dO
                matmul_into(
                    Output::strided(d_packed, 2 * d + head * dh, 3 * d),
                    p.t(),
                    d_o,
                    false,
                );
                // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √Dh, row by row
                matmul_into(Output::row_major(&mut d_scores), d_o, v.t(), false);
                for (dp, p) in d_scores.chunks_mut(t).zip(weights.chunks(t)) {
                    score_gradient_row(p, dp, sizes.scale());
                }
                let d_s = Matrix::row_major(&d_scores, t, t);
                // dQ = dS·K, dK = dSᵀ·Q
                matmul_into(Output::strided(d_packed, head * dh, 3 * d), d_s, k, false);
                matmul_into(
                    Output::strided(d_packed, d + head * dh, 3 * d),
                    d_s.t(),
                    q,
                    false,
                );
            }
        });
    d_packed
}

/// Rotary position embedding of the queries and keys inside packed rows, in place: in every
/// head, feature `i` pairs with `i + Dh/2` and the pair at position `t` turns by the angle
/// whose cosine and sine are `cos[t, i]`, `sin[t, i]` (the half-split convention of
/// `model::rope`); `inverse` turns it back, which is also the backward of the rotation (a
/// rotation's transpose is its inverse).
///
/// # Shapes
/// - packed: `[B, T, 3D]`, cos and sin: `[T, Dh/2]`
pub fn rotate(packed: &mut [f32], shape: &[usize], heads: usize, tables: &Tables, inverse: bool) {
    let sizes = Sizes::new(shape, heads);
    let [t, dh, d] = [sizes.seq, sizes.head_dim, sizes.d_model];
    let half = dh / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    packed
        .par_chunks_mut(3 * d)
        .enumerate()
        .for_each(|(row, features)| {
            let position = row % t;
            let cos = &tables.cos[position * half..][..half];
            let sin = &tables.sin[position * half..][..half];
            // The queries and the keys: the first two thirds of the row.
            for head in features[..2 * d].chunks_mut(dh) {
                let (first, second) = head.split_at_mut(half);
                for (((a, b), c), s) in first.iter_mut().zip(second).zip(cos).zip(sin) {
                    let s = sign * s;
                    (*a, *b) = (*a * c - *b * s, *b * c + *a * s);
                }
            }
        });
}

/// The cosine and sine tables of a rotation, `[T, Dh/2]` each, row-major.
#[derive(Clone, Debug)]
pub struct Tables {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// What the backward needs: the packed projections (rotated, when there is a rotation), the
/// head count, the rotation and, when small enough, the weights.
#[derive(Clone, Debug)]
pub struct Saved {
    packed: FlexTensor,
    heads: usize,
    weights: Option<FlexTensor>,
    rotation: Option<Tables>,
}

/// Forward on a Flex tensor, rotating queries and keys first when `rotation` is given; `train`
/// keeps what the backward needs.
pub fn forward_flex(
    packed: FlexTensor,
    heads: usize,
    rotation: Option<Tables>,
    train: bool,
) -> (FlexTensor, Saved) {
    let shape = dims(&packed);
    let sizes = Sizes::new(&shape, heads);
    let packed = match &rotation {
        Some(tables) => {
            let mut rotated = values(&packed).into_owned();
            rotate(&mut rotated, &shape, heads, tables, false);
            tensor(rotated, &shape)
        }
        None => packed,
    };
    let keep = train && sizes.batch * sizes.weights_per_entry() <= KEEP_WEIGHTS_UP_TO;
    let (merged, weights) = forward(&values(&packed), &shape, heads, keep);
    let weights = weights.map(|w| tensor(w, &[sizes.batch, heads, sizes.seq, sizes.seq]));
    let out = tensor(merged, &[sizes.batch, sizes.seq, sizes.d_model]);
    let saved = Saved {
        packed,
        heads,
        weights,
        rotation,
    };
    (out, saved)
}

/// The backward step recorded under autodiff; the parent is the packed projections.
#[derive(Debug)]
pub struct PackedAttentionBackward;

impl Backward<Flex, 1> for PackedAttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let d_merged = grads.consume::<Flex>(&ops.node);
        let Saved {
            packed,
            heads,
            weights,
            rotation,
        } = ops.state;
        let shape = dims(&packed);
        let weights = weights.as_ref().map(values);
        let mut d_packed = backward(
            &values(&packed),
            &shape,
            heads,
            weights.as_deref(),
            &values(&d_merged),
        );
        // Gradients of the rotated q and k, turned back into those of the projections.
        if let Some(tables) = &rotation {
            rotate(&mut d_packed, &shape, heads, tables, true);
        }
        register_grads!(grads, ops.parents, [tensor(d_packed, &shape)]);
    }
}
