//! The evaluation log of a run, `metrics.jsonl`: one JSON object per evaluation, rewritten
//! atomically after each so a resumed run can pick up the history.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fs::write_atomically;

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
    /// The two losses in bits per character (training, validation), comparable across
    /// tokenizers; absent in records written before tokenizers were a choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_char: Option<[f64; 2]>,
}

/// File of evaluation records in a run directory, one JSON object per line.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Write `history` to the run directory's [`METRICS_FILE`], atomically.
///
/// # Errors
/// [`Error::Io`] when it cannot be written.
pub fn write_metrics(run_dir: &Path, history: &[EvalRecord]) -> Result<()> {
    let lines: String = history
        .iter()
        .map(|record| serde_json::to_string(record).expect("plain numbers serialise") + "\n")
        .collect();
    write_atomically(&run_dir.join(METRICS_FILE), lines.as_bytes())
}

/// The evaluation records of a run directory (empty when there are none yet).
///
/// # Errors
/// [`Error::Io`] for a file that exists but cannot be read, [`Error::Checkpoint`] for one with
/// a damaged line.
pub fn read_metrics(run_dir: &Path) -> Result<Vec<EvalRecord>> {
    let path = run_dir.join(METRICS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::io(&path, "read", err)),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|err| {
                Error::checkpoint_caused(&path, format!("damaged line `{line}`"), err)
            })
        })
        .collect()
}
