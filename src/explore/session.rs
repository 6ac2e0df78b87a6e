//! What the explorer computes, without HTTP: the loaded models and one function per API call,
//! each taking a checked request and returning what the page draws. The server
//! ([`super::server`]) runs these off its async executor.

use std::ops::ControlFlow;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::device::{floats, token_tensor};
use crate::faults::{Exhibit, Outcome, show};
use crate::generate::{
    DecodeMode, GenerationConfig, Generator, NewToken, Phase, SamplingConfig, WindowPolicy,
};
use crate::leak::{causality_probe, honest_loss};
use crate::model::{Fault, ForwardOptions, Gpt, MaskMode, ShapeTrace};
use crate::text::{Batch, Tokenizer, Utf8Stream};
use crate::train::teacher_forced_loss;

/// The most new tokens one generation request may ask for.
pub const MAX_NEW_TOKENS: usize = 2000;

/// The longest prompt a generation request may give, in characters.
pub const MAX_PROMPT_CHARS: usize = 4000;

/// Why a call failed: a request the explorer refuses (HTTP 400), with the message that names
/// the problem, or the model failing on a request it accepted (HTTP 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The request cannot be served as asked.
    BadRequest(String),
    /// The request body is larger than the server takes.
    TooLarge(String),
    /// The model failed.
    Internal(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadRequest(message) | Self::TooLarge(message) | Self::Internal(message) => {
                f.write_str(message)
            }
        }
    }
}

fn bad<T>(message: impl Into<String>) -> Result<T, ApiError> {
    Err(ApiError::BadRequest(message.into()))
}

/// A trained model and its tokenizer, as loaded from a checkpoint.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The model.
    pub model: Gpt,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Steps it was trained for (0 when imported).
    pub step: usize,
    /// Where it was loaded from.
    pub source: String,
}

/// Which of the two models a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Which {
    /// The model trained with the causal mask.
    Causal,
    /// Its twin trained with a leaky mask.
    Leaky,
}

/// The explorer's models and device.
#[derive(Debug)]
pub struct Explorer {
    causal: Loaded,
    leaky: Option<Loaded>,
    device: Device,
}

/// What `GET /api/info` returns.
#[derive(Debug, Serialize)]
pub struct Info {
    /// The causal model, then the leaky one when loaded.
    pub models: Vec<ModelInfo>,
    /// The failure gallery's exhibits, by name.
    pub exhibits: Vec<String>,
}

/// One model as `GET /api/info` describes it.
#[derive(Debug, Serialize)]
pub struct ModelInfo {
    /// `causal` or `leaky`.
    pub name: Which,
    /// Where it was loaded from.
    pub source: String,
    /// Steps it was trained for.
    pub step: usize,
    /// Its mask (`causal`, `unmasked`, ...).
    pub mask: MaskMode,
    /// `D`, `H`, `H_kv`, `Dh`, `L`, context, `V`.
    pub d_model: usize,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer (fewer than `n_heads` with grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Blocks.
    pub n_layers: usize,
    /// The context window.
    pub max_seq_len: usize,
    /// `learned` or `rope`.
    pub position: String,
    /// The vocabulary in id order.
    pub vocabulary: Vec<String>,
    /// KV cache bytes per cached position (all layers, one sequence).
    pub cache_bytes_per_position: usize,
}

/// `POST /api/forward` and `POST /api/tokenize`: a text for one model.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextRequest {
    /// Which model.
    pub model: Which,
    /// The text (at most the model's context, for a forward pass).
    pub text: String,
}

/// The tokens of a text.
#[derive(Debug, Serialize)]
pub struct Tokens {
    /// Token ids.
    pub ids: Vec<usize>,
    /// Each token's text.
    pub pieces: Vec<String>,
}

/// One layer's attention weights for one sequence.
#[derive(Debug, Serialize)]
pub struct LayerWeights {
    /// `blocks.N.attn`.
    pub name: String,
    /// `[H][T][T]`: `weights[h][query][key]`; masked cells are exactly 0.
    pub weights: Vec<Vec<Vec<f32>>>,
}

