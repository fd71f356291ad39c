//! The admin API under `/_sandbox/`: dump, request log, stats, reset, seed, faults, configs.
//!
//! It needs no credentials (the sandbox only listens on 127.0.0.1) and its own requests are
//! not written to the request log, so tests can count vendor requests exactly.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::faults::{FailRule, FaultSettings, RateLimit, UserGuidingBlock};
use super::state::Shared;
use super::{SeedSpec, Vendor, reply, util, vendor_config};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sandbox", get(index))
        .route("/_sandbox/", get(index))
        .route("/_sandbox/dump", get(dump_all))
        .route("/_sandbox/dump/{vendor}", get(dump_one))
        .route("/_sandbox/users/{vendor}", get(users_summary))
        .route("/_sandbox/requests", get(requests).delete(clear_requests))
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/seed", post(reseed))
        .route(
            "/_sandbox/faults",
            get(faults_get)
                .post(faults_patch)
                .put(faults_put)
                .delete(faults_clear),
        )
        .route("/_sandbox/faults/fail_next", post(fail_next))
        .route("/_sandbox/guru/expire_tokens", post(expire_tokens))
        .route("/_sandbox/config/{vendor}", get(config))
}

fn admin_error(status: StatusCode, msg: &str) -> Response {
    reply::json_status(status, &json!({"error": msg}))
}

fn vendor_of(name: &str) -> Result<Vendor, Response> {
    Vendor::from_name(name).map_err(|e| admin_error(StatusCode::NOT_FOUND, &e.to_string()))
}

async fn index(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let origin = util::origin(&headers);
    let vendors: Vec<Value> = Vendor::ALL
        .iter()
        .map(|v| {
            let base = format!("{origin}{}", v.prefix());
            json!({
                "vendor": v.name(),
                "prefix": v.prefix(),
                "base_url": base,
                "config": vendor_config(*v, &base, &sh.settings.credentials),
            })
        })
        .collect();
    reply::ok(&json!({
        "name": "roster-sandbox",
        "seed": *sh.seed.lock(),
        "vendors": vendors,
        "admin": {
            "GET /_sandbox/dump[/{vendor}]": "what each vendor holds",
            "GET /_sandbox/requests?vendor=&since=&limit=": "the request log (oldest first)",
            "DELETE /_sandbox/requests": "clear the request log and counters",
            "GET /_sandbox/stats": "exact request counters per vendor and status",
            "POST /_sandbox/reset": "back to the initial seed, no jobs, empty log, initial faults",
            "POST /_sandbox/seed {seed,users,groups}": "replace all data with a new seed",
            "GET|POST|PUT|DELETE /_sandbox/faults": "show, patch, replace, clear faults",
            "POST /_sandbox/faults/fail_next {path,count,status,method,drop,retry_after,answer}": "fail the next N requests to a path (answer: {kind: redirect, status, location} | {kind: html} | {kind: truncated})",
            "POST /_sandbox/guru/expire_tokens": "invalidate every Guru page token",
            "GET /_sandbox/config/{vendor}": "a ready roster config for the vendor",
        },
    }))
}

async fn dump_all(State(sh): State<Arc<Shared>>) -> Response {
    let mut out = Map::new();
    for v in Vendor::ALL {
        out.insert(v.name().into(), sh.dump(v));
    }
    reply::ok(&Value::Object(out))
}

async fn dump_one(State(sh): State<Arc<Shared>>, Path(vendor): Path<String>) -> Response {
    match vendor_of(&vendor) {
        Ok(v) => reply::ok(&sh.dump(v)),
        Err(r) => r,
    }
}

/// `GET /_sandbox/users/{vendor}?ids=a,b`: how many users the vendor holds and the named ones.
async fn users_summary(
    State(sh): State<Arc<Shared>>,
    Path(vendor): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = util::query_pairs(q.as_deref());
    let ids: Vec<String> = util::all(&pairs, "ids")
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    match vendor_of(&vendor) {
        Ok(v) => reply::ok(&sh.users_summary(v, &ids)),
        Err(r) => r,
    }
}

async fn requests(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let pairs = util::query_pairs(q.as_deref());
    let vendor = match util::first(&pairs, "vendor").map(vendor_of).transpose() {
        Ok(v) => v,
        Err(r) => return r,
    };
    let since = util::first(&pairs, "since").and_then(|s| s.parse::<u64>().ok());
    let mut entries = sh.log.entries(vendor, since);
    if let Some(limit) = util::first(&pairs, "limit").and_then(|s| s.parse::<usize>().ok())
        && entries.len() > limit
    {
        entries.drain(..entries.len() - limit);
    }
    reply::ok(&json!({"capacity": sh.log.capacity(), "entries": entries}))
}

async fn clear_requests(State(sh): State<Arc<Shared>>) -> Response {
    sh.log.clear();
    reply::ok(&json!({"cleared": true}))
}

