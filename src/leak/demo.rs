//! The mask-leak demonstration: train a causal model and leaky ones with the same seed, data
//! order and configuration, then measure each the way training sees it and the way generation
//! sees it.
//!
//! A leaky mask lets position `t` read tokens after `t`, including the very token it must
//! predict, so teacher-forced training loss drops below what any honest model can reach. At
//! generation time those future tokens do not exist yet: the shortcut the model learned is gone,
//! and its text falls apart. The report puts the numbers for both views side by side.

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::manifest::{MANIFEST_FILE, RunManifest};
use super::probe::{causality_probe, honest_loss};
use crate::error::{Error, Result};
use crate::fs::{DirLock, ensure_dir, remove_file_if_present, write_json};
use crate::generate::{DecodeMode, GenerationConfig, Generator, SamplingConfig};
use crate::model::{Gpt, GptConfig, MaskMode};
use crate::plot::{LossSeries, plot_losses};
use crate::text::{Batch, Split, TextDataset, TokenizerSpec, grammar, step_rng};
use crate::train::{EvalRecord, TrainConfig, TrainEvent, TrainOutcome, checkpoint, train};

/// What to train and how to measure it.
#[derive(Config, Debug)]
pub struct DemoConfig {
    /// Where the runs go: `out/causal`, `out/leak-<mode>`, and `out/summary.json`.
    pub out_dir: PathBuf,
    /// The model; its `vocab_size` and `mask_mode` are set per run.
    pub model: GptConfig,
    /// The training settings, identical for every model.
    pub train: TrainConfig,
    /// The tokenizer built from the text for every model.
    #[config(default = "TokenizerSpec::Char")]
    pub tokenizer: TokenizerSpec,
    /// The leaky modes to train beside the causal model (none: the causal model alone).
    #[config(default = "vec![MaskMode::Unmasked]")]
    pub leaks: Vec<MaskMode>,
    /// Generated samples per model.
    #[config(default = 20)]
    pub samples: usize,
    /// Tokens generated per sample (characters, with the character tokenizer).
    #[config(default = 200)]
    pub sample_chars: usize,
    /// Sampling temperature for the samples.
    #[config(default = 0.5)]
    pub temperature: f32,
    /// Validation windows used for the honest loss.
    #[config(default = 16)]
    pub honest_windows: usize,
    /// Continue each model from wherever its run stopped: finished, part-way (from its
    /// checkpoint) or not started.
    #[config(default = false)]
    pub resume: bool,
    /// Start afresh even where a run directory holds a checkpoint, replacing it. Without it
    /// (and without `resume`), such a directory is an error and nothing is trained.
    #[config(default = false)]
    pub force: bool,
    /// Score complete sentences with the toy grammar's recognizer (for the bundled corpus).
    #[config(default = true)]
    pub grammar_check: bool,
    /// Where the training text came from, for the run's manifest and its messages.
    #[config(default = "String::from(\"the bundled toy corpus\")")]
    pub data_source: String,
}

impl DemoConfig {
    /// Check every setting, the training and model settings included, before anything runs.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<()> {
        self.train.validate(&self.model)?;
        self.model.validate()?;
        self.sampling().validate()?;
        Error::require_at_least_one(&[
            ("samples", self.samples),
            ("sample_chars", self.sample_chars),
            ("honest_windows", self.honest_windows),
        ])?;
        // The causality probe changes one token and watches the ones before it.
        if self.train.seq_len < 2 {
            return Err(Error::Config(format!(
                "seq_len ({}) must be at least 2 for the causality probe",
                self.train.seq_len
            )));
        }
        Ok(())
    }

    /// The run directories of every model, the causal one first.
    pub fn run_dirs(&self) -> Vec<(MaskMode, PathBuf)> {
        std::iter::once(MaskMode::Causal)
            .chain(self.leaks.iter().copied().filter(|mode| mode.is_leaky()))
            .map(|mode| (mode, self.out_dir.join(run_name(mode))))
            .collect()
    }

    /// The sampling the demo's samples use.
    pub fn sampling(&self) -> SamplingConfig {
        SamplingConfig::new()
            .with_temperature(self.temperature)
            .with_seed(self.train.seed)
    }
}

