//! The wire types a writer builds and reads: [`WireRequest`] (relative to the vendor's base
//! URL), [`WireResponse`], [`SendError`] and [`WireStats`], and the helpers that shape a body or
//! a path ([`key_segment`], [`object`], [`stringify`]).

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

use super::hash::PayloadHash;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// GET
    #[serde(rename = "GET")]
    Get,
    /// POST
    #[serde(rename = "POST")]
    Post,
    /// PUT
    #[serde(rename = "PUT")]
    Put,
    /// PATCH
    #[serde(rename = "PATCH")]
    Patch,
    /// DELETE
    #[serde(rename = "DELETE")]
    Delete,
}

impl Method {
    /// The method as HTTP writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl From<Method> for crate::http::Method {
    fn from(method: Method) -> Self {
        match method {
            Method::Get => crate::http::Method::GET,
            Method::Post => crate::http::Method::POST,
            Method::Put => crate::http::Method::PUT,
            Method::Patch => crate::http::Method::PATCH,
            Method::Delete => crate::http::Method::DELETE,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum WireBody {
    /// No body.
    None,
    /// A JSON body.
    Json(Value),
    /// A JSON body serialised once ([`WireRequest::json_of`]): the bytes sent, hashed and shown
    /// by a dry run.
    JsonBytes(Bytes),
    /// Raw bytes (NDJSON, CSV) with their content type.
    Bytes {
        /// `Content-Type`.
        content_type: String,
        /// The body.
        bytes: Bytes,
    },
    /// A file streamed as the body (bulk uploads spooled to disk).
    File {
        /// `Content-Type`.
        content_type: String,
        /// The file.
        path: PathBuf,
    },
}

impl WireBody {
    /// A JSON body as a value, however it is held (tests and writers that read their own
    /// requests back); `None` for other bodies.
    pub fn json_value(&self) -> Option<Value> {
        match self {
            WireBody::Json(value) => Some(value.clone()),
            WireBody::JsonBytes(bytes) => serde_json::from_slice(bytes).ok(),
            _ => None,
        }
    }
}

/// One request, relative to the vendor's base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct WireRequest {
    /// The method.
    pub method: Method,
    /// The path after the base URL (with its leading `/`), query included, each part already
    /// percent-encoded.
    pub path: String,
    /// The body.
    pub body: WireBody,
    /// False for calls that must not be repeated after an ambiguous failure (events, invites,
    /// SCIM POST): the HTTP engine then retries only answers that prove nothing happened.
    pub idempotent: bool,
    /// A named rate bucket of the vendor's client (e.g. Userpilot's delete: 1 request per 2 s).
    pub bucket: Option<&'static str>,
    /// Headers of this request only (SCIM's `Content-Type: application/scim+json`, `If-Match`),
    /// over the client's fixed ones.
    pub headers: Vec<(&'static str, String)>,
    /// Fields the vendor documents in a successful answer (UserGuiding's `success`): an answer
    /// without them is not counted as applied. Checked for vendors with
    /// [`ClientSpec::json_answers`].
    pub expect_fields: &'static [&'static str],
}

impl WireRequest {
    /// A request without a body. Idempotent by the HTTP engine's one rule
    /// ([`crate::http::method_is_idempotent`], RFC 9110: GET, PUT and DELETE are, POST and PATCH
    /// are not) until marked with [`WireRequest::idempotent`] or [`WireRequest::not_idempotent`].
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        WireRequest {
            method,
            path: path.into(),
            body: WireBody::None,
            idempotent: crate::http::method_is_idempotent(&method.into()),
            bucket: None,
            headers: Vec::new(),
            expect_fields: &[],
        }
    }

    /// The fields a successful answer must hold (see [`WireRequest::expect_fields`]).
    pub fn expect_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.expect_fields = fields;
        self
    }

    /// Adds a header to this request.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks a POST or PATCH as safe to repeat (an upsert by key, a merge of properties).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// With a JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = WireBody::Json(body);
        self
    }

    /// With a JSON body serialised now, once, into a pooled buffer ([`super::body`]): no `Value`
    /// tree is built, and the hash and the dry run use the same bytes.
    pub fn json_of<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self, serde_json::Error> {
        self.body = WireBody::JsonBytes(super::body::encode_json(body)?);
        Ok(self)
    }

    /// Marks the request as unsafe to repeat blindly.
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// Sends it through a named rate bucket.
    pub fn bucket(mut self, name: &'static str) -> Self {
        self.bucket = Some(name);
        self
    }

    /// Serialises a JSON body now, once, into a pooled buffer (the bytes then sent and shown by
    /// a dry run) and returns the payload hash of those bytes: the same hash as
    /// [`WireRequest::payload_hash`] of the `Value`, without serialising it twice.
    pub fn encode_body(&mut self) -> Option<PayloadHash> {
        if let WireBody::Json(value) = &self.body
            && let Ok(bytes) = super::body::encode_json(value)
        {
            self.body = WireBody::JsonBytes(bytes);
        }
        self.payload_hash()
    }

    /// The payload hash of the body.
    pub fn payload_hash(&self) -> Option<PayloadHash> {
        match &self.body {
            WireBody::None => None,
            WireBody::Json(v) => Some(PayloadHash::of_json(v)),
            WireBody::JsonBytes(bytes) => Some(PayloadHash::of_bytes(bytes)),
            WireBody::Bytes { bytes, .. } => Some(PayloadHash::of_bytes(bytes)),
            WireBody::File { path, .. } => {
                Some(PayloadHash::of_bytes(path.to_string_lossy().as_bytes()))
            }
        }
    }
}

