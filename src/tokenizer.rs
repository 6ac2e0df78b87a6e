//! A character-level tokenizer: one token per distinct character of the training text.
//!
//! Character tokens keep the model's input readable (a reader can map every id back to what it
//! stands for) and the vocabulary tiny, which is what a model this size wants.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Maps characters to ids `0..vocab_size` and back. Saved as JSON beside every checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharTokenizer {
    /// The vocabulary in id order: `chars[id]` is the character for `id`. [`from_text`]
    /// sorts it by code point so the same text always gives the same ids; an imported
    /// vocabulary keeps the order it came in.
    ///
    /// [`from_text`]: CharTokenizer::from_text
    chars: Vec<char>,
}

impl CharTokenizer {
    /// The tokenizer of every distinct character in `text`.
    ///
    /// # Errors
    /// [`Error::Data`] when `text` is empty.
    pub fn from_text(text: &str) -> Result<Self> {
        let chars: BTreeSet<char> = text.chars().collect();
        if chars.is_empty() {
            return Err(Error::Data(
                "cannot build a vocabulary from empty text".into(),
            ));
        }
        Ok(Self {
            chars: chars.into_iter().collect(),
        })
    }

    /// The tokenizer whose id `i` stands for `chars[i]`, e.g. a vocabulary imported with a
    /// model trained elsewhere.
    ///
    /// # Errors
    /// [`Error::Data`] when `chars` is empty or holds a character twice.
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::Data("the vocabulary is empty".into()));
        }
        let mut seen = BTreeSet::new();
        if let Some(repeated) = chars.iter().find(|&&c| !seen.insert(c)) {
            return Err(Error::Data(format!(
                "the vocabulary holds {repeated:?} twice; every id must stand for a different \
                 character"
            )));
        }
        Ok(Self { chars })
    }

    /// Number of tokens, `V`.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// The characters in id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `c`, if it is in the vocabulary.
    pub fn id(&self, c: char) -> Option<usize> {
        // A linear scan: vocabularies are tens of characters, and an imported one need not be
        // sorted.
        self.chars.iter().position(|&known| known == c)
    }

    /// Ids for every character of `text`.
    ///
    /// # Errors
    /// [`Error::UnknownCharacters`] listing every character of `text` that is not in the
    /// vocabulary (each once, in order of appearance).
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        let mut unknown: Vec<char> = Vec::new();
        let ids: Vec<usize> = text
            .chars()
            .filter_map(|c| {
                let id = self.id(c);
                if id.is_none() && !unknown.contains(&c) {
                    unknown.push(c);
                }
                id
            })
            .collect();
        if unknown.is_empty() {
            Ok(ids)
        } else {
            Err(Error::UnknownCharacters {
                chars: unknown,
                vocabulary: self.chars.iter().collect(),
            })
        }
    }

    /// The text for `ids`; ids outside the vocabulary become `�` (U+FFFD).
    pub fn decode(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&id| {
                self.chars
                    .get(id)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }
}
