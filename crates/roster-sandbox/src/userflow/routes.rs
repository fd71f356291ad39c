//! Userflow's routes: upserts, reads and deletes of users and groups, memberships, events, and
//! the lists the peer taps read.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::V;
use super::list::{list_envelope, list_query, list_static, page_of};
use super::store::{Expand, Link, User};
use crate::state::Shared;
use crate::{reply, util};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/users", post(upsert_user).get(list_users))
        .route(
            "/users/{id}",
            post(upsert_user).get(get_user).delete(delete_user),
        )
        .route("/groups", post(upsert_group).get(list_groups))
        .route(
            "/groups/{id}",
            post(upsert_group).get(get_group).delete(delete_group),
        )
        .route("/group_memberships", post(add_membership))
        .route("/events", post(track_event))
        .route("/content", get(list_content))
        .route("/content_versions", get(list_content_versions))
        .route("/content_sessions", get(list_content_sessions))
        .route("/attribute_definitions", get(list_attribute_definitions))
        .route("/event_definitions", get(list_event_definitions))
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

pub(super) fn bad(msg: &str) -> Response {
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

/// An upsert's body and the id it is for (from the path, the body, or both in agreement).
fn upsert_body<T: DeserializeOwned>(
    path_id: Option<String>,
    body: &[u8],
    id_in: impl Fn(&T) -> Option<&Value>,
) -> Result<(String, T), Response> {
    let req: T = util::parse_json(body).map_err(|e| bad(&e))?;
    let id = resolve_id(path_id, id_in(&req))?;
    Ok((id, req))
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

/// `POST /users` with the id in the body (the vendor's form) and `POST /users/{id}` (the
/// seed's form).
async fn upsert_user(
    State(sh): State<Arc<Shared>>,
    path: Option<Path<String>>,
    body: Bytes,
) -> Response {
    let path_id = path.map(|Path(id)| id);
    let (id, req) = match upsert_body(path_id, &body, |r: &UserUpsert| r.id.as_ref()) {
        Ok(parsed) => parsed,
        Err(r) => return r,
    };
    let links = match check_user_upsert(&req) {
        Ok(links) => links,
        Err(e) => return bad(&e),
    };
    let mut st = sh.userflow.lock();
    st.upsert_user(
        &id,
        req.attributes.as_ref(),
        &links,
        req.prune_memberships == Some(true),
    );
    match st.users.get(&id) {
        Some(u) => reply::ok(&st.user_json(&id, u, &Expand::default())),
        None => not_found("user", &id),
    }
}

/// Checks a user upsert before any change: its attributes, and its group links (from `groups`
/// or `memberships`, never both), which it returns.
fn check_user_upsert(req: &UserUpsert) -> Result<Vec<Link<'_>>, String> {
    if req.groups.is_some() && req.memberships.is_some() {
        return Err("only one of groups and memberships may be set".into());
    }
    if req.prune_memberships == Some(true) && req.groups.is_none() && req.memberships.is_none() {
        return Err("prune_memberships: requires groups or memberships".into());
    }
    if let Some(a) = &req.attributes {
        validate_attributes("attributes", a)?;
    }
    let mut links: Vec<Link<'_>> = Vec::new();
    for (i, g) in req.groups.iter().flatten().enumerate() {
        let Some(gid) = g.id.as_str().filter(|s| !s.is_empty()) else {
            return Err(format!("groups[{i}].id: must be a non-empty string"));
        };
        if let Some(a) = &g.attributes {
            validate_attributes(&format!("groups[{i}].attributes"), a)?;
        }
        links.push((gid.to_owned(), g.attributes.as_ref(), None));
    }
    for (i, m) in req.memberships.iter().flatten().enumerate() {
        links.push(membership_link(i, m)?);
    }
    Ok(links)
}

/// The link one entry of `memberships` asks for, its attributes checked.
fn membership_link(i: usize, m: &MembershipIn) -> Result<Link<'_>, String> {
    let Some(gid) = m.group.id.as_str().filter(|s| !s.is_empty()) else {
        return Err(format!(
            "memberships[{i}].group.id: must be a non-empty string"
        ));
    };
    if let Some(a) = &m.attributes {
        validate_attributes(&format!("memberships[{i}].attributes"), a)?;
    }
    if let Some(a) = &m.group.attributes {
        validate_attributes(&format!("memberships[{i}].group.attributes"), a)?;
    }
    Ok((
        gid.to_owned(),
        m.group.attributes.as_ref(),
        m.attributes.as_ref(),
    ))
}

/// `POST /groups` with the id in the body (the vendor's form) and `POST /groups/{id}` (the
/// seed's form).
async fn upsert_group(
    State(sh): State<Arc<Shared>>,
    path: Option<Path<String>>,
    body: Bytes,
) -> Response {
    let path_id = path.map(|Path(id)| id);
    let (id, req) = match upsert_body(path_id, &body, |r: &GroupUpsert| r.id.as_ref()) {
        Ok(parsed) => parsed,
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
    let data: Vec<_> = items
        .iter()
        .map(|(id, u)| st.user_view(id, u, &ex))
        .collect();
    // About 800 bytes a user with its memberships expanded (the seeded world's).
    let capacity = 512 + data.len() * 1024;
    reply::ok_sized(&list_envelope("/users", &q, data, more, last), capacity)
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
    use super::super::list::next_page_url;
    use super::super::store::apply_attributes;
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
