//! The layer every vendor request passes: faults first, then the credential check, then the
//! vendor's handler; every request is counted as it arrives and ends in the request log, faults
//! named.
//!
//! The handler runs in a task of its own: a client that disconnects does not cancel a write
//! the vendor has begun. An `apply_then_fail` fault runs the handler to the end, then replaces
//! its answer with a 5xx or drops the connection (the vendor acted, the answer was lost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use super::faults::{Action, FaultAnswer};
use super::log::RequestLogEntry;
use super::server::ConnHandle;
use super::state::Shared;
use super::{Vendor, appcues, auth, guru, reply, scim, userflow, userguiding, userpilot, util};

/// Each vendor's routes nested under its prefix.
pub(crate) fn vendor_routes() -> Router<Arc<Shared>> {
    Router::new()
        .nest(Vendor::UserGuiding.prefix(), userguiding::routes())
        .nest(Vendor::Userflow.prefix(), userflow::routes())
        .nest(Vendor::Userpilot.prefix(), userpilot::routes())
        .nest(Vendor::Appcues.prefix(), appcues::routes())
        .nest(Vendor::Guru.prefix(), guru::routes())
        .nest(Vendor::GuruScim.prefix(), scim::routes())
        .nest(Vendor::Scim.prefix(), scim::routes())
        .fallback(fallback)
}

/// Unknown paths: a vendor-shaped 404 under a prefix, a list of prefixes elsewhere.
async fn fallback(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    match Vendor::from_path(&path) {
        Some(v) => reply::not_found(
            v,
            &format!(
                "{} {path} is not an endpoint of the {v} sandbox",
                req.method()
            ),
        ),
        None => reply::json_status(
            StatusCode::NOT_FOUND,
            &json!({
                "error": format!("no vendor is served under {path}"),
                "prefixes": Vendor::ALL.iter().map(|v| json!({"vendor": v.name(), "prefix": v.prefix()})).collect::<Vec<_>>(),
                "admin": "/_sandbox/",
            }),
        ),
    }
}

/// Every vendor request: logged as it arrives, then the fault decision, then (unless a fault
/// answers first) the credential check and the vendor's handler.
pub(crate) async fn vendor_layer(
    State(sh): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    sh.log.arrive();
    let entry = RequestLogEntry {
        seq: 0,
        vendor: Vendor::from_path(req.uri().path()),
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        status: 0,
        at: util::now(),
        duration_ms: 0.0,
        fault: None,
        headers: logged_headers(req.headers()),
    };
    let Some(v) = entry.vendor else {
        let resp = next.run(req).await;
        log_answer(&sh, entry, started, resp.status().as_u16());
        return resp;
    };
    let mut entry = entry;
    let decision = sh.faults.decide(v, &entry.method, &entry.path);
    entry.fault = decision.label;
    let conn = req.extensions().get::<ConnHandle>().cloned();
    if decision.apply_first || matches!(decision.action, Action::Pass) {
        let task = tokio::spawn(run_vendor(
            sh.clone(),
            v,
            req,
            next,
            Pending {
                entry,
                started,
                latency: decision.latency,
                action: decision.action,
                can_drop: conn.is_some(),
            },
        ));
        return match task.await {
            Ok((_, true)) => drop_connection(conn).await,
            Ok((resp, false)) => resp,
            Err(e) => reply::error(
                v,
                StatusCode::INTERNAL_SERVER_ERROR,
                "",
                &format!("sandbox handler failed: {e}"),
            ),
        };
    }
    if let Some(latency) = decision.latency {
        tokio::time::sleep(latency).await;
    }
    if let (Action::Drop, Some(_)) = (&decision.action, &conn) {
        log_answer(&sh, entry, started, 0);
        return drop_connection(conn).await;
    }
    let resp = fault_answer(v, decision.action);
    log_answer(&sh, entry, started, resp.status().as_u16());
    resp
}

/// A request on its way to the vendor's handler: its log entry, and the fault that may replace
/// the handler's answer.
struct Pending {
    entry: RequestLogEntry,
    started: Instant,
    latency: Option<Duration>,
    action: Action,
    can_drop: bool,
}

/// Runs the vendor's handler in a task of its own, so a client that gives up (a timeout, a
/// kill) does not cancel a write the vendor has begun: like a real server, it finishes and
/// keeps what it applied. The answer, and the log entry, come from here too; `true` asks for
/// the connection to be dropped.
async fn run_vendor(
    sh: Arc<Shared>,
    v: Vendor,
    mut req: Request,
    next: Next,
    p: Pending,
) -> (Response, bool) {
    if let Some(latency) = p.latency {
        tokio::time::sleep(latency).await;
    }
    let applied = match auth::check(v, req.headers(), &sh.settings.credentials) {
        Err(r) => r,
        Ok(()) => {
            req.extensions_mut().insert(v);
            let resp = next.run(req).await;
            if p.entry.method == "GET" && resp.status() == StatusCode::OK {
                sh.page_served(v, &p.entry.path);
            }
            resp
        }
    };
    // apply_then_fail: the write happened; now the answer is lost.
    let (resp, dropped) = match p.action {
        Action::Pass => (applied, false),
        Action::Drop if p.can_drop => (applied, true),
        other => (fault_answer(v, other), false),
    };
    let status = if dropped { 0 } else { resp.status().as_u16() };
    log_answer(&sh, p.entry, p.started, status);
    (resp, dropped)
}

/// Ends the request's log entry with `status` (0: no answer) and the time taken.
fn log_answer(sh: &Shared, mut entry: RequestLogEntry, started: Instant, status: u16) {
    entry.status = status;
    entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    sh.log.push(entry);
}

/// Drops the connection without an answer. The connection task drops this future together
/// with the socket, so it never resolves.
async fn drop_connection(conn: Option<ConnHandle>) -> Response {
    if let Some(conn) = conn {
        conn.drop_connection();
    }
    std::future::pending().await
}

/// The answer a fault gives instead of the vendor's (a drop without a connection to drop, as
/// in a request made in-process, answers 502).
fn fault_answer(v: Vendor, action: Action) -> Response {
    match action {
        Action::Pass | Action::Drop => reply::error(
            v,
            StatusCode::BAD_GATEWAY,
            "",
            "sandbox fault: dropped connection",
        ),
        Action::Respond {
            status,
            retry_after,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = reply::error(v, status, "", &message);
            if let Some(secs) = retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            r
        }
        Action::Answer(answer) => scripted_answer(answer),
    }
}

/// Headers kept in the request log: every one but credentials.
fn logged_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "authorization" | "proxy-authorization" | "cookie"
            )
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// The HTML page of an [`FaultAnswer::Html`]: what a captive portal or a login proxy sends.
const FAULT_HTML: &str = "<!DOCTYPE html><html><head><title>Sign in</title></head><body><form>Please sign in</form></body></html>";

/// The body of a [`FaultAnswer::Truncated`]: an object cut inside a string.
const FAULT_TRUNCATED: &str = "{\"id\":\"usr_tr";

/// A redirect, an HTML page or a truncated JSON body; the vendor applied nothing.
fn scripted_answer(answer: FaultAnswer) -> Response {
    use axum::response::IntoResponse as _;
    match answer {
        FaultAnswer::Redirect { status, location } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FOUND);
            match HeaderValue::from_str(&location) {
                Ok(location) => (status, [(header::LOCATION, location)]).into_response(),
                Err(_) => status.into_response(),
            }
        }
        FaultAnswer::Html => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            FAULT_HTML,
        )
            .into_response(),
        FaultAnswer::Truncated => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            FAULT_TRUNCATED,
        )
            .into_response(),
    }
}
