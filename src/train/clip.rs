//! Gradient clipping by the global norm: when the L2 norm of all gradients taken together
//! exceeds `max_norm`, every gradient is scaled by the same factor `max_norm / norm`. This is
//! PyTorch's `clip_grad_norm_`, which nanoGPT uses; it keeps the update's direction, where
//! clipping each tensor on its own (Burn's `GradientClippingConfig::Norm`) bends it.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Which norm the gradient clip bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClipScope {
    /// The norm of all gradients together (PyTorch's `clip_grad_norm_`, nanoGPT).
    #[default]
    Global,
    /// Each parameter's gradient on its own (Burn's optimizer clipping; tinygpt before 0.3).
    PerTensor,
}

/// Scale `grads` so their global L2 norm is at most `max_norm`; returns the norm before
/// clipping. One host round trip: the squared norms are summed on the device.
pub fn clip_global_norm<M: Module>(
    mut grads: GradientsParams,
    model: &M,
    max_norm: f32,
) -> (GradientsParams, f32) {
    let mut squares = SumOfSquares {
        grads: &grads,
        total: None,
    };
    model.visit(&mut squares);
    let Some(total) = squares.total else {
        return (grads, 0.0);
    };
    let norm = total.into_scalar::<f32>().sqrt();
    // The same small guard as PyTorch, so a norm just above the limit is not divided by zero.
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        model.visit(&mut Rescale {
            grads: &mut grads,
            factor,
        });
    }
    (grads, norm)
}

/// Adds up `Σ g²` over every parameter that has a gradient.
struct SumOfSquares<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SumOfSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

/// Multiplies every gradient by `factor`.
struct Rescale<'a> {
    grads: &'a mut GradientsParams,
    factor: f32,
}

impl ModuleVisitor for Rescale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, grad.mul_scalar(self.factor));
        }
    }
}
