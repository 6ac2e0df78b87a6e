//! Weights that travel: tinygpt's safetensors export and load, and the nanoGPT import
//! ([`nanogpt`]).
//!
//! # tinygpt's safetensors layout
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
//! | `position_embedding.weight`                  | `[T, D]`   |
//! | `blocks.{i}.ln_1.weight`, `.bias`            | `[D]`      |
//! | `blocks.{i}.attn.{query,key,value}.weight`   | `[D, D]`   |
//! | `blocks.{i}.attn.{query,key,value}.bias`     | `[D]`      |
//! | `blocks.{i}.attn.output.weight`              | `[D, D]`   |
//! | `blocks.{i}.attn.output.bias`                | `[D]`      |
//! | `blocks.{i}.ln_2.weight`, `.bias`            | `[D]`      |
//! | `blocks.{i}.mlp.fc.weight`                   | `[4D, D]`  |
//! | `blocks.{i}.mlp.fc.bias`                     | `[4D]`     |
//! | `blocks.{i}.mlp.proj.weight`                 | `[D, 4D]`  |
//! | `blocks.{i}.mlp.proj.bias`                   | `[D]`      |
//! | `ln_f.weight`, `ln_f.bias`                   | `[D]`      |
//! | `lm_head.weight` (no bias, not tied)         | `[V, D]`   |
//!
//! The heads of `query`, `key` and `value` are consecutive blocks of `D / H` output rows. The
//! file's metadata holds the [`GptConfig`] as JSON under `tinygpt.config` and, when exported
//! with one, the vocabulary (a JSON array of one-character strings in id order) under
//! `tinygpt.vocabulary`, so the file alone is enough to rebuild the model
//! ([`load_safetensors`]). [`tensor_layout`] is this table as data; a test holds the exporter
//! to it.

pub mod nanogpt;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use burn::store::{
    BurnToPyTorchAdapter, ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore,
    bridge, burn_pack,
};
use burn::tensor::{DType, Device, TensorData};

use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig};
use crate::tokenizer::CharTokenizer;

/// Metadata key of the model config (JSON) in an exported file.
pub const CONFIG_KEY: &str = "tinygpt.config";
/// Metadata key of the vocabulary (a JSON array of one-character strings) in an exported file.
pub const VOCABULARY_KEY: &str = "tinygpt.vocabulary";

/// A tensor's name and shape.
pub type TensorSpec = (String, Vec<usize>);

/// The tensors of a model with `config` in tinygpt's safetensors layout (see the module docs),
/// in module order.
pub fn tensor_layout(config: &GptConfig) -> Vec<TensorSpec> {
    let (v, t, d) = (config.vocab_size, config.max_seq_len, config.d_model);
    let mut specs: Vec<TensorSpec> = vec![
        ("token_embedding.weight".into(), vec![v, d]),
        ("position_embedding.weight".into(), vec![t, d]),
    ];
    let mut push = |name: String, shape: Vec<usize>| specs.push((name, shape));
    for i in 0..config.n_layers {
        let block = format!("blocks.{i}");
        for norm in ["ln_1", "ln_2"] {
            push(format!("{block}.{norm}.weight"), vec![d]);
            push(format!("{block}.{norm}.bias"), vec![d]);
        }
        for projection in ["query", "key", "value", "output"] {
            push(format!("{block}.attn.{projection}.weight"), vec![d, d]);
            push(format!("{block}.attn.{projection}.bias"), vec![d]);
        }
        push(format!("{block}.mlp.fc.weight"), vec![4 * d, d]);
        push(format!("{block}.mlp.fc.bias"), vec![4 * d]);
        push(format!("{block}.mlp.proj.weight"), vec![d, 4 * d]);
        push(format!("{block}.mlp.proj.bias"), vec![d]);
    }
    push("ln_f.weight".into(), vec![d]);
    push("ln_f.bias".into(), vec![d]);
    push("lm_head.weight".into(), vec![v, d]);
    specs
}

/// Write `model`'s weights to `path` as safetensors in tinygpt's layout, with its config and,
/// if given, the vocabulary in the metadata. The file is written beside `path` and renamed into
/// place, so an existing file is replaced whole or not at all.
///
/// # Errors
/// [`Error::Weights`] when the file cannot be written.
pub fn export_safetensors(
    model: &Gpt,
    tokenizer: Option<&CharTokenizer>,
    path: &Path,
) -> Result<()> {
    let config = serde_json::to_string(model.config()).expect("a config serialises");
    let mut store = SafetensorsStore::from_file(path)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata(CONFIG_KEY, config)
        .overwrite(true);
    if let Some(tokenizer) = tokenizer {
        let chars: Vec<String> = tokenizer.chars().iter().map(char::to_string).collect();
        let vocabulary = serde_json::to_string(&chars).expect("strings serialise");
        store = store.metadata(VOCABULARY_KEY, vocabulary);
    }
    model
        .save_into(&mut store)
        .map_err(|err| weights_error(path, format!("cannot write the file ({err})")))
}

