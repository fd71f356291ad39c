//! `tap-roster --discover` and the committed `catalogs/`.
//!
//! `catalogs/<vendor>.json` is the discovery output of every listable vendor, pretty-printed.
//! After changing the record model, regenerate them with
//! `ROSTER_REGENERATE_CATALOGS=1 cargo test --test integration tap_discover::`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Output;

use crate::support::bin;

use roster::vendors::REGISTRY;
use serde_json::{Value, json};

fn tap(config: Value, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    bin::tap()
        .config_json(dir.path(), &config)
        .args(args)
        .output()
}

fn catalogs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("catalogs")
}

#[test]
fn catalogs_match_discovery_for_every_listable_vendor() {
    let regenerate = std::env::var("ROSTER_REGENERATE_CATALOGS").is_ok_and(|v| v == "1");
    let mut listed = Vec::new();
    for spec in REGISTRY.iter().filter(|s| s.listable()) {
        // No credentials: Meltano runs discovery before the config is complete.
        let out = tap(
            json!({"vendor": spec.name, "base_url": "http://127.0.0.1:9/x"}),
            &["--discover"],
        );
        assert!(
            out.status.success(),
            "{}: {}",
            spec.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "discovery is one JSON line");
        let discovered: Value = serde_json::from_str(&stdout).unwrap();
        let names: Vec<&str> = discovered["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stream"].as_str().unwrap())
            .collect();
        assert_eq!(names, spec.reads, "{}", spec.name);
        let path = catalogs_dir().join(format!("{}.json", spec.name));
        if regenerate {
            let text = serde_json::to_string_pretty(&discovered).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
        let committed: Value = serde_json::from_str(
            &std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (regenerate: ROSTER_REGENERATE_CATALOGS=1 cargo test --test integration tap_discover::)", path.display())),
        )
        .unwrap();
        assert_eq!(
            committed,
            discovered,
            "{} is stale: ROSTER_REGENERATE_CATALOGS=1 cargo test --test integration tap_discover::",
            path.display()
        );
        listed.push(format!("{}.json", spec.name));
    }
    let mut present: Vec<String> = std::fs::read_dir(catalogs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    listed.sort();
    assert_eq!(
        present, listed,
        "catalogs/ holds exactly one file per listable vendor"
    );
}

#[test]
fn discovery_tolerates_state_as_meltano_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    std::fs::write(&state, "{}").unwrap();
    let out = tap(
        json!({"vendor": "userflow"}),
        &["--state", state.to_str().unwrap(), "--discover"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let catalog: Value = serde_json::from_slice(&out.stdout).unwrap();
    let users = &catalog["streams"][0];
    assert_eq!(users["key_properties"], json!(["id"]));
    assert_eq!(
        users["schema"]["properties"]["created_at"]["format"],
        "date-time"
    );
    assert_eq!(
        users["metadata"][0]["metadata"]["selected-by-default"],
        true
    );
}

#[test]
fn vendors_without_a_list_api_exit_2_naming_the_readable_ones() {
    for (vendor, config) in [
        (
            "appcues",
            json!({"vendor": "appcues", "api_key": "k", "account_id": "a", "api_secret": "s"}),
        ),
        ("userpilot", json!({"vendor": "userpilot", "api_key": "k"})),
        (
            "userguiding",
            json!({"vendor": "userguiding", "api_key": "k"}),
        ),
    ] {
        for args in [&["--discover"][..], &[][..]] {
            let out = tap(config.clone(), args);
            assert_eq!(out.status.code(), Some(2), "{vendor} {args:?}");
            assert!(out.stdout.is_empty(), "nothing on stdout");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains(&format!("vendor {vendor} has no list API"))
                    && stderr.contains("userflow, guru, guru_scim, scim"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn unusable_state_or_catalog_files_exit_2_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    let shape = dir.path().join("shape.json");
    std::fs::write(&shape, r#"{"bookmarks": []}"#).unwrap();
    let config = json!({"vendor": "userflow", "api_key": "k", "base_url": "http://127.0.0.1:9"});
    for (flag, file) in [("--state", &bad), ("--catalog", &bad), ("--state", &shape)] {
        let out = tap(config.clone(), &[flag, file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{flag} {}", file.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(file.to_str().unwrap()),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
    }
}
