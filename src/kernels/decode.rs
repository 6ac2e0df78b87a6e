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
//! step whatever `B` is, row after row in memory order ([`product`]); the cache is read where
//! it lies, each key/value head once per group of query heads that share it.
//!
//! # Two cores
//! A step streams the weights and the cache in (3 MB and 2 MB for the bench model at context
//! 512): it is bound by memory bandwidth, which two cores double. Every stage is cut in two
//! parts, run at once on this thread and the helper of [`super::pair`] (a quarter of a
//! microsecond per hand-off). Each part owns half the key/value heads (it finishes their q, k
//! and v, rotates, caches and attends them) and half of every product's inputs: it reads a
//! contiguous half of each weight matrix's rows and writes a partial sum, and the next stage
//! adds the two (each part into its own copy of the residual stream, so neither waits to read
//! the other's). Four hand-offs per layer:
//!
//! ```text
//! A  x += proj partials; ln_1; q, k, v partials over half the inputs
//! B  q, k, v of own heads = sum of partials; RoPE; cache; attend; W_O partial over own heads
//! C  x += W_O partials; ln_2; W_fc partial over half the inputs
//! D  own half of gelu(sum of W_fc partials); W_proj partial over that half
//! ```
//!
//! The arithmetic is the readable path's ([`crate::model::attention`], the block, the MLP),
//! in another order of summation: `tests/decode_step.rs` holds the two together.

use std::marker::PhantomData;
use std::ops::Range;

use super::layer_norm::normalise_row;
use super::math::{exp_in_place, max};
use super::packed_attention::rotate_head;
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

/// What a step keeps from layer to layer, per part (see the module docs): its own copy of the
/// residual stream, its partial products, and its own heads' or half's q, k, v, attended
/// values and hidden layer (`[B, ·]`, only that part's columns).
pub struct Scratch {
    parts: [Part; 2],
    /// Per part, its partial products over its half of the inputs, full width: q, k, v,
    /// `W_O`, `W_fc`, `W_proj` (read by both parts in the stage after the one writing them).
    partial: [[Vec<f32>; 6]; 2],
    /// Whether `W_proj`'s partial products still have to be added to the stream.
    pending: bool,
}

/// One part's buffers.
struct Part {
    /// The residual stream `[B, D]` (each part adds the same sums to its own copy).
    x: Vec<f32>,
    /// The normalised rows `[B, D]`.
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attended: Vec<f32>,
    hidden: Vec<f32>,
    scores: Vec<f32>,
}

impl Scratch {
    /// A step's buffers, starting from the embeddings `x` (`[B, D]`), for key/value width
    /// `kv_width`, MLP width `hidden` and up to `keys` keys.
    pub fn new(x: Vec<f32>, d_model: usize, kv_width: usize, hidden: usize, keys: usize) -> Self {
        let rows = x.len() / d_model;
        let part = |x: Vec<f32>| Part {
            x,
            h: vec![0.0; rows * d_model],
            q: vec![0.0; rows * d_model],
            k: vec![0.0; rows * kv_width],
            v: vec![0.0; rows * kv_width],
            attended: vec![0.0; rows * d_model],
            hidden: vec![0.0; rows * hidden],
            scores: vec![0.0; keys],
        };
        let partial = || {
            [d_model, kv_width, kv_width, d_model, hidden, d_model]
                .map(|width| vec![0.0; rows * width])
        };
        Self {
            parts: [part(x.clone()), part(x)],
            partial: [partial(), partial()],
            pending: false,
        }
    }

    /// The residual stream after the last layer, `[B, D]`.
    pub fn finish(self) -> Vec<f32> {
        let [mut first, _] = self.parts;
        if self.pending {
            let [a, b] = &self.partial;
            add_sums(&mut first.x, &a[5], &b[5]);
        }
        first.x
    }
}

/// `x += a + b`.
#[inline(always)]
fn add_sums(x: &mut [f32], a: &[f32], b: &[f32]) {
    for ((x, a), b) in x.iter_mut().zip(a).zip(b) {
        *x += a + b;
    }
}

