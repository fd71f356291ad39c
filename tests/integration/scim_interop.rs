//! target-roster (`vendor: scim`, Bearer) against a SCIM 2.0 server nobody here wrote:
//! `scim2-server` 0.8.3 from PyPI (Yaal Coop), installed in a cached virtualenv and started on
//! a free loopback port. Users are created, updated in place, adopted after a real 409 and
//! deactivated; a group is created and its members added and removed. Every check reads the
//! server back over HTTP, never roster's own account of what it did.
//!
//! scim2-server differs from roster-sandbox in ways that matter here: PATCH answers 204
//! without a body, `userName` is unique case-insensitively, there is no referential integrity
//! in `members`, and `User.groups` is never filled in (reference/scim.md §12).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support;
use crate::support::scim::RaceProxy;
use crate::support::target::{Input, target};

/// Pinned: the quirks documented above are this version's.
const SCIM2_SERVER: &[&str] = &["scim2-server==0.8.3"];

/// The server's one accepted token.
const TOKEN: &str = "interop-token";

/// A cold Python start on a loaded 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running scim2-server, stopped (killed and reaped) when dropped.
struct Server {
    base: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    _guard: support::Guard,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Installs (once) and starts scim2-server with its default ServiceProviderConfig (every
    /// feature: PATCH, filters, ETags, bulk, sort); `None` (a skip) without Python off CI.
    fn start() -> Option<Server> {
        Self::start_with(None)
    }

    /// As [`Server::start`], announcing `spc` as its ServiceProviderConfig.
    fn start_with(spc: Option<Value>) -> Option<Server> {
        let Some(venv) = support::venv("scim2-server", SCIM2_SERVER) else {
            support::skip_or_fail("python3 with venv, to install scim2-server from PyPI");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = support::free_port();
        let mut command = Command::new(venv.join("bin/scim2-server"));
        command
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            // Guru's path shape: the base is /scim/v2 (the banner wrongly prints /v2).
            .args(["--tenant", "scim", "--bearer-token", TOKEN]);
        if let Some(spc) = spc {
            let path = dir.path().join("spc.json");
            std::fs::write(&path, spc.to_string()).unwrap();
            command.arg("--service-provider-config").arg(path);
        }
        let guard = support::Guard::spawn(
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(
            support::wait_for_port(port, START_TIMEOUT),
            "scim2-server did not listen on port {port}"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Some(Server {
            base: format!("http://127.0.0.1:{port}/scim/v2"),
            http: reqwest::Client::new(),
            runtime,
            _guard: guard,
            _dir: dir,
        })
    }

    fn config(&self) -> Value {
        self.config_at(&self.base)
    }

    fn config_at(&self, base: &str) -> Value {
        json!({"vendor": "scim", "base_url": base, "bearer_token": TOKEN})
    }

    fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut r = self
                .http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(TOKEN);
            if let Some(body) = body {
                r = r
                    .header("content-type", "application/scim+json")
                    .body(body.to_string());
            }
            let answer = r.send().await.unwrap();
            let status = answer.status().as_u16();
            let text = answer.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    /// Every resource at `/Users` or `/Groups`, read straight from the server.
    fn list(&self, resource: &str) -> Vec<Value> {
        let (status, page) = self.request(
            reqwest::Method::GET,
            &format!("/{resource}?count=1000"),
            None,
        );
        assert_eq!(status, 200, "{page}");
        page["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// The users whose userName is `user_name` (any case).
    fn users_named(&self, user_name: &str) -> Vec<Value> {
        self.list("Users")
            .into_iter()
            .filter(|u| {
                u["userName"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(user_name))
            })
            .collect()
    }

    fn user(&self, user_name: &str) -> Value {
        let mut found = self.users_named(user_name);
        assert_eq!(found.len(), 1, "one user {user_name}: {found:?}");
        found.remove(0)
    }

    fn group(&self, display_name: &str) -> Value {
        let found: Vec<Value> = self
            .list("Groups")
            .into_iter()
            .filter(|g| g["displayName"] == json!(display_name))
            .collect();
        assert_eq!(found.len(), 1, "one group {display_name}: {found:?}");
        found[0].clone()
    }

    /// The userNames of a group's members, sorted.
    fn member_names(&self, display_name: &str) -> Vec<String> {
        let group = self.group(display_name);
        let users = self.list("Users");
        let mut names: Vec<String> = group["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let id = m["value"].as_str().unwrap();
                users.iter().find(|u| u["id"] == json!(id)).map_or_else(
                    || format!("unknown id {id}"),
                    |u| u["userName"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        names.sort();
        names
    }
}

fn singer() -> Input {
    Input::new()
        .schema("users", &["id"])
        .schema("groups", &["id"])
        .schema("memberships", &["group_id", "user_id"])
}

const DELETED: &str = "2024-05-01T00:00:00Z";

#[test]
fn users_are_created_updated_adopted_after_a_real_409_and_deactivated() {
    let Some(server) = Server::start() else {
        return;
    };
    // Someone else's user, already on the server with no externalId: roster's lookup by
    // userName finds it and adopts it without a create.
    let (status, planted) = server.request(
        reqwest::Method::POST,
        "/Users",
        Some(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "erin@example.com",
            "active": true,
        })),
    );
    assert_eq!(status, 201, "{planted}");

    let input = singer()
        .record(
            "users",
            json!({"id": "hr-1", "email": "alice@example.com", "first_name": "Alice",
                   "last_name": "Archer", "name": "Alice Archer", "active": true}),
        )
        .record(
            "users",
            json!({"id": "hr-2", "email": "bob@example.com", "first_name": "Bob"}),
        )
        .record(
            "users",
            json!({"id": "hr-5", "email": "erin@example.com", "name": "Erin E"}),
        )
        .state(json!({"n": 3}));
    let run = target(&server.config(), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 3})));
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    let alice = server.user("alice@example.com");
    assert_eq!(alice["externalId"], json!("hr-1"));
    assert_eq!(alice["name"]["givenName"], json!("Alice"));
    assert_eq!(alice["name"]["familyName"], json!("Archer"));
    assert_eq!(alice["displayName"], json!("Alice Archer"));
    assert_eq!(alice["emails"][0]["value"], json!("alice@example.com"));
    assert_eq!(alice["active"], json!(true));
    let erin = server.user("erin@example.com");
    assert_eq!(erin["id"], planted["id"], "adopted, not created again");
    assert_eq!(erin["externalId"], json!("hr-5"));
    assert_eq!(erin["displayName"], json!("Erin E"));

    // Updated in place (same id), and a replay changes nothing.
    let update = singer()
        .record(
            "users",
            json!({"id": "hr-1", "email": "alice@example.com", "first_name": "Alicia",
                   "last_name": "Archer", "name": "Alicia Archer", "active": true}),
        )
        .state(json!({"n": 4}));
    target(&server.config(), &update).ok();
    target(&server.config(), &update).ok();
    let alicia = server.user("alice@example.com");
    assert_eq!(alicia["id"], alice["id"]);
    assert_eq!(alicia["name"]["givenName"], json!("Alicia"));
    assert_eq!(alicia["displayName"], json!("Alicia Archer"));

    // A real 409: a proxy creates "Dave@Example.com" on the server right after roster's
    // lookups found nobody and right before its POST, so scim2-server itself answers 409
    // (userName is unique in any case). roster looks up again and adopts the one match.
    let proxy = RaceProxy::plant_users(
        &server.base,
        &format!("Bearer {TOKEN}"),
        "dave@example.com",
        vec![json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "Dave@Example.com",
            "active": true,
        })],
    );
    let input = singer()
        .record(
            "users",
            json!({"id": "hr-4", "email": "dave@example.com", "first_name": "Dave"}),
        )
        .state(json!({"n": 5}));
    let run = target(&server.config_at(&proxy.base), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert_eq!(proxy.planted.lock().unwrap().len(), 1, "the race happened");
    assert!(
        run.stderr.contains("(409); adopting it"),
        "adopted after the server's own 409:\n{}",
        run.stderr
    );
    let dave = server.user("dave@example.com");
    assert_eq!(
        dave["id"],
        proxy.planted.lock().unwrap()[0]["id"],
        "the conflicting user was adopted"
    );
    assert_eq!(dave["externalId"], json!("hr-4"));
    assert_eq!(dave["name"]["givenName"], json!("Dave"));

    // A 409 with no single match to adopt is rejected with the server's own detail: the
    // planted user takes the userName, and another one takes the record's externalId.
    let proxy = RaceProxy::plant_users(
        &server.base,
        &format!("Bearer {TOKEN}"),
        "frank@example.com",
        vec![
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "frank@example.com"}),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                   "userName": "frank.other@example.com", "externalId": "hr-6"}),
        ],
    );
    let input = singer()
        .record("users", json!({"id": "hr-6", "email": "frank@example.com"}))
        .state(json!({"n": 6}));
    let run = target(&server.config_at(&proxy.base), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 6})));
    let reason = run.reason_for("id", "hr-6");
    assert!(
        reason.contains("One or more of the attribute values are already in use")
            && reason.contains("2 existing users match"),
        "{reason}"
    );

    // A delete deactivates: the user stays, inactive.
    let input = singer()
        .record(
            "users",
            json!({"id": "hr-2", "email": "bob@example.com", "_sdc_deleted_at": DELETED}),
        )
        .state(json!({"n": 7}));
    target(&server.config(), &input).ok();
    let bob = server.user("bob@example.com");
    assert_eq!(bob["active"], json!(false));
    assert_eq!(server.user("alice@example.com")["active"], json!(true));

    // hard_delete: true removes it.
    let mut config = server.config();
    config["hard_delete"] = json!(true);
    let input = singer()
        .record(
            "users",
            json!({"id": "hr-2", "email": "bob@example.com", "_sdc_deleted_at": DELETED}),
        )
        .state(json!({"n": 8}));
    target(&config, &input).ok();
    assert!(server.users_named("bob@example.com").is_empty());
}

