//! What the sandbox holds, vendor-neutrally: the [`Model`] input every writer is put through
//! (users, groups, memberships and, when asked, events, with a STATE after every 10 records),
//! the [`View`] a vendor must hold after it ([`expected`]) and the one it holds now ([`actual`],
//! from the sandbox's dump, in roster's terms whatever the vendor's own shape), the events it
//! holds ([`events_held`]), the keys a listable vendor holds for the tap ([`Holdings`]), and
//! lookups in a dump and the request log.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use roster_sandbox::{RequestLogEntry, Sandbox, Vendor};
use serde_json::{Map, Value, json};

/// The users' plans, in turn.
pub const PLANS: [&str; 3] = ["free", "pro", "team"];

/// The people the target writes: `users` users, `groups` groups, each user in one group, and
/// (with `events`) one event `seen` per user after its membership.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    pub users: usize,
    pub groups: usize,
    pub events: bool,
}

impl Model {
    /// `users` users in `groups` groups, no events.
    pub const fn new(users: usize, groups: usize) -> Self {
        Self {
            users,
            groups,
            events: false,
        }
    }

    /// The same with an event per user.
    pub const fn with_events(self) -> Self {
        Self {
            events: true,
            ..self
        }
    }

    pub fn user_id(i: usize) -> String {
        format!("u{i:04}")
    }
    pub fn email(i: usize) -> String {
        format!("u{i:04}@example.com")
    }
    pub fn group_of(&self, i: usize) -> usize {
        i % self.groups
    }

    /// The records, in input order, as (stream, key, record): the groups, then each user
    /// followed by its membership (and its event).
    pub fn records(&self) -> Vec<(&'static str, String, Value)> {
        let mut records = Vec::new();
        for j in 0..self.groups {
            records.push((
                "groups",
                format!("g{j}"),
                json!({"id": format!("g{j}"), "name": format!("Group {j}"),
                    "attributes": {"tier": if j % 2 == 0 { "gold" } else { "silver" }}}),
            ));
        }
        for i in 0..self.users {
            let (id, group) = (Self::user_id(i), format!("g{}", self.group_of(i)));
            records.push((
                "users",
                id.clone(),
                json!({"id": id, "email": Self::email(i), "name": format!("User {i}"),
                    "attributes": {"plan": PLANS[i % 3], "n": i}}),
            ));
            records.push((
                "memberships",
                format!("{group}|{id}"),
                json!({"group_id": group, "user_id": id}),
            ));
            if self.events {
                records.push(("events", id.clone(), json!({"user_id": id, "name": "seen"})));
            }
        }
        records
    }

    /// The Singer input: SCHEMAs, then the [`Model::records`], with a STATE `{"offset": n}`
    /// after every 10 records and at the end. Returns the text and the number of records.
    pub fn singer(&self) -> (String, usize) {
        let mut lines = Vec::new();
        let mut streams = vec![
            ("users", json!(["id"])),
            ("groups", json!(["id"])),
            ("memberships", json!(["group_id", "user_id"])),
        ];
        if self.events {
            streams.push(("events", json!([])));
        }
        for (stream, key) in streams {
            lines.push(json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": key}));
        }
        let records = self.records();
        let total = records.len();
        for (n, (stream, _, record)) in records.into_iter().enumerate() {
            lines.push(json!({"type": "RECORD", "stream": stream, "record": record}));
            if (n + 1) % 10 == 0 || n + 1 == total {
                lines.push(json!({"type": "STATE", "value": {"offset": n + 1}}));
            }
        }
        let text = lines.iter().map(|l| format!("{l}\n")).collect();
        (text, total)
    }

    /// The record at input position `n` (0-based, records only), as (stream, key); a
    /// membership's key is `group|user`.
    pub fn record_key(&self, n: usize) -> (&'static str, String) {
        let (stream, key, _) = self.records().swap_remove(n);
        (stream, key)
    }

    /// Whether `view` holds the record at input position `n` (events are not in a view: true).
    pub fn holds(&self, vendor: Vendor, view: &View, n: usize) -> bool {
        let (stream, key) = self.record_key(n);
        let guru = vendor == Vendor::Guru;
        let user_key = |id: &str| {
            let i: usize = id[1..].parse().unwrap();
            if guru { Self::email(i) } else { id.to_string() }
        };
        let group_key = |id: &str| {
            if guru {
                format!("Group {}", &id[1..])
            } else {
                id.to_string()
            }
        };
        match stream {
            "users" => view.users.contains_key(&user_key(&key)),
            "groups" => view.groups.contains_key(&group_key(&key)),
            "memberships" => {
                let (group, user) = key.split_once('|').unwrap();
                view.memberships
                    .contains(&(group_key(group), user_key(user)))
            }
            _ => true,
        }
    }
}

/// What a vendor holds, in roster's terms: users and groups by key with their fields, and
/// memberships as (group, user) pairs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct View {
    pub users: BTreeMap<String, Value>,
    pub groups: BTreeMap<String, Value>,
    pub memberships: BTreeSet<(String, String)>,
}

