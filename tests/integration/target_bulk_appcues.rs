//! Appcues `mode: bulk` and segments, end to end: target-roster against roster-sandbox.
//!
//! The job lifecycle (queued → completed, failed → rejects with reasons, 413 → smaller files),
//! STATE held back until the job succeeded, a profile delete that waits for the import, a
//! `kill -9` between an upload and its job's success followed by a rerun from the last STATE,
//! and segments created when missing and filled in both modes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::bulk;

use std::collections::BTreeSet;
use std::time::Duration;

use bulk::*;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

const IMPORT: &str = "/appcues/v2/accounts/10001/import/profiles";

fn users(dump: &Value) -> Vec<Value> {
    dump["users"].as_array().cloned().unwrap_or_default()
}

fn config(sb: &Sandbox, dir: &std::path::Path, extra: Value) -> Value {
    bulk_config(sb.config(Vendor::Appcues), dir, extra)
}

#[test]
fn users_go_as_ndjson_import_jobs_in_files_under_the_limits_and_the_state_comes_last() {
    let sb = Sandbox::builder().start_background().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({"bulk_max_rows": 1000})),
        &users_input(0, 2500, "pro", 100),
    );
    let dump = sb.dump(Vendor::Appcues);
    let users = users(&dump);
    assert_eq!(users.len(), 2500);
    let u7 = users.iter().find(|u| u["user_id"] == "u7").unwrap();
    assert_eq!(
        *u7,
        json!({"user_id": "u7", "email": "u7@example.com", "plan": "pro", "seats": 7})
    );
    let jobs = jobs(&dump);
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for job in &jobs {
        assert_eq!(job["type"], "import_profiles");
        assert_eq!(job["status"], "completed");
        assert!(job["total_rows"].as_u64().unwrap() <= 1000);
    }
    let log = sb.requests();
    let uploads: Vec<_> = log.iter().filter(|r| r.path == IMPORT).collect();
    assert_eq!(uploads.len(), 3);
    assert!(
        uploads
            .iter()
            .all(|r| r.method == "POST" && r.status == 202)
    );
    assert!(
        log.iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/appcues/v2/accounts/10001/jobs/"))
    );
    assert!(
        !log.iter().any(|r| r.path.ends_with("/profile")),
        "no real-time PATCH in bulk mode"
    );
    let states = states(&out.stdout);
    assert_eq!(
        states.last().unwrap(),
        &json!({"bookmarks": {"users": {"next_page": 2500}}})
    );
    assert!(rejects(dir.path()).is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("every job ended"), "{stderr}");
}

#[test]
fn the_seeds_import_users_path_works_too() {
    let sb = Sandbox::builder().start_background().unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({"import_path": "/import/users"})),
        &users_input(0, 20, "free", 10),
    );
    assert_eq!(users(&sb.dump(Vendor::Appcues)).len(), 20);
    assert!(
        sb.requests()
            .iter()
            .any(|r| r.path == "/appcues/v2/accounts/10001/import/users" && r.status == 202)
    );
}

#[test]
fn a_state_waits_for_the_job_that_holds_its_records() {
    // 300 rows at 100 rows/s: the job runs for about 3 s after its upload.
    let sb = Sandbox::builder()
        .job_rows_per_sec(100)
        .job_step(Duration::from_millis(100))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut target = spawn(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &users_input(0, 300, "pro", 50),
    );
    let status = target.child.wait().unwrap();
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&target.stderr).unwrap()
    );
    let lines = target.drain();
    assert!(!lines.is_empty(), "the final state is printed");
    let job = jobs(&sb.dump(Vendor::Appcues)).remove(0);
    let completed = time(&job, "completed_at").unwrap();
    for (at, line) in &lines {
        assert!(
            *at >= completed,
            "state {line} was printed at {at}, before its job completed at {completed}"
        );
    }
    assert_eq!(
        serde_json::from_str::<Value>(&lines.last().unwrap().1).unwrap(),
        json!({"bookmarks": {"users": {"next_page": 300}}})
    );
}

