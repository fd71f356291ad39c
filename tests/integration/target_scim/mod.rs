//! target-roster provisioning a SCIM 2.0 service provider (roster-sandbox's `/scim/v2` and
//! `/guru/api/scim/v2`): lookups before creates, updates in place, 409 adoption, deactivation
//! and hard deletes, group membership deltas in halving chunks, servers without PATCH or
//! filters, Guru SCIM's two auth schemes, and a run killed mid-way then resumed from its last
//! STATE.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod memberships;

use roster_sandbox::{FailRule, Sandbox, Vendor};
use serde_json::{Value, json};

use crate::support::scim::{RaceProxy, Trigger};
use crate::support::target::{Input, resume_after, target, target_killed_after};

const EXT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn users(sb: &Sandbox, vendor: Vendor) -> Vec<Value> {
    sb.dump(vendor)["Users"].as_array().unwrap().clone()
}

fn groups(sb: &Sandbox, vendor: Vendor) -> Vec<Value> {
    sb.dump(vendor)["Groups"].as_array().unwrap().clone()
}

fn user_by(sb: &Sandbox, vendor: Vendor, attr: &str, value: &str) -> Vec<Value> {
    users(sb, vendor)
        .into_iter()
        .filter(|u| {
            u[attr]
                .as_str()
                .is_some_and(|v| v.eq_ignore_ascii_case(value))
        })
        .collect()
}

fn one_user(sb: &Sandbox, vendor: Vendor, attr: &str, value: &str) -> Value {
    let found = user_by(sb, vendor, attr, value);
    assert_eq!(found.len(), 1, "{attr} {value}: {found:?}");
    found.into_iter().next().unwrap()
}

fn group_by_external(sb: &Sandbox, vendor: Vendor, external: &str) -> Value {
    let found: Vec<Value> = groups(sb, vendor)
        .into_iter()
        .filter(|g| g["externalId"] == json!(external))
        .collect();
    assert_eq!(found.len(), 1, "group {external}: {found:?}");
    found.into_iter().next().unwrap()
}

fn member_ids(group: &Value) -> Vec<String> {
    let mut ids: Vec<String> = group["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["value"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// How many requests with `method` went to a path starting with `path`.
fn count(sb: &Sandbox, method: &str, path: &str) -> usize {
    sb.requests()
        .iter()
        .filter(|r| r.method == method && r.path.starts_with(path))
        .count()
}

fn users_input() -> Input {
    Input::new().schema("users", &["id"])
}

#[test]
fn users_are_looked_up_before_created_updated_in_place_and_unchanged_on_a_replay() {
    let sb = Sandbox::builder()
        .users(3)
        .groups(1)
        .start_background()
        .unwrap();
    let seeded = users(&sb, Vendor::Scim);
    let first_email = seeded[0]["userName"].as_str().unwrap().to_string();
    let second = seeded
        .iter()
        .find(|u| u["externalId"] == json!("hr-00002"))
        .unwrap()
        .clone();
    let second_email = second["userName"].as_str().unwrap().to_string();
    let first_external = seeded[0]["externalId"].as_str().unwrap().to_string();
    let input = users_input()
        // Found by externalId: only the first name changes.
        .record(
            "users",
            json!({"id": first_external, "email": first_email, "first_name": "Changed"}),
        )
        // Not found by externalId, found by userName (case-insensitively): adopted and linked.
        .record(
            "users",
            json!({"id": "crm-2", "email": second_email.to_uppercase()}),
        )
        // Absent: created with every mapped field.
        .record(
            "users",
            json!({"id": "new-1", "email": "new1@example.com", "first_name": "New",
            "last_name": "One", "name": "New One", "active": true, "title": "Engineer",
            format!("{EXT}.department"): "R&D", "plan": "pro"}),
        )
        // No email: the key becomes the userName.
        .record("users", json!({"id": "new-2"}))
        .state(json!({"n": 4}));
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Scim), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 4})));
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(
        run.stderr.contains("\"plan\" has no SCIM attribute"),
        "{}",
        run.stderr
    );

    let first = one_user(&sb, Vendor::Scim, "externalId", &first_external);
    assert_eq!(first["name"]["givenName"], json!("Changed"));
    let linked = one_user(&sb, Vendor::Scim, "externalId", "crm-2");
    assert_eq!(linked["id"], second["id"], "adopted, not duplicated");
    assert_eq!(
        user_by(&sb, Vendor::Scim, "userName", &second_email).len(),
        1
    );
    let new = one_user(&sb, Vendor::Scim, "userName", "new1@example.com");
    assert_eq!(new["externalId"], json!("new-1"));
    assert_eq!(new["displayName"], json!("New One"));
    assert_eq!(
        new["name"],
        json!({"givenName": "New", "familyName": "One"})
    );
    assert_eq!(
        new["emails"],
        json!([{"value": "new1@example.com", "type": "work", "primary": true}])
    );
    assert_eq!(new["title"], json!("Engineer"));
    assert_eq!(new[EXT]["department"], json!("R&D"));
    assert!(new.get("plan").is_none());
    assert_eq!(
        one_user(&sb, Vendor::Scim, "externalId", "new-2")["userName"],
        json!("new-2")
    );
    assert_eq!(
        count(&sb, "POST", "/scim/v2/Users"),
        2,
        "{:?}",
        sb.requests()
    );
    assert_eq!(count(&sb, "PATCH", "/scim/v2/Users"), 2);
    assert_eq!(users(&sb, Vendor::Scim).len(), 5);

    // The same input again: everything is found and nothing differs.
    sb.clear_requests();
    let run = target(&sb.config(Vendor::Scim), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 4})));
    assert_eq!(count(&sb, "POST", "/scim/v2/Users"), 0);
    assert_eq!(count(&sb, "PATCH", "/scim/v2/Users"), 0);
    assert_eq!(users(&sb, Vendor::Scim).len(), 5);
    assert!(run.stderr.contains("skipped"), "{}", run.stderr);
}

