//! The training loop: AdamW with decoupled weight decay on the weight matrices only, linear
//! warmup then cosine decay, gradient clipping, periodic evaluation, atomic checkpoints and
//! exact resume.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, TrainState};
use crate::data::{Split, TextDataset, step_rng};
use crate::diagnostics::{teacher_forced_loss, teacher_forced_loss_tensor};
use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig};

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Optimizer steps in the whole run.
    pub steps: usize,
    /// Windows per batch, `B`.
    pub batch_size: usize,
    /// Tokens per window, `T` (at most the model's `max_seq_len`).
    pub seq_len: usize,
    /// Peak learning rate, reached at the end of warmup.
    pub learning_rate: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_learning_rate: f64,
    /// Steps of linear warmup from 0 to the peak.
    pub warmup_steps: usize,
    /// AdamW's decoupled weight decay, applied to weight matrices and embeddings only.
    pub weight_decay: f64,
    /// Each parameter's gradient is rescaled to at most this L2 norm (Burn clips per tensor).
    pub grad_clip: f32,
    /// Evaluate, log and checkpoint every this many steps (and at the last step).
    pub eval_interval: usize,
    /// Batches averaged for each evaluation estimate.
    pub eval_batches: usize,
    /// Seeds the initial weights and the data order.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 500,
            batch_size: 32,
            seq_len: 64,
            learning_rate: 3e-3,
            min_learning_rate: 3e-4,
            warmup_steps: 50,
            weight_decay: 0.1,
            grad_clip: 1.0,
            eval_interval: 100,
            eval_batches: 8,
            seed: 1337,
        }
    }
}

impl TrainConfig {
    /// The learning rate for `step` (0-based): linear warmup to `learning_rate`, then cosine
    /// decay to `min_learning_rate` at the last step.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_learning_rate + cosine * (self.learning_rate - self.min_learning_rate)
    }

    /// Check the settings against the model they will train.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting that cannot work.
    pub fn validate(&self, model: &GptConfig) -> Result<()> {
        let positive = [
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("eval_interval", self.eval_interval),
            ("eval_batches", self.eval_batches),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Error::Config(format!("{name} must be at least 1")));
        }
        if self.seq_len > model.max_seq_len {
            return Err(Error::Config(format!(
                "seq_len ({}) is longer than the model's context window max_seq_len ({})",
                self.seq_len, model.max_seq_len
            )));
        }
        let finite_positive = |x: f64| x.is_finite() && x > 0.0;
        if !finite_positive(self.learning_rate)
            || self.min_learning_rate.is_nan()
            || self.min_learning_rate < 0.0
        {
            return Err(Error::Config(format!(
                "learning rates must be positive numbers (got {} and minimum {})",
                self.learning_rate, self.min_learning_rate
            )));
        }
        Ok(())
    }
}

/// One evaluation, as written to `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Steps taken when it was measured.
    pub step: usize,
    /// Mean loss on training windows (teacher forcing).
    pub train_loss: f32,
    /// Mean loss on validation windows (teacher forcing).
    pub val_loss: f32,
    /// Learning rate of the last step.
    pub lr: f64,
    /// Training throughput since the previous evaluation.
    pub tokens_per_s: f64,
}

/// What the training loop reports as it goes.
#[derive(Clone, Debug)]
pub enum TrainEvent<'a> {
    /// A step finished.
    Step {
        /// Steps taken so far.
        step: usize,
        /// Steps in the whole run.
        total: usize,
        /// This step's training loss.
        loss: f32,
        /// This step's learning rate.
        lr: f64,
        /// Throughput since the previous evaluation.
        tokens_per_s: f64,
    },
    /// An evaluation finished (and its checkpoint is on disk).
    Eval(&'a EvalRecord),
}

/// The result of a finished run.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The trained model, ready for inference (no autodiff).
    pub model: Gpt,
    /// Every evaluation of the run, resumed parts included.
    pub history: Vec<EvalRecord>,
    /// Steps taken in total.
    pub steps: usize,
    /// Wall-clock seconds spent training in this call.
    pub seconds: f64,
}

