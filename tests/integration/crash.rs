//! kill -9 at seeded random points, then a rerun from the last STATE that was printed.
//!
//! - **Target**: target-roster writes users to the sandbox's Userflow (one upsert per record)
//!   under a seeded 5% rate of 500/503 answers, and is killed with SIGKILL once the sandbox has
//!   counted a seeded random number of requests, wherever the target is then (mid-request,
//!   between a request and its STATE, mid-retry). The pipeline is then rerun from the last
//!   STATE the target printed, as a tap resuming from that bookmark would. Every user must end
//!   up in the sandbox with its final attributes (the input updates every fifth user later on,
//!   so an older write replayed after a newer one would show); the writes the sandbox accepted
//!   beyond one per record are the records sent twice.
//! - **Tap**: tap-roster syncs users, groups and memberships from each listable vendor under the
//!   same fault rate, is killed after a seeded random number of requests, and resumes from the
//!   last STATE it printed. The two runs together must cover everything the sandbox holds (no
//!   page skipped); the records both runs emitted are the duplicates.
//!
//! Sizes: the defaults keep `cargo test` (debug builds) to about a minute; `scripts/reliability.sh`
//! runs 10,000 users with release binaries through the same code (`ROSTER_CRASH_USERS`,
//! `ROSTER_CRASH_TRIALS`, `ROSTER_CRASH_SEED`) and tabulates the JSON line each trial appends to
//! `ROSTER_RELIABILITY_OUT` in RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::holdings::{Holdings, record_key};
use crate::support::tap::check_protocol;
use crate::support::{self, bin};

/// The share of requests the sandbox answers 500 or 503 (issue 7: "a 5% fault rate").
const FAULT_RATE: f64 = 0.05;

/// A STATE after this many records.
const STATE_EVERY: usize = 20;

/// Retries per request: at 5% faults, eleven failures in a row (p = 5e-15) never happen.
const RETRIES: u64 = 10;

/// How long one run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a seeded, dependency-free source of kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `1..bound` (bound > 1).
    fn kill_point(&mut self, bound: u64) -> u64 {
        1 + self.next() % (bound - 1)
    }
}

/// Appends one trial's figures to `ROSTER_RELIABILITY_OUT`, when set.
pub(crate) fn record_trial(line: &Value) {
    if let Ok(path) = std::env::var("ROSTER_RELIABILITY_OUT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(file, "{line}").unwrap();
    }
}

fn faults_injected(sb: &Sandbox, vendor: Vendor) -> u64 {
    sb.stats()
        .vendors
        .get(vendor.name())
        .map_or(0, |v| v.faults)
}

/// Runs `command` with its stdout read line by line, and kills it with SIGKILL as soon as the
/// sandbox has counted `at` requests in all. Returns the stdout lines (whole lines only, as a
/// pipe reader would have them) and whether the kill happened before the process ended.
fn run_killed_at(mut command: Command, sb: &Sandbox, at: u64, dir: &Path) -> (Vec<Value>, bool) {
    let stderr = std::fs::File::create(dir.join("killed.stderr")).unwrap();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        // A line cut short by the kill has no newline: a pipe reader never sees it as a line.
        let mut reader = BufReader::new(stdout);
        let mut lines = Vec::new();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if line.ends_with(b"\n") {
                lines.push(serde_json::from_slice::<Value>(&line).unwrap());
            }
            line.clear();
        }
        lines
    });
    let started = Instant::now();
    let killed = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if sb.stats().total >= at {
            child.kill().unwrap();
            break true;
        }
        assert!(
            started.elapsed() < RUN_TIMEOUT,
            "the run never got to {at} requests"
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    child.wait().unwrap();
    (reader.join().unwrap(), killed)
}

fn last_state(lines: &[Value]) -> Option<Value> {
    lines
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone())
}

// ---------------------------------------------------------------------------------------------
// The target.

