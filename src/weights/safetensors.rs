//! tinygpt's own safetensors layout: export, and load back with the config and vocabulary the
//! file carries.
//!
//! # The layout
//! [`export_safetensors`] writes every parameter under its path in the [`Gpt`] module tree, in
//! PyTorch's conventions so that any safetensors reader (Python's `safetensors`, candle, a
//! `torch.nn.Module` with the same names) gets tensors it can use as they are: a linear layer's
//! weight is `[out, in]` (Burn keeps it as `[in, out]` and transposes on the way out), a
//! LayerNorm's scale and shift are `weight` and `bias` (Burn's `gamma` and `beta`). All are
//! `f32`. With `V` the vocabulary, `T` the context window, `D` the width and `i` in `0..L`:
//!
//! | name                                         | shape      |
//! |----------------------------------------------|------------|
//! | `token_embedding.weight`                     | `[V, D]`   |
//! | `position_embedding.weight` (absent with RoPE) | `[T, D]` |
//! | `blocks.{i}.ln_1.weight`, `.bias`            | `[D]`      |
//! | `blocks.{i}.attn.query.weight`               | `[D, D]`   |
//! | `blocks.{i}.attn.query.bias`                 | `[D]`      |
//! | `blocks.{i}.attn.{key,value}.weight`         | `[H_kv·Dh, D]` (`[D, D]` without GQA) |
//! | `blocks.{i}.attn.{key,value}.bias`           | `[H_kv·Dh]` |
//! | `blocks.{i}.attn.output.weight`              | `[D, D]`   |
//! | `blocks.{i}.attn.output.bias`                | `[D]`      |
//! | `blocks.{i}.ln_2.weight`, `.bias`            | `[D]`      |
//! | `blocks.{i}.mlp.fc.weight`                   | `[4D, D]`  |
//! | `blocks.{i}.mlp.fc.bias`                     | `[4D]`     |
//! | `blocks.{i}.mlp.proj.weight`                 | `[D, 4D]`  |
//! | `blocks.{i}.mlp.proj.bias`                   | `[D]`      |
//! | `ln_f.weight`, `ln_f.bias`                   | `[D]`      |
//! | `lm_head.weight` (no bias; absent when tied) | `[V, D]`   |
//!
//! The heads of `query`, `key` and `value` are consecutive blocks of `Dh = D / H` output rows
//! (`key` and `value` hold `H_kv` of them with grouped-query attention). The
//! file's metadata holds the [`GptConfig`] as JSON under `tinygpt.config` and, when exported
//! with one, the tokenizer: a character vocabulary as a JSON array of one-character strings in
//! id order under `tinygpt.vocabulary`, a byte-level one as its `tokenizer.json` under
//! `tinygpt.tokenizer`. The file alone is enough to rebuild the model
//! ([`load_safetensors`]). [`tensor_layout`] is this table as data; a test holds the exporter
//! to it.

use std::path::Path;

use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;

use super::file::{TensorSpec, apply_pytorch_layout, check_layout, read_metadata, read_tensors};
use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig, PositionScheme};
use crate::text::{CharTokenizer, Tokenizer};

/// Metadata key of the model config (JSON) in an exported file.
pub const CONFIG_KEY: &str = "tinygpt.config";
/// Metadata key of the vocabulary (a JSON array of one-character strings) in an exported file
/// of a character-level model.
pub const VOCABULARY_KEY: &str = "tinygpt.vocabulary";
/// Metadata key of the tokenizer (its `tokenizer.json`) in an exported file of a model with a
/// byte-level tokenizer.
pub const TOKENIZER_KEY: &str = "tinygpt.tokenizer";

