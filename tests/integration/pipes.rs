//! `tap-roster | target-roster` from every listable vendor to every writable one (docs/tap.md's
//! promise), against one in-process sandbox: each source is read once, and its output goes into
//! one target run per destination, which starts empty. Every run exits 0 with nothing rejected,
//! and the sandbox then holds the source's memberships at the destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use roster_sandbox::{Sandbox, SeedSpec, Vendor};
use serde_json::{Value, json};

use crate::support::{self, tap, target};

/// The listable vendors.
const SOURCES: [Vendor; 4] = [
    Vendor::Userflow,
    Vendor::Guru,
    Vendor::GuruScim,
    Vendor::Scim,
];

/// Small, so 4 × 9 runs stay fast.
const SEED: SeedSpec = SeedSpec {
    seed: 11,
    users: 12,
    groups: 3,
};

/// What a destination holds of memberships: (group, user) pairs for the vendors that keep
/// several groups per user, or the users that have a company for the ones that keep one.
fn held(sb: &Sandbox, vendor: Vendor) -> BTreeSet<String> {
    let dump = sb.dump(vendor);
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let mut out = BTreeSet::new();
    match vendor {
        Vendor::Userflow => {
            for user in list(&dump["users"]) {
                for m in list(&user["memberships"]) {
                    out.insert(format!("{}:{}", m["group_id"], user["id"]));
                }
            }
        }
        Vendor::Guru => {
            // Not "All Members", which lists everyone on the team whatever was sent.
            for group in list(&dump["groups"]) {
                if group["modifiable"] == json!(true) {
                    for email in list(&group["members"]) {
                        out.insert(format!("{}:{email}", group["name"]));
                    }
                }
            }
        }
        Vendor::GuruScim | Vendor::Scim => {
            for group in list(&dump["Groups"]) {
                for m in list(&group["members"]) {
                    out.insert(format!("{}:{}", group["externalId"], m["value"]));
                }
            }
        }
        Vendor::Appcues => {
            for group in list(&dump["groups"]) {
                for user in list(&group["user_ids"]) {
                    out.insert(format!("{}:{user}", group["group_id"]));
                }
            }
        }
        Vendor::Userpilot => {
            for user in list(&dump["users"]) {
                if !user["company_id"].is_null() {
                    out.insert(user["user_id"].to_string());
                }
            }
        }
        Vendor::UserGuiding => {
            for user in list(&dump["users"]) {
                if !user["companyId"].is_null() {
                    out.insert(user["userId"].to_string());
                }
            }
        }
    }
    out
}

/// True for the vendors that keep one company per user (the last membership wins).
fn one_group_per_user(vendor: Vendor) -> bool {
    matches!(vendor, Vendor::Userpilot | Vendor::UserGuiding)
}

