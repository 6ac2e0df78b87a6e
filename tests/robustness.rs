//! The examples as an adversary meets them: runs that must always resume by the command the
//! tool suggests, files that are never lost or replaced unasked, results that say when they are
//! not valid for the model at hand, and settings checked over their whole domain before any
//! work starts. Each test is one case of a sweep of the release examples.

mod common;

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::cli::{
    assert_clear_error, checkpoint_step, cpu, example, fresh_dir, stderr, summary_models,
    tiny_train,
};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A run's saved training settings, as `state.json` holds them.
fn saved_train_config(run: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&text).unwrap();
    state["train_config"].clone()
}

fn generate(checkpoint: &Path) -> Command {
    let mut command = example("generate");
    command.args([
        "--checkpoint",
        checkpoint.to_str().unwrap(),
        "--device",
        cpu(),
    ]);
    command
}

/// Send `signal` to `child`.
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: sending a signal to our own child has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, signal);
    }
}

/// Spawn `command` with piped output and read standard output line by line until one contains
/// `marker` (or the output ends); returns the child and what was read.
fn spawn_until(command: &mut Command, marker: &str) -> (Child, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains(marker) {
            break;
        }
        line.clear();
    }
    // Keep draining in the background so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    (child, seen)
}

// 1. Resume refused about one learning rate in ten (a derived value compared after a float
// round trip).
#[test]
fn a_run_resumes_with_every_learning_rate_it_was_started_with() {
    for lr in ["0.0015", "0.0012", "0.0017", "0.0021", "0.0024", "1.5e-4"] {
        let out = fresh_dir(&format!("lr_{lr}"));
        let first = tiny_train(&out, &["--leak", "off", "--lr", lr]);
        assert!(first.status.success(), "{lr}: {}", stderr(&first));
        let again = tiny_train(&out, &["--leak", "off", "--lr", lr, "--resume"]);
        assert!(again.status.success(), "--lr {lr}: {}", stderr(&again));
    }
}

// 2. Resume with more --steps was refused (settings derived from the step count changed).
#[test]
fn a_run_resumes_with_more_steps_and_keeps_its_own_schedule() {
    let out = fresh_dir("more_steps");
    let first = tiny_train(&out, &["--leak", "off", "--steps", "20"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = saved_train_config(&out.join("causal"));
    let more = tiny_train(&out, &["--leak", "off", "--steps", "50", "--resume"]);
    assert!(more.status.success(), "{}", stderr(&more));
    assert_eq!(checkpoint_step(&out.join("causal")), 50);
    let after = saved_train_config(&out.join("causal"));
    for kept in ["warmup_steps", "eval_interval", "min_learning_rate"] {
        assert_eq!(after[kept], before[kept], "{kept} changed on resume");
    }
    // The resumed run says where each model continued from.
    assert!(
        stdout(&more).contains("resuming causal at step 20 of 50"),
        "{}",
        stdout(&more)
    );
    // Fewer steps than were taken cannot be asked for.
    let fewer = tiny_train(&out, &["--leak", "off", "--steps", "30", "--resume"]);
    assert_clear_error(&fewer, &["steps", "cannot be shortened"]);
}

// 3. Resume on another text with the same characters was accepted silently.
#[test]
fn resume_refuses_another_text_even_with_the_same_characters() {
    let out = fresh_dir("same_characters");
    let text = "the cat sat on the mat . ".repeat(30);
    let reversed: String = text.chars().rev().collect();
    let (first, second) = (out.join("first.txt"), out.join("reversed.txt"));
    std::fs::write(&first, &text).unwrap();
    std::fs::write(&second, &reversed).unwrap();
    let run = |data: &Path, resume: bool| {
        let mut args = vec!["--leak", "off", "--data", data.to_str().unwrap()];
        if resume {
            args.push("--resume");
        }
        tiny_train(&out, &args)
    };
    assert!(run(&first, false).status.success());
    let summary = std::fs::read(out.join("summary.json")).unwrap();
    assert_clear_error(&run(&second, true), &["training text", "sha256"]);
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), summary);
    assert!(run(&first, true).status.success());
}

