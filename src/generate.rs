//! Turning logits into text: a seeded [`Sampler`] and naive generation, which recomputes the
//! whole (windowed) prefix at every step.

use burn::tensor::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::host::{floats, token_tensor};
use crate::model::Gpt;

/// How the next token is chosen from the logits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingConfig {
    /// Divides the logits before the softmax; `0` means greedy (always the most likely token).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probabilities sum to at least `p`.
    pub top_p: Option<f32>,
    /// Seeds the sampler's RNG: the same seed gives the same text.
    pub seed: u64,
}

impl SamplingConfig {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
        }
    }

    /// Sampling at `temperature` with no truncation.
    pub fn with_temperature(temperature: f32, seed: u64) -> Self {
        Self {
            temperature,
            top_k: None,
            top_p: None,
            seed,
        }
    }

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

    /// The probabilities the sampler draws from for one row of logits, after temperature,
    /// top-k and top-p (tokens cut off get exactly 0). Greedy puts all the mass on the argmax.
    pub fn distribution(&self, logits: &[f32]) -> Vec<f32> {
        let mut probs = vec![0.0; logits.len()];
        if self.config.temperature == 0.0 {
            probs[argmax(logits)] = 1.0;
            return probs;
        }
        // Token ids from most to least likely.
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let keep = self.config.top_k.unwrap_or(order.len()).min(order.len());
        let order = &order[..keep];

        let max = logits[order[0]];
        let weights: Vec<f32> = order
            .iter()
            .map(|&id| ((logits[id] - max) / self.config.temperature).exp())
            .collect();
        let total: f32 = weights.iter().sum();
        let mut kept_mass = 0.0;
        for (&id, weight) in order.iter().zip(weights) {
            if self.config.top_p.is_some_and(|p| kept_mass >= p) {
                break;
            }
            let p = weight / total;
            probs[id] = p;
            kept_mass += p;
        }
        probs.iter_mut().for_each(|p| *p /= kept_mass);
        probs
    }

    /// Choose a token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        if self.config.temperature == 0.0 {
            return argmax(logits);
        }
        let probs = self.distribution(logits);
        let mut u: f32 = self.rng.random();
        for (id, &p) in probs.iter().enumerate() {
            if u < p {
                return id;
            }
            u -= p;
        }
        // Rounding left a sliver of mass unspent: take the last token with any probability.
        probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
    }
}

fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(id, _)| id)
}

/// Continue every prompt by `max_new_tokens` tokens, recomputing the full context each step:
/// the model sees the last `max_seq_len` tokens (prompt and generated) and the logits of the
/// final position choose the next token. This is the reference every faster method must match,
/// and it is what any model, leaky or not, faces when it has to produce text.
///
/// All prompts must have the same length (they run as one batch).
///
/// # Errors
/// [`Error::Tokens`] for no prompts, an empty prompt, prompts of different lengths or ids
/// outside the vocabulary; the model's errors.
pub fn generate_naive(
    model: &Gpt,
    prompts: &[Vec<usize>],
    max_new_tokens: usize,
    sampler: &mut Sampler,
    device: &Device,
) -> Result<Vec<Vec<usize>>> {
    let vocab = model.config().vocab_size;
    let context = model.config().max_seq_len;
    let prompt_len = prompts.first().map_or(0, Vec::len);
    if prompt_len == 0 || prompts.iter().any(|p| p.len() != prompt_len) {
        return Err(Error::Tokens(
            "give at least one prompt; prompts must be non-empty and of equal length".into(),
        ));
    }
    if let Some(bad) = prompts.iter().flatten().find(|&&id| id >= vocab) {
        return Err(Error::Tokens(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    let mut sequences: Vec<Vec<usize>> = prompts.to_vec();
    for _ in 0..max_new_tokens {
        let len = sequences[0].len().min(context);
        let window: Vec<usize> = sequences
            .iter()
            .flat_map(|seq| seq[seq.len() - len..].iter().copied())
            .collect();
        let logits = model.forward(token_tensor(&window, sequences.len(), len, device)?)?;
        let last = logits.slice([0..sequences.len(), len - 1..len, 0..vocab]);
        let last = floats(last)?;
        for (row, seq) in sequences.iter_mut().enumerate() {
            seq.push(sampler.sample(&last[row * vocab..(row + 1) * vocab]));
        }
    }
    Ok(sequences
        .into_iter()
        .map(|seq| seq[prompt_len..].to_vec())
        .collect())
}