#[test]
fn every_listable_vendor_pipes_into_every_writable_one() {
    let sb = Sandbox::builder()
        .seed(SEED.seed)
        .users(SEED.users)
        .groups(SEED.groups)
        .job_step(std::time::Duration::from_millis(10))
        .start_background()
        .unwrap();
    let outputs: Vec<(Vendor, Vec<Value>)> = SOURCES
        .into_iter()
        .map(|source| {
            (
                source,
                tap::sync(&sb.config(source), None, None).ok().messages,
            )
        })
        .collect();
    let mut destinations: Vec<(Vendor, Value)> =
        Vendor::ALL.into_iter().map(|v| (v, json!({}))).collect();
    destinations.push((Vendor::Appcues, json!({"mode": "bulk"})));
    destinations.push((Vendor::Userpilot, json!({"mode": "bulk"})));
    let mut failures = Vec::new();
    for (source, messages) in &outputs {
        let input: String = messages.iter().map(|m| format!("{m}\n")).collect();
        let memberships: Vec<&Value> = messages
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == "memberships")
            .map(|m| &m["record"])
            .collect();
        assert!(!memberships.is_empty(), "{source} read no memberships");
        let pairs: BTreeSet<(String, String)> = memberships
            .iter()
            .map(|m| (m["group_id"].to_string(), m["user_id"].to_string()))
            .collect();
        let users: BTreeSet<&String> = pairs.iter().map(|(_, u)| u).collect();
        // UserGuiding keeps a company only on its users: a group no membership names has no
        // place there and is rejected, as documented (docs/target.md).
        let memberless: BTreeSet<String> = messages
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == "groups")
            .map(|m| m["record"]["id"].to_string())
            .filter(|id| !pairs.iter().any(|(g, _)| g == id))
            .collect();
        // Guru's "All Members" (a Guru source's group that cannot be changed): every member is
        // in it at a Guru destination, so its memberships are skipped there, not sent.
        let all_members: BTreeSet<String> = messages
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == "groups")
            .filter(|m| m["record"]["attributes"]["modifiable"] == json!(false))
            .map(|m| m["record"]["id"].to_string())
            .collect();
        // A Guru destination never invites a user the source marks inactive (docs/provisioning.md),
        // so that user's memberships are skipped there.
        let inactive: BTreeSet<String> = messages
            .iter()
            .filter(|m| m["type"] == "RECORD" && m["stream"] == "users")
            .map(|m| &m["record"])
            .filter(|u| {
                u["active"] == json!(false)
                    || u["status"].as_str().is_some_and(|s| {
                        [
                            "inactive",
                            "deactivated",
                            "disabled",
                            "suspended",
                            "deprovisioned",
                        ]
                        .contains(&s.to_ascii_lowercase().as_str())
                    })
            })
            .map(|u| u["id"].to_string())
            .collect();
        for (dest, extra) in &destinations {
            let what = format!("{source} → {dest} {extra}");
            // The destination starts empty (the source's output is read already).
            sb.reseed(SeedSpec {
                users: 0,
                groups: 0,
                ..SEED
            });
            let dir = tempfile::tempdir().unwrap();
            let mut keys = json!({"requests_per_second": 0});
            for (k, v) in extra.as_object().unwrap() {
                keys[k] = v.clone();
            }
            let config = target::config(&sb, *dest, dir.path(), keys);
            let out = target::run(&config, &input);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                failures.push(format!("{what}: exit {}: {stderr}", out.status));
                continue;
            }
            let rejected: Vec<Value> = support::rejects::rejects(dir.path())
                .into_iter()
                .filter(|l| {
                    !(*dest == Vendor::UserGuiding
                        && l["stream"] == "groups"
                        && memberless.contains(&l["record"]["id"].to_string()))
                })
                .collect();
            // A source role that makes a Guru light (read-only) member: Guru keeps light members
            // out of groups, and the reject says so.
            let (light, rejected): (Vec<Value>, Vec<Value>) = rejected.into_iter().partition(|l| {
                *dest == Vendor::Guru
                    && l["stream"] == "memberships"
                    && l["reject"]["reason"].as_str().is_some_and(|r| {
                        r.contains("light users (read-only access) cannot be in groups")
                    })
            });
            if !rejected.is_empty() {
                failures.push(format!(
                    "{what}: {} rejected, first: {}",
                    rejected.len(),
                    rejected[0]
                ));
                continue;
            }
            let expected = if one_group_per_user(*dest) {
                users.len()
            } else if *dest == Vendor::Guru {
                pairs
                    .iter()
                    .filter(|(g, u)| !all_members.contains(g) && !inactive.contains(u))
                    .count()
                    - light.len()
            } else {
                pairs.len()
            };
            let got = held(&sb, *dest).len();
            if got != expected {
                failures.push(format!(
                    "{what}: the destination holds {got} memberships, the source {expected}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Singer lines: SCHEMAs for the three streams, then `records` as (stream, record), then a STATE.
fn singer(records: &[(&str, Value)]) -> String {
    let mut out = String::new();
    for (stream, keys) in [
        ("groups", json!(["id"])),
        ("users", json!(["id"])),
        ("memberships", json!(["group_id", "user_id"])),
    ] {
        if records.iter().any(|(s, _)| *s == stream) {
            out.push_str(&format!(
                "{}\n",
                json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": keys})
            ));
        }
    }
    for (stream, record) in records {
        out.push_str(&format!(
            "{}\n",
            json!({"type": "RECORD", "stream": stream, "record": record})
        ));
    }
    out.push_str(&format!(
        "{}\n",
        json!({"type": "STATE", "value": {"done": true}})
    ));
    out
}

/// One target run into `vendor` with a fresh reject file: (stderr, the reject file's lines).
fn target(sb: &Sandbox, vendor: Vendor, input: &str) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = target::config(sb, vendor, dir.path(), json!({}));
    let out = target::run(&config, input);
    let stderr = target::succeeded(&out);
    let rejects = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap_or_default();
    (stderr, rejects)
}

/// Memberships whose users were never sent are rejected when the input ends, naming the user
/// key and what was missing; once the users exist, replaying the reject file alone (no users
/// stream) writes them: the writer finds the users at the vendor (SCIM by externalId or
/// userName, Guru by email). A group that never came stays rejected, named. (Without the groups
/// stream, Guru finds a group by its name or Guru id only.)
#[test]
fn membership_rejects_replay_without_the_users_stream_where_the_vendor_finds_users() {
    let sb = target::sandbox();
    for vendor in [Vendor::Scim, Vendor::GuruScim, Vendor::Guru] {
        sb.reseed(SeedSpec {
            users: 0,
            groups: 0,
            ..SEED
        });
        // Guru keys members by email; SCIM finds users by externalId (the source key) or
        // userName (the email).
        // Guru finds a group by name (or its Guru id) when no groups record maps the key.
        let (u1, u2, g1) = match vendor {
            Vendor::Guru => ("ann@x.io", "bob@x.io", "Eng"),
            _ => ("u1", "bob@x.io", "g1"),
        };
        let users = [
            (
                "users",
                json!({"id": u1, "email": "ann@x.io", "name": "Ann"}),
            ),
            (
                "users",
                json!({"id": "u2", "email": "bob@x.io", "name": "Bob"}),
            ),
        ];
        // 1. The groups and memberships, but not the users.
        let (_, first) = target(
            &sb,
            vendor,
            &singer(&[
                ("groups", json!({"id": g1, "name": "Eng"})),
                ("memberships", json!({"group_id": g1, "user_id": u1})),
                ("memberships", json!({"group_id": g1, "user_id": u2})),
                ("memberships", json!({"group_id": "g404", "user_id": u1})),
            ]),
        );
        let first_rejects = support::rejects::parse(&first);
        assert_eq!(first_rejects.len(), 3, "{vendor}: {first}");
        for r in &first_rejects {
            assert_eq!(r["stream"], "memberships", "{vendor}: {r}");
            let reason = r["reject"]["reason"].as_str().unwrap();
            assert!(!reason.contains("record first"), "{vendor}: {reason}");
        }
        // 2. The users, alone.
        let (_, second) = target(&sb, vendor, &singer(&users));
        assert!(
            support::rejects::parse(&second).is_empty(),
            "{vendor}: {second}"
        );
        // 3. The first run's reject file as it is, without the users stream.
        let (stderr, third) = target(&sb, vendor, &first);
        let still = support::rejects::parse(&third);
        assert_eq!(still.len(), 1, "{vendor}: {third}\n{stderr}");
        assert_eq!(still[0]["record"]["group_id"], "g404", "{vendor}");
        let reason = still[0]["reject"]["reason"].as_str().unwrap();
        assert!(reason.contains("\"g404\""), "{vendor}: {reason}");
        assert!(reason.contains("groups"), "{vendor}: {reason}");
        if vendor != Vendor::Guru {
            assert!(
                reason.starts_with("memberships record"),
                "{vendor}: {reason}"
            );
        }
        let held = held(&sb, vendor);
        assert_eq!(held.len(), 2, "{vendor}: {held:?}");
    }
}

/// A SCIM tap's memberships ride on its groups listing, before their users: the target holds
/// them, and past the in-memory bound (2 here) in a temporary file, then writes them all.
#[test]
fn held_memberships_past_the_bound_spill_to_a_file_and_all_arrive() {
    let sb = Sandbox::builder()
        .seed(SEED.seed)
        .users(SEED.users)
        .groups(SEED.groups)
        .start_background()
        .unwrap();
    let messages = tap::sync(&sb.config(Vendor::Scim), None, None)
        .ok()
        .messages;
    let input: String = messages.iter().map(|m| format!("{m}\n")).collect();
    let pairs: BTreeSet<(String, String)> = messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == "memberships")
        .map(|m| {
            (
                m["record"]["group_id"].to_string(),
                m["record"]["user_id"].to_string(),
            )
        })
        .collect();
    assert!(pairs.len() > 4, "{pairs:?}");
    sb.reseed(SeedSpec {
        users: 0,
        groups: 0,
        ..SEED
    });
    let dir = tempfile::tempdir().unwrap();
    let config = target::config(&sb, Vendor::GuruScim, dir.path(), json!({}));
    let report = dir.path().join("report.json");
    let out = target::run_args(
        &config,
        &input,
        &["--report", report.to_str().unwrap()],
        &[("ROSTER_HELD_MEMBERSHIPS_IN_MEMORY", "2")],
    );
    let stderr = target::succeeded(&out);
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["totals"]["rejected"], 0, "{stderr}");
    assert_eq!(report["held_memberships"], json!(pairs.len()), "{report}");
    assert_eq!(
        report["spilled_memberships"],
        json!(pairs.len() - 2),
        "{report}"
    );
    assert!(stderr.contains("temporary file"), "{stderr}");
    assert_eq!(held(&sb, Vendor::GuruScim).len(), pairs.len());
    // The last state comes only once the held memberships were written.
    let states: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(
        serde_json::from_str::<Value>(states.last().unwrap()).unwrap()["sync_started_at"],
        Value::Null
    );
}

