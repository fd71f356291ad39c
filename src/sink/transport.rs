//! [`Transport`]: the one way a sink reaches the vendor (the vendor's HTTP client in a real run,
//! a recorder in `--dry-run`, a fake in tests), and [`HttpTransport`], the HTTP client behind it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::wire::{Method, SendError, SendFailure, WireBody, WireRequest, WireResponse, WireStats};
use super::{SinkContext, SinkError};
use crate::config::{Resolved, Secret};

/// The one way a sink reaches the vendor: the vendor's HTTP client in a real run, a recorder in
/// `--dry-run`, a fake in tests.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends one request (retries, rate limits and backoff happen inside).
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError>;

    /// The counters so far.
    fn stats(&self) -> WireStats;
}

/// How a vendor's requests authenticate.
#[derive(Debug, Clone)]
pub enum WireAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user (an email, an API key).
        username: String,
        /// The secret.
        password: Secret,
    },
    /// `Authorization: Token <key>`.
    Token(Secret),
}

/// What a writer asks of its HTTP client: auth, fixed headers and the vendor's documented
/// limits. The common config keys (`max_concurrency`, `requests_per_second`, `timeout_seconds`,
/// `max_retries`) are applied on top.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Auth.
    pub auth: WireAuth,
    /// Fixed headers on every request.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The vendor's documented rate, used when `requests_per_second` is not configured.
    pub requests_per_second: Option<f64>,
    /// The least the whole client pauses after a 429 without `Retry-After`.
    pub default_429_wait: Option<Duration>,
    /// Named buckets with their own rate (requests per second).
    pub buckets: Vec<(&'static str, f64)>,
    /// The vendor documents JSON answers to its writes: a write answered 2xx (but 204) with a
    /// body that is not JSON (an HTML page, a body cut short) is not counted as applied.
    pub json_answers: bool,
}

impl ClientSpec {
    /// A spec with this auth and nothing else.
    pub fn new(auth: WireAuth) -> Self {
        ClientSpec {
            auth,
            headers: Vec::new(),
            requests_per_second: None,
            default_429_wait: None,
            buckets: Vec::new(),
            json_answers: false,
        }
    }
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

/// The vendor's HTTP client as a [`Transport`]: `spec` plus the common keys
/// (`requests_per_second` overrides the vendor's documented rate, `0` turns pacing off;
/// `max_concurrency`, `timeout_seconds`, `max_retries`).
fn http_transport(config: &Resolved, spec: ClientSpec) -> Result<Arc<dyn Transport>, SinkError> {
    use crate::http::{Auth, ClientConfig, HeaderName, HeaderValue, HttpClient, Rate};
    let vendor = config.spec.name;
    let auth = match spec.auth {
        WireAuth::Bearer(token) => Auth::Bearer(token),
        WireAuth::Token(token) => Auth::Token(token),
        WireAuth::Basic { username, password } => Auth::Basic { username, password },
    };
    let mut cfg = ClientConfig::new(vendor, config.base_url()?, auth);
    for (name, value) in spec.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|err| SinkError::Vendor {
            vendor,
            detail: format!("invalid header name {name:?}: {err}"),
        })?;
        cfg = cfg.header(name, HeaderValue::from_static(value));
    }
    let common = &config.common;
    cfg.requests_per_second = match common.requests_per_second {
        Some(rate) if rate > 0.0 => Some(rate),
        Some(_) => None,
        None => spec.requests_per_second,
    };
    if let Some(max) = common.max_concurrency {
        cfg.max_concurrency = max.max(1);
    }
    if let Some(secs) = common.timeout_seconds.filter(|s| *s > 0.0) {
        cfg.timeout = Duration::from_secs_f64(secs);
    }
    if let Some(retries) = common.max_retries {
        cfg.max_retries = retries;
    }
    cfg.default_429_wait = spec.default_429_wait;
    for (name, per_second) in spec.buckets {
        cfg = cfg.bucket(name, Some(Rate::per_second(per_second)));
    }
    let client = HttpClient::new(cfg).map_err(|err| SinkError::Vendor {
        vendor,
        detail: err.to_string(),
    })?;
    Ok(Arc::new(HttpTransport {
        client,
        json_answers: spec.json_answers,
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
    let body: Value = match serde_json::from_slice(&response.body) {
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
        use crate::http::Method as M;
        let method = match request.method {
            Method::Get => M::GET,
            Method::Post => M::POST,
            Method::Put => M::PUT,
            Method::Patch => M::PATCH,
            Method::Delete => M::DELETE,
        };
        let write = crate::http::client::is_write(&method);
        let shown = format!("{method} {}", request.path);
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
                            "{}: {shown} answered {} but {why}, so the write is not counted as applied",
                            self.client.vendor(),
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
