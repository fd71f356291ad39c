//! Appcues' routes: profiles, events, groups, imports and segments, each under the account
//! id, and the parsing of uploaded NDJSON and CSV.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, Multipart, Path, RawPathParams, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::V;
use super::store::{Segment, job_json, profile};
use crate::jobs::{self, Job, Owner};
use crate::seed;
use crate::state::Shared;
use crate::{reply, util};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    let a = "/v2/accounts/{account}";
    // Imports and segment uploads check their own (larger) limits.
    let uploads = Router::new()
        .route(&format!("{a}/import/profiles"), post(import))
        .route(&format!("{a}/import/users"), post(import))
        .route(
            &format!("{a}/segments/{{id}}/add_user_ids"),
            post(add_user_ids),
        )
        .route(
            &format!("{a}/segments/{{id}}/remove_user_ids"),
            post(remove_user_ids),
        )
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route(
            &format!("{a}/users/{{id}}/profile"),
            get(get_profile).patch(patch_profile).delete(delete_profile),
        )
        .route(
            &format!("{a}/users/{{id}}/events"),
            get(get_events).post(post_event),
        )
        .route(
            &format!("{a}/groups/{{id}}/profile"),
            get(get_group).patch(patch_group),
        )
        .route(&format!("{a}/groups/{{id}}/users"), post(group_users))
        .route(&format!("{a}/jobs/{{id}}"), get(get_job))
        .route(
            &format!("{a}/segments"),
            get(list_segments).post(create_segment),
        )
        .route(&format!("{a}/segments/{{id}}"), get(get_segment))
        .merge(uploads)
}

fn ok() -> Response {
    reply::ok(&json!({"status": 200, "title": "OK"}))
}

fn bad(msg: &str) -> Response {
    reply::bad_request(V, msg)
}

/// Every path carries the account id: a handler that takes this has had it checked against the
/// credentials' account; another account's is refused with 403.
struct OwnAccount;

impl FromRequestParts<Arc<Shared>> for OwnAccount {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, sh: &Arc<Shared>) -> Result<Self, Response> {
        let params = RawPathParams::from_request_parts(parts, sh)
            .await
            .map_err(IntoResponse::into_response)?;
        let account = params
            .iter()
            .find_map(|(k, v)| (k == "account").then_some(v))
            .unwrap_or_default();
        if account == sh.settings.credentials.appcues_account_id {
            return Ok(OwnAccount);
        }
        Err(reply::error(
            V,
            StatusCode::FORBIDDEN,
            "",
            &format!("these credentials do not give access to account {account}"),
        ))
    }
}

/// The properties a PATCH sets: a flat object of scalars, without the record's own id key.
fn properties_of(body: &[u8], id_key: &str) -> Result<Map<String, Value>, Response> {
    let mut props = flat_properties(body).map_err(|e| bad(&e))?;
    props.remove(id_key);
    Ok(props)
}

/// A flat object of scalar properties.
fn flat_properties(body: &[u8]) -> Result<Map<String, Value>, String> {
    let v: Value = util::parse_json(body)?;
    let Value::Object(o) = v else {
        return Err(format!(
            "the body must be a JSON object, got {}",
            util::type_name(&v)
        ));
    };
    if let Some((k, x)) = o.iter().find(|(_, x)| !util::is_scalar(x)) {
        return Err(format!(
            "property '{k}' must be a string, number, boolean or null, got {}",
            util::type_name(x)
        ));
    }
    Ok(o)
}

async fn get_profile(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
) -> Response {
    let st = sh.appcues.lock();
    match st.users.get(&id) {
        Some(p) => reply::ok(&profile(&id, "user_id", p)),
        None => reply::not_found(V, &format!("user {id} not found")),
    }
}

async fn patch_profile(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let props = match properties_of(&body, "user_id") {
        Ok(p) => p,
        Err(r) => return r,
    };
    sh.appcues.lock().users.entry(id).or_default().extend(props);
    ok()
}

async fn delete_profile(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
) -> Response {
    let mut st = sh.appcues.lock();
    if st.users.remove(&id).is_none() {
        return reply::not_found(V, &format!("user {id} not found"));
    }
    st.events.remove(&id);
    StatusCode::NO_CONTENT.into_response()
}

