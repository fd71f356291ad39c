//! The Userflow emulation, tested over HTTP against a running sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::api;

use api::api;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

async fn sandbox(users: usize, groups: usize) -> Sandbox {
    Sandbox::builder()
        .seed(7)
        .users(users)
        .groups(groups)
        .spawn()
        .await
        .unwrap()
}

fn ids(v: &Value) -> Vec<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn full_pagination_walk_follows_next_page_url() {
    let sb = sandbox(103, 5).await;
    let uf = api(&sb, Vendor::Userflow);
    let mut seen = Vec::new();
    let mut url = "/users?limit=10&order_by=created_at&sort=asc&expand=memberships".to_owned();
    let mut pages = 0;
    loop {
        let r = uf.get(&url).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.body["object"], "list");
        assert_eq!(r.body["url"], "/users");
        seen.extend(ids(&r.body));
        pages += 1;
        for u in r.body["data"].as_array().unwrap() {
            assert!(u["memberships"].is_array(), "expand=memberships");
        }
        if r.body["has_more"] == json!(false) {
            assert!(r.body["next_page_url"].is_null());
            break;
        }
        let next = r.body["next_page_url"].as_str().unwrap().to_owned();
        let query = next.split_once('?').unwrap().1;
        assert!(!query.starts_with("starting_after"), "{next}");
        assert!(query.ends_with(&format!("starting_after={}", seen.last().unwrap())));
        assert!(
            query.contains("expand=memberships"),
            "params are echoed: {next}"
        );
        url = next;
    }
    assert_eq!(pages, 11);
    assert_eq!(seen.len(), 103);
    let dumped: Vec<String> = sb.dump(Vendor::Userflow)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, dumped, "every user once, in created_at order");

    // Descending order walks the same set backwards.
    let r = uf.get("/users?limit=100&order_by=-created_at").await;
    let mut desc = ids(&r.body);
    let r2 = uf
        .get(&format!(
            "/users?limit=100&order_by=-created_at&starting_after={}",
            desc.last().unwrap()
        ))
        .await;
    desc.extend(ids(&r2.body));
    desc.reverse();
    assert_eq!(desc, seen);
}

#[tokio::test]
async fn cursor_only_request_still_gets_a_parameter_before_the_cursor() {
    let sb = sandbox(45, 2).await;
    let uf = api(&sb, Vendor::Userflow);
    let r = uf.get("/users").await;
    assert_eq!(ids(&r.body).len(), 20, "default limit is 20");
    let r = uf.get("/users?starting_after=user_00001").await;
    assert_eq!(ids(&r.body)[0], "user_00002");
    let next = r.body["next_page_url"].as_str().unwrap();
    assert_eq!(next, "/users?limit=20&starting_after=user_00021");
    let r = uf.get(next).await;
    assert_eq!(ids(&r.body).len(), 20);
    let r = uf.get("/users?limit=20&starting_after=user_00041").await;
    assert_eq!(
        ids(&r.body),
        vec!["user_00042", "user_00043", "user_00044", "user_00045"]
    );
    assert_eq!(r.body["has_more"], false);
}

#[tokio::test]
async fn list_parameter_errors_are_invalid_params() {
    let sb = sandbox(5, 1).await;
    let uf = api(&sb, Vendor::Userflow);
    for q in [
        "limit=101",
        "limit=0",
        "limit=abc",
        "order_by=name",
        "sort=up",
    ] {
        let r = uf.get(&format!("/users?{q}")).await;
        assert_eq!(r.status, 400, "{q}");
        assert_eq!(r.body["error"]["code"], "invalid_params", "{q}");
    }
    let r = uf.get("/users?limit=5&starting_after=ghost").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "invalid_params");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'ghost' not found")
    );
    // A deleted bookmark is the same 400 (the tap's restart path).
    assert_eq!(uf.delete("/users/user_00002").await.status, 200);
    let r = uf.get("/users?starting_after=user_00002").await;
    assert_eq!(r.status, 400);
    assert_eq!(uf.get("/users?limit=100").await.status, 200);
    assert_eq!(
        uf.get("/users?ending_before=user_00004&limit=1").await.body["data"][0]["id"],
        "user_00003"
    );
}

