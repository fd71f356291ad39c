//! How roster's record model becomes SCIM Users and Groups (CONTRACT.md), and the attribute
//! paths the writer sets, compares and removes.
//!
//! Users: `id` → `externalId`; `email` → `userName` (a new user without an email gets its `id`
//! as `userName`) and the primary work entry of `emails`; `first_name`/`last_name` →
//! `name.givenName`/`name.familyName`; `name` → `displayName`; `active` → `active`. Custom
//! attributes go on when SCIM has a place for them: RFC 7643's other User attributes
//! (`title`, `locale`, `phoneNumbers`, …), `name.<sub>` (`name.middleName`, …), and extension
//! attributes written `urn:…:User:department` (SCIM's path syntax) or `urn:…:User.department`
//! (as tap-roster flattens them). Anything else has no place at a SCIM server: it is named in a
//! warning, once, and not sent.
//!
//! Groups: `id` → `externalId`, `name` → `displayName`.
//!
//! A standard field sent as `null` removes the attribute; one that is absent is left alone.

use serde_json::{Map, Value, json};

use crate::model::lenient_bool;
use crate::scim::types::get;
use crate::sink::Item;

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The core Group schema.
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// RFC 7643 §4.1 User attributes with one simple value that records may set as attributes.
const SIMPLE_USER_ATTRIBUTES: &[&str] = &[
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
];

/// RFC 7643 §4.1 multi-valued User attributes records may set (a list, or its JSON text).
const MULTI_USER_ATTRIBUTES: &[&str] = &[
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "entitlements",
    "roles",
    "x509Certificates",
];

/// Sub-attributes of `name` besides the two the standard fields set.
const NAME_SUB_ATTRIBUTES: &[&str] = &[
    "formatted",
    "middleName",
    "honorificPrefix",
    "honorificSuffix",
];

/// Where an attribute lives in a SCIM resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrPath {
    /// A top-level attribute (`displayName`, `emails`).
    Top(String),
    /// A sub-attribute (`name.givenName`).
    Sub(String, String),
    /// An extension attribute (`urn:…:User` and `department`, or `manager.value`).
    Ext(String, String),
}

impl AttrPath {
    fn top(name: &str) -> Self {
        AttrPath::Top(name.to_string())
    }

    /// The PATCH `path`.
    pub fn patch_path(&self) -> String {
        match self {
            AttrPath::Top(a) => a.clone(),
            AttrPath::Sub(a, s) => format!("{a}.{s}"),
            AttrPath::Ext(urn, a) => format!("{urn}:{a}"),
        }
    }

    /// The current value in `resource` (names compared ignoring case).
    pub fn get<'a>(&self, resource: &'a Map<String, Value>) -> Option<&'a Value> {
        match self {
            AttrPath::Top(a) => get(resource, a),
            AttrPath::Sub(a, s) => get(get(resource, a)?.as_object()?, s),
            AttrPath::Ext(urn, a) => {
                let mut at = get(resource, urn)?;
                for part in a.split('.') {
                    at = get(at.as_object()?, part)?;
                }
                Some(at)
            }
        }
    }

    /// Sets `value` in `resource` (replacing what the path held), creating parents.
    pub fn set(&self, resource: &mut Map<String, Value>, value: Value) {
        match self {
            AttrPath::Top(a) => {
                let key = existing_key(resource, a);
                resource.insert(key, value);
            }
            AttrPath::Sub(a, s) => {
                let Some(parent) = child_object(resource, a) else {
                    return;
                };
                let key = existing_key(parent, s);
                parent.insert(key, value);
            }
            AttrPath::Ext(urn, a) => {
                let Some(mut at) = child_object(resource, urn) else {
                    return;
                };
                let parts: Vec<&str> = a.split('.').collect();
                let Some((last, parents)) = parts.split_last() else {
                    return;
                };
                for part in parents {
                    let Some(next) = child_object(at, part) else {
                        return;
                    };
                    at = next;
                }
                let key = existing_key(at, last);
                at.insert(key, value);
            }
        }
    }

    /// Removes what the path holds from `resource`.
    pub fn remove(&self, resource: &mut Map<String, Value>) {
        let remove_in = |object: &mut Map<String, Value>, name: &str| {
            let key = existing_key(object, name);
            object.shift_remove(&key);
        };
        match self {
            AttrPath::Top(a) => remove_in(resource, a),
            AttrPath::Sub(a, s) => {
                let key = existing_key(resource, a);
                if let Some(Value::Object(parent)) = resource.get_mut(&key) {
                    remove_in(parent, s);
                }
            }
            AttrPath::Ext(urn, a) => {
                let key = existing_key(resource, urn);
                let mut at = match resource.get_mut(&key) {
                    Some(Value::Object(o)) => o,
                    _ => return,
                };
                let parts: Vec<&str> = a.split('.').collect();
                let Some((last, parents)) = parts.split_last() else {
                    return;
                };
                for part in parents {
                    let key = existing_key(at, part);
                    at = match at.get_mut(&key) {
                        Some(Value::Object(o)) => o,
                        _ => return,
                    };
                }
                remove_in(at, last);
            }
        }
    }

    /// The extension schema this path needs in `schemas`, if any.
    pub fn schema(&self) -> Option<&str> {
        match self {
            AttrPath::Ext(urn, _) => Some(urn),
            _ => None,
        }
    }
}

