//! Gradient clipping by the global norm (PyTorch's `clip_grad_norm_`, nanoGPT's): every
//! gradient is scaled by the same factor, the clipped global norm is the limit, and gradients
//! already within it are left alone. New runs clip globally; the per-tensor scope stays
//! available.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use common::{random_tokens, small_config};
use tinygpt::device::token_tensor;
use tinygpt::train::{ClipScope, TrainConfig, clip_global_norm, cross_entropy};
use tinygpt::{Gpt, MaskMode};

/// Every gradient of `model` in `grads`, flattened, in visiting order.
fn gradients(model: &Gpt, grads: &GradientsParams) -> Vec<Vec<f32>> {
    struct Collect<'a>(&'a GradientsParams, Vec<Vec<f32>>);
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.0.get::<D>(param.id) {
                self.1.push(common::values(grad));
            }
        }
    }
    let mut collect = Collect(grads, Vec::new());
    model.visit(&mut collect);
    collect.1
}

fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flatten()
        .map(|g| (*g as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// A model on an autodiff device and the gradients of its loss on random tokens.
fn model_and_gradients() -> (Gpt, GradientsParams) {
    let device = Device::flex().autodiff();
    let model = small_config(MaskMode::Causal)
        .init_seeded(5, &device)
        .unwrap();
    let vocab = model.config().vocab_size;
    let (batch, seq) = (2, 12);
    let inputs = token_tensor(&random_tokens(batch * seq, vocab, 1), batch, seq, &device).unwrap();
    let targets = token_tensor(
        &random_tokens(batch * seq, vocab, 2),
        1,
        batch * seq,
        &device,
    )
    .unwrap()
    .reshape([batch * seq]);
    let logits = model.forward(inputs).unwrap().reshape([batch * seq, vocab]);
    let grads = cross_entropy(logits, targets).backward();
    let grads = GradientsParams::from_grads(grads, &model);
    (model, grads)
}

#[test]
fn clipping_scales_every_gradient_by_one_factor_down_to_the_limit() {
    let (model, grads) = model_and_gradients();
    let before = gradients(&model, &grads);
    let norm = global_norm(&before);
    let limit = (norm / 4.0) as f32;
    let (clipped, reported) = clip_global_norm(grads, &model, limit);
    let after = gradients(&model, &clipped);
    assert!(
        ((reported as f64 - norm) / norm).abs() < 1e-4,
        "{reported} vs {norm}"
    );
    assert!(
        ((global_norm(&after) - limit as f64) / limit as f64).abs() < 1e-4,
        "clipped norm {} for a limit of {limit}",
        global_norm(&after)
    );
    // One factor for all: the direction of the whole update is kept.
    let factor = limit as f64 / norm;
    for (b, a) in before.iter().flatten().zip(after.iter().flatten()) {
        assert!(
            (*a as f64 - *b as f64 * factor).abs() <= 1e-6 + 1e-4 * (*b as f64).abs(),
            "{a} is not {b} × {factor}"
        );
    }
}

#[test]
fn gradients_within_the_limit_are_untouched() {
    let (model, grads) = model_and_gradients();
    let before = gradients(&model, &grads);
    let limit = (global_norm(&before) * 2.0) as f32;
    let (clipped, _) = clip_global_norm(grads, &model, limit);
    assert_eq!(gradients(&model, &clipped), before);
}

#[test]
fn new_runs_clip_globally() {
    assert_eq!(TrainConfig::new().grad_clip_scope, ClipScope::Global);
}
