//! The KV cache: keys and values of every position decoded so far, per layer, so a decode step
//! projects only the new token instead of recomputing the whole prefix.
//!
//! # Layout: pre-allocated, written in place
//! Each layer owns one key and one value buffer of shape `[B, H_kv, capacity, Dh]` (`H_kv` key/value
//! heads: the model's heads, or fewer with grouped-query attention), allocated once;
//! a step writes its new rows with `slice_assign` at `len..len + T` and attention reads the
//! prefix `0..len + T`. The alternative, concatenating the new rows onto the old tensor, copies
//! the whole cache at every step; `cargo run --release --example kv_append` times both on the
//! same shapes (the README has the figures). The price is memory held up front for the whole
//! context ([`KvCache::allocated_bytes`]), which at this model size is small.
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
//! - every layer holds the same number of positions, [`KvCache::len`];
//! - a forward pass appends exactly its new tokens, never more;
//! - `len` never exceeds the capacity (the model's `max_seq_len`): the model refuses the call
//!   with [`crate::Error::CacheFull`] before anything is written (a rolling cache, once full,
//!   takes one position per call and overwrites the oldest).

use burn::tensor::{Device, Tensor};

use super::fault::Fault;
use crate::error::{Error, Result};

/// Keys and values of one attention layer.
///
/// # Shapes
/// - key, value buffers: `[B, H_kv, capacity, Dh]`, rows `0..len` valid.
#[derive(Debug, Clone)]
pub struct LayerKv {
    key: Tensor<4>,
    value: Tensor<4>,
    len: usize,
    /// Positions appended since the last reset (more than `len` once a rolling cache wraps).
    seen: usize,
}

impl LayerKv {
    fn new(shape: [usize; 4], device: &Device) -> Self {
        Self {
            key: Tensor::zeros(shape, device),
            value: Tensor::zeros(shape, device),
            len: 0,
            seen: 0,
        }
    }

    /// Append the new positions' keys and values; return all keys and values so far. A
    /// planted cache fault (see [`super::fault`]) makes the append go wrong the way it names.
    ///
    /// # Shapes
    /// - new_key, new_value: `[B, H_kv, T, Dh]`
    /// - returns keys and values `[B, H_kv, len + T, Dh]`
    ///
    /// # Errors
    /// [`Error::Shape`] when [`Fault::CacheWrongAxis`] extends the cache along the heads axis.
    ///
    /// # Panics
    /// If the new rows do not fit or their shape differs from the cache's; the model checks
    /// both before calling, so this is a bug guard, not an error path.
    pub(crate) fn append(
        &mut self,
        new_key: Tensor<4>,
        new_value: Tensor<4>,
        fault: Option<Fault>,
    ) -> Result<(Tensor<4>, Tensor<4>)> {
        let [batch, heads, capacity, head_dim] = self.key.dims();
        let [_, _, new, _] = new_key.dims();
        if fault == Some(Fault::CacheWrongAxis) {
            // Extending along axis 1 needs every other axis equal, axis 2 (positions) too.
            let cached = [batch, heads, self.len, head_dim];
            return Err(Error::Shape {
                stage: "KV cache, appending along axis 1 (heads)".into(),
                got: format!("new keys {:?} onto cached keys {cached:?}", new_key.dims()),
                expected: format!(
                    "equal sizes on every other axis, but axis 2 (positions) has {new} vs {}",
                    self.len
                ),
                cause: "concatenating along the wrong axis: keys are [B, H_kv, S, Dh], so new \
                        positions go along axis 2"
                    .into(),
            });
        }
        // Full (rolling): the one new position takes the oldest one's slot.
        let start = if self.len + new > capacity {
            assert!(
                new == 1 && self.len == capacity,
                "KV cache overflow: the model must check capacity"
            );
            self.seen % capacity
        } else {
            self.len
        };
        let rows = start..start + new;
        // Move the buffers out (leaving a cheap handle behind) so they are uniquely owned while
        // written: Burn can then update them in place instead of copying them.
        let key = std::mem::replace(&mut self.key, new_key.clone());
        let value = std::mem::replace(&mut self.value, new_value.clone());
        self.key = key.slice_assign([0..batch, 0..heads, rows.clone(), 0..head_dim], new_key);
        self.value = value.slice_assign([0..batch, 0..heads, rows, 0..head_dim], new_value);
        // A stale cache forgets to count a decode step's position: the next step overwrites it.
        let stale = fault == Some(Fault::StaleCache) && new == 1 && self.len > 0;
        if !stale {
            self.len = (self.len + new).min(capacity);
            self.seen += new;
        }
        let visible = [0..batch, 0..heads, 0..self.len, 0..head_dim];
        Ok((
            self.key.clone().slice(visible.clone()),
            self.value.clone().slice(visible),
        ))
    }

