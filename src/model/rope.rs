//! Where positions enter the model: a learned table added to the token embeddings (GPT-2's,
//! the default), or rotary position embedding (RoPE: Su et al., 2021, as in Llama), which
//! rotates every query and key by an angle proportional to its position instead.
//!
//! # RoPE, in one paragraph
//! A head's `Dh` features are paired up, and pair `i` of a vector at position `p` is turned by
//! the angle `p·θ_i` with `θ_i = theta^(−2i/Dh)` (fast turns in the first pairs, slow ones in
//! the last). A query at `p` and a key at `s` turned that way have the dot product of the
//! unturned pair turned by `(p − s)·θ_i`: the attention scores depend on how far apart two
//! positions are, not on where they are, and nothing is added to the residual stream.
//!
//! # Pairing
//! Half-split, as GPT-NeoX and Hugging Face's Llama do: feature `i` pairs with feature
//! `i + Dh/2` (the RoFormer paper and Burn's `RotaryEncoding` pair neighbours `2i`, `2i + 1`
//! instead; the two give the same model up to a fixed permutation of the q/k features, but
//! weights are not interchangeable between them). For a pair `(a, b)` at angle `φ`:
//! `(a·cos φ − b·sin φ, b·cos φ + a·sin φ)`.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// How the model knows where each token is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PositionScheme {
    /// A learned `[max_seq_len, D]` table added to the token embeddings (GPT-2, nanoGPT).
    #[default]
    Learned,
    /// Rotary position embedding: queries and keys rotated by their position; no table.
    Rope,
}

impl std::fmt::Display for PositionScheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Learned => "learned",
            Self::Rope => "rope",
        })
    }
}

impl std::str::FromStr for PositionScheme {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        match name {
            "learned" => Ok(Self::Learned),
            "rope" => Ok(Self::Rope),
            other => Err(format!(
                "unknown position scheme `{other}`: use `learned` or `rope`"
            )),
        }
    }
}

/// The rotation of one call's new positions, shared by every layer: the cosine and sine of
/// each position's angle for each feature pair.
///
/// # Shapes
/// - cos, sin: `[1 or B, 1, T, Dh/2]` (per row only when rows have their own positions)
#[derive(Clone, Debug)]
pub struct Rotation {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rotation {
    /// The cosine and sine tables, `[1 or B, 1, T, Dh/2]`.
    pub fn tensors(&self) -> [Tensor<4>; 2] {
        [self.cos.clone(), self.sin.clone()]
    }

    /// The rotation at `positions` (row-major `[rows, T]`, absolute positions) for heads of
    /// width `head_dim` (even) with base `theta`. The angles are computed in f64 on the host,
    /// so a position in the thousands keeps its precision.
    ///
    /// # Panics
    /// If `positions.len()` is not `rows · T` for a whole `T`.
    pub fn new(
        positions: &[usize],
        rows: usize,
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Self {
        assert!(
            rows > 0 && positions.len().is_multiple_of(rows),
            "{} positions do not split into {rows} rows",
            positions.len()
        );
        let seq = positions.len() / rows;
        let half = head_dim / 2;
        let frequencies = frequencies(half, head_dim, theta);
        let (mut cos, mut sin) = (Vec::with_capacity(positions.len() * half), Vec::new());
        sin.reserve(positions.len() * half);
        for &position in positions {
            for frequency in &frequencies {
                let angle = position as f64 * frequency;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let table = |values: Vec<f32>| {
            Tensor::from_data(TensorData::new(values, [rows, 1, seq, half]), device)
        };
        Self {
            cos: table(cos),
            sin: table(sin),
        }
    }

    /// The tables as `[T, Dh/2]` matrices when every row shares its positions (no padding),
    /// for the packed attention kernel.
    pub fn tables(&self) -> Option<(Tensor<2>, Tensor<2>)> {
        let [rows, _, seq, half] = self.cos.dims();
        (rows == 1).then(|| {
            (
                self.cos.clone().reshape([seq, half]),
                self.sin.clone().reshape([seq, half]),
            )
        })
    }

    /// Rotate every head's vectors at this call's positions.
    ///
    /// # Shapes
    /// - x: `[B, H, T, Dh]`, output: same
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, heads, seq, head_dim] = x.dims();
        let half = head_dim / 2;
        let first = x.clone().slice([0..batch, 0..heads, 0..seq, 0..half]);
        let second = x.slice([0..batch, 0..heads, 0..seq, half..head_dim]);
        let (cos, sin) = (self.cos.clone(), self.sin.clone());
        Tensor::cat(
            vec![
                first.clone() * cos.clone() - second.clone() * sin.clone(),
                second * cos + first * sin,
            ],
            3,
        )
    }
}

/// `θ_i = theta^(−2i/Dh)` for `i` in `0..half`.
fn frequencies(half: usize, head_dim: usize, theta: f64) -> Vec<f64> {
    (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / head_dim as f64))
        .collect()
}
