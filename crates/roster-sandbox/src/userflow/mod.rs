//! Userflow (`/userflow`): users, groups, memberships, events and the content lists the peer
//! taps read.
//!
//! Upserts merge: given attributes replace, omitted ones are kept, `null` removes one, and the
//! change objects of userflow.js (`set`, `set_once`, `add`, `subtract`) work. Both the vendor
//! form (`POST /users` with `id` in the body) and the seed form (`POST /users/{id}`) are
//! served. Lists page by cursor: `starting_after` is looked up in a hash map and the page read
//! from a B-tree, so a page costs O(log n + limit) even at 100,000 users.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::seed::World;
use super::state::Shared;
use super::{Vendor, reply, util};

const V: Vendor = Vendor::Userflow;
/// `limit` when none is sent (seed and both Singer taps).
const DEFAULT_LIMIT: usize = 20;
/// Largest `limit` (seed; both taps use `MAX_PAGE_SIZE = 100`).
const MAX_LIMIT: usize = 100;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/users", post(upsert_user).get(list_users))
        .route(
            "/users/{id}",
            post(upsert_user_at).get(get_user).delete(delete_user),
        )
        .route("/groups", post(upsert_group).get(list_groups))
        .route(
            "/groups/{id}",
            post(upsert_group_at).get(get_group).delete(delete_group),
        )
        .route("/group_memberships", post(add_membership))
        .route("/events", post(track_event))
        .route("/content", get(list_content))
        .route("/content_versions", get(list_content_versions))
        .route("/content_sessions", get(list_content_sessions))
        .route("/attribute_definitions", get(list_attribute_definitions))
        .route("/event_definitions", get(list_event_definitions))
}

/// Records kept in insertion (= `created_at`) order with O(1) id lookup.
#[derive(Debug)]
struct Ordered<T> {
    by_id: HashMap<String, (u64, T)>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered {
            by_id: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 1,
        }
    }
}

impl<T> Ordered<T> {
    fn get(&self, id: &str) -> Option<&T> {
        self.by_id.get(id).map(|(_, t)| t)
    }
    fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.by_id.get_mut(id).map(|(_, t)| t)
    }
    fn seq(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).map(|(s, _)| *s)
    }
    fn insert(&mut self, id: String, t: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        self.by_id.insert(id, (seq, t));
    }
    fn remove(&mut self, id: &str) -> Option<T> {
        let (seq, t) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some(t)
    }
    fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.order
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, t)| (id, t)))
    }
    /// One page in `created_at` order after (or, descending, before) the cursor.
    fn page(
        &self,
        after: Option<u64>,
        desc: bool,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Page<'_, T> {
        let ids: Box<dyn Iterator<Item = &String>> = match (desc, after) {
            (false, Some(s)) => Box::new(self.order.range(s + 1..).map(|(_, id)| id)),
            (false, None) => Box::new(self.order.values()),
            (true, Some(s)) => Box::new(self.order.range(..s).rev().map(|(_, id)| id)),
            (true, None) => Box::new(self.order.values().rev()),
        };
        let mut out: Vec<_> = ids
            .filter_map(|id| self.by_id.get(id).map(|(_, t)| (id, t)))
            .filter(|(_, t)| keep(t))
            .take(limit + 1)
            .collect();
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }
}

/// One page of records and whether more follow.
type Page<'a, T> = (Vec<(&'a String, &'a T)>, bool);

/// A group link of a user upsert: group id, group attributes, membership attributes.
type Link<'a> = (
    String,
    Option<&'a Map<String, Value>>,
    Option<&'a Map<String, Value>>,
);

#[derive(Debug, Clone)]
struct User {
    attributes: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    memberships: BTreeMap<String, Membership>,
}

#[derive(Debug, Clone)]
struct Membership {
    attributes: Map<String, Value>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct Group {
    attributes: Map<String, Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    members: BTreeSet<String>,
}

/// A user on the wire; the fields in Userflow's order, expansions only when asked for.
#[derive(Serialize)]
struct UserView<'a> {
    object: &'static str,
    id: &'a str,
    attributes: &'a Map<String, Value>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    memberships: Option<Vec<MembershipView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<GroupView<'a>>>,
}

/// A group on the wire.
#[derive(Serialize)]
struct GroupView<'a> {
    object: &'static str,
    id: &'a str,
    attributes: &'a Map<String, Value>,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    memberships: Option<Vec<MembershipView<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<Vec<UserView<'a>>>,
}

