//! Client-side rate limiting that also *discovers* an unknown limit from 429s.
//!
//! [`AdaptiveRate`] is a pure state machine (every method takes `now`), so its behaviour is tested
//! with a virtual clock and a simulated token-bucket server (see the tests at the bottom).
//!
//! - **Pacing** is GCRA (a smooth token bucket of depth one): one request every `1/rate`, with a
//!   small slack so late timer wake-ups do not drift the rate down.
//! - **Told the limit** (`requests_per_second`): pace at it. A 429 still cuts the rate (the account
//!   may be shared), and probing climbs back to the configured ceiling, never above.
//! - **Not told**: send unpaced until the first 429. Then install half the rate accepted over the
//!   last second and *slow-start* (double every 250 ms while the limit is what holds requests back)
//!   until 429s come back. From then on every cut is measured: over an *epoch* (the requests sent
//!   since the last change, after one round trip of grace so requests still in flight at the old
//!   rate do not count), the server accepted a fraction `f` of what we sent at rate `r`, so it
//!   takes about `f * r`; the new rate is that times [`CUT_MARGIN`]. Between cuts the rate probes
//!   upward by [`PROBE_PER_SECOND`]. Against a token bucket this settles into a shallow sawtooth
//!   around the true limit with about one 429 per cycle; the bucket's own burst absorbs the
//!   overshoot, so throughput stays near the limit.
//!
//! The constants were tuned with a discrete-event simulation of N=5,000 requests against token
//! buckets of 50/s and 600/min with bursts from 10 to 1,000 and round trips of 2–200 ms: ≥95% of
//! the limit with ≤2% of requests answered 429 when not told, ~100% and no 429 when told.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Window over which the first estimate counts accepted responses.
pub const DISCOVERY_WINDOW: Duration = Duration::from_secs(1);
/// The first installed rate is this share of what the server accepted over [`DISCOVERY_WINDOW`]
/// (slow start then doubles it back up quickly, as TCP's slow start does).
pub const FIRST_ESTIMATE_FACTOR: f64 = 0.5;
/// The first installed rate never starts below this (a 429 on the very first requests says
/// nothing about the limit; slow start climbs from here).
pub const FIRST_RATE_FLOOR: f64 = 1.0;
/// Slow start doubles the rate this often while the rate is what holds requests back.
pub const SLOW_START_INTERVAL: Duration = Duration::from_millis(250);
/// Responses an epoch needs before its accepted fraction is trusted for a deep cut.
pub const EPOCH_SAMPLES: u32 = 20;
/// An epoch with a 429 ends after this long even with fewer samples (slow limits).
pub const EPOCH_MAX: Duration = Duration::from_secs(2);
/// A cut installs this share of the measured accepted rate, to drain the server's bucket a bit.
pub const CUT_MARGIN: f64 = 0.98;
/// Deepest single cut when the epoch had [`EPOCH_SAMPLES`] responses.
pub const CUT_FLOOR: f64 = 0.1;
/// Deepest single cut from a thinly measured epoch (noise must not collapse the rate).
pub const CUT_FLOOR_FEW_SAMPLES: f64 = 0.5;
/// Upward probe between cuts: +0.5% per second (the simulation's best 429s/throughput balance).
pub const PROBE_PER_SECOND: f64 = 0.005;
/// How often the probe (and slow start) adjusts the rate.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// The rate never drops below this (one request every 20 s).
pub const MIN_RATE: f64 = 0.05;
/// Rates above this are treated as "no limit" (nothing in roster's world goes faster).
pub const MAX_RATE: f64 = 1_000_000.0;
/// Largest burst credit the pacer lets build up, so timer lateness does not lower the rate.
pub const PACING_SLACK: Duration = Duration::from_millis(100);
/// Weight of a new sample in the smoothed round-trip time.
const SRTT_WEIGHT: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// No rate yet (unknown limit, no 429 so far).
    Unlimited,
    /// Doubling until 429s come back.
    SlowStart,
    /// Measured cuts and a slow upward probe.
    Probe,
}

