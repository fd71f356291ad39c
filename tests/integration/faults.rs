//! The fault-storm matrix: every vendor the target writes, and every vendor the tap reads, under
//! each fault the sandbox can inject: 429 with and without `Retry-After`, bursts of 500 and of
//! 503, a seeded mix of both, added latency, dropped connections, UserGuiding's block rule
//! (shortened by the sandbox flag), and a vendor that is down.
//!
//! For every cell:
//! - **nothing is lost**: what the vendor holds equals the input (target), or the tap's output
//!   equals what the vendor holds (tap), with no record twice;
//! - **retries stay within budget and none is hidden**: every attempt the client counted
//!   reached the sandbox and every failed attempt the sandbox answered was counted by the
//!   client (`--report` JSON against the sandbox's counters); nothing was given up on;
//! - **exit code, summary and state are right**: 0 with every record sent and the last STATE
//!   printed, or, for a vendor that is down, 1 naming the vendor, nothing written, and every
//!   record covered by a printed state in the reject file.
//!
//! Faults are seeded (the sandbox's RNG draws in request order, so a class sees the same number
//! of faults run after run); `ROSTER_ZERO_DELAYS=1` is set except where a delay must be
//! honoured (`Retry-After`, UserGuiding's block, latency). `scripts/reliability.sh` runs the same
//! matrix at full size and tabulates it in RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;
use crate::tap_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use roster::vendors;
use roster_sandbox::{FailRule, RateLimit, Sandbox, SandboxBuilder, UserGuidingBlock, Vendor};
use serde_json::{Map, Value, json};

const TARGET: &str = env!("CARGO_BIN_EXE_target-roster");
const TAP: &str = env!("CARGO_BIN_EXE_tap-roster");

/// The users' plans, in turn.
const PLANS: [&str; 3] = ["free", "pro", "team"];

/// The retry budget every cell runs with (`max_retries`).
const BUDGET: u64 = 8;

// ---------------------------------------------------------------------------------------------
// The target's input and what each vendor must hold afterwards.

/// The people the target writes: `users` users, `groups` groups, each user in one group.
#[derive(Debug, Clone, Copy)]
struct Model {
    users: usize,
    groups: usize,
}

impl Model {
    fn user_id(i: usize) -> String {
        format!("u{i:04}")
    }
    fn email(i: usize) -> String {
        format!("u{i:04}@example.com")
    }
    fn group_of(&self, i: usize) -> usize {
        i % self.groups
    }

    /// The Singer input: SCHEMAs, the groups, then each user followed by its membership, with
    /// a STATE `{"offset": n}` after every 10 records and at the end.
    fn singer(&self) -> (String, usize) {
        let mut lines = Vec::new();
        for (stream, key) in [
            ("users", json!(["id"])),
            ("groups", json!(["id"])),
            ("memberships", json!(["group_id", "user_id"])),
        ] {
            lines.push(json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": key}));
        }
        let mut records = Vec::new();
        for j in 0..self.groups {
            records.push(json!({"type": "RECORD", "stream": "groups", "record": {
                "id": format!("g{j}"), "name": format!("Group {j}"),
                "attributes": {"tier": if j % 2 == 0 { "gold" } else { "silver" }}}}));
        }
        for i in 0..self.users {
            let plan = PLANS[i % 3];
            records.push(json!({"type": "RECORD", "stream": "users", "record": {
                "id": Self::user_id(i), "email": Self::email(i), "name": format!("User {i}"),
                "attributes": {"plan": plan, "n": i}}}));
            records.push(
                json!({"type": "RECORD", "stream": "memberships", "record": {
                "group_id": format!("g{}", self.group_of(i)), "user_id": Self::user_id(i)}}),
            );
        }
        let total = records.len();
        for (n, record) in records.into_iter().enumerate() {
            lines.push(record);
            if (n + 1) % 10 == 0 || n + 1 == total {
                lines.push(json!({"type": "STATE", "value": {"offset": n + 1}}));
            }
        }
        let text = lines.iter().map(|l| format!("{l}\n")).collect();
        (text, total)
    }

    /// The record at input position `n` (0-based, records only), as (stream, key).
    fn record_key(&self, n: usize) -> (&'static str, String) {
        if n < self.groups {
            return ("groups", format!("g{n}"));
        }
        let i = (n - self.groups) / 2;
        if (n - self.groups) % 2 == 0 {
            ("users", Self::user_id(i))
        } else {
            (
                "memberships",
                format!("g{}|{}", self.group_of(i), Self::user_id(i)),
            )
        }
    }
}

/// What a vendor holds, in roster's terms: users and groups by key with their fields, and
/// memberships as (group, user) pairs.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct View {
    pub(crate) users: BTreeMap<String, Value>,
    pub(crate) groups: BTreeMap<String, Value>,
    pub(crate) memberships: BTreeSet<(String, String)>,
}