/// Every writable vendor and mode the target trials cover.
const TARGET_VENDORS: [(Vendor, &str); 9] = [
    (Vendor::UserGuiding, "realtime"),
    (Vendor::Userflow, "realtime"),
    (Vendor::Userpilot, "realtime"),
    (Vendor::Userpilot, "bulk"),
    (Vendor::Appcues, "realtime"),
    (Vendor::Appcues, "bulk"),
    (Vendor::Guru, "realtime"),
    (Vendor::GuruScim, "realtime"),
    (Vendor::Scim, "realtime"),
];

/// The records a source holds: every user once (name "… rev 1"), then every fifth user again
/// with its final name ("… rev 2").
fn target_records(users: usize) -> Vec<Value> {
    let user = |i: usize, rev: u64| {
        json!({"type": "RECORD", "stream": "users", "record": {
            "id": format!("u{i:05}"), "email": format!("u{i:05}@example.com"),
            "name": format!("User {i} rev {rev}")}})
    };
    let mut records: Vec<Value> = (0..users).map(|i| user(i, 1)).collect();
    records.extend((0..users).step_by(5).map(|i| user(i, 2)));
    records
}

/// How `vendor` keys a user (Guru: by email) and what it keeps of the name (Guru: nothing).
fn held_key(vendor: Vendor, record: &Value) -> String {
    let r = &record["record"];
    let field = if vendor == Vendor::Guru {
        "email"
    } else {
        "id"
    };
    r[field].as_str().unwrap().to_string()
}

fn held_name(vendor: Vendor, user: &Value) -> Option<String> {
    match vendor {
        Vendor::Guru => None,
        Vendor::Scim | Vendor::GuruScim => user["displayName"].as_str().map(str::to_owned),
        _ => user["name"].as_str().map(str::to_owned),
    }
}

/// What the source sends when resumed from `offset`: the SCHEMA, then the records from there
/// on, with a STATE `{"offset": n}` after every [`STATE_EVERY`] records and at the end.
fn target_input(records: &[Value], offset: usize) -> String {
    let schema = json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
        "schema": {"type": "object"}});
    let mut out = format!("{schema}\n");
    for (n, record) in records.iter().enumerate().skip(offset) {
        out.push_str(&format!("{record}\n"));
        if (n + 1) % STATE_EVERY == 0 || n + 1 == records.len() {
            out.push_str(&format!(
                "{}\n",
                json!({"type": "STATE", "value": {"offset": n + 1}})
            ));
        }
    }
    out
}

fn target_command(dir: &Path, config: &Value, input: &str, name: &str) -> Command {
    let input_path = support::files::write_text(&dir.join(format!("{name}.singer")), input);
    bin::target()
        .config_json(dir, config)
        .input(&input_path)
        .log("warn")
        .current_dir(dir)
        .command()
}

fn target_sandbox(vendor: Vendor, seed: u64) -> Sandbox {
    Sandbox::builder()
        .seed(seed)
        .users(0)
        .groups(0)
        .error_rate(Some(vendor), FAULT_RATE)
        .start_background()
        .unwrap()
}

fn target_config(sb: &Sandbox, vendor: Vendor, mode: &str, dir: &Path) -> Value {
    let mut config = sb.config(vendor);
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    config["max_retries"] = json!(RETRIES);
    // The sandbox is the only limit here; pacing would only make the trial slower.
    config["requests_per_second"] = json!(0);
    if mode == "bulk" {
        config["mode"] = json!("bulk");
    }
    config
}

fn no_rejects(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("rejects.ndjson")).map_or(true, |t| t.trim().is_empty())
}

/// The requests a whole run makes for `vendor` (an unkilled run, not counted as a trial), so
/// that kill points land inside the run whatever the vendor's batching.
fn target_requests_per_run(vendor: Vendor, mode: &str, seed: u64, records: &[Value]) -> u64 {
    let sb = target_sandbox(vendor, seed);
    let dir = tempfile::tempdir().unwrap();
    let config = target_config(&sb, vendor, mode, dir.path());
    let out = support::run(
        &mut target_command(dir.path(), &config, &target_input(records, 0), "whole"),
        RUN_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{vendor} {mode}: {}",
        out.stderr
    );
    let n = sb.stats().total;
    sb.shutdown();
    n
}

