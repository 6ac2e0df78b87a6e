//! Speed and memory figures: training tokens/s, prefill tokens/s, decode tokens/s with and
//! without the KV cache at contexts 128, 512 and 2048, cached decoding of 8 rows at once at
//! 512, and the cache's bytes. Each speed comes with the GFLOP/s it achieves and its share of
//! this machine's `f32` matrix-product rate, measured first (a 2048² product on the same
//! backend). Prints a table, then one JSON object per figure; `--json` prints only the JSON
//! lines.
//!
//! `cargo run --release --example bench -- [--quick] [--json] [--device NAME] [--kv-heads N]
//! [--position rope] [--preset gpt2-small]`
//!
//! `--preset gpt2-small` measures GPT-2 small's shape instead (random weights, 124M
//! parameters): prefill of 128 tokens, cached decoding at contexts 512 and 1024, the weights'
//! and the cache's bytes and the process's peak memory.
//!
//! Timing: each workload runs `warmup` times untimed, then `repeats` times timed one by one;
//! the figure is from the median run. `scripts/pytorch_bench.py` times PyTorch the same way.

mod common;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use tinygpt::bench::{
    CONTEXTS, DECODE_BATCH, DECODE_BATCH_CONTEXT, Decoder, PREFILL, TRAIN_BATCH, TRAIN_SEQ,
    TrainStep, VOCAB, forward_flops, gpt2_small, matmul_gflops, model_config,
};
use tinygpt::{GptConfig, PositionScheme};

#[derive(Parser)]
#[command(about = "Measure tinygpt's training and decoding speed and its KV cache memory")]
struct Args {
    /// A short run (about a minute) for smoke checks: fewer repeats.
    #[arg(long)]
    quick: bool,
    /// Print only the JSON lines.
    #[arg(long)]
    json: bool,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
    /// Switch off the crate's kernels (`tinygpt::kernels`): every op takes Burn's own
    /// implementation, as on a backend without them.
    #[arg(long)]
    no_kernels: bool,
    /// Only this workload (for profiling one of them): all, train, prefill, decode, or cached
    /// (cached decoding alone, one row and eight, many more steps).
    #[arg(long, default_value = "all", value_parser = ["all", "train", "prefill", "decode", "cached"])]
    only: String,
    /// Key/value heads of the model (grouped-query attention; must divide its 4 heads).
    /// Default: 4, multi-head attention.
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Position scheme of the model: learned (the default) or rope.
    #[arg(long, default_value = "learned")]
    position: PositionScheme,
    /// Measure a preset model instead: gpt2-small (GPT-2's 124M-parameter shape).
    #[arg(long, value_parser = ["gpt2-small"], conflicts_with_all = ["kv_heads", "only"])]
    preset: Option<String>,
}

impl Args {
    /// The benchmark model with this run's key/value heads and positions, window `max_seq_len`.
    fn model(&self, max_seq_len: usize) -> GptConfig {
        model_config(max_seq_len)
            .with_n_kv_heads(self.kv_heads)
            .with_position(self.position)
    }
}

/// One figure, printed as a JSON line.
#[derive(Serialize)]
struct Figure {
    metric: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<usize>,
    value: f64,
    /// For `kv_cache_bytes`: `2·L·B·H_kv·Dh·S·4` beside the measured value.
    #[serde(skip_serializing_if = "Option::is_none")]
    formula: Option<f64>,
    /// Rows decoded at once (batched decoding only).
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
    /// Achieved GFLOP/s ([`forward_flops`]) and its share of the measured matrix-product rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    gflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    share: Option<f64>,
}

impl Figure {
    fn new(
        metric: &'static str,
        mode: Option<&'static str>,
        context: Option<usize>,
        value: f64,
    ) -> Self {
        Self {
            metric,
            mode,
            context,
            value,
            formula: None,
            batch: None,
            gflops: None,
            share: None,
        }
    }

    /// The same with the work rate of `flops_per_unit` per unit of `value`, against `peak`.
    fn with_flops(mut self, flops_per_unit: f64, peak: f64) -> Self {
        let gflops = self.value * flops_per_unit / 1e9;
        self.gflops = Some(gflops);
        self.share = Some(gflops / peak);
        self
    }

