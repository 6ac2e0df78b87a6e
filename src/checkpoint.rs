//! Saving and loading a trained model with everything needed to use it or resume training.
//!
//! A run directory holds one checkpoint directory, `checkpoint/`:
//!
//! | file             | contents                                                        |
//! |------------------|-----------------------------------------------------------------|
//! | `model.bpk`      | the weights, in Burn's burnpack store format                    |
//! | `optimizer.bpk`  | the optimizer's state (AdamW moments), for `--resume`           |
//! | `config.json`    | the [`GptConfig`]                                               |
//! | `tokenizer.json` | the [`CharTokenizer`]                                           |
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

use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig};
use crate::tokenizer::CharTokenizer;
use crate::train::TrainConfig;

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
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// The model with its trained weights, on the device it was loaded to.
    pub model: Gpt,
    /// The tokenizer it was trained with.
    pub tokenizer: CharTokenizer,
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
    tokenizer: &CharTokenizer,
    state: &TrainState,
    optimizer: Option<&ModuleOptimizer>,
) -> Result<()> {
    let final_dir = run_dir.join(CHECKPOINT_DIR);
    let tmp_dir = run_dir.join(format!("{CHECKPOINT_DIR}.tmp"));
    let old_dir = run_dir.join(format!("{CHECKPOINT_DIR}.old"));
    remove_dir_if_present(&tmp_dir)?;
    ensure_dir(&tmp_dir)?;

    let io = |path: &Path, err: &dyn std::fmt::Display| Error::Io {
        path: path.display().to_string(),
        message: format!("cannot write the checkpoint: {err}"),
    };
    let model_path = tmp_dir.join(MODEL_FILE);
    model
        .clone()
        .save_file(&model_path)
        .map_err(|err| io(&model_path, &err))?;
    if let Some(optimizer) = optimizer {
        let path = tmp_dir.join(OPTIMIZER_FILE);
        optimizer.save(&path).map_err(|err| io(&path, &err))?;
    }
    write_json(&tmp_dir.join(CONFIG_FILE), model.config())?;
    write_json(&tmp_dir.join(TOKENIZER_FILE), tokenizer)?;
    write_json(&tmp_dir.join(STATE_FILE), state)?;

    // Swap the finished directory in.
    remove_dir_if_present(&old_dir)?;
    if final_dir.exists() {
        rename(&final_dir, &old_dir)?;
    }
    rename(&tmp_dir, &final_dir)?;
    remove_dir_if_present(&old_dir)
}

/// Load a checkpoint. `path` may be a run directory (holding `checkpoint/`) or the checkpoint
/// directory itself.
///
/// # Errors
/// [`Error::Checkpoint`] when the directory or one of its files is missing, truncated, from
/// another format version, or does not match its config.
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let dir = resolve_dir(path)?;
    let state: TrainState = read_json(&dir.join(STATE_FILE))?;
    if state.format_version != FORMAT_VERSION {
        return Err(Error::Checkpoint {
            path: dir.display().to_string(),
            message: format!(
                "written in format version {}, this build reads version {FORMAT_VERSION}; \
                 retrain the model with this version",
                state.format_version
            ),
        });
    }
    let config: GptConfig = read_json(&dir.join(CONFIG_FILE))?;
    let tokenizer: CharTokenizer = read_json(&dir.join(TOKENIZER_FILE))?;
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(Error::Checkpoint {
            path: dir.display().to_string(),
            message: format!(
                "the tokenizer has {} characters but the model a vocabulary of {}; the files \
                 come from different runs",
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        });
    }
    let model_path = dir.join(MODEL_FILE);
    let model = config
        .init(device)
        .map_err(|err| checkpoint_error(&dir.join(CONFIG_FILE), &err))?
        .try_load_file(&model_path)
        .map_err(|err| checkpoint_error(&model_path, &format!("unreadable weights ({err})")))?;
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
        return Err(checkpoint_error(
            &path,
            &"missing: this checkpoint cannot resume training",
        ));
    }
    optimizer
        .load(&path)
        .map_err(|err| checkpoint_error(&path, &format!("unreadable optimizer state ({err})")))
}

/// Whether `run_dir` holds a checkpoint.
pub fn exists(run_dir: &Path) -> bool {
    resolve_dir(run_dir).is_ok()
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
        .ok_or_else(|| Error::Checkpoint {
            path: path.display().to_string(),
            message: "no checkpoint here (expected a run directory with checkpoint/state.json); \
                      create one with `cargo run --release --example train`"
                .into(),
        })
}

fn checkpoint_error(path: &Path, message: &dyn std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|err| Error::Io {
        path: path.display().to_string(),
        message: format!("cannot serialise: {err}"),
    })?;
    std::fs::write(path, text + "\n").map_err(|err| Error::Io {
        path: path.display().to_string(),
        message: format!("cannot write: {err}"),
    })
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| checkpoint_error(path, &format!("cannot read: {err}")))?;
    serde_json::from_str(&text)
        .map_err(|err| checkpoint_error(path, &format!("damaged or truncated JSON ({err})")))
}

/// Write `contents` to `path` through a temporary file in the same directory and a rename, so
/// readers see the old file or the new one, never a partial one.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(|err| Error::Io {
        path: tmp.display().to_string(),
        message: format!("cannot write: {err}"),
    })?;
    rename(&tmp, path)
}

/// Create `path` and its parents.
///
/// # Errors
/// [`Error::Io`] when it cannot be created.
pub fn ensure_dir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|err| Error::Io {
        path: path.display().to_string(),
        message: format!("cannot create the directory: {err}"),
    })
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|err| Error::Io {
        path: to.display().to_string(),
        message: format!("cannot move {} here: {err}", from.display()),
    })
}

fn remove_dir_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.display().to_string(),
            message: format!("cannot remove the stale directory: {err}"),
        }),
        _ => Ok(()),
    }
}
