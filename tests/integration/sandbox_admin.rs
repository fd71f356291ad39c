//! The admin API, the library API and the `roster-sandbox` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::api;
use crate::support::bin;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::api;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

fn admin(sb: &Sandbox) -> reqwest::Client {
    let _ = sb;
    reqwest::Client::new()
}

async fn admin_get(sb: &Sandbox, path: &str) -> (u16, Value) {
    let r = admin(sb)
        .get(format!("{}{path}", sb.origin()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn admin_send(
    sb: &Sandbox,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = admin(sb).request(method, format!("{}{path}", sb.origin()));
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn dump_log_stats_reset_and_seed() {
    let sb = Sandbox::builder()
        .seed(5)
        .users(12)
        .groups(3)
        .spawn()
        .await
        .unwrap();
    let uf = api(&sb, Vendor::Userflow);
    uf.get("/users?limit=5").await;
    uf.delete("/users/user_00001").await;
    uf.clone().without_auth().get("/users").await;

    let (s, log) = admin_get(&sb, "/_sandbox/requests?vendor=userflow").await;
    assert_eq!(s, 200);
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "admin requests are not logged");
    assert_eq!(entries[0]["method"], "GET");
    assert_eq!(entries[0]["path"], "/userflow/users");
    assert_eq!(entries[0]["query"], "limit=5");
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[1]["method"], "DELETE");
    assert_eq!(entries[2]["status"], 401);
    assert!(entries[0]["at"].as_str().unwrap().ends_with('Z'));
    let lib = sb.requests();
    assert_eq!(lib.len(), 3);
    assert_eq!(lib[2].status, 401);
    assert_eq!(lib[0].vendor, Some(Vendor::Userflow));
    let since = lib[0].seq;
    let (_, later) = admin_get(&sb, &format!("/_sandbox/requests?since={since}")).await;
    assert_eq!(later["entries"].as_array().unwrap().len(), 2);
    let (_, stats) = admin_get(&sb, "/_sandbox/stats").await;
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["vendors"]["userflow"]["statuses"]["401"], 1);

    // Dumps, one vendor and all.
    let (_, d) = admin_get(&sb, "/_sandbox/dump/userflow").await;
    assert_eq!(d["users"].as_array().unwrap().len(), 11);
    assert_eq!(d, sb.dump(Vendor::Userflow));
    let (_, all) = admin_get(&sb, "/_sandbox/dump").await;
    assert_eq!(all["scim"]["Users"].as_array().unwrap().len(), 12);
    assert_eq!(all["guru"]["members"].as_array().unwrap().len(), 12);
    assert_eq!(admin_get(&sb, "/_sandbox/dump/nope").await.0, 404);

    // Reset: seeded data back, log empty.
    let (s, _) = admin_send(&sb, reqwest::Method::POST, "/_sandbox/reset", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        sb.dump(Vendor::Userflow)["users"].as_array().unwrap().len(),
        12
    );
    assert!(sb.requests().is_empty());
    assert_eq!(sb.stats().total, 0);

    // Seed: same seed, same data; other counts.
    let before = sb.dump(Vendor::Scim);
    let (s, _) = admin_send(
        &sb,
        reqwest::Method::POST,
        "/_sandbox/seed",
        Some(json!({"users": 40, "groups": 2})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        sb.dump(Vendor::Guru)["members"].as_array().unwrap().len(),
        40
    );
    admin_send(
        &sb,
        reqwest::Method::POST,
        "/_sandbox/seed",
        Some(json!({"users": 12, "groups": 3})),
    )
    .await;
    assert_eq!(
        sb.dump(Vendor::Scim)["Users"],
        before["Users"],
        "deterministic"
    );
    let (s, e) = admin_send(
        &sb,
        reqwest::Method::POST,
        "/_sandbox/seed",
        Some(json!({"people": 1})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(e["error"].as_str().unwrap().contains("people"));
    sb.reseed(roster_sandbox::SeedSpec {
        seed: 1,
        users: 0,
        groups: 0,
    });
    assert_eq!(sb.dump(Vendor::Userflow)["users"], json!([]));

    let (_, idx) = admin_get(&sb, "/_sandbox/").await;
    assert_eq!(idx["vendors"].as_array().unwrap().len(), 7);
    let (_, cfg) = admin_get(&sb, "/_sandbox/config/appcues").await;
    assert_eq!(cfg, sb.config(Vendor::Appcues));
    sb.clear_requests();
}

#[tokio::test]
async fn configs_name_every_credential_and_outside_paths_list_prefixes() {
    let sb = Sandbox::builder().users(0).groups(0).spawn().await.unwrap();
    for v in Vendor::ALL {
        let c = sb.config(v);
        assert_eq!(c["vendor"], v.name());
        assert_eq!(c["base_url"], sb.base_url(v));
        assert!(sb.base_url(v).ends_with(v.prefix()));
    }
    assert_eq!(sb.config(Vendor::Guru)["username"], "admin@sandbox.example");
    assert!(sb.config(Vendor::Appcues)["account_id"].is_string());
    assert_eq!(
        sb.config(Vendor::GuruScim)["scim_token"],
        "sandbox-guru-scim-token"
    );
    let r = reqwest::get(format!("{}/nowhere", sb.origin()))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["prefixes"].as_array().unwrap().len(), 7);
    assert_eq!(sb.requests()[0].vendor, None);
    assert_eq!("guru_scim".parse::<Vendor>().unwrap(), Vendor::GuruScim);
    assert!("salesforce".parse::<Vendor>().is_err());
}

fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn background_sandbox_serves_plain_tests() {
    let sb = Sandbox::builder()
        .users(3)
        .groups(1)
        .start_background()
        .unwrap();
    let out = raw_get(sb.addr(), "/_sandbox/dump/userflow");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("user_00003"));
    let addr = sb.addr();
    sb.shutdown();
    assert!(TcpStream::connect(addr).is_err(), "stopped");
}

#[test]
fn binary_prints_base_urls_and_stops_on_sigterm() {
    let mut child = bin::sandbox()
        .args([
            "--port",
            "0",
            "--users",
            "4",
            "--groups",
            "1",
            "--rate-limit",
            "appcues=5/s",
            "--fail-next",
            "/userflow/users,count=1,status=503",
        ])
        .command()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(
        first.starts_with("roster-sandbox listening on http://127.0.0.1:"),
        "{first}"
    );
    let origin = first.split_whitespace().nth(3).unwrap().to_owned();
    let mut urls = Vec::new();
    for _ in 0..8 {
        urls.push(lines.next().unwrap().unwrap());
    }
    assert!(urls[1].trim_start().starts_with("userflow"));
    assert!(urls[1].ends_with(&format!("{origin}/userflow")));
    let addr: std::net::SocketAddr = origin.trim_start_matches("http://").parse().unwrap();
    let faults = raw_get(addr, "/_sandbox/faults");
    assert!(faults.contains("\"5/s\""), "{faults}");
    assert!(faults.contains("/userflow/users"));

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "clean exit on SIGTERM: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    let bad = bin::sandbox()
        .args(["--rate-limit", "userflow=fast"])
        .output();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid rate limit"));
}

#[test]
fn samples_point_at_the_default_port_with_the_default_credentials() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut seen = 0;
    for v in Vendor::ALL {
        let base = format!(
            "http://127.0.0.1:{}{}",
            roster_sandbox::DEFAULT_PORT,
            v.prefix()
        );
        let want = roster_sandbox::vendor_config(v, &base, &roster_sandbox::Credentials::default());
        let listable = matches!(
            v,
            Vendor::Userflow | Vendor::Guru | Vendor::GuruScim | Vendor::Scim
        );
        let mut files = vec![format!("target-{}.json", v.name())];
        if listable {
            files.push(format!("tap-{}.json", v.name()));
        }
        if matches!(v, Vendor::Userpilot | Vendor::Appcues) {
            files.push(format!("target-{}-bulk.json", v.name()));
        }
        for f in files {
            let text = std::fs::read_to_string(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            let got: Value = serde_json::from_str(&text).unwrap();
            for (k, val) in want.as_object().unwrap() {
                assert_eq!(&got[k], val, "{f}: {k}");
            }
            seen += 1;
        }
    }
    assert_eq!(seen, 13);
}

/// `GET /_sandbox/users/{vendor}?ids=`: the user count and the named users, for every vendor
/// (what bulk.sh and the soak check instead of a million-user dump).
#[tokio::test]
async fn users_summary_counts_and_picks() {
    let sb = Sandbox::builder().users(5).groups(1).spawn().await.unwrap();
    let (s, v) = admin_get(&sb, "/_sandbox/users/userflow?ids=nobody").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], 5);
    assert_eq!(v["users"]["nobody"], Value::Null);
    let first = sb.dump(Vendor::Userflow)["users"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, v) = admin_get(&sb, &format!("/_sandbox/users/userflow?ids={first}")).await;
    assert_eq!(v["users"][&first]["id"], json!(first));
    let ac = api(&sb, Vendor::Appcues);
    let up = api(&sb, Vendor::Userpilot);
    ac.patch(
        "/v2/accounts/10001/users/a1/profile",
        &json!({"plan": "pro"}),
    )
    .await;
    up.post(
        "/v1/identify",
        &json!({"user_id": "p1", "metadata": {"plan": "team"}}),
    )
    .await;
    let (_, v) = admin_get(&sb, "/_sandbox/users/appcues?ids=a1,a2").await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["users"]["a1"]["plan"], "pro");
    assert_eq!(v["users"]["a2"], Value::Null);
    let (_, v) = admin_get(&sb, "/_sandbox/users/userpilot?ids=p1").await;
    assert_eq!(v["count"], 1);
    assert_eq!(v["users"]["p1"]["metadata"]["plan"], "team");
    let (_, v) = admin_get(&sb, "/_sandbox/users/scim").await;
    assert_eq!(v["count"], 5);
    let (s, _) = admin_get(&sb, "/_sandbox/users/nope").await;
    assert_eq!(s, 404);
}
