//! Measures the two ways a KV cache can grow by one position per decode step, on the same
//! shapes, so the choice in `src/model/cache.rs` rests on figures rather than taste:
//!
//! - **pre-allocated**: one `[B, H, capacity, Dh]` buffer per layer, the new row written with
//!   `slice_assign`, the prefix read with `slice`;
//! - **concatenation**: `cat([old, new])` along the time axis, which copies the whole cache.
//!
//! Each step also runs the attention reads (`q · Kᵀ`, `weights · V`) so the cost of reading a
//! sliced prefix is counted too.
//!
//! `cargo run --release --example kv_append -- [--device NAME] [--steps N]`

mod common;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Time pre-allocated vs concatenated KV-cache appends")]
struct Args {
    /// Backend to run on (see `tinygpt::device`).
    #[arg(long, default_value = "default")]
    device: String,
    /// Decode steps per run (1 to 16384); the cache ends this long.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=16384))]
    steps: u64,
    /// Timed repetitions; the fastest is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    repeats: u64,
}

const LAYERS: usize = 4;
const HEADS: usize = 4;
const HEAD_DIM: usize = 32;

/// Attention of one query over the visible keys and values, read back to force the work.
fn attend(q: &Tensor<4>, keys: Tensor<4>, values: Tensor<4>) -> Tensor<4> {
    let scores = q.clone().matmul(keys.swap_dims(2, 3));
    softmax(scores, 3).matmul(values)
}

fn run_preallocated(steps: usize, device: &Device) -> f64 {
    let shape = [1, HEADS, steps, HEAD_DIM];
    let mut caches: Vec<[Tensor<4>; 2]> = (0..LAYERS)
        .map(|_| [Tensor::zeros(shape, device), Tensor::zeros(shape, device)])
        .collect();
    let row = Tensor::<4>::ones([1, HEADS, 1, HEAD_DIM], device);
    let start = Instant::now();
    for len in 0..steps {
        let mut out = row.clone();
        for [keys, values] in caches.iter_mut() {
            let slot = [0..1, 0..HEADS, len..len + 1, 0..HEAD_DIM];
            let visible = [0..1, 0..HEADS, 0..len + 1, 0..HEAD_DIM];
            *keys = std::mem::replace(keys, row.clone()).slice_assign(slot.clone(), row.clone());
            *values = std::mem::replace(values, row.clone()).slice_assign(slot, row.clone());
            out = attend(
                &out,
                keys.clone().slice(visible.clone()),
                values.clone().slice(visible),
            );
        }
        out.into_data();
    }
    start.elapsed().as_secs_f64()
}

fn run_concatenated(steps: usize, device: &Device) -> f64 {
    let row = Tensor::<4>::ones([1, HEADS, 1, HEAD_DIM], device);
    let mut caches: Vec<Option<[Tensor<4>; 2]>> = (0..LAYERS).map(|_| None).collect();
    let start = Instant::now();
    for _ in 0..steps {
        let mut out = row.clone();
        for cache in caches.iter_mut() {
            let [keys, values] = match cache.take() {
                Some([k, v]) => [
                    Tensor::cat(vec![k, row.clone()], 2),
                    Tensor::cat(vec![v, row.clone()], 2),
                ],
                None => [row.clone(), row.clone()],
            };
            out = attend(&out, keys.clone(), values.clone());
            *cache = Some([keys, values]);
        }
        out.into_data();
    }
    start.elapsed().as_secs_f64()
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    println!(
        "backend {}; {LAYERS} layers x K and V of [1, {HEADS}, S, {HEAD_DIM}], {} decode steps (S = 1..={}), best of {}",
        tinygpt::device::describe(&args.device, &device),
        args.steps,
        args.steps,
        args.repeats
    );
    let steps = args.steps as usize;
    // Concatenation is quadratic in the steps: at the top of the range a run takes minutes, so
    // each one is announced.
    let best = |name: &str, f: fn(usize, &Device) -> f64| {
        (1..=args.repeats)
            .map(|repeat| {
                eprintln!("  {name}: run {repeat} of {}", args.repeats);
                f(steps, &device)
            })
            .fold(f64::INFINITY, f64::min)
    };
    let prealloc = best("pre-allocated", run_preallocated);
    let concat = best("concatenation", run_concatenated);
    let per_step = |secs: f64| secs * 1e6 / steps as f64;
    println!(
        "pre-allocated + slice_assign: {:8.1} µs/step",
        per_step(prealloc)
    );
    println!(
        "concatenation:                {:8.1} µs/step",
        per_step(concat)
    );
    println!("concatenation / pre-allocated: {:.2}x", concat / prealloc);
    Ok(())
}
