//! Flat warehouse rows against every vendor that takes free-form properties (Appcues,
//! Userpilot, UserGuiding, Userflow): `nested_values` (arrays and objects as JSON text by
//! default, or rejected, or left out), `null_values` (`skip` leaves the vendor's value alone)
//! and `streams.<name>.group_key` (a column of a users row becomes that user's membership).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support::target;

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Map, Value, json};
use target::{
    find, lines, reason, rec, reject_at, rejects, run, sandbox, schema, state, succeeded,
};

const VENDORS: [Vendor; 4] = [
    Vendor::Appcues,
    Vendor::Userpilot,
    Vendor::UserGuiding,
    Vendor::Userflow,
];

/// The properties the vendor holds for user `id`.
fn props(sb: &Sandbox, vendor: Vendor, id: &str) -> Map<String, Value> {
    let dump = sb.dump(vendor);
    let user = match vendor {
        Vendor::Appcues => find(&dump, "users", "user_id", id).cloned().map(|mut u| {
            u.as_object_mut().unwrap().remove("user_id");
            u
        }),
        Vendor::Userpilot => find(&dump, "users", "user_id", id).map(|u| u["metadata"].clone()),
        Vendor::UserGuiding => find(&dump, "users", "userId", id).map(|u| u["attributes"].clone()),
        _ => find(&dump, "users", "id", id).map(|u| u["attributes"].clone()),
    };
    let mut props = user
        .unwrap_or_else(|| panic!("{vendor:?}: no user {id} in {dump}"))
        .as_object()
        .cloned()
        .unwrap();
    // The sandbox's own bookkeeping, not the record's.
    for k in ["created_at", "updated_at", "updatedAt"] {
        props.remove(k);
    }
    props
}

