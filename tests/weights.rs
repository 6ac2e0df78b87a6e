//! tinygpt's own safetensors export: the documented layout, the round trip, and clear errors
//! for files that do not fit.

mod common;

use common::{
    NamedTensor, device, max_abs_diff, random_tokens, read_safetensors, row, small_model, temp_dir,
    write_safetensors,
};
use tinygpt::text::{CharTokenizer, Tokenizer};
use tinygpt::weights::{export_safetensors, load_safetensors, tensor_layout};
use tinygpt::{Error, MaskMode};

fn sorted_specs(tensors: &[NamedTensor]) -> Vec<(String, Vec<usize>)> {
    let mut specs: Vec<_> = tensors
        .iter()
        .map(|(name, shape, _)| (name.clone(), shape.clone()))
        .collect();
    specs.sort();
    specs
}

fn tokenizer() -> Tokenizer {
    CharTokenizer::from_text("abcdefghijklmnopqrstuvw")
        .unwrap()
        .into()
}

#[test]
fn the_export_writes_exactly_the_documented_tensors() {
    let device = device();
    let model = small_model(MaskMode::Causal, 1, &device);
    let path = temp_dir("export_layout").join("model.safetensors");
    export_safetensors(&model, None, &path).unwrap();

    let mut documented = tensor_layout(model.config());
    documented.sort();
    assert_eq!(sorted_specs(&read_safetensors(&path)), documented);
}

#[test]
fn exported_linear_weights_are_in_pytorch_out_by_in_layout() {
    let device = device();
    let model = small_model(MaskMode::Causal, 2, &device);
    let path = temp_dir("export_transpose").join("model.safetensors");
    export_safetensors(&model, None, &path).unwrap();

    let tensors = read_safetensors(&path);
    let exported = |name: &str| {
        tensors
            .iter()
            .find(|(found, _, _)| found == name)
            .unwrap_or_else(|| panic!("{name} exported"))
            .2
            .clone()
    };
    // Burn keeps fc as [D, 4D] (in, out); the file must hold its transpose, [4D, D].
    let burn_fc = common::values(model.blocks[0].mlp.fc.weight.val());
    let (d_in, d_out) = (32, 128);
    let file_fc = exported("blocks.0.mlp.fc.weight");
    for i in 0..d_in {
        for o in 0..d_out {
            assert_eq!(
                file_fc[o * d_in + i],
                burn_fc[i * d_out + o],
                "fc[{o}, {i}]"
            );
        }
    }
    // LayerNorm's gamma is exported under PyTorch's name.
    assert_eq!(
        exported("ln_f.weight"),
        common::values(model.ln_f.gamma.val())
    );
}

#[test]
fn export_then_load_gives_identical_logits_and_vocabulary() {
    let device = device();
    let model = small_model(MaskMode::Causal, 3, &device);
    let path = temp_dir("export_round_trip").join("model.safetensors");
    export_safetensors(&model, Some(&tokenizer()), &path).unwrap();

    let (loaded, loaded_tokenizer) = load_safetensors(&path, &device).unwrap();
    assert_eq!(loaded.config(), model.config());
    assert_eq!(loaded_tokenizer, Some(tokenizer()));
    let tokens = row(&random_tokens(20, 23, 4), &device);
    let diff = max_abs_diff(
        model.forward(tokens.clone()).unwrap(),
        loaded.forward(tokens).unwrap(),
    );
    assert_eq!(diff, 0.0, "a round trip must not change a weight");
}

#[test]
fn a_byte_level_tokenizer_travels_in_the_export_too() {
    let device = device();
    let bpe = Tokenizer::Bpe(Box::new(
        tinygpt::text::tokenizer::BpeTokenizer::train(tinygpt::text::BUNDLED_CORPUS, 300).unwrap(),
    ));
    let model = tinygpt::GptConfig::new(bpe.vocab_size())
        .with_d_model(16)
        .with_n_heads(2)
        .with_n_layers(1)
        .with_max_seq_len(8)
        .init(&device)
        .unwrap();
    let path = temp_dir("export_bpe").join("model.safetensors");
    export_safetensors(&model, Some(&bpe), &path).unwrap();
    let (_, loaded) = load_safetensors(&path, &device).unwrap();
    assert_eq!(loaded, Some(bpe));
}

