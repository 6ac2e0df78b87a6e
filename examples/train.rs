//! Train a causal model and a leaky-mask twin side by side, then show with numbers and samples
//! why the leaky one's lower training loss is a lie.
//!
//! `cargo run --release --example train -- [--leak unmasked|flipped|off-by-one|after-softmax|all|off]
//!  [--data PATH] [--tokenizer char|bpe|gpt2] [--vocab-size N] [--out DIR] [--steps N]
//!  [--device NAME] [--quiet] [--resume | --force]`
//!
//! `--resume` continues the run in `--out` with the settings it was started with (kept in
//! `DIR/run.json`); more `--steps` may be asked for. Settings derived from the step count
//! (`--warmup-steps`, `--eval-interval`, the learning rate's decay) stay the run's own.

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use tinygpt::leak::{self, DemoConfig, DemoSummary, RunManifest, SUMMARY_FILE};
use tinygpt::text::{BUNDLED_CORPUS, TokenizerSpec, read_text};
use tinygpt::train::{ClipScope, TrainConfig};
use tinygpt::{GptConfig, MaskMode, PositionScheme};

#[derive(Parser)]
#[command(about = "Train causal and leaky-mask GPTs on the same data and compare them honestly")]
struct Args {
    /// Leaky twin(s) to train beside the causal model: unmasked, flipped, off-by-one,
    /// after-softmax (comma-separated), all of them, or off for the causal model alone.
    #[arg(long, default_value = "unmasked")]
    leak: String,
    /// UTF-8 text to train on (default: the bundled toy corpus, see data/README.md).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokenizer built from the text: char (one token per character), bpe (byte-level BPE
    /// trained on the text, --vocab-size tokens) or gpt2 (GPT-2's 50,257 tokens).
    #[arg(long, default_value = "char", value_parser = ["char", "bpe", "gpt2"])]
    tokenizer: String,
    /// Tokens of the bpe tokenizer (at least 256, the bytes). Default: 512.
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Directory for the runs: DIR/causal, DIR/leak-<mode>, DIR/summary.json, DIR/loss.png.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Training steps per model.
    #[arg(long, default_value_t = 900)]
    steps: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Tokens per window (and the model's context window).
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    /// Peak learning rate (the decay ends at a tenth of it).
    #[arg(long, default_value_t = 3e-3, allow_negative_numbers = true)]
    lr: f64,
    /// Steps of linear warmup to the peak rate. Default: a tenth of --steps (1 to 100).
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Evaluate, log and checkpoint every this many steps. Default: a tenth of --steps.
    #[arg(long)]
    eval_interval: Option<usize>,
    /// Clip the gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    grad_clip: f64,
    /// Model width.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    n_heads: usize,
    /// Key/value heads shared by the attention heads (grouped-query attention; 1 is
    /// multi-query attention; must divide --n-heads). Default: one per head (multi-head).
    #[arg(long)]
    kv_heads: Option<usize>,
    /// Blocks.
    #[arg(long, default_value_t = 2)]
    n_layers: usize,
    /// Where positions enter: `learned` (a table added to the embeddings, GPT-2's) or `rope`
    /// (rotary position embedding of queries and keys).
    #[arg(long, default_value = "learned")]
    position: PositionScheme,
    /// Tie the LM head to the token embedding (as GPT-2 and nanoGPT do).
    #[arg(long)]
    tie_embeddings: bool,
    /// Batches of each split averaged for every reported loss (more: a steadier estimate, e.g.
    /// 200 as nanoGPT's `eval_iters`).
    #[arg(long, default_value_t = 8)]
    eval_batches: usize,
    /// Seed for the weights, the data order and the samples.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Generated samples per model.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    /// Tokens per generated sample (characters, with --tokenizer char).
    #[arg(long, default_value_t = 200)]
    sample_chars: usize,
    /// Sampling temperature for the samples.
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true)]
    temperature: f64,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
    /// Continue every model in --out from where its run stopped (finished, part-way or not
    /// started), with the settings it was started with.
    #[arg(long, conflicts_with = "force")]
    resume: bool,
    /// Start afresh even if --out holds trained runs, replacing them.
    #[arg(long)]
    force: bool,
    /// Log lines instead of progress bars.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    // Ctrl-C stops training at the end of the step, with a checkpoint of it.
    common::catch_ctrl_c();
    let args = Args::parse();
    common::burn_default_device(&args.device);
    let leaks = parse_leaks(&args.leak)?;
    let tokenizer = TokenizerSpec::new(&args.tokenizer, args.vocab_size)
        .map_err(|err| anyhow::anyhow!("--tokenizer, --vocab-size: {err}"))?;
    let temperature = common::f32_flag("--temperature", args.temperature)?;
    let grad_clip = common::f32_flag("--grad-clip", args.grad_clip)?;
    let (text, grammar_check) = match &args.data {
        Some(path) => (read_text(path).context("--data")?, false),
        None => (BUNDLED_CORPUS.to_string(), true),
    };
    // A resumed run derives what it derives from its own step count, not from this one, and
    // keeps the settings no flag names (the clipping's scope).
    let run = if args.resume {
        RunManifest::run_settings(&args.out).context("--resume")?
    } else {
        None
    };
    let config = demo_config(
        &args,
        leaks,
        grammar_check,
        temperature,
        grad_clip,
        run.as_ref(),
    )
    .with_tokenizer(tokenizer);
    // Settings are checked before any training, so a typo costs seconds, not a trained model.
    config.validate().map_err(flag_error)?;
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let source = match &args.data {
        Some(path) => path.display().to_string(),
        None => "the bundled toy corpus".to_string(),
    };
    let models: String = std::iter::once("causal".to_string())
        .chain(config.leaks.iter().map(|&mode| leak::run_name(mode)))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "backend {}; training on {source} ({} characters, {tokenizer} tokenizer); models: \
         {models}; {} steps each, batch {} x {} tokens, D={} H={} H_kv={} L={}, {} positions",
        tinygpt::device::describe(&args.device, &device),
        text.chars().count(),
        args.steps,
        args.batch_size,
        args.seq_len,
        args.d_model,
        args.n_heads,
        args.kv_heads.unwrap_or(args.n_heads),
        args.n_layers,
        args.position,
    );

    let started = Instant::now();
    let mut progress = common::progress::Progress::new(args.quiet);
    let result = leak::run(&text, &config, &device, &mut |name, event| {
        progress.on_event(name, event);
        match common::interrupted() {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    });
    progress.finish();
    let summary = result.map_err(|err| with_hint(err, &args))?;
    print_summary(&summary);
    println!(
        "\nwrote {}, {} and the runs in {} ({:.0} s in all)",
        args.out.join(SUMMARY_FILE).display(),
        args.out.join("loss.png").display(),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The flag (or flags) behind each setting the library names in its messages.
const FLAGS: [(&str, &str); 24] = [
    ("tokenizer", "--tokenizer"),
    ("steps", "--steps"),
    ("decay_steps", "--steps"),
    ("seed", "--seed"),
    ("tie_embeddings", "--tie-embeddings"),
    ("position", "--position"),
    ("batch_size", "--batch-size"),
    ("seq_len", "--seq-len"),
    ("max_seq_len", "--seq-len"),
    ("learning_rate", "--lr"),
    ("min_learning_rate", "--lr"),
    ("warmup_steps", "--warmup-steps"),
    ("eval_interval", "--eval-interval"),
    ("eval_batches", "--eval-batches"),
    ("grad_clip", "--grad-clip"),
    ("d_model", "--d-model"),
    ("n_heads", "--n-heads"),
    ("n_kv_heads", "--kv-heads"),
    ("n_layers", "--n-layers"),
    ("vocab_size", "--data"),
    ("temperature", "--temperature"),
    ("samples", "--samples"),
    ("sample_chars", "--sample-chars"),
    ("rotary position embedding", "--position"),
];

/// The flags behind the settings a library message names.
fn flags_named(message: &str) -> Vec<&'static str> {
    let words: Vec<&str> = message
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    let mut flags: Vec<&str> = Vec::new();
    for (setting, flag) in FLAGS {
        let named = match setting.contains(' ') {
            true => message.contains(setting),
            false => words.contains(&setting),
        };
        if named && !flags.contains(&flag) {
            flags.push(flag);
        }
    }
    flags
}

/// A settings error, prefixed with the flags whose settings it names.
fn flag_error(err: tinygpt::Error) -> anyhow::Error {
    let flags = flags_named(&err.to_string());
    let context = match flags.is_empty() {
        true => "check the settings".to_string(),
        false => flags.join(", "),
    };
    anyhow::Error::new(err).context(context)
}

/// The error, with what to do about it on this command line.
fn with_hint(err: tinygpt::Error, args: &Args) -> anyhow::Error {
    let out = args.out.display();
    let hint = match &err {
        tinygpt::Error::RunExists { .. } => {
            format!("--out {out}: pass --resume to continue these runs, or --force to replace them")
        }
        tinygpt::Error::OutputExists { .. } => format!(
            "--out {out}: pass --resume to continue the run there, --force to replace it, or \
             pick another --out"
        ),
        tinygpt::Error::Interrupted { .. } => {
            format!("interrupted; run the same command with --resume to finish --out {out}")
        }
        tinygpt::Error::Diverged { .. } => format!(
            "try a lower --lr (now {:e}) or a lower --grad-clip (now {})",
            args.lr, args.grad_clip
        ),
        tinygpt::Error::Config(_) => return flag_error(err),
        tinygpt::Error::Checkpoint { .. } if args.resume => {
            let flags = flags_named(&err.to_string());
            match flags.is_empty() {
                true => format!("--resume --out {out}"),
                false => format!("--resume --out {out} ({})", flags.join(", ")),
            }
        }
        _ => format!("training into --out {out}"),
    };
    anyhow::Error::new(err).context(hint)
}

/// The leaky modes `--leak` names: `all`, `off`, or a list of leaky masks, each once.
fn parse_leaks(arg: &str) -> anyhow::Result<Vec<MaskMode>> {
    match arg {
        "all" => return Ok(MaskMode::LEAKY.to_vec()),
        "off" => return Ok(Vec::new()),
        // `none` named the unmasked model before 0.2; read as "no leaky twin" it would now
        // silently train something else, so it is refused with both meanings spelled out.
        "none" => bail!(
            "--leak none is ambiguous: use --leak unmasked for the twin with no mask (what \
             `none` meant before 0.2), or --leak off to train the causal model alone"
        ),
        _ => {}
    }
    let mut modes = Vec::new();
    for name in arg.split(',').map(str::trim) {
        match MaskMode::from_name(name) {
            Some(mode) if mode.is_leaky() && modes.contains(&mode) => {
                bail!("--leak {arg}: names {name} twice; give each leaky mask once")
            }
            Some(mode) if mode.is_leaky() => modes.push(mode),
            _ if matches!(name, "all" | "off" | "none") => bail!(
                "--leak {arg}: `{name}` stands on its own, not in a list; the list takes \
                 leaky masks: unmasked, flipped, off-by-one, after-softmax"
            ),
            _ => bail!(
                "--leak {arg}: `{name}` is not a leaky mask; choose from unmasked, flipped, \
                 off-by-one, after-softmax (a comma-separated list), or all, or off on its own"
            ),
        }
    }
    Ok(modes)
}

/// The run's settings from the flags. Those derived from the step count (warmup, evaluation
/// interval) come from the run's own manifest when resuming one, unless given.
fn demo_config(
    args: &Args,
    leaks: Vec<MaskMode>,
    grammar_check: bool,
    temperature: f32,
    grad_clip: f32,
    run: Option<&TrainConfig>,
) -> DemoConfig {
    let model = GptConfig::new(1)
        .with_d_model(args.d_model)
        .with_n_heads(args.n_heads)
        .with_n_kv_heads(args.kv_heads)
        .with_n_layers(args.n_layers)
        .with_max_seq_len(args.seq_len)
        .with_tie_embeddings(args.tie_embeddings)
        .with_position(args.position);
    let derived_warmup = (args.steps / 10).clamp(1, 100);
    let warmup = run.map_or(derived_warmup, |run| run.warmup_steps);
    let eval_interval = run.map_or((args.steps / 10).max(1), |run| run.eval_interval);
    let scope = run.map_or(ClipScope::Global, |run| run.grad_clip_scope);
    let train = TrainConfig::new()
        .with_grad_clip_scope(scope)
        .with_steps(args.steps)
        .with_batch_size(args.batch_size)
        .with_seq_len(args.seq_len)
        .with_learning_rate(args.lr)
        .with_min_learning_rate(args.lr / 10.0)
        .with_warmup_steps(args.warmup_steps.unwrap_or(warmup))
        .with_eval_interval(args.eval_interval.unwrap_or(eval_interval))
        .with_eval_batches(args.eval_batches)
        .with_grad_clip(grad_clip)
        .with_seed(args.seed);
    let data_source = args.data.as_ref().map_or_else(
        || "the bundled toy corpus".to_string(),
        |path| path.display().to_string(),
    );
    DemoConfig::new(args.out.clone(), model, train)
        .with_leaks(leaks)
        .with_samples(args.samples)
        .with_sample_chars(args.sample_chars)
        .with_temperature(temperature)
        .with_resume(args.resume)
        .with_force(args.force)
        .with_grammar_check(grammar_check)
        .with_data_source(data_source)
}

fn print_summary(summary: &DemoSummary) {
    let pct = |x: Option<f64>| x.map_or("  n/a".to_string(), |v| format!("{:>4.0}%", 100.0 * v));
    println!(
        "\n{:<20} {:>10} {:>9} {:>11} {:>16} {:>12} {:>7} {:>10} {:>7}",
        "model",
        "train loss",
        "val loss",
        "honest loss",
        "bits/char t/v/h",
        "causality",
        "words",
        "sentences",
        "time"
    );
    for m in &summary.models {
        let [train, val, honest] = m.bits_per_char;
        println!(
            "{:<20} {:>10.3} {:>9.3} {:>11.3} {:>16} {:>12} {:>7} {:>10} {:>6.0}s",
            m.name,
            m.train_loss,
            m.val_loss,
            m.honest_loss,
            format!("{train:.2}/{val:.2}/{honest:.2}"),
            format!("{}/{} leak", m.causality_violations, m.positions_probed),
            pct(Some(m.word_validity)),
            pct(m.sentence_validity),
            m.seconds
        );
    }
    for m in &summary.models {
        let generated = m.sample.strip_prefix(&m.sample_prompt).unwrap_or(&m.sample);
        println!(
            "\n--- sample from {} (prompt in brackets) ---\n[{}]{generated}",
            m.name, m.sample_prompt
        );
    }
    println!("\nverdict: {}", summary.verdict);
}