/// One model's row of the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// `causal` or `leak-<mode>`: also its run directory's name.
    pub name: String,
    /// The mask it was trained with.
    pub mask_mode: MaskMode,
    /// Final teacher-forced loss on training windows.
    pub train_loss: f32,
    /// Final teacher-forced loss on validation windows.
    pub val_loss: f32,
    /// Loss predicting each validation token from the tokens before it only.
    pub honest_loss: f32,
    /// The three losses above in bits per character (training, validation, honest):
    /// comparable across tokenizers.
    #[serde(default)]
    pub bits_per_char: [f64; 3],
    /// Positions whose change moved earlier logits (0 for a causal model).
    pub causality_violations: usize,
    /// Positions the probe changed.
    pub positions_probed: usize,
    /// Share of generated words found in the training text's vocabulary (0..1).
    pub word_validity: f64,
    /// Share of complete generated sentences the grammar accepts (0..1); `None` without a
    /// grammar check or when no sentence was completed.
    pub sentence_validity: Option<f64>,
    /// Complete sentences generated (the denominator of `sentence_validity`).
    pub sentences: usize,
    /// One generated sample, prompt included.
    pub sample: String,
    /// The prompt the sample starts with.
    pub sample_prompt: String,
    /// Training steps.
    pub steps: usize,
    /// Wall-clock seconds of training.
    pub seconds: f64,
}

/// The report: one row per model and a plain-language verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DemoSummary {
    /// The causal model first, then the leaky ones.
    pub models: Vec<ModelReport>,
    /// Which model leaked and how the numbers show it.
    pub verdict: String,
}

/// File the summary is written to, in the output directory.
pub const SUMMARY_FILE: &str = "summary.json";

/// What [`run`] tells its observer, for each model by name.
#[derive(Clone, Debug)]
pub enum DemoEvent<'a> {
    /// The model is about to train (or resume, or be found finished).
    Training,
    /// One of the model's training events.
    Train(TrainEvent<'a>),
    /// The model is trained; its honest loss, causality probe and samples are being measured
    /// (heard before the measurements, and again with every sampled token: a chance to stop).
    Measuring,
}

/// The run directory's name for a model trained with `mode`.
pub fn run_name(mode: MaskMode) -> String {
    match mode {
        MaskMode::Causal => "causal".to_string(),
        leaky => format!("leak-{}", leaky.name()),
    }
}

