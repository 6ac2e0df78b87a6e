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
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::tensor::Device;
use clap::Parser;
use tinygpt::PositionScheme;
use tinygpt::generate::{
    DecodeMode, GenerationConfig, Generator, SamplingConfig, WindowPolicy, compare_decoding,
    logit_records,
};
use tinygpt::plot::attention_heatmap;
use tinygpt::text::Utf8Stream;
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
    temperature: f64,
    /// Sample only among the K most likely characters.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample only among the most likely characters whose probabilities reach P.
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f64>,
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
    /// Recompute the whole context for every token instead of using the KV cache (what a
    /// model with a leaky mask always does: its cache is not valid).
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
    /// Replace an existing --logits or --heatmap file.
    #[arg(long)]
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
    // Ctrl-C stops generation after the token being chosen, keeping what was generated.
    common::catch_ctrl_c();
    let args = Args::parse();
    // Every flag is checked before a checkpoint is read or a character printed.
    let sampling = sampling(&args)?;
    check_outputs(&args)?;
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let checkpoint = checkpoint::load(&args.checkpoint, &device).with_context(|| {
        match checkpoint::exists(&args.checkpoint) {
            true => format!("--checkpoint {}", args.checkpoint.display()),
            false => format!(
                "--checkpoint {} (write one with `cargo run --release --example train`)",
                args.checkpoint.display()
            ),
        }
    })?;
    for (flag, path) in [("--logits", &args.logits), ("--heatmap", &args.heatmap)] {
        if let Some(path) = path {
            tinygpt::fs::refuse_inside(path, &checkpoint.dir).context(flag)?;
        }
    }
    let backend = tinygpt::device::describe(&args.device, &device);
    let config = checkpoint.model.config();
    if args.window == WindowPolicy::Rolling && config.position != PositionScheme::Rope {
        bail!(
            "--window rolling needs a model with rotary position embedding (train it with \
             `--position rope`); this one has a learned position table, which ends at its \
             context of {}: use --window slide-half or crop",
            config.max_seq_len
        );
    }
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
    if prompt.len() > config.max_seq_len && args.window != WindowPolicy::Rolling {
        eprintln!(
            "note: the prompt has {} tokens and the model's context is {}: it sees its last {}",
            prompt.len(),
            config.max_seq_len,
            config.max_seq_len
        );
    }
    let record_bytes = if args.logits.is_some() {
        8.0 + 4.0 * config.vocab_size as f64
    } else {
        8.0
    };
    tinygpt::memory::check_fits(
        &format!("--max-new-tokens {}", args.max_new_tokens),
        args.max_new_tokens as f64 * record_bytes,
    )?;
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
    if args.compare {
        compare(&checkpoint, &prompt, &args, &device)
    } else {
        stream(&checkpoint, &prompt, sampling, &args, &device)
    }
}

/// The sampling the flags ask for, checked.
fn sampling(args: &Args) -> anyhow::Result<SamplingConfig> {
    if args.max_new_tokens == 0 {
        bail!("--max-new-tokens must be at least 1");
    }
    if args.stop.iter().any(String::is_empty) {
        bail!("--stop: a stop sequence cannot be empty");
    }
    if args.logits_top == Some(0) {
        bail!("--logits-top must be at least 1 (leave it out for every logit)");
    }
    let top_p = match args.top_p {
        Some(p) => Some(common::f32_flag("--top-p", p)?),
        None => None,
    };
    let sampling = SamplingConfig::new()
        .with_temperature(common::f32_flag("--temperature", args.temperature)?)
        .with_top_k(args.top_k)
        .with_top_p(top_p)
        .with_seed(args.seed);
    sampling.validate().map_err(|err| {
        let message = err.to_string();
        let flag = ["temperature", "top_k", "top_p"]
            .into_iter()
            .find(|name| message.contains(name))
            .map_or("--temperature, --top-k, --top-p".to_string(), |name| {
                format!("--{}", name.replace('_', "-"))
            });
        anyhow::Error::new(err).context(flag)
    })?;
    Ok(sampling)
}

/// No output file the user did not ask to replace is replaced, each can be written where it
/// is asked for, and each is of a kind it can be.
fn check_outputs(args: &Args) -> anyhow::Result<()> {
    if let Some(path) = &args.heatmap {
        tinygpt::plot::check_png_path(path).context("--heatmap")?;
    }
    if let (Some(logits), Some(heatmap)) = (&args.logits, &args.heatmap)
        && logits == heatmap
    {
        bail!(
            "--logits and --heatmap both name {}; give each its own file",
            logits.display()
        );
    }
    for (flag, path) in [("--logits", &args.logits), ("--heatmap", &args.heatmap)] {
        if let Some(path) = path {
            tinygpt::fs::check_output(path, args.force).context(flag)?;
        }
    }
    Ok(())
}

fn stream(
    checkpoint: &Checkpoint,
    prompt: &[usize],
    sampling: SamplingConfig,
    args: &Args,
    device: &Device,
) -> anyhow::Result<()> {
    let tokenizer = &checkpoint.tokenizer;
    let stop = args
        .stop
        .iter()
        .map(|text| tokenizer.encode(text).context("--stop"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mask = checkpoint.model.config().mask_mode;
    let naive = args.no_cache || mask.is_leaky();
    if mask.is_leaky() && !args.no_cache {
        eprintln!(
            "note: this model's {mask} mask leaks the future, so its KV cache is not valid (a \
             full recompute lets earlier positions see later tokens): decoding naively, as with \
             --no-cache"
        );
    }
    let mode = if naive {
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
    // A byte-level token can end inside a character: print only what is complete.
    let mut utf8 = Utf8Stream::new();
    let generation = Generator::new(&checkpoint.model, device).generate(
        &[prompt.to_vec()],
        &config,
        &mut |token| {
            let _ = write!(out, "{}", utf8.push(&tokenizer.token_bytes(token.id)));
            let _ = out.flush();
            match common::interrupted() {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        },
    )?;
    let _ = writeln!(out, "{}", utf8.finish());
    if let Some(path) = &args.logits {
        write_logits(path, prompt, &generation, args.logits_top, checkpoint)?;
    }
    if generation.stopped {
        bail!(
            "interrupted after {} new tokens",
            generation.tokens[0].len()
        );
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
        if naive { "naive" } else { "cached" },
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
        record.text = Some(tokenizer.token_text(record.token));
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
