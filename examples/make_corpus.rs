//! Regenerate the bundled toy corpus from the grammar in `src/text/grammar.rs`.
//!
//! `cargo run --release --example make_corpus -- data/corpus.txt --force` writes it
//! (atomically: a temporary file renamed into place; an existing file only with `--force`);
//! with no argument it prints the corpus to stdout.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tinygpt::fs::write_atomically;
use tinygpt::text::grammar::{CORPUS_SEED, CORPUS_TARGET_BYTES, generate_corpus};

#[derive(Parser)]
#[command(about = "Regenerate the bundled toy corpus from the grammar")]
struct Args {
    /// File to write; without it the corpus goes to standard output.
    path: Option<PathBuf>,
    /// Replace the file if it exists.
    #[arg(long, requires = "path")]
    force: bool,
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let corpus = generate_corpus(CORPUS_SEED, CORPUS_TARGET_BYTES);
    match args.path {
        None => std::io::stdout().lock().write_all(corpus.as_bytes())?,
        Some(path) => {
            tinygpt::fs::check_output(&path, args.force)?;
            write_atomically(&path, corpus.as_bytes())?;
            eprintln!(
                "wrote {} bytes, {} sentences to {}",
                corpus.len(),
                corpus.lines().count(),
                path.display()
            );
        }
    }
    Ok(())
}
