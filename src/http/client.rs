//! [`HttpClient`], its [`RequestBuilder`] and [`Response`]: one connection pool per vendor, and
//! the one retry loop in roster.
//!
//! Every attempt passes, in order: a concurrency slot, the client-wide pause (set by
//! `Retry-After` or a 429 wait), the named bucket's pacer, then the client-wide pacer, and goes on
//! the wire at once. A retry waits for the slot and the pacers before first attempts (retries
//! FIFO among themselves; see `concurrency::RetriesFirst`). Answers feed the
//! adaptive concurrency and the pacer of the bucket the request used.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tokio::time::Instant;
use url::Url;

use super::concurrency::{Concurrency, RetriesFirst};
use super::config::ClientConfig;
use super::error::{HttpError, TransportKind};
use super::path::resolve;
use super::rate::{AdaptiveRate, Slot};
use super::redact;
pub use super::response::Response;
use super::retry::{self, Verdict};
use super::shutdown::{Shutdown, Stopped};
use super::stats::{self, Counters, HttpStats};
use super::write_client::{self, WriteClient};

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
pub(super) const WRITE_REDIRECTED: &str =
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

/// One pacer and the FIFO queue in front of it (retries ahead of first attempts).
#[derive(Debug)]
pub(super) struct Gate {
    turn: tokio::sync::Mutex<()>,
    order: RetriesFirst,
    rate: Mutex<AdaptiveRate>,
}

impl Gate {
    /// `zero_delays` (tests, or a client without a cautious start): no cautious start, so the
    /// first requests go at once.
    fn new(rps: Option<f64>, zero_delays: bool) -> Self {
        let rate = AdaptiveRate::new(rps);
        Self {
            turn: tokio::sync::Mutex::new(()),
            order: RetriesFirst::default(),
            rate: Mutex::new(if zero_delays {
                rate.without_cautious_start()
            } else {
                rate
            }),
        }
    }

    pub(super) fn with_rate<T>(&self, f: impl FnOnce(&mut AdaptiveRate) -> T) -> T {
        f(&mut self.rate.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

pub(super) struct Inner {
    pub(super) vendor: &'static str,
    pub(super) base: Url,
    pub(super) http: reqwest::Client,
    /// The same pool settings without redirects and reqwest's layers, for writes.
    pub(super) http_writes: WriteClient,
    pub(super) timeout: Duration,
    pub(super) max_retries: u32,
    pub(super) default_429_wait: Option<Duration>,
    pub(super) zero_delays: bool,
    pub(super) shutdown: Shutdown,
    pub(super) secrets: Arc<[String]>,
    pub(super) pause_until: Mutex<Option<Instant>>,
    pub(super) global: Gate,
    pub(super) buckets: Mutex<HashMap<String, Arc<Gate>>>,
    pub(super) concurrency: Concurrency,
    pub(super) counters: Counters,
    /// The URLs of the first [`URL_CACHE`] plain paths asked for (a writer's endpoints, such
    /// as `/users`), resolved once: parsing `/users` again for every upsert was a few per cent
    /// of its instructions.
    pub(super) urls: Mutex<crate::maps::FastMap<Box<str>, Url>>,
}

/// How many resolved paths a client keeps (see `Inner::urls`).
const URL_CACHE: usize = 32;

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
        let base = checked_base(&cfg)?;
        let (http, http_writes) = reqwest_clients(&cfg)?;
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
                global: Gate::new(
                    cfg.requests_per_second,
                    cfg.zero_delays || !cfg.cautious_start,
                ),
                buckets: Mutex::new(bucket_gates(&cfg)),
                concurrency: Concurrency::new(cfg.max_concurrency),
                counters: Counters::default(),
                urls: Mutex::new(crate::maps::FastMap::default()),
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
        // Only short plain paths are kept (not a next-page URL or a query), the first
        // [`URL_CACHE`] asked for: a resolved path is the same for the client's whole life.
        let cacheable = path_or_url.len() <= 64
            && path_or_url.starts_with('/')
            && !path_or_url.contains(['?', '#', '%', ':']);
        if cacheable
            && let Some(url) = self
                .inner
                .urls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(path_or_url)
        {
            return Ok(url.clone());
        }
        let url = self.resolve(path_or_url)?;
        if cacheable {
            let mut urls = self
                .inner
                .urls
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if urls.len() < URL_CACHE {
                urls.insert(path_or_url.into(), url.clone());
            }
        }
        Ok(url)
    }

    fn resolve(&self, path_or_url: &str) -> Result<Url, HttpError> {
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
    pub(super) fn pause(&self, until: Instant) {
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

    pub(super) fn paused_until(&self) -> Option<Instant> {
        let p = *self
            .pause_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        p.filter(|t| *t > Instant::now())
    }

    /// Sleeps through the client-wide pause, if any; returns the time slept.
    pub(super) async fn wait_pause(&self) -> Duration {
        let mut slept = Duration::ZERO;
        while let Some(until) = self.paused_until() {
            let t0 = Instant::now();
            tokio::time::sleep_until(until).await;
            slept += t0.elapsed();
        }
        slept
    }

    pub(super) fn gate(&self, name: &str) -> Arc<Gate> {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Gate::new(None, self.zero_delays)))
            .clone()
    }

    /// Waits for the pause, then for a slot of the gate's pacer; a retry (`retry`) takes its turn
    /// before first attempts.
    pub(super) async fn pace(&self, gate: &Gate, retry: bool) -> Duration {
        let mut paused = Duration::ZERO;
        'turn: loop {
            let _turn = gate.order.take(retry, || gate.turn.lock()).await;
            loop {
                paused += self.wait_pause().await;
                // A first attempt that held the turn through a pause or a pacer wait hands it to
                // a retry that came meanwhile (else it takes the pause's one token, and the retry
                // the 429 after it).
                if !retry && gate.order.retry_waiting() {
                    continue 'turn;
                }
                match gate.with_rate(|r| r.poll(Instant::now())) {
                    Slot::Go => return paused,
                    Slot::WaitUntil(t) => tokio::time::sleep_until(t).await,
                }
            }
        }
    }

