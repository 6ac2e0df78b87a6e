//! The tiny language model: token and position embeddings, a stack of pre-norm blocks, a final
//! LayerNorm and the LM head.
//!
//! ```text
//! ids [B, T] -> token emb + position emb [B, T, D] -> N x Block [B, T, D]
//!            -> ln_f [B, T, D] -> lm_head [B, T, V]
//! ```

use std::sync::{Mutex, PoisonError};

use burn::module::{Initializer, Module, ModuleVisitor, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
};
use burn::tensor::{Device, Int, Tensor};

use super::block::{Block, BlockConfig};
use super::cache::KvCache;
use super::config::GptConfig;
use super::fault::Fault;
use super::init::{INIT_STD, normal_linear, residual_init_std};
use super::instruments::{Instrumentation, Instruments, NoInstruments};
use super::plan::{ForwardOptions, Plan};
use super::rope::PositionScheme;
use crate::error::Result;
use crate::kernels::{layer_norm, linear, linear_layer, on_workers};

impl GptConfig {
    /// Build the model with GPT-2's initialisation, drawing from the backend's RNG as it
    /// stands (see [`GptConfig::init_seeded`] for reproducible weights).
    ///
    /// Unlike Burn's own `init` functions this returns a `Result`: the config usually comes
    /// from a user or a file, and a bad one must be an error, not a panic.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when [`GptConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Result<Gpt> {
        let _drawing = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        self.build(device)
    }

    /// Build the model with GPT-2's initialisation from `seed`: the same seed gives the same
    /// weights, whatever other threads initialise at the same time.
    ///
    /// # Errors
    /// [`crate::Error::Config`] when [`GptConfig::validate`] fails.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> Result<Gpt> {
        let _drawing = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        device.seed(seed);
        self.build(device)
    }

    /// [`GptConfig::init`] without the lock.
    fn build(&self, device: &Device) -> Result<Gpt> {
        self.validate()?;
        let embedding = |count: usize| {
            EmbeddingConfig::new(count, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: INIT_STD,
                })
                .init(device)
        };
        let block = BlockConfig::new(self.d_model, self.n_heads)
            .with_n_kv_heads(self.n_kv_heads)
            .with_mask_mode(self.mask_mode)
            .with_dropout(self.dropout)
            .with_activation(self.activation)
            .with_layer_norm_epsilon(self.layer_norm_epsilon)
            .with_residual_init_std(residual_init_std(self.n_layers));
        let blocks = (0..self.n_layers)
            .map(|_| block.init(device))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = (!self.tie_embeddings).then(|| {
            let mut head = normal_linear(self.d_model, self.vocab_size, INIT_STD, device);
            head.bias = None;
            head
        });
        let gpt = Gpt {
            token_embedding: embedding(self.vocab_size),
            position_embedding: (self.position == PositionScheme::Learned)
                .then(|| embedding(self.max_seq_len)),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks,
            ln_f: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_epsilon)
                .init(device),
            lm_head,
            config: self.clone(),
            fault: None,
        };
        // Burn draws a parameter's initial values lazily, on first use; draw them all now,
        // while the caller holds `INIT_LOCK`.
        gpt.visit(&mut DrawWeights);
        Ok(gpt)
    }
}

/// Held while a model's weights are drawn. Burn's backends keep one RNG per process, so "seed,
/// then initialise" only gives the seed's weights if no other thread draws in between (tests
/// run in parallel threads, and a race here once made a resumed run differ from a straight
/// one).
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Touches every parameter so that its lazily drawn initial values exist.
struct DrawWeights;

