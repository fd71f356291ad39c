//! The command lines as users and Meltano call them: flags, `--about`, config errors and exit
//! codes. These run the real binaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

use crate::support::bin::{self, TAP, TARGET};
use crate::support::files::write_text;

/// `binary <args>` with `env`, without `ROSTER_ZERO_DELAYS` unless `env` sets it.
fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    bin::Bin::new(binary).args(args).envs(env).output()
}

fn write(dir: &Path, name: &str, value: &Value) -> String {
    let path = write_text(&dir.join(name), value.to_string());
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
    bin::target().args(["--config", &path, "--test"]).output()
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
    use roster_sandbox::{Sandbox, Vendor};
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

/// Numbers that used to panic (exit 101), hang, or be named "(config)": each is refused when
/// the config loads, exit 2, one line naming the key and the accepted range.
#[test]
fn out_of_range_numbers_exit_2_naming_the_key_and_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let base =
        json!({"vendor": "userflow", "api_key": "k", "base_url": "http://127.0.0.1:9/userflow"});
    let appcues = json!({"vendor": "appcues", "account_id": "1", "api_key": "k", "api_secret": "s", "base_url": "http://127.0.0.1:9/appcues"});
    let cases: Vec<(&str, Value, &str, Value, &str)> = vec![
        (
            TAP,
            base.clone(),
            "timeout_seconds",
            json!(1e300),
            "from 0.1 to 3600",
        ),
        (
            TARGET,
            base.clone(),
            "timeout_seconds",
            json!(-1),
            "from 0.1 to 3600",
        ),
        (
            TAP,
            base.clone(),
            "max_concurrency",
            json!(u64::MAX),
            "from 1 to 1024",
        ),
        (
            TARGET,
            base.clone(),
            "max_concurrency",
            json!(u64::MAX),
            "from 1 to 1024",
        ),
        (
            TARGET,
            base.clone(),
            "max_retries",
            json!(5_000_000_000u64),
            "from 0 to 100000",
        ),
        (
            TAP,
            base.clone(),
            "requests_per_second",
            json!(1e-300),
            "0 or from 0.01 to 10000",
        ),
        (
            TARGET,
            appcues.clone(),
            "bulk_job_timeout_seconds",
            json!(1e300),
            "from 1 to 604800",
        ),
        (
            TARGET,
            appcues.clone(),
            "bulk_max_rows",
            json!(u64::MAX),
            "from 1 to 10000000",
        ),
    ];
    for (binary, mut config, key, value, range) in cases {
        config[key] = value.clone();
        let path = write(dir.path(), "n.json", &config);
        let output = run(binary, &["--config", &path], &[]);
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{key}={value}: {text}");
        assert!(
            text.contains(&format!("config key \"{key}\" must be")),
            "{text}"
        );
        assert!(text.contains(range), "{key}={value}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "{text}");
    }
    // A whole number above u64 is not "a number": the message gives the range.
    let mut config = base.clone();
    config["max_concurrency"] = serde_json::from_str("18446744073709551616").unwrap();
    let output = run(
        TAP,
        &["--config", &write(dir.path(), "big.json", &config)],
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("a whole number from 1 to 1024"),
        "{}",
        stderr(&output)
    );
    // The same through --config ENV.
    for (binary, prefix) in [(TAP, "TAP_ROSTER_"), (TARGET, "TARGET_ROSTER_")] {
        for (key, value, range) in [
            ("TIMEOUT_SECONDS", "1e300", "from 0.1 to 3600"),
            ("MAX_CONCURRENCY", "18446744073709551616", "from 1 to 1024"),
            ("REQUESTS_PER_SECOND", "NaN", "0 or from 0.01 to 10000"),
        ] {
            let vars = [
                (format!("{prefix}VENDOR"), "userflow".to_string()),
                (format!("{prefix}API_KEY"), "k".to_string()),
                (
                    format!("{prefix}BASE_URL"),
                    "http://127.0.0.1:9/u".to_string(),
                ),
                (format!("{prefix}{key}"), value.to_string()),
            ];
            let env: Vec<(&str, &str)> =
                vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let output = run(binary, &["--config", "ENV"], &env);
            let text = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{key}={value}: {text}");
            assert!(
                text.contains(&key.to_ascii_lowercase()) && text.contains(range),
                "{text}"
            );
        }
    }
}

/// The bounds are in the settings schema `--about` prints.
#[test]
fn about_documents_every_numeric_range() {
    for binary in [TAP, TARGET] {
        let output = run(binary, &["--about", "--format", "json"], &[]);
        let about: Value = serde_json::from_slice(&output.stdout).unwrap();
        let properties = about["settings"]["properties"].as_object().unwrap();
        let mut numeric = 0;
        for (key, schema) in properties {
            if matches!(schema["type"].as_str(), Some("integer" | "number")) {
                numeric += 1;
                assert!(schema["minimum"].is_number(), "{key}: {schema}");
                assert!(schema["maximum"].is_number(), "{key}: {schema}");
                let description = schema["description"].as_str().unwrap();
                assert!(description.contains("(accepted: "), "{key}: {description}");
            }
        }
        assert!(numeric >= 4, "{numeric}");
    }
}

/// Plain http sends the token in the clear: refused for anything but loopback and `*.test`
/// unless `allow_insecure_http`, which then warns. Credentials in the URL are a config error
/// too (exit 2), and the password never shows.
#[test]
fn plain_http_and_credentials_in_base_url_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for binary in [TAP, TARGET] {
        let mut config =
            json!({"vendor": "userflow", "api_key": "k", "base_url": "http://api.userflow.com"});
        let output = run(
            binary,
            &["--config", &write(dir.path(), "h.json", &config)],
            &[],
        );
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(
            text.contains("config key \"base_url\" uses plain http to api.userflow.com"),
            "{text}"
        );
        assert!(text.contains("allow_insecure_http"), "{text}");

        config["base_url"] = json!("http://me:hunter2@127.0.0.1:9/userflow");
        let output = run(
            binary,
            &["--config", &write(dir.path(), "p.json", &config)],
            &[],
        );
        let text = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{text}");
        assert!(
            text.contains("\"base_url\" must not carry credentials"),
            "{text}"
        );
        assert!(!text.contains("hunter2") && !text.contains("me:"), "{text}");

        // Allowed: the run goes on (and fails later, on the unreachable host), with a warning.
        config["base_url"] = json!("http://roster-sandbox.invalid:9/userflow");
        config["allow_insecure_http"] = json!(true);
        config["max_retries"] = json!(0);
        let path = write(dir.path(), "a.json", &config);
        // The tap tests the connection; the target reads an empty stdin.
        let args: &[&str] = if binary == TAP {
            &["--config", &path, "--test"]
        } else {
            &["--config", &path]
        };
        let output = run(binary, args, &[]);
        let text = stderr(&output);
        assert!(
            text.contains("allow_insecure_http: sending credentials in the clear over plain http to roster-sandbox.invalid"),
            "{text}"
        );
        assert_eq!(
            text.matches("allow_insecure_http:").count(),
            1,
            "warned once: {text}"
        );
        assert_ne!(output.status.code(), Some(2), "{text}");
    }
}

