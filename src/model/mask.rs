//! Which keys each query may see: the causal mask, and the leaky variants kept on purpose so
//! the failure they cause can be shown and measured.
//!
//! # One rule for every call
//! Attention is computed for `q_len` new queries against `k_len` keys, where the keys are the
//! `k_len - q_len` cached positions followed by the new ones. New query `i` therefore sits at
//! absolute position `p = k_len - q_len + i` ("aligned bottom-right") and, under the causal
//! rule, sees keys `0..=p`. Training (`q_len == k_len`), prefill, chunked prefill and one-token
//! decode (`q_len == 1`) are all this one rule.
//!
//! For `q_len = k_len = 4` (`x` = blocked, `.` = visible):
//!
//! ```text
//!            key 0  1  2  3
//! query 0        .  x  x  x
//! query 1        .  .  x  x
//! query 2        .  .  .  x
//! query 3        .  .  .  .
//! ```
//!
//! # Why before the softmax, and why `-inf`
//! The mask is written into the logits as `-inf`, so `exp(-inf) = 0` removes the blocked keys
//! from both the numerator and the softmax's denominator: each row still sums to one over the
//! keys it may see, and a blocked key gets probability exactly `0.0`. A finite fill such as
//! `-1e4` leaves a tiny weight the model can learn to exploit; zeroing weights *after* the
//! softmax ([`MaskMode::AfterSoftmax`]) leaves the future in the denominator, which leaks.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};
use serde::{Deserialize, Serialize};

/// How attention logits are masked. Only [`MaskMode::Causal`] is correct for a language model;
/// the others leak information from the future and exist to demonstrate that failure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaskMode {
    /// Query at position `p` sees keys `0..=p`. The correct mask.
    #[default]
    Causal,
    /// No mask at all: every query sees every key, the future included. (Named `none` before
    /// 0.2; checkpoints that say so still load.)
    #[serde(alias = "none")]
    Unmasked,
    /// The triangle the wrong way round: query at `p` sees keys `p..` (itself and the future).
    Flipped,
    /// Off by one: query at `p` sees keys `0..=p + 1`, one token of the future.
    OffByOne,
    /// Softmax over all keys, then future weights set to zero without renormalising: the future
    /// still shapes every weight through the softmax's denominator.
    AfterSoftmax,
}

impl MaskMode {
    /// Every mode, the correct one first.
    pub const ALL: [MaskMode; 5] = [
        MaskMode::Causal,
        MaskMode::Unmasked,
        MaskMode::Flipped,
        MaskMode::OffByOne,
        MaskMode::AfterSoftmax,
    ];

    /// The leaky modes.
    pub const LEAKY: [MaskMode; 4] = [
        MaskMode::Unmasked,
        MaskMode::Flipped,
        MaskMode::OffByOne,
        MaskMode::AfterSoftmax,
    ];

    /// The kebab-case name used on the command line and in JSON (`causal`, `off-by-one`, ...).
    pub fn name(self) -> &'static str {
        match self {
            MaskMode::Causal => "causal",
            MaskMode::Unmasked => "unmasked",
            MaskMode::Flipped => "flipped",
            MaskMode::OffByOne => "off-by-one",
            MaskMode::AfterSoftmax => "after-softmax",
        }
    }

    /// Parse a name as printed by [`MaskMode::name`].
    pub fn from_name(name: &str) -> Option<MaskMode> {
        MaskMode::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// Does this mode let a position see tokens after it?
    pub fn is_leaky(self) -> bool {
        self != MaskMode::Causal
    }

    /// The mask written into the logits as `-inf` before the softmax, or `None` when this mode
    /// masks nothing there.
    ///
    /// # Shapes
    /// - output: `[q_len, k_len]`, `true` where query `i` must not see key `j`.
    ///
    /// # Panics
    /// If `q_len > k_len` (there are never more new queries than keys).
    pub fn logits_mask(
        self,
        q_len: usize,
        k_len: usize,
        device: &Device,
    ) -> Option<Tensor<2, Bool>> {
        assert!(q_len <= k_len, "{q_len} queries against only {k_len} keys");
        // Query i sits at absolute position i + offset.
        let offset = (k_len - q_len) as i64;
        let shape = [q_len, k_len];
        // Burn names these masks for the part they *block*: `tril_mask(shape, o)` is true
        // strictly above diagonal `o` (key j > i + o), `triu_mask(shape, o)` strictly below
        // it (key j < i + o). The test `causal_mask_orientation` pins this down.
        match self {
            MaskMode::Causal => Some(Tensor::tril_mask(shape, offset, device)),
            // AfterSoftmax masks the weights instead, see `weights_mask`.
            MaskMode::Unmasked | MaskMode::AfterSoftmax => None,
            MaskMode::Flipped => Some(Tensor::triu_mask(shape, offset, device)),
            MaskMode::OffByOne => Some(Tensor::tril_mask(shape, offset + 1, device)),
        }
    }

    /// The mask applied to the weights *after* the softmax (set to zero, no renormalisation),
    /// or `None` for every mode but [`MaskMode::AfterSoftmax`].
    ///
    /// # Shapes
    /// - output: `[q_len, k_len]`, `true` where the weight is zeroed.
    pub fn weights_mask(
        self,
        q_len: usize,
        k_len: usize,
        device: &Device,
    ) -> Option<Tensor<2, Bool>> {
        match self {
            MaskMode::AfterSoftmax => Some(causal_mask(q_len, k_len, device)),
            _ => None,
        }
    }
}