    /// `GFLOP/s (share %)` for the table.
    fn rate(&self) -> String {
        match (self.gflops, self.share) {
            (Some(g), Some(s)) => format!("{g:>6.1} GFLOP/s {:>5.1}%", s * 100.0),
            _ => String::new(),
        }
    }
}

/// Runs per workload.
struct Plan {
    warmup: usize,
    repeats: usize,
    train_repeats: usize,
    /// Print the table (not with `--json`).
    table: bool,
}

impl Plan {
    fn say(&self, line: String) {
        if self.table {
            println!("{line}");
        }
    }
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    args.model(CONTEXTS[CONTEXTS.len() - 1])
        .validate()
        .context("--kv-heads, --position")?;
    if args.no_kernels {
        return tinygpt::kernels::without_kernels(|| measure(&args));
    }
    measure(&args)
}

fn measure(args: &Args) -> anyhow::Result<()> {
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let plan = Plan {
        warmup: if args.quick { 1 } else { 3 },
        repeats: if args.quick { 3 } else { 20 },
        train_repeats: if args.quick { 2 } else { 10 },
        table: !args.json,
    };
    if args.preset.is_some() {
        return measure_gpt2_small(&plan, &device, &args.device);
    }
    let model = args.model(CONTEXTS[CONTEXTS.len() - 1]);
    plan.say(format!(
        "tinygpt bench: backend {}; model D=128 H=4 H_kv={} L=4 V={VOCAB}, {} positions; median \
         of {} runs ({} for training) after {} warm-up",
        tinygpt::device::describe(&args.device, &device),
        model.kv_heads(),
        model.position,
        plan.repeats,
        plan.train_repeats,
        plan.warmup
    ));

    if args.only == "cached" {
        // For a profiler: cached decode steps only, a thousand at each context.
        let plan = Plan {
            repeats: 1000,
            ..plan
        };
        let mut decoder = Decoder::with_config(&model, &device)?;
        for context in CONTEXTS {
            let rate = cached_rate(&plan, &mut decoder, context)?;
            plan.say(format!("cached decoding at {context}: {rate:.0} tokens/s"));
        }
        let rate = batched_rate(&plan, &model, &device)?;
        plan.say(format!(
            "cached decoding, {DECODE_BATCH} rows at {DECODE_BATCH_CONTEXT}: {rate:.0} tokens/s"
        ));
        return Ok(());
    }

    // The matrix-product rate the figures are set against, on the same backend and threads.
    let peak = matmul_gflops(2048, &device);
    plan.say(format!(
        "f32 matrix product (2048², best of 5): {peak:.0} GFLOP/s, the peak each share is of"
    ));
    let mut figures = vec![Figure::new("matmul_gflops", None, None, peak)];
    let wanted = |workload: &str| args.only == "all" || args.only == workload;
    if args.no_kernels {
        plan.say("kernels off (--no-kernels): Burn's own ops throughout".into());
    } else if tinygpt::kernels::runs_on(&device, burn::tensor::DType::F32) && wanted("train") {
        plan.say("kernels on: training time against Burn's own ops in the same run".into());
    }
    if wanted("train") {
        figures.push(training(&plan, &args.model(TRAIN_SEQ), &device, peak)?);
    }
    let mut decoder = Decoder::with_config(&model, &device)?;
    if wanted("prefill") {
        let figure = prefill(&plan, &mut decoder)?;
        figures.push(figure.with_flops(forward_flops(&model, PREFILL), peak));
    }
    if wanted("decode") {
        plan.say(format!(
            "\n{:>8} {:>14} {:>14} {:>9} {:>12} {:>12}",
            "context", "cached tok/s", "naive tok/s", "speedup", "KV bytes", "2LBHkvDhS4"
        ));
        for context in CONTEXTS {
            let [cached, naive, bytes] = decode(&plan, &mut decoder, context)?;
            let cached = cached.with_flops(forward_flops(&model, context), peak);
            let naive = naive.with_flops(context as f64 * forward_flops(&model, context), peak);
            plan.say(format!(
                "{:>8} cached {}, naive {}",
                "",
                cached.rate(),
                naive.rate()
            ));
            figures.extend([cached, naive, bytes]);
        }
        let figure = Figure {
            batch: Some(DECODE_BATCH),
            ..Figure::new(
                "decode_tokens_per_s",
                Some("cached"),
                Some(DECODE_BATCH_CONTEXT),
                batched_rate(&plan, &model, &device)?,
            )
        }
        .with_flops(forward_flops(&model, DECODE_BATCH_CONTEXT), peak);
        plan.say(format!(
            "\ncached decoding, {DECODE_BATCH} rows at context {DECODE_BATCH_CONTEXT}: {:>9.0} \
             tokens/s over all rows  {}",
            figure.value,
            figure.rate()
        ));
        figures.push(figure);
    }

    plan.say(String::new());
    for figure in &figures {
        println!("{}", serde_json::to_string(figure)?);
    }
    Ok(())
}

