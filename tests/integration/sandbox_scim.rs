//! The SCIM 2.0 emulation (generic and Guru SCIM), tested over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::api;

use api::api;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn enc(filter: &str) -> String {
    url::form_urlencoded::byte_serialize(filter.as_bytes()).collect()
}

#[tokio::test]
async fn full_pagination_walk_advances_by_what_came_back() {
    let sb = Sandbox::builder()
        .seed(3)
        .users(57)
        .groups(4)
        .scim_page_cap(7)
        .spawn()
        .await
        .unwrap();
    for vendor in [Vendor::Scim, Vendor::GuruScim] {
        let s = api(&sb, vendor);
        let mut start = 1;
        let mut seen = Vec::new();
        loop {
            // Ask for 50: the server caps at 7 without saying so.
            let r = s.get(&format!("/Users?startIndex={start}&count=50")).await;
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.header("content-type").unwrap(), "application/scim+json");
            assert_eq!(r.body["totalResults"], 57);
            assert_eq!(r.body["startIndex"], start);
            let res = r.body["Resources"].as_array().unwrap();
            assert!(res.len() <= 7);
            assert_eq!(r.body["itemsPerPage"], res.len());
            if res.is_empty() {
                break;
            }
            seen.extend(res.iter().map(|u| u["id"].as_str().unwrap().to_owned()));
            start += res.len();
        }
        assert_eq!(seen.len(), 57);
        let mut dedup = seen.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 57);
        let spc = s.get("/ServiceProviderConfig").await;
        assert_eq!(spc.body["pagination"]["maxPageSize"], 7);
        assert_eq!(spc.body["patch"]["supported"], true);
        let groups = s.get("/Groups?count=100").await;
        assert_eq!(groups.body["totalResults"], 4);
        let m = &groups.body["Resources"][0]["members"][0];
        assert!(m["display"].as_str().unwrap().contains('@'));
        assert!(m["$ref"].as_str().unwrap().contains("/Users/"));
    }
    // The two SCIM prefixes are separate stores.
    let a = api(&sb, Vendor::Scim).get("/Users?count=1").await;
    let b = api(&sb, Vendor::GuruScim).get("/Users?count=1").await;
    assert_ne!(a.body["Resources"][0]["id"], b.body["Resources"][0]["id"]);
    assert_eq!(
        a.body["Resources"][0]["userName"],
        b.body["Resources"][0]["userName"]
    );
}

#[tokio::test]
async fn filters_follow_case_rules() {
    let sb = Sandbox::builder()
        .users(20)
        .groups(3)
        .spawn()
        .await
        .unwrap();
    let s = api(&sb, Vendor::Scim);
    let first = s.get("/Users?count=1").await.body["Resources"][0].clone();
    let user_name = first["userName"].as_str().unwrap().to_owned();
    let ext = first["externalId"].as_str().unwrap().to_owned();
    let upper = user_name.to_uppercase();
    for (f, n) in [
        (format!("userName eq \"{upper}\""), 1),
        (format!("externalId eq \"{ext}\""), 1),
        (format!("externalId eq \"{}\"", ext.to_uppercase()), 0),
        (format!("emails.value eq \"{upper}\""), 1),
        (
            format!("emails[type eq \"work\" and value eq \"{user_name}\"]"),
            1,
        ),
        ("userName eq \"nobody@example.com\"".to_owned(), 0),
    ] {
        let r = s.get(&format!("/Users?filter={}", enc(&f))).await;
        assert_eq!(r.status, 200, "{f}: {}", r.text);
        assert_eq!(r.body["totalResults"], n, "{f}");
    }
    let g = s.get("/Groups?count=1").await.body["Resources"][0].clone();
    let dn = g["displayName"].as_str().unwrap();
    let r = s
        .get(&format!(
            "/Groups?filter={}&excludedAttributes=members",
            enc(&format!("displayName eq \"{dn}\""))
        ))
        .await;
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("members").is_none());
    let r = s
        .get(&format!("/Users?filter={}", enc("userName eq")))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["scimType"], "invalidFilter");
    assert_eq!(r.body["status"], "400");
    let r = s
        .post("/Users/.search", &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": format!("userName eq \"{user_name}\""), "attributes": ["userName"]}))
        .await;
    assert_eq!(r.body["totalResults"], 1);
    assert!(r.body["Resources"][0].get("emails").is_none());
}

