//! Export a trained checkpoint's weights as safetensors, in tinygpt's documented layout
//! (PyTorch conventions; see `tinygpt::weights`), with the config and vocabulary in the
//! file's metadata.
//!
//! `cargo run --release --example export -- [--checkpoint DIR] [--out FILE.safetensors]`

use std::path::PathBuf;

use clap::Parser;
use tinygpt::checkpoint;
use tinygpt::weights::{export_safetensors, tensor_layout};

#[derive(Parser)]
#[command(about = "Export a tinygpt checkpoint's weights as safetensors")]
struct Args {
    /// Run directory (or checkpoint directory) written by the train example.
    #[arg(long, default_value = "runs/causal")]
    checkpoint: PathBuf,
    /// The safetensors file to write (replaced whole if it exists).
    #[arg(long, default_value = "model.safetensors")]
    out: PathBuf,
}

fn main() {
    if let Err(message) = run(Args::parse()) {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    // Weights are read back to the host to be written, so the CPU backend is all it needs.
    let device = tinygpt::device::default_device().map_err(|e| e.to_string())?;
    let saved = checkpoint::load(&args.checkpoint, &device).map_err(|e| e.to_string())?;
    export_safetensors(&saved.model, Some(&saved.tokenizer), &args.out)
        .map_err(|e| e.to_string())?;

    let layout = tensor_layout(saved.model.config());
    let parameters: usize = layout
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    println!("{:<36} shape", "tensor (f32)");
    for (name, shape) in &layout {
        println!("{name:<36} {shape:?}");
    }
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    println!(
        "\nwrote {} ({} tensors, {parameters} parameters, {bytes} bytes) from {}",
        args.out.display(),
        layout.len(),
        saved.dir.display()
    );
    Ok(())
}
