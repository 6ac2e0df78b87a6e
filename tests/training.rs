//! Training: the loss goes down, the leak shows, honest loss is honest, checkpoints round-trip,
//! resume is exact, divergence is caught, and bad data is a clear error.
//!
//! Runs on flex unless `TINYGPT_TEST_DEVICE` says otherwise (see `common::end_to_end_device`).

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use common::{end_to_end_device, max_abs_diff};
use tinygpt::device::token_tensor;
use tinygpt::leak::honest_loss;
use tinygpt::text::{BUNDLED_CORPUS, Split, TextDataset, read_text, step_rng};
use tinygpt::train::{
    TrainConfig, TrainEvent, TrainOutcome, checkpoint, teacher_forced_loss, train,
};
use tinygpt::{Error, GptConfig, MaskMode};

const SEQ_LEN: usize = 24;

fn tiny_model(vocab: usize, mask_mode: MaskMode) -> GptConfig {
    GptConfig::new(vocab)
        .with_d_model(32)
        .with_n_heads(2)
        .with_n_layers(1)
        .with_max_seq_len(SEQ_LEN)
        .with_mask_mode(mask_mode)
}

fn tiny_training(steps: usize) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 16,
        seq_len: SEQ_LEN,
        learning_rate: 1e-2,
        min_learning_rate: 1e-3,
        warmup_steps: 5,
        eval_interval: 10,
        eval_batches: 4,
        seed: 7,
        ..TrainConfig::new()
    }
}

fn dataset() -> TextDataset {
    TextDataset::new(BUNDLED_CORPUS, SEQ_LEN).unwrap()
}

/// A fresh, empty directory under the target dir (kept after the test for inspection).
fn run_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn run(
    dir: &Path,
    mode: MaskMode,
    config: &TrainConfig,
    resume: bool,
) -> tinygpt::Result<TrainOutcome> {
    let model = tiny_model(dataset().tokenizer().vocab_size(), mode);
    run_model(dir, &model, config, resume)
}

fn run_model(
    dir: &Path,
    model: &GptConfig,
    config: &TrainConfig,
    resume: bool,
) -> tinygpt::Result<TrainOutcome> {
    train(
        dir,
        model,
        config,
        &dataset(),
        &end_to_end_device(),
        resume,
        &mut |_| ControlFlow::Continue(()),
    )
}

#[test]
fn a_short_run_lowers_the_loss() {
    let outcome = run(
        &run_dir("short_run"),
        MaskMode::Causal,
        &tiny_training(40),
        false,
    )
    .unwrap();
    let vocab = dataset().tokenizer().vocab_size() as f32;
    let first = &outcome.history[0];
    let last = outcome.history.last().unwrap();
    // A model that knows nothing scores ln(V); a few dozen steps must get well below it.
    assert!(
        last.train_loss < 0.7 * vocab.ln(),
        "{last:?} vs ln V = {}",
        vocab.ln()
    );
    assert!(last.val_loss < first.val_loss, "{:?}", outcome.history);
    assert_eq!(outcome.steps, 40);
}

#[test]
fn the_unmasked_model_trains_lower_but_predicts_worse_honestly() {
    // Two layers: copying the next token needs attention to find "the position after me",
    // which one layer learns far more slowly.
    let config = TrainConfig {
        learning_rate: 3e-3,
        min_learning_rate: 3e-4,
        ..tiny_training(150)
    };
    let model = |mode| {
        tiny_model(dataset().tokenizer().vocab_size(), mode)
            .with_d_model(64)
            .with_n_heads(4)
            .with_n_layers(2)
    };
    let causal = run_model(
        &run_dir("leak_causal"),
        &model(MaskMode::Causal),
        &config,
        false,
    )
    .unwrap();
    let leaky = run_model(
        &run_dir("leak_unmasked"),
        &model(MaskMode::Unmasked),
        &config,
        false,
    )
    .unwrap();
    let (c, l) = (
        causal.history.last().unwrap(),
        leaky.history.last().unwrap(),
    );
    eprintln!(
        "train loss: leaky {} vs causal {}",
        l.train_loss, c.train_loss
    );
    assert!(l.train_loss < c.train_loss, "leaky {l:?} vs causal {c:?}");

    let data = dataset();
    let windows = data.batch(Split::Validation, 8, SEQ_LEN, &mut step_rng(1, 0));
    let device = end_to_end_device();
    let honest_causal = honest_loss(&causal.model, &windows, &device).unwrap();
    let honest_leaky = honest_loss(&leaky.model, &windows, &device).unwrap();
    eprintln!("honest loss: leaky {honest_leaky} vs causal {honest_causal}");
    assert!(
        honest_leaky > honest_causal,
        "honest loss: leaky {honest_leaky} vs causal {honest_causal}"
    );
}

