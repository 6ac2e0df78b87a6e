//! A forward call, checked once: the options a caller gives ([`ForwardOptions`]) become a
//! [`Plan`] before the first layer runs, and every layer reads the same plan.
//!
//! | the plan holds          | worked out from                                              |
//! |-------------------------|--------------------------------------------------------------|
//! | the first new position  | the cache's position (0 without a cache)                     |
//! | each row's positions    | counting on from there; a left-padded row from its first real token |
//! | the hidden keys         | left padding and a sliding window's band (the causal rule is each layer's own) |
//! | the rotation            | RoPE's angles at those positions                             |
//! | the cache step          | where the new keys and values go, and how many keys the queries see |
//!
//! Everything a call could get wrong (no tokens, a cache of another model, a full cache, a
//! sequence past the context) is refused here, before any layer has run or written.

use burn::tensor::{Bool, Device, Int, Tensor};

use super::cache::{CacheStep, KvCache};
use super::config::GptConfig;
use super::fault::Fault;
use super::mask::{band_mask, padding_mask};
use super::rope::{PositionScheme, Rotation};
use super::trace::ShapeTrace;
use crate::device::token_tensor;
use crate::error::{Error, Result};

/// Options of [`super::Gpt::forward_with`]; all off by default, set with the `with_*` methods
/// or as fields.
#[derive(Debug, Default)]
pub struct ForwardOptions<'a> {
    /// A cache to extend: positions continue from its length and the new keys and values are
    /// appended.
    pub cache: Option<&'a mut KvCache>,
    /// Per row, how many leading tokens are padding (for prompts of different lengths).
    pub left_padding: Option<&'a [usize]>,
    /// Record every stage's shape here. A traced call runs the readable path, so the shapes
    /// recorded are those of the tensors computed (see [`super::attention_path`]).
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

/// One forward call, checked: where its `T` new tokens sit and what each of them may see.
#[derive(Clone, Debug)]
pub struct Plan {
    new_tokens: usize,
    /// Position ids for a learned table, `[1 or B, T]`.
    positions: Option<Tensor<2, Int>>,
    rotation: Option<Rotation>,
    hidden: Option<Tensor<4, Bool>>,
    /// What `hidden` is made of, for the kernels that take it as numbers: each row's left
    /// padding (`None`: no row is padded), and whether a band hides keys too.
    padding: Option<Vec<usize>>,
    banded: bool,
    /// The new positions, row-major `[1 or B, T]` (as in `positions` and the rotation).
    position_values: Vec<usize>,
    cache_step: CacheStep,
    last_only: bool,
}

impl Plan {
    /// Check a call of `tokens` (`[B, T]`) with `options` on a model of `config` (with `fault`
    /// planted, if any) and work out its plan.
    ///
    /// # Errors
    /// [`Error::Tokens`] for an empty batch or padding counts that do not match its rows;
    /// [`Error::SequenceTooLong`] past the context window; [`Error::CacheFull`] and
    /// [`Error::CacheMismatch`] for a cache that cannot take the call; [`Error::Config`] for a
    /// band of width 0, a band over a rolling cache that has wrapped, or a learned position
    /// table run past its end.
    pub fn new(
        config: &GptConfig,
        [batch, seq]: [usize; 2],
        options: &ForwardOptions,
        fault: Option<Fault>,
        device: &Device,
    ) -> Result<Self> {
        check_tokens(batch, seq, options.left_padding)?;
        let (start, cache_step) = match options.cache.as_deref() {
            Some(cache) => {
                check_band(options.band)?;
                let model = [config.n_layers, config.kv_heads(), config.head_dim()];
                let step = cache.plan_step(model, batch, seq, fault)?;
                check_wrapped_band(cache, options.band)?;
                check_table_end(config, cache.position() + seq)?;
                (cache.position(), step)
            }
            None => {
                check_length(config, seq, options.band)?;
                (0, CacheStep::fresh(seq))
            }
        };
        // Padding that pads nothing and a band wider than every key hide nothing: no mask,
        // which also keeps the fast paths open.
        let padding = options
            .left_padding
            .filter(|pads| pads.iter().any(|&p| p > 0));
        let band = options.band.filter(|&width| start + seq > width);
        let hidden = hidden_keys(padding, band, seq, start + seq, device);
        // The positions-restart fault counts every call from 0, forgetting the cached prefix.
        let first = match fault {
            Some(Fault::PositionsRestart) => 0,
            _ => start,
        };
        let (rows, positions) = positions(first, batch, seq, padding);
        let mut plan = Self {
            cache_step,
            hidden,
            padding: padding.map(<[usize]>::to_vec),
            banded: band.is_some(),
            position_values: positions.clone(),
            last_only: options.last_only,
            ..Self::sequence(seq)
        };
        match config.position {
            PositionScheme::Learned => {
                plan.positions = Some(token_tensor(&positions, rows, seq, device)?);
            }
            PositionScheme::Rope => {
                let (head_dim, theta) = (config.head_dim(), config.rope_theta);
                plan.rotation = Some(Rotation::new(&positions, rows, head_dim, theta, device));
            }
        }
        Ok(plan)
    }

