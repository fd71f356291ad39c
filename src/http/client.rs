//! [`HttpClient`], its [`RequestBuilder`] and [`Response`]: one connection pool per vendor, and
//! the one retry loop in roster.
//!
//! Every attempt passes, in order: a concurrency slot, the client-wide pause (set by
//! `Retry-After` or a 429 wait), the named bucket's pacer, then the client-wide pacer, and goes on
//! the wire at once. Answers feed the
//! adaptive concurrency and the pacer of the bucket the request used.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::concurrency::{Concurrency, Signal};
use super::config::ClientConfig;
use super::error::{HttpError, TransportKind};
use super::rate::{AdaptiveRate, Slot};
use super::redact;
use super::retry::{self, Verdict};
use super::shutdown::{Shutdown, Stopped};
use super::stats::{self, Counters, HttpStats};

/// Largest response body the engine holds in memory; list pages and job answers are far smaller.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Idle keep-alive connections are closed after this; hyper's default pool timeout.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keep-alive probes on pooled connections, so dead peers are noticed between pages.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Redirects followed on reads; reqwest drops `Authorization` on any cross-origin hop. Writes
/// follow none (see [`is_write`]).
const MAX_REDIRECTS: usize = 5;

/// Why a write answered with a redirect fails: following it would turn a POST into a GET (301,
/// 302, 303) that "succeeds" without the vendor applying anything, or re-send the body to
/// wherever `Location` points (307, 308), possibly another host.
const WRITE_REDIRECTED: &str =
    "a write is never sent on to a redirect, so the vendor did not apply it; check base_url";

/// True for a method that changes something at the vendor. Writes never follow redirects: the
/// one place the redirect policy is decided (with the two reqwest clients in
/// [`HttpClient::new`]).
pub fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A per-request hook that sees every answer first: `Some(verdict)` decides, `None` falls back to
/// the default classification.
pub type ClassifyFn = Arc<dyn Fn(&Response) -> Option<Verdict> + Send + Sync>;

/// One pacer and the FIFO queue in front of it.
#[derive(Debug)]
struct Gate {
    turn: tokio::sync::Mutex<()>,
    rate: Mutex<AdaptiveRate>,
}

impl Gate {
    /// `zero_delays` (tests): no cautious start either, so a test's first requests go at once.
    fn new(rps: Option<f64>, zero_delays: bool) -> Self {
        let rate = AdaptiveRate::new(rps);
        Self {
            turn: tokio::sync::Mutex::new(()),
            rate: Mutex::new(if zero_delays {
                rate.without_cautious_start()
            } else {
                rate
            }),
        }
    }