/// The key `name` already has in `object` (SCIM names are case-insensitive), else `name`.
fn existing_key(object: &Map<String, Value>, name: &str) -> String {
    object
        .keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .unwrap_or_else(|| name.to_string())
}

/// The object at `name` in `object`, created (or replacing a non-object) when needed.
fn child_object<'a>(
    object: &'a mut Map<String, Value>,
    name: &str,
) -> Option<&'a mut Map<String, Value>> {
    let key = existing_key(object, name);
    let slot = object
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// One attribute the writer wants: `Some` sets it, `None` removes it (the field was `null`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where.
    pub path: AttrPath,
    /// What.
    pub value: Option<Value>,
}

impl Change {
    fn set(path: AttrPath, value: Value) -> Self {
        Change {
            path,
            value: Some(value),
        }
    }

    fn of(path: AttrPath, value: &Value) -> Self {
        Change {
            path,
            value: (!value.is_null()).then(|| value.clone()),
        }
    }

    /// True when `resource` already holds what this change wants.
    pub fn holds(&self, resource: &Map<String, Value>) -> bool {
        let current = self.path.get(resource).filter(|v| !v.is_null());
        match (&self.value, current) {
            (None, None) => true,
            (None, Some(_)) | (Some(_), None) => false,
            (Some(want), Some(have)) => same_value(&self.path, want, have),
        }
    }
}

/// Values compared the way the server compares them: `userName` ignoring case, booleans
/// leniently (`"True"`), the rest exactly.
fn same_value(path: &AttrPath, want: &Value, have: &Value) -> bool {
    if want == have {
        return true;
    }
    match (want, have) {
        (Value::String(w), Value::String(h)) if *path == AttrPath::top("userName") => {
            w.eq_ignore_ascii_case(h)
        }
        (Value::Bool(w), have) => lenient_bool(have) == Some(*w),
        _ => false,
    }
}

/// Where a custom attribute goes, if SCIM has a place for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// At this path, with this value.
    Path(AttrPath, Value),
    /// An attribute the standard fields set (or the server owns): not sent.
    Owned,
    /// No place in SCIM: not sent.
    Unknown,
}

/// Splits an extension attribute key: `urn:…:User:department`, `urn:…:User.department` or
/// `urn:…:User.manager.value`.
fn split_extension(key: &str) -> Option<(String, String)> {
    if !key.starts_with("urn:") {
        return None;
    }
    // tap-roster's flattened form: the schema URN, a dot, the attribute.
    if let Some(at) = key.find(":User.") {
        let (urn, attr) = key.split_at(at + ":User".len());
        return Some((urn.to_string(), attr[1..].to_string()));
    }
    let (urn, attr) = key.rsplit_once(':')?;
    (!attr.is_empty() && urn.matches(':').count() >= 2).then(|| (urn.to_string(), attr.to_string()))
}

