//! Sync, not just a run (issue 14 items 1 and 2): the ledger remembers what each vendor account
//! accepted, so a second run over the same input sends nothing, a changed record is sent alone,
//! `sync_mode` leaves out what it must, `--full-resync` sends everything once more, and
//! `ledger: false` turns it all off. Against the sandbox's Userflow; the request log is the
//! witness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::target_common::{self, lines, rec, run_args, sandbox, schema, state, succeeded};

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    target_common::config(sb, Vendor::Userflow, dir, extra)
}

/// `n` users, `changed` of them with another plan.
fn users(n: usize, changed: &[usize]) -> String {
    let mut input = vec![schema("users")];
    for i in 0..n {
        let plan = if changed.contains(&i) { "pro" } else { "free" };
        input.push(rec(
            "users",
            json!({"id": format!("u{i}"), "email": format!("u{i}@x.io"), "plan": plan}),
        ));
    }
    input.push(state(json!({"done": n})));
    lines(&input)
}

/// Runs the target with `--report` and returns the report.
fn run(sb: &Sandbox, config: &Path, input: &str, args: &[&str]) -> (Output, Value) {
    let report = config.with_file_name("report.json");
    let mut all = vec!["--report", report.to_str().unwrap()];
    all.extend_from_slice(args);
    sb.clear_requests();
    let out = run_args(config, input, &all, &[("ROSTER_ZERO_DELAYS", "1")]);
    let report = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    (out, report)
}

/// The writes the sandbox received since the last run started.
fn writes(sb: &Sandbox) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn plan_of(sb: &Sandbox, id: &str) -> Value {
    let dump = sb.dump(Vendor::Userflow);
    let user = target_common::find(&dump, "users", "id", id)
        .unwrap_or_else(|| panic!("no user {id}: {dump}"));
    user["attributes"]["plan"].clone()
}

#[test]
fn a_second_run_over_the_same_input_sends_no_write() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let input = users(20, &[]);
    let (out, report) = run(&sb, &cfg, &input, &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 20);
    assert_eq!(report["totals"]["created"], 20, "{report}");
    assert_eq!(report["sync"]["change_detection"], true, "{report}");

    let (out, report) = run(&sb, &cfg, &input, &[]);
    let stderr = succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new(), "nothing changed");
    // Not even the connection check: it is made before the first request a run needs.
    let requests: Vec<String> = sb.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(requests, Vec::<String>::new(), "no request at all");
    assert_eq!(report["http"]["requests"], 0, "{report}");
    let users = &report["streams"]["users"];
    assert_eq!(users["sent"], 0, "{report}");
    assert_eq!(users["skipped"], 20, "{report}");
    assert_eq!(users["unchanged"], 20, "{report}");
    assert_eq!(users["skip_reason"], "unchanged", "{report}");
    assert!(
        stderr.contains("0 sent, 0 rejected, 20 skipped; 20 unchanged"),
        "{stderr}"
    );
    // The state still moves on: every record has an outcome.
    assert_eq!(
        target_common::last_state(&out).as_deref(),
        Some(r#"{"done":20}"#)
    );
}

#[test]
fn three_changed_records_send_three_writes() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    succeeded(&run(&sb, &cfg, &users(30, &[]), &[]).0);
    let (out, report) = run(&sb, &cfg, &users(30, &[3, 14, 29]), &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 3, "{:?}", writes(&sb));
    let users = &report["streams"]["users"];
    assert_eq!(users["updated"], 3, "{report}");
    assert_eq!(users["created"], 0, "{report}");
    assert_eq!(users["unchanged"], 27, "{report}");
    for id in ["u3", "u14", "u29"] {
        assert_eq!(plan_of(&sb, id), "pro");
    }
    assert_eq!(plan_of(&sb, "u4"), "free");
}

