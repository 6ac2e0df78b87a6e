//! The training loss: next-token cross-entropy under teacher forcing (the whole window is the
//! input, and position `t` predicts the token at `t + 1`).

use burn::tensor::{Device, Int, Tensor};

use crate::device::token_tensor;
use crate::error::Result;
use crate::model::Gpt;
use crate::text::Batch;

/// Mean cross-entropy of `logits` against `targets`: `-mean_n log softmax(logits_n)[target_n]`.
///
/// # Shapes
/// - logits: `[N, V]`
/// - targets: `[N]` ids in `0..V`
/// - output: `[1]`
///
/// Fused on Flex (one pass forward, one backward; see [`crate::kernels`]), composite elsewhere.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    crate::kernels::cross_entropy(logits, targets)
}

/// Teacher-forced loss on `batch`: the whole window is the input, and position `t` predicts
/// `targets[t]`. For a leaky model this is the number that looks good: positions may peek at
/// tokens after the one they predict, which are right there in the input.
///
/// # Errors
/// The model's errors.
pub fn teacher_forced_loss(model: &Gpt, batch: &Batch, device: &Device) -> Result<f32> {
    Ok(teacher_forced_loss_tensor(model, batch, device)?.into_scalar())
}

/// [`teacher_forced_loss`] as a tensor, differentiable on an autodiff device: the training
/// loss.
///
/// # Shapes
/// - output: `[1]`
///
/// # Errors
/// The model's errors.
pub fn teacher_forced_loss_tensor(
    model: &Gpt,
    batch: &Batch,
    device: &Device,
) -> Result<Tensor<1>> {
    let inputs = token_tensor(&batch.inputs, batch.batch_size, batch.seq_len, device)?;
    let logits = model.forward(inputs)?;
    let vocab = logits.dims()[2];
    let rows = batch.batch_size * batch.seq_len;
    let targets = token_tensor(&batch.targets, 1, rows, device)?.reshape([rows]);
    Ok(cross_entropy(logits.reshape([rows, vocab]), targets))
}