impl ModuleVisitor for DrawWeights {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// A GPT language model.
///
/// # Shapes
/// - tokens: `[B, T]` integer ids in `0..vocab_size`
/// - logits: `[B, T, V]`, row `t` scores the token that follows position `t`
#[derive(Module, Debug)]
pub struct Gpt {
    /// Token embedding table, `[V, D]`.
    pub token_embedding: Embedding,
    /// Learned position embedding table, `[max_seq_len, D]`; `None` with rotary position
    /// embedding ([`GptConfig::position`]).
    pub position_embedding: Option<Embedding>,
    dropout: Dropout,
    /// The blocks, applied in order.
    pub blocks: Vec<Block>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm,
    /// LM head `D -> V`, no bias; `None` when tied to the token embedding
    /// ([`GptConfig::tie_embeddings`]).
    pub lm_head: Option<Linear>,
    #[module(skip)]
    config: GptConfig,
    /// A bug planted on purpose, handed to the code that would hold it (see
    /// [`super::fault`]); `None`, the default, runs the correct code.
    #[module(skip)]
    fault: Option<Fault>,
}

impl Gpt {
    /// The configuration the model was built from.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Allow (the default) or forbid the fast attention paths in every block (see
    /// [`super::attention_path`]). They are only used where they are exact (causal mask, no
    /// attention dropout); forbidding them runs the readable attention everywhere, e.g. to
    /// test or time both.
    pub fn with_fast_paths(mut self, allowed: bool) -> Self {
        for block in &mut self.blocks {
            block.attn.set_fast_paths(allowed);
        }
        self
    }

    /// The same model with `fault` planted (see [`super::fault`]), or with none: every forward
    /// hands it to the code that would hold the bug. For the failure gallery and its tests;
    /// a model starts without one, and nothing else sets it.
    pub fn with_fault(mut self, fault: Option<Fault>) -> Self {
        self.fault = fault;
        self
    }

    /// The planted fault, if any.
    pub fn fault(&self) -> Option<Fault> {
        self.fault
    }

    /// Logits for every position of `tokens`, no cache.
    ///
    /// # Shapes
    /// - tokens: `[B, T]`, logits: `[B, T, V]`
    ///
    /// # Errors
    /// [`crate::Error::SequenceTooLong`] when `T > max_seq_len`, [`crate::Error::Tokens`] when `T == 0`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Result<Tensor<3>> {
        self.forward_with(tokens, ForwardOptions::default())
    }

    /// Logits for `T_new` new tokens that follow the ones already in `cache`; their keys and
    /// values are appended to it. Positions start at `cache.len()`.
    ///
    /// # Shapes
    /// - new_tokens: `[B, T_new]`, logits: `[B, T_new, V]`
    ///
    /// # Errors
    /// [`crate::Error::CacheFull`] when `cache.len() + T_new > max_seq_len` (nothing is written),
    /// [`crate::Error::CacheMismatch`] for a cache built for another model or batch size,
    /// [`crate::Error::Tokens`] when `T_new == 0`.
    pub fn forward_cached(
        &self,
        new_tokens: Tensor<2, Int>,
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        self.forward_with(new_tokens, ForwardOptions::default().with_cache(cache))
    }

    /// An empty KV cache sized for this model and `batch` sequences.
    pub fn new_cache(&self, batch: usize, device: &Device) -> KvCache {
        let config = &self.config;
        KvCache::new(
            config.n_layers,
            batch,
            config.kv_heads(),
            config.head_dim(),
            config.max_seq_len,
            device,
        )
    }

    /// The forward pass with every option: a KV cache to extend, left padding of a batch of
    /// prompts of different lengths, a shape trace, a band, and logits for the last position
    /// only. [`Gpt::forward`] and [`Gpt::forward_cached`] are this with some options left out.
    ///
    /// With `left_padding[b] = p`, row `b`'s first `p` tokens are padding: no real position
    /// attends to them, and the row's positions count from its first real token, so the row
    /// computes exactly what it would alone.
    ///
    /// The call is checked into a [`Plan`] before the first layer runs; then the embeddings,
    /// every block (each appending to its layer of the cache), and the head. A traced call, or
    /// one on a model with a planted fault, runs the readable path throughout.
    ///
    /// # Shapes
    /// - tokens: `[B, T]`, logits: `[B, T, V]` (`[B, 1, V]` with `last_only`); `left_padding`:
    ///   `B` counts
    ///
    /// # Errors
    /// See [`Plan::new`]; with a planted fault, the check it fails ([`crate::Error::Shape`]).
    pub fn forward_with(
        &self,
        tokens: Tensor<2, Int>,
        options: ForwardOptions,
    ) -> Result<Tensor<3>> {
        let plan = Plan::new(
            &self.config,
            tokens.dims(),
            &options,
            self.fault,
            &tokens.device(),
        )?;
        let ForwardOptions {
            mut cache, trace, ..
        } = options;
        let plain = trace.is_none() && self.fault.is_none();
        // A decode step that runs as one kernel runs on this thread: it has no parallel ops to
        // hand to rayon's workers, and entering their pool costs two thread switches.
        if plain
            && let Some(cache) = cache.as_deref_mut()
            && let Some(logits) = self.decode_step(&tokens, cache, &plan)
        {
            return Ok(logits);
        }
        // On a rayon worker, so every parallel op of the pass shares its work directly.
        on_workers(|| {
            if plain {
                let Ok(logits) = self.run(tokens, cache, &plan, &mut NoInstruments);
                return Ok(logits);
            }
            self.run(
                tokens,
                cache,
                &plan,
                &mut Instruments::new(trace, self.fault),
            )
        })
    }