async fn stats(State(sh): State<Arc<Shared>>) -> Response {
    reply::ok(&json!(sh.log.stats()))
}

async fn reset(State(sh): State<Arc<Shared>>) -> Response {
    sh.reset();
    reply::ok(&json!({"reset": true, "seed": sh.settings.seed}))
}

async fn reseed(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let mut spec: SeedSpec = *sh.seed.lock();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: Value = match util::parse_json(&body) {
            Ok(v) => v,
            Err(e) => return admin_error(StatusCode::BAD_REQUEST, &e),
        };
        let Value::Object(o) = v else {
            return admin_error(
                StatusCode::BAD_REQUEST,
                "the body must be an object {seed, users, groups}",
            );
        };
        for (k, v) in o {
            let Some(n) = v.as_u64() else {
                return admin_error(
                    StatusCode::BAD_REQUEST,
                    &format!("{k} must be a non-negative integer"),
                );
            };
            match k.as_str() {
                "seed" => spec.seed = n,
                "users" => spec.users = n as usize,
                "groups" => spec.groups = n as usize,
                other => {
                    return admin_error(
                        StatusCode::BAD_REQUEST,
                        &format!("unknown key '{other}': expected seed, users, groups"),
                    );
                }
            }
        }
    }
    sh.reseed(spec);
    reply::ok(&json!({"seeded": spec}))
}

async fn faults_get(State(sh): State<Arc<Shared>>) -> Response {
    reply::ok(&json!(sh.faults.settings()))
}

async fn faults_clear(State(sh): State<Arc<Shared>>) -> Response {
    sh.faults.update(|s| *s = FaultSettings::default());
    reply::ok(&json!(sh.faults.settings()))
}

async fn faults_put(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let s: FaultSettings = match util::parse_json(&body) {
        Ok(s) => s,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, &e),
    };
    if let Err(e) = s.validate() {
        return admin_error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    sh.faults.update(|cur| *cur = s);
    reply::ok(&json!(sh.faults.settings()))
}

async fn faults_patch(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let v: Value = match util::parse_json(&body) {
        Ok(v) => v,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, &e),
    };
    let mut next = sh.faults.settings();
    if let Err(e) = apply_patch(&mut next, v) {
        return admin_error(StatusCode::BAD_REQUEST, &e);
    }
    if let Err(e) = next.validate() {
        return admin_error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    sh.faults.update(|cur| *cur = next);
    reply::ok(&json!(sh.faults.settings()))
}

async fn fail_next(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let rule: FailRule = match util::parse_json(&body) {
        Ok(r) => r,
        Err(e) => return admin_error(StatusCode::BAD_REQUEST, &e),
    };
    sh.faults.update(|s| s.fail_next.push(rule));
    reply::ok(&json!(sh.faults.settings()))
}

async fn expire_tokens(State(sh): State<Arc<Shared>>) -> Response {
    sh.expire_guru_tokens();
    reply::ok(&json!({"expired": true}))
}

async fn config(
    State(sh): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(vendor): Path<String>,
) -> Response {
    match vendor_of(&vendor) {
        Ok(v) => {
            let base = format!("{}{}", util::origin(&headers), v.prefix());
            reply::ok(&vendor_config(v, &base, &sh.settings.credentials))
        }
        Err(r) => r,
    }
}

/// A number for every vendor, or `{vendor: number}`.
fn per_vendor(
    key: &str,
    v: &Value,
    mut set: impl FnMut(Option<Vendor>, &Value) -> Result<(), String>,
) -> Result<(), String> {
    match v {
        Value::Object(o) => {
            for (name, x) in o {
                let vendor = Vendor::from_name(name).map_err(|e| format!("{key}: {e}"))?;
                set(Some(vendor), x)?;
            }
            Ok(())
        }
        other => set(None, other),
    }
}

fn fraction(key: &str, x: &Value) -> Result<f64, String> {
    x.as_f64()
        .filter(|f| (0.0..=1.0).contains(f))
        .ok_or_else(|| format!("{key} must be a number between 0 and 1"))
}