/// One target trial: kill at a seeded request, rerun from the last STATE, check the vendor.
fn target_trial(
    trial: u64,
    (vendor, mode): (Vendor, &str),
    seed: u64,
    records: &[Value],
    per_run: u64,
    rng: &mut Rng,
) -> Value {
    // Somewhere in the first nine tenths of a run. Fault draws, and for batching vendors (Guru's
    // invites, bulk jobs) the load on the machine, make runs differ: a run that ends before its
    // kill point is run again, killed within the requests it made.
    let mut bound = (per_run * 9 / 10).max(2);
    let mut attempt = 0;
    let (sb, dir, config, at, printed) = loop {
        let sb = target_sandbox(vendor, seed + trial);
        let dir = tempfile::tempdir().unwrap();
        let config = target_config(&sb, vendor, mode, dir.path());
        let at = rng.kill_point(bound);
        let (printed, killed) = run_killed_at(
            target_command(dir.path(), &config, &target_input(records, 0), "first"),
            &sb,
            at,
            dir.path(),
        );
        if killed {
            break (sb, dir, config, at, printed);
        }
        attempt += 1;
        assert!(
            attempt < 3,
            "trial {trial} {vendor} {mode}: the target ended before request {at} three times"
        );
        bound = (sb.stats().total * 9 / 10).max(2);
        sb.shutdown();
    };
    // A target prints each state's value alone on a line (what Meltano stores).
    let offset = printed
        .last()
        .map_or(0, |v| v["offset"].as_u64().unwrap() as usize);
    // What the vendor holds before the rerun: the records the rerun sends again although the
    // vendor already has them are the duplicates a resume costs.
    let before = crate::support::holdings::actual(&sb, vendor).users;
    let duplicates = records[offset..]
        .iter()
        .filter(|r| {
            let key = held_key(vendor, r);
            let name = r["record"]["name"].as_str().unwrap();
            match before.get(&key) {
                None => false,
                Some(_) if name.ends_with("rev 1") => true,
                Some(held) => held_name(vendor, held).is_none_or(|n| n == name),
            }
        })
        .count();

    let rerun = support::run(
        &mut target_command(dir.path(), &config, &target_input(records, offset), "rerun"),
        RUN_TIMEOUT,
    );
    assert_eq!(
        rerun.status.code(),
        Some(0),
        "trial {trial} {vendor} {mode}: rerun from offset {offset}: {}",
        rerun.stderr
    );
    assert_eq!(
        support::singer_lines(&rerun.stdout).last(),
        Some(&json!({"offset": records.len()})),
        "trial {trial} {vendor} {mode}: the rerun's last STATE: {}",
        rerun.both()
    );
    assert!(
        no_rejects(dir.path()),
        "trial {trial} {vendor} {mode}: rejects"
    );

    // Every user, once, with its final name (what the vendor keeps of it).
    let mut expected = BTreeMap::new();
    for r in records {
        expected.insert(held_key(vendor, r), r["record"]["name"].clone());
    }
    let held = crate::support::holdings::actual(&sb, vendor).users;
    let lost = expected.keys().filter(|k| !held.contains_key(*k)).count();
    assert_eq!(lost, 0, "trial {trial} {vendor} {mode}: users lost");
    assert_eq!(
        held.len(),
        expected.len(),
        "trial {trial} {vendor} {mode}: users held more than once or unasked for"
    );
    for (key, name) in &expected {
        if let Some(got) = held_name(vendor, &held[key]) {
            assert_eq!(
                json!(got),
                *name,
                "trial {trial} {vendor} {mode}: {key}'s final name"
            );
        }
    }
    let name = if mode == "bulk" {
        format!("{}_bulk", vendor.name())
    } else {
        vendor.name().to_string()
    };
    let line = json!({"side": "target", "vendor": name, "trial": trial,
        "records": records.len(), "kill_at_request": at, "resumed_from": offset,
        "faults": faults_injected(&sb, vendor), "lost": lost, "duplicates": duplicates});
    record_trial(&line);
    sb.shutdown();
    line
}

