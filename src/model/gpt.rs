//! The tiny language model: token and position embeddings, a stack of pre-norm blocks, a final
//! LayerNorm and the LM head.
//!
//! ```text
//! ids [B, T] -> token emb + position emb [B, T, D] -> N x Block [B, T, D]
//!            -> ln_f [B, T, D] -> lm_head [B, T, V]
//! ```

use std::sync::{Mutex, PoisonError};

use burn::config::Config;
use burn::module::{Initializer, Module, ModuleVisitor, Param};
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
};
use burn::tensor::{Device, Int, Tensor};

use super::attention::CausalSelfAttentionConfig;
use super::block::{Block, BlockConfig};
use super::cache::KvCache;
use super::fault::Fault;
use super::init::{INIT_STD, normal_linear, residual_init_std};
use super::layer_input::LayerInput;
use super::mask::{MaskMode, band_mask, padding_mask};
use super::rope::{PositionScheme, Rotation};
use super::trace::{ShapeTrace, enter, leave, record};
use crate::device::token_tensor;
use crate::error::{Error, Result};
use crate::kernels::{LAYER_NORM_EPS, layer_norm, linear, linear_layer, on_workers};

/// Configuration of a [`Gpt`]; serialises to JSON with serde (it is saved beside every
/// checkpoint).
#[derive(Config, Debug, PartialEq)]
pub struct GptConfig {
    /// Number of distinct tokens, `V`.
    pub vocab_size: usize,
    /// Width of the residual stream, `D`.
    #[config(default = 128)]
    pub d_model: usize,
    /// Attention heads per block, `H`; `D` must be divisible by `H`.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Key/value heads per block, `H_kv`, each shared by `H / H_kv` query heads
    /// (grouped-query attention; 1 is multi-query attention). `None`, the default, means `H`:
    /// plain multi-head attention.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// Number of blocks, `L`.
    #[config(default = 4)]
    pub n_layers: usize,
    /// Context window: the most positions the model can attend over.
    #[config(default = 128)]
    pub max_seq_len: usize,
    /// Dropout probability, active only when training on an autodiff device.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// How attention is masked; anything but `Causal` leaks the future on purpose.
    #[config(default = "MaskMode::Causal")]
    pub mask_mode: MaskMode,
    /// Use the token embedding table, transposed, as the LM head (GPT-2 and nanoGPT do): one
    /// `[V, D]` matrix learns from both ends, and the model has `V·D` fewer parameters.
    #[config(default = false)]
    pub tie_embeddings: bool,
    /// Where positions enter: a learned table added to the embeddings (the default, GPT-2's)
    /// or rotary position embedding of the queries and keys (see [`super::rope`]).
    #[config(default = "PositionScheme::Learned")]
    pub position: PositionScheme,
    /// RoPE's base `theta`: pair `i` of a head turns by `theta^(−2i/Dh)` per position.
    #[config(default = 10000.0)]
    pub rope_theta: f64,
}

