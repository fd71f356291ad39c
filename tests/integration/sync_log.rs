//! `sync_log: FILE` and the duplicate-identity guard, through the real binary against the
//! sandbox:
//! - the sync log is valid Singer (SCHEMAs first whose `key_properties` are properties, every
//!   RECORD valid against its stream's schema, a closing STATE), one `_roster_sync_log` row per
//!   input record and one `_roster_rejects` row per reject, `0600`, while stdout stays
//!   state-only;
//! - an earlier sync log is moved aside, never overwritten; a sync log that is the input is
//!   refused (exit 2);
//! - `on_duplicate_identity`: one email on two keys and keys that differ in case, trailing
//!   space or a Unicode case fold are warned about (stream, keys, lines) and counted, or
//!   rejected naming the earlier key and line;
//! - the file lands in PostgreSQL through meltanolabs target-postgres (the reverse-ETL test's
//!   throwaway cluster on 127.0.0.1; a missing prerequisite skips, and fails on CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::reverse_etl::{PG_PASSWORD, STEP_TIMEOUT, postgres_and_target_postgres};
use crate::support;

const TARGET: &str = env!("CARGO_BIN_EXE_target-roster");

const USERS: &str = r#"{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":{"id":{"type":"string"},"email":{"type":["string","null"]}}},"key_properties":["id"]}"#;
const AUDIT: &str = r#"{"type":"SCHEMA","stream":"audit","schema":{"type":"object","properties":{"id":{"type":"string"}}},"key_properties":["id"]}"#;

fn user(id: &str, email: Value) -> String {
    json!({"type": "RECORD", "stream": "users", "record": {"id": id, "email": email}}).to_string()
}

/// Lines 1-9: two SCHEMAs, six users records (two duplicates of identity, one of them by a
/// Unicode fold, one invalid), an audit record (skipped), a STATE.
fn input_text() -> String {
    [
        USERS.to_string(),                                                         // 1
        AUDIT.to_string(),                                                         // 2
        user("u1", json!("ann@example.com")),                                      // 3
        user("u2", json!("ANN@Example.com")),                                      // 4: u1's email
        user("u1 ", json!("other@example.com")), // 5: u1 with a trailing space
        user("straße", json!("s@example.com")),  // 6
        user("STRASSE", json!("t@example.com")), // 7: a case fold of line 6
        user("u9", json!(12)),                   // 8: invalid
        r#"{"type":"RECORD","stream":"audit","record":{"id":"a1"}}"#.to_string(), // 9
        r#"{"type":"STATE","value":{"bookmarks":{"users":{"n":1}}}}"#.to_string(), // 10
    ]
    .join("\n")
        + "\n"
}

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    let mut config = sb.config(Vendor::Userflow);
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    config["sync_log"] = json!(dir.join("sync.singer"));
    config["streams"] = json!({"audit": {"kind": "skip"}});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    support::write_json(&dir.join("config.json"), &config)
}

fn run(dir: &Path, config: &Path, input: &Path) -> Output {
    run_with(dir, config, input, &[])
}

