//! `target-roster --plan` (issue 14 §4) and `sync_mode` decided by reads (§2), against the
//! sandbox: a plan reads what Userflow, SCIM and Appcues hold now, says per record whether a run
//! would create it, update it (naming the fields that change) or leave it alone, and sends no
//! write (the request log is the witness); `--plan-output` gets one line per record.
//! `update_only` / `create_only` ask Userflow whether it holds a user, so one created outside
//! roster counts as held.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::target_common::{self, lines, rec, run_args, sandbox, schema, state, succeeded};

/// Runs the target with `--report` (and `args`) and returns the output and the report.
fn run(sb: &Sandbox, config: &Path, input: &str, args: &[&str]) -> (Output, Value) {
    let report = config.with_file_name("report.json");
    let _ = std::fs::remove_file(&report);
    let mut all = vec!["--report", report.to_str().unwrap()];
    all.extend_from_slice(args);
    sb.clear_requests();
    let out = run_args(config, input, &all, &[]);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
    (out, serde_json::from_str(&text).unwrap())
}

/// Requests other than GET since the last run started.
fn writes(sb: &Sandbox) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// Users records `(id, plan)` with an email each.
fn users(rows: &[(&str, &str)]) -> String {
    let mut input = vec![schema("users")];
    for (id, plan) in rows {
        input.push(rec(
            "users",
            json!({"id": id, "email": format!("{id}@x.io"), "plan": plan}),
        ));
    }
    input.push(state(json!({"n": rows.len()})));
    lines(&input)
}

/// `--plan-output`'s lines, by key.
fn plan_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "plan")
        .collect()
}

fn line_for<'a>(lines: &'a [Value], key: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["key"] == key)
        .unwrap_or_else(|| panic!("no plan line for {key}: {lines:?}"))
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(future)
}

/// A Userflow user written by someone else, straight to the vendor.
fn userflow_user_outside_roster(sb: &Sandbox, id: &str, plan: &str) {
    let api = crate::sandbox_common::api(sb, Vendor::Userflow);
    let body = json!({"id": id, "attributes": {"email": format!("{id}@x.io"), "plan": plan}});
    let r = block_on(api.post("/users", &body));
    assert!(r.status < 300, "{}", r.text);
}

fn config(sb: &Sandbox, vendor: Vendor, dir: &Path, extra: Value) -> PathBuf {
    target_common::config(sb, vendor, dir, extra)
}

#[test]
fn plan_against_userflow_reads_what_it_holds_and_sends_no_write() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, Vendor::Userflow, dir.path(), json!({}));
    succeeded(&run(&sb, &cfg, &users(&[("u0", "free"), ("u1", "free")]), &[]).0);
    // Someone else made u9, as the input has it.
    userflow_user_outside_roster(&sb, "u9", "free");

    let out_file = dir.path().join("plan.ndjson");
    let input = users(&[
        ("u0", "free"),
        ("u1", "pro"),
        ("u2", "free"),
        ("u9", "free"),
    ]);
    let (out, report) = run(
        &sb,
        &cfg,
        &input,
        &["--plan", "--plan-output", out_file.to_str().unwrap()],
    );
    let stderr = succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new(), "a plan sends no write");
    assert!(out.stdout.is_empty(), "a plan prints no state");
    assert!(
        stderr.contains(
            "users → users: 4 in: 1 to create, 1 to update (plan ×1), 2 unchanged, 0 to delete"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("from: ledger, read"), "{stderr}");
    let plan = &report["plan"]["streams"]["users"];
    assert_eq!(plan["create"], 1, "{report}");
    assert_eq!(plan["update"], 1, "{report}");
    assert_eq!(plan["unchanged"], 2, "{report}");
    assert_eq!(report["plan"]["api_calls"], 2, "{report}");

    let lines = plan_lines(&out_file);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let u1 = line_for(&lines, "u1");
    assert_eq!(u1["action"], "update");
    assert_eq!(u1["source"], "read");
    assert_eq!(
        u1["changes"],
        json!({"plan": {"from": "free", "to": "pro"}})
    );
    assert_eq!(
        line_for(&lines, "u0")["source"],
        "ledger",
        "the ledger knew u0"
    );
    assert_eq!(line_for(&lines, "u2")["action"], "create");
    assert_eq!(line_for(&lines, "u9")["action"], "unchanged");
    assert_eq!(line_for(&lines, "u9")["source"], "read");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The run the plan described does what it said.
    let (out, report) = run(&sb, &cfg, &input, &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 3, "{:?}", writes(&sb));
    assert_eq!(report["totals"]["unchanged"], 1, "{report}");
}