/// Where a users record's custom attribute `key` goes.
pub fn place_user_attribute(key: &str, value: &Value) -> Placement {
    if let Some(name) = SIMPLE_USER_ATTRIBUTES
        .iter()
        .find(|a| a.eq_ignore_ascii_case(key))
    {
        return Placement::Path(AttrPath::top(name), value.clone());
    }
    if let Some(name) = MULTI_USER_ATTRIBUTES
        .iter()
        .find(|a| a.eq_ignore_ascii_case(key))
    {
        // tap-roster flattens lists to their JSON text.
        let value = match value {
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(list @ Value::Array(_)) => list,
                _ => return Placement::Unknown,
            },
            Value::Array(_) | Value::Null => value.clone(),
            _ => return Placement::Unknown,
        };
        return Placement::Path(AttrPath::top(name), value);
    }
    if let Some(sub) = key.strip_prefix("name.").and_then(|s| {
        NAME_SUB_ATTRIBUTES
            .iter()
            .find(|a| a.eq_ignore_ascii_case(s))
    }) {
        return Placement::Path(AttrPath::Sub("name".into(), (*sub).into()), value.clone());
    }
    if let Some((urn, attr)) = split_extension(key) {
        return Placement::Path(AttrPath::Ext(urn, attr), value.clone());
    }
    let owned = [
        "id",
        "externalId",
        "userName",
        "emails",
        "displayName",
        "active",
        "schemas",
        "groups",
        "password",
        "name",
        "name.givenName",
        "name.familyName",
    ];
    if owned.iter().any(|o| o.eq_ignore_ascii_case(key)) || key.starts_with("meta") {
        Placement::Owned
    } else {
        Placement::Unknown
    }
}

/// The primary work email entry for `email`.
fn email_entry(email: &str) -> Value {
    json!({"value": email, "type": "work", "primary": true})
}

/// `emails` with `email` as its primary entry: the primary (else work, else first) entry of
/// `current` gets the new value; the others are kept.
fn emails_with(current: Option<&Value>, email: &str) -> Value {
    let Some(Value::Array(list)) = current else {
        return Value::Array(vec![email_entry(email)]);
    };
    let mut list = list.clone();
    let field = |e: &Value, name: &str| e.as_object().and_then(|o| get(o, name)).cloned();
    let at = list
        .iter()
        .position(|e| field(e, "primary").as_ref().and_then(lenient_bool) == Some(true))
        .or_else(|| {
            list.iter().position(|e| {
                field(e, "type").and_then(|t| t.as_str().map(str::to_string)) == Some("work".into())
            })
        })
        .or(if list.is_empty() { None } else { Some(0) });
    match at {
        Some(i) => {
            if let Some(entry) = list[i].as_object_mut() {
                let key = existing_key(entry, "value");
                entry.insert(key, Value::String(email.to_string()));
            } else {
                list[i] = email_entry(email);
            }
        }
        None => list.push(email_entry(email)),
    }
    Value::Array(list)
}