    fn with_rate<T>(&self, f: impl FnOnce(&mut AdaptiveRate) -> T) -> T {
        f(&mut self.rate.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

struct Inner {
    vendor: &'static str,
    base: Url,
    http: reqwest::Client,
    /// The same pool settings without redirects, for writes.
    http_writes: reqwest::Client,
    timeout: Duration,
    max_retries: u32,
    default_429_wait: Option<Duration>,
    zero_delays: bool,
    shutdown: Shutdown,
    secrets: Arc<[String]>,
    pause_until: Mutex<Option<Instant>>,
    global: Gate,
    buckets: Mutex<HashMap<String, Arc<Gate>>>,
    concurrency: Concurrency,
    counters: Counters,
}

/// The HTTP client for one vendor connection. Cheap to clone (shared state inside): every clone
/// shares the pool, the pacers, the pause and the counters.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("vendor", &self.inner.vendor)
            .field("base_url", &redact::display_url(&self.inner.base))
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds the client: rustls with verified certificates, keep-alive pool, gzip, timeouts,
    /// auth and fixed headers on every request.
    pub fn new(cfg: ClientConfig) -> Result<Self, HttpError> {
        let vendor = cfg.vendor;
        let build = |detail: String| HttpError::Build { vendor, detail };
        if !matches!(cfg.base_url.scheme(), "http" | "https") || cfg.base_url.cannot_be_a_base() {
            return Err(build(format!(
                "base url {} must be an http or https url",
                redact::display_url(&cfg.base_url)
            )));
        }
        let mut base = cfg.base_url.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_fragment(None);

        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(auth) = cfg.auth.header_value().map_err(build)? {
            headers.insert(reqwest::header::AUTHORIZATION, auth);
        }
        let builder = || {
            reqwest::Client::builder()
                .use_rustls_tls()
                .https_only(false)
                .gzip(true)
                .user_agent(cfg.user_agent.clone())
                .default_headers(headers.clone())
                .connect_timeout(cfg.connect_timeout)
                .timeout(cfg.timeout)
                .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                .pool_max_idle_per_host(cfg.max_concurrency.max(1))
                .tcp_keepalive(TCP_KEEPALIVE)
                .tcp_nodelay(true)
        };
        let http = builder()
            .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
            .build()
            .map_err(|e| build(error_chain(&e.without_url(), &[])))?;
        let http_writes = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| build(error_chain(&e.without_url(), &[])))?;

        // A very low configured rate is legal but slow: say so rather than seem to hang.
        if let Some(rate) = cfg.requests_per_second.filter(|r| *r < 1.0) {
            tracing::info!(
                vendor,
                "requests_per_second {rate}: one request every {:.0} s",
                1.0 / rate
            );
        }
        let mut secrets = cfg.auth.secret_values();
        if let Some(pw) = cfg.base_url.password() {
            secrets.push(pw.to_owned());
        }
        let buckets = cfg
            .buckets
            .iter()
            .map(|b| {
                (
                    b.name.clone(),
                    Arc::new(Gate::new(
                        b.rate.map(|r| r.as_per_second()),
                        cfg.zero_delays,
                    )),
                )
            })
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                vendor,
                base,
                http,
                http_writes,
                timeout: cfg.timeout,
                max_retries: cfg.max_retries,
                default_429_wait: cfg.default_429_wait,
                zero_delays: cfg.zero_delays,
                shutdown: cfg.shutdown.clone(),
                secrets: secrets.into(),
                pause_until: Mutex::new(None),
                global: Gate::new(cfg.requests_per_second, cfg.zero_delays),
                buckets: Mutex::new(buckets),
                concurrency: Concurrency::new(cfg.max_concurrency),
                counters: Counters::default(),
            }),
        })
    }

    /// The vendor name this client was built for.
    pub fn vendor(&self) -> &'static str {
        self.inner.vendor
    }

    /// The base URL (without credentials).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Resolves a path or URL against the base:
    /// - a relative path (`/users`, `users?limit=5`) is joined onto the base *keeping its path
    ///   prefix* (`https://api.getguru.com/api/v1` + `/members` → `…/api/v1/members`); a path that
    ///   already starts with the prefix is taken as is, so a server's own next-page path works;
    /// - an absolute `http(s)` URL (a `next_page_url` or `Link`) is accepted only on the base's
    ///   origin, so credentials never go to another host.
    pub fn url(&self, path_or_url: &str) -> Result<Url, HttpError> {
        resolve(&self.inner.base, path_or_url).map_err(|reason| HttpError::InvalidUrl {
            vendor: self.inner.vendor,
            input: redact::scrub(&shorten(path_or_url), &self.inner.secrets),
            reason,
        })
    }

    /// Starts a request with any method.
    pub fn request(&self, method: Method, path_or_url: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            url: self.url(path_or_url),
            method,
            headers: HeaderMap::new(),
            body: None,
            error: None,
            bucket: None,
            idempotent: None,
            classify: None,
            timeout: None,
            max_retries: None,
        }
    }

    pub fn get(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::GET, path_or_url)
    }

    pub fn post(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::POST, path_or_url)
    }

    pub fn put(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::PUT, path_or_url)
    }

    pub fn patch(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::PATCH, path_or_url)
    }

    pub fn delete(&self, path_or_url: &str) -> RequestBuilder {
        self.request(Method::DELETE, path_or_url)
    }

    /// A snapshot of the counters, the concurrency limit and the client-wide rate.
    pub fn stats(&self) -> HttpStats {
        let mut s = self.inner.counters.snapshot();
        s.concurrency_limit = self.inner.concurrency.limit();
        self.inner.global.with_rate(|r| {
            s.rate_limit = r.rate();
            s.rate_cuts = r.cuts();
        });
        s
    }

    /// The current rate of a named bucket (`None`: unknown bucket or no limit yet).
    pub fn bucket_rate(&self, name: &str) -> Option<f64> {
        let gate = self
            .inner
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        gate.and_then(|g| g.with_rate(|r| r.rate()))
    }

    /// Pauses every request of this client until `until` (what `Retry-After` does).
    pub fn pause_until(&self, until: Instant) {
        self.inner.pause(until);
    }
}

