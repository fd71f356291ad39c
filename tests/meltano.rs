//! roster under Meltano: the project in `samples/meltano/`, checked with Meltano 4.4.1 from PyPI.
//!
//! The test installs Meltano in a virtualenv and checks that `meltano.yml` declares the plugins
//! as executables on PATH with exactly the capabilities and settings `--about` prints (kinds,
//! options, and `sensitive: true` on every secret), and that Meltano redacts the secrets it reads
//! from `.env` (copied from `.env.example`, as the README says). The end-to-end runs land once
//! the tap and the target talk HTTP on main.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use roster::config::Applies;
use roster::sandbox::{Sandbox, Vendor};
use roster::vendors::{REGISTRY, VendorSpec};
use serde_json::{Value, json};

/// Pinned: the loader-test workaround below is specific to this version.
const MELTANO: &[&str] = &["meltano==4.4.1"];

/// One Meltano command: it starts slowly, and a debug build on a loaded machine is slow too.
const MELTANO_TIMEOUT: Duration = Duration::from_secs(600);

/// The sample project, copied to a temporary directory.
struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    venv: PathBuf,
    base_urls: [(String, String); 2],
}

impl Project {
    fn new(venv: PathBuf, sb: &Sandbox) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("meltano");
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/meltano");
        support::copy_tree(&sample, &root, &[".meltano", "output", ".env"]);
        // The README's step: the sandbox's credentials go to .env, where Meltano reads them.
        std::fs::copy(root.join(".env.example"), root.join(".env")).unwrap();
        Project {
            _dir: dir,
            root,
            venv,
            base_urls: [
                ("TAP_ROSTER_BASE_URL".into(), sb.base_url(Vendor::Userflow)),
                (
                    "TARGET_ROSTER_BASE_URL".into(),
                    sb.base_url(Vendor::Appcues),
                ),
            ],
        }
    }

    /// `meltano <args>` in the project, with roster's binaries first on PATH.
    fn meltano(&self, args: &[&str], env: &[(&str, &str)]) -> support::Finished {
        let mut cmd = Command::new(self.venv.join("bin/meltano"));
        cmd.args(args)
            .current_dir(&self.root)
            .env(
                "PATH",
                support::path_with(&[&support::bin_dir(), &self.venv.join("bin")]),
            )
            .env("NO_COLOR", "1");
        // Nothing from the caller's shell leaks in, and nothing leaves the machine.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("TAP_ROSTER_")
                || key.starts_with("TARGET_ROSTER_")
                || key.starts_with("MELTANO_")
            {
                cmd.env_remove(key.as_ref());
            }
        }
        cmd.env("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false");
        for (k, v) in &self.base_urls {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        support::run(&mut cmd, MELTANO_TIMEOUT)
    }
}

fn meltano_venv() -> Option<PathBuf> {
    let venv = support::venv("meltano", MELTANO);
    if venv.is_none() {
        support::skip_or_fail("python3 with venv is needed for Meltano");
    }
    venv
}

/// `{plugin: {setting: {kind, sensitive, options}}}` from the project's meltano.yml, read with
/// the PyYAML that Meltano's virtualenv carries.
fn declared_settings(venv: &Path) -> Value {
    let script = r#"
import json, sys, yaml
project = yaml.safe_load(open(sys.argv[1]))
out = {}
for kind in ("extractors", "loaders"):
    for p in project["plugins"][kind]:
        out[p["name"]] = {
            s["name"]: {
                "kind": s.get("kind", "string"),
                "sensitive": bool(s.get("sensitive", False)),
                "options": [o["value"] for o in s.get("options", [])],
            }
            for s in p.get("settings", [])
        }
        out[p["name"]]["__capabilities"] = p.get("capabilities", [])
        out[p["name"]]["__executable"] = p.get("executable")
        out[p["name"]]["__pip_url"] = p.get("pip_url")
print(json.dumps(out))
"#;
    let yml = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/meltano/meltano.yml");
    let out = support::run(
        Command::new(venv.join("bin/python"))
            .args(["-c", script])
            .arg(yml),
        MELTANO_TIMEOUT,
    );
    out.assert_success("reading meltano.yml");
    serde_json::from_str(&out.stdout).unwrap()
}

/// The Meltano setting kind for a JSON Schema property of `--about`.
fn kind_of(property: &Value) -> &'static str {
    if property.get("enum").is_some() {
        return "options";
    }
    match property["type"].as_str() {
        Some("integer") => "integer",
        Some("number") => "decimal",
        Some("boolean") => "boolean",
        Some("object") => "object",
        Some("array") => "array",
        _ => "string",
    }
}