/// A users record's SCIM attributes: what to set and remove, against `current` (the server's
/// resource, when known: it decides how `emails` is kept), plus the custom attributes that had
/// no place (for the warning).
pub fn user_changes(
    item: &Item,
    current: Option<&Map<String, Value>>,
) -> (Vec<Change>, Vec<String>) {
    let mut changes = Vec::new();
    if let Some(key) = item.id.as_deref() {
        changes.push(Change::set(AttrPath::top("externalId"), json!(key)));
    }
    match item.fields.get("email") {
        Some(Value::String(email)) if !email.trim().is_empty() => {
            let email = email.trim();
            changes.push(Change::set(AttrPath::top("userName"), json!(email)));
            let now = current.and_then(|c| get(c, "emails"));
            changes.push(Change::set(
                AttrPath::top("emails"),
                emails_with(now, email),
            ));
        }
        Some(Value::Null) => changes.push(Change {
            path: AttrPath::top("emails"),
            value: None,
        }),
        _ => {}
    }
    for (field, path) in [
        (
            "first_name",
            AttrPath::Sub("name".into(), "givenName".into()),
        ),
        (
            "last_name",
            AttrPath::Sub("name".into(), "familyName".into()),
        ),
        ("name", AttrPath::top("displayName")),
    ] {
        if let Some(value) = item.fields.get(field) {
            changes.push(Change::of(path, value));
        }
    }
    if let Some(active) = item.fields.get("active") {
        match lenient_bool(active) {
            Some(b) => changes.push(Change::set(AttrPath::top("active"), json!(b))),
            None if active.is_null() => {}
            None => {}
        }
    }
    let mut unplaced = Vec::new();
    for (key, value) in &item.attributes {
        match place_user_attribute(key, value) {
            Placement::Path(path, value) => changes.push(Change::of(path, &value)),
            Placement::Owned | Placement::Unknown => unplaced.push(key.to_string()),
        }
    }
    (changes, unplaced)
}

/// A groups record's SCIM attributes.
pub fn group_changes(item: &Item) -> Vec<Change> {
    let mut changes = Vec::new();
    if let Some(key) = item.id.as_deref() {
        changes.push(Change::set(AttrPath::top("externalId"), json!(key)));
    }
    if let Some(name) = item.fields.get("name").filter(|n| !n.is_null()) {
        changes.push(Change::set(AttrPath::top("displayName"), name.clone()));
    }
    changes
}

/// The body of a POST: every change that sets something, the core schema and any extension
/// schema used.
pub fn create_body(core: &str, changes: &[Change]) -> Value {
    let mut body = Map::new();
    let mut schemas = vec![Value::String(core.to_string())];
    for change in changes {
        let Some(value) = &change.value else { continue };
        change.path.set(&mut body, value.clone());
        if let Some(urn) = change.path.schema()
            && !schemas.iter().any(|s| s.as_str() == Some(urn))
        {
            schemas.push(Value::String(urn.to_string()));
        }
    }
    let mut out = Map::new();
    out.insert("schemas".into(), Value::Array(schemas));
    out.extend(body);
    Value::Object(out)
}

/// The changes `resource` does not hold yet.
pub fn pending<'a>(changes: &'a [Change], resource: &Map<String, Value>) -> Vec<&'a Change> {
    changes.iter().filter(|c| !c.holds(resource)).collect()
}

