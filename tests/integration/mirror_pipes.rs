//! Mirror deletes through real pipelines: `tap-roster | target-roster` between two vendors
//! (tap-roster closes each pass with `ACTIVATE_VERSION`, the classic convention), and
//! meltanolabs-tap-postgres with `emit_activate_version_messages: true` (singer-sdk's
//! convention: the message once, at the start of each pass) into target-roster. A user removed
//! from the source is removed from the destination on the next run, and nothing else is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::reverse_etl::{self, Postgres, STEP_TIMEOUT};
use crate::support;

/// The target's config for `vendor` under `sync_mode: mirror`, its ledger in `dir`.
fn target_config(sb: &Sandbox, vendor: Vendor, dir: &Path, extra: Value) -> std::path::PathBuf {
    let mut config = sb.config(vendor);
    config["sync_mode"] = json!("mirror");
    config["ledger"] = json!(dir.join("ledger.sqlite"));
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    support::files::write_json(&dir.join("target.json"), &config)
}

/// The DELETE requests `vendor` received since the requests were last cleared.
fn deletes(sb: &Sandbox, vendor: Vendor) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.vendor == Some(vendor) && r.method == "DELETE")
        .map(|r| r.path)
        .collect()
}

fn users(sb: &Sandbox, vendor: Vendor) -> BTreeSet<String> {
    support::holdings::actual(sb, vendor)
        .users
        .into_keys()
        .collect()
}

#[test]
fn mirror_tap_roster_into_target_roster_removes_at_the_destination_a_user_removed_at_the_source() {
    let sb = Sandbox::builder()
        .seed(11)
        .users(12)
        .groups(2)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tap =
        support::files::write_json(&dir.path().join("tap.json"), &sb.config(Vendor::Userflow));
    // Eleven users of twelve stay: 1/12 is within a max_delete_ratio of 0.1.
    let target = target_config(&sb, Vendor::Appcues, dir.path(), json!({}));
    let report = dir.path().join("report.json");
    let pipe = || {
        sb.clear_requests();
        support::process::pipeline(
            r#"tap-roster --config "$TAP" | target-roster --config "$TARGET" --report "$REPORT" > /dev/null"#,
            &[],
            &[("TAP", &tap), ("TARGET", &target), ("REPORT", &report)],
            Duration::from_secs(120),
        )
        .assert_success("tap-roster | target-roster");
        let report: Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        report
    };
    pipe();
    let source = users(&sb, Vendor::Userflow);
    assert_eq!(source.len(), 12);
    assert_eq!(users(&sb, Vendor::Appcues), source);
    assert_eq!(deletes(&sb, Vendor::Appcues), Vec::<String>::new());

    let gone = source.iter().nth(4).unwrap().clone();
    assert!(sb.delete_user(Vendor::Userflow, &gone));
    let report = pipe();
    assert_eq!(
        deletes(&sb, Vendor::Appcues),
        [format!("/appcues/v2/accounts/10001/users/{gone}/profile")],
        "{report:#}"
    );
    let mut left = source.clone();
    left.remove(&gone);
    assert_eq!(users(&sb, Vendor::Appcues), left);
    assert_eq!(report["streams"]["users"]["deleted"], 1, "{report:#}");
    assert_eq!(report["exit_code"], 0, "{report:#}");
    let rejects = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap_or_default();
    assert!(rejects.is_empty(), "{rejects}");
}

#[test]
fn mirror_tap_postgres_with_activate_version_deletes_at_the_vendor_a_row_deleted_in_the_table() {
    let Some(bin) = reverse_etl::pg_bindir() else {
        return support::skip_or_fail(
            "PostgreSQL's server programs (initdb, pg_ctl) are needed: apt-get install postgresql",
        );
    };
    let Some(venv) = support::venv("tap-postgres", reverse_etl::TAP_POSTGRES) else {
        return support::skip_or_fail("python3 with venv is needed for meltanolabs-tap-postgres");
    };
    let pg = Postgres::start(bin);
    pg.psql_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reverse_etl/users.sql"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut tap_config = pg.tap_config();
    tap_config["emit_activate_version_messages"] = json!(true);
    let tap_config = support::files::write_json(&dir.path().join("tap-postgres.json"), &tap_config);
    let catalog = reverse_etl::selected_catalog(&venv, &tap_config, dir.path());
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .start_background()
        .unwrap();
    // One row of five leaves the table: 20%.
    let target = target_config(
        &sb,
        Vendor::Userflow,
        dir.path(),
        json!({"max_delete_ratio": 0.25}),
    );
    let tap_out = dir.path().join("tap.out");
    let pipe = || {
        sb.clear_requests();
        let finished = support::process::pipeline(
            r#"tap-postgres --config "$TAP_CONFIG" --catalog "$CATALOG" | tee "$TAP_OUT" | target-roster --config "$TARGET" > /dev/null"#,
            &[&venv.join("bin")],
            &[
                ("TAP_CONFIG", &tap_config),
                ("CATALOG", &catalog),
                ("TAP_OUT", &tap_out),
                ("TARGET", &target),
            ],
            STEP_TIMEOUT,
        );
        finished.assert_success("tap-postgres | target-roster");
        support::singer_lines(&std::fs::read_to_string(&tap_out).unwrap())
    };
    let first = pipe();
    let activations: Vec<&Value> = first
        .iter()
        .filter(|m| m["type"] == "ACTIVATE_VERSION")
        .collect();
    assert_eq!(
        activations.len(),
        1,
        "singer-sdk sends it once, at the start"
    );
    let live: BTreeSet<String> = first
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["record"]["_sdc_deleted_at"].is_null())
        .map(|m| m["record"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(live.len(), 5);
    assert_eq!(users(&sb, Vendor::Userflow), live);
    // The SDK's version is the run's start in seconds: the next run must start in a later one.
    std::thread::sleep(Duration::from_millis(1100));
    pg.query("DELETE FROM public.users WHERE id = 'user_00002'");
    let second = pipe();
    let v = |messages: &[Value]| {
        messages
            .iter()
            .find(|m| m["type"] == "ACTIVATE_VERSION")
            .map(|m| m["version"].clone())
    };
    assert_ne!(v(&first), v(&second), "a new version each run");
    assert_eq!(
        deletes(&sb, Vendor::Userflow),
        ["/userflow/users/user_00002"]
    );
    let mut left = live.clone();
    left.remove("user_00002");
    assert_eq!(users(&sb, Vendor::Userflow), left);
}
