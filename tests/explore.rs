//! The explorer (`--example explore`) as its users meet it: the JSON API over HTTP, bad input,
//! twenty clients at once, a client that leaves mid-stream, a port already taken, and the page
//! itself driven in Chromium through its WebDriver (chromedriver).
//!
//! Every test starts its own explorer process on a tiny causal model and its leaky twin
//! (context 8, trained in about a second), on a free port, and kills it when done.
//!
//! `cargo test` builds the examples before it runs the tests; run alone (`cargo test --release
//! --features wgpu --test explore`), build them first with `cargo build --release --features
//! wgpu --examples`. The browser test is skipped, saying so, without `chromium` and
//! `chromedriver` on the machine, unless `CI` is `true`: then it fails. It saves a screenshot
//! of every view under `target/explorer/` and prints the page's load time and the decode
//! rates (`-- --nocapture` shows them).

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use common::cli::{cpu, example, fresh_dir, stderr, tiny_train};
use serde_json::{Value, json};

/// How long anything may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(120);

/// The prompt the generation tests continue: characters of the toy corpus.
const PROMPT: &str = "the ";

// ---- the models and the explorer process ---------------------------------------------------

/// The tiny causal model and its unmasked twin, trained once for every test of this binary.
fn models() -> &'static Path {
    static MODELS: OnceLock<PathBuf> = OnceLock::new();
    MODELS.get_or_init(|| {
        let out = fresh_dir("explore_models");
        let trained = tiny_train(&out, &["--leak", "unmasked"]);
        assert!(trained.status.success(), "{}", stderr(&trained));
        out
    })
}

fn causal_dir() -> PathBuf {
    models().join("causal")
}

fn leaky_dir() -> PathBuf {
    models().join("leak-unmasked")
}

/// A child process, killed when it goes out of scope (a failed assertion included).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running explorer on both models.
struct Explorer {
    addr: SocketAddr,
    // Kept open: the server's standard output must not turn into a closed pipe.
    _stdout: BufReader<ChildStdout>,
    _process: Killed,
}

impl Explorer {
    fn start() -> Self {
        let mut command = example("explore");
        command
            .arg("--checkpoint")
            .arg(causal_dir())
            .arg("--leaky")
            .arg(leaky_dir())
            .args(["--port", "0", "--device", cpu()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("starting the explorer");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let process = Killed(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // `explorer at http://127.0.0.1:PORT/ (Ctrl-C to stop)`
        let addr = line
            .strip_prefix("explorer at http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in the explorer's first line: {line:?}"));
        Self {
            addr,
            _stdout: stdout,
            _process: process,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        json_of(request(self.addr, "GET", path, None))
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string().as_bytes())
    }

    fn post_raw(&self, path: &str, body: &[u8]) -> (u16, Value) {
        json_of(request(self.addr, "POST", path, Some(body)))
    }

    /// `POST path` that must succeed; its JSON.
    fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, value) = self.post(path, body);
        assert_eq!(status, 200, "POST {path} {body}: {value}");
        value
    }

    fn status(&self) -> Value {
        let (status, value) = self.get("/api/status");
        assert_eq!(status, 200, "{value}");
        value
    }

    /// Poll `GET /api/status` until `done` says it is; that status.
    fn status_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + HANG;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "waited {HANG:?} for {what}: {status}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stream a generation to its end.
    fn generate(&self, request_body: &Value) -> Streamed {
        let mut response = request(
            self.addr,
            "POST",
            "/api/generate",
            Some(request_body.to_string().as_bytes()),
        );
        assert_eq!(
            { response.status },
            200,
            "{request_body}: {}",
            response.text()
        );
        assert!(
            response
                .header("content-type")
                .is_some_and(|kind| kind.starts_with("text/event-stream")),
            "{:?}",
            response.headers
        );
        let mut tokens = Vec::new();
        loop {
            let (event, data) = next_event(&mut response.body)
                .unwrap_or_else(|| panic!("the stream ended without done: {request_body}"));
            match event.as_str() {
                "token" => tokens.push(data),
                "done" => return Streamed { tokens, done: data },
                other => panic!("event {other}: {data} ({request_body})"),
            }
        }
    }
}

/// A whole generation as streamed: its `token` events and its `done`.
struct Streamed {
    tokens: Vec<Value>,
    done: Value,
}

impl Streamed {
    fn ids(&self) -> Vec<u64> {
        self.tokens
            .iter()
            .map(|t| t["id"].as_u64().unwrap())
            .collect()
    }

    fn text(&self) -> String {
        self.tokens
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .collect()
    }
}

// ---- a small HTTP/1.1 client ----------------------------------------------------------------

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Box<dyn BufRead + Send>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn text(&mut self) -> String {
        let mut text = String::new();
        self.body.read_to_string(&mut text).expect("the body");
        text
    }
}

