//! The crate's kernels: fused CPU ops with hand-written backward passes, for `f32` on the `flex`
//! backend.
//!
//! Under `Autodiff`, Burn runs layer norm, attention, GELU and cross-entropy as composites of
//! small recorded ops, each allocating a tensor, and a linear layer as a batched product whose
//! weight gradient is summed over the batch afterwards (see `docs/PERFORMANCE.md`). The
//! functions here compute the same values in one pass or one matrix product each way,
//! registered through Burn's backend extension mechanism (`#[backend_extension]`): Flex runs
//! the kernel, `Autodiff<Flex>` runs it and records a backward step written by hand.
//!
//! | function                  | what it replaces                             | file                  |
//! |---------------------------|----------------------------------------------|-----------------------|
//! | [`linear`]                | `Linear::forward` (batched matmul, bias add) | `linear.rs`           |
//! | [`packed_self_attention`] | three projections, `split_heads`, attention, `merge_heads` | `packed_attention.rs` |
//! | [`causal_attention`]      | Burn's attention, composite under autodiff   | `attention.rs`        |
//! | [`layer_norm`]            | `LayerNorm::forward`                         | `layer_norm.rs`       |
//! | [`bias_gelu`]             | `+ bias`, `Gelu::forward`                    | `gelu.rs`             |
//! | [`cross_entropy`]         | `log_softmax`, `gather`, `mean`              | `cross_entropy.rs`    |
//! | [`decode_step`]           | a whole decode step, op by op (inference only) | `decode.rs` (the loops), `decode_step.rs` (tensors to slices) |
//! | [`adamw_step`]            | Burn's AdamW update, a dozen ops per parameter | `adamw.rs`          |
//!
//! Underneath: `gemm.rs` multiplies strided views with the `gemm` crate (as Flex does, minus
//! Flex's zero-filled and re-copied outputs), `math.rs` holds the vectorisable `exp`, `erf`
//! and lane reductions, `simd.rs` compiles their loops for AVX-512 or AVX2 when the CPU has it,
//! `pair.rs` runs the decode step's two halves on two cores with a cheaper hand-off than
//! rayon's.
//!
//! The kernels run for `f32` tensors on a Flex device (with or without autodiff), nowhere else
//! ([`runs_on`]), and nowhere inside [`without_kernels`], which tests and the benchmark use to
//! compare. The attention kernels and the decode step serve only the calls they can: they
//! return `None` otherwise, and the model computes those calls itself
//! ([`crate::model::attention_path`]).
//! The others fall back to Burn's own op, the reference `tests/kernels.rs` holds each to.

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
mod adamw;
#[cfg(feature = "flex")]
mod attention;
#[cfg(feature = "flex")]
mod cross_entropy;
#[cfg(feature = "flex")]
mod decode;
mod decode_step;
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
#[cfg(feature = "flex")]
mod pair;
mod simd;

pub use decode_step::{StepLayer, StepModel, StepRows};

/// The default ε of the model's layer norms (Burn's default, and GPT-2's).
pub const LAYER_NORM_EPS: f64 = 1e-5;

thread_local! {
    static KERNELS_ON: Cell<bool> = const { Cell::new(true) };
}

/// Run `f` with the crate's kernels switched off on this thread: every op takes Burn's own
/// (composite) implementation, as on a backend without the kernels. Nested calls restore the
/// outer setting.
pub fn without_kernels<R>(f: impl FnOnce() -> R) -> R {
    let before = KERNELS_ON.with(|on| on.replace(false));
    let result = f();
    KERNELS_ON.with(|on| on.set(before));
    result
}

/// Run `f` on one of rayon's worker threads (directly, when this thread is one already),
/// keeping this thread's [`without_kernels`] setting.
///
/// The kernels' parallel loops and the larger matrix products hand work to rayon's pool.
/// Started from a thread outside the pool, every such op injects its work and puts the caller
/// to sleep until the pool has finished it: two thread switches per op, a third of a 128-token
/// prefill on two cores. Started on a worker, an op shares its work with the other workers
/// directly. The training step and the model's forward pass run through here.
pub fn on_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let on = KERNELS_ON.with(Cell::get);
    rayon::scope(|_| {
        let before = KERNELS_ON.with(|cell| cell.replace(on));
        let result = f();
        KERNELS_ON.with(|cell| cell.set(before));
        result
    })
}

/// Whether the crate's kernels run on a tensor of `dtype` on `device` here: `f32` on a Flex
/// device (with or without autodiff), outside [`without_kernels`].
pub fn runs_on(device: &Device, dtype: DType) -> bool {
    KERNELS_ON.with(Cell::get) && dtype == DType::F32 && on_flex(device)
}

