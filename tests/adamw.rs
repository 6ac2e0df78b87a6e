//! The trainer's AdamW (`train::adamw::FusedAdamW`): one pass per parameter on Flex, Burn's
//! own `AdamW` off the kernels, the same parameters after many steps (decayed and undecayed
//! groups, per-tensor clipping), and a state either one reads back.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use common::{random_tokens, small_config};
use tinygpt::kernels::without_kernels;
use tinygpt::text::Batch;
use tinygpt::train::{ClipScope, TrainConfig, new_optimizer};
use tinygpt::{Gpt, MaskMode};

/// Every parameter's values, in visiting order.
struct Values(Vec<Vec<f32>>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .push(param.val().into_data().try_to_vec::<f32>().unwrap());
    }
}

fn values(model: &Gpt) -> Vec<Vec<f32>> {
    let mut values = Values(Vec::new());
    model.visit(&mut values);
    values.0
}

fn batch(seed: u64) -> Batch {
    let (rows, seq) = (4, 16);
    let ids: Vec<Vec<usize>> = (0..rows)
        .map(|row| random_tokens(seq + 1, 23, seed * 10 + row))
        .collect();
    Batch {
        inputs: ids.iter().flat_map(|r| r[..seq].to_vec()).collect(),
        targets: ids.iter().flat_map(|r| r[1..].to_vec()).collect(),
        batch_size: rows as usize,
        seq_len: seq,
    }
}

/// `steps` optimizer steps from the same start; from step `burn_from` on, the optimizer's
/// update runs off the kernels (Burn's AdamW). The forward and backward run on the kernels
/// either way, so only the update differs.
fn train(optimizer: &mut ModuleOptimizer, steps: usize, burn_from: usize, lr: f64) -> Gpt {
    let device = Device::flex().autodiff();
    let mut model = small_config(MaskMode::Causal)
        .init_seeded(4, &device)
        .unwrap();
    for step in 0..steps {
        let loss =
            tinygpt::train::loss::teacher_forced_loss_tensor(&model, &batch(step as u64), &device)
                .unwrap();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = match step >= burn_from {
            true => without_kernels(|| optimizer.step(lr, model, grads)),
            false => optimizer.step(lr, model, grads),
        };
    }
    model
}

fn max_diff(a: &Gpt, b: &Gpt) -> f32 {
    let (a, b) = (values(a), values(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[test]
fn the_one_pass_update_matches_burns_adamw_over_many_steps() {
    for (name, config) in [
        (
            "global clipping, decay 0.1",
            TrainConfig::new().with_weight_decay(0.1),
        ),
        (
            "per-tensor clipping, decay 0.5",
            TrainConfig::new()
                .with_weight_decay(0.5)
                .with_grad_clip_scope(ClipScope::PerTensor)
                .with_grad_clip(0.05),
        ),
    ] {
        // A large learning rate, so that a wrong update moves the weights visibly.
        let lr = 1e-2;
        let fused = train(&mut new_optimizer(&config), 30, usize::MAX, lr);
        let burn = train(&mut new_optimizer(&config), 30, 0, lr);
        let start = train(&mut new_optimizer(&config), 0, 0, lr);
        let moved = max_diff(&fused, &start);
        let diff = max_diff(&fused, &burn);
        eprintln!("{name}: moved {moved:.3}, fused vs Burn {diff:.2e}");
        assert!(moved > 0.1, "{name}: the weights moved ({moved})");
        assert!(
            diff <= 2e-5,
            "{name}: fused vs Burn's AdamW, max |Δ| = {diff}"
        );
    }
}

#[test]
fn a_state_written_by_either_update_continues_in_the_other() {
    // 10 steps with one update, then 10 with the other, from the first's optimizer state: the
    // same weights as 20 with Burn's (the state is Burn's AdamWState, time and moments).
    let config = TrainConfig::new();
    let lr = 1e-2;
    let model = train(&mut new_optimizer(&config), 20, 10, lr);
    let burn = train(&mut new_optimizer(&config), 20, 0, lr);
    let diff = max_diff(&model, &burn);
    assert!(diff <= 2e-5, "max |Δ| = {diff}");
}
