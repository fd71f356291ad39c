//! Userflow's wire objects as the tap reads them, and how they become records.
//!
//! ```json
//! {"object": "user", "id": "u1", "created_at": "2024-01-02T03:04:05Z",
//!  "attributes": {"email": "a@x.io", "name": "Ann", "plan": "pro"},
//!  "memberships": [{"object": "group_membership", "group_id": "g1", "user_id": "u1",
//!                   "attributes": {"role": "admin"}, "group": {"object": "group", "id": "g1"}}]}
//! {"object": "group", "id": "g1", "created_at": "…", "attributes": {"name": "Acme", "plan": "pro"}}
//! ```
//! Objects are read straight from the decoded page (no second parse). A user's `email`, `name`,
//! `first_name` and `last_name` attributes become the standard fields, a group's `name`
//! attribute its `name`; every other attribute stays in `attributes`. Top-level fields the model
//! does not name go into `attributes` too (as `user.<key>` if an attribute already has that
//! name), so nothing Userflow returns is lost. Three keys are not copied, on purpose: `object`
//! (the type tag), and a user's `memberships` and `groups`, which become `memberships` records.
//! A membership's expanded `group` object is the group itself, which the `groups` stream carries.

use serde_json::Value;

use crate::model::{
    GROUPS_DEF, MEMBERSHIPS, MEMBERSHIPS_DEF, Object, RecordBuilder, USERS, USERS_DEF,
};
use crate::vendors::source::Skipped;

/// Attributes that are standard user fields.
const USER_FIELDS: [&str; 4] = ["email", "name", "first_name", "last_name"];

/// A user object's id, as a string.
pub fn id_of(object: &Object) -> Option<String> {
    match object.get("id")? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What one user object holds.
#[derive(Debug, Default)]
pub struct UserParts {
    /// The `users` record.
    pub user: Option<Object>,
    /// Its `memberships` records.
    pub memberships: Vec<Object>,
    /// What could not be read, per stream.
    pub problems: Vec<Skipped>,
}

/// Turns one user object into a `users` record and, with `memberships`, its membership records.
pub fn user(value: Value, memberships: bool) -> UserParts {
    let mut parts = UserParts::default();
    let Value::Object(mut object) = value else {
        parts.problems.push(Skipped::new(
            USERS,
            format!("user that is not a JSON object: {value}"),
        ));
        return parts;
    };
    let Some(id) = id_of(&object) else {
        parts.problems.push(Skipped::new(
            USERS,
            format!("user without an id: {}", Value::Object(object)),
        ));
        return parts;
    };
    object.shift_remove("id");
    object.shift_remove("object");
    object.shift_remove("groups");
    let expanded = object.shift_remove("memberships");
    let mut record = RecordBuilder::new(&USERS_DEF);
    record.key("id", id.clone());
    let mut problems = Vec::new();
    let attributes = take_attributes(&mut object, "user", id.as_str(), &mut problems);
    if let Some(problem) = problems.pop() {
        parts.problems.push(Skipped::new(USERS, problem));
        return parts;
    }
    let mut rest = Object::new();
    for (key, value) in attributes {
        match USER_FIELDS.iter().find(|f| **f == key) {
            Some(field) => {
                record.field(field, &key, value);
            }
            None => {
                rest.insert(key, value);
            }
        }
    }
    if let Some(created) = object.shift_remove("created_at") {
        record.field("created_at", "created_at", created);
    }
    merge_top_level(&mut rest, object, "user");
    record.attributes(rest);
    parts.user = Some(record.build());
    if memberships {
        if let Some(expanded) = expanded {
            membership_list(expanded, &id, &mut parts);
        }
    }
    parts
}

fn membership_list(expanded: Value, user_id: &str, parts: &mut UserParts) {
    let items = match expanded {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        // A list envelope ({"object":"list","data":[…],"has_more":…}).
        Value::Object(mut envelope) => {
            if envelope.get("has_more").and_then(Value::as_bool) == Some(true) {
                parts.problems.push(Skipped::new(
                    MEMBERSHIPS,
                    format!("user {user_id}: the expanded memberships list says has_more; only the memberships it holds were read"),
                ));
            }
            match envelope.shift_remove("data") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            }
        }
        other => {
            parts.problems.push(Skipped::new(
                MEMBERSHIPS,
                format!("user {user_id}: memberships that are not a list: {other}"),
            ));
            return;
        }
    };
    for item in items {
        match membership(item, user_id) {
            Ok(record) => parts.memberships.push(record),
            Err(problem) => parts.problems.push(Skipped::new(MEMBERSHIPS, problem)),
        }
    }
}

/// One expanded membership of user `user_id`.
fn membership(value: Value, user_id: &str) -> Result<Object, String> {
    let Value::Object(mut object) = value else {
        return Err(format!(
            "user {user_id}: membership that is not a JSON object: {value}"
        ));
    };
    let group = object.shift_remove("group");
    let group_id = object
        .remove("group_id")
        .and_then(|v| text(&v))
        .or_else(|| group.as_ref().and_then(|g| g.get("id")).and_then(text));
    let Some(group_id) = group_id else {
        return Err(format!(
            "user {user_id}: membership without a group id: {}",
            Value::Object(object)
        ));
    };
    let user_id = object
        .remove("user_id")
        .and_then(|v| text(&v))
        .unwrap_or_else(|| user_id.to_string());
    object.shift_remove("object");
    object.shift_remove("user");
    let mut problems = Vec::new();
    let mut record = RecordBuilder::new(&MEMBERSHIPS_DEF);
    record
        .key("group_id", group_id)
        .key("user_id", user_id.clone());
    let mut rest = take_attributes(&mut object, "membership", &user_id, &mut problems);
    merge_top_level(&mut rest, object, "membership");
    record.attributes(rest);
    match problems.pop() {
        Some(problem) => Err(problem),
        None => Ok(record.build()),
    }
}