#[test]
fn group_memberships_are_added_and_removed() {
    let Some(server) = Server::start() else {
        return;
    };
    let mut input = singer();
    for n in 1..=5 {
        input = input.record(
            "users",
            json!({"id": format!("hr-{n}"), "email": format!("u{n}@example.com")}),
        );
    }
    let input = input
        .record("groups", json!({"id": "g-eng", "name": "Engineering"}))
        .record(
            "memberships",
            json!({"group_id": "g-eng", "user_id": "hr-1"}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-eng", "user_id": "hr-2"}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-eng", "user_id": "hr-3"}),
        )
        .state(json!({"n": 1}));
    let run = target(&server.config(), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert_eq!(server.group("Engineering")["externalId"], json!("g-eng"));
    assert_eq!(
        server.member_names("Engineering"),
        ["u1@example.com", "u2@example.com", "u3@example.com"]
    );

    // A later run names the group and users by source key only: roster maps them to the
    // server's ids (externalId), removes one member and adds two, in small chunks.
    let mut config = server.config();
    config["membership_chunk_size"] = json!(1);
    let input = singer()
        .record(
            "memberships",
            json!({"group_id": "g-eng", "user_id": "hr-2", "_sdc_deleted_at": DELETED}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-eng", "user_id": "hr-4"}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-eng", "user_id": "hr-5"}),
        )
        .state(json!({"n": 2}));
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert_eq!(
        server.member_names("Engineering"),
        [
            "u1@example.com",
            "u3@example.com",
            "u4@example.com",
            "u5@example.com"
        ]
    );
    // Replayed: no duplicate members, nothing created twice.
    target(&config, &input).ok();
    assert_eq!(server.member_names("Engineering").len(), 4);
    assert_eq!(server.list("Groups").len(), 1);
    assert_eq!(server.list("Users").len(), 5);

    // Keys full of filter syntax are found again by the server's own filter parser: twice
    // the same records create each resource once.
    let odd = singer()
        .record(
            "users",
            json!({"id": "hr-\"q\" and (x) + y&z=1 \\", "email": "o'brien+tag@example.com"}),
        )
        .record(
            "groups",
            json!({"id": "g \"odd\" or 1", "name": "Odd \"Group\""}),
        )
        .record(
            "memberships",
            json!({"group_id": "g \"odd\" or 1", "user_id": "hr-\"q\" and (x) + y&z=1 \\"}),
        )
        .state(json!({"n": 3}));
    for _ in 0..2 {
        let run = target(&server.config(), &odd).ok();
        assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    }
    assert_eq!(
        server.user("o'brien+tag@example.com")["externalId"],
        json!("hr-\"q\" and (x) + y&z=1 \\")
    );
    assert_eq!(
        server.member_names("Odd \"Group\""),
        ["o'brien+tag@example.com"]
    );
    assert_eq!(server.list("Groups").len(), 2);
    assert_eq!(server.list("Users").len(), 6);
}

