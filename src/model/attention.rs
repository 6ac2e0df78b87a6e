//! Multi-head causal self-attention with the head bookkeeping spelled out: project to Q, K, V,
//! `split_heads`, scores, mask, softmax, weights · V, `merge_heads`, output projection `W_O`.
//!
//! # Grouped-query attention
//! With `n_kv_heads < n_heads` the key and value projections produce only `H_kv` heads, and
//! each group of `G = H / H_kv` adjacent query heads shares one of them (query head `h` reads
//! key/value head `h / G`); `n_kv_heads = 1` is multi-query attention. The cache then holds
//! `H_kv` heads, `G` times less memory, which is what GQA is for: decoding reads the whole
//! cache at every step. The readable kernel shows the sharing by repeating each key/value head
//! for its group ([`repeat_kv`]); the fast kernels share them without copying.
//!
//! The attention core (scores to mixed values) has three implementations that compute the same
//! thing where more than one applies; [`CausalSelfAttention`] picks one per call from the mask
//! mode, the dropout, the padding and the number of new queries, never from whether a trace is
//! being recorded:
//!
//! | kernel                       | used for                                                  |
//! |------------------------------|-----------------------------------------------------------|
//! | readable (`masked_attention`)| leaky masks, attention dropout, padding, or when forced   |
//! | single query                 | one new position (a decode step): no mask needed          |
//! | Burn's fused `attention`     | every other causal call (training, prefill)               |

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};

use super::fault::Fault;
use super::init::normal_linear;
use super::layer_input::LayerInput;
use super::mask::{MaskMode, masked_softmax};
use super::rope::Rotation;
use super::trace::{ShapeTrace, record};
use crate::error::{Error, Result};
use crate::kernels::{Rotary, causal_self_attention, linear_layer};

/// Configuration of a [`CausalSelfAttention`] layer.
#[derive(Config, Debug)]
pub struct CausalSelfAttentionConfig {
    /// Width of the residual stream, `D`.
    pub d_model: usize,
    /// Number of (query) heads, `H`; each head works in `Dh = D / H` dimensions.
    pub n_heads: usize,
    /// Number of key/value heads, `H_kv`, shared by groups of `H / H_kv` query heads; `None`
    /// (the default) means `H`, plain multi-head attention.
    #[config(default = "None")]
    pub n_kv_heads: Option<usize>,
    /// How the attention logits are masked.
    #[config(default = "MaskMode::Causal")]
    pub mask_mode: MaskMode,
    /// Dropout on the attention weights and on the output (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Standard deviation of the Q, K, V projection weights.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Standard deviation of the output projection's weights. GPT-2 scales it down by
    /// `sqrt(2 · n_layers)` because every block adds its output to the residual stream.
    #[config(default = 0.02)]
    pub output_init_std: f64,
}

