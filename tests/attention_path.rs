//! The attention paths (`tinygpt::model::attention_path`): each call takes the path its row of
//! the table names, every path computes what the readable one computes, and the crate's
//! kernels decline the calls they cannot serve.

mod common;

use burn::tensor::{Device, Tensor};
use common::{device, max_abs_diff, random_tensor, random_tokens, small_config, small_model};
use tinygpt::device::token_tensor;
use tinygpt::kernels::{self, BLOCKED_FROM, MAX_WEIGHTS_PER_HEAD, without_kernels};
use tinygpt::model::{AttentionPath, CausalSelfAttentionConfig, ForwardOptions, Plan};
use tinygpt::{GptConfig, MaskMode};

/// The path a layer built like `config`'s takes for a call of `plan` on `device` (`cached`: with
/// a KV cache; `traced`: carrying a trace or a fault).
fn path_of(
    config: &GptConfig,
    device: &Device,
    cached: bool,
    plan: &Plan,
    traced: bool,
) -> AttentionPath {
    let layer = CausalSelfAttentionConfig::new(config.d_model, config.n_heads)
        .with_mask_mode(config.mask_mode)
        .init(device)
        .unwrap();
    let x = random_tensor([2, plan.new_tokens(), config.d_model], 1, device);
    layer.path(&x, cached, plan, traced)
}

#[test]
fn each_call_takes_the_path_its_row_names() {
    let flex = Device::flex();
    let causal = small_config(MaskMode::Causal);
    let whole = Plan::sequence(9);
    let step = Plan::sequence(1);
    let two_rows = |padded: bool| {
        let pads = [2, 0];
        let options = ForwardOptions::default();
        let options = if padded {
            options.with_left_padding(&pads)
        } else {
            options
        };
        Plan::new(&causal, [2, 9], &options, None, &flex).unwrap()
    };
    use AttentionPath::*;
    assert_eq!(path_of(&causal, &flex, false, &whole, false), PackedKernel);
    assert_eq!(path_of(&causal, &flex, true, &whole, false), CausalKernel);
    assert_eq!(path_of(&causal, &flex, true, &step, false), SingleQuery);
    assert_eq!(path_of(&causal, &flex, false, &step, false), SingleQuery);
    // Hidden keys, a trace or a fault, a leaky mask: the readable path.
    assert_eq!(
        path_of(&causal, &flex, false, &two_rows(true), false),
        Readable
    );
    assert_eq!(
        path_of(&causal, &flex, false, &two_rows(false), false),
        PackedKernel
    );
    assert_eq!(path_of(&causal, &flex, false, &whole, true), Readable);
    let leaky = small_config(MaskMode::Unmasked);
    assert_eq!(path_of(&leaky, &flex, false, &whole, false), Readable);
    // Off the crate's kernels: Burn's attention for several queries.
    let burn = without_kernels(|| path_of(&causal, &flex, false, &whole, false));
    assert_eq!(burn, BurnAttention);
    for name in tinygpt::device::compiled_backends() {
        if name != "flex"
            && let Ok(other) = tinygpt::device::device_by_name(name)
        {
            assert_eq!(
                path_of(&causal, &other, true, &whole, false),
                BurnAttention,
                "{name}"
            );
        }
    }
}

#[test]
fn every_path_computes_what_the_readable_path_computes() {
    let device = device();
    // As many queries as keys, fewer (after a cache), and one; 4 query heads sharing 4, 2, 1.
    for kv_heads in [4, 2, 1] {
        for (q_len, k_len) in [(6, 6), (2, 6), (1, 6)] {
            let q = random_tensor([2, 4, q_len, 8], 1, &device);
            let k = random_tensor([2, kv_heads, k_len, 8], 2, &device);
            let v = random_tensor([2, kv_heads, k_len, 8], 3, &device);
            let readable = AttentionPath::Readable.causal(q.clone(), k.clone(), v.clone());
            let mut paths = vec![AttentionPath::CausalKernel, AttentionPath::BurnAttention];
            if q_len == 1 {
                paths.push(AttentionPath::SingleQuery);
            }
            for path in paths {
                let fast = path.causal(q.clone(), k.clone(), v.clone());
                let diff = max_abs_diff(readable.clone(), fast);
                assert!(
                    diff <= 1e-5,
                    "{path:?}, q_len {q_len}, k_len {k_len}, {kv_heads} key/value heads: \
                     max |Δ| = {diff}"
                );
            }
        }
    }
}

