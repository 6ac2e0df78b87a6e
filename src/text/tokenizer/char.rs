//! The character-level tokenizer: one token per distinct character of the training text.
//!
//! Character tokens keep the model's input readable (a reader can map every id back to what it
//! stands for) and the vocabulary tiny, which is what a model this size wants.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Maps characters to ids `0..vocab_size` and back. Saved as JSON beside every checkpoint; a
/// file read back is checked as [`CharTokenizer::from_chars`] checks a vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredChars")]
pub struct CharTokenizer {
    /// The vocabulary in id order: `chars[id]` is the character for `id`. [`from_text`]
    /// sorts it by code point so the same text always gives the same ids; an imported
    /// vocabulary keeps the order it came in.
    ///
    /// [`from_text`]: CharTokenizer::from_text
    chars: Vec<char>,
}

/// A `tokenizer.json` as written, before it is checked.
#[derive(Deserialize)]
struct StoredChars {
    chars: Vec<char>,
}

impl TryFrom<StoredChars> for CharTokenizer {
    type Error = Error;

    fn try_from(stored: StoredChars) -> Result<Self> {
        Self::from_chars(stored.chars)
    }
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

    /// The tokenizer of a vocabulary written as JSON: an array of one-character strings in id
    /// order, an object with such an array under `chars` (tinygpt's `tokenizer.json`), or an
    /// object with `itos` as that array or as an id-to-character map (nanoGPT's `meta.pkl`,
    /// written out as JSON, e.g. by `scripts/nanogpt_to_safetensors.py`).
    ///
    /// # Errors
    /// [`Error::Data`] saying what in the JSON does not describe a character vocabulary.
    pub fn from_json_vocabulary(json: &str) -> Result<Self> {
        let chars = parse_vocabulary(json).map_err(Error::Data)?;
        Self::from_chars(chars)
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

/// The vocabulary in a JSON text: an array of one-character strings in id order, an object with
/// such an array under `chars` (tinygpt's `tokenizer.json`), or an object with `itos` as that
/// array or as an id-to-character map (nanoGPT's `meta.pkl`, written out as JSON).
fn parse_vocabulary(json: &str) -> std::result::Result<Vec<char>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|err| format!("not JSON ({err})"))?;
    let list = match &value {
        serde_json::Value::Array(_) => &value,
        serde_json::Value::Object(object) => object
            .get("chars")
            .or_else(|| object.get("itos"))
            .ok_or("expected an array of characters, or an object with `chars` or `itos`")?,
        _ => return Err("expected an array of characters or an object".into()),
    };
    let strings: Vec<String> = match list {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{item} is not a string"))
            })
            .collect::<std::result::Result<_, _>>()?,
        serde_json::Value::Object(map) => itos_map(map)?,
        _ => return Err("the vocabulary must be an array or an id-to-character map".into()),
    };
    let chars = strings
        .iter()
        .map(|item| {
            let mut chars = item.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(format!(
                    "token {item:?} is not one character; tinygpt's tokenizer is character-level"
                )),
            }
        })
        .collect::<std::result::Result<Vec<char>, String>>()?;
    Ok(chars)
}

/// nanoGPT's `itos` as an id-to-character map (`{"0": "\n", "1": " ", ...}`), as a list in id
/// order; the ids must run `0..V`.
fn itos_map(
    map: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Vec<String>, String> {
    let mut by_id: Vec<(usize, String)> = map
        .iter()
        .map(|(id, item)| {
            let id = id
                .parse::<usize>()
                .map_err(|_| format!("`itos` key {id:?} is not a token id"))?;
            let item = item
                .as_str()
                .ok_or_else(|| format!("`itos` value {item} is not a string"))?;
            Ok((id, item.to_string()))
        })
        .collect::<std::result::Result<_, String>>()?;
    by_id.sort();
    if let Some((position, (id, _))) = by_id
        .iter()
        .enumerate()
        .find(|(position, (id, _))| position != id)
    {
        return Err(format!(
            "`itos` has no token {position} (the next id is {id}); ids must run 0..V"
        ));
    }
    Ok(by_id.into_iter().map(|(_, item)| item).collect())
}