impl CausalSelfAttentionConfig {
    /// Check the sizes: non-zero, and `d_model` divisible by `n_heads`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the offending sizes.
    pub fn validate(&self) -> Result<()> {
        if self.d_model == 0 || self.n_heads == 0 {
            return Err(Error::Config(format!(
                "d_model ({}) and n_heads ({}) must both be at least 1",
                self.d_model, self.n_heads
            )));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::Config(format!(
                "d_model ({}) must be divisible by n_heads ({}) so every head gets the same \
                 width; try n_heads = {}",
                self.d_model,
                self.n_heads,
                largest_divisor_at_most(self.d_model, self.n_heads)
            )));
        }
        let kv_heads = self.kv_heads();
        if kv_heads == 0 || kv_heads > self.n_heads || !self.n_heads.is_multiple_of(kv_heads) {
            return Err(Error::Config(format!(
                "n_kv_heads ({kv_heads}) must divide n_heads ({}) so every key/value head serves \
                 the same number of query heads; try one of {:?}",
                self.n_heads,
                divisors(self.n_heads)
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!(
                "dropout ({}) must be in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }

    /// Build the layer with GPT-2's initialisation: normal weights, zero biases.
    ///
    /// # Errors
    /// [`Error::Config`] when [`CausalSelfAttentionConfig::validate`] fails.
    pub fn init(&self, device: &Device) -> Result<CausalSelfAttention> {
        self.validate()?;
        let kv_width = self.kv_heads() * self.d_model / self.n_heads;
        let projection = |width: usize, std: f64| normal_linear(self.d_model, width, std, device);
        Ok(CausalSelfAttention {
            query: projection(self.d_model, self.init_std),
            key: projection(kv_width, self.init_std),
            value: projection(kv_width, self.init_std),
            output: projection(self.d_model, self.output_init_std),
            attn_dropout: DropoutConfig::new(self.dropout).init(),
            resid_dropout: DropoutConfig::new(self.dropout).init(),
            n_heads: self.n_heads,
            n_kv_heads: self.kv_heads(),
            mask_mode: self.mask_mode,
            fused: true,
        })
    }
}

impl CausalSelfAttentionConfig {
    /// Key/value heads, `H_kv`: `n_kv_heads`, or `n_heads` when unset.
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }
}

/// The divisors of `n`, in increasing order (the valid key/value head counts for `n` heads).
fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|&k| n.is_multiple_of(k)).collect()
}

/// Check that a tensor about to enter `stage` has the shape it needs there, so a wrong shape is
/// the crate's error naming both shapes and the usual cause, not a backend's panic inside a
/// kernel.
///
/// # Errors
/// [`Error::Shape`] when `got` differs from `expected`.
fn expect_shape(stage: &str, got: &[usize], expected: &[usize], cause: &str) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(Error::Shape {
        stage: stage.into(),
        got: format!("{got:?}"),
        expected: format!("{expected:?}"),
        cause: cause.into(),
    })
}

/// The largest divisor of `n` that is at most `at_most` (a suggestion for a bad `n_heads`).
fn largest_divisor_at_most(n: usize, at_most: usize) -> usize {
    (1..=at_most.min(n))
        .rev()
        .find(|&k| n.is_multiple_of(k))
        .unwrap_or(1)
}

/// The implementations of the attention core; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernel {
    Readable,
    SingleQuery,
    Fused,
}

/// Multi-head causal self-attention, optionally with grouped key/value heads.
///
/// # Shapes
/// - input: `[B, T, D]`
/// - output: `[B, T, D]`
///
/// Inside, with `H` heads of width `Dh = D / H`, `H_kv` key/value heads (`H_kv = H` for plain
/// multi-head attention) and `S` keys (`S = T` without a cache, `S = cached + T` with one):
///
/// | stage                  | shape               |
/// |------------------------|---------------------|
/// | q                      | `[B, T, D]`         |
/// | k, v                   | `[B, T, H_kv·Dh]`   |
/// | split_heads q          | `[B, H, T, Dh]`     |
/// | split_heads k, v       | `[B, H_kv, T, Dh]`  |
/// | keys with cache        | `[B, H_kv, S, Dh]`  |
/// | repeat_kv (readable)   | `[B, H, S, Dh]`     |
/// | scores, weights        | `[B, H, T, S]`      |
/// | attended               | `[B, H, T, Dh]`     |
/// | merge_heads            | `[B, T, D]`         |
/// | output (W_O)           | `[B, T, D]`         |
#[derive(Module, Debug)]
pub struct CausalSelfAttention {
    /// Query projection `W_Q`, `[D, D]` (Burn stores linear weights as `[in, out]`).
    pub query: Linear,
    /// Key projection `W_K`, `[D, H_kv·Dh]`.
    pub key: Linear,
    /// Value projection `W_V`, `[D, H_kv·Dh]`.
    pub value: Linear,
    /// Output projection `W_O`, mixing the heads back together.
    pub output: Linear,
    attn_dropout: Dropout,
    resid_dropout: Dropout,
    n_heads: usize,
    n_kv_heads: usize,
    #[module(skip)]
    mask_mode: MaskMode,
    #[module(skip)]
    fused: bool,
}

