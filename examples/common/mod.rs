//! What every example shares: how a failure is reported.

use std::process::ExitCode;

/// Exit quietly on success; on failure print the error and its causes on one line
/// (`error: --checkpoint runs/x: checkpoint runs/x: no checkpoint here ...`) and exit with 1.
/// A one-line message rather than a `Debug` dump, whatever `RUST_BACKTRACE` says: bad input is
/// the user's to fix, not a crash to debug.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
