//! The training settings: steps, batch, learning-rate schedule, regularisation, evaluation.

use burn::config::Config;

use super::clip::ClipScope;
use crate::error::{Error, Result};
use crate::model::GptConfig;

/// How to train; saved in every checkpoint's `state.json`, so a resumed run continues with
/// the settings it was started with.
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Optimizer steps in the whole run.
    #[config(default = 500)]
    pub steps: usize,
    /// Windows per batch, `B`.
    #[config(default = 32)]
    pub batch_size: usize,
    /// Tokens per window, `T` (at most the model's `max_seq_len`).
    #[config(default = 64)]
    pub seq_len: usize,
    /// Peak learning rate, reached at the end of warmup.
    #[config(default = 3e-3)]
    pub learning_rate: f64,
    /// Learning rate at the end of the cosine decay.
    #[config(default = 3e-4)]
    pub min_learning_rate: f64,
    /// Steps of linear warmup from 0 to the peak.
    #[config(default = 50)]
    pub warmup_steps: usize,
    /// The step at which the cosine decay reaches `min_learning_rate` (nanoGPT's
    /// `lr_decay_iters`); the rate stays there after it. `None`, the default, means `steps`. A
    /// run resumed with more steps keeps the decay it was started with.
    #[config(default = "None")]
    pub decay_steps: Option<usize>,
    /// AdamW's decoupled weight decay, applied to weight matrices and embeddings only.
    #[config(default = 0.1)]
    pub weight_decay: f64,
    /// Gradients are rescaled to at most this L2 norm (see `grad_clip_scope`).
    #[config(default = 1.0)]
    pub grad_clip: f32,
    /// Which norm `grad_clip` bounds: all gradients together (the default, as nanoGPT and
    /// PyTorch's `clip_grad_norm_`) or each tensor on its own (Burn's clipping, and tinygpt's
    /// before 0.3: checkpoints written then say nothing and resume with `per-tensor`).
    #[config(default = "ClipScope::Global")]
    pub grad_clip_scope: ClipScope,
    /// Evaluate, log and checkpoint every this many steps (and at the last step).
    #[config(default = 100)]
    pub eval_interval: usize,
    /// Batches averaged for each evaluation estimate.
    #[config(default = 8)]
    pub eval_batches: usize,
    /// Seeds the initial weights and the data order.
    #[config(default = 1337)]
    pub seed: u64,
}

impl TrainConfig {
    /// The step the cosine decay ends at: `decay_steps`, or the last step.
    pub fn decay_end(&self) -> usize {
        self.decay_steps.unwrap_or(self.steps)
    }

    /// The learning rate for `step` (0-based): linear warmup to `learning_rate`, then cosine
    /// decay to `min_learning_rate` at [`TrainConfig::decay_end`], constant after it.
    pub fn learning_rate_at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.learning_rate * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.decay_end().saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.min_learning_rate + cosine * (self.learning_rate - self.min_learning_rate)
    }

    /// Check the settings against the model they will train.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting that cannot work.
    pub fn validate(&self, model: &GptConfig) -> Result<()> {
        Error::require_at_least_one(&[
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("seq_len", self.seq_len),
            ("eval_interval", self.eval_interval),
            ("eval_batches", self.eval_batches),
        ])?;
        if self.seq_len > model.max_seq_len {
            return Err(Error::Config(format!(
                "seq_len ({}) is longer than the model's context window max_seq_len ({})",
                self.seq_len, model.max_seq_len
            )));
        }
        check_learning_rates(self.learning_rate, self.min_learning_rate)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Config(format!(
                "weight_decay ({}) must be a finite number, 0 or more",
                self.weight_decay
            )));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip > 0.0) {
            return Err(Error::Config(format!(
                "grad_clip ({}) must be a positive finite norm",
                self.grad_clip
            )));
        }
        if self.warmup_steps > self.steps {
            return Err(Error::Config(format!(
                "warmup_steps ({}) is more than steps ({}): the learning rate would never reach \
                 its peak",
                self.warmup_steps, self.steps
            )));
        }
        if self.decay_steps == Some(0) {
            return Err(Error::Config("decay_steps must be at least 1".into()));
        }
        Ok(())
    }
}

/// Learning rates the optimiser can use: finite and positive (the minimum may be 0), no more
/// than the peak, and within what an `f32` weight update can carry (a rate past `f32::MAX`
/// turns every update infinite; one below the smallest normal `f32` rounds the update away).
fn check_learning_rates(peak: f64, minimum: f64) -> Result<()> {
    if !(peak.is_finite() && peak > 0.0) {
        return Err(Error::Config(format!(
            "learning rates must be positive, finite numbers: learning_rate is {peak}"
        )));
    }
    if peak > f64::from(f32::MAX) || peak < f64::from(f32::MIN_POSITIVE) {
        return Err(Error::Config(format!(
            "learning_rate ({peak:e}) is outside what an f32 weight update can use ({:e} to \
             {:e}); the usual range is 1e-5 to 1e-2",
            f32::MIN_POSITIVE,
            f32::MAX
        )));
    }
    if minimum > 0.0 && minimum < f64::from(f32::MIN_POSITIVE) {
        return Err(Error::Config(format!(
            "min_learning_rate ({minimum:e}) is below what an f32 weight update can use ({:e}); \
             raise learning_rate or min_learning_rate",
            f32::MIN_POSITIVE
        )));
    }
    if !(minimum.is_finite() && (0.0..=peak).contains(&minimum)) {
        return Err(Error::Config(format!(
            "learning rates must be positive, finite numbers: min_learning_rate ({minimum}) \
             must be from 0 to learning_rate ({peak})"
        )));
    }
    Ok(())
}