impl std::fmt::Display for MaskMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The correct causal mask, aligned bottom-right: `true` where query `i` (absolute position
/// `k_len - q_len + i`) must not see key `j`, i.e. where `j > k_len - q_len + i`.
///
/// # Shapes
/// - output: `[q_len, k_len]`
///
/// # Panics
/// If `q_len > k_len`.
pub fn causal_mask(q_len: usize, k_len: usize, device: &Device) -> Tensor<2, Bool> {
    MaskMode::Causal
        .logits_mask(q_len, k_len, device)
        .expect("the causal mode always has a logits mask")
}

/// Which keys are left padding, for a batch whose rows were padded on the left to a common
/// length: `true` where row `b`'s query `i` must not see key `j` because `j < left_padding[b]`.
///
/// A padding query itself sees only its own key, so no row of the softmax is empty (an
/// all-`-inf` row would give NaN, and `0 · NaN` would then poison the real positions).
///
/// # Shapes
/// - output: `[B, 1, q_len, k_len]`, broadcasting over heads.
///
/// # Panics
/// If `q_len > k_len`.
pub fn padding_mask(
    left_padding: &[usize],
    q_len: usize,
    k_len: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    assert!(q_len <= k_len, "{q_len} queries against only {k_len} keys");
    let offset = k_len - q_len;
    let mut blocked = Vec::with_capacity(left_padding.len() * q_len * k_len);
    for &pad in left_padding {
        for query in offset..k_len {
            blocked.extend((0..k_len).map(|key| key < pad && key != query));
        }
    }
    let data = burn::tensor::TensorData::new(blocked, [left_padding.len(), 1, q_len, k_len]);
    Tensor::from_data(data, device)
}

/// Sliding-window attention's band: `true` where query `i` (absolute position
/// `k_len − q_len + i`) must not see key `j` because it lies `width` or more positions back.
/// With the causal mask, query `p` sees keys `p − width + 1 ..= p`: what a rolling cache of
/// `width` positions holds ([`super::cache::KvCache::rolling`]).
///
/// # Shapes
/// - output: `[1, 1, q_len, k_len]`, broadcasting over rows and heads.
///
/// # Panics
/// If `q_len > k_len` or `width == 0`.
pub fn band_mask(q_len: usize, k_len: usize, width: usize, device: &Device) -> Tensor<4, Bool> {
    assert!(q_len <= k_len, "{q_len} queries against only {k_len} keys");
    assert!(width > 0, "a band of width 0 hides every key");
    let offset = k_len - q_len;
    let blocked: Vec<bool> = (offset..k_len)
        .flat_map(|query| (0..k_len).map(move |key| key + width <= query))
        .collect();
    let data = burn::tensor::TensorData::new(blocked, [1, 1, q_len, k_len]);
    Tensor::from_data(data, device)
}

/// Scores to attention weights under `mode`: mask the logits with `-inf`, softmax over the
/// keys, and (for [`MaskMode::AfterSoftmax`] only) zero the future weights afterwards.
/// `extra_mask`, when given, blocks more keys (`true` = blocked), e.g. [`padding_mask`].
///
/// The single-head and multi-head attention both call this, so the masking rule lives in
/// exactly one place.
///
/// # Shapes
/// - scores: `[..., q_len, k_len]` (`[B, Tq, Tk]` for one head, `[B, H, Tq, Tk]` for many)
/// - extra_mask: broadcastable to `scores`
/// - output: same as `scores`, each row a distribution over the keys it may see.
pub fn masked_softmax<const D: usize>(
    scores: Tensor<D>,
    mode: MaskMode,
    extra_mask: Option<Tensor<D, Bool>>,
) -> Tensor<D> {
    let [q_len, k_len] = [scores.dims()[D - 2], scores.dims()[D - 1]];
    let device = scores.device();
    let scores = match mode.logits_mask(q_len, k_len, &device) {
        // The 2-D mask gains leading axes of size one and broadcasts over batch and heads.
        Some(mask) => scores.mask_fill(mask.unsqueeze::<D>(), f32::NEG_INFINITY),
        None => scores,
    };
    let scores = match extra_mask {
        Some(mask) => scores.mask_fill(mask, f32::NEG_INFINITY),
        None => scores,
    };
    let weights = softmax(scores, D - 1);
    match mode.weights_mask(q_len, k_len, &device) {
        Some(mask) => weights.mask_fill(mask.unsqueeze::<D>(), 0.0),
        None => weights,
    }
}
