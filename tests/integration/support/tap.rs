//! The tap's runs: `tap-roster` against a sandbox to the end ([`tap`], [`sync`]) or killed
//! partway through a sync ([`sync_killed_after`]), the protocol checks on what it printed, and
//! catalogs with explicit selection. What the sandbox holds is in [`super::holdings`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use super::bin;
use super::files::Files;
pub use super::holdings::Holdings;
use super::holdings::record_key;
pub use super::singer::{records, states};

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

fn command(config: &Path, args: &[&str]) -> Command {
    bin::tap().config(config).args(args).command()
}

/// Runs `tap-roster --config <config> <args>` to the end.
pub fn tap(config: &Value, args: &[&str]) -> Run {
    let files = Files::new();
    let path = files.json("config.json", config);
    let out = bin::tap().config(&path).args(args).output();
    Run {
        messages: super::singer::messages(&String::from_utf8(out.stdout).unwrap()),
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