    /// Embeddings, blocks and head under a checked `plan`; the cache's count advances once,
    /// after the last block.
    fn run<I: Instrumentation>(
        &self,
        tokens: Tensor<2, Int>,
        cache: Option<&mut KvCache>,
        plan: &Plan,
        instruments: &mut I,
    ) -> Result<Tensor<3>, I::Error> {
        instruments.record("ids", &tokens.dims());
        let x = self.embed(tokens, plan, instruments);
        let x = self.blocks(x, cache, plan, instruments)?;
        Ok(self.head(x, plan, instruments))
    }

    /// Every block in turn, each appending to its own layer of the cache; the cache counts the
    /// new positions once, after the last block.
    ///
    /// # Shapes
    /// - x: `[B, T, D]`, output: `[B, T, D]`
    fn blocks<I: Instrumentation>(
        &self,
        mut x: Tensor<3>,
        mut cache: Option<&mut KvCache>,
        plan: &Plan,
        instruments: &mut I,
    ) -> Result<Tensor<3>, I::Error> {
        let mut layers = cache.as_deref_mut().map(KvCache::layers_mut);
        for (index, block) in self.blocks.iter().enumerate() {
            let layer = layers.as_mut().and_then(Iterator::next);
            instruments.enter(format_args!("blocks.{index}"));
            x = block.forward_instrumented(x, layer, plan, instruments)?;
            instruments.leave();
        }
        drop(layers);
        if let Some(cache) = cache {
            cache.advance(plan.cache_step());
        }
        Ok(x)
    }

    /// Token embeddings, plus the learned position embeddings (RoPE adds nothing here: every
    /// layer rotates its queries and keys instead).
    ///
    /// # Shapes
    /// - tokens: `[B, T]`, output: `[B, T, D]`
    fn embed<I: Instrumentation>(
        &self,
        tokens: Tensor<2, Int>,
        plan: &Plan,
        instruments: &mut I,
    ) -> Tensor<3> {
        let token_emb = self.token_embedding.forward(tokens);
        instruments.record("token_embedding", &token_emb.dims());
        let x = match (&self.position_embedding, plan.positions()) {
            (Some(table), Some(positions)) => {
                let position_emb = table.forward(positions.clone());
                instruments.record("position_embedding", &position_emb.dims());
                // [B, T, D] + [1 or B, T, D]: position vectors added to every sequence.
                token_emb + position_emb
            }
            _ => token_emb,
        };
        let x = self.dropout.forward(x);
        instruments.record("embeddings", &x.dims());
        x
    }

    /// The final LayerNorm and the LM head, on the last position only when the plan says so.
    ///
    /// # Shapes
    /// - x: `[B, T, D]`, output: `[B, T, V]` (`[B, 1, V]` with `last_only`)
    fn head<I: Instrumentation>(
        &self,
        x: Tensor<3>,
        plan: &Plan,
        instruments: &mut I,
    ) -> Tensor<3> {
        let [batch, seq, width] = x.dims();
        let x = if plan.last_only() && seq > 1 {
            // LayerNorm and the head act on each position alone, so cutting first is exact.
            x.slice([0..batch, seq - 1..seq, 0..width])
        } else {
            x
        };
        let x = layer_norm(&self.ln_f, x, self.config.layer_norm_epsilon);
        instruments.record("ln_f", &x.dims());
        let logits = match &self.lm_head {
            Some(head) => linear_layer(head, x),
            // Tied: logits are the hidden state's dot products with every token's embedding.
            None => linear(x, self.token_embedding.weight.val().transpose(), None),
        };
        instruments.record("logits", &logits.dims());
        logits
    }
}
