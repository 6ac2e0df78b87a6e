//! Importing nanoGPT checkpoints: tinygpt must compute what PyTorch computed with the same
//! weights. The fixtures come from `scripts/make_nanogpt_fixture.py` and
//! `scripts/make_nanogpt_crop_fixture.py` (run by hand).

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use common::{NamedTensor, device, read_safetensors, row, temp_dir, values, write_safetensors};
use serde::Deserialize;
use tinygpt::generate::{DecodeMode, GenerationConfig, Generator, WindowPolicy, max_abs_diff};
use tinygpt::text::CharTokenizer;
use tinygpt::train::checkpoint::{self, TrainState};
use tinygpt::weights::import_nanogpt;
use tinygpt::{Error, Gpt};

const TOLERANCE: f32 = 1e-4;
const N_HEADS: usize = 4;

#[derive(Deserialize)]
struct Fixture {
    vocabulary: Vec<String>,
    tokens: Vec<usize>,
    logits: Logits,
}

#[derive(Deserialize)]
struct Logits {
    shape: [usize; 2],
    data: Vec<f32>,
}

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fixture(name: &str) -> Fixture {
    let text = std::fs::read_to_string(fixture_path(&format!("{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn import(name: &str) -> Gpt {
    import_nanogpt(
        &fixture_path(&format!("{name}.safetensors")),
        N_HEADS,
        &device(),
    )
    .unwrap()
}

/// Both fixtures: nanoGPT's default (biases, head tied to the embedding, saved by
/// `save_model` under `lm_head.weight` only) and `bias=False` with an untied head and the
/// causal-mask buffer.
const FIXTURES: [&str; 2] = ["nanogpt_tied", "nanogpt_untied_nobias"];

#[test]
fn imported_models_give_pytorchs_logits() {
    for name in FIXTURES {
        let expected = fixture(name);
        let model = import(name);
        let config = model.config();
        assert_eq!(
            (
                config.vocab_size,
                config.d_model,
                config.n_layers,
                config.max_seq_len
            ),
            (33, 32, 2, 48),
            "{name}: config read off the shapes"
        );
        let logits = model.forward(row(&expected.tokens, &device())).unwrap();
        let [t, v] = expected.logits.shape;
        assert_eq!(logits.dims(), [1, t, v]);
        let diff = max_abs_diff(&values(logits), &expected.logits.data);
        assert!(diff <= TOLERANCE, "{name}: max |Δ logit| = {diff}");
    }
}

#[test]
fn cached_decoding_of_an_imported_model_gives_pytorchs_logits() {
    let device = device();
    for name in FIXTURES {
        let expected = fixture(name);
        let model = import(name);
        let v = expected.logits.shape[1];
        let mut cache = model.new_cache(1, &device);
        let prefill = 5;
        let first = model
            .forward_cached(row(&expected.tokens[..prefill], &device), &mut cache)
            .unwrap();
        let mut ours = values(first);
        for &token in &expected.tokens[prefill..] {
            let step: Tensor<3> = model
                .forward_cached(row(&[token], &device), &mut cache)
                .unwrap();
            ours.extend(values(step));
        }
        assert_eq!(ours.len(), expected.tokens.len() * v);
        let diff = max_abs_diff(&ours, &expected.logits.data);
        assert!(diff <= TOLERANCE, "{name}: max |Δ logit| = {diff}");
    }
}

#[test]
fn an_imported_model_saves_as_a_checkpoint_that_generates_but_cannot_resume() {
    let device = device();
    let expected = fixture("nanogpt_tied");
    let model = import("nanogpt_tied");
    let meta = std::fs::read_to_string(fixture_path("nanogpt_meta.json")).unwrap();
    let tokenizer = CharTokenizer::from_json_vocabulary(&meta).unwrap();
    let vocabulary: String = expected.vocabulary.concat();
    assert_eq!(tokenizer.chars().iter().collect::<String>(), vocabulary);
    let dir = temp_dir("nanogpt_checkpoint");
    let state = TrainState::imported("nanoGPT test fixture");
    checkpoint::save(&dir, &model, &tokenizer.into(), &state, None).unwrap();

    let loaded = checkpoint::load(&dir, &device).unwrap();
    assert_eq!(loaded.state, state);
    let tokens = row(&expected.tokens, &device);
    let diff = max_abs_diff(
        &values(loaded.model.forward(tokens).unwrap()),
        &expected.logits.data,
    );
    assert!(
        diff <= TOLERANCE,
        "max |Δ logit| after the checkpoint = {diff}"
    );
}

#[test]
fn vocabulary_files_in_the_accepted_forms_agree() {
    let list = r#"["a", "b", "\n"]"#;
    let itos_map = r#"{"vocab_size": 3, "itos": {"2": "\n", "0": "a", "1": "b"}}"#;
    let tinygpt_form = r#"{"chars": ["a", "b", "\n"]}"#;
    let expected = CharTokenizer::from_json_vocabulary(list).unwrap();
    assert_eq!(expected.chars(), &['a', 'b', '\n']);
    assert_eq!(
        CharTokenizer::from_json_vocabulary(itos_map).unwrap(),
        expected
    );
    assert_eq!(
        CharTokenizer::from_json_vocabulary(tinygpt_form).unwrap(),
        expected
    );

    for (bad, says) in [
        (r#"["a", "bc"]"#, "not one character"),
        (r#"["a", "a"]"#, "twice"),
        (r#"{"itos": {"0": "a", "2": "b"}}"#, "no token 1"),
        (r#"{"stoi": {}}"#, "`chars` or `itos`"),
        ("not json", "not JSON"),
    ] {
        let err = CharTokenizer::from_json_vocabulary(bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

/// The tied fixture with one change made by `edit`, written to a new file.
fn tampered(name: &str, edit: impl FnOnce(&mut Vec<NamedTensor>)) -> PathBuf {
    let mut tensors = read_safetensors(&fixture_path("nanogpt_tied.safetensors"));
    edit(&mut tensors);
    let path = temp_dir(name).join("ckpt.safetensors");
    write_safetensors(&path, &tensors);
    path
}

fn import_error(path: &Path, n_heads: usize) -> String {
    match import_nanogpt(path, n_heads, &device()) {
        Ok(_) => panic!("{} should not import", path.display()),
        Err(err @ Error::Weights { .. }) => err.to_string(),
        Err(other) => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn the_tampered_fixture_still_imports_when_nothing_is_changed() {
    // Guards the tests below: their files differ from a good one only by their edit.
    let path = tampered("untampered", |_| {});
    assert!(import_nanogpt(&path, N_HEADS, &device()).is_ok());
}

#[test]
fn mismatched_files_name_the_first_tensor_that_does_not_fit() {
    let missing = tampered("nano_missing", |tensors| {
        tensors.retain(|(name, _, _)| name != "transformer.h.1.mlp.c_fc.bias");
    });
    let err = import_error(&missing, N_HEADS);
    assert!(
        err.contains("missing tensor `transformer.h.1.mlp.c_fc.bias`"),
        "{err}"
    );

    let wrong_shape = tampered("nano_shape", |tensors| {
        let (_, shape, _) = tensors
            .iter_mut()
            .find(|(name, _, _)| name == "transformer.h.0.attn.c_attn.weight")
            .unwrap();
        *shape = vec![32, 96]; // transposed
    });
    let err = import_error(&wrong_shape, N_HEADS);
    assert!(
        err.contains("`transformer.h.0.attn.c_attn.weight` has shape [32, 96]")
            && err.contains("[96, 32]"),
        "{err}"
    );

    let extra = tampered("nano_extra", |tensors| {
        tensors.push((
            "transformer.h.0.attn.rotary".into(),
            vec![2],
            vec![0.0, 0.0],
        ));
    });
    let err = import_error(&extra, N_HEADS);
    assert!(
        err.contains("unexpected tensor `transformer.h.0.attn.rotary`"),
        "{err}"
    );

    let not_nanogpt = tampered("nano_foreign", |tensors| {
        tensors.retain(|(name, _, _)| name != "lm_head.weight");
    });
    let err = import_error(&not_nanogpt, N_HEADS);
    assert!(err.contains("not a nanoGPT model"), "{err}");
}

#[test]
fn a_head_count_that_does_not_divide_the_width_is_refused() {
    let err = import_error(&fixture_path("nanogpt_tied.safetensors"), 5);
    assert!(err.contains("divisible"), "{err}");
}

/// nanoGPT's own `generate(..., top_k=1)` past the context window, from
/// `scripts/make_nanogpt_crop_fixture.py`.
#[derive(Deserialize)]
struct CropFixture {
    block_size: usize,
    prompt: Vec<usize>,
    new_tokens: Vec<usize>,
}

#[test]
fn crop_generation_gives_nanogpts_own_tokens_past_the_context() {
    let text = std::fs::read_to_string(fixture_path("nanogpt_crop.json")).unwrap();
    let want: CropFixture = serde_json::from_str(&text).unwrap();
    let model = import("nanogpt_tied");
    assert_eq!(model.config().max_seq_len, want.block_size);
    assert!(
        want.prompt.len() + want.new_tokens.len() > 2 * want.block_size,
        "the fixture must reach well past the window"
    );
    let generator = Generator::new(&model, &device());
    for mode in [DecodeMode::Cached, DecodeMode::Naive] {
        let config = GenerationConfig::new(want.new_tokens.len())
            .with_mode(mode)
            .with_window(WindowPolicy::Crop);
        let got = generator
            .generate_all(std::slice::from_ref(&want.prompt), &config)
            .unwrap();
        let first_difference = got.tokens[0]
            .iter()
            .zip(&want.new_tokens)
            .position(|(a, b)| a != b);
        assert_eq!(
            first_difference, None,
            "{mode:?}: tinygpt and nanoGPT part at new token {first_difference:?}"
        );
        assert_eq!(got.tokens[0].len(), want.new_tokens.len());
    }
    // nanoGPT's policy matters: keeping half the window gives other tokens past it.
    let config = GenerationConfig::new(want.new_tokens.len());
    let slid = generator
        .generate_all(std::slice::from_ref(&want.prompt), &config)
        .unwrap();
    assert_ne!(slid.tokens[0], want.new_tokens);
}
