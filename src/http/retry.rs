//! Retry policy and the one retry loop: which answers are retried, how long to wait between
//! attempts, how `Retry-After` is read, and the loop itself ([`RetryLoop`] decides, `Call` runs
//! the attempts through the client's slots, pacers and pool).
//!
//! Classification follows Vector's HTTP `RetryStrategy::Default` (429, 408, 5xx except 501) plus
//! transport failures. Backoff is "full jitter" from AWS's "Exponential Backoff And Jitter":
//! `uniform(0, min(cap, base * 2^n))`, which spreads a herd of retries better than any other
//! scheme in that study. `Retry-After` is the exception: the server said when, so the engine
//! waits exactly that long (capped), with no jitter below it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use rand::Rng as _;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;

use super::client::{ClassifyFn, Gate, Inner, WRITE_REDIRECTED, is_write, shorten};
use super::concurrency::Signal;
use super::error::{HttpError, TransportKind};
use super::redact;
use super::response::{Response, strip_credentials};
use super::stats;

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

/// Why a request that is not idempotent is not repeated after an ambiguous failure.
pub const NOT_IDEMPOTENT: &str = "not retried: the request is not idempotent and the server may have acted on it; look it up before trying again";

/// The retry budget ran out: every retry `max_retries` (or the request's own budget) allows.
pub fn budget_spent(budget: u32, own: bool) -> String {
    let retries = if budget == 1 { "retry" } else { "retries" };
    if own {
        format!("the retry budget is spent: {budget} {retries}, this request's own limit")
    } else {
        format!("the retry budget is spent: {budget} {retries}, as max_retries allows")
    }
}

/// Where one request's retry loop stands (`crate::http::client` runs the attempts): the
/// attempt, the budget, whether the request may be repeated, and whether the server may have
/// acted on it already.
#[derive(Debug, Clone, Copy)]
pub struct RetryLoop {
    /// The attempt under way (1 for the first).
    pub attempt: u32,
    /// Retries allowed after the first attempt.
    pub budget: u32,
    /// True when the budget is the request's own, not `max_retries`.
    pub own_budget: bool,
    /// True when the request may be repeated after an ambiguous failure.
    pub idempotent: bool,
    /// True once an attempt failed in a way that leaves open whether the server acted on it.
    pub maybe_processed: bool,
}

impl RetryLoop {
    /// A loop before its first attempt.
    pub fn new(budget: u32, own_budget: bool, idempotent: bool) -> Self {
        RetryLoop {
            attempt: 0,
            budget,
            own_budget,
            idempotent,
            maybe_processed: false,
        }
    }

    /// An attempt failed in a retryable way (`safe`: the server certainly did not act on it;
    /// `forced`: the request's own hook asked for the retry). `Ok` when the loop may try again,
    /// `Err` with why not: a request that is not idempotent after an ambiguous failure, or the
    /// budget spent.
    pub fn after_failure(&mut self, safe: bool, forced: bool) -> Result<(), String> {
        if !safe {
            self.maybe_processed = true;
        }
        if !self.idempotent && !safe && !forced {
            return Err(NOT_IDEMPOTENT.into());
        }
        if self.attempt > self.budget {
            return Err(budget_spent(self.budget, self.own_budget));
        }
        Ok(())
    }
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

/// One request on its way through the retry loop (built by `RequestBuilder::send`).
pub(super) struct Call {
    pub(super) inner: Arc<Inner>,
    pub(super) method: Method,
    pub(super) url: Url,
    /// The URL as logs and errors show it (no credentials).
    pub(super) shown: String,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Bytes>,
    pub(super) gate: Option<Arc<Gate>>,
    pub(super) classify: Option<ClassifyFn>,
    pub(super) timeout: Duration,
}

/// How an attempt left the request.
enum Step {
    /// Settled: hand the response to the caller.
    Done(Box<Response>),
    /// Try again after this wait.
    Again(Duration),
}

/// An answer as it came off the wire: status, headers, body, final URL.
type Answer = (StatusCode, HeaderMap, Bytes, Url);

impl Call {
    /// The retry loop: one attempt after another until one settles the request.
    pub(super) async fn run(&self, mut tries: RetryLoop) -> Result<Response, HttpError> {
        loop {
            tries.attempt += 1;
            match self.attempt(&mut tries).await? {
                Step::Done(response) => return Ok(*response),
                Step::Again(wait) => {
                    // A backoff gives the write's place in the target's write window to the
                    // next write while it sleeps (see `concurrency::WriteWindow`).
                    let sleep = self.inner.sleep(wait);
                    let slept = if wait.is_zero() || self.inner.zero_delays {
                        sleep.await
                    } else {
                        super::concurrency::away_from_window(sleep).await
                    };
                    if slept.is_err() {
                        return Err(self.stopped(false, tries.attempt, tries.maybe_processed));
                    }
                }
            }
        }
    }