async fn get_events(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
) -> Response {
    let st = sh.appcues.lock();
    reply::ok(&json!(st.events.get(&id).cloned().unwrap_or_default()))
}

async fn post_event(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ev: Value = match util::parse_json(&body) {
        Ok(v) => v,
        Err(e) => return bad(&e),
    };
    let Value::Object(o) = &ev else {
        return bad("the body must be a JSON object");
    };
    if o.get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return bad("name is required");
    }
    if let Some(k) = o.keys().find(|k| {
        !matches!(
            k.as_str(),
            "name" | "timestamp" | "attributes" | "group_id" | "request_id"
        )
    }) {
        return bad(&format!(
            "unknown field '{k}': expected name, timestamp, attributes, group_id"
        ));
    }
    if let Some(a) = o.get("attributes")
        && !(a.is_object() || a.is_null())
    {
        return bad("attributes must be an object");
    }
    let mut ev = ev;
    if ev.get("timestamp").is_none() {
        ev["timestamp"] = json!(util::iso(util::now()));
    }
    sh.appcues.lock().events.entry(id).or_default().push(ev);
    ok()
}

async fn get_group(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
) -> Response {
    let st = sh.appcues.lock();
    match st.groups.get(&id) {
        Some(g) => reply::ok(&profile(&id, "group_id", &g.properties)),
        None => reply::not_found(V, &format!("group {id} not found")),
    }
}

async fn patch_group(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let props = match properties_of(&body, "group_id") {
        Ok(p) => p,
        Err(r) => return r,
    };
    sh.appcues
        .lock()
        .groups
        .entry(id)
        .or_default()
        .properties
        .extend(props);
    ok()
}

async fn group_users(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let v: Value = match util::parse_json(&body) {
        Ok(v) => v,
        Err(e) => return bad(&e),
    };
    let Some(ids) = v.get("user_ids").and_then(Value::as_array) else {
        return bad("user_ids must be an array of user ids");
    };
    let Some(ids) = ids.iter().map(util::id_string).collect::<Option<Vec<_>>>() else {
        return bad("user_ids: every id must be a non-empty string");
    };
    if ids.is_empty() {
        return bad("user_ids must not be empty");
    }
    sh.appcues
        .lock()
        .groups
        .entry(id)
        .or_default()
        .user_ids
        .extend(ids);
    StatusCode::NO_CONTENT.into_response()
}

/// The uploaded file: a raw body, or the multipart field `file`; with its name and size.
async fn read_upload(
    sh: &Shared,
    req: Request,
) -> Result<(Bytes, String, Option<String>), Response> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let too_large = |limit: usize| {
        reply::error(
            V,
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
            &format!("the upload exceeds the limit of {limit} bytes"),
        )
    };
    if ct.starts_with("multipart/form-data") {
        let limit = sh.settings.appcues_file_limit;
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, limit + 64 * 1024)
            .await
            .map_err(|_| too_large(limit))?;
        let req = Request::from_parts(parts, Body::from(bytes));
        let mut mp = Multipart::from_request(req, &())
            .await
            .map_err(|e| bad(&format!("bad multipart body: {e}")))?;
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| bad(&format!("bad multipart body: {e}")))?
        {
            if field.name() != Some("file") {
                continue;
            }
            let name = field.file_name().unwrap_or("upload").to_owned();
            let fct = field.content_type().map(str::to_ascii_lowercase);
            let data = field
                .bytes()
                .await
                .map_err(|e| bad(&format!("bad multipart body: {e}")))?;
            if data.len() > limit {
                return Err(too_large(limit));
            }
            let kind = if name.to_ascii_lowercase().ends_with(".csv")
                || fct.as_deref() == Some("text/csv")
            {
                Some("text/csv".to_owned())
            } else if name.ends_with(".ndjson")
                || name.ends_with(".json")
                || name.ends_with(".jsonl")
            {
                Some("application/x-ndjson".to_owned())
            } else {
                fct
            };
            return Ok((data, name, kind));
        }
        return Err(bad("the multipart body has no field named file"));
    }
    let limit = sh.settings.appcues_body_limit;
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| too_large(limit))?;
    Ok((bytes, "body".into(), Some(ct)))
}

/// The first byte of an NDJSON upload (each line an object); anything else is taken as CSV.
const NDJSON_START: u8 = b'{';

