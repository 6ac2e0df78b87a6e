//! Regenerate the bundled toy corpus from the grammar in `src/text/grammar.rs`.
//!
//! `cargo run --release --example make_corpus -- data/corpus.txt` writes it (atomically: a
//! temporary file renamed into place); with no argument it prints the corpus to stdout.

mod common;

use std::path::Path;
use std::process::ExitCode;

use tinygpt::fs::write_atomically;
use tinygpt::text::grammar::{CORPUS_SEED, CORPUS_TARGET_BYTES, generate_corpus};

fn main() -> ExitCode {
    common::report(run())
}

fn run() -> anyhow::Result<()> {
    let corpus = generate_corpus(CORPUS_SEED, CORPUS_TARGET_BYTES);
    match std::env::args().nth(1) {
        None => print!("{corpus}"),
        Some(path) => {
            write_atomically(Path::new(&path), corpus.as_bytes())?;
            eprintln!(
                "wrote {} bytes, {} sentences to {path}",
                corpus.len(),
                corpus.lines().count()
            );
        }
    }
    Ok(())
}
