//! The crate's error type: every failure a user can cause is one of these variants, with a
//! message that says what was wrong and what to do about it.

use thiserror::Error;

/// Errors returned by tinygpt's library API.
#[derive(Debug, Error, Clone, PartialEq)]
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

    /// A file that could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file or directory.
        path: String,
        /// What went wrong and what to do.
        message: String,
    },

    /// A checkpoint that is missing, truncated, from another format version or otherwise
    /// unusable.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: String,
        /// What is wrong with it.
        message: String,
    },

    /// A safetensors weight file that cannot be read or does not fit the model it is loaded
    /// into; the message names the first tensor that does not fit.
    #[error("weights {path}: {message}")]
    Weights {
        /// The weight file.
        path: String,
        /// What is wrong with it and what to do.
        message: String,
    },

    /// Training stopped because the loss stopped being a finite number.
    #[error(
        "training diverged at step {step}: the loss is {loss}; the last good checkpoint (step {last_good_step}) is kept; try a lower learning rate or stronger gradient clipping"
    )]
    Diverged {
        /// The step whose loss was not finite.
        step: usize,
        /// The loss value (NaN or infinite).
        loss: f32,
        /// The step of the checkpoint left on disk.
        last_good_step: usize,
    },

    /// Token ids or a token batch that the model cannot take.
    #[error("invalid tokens: {0}")]
    Tokens(String),
}

/// Shorthand for `Result<T, tinygpt::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
