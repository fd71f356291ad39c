//! tap-roster next to Singer tools nobody here wrote, installed from PyPI by the tests.
//!
//! - `target-jsonl` 0.1.4 (its own virtualenv: it pins `jsonschema` 2.6.0) consumes tap-roster's
//!   output for every listable vendor of a seeded sandbox, in a real shell pipeline
//!   (`tap-roster | tee | target-jsonl`). The test reads the files it writes and checks them
//!   against the tap's records and against the sandbox's own dump: every user, group and
//!   membership, once, with the right email, and the final STATE handed back.
//! - `singer-check-tap` from `singer-tools` 0.4.1 installs and runs on Python 3.11, so it
//!   validates every RECORD against its stream's SCHEMA (JSON Schema draft 4 with format
//!   checks, as the tool does). Its `--tap` mode is racy upstream (it reads the summary before
//!   joining the thread that fills it, and dies with `AttributeError: 'NoneType' object has no
//!   attribute 'num_messages'`), so the test does what that mode means by hand: it checks a
//!   fresh run, then a run resumed from a mid-stream STATE of the first, both on stdin. A
//!   corrupted record must make the tool fail, so the check cannot pass vacuously.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, bin};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

/// Pinned so a new upstream release cannot change what passes here.
const TARGET_JSONL: &[&str] = &["target-jsonl==0.1.4"];
const SINGER_TOOLS: &[&str] = &["singer-tools==0.4.1"];

/// Generous: a debug build and a cold Python on a loaded 2-core machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Enough people for several pages everywhere (Userflow 100, Guru 50, SCIM 100 per page).
const USERS: usize = 250;
const GROUPS: usize = 12;

fn sandbox() -> Sandbox {
    Sandbox::builder()
        .seed(7)
        .users(USERS)
        .groups(GROUPS)
        .start_background()
        .unwrap()
}

