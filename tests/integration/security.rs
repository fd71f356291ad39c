//! Security end to end, on pipelines that fail (`secrets.rs` covers configs, `--about` and
//! unreachable vendors):
//! - a target run with bad credentials (401 on every write) and one against a vendor that
//!   answers 500 until the retry budget runs out, for every vendor the target writes, and the
//!   tap against the same two failures: the distinctive secrets appear in none of stdout,
//!   stderr (at trace level), the reject file, the `--report` JSON or the dry-run output;
//! - TLS: an `https` base_url whose certificate is self-signed is refused before any request
//!   reaches it, and no setting turns verification off (unknown keys such as `verify_ssl` are
//!   refused, and `--about` lists no such option);
//! - a base_url with userinfo (`https://user:password@host`) never shows the password or the
//!   user in an error, a log line or the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use roster::vendors;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::{self, bin, bin::TAP, bin::TARGET};

/// Every vendor the target writes.
const WRITABLE: [Vendor; 7] = [
    Vendor::UserGuiding,
    Vendor::Userflow,
    Vendor::Userpilot,
    Vendor::Appcues,
    Vendor::Guru,
    Vendor::GuruScim,
    Vendor::Scim,
];

/// Every vendor the tap reads.
const LISTABLE: [Vendor; 4] = [
    Vendor::Userflow,
    Vendor::Guru,
    Vendor::GuruScim,
    Vendor::Scim,
];

/// The part every planted secret shares, so a fragment of one is caught too.
const MARK: &str = "hunter2";

/// `vendor`'s sandbox config with every secret replaced by `SECRET-<vendor>-<key>-hunter2`
/// (wrong for the sandbox: every authenticated request answers 401).
fn with_secrets(sb: &Sandbox, vendor: Vendor) -> (Value, Vec<String>) {
    let mut config = sb.config(vendor);
    let spec = vendors::find(vendor.name()).unwrap();
    let mut secrets = Vec::new();
    for setting in spec.settings.iter().filter(|s| s.secret) {
        if config.get(setting.name).is_some() {
            let value = format!("SECRET-{}-{}-{MARK}", vendor.name(), setting.name);
            config[setting.name] = json!(value);
            secrets.push(value);
        }
    }
    assert!(!secrets.is_empty(), "{vendor} has no secret to plant");
    (config, secrets)
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} leaks {secret}:\n{text}"
        );
    }
    assert!(
        !text.contains(MARK),
        "{what} leaks part of a secret:\n{text}"
    );
}

/// Users with a STATE between them, for any vendor (Guru keys people by email).
fn input() -> String {
    let mut out = json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
        "schema": {"type": "object"}})
    .to_string();
    out.push('\n');
    for i in 0..4 {
        out.push_str(
            &json!({"type": "RECORD", "stream": "users", "record": {
                "id": format!("u{i}"), "email": format!("u{i}@example.com"),
                "name": format!("User {i}")}})
            .to_string(),
        );
        out.push('\n');
        out.push_str(&json!({"type": "STATE", "value": {"offset": i + 1}}).to_string());
        out.push('\n');
    }
    out
}

/// Runs target-roster on [`input`] with a reject file and a report in `dir` (and `extra`
/// arguments), and returns everything it wrote: stdout, stderr and every file in `dir` except
/// the config and the input.
fn target_outputs(
    dir: &Path,
    config: &Value,
    extra: &[&str],
) -> (Option<i32>, Vec<(String, String)>) {
    let mut config = config.clone();
    config["reject_file"] = json!(dir.join("rejects.ndjson"));
    config["max_retries"] = json!(2);
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let input_path = dir.join("input.singer");
    std::fs::write(&input_path, input()).unwrap();
    let out = bin::target()
        .config(&config_path)
        .input(&input_path)
        .report(dir.join("report.json"))
        .args(extra)
        .log("trace")
        .current_dir(dir)
        .run(Duration::from_secs(300));
    let mut outputs = vec![
        ("stdout".to_string(), out.stdout),
        ("stderr".to_string(), out.stderr),
    ];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name != "config.json" && name != "input.singer" {
            outputs.push((
                name,
                String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into(),
            ));
        }
    }
    (out.status.code(), outputs)
}

fn tap_outputs(config: &Value) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config.clone();
    config["max_retries"] = json!(2);
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let out = bin::tap()
        .config(&path)
        .log("trace")
        .run(Duration::from_secs(300));
    (out.status.code(), out.stdout, out.stderr)
}

