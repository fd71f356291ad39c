//! `tap-roster` against SCIM 2.0: the sandbox's generic SCIM provider and Guru SCIM, and a
//! deliberately quirky server for the leniency rules (scim.md §0 and §11).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::tap;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};
use tap::{Holdings, catalog, check_no_duplicates, check_protocol, sync, tap};

fn sandbox(cap: usize, stringly: bool) -> Sandbox {
    Sandbox::builder()
        .seed(11)
        .users(120)
        .groups(9)
        .scim_page_cap(cap)
        .scim_stringly(stringly)
        .start_background()
        .unwrap()
}

fn queries(sb: &Sandbox, path: &str) -> Vec<String> {
    sb.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| r.query.unwrap_or_default())
        .collect()
}

#[test]
fn scim_sync_covers_users_groups_and_group_members() {
    for vendor in [Vendor::Scim, Vendor::GuruScim] {
        let sb = sandbox(50, false);
        let run = sync(&sb.config(vendor), None, None).ok();
        check_protocol(&run.messages);
        check_no_duplicates(&run.messages);
        let held = Holdings::of(&sb, vendor);
        assert!(!held.memberships.is_empty());
        assert_eq!(Holdings::from_messages(&run.messages), held, "{vendor}");
        // The server caps pages at 50 (its ServiceProviderConfig says so): count=50 is asked
        // and startIndex advances by what came back, less an overlap of 5 that must hold one
        // of the previous page's last ids.
        let prefix = vendor.prefix();
        let users = queries(&sb, &format!("{prefix}/Users"));
        assert_eq!(users.len(), 3, "{users:?}");
        assert!(users[0].contains("startIndex=1") && users[0].contains("count=50"));
        assert!(users[1].contains("startIndex=46"), "{users:?}");
        assert!(users[2].contains("startIndex=91"), "{users:?}");
        assert_eq!(
            queries(&sb, &format!("{prefix}/ServiceProviderConfig")).len(),
            1
        );
        // Groups (with the memberships they carry) come first, then users.
        let states = run.states();
        let first_users = states
            .iter()
            .find(|s| s["currently_syncing"] == "users")
            .unwrap();
        let bookmark = &first_users["bookmarks"]["users"]["next_page"];
        assert_eq!(bookmark["start_index"], 46, "{bookmark}");
        assert_eq!(bookmark["after"].as_array().unwrap().len(), 5, "{bookmark}");
        assert!(first_users["bookmarks"]["groups"]["completed_at"].is_string());
        let first = run.messages.iter().find(|m| m["type"] == "RECORD").unwrap();
        assert_eq!(first["stream"], "groups");
    }
}

#[test]
fn scim_records_map_the_standard_attributes() {
    let sb = sandbox(100, false);
    let run = sync(&sb.config(Vendor::Scim), None, None).ok();
    let dump = sb.dump(Vendor::Scim);
    let wire = &dump["Users"][5];
    let record = run
        .records("users")
        .into_iter()
        .find(|r| r["id"] == wire["id"])
        .unwrap();
    assert_eq!(record["first_name"], wire["name"]["givenName"]);
    assert_eq!(record["last_name"], wire["name"]["familyName"]);
    assert_eq!(record["external_id"], wire["externalId"]);
    assert_eq!(record["active"], wire["active"]);
    assert_eq!(record["created_at"], wire["meta"]["created"]);
    assert_eq!(record["attributes"]["userName"], wire["userName"]);
    assert_eq!(record["updated_at"], wire["meta"]["lastModified"]);
    let group = &dump["Groups"][0];
    let record = run
        .records("groups")
        .into_iter()
        .find(|r| r["id"] == group["id"])
        .unwrap();
    assert_eq!(record["name"], group["displayName"]);
    let member = &group["members"][0];
    let membership = run
        .records("memberships")
        .into_iter()
        .find(|m| m["group_id"] == group["id"] && m["user_id"] == member["value"])
        .unwrap();
    assert_eq!(membership["attributes"]["display"], member["display"]);
    assert_eq!(membership["attributes"]["type"], "User");
}

