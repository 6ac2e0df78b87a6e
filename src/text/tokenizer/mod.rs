//! Tokenizers: text to token ids and back, one interface over three kinds.
//!
//! | kind   | file      | tokens                                                       | built from                     |
//! |--------|-----------|--------------------------------------------------------------|--------------------------------|
//! | `char` | `char.rs` | one per distinct character of the training text              | the text (the default)         |
//! | `bpe`  | `bpe.rs`  | byte-level BPE: the 256 bytes, then merges of frequent pairs | the text, `--vocab-size N`     |
//! | `gpt2` | `gpt2.rs` | GPT-2's own byte-level BPE (`r50k_base`, 50,257 tokens)      | nothing: the ranks ship inside |
//!
//! Every token stands for a string of bytes ([`Tokenizer::token_bytes`]); a text is the
//! concatenation of its tokens' bytes. With the byte-level kinds a token may end inside a
//! character, so generation prints through a [`Utf8Stream`] (`stream.rs`), which waits for the
//! rest of the character. The tokenizer is saved beside a checkpoint as `tokenizer.json`:
//! tinygpt's `{"chars": [...]}` for `char`, the standard Hugging Face file for `bpe`, and a
//! one-line marker for `gpt2` (its ranks are the crate's).

mod bpe;
mod char;
mod gpt2;
mod stream;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use bpe::{BYTE_TOKENS, BpeTokenizer};
pub use char::CharTokenizer;
pub use gpt2::{END_OF_TEXT, Gpt2Tokenizer};
pub use stream::Utf8Stream;

use crate::error::{Error, Result};

/// Which tokenizer a run trains with, and how big (stored in the run's manifest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum TokenizerSpec {
    /// One token per distinct character of the text.
    #[default]
    Char,
    /// Byte-level BPE trained on the text, with this many tokens at most.
    Bpe {
        /// The vocabulary size asked for (at least 256).
        vocab_size: usize,
    },
    /// GPT-2's tokenizer.
    Gpt2,
}

impl TokenizerSpec {
    /// The spec of `kind` (`char`, `bpe` or `gpt2`), `vocab_size` for `bpe` (512 when not
    /// given).
    ///
    /// # Errors
    /// [`Error::Config`] for another kind, or a vocabulary size given to a kind that has its own.
    pub fn new(kind: &str, vocab_size: Option<usize>) -> Result<Self> {
        match (kind, vocab_size) {
            ("char", None) => Ok(Self::Char),
            ("bpe", size) => Ok(Self::Bpe {
                vocab_size: size.unwrap_or(512),
            }),
            ("gpt2", None) => Ok(Self::Gpt2),
            ("char" | "gpt2", Some(_)) => Err(Error::Config(format!(
                "--vocab-size is for --tokenizer bpe; the {kind} tokenizer's vocabulary is \
                 fixed by {}",
                if kind == "char" {
                    "the text's characters"
                } else {
                    "GPT-2 (50,257 tokens)"
                }
            ))),
            (other, _) => Err(Error::Config(format!(
                "--tokenizer {other:?} is not one of char, bpe, gpt2"
            ))),
        }
    }

    /// The tokenizer this spec builds for `text`.
    ///
    /// # Errors
    /// [`Error::Data`] for empty text; [`Error::Config`] for a BPE vocabulary under 256.
    pub fn build(&self, text: &str) -> Result<Tokenizer> {
        Ok(match *self {
            Self::Char => Tokenizer::Char(CharTokenizer::from_text(text)?),
            Self::Bpe { vocab_size } => {
                Tokenizer::Bpe(Box::new(BpeTokenizer::train(text, vocab_size)?))
            }
            Self::Gpt2 => Tokenizer::Gpt2(Gpt2Tokenizer::new()),
        })
    }
}

impl fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Char => f.write_str("char"),
            Self::Bpe { vocab_size } => write!(f, "bpe (up to {vocab_size} tokens)"),
            Self::Gpt2 => f.write_str("gpt2"),
        }
    }
}

/// A tokenizer of any kind; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub enum Tokenizer {
    /// Characters.
    Char(CharTokenizer),
    /// Byte-level BPE trained on a text (boxed: Hugging Face's tokenizer is large, the other
    /// two are a pointer or a list).
    Bpe(Box<BpeTokenizer>),
    /// GPT-2's byte-level BPE.
    Gpt2(Gpt2Tokenizer),
}