/// `ROSTER_CRASH_TRIALS` trials (default: 20 for Userflow, 3 for the others in `cargo test`;
/// `scripts/reliability.sh` runs 20 of each) of one vendor and mode.
fn target_trials(which: (Vendor, &str)) {
    let users = env_num("ROSTER_CRASH_USERS", 300) as usize;
    let default_trials = if which.0 == Vendor::Userflow { 20 } else { 3 };
    let trials = env_num("ROSTER_CRASH_TRIALS", default_trials);
    let seed = env_num("ROSTER_CRASH_SEED", 7);
    let records = target_records(users);
    let per_run = target_requests_per_run(which.0, which.1, seed, &records);
    // Each vendor and mode draws its own kill points from the seed.
    let index = TARGET_VENDORS.iter().position(|v| *v == which).unwrap() as u64;
    let mut rng = Rng(seed.wrapping_add(index.wrapping_mul(0x1000)));
    let mut faults = 0;
    for trial in 0..trials {
        let line = target_trial(trial, which, seed, &records, per_run, &mut rng);
        faults += line["faults"].as_u64().unwrap();
    }
    assert!(faults > 0, "the sandbox injected no faults");
}

#[test]
fn target_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Userflow, "realtime"));
}

#[test]
fn target_userguiding_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::UserGuiding, "realtime"));
}

#[test]
fn target_userpilot_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Userpilot, "realtime"));
}

#[test]
fn target_userpilot_bulk_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Userpilot, "bulk"));
}

#[test]
fn target_appcues_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Appcues, "realtime"));
}

#[test]
fn target_appcues_bulk_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Appcues, "bulk"));
}

#[test]
fn target_guru_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Guru, "realtime"));
}

#[test]
fn target_guru_scim_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::GuruScim, "realtime"));
}

#[test]
fn target_scim_killed_at_random_points_loses_nothing_on_rerun() {
    target_trials((Vendor::Scim, "realtime"));
}

// ---------------------------------------------------------------------------------------------
// The tap.

/// The listable vendors, in turn.
const TAP_VENDORS: [Vendor; 4] = [
    Vendor::Userflow,
    Vendor::Guru,
    Vendor::GuruScim,
    Vendor::Scim,
];

fn tap_command(dir: &Path, config: &Value, state: Option<&Value>) -> Command {
    let mut tap = bin::tap().config_json(dir, config).log("warn");
    if let Some(state) = state {
        tap = tap
            .arg("--state")
            .arg(support::write_json(&dir.join("state.json"), state));
    }
    tap.command()
}

fn tap_trial(trial: u64, vendor: Vendor, seed: u64, users: usize, rng: &mut Rng) -> Value {
    let sb = Sandbox::builder()
        .seed(seed + trial)
        .users(users)
        .groups((users / 20).max(3))
        .guru_page_size(25)
        .scim_page_cap(25)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = sb.config(vendor);
    config["max_retries"] = json!(RETRIES);
    config["requests_per_second"] = json!(0);
    // A clean run first: what a sync takes, so the kill lands inside the faulty one.
    let clean = support::run(&mut tap_command(dir.path(), &config, None), RUN_TIMEOUT);
    assert_eq!(clean.status.code(), Some(0), "{vendor}: {}", clean.stderr);
    let requests = sb.stats().total;
    sb.faults().error_rate(Some(vendor), FAULT_RATE).unwrap();

    let at = sb.stats().total + rng.kill_point(requests);
    let (first, killed) =
        run_killed_at(tap_command(dir.path(), &config, None), &sb, at, dir.path());
    assert!(
        killed,
        "trial {trial}: the {vendor} tap ended before request {at}"
    );
    let state = last_state(&first);
    let second = support::run(
        &mut tap_command(dir.path(), &config, state.as_ref()),
        RUN_TIMEOUT,
    );
    assert_eq!(
        second.status.code(),
        Some(0),
        "trial {trial} ({vendor}) resumed from {state:?}: {}",
        second.stderr
    );
    let second = support::singer_lines(&second.stdout);
    check_protocol(&second);

    let mut both = first.clone();
    both.extend(second.iter().cloned());
    let held = Holdings::of(&sb, vendor);
    let got = Holdings::from_messages(&both);
    let missing = held.users.difference(&got.users).count()
        + held.groups.difference(&got.groups).count()
        + held.memberships.difference(&got.memberships).count();
    assert_eq!(missing, 0, "trial {trial} ({vendor}): records lost");
    assert_eq!(
        got, held,
        "trial {trial} ({vendor}): tap output vs the vendor"
    );

    // Records both runs emitted: the price of resuming from the last bookmark.
    let mut seen = BTreeSet::new();
    let mut emitted = 0;
    for m in both.iter().filter(|m| m["type"] == "RECORD") {
        emitted += 1;
        seen.insert(record_key(m["stream"].as_str().unwrap(), &m["record"]));
    }
    let (u, g, ms) = held.sizes();
    let line = json!({"side": "tap", "vendor": vendor.name(), "trial": trial,
        "records": u + g + ms, "kill_at_request": at, "resumed": state.is_some(),
        "faults": faults_injected(&sb, vendor), "lost": missing,
        "duplicates": emitted - seen.len()});
    record_trial(&line);
    sb.shutdown();
    line
}

