//! The crate's error type: every failure a user can cause is one of these variants, with a
//! message that states what was wrong. Where a lower-level error caused it (the operating
//! system's, a parser's, Burn's store), that error is kept as the [`std::error::Error::source`],
//! so a binary can print the whole chain (`anyhow` does). Messages name library items, never a
//! command-line flag: the examples add those hints.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// A lower-level error kept as the cause of an [`Error`](enum@Error).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Errors returned by tinygpt's library API.
#[derive(Debug, Error)]
pub enum Error {
    /// A model, training or sampling configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A backend name that is unknown or whose cargo feature was not compiled in.
    #[error(
        "backend `{requested}` is not available in this build; compiled-in backends: {available}{hint}"
    )]
    UnknownBackend {
        /// The name that was asked for.
        requested: String,
        /// Comma-separated names of the backends this binary was built with.
        available: String,
        /// How to enable the backend, when it is a known one.
        hint: String,
    },

    /// A backend compiled into this build that cannot be used on this machine.
    #[error("backend `{name}` cannot be used here: {reason}")]
    BackendUnavailable {
        /// The backend's name.
        name: &'static str,
        /// Why, and what to do.
        reason: String,
    },

    /// A sequence longer than the model's context window was given to a full forward pass.
    #[error(
        "sequence of {len} tokens is longer than the model's context window of {max_seq_len}; \
         crop the input or use a model with a larger `max_seq_len`"
    )]
    SequenceTooLong {
        /// Tokens in the input.
        len: usize,
        /// The model's context window.
        max_seq_len: usize,
    },

    /// Appending to the KV cache would go past the context window.
    #[error(
        "KV cache is full: it holds {cached} of {capacity} positions and {new} more were given; \
         reset the cache or slide the window before decoding further"
    )]
    CacheFull {
        /// Positions already cached.
        cached: usize,
        /// New positions that were to be appended.
        new: usize,
        /// The cache's capacity (the model's `max_seq_len`).
        capacity: usize,
    },

    /// A KV cache used with a model or batch it was not built for.
    #[error("KV cache does not fit this call: {0}")]
    CacheMismatch(String),

    /// The backend failed to run or to return data.
    #[error("backend error: {0}")]
    Backend(String),

    /// Training text that cannot be used (missing, empty, not UTF-8, too short).
    #[error("{0}")]
    Data(String),

    /// Text with characters the tokenizer has never seen.
    #[error(
        "{} not in the model's vocabulary: {}; the vocabulary is {:?}",
        if chars.len() == 1 { "this character is" } else { "these characters are" },
        chars.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", "),
        vocabulary
    )]
    UnknownCharacters {
        /// The unknown characters, each once.
        chars: Vec<char>,
        /// Every character the tokenizer knows.
        vocabulary: String,
    },

    /// A file or directory that could not be read, written, created, moved or removed.
    #[error("{}: cannot {action}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. `write` or `create the directory`.
        action: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A chart that could not be drawn.
    #[error("{}: cannot draw the picture: {message}", path.display())]
    Picture {
        /// The PNG file.
        path: PathBuf,
        /// What the drawing library reported.
        message: String,
    },

    /// A checkpoint that is missing, truncated, from another format version or otherwise
    /// unusable.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The lower-level error behind it, if any.
        #[source]
        source: Option<Cause>,
    },

    /// A safetensors weight file that cannot be read or does not fit the model it is loaded
    /// into; the message names the first tensor that does not fit.
    #[error("weights {}: {message}", path.display())]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
        /// The lower-level error behind it, if any.
        #[source]
        source: Option<Cause>,
    },

    /// Training stopped because the loss stopped being a finite number.
    #[error(
        "training diverged at step {step}: the loss is {loss}; {}; try a lower learning rate or \
         stronger gradient clipping",
        match last_good_step {
            Some(kept) => format!("the last good checkpoint (step {kept}) is kept"),
            None => "no checkpoint had been written yet".to_string(),
        }
    )]
    Diverged {
        /// The step whose loss was not finite.
        step: usize,
        /// The loss value (NaN or infinite).
        loss: f32,
        /// The step of the checkpoint left on disk, if one was written.
        last_good_step: Option<usize>,
    },

    /// A run was stopped before it was done (for instance by Ctrl-C): during training, with a
    /// checkpoint of the step reached on disk, or while its trained model was measured. It can
    /// be resumed.
    #[error(
        "{}",
        if *step == 0 {
            format!("stopped before {} took its first step; nothing to keep yet", path.display())
        } else if step < steps {
            format!(
                "training of {} stopped at step {step} of {steps}; its checkpoint at step {step} \
                 is kept",
                path.display()
            )
        } else {
            format!(
                "{} is trained ({steps} steps, checkpoint kept); stopped while measuring it",
                path.display()
            )
        }
    )]
    Interrupted {
        /// The run directory.
        path: PathBuf,
        /// Steps taken.
        step: usize,
        /// Steps the run was to take.
        steps: usize,
    },

    /// Starting afresh would replace a run that already holds a checkpoint.
    #[error(
        "{} already holds a checkpoint (step {step}); starting afresh would replace it",
        path.display()
    )]
    RunExists {
        /// The run directory.
        path: PathBuf,
        /// The step of its checkpoint.
        step: usize,
    },

    /// Starting afresh would replace a file the run writes, which is there already.
    #[error("{} exists; starting afresh would replace it", path.display())]
    OutputExists {
        /// The file or directory.
        path: PathBuf,
    },

    /// A tensor whose shape cannot go where the code sends it (the failure gallery's shape
    /// faults end here instead of in a backend's panic).
    #[error("{stage}: got {got}, expected {expected}; likely cause: {cause}")]
    Shape {
        /// Where, e.g. `attention scores q · kᵀ`.
        stage: String,
        /// The shape (or shapes) that arrived.
        got: String,
        /// The shape that would work there.
        expected: String,
        /// The mistake that usually produces it.
        cause: String,
    },

    /// A directory another process is writing.
    #[error(
        "{} is being written by process {pid}; wait for it to finish (or, if no such process \
         runs any more, delete {})",
        path.display(),
        lock_file.display()
    )]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The process holding the lock.
        pid: u32,
        /// The lock file.
        lock_file: PathBuf,
    },

    /// A value that is not a finite number where one must be: a weight, or the logits a token
    /// would be chosen from.
    #[error("{what} is not finite (NaN or infinite): {detail}")]
    NotFinite {
        /// What holds the value, e.g. the tensor's name.
        what: String,
        /// Where, and what to do.
        detail: String,
    },

    /// Token ids or a token batch that the model cannot take.
    #[error("invalid tokens: {0}")]
    Tokens(String),
}

impl Error {
    /// [`Error::Config`] naming the first of `settings` (name, value) that is 0, when a count or
    /// size must be at least 1.
    pub(crate) fn require_at_least_one(settings: &[(&str, usize)]) -> Result<()> {
        match settings.iter().find(|(_, value)| *value == 0) {
            Some((name, _)) => Err(Error::Config(format!("{name} must be at least 1"))),
            None => Ok(()),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            action,
            source,
        }
    }

    /// An [`Error::Checkpoint`] for `path` with no lower-level cause.
    pub fn checkpoint(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Checkpoint`] for `path` caused by `source`.
    pub fn checkpoint_caused(
        path: impl AsRef<Path>,
        message: impl Into<String>,
        source: impl Into<Cause>,
    ) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An [`Error::Weights`] for `path` with no lower-level cause.
    pub fn weights(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Weights {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
            source: None,
        }
    }

    /// An [`Error::Weights`] for `path` caused by `source`.
    pub fn weights_caused(
        path: impl AsRef<Path>,
        message: impl Into<String>,
        source: impl Into<Cause>,
    ) -> Self {
        Error::Weights {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// Shorthand for `Result<T, tinygpt::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
