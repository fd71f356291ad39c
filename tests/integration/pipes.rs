//! `tap-roster | target-roster` from every listable vendor to every writable one (docs/tap.md's
//! promise), against one in-process sandbox: each source is read once, and its output goes into
//! one target run per destination, which starts empty. Every run exits 0 with nothing rejected,
//! and the sandbox then holds the source's memberships at the destination.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use roster::sandbox::{Sandbox, SeedSpec, Vendor};
use serde_json::{Value, json};

use crate::{tap_common, target_common};

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
                tap_common::sync(&sb.config(source), None, None)
                    .ok()
                    .messages,
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
            let config = target_common::config(&sb, *dest, dir.path(), keys);
            let out = target_common::run(&config, &input);
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() {
                failures.push(format!("{what}: exit {}: {stderr}", out.status));
                continue;
            }
            let rejects =
                std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap_or_default();
            let rejected: Vec<Value> = rejects
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|l| l["type"] == "RECORD")
                .filter(|l| {
                    !(*dest == Vendor::UserGuiding
                        && l["stream"] == "groups"
                        && memberless.contains(&l["record"]["id"].to_string()))
                })
                .collect();
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
                    .filter(|(g, _)| !all_members.contains(g))
                    .count()
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