/// One stage of the shape trace.
#[derive(Debug, Serialize)]
pub struct StageShape {
    /// Dotted path, e.g. `blocks.0.attn.scores`.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// What `POST /api/forward` returns: a readable forward pass of the text.
#[derive(Debug, Serialize)]
pub struct Forward {
    /// The tokens.
    pub tokens: Tokens,
    /// Every layer's attention weights.
    pub layers: Vec<LayerWeights>,
    /// The shape of every stage.
    pub stages: Vec<StageShape>,
    /// The most likely next tokens after the last position, as `[text, probability]`.
    pub next: Vec<(String, f32)>,
}

/// `POST /api/probe`: change the token at `position` to `replacement` and watch the logits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    /// Which model.
    pub model: Which,
    /// The text.
    pub text: String,
    /// The position whose token changes (0-based, at least 1).
    pub position: usize,
    /// The character it becomes (default: the next one in the vocabulary).
    #[serde(default)]
    pub replacement: Option<String>,
}

/// What the probe saw.
#[derive(Debug, Serialize)]
pub struct Probe {
    /// The position changed.
    pub position: usize,
    /// The text with the change.
    pub changed_text: String,
    /// For every position, the largest |Δ logit| the change caused there.
    pub moved: Vec<f32>,
    /// Positions before the change whose logits moved by more than the tolerance: 0 for a
    /// causal model.
    pub earlier_moved: usize,
    /// The tolerance (float rounding).
    pub tolerance: f32,
}

/// `POST /api/leak`: one text for both models.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeakRequest {
    /// The text (2 to context + 1 characters).
    pub text: String,
    /// New tokens each model generates after the text.
    #[serde(default = "default_leak_tokens")]
    pub max_new_tokens: usize,
}

fn default_leak_tokens() -> usize {
    60
}

/// One model's view of the leak.
#[derive(Debug, Serialize)]
pub struct LeakSide {
    /// Its mask.
    pub mask: MaskMode,
    /// Mean loss with the whole text as input (each position may see what the mask lets it).
    pub teacher_forced_loss: f32,
    /// Mean loss predicting each token from the tokens before it only.
    pub honest_loss: f32,
    /// Positions whose change moved an earlier logit (the causality probe).
    pub probe_violations: usize,
    /// Positions probed.
    pub probe_positions: usize,
    /// Greedy continuation of the text (naive decoding).
    pub generation: String,
}

/// What `POST /api/leak` returns.
#[derive(Debug, Serialize)]
pub struct Leak {
    /// The causal model.
    pub causal: LeakSide,
    /// The leaky one.
    pub leaky: LeakSide,
}

/// `POST /api/fault`: one exhibit of the failure gallery.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// The exhibit's name (`transposed-key`, `stale-cache`, `mask-unmasked`, ...).
    pub fault: String,
    /// The prompt it runs on. By default `the old cat ` (or the vocabulary's first characters),
    /// cut to fit the context and, for the shape exhibits, to a length other than the head
    /// width (at that length a transposed key has the right shape and goes unnoticed).
    #[serde(default)]
    pub prompt: Option<String>,
    /// Tokens decoded after the prompt for the cache exhibits; by default up to 24, as many as
    /// the context leaves.
    #[serde(default)]
    pub decode: Option<usize>,
}

/// What an exhibit showed.
#[derive(Debug, Serialize)]
pub struct FaultShown {
    /// The exhibit.
    pub name: String,
    /// The prompt it ran on.
    pub prompt: String,
    /// Tokens decoded after it (cache exhibits).
    pub decode: usize,
    /// What a learner sees first.
    pub symptom: String,
    /// What to inspect first.
    pub inspect: String,
    /// The check that catches it.
    pub caught_by: String,
    /// The shape error, as the library words it (shape faults).
    pub refused: Option<String>,
    /// Where cached and naive decoding part (cache faults).
    pub parted: Option<Parted>,
    /// The causality probe (leaky masks): positions that saw the future, of those probed.
    pub probed: Option<(usize, usize, f32)>,
}