/// The body of a PUT: the server's `resource` with `changes` applied, `meta` left out (it is
/// the server's), and `schemas` naming every extension used.
pub fn merged(resource: &Map<String, Value>, changes: &[&Change]) -> Value {
    let mut body = resource.clone();
    let meta = existing_key(&body, "meta");
    body.shift_remove(&meta);
    for change in changes {
        match &change.value {
            Some(value) => change.path.set(&mut body, value.clone()),
            None => change.path.remove(&mut body),
        }
        if let Some(urn) = change.path.schema() {
            let key = existing_key(&body, "schemas");
            let schemas = body.entry(key).or_insert_with(|| json!([]));
            if let Value::Array(list) = schemas
                && !list.iter().any(|s| s.as_str() == Some(urn))
            {
                list.push(Value::String(urn.to_string()));
            }
        }
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{Action, Kind};

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    fn user(fields: Value, attributes: Value) -> Item {
        Item {
            kind: Kind::Users,
            action: Action::Upsert,
            id: Some("hr-001".into()),
            user_id: None,
            group_id: None,
            fields: fields
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            attributes: attributes
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn a_new_user_follows_the_contract() {
        let item = user(
            json!({"email": "alice@example.com", "first_name": "Alice", "last_name": "Liddell", "name": "Alice L", "active": true, "created_at": "2024-01-01T00:00:00Z"}),
            json!({"title": "Eng", "plan": "pro", format!("{ENT}.department"): "R&D", format!("{ENT}:manager.value"): "m1", "phoneNumbers": "[{\"value\":\"+1\"}]", "userName": "alice"}),
        );
        let (changes, unplaced) = user_changes(&item, None);
        assert_eq!(unplaced, vec!["plan".to_string(), "userName".to_string()]);
        assert_eq!(
            create_body(USER_SCHEMA, &changes),
            json!({
                "schemas": [USER_SCHEMA, ENT],
                "externalId": "hr-001",
                "userName": "alice@example.com",
                "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
                "name": {"givenName": "Alice", "familyName": "Liddell"},
                "displayName": "Alice L",
                "active": true,
                "title": "Eng",
                ENT: {"department": "R&D", "manager": {"value": "m1"}},
                "phoneNumbers": [{"value": "+1"}],
            })
        );
        let paths: Vec<String> = changes.iter().map(|c| c.path.patch_path()).collect();
        assert!(paths.contains(&format!("{ENT}:department")), "{paths:?}");
        assert!(paths.contains(&format!("{ENT}:manager.value")), "{paths:?}");
    }

    #[test]
    fn updates_keep_other_emails_and_skip_what_the_server_holds() {
        let current = json!({
            "id": "s1", "userName": "ALICE@example.com", "externalId": "hr-001", "active": "True",
            "emails": [{"value": "a@home.io", "type": "home"}, {"value": "old@example.com", "type": "work"}],
            "name": {"givenName": "Alice", "familyName": "L"},
            "meta": {"version": "W/\"3\""},
        });
        let current = current.as_object().unwrap();
        let item = user(
            json!({"email": "alice@example.com", "first_name": "Alice", "last_name": null, "active": true}),
            json!({}),
        );
        let (changes, _) = user_changes(&item, Some(current));
        let todo = pending(&changes, current);
        let paths: Vec<String> = todo.iter().map(|c| c.path.patch_path()).collect();
        assert_eq!(paths, vec!["emails", "name.familyName"]);
        assert_eq!(
            todo[0].value,
            Some(
                json!([{"value": "a@home.io", "type": "home"}, {"value": "alice@example.com", "type": "work"}])
            )
        );
        assert_eq!(todo[1].value, None);
        let put = merged(current, &todo);
        assert_eq!(put["name"], json!({"givenName": "Alice"}));
        assert_eq!(put["active"], json!("True"), "a PUT keeps active");
        assert!(put.get("meta").is_none());
        assert_eq!(put["id"], json!("s1"));
    }

    #[test]
    fn a_user_without_email_and_groups() {
        let (changes, _) = user_changes(&user(json!({}), json!({})), None);
        assert_eq!(
            create_body(USER_SCHEMA, &changes),
            json!({"schemas": [USER_SCHEMA], "externalId": "hr-001"})
        );
        let group = Item {
            kind: Kind::Groups,
            action: Action::Upsert,
            id: Some("grp-eng".into()),
            user_id: None,
            group_id: None,
            fields: json!({"name": "Engineering"})
                .as_object()
                .cloned()
                .unwrap()
                .into_iter()
                .collect(),
            attributes: Default::default(),
        };
        assert_eq!(
            create_body(GROUP_SCHEMA, &group_changes(&group)),
            json!({"schemas": [GROUP_SCHEMA], "externalId": "grp-eng", "displayName": "Engineering"})
        );
    }

    #[test]
    fn extension_keys_in_both_spellings() {
        assert_eq!(
            split_extension(&format!("{ENT}.manager.value")),
            Some((ENT.to_string(), "manager.value".to_string()))
        );
        assert_eq!(
            split_extension(&format!("{ENT}:department")),
            Some((ENT.to_string(), "department".to_string()))
        );
        assert_eq!(split_extension("urn:x"), None);
        assert_eq!(split_extension("department"), None);
        let mut r = Map::new();
        let p = AttrPath::Ext(ENT.into(), "manager.value".into());
        p.set(&mut r, json!("m"));
        assert_eq!(p.get(&r), Some(&json!("m")));
        p.remove(&mut r);
        assert_eq!(Value::Object(r), json!({ENT: {"manager": {}}}));
    }
}