#[test]
fn without_patch_or_filters_users_and_groups_are_read_merged_and_put_with_if_match() {
    // The server announces no PATCH and no filters but ETags: roster lists each resource type
    // once into an index, and writes whole resources with PUT and If-Match. (`maxResults`
    // also caps plain listings on scim2-server: 0 would hide every resource.)
    let Some(server) = Server::start_with(Some(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": false},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": false, "maxResults": 1000},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [],
    }))) else {
        return;
    };
    let mut input = singer();
    for n in 1..=3 {
        input = input.record(
            "users",
            json!({"id": format!("hr-{n}"), "email": format!("u{n}@example.com"),
                   "first_name": format!("First{n}")}),
        );
    }
    let input = input
        .record("groups", json!({"id": "g-ops", "name": "Ops"}))
        .record(
            "memberships",
            json!({"group_id": "g-ops", "user_id": "hr-1"}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-ops", "user_id": "hr-2"}),
        )
        .state(json!({"n": 1}));
    let run = target(&server.config(), &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert_eq!(
        server.member_names("Ops"),
        ["u1@example.com", "u2@example.com"]
    );

    // Someone else edits u1 between roster's read and its PUT: the server answers 412 to
    // roster's stale If-Match, roster reads and merges again, and both edits survive.
    let u1 = server.user("u1@example.com");
    let mut theirs = u1.clone();
    theirs["title"] = json!("Boss");
    let proxy = RaceProxy::start(
        &server.base,
        &format!("Bearer {TOKEN}"),
        crate::support::scim::Trigger {
            method: "PUT",
            path: "/Users/",
            user_name: None,
        },
        vec![(
            "PUT",
            format!("/Users/{}", u1["id"].as_str().unwrap()),
            Some(theirs),
        )],
    );
    let input = singer()
        .record(
            "users",
            json!({"id": "hr-1", "email": "u1@example.com", "first_name": "Renamed"}),
        )
        .record(
            "users",
            json!({"id": "hr-3", "email": "u3@example.com", "_sdc_deleted_at": DELETED}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-ops", "user_id": "hr-1", "_sdc_deleted_at": DELETED}),
        )
        .record(
            "memberships",
            json!({"group_id": "g-ops", "user_id": "hr-3"}),
        )
        .state(json!({"n": 2}));
    let mut config = server.config_at(&proxy.base);
    config["max_concurrency"] = json!(1);
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert_eq!(proxy.planted.lock().unwrap().len(), 1, "the race happened");
    let u1 = server.user("u1@example.com");
    assert_eq!(u1["name"]["givenName"], json!("Renamed"));
    assert_eq!(u1["title"], json!("Boss"), "the other edit was kept");
    assert_eq!(server.user("u3@example.com")["active"], json!(false));
    assert_eq!(
        server.member_names("Ops"),
        ["u2@example.com", "u3@example.com"]
    );
    assert_eq!(server.list("Users").len(), 3, "nothing created twice");
}