    /// The plan of a plain call of `seq` new positions: no cache, nothing hidden, no rotation
    /// (what a single layer is run with on its own; add one with [`Plan::with_rotation`]).
    pub fn sequence(seq: usize) -> Self {
        Self {
            new_tokens: seq,
            positions: None,
            rotation: None,
            hidden: None,
            padding: None,
            banded: false,
            position_values: (0..seq).collect(),
            cache_step: CacheStep::fresh(seq),
            last_only: false,
        }
    }

    /// The same plan with queries and keys rotated by `rotation`.
    pub fn with_rotation(mut self, rotation: Rotation) -> Self {
        self.rotation = Some(rotation);
        self
    }

    /// New positions in the call, `T`.
    pub fn new_tokens(&self) -> usize {
        self.new_tokens
    }

    /// The position ids of the new tokens for a learned position table, `[1 or B, T]`
    /// (`None` with rotary position embedding).
    pub fn positions(&self) -> Option<&Tensor<2, Int>> {
        self.positions.as_ref()
    }

    /// The new positions' rotation, with rotary position embedding.
    pub fn rotation(&self) -> Option<&Rotation> {
        self.rotation.as_ref()
    }

    /// Rotate queries and keys by the new positions' angles (unchanged without RoPE).
    ///
    /// # Shapes
    /// - q: `[B, H, T, Dh]`, k: `[B, H_kv, T, Dh]`, outputs: the same
    pub fn rotate(&self, q: Tensor<4>, k: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        match &self.rotation {
            Some(rotation) => (rotation.apply(q), rotation.apply(k)),
            None => (q, k),
        }
    }

    /// Keys hidden besides the causal rule, `true` = hidden: left padding and a band.
    ///
    /// # Shapes
    /// - `[1 or B, 1, T, S]`
    pub fn hidden_keys(&self) -> Option<&Tensor<4, Bool>> {
        self.hidden.as_ref()
    }

    /// Each row's left padding, when some row is padded (the part of
    /// [`Plan::hidden_keys`] that padding makes).
    pub fn left_padding(&self) -> Option<&[usize]> {
        self.padding.as_deref()
    }

    /// Whether a band hides keys (the rest of [`Plan::hidden_keys`]).
    pub fn banded(&self) -> bool {
        self.banded
    }

    /// The new positions, row-major `[1 or B, T]`: one row shared by every sequence unless rows
    /// are padded (the values behind [`Plan::positions`] and the rotation).
    pub fn position_values(&self) -> &[usize] {
        &self.position_values
    }

    /// Where the new keys and values go, and how many keys the queries see.
    pub fn cache_step(&self) -> &CacheStep {
        &self.cache_step
    }

    /// Whether only the last position's logits are wanted.
    pub fn last_only(&self) -> bool {
        self.last_only
    }
}

/// A batch has tokens, and padding counts (when given) one per row.
fn check_tokens(batch: usize, seq: usize, left_padding: Option<&[usize]>) -> Result<()> {
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
    Ok(())
}

/// A band does not double a rolling cache that is a band already.
fn check_wrapped_band(cache: &KvCache, band: Option<usize>) -> Result<()> {
    if band.is_some() && cache.position() > cache.len() {
        return Err(Error::Config(
            "a band mask cannot be laid over a rolling cache that has wrapped: the cache \
             already holds only the band's keys; pass no band with it"
                .into(),
        ));
    }
    Ok(())
}

/// A band lets every query see at least itself.
fn check_band(band: Option<usize>) -> Result<()> {
    match band {
        Some(0) => Err(Error::Config("a band of width 0 hides every key".into())),
        _ => Ok(()),
    }
}

/// A learned position table has a row for every position up to `end` (exclusive).
fn check_table_end(config: &GptConfig, end: usize) -> Result<()> {
    if config.position == PositionScheme::Learned && end > config.max_seq_len {
        return Err(Error::Config(format!(
            "position {} is past the learned position table ({} rows): a rolling cache needs \
             rotary position embedding (`--position rope`)",
            end - 1,
            config.max_seq_len
        )));
    }
    Ok(())
}

/// A sequence without a cache fits the context window, or runs past it only under a band and
/// with positions that are not a table.
fn check_length(config: &GptConfig, seq: usize, band: Option<usize>) -> Result<()> {
    check_band(band)?;
    let past_window = seq > config.max_seq_len;
    if past_window && (band.is_none() || config.position == PositionScheme::Learned) {
        return Err(Error::SequenceTooLong {
            len: seq,
            max_seq_len: config.max_seq_len,
        });
    }
    Ok(())
}

/// The keys `seq` queries against `keys` keys must not see besides the causal rule: left
/// padding, and keys `band` or more positions back.
///
/// # Shapes
/// - output: `[1 or B, 1, T, S]`
fn hidden_keys(
    padding: Option<&[usize]>,
    band: Option<usize>,
    seq: usize,
    keys: usize,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let padding = padding.map(|pads| padding_mask(pads, seq, keys, device));
    let band = band.map(|width| band_mask(seq, keys, width, device));
    match (padding, band) {
        (Some(padding), Some(band)) => Some(padding.bool_or(band)),
        (padding, band) => padding.or(band),
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
