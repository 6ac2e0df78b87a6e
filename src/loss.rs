//! Next-token cross-entropy.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Mean cross-entropy of `logits` against `targets`: `-mean_n log softmax(logits_n)[target_n]`.
///
/// # Shapes
/// - logits: `[N, V]`
/// - targets: `[N]` ids in `0..V`
/// - output: `[1]`
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let log_probs = log_softmax(logits, 1);
    let picked = log_probs.gather(1, targets.unsqueeze_dim(1));
    picked.mean().neg()
}
