//! Export a trained checkpoint: as one safetensors file in tinygpt's documented layout
//! (PyTorch conventions; see `tinygpt::weights`), with the config and tokenizer in the file's
//! metadata, or as a Hugging Face GPT-2 directory that `transformers` loads with
//! `GPT2LMHeadModel.from_pretrained(DIR)`.
//!
//! `cargo run --release --example export -- [--checkpoint DIR] [--format tinygpt|hf]
//!  [--out PATH] [--force]`

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tinygpt::text::Tokenizer;
use tinygpt::train::checkpoint;
use tinygpt::weights::{export_hf, export_safetensors, tensor_layout};

#[derive(Parser)]
#[command(
    about = "Export a tinygpt checkpoint's weights as safetensors or as a Hugging Face GPT-2"
)]
struct Args {
    /// Run directory (or checkpoint directory) written by the train example.
    #[arg(long, default_value = "runs/causal")]
    checkpoint: PathBuf,
    /// tinygpt: one .safetensors file in tinygpt's layout; hf: a directory with config.json and
    /// model.safetensors for transformers' GPT2LMHeadModel (plus the tokenizer when it has a
    /// standard form).
    #[arg(long, default_value = "tinygpt", value_parser = ["tinygpt", "hf"])]
    format: String,
    /// The file (tinygpt) or directory (hf) to write. Default: model.safetensors, or hf-model.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace --out's files if they exist.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let hf = args.format == "hf";
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(if hf { "hf-model" } else { "model.safetensors" }));
    if hf {
        if out.is_file() {
            anyhow::bail!(
                "--out {} is a file; --format hf writes a directory",
                out.display()
            );
        }
        // A directory not there yet is created by the export; one that is must not lose files.
        if out.is_dir() {
            for file in ["config.json", "model.safetensors", "tokenizer.json"] {
                tinygpt::fs::check_output(&out.join(file), args.force).context("--out")?;
            }
        }
    } else {
        tinygpt::fs::check_output(&out, args.force).context("--out")?;
    }
    // Weights are read back to the host to be written, so the CPU backend is all it needs.
    let device = tinygpt::device::host_device()?;
    let saved = checkpoint::load(&args.checkpoint, &device).context("--checkpoint")?;
    tinygpt::fs::refuse_inside(&out, &saved.dir).context("--out")?;
    if hf {
        // Refuses a model GPT-2 cannot express before it writes anything.
        let mut written = export_hf(&saved.model, &out).context("--format hf, --out")?;
        match &saved.tokenizer {
            // A Hugging Face tokenizer.json: transformers' PreTrainedTokenizerFast reads it.
            Tokenizer::Bpe(_) => {
                let path = out.join("tokenizer.json");
                tinygpt::fs::write_atomically(&path, saved.tokenizer.to_json().as_bytes())?;
                written.push(path);
            }
            Tokenizer::Gpt2(_) => {
                println!(
                    "the tokenizer is GPT-2's own: GPT2TokenizerFast.from_pretrained(\"gpt2\")"
                )
            }
            Tokenizer::Char(_) => println!(
                "the character tokenizer has no transformers form: map ids with {}",
                saved.dir.join("tokenizer.json").display()
            ),
        }
        for path in &written {
            println!(
                "wrote {} ({} bytes)",
                path.display(),
                std::fs::metadata(path)?.len()
            );
        }
        println!(
            "load it in Python with\n  transformers.GPT2LMHeadModel.from_pretrained({:?})",
            out.display().to_string()
        );
        return Ok(());
    }
    export_safetensors(&saved.model, Some(&saved.tokenizer), &out).context("--out")?;

    let layout = tensor_layout(saved.model.config());
    let parameters: usize = layout
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    println!("{:<36} shape", "tensor (f32)");
    for (name, shape) in &layout {
        println!("{name:<36} {shape:?}");
    }
    let bytes = std::fs::metadata(&out)?.len();
    println!(
        "\nwrote {} ({} tensors, {parameters} parameters, {bytes} bytes) from {}",
        out.display(),
        layout.len(),
        saved.dir.display()
    );
    Ok(())
}