/// The group ids the vendor links user `id` to.
fn groups_of(sb: &Sandbox, vendor: Vendor, id: &str) -> Vec<String> {
    let dump = sb.dump(vendor);
    let mut out: Vec<String> = match vendor {
        Vendor::Appcues => dump["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["user_ids"].as_array().unwrap().iter().any(|u| u == id))
            .map(|g| g["group_id"].as_str().unwrap().to_string())
            .collect(),
        Vendor::Userpilot => find(&dump, "users", "user_id", id)
            .and_then(|u| u["company_id"].as_str())
            .map(str::to_string)
            .into_iter()
            .collect(),
        Vendor::UserGuiding => find(&dump, "users", "userId", id)
            .and_then(|u| u["companyId"].as_str())
            .map(str::to_string)
            .into_iter()
            .collect(),
        _ => find(&dump, "users", "id", id)
            .and_then(|u| u["memberships"].as_array())
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| {
                        m["group"]["id"]
                            .as_str()
                            .or(m["group_id"].as_str())
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    out.sort();
    out
}

/// Userpilot stores every value as a string.
fn as_vendor(vendor: Vendor, v: Value) -> Value {
    match (vendor, v) {
        (Vendor::Userpilot, Value::Number(n)) => Value::String(n.to_string()),
        (_, v) => v,
    }
}

fn run_rows(sb: &Sandbox, vendor: Vendor, extra: Value, rows: &[Value]) -> (String, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = target::config(sb, vendor, dir.path(), extra);
    let mut input = vec![schema("public-users")];
    input.extend(rows.iter().map(|r| rec("public-users", r.clone())));
    input.push(state(json!({"bookmarks": {}})));
    let out = run(&cfg, &lines(&input));
    let stderr = succeeded(&out);
    (stderr, rejects(dir.path()))
}

#[test]
fn arrays_and_objects_in_flat_rows_go_as_json_text_by_default() {
    for vendor in VENDORS {
        let sb = sandbox();
        let (stderr, rejected) = run_rows(
            &sb,
            vendor,
            json!({}),
            &[
                json!({"id": "u1", "email": "a@x.io", "tags": ["a", "b"], "address": {"city": "Oslo"}, "attributes": {"prefs": {"dark": true}}}),
                json!({"id": "u2", "tags": ["c"]}),
            ],
        );
        assert!(rejected.is_empty(), "{vendor:?}: {rejected:?}");
        assert_eq!(
            props(&sb, vendor, "u1"),
            json!({"email": "a@x.io", "tags": "[\"a\",\"b\"]", "address": "{\"city\":\"Oslo\"}", "prefs": "{\"dark\":true}"})
                .as_object()
                .cloned()
                .unwrap(),
            "{vendor:?}"
        );
        // Warned once per field, not once per record.
        assert_eq!(
            stderr.matches("field \"tags\" holds an array").count(),
            1,
            "{vendor:?}: {stderr}"
        );
        assert!(
            stderr.contains("field \"attributes.prefs\" holds an object"),
            "{vendor:?}: {stderr}"
        );
    }
}

/// `updated_at` is the source's change time (its INCREMENTAL bookmark), not a trait of the
/// user: it went to every free-form vendor as a property (an attribute of a flat row, then a
/// standard field of the record model). It is sent only under another name the user gives it.
#[test]
fn updated_at_is_not_sent_as_a_property_unless_renamed() {
    let row = json!({"id": "u1", "email": "a@x.io", "updated_at": "2020-01-02T03:04:05Z"});
    for vendor in VENDORS {
        let sb = sandbox();
        let (_, rejected) = run_rows(&sb, vendor, json!({}), std::slice::from_ref(&row));
        assert!(rejected.is_empty(), "{vendor:?}: {rejected:?}");
        let dump = sb.dump(vendor);
        assert!(
            !dump.to_string().contains("2020-01-02T03:04:05"),
            "{vendor:?}: {dump}"
        );
        assert_eq!(props(&sb, vendor, "u1")["email"], json!("a@x.io"));
        let sb = sandbox();
        let rename =
            json!({"streams": {"public-users": {"rename": {"updated_at": "source_updated_at"}}}});
        let (_, rejected) = run_rows(&sb, vendor, rename, std::slice::from_ref(&row));
        assert!(rejected.is_empty(), "{vendor:?}: {rejected:?}");
        assert_eq!(
            props(&sb, vendor, "u1")["source_updated_at"],
            json!("2020-01-02T03:04:05Z"),
            "{vendor:?}"
        );
    }
}

#[test]
fn nested_values_reject_or_drop_and_userflow_change_objects_pass() {
    for vendor in VENDORS {
        let sb = sandbox();
        let (_, rejected) = run_rows(
            &sb,
            vendor,
            json!({"nested_values": "reject"}),
            &[
                json!({"id": "u1", "plan": "pro"}),
                json!({"id": "u2", "tags": ["a"]}),
            ],
        );
        assert_eq!(rejected.len(), 1, "{vendor:?}: {rejected:?}");
        let r = reject_at(&rejected, 3).unwrap();
        assert!(reason(r).contains("\"tags\""), "{vendor:?}: {}", reason(r));

        // The stream's own setting wins over the top-level one.
        let sb = sandbox();
        let (_, rejected) = run_rows(
            &sb,
            vendor,
            json!({"nested_values": "reject", "streams": {"public-users": {"nested_values": "drop"}}}),
            &[json!({"id": "u2", "plan": "pro", "tags": ["a"]})],
        );
        assert!(rejected.is_empty(), "{vendor:?}: {rejected:?}");
        assert_eq!(
            Value::Object(props(&sb, vendor, "u2")),
            json!({"plan": "pro"}),
            "{vendor:?}"
        );
    }
    // A Userflow change object is what Userflow takes: it is sent as it is.
    let sb = sandbox();
    let (_, rejected) = run_rows(
        &sb,
        Vendor::Userflow,
        json!({}),
        &[json!({"id": "u1", "logins": {"set": 3}})],
    );
    assert!(rejected.is_empty(), "{rejected:?}");
    assert_eq!(props(&sb, Vendor::Userflow, "u1")["logins"], 3);
}

#[test]
fn null_values_skip_leaves_the_vendors_value_alone() {
    for vendor in VENDORS {
        let sb = sandbox();
        run_rows(
            &sb,
            vendor,
            json!({}),
            &[json!({"id": "u1", "plan": "pro", "seats": 5, "name": "Ann"})],
        );
        // A warehouse NULL under `skip` (per stream) keeps the value; under the default `clear`
        // it is passed on (the vendor clears or stores null).
        run_rows(
            &sb,
            vendor,
            json!({"streams": {"public-users": {"null_values": "skip"}}}),
            &[json!({"id": "u1", "plan": null, "name": null, "seats": 6})],
        );
        let p = props(&sb, vendor, "u1");
        assert_eq!(p["plan"], "pro", "{vendor:?}: {p:?}");
        assert_eq!(p["name"], "Ann", "{vendor:?}: {p:?}");
        assert_eq!(p["seats"], as_vendor(vendor, json!(6)), "{vendor:?}: {p:?}");
        run_rows(&sb, vendor, json!({}), &[json!({"id": "u1", "plan": null})]);
        let p = props(&sb, vendor, "u1");
        assert!(
            p.get("plan").is_none_or(Value::is_null),
            "{vendor:?}: {p:?}"
        );
    }
}

#[test]
fn a_group_key_column_makes_the_users_membership() {
    for vendor in VENDORS {
        let sb = sandbox();
        let (stderr, rejected) = run_rows(
            &sb,
            vendor,
            json!({"streams": {"public-users": {"group_key": "company_id"}}}),
            &[
                json!({"id": "u1", "email": "a@x.io", "company_id": "c1"}),
                json!({"id": "u2", "email": "b@x.io", "company_id": 7}),
                json!({"id": "u3", "email": "c@x.io", "company_id": null}),
            ],
        );
        assert!(rejected.is_empty(), "{vendor:?}: {rejected:?}");
        assert_eq!(groups_of(&sb, vendor, "u1"), vec!["c1"], "{vendor:?}");
        assert_eq!(groups_of(&sb, vendor, "u2"), vec!["7"], "{vendor:?}");
        assert!(groups_of(&sb, vendor, "u3").is_empty(), "{vendor:?}");
        // The column is the membership, not a property.
        assert_eq!(
            Value::Object(props(&sb, vendor, "u1")),
            json!({"email": "a@x.io"}),
            "{vendor:?}"
        );
        // One record each, counted once.
        assert!(
            stderr.contains("3 sent, 0 rejected, 0 skipped"),
            "{vendor:?}: {stderr}"
        );
    }
}

#[test]
fn a_refused_group_key_membership_rejects_the_row_once_and_holds_the_state() {
    let sb = sandbox();
    let dir = tempfile::tempdir().unwrap();
    let cfg = target::config(
        &sb,
        Vendor::Appcues,
        dir.path(),
        json!({"streams": {"public-users": {"group_key": "company_id"}}}),
    );
    // Appcues adds members with POST /groups/{id}/users: refuse the one for c2.
    sb.faults().fail_next(
        roster_sandbox::FailRule::new("/appcues/v2/accounts/10001/groups/c2/users", 1)
            .method("POST")
            .status(422),
    );
    let input = lines(&[
        schema("public-users"),
        rec("public-users", json!({"id": "u1", "company_id": "c1"})), // 2
        rec("public-users", json!({"id": "u2", "company_id": "c2"})), // 3
        state(json!({"bookmarks": {"n": 1}})),
    ]);
    let out = run(&cfg, &input);
    let stderr = succeeded(&out);
    assert!(
        stderr.contains("2 records") && stderr.contains("1 sent, 1 rejected"),
        "{stderr}"
    );
    let rejected = rejects(dir.path());
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = reject_at(&rejected, 3).unwrap();
    assert!(
        reason(r).contains("membership in group \"c2\""),
        "{}",
        reason(r)
    );
    assert_eq!(r["record"], json!({"id": "u2", "company_id": "c2"}));
    assert_eq!(groups_of(&sb, Vendor::Appcues, "u1"), vec!["c1"]);
    assert_eq!(
        target::last_state(&out).as_deref(),
        Some(r#"{"bookmarks":{"n":1}}"#)
    );
}
