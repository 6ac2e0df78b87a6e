//! GPT-2's initialisation: weights drawn from `N(0, 0.02²)`, biases zero, and the projections
//! that write into the residual stream scaled down by `1 / sqrt(2 · n_layers)` so the stream's
//! variance does not grow with depth.

use burn::module::Initializer;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;

/// Standard deviation of every weight matrix and embedding.
pub const INIT_STD: f64 = 0.02;

/// Standard deviation of the residual projections (attention `W_O`, feed-forward `proj`) in a
/// model of `n_layers` blocks.
pub fn residual_init_std(n_layers: usize) -> f64 {
    INIT_STD / (2.0 * n_layers as f64).sqrt()
}

/// A linear layer with GPT-2's initialisation: weights `N(0, std²)`, biases zero.
pub fn normal_linear(d_in: usize, d_out: usize, std: f64, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device);
    // A fresh parameter rather than `bias.map(zeros_like)`: a mapped tensor would lose its
    // `require_grad` flag on an autodiff device and the bias would silently never train.
    linear.bias = Some(Initializer::Zeros.init([d_out], device));
    linear
}
