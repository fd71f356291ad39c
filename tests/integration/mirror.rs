//! Mirror deletes (issue 14 §3, target side): under `sync_mode: mirror`, once a full pass of a
//! stream has been read (the closing `ACTIVATE_VERSION` of a classic tap, or the clean end of
//! the input for a tap that sends it only at the start), the records roster wrote earlier for
//! that stream and that the pass no longer holds are deleted at the vendor, behind
//! `max_deletes` and `max_delete_ratio`. Against the sandbox's Userflow (two users seeded there
//! that roster never wrote); its request log is the witness.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::{self, bin};
use crate::target_common::{lines, schema, state};

/// The two users the sandbox holds before any run: roster never wrote them.
const OUTSIDERS: [&str; 2] = ["user_00001", "user_00002"];

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .seed(3)
        .users(OUTSIDERS.len())
        .groups(0)
        .start_background()
        .unwrap()
}

/// A Userflow config under `sync_mode: mirror` with its ledger in `dir`, `extra` over it.
fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    let mut extra = extra;
    extra["sync_mode"] = json!("mirror");
    extra["ledger"] = json!(dir.join("ledger.sqlite"));
    crate::target_common::config(sb, Vendor::Userflow, dir, extra)
}

fn user(i: usize, version: u64) -> Value {
    json!({
        "type": "RECORD",
        "stream": "users",
        "record": {"id": format!("m{i}"), "email": format!("m{i}@x.io"), "plan": "free"},
        "version": version,
    })
}

fn activate(version: u64) -> Value {
    json!({"type": "ACTIVATE_VERSION", "stream": "users", "version": version})
}

/// One pass of users `ids` in `version`: opened and closed by `ACTIVATE_VERSION` as asked.
fn pass(ids: impl IntoIterator<Item = usize>, version: u64, open: bool, close: bool) -> String {
    let mut input = vec![schema("users")];
    if open {
        input.push(activate(version));
    }
    input.extend(ids.into_iter().map(|i| user(i, version)));
    if close {
        input.push(activate(version));
    }
    input.push(state(json!({"pass": version})));
    lines(&input)
}

/// Runs the target (extra `args`) on `input` and returns its output and report.
fn run(sb: &Sandbox, config: &Path, input: &str, args: &[&str]) -> (Output, Value) {
    let report = config.with_file_name("report.json");
    let _ = std::fs::remove_file(&report);
    sb.clear_requests();
    let out = bin::target()
        .config(config)
        .arg("--report")
        .arg(&report)
        .args(args)
        .log("warn")
        .input_text(input)
        .output();
    let report = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    (out, report)
}

#[track_caller]
fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    stderr
}

/// The DELETE requests the sandbox received since the last run started.
fn deletes(sb: &Sandbox) -> Vec<String> {
    let mut paths: Vec<String> = sb
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.trim_start_matches("/userflow/users/").to_string())
        .collect();
    paths.sort();
    paths
}

/// The users Userflow holds, sorted.
fn held(sb: &Sandbox) -> Vec<String> {
    let dump = sb.dump(Vendor::Userflow);
    let mut ids: Vec<String> = crate::target_common::items(&dump, "users")
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

/// The outsiders and users `m{i}` for `ids`, sorted as [`held`] is.
fn expected(ids: impl IntoIterator<Item = usize>) -> Vec<String> {
    let mut all: Vec<String> = OUTSIDERS.iter().map(|s| s.to_string()).collect();
    all.extend(ids.into_iter().map(|i| format!("m{i}")));
    all.sort();
    all
}

#[test]
fn mirror_classic_passes_delete_exactly_the_missing_records_and_never_what_roster_did_not_write() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    // The tap's first pass: opened and closed. Nothing older to delete; the outsiders stay.
    let (out, report) = run(&sb, &cfg, &pass(0..10, 1, true, true), &[]);
    ok(&out);
    assert_eq!(deletes(&sb), Vec::<String>::new());
    assert_eq!(report["streams"]["users"]["created"], 10, "{report}");
    assert_eq!(held(&sb), expected(0..10));
    // The next pass (no opening message, as classic taps do): m3 is gone from the source; the
    // rest are unchanged, skipped, and not deleted.
    let (out, report) = run(
        &sb,
        &cfg,
        &pass((0..10).filter(|i| *i != 3), 2, false, true),
        &[],
    );
    ok(&out);
    assert_eq!(deletes(&sb), ["m3"]);
    assert_eq!(held(&sb), expected((0..10).filter(|i| *i != 3)));
    let users = &report["streams"]["users"];
    assert_eq!(
        (
            &users["unchanged"],
            &users["deleted"],
            &users["mirror_deletes"],
            &users["sent"],
            &users["unprocessed"]
        ),
        (&json!(9), &json!(1), &json!(1), &json!(1), &json!(0)),
        "{report}"
    );
    // The same pass again: m3 is gone already, nothing else goes.
    let (out, _) = run(
        &sb,
        &cfg,
        &pass((0..10).filter(|i| *i != 3), 3, false, true),
        &[],
    );
    ok(&out);
    assert_eq!(deletes(&sb), Vec::<String>::new());
}

