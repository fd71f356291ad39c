//! The target's runs: a sandbox with empty stores and a config for one of its vendors (reject
//! file in the run's directory), `target-roster` run to the end on some input ([`run`], or
//! [`target`] which collects its states and rejects), killed after a number of states, or
//! watched state by state against what the sandbox has answered ([`assert_state_follows_writes`]),
//! and Meltano's loader test stream.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use roster_sandbox::{Sandbox, SandboxBuilder, Vendor};
use serde_json::{Value, json};

use super::bin;
use super::files::Files;
pub use super::holdings::{answered, assert_unique, find, items};
pub use super::rejects::{reason, reject_at, rejects};
pub use super::singer::{Input, lines, rec, schema, state};

/// A sandbox with empty stores (the write-only vendors start empty anyway; Userflow too here).
pub fn builder() -> SandboxBuilder {
    Sandbox::builder().users(0).groups(0)
}

/// [`builder`] started on its own thread.
pub fn sandbox() -> Sandbox {
    builder().start_background().unwrap()
}

/// The sandbox's ready config for `vendor`, with the reject file in `dir` and `extra` keys over
/// it, written to `dir/config.json`.
pub fn config(sb: &Sandbox, vendor: Vendor, dir: &Path, extra: Value) -> PathBuf {
    let mut config = sb.config(vendor);
    config["reject_file"] = json!(dir.join(super::rejects::FILE));
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    super::files::write_json(&dir.join("config.json"), &config)
}

/// `config` with the reject file in `dir` (`dir/rejects.ndjson`), written to `dir/config.json`.
pub fn write_config(dir: &Path, config: &Value) -> PathBuf {
    let mut config = config.clone();
    config["reject_file"] = json!(dir.join(super::rejects::FILE));
    super::files::write_json(&dir.join("config.json"), &config)
}

/// Runs `target-roster --config <config>` on `input` (logging warnings and errors only).
pub fn run(config: &Path, input: &str) -> Output {
    run_args(config, input, &[], &[])
}

/// [`run`] with backoff's real delays.
pub fn run_real_delays(config: &Path, input: &str) -> Output {
    bin::target()
        .config(config)
        .default_ledger_in(config.parent().unwrap_or(Path::new(".")))
        .log("warn")
        .real_delays()
        .input_text(input)
        .output()
}

/// Runs `target-roster --config <config> <args>` on `input` with extra environment variables.
pub fn run_args(config: &Path, input: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    bin::target()
        .config(config)
        .default_ledger_in(config.parent().unwrap_or(Path::new(".")))
        .args(args)
        .log("warn")
        .envs(env)
        .input_text(input)
        .output()
}

/// stderr of a run that must have exited 0 (panics with it otherwise).
#[track_caller]
pub fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    stderr
}

/// The last line the run printed on stdout (its last safe state).
pub fn last_state(out: &Output) -> Option<String> {
    super::singer::last_state(&out.stdout)
}

/// What one target run left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub states: Vec<Value>,
    pub stderr: String,
    pub rejects: Vec<Value>,
}

impl Run {
    /// Panics with the run's stderr unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "target-roster failed:\n{}", self.stderr);
        self
    }

    /// The reject (a RECORD line of the reject file) whose record has this value at `field`.
    pub fn reject_for(&self, field: &str, value: &str) -> Option<&Value> {
        super::rejects::reject_for(&self.rejects, field, value)
    }

    /// Why the record with this value at `field` was rejected.
    pub fn reason_for(&self, field: &str, value: &str) -> String {
        let reject = self
            .reject_for(field, value)
            .unwrap_or_else(|| panic!("no reject for {field} {value}: {:?}", self.rejects));
        super::rejects::reason(reject).to_string()
    }
}

/// Runs target-roster with `config` (a reject file is added) on `input` from a file, logging
/// at `info`, and collects its states and rejects.
pub fn target(config: &Value, input: &Input) -> Run {
    let files = Files::new();
    let config_path = write_config(files.path(), config);
    let input_path = files.text("input.jsonl", input.text());
    let out = bin::target()
        .config(&config_path)
        .input(&input_path)
        .log("info")
        .output();
    Run {
        code: out.status.code().unwrap_or(-1),
        states: super::singer::emitted(&out.stdout),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        rejects: super::rejects::rejects(files.path()),
    }
}

