//! The fused ops as a Burn backend extension: one trait, implemented by Flex (forward only)
//! and by `Autodiff<Flex>` (forward, recording the hand-written backward), and the
//! `Tensor`-level calls that go through Burn's dispatch to whichever applies.

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::ops::{Backward, NodeGuard, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{Int, Tensor};

use super::flex::values;

use super::attention::{self, CausalAttentionBackward};
use super::cross_entropy::{self, CrossEntropyBackward};
use super::gelu::{self, BiasGeluBackward};
use super::layer_norm::{self, LayerNormBackward};
use super::linear::{self, LinearBackward, LinearNoBiasBackward};
use super::packed_attention::{self, PackedAttentionBackward};

/// The fused ops; see the module docs of [`super`] for what each replaces.
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// Layer norm of the last dimension.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// `gelu(h + bias)`, the tanh form when `approximate`.
    fn fused_bias_gelu(
        h: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        approximate: bool,
    ) -> FloatTensor<Self>;
    /// Mean cross-entropy, shape `[1]`.
    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `x·W + b`.
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// `x·W`.
    fn fused_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Causal self-attention from packed `[B, T, D + 2·H_kv·Dh]` projections to merged heads
    /// `[B, T, D]`, `heads` query heads sharing `kv_heads` key/value heads.
    fn fused_packed_attention(
        packed: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
    ) -> FloatTensor<Self>;
    /// The same, the queries and keys rotated first by the `[T, Dh/2]` tables `cos` and `sin`
    /// (rotary position embedding; the tables take no gradient).
    fn fused_packed_rope_attention(
        packed: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
    ) -> FloatTensor<Self>;
    /// Causal attention, bottom-right aligned; the key/value heads may be fewer than the query
    /// heads (grouped-query attention).
    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

impl FusedOps for Flex {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        layer_norm::forward_flex(x, gamma, beta, eps).0
    }

    fn fused_bias_gelu(
        h: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        approximate: bool,
    ) -> FloatTensor<Self> {
        gelu::forward_flex(h, bias, approximate).0
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::forward_flex(logits, &targets).0
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        linear::forward_flex(x, weight, Some(bias)).0
    }

    fn fused_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        linear::forward_flex(x, weight, None).0
    }

    fn fused_packed_attention(
        packed: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
    ) -> FloatTensor<Self> {
        packed_attention::forward_flex(packed, [heads, kv_heads], None, false).0
    }

    fn fused_packed_rope_attention(
        packed: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
    ) -> FloatTensor<Self> {
        let tables = rope_tables(&cos, &sin);
        packed_attention::forward_flex(packed, [heads, kv_heads], Some(tables), false).0
    }

    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        attention::forward_flex(q, k, v).0
    }
}

/// A rotation's tables as host values.
fn rope_tables(cos: &FlexTensor, sin: &FlexTensor) -> packed_attention::Tables {
    packed_attention::Tables {
        cos: values(cos).into_owned(),
        sin: values(sin).into_owned(),
    }
}

/// The packed attention on `Autodiff<Flex>`, with or without a rotation, recorded.
fn recorded_packed_attention<C: CheckpointStrategy>(
    packed: FloatTensor<Autodiff<Flex, C>>,
    heads: [usize; 2],
    rotation: Option<packed_attention::Tables>,
) -> FloatTensor<Autodiff<Flex, C>> {
    let nodes = [packed.node()];
    let (out, saved) =
        packed_attention::forward_flex(packed.into_primitive(), heads, rotation, true);
    record::<C, _, _>(PackedAttentionBackward, nodes, saved, out)
}