/// NDJSON or CSV into row objects; a line that cannot be read fails the whole request.
fn parse_rows(data: &[u8], kind: Option<&str>) -> Result<Vec<Value>, String> {
    let first = data.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let csv = match kind {
        Some(k) if k.starts_with("text/csv") => true,
        Some(k) if k.contains("json") => false,
        _ => first != Some(NDJSON_START),
    };
    if csv {
        let mut rd = csv::ReaderBuilder::new().flexible(false).from_reader(data);
        let headers = rd
            .headers()
            .map_err(|e| format!("bad CSV header: {e}"))?
            .clone();
        if !headers.iter().any(|h| h == "user_id") {
            return Err("the CSV needs a user_id column".into());
        }
        let mut rows = Vec::new();
        for (i, rec) in rd.records().enumerate() {
            let rec = rec.map_err(|e| format!("bad CSV on line {}: {e}", i + 2))?;
            let mut o = Map::new();
            for (h, v) in headers.iter().zip(rec.iter()) {
                o.insert(h.to_owned(), json!(v));
            }
            rows.push(Value::Object(o));
        }
        return Ok(rows);
    }
    let text = std::str::from_utf8(data).map_err(|_| "the NDJSON body is not UTF-8".to_owned())?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Value>(l).map_err(|e| format!("line {} is not JSON: {e}", i + 1))
        })
        .collect()
}

/// Rows without a `user_id` or with nested values are left out and reported.
fn split_valid(rows: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        let problem = match &r {
            Value::Object(o) => {
                if o.get("user_id").and_then(util::id_string).is_none() {
                    Some("user_id is required".to_owned())
                } else {
                    o.iter()
                        .find(|(_, v)| !util::is_scalar(v))
                        .map(|(k, _)| format!("property '{k}' must be a scalar"))
                }
            }
            _ => Some("each row must be an object".to_owned()),
        };
        match problem {
            Some(m) => errors.push(json!({"row": i + 1, "message": m})),
            None => ok.push(r),
        }
    }
    (ok, errors)
}

fn start_job(sh: &Arc<Shared>, headers_origin: &str, account: &str, mut job: Job) -> Response {
    let id = job.id.clone();
    let url = format!(
        "{headers_origin}{}/v2/accounts/{account}/jobs/{id}",
        V.prefix()
    );
    if job.pending.is_empty() {
        job.status = "completed";
        job.ended = Some(util::now());
        sh.appcues.lock().jobs.push(job);
    } else {
        sh.appcues.lock().jobs.push(job);
        jobs::spawn(sh.clone(), Owner::Appcues, id.clone());
    }
    reply::json_status(
        StatusCode::ACCEPTED,
        &json!({"status": 202, "title": "Accepted", "job_id": id, "job_url": url}),
    )
}

fn new_job_id(sh: &Shared) -> String {
    seed::uuid(&mut sh.appcues.lock().rng)
}

