//! GPT-2's own byte-level BPE (OpenAI's `r50k_base` encoding, 50,257 tokens), through
//! `tiktoken-rs`, whose crate carries the merge ranks: nothing is downloaded.

use tiktoken_rs::CoreBPE;

/// Token id of `<|endoftext|>`, GPT-2's one special token (the last id).
pub const END_OF_TEXT: usize = 50256;

/// GPT-2's tokenizer; see the module docs.
#[derive(Clone, Copy)]
pub struct Gpt2Tokenizer {
    bpe: &'static CoreBPE,
}

impl std::fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gpt2Tokenizer(r50k_base)")
    }
}

impl PartialEq for Gpt2Tokenizer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Default for Gpt2Tokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Gpt2Tokenizer {
    /// GPT-2's tokenizer (the ranks are parsed once per process, on first use).
    pub fn new() -> Self {
        Self {
            bpe: tiktoken_rs::r50k_base_singleton(),
        }
    }

    /// Number of tokens: 50,257.
    pub fn vocab_size(&self) -> usize {
        END_OF_TEXT + 1
    }

    /// The ids of `text`; `<|endoftext|>` in the text is ordinary text, not the special token.
    pub fn encode(&self, text: &str) -> Vec<usize> {
        self.bpe
            .encode_ordinary(text)
            .into_iter()
            .map(|id| id as usize)
            .collect()
    }

    /// The bytes token `id` stands for; `None` outside the vocabulary.
    pub fn token_bytes(&self, id: usize) -> Option<Vec<u8>> {
        let id = u32::try_from(id).ok()?;
        self.bpe.decode_bytes(&[id]).ok()
    }
}