impl View {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.memberships.is_empty()
    }
}

pub fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

pub fn without(v: &Value, keys: &[&str]) -> Value {
    let mut obj = v.as_object().cloned().unwrap_or_default();
    for k in keys {
        obj.remove(*k);
    }
    Value::Object(obj)
}

/// What `vendor` must hold after `model` was written.
pub fn expected(vendor: Vendor, model: &Model) -> View {
    let mut view = View::default();
    let stringify = vendor == Vendor::Userpilot;
    let value = |v: Value| match v {
        Value::Number(n) if stringify => Value::String(n.to_string()),
        other => other,
    };
    for j in 0..model.groups {
        let name = format!("Group {j}");
        let tier = if j % 2 == 0 { "gold" } else { "silver" };
        match vendor {
            Vendor::Guru => view.groups.insert(name, json!({})),
            Vendor::Scim | Vendor::GuruScim => view
                .groups
                .insert(format!("g{j}"), json!({"displayName": name})),
            _ => view
                .groups
                .insert(format!("g{j}"), json!({"name": name, "tier": tier})),
        };
    }
    for i in 0..model.users {
        let (id, email) = (Model::user_id(i), Model::email(i));
        let group = model.group_of(i);
        match vendor {
            Vendor::Guru => {
                view.users.insert(email.clone(), json!({}));
                view.memberships.insert((format!("Group {group}"), email));
            }
            Vendor::Scim | Vendor::GuruScim => {
                view.users.insert(
                    id.clone(),
                    json!({"userName": email, "displayName": format!("User {i}")}),
                );
                view.memberships.insert((format!("g{group}"), id));
            }
            _ => {
                let mut attrs = Map::new();
                attrs.insert("email".into(), json!(email));
                attrs.insert("name".into(), json!(format!("User {i}")));
                attrs.insert("plan".into(), json!(PLANS[i % 3]));
                attrs.insert("n".into(), value(json!(i)));
                view.users.insert(id.clone(), Value::Object(attrs));
                view.memberships.insert((format!("g{group}"), id));
            }
        }
    }
    view
}

