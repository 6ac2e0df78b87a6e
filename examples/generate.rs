//! Generate text from a trained checkpoint with the KV cache, streaming it as it comes; or
//! compare cached and naive decoding on the same prompt.
//!
//! `cargo run --release --example generate -- [--prompt TEXT] [--max-new-tokens N]
//!  [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop TEXT] [--no-cache]
//!  [--compare [--json]] [--logits FILE.jsonl [--logits-top K] [--force]] [--heatmap FILE.png]
//!  [--checkpoint DIR] [--device NAME]`
//!
//! `--logits` writes, per generated token, the token and the logits it was chosen from (the
//! model's raw logits, before temperature and top-k/top-p) as one JSON line, the prompt's last
//! position first; `tinygpt::generate::logits` shows how to compare them with a PyTorch model.

mod common;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Parser;
use tinygpt::generate::{
    DecodeMode, GenerationConfig, Generator, SamplingConfig, WindowPolicy, compare_decoding,
    logit_records,
};
use tinygpt::plot::attention_heatmap;
use tinygpt::train::checkpoint::{self, Checkpoint};

#[derive(Parser)]
#[command(about = "Generate text from a tinygpt checkpoint, with or without the KV cache")]
struct Args {
    /// Run directory (or checkpoint directory) written by the train example.
    #[arg(long, default_value = "runs/causal")]
    checkpoint: std::path::PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "the ")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// 0 for greedy; higher is more random.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample only among the K most likely characters.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely characters whose probabilities reach P.
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output ends with this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Past the context window: `slide-half` (keep the last half, prefill it again once every
    /// half window), `crop` (nanoGPT's: the last max_seq_len tokens at every step, recomputed)
    /// or `rolling` (RoPE models: the cache drops its oldest position for each new one).
    #[arg(long, default_value = "slide-half")]
    window: WindowPolicy,
    /// Recompute the whole context for every token instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
    /// Run cached and naive greedy decoding on the prompt and compare them (greedy, so the
    /// sampling options do not apply).
    #[arg(
        long,
        conflicts_with_all = ["temperature", "top_k", "top_p", "seed", "stop", "no_cache"]
    )]
    compare: bool,
    /// With --compare: print one JSON object instead of the report.
    #[arg(long, requires = "compare")]
    json: bool,
    /// Write the token and the logits of every step to this file, one JSON object per line
    /// (the prompt's last position first).
    #[arg(long, conflicts_with = "compare")]
    logits: Option<std::path::PathBuf>,
    /// With --logits: keep only the K largest logits of each step, as [token, logit] pairs.
    #[arg(long, requires = "logits")]
    logits_top: Option<usize>,
    /// Replace an existing --logits file.
    #[arg(long, requires = "logits")]
    force: bool,
    /// Write the prompt's attention weights (every layer and head) to this PNG.
    #[arg(long)]
    heatmap: Option<std::path::PathBuf>,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let checkpoint = checkpoint::load(&args.checkpoint, &device).with_context(|| {
        format!(
            "--checkpoint {} (write one with `cargo run --release --example train`)",
            args.checkpoint.display()
        )
    })?;
    let backend = tinygpt::device::describe(&args.device, &device);
    let config = checkpoint.model.config();
    eprintln!(
        "backend {backend}; checkpoint {} ({}, {} mask, D={} H={} H_kv={} L={}, {} positions, \
         context {})",
        checkpoint.dir.display(),
        match &checkpoint.state.origin {
            Some(origin) => format!("imported from {origin}"),
            None => format!("step {}", checkpoint.state.step),
        },
        config.mask_mode,
        config.d_model,
        config.n_heads,
        config.kv_heads(),
        config.n_layers,
        config.position,
        config.max_seq_len
    );
    let prompt = checkpoint
        .tokenizer
        .encode(&args.prompt)
        .context("--prompt")?;
    if prompt.is_empty() {
        bail!("--prompt is empty; this model has no start token, so give at least one character");
    }
    if let Some(path) = &args.heatmap {
        attention_heatmap(
            &checkpoint.model,
            &checkpoint.tokenizer,
            &prompt,
            path,
            &device,
        )
        .context("--heatmap")?;
        eprintln!("wrote the attention heatmaps to {}", path.display());
    }
    if let Some(path) = &args.logits
        && path.exists()
        && !args.force
    {
        bail!(
            "--logits {} exists; pick another file, or pass --force to replace it",
            path.display()
        );
    }
    if args.logits_top == Some(0) {
        bail!("--logits-top must be at least 1 (leave it out for every logit)");
    }
    if args.compare {
        compare(&checkpoint, &prompt, &args, &device)
    } else {
        stream(&checkpoint, &prompt, &args, &device)
    }
}

