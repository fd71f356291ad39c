//! The command lines as users and Meltano call them: flags, `--about`, config errors and exit
//! codes. These run the real binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const TAP: &str = env!("CARGO_BIN_EXE_tap-roster");
const TARGET: &str = env!("CARGO_BIN_EXE_target-roster");

fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary);
    command
        .args(args)
        .env_remove("ROSTER_LOG")
        .env("NO_COLOR", "1");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().unwrap()
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn about_json_is_the_only_thing_on_stdout() {
    for binary in [TAP, TARGET] {
        let output = run(binary, &["--about", "--format", "json"], &[]);
        assert!(output.status.success());
        let about: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(about["settings"]["properties"]["vendor"]["enum"].is_array());
        assert_eq!(about["version"], env!("CARGO_PKG_VERSION"));
    }
    let markdown = run(TARGET, &["--about", "--format", "markdown"], &[]);
    assert!(
        String::from_utf8(markdown.stdout)
            .unwrap()
            .starts_with("# target-roster")
    );
}

#[test]
fn version_and_help() {
    let output = run(TAP, &["--version"], &[]);
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .starts_with("tap-roster ")
    );
    let output = run(TARGET, &["--help"], &[]);
    assert!(
        String::from_utf8(output.stdout)
            .unwrap()
            .contains("--dry-run")
    );
}

#[test]
fn usage_and_config_errors_exit_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let unknown_vendor = write(dir.path(), "a.json", &json!({"vendor": "intercom"}));
    let bad_key = write(
        dir.path(),
        "b.json",
        &json!({"vendor": "userflow", "api_key": "k", "page_sise": 5}),
    );
    let missing = write(
        dir.path(),
        "c.json",
        &json!({"vendor": "appcues", "api_key": "k"}),
    );
    let not_json = dir.path().join("d.json");
    std::fs::write(&not_json, "{vendor: userflow").unwrap();
    let not_listable = write(
        dir.path(),
        "e.json",
        &json!({"vendor": "userpilot", "api_key": "k"}),
    );
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            TAP,
            vec!["--config", &unknown_vendor],
            "unknown vendor \"intercom\" (valid vendors: userguiding, userflow, userpilot, appcues, guru, guru_scim, scim)",
        ),
        (
            TAP,
            vec!["--config", &bad_key],
            "unknown config key \"page_sise\" for vendor userflow",
        ),
        (
            TARGET,
            vec!["--config", &missing],
            "vendor appcues needs config key(s) account_id, api_secret",
        ),
        (
            TARGET,
            vec!["--config", not_json.to_str().unwrap()],
            "is not a JSON object",
        ),
        (TAP, vec![], "no config given"),
        (
            TAP,
            vec!["--config", &not_listable],
            "vendor userpilot has no list API, so tap-roster cannot read it (the tap reads: userflow, guru, guru_scim, scim)",
        ),
        (
            TAP,
            vec!["--config", &not_listable, "--discover"],
            "has no list API",
        ),
        (
            TAP,
            vec!["--config", "/nonexistent/roster.json"],
            "cannot read config file /nonexistent/roster.json",
        ),
    ];
    for (binary, args, expected) in cases {
        let output = run(binary, &args, &[]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
        assert!(output.stdout.is_empty(), "stdout is the protocol: {args:?}");
    }
    let output = run(TAP, &["--no-such-flag"], &[]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn config_env_reads_prefixed_variables() {
    let output = run(
        TAP,
        &["--config", "ENV"],
        &[
            ("TAP_ROSTER_VENDOR", "appcues"),
            ("TAP_ROSTER_API_KEY", "k"),
        ],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("vendor appcues has no list API"),
        "{}",
        stderr(&output)
    );
    let output = run(
        TAP,
        &["--config", "ENV"],
        &[
            ("TAP_ROSTER_VENDOR", "userflow"),
            ("TAP_ROSTER_MAX_RETRIES", "many"),
        ],
    );
    assert!(
        stderr(&output).contains("config key \"max_retries\" must be a whole number"),
        "{}",
        stderr(&output)
    );
}

/// `target-roster --test` with `config` for one vendor.
fn target_test(dir: &Path, name: &str, config: &Value) -> Output {
    let path = write(dir, name, config);
    run(
        TARGET,
        &["--config", &path, "--test"],
        &[("ROSTER_ZERO_DELAYS", "1")],
    )
}

/// The secret keys of a sandbox config.
const SECRETS: &[&str] = &[
    "api_key",
    "api_secret",
    "api_token",
    "scim_token",
    "bearer_token",
];

/// Issue 11 item 13: one request per vendor checks the credentials and the base URL. Good
/// credentials pass; a wrong key fails with exit 1 naming the keys to check (and never the
/// key); a base URL that is not the vendor's API fails with exit 1 naming base_url; nothing
/// is written to the vendor and nothing is printed on stdout.
#[test]
fn target_test_checks_credentials_and_base_url_for_every_vendor() {
    use roster::sandbox::{Sandbox, Vendor};
    let sb = Sandbox::builder()
        .users(1)
        .groups(1)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for vendor in Vendor::ALL {
        let name = vendor.name();
        let before = sb.dump(vendor);
        let good = sb.config(vendor);
        let out = target_test(dir.path(), &format!("{name}-good.json"), &good);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: stdout");
        assert!(err.contains("connection test passed"), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");

        let mut bad = good.clone();
        let object = bad.as_object_mut().unwrap();
        let secret = *SECRETS.iter().find(|k| object.contains_key(**k)).unwrap();
        object.insert(secret.into(), json!("wrong-secret-value"));
        let out = target_test(dir.path(), &format!("{name}-bad.json"), &bad);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("refused the credentials"), "{name}: {err}");
        assert!(
            err.contains("check ") && err.contains(secret),
            "{name}: {err}"
        );
        assert!(
            !err.contains("wrong-secret-value"),
            "{name} leaks the key: {err}"
        );

        let mut elsewhere = good.clone();
        elsewhere["base_url"] = json!(format!("{}/nowhere", sb.origin()));
        let out = target_test(dir.path(), &format!("{name}-url.json"), &elsewhere);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("check base_url"), "{name}: {err}");

        assert_eq!(
            sb.dump(vendor),
            before,
            "{name}: --test changed the vendor's data"
        );
    }
    // Nobody listening: exit 1, naming base_url.
    let mut closed = sb.config(Vendor::Appcues);
    closed["base_url"] = json!(format!(
        "http://127.0.0.1:{}/appcues",
        crate::support::free_port()
    ));
    let out = target_test(dir.path(), "closed.json", &closed);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("check base_url"), "{}", stderr(&out));
}

#[test]
fn help_and_completions_from_the_binaries() {
    for (binary, name) in [(TAP, "tap-roster"), (TARGET, "target-roster")] {
        let help = run(binary, &["--help"], &[]);
        assert!(help.status.success());
        let help = String::from_utf8(help.stdout).unwrap();
        assert!(
            help.contains("Examples:") && help.contains("Exit status:"),
            "{help}"
        );
        assert!(
            !help.contains(env!("CARGO_PKG_DESCRIPTION")),
            "{name}: the crate's description"
        );
        for shell in ["bash", "zsh", "fish"] {
            let out = run(binary, &["--completions", shell], &[]);
            assert!(out.status.success(), "{name} {shell}: {}", stderr(&out));
            let script = String::from_utf8(out.stdout).unwrap();
            assert!(
                script.contains(name) && script.contains("config"),
                "{name} {shell}"
            );
        }
    }
}