/// `out = a + b` on `columns` of each of the `rows` rows of the partial products, written
/// compact (`[B, columns.len()]`).
fn sums_of(a: &[f32], b: &[f32], rows: usize, columns: Range<usize>, out: &mut [f32]) {
    if columns.is_empty() {
        return;
    }
    let width = a.len() / rows;
    for (row, out) in out.chunks_mut(columns.len()).enumerate() {
        let at = row * width + columns.start;
        for ((o, a), b) in out.iter_mut().zip(&a[at..]).zip(&b[at..]) {
            *o = a + b;
        }
    }
}

/// A buffer both parts of a stage reach: each only the elements its part owns, or all of it
/// for reading in a stage where no part writes it.
#[derive(Clone, Copy)]
struct Split<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: the parts of a stage touch disjoint elements (each use says which), and the hand-off
// between stages orders one stage's writes before the next stage's reads.
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

    /// The whole buffer, to write.
    ///
    /// # Safety
    /// No other part uses it during the stage.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self) -> &'a mut [f32] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
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

/// The parts' own buffers, handed to the two threads of a stage.
struct Parts<'a> {
    ptr: *mut Part,
    _parts: PhantomData<&'a mut [Part; 2]>,
}

// SAFETY: each thread of a stage takes only its own part (`Parts::get`).
unsafe impl Send for Parts<'_> {}
unsafe impl Sync for Parts<'_> {}

impl Parts<'_> {
    /// Part `part`'s buffers.
    ///
    /// # Safety
    /// Only the thread running `part` calls this with `part` during a stage.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, part: usize) -> &mut Part {
        unsafe { &mut *self.ptr.add(part) }
    }
}

/// One block for the rows of the step's residual stream (in `scratch`): attention over
/// `cache` (the new key and value written into `step.slot` first), then the MLP, each added
/// to the stream; every stage in two parts on two cores (see the module docs).
pub fn layer(layer: &Layer, cache: LayerCache, step: &Step, scratch: &mut Scratch) {
    let width = layer.ln_1.gamma.len();
    let rows = scratch.parts[0].x.len() / width;
    let (group, dh) = (step.heads / step.kv_heads, step.head_dim);
    let pending = std::mem::replace(&mut scratch.pending, true);
    let parts = Parts {
        ptr: scratch.parts.as_mut_ptr(),
        _parts: PhantomData,
    };
    let [p0, p1] = &mut scratch.partial;
    let partial = [
        p0.each_mut().map(|b| Split::new(b)),
        p1.each_mut().map(|b| Split::new(b)),
    ];
    // Partial products `which` of both parts, to read; and part `p`'s, to write.
    let partials = |which: usize| partial.map(|buffers| unsafe { buffers[which].read() });
    let mine = |p: usize, which: usize| unsafe { partial[p][which].write() };
    let cache = [Split::new(cache.key), Split::new(cache.value)];
    // Part p's key/value heads, and the columns of q (its query heads) and of k and v.
    let heads = |p: usize| half(step.kv_heads, p, 1);
    let q_columns = |p: usize| heads(p).start * group * dh..heads(p).end * group * dh;
    let kv_columns = |p: usize| heads(p).start * dh..heads(p).end * dh;
    let hidden_columns = |p: usize| half(layer.fc.outputs, p, BLOCK);
    // SAFETY (every stage): each thread takes only its own part, and reads the partial
    // products of both in the stage after the one that wrote them.
    both(&|p| unsafe {
        let part = parts.get(p);
        if pending {
            let [a, b] = partials(5);
            add_sums(&mut part.x, a, b);
        }
        norm(&part.x, &layer.ln_1, &mut part.h);
        let inputs = half(width, p, 16);
        for (which, dense) in [&layer.query, &layer.key, &layer.value]
            .into_iter()
            .enumerate()
        {
            dense_rows(&part.h, 0, dense, inputs.clone(), mine(p, which), p == 0);
        }
    });
    both(&|p| unsafe {
        let part = parts.get(p);
        // This part's heads of q, k and v: the two parts' partial sums added.
        let q = &mut part.q[..rows * q_columns(p).len()];
        let k = &mut part.k[..rows * kv_columns(p).len()];
        let v = &mut part.v[..rows * kv_columns(p).len()];
        let own = [
            (&mut *q, q_columns(p)),
            (&mut *k, kv_columns(p)),
            (&mut *v, kv_columns(p)),
        ];
        for (which, (out, columns)) in own.into_iter().enumerate() {
            let [a, b] = partials(which);
            sums_of(a, b, rows, columns, out);
        }
        if let Some((cos, sin)) = step.rotation {
            rotate(q, rows, cos, sin, dh);
            rotate(k, rows, cos, sin, dh);
        }
        write_cache([&*k, &*v], cache, step, heads(p));
        let attended = &mut part.attended[..rows * q_columns(p).len()];
        attend(q, cache, step, heads(p), attended, &mut part.scores);
        dense_rows(
            attended,
            q_columns(p).start,
            &layer.output,
            q_columns(p),
            mine(p, 3),
            p == 0,
        );
    });
    both(&|p| unsafe {
        let part = parts.get(p);
        let [a, b] = partials(3);
        add_sums(&mut part.x, a, b);
        norm(&part.x, &layer.ln_2, &mut part.h);
        dense_rows(
            &part.h,
            0,
            &layer.fc,
            half(width, p, 16),
            mine(p, 4),
            p == 0,
        );
    });
    both(&|p| unsafe {
        let part = parts.get(p);
        let columns = hidden_columns(p);
        let hidden = &mut part.hidden[..rows * columns.len()];
        let [a, b] = partials(4);
        sums_of(a, b, rows, columns.clone(), hidden);
        gelu_in_place(hidden, layer.approximate_gelu);
        dense_rows(
            hidden,
            columns.start,
            &layer.proj,
            columns,
            mine(p, 5),
            p == 0,
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
                normalise_row(x, norm.gamma, norm.beta, norm.eps, y);
            }
        },
    )
}

