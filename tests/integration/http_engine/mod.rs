//! The HTTP engine against a real server on 127.0.0.1: a small scripted HTTP/1.1 server (raw
//! tokio sockets, so it can also drop connections and stall) that records every request.
//!
//! Timing assertions are lower bounds only (a loaded machine makes things slower, never faster),
//! or generous upper bounds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pacing;
mod requests;

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster::config::Secret;
use roster::http::{
    Auth, ClientConfig, HeaderName, HeaderValue, HttpClient, HttpError, Rate, StatusCode,
    TransportKind, Verdict,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use url::Url;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    at: Instant,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with a request.
#[derive(Debug, Clone)]
enum Action {
    Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    Drop,
    /// Answer after a pause.
    Slow(Duration, Box<Action>),
}

fn reply(status: u16, body: &str) -> Action {
    Action::Reply {
        status,
        headers: vec![],
        body: body.as_bytes().to_vec(),
    }
}

fn reply_with(status: u16, headers: &[(&str, &str)], body: &str) -> Action {
    Action::Reply {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

type Script = Arc<dyn Fn(&Seen, usize) -> Action + Send + Sync>;

struct Server {
    base: Url,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl Server {
    /// Starts a server whose answers come from `script(request, index)` (index counts from 0).
    async fn start(script: impl Fn(&Seen, usize) -> Action + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let script: Script = Arc::new(script);
        let (s, c, i, m) = (
            seen.clone(),
            connections.clone(),
            in_flight.clone(),
            max_in_flight.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let id = c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(
                    sock,
                    id,
                    script.clone(),
                    s.clone(),
                    i.clone(),
                    m.clone(),
                ));
            }
        });
        Server {
            base: Url::parse(&format!("http://{addr}/api/v1")).unwrap(),
            seen,
            connections,
            in_flight,
            max_in_flight,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve(
    mut sock: TcpStream,
    connection: usize,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        // Read one request head.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let path = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let _ = (method, connection);
        let req = Seen {
            path,
            headers,
            body,
            at: Instant::now(),
        };
        let index = {
            let mut s = seen.lock().unwrap();
            s.push(req.clone());
            s.len() - 1
        };
        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        max_in_flight.fetch_max(now, Ordering::SeqCst);
        let mut action = script(&req, index);
        while let Action::Slow(d, next) = action {
            tokio::time::sleep(d).await;
            action = *next;
        }
        in_flight.fetch_sub(1, Ordering::SeqCst);
        match action {
            Action::Drop | Action::Slow(..) => return,
            Action::Reply {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                if sock.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn config(server: &Server) -> ClientConfig {
    let mut cfg = ClientConfig::new(
        "acme",
        server.base.clone(),
        Auth::Bearer(Secret::new("sekrit-bearer-123")),
    );
    cfg.zero_delays = true;
    cfg.timeout = Duration::from_secs(10);
    cfg
}

fn client(server: &Server) -> HttpClient {
    HttpClient::new(config(server)).unwrap()
}

/// A client for `server` with the test defaults changed by `tweak`.
fn client_with(server: &Server, tweak: impl FnOnce(&mut ClientConfig)) -> HttpClient {
    let mut cfg = config(server);
    tweak(&mut cfg);
    HttpClient::new(cfg).unwrap()
}

#[tokio::test]
async fn fails_n_times_then_succeeds() {
    let server = Server::start(|_, i| match i {
        0 => reply(500, "boom"),
        1 => reply(502, "bad gateway"),
        2 => reply(503, "unavailable"),
        3 => reply(408, "timeout"),
        _ => reply(200, "{\"ok\":true}"),
    })
    .await;
    let c = client(&server);
    let resp = c.get("/users").send().await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.attempts, 5);
    assert_eq!(resp.json::<serde_json::Value>().unwrap()["ok"], true);
    let stats = c.stats();
    assert_eq!(
        (stats.requests, stats.attempts, stats.retries, stats.failed),
        (1, 5, 4, 0)
    );
    assert_eq!(
        (stats.status_5xx, stats.status_4xx, stats.status_2xx),
        (3, 1, 1)
    );
    assert!(server.seen().iter().all(|s| s.path == "/api/v1/users"));
}

#[tokio::test]
async fn the_budget_runs_out_with_a_clear_error() {
    let server = Server::start(|_, _| reply(503, "{\"error\":\"down for maintenance\"}")).await;
    let mut cfg = config(&server);
    cfg.max_retries = 2;
    let c = HttpClient::new(cfg).unwrap();
    let err = c.get("/users?limit=5").send().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(err.attempts(), 3);
    assert!(err.is_transient());
    assert_eq!(
        err.body_excerpt(),
        Some("{\"error\":\"down for maintenance\"}")
    );
    let text = err.to_string();
    assert!(text.starts_with("acme: GET http://127.0.0.1:"), "{text}");
    assert!(
        text.contains("/api/v1/users?limit=5 answered 503 Service Unavailable after 3 attempts"),
        "{text}"
    );
    // What ended the retries, in the figures of max_retries.
    assert!(
        text.contains("(the retry budget is spent: 2 retries, as max_retries allows)"),
        "{text}"
    );
    assert!(text.contains("down for maintenance"), "{text}");
    assert_eq!(server.count(), 3);
    assert_eq!(c.stats().failed, 1);
    // A per-request budget overrides the client's, and says so.
    let err = c.get("/users").max_retries(0).send().await.unwrap_err();
    assert_eq!(err.attempts(), 1);
    let text = err.to_string();
    assert!(
        text.contains(
            "after 1 attempt (the retry budget is spent: 0 retries, this request's own limit)"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn client_errors_and_501_are_not_retried() {
    let server = Server::start(|req, _| {
        let code: u16 = req.path.rsplit('/').next().unwrap().parse().unwrap();
        reply(code, "{\"error\":\"no\"}")
    })
    .await;
    let c = client(&server);
    for code in [400u16, 401, 403, 404, 409, 422, 501] {
        let err = c.get(&format!("/status/{code}")).send().await.unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(code));
        assert_eq!(err.attempts(), 1, "{code}");
        assert!(!err.maybe_processed(), "{code}");
        assert_eq!(err.is_auth(), code == 401 || code == 403, "{code}");
        let text = err.to_string();
        assert!(text.contains("after 1 attempt (not retryable)"), "{text}");
    }
    assert_eq!(server.count(), 7);
}

#[tokio::test]
async fn retry_after_seconds_pauses_every_request_of_the_client() {
    let first_429 = AtomicUsize::new(0);
    let server = Server::start(move |req, _| {
        if req.path.ends_with("/first") && first_429.fetch_add(1, Ordering::SeqCst) == 0 {
            reply_with(429, &[("retry-after", "1")], "slow down")
        } else {
            reply(200, "{}")
        }
    })
    .await;
    let c = client_with(&server, |cfg| cfg.zero_delays = false);
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.get("/first").header("x-try", "1").send().await })
    };
    // Wait until the 429 went out, then start an unrelated request on the same client.
    while server.count() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = c.get("/other").send().await.unwrap();
    assert_eq!(other.attempts, 1);
    let first = first.await.unwrap().unwrap();
    assert_eq!(first.attempts, 2);
    let seen = server.seen();
    let t429 = seen[0].at;
    for s in &seen[1..] {
        let gap = s.at.duration_since(t429);
        assert!(
            gap >= Duration::from_millis(900),
            "{} came {gap:?} after the 429",
            s.path
        );
    }
    let stats = c.stats();
    assert_eq!(stats.status_429, 1);
    assert!(
        stats.pause_wait >= Duration::from_millis(900),
        "{:?}",
        stats.pause_wait
    );
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let server = Server::start(|_, i| {
        if i == 0 {
            let at = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(2));
            reply_with(503, &[("retry-after", &at)], "maintenance")
        } else {
            reply(200, "{}")
        }
    })
    .await;
    let c = client_with(&server, |cfg| cfg.zero_delays = false);
    let resp = c.get("/x").send().await.unwrap();
    assert_eq!(resp.attempts, 2);
    let seen = server.seen();
    // The date has one-second resolution: at least a second must pass.
    let gap = seen[1].at.duration_since(seen[0].at);
    assert!(gap >= Duration::from_millis(900), "{gap:?}");
}

#[tokio::test]
async fn zero_delays_skip_retry_after_and_backoff() {
    let server = Server::start(|_, i| {
        if i < 3 {
            reply_with(429, &[("retry-after", "100")], "")
        } else {
            reply(200, "{}")
        }
    })
    .await;
    let c = client(&server);
    let t0 = Instant::now();
    let resp = c.get("/x").send().await.unwrap();
    assert_eq!(resp.attempts, 4);
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let server = Server::start(|_, i| {
        if i < 2 {
            Action::Drop
        } else {
            reply(200, "{\"fine\":1}")
        }
    })
    .await;
    let c = client(&server);
    let resp = c.get("/users").send().await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.attempts, 3);
    let stats = c.stats();
    assert_eq!(stats.transport_errors, 2);
}

#[tokio::test]
async fn slow_answers_time_out_and_are_retried() {
    let server = Server::start(|_, i| {
        if i == 0 {
            Action::Slow(Duration::from_secs(3), Box::new(reply(200, "late")))
        } else {
            reply(200, "on time")
        }
    })
    .await;
    let mut cfg = config(&server);
    cfg.timeout = Duration::from_millis(300);
    let c = HttpClient::new(cfg).unwrap();
    let resp = c.get("/x").send().await.unwrap();
    assert_eq!(resp.text(), "on time");
    assert_eq!(resp.attempts, 2);
    assert_eq!(c.stats().timeouts, 1);
    // With no retries left the timeout is the error.
    let server =
        Server::start(|_, _| Action::Slow(Duration::from_secs(3), Box::new(reply(200, "late"))))
            .await;
    let mut cfg = config(&server);
    cfg.timeout = Duration::from_millis(200);
    cfg.max_retries = 1;
    let c = HttpClient::new(cfg).unwrap();
    let err = c.get("/x").send().await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert_eq!(err.attempts(), 2);
    assert!(err.maybe_processed());
}

#[tokio::test]
async fn connect_failures_are_retried_even_for_posts() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut cfg = ClientConfig::new(
        "acme",
        Url::parse(&format!("http://{addr}/v1")).unwrap(),
        Auth::None,
    );
    cfg.zero_delays = true;
    cfg.max_retries = 2;
    let c = HttpClient::new(cfg).unwrap();
    let err = c
        .post("/events")
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap_err();
    match &err {
        HttpError::Transport { kind, attempts, .. } => {
            assert_eq!(*kind, TransportKind::Connect);
            assert_eq!(
                *attempts, 3,
                "connect errors never reached the server, so even a POST retries"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.maybe_processed());
}

#[tokio::test]
async fn non_idempotent_requests_are_retried_only_when_surely_unprocessed() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/api/v1/fails" => reply(500, "oops"),
        "/api/v1/dropped" => Action::Drop,
        _ => reply(201, "{\"id\":\"g1\"}"),
    })
    .await;
    let c = client(&server);
    // 500 on a POST: the server may have created it; the caller must look up.
    let err = c
        .post("/fails")
        .json(&serde_json::json!({"a": 1}))
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert!(err.maybe_processed());
    assert!(err.to_string().contains("not idempotent"), "{err}");
    // A dropped connection after sending: same.
    let err = c
        .post("/dropped")
        .body("x", "text/plain")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert!(err.maybe_processed());
    // Marked idempotent (an upsert): retried.
    let server2 = Server::start(|_, i| {
        if i == 0 {
            reply(500, "oops")
        } else {
            reply(200, "{}")
        }
    })
    .await;
    let c2 = client(&server2);
    let ok = c2
        .post("/users")
        .idempotent(true)
        .json(&serde_json::json!({"id": "u1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.attempts, 2);
    // 429 and 503 + Retry-After: the server did not act, so even a create is repeated.
    let server3 = Server::start(|_, i| match i {
        0 => reply(429, "later"),
        1 => reply_with(503, &[("retry-after", "0")], "later"),
        _ => reply(201, "{}"),
    })
    .await;
    let c3 = client(&server3);
    let ok = c3
        .post("/Users")
        .json(&serde_json::json!({"userName": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.attempts, 3);
    let bodies: Vec<_> = server3.seen().iter().map(|s| s.body.clone()).collect();
    assert!(
        bodies.iter().all(|b| b == b"{\"userName\":\"a\"}"),
        "the body is resent intact"
    );
    // A 503 without Retry-After on a create is not repeated.
    let server4 = Server::start(|_, _| reply(503, "down")).await;
    let err = client(&server4)
        .post("/Users")
        .json(&1)
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), 1);
    assert!(err.maybe_processed());
}

#[tokio::test]
async fn the_classify_hook_sees_answers_first() {
    let busy = AtomicUsize::new(0);
    let server = Server::start(move |req, _| match req.path.as_str() {
        "/api/v1/exists" => reply(409, "{\"error\":\"already exists\"}"),
        "/api/v1/soft-error" => reply(200, "{\"success\":false,\"error\":\"invalid email\"}"),
        "/api/v1/busy" => {
            if busy.fetch_add(1, Ordering::SeqCst) == 0 {
                reply(200, "{\"status\":\"busy\"}")
            } else {
                reply(200, "{\"status\":\"done\"}")
            }
        }
        _ => reply(200, "{}"),
    })
    .await;
    let c = client(&server);
    let resp = c
        .post("/exists")
        .json(&serde_json::json!({}))
        .classify(|r| (r.status == StatusCode::CONFLICT).then_some(Verdict::Success))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::CONFLICT);
    let err = c
        .post("/soft-error")
        .classify(|r| {
            let v: serde_json::Value = r.json().ok()?;
            (v["success"] == false).then_some(Verdict::Fail)
        })
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::OK));
    assert!(err.body_excerpt().unwrap().contains("invalid email"));
    assert_eq!(err.attempts(), 1);
    // The hook's Retry is final, even on a POST.
    let resp = c
        .post("/busy")
        .classify(|r| r.text().contains("busy").then_some(Verdict::Retry))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.attempts, 2);
    assert!(resp.text().contains("done"));
}

#[tokio::test]
async fn a_tls_handshake_that_stalls_is_a_connect_failure_even_for_a_post() {
    // A server that accepts the TCP connection and never answers the TLS hello: the connect
    // timeout covers the handshake (as reqwest's does), so the write never left and even a
    // POST is retried, rather than waiting out the request timeout as "maybe processed".
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            keep.lock().unwrap().push(sock);
        }
    });
    let mut cfg = ClientConfig::new(
        "acme",
        Url::parse(&format!("https://{addr}/v1")).unwrap(),
        Auth::None,
    );
    cfg.zero_delays = true;
    cfg.max_retries = 1;
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.timeout = Duration::from_secs(30);
    let c = HttpClient::new(cfg).unwrap();
    let started = Instant::now();
    let err = c
        .post("/events")
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap_err();
    match &err {
        HttpError::Transport { kind, attempts, .. } => {
            assert_eq!(*kind, TransportKind::Connect, "{err}");
            assert_eq!(*attempts, 2, "retried: the write never left");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.maybe_processed());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        held.lock().unwrap().len(),
        2,
        "two connections, neither used"
    );
}
