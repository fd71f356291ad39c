//! The Guru REST emulation, tested over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::api;

use std::time::Duration;

use api::{Api, Resp, api};
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

/// `<url>; rel="next-page"` → url.
fn next_link(r: &Resp) -> Option<String> {
    let h = r.header("link")?;
    assert!(h.ends_with("; rel=\"next-page\""), "{h}");
    Some(h[h.find('<')? + 1..h.find('>')?].to_owned())
}

async fn walk(g: &Api, first: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut url = first.to_owned();
    let mut pages = 0;
    loop {
        let r = g.get(&url).await;
        assert_eq!(r.status, 200, "{url}: {}", r.text);
        items.extend(r.body.as_array().expect("a bare array").iter().cloned());
        pages += 1;
        match next_link(&r) {
            Some(n) => {
                assert!(n.contains("?token="), "{n}");
                url = n;
            }
            None => break,
        }
    }
    (items, pages)
}

#[tokio::test]
async fn members_walk_by_link_header() {
    let sb = Sandbox::builder()
        .seed(11)
        .users(123)
        .groups(5)
        .guru_page_size(20)
        .spawn()
        .await
        .unwrap();
    let g = api(&sb, Vendor::Guru);
    let (members, pages) = walk(&g, "/members").await;
    assert_eq!(pages, 7);
    assert_eq!(members.len(), 123);
    let mut emails: Vec<&str> = members.iter().map(|m| m["id"].as_str().unwrap()).collect();
    emails.dedup();
    assert_eq!(emails.len(), 123);
    let m = &members[0];
    assert_eq!(m["id"], m["user"]["email"]);
    let access = m["userAttributes"]["ACCESS_TYPE"].as_str().unwrap();
    assert!(access == "CORE" || access == "READ_ONLY");
    assert!(
        m["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "All Members")
    );
    // Light users belong to no group but All Members.
    for m in &members {
        if m["userAttributes"]["ACCESS_TYPE"] == "READ_ONLY" {
            assert_eq!(m["userAttributes"]["BILLING_TYPE"], "FREE");
            assert_eq!(m["groups"].as_array().unwrap().len(), 1);
        }
    }
    // Search narrows; its pages keep the search.
    let r = g.get("/members?search=example.com").await;
    assert_eq!(r.body.as_array().unwrap().len(), 20);
    assert!(next_link(&r).unwrap().contains("search=example.com"));

    // Group members page the same way.
    let groups = g.get("/groups").await;
    let groups = groups.body.as_array().unwrap().clone();
    assert_eq!(groups.len(), 6, "All Members + 5");
    let mut total = 0;
    for grp in groups.iter().filter(|g| g["modifiable"] == true) {
        let id = grp["id"].as_str().unwrap();
        let (ms, _) = walk(&g, &format!("/groups/{id}/members")).await;
        assert_eq!(ms.len() as u64, grp["numberOfMembers"].as_u64().unwrap());
        total += ms.len();
    }
    assert!(total > 0);
    assert_eq!(g.get("/groups/nope/members").await.status, 404);
}

#[tokio::test]
async fn tokens_are_checked_and_expire() {
    let sb = Sandbox::builder()
        .users(30)
        .groups(2)
        .guru_page_size(10)
        .guru_token_ttl(Duration::from_secs(3600))
        .spawn()
        .await
        .unwrap();
    let g = api(&sb, Vendor::Guru);
    let r = g.get("/members").await;
    let next = next_link(&r).unwrap();
    assert_eq!(g.get(&next).await.status, 200);
    let token = next.split("token=").nth(1).unwrap();
    let groups = g.get("/groups").await;
    let gid = groups.body[1]["id"].as_str().unwrap();
    let r = g.get(&format!("/groups/{gid}/members?token={token}")).await;
    assert_eq!(r.status, 400, "a members token does not page a group");
    assert_eq!(g.get("/members?token=forged").await.status, 400);
    sb.expire_guru_tokens();
    let r = g.get(&next).await;
    assert_eq!(r.status, 400);
    assert!(r.body["description"].as_str().unwrap().contains("expired"));
    // Restarting the listing works.
    assert_eq!(g.get("/members").await.status, 200);

    let sb = Sandbox::builder()
        .users(30)
        .groups(2)
        .guru_page_size(10)
        .guru_token_ttl(Duration::ZERO)
        .spawn()
        .await
        .unwrap();
    let g = api(&sb, Vendor::Guru);
    let next = next_link(&g.get("/members").await).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(g.get(&next).await.status, 400, "TTL elapsed");
}

#[tokio::test]
async fn invite_groups_and_light_users() {
    let sb = Sandbox::builder().users(0).groups(0).spawn().await.unwrap();
    let g = api(&sb, Vendor::Guru);
    let r = g
        .post(
            "/members/invite",
            &json!({"emails": "a@x.com, b@x.com,not-an-email", "teamMemberType": "CORE"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let st = r.body["statuses"].as_array().unwrap();
    assert_eq!(st[0], json!({"email": "a@x.com"}));
    assert_eq!(st[2]["errored"], true);
    let r = g
        .post("/members/invite", &json!({"emails": "A@x.com"}))
        .await;
    assert_eq!(
        r.body["statuses"][0]["error"],
        "This user is already a part of the team"
    );
    assert_eq!(
        g.post("/members/invite", &json!({"emails": ["a@x.com"]}))
            .await
            .status,
        400
    );
    assert_eq!(
        g.post("/members/invite", &json!({"emails": ""}))
            .await
            .status,
        400
    );
    g.post(
        "/members/invite",
        &json!({"emails": "light@x.com", "teamMemberType": "LIGHT"}),
    )
    .await;
    let members = g.get("/members").await;
    let a = members
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "a@x.com")
        .unwrap()
        .clone();
    assert_eq!(a["user"]["status"], "PENDING");

    let grp = g
        .post(
            "/groups",
            &json!({"id": "new-group", "name": "Engineering"}),
        )
        .await;
    assert_eq!(grp.status, 200, "{}", grp.text);
    let gid = grp.body["id"].as_str().unwrap().to_owned();
    assert_ne!(gid, "new-group", "the server assigns ids");
    // Guru does not deduplicate names.
    assert_eq!(
        g.post("/groups", &json!({"name": "Engineering"}))
            .await
            .status,
        200
    );

    // All or nothing.
    let r = g
        .post(
            &format!("/groups/{gid}/members"),
            &json!(["a@x.com", "stranger@x.com"]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("User must be a team member")
    );
    let r = g
        .post(
            &format!("/groups/{gid}/members"),
            &json!(["a@x.com", "light@x.com"]),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("Light users")
    );
    assert_eq!(
        g.get(&format!("/groups/{gid}/members")).await.body,
        json!([])
    );
    assert_eq!(
        g.post(&format!("/groups/{gid}/members"), &json!([]))
            .await
            .status,
        400
    );
    let many: Vec<String> = (0..101).map(|i| format!("u{i}@x.com")).collect();
    assert_eq!(
        g.post(&format!("/groups/{gid}/members"), &json!(many))
            .await
            .status,
        400
    );
    let r = g
        .post(
            &format!("/groups/{gid}/members"),
            &json!(["a@x.com", "b@x.com"]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body[0]["id"], "a@x.com");
    assert_eq!(
        g.get(&format!("/groups/{gid}/members"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        2
    );

    assert!(matches!(
        g.delete(&format!("/groups/{gid}/members/A@x.com"))
            .await
            .status,
        200..=204
    ));
    assert_eq!(
        g.delete(&format!("/groups/{gid}/members/a@x.com"))
            .await
            .status,
        404
    );
    assert_eq!(g.delete("/members/b@x.com").await.status, 200);
    assert_eq!(g.delete("/members/b@x.com").await.status, 404);
    assert_eq!(
        g.get(&format!("/groups/{gid}/members")).await.body,
        json!([])
    );
    let all = g.get("/groups").await.body[0].clone();
    assert_eq!(all["name"], "All Members");
    assert_eq!(
        g.post(
            &format!("/groups/{}/members", all["id"].as_str().unwrap()),
            &json!(["a@x.com"])
        )
        .await
        .status,
        400
    );

    // Downgrading to light removes group memberships.
    g.post(&format!("/groups/{gid}/members"), &json!(["a@x.com"]))
        .await;
    let r = g.post("/members/a@x.com/downgrade", &json!({})).await;
    assert_eq!(r.body["userAttributes"]["ACCESS_TYPE"], "READ_ONLY");
    assert_eq!(
        g.get(&format!("/groups/{gid}/members")).await.body,
        json!([])
    );
    assert!(matches!(
        g.delete(&format!("/groups/{gid}")).await.status,
        200..=204
    ));
    let dump = sb.dump(Vendor::Guru);
    assert_eq!(dump["members"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn auth_is_basic_email_token() {
    let sb = Sandbox::builder().users(1).groups(1).spawn().await.unwrap();
    let g = api(&sb, Vendor::Guru);
    assert_eq!(g.get("/whoami").await.status, 200);
    let r = g.clone().without_auth().get("/members").await;
    assert_eq!(r.status, 401);
    assert!(
        r.body["description"]
            .as_str()
            .unwrap()
            .contains("credentials")
    );
    let mut wrong = g.clone();
    wrong.auth = Some((
        "admin@sandbox.example".into(),
        Some("wrong".into()),
        "basic",
    ));
    assert_eq!(wrong.get("/members").await.status, 401);
}

/// With `guru_offset_tokens` a token means "skip the first n": the walk still yields every
/// member once, but a member removed before the token shifts the next one past it (what an
/// offset-paged server does), where a keyset token continues after the last email served.
#[tokio::test]
async fn offset_tokens_skip_a_count_so_removals_shift_the_rest() {
    for offset in [false, true] {
        let sb = Sandbox::builder()
            .users(30)
            .groups(2)
            .guru_page_size(10)
            .guru_offset_tokens(offset)
            .spawn()
            .await
            .unwrap();
        let g = api(&sb, Vendor::Guru);
        let (all, pages) = walk(&g, "/members").await;
        assert_eq!(pages, all.len().div_ceil(10), "offset {offset}");
        let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
        let r = g.get("/members").await;
        let next = next_link(&r).unwrap();
        assert!(sb.delete_user(Vendor::Guru, ids[0]));
        let r = g.get(&next).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let want = if offset { ids[11] } else { ids[10] };
        assert_eq!(r.body[0]["id"], want, "offset {offset}");
    }
}