/// The `gpt2-small` preset: prefill, cached decoding at 512 and 1,024, bytes and peak memory.
fn measure_gpt2_small(
    plan: &Plan,
    device: &burn::tensor::Device,
    name: &str,
) -> anyhow::Result<()> {
    let config = gpt2_small();
    let parameters = tinygpt::memory::parameters(&config);
    plan.say(format!(
        "tinygpt bench, gpt2-small: backend {}; V={} D={} H={} L={}, {} positions, {:.1}M \
         parameters (random); median of {} runs after {} warm-up",
        tinygpt::device::describe(name, device),
        config.vocab_size,
        config.d_model,
        config.n_heads,
        config.n_layers,
        config.max_seq_len,
        parameters / 1e6,
        plan.repeats,
        plan.warmup
    ));
    let mut decoder = Decoder::with_config(&config, device)?;
    let mut figures = vec![Figure::new("weights_bytes", None, None, parameters * 4.0)];
    figures.push(prefill(plan, &mut decoder)?);
    plan.say(format!(
        "\n{:>8} {:>14} {:>12} {:>12}",
        "context", "cached tok/s", "KV bytes", "2LBHkvDhS4"
    ));
    for context in [512, 1024] {
        let cached = cached_rate(plan, &mut decoder, context)?;
        let bytes = cache_bytes(&mut decoder, context)?;
        plan.say(format!(
            "{context:>8} {cached:>14.1} {:>12} {:>12.0}",
            bytes.value,
            bytes.formula.unwrap_or_default()
        ));
        figures.push(Figure::new(
            "decode_tokens_per_s",
            Some("cached"),
            Some(context),
            cached,
        ));
        figures.push(bytes);
    }
    if let Some(peak) = peak_rss_bytes() {
        plan.say(format!(
            "\npeak memory (VmHWM): {:.0} MiB",
            peak / (1 << 20) as f64
        ));
        figures.push(Figure::new("peak_rss_bytes", None, None, peak));
    }
    plan.say(String::new());
    for figure in &figures {
        println!("{}", serde_json::to_string(figure)?);
    }
    Ok(())
}

/// The process's peak resident memory (Linux's `VmHWM`), if the system says.
fn peak_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