/// Where cached and naive decoding part under a cache fault.
#[derive(Debug, Serialize)]
pub struct Parted {
    /// The first step whose logits differ (None: never).
    pub first_step: Option<usize>,
    /// |Δ logit| there.
    pub max_abs_diff: f32,
    /// The cache's length after the prefill and each step, and what it should be.
    pub cache_lens: Vec<usize>,
    /// What the lengths should be.
    pub expected_cache_lens: Vec<usize>,
    /// Naive decoding's text.
    pub naive: String,
    /// Cached decoding's text.
    pub cached: String,
}

/// `POST /api/generate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// Which model.
    #[serde(default = "causal")]
    pub model: Which,
    /// The text to continue.
    pub prompt: String,
    /// 0 for greedy.
    #[serde(default)]
    pub temperature: f32,
    /// Keep the K most likely tokens.
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Keep the most likely tokens whose probabilities reach P.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// The sampler's seed.
    #[serde(default)]
    pub seed: u64,
    /// New tokens (at most [`MAX_NEW_TOKENS`]).
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    /// Recompute every step naively and report the difference.
    #[serde(default)]
    pub verify: bool,
    /// `slide-half`, `crop` or `rolling`.
    #[serde(default)]
    pub window: Option<String>,
    /// How many of the most likely tokens each step reports.
    #[serde(default = "default_top")]
    pub top: usize,
}

fn causal() -> Which {
    Which::Causal
}

fn default_new_tokens() -> usize {
    120
}

fn default_top() -> usize {
    8
}

/// One streamed token.
#[derive(Debug, Serialize)]
pub struct StreamedToken {
    /// 0 for the first new token.
    pub step: usize,
    /// Its id.
    pub id: usize,
    /// Its text.
    pub text: String,
    /// `prefill`, `decode` or `slide`.
    pub phase: Phase,
    /// The most likely tokens at this step, `[text, probability]`, most likely first.
    pub top: Vec<(String, f32)>,
    /// Positions in the KV cache when its logits were computed.
    pub cache_len: usize,
    /// Bytes they hold.
    pub cache_bytes: usize,
    /// With `verify`: max |Δ logit| against the naive recompute.
    pub naive_diff: Option<f32>,
}

/// The end of a stream.
#[derive(Debug, Serialize)]
pub struct StreamEnd {
    /// Every new token's text, joined.
    pub text: String,
    /// New tokens.
    pub tokens: usize,
    /// Decode steps per second, as the generator measured them.
    pub decode_tokens_per_s: f64,
    /// Whether the client's departure stopped it early.
    pub stopped: bool,
    /// Cached or naive (a leaky model decodes naively: its cache is not valid).
    pub mode: String,
}

impl Explorer {
    /// An explorer of `causal` and, when given, its leaky twin, on `device`.
    pub fn new(causal: Loaded, leaky: Option<Loaded>, device: Device) -> Self {
        Self {
            causal,
            leaky,
            device,
        }
    }

    fn model(&self, which: Which) -> Result<&Loaded, ApiError> {
        match which {
            Which::Causal => Ok(&self.causal),
            Which::Leaky => self.leaky.as_ref().map_or_else(
                || bad("no leaky model is loaded (start the explorer with --leaky DIR)"),
                Ok,
            ),
        }
    }

    /// Both models and the gallery's exhibits, as `GET /api/info` describes them.
    pub fn info(&self) -> Info {
        let describe = |name, loaded: &Loaded| {
            let config = loaded.model.config();
            ModelInfo {
                name,
                source: loaded.source.clone(),
                step: loaded.step,
                mask: config.mask_mode,
                d_model: config.d_model,
                n_heads: config.n_heads,
                n_kv_heads: config.kv_heads(),
                head_dim: config.head_dim(),
                n_layers: config.n_layers,
                max_seq_len: config.max_seq_len,
                position: config.position.to_string(),
                vocabulary: (0..loaded.tokenizer.vocab_size())
                    .map(|id| loaded.tokenizer.token_text(id))
                    .collect(),
                cache_bytes_per_position: 2
                    * config.n_layers
                    * config.kv_heads()
                    * config.head_dim()
                    * 4,
            }
        };
        Info {
            models: std::iter::once(describe(Which::Causal, &self.causal))
                .chain(self.leaky.iter().map(|leaky| describe(Which::Leaky, leaky)))
                .collect(),
            exhibits: Exhibit::all().into_iter().map(Exhibit::name).collect(),
        }
    }