impl CausalSelfAttention {
    /// Number of (query) heads, `H`.
    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Number of key/value heads, `H_kv` (equal to `H` for plain multi-head attention).
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Query heads per key/value head, `G = H / H_kv`.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// The masking rule this layer applies.
    pub fn mask_mode(&self) -> MaskMode {
        self.mask_mode
    }

    /// Allow (the default) or forbid the fast kernels (Burn's fused attention and the
    /// single-query decode step). Forbidding them sends every call through the readable kernel,
    /// which tests use to check both, and which keeps the attention weights for a trace.
    pub fn set_fused(&mut self, enabled: bool) {
        self.fused = enabled;
    }

    /// Self-attention for the `T` new positions of `input`. With a cache, their keys and values
    /// are appended to it and the queries attend over everything cached so far; with a padding
    /// mask, left-padding keys are hidden; with a trace, every stage's shape is recorded (the
    /// attention weights too, on the readable kernel).
    ///
    /// A bare tensor converts into a [`LayerInput`], so `attn.forward(x)` runs without a cache.
    ///
    /// # Shapes
    /// - input.x: `[B, T, D]`, output: `[B, T, D]`
    /// - input.padding: `[B, 1, T, S]`
    ///
    /// # Panics
    /// When a fault planted in `input` trips a check; [`Self::try_forward`] returns the error.
    pub fn forward<'a>(&self, input: impl Into<LayerInput<'a>>) -> Tensor<3> {
        self.try_forward(input)
            .unwrap_or_else(|err| panic!("a planted fault tripped a check: {err}"))
    }

    /// [`Self::forward`], returning the error of a check that a planted fault tripped (without
    /// a fault it cannot fail).
    ///
    /// # Errors
    /// [`Error::Shape`] for [`Fault::TransposedKey`] (unless `S` happens to equal `Dh`, when
    /// the wrong product has the right shape and only the values are wrong),
    /// [`Fault::MissingMerge`] and [`Fault::CacheWrongAxis`].
    pub fn try_forward<'a>(&self, input: impl Into<LayerInput<'a>>) -> Result<Tensor<3>> {
        let LayerInput {
            x,
            cache,
            padding,
            mut trace,
            rotation,
            fault,
        } = input.into();
        let [batch, seq, d_model] = x.dims();
        // A planted fault lives in the readable code: it takes the readable kernel.
        let readable_only = padding.is_some() || fault.is_some();
        let whole_sequence = cache.is_none() && self.kernel(seq, readable_only) == Kernel::Fused;
        // The fused op takes a rotation as `[T, Dh/2]` tables, which exist when every row has
        // the same positions (only asked for here: decode steps never need them).
        let shared_tables = whole_sequence
            .then(|| rotation.as_ref().map(Rotation::shared_tables))
            .flatten();
        if whole_sequence && shared_tables.as_ref().is_none_or(Option::is_some) {
            // Training and full-sequence forwards: one fused op from x to the merged heads
            // (see `crate::kernels::causal_self_attention`); the stages are those below.
            let head_dim = d_model / self.n_heads;
            let heads = [batch, self.n_heads, seq, head_dim];
            let kv_heads = [batch, self.n_kv_heads, seq, head_dim];
            let kv = [batch, seq, self.n_kv_heads * head_dim];
            for (stage, shape) in [
                ("q", &[batch, seq, d_model][..]),
                ("k", &kv),
                ("v", &kv),
                ("q_heads", &heads),
                ("k_heads", &kv_heads),
                ("v_heads", &kv_heads),
                ("scores", &[batch, self.n_heads, seq, seq]),
                ("weights", &[batch, self.n_heads, seq, seq]),
                ("attended", &heads),
            ] {
                record(&mut trace, stage, shape);
            }
            let projections = [&self.query, &self.key, &self.value];
            let rotate = |x: Tensor<4>| match &rotation {
                Some(rotation) => rotation.apply(x),
                None => x,
            };
            let rotary = shared_tables.flatten().map(|(cos, sin)| Rotary {
                cos,
                sin,
                rotate: &rotate,
            });
            let heads = [self.n_heads, self.n_kv_heads];
            let merged = causal_self_attention(x, projections, heads, rotary);
            return Ok(self.project_output(merged, trace));
        }
        let q = linear_layer(&self.query, x.clone());
        let k = linear_layer(&self.key, x.clone());
        let v = linear_layer(&self.value, x);
        record(&mut trace, "q", &q.dims());
        record(&mut trace, "k", &k.dims());
        record(&mut trace, "v", &v.dims());

        let (q, k, v) = (
            split_heads(q, self.n_heads),
            split_heads(k, self.n_kv_heads),
            split_heads(v, self.n_kv_heads),
        );
        record(&mut trace, "q_heads", &q.dims());
        // Rotary position embedding: queries and keys turned by their positions' angles (the
        // keys before they are cached, so the cache holds them rotated).
        let (q, k) = match &rotation {
            Some(rotation) => (rotation.apply(q), rotation.apply(k)),
            None => (q, k),
        };
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v, fault)?,
            None => (k, v),
        };
        record(&mut trace, "k_heads", &k.dims());
        record(&mut trace, "v_heads", &v.dims());

        let attended = match self.kernel(q.dims()[2], readable_only) {
            Kernel::Readable => {
                // Each query head gets its group's keys and values (a copy; the fast kernels
                // read the shared heads in place).
                let (k, v) = (
                    repeat_kv(k, self.group_size()),
                    repeat_kv(v, self.group_size()),
                );
                if self.group_size() > 1 {
                    record(&mut trace, "k_repeated", &k.dims());
                    record(&mut trace, "v_repeated", &v.dims());
                }
                self.masked_attention(q, k, v, padding, fault, trace.as_deref_mut())?
                    .0
            }
            kernel => {
                // The fast kernels never hold the scores or weights; their shapes are what the
                // readable kernel would record.
                let [batch, heads, queries, _] = q.dims();
                let scores = [batch, heads, queries, k.dims()[2]];
                record(&mut trace, "scores", &scores);
                record(&mut trace, "weights", &scores);
                match kernel {
                    Kernel::SingleQuery => single_query_attention(q, k, v),
                    _ => fused_causal_attention(q, k, v),
                }
            }
        };
        record(&mut trace, "attended", &attended.dims());

        // W_O mixes the heads of each position, so it needs them side by side, [B, T, H·Dh];
        // the missing-merge fault hands it the heads as attention leaves them, [B, H, T, Dh].
        let merged = (fault != Some(Fault::MissingMerge)).then(|| merge_heads(attended.clone()));
        let handed_on = merged
            .as_ref()
            .map_or_else(|| attended.dims().to_vec(), |merged| merged.dims().to_vec());
        expect_shape(
            "input of the output projection W_O",
            &handed_on,
            &[batch, seq, d_model],
            "the merge step was skipped: merge_heads puts the heads back side by side \
             ([B, H, T, Dh] -> swap to [B, T, H, Dh] -> reshape to [B, T, D]) before W_O",
        )?;
        let merged = merged.expect("only the missing merge skips it, and the check refused that");
        Ok(self.project_output(merged, trace))
    }

    /// The output projection `W_O` (and dropout) on the merged heads.
    fn project_output(&self, merged: Tensor<3>, mut trace: Option<&mut ShapeTrace>) -> Tensor<3> {
        record(&mut trace, "merged", &merged.dims());
        let out = self
            .resid_dropout
            .forward(linear_layer(&self.output, merged));
        record(&mut trace, "output", &out.dims());
        out
    }

    /// Which kernel computes the attention core for `queries` new positions (see the module
    /// docs).
    fn kernel(&self, queries: usize, padded: bool) -> Kernel {
        if padded || !self.uses_fast_kernels() {
            Kernel::Readable
        } else if queries == 1 {
            // One new query against the cache may see every key, so no mask is needed, and two
            // matmuls read the cache where it lies (the fused kernel would first copy the
            // cache's strided slice into a contiguous buffer, O(S) every step).
            Kernel::SingleQuery
        } else {
            Kernel::Fused
        }
    }

    /// Whether unpadded calls take a fast kernel. They do only where it computes exactly what
    /// the readable kernel does: the correct causal mask and no dropout on the weights (the
    /// fast kernels have none), unless [`Self::set_fused`] forbade them. The test
    /// `fused_attention_matches_readable_attention` holds them to that.
    pub fn uses_fast_kernels(&self) -> bool {
        self.fused && self.mask_mode == MaskMode::Causal && self.attn_dropout.prob == 0.0
    }

    /// The attention core written out: scores, mask, softmax, weights · V.
    ///
    /// # Shapes
    /// - q: `[B, H, T, Dh]`, k and v: `[B, H, S, Dh]`
    /// - returns the mixed values `[B, H, T, Dh]` and the weights `[B, H, T, S]`
    pub fn readable_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        trace: Option<&mut ShapeTrace>,
    ) -> (Tensor<4>, Tensor<4>) {
        self.masked_attention(q, k, v, None, None, trace)
            .expect("no fault, so every shape fits")
    }

    fn masked_attention(
        &self,
        q: Tensor<4>,
        k: Tensor<4>,
        v: Tensor<4>,
        padding: Option<Tensor<4, Bool>>,
        fault: Option<Fault>,
        mut trace: Option<&mut ShapeTrace>,
    ) -> Result<(Tensor<4>, Tensor<4>)> {
        let head_dim = q.dims()[3];
        // [B, H, T, Dh] x [B, H, Dh, S] -> [B, H, T, S], scaled so the logits' variance does
        // not grow with the head width. (The transposed-key fault forgets the swap.)
        let [batch, heads, keys, _] = k.dims();
        let key_operand = match fault {
            Some(Fault::TransposedKey) => k,
            _ => k.swap_dims(2, 3),
        };
        expect_shape(
            "attention scores q · kᵀ, the key operand",
            &key_operand.dims(),
            &[batch, heads, head_dim, keys],
            "K was not transposed: the product needs q's last axis (Dh) to meet K's last \
             axis, so K must enter as kᵀ = k.swap_dims(2, 3), [B, H, Dh, S]",
        )?;
        let scores = q.matmul(key_operand).div_scalar((head_dim as f64).sqrt());
        record(&mut trace, "scores", &scores.dims());
        let weights = self
            .attn_dropout
            .forward(masked_softmax(scores, self.mask_mode, padding));
        record(&mut trace, "weights", &weights.dims());
        if let Some(trace) = trace {
            trace.record_weights("weights", &weights);
        }
        // [B, H, T, S] x [B, H, S, Dh] -> [B, H, T, Dh]
        Ok((weights.clone().matmul(v), weights))
    }

    /// Give each (query) head its own slice of the model dimension.
    ///
    /// # Shapes
    /// - input: `[B, T, D]`
    /// - output: `[B, H, T, Dh]` with `Dh = D / H`
    pub fn split_heads(&self, x: Tensor<3>) -> Tensor<4> {
        split_heads(x, self.n_heads)
    }
}

