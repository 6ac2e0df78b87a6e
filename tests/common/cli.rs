//! Running the example binaries as processes, for the command-line tests (`tests/cli.rs`,
//! `tests/robustness.rs`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};

/// The example binary `name`, built beside this test binary (or in `TINYGPT_EXAMPLES_DIR`,
/// to hold another build to the same tests, e.g. one from before a fix).
pub fn example(name: &str) -> Command {
    let dir = match std::env::var_os("TINYGPT_EXAMPLES_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let deps = std::env::current_exe().expect("the test binary's path");
            deps.parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps")
                .join("examples")
        }
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: build the examples first (see the module docs)",
        path.display()
    );
    let mut command = Command::new(path);
    // One-line errors whatever the caller's environment says about backtraces.
    command
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    command
}

/// The CPU backend to run on: flex when compiled in, else the build's default.
pub fn cpu() -> &'static str {
    if tinygpt::device::compiled_backends().contains(&"flex") {
        "flex"
    } else {
        "default"
    }
}

/// A fresh, empty directory for one test.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The train example on a model small enough to train in well under a second; `extra` adds
/// flags or overrides the defaults.
pub fn tiny_train(out: &Path, extra: &[&str]) -> Output {
    let defaults = [
        ("--device", cpu()),
        ("--steps", "6"),
        ("--batch-size", "2"),
        ("--seq-len", "8"),
        ("--d-model", "8"),
        ("--n-heads", "2"),
        ("--n-layers", "1"),
        ("--samples", "1"),
        ("--sample-chars", "4"),
    ];
    let mut command = example("train");
    command.args(["--out", out.to_str().unwrap(), "--quiet"]);
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            command.args([flag, value]);
        }
    }
    command.args(extra);
    command.output().unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The command failed with one `error:` line that contains every one of `words`, and no panic.
pub fn assert_clear_error(output: &Output, words: &[&str]) {
    let text = stderr(output);
    assert!(!output.status.success(), "it succeeded: {text}");
    assert!(!text.contains("panicked"), "a panic: {text}");
    for word in words {
        assert!(text.contains(word), "`{word}` missing from: {text}");
    }
}

/// Start `command` with its output piped and read its first line of standard output.
pub fn spawn_and_read_a_line(command: &mut Command) -> (Child, BufReader<ChildStdout>, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    (child, reader, line)
}

pub fn summary_models(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("summary.json")).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    summary["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["name"].as_str().unwrap().to_string())
        .collect()
}

pub fn checkpoint_step(run: &Path) -> usize {
    tinygpt::train::checkpoint::saved_step(run).unwrap()
}