#[test]
fn strings_for_numbers_and_booleans_are_read_as_typed_values() {
    let sb = sandbox(40, true);
    let run = sync(&sb.config(Vendor::GuruScim), None, None).ok();
    check_protocol(&run.messages);
    assert_eq!(
        Holdings::from_messages(&run.messages),
        Holdings::of(&sb, Vendor::GuruScim)
    );
    let users = run.records("users");
    assert!(
        users.iter().all(|u| u["active"].is_boolean()),
        "{}",
        users[0]
    );
    assert!(users.iter().any(|u| u["active"] == false));
}

#[test]
fn without_memberships_groups_are_read_without_members_and_users_not_at_all() {
    let sb = sandbox(100, false);
    let config = sb.config(Vendor::Scim);
    let selected = catalog(&config, &["groups"], &[]);
    sb.clear_requests();
    let run = sync(&config, None, Some(&selected)).ok();
    assert_eq!(run.records("groups").len(), 9);
    assert!(run.records("memberships").is_empty());
    assert!(
        queries(&sb, "/scim/v2/Users").is_empty(),
        "no call for an unselected stream"
    );
    assert!(queries(&sb, "/scim/v2/Groups")[0].contains("excludedAttributes=members"));
}

#[test]
fn resuming_at_a_start_index() {
    let sb = sandbox(25, false);
    // A bare startIndex (older bookmarks) starts the overlap (2 of a page of 25) early.
    let state = json!({"bookmarks": {"users": {"next_page": 101}}, "currently_syncing": "users"});
    let run = sync(&sb.config(Vendor::Scim), Some(&state), None).ok();
    assert_eq!(run.records("users").len(), 22);
    assert_eq!(run.records("groups").len(), 9);
    assert!(queries(&sb, "/scim/v2/Users")[0].contains("startIndex=99"));
    // Past the end: an empty page ends the stream.
    let state = json!({"bookmarks": {"users": {"next_page": "500"}}});
    let run = sync(&sb.config(Vendor::Scim), Some(&state), None).ok();
    assert!(run.records("users").is_empty());
}

#[test]
fn guru_scim_sends_the_token_alone_or_basic_or_bearer_username_and_token() {
    let sb = sandbox(100, false);
    let mut config = sb.config(Vendor::GuruScim);
    config["auth_scheme"] = json!("bearer");
    let run = tap(&config, &["--test"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    // The token alone, as Guru's API document describes it.
    let mut alone = config.clone();
    alone.as_object_mut().unwrap().remove("scim_username");
    let run = tap(&alone, &["--test"]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    alone["auth_scheme"] = json!("basic");
    let run = tap(&alone, &["--test"]);
    assert_eq!(run.code, Some(2), "basic needs a username: {}", run.stderr);
    assert!(run.stderr.contains("scim_username"), "{}", run.stderr);
    config["scim_token"] = json!("nope");
    let run = tap(&config, &["--test"]);
    assert_eq!(run.code, Some(1));
    assert!(!run.stderr.contains("nope"));
}

/// A SCIM server with the quirks real ones have: pages capped below `count` and shifted back
/// by one (as after an insertion), numbers and booleans as strings, `resources` in lower case,
/// a numeric id, a group without `members`, and no `totalResults` on groups (an empty page
/// ends them).
#[derive(Default)]
struct Quirky {
    queries: Mutex<Vec<String>>,
}

fn param(query: &str, name: &str) -> Option<usize> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

async fn quirky_users(
    State(q): State<Arc<Quirky>>,
    RawQuery(query): RawQuery,
) -> axum::Json<Value> {
    let query = query.unwrap_or_default();
    q.queries.lock().unwrap().push(format!("Users?{query}"));
    let start = param(&query, "startIndex").unwrap_or(1);
    let users: Vec<Value> = (1..=7)
        .map(|i| {
            let id = if i == 4 { json!(4) } else { json!(format!("u{i}")) };
            json!({"id": id, "userName": format!("user{i}@x.io"), "active": if i % 2 == 0 { "False" } else { "True" }})
        })
        .collect();
    // Shifted back by one after the first page, at most 3 per page.
    let from = if start > 1 { start - 2 } else { 0 };
    let page: Vec<Value> = users.iter().skip(from).take(3).cloned().collect();
    axum::Json(json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": "7", "startIndex": start.to_string(), "itemsPerPage": page.len().to_string(),
        "resources": page,
    }))
}

async fn quirky_groups(
    State(q): State<Arc<Quirky>>,
    RawQuery(query): RawQuery,
) -> axum::Json<Value> {
    let query = query.unwrap_or_default();
    q.queries.lock().unwrap().push(format!("Groups?{query}"));
    let start = param(&query, "startIndex").unwrap_or(1);
    let page = if start == 1 {
        json!([
            {"id": "g1", "displayName": "Everyone", "members": [{"value": "u1"}, {"value": 4}]},
            {"id": "g2", "displayName": "No members listed"}
        ])
    } else {
        json!([])
    };
    axum::Json(json!({"Resources": page}))
}

fn quirky_server() -> (String, Arc<Quirky>) {
    let state = Arc::new(Quirky::default());
    let app = Router::new()
        .route("/scim/v2/Users", get(quirky_users))
        .route("/scim/v2/Groups", get(quirky_groups))
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(|| async {
                axum::Json(
                    json!({"pagination": {"maxPageSize": "5"}, "sort": {"supported": "True"}}),
                )
            }),
        )
        .with_state(state.clone());
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}/scim/v2"), state)
}