impl Inner {
    fn pause(&self, until: Instant) {
        {
            let mut p = self
                .pause_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if p.is_some_and(|cur| cur >= until) {
                return;
            }
            *p = Some(until);
        }
        // The pacers count the pause in their estimate (the server's bucket refills meanwhile).
        self.global.with_rate(|r| r.on_pause(until));
        let gates: Vec<Arc<Gate>> = self
            .buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for g in gates {
            g.with_rate(|r| r.on_pause(until));
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        let p = *self
            .pause_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.filter(|t| *t > Instant::now())
    }

    /// Sleeps through the client-wide pause, if any; returns the time slept.
    async fn wait_pause(&self) -> Duration {
        let mut slept = Duration::ZERO;
        while let Some(until) = self.paused_until() {
            let t0 = Instant::now();
            tokio::time::sleep_until(until).await;
            slept += t0.elapsed();
        }
        slept
    }

    fn gate(&self, name: &str) -> Arc<Gate> {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Gate::new(None, self.zero_delays)))
            .clone()
    }

    /// Waits for the pause, then for a slot of the bucket's pacer and of the client-wide pacer.
    async fn pace(&self, gate: &Gate) -> Duration {
        let mut paused = Duration::ZERO;
        let _turn = gate.turn.lock().await;
        loop {
            paused += self.wait_pause().await;
            match gate.with_rate(|r| r.poll(Instant::now())) {
                Slot::Go => return paused,
                Slot::WaitUntil(t) => tokio::time::sleep_until(t).await,
            }
        }
    }

    async fn admit(&self, bucket: Option<&Gate>) {
        let t0 = Instant::now();
        let mut paused = Duration::ZERO;
        loop {
            paused += self.wait_pause().await;
            if let Some(b) = bucket {
                paused += self.pace(b).await;
            }
            paused += self.pace(&self.global).await;
            if self.paused_until().is_none() {
                break;
            }
        }
        stats::add_wait(&self.counters.pause_wait_ns, paused);
        stats::add_wait(
            &self.counters.rate_limit_wait_ns,
            t0.elapsed().saturating_sub(paused),
        );
    }

    /// Backoff before a retry; `Err` when a signal ends it (and with it the request).
    async fn sleep(&self, d: Duration) -> Result<(), Stopped> {
        if self.shutdown.is_begun() {
            return Err(Stopped);
        }
        if !self.zero_delays && !d.is_zero() {
            stats::add_wait(&self.counters.backoff_wait_ns, d);
            self.shutdown.sleep(d).await?;
        }
        Ok(())
    }

    /// One attempt on the wire: the answer with its whole body, or what went wrong.
    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Bytes, Url), (TransportKind, String)> {
        let http = if is_write(method) {
            &self.http_writes
        } else {
            &self.http
        };
        let mut req = http
            .request(method.clone(), url.clone())
            .headers(headers.clone())
            .timeout(timeout);
        if let Some(b) = body {
            stats::add(&self.counters.bytes_sent, b.len() as u64);
            req = req.body(b.clone());
        }
        let exchange = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| (transport_kind(&e, false), self.describe(&e)))?;
            let status = resp.status();
            let headers = std::mem::take(resp.headers_mut());
            let final_url = resp.url().clone();
            let mut buf = BytesMut::new();
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        if buf.len() + chunk.len() > MAX_BODY_BYTES {
                            return Err((
                                TransportKind::TooLarge,
                                format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                            ));
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return Err((transport_kind(&e, true), self.describe(&e))),
                }
            }
            stats::add(&self.counters.bytes_received, buf.len() as u64);
            Ok((status, headers, buf.freeze(), final_url))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err((
                TransportKind::Timeout,
                format!("no complete answer within {timeout:?}"),
            )),
        }
    }

    /// The wait before the next attempt after a retryable answer. A `Retry-After` pauses the
    /// whole client for exactly that long (the admission step then holds every request, this one
    /// included); a 429 without one pauses the client for `default_429_wait` if configured; other
    /// answers back off with full jitter.
    fn plan_wait(
        &self,
        attempt: u32,
        status: StatusCode,
        retry_after: Option<Duration>,
    ) -> Duration {
        if self.zero_delays {
            return Duration::ZERO;
        }
        if let Some(ra) = retry_after {
            self.pause(Instant::now() + ra);
            return Duration::ZERO;
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            if let Some(d) = self.default_429_wait {
                self.pause(Instant::now() + d);
                return Duration::ZERO;
            }
        }
        retry::backoff(attempt)
    }

    fn describe(&self, e: &reqwest::Error) -> String {
        error_chain(e, &self.secrets)
    }
}

