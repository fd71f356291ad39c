//! Helpers shared by the tap's integration tests: run the real `tap-roster` binary against a
//! sandbox, read what it printed, check it against what the sandbox holds, and kill it
//! partway through a sync.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

/// What one run of the tap printed.
#[derive(Debug)]
pub struct Run {
    /// Every stdout line, parsed.
    pub messages: Vec<Value>,
    /// stderr.
    pub stderr: String,
    /// The exit code (`None` when killed).
    pub code: Option<i32>,
}

/// A directory with the files a run needs.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes `value` as `name` and returns its path.
    pub fn json(&self, name: &str, value: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
        path
    }
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tap-roster"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env("ROSTER_ZERO_DELAYS", "1")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `tap-roster --config <config> <args>` to the end.
pub fn tap(config: &Value, args: &[&str]) -> Run {
    let files = Files::new();
    let path = files.json("config.json", config);
    let out = command(&path, args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Run {
        messages: stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// Runs a sync with an optional state and catalog.
pub fn sync(config: &Value, state: Option<&Value>, catalog: Option<&Value>) -> Run {
    let files = Files::new();
    let mut args: Vec<String> = Vec::new();
    if let Some(state) = state {
        args.push("--state".into());
        args.push(files.json("state.json", state).display().to_string());
    }
    if let Some(catalog) = catalog {
        args.push("--catalog".into());
        args.push(files.json("catalog.json", catalog).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    tap(config, &args)
}

/// Starts a sync, reads its output until it has printed `states` STATE lines, and kills it
/// (SIGKILL) there. Returns the lines read (whole lines only) and whether the tap was still
/// running when killed.
pub fn sync_killed_after(
    config: &Value,
    state: Option<&Value>,
    states: usize,
) -> (Vec<Value>, bool) {
    let files = Files::new();
    let path = files.json("config.json", config);
    let mut args: Vec<String> = Vec::new();
    if let Some(state) = state {
        args.push("--state".into());
        args.push(files.json("state.json", state).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = command(&path, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut seen = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let message: Value = serde_json::from_str(&line).unwrap();
        let is_state = message["type"] == "STATE";
        lines.push(message);
        if is_state {
            seen += 1;
            if seen == states {
                break;
            }
        }
    }
    // The tap blocks on the full pipe now (nobody reads), so it is still mid-sync unless it
    // already finished.
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    (lines, running)
}

impl Run {
    /// Asserts a clean exit.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "tap failed: {}", self.stderr);
        self
    }

    /// The RECORD values of a stream, in order.
    pub fn records(&self, stream: &str) -> Vec<Value> {
        records(&self.messages, stream)
    }

    /// The STATE values, in order.
    pub fn states(&self) -> Vec<Value> {
        states(&self.messages)
    }
}

pub fn records(messages: &[Value], stream: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
        .map(|m| m["record"].clone())
        .collect()
}

pub fn states(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone())
        .collect()
}

/// Every RECORD is valid against its stream's SCHEMA (formats checked), has a `time_extracted`
/// in RFC 3339, follows its SCHEMA, and a STATE follows the last RECORD.
pub fn check_protocol(messages: &[Value]) {
    let mut validators = BTreeMap::new();
    let mut pending = false;
    for (at, m) in messages.iter().enumerate() {
        match m["type"].as_str().unwrap() {
            "SCHEMA" => {
                let stream = m["stream"].as_str().unwrap().to_string();
                let validator = jsonschema::options()
                    .should_validate_formats(true)
                    .build(&m["schema"])
                    .unwrap();
                assert!(!m["key_properties"].as_array().unwrap().is_empty());
                validators.insert(stream, validator);
            }
            "RECORD" => {
                let stream = m["stream"].as_str().unwrap();
                let validator = validators
                    .get(stream)
                    .unwrap_or_else(|| panic!("line {at}: RECORD of {stream} before its SCHEMA"));
                if let Err(err) = validator.validate(&m["record"]) {
                    panic!(
                        "line {at}: {stream} record does not fit its schema: {err}: {}",
                        m["record"]
                    );
                }
                let extracted = m["time_extracted"].as_str().expect("time_extracted");
                chrono::DateTime::parse_from_rfc3339(extracted).unwrap();
                pending = true;
            }
            "STATE" => pending = false,
            "ACTIVATE_VERSION" => {
                let stream = m["stream"].as_str().unwrap();
                assert!(
                    validators.contains_key(stream),
                    "line {at}: {m} before its SCHEMA"
                );
                assert!(m["version"].is_u64(), "line {at}: {m}");
            }
            other => panic!("unexpected message type {other}"),
        }
    }
    assert!(!pending, "records after the last STATE");
}

/// No record key twice within the run.
pub fn check_no_duplicates(messages: &[Value]) {
    let mut seen = BTreeSet::new();
    for m in messages.iter().filter(|m| m["type"] == "RECORD") {
        let key = record_key(m["stream"].as_str().unwrap(), &m["record"]);
        assert!(seen.insert(key.clone()), "emitted twice: {key:?}");
    }
}

/// The key of a record: `(stream, key values)`.
pub fn record_key(stream: &str, record: &Value) -> (String, String) {
    let key = match stream {
        "memberships" => format!(
            "{}|{}",
            record["group_id"].as_str().unwrap(),
            record["user_id"].as_str().unwrap()
        ),
        _ => record["id"].as_str().unwrap().to_string(),
    };
    (stream.to_string(), key)
}

/// The keys a sandbox vendor holds, per stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub memberships: BTreeSet<String>,
}

impl Holdings {
    /// What the sandbox holds for `vendor`.
    pub fn of(sb: &Sandbox, vendor: Vendor) -> Self {
        let dump = sb.dump(vendor);
        let mut h = Holdings::default();
        let s = |v: &Value| v.as_str().unwrap().to_string();
        match vendor {
            Vendor::Userflow => {
                for u in dump["users"].as_array().unwrap() {
                    h.users.insert(s(&u["id"]));
                    for m in u["memberships"].as_array().unwrap() {
                        h.memberships
                            .insert(format!("{}|{}", s(&m["group_id"]), s(&u["id"])));
                    }
                }
                for g in dump["groups"].as_array().unwrap() {
                    h.groups.insert(s(&g["id"]));
                }
            }
            Vendor::Guru => {
                for m in dump["members"].as_array().unwrap() {
                    h.users.insert(s(&m["user"]["email"]));
                }
                for g in dump["groups"].as_array().unwrap() {
                    h.groups.insert(s(&g["id"]));
                    for email in g["members"].as_array().unwrap() {
                        h.memberships
                            .insert(format!("{}|{}", s(&g["id"]), s(email)));
                    }
                }
            }
            Vendor::GuruScim | Vendor::Scim => {
                for u in dump["Users"].as_array().unwrap() {
                    h.users.insert(s(&u["id"]));
                }
                for g in dump["Groups"].as_array().unwrap() {
                    h.groups.insert(s(&g["id"]));
                    for m in g["members"].as_array().into_iter().flatten() {
                        h.memberships
                            .insert(format!("{}|{}", s(&g["id"]), s(&m["value"])));
                    }
                }
            }
            other => panic!("{other} is not listable"),
        }
        h
    }

    /// The keys found in tap output, per stream.
    pub fn from_messages(messages: &[Value]) -> Self {
        let mut h = Holdings::default();
        for m in messages.iter().filter(|m| m["type"] == "RECORD") {
            let stream = m["stream"].as_str().unwrap();
            let (_, key) = record_key(stream, &m["record"]);
            match stream {
                "users" => h.users.insert(key),
                "groups" => h.groups.insert(key),
                "memberships" => h.memberships.insert(key),
                other => panic!("unexpected stream {other}"),
            };
        }
        h
    }

    /// A short summary for assertion messages.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.users.len(), self.groups.len(), self.memberships.len())
    }
}

/// A catalog from `--discover` with Meltano-style explicit `selected` on every node:
/// `streams` selected (all properties), the others deselected, and `deselect` properties off.
pub fn catalog(config: &Value, streams: &[&str], deselect: &[(&str, &str)]) -> Value {
    let run = tap(config, &["--discover"]).ok();
    let mut catalog = run.messages[0].clone();
    for entry in catalog["streams"].as_array_mut().unwrap() {
        let name = entry["stream"].as_str().unwrap().to_string();
        for meta in entry["metadata"].as_array_mut().unwrap() {
            let crumb = meta["breadcrumb"].as_array().unwrap().clone();
            let selected = if crumb.is_empty() {
                streams.contains(&name.as_str())
            } else {
                streams.contains(&name.as_str())
                    && !deselect
                        .iter()
                        .any(|(s, p)| *s == name && crumb[1] == json!(p))
            };
            meta["metadata"]["selected"] = json!(selected);
        }
    }
    catalog
}
