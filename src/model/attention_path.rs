//! The one place that decides how a layer's attention is computed.
//!
//! Every path computes what the readable one computes (within float rounding); the others are
//! faster where they apply. [`AttentionPath::choose`] picks one per call from what the call is,
//! never from anything else:
//!
//! | path            | runs when                                                    | computes                                                                 | held to the readable path by |
//! |-----------------|--------------------------------------------------------------|--------------------------------------------------------------------------|------------------------------|
//! | `Readable`      | a leaky mask, attention dropout, hidden keys (padding, band), a trace or a planted fault, or fast paths switched off | `repeat_kv`, then [`single_head::attention`] over all heads at once: scores, mask, softmax, weights · V | (the reference) `tests/hand_worked.rs`, `tests/reference.rs` against PyTorch |
//! | `SingleQuery`   | one new position (a decode step)                             | `softmax(K·qᵀ/√Dh)` and the weights · V with Burn's ops, no mask (one query may see every key), a group's queries stacked against their shared head | `tests/attention_path.rs`, `tests/cache.rs` (cached == naive) |
//! | `PackedKernel`  | a whole sequence without a cache, on the crate's kernels     | the layer from `x` to the merged heads in one kernel: `x·[W_Q W_K W_V]`, RoPE, attention on the packed rows ([`crate::kernels::packed_self_attention`]) | `tests/kernels.rs`, `tests/reference.rs`, `tests/attention_path.rs` |
//! | `CausalKernel`  | new positions after a cache (chunked prefill), on the crate's kernels | the attention core: scores, fused causal softmax, weights · V, grouped heads read in place ([`crate::kernels::causal_attention`]) | `tests/kernels.rs`, `tests/attention_path.rs` |
//! | `decode_step_applies` (the whole step) | one new position per row with a cache, on the crate's kernels outside autodiff, nothing hidden but left padding, nothing instrumented | every layer and the head in one kernel on host buffers, the cache written in place ([`crate::kernels::decode_step`], `model/decode_step.rs`); where it declines, the step runs layer by layer with `SingleQuery` | `tests/decode_step.rs`, `tests/cache.rs`, `tests/hf_gpt2.rs` (cached == naive) |
//! | `BurnAttention` | several new positions on any other backend (wgpu, ndarray)   | Burn's attention, `burn::tensor::module::attention`, causal, with each key/value head repeated for its group | `tests/backends.rs`, `tests/reference.rs` on the test backend |
//!
//! "The crate's kernels" are `tinygpt::kernels`: `f32` on Flex, outside
//! [`crate::kernels::without_kernels`]. A kernel that cannot serve a call says so by returning
//! `None`, and the call takes the next path down: the whole decode step hands over to the
//! layer-by-layer step, the packed kernel (a sequence past its size limit) to the step-by-step
//! layer with the causal kernel, which serves every length (long inference in blocks of
//! queries).

use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{DType, Device, Tensor};

use super::heads::repeat_kv;
use super::instruments::{Instrumentation, NoInstruments};
use super::mask::MaskMode;
use super::plan::Plan;
use super::single_head::{self, Masking};
use crate::kernels;

/// How one call of an attention layer is computed; see the module docs for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionPath {
    /// The mechanism written out ([`single_head::attention`] over every head).
    Readable,
    /// One new query against every key: no mask.
    SingleQuery,
    /// The whole layer up to the merged heads in one of the crate's kernels.
    PackedKernel,
    /// The attention core in the crate's kernel.
    CausalKernel,
    /// Burn's attention.
    BurnAttention,
}

impl AttentionPath {
    /// The path for a call on `x` (`cached`: with a KV cache) under `plan`, by a layer whose
    /// fast paths apply or not (the causal mask, no attention dropout, not switched off:
    /// [`super::CausalSelfAttention::fast_paths_apply`]); `instrumented` when the call carries
    /// a trace or a fault.
    pub fn choose(
        fast_paths_apply: bool,
        x: &Tensor<3>,
        cached: bool,
        plan: &Plan,
        instrumented: bool,
    ) -> Self {
        if !fast_paths_apply || plan.hidden_keys().is_some() || instrumented {
            return Self::Readable;
        }
        if plan.new_tokens() == 1 {
            return Self::SingleQuery;
        }
        match (kernels::runs_on(&x.device(), x.dtype()), cached) {
            (true, false) => Self::PackedKernel,
            (true, true) => Self::CausalKernel,
            (false, _) => Self::BurnAttention,
        }
    }

    /// Whether a call (under `plan`, on `device`) runs as one whole decode step rather than layer
    /// by layer: one new position per row after a cache, every layer's fast paths applying
    /// (`fast_paths_apply`), the crate's kernels on and no autodiff, and no band (left padding
    /// the kernel takes as counts). Traced calls and planted faults never get here: they run
    /// the readable path.
    pub fn decode_step_applies(fast_paths_apply: bool, device: &Device, plan: &Plan) -> bool {
        fast_paths_apply
            && plan.new_tokens() == 1
            && !plan.banded()
            && kernels::runs_on_without_autodiff(device, DType::F32)
    }

