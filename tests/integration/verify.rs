//! `target-roster --verify` (issue 14 §5), against the sandbox's Userflow: after the run it
//! reads back what it wrote; an attribute changed and a user deleted behind roster's back
//! between the write and the read-back are reported as drift (in the summary and the report),
//! and drift exits 3. A run whose writes all hold exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use roster_sandbox::Vendor;
use serde_json::{Value, json};

use crate::support::bin;
use crate::target_common::{self, lines, rec, run_args, sandbox, schema, state, succeeded};

fn users(ids: &[&str]) -> Vec<Value> {
    let mut input = vec![schema("users")];
    for id in ids {
        input.push(rec(
            "users",
            json!({"id": id, "email": format!("{id}@x.io"), "plan": "free"}),
        ));
    }
    input
}

#[test]
fn verify_of_a_clean_run_exits_0() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = target_common::config(&sb, Vendor::Userflow, dir.path(), json!({}));
    let report = dir.path().join("report.json");
    let mut input = users(&["u0", "u1", "u2"]);
    input.push(state(json!({"n": 3})));
    let out = run_args(
        &cfg,
        &lines(&input),
        &["--verify", "--report", report.to_str().unwrap()],
        &[],
    );
    let stderr = succeeded(&out);
    assert!(
        stderr.contains("verify: read back 3 records: 0 missing, 0 changed"),
        "{stderr}"
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["verify"]["checked"], 3, "{report}");
    assert_eq!(report["exit_code"], 0, "{report}");
}

#[test]
fn verify_finds_an_attribute_changed_behind_rosters_back_and_exits_3() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = target_common::config(&sb, Vendor::Userflow, dir.path(), json!({}));
    let report = dir.path().join("report.json");
    let mut child = bin::target()
        .config(&cfg)
        .default_ledger_in(dir.path())
        .args(["--verify", "--report", report.to_str().unwrap()])
        .log("warn")
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(lines(&users(&["u0", "u1", "u2"])).as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    // The three writes arrive while the input is still open...
    let deadline = Instant::now() + Duration::from_secs(30);
    while sb.requests().iter().filter(|r| r.method == "POST").count() < 3 {
        assert!(Instant::now() < deadline, "the writes never came");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...then someone changes u1 and deletes u2, before the run reads them back.
    let api = crate::sandbox_common::api(&sb, Vendor::Userflow);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let body = json!({"id": "u1", "attributes": {"plan": "enterprise"}});
        assert!(api.post("/users", &body).await.status < 300);
        assert!(api.delete("/users/u2").await.status < 300);
    });
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("verify: read back 3 records: 1 missing, 1 changed (plan ×1)"),
        "{stderr}"
    );
    assert!(stderr.contains("2 of 3 records"), "{stderr}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let verify = &report["verify"];
    assert_eq!(verify["missing"], 1, "{report}");
    assert_eq!(verify["changed"], 1, "{report}");
    assert_eq!(report["exit_code"], 3, "{report}");
    let changed = verify["examples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"] == "u1")
        .unwrap();
    assert_eq!(
        changed["changes"],
        json!([{"field": "plan", "from": "enterprise", "to": "free"}])
    );
}

/// No false drift: what each readable writer sends reads back as sent.
#[test]
fn verify_reads_back_every_readable_vendor_without_false_drift() {
    for vendor in [
        Vendor::Userflow,
        Vendor::Appcues,
        Vendor::Scim,
        Vendor::GuruScim,
        Vendor::Guru,
    ] {
        let sb = sandbox();
        let dir = tempfile::tempdir().unwrap();
        let cfg = target_common::config(&sb, vendor, dir.path(), json!({"ledger": false}));
        let report = dir.path().join("report.json");
        let input = lines(&[
            schema("users"),
            schema("groups"),
            rec(
                "users",
                json!({"id": "v1", "email": "v1@x.io", "first_name": "Vi", "last_name": "Ro",
                       "created_at": "2024-01-02T03:04:05Z"}),
            ),
            rec(
                "users",
                json!({"id": "v2", "email": "v2@x.io", "name": "Val Two"}),
            ),
            rec("groups", json!({"id": "t1", "name": "Team One"})),
            state(json!({"n": 3})),
        ]);
        let out = run_args(
            &cfg,
            &input,
            &["--verify", "--report", report.to_str().unwrap()],
            &[],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{vendor:?}: {stderr}");
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let verify = &report["verify"];
        assert_eq!(verify["missing"], 0, "{vendor:?}: {report}");
        assert_eq!(verify["changed"], 0, "{vendor:?}: {report}");
        assert!(
            verify["checked"].as_u64().unwrap() >= 2,
            "{vendor:?} read back too little: {report}"
        );
    }
}