#[test]
fn mirror_start_only_passes_delete_at_the_clean_end_of_the_input() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    // singer-sdk's convention: ACTIVATE_VERSION once, at the start, a new version each run.
    ok(&run(&sb, &cfg, &pass(0..10, 1700000001, true, false), &[]).0);
    assert_eq!(deletes(&sb), Vec::<String>::new());
    let (out, report) = run(&sb, &cfg, &pass(1..10, 1700000002, true, false), &[]);
    ok(&out);
    assert_eq!(deletes(&sb), ["m0"]);
    assert_eq!(held(&sb), expected(1..10));
    assert_eq!(report["streams"]["users"]["deleted"], 1, "{report}");
    // A dry run shows the delete the next pass would make (1 of 9: past the ratio, forced), and
    // makes none.
    let (out, report) = run(
        &sb,
        &cfg,
        &pass(2..10, 1700000003, true, false),
        &["--dry-run", "--force-deletes"],
    );
    let stderr = ok(&out);
    assert_eq!(deletes(&sb), Vec::<String>::new());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("DELETE") && l.contains("/users/m1")),
        "{stderr}"
    );
    assert_eq!(report["streams"]["users"]["mirror_deletes"], 1, "{report}");
    assert_eq!(held(&sb), expected(1..10));
}

#[test]
fn mirror_guard_trips_sends_no_delete_and_exits_1_then_force_deletes_passes() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    ok(&run(&sb, &cfg, &pass(0..10, 1, true, true), &[]).0);
    // Three of ten gone: 30% is past the default max_delete_ratio 0.1.
    let input = pass(3..10, 2, false, true);
    let (out, report) = run(&sb, &cfg, &input, &[]);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert_eq!(deletes(&sb), Vec::<String>::new(), "no delete is sent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("mirror deletes stopped"))
        .unwrap_or_else(|| panic!("{stderr}"));
    for figure in [
        "stream \"users\"",
        "3 deletes of 10 records held (30.0%)",
        "max_delete_ratio 0.1",
        "--force-deletes",
    ] {
        assert!(line.contains(figure), "{figure}: {line}");
    }
    assert_eq!(
        crate::target_common::last_state(&out).as_deref(),
        Some(r#"{"pass":2}"#),
        "the last safe state is written"
    );
    assert_eq!(held(&sb), expected(0..10));
    // A count limit trips too, whatever the ratio.
    let strict = config(
        &sb,
        dir.path(),
        json!({"max_deletes": 2, "max_delete_ratio": 1}),
    );
    let (out, _) = run(&sb, &strict, &input, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("past max_deletes 2"));
    assert_eq!(deletes(&sb), Vec::<String>::new());
    // --force-deletes: this run deletes them.
    let cfg = config(&sb, dir.path(), json!({}));
    let (out, report) = run(&sb, &cfg, &input, &["--force-deletes"]);
    ok(&out);
    assert_eq!(deletes(&sb), ["m0", "m1", "m2"], "{report}");
    assert_eq!(held(&sb), expected(3..10));
}

#[test]
fn mirror_inputs_without_activate_version_delete_nothing_even_empty_ones() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"max_delete_ratio": 1}));
    ok(&run(&sb, &cfg, &pass(0..10, 1, true, true), &[]).0);
    for input in [
        // A partial pass: records of a new version, no message (the tap stopped mid-pass).
        pass(0..4, 2, false, false),
        // Records without any version.
        lines(&[
            schema("users"),
            json!({"type": "RECORD", "stream": "users", "record": {"id": "m0", "email": "m0@x.io", "plan": "free"}}),
        ]),
        // Empty.
        lines(&[schema("users"), state(json!({"pass": 2}))]),
        String::new(),
    ] {
        let (out, _) = run(&sb, &cfg, &input, &[]);
        ok(&out);
        assert_eq!(deletes(&sb), Vec::<String>::new(), "{input}");
    }
    assert_eq!(held(&sb), expected(0..10));
}