    /// A signal stopped the request (`on_the_wire`: while an attempt was out).
    fn stopped(&self, on_the_wire: bool, attempts: u32, maybe_processed: bool) -> HttpError {
        HttpError::Stopped {
            vendor: self.inner.vendor,
            method: self.method.clone(),
            url: self.shown.clone(),
            attempts,
            on_the_wire,
            maybe_processed,
        }
    }

    /// One attempt: a concurrency slot, the pacer, the request on the wire, and what its answer
    /// (or failure) means for the loop.
    async fn attempt(&self, tries: &mut RetryLoop) -> Result<Step, HttpError> {
        let inner = &*self.inner;
        // The concurrency slot first, the pacer last: a slot taken from the pacer is used at
        // once, so a rate cut applies to every request not yet on the wire.
        // Every wait before the request goes out ends when a signal stops the run.
        // A retry waits for both before first attempts (see `concurrency::RetriesFirst`).
        let waiting = Instant::now();
        let retry = tries.attempt > 1;
        let Ok(permit) = inner
            .shutdown
            .unless_begun(async {
                let permit = inner.concurrency.acquire_for(retry).await;
                stats::add_wait(&inner.counters.concurrency_wait_ns, waiting.elapsed());
                inner.admit(self.gate.as_deref(), retry).await;
                permit
            })
            .await
        else {
            return Err(self.stopped(false, tries.attempt - 1, tries.maybe_processed));
        };
        stats::add(&inner.counters.attempts, 1);
        if tries.attempt > 1 {
            stats::add(&inner.counters.retries, 1);
        }
        let sent_at = Instant::now();
        // On the wire: the answer may come up to the grace after a signal, then it is
        // abandoned (a rerun from the last state sends its record again).
        let outcome = tokio::select! {
            biased;
            outcome = inner.attempt(&self.method, &self.url, &self.headers, self.body.as_ref(), self.timeout) => outcome,
            () = inner.shutdown.grace_over() => {
                return Err(self.stopped(true, tries.attempt, tries.maybe_processed || !tries.idempotent));
            }
        };
        // Free the slot before any backoff sleep.
        drop(permit);
        match outcome {
            Ok(answer) => self.on_answer(answer, tries, sent_at),
            Err((kind, detail)) => self.on_failure(kind, detail, tries, sent_at),
        }
    }

    /// An answer came: success, a status error, or a wait before the next attempt.
    fn on_answer(
        &self,
        (status, headers, body, final_url): Answer,
        tries: &mut RetryLoop,
        sent_at: Instant,
    ) -> Result<Step, HttpError> {
        let inner = &*self.inner;
        inner.counters.status(status.as_u16());
        let response = Response {
            status,
            headers,
            body,
            url: strip_credentials(final_url),
            attempts: tries.attempt,
            vendor: inner.vendor,
            secrets: inner.secrets.clone(),
        };
        if status.is_redirection() && is_write(&self.method) {
            let rtt = Instant::now().saturating_duration_since(sent_at);
            let paced = inner.global.with_rate(|r| r.rate());
            inner.concurrency.on_response(rtt, Signal::Clean, paced);
            return Err(self.redirected(&response, tries));
        }
        let hook_verdict = self.classify.as_ref().and_then(|hook| hook(&response));
        let verdict = hook_verdict.unwrap_or_else(|| classify_status(status));
        self.observe(status, verdict, tries.attempt, sent_at);
        match verdict {
            Verdict::Success => Ok(Step::Done(Box::new(response))),
            Verdict::Fail => Err(self.status_error(&response, tries, None)),
            Verdict::Retry => {
                self.retry_answer(&response, tries, hook_verdict == Some(Verdict::Retry))
            }
        }
    }

    /// Feeds an answer to adaptive concurrency and the pacer, and logs the attempt.
    fn observe(&self, status: StatusCode, verdict: Verdict, attempt: u32, sent_at: Instant) {
        let inner = &*self.inner;
        let now = Instant::now();
        let rtt = now.saturating_duration_since(sent_at);
        let paced = inner.global.with_rate(|r| r.rate());
        let throttled = status == StatusCode::TOO_MANY_REQUESTS;
        inner
            .concurrency
            .on_response(rtt, load_signal(status, verdict), paced);
        // With zero delays (tests) the pacer keeps its configured rate: a 429 must not slow the
        // rest of a test down.
        if !inner.zero_delays {
            let pacer = self.gate.as_deref().unwrap_or(&inner.global);
            pacer.with_rate(|r| r.on_response(now, sent_at, throttled));
        }
        debug!(
            vendor = inner.vendor,
            method = %self.method,
            url = %self.shown,
            attempt,
            status = status.as_u16(),
            elapsed_ms = rtt.as_millis() as u64,
            "http attempt"
        );
    }

