//! Import of a model trained with nanoGPT (Karpathy's `model.py`), saved as safetensors.
//!
//! nanoGPT's GPT and tinygpt's are the same network: learned token and position embeddings,
//! pre-norm blocks of causal self-attention and a `4·D` GELU MLP, a final LayerNorm and a
//! linear head. Only the names and one layout differ:
//!
//! | nanoGPT                                   | tinygpt                                    |
//! |-------------------------------------------|--------------------------------------------|
//! | `transformer.wte.weight` `[V, D]`         | `token_embedding.weight`                   |
//! | `transformer.wpe.weight` `[T, D]`         | `position_embedding.weight`                |
//! | `transformer.h.{i}.ln_1.{weight,bias}`    | `blocks.{i}.ln_1.{weight,bias}`            |
//! | `transformer.h.{i}.attn.c_attn.weight` `[3D, D]` | `blocks.{i}.attn.{query,key,value}.weight`, rows `0..D`, `D..2D`, `2D..3D` |
//! | `transformer.h.{i}.attn.c_attn.bias` `[3D]` | `blocks.{i}.attn.{query,key,value}.bias` |
//! | `transformer.h.{i}.attn.c_proj.*`         | `blocks.{i}.attn.output.*`                 |
//! | `transformer.h.{i}.ln_2.*`                | `blocks.{i}.ln_2.*`                        |
//! | `transformer.h.{i}.mlp.c_fc.*` `[4D, D]`  | `blocks.{i}.mlp.fc.*`                      |
//! | `transformer.h.{i}.mlp.c_proj.*` `[D, 4D]`| `blocks.{i}.mlp.proj.*`                    |
//! | `transformer.ln_f.*`                      | `ln_f.*`                                   |
//! | `lm_head.weight` `[V, D]`, tied to `wte`  | `lm_head.weight` (untied: a copy when the file holds one name) |
//!
//! nanoGPT ties `lm_head.weight` to `wte`, and safetensors cannot store one tensor twice, so a
//! file usually holds only one of the two names (`safetensors.torch.save_model` keeps
//! `lm_head.weight`); that one is used for both. If it holds both, each is used as it is. A model built with
//! `bias=False` has no biases: they load as zeros, which is the same function. The attention's
//! causal-mask buffer (`attn.bias`, `[1, 1, T, T]`, present when flash attention was off) is
//! not a weight and is skipped.
//!
//! What the shapes cannot say, the caller gives: the number of heads (nanoGPT keeps it in
//! `model_args` of its `.pt` checkpoint), and the vocabulary (its `meta.pkl`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, TensorData};

use super::file::{
    TensorSpec, apply_pytorch_layout, check_layout, floats, insert_qkv, read_tensors,
};
use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig};

const WTE: &str = "transformer.wte.weight";
const LM_HEAD: &str = "lm_head.weight";

/// Load a nanoGPT model saved as safetensors onto `device`, as a tinygpt [`Gpt`] with
/// `n_heads` heads per block. Vocabulary size, width, layer count and context window are read
/// off the tensors' shapes.
///
/// # Errors
/// [`crate::Error::Weights`] when the file is unreadable, is not a nanoGPT model, or holds a
/// tensor whose name or shape does not fit (the message names the first one), or when
/// `n_heads` does not divide the width.
pub fn import_nanogpt(path: &Path, n_heads: usize, device: &Device) -> Result<Gpt> {
    let tensors = read_tensors(path)?;
    let config = infer_config(path, &tensors, n_heads)?;
    let d = config.d_model;
    let mut source = Source {
        has_bias: tensors.contains_key("transformer.h.0.attn.c_attn.bias"),
        has_wte: tensors.contains_key(WTE),
        has_lm_head: tensors.contains_key(LM_HEAD),
        tensors,
    };
    check_layout(
        path,
        &source.tensors,
        &layout(&config, &source),
        &is_mask_buffer,
    )?;

    let mut converted: BTreeMap<String, TensorData> = BTreeMap::new();
    let (wte, lm_head) = match (source.has_wte, source.has_lm_head) {
        (true, true) => (source.take(WTE), source.take(LM_HEAD)),
        (true, false) => {
            let tied = source.take(WTE);
            (tied.clone(), tied)
        }
        _ => {
            let tied = source.take(LM_HEAD);
            (tied.clone(), tied)
        }
    };
    converted.insert("token_embedding.weight".into(), wte);
    converted.insert("lm_head.weight".into(), lm_head);
    let wpe = source.take("transformer.wpe.weight");
    converted.insert("position_embedding.weight".into(), wpe);
    for i in 0..config.n_layers {
        convert_block(&mut source, i, d, &mut converted);
    }
    converted.insert("ln_f.weight".into(), source.take("transformer.ln_f.weight"));
    converted.insert("ln_f.bias".into(), source.bias("transformer.ln_f.bias", d));
    apply_pytorch_layout(path, &config, converted, device)
}

