//! The one argument every block and attention layer takes: the new positions and the state that
//! travels with them through the stack (Burn's `MhaInput` plays the same part for its layer).

use burn::tensor::{Bool, Tensor};

use super::cache::LayerKv;
use super::fault::Fault;
use super::rope::Rotation;
use super::trace::ShapeTrace;

/// Input of [`super::Block::forward`] and [`super::CausalSelfAttention::forward`].
///
/// Only `x` is required; a cache, a padding mask and a shape trace are optional and change what
/// the layer computes only as documented on each field. In particular a trace records shapes
/// and never changes which attention kernel runs.
///
/// # Shapes
/// - x: `[B, T, D]`, the `T` new positions
/// - padding: `[B, 1, T, S]`, `S` = cached + `T`
#[derive(Debug)]
pub struct LayerInput<'a> {
    /// The new positions.
    pub x: Tensor<3>,
    /// This layer's keys and values so far: the new positions' keys and values are appended
    /// and the queries attend over all of them.
    pub cache: Option<&'a mut LayerKv>,
    /// Keys to hide because they are left padding, `true` = hidden (see
    /// [`super::mask::padding_mask`]).
    pub padding: Option<Tensor<4, Bool>>,
    /// Where every stage's shape is recorded.
    pub trace: Option<&'a mut ShapeTrace>,
    /// The new positions' rotation, for a model with rotary position embedding: queries and
    /// keys are rotated by it before the scores (and the keys before they are cached).
    pub rotation: Option<Rotation>,
    /// A bug planted on purpose (see [`super::fault`]); `None` runs the correct code.
    pub fault: Option<Fault>,
}

impl<'a> LayerInput<'a> {
    /// The new positions alone: no cache, no padding, no trace.
    pub fn new(x: Tensor<3>) -> Self {
        Self {
            x,
            cache: None,
            padding: None,
            trace: None,
            rotation: None,
            fault: None,
        }
    }

    /// Append to and attend over `cache`.
    pub fn with_cache(mut self, cache: &'a mut LayerKv) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Hide the keys `padding` marks.
    pub fn with_padding(mut self, padding: Tensor<4, Bool>) -> Self {
        self.padding = Some(padding);
        self
    }

    /// Record every stage's shape into `trace`.
    pub fn with_trace(mut self, trace: &'a mut ShapeTrace) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Rotate queries and keys by `rotation` (rotary position embedding).
    pub fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = Some(rotation);
        self
    }
}

impl From<Tensor<3>> for LayerInput<'_> {
    fn from(x: Tensor<3>) -> Self {
        Self::new(x)
    }
}