/// `tokenizer.json`'s content for the `gpt2` kind.
const GPT2_MARKER: &str = "{\"tinygpt_tokenizer\": \"gpt2\", \"encoding\": \"r50k_base\"}";

impl From<CharTokenizer> for Tokenizer {
    fn from(tokenizer: CharTokenizer) -> Self {
        Self::Char(tokenizer)
    }
}

impl Tokenizer {
    /// `char`, `bpe` or `gpt2`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Char(_) => "char",
            Self::Bpe(_) => "bpe",
            Self::Gpt2(_) => "gpt2",
        }
    }

    /// Number of tokens, `V`.
    pub fn vocab_size(&self) -> usize {
        match self {
            Self::Char(t) => t.vocab_size(),
            Self::Bpe(t) => t.vocab_size(),
            Self::Gpt2(t) => t.vocab_size(),
        }
    }

    /// The character tokenizer, if this is one.
    pub fn as_char(&self) -> Option<&CharTokenizer> {
        match self {
            Self::Char(t) => Some(t),
            _ => None,
        }
    }

    /// Ids for `text`.
    ///
    /// # Errors
    /// [`Error::UnknownCharacters`] when a character tokenizer lacks some of `text`'s
    /// characters (the byte-level kinds encode any text).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        match self {
            Self::Char(t) => t.encode(text),
            Self::Bpe(t) => Ok(t.encode(text)),
            Self::Gpt2(t) => Ok(t.encode(text)),
        }
    }

    /// The bytes token `id` stands for; those of `�` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: usize) -> Vec<u8> {
        let bytes = match self {
            Self::Char(t) => t.chars().get(id).map(|c| c.to_string().into_bytes()),
            Self::Bpe(t) => t.token_bytes(id).map(<[u8]>::to_vec),
            Self::Gpt2(t) => t.token_bytes(id),
        };
        bytes.unwrap_or_else(|| char::REPLACEMENT_CHARACTER.to_string().into_bytes())
    }

    /// The text of `ids`: their bytes, with any that do not form UTF-8 as `�`.
    pub fn decode(&self, ids: &[usize]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// One token as text for a label: its bytes, with a partial character as `�`.
    pub fn token_text(&self, id: usize) -> String {
        String::from_utf8_lossy(&self.token_bytes(id)).into_owned()
    }

    /// Characters in the text of `ids` (the denominator of bits per character).
    pub fn chars_in(&self, ids: &[usize]) -> usize {
        match self {
            Self::Char(_) => ids.len(),
            _ => self.decode(ids).chars().count(),
        }
    }

    /// The `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        match self {
            Self::Char(t) => serde_json::to_string_pretty(t).expect("a vocabulary serialises"),
            Self::Bpe(t) => t.to_json(),
            Self::Gpt2(_) => GPT2_MARKER.to_string(),
        }
    }

    /// The tokenizer a `tokenizer.json` holds, of whichever kind.
    ///
    /// # Errors
    /// [`Error::Data`] saying what in the JSON is not a tokenizer tinygpt reads.
    pub fn from_json(json: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|err| Error::Data(format!("not JSON ({err})")))?;
        let field = |name: &str| value.get(name);
        if field("chars").is_some() {
            let chars: CharTokenizer = serde_json::from_value(value)
                .map_err(|err| Error::Data(format!("not a character vocabulary ({err})")))?;
            return Ok(Self::Char(chars));
        }
        if field("model").is_some() {
            return Ok(Self::Bpe(Box::new(BpeTokenizer::from_json(json)?)));
        }
        match (field("tinygpt_tokenizer"), field("encoding")) {
            (Some(kind), Some(encoding)) if kind == "gpt2" && encoding == "r50k_base" => {
                Ok(Self::Gpt2(Gpt2Tokenizer::new()))
            }
            _ => Err(Error::Data(
                "not a tokenizer: expected tinygpt's {\"chars\": [...]}, a Hugging Face \
                 tokenizer.json (with \"model\"), or the gpt2 marker"
                    .into(),
            )),
        }
    }
}
