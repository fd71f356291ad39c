//! [`WriteClient`]: how a write goes on the wire. Writes never follow a redirect and need no
//! decompression, so they go through hyper's pooled client directly (`hyper-util`'s legacy
//! client with rustls, which is what reqwest itself is built on) instead of reqwest's tower
//! stack: reqwest's redirect and decompression layers, its `Url`-to-`Uri` conversions and its
//! per-request header merging were a third of the engine's instructions per upsert
//! (BENCHMARKS.md). The same pool settings, timeouts, TLS roots and headers as the reads'
//! client; `Accept-Encoding: identity`, so an answer is never compressed.
//!
//! When a proxy is configured in the environment (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`,
//! any case), which reqwest honours, writes keep going through reqwest (without redirects), so
//! a proxy is used for writes as for reads.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{ACCEPT, ACCEPT_ENCODING, HeaderMap, HeaderValue, USER_AGENT};
use reqwest::{Method, StatusCode};
use url::Url;

use super::error::TransportKind;
use super::redact;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The connector under a timer that covers the TLS handshake as well as the TCP connect (as
/// reqwest's `connect_timeout` does): a handshake that stalls is a connect failure, which even
/// a create may retry, not a timeout that may have been processed.
#[derive(Clone)]
struct Timed {
    inner: Https,
    timeout: Duration,
}

impl tower_service::Service<Uri> for Timed {
    type Response = <Https as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {timeout:?}"),
                )) as BoxError),
            }
        })
    }
}

/// The client writes go through.
#[derive(Clone, Debug)]
pub(super) enum WriteClient {
    /// hyper's pooled client, without reqwest's layers (the usual case).
    Lean(Box<Lean>),
    /// reqwest without redirects, when a proxy is configured in the environment.
    Reqwest(reqwest::Client),
}

/// hyper's client and the headers every write carries.
#[derive(Clone)]
pub(super) struct Lean {
    client: Client<Timed, Full<Bytes>>,
    /// Auth, user agent, the vendor's fixed headers, `Accept` and `Accept-Encoding`.
    headers: Arc<HeaderMap>,
}

impl std::fmt::Debug for Lean {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers hold the credentials: never printed.
        f.debug_struct("Lean").finish_non_exhaustive()
    }
}

/// What the write client is built from (the reads' client's settings).
pub(super) struct Settings<'a> {
    pub headers: &'a HeaderMap,
    pub user_agent: &'a str,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub tcp_keepalive: Duration,
}

/// True when the environment names a proxy (reqwest's rule: these variables, either case).
fn proxy_configured() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()))
}

impl WriteClient {
    /// The lean client, or `fallback` (reqwest without redirects) when a proxy is configured.
    pub(super) fn new(
        settings: &Settings<'_>,
        fallback: impl FnOnce() -> Result<reqwest::Client, String>,
    ) -> Result<Self, String> {
        if proxy_configured() {
            return fallback().map(WriteClient::Reqwest);
        }
        Lean::new(settings).map(|lean| WriteClient::Lean(Box::new(lean)))
    }
}

impl Lean {
    fn new(s: &Settings<'_>) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(s.connect_timeout));
        http.set_keepalive(Some(s.tcp_keepalive));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(s.pool_idle_timeout)
            .pool_max_idle_per_host(s.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(Timed {
                inner: https,
                timeout: s.connect_timeout,
            });
        let mut headers = s.headers.clone();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_str(s.user_agent).map_err(|e| format!("user agent: {e}"))?,
        );
        headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        headers.insert(ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        Ok(Lean {
            client,
            headers: Arc::new(headers),
        })
    }

    /// One exchange: the answer's status, headers and whole body (at most `max_body` bytes).
    /// `describe` turns an error chain into the engine's secret-free text.
    pub(super) async fn exchange(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&Bytes>,
        max_body: usize,
        secrets: &[String],
    ) -> Result<(StatusCode, HeaderMap, Bytes), (TransportKind, String)> {
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|e| (TransportKind::Other, format!("builder error: {e}")))?;
        let mut request = hyper::Request::new(Full::new(body.cloned().unwrap_or_default()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        let all = request.headers_mut();
        all.reserve(self.headers.len() + headers.len());
        for (name, value) in self.headers.iter() {
            if !headers.contains_key(name) {
                all.append(name.clone(), value.clone());
            }
        }
        for (name, value) in headers.iter() {
            all.append(name.clone(), value.clone());
        }
        let response = self.client.request(request).await.map_err(|e| {
            let kind = if e.is_connect() {
                // Includes connect timeouts and TLS handshakes: the request never left.
                TransportKind::Connect
            } else {
                TransportKind::Connection
            };
            let text = if e.is_connect() {
                "connect error"
            } else {
                "error sending request"
            };
            (kind, describe(text, &e, secrets))
        })?;
        let (parts, mut incoming) = response.into_parts();
        // An answer in one chunk (the usual write answer) is kept as it came, without a copy.
        let mut first: Option<Bytes> = None;
        let mut buf = BytesMut::new();
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|e| {
                (
                    TransportKind::Body,
                    describe("error decoding response body", &e, secrets),
                )
            })?;
            if let Ok(chunk) = frame.into_data() {
                let held = first.as_ref().map_or(0, Bytes::len) + buf.len();
                if held + chunk.len() > max_body {
                    return Err((
                        TransportKind::TooLarge,
                        format!("the body is larger than {max_body} bytes"),
                    ));
                }
                match first.take() {
                    None if buf.is_empty() => first = Some(chunk),
                    None => buf.extend_from_slice(&chunk),
                    Some(earlier) => {
                        buf.extend_from_slice(&earlier);
                        buf.extend_from_slice(&chunk);
                    }
                }
            }
        }
        let body = first.unwrap_or_else(|| buf.freeze());
        Ok((parts.status, parts.headers, body))
    }
}

/// `what`, then the error and its sources (each once), without secrets.
fn describe(what: &str, e: &(dyn std::error::Error + 'static), secrets: &[String]) -> String {
    let mut out = what.to_owned();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = err.source();
    }
    redact::scrub(&out, secrets)
}
