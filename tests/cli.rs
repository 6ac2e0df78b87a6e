//! The command line as a user meets it: the example binaries are run as processes, with bad
//! input, interrupted runs and closed pipes, and what they print and leave on disk is checked.
//!
//! `cargo test` builds the examples before it runs the tests; run alone (`cargo test --test
//! cli`), build them first with `cargo build --release --examples` (and the same features).

mod common;

use std::path::Path;
use std::process::Command;

use common::cli::{
    assert_clear_error, checkpoint_step, cpu, example, fresh_dir, spawn_and_read_a_line, stderr,
    summary_models, tiny_train,
};

#[test]
fn a_multi_model_run_resumes_each_model_from_where_it_stopped() {
    let out = fresh_dir("resume_later_model");
    // The causal model finished; its leaky twin never started (as if the run died in between).
    let first = tiny_train(&out, &["--leak", "off"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(!out.join("leak-unmasked").exists());

    let resumed = tiny_train(&out, &["--leak", "unmasked", "--resume"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(summary_models(&out), ["causal", "leak-unmasked"]);
    assert_eq!(checkpoint_step(&out.join("causal")), 6);
    assert_eq!(checkpoint_step(&out.join("leak-unmasked")), 6);
}

#[test]
fn a_trained_run_is_never_replaced_without_force() {
    let out = fresh_dir("overwrite");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let weights = out.join("causal/checkpoint/model.bpk");
    let before = std::fs::read(&weights).unwrap();

    let again = tiny_train(&out, &["--leak", "off", "--seed", "2"]);
    assert_clear_error(
        &again,
        &["already holds a checkpoint", "--resume", "--force"],
    );
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        before,
        "the run was touched"
    );

    let forced = tiny_train(&out, &["--leak", "off", "--seed", "2", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(std::fs::read(&weights).unwrap(), before);
}

#[test]
fn resume_refuses_changed_settings_naming_each() {
    let out = fresh_dir("changed_settings");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let changed = tiny_train(
        &out,
        &[
            "--leak",
            "off",
            "--resume",
            "--lr",
            "0.01",
            "--batch-size",
            "3",
        ],
    );
    assert_clear_error(&changed, &["cannot resume", "learning_rate", "batch_size"]);
    assert_eq!(checkpoint_step(&out.join("causal")), 6);
}

#[test]
fn a_run_directory_being_written_is_refused() {
    let out = fresh_dir("locked");
    std::fs::create_dir_all(&out).unwrap();
    // This test process is alive, so its id makes a live lock.
    let lock = out.join(tinygpt::fs::LOCK_FILE);
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let refused = tiny_train(&out, &["--leak", "off"]);
    assert_clear_error(
        &refused,
        &["being written by process", &std::process::id().to_string()],
    );
    std::fs::remove_file(&lock).unwrap();
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
}

#[test]
fn settings_are_checked_before_any_training() {
    let out = fresh_dir("settings");
    for (args, words) in [
        (&["--samples", "0"][..], &["samples must be at least 1"][..]),
        (&["--seq-len", "1"], &["seq_len", "at least 2"]),
        (&["--temperature", "-1"], &["temperature"]),
        (&["--lr", "-0.01"], &["learning rates must be positive"]),
        (
            &["--leak", "none"],
            &["ambiguous", "--leak unmasked", "--leak off"],
        ),
        (&["--n-heads", "3"], &["divisible"]),
        (
            &["--kv-heads", "3"],
            &["n_kv_heads (3) must divide", "--kv-heads"],
        ),
    ] {
        let output = tiny_train(&out, args);
        assert_clear_error(&output, words);
        assert!(
            !out.join("causal").exists(),
            "{args:?} trained before failing"
        );
    }
}

#[test]
fn ctrl_c_keeps_a_checkpoint_and_says_how_to_resume() {
    let out = fresh_dir("ctrl_c");
    let mut command = example("train");
    command.args([
        "--out",
        out.to_str().unwrap(),
        "--device",
        cpu(),
        "--leak",
        "off",
    ]);
    command.args([
        "--steps",
        "100000",
        "--batch-size",
        "2",
        "--seq-len",
        "8",
        "--d-model",
        "8",
    ]);
    command.args(["--n-heads", "2", "--n-layers", "1", "--quiet"]);
    let (child, reader, first) = spawn_and_read_a_line(&mut command);
    // The first line comes before training starts, after the Ctrl-C handler is installed.
    assert!(first.starts_with("backend"), "{first}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: sending a signal to our own child has no memory-safety preconditions.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let output = child.wait_with_output().unwrap();
    drop(reader);
    assert_clear_error(&output, &["stopped at step", "--resume"]);
    let step = checkpoint_step(&out.join("causal"));
    assert!(step > 0 && step < 100_000, "checkpoint at step {step}");
    assert!(
        stderr(&output).contains(&format!("step {step}")),
        "{}",
        stderr(&output)
    );
}

#[test]
fn closing_the_output_pipe_ends_an_example_quietly() {
    for (name, args) in [
        ("shapes", &["--device", cpu()][..]),
        ("make_corpus", &[][..]),
    ] {
        let (child, reader, first) = spawn_and_read_a_line(example(name).args(args));
        assert!(!first.is_empty(), "{name} printed nothing");
        drop(reader); // as `| head -1` does
        let output = child.wait_with_output().unwrap();
        let text = stderr(&output);
        assert!(!text.contains("panicked"), "{name}: {text}");
        assert!(!text.contains("error"), "{name}: {text}");
    }
}

#[test]
fn make_corpus_help_prints_help_and_writes_nothing() {
    let dir = fresh_dir("make_corpus_help");
    let output = example("make_corpus")
        .arg("--help")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage"));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "it wrote a file"
    );
}

#[test]
fn generate_flags_that_do_not_apply_are_refused_and_a_leaky_cache_is_flagged() {
    let out = fresh_dir("generate_flags");
    assert!(tiny_train(&out, &["--leak", "unmasked"]).status.success());
    let causal = out.join("causal");
    let checkpoint = causal.to_str().unwrap();

    let json_alone = example("generate")
        .args(["--checkpoint", checkpoint, "--device", cpu(), "--json"])
        .output()
        .unwrap();
    assert_clear_error(&json_alone, &["--compare"]);

    let sampling_with_compare = example("generate")
        .args(["--checkpoint", checkpoint, "--device", cpu(), "--compare"])
        .args(["--temperature", "0.5"])
        .output()
        .unwrap();
    assert_clear_error(&sampling_with_compare, &["--temperature"]);

    let leaky = example("generate")
        .args(["--checkpoint", out.join("leak-unmasked").to_str().unwrap()])
        .args(["--device", cpu(), "--compare", "--max-new-tokens", "5"])
        .output()
        .unwrap();
    assert!(leaky.status.success(), "{}", stderr(&leaky));
    assert!(
        stderr(&leaky).contains("KV cache is not valid"),
        "{}",
        stderr(&leaky)
    );

    let missing = example("generate")
        .args(["--checkpoint", out.join("nothing").to_str().unwrap()])
        .args(["--device", cpu()])
        .output()
        .unwrap();
    assert_clear_error(&missing, &["no checkpoint here", "--example train"]);
}

#[test]
fn import_names_a_directory_for_what_it_is() {
    let dir = fresh_dir("import_dir");
    let vocab = dir.join("vocab.json");
    std::fs::write(&vocab, r#"["a", "b"]"#).unwrap();
    let output = example("import")
        .args([
            "--nanogpt",
            dir.to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
        ])
        .args(["--n-heads", "2", "--out", dir.join("out").to_str().unwrap()])
        .output()
        .unwrap();
    assert_clear_error(&output, &["is a directory", ".safetensors"]);
}

#[test]
fn kv_append_refuses_a_step_count_it_cannot_time() {
    let output = example("kv_append")
        .args(["--steps", "0"])
        .output()
        .unwrap();
    assert_clear_error(&output, &["--steps"]);
}

#[test]
fn resuming_on_another_text_names_the_text() {
    let out = fresh_dir("other_text");
    let first = out.join("first.txt");
    let second = out.join("second.txt");
    std::fs::write(&first, "abc ab ca ".repeat(40)).unwrap();
    std::fs::write(&second, "abcd ab ca ".repeat(40)).unwrap();
    let data = |path: &Path| ["--leak", "off", "--data", path.to_str().unwrap()].map(String::from);
    let args = data(&first);
    let first_run = tiny_train(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(first_run.status.success(), "{}", stderr(&first_run));
    let mut args: Vec<String> = data(&second).to_vec();
    args.push("--resume".into());
    let resumed = tiny_train(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_clear_error(&resumed, &["training text", "characters differ"]);
}

#[test]
fn wgpu_without_a_vulkan_driver_is_refused_clearly_and_the_default_falls_back() {
    if !tinygpt::device::compiled_backends().contains(&"wgpu") {
        return;
    }
    // The Vulkan loader then finds no driver, as on a machine with Mesa's OpenGL only.
    let no_vulkan = |command: &mut Command| {
        command.env("VK_ICD_FILENAMES", "/nonexistent.json");
        command.env("VK_DRIVER_FILES", "/nonexistent.json");
    };
    let mut asked = example("shapes");
    asked.args(["--device", "wgpu-cpu"]);
    no_vulkan(&mut asked);
    assert_clear_error(&asked.output().unwrap(), &["cannot be used here", "Vulkan"]);

    let mut default = example("shapes");
    no_vulkan(&mut default);
    let output = default.output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let first_line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(!first_line.contains("backend: wgpu"), "{first_line}");
}

#[test]
fn export_never_replaces_a_file_without_force() {
    let out = fresh_dir("export");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let file = out.join("model.safetensors");
    std::fs::write(&file, "precious").unwrap();
    let export = |force: bool| {
        let mut command = example("export");
        command.args(["--checkpoint", out.join("causal").to_str().unwrap()]);
        command.args(["--out", file.to_str().unwrap()]);
        if force {
            command.arg("--force");
        }
        command.output().unwrap()
    };
    assert_clear_error(&export(false), &["exists", "--force"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    let forced = export(true);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(std::fs::read(&file).unwrap(), b"precious");
}

#[test]
fn generate_writes_the_logits_of_every_step() {
    let out = fresh_dir("generate_logits");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let checkpoint = out.join("causal");
    let file = out.join("logits.jsonl");
    let run = |extra: &[&str]| {
        example("generate")
            .args([
                "--checkpoint",
                checkpoint.to_str().unwrap(),
                "--device",
                cpu(),
            ])
            .args([
                "--prompt",
                "the ",
                "--temperature",
                "0",
                "--max-new-tokens",
                "6",
            ])
            .args(["--logits", file.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "one line per new token");
    assert_eq!(lines[0]["source"], "prompt");
    assert_eq!(lines[0]["prompt_tokens"].as_array().unwrap().len(), 4);
    for (step, line) in lines.iter().enumerate() {
        assert_eq!(line["step"], step);
        assert_eq!(line["position"], 3 + step);
        // Greedy: the token is the largest logit.
        let logits: Vec<f64> = line["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let best = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(line["token"], best, "step {step}");
    }
    // An existing file is kept unless --force; --logits-top keeps the largest few.
    assert_clear_error(&run(&[]), &["exists", "--force"]);
    let output = run(&["--force", "--logits-top", "3"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["top"].as_array().unwrap().len(), 3);
    assert_eq!(first["top"][0][0], lines[0]["token"]);
    assert!(first.get("logits").is_none());
}

#[test]
fn the_faults_example_shows_one_fault_and_names_the_valid_ones() {
    let out = fresh_dir("faults_example");
    assert!(tiny_train(&out, &["--leak", "off"]).status.success());
    let checkpoint = out.join("causal");
    let run = |fault: &str| {
        example("faults")
            .args([
                "--checkpoint",
                checkpoint.to_str().unwrap(),
                "--device",
                cpu(),
            ])
            .args(["--fault", fault, "--prompt", "the", "--decode", "4"])
            .output()
            .unwrap()
    };
    let output = run("stale-cache");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("part at decode step 1"), "{text}");
    let output = run("missing-merge");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(String::from_utf8_lossy(&output.stdout).contains("W_O"));
    assert_clear_error(&run("transposed-value"), &["unknown fault", "stale-cache"]);
}

#[test]
fn a_bpe_run_trains_reports_bits_per_character_and_resumes_only_with_its_tokenizer() {
    let out = fresh_dir("bpe_run");
    let bpe = ["--tokenizer", "bpe", "--vocab-size", "300", "--leak", "off"];
    let run = tiny_train(&out, &bpe);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("bits/char") && stdout.contains("bpe"),
        "{stdout}"
    );
    let saved = std::fs::read_to_string(out.join("causal/checkpoint/tokenizer.json")).unwrap();
    assert!(
        saved.contains("\"ByteLevel\""),
        "a Hugging Face tokenizer.json"
    );

    // The same run resumed as a character run is refused, naming the tokenizer.
    let as_char = tiny_train(&out, &["--leak", "off", "--resume"]);
    assert_clear_error(&as_char, &["tokenizer", "bpe", "char"]);

    let generated = example("generate")
        .args(["--checkpoint", out.join("causal").to_str().unwrap()])
        .args([
            "--prompt",
            "the 🙂 cat",
            "--max-new-tokens",
            "5",
            "--device",
            cpu(),
        ])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", stderr(&generated));
    assert!(
        String::from_utf8(generated.stdout)
            .unwrap()
            .starts_with("the 🙂 cat")
    );

    for (flags, says) in [
        (vec!["--tokenizer", "bpe", "--vocab-size", "100"], "256"),
        (
            vec!["--tokenizer", "gpt2", "--vocab-size", "1000"],
            "--vocab-size",
        ),
    ] {
        let refused = tiny_train(&fresh_dir("bpe_refused"), &flags);
        assert_clear_error(&refused, &[says]);
    }
}

#[test]
fn a_hugging_face_gpt2_imports_and_exports_through_the_cli_unchanged() {
    let out = fresh_dir("hf_cli");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_gpt2");
    let without_vocab = example("import")
        .args(["--hf", fixture.to_str().unwrap()])
        .args(["--out", out.join("ckpt").to_str().unwrap()])
        .output()
        .unwrap();
    assert_clear_error(&without_vocab, &["256 tokens", "--vocab"]);

    // 256 tokens: a byte-level BPE with no merges.
    let bytes = tinygpt::text::tokenizer::BpeTokenizer::train("x", 256).unwrap();
    let vocab = out.join("bytes.json");
    std::fs::write(&vocab, bytes.to_json()).unwrap();
    let import = example("import")
        .args([
            "--hf",
            fixture.to_str().unwrap(),
            "--vocab",
            vocab.to_str().unwrap(),
        ])
        .args(["--out", out.join("ckpt").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(import.status.success(), "{}", stderr(&import));
    let export_hf = || {
        example("export")
            .args(["--checkpoint", out.join("ckpt").to_str().unwrap()])
            .args(["--format", "hf", "--out", out.join("hf").to_str().unwrap()])
            .output()
            .unwrap()
    };
    let export = export_hf();
    assert!(export.status.success(), "{}", stderr(&export));
    let sorted = |path: &Path| {
        let mut tensors = common::read_safetensors(path);
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        tensors
    };
    let theirs = sorted(&fixture.join("model.safetensors"));
    let ours = sorted(&out.join("hf/model.safetensors"));
    assert_eq!(ours, theirs, "every tensor back as transformers wrote it");
    let again = export_hf();
    assert_clear_error(&again, &["config.json", "--force"]);
}
