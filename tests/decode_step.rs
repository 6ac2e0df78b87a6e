//! The whole decode step as one kernel (`kernels::decode_step`, Flex only) against the model
//! run layer by layer through the readable attention with Burn's own ops: the same logits at
//! every step, and a cache the other paths read back, for every shape of model it takes.

mod common;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Tensor};
use common::{max_abs_diff, random_tensor, random_tokens, small_config};
use tinygpt::device::token_tensor;
use tinygpt::kernels::without_kernels;
use tinygpt::model::Activation;
use tinygpt::{ForwardOptions, Gpt, GptConfig, KvCache, MaskMode, PositionScheme};

/// Summation order differs between the kernel and Burn's ops; nothing else may.
const TOLERANCE: f32 = 2e-5;

fn flex() -> Device {
    Device::flex()
}

/// Adds noise to every parameter, so that biases are non-zero and layer norm gains are not 1
/// (GPT-2's initialisation would hide a bias added twice or a gain ignored).
struct Perturb(u64);

impl ModuleMapper for Perturb {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.0 += 1;
        let seed = self.0;
        param.map(|tensor| {
            let noise = random_tensor(tensor.dims(), seed, &tensor.device());
            tensor + noise.mul_scalar(0.2)
        })
    }
}

fn model(config: GptConfig, seed: u64) -> Gpt {
    config
        .init_seeded(seed, &flex())
        .unwrap()
        .map(&mut Perturb(seed * 100))
}

/// The same calls through the step kernel (`fast`) and through the readable path with Burn's
/// ops (`slow`), each with its own cache.
struct Twin<'a> {
    model: &'a Gpt,
    reference: Gpt,
    fast: KvCache,
    slow: KvCache,
    padding: Vec<usize>,
}

impl<'a> Twin<'a> {
    fn new(model: &'a Gpt, batch: usize, padding: Vec<usize>, rolling: bool) -> Self {
        let cache = |model: &Gpt| {
            let cache = model.new_cache(batch, &flex());
            if rolling { cache.rolling() } else { cache }
        };
        Self {
            model,
            reference: model.clone().with_fast_paths(false),
            fast: cache(model),
            slow: cache(model),
            padding,
        }
    }

    /// `ids` (`[B, T]`) through both; the largest logit difference.
    fn call(&mut self, ids: &[usize], seq: usize) -> f32 {
        let batch = self.padding.len();
        let tokens = token_tensor(ids, batch, seq, &flex()).unwrap();
        let options = |cache| {
            ForwardOptions::default()
                .with_cache(cache)
                .with_left_padding(&self.padding)
                .with_last_only(true)
        };
        let fast = self
            .model
            .forward_with(tokens.clone(), options(&mut self.fast))
            .unwrap();
        let slow = without_kernels(|| {
            self.reference
                .forward_with(tokens, options(&mut self.slow))
                .unwrap()
        });
        assert_eq!(self.fast.len(), self.slow.len());
        assert_eq!(self.fast.position(), self.slow.position());
        max_abs_diff(fast, slow)
    }
}

/// A prompt of 6, 24 single steps, a chunk of 3 read by the chunked-prefill kernel from the cache
/// the steps wrote, then 4 more steps: every call's logits equal.
fn assert_steps_match(name: &str, model: &Gpt, batch: usize, padding: Vec<usize>) {
    let vocab = model.config().vocab_size;
    let mut twin = Twin::new(model, batch, padding, false);
    let ids = |len: usize, seed: u64| -> Vec<usize> {
        (0..batch)
            .flat_map(|row| random_tokens(len, vocab, seed * 10 + row as u64))
            .collect()
    };
    let mut worst = twin.call(&ids(6, 1), 6);
    for step in 0..24 {
        worst = worst.max(twin.call(&ids(1, 100 + step), 1));
    }
    worst = worst.max(twin.call(&ids(3, 7), 3));
    for step in 0..4 {
        worst = worst.max(twin.call(&ids(1, 200 + step), 1));
    }
    eprintln!("{name}: max |Δ logit| {worst:.2e}");
    assert!(worst <= TOLERANCE, "{name}: max |Δ logit| {worst}");
}

