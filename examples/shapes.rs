//! Walks one forward pass of the default-sized model and prints the shape at every stage, then
//! the KV cache across a prefill and three one-token decode steps.
//!
//! `cargo run --release --example shapes -- [--device NAME] [--batch B] [--seq T] [--kv-heads N]`
//!
//! With `--kv-heads 2` (or 1) the model uses grouped-query (multi-query) attention: the key and
//! value stages and the cache shrink to the key/value heads while the queries keep all heads.

mod common;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tinygpt::device::token_tensor;
use tinygpt::{ForwardOptions, GptConfig, KvCache, ShapeTrace};

#[derive(Parser)]
#[command(about = "Print the tensor shapes of one forward pass and of the KV cache")]
struct Args {
    /// Backend to run on: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
    /// Sequences in the batch, B.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Tokens per sequence, T.
    #[arg(long, default_value_t = 8)]
    seq: usize,
    /// Vocabulary size, V.
    #[arg(long, default_value_t = 65)]
    vocab: usize,
    /// Key/value heads, H_kv (grouped-query attention; must divide the 4 heads). Default: 4.
    #[arg(long)]
    kv_heads: Option<usize>,
}

fn shape(dims: &[usize]) -> String {
    let parts: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("[{}]", parts.join(", "))
}

/// Stages inside blocks 1.. other than their output: they repeat block 0's shapes.
fn is_detail_of_a_later_block(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    parts[0] == "blocks" && parts[1] != "0" && parts[2..] != ["output"]
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let config = GptConfig::new(args.vocab).with_n_kv_heads(args.kv_heads);
    let (b, t) = (args.batch, args.seq);
    if b == 0 || t == 0 {
        anyhow::bail!("--batch ({b}) and --seq ({t}) must both be at least 1");
    }
    if t > config.max_seq_len {
        anyhow::bail!(
            "--seq {t} is longer than the model's context of {}; give at most {}",
            config.max_seq_len,
            config.max_seq_len
        );
    }
    config.validate().context("--vocab, --kv-heads")?;
    tinygpt::memory::check_fits(
        &format!(
            "a traced forward pass of --batch {b} x --seq {t} tokens with --vocab {}",
            config.vocab_size
        ),
        tinygpt::memory::forward_bytes(&config, b, t),
    )?;
    let model = config.init(&device)?;
    println!(
        "model: V={} D={} H={} H_kv={} Dh={} L={} context={}  |  input: B={b} T={t}  |  backend: {}",
        config.vocab_size,
        config.d_model,
        config.n_heads,
        config.kv_heads(),
        config.head_dim(),
        config.n_layers,
        config.max_seq_len,
        tinygpt::device::describe(&args.device, &device)
    );
    if config.kv_heads() < config.n_heads {
        let group = config.n_heads / config.kv_heads();
        println!(
            "grouped-query attention: query head h reads key/value head h / {group} \
             ({group} query heads share each key/value head)"
        );
    }
    println!();

    let ids: Vec<usize> = (0..b * t)
        .map(|i| (i * 7 + 3) % config.vocab_size)
        .collect();
    let mut trace = ShapeTrace::new();
    let options = ForwardOptions::default().with_trace(&mut trace);
    model.forward_with(token_tensor(&ids, b, t, &device)?, options)?;
    println!("one forward pass (layer 0 in full; the other layers repeat it):");
    for stage in trace.stages() {
        if is_detail_of_a_later_block(&stage.name) {
            continue;
        }
        println!("  {:<34} {}", stage.name, shape(&stage.shape));
    }

    println!("\nKV cache (per layer, K and V each [B, H_kv, S, Dh]):");
    let mut cache = model.new_cache(b, &device);
    let logits = model.forward_cached(token_tensor(&ids, b, t, &device)?, &mut cache)?;
    let report = |phase: &str, new: usize, logits: &[usize], cache: &KvCache| {
        println!(
            "  {phase:<14} new tokens {new:>2}  logits {:<14} cache len {:>2}  K {}  {:>7} bytes",
            shape(logits),
            cache.len(),
            shape(&cache.keys(0).dims()),
            cache.memory_bytes()
        );
    };
    report("prefill", t, &logits.dims(), &cache);
    for step in 1..=3 {
        let next: Vec<usize> = (0..b).map(|i| (step + i) % config.vocab_size).collect();
        let logits = model.forward_cached(token_tensor(&next, b, 1, &device)?, &mut cache)?;
        report(&format!("decode step {step}"), 1, &logits.dims(), &cache);
    }
    Ok(())
}
