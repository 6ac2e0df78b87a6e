//! Causal self-attention from the packed projections `[B, T, D + 2·H_kv·Dh]` (queries, keys and
//! values side by side, as nanoGPT's `c_attn` produces them) straight to the merged heads
//! `[B, T, D]`, forward and backward.
//!
//! Head `h` of batch entry `b` reads its queries, keys and values as strided views of the
//! packed rows and writes its output into columns `h·Dh ..` of the merged rows, so neither
//! `split_heads` nor `merge_heads` copies anything, and the backward writes `dq`, `dk` and `dv`
//! into one packed gradient, which is what the single `x·[W_Q | W_K | W_V]` product before it
//! takes. With grouped-query attention (`H_kv < H` key/value heads, `G = H / H_kv`) query head
//! `h` reads key/value head `h / G` in place, and the backward accumulates `dk` and `dv` over
//! the group. The maths are those of [`super::attention`], per head.
//!
//! ```text
//! packed row: | q: H heads of Dh | k: H_kv heads of Dh | v: H_kv heads of Dh |
//! ```

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;

use super::attention::{KEEP_WEIGHTS_UP_TO, causal_softmax_row, score_gradient_row};
use super::flex::{dims, tensor, values};
use super::gemm::{Matrix, Output, matmul_into};

/// The three parts of a packed row.
#[derive(Clone, Copy, Debug)]
enum Part {
    Query,
    Key,
    Value,
}

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    seq: usize,
    d_model: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Sizes {
    fn new(packed: &[usize], heads: usize, kv_heads: usize) -> Self {
        let [batch, seq, width] = packed[..] else {
            panic!("packed projections must be [B, T, D + 2·H_kv·Dh], got {packed:?}")
        };
        let columns_per_dim = heads + 2 * kv_heads;
        assert!(
            kv_heads > 0 && heads.is_multiple_of(kv_heads) && width.is_multiple_of(columns_per_dim),
            "packed width {width} is not (H + 2·H_kv)·Dh for {heads} query heads sharing \
             {kv_heads} key/value heads"
        );
        let head_dim = width / columns_per_dim;
        Self {
            batch,
            seq,
            d_model: heads * head_dim,
            heads,
            kv_heads,
            head_dim,
        }
    }

    /// Columns of a packed row, `D + 2·H_kv·Dh`.
    fn width(&self) -> usize {
        self.d_model + 2 * self.kv_heads * self.head_dim
    }

    /// Query heads sharing one key/value head, `G`.
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Elements of one batch entry's packed rows.
    fn packed_per_entry(&self) -> usize {
        self.seq * self.width()
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

    /// First column of the part that query head `head` reads: its own queries, or its group's
    /// keys or values.
    fn column(&self, part: Part, head: usize) -> usize {
        let kv_head = head / self.group();
        let kv_width = self.kv_heads * self.head_dim;
        match part {
            Part::Query => head * self.head_dim,
            Part::Key => self.d_model + kv_head * self.head_dim,
            Part::Value => self.d_model + kv_width + kv_head * self.head_dim,
        }
    }

    /// What query head `head` reads of `part` in one entry's packed rows: `[T, Dh]`.
    fn part<'a>(&self, packed: &'a [f32], part: Part, head: usize) -> Matrix<'a> {
        Matrix::strided(
            packed,
            self.column(part, head),
            [self.seq, self.head_dim],
            [self.width(), 1],
        )
    }

    /// Whether `head` is the first of its group (its key/value gradients start the sums).
    fn starts_group(&self, head: usize) -> bool {
        head.is_multiple_of(self.group())
    }
}

/// `softmax(mask(q·kᵀ / √Dh))` of one head into `weights` (`[T, T]`, row-major).
fn head_weights(sizes: &Sizes, packed: &[f32], head: usize, weights: &mut [f32]) {
    let q = sizes.part(packed, Part::Query, head);
    let k = sizes.part(packed, Part::Key, head);
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
    [heads, kv_heads]: [usize; 2],
    keep_weights: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let sizes = Sizes::new(shape, heads, kv_heads);
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
        let v = sizes.part(packed, Part::Value, head);
        let p = Matrix::row_major(weights, t, t);
        matmul_into(Output::strided(out, head * dh, sizes.d_model), p, v, false);
    }
}

