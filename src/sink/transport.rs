//! [`Transport`]: the one way a sink reaches the vendor (the vendor's HTTP client in a real run,
//! a recorder in `--dry-run`, a fake in tests), and [`HttpTransport`], the HTTP client behind it.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::wire::{SendError, SendFailure, WireBody, WireRequest, WireResponse, WireStats};
use super::{SinkContext, SinkError};
use crate::config::Resolved;
use crate::http::{ClientConfig, ClientSpec, HttpClient};

/// The one way a sink reaches the vendor: the vendor's HTTP client in a real run, a recorder in
/// `--dry-run`, a fake in tests.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends one request (retries, rate limits and backoff happen inside).
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError>;

    /// The counters so far.
    fn stats(&self) -> WireStats;
}

impl SinkContext<'_> {
    /// The transport a writer must send through: the given one (dry run, tests), else the
    /// vendor's HTTP client built from `spec` and the common config keys.
    pub fn transport(&self, spec: ClientSpec) -> Result<Arc<dyn Transport>, SinkError> {
        match &self.transport {
            Some(transport) => Ok(transport.clone()),
            None => {
                let transport = http_transport(self.config, spec)?;
                if let Some(built) = self.built {
                    *built.lock() = Some(transport.clone());
                }
                Ok(transport)
            }
        }
    }
}

/// Where [`SinkContext::transport`] leaves the HTTP transport it built (see `built`).
pub type BuiltTransport = parking_lot::Mutex<Option<Arc<dyn Transport>>>;

/// The vendor's HTTP client as a [`Transport`], built by the one client builder
/// ([`ClientConfig::for_vendor`]: `spec` plus the common keys).
fn http_transport(config: &Resolved, spec: ClientSpec) -> Result<Arc<dyn Transport>, SinkError> {
    let json_answers = spec.json_answers;
    let client = HttpClient::new(ClientConfig::for_vendor(config, spec)?).map_err(|err| {
        SinkError::Vendor {
            vendor: config.spec.name,
            detail: err.to_string(),
        }
    })?;
    Ok(Arc::new(HttpTransport {
        client,
        json_answers,
    }))
}

/// [`crate::http::HttpClient`] as a [`Transport`].
#[derive(Debug)]
pub struct HttpTransport {
    client: crate::http::HttpClient,
    json_answers: bool,
}

/// Why a write's successful answer is not the shape the vendor documents (`None`: it is): a
/// JSON content type and a body that parses, holding `fields`. 204 and an empty body with no
/// fields expected pass (deletes and some upserts answer with nothing).
fn unconfirmed_answer(response: &crate::http::Response, fields: &[&str]) -> Option<String> {
    if response.status.as_u16() == 204 || (response.body.is_empty() && fields.is_empty()) {
        return None;
    }
    let content_type = response.header("content-type").unwrap_or("");
    if !content_type.to_ascii_lowercase().contains("json") {
        return Some(format!(
            "the answer is {} instead of JSON",
            if content_type.is_empty() {
                "without a content type".to_string()
            } else {
                format!("{content_type:?}")
            }
        ));
    }
    // Only the shape matters: with no fields to look for, the answer is checked as JSON without
    // building it (Userflow answers every upsert with the whole object it wrote: building that
    // `Value` was a tenth of a real upsert's instructions).
    let parsed = if fields.is_empty() {
        serde_json::from_slice::<serde::de::IgnoredAny>(&response.body).map(|_| Value::Null)
    } else {
        serde_json::from_slice::<Value>(&response.body)
    };
    let body = match parsed {
        Ok(body) => body,
        Err(err) if err.is_eof() => {
            return Some(format!(
                "the JSON answer is cut short after {} bytes",
                response.body.len()
            ));
        }
        Err(err) => return Some(format!("the answer is not valid JSON ({err})")),
    };
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| body.get(f).is_none())
        .collect();
    (!missing.is_empty()).then(|| format!("the answer lacks {}", missing.join(", ")))
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError> {
        let method: crate::http::Method = request.method.into();
        let write = crate::http::client::is_write(&method);
        // What the error names (built only for an error).
        let shown = |method: &crate::http::Method| format!("{method} {}", request.path);
        let method_shown = method.clone();
        let expect_fields = request.expect_fields;
        let mut builder = self
            .client
            .request(method, &request.path)
            .idempotent(request.idempotent);
        if let Some(bucket) = request.bucket {
            builder = builder.bucket(bucket);
        }
        // Before the body, so a request's own Content-Type wins over the JSON default.
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        builder = match request.body {
            WireBody::None => builder,
            WireBody::Json(value) => builder.json(&value),
            WireBody::JsonBytes(bytes) => builder.json_bytes(bytes),
            WireBody::Bytes {
                content_type,
                bytes,
            } => builder.body(bytes, &content_type),
            WireBody::File { content_type, path } => match tokio::fs::read(&path).await {
                Ok(bytes) => builder.body(bytes, &content_type),
                Err(err) => {
                    return Err(SendError {
                        failure: SendFailure::Local,
                        status: None,
                        body_excerpt: None,
                        message: format!("cannot read {}: {err}", path.display()),
                        maybe_processed: false,
                    });
                }
            },
        };
        match builder.send().await {
            Ok(response) if write && self.json_answers => {
                match unconfirmed_answer(&response, expect_fields) {
                    None => Ok(WireResponse {
                        status: response.status.as_u16(),
                        body: response.body,
                        dry_run: false,
                    }),
                    Some(why) => Err(SendError {
                        failure: SendFailure::Exhausted,
                        status: Some(response.status.as_u16()),
                        body_excerpt: Some(response.excerpt()),
                        message: format!(
                            "{}: {} answered {} but {why}, so the write is not counted as applied",
                            self.client.vendor(),
                            shown(&method_shown),
                            response.status
                        ),
                        // Something answered 2xx: the vendor may have acted (a proxy's page, a
                        // body cut short), so a create is looked up before it is sent again.
                        maybe_processed: !request.idempotent,
                    }),
                }
            }
            Ok(response) => Ok(WireResponse {
                status: response.status.as_u16(),
                body: response.body,
                dry_run: false,
            }),
            Err(err) => Err(send_error(&err, request.idempotent)),
        }
    }

    fn stats(&self) -> WireStats {
        let s = self.client.stats();
        WireStats {
            requests: s.requests,
            retries: s.retries,
            status_429: s.status_429,
            status_5xx: s.status_5xx,
            transport_errors: s.transport_errors,
            rate_limit_wait_seconds: (s.rate_limit_wait + s.pause_wait).as_secs_f64(),
            backoff_wait_seconds: s.backoff_wait.as_secs_f64(),
        }
    }
}

