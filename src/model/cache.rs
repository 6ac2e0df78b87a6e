//! The KV cache: keys and values of every position decoded so far, per layer, so a decode step
//! projects only the new token instead of recomputing the whole prefix.
//!
//! # Layout: pre-allocated, written in place
//! Each layer owns one key and one value buffer of shape `[B, H_kv, capacity, Dh]` (`H_kv`
//! key/value heads: the model's heads, or fewer with grouped-query attention), allocated once;
//! a step writes its new rows with `slice_assign` at `len..len + T` and attention reads the
//! prefix `0..len + T`. The alternative, concatenating the new rows onto the old tensor, copies
//! the whole cache at every step (`cargo run --release --example kv_append` times both). The
//! price is memory held up front for the whole context ([`KvCache::allocated_bytes`]).
//!
//! # Rolling
//! A cache made [`KvCache::rolling`] keeps going once full: each new position overwrites the
//! oldest one's slot (slot `position mod capacity`), so every query sees exactly the last
//! `capacity` keys, at constant cost per token. Attention does not care in which order the
//! keys lie, so the slots need no reordering, but the keys must carry their positions
//! themselves: only rotary position embedding does that (a learned table ends at
//! `max_seq_len`). This is sliding-window attention, and equals a full forward with a band
//! mask ([`super::mask::band_mask`]).
//!
//! # Invariants
//! - the cache counts its positions once, for every layer: [`KvCache::len`] (and
//!   [`KvCache::position`], which goes on counting once a rolling cache wraps);
//! - a forward pass plans its step before any layer runs ([`KvCache::plan_step`]), every layer
//!   writes its new keys and values where that step says, and the count advances once, after
//!   the last layer ([`KvCache::advance`]);
//! - `len` never exceeds the capacity (the model's `max_seq_len`): the plan refuses a call with
//!   [`crate::Error::CacheFull`] before anything is written (a rolling cache, once full, takes
//!   one position per call and overwrites the oldest).

use std::ops::Range;

use burn::tensor::{Device, Tensor};

use super::fault::Fault;
use super::instruments::Instrumentation;
use crate::error::{Error, Result};

/// Where one forward pass's new positions go in the cache and how many keys its queries see.
/// Without a cache it describes a fresh sequence: `T` slots from 0, all of them seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheStep {
    /// The slots the new keys and values are written to.
    pub slots: Range<usize>,
    /// Keys every query attends over afterwards, `S` (the new ones included).
    pub visible: usize,
    /// Positions the cache's count advances by once every layer has written.
    pub advance: usize,
}

impl CacheStep {
    /// A sequence of `new` positions with nothing cached.
    pub fn fresh(new: usize) -> Self {
        Self {
            slots: 0..new,
            visible: new,
            advance: new,
        }
    }
}

/// Keys and values of one attention layer; the count of valid rows is the [`KvCache`]'s.
///
/// # Shapes
/// - key, value buffers: `[B, H_kv, capacity, Dh]`
#[derive(Debug, Clone)]
pub struct LayerKv {
    key: Tensor<4>,
    value: Tensor<4>,
}

impl LayerKv {
    fn new(shape: [usize; 4], device: &Device) -> Self {
        Self {
            key: Tensor::zeros(shape, device),
            value: Tensor::zeros(shape, device),
        }
    }