/// Memberships first, then users, then groups (a warehouse may send them in any order): the
/// writers that need the group and user to exist get every membership after them, none rejected.
#[test]
fn memberships_before_their_users_and_groups_arrive_at_every_writable_vendor() {
    let sb = target::sandbox();
    for vendor in Vendor::ALL {
        sb.reseed(SeedSpec {
            users: 0,
            groups: 0,
            ..SEED
        });
        let mut records = Vec::new();
        for g in ["g1", "g2"] {
            for u in ["u1", "u2", "u3"] {
                if g == "g1" || u == "u3" {
                    records.push(("memberships", json!({"group_id": g, "user_id": u})));
                }
            }
        }
        for u in ["u1", "u2", "u3"] {
            records.push((
                "users",
                json!({"id": u, "email": format!("{u}@x.io"), "name": u}),
            ));
        }
        for (g, name) in [("g1", "Eng"), ("g2", "Ops")] {
            records.push(("groups", json!({"id": g, "name": name})));
        }
        let (stderr, rejects) = target(&sb, vendor, &singer(&records));
        assert!(
            support::rejects::parse(&rejects).is_empty(),
            "{vendor}: {rejects}\n{stderr}"
        );
        let expected = if one_group_per_user(vendor) { 3 } else { 4 };
        assert_eq!(held(&sb, vendor).len(), expected, "{vendor}: {stderr}");
    }
}
