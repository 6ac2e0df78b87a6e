//! The explorer: a local web page that shows the mechanism live, on your own model.
//!
//! `cargo run --release --example explore -- [--checkpoint DIR] [--leaky DIR] [--port N]
//!  [--host ADDR] [--device NAME]`
//!
//! Without checkpoints it trains a small causal model and its unmasked twin on the bundled
//! corpus first (into `--out`, `runs/explore` by default), or reuses the ones it trained
//! before. Then it serves the page and its JSON API (see `tinygpt::explore`) on
//! `http://127.0.0.1:PORT/` until Ctrl-C.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Parser;
use tinygpt::explore::{Explorer, Loaded, bind, router, serve};
use tinygpt::leak::{self, DemoConfig};
use tinygpt::text::BUNDLED_CORPUS;
use tinygpt::train::{TrainConfig, checkpoint};
use tinygpt::{GptConfig, MaskMode};

#[derive(Parser)]
#[command(
    about = "Serve the tinygpt explorer: generation, attention, the leak and the failure gallery, live"
)]
struct Args {
    /// The causal model's run directory (default: train one, or reuse the one in --out).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Its leaky twin's run directory (e.g. `runs/leak-unmasked`), for the leak view.
    #[arg(long, requires = "checkpoint")]
    leaky: Option<PathBuf>,
    /// Where the explorer's own models are trained when no checkpoint is given.
    #[arg(long, default_value = "runs/explore")]
    out: PathBuf,
    /// Training steps of the explorer's own models.
    #[arg(long, default_value_t = 400)]
    steps: usize,
    /// The port to serve on (0: any free one; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to serve on. Anything but a loopback address lets other machines in.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Backend: flex, ndarray, wgpu, wgpu-cpu, cuda, ... (compiled-in ones only).
    #[arg(long, default_value = "default")]
    device: String,
}

fn main() -> std::process::ExitCode {
    common::main(run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.host.is_loopback() {
        eprintln!(
            "warning: serving on {}: any machine that can reach it can use the explorer, which \
             has no authentication; use the default 127.0.0.1 unless you mean that",
            args.host
        );
    }
    common::burn_default_device(&args.device);
    let device = tinygpt::device::device_by_name(&args.device).context("--device")?;
    let (causal, leaky) = match &args.checkpoint {
        Some(dir) => (
            load(dir, &device).context("--checkpoint")?,
            match &args.leaky {
                Some(dir) => Some(load(dir, &device).context("--leaky")?),
                None => None,
            },
        ),
        None => {
            let (causal, leaky) = trained_pair(&args, &device)?;
            (causal, Some(leaky))
        }
    };
    if leaky
        .as_ref()
        .is_some_and(|leaky| !leaky.model.config().mask_mode.is_leaky())
    {
        bail!(
            "--leaky: that model's mask is causal; give a run trained with `--leak unmasked` (or another leak)"
        );
    }
    let explorer = Explorer::new(causal, leaky, device);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
        let listener = bind(SocketAddr::new(args.host, args.port)).await?;
        let address = listener.local_addr()?;
        println!("explorer at http://{address}/ (Ctrl-C to stop)");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        serve(listener, router(explorer), shutdown).await?;
        anyhow::Ok(())
    })
}

fn load(dir: &Path, device: &burn::tensor::Device) -> anyhow::Result<Loaded> {
    let saved = checkpoint::load(dir, device)?;
    Ok(Loaded {
        model: saved.model,
        tokenizer: saved.tokenizer,
        step: saved.state.step,
        source: saved.dir.display().to_string(),
    })
}

/// The explorer's own causal model and unmasked twin: loaded when `--out` holds them trained,
/// trained (or finished) there otherwise, with a progress bar.
fn trained_pair(args: &Args, device: &burn::tensor::Device) -> anyhow::Result<(Loaded, Loaded)> {
    let dirs = [
        args.out.join("causal"),
        args.out.join(leak::run_name(MaskMode::Unmasked)),
    ];
    let finished = dirs
        .iter()
        .all(|dir| checkpoint::saved_step(dir).is_ok_and(|step| step == args.steps));
    if !finished {
        println!(
            "training the explorer's models in {} (a causal model and its unmasked twin, {} steps each)",
            args.out.display(),
            args.steps
        );
        let seq_len = 64;
        let model = GptConfig::new(1)
            .with_d_model(64)
            .with_n_heads(4)
            .with_n_layers(2)
            .with_max_seq_len(seq_len);
        let train = TrainConfig::new()
            .with_steps(args.steps)
            .with_batch_size(16)
            .with_seq_len(seq_len)
            .with_learning_rate(3e-3)
            .with_min_learning_rate(3e-4)
            .with_warmup_steps((args.steps / 10).clamp(1, 100))
            .with_eval_interval((args.steps / 4).max(1));
        let config = DemoConfig::new(args.out.clone(), model, train)
            .with_samples(2)
            .with_sample_chars(60)
            .with_resume(args.out.join(leak::MANIFEST_FILE).exists());
        common::catch_ctrl_c();
        let mut progress = common::progress::Progress::new(false);
        let result = leak::run(BUNDLED_CORPUS, &config, device, &mut |name, event| {
            progress.on_event(name, event);
            match common::interrupted() {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        });
        progress.finish();
        // The server answers Ctrl-C itself, by shutting down.
        common::release_ctrl_c();
        result.with_context(|| {
            format!(
                "training the explorer's models in --out {} (run the same command again to \
                 finish them)",
                args.out.display()
            )
        })?;
    }
    let [causal, leaky] = dirs;
    Ok((load(&causal, device)?, load(&leaky, device)?))
}
