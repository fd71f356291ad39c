//! Guru REST wire objects in both directions: as the tap reads them and how they become
//! records (first), and what the writer reads from Guru's answers (last).
//!
//! ```json
//! // GET /members
//! {"id": "ann@x.io", "dateCreated": "2024-01-02T03:04:05.000+0000",
//!  "user": {"email": "ann@x.io", "firstName": "Ann", "lastName": "Lee", "profilePicUrl": null, "status": "ACTIVE"},
//!  "groups": [{"id": "g1", "name": "Eng", …}],
//!  "userAttributes": {"ACCESS_TYPE": "CORE", "BILLING_TYPE": "CORE"}}
//! // GET /groups
//! {"id": "g1", "name": "Eng", "groupIdentifier": "eng", "dateCreated": "…", "modifiable": true,
//!  "userModifiable": true, "team": {"id": "t1", "name": "Acme"}}
//! // GET /groups/{id}/members
//! {"id": "ann@x.io", "dateCreated": "…", "user": {"email": "ann@x.io", …}}
//! ```
//! Guru keys members by email, so a user's `id` is `user.email`. `user.firstName`/`lastName`
//! become `first_name`/`last_name`, and `name` is the two joined (Guru has no display name);
//! `user.status` is `status` (ACTIVE, PENDING, INACTIVE), and `active` is false only for
//! INACTIVE (a pending invitee is a member who has not signed in yet). `dateCreated` is
//! `created_at`. `userAttributes` go into `attributes` with lower-case keys (`access_type`:
//! CORE or READ_ONLY, `billing_type`: CORE or FREE). The member's own `id` is kept as
//! `attributes.member_id`. A member's `groups` are not copied: the `memberships` stream, read per
//! group, carries them. Everything else goes into `attributes`.

use serde_json::Value;

use crate::model::{GROUPS_DEF, MEMBERSHIPS_DEF, Object, RecordBuilder, USERS_DEF, key_text};

/// The `user` object of a member, and the member's email.
fn user_of(object: &mut Object) -> (Object, Option<String>) {
    let user = match object.shift_remove("user") {
        Some(Value::Object(user)) => user,
        _ => Object::new(),
    };
    let email = user.get("email").and_then(key_text).or_else(|| {
        object
            .get("id")
            .and_then(key_text)
            .filter(|id| id.contains('@'))
    });
    (user, email)
}

/// Turns a `GET /members` entry into a `users` record.
pub fn member(value: Value) -> Result<Object, String> {
    let Value::Object(mut object) = value else {
        return Err(format!("member that is not a JSON object: {value}"));
    };
    let (mut user, email) = user_of(&mut object);
    let Some(email) = email else {
        object.insert("user".into(), Value::Object(user));
        return Err(format!(
            "member without an email: {}",
            Value::Object(object)
        ));
    };
    let mut record = RecordBuilder::new(&USERS_DEF);
    record.key("id", email.clone());
    user.shift_remove("email");
    record.field("email", "user.email", Value::String(email));
    let first = user.shift_remove("firstName");
    let last = user.shift_remove("lastName");
    let joined: Vec<&str> = [&first, &last]
        .into_iter()
        .filter_map(|v| v.as_ref().and_then(Value::as_str))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if !joined.is_empty() {
        record.field("name", "name", Value::String(joined.join(" ")));
    }
    record.field_opt("first_name", "user.firstName", first);
    record.field_opt("last_name", "user.lastName", last);
    if let Some(status) = user.shift_remove("status") {
        match status.as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("INACTIVE" | "DEACTIVATED" | "DISABLED") => {
                record.field("active", "status", Value::Bool(false));
            }
            Some("ACTIVE" | "PENDING") => {
                record.field("active", "status", Value::Bool(true));
            }
            _ => {}
        }
        record.field("status", "user.status", status);
    }
    record.field_opt(
        "created_at",
        "dateCreated",
        object.shift_remove("dateCreated"),
    );
    if let Some(id) = object.shift_remove("id") {
        record.attribute("member_id", id);
    }
    // Read per group by the memberships stream.
    object.shift_remove("groups");
    match object.shift_remove("userAttributes") {
        Some(Value::Object(attributes)) => {
            for (key, value) in attributes {
                record.attribute(&key.to_ascii_lowercase(), value);
            }
        }
        Some(other) => {
            record.attribute("userAttributes", other);
        }
        None => {}
    }
    record.attributes(user);
    record.attributes(object);
    Ok(record.build())
}

/// A group's id, as a string.
pub fn group_id(value: &Value) -> Option<String> {
    value.get("id").and_then(key_text)
}

/// Turns a `GET /groups` entry into a `groups` record.
pub fn group(value: Value) -> Result<Object, String> {
    let Value::Object(mut object) = value else {
        return Err(format!("group that is not a JSON object: {value}"));
    };
    let Some(id) = object.get("id").and_then(key_text) else {
        return Err(format!("group without an id: {}", Value::Object(object)));
    };
    object.shift_remove("id");
    let mut record = RecordBuilder::new(&GROUPS_DEF);
    record.key("id", id);
    record.field_opt("name", "name", object.shift_remove("name"));
    record.field_opt(
        "created_at",
        "dateCreated",
        object.shift_remove("dateCreated"),
    );
    record.attributes(object);
    Ok(record.build())
}

