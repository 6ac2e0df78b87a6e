//! The network, in the order a reader meets it:
//!
//! | file           | what it holds                                                          |
//! |----------------|------------------------------------------------------------------------|
//! | `mask`         | the causal mask (one bottom-right rule), the leaky [`MaskMode`]s, padding |
//! | `single_head`  | one attention head written to be read                                  |
//! | `rope`         | positions: the learned table or rotary position embedding (RoPE)        |
//! | `attention`    | multi-head attention: `split_heads`, the kernels, `merge_heads`, `W_O`  |
//! | `mlp`          | the feed-forward network, `D -> 4D -> GELU -> D`                        |
//! | `layer_input`  | the one argument of a layer call: new positions, cache, padding, trace  |
//! | `block`        | the pre-norm block: attention and MLP, each around a residual           |
//! | `init`         | GPT-2's initialisation                                                  |
//! | `cache`        | the pre-allocated KV cache                                              |
//! | `fault`        | the classic attention bugs, planted only on purpose (failure gallery)   |
//! | `trace`        | the shape of every stage, for teaching and tests                        |
//! | `gpt`          | the language model: embeddings, blocks, final LayerNorm, LM head        |
//!
//! Everything here is backend-agnostic: the backend is the `Device` the tensors live on.

pub mod attention;
pub mod block;
pub mod cache;
pub mod fault;
pub mod gpt;
pub mod init;
pub mod layer_input;
pub mod mask;
pub mod mlp;
pub mod rope;
pub mod single_head;
pub mod trace;

pub use attention::{
    CausalSelfAttention, CausalSelfAttentionConfig, fused_causal_attention, merge_heads, repeat_kv,
    single_query_attention, split_heads,
};
pub use block::{Block, BlockConfig};
pub use cache::{KvCache, LayerKv};
pub use fault::Fault;
pub use gpt::{ForwardOptions, Gpt, GptConfig};
pub use layer_input::LayerInput;
pub use mask::{MaskMode, band_mask, causal_mask, masked_softmax, padding_mask};
pub use mlp::{Mlp, MlpConfig};
pub use rope::{PositionScheme, Rotation};
pub use single_head::single_head_attention;
pub use trace::{ShapeTrace, Stage};
