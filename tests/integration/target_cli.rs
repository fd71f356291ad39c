//! target-roster's command line without a sandbox: `--dry-run`, the auth and version headers
//! each real-time writer puts on the wire (seen by a capturing server), and the US and EU
//! hosts. Malformed inputs live in the bad-input corpus (`tests/fixtures/bad/`, checked by
//! `tests/integration/bad_input.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use crate::support::bin;
use crate::support::files::write_text;

use serde_json::{Value, json};

fn target(dir: &Path, config: &Value, input: &[u8], extra: &[&str]) -> Output {
    let input_path = write_text(&dir.join("input.jsonl"), input);
    bin::target()
        .config_json(dir, config)
        .input(&input_path)
        .args(extra)
        .log("warn")
        .current_dir(dir)
        .output()
}

fn userflow() -> Value {
    json!({"vendor": "userflow", "api_key": "uf-secret-key", "base_url": "http://127.0.0.1:9/userflow"})
}

fn lines(path: &Path) -> Vec<Value> {
    crate::support::singer::messages(&std::fs::read_to_string(path).unwrap())
}

const USERS: &str = r#"{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":{"id":{"type":"string"},"email":{"type":["string","null"]}}},"key_properties":["id"]}"#;

#[test]
fn dry_run_writes_requests_rejects_and_the_would_be_state_and_prints_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "{USERS}\n{}\n{}\n{}\n{}\n",
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1","email":"a@x.io","plan":"pro","_sdc_extracted_at":"t"}}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u2","email":null,"_sdc_deleted_at":"2024-01-01T00:00:00Z"}}"#,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u3","email":7}}"#,
        r#"{"type":"STATE","value":{"bookmarks":{"users":{"next_page":"x"}}}}"#,
    );
    let out_path = dir.path().join("dry.ndjson");
    let report_path = dir.path().join("report.json");
    let out = target(
        dir.path(),
        &userflow(),
        input.as_bytes(),
        &[
            "--dry-run",
            "--dry-run-output",
            out_path.to_str().unwrap(),
            "--report",
            report_path.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "a dry run prints no state");
    let dry = lines(&out_path);
    assert_eq!(dry.len(), 4, "{dry:?}");
    // Requests go out concurrently with the engine's own rejects: compare as a set.
    assert!(
        dry.contains(&json!({"type": "request", "method": "POST",
        "url": "http://127.0.0.1:9/userflow/users", "path": "/users",
        "body": {"id": "u1", "attributes": {"email": "a@x.io", "plan": "pro"}}})),
        "{dry:?}"
    );
    assert!(
        dry.iter()
            .any(|l| l["method"] == "DELETE" && l["path"] == "/users/u2"),
        "{dry:?}"
    );
    let reject = dry.iter().find(|l| l["type"] == "reject").unwrap();
    assert_eq!(reject["line"], 4);
    assert_eq!(
        dry[3],
        json!({"type": "state", "value": {"bookmarks": {"users": {"next_page": "x"}}}}),
        "the would-be state comes last"
    );
    assert!(!dir.path().join("target-roster-rejects.ndjson").exists());
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["streams"]["users"]["records_in"], 3);
    assert_eq!(report["streams"]["users"]["sent"], 2);
    assert_eq!(report["streams"]["users"]["rejected"], 1);
    assert_eq!(report["states_out"], 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("users → users: 3 in, 2 mapped, 1 rejected"),
        "{stderr}"
    );
    assert!(!stderr.contains("uf-secret-key"));
}

#[test]
fn lenient_reading_unknown_types_lowercase_types_and_activate_version() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "{USERS}\n{}\n{}\n{}\n\n{}\n",
        r#"{"type":"record","stream":"users","record":{"id":"u1"}}"#,
        r#"{"type":"FOO","stream":"users"}"#,
        r#"{"type":"ACTIVATE_VERSION","stream":"users","version":1}"#,
        r#"{"type":"state","value":{"bookmarks":{}}}"#,
    );
    let out = target(
        dir.path(),
        &userflow(),
        input.as_bytes(),
        &["--dry-run", "--dry-run-output", "dry.ndjson"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dry = lines(&dir.path().join("dry.ndjson"));
    assert_eq!(dry.len(), 2, "{dry:?}");
}

#[test]
fn config_problems_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = userflow();
    config["streams"] = json!({"x": {"kind": "people"}});
    let out = target(dir.path(), &config, b"", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("streams.x.kind"));
    let mut config = userflow();
    config["mode"] = json!("bulk");
    let out = target(dir.path(), &config, b"", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"mode\""));
}