/// Repeat each key/value head for the `groups` query heads that share it: head `h` of the
/// result is head `h / groups` of the input, so query head `h` meets its group's keys. This is
/// what grouped-query attention means, written as a copy; the fast kernels get the same result
/// by grouping the queries instead (see [`crate::kernels::causal_attention`]).
///
/// # Shapes
/// - x: `[B, H_kv, S, Dh]`, output: `[B, H_kv·groups, S, Dh]`
pub fn repeat_kv(x: Tensor<4>, groups: usize) -> Tensor<4> {
    if groups == 1 {
        return x;
    }
    let [batch, kv_heads, seq, head_dim] = x.dims();
    // [B, H_kv, S, Dh] -> [B, H_kv, 1, S, Dh] -> [B, H_kv, G, S, Dh] -> [B, H_kv·G, S, Dh]
    x.unsqueeze_dim::<5>(2)
        .expand([batch, kv_heads, groups, seq, head_dim])
        .reshape([batch, kv_heads * groups, seq, head_dim])
}

/// Give each of `n_heads` heads its own slice of the model dimension: head `h` gets features
/// `h·Dh .. (h+1)·Dh`.
///
/// # Shapes
/// - input: `[B, T, D]`
/// - output: `[B, H, T, Dh]` with `Dh = D / H`
///
/// # Panics
/// If `D` is not divisible by `n_heads` (configs are validated before a layer exists).
pub fn split_heads(x: Tensor<3>, n_heads: usize) -> Tensor<4> {
    let [batch, seq, d_model] = x.dims();
    assert_eq!(
        d_model % n_heads,
        0,
        "d_model {d_model} not divisible by {n_heads} heads"
    );
    x.reshape([batch, seq, n_heads, d_model / n_heads])
        .swap_dims(1, 2)
}