/// A reqwest error and its sources, without the URL (printed separately, redacted).
fn error_chain(e: &reqwest::Error, secrets: &[String]) -> String {
    let mut out = String::new();
    let mut cur: Option<&dyn std::error::Error> = Some(e);
    let mut first = true;
    while let Some(err) = cur {
        let text = if first {
            // reqwest's own Display would append the URL; describe the kind instead.
            reqwest_kind_text(e)
        } else {
            err.to_string()
        };
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        first = false;
        cur = err.source();
    }
    redact::scrub(&out, secrets)
}

fn reqwest_kind_text(e: &reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "connect error"
    } else if e.is_timeout() {
        "timeout"
    } else if e.is_body() {
        "body error"
    } else if e.is_decode() {
        "decode error"
    } else if e.is_redirect() {
        "redirect error"
    } else if e.is_request() {
        "error sending request"
    } else if e.is_builder() {
        "builder error"
    } else {
        "error"
    };
    kind.to_owned()
}

fn transport_kind(e: &reqwest::Error, reading_body: bool) -> TransportKind {
    if e.is_connect() {
        // Includes connect timeouts: the request never left.
        TransportKind::Connect
    } else if e.is_timeout() {
        TransportKind::Timeout
    } else if reading_body || e.is_body() || e.is_decode() {
        TransportKind::Body
    } else if e.is_request() {
        TransportKind::Connection
    } else {
        TransportKind::Other
    }
}

fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() > MAX {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    } else {
        s.to_owned()
    }
}

/// See [`HttpClient::url`].
pub(crate) fn resolve(base: &Url, input: &str) -> Result<Url, String> {
    let s = input.trim();
    if s.starts_with("//") {
        return Err("protocol-relative urls are not accepted".to_owned());
    }
    if let Ok(abs) = Url::parse(s) {
        if matches!(abs.scheme(), "http" | "https") {
            if abs.origin() != base.origin() {
                return Err(format!(
                    "absolute urls must stay on {}, so credentials never go to another host",
                    base.origin().ascii_serialization()
                ));
            }
            if !abs.username().is_empty() || abs.password().is_some() {
                return Err("urls with embedded credentials are not accepted".to_owned());
            }
            let mut abs = abs;
            abs.set_fragment(None);
            return Ok(abs);
        }
        // `bulk:jobs:1` parses as a URL with scheme `bulk`; it is a relative path here.
    }
    let without_fragment = s.split('#').next().unwrap_or("");
    let (path, query) = match without_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (without_fragment, None),
    };
    // A dot segment (a key `..` put into `/users/{key}`) would be resolved away and address
    // another resource: refuse it rather than send the request somewhere else.
    if path.split('/').any(super::is_dot_segment) {
        return Err(format!(
            "the path {:?} has a . or .. segment, which would address another resource",
            shorten(path)
        ));
    }
    let prefix = base.path().trim_end_matches('/');
    let full = if path.is_empty() {
        base.path().to_owned()
    } else {
        let path = if path.starts_with('/') {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(format!("/{path}"))
        };
        let already_prefixed = !prefix.is_empty()
            && (path.as_ref() == prefix || path.starts_with(&format!("{prefix}/")));
        if already_prefixed {
            path.into_owned()
        } else {
            format!("{prefix}{path}")
        }
    };
    let mut url = base.clone();
    url.set_path(&full);
    url.set_query(query.filter(|q| !q.is_empty()));
    url.set_fragment(None);
    Ok(url)
}

/// RFC 9110 §9.2.2: POST and PATCH are not idempotent; every other method is.
pub fn method_is_idempotent(method: &Method) -> bool {
    !matches!(*method, Method::POST | Method::PATCH | Method::CONNECT)
}

/// A request being built; [`RequestBuilder::send`] runs it through the retry loop.
pub struct RequestBuilder {
    client: HttpClient,
    method: Method,
    url: Result<Url, HttpError>,
    headers: HeaderMap,
    body: Option<Bytes>,
    error: Option<String>,
    bucket: Option<String>,
    idempotent: Option<bool>,
    classify: Option<ClassifyFn>,
    timeout: Option<Duration>,
    max_retries: Option<u32>,
}