#[tokio::test]
async fn upsert_merges_and_null_clears_in_both_forms() {
    let sb = sandbox(0, 0).await;
    let uf = api(&sb, Vendor::Userflow);
    let r = uf
        .post(
            "/users",
            &json!({"id": "u1", "attributes": {"a": 1, "b": "x", "n": 5}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "user");
    let r = uf
        .post(
            "/users/u1",
            &json!({"attributes": {"b": null, "c": true, "n": {"add": 2}, "a": {"set_once": 9}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["attributes"], json!({"a": 1, "n": 7, "c": true}));
    let got = uf.get("/users/u1").await;
    assert_eq!(got.body["attributes"], json!({"a": 1, "n": 7, "c": true}));
    // An empty upsert keeps everything.
    uf.post("/users", &json!({"id": "u1"})).await;
    assert_eq!(
        uf.get("/users/u1").await.body["attributes"],
        json!({"a": 1, "n": 7, "c": true})
    );

    for (body, path) in [
        (json!({"attributes": {}}), "/users"),
        (json!({"id": "u2", "attributes": {"x": [1, 2]}}), "/users"),
        (json!({"id": "u2", "traits": {}}), "/users"),
        (json!({"id": 5}), "/users"),
        (json!({"id": "other"}), "/users/u1"),
        (
            json!({"id": "u2", "attributes": {"x": {"set": 1, "add": 1}}}),
            "/users",
        ),
    ] {
        let r = uf.post(path, &body).await;
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.body["error"]["code"], "invalid_params");
    }
    let r = uf
        .send(
            uf.request(reqwest::Method::POST, "/users")
                .body("{not json"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        sb.dump(Vendor::Userflow)["users"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn memberships_groups_and_prune() {
    let sb = sandbox(0, 0).await;
    let uf = api(&sb, Vendor::Userflow);
    let r = uf
        .post(
            "/users",
            &json!({"id": "u1", "groups": [{"id": "g1", "attributes": {"name": "Acme"}}, {"id": "g2"}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let u = uf
        .get("/users/u1?expand[]=memberships&expand[]=groups")
        .await;
    let gids: Vec<&str> = u.body["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["group_id"].as_str().unwrap())
        .collect();
    assert_eq!(gids, vec!["g1", "g2"]);
    assert_eq!(u.body["groups"][0]["attributes"]["name"], "Acme");

    let r = uf
        .post(
            "/users",
            &json!({"id": "u1", "memberships": [{"attributes": {"role": "owner"}, "group": {"id": "g2", "attributes": {"plan": "pro"}}}], "prune_memberships": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let u = uf.get("/users/u1?expand=memberships").await;
    let ms = u.body["memberships"].as_array().unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["group_id"], "g2");
    assert_eq!(ms[0]["attributes"], json!({"role": "owner"}));
    // The pruned group survives, without the member.
    let g1 = uf.get("/groups/g1?expand=memberships").await;
    assert_eq!(g1.status, 200);
    assert_eq!(g1.body["memberships"], json!([]));
    let g2 = uf.get("/groups/g2?expand=memberships").await;
    assert_eq!(g2.body["attributes"], json!({"plan": "pro"}));
    assert_eq!(g2.body["memberships"][0]["user_id"], "u1");

    let r = uf
        .post(
            "/users",
            &json!({"id": "u1", "groups": [], "memberships": []}),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = uf
        .post("/users", &json!({"id": "u1", "prune_memberships": true}))
        .await;
    assert_eq!(r.status, 400);

    // Seed's membership endpoint.
    uf.post(
        "/groups",
        &json!({"id": "g3", "attributes": {"name": "Third"}}),
    )
    .await;
    let r = uf
        .post(
            "/group_memberships",
            &json!({"user_id": "u1", "group_id": "g3"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "group_membership");
    let r = uf
        .post(
            "/group_memberships",
            &json!({"user_id": "ghost", "group_id": "g3"}),
        )
        .await;
    assert_eq!(r.status, 404);

    // Deleting a group removes its memberships; deleting a user removes theirs.
    assert_eq!(uf.delete("/groups/g3").await.status, 200);
    let u = uf.get("/users/u1?expand=memberships").await;
    assert_eq!(u.body["memberships"].as_array().unwrap().len(), 1);
    let r = uf.delete("/users/u1").await;
    assert_eq!(
        r.body,
        json!({"object": "deleted", "id": "u1", "deleted": true})
    );
    assert_eq!(uf.get("/users/u1").await.status, 404);
    assert_eq!(
        uf.delete("/users/u1").await.body["error"]["code"],
        "not_found"
    );
    let g2 = uf.get("/groups/g2?expand=memberships").await;
    assert_eq!(g2.body["memberships"], json!([]));
}

#[tokio::test]
async fn groups_list_walk_and_seed_form() {
    let sb = sandbox(30, 27).await;
    let uf = api(&sb, Vendor::Userflow);
    let mut all = Vec::new();
    let mut url = "/groups?limit=10&expand=memberships".to_owned();
    loop {
        let r = uf.get(&url).await;
        all.extend(ids(&r.body));
        match r.body["next_page_url"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(all.len(), 27);
    // Every seeded user's memberships appear on the group side too.
    let members: usize = {
        let r = uf.get("/groups?limit=100&expand=memberships").await;
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["memberships"].as_array().unwrap().len())
            .sum()
    };
    let user_side: usize = sb.dump(Vendor::Userflow)["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["memberships"].as_array().unwrap().len())
        .sum();
    assert_eq!(members, user_side);
    assert!(members >= 30);
    let r = uf
        .post(
            "/groups/group_001",
            &json!({"attributes": {"plan": null, "tier": 2}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["attributes"].get("plan").is_none());
    assert_eq!(r.body["attributes"]["tier"], 2);
    assert!(
        r.body["attributes"]["name"].is_string(),
        "omitted attribute kept"
    );
}

#[tokio::test]
async fn events_auth_and_version_header() {
    let sb = sandbox(2, 1).await;
    let uf = api(&sb, Vendor::Userflow);
    let r = uf
        .post(
            "/events",
            &json!({"user_id": "user_00001", "name": "signed_in", "attributes": {"n": 1}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "event");
    assert_eq!(uf.post("/events", &json!({"name": "x"})).await.status, 400);
    // Userflow's event has no time field (nor any other undocumented key): refused, as the
    // vendor would.
    for extra in [
        json!({"timestamp": "2024-01-01T00:00:00Z"}),
        json!({"time": "2024-01-01T00:00:00Z"}),
        json!({"event_name": "x"}),
    ] {
        let mut body = json!({"user_id": "user_00001", "name": "signed_in"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let r = uf.post("/events", &body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
    }
    assert_eq!(
        sb.dump(Vendor::Userflow)["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let anon = uf.clone().without_auth();
    let r = anon.get("/users").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let mut wrong = uf.clone();
    wrong.auth = Some(("nope".into(), None, "bearer"));
    assert_eq!(wrong.get("/users").await.status, 401);
    let r = uf
        .send(
            uf.request(reqwest::Method::GET, "/users")
                .header("Userflow-Version", "2019-01-01"),
        )
        .await;
    assert_eq!(r.status, 400);
    let r = uf
        .send(
            uf.request(reqwest::Method::GET, "/users")
                .header("Userflow-Version", "2020-01-03"),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(uf.get("/nope").await.body["error"]["code"], "not_found");
}

#[tokio::test]
async fn content_lists_for_the_python_peer_taps() {
    let sb = sandbox(60, 3).await;
    let uf = api(&sb, Vendor::Userflow);
    let mut n = 0;
    let mut url = "/content?order_by=created_at".to_owned();
    loop {
        let r = uf.get(&url).await;
        assert_eq!(r.status, 200);
        n += r.body["data"].as_array().unwrap().len();
        match r.body["next_page_url"].as_str() {
            Some(next) => {
                assert!(next.starts_with("/content?order_by=created_at&starting_after="));
                url = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(n, 6);
    let r = uf
        .get("/content_sessions?order_by=last_activity_at&limit=100")
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 20);
    let r = uf
        .get("/content_sessions?content_id=cnt_001&limit=100")
        .await;
    assert!(
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["content_id"] == "cnt_001")
    );
    assert_eq!(
        uf.get("/content_versions?content_id=cnt_002").await.body["data"][0]["id"],
        "cv_002"
    );
    let defs = uf.get("/attribute_definitions?limit=100").await;
    assert!(
        defs.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "email")
    );
    assert_eq!(uf.get("/event_definitions").await.status, 200);
}

#[tokio::test]
async fn large_listing_walks_every_page() {
    let sb = sandbox(20_000, 10).await;
    let uf = api(&sb, Vendor::Userflow);
    let mut count = 0;
    let mut url = "/users?limit=100".to_owned();
    loop {
        let r = uf.get(&url).await;
        count += r.body["data"].as_array().unwrap().len();
        match r.body["next_page_url"].as_str() {
            Some(n) => url = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(count, 20_000);
}