/// Train the causal model and every leaky one on `text`, measure them, draw the loss chart and
/// write `summary.json`. `observer` hears each model's events and may stop the run at any of
/// them (see [`train`] for a stop during training); the run then ends with
/// [`Error::Interrupted`], and resuming completes it to what an uninterrupted run gives.
///
/// The output directory is one unit of work: every setting is checked and every run directory
/// looked at before anything trains, and it is locked while this writes it. What the run was
/// started with is kept in `run.json` ([`RunManifest`]), which `resume` holds it to; `force`
/// replaces the run whole (its manifest first, then its models and summary).
///
/// # Errors
/// [`Error::RunExists`] when a run directory holds a checkpoint and neither `resume` nor
/// `force` is set; [`Error::Checkpoint`] when `resume` finds no run, or settings other than
/// the run's; [`Error::Interrupted`] when the observer stopped the run; [`Error::Locked`] when
/// another process is writing the output directory; data, configuration, training and I/O
/// errors, each saying what went wrong.
pub fn run(
    text: &str,
    config: &DemoConfig,
    device: &Device,
    observer: &mut dyn FnMut(&str, DemoEvent) -> ControlFlow<()>,
) -> Result<DemoSummary> {
    config.validate()?;
    let dataset = TextDataset::with_spec(text, &config.tokenizer, config.train.seq_len)?;
    let model = GptConfig {
        vocab_size: dataset.tokenizer().vocab_size(),
        ..config.model.clone()
    };
    // Everything that can be known up front is checked before a file is touched.
    check_memory(config, &model)?;
    ensure_dir(&config.out_dir)?;
    let _lock = DirLock::acquire(&config.out_dir)?;
    let leaks: Vec<MaskMode> = config
        .run_dirs()
        .into_iter()
        .skip(1)
        .map(|(mode, _)| mode)
        .collect();
    let requested = RunManifest::new(
        &model,
        &config.train,
        &leaks,
        &dataset,
        &config.data_source,
        text.chars().count(),
        config.tokenizer,
    );
    let started = begin(config, requested)?;
    let manifest = &started.manifest;
    let known_words = words_of(text);

    let mut reports = Vec::new();
    let mut histories: Vec<(String, Vec<EvalRecord>)> = Vec::new();
    let modes = std::iter::once(MaskMode::Causal).chain(manifest.leaks.iter().copied());
    for mode in modes {
        let name = run_name(mode);
        let run_dir = config.out_dir.join(&name);
        let mut hear = |event: DemoEvent| observer(&name, event);
        let stopped = |step| Error::Interrupted {
            path: run_dir.clone(),
            step,
            steps: manifest.train.steps,
        };
        if hear(DemoEvent::Training).is_break() {
            return Err(stopped(checkpoint::saved_step(&run_dir).unwrap_or(0)));
        }
        let resume = resumes(config, started.owned.then_some(manifest), &run_dir)?;
        let outcome = train_model(
            manifest,
            mode,
            &dataset,
            &run_dir,
            device,
            resume,
            &mut |event| hear(DemoEvent::Train(event)),
        )?;
        if hear(DemoEvent::Measuring).is_break() {
            return Err(stopped(outcome.steps));
        }
        let measured = measure(
            &outcome.model,
            &dataset,
            config,
            &known_words,
            device,
            &mut || hear(DemoEvent::Measuring),
        )?
        .ok_or_else(|| stopped(outcome.steps))?;
        reports.push(report(&dataset, &name, mode, &outcome, measured));
        histories.push((name, outcome.history));
    }
    // A run from before manifests existed gets one once every model has accepted it.
    if !started.owned {
        manifest.write(&config.out_dir)?;
    }

    let series: Vec<LossSeries> = histories
        .iter()
        .map(|(name, records)| LossSeries { name, records })
        .collect();
    plot_losses(
        &config.out_dir.join("loss.png"),
        "causal vs leaky masks: teacher-forced loss",
        &series,
    )?;
    let summary = DemoSummary {
        verdict: verdict(&reports),
        models: reports,
    };
    write_json(&config.out_dir.join(SUMMARY_FILE), &summary)?;
    Ok(summary)
}

/// Refuse a run whose training or samples cannot fit in memory, naming the sizes.
fn check_memory(config: &DemoConfig, model: &GptConfig) -> Result<()> {
    let train = &config.train;
    crate::memory::check_fits(
        &format!(
            "training with d_model {}, n_layers {}, batch_size {} and seq_len {}",
            model.d_model, model.n_layers, train.batch_size, train.seq_len
        ),
        crate::memory::training_bytes(model, train.batch_size, train.seq_len),
    )?;
    let sample_bytes = crate::memory::forward_bytes(model, config.samples, train.seq_len)
        + (config.samples as f64) * (config.sample_chars as f64) * 8.0;
    crate::memory::check_fits(
        &format!(
            "drawing {} samples of sample_chars {}",
            config.samples, config.sample_chars
        ),
        sample_bytes,
    )
}

/// Where a run starts from (see [`begin`]).
struct Started {
    /// The manifest the run goes on with.
    manifest: RunManifest,
    /// Whether it is the run's own, written already: its models' checkpoints must agree with
    /// it. `false` for a run written before manifests existed, held to each checkpoint instead.
    owned: bool,
}