/// Reads an [`crate::http::HttpError`] the way writers need it.
fn send_error(err: &crate::http::HttpError, idempotent: bool) -> SendError {
    use crate::http::HttpError;
    let failure = match err {
        _ if err.is_auth() => SendFailure::Credentials,
        // A signal stopped the run: the record is not settled, the run ends.
        HttpError::Stopped { .. } => SendFailure::Unreachable,
        HttpError::Status { .. } if err.is_transient() => SendFailure::Exhausted,
        HttpError::Status { .. } => SendFailure::Refused,
        // A request that may have been acted on was not repeated: that is about this record.
        HttpError::Transport { .. } if !idempotent && err.maybe_processed() => {
            SendFailure::Exhausted
        }
        HttpError::Transport { .. } => SendFailure::Unreachable,
        HttpError::Build { .. }
        | HttpError::InvalidUrl { .. }
        | HttpError::Encode { .. }
        | HttpError::Decode { .. } => SendFailure::Local,
    };
    SendError {
        failure,
        status: err.status().map(|s| s.as_u16()),
        body_excerpt: err.body_excerpt().map(str::to_string),
        message: err.to_string(),
        // Only a request that must not be repeated makes "it may have been acted on" the
        // record's business; an idempotent one was repeated until its budget ran out.
        maybe_processed: err.maybe_processed() && !idempotent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::StatusCode;
    use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

    fn answer(body: &'static str) -> crate::http::Response {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let url = url::Url::parse("http://127.0.0.1:1/users").unwrap();
        crate::http::Response::new("userflow", StatusCode::OK, headers, body, url)
    }

    #[test]
    fn answers_are_checked_as_json_with_or_without_fields_to_find() {
        // Without fields the answer is only checked, not built: the same verdicts.
        let whole = r#"{"id": "u1", "attributes": {"plan": "pro", "n": [1, 2.5, null]}}"#;
        assert_eq!(unconfirmed_answer(&answer(whole), &[]), None);
        assert_eq!(unconfirmed_answer(&answer(whole), &["id"]), None);
        let short = unconfirmed_answer(&answer(r#"{"id": "u1", "attr"#), &[]).unwrap();
        assert!(short.contains("cut short"), "{short}");
        let bad = unconfirmed_answer(&answer("<html>ok</html>"), &[]).unwrap();
        assert!(bad.contains("not valid JSON"), "{bad}");
        let bad = unconfirmed_answer(&answer(r#"{"id": "u1"} trailing"#), &[]).unwrap();
        assert!(bad.contains("not valid JSON"), "{bad}");
        let lacks = unconfirmed_answer(&answer(whole), &["success"]).unwrap();
        assert_eq!(lacks, "the answer lacks success");
    }
}
