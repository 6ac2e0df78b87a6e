//! Export a trained checkpoint's weights as safetensors, in tinygpt's documented layout
//! (PyTorch conventions; see `tinygpt::weights`), with the config and vocabulary in the
//! file's metadata.
//!
//! `cargo run --release --example export -- [--checkpoint DIR] [--out FILE.safetensors] [--force]`

mod common;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tinygpt::train::checkpoint;
use tinygpt::weights::{export_safetensors, tensor_layout};

#[derive(Parser)]
#[command(about = "Export a tinygpt checkpoint's weights as safetensors")]
struct Args {
    /// Run directory (or checkpoint directory) written by the train example.
    #[arg(long, default_value = "runs/causal")]
    checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(long, default_value = "model.safetensors")]
    out: PathBuf,
    /// Replace --out if it exists.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tinygpt::fs::check_output(&args.out, args.force).context("--out")?;
    // Weights are read back to the host to be written, so the CPU backend is all it needs.
    let device = tinygpt::device::host_device()?;
    let saved = checkpoint::load(&args.checkpoint, &device).context("--checkpoint")?;
    tinygpt::fs::refuse_inside(&args.out, &saved.dir).context("--out")?;
    export_safetensors(&saved.model, Some(&saved.tokenizer), &args.out).context("--out")?;

    let layout = tensor_layout(saved.model.config());
    let parameters: usize = layout
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    println!("{:<36} shape", "tensor (f32)");
    for (name, shape) in &layout {
        println!("{name:<36} {shape:?}");
    }
    let bytes = std::fs::metadata(&args.out)?.len();
    println!(
        "\nwrote {} ({} tensors, {parameters} parameters, {bytes} bytes) from {}",
        args.out.display(),
        layout.len(),
        saved.dir.display()
    );
    Ok(())
}
