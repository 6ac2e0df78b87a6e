//! The workloads tinygpt is measured on, shared by the criterion benches (`cargo bench`) and
//! the bench example (`cargo run --release --example bench`), and mirrored shape for shape by
//! `scripts/pytorch_bench.py`:
//!
//! - one training step: forward, backward and AdamW on a `[32, 128]` batch;
//! - prefill: one forward pass over a 128-token prompt into an empty KV cache;
//! - one decode step at context `S`: the newest token against `S - 1` cached positions
//!   (cached), or the whole `S`-token context recomputed (naive);
//!
//! all on the default model (D = 128, H = 4, L = 4, vocabulary 64) with a context window of
//! 2048 so the longest decode fits. Every workload reads its result back to the host, so a
//! backend that queues work cannot look faster than it is.

use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::device::{floats, token_tensor};
use crate::error::Result;
use crate::kernels::on_workers;
use crate::model::{ForwardOptions, Gpt, GptConfig, KvCache};
use crate::text::Batch;
use crate::train::{TrainConfig, new_optimizer, teacher_forced_loss_tensor};

/// Vocabulary of the benchmark model (a character-level vocabulary's size).
pub const VOCAB: usize = 64;
/// Training batch: rows.
pub const TRAIN_BATCH: usize = 32;
/// Training batch: tokens per row.
pub const TRAIN_SEQ: usize = 128;
/// Prompt length of the prefill benchmark.
pub const PREFILL: usize = 128;
/// Contexts at which one decode step is timed.
pub const CONTEXTS: [usize; 3] = [128, 512, 2048];
/// Rows of the batched decode benchmark.
pub const DECODE_BATCH: usize = 8;
/// Context of the batched decode benchmark.
pub const DECODE_BATCH_CONTEXT: usize = 512;

/// Floating-point operations of the forward pass for one token that attends over `keys` keys,
/// counting a multiply-add as two: the four projections and the MLP
/// (`2·D·(D + 2·H_kv·Dh) + 2·D² + 16·D²` per layer), the scores and the weighted values
/// (`4·keys·D` per layer) and the head (`2·D·V`). A training token costs three times its
/// forward pass (the backward pass computes two products for each one of the forward).
pub fn forward_flops(config: &GptConfig, keys: usize) -> f64 {
    let d = config.d_model as f64;
    let kv = (config.kv_heads() * config.head_dim()) as f64;
    let per_layer = 2.0 * d * (d + 2.0 * kv) + 2.0 * d * d + 16.0 * d * d + 4.0 * keys as f64 * d;
    config.n_layers as f64 * per_layer + 2.0 * d * config.vocab_size as f64
}

/// This machine's `f32` matrix-product rate on `device`, in GFLOP/s: the best of five
/// products of two `n × n` matrices (after one untimed), each read back.
pub fn matmul_gflops(n: usize, device: &Device) -> f64 {
    let a = Tensor::<2>::random([n, n], burn::tensor::Distribution::Default, device);
    let b = Tensor::<2>::random([n, n], burn::tensor::Distribution::Default, device);
    let run = || {
        let start = std::time::Instant::now();
        let product = on_workers(|| a.clone().matmul(b.clone()));
        // One element read back, so the product has been computed.
        let _ = product.slice([0..1, 0..1]).into_data();
        start.elapsed().as_secs_f64()
    };
    run();
    let best = (0..5).map(|_| run()).fold(f64::INFINITY, f64::min);
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// The default model (D = 128, H = 4, L = 4) over [`VOCAB`] tokens, with a context window of
/// `max_seq_len`.
pub fn model_config(max_seq_len: usize) -> GptConfig {
    GptConfig::new(VOCAB).with_max_seq_len(max_seq_len)
}

/// GPT-2 small's shape (124M parameters): V = 50,257, D = 768, 12 heads of 64, 12 layers,
/// 1,024 positions, the head tied to the embedding, the tanh GELU.
pub fn gpt2_small() -> GptConfig {
    GptConfig::new(50257)
        .with_d_model(768)
        .with_n_heads(12)
        .with_n_layers(12)
        .with_max_seq_len(1024)
        .with_tie_embeddings(true)
        .with_activation(crate::model::Activation::GeluTanh)
}

/// `len` reproducible token ids below [`VOCAB`].
pub fn token_ids(len: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(0..VOCAB)).collect()
}

/// Columns `range` of every row of `rows`, as a `[rows, range.len()]` batch.
fn columns(
    rows: &[Vec<usize>],
    range: std::ops::Range<usize>,
    device: &Device,
) -> Result<Tensor<2, Int>> {
    let ids: Vec<usize> = rows
        .iter()
        .flat_map(|row| row[range.clone()].to_vec())
        .collect();
    token_tensor(&ids, rows.len(), range.len(), device)
}

/// One optimizer step of the train example's kind (AdamW with its defaults), repeated on the
/// same batch.
pub struct TrainStep {
    model: Option<Gpt>,
    optimizer: ModuleOptimizer,
    batch: Batch,
    device: Device,
}

impl TrainStep {
    /// A freshly initialised model, its optimizer and one fixed batch, on `device` with
    /// autodiff.
    ///
    /// # Errors
    /// The model's errors.
    pub fn new(device: &Device) -> Result<Self> {
        Self::with_config(&model_config(TRAIN_SEQ), device)
    }

