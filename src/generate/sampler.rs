//! Choosing the next token from the logits: greedy, or a seeded draw after temperature, top-k
//! and top-p, all as tensor ops on the device so only the chosen ids come back to the host.

use burn::config::Config;
use burn::tensor::activation::softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// How the next token is chosen from the logits. `SamplingConfig::new()` is greedy.
#[derive(Config, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Divides the logits before the softmax; `0` means greedy (always the most likely token).
    #[config(default = 0.0)]
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `p`.
    pub top_p: Option<f32>,
    /// Seeds the sampler's RNG: the same seed gives the same text.
    #[config(default = 0)]
    pub seed: u64,
}

impl SamplingConfig {
    /// Check the settings.
    ///
    /// # Errors
    /// [`Error::Config`] for a negative or non-finite temperature, `top_k = 0`, or `top_p`
    /// outside `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::Config(format!(
                "temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("top_k must be at least 1".into()));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::Config(format!("top_p must be in (0, 1], got {p}")));
        }
        Ok(())
    }

    /// Whether this config always picks the most likely token.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// Chooses tokens from logits as a [`SamplingConfig`] says, reproducibly.
#[derive(Clone, Debug)]
pub struct Sampler {
    config: SamplingConfig,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler seeded from `config.seed`.
    ///
    /// # Errors
    /// As [`SamplingConfig::validate`].
    pub fn new(config: SamplingConfig) -> Result<Self> {
        config.validate()?;
        let rng = ChaCha8Rng::seed_from_u64(config.seed);
        Ok(Self { config, rng })
    }

    /// The distribution each row is drawn from, in vocabulary order: the softmax of the logits
    /// over the temperature, cut to the top-k tokens and to the smallest set reaching top-p,
    /// renormalised (tokens cut off get exactly 0). Greedy puts all the mass on the argmax.
    ///
    /// # Shapes
    /// - logits: `[B, V]`, output: `[B, V]`
    pub fn probabilities(&self, logits: Tensor<2>) -> Tensor<2> {
        let [batch, vocab] = logits.dims();
        let device = logits.device();
        let (probs, order) = if self.config.is_greedy() {
            let best = logits.argmax(1);
            (Tensor::<2>::ones([batch, 1], &device), best)
        } else {
            self.sorted_probabilities(logits)
        };
        // Put each probability back at its token's id.
        Tensor::<2>::zeros([batch, vocab], &device).scatter(1, order, probs, IndexingUpdateOp::Add)
    }

    /// Choose one token per row, on the device: only the chosen ids need to come back.
    ///
    /// Draws from [`Sampler::probabilities`]: a uniform draw per row from the sampler's seeded
    /// RNG picks the first token (most likely first) whose cumulative probability reaches it.
    ///
    /// # Shapes
    /// - logits: `[B, V]`
    /// - output: `[B]` token ids
    pub fn sample(&mut self, logits: Tensor<2>) -> Tensor<1, Int> {
        let [batch, vocab] = logits.dims();
        if self.config.is_greedy() {
            return logits.argmax(1).reshape([batch]);
        }
        let device = logits.device();
        let (probs, order) = self.sorted_probabilities(logits);
        let cumulative = probs.cumsum(1);
        // Scale each draw by its row's total so rounding can never push it past the last token.
        let total = cumulative.clone().slice([0..batch, vocab - 1..vocab]);
        let draws: Vec<f32> = (0..batch).map(|_| self.rng.random()).collect();
        let draws = Tensor::<2>::from_data(TensorData::new(draws, [batch, 1]), &device) * total;
        // Tokens whose cumulative probability is still below the draw come before the choice;
        // a token with zero probability never ends that run, so it is never chosen.
        let rank = cumulative
            .lower(draws.expand([batch, vocab]))
            .int()
            .sum_dim(1);
        order.gather(1, rank).reshape([batch])
    }

    /// Each row's probabilities sorted from most to least likely, after temperature, top-k and
    /// top-p, with the token id of each column.
    ///
    /// # Shapes
    /// - logits: `[B, V]`; outputs: probabilities `[B, V]` and ids `[B, V]`
    fn sorted_probabilities(&self, logits: Tensor<2>) -> (Tensor<2>, Tensor<2, Int>) {
        let vocab = logits.dims()[1];
        let device = logits.device();
        let (sorted, order) = logits
            .div_scalar(self.config.temperature)
            .sort_descending_with_indices(1);
        let mut probs = softmax(sorted, 1);
        if let Some(k) = self.config.top_k {
            let rank = Tensor::<1, Int>::arange(0..vocab as i64, &device).reshape([1, vocab]);
            probs = normalise(probs.mask_fill(rank.greater_equal_elem(k as i64), 0.0));
        }
        if let Some(p) = self.config.top_p {
            // Drop a token when the tokens ranked above it already hold at least `p`.
            let mass_before = probs.clone().cumsum(1) - probs.clone();
            probs = normalise(probs.mask_fill(mass_before.greater_equal_elem(p), 0.0));
        }
        (probs, order)
    }
}

/// Rescale each row to sum to one.
///
/// # Shapes
/// - probs: `[B, V]`, output: `[B, V]`
fn normalise(probs: Tensor<2>) -> Tensor<2> {
    let total = probs.clone().sum_dim(1);
    probs / total
}