#[test]
fn quirky_servers_are_read_leniently_deduplicated_and_paged_by_what_came_back() {
    let (base, server) = quirky_server();
    let config = json!({"vendor": "scim", "base_url": base, "bearer_token": "t"});
    let run = sync(&config, None, None).ok();
    check_protocol(&run.messages);
    check_no_duplicates(&run.messages);
    let users = run.records("users");
    let ids: Vec<&str> = users.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["u1", "u2", "u3", "4", "u5", "u6", "u7"]);
    assert_eq!(users[1]["active"], false);
    assert_eq!(users[0]["email"], "user1@x.io");
    let memberships = run.records("memberships");
    assert_eq!(memberships.len(), 2);
    assert_eq!(memberships[1]["user_id"], "4");
    assert_eq!(run.records("groups").len(), 2);
    // The two listings are fetched concurrently, so their requests interleave; each listing's
    // own go in order.
    let mut queries = server.queries.lock().unwrap().clone();
    queries.sort_by_key(|q| !q.starts_with("Groups"));
    assert_eq!(
        queries,
        [
            // Each next page starts one early (a page of 5), and the server shifts it back by one
            // more: the anchor is found either way, so nothing repeats. It also says 7 in all
            // while 7 is past its last index, so the tap reads on to the end.
            "Groups?startIndex=1&count=5",
            "Groups?startIndex=2&count=5",
            "Users?startIndex=1&count=5",
            "Users?startIndex=3&count=5",
            "Users?startIndex=5&count=5",
            "Users?startIndex=7&count=5",
        ]
    );
}

/// A server that ignores `startIndex`: every request gets the first 100 of 1,000 users (the
/// answer echoes the `startIndex` asked). The old tap advanced by what came back, took the same
/// page as pages 2 to 10, dropped the repeats and ended with 100 users and exit 0; now the
/// repeated page is an error naming the server's behaviour.
#[test]
fn a_server_that_ignores_start_index_is_an_error_not_a_short_listing() {
    async fn first_page_only(RawQuery(query): RawQuery) -> axum::Json<Value> {
        let start = param(&query.unwrap_or_default(), "startIndex").unwrap_or(1);
        let users: Vec<Value> = (1..=100)
            .map(|i| json!({"id": format!("u{i:04}"), "userName": format!("u{i}@x.io")}))
            .collect();
        axum::Json(json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": 1000, "startIndex": start, "itemsPerPage": 100, "Resources": users,
        }))
    }
    let app = Router::new()
        .route("/scim/v2/Users", get(first_page_only))
        .route("/scim/v2/Groups", get(first_page_only));
    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let config = json!({"vendor": "scim", "base_url": format!("http://{addr}/scim/v2"), "bearer_token": "t"});
    let run = sync(&config, None, None);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("ignores startIndex"), "{}", run.stderr);
    assert!(run.records("users").len() <= 100);
}