    /// Write the new positions' keys and values into `step.slots`; return the keys and values
    /// every query sees, `0..step.visible`. A planted [`Fault::CacheWrongAxis`] makes the append
    /// go along the heads axis, which the check refuses.
    ///
    /// # Shapes
    /// - new_key, new_value: `[B, H_kv, T, Dh]`
    /// - returns keys and values `[B, H_kv, S, Dh]`
    ///
    /// # Errors
    /// With [`Fault::CacheWrongAxis`] planted, the append's shape check.
    pub(crate) fn append<I: Instrumentation>(
        &mut self,
        new_key: Tensor<4>,
        new_value: Tensor<4>,
        step: &CacheStep,
        instruments: &I,
    ) -> Result<(Tensor<4>, Tensor<4>), I::Error> {
        let [batch, heads, _, head_dim] = self.key.dims();
        // Concatenating along axis 1 (heads) needs every other axis equal, and axis 2
        // (positions) is not: T new rows against the positions cached so far.
        let cached = step.visible - (step.slots.end - step.slots.start);
        let along_heads = instruments.fault() == Some(Fault::CacheWrongAxis);
        instruments.check(!along_heads, || Error::Shape {
            stage: "KV cache, appending along axis 1 (heads)".into(),
            got: format!(
                "new keys {:?} onto cached keys {:?}",
                new_key.dims(),
                [batch, heads, cached, head_dim]
            ),
            expected: format!(
                "equal sizes on every other axis, but axis 2 (positions) has {} vs {cached}",
                new_key.dims()[2]
            ),
            cause: "concatenating along the wrong axis: keys are [B, H_kv, S, Dh], so new \
                    positions go along axis 2"
                .into(),
        })?;
        let rows = [0..batch, 0..heads, step.slots.clone(), 0..head_dim];
        // Move the buffers out (leaving a cheap handle behind) so they are uniquely owned while
        // written: Burn can then update them in place instead of copying them.
        let key = std::mem::replace(&mut self.key, new_key.clone());
        let value = std::mem::replace(&mut self.value, new_value.clone());
        self.key = key.slice_assign(rows.clone(), new_key);
        self.value = value.slice_assign(rows, new_value);
        Ok((
            self.visible(&self.key, step.visible),
            self.visible(&self.value, step.visible),
        ))
    }

    /// The key and value buffers, `[B, H_kv, capacity, Dh]`, for a kernel that writes them in
    /// place ([`crate::kernels::decode_step`]).
    pub(crate) fn buffers_mut(&mut self) -> [&mut Tensor<4>; 2] {
        [&mut self.key, &mut self.value]
    }

    /// The first `len` rows of `buffer`.
    fn visible(&self, buffer: &Tensor<4>, len: usize) -> Tensor<4> {
        let [batch, heads, _, head_dim] = buffer.dims();
        buffer
            .clone()
            .slice([0..batch, 0..heads, 0..len, 0..head_dim])
    }
}

/// Per-layer keys and values for a batch of sequences being decoded.
///
/// Build one with [`super::Gpt::new_cache`] (or [`KvCache::new`]), pass it to
/// [`super::Gpt::forward_cached`], and [`KvCache::reset`] it to start over.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    /// Positions held (the same in every layer).
    len: usize,
    /// Positions appended since the last reset (more than `len` once a rolling cache wraps).
    position: usize,
    batch: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    rolling: bool,
}

impl KvCache {
    /// An empty cache for `n_layers` layers, `batch` sequences, `kv_heads` key/value heads of
    /// width `head_dim` (the model's heads, or its key/value heads with grouped-query
    /// attention), holding up to `capacity` positions.
    ///
    /// # Shapes
    /// - each layer: keys and values `[batch, kv_heads, capacity, head_dim]`
    pub fn new(
        n_layers: usize,
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &Device,
    ) -> Self {
        let shape = [batch, kv_heads, capacity, head_dim];
        Self {
            layers: (0..n_layers).map(|_| LayerKv::new(shape, device)).collect(),
            len: 0,
            position: 0,
            batch,
            kv_heads,
            head_dim,
            capacity,
            rolling: false,
        }
    }

    /// The same cache, rolling: once full, every new position overwrites the oldest (see the
    /// module docs). For models with rotary position embedding only; the model refuses a
    /// learned-position model's call past its table.
    pub fn rolling(mut self) -> Self {
        self.rolling = true;
        self
    }

    /// Whether the cache rolls once full.
    pub fn is_rolling(&self) -> bool {
        self.rolling
    }

    /// Absolute position of the next token: the positions appended since the last reset (equal
    /// to [`KvCache::len`] until a rolling cache wraps).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Positions cached so far (the same in every layer).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most positions the cache can hold (the model's context window).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sequences in the batch, `B`.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Number of layers, `L`.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Key/value heads per layer, `H_kv`.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Forget every cached position; the buffers are kept for reuse.
    pub fn reset(&mut self) {
        self.len = 0;
        self.position = 0;
    }

