//! [`Response`]: a complete answer (status, headers, the whole body) as the HTTP engine hands
//! it back, with helpers that never show a credential.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::HttpError;
use super::redact;

pub(super) fn strip_credentials(mut url: Url) -> Url {
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
    pub(super) vendor: &'static str,
    pub(super) secrets: Arc<[String]>,
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