    /// Waits for the pause, then for a slot of the bucket's pacer and of the client-wide pacer
    /// (`retry`: the attempt is a retry, which goes before first attempts).
    pub(super) async fn admit(&self, bucket: Option<&Gate>, retry: bool) {
        let t0 = Instant::now();
        let mut paused = Duration::ZERO;
        loop {
            // A retry queues for the pacer's turn at once, so the pacer knows it waits before
            // the pause ends (the turn waits out the pause too).
            if !retry {
                paused += self.wait_pause().await;
            }
            if let Some(b) = bucket {
                paused += self.pace(b, retry).await;
            }
            paused += self.pace(&self.global, retry).await;
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
    pub(super) async fn sleep(&self, d: Duration) -> Result<(), Stopped> {
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
    pub(super) async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Bytes, Url), (TransportKind, String)> {
        let http = match &self.http_writes {
            WriteClient::Lean(lean) if is_write(method) => {
                if let Some(b) = body {
                    stats::add(&self.counters.bytes_sent, b.len() as u64);
                }
                let exchange =
                    lean.exchange(method, url, headers, body, MAX_BODY_BYTES, &self.secrets);
                return match tokio::time::timeout(timeout, exchange).await {
                    Ok(Ok((status, headers, body))) => {
                        stats::add(&self.counters.bytes_received, body.len() as u64);
                        // A write follows no redirect: the answer is from the URL asked.
                        Ok((status, headers, body, url.clone()))
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err((
                        TransportKind::Timeout,
                        format!("no complete answer within {timeout:?}"),
                    )),
                };
            }
            WriteClient::Reqwest(writes) if is_write(method) => writes,
            _ => &self.http,
        };
        // The whole exchange runs under one timer (below); a reqwest timeout as well was a
        // second timer armed and cancelled per request.
        let mut req = http
            .request(method.clone(), url.clone())
            .headers(headers.clone());
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
    pub(super) fn plan_wait(
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

    pub(super) fn describe(&self, e: &reqwest::Error) -> String {
        error_chain(e, &self.secrets)
    }
}

/// The base URL requests are joined onto: http or https, without credentials or fragment.
fn checked_base(cfg: &ClientConfig) -> Result<Url, HttpError> {
    if !matches!(cfg.base_url.scheme(), "http" | "https") || cfg.base_url.cannot_be_a_base() {
        return Err(HttpError::Build {
            vendor: cfg.vendor,
            detail: format!(
                "base url {} must be an http or https url",
                redact::display_url(&cfg.base_url)
            ),
        });
    }
    let mut base = cfg.base_url.clone();
    let _ = base.set_username("");
    let _ = base.set_password(None);
    base.set_fragment(None);
    Ok(base)
}

/// The two clients of a connection, with auth and fixed headers on every request: reqwest,
/// which follows redirects (reads), and the write client, which never does (writes; see
/// [`is_write`] and `write_client.rs`).
fn reqwest_clients(cfg: &ClientConfig) -> Result<(reqwest::Client, WriteClient), HttpError> {
    let vendor = cfg.vendor;
    let build = |detail: String| HttpError::Build { vendor, detail };
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
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(cfg.max_concurrency.max(1))
            .tcp_keepalive(TCP_KEEPALIVE)
            .tcp_nodelay(true)
    };
    let http = builder()
        .redirect(reqwest::redirect::Policy::limited(MAX_REDIRECTS))
        .build()
        .map_err(|e| build(error_chain(&e.without_url(), &[])))?;
    let settings = write_client::Settings {
        headers: &headers,
        user_agent: &cfg.user_agent,
        connect_timeout: cfg.connect_timeout,
        pool_idle_timeout: POOL_IDLE_TIMEOUT,
        pool_max_idle_per_host: cfg.max_concurrency.max(1),
        tcp_keepalive: TCP_KEEPALIVE,
    };
    let http_writes = WriteClient::new(&settings, || {
        builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e.without_url(), &[]))
    })
    .map_err(build)?;
    Ok((http, http_writes))
}

/// The pacers of the configured named buckets.
fn bucket_gates(cfg: &ClientConfig) -> HashMap<String, Arc<Gate>> {
    cfg.buckets
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
        .collect()
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

pub(super) fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    if s.chars().count() > MAX {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    } else {
        s.to_owned()
    }
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

    /// A JSON body already serialised, with `Content-Type: application/json` (unless a content
    /// type is already set): sent as it is, without serialising it again.
    pub fn json_bytes(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        if !self.headers.contains_key(CONTENT_TYPE) {
            self.headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
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

    /// The retry loop ([`retry::RetryLoop`], in `retry.rs`), over this request's attempts.
    async fn run(self) -> Result<Response, HttpError> {
        let (call, tries) = self.into_call()?;
        call.run(tries).await
    }

    /// What every attempt of this request needs, and its retry loop's start.
    fn into_call(self) -> Result<(retry::Call, retry::RetryLoop), HttpError> {
        let inner = self.client.inner.clone();
        let url = self.url?;
        let shown = redact::scrub(&redact::display_url(&url), &inner.secrets);
        if let Some(detail) = self.error {
            return Err(HttpError::Encode {
                vendor: inner.vendor,
                method: self.method,
                url: shown,
                detail,
            });
        }
        let gate = self.bucket.as_deref().map(|b| inner.gate(b));
        let idempotent = self
            .idempotent
            .unwrap_or_else(|| method_is_idempotent(&self.method));
        let tries = retry::RetryLoop::new(
            self.max_retries.unwrap_or(inner.max_retries),
            self.max_retries.is_some(),
            idempotent,
        );
        let timeout = self.timeout.unwrap_or(inner.timeout);
        let call = retry::Call {
            inner,
            method: self.method,
            url,
            shown,
            headers: self.headers,
            body: self.body,
            gate,
            classify: self.classify,
            timeout,
        };
        Ok((call, tries))
    }
}

#[cfg(test)]
mod tests;
