//! target-roster against the sandbox's Userflow: every kind lands exactly as sent (null
//! clearing, memberships added and removed), faults lose and duplicate nothing, STATE never
//! comes before the records it covers, and Meltano's loader test stream passes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use roster::sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap()
}

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> std::path::PathBuf {
    let mut config = sb.config(Vendor::Userflow);
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn run(config: &Path, input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_target-roster"))
        .arg("--config")
        .arg(config)
        .env("ROSTER_ZERO_DELAYS", "1")
        .env("ROSTER_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn schema(stream: &str) -> Value {
    json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": []})
}

fn rec(stream: &str, record: Value) -> Value {
    json!({"type": "RECORD", "stream": stream, "record": record})
}

fn lines(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}

fn user<'a>(dump: &'a Value, id: &str) -> Option<&'a Value> {
    dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == id)
}

fn group_ids(user: &Value) -> Vec<String> {
    let mut ids: Vec<String> = user["memberships"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| {
                    m["group"]["id"]
                        .as_str()
                        .or(m["group_id"].as_str())
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

#[test]
fn every_kind_lands_exactly_as_sent() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let input = lines(&[
        schema("users"),
        schema("groups"),
        schema("memberships"),
        schema("events"),
        rec(
            "users",
            json!({"id": "u1", "email": "a@x.io", "name": "Ann", "plan": "pro", "attributes": {"seats": 5}}),
        ),
        rec("users", json!({"id": "u2", "email": "b@x.io"})),
        rec("users", json!({"id": "u3", "email": "c@x.io"})),
        rec(
            "groups",
            json!({"id": "g1", "name": "Acme", "attributes": {"tier": "gold"}}),
        ),
        rec("groups", json!({"id": "g2", "name": "Beta"})),
        rec("groups", json!({"id": "g3", "name": "Gone"})),
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u1", "attributes": {"role": "admin"}}),
        ),
        rec("memberships", json!({"group_id": "g2", "user_id": "u1"})),
        rec("memberships", json!({"group_id": "g1", "user_id": "u2"})),
        rec(
            "events",
            json!({"user_id": "u1", "name": "signed_up", "attributes": {"plan": "pro"}}),
        ),
        // null clears, absent keeps
        rec("users", json!({"id": "u1", "attributes": {"seats": null}})),
        // removals and deletes
        rec(
            "memberships",
            json!({"group_id": "g2", "user_id": "u1", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ),
        rec(
            "users",
            json!({"id": "u3", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ),
        rec(
            "groups",
            json!({"id": "g3", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ),
        rec(
            "users",
            json!({"id": "nobody", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ),
        json!({"type": "STATE", "value": {"bookmarks": {"users": {"next_page": null}}}}),
    ]);
    let out = run(&cfg, &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(r#"{"bookmarks":{"users":{"next_page":null}}}"#)
    );
    let dump = sb.dump(Vendor::Userflow);
    let u1 = user(&dump, "u1").unwrap();
    assert_eq!(
        u1["attributes"],
        json!({"email": "a@x.io", "name": "Ann", "plan": "pro"}),
        "seats cleared by null, the rest kept: {u1}"
    );
    assert_eq!(group_ids(u1), vec!["g1"], "g2 membership removed: {u1}");
    assert_eq!(group_ids(user(&dump, "u2").unwrap()), vec!["g1"]);
    assert!(user(&dump, "u3").is_none(), "u3 deleted");
    let mut groups: Vec<&str> = dump["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    groups.sort_unstable();
    assert_eq!(groups, vec!["g1", "g2"]);
    let g1 = dump["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "g1")
        .unwrap();
    assert_eq!(g1["attributes"], json!({"name": "Acme", "tier": "gold"}));
    let events = dump["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["name"], "signed_up");
    assert_eq!(events[0]["user_id"], "u1");
    assert_eq!(events[0]["attributes"], json!({"plan": "pro"}));
    // The membership of u1 in g1 keeps its own attributes.
    let m = u1["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["group"]["id"] == "g1" || m["group_id"] == "g1")
        .unwrap();
    assert_eq!(m["attributes"], json!({"role": "admin"}));
    assert!(
        stderr.contains("19 sent") || stderr.contains("sent"),
        "{stderr}"
    );
    assert!(!stderr.contains(sb.config(Vendor::Userflow)["api_key"].as_str().unwrap()));
}

fn fault_input() -> String {
    let mut input = vec![schema("users"), schema("memberships"), schema("events")];
    for i in 0..150 {
        input.push(rec("users", json!({"id": format!("u{i}"), "n": i})));
        input.push(rec(
            "memberships",
            json!({"group_id": format!("g{}", i % 7), "user_id": format!("u{i}")}),
        ));
        input.push(rec(
            "events",
            json!({"user_id": format!("u{i}"), "name": "seen"}),
        ));
        if i % 25 == 24 {
            input.push(json!({"type": "STATE", "value": {"n": i}}));
        }
    }
    lines(&input)
}

/// Checks users and memberships all arrived; returns the events held and the events rejected.
fn check_fault_run(sb: &Sandbox, dir: &Path, out: &Output) -> (Vec<String>, Vec<Value>) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(r#"{"n":149}"#)
    );
    let dump = sb.dump(Vendor::Userflow);
    assert_eq!(dump["users"].as_array().unwrap().len(), 150, "{stderr}");
    for i in 0..150 {
        let u = user(&dump, &format!("u{i}")).unwrap();
        assert_eq!(u["attributes"]["n"], i);
        assert_eq!(group_ids(u), vec![format!("g{}", i % 7)]);
    }
    let mut events: Vec<String> = dump["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user_id"].as_str().unwrap().to_string())
        .collect();
    events.sort();
    let before = events.len();
    events.dedup();
    assert_eq!(events.len(), before, "no event twice");
    let rejected: Vec<Value> = std::fs::read_to_string(dir.join("rejects.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "RECORD")
        .collect();
    (events, rejected)
}

#[test]
fn a_429_storm_delivers_everything_once() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .rate_limit(Vendor::Userflow, "200/s,burst=5")
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The client paces at 600/s, three times what the sandbox allows: a storm of 429s.
    let cfg = config(
        &sb,
        dir.path(),
        json!({"max_retries": 50, "requests_per_second": 600}),
    );
    let out = run(&cfg, &fault_input());
    let (events, rejected) = check_fault_run(&sb, dir.path(), &out);
    // A 429 proves nothing happened, so even events are repeated safely.
    assert_eq!(events.len(), 150);
    assert!(rejected.is_empty(), "{rejected:?}");
    let stats = sb.stats();
    let throttled = stats.vendors["userflow"]
        .statuses
        .get("429")
        .copied()
        .unwrap_or(0);
    assert!(throttled > 0, "the sandbox answered no 429: {stats:?}");
}

#[test]
fn server_errors_and_dropped_connections_lose_nothing_and_duplicate_nothing() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .error_rate(Some(Vendor::Userflow), 0.15)
        .drop_rate(Some(Vendor::Userflow), 0.05)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"max_retries": 30}));
    let out = run(&cfg, &fault_input());
    let (events, rejected) = check_fault_run(&sb, dir.path(), &out);
    // An event that got a 5xx or lost its connection may have been recorded: it is not repeated
    // but rejected with a replay hint. Each event is in the sandbox once or in the reject file.
    assert!(
        rejected.iter().all(|r| r["stream"] == "events"),
        "{rejected:?}"
    );
    assert_eq!(events.len() + rejected.len(), 150);
    for r in &rejected {
        assert!(!events.contains(&r["record"]["user_id"].as_str().unwrap().to_string()));
        assert!(
            r["reject"]["reason"]
                .as_str()
                .unwrap()
                .contains("could duplicate")
        );
    }
}

#[test]
fn state_never_comes_before_the_records_it_covers() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .latency(Some(Vendor::Userflow), Duration::from_millis(40))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let mut input = vec![schema("users")];
    for i in 0..60u64 {
        input.push(rec("users", json!({"id": format!("u{i}")})));
        if i % 5 == 4 {
            input.push(json!({"type": "STATE", "value": {"covers": i + 1}}));
        }
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_target-roster"))
        .arg("--config")
        .arg(&cfg)
        .env("ROSTER_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = lines(&input);
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut printed = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        // Read the log the moment the line arrives: the sandbox logs a request before answering
        // it, so every covered record's 2xx must be there already.
        let done = sb
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/userflow/users" && r.status == 200)
            .count() as u64;
        let covers = serde_json::from_str::<Value>(&line).unwrap()["covers"]
            .as_u64()
            .unwrap();
        assert!(
            done >= covers,
            "state {line} printed when only {done} upserts were answered"
        );
        printed += 1;
    }
    writer.join().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(printed >= 1);
}

#[test]
fn meltanos_loader_test_stream_passes() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let input = lines(&[
        json!({"type": "SCHEMA", "stream": "meltano_test_stream", "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}}, "key_properties": ["id"]}),
        rec(
            "meltano_test_stream",
            json!({"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"}),
        ),
        json!({"type": "STATE", "value": {"bookmarks": {"meltano_test_stream": {}}}}),
    ]);
    let out = run(&cfg, &input);
    assert!(out.status.success());
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        let lower = line.to_lowercase();
        assert!(
            !lower.contains("error") && !lower.contains("exception"),
            "Meltano would fail on: {line}"
        );
    }
}
