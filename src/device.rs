//! Cargo features to Burn [`Device`]s, and data across the host-device boundary: token ids in,
//! floats and ids out.
//!
//! One model code runs on every backend: the backend is the `Device` the tensors live on.
//! Which backends exist in a binary is decided at compile time by cargo features; which of
//! those a run uses is decided at run time by name (`--device NAME` in the examples).
//!
//! | name       | feature   | what it is                                                    |
//! |------------|-----------|---------------------------------------------------------------|
//! | `flex`     | `flex`    | Burn's pure-Rust CPU backend (the default)                    |
//! | `ndarray`  | `ndarray` | the NdArray CPU backend                                       |
//! | `wgpu`     | `wgpu`    | GPU through wgpu (Vulkan, Metal, DX12 or GL), best adapter    |
//! | `wgpu-cpu` | `wgpu`    | wgpu on a CPU adapter (e.g. Mesa's lavapipe, no GPU needed)   |
//! | `vulkan`   | `vulkan`  | wgpu pinned to Vulkan                                         |
//! | `metal`    | `metal`   | wgpu pinned to Metal                                          |
//! | `cuda`     | `cuda`    | CUDA device 0                                                 |
//!
//! `wgpu` and `wgpu-cpu` are opened when asked for, and refused (with
//! [`Error::BackendUnavailable`]) when wgpu would run them through OpenGL: with no Vulkan
//! driver on a Linux machine, wgpu falls back to GL, whose contexts cannot be shared between
//! threads, and results then go wrong. Mesa's software Vulkan (`mesa-vulkan-drivers`) gives
//! any machine a Vulkan driver. The default device skips a refused backend for the next one.
//!
//! Backends differ in their integer element type (i32 on flex, i64 on ndarray), so reads back
//! to the host convert explicitly instead of assuming one.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// Every backend name tinygpt knows, with the cargo feature that compiles it in.
const KNOWN_BACKENDS: [(&str, &str); 7] = [
    ("flex", "flex"),
    ("ndarray", "ndarray"),
    ("wgpu", "wgpu"),
    ("wgpu-cpu", "wgpu"),
    ("vulkan", "vulkan"),
    ("metal", "metal"),
    ("cuda", "cuda"),
];

/// Names of the backends compiled into this binary, in order of preference: GPU backends
/// first (a user who enabled one wants it), then the CPU ones.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut names = Vec::new();
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(feature = "metal") {
        names.push("metal");
    }
    if cfg!(feature = "vulkan") {
        names.push("vulkan");
    }
    if cfg!(feature = "wgpu") {
        names.extend(["wgpu", "wgpu-cpu"]);
    }
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    names
}

/// The name of the backend [`default_device`] picks: the first of [`compiled_backends`] that
/// can be used on this machine.
///
/// # Errors
/// [`Error::UnknownBackend`] when the crate was built with no backend feature at all; the
/// first backend's error when none can be used.
pub fn default_backend_name() -> Result<&'static str> {
    let compiled = compiled_backends();
    let Some(&first) = compiled.first() else {
        return Err(Error::UnknownBackend {
            requested: "default".into(),
            available: "none".into(),
            hint: "; build with `--features flex` (or ndarray, wgpu, cuda)".into(),
        });
    };
    match compiled
        .iter()
        .find(|name| matches!(compiled_device(name), Some(Ok(_))))
    {
        Some(&usable) => Ok(usable),
        None => device_by_name(first).map(|_| first),
    }
}

/// The device of the preferred compiled-in backend (see [`compiled_backends`]).
///
/// # Errors
/// [`Error::UnknownBackend`] when the crate was built with no backend feature at all.
pub fn default_device() -> Result<Device> {
    device_by_name(default_backend_name()?)
}

/// A device on the host CPU, for work whose tensors only pass through on their way to or from
/// a file (export, import): flex or ndarray when compiled in, else the default device.
///
/// # Errors
/// As [`default_device`].
pub fn host_device() -> Result<Device> {
    match compiled_backends()
        .into_iter()
        .find(|name| matches!(*name, "flex" | "ndarray"))
    {
        Some(name) => device_by_name(name),
        None => default_device(),
    }
}

/// The device for a backend name (`flex`, `ndarray`, `wgpu`, `wgpu-cpu`, `vulkan`, `metal`,
/// `cuda`), case-insensitive. `default` picks [`default_device`].
///
/// # Errors
/// [`Error::UnknownBackend`] for a name that is unknown or whose cargo feature is not compiled
/// in; the message lists the compiled-in backends and the feature that would enable it.
pub fn device_by_name(name: &str) -> Result<Device> {
    let wanted = name.trim().to_ascii_lowercase();
    if wanted == "default" {
        return default_device();
    }
    if let Some(device) = compiled_device(&wanted) {
        return device;
    }
    let hint = KNOWN_BACKENDS
        .iter()
        .find(|(known, _)| *known == wanted)
        .map(|(_, feature)| format!("; rebuild with `--features {feature}` to use it"))
        .unwrap_or_default();
    Err(Error::UnknownBackend {
        requested: name.to_string(),
        available: compiled_backends().join(", "),
        hint,
    })
}