#[derive(Debug, Clone)]
struct Epoch {
    /// Requests sent at or after this instant count.
    measure_from: Instant,
    sent: u32,
    accepted: u32,
    throttled: u32,
}

/// The result of asking the pacer for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Go now; the slot is taken.
    Go,
    /// Come back at this instant.
    WaitUntil(Instant),
}

/// Pacing plus limit discovery for one bucket (the client-wide one or a named one).
#[derive(Debug, Clone)]
pub struct AdaptiveRate {
    ceiling: Option<f64>,
    rate: Option<f64>,
    phase: Phase,
    tat: Option<Instant>,
    epoch: Option<Epoch>,
    last_adjust: Option<Instant>,
    /// A request had to wait for the pacer since the last adjustment.
    bound: bool,
    srtt: Option<Duration>,
    accepted_recent: VecDeque<Instant>,
    cuts: u64,
}

impl AdaptiveRate {
    /// `ceiling`: the configured requests per second, if any.
    pub fn new(ceiling: Option<f64>) -> Self {
        let ceiling = ceiling
            .filter(|r| r.is_finite() && *r > 0.0)
            .map(|r| r.clamp(MIN_RATE, MAX_RATE));
        Self {
            ceiling,
            rate: ceiling,
            phase: if ceiling.is_some() {
                Phase::Probe
            } else {
                Phase::Unlimited
            },
            tat: None,
            epoch: None,
            last_adjust: None,
            bound: false,
            srtt: None,
            accepted_recent: VecDeque::new(),
            cuts: 0,
        }
    }

