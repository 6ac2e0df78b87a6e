//! The mask-leak demonstration and the measurements behind it.
//!
//! | file    | what it holds                                                              |
//! |---------|----------------------------------------------------------------------------|
//! | `probe` | the causality probe (does a later token move earlier logits?) and the honest loss |
//! | `demo`  | train a causal model and leaky twins alike, measure both views, the verdict |
//! | `manifest` | what a run was started with (`run.json`), which resume holds it to    |

pub mod demo;
pub mod manifest;
pub mod probe;

pub use demo::{DemoConfig, DemoEvent, DemoSummary, ModelReport, SUMMARY_FILE, run, run_name};
pub use manifest::{MANIFEST_FILE, RunManifest};
pub use probe::{CausalityReport, PROBE_TOLERANCE, causality_probe, honest_loss};