/// Where column halves are cut: on whole cache lines (16 `f32`) of four vector registers.
const BLOCK: usize = 64;

/// A part's share of a product: `out = x·W[inputs, :] (+ b)`, the sum over `inputs` only (the
/// other part adds the rest), every column; `x` holds the input columns from `x_start` on.
///
/// # Shapes
/// - x: `[B, ·]`, out: `[B, outputs]`
fn dense_rows(
    x: &[f32],
    x_start: usize,
    layer: &Dense,
    inputs: Range<usize>,
    out: &mut [f32],
    bias: bool,
) {
    product(x, x_start, layer, inputs, 0..layer.outputs, out, bias);
}

/// `out[r, c] = b[c]? + Σ_{i ∈ inputs} x[r, i] · W[i, c]` for `c` in `columns`, `out` holding
/// just those columns (`[B, columns.len()]`) and `x` its input columns from `x_start` on.
///
/// `W` is read once, row after row in memory order (the hardware prefetcher's best case: a
/// step is bound by how fast the weights stream in), each row added into every row of `out`,
/// which stay in the L1 cache.
fn product(
    x: &[f32],
    x_start: usize,
    layer: &Dense,
    inputs: Range<usize>,
    columns: Range<usize>,
    out: &mut [f32],
    bias: bool,
) {
    let width = columns.len();
    if width == 0 {
        return;
    }
    let rows = out.len() / width;
    let x_width = x.len() / rows;
    let bias = layer.bias.filter(|_| bias);
    vectorised(
        #[inline(always)]
        || {
            for out in out.chunks_mut(width) {
                match bias {
                    Some(bias) => out.copy_from_slice(&bias[columns.clone()]),
                    None => out.fill(0.0),
                }
            }
            for i in inputs.clone() {
                let w = &layer.weight[i * layer.outputs + columns.start..][..width];
                for (row, out) in out.chunks_mut(width).enumerate() {
                    let xi = x[row * x_width + i - x_start];
                    for (o, w) in out.iter_mut().zip(w) {
                        *o += xi * w;
                    }
                }
            }
        },
    )
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

/// The head's product `x·W`, the vocabulary (columns) in two parts.
///
/// # Shapes
/// - x: `[B, D]`, out: `[B, V]`
pub fn dense_head(x: &[f32], layer: &Dense, out: &mut [f32]) {
    let rows = x.len() / layer.inputs();
    let halves = [0, 1].map(|part| half(layer.outputs, part, BLOCK));
    let mut own = halves
        .clone()
        .map(|columns| vec![0.0f32; rows * columns.len()]);
    let buffers = own.each_mut().map(|b| Split::new(b));
    both(&|part| {
        // SAFETY: each part writes only its own buffer.
        let out = unsafe { buffers[part].write() };
        product(
            x,
            0,
            layer,
            0..layer.inputs(),
            halves[part].clone(),
            out,
            true,
        );
    });
    for (row, out) in out.chunks_mut(layer.outputs).enumerate() {
        for (columns, own) in halves.iter().zip(&own) {
            let n = columns.len();
            out[columns.clone()].copy_from_slice(&own[row * n..(row + 1) * n]);
        }
    }
}

/// RoPE on every head of every row: pairs `(i, i + Dh/2)` turned by the row's angles.
///
/// # Shapes
/// - x: `[B, heads·Dh]`, cos and sin: `[1 or B, Dh/2]`
fn rotate(x: &mut [f32], rows: usize, cos: &[f32], sin: &[f32], head_dim: usize) {
    if x.is_empty() {
        return;
    }
    let half = head_dim / 2;
    let per_row_tables = cos.len() > half;
    for (row, x) in x.chunks_mut(x.len() / rows).enumerate() {
        let table = if per_row_tables { row * half } else { 0 };
        let (cos, sin) = (&cos[table..table + half], &sin[table..table + half]);
        for head in x.chunks_mut(head_dim) {
            rotate_head(head, cos, sin, 1.0);
        }
    }
}

/// A part's new keys and values (`[B, heads.len()·Dh]`, key/value heads `heads`) into slot
/// `step.slot` of each row's cache.
///
/// # Safety
/// The caller's part alone uses these heads of the cache during the stage.
unsafe fn write_cache(new: [&[f32]; 2], cache: [Split; 2], step: &Step, heads: Range<usize>) {
    let Step {
        kv_heads,
        head_dim,
        capacity,
        slot,
        ..
    } = *step;
    for (new, cache) in new.into_iter().zip(cache) {
        for (index, new) in new.chunks_exact(head_dim).enumerate() {
            let (row, head) = (index / heads.len(), heads.start + index % heads.len());
            let to = ((row * kv_heads + head) * capacity + slot) * head_dim;
            // SAFETY: the caller's heads.
            unsafe { cache.part_mut(to..to + head_dim) }.copy_from_slice(new);
        }
    }
}

/// The query heads of key/value heads `heads` (a part's: `q` and `out` hold only theirs,
/// `[B, heads.len()·G·Dh]`), each row's against its visible keys: `softmax(K·q / √Dh)·V`
/// per head. One query sees every key up to itself, so no mask beyond the row's padding.
///
/// # Safety
/// The caller's part alone writes these heads of the cache during the stage, and `scores`
/// holds at least `step.visible` numbers.
unsafe fn attend(
    q: &[f32],
    cache: [Split; 2],
    step: &Step,
    heads: Range<usize>,
    out: &mut [f32],
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
    let row_width = heads.len() * groups * head_dim;
    if row_width == 0 {
        return;
    }
    let [keys, values] = cache;
    vectorised(
        #[inline(always)]
        || {
            for (row, ((q, out), &first)) in q
                .chunks(row_width)
                .zip(out.chunks_mut(row_width))
                .zip(first_visible)
                .enumerate()
            {
                // A padded row sees its real keys; its own key always (as the mask says).
                let first = first.min(visible - 1);
                let seen = visible - first;
                let scores = &mut scores[..seen];
                let heads_here = q
                    .chunks(groups * head_dim)
                    .zip(out.chunks_mut(groups * head_dim));
                for (kv, (q, out)) in heads.clone().zip(heads_here) {
                    let base = ((row * kv_heads + kv) * capacity + first) * head_dim;
                    // SAFETY: this part's key/value head, read only.
                    let (keys, values) = unsafe {
                        (
                            keys.part(base..base + seen * head_dim),
                            values.part(base..base + seen * head_dim),
                        )
                    };
                    for (q, out) in q.chunks(head_dim).zip(out.chunks_mut(head_dim)) {
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

/// `Σ a·b` in 16 lanes summed as a tree at the end: one key's score. ([`super::math::dot`]
/// sums its lanes one after the other, a chain of dependent additions that costs more than the
/// products for a row as short as a head.)
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

/// `gelu(u)` in place, the tanh form when `approximate`.
fn gelu_in_place(u: &mut [f32], approximate: bool) {
    vectorised(
        #[inline(always)]
        || {
            for z in u.iter_mut() {
                *z = super::gelu::gelu(*z, approximate);
            }
        },
    )
}