/// Start the run `requested` describes, as `config` says: resume it (held to the run's
/// manifest, or, for a run written before manifests existed, to each model's checkpoint),
/// replace it (`force`), or begin it.
///
/// # Errors
/// [`Error::RunExists`] or [`Error::OutputExists`] when a fresh run would replace what is
/// there; [`Error::Checkpoint`] when resume finds nothing to resume or other settings.
fn begin(config: &DemoConfig, mut requested: RunManifest) -> Result<Started> {
    let out = &config.out_dir;
    if config.resume {
        return match RunManifest::read(out)? {
            Some(mut run) => {
                if run.replacing {
                    // A replacement a crash cut short: what it was removing is not this run's.
                    remove_outputs(out)?;
                    run.replacing = false;
                }
                let manifest = run.resume_with(&requested, out)?;
                manifest.write(out)?;
                Ok(Started {
                    manifest,
                    owned: true,
                })
            }
            None if model_dirs(out).iter().any(|dir| checkpoint::exists(dir)) => Ok(Started {
                manifest: requested,
                owned: false,
            }),
            None => Err(Error::checkpoint(
                out,
                "nothing to resume here: no run.json and no model checkpoint; start the run \
                 without resume (or check the directory's name)",
            )),
        };
    }
    if config.force {
        // Replace the run whole, in an order a crash cannot mix: say so first, then remove.
        requested.replacing = true;
        requested.write(out)?;
        remove_outputs(out)?;
        requested.replacing = false;
    } else {
        refuse_to_overwrite(out)?;
    }
    requested.write(out)?;
    Ok(Started {
        manifest: requested,
        owned: true,
    })
}

/// Whether the model in `run_dir` resumes from its checkpoint. With a manifest of the run's
/// own, its checkpoint must agree with it; a model never started starts afresh.
///
/// # Errors
/// [`Error::Checkpoint`] for a checkpoint that is incomplete or not this run's.
fn resumes(config: &DemoConfig, manifest: Option<&RunManifest>, run_dir: &Path) -> Result<bool> {
    if !config.resume {
        return Ok(false);
    }
    if !checkpoint::exists(run_dir) {
        checkpoint::check_no_partial(run_dir)?;
        return Ok(false);
    }
    let Some(manifest) = manifest else {
        return Ok(true);
    };
    let saved = checkpoint::saved_state(run_dir)?;
    if !manifest.owns(&saved) {
        return Err(Error::checkpoint(
            run_dir.join("checkpoint"),
            "cannot resume: this checkpoint was not trained with the settings in run.json (was \
             it edited, or copied from another run?); start afresh with force",
        ));
    }
    Ok(true)
}

/// Every directory a model of a demo run can have in `out`, the causal one first.
fn model_dirs(out: &Path) -> Vec<PathBuf> {
    MaskMode::ALL
        .into_iter()
        .map(|mode| out.join(run_name(mode)))
        .collect()
}

/// The files a demo run writes directly in its output directory.
const RUN_FILES: [&str; 3] = [MANIFEST_FILE, SUMMARY_FILE, "loss.png"];

/// Remove what a demo run wrote in `out` (its models' checkpoints, metrics and charts, the
/// summary and chart), and nothing else: a file tinygpt does not write is left where it is, and
/// a model directory that holds one stays.
///
/// # Errors
/// [`Error::Io`] when something cannot be removed; [`Error::Checkpoint`] for a checkpoint
/// directory that holds a file tinygpt did not write (removing it would lose that file).
fn remove_outputs(out: &Path) -> Result<()> {
    for dir in model_dirs(out) {
        checkpoint::remove(&dir)?;
        for file in [crate::train::METRICS_FILE, "loss.png", crate::fs::LOCK_FILE] {
            remove_file_if_present(&dir.join(file))?;
        }
        // Only if empty: a file of the user's keeps its directory.
        let _ = std::fs::remove_dir(&dir);
    }
    for file in [SUMMARY_FILE, "loss.png"] {
        remove_file_if_present(&out.join(file))?;
    }
    Ok(())
}

/// Train (or resume, or find finished) the model of `mode` as the run's `manifest` says, in
/// `run_dir`, and draw its loss chart.
///
/// # Errors
/// [`Error::Interrupted`] when the observer stopped it; training and I/O errors.
fn train_model(
    manifest: &RunManifest,
    mode: MaskMode,
    dataset: &TextDataset,
    run_dir: &Path,
    device: &Device,
    resume: bool,
    observer: &mut dyn FnMut(TrainEvent) -> ControlFlow<()>,
) -> Result<TrainOutcome> {
    let model_config = manifest.model.clone().with_mask_mode(mode);
    let train_config = &manifest.train;
    let outcome = train(
        run_dir,
        &model_config,
        train_config,
        dataset,
        device,
        resume,
        observer,
    )?;
    if outcome.steps < train_config.steps {
        return Err(Error::Interrupted {
            path: run_dir.to_path_buf(),
            step: outcome.steps,
            steps: train_config.steps,
        });
    }
    let name = run_name(mode);
    plot_losses(
        &run_dir.join("loss.png"),
        &format!("{name}: loss"),
        &[LossSeries {
            name: &name,
            records: &outcome.history,
        }],
    )?;
    Ok(outcome)
}

