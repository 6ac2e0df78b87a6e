//! The training loop: AdamW with decoupled weight decay on the weight matrices only, linear
//! warmup then cosine decay, gradient clipping, periodic evaluation, atomic checkpoints and
//! exact resume.

use std::ops::ControlFlow;
use std::path::Path;
use std::time::Instant;

use burn::module::{Module, ParamGroup};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use serde::Serialize;

use super::adamw::FusedAdamW;
use super::checkpoint::{self, TrainState};
use super::clip::{ClipScope, clip_global_norm};
use super::config::TrainConfig;
use super::loss::{teacher_forced_loss, teacher_forced_loss_tensor};
use super::metrics::{EvalRecord, read_metrics, write_metrics};
use crate::error::{Error, Result};
use crate::fs::{DirLock, ensure_dir};
use crate::kernels::on_workers;
use crate::model::{Gpt, GptConfig};
use crate::text::{Batch, Split, TextDataset, step_rng};

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
    /// The run continues from its checkpoint (heard once, before the first step).
    Resumed {
        /// Steps the checkpoint had taken.
        step: usize,
        /// Steps in the whole run.
        total: usize,
    },
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

/// Train a model of `model_config` on `dataset`, writing checkpoints and metrics into
/// `run_dir`. With `resume`, training continues from the checkpoint in `run_dir` (same step
/// count, optimizer state and data order) instead of starting afresh.
///
/// `observer` hears every step and evaluation; returning [`ControlFlow::Break`] stops the run
/// there (a Ctrl-C handler does this): a checkpoint of the step reached is written unless the
/// step's evaluation just wrote one, so a resumed run continues from exactly there, and
/// [`TrainOutcome::steps`] says where it stopped.
///
/// The run directory is locked while training writes it: a second process gets
/// [`Error::Locked`].
///
/// # Errors
/// - [`Error::Config`] for settings that cannot work;
/// - [`Error::Checkpoint`] when resuming from a missing or mismatched checkpoint;
/// - [`Error::Diverged`] when the loss becomes NaN or infinite (the last good checkpoint stays);
/// - [`Error::Locked`] when another process is writing the run directory;
/// - [`Error::Io`] when the run directory cannot be written.
// Longer than the crate's other functions on purpose: one step's order (loss, divergence check,
// update, report, evaluate and checkpoint, stop) reads top to bottom in one place.
pub fn train(
    run_dir: &Path,
    model_config: &GptConfig,
    config: &TrainConfig,
    dataset: &TextDataset,
    device: &Device,
    resume: bool,
    observer: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> Result<TrainOutcome> {
    let train_device = device.clone().autodiff();
    let Start {
        mut model,
        mut optimizer,
        step: start,
        mut history,
        config,
        _lock,
    } = start(
        run_dir,
        model_config,
        config,
        dataset,
        &train_device,
        resume,
    )?;
    let config = &config;
    let run = Run {
        dir: run_dir,
        config,
        dataset,
        device,
    };
    if resume {
        let _ = observer(TrainEvent::Resumed {
            step: start,
            total: config.steps,
        });
    }

    let started = Instant::now();
    let mut throughput = Throughput::new(start, config.batch_size * config.seq_len);
    // A resumed run starts from a checkpoint; a fresh one has none until its first evaluation.
    let mut last_saved = (start > 0).then_some(start);
    let mut steps_taken = start;
    for step in start..config.steps {
        // The whole step on a rayon worker, so its parallel ops share work directly.
        let lr = config.learning_rate_at(step);
        let current = model;
        let (stepped, loss_value) = on_workers(|| -> Result<(Gpt, f32)> {
            let loss = teacher_forced_loss_tensor(&current, &run.batch(step), &train_device)?;
            let loss_value: f32 = loss.clone().into_scalar();
            if !loss_value.is_finite() {
                return Err(Error::Diverged {
                    step: step + 1,
                    loss: loss_value,
                    last_good_step: last_saved,
                });
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &current);
            if config.grad_clip_scope == ClipScope::Global {
                grads = clip_global_norm(grads, &current, config.grad_clip).0;
            }
            Ok((optimizer.step(lr, current, grads), loss_value))
        })?;
        model = stepped;

        let done = step + 1;
        steps_taken = done;
        let tokens_per_s = throughput.tokens_per_s(done);
        let mut flow = observer(TrainEvent::Step {
            step: done,
            total: config.steps,
            loss: loss_value,
            lr,
            tokens_per_s,
        });
        if done % config.eval_interval == 0 || done == config.steps {
            let inference = model.valid();
            let record = run.evaluate(&inference, done, lr, tokens_per_s)?;
            // Weights an update made infinite show here first: their losses are not numbers.
            // Such a checkpoint is never written; the last good one stays.
            if !(record.train_loss.is_finite() && record.val_loss.is_finite()) {
                return Err(Error::Diverged {
                    step: done,
                    loss: if record.val_loss.is_finite() {
                        record.train_loss
                    } else {
                        record.val_loss
                    },
                    last_good_step: last_saved,
                });
            }
            history.push(record);
            run.save(&inference, &optimizer, &history, done)?;
            last_saved = Some(done);
            flow = observer(TrainEvent::Eval(history.last().expect("just pushed")));
            throughput = Throughput::new(done, throughput.tokens_per_step);
        }
        if flow.is_break() {
            if last_saved != Some(done) {
                run.save(&model.valid(), &optimizer, &history, done)?;
            }
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

/// Training tokens per second since the last evaluation (evaluating is not training).
struct Throughput {
    since: Instant,
    from_step: usize,
    tokens_per_step: usize,
}

impl Throughput {
    fn new(from_step: usize, tokens_per_step: usize) -> Self {
        Self {
            since: Instant::now(),
            from_step,
            tokens_per_step,
        }
    }

    fn tokens_per_s(&self, step: usize) -> f64 {
        let elapsed = self.since.elapsed().as_secs_f64().max(1e-9);
        ((step - self.from_step) * self.tokens_per_step) as f64 / elapsed
    }
}

/// What stays fixed through one call of [`train`].
struct Run<'a> {
    dir: &'a Path,
    config: &'a TrainConfig,
    dataset: &'a TextDataset,
    /// The inference device (evaluation runs without autodiff).
    device: &'a Device,
}

impl Run<'_> {
    /// The training batch of `step`: a pure function of the seed and the step, so runs with
    /// the same seed see the same data and a resumed run continues the original order.
    fn batch(&self, step: usize) -> Batch {
        let config = self.config;
        let mut rng = step_rng(config.seed, step);
        self.dataset
            .batch(Split::Train, config.batch_size, config.seq_len, &mut rng)
    }

    /// Evaluate `model` after `step` steps.
    fn evaluate(&self, model: &Gpt, step: usize, lr: f64, tokens_per_s: f64) -> Result<EvalRecord> {
        let loss = |split| evaluate(model, self.dataset, split, self.config, self.device);
        let (train_loss, val_loss) = (loss(Split::Train)?, loss(Split::Validation)?);
        let bits = |loss: f32, split| self.dataset.bits_per_char(f64::from(loss), split);
        Ok(EvalRecord {
            step,
            train_loss,
            val_loss,
            lr,
            tokens_per_s,
            bits_per_char: Some([
                bits(train_loss, Split::Train),
                bits(val_loss, Split::Validation),
            ]),
        })
    }

    /// Write the metrics and a checkpoint after `step` steps.
    fn save(
        &self,
        model: &Gpt,
        optimizer: &ModuleOptimizer,
        history: &[EvalRecord],
        step: usize,
    ) -> Result<()> {
        write_metrics(self.dir, history)?;
        let state = TrainState::trained(step, self.config.clone())
            .with_data_sha256(self.dataset.text_sha256());
        checkpoint::save(
            self.dir,
            model,
            self.dataset.tokenizer(),
            &state,
            Some(optimizer),
        )
    }
}

/// Where a call of [`train`] starts: a fresh model, or the one in the run directory.
struct Start {
    model: Gpt,
    optimizer: ModuleOptimizer,
    step: usize,
    history: Vec<EvalRecord>,
    /// The settings the run goes on with (a resumed run keeps its own decay).
    config: TrainConfig,
    /// Held until training returns.
    _lock: DirLock,
}

/// Check every setting, create the run directory, and build or load what training starts from.
fn start(
    run_dir: &Path,
    model_config: &GptConfig,
    config: &TrainConfig,
    dataset: &TextDataset,
    train_device: &Device,
    resume: bool,
) -> Result<Start> {
    // The training settings first: they are what a user types (the window length sets the
    // context).
    config.validate(model_config)?;
    model_config.validate()?;
    crate::memory::check_fits(
        &format!(
            "training a model of {:.0} parameters (D={}, L={}) on batches of {} x {} tokens",
            crate::memory::parameters(model_config),
            model_config.d_model,
            model_config.n_layers,
            config.batch_size,
            config.seq_len
        ),
        crate::memory::training_bytes(model_config, config.batch_size, config.seq_len),
    )?;
    if model_config.vocab_size != dataset.tokenizer().vocab_size() {
        return Err(Error::Config(format!(
            "the model's vocab_size ({}) differs from the tokenizer's ({})",
            model_config.vocab_size,
            dataset.tokenizer().vocab_size()
        )));
    }
    ensure_dir(run_dir)?;
    let lock = DirLock::acquire(run_dir)?;
    if resume {
        return resume_from(run_dir, model_config, config, dataset, train_device, lock);
    }
    Ok(Start {
        model: model_config.init_seeded(config.seed, train_device)?,
        optimizer: new_optimizer(config),
        step: 0,
        history: Vec::new(),
        config: config.clone(),
        _lock: lock,
    })
}

/// The optimizer [`train`] uses: AdamW (β₂ = 0.99) over every parameter, with `config`'s
/// weight decay turned off for biases and LayerNorm scales and shifts (decaying those towards
/// zero only fights the normalisation). With [`ClipScope::PerTensor`] the optimizer clips
/// each gradient's norm at `config.grad_clip`; with [`ClipScope::Global`] the training loop
/// clips before the optimizer sees the gradients ([`clip_global_norm`]).
pub fn new_optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let per_tensor = (config.grad_clip_scope == ClipScope::PerTensor)
        .then_some(GradientClippingConfig::Norm(config.grad_clip));
    let mut optimizer = ModuleOptimizer::from(FusedAdamW::new(0.99, config.weight_decay as f32));
    if let Some(clip) = &per_tensor {
        optimizer = optimizer.with_grad_clipping(clip.init());
    }
    optimizer.with_group(
        ParamGroup::from_any_predicates(vec!["bias", "gamma", "beta"]),
        FusedAdamW::new(0.99, 0.0),
        per_tensor.map(|clip| clip.init()),
    )
}

fn resume_from(
    run_dir: &Path,
    model_config: &GptConfig,
    config: &TrainConfig,
    dataset: &TextDataset,
    device: &Device,
    lock: DirLock,
) -> Result<Start> {
    let saved = checkpoint::load(run_dir, device)?;
    let refuse = |what: String| Error::checkpoint(&saved.dir, format!("cannot resume: {what}"));
    if saved.tokenizer != *dataset.tokenizer() {
        return Err(refuse(format!(
            "the tokenizer differs from the run's ({} of {} tokens now, {} of {} then)",
            dataset.tokenizer().kind(),
            dataset.tokenizer().vocab_size(),
            saved.tokenizer.kind(),
            saved.tokenizer.vocab_size()
        )));
    }
    if let Some(then) = &saved.state.data_sha256
        && then != dataset.text_sha256()
    {
        return Err(refuse(format!(
            "the training text differs from the run's (sha256 {} now, {then} then)",
            dataset.text_sha256()
        )));
    }
    let changed = differences(saved.model.config(), model_config, &[]);
    if !changed.is_empty() {
        return Err(refuse(format!(
            "model settings differ from the run's: {}",
            changed.join("; ")
        )));
    }
    let Some(saved_config) = &saved.state.train_config else {
        return Err(Error::checkpoint(
            &saved.dir,
            "cannot resume: these weights were imported, not trained by tinygpt; start a new \
             run in another directory",
        ));
    };
    if saved.state.step > saved_config.steps {
        return Err(refuse(format!(
            "its state says step {} of a run of {} steps, which cannot be; the file is damaged",
            saved.state.step, saved_config.steps
        )));
    }
    let config = &continued(saved_config, config).map_err(refuse)?;
    let optimizer = checkpoint::load_optimizer(&saved, new_optimizer(config))?;
    let history = read_metrics(run_dir)?
        .into_iter()
        .filter(|record| record.step <= saved.state.step)
        .collect();
    Ok(Start {
        model: saved.model,
        optimizer,
        step: saved.state.step,
        history,
        config: config.clone(),
        _lock: lock,
    })
}

/// The settings a run started with `then` goes on with when resumed with `now`: `now`'s, which
/// must be the run's own but for more steps; a run given more steps keeps its own decay (the
/// learning rate stays at its minimum past the old last step) unless `now` names one.
///
/// # Errors
/// Every setting that differs, as `name X now, Y then`.
pub fn continued(
    then: &TrainConfig,
    now: &TrainConfig,
) -> std::result::Result<TrainConfig, String> {
    let mut continued = now.clone();
    if now.decay_steps.is_none() {
        continued.decay_steps = then
            .decay_steps
            .or((now.steps != then.steps).then_some(then.steps));
    }
    let mut changed = differences(then, &continued, &["steps", "decay_steps"]);
    if continued.decay_end() != then.decay_end() {
        changed.push(format!(
            "decay_steps {} now, {} then",
            continued.decay_end(),
            then.decay_end()
        ));
    }
    if now.steps < then.steps {
        changed.push(format!(
            "steps {} now, {} then (a run cannot be shortened)",
            now.steps, then.steps
        ));
    }
    match changed.is_empty() {
        true => Ok(continued),
        false => Err(format!(
            "training settings differ from the run's: {}",
            changed.join("; ")
        )),
    }
}

/// Each setting (a field of the JSON both serialise to) that differs between `then` and `now`,
/// as `name X now, Y then`, leaving out the names in `skip`.
pub(crate) fn differences<T: Serialize>(then: &T, now: &T, skip: &[&str]) -> Vec<String> {
    // Configs are structs of plain values, so they serialise to a JSON object.
    let fields = |value: &T| match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (then, now) = (fields(then), fields(now));
    now.iter()
        .filter(|(name, value)| !skip.contains(&name.as_str()) && then.get(*name) != Some(*value))
        .map(|(name, value)| {
            let before = then.get(name).map_or("unset".into(), ToString::to_string);
            format!("{name} {value} now, {before} then")
        })
        .collect()
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