    /// The cached keys, `[B, H_kv, len, Dh]`.
    pub fn keys(&self) -> Tensor<4> {
        self.visible(&self.key)
    }

    /// The cached values, `[B, H_kv, len, Dh]`.
    pub fn values(&self) -> Tensor<4> {
        self.visible(&self.value)
    }

    fn visible(&self, buffer: &Tensor<4>) -> Tensor<4> {
        let [batch, heads, _, head_dim] = buffer.dims();
        buffer
            .clone()
            .slice([0..batch, 0..heads, 0..self.len, 0..head_dim])
    }
}

/// Per-layer keys and values for a batch of sequences being decoded.
///
/// Build one with [`super::Gpt::new_cache`] (or [`KvCache::new`]), pass it to
/// [`super::Gpt::forward_cached`], and [`KvCache::reset`] it to start over.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
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
        self.layers.first().map_or(0, |layer| layer.seen)
    }

    /// Positions cached so far (the same in every layer).
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |layer| layer.len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    /// Forget every cached position; the buffers are kept for reuse.
    pub fn reset(&mut self) {
        for layer in &mut self.layers {
            layer.len = 0;
            layer.seen = 0;
        }
    }

    /// Forget every position from `len` on, keeping the first `len` (a no-op when the cache
    /// holds fewer). Rewinding is free: later appends overwrite the forgotten slots. Used to
    /// decode again from the same prefix, e.g. to time one decode step at a fixed context.
    ///
    /// # Panics
    /// On a rolling cache that has wrapped (its oldest positions are gone).
    pub fn truncate(&mut self, len: usize) {
        assert!(
            self.position() <= self.capacity,
            "a rolling cache that has wrapped cannot be rewound"
        );
        for layer in &mut self.layers {
            layer.len = layer.len.min(len);
            layer.seen = layer.seen.min(len);
        }
    }

    /// Key/value heads per layer, `H_kv`.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Bytes held by the cached keys and values, measured from the tensors:
    /// `2 · L · B · H_kv · Dh · len · bytes_per_element`.
    pub fn memory_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|layer| {
                let element = layer.key.dtype().size();
                (layer.keys().shape().num_elements() + layer.values().shape().num_elements())
                    * element
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

    /// One layer's keys and values.
    ///
    /// # Panics
    /// If `layer >= n_layers`.
    pub fn layer(&self, layer: usize) -> &LayerKv {
        &self.layers[layer]
    }

    /// Check that `new` positions for a batch of `batch` fit, before any layer writes.
    ///
    /// # Errors
    /// [`Error::CacheFull`] past the capacity, [`Error::CacheMismatch`] for another batch size.
    pub(crate) fn check_append(&self, batch: usize, new: usize) -> Result<()> {
        if batch != self.batch {
            return Err(Error::CacheMismatch(format!(
                "the cache was built for a batch of {} sequences, the input has {batch}",
                self.batch
            )));
        }
        let rolls_on = self.rolling && new == 1 && self.len() == self.capacity;
        if self.len() + new > self.capacity && !rolls_on {
            return Err(Error::CacheFull {
                cached: self.len(),
                new,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    /// Check that the cache was built for a model of this shape.
    ///
    /// # Errors
    /// [`Error::CacheMismatch`] naming the first size that differs.
    pub(crate) fn check_model(
        &self,
        n_layers: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
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