    /// The tokens of `text` for one model.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the characters the model does not know.
    pub fn tokenize(&self, request: &TextRequest) -> Result<Tokens, ApiError> {
        let loaded = self.model(request.model)?;
        let ids = encode(loaded, &request.text)?;
        Ok(tokens(loaded, ids))
    }

    /// A readable forward pass of the text: every layer's attention weights and every stage's
    /// shape.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] for an empty text, one longer than the context, or unknown characters.
    pub fn forward(&self, request: &TextRequest) -> Result<Forward, ApiError> {
        let loaded = self.model(request.model)?;
        let ids = checked_ids(loaded, &request.text, 1..=loaded.model.config().max_seq_len)?;
        let mut trace = ShapeTrace::with_attention_weights();
        let input = token_tensor(&ids, 1, ids.len(), &self.device).map_err(internal)?;
        let options = ForwardOptions::default().with_trace(&mut trace);
        let logits = loaded
            .model
            .forward_with(input, options)
            .map_err(internal)?;
        let [_, seq, vocab] = logits.dims();
        let last = floats(logits.slice([0..1, seq - 1..seq, 0..vocab])).map_err(internal)?;
        let layers = trace
            .attention_weights()
            .iter()
            .map(|(name, weights)| {
                let [_, heads, queries, keys] = weights.dims();
                let values = floats(weights.clone()).map_err(internal)?;
                let weights = (0..heads)
                    .map(|h| {
                        (0..queries)
                            .map(|q| values[(h * queries + q) * keys..][..keys].to_vec())
                            .collect()
                    })
                    .collect();
                let name = name.trim_end_matches(".weights").to_string();
                Ok(LayerWeights { name, weights })
            })
            .collect::<Result<_, ApiError>>()?;
        let stages = trace
            .stages()
            .iter()
            .map(|stage| StageShape {
                name: stage.name.clone(),
                shape: stage.shape.clone(),
            })
            .collect();
        Ok(Forward {
            tokens: tokens(loaded, ids),
            layers,
            stages,
            next: top_tokens(loaded, &last, 8),
        })
    }