#[test]
fn plan_output_is_never_the_input() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, Vendor::Userflow, dir.path(), json!({}));
    let input = dir.path().join("in.singer");
    std::fs::write(&input, users(&[("u0", "free")])).unwrap();
    let out = run_args(
        &cfg,
        "",
        &[
            "--plan",
            "--input",
            input.to_str().unwrap(),
            "--plan-output",
            input.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--plan-output"));
    assert!(std::fs::read_to_string(&input).unwrap().contains("u0@x.io"));
}

#[test]
fn plan_against_scim_finds_existing_users_instead_of_creating_them() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, Vendor::Scim, dir.path(), json!({"ledger": false}));
    let person = |id: &str, first: &str| {
        rec(
            "users",
            json!({"id": id, "email": format!("{id}@x.io"), "first_name": first, "last_name": "Roe"}),
        )
    };
    let first = lines(&[schema("users"), person("s0", "Ann"), person("s1", "Bob")]);
    succeeded(&run(&sb, &cfg, &first, &[]).0);

    let out_file = dir.path().join("plan.ndjson");
    let second = lines(&[
        schema("users"),
        person("s0", "Ann"),
        person("s1", "Rob"),
        person("s2", "Cy"),
    ]);
    let (out, report) = run(
        &sb,
        &cfg,
        &second,
        &["--plan", "--plan-output", out_file.to_str().unwrap()],
    );
    let stderr = succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new(), "a plan sends no write");
    let plan = &report["plan"]["streams"]["users"];
    assert_eq!(plan["create"], 1, "{report}");
    assert_eq!(plan["update"], 1, "{report}");
    assert_eq!(plan["unchanged"], 1, "{report}");
    assert!(stderr.contains("first_name ×1"), "{stderr}");
    let lines = plan_lines(&out_file);
    let s1 = line_for(&lines, "s1");
    assert_eq!(s1["action"], "update", "{s1}");
    assert_eq!(
        s1["changes"],
        json!({"first_name": {"from": "Bob", "to": "Rob"}})
    );
    assert_eq!(line_for(&lines, "s2")["action"], "create");
    assert!(
        !std::fs::read_to_string(&out_file)
            .unwrap()
            .contains("<scim id"),
        "no stand-in ids"
    );
}

#[test]
fn plan_against_appcues_reads_profiles() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, Vendor::Appcues, dir.path(), json!({"ledger": false}));
    succeeded(&run(&sb, &cfg, &users(&[("a0", "free"), ("a1", "free")]), &[]).0);
    let (out, report) = run(
        &sb,
        &cfg,
        &users(&[("a0", "free"), ("a1", "team"), ("a2", "free")]),
        &["--plan"],
    );
    let stderr = succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new(), "a plan sends no write");
    assert!(
        stderr.contains("1 to create, 1 to update (plan ×1), 1 unchanged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("at 50/s"),
        "Appcues' documented pace: {stderr}"
    );
    assert_eq!(
        report["plan"]["streams"]["users"]["sources"],
        json!(["read"])
    );
}

#[test]
fn update_only_and_create_only_ask_userflow_what_it_holds() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    // `out` was created outside roster: the (empty) ledger does not know it, Userflow does.
    userflow_user_outside_roster(&sb, "out", "free");
    let plan_of = |id: &str| {
        let dump = sb.dump(Vendor::Userflow);
        target_common::find(&dump, "users", "id", id).map(|u| u["attributes"]["plan"].clone())
    };

    let cfg = config(
        &sb,
        Vendor::Userflow,
        dir.path(),
        json!({"sync_mode": "update_only"}),
    );
    // The plan says so first, and writes nothing.
    let input = users(&[("out", "pro"), ("new", "pro")]);
    let (out, report) = run(&sb, &cfg, &input, &["--plan"]);
    let stderr = succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new());
    assert!(stderr.contains("1 left out by update_only"), "{stderr}");
    assert_eq!(report["plan"]["streams"]["users"]["update"], 1, "{report}");
    let (out, report) = run(&sb, &cfg, &input, &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 1, "{:?}", writes(&sb));
    assert_eq!(plan_of("out"), Some(json!("pro")), "held, so updated");
    assert_eq!(plan_of("new"), None, "not held, so left out");
    let counts = &report["streams"]["users"];
    assert_eq!(counts["left_out"]["update_only"], 1, "{report}");
    assert_eq!(counts["sent"], 1, "{report}");
    // Userflow said it holds `out` (the ledger never saw it): an update, not a create.
    assert_eq!(counts["updated"], 1, "{report}");
    assert_eq!(counts["created"], 0, "{report}");

    let cfg = config(
        &sb,
        Vendor::Userflow,
        dir.path(),
        json!({"sync_mode": "create_only"}),
    );
    let (out, report) = run(&sb, &cfg, &users(&[("out", "team"), ("new", "team")]), &[]);
    succeeded(&out);
    assert_eq!(writes(&sb).len(), 1, "{:?}", writes(&sb));
    assert_eq!(plan_of("out"), Some(json!("pro")), "held, so left alone");
    assert_eq!(plan_of("new"), Some(json!("team")), "not held, so created");
    let counts = &report["streams"]["users"];
    assert_eq!(counts["left_out"]["create_only"], 1, "{report}");
    assert_eq!(counts["created"], 1, "{report}");
}

