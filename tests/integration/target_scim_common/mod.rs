//! Helpers for the provisioning tests (Guru REST, SCIM against roster-sandbox, SCIM against
//! scim2-server): Singer input, running target-roster, reading its states and rejects, and a
//! proxy that creates a conflicting user right before the writer's POST (a deterministic race,
//! so a real server answers 409).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// Singer input, one message per line.
#[derive(Debug, Default, Clone)]
pub struct Input(pub Vec<String>);

impl Input {
    pub fn new() -> Self {
        Self::default()
    }

    /// A SCHEMA for `stream` with the given key properties (string-typed open schema).
    pub fn schema(mut self, stream: &str, keys: &[&str]) -> Self {
        self.0.push(
            json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": keys})
                .to_string(),
        );
        self
    }

    pub fn record(mut self, stream: &str, record: Value) -> Self {
        self.0
            .push(json!({"type": "RECORD", "stream": stream, "record": record}).to_string());
        self
    }

    pub fn state(mut self, value: Value) -> Self {
        self.0
            .push(json!({"type": "STATE", "value": value}).to_string());
        self
    }

    pub fn text(&self) -> String {
        let mut s = self.0.join("\n");
        s.push('\n');
        s
    }
}

/// What one target run left behind.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub states: Vec<Value>,
    pub stderr: String,
    pub rejects: Vec<Value>,
}

impl Run {
    /// Panics with the run's stderr unless it exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "target-roster failed:\n{}", self.stderr);
        self
    }

    /// The reject (a RECORD line of the reject file) whose record has this value at `field`.
    pub fn reject_for(&self, field: &str, value: &str) -> Option<&Value> {
        self.rejects
            .iter()
            .find(|r| r["record"][field].as_str() == Some(value))
    }

    /// Why the record with this value at `field` was rejected.
    pub fn reason_for(&self, field: &str, value: &str) -> String {
        let reject = self
            .reject_for(field, value)
            .unwrap_or_else(|| panic!("no reject for {field} {value}: {:?}", self.rejects));
        reject["reject"]["reason"].as_str().unwrap().to_string()
    }
}

fn write_config(dir: &Path, config: &Value) -> (PathBuf, PathBuf) {
    let rejects = dir.join("rejects.ndjson");
    let mut config = config.clone();
    config["reject_file"] = json!(rejects.to_str().unwrap());
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    (path, rejects)
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn command(config: &Path, input: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_target-roster"));
    cmd.arg("--config")
        .arg(config)
        .arg("--input")
        .arg(input)
        .env("ROSTER_ZERO_DELAYS", "1")
        .env("ROSTER_LOG", "info");
    cmd
}

/// Runs target-roster with `config` (a reject file is added) on `input`.
pub fn target(config: &Value, input: &Input) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, rejects) = write_config(dir.path(), config);
    let input_path = dir.path().join("input.jsonl");
    std::fs::write(&input_path, input.text()).unwrap();
    let out = command(&config_path, &input_path).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        states: String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        rejects: read_lines(&rejects)
            .into_iter()
            .filter(|l| l["type"] == json!("RECORD"))
            .collect(),
    }
}

/// Runs target-roster and kills it (SIGKILL) as soon as it has printed `states` state lines
/// (or lets it finish if it ends first). Returns the states it printed.
pub fn target_killed_after(config: &Value, input: &Input, states: usize) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let (config_path, _) = write_config(dir.path(), config);
    let input_path = dir.path().join("input.jsonl");
    std::fs::write(&input_path, input.text()).unwrap();
    let mut child = command(&config_path, &input_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        seen.push(serde_json::from_str(&line).unwrap());
        if seen.len() >= states {
            let _ = child.kill();
            break;
        }
    }
    let _ = child.wait();
    seen
}

/// The records of `input` after the one whose state is `state` (a tap resuming from it), or
/// all of them without a state. States in the input must be `{"n": <record count so far>}`.
pub fn resume_after(input: &Input, state: Option<&Value>) -> Input {
    let done = state.and_then(|s| s["n"].as_u64()).unwrap_or(0) as usize;
    let mut out = Input::new();
    let mut records = 0;
    for line in &input.0 {
        let message: Value = serde_json::from_str(line).unwrap();
        match message["type"].as_str() {
            Some("RECORD") => {
                records += 1;
                if records > done {
                    out.0.push(line.clone());
                }
            }
            Some("STATE") if records >= done => out.0.push(line.clone()),
            Some("SCHEMA") => out.0.push(line.clone()),
            _ => {}
        }
    }
    out
}

/// When a [`RaceProxy`] acts: the first request with this method whose path (after the SCIM
/// base) starts with `path`, and, when given, whose body's `userName` is this (any case).
#[derive(Debug, Clone)]
pub struct Trigger {
    pub method: &'static str,
    pub path: &'static str,
    pub user_name: Option<String>,
}