#[test]
fn exporting_over_an_existing_file_replaces_it() {
    let device = device();
    let path = temp_dir("export_overwrite").join("model.safetensors");
    export_safetensors(&small_model(MaskMode::Causal, 5, &device), None, &path).unwrap();
    let second = small_model(MaskMode::Causal, 6, &device);
    export_safetensors(&second, None, &path).unwrap();
    let (loaded, _) = load_safetensors(&path, &device).unwrap();
    let tokens = row(&random_tokens(8, 23, 7), &device);
    let diff = max_abs_diff(
        second.forward(tokens.clone()).unwrap(),
        loaded.forward(tokens).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

/// An exported file with one thing changed by `edit`, written back with the same metadata.
fn tampered_export(name: &str, edit: impl FnOnce(&mut Vec<NamedTensor>)) -> std::path::PathBuf {
    let device = device();
    let model = small_model(MaskMode::Causal, 8, &device);
    let dir = temp_dir(name);
    let original = dir.join("model.safetensors");
    export_safetensors(&model, None, &original).unwrap();
    let mut tensors = read_safetensors(&original);
    edit(&mut tensors);
    // Keep the metadata (the config) by splicing the original header's metadata back in.
    let bytes = std::fs::read(&original).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let tampered = dir.join("tampered.safetensors");
    write_safetensors(&tampered, &tensors);
    let bytes = std::fs::read(&tampered).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut new_header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    new_header["__metadata__"] = header["__metadata__"].clone();
    let new_header = serde_json::to_vec(&new_header).unwrap();
    let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&new_header);
    out.extend_from_slice(&bytes[8 + len..]);
    std::fs::write(&tampered, out).unwrap();
    tampered
}

fn load_error(path: &std::path::Path) -> String {
    match load_safetensors(path, &device()) {
        Ok(_) => panic!("{} should not load", path.display()),
        Err(err @ Error::Weights { .. }) => err.to_string(),
        Err(other) => panic!("expected a weights error, got {other:?}"),
    }
}

#[test]
fn a_missing_tensor_is_named() {
    let path = tampered_export("missing_tensor", |tensors| {
        tensors.retain(|(name, _, _)| name != "blocks.1.attn.value.bias");
    });
    let err = load_error(&path);
    assert!(
        err.contains("missing tensor `blocks.1.attn.value.bias`"),
        "{err}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let path = tampered_export("wrong_shape", |tensors| {
        let (_, shape, _) = tensors
            .iter_mut()
            .find(|(name, _, _)| name == "blocks.0.mlp.fc.weight")
            .unwrap();
        *shape = vec![32, 128]; // Burn's layout instead of PyTorch's
    });
    let err = load_error(&path);
    assert!(
        err.contains("`blocks.0.mlp.fc.weight` has shape [32, 128]") && err.contains("[128, 32]"),
        "{err}"
    );
}

#[test]
fn an_unexpected_tensor_is_named() {
    let path = tampered_export("extra_tensor", |tensors| {
        tensors.push(("blocks.2.ln_1.weight".into(), vec![32], vec![1.0; 32]));
    });
    let err = load_error(&path);
    assert!(
        err.contains("unexpected tensor `blocks.2.ln_1.weight`"),
        "{err}"
    );
}

#[test]
fn files_that_are_not_tinygpt_safetensors_are_refused_clearly() {
    let dir = temp_dir("not_safetensors");
    let err = load_error(&dir.join("absent.safetensors"));
    assert!(err.contains("no such file"), "{err}");

    let text = dir.join("notes.safetensors");
    std::fs::write(&text, "hello, this is text").unwrap();
    let err = load_error(&text);
    assert!(err.contains("not a safetensors file"), "{err}");

    // A valid safetensors file without tinygpt's config: the message points at the import.
    let foreign = dir.join("foreign.safetensors");
    write_safetensors(&foreign, &[("w".into(), vec![2], vec![1.0, 2.0])]);
    let err = load_error(&foreign);
    assert!(
        err.contains("tinygpt.config") && err.contains("import"),
        "{err}"
    );
}

#[test]
fn a_tensor_holding_a_nan_is_refused_by_name() {
    let path = tampered_export("nan_tensor", |tensors| {
        let (_, _, values) = tensors
            .iter_mut()
            .find(|(name, _, _)| name == "ln_f.weight")
            .unwrap();
        values[3] = f32::NAN;
    });
    let err = load_error(&path);
    assert!(
        err.contains("`ln_f.weight`") && err.contains("not finite"),
        "{err}"
    );
}

/// A model with its LM head tied to the token embedding.
fn tied_model(device: &burn::tensor::Device) -> tinygpt::Gpt {
    common::small_config(MaskMode::Causal)
        .with_tie_embeddings(true)
        .init_seeded(8, device)
        .unwrap()
}

#[test]
fn a_tied_head_scores_with_the_token_embedding_and_round_trips() {
    use burn::module::{Module, Param};
    let device = device();
    let tied = tied_model(&device);
    assert!(tied.lm_head.is_none());
    // The same model with an explicit head holding the embedding, transposed, must agree.
    let mut untied = tied.clone();
    let mut head = burn::nn::LinearConfig::new(32, 23)
        .with_bias(false)
        .init(&device);
    head.weight = Param::from_tensor(tied.token_embedding.weight.val().transpose());
    untied.lm_head = Some(head);
    let tokens = row(&random_tokens(20, 23, 4), &device);
    let diff = max_abs_diff(
        tied.forward(tokens.clone()).unwrap(),
        untied.forward(tokens.clone()).unwrap(),
    );
    assert!(diff <= 1e-6, "tied head differs from W_Eᵀ by {diff}");
    assert_eq!(tied.num_params() + 23 * 32, untied.num_params());

    // The export leaves the head out, as its layout says, and loads back tied.
    let path = temp_dir("export_tied").join("model.safetensors");
    export_safetensors(&tied, None, &path).unwrap();
    let mut documented = tensor_layout(tied.config());
    documented.sort();
    assert_eq!(sorted_specs(&read_safetensors(&path)), documented);
    assert!(!documented.iter().any(|(name, _)| name == "lm_head.weight"));
    let (loaded, _) = load_safetensors(&path, &device).unwrap();
    assert!(loaded.config().tie_embeddings);
    let diff = max_abs_diff(
        tied.forward(tokens.clone()).unwrap(),
        loaded.forward(tokens).unwrap(),
    );
    assert_eq!(diff, 0.0);
}

#[test]
fn a_config_written_before_tied_embeddings_reads_untied() {
    let mut json = serde_json::to_value(common::small_config(MaskMode::Causal)).unwrap();
    json.as_object_mut().unwrap().remove("tie_embeddings");
    let config = tinygpt::GptConfig::from_json(&json.to_string()).unwrap();
    assert!(!config.tie_embeddings);
    assert_eq!(config, common::small_config(MaskMode::Causal));
}
