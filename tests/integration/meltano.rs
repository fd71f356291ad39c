//! roster under Meltano: the projects in `samples/meltano/` and `samples/meltano-vendors/`, run
//! by Meltano 4.4.1 from PyPI.
//!
//! The test installs Meltano in a virtualenv, starts a seeded sandbox in-process on a free port,
//! copies the project to a temporary directory with `.env` from `.env.example` (the sandbox's
//! credentials, as the README says), and points `base_url` at the sandbox through
//! `TAP_ROSTER_BASE_URL` / `TARGET_ROSTER_BASE_URL`. The project's `pip_url` points at this
//! checkout; in the copy it points at roster's wheel built from it (`support::wheel`, the
//! artefact `pip install <checkout>` builds, built once for every test), and `meltano install`
//! installs both plugins from it on day one, as a new user does. roster's binaries are not on
//! PATH: Meltano runs the ones it installed. Then, as the README's `## Meltano` section does:
//!
//! 1. `meltano run tap-roster target-roster` (Userflow → Appcues) is cut short: the sandbox lets
//!    one Userflow request through per hour and the tap may not retry (`TAP_ROSTER_MAX_RETRIES=0`
//!    for this run only), so the tap fails after its first page. Meltano keeps the state the
//!    target printed, and `meltano state get` must show the users bookmark mid-way; Appcues must
//!    already hold every user that bookmark covers (the target prints a state only after the
//!    vendor accepted what came before it).
//! 2. The limit is lifted and `meltano run` runs again: the tap's first Userflow request must
//!    carry that bookmark as its cursor (seen in the sandbox's request log), the run succeeds,
//!    and Appcues holds every Userflow user, group and membership; the state now marks every
//!    stream completed.
//! 3. A third run starts over (completed streams are read again) and changes nothing in Appcues.
//! 4. `meltano config test target-roster`, the loader test. In Meltano 4.4.1 it ends in
//!    `ProcessLookupError` for every target that exits by itself, because its `finally:`
//!    terminates the already finished process (a `cat >/dev/null` target fails the same way), so
//!    the test requires the line Meltano logs only after the target exited 0 with no "error" or
//!    "exception" in its output: "Test data was written to your target system".
//!
//! A second test checks that both projects' `meltano.yml` and the Hub-style definitions in
//! `meltano-hub/` declare exactly the settings `--about` prints, with `sensitive: true` on every
//! secret and one `settings_group_validation` group per vendor's credentials, and that Meltano
//! redacts the secrets. A third runs the several-vendors project (`inherit_from`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::{self, bin};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use roster::config::Applies;
use roster::vendors::{REGISTRY, VendorSpec};
use roster_sandbox::{RateLimit, Sandbox, Vendor};
use serde_json::{Value, json};

/// Pinned: the loader-test workaround below is specific to this version.
const MELTANO: &[&str] = &["meltano==4.4.1"];

/// One Meltano command: it starts slowly, and a debug build on a loaded machine is slow too.
const MELTANO_TIMEOUT: Duration = Duration::from_secs(600);

/// The state id `meltano run` uses in the `dev` environment.
const STATE_ID: &str = "dev:tap-roster-to-target-roster";

/// Several Userflow pages (the tap asks for 100 per page).
const USERS: usize = 250;
const GROUPS: usize = 12;

/// The `pip_url` of both sample projects: the checkout two levels up (where pyproject.toml is).
const SAMPLE_PIP_URL: &str = "$MELTANO_PROJECT_ROOT/../..";

/// The `pip_url` placeholder of the Hub-style definitions, replaced when they are published.
const HUB_PIP_URL: &str = "git+https://<roster-repository-url>";

/// A sample project, copied to a temporary directory.
struct Project {
    _dir: tempfile::TempDir,
    root: PathBuf,
    venv: PathBuf,
    base_urls: Vec<(String, String)>,
}

impl Project {
    /// `samples/meltano/`, pointed at the sandbox's Userflow and Appcues.
    fn new(venv: PathBuf, sb: &Sandbox, wheel: Option<&Path>) -> Project {
        Project::copy(
            "meltano",
            venv,
            wheel,
            vec![
                ("TAP_ROSTER_BASE_URL".into(), sb.base_url(Vendor::Userflow)),
                (
                    "TARGET_ROSTER_BASE_URL".into(),
                    sb.base_url(Vendor::Appcues),
                ),
            ],
        )
    }

