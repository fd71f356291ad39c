//! SCIM 2.0 (RFC 7643/7644): one implementation served twice, as Guru SCIM
//! (`/guru/api/scim/v2`) and as a generic provider (`/scim/v2`), each with its own store.
//!
//! Lists are ListResponses paged by `startIndex`/`count` with a server-side cap; filters as
//! in [`super::scim_filter`]; POST answers 409 `uniqueness` for a taken `userName`
//! (case-insensitive); PATCH is all-or-nothing; PUT replaces; DELETE removes a user from every
//! group too. Group members must be existing user ids (Entra's behaviour), so a client that
//! sends emails or externalIds as member values gets a clear 400. ETags are weak versions and
//! `If-Match` is honoured. Optional quirks: numbers and booleans served as strings, and 204 for
//! PATCH.
//!
//! As strict as RFC 7643/7644 and scim2-server, so it can serve as an oracle: `schemas` is
//! required on every POST, PUT and PATCH (never added for the client), `name` and `emails`
//! must have their RFC shapes, and a body must come as `application/scim+json` (or
//! `application/json`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use serde_json::{Map, Value, json};

use super::scim_filter::{self, find_key};
use super::scim_patch;
use super::seed::{self, World};
use super::state::Shared;
use super::{Settings, Vendor, reply, util};

pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/Users", get(list_users).post(create_user))
        .route("/Users/.search", post(search_users))
        .route(
            "/Users/{id}",
            get(get_user)
                .put(put_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .route("/Groups", get(list_groups).post(create_group))
        .route("/Groups/.search", post(search_groups))
        .route(
            "/Groups/{id}",
            get(get_group)
                .put(put_group)
                .patch(patch_group)
                .delete(delete_group),
        )
        .route("/ServiceProviderConfig", get(service_provider_config))
        .route("/ResourceTypes", get(resource_types))
        .route("/Schemas", get(schemas))
        .route("/Bulk", post(bulk))
        .route_layer(axum::middleware::from_fn(content_type))
}

/// RFC 7644 §3.8 and §8.1: a request body is `application/scim+json`, or `application/json`
/// (which older clients send and servers accept, as scim2-server does); anything else, or no
/// Content-Type at all, answers 415.
async fn content_type(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let has_body = matches!(req.method().as_str(), "POST" | "PUT" | "PATCH");
    if has_body {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let media = ct.split(';').next().unwrap_or_default().trim();
        let ok = media.eq_ignore_ascii_case("application/scim+json")
            || media.eq_ignore_ascii_case("application/json");
        if !ok {
            let vendor = Vendor::from_path(req.uri().path()).unwrap_or(Vendor::Scim);
            let shown = if ct.is_empty() { "none" } else { ct };
            return reply::error(
                vendor,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalidSyntax",
                &format!(
                    "Content-Type must be application/scim+json (or application/json), got {shown}"
                ),
            );
        }
    }
    next.run(req).await
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    User,
    Group,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::User => "Users",
            Kind::Group => "Groups",
        }
    }
    fn resource_type(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
        }
    }
    fn schema(self) -> &'static str {
        match self {
            Kind::User => USER_SCHEMA,
            Kind::Group => GROUP_SCHEMA,
        }
    }
}

#[derive(Debug, Clone)]
struct Res {
    body: Map<String, Value>,
    created: DateTime<Utc>,
    modified: DateTime<Utc>,
    version: u64,
}

#[derive(Debug, Default)]
struct Resources {
    by_id: HashMap<String, (u64, Res)>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Resources {
    fn insert(&mut self, id: String, r: Res) {
        self.next_seq += 1;
        self.order.insert(self.next_seq, id.clone());
        self.by_id.insert(id, (self.next_seq, r));
    }
    fn get(&self, id: &str) -> Option<&Res> {
        self.by_id.get(id).map(|(_, r)| r)
    }
    fn remove(&mut self, id: &str) -> Option<Res> {
        let (seq, r) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some(r)
    }
    fn iter(&self) -> impl Iterator<Item = (&String, &Res)> {
        self.order
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, r)| (id, r)))
    }
    fn len(&self) -> usize {
        self.by_id.len()
    }
}

/// One SCIM service provider's data.
#[derive(Debug)]
pub(crate) struct Store {
    rng: StdRng,
    users: Resources,
    groups: Resources,
    /// Lower-cased userName → id, for uniqueness.
    user_names: HashMap<String, String>,
}

fn user_name_key(body: &Map<String, Value>) -> Option<String> {
    find_key(body, "userName")
        .and_then(|k| body[k].as_str())
        .map(str::to_lowercase)
}