/// Backward: the packed gradient `[B, T, D + 2·H_kv·Dh]` for the merged heads' gradient
/// `d_merged`.
pub fn backward(
    packed: &[f32],
    shape: &[usize],
    [heads, kv_heads]: [usize; 2],
    kept_weights: Option<&[f32]>,
    d_merged: &[f32],
) -> Vec<f32> {
    let sizes = Sizes::new(shape, heads, kv_heads);
    let [t, dh, d, width] = [sizes.seq, sizes.head_dim, sizes.d_model, sizes.width()];
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
                let [q, k, v] = [Part::Query, Part::Key, Part::Value]
                    .map(|part| sizes.part(packed, part, head));
                // A shared key/value head's gradients sum over its group's query heads.
                let accumulate = !sizes.starts_group(head);
                // dV = Pᵀ·dO
                matmul_into(
                    Output::strided(d_packed, sizes.column(Part::Value, head), width),
                    p.t(),
                    d_o,
                    accumulate,
                );
                // dP = dO·Vᵀ, then dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √Dh, row by row
                matmul_into(Output::row_major(&mut d_scores), d_o, v.t(), false);
                for (dp, p) in d_scores.chunks_mut(t).zip(weights.chunks(t)) {
                    score_gradient_row(p, dp, sizes.scale());
                }
                let d_s = Matrix::row_major(&d_scores, t, t);
                // dQ = dS·K, dK = dSᵀ·Q
                matmul_into(
                    Output::strided(d_packed, sizes.column(Part::Query, head), width),
                    d_s,
                    k,
                    false,
                );
                matmul_into(
                    Output::strided(d_packed, sizes.column(Part::Key, head), width),
                    d_s.t(),
                    q,
                    accumulate,
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
/// - packed: `[B, T, D + 2·H_kv·Dh]`, cos and sin: `[T, Dh/2]`
pub fn rotate(
    packed: &mut [f32],
    shape: &[usize],
    [heads, kv_heads]: [usize; 2],
    tables: &Tables,
    inverse: bool,
) {
    let sizes = Sizes::new(shape, heads, kv_heads);
    let [t, dh] = [sizes.seq, sizes.head_dim];
    let rotated = sizes.column(Part::Value, 0);
    let half = dh / 2;
    let sign = if inverse { -1.0 } else { 1.0 };
    packed
        .par_chunks_mut(sizes.width())
        .enumerate()
        .for_each(|(row, features)| {
            let position = row % t;
            let cos = &tables.cos[position * half..][..half];
            let sin = &tables.sin[position * half..][..half];
            // The queries and the keys: the row up to the values.
            for head in features[..rotated].chunks_mut(dh) {
                rotate_head(head, cos, sin, sign);
            }
        });
}

/// One head of RoPE in place: feature `i` pairs with `i + Dh/2`, and the pair turns by the
/// angle whose cosine and sine are `cos[i]`, `sign · sin[i]` (`sign` −1 turns it back).
///
/// # Shapes
/// - head: `[Dh]`, cos and sin: `[Dh/2]`
#[inline(always)]
pub fn rotate_head(head: &mut [f32], cos: &[f32], sin: &[f32], sign: f32) {
    let (first, second) = head.split_at_mut(head.len() / 2);
    for (((a, b), c), s) in first.iter_mut().zip(second).zip(cos).zip(sin) {
        let s = sign * s;
        (*a, *b) = (*a * c - *b * s, *b * c + *a * s);
    }
}

/// The cosine and sine tables of a rotation, `[T, Dh/2]` each, row-major.
#[derive(Clone, Debug)]
pub struct Tables {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// What the backward needs: the packed projections (rotated, when there is a rotation), the
/// head counts (query, key/value), the rotation and, when small enough, the weights.
#[derive(Clone, Debug)]
pub struct Saved {
    packed: FlexTensor,
    heads: [usize; 2],
    weights: Option<FlexTensor>,
    rotation: Option<Tables>,
}

/// Forward on a Flex tensor, rotating queries and keys first when `rotation` is given; `train`
/// keeps what the backward needs.
pub fn forward_flex(
    packed: FlexTensor,
    heads: [usize; 2],
    rotation: Option<Tables>,
    train: bool,
) -> (FlexTensor, Saved) {
    let shape = dims(&packed);
    let sizes = Sizes::new(&shape, heads[0], heads[1]);
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
    let weights = weights.map(|w| tensor(w, &[sizes.batch, sizes.heads, sizes.seq, sizes.seq]));
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
