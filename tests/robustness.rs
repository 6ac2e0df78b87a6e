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
        .args(["--device", cpu(), "--batch", "10000000", "--seq", "128"])
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

// ---- A second sweep, with cases the first did not list ----------------------------------------

// An output path inside the checkpoint being read is refused, `--force` or not.
#[test]
fn generate_never_writes_inside_the_checkpoint_it_reads() {
    let out = fresh_dir("generate_inside_checkpoint");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let weights = out.join("causal/checkpoint/model.bpk");
    let before = std::fs::read(&weights).unwrap();
    for flag in ["--logits", "--heatmap"] {
        let target = match flag {
            "--logits" => weights.clone(),
            _ => out.join("causal/checkpoint/picture.png"),
        };
        let output = generate(&out.join("causal"))
            .args([
                "--max-new-tokens",
                "3",
                flag,
                target.to_str().unwrap(),
                "--force",
            ])
            .output()
            .unwrap();
        assert_clear_error(&output, &[flag, "inside the checkpoint"]);
    }
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    // The same file for both outputs is refused too.
    let both = out.join("both.png");
    let output = generate(&out.join("causal"))
        .args(["--max-new-tokens", "3", "--heatmap", both.to_str().unwrap()])
        .args(["--logits", both.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clear_error(&output, &["--logits and --heatmap"]);
}

// An atomic write took a file of the user's at its temporary name, and followed a link there.
#[test]
fn atomic_writes_take_no_file_and_follow_no_link_of_the_users() {
    let out = fresh_dir("temporary_names");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    std::fs::write(out.join("notes.tmp.jsonl"), "precious").unwrap();
    std::fs::write(out.join("victim.txt"), "victim").unwrap();
    std::os::unix::fs::symlink(out.join("victim.txt"), out.join("v.tmp.jsonl")).unwrap();
    for name in ["notes.jsonl", "v.jsonl"] {
        let output = generate(&out.join("causal"))
            .args([
                "--max-new-tokens",
                "3",
                "--logits",
                out.join(name).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
    }
    assert_eq!(
        std::fs::read(out.join("notes.tmp.jsonl")).unwrap(),
        b"precious"
    );
    assert_eq!(std::fs::read(out.join("victim.txt")).unwrap(), b"victim");
    assert!(!out.join("v.jsonl").is_symlink());
}

// `--force` removed the old run, then refused the new settings for memory.
#[test]
fn a_forced_run_that_cannot_start_keeps_the_run_it_would_replace() {
    let out = fresh_dir("force_refused");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let output = tiny_train(
        &out,
        &["--leak", "off", "--force", "--batch-size", "100000000"],
    );
    assert_clear_error(&output, &["GiB", "--batch-size"]);
    assert_eq!(
        checkpoint_step(&out.join("causal")),
        6,
        "the old run is gone"
    );
    assert!(out.join("summary.json").exists());
}

// A fresh run replaced files it did not write; `--force` removed files that were not tinygpt's.
#[test]
fn runs_never_remove_files_tinygpt_did_not_write() {
    let out = fresh_dir("foreign_files");
    std::fs::create_dir_all(out.join("causal/checkpoint")).unwrap();
    let text = "the cat sat on the mat . ".repeat(30);
    let mine = out.join("causal/checkpoint/mytext.txt");
    std::fs::write(&mine, &text).unwrap();
    std::fs::write(out.join("summary.json"), "mine").unwrap();
    let data = ["--leak", "off", "--data", mine.to_str().unwrap()];
    let fresh = tiny_train(&out, &data);
    assert_clear_error(&fresh, &["exists", "--force"]);
    let forced = tiny_train(&out, &[&data[..], &["--force"]].concat());
    assert_clear_error(&forced, &["mytext.txt", "not a checkpoint file"]);
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), text);
    // Beside the checkpoint (not in it) the file is left alone and the run goes on.
    let beside = out.join("causal/mytext.txt");
    std::fs::rename(&mine, &beside).unwrap();
    let data = [
        "--leak",
        "off",
        "--data",
        beside.to_str().unwrap(),
        "--force",
    ];
    let forced = tiny_train(&out, &data);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), text);
}

