//! The tokens each row of a batch currently sees, and how that window slides once a row
//! outgrows the model's context.
//!
//! # Past the context window
//! The model has learned positions `0..max_seq_len` only. When a row's window is full and one
//! more token must be fed, the generator slides it, as the [`WindowPolicy`] says:
//!
//! - `slide-half` (the default): keep the last `max_seq_len / 2` tokens, reset the cache and
//!   prefill them again at positions `0..max_seq_len / 2`. That happens once every
//!   `max_seq_len / 2` new tokens and costs one prefill of `max_seq_len / 2` tokens, so on
//!   average one extra forward position per new token, instead of the whole context per token
//!   that naive decoding pays.
//! - `crop` (nanoGPT's `generate`): every step past the window sees the last `max_seq_len`
//!   tokens at positions `0..max_seq_len`, so every step is a prefill of the whole window; the
//!   cache saves nothing there, but the model sees as much context as it can, and an imported
//!   nanoGPT model generates exactly what nanoGPT does.
//!
//! - `rolling` (models with rotary position embedding): nothing is recomputed; the cache
//!   rolls, every new position overwriting the oldest one's slot, at constant cost per token.
//!   Each token sees the last `max_seq_len` positions up to itself, which is sliding-window
//!   attention: naive decoding then runs the whole sequence with that band mask.
//!
//! Naive decoding slides at the same moments, so both modes see identical windows and agree.

use serde::{Deserialize, Serialize};

/// What generation does once a row's window is full (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WindowPolicy {
    /// Keep the last half of the window and prefill it again, once every half window.
    #[default]
    SlideHalf,
    /// Keep the last `max_seq_len` tokens at every step, recomputed (nanoGPT's behaviour).
    Crop,
    /// Roll the cache: the oldest position makes room for the newest, nothing recomputed
    /// (rotary position embedding only).
    Rolling,
}

impl WindowPolicy {
    /// Tokens a full window of `capacity` keeps when it slides; `None` for a rolling window,
    /// which never slides.
    pub fn keep(self, capacity: usize) -> Option<usize> {
        match self {
            Self::SlideHalf => Some(capacity / 2),
            Self::Crop => Some(capacity),
            Self::Rolling => None,
        }
    }
}

impl std::fmt::Display for WindowPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SlideHalf => "slide-half",
            Self::Crop => "crop",
            Self::Rolling => "rolling",
        })
    }
}

impl std::str::FromStr for WindowPolicy {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "slide-half" => Ok(Self::SlideHalf),
            "crop" => Ok(Self::Crop),
            "rolling" => Ok(Self::Rolling),
            other => Err(format!(
                "unknown window policy `{other}`: use `slide-half`, `crop` or `rolling`"
            )),
        }
    }
}

/// Each row's window of tokens, fed to the model left-padded to the longest row.
#[derive(Clone, Debug)]
pub(crate) struct Windows {
    rows: Vec<Vec<usize>>,
}

impl Windows {
    /// Every prompt as it stands, cropped to its last `crop` tokens when given.
    pub(crate) fn new(prompts: &[Vec<usize>], crop: Option<usize>) -> Self {
        let mut windows = Self {
            rows: prompts.to_vec(),
        };
        if let Some(capacity) = crop {
            windows.slide(capacity, capacity);
        }
        windows
    }

    /// Rows in the batch.
    pub(crate) fn batch(&self) -> usize {
        self.rows.len()
    }

    /// Length of the padded batch: the longest row.
    pub(crate) fn len(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The position the model gives each row's last token: its index in the row's window
    /// (padding does not count, see [`crate::model::Plan`]).
    pub(crate) fn last_positions(&self) -> Vec<usize> {
        self.rows.iter().map(|row| row.len() - 1).collect()
    }

    /// Leading padding of each row.
    pub(crate) fn padding(&self) -> Vec<usize> {
        let len = self.len();
        self.rows.iter().map(|row| len - row.len()).collect()
    }

    /// All rows, left-padded (with id 0, never attended to), row-major `[B, len]`.
    pub(crate) fn padded(&self) -> Vec<usize> {
        let len = self.len();
        self.rows
            .iter()
            .flat_map(|row| std::iter::repeat_n(0, len - row.len()).chain(row.iter().copied()))
            .collect()
    }

    /// Append one token to every row.
    pub(crate) fn push(&mut self, next: &[usize]) {
        for (row, &id) in self.rows.iter_mut().zip(next) {
            row.push(id);
        }
    }

    /// Shorten every row longer than `capacity` to its last `keep` tokens; whether any was.
    pub(crate) fn slide(&mut self, capacity: usize, keep: usize) -> bool {
        let mut slid = false;
        for row in self.rows.iter_mut().filter(|row| row.len() > capacity) {
            row.drain(..row.len() - keep);
            slid = true;
        }
        slid
    }
}
