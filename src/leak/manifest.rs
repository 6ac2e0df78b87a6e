//! What a demo run was started with, kept in its output directory as `run.json`: the model, the
//! training settings and the training text's SHA-256. Written (atomically) before the first
//! model trains, and replaced only by a run started afresh or with `force`; `resume` compares
//! what it is asked for with it and refuses every difference by name.
//!
//! | may change on resume                   | may not                                    |
//! |----------------------------------------|--------------------------------------------|
//! | more steps (the decay stays the run's) | the text, the model, every other training setting |
//! | which leaky twins are trained          |                                            |
//! | samples, their length and temperature  |                                            |
//!
//! A model directory whose checkpoint disagrees with the manifest was left by a run that
//! `force` replaced and a crash cut short; it is started afresh, not refused.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::write_json;
use crate::model::{GptConfig, MaskMode};
use crate::text::{TextDataset, TokenizerSpec};
use crate::train::checkpoint::SavedState;
use crate::train::{TrainConfig, continued, differences};

/// The manifest's file name in the output directory.
pub const MANIFEST_FILE: &str = "run.json";

/// Version of the manifest's layout.
const FORMAT_VERSION: u32 = 1;

/// The training text a run was started on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRecord {
    /// Where it came from (a path, or the bundled corpus).
    pub source: String,
    /// SHA-256 of its UTF-8 bytes ([`TextDataset::text_sha256`]).
    pub sha256: String,
    /// Its length in characters.
    pub characters: usize,
    /// The tokenizer built from it (runs from before tokenizers were a choice: `char`).
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
}

/// What a run was started with (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    /// Layout version of this file.
    pub format_version: u32,
    /// The causal model's config (every leaky twin's differs in its mask alone).
    pub model: GptConfig,
    /// The training settings every model shares.
    pub train: TrainConfig,
    /// The training text.
    pub data: DataRecord,
    /// The leaky twins the run has trained or is training beside the causal model.
    #[serde(default)]
    pub leaks: Vec<MaskMode>,
    /// Set while `force` removes the run this one replaces: a crash then leaves a manifest
    /// that says so, and the next call finishes the removal before it trusts any checkpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replacing: bool,
}

impl RunManifest {
    /// The manifest of a run of `model` trained with `train` on `dataset` (read from
    /// `source`, `characters` long).
    pub fn new(
        model: &GptConfig,
        train: &TrainConfig,
        leaks: &[MaskMode],
        dataset: &TextDataset,
        source: &str,
        characters: usize,
        tokenizer: TokenizerSpec,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            model: model.clone().with_mask_mode(MaskMode::Causal),
            train: train.clone(),
            data: DataRecord {
                source: source.to_string(),
                sha256: dataset.text_sha256().to_string(),
                characters,
                tokenizer,
            },
            leaks: leaks.to_vec(),
            replacing: false,
        }
    }

    /// The manifest in `out_dir`, if there is one.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a manifest that cannot be read.
    pub fn read(out_dir: &Path) -> Result<Option<Self>> {
        let path = out_dir.join(MANIFEST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::checkpoint_caused(&path, "cannot read", err)),
        };
        let manifest: Self = serde_json::from_str(&text)
            .map_err(|err| Error::checkpoint_caused(&path, "damaged or truncated JSON", err))?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(Error::checkpoint(
                &path,
                format!(
                    "written in format version {}, this build reads version {FORMAT_VERSION}",
                    manifest.format_version
                ),
            ));
        }
        Ok(Some(manifest))
    }

    /// The training settings of the run in `out_dir`: its manifest's, or, for a run written
    /// before manifests existed, its causal model's checkpoint's; `None` when there is no run.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for a manifest or checkpoint state that cannot be read.
    pub fn run_settings(out_dir: &Path) -> Result<Option<TrainConfig>> {
        if let Some(manifest) = Self::read(out_dir)? {
            return Ok(Some(manifest.train));
        }
        let causal = out_dir.join("causal");
        if !crate::train::checkpoint::exists(&causal) {
            return Ok(None);
        }
        Ok(crate::train::checkpoint::saved_state(&causal)?
            .state
            .train_config)
    }

    /// Write the manifest into `out_dir`, atomically.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be written.
    pub fn write(&self, out_dir: &Path) -> Result<()> {
        write_json(&out_dir.join(MANIFEST_FILE), self)
    }

    /// The manifest this run goes on with when `requested` resumes it: `requested`'s settings,
    /// with the run's own decay when more steps are asked for, and every leaky twin of either.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming every difference resume refuses (see the module docs).
    pub fn resume_with(&self, requested: &Self, out_dir: &Path) -> Result<Self> {
        let mut refused = Vec::new();
        if requested.data.sha256 != self.data.sha256 {
            let (now, then) = (requested.model.vocab_size, self.model.vocab_size);
            let characters = match now == then {
                true => String::new(),
                false => format!(" and its characters differ ({now} distinct now, {then} then)"),
            };
            refused.push(format!(
                "the training text differs from the run's{characters}: {} (sha256 {}) now, {} \
                 (sha256 {}) then",
                requested.data.source, requested.data.sha256, self.data.source, self.data.sha256
            ));
        }
        if requested.data.tokenizer != self.data.tokenizer {
            refused.push(format!(
                "the tokenizer differs from the run's: {} now, {} then",
                requested.data.tokenizer, self.data.tokenizer
            ));
        }
        // The vocabulary is the text's and the tokenizer's, said above; the rest is the
        // model's.
        let models = differences(&self.model, &requested.model, &["vocab_size"]);
        if !models.is_empty() {
            refused.push(format!(
                "model settings differ from the run's: {}",
                models.join("; ")
            ));
        }
        let train = continued(&self.train, &requested.train);
        if let Err(message) = &train {
            refused.push(message.clone());
        }
        match (refused.is_empty(), train) {
            (true, Ok(train)) => {
                let mut leaks = self.leaks.clone();
                leaks.extend(
                    requested
                        .leaks
                        .iter()
                        .filter(|mode| !self.leaks.contains(mode)),
                );
                Ok(Self {
                    train,
                    leaks,
                    replacing: false,
                    ..requested.clone()
                })
            }
            _ => Err(Error::checkpoint(
                out_dir.join(MANIFEST_FILE),
                format!("cannot resume: {}", refused.join("; ")),
            )),
        }
    }

    /// Whether a model's checkpoint belongs to this run: the same model (its mask aside), the
    /// same training settings (more steps aside) and the same text.
    pub fn owns(&self, saved: &SavedState) -> bool {
        let same_model = self.model == saved.config.clone().with_mask_mode(MaskMode::Causal);
        let same_training = saved
            .state
            .train_config
            .as_ref()
            .is_some_and(|then| continued(then, &self.train).is_ok());
        let same_text = saved
            .state
            .data_sha256
            .as_ref()
            .is_none_or(|sha| *sha == self.data.sha256);
        same_model && same_training && same_text
    }
}