/// What the sandbox holds for a listable vendor, in the record model's keys.
#[derive(Debug, Default)]
struct Expected {
    /// user key → email
    users: BTreeMap<String, String>,
    groups: BTreeSet<String>,
    /// (group key, user key)
    memberships: BTreeSet<(String, String)>,
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn expected(sb: &Sandbox, vendor: Vendor) -> Expected {
    let dump = sb.dump(vendor);
    let mut e = Expected::default();
    match vendor {
        Vendor::Userflow => {
            for u in dump["users"].as_array().unwrap() {
                e.users.insert(s(&u["id"]), s(&u["attributes"]["email"]));
                for m in u["memberships"].as_array().unwrap() {
                    e.memberships.insert((s(&m["group_id"]), s(&u["id"])));
                }
            }
            for g in dump["groups"].as_array().unwrap() {
                e.groups.insert(s(&g["id"]));
            }
        }
        Vendor::Guru => {
            for m in dump["members"].as_array().unwrap() {
                e.users.insert(s(&m["id"]), s(&m["user"]["email"]));
            }
            for g in dump["groups"].as_array().unwrap() {
                e.groups.insert(s(&g["id"]));
                for email in g["members"].as_array().unwrap() {
                    e.memberships.insert((s(&g["id"]), s(email)));
                }
            }
        }
        Vendor::GuruScim | Vendor::Scim => {
            for u in dump["Users"].as_array().unwrap() {
                let primary = u["emails"]
                    .as_array()
                    .and_then(|emails| {
                        emails
                            .iter()
                            .find(|m| m["primary"] == json!(true))
                            .or(emails.first())
                    })
                    .map(|m| s(&m["value"]))
                    .unwrap_or_else(|| s(&u["userName"]));
                e.users.insert(s(&u["id"]), primary);
            }
            for g in dump["Groups"].as_array().unwrap() {
                e.groups.insert(s(&g["id"]));
                for m in g["members"].as_array().into_iter().flatten() {
                    e.memberships.insert((s(&g["id"]), s(&m["value"])));
                }
            }
        }
        other => panic!("{other} has no list API"),
    }
    assert!(
        !e.users.is_empty() && !e.groups.is_empty() && !e.memberships.is_empty(),
        "the seeded {vendor} sandbox is empty: {e:?}"
    );
    e
}

/// The `record`s of every RECORD message, by stream, in order.
fn records_by_stream(messages: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut by_stream: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for m in messages.iter().filter(|m| m["type"] == "RECORD") {
        by_stream
            .entry(s(&m["stream"]))
            .or_default()
            .push(m["record"].clone());
    }
    by_stream
}

/// Checks that `records` (by stream) are exactly what the sandbox holds, each once.
fn assert_matches_sandbox(vendor: Vendor, by_stream: &BTreeMap<String, Vec<Value>>, e: &Expected) {
    let users = &by_stream["users"];
    let got_users: BTreeMap<String, String> = users
        .iter()
        .map(|u| (s(&u["id"]), s(&u["email"])))
        .collect();
    assert_eq!(got_users.len(), users.len(), "{vendor}: a user came twice");
    assert_eq!(got_users, e.users, "{vendor}: users (key → email)");

    let groups = &by_stream["groups"];
    let got_groups: BTreeSet<String> = groups.iter().map(|g| s(&g["id"])).collect();
    assert_eq!(
        got_groups.len(),
        groups.len(),
        "{vendor}: a group came twice"
    );
    assert_eq!(got_groups, e.groups, "{vendor}: groups");

    let memberships = &by_stream["memberships"];
    let got_memberships: BTreeSet<(String, String)> = memberships
        .iter()
        .map(|m| (s(&m["group_id"]), s(&m["user_id"])))
        .collect();
    assert_eq!(
        got_memberships.len(),
        memberships.len(),
        "{vendor}: a membership came twice"
    );
    assert_eq!(got_memberships, e.memberships, "{vendor}: memberships");
}

/// `tap-roster | tee tap.out | target-jsonl` in bash with pipefail, as a user would type it.
fn target_jsonl_pipeline(vendor: Vendor) {
    let Some(venv) = support::venv("target-jsonl", TARGET_JSONL) else {
        return support::skip_or_fail("python3 with venv is needed for target-jsonl");
    };
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let tap_config = support::write_json(&dir.path().join("tap.json"), &sb.config(vendor));
    let out_dir = dir.path().join("jsonl");
    let jsonl_config = support::write_json(
        &dir.path().join("target-jsonl.json"),
        &json!({"destination_path": out_dir, "do_timestamp_file": false}),
    );
    let tap_out = dir.path().join("tap.out");
    let state_out = dir.path().join("state.out");
    let finished = support::pipeline(
        r#"tap-roster --config "$TAP_CONFIG" | tee "$TAP_OUT" | target-jsonl --config "$JSONL_CONFIG" > "$STATE_OUT""#,
        &[&venv.join("bin")],
        &[
            ("TAP_CONFIG", &tap_config),
            ("JSONL_CONFIG", &jsonl_config),
            ("TAP_OUT", &tap_out),
            ("STATE_OUT", &state_out),
        ],
        STEP_TIMEOUT,
    );
    finished.assert_success(&format!("tap-roster ({vendor}) | target-jsonl"));

    let messages = support::singer_lines(&std::fs::read_to_string(&tap_out).unwrap());
    let from_tap = records_by_stream(&messages);
    assert_eq!(
        from_tap.keys().collect::<Vec<_>>(),
        ["groups", "memberships", "users"],
        "{vendor}: streams the tap wrote"
    );
    assert_matches_sandbox(vendor, &from_tap, &expected(&sb, vendor));

    // target-jsonl writes <stream>.jsonl per stream: exactly the tap's records, in order.
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["groups.jsonl", "memberships.jsonl", "users.jsonl"],
        "{vendor}"
    );
    for (stream, records) in &from_tap {
        let written = support::singer_lines(
            &std::fs::read_to_string(out_dir.join(format!("{stream}.jsonl"))).unwrap(),
        );
        assert_eq!(
            written.len(),
            records.len(),
            "{vendor}: {stream}.jsonl line count"
        );
        for (i, (w, r)) in written.iter().zip(records).enumerate() {
            assert_eq!(w, r, "{vendor}: {stream}.jsonl line {}", i + 1);
        }
    }

    // target-jsonl hands back the last STATE when nothing followed it: the tap's final state.
    let last_state = messages
        .iter()
        .rev()
        .find(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone())
        .expect("the tap wrote a STATE");
    assert_eq!(
        messages.last().unwrap()["type"],
        "STATE",
        "{vendor}: the tap ends with a STATE"
    );
    let states = support::singer_lines(&std::fs::read_to_string(&state_out).unwrap());
    assert_eq!(
        states,
        std::slice::from_ref(&last_state),
        "{vendor}: target-jsonl's state"
    );
    for stream in ["users", "groups", "memberships"] {
        let bookmark = &last_state["bookmarks"][stream];
        assert!(
            bookmark["completed_at"].is_string() && bookmark.get("next_page").is_none(),
            "{vendor}: {stream} finished: {last_state}"
        );
    }
}

#[test]
fn target_jsonl_writes_every_userflow_record() {
    target_jsonl_pipeline(Vendor::Userflow);
}

