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
//! model width, `H` heads, `Dh = D / H`, `V` vocabulary. With grouped-query attention
//! ([`GptConfig::n_kv_heads`]) K and V have `H_kv < H` heads: `[B, T, H_kv·Dh]` projected,
//! `[B, H_kv, S, Dh]` split and cached, each shared by `H / H_kv` query heads.
//!
//! The backend is chosen at run time through a Burn [`burn::tensor::Device`]; see [`device`].
//!
//! ## Where things are
//!
//! | module       | what it holds                                                            |
//! |--------------|--------------------------------------------------------------------------|
//! | [`model`]    | the network, read first: mask, heads, attention, MLP, block, cache, GPT   |
//! | [`generate`] | prefill and cached decoding, sampling, windows past the context           |
//! | [`text`]     | the character tokenizer, training text and batches, the toy grammar       |
//! | [`train`]    | the training loop, its config, loss, metrics and checkpoints              |
//! | [`leak`]     | the mask-leak demonstration: causality probe, honest loss, the report     |
//! | [`faults`]   | the failure gallery: classic attention bugs planted, and what catches them |
//! | `explore`    | the explorer's web server and API (cargo feature `explore`, on by default) |
//! | [`weights`]  | safetensors export and load, nanoGPT import                               |
//! | [`kernels`]  | the crate's kernels: fused CPU ops with hand-written backward passes (Flex) |
//! | [`bench`](mod@bench) | the workloads the benchmarks time                                         |
//! | [`device`]   | cargo features to devices, host transfers                                 |
//! | [`fs`], [`plot`], [`error`] | atomic writes, PNG charts, the error type                  |
//! | [`allocator`] | glibc keeps freed tensor buffers for reuse                              |
//! | [`memory`]   | sizes checked against the memory available, before any work starts       |
//!
//! ```no_run
//! use tinygpt::{GptConfig, device};
//!
//! # fn main() -> tinygpt::Result<()> {
//! let device = device::default_device()?;
//! let model = GptConfig::new(65).init(&device)?;
//! let mut cache = model.new_cache(1, &device);
//! let prompt = device::token_tensor(&[1, 2, 3], 1, 3, &device)?;
//! let logits = model.forward_cached(prompt, &mut cache)?; // [1, 3, 65]
//! let next = device::token_tensor(&[4], 1, 1, &device)?;
//! let logits = model.forward_cached(next, &mut cache)?; // [1, 1, 65], one new position
//! # let _ = logits;
//! # Ok(())
//! # }
//! ```

pub mod allocator;
pub mod bench;
pub mod device;
pub mod error;
#[cfg(feature = "explore")]
pub mod explore;
pub mod faults;
pub mod fs;
pub mod generate;
pub mod kernels;
pub mod leak;
pub mod memory;
pub mod model;
pub mod plot;
pub mod text;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
pub use model::{ForwardOptions, Gpt, GptConfig, KvCache, MaskMode, PositionScheme, ShapeTrace};