async fn import(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path(account): Path<String>,
    req: Request,
) -> Response {
    let origin = util::origin(req.headers());
    let (data, name, kind) = match read_upload(&sh, req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let rows = match parse_rows(&data, kind.as_deref()) {
        Ok(r) => r,
        Err(e) => return bad(&e),
    };
    if rows.is_empty() {
        return bad("the import has no rows");
    }
    let total = rows.len();
    let (valid, errors) = split_valid(rows);
    let mut job = Job::new(new_job_id(&sh), "import_profiles", valid, data.len(), &name);
    job.total_rows = total;
    job.completed_rows = 0;
    job.errors = errors;
    start_job(&sh, &origin, &account, job)
}

async fn segment_upload(
    sh: Arc<Shared>,
    account: String,
    seg: String,
    req: Request,
    kind: &'static str,
) -> Response {
    if !sh.appcues.lock().segments.contains_key(&seg) {
        return reply::not_found(V, &format!("segment {seg} not found"));
    }
    let origin = util::origin(req.headers());
    let (data, name, ct) = match read_upload(&sh, req).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    // A JSON body {"user_ids": [...]} is taken too, besides the documented CSV.
    let rows = if ct
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"))
    {
        match util::parse_json::<Value>(&data) {
            Ok(v) => match v.get("user_ids").and_then(Value::as_array) {
                Some(a) => a.iter().map(|id| json!({"user_id": id})).collect(),
                None => return bad("user_ids must be an array"),
            },
            Err(e) => return bad(&e),
        }
    } else {
        match parse_rows(&data, Some("text/csv")) {
            Ok(r) => r,
            Err(e) => return bad(&e),
        }
    };
    let total = rows.len();
    let (valid, errors) = split_valid(rows);
    let mut job = Job::new(new_job_id(&sh), kind, valid, data.len(), &name);
    job.total_rows = total;
    job.errors = errors;
    job.target = Some(seg);
    start_job(&sh, &origin, &account, job)
}

async fn add_user_ids(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((account, seg)): Path<(String, String)>,
    req: Request,
) -> Response {
    segment_upload(sh, account, seg, req, "segment_add_user_ids").await
}

async fn remove_user_ids(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((account, seg)): Path<(String, String)>,
    req: Request,
) -> Response {
    segment_upload(sh, account, seg, req, "segment_remove_user_ids").await
}

async fn get_job(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    Path((_account, id)): Path<(String, String)>,
) -> Response {
    let st = sh.appcues.lock();
    match st.jobs.iter().find(|j| j.id == id) {
        Some(j) => reply::ok(&job_json(j)),
        None => reply::not_found(V, &format!("job {id} not found")),
    }
}

fn segment_json(origin: &str, account: &str, id: &str, s: &Segment) -> Value {
    json!({
        "id": id,
        "name": s.name,
        "description": s.description,
        "url": format!("{origin}{}/v2/accounts/{account}/segments/{id}", V.prefix()),
    })
}

async fn create_segment(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    headers: HeaderMap,
    Path(account): Path<String>,
    body: Bytes,
) -> Response {
    let v: Value = match util::parse_json(&body) {
        Ok(v) => v,
        Err(e) => return bad(&e),
    };
    let Some(name) = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
    else {
        return bad("name is required");
    };
    let seg = Segment {
        name: name.to_owned(),
        description: v
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        user_ids: BTreeSet::new(),
    };
    let mut st = sh.appcues.lock();
    let id = format!("-{}", &seed::uuid(&mut st.rng).replace('-', "")[..19]);
    let out = segment_json(&util::origin(&headers), &account, &id, &seg);
    st.segments.insert(id, seg);
    reply::ok(&out)
}

async fn list_segments(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    headers: HeaderMap,
    Path(account): Path<String>,
) -> Response {
    let origin = util::origin(&headers);
    let st = sh.appcues.lock();
    reply::ok(&Value::Array(
        st.segments
            .iter()
            .map(|(id, s)| segment_json(&origin, &account, id, s))
            .collect(),
    ))
}

async fn get_segment(
    State(sh): State<Arc<Shared>>,
    _: OwnAccount,
    headers: HeaderMap,
    Path((account, id)): Path<(String, String)>,
) -> Response {
    let st = sh.appcues.lock();
    match st.segments.get(&id) {
        Some(s) => {
            let mut v = segment_json(&util::origin(&headers), &account, &id, s);
            v["user_ids"] = json!(s.user_ids);
            reply::ok(&v)
        }
        None => reply::not_found(V, &format!("segment {id} not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ndjson_and_csv() {
        let rows = parse_rows(
            b"{\"user_id\":\"u1\",\"plan\":\"pro\"}\n\n{\"user_id\":2}\n",
            Some("application/x-ndjson"),
        )
        .unwrap();
        assert_eq!(rows.len(), 2);
        let rows = parse_rows(b"user_id,plan\nu1,\"pro, annual\"\nu2,free\n", None).unwrap();
        assert_eq!(rows[0], json!({"user_id": "u1", "plan": "pro, annual"}));
        assert!(parse_rows(b"id,plan\nu1,x\n", Some("text/csv")).is_err());
        assert!(
            parse_rows(b"{\"user_id\":1}\n{oops\n", None)
                .unwrap_err()
                .contains("line 2")
        );
        let (ok, errs) = split_valid(vec![
            json!({"user_id": "a"}),
            json!({"plan": "x"}),
            json!({"user_id": "b", "x": [1]}),
        ]);
        assert_eq!(ok.len(), 1);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0]["row"], 2);
    }
}
