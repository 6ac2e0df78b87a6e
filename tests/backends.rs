//! The same weights must compute the same thing on every backend compiled into this build.
//! Backends have disagreed before (Burn's issue #5237), so "switch the backend with a feature
//! flag" is only something a user can trust if it is checked. With `--features wgpu` on a
//! machine without a GPU, the wgpu backends run on Mesa's lavapipe (software Vulkan).

mod common;

use burn::module::Module;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::Device;
use common::{max_abs_diff, random_tokens, row, small_config, small_models_both_paths, values};
use tinygpt::device::{compiled_backends, device_by_name};
use tinygpt::generate::{DecodeMode, Generation, GenerationConfig, Generator};
use tinygpt::text::Batch;
use tinygpt::train::teacher_forced_loss_tensor;
use tinygpt::{Gpt, MaskMode, PositionScheme};

/// Largest |Δ| allowed between a backend's logits and the reference backend's.
const TOLERANCE: f32 = 1e-4;

/// The backend every other is compared with: flex when compiled in (the default CPU backend).
fn reference() -> (&'static str, Device) {
    let name = if compiled_backends().contains(&"flex") {
        "flex"
    } else {
        compiled_backends()[0]
    };
    (name, device_by_name(name).unwrap())
}

/// Every compiled-in backend with its device. One this machine cannot run (wgpu without a
/// Vulkan driver, see `tinygpt::device`) is left out, and says so.
fn backends() -> Vec<(&'static str, Device)> {
    compiled_backends()
        .into_iter()
        .filter_map(|name| match device_by_name(name) {
            Ok(device) => Some((name, device)),
            Err(tinygpt::Error::BackendUnavailable { reason, .. }) => {
                eprintln!("not compared: {name}: {reason}");
                None
            }
            Err(other) => panic!("{name}: {other}"),
        })
        .collect()
}

fn tokens(len: usize, seed: u64) -> Vec<usize> {
    random_tokens(len, 23, seed)
}

/// The small model on both attention paths, and the same with rotary position embedding and
/// grouped-query attention (4 heads sharing 2 key/value heads).
fn models(seed: u64, device: &Device) -> Vec<(&'static str, Gpt)> {
    let mut models = small_models_both_paths(MaskMode::Causal, seed, device).to_vec();
    let rope_gqa = small_config(MaskMode::Causal)
        .with_position(PositionScheme::Rope)
        .with_n_kv_heads(Some(2))
        .init_seeded(seed, device)
        .unwrap();
    models.push(("rope + gqa", rope_gqa));
    models
}

#[test]
fn every_backend_gives_the_reference_logits() {
    let (reference_name, reference_device) = reference();
    let input = tokens(40, 1);
    for (path, model) in models(11, &reference_device) {
        let expected = model.forward(row(&input, &reference_device)).unwrap();
        for (name, device) in backends() {
            let moved: Gpt = model.clone().to_device(&device);
            let logits = moved.forward(row(&input, &device)).unwrap();
            let diff = max_abs_diff(expected.clone(), logits.to_device(&reference_device));
            eprintln!("{name} vs {reference_name} ({path}): max |Δ logit| = {diff:.2e}");
            assert!(diff <= TOLERANCE, "{name} ({path}): max |Δ logit| = {diff}");
        }
    }
}

/// Prefill `prefill` tokens, then decode the rest one at a time through the cache; the logits
/// of every position, row-major.
fn cached_logits(model: &Gpt, input: &[usize], prefill: usize, device: &Device) -> Vec<f32> {
    let mut cache = model.new_cache(1, device);
    let mut logits = values(
        model
            .forward_cached(row(&input[..prefill], device), &mut cache)
            .unwrap(),
    );
    for &token in &input[prefill..] {
        logits.extend(values(
            model
                .forward_cached(row(&[token], device), &mut cache)
                .unwrap(),
        ));
    }
    logits
}

