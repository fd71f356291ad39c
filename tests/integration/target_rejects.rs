//! The target's reject file, report, run summary, exit policy and messages, through the real
//! binary against the sandbox:
//! - the documented replay (`--input` the reject file, or stdin) keeps what is rejected again,
//!   drops what was delivered, and never loses a reject it did not replay;
//! - a clean run creates no reject file and leaves an earlier one alone; a run with rejects
//!   appends to it;
//! - files that can hold personal data are `0600` under a `022` umask;
//! - `reject_file: ""`, outputs that are the input, a bad `streams` override and an out-of-range
//!   `max_reject_ratio` are config errors (exit 2) naming what is wrong;
//! - `max_reject_ratio`, the summary after a 401, SIGINT before any state, colours.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use roster_sandbox::{FailRule, Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::bin::{self, TARGET};
use crate::support::rejects;
use crate::support::singer::lines;

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap()
}

/// Writes `dir/config.json`: the sandbox's Userflow config, the reject file in `dir`, `extra`.
fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    let mut config = sb.config(Vendor::Userflow);
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn target(dir: &Path, config: &Path, args: &[&str]) -> Command {
    let mut command = bin::target()
        .config(config)
        .args(args)
        .log("info")
        .current_dir(dir)
        .command();
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs with `--input input`.
fn run(dir: &Path, config: &Path, input: &Path, args: &[&str]) -> Output {
    target(dir, config, args)
        .arg("--input")
        .arg(input)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const USERS: &str = r#"{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":{"id":{"type":"string"},"email":{"type":["string","null"]}}},"key_properties":["id"]}"#;

fn user(id: &str, email: Value) -> Value {
    json!({"type": "RECORD", "stream": "users", "record": {"id": id, "email": email}})
}

/// The RECORD entries of a reject file, by record id.
fn reject_ids(path: &Path) -> Vec<String> {
    let mut ids: Vec<String> = rejects::read(path)
        .iter()
        .map(|v| v["record"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn held(sb: &Sandbox) -> Vec<String> {
    let mut ids: Vec<String> = sb.dump(Vendor::Userflow)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn replayed_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("rejects.ndjson.replayed-"))
        .collect()
}

/// First run: u1 and u2 refused by the vendor (a 422 each, fixed before the replay), u3 with a
/// numeric email (rejected again on replay), u4 delivered.
fn first_run(sb: &Sandbox, dir: &Path) -> PathBuf {
    let input = dir.join("input.singer");
    std::fs::write(
        &input,
        lines(&[
            serde_json::from_str(USERS).unwrap(),
            user("u1", json!("a@x.io")),
            user("u2", json!("b@x.io")),
            user("u3", json!(7)),
            user("u4", json!("d@x.io")),
            json!({"type": "STATE", "value": {"n": 4}}),
        ]),
    )
    .unwrap();
    // Userflow upserts with POST /users: fail the first two, then let the rest through. Ids are
    // in the body, so which two is up to the writer's order; the test reads what was rejected.
    sb.faults().fail_next(
        FailRule::new("/userflow/users", 2)
            .status(422)
            .method("POST"),
    );
    let config = config(sb, dir, json!({}));
    let out = run(dir, &config, &input, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rejects = dir.join("rejects.ndjson");
    let ids = reject_ids(&rejects);
    assert_eq!(ids.len(), 3, "{ids:?}: {}", stderr(&out));
    assert!(ids.contains(&"u3".to_string()), "{ids:?}");
    config
}

#[test]
fn the_documented_replay_keeps_what_is_rejected_again_and_drops_what_was_delivered() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let config = first_run(&sb, dir.path());
    let rejects = dir.path().join("rejects.ndjson");
    assert_eq!(held(&sb).len(), 1);
    // target-roster --config X --input <reject file>, X naming the same reject_file.
    let out = run(dir.path(), &config, &rejects, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(held(&sb), ["u1", "u2", "u4"], "{err}");
    assert_eq!(
        reject_ids(&rejects),
        ["u3"],
        "only the record rejected again: {err}"
    );
    assert!(
        replayed_copies(dir.path()).is_empty(),
        "every replayed record was sent or rejected again, so the moved-aside copy goes: {err}"
    );
    assert!(
        err.contains("replayed 3 records: 2 sent, 1 rejected again"),
        "{err}"
    );
    // Replaying again through stdin works the same way (`target-roster < rejects.ndjson`).
    let out = target(dir.path(), &config, &[])
        .stdin(std::fs::File::open(&rejects).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reject_ids(&rejects), ["u3"], "{}", stderr(&out));
    assert!(replayed_copies(dir.path()).is_empty());
}

#[test]
fn a_replay_that_stops_early_keeps_the_rejects_it_did_not_replay() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let config = first_run(&sb, dir.path());
    let rejects = dir.path().join("rejects.ndjson");
    let before = std::fs::read_to_string(&rejects).unwrap();
    // A line cut short at the end (a disk filled up): the replay stops there, exit 1.
    std::fs::write(&rejects, format!("{before}{{\"type\":\"REC")).unwrap();
    let out = run(dir.path(), &config, &rejects, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let copies = replayed_copies(dir.path());
    assert_eq!(copies.len(), 1, "{err}");
    assert!(
        std::fs::read_to_string(&copies[0])
            .unwrap()
            .starts_with(&before),
        "the moved-aside file holds every reject of the first run"
    );
    assert!(err.contains("the replayed rejects are kept in"), "{err}");
    assert_eq!(reject_ids(&rejects), ["u3"], "{err}");
}

#[test]
fn a_clean_run_creates_no_reject_file_and_leaves_an_earlier_one_alone() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sb, dir.path(), json!({}));
    let clean = dir.path().join("clean.singer");
    std::fs::write(
        &clean,
        lines(&[
            serde_json::from_str(USERS).unwrap(),
            user("u1", json!("a@x.io")),
        ]),
    )
    .unwrap();
    let out = run(dir.path(), &config, &clean, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rejects = dir.path().join("rejects.ndjson");
    assert!(!rejects.exists(), "no empty reject file after a clean run");
    // An earlier run's rejects: a clean run keeps them as they are.
    let earlier = format!(
        "{USERS}\n{}\n",
        json!({"type": "RECORD", "stream": "users", "record": {"id": "old", "email": 1},
            "reject": {"line": 2, "reason": "field email", "at": "2026-01-01T00:00:00Z"}})
    );
    std::fs::write(&rejects, &earlier).unwrap();
    let out = run(dir.path(), &config, &clean, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&rejects).unwrap(), earlier);
    // A run with a reject adds it after them.
    let bad = dir.path().join("bad.singer");
    std::fs::write(
        &bad,
        lines(&[serde_json::from_str(USERS).unwrap(), user("u9", json!(9))]),
    )
    .unwrap();
    let out = run(dir.path(), &config, &bad, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&rejects).unwrap();
    assert!(text.starts_with(&earlier), "{text}");
    assert_eq!(reject_ids(&rejects), ["old", "u9"]);
}

#[cfg(unix)]
#[test]
fn files_with_personal_data_are_private_under_a_022_umask() {
    use std::os::unix::fs::PermissionsExt;
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sb, dir.path(), json!({}));
    let input = dir.path().join("input.singer");
    std::fs::write(
        &input,
        lines(&[
            serde_json::from_str(USERS).unwrap(),
            user("u1", json!("a@x.io")),
            user("u2", json!(2)),
        ]),
    )
    .unwrap();
    let sh = |args: &str| {
        let out = bin::Bin::new("sh")
            .arg("-c")
            .arg(format!("umask 022; exec \"$0\" {args}"))
            .arg(TARGET)
            .log("warn")
            .current_dir(dir.path())
            .output();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let cfg = config.display();
    let inp = input.display();
    sh(&format!(
        "--config {cfg} --input {inp} --report report.json"
    ));
    sh(&format!(
        "--config {cfg} --input {inp} --dry-run --dry-run-output dry.ndjson"
    ));
    // The control: under this umask a plain file is world-readable.
    sh_touch(dir.path());
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("plain"), 0o644);
    for name in ["rejects.ndjson", "report.json", "dry.ndjson"] {
        assert_eq!(mode(name), 0o600, "{name}");
    }
}

#[cfg(unix)]
fn sh_touch(dir: &Path) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg("umask 022; : > plain")
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn an_empty_reject_file_and_outputs_that_are_the_input_are_refused_before_writing() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.singer");
    let text = lines(&[
        serde_json::from_str(USERS).unwrap(),
        user("u1", json!("a@x.io")),
    ]);
    std::fs::write(&input, &text).unwrap();
    let empty = config(&sb, dir.path(), json!({"reject_file": ""}));
    let out = run(dir.path(), &empty, &input, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"reject_file\" is empty"),
        "{}",
        stderr(&out)
    );
    let config = config(&sb, dir.path(), json!({}));
    let dotted = dir.path().join(".").join("input.singer");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--report".into(), input.display().to_string()],
            "--report",
        ),
        (
            vec!["--report".into(), dotted.display().to_string()],
            "--report",
        ),
        (
            vec![
                "--dry-run".into(),
                "--dry-run-output".into(),
                input.display().to_string(),
            ],
            "--dry-run-output",
        ),
        (
            vec![
                "--report".into(),
                dir.path().join("rejects.ndjson").display().to_string(),
            ],
            "--report and reject_file are the same file",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(dir.path(), &config, &input, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(std::fs::read_to_string(&input).unwrap(), text, "{args:?}");
    }
    // stdin being the input file counts too.
    let out = target(dir.path(), &config, &["--report", "input.singer"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), text);
    assert!(held(&sb).is_empty(), "nothing was sent");
}

