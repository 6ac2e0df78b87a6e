//! Grouped-query attention (`GptConfig::n_kv_heads`): a GQA model is the multi-head model whose
//! key/value heads are repeated for their groups, its cache holds only the shared heads, it
//! decodes cached as it computes in full (with RoPE and a rolling window too), and its config
//! and weights travel. The PyTorch fixture (`enable_gqa=True`) is in `tests/reference.rs`.

mod common;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;
use common::{
    CONFIG_FROM_0_2, both_paths, device, logits_in_pieces, max_abs_diff, random_tokens,
    reloaded_through_safetensors, row, small_config,
};
use tinygpt::generate::{WindowPolicy, compare_decoding};
use tinygpt::model::{Block, ForwardOptions};
use tinygpt::weights::tensor_layout;
use tinygpt::{Error, Gpt, GptConfig, MaskMode, PositionScheme};

/// The small test model (4 heads of width 8) with `kv_heads` key/value heads.
fn gqa_config(kv_heads: usize, position: PositionScheme) -> GptConfig {
    small_config(MaskMode::Causal)
        .with_n_kv_heads(Some(kv_heads))
        .with_position(position)
}

fn gqa_model(kv_heads: usize, position: PositionScheme, seed: u64) -> Gpt {
    gqa_config(kv_heads, position)
        .init_seeded(seed, &device())
        .unwrap()
}

/// A key or value projection `D -> H_kv·Dh` widened to `D -> H·Dh` by repeating each head's
/// columns for the `groups` query heads that share it (head `h` gets head `h / groups`).
fn repeat_head_columns(layer: &Linear, groups: usize, head_dim: usize) -> Linear {
    let weight = layer.weight.val();
    let [d_in, kv_width] = weight.dims();
    let kv_heads = kv_width / head_dim;
    let repeat = |t: Tensor<2>| {
        let rows = t.dims()[0];
        t.reshape([rows, kv_heads, 1, head_dim])
            .expand([rows, kv_heads, groups, head_dim])
            .reshape([rows, kv_heads * groups * head_dim])
    };
    Linear {
        weight: Param::from_tensor(repeat(weight)),
        bias: layer.bias.as_ref().map(|bias| {
            Param::from_tensor(repeat(bias.val().reshape([1, kv_width])).reshape([d_in]))
        }),
    }
}

/// The multi-head model that computes what `gqa` computes: every weight copied, the key and
/// value projections repeated for each group.
fn equivalent_multi_head(gqa: &Gpt) -> Gpt {
    let config = gqa.config().clone().with_n_kv_heads(None);
    let groups = config.n_heads / gqa.config().kv_heads();
    let head_dim = config.head_dim();
    let mut mha = config.init_seeded(0, &device()).unwrap();
    mha.token_embedding = gqa.token_embedding.clone();
    mha.position_embedding = gqa.position_embedding.clone();
    mha.ln_f = gqa.ln_f.clone();
    mha.lm_head = gqa.lm_head.clone();
    for (block, shared) in mha.blocks.iter_mut().zip(&gqa.blocks) {
        let mut attn = block.attn.clone();
        attn.query = shared.attn.query.clone();
        attn.output = shared.attn.output.clone();
        attn.key = repeat_head_columns(&shared.attn.key, groups, head_dim);
        attn.value = repeat_head_columns(&shared.attn.value, groups, head_dim);
        *block = Block {
            attn,
            ..shared.clone()
        };
    }
    mha
}

#[test]
fn a_gqa_model_is_multi_head_attention_with_each_shared_head_repeated() {
    let device = device();
    let ids = random_tokens(20, 23, 1);
    for position in [PositionScheme::Learned, PositionScheme::Rope] {
        for kv_heads in [2, 1] {
            let gqa = gqa_model(kv_heads, position, 2);
            assert_eq!(
                gqa.blocks[0].attn.key.weight.dims(),
                [32, kv_heads * 8],
                "the key projection makes H_kv·Dh features"
            );
            let mha = equivalent_multi_head(&gqa);
            for ((path, gqa), (_, mha)) in both_paths(gqa).into_iter().zip(both_paths(mha)) {
                let diff = max_abs_diff(
                    gqa.forward(row(&ids, &device)).unwrap(),
                    mha.forward(row(&ids, &device)).unwrap(),
                );
                assert!(
                    diff <= 1e-5,
                    "{position:?}, {kv_heads} key/value heads, {path}: GQA and repeated MHA \
                     differ by {diff}"
                );
            }
        }
    }
}