    /// Change one token and measure how far every position's logits moved.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] for a text too short or too long, a position outside it or at 0, or a
    /// replacement that is not one known character.
    pub fn probe(&self, request: &ProbeRequest) -> Result<Probe, ApiError> {
        let loaded = self.model(request.model)?;
        let ids = checked_ids(loaded, &request.text, 2..=loaded.model.config().max_seq_len)?;
        let position = request.position;
        if position == 0 || position >= ids.len() {
            return bad(format!(
                "position {position} is not a position with one before it: give 1 to {}",
                ids.len() - 1
            ));
        }
        let vocab = loaded.tokenizer.vocab_size();
        let replacement = match &request.replacement {
            Some(text) => match loaded.tokenizer.encode(text).as_deref() {
                Ok([id]) => *id,
                Ok(_) => return bad(format!("replacement {text:?} must be exactly one token")),
                Err(_) => {
                    return bad(format!(
                        "replacement {text:?} is not in the model's vocabulary"
                    ));
                }
            },
            None => (ids[position] + 1) % vocab,
        };
        let mut changed = ids.clone();
        changed[position] = replacement;
        let rows: Vec<usize> = ids.iter().chain(&changed).copied().collect();
        let input = token_tensor(&rows, 2, ids.len(), &self.device).map_err(internal)?;
        let logits = floats(loaded.model.forward(input).map_err(internal)?).map_err(internal)?;
        let per_row = ids.len() * vocab;
        let moved: Vec<f32> = (0..ids.len())
            .map(|t| {
                let (a, b) = (
                    &logits[t * vocab..][..vocab],
                    &logits[per_row + t * vocab..][..vocab],
                );
                a.iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max)
            })
            .collect();
        let tolerance = crate::leak::PROBE_TOLERANCE;
        Ok(Probe {
            position,
            changed_text: loaded.tokenizer.decode(&changed),
            earlier_moved: moved[..position].iter().filter(|&&m| m > tolerance).count(),
            moved,
            tolerance,
        })
    }

    /// The leak on one text: both models' teacher-forced and honest losses, their probes and
    /// their greedy continuations.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] without a leaky model, for a text of fewer than 2 or more than context + 1
    /// characters, or unknown characters.
    pub fn leak(&self, request: &LeakRequest) -> Result<Leak, ApiError> {
        let leaky = self.model(Which::Leaky)?;
        if request.max_new_tokens == 0 || request.max_new_tokens > MAX_NEW_TOKENS {
            return bad(format!(
                "max_new_tokens must be from 1 to {MAX_NEW_TOKENS}, got {}",
                request.max_new_tokens
            ));
        }
        let side = |loaded: &Loaded| -> Result<LeakSide, ApiError> {
            // Inputs and targets are the text shifted by one: each at most a context long.
            let context = loaded.model.config().max_seq_len;
            let ids = checked_ids(loaded, &request.text, 2..=context + 1)?;
            let batch = Batch {
                inputs: ids[..ids.len() - 1].to_vec(),
                targets: ids[1..].to_vec(),
                batch_size: 1,
                seq_len: ids.len() - 1,
            };
            let model = &loaded.model;
            let probe = causality_probe(model, &batch.inputs, &self.device).map_err(internal)?;
            let config = GenerationConfig::new(request.max_new_tokens).with_mode(DecodeMode::Naive);
            let generated = Generator::new(model, &self.device)
                .generate_all(std::slice::from_ref(&batch.inputs), &config)
                .map_err(internal)?;
            Ok(LeakSide {
                mask: model.config().mask_mode,
                teacher_forced_loss: teacher_forced_loss(model, &batch, &self.device)
                    .map_err(internal)?,
                honest_loss: honest_loss(model, &batch, &self.device).map_err(internal)?,
                probe_violations: probe.violations,
                probe_positions: probe.positions_probed,
                generation: loaded.tokenizer.decode(&generated.tokens[0]),
            })
        };
        Ok(Leak {
            causal: side(&self.causal)?,
            leaky: side(leaky)?,
        })
    }

    /// One exhibit of the failure gallery, planted into the causal model.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the exhibits for an unknown one, or for a prompt that does not fit.
    pub fn fault(&self, request: &FaultRequest) -> Result<FaultShown, ApiError> {
        let exhibit = Exhibit::from_name(&request.fault)
            .map_err(|err| ApiError::BadRequest(err.to_string()))?;
        let loaded = &self.causal;
        let (prompt, ids, decode) = fault_inputs(loaded, exhibit, request)?;
        let outcome = show(exhibit, &loaded.model, &ids, decode, &self.device).map_err(internal)?;
        let mut shown = FaultShown {
            name: exhibit.name(),
            prompt: prompt.clone(),
            decode,
            symptom: exhibit.symptom().into(),
            inspect: exhibit.inspect().into(),
            caught_by: exhibit.caught_by().into(),
            refused: None,
            parted: None,
            probed: None,
        };
        match outcome {
            Outcome::Refused(err) => shown.refused = Some(err.to_string()),
            Outcome::Probed(report) => {
                shown.probed = Some((report.violations, report.positions_probed, report.max_leak))
            }
            Outcome::Decoded(parted) => {
                let text = |tokens: &[usize]| prompt.clone() + &loaded.tokenizer.decode(tokens);
                shown.parted = Some(Parted {
                    first_step: parted.first_step,
                    max_abs_diff: parted.max_abs_diff,
                    naive: text(&parted.naive_tokens),
                    cached: text(&parted.cached_tokens),
                    cache_lens: parted.cache_lens,
                    expected_cache_lens: parted.expected_cache_lens,
                })
            }
        }
        Ok(shown)
    }

    /// Check a generation request before anything runs; returns what [`Explorer::generate`]
    /// takes.
    ///
    /// # Errors
    /// [`ApiError::BadRequest`] naming the setting out of range, or the prompt's problem.
    pub fn plan_generation(
        &self,
        request: &GenerateRequest,
    ) -> Result<PlannedGeneration, ApiError> {
        let loaded = self.model(request.model)?;
        if request.prompt.is_empty() {
            return bad(
                "prompt is empty: give at least one character (the model has no start token)",
            );
        }
        let chars = request.prompt.chars().count();
        if chars > MAX_PROMPT_CHARS {
            return bad(format!(
                "prompt has {chars} characters; at most {MAX_PROMPT_CHARS}"
            ));
        }
        let prompt = encode(loaded, &request.prompt)?;
        if request.max_new_tokens == 0 || request.max_new_tokens > MAX_NEW_TOKENS {
            return bad(format!(
                "max_new_tokens must be from 1 to {MAX_NEW_TOKENS}, got {}",
                request.max_new_tokens
            ));
        }
        if !(request.temperature.is_finite() && (0.0..=10.0).contains(&request.temperature)) {
            return bad(format!(
                "temperature must be from 0 (greedy) to 10, got {}",
                request.temperature
            ));
        }
        if request.top == 0 || request.top > loaded.tokenizer.vocab_size() {
            return bad(format!(
                "top must be from 1 to the vocabulary's {}, got {}",
                loaded.tokenizer.vocab_size(),
                request.top
            ));
        }
        let sampling = SamplingConfig::new()
            .with_temperature(request.temperature)
            .with_top_k(request.top_k)
            .with_top_p(request.top_p)
            .with_seed(request.seed);
        sampling
            .validate()
            .map_err(|err| ApiError::BadRequest(err.to_string()))?;
        let window = match request.window.as_deref() {
            None => WindowPolicy::SlideHalf,
            Some(name) => name.parse().map_err(ApiError::BadRequest)?,
        };
        let config = loaded.model.config();
        if window == WindowPolicy::Rolling && config.position != crate::PositionScheme::Rope {
            return bad("the rolling window needs a model with rotary position embedding");
        }
        // A leaky model's cache is not valid: it decodes naively, as the demo measures it.
        let mode = match config.mask_mode.is_leaky() {
            true => DecodeMode::Naive,
            false => DecodeMode::Cached,
        };
        let generation = GenerationConfig::new(request.max_new_tokens)
            .with_sampling(sampling)
            .with_mode(mode)
            .with_window(window)
            .with_verify(request.verify)
            .with_record_logits(true);
        Ok(PlannedGeneration {
            model: request.model,
            prompt,
            config: generation,
            top: request.top,
        })
    }

    /// Run a planned generation, handing every token to `send`; `send` returning
    /// [`ControlFlow::Break`] (the client left) stops it.
    ///
    /// # Errors
    /// The model's errors, as a message.
    pub fn generate(
        &self,
        planned: &PlannedGeneration,
        send: &mut dyn FnMut(StreamedToken) -> ControlFlow<()>,
    ) -> Result<StreamEnd, String> {
        let loaded = self.model(planned.model).map_err(|err| err.to_string())?;
        let generator = Generator::new(&loaded.model, &self.device);
        let mut utf8 = Utf8Stream::new();
        let generation = generator
            .generate(
                std::slice::from_ref(&planned.prompt),
                &planned.config,
                &mut |token: &NewToken| {
                    // A byte-level token may end inside a character: each event carries the
                    // text the bytes so far complete.
                    let top = token
                        .logits
                        .map_or_else(Vec::new, |logits| top_tokens(loaded, logits, planned.top));
                    send(StreamedToken {
                        step: token.step,
                        id: token.id,
                        text: utf8.push(&loaded.tokenizer.token_bytes(token.id)),
                        phase: token.phase,
                        top,
                        cache_len: token.cache_len,
                        cache_bytes: token.cache_bytes,
                        naive_diff: token.naive_diff,
                    })
                },
            )
            .map_err(|err| err.to_string())?;
        Ok(StreamEnd {
            text: loaded.tokenizer.decode(&generation.tokens[0]),
            tokens: generation.tokens[0].len(),
            decode_tokens_per_s: generation.stats.decode_tokens_per_s(),
            stopped: generation.stopped,
            mode: format!("{:?}", planned.config.mode).to_lowercase(),
        })
    }
}

