//! Hugging Face GPT-2 (`transformers.GPT2LMHeadModel`) in and out: a directory with
//! `config.json` and `model.safetensors`.
//!
//! GPT-2 is the network tinygpt builds with learned positions, multi-head attention, biases and
//! the tanh GELU (`gelu_new`); only the names and two layouts differ. Hugging Face's `Conv1D`
//! keeps its weight `[in, out]` (a `torch.nn.Linear` keeps `[out, in]`), and `c_attn` packs the
//! query, key and value projections side by side along its output axis:
//!
//! | Hugging Face (`transformer.` prefix optional) | tinygpt                                    |
//! |-----------------------------------------------|--------------------------------------------|
//! | `wte.weight` `[V, D]`                         | `token_embedding.weight`                   |
//! | `wpe.weight` `[n_positions, D]`               | `position_embedding.weight`                |
//! | `h.{i}.ln_1.{weight,bias}`                    | `blocks.{i}.ln_1.{gamma,beta}`             |
//! | `h.{i}.attn.c_attn.weight` `[D, 3D]`          | `blocks.{i}.attn.{query,key,value}.weight`: columns `0..D`, `D..2D`, `2D..3D` |
//! | `h.{i}.attn.c_attn.bias` `[3D]`               | `blocks.{i}.attn.{query,key,value}.bias`   |
//! | `h.{i}.attn.c_proj.*` `[D, D]`                | `blocks.{i}.attn.output.*`                 |
//! | `h.{i}.ln_2.*`                                | `blocks.{i}.ln_2.*`                        |
//! | `h.{i}.mlp.c_fc.*` `[D, 4D]`                  | `blocks.{i}.mlp.fc.*`                      |
//! | `h.{i}.mlp.c_proj.*` `[4D, D]`                | `blocks.{i}.mlp.proj.*`                    |
//! | `ln_f.*`                                      | `ln_f.*`                                   |
//! | `lm_head.weight` `[V, D]`, absent when tied   | `lm_head.weight`, or the tied embedding    |
//!
//! Burn's `Linear` keeps its weight `[in, out]` too, so a `Conv1D` weight is a Burn weight as it
//! is. `config.json` gives the sizes, `layer_norm_epsilon`, `activation_function` and
//! `tie_word_embeddings`; a setting tinygpt cannot represent is refused with its field named.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::{Device, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{Value, json};

use super::file::{
    TensorSpec, apply_pytorch_layout, check_layout, floats, insert_qkv, read_tensors,
};
use crate::error::{Error, Result};
use crate::model::{Activation, Gpt, GptConfig, MaskMode, PositionScheme};

/// The config file of a Hugging Face model directory.
pub const HF_CONFIG: &str = "config.json";
/// The weights file of a Hugging Face model directory.
pub const HF_WEIGHTS: &str = "model.safetensors";