/// The config and vocabulary stored in an exported file's metadata.
///
/// # Errors
/// [`Error::Weights`] when the file is not safetensors, or has no tinygpt config (a file from
/// elsewhere: see [`nanogpt`] for nanoGPT's).
pub fn read_exported_header(path: &Path) -> Result<(GptConfig, Option<CharTokenizer>)> {
    let metadata = read_metadata(path)?;
    let config_json = metadata.get(CONFIG_KEY).ok_or_else(|| {
        weights_error(
            path,
            format!(
                "no `{CONFIG_KEY}` in its metadata, so it was not exported by tinygpt; import a \
                 nanoGPT file with the `import` example instead"
            ),
        )
    })?;
    let config: GptConfig = serde_json::from_str(config_json)
        .map_err(|err| weights_error(path, format!("unreadable `{CONFIG_KEY}` ({err})")))?;
    let tokenizer = match metadata.get(VOCABULARY_KEY) {
        None => None,
        Some(json) => {
            let tokenizer = parse_vocabulary(json)
                .map_err(|message| weights_error(path, format!("`{VOCABULARY_KEY}`: {message}")))?;
            Some(tokenizer)
        }
    };
    Ok((config, tokenizer))
}

/// Load a file written by [`export_safetensors`] onto `device`, with the config and vocabulary
/// from its metadata.
///
/// # Errors
/// [`Error::Weights`] when the file is unreadable, has no tinygpt config, or holds a tensor
/// whose name or shape does not fit that config (the message names the first one).
pub fn load_safetensors(path: &Path, device: &Device) -> Result<(Gpt, Option<CharTokenizer>)> {
    let (config, tokenizer) = read_exported_header(path)?;
    let tensors = read_tensors(path)?;
    check_layout(path, &tensors, &tensor_layout(&config), &|_| false)?;
    let model = apply_pytorch_layout(path, &config, tensors, device)?;
    Ok((model, tokenizer))
}

/// Every tensor of a safetensors file, as `f32` data, by name (read through burn-store).
///
/// # Errors
/// [`Error::Weights`] when the file is missing, is not safetensors, or holds a tensor that is
/// not floating point.
pub(crate) fn read_tensors(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    if !path.is_file() {
        return Err(weights_error(path, "no such file".into()));
    }
    let mut store = SafetensorsStore::from_file(path);
    let tensors = store
        .get_all_tensors()
        .map_err(|err| weights_error(path, format!("not a readable safetensors file ({err})")))?;
    tensors
        .iter()
        .map(|(name, tensor)| {
            let data = bridge::to_data(tensor)
                .map_err(|err| weights_error(path, format!("tensor `{name}`: {err}")))?;
            let data = match data.dtype() {
                DType::F32 => data,
                DType::F64 | DType::F16 | DType::BF16 => data.convert::<f32>(),
                other => {
                    return Err(weights_error(
                        path,
                        format!("tensor `{name}` is {other:?}; only floating point weights load"),
                    ));
                }
            };
            Ok((name.clone(), data))
        })
        .collect()
}

