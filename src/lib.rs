//! # tinygpt
//!
//! A small, correct GPT in [Burn](https://burn.dev) that shows the mechanics of causal attention:
//! the mask, the heads, the blocks, the KV cache, and what goes wrong when the mask leaks.
//!
//! ## The shape story
//!
//! | stage                         | shape            |
//! |-------------------------------|------------------|
//! | token ids                     | `[B, T]`         |
//! | token + position embeddings   | `[B, T, D]`      |
//! | Q, K, V projections           | `[B, T, D]`      |
//! | `split_heads`                 | `[B, H, T, Dh]`  |
//! | scores `Q Kᵀ / sqrt(Dh)`      | `[B, H, T, S]`   |
//! | mask (before softmax), softmax| `[B, H, T, S]`   |
//! | weights · V                   | `[B, H, T, Dh]`  |
//! | `merge_heads`                 | `[B, T, D]`      |
//! | output projection `W_O`       | `[B, T, D]`      |
//! | block output                  | `[B, T, D]`      |
//! | logits                        | `[B, T, V]`      |
//!
//! `B` batch, `T` new tokens, `S` keys (`S = T` without a cache, cached + `T` with one), `D`
//! model width, `H` heads, `Dh = D / H`, `V` vocabulary.
//!
//! The backend is chosen at run time through a Burn [`burn::tensor::Device`]; see [`device`].

pub mod attention;
pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod diagnostics;
pub mod error;
pub mod feed_forward;
pub mod generate;
pub mod grammar;
pub mod host;
pub mod init;
pub mod leak_demo;
pub mod loss;
pub mod model;
pub mod plot;
pub mod tokenizer;
pub mod trace;
pub mod train;
pub mod weights;

pub use attention::MaskMode;
pub use cache::KvCache;
pub use error::{Error, Result};
pub use model::{ForwardOptions, Gpt, GptConfig};
pub use trace::ShapeTrace;
