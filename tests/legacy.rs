//! Files written by tinygpt 0.1 still work: a checkpoint (and a safetensors export of it) from
//! before the 0.2 restructure loads, computes what 0.1 computed, and resumes training.
//!
//! `tests/fixtures/legacy_0_1/` was written by the 0.1 examples (commit b8b1d02; the commands
//! are in `expected.json`), including a leaky run whose config still says `"mask_mode":
//! "none"`, the 0.1 name of `MaskMode::Unmasked`.

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use common::{end_to_end_device, max_abs_diff, temp_dir};
use tinygpt::device::token_tensor;
use tinygpt::generate::{GenerationConfig, Generator};
use tinygpt::text::{BUNDLED_CORPUS, TextDataset};
use tinygpt::train::{ClipScope, checkpoint, train};
use tinygpt::weights::load_safetensors;
use tinygpt::{Gpt, MaskMode};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy_0_1")
        .join(name)
}

/// The greedy continuation 0.1 printed for each run, from `expected.json`.
fn expected_text(run: &str) -> (String, String) {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let prompt = expected["prompt"].as_str().unwrap().to_string();
    let greedy = expected["greedy_40"][run].as_str().unwrap().to_string();
    (prompt, greedy)
}

fn greedy_text(model: &Gpt, checkpoint: &checkpoint::Checkpoint, prompt: &str) -> String {
    let ids = checkpoint.tokenizer.encode(prompt).unwrap();
    let generation = Generator::new(model, &end_to_end_device())
        .generate_all(&[ids], &GenerationConfig::new(40))
        .unwrap();
    checkpoint.tokenizer.decode(&generation.tokens[0])
}

#[test]
fn a_0_1_checkpoint_loads_and_generates_what_0_1_generated() {
    let device = end_to_end_device();
    for (run, mode) in [
        ("causal", MaskMode::Causal),
        ("leak-none", MaskMode::Unmasked),
    ] {
        let saved = checkpoint::load(&fixture(run), &device).unwrap();
        assert_eq!(saved.model.config().mask_mode, mode, "{run}");
        assert_eq!(saved.state.step, 150, "{run}");
        let (prompt, expected) = expected_text(run);
        assert_eq!(
            greedy_text(&saved.model, &saved, &prompt),
            expected,
            "{run}"
        );
    }
}

#[test]
fn a_0_1_safetensors_export_holds_the_same_weights_as_its_checkpoint() {
    let device = end_to_end_device();
    let saved = checkpoint::load(&fixture("causal"), &device).unwrap();
    let (exported, tokenizer) = load_safetensors(&fixture("causal.safetensors"), &device).unwrap();
    assert_eq!(tokenizer.as_ref(), Some(&saved.tokenizer));
    assert_eq!(exported.config(), saved.model.config());
    let ids = saved.tokenizer.encode("the dog sees a cat").unwrap();
    let tokens = || token_tensor(&ids[..16], 1, 16, &device).unwrap();
    let diff = max_abs_diff(
        saved.model.forward(tokens()).unwrap(),
        exported.forward(tokens()).unwrap(),
    );
    assert_eq!(diff, 0.0, "the same weights must give the same logits");
}

#[test]
fn a_0_1_run_resumes() {
    // A copy, so the fixture itself is never written.
    let dir = temp_dir("legacy_resume");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
    for entry in std::fs::read_dir(fixture("causal/checkpoint")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join("checkpoint").join(entry.file_name())).unwrap();
    }
    std::fs::copy(fixture("causal/metrics.jsonl"), dir.join("metrics.jsonl")).unwrap();

    let device = end_to_end_device();
    let saved = checkpoint::load(&dir, &device).unwrap();
    let config = saved.state.train_config.clone().unwrap().with_steps(160);
    // 0.1 clipped each gradient on its own; its files name no scope and must resume so.
    assert_eq!(config.grad_clip_scope, ClipScope::PerTensor);
    let data = TextDataset::with_tokenizer(BUNDLED_CORPUS, saved.tokenizer.clone(), 16).unwrap();
    let outcome = train(
        &dir,
        saved.model.config(),
        &config,
        &data,
        &device,
        true,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    assert_eq!(outcome.steps, 160);
    assert_eq!(outcome.history.last().unwrap().step, 160);
    assert!(outcome.history.iter().any(|record| record.step == 150));
}