fn training(
    plan: &Plan,
    config: &GptConfig,
    device: &burn::tensor::Device,
    peak: f64,
) -> tinygpt::Result<Figure> {
    let mut train = TrainStep::with_config(config, device)?;
    let seconds = median_seconds(plan.warmup, plan.train_repeats, || train.run())?;
    let rate = train.tokens() as f64 / seconds;
    let figure = Figure::new("train_tokens_per_s", None, None, rate)
        .with_flops(3.0 * forward_flops(config, TRAIN_SEQ), peak);
    plan.say(format!(
        "\ntraining step (B={TRAIN_BATCH}, T={TRAIN_SEQ}):      {rate:>9.0} tokens/s  ({:.1} ms/step)  {}",
        seconds * 1e3,
        figure.rate()
    ));
    if plan.table && tinygpt::kernels::runs_on(device, burn::tensor::DType::F32) {
        // The same step with the kernels off, timed alternately with the kernels on so both
        // see the same machine: the ratio is the kernels' own gain.
        let mut with_kernels = Vec::new();
        let mut without = Vec::new();
        for _ in 0..plan.train_repeats {
            with_kernels.push(median_seconds(0, 1, || train.run())?);
            without.push(tinygpt::kernels::without_kernels(|| {
                median_seconds(0, 1, || train.run())
            })?);
        }
        let (with_kernels, without) = (median(with_kernels), median(without));
        plan.say(format!(
            "  same step, Burn's own ops:       {:>9.0} tokens/s  ({:.1} ms/step; kernels {:.2}x)",
            train.tokens() as f64 / without,
            without * 1e3,
            without / with_kernels
        ));
    }
    Ok(figure)
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn prefill(plan: &Plan, decoder: &mut Decoder) -> tinygpt::Result<Figure> {
    let seconds = median_seconds(plan.warmup, plan.repeats, || decoder.prefill())?;
    let rate = PREFILL as f64 / seconds;
    plan.say(format!(
        "prefill ({PREFILL} tokens):             {rate:>9.0} tokens/s  ({:.2} ms)",
        seconds * 1e3
    ));
    Ok(Figure::new("prefill_tokens_per_s", None, None, rate))
}

/// Cached and naive decode steps at `context`, and the cache's bytes there.
fn decode(plan: &Plan, decoder: &mut Decoder, context: usize) -> tinygpt::Result<[Figure; 3]> {
    let cached = cached_rate(plan, decoder, context)?;
    // The naive step costs about as much as a prefill of the whole context, so fewer runs.
    let naive_repeats = if context >= 2048 {
        plan.repeats.div_ceil(4)
    } else {
        plan.repeats
    };
    let naive = 1.0
        / median_seconds(plan.warmup.min(1), naive_repeats, || {
            decoder.naive_step(context)
        })?;
    let bytes = cache_bytes(decoder, context)?;
    plan.say(format!(
        "{context:>8} {cached:>14.0} {naive:>14.1} {:>8.1}x {:>12} {:>12.0}",
        cached / naive,
        bytes.value,
        bytes.formula.unwrap_or_default()
    ));
    Ok([
        Figure::new("decode_tokens_per_s", Some("cached"), Some(context), cached),
        Figure::new("decode_tokens_per_s", Some("naive"), Some(context), naive),
        bytes,
    ])
}

/// Cached decoding of [`DECODE_BATCH`] rows at once at [`DECODE_BATCH_CONTEXT`], in tokens/s
/// over all rows.
fn batched_rate(
    plan: &Plan,
    model: &GptConfig,
    device: &burn::tensor::Device,
) -> tinygpt::Result<f64> {
    let mut batched = Decoder::with_rows(model, DECODE_BATCH, device)?;
    Ok(cached_rate(plan, &mut batched, DECODE_BATCH_CONTEXT)? * DECODE_BATCH as f64)
}

/// Cached decode steps per second at `context` (the cache filled to `context - 1` first), each
/// step decoding one token for every row of the decoder.
fn cached_rate(plan: &Plan, decoder: &mut Decoder, context: usize) -> tinygpt::Result<f64> {
    decoder.fill(context - 1)?;
    Ok(1.0 / median_seconds(plan.warmup, plan.repeats, || decoder.cached_step(context))?)
}

/// The cache's bytes holding `context` positions, measured from its tensors, beside the
/// formula `2·L·B·H_kv·Dh·S·4`.
fn cache_bytes(decoder: &mut Decoder, context: usize) -> tinygpt::Result<Figure> {
    decoder.fill(context)?;
    let measured = decoder.cache_bytes();
    let config = decoder.config();
    let formula =
        (2 * config.n_layers * config.kv_heads() * config.head_dim() * context * 4) as f64;
    Ok(Figure {
        formula: Some(formula),
        ..Figure::new("kv_cache_bytes", None, Some(context), measured as f64)
    })
}

/// Median wall time of `repeats` runs of `work`, after `warmup` untimed ones.
fn median_seconds<T>(
    warmup: usize,
    repeats: usize,
    mut work: impl FnMut() -> tinygpt::Result<T>,
) -> tinygpt::Result<f64> {
    for _ in 0..warmup {
        work()?;
    }
    let mut times = Vec::with_capacity(repeats.max(1));
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        work()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(times))
}