#[test]
fn as_many_key_value_heads_as_heads_is_todays_model() {
    let device = device();
    let ids = row(&random_tokens(12, 23, 3), &device);
    let today = small_config(MaskMode::Causal)
        .init_seeded(4, &device)
        .unwrap();
    let explicit = gqa_config(4, PositionScheme::Learned)
        .init_seeded(4, &device)
        .unwrap();
    assert_eq!(
        tensor_layout(today.config()),
        tensor_layout(explicit.config())
    );
    let diff = max_abs_diff(
        today.forward(ids.clone()).unwrap(),
        explicit.forward(ids).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

#[test]
fn cached_decoding_equals_the_full_forward_with_shared_heads() {
    let device = device();
    for position in [PositionScheme::Learned, PositionScheme::Rope] {
        for kv_heads in [2, 1] {
            for (path, model) in both_paths(gqa_model(kv_heads, position, 5)) {
                let ids = random_tokens(30, 23, 6);
                let full = model.forward(row(&ids, &device)).unwrap();
                let mut cache = model.new_cache(1, &device);
                // A prompt of 7 (a prefill through the crate's grouped causal kernel), a chunk of 4,
                // then one token at a time (the grouped single-query step).
                let cached = logits_in_pieces(&model, &mut cache, &ids, &[7, 4]);
                let keys = cache.keys(0).dims();
                assert_eq!(keys, [1, kv_heads, 30, 8], "the cache holds H_kv heads");
                let diff = max_abs_diff(full, cached);
                assert!(
                    diff <= 1e-4,
                    "{position:?}, {kv_heads} key/value heads, {path}: cached and full logits \
                     differ by {diff}"
                );
            }
        }
    }
}

#[test]
fn a_rolling_gqa_cache_equals_a_band_masked_forward() {
    let device = device();
    let window = 16;
    let model = gqa_config(2, PositionScheme::Rope)
        .with_max_seq_len(window)
        .init_seeded(7, &device)
        .unwrap();
    for (path, model) in both_paths(model) {
        let ids = random_tokens(3 * window, 23, 8);
        let band = ForwardOptions::default().with_band(window);
        let reference = model.forward_with(row(&ids, &device), band).unwrap();
        let mut cache = model.new_cache(1, &device).rolling();
        let rolled = logits_in_pieces(&model, &mut cache, &ids, &[5]);
        let diff = max_abs_diff(reference, rolled);
        assert!(
            diff <= 1e-4,
            "{path}: rolling and band-masked logits differ by {diff}"
        );
    }
    let report = compare_decoding(
        &gqa_config(1, PositionScheme::Rope)
            .with_max_seq_len(window)
            .init_seeded(9, &device)
            .unwrap(),
        &random_tokens(6, 23, 10),
        3 * window,
        WindowPolicy::Rolling,
        &device,
    )
    .unwrap();
    assert!(report.identical_tokens, "multi-query rolling decoding");
    assert!(report.max_abs_logit_diff <= 1e-4);
}

#[test]
fn key_value_heads_must_divide_the_heads() {
    for kv_heads in [0, 3, 8] {
        match gqa_config(kv_heads, PositionScheme::Learned).validate() {
            Err(Error::Config(message)) => {
                assert!(message.contains("n_kv_heads"), "{message}");
                assert!(message.contains("[1, 2, 4]"), "{message}");
            }
            other => panic!("{kv_heads} key/value heads: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn the_key_value_heads_travel_in_configs_and_safetensors() {
    let config = gqa_config(2, PositionScheme::Rope);
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"n_kv_heads\":2"), "{json}");
    assert_eq!(GptConfig::from_json(&json).unwrap(), config);
    // A config written before the field: plain multi-head attention.
    let old = GptConfig::from_json(CONFIG_FROM_0_2).unwrap();
    assert_eq!((old.n_kv_heads, old.kv_heads()), (None, 4));

    let model = gqa_model(2, PositionScheme::Rope, 11);
    let layout = tensor_layout(model.config());
    let shape = |name: &str| {
        layout
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, shape)| shape.clone())
    };
    // PyTorch's `[out, in]`: the key/value heads' 16 features from the 32 of the stream.
    assert_eq!(shape("blocks.0.attn.key.weight"), Some(vec![16, 32]));
    assert_eq!(shape("blocks.0.attn.value.bias"), Some(vec![16]));
    assert_eq!(shape("blocks.0.attn.query.weight"), Some(vec![32, 32]));
    let loaded = reloaded_through_safetensors(&model, "gqa_export");
    assert_eq!(loaded.config(), model.config());
}
