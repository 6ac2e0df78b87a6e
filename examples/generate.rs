//! Generate text from a trained checkpoint with the KV cache, streaming it as it comes; or
//! compare cached and naive decoding on the same prompt.
//!
//! `cargo run --release --example generate -- [--prompt TEXT] [--max-new-tokens N]
//!  [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop TEXT] [--no-cache]
//!  [--compare [--json]] [--heatmap FILE.png] [--checkpoint DIR] [--device NAME]`

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Serialize;
use tinygpt::ShapeTrace;
use tinygpt::checkpoint::{self, Checkpoint};
use tinygpt::generate::{DecodeMode, GenerateOptions, Generation, Generator, SamplingConfig};
use tinygpt::host::{floats, token_tensor};
use tinygpt::plot::{AttentionMap, plot_attention};

#[derive(Parser)]
#[command(about = "Generate text from a tinygpt checkpoint, with or without the KV cache")]
struct Args {
    /// Run directory (or checkpoint directory) written by the train example.
    #[arg(long, default_value = "runs/causal")]
    checkpoint: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "the ")]
    prompt: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// 0 for greedy; higher is more random.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Sample only among the K most likely characters.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely characters whose probabilities reach P.
    #[arg(long)]
    top_p: Option<f32>,
    /// Seed of the sampler: the same seed gives the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when the output ends with this text (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Recompute the whole context for every token instead of using the KV cache.
    #[arg(long)]
    no_cache: bool,
    /// Run cached and naive greedy decoding on the prompt and compare them.
    #[arg(long)]
    compare: bool,
    /// With --compare: print one JSON object instead of the report.
    #[arg(long)]
    json: bool,
    /// Write the prompt's attention weights (every layer and head) to this PNG.
    #[arg(long)]
    heatmap: Option<PathBuf>,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() {
    if let Err(message) = run(Args::parse()) {
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let device = tinygpt::device::device_by_name(&args.device).map_err(|e| e.to_string())?;
    let checkpoint = load(&args.checkpoint, &device)?;
    let backend = tinygpt::device::describe(&args.device, &device);
    let config = checkpoint.model.config();
    eprintln!(
        "backend {backend}; checkpoint {} ({}, {} mask, D={} H={} L={}, context {})",
        checkpoint.dir.display(),
        match &checkpoint.state.origin {
            Some(origin) => format!("imported from {origin}"),
            None => format!("step {}", checkpoint.state.step),
        },
        config.mask_mode,
        config.d_model,
        config.n_heads,
        config.n_layers,
        config.max_seq_len
    );
    let prompt = checkpoint
        .tokenizer
        .encode(&args.prompt)
        .map_err(|e| format!("--prompt: {e}"))?;
    if prompt.is_empty() {
        return Err(
            "--prompt is empty; this model has no start token, so give at least one character"
                .into(),
        );
    }
    if let Some(path) = &args.heatmap {
        heatmap(&checkpoint, &prompt, path, &device)?;
        eprintln!("wrote the attention heatmaps to {}", path.display());
    }
    if args.compare {
        compare(&checkpoint, &prompt, &args, &device)
    } else {
        stream(&checkpoint, &prompt, &args, &device)
    }
}

fn load(path: &Path, device: &burn::tensor::Device) -> Result<Checkpoint, String> {
    checkpoint::load(path, device).map_err(|err| err.to_string())
}

fn stream(
    checkpoint: &Checkpoint,
    prompt: &[usize],
    args: &Args,
    device: &burn::tensor::Device,
) -> Result<(), String> {
    let tokenizer = &checkpoint.tokenizer;
    let stop = args
        .stop
        .iter()
        .map(|text| tokenizer.encode(text).map_err(|e| format!("--stop: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let options = GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
        },
        stop,
        mode: if args.no_cache {
            DecodeMode::Naive
        } else {
            DecodeMode::Cached
        },
        record_logits: false,
    };
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", args.prompt);
    let generation = Generator::new(&checkpoint.model, device)
        .generate(&[prompt.to_vec()], &options, &mut |_, id| {
            let _ = write!(out, "{}", tokenizer.decode(&[id]));
            let _ = out.flush();
        })
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out);
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

/// What `--compare --json` prints.
#[derive(Serialize)]
struct Comparison {
    identical_tokens: bool,
    max_abs_logit_diff: f32,
    cache_len_after_prefill: usize,
    cache_len_after_decode: usize,
    cached_tokens_per_s: f64,
    naive_tokens_per_s: f64,
    speedup: f64,
    new_tokens: usize,
    window_slides: usize,
    prefill_tokens_per_s: f64,
    backend: String,
}

fn compare(
    checkpoint: &Checkpoint,
    prompt: &[usize],
    args: &Args,
    device: &burn::tensor::Device,
) -> Result<(), String> {
    let generator = Generator::new(&checkpoint.model, device);
    let run = |mode| -> Result<Generation, String> {
        let options = GenerateOptions {
            mode,
            record_logits: true,
            ..GenerateOptions::greedy(args.max_new_tokens)
        };
        generator
            .generate(&[prompt.to_vec()], &options, &mut |_, _| {})
            .map_err(|e| e.to_string())
    };
    let cached = run(DecodeMode::Cached)?;
    let naive = run(DecodeMode::Naive)?;
    let max_abs_logit_diff = cached
        .step_logits
        .iter()
        .zip(&naive.step_logits)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
        .fold(0.0f32, f32::max);
    // Throughput of the whole generation, prefill included, so both modes are timed alike.
    let tokens_per_s = |g: &Generation| {
        g.tokens[0].len() as f64 / (g.stats.prefill_seconds + g.stats.decode_seconds).max(1e-12)
    };
    let report = Comparison {
        identical_tokens: cached.tokens == naive.tokens,
        max_abs_logit_diff,
        cache_len_after_prefill: cached.stats.cache_len_after_prefill,
        cache_len_after_decode: cached.stats.cache_len_after_decode,
        cached_tokens_per_s: tokens_per_s(&cached),
        naive_tokens_per_s: tokens_per_s(&naive),
        speedup: tokens_per_s(&cached) / tokens_per_s(&naive),
        new_tokens: cached.tokens[0].len(),
        window_slides: cached.stats.window_slides,
        prefill_tokens_per_s: cached.stats.prefill_tokens_per_s(),
        backend: format!("{device:?}"),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let text = checkpoint.tokenizer.decode(&cached.tokens[0]);
    println!(
        "greedy continuation of {:?}:\n{}{}\n",
        args.prompt, args.prompt, text
    );
    println!(
        "identical tokens:          {}",
        if report.identical_tokens { "yes" } else { "NO" }
    );
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

fn heatmap(
    checkpoint: &Checkpoint,
    prompt: &[usize],
    path: &Path,
    device: &burn::tensor::Device,
) -> Result<(), String> {
    let context = checkpoint.model.config().max_seq_len;
    let prompt = &prompt[prompt.len().saturating_sub(context)..];
    let tokens = token_tensor(prompt, 1, prompt.len(), device).map_err(|e| e.to_string())?;
    let mut trace = ShapeTrace::with_attention_weights();
    checkpoint
        .model
        .forward_traced(tokens, &mut trace)
        .map_err(|e| e.to_string())?;
    let layers = trace
        .attention_weights()
        .iter()
        .map(|(name, weights)| {
            let heads = weights.dims()[1];
            floats(weights.clone())
                .map(|values| (name.trim_end_matches(".weights").to_string(), heads, values))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let maps: Vec<AttentionMap> = layers
        .iter()
        .map(|(name, heads, weights)| AttentionMap {
            name,
            weights,
            heads: *heads,
        })
        .collect();
    let labels: Vec<String> = checkpoint
        .tokenizer
        .decode(prompt)
        .chars()
        .map(|c| match c {
            ' ' => "␣".to_string(),
            '\n' => "⏎".to_string(),
            c => c.to_string(),
        })
        .collect();
    plot_attention(path, &labels, &maps).map_err(|e| e.to_string())
}
