//! The position-wise feed-forward network of a GPT block: widen, GELU, project back. GPT-2 and
//! nanoGPT call it the MLP, and so do the weight names this crate shares with them.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use serde::{Deserialize, Serialize};

use burn::tensor::{Device, Tensor};

use crate::kernels::{bias_gelu, gelu, linear, linear_layer};

use super::init::normal_linear;

/// The MLP's nonlinearity: GELU, exact or in the tanh form GPT-2 was trained with.
///
/// The two differ by at most ~1e-3 per element, enough that a GPT-2 imported with the wrong
/// one drifts from Hugging Face's logits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Activation {
    /// `z · Φ(z)` with the exact normal CDF (nanoGPT's, PyTorch's `F.gelu` default).
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// `z/2 · (1 + tanh(√(2/π)(z + 0.044715 z³)))`: Hugging Face's `gelu_new`, GPT-2's.
    #[serde(rename = "gelu_new", alias = "gelu_tanh")]
    GeluTanh,
}

impl Activation {
    /// The activation Hugging Face names `name` (`activation_function` in a GPT-2
    /// `config.json`), if it is one of these two.
    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Some(Self::GeluTanh),
            _ => None,
        }
    }

    /// Hugging Face's name for it.
    pub fn hf_name(self) -> &'static str {
        match self {
            Self::Gelu => "gelu",
            Self::GeluTanh => "gelu_new",
        }
    }
}

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Width of the residual stream, `D`.
    pub d_model: usize,
    /// Hidden width; GPT uses `4 · D`.
    pub d_hidden: usize,
    /// Dropout on the output (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// The nonlinearity.
    #[config(default = "Activation::Gelu")]
    pub activation: Activation,
    /// Standard deviation of the widening layer's weights.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Standard deviation of the projection back to `D`, scaled down like the attention's
    /// output projection because it too writes into the residual stream.
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

impl MlpConfig {
    /// Build the network: normal weights, zero biases.
    pub fn init(&self, device: &Device) -> Mlp {
        Mlp {
            fc: normal_linear(self.d_model, self.d_hidden, self.init_std, device),
            activation: self.activation,
            proj: normal_linear(self.d_hidden, self.d_model, self.output_init_std, device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// `Linear(D, 4D) -> GELU -> Linear(4D, D)`, applied to every position independently.
///
/// # Shapes
/// - input: `[B, T, D]`
/// - hidden: `[B, T, 4D]`
/// - output: `[B, T, D]`
#[derive(Module, Debug)]
pub struct Mlp {
    /// Widening layer, `D -> 4D`.
    pub fc: Linear,
    #[module(skip)]
    activation: Activation,
    /// Projection back, `4D -> D`.
    pub proj: Linear,
    dropout: Dropout,
}

impl Mlp {
    /// The activation between the two layers.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// # Shapes
    /// - input: `[B, T, D]`, output: `[B, T, D]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        // The bias and GELU run as one fused op (see `crate::kernels::bias_gelu`); the layers'
        // products go through `crate::kernels::linear`, one matrix product each way on Flex.
        let approximate = self.activation == Activation::GeluTanh;
        let hidden = match &self.fc.bias {
            Some(bias) => bias_gelu(
                linear(x, self.fc.weight.val(), None),
                bias.val(),
                approximate,
            ),
            None => gelu(linear_layer(&self.fc, x), approximate),
        };
        self.dropout.forward(linear_layer(&self.proj, hidden))
    }
}