/// RFC 7643 §3: `schemas` is required, holds the resource's core schema, and names every
/// schema the body uses (an extension's attributes need its URN listed); nothing is added for
/// a client that left it out.
fn check_schemas(k: Kind, body: &Map<String, Value>) -> Result<(), String> {
    let Some(key) = find_key(body, "schemas") else {
        return Err(format!(
            "schemas is required (RFC 7643 §3) and must contain {}",
            k.schema()
        ));
    };
    let Value::Array(list) = &body[key] else {
        return Err("schemas must be an array of schema URIs".into());
    };
    let mut urns = Vec::new();
    for u in list {
        let Some(u) = u.as_str() else {
            return Err("schemas must be an array of schema URIs".into());
        };
        let known = u.eq_ignore_ascii_case(k.schema())
            || (k == Kind::User && u.eq_ignore_ascii_case(ENTERPRISE));
        if !known {
            return Err(format!(
                "schemas names {u:?}, which is not a schema of {}",
                k.resource_type()
            ));
        }
        urns.push(u.to_ascii_lowercase());
    }
    if !urns.contains(&k.schema().to_ascii_lowercase()) {
        return Err(format!("schemas must contain {}", k.schema()));
    }
    if k == Kind::User
        && find_key(body, ENTERPRISE).is_some()
        && !urns.contains(&ENTERPRISE.to_ascii_lowercase())
    {
        return Err(format!(
            "the body has {ENTERPRISE} attributes, so schemas must list {ENTERPRISE}"
        ));
    }
    Ok(())
}

/// RFC 7643 §4.1: `name` is a complex attribute of strings, `emails` a multi-valued complex
/// attribute (an array of objects with a string `value` and `type`, a boolean `primary`, and
/// at most one primary).
fn check_user_shapes(body: &Map<String, Value>) -> Result<(), String> {
    if let Some(key) = find_key(body, "name") {
        match &body[key] {
            Value::Null => {}
            Value::Object(name) => {
                for (sub, v) in name {
                    if !matches!(v, Value::String(_) | Value::Null) {
                        return Err(format!(
                            "name.{sub} must be a string, got {}",
                            util::type_name(v)
                        ));
                    }
                }
            }
            other => {
                return Err(format!(
                    "name must be an object (givenName, familyName, ...), got {}",
                    util::type_name(other)
                ));
            }
        }
    }
    if let Some(key) = find_key(body, "emails") {
        let emails = match &body[key] {
            Value::Null => return Ok(()),
            Value::Array(a) => a,
            other => {
                return Err(format!(
                    "emails must be an array of objects with a value, got {}",
                    util::type_name(other)
                ));
            }
        };
        let mut primaries = 0;
        for (i, e) in emails.iter().enumerate() {
            let Value::Object(e) = e else {
                return Err(format!(
                    "emails[{i}] must be an object with a value, got {}",
                    util::type_name(e)
                ));
            };
            for (sub, v) in e {
                let ok = match sub.to_ascii_lowercase().as_str() {
                    "value" | "type" | "display" => matches!(v, Value::String(_)),
                    "primary" => matches!(v, Value::Bool(_)),
                    _ => true,
                };
                if !ok {
                    return Err(format!(
                        "emails[{i}].{sub} has the wrong type ({})",
                        util::type_name(v)
                    ));
                }
            }
            let value = find_key(e, "value").and_then(|k| e[k].as_str());
            if value.is_none_or(str::is_empty) {
                return Err(format!("emails[{i}] needs a non-empty string value"));
            }
            if find_key(e, "primary").is_some_and(|k| e[k] == json!(true)) {
                primaries += 1;
            }
        }
        if primaries > 1 {
            return Err("at most one of emails may be primary (RFC 7643 §2.4)".into());
        }
    }
    Ok(())
}

impl Store {
    pub fn seeded(w: &World, salt: u64) -> Store {
        let mut s = Store {
            rng: seed::rng(w.spec.seed, salt),
            users: Resources::default(),
            groups: Resources::default(),
            user_names: HashMap::new(),
        };
        // A person's department is their first team (one pass, not a search per person).
        let mut first_team: HashMap<usize, usize> = HashMap::new();
        for (pi, ti) in &w.team_members {
            first_team.entry(*pi).or_insert(*ti);
        }
        let mut ids = Vec::with_capacity(w.people.len());
        for p in &w.people {
            let id = seed::uuid(&mut s.rng);
            let dept = first_team.get(&p.idx).map(|t| w.teams[*t].name.clone());
            let mut body = json!({
                "schemas": [USER_SCHEMA, ENTERPRISE],
                "userName": p.email,
                "externalId": p.external_id(),
                "name": {"givenName": p.first, "familyName": p.last, "formatted": p.name()},
                "displayName": p.name(),
                "emails": [{"value": p.email, "type": "work", "primary": true}],
                "title": p.role,
                "locale": p.locale,
                "active": p.active,
                ENTERPRISE: {"employeeNumber": format!("{}", 70000 + p.idx)},
            });
            if let Some(d) = dept {
                body[ENTERPRISE]["department"] = json!(d);
            }
            if let Value::Object(body) = body {
                s.user_names.insert(p.email.to_lowercase(), id.clone());
                s.users.insert(
                    id.clone(),
                    Res {
                        body,
                        created: p.created_at,
                        modified: p.created_at,
                        version: 1,
                    },
                );
            }
            ids.push(id);
        }
        let mut members_of: Vec<Vec<Value>> = vec![Vec::new(); w.teams.len()];
        for (pi, ti) in &w.team_members {
            if let Some(members) = members_of.get_mut(*ti) {
                members.push(json!({"value": ids[*pi]}));
            }
        }
        for t in &w.teams {
            let id = seed::uuid(&mut s.rng);
            let members = std::mem::take(&mut members_of[t.idx]);
            let body = json!({
                "schemas": [GROUP_SCHEMA],
                "displayName": t.name,
                "externalId": t.external_id(),
                "members": members,
            });
            if let Value::Object(body) = body {
                s.groups.insert(
                    id,
                    Res {
                        body,
                        created: t.created_at,
                        modified: t.created_at,
                        version: 1,
                    },
                );
            }
        }
        s
    }