/// Turns one group object into a `groups` record.
pub fn group(value: Value) -> Result<Object, String> {
    let Value::Object(mut object) = value else {
        return Err(format!("group that is not a JSON object: {value}"));
    };
    let Some(id) = id_of(&object) else {
        return Err(format!("group without an id: {}", Value::Object(object)));
    };
    object.shift_remove("id");
    object.shift_remove("object");
    // Memberships are read from the users listing, not from groups.
    object.shift_remove("memberships");
    object.shift_remove("users");
    let mut problems = Vec::new();
    let mut rest = take_attributes(&mut object, "group", &id, &mut problems);
    if let Some(problem) = problems.pop() {
        return Err(problem);
    }
    let mut record = RecordBuilder::new(&GROUPS_DEF);
    record.key("id", id);
    if let Some(name) = rest.shift_remove("name") {
        record.field("name", "name", name);
    }
    if let Some(created) = object.shift_remove("created_at") {
        record.field("created_at", "created_at", created);
    }
    merge_top_level(&mut rest, object, "group");
    record.attributes(rest);
    Ok(record.build())
}

/// Takes the `attributes` object out of a Userflow object.
fn take_attributes(
    object: &mut Object,
    kind: &str,
    id: &str,
    problems: &mut Vec<String>,
) -> Object {
    match object.shift_remove("attributes") {
        Some(Value::Object(map)) => map,
        Some(Value::Null) | None => Object::new(),
        Some(other) => {
            problems.push(format!(
                "{kind} {id}: attributes that are not an object: {other}"
            ));
            Object::new()
        }
    }
}

/// Adds the remaining top-level fields to the attributes, never overwriting one.
fn merge_top_level(attributes: &mut Object, top: Object, kind: &str) {
    for (key, value) in top {
        if attributes.contains_key(&key) {
            attributes.insert(format!("{kind}.{key}"), value);
        } else {
            attributes.insert(key, value);
        }
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_user_with_expanded_memberships() {
        let parts = user(
            json!({
                "object": "user", "id": "u1", "created_at": "2024-01-02T03:04:05.000Z",
                "attributes": {"email": "a@x.io", "name": "Ann", "plan": "pro", "signed_up_at": "2024-01-01T00:00:00Z", "seats": 3},
                "memberships": [
                    {"object": "group_membership", "group_id": "g1", "user_id": "u1", "attributes": {"role": "admin"}, "created_at": "2024-02-01T00:00:00Z", "group": {"object": "group", "id": "g1"}},
                    {"object": "group_membership", "group": {"id": "g2"}}
                ],
                "updated_at": "2024-03-01T00:00:00Z"
            }),
            true,
        );
        assert!(parts.problems.is_empty(), "{:?}", parts.problems);
        assert_eq!(
            Value::Object(parts.user.unwrap()),
            json!({"id": "u1", "email": "a@x.io", "name": "Ann", "created_at": "2024-01-02T03:04:05.000Z",
                   "attributes": {"plan": "pro", "signed_up_at": "2024-01-01T00:00:00Z", "seats": 3, "updated_at": "2024-03-01T00:00:00Z"}})
        );
        assert_eq!(
            parts
                .memberships
                .into_iter()
                .map(Value::Object)
                .collect::<Vec<_>>(),
            [
                json!({"group_id": "g1", "user_id": "u1", "attributes": {"role": "admin", "created_at": "2024-02-01T00:00:00Z"}}),
                json!({"group_id": "g2", "user_id": "u1", "attributes": {}}),
            ]
        );
    }

    #[test]
    fn memberships_are_left_out_when_not_wanted_and_envelopes_are_read() {
        let value = json!({"id": 7, "memberships": {"object": "list", "data": [{"group_id": "g"}], "has_more": true}});
        assert!(user(value.clone(), false).memberships.is_empty());
        let parts = user(value, true);
        assert_eq!(parts.user.unwrap()["id"], "7");
        assert_eq!(parts.memberships.len(), 1);
        assert!(
            parts.problems[0].reason.contains("has_more"),
            "{:?}",
            parts.problems
        );
    }

    #[test]
    fn broken_objects_are_reported_not_dropped_silently() {
        let parts = user(json!({"attributes": {"email": "x"}}), true);
        assert!(parts.user.is_none());
        assert!(parts.problems[0].reason.starts_with("user without an id"));
        let parts = user(
            json!({"id": "u", "memberships": [{"attributes": {}}]}),
            true,
        );
        assert!(
            parts.problems[0]
                .reason
                .contains("membership without a group id")
        );
        assert!(group(json!("g")).is_err());
    }

    #[test]
    fn a_group() {
        let record = group(json!({"object": "group", "id": "g1", "created_at": 1_700_000_000, "attributes": {"name": "Acme", "plan": "pro"}, "memberships": []})).unwrap();
        assert_eq!(
            Value::Object(record),
            json!({"id": "g1", "name": "Acme", "created_at": "2023-11-14T22:13:20Z", "attributes": {"plan": "pro"}})
        );
    }
}
