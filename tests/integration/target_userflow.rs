//! target-roster against the sandbox's Userflow: every kind lands exactly as sent (null
//! clearing, memberships added and removed), SIGTERM stops sending and leaves the last safe
//! state, `--report` counts what happened, a refused record is rejected alone, refused
//! credentials stop the run, and the progress bar. What every writer must do (round trip,
//! STATE order, fault storms, lost answers, rejects, Meltano's test stream) is in
//! `compliance::userflow`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::bin;
use crate::support::target;

use std::path::Path;
use std::time::Duration;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};
use target::{lines, rec, rejects, run, sandbox, schema, succeeded};

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> std::path::PathBuf {
    target::config(sb, Vendor::Userflow, dir, extra)
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
            json!({"user_id": "u1", "name": "signed_up", "timestamp": "2024-01-01T00:00:00Z", "attributes": {"plan": "pro"}}),
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
    let stderr = succeeded(&out);
    assert_eq!(
        target::last_state(&out).as_deref(),
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
    // The delete of a user Userflow never had is skipped, not rejected.
    assert!(
        stderr.contains("15 records") && stderr.contains("14 sent, 0 rejected, 1 skipped"),
        "{stderr}"
    );
    assert!(!stderr.contains(sb.config(Vendor::Userflow)["api_key"].as_str().unwrap()));
}

#[test]
fn sigterm_stops_sending_waits_for_requests_in_flight_and_prints_the_last_safe_state() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    let sb = target::builder()
        .latency(Some(Vendor::Userflow), Duration::from_millis(100))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let report_path = dir.path().join("report.json");
    const USERS: u64 = 2000;
    let mut input = vec![schema("users")];
    for i in 0..USERS {
        input.push(rec("users", json!({"id": format!("u{i}")})));
        if i % 10 == 9 {
            input.push(target::state(json!({"covers": i + 1})));
        }
    }
    let input = lines(&input);
    let mut child = bin::target()
        .config(&cfg)
        .report(&report_path)
        .log("warn")
        .real_delays()
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Stdin stays open (a tap still running): the signal, not the end of input, ends the run.
    let (stdin_done_tx, stdin_done) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
        let _ = stdin_done.recv();
    });
    let (tx, states) = std::sync::mpsc::channel::<String>();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // A state comes out during the run, long before the input is through.
    let first = states.recv_timeout(Duration::from_secs(60)).unwrap();
    let users_answered =
        |sb: &Sandbox| target::answered(sb, |r| r.method == "POST" && r.path == "/userflow/users");
    assert!(
        users_answered(&sb) < USERS,
        "the run ended before the signal"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    drop(stdin_done_tx);
    writer.join().unwrap();
    reader.join().unwrap();
    let mut printed = vec![first];
    printed.extend(states.try_iter());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM"), "{stderr}");

    // It stopped sending: far from every user went out, and nothing arrives after the exit.
    let sent = users_answered(&sb);
    assert!(sent < USERS, "{sent} users sent after SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(users_answered(&sb), sent, "a request after the exit");
    // Requests in flight were waited for: every logged request got its answer.
    assert!(
        sb.requests().iter().all(|r| r.status == 200),
        "{:?}",
        sb.requests()
    );
    // The last state covers only what the sandbox holds, in input order.
    let last: Value = serde_json::from_str(printed.last().unwrap()).unwrap();
    let covers = last["covers"].as_u64().unwrap();
    assert!(covers <= sent, "state covers {covers}, {sent} sent");
    let dump = sb.dump(Vendor::Userflow);
    for i in 0..covers {
        assert!(
            user(&dump, &format!("u{i}")).is_some(),
            "u{i} is covered but absent"
        );
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["exit_code"], 1);
    assert!(
        report["outcome"].as_str().unwrap().contains("SIGTERM"),
        "{report}"
    );
    assert_eq!(report["last_state"], last);
    assert_eq!(report["states_out"], printed.len());
}

#[test]
fn the_report_counts_streams_requests_retries_and_429s() {
    let sb = sandbox();
    // The first user upsert is answered 429, 429 and 503 before it goes through.
    for (status, count) in [(429, 2), (503, 1)] {
        sb.faults().fail_next(
            roster_sandbox::FailRule::new("/userflow/users", count)
                .method("POST")
                .status(status),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let report_path = dir.path().join("report.json");
    let input = lines(&[
        schema("users"),
        schema("groups"),
        schema("audit"),
        rec("users", json!({"id": "u1"})),
        rec("users", json!({"email": "no-id@x.io"})),
        rec(
            "users",
            json!({"id": "u3", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ),
        rec("groups", json!({"id": "g1", "name": "Acme"})),
        rec("audit", json!({"x": 1})),
        target::state(json!({"n": 1})),
    ]);
    let out = target::run_args(
        &cfg,
        &input,
        &["--report", report_path.to_str().unwrap()],
        &[],
    );
    let stderr = succeeded(&out);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let counts = |stream: &str| {
        let c = &report["streams"][stream];
        (
            c["kind"].clone(),
            c["records_in"].as_u64().unwrap(),
            c["sent"].as_u64().unwrap(),
            c["rejected"].as_u64().unwrap(),
            c["skipped"].as_u64().unwrap(),
        )
    };
    assert_eq!(counts("users"), (json!("users"), 3, 1, 1, 1), "{report:#}");
    assert_eq!(
        counts("groups"),
        (json!("groups"), 1, 1, 0, 0),
        "{report:#}"
    );
    assert_eq!(counts("audit"), (Value::Null, 1, 0, 0, 1), "{report:#}");
    assert_eq!(report["totals"]["records_in"], 5);
    assert_eq!(report["vendor"], "userflow");
    assert_eq!(report["dry_run"], false);
    let http = &report["http"];
    assert_eq!(http["retries"], 3, "{report:#}");
    assert_eq!(http["status_429"], 2, "{report:#}");
    assert_eq!(http["status_5xx"], 1, "{report:#}");
    assert!(http["requests"].as_u64().unwrap() >= 3, "{report:#}");
    assert!(http["rate_limit_wait_seconds"].is_number(), "{report:#}");
    assert_eq!(report["states_in"], 1);
    assert_eq!(report["states_out"], 1);
    assert_eq!(report["last_state"], json!({"n": 1}));
    assert_eq!(report["outcome"], "ok");
    assert_eq!(report["exit_code"], 0);
    assert!(
        report["reject_file"]
            .as_str()
            .unwrap()
            .ends_with("rejects.ndjson")
    );
    // The same on stderr, and no progress bar (stderr is not a terminal here).
    assert!(
        stderr.contains("target-roster run to userflow: 5 records")
            && stderr.contains("users → users: 3 in, 1 sent, 1 rejected, 1 skipped")
            && stderr.contains("3 retries, 2 answered 429, 1 answered 5xx")
            && stderr.contains("replay them with --input"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\r') && !stderr.contains("\u{1b}["),
        "{stderr:?}"
    );
}

/// The next `count` POSTs to `path` are answered `status`.
fn fail(sb: &Sandbox, path: &str, status: u16, count: u32) {
    sb.faults().fail_next(
        roster_sandbox::FailRule::new(path, count)
            .method("POST")
            .status(status),
    );
}

#[test]
fn a_refused_or_exhausted_record_is_rejected_alone_with_the_vendors_answer() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"max_retries": 2}));
    let input = lines(&[
        schema("users"),                                      // 1
        schema("events"),                                     // 2
        rec("users", json!({"id": "u1"})),                    // 3
        rec("events", json!({"user_id": "u1", "name": "x"})), // 4: answered 422
    ]);
    fail(&sb, "/userflow/events", 422, 1);
    let out = run(&cfg, &input);
    let stderr = succeeded(&out);
    let rejected = rejects(dir.path());
    assert_eq!(
        rejected.len(),
        1,
        "{rejected:?} {stderr} {:?}",
        sb.requests()
    );
    let r = target::reject_at(&rejected, 4).unwrap();
    assert_eq!(r["reject"]["vendor_status"], 422);
    assert!(
        r["reject"]["vendor_body"]
            .as_str()
            .unwrap()
            .contains("error"),
        "{r}"
    );
    assert!(target::reason(r).contains("refused"), "{r}");
    assert!(user(&sb.dump(Vendor::Userflow), "u1").is_some());

    // 503 past the retry budget (max_retries 2: three attempts) for one upsert: rejected with
    // the last answer; the other user still goes through. Five 503s for two users of three
    // attempts each: however their attempts interleave, exactly one meets three of them and the
    // other succeeds at the latest on its third.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &sb,
        dir.path(),
        json!({"max_retries": 2, "max_concurrency": 1}),
    );
    fail(&sb, "/userflow/users", 503, 5);
    let out = run(
        &cfg,
        &lines(&[
            schema("users"),
            rec("users", json!({"id": "u2"})),
            rec("users", json!({"id": "u3"})),
            target::state(json!({"n": 3})),
        ]),
    );
    let stderr = succeeded(&out);
    assert_eq!(target::last_state(&out).as_deref(), Some(r#"{"n":3}"#));
    let rejected = rejects(dir.path());
    assert_eq!(rejected.len(), 1, "{rejected:?}: {stderr}");
    let gone = rejected[0]["record"]["id"].as_str().unwrap().to_string();
    let through = if gone == "u2" { "u3" } else { "u2" };
    assert!(gone == "u2" || gone == "u3", "{gone}");
    assert_eq!(rejected[0]["reject"]["vendor_status"], 503);
    assert!(
        target::reason(&rejected[0]).contains("past the retry budget"),
        "{}",
        rejected[0]
    );
    let dump = sb.dump(Vendor::Userflow);
    assert!(user(&dump, &gone).is_none());
    assert!(user(&dump, through).is_some());
}

#[test]
fn refused_credentials_stop_the_run_with_exit_1_before_anything_is_sent() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"api_key": "not-the-key"}));
    let out = run(
        &cfg,
        &lines(&[
            schema("users"),
            rec("users", json!({"id": "u1"})),
            target::state(json!({"n": 1})),
        ]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty(), "no state covers an unsent record");
    assert!(stderr.contains("userflow"), "{stderr}");
    assert!(
        !stderr.contains("not-the-key"),
        "the key never shows: {stderr}"
    );
    assert!(user(&sb.dump(Vendor::Userflow), "u1").is_none());
}

