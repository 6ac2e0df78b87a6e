//! The network, in the order a reader meets it:
//!
//! | file             | what it holds                                                          |
//! |------------------|------------------------------------------------------------------------|
//! | `mask`           | the causal mask (one bottom-right rule), the leaky [`MaskMode`]s, padding |
//! | `single_head`    | scaled dot-product attention, written to be read: the readable path   |
//! | `rope`           | positions: the learned table or rotary position embedding (RoPE)        |
//! | `heads`          | `split_heads`, `merge_heads`, `repeat_kv`: how the heads are laid out   |
//! | `attention`      | multi-head attention: project, `split_heads`, rotate, cache, attend, `merge_heads`, `W_O` |
//! | `attention_path` | the one place that chooses how attention is computed (readable or fast) |
//! | `mlp`            | the feed-forward network, `D -> 4D -> GELU -> D`                        |
//! | `block`          | the pre-norm block: attention and MLP, each around a residual           |
//! | `init`           | GPT-2's initialisation                                                  |
//! | `cache`          | the pre-allocated KV cache                                              |
//! | `plan`           | a forward call checked once: positions, hidden keys, rotation, cache step |
//! | `instruments`    | the one rider of a call: a shape trace and a planted fault             |
//! | `fault`          | the classic attention bugs, planted only on purpose (failure gallery)   |
//! | `trace`          | the shape of every stage, for teaching and tests                        |
//! | `config`         | `GptConfig`: the sizes, the mask, the positions; old configs read       |
//! | `gpt`            | the language model: embeddings, blocks, final LayerNorm, LM head        |
//!
//! Everything here is backend-agnostic: the backend is the `Device` the tensors live on.

pub mod attention;
pub mod attention_path;
pub mod block;
pub mod cache;
pub mod config;
mod decode_step;
pub mod fault;
pub mod gpt;
pub mod heads;
pub mod init;
pub mod instruments;
pub mod mask;
pub mod mlp;
pub mod plan;
pub mod rope;
pub mod single_head;
pub mod trace;

pub use attention::{CausalSelfAttention, CausalSelfAttentionConfig};
pub use attention_path::AttentionPath;
pub use block::{Block, BlockConfig};
pub use cache::{CacheStep, KvCache, LayerKv};
pub use config::GptConfig;
pub use fault::Fault;
pub use gpt::Gpt;
pub use heads::{merge_heads, repeat_kv, split_heads};
pub use instruments::{Instrumentation, Instruments, NoInstruments};
pub use mask::{MaskMode, band_mask, causal_mask, masked_softmax, padding_mask};
pub use mlp::{Activation, Mlp, MlpConfig};
pub use plan::{ForwardOptions, Plan};
pub use rope::{PositionScheme, Rotation};
pub use single_head::{Masking, single_head_attention};
pub use trace::{ShapeTrace, Stage};