    fn coll(&self, k: Kind) -> &Resources {
        match k {
            Kind::User => &self.users,
            Kind::Group => &self.groups,
        }
    }

    fn coll_mut(&mut self, k: Kind) -> &mut Resources {
        match k {
            Kind::User => &mut self.users,
            Kind::Group => &mut self.groups,
        }
    }

    /// The resource as served: stored body plus `id` and `meta`, member displays filled in.
    fn render(&self, k: Kind, id: &str, r: &Res, base: &str) -> Value {
        let mut body = r.body.clone();
        if k == Kind::Group
            && let Some(key) = find_key(&body, "members").cloned()
            && let Some(Value::Array(ms)) = body.get_mut(&key)
        {
            for m in ms.iter_mut() {
                let Some(uid) = m.get("value").and_then(Value::as_str).map(str::to_owned) else {
                    continue;
                };
                if let Some(u) = self.users.get(&uid) {
                    let display = find_key(&u.body, "userName")
                        .map(|k| u.body[k].clone())
                        .unwrap_or(Value::Null);
                    m["display"] = display;
                    m["$ref"] = json!(format!("{base}/Users/{uid}"));
                    m["type"] = json!("User");
                }
            }
        }
        let mut out = Map::new();
        out.insert("id".into(), json!(id));
        out.extend(body);
        out.insert(
            "meta".into(),
            json!({
                "resourceType": k.resource_type(),
                "created": util::iso(r.created),
                "lastModified": util::iso(r.modified),
                "location": format!("{base}/{}/{id}", k.endpoint()),
                "version": format!("W/\"{}\"", r.version),
            }),
        );
        Value::Object(out)
    }

    pub fn dump(&self, settings: &Settings, base: &str) -> Value {
        let _ = settings;
        json!({
            "Users": self.users.iter().map(|(id, r)| self.render(Kind::User, id, r, base)).collect::<Vec<_>>(),
            "Groups": self.groups.iter().map(|(id, r)| self.render(Kind::Group, id, r, base)).collect::<Vec<_>>(),
        })
    }

    /// Checks and normalises a body about to be stored; `except` is the resource's own id.
    fn validate(
        &self,
        k: Kind,
        body: &mut Map<String, Value>,
        except: Option<&str>,
    ) -> Result<(), (StatusCode, &'static str, String)> {
        let bad = |t: &'static str, d: String| (StatusCode::BAD_REQUEST, t, d);
        match k {
            Kind::User => {
                let Some(name) = user_name_key(body).filter(|n| !n.trim().is_empty()) else {
                    return Err(bad(
                        "invalidValue",
                        "userName is required and must be a non-empty string".into(),
                    ));
                };
                if let Some(other) = self.user_names.get(&name)
                    && Some(other.as_str()) != except
                {
                    return Err((
                        StatusCode::CONFLICT,
                        "uniqueness",
                        format!("userName '{name}' is already taken by user {other}"),
                    ));
                }
                if let Some(key) = find_key(body, "active").cloned() {
                    let v = body[&key].clone();
                    body[&key] = match v {
                        Value::Bool(_) | Value::Null => v,
                        Value::String(s) if s.eq_ignore_ascii_case("true") => json!(true),
                        Value::String(s) if s.eq_ignore_ascii_case("false") => json!(false),
                        other => {
                            return Err(bad(
                                "invalidValue",
                                format!(
                                    "active must be a boolean, got {}",
                                    util::type_name(&other)
                                ),
                            ));
                        }
                    };
                }
            }
            Kind::Group => {
                let ok = find_key(body, "displayName")
                    .and_then(|k| body[k].as_str())
                    .is_some_and(|s| !s.trim().is_empty());
                if !ok {
                    return Err(bad(
                        "invalidValue",
                        "displayName is required and must be a non-empty string".into(),
                    ));
                }
                if let Some(key) = find_key(body, "members").cloned() {
                    let members = match &body[&key] {
                        Value::Array(a) => a.clone(),
                        Value::Null => Vec::new(),
                        _ => return Err(bad("invalidValue", "members must be an array".into())),
                    };
                    let mut clean: Vec<Value> = Vec::new();
                    for m in members {
                        let Some(uid) = m.get("value").and_then(Value::as_str) else {
                            return Err(bad(
                                "invalidValue",
                                "every member needs a string value (a user id)".into(),
                            ));
                        };
                        if self.users.get(uid).is_none() {
                            return Err(bad(
                                "invalidValue",
                                format!("member value '{uid}' is not the id of an existing user"),
                            ));
                        }
                        let m = json!({"value": uid});
                        if !clean.contains(&m) {
                            clean.push(m);
                        }
                    }
                    body.insert(key, Value::Array(clean));
                }
            }
        }
        for ro in ["id", "meta"] {
            if let Some(k) = find_key(body, ro).cloned() {
                body.remove(&k);
            }
        }
        check_schemas(k, body).map_err(|d| bad("invalidSyntax", d))?;
        if k == Kind::User {
            check_user_shapes(body).map_err(|d| bad("invalidValue", d))?;
        }
        Ok(())
    }

