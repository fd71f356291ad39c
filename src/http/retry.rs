//! Retry policy: which answers are retried, how long to wait between attempts, and how
//! `Retry-After` is read.
//!
//! Classification follows Vector's HTTP `RetryStrategy::Default` (429, 408, 5xx except 501) plus
//! transport failures. Backoff is "full jitter" from AWS's "Exponential Backoff And Jitter":
//! `uniform(0, min(cap, base * 2^n))`, which spreads a herd of retries better than any other
//! scheme in that study. `Retry-After` is the exception: the server said when, so the engine
//! waits exactly that long (capped), with no jitter below it.

use std::time::{Duration, SystemTime};

use rand::Rng as _;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// First backoff step; Userpilot's documented ladder starts at 1 s (1, 2, 4, 8).
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);

/// Largest backoff step; the Appcues CLI caps its 2^n s backoff at 60 s.
pub const BACKOFF_CAP: Duration = Duration::from_secs(60);

/// Largest `Retry-After` honoured; twice UserGuiding's 1-minute block and the Appcues CLI's 60 s
/// cap. A longer ask is shortened to this and the retry budget decides what happens next.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(120);

/// What to do with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the response to the caller.
    Success,
    /// Try again (subject to the budget and idempotency).
    Retry,
    /// Stop and return a status error.
    Fail,
}

/// The default verdict for a status: 2xx/3xx success; 429, 408 and 5xx except 501 retry; the
/// rest fail.
pub fn classify_status(status: StatusCode) -> Verdict {
    if status.is_success() || status.is_redirection() || status.is_informational() {
        Verdict::Success
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
    {
        Verdict::Retry
    } else {
        Verdict::Fail
    }
}

/// True when the server certainly did not act on the request, so even a non-idempotent one may be
/// sent again: 429 (throttled before processing), 408 (the server gave up reading the request),
/// and 503 with `Retry-After` (the service is down for a stated time).
pub fn certainly_not_processed(status: StatusCode, has_retry_after: bool) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || (status == StatusCode::SERVICE_UNAVAILABLE && has_retry_after)
}

/// The full-jitter backoff before retry number `retry` (1 for the first retry):
/// `uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2^(retry-1)))`.
pub fn backoff(retry: u32) -> Duration {
    let ceiling = backoff_ceiling(retry);
    if ceiling.is_zero() {
        return ceiling;
    }
    let secs = rand::rng().random_range(0.0..=ceiling.as_secs_f64());
    Duration::from_secs_f64(secs)
}

/// The upper end of the jitter window for retry number `retry`.
pub fn backoff_ceiling(retry: u32) -> Duration {
    let exp = retry.saturating_sub(1).min(20);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// `Retry-After` as a wait from `now`: delay-seconds (fractions accepted, as some servers send
/// them) or an HTTP-date. Capped at [`RETRY_AFTER_CAP`]; a date in the past is zero; garbage is
/// `None`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    parse_retry_after(raw, now)
}

/// When a 429 has no `Retry-After`, the reset of the rate-limit window as a wait from `now`:
/// `RateLimit-Reset` (IETF draft: delta-seconds) or `X-RateLimit-Reset` (delta-seconds, or epoch
/// seconds when the number is that large, as GitHub sends it). Capped like `Retry-After`.
pub fn rate_limit_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    /// Numbers above this are epoch seconds (2001-09-09), not a delay.
    const EPOCH_THRESHOLD: f64 = 1_000_000_000.0;
    let raw = ["ratelimit-reset", "x-ratelimit-reset"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))?
        .trim();
    let n: f64 = raw
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let wait = if n >= EPOCH_THRESHOLD {
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(n).ok()?)?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::try_from_secs_f64(n.min(RETRY_AFTER_CAP.as_secs_f64())).ok()?
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

