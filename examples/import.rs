//! Import a nanoGPT model saved as safetensors (see `scripts/nanogpt_to_safetensors.py`) and
//! write it as a tinygpt checkpoint, which the generate example then runs with the KV cache.
//!
//! `cargo run --release --example import -- --nanogpt FILE.safetensors --vocab META.json
//!  --n-heads H [--out DIR] [--force]`

use std::path::PathBuf;

use clap::Parser;
use tinygpt::checkpoint::{self, TrainState};
use tinygpt::weights::nanogpt::import_nanogpt;
use tinygpt::weights::parse_vocabulary;

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

fn main() {
    if let Err(message) = run(Args::parse()) {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if checkpoint::exists(&args.out) && !args.force {
        return Err(format!(
            "{} already holds a checkpoint; pick another --out, or pass --force to replace it",
            args.out.display()
        ));
    }
    let vocab_text = std::fs::read_to_string(&args.vocab)
        .map_err(|err| format!("{}: {err}", args.vocab.display()))?;
    let tokenizer =
        parse_vocabulary(&vocab_text).map_err(|err| format!("{}: {err}", args.vocab.display()))?;
    let device = tinygpt::device::default_device().map_err(|e| e.to_string())?;
    let model = import_nanogpt(&args.nanogpt, args.n_heads, &device).map_err(|e| e.to_string())?;
    let config = model.config();
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(format!(
            "{} has {} characters but the weights have a vocabulary of {}; use the meta file \
             of the same nanoGPT run",
            args.vocab.display(),
            tokenizer.vocab_size(),
            config.vocab_size
        ));
    }
    let state = TrainState {
        format_version: checkpoint::FORMAT_VERSION,
        step: 0,
        train_config: None,
        origin: Some(format!("nanoGPT safetensors {}", args.nanogpt.display())),
    };
    checkpoint::save(&args.out, &model, &tokenizer, &state, None).map_err(|e| e.to_string())?;
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
