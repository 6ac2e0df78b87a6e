//! Saving and loading a trained model with everything needed to use it or resume training.
//!
//! A run directory holds one checkpoint directory, `checkpoint/`:
//!
//! | file             | contents                                                        |
//! |------------------|-----------------------------------------------------------------|
//! | `model.bpk`      | the weights, in Burn's burnpack store format                    |
//! | `optimizer.bpk`  | the optimizer's state (AdamW moments), for `--resume`           |
//! | `config.json`    | the [`GptConfig`]                                               |
//! | `tokenizer.json` | the [`Tokenizer`] (characters, or a Hugging Face BPE file)     |
//! | `state.json`     | format version, step count and training configuration           |
//!
//! # Atomic writes
//! A checkpoint is written in full into `checkpoint.tmp/`, then swapped in: the old
//! `checkpoint/` is renamed to `checkpoint.old/`, the new one renamed into place, and the old one
//! removed. An interrupted write therefore leaves either the previous checkpoint or the new one
//! (in `checkpoint/`, or in `checkpoint.old/` during the instant between the two renames, which
//! [`load`] falls back to), never a half-written one.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::clip::ClipScope;
use super::config::TrainConfig;
use crate::error::{Error, Result};
use crate::fs::{ensure_dir, remove_dir_if_present, rename, write_atomically, write_json};
use crate::model::{Gpt, GptConfig};
use crate::text::Tokenizer;

/// Version of the checkpoint layout; bumped whenever a file's meaning changes.
pub const FORMAT_VERSION: u32 = 1;

const CHECKPOINT_DIR: &str = "checkpoint";
const MODEL_FILE: &str = "model.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const CONFIG_FILE: &str = "config.json";
const TOKENIZER_FILE: &str = "tokenizer.json";
const STATE_FILE: &str = "state.json";

/// Training progress saved with a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// Optimizer steps taken so far.
    pub step: usize,
    /// The training configuration the run was started with; `None` for weights imported
    /// from elsewhere (see [`crate::weights`]), which cannot be resumed.
    pub train_config: Option<TrainConfig>,
    /// Where the weights came from when they were not trained by tinygpt, e.g.
    /// `nanoGPT safetensors ckpt.safetensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The SHA-256 of the training text ([`crate::text::TextDataset::text_sha256`]), so a run
    /// is never resumed on another text; absent in checkpoints written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_sha256: Option<String>,
}

impl TrainState {
    /// The state of a tinygpt run after `step` steps of training with `config`.
    pub fn trained(step: usize, config: TrainConfig) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            step,
            train_config: Some(config),
            origin: None,
            data_sha256: None,
        }
    }

    /// The same state, recording the training text's SHA-256.
    pub fn with_data_sha256(mut self, sha256: &str) -> Self {
        self.data_sha256 = Some(sha256.to_string());
        self
    }

    /// The state of weights imported from elsewhere (`origin` says where), which cannot be
    /// resumed.
    pub fn imported(origin: impl Into<String>) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            step: 0,
            train_config: None,
            origin: Some(origin.into()),
            data_sha256: None,
        }
    }
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The model with its trained weights, on the device it was loaded to.
    pub model: Gpt,
    /// The tokenizer it was trained with.
    pub tokenizer: Tokenizer,
    /// Where training stood.
    pub state: TrainState,
    /// The directory the files were read from.
    pub dir: PathBuf,
}

/// Write a checkpoint of `model` (and, for resuming, `optimizer`) into `run_dir/checkpoint/`,
/// atomically.
///
/// # Errors
/// [`Error::Io`] when a file cannot be written; the previous checkpoint is then left in place.
pub fn save(
    run_dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    state: &TrainState,
    optimizer: Option<&ModuleOptimizer>,
) -> Result<()> {
    let [final_dir, tmp_dir, old_dir] = checkpoint_dirs(run_dir);
    // The swap removes the old directories: first make sure they hold only checkpoint files.
    check_only_checkpoint_files(&[&final_dir, &tmp_dir, &old_dir])?;
    remove_dir_if_present(&tmp_dir)?;
    ensure_dir(&tmp_dir)?;
    if let Err(err) = write_files(&tmp_dir, model, tokenizer, state, optimizer) {
        // Best effort: a half-written directory (a full disk, say) would only confuse.
        let _ = remove_dir_if_present(&tmp_dir);
        return Err(err);
    }
    // Swap the finished directory in.
    remove_dir_if_present(&old_dir)?;
    if final_dir.exists() {
        rename(&final_dir, &old_dir)?;
    }
    rename(&tmp_dir, &final_dir)?;
    remove_dir_if_present(&old_dir)
}