#[test]
fn mirror_a_stream_the_config_skips_deletes_nothing() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    ok(&run(
        &sb,
        &config(&sb, dir.path(), json!({})),
        &pass(0..10, 1, true, true),
        &[],
    )
    .0);
    // The stream is left out on purpose for a while: its records are not read, so the pass
    // says nothing about what the source holds.
    let skipping = config(
        &sb,
        dir.path(),
        json!({"max_delete_ratio": 1, "streams": {"users": {"kind": "skip"}}}),
    );
    let (out, report) = run(&sb, &skipping, &pass(0..10, 2, false, true), &[]);
    ok(&out);
    assert_eq!(deletes(&sb), Vec::<String>::new(), "{report}");
    assert_eq!(held(&sb), expected(0..10));
}

#[test]
fn mirror_an_input_that_ends_with_an_error_deletes_nothing() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"max_delete_ratio": 1}));
    ok(&run(&sb, &cfg, &pass(0..10, 1, true, true), &[]).0);
    // A whole pass, closed, then a broken line (a tap killed mid-write).
    let mut input = pass(0..5, 2, false, true);
    input.push_str("{\"type\": \"RECO\n");
    let (out, _) = run(&sb, &cfg, &input, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(deletes(&sb), Vec::<String>::new());
    // A start-only pass cut by a RECORD before its SCHEMA.
    let mut input = pass(0..5, 3, true, false);
    input.push_str(&lines(&[
        json!({"type": "RECORD", "stream": "other", "record": {}}),
    ]));
    let (out, _) = run(&sb, &cfg, &input, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(deletes(&sb), Vec::<String>::new());
    assert_eq!(held(&sb), expected(0..10));
}

#[test]
fn mirror_a_record_rejected_in_the_pass_is_still_in_the_source_and_not_deleted() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"max_delete_ratio": 1}));
    ok(&run(&sb, &cfg, &pass(0..5, 1, true, true), &[]).0);
    // m2 fails the stream's SCHEMA (its plan must be a string): rejected, and still a user of
    // the source; m4 left it.
    let typed = json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
        "schema": {"type": "object", "properties": {"plan": {"type": "string"}}}});
    let mut input = vec![typed];
    for i in 0..4 {
        let mut record = user(i, 2);
        if i == 2 {
            record["record"]["plan"] = json!(7);
        }
        input.push(record);
    }
    input.push(activate(2));
    input.push(state(json!({"pass": 2})));
    let (out, report) = run(&sb, &cfg, &lines(&input), &[]);
    ok(&out);
    assert_eq!(report["streams"]["users"]["rejected"], 1, "{report}");
    assert_eq!(deletes(&sb), ["m4"]);
    assert_eq!(held(&sb), expected(0..4));
}