/// What `vendor` holds in the sandbox now.
pub fn actual(sb: &Sandbox, vendor: Vendor) -> View {
    let dump = sb.dump(vendor);
    let list = |key: &str| dump[key].as_array().cloned().unwrap_or_default();
    let mut view = View::default();
    match vendor {
        Vendor::Userflow => {
            for u in list("users") {
                for m in u["memberships"].as_array().into_iter().flatten() {
                    view.memberships.insert((s(&m["group_id"]), s(&u["id"])));
                }
                view.users.insert(s(&u["id"]), u["attributes"].clone());
            }
            for g in list("groups") {
                view.groups.insert(s(&g["id"]), g["attributes"].clone());
            }
        }
        Vendor::UserGuiding => {
            for u in list("users") {
                if let Some(company) = u["companyId"].as_str() {
                    view.memberships.insert((company.into(), s(&u["userId"])));
                }
                view.users.insert(s(&u["userId"]), u["attributes"].clone());
            }
            for c in list("companies") {
                view.groups
                    .insert(s(&c["companyId"]), c["attributes"].clone());
            }
        }
        Vendor::Userpilot => {
            for u in list("users") {
                if let Some(company) = u["company_id"].as_str() {
                    view.memberships.insert((company.into(), s(&u["user_id"])));
                }
                view.users.insert(s(&u["user_id"]), u["metadata"].clone());
            }
            for c in list("companies") {
                view.groups
                    .insert(s(&c["company_id"]), c["metadata"].clone());
            }
        }
        Vendor::Appcues => {
            for u in list("users") {
                view.users
                    .insert(s(&u["user_id"]), without(&u, &["user_id"]));
            }
            for g in list("groups") {
                for u in g["user_ids"].as_array().into_iter().flatten() {
                    view.memberships.insert((s(&g["group_id"]), s(u)));
                }
                view.groups
                    .insert(s(&g["group_id"]), without(&g, &["group_id", "user_ids"]));
            }
        }
        Vendor::Guru => {
            for m in list("members") {
                view.users.insert(s(&m["user"]["email"]), json!({}));
            }
            for g in list("groups") {
                if g["name"] == "All Members" {
                    continue;
                }
                for email in g["members"].as_array().into_iter().flatten() {
                    view.memberships.insert((s(&g["name"]), s(email)));
                }
                // Guru does not deduplicate names: a second group of a name is a defect.
                let mut name = s(&g["name"]);
                while view.groups.contains_key(&name) {
                    name.push_str(" (again)");
                }
                view.groups.insert(name, json!({}));
            }
        }
        Vendor::Scim | Vendor::GuruScim => {
            let mut external = BTreeMap::new();
            for u in list("Users") {
                let key = u["externalId"]
                    .as_str()
                    .map_or_else(|| s(&u["id"]), str::to_string);
                // A second user of a key is a defect the map must not merge away.
                let mut key = key;
                while view.users.contains_key(&key) {
                    key.push_str(" (again)");
                }
                external.insert(s(&u["id"]), key.clone());
                view.users.insert(
                    key,
                    json!({"userName": u["userName"], "displayName": u["displayName"]}),
                );
            }
            for g in list("Groups") {
                let mut key = g["externalId"]
                    .as_str()
                    .map_or_else(|| s(&g["id"]), str::to_string);
                // A second group of a key (a create repeated blindly) is a defect the map must
                // not merge away.
                while view.groups.contains_key(&key) {
                    key.push_str(" (again)");
                }
                for m in g["members"].as_array().into_iter().flatten() {
                    let id = s(&m["value"]);
                    let user = external.get(&id).cloned().unwrap_or(id);
                    view.memberships.insert((key.clone(), user));
                }
                view.groups
                    .insert(key, json!({"displayName": g["displayName"]}));
            }
        }
    }
    view
}

/// The events `vendor` holds as (user, event name), one entry per event held (so an entry twice
/// is an event held twice).
pub fn events_held(sb: &Sandbox, vendor: Vendor) -> Vec<(String, String)> {
    let dump = sb.dump(vendor);
    match vendor {
        Vendor::Appcues => dump["events"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(user, list)| {
                list.as_array()
                    .into_iter()
                    .flatten()
                    .map(move |e| (user.clone(), s(&e["name"])))
            })
            .collect(),
        Vendor::Userflow => items(&dump, "events")
            .iter()
            .map(|e| (s(&e["user_id"]), s(&e["name"])))
            .collect(),
        Vendor::Userpilot => items(&dump, "events")
            .iter()
            .map(|e| (s(&e["user_id"]), s(&e["event_name"])))
            .collect(),
        other => panic!("{other} takes no events"),
    }
}

/// An array of a dump, by key.
pub fn items<'a>(dump: &'a Value, key: &str) -> &'a Vec<Value> {
    dump[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key:?} in {dump}"))
}

/// The item of `dump[key]` whose `field` is `id`.
pub fn find<'a>(dump: &'a Value, key: &str, field: &str, id: &str) -> Option<&'a Value> {
    items(dump, key).iter().find(|v| v[field] == id)
}