/// [`Error::RunExists`] for the first model directory in `out` that holds a checkpoint, then
/// [`Error::OutputExists`] for any other file a fresh run would write.
fn refuse_to_overwrite(out: &Path) -> Result<()> {
    for run_dir in model_dirs(out) {
        if checkpoint::exists(&run_dir) {
            let step = checkpoint::saved_step(&run_dir).unwrap_or(0);
            return Err(Error::RunExists {
                path: run_dir,
                step,
            });
        }
    }
    let taken = model_dirs(out)
        .into_iter()
        .filter(|dir| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()))
        .chain(
            RUN_FILES
                .iter()
                .map(|file| out.join(file))
                .filter(|path| path.exists()),
        )
        .next();
    match taken {
        Some(path) => Err(Error::OutputExists { path }),
        None => Ok(()),
    }
}

/// One model's row of the report: its last evaluation and what [`measure`] found.
fn report(
    dataset: &TextDataset,
    name: &str,
    mode: MaskMode,
    outcome: &TrainOutcome,
    measured: Measurements,
) -> ModelReport {
    let (train_loss, val_loss) = outcome.history.last().map_or((f32::NAN, f32::NAN), |last| {
        (last.train_loss, last.val_loss)
    });
    let bits = |loss: f32, split| dataset.bits_per_char(f64::from(loss), split);
    ModelReport {
        name: name.to_string(),
        mask_mode: mode,
        train_loss,
        val_loss,
        honest_loss: measured.honest_loss,
        bits_per_char: [
            bits(train_loss, Split::Train),
            bits(val_loss, Split::Validation),
            bits(measured.honest_loss, Split::Validation),
        ],
        causality_violations: measured.causality_violations,
        positions_probed: measured.positions_probed,
        word_validity: measured.word_validity,
        sentence_validity: measured.sentence_validity,
        sentences: measured.sentences,
        sample: measured.sample,
        sample_prompt: measured.sample_prompt,
        steps: outcome.steps,
        seconds: outcome.seconds,
    }
}

/// What a trained model does when it must predict from the past only.
struct Measurements {
    honest_loss: f32,
    causality_violations: usize,
    positions_probed: usize,
    word_validity: f64,
    sentence_validity: Option<f64>,
    sentences: usize,
    sample: String,
    sample_prompt: String,
}

