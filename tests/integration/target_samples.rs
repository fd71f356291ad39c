//! Every `samples/target-*.json` (real-time and provisioning modes; the bulk samples run in
//! `target_bulk_*`) works as it is against roster-sandbox: users, a group and memberships
//! arrive with nothing rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::target::{Input, target};

fn input() -> Input {
    let mut input = Input::new()
        .schema("users", &["id"])
        .schema("groups", &["id"])
        .schema("memberships", &["group_id", "user_id"]);
    for n in 1..=3 {
        input = input.record(
            "users",
            json!({"id": format!("sample-{n}"), "email": format!("sample{n}@example.com"),
                   "first_name": format!("Sample{n}"), "name": format!("Sample {n}")}),
        );
    }
    input
        .record(
            "groups",
            json!({"id": "sample-group", "name": "Sample Group"}),
        )
        .record(
            "memberships",
            json!({"group_id": "sample-group", "user_id": "sample-1"}),
        )
        .record(
            "memberships",
            json!({"group_id": "sample-group", "user_id": "sample-2"}),
        )
        .state(json!({"done": true}))
}

#[test]
fn every_sample_target_config_runs_as_it_is() {
    let sb = Sandbox::builder()
        .users(5)
        .groups(1)
        .start_background()
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("target-") || !name.ends_with(".json") || name.ends_with("-bulk.json")
        {
            continue;
        }
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let base = config["base_url"]
            .as_str()
            .unwrap()
            .replace("http://127.0.0.1:8787", &sb.origin());
        config["base_url"] = json!(base);
        // Guru's group map is a file the sample keeps next to where it runs: here, a temporary one.
        let map_dir = tempfile::tempdir().unwrap();
        if config.get("group_map_file").is_some() {
            config["group_map_file"] = json!(map_dir.path().join("guru-group-map.json"));
        }
        let vendor = Vendor::ALL
            .into_iter()
            .find(|v| config["vendor"] == json!(v.name()))
            .unwrap();
        sb.clear_requests();
        let run = target(&config, &input()).ok();
        assert_eq!(run.states.last(), Some(&json!({"done": true})), "{name}");
        assert!(run.rejects.is_empty(), "{name}: {:?}", run.rejects);
        let writes = sb
            .requests()
            .iter()
            .filter(|r| r.vendor == Some(vendor) && r.method != "GET")
            .filter(|r| (200..300).contains(&r.status))
            .count();
        assert!(writes > 0, "{name}: nothing was written");
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "target-appcues.json",
            "target-guru.json",
            "target-guru_scim.json",
            "target-scim.json",
            "target-userflow.json",
            "target-userguiding.json",
            "target-userpilot.json"
        ]
    );
}
