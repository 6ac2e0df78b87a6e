//! Rotary position embedding (`PositionScheme::Rope`): the rotation depends only on distances,
//! cached decoding equals the full forward, padded rows compute what they would alone, and a
//! RoPE model's config and weights travel. The PyTorch fixture is in `tests/reference.rs`.

mod common;

use burn::tensor::Tensor;
use common::{
    CONFIG_FROM_0_2, both_paths, device, logits_in_pieces, max_abs_diff, random_tensor,
    random_tokens, reloaded_through_safetensors, row, small_config,
};
use tinygpt::generate::{DecodeMode, GenerationConfig, Generator, WindowPolicy, compare_decoding};
use tinygpt::model::{ForwardOptions, Rotation};
use tinygpt::weights::tensor_layout;
use tinygpt::{Error, Gpt, GptConfig, MaskMode, PositionScheme};

/// The small test model with rotary position embedding.
fn rope_config() -> GptConfig {
    small_config(MaskMode::Causal).with_position(PositionScheme::Rope)
}

fn rope_model(seed: u64) -> Gpt {
    rope_config().init_seeded(seed, &device()).unwrap()
}

/// `q·kᵀ` of every head after rotating both at `start..start + T`.
fn rotated_scores(q: &Tensor<4>, k: &Tensor<4>, start: usize) -> Tensor<4> {
    let [_, _, seq, head_dim] = q.dims();
    let positions: Vec<usize> = (start..start + seq).collect();
    let rotation = Rotation::new(&positions, 1, head_dim, 10000.0, &q.device());
    rotation
        .apply(q.clone())
        .matmul(rotation.apply(k.clone()).swap_dims(2, 3))
}

#[test]
fn shifting_every_position_leaves_the_scores_unchanged() {
    let device = device();
    let q = random_tensor([2, 3, 7, 8], 1, &device);
    let k = random_tensor([2, 3, 7, 8], 2, &device);
    let at_zero = rotated_scores(&q, &k, 0);
    for shift in [1, 37, 500] {
        let diff = max_abs_diff(at_zero.clone(), rotated_scores(&q, &k, shift));
        assert!(diff <= 1e-5, "shift {shift}: scores moved by {diff}");
    }
    // And the rotation does change the scores (it is not the identity).
    let unrotated = q.matmul(k.swap_dims(2, 3));
    assert!(max_abs_diff(at_zero, unrotated) > 1e-2);
}

#[test]
fn cached_decoding_equals_the_full_forward() {
    let device = device();
    for (path, model) in both_paths(rope_model(3)) {
        let ids = random_tokens(24, 23, 4);
        let full = model.forward(row(&ids, &device)).unwrap();
        let mut cache = model.new_cache(1, &device);
        // A prompt of 9, then one token at a time: every decode step rotates at its position.
        let cached = logits_in_pieces(&model, &mut cache, &ids, &[9]);
        let diff = max_abs_diff(full, cached);
        assert!(
            diff <= 1e-4,
            "{path}: cached and full logits differ by {diff}"
        );
    }
}

#[test]
fn a_left_padded_row_computes_what_it_computes_alone() {
    let device = device();
    let model = rope_model(5);
    let short = random_tokens(6, 23, 6);
    let long = random_tokens(10, 23, 7);
    let mut padded = vec![0; 4];
    padded.extend(&short);
    let batch =
        tinygpt::device::token_tensor(&[padded, long.clone()].concat(), 2, 10, &device).unwrap();
    let options = ForwardOptions::default().with_left_padding(&[4, 0]);
    let logits = model.forward_with(batch, options).unwrap();
    let alone = model.forward(row(&short, &device)).unwrap();
    let padded_row = logits.clone().slice([0..1, 4..10, 0..23]);
    let diff = max_abs_diff(padded_row, alone);
    assert!(
        diff <= 1e-4,
        "the padded row differs from the row alone by {diff}"
    );
    let full_row = logits.slice([1..2, 0..10, 0..23]);
    let diff = max_abs_diff(full_row, model.forward(row(&long, &device)).unwrap());
    assert!(diff <= 1e-4, "the unpadded row differs by {diff}");
}

#[test]
fn a_rope_model_has_no_position_table_and_round_trips_through_safetensors() {
    let model = rope_model(8);
    assert!(model.position_embedding.is_none());
    let layout = tensor_layout(model.config());
    assert!(
        layout
            .iter()
            .all(|(name, _)| name != "position_embedding.weight"),
        "a RoPE model's layout has no position table"
    );
    let loaded = reloaded_through_safetensors(&model, "rope_export");
    assert_eq!(loaded.config().position, PositionScheme::Rope);
}

