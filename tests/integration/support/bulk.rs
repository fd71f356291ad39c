//! `mode: bulk`: Singer input of users with bookmarks, target-roster runs (to the end, or as a
//! child that can be killed), waits on the sandbox's jobs, and the kill-then-rerun check.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::bin;
use super::files::write_text;
pub use super::rejects::rejects;

/// The SCHEMA of a users stream with a plan attribute.
pub fn users_schema() -> String {
    json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"], "schema": {
        "type": "object", "properties": {
            "id": {"type": "string"}, "email": {"type": ["string", "null"]},
            "plan": {"type": ["string", "null"]}, "seats": {"type": ["integer", "null"]}}}})
    .to_string()
}

/// A user record: id `u{n}`, email, plan and seats.
pub fn user(n: usize, plan: &str) -> String {
    json!({"type": "RECORD", "stream": "users", "record": {
        "id": format!("u{n}"), "email": format!("u{n}@example.com"), "plan": plan, "seats": n}})
    .to_string()
}

/// A state whose bookmark says the next record to send is `next`.
pub fn state(next: usize) -> String {
    json!({"type": "STATE", "value": {"bookmarks": {"users": {"next_page": next}}}}).to_string()
}

/// Users `from..to` with `plan`, a state after every `every` records and one at the end: what a
/// tap resuming from bookmark `from` sends.
pub fn users_input(from: usize, to: usize, plan: &str, every: usize) -> String {
    let mut out = users_schema();
    out.push('\n');
    for n in from..to {
        out.push_str(&user(n, plan));
        out.push('\n');
        if (n + 1 - from) % every == 0 {
            out.push_str(&state(n + 1));
            out.push('\n');
        }
    }
    out.push_str(&state(to));
    out.push('\n');
    out
}

/// A target config for `vendor` at the sandbox, in bulk mode, with a reject file in `dir`.
pub fn bulk_config(mut base: Value, dir: &Path, extra: Value) -> Value {
    base["mode"] = json!("bulk");
    base["reject_file"] = json!(dir.join("rejects.ndjson"));
    if let Value::Object(extra) = extra {
        base.as_object_mut().unwrap().extend(extra);
    }
    base
}

fn command(dir: &Path, config: &Value, input: &str, extra: &[&str]) -> bin::Bin {
    let input_path = write_text(&dir.join("input.jsonl"), input);
    bin::target()
        .config_json(dir, config)
        .input(&input_path)
        .args(extra)
        .log("info")
        .current_dir(dir)
}

/// Runs target-roster to the end.
pub fn run(dir: &Path, config: &Value, input: &str, extra: &[&str]) -> Output {
    command(dir, config, input, extra).output()
}

/// Runs target-roster to the end and insists on exit 0.
pub fn run_ok(dir: &Path, config: &Value, input: &str) -> Output {
    let out = run(dir, config, input, &[]);
    assert!(
        out.status.success(),
        "target-roster failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The STATE values target-roster printed.
pub fn states(stdout: &[u8]) -> Vec<Value> {
    super::singer::emitted(stdout)
}

/// A target-roster child whose stdout lines arrive, stamped, on a channel.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<(DateTime<Utc>, String)>,
    pub stderr: PathBuf,
}

impl Running {
    /// Every line so far.
    pub fn drain(&self) -> Vec<(DateTime<Utc>, String)> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts target-roster; stderr goes to a file in `dir`.
pub fn spawn(dir: &Path, config: &Value, input: &str) -> Running {
    let stderr = dir.join("stderr.log");
    let mut child = command(dir, config, input, &[])
        .command()
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Utc::now(), line)).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines: rx,
        stderr,
    }
}

/// Waits (up to a generous limit: the machine may be loaded) until `ready` holds.
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The jobs in a vendor's dump.
pub fn jobs(dump: &Value) -> Vec<Value> {
    dump["jobs"].as_array().cloned().unwrap_or_default()
}

/// A job that was uploaded and has not ended.
pub fn running(job: &Value) -> bool {
    !matches!(job["status"].as_str(), Some("completed" | "failed"))
}