/// File of evaluation records in a run directory, one JSON object per line.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Train a model of `model_config` on `dataset`, writing checkpoints and metrics into
/// `run_dir`. With `resume`, training continues from the checkpoint in `run_dir` (same step
/// count, optimizer state and data order) instead of starting afresh.
///
/// `observer` hears every step and evaluation; returning [`ControlFlow::Break`] stops the run
/// there, as an interruption would (the last checkpoint is the last evaluation's).
///
/// # Errors
/// - [`Error::Config`] for settings that cannot work;
/// - [`Error::Checkpoint`] when resuming from a missing or mismatched checkpoint;
/// - [`Error::Diverged`] when the loss becomes NaN or infinite (the last good checkpoint stays);
/// - [`Error::Io`] when the run directory cannot be written.
pub fn train(
    run_dir: &Path,
    model_config: &GptConfig,
    config: &TrainConfig,
    dataset: &TextDataset,
    device: &Device,
    resume: bool,
    observer: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> Result<TrainOutcome> {
    // The training settings first: they are what a user types (`--seq-len` sets the context).
    config.validate(model_config)?;
    model_config.validate()?;
    if model_config.vocab_size != dataset.tokenizer().vocab_size() {
        return Err(Error::Config(format!(
            "the model's vocab_size ({}) differs from the tokenizer's ({})",
            model_config.vocab_size,
            dataset.tokenizer().vocab_size()
        )));
    }
    checkpoint::ensure_dir(run_dir)?;
    let train_device = device.clone().autodiff();
    let (mut model, mut optimizer, start, mut history) = if resume {
        resume_from(run_dir, model_config, config, dataset, &train_device)?
    } else {
        train_device.seed(config.seed);
        (
            model_config.init(&train_device)?,
            new_optimizer(config),
            0,
            Vec::new(),
        )
    };

    let started = Instant::now();
    let mut window_start = (Instant::now(), start);
    let mut last_good_step = start;
    let mut steps_taken = start;
    for step in start..config.steps {
        let batch = dataset.batch(
            Split::Train,
            config.batch_size,
            config.seq_len,
            &mut step_rng(config.seed, step),
        );
        let loss = teacher_forced_loss_tensor(&model, &batch, &train_device)?;
        let loss_value: f32 = loss.clone().into_scalar();
        if !loss_value.is_finite() {
            return Err(Error::Diverged {
                step: step + 1,
                loss: loss_value,
                last_good_step,
            });
        }
        let lr = config.learning_rate_at(step);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, grads);

        let done = step + 1;
        steps_taken = done;
        let elapsed = window_start.0.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s =
            ((done - window_start.1) * config.batch_size * config.seq_len) as f64 / elapsed;
        let mut flow = observer(TrainEvent::Step {
            step: done,
            total: config.steps,
            loss: loss_value,
            lr,
            tokens_per_s,
        });
        if done % config.eval_interval == 0 || done == config.steps {
            let inference = model.valid();
            let record = EvalRecord {
                step: done,
                train_loss: evaluate(&inference, dataset, Split::Train, config, device)?,
                val_loss: evaluate(&inference, dataset, Split::Validation, config, device)?,
                lr,
                tokens_per_s,
            };
            history.push(record);
            write_metrics(run_dir, &history)?;
            let state = TrainState {
                format_version: checkpoint::FORMAT_VERSION,
                step: done,
                train_config: Some(config.clone()),
                origin: None,
            };
            checkpoint::save(
                run_dir,
                &inference,
                dataset.tokenizer(),
                &state,
                Some(&optimizer),
            )?;
            last_good_step = done;
            flow = observer(TrainEvent::Eval(history.last().expect("just pushed")));
            window_start = (Instant::now(), done);
        }
        if flow.is_break() {
            break;
        }
    }
    Ok(TrainOutcome {
        model: model.valid(),
        history,
        steps: steps_taken,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The optimizer [`train`] uses: AdamW (β₂ = 0.99) over every parameter, with `config`'s
/// weight decay turned off for biases and LayerNorm scales and shifts (decaying those towards
/// zero only fights the normalisation), and per-tensor gradient-norm clipping at
/// `config.grad_clip`.
pub fn new_optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let adamw = AdamWConfig::new()
        .with_beta_2(0.99)
        .with_weight_decay(config.weight_decay as f32)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.grad_clip)));
    let no_decay = adamw.clone().with_weight_decay(0.0);
    adamw.init().with_group(
        ParamGroup::from_any_predicates(vec!["bias", "gamma", "beta"]),
        no_decay.build(),
        Some(GradientClippingConfig::Norm(config.grad_clip).init()),
    )
}