#[test]
fn update_only_and_create_only_on_existing_and_new_keys() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    // u0 and u1 exist.
    succeeded(&run(&sb, &cfg, &users(2, &[]), &[]).0);

    // update_only: u0 changed (sent), u2 new (left out).
    let cfg = config(&sb, dir.path(), json!({"sync_mode": "update_only"}));
    let (out, report) = run(&sb, &cfg, &users(3, &[0, 2]), &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 1, "{:?}", writes(&sb));
    assert_eq!(plan_of(&sb, "u0"), "pro");
    let dump = sb.dump(Vendor::Userflow);
    assert!(
        target_common::find(&dump, "users", "id", "u2").is_none(),
        "{dump}"
    );
    let users = &report["streams"]["users"];
    assert_eq!(users["updated"], 1, "{report}");
    assert_eq!(users["left_out"]["update_only"], 1, "{report}");
    assert_eq!(users["unchanged"], 1, "{report}");

    // create_only: u1 changed (left out), u3 new (sent).
    let cfg = config(&sb, dir.path(), json!({"sync_mode": "create_only"}));
    let mut input = vec![schema("users")];
    input.push(rec(
        "users",
        json!({"id": "u1", "email": "u1@x.io", "plan": "pro"}),
    ));
    input.push(rec(
        "users",
        json!({"id": "u3", "email": "u3@x.io", "plan": "pro"}),
    ));
    let (out, report) = run(&sb, &cfg, &lines(&input), &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 1, "{:?}", writes(&sb));
    assert_eq!(
        plan_of(&sb, "u1"),
        "free",
        "create_only changed nothing held"
    );
    assert_eq!(plan_of(&sb, "u3"), "pro");
    let users = &report["streams"]["users"];
    assert_eq!(users["created"], 1, "{report}");
    assert_eq!(users["left_out"]["create_only"], 1, "{report}");
    assert_eq!(users["skip_reason"], "create_only", "{report}");
}

#[test]
fn full_resync_sends_everything_once_and_refreshes_the_ledger() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let input = users(10, &[]);
    succeeded(&run(&sb, &cfg, &input, &[]).0);
    // Someone changed u5 behind roster's back: a full resync puts it right.
    let (out, report) = run(&sb, &cfg, &input, &["--full-resync"]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 10);
    assert_eq!(report["totals"]["updated"], 10, "{report}");
    assert_eq!(report["sync"]["change_detection"], false, "{report}");
    let (out, _) = run(&sb, &cfg, &input, &[]);
    succeeded(&out);
    assert_eq!(
        writes(&sb).len(),
        0,
        "the ledger was refreshed, not dropped"
    );
}

#[test]
fn ledger_false_sends_everything_every_time() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"ledger": false}));
    let input = users(5, &[]);
    for _ in 0..2 {
        let (out, report) = run(&sb, &cfg, &input, &[]);
        succeeded(&out);
        assert_eq!(writes(&sb).len(), 5);
        assert_eq!(report["totals"]["upserted"], 5, "{report}");
        assert_eq!(report["sync"]["ledger"], Value::Null, "{report}");
    }
    assert!(!dir.path().join("roster").exists(), "no ledger was created");
    // A mode that needs the ledger says so (exit 2).
    let cfg = config(
        &sb,
        dir.path(),
        json!({"ledger": false, "sync_mode": "update_only"}),
    );
    let out = run_args(&cfg, &input, &[], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync_mode"));
}

#[cfg(unix)]
#[test]
fn the_ledger_file_is_private_and_a_named_one_is_used() {
    use std::os::unix::fs::PermissionsExt;
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The default: $XDG_STATE_HOME/roster/ledger.sqlite (the helper points it at the test's
    // directory).
    let cfg = config(&sb, dir.path(), json!({}));
    succeeded(&run(&sb, &cfg, &users(2, &[]), &[]).0);
    let default = dir.path().join("roster/ledger.sqlite");
    assert_eq!(mode(&default), 0o600);
    // A named file, created 0600 whatever the umask.
    let named = dir.path().join("volume/sync.sqlite");
    let cfg = config(&sb, dir.path(), json!({"ledger": named}));
    let (out, report) = run(&sb, &cfg, &users(2, &[]), &[]);
    succeeded(&out);
    assert_eq!(
        report["totals"]["created"], 2,
        "a new ledger: everything is sent once"
    );
    assert_eq!(mode(&named), 0o600);
    assert_eq!(report["sync"]["ledger"], json!(named), "{report}");
}

#[test]
fn a_dry_run_reads_the_ledger_and_writes_nothing_to_it() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let (out, report) = run(&sb, &cfg, &users(4, &[]), &["--dry-run"]);
    succeeded(&out);
    assert_eq!(report["totals"]["sent"], 4, "{report}");
    assert!(!dir.path().join("roster/ledger.sqlite").exists());
    succeeded(&run(&sb, &cfg, &users(4, &[]), &[]).0);
    let (out, report) = run(&sb, &cfg, &users(4, &[1]), &["--dry-run"]);
    succeeded(&out);
    assert_eq!(report["totals"]["unchanged"], 3, "{report}");
    assert_eq!(report["totals"]["sent"], 1, "{report}");
}
