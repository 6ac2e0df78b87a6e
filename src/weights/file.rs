//! Reading safetensors files for both layouts tinygpt loads (its own export and nanoGPT's):
//! every tensor as `f32` data, the metadata, a check that the tensors are exactly the ones a
//! model needs, and applying them to a fresh model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use burn::store::{
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, SafetensorsStore, bridge, burn_pack,
};
use burn::tensor::{DType, Device, TensorData};

use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig};

/// A tensor's name and shape.
pub type TensorSpec = (String, Vec<usize>);

/// A tensor's values as `f32` (what [`read_tensors`] gives and a model's weights are).
pub(crate) fn floats(data: TensorData) -> Vec<f32> {
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

/// The query, key and value projections of block `to` (e.g. `blocks.0`) from a packed
/// `c_attn` in PyTorch's `[out, in]` layout, `[3D, D]`: q, k and v are its three consecutive
/// blocks of `D` rows (and of the bias), in that order.
pub(crate) fn insert_qkv(
    converted: &mut BTreeMap<String, TensorData>,
    to: &str,
    qkv_weight: &[f32],
    qkv_bias: &[f32],
    d: usize,
) {
    for (part, projection) in ["query", "key", "value"].into_iter().enumerate() {
        let weight = &qkv_weight[part * d * d..(part + 1) * d * d];
        let bias = &qkv_bias[part * d..(part + 1) * d];
        converted.insert(
            format!("{to}.attn.{projection}.weight"),
            TensorData::new(weight.to_vec(), [d, d]),
        );
        converted.insert(
            format!("{to}.attn.{projection}.bias"),
            TensorData::new(bias.to_vec(), [d]),
        );
    }
}

/// Every tensor of a safetensors file, as `f32` data, by name (read through burn-store).
///
/// # Errors
/// [`Error::Weights`] when the file is missing (or a directory), is not safetensors, or holds
/// a tensor that is not floating point or holds a value that is not a finite number.
pub(crate) fn read_tensors(path: &Path) -> Result<BTreeMap<String, TensorData>> {
    if path.is_dir() {
        return Err(Error::weights(
            path,
            "is a directory; give the .safetensors file itself",
        ));
    }
    if !path.is_file() {
        return Err(Error::weights(path, "no such file"));
    }
    let mut store = SafetensorsStore::from_file(path);
    let tensors = store
        .get_all_tensors()
        .map_err(|err| Error::weights(path, format!("not a readable safetensors file ({err})")))?;
    tensors
        .iter()
        .map(|(name, tensor)| {
            let data = bridge::to_data(tensor)
                .map_err(|err| Error::weights(path, format!("tensor `{name}`: {err}")))?;
            let data = match data.dtype() {
                DType::F32 => data,
                DType::F64 | DType::F16 | DType::BF16 => data.convert::<f32>(),
                other => {
                    return Err(Error::weights(
                        path,
                        format!("tensor `{name}` is {other:?}; only floating point weights load"),
                    ));
                }
            };
            let values = data.as_slice::<f32>().map_err(|err| {
                Error::weights(
                    path,
                    format!("tensor `{name}`: unreadable values ({err:?})"),
                )
            })?;
            let not_finite = values.iter().filter(|value| !value.is_finite()).count();
            if not_finite > 0 {
                return Err(Error::weights(
                    path,
                    format!(
                        "tensor `{name}` holds {not_finite} values that are not finite numbers \
                         (NaN or infinite); the model that wrote it had diverged"
                    ),
                ));
            }
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
                return Err(Error::weights(
                    path,
                    format!(
                        "missing tensor `{name}` (shape {shape:?}); the file does not fit the \
                         model config, or holds a different kind of model"
                    ),
                ));
            }
            Some(data) if data.shape().as_slice() != shape.as_slice() => {
                return Err(Error::weights(
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
    let known: HashSet<&str> = expected.iter().map(|(name, _)| name.as_str()).collect();
    if let Some(extra) = found
        .keys()
        .find(|name| !known.contains(name.as_str()) && !ignore(name))
    {
        return Err(Error::weights(
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
        .map_err(|err| Error::weights(path, format!("its config cannot work: {err}")))?;
    let snapshots: Vec<burn_pack::Tensor> = tensors
        .into_iter()
        .map(|(name, data)| bridge::from_data(data, name, None))
        .collect();
    let result = model.apply(snapshots, None, Some(Box::new(PyTorchToBurnAdapter)), false);
    if let Some(error) = result.errors.first() {
        return Err(Error::weights(
            path,
            format!("cannot apply the weights: {error}"),
        ));
    }
    if let Some((name, _)) = result.missing.first() {
        return Err(Error::weights(
            path,
            format!("no tensor for the model's parameter `{name}`"),
        ));
    }
    Ok(model)
}

/// The `__metadata__` map of a safetensors file: its first 8 bytes are the header length
/// (little-endian), then comes the JSON header.
pub(crate) fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    /// Header size past which the file is taken to be something else: real headers are
    /// kilobytes (the format's own readers stop at 100 MB).
    const MAX_HEADER: u64 = 100 << 20;
    let not_safetensors =
        |detail: String| Error::weights(path, format!("not a safetensors file ({detail})"));
    if !path.is_file() {
        return Err(Error::weights(path, "no such file"));
    }
    let mut file = File::open(path).map_err(|err| Error::io(path, "open", err))?;
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
