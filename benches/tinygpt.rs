//! Criterion benchmarks: one training step, prefill, and one decode step at contexts 128, 512
//! and 2048, cached and naive (see `tinygpt::bench` for the shapes).
//!
//! `cargo bench` runs them on the default backend; `TINYGPT_BENCH_DEVICE=ndarray cargo bench
//! --features ndarray` on another compiled-in one. `cargo run --release --example bench`
//! prints the same figures as tokens per second, with the KV cache's memory.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tinygpt::bench::{CONTEXTS, Decoder, PREFILL, TrainStep};

fn device() -> burn::tensor::Device {
    let name = std::env::var("TINYGPT_BENCH_DEVICE").unwrap_or_else(|_| "default".into());
    tinygpt::device::device_by_name(&name).unwrap_or_else(|err| panic!("{err}"))
}

fn training(c: &mut Criterion) {
    let mut step = TrainStep::new(&device()).expect("the benchmark model builds");
    let mut group = c.benchmark_group("train_step");
    group.throughput(Throughput::Elements(step.tokens() as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("B32_T128", |b| {
        b.iter(|| black_box(step.run().expect("a training step")))
    });
    group.finish();
}

fn inference(c: &mut Criterion) {
    let mut decoder = Decoder::new(&device()).expect("the benchmark model builds");
    let mut group = c.benchmark_group("prefill");
    group.throughput(Throughput::Elements(PREFILL as u64));
    group.bench_function("128", |b| {
        b.iter(|| black_box(decoder.prefill().expect("prefill")))
    });
    group.finish();

    let mut group = c.benchmark_group("decode_step");
    group.throughput(Throughput::Elements(1));
    for context in CONTEXTS {
        decoder.fill(context - 1).expect("fill the cache");
        group.bench_with_input(
            BenchmarkId::new("cached", context),
            &context,
            |b, &context| {
                b.iter(|| black_box(decoder.cached_step(context).expect("a cached step")))
            },
        );
    }
    group.sample_size(10);
    for context in CONTEXTS {
        group.bench_with_input(
            BenchmarkId::new("naive", context),
            &context,
            |b, &context| b.iter(|| black_box(decoder.naive_step(context).expect("a naive step"))),
        );
    }
    group.finish();
}

criterion_group!(benches, training, inference);
criterion_main!(benches);