/// Load the `GPT2LMHeadModel` saved in `dir` (`config.json` + `model.safetensors`) onto
/// `device`.
///
/// # Errors
/// [`Error::Weights`] naming the file and the field or tensor that is missing, has another
/// shape or value than a GPT-2 tinygpt can run, or is unexpected.
pub fn import_hf(dir: &Path, device: &Device) -> Result<Gpt> {
    let config_path = dir.join(HF_CONFIG);
    let weights_path = dir.join(HF_WEIGHTS);
    if !dir.is_dir() {
        return Err(Error::weights(
            dir,
            "is not a directory; give the directory holding config.json and model.safetensors",
        ));
    }
    if !weights_path.is_file() {
        let hint = match dir.join("pytorch_model.bin").is_file() {
            true => {
                "; it has pytorch_model.bin only: save it again with a recent transformers \
                 (`save_pretrained` writes safetensors)"
            }
            false => "",
        };
        return Err(Error::weights(&weights_path, format!("no such file{hint}")));
    }
    let config = read_config(&config_path)?;
    let mut tensors: BTreeMap<String, TensorData> = read_tensors(&weights_path)?
        .into_iter()
        .map(|(name, data)| {
            let name = name
                .strip_prefix("transformer.")
                .unwrap_or(&name)
                .to_string();
            (name, data)
        })
        .collect();
    check_layout(
        &weights_path,
        &tensors,
        &hf_layout(&config),
        &is_mask_buffer,
    )?;
    let mut take = |name: &str| {
        tensors
            .remove(name)
            .unwrap_or_else(|| panic!("`{name}` was checked by check_layout"))
    };

    // `apply_pytorch_layout` takes tinygpt's exported layout (PyTorch's `[out, in]`), so the
    // `[in, out]` weights are turned once here.
    let d = config.d_model;
    let mut ours: BTreeMap<String, TensorData> = BTreeMap::new();
    ours.insert("token_embedding.weight".into(), take("wte.weight"));
    ours.insert("position_embedding.weight".into(), take("wpe.weight"));
    for i in 0..config.n_layers {
        let (from, to) = (format!("h.{i}"), format!("blocks.{i}"));
        for norm in ["ln_1", "ln_2"] {
            ours.insert(
                format!("{to}.{norm}.weight"),
                take(&format!("{from}.{norm}.weight")),
            );
            ours.insert(
                format!("{to}.{norm}.bias"),
                take(&format!("{from}.{norm}.bias")),
            );
        }
        // c_attn's output columns are [q | k | v]; as [out, in] rows, q, k and v are its
        // three consecutive blocks of D rows.
        let qkv = transposed(take(&format!("{from}.attn.c_attn.weight")));
        let qkv_bias = floats(take(&format!("{from}.attn.c_attn.bias")));
        insert_qkv(&mut ours, &to, &qkv, &qkv_bias, d);
        for (hf, tiny) in [
            ("attn.c_proj", "attn.output"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.proj"),
        ] {
            let weight = take(&format!("{from}.{hf}.weight"));
            let [fan_in, fan_out] = dims2(&weight);
            ours.insert(
                format!("{to}.{tiny}.weight"),
                TensorData::new(transposed(weight), [fan_out, fan_in]),
            );
            ours.insert(
                format!("{to}.{tiny}.bias"),
                take(&format!("{from}.{hf}.bias")),
            );
        }
    }
    ours.insert("ln_f.weight".into(), take("ln_f.weight"));
    ours.insert("ln_f.bias".into(), take("ln_f.bias"));
    if !config.tie_embeddings {
        ours.insert("lm_head.weight".into(), take("lm_head.weight"));
    }
    apply_pytorch_layout(&weights_path, &config, ours, device)
}

/// The [`GptConfig`] of a GPT-2 `config.json`.
///
/// # Errors
/// [`Error::Weights`] naming the first field that is missing, malformed, or set to something
/// tinygpt's model does not compute.
pub fn read_config(path: &Path) -> Result<GptConfig> {
    let text = std::fs::read_to_string(path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => Error::weights(path, "no such file"),
        _ => Error::io(path, "read", err),
    })?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|err| Error::weights(path, format!("not JSON ({err})")))?;
    let field = |name: &str| value.get(name).filter(|v| !v.is_null());
    let refuse = |name: &str, why: String| Error::weights(path, format!("`{name}`: {why}"));
    let size = |name: &str| -> Result<usize> {
        let found = field(name).ok_or_else(|| refuse(name, "missing".into()))?;
        found
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| refuse(name, format!("{found} is not a positive whole number")))
    };
    let flag = |name: &str, default: bool| -> Result<bool> {
        match field(name) {
            None => Ok(default),
            Some(found) => found
                .as_bool()
                .ok_or_else(|| refuse(name, format!("{found} is not true or false"))),
        }
    };
    if let Some(kind) = field("model_type")
        && kind != "gpt2"
    {
        return Err(refuse(
            "model_type",
            format!("{kind} is not \"gpt2\"; only GPT-2 models import"),
        ));
    }
    let d_model = size("n_embd")?;
    if let Some(inner) = field("n_inner")
        && inner.as_u64() != Some(4 * d_model as u64)
    {
        return Err(refuse(
            "n_inner",
            format!(
                "{inner}, but tinygpt's MLP is 4 x n_embd = {} wide",
                4 * d_model
            ),
        ));
    }
    let activation = match field("activation_function") {
        None => Activation::GeluTanh,
        Some(name) => name
            .as_str()
            .and_then(Activation::from_hf_name)
            .ok_or_else(|| {
                refuse(
                    "activation_function",
                    format!("{name} is not one tinygpt computes: gelu_new or gelu"),
                )
            })?,
    };
    for (name, default, wanted, why) in [
        (
            "scale_attn_weights",
            true,
            true,
            "tinygpt always scales scores by 1/sqrt(Dh)",
        ),
        (
            "scale_attn_by_inverse_layer_idx",
            false,
            false,
            "tinygpt does not scale scores by layer",
        ),
        (
            "add_cross_attention",
            false,
            false,
            "tinygpt has no cross-attention",
        ),
    ] {
        if flag(name, default)? != wanted {
            return Err(refuse(name, format!("{} is not supported: {why}", !wanted)));
        }
    }
    let epsilon = match field("layer_norm_epsilon") {
        None => 1e-5,
        Some(found) => found
            .as_f64()
            .ok_or_else(|| refuse("layer_norm_epsilon", format!("{found} is not a number")))?,
    };
    let config = GptConfig::new(size("vocab_size")?)
        .with_d_model(d_model)
        .with_n_heads(size("n_head")?)
        .with_n_layers(size("n_layer")?)
        .with_max_seq_len(size("n_positions")?)
        .with_tie_embeddings(flag("tie_word_embeddings", true)?)
        .with_activation(activation)
        .with_layer_norm_epsilon(epsilon);
    config.validate().map_err(|err| {
        Error::weights(
            path,
            format!("the sizes give a model that cannot work: {err}"),
        )
    })?;
    Ok(config)
}

