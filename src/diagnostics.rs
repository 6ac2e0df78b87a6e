//! Measurements that tell a causal model from a leaky one.
//!
//! The causality probe asks the question directly: if the token at position `j` changes, do the
//! logits at any earlier position change? For a causal model they cannot; for a leaky one they do.

use burn::tensor::Device;

use crate::error::{Error, Result};
use crate::host::{floats, token_tensor};
use crate::model::Gpt;

/// Logits at an earlier position that move by more than this count as a leak. A causal model
/// computes those positions from identical inputs, so they agree to rounding at most.
pub const PROBE_TOLERANCE: f32 = 1e-5;

/// What [`causality_probe`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct CausalityReport {
    /// Probed positions `j` whose change moved the logits of some position before `j`.
    pub violations: usize,
    /// Positions probed (every position but the first, which has nothing before it).
    pub positions_probed: usize,
    /// The largest change seen at any earlier position, `max |Δ logit|`.
    pub max_leak: f32,
}

impl CausalityReport {
    /// Whether no probed position leaked.
    pub fn is_causal(&self) -> bool {
        self.violations == 0
    }
}

/// Change the token at each position `j = 1..T` of `tokens` in turn and count the positions
/// whose change reaches the logits of any position before `j`.
///
/// All `T - 1` perturbed copies run as one batch beside the unperturbed sequence.
///
/// # Errors
/// [`Error::Tokens`] for fewer than two tokens or ids outside the vocabulary, and the model's
/// errors (for instance a sequence longer than its context).
pub fn causality_probe(model: &Gpt, tokens: &[usize], device: &Device) -> Result<CausalityReport> {
    let seq = tokens.len();
    let vocab = model.config().vocab_size;
    if seq < 2 {
        return Err(Error::Tokens(format!(
            "the causality probe needs at least 2 tokens, got {seq}"
        )));
    }
    if let Some(bad) = tokens.iter().find(|&&id| id >= vocab) {
        return Err(Error::Tokens(format!(
            "token id {bad} is outside the vocabulary of {vocab}"
        )));
    }
    // Row 0 is the original; row j (1..seq) has token j replaced by the next id in the vocabulary.
    let mut rows = Vec::with_capacity(seq * seq);
    for changed in 0..seq {
        rows.extend(tokens.iter().enumerate().map(|(pos, &id)| {
            let id = if changed > 0 && pos == changed { (id + 1) % vocab } else { id };
            id
        }));
    }
    let logits = model.forward(token_tensor(&rows, seq, seq, device)?)?;
    let v = logits.dims()[2];
    let logits = floats(logits)?;
    let at = |row: usize, pos: usize| &logits[(row * seq + pos) * v..(row * seq + pos + 1) * v];

    let mut report = CausalityReport {
        violations: 0,
        positions_probed: seq - 1,
        max_leak: 0.0,
    };
    for changed in 1..seq {
        let leak = (0..changed)
            .flat_map(|pos| at(0, pos).iter().zip(at(changed, pos)))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        report.max_leak = report.max_leak.max(leak);
        if leak > PROBE_TOLERANCE {
            report.violations += 1;
        }
    }
    Ok(report)
}