#[tokio::test]
async fn create_conflict_put_patch_delete() {
    let sb = Sandbox::builder().users(0).groups(0).spawn().await.unwrap();
    let s = api(&sb, Vendor::Scim);
    let r = s
        .post("/Users", &json!({"schemas": [USER], "userName": "alice@example.com", "externalId": "hr-1",
            "name": {"givenName": "Alice", "familyName": "L"}, "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert!(
        r.header("location")
            .unwrap()
            .ends_with(&format!("/scim/v2/Users/{id}"))
    );
    assert_eq!(r.header("etag").unwrap(), "W/\"1\"");
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["meta"]["resourceType"], "User");

    let dup = s
        .post(
            "/Users",
            &json!({"schemas": [USER], "userName": "ALICE@example.com"}),
        )
        .await;
    assert_eq!(dup.status, 409);
    assert_eq!(dup.body["scimType"], "uniqueness");
    assert_eq!(dup.body["status"], "409");
    let missing = s.post("/Users", &json!({"schemas": [USER]})).await;
    assert_eq!(missing.status, 400);

    // PATCH: pathed replace, Okta's no-path form, Entra's string boolean.
    let r = s
        .patch(&format!("/Users/{id}"), &json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "active", "value": false},
            {"op": "replace", "value": {"displayName": "Alice L"}},
            {"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Eng"}]}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["active"], false);
    assert_eq!(r.body["displayName"], "Alice L");
    assert_eq!(
        r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["department"],
        "Eng"
    );
    let r = s
        .patch(&format!("/Users/{id}"), &json!({"schemas": [PATCH], "Operations": [{"op": "Replace", "path": "active", "value": "True"}]}))
        .await;
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["meta"]["version"], "W/\"3\"");

    // All-or-nothing: the second op fails, the first is not kept.
    let r = s
        .patch(
            &format!("/Users/{id}"),
            &json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "displayName", "value": "Changed"},
            {"op": "replace", "path": "id", "value": "x"}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["scimType"], "mutability");
    assert_eq!(
        s.get(&format!("/Users/{id}")).await.body["displayName"],
        "Alice L"
    );
    let r = s
        .patch(&format!("/Users/{id}"), &json!({"schemas": [PATCH], "Operations": [{"op": "remove", "path": "active", "value": true}]}))
        .await;
    assert_eq!(r.body["scimType"], "invalidValue");

    // If-Match.
    let stale = s
        .send(
            s.request(reqwest::Method::PATCH, &format!("/Users/{id}"))
                .header("If-Match", "W/\"1\"")
                .json(&json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "title", "value": "x"}]})),
        )
        .await;
    assert_eq!(stale.status, 412);

    // PUT replaces: emails left out are gone; renaming into a taken userName is 409.
    s.post(
        "/Users",
        &json!({"schemas": [USER], "userName": "bob@example.com"}),
    )
    .await;
    let r = s
        .put(
            &format!("/Users/{id}"),
            &json!({"schemas": [USER], "userName": "alice@example.com", "active": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.body.get("emails").is_none());
    assert!(r.body.get("externalId").is_none());
    assert_eq!(r.body["id"], id.as_str());
    let r = s
        .put(
            &format!("/Users/{id}"),
            &json!({"schemas": [USER], "userName": "Bob@example.com"}),
        )
        .await;
    assert_eq!(r.status, 409);

    // Groups: members must be user ids; member deltas; delete cascades.
    let r = s
        .post(
            "/Groups",
            &json!({"schemas": [GROUP], "displayName": "Eng", "members": [{"value": "hr-1"}]}),
        )
        .await;
    assert_eq!(r.status, 400, "externalIds are not member values");
    let g = s
        .post("/Groups", &json!({"schemas": [GROUP], "displayName": "Eng", "externalId": "grp-eng", "members": [{"value": id}]}))
        .await;
    assert_eq!(g.status, 201, "{}", g.text);
    let gid = g.body["id"].as_str().unwrap().to_owned();
    let bob = s
        .get(&format!(
            "/Users?filter={}",
            enc("userName eq \"bob@example.com\"")
        ))
        .await
        .body["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            &json!({"schemas": [PATCH], "Operations": [
            {"op": "remove", "path": format!("members[value eq \"{id}\"]")},
            {"op": "add", "path": "members", "value": [{"value": bob, "display": "bob"}]}]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let members: Vec<&str> = r.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(members, vec![bob.as_str()]);
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            &json!({"schemas": [PATCH], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": id}]},
            {"op": "add", "path": "members", "value": [{"value": "no-such-user"}]}]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        s.get(&format!("/Groups/{gid}")).await.body["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = s
        .patch(
            &format!("/Groups/{gid}"),
            &json!({"schemas": [PATCH], "Operations": [
            {"op": "replace", "path": "members", "value": [{"value": id}, {"value": bob}]},
            {"op": "replace", "path": "displayName", "value": "Platform"}]}),
        )
        .await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["displayName"], "Platform");
    assert_eq!(s.delete(&format!("/Users/{bob}")).await.status, 204);
    assert_eq!(s.get(&format!("/Users/{bob}")).await.status, 404);
    assert_eq!(
        s.get(&format!("/Groups/{gid}")).await.body["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.delete(&format!("/Groups/{gid}")).await.status, 204);
    let r = s.get(&format!("/Groups/{gid}")).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(s.post("/Bulk", &json!({})).await.status, 501);
    assert_eq!(s.get("/ResourceTypes").await.body["totalResults"], 2);
}

#[tokio::test]
async fn auth_forms_per_scim_flavour() {
    let sb = Sandbox::builder().users(1).groups(0).spawn().await.unwrap();
    let guru = api(&sb, Vendor::GuruScim);
    assert_eq!(guru.get("/Users").await.status, 200, "Basic username:token");
    let mut bearer = guru.clone();
    bearer.auth = Some((
        "sandbox-guru-scim:sandbox-guru-scim-token".into(),
        None,
        "bearer",
    ));
    assert_eq!(
        bearer.get("/Users").await.status,
        200,
        "OneLogin's Bearer username:token"
    );
    // The token alone, as Guru's API document describes it.
    bearer.auth = Some(("sandbox-guru-scim-token".into(), None, "bearer"));
    assert_eq!(bearer.get("/Users").await.status, 200, "Bearer token alone");
    bearer.auth = Some(("not-the-guru-scim-token".into(), None, "bearer"));
    let r = bearer.get("/Users").await;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(r.body["status"], "401");

    let generic = api(&sb, Vendor::Scim);
    assert_eq!(generic.get("/Users").await.status, 200);
    let mut basic = generic.clone();
    basic.auth = Some((
        "scim-admin".into(),
        Some("sandbox-scim-password".into()),
        "basic",
    ));
    assert_eq!(basic.get("/Users").await.status, 200);
    assert_eq!(
        generic.clone().without_auth().get("/Users").await.status,
        401
    );
}

#[tokio::test]
async fn quirks_stringly_values_and_patch_204() {
    let sb = Sandbox::builder()
        .users(3)
        .groups(1)
        .scim_stringly(true)
        .scim_patch_no_content(true)
        .spawn()
        .await
        .unwrap();
    let s = api(&sb, Vendor::Scim);
    let r = s.get("/Users").await;
    assert_eq!(r.body["totalResults"], "3");
    assert_eq!(r.body["startIndex"], "1");
    let active = &r.body["Resources"][0]["active"];
    assert!(active == &Value::from("True") || active == &Value::from("False"));
    let id = r.body["Resources"][0]["id"].as_str().unwrap().to_owned();
    let p = s
        .patch(&format!("/Users/{id}"), &json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": false}]}))
        .await;
    assert_eq!(p.status, 204);
    assert!(p.text.is_empty());
    assert!(p.header("etag").is_some());
    assert_eq!(s.get(&format!("/Users/{id}")).await.body["active"], "False");
}

/// As strict as RFC 7643/7644 and scim2-server: nothing is added for a client that left out
/// `schemas`, a PATCH needs the PatchOp URN, `emails` and `name` must have their RFC shapes,
/// and a body must be `application/scim+json` (or `application/json`, RFC 7644 §3.8); the
/// request log keeps the headers, so a test can see which one a client sent.
#[tokio::test]
async fn refuses_what_rfc_7643_and_7644_refuse() {
    let sb = Sandbox::builder().users(0).groups(0).spawn().await.unwrap();
    for vendor in [Vendor::Scim, Vendor::GuruScim] {
        let s = api(&sb, vendor);
        let refused = [
            json!({"userName": "a@example.com"}),
            json!({"schemas": [], "userName": "a@example.com"}),
            json!({"schemas": [GROUP], "userName": "a@example.com"}),
            json!({"schemas": [USER], "userName": "a@example.com", "emails": "a@example.com"}),
            json!({"schemas": [USER], "userName": "a@example.com", "emails": ["a@example.com"]}),
            json!({"schemas": [USER], "userName": "a@example.com", "emails": [{"type": "work"}]}),
            json!({"schemas": [USER], "userName": "a@example.com", "emails": [{"value": "a@example.com", "primary": "yes"}]}),
            json!({"schemas": [USER], "userName": "a@example.com", "emails": [{"value": "a@x.io", "primary": true}, {"value": "b@x.io", "primary": true}]}),
            json!({"schemas": [USER], "userName": "a@example.com", "name": "Alice L"}),
            json!({"schemas": [USER], "userName": "a@example.com", "name": {"givenName": 5}}),
            json!({"schemas": [USER], "userName": "a@example.com",
                   "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Eng"}}),
        ];
        for body in &refused {
            let r = s.post("/Users", body).await;
            assert_eq!(r.status, 400, "{vendor} took {body}: {}", r.text);
        }
        let r = s.post("/Groups", &json!({"displayName": "G"})).await;
        assert_eq!(
            r.status, 400,
            "{vendor}: a group without schemas: {}",
            r.text
        );
        assert!(sb.dump(vendor)["Users"].as_array().unwrap().is_empty());

        // Content-Type: scim+json and json pass, anything else (or nothing) is 415.
        let body = json!({"schemas": [USER], "userName": "a@example.com",
            "name": {"givenName": "A"}, "emails": [{"value": "a@example.com", "primary": true}]});
        for (ct, status) in [
            ("text/plain", 415),
            ("application/x-www-form-urlencoded", 415),
            ("application/scim+json; charset=utf-8", 201),
        ] {
            let r = s
                .send(
                    s.request(reqwest::Method::POST, "/Users")
                        .header("Content-Type", ct)
                        .body(body.to_string()),
                )
                .await;
            assert_eq!(r.status, status, "{vendor} {ct}: {}", r.text);
        }
        let r = s
            .send(
                s.request(reqwest::Method::POST, "/Users")
                    .body(body.to_string()),
            )
            .await;
        assert_eq!(r.status, 415, "{vendor}: no Content-Type: {}", r.text);
        let id = s.get("/Users").await.body["Resources"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let logged = sb.requests().into_iter().rev().nth(2).unwrap();
        assert_eq!(
            logged.headers.get("content-type").map(String::as_str),
            Some("application/scim+json; charset=utf-8")
        );
        assert!(!logged.headers.contains_key("authorization"), "{logged:?}");

        // PATCH: the PatchOp URN is required.
        let ops = json!([{"op": "replace", "path": "active", "value": false}]);
        let r = s
            .patch(&format!("/Users/{id}"), &json!({"Operations": ops}))
            .await;
        assert_eq!(
            r.status, 400,
            "{vendor}: a PATCH without schemas: {}",
            r.text
        );
        let r = s
            .patch(
                &format!("/Users/{id}"),
                &json!({"schemas": [USER], "Operations": ops}),
            )
            .await;
        assert_eq!(r.status, 400, "{vendor}: a PATCH with the wrong schemas");
        let r = s
            .patch(
                &format!("/Users/{id}"),
                &json!({"schemas": [PATCH], "Operations": [{"op": "replace", "path": "emails", "value": "x@example.com"}]}),
            )
            .await;
        assert_eq!(
            r.status, 400,
            "{vendor}: a PATCH that makes emails a string"
        );
        let r = s
            .patch(
                &format!("/Users/{id}"),
                &json!({"schemas": [PATCH], "Operations": ops}),
            )
            .await;
        assert_eq!(r.status, 200, "{vendor}: {}", r.text);
        assert_eq!(s.delete(&format!("/Users/{id}")).await.status, 204);
    }
}