    /// A write answered with a redirect: never followed, a failure naming the `Location`.
    fn redirected(&self, response: &Response, tries: &RetryLoop) -> HttpError {
        let location = response.header("location").map_or_else(
            || "none".to_owned(),
            |l| redact::scrub(&shorten(l), &self.inner.secrets),
        );
        HttpError::Status {
            vendor: self.inner.vendor,
            method: self.method.clone(),
            url: self.shown.clone(),
            status: response.status,
            excerpt: format!("Location: {location}"),
            attempts: tries.attempt,
            maybe_processed: tries.maybe_processed,
            why: Some(WRITE_REDIRECTED.to_string()),
        }
    }

    /// The request failed with this answer.
    fn status_error(
        &self,
        response: &Response,
        tries: &RetryLoop,
        why: Option<String>,
    ) -> HttpError {
        HttpError::Status {
            vendor: self.inner.vendor,
            method: self.method.clone(),
            url: self.shown.clone(),
            status: response.status,
            excerpt: redact::excerpt(&response.body, &self.inner.secrets),
            attempts: tries.attempt,
            maybe_processed: tries.maybe_processed,
            why,
        }
    }

    /// A retryable answer: the wait before the next attempt, or the error when the loop may not
    /// go on (`forced`: the request's own hook asked for the retry).
    fn retry_answer(
        &self,
        response: &Response,
        tries: &mut RetryLoop,
        forced: bool,
    ) -> Result<Step, HttpError> {
        let status = response.status;
        let retry_after = retry_after(&response.headers, SystemTime::now()).or_else(|| {
            if status == StatusCode::TOO_MANY_REQUESTS {
                rate_limit_reset(&response.headers, SystemTime::now())
            } else {
                None
            }
        });
        let safe = certainly_not_processed(status, retry_after.is_some());
        if let Err(why) = tries.after_failure(safe, forced) {
            return Err(self.status_error(response, tries, Some(why)));
        }
        let wait = self.inner.plan_wait(tries.attempt, status, retry_after);
        warn!(
            vendor = self.inner.vendor,
            method = %self.method,
            url = %self.shown,
            attempt = tries.attempt,
            reason = %format!("status {}", status.as_u16()),
            wait_ms = wait.as_millis() as u64,
            retry_after_s = retry_after.map(|d| d.as_secs_f64()),
            "retrying"
        );
        Ok(Step::Again(wait))
    }

    /// No answer (connect failure, reset, timeout, a body too large): the wait before the next
    /// attempt, or the error.
    fn on_failure(
        &self,
        kind: TransportKind,
        detail: String,
        tries: &mut RetryLoop,
        sent_at: Instant,
    ) -> Result<Step, HttpError> {
        let inner = &*self.inner;
        let rtt = Instant::now().saturating_duration_since(sent_at);
        stats::add(&inner.counters.transport_errors, 1);
        if kind == TransportKind::Timeout {
            stats::add(&inner.counters.timeouts, 1);
        }
        let paced = inner.global.with_rate(|r| r.rate());
        inner
            .concurrency
            .on_response(rtt, Signal::BackPressure, paced);
        debug!(
            vendor = inner.vendor,
            method = %self.method,
            url = %self.shown,
            attempt = tries.attempt,
            error = %kind,
            elapsed_ms = rtt.as_millis() as u64,
            "http attempt"
        );
        let safe = kind == TransportKind::Connect;
        let fatal = matches!(kind, TransportKind::TooLarge | TransportKind::Other);
        let next = tries.after_failure(safe, false);
        let error = |why: Option<String>| HttpError::Transport {
            vendor: inner.vendor,
            method: self.method.clone(),
            url: self.shown.clone(),
            kind,
            detail: detail.clone(),
            attempts: tries.attempt,
            maybe_processed: tries.maybe_processed,
            why,
        };
        if fatal {
            return Err(error(None));
        }
        if let Err(why) = next {
            return Err(error(Some(why)));
        }
        let wait = backoff(tries.attempt);
        warn!(
            vendor = inner.vendor,
            method = %self.method,
            url = %self.shown,
            attempt = tries.attempt,
            reason = %kind,
            wait_ms = if inner.zero_delays { 0 } else { wait.as_millis() as u64 },
            "retrying"
        );
        Ok(Step::Again(wait))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_repeats_only_what_it_may_within_the_budget() {
        let mut tries = RetryLoop::new(2, false, false);
        tries.attempt = 1;
        // A 429 proves nothing happened: even a create is tried again.
        assert_eq!(tries.after_failure(true, false), Ok(()));
        assert!(!tries.maybe_processed);
        // A 500 may have been acted on: a create is not repeated, unless its hook says so.
        assert_eq!(
            tries.after_failure(false, false),
            Err(NOT_IDEMPOTENT.to_string())
        );
        assert!(tries.maybe_processed);
        assert_eq!(tries.after_failure(false, true), Ok(()));
        let mut tries = RetryLoop::new(2, true, true);
        tries.attempt = 3;
        assert_eq!(
            tries.after_failure(false, false),
            Err("the retry budget is spent: 2 retries, this request's own limit".to_string())
        );
    }

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