#[test]
fn max_reject_ratio_fails_the_run_after_the_last_safe_state() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.singer");
    std::fs::write(
        &input,
        lines(&[
            serde_json::from_str(USERS).unwrap(),
            user("u1", json!("a@x.io")),
            user("u2", json!(2)),
            user("u3", json!(3)),
            json!({"type": "STATE", "value": {"n": 3}}),
        ]),
    )
    .unwrap();
    let config = config(&sb, dir.path(), json!({"max_reject_ratio": 0.5}));
    let out = run(dir.path(), &config, &input, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"n\":3}\n", "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("max_reject_ratio"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("2 of 3 records rejected (66.7%), more than max_reject_ratio 0.5 allows"),
        "{line}"
    );
    assert_eq!(held(&sb), ["u1"]);
    // Out of range: a config error naming the key.
    let config = self::config(&sb, dir.path(), json!({"max_reject_ratio": 5}));
    let out = run(dir.path(), &config, &input, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"max_reject_ratio\" must be a number from 0 to 1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn streams_errors_name_their_path_and_unused_overrides_are_warned_about() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.singer");
    std::fs::write(
        &input,
        lines(&[
            serde_json::from_str(USERS).unwrap(),
            user("u1", json!("a@x.io")),
        ]),
    )
    .unwrap();
    let bad = config(
        &sb,
        dir.path(),
        json!({"streams": {"public-users": {"kind": "users", "exlude": ["email"]}}}),
    );
    let out = run(dir.path(), &bad, &input, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"streams.public-users.exlude\""), "{err}");
    assert!(!err.contains("(config)"), "{err}");
    let unused = config(
        &sb,
        dir.path(),
        json!({"streams": {"acounts": {"kind": "groups"}, "users": {"exclude": ["x"]}}}),
    );
    let out = run(dir.path(), &unused, &input, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("streams.acounts in the config matched no stream of the input"),
        "{err}"
    );
    assert!(!err.contains("streams.users in the config"), "{err}");
    assert!(!err.contains('\u{1b}'), "no colours off a terminal: {err}");
}

