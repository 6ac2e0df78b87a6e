//! The logits behind every generated token, as records (`generate --logits FILE.jsonl` writes
//! one JSON line per record), so a user can compare them with their own reference model
//! without writing Rust.
//!
//! ```text
//! $ cargo run --release --example generate -- --temperature 0 --prompt "the old " --logits out.jsonl
//! $ head -c 120 out.jsonl
//! {"step":0,"source":"prompt","position":7,"token":4,"text":"b","prompt_tokens":[22,10,7,...
//! ```
//!
//! With a PyTorch model `model` that maps ids `[1, T]` to logits `[1, T, V]` (for instance one
//! built on the `export` example's safetensors), within the context window:
//!
//! ```python
//! import json, torch
//! rows = [json.loads(line) for line in open("out.jsonl")]
//! ids = rows[0]["prompt_tokens"] + [r["token"] for r in rows[:-1]]  # the text the model saw
//! mine = model(torch.tensor([ids]))[0, len(rows[0]["prompt_tokens"]) - 1:]  # [steps, V]
//! print("max |Δ logit|:", (mine - torch.tensor([r["logits"] for r in rows])).abs().max().item())
//! ```
//!
//! Past the window the reference must apply the same window policy.

use serde::Serialize;

use super::generator::Generation;

/// The logits one generated token was chosen from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LogitRecord {
    /// 0 for the first new token, then one per decode step.
    pub step: usize,
    /// `prompt` for step 0 (the logits at the prompt's last position), `decode` after.
    pub source: &'static str,
    /// Position, in prompt + generated text, of the token whose output these logits are:
    /// `prompt.len() - 1 + step`.
    pub position: usize,
    /// The position the model gave that token: `position` within the context window; past it,
    /// where the window policy put it (`crop` runs the last `max_seq_len` tokens at positions
    /// `0..max_seq_len`, `slide-half` counts again from the start of the kept half).
    pub model_position: usize,
    /// The token chosen from them.
    pub token: usize,
    /// The token's text, when the caller fills it in (the library knows ids, not characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The prompt's token ids (on step 0 only), to rebuild the sequence a reference must see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<Vec<usize>>,
    /// Every logit, in token id order (without a top-k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
    /// The `k` largest logits as `(token, logit)`, largest first (with a top-k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<Vec<(usize, f32)>>,
}

/// One record per token of the first row of `generation`, which must have been generated with
/// [`super::GenerationConfig::record_logits`]; `top_k` keeps only the largest logits. The
/// logits are the model's, before temperature, top-k or top-p sampling.
///
/// # Panics
/// If the generation recorded no logits for some token (generate with `record_logits`).
pub fn logit_records(
    prompt: &[usize],
    generation: &Generation,
    top_k: Option<usize>,
) -> Vec<LogitRecord> {
    let tokens = &generation.tokens[0];
    assert!(
        generation.step_logits.len() >= tokens.len(),
        "generate with `record_logits` to keep the logits"
    );
    tokens
        .iter()
        .zip(&generation.step_logits)
        .enumerate()
        .map(|(step, (&token, logits))| {
            let position = prompt.len() - 1 + step;
            // Row 0's logits: the first `V` of the batch's `[B · V]`.
            let vocab = logits.len() / generation.tokens.len();
            let logits = &logits[..vocab];
            LogitRecord {
                step,
                source: if step == 0 { "prompt" } else { "decode" },
                position,
                model_position: generation
                    .step_positions
                    .get(step)
                    .map_or(position, |rows| rows[0]),
                token,
                text: None,
                prompt_tokens: (step == 0).then(|| prompt.to_vec()),
                logits: top_k.is_none().then(|| logits.to_vec()),
                top: top_k.map(|k| largest(logits, k)),
            }
        })
        .collect()
}

/// The `k` largest logits with their token ids, largest first (ties: lower id first).
fn largest(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_the_tokens_and_keep_the_largest_logits() {
        let generation = Generation {
            tokens: vec![vec![2, 0]],
            step_logits: vec![vec![0.5, -1.0, 3.0, 0.5], vec![4.0, 1.0, 2.0, 3.0]],
            ..Default::default()
        };
        let records = logit_records(&[1, 3, 3], &generation, None);
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].source, records[0].position), ("prompt", 2));
        assert_eq!(records[0].prompt_tokens.as_deref(), Some(&[1, 3, 3][..]));
        assert_eq!((records[1].source, records[1].position), ("decode", 3));
        assert_eq!(
            records[1].logits.as_deref(),
            Some(&[4.0, 1.0, 2.0, 3.0][..])
        );
        let top = logit_records(&[1, 3, 3], &generation, Some(3));
        assert_eq!(
            top[0].top.as_deref(),
            Some(&[(2, 3.0), (0, 0.5), (3, 0.5)][..])
        );
        assert_eq!(top[0].logits, None);
    }
}