#[test]
fn a_failed_job_rejects_its_records_with_the_vendors_reason() {
    let sb = Sandbox::builder()
        .fail_jobs(true)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &users_input(0, 40, "pro", 10),
    );
    assert!(users(&sb.dump(Vendor::Appcues)).is_empty());
    let rejects = rejects(dir.path());
    assert_eq!(rejects.len(), 40);
    let ids: BTreeSet<String> = rejects
        .iter()
        .map(|r| r["record"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 40, "each record once, as it came in");
    let reason = rejects[0]["reject"]["reason"].as_str().unwrap();
    assert!(reason.contains("failed"), "{reason}");
    assert!(reason.contains("sandbox fault: the job failed"), "{reason}");
    assert_eq!(rejects[0]["stream"], "users");
    // Every record has an outcome, so the last state is printed.
    assert_eq!(
        states(&out.stdout).last().unwrap(),
        &json!({"bookmarks": {"users": {"next_page": 40}}})
    );
    // The reject file replays once the vendor is well again.
    sb.faults().fail_jobs(false);
    let replay = tempfile::tempdir().unwrap();
    let rejected = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap();
    run_ok(
        replay.path(),
        &config(&sb, replay.path(), json!({})),
        &rejected,
    );
    let users = users(&sb.dump(Vendor::Appcues));
    assert_eq!(users.len(), 40);
    assert!(users.iter().all(|u| u["plan"] == "pro"));
}

#[test]
fn a_413_halves_the_files_and_a_configured_limit_never_sends_over_it() {
    // The sandbox takes bodies up to 20 kB here; 1,000 users take about 80 kB.
    let sb = Sandbox::builder()
        .appcues_body_limit(20_000)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &users_input(0, 1000, "pro", 100),
    );
    let too_large = sb
        .requests()
        .iter()
        .filter(|r| r.path == IMPORT && r.status == 413)
        .count();
    assert!(too_large >= 1);
    assert_eq!(users(&sb.dump(Vendor::Appcues)).len(), 1000);
    assert!(rejects(dir.path()).is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("too large (413)"));

    sb.reset();
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({"bulk_max_bytes": 20_000})),
        &users_input(0, 1000, "team", 100),
    );
    let log = sb.requests();
    let uploads: Vec<_> = log.iter().filter(|r| r.path == IMPORT).collect();
    assert!(uploads.len() >= 4, "{}", uploads.len());
    assert!(
        uploads.iter().all(|r| r.status == 202),
        "no upload goes over the configured limit"
    );
    let dump = sb.dump(Vendor::Appcues);
    assert!(users(&dump).iter().all(|u| u["plan"] == "team"));
    assert_eq!(users(&dump).len(), 1000);
}

#[test]
fn a_profile_delete_waits_for_the_import_of_that_user() {
    let sb = Sandbox::builder()
        .job_rows_per_sec(200)
        .job_step(Duration::from_millis(100))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut input = users_input(0, 100, "pro", 50);
    input.push_str(
        &json!({"type": "RECORD", "stream": "users",
                "record": {"id": "u5", "_sdc_deleted_at": "2024-05-01T00:00:00Z"}})
        .to_string(),
    );
    input.push('\n');
    input.push_str(&state(101));
    input.push('\n');
    let out = run_ok(dir.path(), &config(&sb, dir.path(), json!({})), &input);
    let users = users(&sb.dump(Vendor::Appcues));
    assert_eq!(users.len(), 99);
    assert!(
        !users.iter().any(|u| u["user_id"] == "u5"),
        "the import must not bring back a user deleted after it"
    );
    assert_eq!(
        states(&out.stdout).last().unwrap(),
        &json!({"bookmarks": {"users": {"next_page": 101}}})
    );
}

#[test]
fn a_dry_run_shows_the_ndjson_it_would_upload() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"vendor": "appcues", "mode": "bulk", "account_id": "A1",
        "api_key": "k", "api_secret": "s", "base_url": "http://127.0.0.1:9/appcues"});
    let dry = dir.path().join("dry.ndjson");
    let out = run(
        dir.path(),
        &config,
        &users_input(0, 3, "pro", 10),
        &["--dry-run", "--dry-run-output", dry.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = std::fs::read_to_string(&dry)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["path"], "/v2/accounts/A1/import/profiles");
    assert_eq!(lines[0]["content_type"], "application/x-ndjson");
    let body = lines[0]["body"].as_str().unwrap();
    assert_eq!(body.lines().count(), 3);
    assert_eq!(
        serde_json::from_str::<Value>(body.lines().next().unwrap()).unwrap(),
        json!({"user_id": "u0", "email": "u0@example.com", "plan": "pro", "seats": 0})
    );
    assert_eq!(lines.last().unwrap()["type"], "state");
}