    /// `samples/<sample>/` in a temporary directory, with `.env` from `.env.example`, `pip_url`
    /// pointing at `wheel` (if given), and `base_urls` in Meltano's environment.
    fn copy(
        sample: &str,
        venv: PathBuf,
        wheel: Option<&Path>,
        base_urls: Vec<(String, String)>,
    ) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(sample);
        let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("samples")
            .join(sample);
        support::copy_tree(&sample, &root, &[".meltano", "output", ".env"]);
        // The README's step: the sandbox's credentials go to .env, where Meltano reads them.
        std::fs::copy(root.join(".env.example"), root.join(".env")).unwrap();
        // The sample's pip_url is this checkout; the copy is elsewhere, so it installs the
        // wheel that `pip install <checkout>` builds (the same artefact, built once).
        let yml = std::fs::read_to_string(root.join("meltano.yml")).unwrap();
        let line = format!("pip_url: {SAMPLE_PIP_URL}\n");
        assert_eq!(
            yml.matches(&line).count(),
            2,
            "{sample:?}: pip_url of both plugins"
        );
        assert!(
            sample.join("../../pyproject.toml").is_file(),
            "{SAMPLE_PIP_URL} from {sample:?} is the checkout"
        );
        if let Some(wheel) = wheel {
            let yml = yml.replace(&line, &format!("pip_url: {}\n", wheel.display()));
            std::fs::write(root.join("meltano.yml"), yml).unwrap();
        }
        Project {
            _dir: dir,
            root,
            venv,
            base_urls,
        }
    }

    /// `meltano install`: every plugin from the wheel, into Meltano's own virtualenvs.
    fn install(&self, plugins: &[&str]) {
        self.meltano(&["install"], &[])
            .assert_success("meltano install");
        for plugin in plugins {
            let kind = if plugin.starts_with("tap-") {
                "extractors"
            } else {
                "loaders"
            };
            let exe = self
                .root
                .join(".meltano")
                .join(kind)
                .join(plugin)
                .join("venv/bin")
                .join(plugin);
            assert!(exe.is_file(), "meltano install put {plugin} in {exe:?}");
        }
    }

    /// `meltano <args>` in the project. roster's binaries are not on PATH: Meltano runs the ones
    /// `meltano install` put in its plugins' virtualenvs.
    fn meltano(&self, args: &[&str], env: &[(&str, &str)]) -> support::Finished {
        let mut cmd = Command::new(self.venv.join("bin/meltano"));
        cmd.args(args)
            .current_dir(&self.root)
            .env("PATH", support::path_with(&[&self.venv.join("bin")]))
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

    /// `meltano state get`: the stored Singer state, unwrapped from `singer_state`.
    fn state(&self) -> Value {
        let got = self.meltano(&["state", "get", STATE_ID], &[]);
        got.assert_success("meltano state get");
        let stored: Value = serde_json::from_str(got.stdout.trim())
            .unwrap_or_else(|e| panic!("meltano state get printed no JSON ({e}):\n{}", got.both()));
        stored["singer_state"].clone()
    }
}

/// Users (key → email), groups, and (group, user) memberships.
type People = (
    BTreeMap<String, String>,
    BTreeSet<String>,
    BTreeSet<(String, String)>,
);