    /// The same with a model of `config` (another position scheme or key/value head count; its
    /// window must hold [`TRAIN_SEQ`] tokens).
    ///
    /// # Errors
    /// The model's errors.
    pub fn with_config(config: &GptConfig, device: &Device) -> Result<Self> {
        let device = device.clone().autodiff();
        let model = config.init_seeded(1, &device)?;
        let tokens = token_ids(TRAIN_BATCH * (TRAIN_SEQ + 1), 2);
        let rows: Vec<&[usize]> = tokens.chunks(TRAIN_SEQ + 1).collect();
        let batch = Batch {
            inputs: rows.iter().flat_map(|r| r[..TRAIN_SEQ].to_vec()).collect(),
            targets: rows.iter().flat_map(|r| r[1..].to_vec()).collect(),
            batch_size: TRAIN_BATCH,
            seq_len: TRAIN_SEQ,
        };
        Ok(Self {
            model: Some(model),
            optimizer: new_optimizer(&TrainConfig::new()),
            batch,
            device,
        })
    }

    /// Tokens one step trains on.
    pub fn tokens(&self) -> usize {
        TRAIN_BATCH * TRAIN_SEQ
    }

    /// One step; returns the loss before it.
    ///
    /// # Errors
    /// The model's errors.
    pub fn run(&mut self) -> Result<f32> {
        // On a rayon worker, as the trainer runs its steps.
        on_workers(|| self.step())
    }

    fn step(&mut self) -> Result<f32> {
        // The optimizer consumes the model and returns the stepped one, so it is held in an
        // `Option` between steps.
        let model = self.model.take().expect("every step puts the model back");
        let loss = match teacher_forced_loss_tensor(&model, &self.batch, &self.device) {
            Ok(loss) => loss,
            Err(err) => {
                self.model = Some(model);
                return Err(err);
            }
        };
        let value: f32 = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optimizer.step(3e-4, model, grads));
        Ok(value)
    }
}

/// An inference model with a 2048-token window and the cache and ids to decode with it, for
/// one row or a batch of rows.
pub struct Decoder {
    model: Gpt,
    cache: KvCache,
    /// `[rows, window]`: row 0 the single-row benchmark's ids, the others their own.
    ids: Vec<Vec<usize>>,
    device: Device,
}

impl Decoder {
    /// A freshly initialised model with a window of the longest of [`CONTEXTS`] on `device`.
    ///
    /// # Errors
    /// The model's errors.
    pub fn new(device: &Device) -> Result<Self> {
        Self::with_config(&model_config(CONTEXTS[CONTEXTS.len() - 1]), device)
    }

    /// The same with a model of `config` (another position scheme or key/value head count),
    /// decoding up to its window.
    ///
    /// # Errors
    /// The model's errors.
    pub fn with_config(config: &GptConfig, device: &Device) -> Result<Self> {
        Self::with_rows(config, 1, device)
    }

    /// The same decoding `rows` sequences at once (tokens/s then count every row's token).
    ///
    /// # Errors
    /// The model's errors.
    pub fn with_rows(config: &GptConfig, rows: usize, device: &Device) -> Result<Self> {
        let model = config.init_seeded(3, device)?;
        Ok(Self {
            cache: model.new_cache(rows, device),
            model,
            ids: (0..rows as u64)
                .map(|row| token_ids(config.max_seq_len, 4 + 1000 * row))
                .collect(),
            device: device.clone(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &GptConfig {
        self.model.config()
    }

    /// Forward the 128-token prompt into an emptied cache, logits of the last position read
    /// back (what generation does before its first token).
    ///
    /// # Errors
    /// The model's errors.
    pub fn prefill(&mut self) -> Result<Vec<f32>> {
        self.cache.reset();
        let options = ForwardOptions::default()
            .with_cache(&mut self.cache)
            .with_last_only(true);
        let logits = self
            .model
            .forward_with(columns(&self.ids, 0..PREFILL, &self.device)?, options)?;
        floats(logits)
    }

    /// Fill the emptied cache with the first `len` ids (`len - 1` before
    /// [`Decoder::cached_step`] at context `len`).
    ///
    /// # Errors
    /// The model's errors.
    pub fn fill(&mut self, len: usize) -> Result<()> {
        self.cache.reset();
        // In chunks, as long prompts are prefilled; one chunk would do as well.
        for start in (0..len).step_by(512) {
            let chunk = columns(&self.ids, start..len.min(start + 512), &self.device)?;
            self.model.forward_cached(chunk, &mut self.cache)?;
        }
        Ok(())
    }

    /// One cached decode step at `context` (the cache must hold `context - 1` positions from
    /// [`Decoder::fill`]`(context - 1)`); the cache is rewound afterwards so the step can be repeated.
    ///
    /// # Errors
    /// The model's errors.
    pub fn cached_step(&mut self, context: usize) -> Result<Vec<f32>> {
        debug_assert_eq!(self.cache.len(), context - 1);
        let newest = columns(&self.ids, context - 1..context, &self.device)?;
        let logits = self.model.forward_cached(newest, &mut self.cache)?;
        self.cache.truncate(context - 1);
        floats(logits)
    }

    /// One naive decode step at `context`: the whole context recomputed, logits of the last
    /// position only.
    ///
    /// # Errors
    /// The model's errors.
    pub fn naive_step(&self, context: usize) -> Result<Vec<f32>> {
        let options = ForwardOptions::default().with_last_only(true);
        let logits = self
            .model
            .forward_with(columns(&self.ids, 0..context, &self.device)?, options)?;
        floats(logits)
    }

    /// Bytes the cache's keys and values hold at its current length, measured from the tensors.
    pub fn cache_bytes(&self) -> usize {
        self.cache.memory_bytes()
    }
}