    /// A layer from `x` to its merged heads in one kernel, through its query, key and value
    /// `projections` with `heads = [H, H_kv]`, when this is the packed path and the kernel
    /// takes the call; `None` otherwise (the layer then runs step by step).
    ///
    /// # Shapes
    /// - x: `[B, T, D]`, output: `[B, T, D]`
    pub fn whole_layer(
        self,
        projections: [&Linear; 3],
        heads: [usize; 2],
        x: &Tensor<3>,
        plan: &Plan,
    ) -> Option<Tensor<3>> {
        if self != Self::PackedKernel {
            return None;
        }
        let tables = match plan.rotation() {
            Some(rotation) => Some(rotation.tables()?),
            None => None,
        };
        kernels::packed_self_attention(x.clone(), projections, heads, tables)
    }

    /// The attention core along this path: the mixed values of every head.
    ///
    /// # Shapes
    /// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]`, output: `[B, H, T, Dh]`
    ///
    /// # Errors
    /// On the readable path, the checks a planted fault fails (see [`single_head::attention`]).
    pub fn attend<I: Instrumentation>(
        self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        masking: &Masking<4>,
        instruments: &mut I,
    ) -> Result<Tensor<4>, I::Error> {
        Ok(match self {
            Self::Readable => {
                // Each query head meets its group's keys and values (a copy; the fast paths
                // read the shared heads in place).
                let groups = q.dims()[1] / k.dims()[1];
                let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups));
                if groups > 1 {
                    instruments.record("k_repeated", &k.dims());
                    instruments.record("v_repeated", &v.dims());
                }
                let (attended, weights) = single_head::attention(q, k, v, masking, instruments)?;
                instruments.keep_weights(&weights);
                attended
            }
            Self::SingleQuery => single_query_attention(q, k, v),
            // The packed kernel declined this call (too long), or it comes after a cache.
            Self::PackedKernel | Self::CausalKernel => {
                match kernels::causal_attention(q.clone(), k.clone(), v.clone()) {
                    Some(attended) => attended,
                    None => burn_attention(q, k, v),
                }
            }
            Self::BurnAttention => burn_attention(q, k, v),
        })
    }

    /// [`AttentionPath::attend`] for a causal call with no hidden keys and nothing carried:
    /// the form tests hold every path to the readable one (and to PyTorch) with.
    ///
    /// # Shapes
    /// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]`, output: `[B, H, T, Dh]`
    pub fn causal(self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
        let masking = Masking::new(MaskMode::Causal);
        let Ok(attended) = self.attend(q, k, v, &masking, &mut NoInstruments);
        attended
    }
}

/// Attention of a single query position (a decode step) over all `S` keys: with one query the
/// causal mask hides nothing, so this is `softmax(q·Kᵀ / √Dh)·V` without one. With grouped
/// key/value heads, the `G` query heads of a group are stacked against their shared head, so
/// each cached head is read once per step, not once per query head.
///
/// # Shapes
/// - q: `[B, H, 1, Dh]`, k and v: `[B, H_kv, S, Dh]`, output: `[B, H, 1, Dh]`
fn single_query_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [batch, heads, _, head_dim] = q.dims();
    let kv_heads = k.dims()[1];
    let groups = heads / kv_heads;
    let scale = (head_dim as f64).sqrt().recip();
    // [B, H, 1, Dh] -> [B, H_kv, G, Dh]: a group's queries as the rows of one matrix. (Not
    // for G = 1, where it is the same shape: each op costs a decode step microseconds.)
    let q = match groups {
        1 => q,
        _ => q.reshape([batch, kv_heads, groups, head_dim]),
    };
    // K·qᵀ rather than q·Kᵀ: the cache's rows are contiguous, so this is a row-major
    // matrix-vector product, which the CPU backends run several times faster.
    let scores = k.matmul(q.swap_dims(2, 3)).mul_scalar(scale); // [B, H_kv, S, G]
    let attended = softmax(scores, 2).swap_dims(2, 3).matmul(v); // [B, H_kv, G, Dh]
    match groups {
        1 => attended,
        _ => attended.reshape([batch, heads, 1, head_dim]),
    }
}

/// Burn's attention, causal and aligned bottom-right like [`super::mask::causal_mask`]. It
/// wants as many key/value heads as query heads, so each is repeated for its group.
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]`, output: `[B, H, T, Dh]`
fn burn_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let groups = q.dims()[1] / k.dims()[1];
    let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups));
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    burn::tensor::module::attention(q, k, v, None, None, options)
}