/// kill -9 while the deletes are on the wire (Userflow slowed down, one request at a time),
/// then the tap's next run: no delete is lost, none is wrong, and a user the killed run had
/// deleted who is back in the source is written again.
#[test]
fn mirror_kill_9_in_the_middle_of_the_deletes_then_a_rerun_loses_none_and_makes_no_wrong_one() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &sb,
        dir.path(),
        json!({"max_delete_ratio": 1, "max_concurrency": 1}),
    );
    ok(&run(&sb, &cfg, &pass(0..30, 1, true, false), &[]).0);
    // Pass 2 keeps m0..m9: twenty deletes, 150 ms each.
    sb.clear_requests();
    sb.faults()
        .latency(Some(Vendor::Userflow), Duration::from_millis(150));
    let input =
        support::files::write_text(&dir.path().join("pass2.jsonl"), pass(0..10, 2, true, false));
    let mut child = bin::target()
        .config(&cfg)
        .input(&input)
        .log("info")
        .command()
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("killed.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while deletes(&sb).len() < 4 {
        assert!(Instant::now() < deadline, "no deletes came");
        assert!(
            child.try_wait().unwrap().is_none(),
            "it ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before_kill = deletes(&sb);
    assert!(before_kill.len() < 20, "{before_kill:?}");
    // Let the request on the wire land (its answer is lost), then the tap's next pass: the
    // first user the killed run deleted is back in the source (the vendor's answer came, but
    // no commit did: the ledger must not take it for unchanged).
    std::thread::sleep(Duration::from_millis(400));
    sb.faults().latency(Some(Vendor::Userflow), Duration::ZERO);
    let back = [before_kill[0][1..].parse::<usize>().unwrap()];
    let (out, report) = run(&sb, &cfg, &pass((0..10).chain(back), 3, true, false), &[]);
    ok(&out);
    let rerun = deletes(&sb);
    let gone: Vec<String> = (10..30).map(|i| format!("m{i}")).collect();
    assert!(
        before_kill.iter().all(|d| gone.contains(d)),
        "the killed run deleted a record of its pass: {before_kill:?}"
    );
    assert!(
        rerun
            .iter()
            .all(|d| gone.contains(d) && *d != format!("m{}", back[0])),
        "the rerun deleted a record of its pass: {rerun:?} {report}"
    );
    assert_eq!(held(&sb), expected((0..10).chain(back)), "{report}");
}

/// `mode: bulk` (Userpilot): the pass's upserts go as import jobs, the deletes after them
/// through the vendor's delete call, and the writer flushes twice (the input's work, then the
/// deletes).
#[test]
fn mirror_in_bulk_mode_deletes_after_the_jobs() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .job_step(Duration::from_millis(10))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(Vendor::Userpilot);
    config["mode"] = json!("bulk");
    config["sync_mode"] = json!("mirror");
    config["ledger"] = json!(dir.path().join("ledger.sqlite"));
    config["max_delete_ratio"] = json!(0.5);
    let cfg = crate::target_common::write_config(dir.path(), &config);
    let userpilot = |sb: &Sandbox| -> Vec<String> {
        let mut ids: Vec<String> = support::holdings::actual(sb, Vendor::Userpilot)
            .users
            .into_keys()
            .collect();
        ids.sort();
        ids
    };
    let (out, report) = run(&sb, &cfg, &pass(0..6, 1, true, true), &[]);
    ok(&out);
    let all: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
    assert_eq!(userpilot(&sb), all, "{report}");
    let (out, report) = run(&sb, &cfg, &pass(2..6, 2, false, true), &[]);
    ok(&out);
    // Userpilot schedules deletions (daily): the users stay until then.
    assert_eq!(
        sb.dump(Vendor::Userpilot)["scheduled_deletions"]["users"],
        json!(["m0", "m1"]),
        "{report}"
    );
    assert_eq!(report["streams"]["users"]["deleted"], 2, "{report}");
    assert_eq!(report["streams"]["users"]["unchanged"], 4, "{report}");
}

/// SCIM (a writer that looks users up and holds memberships until their group and user came):
/// a user gone from the pass is deactivated, with `hard_delete` deleted.
#[test]
fn mirror_at_scim_deactivates_or_with_hard_delete_deletes() {
    for hard in [false, true] {
        let sb = Sandbox::builder()
            .users(0)
            .groups(0)
            .start_background()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = sb.config(Vendor::Scim);
        config["sync_mode"] = json!("mirror");
        config["ledger"] = json!(dir.path().join("ledger.sqlite"));
        config["max_delete_ratio"] = json!(0.5);
        config["hard_delete"] = json!(hard);
        let cfg = crate::target_common::write_config(dir.path(), &config);
        let active = |sb: &Sandbox| -> Vec<(String, bool)> {
            let dump = sb.dump(Vendor::Scim);
            let mut users: Vec<(String, bool)> = crate::target_common::items(&dump, "Users")
                .iter()
                .map(|u| {
                    (
                        u["externalId"].as_str().unwrap().to_string(),
                        u["active"] != json!(false),
                    )
                })
                .collect();
            users.sort();
            users
        };
        ok(&run(&sb, &cfg, &pass(0..4, 1, true, true), &[]).0);
        let (out, report) = run(&sb, &cfg, &pass(1..4, 2, false, true), &[]);
        ok(&out);
        let mut expected: Vec<(String, bool)> = (1..4).map(|i| (format!("m{i}"), true)).collect();
        if !hard {
            expected.insert(0, ("m0".into(), false));
        }
        assert_eq!(active(&sb), expected, "hard_delete {hard}: {report}");
        assert_eq!(report["streams"]["users"]["deleted"], 1, "{report}");
    }
}