#[test]
fn honest_loss_equals_teacher_forced_loss_for_a_causal_model() {
    let dir = run_dir("honest");
    let outcome = run(&dir, MaskMode::Causal, &tiny_training(20), false).unwrap();
    let data = dataset();
    let windows = data.batch(Split::Validation, 8, SEQ_LEN, &mut step_rng(3, 0));
    let device = end_to_end_device();
    let honest = honest_loss(&outcome.model, &windows, &device).unwrap();
    let forced = teacher_forced_loss(&outcome.model, &windows, &device).unwrap();
    assert!(
        (honest - forced).abs() <= 1e-4,
        "honest {honest} vs teacher-forced {forced}"
    );
}

#[test]
fn checkpoint_round_trip_gives_identical_logits() {
    let dir = run_dir("round_trip");
    let outcome = run(&dir, MaskMode::Causal, &tiny_training(10), false).unwrap();
    let device = end_to_end_device();
    let loaded = checkpoint::load(&dir, &device).unwrap();
    assert_eq!(loaded.state.step, 10);
    assert_eq!(loaded.tokenizer, *dataset().tokenizer());
    let ids: Vec<usize> = (0..SEQ_LEN).map(|i| i % 7).collect();
    let tokens = token_tensor(&ids, 1, SEQ_LEN, &device).unwrap();
    let before = outcome.model.forward(tokens.clone()).unwrap();
    let after = loaded.model.forward(tokens).unwrap();
    assert_eq!(max_abs_diff(before, after), 0.0);
}

