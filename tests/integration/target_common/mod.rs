//! Helpers shared by the `target_<vendor>` integration tests: a sandbox, a config for one of its
//! vendors, runs of the real `target-roster` binary, Singer lines, the reject file, the fault
//! input every writer is put through, the STATE-order check against the sandbox's request log,
//! and Meltano's loader test stream.
//!
//! Use it with `use crate::target_common;`. Not every test uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use roster_sandbox::{RequestLogEntry, Sandbox, SandboxBuilder, Vendor};
use serde_json::{Value, json};

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
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// Runs `target-roster --config <config>` on `input` with `ROSTER_ZERO_DELAYS=1` (backoff only
/// slows tests down; client-side pacing stays real).
pub fn run(config: &Path, input: &str) -> Output {
    run_with(config, input, &[("ROSTER_ZERO_DELAYS", "1")])
}

/// Runs `target-roster --config <config>` on `input` with extra environment variables.
pub fn run_with(config: &Path, input: &str, env: &[(&str, &str)]) -> Output {
    run_args(config, input, &[], env)
}

/// Runs `target-roster --config <config> <args>` on `input` with extra environment variables.
pub fn run_args(config: &Path, input: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_target-roster"));
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("ROSTER_LOG", "warn")
        .env_remove("ROSTER_ZERO_DELAYS")
        // The default ledger (docs/sync.md) lives beside the config: one per test, kept across
        // its runs (.cargo/config.toml turns the default off for every other test).
        .env_remove("ROSTER_NO_DEFAULT_LEDGER")
        .env("XDG_STATE_HOME", config.parent().unwrap_or(Path::new(".")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    // A target that stops before reading all of its input (refused credentials) closes stdin.
    if let Err(err) = writer.join().unwrap() {
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
    out
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
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(str::to_string)
}

/// A SCHEMA message that takes any object.
pub fn schema(stream: &str) -> Value {
    json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": []})
}

/// A RECORD message.
pub fn rec(stream: &str, record: Value) -> Value {
    json!({"type": "RECORD", "stream": stream, "record": record})
}

/// A STATE message.
pub fn state(value: Value) -> Value {
    json!({"type": "STATE", "value": value})
}

/// Messages as Singer input text, one per line.
pub fn lines(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}

/// The record entries of `dir/rejects.ndjson` (none when the file does not exist).
pub fn rejects(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("rejects.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "RECORD")
        .collect()
}

/// The reject entry for input line `line`, if any.
pub fn reject_at(rejects: &[Value], line: u64) -> Option<&Value> {
    rejects.iter().find(|r| r["reject"]["line"] == line)
}

/// The reason of a reject entry.
pub fn reason(reject: &Value) -> &str {
    reject["reject"]["reason"].as_str().unwrap()
}

/// An array of a dump, by key.
pub fn items<'a>(dump: &'a Value, key: &str) -> &'a Vec<Value> {
    dump[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key:?} in {dump}"))
}

/// The item of `dump[key]` whose `field` is `id`.
pub fn find<'a>(dump: &'a Value, key: &str, field: &str, id: &str) -> Option<&'a Value> {
    items(dump, key).iter().find(|v| v[field] == id)
}

/// Panics when a value occurs twice.
#[track_caller]
pub fn assert_unique(mut values: Vec<String>, what: &str) {
    values.sort();
    let before = values.len();
    values.dedup();
    assert_eq!(values.len(), before, "some {what} arrived twice");
}

/// Records for the fault tests: for `i` in `0..N`, a user `u{i}` with attribute `n: i`, a
/// membership of `u{i}` in group `g{i % 7}` and an event `seen` of `u{i}` (each stream only when
/// listed in `streams`), the seven groups first when `groups` is listed, and a STATE `{"n": i}`
/// after every 25 users.
pub fn fault_input(streams: &[&str]) -> String {
    let has = |s: &str| streams.contains(&s);
    let mut input: Vec<Value> = streams.iter().map(|s| schema(s)).collect();
    if has("groups") {
        for g in 0..GROUPS {
            input.push(rec(
                "groups",
                json!({"id": format!("g{g}"), "name": format!("Group {g}")}),
            ));
        }
    }
    for i in 0..N {
        if has("users") {
            input.push(rec("users", json!({"id": format!("u{i}"), "n": i})));
        }
        if has("memberships") {
            input.push(rec(
                "memberships",
                json!({"group_id": format!("g{}", i % GROUPS), "user_id": format!("u{i}")}),
            ));
        }
        if has("events") {
            input.push(rec(
                "events",
                json!({"user_id": format!("u{i}"), "name": "seen"}),
            ));
        }
        if i % 25 == 24 {
            input.push(state(json!({"n": i})));
        }
    }
    lines(&input)
}

/// Users (and events) in [`fault_input`].
pub const N: usize = 150;
/// Groups in [`fault_input`].
pub const GROUPS: usize = 7;
/// The last state of [`fault_input`].
pub const FAULT_LAST_STATE: &str = r#"{"n":149}"#;