/// A successful answer (any status the HTTP engine hands back as success: 2xx).
#[derive(Debug, Clone, PartialEq)]
pub struct WireResponse {
    /// The status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// True when no request was sent (`--dry-run`): the body is empty and a writer that reads
    /// answers must assume the case that sends the most.
    pub dry_run: bool,
}

impl WireResponse {
    /// A `200` with a JSON body (`null`: empty).
    pub fn ok(body: Value) -> Self {
        WireResponse {
            status: 200,
            body: if body.is_null() {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            },
            dry_run: false,
        }
    }

    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// How a request failed, as far as a writer needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendFailure {
    /// 401 or 403: the credentials are wrong or lack a permission. Fatal.
    Credentials,
    /// A 4xx (other than 401/403/408/429): the vendor refused this request. Reject the record.
    Refused,
    /// A retryable answer (429, 408, 5xx) until the retry budget ran out, or a non-idempotent
    /// request that failed ambiguously and was not repeated. Reject the record with the last
    /// answer; many in a row mean the vendor is down.
    Exhausted,
    /// No answer at all (connect failure, timeouts, resets) past the retry budget. Fatal.
    Unreachable,
    /// The request could not be built or encoded (a bug or a local problem). Reject the record.
    Local,
}

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// The class of failure.
    pub failure: SendFailure,
    /// The last HTTP status, if one came back.
    pub status: Option<u16>,
    /// An excerpt of the last answer's body (credentials scrubbed).
    pub body_excerpt: Option<String>,
    /// One line naming the vendor, method, URL (no credentials) and what happened.
    pub message: String,
    /// True when the vendor may have acted on the request although it failed.
    pub maybe_processed: bool,
}

/// Counters a transport keeps for the run report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WireStats {
    /// Requests (`send` calls).
    pub requests: u64,
    /// Attempts after the first, over all requests.
    pub retries: u64,
    /// 429 answers.
    pub status_429: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Attempts that got no answer (connect failures, resets, timeouts).
    pub transport_errors: u64,
    /// Seconds spent waiting on rate limits: the client-side limit plus pauses after 429s
    /// (`Retry-After`, UserGuiding's block).
    pub rate_limit_wait_seconds: f64,
    /// Seconds spent in backoff between attempts.
    pub backoff_wait_seconds: f64,
}

/// Every value as a string (numbers and booleans in their JSON text); `null` stays `null`.
pub fn stringify(values: Map<String, Value>) -> Map<String, Value> {
    values
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(_) | Value::Null => v,
                other => Value::String(other.to_string()),
            };
            (k, v)
        })
        .collect()
}

/// A JSON object from `(key, value)` pairs.
pub fn object<I, K>(pairs: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// Percent-encodes a key as one path segment, leaving only RFC 3986 unreserved characters (ids
/// in paths may hold `/`, `@`, spaces). Stricter than [`crate::http::path_segment`], which keeps
/// `@` and `:` for the tap's listings.
pub fn key_segment(raw: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    /// Everything but RFC 3986 unreserved characters.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(raw, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_body_encoded_once_keeps_the_hash_an_earlier_version_stored() {
        // Ledgers hold hashes of the `Value`'s serialisation: the bytes now sent and hashed are
        // those bytes, so an unchanged record still compares equal after an upgrade.
        let body = serde_json::json!({"user_id": "u1", "metadata": {"plan": "pro", "mrr": 12.5,
            "email": null, "name": "Zoë"}, "company": {"id": "g1", "company_id": "g1"}});
        let mut request = WireRequest::new(Method::Post, "/identify").json(body.clone());
        let before = request.payload_hash();
        let after = request.encode_body();
        assert_eq!(after, before);
        assert_eq!(after, Some(PayloadHash::of_json(&body)));
        let WireBody::JsonBytes(bytes) = &request.body else {
            panic!("not encoded: {:?}", request.body)
        };
        assert_eq!(&bytes[..], serde_json::to_vec(&body).unwrap().as_slice());
        assert_eq!(request.body.json_value(), Some(body));
        assert_eq!(request.encode_body(), after);
    }

    #[test]
    fn a_wire_request_is_idempotent_by_the_http_engines_rule() {
        for method in [
            Method::Get,
            Method::Post,
            Method::Put,
            Method::Patch,
            Method::Delete,
        ] {
            assert_eq!(
                WireRequest::new(method, "/x").idempotent,
                crate::http::method_is_idempotent(&method.into()),
                "{method}"
            );
        }
        assert!(!WireRequest::new(Method::Post, "/x").idempotent);
        assert!(WireRequest::new(Method::Post, "/x").idempotent().idempotent);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(key_segment("a b/c@d.e"), "a%20b%2Fc%40d.e");
        assert_eq!(key_segment("u_1-x~"), "u_1-x~");
        // Encoded, so a key cannot smuggle a dot segment in through `%`.
        assert_eq!(key_segment("%2e%2e"), "%252e%252e");
        assert_eq!(key_segment("a/../b"), "a%2F..%2Fb");
    }
}
