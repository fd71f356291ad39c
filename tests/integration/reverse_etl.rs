//! Reverse ETL from a warehouse table: PostgreSQL → `meltanolabs-tap-postgres` (PyPI, its own
//! virtualenv) → target-roster → the sandbox's Appcues and Userflow.
//!
//! The test starts a throwaway PostgreSQL cluster on 127.0.0.1 in a temporary directory (as
//! the `postgres` system user when it runs as root, since postgres refuses to run as root),
//! loads `tests/fixtures/reverse_etl/users.sql` (ids, emails, names, plan, seats, a boolean, a
//! numeric, timestamps with and without a value, and a row whose `_sdc_deleted_at` is set),
//! selects the `public-users` stream from tap-postgres's discovery as Meltano would, and pipes
//! the tap into target-roster in a shell. Then it checks exactly what each vendor holds, what
//! the target's report counted, and the state it handed back, and stops the cluster.
//!
//! PostgreSQL comes from Debian's packages: `.ci/run` installs them when they are missing. Here
//! a missing server skips the test, and fails it on CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Map, Value, json};

/// Pinned so a new upstream release cannot change what passes here.
pub(crate) const TAP_POSTGRES: &[&str] = &["meltanolabs-tap-postgres==0.10.0"];

/// Generous: a cold Python and a debug build on a loaded 2-core machine.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// The password of the throwaway cluster's superuser (`roster`).
pub(crate) const PG_PASSWORD: &str = "reverse-etl-test";

/// A PostgreSQL cluster in a temporary directory, stopped when dropped.
pub(crate) struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    pub(crate) port: u16,
    /// `Some("postgres")` when the server must run as that user (the test runs as root).
    run_as: Option<&'static str>,
    _dir: tempfile::TempDir,
}

/// A throwaway PostgreSQL cluster and a virtualenv with meltanolabs target-postgres, or `None`
/// when a prerequisite is missing (the test then skips, or fails under CI).
pub(crate) fn postgres_and_target_postgres() -> Option<(Postgres, PathBuf)> {
    let Some(bin) = pg_bindir() else {
        support::skip_or_fail(
            "PostgreSQL's server programs (initdb, pg_ctl) are needed: apt-get install postgresql",
        );
        return None;
    };
    let Some(venv) = support::venv("target-postgres", TARGET_POSTGRES) else {
        support::skip_or_fail("python3 with venv is needed for target-postgres");
        return None;
    };
    Some((Postgres::start(bin), venv))
}

