//! Hugging Face GPT-2 in and out, held to `transformers` itself: the fixtures are random
//! `GPT2LMHeadModel`s written by `scripts/make_hf_gpt2_fixture.py` (run by hand; committed),
//! with the logits `transformers` computed for three prompts and 64 greedy tokens it generated
//! with `use_cache=True`.

mod common;

use std::path::{Path, PathBuf};

use common::{NamedTensor, device, read_safetensors, row, temp_dir, values, write_safetensors};
use serde::Deserialize;
use tinygpt::generate::{DecodeMode, GenerationConfig, Generator, max_abs_diff};
use tinygpt::model::Activation;
use tinygpt::weights::{export_hf, import_hf};
use tinygpt::{Error, Gpt, GptConfig, PositionScheme};

const TOLERANCE: f32 = 1e-4;

/// The tied model (names with `transformer.`, no `lm_head.weight`, ε 1e-5) and the untied one
/// (names without the prefix, its own `lm_head.weight`, ε 1e-6).
const FIXTURES: [&str; 2] = ["hf_gpt2", "hf_gpt2_untied"];

#[derive(Deserialize)]
struct Expected {
    prompts: Vec<Vec<usize>>,
    greedy: Vec<Greedy>,
}

#[derive(Deserialize)]
struct Greedy {
    prompt: Vec<usize>,
    tokens: Vec<usize>,
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected(dir: &Path) -> (Expected, Vec<NamedTensor>) {
    let json = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let logits = read_safetensors(&dir.join("expected.safetensors"));
    (serde_json::from_str(&json).unwrap(), logits)
}

fn expected_logits(logits: &[NamedTensor], i: usize) -> &NamedTensor {
    let name = format!("logits.{i}");
    logits.iter().find(|(n, _, _)| *n == name).unwrap()
}

/// The largest |Δ logit| between `model` and Hugging Face's over every prompt of `dir`.
fn worst_logit_diff(model: &Gpt, dir: &Path) -> f32 {
    let (expected, logits) = expected(dir);
    let mut worst = 0.0f32;
    for (i, prompt) in expected.prompts.iter().enumerate() {
        let (_, shape, theirs) = expected_logits(&logits, i);
        let ours = model.forward(row(prompt, &device())).unwrap();
        assert_eq!(ours.dims()[1..], shape[..], "prompt {i}");
        worst = worst.max(max_abs_diff(&values(ours), theirs));
    }
    worst
}

#[test]
fn imported_models_give_transformers_logits_on_both_paths() {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let model = import_hf(&dir, &device()).unwrap();
        let config = model.config();
        assert_eq!(
            (
                config.vocab_size,
                config.d_model,
                config.n_heads,
                config.n_layers,
                config.max_seq_len,
                config.activation
            ),
            (256, 64, 4, 2, 96, Activation::GeluTanh),
            "{name}: config.json read"
        );
        assert_eq!(config.tie_embeddings, name == "hf_gpt2", "{name}");
        let epsilon = if name == "hf_gpt2" { 1e-5 } else { 1e-6 };
        assert_eq!(config.layer_norm_epsilon, epsilon, "{name}");
        for (path, model) in common::both_paths(model) {
            let diff = worst_logit_diff(&model, &dir);
            assert!(diff <= TOLERANCE, "{name}, {path}: max |Δ logit| = {diff}");
        }
    }
}

#[test]
fn greedy_decoding_gives_transformers_tokens_cached_and_naive() {
    let device = device();
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let model = import_hf(&dir, &device).unwrap();
        let (expected, _) = expected(&dir);
        for greedy in &expected.greedy {
            for mode in [DecodeMode::Cached, DecodeMode::Naive] {
                let config = GenerationConfig::new(greedy.tokens.len()).with_mode(mode);
                let generation = Generator::new(&model, &device)
                    .generate_all(std::slice::from_ref(&greedy.prompt), &config)
                    .unwrap();
                assert_eq!(
                    generation.tokens[0], greedy.tokens,
                    "{name}, {mode:?}, prompt {:?}",
                    greedy.prompt
                );
            }
        }
    }
}

#[test]
fn an_export_imports_back_to_the_same_logits_with_transformers_names() {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let model = import_hf(&dir, &device()).unwrap();
        let out = temp_dir(&format!("hf_export_{name}"));
        export_hf(&model, &out).unwrap();

        // The names and shapes Python's `GPT2LMHeadModel.save_pretrained` writes (the tied
        // fixture has the `transformer.` prefix a state dict carries).
        let theirs = read_safetensors(&fixture_dir("hf_gpt2").join("model.safetensors"));
        let ours = read_safetensors(&out.join("model.safetensors"));
        let layout = |tensors: &[NamedTensor]| {
            let mut names: Vec<(String, Vec<usize>)> = tensors
                .iter()
                .map(|(name, shape, _)| (name.clone(), shape.clone()))
                .filter(|(name, _)| name != "lm_head.weight")
                .collect();
            names.sort();
            names
        };
        assert_eq!(layout(&ours), layout(&theirs), "{name}");
        let has_head = ours.iter().any(|(n, _, _)| n == "lm_head.weight");
        assert_eq!(
            has_head,
            name == "hf_gpt2_untied",
            "{name}: lm_head only when untied"
        );

        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["model_type"], "gpt2");
        assert_eq!(config["activation_function"], "gelu_new");
        assert_eq!(config["tie_word_embeddings"], name == "hf_gpt2");

        let back = import_hf(&out, &device()).unwrap();
        let diff = worst_logit_diff(&back, &dir);
        assert!(
            diff <= TOLERANCE,
            "{name}: max |Δ logit| after the round trip = {diff}"
        );
    }
}