// 4. `--force` then a kill left a mixed run that only another `--force` could end.
#[test]
fn a_forced_run_killed_and_resumed_is_the_new_run_throughout() {
    let out = fresh_dir("force_then_kill");
    let old = tiny_train(&out, &["--leak", "unmasked", "--lr", "0.003"]);
    assert!(old.status.success(), "{}", stderr(&old));
    let new_run = [
        "--leak",
        "unmasked",
        "--lr",
        "0.001",
        "--steps",
        "4000",
        "--eval-interval",
        "100",
    ];
    let mut forced = example("train");
    forced.args([
        "--out",
        out.to_str().unwrap(),
        "--device",
        cpu(),
        "--quiet",
        "--force",
    ]);
    forced.args([
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--d-model",
        "8",
        "--n-heads",
        "2",
    ]);
    forced.args(["--n-layers", "1", "--samples", "1", "--sample-chars", "4"]);
    forced.args(new_run);
    let (mut child, seen) = spawn_until(&mut forced, "[causal] step");
    assert!(seen.contains("[causal] step"), "{seen}");
    signal(&child, libc::SIGKILL);
    child.wait().unwrap();

    let mut resume = example("train");
    resume.args([
        "--out",
        out.to_str().unwrap(),
        "--device",
        cpu(),
        "--quiet",
        "--resume",
    ]);
    resume.args([
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--d-model",
        "8",
        "--n-heads",
        "2",
    ]);
    resume.args(["--n-layers", "1", "--samples", "1", "--sample-chars", "4"]);
    resume.args(new_run);
    let resumed = resume.output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(summary_models(&out), ["causal", "leak-unmasked"]);
    for model in ["causal", "leak-unmasked"] {
        let config = saved_train_config(&out.join(model));
        assert_eq!(config["learning_rate"], 0.001, "{model} is the old run's");
        assert_eq!(checkpoint_step(&out.join(model)), 4000, "{model}");
    }
}

// 5. A diverged run claimed a usable checkpoint whose losses were NaN.
#[test]
fn a_diverged_run_keeps_only_a_checkpoint_that_generates() {
    let out = fresh_dir("diverged");
    let diverged = tiny_train(&out, &["--leak", "off", "--steps", "10", "--lr", "1e30"]);
    assert_clear_error(&diverged, &["diverged", "--lr", "--grad-clip"]);
    let text = stderr(&diverged);
    if let Some(kept) = text.split("last good checkpoint (step ").nth(1) {
        let step: usize = kept.split(')').next().unwrap().parse().unwrap();
        assert_eq!(checkpoint_step(&out.join("causal")), step);
        let generated = generate(&out.join("causal"))
            .args(["--max-new-tokens", "4"])
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "the kept checkpoint does not generate: {}",
            stderr(&generated)
        );
    } else {
        assert!(text.contains("no checkpoint"), "{text}");
    }
}

