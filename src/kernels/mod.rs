//! Fused CPU kernels with hand-written backward passes, for training and prefill on the `flex`
//! backend.
//!
//! Under `Autodiff`, Burn runs layer norm, attention, GELU and cross-entropy as composites of
//! small recorded ops, each allocating a tensor, and a linear layer as a batched product whose
//! weight gradient is summed over the batch afterwards (see the profiles in the README). The
//! functions here compute the same values in one pass or one matrix product each way,
//! registered through Burn's backend extension mechanism (`#[backend_extension]`): Flex runs
//! the kernel, `Autodiff<Flex>` runs it and records a backward step written by hand.
//!
//! | function                  | composite it replaces                       | file                  |
//! |---------------------------|---------------------------------------------|-----------------------|
//! | [`linear`]                | `Linear::forward` (batched matmul, bias add) | `linear.rs`          |
//! | [`causal_self_attention`] | three projections, `split_heads`, attention, `merge_heads` | `packed_attention.rs` |
//! | [`causal_attention`]      | Burn's attention fallback under autodiff    | `attention.rs`        |
//! | [`layer_norm`]            | `LayerNorm::forward`                        | `layer_norm.rs`       |
//! | [`bias_gelu`]             | `+ bias`, `Gelu::forward`                   | `gelu.rs`             |
//! | [`cross_entropy`]         | `log_softmax`, `gather`, `mean`             | `cross_entropy.rs`    |
//!
//! Underneath: `gemm.rs` multiplies strided views with the `gemm` crate (as Flex does, minus
//! Flex's zero-filled and re-copied outputs), `math.rs` holds the vectorisable `exp`, `erf`
//! and lane reductions, `simd.rs` compiles their loops for AVX-512 or AVX2 when the CPU has it.
//!
//! Which path runs is chosen per call: the fused one for `f32` tensors on a Flex device (with
//! or without autodiff), the composite everywhere else (ndarray, wgpu, cuda, ...), and
//! everywhere inside [`composite_only`], which tests and the benchmark use to compare the two.
//! The composite path is the reference: `tests/kernels.rs` holds every fused op to it.

use std::cell::Cell;

use burn::nn::{LayerNorm, Linear};
use burn::tensor::{DType, Device, Int, Tensor};

/// Register one gradient per parent node that needs one.
#[cfg(feature = "flex")]
macro_rules! register_grads {
    ($grads:expr, $parents:expr, $values:expr) => {
        for (parent, value) in $parents.into_iter().zip($values) {
            if let Some(node) = parent {
                $grads.register::<burn::backend::Flex>(node.id, value);
            }
        }
    };
}

#[cfg(feature = "flex")]
mod attention;
#[cfg(feature = "flex")]
mod cross_entropy;
#[cfg(feature = "flex")]
mod extension;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "flex")]
mod gelu;
#[cfg(feature = "flex")]
mod gemm;
#[cfg(feature = "flex")]
mod layer_norm;
#[cfg(feature = "flex")]
mod linear;
pub mod math;
#[cfg(feature = "flex")]
mod packed_attention;
mod simd;

/// The ε of every layer norm in the model (Burn's default, and GPT-2's).
pub const LAYER_NORM_EPS: f64 = 1e-5;

thread_local! {
    static FUSED: Cell<bool> = const { Cell::new(true) };
}

/// Run `f` with the fused kernels switched off on this thread: every call takes the composite
/// path, as on a backend without the kernels. Nested calls restore the outer setting.
pub fn composite_only<R>(f: impl FnOnce() -> R) -> R {
    let before = FUSED.with(|fused| fused.replace(false));
    let result = f();
    FUSED.with(|fused| fused.set(before));
    result
}

/// Run `f` on one of rayon's worker threads (directly, when this thread is one already),
/// keeping this thread's [`composite_only`] setting.
///
/// The kernels' parallel loops and the larger matrix products hand work to rayon's pool.
/// Started from a thread outside the pool, every such op injects its work and puts the caller
/// to sleep until the pool has finished it: two thread switches per op, a third of a 128-token
/// prefill on two cores. Started on a worker, an op shares its work with the other workers
/// directly. The training step and the model's forward pass run through here.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let fused = FUSED.with(Cell::get);
    rayon::scope(|_| {
        let before = FUSED.with(|cell| cell.replace(fused));
        let result = f();
        FUSED.with(|cell| cell.set(before));
        result
    })
}

