//! Answers in each vendor's own shape: success bodies and error bodies.
//!
//! Error shapes (vendors.md / scim.md): Userflow `{"error":{"code","message"}}`; Userpilot
//! `{"errors":[{"details","error","error_code","message"}]}`; Appcues RFC-7807-like
//! `{"error":true,"status","title","detail"}`; SCIM's Error schema with a string `status`;
//! UserGuiding `{"success":false,"message"}`; Guru `{"description"}` (neither of the last two
//! documents a shape).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Vendor;

/// The SCIM Error schema URN.
pub(crate) const SCIM_ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// A JSON answer with an explicit status.
pub(crate) fn json_status<T: serde::Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// 200 with a JSON body.
pub(crate) fn ok<T: serde::Serialize + ?Sized>(body: &T) -> Response {
    json_status(StatusCode::OK, body)
}

/// 200 with a JSON body of about `capacity` bytes, written into a buffer of that size (a list
/// page, written without growing its buffer a dozen times).
pub(crate) fn ok_sized<T: serde::Serialize + ?Sized>(body: &T, capacity: usize) -> Response {
    let mut bytes = Vec::with_capacity(capacity);
    if serde_json::to_writer(&mut bytes, body).is_err() {
        bytes.clear();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

/// A SCIM answer (`application/scim+json`).
pub(crate) fn scim(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        )],
        bytes,
    )
        .into_response()
}

/// A vendor-shaped error. `code` is the vendor's error code (Userflow `invalid_params`, SCIM
/// `scimType`); pass "" when there is none.
pub(crate) fn error(vendor: Vendor, status: StatusCode, code: &str, message: &str) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    match vendor {
        Vendor::Userflow => json_status(
            status,
            &json!({"error": {"code": if code.is_empty() { default_code(status) } else { code }, "message": message}}),
        ),
        Vendor::Userpilot => json_status(
            status,
            &json!({"errors": [{
                "details": message,
                "error": reason,
                "error_code": if code.is_empty() { default_code(status) } else { code },
                "message": message,
            }]}),
        ),
        Vendor::Appcues => json_status(
            status,
            &json!({"error": true, "status": status.as_u16(), "title": reason, "detail": message}),
        ),
        Vendor::GuruScim | Vendor::Scim => {
            let mut body = json!({
                "schemas": [SCIM_ERROR],
                "status": status.as_u16().to_string(),
                "detail": message,
            });
            if !code.is_empty() {
                body["scimType"] = json!(code);
            }
            let mut r = scim(status, &body);
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"roster-sandbox\", Basic realm=\"roster-sandbox\"",
                    ),
                );
            }
            r
        }
        Vendor::UserGuiding => json_status(status, &json!({"success": false, "message": message})),
        Vendor::Guru => json_status(status, &json!({"description": message})),
    }
}

fn default_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_params",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        409 => "conflict",
        413 => "payload_too_large",
        429 => "rate_limited",
        503 => "service_unavailable",
        _ => "server_error",
    }
}

/// 400 in the vendor's shape.
pub(crate) fn bad_request(vendor: Vendor, message: &str) -> Response {
    let code = match vendor {
        Vendor::Scim | Vendor::GuruScim => "invalidValue",
        _ => "",
    };
    error(vendor, StatusCode::BAD_REQUEST, code, message)
}

/// 404 in the vendor's shape.
pub(crate) fn not_found(vendor: Vendor, message: &str) -> Response {
    error(vendor, StatusCode::NOT_FOUND, "", message)
}