/// The directory with `initdb`, `pg_ctl` and `psql`: `ROSTER_PG_BINDIR`, Debian's
/// `/usr/lib/postgresql/<newest>/bin`, or PATH.
pub(crate) fn pg_bindir() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        ["initdb", "pg_ctl", "postgres", "psql"]
            .iter()
            .all(|b| d.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("ROSTER_PG_BINDIR").map(PathBuf::from) {
        return has_all(&dir).then_some(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    debian.sort();
    if let Some((_, dir)) = debian.pop() {
        return Some(dir);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).find(|d| has_all(d))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// uid and gid of a system user, from `id`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        out.status.success().then_some(())?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl Postgres {
    /// initdb + start on a free port of 127.0.0.1, password auth over TCP.
    pub(crate) fn start(bin: PathBuf) -> Postgres {
        let run_as = is_root().then_some("postgres");
        // Under /tmp, not the target dir: the postgres user must be able to reach it.
        let dir = tempfile::Builder::new()
            .prefix("roster-pg-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        let pwfile = dir.path().join("pwfile");
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&sockets).unwrap();
        std::fs::write(&pwfile, PG_PASSWORD).unwrap();
        if let Some(user) = run_as {
            let (uid, gid) = user_ids(user).unwrap_or_else(|| {
                panic!("running as root, but there is no '{user}' system user to run PostgreSQL as")
            });
            for p in [&data, &sockets, &pwfile] {
                std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
            }
        }
        let mut pg = Postgres {
            bin,
            data,
            port: 0,
            run_as,
            _dir: dir,
        };
        let initdb = support::run(
            pg.as_server_user("initdb")
                .arg("-D")
                .arg(&pg.data)
                .args(["-U", "roster", "-E", "UTF8", "--locale=C.UTF-8"])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .arg(format!("--pwfile={}", pwfile.display())),
            STEP_TIMEOUT,
        );
        initdb.assert_success("initdb");
        // A port that was free a moment ago can be taken by the time the server binds it.
        for attempt in 1..=5 {
            pg.port = support::free_port();
            let options = format!(
                "-p {} -h 127.0.0.1 -k {} -c fsync=off -c full_page_writes=off",
                pg.port,
                sockets.display()
            );
            let started = support::run(
                pg.as_server_user("pg_ctl")
                    .arg("-D")
                    .arg(&pg.data)
                    .arg("-l")
                    .arg(pg.data.join("server.log"))
                    .args(["-w", "-t", "120", "-o", &options, "start"]),
                STEP_TIMEOUT,
            );
            if started.success() {
                return pg;
            }
            let log = std::fs::read_to_string(pg.data.join("server.log")).unwrap_or_default();
            assert!(
                attempt < 5 && log.contains("could not bind"),
                "pg_ctl start failed:\n{}\n{log}",
                started.both()
            );
        }
        unreachable!()
    }

    /// A command for one of the server programs, as the server's user.
    fn as_server_user(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Runs an SQL file with psql over TCP, stopping at the first error.
    pub(crate) fn psql_file(&self, file: &Path) {
        support::run(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args([
                    "-U",
                    "roster",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-f",
                ])
                .arg(file)
                .env("PGPASSWORD", PG_PASSWORD),
            STEP_TIMEOUT,
        )
        .assert_success("psql");
    }

    /// The rows `sql` returns, each as its columns' text (psql's unaligned output).
    pub(crate) fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let out = support::run(
            Command::new(self.bin.join("psql"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "roster", "-d", "postgres", "-v", "ON_ERROR_STOP=1"])
                .args(["-A", "-t", "-F", "\t", "-c", sql])
                .env("PGPASSWORD", PG_PASSWORD),
            STEP_TIMEOUT,
        );
        out.assert_success(&format!("psql -c {sql}"));
        out.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// The config of meltanolabs-tap-postgres for this cluster.
    pub(crate) fn tap_config(&self) -> Value {
        json!({
            "host": "127.0.0.1",
            "port": self.port,
            "user": "roster",
            "password": PG_PASSWORD,
            "database": "postgres",
            "filter_schemas": ["public"],
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port == 0 {
            return;
        }
        let _ = self
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output();
    }
}

/// tap-postgres's discovery with `public-users` selected, the way `meltano select` does it.
pub(crate) fn selected_catalog(venv: &Path, tap_config: &Path, dir: &Path) -> PathBuf {
    let discovered = support::run(
        Command::new(venv.join("bin/tap-postgres"))
            .arg("--config")
            .arg(tap_config)
            .arg("--discover"),
        STEP_TIMEOUT,
    );
    discovered.assert_success("tap-postgres --discover");
    let mut catalog: Value = serde_json::from_str(&discovered.stdout).unwrap();
    let streams = catalog["streams"].as_array_mut().unwrap();
    let users = streams
        .iter_mut()
        .find(|s| s["tap_stream_id"] == "public-users")
        .unwrap_or_else(|| panic!("no public-users in {}", discovered.stdout));
    let top = users["metadata"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|m| m["breadcrumb"] == json!([]))
        .unwrap();
    top["metadata"]["selected"] = json!(true);
    support::write_json(&dir.join("catalog.json"), &catalog)
}

/// `tap-postgres | tee | target-roster` into `vendor`; returns the tap's messages, the
/// target's stdout lines and its `--report`.
fn pipeline(
    venv: &Path,
    sb: &Sandbox,
    vendor: Vendor,
    tap_config: &Path,
    catalog: &Path,
    dir: &Path,
) -> (Vec<Value>, Vec<Value>, Value) {
    let dir = dir.join(vendor.name());
    std::fs::create_dir_all(&dir).unwrap();
    let mut target_config = sb.config(vendor);
    target_config["reject_file"] = json!(dir.join("rejects.ndjson"));
    let target_config = support::write_json(&dir.join("target.json"), &target_config);
    let (tap_out, state_out, report) = (
        dir.join("tap.out"),
        dir.join("state.out"),
        dir.join("report.json"),
    );
    let finished = support::pipeline(
        r#"tap-postgres --config "$TAP_CONFIG" --catalog "$CATALOG" | tee "$TAP_OUT" | target-roster --config "$TARGET_CONFIG" --report "$REPORT" > "$STATE_OUT""#,
        &[&venv.join("bin")],
        &[
            ("TAP_CONFIG", tap_config),
            ("CATALOG", catalog),
            ("TARGET_CONFIG", &target_config),
            ("TAP_OUT", &tap_out),
            ("STATE_OUT", &state_out),
            ("REPORT", &report),
        ],
        STEP_TIMEOUT,
    );
    finished.assert_success(&format!("tap-postgres | target-roster ({vendor})"));
    let rejects = std::fs::read_to_string(dir.join("rejects.ndjson")).unwrap_or_default();
    assert!(
        rejects.trim().is_empty(),
        "{vendor}: rejects:\n{rejects}\n{}",
        finished.both()
    );
    (
        support::singer_lines(&std::fs::read_to_string(tap_out).unwrap()),
        support::singer_lines(&std::fs::read_to_string(state_out).unwrap()),
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap(),
    )
}

#[test]
fn warehouse_rows_reach_appcues_and_userflow_through_tap_postgres() {
    let Some(bin) = pg_bindir() else {
        return support::skip_or_fail(
            "PostgreSQL's server programs (initdb, pg_ctl) are needed: apt-get install postgresql",
        );
    };
    let Some(venv) = support::venv("tap-postgres", TAP_POSTGRES) else {
        return support::skip_or_fail("python3 with venv is needed for meltanolabs-tap-postgres");
    };
    let pg = Postgres::start(bin);
    pg.psql_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reverse_etl/users.sql"),
    );

    let dir = tempfile::tempdir().unwrap();
    let tap_config = support::write_json(&dir.path().join("tap-postgres.json"), &pg.tap_config());
    let catalog = selected_catalog(&venv, &tap_config, dir.path());
    // Ten seeded Userflow users, so user_00001..user_00005 exist there before the sync.
    let sb = Sandbox::builder()
        .seed(7)
        .users(10)
        .groups(2)
        .start_background()
        .unwrap();
    let userflow_before = users_by_id(&sb.dump(Vendor::Userflow));

    let mut rows: Vec<Value> = Vec::new();
    for vendor in [Vendor::Appcues, Vendor::Userflow] {
        let (tap, states, report) = pipeline(&venv, &sb, vendor, &tap_config, &catalog, dir.path());
        let records: Vec<Value> = tap
            .iter()
            .filter(|m| m["type"] == "RECORD")
            .map(|m| {
                assert_eq!(m["stream"], "public-users");
                m["record"].clone()
            })
            .collect();
        if rows.is_empty() {
            assert_fixture_rows(&records);
            rows = records;
        } else {
            assert_eq!(records, rows, "tap-postgres reads the same rows each time");
        }
        // The target's account of the run, and the state it handed back: the tap's last one.
        let last_state = tap.iter().rev().find(|m| m["type"] == "STATE").unwrap()["value"].clone();
        assert_eq!(
            states.last(),
            Some(&last_state),
            "{vendor}: the target's state"
        );
        let counts = &report["streams"]["public-users"];
        assert_eq!(
            counts["kind"], "users",
            "{vendor}: public-users is routed as users: {report:#}"
        );
        assert_eq!(counts["records_in"], 6, "{vendor}: {report:#}");
        assert_eq!(counts["rejected"], 0, "{vendor}: {report:#}");
        // Five upserts and one delete. Appcues never had the deleted user, answers the delete
        // with 404, and the target counts it as skipped; Userflow had it and deletes it.
        let (sent, skipped) = if vendor == Vendor::Appcues {
            (5, 1)
        } else {
            (6, 0)
        };
        assert_eq!(counts["sent"], sent, "{vendor}: {report:#}");
        assert_eq!(counts["skipped"], skipped, "{vendor}: {report:#}");
        assert_eq!(report["exit_code"], 0, "{vendor}: {report:#}");
        let deletes: Vec<(String, u16)> = sb
            .requests()
            .iter()
            .filter(|r| r.vendor == Some(vendor) && r.method == "DELETE")
            .map(|r| (r.path.clone(), r.status))
            .collect();
        let expected_delete = match vendor {
            Vendor::Appcues => (
                "/appcues/v2/accounts/10001/users/user_00005/profile".to_string(),
                404,
            ),
            _ => ("/userflow/users/user_00005".to_string(), 200),
        };
        assert_eq!(
            deletes,
            [expected_delete],
            "{vendor}: the deleted row became one DELETE"
        );
    }
    drop(pg);

    let deleted = "user_00005";
    let live: Vec<&Value> = rows.iter().filter(|r| r["id"] != deleted).collect();
    // Every column but the key and the delete marker: what a vendor should hold for the row.
    let properties = |row: &Value| -> Map<String, Value> {
        row.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| *k != "id" && *k != "_sdc_deleted_at")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };

    // Appcues: one flat profile per live row with every column as a property (a null as null),
    // and nothing for the deleted row.
    let profiles: BTreeMap<String, Value> = sb.dump(Vendor::Appcues)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["user_id"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    assert_eq!(
        profiles.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "user_00001",
            "user_00002",
            "user_00003",
            "user_00004",
            "wh-9f2c"
        ],
        "Appcues profiles"
    );
    for row in &live {
        let id = row["id"].as_str().unwrap();
        let mut expected = properties(row);
        expected.insert("user_id".into(), json!(id));
        assert_eq!(
            profiles[id],
            Value::Object(expected),
            "Appcues profile of {id}"
        );
    }

    // Userflow: rows merged into the seeded users (their other attributes stay; a null clears),
    // the new one created, the deleted one gone, and nobody else touched.
    let after = users_by_id(&sb.dump(Vendor::Userflow));
    assert!(
        userflow_before.contains_key(deleted),
        "{deleted} was seeded"
    );
    assert!(
        !after.contains_key(deleted),
        "the deleted row's user is gone from Userflow"
    );
    let mut expected_ids: Vec<&str> = userflow_before
        .keys()
        .map(String::as_str)
        .filter(|id| *id != deleted)
        .chain(["wh-9f2c"])
        .collect();
    expected_ids.sort();
    assert_eq!(
        after.keys().map(String::as_str).collect::<Vec<_>>(),
        expected_ids,
        "Userflow users"
    );
    for (id, user) in &after {
        let Some(row) = live.iter().find(|r| r["id"] == id.as_str()) else {
            assert_eq!(
                user, &userflow_before[id],
                "{id} is not in the table and stays as it was"
            );
            continue;
        };
        let mut expected = userflow_before
            .get(id)
            .map(|u| u["attributes"].as_object().unwrap().clone())
            .unwrap_or_default();
        for (k, v) in properties(row) {
            if v.is_null() {
                expected.remove(&k);
            } else {
                expected.insert(k, v);
            }
        }
        let mut got = user["attributes"].as_object().unwrap().clone();
        got.retain(|_, v| !v.is_null());
        assert_eq!(
            Value::Object(got),
            Value::Object(expected),
            "Userflow attributes of {id}"
        );
    }
}

fn users_by_id(dump: &Value) -> BTreeMap<String, Value> {
    dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["id"].as_str().unwrap().to_string(), u.clone()))
        .collect()
}

/// The rows are the fixture's, as tap-postgres types them: a few values spelled out, so a
/// mangled read cannot pass for a good one.
fn assert_fixture_rows(rows: &[Value]) {
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "user_00001",
            "user_00002",
            "user_00003",
            "user_00004",
            "user_00005",
            "wh-9f2c"
        ]
    );
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(row("user_00001")["seats"], json!(134));
    assert_eq!(row("user_00001")["mrr"], json!(2400.0));
    assert_eq!(row("user_00002")["is_trial"], json!(true));
    assert_eq!(row("user_00002")["last_seen_at"], Value::Null);
    assert_eq!(row("user_00003")["name"], "Søren Haddad");
    assert_eq!(
        row("user_00003")["created_at"],
        "2023-02-14T07:00:00.000000+00:00"
    );
    assert_eq!(row("user_00004")["plan"], Value::Null);
    assert!(row("user_00005")["_sdc_deleted_at"].is_string());
    assert_eq!(row("wh-9f2c")["email"], "new.hire@example.com");
}