/// The users stream of `catalog` with `replication-method: INCREMENTAL` by `updated_at`, as
/// Meltano's `metadata:` extra writes it.
fn incremental(mut catalog: Value) -> Value {
    for entry in catalog["streams"].as_array_mut().unwrap() {
        let users = entry["stream"] == "users";
        let top = entry["metadata"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|m| m["breadcrumb"] == json!([]))
            .unwrap();
        if users {
            assert_eq!(
                top["metadata"]["valid-replication-keys"],
                json!(["updated_at"])
            );
            assert!(top["metadata"].get("forced-replication-method").is_none());
            top["metadata"]["replication-method"] = json!("INCREMENTAL");
            top["metadata"]["replication-key"] = json!("updated_at");
        }
    }
    catalog
}

/// INCREMENTAL: the first pass reads everything and keeps the highest `meta.lastModified`; the
/// next asks `filter=meta.lastModified gt "<it>"` and gets only the users changed since. A
/// server whose ServiceProviderConfig says it cannot filter is read FULL_TABLE, with versions.
#[test]
fn an_incremental_sync_reads_only_the_users_changed_after_the_bookmark() {
    let sb = sandbox(50, false);
    let config = sb.config(Vendor::Scim);
    let catalog = incremental(catalog(&config, &["users"], &[]));
    let first = sync(&config, None, Some(&catalog)).ok();
    check_protocol(&first.messages);
    let users = first.records("users");
    assert_eq!(users.len(), 120);
    assert!(
        first
            .messages
            .iter()
            .all(|m| m["type"] != "ACTIVATE_VERSION" && m.get("version").is_none()),
        "no versions on an INCREMENTAL stream"
    );
    let highest = users
        .iter()
        .map(|u| u["updated_at"].as_str().unwrap().to_string())
        .max()
        .unwrap();
    let state = first.states().pop().unwrap();
    assert_eq!(state["bookmarks"]["users"]["replication_key"], "updated_at");
    assert_eq!(
        state["bookmarks"]["users"]["replication_key_value"],
        json!(highest)
    );

    // Two users change; the next run reads exactly those.
    let changed: Vec<String> = users[..2]
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    let api = crate::sandbox_common::api(&sb, Vendor::Scim);
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for id in &changed {
            let r = api
                .patch(
                    &format!("/Users/{id}"),
                    &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                            "Operations": [{"op": "replace", "path": "title", "value": "changed"}]}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
        }
    });
    sb.clear_requests();
    let second = sync(&config, Some(&state), Some(&catalog)).ok();
    let ids: Vec<String> = second
        .records("users")
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, changed);
    let asked = queries(&sb, &format!("{}/Users", Vendor::Scim.prefix()));
    assert!(asked[0].contains("filter=meta.lastModified"), "{asked:?}");
    let moved =
        second.states().pop().unwrap()["bookmarks"]["users"]["replication_key_value"].clone();
    assert!(moved.as_str().unwrap() > highest.as_str(), "{moved}");

    // start_date: where a stateless incremental run starts.
    let mut later = config.clone();
    later["start_date"] = json!("2999-01-01");
    assert!(
        sync(&later, None, Some(&catalog))
            .ok()
            .records("users")
            .is_empty()
    );
    later["start_date"] = json!("not a date");
    let refused = sync(&later, None, Some(&catalog));
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("start_date"), "{}", refused.stderr);

    // A server that cannot filter: FULL_TABLE, warned about, with ACTIVATE_VERSION.
    let plain = Sandbox::builder()
        .seed(11)
        .users(30)
        .groups(2)
        .scim_filter(false)
        .start_background()
        .unwrap();
    let run = sync(&plain.config(Vendor::Scim), None, Some(&catalog)).ok();
    assert_eq!(run.records("users").len(), 30);
    assert!(run.stderr.contains("FULL_TABLE"), "{}", run.stderr);
    assert_eq!(
        run.messages
            .iter()
            .filter(|m| m["type"] == "ACTIVATE_VERSION")
            .count(),
        2,
        "opened and closed"
    );
}
