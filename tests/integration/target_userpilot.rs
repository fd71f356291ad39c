//! target-roster against the sandbox's Userpilot: users, companies, memberships (the user's
//! company, by `id`) and events land exactly as sent, every value as a string and `null` as
//! `null`; deletes are scheduled in batches of at most 1,000 ids, one request per 2 s; what
//! Userpilot cannot take is rejected with the reason; a user and its membership share one
//! identify. What every writer must do (round trip, STATE order, fault storms, lost answers,
//! rejects, Meltano's test stream) is in `compliance::userpilot`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::target;

use std::path::{Path, PathBuf};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};
use target::{
    assert_unique, find, items, lines, reason, rec, reject_at, rejects, run, sandbox, schema,
    state, succeeded,
};

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    target::config(sb, Vendor::Userpilot, dir, extra)
}

fn user<'a>(dump: &'a Value, id: &str) -> &'a Value {
    find(dump, "users", "user_id", id).unwrap_or_else(|| panic!("no user {id} in {dump}"))
}

fn company<'a>(dump: &'a Value, id: &str) -> &'a Value {
    &find(dump, "companies", "company_id", id)
        .unwrap_or_else(|| panic!("no company {id} in {dump}"))["metadata"]
}

#[test]
fn every_kind_lands_exactly_as_sent() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    // Arrays go as JSON text by default (target_mapping); here they are refused, as the vendor
    // would, to check the reason.
    let cfg = config(&sb, dir.path(), json!({"nested_values": "reject"}));
    let input = lines(&[
        schema("users"),       // 1
        schema("groups"),      // 2
        schema("memberships"), // 3
        schema("events"),      // 4
        rec(
            "users",
            json!({"id": "u1", "email": "a@x.io", "name": "Ann", "active": true, "attributes": {"seats": 5, "plan": "pro"}}),
        ), // 5
        rec("users", json!({"id": "u2", "email": "b@x.io"})), // 6
        rec("users", json!({"id": "u3", "email": "c@x.io"})), // 7
        rec(
            "groups",
            json!({"id": "g1", "name": "Acme", "attributes": {"tier": "gold", "size": 10}}),
        ), // 8
        rec("groups", json!({"id": "g3", "name": "Gone"})), // 9
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u1", "attributes": {"role": "admin"}}),
        ), // 10
        rec("memberships", json!({"group_id": "g1", "user_id": "u2"})), // 11
        rec(
            "events",
            json!({"user_id": "u1", "group_id": "g1", "name": "signed_up", "timestamp": "2024-01-01T00:00:00Z", "attributes": {"plan": "pro", "seats": 5}}),
        ), // 12
        // null clears (passed on as null), absent keeps
        rec("users", json!({"id": "u1", "attributes": {"seats": null}})), // 13
        rec(
            "users",
            json!({"id": "u3", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 14
        rec(
            "groups",
            json!({"id": "g3", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 15
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u2", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 16
        rec("users", json!({"id": "u9", "attributes": {"tags": ["a"]}})), // 17
        state(json!({"bookmarks": {"users": {}}})),                       // 18
    ]);
    let out = run(&cfg, &input);
    let stderr = succeeded(&out);
    assert_eq!(
        target::last_state(&out).as_deref(),
        Some(r#"{"bookmarks":{"users":{}}}"#)
    );
    let dump = sb.dump(Vendor::Userpilot);
    let u1 = user(&dump, "u1");
    assert_eq!(
        u1["metadata"],
        json!({"email": "a@x.io", "name": "Ann", "active": "true", "plan": "pro", "seats": null}),
        "values as strings, seats cleared by null"
    );
    assert_eq!(u1["company_id"], "g1");
    assert_eq!(user(&dump, "u2")["metadata"], json!({"email": "b@x.io"}));
    assert_eq!(user(&dump, "u2")["company_id"], "g1");
    assert!(find(&dump, "users", "user_id", "u9").is_none());
    assert_eq!(
        company(&dump, "g1"),
        &json!({"name": "Acme", "tier": "gold", "size": "10"})
    );
    // Userpilot schedules deletions (daily): the records stay until then.
    assert_eq!(
        dump["scheduled_deletions"],
        json!({"users": ["u3"], "companies": ["g3"]})
    );
    let events = items(&dump, "events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user_id"], "u1");
    assert_eq!(events[0]["event_name"], "signed_up");
    assert_eq!(
        events[0]["metadata"],
        json!({"plan": "pro", "seats": "5", "company_id": "g1"}),
        "track documents no time field: the timestamp is not sent"
    );

    let rejected = rejects(dir.path());
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    for (line, expect) in [
        (16, "no call to remove a user from a company"),
        (17, "\"tags\" is an array"),
    ] {
        let r = reject_at(&rejected, line).unwrap_or_else(|| panic!("line {line}: {rejected:?}"));
        assert!(reason(r).contains(expect), "line {line}: {}", reason(r));
    }
    assert!(
        stderr.contains("13 records") && stderr.contains("11 sent, 2 rejected, 0 skipped"),
        "{stderr}"
    );
    // One DELETE per kind, each carrying its ids.
    let deletes: Vec<String> = sb
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:?}");
}

#[test]
fn deletes_go_in_batches_of_1000_at_most_one_request_per_2_s_and_202_is_accepted() {
    // Userpilot's documented limits, enforced: a delete sooner than 2 s after the last is 429.
    let sb = target::builder()
        .realistic_limits()
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({}));
    let deleted = json!("2024-01-01T00:00:00Z");
    let mut input = vec![schema("users"), schema("groups")];
    for i in 0..2500 {
        input.push(rec(
            "users",
            json!({"id": format!("u{i}"), "_sdc_deleted_at": deleted}),
        ));
    }
    for g in 0..3 {
        input.push(rec(
            "groups",
            json!({"id": format!("g{g}"), "_sdc_deleted_at": deleted}),
        ));
    }
    input.push(state(json!({"done": true})));
    let out = run(&cfg, &lines(&input));
    let stderr = succeeded(&out);
    assert_eq!(
        target::last_state(&out).as_deref(),
        Some(r#"{"done":true}"#)
    );
    assert!(stderr.contains("2503 sent, 0 rejected"), "{stderr}");
    let dump = sb.dump(Vendor::Userpilot);
    let mut users: Vec<String> = items(&dump["scheduled_deletions"], "users")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_unique(users.clone(), "user deletions");
    users.sort();
    let mut want: Vec<String> = (0..2500).map(|i| format!("u{i}")).collect();
    want.sort();
    assert_eq!(users, want);
    assert_eq!(items(&dump["scheduled_deletions"], "companies").len(), 3);
    // 2,500 users in 3 requests and 3 companies in 1, each answered 202, through one bucket
    // of 1 request per 2 s (the sandbox logs arrival times).
    let deletes: Vec<_> = sb
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(
        deletes
            .iter()
            .filter(|r| r.path == "/userpilot/v1/users")
            .count(),
        3
    );
    assert_eq!(
        deletes
            .iter()
            .filter(|r| r.path == "/userpilot/v1/companies")
            .count(),
        1
    );
    assert!(deletes.iter().all(|r| r.status == 202));
    // The pacer spaces them 2 s apart (less up to 100 ms of timer slack); arrival times also
    // carry connection set-up and a busy machine's scheduling, so allow some of that. Unpaced,
    // they would arrive milliseconds apart.
    for pair in deletes.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap >= chrono::Duration::milliseconds(1500),
            "two deletes {} ms apart",
            gap.num_milliseconds()
        );
    }
}

/// A user and its membership in one run go out as one identify (issue 11, item 9): the user's
/// identify carries the company (`id` and `company_id`), and the membership is accepted without
/// a call of its own. Userpilot counts identify against 600/min, so this halves the calls.
#[test]
fn a_user_and_its_membership_share_one_identify() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&sb, dir.path(), json!({"requests_per_second": 40}));
    let n = 40;
    let mut input = vec![schema("groups"), schema("users"), schema("memberships")];
    for g in 0..4 {
        input.push(rec("groups", json!({"id": format!("g{g}"), "name": "G"})));
    }
    for u in 0..n {
        input.push(rec(
            "users",
            json!({"id": format!("u{u}"), "email": "a@x.io"}),
        ));
    }
    for u in 0..n {
        input.push(rec(
            "memberships",
            json!({"user_id": format!("u{u}"), "group_id": format!("g{}", u % 4)}),
        ));
    }
    input.push(state(json!({"bookmarks": {"memberships": {}}})));
    let out = run(&cfg, &lines(&input));
    let stderr = succeeded(&out);
    assert!(
        stderr.contains(&format!("{} sent, 0 rejected", 2 * n + 4)),
        "{stderr}"
    );
    assert_eq!(
        target::last_state(&out).as_deref(),
        Some(r#"{"bookmarks":{"memberships":{}}}"#)
    );
    let dump = sb.dump(Vendor::Userpilot);
    for u in 0..n {
        let user = user(&dump, &format!("u{u}"));
        assert_eq!(user["company_id"], format!("g{}", u % 4), "{user}");
        assert_eq!(user["metadata"], json!({"email": "a@x.io"}));
    }
    let identifies = sb
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/v1/identify"))
        .count();
    eprintln!(
        "{n} users + {n} memberships: {identifies} identify calls (without folding: {})",
        2 * n
    );
    // The first users may go out before their memberships are read (more of them on a loaded
    // machine: 52 of 80 seen on CI-like load); the rest carry them. Without folding: 2n = 80.
    assert!(identifies <= n + n / 2, "{identifies} identify calls");
}