/// See [`retry_after`].
pub fn parse_retry_after(raw: &str, now: SystemTime) -> Option<Duration> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    let wait = if let Ok(secs) = raw.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(secs.min(RETRY_AFTER_CAP.as_secs_f64())).ok()?
    } else {
        let at = httpdate::parse_http_date(raw).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_CAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classification() {
        for (code, want) in [
            (200, Verdict::Success),
            (201, Verdict::Success),
            (204, Verdict::Success),
            (304, Verdict::Success),
            (400, Verdict::Fail),
            (401, Verdict::Fail),
            (403, Verdict::Fail),
            (404, Verdict::Fail),
            (409, Verdict::Fail),
            (422, Verdict::Fail),
            (408, Verdict::Retry),
            (429, Verdict::Retry),
            (500, Verdict::Retry),
            (501, Verdict::Fail),
            (502, Verdict::Retry),
            (503, Verdict::Retry),
            (504, Verdict::Retry),
            (599, Verdict::Retry),
        ] {
            assert_eq!(
                classify_status(StatusCode::from_u16(code).unwrap()),
                want,
                "{code}"
            );
        }
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        assert_eq!(backoff_ceiling(1), Duration::from_secs(1));
        assert_eq!(backoff_ceiling(2), Duration::from_secs(2));
        assert_eq!(backoff_ceiling(4), Duration::from_secs(8));
        assert_eq!(backoff_ceiling(7), Duration::from_secs(60));
        assert_eq!(backoff_ceiling(u32::MAX), Duration::from_secs(60));
        for retry in 1..12 {
            for _ in 0..50 {
                assert!(backoff(retry) <= backoff_ceiling(retry));
            }
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        for (raw, want) in [
            ("3", Some(Duration::from_secs(3))),
            (" 0 ", Some(Duration::ZERO)),
            ("1.5", Some(Duration::from_millis(1500))),
            ("99999999999", Some(RETRY_AFTER_CAP)),
            ("1e308", Some(RETRY_AFTER_CAP)),
            (date.as_str(), Some(Duration::from_secs(7))),
            (past.as_str(), Some(Duration::ZERO)),
            ("-1", None),
            ("NaN", None),
            ("inf", None),
            ("", None),
            ("soon", None),
            ("Wed, 99 Foo 2015 07:28:00 GMT", None),
        ] {
            assert_eq!(parse_retry_after(raw, now), want, "{raw:?}");
        }
        let far = httpdate::fmt_http_date(now + Duration::from_secs(86_400));
        assert_eq!(parse_retry_after(&far, now), Some(RETRY_AFTER_CAP));
    }

    #[test]
    fn rate_limit_reset_headers() {
        use reqwest::header::HeaderValue;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let with = |name: &'static str, v: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_str(v).unwrap());
            rate_limit_reset(&h, now)
        };
        assert_eq!(with("ratelimit-reset", "4"), Some(Duration::from_secs(4)));
        assert_eq!(
            with("x-ratelimit-reset", "2.5"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            with("x-ratelimit-reset", "1700000009"),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            with("x-ratelimit-reset", "1600000000"),
            Some(Duration::ZERO)
        );
        assert_eq!(with("x-ratelimit-reset", "999999"), Some(RETRY_AFTER_CAP));
        assert_eq!(with("x-ratelimit-reset", "soon"), None);
        assert_eq!(with("x-ratelimit-reset", "-3"), None);
        assert_eq!(rate_limit_reset(&HeaderMap::new(), now), None);
    }

    #[test]
    fn not_processed_rules() {
        assert!(certainly_not_processed(
            StatusCode::TOO_MANY_REQUESTS,
            false
        ));
        assert!(certainly_not_processed(
            StatusCode::SERVICE_UNAVAILABLE,
            true
        ));
        assert!(!certainly_not_processed(
            StatusCode::SERVICE_UNAVAILABLE,
            false
        ));
        assert!(!certainly_not_processed(
            StatusCode::INTERNAL_SERVER_ERROR,
            true
        ));
        assert!(!certainly_not_processed(StatusCode::BAD_GATEWAY, false));
    }
}
