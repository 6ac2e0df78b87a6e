//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

pub mod cli;

use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tinygpt::{Gpt, GptConfig, MaskMode};

/// The backend the tests run on: `TINYGPT_TEST_DEVICE` if set (e.g. `wgpu-cpu`), else the
/// build's default.
pub fn device() -> Device {
    match std::env::var("TINYGPT_TEST_DEVICE") {
        Ok(name) => tinygpt::device::device_by_name(&name).expect("TINYGPT_TEST_DEVICE"),
        Err(_) => tinygpt::device::default_device().expect("a backend feature"),
    }
}

/// The backend of the end-to-end tests (training runs, long generations): `TINYGPT_TEST_DEVICE`
/// if set, else flex when it is compiled in, else the build's default.
///
/// These tests run hundreds of training steps and thousands of decode steps. On wgpu without a
/// GPU (CI's software Vulkan) that costs about ten minutes and checks nothing more than the
/// parity tests do: `tests/backends.rs` runs the forward pass, cached decoding, a training step
/// and the generator on every compiled-in backend against flex. `TINYGPT_TEST_DEVICE=wgpu`
/// runs them on wgpu as well.
pub fn end_to_end_device() -> Device {
    if std::env::var("TINYGPT_TEST_DEVICE").is_err()
        && tinygpt::device::compiled_backends().contains(&"flex")
    {
        return tinygpt::device::device_by_name("flex").expect("flex is compiled in");
    }
    device()
}

/// A small model: 2 layers, 4 heads of width 8, context 64.
pub fn small_config(mask_mode: MaskMode) -> GptConfig {
    GptConfig::new(23)
        .with_d_model(32)
        .with_n_heads(4)
        .with_n_layers(2)
        .with_max_seq_len(64)
        .with_mask_mode(mask_mode)
}

pub fn small_model(mask_mode: MaskMode, seed: u64, device: &Device) -> Gpt {
    small_config(mask_mode)
        .init_seeded(seed, device)
        .expect("valid config")
}

/// The same small model twice: allowed its fast paths (where the mode allows them) and forced
/// through the readable attention, so a property is checked on both paths.
pub fn small_models_both_paths(
    mask_mode: MaskMode,
    seed: u64,
    device: &Device,
) -> [(&'static str, Gpt); 2] {
    both_paths(small_model(mask_mode, seed, device))
}

/// `model` allowed its fast paths (where its mode allows them) and forced through the readable
/// attention.
pub fn both_paths(model: Gpt) -> [(&'static str, Gpt); 2] {
    [
        ("fast path", model.clone()),
        ("readable path", model.with_fast_paths(false)),
    ]
}

/// `len` token ids below `vocab`, reproducible from `seed`.
pub fn random_tokens(len: usize, vocab: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(0..vocab)).collect()
}

/// A float tensor of `shape` filled from N(0, 1)-ish values, reproducible from `seed`.
pub fn random_tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let count = shape.iter().product();
    // Sum of uniforms: close enough to normal for test inputs, and needs no extra crate.
    let values: Vec<f32> = (0..count)
        .map(|_| (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum::<f32>() * 0.87)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tinygpt::device::floats(tensor).expect("read back")
}

/// max |a - b| over two tensors of the same shape (a NaN counts as an infinite difference).
pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    tinygpt::generate::max_abs_diff(&values(a), &values(b))
}

/// A tensor to write with [`write_safetensors`]: name, shape, row-major `f32` values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Write `tensors` as a safetensors file (8-byte little-endian header length, JSON header,
/// then the raw little-endian data), so tests can build files that are wrong in one chosen
/// way without a second writer in the crate.
pub fn write_safetensors(path: &std::path::Path, tensors: &[NamedTensor]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        let start = data.len();
        for value in values {
            data.extend_from_slice(&value.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::to_vec(&header).expect("json");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(&data);
    std::fs::write(path, bytes).expect("write the test file");
}

/// Every tensor of a safetensors file as `(name, shape, values)`, read through burn-store.
pub fn read_safetensors(path: &std::path::Path) -> Vec<NamedTensor> {
    use burn::store::ModuleStore;
    let mut store = burn::store::SafetensorsStore::from_file(path);
    store
        .get_all_tensors()
        .expect("a safetensors file")
        .iter()
        .map(|(name, tensor)| {
            let data = burn::store::bridge::to_data(tensor).expect("tensor data");
            let shape = data.shape().as_slice().to_vec();
            (
                name.clone(),
                shape,
                data.convert::<f32>().try_into_vec::<f32>().expect("f32"),
            )
        })
        .collect()
}

/// A fresh, empty directory under the target dir (kept after the test for inspection).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// One row of token ids as a `[1, len]` tensor.
pub fn row(ids: &[usize], device: &Device) -> Tensor<2, burn::tensor::Int> {
    tinygpt::device::token_tensor(ids, 1, ids.len(), device).expect("ids fill one row")
}

/// The logits of `ids` fed through `cache` in pieces: first chunks of the given sizes (a
/// prefill, then chunked prefills), then one token per call (decode steps), concatenated
/// along the positions: `[1, len, V]`, to compare with a full forward.
pub fn logits_in_pieces(
    model: &Gpt,
    cache: &mut tinygpt::KvCache,
    ids: &[usize],
    chunks: &[usize],
) -> Tensor<3> {
    let device = device();
    let mut pieces = Vec::new();
    let mut start = 0;
    let singles = std::iter::repeat_n(1, ids.len() - chunks.iter().sum::<usize>());
    for size in chunks.iter().copied().chain(singles) {
        let piece = &ids[start..start + size];
        pieces.push(model.forward_cached(row(piece, &device), cache).unwrap());
        start += size;
    }
    Tensor::cat(pieces, 1)
}

/// A config as 0.2 wrote it, before the fields added since (tied embeddings, the position
/// scheme, RoPE's base, key/value heads).
pub const CONFIG_FROM_0_2: &str = r#"{"vocab_size":10,"d_model":128,"n_heads":4,"n_layers":4,
    "max_seq_len":128,"dropout":0.0,"mask_mode":"causal"}"#;

/// Export `model` to safetensors under a fresh `dir_name`, load it back, check the loaded model
/// gives the same logits bit for bit, and return it.
pub fn reloaded_through_safetensors(model: &Gpt, dir_name: &str) -> Gpt {
    let device = device();
    let path = temp_dir(dir_name).join("model.safetensors");
    tinygpt::weights::export_safetensors(model, None, &path).unwrap();
    let (loaded, _) = tinygpt::weights::load_safetensors(&path, &device).unwrap();
    let tokens = row(&random_tokens(12, model.config().vocab_size, 9), &device);
    let diff = max_abs_diff(
        model.forward(tokens.clone()).unwrap(),
        loaded.forward(tokens).unwrap(),
    );
    assert_eq!(diff, 0.0, "the reloaded model's logits differ");
    loaded
}