#[test]
fn a_tied_model_trains_and_its_checkpoint_round_trips() {
    let dir = run_dir("tied_round_trip");
    let data = dataset();
    let model =
        tiny_model(data.tokenizer().vocab_size(), MaskMode::Causal).with_tie_embeddings(true);
    let device = end_to_end_device();
    let outcome = train(
        &dir,
        &model,
        &tiny_training(30),
        &data,
        &device,
        false,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    let first = outcome.history.first().unwrap().train_loss;
    let last = outcome.history.last().unwrap().train_loss;
    assert!(last < first, "a tied model should learn: {first} -> {last}");
    let loaded = checkpoint::load(&dir, &device).unwrap();
    assert!(loaded.model.lm_head.is_none());
    let ids: Vec<usize> = (0..SEQ_LEN).map(|i| i % 7).collect();
    let tokens = token_tensor(&ids, 1, SEQ_LEN, &device).unwrap();
    let before = outcome.model.forward(tokens.clone()).unwrap();
    let after = loaded.model.forward(tokens).unwrap();
    assert_eq!(max_abs_diff(before, after), 0.0);
}

/// Train `tiny_training(20)` in `name`, stop where `stop` says (as an interruption would),
/// then resume; returns the stopped and the resumed outcome.
fn stop_then_resume(name: &str, stop: fn(&TrainEvent) -> bool) -> (TrainOutcome, TrainOutcome) {
    let config = tiny_training(20);
    let dir = run_dir(name);
    let data = dataset();
    let model = tiny_model(data.tokenizer().vocab_size(), MaskMode::Causal);
    let device = end_to_end_device();
    let stopped = train(
        &dir,
        &model,
        &config,
        &data,
        &device,
        false,
        &mut |event| match stop(&event) {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        },
    )
    .unwrap();
    assert_eq!(
        checkpoint::load(&dir, &device).unwrap().state.step,
        stopped.steps,
        "a stopped run keeps a checkpoint of the step it reached"
    );
    let resumed = train(&dir, &model, &config, &data, &device, true, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(checkpoint::load(&dir, &device).unwrap().state.step, 20);
    (stopped, resumed)
}

/// max |Δ logit| between two models on one fixed window.
fn logit_drift(a: &tinygpt::Gpt, b: &tinygpt::Gpt) -> f32 {
    let device = end_to_end_device();
    let ids: Vec<usize> = (0..SEQ_LEN).map(|i| (i * 5) % 11).collect();
    let tokens = token_tensor(&ids, 1, SEQ_LEN, &device).unwrap();
    max_abs_diff(
        a.forward(tokens.clone()).unwrap(),
        b.forward(tokens).unwrap(),
    )
}

#[test]
fn resume_continues_the_step_count_and_matches_an_uninterrupted_run() {
    let straight = run(
        &run_dir("resume_straight"),
        MaskMode::Causal,
        &tiny_training(20),
        false,
    )
    .unwrap();
    // Interrupt right after the evaluation (and checkpoint) at step 10.
    let (first, resumed) = stop_then_resume(
        "resume_interrupted",
        |event| matches!(event, TrainEvent::Eval(record) if record.step == 10),
    );
    assert_eq!(first.steps, 10);
    assert_eq!(resumed.steps, 20);
    assert_eq!(
        resumed.history.iter().map(|r| r.step).collect::<Vec<_>>(),
        [10, 20]
    );
    // Same data order, same optimizer state, same schedule: the same weights.
    let diff = logit_drift(&straight.model, &resumed.model);
    assert!(
        diff <= 1e-5,
        "resumed run drifted from the uninterrupted one by {diff}"
    );
}

#[test]
fn a_run_stopped_between_evaluations_resumes_to_the_uninterrupted_weights() {
    let straight = run(
        &run_dir("stop_straight"),
        MaskMode::Causal,
        &tiny_training(20),
        false,
    )
    .unwrap();
    // As Ctrl-C does: stop after step 7, between the evaluations at 0 and 10.
    let (stopped, resumed) = stop_then_resume("stop_at_7", |event| {
        matches!(event, TrainEvent::Step { step: 7, .. })
    });
    assert_eq!(stopped.steps, 7);
    assert_eq!(resumed.steps, 20);
    let diff = logit_drift(&straight.model, &resumed.model);
    assert!(diff <= 1e-5, "drifted by {diff}");
}

#[test]
fn a_truncated_checkpoint_is_a_clear_error() {
    let dir = run_dir("truncated");
    run(&dir, MaskMode::Causal, &tiny_training(10), false).unwrap();
    let weights = dir.join("checkpoint/model.bpk");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    match checkpoint::load(&dir, &end_to_end_device()) {
        Err(Error::Checkpoint { path, message, .. }) => {
            assert!(path.ends_with("model.bpk"), "{path:?}");
            assert!(message.contains("unreadable weights"), "{message}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }

    let state = dir.join("checkpoint/state.json");
    std::fs::write(&state, "{\"format_version\": 1, \"st").unwrap();
    let err = checkpoint::load(&dir, &end_to_end_device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("state.json") && err.contains("truncated"),
        "{err}"
    );

    let err = checkpoint::load(&run_dir("no_checkpoint_here"), &end_to_end_device())
        .unwrap_err()
        .to_string();
    // The library states the fact; the examples add how to make a checkpoint.
    assert!(
        err.contains("no checkpoint here") && err.contains("state.json"),
        "{err}"
    );
}

/// A learning rate that blows the loss up within a few steps, evaluating (and checkpointing)
/// every `eval_interval` steps.
fn diverging(eval_interval: usize) -> TrainConfig {
    TrainConfig {
        learning_rate: 1e9,
        min_learning_rate: 1e9,
        warmup_steps: 0,
        grad_clip: 1e9,
        eval_interval,
        ..tiny_training(200)
    }
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint() {
    let dir = run_dir("diverge");
    match run(&dir, MaskMode::Causal, &diverging(1), false) {
        Err(Error::Diverged {
            step,
            last_good_step,
            loss,
        }) => {
            assert!(!loss.is_finite());
            assert_eq!(last_good_step, Some(step - 1));
            assert_eq!(
                checkpoint::load(&dir, &end_to_end_device())
                    .unwrap()
                    .state
                    .step,
                step - 1
            );
        }
        other => panic!("expected divergence, got {other:?}"),
    }
}

#[test]
fn a_run_that_diverges_before_its_first_checkpoint_says_none_was_kept() {
    let dir = run_dir("diverge_early");
    match run(&dir, MaskMode::Causal, &diverging(100), false) {
        Err(err @ Error::Diverged { .. }) => {
            let Error::Diverged { last_good_step, .. } = &err else {
                unreachable!()
            };
            assert_eq!(*last_good_step, None);
            let message = err.to_string();
            assert!(
                message.contains("no checkpoint had been written"),
                "{message}"
            );
            assert!(!message.contains("is kept"), "{message}");
            assert!(!checkpoint::exists(&dir));
        }
        other => panic!("expected divergence, got {other:?}"),
    }
}

fn data_error(result: tinygpt::Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::Data(message)) => message,
        other => panic!("expected a data error, got {other:?}"),
    }
}

#[test]
fn bad_training_data_is_a_clear_error() {
    let dir = run_dir("bad_data");
    std::fs::create_dir_all(&dir).unwrap();

    match read_text(&dir.join("missing.txt")) {
        Err(err @ Error::Io { .. }) => {
            let source = std::error::Error::source(&err).expect("the OS error is kept");
            assert!(err.to_string().contains("missing.txt"), "{err}");
            assert!(source.to_string().contains("No such file"), "{source}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    assert!(data_error(read_text(&empty)).contains("empty"));

    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    let message = data_error(read_text(&latin1));
    assert!(
        message.contains("not UTF-8") && message.contains("offset 3"),
        "{message}"
    );

    let short = "too short for a window";
    let message = data_error(TextDataset::new(short, 64));
    assert!(message.contains("shorter than one window"), "{message}");
}

#[test]
fn every_parameter_receives_a_gradient() {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::optim::GradientsParams;
    use burn::tensor::Tensor;

    struct CountParams(usize);
    impl ModuleVisitor for CountParams {
        fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
            self.0 += 1;
        }
    }

    let device = end_to_end_device().autodiff();
    let data = dataset();
    let model = tiny_model(data.tokenizer().vocab_size(), MaskMode::Causal)
        .init(&device)
        .unwrap();
    let batch = data.batch(Split::Train, 2, SEQ_LEN, &mut step_rng(0, 0));
    let loss = tinygpt::train::teacher_forced_loss_tensor(&model, &batch, &device).unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut count = CountParams(0);
    model.visit(&mut count);
    // A parameter without a gradient would never train (as zero-initialised biases once didn't).
    assert_eq!(grads.len(), count.0);
}

#[test]
fn a_checkpoint_whose_files_disagree_is_a_clear_error() {
    let dir = run_dir("mismatched");
    run(&dir, MaskMode::Causal, &tiny_training(10), false).unwrap();
    // A tokenizer from another text: its vocabulary no longer fits the model's.
    let other = tinygpt::text::CharTokenizer::from_text("abc").unwrap();
    std::fs::write(
        dir.join("checkpoint/tokenizer.json"),
        serde_json::to_string(&other).unwrap(),
    )
    .unwrap();
    let err = checkpoint::load(&dir, &end_to_end_device())
        .unwrap_err()
        .to_string();
    assert!(err.contains("different runs"), "{err}");
}