/// How many entries of the sandbox's request log match `what`.
pub fn answered(sb: &Sandbox, what: impl Fn(&RequestLogEntry) -> bool) -> u64 {
    sb.requests().iter().filter(|r| what(r)).count() as u64
}

/// The sandbox's count of one status for `vendor` ("0" = dropped).
pub fn status_count(sb: &Sandbox, vendor: Vendor, status: &str) -> u64 {
    sb.stats()
        .vendors
        .get(vendor.name())
        .and_then(|v| v.statuses.get(status).copied())
        .unwrap_or(0)
}

/// The sandbox's count of 5xx answers for `vendor`.
pub fn count_5xx(sb: &Sandbox, vendor: Vendor) -> u64 {
    sb.stats().vendors.get(vendor.name()).map_or(0, |v| {
        v.statuses
            .iter()
            .filter(|(k, _)| k.starts_with('5'))
            .map(|(_, n)| *n)
            .sum()
    })
}

/// Panics when a value occurs twice.
#[track_caller]
pub fn assert_unique(mut values: Vec<String>, what: &str) {
    values.sort();
    let before = values.len();
    values.dedup();
    assert_eq!(values.len(), before, "some {what} arrived twice");
}

/// The key of a record: `(stream, key values)`.
pub fn record_key(stream: &str, record: &Value) -> (String, String) {
    let key = match stream {
        "memberships" => format!(
            "{}|{}",
            record["group_id"].as_str().unwrap(),
            record["user_id"].as_str().unwrap()
        ),
        _ => record["id"].as_str().unwrap().to_string(),
    };
    (stream.to_string(), key)
}

/// The keys a sandbox vendor holds, per stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Holdings {
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
    pub memberships: BTreeSet<String>,
}

impl Holdings {
    /// What the sandbox holds for `vendor`.
    pub fn of(sb: &Sandbox, vendor: Vendor) -> Self {
        let dump = sb.dump(vendor);
        let mut h = Holdings::default();
        let s = |v: &Value| v.as_str().unwrap().to_string();
        match vendor {
            Vendor::Userflow => {
                for u in dump["users"].as_array().unwrap() {
                    h.users.insert(s(&u["id"]));
                    for m in u["memberships"].as_array().unwrap() {
                        h.memberships
                            .insert(format!("{}|{}", s(&m["group_id"]), s(&u["id"])));
                    }
                }
                for g in dump["groups"].as_array().unwrap() {
                    h.groups.insert(s(&g["id"]));
                }
            }
            Vendor::Guru => {
                for m in dump["members"].as_array().unwrap() {
                    h.users.insert(s(&m["user"]["email"]));
                }
                for g in dump["groups"].as_array().unwrap() {
                    h.groups.insert(s(&g["id"]));
                    for email in g["members"].as_array().unwrap() {
                        h.memberships
                            .insert(format!("{}|{}", s(&g["id"]), s(email)));
                    }
                }
            }
            Vendor::GuruScim | Vendor::Scim => {
                for u in dump["Users"].as_array().unwrap() {
                    h.users.insert(s(&u["id"]));
                }
                for g in dump["Groups"].as_array().unwrap() {
                    h.groups.insert(s(&g["id"]));
                    for m in g["members"].as_array().into_iter().flatten() {
                        h.memberships
                            .insert(format!("{}|{}", s(&g["id"]), s(&m["value"])));
                    }
                }
            }
            other => panic!("{other} is not listable"),
        }
        h
    }

    /// The keys found in tap output, per stream.
    pub fn from_messages(messages: &[Value]) -> Self {
        let mut h = Holdings::default();
        for m in messages.iter().filter(|m| m["type"] == "RECORD") {
            let stream = m["stream"].as_str().unwrap();
            let (_, key) = record_key(stream, &m["record"]);
            match stream {
                "users" => h.users.insert(key),
                "groups" => h.groups.insert(key),
                "memberships" => h.memberships.insert(key),
                other => panic!("unexpected stream {other}"),
            };
        }
        h
    }

    /// A short summary for assertion messages.
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.users.len(), self.groups.len(), self.memberships.len())
    }
}