impl Trigger {
    /// The first `POST /Users` for `user_name`.
    pub fn create_of(user_name: &str) -> Self {
        Trigger {
            method: "POST",
            path: "/Users",
            user_name: Some(user_name.to_lowercase()),
        }
    }

    /// The first `PATCH /Groups/…`.
    pub fn group_patch() -> Self {
        Trigger {
            method: "PATCH",
            path: "/Groups/",
            user_name: None,
        }
    }
}

/// A proxy in front of a SCIM server that, right before forwarding the request `trigger`
/// names, sends its own requests (`actions`: method, path after the base, body) to the
/// server: someone else acting between the writer's lookups and its write, every time at the
/// same point. The answers to the actions are kept in `planted`.
#[derive(Debug)]
pub struct RaceProxy {
    pub base: String,
    pub planted: Arc<Mutex<Vec<Value>>>,
    _runtime: tokio::runtime::Runtime,
}

type Actions = Vec<(&'static str, String, Option<Value>)>;

impl RaceProxy {
    /// Proxies `upstream` (a SCIM base URL); actions authenticate with `authorization`.
    pub fn start(upstream: &str, authorization: &str, trigger: Trigger, actions: Actions) -> Self {
        use axum::body::Bytes;
        use axum::extract::Request;
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.trim_end_matches('/').to_string();
        let upstream_path = url::Url::parse(&upstream).unwrap().path().to_string();
        let base = format!("http://{addr}{upstream_path}");
        let pending = Arc::new(Mutex::new(Some(actions)));
        let planted = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new((
            upstream,
            upstream_path,
            authorization.to_string(),
            trigger,
            pending,
            planted.clone(),
            reqwest::Client::new(),
        ));
        let app = axum::Router::new().fallback(move |req: Request| {
            let shared = shared.clone();
            async move {
                let (upstream, upstream_path, auth, trigger, pending, planted, client) = &*shared;
                let (parts, body) = req.into_parts();
                let body: Bytes = axum::body::to_bytes(body, 16 << 20).await.unwrap();
                let path_and_query = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let rest = path_and_query
                    .strip_prefix(upstream_path.as_str())
                    .unwrap_or(&path_and_query)
                    .to_string();
                let fires = parts.method.as_str() == trigger.method
                    && rest.starts_with(trigger.path)
                    && trigger.user_name.as_ref().is_none_or(|want| {
                        let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        sent["userName"].as_str().unwrap_or_default().to_lowercase() == *want
                    });
                let actions = if fires {
                    pending.lock().unwrap().take()
                } else {
                    None
                };
                for (method, path, action_body) in actions.unwrap_or_default() {
                    let mut r = client
                        .request(
                            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                            format!("{upstream}{path}"),
                        )
                        .header("authorization", auth.as_str());
                    if let Some(b) = action_body {
                        r = r
                            .header("content-type", "application/scim+json")
                            .body(b.to_string());
                    }
                    let r = r.send().await.unwrap();
                    assert!(
                        r.status().is_success(),
                        "{method} {path} failed: {}",
                        r.status()
                    );
                    let answer = r.json::<Value>().await.unwrap_or(Value::Null);
                    planted.lock().unwrap().push(answer);
                }
                let mut forward = client.request(
                    reqwest::Method::from_bytes(parts.method.as_str().as_bytes()).unwrap(),
                    format!("{upstream}{rest}"),
                );
                for (name, value) in &parts.headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name.as_str(), value.as_bytes());
                    }
                }
                let answer = forward.body(body.to_vec()).send().await.unwrap();
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                let mut headers = axum::http::HeaderMap::new();
                for (name, value) in answer.headers() {
                    if let (Ok(n), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
                        axum::http::HeaderValue::from_bytes(value.as_bytes()),
                    ) && n != "content-length"
                        && n != "transfer-encoding"
                    {
                        headers.insert(n, v);
                    }
                }
                let bytes = answer.bytes().await.unwrap();
                let response: Response = (status, headers, bytes).into_response();
                response
            }
        });
        runtime.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        RaceProxy {
            base,
            planted,
            _runtime: runtime,
        }
    }

    /// Plants users (POST /Users bodies) right before the first POST for `user_name`.
    pub fn plant_users(
        upstream: &str,
        authorization: &str,
        user_name: &str,
        users: Vec<Value>,
    ) -> Self {
        let actions = users
            .into_iter()
            .map(|u| ("POST", "/Users".to_string(), Some(u)))
            .collect();
        Self::start(
            upstream,
            authorization,
            Trigger::create_of(user_name),
            actions,
        )
    }
}

/// Flushes and writes `text` to a file (for configs that need a file on disk).
pub fn write_file(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}
