//! Byte-level BPE trained on the training text, with Hugging Face's `tokenizers`.
//!
//! The text is first cut into pieces by GPT-2's pre-tokenizer pattern (words with their leading
//! space, runs of digits, of punctuation, of whitespace), each piece is read as UTF-8 bytes, and
//! the trainer merges the most frequent adjacent pair of symbols into a new token until the
//! vocabulary has `vocab_size` tokens. The 256 single bytes are always in it, so any text
//! encodes (no unknown token can occur) and decoding the ids gives back the exact bytes.
//!
//! The tokenizer is saved as the standard `tokenizer.json` that Python's
//! `tokenizers.Tokenizer.from_file` reads. No prefix space is added: `"the cat"` decodes to
//! `"the cat"`, not `" the cat"`.

use std::collections::HashSet;

use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use crate::error::{Error, Result};

/// The smallest vocabulary a byte-level BPE can have: the 256 bytes.
pub const BYTE_TOKENS: usize = 256;

/// A trained byte-level BPE tokenizer; see the module docs.
#[derive(Clone)]
pub struct BpeTokenizer {
    inner: tokenizers::Tokenizer,
    /// `bytes[id]`: what token `id` stands for, read once from the vocabulary.
    bytes: Vec<Vec<u8>>,
}

impl std::fmt::Debug for BpeTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BpeTokenizer({} tokens)", self.bytes.len())
    }
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes && self.to_json() == other.to_json()
    }
}

impl BpeTokenizer {
    /// Train a tokenizer of `vocab_size` tokens on `text`. The same text and size always give
    /// the same tokenizer. A text with fewer distinct pairs to merge ends with fewer tokens.
    ///
    /// # Errors
    /// [`Error::Config`] when `vocab_size` is under 256 (the bytes) or the text is empty.
    pub fn train(text: &str, vocab_size: usize) -> Result<Self> {
        if vocab_size < BYTE_TOKENS {
            return Err(Error::Config(format!(
                "--vocab-size {vocab_size} is too small for a byte-level BPE: its vocabulary \
                 starts with the {BYTE_TOKENS} bytes; give at least {BYTE_TOKENS} (e.g. 512)"
            )));
        }
        if text.is_empty() {
            return Err(Error::Data("cannot train a tokenizer on empty text".into()));
        }
        let byte_level = ByteLevel::new(false, true, true);
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(vocab_size)
            .min_frequency(2)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner
            .with_pre_tokenizer(Some(byte_level))
            .with_decoder(Some(byte_level));
        // Lines are the trainer's sequences (the newline stays with its line, so it can merge).
        inner
            .train(&mut trainer, text.split_inclusive('\n'))
            .map_err(|err| Error::Data(format!("training the BPE tokenizer failed: {err}")))?;
        Self::from_tokenizer(inner)
    }

    /// The tokenizer a `tokenizer.json` holds.
    ///
    /// # Errors
    /// [`Error::Data`] when the JSON is not a tokenizer, or not a byte-level BPE whose ids run
    /// `0..V`.
    pub fn from_json(json: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer = json
            .parse()
            .map_err(|err| Error::Data(format!("not a Hugging Face tokenizer.json ({err})")))?;
        Self::from_tokenizer(inner)
    }

    fn from_tokenizer(inner: tokenizers::Tokenizer) -> Result<Self> {
        let size = inner.get_vocab_size(true);
        let bytes = (0..size)
            .map(|id| {
                let token = inner.id_to_token(id as u32).ok_or_else(|| {
                    Error::Data(format!(
                        "the tokenizer has {size} tokens but no token {id}; ids must run 0..V"
                    ))
                })?;
                byte_level_bytes(&token).ok_or_else(|| {
                    Error::Data(format!(
                        "token {id} ({token:?}) is not written in the byte-level alphabet; only \
                         byte-level BPE tokenizers load"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { inner, bytes })
    }

    /// Number of tokens, `V`.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The ids of `text` (any text: every byte has a token).
    pub fn encode(&self, text: &str) -> Vec<usize> {
        let encoding = self
            .inner
            .encode(text, false)
            .expect("a byte-level BPE encodes any text");
        encoding.get_ids().iter().map(|&id| id as usize).collect()
    }

    /// The bytes token `id` stands for; `None` outside the vocabulary.
    pub fn token_bytes(&self, id: usize) -> Option<&[u8]> {
        self.bytes.get(id).map(Vec::as_slice)
    }

    /// The standard `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        self.inner.to_string(true).expect("a tokenizer serialises")
    }
}

/// The bytes a token written in GPT-2's byte-level alphabet stands for.
///
/// Byte-level BPE writes each byte as a printable character so that tokens are strings: the
/// printable bytes `!`..`~`, `¡`..`¬` and `®`..`ÿ` stand for themselves, and the other 68
/// (controls, space, soft hyphen, ...) for the code points from U+0100 up, in byte order.
fn byte_level_bytes(token: &str) -> Option<Vec<u8>> {
    token.chars().map(byte_of).collect()
}

fn byte_of(c: char) -> Option<u8> {
    let code = c as u32;
    if stands_for_itself(code) {
        return Some(code as u8);
    }
    // The n-th byte (in byte order) that is not printable is written as U+0100 + n.
    let n = code.checked_sub(0x100)?;
    (0u32..256)
        .filter(|&byte| !stands_for_itself(byte))
        .nth(n as usize)
        .map(|byte| byte as u8)
}

fn stands_for_itself(byte: u32) -> bool {
    matches!(byte, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_has_one_character_of_the_alphabet() {
        let alphabet = ByteLevel::alphabet();
        assert_eq!(alphabet.len(), 256);
        let mut bytes: Vec<u8> = alphabet
            .iter()
            .map(|&c| byte_of(c).unwrap_or_else(|| panic!("{c:?} has no byte")))
            .collect();
        bytes.sort_unstable();
        assert_eq!(bytes, (0..=255).collect::<Vec<u8>>());
        // The space is written as U+0120 ("Ġ"), the newline as U+010A ("Ċ").
        assert_eq!(byte_of('Ġ'), Some(b' '));
        assert_eq!(byte_of('Ċ'), Some(b'\n'));
    }
}