impl View {
    fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.memberships.is_empty()
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn without(v: &Value, keys: &[&str]) -> Value {
    let mut obj = v.as_object().cloned().unwrap_or_default();
    for k in keys {
        obj.remove(*k);
    }
    Value::Object(obj)
}

/// What `vendor` must hold after `model` was written.
fn expected(vendor: Vendor, model: &Model) -> View {
    let mut view = View::default();
    let stringify = vendor == Vendor::Userpilot;
    let value = |v: Value| match v {
        Value::Number(n) if stringify => Value::String(n.to_string()),
        other => other,
    };
    for j in 0..model.groups {
        let name = format!("Group {j}");
        let tier = if j % 2 == 0 { "gold" } else { "silver" };
        match vendor {
            Vendor::Guru => view.groups.insert(name, json!({})),
            Vendor::Scim | Vendor::GuruScim => view
                .groups
                .insert(format!("g{j}"), json!({"displayName": name})),
            _ => view
                .groups
                .insert(format!("g{j}"), json!({"name": name, "tier": tier})),
        };
    }
    for i in 0..model.users {
        let (id, email) = (Model::user_id(i), Model::email(i));
        let group = model.group_of(i);
        match vendor {
            Vendor::Guru => {
                view.users.insert(email.clone(), json!({}));
                view.memberships.insert((format!("Group {group}"), email));
            }
            Vendor::Scim | Vendor::GuruScim => {
                view.users.insert(
                    id.clone(),
                    json!({"userName": email, "displayName": format!("User {i}")}),
                );
                view.memberships.insert((format!("g{group}"), id));
            }
            _ => {
                let mut attrs = Map::new();
                attrs.insert("email".into(), json!(email));
                attrs.insert("name".into(), json!(format!("User {i}")));
                attrs.insert("plan".into(), json!(PLANS[i % 3]));
                attrs.insert("n".into(), value(json!(i)));
                view.users.insert(id.clone(), Value::Object(attrs));
                view.memberships.insert((format!("g{group}"), id));
            }
        }
    }
    view
}

/// What `vendor` holds in the sandbox now.
pub(crate) fn actual(sb: &Sandbox, vendor: Vendor) -> View {
    let dump = sb.dump(vendor);
    let list = |key: &str| dump[key].as_array().cloned().unwrap_or_default();
    let mut view = View::default();
    match vendor {
        Vendor::Userflow => {
            for u in list("users") {
                for m in u["memberships"].as_array().into_iter().flatten() {
                    view.memberships.insert((s(&m["group_id"]), s(&u["id"])));
                }
                view.users.insert(s(&u["id"]), u["attributes"].clone());
            }
            for g in list("groups") {
                view.groups.insert(s(&g["id"]), g["attributes"].clone());
            }
        }
        Vendor::UserGuiding => {
            for u in list("users") {
                if let Some(company) = u["companyId"].as_str() {
                    view.memberships.insert((company.into(), s(&u["userId"])));
                }
                view.users.insert(s(&u["userId"]), u["attributes"].clone());
            }
            for c in list("companies") {
                view.groups
                    .insert(s(&c["companyId"]), c["attributes"].clone());
            }
        }
        Vendor::Userpilot => {
            for u in list("users") {
                if let Some(company) = u["company_id"].as_str() {
                    view.memberships.insert((company.into(), s(&u["user_id"])));
                }
                view.users.insert(s(&u["user_id"]), u["metadata"].clone());
            }
            for c in list("companies") {
                view.groups
                    .insert(s(&c["company_id"]), c["metadata"].clone());
            }
        }
        Vendor::Appcues => {
            for u in list("users") {
                view.users
                    .insert(s(&u["user_id"]), without(&u, &["user_id"]));
            }
            for g in list("groups") {
                for u in g["user_ids"].as_array().into_iter().flatten() {
                    view.memberships.insert((s(&g["group_id"]), s(u)));
                }
                view.groups
                    .insert(s(&g["group_id"]), without(&g, &["group_id", "user_ids"]));
            }
        }
        Vendor::Guru => {
            for m in list("members") {
                view.users.insert(s(&m["user"]["email"]), json!({}));
            }
            for g in list("groups") {
                if g["name"] == "All Members" {
                    continue;
                }
                for email in g["members"].as_array().into_iter().flatten() {
                    view.memberships.insert((s(&g["name"]), s(email)));
                }
                // Guru does not deduplicate names: a second group of a name is a defect.
                let mut name = s(&g["name"]);
                while view.groups.contains_key(&name) {
                    name.push_str(" (again)");
                }
                view.groups.insert(name, json!({}));
            }
        }
        Vendor::Scim | Vendor::GuruScim => {
            let mut external = BTreeMap::new();
            for u in list("Users") {
                let key = u["externalId"]
                    .as_str()
                    .map_or_else(|| s(&u["id"]), str::to_string);
                // A second user of a key is a defect the map must not merge away.
                let mut key = key;
                while view.users.contains_key(&key) {
                    key.push_str(" (again)");
                }
                external.insert(s(&u["id"]), key.clone());
                view.users.insert(
                    key,
                    json!({"userName": u["userName"], "displayName": u["displayName"]}),
                );
            }
            for g in list("Groups") {
                let mut key = g["externalId"]
                    .as_str()
                    .map_or_else(|| s(&g["id"]), str::to_string);
                // A second group of a key (a create repeated blindly) is a defect the map must
                // not merge away.
                while view.groups.contains_key(&key) {
                    key.push_str(" (again)");
                }
                for m in g["members"].as_array().into_iter().flatten() {
                    let id = s(&m["value"]);
                    let user = external.get(&id).cloned().unwrap_or(id);
                    view.memberships.insert((key.clone(), user));
                }
                view.groups
                    .insert(key, json!({"displayName": g["displayName"]}));
            }
        }
    }
    view
}

// ---------------------------------------------------------------------------------------------
// Fault classes.

/// One column of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A token bucket below the client's pace, answering 429 with `Retry-After`.
    RetryAfter429,
    /// The same bucket answering 429 without `Retry-After`.
    Plain429,
    /// The next three writes answer 500.
    Burst500,
    /// The next three writes answer 503.
    Burst503,
    /// A seeded share of all requests (25% for the target, 40% for the tap) answer 500 or 503.
    Mixed5xx,
    /// 150 ms added to every request.
    Latency,
    /// A seeded 15% of connections dropped without an answer.
    Drops,
    /// UserGuiding's 50-per-10-s rule with the block shortened to 2 s and announced in
    /// `Retry-After`, against a client told to go faster than the rule.
    UserGuidingBlock,
    /// Every request answers 500 or 503.
    Down,
    /// A seeded 15% of requests are applied by the vendor, then answered 500 or 503 or cut
    /// off (`apply_then_fail`): the case where a blind retry duplicates a create.
    LostAnswers,
}

const TARGET_FAULTS: [Fault; 9] = [
    Fault::RetryAfter429,
    Fault::Plain429,
    Fault::Burst500,
    Fault::Burst503,
    Fault::Mixed5xx,
    Fault::Latency,
    Fault::Drops,
    Fault::Down,
    Fault::LostAnswers,
];

