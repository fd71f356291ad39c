//! Counters for the run report: what the engine did on the wire and how long it waited.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// A snapshot of one client's counters. Waits are summed over requests, so with concurrency they
/// can exceed wall time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpStats {
    /// Logical requests (`send()` calls).
    pub requests: u64,
    /// Attempts put on the wire (requests + retries).
    pub attempts: u64,
    /// Attempts after the first, over all requests.
    pub retries: u64,
    /// Requests that ended in an error.
    pub failed: u64,
    pub status_1xx: u64,
    pub status_2xx: u64,
    pub status_3xx: u64,
    pub status_4xx: u64,
    pub status_5xx: u64,
    /// 429 answers (also counted in `status_4xx`).
    pub status_429: u64,
    /// Attempts that got no answer (connect errors, resets, unreadable bodies), timeouts included.
    pub transport_errors: u64,
    pub timeouts: u64,
    /// Time spent waiting for the client-side rate limit (client-wide and named buckets).
    #[serde(serialize_with = "secs")]
    pub rate_limit_wait: Duration,
    /// Time spent paused by `Retry-After` or the default 429 wait.
    #[serde(serialize_with = "secs")]
    pub pause_wait: Duration,
    /// Time spent in per-request backoff between attempts.
    #[serde(serialize_with = "secs")]
    pub backoff_wait: Duration,
    /// Time spent waiting for a concurrency slot.
    #[serde(serialize_with = "secs")]
    pub concurrency_wait: Duration,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The adaptive concurrency limit now.
    pub concurrency_limit: usize,
    /// The client-wide rate now (requests per second); `None` while unlimited.
    pub rate_limit: Option<f64>,
    /// How often the client-wide rate was cut after 429s.
    pub rate_cuts: u64,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The live counters behind [`HttpStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub failed: AtomicU64,
    pub status: [AtomicU64; 5],
    pub status_429: AtomicU64,
    pub transport_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub rate_limit_wait_ns: AtomicU64,
    pub pause_wait_ns: AtomicU64,
    pub backoff_wait_ns: AtomicU64,
    pub concurrency_wait_ns: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
}

pub(crate) fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn add_wait(c: &AtomicU64, d: Duration) {
    c.fetch_add(
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

impl Counters {
    pub fn status(&self, code: u16) {
        if let Some(slot) = (code / 100)
            .checked_sub(1)
            .and_then(|i| self.status.get(usize::from(i)))
        {
            add(slot, 1);
        }
        if code == 429 {
            add(&self.status_429, 1);
        }
    }

    pub fn snapshot(&self) -> HttpStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let wait = |c: &AtomicU64| Duration::from_nanos(c.load(Ordering::Relaxed));
        HttpStats {
            requests: get(&self.requests),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            failed: get(&self.failed),
            status_1xx: get(&self.status[0]),
            status_2xx: get(&self.status[1]),
            status_3xx: get(&self.status[2]),
            status_4xx: get(&self.status[3]),
            status_5xx: get(&self.status[4]),
            status_429: get(&self.status_429),
            transport_errors: get(&self.transport_errors),
            timeouts: get(&self.timeouts),
            rate_limit_wait: wait(&self.rate_limit_wait_ns),
            pause_wait: wait(&self.pause_wait_ns),
            backoff_wait: wait(&self.backoff_wait_ns),
            concurrency_wait: wait(&self.concurrency_wait_ns),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            concurrency_limit: 0,
            rate_limit: None,
            rate_cuts: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_and_serialisation() {
        let c = Counters::default();
        for code in [200, 201, 301, 404, 429, 500, 503, 101, 99, 700] {
            c.status(code);
        }
        add_wait(&c.pause_wait_ns, Duration::from_millis(1500));
        let s = c.snapshot();
        assert_eq!(
            (
                s.status_1xx,
                s.status_2xx,
                s.status_3xx,
                s.status_4xx,
                s.status_5xx
            ),
            (1, 2, 1, 2, 2)
        );
        assert_eq!(s.status_429, 1);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["pause_wait"], 1.5);
    }
}