/// The checkpoint directory of `run_dir`, its temporary one and the one it replaces.
fn checkpoint_dirs(run_dir: &Path) -> [PathBuf; 3] {
    [
        run_dir.join(CHECKPOINT_DIR),
        run_dir.join(format!("{CHECKPOINT_DIR}.tmp")),
        run_dir.join(format!("{CHECKPOINT_DIR}.old")),
    ]
}

/// The files a checkpoint directory holds (and the hidden temporary files of their atomic
/// writes, which a crash can leave).
const CHECKPOINT_FILES: [&str; 5] = [
    MODEL_FILE,
    OPTIMIZER_FILE,
    CONFIG_FILE,
    TOKENIZER_FILE,
    STATE_FILE,
];

/// Refuse when any of `dirs` holds a file a checkpoint does not: a save or a removal would
/// take it with the directory.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file.
fn check_only_checkpoint_files(dirs: &[&Path]) -> Result<()> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ours = CHECKPOINT_FILES.contains(&name.as_str()) || name.starts_with('.');
            if !ours || entry.path().is_dir() {
                return Err(Error::checkpoint(
                    entry.path(),
                    "is not a checkpoint file, and the checkpoint directory it is in gets \
                     replaced when a checkpoint is written; move it out first",
                ));
            }
        }
    }
    Ok(())
}

/// Remove the checkpoint of `run_dir` (with its temporary and replaced directories), when
/// they hold only checkpoint files.
///
/// # Errors
/// [`Error::Checkpoint`] for a file that is not a checkpoint's; [`Error::Io`] when a
/// directory cannot be removed.
pub fn remove(run_dir: &Path) -> Result<()> {
    let dirs = checkpoint_dirs(run_dir);
    check_only_checkpoint_files(&dirs.iter().map(PathBuf::as_path).collect::<Vec<_>>())?;
    dirs.iter().try_for_each(|dir| remove_dir_if_present(dir))
}

/// Refuse a checkpoint directory that holds files but no `state.json`: resuming cannot
/// continue it, and starting afresh would replace it unasked.
///
/// # Errors
/// [`Error::Checkpoint`] naming the directory.
pub fn check_no_partial(run_dir: &Path) -> Result<()> {
    let [dir, _, _] = checkpoint_dirs(run_dir);
    let holds_files = std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some());
    match holds_files {
        true => Err(Error::checkpoint(
            &dir,
            format!(
                "is incomplete: it has no {STATE_FILE}, so it cannot be resumed; restore the \
                 file, or start afresh with force (which replaces it)"
            ),
        )),
        false => Ok(()),
    }
}

/// Every file of a checkpoint, into `dir`.
fn write_files(
    dir: &Path,
    model: &Gpt,
    tokenizer: &Tokenizer,
    state: &TrainState,
    optimizer: Option<&ModuleOptimizer>,
) -> Result<()> {
    let model_path = dir.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|err| Error::checkpoint_caused(&model_path, "cannot write the weights", err))?;
    if let Some(optimizer) = optimizer {
        let path = dir.join(OPTIMIZER_FILE);
        optimizer.save(&path).map_err(|err| {
            Error::checkpoint_caused(&path, "cannot write the optimizer state", err)
        })?;
    }
    write_json(&dir.join(CONFIG_FILE), model.config())?;
    write_atomically(&dir.join(TOKENIZER_FILE), tokenizer.to_json().as_bytes())?;
    write_json(&dir.join(STATE_FILE), state)
}

