//! Userflow's wire objects in both directions: as the tap reads them and how they become
//! records (first), and the bodies the writer sends and what it reads back (last).
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

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{
    GROUPS_DEF, MEMBERSHIPS, MEMBERSHIPS_DEF, Object, Props, RecordBuilder, USERS, USERS_DEF,
    key_text,
};
use crate::vendors::source::Skipped;

/// Attributes that are standard user fields.
const USER_FIELDS: [&str; 4] = ["email", "name", "first_name", "last_name"];

/// A user object's id, as a string.
pub fn id_of(object: &Object) -> Option<String> {
    key_text(object.get("id")?)
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

/// Turns one user into a `users` record and, with `memberships`, its membership records.
pub fn user(wire: WireUser, memberships: bool) -> UserParts {
    let mut parts = UserParts::default();
    let (mut object, expanded) = match wire {
        WireUser::User {
            fields,
            memberships,
        } => (fields, memberships),
        WireUser::Invalid(value) => {
            parts.problems.push(Skipped::new(
                USERS,
                format!("user that is not a JSON object: {value}"),
            ));
            return parts;
        }
    };
    let Some(id) = id_of(&object) else {
        parts.problems.push(Skipped::new(
            USERS,
            format!("user without an id: {}", Value::Object(object)),
        ));
        return parts;
    };
    object.shift_remove("id");
    let mut record = RecordBuilder::new(&USERS_DEF);
    record.key("id", id.clone());
    let mut problems = Vec::new();
    let attributes = take_attributes(&mut object, "user", id.as_str(), &mut problems);
    if let Some(problem) = problems.pop() {
        parts.problems.push(Skipped::new(USERS, problem));
        return parts;
    }
    let mut rest = Object::with_capacity(attributes.len() + object.len());
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
    if let Some(updated) = object.shift_remove("updated_at") {
        record.field("updated_at", "updated_at", updated);
    }
    merge_top_level(&mut rest, object, "user");
    record.attributes(rest);
    parts.user = Some(record.build());
    if memberships {
        match expanded {
            Some(WireMemberships::List { items, truncated }) => {
                if truncated {
                    parts.problems.push(Skipped::new(
                        MEMBERSHIPS,
                        format!("user {id}: the expanded memberships list says has_more; only the memberships it holds were read"),
                    ));
                }
                for item in items {
                    match membership(item, &id) {
                        Ok(record) => parts.memberships.push(record),
                        Err(problem) => parts.problems.push(Skipped::new(MEMBERSHIPS, problem)),
                    }
                }
            }
            Some(WireMemberships::Invalid(other)) => parts.problems.push(Skipped::new(
                MEMBERSHIPS,
                format!("user {id}: memberships that are not a list: {other}"),
            )),
            None => {}
        }
    }
    parts
}

/// One expanded membership of user `user_id`.
fn membership(wire: WireMembership, user_id: &str) -> Result<Object, String> {
    let (mut object, expanded_group) = match wire {
        WireMembership::Membership { fields, group_id } => (fields, group_id),
        WireMembership::Invalid(value) => {
            return Err(format!(
                "user {user_id}: membership that is not a JSON object: {value}"
            ));
        }
    };
    let group_id = object
        .shift_remove("group_id")
        .and_then(|v| key_text(&v))
        .or_else(|| expanded_group.as_ref().and_then(key_text));
    let Some(group_id) = group_id else {
        return Err(format!(
            "user {user_id}: membership without a group id: {}",
            Value::Object(object)
        ));
    };
    let user_id = object
        .shift_remove("user_id")
        .and_then(|v| key_text(&v))
        .unwrap_or_else(|| user_id.to_string());
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
    if let Some(updated) = object.shift_remove("updated_at") {
        record.field("updated_at", "updated_at", updated);
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

/// A `GET /users` page, decoded straight into what the tap uses: a membership's expanded
/// `group` object is skipped but for its id, and a user's `groups` and every `object` tag are
/// skipped, without building them.
#[derive(Debug, Default, Deserialize)]
pub struct UsersPage {
    /// The users.
    #[serde(default)]
    pub data: Option<Vec<WireUser>>,
    /// `has_more` (a boolean, or a string some proxies make of it).
    #[serde(default)]
    pub has_more: Option<Value>,
    /// `next_page_url`.
    #[serde(default)]
    pub next_page_url: Option<Value>,
}

impl UsersPage {
    /// True when another page follows.
    pub fn has_more(&self) -> bool {
        match &self.has_more {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
            _ => self.next_page_url.as_ref().is_some_and(|u| u.is_string()),
        }
    }
}

/// One user of a page.
#[derive(Debug)]
pub enum WireUser {
    /// A user object: its fields but `memberships`, `groups` and `object`.
    User {
        /// The other fields.
        fields: Object,
        /// Its expanded memberships.
        memberships: Option<WireMemberships>,
    },
    /// Something that is not a JSON object.
    Invalid(Value),
}

/// A user's expanded memberships: a list, or a list envelope.
#[derive(Debug)]
pub enum WireMemberships {
    /// `[…]`, or `{"data": […], "has_more": …}`.
    List {
        /// The memberships.
        items: Vec<WireMembership>,
        /// True when the envelope said more exist.
        truncated: bool,
    },
    /// Anything else.
    Invalid(Value),
}

/// One expanded membership.
#[derive(Debug)]
pub enum WireMembership {
    /// Its fields but `group`, `user` and `object`, and the expanded group's id.
    Membership {
        /// The other fields.
        fields: Object,
        /// `group.id`.
        group_id: Option<Value>,
    },
    /// Something that is not a JSON object.
    Invalid(Value),
}

/// Deserialises any JSON value the tap does not expect into [`Value`], for error reports.
macro_rules! scalar_visits {
    ($wrap:expr) => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok($wrap(Value::Bool(v)))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($wrap(Value::from(v)))
        }
    };
}

fn seq_value<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Value, A::Error> {
    let mut items = Vec::new();
    while let Some(item) = seq.next_element::<Value>()? {
        items.push(item);
    }
    Ok(Value::Array(items))
}

impl<'de> Deserialize<'de> for WireUser {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireUser;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Userflow user")
            }
            scalar_visits!(WireUser::Invalid);
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(WireUser::Invalid(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<WireUser, A::Error> {
                seq_value(seq).map(WireUser::Invalid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireUser, A::Error> {
                let mut fields = Object::new();
                let mut memberships = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "memberships" => memberships = Some(map.next_value()?),
                        // Type tag; and groups, which memberships carry.
                        "object" | "groups" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            let value = map.next_value()?;
                            fields.insert(key, value);
                        }
                    }
                }
                Ok(WireUser::User {
                    fields,
                    memberships,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WireMemberships {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireMemberships;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of memberships")
            }
            scalar_visits!(WireMemberships::Invalid);
            fn visit_unit<E: de::Error>(self) -> Result<WireMemberships, E> {
                Ok(WireMemberships::List {
                    items: Vec::new(),
                    truncated: false,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireMemberships, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(WireMemberships::List {
                    items,
                    truncated: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireMemberships, A::Error> {
                let mut items = Vec::new();
                let mut truncated = false;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "data" => {
                            items = map
                                .next_value::<Option<Vec<WireMembership>>>()?
                                .unwrap_or_default()
                        }
                        "has_more" => truncated = map.next_value::<Value>()? == Value::Bool(true),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(WireMemberships::List { items, truncated })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The `id` of an expanded group; the rest of it is skipped.
struct GroupId(Option<Value>);

impl<'de> Deserialize<'de> for GroupId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GroupId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Userflow group")
            }
            scalar_visits!(|_| GroupId(None));
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(GroupId(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<GroupId, A::Error> {
                seq_value(seq).map(|_| GroupId(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<GroupId, A::Error> {
                let mut id = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "id" {
                        id = Some(map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(GroupId(id))
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for WireMembership {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WireMembership;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Userflow membership")
            }
            scalar_visits!(WireMembership::Invalid);
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(WireMembership::Invalid(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<WireMembership, A::Error> {
                seq_value(seq).map(WireMembership::Invalid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireMembership, A::Error> {
                let mut fields = Object::new();
                let mut group_id = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        // The group itself is the groups stream's; only its id is needed.
                        "group" => group_id = map.next_value::<GroupId>()?.0,
                        "object" | "user" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            let value = map.next_value()?;
                            fields.insert(key, value);
                        }
                    }
                }
                Ok(WireMembership::Membership { fields, group_id })
            }
        }
        deserializer.deserialize_any(V)
    }
}

// ---- What the writer sends and reads ----

/// `{"id": …}`: a group named in a user upsert's `groups`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GroupRef<'a> {
    /// The group's id.
    pub id: &'a str,
}

/// One entry of a user upsert's `memberships`: the group and the membership's own attributes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MembershipRef<'a> {
    /// The group.
    pub group: GroupRef<'a>,
    /// The membership's attributes.
    pub attributes: &'a Props,
}

/// The body of `POST /users` and `POST /groups`: `{"id", "attributes"}`, the attributes left
/// out when there are none. Serialised straight from the item (no property map is built).
#[derive(Debug, Serialize)]
pub struct AttributesBody<'a> {
    /// The user's or group's id.
    pub id: &'a str,
    /// Its properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<crate::sink::body::Properties<'a>>,
}

/// A membership upsert through `POST /users`: `{"id": user, "groups": [{"id"}]}`, or
/// `memberships` when the membership has attributes of its own.
#[derive(Debug, Serialize)]
pub struct MembershipBody<'a> {
    /// The user's id.
    pub id: &'a str,
    /// The group, when the membership has no attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<[GroupRef<'a>; 1]>,
    /// The group with the membership's attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memberships: Option<[MembershipRef<'a>; 1]>,
}

/// The body of `POST /events`: `{"user_id", "name", "group_id", "attributes"}`, the last two
/// only when given.
#[derive(Debug, Serialize)]
pub struct EventBody<'a> {
    /// The user's id.
    pub user_id: &'a str,
    /// The event's name.
    pub name: &'a Value,
    /// The group it happened in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<&'a str>,
    /// Its attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<&'a Props>,
}

/// The change operations of userflow.js (`index.d.ts`).
const CHANGE_OPERATIONS: &[&str] = &["set", "set_once", "add", "subtract"];

/// True for a change object: exactly one of `set`, `set_once`, `add`, `subtract`, and
/// optionally `data_type`.
pub fn is_change_object(o: &Map<String, Value>) -> bool {
    let ops = o.keys().filter(|k| k.as_str() != "data_type").count();
    ops == 1 && o.keys().any(|k| CHANGE_OPERATIONS.contains(&k.as_str()))
}

/// The group ids of a user object read with `expand=memberships` (`memberships[].group.id`, or
/// `memberships[].group_id` as some API versions write it).
pub fn membership_group_ids(user: &Value) -> Vec<String> {
    user.get("memberships")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| {
                    m.get("group")
                        .and_then(|g| g.get("id"))
                        .or_else(|| m.get("group_id"))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod write_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn change_objects_and_membership_ids() {
        let o = |v: Value| v.as_object().cloned().unwrap();
        assert!(is_change_object(&o(json!({"add": 1}))));
        assert!(is_change_object(&o(
            json!({"set": "x", "data_type": "string"})
        )));
        assert!(!is_change_object(&o(json!({"set": 1, "add": 2}))));
        assert!(!is_change_object(&o(json!({"city": "Oslo"}))));
        let user = json!({"memberships": [{"group": {"id": "g1"}}, {"group_id": "g2"}, {}]});
        assert_eq!(membership_group_ids(&user), vec!["g1", "g2"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(value: Value) -> WireUser {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_page_is_decoded_without_the_parts_the_tap_drops() {
        let page: UsersPage = serde_json::from_str(
            r#"{"object":"list","data":[{"object":"user","id":"u1","groups":[{"id":"g1"}],"memberships":[{"object":"group_membership","group":{"id":"g1","attributes":{"name":"Acme"}},"user":{"id":"u1"},"attributes":{}}]}, 7],"has_more":true,"next_page_url":"/users?limit=1&starting_after=u1"}"#,
        )
        .unwrap();
        assert!(page.has_more());
        let data = page.data.unwrap();
        let WireUser::User {
            fields,
            memberships,
        } = &data[0]
        else {
            panic!()
        };
        assert_eq!(Value::Object(fields.clone()), json!({"id": "u1"}));
        let Some(WireMemberships::List { items, .. }) = memberships else {
            panic!()
        };
        let WireMembership::Membership { fields, group_id } = &items[0] else {
            panic!()
        };
        assert!(fields.contains_key("attributes") && !fields.contains_key("group"));
        assert_eq!(group_id, &Some(json!("g1")));
        assert!(matches!(data[1], WireUser::Invalid(_)));
        let last: UsersPage = serde_json::from_str(r#"{"data":null,"has_more":"false"}"#).unwrap();
        assert!(!last.has_more() && last.data.is_none());
    }

    #[test]
    fn a_user_with_expanded_memberships() {
        let parts = user(
            wire(json!({
                "object": "user", "id": "u1", "created_at": "2024-01-02T03:04:05.000Z",
                "attributes": {"email": "a@x.io", "name": "Ann", "plan": "pro", "signed_up_at": "2024-01-01T00:00:00Z", "seats": 3},
                "memberships": [
                    {"object": "group_membership", "group_id": "g1", "user_id": "u1", "attributes": {"role": "admin"}, "created_at": "2024-02-01T00:00:00Z", "group": {"object": "group", "id": "g1"}},
                    {"object": "group_membership", "group": {"id": "g2"}}
                ],
                "updated_at": "2024-03-01T00:00:00Z"
            })),
            true,
        );
        assert!(parts.problems.is_empty(), "{:?}", parts.problems);
        assert_eq!(
            Value::Object(parts.user.unwrap()),
            json!({"id": "u1", "email": "a@x.io", "name": "Ann", "created_at": "2024-01-02T03:04:05.000Z",
                   "updated_at": "2024-03-01T00:00:00Z",
                   "attributes": {"plan": "pro", "signed_up_at": "2024-01-01T00:00:00Z", "seats": 3}})
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
        assert!(user(wire(value.clone()), false).memberships.is_empty());
        let parts = user(wire(value), true);
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
        let parts = user(wire(json!({"attributes": {"email": "x"}})), true);
        assert!(parts.user.is_none());
        assert!(parts.problems[0].reason.starts_with("user without an id"));
        let parts = user(
            wire(json!({"id": "u", "memberships": [{"attributes": {}}]})),
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