#[test]
fn tap_killed_at_random_points_resumes_without_a_gap() {
    let users = env_num("ROSTER_CRASH_USERS", 300) as usize;
    let trials = env_num("ROSTER_CRASH_TRIALS", 20);
    let seed = env_num("ROSTER_CRASH_SEED", 7);
    let mut rng = Rng(seed ^ 0x7A9);
    let mut faults = 0;
    for trial in 0..trials {
        let vendor = TAP_VENDORS[trial as usize % TAP_VENDORS.len()];
        let line = tap_trial(trial, vendor, seed, users, &mut rng);
        faults += line["faults"].as_u64().unwrap();
    }
    assert!(faults > 0, "the sandbox injected no faults");
}

/// SCIM: the tap is killed after its first page's STATE, users it already read are deleted,
/// and it resumes from that STATE. Deleting them shifts every later user to a lower index, so
/// the old bare `startIndex` bookmark skipped as many live users as were deleted (exit 0). Now
/// the bookmark carries the page's last ids: 1 deleted is bridged by the overlap, 7 (more than
/// the overlap of a 25-user page) send the resumed run through a fill pass from the start.
/// Both runs together emit every user still held.
#[test]
fn scim_tap_resumed_after_deletions_behind_its_bookmark_misses_no_live_user() {
    for deleted in [1usize, 7] {
        let sb = Sandbox::builder()
            .seed(3)
            .users(120)
            .groups(4)
            .scim_page_cap(25)
            .start_background()
            .unwrap();
        let config = sb.config(Vendor::Scim);
        // Two states: the groups listing (they come first), then the first page of users.
        let (lines, running) = crate::support::tap::sync_killed_after(&config, None, 2);
        assert!(running, "the tap finished before it could be killed");
        let first = Holdings::from_messages(&lines);
        let state = lines
            .iter()
            .rev()
            .find(|m| m["type"] == "STATE")
            .map(|m| m["value"].clone())
            .unwrap();
        let read: Vec<String> = lines
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == "users")
            .map(|m| m["record"]["id"].as_str().unwrap().to_string())
            .collect();
        assert!(read.len() >= 10, "{read:?}");
        for id in &read[2..2 + deleted] {
            assert!(sb.delete_user(Vendor::Scim, id));
        }
        let run = crate::support::tap::sync(&config, Some(&state), None);
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        check_protocol(&run.messages);
        let second = Holdings::from_messages(&run.messages);
        let live = Holdings::of(&sb, Vendor::Scim).users;
        let missed: Vec<&String> = live
            .iter()
            .filter(|u| !first.users.contains(*u) && !second.users.contains(*u))
            .collect();
        assert!(
            missed.is_empty(),
            "{deleted} deleted: live users never emitted: {missed:?}\n{}",
            run.stderr
        );
    }
}
