//! The failure gallery: every classic attention bug, made to happen on a freshly trained small
//! model (or a checkpoint), with what a learner sees and the check that catches it.
//!
//! `cargo run --release --example faults -- [--fault NAME] [--checkpoint DIR] [--device NAME]`
//!
//! The bugs are planted into a copy of the model (`Gpt::with_fault`, or a leaky mask); the
//! model itself, and every other command, runs the correct code.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use tinygpt::faults::{Divergence, Exhibit, Outcome, divergence, show};
use tinygpt::text::{BUNDLED_CORPUS, TextDataset, Tokenizer};
use tinygpt::train::{TrainConfig, checkpoint, train};
use tinygpt::{Gpt, GptConfig};

#[derive(Parser)]
#[command(about = "Plant each classic attention bug and show what catches it")]
struct Args {
    /// Show only this exhibit: transposed-key, missing-merge, cache-wrong-axis, stale-cache,
    /// positions-restart, or a leaky mask as mask-unmasked, mask-flipped, mask-off-by-one,
    /// mask-after-softmax. Default: all of them, then the table.
    #[arg(long)]
    fault: Option<String>,
    /// Use this checkpoint instead of training a small model first.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Training steps of the small model (when no checkpoint is given).
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// The prompt the faults run on.
    #[arg(long, default_value = "the old cat ")]
    prompt: String,
    /// Tokens decoded after the prompt, cached and naive.
    #[arg(long, default_value_t = 40)]
    decode: usize,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() -> std::process::ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    // Ctrl-C stops the small model's training; its scratch directory is removed on the way out.
    common::catch_ctrl_c();
    let args = Args::parse();
    let exhibits = match &args.fault {
        Some(name) => vec![Exhibit::from_name(name).context("--fault")?],
        None => Exhibit::all(),
    };
    if args.decode == 0 {
        bail!("--decode must be at least 1: the cache faults show in decode steps");
    }
    if args.steps == 0 && args.checkpoint.is_none() {
        bail!("--steps must be at least 1 to train the small model (or give --checkpoint)");
    }
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let (model, tokenizer) = model(&args, &device)?;
    let prompt = tokenizer.encode(&args.prompt).context("--prompt")?;
    if prompt.len() < 2 || prompt.len() + args.decode > model.config().max_seq_len {
        bail!(
            "--prompt needs at least 2 characters, and with --decode at most {} in all (the \
             model's context); got {} + {}",
            model.config().max_seq_len,
            prompt.len(),
            args.decode
        );
    }
    let config = model.config();
    println!(
        "model: D={} H={} Dh={} L={} context {}; prompt {:?} ({} tokens), {} tokens decoded\n",
        config.d_model,
        config.n_heads,
        config.head_dim(),
        config.n_layers,
        config.max_seq_len,
        args.prompt,
        prompt.len(),
        args.decode
    );

    // The cache exhibits compare cached with naive decoding, which only means something for a
    // model whose cache is valid: with a leaky mask a full recompute lets earlier positions see
    // later tokens, so the two differ without any fault.
    let fails_unplanted = config.mask_mode.is_leaky();
    if fails_unplanted {
        let unplanted = divergence(&model, &prompt, args.decode, &device)?;
        let parted = match unplanted.first_step {
            Some(step) => format!(
                "here they part at step {step} without any fault (max |Δ logit| {:.3})",
                unplanted.max_abs_diff
            ),
            None => "here they happen to agree within 1e-4, which proves nothing".into(),
        };
        println!(
            "note: this model's {} mask leaks the future, so its KV cache is not valid and \
             cached == naive is no check of it ({parted}): the cache and position exhibits are \
             not valid on this model\n",
            config.mask_mode
        );
    }
    let mut rows = Vec::new();
    for exhibit in exhibits {
        if common::interrupted() {
            bail!("interrupted");
        }
        let outcome = show(exhibit, &model, &prompt, args.decode, &device)?;
        println!("== {} ==", exhibit.name());
        println!(
            "symptom: {}  |  inspect first: {}",
            exhibit.symptom(),
            exhibit.inspect()
        );
        let mut seen = describe(&outcome, &tokenizer, &args.prompt);
        let mut caught_by = exhibit.caught_by().to_string();
        if fails_unplanted && matches!(outcome, Outcome::Decoded(_)) {
            println!("not valid on this model: it fails this check without the fault too");
            seen = format!("not valid on this model ({seen})");
            caught_by = "(not valid: the model fails it unplanted)".into();
        }
        println!("caught by: {caught_by}\n");
        rows.push((exhibit, seen, caught_by));
    }
    if rows.len() > 1 {
        println!("| exhibit | symptom | what the learner sees | caught by |");
        println!("|---|---|---|---|");
        for (exhibit, seen, caught_by) in rows {
            println!(
                "| {} | {} | {seen} | {caught_by} |",
                exhibit.name(),
                exhibit.symptom(),
            );
        }
    }
    Ok(())
}