#[test]
fn a_failing_pipeline_never_shows_a_secret_anywhere() {
    let sb = Sandbox::builder()
        .users(12)
        .groups(2)
        .start_background()
        .unwrap();
    for vendor in WRITABLE {
        let (config, secrets) = with_secrets(&sb, vendor);
        for failure in ["401", "500"] {
            sb.faults()
                .error_rate(Some(vendor), if failure == "500" { 1.0 } else { 0.0 })
                .unwrap();
            let what = format!("target {vendor}, every answer {failure}");
            let dir = tempfile::tempdir().unwrap();
            let (code, outputs) = target_outputs(dir.path(), &config, &[]);
            // Four records exhausting their budget are rejected (the run stops as unreachable
            // only after 20 in a row); a 401 stops the run at once.
            let rejected = outputs.iter().any(|(n, text)| {
                n == "rejects.ndjson" && text.matches("\"type\":\"RECORD\"").count() == 4
            });
            assert!(code != Some(0) || rejected, "{what}: {outputs:?}");
            let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
            assert!(names.contains(&"report.json"), "{what}: {names:?}");
            for (name, text) in &outputs {
                assert_clean(&format!("{what}: {name}"), text, &secrets);
            }
            // The run explains itself (without the secret).
            let stderr = &outputs[1].1;
            assert!(stderr.contains(vendor.name()), "{what}: {stderr}");
        }
        sb.faults().error_rate(Some(vendor), 0.0).unwrap();

        // The dry run records the requests it would send: headers redacted.
        let dir = tempfile::tempdir().unwrap();
        let (code, outputs) = target_outputs(
            dir.path(),
            &config,
            &["--dry-run", "--dry-run-output", "dry.ndjson"],
        );
        assert_eq!(code, Some(0), "dry run {vendor}: {outputs:?}");
        let dry = outputs.iter().find(|(n, _)| n == "dry.ndjson").unwrap();
        assert!(
            dry.1.contains("\"request\"") || !dry.1.is_empty(),
            "{vendor}: {dry:?}"
        );
        for (name, text) in &outputs {
            assert_clean(&format!("dry run {vendor}: {name}"), text, &secrets);
        }
    }
    for vendor in LISTABLE {
        let (config, secrets) = with_secrets(&sb, vendor);
        for failure in ["401", "500"] {
            sb.faults()
                .error_rate(Some(vendor), if failure == "500" { 1.0 } else { 0.0 })
                .unwrap();
            let (code, stdout, stderr) = tap_outputs(&config);
            let what = format!("tap {vendor}, every answer {failure}");
            assert_ne!(code, Some(0), "{what}: {stderr}");
            assert_clean(&format!("{what}: stdout"), &stdout, &secrets);
            assert_clean(&format!("{what}: stderr"), &stderr, &secrets);
        }
        sb.faults().error_rate(Some(vendor), 0.0).unwrap();
    }
}

#[test]
fn credentials_in_a_base_url_never_appear_in_errors() {
    let sb = Sandbox::builder()
        .users(5)
        .groups(1)
        .start_background()
        .unwrap();
    sb.faults().error_rate(None, 1.0).unwrap();
    let userinfo = format!("admin-{MARK}:SECRET-password-{MARK}");
    for (vendor, base) in [
        // Reachable, answering 500: errors name the URL of the failing request.
        (
            Vendor::Userflow,
            format!("http://{userinfo}@{}/userflow", sb.addr()),
        ),
        (
            Vendor::Scim,
            format!("http://{userinfo}@{}/scim/v2", sb.addr()),
        ),
        // Unreachable: the connection error names the URL too.
        (
            Vendor::Userflow,
            format!("http://{userinfo}@127.0.0.1:9/userflow"),
        ),
    ] {
        let mut config = sb.config(vendor);
        config["base_url"] = json!(base);
        let what = format!("{vendor} at {}", base.replace(&userinfo, "<userinfo>"));
        let (code, stdout, stderr) = tap_outputs(&config);
        assert_eq!(code, Some(2), "tap {what}: a config error");
        let secrets = vec![userinfo.clone()];
        assert_clean(&format!("tap {what}: stdout"), &stdout, &secrets);
        assert_clean(&format!("tap {what}: stderr"), &stderr, &secrets);
        assert!(!stderr.contains("admin-"), "tap {what}: {stderr}");

        let dir = tempfile::tempdir().unwrap();
        let (code, outputs) = target_outputs(dir.path(), &config, &[]);
        assert_eq!(code, Some(2), "target {what}: a config error");
        for (name, text) in &outputs {
            assert_clean(&format!("target {what}: {name}"), text, &secrets);
            assert!(!text.contains("admin-"), "target {what}: {name}: {text}");
        }
    }
}

