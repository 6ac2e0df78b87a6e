//! Burn's fused attention kernel, used on the `Causal` fast path, computes exactly what the
//! readable path computes: with as many queries as keys, and aligned bottom-right with fewer.

mod common;

use common::{device, max_abs_diff, random_tensor, random_tokens, small_model};
use tinygpt::MaskMode;
use tinygpt::device::token_tensor;
use tinygpt::model::{CausalSelfAttentionConfig, fused_causal_attention};

#[test]
fn fused_attention_matches_readable_attention() {
    let device = device();
    let layer = CausalSelfAttentionConfig::new(16, 2).init(&device).unwrap();
    for (q_len, k_len) in [(6, 6), (2, 6), (1, 6)] {
        let q = random_tensor([2, 2, q_len, 8], 1, &device);
        let k = random_tensor([2, 2, k_len, 8], 2, &device);
        let v = random_tensor([2, 2, k_len, 8], 3, &device);
        let (readable, _) = layer.readable_attention(q.clone(), k.clone(), v.clone(), None);
        let fused = fused_causal_attention(q, k, v);
        let diff = max_abs_diff(readable, fused);
        assert!(
            diff <= 1e-5,
            "q_len {q_len}, k_len {k_len}: max |Δ| = {diff}"
        );
    }
}

#[test]
fn model_fast_path_matches_the_readable_path() {
    let device = device();
    let model = small_model(MaskMode::Causal, 3, &device);
    let ids = random_tokens(2 * 11, model.config().vocab_size, 4);
    let tokens = token_tensor(&ids, 2, 11, &device).unwrap();
    let fast = model.forward(tokens.clone()).unwrap();
    let readable = model.with_fused_attention(false).forward(tokens).unwrap();
    assert!(max_abs_diff(fast, readable) <= 1e-5);
}