/// One request as a capturing server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 server that records every request and answers each with 200 and a body
/// every writer takes as success. Returns its origin and the record.
fn capturing_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let record = record.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let mut headers = Vec::new();
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        let (k, v) = h.split_once(':').unwrap();
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap();
                        }
                        headers.push((k.to_string(), v.trim().to_string()));
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    record.lock().unwrap().push(Seen {
                        method,
                        path,
                        headers,
                    });
                    let answer = r#"{"success":true,"object":"list","data":[],"has_more":false}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (origin, seen)
}

#[test]
fn each_writer_sends_the_vendors_auth_and_version_headers() {
    let input = format!(
        "{USERS}\n{}\n",
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1","email":"a@x.io"}}"#
    );
    // vendor, config, the write's path, and the headers every request must carry.
    type HeaderCase = (
        &'static str,
        Value,
        &'static str,
        Vec<(&'static str, &'static str)>,
    );
    let cases: [HeaderCase; 4] = [
        (
            "userflow",
            json!({"api_key": "uf-key"}),
            "/uf/users",
            vec![
                ("authorization", "Bearer uf-key"),
                ("userflow-version", "2020-01-03"),
            ],
        ),
        (
            "userpilot",
            json!({"api_key": "up-key"}),
            "/up/v1/identify",
            vec![
                ("authorization", "Token up-key"),
                ("x-api-version", "2020-09-22"),
            ],
        ),
        (
            "appcues",
            json!({"api_key": "ac-key", "api_secret": "ac-secret", "account_id": "7"}),
            "/ac/v2/accounts/7/users/u1/profile",
            // base64("ac-key:ac-secret")
            vec![("authorization", "Basic YWMta2V5OmFjLXNlY3JldA==")],
        ),
        (
            "userguiding",
            json!({"api_key": "ug-key"}),
            "/ug/v1/identify",
            vec![("authorization", "Bearer ug-key")],
        ),
    ];
    for (vendor, mut config, write_path, headers) in cases {
        let (origin, seen) = capturing_server();
        let prefix = match vendor {
            "userflow" => "/uf",
            "userpilot" => "/up",
            "appcues" => "/ac",
            _ => "/ug/v1",
        };
        config["vendor"] = json!(vendor);
        config["base_url"] = json!(format!("{origin}{prefix}"));
        let dir = tempfile::tempdir().unwrap();
        let out = target(dir.path(), &config, input.as_bytes(), &[]);
        assert!(
            out.status.success(),
            "{vendor}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter().any(|s| s.path == write_path),
            "{vendor}: no request to {write_path}: {seen:?}"
        );
        for s in &seen {
            for (name, value) in &headers {
                assert_eq!(
                    s.header(name),
                    Some(*value),
                    "{vendor}: {} {}: {name}",
                    s.method,
                    s.path
                );
            }
        }
    }
}

#[test]
fn region_eu_and_the_default_us_hosts_of_each_writer() {
    let dir = tempfile::tempdir().unwrap();
    let input = format!(
        "{USERS}\n{}\n",
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1"}}"#
    );
    for (config, url) in [
        (
            json!({"vendor": "userflow", "api_key": "k"}),
            "https://api.userflow.com/users",
        ),
        (
            json!({"vendor": "userflow", "api_key": "k", "region": "eu"}),
            "https://api.eu.userflow.com/users",
        ),
        (
            json!({"vendor": "userpilot", "api_key": "k"}),
            "https://analytex.userpilot.io/v1/identify",
        ),
        (
            json!({"vendor": "userpilot", "api_key": "k", "region": "eu"}),
            "https://analytex-eu.userpilot.io/v1/identify",
        ),
        (
            json!({"vendor": "appcues", "api_key": "k", "api_secret": "s", "account_id": "7"}),
            "https://api.appcues.com/v2/accounts/7/users/u1/profile",
        ),
        (
            json!({"vendor": "appcues", "api_key": "k", "api_secret": "s", "account_id": "7", "region": "eu"}),
            "https://api.eu.appcues.com/v2/accounts/7/users/u1/profile",
        ),
        (
            json!({"vendor": "userguiding", "api_key": "k"}),
            "https://api.userguiding.com/v1/identify",
        ),
    ] {
        let out = target(
            dir.path(),
            &config,
            input.as_bytes(),
            &["--dry-run", "--dry-run-output", "dry.ndjson"],
        );
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dry = lines(&dir.path().join("dry.ndjson"));
        assert_eq!(dry[0]["url"], url, "{config}");
    }
    // UserGuiding documents no EU host: asking for one is a config error that says what to do.
    let out = target(
        dir.path(),
        &json!({"vendor": "userguiding", "api_key": "k", "region": "eu"}),
        input.as_bytes(),
        &["--dry-run"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("set base_url"));
}