/// [`runs_on`], and the device records no gradients: where the kernels with no backward run
/// ([`decode_step`], and [`adamw_step`] on the parameters an optimizer sees).
pub fn runs_on_without_autodiff(device: &Device, dtype: DType) -> bool {
    runs_on(device, dtype) && !device.is_autodiff()
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

/// Layer normalisation of the last dimension with `norm`'s `γ` and `β` and its `eps` (the ε
/// `norm` was built with: Burn's `LayerNorm` keeps it private, so the caller passes it too).
///
/// # Shapes
/// - x: `[..., D]`, output: same
pub fn layer_norm<const N: usize>(norm: &LayerNorm, x: Tensor<N>, eps: f64) -> Tensor<N> {
    #[cfg(feature = "flex")]
    if let Some(beta) = &norm.beta
        && runs_on(&x.device(), x.dtype())
    {
        return extension::layer_norm(x, norm.gamma.val(), beta.val(), eps);
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
    if runs_on(&x.device(), x.dtype()) {
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

/// `gelu(h + bias)`: the exact (erf) GELU, or its tanh approximation (GPT-2's `gelu_new`)
/// when `approximate`.
///
/// # Shapes
/// - h: `[..., W]`, bias: `[W]`, output: same as h
pub fn bias_gelu<const N: usize>(h: Tensor<N>, bias: Tensor<1>, approximate: bool) -> Tensor<N> {
    #[cfg(feature = "flex")]
    if runs_on(&h.device(), h.dtype()) {
        return extension::bias_gelu(h, bias, approximate);
    }
    gelu(h + bias.unsqueeze(), approximate)
}

/// `gelu(z)` with Burn's ops: exact, or the tanh approximation when `approximate` (the MLP
/// without a bias, and [`bias_gelu`] off the crate's kernels).
///
/// # Shapes
/// - z: any, output: same
pub fn gelu<const N: usize>(z: Tensor<N>, approximate: bool) -> Tensor<N> {
    match approximate {
        true => burn::tensor::activation::gelu_approximate(z),
        false => burn::tensor::activation::gelu(z),
    }
}

/// Mean cross-entropy of `logits` against `targets`: `-mean_n log softmax(logits_n)[t_n]`.
///
/// # Shapes
/// - logits: `[N, V]`, targets: `[N]` ids in `0..V`, output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    #[cfg(feature = "flex")]
    if runs_on(&logits.device(), logits.dtype()) {
        return extension::cross_entropy(logits, targets);
    }
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    log_probs.gather(1, targets.unsqueeze_dim(1)).mean().neg()
}

/// Causal self-attention of `x` through the query, key and value `projections`, up to the
/// merged heads (the output projection is the caller's), with the queries and keys rotated
/// first by the RoPE tables `rotation` (`[T, Dh/2]` cosines and sines) when given. `heads` is
/// `[H, H_kv]`: the query heads and the key/value heads they share (equal for multi-head
/// attention).
///
/// The three projections run as one product against `[W_Q | W_K | W_V]` (nanoGPT's `c_attn`
/// layout, assembled from the three layers on every call, so the weights and every file
/// written from them keep their three names) and the attention reads the heads in place from
/// the packed `[B, T, D + 2·H_kv·Dh]` result (`packed_attention.rs`).
///
/// Returns `None`, and the model runs the layer step by step, where the kernel does not serve
/// the call: off the crate's kernels ([`runs_on`]), for sequences whose `[T, T]` weights per
/// head pass [`MAX_WEIGHTS_PER_HEAD`] (training) or [`BLOCKED_FROM`] (inference), or when
/// some projections have a bias and others not.
///
/// # Shapes
/// - x: `[B, T, D]`, query projection `D -> D`, key and value projections `D -> H_kv·Dh`,
///   output: `[B, T, D]`
pub fn packed_self_attention(
    x: Tensor<3>,
    projections: [&Linear; 3],
    heads: [usize; 2],
    rotation: Option<(Tensor<2>, Tensor<2>)>,
) -> Option<Tensor<3>> {
    #[cfg(feature = "flex")]
    {
        let [n_heads, kv_heads] = heads;
        let seq = x.dims()[1];
        let biases: Option<Vec<Tensor<1>>> = projections
            .iter()
            .map(|layer| layer.bias.as_ref().map(|bias| bias.val()))
            .collect();
        let unbiased = projections.iter().all(|layer| layer.bias.is_none());
        let limit = match x.device().is_autodiff() {
            true => MAX_WEIGHTS_PER_HEAD,
            false => BLOCKED_FROM,
        };
        let serves =
            runs_on(&x.device(), x.dtype()) && seq * seq <= limit && (biases.is_some() || unbiased);
        if !serves {
            return None;
        }
        let weight = Tensor::cat(projections.map(|layer| layer.weight.val()).to_vec(), 1);
        let bias = biases.map(|biases| Tensor::cat(biases, 0));
        let packed = extension::linear(x, weight, bias);
        Some(match rotation {
            Some((cos, sin)) => {
                extension::packed_rope_attention(packed, cos, sin, n_heads, kv_heads)
            }
            None => extension::packed_attention(packed, n_heads, kv_heads),
        })
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (x, projections, heads, rotation);
        None
    }
}

/// One decode step of the whole network, `B` rows of one new token each, as one kernel on host
/// buffers (`decode.rs`): the layer norms, products, rotation, cache write and single-query
/// attention of every layer, then the final norm and the head, with no tensor op in between;
/// each layer's new key and value are written into its cache buffers in place.
///
/// Returns `None`, and the model runs the step op by op, off the crate's kernels or under
/// autodiff ([`runs_on_without_autodiff`]), or for weights it cannot read (a layer norm without a shift);
/// nothing is written then.
///
/// # Shapes
/// - output: logits `[B, 1, V]`
pub fn decode_step(model: StepModel, rows: &StepRows) -> Option<Tensor<3>> {
    let device = model.token_embedding.device();
    if !runs_on_without_autodiff(&device, model.token_embedding.dtype()) {
        return None;
    }
    decode_step::run(model, rows)
}

/// AdamW's constants for one step of [`adamw_step`].
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    /// `β₁`, `β₂`.
    pub betas: [f32; 2],
    /// `ε`.
    pub epsilon: f32,
    /// The learning rate.
    pub lr: f64,
    /// Decoupled weight decay `λ`.
    pub weight_decay: f32,
    /// The step number `t`, from 1.
    pub time: usize,
}

/// One AdamW step of a parameter in one pass (`adamw.rs`): the parameter and its first and
/// second moments (`None` at the first step) updated from `grad`, in place where they are not
/// shared.
///
/// # Panics
/// Unless [`runs_on_without_autodiff`] the parameter's device (the caller checks, and otherwise runs
/// Burn's AdamW).
///
/// # Shapes
/// - param, grad, each moment: the same shape
pub fn adamw_step<const D: usize>(
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<[Tensor<D>; 2]>,
    step: AdamWStep,
) -> (Tensor<D>, [Tensor<D>; 2]) {
    #[cfg(feature = "flex")]
    {
        let flex = |tensor: Tensor<D>| {
            flex::from_tensor(tensor)
                .expect("adamw_step runs on Flex tensors only (runs_on_without_autodiff)")
        };
        let first = moments.is_none();
        let [m, v] = match moments {
            Some(moments) => moments,
            None => [param.zeros_like(), param.zeros_like()],
        };
        let (mut param, grad, mut m, mut v) = (flex(param), flex(grad), flex(m), flex(v));
        let hyper = adamw::Hyper {
            betas: step.betas,
            epsilon: step.epsilon,
            lr: step.lr,
            weight_decay: step.weight_decay,
            time: step.time,
        };
        adamw::step(
            flex::values_mut(&mut param),
            &flex::values(&grad),
            flex::values_mut(&mut m),
            flex::values_mut(&mut v),
            hyper,
            first,
        );
        let tensor = flex::into_tensor::<D>;
        (tensor(param), [tensor(m), tensor(v)])
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (param, grad, moments, step);
        panic!("adamw_step runs on Flex tensors only (runs_on_without_autodiff)")
    }
}

/// The most attention weights per head (`T·S`, 1 MB of `f32`) the packed kernel holds when
/// training; past it, the layer runs step by step with the causal kernel, which keeps the
/// whole matrix at every length in training (its backward reads the weights).
pub const MAX_WEIGHTS_PER_HEAD: usize = 256 * 1024;

/// Inference past this many attention weights per head (`T·S`, 64 KB of `f32`) runs in
/// blocks of queries, each against only the keys it sees, which skips the masked half of the
/// products: the packed kernel declines those calls, and the causal kernel takes them block
/// by block. Below it one product over the whole matrix is cheaper than the blocks' hand-offs.
pub const BLOCKED_FROM: usize = 128 * 128;

/// Causal attention with the mask aligned bottom-right (query `i` of `T` sees keys
/// `0 ..= i + S − T`), scale `1/√Dh`, with a hand-written backward for training. With fewer
/// key/value heads than query heads (grouped-query attention), query head `h` reads key/value
/// head `h / G`, `G = H / H_kv`, without copying them.
///
/// Inference past [`BLOCKED_FROM`] weights per head runs in blocks of queries, each
/// against only the keys it sees, holding no `[T, S]` matrix (`attention::forward_blocked`).
/// Returns `None`, and the model runs Burn's attention instead, off the crate's kernels
/// ([`runs_on`]).
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]` with `S ≥ T` and `H_kv` dividing `H`,
///   output: `[B, H, T, Dh]`
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Option<Tensor<4>> {
    #[cfg(feature = "flex")]
    {
        let device = q.device();
        if !runs_on(&device, q.dtype()) {
            return None;
        }
        let weights_per_head = q.dims()[2] * k.dims()[2];
        if device.is_autodiff() || weights_per_head <= BLOCKED_FROM {
            return Some(extension::causal_attention(q, k, v));
        }
        // Long inference: in blocks of queries, no [T, S] weights held.
        let [q, k, v] = [q, k, v].map(flex::from_tensor);
        Some(flex::into_tensor(attention::forward_blocked(q?, k?, v?)))
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = (q, k, v);
        None
    }
}