#[test]
fn configs_name_the_scheme_and_old_ones_read_as_learned() {
    let rope = GptConfig::new(10).with_position(PositionScheme::Rope);
    let json = serde_json::to_string(&rope).unwrap();
    assert!(json.contains("\"position\":\"rope\""), "{json}");
    assert_eq!(GptConfig::from_json(&json).unwrap(), rope);
    // A config written before the field existed.
    let config = GptConfig::from_json(CONFIG_FROM_0_2).unwrap();
    assert_eq!(config.position, PositionScheme::Learned);
    assert_eq!(config.rope_theta, 10000.0);
    // Heads of odd width cannot be rotated in pairs.
    let odd = GptConfig::new(10)
        .with_d_model(12)
        .with_n_heads(4)
        .with_position(PositionScheme::Rope);
    match odd.validate() {
        Err(Error::Config(message)) => assert!(message.contains("even width"), "{message}"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn a_rope_model_sees_the_order_of_its_tokens() {
    // Without positions a one-layer causal model is blind to the order of the prefix: the last
    // position attends to the same set of tokens, so its logits would not change when two
    // earlier tokens swap places. (With two layers the causal mask itself leaks some order.)
    let device = device();
    let model = rope_config()
        .with_n_layers(1)
        .init_seeded(10, &device)
        .unwrap();
    let ids = random_tokens(12, 23, 11);
    let mut swapped = ids.clone();
    swapped.swap(2, 7);
    assert_ne!(ids[2], ids[7], "the test needs two different tokens");
    let last = |ids: &[usize]| {
        let logits = model.forward(row(ids, &device)).unwrap();
        logits.slice([0..1, 11..12, 0..23])
    };
    // Freshly initialised weights are small, so attention is nearly uniform and the move is
    // small too: 5.6e-5 here, against 6e-8 (rounding) with the rotation left out.
    let moved = max_abs_diff(last(&ids), last(&swapped));
    assert!(
        moved > 1e-5,
        "swapping two earlier tokens moved the last logits by {moved}"
    );
}

/// A RoPE model with a 16-position window, so three windows of tokens stay quick.
fn short_window_rope_model(seed: u64) -> Gpt {
    rope_config()
        .with_max_seq_len(16)
        .init_seeded(seed, &device())
        .unwrap()
}

#[test]
fn a_rolling_cache_equals_a_band_masked_forward_over_three_windows() {
    let device = device();
    let window = 16;
    for (path, model) in both_paths(short_window_rope_model(12)) {
        let ids = random_tokens(3 * window, 23, 13);
        // Every position sees the last 16 up to itself, over all 48 tokens at once.
        let band = ForwardOptions::default().with_band(window);
        let reference = model.forward_with(row(&ids, &device), band).unwrap();
        // The same with a rolling cache: a prompt of 5, then one token at a time; from
        // position 16 on, each step overwrites the oldest slot.
        let mut cache = model.new_cache(1, &device).rolling();
        let rolled = logits_in_pieces(&model, &mut cache, &ids, &[5]);
        assert_eq!(cache.len(), window);
        assert_eq!(cache.position(), 3 * window);
        // The wrapped cache is the band already; a band on top of it is refused, not misread.
        let options = ForwardOptions::default()
            .with_cache(&mut cache)
            .with_band(window);
        match model.forward_with(row(&ids[..1], &device), options) {
            Err(Error::Config(message)) => assert!(message.contains("rolling"), "{message}"),
            other => panic!(
                "{path}: expected a config error, got {:?}",
                other.map(|_| ())
            ),
        }
        let diff = max_abs_diff(reference, rolled);
        assert!(
            diff <= 1e-4,
            "{path}: rolling and band-masked logits differ by {diff}"
        );
    }
}

#[test]
fn rolling_generation_matches_its_naive_reference_and_needs_rope() {
    let device = device();
    let model = short_window_rope_model(14);
    let prompt = random_tokens(6, 23, 15);
    let report = compare_decoding(&model, &prompt, 3 * 16, WindowPolicy::Rolling, &device).unwrap();
    assert!(
        report.identical_tokens,
        "cached and naive rolling decoding chose other tokens"
    );
    assert!(
        report.max_abs_logit_diff <= 1e-4,
        "{}",
        report.max_abs_logit_diff
    );
    assert_eq!(report.window_slides, 0);
    assert_eq!(report.cache_len_after_decode, 16);
    // A learned position table ends at the window: rolling past it is refused up front.
    let learned = small_config(MaskMode::Causal)
        .with_max_seq_len(16)
        .init_seeded(14, &device)
        .unwrap();
    let config = GenerationConfig::new(40).with_window(WindowPolicy::Rolling);
    match Generator::new(&learned, &device).generate_all(&[prompt], &config) {
        Err(Error::Config(message)) => assert!(message.contains("rotary"), "{message}"),
        other => panic!("expected a config error, got {:?}", other.map(|g| g.tokens)),
    }
}

#[test]
fn a_rolling_prompt_longer_than_the_window_is_seen_band_masked_over_all_of_it() {
    let device = device();
    let window = 16;
    let model = short_window_rope_model(16);
    // A prompt of a window and a half: every position sees the last 16 up to itself.
    let prompt = random_tokens(window + window / 2, 23, 17);
    let steps = 20;
    for mode in [DecodeMode::Cached, DecodeMode::Naive] {
        let config = GenerationConfig::new(steps)
            .with_window(WindowPolicy::Rolling)
            .with_mode(mode)
            .with_record_logits(true);
        let generated = Generator::new(&model, &device)
            .generate_all(std::slice::from_ref(&prompt), &config)
            .unwrap();
        // Each step's logits are the band-masked forward's over the whole text so far.
        let mut text = prompt.clone();
        for (step, logits) in generated.step_logits.iter().enumerate() {
            let band = ForwardOptions::default()
                .with_band(window)
                .with_last_only(true);
            let reference = model.forward_with(row(&text, &device), band).unwrap();
            let diff = tinygpt::generate::max_abs_diff(&common::values(reference), logits);
            assert!(diff <= 1e-4, "{mode:?}, step {step}: max |Δ logit| {diff}");
            text.push(generated.tokens[0][step]);
        }
    }
}
