//! target-roster against the sandbox's Appcues: user and group profiles, group membership and
//! events land exactly as sent (`null` included); a profile delete removes the user; what
//! Appcues cannot take is rejected with the reason; `streams.<name>` overrides (kind, key,
//! rename, include, exclude, constants, skip) and flat warehouse rows. What every writer must do
//! (round trip, STATE order, fault storms with `Retry-After`, lost answers, rejects, Meltano's
//! test stream) is in `compliance::appcues`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::target;

use std::path::{Path, PathBuf};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};
use target::{
    find, items, lines, reason, rec, reject_at, rejects, run, sandbox, schema, state, succeeded,
};

fn config(sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
    target::config(sb, Vendor::Appcues, dir, extra)
}

fn profile<'a>(dump: &'a Value, id: &str) -> &'a Value {
    find(dump, "users", "user_id", id).unwrap_or_else(|| panic!("no user {id} in {dump}"))
}

fn group<'a>(dump: &'a Value, id: &str) -> &'a Value {
    find(dump, "groups", "group_id", id).unwrap_or_else(|| panic!("no group {id} in {dump}"))
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
            json!({"id": "u1", "email": "a@x.io", "name": "Ann", "plan": "pro", "attributes": {"seats": 5}}),
        ), // 5
        rec("users", json!({"id": "u2", "email": "b@x.io"})), // 6
        rec("users", json!({"id": "u3", "email": "c@x.io"})), // 7
        rec(
            "groups",
            json!({"id": "g1", "name": "Acme", "attributes": {"tier": "gold"}}),
        ), // 8
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u1", "attributes": {"role": "admin"}}),
        ), // 9
        rec("memberships", json!({"group_id": "g1", "user_id": "u2"})), // 10
        rec(
            "events",
            json!({"user_id": "u1", "group_id": "g1", "name": "signed_up", "timestamp": "2024-01-01T00:00:00Z", "attributes": {"plan": "pro"}}),
        ), // 11
        rec("events", json!({"user_id": "u2", "name": "logged_in"})), // 12
        // null is passed on (Appcues stores it as sent), absent keeps
        rec("users", json!({"id": "u1", "attributes": {"seats": null}})), // 13
        rec(
            "users",
            json!({"id": "u3", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 14
        rec(
            "users",
            json!({"id": "nobody", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 15
        rec(
            "groups",
            json!({"id": "g1", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 16
        rec(
            "memberships",
            json!({"group_id": "g1", "user_id": "u2", "_sdc_deleted_at": "2024-01-01T00:00:00Z"}),
        ), // 17
        rec("users", json!({"id": "u9", "attributes": {"tags": ["a"]}})), // 18
        state(json!({"bookmarks": {"users": {}}})),                       // 19
    ]);
    let out = run(&cfg, &input);
    let stderr = succeeded(&out);
    assert_eq!(
        target::last_state(&out).as_deref(),
        Some(r#"{"bookmarks":{"users":{}}}"#)
    );
    let dump = sb.dump(Vendor::Appcues);
    assert_eq!(
        items(&dump, "users").len(),
        2,
        "u3 deleted, u9 rejected: {dump}"
    );
    assert_eq!(
        profile(&dump, "u1"),
        &json!({"user_id": "u1", "email": "a@x.io", "name": "Ann", "plan": "pro", "seats": null})
    );
    assert_eq!(
        profile(&dump, "u2"),
        &json!({"user_id": "u2", "email": "b@x.io"})
    );
    assert_eq!(
        group(&dump, "g1"),
        &json!({"group_id": "g1", "name": "Acme", "tier": "gold", "user_ids": ["u1", "u2"]})
    );
    assert_eq!(
        dump["events"]["u1"],
        json!([{"name": "signed_up", "timestamp": "2024-01-01T00:00:00Z", "attributes": {"plan": "pro"}, "group_id": "g1"}])
    );
    let logged_in = dump["events"]["u2"].as_array().unwrap();
    assert_eq!(logged_in.len(), 1);
    assert_eq!(logged_in[0]["name"], "logged_in");
    // Appcues requires a timestamp: the time it was sent is filled in.
    assert!(
        chrono::DateTime::parse_from_rfc3339(logged_in[0]["timestamp"].as_str().unwrap()).is_ok(),
        "{logged_in:?}"
    );

    let rejected = rejects(dir.path());
    assert_eq!(rejected.len(), 3, "{rejected:?}");
    for (line, expect) in [
        (16, "no call to delete a group"),
        (17, "no call to remove a user from a group"),
        (18, "\"tags\" is an array"),
    ] {
        let r = reject_at(&rejected, line).unwrap_or_else(|| panic!("line {line}: {rejected:?}"));
        assert!(reason(r).contains(expect), "line {line}: {}", reason(r));
    }
    // The delete of a profile Appcues never had is skipped, not rejected.
    assert!(
        stderr.contains("14 records") && stderr.contains("10 sent, 3 rejected, 1 skipped"),
        "{stderr}"
    );
    // Both memberships of g1 went in one request.
    let joins = sb
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/groups/g1/users"))
        .count();
    assert_eq!(joins, 1);
}

#[test]
fn stream_overrides_and_flat_warehouse_rows() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &sb,
        dir.path(),
        json!({"streams": {
            // A warehouse table with its own key and column names.
            "public-customers": {
                "kind": "users",
                "key": "customer_id",
                "rename": {"mail": "email", "full_name": "name"},
                "exclude": ["internal_note"],
                "constants": {"source": "warehouse"},
            },
            // By table part; only the name is sent.
            "orgs": {"kind": "groups", "key": "org_id", "rename": {"org_name": "name"}, "include": ["name"]},
            "seats": {"kind": "memberships", "rename": {"org": "group_id", "person": "user_id"}},
            "clicks": {"kind": "events", "rename": {"who": "user_id", "what": "name", "when": "timestamp"}},
            "audit": {"kind": "skip"},
        }}),
    );
    let sdc = json!({"_sdc_extracted_at": "2024-01-01T00:00:00Z", "_sdc_batched_at": "2024-01-01T00:00:01Z", "_sdc_deleted_at": null});
    let with_sdc = |mut v: Value| {
        for (k, x) in sdc.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let input = lines(&[
        schema("public-customers"), // 1
        schema("public-orgs"),      // 2
        schema("seats"),            // 3
        schema("clicks"),           // 4
        schema("audit"),            // 5
        schema("public-users"),     // 6
        schema("misc"),             // 7
        rec(
            "public-customers",
            with_sdc(
                json!({"customer_id": "c1", "mail": "a@x.io", "full_name": "Ann", "plan": "pro", "internal_note": "vip"}),
            ),
        ), // 8
        // The record's own value beats the constant.
        rec(
            "public-customers",
            with_sdc(json!({"customer_id": "c2", "mail": "b@x.io", "source": "crm"})),
        ), // 9
        rec(
            "public-orgs",
            with_sdc(json!({"org_id": "o1", "org_name": "Acme", "tier": "gold"})),
        ), // 10
        rec("seats", json!({"org": "o1", "person": "c1"})), // 11
        rec(
            "clicks",
            json!({"who": "c1", "what": "clicked", "when": "2024-02-02T00:00:00Z", "button": "buy"}),
        ), // 12
        rec("audit", json!({"anything": 1})),               // 13
        // A flat row routed by its table part: every non-reserved column is an attribute, and
        // the row's own attributes object merges over them.
        rec(
            "public-users",
            with_sdc(
                json!({"id": "u5", "email": "e@x.io", "seats": 3, "active": true, "attributes": {"seats": 4}}),
            ),
        ), // 14
        rec("misc", json!({"id": "x"})), // 15
        state(json!({"done": 1})),       // 16
    ]);
    let out = run(&cfg, &input);
    let stderr = succeeded(&out);
    let dump = sb.dump(Vendor::Appcues);
    assert_eq!(
        profile(&dump, "c1"),
        &json!({"user_id": "c1", "email": "a@x.io", "name": "Ann", "plan": "pro", "source": "warehouse"})
    );
    assert_eq!(
        profile(&dump, "c2"),
        &json!({"user_id": "c2", "email": "b@x.io", "source": "crm"})
    );
    assert_eq!(
        group(&dump, "o1"),
        &json!({"group_id": "o1", "name": "Acme", "user_ids": ["c1"]})
    );
    let clicks = dump["events"]["c1"].as_array().unwrap();
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!(clicks[0]["name"], "clicked");
    assert_eq!(clicks[0]["timestamp"], "2024-02-02T00:00:00Z");
    assert_eq!(clicks[0]["attributes"], json!({"button": "buy"}));
    assert_eq!(
        profile(&dump, "u5"),
        &json!({"user_id": "u5", "email": "e@x.io", "seats": 4, "active": true})
    );
    assert!(find(&dump, "users", "user_id", "x").is_none());
    assert!(rejects(dir.path()).is_empty(), "{:?}", rejects(dir.path()));
    assert!(
        stderr.contains("audit → not written: 1 in, 0 sent, 0 rejected, 1 skipped (stream \"audit\" is set to kind \"skip\""),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "misc → not written: 1 in, 0 sent, 0 rejected, 1 skipped (stream \"misc\" names no kind"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("public-customers → users: 2 in, 2 sent"),
        "{stderr}"
    );
}