    /// Forget every position from `len` on, keeping the first `len` (a no-op when the cache
    /// holds fewer). Rewinding is free: later appends overwrite the forgotten slots. Used to
    /// decode again from the same prefix, e.g. to time one decode step at a fixed context.
    ///
    /// # Panics
    /// On a rolling cache that has wrapped (its oldest positions are gone).
    pub fn truncate(&mut self, len: usize) {
        assert!(
            self.position <= self.capacity,
            "a rolling cache that has wrapped cannot be rewound"
        );
        self.len = self.len.min(len);
        self.position = self.position.min(len);
    }

    /// Layer `layer`'s cached keys, `[B, H_kv, len, Dh]`.
    ///
    /// # Panics
    /// If `layer >= n_layers`.
    pub fn keys(&self, layer: usize) -> Tensor<4> {
        self.layers[layer].visible(&self.layers[layer].key, self.len)
    }

    /// Layer `layer`'s cached values, `[B, H_kv, len, Dh]`.
    ///
    /// # Panics
    /// If `layer >= n_layers`.
    pub fn values(&self, layer: usize) -> Tensor<4> {
        self.layers[layer].visible(&self.layers[layer].value, self.len)
    }

    /// Bytes held by the cached keys and values, measured from the tensors:
    /// `2 · L · B · H_kv · Dh · len · bytes_per_element`.
    pub fn memory_bytes(&self) -> usize {
        (0..self.layers.len())
            .map(|layer| {
                let element = self.layers[layer].key.dtype().size();
                let elements = self.keys(layer).shape().num_elements()
                    + self.values(layer).shape().num_elements();
                elements * element
            })
            .sum()
    }

    /// Bytes allocated for the buffers, which are sized for the full capacity:
    /// `2 · L · B · H_kv · Dh · capacity · bytes_per_element`.
    pub fn allocated_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|layer| {
                let element = layer.key.dtype().size();
                (layer.key.shape().num_elements() + layer.value.shape().num_elements()) * element
            })
            .sum()
    }

    /// Check that the cache was built for a model of this shape, and plan where `new` positions
    /// for a batch of `batch` go (see [`CacheStep`]). A planted [`Fault::StaleCache`] plans a
    /// decode step that the count never sees: its key is written, not counted, and not seen.
    ///
    /// # Errors
    /// [`Error::CacheMismatch`] for a cache of another model or batch size, [`Error::CacheFull`]
    /// past the capacity.
    pub(crate) fn plan_step(
        &self,
        model: [usize; 3],
        batch: usize,
        new: usize,
        fault: Option<Fault>,
    ) -> Result<CacheStep> {
        self.check_model(model)?;
        if batch != self.batch {
            return Err(Error::CacheMismatch(format!(
                "the cache was built for a batch of {} sequences, the input has {batch}",
                self.batch
            )));
        }
        let rolls_on = self.rolling && new == 1 && self.len == self.capacity;
        if self.len + new > self.capacity && !rolls_on {
            return Err(Error::CacheFull {
                cached: self.len,
                new,
                capacity: self.capacity,
            });
        }
        // Full (rolling): the one new position takes the oldest one's slot.
        let start = if rolls_on {
            self.position % self.capacity
        } else {
            self.len
        };
        let stale = fault == Some(Fault::StaleCache) && new == 1 && self.len > 0;
        Ok(CacheStep {
            slots: start..start + new,
            visible: if stale {
                self.len
            } else {
                (self.len + new).min(self.capacity)
            },
            advance: if stale { 0 } else { new },
        })
    }

    /// Count the positions `step` wrote, once every layer has written them.
    pub(crate) fn advance(&mut self, step: &CacheStep) {
        self.len = step.visible;
        self.position += step.advance;
    }

    /// Check that the cache was built for a model of `[layers, key/value heads, head width]`.
    fn check_model(&self, [n_layers, kv_heads, head_dim]: [usize; 3]) -> Result<()> {
        let expected = [
            ("layers", n_layers),
            ("key/value heads", kv_heads),
            ("head width", head_dim),
        ];
        let actual = [self.layers.len(), self.kv_heads, self.head_dim];
        for ((what, want), got) in expected.into_iter().zip(actual) {
            if want != got {
                return Err(Error::CacheMismatch(format!(
                    "the model has {want} {what}, the cache {got}; build the cache with `Gpt::new_cache`"
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn layers_mut(&mut self) -> impl Iterator<Item = &mut LayerKv> {
        self.layers.iter_mut()
    }
}