/// Turns a `GET /groups/{id}/members` entry into a `memberships` record. The member's `user`
/// object describes the user, which the `users` stream carries; only its email is used here.
pub fn group_member(group_id: &str, value: Value) -> Result<Object, String> {
    let Value::Object(mut object) = value else {
        return Err(format!(
            "group {group_id}: member that is not a JSON object: {value}"
        ));
    };
    let (user, email) = user_of(&mut object);
    let Some(email) = email else {
        object.insert("user".into(), Value::Object(user));
        return Err(format!(
            "group {group_id}: member without an email: {}",
            Value::Object(object)
        ));
    };
    let mut record = RecordBuilder::new(&MEMBERSHIPS_DEF);
    record.key("group_id", group_id).key("user_id", email);
    if let Some(id) = object.shift_remove("id") {
        record.attribute("member_id", id);
    }
    record.attributes(object);
    Ok(record.build())
}

// What the writer reads from Guru's answers (leniently: a field that is missing or of another
// type is treated as absent).

/// One entry of an invite's `statuses`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteStatus {
    /// The email it is about.
    pub email: String,
    /// Guru's error, when `errored` is set.
    pub error: Option<String>,
}

/// The `statuses` of an invite answer.
pub fn invite_statuses(body: &Value) -> Vec<InviteStatus> {
    body.get("statuses")
        .and_then(Value::as_array)
        .map(|statuses| {
            statuses
                .iter()
                .filter_map(|s| {
                    let email = s.get("email")?.as_str()?.trim().to_string();
                    let errored = match s.get("errored") {
                        Some(Value::Bool(b)) => *b,
                        Some(Value::String(t)) => t.eq_ignore_ascii_case("true"),
                        _ => false,
                    };
                    let error = errored.then(|| {
                        s.get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("errored without a reason")
                            .to_string()
                    });
                    Some(InviteStatus { email, error })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A Guru group as the writer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuruGroup {
    /// Guru's id (empty when a dry run read nothing).
    pub id: String,
    /// Its name.
    pub name: String,
    /// False for "All Members", which cannot be changed.
    pub modifiable: bool,
}

/// One group object.
pub fn guru_group(value: &Value) -> Option<GuruGroup> {
    let id = match value.get("id")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(GuruGroup {
        id,
        name: value
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        modifiable: value
            .get("modifiable")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    })
}

/// `GET /groups`: a bare array of groups.
pub fn guru_groups(body: &Value) -> Vec<GuruGroup> {
    body.as_array()
        .map(|a| a.iter().filter_map(guru_group).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_member() {
        let record = member(json!({
            "id": "ann@x.io", "dateCreated": "2024-01-02T03:04:05.000+0000",
            "user": {"email": "ann@x.io", "firstName": "Ann", "lastName": "Lee", "profilePicUrl": null, "status": "PENDING"},
            "groups": [{"id": "g1"}],
            "userAttributes": {"ACCESS_TYPE": "READ_ONLY", "BILLING_TYPE": "FREE"}
        }))
        .unwrap();
        assert_eq!(
            Value::Object(record),
            json!({"id": "ann@x.io", "email": "ann@x.io", "name": "Ann Lee", "first_name": "Ann", "last_name": "Lee",
                   "active": true, "status": "PENDING", "created_at": "2024-01-02T03:04:05Z",
                   "attributes": {"member_id": "ann@x.io", "access_type": "READ_ONLY", "billing_type": "FREE", "profilePicUrl": null}})
        );
        let inactive = member(json!({"user": {"email": "b@x.io", "status": "INACTIVE"}})).unwrap();
        assert_eq!(inactive["active"], false);
        assert!(
            member(json!({"id": "uuid-1", "user": {}}))
                .unwrap_err()
                .starts_with("member without an email")
        );
    }

    #[test]
    fn a_group_and_a_group_member() {
        let record = group(json!({"id": "g1", "name": "Eng", "groupIdentifier": "eng", "dateCreated": "2024-01-02T03:04:05Z", "modifiable": true, "team": {"id": "t1"}})).unwrap();
        assert_eq!(
            Value::Object(record),
            json!({"id": "g1", "name": "Eng", "created_at": "2024-01-02T03:04:05Z", "attributes": {"groupIdentifier": "eng", "modifiable": true, "team.id": "t1"}})
        );
        let record = group_member("g1", json!({"id": "ann@x.io", "dateCreated": "2024-01-02T03:04:05Z", "user": {"email": "ann@x.io", "firstName": "Ann"}})).unwrap();
        assert_eq!(
            Value::Object(record),
            json!({"group_id": "g1", "user_id": "ann@x.io", "attributes": {"member_id": "ann@x.io", "dateCreated": "2024-01-02T03:04:05Z"}})
        );
        assert!(group_member("g1", json!({"id": "x"})).is_err());
    }
}