/// Honest loss, causality probe and generated samples of one trained model; `None` when
/// `keep_going` stopped the sampling.
fn measure(
    model: &Gpt,
    dataset: &TextDataset,
    config: &DemoConfig,
    known_words: &BTreeSet<String>,
    device: &Device,
    keep_going: &mut dyn FnMut() -> ControlFlow<()>,
) -> Result<Option<Measurements>> {
    let seq_len = config.train.seq_len;
    // The same validation windows for every model.
    let windows: Batch = dataset.batch(
        Split::Validation,
        config.honest_windows,
        seq_len,
        &mut step_rng(config.train.seed, usize::MAX),
    );
    let honest = honest_loss(model, &windows, device)?;
    let probe = causality_probe(model, &windows.inputs[..seq_len], device)?;

    let prompts = fixed_prompts(dataset, config.samples, 16.min(seq_len));
    // Naive decoding: every step recomputes the context, which is what the model computes
    // when it has to produce text, whatever its mask (a leaky model's cache would differ).
    let options = GenerationConfig::new(config.sample_chars)
        .with_sampling(config.sampling())
        .with_mode(DecodeMode::Naive);
    let generation =
        Generator::new(model, device).generate(&prompts, &options, &mut |_| keep_going())?;
    if generation.stopped {
        return Ok(None);
    }
    let generated = generation.tokens;
    let tokenizer = dataset.tokenizer();
    let texts: Vec<String> = generated.iter().map(|ids| tokenizer.decode(ids)).collect();

    let (mut words, mut valid_words, mut sentences, mut valid_sentences) = (0, 0, 0, 0);
    for text in &texts {
        let inner = inner_words(text);
        words += inner.len();
        valid_words += inner.iter().filter(|w| known_words.contains(**w)).count();
        if config.grammar_check {
            for sentence in grammar::complete_sentences(text) {
                sentences += 1;
                valid_sentences += usize::from(grammar::is_grammatical(&sentence));
            }
        }
    }
    Ok(Some(Measurements {
        honest_loss: honest,
        causality_violations: probe.violations,
        positions_probed: probe.positions_probed,
        word_validity: ratio(valid_words, words),
        sentence_validity: (sentences > 0).then(|| ratio(valid_sentences, sentences)),
        sentences,
        sample: tokenizer.decode(&prompts[0]) + &texts[0],
        sample_prompt: tokenizer.decode(&prompts[0]),
    }))
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// `count` prompts of `len` tokens from evenly spaced places in the validation text: fixed by
/// the data, the same for every model.
fn fixed_prompts(dataset: &TextDataset, count: usize, len: usize) -> Vec<Vec<usize>> {
    let ids = dataset.ids(Split::Validation);
    let stride = (ids.len() - len) / count.max(1);
    (0..count)
        .map(|i| ids[i * stride..i * stride + len].to_vec())
        .collect()
}

/// The words of generated text, without the first and the last: the first may finish a word
/// the prompt began, the last may be cut off by the length limit.
fn inner_words(text: &str) -> Vec<&str> {
    let words: Vec<&str> = words(text).collect();
    if words.len() <= 2 {
        Vec::new()
    } else {
        words[1..words.len() - 1].to_vec()
    }
}

fn words_of(text: &str) -> BTreeSet<String> {
    words(text).map(str::to_string).collect()
}

/// The words of `text`: runs of characters between whitespace and full stops.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c.is_whitespace() || c == '.')
        .filter(|w| !w.is_empty())
}

/// The plain-language verdict: which models leaked and what gave them away.
pub fn verdict(reports: &[ModelReport]) -> String {
    let Some(causal) = reports.iter().find(|r| !r.mask_mode.is_leaky()) else {
        return "no causal model to compare against".into();
    };
    let pct = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{:.0}%", 100.0 * v));
    let mut lines = Vec::new();
    for leaky in reports.iter().filter(|r| r.mask_mode.is_leaky()) {
        let lower = if leaky.train_loss < causal.train_loss {
            "LOWER"
        } else {
            "not lower"
        };
        // The probe is the direct evidence: without it (e.g. a text of one repeated character,
        // where changing a token is impossible) the numbers below say nothing about a leak.
        let leaked = if leaky.causality_violations > 0 {
            "leaked"
        } else {
            "showed no leak the probe could see"
        };
        // "but" when the honest loss gives the lower training loss away, as a leak's does.
        let connector = if leaky.honest_loss > causal.honest_loss {
            "but"
        } else {
            "and"
        };
        let sentences = match leaky.sentence_validity {
            Some(share) => format!("{} of its sentences are grammatical", pct(Some(share))),
            None => "none of its samples completed a sentence".into(),
        };
        let causal_sentences = match causal.sentence_validity {
            Some(share) => pct(Some(share)),
            None => "none completed".into(),
        };
        lines.push(format!(
            "{} {leaked}: its training loss is {lower} than the causal model's ({:.3} vs {:.3}), \
             {connector} predicting each token from the past only (honest loss) it scores {:.3} \
             vs {:.3}; the probe saw later tokens change earlier logits at {}/{} positions \
             (causal: {}/{}); {} of its generated words are real words (causal {}) and \
             {sentences} (causal {causal_sentences}).",
            leaky.name,
            leaky.train_loss,
            causal.train_loss,
            leaky.honest_loss,
            causal.honest_loss,
            leaky.causality_violations,
            leaky.positions_probed,
            causal.causality_violations,
            causal.positions_probed,
            pct(Some(leaky.word_validity)),
            pct(Some(causal.word_validity)),
        ));
    }
    if lines.is_empty() {
        format!(
            "only the causal model was trained: honest loss {:.3}, {} causality violations",
            causal.honest_loss, causal.causality_violations
        )
    } else {
        lines.join(" ")
    }
}
