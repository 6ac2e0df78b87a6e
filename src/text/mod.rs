//! Text in and out: the tokenizers (characters, byte-level BPE, GPT-2's), the training text
//! cut into batches of windows, and the toy grammar behind the bundled corpus (with the
//! recognizer that scores samples).

pub mod dataset;
pub mod grammar;
pub mod tokenizer;

pub use dataset::{BUNDLED_CORPUS, Batch, Split, TextDataset, read_text, step_rng};
pub use tokenizer::{CharTokenizer, Tokenizer, TokenizerSpec, Utf8Stream};
