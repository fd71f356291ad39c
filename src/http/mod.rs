//! The HTTP engine every vendor uses; no vendor writes its own retry loop.
//!
//! One [`HttpClient`] per vendor connection ([`ClientConfig`] says how): auth (`Bearer`, Basic,
//! `Token`) and fixed headers, rustls with verified certificates, a keep-alive pool, gzip,
//! connect and request timeouts, and `roster/<version>` as user agent.
//!
//! [`RequestBuilder::send`] runs the retry loop:
//! - **classification** ([`retry::classify_status`]): 429, 408, 5xx except 501, timeouts and
//!   dropped connections retry; other 4xx fail; 2xx/3xx succeed. A per-request
//!   [`RequestBuilder::classify`] hook sees each answer first.
//! - **idempotency**: POST and PATCH are not idempotent unless marked
//!   [`RequestBuilder::idempotent`]; such requests are repeated only when the server certainly did
//!   not act (429, 408, 503 with `Retry-After`, connect failure), otherwise the error says
//!   [`HttpError::maybe_processed`].
//! - **backoff**: full jitter, `uniform(0, min(60 s, 1 s * 2^n))`; `Retry-After` (seconds or
//!   HTTP date, capped at [`retry::RETRY_AFTER_CAP`]) is honoured exactly and pauses *every*
//!   request of the client; a per-request retry budget. `ROSTER_ZERO_DELAYS=1` (or
//!   [`ClientConfig::zero_delays`]) zeroes backoff, `Retry-After` and 429 pauses and turns off
//!   the pacer's adaptation to 429s (a test's injected 429 must not slow the rest of it), but a
//!   configured `requests_per_second` stays real, so tests of pacing still mean something.
//! - **flow control**: adaptive concurrency ([`concurrency`], AIMD after Vector's ARC) up to
//!   `max_concurrency`; a client-side pacer ([`rate`]) at `requests_per_second` that, when no rate
//!   is given, discovers the server's limit from 429s; named buckets for endpoints with their own
//!   limit.
//!
//! - **shutdown** ([`shutdown`]): once a signal raises the process's [`Shutdown`] flag, every
//!   wait above ends at once with [`HttpError::Stopped`], and a request on the wire gets
//!   [`shutdown::GRACE`] to answer.
//!
//! Nothing here logs a header or a body; URLs in logs and errors lose their credentials.

pub mod client;
pub mod concurrency;
pub mod config;
pub mod error;
pub mod paginate;
pub mod path;
pub mod rate;
pub mod redact;
pub mod response;
pub mod retry;
pub mod shutdown;
pub mod stats;
mod write_client;

pub use client::{ClassifyFn, HttpClient, MAX_BODY_BYTES, RequestBuilder, method_is_idempotent};
pub use config::{
    Auth, BucketConfig, ClientConfig, ClientSpec, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, Rate, ZERO_DELAYS_ENV, default_user_agent,
};
pub use error::{HttpError, TransportKind};
pub use response::Response;
pub use retry::Verdict;
pub use shutdown::{Shutdown, Stopped};
pub use stats::HttpStats;

/// The `http` crate's types as reqwest re-exports them, so vendors need no extra dependency (and
/// no clash between the `http` crate and this module's name).
pub use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
pub use reqwest::{Method, StatusCode};

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

/// Characters escaped in one path segment: everything that would end or restructure it.
const PATH_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']');

/// Percent-encodes one path segment (a user id, an email, a Userpilot job id), so
/// `format!("/users/{}", path_segment(id))` is always one segment.
pub fn path_segment(segment: &str) -> String {
    utf8_percent_encode(segment, PATH_SEGMENT).to_string()
}

/// True for `.` and `..`, written plainly or percent-encoded (`%2e`, `.%2E`, ...): the path
/// segments URL parsers resolve as "this" and "the parent" directory (WHATWG URL §4.4; the `url`
/// crate does it in `set_path`), so a key that is one would address another resource.
pub fn is_dot_segment(segment: &str) -> bool {
    matches!(
        segment.to_ascii_lowercase().as_str(),
        "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_stay_one_segment() {
        assert_eq!(path_segment("a@b.com"), "a@b.com");
        assert_eq!(path_segment("bulk:jobs:NX-1"), "bulk:jobs:NX-1");
        assert_eq!(path_segment("a/b?c#d e%"), "a%2Fb%3Fc%23d%20e%25");
        assert_eq!(path_segment("ünï"), "%C3%BCn%C3%AF");
        assert_eq!(path_segment(".."), "..");
    }
}