/// What Userflow holds: user → email, groups, (group, user) memberships.
fn userflow_people(sb: &Sandbox) -> People {
    let dump = sb.dump(Vendor::Userflow);
    let mut users = BTreeMap::new();
    let mut memberships = BTreeSet::new();
    for u in dump["users"].as_array().unwrap() {
        let id = u["id"].as_str().unwrap().to_string();
        users.insert(
            id.clone(),
            u["attributes"]["email"].as_str().unwrap().to_string(),
        );
        for m in u["memberships"].as_array().unwrap() {
            memberships.insert((m["group_id"].as_str().unwrap().to_string(), id.clone()));
        }
    }
    let groups = dump["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect();
    (users, groups, memberships)
}

/// What Appcues holds: user → email, groups, (group, user) memberships.
fn appcues_people(sb: &Sandbox) -> People {
    let dump = sb.dump(Vendor::Appcues);
    let users = dump["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["user_id"].as_str().unwrap().to_string(),
                u["email"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut groups = BTreeSet::new();
    let mut memberships = BTreeSet::new();
    for g in dump["groups"].as_array().unwrap() {
        let id = g["group_id"].as_str().unwrap().to_string();
        for u in g["user_ids"].as_array().unwrap() {
            memberships.insert((id.clone(), u.as_str().unwrap().to_string()));
        }
        groups.insert(id);
    }
    (users, groups, memberships)
}

/// The `starting_after` cursor of each tap request for Userflow users, in order.
fn userflow_user_cursors(sb: &Sandbox) -> Vec<Option<String>> {
    sb.requests()
        .iter()
        .filter(|r| {
            r.vendor == Some(Vendor::Userflow) && r.method == "GET" && r.path == "/userflow/users"
        })
        .map(|r| {
            url::form_urlencoded::parse(r.query.as_deref().unwrap_or_default().as_bytes())
                .find(|(k, _)| k == "starting_after")
                .map(|(_, v)| v.into_owned())
        })
        .collect()
}

fn meltano_venv() -> Option<PathBuf> {
    let venv = support::venv("meltano", MELTANO);
    if venv.is_none() {
        support::skip_or_fail("python3 with venv is needed for Meltano");
    }
    venv
}

fn wheel() -> Option<PathBuf> {
    let wheel = support::wheel();
    if wheel.is_none() {
        support::skip_or_fail("python3 with venv is needed to build roster's wheel");
    }
    wheel
}

#[test]
fn meltano_installs_from_the_wheel_runs_userflow_to_appcues_resumes_from_its_state_and_tests_the_loader()
 {
    let Some(venv) = meltano_venv() else { return };
    let Some(wheel) = wheel() else { return };
    let sb = Sandbox::builder()
        .seed(7)
        .users(USERS)
        .groups(GROUPS)
        .start_background()
        .unwrap();
    let project = Project::new(venv, &sb, Some(&wheel));
    // 0. Day one: `meltano install` in the fresh project.
    project.install(&["tap-roster", "target-roster"]);
    let (uf_users, uf_groups, uf_memberships) = userflow_people(&sb);
    assert_eq!(uf_users.len(), USERS);

    // 1. Cut short after the first users page: two Userflow requests an hour (the groups
    // listing, which comes first, then one users page), and no retries.
    sb.faults().set_rate_limit(
        Vendor::Userflow,
        Some(RateLimit::parse("2/h,burst=2").unwrap()),
    );
    let first = project.meltano(
        &["run", "tap-roster", "target-roster"],
        &[("TAP_ROSTER_MAX_RETRIES", "0")],
    );
    assert!(
        !first.success(),
        "the cut-short run must fail:\n{}",
        first.both()
    );
    let all = first.both();
    assert!(
        all.contains("429") && all.contains("/userflow/users"),
        "the tap names the refused request:\n{all}"
    );
    let state = project.state();
    let cursor = state["bookmarks"]["users"]["next_page"]
        .as_str()
        .unwrap_or_else(|| panic!("no users bookmark mid-way in the stored state: {state}"))
        .to_string();
    assert_eq!(state["currently_syncing"], "users", "{state}");
    // The state is printed only after the vendor accepted what came before it: every user up to
    // the cursor (Userflow pages by ascending creation, ids follow it) is in Appcues already.
    let (ac_users, _, _) = appcues_people(&sb);
    let covered: Vec<&String> = uf_users.keys().filter(|id| **id <= cursor).collect();
    assert!(
        !covered.is_empty() && covered.len() < USERS,
        "cursor {cursor}"
    );
    for id in &covered {
        assert_eq!(
            ac_users.get(*id),
            uf_users.get(*id),
            "{id} is covered by the stored state"
        );
    }
    assert_eq!(
        userflow_user_cursors(&sb),
        [None, Some(cursor.clone())],
        "requests of the first run"
    );

    // 2. The limit lifted: the run resumes at the bookmark and finishes.
    sb.faults().set_rate_limit(Vendor::Userflow, None);
    sb.clear_requests();
    let second = project.meltano(&["run", "tap-roster", "target-roster"], &[]);
    second.assert_success("the resumed meltano run");
    let cursors = userflow_user_cursors(&sb);
    assert_eq!(
        cursors.first(),
        Some(&Some(cursor.clone())),
        "the resumed run starts at the bookmark: {cursors:?}"
    );
    assert!(
        cursors.iter().all(Option::is_some),
        "no request from the beginning: {cursors:?}"
    );
    let (ac_users, ac_groups, ac_memberships) = appcues_people(&sb);
    assert_eq!(
        ac_users, uf_users,
        "Appcues holds every Userflow user with its email"
    );
    assert_eq!(ac_groups, uf_groups, "Appcues holds every Userflow group");
    assert_eq!(
        ac_memberships, uf_memberships,
        "Appcues holds every membership"
    );
    let state = project.state();
    for stream in ["users", "groups", "memberships"] {
        let bookmark = &state["bookmarks"][stream];
        assert!(
            bookmark["completed_at"].is_string() && bookmark.get("next_page").is_none(),
            "{stream} is completed in the stored state: {state}"
        );
    }
    assert_eq!(state["currently_syncing"], Value::Null, "{state}");

    // 3. Completed streams are read again from the start; upserts change nothing.
    let before = sb.dump(Vendor::Appcues);
    sb.clear_requests();
    project
        .meltano(&["run", "tap-roster", "target-roster"], &[])
        .assert_success("the third meltano run");
    assert_eq!(
        userflow_user_cursors(&sb).first(),
        Some(&None),
        "a completed stream starts over"
    );
    assert_eq!(appcues_people(&sb), (uf_users, uf_groups, uf_memberships));
    assert_eq!(
        sb.dump(Vendor::Appcues)["users"],
        before["users"],
        "the same profiles again"
    );

    // 4. The loader test (see the module doc for Meltano 4.4.1's crash after it).
    let test = project.meltano(
        &["--environment=dev", "config", "test", "target-roster"],
        &[],
    );
    let all = test.both();
    assert!(
        all.contains("Test data was written to your target system"),
        "the loader test did not pass:\n{all}"
    );
    if !test.success() {
        assert!(
            all.contains("ProcessLookupError"),
            "the loader test failed for a reason other than Meltano 4.4.1's known crash:\n{all}"
        );
    }
}

/// The plugin definitions in `file` (a project's meltano.yml, or a Hub-style definition of one
/// plugin), read with the PyYAML that Meltano's virtualenv carries:
/// `{"plugins": {name: {setting: {kind, sensitive, options}, __capabilities, __executable,
/// __pip_url, __groups}}, "inherits": {name: {from, config}}}`.
fn declared_settings(venv: &Path, file: &Path) -> Value {
    let script = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
if "plugins" in doc:
    plugins = [p for kind in ("extractors", "loaders") for p in doc["plugins"].get(kind, [])]
else:
    plugins = [doc]
out = {}
inherits = {}
for p in plugins:
    if "inherit_from" in p:
        inherits[p["name"]] = {"from": p["inherit_from"], "config": p.get("config", {})}
        continue
    out[p["name"]] = {
        s["name"]: {
            "kind": s.get("kind", "string"),
            "sensitive": bool(s.get("sensitive", False)),
            "options": [o["value"] for o in s.get("options", [])],
            "description": s.get("description"),
        }
        for s in p.get("settings", [])
    }
    out[p["name"]]["__capabilities"] = p.get("capabilities", [])
    out[p["name"]]["__executable"] = p.get("executable")
    out[p["name"]]["__pip_url"] = p.get("pip_url")
    out[p["name"]]["__groups"] = p.get("settings_group_validation", [])
print(json.dumps({"plugins": out, "inherits": inherits}))
"#;
    let out = support::run(
        Command::new(venv.join("bin/python"))
            .args(["-c", script])
            .arg(file),
        MELTANO_TIMEOUT,
    );
    out.assert_success(&format!("reading {}", file.display()));
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

/// The `settings_group_validation` groups `--about`'s settings call for: per vendor, `vendor`
/// and its required keys (the `allOf` clauses), plus the two ways to sign in to a SCIM 2.0
/// provider, which `--about` cannot mark required because either one will do (docs/tap.md).
fn expected_groups(about: &Value, vendors: &[&str]) -> BTreeSet<Vec<String>> {
    let mut groups: BTreeSet<Vec<String>> = about["settings"]["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| vendors.contains(&c["if"]["properties"]["vendor"]["const"].as_str().unwrap()))
        .filter_map(|c| {
            let required = c["then"]["required"].as_array().unwrap();
            (!required.is_empty()).then(|| {
                let mut group: Vec<String> = std::iter::once("vendor".to_string())
                    .chain(required.iter().map(|k| k.as_str().unwrap().to_string()))
                    .collect();
                group.sort();
                group
            })
        })
        .collect();
    if vendors.contains(&"scim") {
        groups.insert(vec!["bearer_token".into(), "vendor".into()]);
        groups.insert(vec!["password".into(), "username".into(), "vendor".into()]);
    }
    groups
}

/// Checks the definitions of tap-roster and target-roster in `file` against `--about`.
fn check_definitions(venv: &Path, file: &Path, pip_url: &str) -> Value {
    let declared = declared_settings(venv, file);
    let at = file.display();
    for (plugin, binary, applies) in [
        ("tap-roster", bin::TAP, Applies::Tap),
        ("target-roster", bin::TARGET, Applies::Target),
    ] {
        let Some(ours) = declared["plugins"][plugin].as_object() else {
            continue;
        };
        let mut ours = ours.clone();
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
        let about = bin::Bin::new(binary)
            .args(["--about", "--format", "json"])
            .run(MELTANO_TIMEOUT);
        about.assert_success(&format!("{plugin} --about"));
        let about: Value = serde_json::from_str(&about.stdout).unwrap();
        assert_eq!(
            ours.remove("__capabilities").unwrap(),
            about["capabilities"],
            "{at}: {plugin}: capabilities"
        );
        assert_eq!(
            ours.remove("__executable").unwrap(),
            json!(plugin),
            "{at}: {plugin}: executable"
        );
        assert_eq!(
            ours.remove("__pip_url").unwrap(),
            json!(pip_url),
            "{at}: {plugin}: pip_url"
        );
        let groups: BTreeSet<Vec<String>> = ours
            .remove("__groups")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                let mut g: Vec<String> = g
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|k| k.as_str().unwrap().to_string())
                    .collect();
                g.sort();
                g
            })
            .collect();
        assert_eq!(
            groups,
            expected_groups(&about, &vendor_names),
            "{at}: {plugin}: settings_group_validation, one group per vendor's credentials"
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
            "{at}: {plugin}: settings vs --about"
        );
        for (name, property) in properties {
            let setting = &ours[name.as_str()];
            assert_eq!(
                setting["kind"],
                kind_of(property),
                "{at}: {plugin}.{name}: kind"
            );
            assert_eq!(
                setting["sensitive"],
                json!(property["secret"] == json!(true)),
                "{at}: {plugin}.{name}: sensitive exactly when --about marks it secret"
            );
            assert!(
                setting["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{at}: {plugin}.{name}: a description"
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
                "{at}: {plugin}.{name}: options"
            );
        }
    }
    declared
}

#[test]
fn meltano_definitions_declare_what_about_prints_and_meltano_redacts_the_secrets() {
    let Some(venv) = meltano_venv() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sample in [
        "samples/meltano/meltano.yml",
        "samples/meltano-vendors/meltano.yml",
    ] {
        let declared = check_definitions(&venv, &root.join(sample), SAMPLE_PIP_URL);
        let plugins: BTreeSet<&String> = declared["plugins"].as_object().unwrap().keys().collect();
        assert_eq!(
            plugins,
            BTreeSet::from([&"tap-roster".to_string(), &"target-roster".to_string()]),
            "{sample}: both plugins defined"
        );
    }
    // The several-vendors project: one inheriting plugin per vendor, each naming its vendor.
    let declared = declared_settings(&venv, &root.join("samples/meltano-vendors/meltano.yml"));
    assert_eq!(
        declared["inherits"],
        json!({
            "tap-roster-userflow": {"from": "tap-roster", "config": {"vendor": "userflow"}},
            "tap-roster-scim": {"from": "tap-roster", "config": {"vendor": "scim"}},
            "target-roster-appcues": {"from": "target-roster", "config": {
                "vendor": "appcues",
                "reject_file": "$MELTANO_PROJECT_ROOT/output/appcues-rejects.ndjson"}},
            "target-roster-guru": {"from": "target-roster", "config": {
                "vendor": "guru",
                "reject_file": "$MELTANO_PROJECT_ROOT/output/guru-rejects.ndjson"}},
        })
    );
    for (file, plugin) in [
        ("meltano-hub/tap-roster.yml", "tap-roster"),
        ("meltano-hub/target-roster.yml", "target-roster"),
    ] {
        let declared = check_definitions(&venv, &root.join(file), HUB_PIP_URL);
        assert!(declared["plugins"][plugin].is_object(), "{file}");
    }

    // Meltano shows the secrets from .env redacted, and the plain settings as they are.
    let sb = Sandbox::builder()
        .users(1)
        .groups(1)
        .start_background()
        .unwrap();
    let project = Project::new(venv.clone(), &sb, None);
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

    // The Hub definitions load in Meltano: `meltano add --from-ref` in a fresh project, and
    // `config list` shows each vendor's credential group.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("hub");
    support::run(
        Command::new(venv.join("bin/meltano"))
            .args(["init", "hub", "--no-usage-stats"])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .env("MELTANO_SEND_ANONYMOUS_USAGE_STATS", "false"),
        MELTANO_TIMEOUT,
    )
    .assert_success("meltano init");
    let hub = Project {
        _dir: dir,
        root,
        venv,
        base_urls: Vec::new(),
    };
    for (file, kind, plugin) in [
        ("meltano-hub/tap-roster.yml", "extractor", "tap-roster"),
        ("meltano-hub/target-roster.yml", "loader", "target-roster"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let path = path.to_str().unwrap();
        hub.meltano(
            &["add", "--from-ref", path, kind, plugin, "--no-install"],
            &[],
        )
        .assert_success(&format!("meltano add --from-ref {file}"));
        let listed = hub.meltano(&["config", "list", plugin], &[]);
        listed.assert_success(&format!("meltano config list {plugin}"));
        for group in ["bearer_token, vendor", "api_token, username, vendor"] {
            assert!(
                listed.stdout.contains(group),
                "{plugin}: group {group}:\n{}",
                listed.both()
            );
        }
    }
}

/// `samples/meltano-vendors/`: one install of each plugin, and per-vendor plugins inheriting
/// from them (Userflow → Appcues, SCIM → Guru), each with its own credentials. Meltano lists
/// each one's settings and vendor, and `meltano config test` passes for each, and fails, naming
/// the key, when a vendor's credential is missing. (Meltano 4.4.1 uses
/// `settings_group_validation` only to show the groups in `config list`; the missing key is
/// caught by roster's own check of its config, which `config test` runs.)
#[test]
fn meltano_project_with_several_vendors_inherits_one_install_and_tests_each_vendor() {
    let Some(venv) = meltano_venv() else { return };
    let Some(wheel) = wheel() else { return };
    let sb = Sandbox::builder()
        .users(3)
        .groups(2)
        .start_background()
        .unwrap();
    let project = Project::copy(
        "meltano-vendors",
        venv,
        Some(&wheel),
        vec![
            (
                "TAP_ROSTER_USERFLOW_BASE_URL".into(),
                sb.base_url(Vendor::Userflow),
            ),
            ("TAP_ROSTER_SCIM_BASE_URL".into(), sb.base_url(Vendor::Scim)),
            (
                "TARGET_ROSTER_APPCUES_BASE_URL".into(),
                sb.base_url(Vendor::Appcues),
            ),
            (
                "TARGET_ROSTER_GURU_BASE_URL".into(),
                sb.base_url(Vendor::Guru),
            ),
        ],
    );
    project.install(&["tap-roster", "target-roster"]);

    for (plugin, vendor) in [
        ("tap-roster-userflow", "userflow"),
        ("tap-roster-scim", "scim"),
        ("target-roster-appcues", "appcues"),
        ("target-roster-guru", "guru"),
    ] {
        let listed = project.meltano(&["--environment=dev", "config", "list", plugin], &[]);
        listed.assert_success(&format!("meltano config list {plugin}"));
        let out = &listed.stdout;
        assert!(
            out.contains("Setting groups (one of the following combinations is required)")
                && out.contains("bearer_token, vendor"),
            "{plugin}: the credential groups:\n{}",
            listed.both()
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("vendor ") && l.contains(&format!("'{vendor}'"))),
            "{plugin}: vendor {vendor}:\n{}",
            listed.both()
        );
    }
    for tap in ["tap-roster-userflow", "tap-roster-scim"] {
        let test = project.meltano(&["--environment=dev", "config", "test", tap], &[]);
        test.assert_success(&format!("meltano config test {tap}"));
        assert!(
            test.both().contains("Plugin configuration is valid"),
            "{tap}:\n{}",
            test.both()
        );
    }
    for target in ["target-roster-appcues", "target-roster-guru"] {
        let test = project.meltano(&["--environment=dev", "config", "test", target], &[]);
        let all = test.both();
        assert!(
            all.contains("Test data was written to your target system"),
            "{target}: the loader test did not pass:\n{all}"
        );
    }

    // The target's own connection test, through Meltano: the credentials reach Guru.
    project
        .meltano(
            &[
                "--environment=dev",
                "invoke",
                "target-roster-guru",
                "--test",
            ],
            &[],
        )
        .assert_success("meltano invoke target-roster-guru --test");

    // A missing credential, taken out of .env: Userflow's key and Guru's token.
    let env = std::fs::read_to_string(project.root.join(".env")).unwrap();
    let without: String = env
        .lines()
        .filter(|l| {
            !l.starts_with("TARGET_ROSTER_GURU_API_TOKEN=")
                && !l.starts_with("TAP_ROSTER_USERFLOW_API_KEY=")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        env.lines().count(),
        without.lines().count() + 2,
        ".env.example sets both"
    );
    std::fs::write(project.root.join(".env"), without).unwrap();
    let test = project.meltano(
        &["--environment=dev", "config", "test", "tap-roster-userflow"],
        &[],
    );
    let all = test.both();
    assert!(
        !test.success()
            && all.contains("api_key")
            && !all.contains("Plugin configuration is valid"),
        "the extractor test must fail and name the missing key:\n{all}"
    );
    // Meltano 4.4.1's loader test hides a failing target's words behind its ProcessLookupError
    // (see the module doc); the target's own test names the key.
    let test = project.meltano(
        &[
            "--environment=dev",
            "invoke",
            "target-roster-guru",
            "--test",
        ],
        &[],
    );
    let all = test.both();
    assert!(
        !test.success() && all.contains("api_token"),
        "the target's test must fail and name the missing key:\n{all}"
    );
}

/// Stream maps, the ecosystem's way: `meltano run tap-roster pro-users target-roster` puts
/// meltano-map-transformer (from PyPI, installed by `meltano install`) between the tap and the
/// target, with the sample's `pro-users` mapping: only the users on the pro plan, `name`
/// renamed to `full_name`, no groups or memberships. Appcues must hold exactly that.
#[test]
fn meltano_map_transformer_between_tap_and_target_filters_rows_and_renames_fields() {
    let Some(venv) = meltano_venv() else { return };
    let Some(wheel) = wheel() else { return };
    let sb = Sandbox::builder()
        .seed(7)
        .users(60)
        .groups(4)
        .start_background()
        .unwrap();
    let project = Project::new(venv, &sb, Some(&wheel));
    project.install(&["tap-roster", "target-roster"]);
    project
        .meltano(&["run", "tap-roster", "pro-users", "target-roster"], &[])
        .assert_success("meltano run tap-roster pro-users target-roster");

    let userflow = sb.dump(Vendor::Userflow);
    let pro: BTreeMap<String, Value> = userflow["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["attributes"]["plan"] == "pro")
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_string(),
                u["attributes"]["name"].clone(),
            )
        })
        .collect();
    assert!(
        !pro.is_empty() && pro.len() < 60,
        "the seed has pro users and others: {}",
        pro.len()
    );
    let appcues = sb.dump(Vendor::Appcues);
    let held: BTreeMap<String, &Value> = appcues["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user_id"].as_str().unwrap().to_string(), u))
        .collect();
    assert_eq!(
        held.keys().collect::<Vec<_>>(),
        pro.keys().collect::<Vec<_>>(),
        "Appcues holds exactly the pro users"
    );
    for (id, name) in &pro {
        let profile = held[id];
        assert_eq!(
            &profile["full_name"], name,
            "{id}: name renamed to full_name"
        );
        assert!(profile.get("name").is_none(), "{id}: no name: {profile}");
        assert_eq!(profile["plan"], "pro", "{id}");
    }
    assert_eq!(
        appcues["groups"],
        json!([]),
        "groups and memberships were mapped away"
    );
}
