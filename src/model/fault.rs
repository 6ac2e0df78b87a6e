//! Classic attention bugs, planted on purpose so a learner can watch each one happen and watch
//! a check catch it (`cargo run --release --example faults`; the leaky masks of
//! [`super::MaskMode`] are the other half of the gallery).
//!
//! A fault is a value: [`super::Gpt::with_fault`] hands it to the piece of code that would hold
//! the bug (the attention's score product or head merge, the KV cache's append, the position
//! count), which then does the wrong thing where the correct code does the right one. Without
//! a fault, the default, every path is the correct one; the only cost is comparing an `Option`.

use std::fmt;

/// One classic attention bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The scores computed as `q · k` instead of `q · kᵀ`: the key is not transposed.
    TransposedKey,
    /// The heads handed to the output projection `W_O` as they leave attention,
    /// `[B, H, T, Dh]`, without `merge_heads`.
    MissingMerge,
    /// The KV cache extends along the heads axis instead of the positions axis.
    CacheWrongAxis,
    /// A decode step writes its key and value but does not advance the cache's length: the
    /// next step overwrites them, and no query ever sees them.
    StaleCache,
    /// Decode steps count positions from 0 again instead of continuing after the cache.
    PositionsRestart,
}

impl Fault {
    /// Every fault, in the order of the gallery's table.
    pub const ALL: [Fault; 5] = [
        Fault::TransposedKey,
        Fault::MissingMerge,
        Fault::CacheWrongAxis,
        Fault::StaleCache,
        Fault::PositionsRestart,
    ];

    /// The kebab-case name used on the command line (`transposed-key`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Fault::TransposedKey => "transposed-key",
            Fault::MissingMerge => "missing-merge",
            Fault::CacheWrongAxis => "cache-wrong-axis",
            Fault::StaleCache => "stale-cache",
            Fault::PositionsRestart => "positions-restart",
        }
    }

    /// What a learner sees first.
    pub fn symptom(self) -> &'static str {
        match self {
            Fault::TransposedKey => "shape mismatch in score computation",
            Fault::MissingMerge => "output shape stuck at [B, H, T, d_head]",
            Fault::CacheWrongAxis => "cache grows incorrectly",
            Fault::StaleCache | Fault::PositionsRestart => {
                "outputs differ between naive and cached decode"
            }
        }
    }

    /// What to inspect first when seeing the symptom.
    pub fn inspect(self) -> &'static str {
        match self {
            Fault::TransposedKey => "wrong transpose of K",
            Fault::MissingMerge => "forgot the merge step",
            Fault::CacheWrongAxis => "concatenating along the wrong axis",
            Fault::StaleCache => "stale cache",
            Fault::PositionsRestart => "position handling",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