/// A group membership on the wire, with its group when expanded from a user.
#[derive(Serialize)]
struct MembershipView<'a> {
    object: &'static str,
    attributes: &'a Map<String, Value>,
    created_at: String,
    group_id: &'a str,
    user_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupView<'a>>,
}

impl<'a> MembershipView<'a> {
    fn new(
        group_id: &'a str,
        user_id: &'a str,
        m: &'a Membership,
        group: Option<GroupView<'a>>,
    ) -> Self {
        MembershipView {
            object: "group_membership",
            attributes: &m.attributes,
            created_at: util::iso(m.created_at),
            group_id,
            user_id,
            group,
        }
    }
}

/// A list answer: `data` in order, `next_page_url` when there is more.
#[derive(Serialize)]
struct ListView<'a, T> {
    object: &'static str,
    data: Vec<T>,
    has_more: bool,
    url: &'a str,
    next_page_url: Option<String>,
}

/// What Userflow holds.
#[derive(Debug, Default)]
pub(crate) struct Store {
    users: Ordered<User>,
    groups: Ordered<Group>,
    events: Vec<Value>,
    content: Vec<Value>,
    content_versions: Vec<Value>,
    content_sessions: Vec<Value>,
}

impl Store {
    pub fn seeded(w: &World) -> Store {
        let mut s = Store::default();
        for c in &w.companies {
            let mut attributes = Map::new();
            attributes.insert("name".into(), json!(c.name));
            attributes.insert("plan".into(), json!(c.plan));
            attributes.insert("industry".into(), json!(c.industry));
            attributes.insert("employees".into(), json!(c.employees));
            s.groups.insert(
                c.userflow_id(),
                Group {
                    attributes,
                    created_at: c.created_at,
                    updated_at: c.created_at,
                    members: BTreeSet::new(),
                },
            );
        }
        for p in &w.people {
            let mut attributes = Map::new();
            attributes.insert("name".into(), json!(p.name()));
            attributes.insert("email".into(), json!(p.email));
            attributes.insert("plan".into(), json!(p.plan));
            attributes.insert("role".into(), json!(p.role));
            attributes.insert("locale".into(), json!(p.locale));
            attributes.insert("seats".into(), json!(p.seats));
            attributes.insert("signed_up_at".into(), json!(util::iso(p.signed_up_at)));
            s.users.insert(
                p.userflow_id(),
                User {
                    attributes,
                    created_at: p.created_at,
                    updated_at: p.created_at,
                    memberships: BTreeMap::new(),
                },
            );
        }
        let mut seen = BTreeSet::new();
        for (pi, ci) in &w.company_members {
            let (uid, gid) = (w.people[*pi].userflow_id(), w.companies[*ci].userflow_id());
            let primary = seen.insert(*pi);
            let created_at = w.people[*pi].created_at;
            if let Some(u) = s.users.get_mut(&uid) {
                let mut attributes = Map::new();
                attributes.insert("primary".into(), json!(primary));
                u.memberships.insert(
                    gid.clone(),
                    Membership {
                        attributes,
                        created_at,
                    },
                );
            }
            if let Some(g) = s.groups.get_mut(&gid) {
                g.members.insert(uid);
            }
        }
        // Content for tap-userflow 0.0.3 / kingalban's content streams.
        let n_content = (w.people.len() / 10).clamp(3, 50);
        let base = w.companies.first().map_or_else(Utc::now, |c| c.created_at);
        for i in 0..n_content {
            let created = base + ChronoDuration::hours(i as i64);
            let id = format!("cnt_{:03}", i + 1);
            s.content.push(json!({
                "object": "content", "id": id, "name": format!("Onboarding flow {}", i + 1),
                "type": if i % 3 == 2 { "checklist" } else { "flow" },
                "created_at": util::iso(created),
            }));
            s.content_versions.push(json!({
                "object": "content_version", "id": format!("cv_{:03}", i + 1), "content_id": id,
                "number": 1, "created_at": util::iso(created),
            }));
        }
        for (i, p) in w.people.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
            let c = (i / 3) % n_content;
            let t = p.created_at + ChronoDuration::hours(2);
            s.content_sessions.push(json!({
                "object": "content_session", "id": format!("cs_{:05}", i + 1),
                "content_id": format!("cnt_{:03}", c + 1), "version_id": format!("cv_{:03}", c + 1),
                "user_id": p.userflow_id(), "completed": i % 2 == 0,
                "created_at": util::iso(p.created_at), "last_activity_at": util::iso(t),
            }));
        }
        s
    }

    pub fn dump(&self) -> Value {
        let all = Expand {
            memberships: true,
            ..Expand::default()
        };
        json!({
            "users": self.users.iter().map(|(id, u)| self.user_json(id, u, &all)).collect::<Vec<_>>(),
            "groups": self.groups.iter().map(|(id, g)| self.group_json(id, g, &Expand::default())).collect::<Vec<_>>(),
            "events": self.events,
        })
    }

    /// How many users are held, and the named ones as the dump shows them (cheap at a million
    /// users, where the whole dump is not).
    pub fn users_summary(&self, ids: &[String]) -> Value {
        let all = Expand {
            memberships: true,
            ..Expand::default()
        };
        let picked: serde_json::Map<String, Value> = ids
            .iter()
            .map(|id| {
                let u = self
                    .users
                    .get(id)
                    .map_or(Value::Null, |u| self.user_json(id, u, &all));
                (id.clone(), u)
            })
            .collect();
        json!({"count": self.users.by_id.len(), "users": picked})
    }

    fn group_json(&self, id: &str, g: &Group, ex: &Expand) -> Value {
        serde_json::to_value(self.group_view(id, g, ex)).unwrap_or(Value::Null)
    }

    fn user_json(&self, id: &str, u: &User, ex: &Expand) -> Value {
        serde_json::to_value(self.user_view(id, u, ex)).unwrap_or(Value::Null)
    }

    /// A group as Userflow shows it, borrowed from the store (lists serialise it directly).
    fn group_view<'a>(&'a self, id: &'a str, g: &'a Group, ex: &Expand) -> GroupView<'a> {
        let memberships = ex.memberships.then(|| {
            g.members
                .iter()
                .filter_map(|uid| {
                    let m = self.users.get(uid)?.memberships.get(id)?;
                    Some(MembershipView::new(id, uid, m, None))
                })
                .collect()
        });
        let users = ex.users.then(|| {
            g.members
                .iter()
                .filter_map(|uid| {
                    let u = self.users.get(uid)?;
                    Some(self.user_view(uid, u, &Expand::default()))
                })
                .collect()
        });
        GroupView {
            object: "group",
            id,
            attributes: &g.attributes,
            created_at: util::iso(g.created_at),
            updated_at: util::iso(g.updated_at),
            memberships,
            users,
        }
    }

    /// A user as Userflow shows it, borrowed from the store.
    fn user_view<'a>(&'a self, id: &'a str, u: &'a User, ex: &Expand) -> UserView<'a> {
        let memberships = ex.memberships.then(|| {
            u.memberships
                .iter()
                .map(|(gid, m)| {
                    let group = self
                        .groups
                        .get(gid)
                        .map(|g| self.group_view(gid, g, &Expand::default()));
                    MembershipView::new(gid, id, m, group)
                })
                .collect()
        });
        let groups = ex.groups.then(|| {
            u.memberships
                .keys()
                .filter_map(|gid| {
                    let g = self.groups.get(gid)?;
                    Some(self.group_view(gid, g, &Expand::default()))
                })
                .collect()
        });
        UserView {
            object: "user",
            id,
            attributes: &u.attributes,
            created_at: util::iso(u.created_at),
            updated_at: util::iso(u.updated_at),
            memberships,
            groups,
        }
    }

    fn upsert_group_attrs(&mut self, id: &str, attrs: Option<&Map<String, Value>>) {
        let now = util::now();
        if self.groups.get(id).is_none() {
            self.groups.insert(
                id.to_owned(),
                Group {
                    attributes: Map::new(),
                    created_at: now,
                    updated_at: now,
                    members: BTreeSet::new(),
                },
            );
        }
        if let Some(g) = self.groups.get_mut(id) {
            if let Some(a) = attrs {
                apply_attributes(&mut g.attributes, a);
            }
            g.updated_at = now;
        }
    }

    fn link(&mut self, uid: &str, gid: &str, attrs: Option<&Map<String, Value>>) {
        let now = util::now();
        if let Some(u) = self.users.get_mut(uid) {
            let m = u
                .memberships
                .entry(gid.to_owned())
                .or_insert_with(|| Membership {
                    attributes: Map::new(),
                    created_at: now,
                });
            if let Some(a) = attrs {
                apply_attributes(&mut m.attributes, a);
            }
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.members.insert(uid.to_owned());
        }
    }

    fn unlink(&mut self, uid: &str, gid: &str) {
        if let Some(u) = self.users.get_mut(uid) {
            u.memberships.remove(gid);
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.members.remove(uid);
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Expand {
    memberships: bool,
    groups: bool,
    users: bool,
}

fn expand_of(pairs: &[(String, String)]) -> Expand {
    let mut e = Expand::default();
    for x in util::all(pairs, "expand") {
        match x.as_str() {
            "memberships" | "memberships.group" | "memberships.user" => e.memberships = true,
            "groups" => e.groups = true,
            "users" => e.users = true,
            _ => {}
        }
    }
    e
}

/// Checks attribute values: literals or userflow.js change objects.
fn validate_attributes(field: &str, attrs: &Map<String, Value>) -> Result<(), String> {
    for (k, v) in attrs {
        match v {
            Value::Object(o) => {
                let ops: Vec<&String> = o.keys().filter(|k| *k != "data_type").collect();
                let [op] = ops.as_slice() else {
                    return Err(format!(
                        "{field}.{k}: a change object needs exactly one of set, set_once, add, subtract"
                    ));
                };
                match op.as_str() {
                    "set" | "set_once" => {
                        if !util::is_scalar(&o[op.as_str()]) {
                            return Err(format!(
                                "{field}.{k}.{op}: must be a string, number, boolean or null"
                            ));
                        }
                    }
                    "add" | "subtract" => {
                        if !o[op.as_str()].is_number() {
                            return Err(format!("{field}.{k}.{op}: must be a number"));
                        }
                    }
                    other => {
                        return Err(format!("{field}.{k}: unknown change operation '{other}'"));
                    }
                }
                if let Some(dt) = o.get("data_type")
                    && !matches!(
                        dt.as_str(),
                        Some("string" | "boolean" | "number" | "datetime")
                    )
                {
                    return Err(format!(
                        "{field}.{k}.data_type: must be string, boolean, number or datetime"
                    ));
                }
            }
            Value::Array(_) => {
                return Err(format!(
                    "{field}.{k}: must be a string, number, boolean, null or change object, got array"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Merges validated attributes: `null` removes, change objects apply, literals replace.
fn apply_attributes(target: &mut Map<String, Value>, given: &Map<String, Value>) {
    for (k, v) in given {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(o) => {
                if let Some(x) = o.get("set") {
                    if x.is_null() {
                        target.remove(k);
                    } else {
                        target.insert(k.clone(), x.clone());
                    }
                } else if let Some(x) = o.get("set_once") {
                    if !target.contains_key(k) && !x.is_null() {
                        target.insert(k.clone(), x.clone());
                    }
                } else {
                    let (delta, sign) = match (o.get("add"), o.get("subtract")) {
                        (Some(a), _) => (a.as_f64().unwrap_or(0.0), 1.0),
                        (None, Some(s)) => (s.as_f64().unwrap_or(0.0), -1.0),
                        _ => continue,
                    };
                    let cur = target.get(k).and_then(Value::as_f64).unwrap_or(0.0);
                    let n = cur + sign * delta;
                    let v = if n.fract() == 0.0 && n.abs() < 9.0e15 {
                        json!(n as i64)
                    } else {
                        json!(n)
                    };
                    target.insert(k.clone(), v);
                }
            }
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupRef {
    id: Value,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipIn {
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    group: GroupRef,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserUpsert {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
    #[serde(default)]
    groups: Option<Vec<GroupRef>>,
    #[serde(default)]
    memberships: Option<Vec<MembershipIn>>,
    #[serde(default)]
    prune_memberships: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupUpsert {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

fn bad(msg: &str) -> Response {
    reply::error(V, StatusCode::BAD_REQUEST, "invalid_params", msg)
}

fn not_found(what: &str, id: &str) -> Response {
    reply::error(
        V,
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no {what} with id '{id}' found"),
    )
}

/// The id from the path and/or the body: they must agree when both are given.
fn resolve_id(path_id: Option<String>, body_id: Option<&Value>) -> Result<String, Response> {
    let body_id = match body_id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(other) => {
            return Err(bad(&format!(
                "id: must be a non-empty string, got {}",
                util::type_name(other)
            )));
        }
    };
    match (path_id, body_id) {
        (Some(p), Some(b)) if p != b => Err(bad(&format!(
            "id: the body's id '{b}' differs from the path's id '{p}'"
        ))),
        (Some(p), _) => Ok(p),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(bad("id: is required")),
    }
}

async fn upsert_user(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    do_upsert_user(&sh, None, &body)
}

async fn upsert_user_at(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    do_upsert_user(&sh, Some(id), &body)
}

fn do_upsert_user(sh: &Shared, path_id: Option<String>, body: &[u8]) -> Response {
    let req: UserUpsert = match util::parse_json(body) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let id = match resolve_id(path_id, req.id.as_ref()) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if req.groups.is_some() && req.memberships.is_some() {
        return bad("only one of groups and memberships may be set");
    }
    if req.prune_memberships == Some(true) && req.groups.is_none() && req.memberships.is_none() {
        return bad("prune_memberships: requires groups or memberships");
    }
    if let Some(a) = &req.attributes
        && let Err(e) = validate_attributes("attributes", a)
    {
        return bad(&e);
    }
    // (group id, group attributes, membership attributes), all validated before any change.
    let mut links: Vec<Link<'_>> = Vec::new();
    for (i, g) in req.groups.iter().flatten().enumerate() {
        let Some(gid) = g.id.as_str().filter(|s| !s.is_empty()) else {
            return bad(&format!("groups[{i}].id: must be a non-empty string"));
        };
        if let Some(a) = &g.attributes
            && let Err(e) = validate_attributes(&format!("groups[{i}].attributes"), a)
        {
            return bad(&e);
        }
        links.push((gid.to_owned(), g.attributes.as_ref(), None));
    }
    for (i, m) in req.memberships.iter().flatten().enumerate() {
        let Some(gid) = m.group.id.as_str().filter(|s| !s.is_empty()) else {
            return bad(&format!(
                "memberships[{i}].group.id: must be a non-empty string"
            ));
        };
        for (field, a) in [
            (format!("memberships[{i}].attributes"), &m.attributes),
            (
                format!("memberships[{i}].group.attributes"),
                &m.group.attributes,
            ),
        ] {
            if let Some(a) = a
                && let Err(e) = validate_attributes(&field, a)
            {
                return bad(&e);
            }
        }
        links.push((
            gid.to_owned(),
            m.group.attributes.as_ref(),
            m.attributes.as_ref(),
        ));
    }

    let mut st = sh.userflow.lock();
    let now = util::now();
    if st.users.get(&id).is_none() {
        st.users.insert(
            id.clone(),
            User {
                attributes: Map::new(),
                created_at: now,
                updated_at: now,
                memberships: BTreeMap::new(),
            },
        );
    }
    if let Some(u) = st.users.get_mut(&id) {
        if let Some(a) = &req.attributes {
            apply_attributes(&mut u.attributes, a);
        }
        u.updated_at = now;
    }
    for (gid, gattrs, mattrs) in &links {
        st.upsert_group_attrs(gid, *gattrs);
        st.link(&id, gid, *mattrs);
    }
    if req.prune_memberships == Some(true) {
        let keep: BTreeSet<&str> = links.iter().map(|(g, _, _)| g.as_str()).collect();
        let current: Vec<String> = st
            .users
            .get(&id)
            .map(|u| u.memberships.keys().cloned().collect())
            .unwrap_or_default();
        for gid in current.iter().filter(|g| !keep.contains(g.as_str())) {
            st.unlink(&id, gid);
        }
    }
    match st.users.get(&id) {
        Some(u) => reply::ok(&st.user_json(&id, u, &Expand::default())),
        None => not_found("user", &id),
    }
}

async fn upsert_group(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    do_upsert_group(&sh, None, &body)
}

async fn upsert_group_at(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    do_upsert_group(&sh, Some(id), &body)
}

fn do_upsert_group(sh: &Shared, path_id: Option<String>, body: &[u8]) -> Response {
    let req: GroupUpsert = match util::parse_json(body) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    let id = match resolve_id(path_id, req.id.as_ref()) {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Some(a) = &req.attributes
        && let Err(e) = validate_attributes("attributes", a)
    {
        return bad(&e);
    }
    let mut st = sh.userflow.lock();
    st.upsert_group_attrs(&id, req.attributes.as_ref());
    match st.groups.get(&id) {
        Some(g) => reply::ok(&st.group_json(&id, g, &Expand::default())),
        None => not_found("group", &id),
    }
}

async fn get_user(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let ex = expand_of(&util::query_pairs(q.as_deref()));
    let st = sh.userflow.lock();
    match st.users.get(&id) {
        Some(u) => reply::ok(&st.user_json(&id, u, &ex)),
        None => not_found("user", &id),
    }
}

async fn get_group(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let ex = expand_of(&util::query_pairs(q.as_deref()));
    let st = sh.userflow.lock();
    match st.groups.get(&id) {
        Some(g) => reply::ok(&st.group_json(&id, g, &ex)),
        None => not_found("group", &id),
    }
}

async fn delete_user(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if !sh.userflow.lock().remove_user(&id) {
        return not_found("user", &id);
    }
    reply::ok(&json!({"object": "deleted", "id": id, "deleted": true}))
}

impl Store {
    /// Removes a user, its memberships and events, as `DELETE /users/{id}` does.
    pub(crate) fn remove_user(&mut self, id: &str) -> bool {
        let Some(u) = self.users.remove(id) else {
            return false;
        };
        for gid in u.memberships.keys() {
            if let Some(g) = self.groups.get_mut(gid) {
                g.members.remove(id);
            }
        }
        self.events
            .retain(|e| e.get("user_id").and_then(Value::as_str) != Some(id));
        true
    }
}

async fn delete_group(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = sh.userflow.lock();
    let Some(g) = st.groups.remove(&id) else {
        return not_found("group", &id);
    };
    for uid in &g.members {
        if let Some(u) = st.users.get_mut(uid) {
            u.memberships.remove(&id);
        }
    }
    st.events
        .retain(|e| e.get("group_id").and_then(Value::as_str) != Some(id.as_str()));
    reply::ok(&json!({"object": "deleted", "id": id, "deleted": true}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembershipReq {
    user_id: String,
    group_id: String,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

async fn add_membership(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: MembershipReq = match util::parse_json(&body) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    if let Some(a) = &req.attributes
        && let Err(e) = validate_attributes("attributes", a)
    {
        return bad(&e);
    }
    let mut st = sh.userflow.lock();
    if st.users.get(&req.user_id).is_none() {
        return not_found("user", &req.user_id);
    }
    if st.groups.get(&req.group_id).is_none() {
        return not_found("group", &req.group_id);
    }
    st.link(&req.user_id, &req.group_id, req.attributes.as_ref());
    let attrs = st
        .users
        .get(&req.user_id)
        .and_then(|u| u.memberships.get(&req.group_id))
        .map(|m| (m.attributes.clone(), m.created_at));
    let (attributes, created_at) = attrs.unwrap_or_default();
    reply::ok(&json!({
        "object": "group_membership",
        "user_id": req.user_id,
        "group_id": req.group_id,
        "attributes": attributes,
        "created_at": util::iso(created_at),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventReq {
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
    name: String,
    #[serde(default)]
    attributes: Option<Map<String, Value>>,
}

async fn track_event(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: EventReq = match util::parse_json(&body) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    if req.user_id.is_none() && req.group_id.is_none() {
        return bad("user_id or group_id is required");
    }
    if req.name.trim().is_empty() {
        return bad("name: must be a non-empty string");
    }
    if let Some(a) = &req.attributes
        && let Some((k, _)) = a.iter().find(|(_, v)| !util::is_scalar(v))
    {
        return bad(&format!(
            "attributes.{k}: must be a string, number, boolean or null"
        ));
    }
    let mut st = sh.userflow.lock();
    let id = format!("evt_{:08}", st.events.len() + 1);
    // Userflow takes no time for an event: it records when it receives one.
    let time = json!(util::iso(util::now()));
    let ev = json!({
        "object": "event",
        "id": id,
        "name": req.name,
        "user_id": req.user_id,
        "group_id": req.group_id,
        "attributes": req.attributes.unwrap_or_default(),
        "time": time,
    });
    st.events.push(ev.clone());
    reply::ok(&ev)
}

/// Parsed list parameters shared by every list endpoint.
struct ListQuery {
    pairs: Vec<(String, String)>,
    limit: usize,
    desc: bool,
    starting_after: Option<String>,
    ending_before: Option<String>,
}

fn list_query(raw: Option<&str>, allowed_order: &[&str]) -> Result<ListQuery, Response> {
    let pairs = util::query_pairs(raw);
    let limit = match util::first(&pairs, "limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(&format!(
                    "limit: must be an integer between 1 and {MAX_LIMIT}, got '{s}'"
                )));
            }
        },
    };
    let mut desc = false;
    if let Some(o) = util::first(&pairs, "order_by") {
        let (field, d) = match o.strip_prefix('-') {
            Some(f) => (f, true),
            None => (o, false),
        };
        if !allowed_order.contains(&field) {
            return Err(bad(&format!(
                "order_by: the sandbox orders by {} only, got '{o}'",
                allowed_order.join(" or ")
            )));
        }
        desc = d;
    }
    match util::first(&pairs, "sort") {
        None | Some("asc") => {}
        Some("desc") => desc = !desc,
        Some(other) => return Err(bad(&format!("sort: must be asc or desc, got '{other}'"))),
    }
    let starting_after = util::first(&pairs, "starting_after").map(str::to_owned);
    let ending_before = util::first(&pairs, "ending_before").map(str::to_owned);
    if starting_after.is_some() && ending_before.is_some() {
        return Err(bad(
            "only one of starting_after and ending_before may be set",
        ));
    }
    Ok(ListQuery {
        pairs,
        limit,
        desc,
        starting_after,
        ending_before,
    })
}

/// `next_page_url`: the request's own parameters, the cursor always last and never first
/// (both Python taps read it with `parse_qs`, which breaks when it leads).
fn next_page_url(path: &str, q: &ListQuery, last_id: &str) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in &q.pairs {
        if k != "starting_after" && k != "ending_before" {
            ser.append_pair(k, v);
            any = true;
        }
    }
    if !any {
        ser.append_pair("limit", &q.limit.to_string());
    }
    ser.append_pair("starting_after", last_id);
    format!("{path}?{}", ser.finish())
}

fn list_envelope<'a, T: Serialize>(
    path: &'a str,
    q: &ListQuery,
    data: Vec<T>,
    has_more: bool,
    last: Option<&str>,
) -> ListView<'a, T> {
    let next_page_url = match (has_more, last, &q.ending_before) {
        (true, Some(id), None) => Some(next_page_url(path, q, id)),
        _ => None,
    };
    ListView {
        object: "list",
        data,
        has_more,
        url: path,
        next_page_url,
    }
}

fn page_of<'a, T>(
    coll: &'a Ordered<T>,
    what: &str,
    q: &ListQuery,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<'a, T>, Response> {
    if let Some(before) = &q.ending_before {
        let Some(seq) = coll.seq(before) else {
            return Err(bad(&format!(
                "ending_before: {what} with id '{before}' not found"
            )));
        };
        // The `limit` items just before the cursor, in the listing's order.
        let (mut items, more) = coll.page(Some(seq), !q.desc, q.limit, keep);
        items.reverse();
        return Ok((items, more));
    }
    let after = match &q.starting_after {
        None => None,
        Some(id) => match coll.seq(id) {
            Some(s) => Some(s),
            None => {
                return Err(bad(&format!(
                    "starting_after: {what} with id '{id}' not found"
                )));
            }
        },
    };
    Ok(coll.page(after, q.desc, q.limit, keep))
}

async fn list_users(State(sh): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let q = match list_query(raw.as_deref(), &["created_at"]) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let ex = expand_of(&q.pairs);
    let email = util::first(&q.pairs, "email").map(str::to_lowercase);
    let st = sh.userflow.lock();
    let keep = |u: &User| {
        email.as_deref().is_none_or(|e| {
            u.attributes
                .get("email")
                .and_then(Value::as_str)
                .is_some_and(|x| x.to_lowercase() == e)
        })
    };
    let (items, more) = match page_of(&st.users, "user", &q, keep) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let last = items.last().map(|(id, _)| id.as_str());
    let data = items
        .iter()
        .map(|(id, u)| st.user_view(id, u, &ex))
        .collect();
    reply::ok(&list_envelope("/users", &q, data, more, last))
}

async fn list_groups(State(sh): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let q = match list_query(raw.as_deref(), &["created_at"]) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let ex = expand_of(&q.pairs);
    let st = sh.userflow.lock();
    let (items, more) = match page_of(&st.groups, "group", &q, |_| true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let last = items.last().map(|(id, _)| id.as_str());
    let data = items
        .iter()
        .map(|(id, g)| st.group_view(id, g, &ex))
        .collect();
    reply::ok(&list_envelope("/groups", &q, data, more, last))
}

/// Lists over the small seeded content collections (linear; they hold at most a few thousand).
fn list_static(
    path: &str,
    what: &str,
    items: &[Value],
    raw: Option<&str>,
    order: &[&str],
    filters: &[&str],
) -> Response {
    let q = match list_query(raw, order) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let wanted: Vec<(&str, String)> = filters
        .iter()
        .filter_map(|f| util::first(&q.pairs, f).map(|v| (*f, v.to_owned())))
        .collect();
    let matching: Vec<&Value> = items
        .iter()
        .filter(|v| {
            wanted
                .iter()
                .all(|(k, want)| v.get(*k).and_then(Value::as_str) == Some(want.as_str()))
        })
        .collect();
    let ordered: Vec<&Value> = if q.desc {
        matching.into_iter().rev().collect()
    } else {
        matching
    };
    let start = match &q.starting_after {
        None => 0,
        Some(id) => match ordered
            .iter()
            .position(|v| v.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            Some(i) => i + 1,
            None => return bad(&format!("starting_after: {what} with id '{id}' not found")),
        },
    };
    let page: Vec<Value> = ordered
        .iter()
        .skip(start)
        .take(q.limit)
        .map(|v| (*v).clone())
        .collect();
    let more = ordered.len() > start + page.len();
    let last = page
        .last()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    reply::ok(&list_envelope(path, &q, page, more, last.as_deref()))
}

async fn list_content(State(sh): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let st = sh.userflow.lock();
    list_static(
        "/content",
        "content",
        &st.content,
        raw.as_deref(),
        &["created_at"],
        &[],
    )
}

async fn list_content_versions(State(sh): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let st = sh.userflow.lock();
    list_static(
        "/content_versions",
        "content_version",
        &st.content_versions,
        raw.as_deref(),
        &["created_at"],
        &["content_id"],
    )
}

async fn list_content_sessions(State(sh): State<Arc<Shared>>, RawQuery(raw): RawQuery) -> Response {
    let st = sh.userflow.lock();
    list_static(
        "/content_sessions",
        "content_session",
        &st.content_sessions,
        raw.as_deref(),
        &["created_at", "last_activity_at"],
        &["content_id", "user_id"],
    )
}

async fn list_attribute_definitions(
    State(sh): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let st = sh.userflow.lock();
    let mut defs: BTreeMap<(String, String), &'static str> = BTreeMap::new();
    for (_, u) in st.users.iter() {
        for (k, v) in &u.attributes {
            defs.entry(("user".into(), k.clone()))
                .or_insert(data_type(v));
        }
    }
    for (_, g) in st.groups.iter() {
        for (k, v) in &g.attributes {
            defs.entry(("group".into(), k.clone()))
                .or_insert(data_type(v));
        }
    }
    let items: Vec<Value> = defs
        .iter()
        .map(|((scope, name), dt)| {
            json!({
                "object": "attribute_definition",
                "id": format!("{scope}:{name}"),
                "name": name,
                "display_name": name.replace('_', " "),
                "data_type": dt,
                "scope": scope,
                "created_at": "2023-01-01T00:00:00.000Z",
            })
        })
        .collect();
    list_static(
        "/attribute_definitions",
        "attribute_definition",
        &items,
        raw.as_deref(),
        &["created_at"],
        &[],
    )
}

fn data_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(s) if s.len() >= 20 && s.as_bytes().get(4) == Some(&b'-') => "datetime",
        _ => "string",
    }
}

async fn list_event_definitions(
    State(sh): State<Arc<Shared>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let st = sh.userflow.lock();
    let names: BTreeSet<&str> = st
        .events
        .iter()
        .filter_map(|e| e.get("name").and_then(Value::as_str))
        .collect();
    let items: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({"object": "event_definition", "id": n, "name": n,
                   "display_name": n.replace('_', " "), "created_at": "2023-01-01T00:00:00.000Z"})
        })
        .collect();
    list_static(
        "/event_definitions",
        "event_definition",
        &items,
        raw.as_deref(),
        &["created_at"],
        &[],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_semantics() {
        let mut t = Map::new();
        t.insert("a".into(), json!(1));
        t.insert("b".into(), json!("x"));
        t.insert("n".into(), json!(5));
        let given: Map<String, Value> = serde_json::from_value(json!({
            "b": null, "c": true, "n": {"add": 2}, "a": {"set_once": 9}, "d": {"set_once": "first"}
        }))
        .unwrap();
        validate_attributes("attributes", &given).unwrap();
        apply_attributes(&mut t, &given);
        assert_eq!(
            Value::Object(t),
            json!({"a": 1, "n": 7, "c": true, "d": "first"})
        );
    }

    #[test]
    fn rejects_bad_values() {
        let bad: Map<String, Value> = serde_json::from_value(json!({"x": [1]})).unwrap();
        assert!(validate_attributes("attributes", &bad).is_err());
        let bad: Map<String, Value> =
            serde_json::from_value(json!({"x": {"set": 1, "add": 2}})).unwrap();
        assert!(validate_attributes("attributes", &bad).is_err());
    }

    #[test]
    fn next_page_url_never_leads_with_the_cursor() {
        let q = list_query(Some("starting_after=u1"), &["created_at"]).unwrap();
        assert_eq!(
            next_page_url("/users", &q, "u9"),
            "/users?limit=20&starting_after=u9"
        );
        let q = list_query(
            Some("limit=100&order_by=created_at&sort=asc&expand=memberships"),
            &["created_at"],
        )
        .unwrap();
        assert_eq!(
            next_page_url("/users", &q, "u 9"),
            "/users?limit=100&order_by=created_at&sort=asc&expand=memberships&starting_after=u+9"
        );
    }
}