impl fmt::Debug for RequestBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("vendor", &self.client.inner.vendor)
            .field("method", &self.method)
            .field("url", &self.url.as_ref().map(redact::display_url).ok())
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl RequestBuilder {
    /// Appends one query parameter (percent-encoded).
    pub fn query(mut self, key: &str, value: impl AsRef<str>) -> Self {
        if let Ok(url) = self.url.as_mut() {
            url.query_pairs_mut().append_pair(key, value.as_ref());
        }
        self
    }

    /// A JSON body with `Content-Type: application/json` (unless a content type is already set).
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(bytes) => {
                self.body = Some(Bytes::from(bytes));
                if !self.headers.contains_key(CONTENT_TYPE) {
                    self.headers
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
            }
            Err(e) => self.error = Some(e.to_string()),
        }
        self
    }

    /// A raw body with its content type (e.g. `application/scim+json`, `application/x-ndjson`).
    pub fn body(mut self, body: impl Into<Bytes>, content_type: &str) -> Self {
        self.body = Some(body.into());
        match HeaderValue::from_str(content_type) {
            Ok(v) => {
                self.headers.insert(CONTENT_TYPE, v);
            }
            Err(_) => self.error = Some(format!("invalid content type {content_type:?}")),
        }
        self
    }

    /// Adds a header to this request only (overrides a fixed one of the same name).
    pub fn header<K, V>(mut self, name: K, value: V) -> Self
    where
        K: TryInto<HeaderName>,
        V: TryInto<HeaderValue>,
    {
        match (name.try_into(), value.try_into()) {
            (Ok(k), Ok(v)) => {
                self.headers.insert(k, v);
            }
            _ => self.error = Some("invalid header name or value".to_owned()),
        }
        self
    }

    /// Sends through the named rate bucket as well as the client-wide one (declared in
    /// [`ClientConfig::buckets`]; an undeclared name gets a bucket that discovers its limit).
    pub fn bucket(mut self, name: &str) -> Self {
        self.bucket = Some(name.to_owned());
        self
    }

    /// Whether repeating the request is harmless. Defaults to RFC 9110: GET, HEAD, PUT, DELETE,
    /// OPTIONS idempotent; **POST and PATCH not**. Mark upserts (`POST /users` on Userflow,
    /// identify calls) `.idempotent(true)` so 5xx and timeouts are retried; leave creates (SCIM
    /// POST, Guru invite, events) alone. A non-idempotent request is retried only when the server
    /// certainly did not act (429, 408, 503 with `Retry-After`, connect failure); otherwise the
    /// error comes back with [`HttpError::maybe_processed`].
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = Some(yes);
        self
    }

    /// A hook that sees every answer first and may decide `Success`, `Retry` or `Fail`
    /// (`None`: default classification). Its verdict is final, also for non-idempotent requests.
    pub fn classify<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Response) -> Option<Verdict> + Send + Sync + 'static,
    {
        self.classify = Some(Arc::new(hook));
        self
    }

    /// Per-attempt timeout for this request (default: the client's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retry budget for this request (default: the client's `max_retries`).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = Some(retries);
        self
    }

    /// Runs the request: pacing, concurrency, classification, retries and backoff.
    pub async fn send(self) -> Result<Response, HttpError> {
        let client = self.client.clone();
        let inner = &client.inner;
        stats::add(&inner.counters.requests, 1);
        let result = self.run().await;
        if result.is_err() {
            stats::add(&inner.counters.failed, 1);
        }
        result
    }

    async fn run(self) -> Result<Response, HttpError> {
        let inner = self.client.inner.clone();
        let vendor = inner.vendor;
        let method = self.method.clone();
        let url = self.url?;
        let shown = redact::scrub(&redact::display_url(&url), &inner.secrets);
        if let Some(detail) = self.error {
            return Err(HttpError::Encode {
                vendor,
                method,
                url: shown,
                detail,
            });
        }
        let gate = self.bucket.as_deref().map(|b| inner.gate(b));
        let idempotent = self
            .idempotent
            .unwrap_or_else(|| method_is_idempotent(&method));
        let budget = self.max_retries.unwrap_or(inner.max_retries);
        let own_budget = self.max_retries.is_some();
        let timeout = self.timeout.unwrap_or(inner.timeout);
        let mut maybe_processed = false;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // The concurrency slot first, the pacer last: a slot taken from the pacer is used at
            // once, so a rate cut applies to every request not yet on the wire.
            // Every wait before the request goes out ends when a signal stops the run.
            let stopped = |on_the_wire: bool, attempts: u32, maybe: bool| HttpError::Stopped {
                vendor,
                method: method.clone(),
                url: shown.clone(),
                attempts,
                on_the_wire,
                maybe_processed: maybe,
            };
            let waiting = Instant::now();
            let Ok(permit) = inner
                .shutdown
                .unless_begun(async {
                    let permit = inner.concurrency.acquire().await;
                    stats::add_wait(&inner.counters.concurrency_wait_ns, waiting.elapsed());
                    inner.admit(gate.as_deref()).await;
                    permit
                })
                .await
            else {
                return Err(stopped(false, attempt - 1, maybe_processed));
            };
            stats::add(&inner.counters.attempts, 1);
            if attempt > 1 {
                stats::add(&inner.counters.retries, 1);
            }
            let sent_at = Instant::now();
            // On the wire: the answer may come up to the grace after a signal, then it is
            // abandoned (a rerun from the last state sends its record again).
            let outcome = tokio::select! {
                biased;
                outcome = inner.attempt(&method, &url, &self.headers, self.body.as_ref(), timeout) => outcome,
                () = inner.shutdown.grace_over() => {
                    return Err(stopped(true, attempt, maybe_processed || !idempotent));
                }
            };
            // Free the slot before any backoff sleep.
            drop(permit);
            let now = Instant::now();
            let rtt = now.saturating_duration_since(sent_at);
            let pacer = gate.as_deref().unwrap_or(&inner.global);
            let paced = inner.global.with_rate(|r| r.rate());
            match outcome {
                Ok((status, headers, body, final_url)) => {
                    inner.counters.status(status.as_u16());
                    let response = Response {
                        status,
                        headers,
                        body,
                        url: strip_credentials(final_url),
                        attempts: attempt,
                        vendor,
                        secrets: inner.secrets.clone(),
                    };
                    if status.is_redirection() && is_write(&method) {
                        inner.concurrency.on_response(rtt, Signal::Clean, paced);
                        let location = response.header("location").map_or_else(
                            || "none".to_owned(),
                            |l| redact::scrub(&shorten(l), &inner.secrets),
                        );
                        return Err(HttpError::Status {
                            vendor,
                            method: method.clone(),
                            url: shown.clone(),
                            status,
                            excerpt: format!("Location: {location}"),
                            attempts: attempt,
                            maybe_processed,
                            why: Some(WRITE_REDIRECTED.to_string()),
                        });
                    }
                    let hook_verdict = self.classify.as_ref().and_then(|hook| hook(&response));
                    let verdict = hook_verdict.unwrap_or_else(|| retry::classify_status(status));
                    let throttled = status == StatusCode::TOO_MANY_REQUESTS;
                    inner
                        .concurrency
                        .on_response(rtt, load_signal(status, verdict), paced);
                    // With zero delays (tests) the pacer keeps its configured rate: a 429 must not slow the
                    // rest of a test down.
                    if !inner.zero_delays {
                        pacer.with_rate(|r| r.on_response(now, sent_at, throttled));
                    }
                    debug!(
                        vendor,
                        method = %method,
                        url = %shown,
                        attempt,
                        status = status.as_u16(),
                        elapsed_ms = rtt.as_millis() as u64,
                        "http attempt"
                    );
                    let status_error = |why: Option<String>, maybe: bool| HttpError::Status {
                        vendor,
                        method: method.clone(),
                        url: shown.clone(),
                        status,
                        excerpt: redact::excerpt(&response.body, &inner.secrets),
                        attempts: attempt,
                        maybe_processed: maybe,
                        why,
                    };
                    match verdict {
                        Verdict::Success => return Ok(response),
                        Verdict::Fail => return Err(status_error(None, maybe_processed)),
                        Verdict::Retry => {
                            let retry_after = retry::retry_after(
                                &response.headers,
                                SystemTime::now(),
                            )
                            .or_else(|| {
                                if throttled {
                                    retry::rate_limit_reset(&response.headers, SystemTime::now())
                                } else {
                                    None
                                }
                            });
                            let hook_said_retry = hook_verdict == Some(Verdict::Retry);
                            let safe =
                                retry::certainly_not_processed(status, retry_after.is_some());
                            if !safe {
                                maybe_processed = true;
                            }
                            if !idempotent && !safe && !hook_said_retry {
                                return Err(status_error(
                                    Some(NOT_IDEMPOTENT.into()),
                                    maybe_processed,
                                ));
                            }
                            if attempt > budget {
                                return Err(status_error(
                                    Some(budget_spent(budget, own_budget)),
                                    maybe_processed,
                                ));
                            }
                            let reason = format!("status {}", status.as_u16());
                            let wait = inner.plan_wait(attempt, status, retry_after);
                            warn!(
                                vendor,
                                method = %method,
                                url = %shown,
                                attempt,
                                reason = %reason,
                                wait_ms = wait.as_millis() as u64,
                                retry_after_s = retry_after.map(|d| d.as_secs_f64()),
                                "retrying"
                            );
                            if inner.sleep(wait).await.is_err() {
                                return Err(stopped(false, attempt, maybe_processed));
                            }
                        }
                    }
                }
                Err((kind, detail)) => {
                    stats::add(&inner.counters.transport_errors, 1);
                    if kind == TransportKind::Timeout {
                        stats::add(&inner.counters.timeouts, 1);
                    }
                    inner
                        .concurrency
                        .on_response(rtt, Signal::BackPressure, paced);
                    debug!(
                        vendor,
                        method = %method,
                        url = %shown,
                        attempt,
                        error = %kind,
                        elapsed_ms = rtt.as_millis() as u64,
                        "http attempt"
                    );
                    let safe = kind == TransportKind::Connect;
                    if !safe {
                        maybe_processed = true;
                    }
                    let transport_error = |why: Option<String>, maybe: bool| HttpError::Transport {
                        vendor,
                        method: method.clone(),
                        url: shown.clone(),
                        kind,
                        detail: detail.clone(),
                        attempts: attempt,
                        maybe_processed: maybe,
                        why,
                    };
                    if matches!(kind, TransportKind::TooLarge | TransportKind::Other) {
                        return Err(transport_error(None, maybe_processed));
                    }
                    if !idempotent && !safe {
                        return Err(transport_error(
                            Some(NOT_IDEMPOTENT.into()),
                            maybe_processed,
                        ));
                    }
                    if attempt > budget {
                        return Err(transport_error(
                            Some(budget_spent(budget, own_budget)),
                            maybe_processed,
                        ));
                    }
                    let wait = retry::backoff(attempt);
                    warn!(
                        vendor,
                        method = %method,
                        url = %shown,
                        attempt,
                        reason = %kind,
                        wait_ms = if inner.zero_delays { 0 } else { wait.as_millis() as u64 },
                        "retrying"
                    );
                    if inner.sleep(wait).await.is_err() {
                        return Err(stopped(false, attempt, maybe_processed));
                    }
                }
            }
        }
    }
}