/// Print what `outcome` shows a learner; return it in one line for the table.
fn describe(outcome: &Outcome, tokenizer: &Tokenizer, prompt: &str) -> String {
    match outcome {
        Outcome::Refused(err) => {
            println!("the crate refuses the call:\n  {err}");
            format!("error: {}", err.to_string().split(';').next().unwrap_or(""))
        }
        Outcome::Probed(report) => {
            println!(
                "causality probe: changing token j moved the logits before j at {}/{} positions \
                 (max |Δ logit| {}; the correct mask: 0)",
                report.violations,
                report.positions_probed,
                figure(report.max_leak)
            );
            format!(
                "{}/{} positions see the future",
                report.violations, report.positions_probed
            )
        }
        Outcome::Decoded(divergence) => describe_divergence(divergence, tokenizer, prompt),
    }
}

fn describe_divergence(divergence: &Divergence, tokenizer: &Tokenizer, prompt: &str) -> String {
    let lens = |lens: &[usize]| {
        let shown: Vec<String> = lens.iter().map(usize::to_string).collect();
        shown.join(" ")
    };
    let parted = match divergence.first_step {
        Some(0) => format!(
            "at the prefill, max |Δ logit| {}",
            figure(divergence.max_abs_diff)
        ),
        Some(step) => format!(
            "at decode step {step}, max |Δ logit| {}",
            figure(divergence.max_abs_diff)
        ),
        None => "never (within 1e-4)".into(),
    };
    println!("cached and naive decoding part {parted}");
    println!(
        "cache length after the prefill and each decode step:\n  got      {}\n  expected {}",
        lens(&divergence.cache_lens),
        lens(&divergence.expected_cache_lens)
    );
    let text = |tokens: &[usize]| format!("{:?}", format!("{prompt}{}", tokenizer.decode(tokens)));
    println!("  naive : {}", text(&divergence.naive_tokens));
    println!("  cached: {}", text(&divergence.cached_tokens));
    let last = |lens: &[usize]| lens.last().copied().unwrap_or(0);
    // The table's cells cannot hold `|`.
    format!(
        "part {}; cache length {} (expected {})",
        parted.replace("|Δ logit|", "Δ logit"),
        last(&divergence.cache_lens),
        last(&divergence.expected_cache_lens)
    )
}

/// A difference of logits, to three decimals, or in scientific notation when that would show
/// only zeros.
fn figure(value: f32) -> String {
    if value != 0.0 && value.abs() < 1e-3 {
        format!("{value:.1e}")
    } else {
        format!("{value:.3}")
    }
}

/// Remove the scratch directories of earlier runs that were killed outright (a signal that
/// could not be caught), named for their process, which no longer runs.
fn remove_stale_scratch() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("tinygpt-faults-")
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = cfg!(target_os = "linux") && !Path::new(&format!("/proc/{pid}")).exists();
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A scratch directory, removed when dropped (at the end, after an error, or after Ctrl-C).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The checkpoint's model, or a small model trained now on the bundled corpus.
fn model(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<(Gpt, Tokenizer)> {
    if let Some(path) = &args.checkpoint {
        let loaded = checkpoint::load(path, device).context("--checkpoint")?;
        return Ok((loaded.model, loaded.tokenizer));
    }
    let seq_len = 64;
    let dataset = TextDataset::new(BUNDLED_CORPUS, seq_len)?;
    let config = GptConfig::new(dataset.tokenizer().vocab_size())
        .with_n_layers(2)
        .with_max_seq_len(seq_len);
    let train_config = TrainConfig::new()
        .with_steps(args.steps)
        .with_batch_size(16)
        .with_seq_len(seq_len)
        .with_learning_rate(3e-3)
        .with_min_learning_rate(3e-4)
        .with_warmup_steps((args.steps / 10).clamp(1, 100))
        .with_eval_interval(args.steps.max(1));
    // A scratch run directory: the gallery needs the weights, not the files.
    remove_stale_scratch();
    let scratch =
        Scratch(std::env::temp_dir().join(format!("tinygpt-faults-{}", std::process::id())));
    let started = Instant::now();
    let outcome = train(
        &scratch.0,
        &config,
        &train_config,
        &dataset,
        device,
        false,
        &mut |_| match common::interrupted() {
            true => std::ops::ControlFlow::Break(()),
            false => std::ops::ControlFlow::Continue(()),
        },
    )?;
    if outcome.steps < args.steps {
        bail!("interrupted at step {} of {}", outcome.steps, args.steps);
    }
    println!(
        "trained a small model for {} steps in {:.0} s (validation loss {:.3})",
        outcome.steps,
        started.elapsed().as_secs_f64(),
        outcome
            .history
            .last()
            .map_or(f32::NAN, |eval| eval.val_loss)
    );
    Ok((outcome.model, dataset.tokenizer().clone()))
}
