//! Generation: cached decoding equals naive decoding, the cache grows as it should, sampling is
//! reproducible and honours its settings, batches of different lengths equal their rows alone,
//! and generation runs on past the context window.
//!
//! Runs on flex unless `TINYGPT_TEST_DEVICE` says otherwise (see `common::end_to_end_device`);
//! `tests/backends.rs` checks the generator on every compiled-in backend.

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use common::{device, end_to_end_device, small_config};
use tinygpt::device::{floats, ints};
use tinygpt::generate::{
    DecodeMode, Generation, GenerationConfig, Generator, Sampler, SamplingConfig, WindowPolicy,
    max_abs_diff,
};
use tinygpt::text::{BUNDLED_CORPUS, CharTokenizer, TextDataset, Tokenizer};
use tinygpt::train::{TrainConfig, train};
use tinygpt::{Error, Gpt, GptConfig, MaskMode};

const WINDOW: usize = 24;

/// A tiny model trained for a few seconds on the toy corpus, so its logits are far from
/// uniform and greedy choices are not ties.
fn trained_model(name: &str) -> (Gpt, Tokenizer) {
    let data = TextDataset::new(BUNDLED_CORPUS, WINDOW).unwrap();
    let model = GptConfig::new(data.tokenizer().vocab_size())
        .with_d_model(32)
        .with_n_heads(4)
        .with_n_layers(2)
        .with_max_seq_len(WINDOW);
    let config = TrainConfig {
        steps: 60,
        batch_size: 16,
        seq_len: WINDOW,
        learning_rate: 1e-2,
        min_learning_rate: 1e-3,
        warmup_steps: 5,
        eval_interval: 60,
        eval_batches: 1,
        ..TrainConfig::new()
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = train(
        &dir,
        &model,
        &config,
        &data,
        &end_to_end_device(),
        false,
        &mut |_| ControlFlow::Continue(()),
    )
    .unwrap();
    (outcome.model, data.tokenizer().clone())
}

fn generate(model: &Gpt, prompts: &[Vec<usize>], options: &GenerationConfig) -> Generation {
    Generator::new(model, &end_to_end_device())
        .generate_all(prompts, options)
        .unwrap()
}

fn recorded(mode: DecodeMode, max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        mode,
        record_logits: true,
        ..GenerationConfig::new(max_new_tokens)
    }
}