/// A Python HTTPS server with a fresh self-signed certificate; every request that gets
/// through the handshake is logged to `requests.log`.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
port, cert, key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        with open(log, "a") as f:
            f.write(self.command + " " + self.path + "\n")
        body = b'{"data": [], "has_more": false}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_PATCH = answer
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

#[test]
fn a_self_signed_certificate_is_refused_and_verification_cannot_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let openssl = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status();
    let python = support::python3();
    let (Ok(status), Some(python)) = (openssl, python) else {
        support::skip_or_fail("openssl and python3 are needed for an HTTPS server");
        return;
    };
    assert!(status.success());
    let port = support::free_port();
    let log = dir.path().join("requests.log");
    let _server = support::Guard(
        Command::new(python)
            .arg("-c")
            .arg(HTTPS_SERVER)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key)
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(support::wait_for_port(port, Duration::from_secs(30)));
    // The server itself works: a client that trusts its certificate gets an answer.
    let trusted = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(&cert)
        .arg(format!("https://127.0.0.1:{port}/probe"))
        .output();
    let curl_reached = trusted.as_ref().is_ok_and(|o| o.status.success());
    if trusted.is_ok() {
        assert!(
            curl_reached,
            "the HTTPS server does not answer: {trusted:?}"
        );
    }
    let before = std::fs::read_to_string(&log).unwrap_or_default();

    let config = json!({"vendor": "userflow", "base_url": format!("https://127.0.0.1:{port}"),
        "api_key": "k", "max_retries": 1});
    let (code, stdout, stderr) = tap_outputs(&config);
    assert_ne!(
        code,
        Some(0),
        "the tap trusted a self-signed certificate: {stdout}"
    );
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the error names the certificate: {stderr}"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let (code, outputs) = target_outputs(dir2.path(), &config, &[]);
    assert_ne!(
        code,
        Some(0),
        "the target trusted a self-signed certificate"
    );
    assert!(
        outputs[1].1.to_lowercase().contains("certificate"),
        "{}",
        outputs[1].1
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        before,
        "a request got through the handshake"
    );

    // No setting turns verification off: the usual names are unknown keys, and `--about`
    // offers nothing of the kind.
    for key in [
        "verify_ssl",
        "insecure",
        "danger_accept_invalid_certs",
        "tls_verify",
    ] {
        let mut config = config.clone();
        config[key] = json!(false);
        let (code, _, stderr) = tap_outputs(&config);
        assert_eq!(code, Some(2), "{key}: {stderr}");
        assert!(stderr.contains("unknown config key"), "{key}: {stderr}");
    }
    for binary in [TAP, TARGET] {
        let about = bin::Bin::new(binary)
            .args(["--about", "--format", "json"])
            .output();
        // `allow_insecure_http` is about plain http to a test host (it never turns off
        // certificate checks): the one key the words below may name.
        let text = String::from_utf8_lossy(&about.stdout)
            .to_lowercase()
            .replace("allow_insecure_http", "");
        for word in [
            "insecure",
            "verify_ssl",
            "accept_invalid",
            "danger",
            "no_verify",
        ] {
            assert!(!text.contains(word), "{binary} --about offers {word}");
        }
    }
}