#[test]
fn model_fast_path_matches_the_readable_path() {
    let device = device();
    let model = small_model(MaskMode::Causal, 3, &device);
    let ids = random_tokens(2 * 11, model.config().vocab_size, 4);
    let tokens = token_tensor(&ids, 2, 11, &device).unwrap();
    let fast = model.forward(tokens.clone()).unwrap();
    let readable = model.with_fast_paths(false).forward(tokens).unwrap();
    assert!(max_abs_diff(fast, readable) <= 1e-5);
}

#[test]
fn long_inference_attention_in_query_blocks_matches_the_readable_path() {
    // Past BLOCKED_FROM weights per head the causal kernel runs block by block, each
    // block of queries against only the keys its last query sees: T = S, T < S (a chunk after
    // a cache) and grouped heads, rows not a multiple of the block.
    let flex = Device::flex();
    for (heads, kv_heads, queries, keys) in [(2, 2, 600, 600), (4, 2, 530, 700), (3, 1, 701, 701)] {
        assert!(queries * keys > BLOCKED_FROM);
        let q = random_tensor([2, heads, queries, 8], 1, &flex);
        let k = random_tensor([2, kv_heads, keys, 8], 2, &flex);
        let v = random_tensor([2, kv_heads, keys, 8], 3, &flex);
        let fast = kernels::causal_attention(q.clone(), k.clone(), v.clone()).unwrap();
        let readable = without_kernels(|| AttentionPath::Readable.causal(q, k, v));
        let diff = max_abs_diff(fast, readable);
        assert!(
            diff <= 1e-5,
            "H={heads} H_kv={kv_heads} T={queries} S={keys}: {diff}"
        );
    }
}

#[test]
fn kernels_decline_the_calls_they_cannot_serve() {
    let flex = Device::flex();
    let layer = CausalSelfAttentionConfig::new(16, 2).init(&flex).unwrap();
    let projections = [&layer.query, &layer.key, &layer.value];
    // A whole sequence whose [T, T] weights per head pass the limit (inference's, training's):
    // the packed kernel declines.
    for (device, limit) in [
        (flex.clone(), BLOCKED_FROM),
        (flex.clone().autodiff(), MAX_WEIGHTS_PER_HEAD),
    ] {
        let long = (limit as f64).sqrt() as usize + 1;
        for (seq, serves) in [(long - 1, true), (long, false)] {
            let x = random_tensor([1, seq, 16], 4, &device);
            let layer = CausalSelfAttentionConfig::new(16, 2).init(&device).unwrap();
            let projections = [&layer.query, &layer.key, &layer.value];
            let packed = kernels::packed_self_attention(x, projections, [2, 2], None);
            assert_eq!(packed.is_some(), serves, "packed kernel, T = {seq}");
        }
    }
    // The causal kernel serves every length, inference past the limit in blocks of queries.
    let q = random_tensor([1, 2, 2, 8], 5, &flex);
    let keys = BLOCKED_FROM / 2 + 1;
    let k = random_tensor([1, 2, keys, 8], 6, &flex);
    let served = |device: &Device| {
        let [q, k] = [&q, &k].map(|t| Tensor::from_data(t.to_data(), device));
        kernels::causal_attention(q, k.clone(), k).is_some()
    };
    assert!(served(&flex), "inference past the limit");
    assert!(served(&flex.clone().autodiff()), "training at any length");
    // Off the kernels, neither serves anything.
    let x = random_tensor([1, 4, 16], 7, &flex);
    assert!(
        without_kernels(|| kernels::packed_self_attention(x, projections, [2, 2], None)).is_none()
    );
    assert!(!without_kernels(|| served(&flex.clone().autodiff())));
}