#[test]
fn a_kill_between_upload_and_job_success_then_a_rerun_from_the_last_state_loses_nothing() {
    const N: usize = 3000;
    let sb = Sandbox::builder()
        .job_rows_per_sec(400)
        .job_step(Duration::from_millis(50))
        .start_background()
        .unwrap();
    let seen = kill_then_rerun(&sb, Vendor::Appcues, N, 50, json!({"bulk_max_rows": 500}));
    let users = users(&sb.dump(Vendor::Appcues));
    assert_eq!(users.len(), N, "every user arrived");
    for u in &users {
        let n: u64 = u["user_id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(
            (&u["plan"], &u["seats"]),
            (&json!("gold"), &json!(n)),
            "{u}"
        );
    }
    eprintln!(
        "appcues kill -9: {seen:?}; rows applied twice: {}",
        seen.duplicates(N)
    );
}

fn post(sb: &Sandbox, path: &str, body: Value) -> Value {
    let c = sb.config(Vendor::Appcues);
    let url = format!("{}{path}", sb.base_url(Vendor::Appcues));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(url)
            .basic_auth(c["api_key"].as_str().unwrap(), c["api_secret"].as_str())
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

fn segments_input() -> String {
    let schema = json!({"type": "SCHEMA", "stream": "segments", "key_properties": ["segment", "user_id"],
        "schema": {"type": "object", "properties": {
            "segment": {"type": "string"}, "user_id": {"type": "string"},
            "_sdc_deleted_at": {"type": ["string", "null"]}}}});
    let member = |segment: &str, user: &str| {
        json!({"type": "RECORD", "stream": "segments", "record": {"segment": segment, "user_id": user}})
            .to_string()
    };
    [
        schema.to_string(),
        member("Existing", "u1"),
        member("Existing", "u2"),
        member("New one", "u3"),
        member("New one", "a,b"),
        json!({"type": "RECORD", "stream": "segments", "record": {
            "segment": "Existing", "user_id": "u2", "_sdc_deleted_at": "2024-05-01T00:00:00Z"}})
        .to_string(),
        json!({"type": "STATE", "value": {"segments": "done"}}).to_string(),
    ]
    .join("\n")
        + "\n"
}

fn check_segments(sb: &Sandbox, out: &std::process::Output, existing_id: &str) {
    let dump = sb.dump(Vendor::Appcues);
    let segments = dump["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2, "{segments:?}");
    let existing = segments.iter().find(|s| s["id"] == existing_id).unwrap();
    assert_eq!(existing["name"], "Existing");
    assert_eq!(
        existing["user_ids"],
        json!(["u1"]),
        "u2 was added, then removed"
    );
    let new = segments.iter().find(|s| s["name"] == "New one").unwrap();
    assert_eq!(new["user_ids"], json!(["a,b", "u3"]));
    let log = sb.requests();
    let creates = log
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/appcues/v2/accounts/10001/segments")
        .count();
    assert_eq!(creates, 2, "the test made one, roster only the missing one");
    assert!(log.iter().any(|r| r.path.ends_with("/remove_user_ids")));
    assert!(
        jobs(&dump)
            .iter()
            .all(|j| j["status"] == "completed"
                && j["type"].as_str().unwrap().starts_with("segment_"))
    );
    assert_eq!(
        states(&out.stdout).last().unwrap(),
        &json!({"segments": "done"})
    );
}

#[test]
fn segments_are_created_when_missing_and_filled_in_real_time_mode() {
    let sb = Sandbox::builder().start_background().unwrap();
    let existing = post(
        &sb,
        "/v2/accounts/10001/segments",
        json!({"name": "Existing"}),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&sb, dir.path(), json!({}));
    cfg["mode"] = json!("realtime");
    let out = run_ok(dir.path(), &cfg, &segments_input());
    check_segments(&sb, &out, existing["id"].as_str().unwrap());
}

#[test]
fn segments_are_created_when_missing_and_filled_in_bulk_mode() {
    let sb = Sandbox::builder().start_background().unwrap();
    let existing = post(
        &sb,
        "/v2/accounts/10001/segments",
        json!({"name": "Existing"}),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &segments_input(),
    );
    check_segments(&sb, &out, existing["id"].as_str().unwrap());
}

#[test]
fn the_sample_config_runs_as_it_is() {
    let sb = Sandbox::builder().start_background().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sample("target-appcues-bulk.json", &sb, Vendor::Appcues);
    assert_eq!(config["mode"], "bulk");
    run_ok(dir.path(), &config, &users_input(0, 25, "pro", 10));
    assert_eq!(users(&sb.dump(Vendor::Appcues)).len(), 25);
}
