//! Fused CPU kernels with hand-written backward passes, for training and prefill on the `flex`
//! backend.
//!
//! Under `Autodiff`, Burn runs layer norm, attention, GELU and cross-entropy as composites of
//! small recorded ops, each allocating a tensor (see the issue-15 profile in the README). The
//! four functions here compute the same values in one pass each way, registered through Burn's
//! backend extension mechanism (`#[backend_extension]`): Flex runs the kernel, `Autodiff<Flex>`
//! runs it and records a backward step written by hand.
//!
//! | function           | composite it replaces                          | file               |
//! |--------------------|------------------------------------------------|--------------------|
//! | [`layer_norm`]     | `LayerNorm::forward`                           | `layer_norm.rs`    |
//! | [`bias_gelu`]      | `+ bias`, `Gelu::forward`                      | `gelu.rs`          |
//! | [`cross_entropy`]  | `log_softmax`, `gather`, `mean`                | `cross_entropy.rs` |
//! | [`causal_attention`] | Burn's attention fallback under autodiff     | `attention.rs`     |
//!
//! Which path runs is chosen per call: the fused one for `f32` tensors on a Flex device (with
//! or without autodiff), the composite everywhere else (ndarray, wgpu, cuda, ...), and
//! everywhere inside [`composite_only`], which tests and the benchmark use to compare the two.
//! The composite path is the reference: `tests/kernels.rs` holds every fused op to it.

use std::cell::Cell;

use burn::nn::LayerNorm;
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
mod layer_norm;
pub mod math;

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

/// Causal attention with the mask aligned bottom-right (query `i` of `T` sees keys
/// `0 ..= i + S − T`), scale `1/√Dh`.
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H, S, Dh]` with `S ≥ T`, output: `[B, H, T, Dh]`
pub fn causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    #[cfg(feature = "flex")]
    if fused_for(&q.device(), q.dtype()) {
        return extension::causal_attention(q, k, v);
    }
    let options = burn::tensor::ops::AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: true,
    };
    burn::tensor::module::attention(q, k, v, None, None, options)
}