/// Load a checkpoint. `path` may be a run directory (holding `checkpoint/`) or the checkpoint
/// directory itself.
///
/// # Errors
/// [`Error::Checkpoint`] when the directory or one of its files is missing, truncated, from
/// another format version, or does not match its config.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let dir = resolve_dir(path)?;
    let state = read_state(&dir.join(STATE_FILE))?;
    if state.format_version != FORMAT_VERSION {
        return Err(Error::checkpoint(
            &dir,
            format!(
                "written in format version {}, this build reads version {FORMAT_VERSION}; \
                 retrain the model with this version",
                state.format_version
            ),
        ));
    }
    let config = read_config(&dir.join(CONFIG_FILE))?;
    let tokenizer = read_tokenizer(&dir.join(TOKENIZER_FILE))?;
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(Error::checkpoint(
            &dir,
            format!(
                "the tokenizer has {} tokens but the model a vocabulary of {}; the files come \
                 from different runs",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let model_path = dir.join(MODEL_FILE);
    config
        .validate()
        .map_err(|err| Error::checkpoint_caused(dir.join(CONFIG_FILE), "unusable config", err))?;
    crate::memory::check_fits(
        &format!(
            "the model of {} (d_model {}, n_layers {}, max_seq_len {}, vocab_size {})",
            dir.join(CONFIG_FILE).display(),
            config.d_model,
            config.n_layers,
            config.max_seq_len,
            config.vocab_size
        ),
        crate::memory::model_bytes(&config),
    )?;
    let model = config
        .init(device)
        .map_err(|err| Error::checkpoint_caused(dir.join(CONFIG_FILE), "unusable config", err))?
        .try_load_file(&model_path)
        .map_err(|err| Error::checkpoint_caused(&model_path, "unreadable weights", err))?;
    Ok(Checkpoint {
        model,
        tokenizer,
        state,
        dir,
    })
}

/// Load the optimizer state saved beside a checkpoint into `optimizer`.
///
/// # Errors
/// [`Error::Checkpoint`] when the file is missing or unreadable.
pub fn load_optimizer(
    checkpoint: &Checkpoint,
    optimizer: ModuleOptimizer,
) -> Result<ModuleOptimizer> {
    let path = checkpoint.dir.join(OPTIMIZER_FILE);
    if !path.exists() {
        return Err(Error::checkpoint(
            &path,
            "missing: this checkpoint cannot resume training",
        ));
    }
    optimizer
        .load(&path)
        .map_err(|err| Error::checkpoint_caused(&path, "unreadable optimizer state", err))
}

/// Whether `run_dir` holds a checkpoint.
pub fn exists(run_dir: &Path) -> bool {
    resolve_dir(run_dir).is_ok()
}

/// The step of the checkpoint in `run_dir`, read from its `state.json` alone (no weights are
/// loaded).
///
/// # Errors
/// [`Error::Checkpoint`] when there is no readable checkpoint.
pub fn saved_step(run_dir: &Path) -> Result<usize> {
    Ok(saved_state(run_dir)?.state.step)
}

/// The state and model config of the checkpoint in `run_dir`, without its weights.
///
/// # Errors
/// [`Error::Checkpoint`] when there is no readable checkpoint.
pub fn saved_state(run_dir: &Path) -> Result<SavedState> {
    let dir = resolve_dir(run_dir)?;
    Ok(SavedState {
        state: read_state(&dir.join(STATE_FILE))?,
        config: read_config(&dir.join(CONFIG_FILE))?,
    })
}

/// What a checkpoint says of itself: its [`TrainState`] and [`GptConfig`].
#[derive(Clone, Debug)]
pub struct SavedState {
    /// Where training stood.
    pub state: TrainState,
    /// The model's configuration.
    pub config: GptConfig,
}

fn resolve_dir(path: &Path) -> Result<PathBuf> {
    let candidates = [
        path.join(CHECKPOINT_DIR),
        // Left behind only by a write interrupted between its two renames.
        path.join(format!("{CHECKPOINT_DIR}.old")),
        path.to_path_buf(),
    ];
    candidates
        .into_iter()
        .find(|dir| dir.join(STATE_FILE).is_file())
        .ok_or_else(|| {
            Error::checkpoint(
                path,
                "no checkpoint here (expected a run directory with checkpoint/state.json)",
            )
        })
}

/// A checkpoint's `state.json`. Runs written before 0.3 clipped each gradient on its own and
/// their files do not name a clip scope: they read as [`ClipScope::PerTensor`], so they resume
/// as they were trained (the field's default, global, is for new runs).
fn read_state(path: &Path) -> Result<TrainState> {
    let mut state: serde_json::Value = read_json(path)?;
    if let Some(config) = state
        .get_mut("train_config")
        .and_then(serde_json::Value::as_object_mut)
        && !config.contains_key("grad_clip_scope")
    {
        let per_tensor = serde_json::to_value(ClipScope::PerTensor).expect("a plain enum");
        config.insert("grad_clip_scope".into(), per_tensor);
    }
    serde_json::from_value(state)
        .map_err(|err| Error::checkpoint_caused(path, "unexpected contents", err))
}

fn read_config(path: &Path) -> Result<GptConfig> {
    let json = std::fs::read_to_string(path)
        .map_err(|err| Error::checkpoint_caused(path, "cannot read", err))?;
    GptConfig::from_json(&json)
        .map_err(|err| Error::checkpoint_caused(path, "damaged or truncated JSON", err))
}

fn read_tokenizer(path: &Path) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::checkpoint_caused(path, "cannot read", err))?;
    Tokenizer::from_json(&text)
        .map_err(|err| Error::checkpoint_caused(path, "not a tokenizer", err))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| Error::checkpoint_caused(path, "cannot read", err))?;
    serde_json::from_str(&text)
        .map_err(|err| Error::checkpoint_caused(path, "damaged or truncated JSON", err))
}