    fn store(&mut self, k: Kind, id: String, body: Map<String, Value>, prev: Option<Res>) {
        let now = util::now();
        if k == Kind::User {
            if let Some(p) = &prev
                && let Some(old) = user_name_key(&p.body)
            {
                self.user_names.remove(&old);
            }
            if let Some(n) = user_name_key(&body) {
                self.user_names.insert(n, id.clone());
            }
        }
        let res = Res {
            body,
            created: prev.as_ref().map_or(now, |p| p.created),
            modified: now,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        };
        let coll = self.coll_mut(k);
        match coll.by_id.get_mut(&id) {
            Some((_, r)) => *r = res,
            None => coll.insert(id, res),
        }
    }
}

struct Ctx {
    vendor: Vendor,
    base: String,
    stringly: bool,
}

fn ctx(sh: &Shared, vendor: Vendor, headers: &HeaderMap) -> Ctx {
    Ctx {
        vendor,
        base: format!("{}{}", util::origin(headers), vendor.prefix()),
        stringly: sh.settings.scim_stringly,
    }
}

/// The string-typed quirk: `true` → `"True"`, `5` → `"5"`.
fn stringify(v: &mut Value) {
    match v {
        Value::Bool(b) => *v = json!(if *b { "True" } else { "False" }),
        Value::Number(n) => *v = json!(n.to_string()),
        Value::Array(a) => a.iter_mut().for_each(stringify),
        Value::Object(o) => o.values_mut().for_each(stringify),
        _ => {}
    }
}