/// The output of a fused op on `Autodiff<Flex>`: when any of the inputs behind `nodes` needs a
/// gradient, `step` is recorded with `saved` for the backward pass; otherwise `saved` is
/// dropped.
fn record<C, S, const N: usize>(
    step: S,
    nodes: [NodeGuard; N],
    saved: S::State,
    out: FlexTensor,
) -> FloatTensor<Autodiff<Flex, C>>
where
    C: CheckpointStrategy,
    S: Backward<Flex, N>,
{
    match step.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(saved, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

// Each op: take the graph nodes first, then run the Flex forward and record it.
impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (out, saved) = layer_norm::forward_flex(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            eps,
        );
        record::<C, _, _>(LayerNormBackward, nodes, saved, out)
    }

    fn fused_bias_gelu(
        h: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        approximate: bool,
    ) -> FloatTensor<Self> {
        let nodes = [h.node(), bias.node()];
        let (out, saved) =
            gelu::forward_flex(h.into_primitive(), bias.into_primitive(), approximate);
        record::<C, _, _>(BiasGeluBackward, nodes, saved, out)
    }

    fn fused_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [logits.node()];
        let (out, saved) = cross_entropy::forward_flex(logits.into_primitive(), &targets);
        record::<C, _, _>(CrossEntropyBackward, nodes, saved, out)
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let (out, saved) = linear::forward_flex(
            x.into_primitive(),
            weight.into_primitive(),
            Some(bias.into_primitive()),
        );
        record::<C, _, _>(LinearBackward, nodes, saved, out)
    }

    fn fused_linear_no_bias(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node()];
        let (out, saved) = linear::forward_flex(x.into_primitive(), weight.into_primitive(), None);
        record::<C, _, _>(LinearNoBiasBackward, nodes, saved, out)
    }

    fn fused_packed_attention(
        packed: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
    ) -> FloatTensor<Self> {
        recorded_packed_attention::<C>(packed, [heads, kv_heads], None)
    }

    fn fused_packed_rope_attention(
        packed: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        heads: usize,
        kv_heads: usize,
    ) -> FloatTensor<Self> {
        let tables = rope_tables(&cos.into_primitive(), &sin.into_primitive());
        recorded_packed_attention::<C>(packed, [heads, kv_heads], Some(tables))
    }

    fn fused_causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [q.node(), k.node(), v.node()];
        let qkv = [q.into_primitive(), k.into_primitive(), v.into_primitive()];
        let [q, k, v] = qkv.clone();
        let (out, weights) = attention::forward_flex(q, k, v);
        let saved = attention::saved(qkv, weights);
        record::<C, _, _>(CausalAttentionBackward, nodes, saved, out)
    }
}

/// See [`super::layer_norm`].
pub fn layer_norm<const N: usize>(
    x: Tensor<N>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Tensor<N> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        eps,
    ))
}

/// See [`super::bias_gelu`].
pub fn bias_gelu<const N: usize>(h: Tensor<N>, bias: Tensor<1>, approximate: bool) -> Tensor<N> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_bias_gelu(
        h.into_dispatch(),
        bias.into_dispatch(),
        approximate,
    ))
}

/// See [`super::cross_entropy`].
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_cross_entropy(
        logits.into_dispatch(),
        targets.into_dispatch(),
    ))
}

/// See [`super::linear`].
pub fn linear<const N: usize>(
    x: Tensor<N>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<N> {
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as FusedOps>::fused_linear(x, weight, bias.into_dispatch()),
        None => <Dispatch as FusedOps>::fused_linear_no_bias(x, weight),
    })
}

/// See [`super::packed_self_attention`].
pub fn packed_attention(packed: Tensor<3>, heads: usize, kv_heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_packed_attention(
        packed.into_dispatch(),
        heads,
        kv_heads,
    ))
}

/// See [`super::packed_self_attention`].
pub fn packed_rope_attention(
    packed: Tensor<3>,
    cos: Tensor<2>,
    sin: Tensor<2>,
    heads: usize,
    kv_heads: usize,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_packed_rope_attention(
        packed.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
        heads,
        kv_heads,
    ))
}

/// See [`super::causal_attention`].
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_causal_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
    ))
}
