//! The write-only vendors (UserGuiding, Userpilot, Appcues) and the bulk job lifecycles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::api;

use std::time::{Duration, Instant};

use api::{Api, Resp, api, multipart};
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

async fn sandbox() -> Sandbox {
    Sandbox::builder().users(0).groups(0).spawn().await.unwrap()
}

/// Polls a job URL until it reaches a terminal status; returns every status seen, in order.
async fn poll(a: &Api, path: &str) -> (Vec<String>, Resp) {
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = a.get(path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        let s = r.body["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if s == "completed" || s == "failed" {
            return (seen, r);
        }
        assert!(Instant::now() < deadline, "job stuck in {s}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn userguiding_identify_with_company() {
    let sb = sandbox().await;
    let ug = api(&sb, Vendor::UserGuiding);
    let r = ug
        .post("/identify", &json!({"userId": "user_123", "attributes": {"email": "u@x.com", "plan": "pro", "seats": 3, "trial": false}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"success": true}));
    let r = ug
        .post("/identify", &json!({"userId": "user_123", "attributes": {"plan": null}, "company": {"companyId": "acme", "attributes": {"name": "Acme Corp"}}}))
        .await;
    assert_eq!(r.status, 200);
    let d = sb.dump(Vendor::UserGuiding);
    assert_eq!(
        d["users"][0]["attributes"],
        json!({"email": "u@x.com", "plan": null, "seats": 3, "trial": false})
    );
    assert_eq!(d["users"][0]["companyId"], "acme");
    assert_eq!(
        d["companies"][0],
        json!({"companyId": "acme", "attributes": {"name": "Acme Corp"}})
    );
    for body in [
        json!({"attributes": {}}),
        json!({"userId": "u", "attributes": {"tags": ["a"]}}),
        json!({"userId": "u", "attributes": {"o": {"x": 1}}}),
        json!({"userId": "u", "company": {"attributes": {}}}),
        json!({"user_id": "u"}),
    ] {
        let r = ug.post("/identify", &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.body["success"], false);
    }
    let r = ug
        .clone()
        .without_auth()
        .post("/identify", &json!({"userId": "u"}))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["success"], false);
}

#[tokio::test]
async fn userpilot_realtime_identify_track_delete() {
    let sb = sandbox().await;
    let up = api(&sb, Vendor::Userpilot);
    let r = up
        .post("/v1/identify", &json!({"user_id": "u1", "metadata": {"name": "Ada", "plan": "pro"}, "company": {"id": "c1", "name": "Acme"}}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert!(r.text.is_empty());
    let r = up
        .post(
            "/v1/identify",
            &json!({"user_id": "u2", "company": {"company_id": "c2", "plan": "free"}}),
        )
        .await;
    assert_eq!(r.status, 202, "OpenAPI's company_id form");
    let r = up
        .post(
            "/v1/identify",
            &json!({"user_id": "u3", "company": {"id": "c2", "company_id": "c2"}}),
        )
        .await;
    assert_eq!(r.status, 202, "both forms at once, agreeing");
    up.post(
        "/v1/identify",
        &json!({"user_id": "u1", "metadata": {"plan": "enterprise"}}),
    )
    .await;
    assert_eq!(
        up.post(
            "/v1/companies/identify",
            &json!({"company_id": "c1", "metadata": {"seats": "5"}})
        )
        .await
        .status,
        202
    );
    assert_eq!(
        up.post(
            "/v1/track",
            &json!({"user_id": "u1", "event_name": "exported", "metadata": {"n": 1}})
        )
        .await
        .status,
        202
    );
    let d = sb.dump(Vendor::Userpilot);
    assert_eq!(
        d["users"][0]["metadata"],
        json!({"name": "Ada", "plan": "enterprise"})
    );
    assert_eq!(d["users"][0]["company_id"], "c1");
    assert_eq!(d["users"][1]["company_id"], "c2");
    assert_eq!(
        d["companies"][0]["metadata"],
        json!({"name": "Acme", "seats": "5"})
    );
    assert_eq!(d["events"][0]["event_name"], "exported");

    for (path, body) in [
        ("/v1/identify", json!({"metadata": {}})),
        (
            "/v1/identify",
            json!({"user_id": "u", "company": {"name": "no id"}}),
        ),
        (
            "/v1/identify",
            json!({"user_id": "u", "metadata": {"x": {"y": 1}}}),
        ),
        // Identify metadata is string-only (Userpilot's API reference).
        (
            "/v1/identify",
            json!({"user_id": "u", "metadata": {"n": 1}}),
        ),
        (
            "/v1/companies/identify",
            json!({"company_id": "c", "metadata": {"paid": true}}),
        ),
        (
            "/v1/identify",
            json!({"user_id": "u", "company": {"id": "c", "seats": 3}}),
        ),
        ("/v1/identify", json!({"user_id": "u", "traits": {}})),
        ("/v1/track", json!({"user_id": "u"})),
        // Track documents user_id, event_name and metadata only: no time, no company_id.
        (
            "/v1/track",
            json!({"user_id": "u", "event_name": "e", "timestamp": "2024-01-01T00:00:00Z"}),
        ),
        (
            "/v1/track",
            json!({"user_id": "u", "event_name": "e", "company_id": "c1"}),
        ),
        (
            "/v1/identify",
            json!({"user_id": "u", "company": {"id": "c1", "company_id": "c2"}}),
        ),
        ("/v1/companies/identify", json!({"metadata": {}})),
    ] {
        let r = up.post(path, &body).await;
        assert_eq!(r.status, 400, "{path} {body}");
        assert!(r.body["errors"][0]["message"].is_string());
    }
    // Token auth and the version header are both required.
    let r = up
        .clone()
        .without_auth()
        .post("/v1/identify", &json!({"user_id": "u"}))
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body["errors"].is_array());
    let r = up
        .send(
            reqwest::Client::new()
                .post(format!("{}/v1/identify", up.base))
                .header("Authorization", "Token sandbox-userpilot-key")
                .json(&json!({"user_id": "u"})),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["errors"][0]["error_code"], "invalid_api_version");

    let r = up
        .send(
            up.request(reqwest::Method::DELETE, "/v1/users")
                .json(&json!({"users": ["u1"]})),
        )
        .await;
    assert_eq!(r.status, 202);
    assert!(r.body["message"].as_str().unwrap().contains('1'));
    let d = sb.dump(Vendor::Userpilot);
    assert_eq!(d["scheduled_deletions"]["users"], json!(["u1"]));
    assert_eq!(up.get("/v1/validate").await.status, 200);
}

#[tokio::test]
async fn userpilot_bulk_job_lifecycle_limits_and_conflict() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        // Each status lasts 150 ms, long enough for a 2 ms poller to see it even when loaded.
        .job_step(Duration::from_millis(150))
        .job_rows_per_sec(2_000)
        .userpilot_max_rows(500)
        .spawn()
        .await
        .unwrap();
    let up = api(&sb, Vendor::Userpilot);
    let rows: Vec<Value> = (0..300)
        .map(|i| json!({"user_id": format!("u{i}"), "company_id": "c1", "metadata": {"n": i.to_string()}}))
        .collect();
    let r = up
        .post("/v1/users/bulk_identify", &json!({"users": rows}))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["total_rows"], 300);
    let id = r.body["job_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("bulk:jobs:NX-"));
    // One job at a time, users or companies.
    let r = up
        .post(
            "/v1/companies/bulk_identify",
            &json!({"companies": [{"company_id": "c1"}]}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    let enc: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
    let (seen, last) = poll(&up, &format!("/v1/background_jobs/{enc}")).await;
    assert_eq!(seen.first().unwrap(), "queued");
    assert_eq!(seen.last().unwrap(), "completed");
    for s in ["validating", "processing", "pending_refresh"] {
        assert!(seen.contains(&s.to_owned()), "{seen:?}");
    }
    assert_eq!(last.body["completed_rows"], 300);
    assert!(last.body["end_time"].is_string());
    let d = sb.dump(Vendor::Userpilot);
    assert_eq!(d["users"].as_array().unwrap().len(), 300);
    assert_eq!(
        up.get("/v1/background_jobs")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Over the row limit: 413, nothing queued.
    let many: Vec<Value> = (0..501)
        .map(|i| json!({"user_id": format!("x{i}")}))
        .collect();
    let r = up
        .post("/v1/users/bulk_identify", &json!({"users": many}))
        .await;
    assert_eq!(r.status, 413);
    // A bad row fails the job in validation; nothing is applied.
    let r = up
        .post(
            "/v1/companies/bulk_identify",
            &json!({"companies": [{"company_id": "c9", "metadata": {"a": "1"}}, {"metadata": {}}]}),
        )
        .await;
    assert_eq!(r.status, 202);
    let enc: String =
        url::form_urlencoded::byte_serialize(r.body["job_id"].as_str().unwrap().as_bytes())
            .collect();
    let (seen, last) = poll(&up, &format!("/v1/background_jobs/{enc}")).await;
    assert_eq!(seen.last().unwrap(), "failed");
    assert_eq!(last.body["errors"][0]["row"], 2);
    assert!(
        sb.dump(Vendor::Userpilot)["companies"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        up.get("/v1/background_jobs/bulk%3Ajobs%3Anope")
            .await
            .status,
        404
    );

    // The fail_jobs fault.
    sb.faults().fail_jobs(true);
    let r = up
        .post(
            "/v1/users/bulk_identify",
            &json!({"users": [{"user_id": "z"}]}),
        )
        .await;
    let enc: String =
        url::form_urlencoded::byte_serialize(r.body["job_id"].as_str().unwrap().as_bytes())
            .collect();
    let (seen, last) = poll(&up, &format!("/v1/background_jobs/{enc}")).await;
    assert_eq!(seen.last().unwrap(), "failed");
    assert!(
        last.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("fail_jobs")
    );
    assert!(
        !sb.dump(Vendor::Userpilot)["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["user_id"] == "z")
    );
}

#[tokio::test]
async fn appcues_profiles_events_groups() {
    let sb = sandbox().await;
    let ac = api(&sb, Vendor::Appcues);
    let acct = sb.config(Vendor::Appcues)["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = |s: &str| format!("/v2/accounts/{acct}{s}");
    let r = ac
        .patch(&p("/users/u1/profile"), &json!({"plan": "pro", "seats": 5}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"status": 200, "title": "OK"}));
    ac.patch(
        &p("/users/u1/profile"),
        &json!({"seats": null, "role": "admin"}),
    )
    .await;
    assert_eq!(
        ac.get(&p("/users/u1/profile")).await.body,
        json!({"user_id": "u1", "plan": "pro", "seats": null, "role": "admin"})
    );
    assert_eq!(
        ac.patch(&p("/users/u1/profile"), &json!({"tags": ["a"]}))
            .await
            .status,
        400
    );
    let r = ac.get(&p("/users/ghost/profile")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], true);
    assert_eq!(r.body["status"], 404);
    assert_eq!(
        ac.post(
            &p("/users/u1/events"),
            &json!({"name": "clicked", "attributes": {"x": 1}})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        ac.post(&p("/users/u1/events"), &json!({"attributes": {}}))
            .await
            .status,
        400
    );
    assert_eq!(
        ac.get(&p("/users/u1/events")).await.body[0]["name"],
        "clicked"
    );
    assert_eq!(
        ac.patch(&p("/groups/g1/profile"), &json!({"name": "Acme"}))
            .await
            .status,
        200
    );
    assert_eq!(
        ac.get(&p("/groups/g1/profile")).await.body,
        json!({"group_id": "g1", "name": "Acme"})
    );
    assert_eq!(
        ac.post(&p("/groups/g1/users"), &json!({"user_ids": ["u1", "u2"]}))
            .await
            .status,
        204
    );
    assert_eq!(
        sb.dump(Vendor::Appcues)["groups"][0]["user_ids"],
        json!(["u1", "u2"])
    );
    assert_eq!(ac.delete(&p("/users/u1/profile")).await.status, 204);
    assert_eq!(ac.get(&p("/users/u1/profile")).await.status, 404);
    // Another account's path, and bad credentials.
    assert_eq!(
        ac.get("/v2/accounts/999/users/u1/profile").await.status,
        403
    );
    let r = ac.clone().without_auth().get(&p("/users/u1/profile")).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["title"], "Unauthorized");
}

#[tokio::test]
async fn appcues_imports_ndjson_csv_multipart_and_413() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .appcues_body_limit(64 * 1024)
        .job_step(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap();
    let ac = api(&sb, Vendor::Appcues);
    let acct = sb.config(Vendor::Appcues)["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = |s: &str| format!("/v2/accounts/{acct}{s}");
    let ndjson = (0..50)
        .map(|i| format!("{{\"user_id\":\"n{i}\",\"plan\":\"pro\"}}"))
        .collect::<Vec<_>>()
        .join("\n");
    let r = ac
        .post_raw(
            &p("/import/profiles"),
            "application/x-ndjson",
            ndjson.into_bytes(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["title"], "Accepted");
    let job_url = r.body["job_url"].as_str().unwrap().to_owned();
    assert!(job_url.ends_with(&format!("/jobs/{}", r.body["job_id"].as_str().unwrap())));
    let (seen, last) = poll(&ac, &job_url).await;
    assert_eq!(seen.last().unwrap(), "completed", "{seen:?}");
    assert_eq!(last.body["completed_rows"], 50);

    // The seed's path, CSV, one bad row reported and skipped.
    let r = ac
        .post_raw(
            &p("/import/users"),
            "text/csv",
            b"user_id,plan\nc1,free\n,lost\nc2,\"pro, annual\"\n".to_vec(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let (_, last) = poll(&ac, r.body["job_url"].as_str().unwrap()).await;
    assert_eq!(last.body["total_rows"], 3);
    assert_eq!(last.body["completed_rows"], 2);
    assert_eq!(last.body["errors"][0]["row"], 2);
    assert_eq!(
        ac.get(&p("/users/c2/profile")).await.body["plan"],
        "pro, annual"
    );

    // Multipart file upload, as production scripts send it.
    let (ct, body) = multipart("users.csv", "text/csv", b"user_id,role\nm1,admin\n");
    let r = ac.post_raw(&p("/import/profiles"), &ct, body).await;
    assert_eq!(r.status, 202, "{}", r.text);
    poll(&ac, r.body["job_url"].as_str().unwrap()).await;
    assert_eq!(ac.get(&p("/users/m1/profile")).await.body["role"], "admin");

    // Over the body limit, a broken line, no rows.
    let big = vec![b'{'; 64 * 1024 + 1];
    let r = ac
        .post_raw(&p("/import/profiles"), "application/x-ndjson", big)
        .await;
    assert_eq!(r.status, 413);
    assert_eq!(r.body["status"], 413);
    let r = ac
        .post_raw(
            &p("/import/profiles"),
            "application/x-ndjson",
            b"{\"user_id\":1}\n{nope\n".to_vec(),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body["detail"].as_str().unwrap().contains("line 2"));
    assert_eq!(
        ac.post_raw(&p("/import/profiles"), "text/csv", b"plan\nx\n".to_vec())
            .await
            .status,
        400
    );

    // A failed job.
    sb.faults().fail_jobs(true);
    let r = ac
        .post_raw(
            &p("/import/profiles"),
            "application/x-ndjson",
            b"{\"user_id\":\"f1\"}".to_vec(),
        )
        .await;
    let (seen, _) = poll(&ac, r.body["job_url"].as_str().unwrap()).await;
    assert_eq!(seen.last().unwrap(), "failed");
    assert_eq!(ac.get(&p("/users/f1/profile")).await.status, 404);
    assert_eq!(ac.get(&p("/jobs/nope")).await.status, 404);
}

#[tokio::test]
async fn appcues_default_import_limit_is_20_mb() {
    let sb = sandbox().await;
    let ac = api(&sb, Vendor::Appcues);
    let acct = sb.config(Vendor::Appcues)["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = format!("{{\"user_id\":\"u\",\"pad\":\"{}\"}}\n", "x".repeat(1000));
    let body = line.repeat(20 * 1024 * 1024 / line.len() + 1).into_bytes();
    assert!(body.len() > 20 * 1024 * 1024);
    let r = ac
        .post_raw(
            &format!("/v2/accounts/{acct}/import/profiles"),
            "application/x-ndjson",
            body,
        )
        .await;
    assert_eq!(r.status, 413);
}

#[tokio::test]
async fn appcues_segments() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .job_step(Duration::from_millis(5))
        .spawn()
        .await
        .unwrap();
    let ac = api(&sb, Vendor::Appcues);
    let acct = sb.config(Vendor::Appcues)["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let p = |s: &str| format!("/v2/accounts/{acct}{s}");
    let r = ac
        .post(
            &p("/segments"),
            &json!({"name": "Power Users", "description": "pro plan"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(
        r.body["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/segments/{id}"))
    );
    assert_eq!(
        ac.post(&p("/segments"), &json!({"description": "x"}))
            .await
            .status,
        400
    );
    let (ct, body) = multipart("ids.csv", "text/csv", b"user_id\nu1\nu2\nu1\n");
    let r = ac
        .post_raw(&p(&format!("/segments/{id}/add_user_ids")), &ct, body)
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(r.body["status"], 202);
    poll(&ac, r.body["job_url"].as_str().unwrap()).await;
    assert_eq!(
        ac.get(&p(&format!("/segments/{id}"))).await.body["user_ids"],
        json!(["u1", "u2"])
    );
    let r = ac
        .post_raw(
            &p(&format!("/segments/{id}/remove_user_ids")),
            "text/csv",
            b"user_id\nu1\n".to_vec(),
        )
        .await;
    poll(&ac, r.body["job_url"].as_str().unwrap()).await;
    assert_eq!(
        ac.get(&p(&format!("/segments/{id}"))).await.body["user_ids"],
        json!(["u2"])
    );
    assert_eq!(
        ac.post_raw(
            &p("/segments/nope/add_user_ids"),
            "text/csv",
            b"user_id\nu1\n".to_vec()
        )
        .await
        .status,
        404
    );
    assert_eq!(
        ac.get(&p("/segments")).await.body.as_array().unwrap().len(),
        1
    );
}

/// `--realistic-limits` enforces Userpilot's "1 delete request per 2 s" (users and companies
/// share it), answered 429 without `Retry-After`, on top of its 600/min.
#[tokio::test]
async fn userpilot_deletes_are_limited_to_one_per_2_s() {
    let sb = Sandbox::builder()
        .users(0)
        .groups(0)
        .realistic_limits()
        .spawn()
        .await
        .unwrap();
    let up = api(&sb, Vendor::Userpilot);
    let del = |path: &'static str, body: Value| {
        let up = &up;
        async move {
            up.send(up.request(reqwest::Method::DELETE, path).json(&body))
                .await
        }
    };
    assert_eq!(del("/v1/users", json!({"users": ["u1"]})).await.status, 202);
    let r = del("/v1/companies", json!({"companies": ["c1"]})).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert!(r.header("retry-after").is_none());
    assert!(r.text.contains("1 request per 2 seconds"), "{}", r.text);
    // Identify is not held up by the delete limit.
    let r = up
        .post(
            "/v1/identify",
            &json!({"user_id": "u2", "metadata": {"plan": "pro"}}),
        )
        .await;
    assert_eq!(r.status, 202);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        del("/v1/companies", json!({"companies": ["c1"]}))
            .await
            .status,
        202
    );
    let d = sb.dump(Vendor::Userpilot);
    assert_eq!(d["scheduled_deletions"]["companies"], json!(["c1"]));
}
