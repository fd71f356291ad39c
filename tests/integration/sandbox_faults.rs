//! Faults on demand: rate limits, UserGuiding's block, 500/503, latency, dropped connections
//! and "fail the next N", through the library and the admin API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::api;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use api::api;
use roster_sandbox::{FailRule, RateLimit, Sandbox, UserGuidingBlock, Vendor};
use serde_json::{Value, json};

async fn sandbox() -> Sandbox {
    Sandbox::builder().users(3).groups(1).spawn().await.unwrap()
}

async fn admin_post(sb: &Sandbox, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}{path}", sb.origin()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn token_bucket_answers_429_in_each_vendors_shape() {
    let sb = sandbox().await;
    sb.faults()
        .rate_limit(Vendor::Userflow, "2/min,burst=2")
        .unwrap();
    sb.faults().rate_limit(Vendor::Appcues, "1/min").unwrap();
    let uf = api(&sb, Vendor::Userflow);
    assert_eq!(uf.get("/users").await.status, 200);
    assert_eq!(uf.get("/users").await.status, 200);
    let r = uf.get("/users").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["error"]["code"], "rate_limited");
    assert!(
        r.header("retry-after").is_none(),
        "Userflow documents no Retry-After"
    );

    let ac = api(&sb, Vendor::Appcues);
    let acct = sb.config(Vendor::Appcues)["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v2/accounts/{acct}/users/u1/profile");
    assert_eq!(ac.patch(&path, &json!({"a": 1})).await.status, 200);
    let r = ac.patch(&path, &json!({"a": 2})).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["status"], 429);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Nothing was applied by the refused request.
    assert_eq!(sb.dump(Vendor::Appcues)["users"][0]["a"], 1);

    // The admin API: a per-minute rate and Retry-After switched off.
    let (s, v) = admin_post(&sb, "/_sandbox/faults", json!({"rate_limit": {"appcues": {"rate": "600/min", "retry_after": false}, "userflow": null}})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["vendors"]["appcues"]["rate_limit"]["burst"], 10.0);
    assert_eq!(uf.get("/users").await.status, 200, "cleared");
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let r = ac.get(&path).await;
        statuses.push(r.status);
        if r.status == 429 {
            assert!(r.header("retry-after").is_none());
        }
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(statuses[0], 200);

    // Every refusal is in the request log, named.
    let limited = sb
        .requests()
        .iter()
        .filter(|e| e.fault.as_deref() == Some("rate_limited"))
        .count();
    assert!(limited >= 3);
    assert!(sb.stats().vendors["appcues"].faults >= 2);
}

#[tokio::test]
async fn a_second_limit_refills() {
    let sb = sandbox().await;
    sb.faults().set_rate_limit(
        Vendor::Scim,
        Some(RateLimit::parse("5/s").unwrap().with_retry_after(true)),
    );
    let sc = api(&sb, Vendor::Scim);
    let mut first_429 = None;
    for i in 0..20 {
        if sc.get("/Users").await.status == 429 {
            first_429 = Some(i);
            break;
        }
    }
    assert!(first_429.is_some());
    let r = sc.get("/Users").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(r.body["status"], "429");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        sc.get("/Users").await.status,
        200,
        "refilled after the advertised wait"
    );
}

#[tokio::test]
async fn userguiding_blocks_after_50_in_10_seconds() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .userguiding_block(Some(UserGuidingBlock {
            block_secs: 1.0,
            ..UserGuidingBlock::default()
        }))
        .spawn()
        .await
        .unwrap();
    let ug = api(&sb, Vendor::UserGuiding);
    let body = json!({"userId": "u1", "attributes": {"n": 1}});
    for i in 0..50 {
        assert_eq!(ug.post("/identify", &body).await.status, 200, "request {i}");
    }
    let r = ug.post("/identify", &body).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["success"], false);
    assert!(r.header("retry-after").is_none());
    assert_eq!(
        ug.post("/identify", &body).await.status,
        429,
        "still blocked"
    );
    let blocked = sb
        .requests()
        .iter()
        .filter(|e| e.fault.as_deref() == Some("userguiding_block"))
        .count();
    assert_eq!(blocked, 2);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        ug.post("/identify", &body).await.status,
        200,
        "the block ended"
    );
}