/// What a run on backend `name` (as given to [`device_by_name`], `default` included) runs on,
/// for the line the examples print at start: the backend's name and, for a GPU backend, the
/// adapter it opened, e.g. `wgpu-cpu on llvmpipe (LLVM 15.0.6, 256 bits)`. Opens the device.
pub fn describe(name: &str, device: &Device) -> String {
    let wanted = name.trim().to_ascii_lowercase();
    let backend = match wanted.as_str() {
        "default" => default_backend_name().unwrap_or("none").to_string(),
        _ => wanted,
    };
    match adapter_name(device) {
        Some(adapter) => format!("{backend} on {adapter}"),
        None if matches!(backend.as_str(), "flex" | "ndarray") => format!("{backend} on the CPU"),
        None => backend,
    }
}

/// The name the GPU runtime reports for the adapter behind `device` (`None` on CPU backends).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn adapter_name(device: &Device) -> Option<String> {
    device.identity().map(|identity| identity.name)
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn adapter_name(_device: &Device) -> Option<String> {
    None
}

/// The device for `name` if its backend is compiled in (`None` otherwise), or why it cannot be
/// used here.
fn compiled_device(name: &str) -> Option<Result<Device>> {
    let device = match name {
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        // Burn deprecates NdArray in favour of Flex; tinygpt keeps it as the second CPU
        // backend so the two can be compared.
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "wgpu")]
        "wgpu" => return Some(open_wgpu("wgpu", burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "wgpu")]
        "wgpu-cpu" => return Some(open_wgpu("wgpu-cpu", burn::tensor::DeviceKind::Cpu)),
        #[cfg(feature = "vulkan")]
        "vulkan" => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "metal")]
        "metal" => Device::metal(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(0),
        _ => return None,
    };
    Some(Ok(device))
}

/// Open wgpu on the adapter `kind` selects, once per process (Burn's wgpu runtime is set up
/// once per adapter), refusing OpenGL (see the module docs).
#[cfg(feature = "wgpu")]
fn open_wgpu(name: &'static str, kind: burn::tensor::DeviceKind) -> Result<Device> {
    use std::sync::{Mutex, PoisonError};

    use burn::tensor::wgpu::wgpu::Backend;

    type Opened = (&'static str, std::result::Result<Device, String>);
    static OPENED: Mutex<Vec<Opened>> = Mutex::new(Vec::new());
    let mut opened = OPENED.lock().unwrap_or_else(PoisonError::into_inner);
    let outcome = match opened.iter().find(|(known, _)| *known == name) {
        Some((_, outcome)) => outcome.clone(),
        None => {
            let outcome = match Device::wgpu_options().device_kind(kind).init_with_setup() {
                Ok((_, setup)) if setup.backend == Backend::Gl => Err(
                    "wgpu found no Vulkan driver and would run through OpenGL, whose contexts \
                     cannot be shared between threads; install one (on Debian or Ubuntu, \
                     `apt-get install mesa-vulkan-drivers` gives Mesa's software Vulkan)"
                        .to_string(),
                ),
                Ok((device, _)) => Ok(device),
                Err(err) => Err(format!("wgpu could not open an adapter: {err}")),
            };
            opened.push((name, outcome.clone()));
            outcome
        }
    };
    outcome.map_err(|reason| Error::BackendUnavailable { name, reason })
}

/// Token ids (row-major, `batch` rows of `seq`) as an integer tensor on `device`.
///
/// # Shapes
/// - output: `[batch, seq]`
///
/// # Errors
/// [`Error::Tokens`] when `ids.len() != batch * seq`.
pub fn token_tensor(
    ids: &[usize],
    batch: usize,
    seq: usize,
    device: &Device,
) -> Result<Tensor<2, Int>> {
    if ids.len() != batch * seq {
        return Err(Error::Tokens(format!(
            "{} ids cannot fill a [{batch}, {seq}] batch",
            ids.len()
        )));
    }
    let ids: Vec<i64> = ids.iter().map(|&id| id as i64).collect();
    Ok(Tensor::from_data(
        TensorData::new(ids, [batch, seq]),
        device,
    ))
}

/// A float tensor's values, row-major, as `f32`.
///
/// # Errors
/// [`Error::Backend`] when the device cannot hand the data back.
pub fn floats<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|err| Error::Backend(format!("reading floats back from the device: {err:?}")))
}

/// An integer tensor's values, row-major, as `i64`.
///
/// # Errors
/// [`Error::Backend`] when the device cannot hand the data back.
pub fn ints<const D: usize>(tensor: Tensor<D, Int>) -> Result<Vec<i64>> {
    tensor
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(|err| Error::Backend(format!("reading ids back from the device: {err:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backend_lists_the_compiled_in_ones() {
        let err = device_by_name("tpu").unwrap_err().to_string();
        for name in compiled_backends() {
            assert!(err.contains(name), "`{err}` should list `{name}`");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn known_backend_not_compiled_in_says_which_feature_enables_it() {
        let err = device_by_name("cuda").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn every_compiled_backend_name_gives_a_device_or_says_why_not() {
        for name in compiled_backends() {
            match device_by_name(name) {
                Ok(_) => {}
                Err(Error::BackendUnavailable { reason, .. }) => eprintln!("{name}: {reason}"),
                Err(other) => panic!("{name}: {other}"),
            }
        }
        // The default device is one that opens.
        assert!(default_device().is_ok());
    }
}