/// Runs target-roster and kills it (SIGKILL) as soon as it has printed `states` state lines
/// (or lets it finish if it ends first). Returns the states it printed.
pub fn target_killed_after(config: &Value, input: &Input, states: usize) -> Vec<Value> {
    let files = Files::new();
    let config_path = write_config(files.path(), config);
    let input_path = files.text("input.jsonl", input.text());
    let mut child = bin::target()
        .config(&config_path)
        .input(&input_path)
        .log("info")
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        seen.push(serde_json::from_str(&line).unwrap());
        if seen.len() >= states {
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    seen
}

/// The records of `input` after the one whose state is `state` (a tap resuming from it), or
/// all of them without a state. States in the input must be `{"n": <record count so far>}`.
pub fn resume_after(input: &Input, state: Option<&Value>) -> Input {
    let done = state.and_then(|s| s["n"].as_u64()).unwrap_or(0) as usize;
    let mut out = Input::new();
    let mut records = 0;
    for line in &input.0 {
        let message: Value = serde_json::from_str(line).unwrap();
        match message["type"].as_str() {
            Some("RECORD") => {
                records += 1;
                if records > done {
                    out.0.push(line.clone());
                }
            }
            Some("STATE") if records >= done => out.0.push(line.clone()),
            Some("SCHEMA") => out.0.push(line.clone()),
            _ => {}
        }
    }
    out
}

/// Runs the target on `input` with backoff's real delays and calls `check` with each STATE
/// value the moment its line comes out (while the target runs on); the run must exit 0.
pub fn each_state(config: &Path, input: String, mut check: impl FnMut(&Value)) {
    let mut child = bin::target()
        .config(config)
        .default_ledger_in(config.parent().unwrap_or(Path::new(".")))
        .log("warn")
        .real_delays()
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        check(&serde_json::from_str::<Value>(&line.unwrap()).unwrap());
    }
    writer.join().unwrap().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the target on `input` with backoff's real delays and checks, the moment each state
/// line comes out, that the sandbox already holds everything the state covers: `covered(state)`
/// is how many writes that state covers, `done(sandbox)` how many the sandbox has answered
/// (from its request log, see [`answered`], or its store). Returns how many states were
/// printed. (The compliance suite's `state_follows_writes` checks this for every writer.)
pub fn assert_state_follows_writes(
    sb: &Sandbox,
    config: &Path,
    input: String,
    covered: impl Fn(&Value) -> u64,
    done: impl Fn(&Sandbox) -> u64,
) -> usize {
    let mut printed = 0;
    each_state(config, input, |state| {
        let done = done(sb);
        let covers = covered(state);
        assert!(
            done >= covers,
            "state {state} printed when only {done} writes were answered"
        );
        printed += 1;
    });
    printed
}

/// Meltano's loader test (`meltano config test target-roster`): SCHEMA, RECORD and STATE of
/// `meltano_test_stream`; it fails when the target exits non-zero or any output line contains
/// "error" or "exception".
pub fn assert_meltano_test_stream_passes(config: &Path) {
    let input = lines(&[
        json!({"type": "SCHEMA", "stream": "meltano_test_stream", "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}}, "key_properties": ["id"]}),
        rec(
            "meltano_test_stream",
            json!({"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"}),
        ),
        state(json!({"bookmarks": {"meltano_test_stream": {}}})),
    ]);
    let out = run(config, &input);
    let stderr = succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines().chain(stderr.lines()) {
        let lower = line.to_lowercase();
        assert!(
            !lower.contains("error") && !lower.contains("exception"),
            "Meltano would fail on: {line}"
        );
    }
    assert_eq!(
        stdout.lines().last(),
        Some(r#"{"bookmarks":{"meltano_test_stream":{}}}"#),
        "the state comes back"
    );
}
