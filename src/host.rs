//! Moving data between the host and the device: token ids in, floats and ids out.
//!
//! Backends differ in their integer element type (i32 on flex, i64 on ndarray), so reads
//! convert explicitly instead of assuming one.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};

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