#[test]
fn a_conflict_on_create_adopts_the_one_match_or_rejects_with_the_servers_detail() {
    let sb = Sandbox::builder()
        .users(1)
        .groups(0)
        .start_background()
        .unwrap();
    let token = sb.config(Vendor::Scim)["bearer_token"]
        .as_str()
        .unwrap()
        .to_string();
    // Someone else creates alice between the writer's lookups and its POST.
    let proxy = RaceProxy::plant_users(
        &sb.base_url(Vendor::Scim),
        &format!("Bearer {token}"),
        "alice@example.com",
        vec![
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": "Alice@Example.com", "active": true}),
        ],
    );
    let mut config = sb.config(Vendor::Scim);
    config["base_url"] = json!(proxy.base);
    let input = users_input()
        .record(
            "users",
            json!({"id": "hr-alice", "email": "alice@example.com", "first_name": "Alice"}),
        )
        .state(json!({"n": 1}));
    let run = target(&config, &input).ok();
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    assert!(run.stderr.contains("adopting it"), "{}", run.stderr);
    let alice = one_user(&sb, Vendor::Scim, "userName", "alice@example.com");
    assert_eq!(alice["id"], proxy.planted.lock().unwrap()[0]["id"]);
    assert_eq!(alice["externalId"], json!("hr-alice"));
    assert_eq!(alice["name"]["givenName"], json!("Alice"));
    assert!(
        sb.requests()
            .iter()
            .any(|r| r.method == "POST" && r.path == "/scim/v2/Users" && r.status == 409)
    );

    // Two users match after the 409 (one by userName, one by externalId): nothing is adopted
    // and the record is rejected with the server's detail.
    let proxy = RaceProxy::plant_users(
        &sb.base_url(Vendor::Scim),
        &format!("Bearer {token}"),
        "bob@example.com",
        vec![
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": "bob@example.com"}),
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": "robert@example.com", "externalId": "hr-bob"}),
        ],
    );
    config["base_url"] = json!(proxy.base);
    let input = users_input()
        .record("users", json!({"id": "hr-bob", "email": "bob@example.com"}))
        .state(json!({"n": 1}));
    let run = target(&config, &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 1})));
    let reason = run.reason_for("id", "hr-bob");
    assert!(
        reason.contains("already taken"),
        "the server's detail: {reason}"
    );
    assert!(reason.contains("2 existing users match"), "{reason}");
    assert_eq!(
        user_by(&sb, Vendor::Scim, "userName", "bob@example.com").len(),
        1
    );
}

#[test]
fn deletes_deactivate_unless_hard_delete_is_set() {
    let sb = Sandbox::builder()
        .users(3)
        .groups(0)
        .start_background()
        .unwrap();
    let deleted = "2024-05-01T00:00:00Z";
    let input = users_input()
        .record(
            "users",
            json!({"id": "hr-00001", "_sdc_deleted_at": deleted}),
        )
        .record(
            "users",
            json!({"id": "hr-00001", "_sdc_deleted_at": deleted}),
        )
        .record("users", json!({"id": "nobody", "_sdc_deleted_at": deleted}))
        .state(json!({"n": 3}));
    let run = target(&sb.config(Vendor::Scim), &input).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 3})));
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    let first = one_user(&sb, Vendor::Scim, "externalId", "hr-00001");
    assert_eq!(first["active"], json!(false));
    assert_eq!(
        users(&sb, Vendor::Scim).len(),
        3,
        "deactivated, not deleted"
    );
    assert_eq!(count(&sb, "DELETE", "/scim/v2/Users"), 0);

    let mut config = sb.config(Vendor::Scim);
    config["hard_delete"] = json!(true);
    let input = users_input()
        .record(
            "users",
            json!({"id": "hr-00002", "_sdc_deleted_at": deleted}),
        )
        .state(json!({"n": 1}));
    target(&config, &input).ok();
    assert!(user_by(&sb, Vendor::Scim, "externalId", "hr-00002").is_empty());
    assert_eq!(users(&sb, Vendor::Scim).len(), 2);
    assert_eq!(count(&sb, "DELETE", "/scim/v2/Users"), 1);
}