/// How many entries of the sandbox's request log match `what`.
pub fn answered(sb: &Sandbox, what: impl Fn(&RequestLogEntry) -> bool) -> u64 {
    sb.requests().iter().filter(|r| what(r)).count() as u64
}

/// Runs the target on `input` without zero delays and checks, the moment each state line comes
/// out, that the sandbox already holds everything the state covers: `covered(state)` is how
/// many writes that state covers, `done(sandbox)` how many the sandbox has answered (from its
/// request log, see [`answered`], or its store). Returns how many states were printed.
pub fn assert_state_follows_writes(
    sb: &Sandbox,
    config: &Path,
    input: String,
    covered: impl Fn(&Value) -> u64,
    done: impl Fn(&Sandbox) -> u64,
) -> usize {
    let mut child = Command::new(env!("CARGO_BIN_EXE_target-roster"))
        .arg("--config")
        .arg(config)
        .env("ROSTER_LOG", "warn")
        .env_remove("ROSTER_ZERO_DELAYS")
        .env_remove("ROSTER_NO_DEFAULT_LEDGER")
        .env("XDG_STATE_HOME", config.parent().unwrap_or(Path::new(".")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        // Read the log the moment the line arrives: the sandbox logs a request before answering
        // it, so every covered record's 2xx must be there already.
        let done = done(sb);
        let covers = covered(&serde_json::from_str::<Value>(&line).unwrap());
        assert!(
            done >= covers,
            "state {line} printed when only {done} writes were answered"
        );
        printed += 1;
    }
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
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

/// After a 429 storm: every event arrived once, nothing was rejected (a 429 proves nothing
/// happened, so even events are repeated safely), and the sandbox did answer 429s.
#[track_caller]
pub fn assert_storm_delivered_once(
    sb: &Sandbox,
    vendor: &str,
    events: &[String],
    rejected: &[Value],
) {
    assert_eq!(events.len(), N);
    assert!(rejected.is_empty(), "{rejected:?}");
    let stats = sb.stats();
    let throttled = stats.vendors[vendor]
        .statuses
        .get("429")
        .copied()
        .unwrap_or(0);
    assert!(throttled > 0, "the sandbox answered no 429: {stats:?}");
}

/// After 5xx answers, dropped connections and answers lost after the vendor applied the event
/// (`apply_then_fail`): an event that got a 5xx or lost its connection may have been recorded,
/// so it is not repeated but rejected with a replay hint. What the vendor holds is counted, not
/// merged: each event at most once; every event held or rejected; an event both held and
/// rejected is one the vendor applied before its answer was lost, so there are at most as many
/// as the sandbox lost answers, and at least one (the run did meet the case that a blind retry
/// would duplicate). Nothing else is rejected.
#[track_caller]
pub fn assert_events_once_or_rejected(sb: &Sandbox, events: &[String], rejected: &[Value]) {
    let mut held = std::collections::BTreeMap::<&str, usize>::new();
    for e in events {
        *held.entry(e.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = held.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "events the vendor holds more than once: {twice:?}"
    );
    assert!(
        rejected.iter().all(|r| r["stream"] == "events"),
        "{rejected:?}"
    );
    let mut rejected_users = std::collections::BTreeSet::new();
    for r in rejected {
        let user = r["record"]["user_id"].as_str().unwrap().to_string();
        assert!(reason(r).contains("could duplicate"), "{}", reason(r));
        assert!(rejected_users.insert(user.clone()), "{user} rejected twice");
    }
    let both = rejected_users
        .iter()
        .filter(|u| held.contains_key(u.as_str()))
        .count();
    assert_eq!(
        held.len() + rejected_users.len() - both,
        N,
        "every event is held or rejected"
    );
    let lost_answers = sb
        .requests()
        .iter()
        .filter(|r| {
            r.fault
                .as_deref()
                .is_some_and(|f| f.starts_with("apply_then_fail"))
        })
        .count();
    assert!(
        both <= lost_answers,
        "{both} events held and rejected, but only {lost_answers} answers were lost after the write"
    );
    assert!(
        both >= 1,
        "no event was applied with its answer lost: the run never met the case a blind retry duplicates ({lost_answers} lost answers)"
    );
}

/// 60 users with a STATE `{"covers": n}` after every fifth, through a sandbox that answers
/// slowly: each state must come out only once `n` upserts to `path` were answered `status`.
pub fn assert_user_states_follow_upserts(sb: &Sandbox, config: &Path, path: &str, status: u16) {
    let mut input = vec![schema("users")];
    for i in 0..60u64 {
        input.push(rec("users", json!({"id": format!("u{i}")})));
        if i % 5 == 4 {
            input.push(state(json!({"covers": i + 1})));
        }
    }
    let printed = assert_state_follows_writes(
        sb,
        config,
        lines(&input),
        |state| state["covers"].as_u64().unwrap(),
        |sb| {
            answered(sb, |r| {
                r.method == "POST" && r.path == path && r.status == status
            })
        },
    );
    assert!(printed >= 1);
}