#[test]
fn plan_against_guru_reads_members_and_groups() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, Vendor::Guru, dir.path(), json!({"ledger": false}));
    let member = |id: &str| rec("users", json!({"id": id, "email": format!("{id}@x.io")}));
    let group = |id: &str, name: &str| rec("groups", json!({"id": id, "name": name}));
    let first = lines(&[
        schema("users"),
        schema("groups"),
        member("g0"),
        group("t1", "Team One"),
    ]);
    succeeded(&run(&sb, &cfg, &first, &[]).0);
    let out_file = dir.path().join("plan.ndjson");
    let second = lines(&[
        schema("users"),
        schema("groups"),
        member("g0"),
        member("g1"),
        group("t1", "Team One"),
        group("t2", "Team Two"),
    ]);
    let (out, report) = run(
        &sb,
        &cfg,
        &second,
        &["--plan", "--plan-output", out_file.to_str().unwrap()],
    );
    succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new(), "a plan sends no write");
    let streams = &report["plan"]["streams"];
    assert_eq!(streams["users"]["unchanged"], 1, "{report}");
    assert_eq!(streams["users"]["create"], 1, "{report}");
    assert_eq!(streams["groups"]["unchanged"], 1, "{report}");
    assert_eq!(streams["groups"]["create"], 1, "{report}");
    let lines = plan_lines(&out_file);
    assert_eq!(line_for(&lines, "g0")["source"], "read");
    assert_eq!(line_for(&lines, "t2")["action"], "create");
}

#[test]
fn plan_under_mirror_shows_the_deletes_a_run_would_make() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &sb,
        Vendor::Userflow,
        dir.path(),
        json!({"sync_mode": "mirror"}),
    );
    // A classic pass: ACTIVATE_VERSION opens and closes it (`activate: false` leaves it out).
    let pass = |version: u64, ids: &[&str], activate: bool| {
        let av = json!({"type": "ACTIVATE_VERSION", "stream": "users", "version": version});
        let mut input = vec![schema("users")];
        if activate {
            input.push(av.clone());
        }
        for id in ids {
            input.push(
                json!({"type": "RECORD", "stream": "users", "version": version,
                              "record": {"id": id, "email": format!("{id}@x.io")}}),
            );
        }
        if activate {
            input.push(av);
        }
        lines(&input)
    };
    succeeded(&run(&sb, &cfg, &pass(1, &["m0", "m1", "m2", "m3"], true), &[]).0);

    // Without ACTIVATE_VERSION a run deletes nothing, so the plan shows no delete.
    let (out, report) = run(&sb, &cfg, &pass(2, &["m0", "m1", "m4"], false), &["--plan"]);
    succeeded(&out);
    assert_eq!(report["plan"]["streams"]["users"]["delete"], 0, "{report}");
    assert_eq!(report["plan"]["api_calls"], 1, "one create: {report}");

    // A pass read through: m2 and m3 are gone. 2 of 4 held is past max_delete_ratio 0.1, so the
    // plan names the guard a run would stop at, and still shows the deletes; it exits 0.
    let (out, report) = run(&sb, &cfg, &pass(2, &["m0", "m1", "m4"], true), &["--plan"]);
    let stderr = succeeded(&out);
    assert_eq!(writes(&sb), Vec::<String>::new(), "a plan sends no write");
    let users = &report["plan"]["streams"]["users"];
    assert_eq!(users["delete"], 2, "m2 and m3: {report}");
    assert_eq!(users["mirror_deletes"], 2, "{report}");
    assert_eq!(users["unchanged"], 2, "{report}");
    assert_eq!(users["create"], 1, "{report}");
    assert!(
        users["delete_guard"]
            .as_str()
            .is_some_and(|g| g.contains("past max_delete_ratio 0.1")),
        "{report}"
    );
    assert!(stderr.contains("2 unchanged, 2 to delete"), "{stderr}");
    assert!(
        stderr.contains("a run would stop before the first delete"),
        "{stderr}"
    );
    assert_eq!(
        report["plan"]["api_calls"], 3,
        "one create, two deletes: {report}"
    );

    // The plan wrote nothing to the ledger: the run it previewed makes those deletes.
    let (out, report) = run(
        &sb,
        &cfg,
        &pass(2, &["m0", "m1", "m4"], true),
        &["--force-deletes"],
    );
    succeeded(&out);
    assert_eq!(report["streams"]["users"]["deleted"], 2, "{report}");
    assert_eq!(report["streams"]["users"]["created"], 1, "{report}");
}