// 6. `generate --heatmap existing.png` replaced the file.
#[test]
fn generate_never_replaces_a_heatmap_without_force() {
    let out = fresh_dir("heatmap_force");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let png = out.join("mine.png");
    std::fs::write(&png, "precious").unwrap();
    let run = |force: bool| {
        let mut command = generate(&out.join("causal"));
        command.args(["--max-new-tokens", "2", "--heatmap", png.to_str().unwrap()]);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    let refused = run(false);
    assert_clear_error(&refused, &["--heatmap", "exists", "--force"]);
    assert!(stdout(&refused).is_empty(), "it generated before refusing");
    assert_eq!(std::fs::read(&png).unwrap(), b"precious");
    assert!(run(true).status.success());
    assert_ne!(std::fs::read(&png).unwrap(), b"precious");
}

// 7. `export --out <the checkpoint's own model.bpk> --force` destroyed the checkpoint.
#[test]
fn export_never_writes_over_the_checkpoint_it_reads() {
    let out = fresh_dir("export_own_checkpoint");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let weights = out.join("causal/checkpoint/model.bpk");
    let before = std::fs::read(&weights).unwrap();
    for target in [
        weights.clone(),
        out.join("causal/checkpoint/notes.safetensors"),
    ] {
        let output = example("export")
            .args(["--checkpoint", out.join("causal").to_str().unwrap()])
            .args(["--out", target.to_str().unwrap(), "--force"])
            .output()
            .unwrap();
        assert_clear_error(&output, &["--out", "inside the checkpoint"]);
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    assert!(!out.join("causal/checkpoint/notes.safetensors").exists());
}

// 8. A tokenizer.json with a duplicated character loaded and decoded wrongly.
#[test]
fn a_tokenizer_with_a_repeated_character_is_refused_on_load() {
    let out = fresh_dir("duplicate_character");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let file = out.join("causal/checkpoint/tokenizer.json");
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let chars = tokenizer["chars"].as_array_mut().unwrap();
    chars[1] = chars[2].clone();
    std::fs::write(&file, tokenizer.to_string()).unwrap();
    let output = generate(&out.join("causal")).output().unwrap();
    assert_clear_error(&output, &["tokenizer.json", "twice"]);
}

// 9. `generate` on a leaky checkpoint used the KV cache without a word; `faults` on one
// reported the cache exhibits as caught when the model fails that check without any fault.
#[test]
fn results_not_valid_for_a_leaky_model_say_so() {
    let out = fresh_dir("leaky_results");
    assert!(tiny_train(&out, &["--leak", "unmasked"]).status.success());
    let leaky = out.join("leak-unmasked");
    let greedy = [
        "--temperature",
        "0",
        "--max-new-tokens",
        "12",
        "--prompt",
        "ab",
    ];
    let cached = generate(&leaky).args(greedy).output().unwrap();
    assert!(cached.status.success(), "{}", stderr(&cached));
    assert!(
        stderr(&cached).contains("KV cache is not valid"),
        "{}",
        stderr(&cached)
    );
    let naive = generate(&leaky)
        .args(greedy)
        .arg("--no-cache")
        .output()
        .unwrap();
    assert_eq!(
        stdout(&cached),
        stdout(&naive),
        "the default is not the model's text"
    );

    let faults = example("faults")
        .args(["--checkpoint", leaky.to_str().unwrap(), "--device", cpu()])
        .args(["--fault", "stale-cache", "--prompt", "ab", "--decode", "3"])
        .output()
        .unwrap();
    assert!(faults.status.success(), "{}", stderr(&faults));
    let text = stdout(&faults);
    assert!(text.contains("not valid on this model"), "{text}");
}

// 10. Ctrl-C during sampling went unacknowledged, and the next model started training.
#[test]
fn ctrl_c_while_measuring_stops_before_the_next_model() {
    let out = fresh_dir("ctrl_c_measuring");
    let mut command = example("train");
    command.args(["--out", out.to_str().unwrap(), "--device", cpu(), "--quiet"]);
    command.args([
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--d-model",
        "8",
    ]);
    command.args(["--n-heads", "2", "--n-layers", "1", "--leak", "unmasked"]);
    // Enough samples that the signal arrives while they are drawn.
    command.args(["--samples", "400", "--sample-chars", "400"]);
    let (child, seen) = spawn_until(&mut command, "[causal] measuring");
    assert!(seen.contains("[causal] measuring"), "{seen}");
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert_clear_error(&output, &["interrupted", "--resume"]);
    assert!(
        !out.join("leak-unmasked/checkpoint").exists(),
        "a step of the next model was trained after Ctrl-C"
    );
}

// 10b. `generate --logits` wrote nothing until the end, so Ctrl-C on a long run left no file.
#[test]
fn ctrl_c_during_generation_keeps_the_logits_so_far() {
    let out = fresh_dir("ctrl_c_generate");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let file = out.join("logits.jsonl");
    let mut child = generate(&out.join("causal"))
        .args([
            "--max-new-tokens",
            "100000000",
            "--logits",
            file.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 64];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert!(text.contains("interrupted"), "{text}");
    let lines = std::fs::read_to_string(&file).unwrap().lines().count();
    assert!(lines > 0, "no logits kept");
    assert!(text.contains(&format!("{lines} steps")), "{text}");
}

// 12. Messages that were wrong or missing.
#[test]
fn leak_lists_are_checked_word_by_word() {
    let out = fresh_dir("leak_words");
    let combined = tiny_train(&out, &["--leak", "off,unmasked"]);
    assert_clear_error(&combined, &["`off`", "on its own"]);
    let twice = tiny_train(&out, &["--leak", "unmasked,unmasked"]);
    assert_clear_error(&twice, &["unmasked", "twice"]);
    assert!(!out.join("causal").exists());
}

#[test]
fn every_flag_is_named_when_its_value_cannot_work() {
    let out = fresh_dir("flag_domains");
    for (args, flag) in [
        (&["--eval-batches", "0"][..], "--eval-batches"),
        (&["--steps", "0"], "--steps"),
        (&["--batch-size", "0"], "--batch-size"),
        (&["--lr", "nan"], "--lr"),
        (&["--lr", "inf"], "--lr"),
        (&["--lr", "0"], "--lr"),
        (&["--lr", "1e39"], "--lr"),
        (&["--lr", "1e-50"], "--lr"),
        (&["--temperature", "nan"], "--temperature"),
        (&["--temperature", "inf"], "--temperature"),
        (&["--grad-clip", "0"], "--grad-clip"),
        (&["--grad-clip", "nan"], "--grad-clip"),
        (&["--warmup-steps", "7"], "--warmup-steps"),
        (&["--eval-interval", "0"], "--eval-interval"),
        (&["--d-model", "0"], "--d-model"),
        (&["--n-layers", "0"], "--n-layers"),
    ] {
        let output = tiny_train(&out, args);
        assert_clear_error(&output, &[flag]);
        assert!(
            !out.join("causal").exists(),
            "{args:?} trained before failing"
        );
    }
    for args in [
        &["--temperature", "nan"][..],
        &["--top-p", "nan"],
        &["--top-p", "1.5"],
        &["--top-k", "0"],
        &["--max-new-tokens", "0"],
    ] {
        let output = generate(&out.join("nothing")).args(args).output().unwrap();
        assert_clear_error(&output, &[args[0]]);
    }
}

#[test]
fn sizes_that_cannot_fit_in_memory_are_refused_up_front() {
    let out = fresh_dir("too_big");
    let huge = tiny_train(
        &out,
        &["--d-model", "131072", "--n-heads", "2", "--n-layers", "64"],
    );
    assert_clear_error(&huge, &["GiB", "memory"]);
    assert!(!out.join("causal").exists());
    let shapes = example("shapes")
        .args(["--device", cpu(), "--batch", "100000", "--seq", "100000"])
        .output()
        .unwrap();
    assert_clear_error(&shapes, &["GiB", "memory"]);
}

#[test]
fn resume_into_a_directory_with_no_run_says_so() {
    let out = fresh_dir("resume_typo");
    let resumed = tiny_train(&out, &["--leak", "off", "--resume"]);
    assert_clear_error(&resumed, &["nothing to resume", "--resume"]);
    assert!(!out.join("causal").exists(), "it trained from scratch");
}

#[test]
fn generate_checks_everything_before_it_prints_a_character() {
    let out = fresh_dir("generate_checks");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let rolling = generate(&out.join("causal"))
        .args(["--window", "rolling"])
        .output()
        .unwrap();
    assert_clear_error(&rolling, &["rolling", "rope"]);
    assert!(
        stdout(&rolling).is_empty(),
        "it printed {:?}",
        stdout(&rolling)
    );
    let noext = generate(&out.join("causal"))
        .args(["--heatmap", out.join("noext").to_str().unwrap()])
        .output()
        .unwrap();
    assert_clear_error(&noext, &["--heatmap", ".png"]);
    assert!(
        !stderr(&noext).contains("extension `"),
        "{}",
        stderr(&noext)
    );
    // A prompt longer than the context says what the model sees of it.
    let long_prompt = "ab ".repeat(10);
    let long = generate(&out.join("causal"))
        .args(["--prompt", &long_prompt, "--max-new-tokens", "2"])
        .output()
        .unwrap();
    assert!(long.status.success(), "{}", stderr(&long));
    assert!(stderr(&long).contains("its last 8"), "{}", stderr(&long));
}

#[test]
fn the_faults_example_leaves_nothing_behind_when_interrupted() {
    let mut command = example("faults");
    command.args(["--device", cpu(), "--steps", "100000"]);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let scratch = std::env::temp_dir().join(format!("tinygpt-faults-{}", child.id()));
    while !scratch.exists() {
        std::thread::sleep(Duration::from_millis(50));
        assert!(child.try_wait().unwrap().is_none(), "faults ended early");
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(!scratch.exists(), "{} was left behind", scratch.display());
}

// 13. `--logits` rows' `position` was the absolute index only, not the position the model used.
#[test]
fn logits_rows_give_the_position_the_model_used() {
    let out = fresh_dir("logits_positions");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let file = out.join("logits.jsonl");
    let output = generate(&out.join("causal"))
        .args([
            "--temperature",
            "0",
            "--max-new-tokens",
            "20",
            "--prompt",
            "ab",
        ])
        .args(["--window", "crop", "--logits", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for row in &rows {
        let position = row["position"].as_u64().unwrap();
        let used = row["model_position"].as_u64().unwrap();
        // The context is 8: past it, crop runs the last 8 tokens at positions 0..8.
        assert_eq!(used, position.min(7), "{row}");
    }
}

// Every file written gets the permissions a file the user creates gets.
#[test]
fn written_files_get_the_users_default_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let out = fresh_dir("permissions");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let probe = out.join("probe");
    std::fs::write(&probe, "").unwrap();
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let expected = mode(&probe);
    let exported = out.join("model.safetensors");
    let export = example("export")
        .args(["--checkpoint", out.join("causal").to_str().unwrap()])
        .args(["--out", exported.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(export.status.success(), "{}", stderr(&export));
    for file in [
        exported,
        out.join("summary.json"),
        out.join("causal/checkpoint/model.bpk"),
        out.join("causal/checkpoint/optimizer.bpk"),
        out.join("causal/metrics.jsonl"),
    ] {
        assert_eq!(mode(&file), expected, "{}", file.display());
    }
}

// A full disk (here: a file-size limit, which fails writes the same way) left `checkpoint.tmp/`
// behind until the next run.
#[test]
fn a_failed_checkpoint_write_leaves_no_temporary_directory() {
    let out = fresh_dir("write_fails");
    let train = example("train");
    let binary = train.get_program().to_str().unwrap().to_string();
    // Big enough a model that its weights pass the limit while the small files fit.
    let script = format!(
        "trap '' XFSZ; ulimit -f 40; exec {binary} --out {} --device {} --quiet --leak off \
         --steps 4 --batch-size 2 --seq-len 8 --d-model 64 --n-heads 2 --n-layers 2 \
         --samples 1 --sample-chars 4",
        out.display(),
        cpu()
    );
    let output = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_clear_error(&output, &["cannot write"]);
    assert!(
        !out.join("causal/checkpoint.tmp").exists(),
        "checkpoint.tmp was left behind"
    );
}