#[test]
fn the_step_kernel_matches_the_readable_path_for_every_model_shape() {
    let base = || small_config(MaskMode::Causal).with_layer_norm_epsilon(0.3);
    let cases: Vec<(&str, GptConfig)> = vec![
        ("learned, tied head", base()),
        ("learned, own head", base().with_tie_embeddings(false)),
        ("rope", base().with_position(PositionScheme::Rope)),
        ("grouped, 2 kv heads", base().with_n_kv_heads(Some(2))),
        (
            "multi-query rope, tanh gelu",
            base()
                .with_n_kv_heads(Some(1))
                .with_position(PositionScheme::Rope)
                .with_activation(Activation::GeluTanh),
        ),
        // 96 wide: a product with a partial column block (and 3·96 hidden).
        ("width 96", base().with_d_model(96).with_n_heads(3)),
    ];
    for (seed, (name, config)) in cases.into_iter().enumerate() {
        let model = model(config, seed as u64 + 1);
        assert_steps_match(name, &model, 1, vec![0]);
    }
}

#[test]
fn the_step_kernel_matches_without_biases() {
    let mut model = model(small_config(MaskMode::Causal), 9);
    for block in &mut model.blocks {
        for layer in [
            &mut block.attn.query,
            &mut block.attn.key,
            &mut block.attn.value,
            &mut block.attn.output,
            &mut block.mlp.fc,
            &mut block.mlp.proj,
        ] {
            layer.bias = None;
        }
    }
    assert_steps_match("no biases", &model, 1, vec![0]);
}

#[test]
fn the_step_kernel_matches_on_ragged_left_padded_rows() {
    for (name, config) in [
        ("learned", small_config(MaskMode::Causal)),
        (
            "rope, grouped",
            small_config(MaskMode::Causal)
                .with_position(PositionScheme::Rope)
                .with_n_kv_heads(Some(2)),
        ),
    ] {
        let model = model(config, 11);
        // Row 0 unpadded, row 1 two pads, row 2 five of its six prompt tokens padding.
        assert_steps_match(name, &model, 3, vec![0, 2, 5]);
        assert_steps_match(
            &format!("{name}, 8 rows"),
            &model,
            8,
            vec![0, 1, 2, 3, 0, 5, 4, 0],
        );
    }
}

#[test]
fn the_step_kernel_matches_a_rolling_cache_past_its_capacity() {
    let config = small_config(MaskMode::Causal)
        .with_position(PositionScheme::Rope)
        .with_max_seq_len(16);
    let model = model(config, 13);
    let mut twin = Twin::new(&model, 2, vec![0, 0], true);
    let vocab = model.config().vocab_size;
    let mut worst = twin.call(&random_tokens(2 * 5, vocab, 1), 5);
    for step in 0..40 {
        worst = worst.max(twin.call(&random_tokens(2, vocab, 50 + step), 1));
    }
    assert!(twin.fast.position() > twin.fast.len(), "the cache wrapped");
    eprintln!("rolling: max |Δ logit| {worst:.2e}");
    assert!(worst <= TOLERANCE, "rolling: max |Δ logit| {worst}");
}

#[test]
fn the_step_kernel_writes_the_cache_the_readable_path_reads() {
    // Steps by the kernel, then a single step by the readable path reading the kernel's cache:
    // the same logits as a cache the readable path wrote throughout.
    let model = model(small_config(MaskMode::Causal).with_n_kv_heads(Some(2)), 17);
    let reference = model.clone().with_fast_paths(false);
    let vocab = model.config().vocab_size;
    let ids = random_tokens(20, vocab, 3);
    let run = |decoder: &Gpt, read_by: &Gpt| {
        let mut cache = decoder.new_cache(1, &flex());
        let prompt = token_tensor(&ids[..4], 1, 4, &flex()).unwrap();
        decoder.forward_cached(prompt, &mut cache).unwrap();
        for &id in &ids[4..19] {
            let token = token_tensor(&[id], 1, 1, &flex()).unwrap();
            decoder.forward_cached(token, &mut cache).unwrap();
        }
        let last = token_tensor(&ids[19..], 1, 1, &flex()).unwrap();
        without_kernels(|| read_by.forward_cached(last, &mut cache).unwrap())
    };
    let diff = max_abs_diff(run(&model, &reference), run(&reference, &reference));
    assert!(diff <= TOLERANCE, "max |Δ logit| {diff}");
}