/// Check that `found` holds exactly the tensors of `expected` with their shapes, naming the
/// first one that is missing, has another shape, or is not expected (`ignore` lets through
/// names that are known to be harmless, such as buffers).
pub(crate) fn check_layout(
    path: &Path,
    found: &BTreeMap<String, TensorData>,
    expected: &[TensorSpec],
    ignore: &dyn Fn(&str) -> bool,
) -> Result<()> {
    for (name, shape) in expected {
        match found.get(name) {
            None => {
                return Err(weights_error(
                    path,
                    format!(
                        "missing tensor `{name}` (shape {shape:?}); the file does not fit the \
                         model config, or holds a different kind of model"
                    ),
                ));
            }
            Some(data) if data.shape().as_slice() != shape.as_slice() => {
                return Err(weights_error(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?} but the model config needs {shape:?}",
                        data.shape().as_slice()
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<&str> =
        expected.iter().map(|(name, _)| name.as_str()).collect();
    if let Some(extra) = found
        .keys()
        .find(|name| !known.contains(name.as_str()) && !ignore(name))
    {
        return Err(weights_error(
            path,
            format!(
                "unexpected tensor `{extra}` (shape {:?}); the model config has no such \
                 parameter (is the layer count right?)",
                found[extra].shape().as_slice()
            ),
        ));
    }
    Ok(())
}

/// A fresh model with `config` on `device`, its weights replaced by `tensors`, which must be in
/// tinygpt's safetensors layout (PyTorch conventions) and already checked by [`check_layout`].
pub(crate) fn apply_pytorch_layout(
    path: &Path,
    config: &GptConfig,
    tensors: BTreeMap<String, TensorData>,
    device: &Device,
) -> Result<Gpt> {
    let mut model = config
        .init(device)
        .map_err(|err| weights_error(path, format!("its config cannot work: {err}")))?;
    let snapshots: Vec<burn_pack::Tensor> = tensors
        .into_iter()
        .map(|(name, data)| bridge::from_data(data, name, None))
        .collect();
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    if let Some(error) = result.errors.first() {
        return Err(weights_error(
            path,
            format!("cannot apply the weights: {error}"),
        ));
    }
    if let Some((name, _)) = result.missing.first() {
        return Err(weights_error(
            path,
            format!("no tensor for the model's parameter `{name}`"),
        ));
    }
    Ok(model)
}

/// A vocabulary given as JSON: an array of one-character strings in id order, an object with
/// such an array under `chars` (tinygpt's `tokenizer.json`), or an object with `itos` as that
/// array or as an id-to-character map (nanoGPT's `meta.pkl`, written out as JSON).
pub fn parse_vocabulary(json: &str) -> std::result::Result<CharTokenizer, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|err| format!("not JSON ({err})"))?;
    let list = match &value {
        serde_json::Value::Array(_) => &value,
        serde_json::Value::Object(object) => object
            .get("chars")
            .or_else(|| object.get("itos"))
            .ok_or("expected an array of characters, or an object with `chars` or `itos`")?,
        _ => return Err("expected an array of characters or an object".into()),
    };
    let strings: Vec<String> = match list {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{item} is not a string"))
            })
            .collect::<std::result::Result<_, _>>()?,
        serde_json::Value::Object(map) => {
            let mut by_id: Vec<(usize, String)> = map
                .iter()
                .map(|(id, item)| {
                    let id = id
                        .parse::<usize>()
                        .map_err(|_| format!("`itos` key {id:?} is not a token id"))?;
                    let item = item
                        .as_str()
                        .ok_or_else(|| format!("`itos` value {item} is not a string"))?;
                    Ok((id, item.to_string()))
                })
                .collect::<std::result::Result<_, String>>()?;
            by_id.sort();
            if let Some((position, (id, _))) = by_id
                .iter()
                .enumerate()
                .find(|(position, (id, _))| position != id)
            {
                return Err(format!(
                    "`itos` has no token {position} (the next id is {id}); ids must run 0..V"
                ));
            }
            by_id.into_iter().map(|(_, item)| item).collect()
        }
        _ => return Err("the vocabulary must be an array or an id-to-character map".into()),
    };
    let chars = strings
        .iter()
        .map(|item| {
            let mut chars = item.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(format!(
                    "token {item:?} is not one character; tinygpt's tokenizer is character-level"
                )),
            }
        })
        .collect::<std::result::Result<Vec<char>, String>>()?;
    CharTokenizer::from_chars(chars).map_err(|err| err.to_string())
}

/// The `__metadata__` map of a safetensors file: its first 8 bytes are the header length
/// (little-endian), then comes the JSON header.
fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    /// Header size past which the file is taken to be something else: real headers are
    /// kilobytes (the format's own readers stop at 100 MB).
    const MAX_HEADER: u64 = 100 << 20;
    let not_safetensors =
        |detail: String| weights_error(path, format!("not a safetensors file ({detail})"));
    if !path.is_file() {
        return Err(weights_error(path, "no such file".into()));
    }
    let mut file = File::open(path).map_err(|err| weights_error(path, err.to_string()))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|_| not_safetensors("shorter than its 8-byte header length".into()))?;
    let length = u64::from_le_bytes(length);
    if length > MAX_HEADER {
        return Err(not_safetensors(format!("a header of {length} bytes")));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|_| not_safetensors("truncated header".into()))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|err| not_safetensors(format!("header is not JSON: {err}")))?;
    let metadata = header
        .get("__metadata__")
        .and_then(|value| value.as_object())
        .map(|object| {
            object
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(metadata)
}

pub(crate) fn weights_error(path: &Path, message: String) -> Error {
    Error::Weights {
        path: path.display().to_string(),
        message,
    }
}