/// What an answer tells the concurrency controller: a retryable 5xx is a server error (back-
/// pressure only while their share is high); any other retryable answer (429, 408, or one a
/// vendor's hook says to retry) is back-pressure.
fn load_signal(status: StatusCode, verdict: Verdict) -> Signal {
    match verdict {
        Verdict::Retry if status.is_server_error() => Signal::ServerError,
        Verdict::Retry => Signal::BackPressure,
        Verdict::Success | Verdict::Fail => Signal::Clean,
    }
}

const NOT_IDEMPOTENT: &str = "not retried: the request is not idempotent and the server may have acted on it; look it up before trying again";
/// The retry budget ran out: every retry `max_retries` (or the request's own budget) allows.
fn budget_spent(budget: u32, own: bool) -> String {
    let retries = if budget == 1 { "retry" } else { "retries" };
    if own {
        format!("the retry budget is spent: {budget} {retries}, this request's own limit")
    } else {
        format!("the retry budget is spent: {budget} {retries}, as max_retries allows")
    }
}

fn strip_credentials(mut url: Url) -> Url {
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url
}

/// A complete answer: status, headers and the whole body.
#[derive(Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The final URL (after redirects), without credentials.
    pub url: Url,
    /// Attempts it took, 1 when the first one succeeded.
    pub attempts: u32,
    vendor: &'static str,
    secrets: Arc<[String]>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("vendor", &self.vendor)
            .field("status", &self.status)
            .field("url", &redact::display_url(&self.url))
            .field("body_bytes", &self.body.len())
            .field("attempts", &self.attempts)
            .finish()
    }
}