impl Fault {
    /// Backoff only slows these down; the others must honour a real delay (a 429 without
    /// `Retry-After` is survived by backing off: with zero delays the budget burns in
    /// milliseconds against a bucket that refills four times a second).
    ///
    /// UserGuiding is the exception: its client pauses a whole minute (the vendor's block)
    /// after a 429 without `Retry-After`, so its plain-429 cell is three such answers in a row
    /// (see [`Fault::sandbox`]) retried without delays; the block itself is the
    /// [`Fault::UserGuidingBlock`] cell.
    fn zero_delays(self, vendor: Vendor) -> bool {
        match self {
            Fault::Plain429 => vendor == Vendor::UserGuiding,
            _ => !matches!(
                self,
                Fault::RetryAfter429 | Fault::Latency | Fault::UserGuidingBlock
            ),
        }
    }

    /// The sandbox for this cell: `seed` fixes the data and the fault draws.
    fn sandbox(
        self,
        vendor: Vendor,
        write_path: (&str, &str),
        base: SandboxBuilder,
        knobs: Knobs,
    ) -> Sandbox {
        let bucket = || RateLimit::parse(knobs.bucket).unwrap();
        let builder = base.seed(knobs.seed).log_capacity(200_000);
        let builder = match self {
            Fault::RetryAfter429 => {
                builder.rate_limit_with(vendor, bucket().with_retry_after(true))
            }
            Fault::Plain429 if vendor == Vendor::UserGuiding => builder,
            Fault::Plain429 => builder.rate_limit_with(vendor, bucket().with_retry_after(false)),
            Fault::Mixed5xx => builder.error_rate(Some(vendor), knobs.mixed_rate),
            Fault::Latency => builder.latency(Some(vendor), Duration::from_millis(150)),
            Fault::Drops => builder.drop_rate(Some(vendor), 0.15),
            Fault::Down => builder.error_rate(Some(vendor), 1.0),
            Fault::LostAnswers => builder.apply_then_fail_rate(Some(vendor), 0.15),
            Fault::UserGuidingBlock => builder.userguiding_block(Some(UserGuidingBlock {
                block_secs: 2.0,
                retry_after: true,
                ..UserGuidingBlock::default()
            })),
            Fault::Burst500 | Fault::Burst503 => builder,
        };
        let sb = builder.start_background().unwrap();
        let status = match self {
            Fault::Burst500 => Some(500),
            Fault::Burst503 => Some(503),
            Fault::Plain429 if vendor == Vendor::UserGuiding => Some(429),
            _ => None,
        };
        if let Some(status) = status {
            let (method, path) = write_path;
            sb.faults()
                .fail_next(FailRule::new(path, 3).status(status).method(method));
        }
        sb
    }
}

/// What a side of the matrix tunes: the sandbox seed (data and fault draws), the share of
/// failures in [`Fault::Mixed5xx`] and the token bucket of the 429 classes.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    seed: u64,
    mixed_rate: f64,
    bucket: &'static str,
}

/// The request a burst of failures is aimed at: each vendor's main write.
fn write_path(vendor: Vendor) -> (&'static str, &'static str) {
    match vendor {
        Vendor::Userflow => ("POST", "/userflow/users"),
        Vendor::UserGuiding => ("POST", "/userguiding/v1/identify"),
        Vendor::Userpilot => ("POST", "/userpilot/v1/identify"),
        Vendor::Appcues => ("PATCH", "/appcues/v2/accounts/10001/users/*"),
        Vendor::Guru => ("POST", "/guru/api/v1/members/invite"),
        Vendor::GuruScim => ("POST", "/guru/api/scim/v2/Users"),
        Vendor::Scim => ("POST", "/scim/v2/Users"),
    }
}

/// The request a tap burst is aimed at: each vendor's user listing.
fn read_path(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Userflow => "/userflow/users",
        Vendor::Guru => "/guru/api/v1/members",
        Vendor::GuruScim => "/guru/api/scim/v2/Users",
        Vendor::Scim => "/scim/v2/Users",
        other => panic!("{other} is not listable"),
    }
}

/// The sandbox's count of one status for `vendor` ("0" = dropped).
fn answered(sb: &Sandbox, vendor: Vendor, status: &str) -> u64 {
    sb.stats()
        .vendors
        .get(vendor.name())
        .and_then(|v| v.statuses.get(status).copied())
        .unwrap_or(0)
}

fn answered_5xx(sb: &Sandbox, vendor: Vendor) -> u64 {
    sb.stats().vendors.get(vendor.name()).map_or(0, |v| {
        v.statuses
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(_, n)| *n)
            .sum()
    })
}

// ---------------------------------------------------------------------------------------------
// The target side.

struct TargetRun {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    report: Value,
    rejects: Vec<Value>,
}