#[test]
fn meltano_yml_declares_what_about_prints_and_meltano_redacts_the_secrets() {
    let Some(venv) = meltano_venv() else { return };
    let declared = declared_settings(&venv);
    for (plugin, binary, applies) in [
        ("tap-roster", env!("CARGO_BIN_EXE_tap-roster"), Applies::Tap),
        (
            "target-roster",
            env!("CARGO_BIN_EXE_target-roster"),
            Applies::Target,
        ),
    ] {
        // The tap's --about lists every vendor's keys; the project declares the ones of the
        // vendors the tap can read.
        let vendors: Vec<&VendorSpec> = REGISTRY
            .iter()
            .copied()
            .filter(|s| applies == Applies::Target || s.listable())
            .collect();
        let relevant: BTreeSet<&str> = vendors
            .iter()
            .flat_map(|s| s.all_settings(applies))
            .map(|s| s.name)
            .collect();
        let vendor_names: Vec<&str> = vendors.iter().map(|s| s.name).collect();
        let about = support::run(
            Command::new(binary).args(["--about", "--format", "json"]),
            MELTANO_TIMEOUT,
        );
        about.assert_success(&format!("{plugin} --about"));
        let about: Value = serde_json::from_str(&about.stdout).unwrap();
        let mut ours = declared[plugin].as_object().unwrap().clone();
        assert_eq!(
            ours.remove("__capabilities").unwrap(),
            about["capabilities"],
            "{plugin}: capabilities"
        );
        assert_eq!(
            ours.remove("__executable").unwrap(),
            json!(plugin),
            "{plugin}: executable on PATH"
        );
        assert_eq!(
            ours.remove("__pip_url").unwrap(),
            Value::Null,
            "{plugin}: no pip_url"
        );
        let properties: BTreeMap<&String, &Value> = about["settings"]["properties"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(name, _)| relevant.contains(name.as_str()))
            .collect();
        assert_eq!(
            ours.keys().collect::<BTreeSet<_>>(),
            properties.keys().copied().collect::<BTreeSet<_>>(),
            "{plugin}: meltano.yml settings vs --about (keep samples/meltano/meltano.yml in step)"
        );
        for (name, property) in properties {
            let setting = &ours[name.as_str()];
            assert_eq!(setting["kind"], kind_of(property), "{plugin}.{name}: kind");
            assert_eq!(
                setting["sensitive"],
                json!(property["secret"] == json!(true)),
                "{plugin}.{name}: sensitive exactly when --about marks it secret"
            );
            let options: Vec<Value> = property
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let options: Vec<Value> = if name == "vendor" {
                vendor_names.iter().map(|n| json!(n)).collect()
            } else {
                options
            };
            assert_eq!(
                setting["options"],
                json!(options),
                "{plugin}.{name}: options"
            );
        }
    }

    // Meltano shows the secrets from .env redacted, and the plain settings as they are.
    let sb = Sandbox::builder()
        .users(1)
        .groups(1)
        .start_background()
        .unwrap();
    let project = Project::new(venv, &sb);
    let listed = project.meltano(
        &["--environment=dev", "config", "list", "target-roster"],
        &[],
    );
    listed.assert_success("meltano config list target-roster");
    let printed = project.meltano(
        &["--environment=dev", "config", "print", "target-roster"],
        &[],
    );
    printed.assert_success("meltano config print target-roster");
    let config: Value = serde_json::from_str(printed.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}", printed.both()));
    assert_eq!(config["vendor"], "appcues");
    assert_eq!(config["account_id"], "10001");
    assert_eq!(config["base_url"], sb.base_url(Vendor::Appcues));
    for secret in ["sandbox-appcues-key", "sandbox-appcues-secret"] {
        for out in [&listed, &printed] {
            assert!(
                !out.both().contains(secret),
                "meltano showed {secret}:\n{}",
                out.both()
            );
        }
    }
    // `print` masks a sensitive value with asterisks, `list` says "(redacted)".
    for key in ["api_key", "api_secret"] {
        assert!(
            config[key]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.chars().all(|c| c == '*')),
            "{key}: {config}"
        );
        assert!(
            listed
                .stdout
                .lines()
                .any(|l| l.starts_with(key) && l.contains("(redacted)")),
            "{key}:\n{}",
            listed.both()
        );
    }
}