impl Response {
    /// Builds a response by hand (for classify hooks' unit tests and fakes).
    pub fn new(
        vendor: &'static str,
        status: StatusCode,
        headers: HeaderMap,
        body: impl Into<Bytes>,
        url: Url,
    ) -> Self {
        Self {
            status,
            headers,
            body: body.into(),
            url: strip_credentials(url),
            attempts: 1,
            vendor,
            secrets: Arc::from(Vec::new()),
        }
    }

    /// Decodes the body as JSON; the error names the vendor and URL and shows an excerpt.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode {
            vendor: self.vendor,
            url: redact::display_url(&self.url),
            detail: e.to_string(),
            excerpt: redact::excerpt(&self.body, &self.secrets),
        })
    }

    /// A short excerpt of the body, credentials scrubbed (for messages).
    pub fn excerpt(&self) -> String {
        redact::excerpt(&self.body, &self.secrets)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The next page from the `Link` header(s) (`rel="next-page"`, `rel="next"` or no rel),
    /// resolved against this response's URL.
    pub fn next_link(&self) -> Option<Url> {
        super::paginate::link::next_link(&self.headers, &self.url)
    }

    /// A header as text, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_keeping_the_prefix() {
        let base = Url::parse("https://api.getguru.com/api/v1").unwrap();
        let slash = Url::parse("https://api.getguru.com/api/v1/").unwrap();
        let bare = Url::parse("https://api.userflow.com").unwrap();
        for (b, input, want) in [
            (&base, "/members", "https://api.getguru.com/api/v1/members"),
            (&base, "members", "https://api.getguru.com/api/v1/members"),
            (&slash, "/members", "https://api.getguru.com/api/v1/members"),
            (
                &base,
                "/members?token=a%20b",
                "https://api.getguru.com/api/v1/members?token=a%20b",
            ),
            (
                &base,
                "/api/v1/members?token=x",
                "https://api.getguru.com/api/v1/members?token=x",
            ),
            (
                &base,
                "/api/v10/x",
                "https://api.getguru.com/api/v1/api/v10/x",
            ),
            (&base, "", "https://api.getguru.com/api/v1"),
            (
                &base,
                "/members#frag",
                "https://api.getguru.com/api/v1/members",
            ),
            (
                &base,
                "https://api.getguru.com/api/v1/members?token=t",
                "https://api.getguru.com/api/v1/members?token=t",
            ),
            (
                &bare,
                "/users?limit=1&starting_after=u9",
                "https://api.userflow.com/users?limit=1&starting_after=u9",
            ),
            (
                &bare,
                "/v1/background_jobs/bulk:jobs:NX-1",
                "https://api.userflow.com/v1/background_jobs/bulk:jobs:NX-1",
            ),
            (&bare, "bulk:jobs:1", "https://api.userflow.com/bulk:jobs:1"),
        ] {
            assert_eq!(resolve(b, input).unwrap().as_str(), want, "{b} + {input}");
        }
    }

    #[test]
    fn refuses_other_origins_and_credentials() {
        let base = Url::parse("https://api.getguru.com/api/v1").unwrap();
        for input in [
            "https://evil.example.com/api/v1/members",
            "http://api.getguru.com/api/v1/members",
            "https://api.getguru.com:8443/api/v1/members",
            "//evil.example.com/x",
            "https://u:p@api.getguru.com/api/v1/members",
        ] {
            assert!(resolve(&base, input).is_err(), "{input}");
        }
    }

    #[test]
    fn refuses_dot_segments_that_would_address_another_resource() {
        let base = Url::parse("https://api.userflow.com").unwrap();
        for input in [
            "/users/..",
            "/users/.",
            "/users/%2e%2e",
            "/users/.%2E/x",
            "/groups/../members",
            "/v2/accounts/1/users/../profile?x=1",
        ] {
            let err = resolve(&base, input).unwrap_err();
            assert!(err.contains(". or .. segment"), "{input}: {err}");
        }
        // Dots inside a segment, or an encoded slash around them, are one segment.
        for input in [
            "/users/...",
            "/users/a.b",
            "/users/a%2F..%2Fb",
            "/users/x?q=..",
        ] {
            assert!(resolve(&base, input).is_ok(), "{input}");
        }
    }

    #[test]
    fn idempotency_follows_rfc_9110() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(method_is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH] {
            assert!(!method_is_idempotent(&m), "{m}");
        }
    }
}