/// Fields added to [`GptConfig`] after 0.2, with the value that gives 0.2's model: a config
/// written before them reads as that model.
fn added_since_0_2() -> [(&'static str, serde_json::Value); 4] {
    [
        ("tie_embeddings", false.into()),
        ("position", "learned".into()),
        ("rope_theta", 10000.0.into()),
        ("n_kv_heads", serde_json::Value::Null),
    ]
}

impl GptConfig {
    /// Read a config from JSON, including one written by an earlier version (fields added
    /// since take the value that gives the earlier model).
    ///
    /// # Errors
    /// The JSON error when `json` is not a config.
    pub fn from_json(json: &str) -> serde_json::Result<Self> {
        let mut value: serde_json::Value = serde_json::from_str(json)?;
        if let Some(fields) = value.as_object_mut() {
            for (name, old_value) in added_since_0_2() {
                fields.entry(name).or_insert(old_value);
            }
        }
        serde_json::from_value(value)
    }

    /// Width of one head, `Dh = D / H`.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// Key/value heads per block, `H_kv`: `n_kv_heads`, or `n_heads` when unset.
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Check every size before anything is allocated.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first size that cannot work.
    pub fn validate(&self) -> Result<()> {
        Error::require_at_least_one(&[
            ("vocab_size", self.vocab_size),
            ("n_layers", self.n_layers),
            ("max_seq_len", self.max_seq_len),
        ])?;
        CausalSelfAttentionConfig::new(self.d_model, self.n_heads)
            .with_n_kv_heads(self.n_kv_heads)
            .with_dropout(self.dropout)
            .validate()?;
        if self.position == PositionScheme::Rope {
            if !self.head_dim().is_multiple_of(2) {
                return Err(Error::Config(format!(
                    "rotary position embedding turns pairs of features, so each head needs an \
                     even width; d_model / n_heads = {} / {} = {}",
                    self.d_model,
                    self.n_heads,
                    self.head_dim()
                )));
            }
            if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
                return Err(Error::Config(format!(
                    "rope_theta ({}) must be a finite number above 1 (10000 is the usual base)",
                    self.rope_theta
                )));
            }
        }
        Ok(())
    }

    /// Build the model with GPT-2's initialisation, drawing from the backend's RNG as it
    /// stands (see [`GptConfig::init_seeded`] for reproducible weights).
    ///
    /// Unlike Burn's own `init` functions this returns a `Result`: the config usually comes
    /// from a user or a file, and a bad one must be an error, not a panic.
    ///
    /// # Errors
    /// [`Error::Config`] when [`GptConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Result<Gpt> {
        let _drawing = INIT_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        self.build(device)
    }

    /// Build the model with GPT-2's initialisation from `seed`: the same seed gives the same
    /// weights, whatever other threads initialise at the same time.
    ///
    /// # Errors
    /// [`Error::Config`] when [`GptConfig::validate`] fails.
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
                .with_epsilon(LAYER_NORM_EPS)
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

/// Options of [`Gpt::forward_with`]; all off by default, set with the `with_*` methods or as
/// fields.
#[derive(Debug, Default)]
pub struct ForwardOptions<'a> {
    /// A cache to extend: positions continue from its length and the new keys and values are
    /// appended.
    pub cache: Option<&'a mut KvCache>,
    /// Per row, how many leading tokens are padding (for prompts of different lengths).
    pub left_padding: Option<&'a [usize]>,
    /// Record every stage's shape here. It does not change which attention kernel runs.
    pub trace: Option<&'a mut ShapeTrace>,
    /// Compute logits for the last position only (`[B, 1, V]`): all that generation reads,
    /// and it spares the LM head (`D × V` per position) and the final LayerNorm on every
    /// other position of a prompt.
    pub last_only: bool,
    /// Sliding-window attention: every query sees only the last `band` positions up to
    /// itself ([`super::mask::band_mask`]), so a sequence may run past `max_seq_len` (with
    /// rotary position embedding only). The reference a rolling cache must match.
    pub band: Option<usize>,
}