#[test]
fn guru_scim_takes_basic_bearer_and_the_token_alone_and_refuses_a_bad_token() {
    let sb = Sandbox::builder()
        .users(1)
        .groups(1)
        .start_background()
        .unwrap();
    for (scheme, n) in [("basic", 1), ("bearer", 2), ("token alone", 3)] {
        let mut config = sb.config(Vendor::GuruScim);
        if scheme == "token alone" {
            // Guru's API document: one Bearer token, no username.
            config.as_object_mut().unwrap().remove("scim_username");
        } else {
            config["auth_scheme"] = json!(scheme);
        }
        let input = users_input()
            .schema("memberships", &["group_id", "user_id"])
            .record(
                "users",
                json!({"id": format!("g{n}"), "email": format!("g{n}@example.com"), "name": "G"}),
            )
            .record(
                "memberships",
                json!({"group_id": "team-001", "user_id": format!("g{n}")}),
            )
            .state(json!({"n": 2}));
        let run = target(&config, &input).ok();
        assert!(run.rejects.is_empty(), "{scheme}: {:?}", run.rejects);
        let user = one_user(&sb, Vendor::GuruScim, "externalId", &format!("g{n}"));
        let team = group_by_external(&sb, Vendor::GuruScim, "team-001");
        assert!(member_ids(&team).contains(&user["id"].as_str().unwrap().to_string()));
    }
    assert!(
        user_by(&sb, Vendor::Scim, "externalId", "g1").is_empty(),
        "guru_scim has its own store"
    );
    let mut config = sb.config(Vendor::GuruScim);
    config["scim_token"] = json!("wrong-token");
    let run = target(
        &config,
        &users_input().record("users", json!({"id": "x", "email": "x@example.com"})),
    );
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("wrong-token"), "the token never shows");
}

#[test]
fn a_run_killed_mid_way_resumes_from_its_last_state_without_duplicates() {
    let sb = Sandbox::builder()
        .users(2)
        .groups(1)
        // Slow enough (two requests of 60 ms per user) that the run lasts seconds, long after
        // its first state.
        .latency(Some(Vendor::Scim), std::time::Duration::from_millis(60))
        .start_background()
        .unwrap();
    // As a tap sends them: the users, then the memberships, a state after each record.
    let mut input = users_input().schema("memberships", &["group_id", "user_id"]);
    let mut n = 0;
    for i in 1..=40 {
        input = input.record(
            "users",
            json!({"id": format!("k{i}"), "email": format!("k{i}@example.com")}),
        );
        n += 1;
        input = input.state(json!({"n": n}));
    }
    for i in 1..=40 {
        input = input.record(
            "memberships",
            json!({"group_id": "team-001", "user_id": format!("k{i}")}),
        );
        n += 1;
        input = input.state(json!({"n": n}));
    }
    // One request at a time, so the run is still going when its first state comes out (the
    // first is printed as soon as it is safe; a second could wait a second, and on a loaded
    // machine the run sometimes ended first).
    let mut config = sb.config(Vendor::Scim);
    config["max_concurrency"] = json!(1);
    let states = target_killed_after(&config, &input, 1);
    let last = states.last().cloned();
    assert!(
        last.as_ref().is_some_and(|s| s["n"].as_u64() < Some(80)),
        "killed mid-way: {last:?}"
    );
    let rest = resume_after(&input, last.as_ref());
    let run = target(&sb.config(Vendor::Scim), &rest).ok();
    assert_eq!(run.states.last(), Some(&json!({"n": 80})));
    assert!(run.rejects.is_empty(), "{:?}", run.rejects);
    let team = group_by_external(&sb, Vendor::Scim, "team-001");
    for i in 1..=40 {
        let user = one_user(&sb, Vendor::Scim, "externalId", &format!("k{i}"));
        assert!(
            member_ids(&team).contains(&user["id"].as_str().unwrap().to_string()),
            "k{i}"
        );
    }
    assert_eq!(users(&sb, Vendor::Scim).len(), 42, "no duplicates");
}

