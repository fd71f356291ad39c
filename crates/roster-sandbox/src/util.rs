//! Small helpers shared by the vendor modules: query strings, JSON bodies, timestamps.

use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Decoded `key=value` pairs in the order sent.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// The first value of `key` (or of `key[]`).
pub(crate) fn first<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| {
            k == key || (k.len() == key.len() + 2 && k.starts_with(key) && k.ends_with("[]"))
        })
        .map(|(_, v)| v.as_str())
}

/// Every value of `key` and `key[]`, comma lists split.
pub(crate) fn all(pairs: &[(String, String)], key: &str) -> Vec<String> {
    let bracket = format!("{key}[]");
    pairs
        .iter()
        .filter(|(k, _)| k == key || *k == bracket)
        .flat_map(|(_, v)| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses a JSON body, with an error message fit for a 400 answer.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("the request body is empty: a JSON object is required".into());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

/// RFC 3339 in UTC with milliseconds, as the vendors write timestamps.
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// A string, number, boolean or null.
pub(crate) fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// `http://HOST` from the request's Host header (the sandbox's own address as the client saw it).
pub(crate) fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

/// A JSON type name for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// An id given as a string (or a number, which vendors accept and store as text).
pub(crate) fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_helpers() {
        let p = query_pairs(Some(
            "limit=5&expand[]=memberships&expand=groups&order_by=created_at",
        ));
        assert_eq!(first(&p, "limit"), Some("5"));
        assert_eq!(all(&p, "expand"), vec!["memberships", "groups"]);
        assert_eq!(first(&p, "expand"), Some("memberships"));
    }
}
