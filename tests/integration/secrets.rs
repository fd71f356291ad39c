//! Secrets never leak: not in Debug output, errors, logs (even at trace level) or `--about`.
//! Every credential key of every vendor gets a distinctive value, and every output is grepped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use roster::config::{Applies, RawConfig};
use roster::vendors::{self, REGISTRY};
use serde_json::{Map, Value, json};

use crate::support::bin::{self, TAP, TARGET};

/// A config for `vendor` whose every secret is `SECRET-<key>-hunter2`.
fn config_with_secrets(vendor: &str) -> (Map<String, Value>, Vec<String>) {
    let spec = vendors::find(vendor).unwrap();
    let mut config = Map::new();
    config.insert("vendor".into(), json!(vendor));
    config.insert("base_url".into(), json!("http://127.0.0.1:9/unreachable"));
    config.insert("max_retries".into(), json!(0));
    config.insert("timeout_seconds".into(), json!(1));
    let mut secrets = Vec::new();
    for setting in spec.settings {
        if setting.secret {
            let value = format!("SECRET-{}-hunter2", setting.name);
            secrets.push(value.clone());
            config.insert(setting.name.into(), json!(value));
        } else if setting.required {
            config.insert(setting.name.into(), json!("someone@example.com"));
        }
    }
    if vendor == "scim" {
        config.remove("password");
    }
    (config, secrets)
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} leaks {secret}: {text}"
        );
        assert!(
            !text.contains("hunter2"),
            "{what} leaks part of a secret: {text}"
        );
    }
}

#[test]
fn debug_output_of_resolved_configs_redacts_every_secret() {
    for spec in REGISTRY {
        let (config, secrets) = config_with_secrets(spec.name);
        let raw = RawConfig::from_object(config);
        for binary in [Applies::Tap, Applies::Target] {
            let Ok(resolved) = vendors::resolve(&raw, binary, true) else {
                continue;
            };
            assert_clean("Debug of Resolved", &format!("{resolved:?}"), &secrets);
            assert_clean(
                "pretty Debug of Resolved",
                &format!("{resolved:#?}"),
                &secrets,
            );
        }
    }
}

#[test]
fn config_errors_never_show_a_secret_value() {
    // A secret of the wrong type, and a misspelt key next to real secrets.
    let raw = RawConfig::from_object(
        json!({"vendor": "userflow", "api_key": 987654321})
            .as_object()
            .cloned()
            .unwrap(),
    );
    let err = vendors::resolve(&raw, Applies::Tap, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("api_key") && !err.contains("987654321"),
        "{err}"
    );
    let (mut config, secrets) = config_with_secrets("appcues");
    config.insert("api_sekret".into(), json!("SECRET-typo-hunter2"));
    let err = vendors::resolve(&RawConfig::from_object(config), Applies::Target, true)
        .unwrap_err()
        .to_string();
    assert_clean("unknown-key error", &err, &secrets);
    assert!(!err.contains("SECRET-typo"), "{err}");
}

#[test]
fn binaries_never_print_a_secret_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    for spec in REGISTRY {
        let (config, secrets) = config_with_secrets(spec.name);
        let path = dir.path().join(format!("{}.json", spec.name));
        std::fs::write(&path, Value::Object(config).to_string()).unwrap();
        let path = path.to_str().unwrap();
        let runs: Vec<(&str, Vec<&str>)> = vec![
            (TAP, vec!["--config", path]),
            (TAP, vec!["--config", path, "--test"]),
            (TAP, vec!["--config", path, "--discover"]),
            (TARGET, vec!["--config", path, "--input", "/dev/null"]),
            (TAP, vec!["--about", "--format", "json"]),
            (TARGET, vec!["--about", "--format", "markdown"]),
        ];
        for (binary, args) in runs {
            let output = bin::Bin::new(binary)
                .args(&args)
                .log("trace")
                .zero_delays(true)
                .output();
            let what = format!("{} {args:?}", spec.name);
            assert_clean(&what, &String::from_utf8_lossy(&output.stdout), &secrets);
            assert_clean(&what, &String::from_utf8_lossy(&output.stderr), &secrets);
        }
    }
}