/// A `TAP_ROSTER_*` / `TARGET_ROSTER_*` variable that is not a setting is warned about by name,
/// never with its value.
#[test]
fn a_misspelt_environment_variable_is_named_in_a_warning() {
    let output = run(
        TAP,
        &["--config", "ENV", "--discover"],
        &[
            ("TAP_ROSTER_VENDOR", "userflow"),
            ("TAP_ROSTER_API_KEYY", "secret-value-123"),
            ("TAP_ROSTER_LOGLEVEL", "info"),
        ],
    );
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        text.contains("ignoring environment variable TAP_ROSTER_API_KEYY: not a config key for vendor userflow in tap-roster"),
        "{text}"
    );
    assert!(!text.contains("secret-value-123"), "{text}");
    assert!(!text.contains("TAP_ROSTER_LOGLEVEL"), "{text}");
    let output = run(
        TARGET,
        &["--config", "ENV"],
        &[
            ("TARGET_ROSTER_VENDOR", "userflow"),
            ("TARGET_ROSTER_API_KEY", "k"),
            ("TARGET_ROSTER_BASE_URL", "http://127.0.0.1:9/u"),
            ("TARGET_ROSTER_REJECTFILE", "/tmp/x"),
        ],
    );
    let text = stderr(&output);
    assert!(
        text.contains("ignoring environment variable TARGET_ROSTER_REJECTFILE"),
        "{text}"
    );
}