#[test]
fn after_a_401_the_error_names_the_keys_and_the_counts_add_up() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.singer");
    std::fs::write(
        &input,
        lines(&[
            serde_json::from_str(USERS).unwrap(),
            user("u1", json!(1)),
            user("u2", json!("b@x.io")),
            user("u3", json!("c@x.io")),
        ]),
    )
    .unwrap();
    sb.faults().fail_next(
        FailRule::new("/userflow/users", 100)
            .status(401)
            .method("POST"),
    );
    // Slow answers: all three records are read before the 401 comes back, whatever the load.
    sb.faults().latency(
        Some(Vendor::Userflow),
        std::time::Duration::from_millis(400),
    );
    let config = config(&sb, dir.path(), json!({"max_concurrency": 1}));
    let report = dir.path().join("report.json");
    let out = run(
        dir.path(),
        &config,
        &input,
        &["--report", report.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("userflow refused the credentials (check the config keys `api_key`, `base_url`/`region`)"),
        "{err}"
    );
    assert!(err.contains("after 1 attempt (not retryable)"), "{err}");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let t = &report["totals"];
    let sum = ["sent", "rejected", "skipped", "unprocessed"]
        .iter()
        .map(|k| t[k].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(t["records_in"], 3, "{report:#}");
    assert_eq!(sum, 3, "{report:#}");
    assert_eq!(t["rejected"], 1, "{report:#}");
    assert_eq!(t["sent"], 0, "{report:#}");
    assert!(
        err.contains("users → users: 3 in, 0 sent, 1 rejected, 0 skipped, 2 unprocessed"),
        "{err}"
    );
    // Nothing is sent after the refusal: u3 waited for u2's place and never went out.
    let posts = sb
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/userflow/users")
        .count();
    assert_eq!(posts, 1, "{err}");
}

#[cfg(unix)]
#[test]
fn sigint_before_any_state_does_not_claim_a_state_covers_the_records() {
    use std::io::Write;
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sb, dir.path(), json!({}));
    let mut child = target(dir.path(), &config, &[])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(
            lines(&[
                serde_json::from_str(USERS).unwrap(),
                user("u1", json!("a@x.io")),
            ])
            .as_bytes(),
        )
        .unwrap();
    stdin.flush().unwrap();
    // Wait until u1 reached the sandbox, then interrupt with stdin still open.
    let started = std::time::Instant::now();
    while held(&sb).is_empty() && started.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty(), "no state was printed");
    assert!(!err.contains("last state printed"), "{err}");
    assert!(err.contains("no state was printed"), "{err}");
}

#[cfg(unix)]
#[test]
fn the_sandbox_log_has_no_colours_when_stderr_is_not_a_terminal() {
    use std::io::{BufRead, BufReader};
    let mut child = bin::sandbox()
        .args(["--port", "0"])
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("listening"), "{banner}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("shutting down"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn a_401_to_the_tap_names_the_keys_too() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(Vendor::Userflow);
    config["api_key"] = json!("not-the-key");
    let out = bin::tap()
        .config_json(dir.path(), &config)
        .log("warn")
        .output();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("userflow refused the credentials (check the config keys `api_key`, `base_url`/`region`)"),
        "{err}"
    );
    assert!(!err.contains("not-the-key"), "{err}");
}
