//! Credential checks per vendor, and the version headers Userpilot and Userflow look at.
//!
//! A missing or wrong credential gets 401 in the vendor's error shape. The credential itself
//! never appears in an answer or a log line.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{Credentials, Vendor, reply};

/// The only Userpilot API version (vendors.md §4).
pub(crate) const USERPILOT_API_VERSION: &str = "2020-09-22";
/// The only Userflow API version (vendors.md §1).
pub(crate) const USERFLOW_VERSION: &str = "2020-01-03";

enum Auth {
    Bearer(String),
    Basic(String, String),
    Token(String),
    Other,
}

fn parse(headers: &HeaderMap) -> Option<Auth> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = raw.split_once(' ').unwrap_or((raw, ""));
    let rest = rest.trim();
    Some(if scheme.eq_ignore_ascii_case("bearer") {
        Auth::Bearer(rest.to_owned())
    } else if scheme.eq_ignore_ascii_case("token") {
        Auth::Token(rest.to_owned())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded.as_deref().and_then(|d| d.split_once(':')) {
            Some((u, p)) => Auth::Basic(u.to_owned(), p.to_owned()),
            None => Auth::Other,
        }
    } else {
        Auth::Other
    })
}

/// Checks the credential (and the version headers); `Err` is the answer to send.
pub(crate) fn check(vendor: Vendor, headers: &HeaderMap, c: &Credentials) -> Result<(), Response> {
    let auth = parse(headers);
    let ok = match (vendor, &auth) {
        (Vendor::UserGuiding, Some(Auth::Bearer(t))) => *t == c.userguiding_api_key,
        (Vendor::Userflow, Some(Auth::Bearer(t))) => *t == c.userflow_api_key,
        (Vendor::Userpilot, Some(Auth::Token(t))) => *t == c.userpilot_api_key,
        (Vendor::Appcues, Some(Auth::Basic(u, p))) => {
            *u == c.appcues_api_key && *p == c.appcues_api_secret
        }
        (Vendor::Guru, Some(Auth::Basic(u, p))) => {
            u.eq_ignore_ascii_case(&c.guru_username) && *p == c.guru_api_token
        }
        // Okta sends Basic; OneLogin pastes `username:token` as a Bearer token (vendors.md §3).
        (Vendor::GuruScim, Some(Auth::Basic(u, p))) => {
            *u == c.guru_scim_username && *p == c.guru_scim_token
        }
        // Guru's API document: the SCIM token alone, as a Bearer token.
        (Vendor::GuruScim, Some(Auth::Bearer(t))) => {
            *t == c.guru_scim_token
                || t.split_once(':')
                    .is_some_and(|(u, p)| u == c.guru_scim_username && p == c.guru_scim_token)
        }
        (Vendor::Scim, Some(Auth::Bearer(t))) => *t == c.scim_bearer_token,
        (Vendor::Scim, Some(Auth::Basic(u, p))) => *u == c.scim_username && *p == c.scim_password,
        _ => false,
    };
    if !ok {
        let what = if auth.is_none() { "missing" } else { "invalid" };
        return Err(reply::error(
            vendor,
            StatusCode::UNAUTHORIZED,
            "",
            &format!("{what} credentials: expected {}", expected(vendor)),
        ));
    }
    check_version(vendor, headers)
}

/// The credential each vendor takes, as a 401 names it.
fn expected(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::UserGuiding | Vendor::Userflow => "Authorization: Bearer <api key>",
        Vendor::Userpilot => "Authorization: Token <api key>",
        Vendor::Appcues => "HTTP Basic <api key>:<api secret>",
        Vendor::Guru => "HTTP Basic <email>:<api token>",
        Vendor::GuruScim => {
            "Bearer <scim token>, HTTP Basic <scim username>:<scim token> or Bearer <username>:<token>"
        }
        Vendor::Scim => "Authorization: Bearer <token> or HTTP Basic",
    }
}

/// The API version headers: Userpilot requires its one version, Userflow refuses another.
fn check_version(vendor: Vendor, headers: &HeaderMap) -> Result<(), Response> {
    match vendor {
        Vendor::Userpilot => {
            let v = headers.get("x-api-version").and_then(|v| v.to_str().ok());
            if v != Some(USERPILOT_API_VERSION) {
                return Err(reply::error(
                    vendor,
                    StatusCode::BAD_REQUEST,
                    "invalid_api_version",
                    &format!(
                        "the X-API-Version header is required and must be {USERPILOT_API_VERSION}, got {}",
                        v.unwrap_or("none")
                    ),
                ));
            }
        }
        // Userflow: a missing header means "latest"; a wrong one is refused.
        Vendor::Userflow => {
            if let Some(v) = headers.get("userflow-version")
                && v.to_str().ok() != Some(USERFLOW_VERSION)
            {
                return Err(reply::error(
                    vendor,
                    StatusCode::BAD_REQUEST,
                    "invalid_version",
                    &format!("Userflow-Version must be {USERFLOW_VERSION}"),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}
