//! The workloads tinygpt is measured on, shared by the criterion benches (`cargo bench`) and
//! the bench example (`cargo run --release --example bench`), and mirrored shape for shape by
//! `bench/pytorch_bench.py`:
//!
//! - one training step: forward, backward and AdamW on a `[32, 128]` batch;
//! - prefill: one forward pass over a 128-token prompt into an empty KV cache;
//! - one decode step at context `S`: the newest token against `S - 1` cached positions
//!   (cached), or the whole `S`-token context recomputed (naive);
//!
//! all on the default model (D = 128, H = 4, L = 4, vocabulary 64) with a context window of
//! 2048 so the longest decode fits. Every workload reads its result back to the host, so a
//! backend that queues work cannot look faster than it is.
#![allow(dead_code)] // each user runs its own subset

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tinygpt::data::Batch;
use tinygpt::diagnostics::teacher_forced_loss_tensor;
use tinygpt::host::{floats, token_tensor};
use tinygpt::train::{TrainConfig, new_optimizer};
use tinygpt::{ForwardOptions, Gpt, GptConfig, KvCache};

/// Vocabulary of the benchmark model (a character-level vocabulary's size).
pub const VOCAB: usize = 64;
/// Training batch: rows and tokens per row.
pub const TRAIN_BATCH: usize = 32;
pub const TRAIN_SEQ: usize = 128;
/// Prompt length of the prefill benchmark.
pub const PREFILL: usize = 128;
/// Contexts at which one decode step is timed.
pub const CONTEXTS: [usize; 3] = [128, 512, 2048];

/// The default model (D = 128, H = 4, L = 4) over [`VOCAB`] tokens, with a context window of
/// `max_seq_len`.
pub fn model_config(max_seq_len: usize) -> GptConfig {
    GptConfig::new(VOCAB).with_max_seq_len(max_seq_len)
}

/// `len` reproducible token ids below [`VOCAB`].
pub fn token_ids(len: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(0..VOCAB)).collect()
}

fn row(ids: &[usize], device: &Device) -> Tensor<2, Int> {
    token_tensor(ids, 1, ids.len(), device).expect("ids fill one row")
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
    pub fn new(device: &Device) -> Self {
        let device = device.clone().autodiff();
        device.seed(1);
        let model = model_config(TRAIN_SEQ).init(&device).expect("valid config");
        let tokens = token_ids(TRAIN_BATCH * (TRAIN_SEQ + 1), 2);
        let rows: Vec<&[usize]> = tokens.chunks(TRAIN_SEQ + 1).collect();
        let batch = Batch {
            inputs: rows.iter().flat_map(|r| r[..TRAIN_SEQ].to_vec()).collect(),
            targets: rows.iter().flat_map(|r| r[1..].to_vec()).collect(),
            batch_size: TRAIN_BATCH,
            seq_len: TRAIN_SEQ,
        };
        Self {
            model: Some(model),
            optimizer: new_optimizer(&TrainConfig::default()),
            batch,
            device,
        }
    }

    /// Tokens one step trains on.
    pub fn tokens(&self) -> usize {
        TRAIN_BATCH * TRAIN_SEQ
    }

    /// One step; returns the loss before it.
    pub fn run(&mut self) -> f32 {
        let model = self.model.take().expect("a model between steps");
        let loss = teacher_forced_loss_tensor(&model, &self.batch, &self.device).expect("loss");
        let value: f32 = loss.clone().into_scalar();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        self.model = Some(self.optimizer.step(3e-4, model, grads));
        value
    }

    /// The trained model, for inference.
    pub fn model(&self) -> Gpt {
        self.model.clone().expect("a model").valid()
    }
}

/// An inference model with a 2048-token window and the cache and ids to decode with it.
pub struct Decoder {
    pub model: Gpt,
    cache: KvCache,
    ids: Vec<usize>,
    device: Device,
}

impl Decoder {
    pub fn new(device: &Device) -> Self {
        device.seed(3);
        let max = *CONTEXTS.last().expect("contexts");
        let model = model_config(max).init(device).expect("valid config");
        Self {
            cache: model.new_cache(1, device),
            model,
            ids: token_ids(max, 4),
            device: device.clone(),
        }
    }

    /// Forward the 128-token prompt into an emptied cache, logits of the last position read
    /// back (what generation does before its first token).
    pub fn prefill(&mut self) -> Vec<f32> {
        self.cache.reset();
        let logits = self
            .model
            .forward_with(
                row(&self.ids[..PREFILL], &self.device),
                ForwardOptions {
                    cache: Some(&mut self.cache),
                    last_only: true,
                    ..Default::default()
                },
            )
            .expect("prefill");
        floats(logits).expect("read back")
    }

    /// Fill the emptied cache with the first `len` ids (`len - 1` before
    /// [`Decoder::cached_step`] at context `len`).
    pub fn fill(&mut self, len: usize) {
        self.cache.reset();
        // In chunks, as long prompts are prefilled; one chunk would do as well.
        for chunk in self.ids[..len].chunks(512) {
            self.model
                .forward_cached(row(chunk, &self.device), &mut self.cache)
                .expect("fill the cache");
        }
    }

    /// One cached decode step at `context` (the cache must hold `context - 1` positions from
    /// [`Decoder::fill`]`(context - 1)`); the cache is rewound afterwards so the step can be repeated.
    pub fn cached_step(&mut self, context: usize) -> Vec<f32> {
        debug_assert_eq!(self.cache.len(), context - 1);
        let logits = self
            .model
            .forward_cached(
                row(&self.ids[context - 1..context], &self.device),
                &mut self.cache,
            )
            .expect("decode step");
        self.cache.truncate(context - 1);
        floats(logits).expect("read back")
    }

    /// One naive decode step at `context`: the whole context recomputed, logits of the last
    /// position only.
    pub fn naive_step(&self, context: usize) -> Vec<f32> {
        let logits = self
            .model
            .forward_with(
                row(&self.ids[..context], &self.device),
                ForwardOptions {
                    last_only: true,
                    ..Default::default()
                },
            )
            .expect("naive step");
        floats(logits).expect("read back")
    }

    /// Bytes the cache's keys and values hold at its current length, measured from the tensors.
    pub fn cache_bytes(&self) -> usize {
        self.cache.memory_bytes()
    }
}