fn max_step_diff(a: &Generation, b: &Generation) -> f32 {
    assert_eq!(a.step_logits.len(), b.step_logits.len());
    a.step_logits
        .iter()
        .zip(&b.step_logits)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// Rows of logits as a `[rows, V]` tensor on the test device.
fn logit_rows(logits: &[f32], rows: usize) -> Tensor<2> {
    let data = TensorData::new(logits.repeat(rows), [rows, logits.len()]);
    Tensor::from_data(data, &end_to_end_device())
}

/// The distribution the sampler documents, computed here on the host independently of the
/// library's tensor code: softmax of the logits over the temperature, keep the `top_k` most
/// likely, then the smallest most-likely set whose mass reaches `top_p`, renormalised.
fn reference_distribution(config: &SamplingConfig, logits: &[f32]) -> Vec<f32> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(config.top_k.unwrap_or(order.len()));
    let max = logits[order[0]];
    let weights: Vec<f32> = order
        .iter()
        .map(|&id| ((logits[id] - max) / config.temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    let mut probs = vec![0.0; logits.len()];
    let mut kept_mass = 0.0;
    for (&id, weight) in order.iter().zip(weights) {
        if config.top_p.is_some_and(|p| kept_mass >= p) {
            break;
        }
        probs[id] = weight / total;
        kept_mass += weight / total;
    }
    probs.iter_mut().for_each(|p| *p /= kept_mass);
    probs
}

#[test]
fn greedy_cached_equals_greedy_naive_over_hundreds_of_tokens() {
    let (model, tokenizer) = trained_model("gen_equal");
    let prompt = vec![tokenizer.encode("the dog ").unwrap()];
    let cached = generate(&model, &prompt, &recorded(DecodeMode::Cached, 220));
    let naive = generate(&model, &prompt, &recorded(DecodeMode::Naive, 220));
    assert_eq!(cached.tokens[0].len(), 220);
    assert_eq!(
        cached.tokens, naive.tokens,
        "the two decodings chose different tokens"
    );
    let diff = max_step_diff(&cached, &naive);
    assert!(diff <= 1e-4, "max |Δ logit| over 220 steps = {diff}");
    // 220 tokens through a 24-token window: the window slid many times, in both modes alike.
    assert!(cached.stats.window_slides >= 15, "{:?}", cached.stats);
    assert_eq!(cached.stats.window_slides, naive.stats.window_slides);
}

#[test]
fn prefill_caches_the_prompt_and_each_decode_step_adds_one() {
    let device = end_to_end_device();
    let model = GptConfig::new(20)
        .with_d_model(32)
        .with_n_layers(2)
        .with_max_seq_len(64)
        .init_seeded(3, &device)
        .unwrap();
    let prompt = vec![vec![1, 2, 3, 4, 5, 6, 7]];
    for new in [1, 2, 10, 30] {
        let out = generate(&model, &prompt, &GenerationConfig::new(new));
        assert_eq!(out.stats.cache_len_after_prefill, 7, "prefill length");
        // The last token is chosen but never fed back, so `new - 1` decode steps ran.
        assert_eq!(
            out.stats.cache_len_after_decode,
            7 + new - 1,
            "after {new} new tokens"
        );
        assert_eq!(out.stats.window_slides, 0);
    }
}

#[test]
fn the_same_seed_gives_the_same_text() {
    let (model, tokenizer) = trained_model("gen_seed");
    let prompt = vec![tokenizer.encode("a ").unwrap()];
    let sampled = |seed| {
        let options = GenerationConfig {
            sampling: SamplingConfig {
                temperature: 1.0,
                top_k: Some(10),
                top_p: Some(0.95),
                seed,
            },
            ..GenerationConfig::new(80)
        };
        generate(&model, &prompt, &options).tokens
    };
    assert_eq!(sampled(1), sampled(1));
    assert_ne!(sampled(1), sampled(2));
}

#[test]
fn top_k_of_one_is_greedy() {
    let (model, tokenizer) = trained_model("gen_topk");
    let prompt = vec![tokenizer.encode("these ").unwrap()];
    let top1 = GenerationConfig {
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
            seed: 9,
        },
        ..GenerationConfig::new(60)
    };
    assert_eq!(
        generate(&model, &prompt, &top1).tokens,
        generate(&model, &prompt, &GenerationConfig::new(60)).tokens
    );
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_the_threshold() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 (logits are their logs).
    let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    let sampling = |p| {
        SamplingConfig::new()
            .with_temperature(1.0)
            .with_top_p(Some(p))
    };
    let with_p = |p| {
        let sampler = Sampler::new(sampling(p)).unwrap();
        floats(sampler.probabilities(logit_rows(&logits, 1))).unwrap()
    };
    let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
    // 0.5 alone does not reach 0.6; 0.5 + 0.3 does: the two, renormalised.
    assert!(
        close(&with_p(0.6), &[0.625, 0.375, 0.0, 0.0]),
        "{:?}",
        with_p(0.6)
    );
    assert!(
        close(&with_p(0.5), &[1.0, 0.0, 0.0, 0.0]),
        "{:?}",
        with_p(0.5)
    );
    assert!(
        close(&with_p(0.9), &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0]),
        "{:?}",
        with_p(0.9)
    );
    assert!(close(&with_p(1.0), &[0.5, 0.3, 0.15, 0.05]));
    // And sampling never draws a token outside the kept set.
    let mut sampler = Sampler::new(sampling(0.6).with_seed(4)).unwrap();
    let drawn = ints(sampler.sample(logit_rows(&logits, 500))).unwrap();
    assert!(drawn.iter().all(|&id| id < 2), "{drawn:?}");
}

#[test]
fn device_sampling_draws_from_the_documented_distribution() {
    // Logits with a clear order; temperature, top-k and top-p all shape the distribution.
    let logits = [2.0f32, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0];
    let config = SamplingConfig::new()
        .with_temperature(0.8)
        .with_top_k(Some(6))
        .with_top_p(Some(0.9))
        .with_seed(11);
    let expected = reference_distribution(&config, &logits);
    let mut sampler = Sampler::new(config).unwrap();
    let probabilities = floats(sampler.probabilities(logit_rows(&logits, 1))).unwrap();
    assert!(
        max_abs_diff(&probabilities, &expected) <= 1e-6,
        "{probabilities:?} vs {expected:?}"
    );
    let draws = 4000;
    let drawn = ints(sampler.sample(logit_rows(&logits, draws))).unwrap();
    for (id, &p) in expected.iter().enumerate() {
        let share = drawn.iter().filter(|&&d| d as usize == id).count() as f32 / draws as f32;
        // Four standard deviations of a binomial share, plus a little: fails on a real mismatch.
        let bound = 4.0 * (p * (1.0 - p) / draws as f32).sqrt() + 1e-3;
        assert!(
            (share - p).abs() <= bound,
            "token {id}: drawn {share}, expected {p}"
        );
        if p == 0.0 {
            assert_eq!(share, 0.0, "token {id} was cut off but drawn");
        }
    }
}