#[test]
fn target_jsonl_writes_every_guru_record() {
    target_jsonl_pipeline(Vendor::Guru);
}

#[test]
fn target_jsonl_writes_every_guru_scim_record() {
    target_jsonl_pipeline(Vendor::GuruScim);
}

#[test]
fn target_jsonl_writes_every_scim_record() {
    target_jsonl_pipeline(Vendor::Scim);
}

/// Runs tap-roster once, optionally from `state`, and returns its stdout.
fn tap_run(dir: &Path, config: &Path, state: Option<&Value>) -> String {
    let mut tap = bin::tap().config(config);
    if let Some(state) = state {
        tap = tap
            .arg("--state")
            .arg(support::write_json(&dir.join("state.json"), state));
    }
    let finished = tap.run(STEP_TIMEOUT);
    finished.assert_success("tap-roster");
    finished.stdout
}

/// `singer-check-tap` reading `stdout` on stdin.
fn check_tap(venv: &Path, dir: &Path, stdout: &str) -> support::Finished {
    let input = dir.join("check-input.jsonl");
    std::fs::write(&input, stdout).unwrap();
    support::run_with_input(
        Command::new(venv.join("bin/singer-check-tap")).current_dir(dir),
        std::fs::File::open(&input).unwrap(),
        STEP_TIMEOUT,
    )
}

#[test]
fn singer_check_tap_accepts_fresh_and_resumed_output_of_every_listable_vendor() {
    let Some(venv) = support::venv("singer-tools", SINGER_TOOLS) else {
        return support::skip_or_fail("python3 with venv is needed for singer-tools");
    };
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    for vendor in [
        Vendor::Userflow,
        Vendor::Guru,
        Vendor::GuruScim,
        Vendor::Scim,
    ] {
        let config = support::write_json(
            &dir.path().join(format!("{vendor}.json")),
            &sb.config(vendor),
        );
        let fresh = tap_run(dir.path(), &config, None);
        let messages = support::singer_lines(&fresh);
        let checked = check_tap(&venv, dir.path(), &fresh);
        checked.assert_success(&format!("singer-check-tap on {vendor}"));
        let records = messages.iter().filter(|m| m["type"] == "RECORD").count();
        assert!(
            checked.stdout.contains("The output is valid.")
                && checked
                    .stdout
                    .contains(&format!("{records} record messages")),
            "{vendor}: {}",
            checked.both()
        );

        // Resume from the first STATE that is mid-way through the users, as `--tap` mode would
        // rerun with state: the output must be valid too, and together with what came before
        // that STATE it must hold every user.
        let (cut, state) = messages
            .iter()
            .enumerate()
            .find(|(_, m)| {
                m["type"] == "STATE" && m["value"]["bookmarks"]["users"].get("next_page").is_some()
            })
            .map(|(i, m)| (i, m["value"].clone()))
            .unwrap_or_else(|| panic!("{vendor}: no mid-stream STATE with {USERS} users"));
        let resumed = tap_run(dir.path(), &config, Some(&state));
        let checked = check_tap(&venv, dir.path(), &resumed);
        checked.assert_success(&format!("singer-check-tap on resumed {vendor}"));
        let before: BTreeSet<String> = records_by_stream(&messages[..cut])
            .get("users")
            .into_iter()
            .flatten()
            .map(|u| s(&u["id"]))
            .collect();
        let after: BTreeSet<String> = records_by_stream(&support::singer_lines(&resumed))["users"]
            .iter()
            .map(|u| s(&u["id"]))
            .collect();
        let all: BTreeSet<String> = expected(&sb, vendor).users.into_keys().collect();
        // A resumed Guru listing is read once more from its first page, since Guru's opaque
        // page tokens may count positions that removals shift (docs/tap.md): it emits every
        // user again. The others resume where the state points.
        if vendor != Vendor::Guru {
            assert!(
                after.len() < all.len(),
                "{vendor}: the resumed run started over ({} users)",
                after.len()
            );
        }
        assert_eq!(
            before.union(&after).cloned().collect::<BTreeSet<_>>(),
            all,
            "{vendor}: fresh-until-the-state plus resumed holds every user"
        );

        // The check is live: a record that breaks its schema makes the tool fail.
        if vendor == Vendor::Userflow {
            let corrupted = fresh.replacen(
                r#""record":{"id":"user_"#,
                r#""record":{"id":5,"x":"user_"#,
                1,
            );
            assert_ne!(corrupted, fresh);
            let checked = check_tap(&venv, dir.path(), &corrupted);
            assert!(
                !checked.success(),
                "singer-check-tap accepted a user whose id is a number:\n{}",
                checked.both()
            );
        }
    }
}