/// Applies an admin fault patch (documented in docs/sandbox.md).
pub(crate) fn apply_patch(s: &mut FaultSettings, patch: Value) -> Result<(), String> {
    let Value::Object(o) = patch else {
        return Err("the body must be a JSON object".into());
    };
    for (k, v) in o {
        match k.as_str() {
            "rate_limit" => patch_rate_limits(s, v)?,
            "error_rate" | "drop_rate" | "apply_then_fail_rate" => {
                per_vendor(&k, &v, |vendor, x| {
                    let f = fraction(&k, x)?;
                    s.for_each(vendor, |vf| match k.as_str() {
                        "error_rate" => vf.error_rate = f,
                        "drop_rate" => vf.drop_rate = f,
                        _ => vf.apply_then_fail_rate = f,
                    });
                    Ok(())
                })?
            }
            "latency_ms" => per_vendor(&k, &v, |vendor, x| {
                let ms = x
                    .as_u64()
                    .ok_or("latency_ms must be a non-negative integer")?;
                s.for_each(vendor, |vf| vf.latency_ms = ms);
                Ok(())
            })?,
            "userguiding_block" => s.userguiding_block = userguiding_block(v)?,
            "fail_next" => {
                let rules: Vec<FailRule> = match v {
                    Value::Array(_) => serde_json::from_value(v),
                    other => serde_json::from_value(other).map(|r| vec![r]),
                }
                .map_err(|e| format!("fail_next: {e}"))?;
                s.fail_next.extend(rules);
            }
            "fail_jobs" => {
                s.fail_jobs = v.as_bool().ok_or("fail_jobs must be a boolean")?;
            }
            "realistic" => {
                if v.as_bool() == Some(true) {
                    s.apply_realistic();
                }
            }
            other => {
                return Err(format!(
                    "unknown fault '{other}': expected rate_limit, error_rate, drop_rate, apply_then_fail_rate, latency_ms, userguiding_block, fail_next, fail_jobs, realistic"
                ));
            }
        }
    }
    Ok(())
}

/// `rate_limit: {vendor: "50/s" | {rate, burst, retry_after} | null}`.
fn patch_rate_limits(s: &mut FaultSettings, v: Value) -> Result<(), String> {
    let Value::Object(m) = v else {
        return Err(
            "rate_limit must be an object {vendor: \"50/s\" | {rate, retry_after} | null}".into(),
        );
    };
    for (name, x) in m {
        let vendor = Vendor::from_name(&name).map_err(|e| e.to_string())?;
        let limit = match x {
            Value::Null => None,
            Value::String(r) => Some(RateLimit::parse(&r).map_err(|e| e.to_string())?),
            Value::Object(spec) => Some(rate_limit_object(&spec)?),
            _ => {
                return Err(format!(
                    "rate_limit.{name}: expected a string, an object or null"
                ));
            }
        };
        s.vendor_mut(vendor).rate_limit = limit;
    }
    Ok(())
}

/// `{rate: "50/s", burst, retry_after}`.
fn rate_limit_object(spec: &Map<String, Value>) -> Result<RateLimit, String> {
    let rate = spec
        .get("rate")
        .and_then(Value::as_str)
        .ok_or("rate_limit.<vendor>.rate must be a string like \"50/s\"")?;
    let mut r = RateLimit::parse(rate).map_err(|e| e.to_string())?;
    if let Some(b) = spec.get("burst").and_then(Value::as_f64) {
        r.burst = b.max(1.0);
    }
    if let Some(ra) = spec.get("retry_after").and_then(Value::as_bool) {
        r.retry_after = Some(ra);
    }
    Ok(r)
}

/// `userguiding_block: true | false | null | {fields over the defaults}`.
fn userguiding_block(v: Value) -> Result<Option<UserGuidingBlock>, String> {
    match v {
        Value::Null | Value::Bool(false) => Ok(None),
        Value::Bool(true) => Ok(Some(UserGuidingBlock::default())),
        Value::Object(o) => {
            let mut base =
                serde_json::to_value(UserGuidingBlock::default()).map_err(|e| e.to_string())?;
            if let Some(b) = base.as_object_mut() {
                b.extend(o);
            }
            serde_json::from_value(base)
                .map(Some)
                .map_err(|e| format!("userguiding_block: {e}"))
        }
        _ => Err("userguiding_block must be true, false or an object".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_parses_every_key() {
        let mut s = FaultSettings::default();
        apply_patch(
            &mut s,
            json!({
                "rate_limit": {"userflow": "50/s", "appcues": {"rate": "600/min", "retry_after": false}},
                "error_rate": {"scim": 0.25},
                "drop_rate": 0.1,
                "latency_ms": {"guru": 20},
                "userguiding_block": {"block_secs": 1.5},
                "fail_next": {"path": "/userflow/users", "count": 2, "status": 503},
                "fail_jobs": true,
            }),
        )
        .unwrap();
        assert_eq!(
            s.vendors[&Vendor::Userflow]
                .rate_limit
                .as_ref()
                .unwrap()
                .per_second,
            50.0
        );
        assert_eq!(
            s.vendors[&Vendor::Appcues]
                .rate_limit
                .as_ref()
                .unwrap()
                .retry_after,
            Some(false)
        );
        assert_eq!(s.vendors[&Vendor::Scim].error_rate, 0.25);
        assert_eq!(s.vendors[&Vendor::Userpilot].drop_rate, 0.1);
        assert_eq!(s.vendors[&Vendor::Guru].latency_ms, 20);
        assert_eq!(s.userguiding_block.as_ref().unwrap().max_requests, 50);
        assert_eq!(s.fail_next[0].status, 503);
        assert!(s.fail_jobs);
        assert!(apply_patch(&mut s, json!({"nope": 1})).is_err());
        assert!(apply_patch(&mut s, json!({"error_rate": 2})).is_err());
    }
}