/// Whether a tensor of `dtype` on `device` takes the fused path here.
pub fn fused_for(device: &Device, dtype: DType) -> bool {
    FUSED.with(Cell::get) && dtype == DType::F32 && on_flex(device)
}

#[cfg(feature = "flex")]
fn on_flex(device: &Device) -> bool {
    use burn::backend::DispatchDevice;
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

#[cfg(not(feature = "flex"))]
fn on_flex(_: &Device) -> bool {
    false
}

/// Layer normalisation of the last dimension with `norm`'s `γ` and `β` (ε =
/// [`LAYER_NORM_EPS`], which the model's layer norms are built with).
///
/// # Shapes
/// - x: `[..., D]`, output: same
pub fn layer_norm<const N: usize>(norm: &LayerNorm, x: Tensor<N>) -> Tensor<N> {
    #[cfg(feature = "flex")]
    if let Some(beta) = &norm.beta
        && fused_for(&x.device(), x.dtype())
    {
        return extension::layer_norm(x, norm.gamma.val(), beta.val(), LAYER_NORM_EPS);
    }
    norm.forward(x)
}

/// `x·W + b` with a weight stored `[D_in, D_out]`, as Burn's `Linear` keeps it.
///
/// # Shapes
/// - x: `[..., D_in]`, weight: `[D_in, D_out]`, bias: `[D_out]`, output: `[..., D_out]`
pub fn linear<const N: usize>(
    x: Tensor<N>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<N> {
    #[cfg(feature = "flex")]
    if fused_for(&x.device(), x.dtype()) {
        return extension::linear(x, weight, bias);
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// A `Linear` layer through [`linear`].
///
/// # Shapes
/// - x: `[..., D_in]`, output: `[..., D_out]`
pub fn linear_layer<const N: usize>(layer: &Linear, x: Tensor<N>) -> Tensor<N> {
    linear(
        x,
        layer.weight.val(),
        layer.bias.as_ref().map(|bias| bias.val()),
    )
}

/// `gelu(h + bias)` with the exact (erf) GELU.
///
/// # Shapes
/// - h: `[..., W]`, bias: `[W]`, output: same as h
pub fn bias_gelu<const N: usize>(h: Tensor<N>, bias: Tensor<1>) -> Tensor<N> {
    #[cfg(feature = "flex")]
    if fused_for(&h.device(), h.dtype()) {
        return extension::bias_gelu(h, bias);
    }
    burn::tensor::activation::gelu(h + bias.unsqueeze())
}

/// Mean cross-entropy of `logits` against `targets`: `-mean_n log softmax(logits_n)[t_n]`.
///
/// # Shapes
/// - logits: `[N, V]`, targets: `[N]` ids in `0..V`, output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if fused_for(&logits.device(), logits.dtype()) {
        return extension::cross_entropy(logits, targets);
    }
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    log_probs.gather(1, targets.unsqueeze_dim(1)).mean().neg()
}

/// A rotary position embedding handed to [`causal_self_attention`]: its tables for the fused
/// kernel, and the model's own rotation for the composite path (the kernels sit below the
/// model, so the readable rotation is passed in rather than imported).
pub struct Rotary<'a> {
    /// Cosine of every position's angle for each feature pair, `[T, Dh/2]`.
    pub cos: Tensor<2>,
    /// Sine of the same angles, `[T, Dh/2]`.
    pub sin: Tensor<2>,
    /// The rotation of `[B, H, T, Dh]` queries or keys.
    pub rotate: &'a dyn Fn(Tensor<4>) -> Tensor<4>,
}

/// Causal self-attention of `x` through the query, key and value `projections`, up to the
/// merged heads (the output projection is the caller's), with the queries and keys rotated
/// first when `rotary` is given. `heads` is `[H, H_kv]`: the query heads and the key/value heads
/// they share (equal for multi-head attention).
///
/// On Flex the three projections run as one product against `[W_Q | W_K | W_V]` (nanoGPT's
/// `c_attn` layout, assembled from the three layers on every call, so the weights and every
/// file written from them keep their three names) and the attention reads the heads in place
/// from the packed `[B, T, D + 2·H_kv·Dh]` result ([`packed_attention`](self) kernel).
/// Elsewhere, and for sequences longer than 512, it is the model's readable sequence: three
/// projections, `split_heads`, [`causal_attention`], `merge_heads`.
///
/// # Shapes
/// - x: `[B, T, D]`, query projection `D -> D`, key and value projections `D -> H_kv·Dh`,
///   output: `[B, T, D]`
pub fn causal_self_attention(
    x: Tensor<3>,
    projections: [&Linear; 3],
    heads: [usize; 2],
    rotary: Option<Rotary<'_>>,
) -> Tensor<3> {
    let [n_heads, kv_heads] = heads;
    #[cfg(feature = "flex")]
    {
        let seq = x.dims()[1];
        let biases: Option<Vec<Tensor<1>>> = projections
            .iter()
            .map(|layer| layer.bias.as_ref().map(|bias| bias.val()))
            .collect();
        let unbiased = projections.iter().all(|layer| layer.bias.is_none());
        if fused_for(&x.device(), x.dtype())
            && seq * seq <= attention::WEIGHTS_PER_HEAD_IN_CACHE
            && (biases.is_some() || unbiased)
        {
            let weight = Tensor::cat(projections.map(|layer| layer.weight.val()).to_vec(), 1);
            let bias = biases.map(|biases| Tensor::cat(biases, 0));
            let packed = extension::linear(x, weight, bias);
            return match rotary {
                Some(Rotary { cos, sin, .. }) => {
                    extension::packed_rope_attention(packed, cos, sin, n_heads, kv_heads)
                }
                None => extension::packed_attention(packed, n_heads, kv_heads),
            };
        }
    }
    // `model::split_heads` and `model::merge_heads`, written out so the kernels stay below the
    // model in the module graph.
    let [batch, seq, d_model] = x.dims();
    let head_dim = d_model / n_heads;
    let split = |layer: &Linear, heads: usize| {
        linear_layer(layer, x.clone())
            .reshape([batch, seq, heads, head_dim])
            .swap_dims(1, 2)
    };
    let [query, key, value] = projections;
    let (q, k, v) = (
        split(query, n_heads),
        split(key, kv_heads),
        split(value, kv_heads),
    );
    let (q, k) = match rotary {
        Some(Rotary { rotate, .. }) => (rotate(q), rotate(k)),
        None => (q, k),
    };
    causal_attention(q, k, v)
        .swap_dims(1, 2)
        .reshape([batch, seq, d_model])
}

/// Causal attention with the mask aligned bottom-right (query `i` of `T` sees keys
/// `0 ..= i + S − T`), scale `1/√Dh`. With fewer key/value heads than query heads
/// (grouped-query attention), query head `h` reads key/value head `h / G`, `G = H / H_kv`.
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]` with `S ≥ T` and `H_kv` dividing `H`,
///   output: `[B, H, T, Dh]`
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if fused_for(&q.device(), q.dtype()) {
        // Flex's kernel and the crate's own share key/value heads without copying them.
        return extension::causal_attention(q, k, v);
    }
    let options = burn::tensor::ops::AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    // Burn's generic attention wants as many key/value heads as query heads: give each query
    // head its group's keys and values (a copy, on backends without a grouped kernel).
    let groups = q.dims()[1] / k.dims()[1];
    let (k, v) = (repeat_heads(k, groups), repeat_heads(v, groups));
    burn::tensor::module::attention(q, k, v, None, None, options)
}

/// Each key/value head repeated for the `groups` query heads that share it (head `h` of the
/// result is head `h / groups` of the input); the same as `model::repeat_kv`, kept here so the
/// kernels stay below the model.
///
/// # Shapes
/// - x: `[B, H_kv, S, Dh]`, output: `[B, H_kv·groups, S, Dh]`
fn repeat_heads(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [batch, kv_heads, seq, head_dim] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, seq, head_dim])
        .reshape([batch, kv_heads * groups, seq, head_dim])
}