fn answer(c: &Ctx, status: StatusCode, mut body: Value) -> Response {
    if c.stringly {
        stringify(&mut body);
    }
    let etag = body
        .get("meta")
        .and_then(|m| m.get("version"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut r = reply::scim(status, &body);
    if let Some(e) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        r.headers_mut().insert(header::ETAG, e);
    }
    r
}

fn scim_err(c: &Ctx, status: StatusCode, scim_type: &str, detail: &str) -> Response {
    reply::error(c.vendor, status, scim_type, detail)
}

fn not_found(c: &Ctx, k: Kind, id: &str) -> Response {
    scim_err(
        c,
        StatusCode::NOT_FOUND,
        "",
        &format!("{} {id} not found", k.resource_type()),
    )
}

/// Top-level attribute selection (`attributes` / `excludedAttributes`); `id` always stays.
fn project(v: &mut Value, attributes: &[String], excluded: &[String]) {
    let Value::Object(o) = v else { return };
    if !attributes.is_empty() {
        let keep = |k: &str| {
            k == "id"
                || k == "schemas"
                || attributes.iter().any(|a| {
                    let a = a.split('.').next().unwrap_or(a);
                    a.eq_ignore_ascii_case(k)
                        || (a.len() > 4
                            && a.to_ascii_lowercase().starts_with(&k.to_ascii_lowercase()))
                })
        };
        o.retain(|k, _| keep(k));
    }
    for e in excluded {
        if !e.eq_ignore_ascii_case("id")
            && let Some(k) = find_key(o, e).cloned()
        {
            o.remove(&k);
        }
    }
}

struct ListParams {
    filter: Option<String>,
    start: usize,
    count: Option<usize>,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

fn list_params(pairs: &[(String, String)]) -> Result<ListParams, String> {
    let num = |k: &str| -> Result<Option<i64>, String> {
        match util::first(pairs, k) {
            None => Ok(None),
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("{k} must be an integer, got '{s}'")),
        }
    };
    Ok(ListParams {
        filter: util::first(pairs, "filter").map(str::to_owned),
        start: num("startIndex")?.unwrap_or(1).max(1) as usize,
        count: num("count")?.map(|c| c.max(0) as usize),
        attributes: util::all(pairs, "attributes"),
        excluded: util::all(pairs, "excludedAttributes"),
    })
}

fn list(sh: &Shared, c: &Ctx, k: Kind, p: ListParams) -> Response {
    if p.filter.is_some() && !sh.settings.scim_filter {
        return scim_err(
            c,
            StatusCode::BAD_REQUEST,
            "invalidFilter",
            "filtering is not supported (ServiceProviderConfig filter.supported is false)",
        );
    }
    let filter = match p.filter.as_deref().map(scim_filter::parse).transpose() {
        Ok(f) => f,
        Err(e) => return scim_err(c, StatusCode::BAD_REQUEST, "invalidFilter", &e),
    };
    let cap = sh.settings.scim_page_cap;
    let count = p.count.unwrap_or(sh.settings.scim_default_count).min(cap);
    let st = sh.scim_store(c.vendor).lock();
    let coll = st.coll(k);
    let (total, page): (usize, Vec<(&String, &Res)>) = match &filter {
        None => (
            coll.len(),
            coll.iter().skip(p.start - 1).take(count).collect(),
        ),
        Some(f) => {
            // `userName eq` is the lookup every IdP and the target make: answer it from the index.
            let indexed = match (k, scim_filter::user_name_eq(f)) {
                (Kind::User, Some(name)) => Some(
                    st.user_names
                        .get(&name.to_lowercase())
                        .and_then(|id| coll.by_id.get_key_value(id))
                        .map(|(id, (_, r))| (id, r))
                        .into_iter()
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            };
            let hits: Vec<(&String, &Res)> = match indexed {
                Some(h) => h,
                None => coll
                    .iter()
                    .filter(|(_, r)| {
                        let meta = json!({"created": util::iso(r.created), "lastModified": util::iso(r.modified)});
                        scim_filter::matches_with_meta(f, &r.body, &meta)
                    })
                    .collect(),
            };
            let total = hits.len();
            (
                total,
                hits.into_iter().skip(p.start - 1).take(count).collect(),
            )
        }
    };
    let resources: Vec<Value> = page
        .iter()
        .map(|(id, r)| {
            let mut v = st.render(k, id, r, &c.base);
            project(&mut v, &p.attributes, &p.excluded);
            v
        })
        .collect();
    let body = json!({
        "schemas": [LIST],
        "totalResults": total,
        "startIndex": p.start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    answer(c, StatusCode::OK, body)
}

fn get_one(sh: &Shared, c: &Ctx, k: Kind, id: &str, q: Option<&str>) -> Response {
    let pairs = util::query_pairs(q);
    let st = sh.scim_store(c.vendor).lock();
    match st.coll(k).get(id) {
        Some(r) => {
            let mut v = st.render(k, id, r, &c.base);
            project(
                &mut v,
                &util::all(&pairs, "attributes"),
                &util::all(&pairs, "excludedAttributes"),
            );
            answer(c, StatusCode::OK, v)
        }
        None => not_found(c, k, id),
    }
}

fn body_object(c: &Ctx, body: &[u8]) -> Result<Map<String, Value>, Response> {
    match util::parse_json::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(scim_err(
            c,
            StatusCode::BAD_REQUEST,
            "invalidSyntax",
            &format!(
                "the body must be a JSON object, got {}",
                util::type_name(&other)
            ),
        )),
        Err(e) => Err(scim_err(c, StatusCode::BAD_REQUEST, "invalidSyntax", &e)),
    }
}

fn create(sh: &Shared, c: &Ctx, k: Kind, body: &[u8]) -> Response {
    let mut obj = match body_object(c, body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if k == Kind::User && find_key(&obj, "active").is_none() {
        obj.insert("active".into(), json!(true));
    }
    let mut st = sh.scim_store(c.vendor).lock();
    if let Err((s, t, d)) = st.validate(k, &mut obj, None) {
        return scim_err(c, s, t, &d);
    }
    let id = seed::uuid(&mut st.rng);
    st.store(k, id.clone(), obj, None);
    let Some(r) = st.coll(k).get(&id) else {
        return not_found(c, k, &id);
    };
    let v = st.render(k, &id, r, &c.base);
    let mut resp = answer(c, StatusCode::CREATED, v);
    if let Ok(loc) = HeaderValue::from_str(&format!("{}/{}/{id}", c.base, k.endpoint())) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// `If-Match` against the current weak version; `Err` is the 412 to send.
fn check_if_match(c: &Ctx, headers: &HeaderMap, r: &Res) -> Result<(), Response> {
    let Some(want) = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let have = format!("W/\"{}\"", r.version);
    if want.trim() == "*" || want.split(',').any(|w| w.trim() == have) {
        return Ok(());
    }
    Err(scim_err(
        c,
        StatusCode::PRECONDITION_FAILED,
        "",
        &format!("resource version is {have}, If-Match asked for {want}"),
    ))
}

fn put(sh: &Shared, c: &Ctx, headers: &HeaderMap, k: Kind, id: &str, body: &[u8]) -> Response {
    let mut obj = match body_object(c, body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let mut st = sh.scim_store(c.vendor).lock();
    let Some(prev) = st.coll(k).get(id).cloned() else {
        return not_found(c, k, id);
    };
    if let Err(r) = check_if_match(c, headers, &prev) {
        return r;
    }
    if let Some(kid) = find_key(&obj, "id")
        && obj[kid].as_str().is_some_and(|x| x != id)
    {
        return scim_err(
            c,
            StatusCode::BAD_REQUEST,
            "mutability",
            "'id' is read-only",
        );
    }
    if let Err((s, t, d)) = st.validate(k, &mut obj, Some(id)) {
        return scim_err(c, s, t, &d);
    }
    st.store(k, id.to_owned(), obj, Some(prev));
    match st.coll(k).get(id) {
        Some(r) => {
            let v = st.render(k, id, r, &c.base);
            answer(c, StatusCode::OK, v)
        }
        None => not_found(c, k, id),
    }
}

fn patch(
    sh: &Shared,
    c: &Ctx,
    headers: &HeaderMap,
    k: Kind,
    id: &str,
    body: &[u8],
    q: Option<&str>,
) -> Response {
    if !sh.settings.scim_patch {
        return scim_err(
            c,
            StatusCode::NOT_IMPLEMENTED,
            "",
            "PATCH is not supported (ServiceProviderConfig patch.supported is false)",
        );
    }
    let obj = match body_object(c, body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    let ops = match find_key(&obj, "Operations").map(|k| &obj[k]) {
        Some(Value::Array(ops)) if !ops.is_empty() => ops.clone(),
        _ => {
            return scim_err(
                c,
                StatusCode::BAD_REQUEST,
                "invalidSyntax",
                "a PatchOp needs a non-empty Operations array",
            );
        }
    };
    // RFC 7644 §3.5.2: the body's schemas is required and holds the PatchOp URN.
    let is_patch_op = match find_key(&obj, "schemas").map(|k| &obj[k]) {
        Some(Value::Array(s)) => s.iter().any(|x| x.as_str() == Some(PATCH_OP)),
        _ => false,
    };
    if !is_patch_op {
        return scim_err(
            c,
            StatusCode::BAD_REQUEST,
            "invalidSyntax",
            &format!("a PATCH body needs schemas [{PATCH_OP:?}] (RFC 7644 §3.5.2)"),
        );
    }
    if let Some(max) = sh.settings.scim_max_patch_members {
        let changed = member_values(&ops);
        if changed > max {
            return scim_err(
                c,
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
                &format!("a PATCH may change at most {max} members, this one changes {changed}"),
            );
        }
    }
    let mut st = sh.scim_store(c.vendor).lock();
    let Some(prev) = st.coll(k).get(id).cloned() else {
        return not_found(c, k, id);
    };
    if let Err(r) = check_if_match(c, headers, &prev) {
        return r;
    }
    // Every op runs on a copy; the copy is kept only if all of them (and validation) pass.
    let mut work = prev.body.clone();
    for (i, op) in ops.into_iter().enumerate() {
        let Value::Object(mut op) = op else {
            return scim_err(
                c,
                StatusCode::BAD_REQUEST,
                "invalidSyntax",
                &format!("Operations[{i}] must be an object"),
            );
        };
        let name = find_key(&op, "op")
            .and_then(|k| op[k].as_str())
            .unwrap_or_default()
            .to_owned();
        let path = find_key(&op, "path")
            .and_then(|k| op[k].as_str())
            .map(str::to_owned);
        let value = find_key(&op, "value").cloned().and_then(|k| op.remove(&k));
        if let Err(e) = scim_patch::apply_op(&mut work, &name, path.as_deref(), value) {
            return scim_err(
                c,
                StatusCode::BAD_REQUEST,
                e.scim_type,
                &format!("Operations[{i}]: {}", e.detail),
            );
        }
    }
    // A PATCH that adds an extension's attribute makes the server list the extension in the
    // resource's schemas (a PatchOp cannot name it; a POST or PUT must).
    if k == Kind::User
        && find_key(&work, ENTERPRISE).is_some()
        && let Some(Value::Array(list)) = find_key(&work, "schemas")
            .cloned()
            .and_then(|key| work.get_mut(&key))
        && !list.iter().any(|u| {
            u.as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE))
        })
    {
        list.push(json!(ENTERPRISE));
    }
    if let Err((s, t, d)) = st.validate(k, &mut work, Some(id)) {
        return scim_err(c, s, t, &d);
    }
    st.store(k, id.to_owned(), work, Some(prev));
    let Some(r) = st.coll(k).get(id) else {
        return not_found(c, k, id);
    };
    let v = st.render(k, id, r, &c.base);
    let pairs = util::query_pairs(q);
    if sh.settings.scim_patch_no_content && util::first(&pairs, "attributes").is_none() {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Ok(e) = HeaderValue::from_str(&format!("W/\"{}\"", r.version)) {
            resp.headers_mut().insert(header::ETAG, e);
        }
        return resp;
    }
    let mut v = v;
    project(
        &mut v,
        &util::all(&pairs, "attributes"),
        &util::all(&pairs, "excludedAttributes"),
    );
    answer(c, StatusCode::OK, v)
}

/// How many member values a PATCH's operations touch: each `members[…]` path counts one, each
/// value of a `members` add, replace or remove counts one.
fn member_values(ops: &[Value]) -> usize {
    ops.iter()
        .filter_map(Value::as_object)
        .map(|op| {
            let path = find_key(op, "path")
                .and_then(|k| op[k].as_str())
                .unwrap_or_default();
            if !path.to_ascii_lowercase().starts_with("members") {
                return 0;
            }
            match find_key(op, "value").map(|k| &op[k]) {
                Some(Value::Array(values)) => values.len(),
                _ => 1,
            }
        })
        .sum()
}

fn delete(sh: &Shared, c: &Ctx, headers: &HeaderMap, k: Kind, id: &str) -> Response {
    let mut st = sh.scim_store(c.vendor).lock();
    let Some(prev) = st.coll(k).get(id).cloned() else {
        return not_found(c, k, id);
    };
    if let Err(r) = check_if_match(c, headers, &prev) {
        return r;
    }
    match k {
        Kind::User => {
            st.remove_user(id);
        }
        _ => {
            st.coll_mut(k).remove(id);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

impl Store {
    /// Removes a user and its group memberships, as `DELETE /Users/{id}` does; false when absent.
    pub(crate) fn remove_user(&mut self, id: &str) -> bool {
        let Some(prev) = self.coll_mut(Kind::User).remove(id) else {
            return false;
        };
        if let Some(n) = user_name_key(&prev.body) {
            self.user_names.remove(&n);
        }
        let now = util::now();
        for (_, g) in self.groups.by_id.values_mut() {
            if let Some(key) = find_key(&g.body, "members").cloned()
                && let Some(Value::Array(ms)) = g.body.get_mut(&key)
            {
                let before = ms.len();
                ms.retain(|m| m.get("value").and_then(Value::as_str) != Some(id));
                if ms.len() != before {
                    g.modified = now;
                    g.version += 1;
                }
            }
        }
        true
    }
}

fn search(sh: &Shared, c: &Ctx, k: Kind, body: &[u8]) -> Response {
    let obj = match body_object(c, body) {
        Ok(o) => o,
        Err(r) => return r,
    };
    if let Some(Value::Array(s)) = obj.get("schemas")
        && !s.iter().any(|x| x.as_str() == Some(SEARCH))
    {
        return scim_err(
            c,
            StatusCode::BAD_REQUEST,
            "invalidSyntax",
            &format!("schemas must contain {SEARCH}"),
        );
    }
    let strings = |key: &str| -> Vec<String> {
        obj.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let p = ListParams {
        filter: obj.get("filter").and_then(Value::as_str).map(str::to_owned),
        start: obj
            .get("startIndex")
            .and_then(Value::as_i64)
            .unwrap_or(1)
            .max(1) as usize,
        count: obj
            .get("count")
            .and_then(Value::as_i64)
            .map(|c| c.max(0) as usize),
        attributes: strings("attributes"),
        excluded: strings("excludedAttributes"),
    };
    list(sh, c, k, p)
}

macro_rules! handlers {
    ($kind:expr, $list:ident, $create:ident, $search:ident, $get:ident, $put:ident, $patch:ident, $delete:ident) => {
        async fn $list(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            RawQuery(q): RawQuery,
        ) -> Response {
            let c = ctx(&sh, v, &headers);
            match list_params(&util::query_pairs(q.as_deref())) {
                Ok(p) => list(&sh, &c, $kind, p),
                Err(e) => scim_err(&c, StatusCode::BAD_REQUEST, "invalidValue", &e),
            }
        }
        async fn $create(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            create(&sh, &ctx(&sh, v, &headers), $kind, &body)
        }
        async fn $search(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            search(&sh, &ctx(&sh, v, &headers), $kind, &body)
        }
        async fn $get(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            Path(id): Path<String>,
            RawQuery(q): RawQuery,
        ) -> Response {
            get_one(&sh, &ctx(&sh, v, &headers), $kind, &id, q.as_deref())
        }
        async fn $put(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            Path(id): Path<String>,
            body: Bytes,
        ) -> Response {
            put(&sh, &ctx(&sh, v, &headers), &headers, $kind, &id, &body)
        }
        async fn $patch(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            Path(id): Path<String>,
            RawQuery(q): RawQuery,
            body: Bytes,
        ) -> Response {
            patch(
                &sh,
                &ctx(&sh, v, &headers),
                &headers,
                $kind,
                &id,
                &body,
                q.as_deref(),
            )
        }
        async fn $delete(
            State(sh): State<Arc<Shared>>,
            Extension(v): Extension<Vendor>,
            headers: HeaderMap,
            Path(id): Path<String>,
        ) -> Response {
            delete(&sh, &ctx(&sh, v, &headers), &headers, $kind, &id)
        }
    };
}

handlers!(
    Kind::User,
    list_users,
    create_user,
    search_users,
    get_user,
    put_user,
    patch_user,
    delete_user
);
handlers!(
    Kind::Group,
    list_groups,
    create_group,
    search_groups,
    get_group,
    put_group,
    patch_group,
    delete_group
);

async fn service_provider_config(
    State(sh): State<Arc<Shared>>,
    Extension(v): Extension<Vendor>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&sh, v, &headers);
    let s = &sh.settings;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/roster/roster/blob/main/docs/sandbox.md",
        "patch": {"supported": s.scim_patch},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": s.scim_filter, "maxResults": s.scim_page_cap},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "pagination": {
            "cursor": false, "index": true, "defaultPaginationMethod": "index",
            "defaultPageSize": s.scim_default_count, "maxPageSize": s.scim_page_cap,
        },
        "authenticationSchemes": [
            {"type": "oauthbearertoken", "name": "OAuth Bearer Token", "description": "Authentication with a bearer token", "primary": true},
            {"type": "httpbasic", "name": "HTTP Basic", "description": "Authentication with a username and password"},
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", c.base)},
    });
    answer(&c, StatusCode::OK, body)
}

async fn resource_types(
    State(sh): State<Arc<Shared>>,
    Extension(v): Extension<Vendor>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&sh, v, &headers);
    let rt = |name: &str, ep: &str, schema: &str, ext: bool| {
        let mut r = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": name, "name": name, "endpoint": format!("/{ep}"), "schema": schema,
            "meta": {"resourceType": "ResourceType", "location": format!("{}/ResourceTypes/{name}", c.base)},
        });
        if ext {
            r["schemaExtensions"] = json!([{"schema": ENTERPRISE, "required": false}]);
        }
        r
    };
    let list = vec![
        rt("User", "Users", USER_SCHEMA, true),
        rt("Group", "Groups", GROUP_SCHEMA, false),
    ];
    answer(
        &c,
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": 2, "startIndex": 1, "itemsPerPage": 2, "Resources": list}),
    )
}

async fn schemas(
    State(sh): State<Arc<Shared>>,
    Extension(v): Extension<Vendor>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&sh, v, &headers);
    let attr = |name: &str,
                ty: &str,
                multi: bool,
                unique: &str,
                case_exact: bool,
                mutability: &str| {
        json!({"name": name, "type": ty, "multiValued": multi, "required": name == "userName",
               "caseExact": case_exact, "mutability": mutability, "returned": "default", "uniqueness": unique})
    };
    let user = json!({
        "id": USER_SCHEMA, "name": "User", "description": "User Account",
        "attributes": [
            attr("userName", "string", false, "server", false, "readWrite"),
            attr("externalId", "string", false, "none", true, "readWrite"),
            attr("name", "complex", false, "none", false, "readWrite"),
            attr("displayName", "string", false, "none", false, "readWrite"),
            attr("emails", "complex", true, "none", false, "readWrite"),
            attr("active", "boolean", false, "none", false, "readWrite"),
            attr("groups", "complex", true, "none", false, "readOnly"),
        ],
    });
    let group = json!({
        "id": GROUP_SCHEMA, "name": "Group", "description": "Group",
        "attributes": [
            attr("displayName", "string", false, "none", false, "readWrite"),
            attr("externalId", "string", false, "none", true, "readWrite"),
            attr("members", "complex", true, "none", false, "readWrite"),
        ],
    });
    answer(
        &c,
        StatusCode::OK,
        json!({"schemas": [LIST], "totalResults": 2, "startIndex": 1, "itemsPerPage": 2, "Resources": [user, group]}),
    )
}

async fn bulk(
    State(sh): State<Arc<Shared>>,
    Extension(v): Extension<Vendor>,
    headers: HeaderMap,
) -> Response {
    let c = ctx(&sh, v, &headers);
    scim_err(
        &c,
        StatusCode::NOT_IMPLEMENTED,
        "",
        "bulk operations are not supported (ServiceProviderConfig bulk.supported is false)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stringify_quirk() {
        let mut v = json!({"totalResults": 5, "Resources": [{"active": true, "x": "y"}]});
        stringify(&mut v);
        assert_eq!(
            v,
            json!({"totalResults": "5", "Resources": [{"active": "True", "x": "y"}]})
        );
    }
}
