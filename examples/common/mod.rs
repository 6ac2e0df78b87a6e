//! What every example shares: start-up and how a run ends.
#![allow(dead_code)] // only the train example listens for Ctrl-C

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

/// From now on, the first Ctrl-C only sets a flag ([`interrupted`]) so the program can stop
/// at a safe point; a second one ends it at once.
#[cfg(unix)]
pub fn catch_ctrl_c() {
    extern "C" fn on_sigint(_: libc::c_int) {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    // SAFETY: the handler only touches an atomic and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

#[cfg(not(unix))]
pub fn catch_ctrl_c() {}

/// Whether Ctrl-C was pressed since [`catch_ctrl_c`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