type Resumed = (Gpt, ModuleOptimizer, usize, Vec<EvalRecord>);

fn resume_from(
    run_dir: &Path,
    model_config: &GptConfig,
    config: &TrainConfig,
    dataset: &TextDataset,
    device: &Device,
) -> Result<Resumed> {
    let saved = checkpoint::load(run_dir, device)?;
    let mismatch = |what: &str| Error::Checkpoint {
        path: saved.dir.display().to_string(),
        message: format!(
            "cannot resume: the {what} differs from the one this run was started with"
        ),
    };
    if saved.model.config() != model_config {
        return Err(mismatch("model config"));
    }
    if saved.tokenizer != *dataset.tokenizer() {
        return Err(mismatch("training text's vocabulary"));
    }
    let Some(saved_config) = &saved.state.train_config else {
        return Err(Error::Checkpoint {
            path: saved.dir.display().to_string(),
            message: "cannot resume: these weights were imported, not trained by tinygpt; \
                      start a new run in another directory"
                .into(),
        });
    };
    if saved_config.seed != config.seed || saved_config.steps > config.steps {
        return Err(mismatch("training config (seed or a shorter step count)"));
    }
    let optimizer = checkpoint::load_optimizer(&saved, new_optimizer(config))?;
    let history = read_metrics(run_dir)?
        .into_iter()
        .filter(|record| record.step <= saved.state.step)
        .collect();
    Ok((saved.model, optimizer, saved.state.step, history))
}

/// Mean teacher-forced loss over `config.eval_batches` batches of `split`, drawn from an RNG
/// fixed per split so every evaluation of a run (and of every model) sees the same windows.
///
/// # Errors
/// The model's errors.
pub fn evaluate(
    model: &Gpt,
    dataset: &TextDataset,
    split: Split,
    config: &TrainConfig,
    device: &Device,
) -> Result<f32> {
    const EVAL_STREAM: usize = usize::MAX / 2;
    let mut rng = step_rng(
        config.seed ^ (split == Split::Validation) as u64,
        EVAL_STREAM,
    );
    let mut total = 0.0;
    for _ in 0..config.eval_batches {
        let batch = dataset.batch(split, config.batch_size, config.seq_len, &mut rng);
        total += teacher_forced_loss(model, &batch, device)?;
    }
    Ok(total / config.eval_batches as f32)
}

fn write_metrics(run_dir: &Path, history: &[EvalRecord]) -> Result<()> {
    let lines: String = history
        .iter()
        .map(|record| serde_json::to_string(record).expect("plain numbers serialise") + "\n")
        .collect();
    checkpoint::write_atomically(&run_dir.join(METRICS_FILE), lines.as_bytes())
}

/// The evaluation records of a run directory (empty when there are none yet).
///
/// # Errors
/// [`Error::Io`] for a file that exists but cannot be read or parsed.
pub fn read_metrics(run_dir: &Path) -> Result<Vec<EvalRecord>> {
    let path = run_dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(Error::Io {
                path: path.display().to_string(),
                message: format!("cannot read: {err}"),
            });
        }
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|err| Error::Io {
                path: path.display().to_string(),
                message: format!("damaged line `{line}`: {err}"),
            })
        })
        .collect()
}