impl<'a> ForwardOptions<'a> {
    /// Extend `cache`.
    pub fn with_cache(mut self, cache: &'a mut KvCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Treat the first `left_padding[b]` tokens of row `b` as padding.
    pub fn with_left_padding(mut self, left_padding: &'a [usize]) -> Self {
        self.left_padding = Some(left_padding);
        self
    }

    /// Record every stage's shape into `trace`.
    pub fn with_trace(mut self, trace: &'a mut ShapeTrace) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Compute the logits of the last position only.
    pub fn with_last_only(mut self, last_only: bool) -> Self {
        self.last_only = last_only;
        self
    }

    /// Let every query see only the last `width` positions up to itself.
    pub fn with_band(mut self, width: usize) -> Self {
        self.band = Some(width);
        self
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

    /// Allow (the default) or forbid the fast attention kernels in every block. They are only
    /// used where they are exact (causal mask, no attention dropout); forbidding them runs the
    /// readable attention everywhere, e.g. to test or time both, or to keep the attention
    /// weights in a [`ShapeTrace`].
    pub fn with_fused_attention(mut self, enabled: bool) -> Self {
        for block in &mut self.blocks {
            block.attn.set_fused(enabled);
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
    /// [`Error::SequenceTooLong`] when `T > max_seq_len`, [`Error::Tokens`] when `T == 0`.
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
    /// [`Error::CacheFull`] when `cache.len() + T_new > max_seq_len` (nothing is written),
    /// [`Error::CacheMismatch`] for a cache built for another model or batch size,
    /// [`Error::Tokens`] when `T_new == 0`.
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
    /// prompts of different lengths, a shape trace, and logits for the last position only.
    /// [`Gpt::forward`] and [`Gpt::forward_cached`] are this with some options left out.
    ///
    /// With `left_padding[b] = p`, row `b`'s first `p` tokens are padding: no real position
    /// attends to them, and the row's positions count from its first real token, so the row
    /// computes exactly what it would alone.
    ///
    /// # Shapes
    /// - tokens: `[B, T]`, logits: `[B, T, V]` (`[B, 1, V]` with `last_only`); `left_padding`:
    ///   `B` counts
    ///
    /// # Errors
    /// As [`Gpt::forward`] and [`Gpt::forward_cached`]; [`Error::Tokens`] when `left_padding`
    /// does not have one entry per row; [`Error::Config`] when the trace keeps attention
    /// weights but this model runs the fast kernels, which never hold them.
    pub fn forward_with(
        &self,
        tokens: Tensor<2, Int>,
        options: ForwardOptions,
    ) -> Result<Tensor<3>> {
        // On a rayon worker, so every parallel op of the pass shares its work directly.
        on_workers(|| self.forward_on_worker(tokens, options))
    }

    fn forward_on_worker(
        &self,
        tokens: Tensor<2, Int>,
        options: ForwardOptions,
    ) -> Result<Tensor<3>> {
        let ForwardOptions {
            cache,
            left_padding,
            mut trace,
            last_only,
            band,
        } = options;
        let [batch, seq] = tokens.dims();
        let start = self.check_call(
            batch,
            seq,
            cache.as_deref(),
            left_padding,
            trace.as_deref(),
            band,
        )?;
        // Without any padding the mask would hide nothing: skip building it, which also keeps
        // the fast attention kernels available.
        let left_padding = left_padding.filter(|pads| pads.iter().any(|&pad| pad > 0));
        // Likewise a band at least as wide as every key seen so far hides nothing.
        let band = band.filter(|&width| start + seq > width);
        record(&mut trace, "ids", &[batch, seq]);

        let device = tokens.device();
        // The positions-restart fault counts every call from 0, forgetting the cached prefix.
        let first_position = match self.fault {
            Some(Fault::PositionsRestart) => 0,
            _ => start,
        };
        let (rows, positions) = positions(first_position, batch, seq, left_padding);
        let padding = left_padding.map(|pads| padding_mask(pads, seq, start + seq, &device));
        // The band hides keys like padding does: both go to the readable attention.
        let padding = match (padding, band) {
            (Some(padding), Some(width)) => {
                Some(padding.bool_or(band_mask(seq, start + seq, width, &device)))
            }
            (None, Some(width)) => Some(band_mask(seq, start + seq, width, &device)),
            (padding, None) => padding,
        };
        let token_emb = self.token_embedding.forward(tokens);
        record(&mut trace, "token_embedding", &token_emb.dims());
        let (x, rotation) = match &self.position_embedding {
            Some(table) => {
                let position_emb = table.forward(token_tensor(&positions, rows, seq, &device)?);
                record(&mut trace, "position_embedding", &position_emb.dims());
                // [B, T, D] + [1 or B, T, D]: position vectors added to every sequence.
                (token_emb + position_emb, None)
            }
            // RoPE: nothing added here; every layer rotates its queries and keys instead.
            None => {
                let head_dim = self.config.head_dim();
                let theta = self.config.rope_theta;
                let rotation = Rotation::new(&positions, rows, head_dim, theta, &device);
                (token_emb, Some(rotation))
            }
        };
        let mut x = self.dropout.forward(x);
        record(&mut trace, "embeddings", &x.dims());

        let mut layer_caches = cache.map(|cache| cache.layers_mut());
        for (index, block) in self.blocks.iter().enumerate() {
            enter(&mut trace, &format!("blocks.{index}"));
            x = block.try_forward(LayerInput {
                x,
                cache: layer_caches.as_mut().and_then(|layers| layers.next()),
                padding: padding.clone(),
                trace: trace.as_deref_mut(),
                rotation: rotation.clone(),
                fault: self.fault,
            })?;
            leave(&mut trace);
        }

        let x = if last_only && seq > 1 {
            // LayerNorm and the head act on each position alone, so cutting first is exact.
            let width = x.dims()[2];
            x.slice([0..batch, seq - 1..seq, 0..width])
        } else {
            x
        };
        let x = layer_norm(&self.ln_f, x);
        record(&mut trace, "ln_f", &x.dims());
        let logits = match &self.lm_head {
            Some(head) => linear_layer(head, x),
            // Tied: logits are the hidden state's dot products with every token's embedding.
            None => linear(x, self.token_embedding.weight.val().transpose(), None),
        };
        record(&mut trace, "logits", &logits.dims());
        Ok(logits)
    }

    /// Check a call of `seq` tokens for `batch` rows before anything runs; return the position
    /// of its first token (the cache's length, or 0).
    fn check_call(
        &self,
        batch: usize,
        seq: usize,
        cache: Option<&KvCache>,
        left_padding: Option<&[usize]>,
        trace: Option<&ShapeTrace>,
        band: Option<usize>,
    ) -> Result<usize> {
        if seq == 0 || batch == 0 {
            return Err(Error::Tokens(format!(
                "a batch of shape [{batch}, {seq}] has no tokens; give at least one"
            )));
        }
        if left_padding.is_some_and(|pads| pads.len() != batch) {
            return Err(Error::Tokens(format!(
                "left_padding needs one count per row ({batch})"
            )));
        }
        if trace.is_some_and(ShapeTrace::keeps_attention_weights)
            && self
                .blocks
                .iter()
                .any(|block| block.attn.uses_fast_kernels())
        {
            return Err(Error::Config(
                "the trace keeps attention weights, which only the readable attention \
                 materialises; run a model built with `with_fused_attention(false)`"
                    .into(),
            ));
        }
        let learned = self.position_embedding.is_some();
        if band == Some(0) {
            return Err(Error::Config("a band of width 0 hides every key".into()));
        }
        match cache {
            Some(cache) => {
                let config = &self.config;
                cache.check_model(config.n_layers, config.kv_heads(), config.head_dim())?;
                cache.check_append(batch, seq)?;
                if band.is_some() && cache.position() > cache.len() {
                    return Err(Error::Config(
                        "a band mask cannot be laid over a rolling cache that has wrapped: the \
                         cache already holds only the band's keys; pass no band with it"
                            .into(),
                    ));
                }
                if learned && cache.position() + seq > config.max_seq_len {
                    return Err(Error::Config(format!(
                        "position {} is past the learned position table ({} rows): a rolling \
                         cache needs rotary position embedding (`--position rope`)",
                        cache.position() + seq - 1,
                        config.max_seq_len
                    )));
                }
                Ok(cache.position())
            }
            // Past the window only with a band, and only when positions are not a table.
            None if seq > self.config.max_seq_len && (band.is_none() || learned) => {
                Err(Error::SequenceTooLong {
                    len: seq,
                    max_seq_len: self.config.max_seq_len,
                })
            }
            None => Ok(0),
        }
    }
}

/// Absolute positions of the `seq` new tokens: a cached call continues where the cache left off
/// (`start`), and a padded row counts from its first real token. Returns the number of rows
/// and the positions, row-major.
///
/// # Shapes
/// - output: `[1, T]` without padding (broadcast over rows), `[B, T]` with it
fn positions(
    start: usize,
    batch: usize,
    seq: usize,
    left_padding: Option<&[usize]>,
) -> (usize, Vec<usize>) {
    match left_padding {
        None => (1, (start..start + seq).collect()),
        Some(pads) => (
            batch,
            pads.iter()
                .flat_map(|&pad| (start..start + seq).map(move |pos| pos.saturating_sub(pad)))
                .collect(),
        ),
    }
}
