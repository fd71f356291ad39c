//! Reading SCIM resources leniently and turning them into records.
//!
//! SCIM attribute names are case-insensitive (RFC 7643 §2.1), so every lookup here ignores case.
//! Values are read as servers really send them: `"True"`/`"False"` booleans (Entra, Guru's
//! mappings), numbers as strings, ids as numbers, `members` left out.
//!
//! A User becomes a `users` record: `id` → `id`; the primary (else the first) `emails` value,
//! or a `userName` that looks like an email, → `email`; `displayName` (else `name.formatted`)
//! → `name`; `name.givenName`/`name.familyName` → `first_name`/`last_name`; `externalId` →
//! `external_id`; `active` → `active`; `meta.created` → `created_at`; `meta.lastModified` →
//! `updated_at`. Everything else the server sent goes into `attributes`, flattened (`userName`,
//! `emails` as JSON text, `meta.version`,
//! `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.department`, …).
//!
//! A Group becomes a `groups` record (`displayName` → `name`) and each of its `members` a
//! `memberships` record: `group_id` is the group's id, `user_id` the member's `value`, and the
//! member's `display`, `type` and `$ref` its attributes. `members` is the only attribute not
//! copied into the group's `attributes`, because the memberships carry it.

use serde_json::Value;

use crate::model::{
    GROUPS, GROUPS_DEF, MEMBERSHIPS, MEMBERSHIPS_DEF, Object, RecordBuilder, USERS_DEF,
    flatten_into, key_text, lenient_bool,
};

/// The key of `name` in `object`, ignoring ASCII case.
fn key_of(object: &Object, name: &str) -> Option<String> {
    if object.contains_key(name) {
        return Some(name.to_string());
    }
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
}

/// An attribute, looked up ignoring case.
pub fn get<'a>(object: &'a Object, name: &str) -> Option<&'a Value> {
    object.get(&key_of(object, name)?)
}

/// Takes an attribute out, looked up ignoring case.
pub fn take(object: &mut Object, name: &str) -> Option<Value> {
    let key = key_of(object, name)?;
    object.shift_remove(&key)
}

/// A resource's `id` (a string, or a number read as one).
pub fn id_of(object: &Object) -> Option<String> {
    key_text(get(object, "id")?)
}

/// The email of a User: the primary `emails` value, else the first, else a `userName` with `@`.
fn email_of(object: &Object) -> Option<Value> {
    if let Some(Value::Array(emails)) = get(object, "emails") {
        let value_of = |e: &Value| {
            e.as_object()
                .and_then(|e| get(e, "value"))
                .and_then(key_text)
                .map(Value::String)
        };
        let primary = emails.iter().find(|e| {
            e.as_object()
                .and_then(|e| get(e, "primary"))
                .and_then(lenient_bool)
                == Some(true)
        });
        if let Some(email) = primary.and_then(value_of) {
            return Some(email);
        }
        if let Some(email) = emails.iter().find_map(value_of) {
            return Some(email);
        }
    }
    match get(object, "userName") {
        Some(Value::String(name)) if name.contains('@') => Some(Value::String(name.clone())),
        _ => None,
    }
}

/// Turns a SCIM User into a `users` record.
pub fn user_record(resource: Value) -> Result<Object, String> {
    let Value::Object(mut object) = resource else {
        return Err(format!("user that is not a JSON object: {resource}"));
    };
    let Some(id) = id_of(&object) else {
        return Err(format!("user without an id: {}", Value::Object(object)));
    };
    take(&mut object, "id");
    let mut record = RecordBuilder::new(&USERS_DEF);
    record.key("id", id);
    record.field_opt("email", "emails", email_of(&object));
    let display = take(&mut object, "displayName");
    let has_display = display.is_some();
    record.field_opt("name", "displayName", display);
    if let Some(name) = take(&mut object, "name") {
        match name {
            Value::Object(mut name) => {
                record.field_opt("first_name", "name.givenName", take(&mut name, "givenName"));
                record.field_opt(
                    "last_name",
                    "name.familyName",
                    take(&mut name, "familyName"),
                );
                if !has_display {
                    record.field_opt("name", "name.formatted", take(&mut name, "formatted"));
                }
                if !name.is_empty() {
                    record.attribute("name", Value::Object(name));
                }
            }
            other => {
                record.attribute("name", other);
            }
        }
    }
    record.field_opt("external_id", "externalId", take(&mut object, "externalId"));
    record.field_opt("active", "active", take(&mut object, "active"));
    take_meta(&mut object, &mut record);
    record.attributes(object);
    Ok(record.build())
}

