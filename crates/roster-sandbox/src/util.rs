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
///
/// Written digit by digit: list pages show several timestamps per user, and chrono's
/// formatter was a good part of a Userflow users page. Years outside 0–9999 and leap seconds
/// go through chrono (the same text).
pub(crate) fn iso(t: DateTime<Utc>) -> String {
    Iso::of(t).as_str().to_owned()
}

/// A timestamp as [`iso`] writes it, on the stack: a Userflow list page writes about five a
/// user (the user's two, each membership's and its expanded group's two), each one a heap
/// string before.
pub(crate) enum Iso {
    /// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    Short([u8; 24]),
    /// A year outside 0..=9999, as chrono writes it.
    Long(String),
}

impl Iso {
    pub(crate) fn of(t: DateTime<Utc>) -> Iso {
        use chrono::{Datelike, Timelike};
        let year = t.year();
        let nanos = t.nanosecond();
        if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
            return Iso::Long(t.to_rfc3339_opts(SecondsFormat::Millis, true));
        }
        let mut out = [0u8; 24];
        let mut put = |at: usize, value: u32, width: usize| {
            let mut v = value;
            for i in (0..width).rev() {
                out[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year.unsigned_abs(), 4);
        put(5, t.month(), 2);
        put(8, t.day(), 2);
        put(11, t.hour(), 2);
        put(14, t.minute(), 2);
        put(17, t.second(), 2);
        put(20, nanos / 1_000_000, 3);
        out[4] = b'-';
        out[7] = b'-';
        out[10] = b'T';
        out[13] = b':';
        out[16] = b':';
        out[19] = b'.';
        out[23] = b'Z';
        Iso::Short(out)
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Digits and ASCII punctuation only.
            Iso::Short(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            Iso::Long(text) => text,
        }
    }
}

impl serde::Serialize for Iso {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
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
    fn iso_writes_what_chrono_writes() {
        use chrono::TimeZone;
        let mut times = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 123_456_789).unwrap(),
            Utc.timestamp_opt(1_700_000_000, 999_999_999).unwrap(),
            Utc.timestamp_opt(-62_135_596_800, 5_000_000).unwrap(), // year 1
            Utc.timestamp_opt(253_402_300_799, 999_000_000).unwrap(), // 9999-12-31
            Utc.timestamp_opt(253_402_300_800, 0).unwrap(),         // year 10000
            Utc.timestamp_opt(-62_167_219_201, 0).unwrap(),         // year -1
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(), // a leap second
            now(),
        ];
        let mut t = 951_782_400_i64; // 2000-02-29
        for step in 0..2_000_u64 {
            let nanos = u32::try_from(step * 7_919_113 % 1_000_000_000).unwrap();
            times.push(Utc.timestamp_opt(t, nanos).unwrap());
            t += 86_400 * 3 + 3_671;
        }
        for time in times {
            assert_eq!(
                iso(time),
                time.to_rfc3339_opts(SecondsFormat::Millis, true),
                "{time:?}"
            );
        }
    }

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
