//! Userpilot's routes: realtime identify and track, scheduled deletes, bulk jobs; and the checks
//! on identify metadata and bulk rows.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::Rng;
use serde_json::{Map, Value, json};

use super::V;
use super::store::job_json;
use crate::jobs::{self, Job, Owner};
use crate::seed;
use crate::state::Shared;
use crate::{reply, util};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/identify", post(identify))
        .route("/v1/companies/identify", post(identify_company))
        .route("/v1/track", post(track))
        .route("/v1/validate", get(validate))
        .route("/v1/users", axum::routing::delete(delete_users))
        .route("/v1/companies", axum::routing::delete(delete_companies))
        .route("/v1/users/bulk_identify", post(bulk_users))
        .route("/v1/companies/bulk_identify", post(bulk_companies))
        .route("/v1/background_jobs", get(list_jobs))
        .route("/v1/background_jobs/{id}", get(get_job))
}

fn bad(msg: &str) -> Response {
    reply::error(V, StatusCode::BAD_REQUEST, "invalid_request", msg)
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// Identify metadata (users and companies, real time and bulk): Userpilot's API reference says
/// "only string values are supported (numbers and dates should be sent as strings)", so a
/// number or boolean is refused (null clears a property).
fn metadata(field: &str, v: Option<&Value>) -> Result<Map<String, Value>, String> {
    let meta = any_metadata(field, v)?;
    if let Some((k, x)) = meta
        .iter()
        .find(|(_, x)| !matches!(x, Value::String(_) | Value::Null))
    {
        return Err(format!(
            "{field}.{k}: only string values are supported (numbers and dates should be sent as strings), got {}",
            util::type_name(x)
        ));
    }
    Ok(meta)
}

/// Event metadata values must be primitives (vendors.md §4).
fn any_metadata(field: &str, v: Option<&Value>) -> Result<Map<String, Value>, String> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => {
            if let Some((k, x)) = o.iter().find(|(_, x)| !util::is_scalar(x)) {
                return Err(format!(
                    "{field}.{k}: metadata values must be strings, numbers, booleans or null, got {}",
                    util::type_name(x)
                ));
            }
            Ok(o.clone())
        }
        Some(other) => Err(format!(
            "{field}: must be an object, got {}",
            util::type_name(other)
        )),
    }
}

fn check_keys(o: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match o.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "{what}: unknown field '{k}', expected {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

pub(super) enum Row {
    User(String, Map<String, Value>, Option<String>),
    Company(String, Map<String, Value>),
}

/// A company object inside identify: `id` or `company_id`, then properties.
fn company_of(v: &Value) -> Result<(String, Map<String, Value>), String> {
    let Value::Object(c) = v else {
        return Err(format!(
            "company: must be an object, got {}",
            util::type_name(v)
        ));
    };
    let id = c
        .get("id")
        .or_else(|| c.get("company_id"))
        .and_then(util::id_string)
        .ok_or("company: must have an id (or company_id)")?;
    if let (Some(a), Some(b)) = (c.get("id"), c.get("company_id"))
        && a != b
    {
        return Err("company: id and company_id name different companies".into());
    }
    let mut meta = metadata("company.metadata", c.get("metadata"))?;
    for (k, x) in c {
        if matches!(k.as_str(), "id" | "company_id" | "metadata") {
            continue;
        }
        if !matches!(x, Value::String(_) | Value::Null) {
            return Err(format!(
                "company.{k}: only string values are supported, got {}",
                util::type_name(x)
            ));
        }
        meta.insert(k.clone(), x.clone());
    }
    Ok((id, meta))
}

pub(super) fn parse_row(kind: &str, row: &Value) -> Result<Row, String> {
    let Value::Object(o) = row else {
        return Err("each row must be an object".into());
    };
    if kind == "companies_bulk_identify" {
        check_keys(o, &["company_id", "id", "metadata"], "company row")?;
        let id = o
            .get("company_id")
            .or_else(|| o.get("id"))
            .and_then(util::id_string)
            .ok_or("company_id is required")?;
        return Ok(Row::Company(id, metadata("metadata", o.get("metadata"))?));
    }
    check_keys(
        o,
        &["user_id", "company_id", "metadata", "company"],
        "user row",
    )?;
    let id = o
        .get("user_id")
        .and_then(util::id_string)
        .ok_or("user_id is required")?;
    let mut company = o.get("company_id").and_then(util::id_string);
    if let Some(c) = o.get("company").filter(|c| !c.is_null()) {
        company = Some(company_of(c)?.0);
    }
    Ok(Row::User(
        id,
        metadata("metadata", o.get("metadata"))?,
        company,
    ))
}

/// Row problems found in the `validating` stage: `[{row, message}]`, rows counted from 1.
pub(crate) fn validate_rows(kind: &str, rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .enumerate()
        .filter_map(|(i, r)| {
            parse_row(kind, r)
                .err()
                .map(|e| json!({"row": i + 1, "message": e}))
        })
        .collect()
}

fn object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match util::parse_json::<Value>(body)? {
        Value::Object(o) => Ok(o),
        other => Err(format!(
            "the body must be a JSON object, got {}",
            util::type_name(&other)
        )),
    }
}

