//! The SCIM endpoints: list, search, get, create, replace, patch and delete of users and
//! groups, with attribute projection, `If-Match`, and the string-typed and 204 quirks.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, FromRequestParts, Path, RawQuery};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::discovery::{bulk, resource_types, schemas, service_provider_config};
use super::filter::{self, find_key};
use super::store::{Kind, Res, Store};
use super::{ENTERPRISE, LIST, PATCH_OP, SEARCH, patch};
use crate::seed;
use crate::state::Shared;
use crate::{Vendor, reply, util};

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

pub(super) struct Ctx {
    vendor: Vendor,
    pub(super) base: String,
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

pub(super) fn answer(c: &Ctx, status: StatusCode, mut body: Value) -> Response {
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

pub(super) fn scim_err(c: &Ctx, status: StatusCode, scim_type: &str, detail: &str) -> Response {
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
    let filter = match p.filter.as_deref().map(filter::parse).transpose() {
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
            let indexed = match (k, filter::user_name_eq(f)) {
                (Kind::User, Some(name)) => Some(
                    st.user_names
                        .get(&name.to_lowercase())
                        .and_then(|id| coll.get_key_value(id))
                        .into_iter()
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            };
            // The server's `meta` is rendered for each resource only when the filter reads it:
            // rendering it (two timestamps formatted into a new JSON object) for every user on
            // every `externalId eq` lookup made a lookup cost ~1 µs a user, and a 10,000-user
            // kill -9 trial spend minutes in the sandbox.
            let with_meta = filter::mentions_meta(f);
            let hits: Vec<(&String, &Res)> = match indexed {
                Some(h) => h,
                None => coll
                    .iter()
                    .filter(|(_, r)| {
                        if with_meta {
                            filter::matches_with_meta(f, &r.body, &r.meta_times())
                        } else {
                            filter::matches_obj(f, &r.body)
                        }
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

/// The resource as it is before a change: 404 when there is none, 412 when `If-Match` names
/// another version.
fn current(st: &Store, c: &Ctx, headers: &HeaderMap, k: Kind, id: &str) -> Result<Res, Response> {
    let prev = st
        .coll(k)
        .get(id)
        .cloned()
        .ok_or_else(|| not_found(c, k, id))?;
    check_if_match(c, headers, &prev)?;
    Ok(prev)
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
    let prev = match current(&st, c, headers, k, id) {
        Ok(prev) => prev,
        Err(r) => return r,
    };
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
    let ops = match body_object(c, body).and_then(|obj| patch_ops(sh, c, &obj)) {
        Ok(ops) => ops,
        Err(r) => return r,
    };
    let mut st = sh.scim_store(c.vendor).lock();
    let prev = match current(&st, c, headers, k, id) {
        Ok(prev) => prev,
        Err(r) => return r,
    };
    // Every op runs on a copy; the copy is kept only if all of them (and validation) pass.
    let mut work = prev.body.clone();
    if let Err(r) = apply_ops(c, &mut work, ops) {
        return r;
    }
    if k == Kind::User {
        list_enterprise(&mut work);
    }
    if let Err((s, t, d)) = st.validate(k, &mut work, Some(id)) {
        return scim_err(c, s, t, &d);
    }
    st.store(k, id.to_owned(), work, Some(prev));
    let Some(r) = st.coll(k).get(id) else {
        return not_found(c, k, id);
    };
    let v = st.render(k, id, r, &c.base);
    patched(sh, c, v, r.version, q)
}

/// The operations of a PatchOp body: a non-empty `Operations`, `schemas` holding the PatchOp
/// URN (RFC 7644 §3.5.2), and no more member changes than the settings allow.
fn patch_ops(sh: &Shared, c: &Ctx, obj: &Map<String, Value>) -> Result<Vec<Value>, Response> {
    let syntax = |detail: &str| scim_err(c, StatusCode::BAD_REQUEST, "invalidSyntax", detail);
    let ops = match find_key(obj, "Operations").map(|k| &obj[k]) {
        Some(Value::Array(ops)) if !ops.is_empty() => ops.clone(),
        _ => return Err(syntax("a PatchOp needs a non-empty Operations array")),
    };
    let is_patch_op = match find_key(obj, "schemas").map(|k| &obj[k]) {
        Some(Value::Array(s)) => s.iter().any(|x| x.as_str() == Some(PATCH_OP)),
        _ => false,
    };
    if !is_patch_op {
        return Err(syntax(&format!(
            "a PATCH body needs schemas [{PATCH_OP:?}] (RFC 7644 §3.5.2)"
        )));
    }
    if let Some(max) = sh.settings.scim_max_patch_members {
        let changed = member_values(&ops);
        if changed > max {
            return Err(scim_err(
                c,
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
                &format!("a PATCH may change at most {max} members, this one changes {changed}"),
            ));
        }
    }
    Ok(ops)
}

/// Runs each operation on `work` in order; the first that fails answers 400, naming it.
fn apply_ops(c: &Ctx, work: &mut Map<String, Value>, ops: Vec<Value>) -> Result<(), Response> {
    for (i, op) in ops.into_iter().enumerate() {
        let Value::Object(mut op) = op else {
            return Err(scim_err(
                c,
                StatusCode::BAD_REQUEST,
                "invalidSyntax",
                &format!("Operations[{i}] must be an object"),
            ));
        };
        let name = find_key(&op, "op")
            .and_then(|k| op[k].as_str())
            .unwrap_or_default()
            .to_owned();
        let path = find_key(&op, "path")
            .and_then(|k| op[k].as_str())
            .map(str::to_owned);
        let value = find_key(&op, "value").cloned().and_then(|k| op.remove(&k));
        if let Err(e) = patch::apply_op(work, &name, path.as_deref(), value) {
            return Err(scim_err(
                c,
                StatusCode::BAD_REQUEST,
                e.scim_type,
                &format!("Operations[{i}]: {}", e.detail),
            ));
        }
    }
    Ok(())
}

/// A PATCH that adds an extension's attribute makes the server list the extension in the
/// resource's schemas (a PatchOp cannot name it; a POST or PUT must).
fn list_enterprise(work: &mut Map<String, Value>) {
    if find_key(work, ENTERPRISE).is_some()
        && let Some(Value::Array(list)) = find_key(work, "schemas")
            .cloned()
            .and_then(|key| work.get_mut(&key))
        && !list.iter().any(|u| {
            u.as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(ENTERPRISE))
        })
    {
        list.push(json!(ENTERPRISE));
    }
}

/// The answer to a PATCH that was applied: 204 with the new ETag under the no-content quirk
/// (unless `attributes` asks for some), else the resource, projected.
fn patched(sh: &Shared, c: &Ctx, mut v: Value, version: u64, q: Option<&str>) -> Response {
    let pairs = util::query_pairs(q);
    if sh.settings.scim_patch_no_content && util::first(&pairs, "attributes").is_none() {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if let Ok(e) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
            resp.headers_mut().insert(header::ETAG, e);
        }
        return resp;
    }
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
    if let Err(r) = current(&st, c, headers, k, id) {
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

/// What every SCIM handler starts from: the shared state, the request's headers, and the
/// answer context for the provider asked (the request layer puts the vendor in the request's
/// extensions).
pub(super) struct Scim {
    pub(super) sh: Arc<Shared>,
    pub(super) c: Ctx,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Shared>> for Scim {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, sh: &Arc<Shared>) -> Result<Self, Response> {
        let Extension(v) = Extension::<Vendor>::from_request_parts(parts, sh)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Scim {
            c: ctx(sh, v, &parts.headers),
            sh: sh.clone(),
            headers: parts.headers.clone(),
        })
    }
}

macro_rules! handlers {
    ($kind:expr, $list:ident, $create:ident, $search:ident, $get:ident, $put:ident, $patch:ident, $delete:ident) => {
        async fn $list(s: Scim, RawQuery(q): RawQuery) -> Response {
            match list_params(&util::query_pairs(q.as_deref())) {
                Ok(p) => list(&s.sh, &s.c, $kind, p),
                Err(e) => scim_err(&s.c, StatusCode::BAD_REQUEST, "invalidValue", &e),
            }
        }
        async fn $create(s: Scim, body: Bytes) -> Response {
            create(&s.sh, &s.c, $kind, &body)
        }
        async fn $search(s: Scim, body: Bytes) -> Response {
            search(&s.sh, &s.c, $kind, &body)
        }
        async fn $get(s: Scim, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
            get_one(&s.sh, &s.c, $kind, &id, q.as_deref())
        }
        async fn $put(s: Scim, Path(id): Path<String>, body: Bytes) -> Response {
            put(&s.sh, &s.c, &s.headers, $kind, &id, &body)
        }
        async fn $patch(
            s: Scim,
            Path(id): Path<String>,
            RawQuery(q): RawQuery,
            body: Bytes,
        ) -> Response {
            let q = q.as_deref();
            patch(&s.sh, &s.c, &s.headers, $kind, &id, &body, q)
        }
        async fn $delete(s: Scim, Path(id): Path<String>) -> Response {
            delete(&s.sh, &s.c, &s.headers, $kind, &id)
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
