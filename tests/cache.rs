//! The KV cache: it grows by exactly the new tokens, cached decoding equals full recomputation,
//! chunked prefill equals one-shot prefill, and its limits are typed errors.

mod common;

use burn::tensor::{Device, Tensor};
use common::{
    both_paths, device, max_abs_diff, random_tokens, small_config, small_model,
    small_models_both_paths,
};
use tinygpt::device::token_tensor;
use tinygpt::{Error, Gpt, MaskMode};

/// Column `t` of every row of a `[B, T]` id matrix, as a `[B, 1]` batch.
fn column(rows: &[Vec<usize>], t: usize) -> Vec<usize> {
    rows.iter().map(|row| row[t]).collect()
}

fn prefix(rows: &[Vec<usize>], len: usize) -> Vec<usize> {
    rows.iter()
        .flat_map(|row| row[..len].iter().copied())
        .collect()
}

#[test]
fn cached_decode_equals_naive_recompute_at_every_step() {
    let device = device();
    for (path, model) in small_models_both_paths(MaskMode::Causal, 5, &device) {
        eprintln!("{path}");
        assert_cached_decode_equals_naive(&model, &device);
    }
    // Grouped-query attention: the decode step stacks each group's queries on its shared head.
    let gqa = small_config(MaskMode::Causal)
        .with_n_kv_heads(Some(2))
        .init_seeded(5, &device)
        .unwrap();
    for (path, model) in both_paths(gqa) {
        eprintln!("GQA, {path}");
        assert_cached_decode_equals_naive(&model, &device);
    }
}

fn assert_cached_decode_equals_naive(model: &Gpt, device: &Device) {
    let device = device.clone();
    let config = model.config().clone();
    assert!(config.n_layers >= 2);
    let (batch, prompt_len, steps) = (2, 5, 40);
    let rows: Vec<Vec<usize>> = (0..batch)
        .map(|b| random_tokens(prompt_len + steps, config.vocab_size, 10 + b as u64))
        .collect();

    let mut cache = model.new_cache(batch, &device);
    let prompt = token_tensor(&prefix(&rows, prompt_len), batch, prompt_len, &device).unwrap();
    let cached = model.forward_cached(prompt.clone(), &mut cache).unwrap();
    let naive = model.forward(prompt).unwrap();
    assert!(max_abs_diff(cached, naive) <= 1e-4, "prefill");
    assert_eq!(cache.len(), prompt_len, "prefill caches exactly the prompt");

    let mut worst = 0.0f32;
    for step in 0..steps {
        let t = prompt_len + step;
        let new = token_tensor(&column(&rows, t), batch, 1, &device).unwrap();
        let cached = model.forward_cached(new, &mut cache).unwrap();
        assert_eq!(
            cache.len(),
            t + 1,
            "one decode step adds exactly one position"
        );

        // Naive: recompute the whole prefix and keep only the last position's logits.
        let full = token_tensor(&prefix(&rows, t + 1), batch, t + 1, &device).unwrap();
        let naive = model.forward(full).unwrap();
        let vocab = config.vocab_size;
        let naive_last: Tensor<3> = naive.slice([0..batch, t..t + 1, 0..vocab]);
        let diff = max_abs_diff(cached, naive_last);
        assert!(diff <= 1e-4, "step {step}: max |Δ logit| = {diff}");
        worst = worst.max(diff);
    }
    eprintln!("max |Δ logit| over {steps} steps: {worst:e}");
}

#[test]
fn chunked_prefill_equals_one_shot_prefill() {
    let device = device();
    for (path, model) in small_models_both_paths(MaskMode::Causal, 6, &device) {
        eprintln!("{path}");
        assert_chunked_prefill_equals_one_shot(&model, &device);
    }
}

fn assert_chunked_prefill_equals_one_shot(model: &Gpt, device: &Device) {
    let device = device.clone();
    let vocab = model.config().vocab_size;
    let batch = 2;
    let rows: Vec<Vec<usize>> = (0..batch)
        .map(|b| random_tokens(20, vocab, 20 + b as u64))
        .collect();

    let mut one_shot = model.new_cache(batch, &device);
    let all = token_tensor(&prefix(&rows, 20), batch, 20, &device).unwrap();
    let one_shot_logits = model.forward_cached(all, &mut one_shot).unwrap();

    let mut chunked = model.new_cache(batch, &device);
    let mut start = 0;
    let mut pieces = Vec::new();
    for len in [7, 8, 5] {
        let ids: Vec<usize> = rows
            .iter()
            .flat_map(|row| row[start..start + len].iter().copied())
            .collect();
        let chunk = token_tensor(&ids, batch, len, &device).unwrap();
        pieces.push(model.forward_cached(chunk, &mut chunked).unwrap());
        start += len;
    }
    assert_eq!(chunked.len(), one_shot.len());
    assert!(max_abs_diff(Tensor::cat(pieces, 1), one_shot_logits) <= 1e-4);
    for layer in 0..model.config().n_layers {
        assert!(
            max_abs_diff(one_shot.keys(layer), chunked.keys(layer)) <= 1e-5,
            "layer {layer} keys"
        );
        assert!(
            max_abs_diff(one_shot.values(layer), chunked.values(layer)) <= 1e-5,
            "layer {layer} values"
        );
    }
}