/// Issue 12 item 5, SCIM: the ids a SCIM writer puts into paths are the server's. A server
/// that answers a lookup with the id `..` must not make roster write to `/Users/..` (which a
/// URL parser resolves to the server's root): the request is refused before it is sent and the
/// record rejected, naming the segment.
#[test]
fn a_scim_id_that_is_a_dot_segment_never_leaves_its_path() {
    use std::sync::{Arc, Mutex};

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let log = log.clone();
        async move {
            let path = req.uri().path().to_string();
            log.lock()
                .unwrap()
                .push(format!("{} {}", req.method(), path));
            let body = if path.ends_with("/ServiceProviderConfig") {
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                       "patch": {"supported": true}, "filter": {"supported": true, "maxResults": 100},
                       "etag": {"supported": false}, "bulk": {"supported": false},
                       "changePassword": {"supported": false}, "sort": {"supported": false},
                       "authenticationSchemes": []})
            } else if req.method() == "GET" && path.ends_with("/Users") {
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                       "totalResults": 1, "startIndex": 1, "itemsPerPage": 1,
                       "Resources": [{"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                      "id": "..", "externalId": "u1", "userName": "u1@example.com",
                                      "active": true, "displayName": "Old Name"}]})
            } else {
                json!({})
            };
            (
                [("content-type", "application/scim+json")],
                body.to_string(),
            )
        }
    });
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "vendor": "scim",
        "base_url": format!("http://{addr}/scim/v2"),
        "bearer_token": "t0ken-for-the-hostile-server",
        "reject_file": dir.path().join("rejects.ndjson"),
    });
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let input = [
        json!({"type": "SCHEMA", "stream": "users", "schema": {"type": "object", "properties": {"id": {"type": "string"}, "email": {"type": "string"}, "name": {"type": "string"}}}, "key_properties": ["id"]}),
        json!({"type": "RECORD", "stream": "users", "record": {"id": "u1", "email": "u1@example.com", "name": "New Name"}}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let input_path = dir.path().join("input.singer");
    std::fs::write(&input_path, input).unwrap();
    let out = bin::target()
        .config(&config_path)
        .input(&input_path)
        .run(Duration::from_secs(120));
    let rejects = std::fs::read_to_string(dir.path().join("rejects.ndjson")).unwrap_or_default();
    assert!(
        rejects.contains(". or .. segment"),
        "rejected naming the segment: {rejects}\n{}",
        out.stderr
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|r| r.contains("/scim/v2/Users") || r.contains("/scim/v2/ServiceProviderConfig")),
        "every request stayed under the base: {seen:?}"
    );
    assert!(
        seen.iter().all(|r| r.starts_with("GET ")),
        "nothing was written anywhere: {seen:?}"
    );
}

/// Log injection: stream names with a newline, a carriage return, a terminal escape and a NUL
/// print no forged line and no raw control byte on stderr, and a 1 MB name is cut (it wrote
/// 6 MB to stderr before).
#[test]
fn hostile_stream_names_cannot_forge_log_lines_or_flood_stderr() {
    let sb = Sandbox::builder().start_background().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let huge = "n".repeat(1 << 20);
    let names = [
        "a\n2026-01-01T00:00:00.000000Z ERROR target-roster: forged line".to_string(),
        "b\rERROR overwritten".to_string(),
        "c\u{1b}[31mred\u{1b}[0m".to_string(),
        "d\0nul".to_string(),
        huge.clone(),
    ];
    let mut input = String::new();
    for name in &names {
        // Streams no kind is mapped to: each is skipped with a warning naming it.
        for line in [
            json!({"type": "SCHEMA", "stream": name, "key_properties": ["id"], "schema": {"type": "object"}}),
            json!({"type": "RECORD", "stream": name, "record": {"id": "u1"}}),
        ] {
            input.push_str(&line.to_string());
            input.push('\n');
        }
    }
    let input_path = dir.path().join("input.singer");
    std::fs::write(&input_path, input).unwrap();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, sb.config(Vendor::Userflow).to_string()).unwrap();
    let out = bin::target()
        .config(&config_path)
        .input(&input_path)
        .log("debug")
        .run(Duration::from_secs(120));
    let stderr = out.stderr;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        &stderr[..stderr.len().min(4000)]
    );
    for byte in ['\0', '\r', '\u{1b}'] {
        assert!(!stderr.contains(byte), "raw {byte:?} on stderr");
    }
    for line in stderr.lines() {
        assert!(!line.starts_with("2026-01-01"), "forged line: {line}");
        assert!(
            !line.starts_with("ERROR") && !line.contains("] forged"),
            "{line}"
        );
    }
    // The names are shown escaped.
    assert!(
        stderr.contains("a\\n2026-01-01"),
        "{}",
        &stderr[..stderr.len().min(4000)]
    );
    assert!(
        stderr.contains("d\\0nul"),
        "{}",
        &stderr[..stderr.len().min(4000)]
    );
    assert!(
        stderr.contains("c\\u{1b}[31mred"),
        "{}",
        &stderr[..stderr.len().min(4000)]
    );
    assert!(
        stderr.len() < 200_000,
        "{} bytes of stderr for a 1 MB stream name",
        stderr.len()
    );
    assert!(
        stderr.contains("more bytes)"),
        "the long name is cut with a note"
    );
}
