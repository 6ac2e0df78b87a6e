//! Training: the settings, the loss, the loop, its evaluation log and its checkpoints.
//!
//! | file         | what it holds                                                            |
//! |--------------|--------------------------------------------------------------------------|
//! | `adamw`      | [`adamw::FusedAdamW`]: Burn's AdamW, one pass per parameter on Flex      |
//! | `config`     | [`TrainConfig`]: steps, batch, learning-rate schedule, clipping, seed     |
//! | `clip`       | [`ClipScope`]: gradient clipping by the global norm, as PyTorch         |
//! | `loss`       | cross-entropy and the teacher-forced training loss                       |
//! | `trainer`    | [`train`]: AdamW, evaluation, checkpoints, exact resume                  |
//! | `metrics`    | the evaluation log, `metrics.jsonl`                                      |
//! | `checkpoint` | save and load a model with its tokenizer, state and optimizer             |

pub mod adamw;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod loss;
pub mod metrics;
pub mod trainer;

pub use checkpoint::{Checkpoint, TrainState};
pub use clip::{ClipScope, clip_global_norm};
pub use config::TrainConfig;
pub use loss::{cross_entropy, teacher_forced_loss, teacher_forced_loss_tensor};
pub use metrics::{EvalRecord, METRICS_FILE, read_metrics};
pub(crate) use trainer::differences;
pub use trainer::{TrainEvent, TrainOutcome, continued, evaluate, new_optimizer, train};