/// The tensors of a GPT-2 with `config`, under Hugging Face's names without the
/// `transformer.` prefix.
fn hf_layout(config: &GptConfig) -> Vec<TensorSpec> {
    let (v, t, d) = (config.vocab_size, config.max_seq_len, config.d_model);
    let mut specs: Vec<TensorSpec> = vec![
        ("wte.weight".into(), vec![v, d]),
        ("wpe.weight".into(), vec![t, d]),
    ];
    for i in 0..config.n_layers {
        let block = format!("h.{i}");
        for (name, weight, out) in [
            ("ln_1", vec![d], d),
            ("attn.c_attn", vec![d, 3 * d], 3 * d),
            ("attn.c_proj", vec![d, d], d),
            ("ln_2", vec![d], d),
            ("mlp.c_fc", vec![d, 4 * d], 4 * d),
            ("mlp.c_proj", vec![4 * d, d], d),
        ] {
            specs.push((format!("{block}.{name}.weight"), weight));
            specs.push((format!("{block}.{name}.bias"), vec![out]));
        }
    }
    specs.push(("ln_f.weight".into(), vec![d]));
    specs.push(("ln_f.bias".into(), vec![d]));
    if !config.tie_embeddings {
        specs.push(("lm_head.weight".into(), vec![v, d]));
    }
    specs
}

