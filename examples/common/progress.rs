//! The train example's progress: a bar per model, or log lines with `--quiet` (the explorer
//! shows the same while it trains its models).

use indicatif::{ProgressBar, ProgressStyle};
use tinygpt::leak::DemoEvent;
use tinygpt::train::TrainEvent;

/// A progress bar per model, or log lines with `--quiet`.
pub struct Progress {
    quiet: bool,
    bar: Option<(String, ProgressBar)>,
    /// The model whose measurements were announced last.
    measuring: Option<String>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bar: None,
            measuring: None,
        }
    }

    pub fn on_event(&mut self, name: &str, event: DemoEvent) {
        match event {
            DemoEvent::Train(TrainEvent::Step {
                step,
                total,
                loss,
                lr,
                tokens_per_s,
            }) => {
                if self.quiet {
                    return;
                }
                let bar = self.bar_for(name, total);
                bar.set_position(step as u64);
                bar.set_message(format!(
                    "loss {loss:.3}  lr {lr:.2e}  {tokens_per_s:>6.0} tok/s"
                ));
            }
            DemoEvent::Train(TrainEvent::Eval(record)) => {
                let bits = record
                    .bits_per_char
                    .map_or_else(String::new, |[train, val]| {
                        format!("  ({train:.3} / {val:.3} bits/char)")
                    });
                self.say(format!(
                    "[{name}] step {:>5}  train {:.4}  val {:.4}{bits}  lr {:.2e}  {:.0} tok/s",
                    record.step, record.train_loss, record.val_loss, record.lr, record.tokens_per_s
                ))
            }
            DemoEvent::Train(TrainEvent::Resumed { step, total }) => {
                self.say(format!("resuming {name} at step {step} of {total}"))
            }
            DemoEvent::Measuring if self.measuring.as_deref() != Some(name) => {
                self.finish();
                self.measuring = Some(name.to_string());
                self.say(format!(
                    "[{name}] measuring: honest loss, causality probe, samples"
                ));
            }
            DemoEvent::Measuring | DemoEvent::Training => {}
        }
    }

    /// A line above the progress bar, or on its own.
    fn say(&self, line: String) {
        match &self.bar {
            // A hidden bar (output is not a terminal) would swallow the line.
            Some((_, bar)) if !self.quiet && !bar.is_hidden() => bar.println(line),
            _ => println!("{line}"),
        }
    }

    fn bar_for(&mut self, name: &str, total: usize) -> &ProgressBar {
        if self.bar.as_ref().is_none_or(|(current, _)| current != name) {
            self.finish();
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} [{bar:30}] {pos}/{len} {msg}  ETA {eta}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(name.to_string());
            self.bar = Some((name.to_string(), bar));
        }
        &self.bar.as_ref().expect("just set").1
    }

    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish();
        }
    }
}