/// A generation request, checked.
#[derive(Debug)]
pub struct PlannedGeneration {
    model: Which,
    prompt: Vec<usize>,
    config: GenerationConfig,
    top: usize,
}

/// The ids of `text`, which must hold a number of tokens in `allowed`.
fn checked_ids(
    loaded: &Loaded,
    text: &str,
    allowed: std::ops::RangeInclusive<usize>,
) -> Result<Vec<usize>, ApiError> {
    let ids = encode(loaded, text)?;
    if !allowed.contains(&ids.len()) {
        return bad(format!(
            "the text has {} tokens; give {} to {} (the model's context is {})",
            ids.len(),
            allowed.start(),
            allowed.end(),
            loaded.model.config().max_seq_len
        ));
    }
    Ok(ids)
}

fn encode(loaded: &Loaded, text: &str) -> Result<Vec<usize>, ApiError> {
    loaded
        .tokenizer
        .encode(text)
        .map_err(|err| ApiError::BadRequest(err.to_string()))
}

fn tokens(loaded: &Loaded, ids: Vec<usize>) -> Tokens {
    let pieces = ids
        .iter()
        .map(|&id| loaded.tokenizer.token_text(id))
        .collect();
    Tokens { ids, pieces }
}

/// The `k` most likely tokens of `logits` (one position's `V`), as `[text, probability]`.
fn top_tokens(loaded: &Loaded, logits: &[f32], k: usize) -> Vec<(String, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    let mut ranked: Vec<(usize, f32)> = exp.iter().map(|e| e / total).enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
        .into_iter()
        .take(k)
        .map(|(id, p)| (loaded.tokenizer.token_text(id), p))
        .collect()
}