fn run_target(config: &Value, input: &str, dir: &Path, zero_delays: bool) -> TargetRun {
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let input_path = dir.join("input.singer");
    std::fs::write(&input_path, input).unwrap();
    let report_path = dir.join("report.json");
    let mut command = Command::new(TARGET);
    command
        .arg("--config")
        .arg(&config_path)
        .arg("--input")
        .arg(&input_path)
        .arg("--report")
        .arg(&report_path)
        .env("ROSTER_LOG", "warn")
        .env_remove("ROSTER_ZERO_DELAYS")
        .current_dir(dir);
    if zero_delays {
        command.env("ROSTER_ZERO_DELAYS", "1");
    }
    let out = support::run(&mut command, Duration::from_secs(600));
    let rejects = std::fs::read_to_string(dir.join("rejects.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "RECORD")
        .collect();
    TargetRun {
        code: out.status.code(),
        stdout: out.stdout,
        stderr: out.stderr,
        report: std::fs::read(&report_path)
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap_or(Value::Null),
        rejects,
    }
}

/// One target cell: `vendor` under `fault`, with `model` as input.
fn target_cell(vendor: Vendor, fault: Fault, model: Model) {
    let what = format!("target {vendor} under {fault:?}");
    let sb = fault.sandbox(
        vendor,
        write_path(vendor),
        Sandbox::builder().users(0).groups(0),
        Knobs {
            seed: 11,
            mixed_rate: 0.25,
            bucket: "4/s,burst=1",
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(vendor);
    config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
    config["max_retries"] = json!(BUDGET);
    config["requests_per_second"] = json!(50);
    if fault == Fault::Down {
        config["max_retries"] = json!(2);
    }
    let (input, total) = model.singer();
    let run = run_target(&config, &input, dir.path(), fault.zero_delays(vendor));
    let ctx = format!(
        "{what}\n--- stderr\n{}\n--- report\n{:#}",
        run.stderr, run.report
    );
    assert!(!run.stderr.contains("panicked"), "{ctx}");
    let held = actual(&sb, vendor);
    let printed: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // Every record a printed state covers is at the vendor or in the reject file.
    let covered = printed
        .last()
        .map_or(0, |s| s["offset"].as_u64().unwrap() as usize);
    let rejected: BTreeSet<(String, String)> = run
        .rejects
        .iter()
        .map(|r| {
            let stream = s(&r["stream"]);
            let key = if stream == "memberships" {
                format!(
                    "{}|{}",
                    s(&r["record"]["group_id"]),
                    s(&r["record"]["user_id"])
                )
            } else {
                s(&r["record"]["id"])
            };
            (stream, key)
        })
        .collect();
    if fault == Fault::Down {
        for n in 0..covered {
            let (stream, key) = model.record_key(n);
            assert!(
                rejected.contains(&(stream.to_string(), key.clone())),
                "{stream} {key} is covered by a state but neither sent nor rejected: {ctx}"
            );
        }
    }

    // The client's counters agree with the sandbox's: no hidden retries, no phantom attempts.
    let http = &run.report["http"];
    let attempts = http["requests"].as_u64().unwrap() + http["retries"].as_u64().unwrap();
    let seen = sb
        .stats()
        .vendors
        .get(vendor.name())
        .map_or(0, |v| v.requests);
    assert_eq!(seen, attempts, "attempts: sandbox vs --report: {ctx}");
    let throttled = answered(&sb, vendor, "429");
    let errors = answered_5xx(&sb, vendor);
    let dropped = answered(&sb, vendor, "0");
    assert_eq!(http["status_429"], throttled, "{ctx}");
    assert_eq!(http["status_5xx"], errors, "{ctx}");
    assert_eq!(http["transport_errors"], dropped, "{ctx}");
    let failures = throttled + errors + dropped;
    let retries = http["retries"].as_u64().unwrap();
    assert!(retries <= failures, "a retry without a failure: {ctx}");

    // The fault really happened.
    match fault {
        Fault::RetryAfter429 | Fault::Plain429 => assert!(throttled > 0, "no 429: {ctx}"),
        Fault::Burst500 => assert_eq!(answered(&sb, vendor, "500"), 3, "{ctx}"),
        Fault::Burst503 => assert_eq!(answered(&sb, vendor, "503"), 3, "{ctx}"),
        Fault::Mixed5xx => assert!(
            answered(&sb, vendor, "500") > 0 && answered(&sb, vendor, "503") > 0,
            "{ctx}"
        ),
        Fault::Drops => assert!(dropped > 0, "no dropped connection: {ctx}"),
        Fault::Latency => assert!(
            sb.requests()
                .iter()
                .all(|r| r.fault.as_deref() == Some("latency 150ms")),
            "{ctx}"
        ),
        Fault::UserGuidingBlock => assert!(
            sb.requests()
                .iter()
                .any(|r| r.fault.as_deref() == Some("userguiding_block")),
            "the block never triggered: {ctx}"
        ),
        Fault::Down => assert!(errors > 0, "{ctx}"),
        Fault::LostAnswers => assert!(
            sb.requests().iter().any(|r| r
                .fault
                .as_deref()
                .is_some_and(|f| f.starts_with("apply_then_fail"))),
            "no answer was lost: {ctx}"
        ),
    }

    if fault == Fault::Down {
        assert_eq!(run.code, Some(1), "{ctx}");
        assert!(
            held.is_empty(),
            "a vendor that is down took something: {held:?}"
        );
        assert_eq!(run.report["exit_code"], 1, "{ctx}");
        let outcome = run.report["outcome"].as_str().unwrap();
        assert!(
            outcome.contains(&format!("{vendor} is unreachable")),
            "{outcome}: {ctx}"
        );
        assert!(
            run.stderr.contains(&format!("{vendor} is unreachable")),
            "the failure is named: {ctx}"
        );
        crate::crash::record_trial(&json!({"side": "target", "vendor": vendor.name(),
            "fault": format!("{fault:?}"), "records": total, "faults": failures,
            "retries": retries, "lost": 0, "duplicates": null, "exit": 1}));
        return;
    }

    // Everything arrived, exactly as sent, and the run says so.
    assert_eq!(run.code, Some(0), "{ctx}");
    assert_eq!(held, expected(vendor, &model), "what {vendor} holds: {ctx}");
    assert!(run.rejects.is_empty(), "rejects {:?}: {ctx}", run.rejects);
    assert_eq!(
        printed.last(),
        Some(&json!({"offset": total})),
        "the last state: {ctx}"
    );
    let totals = &run.report["totals"];
    assert_eq!(totals["records_in"], total, "{ctx}");
    assert_eq!(totals["sent"], total, "{ctx}");
    assert_eq!(totals["rejected"], 0, "{ctx}");
    assert_eq!(run.report["outcome"], "ok", "{ctx}");
    assert!(
        run.stderr.contains(&format!("{total} records in"))
            && run
                .stderr
                .contains(&format!("{total} sent, 0 rejected, 0 skipped")),
        "the summary: {ctx}"
    );
    // Nothing was given up on, so every failed attempt was retried, within the budget.
    // (Guru's group creates and SCIM creates are not repeated by the engine: their writers look
    // first and send again themselves, which counts as a request, not a retry.)
    if !matches!(vendor, Vendor::Guru | Vendor::Scim | Vendor::GuruScim) {
        assert_eq!(retries, failures, "every failure retried once: {ctx}");
    }
    if matches!(fault, Fault::RetryAfter429 | Fault::UserGuidingBlock) {
        // Every Retry-After is at least a second, and the whole client pauses for it.
        assert!(
            http["rate_limit_wait_seconds"].as_f64().unwrap() >= 1.0,
            "Retry-After was not honoured: {ctx}"
        );
    }
    if fault == Fault::Latency {
        assert_eq!(retries, 0, "{ctx}");
    }
    crate::crash::record_trial(&json!({"side": "target", "vendor": vendor.name(),
        "fault": format!("{fault:?}"), "records": total, "faults": failures,
        "retries": retries, "lost": 0, "duplicates": null, "exit": 0}));
}

const TARGET_MODEL: Model = Model {
    users: 24,
    groups: 4,
};

/// The target's matrix row for `vendor`, or, while the vendor has no writer in this build, the
/// check that the target refuses it plainly.
fn target_row(vendor: Vendor) {
    let spec = vendors::find(vendor.name()).unwrap();
    if spec.sink.is_none() {
        let sb = Sandbox::builder()
            .users(0)
            .groups(0)
            .start_background()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let run = run_target(
            &sb.config(vendor),
            &TARGET_MODEL.singer().0,
            dir.path(),
            true,
        );
        assert_eq!(run.code, Some(2), "{}", run.stderr);
        assert!(
            run.stderr.contains("cannot be written by this build"),
            "{}",
            run.stderr
        );
        return;
    }
    for fault in TARGET_FAULTS.into_iter().filter(|f| runs_here(vendor, *f)) {
        target_cell(vendor, fault, TARGET_MODEL);
    }
}

/// Whether a cell runs in this `cargo test`: every cell whose delays are zeroed, and for
/// Userflow every cell. The cells that must honour real delays (Retry-After, backoff after a
/// plain 429, latency, UserGuiding's block) take minutes over all vendors, so for the others
/// they run in `scripts/reliability.sh` (`ROSTER_FULL_MATRIX=1`).
fn runs_here(vendor: Vendor, fault: Fault) -> bool {
    fault.zero_delays(vendor)
        || vendor == Vendor::Userflow
        || std::env::var_os("ROSTER_FULL_MATRIX").is_some()
}

#[test]
fn target_userguiding_survives_every_fault() {
    target_row(Vendor::UserGuiding);
}

#[test]
fn target_userflow_survives_every_fault() {
    target_row(Vendor::Userflow);
}

#[test]
fn target_userpilot_survives_every_fault() {
    target_row(Vendor::Userpilot);
}

#[test]
fn target_appcues_survives_every_fault() {
    target_row(Vendor::Appcues);
}

#[test]
fn target_guru_survives_every_fault() {
    target_row(Vendor::Guru);
}

#[test]
fn target_guru_scim_survives_every_fault() {
    target_row(Vendor::GuruScim);
}

#[test]
fn target_scim_survives_every_fault() {
    target_row(Vendor::Scim);
}

/// UserGuiding's rule (50 requests per 10 s, then blocked): a client told to go at 50/s trips
/// the block, honours the `Retry-After` the sandbox announces for the shortened block, and
/// loses nothing.
#[test]
fn target_userguiding_rides_out_its_block() {
    target_cell(
        Vendor::UserGuiding,
        Fault::UserGuidingBlock,
        Model {
            users: 40,
            groups: 4,
        },
    );
}

/// With its default pace UserGuiding's writer never trips the block at all: 80 requests over
/// more than one 10-s window, not one 429 (a 429 here would cost a real user a minute).
#[test]
fn target_userguiding_default_pace_stays_under_the_block() {
    let model = Model {
        users: 40,
        groups: 4,
    };
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .userguiding_block(Some(UserGuidingBlock {
            block_secs: 2.0,
            ..UserGuidingBlock::default()
        }))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(Vendor::UserGuiding);
    config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
    let run = run_target(&config, &model.singer().0, dir.path(), false);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        answered(&sb, Vendor::UserGuiding, "429"),
        0,
        "the default pace tripped UserGuiding's block: {}",
        run.stderr
    );
    assert_eq!(
        actual(&sb, Vendor::UserGuiding),
        expected(Vendor::UserGuiding, &model)
    );
}

// ---------------------------------------------------------------------------------------------
// The tap side.

const TAP_FAULTS: [Fault; 8] = [
    Fault::RetryAfter429,
    Fault::Plain429,
    Fault::Burst500,
    Fault::Burst503,
    Fault::Mixed5xx,
    Fault::Latency,
    Fault::Drops,
    Fault::Down,
];

fn tap_cell(vendor: Vendor, fault: Fault) {
    let what = format!("tap {vendor} under {fault:?}");
    let base = Sandbox::builder()
        .users(300)
        .groups(6)
        .guru_page_size(25)
        .scim_page_cap(25);
    // A tap makes few requests (one per page), some of them far apart: a higher share of them
    // fails, the bucket is smaller, and the seed is one whose first draws include failures (the
    // draws go in request order, so the count of faults is the same run after run).
    let knobs = Knobs {
        seed: 12,
        mixed_rate: 0.4,
        bucket: "1/s,burst=1",
    };
    let sb = fault.sandbox(vendor, ("GET", read_path(vendor)), base, knobs);
    // The faults start with the sync: the seeded holdings are read before them.
    let held = tap_common::Holdings::of(&sb, vendor);
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(vendor);
    config["max_retries"] = json!(if fault == Fault::Down { 2 } else { BUDGET });
    config["requests_per_second"] = json!(50);
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let mut command = Command::new(TAP);
    command
        .arg("--config")
        .arg(&config_path)
        .env("ROSTER_LOG", "warn")
        .env_remove("ROSTER_ZERO_DELAYS");
    if fault.zero_delays(vendor) {
        command.env("ROSTER_ZERO_DELAYS", "1");
    }
    let out = support::run(&mut command, Duration::from_secs(600));
    let ctx = format!("{what}\n--- stderr\n{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{ctx}");
    let messages = support::singer_lines(&out.stdout);
    let log: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.vendor == Some(vendor))
        .collect();
    let failed = |status: u16| status == 0 || status == 429 || status >= 500;
    if fault == Fault::Down {
        assert_eq!(out.status.code(), Some(1), "{ctx}");
        assert!(
            messages.iter().all(|m| m["type"] == "SCHEMA"),
            "nothing read from a vendor that is down: {ctx}"
        );
        assert!(log.iter().all(|r| failed(r.status)), "{ctx}");
        assert!(
            out.stderr.contains(vendor.name()),
            "the vendor is named: {ctx}"
        );
        crate::crash::record_trial(&json!({"side": "tap", "vendor": vendor.name(),
            "fault": format!("{fault:?}"), "records": 0, "faults": log.len(), "lost": 0,
            "duplicates": 0, "exit": 1}));
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    tap_common::check_protocol(&messages);
    tap_common::check_no_duplicates(&messages);
    let got = tap_common::Holdings::from_messages(&messages);
    assert_eq!(got.sizes(), held.sizes(), "{ctx}");
    assert_eq!(got, held, "{ctx}");
    // Every failed request was asked again (same method, path and query) and got an answer
    // within the budget.
    let mut failures: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    for r in &log {
        let key = (
            r.method.clone(),
            r.path.clone(),
            r.query.clone().unwrap_or_default(),
        );
        if failed(r.status) {
            *failures.entry(key).or_default() += 1;
        } else if let Some(n) = failures.get(&key) {
            assert!(*n <= BUDGET, "{key:?} failed {n} times: {ctx}");
            failures.remove(&key);
        }
    }
    assert!(
        failures.is_empty(),
        "failed requests never asked again: {failures:?}: {ctx}"
    );
    let count = |status: u16| log.iter().filter(|r| r.status == status).count();
    match fault {
        Fault::RetryAfter429 | Fault::Plain429 => assert!(count(429) > 0, "no 429: {ctx}"),
        Fault::Burst500 => assert_eq!(count(500), 3, "{ctx}"),
        Fault::Burst503 => assert_eq!(count(503), 3, "{ctx}"),
        // Few pages: the seeded draws give some 5xx, not necessarily both kinds.
        Fault::Mixed5xx => assert!(count(500) + count(503) > 0, "{ctx}"),
        Fault::Drops => assert!(count(0) > 0, "{ctx}"),
        Fault::Latency => assert!(
            log.iter()
                .all(|r| r.fault.as_deref() == Some("latency 150ms")),
            "{ctx}"
        ),
        Fault::UserGuidingBlock | Fault::Down | Fault::LostAnswers => {}
    }
    let (u, g, m) = got.sizes();
    crate::crash::record_trial(&json!({"side": "tap", "vendor": vendor.name(),
        "fault": format!("{fault:?}"), "records": u + g + m,
        "faults": log.iter().filter(|r| failed(r.status)).count(), "lost": 0,
        "duplicates": 0, "exit": 0}));
}

fn tap_row(vendor: Vendor) {
    for fault in TAP_FAULTS.into_iter().filter(|f| runs_here(vendor, *f)) {
        tap_cell(vendor, fault);
    }
}

#[test]
fn tap_userflow_survives_every_fault() {
    tap_row(Vendor::Userflow);
}

#[test]
fn tap_guru_survives_every_fault() {
    tap_row(Vendor::Guru);
}

#[test]
fn tap_guru_scim_survives_every_fault() {
    tap_row(Vendor::GuruScim);
}

#[test]
fn tap_scim_survives_every_fault() {
    tap_row(Vendor::Scim);
}

// ---------------------------------------------------------------------------------------------
// Writes the vendor never applied (issue 12, item 4).

/// A listener on another origin that answers `200 {}` to anything and counts connections: a
/// write re-sent there after a 307 would be counted as sent, and its personal data leaked.
struct Elsewhere {
    port: u16,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Elsewhere {
    fn start() -> Elsewhere {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 65536];
                let _ = conn.read(&mut buf);
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\nconnection: close\r\n\r\n{\"success\":true}",
                );
            }
        });
        Elsewhere { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A write answered with a redirect, an HTML page or a body cut short is never counted as
/// sent: the record is rejected with a reason naming the Location or the shape, the vendor
/// holds nothing, a 302 is not followed as a GET, and a 307 to another origin re-sends nothing
/// there. Every answer repeats (`count` covers SCIM's look-up-and-resend of an unconfirmed
/// create), so the last word is the fault's. Fails on the old code, which followed redirects
/// and took any 2xx as applied.
#[test]
fn writes_answered_with_a_redirect_html_or_a_cut_body_are_not_counted_as_sent() {
    use roster_sandbox::FaultAnswer;
    let elsewhere = Elsewhere::start();
    let input = [
        json!({"type": "SCHEMA", "stream": "users", "schema": {"type": "object"}, "key_properties": ["id"]}),
        json!({"type": "RECORD", "stream": "users", "record": {"id": "u0001@example.com", "email": "u0001@example.com", "name": "User 1"}}),
        json!({"type": "STATE", "value": {"offset": 1}}),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect::<String>();
    for vendor in [
        Vendor::Userflow,
        Vendor::Scim,
        Vendor::UserGuiding,
        Vendor::Guru,
    ] {
        let (method, path) = write_path(vendor);
        let answers = [
            (
                FaultAnswer::Redirect {
                    status: 302,
                    location: path.to_string(),
                },
                "Location: ",
            ),
            (
                FaultAnswer::Redirect {
                    status: 307,
                    location: format!("http://127.0.0.1:{}{path}", elsewhere.port),
                },
                "Location: http://127.0.0.1:",
            ),
            (FaultAnswer::Html, "instead of JSON"),
            (FaultAnswer::Truncated, "cut short"),
        ];
        for (answer, says) in answers {
            let what = format!("{vendor} answered {answer:?}");
            let sb = Sandbox::builder()
                .users(0)
                .groups(0)
                .start_background()
                .unwrap();
            sb.faults().fail_next(
                FailRule::new(path, 50)
                    .method(method)
                    .answer(answer.clone()),
            );
            let dir = tempfile::tempdir().unwrap();
            let mut config = sb.config(vendor);
            config["reject_file"] = json!(dir.path().join("rejects.ndjson"));
            let run = run_target(&config, &input, dir.path(), true);
            let ctx = format!(
                "{what}\n--- stderr\n{}\n--- report\n{:#}\n--- requests\n{:#?}",
                run.stderr,
                run.report,
                sb.requests()
            );
            assert!(!run.stderr.contains("panicked"), "{ctx}");
            assert_eq!(run.code, Some(0), "{ctx}");
            assert_eq!(run.report["totals"]["sent"], 0, "{ctx}");
            assert_eq!(run.report["totals"]["rejected"], 1, "{ctx}");
            assert_eq!(run.rejects.len(), 1, "{ctx}");
            let reason = s(&run.rejects[0]["reject"]["reason"]);
            assert!(reason.contains(says), "{reason:?} lacks {says:?}: {ctx}");
            assert!(
                actual(&sb, vendor).users.is_empty(),
                "the vendor holds a user it never applied: {ctx}"
            );
            assert_eq!(elsewhere.hits(), 0, "a write went to another origin: {ctx}");
            if matches!(answer, FaultAnswer::Redirect { .. }) {
                let log = sb.requests();
                let redirected = log
                    .iter()
                    .find(|r| r.status / 100 == 3)
                    .map(|r| r.seq)
                    .unwrap_or_else(|| panic!("no redirect answered: {ctx}"));
                let followed: Vec<_> = log
                    .iter()
                    .filter(|r| r.seq > redirected && r.path == path && r.method != method)
                    .collect();
                assert!(followed.is_empty(), "the redirect was followed: {ctx}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Listings that change under the tap (issue 12, item 3).

/// The user ids a SCIM sandbox holds, in listing order.
fn scim_user_ids(sb: &Sandbox, vendor: Vendor) -> Vec<String> {
    sb.dump(vendor)["Users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| s(&u["id"]))
        .collect()
}

/// SCIM `startIndex` paging with users deleted while the tap reads: 7 of 50 from the first page
/// once it is served (pages of 10; the old code then asked for index 11, which now held the
/// 18th user, and never emitted the 11th to 17th, with exit 0), and 1 behind the index (bridged
/// by the overlap). Every user still held at the end is emitted, none twice.
#[test]
fn scim_tap_misses_no_live_user_when_users_are_deleted_mid_run() {
    for vendor in [Vendor::Scim, Vendor::GuruScim] {
        for (from, deleted) in [(0usize, 7usize), (5, 1)] {
            let sb = Sandbox::builder()
                .seed(5)
                .users(50)
                .groups(3)
                .scim_page_cap(10)
                .start_background()
                .unwrap();
            let ids = scim_user_ids(&sb, vendor);
            let doomed: Vec<&str> = ids[from..from + deleted]
                .iter()
                .map(String::as_str)
                .collect();
            sb.delete_after_pages(vendor, &format!("{}/Users", vendor.prefix()), 1, &doomed);
            let run = tap_common::sync(&sb.config(vendor), None, None);
            let what = format!("{vendor}, {deleted} deleted from position {from}");
            assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
            tap_common::check_protocol(&run.messages);
            tap_common::check_no_duplicates(&run.messages);
            let emitted = tap_common::Holdings::from_messages(&run.messages).users;
            let live = tap_common::Holdings::of(&sb, vendor).users;
            assert_eq!(
                live.len(),
                50 - deleted,
                "{what}: the deletes did not happen"
            );
            let missed: Vec<&String> = live.difference(&emitted).collect();
            assert!(
                missed.is_empty(),
                "{what}: live users never emitted: {missed:?}"
            );
            // They were read (on page 1) before they were deleted.
            assert!(doomed.iter().all(|d| emitted.contains(*d)), "{what}");
        }
    }
}

/// Userflow's cursor is the id of the last user of a page; Userflow answers 400 to a
/// `starting_after` id that no longer exists. Deleting that user once its page is served made
/// the old tap fail the run (exit 1) at the next page; deleting the whole page is worse. Now the
/// next page starts after the page's earlier ids, or again from the start, leaving out what was
/// read: every user still held is emitted, once.
#[test]
fn userflow_tap_reads_on_when_the_cursor_user_is_deleted_mid_run() {
    let sb = Sandbox::builder()
        .seed(9)
        .users(250)
        .groups(3)
        .start_background()
        .unwrap();
    let config = sb.config(Vendor::Userflow);
    let order: Vec<String> = tap_common::sync(&config, None, None)
        .ok()
        .records("users")
        .iter()
        .map(|u| s(&u["id"]))
        .collect();
    assert_eq!(order.len(), 250);
    for (what, doomed) in [
        ("the cursor's user", order[99..100].to_vec()),
        ("the cursor and the 4 before it", order[95..100].to_vec()),
        ("the whole first page", order[..100].to_vec()),
    ] {
        sb.reset();
        let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
        sb.delete_after_pages(Vendor::Userflow, "/userflow/users", 1, &doomed);
        let run = tap_common::sync(&config, None, None);
        assert_eq!(run.code, Some(0), "{what}: {}", run.stderr);
        tap_common::check_protocol(&run.messages);
        tap_common::check_no_duplicates(&run.messages);
        let emitted = tap_common::Holdings::from_messages(&run.messages).users;
        let live = tap_common::Holdings::of(&sb, Vendor::Userflow).users;
        assert_eq!(
            live.len(),
            250 - doomed.len(),
            "{what}: the deletes did not happen"
        );
        let missed: Vec<&String> = live.difference(&emitted).collect();
        assert!(
            missed.is_empty(),
            "{what}: live users never emitted: {missed:?}"
        );
    }
}

/// Guru REST pages with a `Link` token: 25 members removed from the team once the first page
/// of `/members` is served (pages of 10), and 25 removed once the first page of a group's
/// members is served. Every member still held is emitted (users and memberships), none twice.
/// Guru's tokens are opaque, so both token kinds are tried: "after this email" (keyset), and
/// "skip this many" (offset), where the removals shift unread members past the token: before
/// the tap checked its listings with a second pass, it missed 10 live members, with exit 0.
#[test]
fn guru_tap_misses_no_live_member_when_members_are_removed_mid_run() {
    for offset in [false, true] {
        guru_members_removed_mid_run(offset);
    }
}

/// A tap killed in the middle of `/members` (its last STATE holds a page token), then 25
/// members from the start of the listing are removed before the resume. With position-based
/// tokens the stored one now points 25 members further on, so the old tap resumed past 25 live
/// members it had never emitted (exit 0). Every live member is emitted by the first run before
/// that state or by the resumed run.
#[test]
fn guru_tap_misses_no_live_member_removed_between_a_kill_and_the_resume() {
    for offset in [false, true] {
        let sb = Sandbox::builder()
            .seed(5)
            .users(100)
            .groups(2)
            .guru_page_size(10)
            .guru_offset_tokens(offset)
            .start_background()
            .unwrap();
        let config = sb.config(Vendor::Guru);
        let full = tap_common::sync(&config, None, None).ok();
        let order: Vec<String> = full.records("users").iter().map(|u| s(&u["id"])).collect();
        assert!(order.len() >= 60, "{}", order.len());
        // The first STATE after the third page of members: the kill point.
        let at = full
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m["type"] == "STATE" && m["value"]["currently_syncing"] == "users")
            .map(|(i, _)| i)
            .nth(2)
            .expect("a mid-users state");
        let state = full.messages[at]["value"].clone();
        assert!(
            state["bookmarks"]["users"].to_string().contains("token="),
            "{state}"
        );
        let before: BTreeSet<String> = tap_common::records(&full.messages[..at], "users")
            .iter()
            .map(|u| s(&u["id"]))
            .collect();
        assert!(
            before.len() >= 20 && before.len() < order.len(),
            "{}",
            before.len()
        );
        for doomed in &order[..25] {
            assert!(sb.delete_user(Vendor::Guru, doomed), "{doomed}");
        }
        let run = tap_common::sync(&config, Some(&state), None);
        assert_eq!(run.code, Some(0), "offset {offset}: {}", run.stderr);
        tap_common::check_protocol(&run.messages);
        tap_common::check_no_duplicates(&run.messages);
        let mut emitted = tap_common::Holdings::from_messages(&run.messages).users;
        emitted.extend(before);
        let live = tap_common::Holdings::of(&sb, Vendor::Guru).users;
        assert_eq!(live.len(), order.len() - 25);
        let missed: Vec<&String> = live.difference(&emitted).collect();
        assert!(
            missed.is_empty(),
            "offset {offset}: live users never emitted: {missed:?}"
        );
    }
}

fn guru_members_removed_mid_run(offset: bool) {
    let sb = Sandbox::builder()
        .seed(4)
        .users(100)
        .groups(3)
        .guru_page_size(10)
        .guru_offset_tokens(offset)
        .start_background()
        .unwrap();
    let config = sb.config(Vendor::Guru);
    let first = tap_common::sync(&config, None, None).ok();
    let order: Vec<String> = first.records("users").iter().map(|u| s(&u["id"])).collect();
    let groups: Vec<String> = first
        .records("groups")
        .iter()
        .map(|g| s(&g["id"]))
        .collect();
    assert!(order.len() >= 60, "{}", order.len());
    let group_path = format!("/guru/api/v1/groups/{}/members", groups[0]);
    for (what, path, doomed) in [
        (
            "members, 25 from the start",
            "/guru/api/v1/members".to_string(),
            order[..25].to_vec(),
        ),
        (
            "members, 25 from the 6th",
            "/guru/api/v1/members".to_string(),
            order[5..30].to_vec(),
        ),
        ("a group's members", group_path, order[..25].to_vec()),
    ] {
        sb.reset();
        let doomed: Vec<&str> = doomed.iter().map(String::as_str).collect();
        sb.delete_after_pages(Vendor::Guru, &path, 1, &doomed);
        let run = tap_common::sync(&config, None, None);
        assert_eq!(
            run.code,
            Some(0),
            "{what} (offset {offset}): {}",
            run.stderr
        );
        tap_common::check_protocol(&run.messages);
        tap_common::check_no_duplicates(&run.messages);
        let emitted = tap_common::Holdings::from_messages(&run.messages);
        let live = tap_common::Holdings::of(&sb, Vendor::Guru);
        assert_eq!(
            live.users.len(),
            order.len() - doomed.len(),
            "{what} (offset {offset}): the deletes did not happen"
        );
        let missed: Vec<&String> = live.users.difference(&emitted.users).collect();
        assert!(
            missed.is_empty(),
            "{what} (offset {offset}): live users never emitted: {missed:?}"
        );
        let missed: Vec<&String> = live.memberships.difference(&emitted.memberships).collect();
        assert!(
            missed.is_empty(),
            "{what} (offset {offset}): live memberships never emitted: {missed:?}"
        );
        // Offset tokens did shift members past a token, and the second pass says so.
        assert_eq!(
            run.stderr.contains("were found by reading again"),
            offset,
            "{what} (offset {offset}): {}",
            run.stderr
        );
    }
}