/// Pinned so a new upstream release cannot change what passes here.
pub(crate) const TARGET_POSTGRES: &[&str] = &["meltanolabs-target-postgres==0.8.1"];

/// The other direction: tap-roster (Userflow, with schema flattening) → meltanolabs
/// target-postgres (PyPI) lands users, groups and memberships as tables with one column per
/// attribute; a second run, after an attribute changed in Userflow, updates that row in place
/// (`load_method: upsert` on the streams' keys): no duplicate rows.
#[test]
fn tap_roster_lands_people_in_postgres_through_target_postgres_and_updates_in_place() {
    let Some((pg, venv)) = postgres_and_target_postgres() else {
        return;
    };
    let sb = Sandbox::builder()
        .seed(7)
        .users(40)
        .groups(4)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut tap = sb.config(Vendor::Userflow);
    tap["flattening_enabled"] = json!(true);
    let tap_config = support::write_json(&dir.path().join("tap.json"), &tap);
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
    let run = |what: &str| {
        support::pipeline(
            r#"tap-roster --config "$TAP_CONFIG" | target-postgres --config "$TARGET_CONFIG" > /dev/null"#,
            &[&venv.join("bin")],
            &[("TAP_CONFIG", &tap_config), ("TARGET_CONFIG", &target_config)],
            STEP_TIMEOUT,
        )
        .assert_success(what);
    };
    // What Userflow holds: user → (email, plan), groups, memberships.
    let userflow = |sb: &Sandbox| {
        let dump = sb.dump(Vendor::Userflow);
        let mut users = BTreeMap::new();
        let mut memberships = Vec::new();
        for u in dump["users"].as_array().unwrap() {
            let id = u["id"].as_str().unwrap().to_string();
            let a = &u["attributes"];
            users.insert(
                id.clone(),
                vec![
                    id.clone(),
                    a["email"].as_str().unwrap().to_string(),
                    a["plan"].as_str().unwrap().to_string(),
                ],
            );
            for m in u["memberships"].as_array().unwrap() {
                memberships.push(vec![
                    m["group_id"].as_str().unwrap().to_string(),
                    id.clone(),
                ]);
            }
        }
        memberships.sort();
        let groups: Vec<Vec<String>> = dump["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| vec![g["id"].as_str().unwrap().to_string()])
            .collect();
        (users.into_values().collect::<Vec<_>>(), groups, memberships)
    };
    let held = |pg: &Postgres| {
        (
            pg.query("SELECT id, email, attributes__plan FROM roster.users ORDER BY id"),
            pg.query("SELECT id FROM roster.groups ORDER BY id"),
            pg.query("SELECT group_id, user_id FROM roster.memberships ORDER BY group_id, user_id"),
        )
    };

    run("tap-roster | target-postgres");
    let expected = userflow(&sb);
    assert_eq!(expected.0.len(), 40);
    assert!(!expected.2.is_empty());
    assert_eq!(held(&pg), expected, "PostgreSQL holds what Userflow holds");
    // Typed columns from the attribute definitions.
    let types: BTreeMap<String, String> = pg
        .query(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_schema = 'roster' AND table_name = 'users'",
        )
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert!(types.contains_key("attributes__plan"), "{types:?}");
    assert!(
        !types.contains_key("attributes"),
        "attributes are columns, not one JSON column: {types:?}"
    );
    assert!(
        types["attributes__signed_up_at"].starts_with("timestamp"),
        "a datetime attribute is a timestamp column: {types:?}"
    );

    // A changed attribute in Userflow (written there by target-roster), then a second run.
    let changed = expected.0[3][0].clone();
    let singer = dir.path().join("change.singer");
    std::fs::write(
        &singer,
        format!(
            "{}\n{}\n",
            json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
                   "schema": {"type": "object", "properties": {"id": {"type": "string"},
                   "attributes": {"type": "object"}}}}),
            json!({"type": "RECORD", "stream": "users",
                   "record": {"id": changed, "attributes": {"plan": "enterprise-plus"}}}),
        ),
    )
    .unwrap();
    let userflow_config = support::write_json(
        &dir.path().join("userflow.json"),
        &sb.config(Vendor::Userflow),
    );
    support::pipeline(
        r#"target-roster --config "$CONFIG" < "$INPUT" > /dev/null"#,
        &[],
        &[("CONFIG", &userflow_config), ("INPUT", &singer)],
        STEP_TIMEOUT,
    )
    .assert_success("target-roster into Userflow");
    let expected = userflow(&sb);
    assert!(
        expected
            .0
            .iter()
            .any(|u| u[0] == changed && u[2] == "enterprise-plus"),
        "the change reached Userflow"
    );
    run("the second tap-roster | target-postgres");
    assert_eq!(
        held(&pg),
        expected,
        "the second run updated the row in place, with no duplicates"
    );
}