    /// The rate in force (requests per second), `None` while unlimited.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How many times the rate was cut after 429s.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Takes a slot if the pacing allows one at `now`.
    pub fn poll(&mut self, now: Instant) -> Slot {
        if self.last_adjust.is_none() {
            self.last_adjust = Some(now);
        }
        let epoch = self.epoch.get_or_insert(Epoch {
            measure_from: now,
            sent: 0,
            accepted: 0,
            throttled: 0,
        });
        let Some(rate) = self.rate else {
            epoch.sent += 1;
            return Slot::Go;
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let tat = self.tat.unwrap_or(now);
        if now < tat {
            self.bound = true;
            return Slot::WaitUntil(tat);
        }
        // Lateness up to the slack (a timer that woke late) is not lost, so the rate does not
        // drift down; longer idleness does not bank more than one extra request.
        let slack = interval.min(PACING_SLACK);
        let base = tat.max(now.checked_sub(slack).unwrap_or(now));
        self.tat = Some(base + interval);
        if now >= epoch.measure_from {
            epoch.sent += 1;
        }
        Slot::Go
    }

    /// Feeds back one answer: `throttled` is a 429 (or an equivalent verdict), `sent_at` when its
    /// request went out.
    pub fn on_response(&mut self, now: Instant, sent_at: Instant, throttled: bool) {
        let rtt = now.saturating_duration_since(sent_at);
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => s.mul_f64(1.0 - SRTT_WEIGHT) + rtt.mul_f64(SRTT_WEIGHT),
        });
        if self.phase == Phase::Unlimited {
            self.on_response_unlimited(now, throttled);
            return;
        }
        let Some(epoch) = self.epoch.as_mut() else {
            return;
        };
        if sent_at < epoch.measure_from {
            // Sent at an older rate: says nothing about the current one.
            return;
        }
        if throttled {
            epoch.throttled += 1;
        } else {
            epoch.accepted += 1;
        }
        let samples = epoch.accepted + epoch.throttled;
        let epoch_age = now.saturating_duration_since(epoch.measure_from);
        if epoch.throttled > 0 {
            if samples >= EPOCH_SAMPLES || epoch_age >= EPOCH_MAX {
                self.cut(now, samples);
            }
            return;
        }
        let since = now.saturating_duration_since(self.last_adjust.unwrap_or(now));
        match self.phase {
            Phase::SlowStart if since >= SLOW_START_INTERVAL => {
                if self.bound {
                    self.set_rate(self.rate.map(|r| r * 2.0));
                    self.new_epoch(now, false);
                }
                self.bound = false;
                self.last_adjust = Some(now);
            }
            Phase::Probe if since >= PROBE_INTERVAL => {
                let at_ceiling = matches!((self.rate, self.ceiling), (Some(r), Some(c)) if r >= c);
                if !at_ceiling {
                    let factor = (1.0 + PROBE_PER_SECOND).powf(since.as_secs_f64());
                    self.set_rate(self.rate.map(|r| r * factor));
                    self.new_epoch(now, false);
                }
                self.last_adjust = Some(now);
            }
            _ => {}
        }
    }

    fn on_response_unlimited(&mut self, now: Instant, throttled: bool) {
        let horizon = now.checked_sub(DISCOVERY_WINDOW);
        if let Some(h) = horizon {
            while self.accepted_recent.front().is_some_and(|t| *t < h) {
                self.accepted_recent.pop_front();
            }
        }
        if !throttled {
            // Bounded: at most one second of answers, and never more than this many.
            if self.accepted_recent.len() < 200_000 {
                self.accepted_recent.push_back(now);
            }
            return;
        }
        let accepted = self.accepted_recent.len() as f64 / DISCOVERY_WINDOW.as_secs_f64();
        self.accepted_recent = VecDeque::new();
        self.phase = Phase::SlowStart;
        self.cuts += 1;
        self.set_rate(Some(
            (accepted * FIRST_ESTIMATE_FACTOR).max(FIRST_RATE_FLOOR),
        ));
        self.tat = None;
        self.new_epoch(now, true);
        self.bound = false;
        self.last_adjust = Some(now);
    }

    fn cut(&mut self, now: Instant, samples: u32) {
        let Some(epoch) = self.epoch.as_ref() else {
            return;
        };
        let Some(rate) = self.rate else { return };
        let span = now
            .saturating_duration_since(epoch.measure_from)
            .as_secs_f64()
            .max(1e-3);
        let sent_rate = f64::from(epoch.sent) / span;
        let effective = rate.min(sent_rate.max(MIN_RATE));
        let accepted_share = f64::from(epoch.accepted) / f64::from(samples.max(1));
        let floor = if samples >= EPOCH_SAMPLES {
            CUT_FLOOR
        } else {
            CUT_FLOOR_FEW_SAMPLES
        };
        let new = effective * accepted_share.max(floor) * CUT_MARGIN;
        // A cut never raises the rate.
        self.set_rate(Some(new.min(rate)));
        self.cuts += 1;
        if samples >= EPOCH_SAMPLES {
            self.phase = Phase::Probe;
        }
        self.new_epoch(now, true);
        self.bound = false;
        self.last_adjust = Some(now);
    }

    fn set_rate(&mut self, rate: Option<f64>) {
        self.rate = rate.map(|r| {
            let r = r.clamp(MIN_RATE, MAX_RATE);
            match self.ceiling {
                Some(c) => r.min(c),
                None => r,
            }
        });
    }

    fn new_epoch(&mut self, now: Instant, grace: bool) {
        let grace = if grace {
            self.srtt.unwrap_or(Duration::ZERO)
        } else {
            Duration::ZERO
        };
        self.epoch = Some(Epoch {
            measure_from: now + grace,
            sent: 0,
            accepted: 0,
            throttled: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};

    /// Counts the slots `AdaptiveRate` hands out over `secs` of virtual time with an always-ready
    /// caller.
    fn slots_in(rate: &mut AdaptiveRate, start: Instant, secs: f64) -> u32 {
        let end = start + Duration::from_secs_f64(secs);
        let mut now = start;
        let mut n = 0;
        while now < end {
            match rate.poll(now) {
                Slot::Go => n += 1,
                // A timer that wakes 1 ms late, as tokio's does.
                Slot::WaitUntil(t) => now = t + Duration::from_millis(1),
            }
        }
        n
    }

    #[test]
    fn told_rate_is_kept_without_drift() {
        for rps in [0.5, 5.0, 10.0, 50.0, 200.0] {
            let mut r = AdaptiveRate::new(Some(rps));
            let start = Instant::now();
            let secs = 200.0 / rps;
            let n = f64::from(slots_in(&mut r, start, secs));
            let want = rps * secs;
            assert!(
                n >= want * 0.99 && n <= want * 1.01 + 2.0,
                "rps {rps}: {n} slots, want {want}"
            );
        }
    }

    #[test]
    fn unlimited_until_the_first_429() {
        let mut r = AdaptiveRate::new(None);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(r.poll(now), Slot::Go);
        }
        assert_eq!(r.rate(), None);
    }

    #[test]
    fn first_429_installs_half_the_accepted_rate() {
        let mut r = AdaptiveRate::new(None);
        let t0 = Instant::now();
        for i in 0..40u64 {
            let t = t0 + Duration::from_millis(i * 10);
            assert_eq!(r.poll(t), Slot::Go);
            r.on_response(t + Duration::from_millis(5), t, false);
        }
        let t = t0 + Duration::from_millis(400);
        r.on_response(t, t, true);
        assert_eq!(r.rate(), Some(20.0));
        assert_eq!(r.cuts(), 1);
    }

    #[test]
    fn a_cut_never_exceeds_the_ceiling_and_probing_returns_to_it() {
        let mut r = AdaptiveRate::new(Some(10.0));
        let t0 = Instant::now();
        // 20 answers in an epoch, 5 of them 429.
        for i in 0..20u64 {
            let t = t0 + Duration::from_millis(i * 100);
            let _ = r.poll(t);
            r.on_response(t + Duration::from_millis(10), t, i % 4 == 0);
        }
        let cut = r.rate().unwrap();
        assert!(cut < 10.0 && cut > 5.0, "{cut}");
        // Clean answers for a long while: back to 10, never above.
        let mut t = t0 + Duration::from_secs(3);
        for _ in 0..2_000 {
            t += Duration::from_millis(100);
            let _ = r.poll(t);
            r.on_response(t + Duration::from_millis(10), t, false);
        }
        assert_eq!(r.rate(), Some(10.0));
    }

    #[test]
    fn stale_429s_from_before_a_cut_are_ignored() {
        let mut r = AdaptiveRate::new(Some(10.0));
        let t0 = Instant::now();
        for i in 0..20u64 {
            let t = t0 + Duration::from_millis(i * 100);
            let _ = r.poll(t);
            r.on_response(t + Duration::from_millis(10), t, true);
        }
        let after_cut = r.rate().unwrap();
        // Many more 429s, all for requests sent before the cut.
        for i in 0..100u64 {
            r.on_response(t0 + Duration::from_millis(2_100 + i), t0, true);
        }
        assert_eq!(r.rate(), Some(after_cut));
    }

    /// A token-bucket server and a client with an unbounded backlog, in virtual time.
    struct Sim {
        limit: f64,
        burst: f64,
        tokens: f64,
        last: f64,
    }

    impl Sim {
        fn admit(&mut self, t: f64) -> bool {
            self.tokens = (self.tokens + (t - self.last) * self.limit).min(self.burst);
            self.last = t;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }
    }

    /// Runs `n` requests (429s are retried after a full-jitter-ish deterministic backoff) against
    /// a token bucket; returns (achieved rate / limit, 429 count).
    fn simulate(
        limit: f64,
        burst: f64,
        told: bool,
        n: usize,
        rtt_ms: u64,
        concurrency: usize,
    ) -> (f64, u32) {
        let t0 = Instant::now();
        let secs = |i: Instant| i.duration_since(t0).as_secs_f64();
        let mut rate = AdaptiveRate::new(told.then_some(limit));
        let mut server = Sim {
            limit,
            burst,
            tokens: burst,
            last: 0.0,
        };
        let mut ready: VecDeque<usize> = (0..n).collect();
        let mut retries = vec![0u32; n];
        // (time, seq, event)
        let mut events: BinaryHeap<Reverse<(Instant, u64, Ev)>> = BinaryHeap::new();
        let mut seq = 0u64;
        let mut in_flight = 0usize;
        let mut done = 0usize;
        let mut throttled = 0u32;
        let mut now = t0;
        let mut gate_wake: Option<Instant> = None;
        let mut last_done = t0;
        let mut jitter = 0u64;
        loop {
            // Dispatch as much as the pacer and concurrency allow.
            while gate_wake.is_none() && in_flight < concurrency && !ready.is_empty() {
                match rate.poll(now) {
                    Slot::Go => {
                        let id = ready.pop_front().unwrap_or_default();
                        in_flight += 1;
                        jitter = jitter
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407)
                            % 1000;
                        let half = Duration::from_micros(rtt_ms * 500 + jitter * rtt_ms / 4);
                        seq += 1;
                        events.push(Reverse((now + half, seq, Ev::Arrive(id, now))));
                    }
                    Slot::WaitUntil(t) => {
                        gate_wake = Some(t);
                        seq += 1;
                        events.push(Reverse((t, seq, Ev::Gate)));
                    }
                }
            }
            let Some(Reverse((t, _, ev))) = events.pop() else {
                break;
            };
            now = t;
            match ev {
                Ev::Gate => gate_wake = None,
                Ev::Arrive(id, sent) => {
                    let ok = server.admit(secs(t));
                    seq += 1;
                    let half = Duration::from_micros(rtt_ms * 500);
                    events.push(Reverse((t + half, seq, Ev::Answer(id, sent, ok))));
                }
                Ev::Answer(id, sent, ok) => {
                    in_flight -= 1;
                    rate.on_response(t, sent, !ok);
                    if ok {
                        done += 1;
                        last_done = t;
                    } else {
                        throttled += 1;
                        retries[id] += 1;
                        let back = Duration::from_millis(137 * u64::from(retries[id]) % 1000);
                        seq += 1;
                        events.push(Reverse((t + back, seq, Ev::Requeue(id))));
                    }
                }
                Ev::Requeue(id) => ready.push_back(id),
            }
        }
        assert_eq!(done, n);
        let achieved = n as f64 / secs(last_done);
        (achieved / limit, throttled)
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        Gate,
        Arrive(usize, Instant),
        Answer(usize, Instant, bool),
        Requeue(usize),
    }

    #[test]
    fn discovers_an_unknown_limit_efficiently() {
        // (limit/s, burst, round trip ms)
        for (limit, burst, rtt) in [
            (50.0, 50.0, 5),
            (50.0, 10.0, 5),
            (50.0, 50.0, 100),
            (10.0, 10.0, 5),
            (10.0, 600.0, 50),
        ] {
            let (eff, throttled) = simulate(limit, burst, false, 5_000, rtt, 16);
            let share = f64::from(throttled) / 5_000.0;
            eprintln!(
                "unknown limit {limit}/s burst {burst} rtt {rtt} ms: {:.1}% of the limit, {:.2}% 429s",
                eff * 100.0,
                share * 100.0
            );
            assert!(
                eff >= 0.95,
                "limit {limit} burst {burst} rtt {rtt}: efficiency {eff:.3}"
            );
            assert!(
                share <= 0.02,
                "limit {limit} burst {burst} rtt {rtt}: 429 share {share:.4}"
            );
        }
    }

    #[test]
    fn a_told_limit_is_used_fully_without_429s() {
        for (limit, burst) in [(50.0, 50.0), (50.0, 2.0), (10.0, 600.0), (10.0, 10.0)] {
            let (eff, throttled) = simulate(limit, burst, true, 5_000, 5, 16);
            eprintln!(
                "told limit {limit}/s burst {burst}: {:.2}% of the limit, {throttled} 429s",
                eff * 100.0
            );
            assert!(
                eff >= 0.99,
                "limit {limit} burst {burst}: efficiency {eff:.4}"
            );
            assert_eq!(throttled, 0, "limit {limit} burst {burst}");
        }
    }
}
