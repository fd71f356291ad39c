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

mod definitions;
mod projects;

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
