//! One decode step of the whole network on host buffers: `B` rows of one new token each.
//!
//! Run op by op, a decode step is about twenty tensor operations per layer, each with its own
//! dispatch and its own allocation, on vectors of a few hundred numbers: most of its time goes
//! to that overhead, not to arithmetic. Here a layer is seven loops over plain `f32` slices:
//!
//! | stage                                   | reads                        | writes           |
//! |-----------------------------------------|------------------------------|------------------|
//! | layer norm (`ln_1`)                     | `x [B, D]`                   | `h [B, D]`       |
//! | `h·[W_Q W_K W_V] + b`, RoPE on q and k  | `W_Q, W_K, W_V`              | `q, k, v`        |
//! | the new key and value into the cache    |                              | cache slot       |
//! | one query per head against its cache    | cache `[H_kv, S, Dh]` per row | `a [B, D]`      |
//! | `x += a·W_O + b`                        | `W_O`                        | `x`              |
//! | layer norm (`ln_2`), `gelu(h·W_fc + b)` | `W_fc`                       | `u [B, 4D]`      |
//! | `x += u·W_proj + b`                     | `W_proj`                     | `x`              |
//!
//! and the head runs once, on the last (only) position. Each weight matrix is read once per
//! step whatever `B` is: the products walk it in blocks of columns and reuse each block for
//! every row ([`dense_columns`]). The cache is read where it lies, each key/value head once per group
//! of query heads that share it.
//!
//! # Two cores
//! Every stage is cut in two parts that write disjoint memory, run at once on this thread and
//! the helper of [`super::pair`]: the attention stage by key/value heads (each part projects,
//! rotates, caches and attends its own heads), the products by columns (each part reads its
//! half of the weights, so the two cores' caches each hold half the model). Each part
//! normalises the whole row for itself (a few hundred numbers) rather than wait for the other.
//! Four hand-offs per layer:
//!
//! ```text
//! [ln_1, q k v, RoPE, cache, attend] by heads | [x += a·W_O] by columns |
//! [ln_2, gelu(h·W_fc)] by columns             | [x += u·W_proj] by columns
//! ```
//!
//! The arithmetic is the readable path's ([`crate::model::attention`], the block, the MLP),
//! in another order of summation: `tests/decode_step.rs` holds the two together.

use std::marker::PhantomData;
use std::ops::Range;

use super::math::{dot, exp_in_place, max, sum};
use super::pair::both;
use super::simd::vectorised;

/// A linear layer `x·W + b`, `W` stored `[inputs, outputs]` row-major (as Burn keeps it).
pub struct Dense<'a> {
    /// `W`, `[inputs, outputs]`.
    pub weight: &'a [f32],
    /// `b`, `[outputs]`.
    pub bias: Option<&'a [f32]>,
    /// Output width.
    pub outputs: usize,
}

impl Dense<'_> {
    fn inputs(&self) -> usize {
        self.weight.len() / self.outputs
    }
}

/// A layer norm's gain, shift and ε.
pub struct Norm<'a> {
    /// `γ`, `[D]`.
    pub gamma: &'a [f32],
    /// `β`, `[D]`.
    pub beta: &'a [f32],
    /// ε.
    pub eps: f32,
}

/// One block's weights.
pub struct Layer<'a> {
    /// Layer norm before attention.
    pub ln_1: Norm<'a>,
    /// `W_Q`, `[D, D]`.
    pub query: Dense<'a>,
    /// `W_K`, `[D, H_kv·Dh]`.
    pub key: Dense<'a>,
    /// `W_V`, `[D, H_kv·Dh]`.
    pub value: Dense<'a>,
    /// `W_O`, `[D, D]`.
    pub output: Dense<'a>,
    /// Layer norm before the MLP.
    pub ln_2: Norm<'a>,
    /// `W_fc`, `[D, 4D]`.
    pub fc: Dense<'a>,
    /// `W_proj`, `[4D, D]`.
    pub proj: Dense<'a>,
    /// GELU's tanh form (GPT-2's `gelu_new`) rather than the exact one.
    pub approximate_gelu: bool,
}

/// One layer's key and value buffers, `[B, H_kv, capacity, Dh]` each, written in place.
pub struct LayerCache<'a> {
    /// Keys.
    pub key: &'a mut [f32],
    /// Values.
    pub value: &'a mut [f32],
}

