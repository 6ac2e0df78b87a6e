//! Import a nanoGPT model saved as safetensors (see `scripts/nanogpt_to_safetensors.py`) and
//! write it as a tinygpt checkpoint, which the generate example then runs with the KV cache.
//!
//! `cargo run --release --example import -- --nanogpt FILE.safetensors --vocab META.json
//!  --n-heads H [--out DIR] [--force]`

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use tinygpt::text::CharTokenizer;
use tinygpt::train::checkpoint::{self, TrainState};
use tinygpt::weights::import_nanogpt;

#[derive(Parser)]
#[command(about = "Import a nanoGPT safetensors checkpoint as a tinygpt checkpoint")]
struct Args {
    /// nanoGPT weights as safetensors (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, ...).
    #[arg(long)]
    nanogpt: PathBuf,
    /// The vocabulary as JSON: nanoGPT's meta.pkl `itos` (`{"itos": {"0": "\n", ...}}`), or an
    /// array of characters in id order.
    #[arg(long)]
    vocab: PathBuf,
    /// Attention heads per block (nanoGPT's `n_head`; the shapes cannot tell).
    #[arg(long)]
    n_heads: usize,
    /// Run directory to write the checkpoint into.
    #[arg(long, default_value = "runs/imported")]
    out: PathBuf,
    /// Replace a checkpoint already in --out.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.n_heads == 0 {
        bail!("--n-heads must be at least 1 (nanoGPT's n_head)");
    }
    if args.out.exists() && !args.out.is_dir() {
        bail!(
            "--out {} is a file; give a directory for the checkpoint",
            args.out.display()
        );
    }
    if checkpoint::exists(&args.out) && !args.force {
        bail!(
            "{} already holds a checkpoint; pick another --out, or pass --force to replace it",
            args.out.display()
        );
    }
    let vocab_text = std::fs::read_to_string(&args.vocab)
        .with_context(|| format!("--vocab {}", args.vocab.display()))?;
    let tokenizer = CharTokenizer::from_json_vocabulary(&vocab_text)
        .with_context(|| format!("--vocab {}", args.vocab.display()))?;
    let device = tinygpt::device::host_device()?;
    let model =
        import_nanogpt(&args.nanogpt, args.n_heads, &device).context("--nanogpt, --n-heads")?;
    let config = model.config();
    if tokenizer.vocab_size() != config.vocab_size {
        bail!(
            "{} has {} characters but the weights have a vocabulary of {}; use the meta file \
             of the same nanoGPT run",
            args.vocab.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        );
    }
    let state = TrainState::imported(format!("nanoGPT safetensors {}", args.nanogpt.display()));
    checkpoint::save(&args.out, &model, &tokenizer, &state, None).context("--out")?;
    println!(
        "imported {}: V={} D={} H={} L={} context {}\nwrote the checkpoint to {}; generate with\n  \
         cargo run --release --example generate -- --checkpoint {}",
        args.nanogpt.display(),
        config.vocab_size,
        config.d_model,
        config.n_heads,
        config.n_layers,
        config.max_seq_len,
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