/// `meta.created` → `created_at`, `meta.lastModified` → `updated_at`; the rest of `meta` into
/// the attributes.
fn take_meta(object: &mut Object, record: &mut RecordBuilder) {
    match take(object, "meta") {
        Some(Value::Object(mut meta)) => {
            record.field_opt("created_at", "meta.created", take(&mut meta, "created"));
            record.field_opt(
                "updated_at",
                "meta.lastModified",
                take(&mut meta, "lastModified"),
            );
            if !meta.is_empty() {
                record.attribute("meta", Value::Object(meta));
            }
        }
        Some(other) => {
            record.attribute("meta", other);
        }
        None => {}
    }
}

/// What one SCIM Group holds.
#[derive(Debug, Default)]
pub struct GroupParts {
    /// Its id, when it has one.
    pub id: Option<String>,
    /// The `groups` record.
    pub group: Option<Object>,
    /// A `memberships` record per member (when asked for).
    pub memberships: Vec<Object>,
    /// What could not be read: the stream it was meant for, and why.
    pub problems: Vec<(&'static str, String)>,
}

/// Turns a SCIM Group into a `groups` record and, with `memberships`, one record per member.
pub fn group_records(resource: Value, memberships: bool) -> GroupParts {
    let mut parts = GroupParts::default();
    let Value::Object(mut object) = resource else {
        parts.problems.push((
            GROUPS,
            format!("group that is not a JSON object: {resource}"),
        ));
        return parts;
    };
    let Some(id) = id_of(&object) else {
        parts.problems.push((
            GROUPS,
            format!("group without an id: {}", Value::Object(object)),
        ));
        return parts;
    };
    take(&mut object, "id");
    let members = take(&mut object, "members");
    let mut record = RecordBuilder::new(&GROUPS_DEF);
    record.key("id", id.clone());
    record.field_opt("name", "displayName", take(&mut object, "displayName"));
    record.field_opt("external_id", "externalId", take(&mut object, "externalId"));
    take_meta(&mut object, &mut record);
    record.attributes(object);
    parts.group = Some(record.build());
    if memberships {
        match members {
            Some(Value::Array(members)) => {
                for member in members {
                    match member_record(&id, member) {
                        Ok(record) => parts.memberships.push(record),
                        Err(problem) => parts.problems.push((MEMBERSHIPS, problem)),
                    }
                }
            }
            None | Some(Value::Null) => {}
            Some(other) => parts.problems.push((
                MEMBERSHIPS,
                format!("group {id}: members that are not a list: {other}"),
            )),
        }
    }
    parts.id = Some(id);
    parts
}

fn member_record(group_id: &str, member: Value) -> Result<Object, String> {
    let Value::Object(mut member) = member else {
        return Err(format!(
            "group {group_id}: member that is not a JSON object: {member}"
        ));
    };
    let Some(user_id) = take(&mut member, "value").as_ref().and_then(key_text) else {
        return Err(format!(
            "group {group_id}: member without a value: {}",
            Value::Object(member)
        ));
    };
    let mut record = RecordBuilder::new(&MEMBERSHIPS_DEF);
    record.key("group_id", group_id).key("user_id", user_id);
    let mut attributes = Object::new();
    for (key, value) in member {
        flatten_into(&mut attributes, &key, value);
    }
    record.attributes(attributes);
    Ok(record.build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_user_with_every_standard_attribute() {
        let record = user_record(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "2819c223", "externalId": "hr-001", "userName": "bjensen",
            "name": {"formatted": "Ms. Barbara J Jensen III", "familyName": "Jensen", "givenName": "Barbara", "middleName": "Jane"},
            "displayName": "Babs Jensen",
            "emails": [{"value": "bjensen@home.example", "type": "home"}, {"value": "bjensen@example.com", "type": "work", "primary": "True"}],
            "active": "False",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Tour Operations", "manager": {"value": "26118915"}},
            "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z", "lastModified": "2011-05-13T04:42:34Z", "version": "W/\"3694e05e9dff591\""}
        }))
        .unwrap();
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        assert_eq!(
            Value::Object(record),
            json!({
                "id": "2819c223", "email": "bjensen@example.com", "name": "Babs Jensen",
                "first_name": "Barbara", "last_name": "Jensen", "external_id": "hr-001",
                "active": false, "created_at": "2010-01-23T04:56:22Z",
                "updated_at": "2011-05-13T04:42:34Z",
                "attributes": {
                    "name.formatted": "Ms. Barbara J Jensen III", "name.middleName": "Jane",
                    "meta.resourceType": "User", "meta.version": "W/\"3694e05e9dff591\"",
                    "schemas": "[\"urn:ietf:params:scim:schemas:core:2.0:User\",\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\"]",
                    "userName": "bjensen",
                    "emails": "[{\"value\":\"bjensen@home.example\",\"type\":\"home\"},{\"value\":\"bjensen@example.com\",\"type\":\"work\",\"primary\":\"True\"}]",
                    format!("{ext}.department"): "Tour Operations",
                    format!("{ext}.manager.value"): "26118915",
                }
            })
        );
    }

    #[test]
    fn lenient_users() {
        let record = user_record(
            json!({"ID": 42, "USERNAME": "a@x.io", "Active": 1, "name": {"formatted": "Ann"}}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(record),
            json!({"id": "42", "email": "a@x.io", "name": "Ann", "active": true, "attributes": {"USERNAME": "a@x.io"}})
        );
        assert!(
            user_record(json!({"userName": "x"}))
                .unwrap_err()
                .starts_with("user without an id")
        );
    }

    #[test]
    fn a_group_and_its_members() {
        let parts = group_records(
            json!({"id": "g1", "displayName": "Eng", "externalId": "eng", "meta": {"created": "2024-01-01T00:00:00Z"},
                   "members": [{"value": "u1", "display": "Ann", "$ref": "https://x/Users/u1"}, {"display": "no value"}, {"value": 7, "type": "User"}]}),
            true,
        );
        assert_eq!(parts.id.as_deref(), Some("g1"));
        assert_eq!(
            Value::Object(parts.group.unwrap()),
            json!({"id": "g1", "name": "Eng", "external_id": "eng", "created_at": "2024-01-01T00:00:00Z", "attributes": {}})
        );
        let memberships: Vec<Value> = parts.memberships.into_iter().map(Value::Object).collect();
        assert_eq!(
            memberships,
            [
                json!({"group_id": "g1", "user_id": "u1", "attributes": {"display": "Ann", "$ref": "https://x/Users/u1"}}),
                json!({"group_id": "g1", "user_id": "7", "attributes": {"type": "User"}}),
            ]
        );
        assert_eq!(parts.problems.len(), 1);
        assert_eq!(parts.problems[0].0, MEMBERSHIPS);
    }

    #[test]
    fn missing_members_are_no_memberships_and_unwanted_ones_are_left_out() {
        let parts = group_records(json!({"id": "g1", "displayName": "Eng"}), true);
        assert!(parts.memberships.is_empty() && parts.problems.is_empty());
        let parts = group_records(json!({"id": "g1", "members": [{"value": "u1"}]}), false);
        assert!(parts.memberships.is_empty());
        assert_eq!(parts.group.unwrap()["attributes"], json!({}));
    }
}
