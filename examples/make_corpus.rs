//! Regenerate the bundled toy corpus from the grammar in `src/grammar.rs`.
//!
//! `cargo run --release --example make_corpus -- data/corpus.txt` writes it (atomically: a
//! temporary file renamed into place); with no argument it prints the corpus to stdout.

use std::path::Path;

use tinygpt::checkpoint::write_atomically;
use tinygpt::grammar::{CORPUS_SEED, CORPUS_TARGET_BYTES, generate_corpus};

fn main() {
    let corpus = generate_corpus(CORPUS_SEED, CORPUS_TARGET_BYTES);
    match std::env::args().nth(1) {
        None => print!("{corpus}"),
        Some(path) => {
            if let Err(err) = write_atomically(Path::new(&path), corpus.as_bytes()) {
                eprintln!("error: {err}");
                std::process::exit(1);
            }
            eprintln!(
                "wrote {} bytes, {} sentences to {path}",
                corpus.len(),
                corpus.lines().count()
            );
        }
    }
}
