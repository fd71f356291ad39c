//! Userpilot `mode: bulk`, end to end: target-roster against roster-sandbox.
//!
//! Bulk identify of users, companies and memberships in requests of at most 10,000 rows, job
//! ids percent-encoded in poll paths, the one-job-at-a-time rule (409 → wait), 413 → smaller
//! requests, a failed job → rejects that replay, deletes that wait for the job, and a `kill -9`
//! between an upload and its job's success followed by a rerun from the last STATE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::bulk;

use std::time::Duration;

use bulk::*;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

const USERS_BULK: &str = "/userpilot/v1/users/bulk_identify";

fn users(dump: &Value) -> Vec<Value> {
    dump["users"].as_array().cloned().unwrap_or_default()
}

fn config(sb: &Sandbox, dir: &std::path::Path, extra: Value) -> Value {
    bulk_config(sb.config(Vendor::Userpilot), dir, extra)
}

/// Starts a bulk job the way another client would (not roster).
fn foreign_job(sb: &Sandbox, rows: usize) -> Value {
    let c = sb.config(Vendor::Userpilot);
    let users: Vec<Value> = (0..rows)
        .map(|n| json!({"user_id": format!("other{n}"), "metadata": {"from": "elsewhere"}}))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/v1/users/bulk_identify",
                sb.base_url(Vendor::Userpilot)
            ))
            .header(
                "Authorization",
                format!("Token {}", c["api_key"].as_str().unwrap()),
            )
            .header("X-API-Version", "2020-09-22")
            .json(&json!({"users": users}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        answer.json().await.unwrap()
    })
}

#[test]
fn users_companies_and_memberships_go_as_bulk_jobs_of_at_most_10000_rows() {
    let sb = Sandbox::builder().start_background().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut input = users_input(0, 21_000, "pro", 1000);
    let groups = json!({"type": "SCHEMA", "stream": "groups", "key_properties": ["id"],
        "schema": {"type": "object", "properties": {"id": {"type": "string"}, "name": {"type": "string"},
            "employees": {"type": "integer"}}}});
    let members = json!({"type": "SCHEMA", "stream": "memberships", "key_properties": ["group_id", "user_id"],
        "schema": {"type": "object", "properties": {"group_id": {"type": "string"}, "user_id": {"type": "string"}}}});
    input.push_str(&format!("{groups}\n{members}\n"));
    for g in 0..3 {
        input.push_str(
            &json!({"type": "RECORD", "stream": "groups",
                "record": {"id": format!("c{g}"), "name": format!("Company {g}"), "employees": 10 + g}})
            .to_string(),
        );
        input.push('\n');
    }
    for n in 0..10 {
        input.push_str(
            &json!({"type": "RECORD", "stream": "memberships",
                "record": {"group_id": format!("c{}", n % 3), "user_id": format!("u{n}")}})
            .to_string(),
        );
        input.push('\n');
    }
    input.push_str(&json!({"type": "STATE", "value": {"done": true}}).to_string());
    input.push('\n');
    let out = run_ok(dir.path(), &config(&sb, dir.path(), json!({})), &input);

    let dump = sb.dump(Vendor::Userpilot);
    let users = users(&dump);
    assert_eq!(users.len(), 21_000);
    let u4 = users.iter().find(|u| u["user_id"] == "u4").unwrap();
    assert_eq!(
        u4["metadata"],
        json!({"email": "u4@example.com", "plan": "pro", "seats": "4"}),
        "values go as strings"
    );
    assert_eq!(u4["company_id"], "c1");
    let companies = dump["companies"].as_array().unwrap();
    assert_eq!(companies.len(), 3);
    assert!(companies.contains(
        &json!({"company_id": "c2", "metadata": {"name": "Company 2", "employees": "12"}})
    ));
    let jobs = jobs(&dump);
    assert!(jobs.len() >= 4, "{}", jobs.len());
    for job in &jobs {
        assert_eq!(job["status"], "completed", "{job}");
        assert!(job["total_rows"].as_u64().unwrap() <= 10_000);
        assert!(job["file_size"].as_u64().unwrap() <= 50_000_000);
    }
    assert!(jobs.iter().any(|j| j["type"] == "companies_bulk_identify"));
    let log = sb.requests();
    let polls: Vec<_> = log
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/userpilot/v1/background_jobs/"))
        .collect();
    assert!(!polls.is_empty());
    assert!(
        polls
            .iter()
            .all(|r| r.path.contains("bulk%3Ajobs%3ANX-") && r.status == 200),
        "job ids are percent-encoded: {:?}",
        polls[0].path
    );
    assert!(
        !log.iter().any(|r| r.path == "/userpilot/v1/identify"),
        "no real-time identify in bulk mode"
    );
    assert_eq!(states(&out.stdout).last().unwrap(), &json!({"done": true}));
    assert!(rejects(dir.path()).is_empty());
}

#[test]
fn a_busy_account_is_waited_for_then_the_job_runs() {
    // The other job takes about 2 s.
    let sb = Sandbox::builder()
        .job_rows_per_sec(100)
        .job_step(Duration::from_millis(50))
        .start_background()
        .unwrap();
    let other = foreign_job(&sb, 200);
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &users_input(0, 50, "pro", 10),
    );
    let log = sb.requests();
    let ours: Vec<_> = log.iter().filter(|r| r.path == USERS_BULK).collect();
    assert!(ours.iter().any(|r| r.status == 409), "{ours:?}");
    assert_eq!(ours.last().unwrap().status, 202);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another bulk job is running"), "{stderr}");
    let dump = sb.dump(Vendor::Userpilot);
    let jobs = jobs(&dump);
    let theirs = jobs
        .iter()
        .find(|j| j["job_id"] == other["job_id"])
        .unwrap();
    let mine = jobs
        .iter()
        .find(|j| j["job_id"] != other["job_id"])
        .unwrap();
    assert!(time(mine, "created_at").unwrap() >= time(theirs, "end_time").unwrap());
    assert_eq!(
        users(&dump)
            .iter()
            .filter(|u| u["user_id"].as_str().unwrap().starts_with('u'))
            .count(),
        50
    );
}

