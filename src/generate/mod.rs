//! Generation: turning a trained model's logits into text.
//!
//! | file        | what it holds                                                            |
//! |-------------|--------------------------------------------------------------------------|
//! | `generator` | prefill, then one cached token per step (or naive recompute), batched     |
//! | `sampler`   | greedy, temperature, top-k, top-p, seeded, on the device                 |
//! | `window`    | each row's window and how it slides past the context                     |
//! | `compare`   | cached against naive decoding: same tokens, same logits                  |
//! | `logits`    | the logits behind every generated token, as records (`--logits`)         |

pub mod compare;
pub mod generator;
pub mod logits;
pub mod sampler;
pub mod window;

pub use compare::{DecodingComparison, compare_decoding};
pub use generator::{
    DecodeMode, Generation, GenerationConfig, GenerationStats, Generator, NewToken, Phase,
    max_abs_diff,
};
pub use logits::{LogitRecord, logit_records};
pub use sampler::{Sampler, SamplingConfig};
pub use window::WindowPolicy;