#[tokio::test]
async fn seeded_server_errors_are_reproducible() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let sb = Sandbox::builder()
            .seed(seed)
            .users(1)
            .groups(0)
            .error_rate(Some(Vendor::Guru), 0.5)
            .spawn()
            .await
            .unwrap();
        let g = api(&sb, Vendor::Guru);
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(g.get("/groups").await.status);
        }
        out
    }
    let a = statuses(9).await;
    assert_eq!(a, statuses(9).await, "same seed, same faults");
    assert!(a.iter().all(|s| [200, 500, 503].contains(s)));
    assert!(a.contains(&200) && a.iter().any(|s| *s >= 500));

    let sb = sandbox().await;
    sb.faults().error_rate(None, 1.0).unwrap();
    let r = api(&sb, Vendor::Userflow).get("/users").await;
    assert!(r.status == 500 || r.status == 503);
    assert!(r.body["error"]["message"].is_string());
    let r = api(&sb, Vendor::Scim).get("/Users").await;
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert!(sb.faults().error_rate(None, 1.5).is_err());
    sb.faults().clear();
    assert_eq!(api(&sb, Vendor::Userflow).get("/users").await.status, 200);
}

#[tokio::test]
async fn latency_is_added_and_logged() {
    let sb = sandbox().await;
    sb.faults()
        .latency(Some(Vendor::Guru), Duration::from_millis(200));
    let g = api(&sb, Vendor::Guru);
    let t = Instant::now();
    assert_eq!(g.get("/groups").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    let e = sb.requests().pop().unwrap();
    assert_eq!(e.fault.as_deref(), Some("latency 200ms"));
    assert!(e.duration_ms >= 200.0);
    api(&sb, Vendor::Userflow).get("/users").await;
    assert!(
        sb.requests().pop().unwrap().fault.is_none(),
        "other vendors are not slowed"
    );
}

#[tokio::test]
async fn fail_next_counts_down_per_path_and_method() {
    let sb = sandbox().await;
    sb.faults().fail_next(
        FailRule::new("/userflow/users", 2)
            .status(503)
            .method("POST")
            .retry_after(3),
    );
    let uf = api(&sb, Vendor::Userflow);
    assert_eq!(uf.get("/users").await.status, 200, "other method");
    for _ in 0..2 {
        let r = uf.post("/users", &json!({"id": "x"})).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").as_deref(), Some("3"));
    }
    assert_eq!(uf.post("/users", &json!({"id": "x"})).await.status, 200);
    assert!(sb.faults().view().fail_next.is_empty());
    let (s, _) = admin_post(
        &sb,
        "/_sandbox/faults/fail_next",
        json!({"path": "/guru/api/v1/*", "count": 1, "status": 429}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(api(&sb, Vendor::Guru).get("/groups").await.status, 429);
    assert_eq!(api(&sb, Vendor::Guru).get("/groups").await.status, 200);
    let log = sb.requests();
    assert_eq!(
        log.iter()
            .filter(|e| e.fault.as_deref() == Some("fail_next"))
            .count(),
        3
    );
}

#[tokio::test]
async fn dropped_connections_get_no_answer() {
    let sb = sandbox().await;
    sb.faults().drop_rate(Some(Vendor::Scim), 1.0).unwrap();
    let sc = api(&sb, Vendor::Scim);
    let err = sc
        .request(reqwest::Method::GET, "/Users")
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    let e = sb.requests().pop().unwrap();
    assert_eq!(e.status, 0);
    assert_eq!(e.fault.as_deref(), Some("dropped"));
    sb.faults().drop_rate(Some(Vendor::Scim), 0.0).unwrap();
    assert_eq!(sc.get("/Users").await.status, 200);
}

#[test]
fn dropped_connection_on_a_keep_alive_connection() {
    let sb = Sandbox::builder()
        .users(1)
        .groups(0)
        .start_background()
        .unwrap();
    let mut s = TcpStream::connect(sb.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /userflow/users HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer sandbox-userflow-key\r\n\r\n",
        sb.addr()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = [0u8; 65536];
    let n = s.read(&mut buf).unwrap();
    let first = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"));
    // The same connection: the next request's answer never comes.
    sb.faults()
        .fail_next(FailRule::drop_connection("/userflow/users", 1));
    s.write_all(req.as_bytes()).unwrap();
    let mut rest = Vec::new();
    let got = s.read_to_end(&mut rest);
    assert!(
        got.is_err() || rest.is_empty(),
        "expected EOF or reset, got {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        sb.requests().last().unwrap().fault.as_deref(),
        Some("fail_next dropped")
    );
    // A new connection works.
    let mut s2 = TcpStream::connect(sb.addr()).unwrap();
    s2.write_all(
        req.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s2.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn admin_faults_show_patch_replace_clear() {
    let sb = sandbox().await;
    let (s, v) = admin_post(
        &sb,
        "/_sandbox/faults",
        json!({"error_rate": {"userflow": 0.25}, "latency_ms": 5, "userguiding_block": true, "fail_jobs": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["vendors"]["userflow"]["error_rate"], 0.25);
    assert_eq!(v["vendors"]["scim"]["latency_ms"], 5);
    assert_eq!(v["userguiding_block"]["block_secs"], 60.0);
    assert_eq!(v["fail_jobs"], true);
    let (s, v) = admin_post(&sb, "/_sandbox/faults", json!({"error_rate": 3})).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("between 0 and 1"));
    let got: Value = reqwest::get(format!("{}/_sandbox/faults", sb.origin()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, serde_json::to_value(sb.faults().view()).unwrap());
    let r = reqwest::Client::new()
        .delete(format!("{}/_sandbox/faults", sb.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sb.faults().view(), roster_sandbox::FaultSettings::default());
    let r = reqwest::Client::new()
        .put(format!("{}/_sandbox/faults", sb.origin()))
        .json(&json!({"vendors": {"guru": {"latency_ms": 1}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(sb.faults().view().vendors[&Vendor::Guru].latency_ms, 1);
    // Reset restores the faults the sandbox started with (none here).
    sb.reset();
    assert_eq!(sb.faults().view(), roster_sandbox::FaultSettings::default());
}

/// `apply_then_fail`: the vendor applies the write, then the answer is a 5xx or a dropped
/// connection ("the vendor acted but the answer never arrived"), by rule and by rate.
#[tokio::test]
async fn apply_then_fail_applies_the_write_and_loses_the_answer() {
    let sb = Sandbox::builder().users(0).groups(0).spawn().await.unwrap();
    let uf = api(&sb, Vendor::Userflow);
    sb.faults()
        .fail_next(FailRule::apply_then_fail("/userflow/users", 1).status(503));
    let r = uf
        .post("/users", &json!({"id": "a1", "attributes": {}}))
        .await;
    assert_eq!(r.status, 503);
    sb.faults()
        .fail_next(FailRule::apply_then_drop("/userflow/users", 1).method("POST"));
    let err = uf
        .request(reqwest::Method::POST, "/users")
        .json(&json!({"id": "a2", "attributes": {}}))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err}");
    let ids: Vec<String> = sb.dump(Vendor::Userflow)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a1", "a2"], "both writes were applied");
    let faults: Vec<(u16, Option<String>)> = sb
        .requests()
        .into_iter()
        .map(|e| (e.status, e.fault))
        .collect();
    assert_eq!(
        faults,
        [
            (503, Some("apply_then_fail".to_owned())),
            (0, Some("apply_then_fail dropped".to_owned()))
        ]
    );

    // The admin API takes the rule and the rate; every vendor is covered by the rate.
    let (s, v) = admin_post(
        &sb,
        "/_sandbox/faults/fail_next",
        json!({"path": "/guru/api/v1/groups", "count": 1, "status": 500, "apply_then_fail": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let guru = api(&sb, Vendor::Guru);
    let groups = |sb: &Sandbox| sb.dump(Vendor::Guru)["groups"].as_array().unwrap().len();
    let before = groups(&sb);
    assert_eq!(
        guru.post("/groups", &json!({"name": "G"})).await.status,
        500
    );
    assert_eq!(groups(&sb), before + 1, "the group was created");
    let (s, v) = admin_post(
        &sb,
        "/_sandbox/faults",
        json!({"apply_then_fail_rate": 1.0}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    for vendor in Vendor::ALL {
        assert_eq!(v["vendors"][vendor.name()]["apply_then_fail_rate"], 1.0);
    }
}

/// A client that gives up (times out) does not cancel a write the vendor has begun.
#[tokio::test]
async fn a_client_that_gives_up_does_not_cancel_the_write() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .latency(Some(Vendor::Userflow), Duration::from_millis(300))
        .spawn()
        .await
        .unwrap();
    let uf = api(&sb, Vendor::Userflow);
    let err = uf
        .request(reqwest::Method::POST, "/users")
        .timeout(Duration::from_millis(100))
        .json(&json!({"id": "late", "attributes": {}}))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sb.dump(Vendor::Userflow)["users"][0]["id"], "late");
    assert_eq!(sb.requests().len(), 1, "the abandoned request is logged");
}