/// The tensors of a model with `config` in tinygpt's safetensors layout (see the module docs),
/// in module order.
pub fn tensor_layout(config: &GptConfig) -> Vec<TensorSpec> {
    let (v, t, d) = (config.vocab_size, config.max_seq_len, config.d_model);
    let mut specs: Vec<TensorSpec> = vec![("token_embedding.weight".into(), vec![v, d])];
    if config.position == PositionScheme::Learned {
        specs.push(("position_embedding.weight".into(), vec![t, d]));
    }
    let mut push = |name: String, shape: Vec<usize>| specs.push((name, shape));
    for i in 0..config.n_layers {
        let block = format!("blocks.{i}");
        for norm in ["ln_1", "ln_2"] {
            push(format!("{block}.{norm}.weight"), vec![d]);
            push(format!("{block}.{norm}.bias"), vec![d]);
        }
        // Key and value project to the key/value heads only: `H_kv·Dh` rows (fewer than `D`
        // with grouped-query attention).
        let kv = config.kv_heads() * config.head_dim();
        for (projection, rows) in [("query", d), ("key", kv), ("value", kv), ("output", d)] {
            push(format!("{block}.attn.{projection}.weight"), vec![rows, d]);
            push(format!("{block}.attn.{projection}.bias"), vec![rows]);
        }
        push(format!("{block}.mlp.fc.weight"), vec![4 * d, d]);
        push(format!("{block}.mlp.fc.bias"), vec![4 * d]);
        push(format!("{block}.mlp.proj.weight"), vec![d, 4 * d]);
        push(format!("{block}.mlp.proj.bias"), vec![d]);
    }
    push("ln_f.weight".into(), vec![d]);
    push("ln_f.bias".into(), vec![d]);
    if !config.tie_embeddings {
        push("lm_head.weight".into(), vec![v, d]);
    }
    specs
}

/// Write `model`'s weights to `path` as safetensors in tinygpt's layout, with its config and,
/// if given, the vocabulary in the metadata. The file is written beside `path` and renamed into
/// place, so an existing file is replaced whole or not at all.
///
/// # Errors
/// [`Error::Weights`] when the file cannot be written.
pub fn export_safetensors(model: &Gpt, tokenizer: Option<&Tokenizer>, path: &Path) -> Result<()> {
    let config = serde_json::to_string(model.config()).expect("a config serialises");
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata(CONFIG_KEY, config)
        .overwrite(true);
    match tokenizer {
        Some(Tokenizer::Char(chars)) => {
            let chars: Vec<String> = chars.chars().iter().map(char::to_string).collect();
            let vocabulary = serde_json::to_string(&chars).expect("strings serialise");
            store = store.metadata(VOCABULARY_KEY, vocabulary);
        }
        Some(other) => store = store.metadata(TOKENIZER_KEY, other.to_json()),
        None => {}
    }
    model
        .save_into(&mut store)
        .map_err(|err| Error::weights(path, format!("cannot write the file ({err})")))?;
    crate::fs::give_default_permissions(path)
}

/// The config and vocabulary stored in an exported file's metadata.
///
/// # Errors
/// [`Error::Weights`] when the file is not safetensors, or has no tinygpt config (a file from
/// elsewhere: see [`super::nanogpt`] for nanoGPT's).
pub fn read_exported_header(path: &Path) -> Result<(GptConfig, Option<Tokenizer>)> {
    let metadata = read_metadata(path)?;
    let config_json = metadata.get(CONFIG_KEY).ok_or_else(|| {
        Error::weights(
            path,
            format!(
                "no `{CONFIG_KEY}` in its metadata, so it was not exported by tinygpt (a nanoGPT \
                 file loads with `weights::import_nanogpt`)"
            ),
        )
    })?;
    let config = GptConfig::from_json(config_json)
        .map_err(|err| Error::weights(path, format!("unreadable `{CONFIG_KEY}` ({err})")))?;
    let tokenizer = match (metadata.get(VOCABULARY_KEY), metadata.get(TOKENIZER_KEY)) {
        (Some(json), _) => Some(Tokenizer::Char(
            CharTokenizer::from_json_vocabulary(json).map_err(|err| {
                Error::weights_caused(path, format!("unreadable `{VOCABULARY_KEY}`"), err)
            })?,
        )),
        (None, Some(json)) => Some(Tokenizer::from_json(json).map_err(|err| {
            Error::weights_caused(path, format!("unreadable `{TOKENIZER_KEY}`"), err)
        })?),
        (None, None) => None,
    };
    Ok((config, tokenizer))
}

/// Load a file written by [`export_safetensors`] onto `device`, with the config and vocabulary
/// from its metadata.
///
/// # Errors
/// [`Error::Weights`] when the file is unreadable, has no tinygpt config, or holds a tensor
/// whose name or shape does not fit that config (the message names the first one).
pub fn load_safetensors(path: &Path, device: &Device) -> Result<(Gpt, Option<Tokenizer>)> {
    let (config, tokenizer) = read_exported_header(path)?;
    let tensors = read_tensors(path)?;
    check_layout(path, &tensors, &tensor_layout(&config), &|_| false)?;
    let model = apply_pytorch_layout(path, &config, tensors, device)?;
    Ok((model, tokenizer))
}