#[test]
fn memory_bytes_follow_the_formula() {
    let device = device();
    // 4 heads with 4 key/value heads (multi-head), 2 (grouped) and 1 (multi-query): the cache
    // holds the key/value heads only.
    for kv_heads in [4, 2, 1] {
        let model = small_config(MaskMode::Causal)
            .with_n_kv_heads(Some(kv_heads))
            .init_seeded(7, &device)
            .unwrap();
        let config = model.config().clone();
        let batch = 3;
        let mut cache = model.new_cache(batch, &device);
        assert_eq!(cache.memory_bytes(), 0);
        for len in [4, 1, 6] {
            let ids = random_tokens(batch * len, config.vocab_size, len as u64);
            model
                .forward_cached(token_tensor(&ids, batch, len, &device).unwrap(), &mut cache)
                .unwrap();
            // 2 (K and V) · L · B · H_kv · Dh · S · 4 bytes (f32)
            let formula =
                2 * config.n_layers * batch * kv_heads * config.head_dim() * cache.len() * 4;
            assert_eq!(
                cache.memory_bytes(),
                formula,
                "{kv_heads} key/value heads, at {} positions",
                cache.len()
            );
        }
        assert_eq!(
            cache.allocated_bytes(),
            2 * config.n_layers * batch * kv_heads * config.head_dim() * config.max_seq_len * 4
        );
    }
}

#[test]
fn going_past_the_context_window_is_a_typed_error_and_writes_nothing() {
    let device = device();
    let model = small_model(MaskMode::Causal, 8, &device);
    let max = model.config().max_seq_len;
    let mut cache = model.new_cache(1, &device);
    let ids = random_tokens(max, model.config().vocab_size, 1);
    model
        .forward_cached(token_tensor(&ids, 1, max, &device).unwrap(), &mut cache)
        .unwrap();
    let err = model
        .forward_cached(token_tensor(&[0], 1, 1, &device).unwrap(), &mut cache)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::CacheFull {
                cached,
                new: 1,
                capacity,
            } if cached == max && capacity == max
        ),
        "{err}"
    );
    assert_eq!(
        cache.len(),
        max,
        "a refused call leaves the cache as it was"
    );

    cache.reset();
    assert!(cache.is_empty());
    assert_eq!(cache.memory_bytes(), 0);
    model
        .forward_cached(token_tensor(&[0], 1, 1, &device).unwrap(), &mut cache)
        .unwrap();
    assert_eq!(cache.len(), 1, "a reset cache starts again at position 0");
}

#[test]
fn a_cache_for_another_batch_size_is_refused() {
    let device = device();
    let model = small_model(MaskMode::Causal, 9, &device);
    let mut cache = model.new_cache(2, &device);
    let err = model
        .forward_cached(token_tensor(&[1, 2, 3], 1, 3, &device).unwrap(), &mut cache)
        .unwrap_err();
    assert!(matches!(err, Error::CacheMismatch(_)), "{err}");
    assert!(cache.is_empty());
}

#[test]
fn a_full_forward_longer_than_the_context_is_a_typed_error() {
    let device = device();
    let model = small_model(MaskMode::Causal, 9, &device);
    let max = model.config().max_seq_len;
    let ids = vec![0; max + 1];
    let err = model
        .forward(token_tensor(&ids, 1, max + 1, &device).unwrap())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SequenceTooLong { len, max_seq_len } if len == max + 1 && max_seq_len == max
        ),
        "{err}"
    );
}

#[test]
fn last_only_gives_the_last_row_of_the_full_logits() {
    let device = device();
    for (path, model) in small_models_both_paths(MaskMode::Causal, 21, &device) {
        let ids = random_tokens(2 * 12, 23, 22);
        let tokens = token_tensor(&ids, 2, 12, &device).unwrap();
        let full = model.forward(tokens.clone()).unwrap();
        let last = model
            .forward_with(
                tokens,
                tinygpt::ForwardOptions::default().with_last_only(true),
            )
            .unwrap();
        assert_eq!(last.dims(), [2, 1, 23], "{path}");
        let diff = max_abs_diff(full.slice([0..2, 11..12, 0..23]), last);
        assert!(diff <= 1e-6, "{path}: max |Δ logit| = {diff}");
    }
}

#[test]
fn truncating_the_cache_rewinds_it_to_an_earlier_prefix() {
    let device = device();
    for (path, model) in small_models_both_paths(MaskMode::Causal, 23, &device) {
        let ids = random_tokens(14, 23, 24);
        let step = |cache: &mut tinygpt::KvCache, id: usize| {
            let token = token_tensor(&[id], 1, 1, &device).unwrap();
            model.forward_cached(token, cache).unwrap()
        };
        let mut cache = model.new_cache(1, &device);
        let prefix = token_tensor(&ids[..10], 1, 10, &device).unwrap();
        model.forward_cached(prefix, &mut cache).unwrap();
        let first = step(&mut cache, ids[10]);
        // Decode something else for three steps, rewind, and decode the same token again.
        for &id in &ids[11..] {
            step(&mut cache, id);
        }
        cache.truncate(10);
        assert_eq!(cache.len(), 10, "{path}");
        let again = step(&mut cache, ids[10]);
        assert_eq!(max_abs_diff(first, again), 0.0, "{path}");
        cache.truncate(50);
        assert_eq!(
            cache.len(),
            11,
            "{path}: truncating past the end keeps everything"
        );
    }
}
