//! Run a loop compiled for the widest vector unit the CPU has, chosen once at run time.
//!
//! The crate is compiled for the baseline of its target (SSE2 on x86-64), so that one binary
//! runs on every CPU. The kernels' loops are written to vectorise ([`super::math`]); wrapped in
//! [`vectorised`], their code is generated three times (AVX-512, AVX2 with FMA, baseline) and
//! the first the CPU supports runs. Burn's matrix products choose their kernels the same way.

#[cfg(target_arch = "x86_64")]
use std::sync::atomic::{AtomicU8, Ordering};

/// Run `f`, compiled with the widest vector instructions this CPU supports.
///
/// `f` is inlined into a copy of this function built for each instruction set, so the work
/// must be inside `f` itself (a call through a function pointer, or a rayon job spawned from
/// `f`, runs at the baseline). Keep `f` to one tight loop over a row or a block of rows.
#[inline(always)]
pub fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match level() {
            // SAFETY: `level` reported that the CPU supports the features each function enables.
            Level::Avx512 => return unsafe { avx512(f) },
            Level::Avx2 => return unsafe { avx2(f) },
            Level::Baseline => {}
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Baseline = 1,
    Avx2 = 2,
    Avx512 = 3,
}

/// The detected level, cached after the first call (0 = not yet detected).
#[cfg(target_arch = "x86_64")]
static LEVEL: AtomicU8 = AtomicU8::new(0);

#[cfg(target_arch = "x86_64")]
fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        3 => Level::Avx512,
        2 => Level::Avx2,
        1 => Level::Baseline,
        _ => {
            let level = if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Level::Avx512
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                Level::Avx2
            } else {
                Level::Baseline
            };
            LEVEL.store(level as u8, Ordering::Relaxed);
            level
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
