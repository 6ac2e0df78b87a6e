//! Moving values between Flex's tensors and the plain `f32` slices the kernels work on.

use std::borrow::Cow;

use burn::backend::flex::FlexTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::{Tensor, TensorData};

use super::gemm::Matrix;

/// The Flex tensor under a model tensor; `None` on another backend or under autodiff (whose
/// tensors the backend extension in `extension.rs` unwraps instead).
pub fn from_tensor<const D: usize>(tensor: Tensor<D>) -> Option<FlexTensor> {
    tensor.try_into_primitive::<Flex>().ok()
}

/// A Flex tensor as a model tensor.
pub fn into_tensor<const D: usize>(tensor: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(tensor)
}

/// The tensor's values in row-major order: borrowed when it is already a contiguous `f32`
/// buffer, copied into one otherwise (a transposed or sliced view).
///
/// # Panics
/// If the tensor does not hold `f32` (the routing in [`super`] sends only `f32` tensors here).
pub fn values(tensor: &FlexTensor) -> Cow<'_, [f32]> {
    match tensor.as_slice::<f32>() {
        Some(values) => Cow::Borrowed(values),
        None => Cow::Owned(
            tensor
                .to_contiguous()
                .as_slice::<f32>()
                .expect("a contiguous f32 tensor")
                .to_vec(),
        ),
    }
}

/// The tensor's sizes.
pub fn dims(tensor: &FlexTensor) -> Vec<usize> {
    tensor.shape().to_vec()
}

/// A new contiguous tensor of `dims` holding `values`.
pub fn tensor(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims.to_vec()))
}

/// A one-element tensor of shape `[1]`.
pub fn scalar(value: f32) -> FlexTensor {
    tensor(vec![value], &[1])
}

/// The tensor's values as one mutable row-major slice, made contiguous and unshared first if
/// it is a view or shared with another tensor.
pub fn values_mut(tensor: &mut FlexTensor) -> &mut [f32] {
    let len = tensor.shape().num_elements();
    if tensor.layout().contiguous_offsets() != Some((0, len)) {
        *tensor = tensor.to_contiguous();
    }
    &mut tensor.storage_mut::<f32>()[..len]
}

/// A 2-d tensor as a [`Matrix`] view of its storage, without copying: transposed or sliced
/// views keep their strides. A view with a negative stride (a flipped tensor) is copied into
/// `scratch` first.
///
/// # Panics
/// If the tensor is not 2-d or does not hold `f32`.
pub fn matrix<'a>(tensor: &'a FlexTensor, scratch: &'a mut Option<FlexTensor>) -> Matrix<'a> {
    let layout = tensor.layout();
    let shape = layout.shape();
    assert_eq!(shape.num_dims(), 2, "a matrix view needs a 2-d tensor");
    let strides = layout.strides();
    if strides.iter().any(|&s| s < 0) {
        let copy = scratch.insert(tensor.to_contiguous());
        let [rows, cols] = [copy.shape()[0], copy.shape()[1]];
        return Matrix::row_major(copy.storage::<f32>(), rows, cols);
    }
    Matrix::strided(
        tensor.storage::<f32>(),
        layout.start_offset(),
        [shape[0], shape[1]],
        [strides[0] as usize, strides[1] as usize],
    )
}