#[test]
fn a_failed_job_rejects_its_records_and_the_reject_file_replays() {
    let sb = Sandbox::builder()
        .fail_jobs(true)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &users_input(0, 30, "pro", 10),
    );
    assert!(users(&sb.dump(Vendor::Userpilot)).is_empty());
    let rejects = rejects(dir.path());
    assert_eq!(rejects.len(), 30);
    let reason = rejects[0]["reject"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("userpilot users bulk identify job bulk:jobs:"),
        "{reason}"
    );
    assert!(reason.contains("failed: sandbox fault"), "{reason}");
    assert_eq!(
        states(&out.stdout).last().unwrap(),
        &json!({"bookmarks": {"users": {"next_page": 30}}})
    );
    sb.faults().fail_jobs(false);
    let replay = tempfile::tempdir().unwrap();
    let rejected = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap();
    run_ok(
        replay.path(),
        &config(&sb, replay.path(), json!({})),
        &rejected,
    );
    assert_eq!(users(&sb.dump(Vendor::Userpilot)).len(), 30);
}

#[test]
fn a_413_halves_the_request_and_a_configured_limit_never_sends_over_it() {
    let sb = Sandbox::builder()
        .userpilot_max_rows(100)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({})),
        &users_input(0, 300, "pro", 50),
    );
    assert!(
        sb.requests()
            .iter()
            .any(|r| r.path == USERS_BULK && r.status == 413)
    );
    assert_eq!(users(&sb.dump(Vendor::Userpilot)).len(), 300);
    assert!(rejects(dir.path()).is_empty());

    sb.reset();
    let dir = tempfile::tempdir().unwrap();
    run_ok(
        dir.path(),
        &config(&sb, dir.path(), json!({"bulk_max_rows": 100})),
        &users_input(0, 300, "team", 50),
    );
    let log = sb.requests();
    let uploads: Vec<_> = log.iter().filter(|r| r.path == USERS_BULK).collect();
    assert_eq!(uploads.len(), 3);
    assert!(uploads.iter().all(|r| r.status == 202));
    assert!(
        users(&sb.dump(Vendor::Userpilot))
            .iter()
            .all(|u| u["metadata"]["plan"] == "team")
    );
}

#[test]
fn a_delete_waits_for_the_job_that_identifies_the_user() {
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
    run_ok(dir.path(), &config(&sb, dir.path(), json!({})), &input);
    let dump = sb.dump(Vendor::Userpilot);
    assert_eq!(dump["scheduled_deletions"]["users"], json!(["u5"]));
    let job = jobs(&dump).remove(0);
    let delete = sb
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path == "/userpilot/v1/users")
        .unwrap();
    assert!(
        delete.at >= time(&job, "end_time").unwrap(),
        "the delete ({}) went out before the job identifying u5 ended ({job})",
        delete.at
    );
}

#[test]
fn a_kill_between_upload_and_job_success_then_a_rerun_from_the_last_state_loses_nothing() {
    const N: usize = 2000;
    let sb = Sandbox::builder()
        .job_rows_per_sec(400)
        .job_step(Duration::from_millis(50))
        .start_background()
        .unwrap();
    let seen = kill_then_rerun(&sb, Vendor::Userpilot, N, 40, json!({"bulk_max_rows": 400}));
    let users = users(&sb.dump(Vendor::Userpilot));
    assert_eq!(users.len(), N, "every user arrived");
    for u in &users {
        let n = &u["user_id"].as_str().unwrap()[1..];
        assert_eq!(u["metadata"]["plan"], "gold");
        assert_eq!(u["metadata"]["seats"], n, "{u}");
    }
    let waited = sb
        .requests()
        .iter()
        .filter(|r| r.path == USERS_BULK && r.status == 409)
        .count();
    eprintln!(
        "userpilot kill -9: {seen:?}; the rerun met {waited} answer(s) 409 while the orphaned job ran; rows applied twice: {}",
        seen.duplicates(N)
    );
}

#[test]
fn the_sample_config_runs_as_it_is() {
    let sb = Sandbox::builder().start_background().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = sample("target-userpilot-bulk.json", &sb, Vendor::Userpilot);
    assert_eq!(config["mode"], "bulk");
    run_ok(dir.path(), &config, &users_input(0, 25, "pro", 10));
    assert_eq!(users(&sb.dump(Vendor::Userpilot)).len(), 25);
}

#[test]
fn a_job_that_outlives_the_timeout_stops_the_run_and_no_state_covers_its_records() {
    // 1 row/s: 30 rows take half a minute, far past a 1 s timeout.
    let sb = Sandbox::builder()
        .job_rows_per_sec(1)
        .job_step(Duration::from_millis(50))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&sb, dir.path(), json!({"bulk_job_timeout_seconds": 1}));
    let out = run(dir.path(), &config, &users_input(0, 30, "pro", 10), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did not end within 1 s"), "{stderr}");
    assert!(stderr.contains("bulk:jobs:"), "names the job: {stderr}");
    assert!(
        stderr.contains("rerun from the last state sends them again"),
        "{stderr}"
    );
    assert!(
        states(&out.stdout).is_empty(),
        "no state covers records whose job never ended"
    );
    assert!(
        rejects(dir.path()).is_empty(),
        "not rejected: the rerun sends them"
    );
}