/// The timestamp of a job event in a dump (`completed_at`, `end_time`).
pub fn time(job: &Value, key: &str) -> Option<DateTime<Utc>> {
    job[key]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// What [`kill_then_rerun`] saw.
#[derive(Debug)]
pub struct KillRerun {
    /// The bookmark of the last state the killed run printed.
    pub resume: usize,
    /// Rows of jobs that completed before the kill.
    pub done_before_kill: u64,
    /// Rows the killed run uploaded.
    pub uploaded_first: u64,
    /// Rows uploaded by both runs.
    pub uploaded_total: u64,
}

impl KillRerun {
    /// Rows the vendor applied twice: those of the killed run past its last state.
    pub fn duplicates(&self, n: usize) -> u64 {
        self.uploaded_total - n as u64
    }
}

/// Users `0..n` (a state every `every`) to `vendor` in bulk mode with `extra` settings; a
/// `kill -9` once a state is out and a job is between its upload and its end; then a rerun
/// from the last state printed, as a resuming tap would send it. Checks that the last state
/// covered only rows whose job had completed, that the rerun sent exactly the rest, and that
/// it ended with the final state.
pub fn kill_then_rerun(
    sb: &roster_sandbox::Sandbox,
    vendor: roster_sandbox::Vendor,
    n: usize,
    every: usize,
    extra: Value,
) -> KillRerun {
    let dir = tempfile::tempdir().unwrap();
    let cfg = bulk_config(sb.config(vendor), dir.path(), extra.clone());
    let mut target = spawn(dir.path(), &cfg, &users_input(0, n, "gold", every));
    let mut printed = Vec::new();
    wait_until("a state and a running job", || {
        printed.extend(target.drain());
        !printed.is_empty() && jobs(&sb.dump(vendor)).iter().any(running)
    });
    target.child.kill().unwrap();
    let killed_at = Utc::now();
    target.child.wait().unwrap();
    printed.extend(target.drain());
    let last: Value = serde_json::from_str(&printed.last().unwrap().1).unwrap();
    let resume = last["bookmarks"]["users"]["next_page"].as_u64().unwrap() as usize;
    let first: Vec<Value> = jobs(&sb.dump(vendor));
    let rows =
        |jobs: &[Value]| -> u64 { jobs.iter().map(|j| j["total_rows"].as_u64().unwrap()).sum() };
    // The rerun may start while the killed run's job still runs (Userpilot answers 409).
    let rerun = tempfile::tempdir().unwrap();
    let out = run_ok(
        rerun.path(),
        &bulk_config(sb.config(vendor), rerun.path(), extra),
        &users_input(resume, n, "gold", every),
    );
    assert_eq!(
        states(&out.stdout).last().unwrap(),
        &json!({"bookmarks": {"users": {"next_page": n}}})
    );
    wait_until("every job to end", || {
        !jobs(&sb.dump(vendor)).iter().any(running)
    });
    let all = jobs(&sb.dump(vendor));
    let done_before_kill: u64 = all
        .iter()
        .filter(|j| first.iter().any(|f| f["job_id"] == j["job_id"]))
        .filter(|j| {
            ["completed_at", "end_time"]
                .iter()
                .find_map(|k| time(j, k))
                .is_some_and(|t| t <= killed_at)
        })
        .map(|j| j["total_rows"].as_u64().unwrap())
        .sum();
    let seen = KillRerun {
        resume,
        done_before_kill,
        uploaded_first: rows(&first),
        uploaded_total: rows(&all),
    };
    assert!(
        resume as u64 <= done_before_kill,
        "the last state ({resume}) covers records whose job had not completed: {seen:?}"
    );
    assert!(
        seen.uploaded_first > done_before_kill,
        "the kill came between an upload and its job's success: {seen:?}"
    );
    assert_eq!(
        seen.uploaded_total - seen.uploaded_first,
        (n - resume) as u64,
        "the rerun sends exactly the records after the last state"
    );
    seen
}

/// The repository's sample config `name`, pointed at `sb` instead of the default port.
pub fn sample(name: &str, sb: &roster_sandbox::Sandbox, vendor: roster_sandbox::Vendor) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    config["base_url"] = json!(sb.base_url(vendor));
    config
}
