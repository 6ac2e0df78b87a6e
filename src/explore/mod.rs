//! The explorer: the mechanism live in a browser, on your own model
//! (`cargo run --release --example explore`). A small web server holds a causal model and its
//! leaky twin and answers a JSON API; one page, compiled into the binary (`assets/explore/`),
//! draws what the API returns: streamed generation with the KV cache, every head's attention,
//! the leak side by side, the shape trace and the failure gallery.
//!
//! | file      | what it holds                                                         |
//! |-----------|-----------------------------------------------------------------------|
//! | `session` | the models and one function per API call, without HTTP                |
//! | `server`  | axum routes, request checks (400, 413, 404), model work off the executor, SSE |
//! | `page`    | the page's HTML, script and style, as compiled in                     |
//!
//! # The API
//! Every route answers JSON (errors as `{"error": "..."}`), but `POST /api/generate`, which
//! streams server-sent events.
//!
//! | route | takes | gives |
//! |---|---|---|
//! | `GET /api/info` | | both models: sizes (`H`, `H_kv`, ...), mask, positions, vocabulary |
//! | `POST /api/tokenize` | `{model, text}` | `{ids, pieces}` |
//! | `POST /api/forward` | `{model, text}` | every layer's attention weights `[H][T][T]`, every stage's shape, the next-token probabilities |
//! | `POST /api/probe` | `{model, text, position, replacement?}` | how far the change moved each position's logits, how many earlier positions moved |
//! | `POST /api/leak` | `{text, max_new_tokens?}` | both models: teacher-forced and honest loss, causality probe, greedy continuation |
//! | `POST /api/fault` | `{fault, prompt?, decode?}` | the exhibit's symptom: the shape error, or where cached and naive decoding part |
//! | `POST /api/generate` | `{model?, prompt, temperature?, top_k?, top_p?, seed?, max_new_tokens?, verify?, window?, top?}` | events `token` (`{step, id, text, phase, top, cache_len, cache_bytes, naive_diff}`), then `done` or `error` |
//! | `GET /api/status` | | streams active, finished, and stopped by their client |
//!
//! `model` is `causal` or `leaky`. A request with a field the route does not take, a value out
//! of range or a character the model does not know is refused with 400 and a message naming
//! it; a body over 64 KiB with 413; an unknown route with 404.

mod page;
pub mod server;
pub mod session;

pub use server::{bind, router, serve};
pub use session::{
    ApiError, Explorer, FaultRequest, GenerateRequest, LeakRequest, Loaded, ProbeRequest,
    TextRequest, Which,
};

/// The routes, as `GET /api` lists them.
pub const API: [(&str, &str); 9] = [
    (
        "GET /api/info",
        "both models: sizes, mask, positions, vocabulary",
    ),
    ("POST /api/tokenize", "{model, text} -> {ids, pieces}"),
    (
        "POST /api/forward",
        "{model, text} -> attention weights per layer, stage shapes, next-token probabilities",
    ),
    (
        "POST /api/probe",
        "{model, text, position, replacement?} -> |Δ logit| per position",
    ),
    (
        "POST /api/leak",
        "{text, max_new_tokens?} -> both models' teacher-forced and honest loss, probe, continuation",
    ),
    (
        "POST /api/fault",
        "{fault, prompt?, decode?} -> the exhibit's symptom",
    ),
    (
        "POST /api/generate",
        "{prompt, model?, temperature?, top_k?, top_p?, seed?, max_new_tokens?, verify?, window?, top?} -> server-sent events token/done/error",
    ),
    (
        "GET /api/status",
        "streams active, finished, stopped by their client",
    ),
    ("GET /api", "this list"),
];
