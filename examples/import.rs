//! Import a model trained elsewhere and write it as a tinygpt checkpoint, which the generate
//! example then runs with the KV cache: a Hugging Face GPT-2 directory (`config.json` +
//! `model.safetensors`, e.g. `gpt2` from the Hub), or a nanoGPT model saved as safetensors (see
//! `scripts/nanogpt_to_safetensors.py`).
//!
//! `cargo run --release --example import -- --hf DIR [--vocab FILE] [--out DIR] [--force]`
//! `cargo run --release --example import -- --nanogpt FILE.safetensors --vocab META.json
//!  --n-heads H [--out DIR] [--force]`

mod common;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use tinygpt::Gpt;
use tinygpt::text::tokenizer::{END_OF_TEXT, Gpt2Tokenizer};
use tinygpt::text::{CharTokenizer, Tokenizer};
use tinygpt::train::checkpoint::{self, TrainState};
use tinygpt::weights::{import_hf, import_nanogpt};

#[derive(Parser)]
#[command(about = "Import a Hugging Face GPT-2 or a nanoGPT model as a tinygpt checkpoint")]
struct Args {
    /// A Hugging Face GPT2LMHeadModel directory: config.json and model.safetensors.
    #[arg(long, conflicts_with_all = ["nanogpt", "n_heads"], required_unless_present = "nanogpt")]
    hf: Option<PathBuf>,
    /// nanoGPT weights as safetensors (`transformer.wte.weight`, `transformer.h.0.attn.c_attn.weight`, ...).
    #[arg(long, requires_all = ["vocab", "n_heads"])]
    nanogpt: Option<PathBuf>,
    /// The vocabulary: nanoGPT's meta.pkl `itos` as JSON (`{"itos": {"0": "\n", ...}}`), an
    /// array of characters in id order, or a tokenizer.json (Hugging Face byte-level BPE, or
    /// tinygpt's). With --hf: default DIR/tokenizer.json if present, else GPT-2's own tokenizer
    /// for a 50,257-token model.
    #[arg(long)]
    vocab: Option<PathBuf>,
    /// Attention heads per block (nanoGPT's `n_head`; the shapes cannot tell).
    #[arg(long)]
    n_heads: Option<usize>,
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
    if args.n_heads == Some(0) {
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
    let device = tinygpt::device::host_device()?;
    let (model, tokenizer, source) = match (&args.hf, &args.nanogpt) {
        (Some(dir), _) => {
            let model = import_hf(dir, &device).context("--hf")?;
            let tokenizer = hf_tokenizer(dir, args.vocab.as_deref(), &model)?;
            (
                model,
                tokenizer,
                format!("Hugging Face GPT-2 {}", dir.display()),
            )
        }
        (None, Some(file)) => {
            let vocab = args.vocab.as_deref().expect("clap requires --vocab");
            let tokenizer = read_vocab(vocab)?;
            let n_heads = args.n_heads.expect("clap requires --n-heads");
            let model = import_nanogpt(file, n_heads, &device).context("--nanogpt, --n-heads")?;
            (
                model,
                tokenizer,
                format!("nanoGPT safetensors {}", file.display()),
            )
        }
        (None, None) => unreachable!("clap requires --hf or --nanogpt"),
    };
    let config = model.config();
    if tokenizer.vocab_size() != config.vocab_size {
        bail!(
            "the tokenizer has {} tokens but the weights a vocabulary of {}; give --vocab of \
             the same model",
            tokenizer.vocab_size(),
            config.vocab_size
        );
    }
    let state = TrainState::imported(source.clone());
    checkpoint::save(&args.out, &model, &tokenizer, &state, None).context("--out")?;
    println!(
        "imported {source}: V={} D={} H={} L={} context {}, {} tokenizer\nwrote the checkpoint \
         to {}; generate with\n  cargo run --release --example generate -- --checkpoint {}",
        config.vocab_size,
        config.d_model,
        config.n_heads,
        config.n_layers,
        config.max_seq_len,
        tokenizer.kind(),
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// The tokenizer of `path`: a tokenizer.json of either kind, or a character vocabulary.
fn read_vocab(path: &Path) -> anyhow::Result<Tokenizer> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--vocab {}", path.display()))?;
    let tokenizer = match Tokenizer::from_json(&text) {
        Ok(tokenizer) => tokenizer,
        Err(_) => CharTokenizer::from_json_vocabulary(&text)
            .with_context(|| format!("--vocab {}", path.display()))?
            .into(),
    };
    Ok(tokenizer)
}

/// The tokenizer of an imported GPT-2: `--vocab`, else the directory's tokenizer.json, else
/// GPT-2's own when the model has its vocabulary.
fn hf_tokenizer(dir: &Path, vocab: Option<&Path>, model: &Gpt) -> anyhow::Result<Tokenizer> {
    if let Some(path) = vocab {
        return read_vocab(path);
    }
    let beside = dir.join("tokenizer.json");
    if beside.is_file() {
        return read_vocab(&beside);
    }
    if model.config().vocab_size == END_OF_TEXT + 1 {
        return Ok(Tokenizer::Gpt2(Gpt2Tokenizer::new()));
    }
    bail!(
        "--hf {}: the model has {} tokens and the directory no tokenizer.json; give the \
         tokenizer with --vocab FILE",
        dir.display(),
        model.config().vocab_size
    )
}