// `import` deleted everything in --out/checkpoint/, its own input among it.
#[test]
fn import_never_deletes_its_input() {
    let out = fresh_dir("import_input");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::fs::create_dir_all(out.join("checkpoint")).unwrap();
    let input = out.join("checkpoint/w.safetensors");
    std::fs::copy(fixtures.join("nanogpt_tied.safetensors"), &input).unwrap();
    let output = example("import")
        .args(["--nanogpt", input.to_str().unwrap()])
        .args([
            "--vocab",
            fixtures.join("nanogpt_meta.json").to_str().unwrap(),
        ])
        .args(["--n-heads", "2", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_clear_error(&output, &["w.safetensors", "not a checkpoint file"]);
    assert!(input.exists(), "the input was deleted");
}

// A checkpoint whose config asks for more memory than there is aborted with a backtrace.
#[test]
fn a_checkpoint_too_big_for_memory_is_refused_not_aborted() {
    let out = fresh_dir("huge_context");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let config = out.join("causal/checkpoint/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value["max_seq_len"] = serde_json::json!(100_000_000_000u64);
    std::fs::write(&config, value.to_string()).unwrap();
    let output = generate(&out.join("causal"))
        .args(["--max-new-tokens", "3"])
        .output()
        .unwrap();
    assert_clear_error(&output, &["GiB", "memory"]);
    assert!(
        !stderr(&output).contains("memory allocation"),
        "{}",
        stderr(&output)
    );
}

// A refused resume of a run without run.json wrote one with the refused settings, so the
// right command was refused after it; and a run from 0.1 could not be resumed from the CLI.
#[test]
fn a_refused_resume_changes_nothing_and_old_runs_resume() {
    let out = fresh_dir("refused_resume");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    std::fs::remove_file(out.join("run.json")).unwrap();
    let wrong = tiny_train(&out, &["--leak", "off", "--resume", "--seed", "5"]);
    assert_clear_error(&wrong, &["seed", "--seed"]);
    assert!(
        !out.join("run.json").exists(),
        "the refused settings were written down"
    );
    let right = tiny_train(&out, &["--leak", "off", "--resume"]);
    assert!(right.status.success(), "{}", stderr(&right));

    // A run written by 0.1 (per-tensor clipping, no run.json) resumes with its own flags.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_0_1");
    let legacy = fresh_dir("legacy_cli");
    for dir in ["causal", "leak-none"] {
        copy_dir(&fixtures.join(dir), &legacy.join(dir));
    }
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(legacy.join("causal/checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    let saved = &state["train_config"];
    let flag = |name: &str| saved[name].to_string();
    let output = example("train")
        .args([
            "--out",
            legacy.to_str().unwrap(),
            "--device",
            cpu(),
            "--quiet",
            "--resume",
        ])
        .args([
            "--leak",
            "off",
            "--steps",
            &flag("steps"),
            "--batch-size",
            &flag("batch_size"),
        ])
        .args([
            "--seq-len",
            &flag("seq_len"),
            "--lr",
            &flag("learning_rate"),
        ])
        .args([
            "--seed",
            &flag("seed"),
            "--eval-batches",
            &flag("eval_batches"),
        ])
        .args(["--d-model", "16", "--n-heads", "2", "--n-layers", "1"])
        .args(["--samples", "1", "--sample-chars", "4"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

// `--resume` threw away a checkpoint it could not read or match and retrained from step 1.
#[test]
fn resume_never_discards_a_checkpoint_it_cannot_use() {
    let out = fresh_dir("unusable_checkpoint");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let weights = std::fs::read(out.join("causal/checkpoint/model.bpk")).unwrap();
    // A checkpoint whose settings disagree with run.json (edited by hand).
    let state = out.join("causal/checkpoint/state.json");
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replace("\"seed\": 1337", "\"seed\": 7")).unwrap();
    let output = tiny_train(&out, &["--leak", "off", "--resume"]);
    assert_clear_error(&output, &["not trained with the settings in run.json"]);
    // A checkpoint without its state.
    std::fs::remove_file(&state).unwrap();
    let output = tiny_train(&out, &["--leak", "off", "--resume"]);
    assert_clear_error(&output, &["incomplete", "state.json"]);
    assert_eq!(
        std::fs::read(out.join("causal/checkpoint/model.bpk")).unwrap(),
        weights
    );
}

// A deep model's memory was underestimated and exhausted the machine before step 1.
#[test]
fn a_deep_model_that_cannot_fit_is_refused_up_front() {
    let out = fresh_dir("deep_model");
    let output = tiny_train(&out, &["--leak", "off", "--n-layers", "300000"]);
    assert_clear_error(&output, &["GiB", "--n-layers"]);
    let output = tiny_train(&out, &["--leak", "off", "--samples", "100000000"]);
    assert_clear_error(&output, &["GiB", "--samples"]);
}