/// What the step's rows are: their heads, where their new key goes, which keys they see.
pub struct Step<'a> {
    /// Query heads, `H`.
    pub heads: usize,
    /// Key/value heads, `H_kv` (dividing `H`).
    pub kv_heads: usize,
    /// `Dh`.
    pub head_dim: usize,
    /// Positions each row's cache can hold.
    pub capacity: usize,
    /// The cache slot the new key and value go to.
    pub slot: usize,
    /// Keys seen after the write: slots `0..visible`.
    pub visible: usize,
    /// Per row, the first slot it sees (its left padding: the slots before are hidden).
    pub first_visible: &'a [usize],
    /// RoPE's cosines and sines of the new position, `[1 or B, Dh/2]` each.
    pub rotation: Option<(&'a [f32], &'a [f32])>,
}

/// Buffers a step reuses from layer to layer: shared by both parts (each writes its own
/// columns) or one per part.
pub struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
    /// Per part: the normalised rows and one head's scores.
    h: [Vec<f32>; 2],
    scores: [Vec<f32>; 2],
}

impl Scratch {
    /// Buffers for `rows` rows of width `d_model`, key/value width `kv_width`, MLP width
    /// `hidden`, up to `keys` keys.
    pub fn new(rows: usize, d_model: usize, kv_width: usize, hidden: usize, keys: usize) -> Self {
        Self {
            q: vec![0.0; rows * d_model],
            k: vec![0.0; rows * kv_width],
            v: vec![0.0; rows * kv_width],
            attended: vec![0.0; rows * d_model],
            hidden: vec![0.0; rows * hidden],
            h: [vec![0.0; rows * d_model], vec![0.0; rows * d_model]],
            scores: [vec![0.0; keys], vec![0.0; keys]],
        }
    }
}

/// A buffer both parts of a stage use at once, each only the elements its part owns (or all of
/// it for reading, in a stage where no part writes it).
#[derive(Clone, Copy)]
struct Split<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: the parts of a stage touch disjoint elements (each function below says which), and
// the hand-off between stages orders one stage's writes before the next stage's reads.
unsafe impl Send for Split<'_> {}
unsafe impl Sync for Split<'_> {}

