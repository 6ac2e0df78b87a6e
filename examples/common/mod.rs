//! What every example shares: start-up and how a run ends.
#![allow(dead_code)] // only the train example listens for Ctrl-C

pub mod progress;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Run `run` as the program: writes to a closed pipe end it quietly, as they end any Unix
/// tool (`shapes | head -1`), and a failure prints the error with its causes on one line
/// (`error: --checkpoint runs/x ...: no checkpoint here ...`) and exits with 1. A one-line
/// message rather than a `Debug` dump, whatever `RUST_BACKTRACE` says: bad input is the
/// user's to fix, not a crash to debug.
pub fn main(run: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    default_sigpipe();
    // Freed tensor buffers stay in the heap for the next step (see `tinygpt::allocator`).
    tinygpt::allocator::keep_freed_memory();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics; the default disposition ends
/// the process silently instead.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to the default has no preconditions, and it
    // happens first thing in `main`, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn default_sigpipe() {}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// From now on, the first Ctrl-C (or SIGTERM, or SIGHUP) only sets a flag ([`interrupted`]) so
/// the program can stop at a safe point, and says so at once; a second one ends it at once.
#[cfg(unix)]
pub fn catch_ctrl_c() {
    extern "C" fn on_sigint(_: libc::c_int) {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
        const ACK: &[u8] =
            b"\ninterrupted: stopping at the next safe point (interrupt again to quit at once)\n";
        // SAFETY: `write` is async-signal-safe and the buffer is a static byte string.
        unsafe {
            libc::write(2, ACK.as_ptr().cast(), ACK.len());
        }
    }
    for signal in STOP_SIGNALS {
        // SAFETY: the handler only touches an atomic and calls `write` and `_exit`, all
        // async-signal-safe.
        unsafe {
            libc::signal(signal, on_sigint as *const () as libc::sighandler_t);
        }
    }
}

#[cfg(not(unix))]
pub fn catch_ctrl_c() {}

/// The signals [`catch_ctrl_c`] turns into a stop at the next safe point.
#[cfg(unix)]
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Give Ctrl-C (and SIGTERM, SIGHUP) back their default meaning, after [`catch_ctrl_c`].
#[cfg(unix)]
pub fn release_ctrl_c() {
    for signal in STOP_SIGNALS {
        // SAFETY: restoring a signal's default disposition has no preconditions.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

#[cfg(not(unix))]
pub fn release_ctrl_c() {}

/// Whether Ctrl-C was pressed since [`catch_ctrl_c`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// A flag's value as the `f32` the library computes with, refused when it is not a finite
/// number or when `f32` cannot hold it as given (too large, or so small that it would become 0).
pub fn f32_flag(flag: &str, value: f64) -> anyhow::Result<f32> {
    if !value.is_finite() {
        anyhow::bail!("{flag} {value}: give a finite number");
    }
    let narrowed = value as f32;
    if !narrowed.is_finite() || (value != 0.0 && narrowed.abs() < f32::MIN_POSITIVE) {
        anyhow::bail!(
            "{flag} {value:e}: outside what an f32 holds as given ({:e} to {:e})",
            f32::MIN_POSITIVE,
            f32::MAX
        );
    }
    Ok(narrowed)
}

/// Make Burn's own default device the backend `--device` names, when that is a CPU one: Burn
/// puts a loaded optimizer state on its default device (which, in a build with wgpu, would
/// otherwise start the GPU stack to hold it for one step). Call it first thing, before any
/// other thread exists; a `BURN_DEVICE` the user set is kept.
pub fn burn_default_device(device: &str) {
    let name = device.trim().to_ascii_lowercase();
    if matches!(name.as_str(), "flex" | "ndarray") && std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: called at the start of `main`, before any other thread that could read the
        // environment exists.
        unsafe { std::env::set_var("BURN_DEVICE", name) };
    }
}
