//! Training text: loading it with clear errors, splitting it 90/10, and cutting random windows
//! into batches from a seeded RNG.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tokenizer::{Tokenizer, TokenizerSpec};
use crate::error::{Error, Result};

/// The toy corpus shipped in `data/corpus.txt` (see `data/README.md`), built into the binary so
/// the examples work from any directory.
pub const BUNDLED_CORPUS: &str = include_str!("../../data/corpus.txt");

/// Share of the tokens used for training; the rest (the end of the text) is validation.
pub const TRAIN_FRACTION: f64 = 0.9;

/// Read a UTF-8 text file for training.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read (the operating system's error is the source);
/// [`Error::Data`] when it is not valid UTF-8 (with the byte offset of the first bad byte) or
/// is empty.
pub fn read_text(path: &Path) -> Result<String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|err| Error::io(path, "read the text", err))?;
    let text = String::from_utf8(bytes).map_err(|err| {
        Error::Data(format!(
            "{shown}: not UTF-8 text (invalid byte at offset {}); convert it to UTF-8 first",
            err.utf8_error().valid_up_to()
        ))
    })?;
    if text.is_empty() {
        return Err(Error::Data(format!("{shown}: the file is empty")));
    }
    Ok(text)
}

/// Which part of the text a batch is drawn from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The first 90%.
    Train,
    /// The last 10%.
    Validation,
}

/// A batch of windows: `inputs[b][t]` is followed in the text by `targets[b][t]`.
///
/// # Shapes
/// - inputs, targets: `batch_size · seq_len` ids, row-major `[B, T]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Token ids fed to the model.
    pub inputs: Vec<usize>,
    /// The id that follows each input position.
    pub targets: Vec<usize>,
    /// Rows, `B`.
    pub batch_size: usize,
    /// Columns, `T`.
    pub seq_len: usize,
}

/// A tokenized text split into training and validation ids.
#[derive(Clone, Debug)]
pub struct TextDataset {
    tokenizer: Tokenizer,
    train: Vec<usize>,
    validation: Vec<usize>,
    /// Characters per token of each split (1 for the character tokenizer): what turns a loss
    /// in nats per token into bits per character.
    chars_per_token: [f64; 2],
    sha256: String,
}

impl TextDataset {
    /// Tokenize `text` with a tokenizer built from it and split it 90/10.
    ///
    /// # Errors
    /// [`Error::Data`] for empty text, or when either split is too short to hold one window of
    /// `seq_len + 1` tokens.
    pub fn new(text: &str, seq_len: usize) -> Result<Self> {
        Self::with_spec(text, &TokenizerSpec::Char, seq_len)
    }

    /// Tokenize `text` with a tokenizer of `spec` built from it (a BPE is trained on the whole
    /// text) and split it 90/10.
    ///
    /// # Errors
    /// The errors of [`TokenizerSpec::build`] and of [`TextDataset::new`].
    pub fn with_spec(text: &str, spec: &TokenizerSpec, seq_len: usize) -> Result<Self> {
        Self::with_tokenizer(text, spec.build(text)?, seq_len)
    }

    /// Tokenize `text` with an existing tokenizer (for instance one saved with a checkpoint)
    /// and split it 90/10.
    ///
    /// # Errors
    /// [`Error::UnknownCharacters`] when `text` has characters the tokenizer lacks, and the
    /// errors of [`TextDataset::new`].
    pub fn with_tokenizer(text: &str, tokenizer: Tokenizer, seq_len: usize) -> Result<Self> {
        let ids = tokenizer.encode(text)?;
        let split = (ids.len() as f64 * TRAIN_FRACTION).round() as usize;
        let (train, validation) = ids.split_at(split);
        let window = seq_len + 1;
        for (name, part) in [("training", train), ("validation", validation)] {
            if part.len() < window {
                let unit = if tokenizer.kind() == "char" {
                    "characters"
                } else {
                    "tokens"
                };
                return Err(Error::Data(format!(
                    "the text has {} {unit}, so its {name} split ({} {unit}) is shorter than \
                     one window of {window} (context {seq_len} + 1); use a longer text (at \
                     least {} {unit}) or a shorter context",
                    ids.len(),
                    part.len(),
                    (window as f64 / (1.0 - TRAIN_FRACTION)).ceil() as usize
                )));
            }
        }
        let per_token = |ids: &[usize]| tokenizer.chars_in(ids) as f64 / ids.len() as f64;
        Ok(Self {
            chars_per_token: [per_token(train), per_token(validation)],
            tokenizer,
            train: train.to_vec(),
            validation: validation.to_vec(),
            sha256: sha256_hex(text.as_bytes()),
        })
    }

    /// The SHA-256 of the text's UTF-8 bytes, in hex: what `sha256sum` prints for the file it
    /// was read from. A checkpoint keeps it, so a run is never resumed on another text.
    pub fn text_sha256(&self) -> &str {
        &self.sha256
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Characters per token of `split`'s text (1 with the character tokenizer).
    pub fn chars_per_token(&self, split: Split) -> f64 {
        self.chars_per_token[split as usize]
    }

    /// A mean loss on `split` in nats per token, as bits per character: comparable across
    /// tokenizers (a BPE token carries several characters, so its loss per token is higher
    /// for the same model quality).
    pub fn bits_per_char(&self, nats_per_token: f64, split: Split) -> f64 {
        nats_per_token / std::f64::consts::LN_2 / self.chars_per_token(split)
    }

    /// The ids of one split.
    pub fn ids(&self, split: Split) -> &[usize] {
        match split {
            Split::Train => &self.train,
            Split::Validation => &self.validation,
        }
    }

    /// `batch_size` windows of `seq_len + 1` tokens at random offsets of `split`.
    ///
    /// # Panics
    /// If the split is shorter than one window (the constructors rule this out for the
    /// `seq_len` they were given).
    pub fn batch(
        &self,
        split: Split,
        batch_size: usize,
        seq_len: usize,
        rng: &mut impl Rng,
    ) -> Batch {
        let ids = self.ids(split);
        let last_start = ids.len() - (seq_len + 1);
        let mut batch = Batch {
            inputs: Vec::with_capacity(batch_size * seq_len),
            targets: Vec::with_capacity(batch_size * seq_len),
            batch_size,
            seq_len,
        };
        for _ in 0..batch_size {
            let start = rng.random_range(0..=last_start);
            batch.inputs.extend_from_slice(&ids[start..start + seq_len]);
            batch
                .targets
                .extend_from_slice(&ids[start + 1..start + seq_len + 1]);
        }
        batch
    }
}

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The RNG that draws the batches of training step `step`. Deriving it from `(seed, step)`
/// rather than carrying one RNG along makes the data order a pure function of the seed, so two
/// models trained with the same seed see the same batches, and a resumed run continues the
/// original order exactly.
pub fn step_rng(seed: u64, step: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(step as u64);
    rng
}