/// One request on its own connection (`Connection: close`); the response with its body still
/// to read. A body the server does not wait for (a 413) may fail to send: the response is read
/// all the same.
fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&[u8]>) -> Response {
    let stream = TcpStream::connect(addr).expect("connecting to the explorer");
    stream.set_read_timeout(Some(HANG)).unwrap();
    stream.set_write_timeout(Some(HANG)).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head += &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    head += "\r\n";
    let mut writer = &stream;
    writer.write_all(head.as_bytes()).unwrap();
    if let Some(body) = body {
        let _ = writer.write_all(body);
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("the status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).expect("a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("a header line");
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _): &&(String, String)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let body: Box<dyn BufRead + Send> =
        if find("transfer-encoding").is_some_and(|coding| coding.eq_ignore_ascii_case("chunked")) {
            Box::new(BufReader::new(Chunked {
                inner: reader,
                left: 0,
                done: false,
            }))
        } else if let Some(length) = find("content-length") {
            Box::new(reader.take(length.parse().expect("a content length")))
        } else {
            Box::new(reader)
        };
    Response {
        status,
        headers,
        body,
    }
}

/// A chunked body, decoded.
struct Chunked<R> {
    inner: R,
    left: usize,
    done: bool,
}

fn broken(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

impl<R: BufRead> Chunked<R> {
    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            self.left = usize::from_str_radix(size, 16)
                .map_err(|_| broken(format!("a chunk size: {line:?}")))?;
            if self.left == 0 {
                // Trailers, if any, end with an empty line.
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let wanted = buf.len().min(self.left);
        let read = self.inner.read(&mut buf[..wanted])?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= read;
        if self.left == 0 && !self.line()?.is_empty() {
            return Err(broken("no CRLF after a chunk"));
        }
        Ok(read)
    }
}

fn json_of(mut response: Response) -> (u16, Value) {
    let text = response.text();
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("not JSON ({err}), status {}: {text}", response.status));
    (response.status, value)
}

/// The next server-sent event, `(event, data as JSON)`; None at the end of the stream.
fn next_event(body: &mut dyn BufRead) -> Option<(String, Value)> {
    let (mut event, mut data) = ("message".to_string(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if body.read_line(&mut line).expect("reading the stream") == 0 {
            assert!(data.is_empty(), "the stream ended inside an event: {data}");
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if data.is_empty() {
                continue;
            }
            let value = serde_json::from_str(&data)
                .unwrap_or_else(|err| panic!("event {event}: data not JSON ({err}): {data}"));
            return Some((event, value));
        }
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(value) = line.strip_prefix("data:") {
            data += value.strip_prefix(' ').unwrap_or(value);
        }
    }
}

fn f64s(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// What `generate --temperature 0` prints after the prompt for the causal model, and the decode
/// rate it reports on standard error.
fn cli_greedy(prompt: &str, new_tokens: usize) -> (String, Option<f64>) {
    let output = example("generate")
        .arg("--checkpoint")
        .arg(causal_dir())
        .args(["--device", cpu(), "--temperature", "0", "--prompt", prompt])
        .args(["--max-new-tokens", &new_tokens.to_string()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let printed = String::from_utf8(output.stdout.clone()).unwrap();
    let continuation = printed
        .strip_prefix(prompt)
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("generate printed {printed:?}"))
        .to_string();
    let rate = stderr(&output)
        .split("decode at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|rate| rate.parse().ok());
    (continuation, rate)
}

/// The cache lengths of a stream, checked: the prefill holds the prompt, every decode step
/// adds exactly one position, a window slide starts again from the kept half.
fn check_cache_lens(phases_and_lens: &[(String, u64)], prompt_len: u64, context: u64) {
    let (first_phase, first_len) = &phases_and_lens[0];
    assert_eq!(first_phase, "prefill", "{phases_and_lens:?}");
    assert_eq!(*first_len, prompt_len, "{phases_and_lens:?}");
    let mut decode_steps = 0;
    for pair in phases_and_lens.windows(2) {
        let ((_, before), (phase, len)) = (&pair[0], &pair[1]);
        match phase.as_str() {
            "decode" => {
                decode_steps += 1;
                assert_eq!(*len, before + 1, "a decode step: {phases_and_lens:?}");
            }
            "slide" => assert!(
                (1..=context).contains(len) && len < before,
                "a slide: {phases_and_lens:?}"
            ),
            other => panic!("phase {other} after the first step: {phases_and_lens:?}"),
        }
        assert!(*len <= context, "past the context: {phases_and_lens:?}");
    }
    assert!(decode_steps > 0, "no decode steps: {phases_and_lens:?}");
}

// ---- the API --------------------------------------------------------------------------------

#[test]
fn every_route_answers_what_the_page_draws() {
    let explorer = Explorer::start();

    let (status, info) = explorer.get("/api/info");
    assert_eq!(status, 200, "{info}");
    let names: Vec<&str> = info["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["causal", "leaky"]);
    let (causal, leaky) = (&info["models"][0], &info["models"][1]);
    assert_eq!(causal["mask"], "causal");
    assert_eq!(leaky["mask"], "unmasked");
    assert_eq!(causal["max_seq_len"], 8);
    assert_eq!(causal["n_heads"], 2);
    assert_eq!(causal["n_layers"], 1);
    let context = causal["max_seq_len"].as_u64().unwrap();
    let vocabulary: Vec<&str> = causal["vocabulary"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in ["t", "h", "e", " ", "c", "a"] {
        assert!(vocabulary.contains(&c), "{c:?} not in {vocabulary:?}");
    }
    let exhibits = info["exhibits"].as_array().unwrap();
    for name in [
        "stale-cache",
        "transposed-key",
        "missing-merge",
        "mask-unmasked",
    ] {
        assert!(
            exhibits.contains(&json!(name)),
            "{name} not in {exhibits:?}"
        );
    }

    // tokenize: one id per character, each the character's place in the vocabulary.
    let tokens = explorer.ok("/api/tokenize", &json!({"model": "causal", "text": PROMPT}));
    assert_eq!(tokens["pieces"], json!(["t", "h", "e", " "]));
    let ids = tokens["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 4);
    for (id, piece) in ids.iter().zip(tokens["pieces"].as_array().unwrap()) {
        assert_eq!(
            vocabulary[id.as_u64().unwrap() as usize],
            piece.as_str().unwrap()
        );
    }

    // forward: the causal model's masked cells are exactly 0, every row sums to 1.
    let text = "the cat ";
    let t = text.chars().count();
    for name in ["causal", "leaky"] {
        let forward = explorer.ok("/api/forward", &json!({"model": name, "text": text}));
        let layers = forward["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{name}");
        let mut future_weight = 0.0;
        for layer in layers {
            let heads = layer["weights"].as_array().unwrap();
            assert_eq!(heads.len(), 2, "{name}: {}", layer["name"]);
            for (h, rows) in heads.iter().enumerate() {
                let rows = rows.as_array().unwrap();
                assert_eq!(rows.len(), t);
                for (q, row) in rows.iter().enumerate() {
                    let row = f64s(row);
                    assert_eq!(row.len(), t);
                    let sum: f64 = row.iter().sum();
                    assert!(
                        (sum - 1.0).abs() < 1e-5,
                        "{name} head {h} row {q} sums to {sum}: {row:?}"
                    );
                    for (k, &w) in row.iter().enumerate() {
                        if k > q {
                            if name == "causal" {
                                assert_eq!(w, 0.0, "causal head {h}: query {q} sees key {k}");
                            }
                            future_weight += w;
                        }
                    }
                }
            }
        }
        if name == "leaky" {
            // The unmasked twin's queries do see later keys: the check above can fail.
            assert!(future_weight > 0.1, "leaky: {future_weight}");
        }
        let stages = forward["stages"].as_array().unwrap();
        let scores = stages
            .iter()
            .find(|s| s["name"] == "blocks.0.attn.scores")
            .unwrap_or_else(|| panic!("no scores stage in {stages:?}"));
        assert_eq!(scores["shape"], json!([1, 2, t, t]));
        let next = forward["next"].as_array().unwrap();
        assert_eq!(next.len(), 8);
        let p: Vec<f64> = next.iter().map(|pair| pair[1].as_f64().unwrap()).collect();
        assert!(p.windows(2).all(|w| w[0] >= w[1]), "{p:?}");
    }

    // probe: a change moves no earlier position of the causal model, every one of the leaky.
    let position = 4;
    for (name, moved_before) in [("causal", 0), ("leaky", position)] {
        let probe = explorer.ok(
            "/api/probe",
            &json!({"model": name, "text": text, "position": position}),
        );
        assert_eq!(probe["position"], position, "{probe}");
        assert_eq!(probe["earlier_moved"], moved_before, "{name}: {probe}");
        let moved = f64s(&probe["moved"]);
        let tolerance = probe["tolerance"].as_f64().unwrap();
        assert_eq!(moved.len(), t);
        assert!(moved[position] > tolerance, "{name}: {probe}");
        assert_eq!(probe["changed_text"].as_str().unwrap().chars().count(), t);
        assert_ne!(probe["changed_text"], text);
    }
    let probe = explorer.ok(
        "/api/probe",
        &json!({"model": "causal", "text": text, "position": 2, "replacement": "x"}),
    );
    assert_eq!(probe["changed_text"], "thx cat ");

    // leak: both models on one text; only the leaky one fails the causality probe.
    let leak = explorer.ok(
        "/api/leak",
        &json!({"text": "the cat s", "max_new_tokens": 10}),
    );
    for (side, mask) in [("causal", "causal"), ("leaky", "unmasked")] {
        let r = &leak[side];
        assert_eq!(r["mask"], mask, "{leak}");
        assert_eq!(r["probe_positions"], 7, "{side}: {r}");
        assert_eq!(r["generation"].as_str().unwrap().chars().count(), 10, "{r}");
        for loss in ["teacher_forced_loss", "honest_loss"] {
            let loss = r[loss].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{side}: {r}");
        }
    }
    assert_eq!(leak["causal"]["probe_violations"], 0, "{leak}");
    assert_eq!(leak["leaky"]["probe_violations"], 7, "{leak}");
    // A causal model's teacher-forced loss is its honest loss: it cannot see the future.
    let (tf, honest) = (
        leak["causal"]["teacher_forced_loss"].as_f64().unwrap(),
        leak["causal"]["honest_loss"].as_f64().unwrap(),
    );
    assert!((tf - honest).abs() < 1e-4, "{leak}");

    // fault: a shape fault is refused with the crate's message; a stale cache parts at step 1.
    for fault in ["transposed-key", "missing-merge"] {
        let shown = explorer.ok(
            "/api/fault",
            &json!({"fault": fault, "prompt": "the", "decode": 4}),
        );
        assert_eq!(shown["name"], fault);
        let refused = shown["refused"]
            .as_str()
            .unwrap_or_else(|| panic!("{shown}"));
        assert!(!refused.is_empty(), "{shown}");
        assert!(shown["parted"].is_null(), "{shown}");
    }
    let refused = explorer.ok(
        "/api/fault",
        &json!({"fault": "missing-merge", "prompt": "the", "decode": 4}),
    );
    assert!(
        refused["refused"].as_str().unwrap().contains("merge"),
        "{refused}"
    );
    // Without a prompt or decode steps, the server picks ones that fit this context-8 model
    // (and, for a shape fault, a prompt length other than the head width).
    for fault in ["stale-cache", "transposed-key"] {
        let shown = explorer.ok("/api/fault", &json!({ "fault": fault }));
        let length = shown["prompt"].as_str().unwrap().chars().count();
        let decode = shown["decode"].as_u64().unwrap() as usize;
        assert!(
            length >= 2 && decode >= 1 && length + decode <= 8,
            "{shown}"
        );
        if fault == "transposed-key" {
            assert_ne!(length, 4, "the head width hides the fault: {shown}");
        }
        assert!(
            shown["parted"].is_object() || shown["refused"].is_string(),
            "{shown}"
        );
    }
    let stale = explorer.ok(
        "/api/fault",
        &json!({"fault": "stale-cache", "prompt": PROMPT, "decode": 4}),
    );
    let parted = &stale["parted"];
    assert_eq!(parted["first_step"], 1, "{stale}");
    assert_eq!(
        parted["expected_cache_lens"],
        json!([4, 5, 6, 7]),
        "{stale}"
    );
    assert_ne!(
        parted["cache_lens"], parted["expected_cache_lens"],
        "{stale}"
    );
    assert!(stale["refused"].is_null(), "{stale}");

    // generate: the prefill caches the prompt, each decode step one position more, and the
    // cached logits match the naive recompute at every step.
    let new_tokens = 20;
    let streamed = explorer.generate(&json!({
        "prompt": PROMPT, "temperature": 0, "max_new_tokens": new_tokens, "verify": true,
    }));
    assert_eq!(streamed.tokens.len(), new_tokens);
    let bytes_per_position = causal["cache_bytes_per_position"].as_u64().unwrap();
    let mut lens = Vec::new();
    for (step, token) in streamed.tokens.iter().enumerate() {
        assert_eq!(token["step"], step, "{token}");
        let diff = token["naive_diff"]
            .as_f64()
            .unwrap_or_else(|| panic!("no naive_diff with verify: {token}"));
        assert!(
            diff < 1e-4,
            "step {step}: cached and naive differ by {diff}"
        );
        let top = token["top"].as_array().unwrap();
        assert_eq!(top.len(), 8, "{token}");
        assert_eq!(
            top[0][0], token["text"],
            "greedy takes the most likely: {token}"
        );
        let cache_len = token["cache_len"].as_u64().unwrap();
        assert_eq!(
            token["cache_bytes"],
            cache_len * bytes_per_position,
            "{token}"
        );
        lens.push((token["phase"].as_str().unwrap().to_string(), cache_len));
    }
    check_cache_lens(&lens, 4, context);
    let done = &streamed.done;
    assert_eq!(done["tokens"], new_tokens, "{done}");
    assert_eq!(done["text"], streamed.text(), "{done}");
    assert_eq!(done["stopped"], false, "{done}");
    assert_eq!(done["mode"], "cached", "{done}");
    assert!(
        done["decode_tokens_per_s"].as_f64().unwrap() > 0.0,
        "{done}"
    );
    // Greedy decoding on the server is the command line's.
    let (cli, _) = cli_greedy(PROMPT, new_tokens);
    assert_eq!(streamed.text(), cli);

    // Without verify there is no naive difference; the leaky model decodes naively.
    let plain = explorer.generate(&json!({"prompt": PROMPT, "max_new_tokens": 5}));
    assert!(plain.tokens.iter().all(|t| t["naive_diff"].is_null()));
    let leaky_stream = explorer.generate(&json!({
        "model": "leaky", "prompt": PROMPT, "max_new_tokens": 5, "temperature": 0,
    }));
    assert_eq!(leaky_stream.done["mode"], "naive", "{}", leaky_stream.done);
    assert!(leaky_stream.tokens.iter().all(|t| t["cache_len"] == 0));

    let status = explorer.status_until("the streams to end", |s| s["active"] == 0);
    assert_eq!(status["finished"], 3, "{status}");
    assert_eq!(status["stopped_by_client"], 0, "{status}");
}

#[test]
fn every_bad_input_is_refused_with_a_message_naming_it() {
    let explorer = Explorer::start();
    // Generation settings, each on the prompt `the `: (setting, words its message holds).
    let settings: [(Value, &[&str]); 12] = [
        (json!({"bogus": 1}), &["unknown field", "bogus"]),
        (json!({"temperature": -1}), &["temperature", "-1"]),
        (json!({"temperature": 11}), &["temperature", "11"]),
        (json!({"top_p": 0}), &["top_p", "0"]),
        (json!({"top_p": 2}), &["top_p", "2"]),
        (json!({"top_k": 0}), &["top_k"]),
        (json!({"max_new_tokens": 0}), &["max_new_tokens", "0"]),
        (
            json!({"max_new_tokens": 5000}),
            &["max_new_tokens", "5000", "2000"],
        ),
        (json!({"model": "nope"}), &["model", "nope"]),
        (json!({"window": "nope"}), &["nope"]),
        (json!({"top": 0}), &["top"]),
        (json!({"seed": -1}), &["seed"]),
    ];
    let mut cases: Vec<(&str, String, u16, &[&str])> = settings
        .into_iter()
        .map(|(setting, words)| {
            let mut body = json!({"prompt": PROMPT});
            for (key, value) in setting.as_object().unwrap() {
                body[key] = value.clone();
            }
            ("/api/generate", body.to_string(), 400, words)
        })
        .collect();
    // Bodies: (route, body, words).
    let bodies: [(&str, String, &[&str]); 5] = [
        (
            "/api/generate",
            r#"{"prompt": "the "#.into(),
            &["JSON", "EOF"],
        ),
        ("/api/generate", "not json at all".into(), &["JSON"]),
        (
            "/api/generate",
            json!({"prompt": "THE"}).to_string(),
            &["vocabulary", "'T'"],
        ),
        (
            "/api/generate",
            json!({"prompt": ""}).to_string(),
            &["prompt", "empty"],
        ),
        (
            "/api/generate",
            json!({"prompt": "e".repeat(4001)}).to_string(),
            &["prompt", "4001", "4000"],
        ),
    ];
    cases.extend(
        bodies
            .into_iter()
            .map(|(route, body, words)| (route, body, 400, words)),
    );
    // The other routes: (route, request, words).
    let requests: [(&str, Value, &[&str]); 13] = [
        (
            "/api/tokenize",
            json!({"model": "causal", "text": "héllo"}),
            &["vocabulary", "'é'"],
        ),
        (
            "/api/tokenize",
            json!({"text": "the"}),
            &["missing field", "model"],
        ),
        (
            "/api/forward",
            json!({"model": "causal", "text": "the old cat"}),
            &["11 tokens", "context is 8"],
        ),
        (
            "/api/forward",
            json!({"model": "causal", "text": ""}),
            &["0 tokens"],
        ),
        (
            "/api/probe",
            json!({"model": "causal", "text": "the", "position": 0}),
            &["position 0"],
        ),
        (
            "/api/probe",
            json!({"model": "causal", "text": "the", "position": 2, "replacement": "xy"}),
            &["replacement", "exactly one token"],
        ),
        (
            "/api/leak",
            json!({"text": "the", "max_new_tokens": 5000}),
            &["max_new_tokens"],
        ),
        (
            "/api/leak",
            json!({"text": "the old cat sees"}),
            &["16 tokens"],
        ),
        (
            "/api/fault",
            json!({"fault": "nope"}),
            &["nope", "stale-cache"],
        ),
        (
            "/api/fault",
            json!({"fault": "stale-cache", "decode": 0}),
            &["decode", "from 1 to"],
        ),
        (
            "/api/fault",
            json!({"fault": "transposed-key", "prompt": "the "}),
            &["4 tokens", "head width", "another length"],
        ),
        (
            "/api/fault",
            json!({"fault": "stale-cache", "prompt": "the old "}),
            &["8 tokens", "from 2 to 7"],
        ),
        (
            "/api/leak",
            json!({"text": "the", "max_new_tokens": 0}),
            &["max_new_tokens", "from 1", "got 0"],
        ),
    ];
    cases.extend(
        requests
            .into_iter()
            .map(|(route, request, words)| (route, request.to_string(), 400, words)),
    );
    // Past the size limit: 413.
    let huge = json!({"prompt": "e".repeat(70 * 1024)}).to_string();
    cases.push(("/api/generate", huge, 413, &["larger than 65536"]));

    for (route, body, status, words) in &cases {
        let (got, value) = explorer.post_raw(route, body.as_bytes());
        let shown = &body[..body.len().min(80)];
        assert_eq!(got, *status, "POST {route} {shown}: {value}");
        let message = value["error"]
            .as_str()
            .unwrap_or_else(|| panic!("POST {route} {shown}: no error message in {value}"));
        for word in *words {
            assert!(
                message.contains(word),
                "POST {route} {shown}: `{word}` missing from {message:?}"
            );
        }
    }

    // A POST without a JSON body is refused too.
    let mut response = request(explorer.addr, "POST", "/api/generate", None);
    assert_eq!({ response.status }, 400, "{}", response.text());

    for path in ["/api/nope", "/nope", "/api/generate/x"] {
        let (status, value) = explorer.get(path);
        assert_eq!(status, 404, "GET {path}: {value}");
        let message = value["error"].as_str().unwrap();
        assert!(
            message.contains("no such route") && message.contains(path),
            "{message}"
        );
    }

    // A known route asked with the wrong method: 405, with a JSON message naming the right one.
    for (method, path, wanted) in [
        ("GET", "/api/generate", "POST"),
        ("POST", "/api/info", "GET"),
    ] {
        let mut response = request(explorer.addr, method, path, Some(b"{}"));
        assert_eq!({ response.status }, 405, "{method} {path}");
        let value: Value = serde_json::from_str(&response.text())
            .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err})"));
        let message = value["error"].as_str().unwrap_or_default();
        assert!(
            message.contains(path) && message.contains(&format!("takes {wanted}")),
            "{method} {path}: {message:?}"
        );
    }

    // Nothing of that started a generation, and the explorer still serves.
    let status = explorer.status();
    assert_eq!(
        status,
        json!({"active": 0, "finished": 0, "stopped_by_client": 0})
    );
    let streamed = explorer.generate(&json!({"prompt": PROMPT, "max_new_tokens": 3}));
    assert_eq!(streamed.tokens.len(), 3);
}

// ---- load and departures --------------------------------------------------------------------

#[test]
fn twenty_clients_at_once_each_get_the_tokens_they_would_get_alone() {
    const CLIENTS: usize = 20;
    let explorer = Arc::new(Explorer::start());
    let body = |seed: usize| {
        json!({
            "prompt": PROMPT, "temperature": 0.8, "seed": seed, "max_new_tokens": 40,
        })
    };
    let alone: Vec<Vec<u64>> = (0..CLIENTS)
        .map(|seed| explorer.generate(&body(seed)).ids())
        .collect();
    let distinct: std::collections::BTreeSet<_> = alone.iter().collect();
    assert!(
        distinct.len() > CLIENTS / 2,
        "the seeds hardly matter: {} distinct of {CLIENTS}",
        distinct.len()
    );

    let start = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|seed| {
            let (explorer, start, body) = (explorer.clone(), start.clone(), body(seed));
            std::thread::spawn(move || {
                start.wait();
                let streamed = explorer.generate(&body);
                assert_eq!(streamed.done["text"], streamed.text());
                assert_eq!(streamed.done["stopped"], false);
                streamed.ids()
            })
        })
        .collect();
    for (seed, client) in clients.into_iter().enumerate() {
        let together = client.join().expect("a client failed");
        assert_eq!(together, alone[seed], "seed {seed}: together vs alone");
    }
    let status = explorer.status_until("the streams to end", |s| s["active"] == 0);
    assert_eq!(status["finished"], 2 * CLIENTS, "{status}");
    assert_eq!(status["stopped_by_client"], 0, "{status}");
}

#[test]
fn a_client_that_leaves_mid_stream_stops_its_generation() {
    let explorer = Explorer::start();
    // 2000 tokens, each checked against the naive recompute and with the whole vocabulary's
    // probabilities: far more than the first event's worth of work.
    let body = json!({
        "prompt": PROMPT, "max_new_tokens": 2000, "verify": true, "top": 29,
    });
    let mut response = request(
        explorer.addr,
        "POST",
        "/api/generate",
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(response.status, 200);
    let (event, first) = next_event(&mut response.body).expect("a first event");
    assert_eq!(event, "token", "{first}");
    assert_eq!(first["step"], 0, "{first}");
    drop(response);

    let status = explorer.status_until("the generation to end", |s| {
        s["stopped_by_client"] != 0 || s["finished"] != 0
    });
    assert_eq!(
        status,
        json!({"active": 0, "finished": 0, "stopped_by_client": 1}),
        "the generation ran to its end after its client left"
    );
    // The explorer serves on.
    let streamed = explorer.generate(&json!({"prompt": PROMPT, "max_new_tokens": 3}));
    assert_eq!(streamed.tokens.len(), 3);
    let status = explorer.status_until("the stream to end", |s| s["active"] == 0);
    assert_eq!(status["finished"], 1, "{status}");
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let output = example("explore")
        .arg("--checkpoint")
        .arg(causal_dir())
        .arg("--leaky")
        .arg(leaky_dir())
        .args(["--port", &addr.port().to_string(), "--device", cpu()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stderr(&output);
    assert!(!output.status.success(), "it started: {text}");
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(!text.contains("panicked"), "a panic: {text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "not one line: {text}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    assert!(line.contains(&addr.to_string()), "{line}");
    assert!(line.contains("in use"), "{line}");
    assert!(line.contains("--port"), "{line}");
    // Nothing was served: standard output has no address.
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("explorer at"),
        "{:?}",
        output.stdout
    );
    drop(taken);
}

// ---- the page in a browser ------------------------------------------------------------------

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the screenshots go: `target/explorer/`.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/tmp")
        .to_path_buf();
    let dir = target.join("explorer");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_page_shows_each_view_doing_its_job() {
    let ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
    let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
    let driver = on_path(&["chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        assert!(
            !ci,
            "CI=true but chromium or chromedriver is missing: install chromium and \
             chromium-driver (apt-get install chromium chromium-driver)"
        );
        println!(
            "skipped: the browser test needs chromium and chromedriver on PATH (install \
             chromium and chromium-driver)"
        );
        return;
    };
    let explorer = Explorer::start();
    let port = free_port();
    let temp = fresh_dir("explore_browser");
    let _driver = Killed(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg(format!(
                "--log-path={}",
                temp.join("chromedriver.log").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let deadline = Instant::now() + HANG;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(drive(
        &explorer,
        port,
        &chromium,
        &temp.join("profile"),
        &screenshot_dir(),
    ));
}

async fn drive(
    explorer: &Explorer,
    driver_port: u16,
    chromium: &Path,
    profile: &Path,
    shots: &Path,
) {
    let args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium, "args": args}),
    );
    let client =
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
            .expect("a WebDriver session with Chromium");
    let result = Page {
        client: &client,
        shots,
    }
    .visit(explorer)
    .await;
    let _ = client.close().await;
    result
}

struct Page<'a> {
    client: &'a fantoccini::Client,
    shots: &'a Path,
}

use fantoccini::Locator::Css;

impl Page<'_> {
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|err| panic!("{err}: {script}"))
    }

    /// Run `script` until it returns something other than null or false; that.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + HANG;
        loop {
            let value = self.js(script).await;
            if !value.is_null() && value != json!(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "waited {HANG:?} for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, selector: &str) {
        self.client
            .find(Css(selector))
            .await
            .unwrap_or_else(|err| panic!("{selector}: {err}"))
            .click()
            .await
            .unwrap_or_else(|err| panic!("clicking {selector}: {err}"));
    }

    async fn type_into(&self, selector: &str, text: &str) {
        let input = self.client.find(Css(selector)).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
        let value = input.prop("value").await.unwrap();
        assert_eq!(value.as_deref(), Some(text), "{selector}");
    }

    async fn tab(&self, name: &str) {
        self.click(&format!("#tabs button[data-tab={name}]")).await;
        let shown = self
            .js(&format!(
                "return getComputedStyle(document.getElementById('{name}')).display"
            ))
            .await;
        assert_eq!(shown, "block", "the {name} tab is not shown");
    }

    /// No error message anywhere in the view `name`.
    async fn no_errors(&self, name: &str) {
        let errors = self
            .js(&format!(
                "return Array.from(document.querySelectorAll('#{name} .error')).map(e => e.textContent)"
            ))
            .await;
        assert_eq!(errors, json!([]), "the {name} view shows errors");
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
    }

    async fn visit(&self, explorer: &Explorer) {
        self.client.goto(&explorer.url()).await.unwrap();
        self.client
            .wait()
            .at_most(HANG)
            .for_element(Css("body[data-ready=true]"))
            .await
            .expect("the page never got ready");
        let load_ms = self
            .until(
                "the load event",
                "const n = performance.getEntriesByType('navigation')[0]; \
                 return n && n.loadEventEnd > 0 ? n.loadEventEnd - n.startTime : null",
            )
            .await;
        println!("page load time: {:.1} ms", load_ms.as_f64().unwrap());
        let models = self
            .js("return document.getElementById('models').textContent")
            .await;
        assert!(
            models.as_str().unwrap().contains("causal: causal mask"),
            "{models}"
        );
        self.generate().await;
        self.attention().await;
        self.shapes().await;
        self.leak().await;
        self.gallery().await;
    }

    async fn generate(&self) {
        let new_tokens = 20;
        self.tab("generate").await;
        self.type_into("#prompt", PROMPT).await;
        self.type_into("#temperature", "0").await;
        self.type_into("#max-new", &new_tokens.to_string()).await;
        self.click("#generate-button").await;
        self.client
            .wait()
            .at_most(HANG)
            .for_element(Css("#output[data-done=true]"))
            .await
            .expect("the generation never finished");
        let shown = self
            .js("const out = document.getElementById('output'); \
                 return { text: out.dataset.text, rate: Number(out.dataset.decodeTokensPerS), \
                   prompt: out.querySelector('.prompt').textContent, \
                   tokens: Array.from(out.querySelectorAll('.token')).map(t => t.textContent), \
                   bars: document.querySelectorAll('#top-bars .bar-row').length, \
                   rolling: document.querySelector('#window option[value=rolling]').disabled, \
                   rows: Array.from(document.querySelectorAll('#steps tbody tr')).map(r => \
                     [r.className, Number(r.querySelector('.cache-len').textContent)]) }")
            .await;
        let text = shown["text"].as_str().unwrap();
        let tokens: Vec<&str> = shown["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokens.len(), new_tokens, "{shown}");
        assert_eq!(tokens.concat(), text, "the token spans are not the text");
        assert_eq!(shown["prompt"], PROMPT);
        let (cli, cli_rate) = cli_greedy(PROMPT, new_tokens);
        assert_eq!(
            text, cli,
            "the page's greedy text is not the command line's"
        );
        assert_eq!(shown["bars"], 8, "{shown}");
        // Learned positions: the rolling window is not offered.
        assert_eq!(shown["rolling"], true, "{shown}");
        let rows: Vec<(String, u64)> = shown["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                (
                    row[0].as_str().unwrap().to_string(),
                    row[1].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(rows.len(), new_tokens, "{shown}");
        check_cache_lens(&rows, PROMPT.len() as u64, 8);
        let status = self
            .js("return document.getElementById('status').textContent")
            .await;
        assert!(
            status.as_str().unwrap().starts_with("done: 20 tokens"),
            "{status}"
        );
        println!(
            "decode: {:.0} tokens/s on the server (the page's done event), {} from the \
             command line (generate's stderr)",
            shown["rate"].as_f64().unwrap(),
            cli_rate.map_or("no rate".to_string(), |rate| format!("{rate:.0} tokens/s")),
        );
        self.no_errors("generate").await;
        self.screenshot("generate").await;
    }

    async fn attention(&self) {
        let text = "the cat ";
        self.tab("attention").await;
        self.type_into("#attn-text", text).await;
        self.click("#attn-button").await;
        self.until(
            "the heatmaps",
            &format!("return document.getElementById('heatmaps').dataset.text === {text:?}"),
        )
        .await;
        let checked = self
            .js(
                "const grids = Array.from(document.querySelectorAll('#heatmaps .grid')); \
                 const masked = Array.from(document.querySelectorAll('#heatmaps .cell.masked')); \
                 const sums = grids.map(grid => { const rows = {}; \
                   for (const c of grid.querySelectorAll('.cell')) \
                     rows[c.dataset.q] = (rows[c.dataset.q] || 0) + Number(c.dataset.w); \
                   return Object.values(rows); }); \
                 return { grids: grids.length, \
                   cells: document.querySelectorAll('#heatmaps .cell').length, \
                   masked: masked.length, \
                   bad: masked.filter(c => c.dataset.w !== '0' || c.textContent !== '0') \
                     .map(c => [c.dataset.q, c.dataset.k, c.dataset.w, c.textContent]), \
                   future: Array.from(document.querySelectorAll('#heatmaps .cell')) \
                     .filter(c => Number(c.dataset.k) > Number(c.dataset.q) \
                       && !c.classList.contains('masked')).length, \
                   hatched: masked.length > 0 && getComputedStyle(masked[0]).backgroundImage, \
                   sums: sums }",
            )
            .await;
        let t = text.len() as u64;
        // One layer of two heads.
        assert_eq!(checked["grids"], 2, "{checked}");
        assert_eq!(checked["cells"], 2 * t * t, "{checked}");
        assert_eq!(checked["masked"], 2 * t * (t - 1) / 2, "{checked}");
        assert_eq!(checked["future"], 0, "{checked}");
        assert_eq!(checked["bad"], json!([]), "masked cells that are not 0");
        assert!(
            checked["hatched"]
                .as_str()
                .is_some_and(|image| image.contains("repeating-linear-gradient")),
            "masked cells are not hatched: {checked}"
        );
        for (grid, sums) in checked["sums"].as_array().unwrap().iter().enumerate() {
            let sums = f64s(sums);
            assert_eq!(sums.len() as u64, t);
            for (q, sum) in sums.iter().enumerate() {
                assert!(
                    (sum - 1.0).abs() < 1e-5,
                    "heatmap {grid} row {q} sums to {sum}"
                );
            }
        }
        self.no_errors("attention").await;
        self.screenshot("attention").await;
    }

    async fn shapes(&self) {
        self.tab("shapes").await;
        let rows = self
            .js(
                "return Array.from(document.querySelectorAll('#shapes-table tbody tr')) \
                   .map(r => [r.cells[0].textContent, r.cells[1].textContent])",
            )
            .await;
        let rows: BTreeMap<String, String> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
            .collect();
        assert!(rows.len() > 5, "{rows:?}");
        assert_eq!(
            rows.get("ids").map(String::as_str),
            Some("[1, 8]"),
            "{rows:?}"
        );
        assert_eq!(
            rows.get("blocks.0.attn.scores").map(String::as_str),
            Some("[1, 2, 8, 8]"),
            "{rows:?}"
        );
        let caption = self
            .js("return document.getElementById('shapes-model').textContent")
            .await;
        assert!(caption.as_str().unwrap().contains("T=8"), "{caption}");
        self.screenshot("shapes").await;
    }

    async fn leak(&self) {
        let text = "the cat ";
        self.tab("leak").await;
        self.type_into("#leak-text", text).await;
        self.click("#leak-button").await;
        let figures = self
            .until(
                "both models' figures",
                "const f = s => Array.from(document.querySelectorAll(`#leak-${s} .figure .value`)) \
                   .map(v => v.textContent); \
                 const c = f('causal'), l = f('leaky'); \
                 return c.length && l.length ? { causal: c, leaky: l } : null",
            )
            .await;
        // teacher-forced loss, honest loss, probe violations / positions probed.
        assert_eq!(figures["causal"][2], "0 / 6", "{figures}");
        assert_eq!(figures["leaky"][2], "6 / 6", "{figures}");
        self.no_errors("leak").await;

        let position = 4;
        self.type_into("#probe-position", &position.to_string())
            .await;
        for (name, moved) in [("causal", 0), ("leaky", position)] {
            self.click(&format!("#probe-{name}")).await;
            let summary = self
                .until(
                    &format!("the {name} probe"),
                    &format!(
                        "const s = document.getElementById('probe-summary'); \
                         return s.textContent.startsWith('{name}:') \
                           ? {{ moved: s.dataset.earlierMoved, text: s.textContent, \
                               columns: document.querySelectorAll('#probe-bars .column').length, \
                               leaked: document.querySelectorAll('#probe-bars .column.leaked').length }} \
                           : null"
                    ),
                )
                .await;
            assert_eq!(summary["moved"], moved.to_string(), "{name}: {summary}");
            assert_eq!(summary["columns"], text.len(), "{name}: {summary}");
            assert_eq!(summary["leaked"], moved, "{name}: {summary}");
            let said = summary["text"].as_str().unwrap();
            assert!(
                said.contains(&format!("{moved} of the {position} positions before it")),
                "{said}"
            );
        }
        self.no_errors("leak").await;
        self.screenshot("leak").await;
    }

    async fn gallery(&self) {
        self.tab("gallery").await;
        // A shape fault: the crate's refusal.
        self.client
            .find(Css("#fault-select"))
            .await
            .unwrap()
            .select_by_value("transposed-key")
            .await
            .unwrap();
        self.click("#fault-button").await;
        let refused = self
            .until(
                "the transposed-key exhibit",
                "const r = document.getElementById('fault-result'); \
                 return r.dataset.fault === 'transposed-key' || r.querySelector('.error') \
                   ? r.textContent : null",
            )
            .await;
        assert!(
            refused
                .as_str()
                .unwrap()
                .contains("the crate refuses the call"),
            "{refused}"
        );
        self.no_errors_but_refusals().await;

        // A cache fault: where cached and naive decoding part, and the cache's lengths.
        self.client
            .find(Css("#fault-select"))
            .await
            .unwrap()
            .select_by_value("stale-cache")
            .await
            .unwrap();
        self.click("#fault-button").await;
        let shown = self
            .until(
                "the stale-cache exhibit",
                "const r = document.getElementById('fault-result'); \
                 return r.dataset.fault === 'stale-cache' || r.querySelector('.error') ? \
                   { text: r.textContent, wrong: r.querySelectorAll('td.wrong').length, \
                     errors: r.querySelectorAll('.error').length } : null",
            )
            .await;
        assert_eq!(shown["errors"], 0, "{shown}");
        assert!(
            shown["text"].as_str().unwrap().contains("at step 1"),
            "{shown}"
        );
        assert!(shown["wrong"].as_u64().unwrap() > 0, "{shown}");
        self.screenshot("gallery").await;
    }

    /// The gallery shows a shape fault's refusal in red: that is the exhibit, not an error.
    async fn no_errors_but_refusals(&self) {
        let errors = self
            .js(
                "return Array.from(document.querySelectorAll('#fault-result p.error')) \
                   .map(e => e.textContent)",
            )
            .await;
        assert_eq!(errors, json!([]), "the gallery shows errors");
    }
}