/// The causal-mask buffers older `transformers` versions saved with every attention layer.
fn is_mask_buffer(name: &str) -> bool {
    name.starts_with("h.") && (name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"))
}

/// Write `model` to `dir` as a Hugging Face `GPT2LMHeadModel`: `config.json` and
/// `model.safetensors` (names with the `transformer.` prefix, `Conv1D` weights `[in, out]`,
/// `lm_head.weight` only when untied), each written whole or not at all.
///
/// # Errors
/// [`Error::Config`] for a model GPT-2 cannot express (rotary positions, grouped-query
/// attention, a leaky mask), naming the setting; [`Error::Io`] when a file cannot be written.
pub fn export_hf(model: &Gpt, dir: &Path) -> Result<Vec<PathBuf>> {
    let config = model.config();
    check_exportable(config)?;
    crate::fs::ensure_dir(dir)?;
    // Each tensor as its little-endian f32 bytes, safetensors' layout.
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut push = |name: String, data: TensorData| {
        let shape = data.shape().as_slice().to_vec();
        let bytes = floats(data).iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name, shape, bytes));
    };
    let prefix = "transformer";
    push(
        format!("{prefix}.wte.weight"),
        model.token_embedding.weight.val().into_data(),
    );
    if let Some(positions) = &model.position_embedding {
        push(
            format!("{prefix}.wpe.weight"),
            positions.weight.val().into_data(),
        );
    }
    for (i, block) in model.blocks.iter().enumerate() {
        let name = |part: &str| format!("{prefix}.h.{i}.{part}");
        for (norm, layer) in [("ln_1", &block.ln_1), ("ln_2", &block.ln_2)] {
            push(
                name(&format!("{norm}.weight")),
                layer.gamma.val().into_data(),
            );
            let beta = layer
                .beta
                .as_ref()
                .expect("the model's layer norms have a bias");
            push(name(&format!("{norm}.bias")), beta.val().into_data());
        }
        let attn = &block.attn;
        // Burn's [in, out] weights side by side along the output axis are c_attn's.
        let qkv = burn::tensor::Tensor::cat(
            vec![
                attn.query.weight.val(),
                attn.key.weight.val(),
                attn.value.weight.val(),
            ],
            1,
        );
        push(name("attn.c_attn.weight"), qkv.into_data());
        let bias = |layer: &burn::nn::Linear| {
            layer
                .bias
                .as_ref()
                .expect("the model's projections have a bias")
                .val()
        };
        let qkv_bias = burn::tensor::Tensor::cat(
            vec![bias(&attn.query), bias(&attn.key), bias(&attn.value)],
            0,
        );
        push(name("attn.c_attn.bias"), qkv_bias.into_data());
        for (part, layer) in [
            ("attn.c_proj", &attn.output),
            ("mlp.c_fc", &block.mlp.fc),
            ("mlp.c_proj", &block.mlp.proj),
        ] {
            push(
                name(&format!("{part}.weight")),
                layer.weight.val().into_data(),
            );
            push(name(&format!("{part}.bias")), bias(layer).into_data());
        }
    }
    push(
        format!("{prefix}.ln_f.weight"),
        model.ln_f.gamma.val().into_data(),
    );
    let beta = model
        .ln_f
        .beta
        .as_ref()
        .expect("the final layer norm has a bias");
    push(format!("{prefix}.ln_f.bias"), beta.val().into_data());
    if let Some(head) = &model.lm_head {
        // A Linear's [in, out] = [D, V]; PyTorch's lm_head is an nn.Linear, [out, in].
        push(
            "lm_head.weight".into(),
            head.weight.val().transpose().into_data(),
        );
    }

    let weights_path = dir.join(HF_WEIGHTS);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), values)
                .expect("the shape matches the data");
            (name.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|err| Error::weights(&weights_path, format!("cannot serialise ({err})")))?;
    crate::fs::write_atomically(&weights_path, &bytes)?;
    let config_path = dir.join(HF_CONFIG);
    let json = serde_json::to_string_pretty(&hf_config(config)).expect("JSON serialises");
    crate::fs::write_atomically(&config_path, json.as_bytes())?;
    Ok(vec![config_path, weights_path])
}

/// Refuse a model that a `GPT2LMHeadModel` cannot express, naming the setting.
///
/// # Errors
/// [`Error::Config`] for rotary positions, grouped-query attention or a leaky mask.
fn check_exportable(config: &GptConfig) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::Config(format!(
            "GPT-2 cannot express this model: {what}"
        )))
    };
    if config.position != PositionScheme::Learned {
        return refuse(format!(
            "position is {} (GPT-2 learns a position table; train with --position learned)",
            config.position
        ));
    }
    if config.kv_heads() != config.n_heads {
        return refuse(format!(
            "n_kv_heads is {} of {} heads (GPT-2 has one key/value head per head)",
            config.kv_heads(),
            config.n_heads
        ));
    }
    if config.mask_mode != MaskMode::Causal {
        return refuse(format!(
            "mask_mode is {} (GPT-2's attention is causal)",
            config.mask_mode
        ));
    }
    Ok(())
}

/// GPT-2's `config.json` for `config`.
fn hf_config(config: &GptConfig) -> Value {
    // GPT-2's own vocabulary ends with <|endoftext|>; a model of another vocabulary has no
    // special token to name.
    let end_of_text = (config.vocab_size == crate::text::tokenizer::END_OF_TEXT + 1)
        .then_some(crate::text::tokenizer::END_OF_TEXT);
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_embd": config.d_model,
        "n_layer": config.n_layers,
        "n_head": config.n_heads,
        "n_inner": null,
        "activation_function": config.activation.hf_name(),
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
        "initializer_range": 0.02,
        "scale_attn_weights": true,
        "scale_attn_by_inverse_layer_idx": false,
        "reorder_and_upcast_attn": false,
        "tie_word_embeddings": config.tie_embeddings,
        "use_cache": true,
        "bos_token_id": end_of_text,
        "eos_token_id": end_of_text,
        "torch_dtype": "float32",
    })
}

fn dims2(data: &TensorData) -> [usize; 2] {
    match data.shape().as_slice() {
        &[a, b] => [a, b],
        other => panic!("a checked 2-D tensor has shape {other:?}"),
    }
}

/// A `[rows, cols]` matrix's values in `[cols, rows]` order.
fn transposed(data: TensorData) -> Vec<f32> {
    let [rows, cols] = dims2(&data);
    let values = floats(data);
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}
