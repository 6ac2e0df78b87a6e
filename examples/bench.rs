//! Speed and memory figures: training tokens/s, prefill tokens/s, decode tokens/s with and
//! without the KV cache at contexts 128, 512 and 2048, and the cache's bytes. Prints a table,
//! then one JSON object per figure; `--json` prints only the JSON lines.
//!
//! `cargo run --release --example bench -- [--quick] [--json] [--device NAME]`
//!
//! Timing: each workload runs `warmup` times untimed, then `repeats` times timed one by one;
//! the figure is from the median run. `bench/pytorch_bench.py` times PyTorch the same way.

#[path = "../benches/workloads.rs"]
mod workloads;

use std::time::Instant;

use clap::Parser;
use serde::Serialize;
use workloads::{CONTEXTS, Decoder, PREFILL, TrainStep};

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
    /// For `kv_cache_bytes`: `2·L·B·H·Dh·S·4` beside the measured value.
    #[serde(skip_serializing_if = "Option::is_none")]
    formula: Option<f64>,
}

/// Runs per workload.
struct Plan {
    warmup: usize,
    repeats: usize,
    train_repeats: usize,
}

fn main() {
    let args = Args::parse();
    let device = match tinygpt::device::device_by_name(&args.device) {
        Ok(device) => device,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    };
    let plan = if args.quick {
        Plan {
            warmup: 1,
            repeats: 3,
            train_repeats: 2,
        }
    } else {
        Plan {
            warmup: 3,
            repeats: 20,
            train_repeats: 10,
        }
    };
    let say = |line: String| {
        if !args.json {
            println!("{line}");
        }
    };
    say(format!(
        "tinygpt bench: backend {}; model D=128 H=4 L=4 V={}; median of {} runs ({} for training) \
         after {} warm-up",
        tinygpt::device::describe(&args.device, &device),
        workloads::VOCAB,
        plan.repeats,
        plan.train_repeats,
        plan.warmup
    ));

    let mut figures = Vec::new();
    let mut train = TrainStep::new(&device);
    let seconds = median_seconds(plan.warmup, plan.train_repeats, || {
        train.run();
    });
    let train_rate = train.tokens() as f64 / seconds;
    figures.push(figure("train_tokens_per_s", None, None, train_rate));
    say(format!(
        "\ntraining step (B=32, T=128):      {:>9.0} tokens/s  ({:.1} ms/step)",
        train_rate,
        seconds * 1e3
    ));

    let mut decoder = Decoder::new(&device);
    let seconds = median_seconds(plan.warmup, plan.repeats, || {
        decoder.prefill();
    });
    let prefill_rate = PREFILL as f64 / seconds;
    figures.push(figure("prefill_tokens_per_s", None, None, prefill_rate));
    say(format!(
        "prefill (128 tokens):             {:>9.0} tokens/s  ({:.2} ms)",
        prefill_rate,
        seconds * 1e3
    ));

    say(format!(
        "\n{:>8} {:>14} {:>14} {:>9} {:>12} {:>12}",
        "context", "cached tok/s", "naive tok/s", "speedup", "KV bytes", "2LBHDhS4"
    ));
    let config = decoder.model.config().clone();
    for context in CONTEXTS {
        decoder.fill(context - 1);
        let cached = 1.0
            / median_seconds(plan.warmup, plan.repeats, || {
                decoder.cached_step(context);
            });
        // The naive step costs about as much as a prefill of the whole context, so fewer runs.
        let naive_repeats = if context >= 2048 {
            plan.repeats.div_ceil(4)
        } else {
            plan.repeats
        };
        let naive = 1.0
            / median_seconds(plan.warmup.min(1), naive_repeats, || {
                decoder.naive_step(context);
            });
        // The cache holding `context` positions, measured from its tensors.
        decoder.fill(context);
        let measured = decoder.cache_bytes();
        let formula =
            (2 * config.n_layers * config.n_heads * config.head_dim() * context * 4) as f64;
        figures.push(figure(
            "decode_tokens_per_s",
            Some("cached"),
            Some(context),
            cached,
        ));
        figures.push(figure(
            "decode_tokens_per_s",
            Some("naive"),
            Some(context),
            naive,
        ));
        figures.push(Figure {
            metric: "kv_cache_bytes",
            mode: None,
            context: Some(context),
            value: measured as f64,
            formula: Some(formula),
        });
        say(format!(
            "{context:>8} {cached:>14.0} {naive:>14.1} {:>8.1}x {measured:>12} {formula:>12.0}",
            cached / naive
        ));
    }

    say(String::new());
    for figure in &figures {
        println!(
            "{}",
            serde_json::to_string(figure).expect("a figure serialises")
        );
    }
}

fn figure(
    metric: &'static str,
    mode: Option<&'static str>,
    context: Option<usize>,
    value: f64,
) -> Figure {
    Figure {
        metric,
        mode,
        context,
        value,
        formula: None,
    }
}

/// Median wall time of `repeats` runs of `work`, after `warmup` untimed ones.
fn median_seconds(warmup: usize, repeats: usize, mut work: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        work();
    }
    let mut times: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