#[test]
fn a_progress_bar_only_when_stderr_is_a_terminal() {
    use std::process::Command;
    // util-linux `script` gives the target a terminal (it is in every Debian and Ubuntu base).
    if Command::new("script").arg("--version").output().is_err() {
        crate::support::skip_or_fail("util-linux `script` is not installed");
        return;
    }
    let sb = target::builder()
        .latency(Some(Vendor::Userflow), Duration::from_millis(30))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"max_concurrency": 1}));
    let mut input = vec![schema("users")];
    input.extend((0..60).map(|i| rec("users", json!({"id": format!("u{i}")}))));
    let input_path = dir.path().join("input.singer");
    std::fs::write(&input_path, lines(&input)).unwrap();
    let command = format!(
        "{} --config {} --input {} > {}",
        bin::TARGET,
        cfg.display(),
        input_path.display(),
        dir.path().join("state.out").display(),
    );
    // `script` passes the usual environment on to the target (with real delays, in colour).
    let out = bin::Bin::new("script")
        .args(["-qec", &command, "/dev/null"])
        .log("warn")
        .env_remove("NO_COLOR")
        .output();
    let terminal = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{terminal}");
    assert!(
        terminal.contains("records (") && terminal.contains("in flight"),
        "no progress bar on a terminal: {terminal:?}"
    );
    assert!(
        terminal.contains("users → users: 60 in, 60 sent"),
        "{terminal}"
    );
    // Not a terminal: the summary alone.
    let out = run(&cfg, &lines(&input));
    let stderr = succeeded(&out);
    assert!(!stderr.contains("in flight"), "{stderr}");
}