impl<'a> Split<'a> {
    fn new(buffer: &'a mut [f32]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// The whole buffer, to read.
    ///
    /// # Safety
    /// No part writes it during the stage.
    unsafe fn read(&self) -> &'a [f32] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Elements `range`, to read.
    ///
    /// # Safety
    /// No other part writes them during the stage.
    unsafe fn part(&self, range: Range<usize>) -> &'a [f32] {
        assert!(range.start <= range.end && range.end <= self.len);
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// Elements `range`, to write.
    ///
    /// # Safety
    /// The caller's part alone uses them during the stage.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part_mut(&self, range: Range<usize>) -> &'a mut [f32] {
        assert!(range.start <= range.end && range.end <= self.len);
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Part `part` of two of `0..n`, its ends on multiples of `align` where there are enough.
fn half(n: usize, part: usize, align: usize) -> Range<usize> {
    let middle = (n / 2).div_ceil(align) * align;
    let middle = if middle >= n { n / 2 } else { middle };
    match part {
        0 => 0..middle,
        _ => middle..n,
    }
}

/// One block for the rows of `x` (`[B, D]`, updated in place): attention over `cache` (the new
/// key and value written into `step.slot` first), then the MLP, each added to `x`; each stage
/// in two parts on two cores (see the module docs).
pub fn layer(x: &mut [f32], layer: &Layer, cache: LayerCache, step: &Step, scratch: &mut Scratch) {
    let width = layer.ln_1.gamma.len();
    let rows = x.len() / width;
    let kv_width = step.kv_heads * step.head_dim;
    let Scratch {
        q,
        k,
        v,
        attended,
        hidden,
        h,
        scores,
    } = scratch;
    let [h0, h1] = h;
    let [s0, s1] = scores;
    let (h, scores) = (
        [Split::new(h0), Split::new(h1)],
        [Split::new(s0), Split::new(s1)],
    );
    let x = Split::new(x);
    let q = Split::new(&mut q[..rows * width]);
    let k = Split::new(&mut k[..rows * kv_width]);
    let v = Split::new(&mut v[..rows * kv_width]);
    let attended = Split::new(&mut attended[..rows * width]);
    let hidden = Split::new(&mut hidden[..rows * layer.fc.outputs]);
    let keys = Split::new(cache.key);
    let values = Split::new(cache.value);
    // SAFETY (every stage): part `p` writes only its own heads' columns of q, k, v, the cache
    // and `attended`, or its own columns of `x` and `hidden`, and its own `h` and `scores`; a
    // buffer read whole in a stage is written by neither part in it.
    both(&|part| unsafe {
        let h = h[part].part_mut(0..rows * width);
        norm(x.read(), &layer.ln_1, h);
        let heads = half(step.kv_heads, part, 1);
        let (group, dh) = (step.heads / step.kv_heads, step.head_dim);
        let q_columns = heads.start * group * dh..heads.end * group * dh;
        let kv_columns = heads.start * dh..heads.end * dh;
        dense_columns(h, &layer.query, q, false, q_columns.clone());
        dense_columns(h, &layer.key, k, false, kv_columns.clone());
        dense_columns(h, &layer.value, v, false, kv_columns.clone());
        if let Some((cos, sin)) = step.rotation {
            rotate(q, rows, q_columns, cos, sin, dh);
            rotate(k, rows, kv_columns, cos, sin, dh);
        }
        write_cache([k, v], [keys, values], step, heads.clone());
        let scores = scores[part].part_mut(0..step.visible);
        attend(q, [keys, values], step, heads, attended, scores);
    });
    both(&|part| unsafe {
        dense_columns(
            attended.read(),
            &layer.output,
            x,
            true,
            half(width, part, BLOCK),
        );
    });
    both(&|part| unsafe {
        let h = h[part].part_mut(0..rows * width);
        norm(x.read(), &layer.ln_2, h);
        let columns = half(layer.fc.outputs, part, BLOCK);
        dense_columns(h, &layer.fc, hidden, false, columns.clone());
        gelu_columns(hidden, rows, columns, layer.approximate_gelu);
    });
    both(&|part| unsafe {
        dense_columns(
            hidden.read(),
            &layer.proj,
            x,
            true,
            half(width, part, BLOCK),
        );
    });
}

/// Layer norm of every row of `x` into `out`.
///
/// # Shapes
/// - x: `[B, D]`, out: `[B, D]` (or longer; the first `B·D` are written)
pub fn norm(x: &[f32], norm: &Norm, out: &mut [f32]) {
    let width = norm.gamma.len();
    vectorised(
        #[inline(always)]
        || {
            for (y, x) in out.chunks_mut(width).zip(x.chunks(width)) {
                let mean = sum(x) / width as f32;
                for (y, x) in y.iter_mut().zip(x) {
                    *y = x - mean;
                }
                let var = dot(y, y) / width as f32;
                let r = 1.0 / (var + norm.eps).sqrt();
                for ((y, g), b) in y.iter_mut().zip(norm.gamma).zip(norm.beta) {
                    *y = *y * r * g + b;
                }
            }
        },
    )
}

/// Columns of `W` per block of a product: four AVX-512 registers of accumulators per row.
const BLOCK: usize = 64;

/// `out = x·W + b`, or `out += x·W + b` when `accumulate` (a residual added in the same pass),
/// for the output `columns` only: the product reads only those columns of `W`.
///
/// `W` is walked in blocks of [`BLOCK`] columns; each block's accumulators stay in registers
/// while the block is read down all `inputs` rows, for up to four rows of `x` at once, so `W`
/// is read once per four rows (once per step at `B ≤ 4`).
///
/// # Safety
/// The caller's part alone uses `columns` of every row of `out` during the stage.
///
/// # Shapes
/// - x: `[B, inputs]`, out: `[B, outputs]`
unsafe fn dense_columns(
    x: &[f32],
    layer: &Dense,
    out: Split,
    accumulate: bool,
    columns: Range<usize>,
) {
    let (inputs, outputs) = (layer.inputs(), layer.outputs);
    let rows = x.len() / inputs;
    let full = columns.start + (columns.len() - columns.len() % BLOCK);
    vectorised(
        #[inline(always)]
        || {
            let mut row = 0;
            while row < rows {
                let take = match rows - row {
                    1 => 1,
                    2 | 3 => 2,
                    _ => 4,
                };
                let x = &x[row * inputs..(row + take) * inputs];
                // SAFETY: these rows' `columns` are the caller's (see above).
                let out_row = |r: usize, range: Range<usize>| unsafe {
                    out.part_mut((row + r) * outputs + range.start..(row + r) * outputs + range.end)
                };
                for column in (columns.start..full).step_by(BLOCK) {
                    match take {
                        1 => block::<1>(x, layer, &out_row, column, accumulate),
                        2 => block::<2>(x, layer, &out_row, column, accumulate),
                        _ => block::<4>(x, layer, &out_row, column, accumulate),
                    }
                }
                if full < columns.end {
                    remainder(x, layer, &out_row, full..columns.end, accumulate);
                }
                row += take;
            }
        },
    )
}

/// Columns `column..column + BLOCK` of `R` rows; `out(r, columns)` is row `r`'s output there.
#[inline(always)]
fn block<'o, const R: usize>(
    x: &[f32],
    layer: &Dense,
    out: &impl Fn(usize, Range<usize>) -> &'o mut [f32],
    column: usize,
    add: bool,
) {
    let (inputs, outputs) = (layer.inputs(), layer.outputs);
    let mut acc = [[0.0f32; BLOCK]; R];
    for (r, acc) in acc.iter_mut().enumerate() {
        let out = out(r, column..column + BLOCK);
        let bias = layer.bias.map(|b| &b[column..column + BLOCK]);
        for (c, a) in acc.iter_mut().enumerate() {
            *a = bias.map_or(0.0, |b| b[c]) + if add { out[c] } else { 0.0 };
        }
    }
    for i in 0..inputs {
        let w: &[f32; BLOCK] = layer.weight[i * outputs + column..][..BLOCK]
            .try_into()
            .expect("a block of BLOCK columns");
        for (r, acc) in acc.iter_mut().enumerate() {
            let xi = x[r * inputs + i];
            for (a, w) in acc.iter_mut().zip(w) {
                *a += xi * w;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        out(r, column..column + BLOCK).copy_from_slice(acc);
    }
}

/// Columns `columns` (fewer than a block) of every row of `x`, one row at a time.
#[inline(always)]
fn remainder<'o>(
    x: &[f32],
    layer: &Dense,
    out: &impl Fn(usize, Range<usize>) -> &'o mut [f32],
    columns: Range<usize>,
    add: bool,
) {
    let (inputs, outputs) = (layer.inputs(), layer.outputs);
    for (r, x) in x.chunks(inputs).enumerate() {
        let out = out(r, columns.clone());
        for (o, c) in out.iter_mut().zip(columns.clone()) {
            let base = if add { *o } else { 0.0 };
            *o = base + layer.bias.map_or(0.0, |b| b[c]);
        }
        for (i, xi) in x.iter().enumerate() {
            let w = &layer.weight[i * outputs + columns.start..i * outputs + columns.end];
            for (o, w) in out.iter_mut().zip(w) {
                *o += xi * w;
            }
        }
    }
}

/// Logits against a tied head: `out[b, t] = x_b · E_t` with the embedding `E` `[V, D]`, the
/// vocabulary in two parts.
///
/// # Shapes
/// - x: `[B, D]`, embedding: `[V, D]`, out: `[B, V]`
pub fn tied_head(x: &[f32], embedding: &[f32], width: usize, out: &mut [f32]) {
    let vocab = embedding.len() / width;
    let out = Split::new(out);
    both(&|part| {
        let tokens = half(vocab, part, 16);
        vectorised(
            #[inline(always)]
            || {
                for (row, x) in x.chunks(width).enumerate() {
                    // SAFETY: this part's tokens of each row are its own.
                    let out = unsafe {
                        out.part_mut(row * vocab + tokens.start..row * vocab + tokens.end)
                    };
                    let rows = embedding[tokens.start * width..tokens.end * width].chunks(width);
                    for (o, e) in out.iter_mut().zip(rows) {
                        *o = dot_tree(x, e);
                    }
                }
            },
        )
    });
}

/// The head's product in two parts by columns (the vocabulary).
///
/// # Shapes
/// - x: `[B, D]`, out: `[B, V]`
pub fn dense_head(x: &[f32], layer: &Dense, out: &mut [f32]) {
    let out = Split::new(out);
    both(&|part| {
        // SAFETY: each part writes its own columns.
        unsafe { dense_columns(x, layer, out, false, half(layer.outputs, part, BLOCK)) }
    });
}

/// RoPE on the heads in `columns` of every row: pairs `(i, i + Dh/2)` turned by the row's
/// angles.
///
/// # Shapes
/// - x: `[B, heads·Dh]`, cos and sin: `[1 or B, Dh/2]`
///
/// # Safety
/// The caller's part alone uses `columns` of `x` during the stage.
unsafe fn rotate(
    x: Split,
    rows: usize,
    columns: Range<usize>,
    cos: &[f32],
    sin: &[f32],
    head_dim: usize,
) {
    let half = head_dim / 2;
    let per_row_tables = cos.len() > half;
    let row_width = x.len / rows;
    for row in 0..rows {
        let table = if per_row_tables { row * half } else { 0 };
        let (cos, sin) = (&cos[table..table + half], &sin[table..table + half]);
        let start = row * row_width;
        // SAFETY: the caller's columns.
        let heads = unsafe { x.part_mut(start + columns.start..start + columns.end) };
        for head in heads.chunks_mut(head_dim) {
            let (first, second) = head.split_at_mut(half);
            for (((a, b), c), s) in first.iter_mut().zip(second).zip(cos).zip(sin) {
                let (x1, x2) = (*a, *b);
                *a = x1 * c - x2 * s;
                *b = x2 * c + x1 * s;
            }
        }
    }
}

/// The new keys and values (`[B, H_kv·Dh]`) of key/value heads `heads` into slot `step.slot`
/// of each row's cache.
///
/// # Safety
/// The caller's part alone uses these heads of `new` and of the cache during the stage.
unsafe fn write_cache(new: [Split; 2], cache: [Split; 2], step: &Step, heads: Range<usize>) {
    let Step {
        kv_heads,
        head_dim,
        capacity,
        slot,
        ..
    } = *step;
    let rows = new[0].len / (kv_heads * head_dim);
    for (new, cache) in new.into_iter().zip(cache) {
        for row in 0..rows {
            for head in heads.clone() {
                let from = (row * kv_heads + head) * head_dim;
                let to = ((row * kv_heads + head) * capacity + slot) * head_dim;
                // SAFETY: the caller's heads.
                unsafe {
                    cache
                        .part_mut(to..to + head_dim)
                        .copy_from_slice(new.part(from..from + head_dim));
                }
            }
        }
    }
}

/// The query heads of key/value heads `heads`, each row's against its visible keys:
/// `softmax(K·q / √Dh)·V` per head, into the merged-heads layout `[B, H·Dh]`. One query sees
/// every key up to itself, so no mask beyond the row's padding.
///
/// # Safety
/// The caller's part alone writes these heads of `out` and the cache during the stage, and
/// `scores` holds at least `step.visible` numbers.
unsafe fn attend(
    q: Split,
    cache: [Split; 2],
    step: &Step,
    heads: Range<usize>,
    out: Split,
    scores: &mut [f32],
) {
    let Step {
        heads: query_heads,
        kv_heads,
        head_dim,
        capacity,
        visible,
        first_visible,
        ..
    } = *step;
    let groups = query_heads / kv_heads;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let row_width = query_heads * head_dim;
    let [keys, values] = cache;
    vectorised(
        #[inline(always)]
        || {
            for (row, &first) in first_visible.iter().enumerate() {
                // A padded row sees its real keys; its own key always (as the mask says).
                let first = first.min(visible - 1);
                let seen = visible - first;
                let scores = &mut scores[..seen];
                for kv in heads.clone() {
                    let base = ((row * kv_heads + kv) * capacity + first) * head_dim;
                    // SAFETY: this part's key/value head, read only.
                    let (keys, values) = unsafe {
                        (
                            keys.part(base..base + seen * head_dim),
                            values.part(base..base + seen * head_dim),
                        )
                    };
                    for head in kv * groups..(kv + 1) * groups {
                        let at = row * row_width + head * head_dim;
                        // SAFETY: this part's query heads.
                        let (q, out) =
                            unsafe { (q.part(at..at + head_dim), out.part_mut(at..at + head_dim)) };
                        key_scores(q, keys, scores);
                        let top = max(scores) * scale;
                        let total = exp_in_place(scores, scale, top);
                        weighted_sum(scores, values, 1.0 / total, out);
                    }
                }
            }
        },
    )
}

/// `scores[s] = q · keys[s]` for every key (row) of `keys`.
///
/// # Shapes
/// - q: `[Dh]`, keys: `[S, Dh]`, scores: `[S]`
#[inline(always)]
fn key_scores(q: &[f32], keys: &[f32], scores: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if q.len().is_multiple_of(16)
        && q.len() <= 128
        && std::arch::is_x86_feature_detected!("avx512f")
    {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { key_scores_avx512(q, keys, scores) };
    }
    for (score, key) in scores.iter_mut().zip(keys.chunks_exact(q.len())) {
        *score = dot_tree(q, key);
    }
}

/// [`key_scores`] with the query held in registers and each key's 16 partial sums reduced by
/// the CPU's own horizontal add, for heads of a multiple of 16 up to 128 wide.
///
/// # Safety
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn key_scores_avx512(q: &[f32], keys: &[f32], scores: &mut [f32]) {
    use std::arch::x86_64::{
        __m512, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_reduce_add_ps, _mm512_setzero_ps,
    };
    let head_dim = q.len();
    let lanes = head_dim / 16;
    let mut query = [_mm512_setzero_ps(); 8];
    for (c, lane) in query.iter_mut().take(lanes).enumerate() {
        // SAFETY: `16·c + 16 ≤ head_dim`.
        *lane = unsafe { _mm512_loadu_ps(q.as_ptr().add(16 * c)) };
    }
    for (score, key) in scores.iter_mut().zip(keys.chunks_exact(head_dim)) {
        let mut acc: __m512 = _mm512_setzero_ps();
        for (c, lane) in query.iter().take(lanes).enumerate() {
            // SAFETY: as above, within one key's row.
            acc = _mm512_fmadd_ps(
                unsafe { _mm512_loadu_ps(key.as_ptr().add(16 * c)) },
                *lane,
                acc,
            );
        }
        *score = _mm512_reduce_add_ps(acc);
    }
}

/// `Σ a·b` in 16 lanes summed as a tree at the end: one key's score. (The crate's
/// [`dot`] sums its lanes one after the other, a chain of dependent additions that costs more
/// than the products for a row as short as a head.)
#[inline(always)]
fn dot_tree(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let (a_chunks, b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for ((lane, a), b) in lanes.iter_mut().zip(a).zip(b) {
            *lane += a * b;
        }
    }
    let mut width = 8;
    while width > 0 {
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
        width /= 2;
    }
    lanes[0] + tail
}

/// `out = scale · Σ_s p_s·V_s`, four keys per pass over `out` (one chain of additions per
/// four keys rather than per key).
///
/// # Shapes
/// - weights: `[S]`, values: `[S, Dh]`, out: `[Dh]`
#[inline(always)]
fn weighted_sum(weights: &[f32], values: &[f32], scale: f32, out: &mut [f32]) {
    let head_dim = out.len();
    out.fill(0.0);
    let quads = weights.len() / 4;
    for (p, v) in weights
        .chunks_exact(4)
        .zip(values.chunks_exact(4 * head_dim))
    {
        let (v0, rest) = v.split_at(head_dim);
        let (v1, rest) = rest.split_at(head_dim);
        let (v2, v3) = rest.split_at(head_dim);
        for ((((o, a), b), c), d) in out.iter_mut().zip(v0).zip(v1).zip(v2).zip(v3) {
            *o += (p[0] * a + p[1] * b) + (p[2] * c + p[3] * d);
        }
    }
    for (p, v) in weights[quads * 4..]
        .iter()
        .zip(values[quads * 4 * head_dim..].chunks_exact(head_dim))
    {
        for (o, v) in out.iter_mut().zip(v) {
            *o += p * v;
        }
    }
    for o in out.iter_mut() {
        *o *= scale;
    }
}

/// `gelu(u)` in place on `columns` of every row, the tanh form when `approximate`.
///
/// # Safety
/// The caller's part alone uses these columns during the stage.
unsafe fn gelu_columns(u: Split, rows: usize, columns: Range<usize>, approximate: bool) {
    let width = u.len / rows;
    vectorised(
        #[inline(always)]
        || {
            for row in 0..rows {
                let start = row * width;
                // SAFETY: the caller's columns.
                let u = unsafe { u.part_mut(start + columns.start..start + columns.end) };
                for z in u.iter_mut() {
                    *z = super::gelu::gelu(*z, approximate);
                }
            }
        },
    )
}