fn run_with(dir: &Path, config: &Path, input: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(TARGET)
        .envs(env.iter().copied())
        .arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .arg("--report")
        .arg(dir.join("report.json"))
        .env("ROSTER_LOG", "info")
        .env("ROSTER_ZERO_DELAYS", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks the file is Singer a loader takes: SCHEMA before a stream's RECORDs,
/// `key_properties` among the properties and non-null in every record, each RECORD valid
/// against its schema, a STATE last. Returns the RECORDs by stream.
fn assert_singer(messages: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut schemas: BTreeMap<String, jsonschema::Validator> = BTreeMap::new();
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut records: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in messages {
        match m["type"].as_str().unwrap() {
            "SCHEMA" => {
                let stream = m["stream"].as_str().unwrap().to_string();
                let props = m["schema"]["properties"].as_object().unwrap();
                let key: Vec<String> = m["key_properties"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                assert!(!key.is_empty(), "{stream}: key_properties");
                for k in &key {
                    assert!(props.contains_key(k), "{stream}: key {k} is not a property");
                }
                keys.insert(stream.clone(), key);
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&m["schema"])
                    .unwrap();
                schemas.insert(stream, validator);
            }
            "RECORD" => {
                let stream = m["stream"].as_str().unwrap();
                let schema = schemas.get(stream).expect("RECORD before its SCHEMA");
                let errors: Vec<String> = schema
                    .iter_errors(&m["record"])
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{m}: {errors:?}");
                for k in &keys[stream] {
                    assert!(!m["record"][k].is_null(), "{m}: key {k} is null");
                }
                records
                    .entry(stream.to_string())
                    .or_default()
                    .push(m["record"].clone());
            }
            "STATE" => assert!(m["value"].is_object()),
            other => panic!("unexpected message type {other}"),
        }
    }
    assert_eq!(messages.last().unwrap()["type"], "STATE");
    records
}

#[test]
fn the_sync_log_is_singer_with_a_row_per_record_and_stdout_stays_state_only() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.singer");
    std::fs::write(&input, input_text()).unwrap();
    let config = config(&sb, dir.path(), json!({}));
    let out = run(dir.path(), &config, &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // stdout: bare state values only.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.trim().is_empty());
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(v.get("bookmarks").is_some(), "stdout: {line}");
    }
    let path = dir.path().join("sync.singer");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let messages = read_lines(&path);
    assert_eq!(messages[0]["type"], "SCHEMA");
    assert_eq!(messages[1]["type"], "SCHEMA");
    let records = assert_singer(&messages);
    let log = &records["_roster_sync_log"];
    let by_line: BTreeMap<u64, &Value> = log
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r))
        .collect();
    // One row per input record (lines 3-9), each with one run id.
    assert_eq!(
        by_line.keys().copied().collect::<Vec<_>>(),
        (3..=9).collect::<Vec<_>>()
    );
    let run_ids: std::collections::BTreeSet<&str> =
        log.iter().map(|r| r["run_id"].as_str().unwrap()).collect();
    assert_eq!(run_ids.len(), 1);
    assert_eq!(by_line[&3]["action"], "sent");
    assert_eq!(by_line[&3]["key"], "u1");
    assert_eq!(by_line[&3]["kind"], "users");
    assert_eq!(by_line[&8]["action"], "rejected");
    assert_eq!(by_line[&9]["action"], "skipped");
    assert_eq!(by_line[&9]["stream"], "audit");
    assert!(by_line[&9]["reason"].as_str().is_some());
    // The rejects stream: the invalid record, with its field and the record itself.
    let rejects = &records["_roster_rejects"];
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0]["line"], 8);
    assert_eq!(rejects[0]["stream"], "users");
    assert_eq!(rejects[0]["record"]["id"], "u9");
    // The guard warned (stream, both keys, both lines) and counted three duplicates.
    assert!(
        stderr.contains("\"u2\"") && stderr.contains("\"u1\"") && stderr.contains("line 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"STRASSE\"") && stderr.contains("\"straße\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("duplicate identities: 3 records"),
        "{stderr}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["totals"]["duplicate_identities"], 3, "{report}");
    assert_eq!(report["streams"]["users"]["duplicate_identities"], 3);
}

#[test]
fn on_duplicate_identity_reject_keeps_the_first_and_rejects_the_later_naming_it() {
    reject_keeps_the_first(&[]);
}

/// The same findings and reports when the guard's index spills to disk at every value
/// (`ROSTER_IDENTITY_IN_MEMORY=1`).
#[test]
fn on_duplicate_identity_finds_the_same_when_its_index_spills_to_disk() {
    reject_keeps_the_first(&[("ROSTER_IDENTITY_IN_MEMORY", "1")]);
}

fn reject_keeps_the_first(env: &[(&str, &str)]) {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.singer");
    // An email with surrounding whitespace and upper case on a third key, too.
    let text = input_text() + &user("u3", json!("  Ann@EXAMPLE.com ")) + "\n";
    std::fs::write(&input, text).unwrap();
    let config = config(&sb, dir.path(), json!({"on_duplicate_identity": "reject"}));
    let out = run_with(dir.path(), &config, &input, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let held: Vec<String> = sb.dump(Vendor::Userflow)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    let mut held = held;
    held.sort();
    assert_eq!(
        held,
        ["straße", "u1"],
        "only the first of each identity is sent"
    );
    let rejects: BTreeMap<u64, Value> = read_lines(&dir.path().join("rejects.ndjson"))
        .into_iter()
        .filter(|r| r["type"] == "RECORD")
        .map(|r| (r["reject"]["line"].as_u64().unwrap(), r))
        .collect();
    assert_eq!(
        rejects.keys().copied().collect::<Vec<_>>(),
        [4, 5, 7, 8, 11]
    );
    let reason = |line: u64| {
        rejects[&line]["reject"]["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        reason(4).contains("\"u1\"") && reason(4).contains("line 3"),
        "{}",
        reason(4)
    );
    assert!(
        reason(5).contains("\"u1\"") && reason(5).contains("line 3"),
        "{}",
        reason(5)
    );
    assert!(
        reason(7).contains("\"straße\"") && reason(7).contains("line 6"),
        "{}",
        reason(7)
    );
    assert!(
        reason(11).contains("\"u1\"") && reason(11).contains("line 3"),
        "{}",
        reason(11)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["totals"]["duplicate_identities"], 4, "{report}");
    assert_eq!(report["totals"]["rejected"], 5, "{report}");
}

#[test]
fn an_earlier_sync_log_is_moved_aside_and_a_sync_log_that_is_the_input_is_refused() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.singer");
    std::fs::write(&input, input_text()).unwrap();
    let config_path = config(&sb, dir.path(), json!({}));
    assert_eq!(run(dir.path(), &config_path, &input).status.code(), Some(0));
    let first = std::fs::read_to_string(dir.path().join("sync.singer")).unwrap();
    let out = run(dir.path(), &config_path, &input);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was moved to"), "{stderr}");
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sync.singer.")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), first);
    // The sync log may not be the input.
    let config_path = config(&sb, dir.path(), json!({"sync_log": input}));
    let before = std::fs::read_to_string(&input).unwrap();
    let out = run(dir.path(), &config_path, &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sync_log"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), before);
}

#[test]
fn the_sync_log_lands_in_postgres_through_target_postgres() {
    let Some((pg, venv)) = postgres_and_target_postgres() else {
        return;
    };
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.singer");
    std::fs::write(&input, input_text()).unwrap();
    let config = config(&sb, dir.path(), json!({}));
    let out = run(dir.path(), &config, &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let target_config = support::write_json(
        &dir.path().join("target-postgres.json"),
        &json!({
            "host": "127.0.0.1",
            "port": pg.port,
            "user": "roster",
            "password": PG_PASSWORD,
            "database": "postgres",
            "default_target_schema": "roster",
            "load_method": "upsert",
        }),
    );
    support::pipeline(
        r#"target-postgres --config "$TARGET_CONFIG" < "$SYNC_LOG" > /dev/null"#,
        &[&venv.join("bin")],
        &[
            ("TARGET_CONFIG", &target_config),
            ("SYNC_LOG", &dir.path().join("sync.singer")),
        ],
        STEP_TIMEOUT,
    )
    .assert_success("target-postgres < sync log");
    let rows = pg.query(
        "SELECT line, stream, coalesce(key, ''), action FROM roster._roster_sync_log ORDER BY line",
    );
    let lines: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(lines, ["3", "4", "5", "6", "7", "8", "9"], "{rows:?}");
    assert_eq!(rows[0][1..], ["users", "u1", "sent"]);
    assert_eq!(rows[5][3], "rejected");
    assert_eq!(rows[6][1..], ["audit", "", "skipped"]);
    let rejects = pg.query("SELECT line, stream, reason FROM roster._roster_rejects");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(rejects[0][0], "8");
    assert_eq!(rejects[0][1], "users");
}

#[test]
fn a_users_row_with_a_group_key_membership_is_one_row_sent_or_rejected() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(Vendor::Appcues);
    config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
    config["sync_log"] = json!(dir.path().join("sync.singer"));
    config["streams"] = json!({"users": {"group_key": "company_id"}});
    let config = support::write_json(&dir.path().join("config.json"), &config);
    // Appcues adds members with POST /groups/{id}/users: refuse the one for c2.
    sb.faults().fail_next(
        roster_sandbox::FailRule::new("/appcues/v2/accounts/10001/groups/c2/users", 1)
            .method("POST")
            .status(422),
    );
    let schema = r#"{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":{"id":{"type":"string"},"company_id":{"type":["string","null"]}}},"key_properties":["id"]}"#;
    let rec = |id: &str, company: &str| {
        json!({"type": "RECORD", "stream": "users", "record": {"id": id, "company_id": company}})
            .to_string()
    };
    let input = dir.path().join("in.singer");
    std::fs::write(
        &input,
        [schema.to_string(), rec("u1", "c1"), rec("u2", "c2")].join("\n") + "\n",
    )
    .unwrap();
    let out = run(dir.path(), &config, &input);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = assert_singer(&read_lines(&dir.path().join("sync.singer")));
    let log = &records["_roster_sync_log"];
    assert_eq!(log.len(), 2, "one row per record, not per op: {log:?}");
    assert_eq!(
        log.iter().find(|r| r["line"] == 2).unwrap()["action"],
        "sent"
    );
    let u2 = log.iter().find(|r| r["line"] == 3).unwrap();
    assert_eq!(u2["action"], "rejected");
    assert_eq!(u2["key"], "u2");
    assert!(
        u2["reason"]
            .as_str()
            .unwrap()
            .contains("membership in group \"c2\""),
        "{u2}"
    );
    assert_eq!(records["_roster_rejects"].len(), 1);
}