/// Mirror deletes in the warehouse: tap-roster sends ACTIVATE_VERSION the classic way, so
/// meltanolabs target-postgres (`add_record_metadata: true`, `hard_delete: false`) soft-deletes
/// the row of a user removed from Userflow between two runs (its `_sdc_deleted_at` is set)
/// and leaves the others alone. The second run resumes from the state target-postgres handed
/// back, as Meltano does.
#[test]
fn tap_roster_into_target_postgres_soft_deletes_a_removed_user() {
    let Some((pg, venv)) = postgres_and_target_postgres() else {
        return;
    };
    let sb = Sandbox::builder()
        .seed(9)
        .users(25)
        .groups(3)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tap_config =
        support::write_json(&dir.path().join("tap.json"), &sb.config(Vendor::Userflow));
    let target_config = support::write_json(
        &dir.path().join("target-postgres.json"),
        &json!({
            "host": "127.0.0.1",
            "port": pg.port,
            "user": "roster",
            "password": PG_PASSWORD,
            "database": "postgres",
            "default_target_schema": "mirror",
            "load_method": "upsert",
            "add_record_metadata": true,
            "hard_delete": false,
        }),
    );
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{}").unwrap();
    let run = |what: &str| {
        let out = dir.path().join("target.out");
        support::pipeline(
            r#"tap-roster --config "$TAP_CONFIG" --state "$STATE" | target-postgres --config "$TARGET_CONFIG" > "$OUT""#,
            &[&venv.join("bin")],
            &[
                ("TAP_CONFIG", &tap_config),
                ("TARGET_CONFIG", &target_config),
                ("STATE", &state),
                ("OUT", &out),
            ],
            STEP_TIMEOUT,
        )
        .assert_success(what);
        // The state target-postgres hands back is the next run's, as Meltano keeps it.
        let text = std::fs::read_to_string(&out).unwrap();
        if let Some(last) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            std::fs::write(&state, last).unwrap();
        }
    };
    let live = |pg: &Postgres| {
        pg.query("SELECT id FROM mirror.users WHERE _sdc_deleted_at IS NULL ORDER BY id")
            .into_iter()
            .map(|r| r[0].clone())
            .collect::<Vec<_>>()
    };
    run("tap-roster | target-postgres");
    let before = live(&pg);
    assert_eq!(before.len(), 25);
    let removed = before[7].clone();
    assert!(sb.delete_user(Vendor::Userflow, &removed));
    run("the second tap-roster | target-postgres");
    let mut expected = before.clone();
    expected.retain(|id| *id != removed);
    assert_eq!(live(&pg), expected, "only the removed user is soft-deleted");
    let gone = pg.query(&format!(
        "SELECT _sdc_deleted_at IS NOT NULL FROM mirror.users WHERE id = '{removed}'"
    ));
    assert_eq!(gone, [["t"]], "the row stays, marked deleted");
    let memberships = pg.query(&format!(
        "SELECT count(*) FROM mirror.memberships WHERE user_id = '{removed}' AND _sdc_deleted_at IS NULL"
    ));
    assert_eq!(memberships, [["0"]], "its memberships went with it");
}
