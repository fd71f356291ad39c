//! Load generator: how many simple upserts per second the sandbox serves over keep-alive.
//!
//! ```sh
//! cargo bench --bench sandbox_upserts                       # in-process sandbox, defaults
//! cargo bench --bench sandbox_upserts -- --requests 500000 --connections 64 --vendor userguiding
//! cargo bench --bench sandbox_upserts -- --url http://127.0.0.1:8787   # a running roster-sandbox
//! ```
//!
//! Each of `--connections` keep-alive HTTP/1.1 connections sends POSTs back to back (a
//! Userflow user upsert by default) until `--requests` have been answered; every answer must
//! be 200. The client is a bare hyper connection so it costs the shared CPU as little as
//! possible. Prints requests per second and latency percentiles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use roster_sandbox::{Sandbox, Vendor};
use tokio::net::TcpStream;

struct Opts {
    url: Option<String>,
    requests: u64,
    connections: usize,
    vendor: Vendor,
    users: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        url: None,
        requests: 200_000,
        connections: 32,
        vendor: Vendor::Userflow,
        users: 10_000,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--url" => o.url = Some(val),
            "--requests" => o.requests = val.parse().expect("--requests N"),
            "--connections" => o.connections = val.parse().expect("--connections N"),
            "--vendor" => o.vendor = val.parse().expect("--vendor userflow|userguiding|appcues"),
            "--users" => o.users = val.parse().expect("--users N"),
            // `cargo bench` passes --bench; ignore it and anything unknown without a value.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

/// Path, auth header and body of the n-th upsert.
fn upsert(vendor: Vendor, n: u64, users: u64) -> (String, String, String) {
    let uid = n % users;
    match vendor {
        Vendor::UserGuiding => (
            "/userguiding/v1/identify".into(),
            "Bearer sandbox-userguiding-key".into(),
            format!(r#"{{"userId":"u{uid}","attributes":{{"plan":"pro","n":{n}}}}}"#),
        ),
        Vendor::Appcues => (
            format!("/appcues/v2/accounts/10001/users/u{uid}/profile"),
            "Basic c2FuZGJveC1hcHBjdWVzLWtleTpzYW5kYm94LWFwcGN1ZXMtc2VjcmV0".into(),
            format!(r#"{{"plan":"pro","n":{n}}}"#),
        ),
        _ => (
            "/userflow/users".into(),
            "Bearer sandbox-userflow-key".into(),
            format!(r#"{{"id":"u{uid}","attributes":{{"plan":"pro","n":{n}}}}}"#),
        ),
    }
}

async fn connection(
    addr: String,
    vendor: Vendor,
    users: u64,
    next: Arc<AtomicU64>,
    total: u64,
) -> Vec<Duration> {
    let stream = TcpStream::connect(&addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let method = if vendor == Vendor::Appcues {
        "PATCH"
    } else {
        "POST"
    };
    let mut lat = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        let (path, auth, body) = upsert(vendor, n, users);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &addr)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let t = Instant::now();
        send.ready().await.expect("connection ready");
        let resp = send.send_request(req).await.expect("response");
        let status = resp.status();
        let _ = resp.into_body().collect().await.expect("body");
        assert_eq!(status, 200, "request {n}");
        lat.push(t.elapsed());
    }
    lat
}

/// CPU seconds used so far by this process's threads, split into (sandbox workers, the rest).
/// Read from /proc (utime + stime, in clock ticks of 1/100 s): on a shared machine the wall
/// clock measures the neighbours too, the CPU time only us.
fn cpu_split() -> (f64, f64) {
    let mut server = 0.0;
    let mut other = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return (0.0, 0.0);
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        // After the comm: state is field 3, utime 14, stime 15 (1-based) → indices 11, 12 here.
        let ticks: f64 = fields
            .get(11)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0);
        if comm.starts_with("roster-sandbox") {
            server += ticks / 100.0;
        } else {
            other += ticks / 100.0;
        }
    }
    (server, other)
}

fn main() {
    let o = opts();
    let sb;
    let addr = match &o.url {
        Some(u) => u
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        None => {
            // The sandbox on its own two-worker runtime, as the binary runs it.
            sb = Sandbox::builder()
                .users(0)
                .groups(0)
                .start_background()
                .unwrap();
            sb.addr().to_string()
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    // Warm-up: connections, allocator, first inserts.
    rt.block_on(connection(
        addr.clone(),
        o.vendor,
        o.users,
        Arc::new(AtomicU64::new(0)),
        2_000,
    ));
    let cpu_before = cpu_split();
    let start = Instant::now();
    let mut lat: Vec<Duration> = rt.block_on(async {
        let tasks: Vec<_> = (0..o.connections)
            .map(|_| {
                tokio::spawn(connection(
                    addr.clone(),
                    o.vendor,
                    o.users,
                    next.clone(),
                    o.requests,
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let secs = start.elapsed().as_secs_f64();
    let cpu_after = cpu_split();
    let server_cpu = cpu_after.0 - cpu_before.0;
    let client_cpu = cpu_after.1 - cpu_before.1;
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "sandbox_upserts: vendor={} requests={} connections={} elapsed={:.2}s throughput={:.0} upserts/s p50={:?} p99={:?} (server: {})",
        o.vendor,
        lat.len(),
        o.connections,
        secs,
        lat.len() as f64 / secs,
        pct(0.50),
        pct(0.99),
        if o.url.is_some() {
            "external"
        } else {
            "in-process"
        },
    );
    let n = lat.len() as f64;
    if o.url.is_none() && server_cpu > 0.0 {
        // What the server alone would do with the machine's two cores to itself, and what
        // server and client together do when they share two cores (the benchmark's setup).
        println!(
            "sandbox_upserts: server cpu {:.1} us/upsert ({:.2} cpu-s), client cpu {:.1} us/upsert; capacity on 2 cores: server alone {:.0} upserts/s, server+client sharing them {:.0} upserts/s",
            server_cpu / n * 1e6,
            server_cpu,
            client_cpu / n * 1e6,
            2.0 * n / server_cpu,
            2.0 * n / (server_cpu + client_cpu),
        );
    }
}
