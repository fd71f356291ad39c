//! The README's first command, `scripts/quickstart.sh`, run as a user would (with the debug
//! binaries through `ROSTER_BIN_DIR` instead of a release build): it exits 0, every Userflow
//! user, group and membership of the sandbox's seed arrives at the sandbox's Appcues, it prints
//! the summary and the final state and names the files to look at, and it stops its sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::Value;

fn ids(list: &Value, field: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[field].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_quickstart_moves_the_seeded_userflow_people_to_appcues_and_stops_its_sandbox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = crate::support::bin::dir();
    let dir = tempfile::tempdir().unwrap();
    // The script as a user runs it: real delays, no log settings inherited.
    let out = crate::support::bin::Bin::new("bash")
        .arg(root.join("scripts/quickstart.sh"))
        .current_dir(dir.path())
        .env("ROSTER_BIN_DIR", &bin)
        .env("ROSTER_QUICKSTART_OUT", dir.path().join("out"))
        .output();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {}: {stdout}\n{stderr}",
        out.status
    );

    // The same seed in-process: what the script's sandbox served as Userflow.
    let reference = Sandbox::builder().start_background().unwrap();
    let userflow = reference.dump(Vendor::Userflow);
    let files = dir.path().join("out");
    let appcues: Value =
        serde_json::from_str(&std::fs::read_to_string(files.join("appcues-dump.json")).unwrap())
            .unwrap();
    let users = ids(&userflow["users"], "id");
    assert_eq!(users.len(), 100);
    assert_eq!(ids(&appcues["users"], "user_id"), users);
    assert_eq!(
        ids(&appcues["groups"], "group_id"),
        ids(&userflow["groups"], "id")
    );
    // Each Userflow membership is an Appcues group member.
    let mut want = BTreeSet::new();
    for u in userflow["users"].as_array().unwrap() {
        for m in u["memberships"].as_array().into_iter().flatten() {
            let group = m["group"]["id"]
                .as_str()
                .or(m["group_id"].as_str())
                .unwrap();
            want.insert((group.to_string(), u["id"].as_str().unwrap().to_string()));
        }
    }
    let mut got = BTreeSet::new();
    for g in appcues["groups"].as_array().unwrap() {
        for u in g["user_ids"].as_array().unwrap() {
            got.insert((
                g["group_id"].as_str().unwrap().to_string(),
                u.as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // The summary, the final state (also the last line of state.json), and where to look.
    assert!(
        stderr.contains("users → users: 100 in, 100 sent, 0 rejected"),
        "{stderr}"
    );
    let last = std::fs::read_to_string(files.join("state.json"))
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let state: Value = serde_json::from_str(&last).unwrap();
    assert!(
        state["bookmarks"]["users"]["completed_at"].is_string(),
        "{last}"
    );
    assert!(stdout.contains(&last), "{stdout}");
    assert!(
        stderr.contains("Appcues now holds 100 user profiles"),
        "{stderr}"
    );
    assert!(stderr.contains("appcues-dump.json"), "{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(files.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["exit_code"], 0);

    // The sandbox is gone: its port no longer answers.
    let banner = std::fs::read_to_string(files.join("sandbox.out")).unwrap();
    let origin = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap();
    let addr = origin.trim_start_matches("http://");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the sandbox at {addr} still runs"
    );
}