/// A copy of the tied fixture with `edit` made to its tensors and `config` to its config.json.
fn tampered(
    name: &str,
    edit: impl FnOnce(&mut Vec<NamedTensor>),
    config: impl FnOnce(&mut serde_json::Value),
) -> PathBuf {
    let source = fixture_dir("hf_gpt2");
    let mut tensors = read_safetensors(&source.join("model.safetensors"));
    edit(&mut tensors);
    let dir = temp_dir(name);
    write_safetensors(&dir.join("model.safetensors"), &tensors);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    config(&mut json);
    std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
    dir
}

fn import_error(dir: &Path) -> String {
    match import_hf(dir, &device()) {
        Ok(_) => panic!("{} should not import", dir.display()),
        Err(err @ Error::Weights { .. }) => format!("{err:#}"),
        Err(other) => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn the_tampered_copy_imports_and_matches_when_nothing_is_changed() {
    // Guards the tests below: their directories differ from a good one only by their edit.
    let dir = tampered("hf_untampered", |_| {}, |_| {});
    let model = import_hf(&dir, &device()).unwrap();
    assert!(worst_logit_diff(&model, &fixture_dir("hf_gpt2")) <= TOLERANCE);
}

#[test]
fn what_tinygpt_cannot_represent_is_refused_with_the_field_named() {
    let set = |field: &'static str, value: serde_json::Value| {
        move |json: &mut serde_json::Value| json[field] = value
    };
    for (case, field, value, says) in [
        (
            "relu",
            "activation_function",
            "relu".into(),
            "`activation_function`",
        ),
        ("inner", "n_inner", 100.into(), "`n_inner`"),
        (
            "by_layer",
            "scale_attn_by_inverse_layer_idx",
            true.into(),
            "`scale_attn_by_inverse_layer_idx`",
        ),
        (
            "unscaled",
            "scale_attn_weights",
            false.into(),
            "`scale_attn_weights`",
        ),
        (
            "cross",
            "add_cross_attention",
            true.into(),
            "`add_cross_attention`",
        ),
        ("llama", "model_type", "llama".into(), "`model_type`"),
        (
            "no_heads",
            "n_head",
            serde_json::Value::Null,
            "`n_head`: missing",
        ),
        ("odd_heads", "n_head", 5.into(), "n_heads"),
        (
            "eps",
            "layer_norm_epsilon",
            "small".into(),
            "`layer_norm_epsilon`",
        ),
    ] {
        let dir = tampered(&format!("hf_cfg_{case}"), |_| {}, set(field, value));
        let err = import_error(&dir);
        assert!(
            err.contains(says) && err.contains("config.json"),
            "{case}: {err}"
        );
    }

    // A Conv1D weight stored the nn.Linear way round is named with both shapes.
    let dir = tampered(
        "hf_transposed",
        |tensors| {
            let (_, shape, _) = tensors
                .iter_mut()
                .find(|(name, _, _)| name == "transformer.h.0.attn.c_attn.weight")
                .unwrap();
            *shape = vec![192, 64];
        },
        |_| {},
    );
    let err = import_error(&dir);
    assert!(
        err.contains("`h.0.attn.c_attn.weight` has shape [192, 64]") && err.contains("[64, 192]"),
        "{err}"
    );

    let dir = tampered(
        "hf_missing",
        |tensors| tensors.retain(|(n, _, _)| !n.ends_with("h.1.mlp.c_fc.bias")),
        |_| {},
    );
    assert!(import_error(&dir).contains("missing tensor `h.1.mlp.c_fc.bias`"));

    let dir = temp_dir("hf_no_weights");
    let err = import_error(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("no such file"),
        "{err}"
    );
}

#[test]
fn models_gpt2_cannot_express_are_refused_before_anything_is_written() {
    let device = device();
    for (config, says) in [
        (
            GptConfig::new(16)
                .with_d_model(16)
                .with_n_heads(2)
                .with_n_layers(1)
                .with_max_seq_len(8)
                .with_position(PositionScheme::Rope),
            "position",
        ),
        (
            GptConfig::new(16)
                .with_d_model(16)
                .with_n_heads(2)
                .with_n_kv_heads(Some(1))
                .with_n_layers(1)
                .with_max_seq_len(8),
            "n_kv_heads",
        ),
        (
            GptConfig::new(16)
                .with_d_model(16)
                .with_n_heads(2)
                .with_n_layers(1)
                .with_max_seq_len(8)
                .with_mask_mode(tinygpt::MaskMode::Unmasked),
            "mask_mode",
        ),
    ] {
        let model = config.init(&device).unwrap();
        let out = temp_dir(&format!("hf_refused_{says}"));
        let err = export_hf(&model, &out).unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
        assert!(!out.join("model.safetensors").exists() && !out.join("config.json").exists());
    }
}