/// Block `i`'s tensors under tinygpt's names: the LayerNorms, MLP and output projection keep
/// their shapes; the fused `c_attn` is split into the query, key and value projections.
fn convert_block(
    source: &mut Source,
    i: usize,
    d: usize,
    converted: &mut BTreeMap<String, TensorData>,
) {
    let (from, to) = (format!("transformer.h.{i}"), format!("blocks.{i}"));
    for (nano, ours, width) in [
        ("ln_1", "ln_1", d),
        ("ln_2", "ln_2", d),
        ("attn.c_proj", "attn.output", d),
        ("mlp.c_fc", "mlp.fc", 4 * d),
        ("mlp.c_proj", "mlp.proj", d),
    ] {
        let weight = source.take(&format!("{from}.{nano}.weight"));
        let bias = source.bias(&format!("{from}.{nano}.bias"), width);
        converted.insert(format!("{to}.{ours}.weight"), weight);
        converted.insert(format!("{to}.{ours}.bias"), bias);
    }
    // c_attn computes q, k and v in one [3D, D] product; tinygpt keeps three projections,
    // whose weights are the three consecutive blocks of D rows.
    let qkv_weight = floats(source.take(&format!("{from}.attn.c_attn.weight")));
    let qkv_bias = floats(source.bias(&format!("{from}.attn.c_attn.bias"), 3 * d));
    insert_qkv(converted, &to, &qkv_weight, &qkv_bias, d);
}

/// The tensors of a nanoGPT file, handed out once each as they are converted.
struct Source {
    tensors: BTreeMap<String, TensorData>,
    /// Whether the model was built with biases (nanoGPT's `bias=True`, its default).
    has_bias: bool,
    /// Whether the file holds the token embedding under its own name.
    has_wte: bool,
    /// Whether the file holds the LM head under its own name (one of the two suffices: they
    /// are tied in nanoGPT).
    has_lm_head: bool,
}

impl Source {
    fn take(&mut self, name: &str) -> TensorData {
        self.tensors
            .remove(name)
            .unwrap_or_else(|| panic!("`{name}` was checked by check_layout"))
    }

    /// The bias `name`, or zeros of length `len` for a model saved without biases (the same
    /// function).
    fn bias(&mut self, name: &str, len: usize) -> TensorData {
        if self.has_bias {
            self.take(name)
        } else {
            TensorData::new(vec![0.0f32; len], [len])
        }
    }
}

/// The config a nanoGPT file's shapes imply.
fn infer_config(
    path: &Path,
    tensors: &BTreeMap<String, TensorData>,
    n_heads: usize,
) -> Result<GptConfig> {
    let shape_of = |name: &str| {
        tensors
            .get(name)
            .map(|data| data.shape().as_slice().to_vec())
            .filter(|shape| shape.len() == 2)
            .ok_or_else(|| {
                Error::weights(
                    path,
                    format!(
                        "no 2-D tensor `{name}`, so this is not a nanoGPT model (its tensors \
                         begin {:?})",
                        tensors.keys().take(3).collect::<Vec<_>>()
                    ),
                )
            })
    };
    // The token embedding, under either of the two names that share it.
    let wte = shape_of(WTE).or_else(|err| shape_of(LM_HEAD).map_err(|_| err))?;
    let wpe = shape_of("transformer.wpe.weight")?;
    let n_layers = (0..)
        .take_while(|i| tensors.contains_key(&format!("transformer.h.{i}.ln_1.weight")))
        .count();
    let config = GptConfig::new(wte[0])
        .with_d_model(wte[1])
        .with_n_heads(n_heads)
        .with_n_layers(n_layers)
        .with_max_seq_len(wpe[0]);
    config.validate().map_err(|err| {
        Error::weights(
            path,
            format!("the shapes give a model that cannot work: {err}"),
        )
    })?;
    Ok(config)
}

/// The tensors a nanoGPT file for `config` holds.
fn layout(config: &GptConfig, source: &Source) -> Vec<TensorSpec> {
    let (v, t, d) = (config.vocab_size, config.max_seq_len, config.d_model);
    let has_bias = source.has_bias;
    let mut specs: Vec<TensorSpec> = vec![("transformer.wpe.weight".into(), vec![t, d])];
    if source.has_wte {
        specs.push((WTE.into(), vec![v, d]));
    }
    if source.has_lm_head {
        specs.push((LM_HEAD.into(), vec![v, d]));
    }
    let mut linear_or_norm = |name: String, weight: Vec<usize>, out: usize| {
        specs.push((format!("{name}.weight"), weight));
        if has_bias {
            specs.push((format!("{name}.bias"), vec![out]));
        }
    };
    for i in 0..config.n_layers {
        let block = format!("transformer.h.{i}");
        linear_or_norm(format!("{block}.ln_1"), vec![d], d);
        linear_or_norm(format!("{block}.attn.c_attn"), vec![3 * d, d], 3 * d);
        linear_or_norm(format!("{block}.attn.c_proj"), vec![d, d], d);
        linear_or_norm(format!("{block}.ln_2"), vec![d], d);
        linear_or_norm(format!("{block}.mlp.c_fc"), vec![4 * d, d], 4 * d);
        linear_or_norm(format!("{block}.mlp.c_proj"), vec![d, 4 * d], d);
    }
    linear_or_norm("transformer.ln_f".into(), vec![d], d);
    specs
}

/// nanoGPT's causal-mask buffer, which a state dict carries but which is not a weight.
fn is_mask_buffer(name: &str) -> bool {
    name.starts_with("transformer.h.") && name.ends_with(".attn.bias")
}