fn stream(
    checkpoint: &Checkpoint,
    prompt: &[usize],
    args: &Args,
    device: &Device,
) -> anyhow::Result<()> {
    let tokenizer = &checkpoint.tokenizer;
    let stop = args
        .stop
        .iter()
        .map(|text| tokenizer.encode(text).context("--stop"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sampling = SamplingConfig::new()
        .with_temperature(args.temperature)
        .with_top_k(args.top_k)
        .with_top_p(args.top_p)
        .with_seed(args.seed);
    sampling
        .validate()
        .context("check --temperature, --top-k and --top-p")?;
    let mode = if args.no_cache {
        DecodeMode::Naive
    } else {
        DecodeMode::Cached
    };
    let config = GenerationConfig::new(args.max_new_tokens)
        .with_sampling(sampling)
        .with_stop(stop)
        .with_mode(mode)
        .with_window(args.window)
        .with_record_logits(args.logits.is_some());
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", args.prompt);
    let generation = Generator::new(&checkpoint.model, device).generate(
        &[prompt.to_vec()],
        &config,
        &mut |_, id| {
            let _ = write!(out, "{}", tokenizer.decode(&[id]));
            let _ = out.flush();
        },
    )?;
    let _ = writeln!(out);
    if let Some(path) = &args.logits {
        write_logits(path, prompt, &generation, args.logits_top, checkpoint)?;
    }
    let stats = &generation.stats;
    // The first new token comes from the prefill's logits; decode steps make the rest.
    let decode_rate = match stats.decode_tokens {
        0 => "no decode steps".to_string(),
        _ => format!("{:.0} tokens/s", stats.decode_tokens_per_s()),
    };
    eprintln!(
        "\n{} decoding: prefill {} tokens at {:.0} tokens/s; {} new tokens, decode at {decode_rate}; \
         cache length {} after prefill, {} at the end; {} window slides",
        if args.no_cache { "naive" } else { "cached" },
        stats.prefill_tokens,
        stats.prefill_tokens_per_s(),
        generation.tokens[0].len(),
        stats.cache_len_after_prefill,
        stats.cache_len_after_decode,
        stats.window_slides
    );
    Ok(())
}

/// One JSON object per generated token (see `tinygpt::generate::logits`), with the token's
/// text beside its id, written atomically.
fn write_logits(
    path: &std::path::Path,
    prompt: &[usize],
    generation: &tinygpt::generate::Generation,
    top_k: Option<usize>,
    checkpoint: &Checkpoint,
) -> anyhow::Result<()> {
    let tokenizer = &checkpoint.tokenizer;
    let mut lines = String::new();
    for mut record in logit_records(prompt, generation, top_k) {
        record.text = Some(tokenizer.decode(&[record.token]));
        lines.push_str(&serde_json::to_string(&record)?);
        lines.push('\n');
    }
    tinygpt::fs::write_atomically(path, lines.as_bytes()).context("--logits")?;
    eprintln!(
        "wrote the logits of {} steps to {}",
        generation.tokens[0].len(),
        path.display()
    );
    Ok(())
}

fn compare(
    checkpoint: &Checkpoint,
    prompt: &[usize],
    args: &Args,
    device: &Device,
) -> anyhow::Result<()> {
    let mask = checkpoint.model.config().mask_mode;
    if mask.is_leaky() {
        // With a leaky mask, earlier positions would see later tokens on a full recompute, so
        // the keys and values a cache holds are stale by design.
        eprintln!(
            "warning: this model's {mask} mask leaks the future, so its KV cache is not valid: \
             cached and naive decoding are expected to differ"
        );
    }
    let report = compare_decoding(
        &checkpoint.model,
        prompt,
        args.max_new_tokens,
        args.window,
        device,
    )?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let text = checkpoint.tokenizer.decode(&report.tokens);
    println!(
        "greedy continuation of {:?}:\n{}{}\n",
        args.prompt, args.prompt, text
    );
    println!(
        "identical tokens:          {}",
        if report.identical_tokens { "yes" } else { "NO" }
    );
    if mask.is_leaky() {
        println!("(a leaky mask: the cache is not valid, whatever the tokens say)");
    }
    println!(
        "max |Δ logit| over {} steps: {:.2e}",
        report.new_tokens, report.max_abs_logit_diff
    );
    println!(
        "cache length:              {} after prefill, {} after decode ({} window slides)",
        report.cache_len_after_prefill, report.cache_len_after_decode, report.window_slides
    );
    println!(
        "cached:                    {:>8.0} tokens/s",
        report.cached_tokens_per_s
    );
    println!(
        "naive (full recompute):    {:>8.0} tokens/s",
        report.naive_tokens_per_s
    );
    println!("speedup:                   {:>8.2}x", report.speedup);
    Ok(())
}