#[test]
fn cached_decoding_equals_the_full_forward_on_every_backend() {
    let (_, reference_device) = reference();
    let input = tokens(24, 2);
    for (path, model) in models(12, &reference_device) {
        for (name, device) in backends() {
            let model: Gpt = model.clone().to_device(&device);
            let full = values(model.forward(row(&input, &device)).unwrap());
            let cached = cached_logits(&model, &input, 7, &device);
            let diff = full
                .iter()
                .zip(&cached)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            eprintln!("{name} ({path}): cached vs full, max |Δ logit| = {diff:.2e}");
            assert_eq!(full.len(), cached.len());
            assert!(diff <= TOLERANCE, "{name} ({path}): max |Δ logit| = {diff}");
        }
    }
}

#[test]
fn a_training_step_gives_the_same_loss_and_weights_on_every_backend() {
    let (reference_name, reference_device) = reference();
    let batch = Batch {
        inputs: tokens(2 * 16, 3),
        targets: tokens(2 * 16, 4),
        batch_size: 2,
        seq_len: 16,
    };
    // One plain SGD step: unlike Adam's first step, which is about sign(gradient) and so
    // magnifies rounding in near-zero gradients, SGD moves each weight by lr · gradient, so
    // equal gradients give equal weights.
    let step = |device: &Device, model: &Gpt| {
        let train_device = device.clone().autodiff();
        let model: Gpt = model.clone().fork(&train_device).train();
        let loss = teacher_forced_loss_tensor(&model, &batch, &train_device).unwrap();
        let loss_value: f32 = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut sgd = SgdConfig::new().init();
        let model = sgd.step(0.5, model, grads).valid();
        let logits = model.forward(row(&batch.inputs[..16], device)).unwrap();
        (loss_value, logits.to_device(&reference_device))
    };
    for (path, model) in models(13, &reference_device) {
        if path == "readable path" {
            continue; // the training step takes the same path as the fast one's composite
        }
        let (expected_loss, expected_logits) = step(&reference_device, &model);
        for (name, device) in backends() {
            let (loss, logits) = step(&device, &model);
            let diff = max_abs_diff(expected_logits.clone(), logits);
            eprintln!(
                "{name} vs {reference_name} ({path}): loss {loss} vs {expected_loss}, logits after \
             one SGD step max |Δ| = {diff:.2e}"
            );
            assert!(
                (loss - expected_loss).abs() <= TOLERANCE,
                "{name} ({path}): loss {loss}"
            );
            assert!(
                diff <= TOLERANCE,
                "{name} ({path}): max |Δ logit| after a step = {diff}"
            );
        }
    }
}

/// Greedy generation with every step's logits recorded.
fn generate(model: &Gpt, prompts: &[Vec<usize>], mode: DecodeMode, device: &Device) -> Generation {
    let options = GenerationConfig {
        mode,
        record_logits: true,
        ..GenerationConfig::new(80)
    };
    Generator::new(model, device)
        .generate_all(prompts, &options)
        .unwrap()
}

#[test]
fn the_generator_gives_the_reference_tokens_on_every_backend() {
    let (reference_name, reference_device) = reference();
    // Two prompts of different lengths (left padding), 80 new tokens: past the 64-token
    // context, so the window slides and the cache is rebuilt on the way.
    let prompts = vec![tokens(3, 5), tokens(11, 6)];
    let [(_, model), _] = small_models_both_paths(MaskMode::Causal, 14, &reference_device);
    let expected = generate(&model, &prompts, DecodeMode::Cached, &reference_device);
    for (name, device) in backends() {
        let moved: Gpt = model.clone().to_device(&device);
        for mode in [DecodeMode::Cached, DecodeMode::Naive] {
            let generation = generate(&moved, &prompts, mode, &device);
            let diff = expected
                .step_logits
                .iter()
                .zip(&generation.step_logits)
                .map(|(a, b)| tinygpt::generate::max_abs_diff(a, b))
                .fold(0.0, f32::max);
            eprintln!(
                "{name} {mode:?} vs {reference_name} cached: {} steps, max |Δ logit| = {diff:.2e}",
                generation.step_logits.len()
            );
            assert_eq!(
                generation.tokens, expected.tokens,
                "{name} {mode:?}: different tokens"
            );
            assert_eq!(generation.step_logits.len(), expected.step_logits.len());
            assert!(diff <= TOLERANCE, "{name} {mode:?}: max |Δ logit| = {diff}");
        }
    }
}
