//! The request log: a bounded ring of recent requests plus exact counters.
//!
//! The ring keeps memory flat in million-request benchmarks; the counters in [`Stats`] never
//! wrap, so a test can still check totals after the ring has overflowed.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::Vendor;

/// One request the sandbox answered (or deliberately did not).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RequestLogEntry {
    /// Increasing number, unique for the sandbox's lifetime (also across `clear`).
    pub seq: u64,
    /// The vendor whose prefix the path starts with; `None` for paths outside every prefix.
    pub vendor: Option<Vendor>,
    /// HTTP method.
    pub method: String,
    /// Path as received (percent-encoded, prefix included).
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Status answered; 0 when the connection was dropped without an answer.
    pub status: u16,
    /// When the request arrived.
    pub at: DateTime<Utc>,
    /// Time from arrival to answer, in milliseconds (added latency included).
    pub duration_ms: f64,
    /// The injected fault that shaped the answer, if any (`rate_limited`, `error_503`,
    /// `dropped`, `fail_next`, `apply_then_fail`, `userguiding_block`, `latency 20ms`).
    pub fault: Option<String>,
    /// The request's headers, names lowercased, credentials (`authorization`, `cookie`,
    /// `proxy-authorization`) left out, so a test can check e.g. `content-type`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Exact counters since start or the last `clear`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// Every logged request.
    pub total: u64,
    /// Every request that arrived, counted before its handler runs. A request is logged only
    /// when its answer is ready, so `arrived - total` is what is in flight, and after a client
    /// exits it is what the client abandoned before the answer.
    #[serde(default)]
    pub arrived: u64,
    /// Per vendor name: requests, answers by status, and how many a fault shaped.
    pub vendors: BTreeMap<String, VendorStats>,
}

/// Counters of one vendor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VendorStats {
    /// Requests received.
    pub requests: u64,
    /// Answers by status code (`"0"` = dropped).
    pub statuses: BTreeMap<String, u64>,
    /// Requests a fault shaped.
    pub faults: u64,
}

#[derive(Debug)]
struct Inner {
    ring: VecDeque<RequestLogEntry>,
    stats: Stats,
    next_seq: u64,
}

/// The shared log.
#[derive(Debug)]
pub(crate) struct RequestLog {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl RequestLog {
    pub fn new(capacity: usize) -> RequestLog {
        RequestLog {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(capacity.clamp(1, 65_536)),
                stats: Stats::default(),
                next_seq: 1,
            }),
        }
    }

    /// Appends one entry (its `seq` is assigned here).
    pub fn push(&self, mut e: RequestLogEntry) {
        let mut g = self.inner.lock();
        e.seq = g.next_seq;
        g.next_seq += 1;
        g.stats.total += 1;
        let key = e.vendor.map_or("none", Vendor::name);
        let vs = match g.stats.vendors.get_mut(key) {
            Some(vs) => vs,
            None => g.stats.vendors.entry(key.to_owned()).or_default(),
        };
        vs.requests += 1;
        *vs.statuses.entry(e.status.to_string()).or_default() += 1;
        if e.fault.is_some() {
            vs.faults += 1;
        }
        if g.ring.len() >= self.capacity {
            g.ring.pop_front();
        }
        g.ring.push_back(e);
    }

    /// Counts a request as it arrives, before faults and the handler.
    pub fn arrive(&self) {
        self.inner.lock().stats.arrived += 1;
    }

    /// Entries oldest first, optionally only one vendor's and only after `since` (a seq).
    pub fn entries(&self, vendor: Option<Vendor>, since: Option<u64>) -> Vec<RequestLogEntry> {
        let g = self.inner.lock();
        g.ring
            .iter()
            .filter(|e| vendor.is_none() || e.vendor == vendor)
            .filter(|e| since.is_none_or(|s| e.seq > s))
            .cloned()
            .collect()
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().stats.clone()
    }

    pub fn clear(&self) {
        let mut g = self.inner.lock();
        g.ring.clear();
        g.stats = Stats::default();
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16) -> RequestLogEntry {
        RequestLogEntry {
            seq: 0,
            vendor: Some(Vendor::Userflow),
            method: "GET".into(),
            path: "/userflow/users".into(),
            query: None,
            status,
            at: Utc::now(),
            duration_ms: 0.0,
            fault: None,
            headers: BTreeMap::new(),
        }
    }

    #[test]
    fn ring_is_bounded_and_counters_are_exact() {
        let log = RequestLog::new(3);
        for i in 0..10 {
            log.push(entry(if i % 2 == 0 { 200 } else { 429 }));
        }
        let e = log.entries(None, None);
        assert_eq!(e.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 9, 10]);
        let s = log.stats();
        assert_eq!(s.total, 10);
        assert_eq!(s.vendors["userflow"].statuses["429"], 5);
        assert_eq!(log.entries(None, Some(9)).len(), 1);
        assert_eq!(s.arrived, 0, "arrivals are counted by the layer, apart");
        log.arrive();
        assert_eq!(log.stats().arrived, 1);
    }
}