async fn identify(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = (|| {
        let o = object(&body)?;
        check_keys(&o, &["user_id", "metadata", "company"], "identify")?;
        let id = o
            .get("user_id")
            .and_then(util::id_string)
            .ok_or("user_id is required")?;
        let meta = metadata("metadata", o.get("metadata"))?;
        let company = match o.get("company") {
            None | Some(Value::Null) => None,
            Some(c) => Some(company_of(c)?),
        };
        Ok::<_, String>((id, meta, company))
    })();
    let (id, meta, company) = match parsed {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    let mut st = sh.userpilot.lock();
    let company_id = company.as_ref().map(|(c, _)| c.clone());
    if let Some((cid, cmeta)) = company {
        st.upsert_company(cid, cmeta);
    }
    st.upsert_user(id, meta, company_id);
    accepted()
}

async fn identify_company(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = (|| {
        let o = object(&body)?;
        check_keys(&o, &["company_id", "metadata"], "companies/identify")?;
        let id = o
            .get("company_id")
            .and_then(util::id_string)
            .ok_or("company_id is required")?;
        Ok::<_, String>((id, metadata("metadata", o.get("metadata"))?))
    })();
    match parsed {
        Ok((id, meta)) => {
            sh.userpilot.lock().upsert_company(id, meta);
            accepted()
        }
        Err(e) => bad(&e),
    }
}

async fn track(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed = (|| {
        let o = object(&body)?;
        // The track document's fields, nothing else (no time field: Userpilot records when it
        // receives the event).
        check_keys(&o, &["user_id", "event_name", "metadata"], "track")?;
        let id = o
            .get("user_id")
            .and_then(util::id_string)
            .ok_or("user_id is required")?;
        let name = o
            .get("event_name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("event_name is required")?
            .to_owned();
        let meta = any_metadata("metadata", o.get("metadata"))?;
        Ok::<_, String>(json!({
            "user_id": id, "event_name": name, "metadata": meta,
            "received_at": util::iso(util::now()),
        }))
    })();
    match parsed {
        Ok(ev) => {
            sh.userpilot.lock().events.push(ev);
            accepted()
        }
        Err(e) => bad(&e),
    }
}

async fn validate() -> Response {
    reply::ok(&json!({"status": "ok"}))
}

fn ids_of(body: &[u8], key: &str) -> Result<Vec<String>, String> {
    let o = object(body)?;
    let Some(Value::Array(a)) = o.get(key) else {
        return Err(format!("{key} must be an array of ids"));
    };
    a.iter()
        .map(|v| {
            util::id_string(v).ok_or_else(|| format!("{key}: every id must be a non-empty string"))
        })
        .collect()
}

async fn delete_users(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match ids_of(&body, "users") {
        Ok(ids) => {
            let n = ids.len();
            sh.userpilot.lock().scheduled_user_deletions.extend(ids);
            reply::json_status(
                StatusCode::ACCEPTED,
                &json!({"message": format!("{n} users scheduled for deletion")}),
            )
        }
        Err(e) => bad(&e),
    }
}

async fn delete_companies(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    match ids_of(&body, "companies") {
        Ok(ids) => {
            let n = ids.len();
            sh.userpilot.lock().scheduled_company_deletions.extend(ids);
            reply::json_status(
                StatusCode::ACCEPTED,
                &json!({"message": format!("{n} companies scheduled for deletion")}),
            )
        }
        Err(e) => bad(&e),
    }
}

async fn bulk(sh: Arc<Shared>, body: Body, key: &str, kind: &'static str) -> Response {
    let limit = sh.settings.userpilot_body_limit;
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        return reply::error(
            V,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!("the request body exceeds {limit} bytes"),
        );
    };
    let rows = match object(&bytes) {
        Ok(mut o) => match o.remove(key) {
            Some(Value::Array(a)) => a,
            _ => return bad(&format!("{key} must be an array")),
        },
        Err(e) => return bad(&e),
    };
    if rows.is_empty() {
        return bad(&format!("{key} must not be empty"));
    }
    let max = sh.settings.userpilot_max_rows;
    if rows.len() > max {
        return reply::error(
            V,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!(
                "{} rows exceed the limit of {max} per bulk request",
                rows.len()
            ),
        );
    }
    let mut st = sh.userpilot.lock();
    if let Some(j) = st.jobs.iter().find(|j| j.running()) {
        return reply::error(
            V,
            StatusCode::CONFLICT,
            "job_in_progress",
            &format!("another bulk job is in progress: {}", j.id),
        );
    }
    let a: u32 = st.rng.random();
    let id = format!("bulk:jobs:NX-{a:08x}:{}", seed::uuid(&mut st.rng));
    let job = Job::new(id.clone(), kind, rows, bytes.len(), &format!("{kind}.json"));
    let v = job_json(&job);
    st.jobs.push(job);
    drop(st);
    jobs::spawn(sh.clone(), Owner::Userpilot, id);
    reply::json_status(StatusCode::ACCEPTED, &v)
}

async fn bulk_users(State(sh): State<Arc<Shared>>, body: Body) -> Response {
    bulk(sh, body, "users", "users_bulk_identify").await
}

async fn bulk_companies(State(sh): State<Arc<Shared>>, body: Body) -> Response {
    bulk(sh, body, "companies", "companies_bulk_identify").await
}

async fn list_jobs(State(sh): State<Arc<Shared>>) -> Response {
    let st = sh.userpilot.lock();
    reply::ok(&Value::Array(st.jobs.iter().map(job_json).collect()))
}

async fn get_job(State(sh): State<Arc<Shared>>, _h: HeaderMap, Path(id): Path<String>) -> Response {
    let st = sh.userpilot.lock();
    match st.jobs.iter().find(|j| j.id == id) {
        Some(j) => reply::ok(&job_json(j)),
        None => reply::not_found(V, &format!("job {id} not found")),
    }
}
