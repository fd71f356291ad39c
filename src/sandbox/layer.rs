//! The layer every vendor request passes: faults first, then the credential check, then the
//! vendor's handler; every request is counted as it arrives and ends in the request log, faults
//! named.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::json;

use super::faults::Action;
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

pub(crate) async fn vendor_layer(
    State(sh): State<Arc<Shared>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    sh.log.arrive();
    let at = util::now();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let vendor = Vendor::from_path(&path);
    let mut entry = RequestLogEntry {
        seq: 0,
        vendor,
        method,
        path,
        query,
        status: 0,
        at,
        duration_ms: 0.0,
        fault: None,
    };
    let Some(v) = vendor else {
        let resp = next.run(req).await;
        entry.status = resp.status().as_u16();
        entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        sh.log.push(entry);
        return resp;
    };
    let decision = sh.faults.decide(v, &entry.method, &entry.path);
    entry.fault = decision.label;
    if let Some(latency) = decision.latency {
        tokio::time::sleep(latency).await;
    }
    let resp = match decision.action {
        Action::Drop => {
            if let Some(conn) = req.extensions().get::<ConnHandle>().cloned() {
                entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
                sh.log.push(entry);
                conn.drop_connection();
                // The connection task drops this future together with the socket.
                return std::future::pending().await;
            }
            reply::error(
                v,
                StatusCode::BAD_GATEWAY,
                "",
                "sandbox fault: dropped connection",
            )
        }
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
        Action::Pass => match auth::check(v, req.headers(), &sh.settings.credentials) {
            Err(r) => r,
            Ok(()) => {
                req.extensions_mut().insert(v);
                next.run(req).await
            }
        },
    };
    entry.status = resp.status().as_u16();
    entry.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    sh.log.push(entry);
    resp
}