#[test]
fn greedy_probabilities_put_all_the_mass_on_the_argmax() {
    let logits = [0.1f32, 2.0, -1.0, 1.9];
    let sampler = Sampler::new(SamplingConfig::new()).unwrap();
    let probabilities = floats(sampler.probabilities(logit_rows(&logits, 2))).unwrap();
    assert_eq!(probabilities, [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
}

#[test]
fn batched_prompts_of_lengths_1_5_and_17_equal_each_prompt_alone() {
    let (model, tokenizer) = trained_model("gen_batch");
    let prompts: Vec<Vec<usize>> = ["t", "some ", "the big dog sees "]
        .iter()
        .map(|p| tokenizer.encode(p).unwrap())
        .collect();
    assert_eq!(prompts.iter().map(Vec::len).collect::<Vec<_>>(), [1, 5, 17]);
    for mode in [DecodeMode::Cached, DecodeMode::Naive] {
        let options = GenerationConfig {
            mode,
            ..GenerationConfig::new(40)
        };
        let together = generate(&model, &prompts, &options).tokens;
        for (row, prompt) in prompts.iter().enumerate() {
            let alone = generate(&model, std::slice::from_ref(prompt), &options).tokens;
            assert_eq!(
                together[row], alone[0],
                "{mode:?}: prompt {row} differs in a batch"
            );
        }
    }
}

#[test]
fn generating_three_context_windows_matches_the_naive_sliding_reference() {
    let (model, tokenizer) = trained_model("gen_long");
    let prompt = vec![tokenizer.encode("two owls ").unwrap()];
    let new = 3 * WINDOW;
    let cached = generate(&model, &prompt, &recorded(DecodeMode::Cached, new));
    let naive = generate(&model, &prompt, &recorded(DecodeMode::Naive, new));
    assert_eq!(cached.tokens[0].len(), new);
    assert_eq!(cached.tokens, naive.tokens);
    assert!(max_step_diff(&cached, &naive) <= 1e-4);
}

#[test]
fn stop_sequences_end_a_row() {
    let (model, tokenizer) = trained_model("gen_stop");
    let prompt = vec![tokenizer.encode("the ").unwrap()];
    let stop = tokenizer.encode(".").unwrap();
    let options = GenerationConfig {
        stop: vec![stop.clone()],
        ..GenerationConfig::new(200)
    };
    let out = generate(&model, &prompt, &options).tokens.remove(0);
    assert!(out.ends_with(&stop), "{}", tokenizer.decode(&out));
    assert_eq!(out.iter().filter(|&&id| id == stop[0]).count(), 1);
}

#[test]
fn bad_generation_input_is_a_clear_error() {
    let device = end_to_end_device();
    let model = GptConfig::new(10)
        .with_d_model(16)
        .with_n_heads(2)
        .with_n_layers(1)
        .init(&device)
        .unwrap();
    let generator = Generator::new(&model, &device);
    let options = GenerationConfig::new(5);
    let err = generator.generate_all(&[vec![]], &options).unwrap_err();
    assert!(err.to_string().contains("at least one token"), "{err}");
    let err = generator
        .generate_all(&[vec![3, 99]], &options)
        .unwrap_err();
    assert!(err.to_string().contains("99"), "{err}");
    let bad_sampling = GenerationConfig {
        sampling: SamplingConfig {
            temperature: -1.0,
            top_k: None,
            top_p: None,
            seed: 0,
        },
        ..options
    };
    assert!(matches!(
        generator.generate_all(&[vec![1]], &bad_sampling),
        Err(Error::Config(_))
    ));

    let tokenizer = CharTokenizer::from_text("abc .").unwrap();
    match tokenizer.encode("cab!?") {
        Err(Error::UnknownCharacters { chars, .. }) => assert_eq!(chars, ['!', '?']),
        other => panic!("expected unknown characters, got {other:?}"),
    }
    let _ = MaskMode::Causal;
}

#[test]
fn a_nan_logit_never_counts_as_agreement() {
    assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
    assert_eq!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 2.0]), f32::INFINITY);
    assert_eq!(max_abs_diff(&[f32::NAN], &[f32::NAN]), f32::INFINITY);
    assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f32::INFINITY);
}

#[test]
fn non_finite_logits_stop_generation_with_an_error() {
    let device = end_to_end_device();
    let mut model = GptConfig::new(10)
        .with_d_model(16)
        .with_n_heads(2)
        .with_n_layers(1)
        .init_seeded(1, &device)
        .unwrap();
    let head = model.lm_head.as_mut().expect("an untied head");
    head.weight = burn::module::Param::from_tensor(head.weight.val().mul_scalar(f32::NAN));
    for mode in [DecodeMode::Cached, DecodeMode::Naive] {
        let config = GenerationConfig::new(5).with_mode(mode);
        let result = Generator::new(&model, &device).generate_all(&[vec![1, 2]], &config);
        assert!(
            matches!(result, Err(Error::NotFinite { .. })),
            "{mode:?}: {result:?}"
        );
    }
}

#[test]
fn a_window_that_cannot_slide_is_refused_before_any_token() {
    let device = device();
    let model = small_config(MaskMode::Causal)
        .with_max_seq_len(1)
        .init_seeded(1, &device)
        .unwrap();
    let generator = Generator::new(&model, &device);
    let mut heard = 0;
    let refused = generator.generate(&[vec![1]], &GenerationConfig::new(4), &mut |_| {
        heard += 1;
        std::ops::ControlFlow::Continue(())
    });
    match refused {
        Err(Error::Config(message)) => assert!(message.contains("crop"), "{message}"),
        other => panic!("expected a config error, got {:?}", other.map(|g| g.tokens)),
    }
    assert_eq!(heard, 0, "tokens were handed out before the refusal");
    let crop = GenerationConfig::new(4).with_window(WindowPolicy::Crop);
    assert_eq!(
        generator.generate_all(&[vec![1]], &crop).unwrap().tokens[0].len(),
        4
    );
}
