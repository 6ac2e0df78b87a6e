//! Causal self-attention: the mask, a readable single head, and the multi-head layer.

pub mod mask;
pub mod multi_head;
pub mod single_head;

pub use mask::{MaskMode, causal_mask, masked_softmax, padding_mask};
pub use multi_head::{
    CausalSelfAttention, CausalSelfAttentionConfig, fused_causal_attention, merge_heads,
    split_heads,
};
pub use single_head::single_head_attention;