/// The prompt (text and ids) and decode steps an exhibit runs on: the request's, checked, or
/// defaults that fit the model.
fn fault_inputs(
    loaded: &Loaded,
    exhibit: Exhibit,
    request: &FaultRequest,
) -> Result<(String, Vec<usize>, usize), ApiError> {
    let config = loaded.model.config();
    let (context, head_dim) = (config.max_seq_len, config.head_dim());
    if context < 3 {
        return bad(format!(
            "the gallery needs a context of at least 3 tokens (a prompt of 2 and one decoded); \
             this model's is {context}"
        ));
    }
    let shape_fault = matches!(
        exhibit,
        Exhibit::Fault(Fault::TransposedKey | Fault::MissingMerge)
    );
    let prompt = match &request.prompt {
        Some(prompt) => prompt.clone(),
        None => {
            // Half the context at most, so decoding has room; never the head width.
            let mut length = (context / 2).clamp(2, 12);
            if shape_fault && length == head_dim {
                length = if length > 2 { length - 1 } else { length + 1 };
            }
            default_fault_prompt(&loaded.tokenizer, length)
        }
    };
    let ids = encode(loaded, &prompt)?;
    if ids.len() < 2 || ids.len() >= context {
        return bad(format!(
            "the prompt has {} tokens; the gallery needs from 2 to {} (the context, {context}, less \
             one to decode)",
            ids.len(),
            context - 1
        ));
    }
    if shape_fault && ids.len() == head_dim {
        return bad(format!(
            "a prompt of {head_dim} tokens, the head width, would hide the {} fault (the wrong \
             product has the right shape); use a prompt of another length",
            request.fault
        ));
    }
    let room = context - ids.len();
    let decode = request.decode.unwrap_or(room.min(24));
    if decode == 0 || decode > room {
        return bad(format!(
            "decode must be from 1 to {room} (the context, {context}, less the prompt's {} \
             tokens), got {decode}",
            ids.len()
        ));
    }
    Ok((prompt, ids, decode))
}

/// About `length` tokens of `the old cat the old cat ...` where the vocabulary has those
/// characters, else of the vocabulary's own characters.
fn default_fault_prompt(tokenizer: &Tokenizer, length: usize) -> String {
    let preferred = "the old cat ".repeat(length);
    match (tokenizer.encode(&preferred), tokenizer.as_char()) {
        (Ok(ids), _) => tokenizer.decode(&ids[..length.min(ids.len())]),
        (Err(_), Some(chars)) => chars.chars().iter().cycle().take(length).collect(),
        (Err(_), None) => unreachable!("byte-level tokenizers encode any text"),
    }
}

/// A failure of the model itself (a checked request should not cause one).
fn internal(err: crate::Error) -> ApiError {
    ApiError::Internal(format!("the model failed: {err}"))
}