/// Put the heads back side by side: the inverse of [`split_heads`].
///
/// # Shapes
/// - input: `[B, H, T, Dh]`
/// - output: `[B, T, H·Dh]`
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [batch, n_heads, seq, head_dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, seq, n_heads * head_dim])
}

/// Attention of a single query position (a decode step) over all `S` keys: with one query the
/// causal mask hides nothing, so this is `softmax(q·Kᵀ / √Dh)·V` without one. With grouped
/// key/value heads, the `G` query heads of a group are stacked against their shared head, so
/// each cached head is read once per step, not once per query head.
///
/// # Shapes
/// - q: `[B, H, 1, Dh]`, k and v: `[B, H_kv, S, Dh]`, output: `[B, H, 1, Dh]`
pub fn single_query_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    let [batch, heads, _, head_dim] = q.dims();
    let kv_heads = k.dims()[1];
    let groups = heads / kv_heads;
    let scale = (head_dim as f64).sqrt().recip();
    // [B, H, 1, Dh] -> [B, H_kv, G, Dh]: a group's queries as the rows of one matrix. (Not
    // for G = 1, where it is the same shape: each op costs a decode step microseconds.)
    let q = match groups {
        1 => q,
        _ => q.reshape([batch, kv_heads, groups, head_dim]),
    };
    // K·qᵀ rather than q·Kᵀ: the cache's rows are contiguous, so this is a row-major
    // matrix-vector product, which the CPU backends run several times faster.
    let scores = k.matmul(q.swap_dims(2, 3)).mul_scalar(scale); // [B, H_kv, S, G]
    let attended = softmax(scores, 2).swap_dims(2, 3).matmul(v); // [B, H_kv, G, Dh]
    match groups {
        1 => attended,
        _ => attended.reshape([batch, heads, 1, head_dim]),
    }
}

/// Causal attention through a fused kernel: on Flex the crate's own, with a hand-written
/// backward for training ([`crate::kernels::causal_attention`]); elsewhere Burn's fused
/// `attention` op. Both align the causal mask bottom-right like [`super::mask::causal_mask`].
///
/// # Shapes
/// - q: `[B, H, T, Dh]`, k and v: `[B, H_kv, S, Dh]` (`H_kv` dividing `H`), output:
///   `[B, H, T, Dh]`
pub fn fused_causal_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<4> {
    crate::kernels::causal_attention(q, k, v)
}