#[test]
fn a_dry_run_shows_lookups_and_creates_without_touching_the_server() {
    let sb = Sandbox::builder()
        .users(1)
        .groups(0)
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, sb.config(Vendor::Scim).to_string()).unwrap();
    let input_path = dir.path().join("input.jsonl");
    let input = users_input()
        .schema("memberships", &["group_id", "user_id"])
        .record("users", json!({"id": "d1", "email": "d1@example.com"}))
        .record("memberships", json!({"group_id": "g1", "user_id": "d1"}));
    std::fs::write(&input_path, input.text()).unwrap();
    let out_path = dir.path().join("dry.ndjson");
    sb.clear_requests();
    let out = crate::support::bin::target()
        .config(&config_path)
        .input(&input_path)
        .arg("--dry-run")
        .arg("--dry-run-output")
        .arg(&out_path)
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sb.requests().is_empty(), "a dry run sends nothing");
    let lines: Vec<Value> = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let requests: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == json!("request"))
        .map(|l| {
            (
                l["method"].as_str().unwrap().to_string(),
                l["path"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        requests.contains(&(
            "GET".into(),
            "/Users?filter=externalId%20eq%20%22d1%22".into()
        )),
        "{requests:?}"
    );
    assert!(
        requests.iter().any(|(m, p)| m == "POST" && p == "/Users"),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|(m, p)| m == "PATCH" && p.starts_with("/Groups/")),
        "{requests:?}"
    );
}

/// A POST whose answer was lost is not repeated: the writer looks for what it may have made and
/// adopts it. Each create below is applied by the server, then answered 500 or cut off
/// (`apply_then_fail`); the server must end up holding one user per userName and one group per
/// externalId (counted: a blind resend would create a second group, since displayName is not
/// unique), with the members the run asked for. Every body goes out as `application/scim+json`.
#[test]
fn a_post_whose_answer_was_lost_is_not_repeated_but_looked_up_and_adopted() {
    for vendor in [Vendor::Scim, Vendor::GuruScim] {
        let sb = Sandbox::builder()
            .users(0)
            .groups(0)
            .start_background()
            .unwrap();
        let prefix = vendor.prefix();
        sb.faults().fail_next(
            FailRule::apply_then_fail(format!("{prefix}/Users"), 1)
                .status(500)
                .method("POST"),
        );
        sb.faults()
            .fail_next(FailRule::apply_then_drop(format!("{prefix}/Groups"), 1).method("POST"));
        sb.faults().fail_next(
            FailRule::apply_then_fail(format!("{prefix}/Groups"), 1)
                .status(503)
                .method("POST"),
        );
        let input = users_input()
            .schema("groups", &["id"])
            .schema("memberships", &["group_id", "user_id"])
            .record("users", json!({"id": "hr-1", "email": "one@example.com"}))
            .record("users", json!({"id": "hr-2", "email": "two@example.com"}))
            .record("groups", json!({"id": "grp-a", "name": "Support"}))
            .record("groups", json!({"id": "grp-b", "name": "Sales"}))
            .record(
                "memberships",
                json!({"group_id": "grp-a", "user_id": "hr-1"}),
            )
            .record(
                "memberships",
                json!({"group_id": "grp-b", "user_id": "hr-2"}),
            )
            .state(json!({"n": 6}));
        let run = target(&sb.config(vendor), &input).ok();
        assert!(
            run.rejects.is_empty(),
            "{vendor}: {:?}\n{}",
            run.rejects,
            run.stderr
        );
        assert_eq!(run.states.last(), Some(&json!({"n": 6})));
        assert!(
            sb.faults().view().fail_next.is_empty(),
            "{vendor}: every fault fired"
        );
        // What the server holds, counted.
        assert_eq!(
            users(&sb, vendor).len(),
            2,
            "{vendor}: {:?}",
            users(&sb, vendor)
        );
        let one = one_user(&sb, vendor, "userName", "one@example.com");
        let two = one_user(&sb, vendor, "userName", "two@example.com");
        assert_eq!(
            groups(&sb, vendor).len(),
            2,
            "{vendor}: {:?}",
            groups(&sb, vendor)
        );
        let a = group_by_external(&sb, vendor, "grp-a");
        let b = group_by_external(&sb, vendor, "grp-b");
        assert_eq!(member_ids(&a), [one["id"].as_str().unwrap()]);
        assert_eq!(member_ids(&b), [two["id"].as_str().unwrap()]);
        assert!(
            run.stderr.contains("unconfirmed create"),
            "{vendor}: {}",
            run.stderr
        );
        // Every body the writer sent was application/scim+json.
        let writes: Vec<_> = sb
            .requests()
            .into_iter()
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH"))
            .collect();
        assert!(writes.len() >= 6, "{vendor}: {writes:?}");
        for w in writes {
            assert_eq!(
                w.headers.get("content-type").map(String::as_str),
                Some("application/scim+json"),
                "{vendor}: {} {}",
                w.method,
                w.path
            );
        }
    }
}
