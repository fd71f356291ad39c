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
fn the_second_request_after_a_pause_waits_a_whole_interval() {
    // Guru: 1 request/s with a burst of 1, `Retry-After: 1`. The bucket holds one token when the
    // pause ends; the slack let the next request go 0.1 s early, into a 429 and the next pause,
    // after every pause.
    let mut r = AdaptiveRate::new(Some(1.0));
    let t0 = Instant::now();
    let secs = |s: f64| t0 + Duration::from_secs_f64(s);
    // The 429 comes after half a second (a loaded machine); the pause ends a second later.
    assert_eq!(r.poll(t0), Slot::Go);
    r.on_response(secs(0.5), t0, true);
    r.on_pause(secs(1.5));
    // The waiters wake at the pause's end: one goes, the next waits until a second after it
    // (the slack let it go at 2.4 s).
    assert_eq!(r.poll(secs(1.5)), Slot::Go);
    assert_eq!(r.poll(secs(2.4)), Slot::WaitUntil(secs(2.5)));
    assert_eq!(r.poll(secs(2.5)), Slot::Go);
    // Lateness that is not a pause still keeps its slack (see the next test).
    assert_eq!(r.poll(secs(5.0)), Slot::Go);
    assert_eq!(r.poll(secs(5.95)), Slot::Go);
}

#[test]
fn late_wake_ups_do_not_lower_a_told_rate() {
    // A busy machine: every fifth wait wakes 60 ms late instead of 1 ms.
    for rps in [10.0, 50.0, 200.0] {
        let mut r = AdaptiveRate::new(Some(rps));
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(400.0 / rps);
        let (mut now, mut n, mut waits) = (start, 0u32, 0u32);
        while now < end {
            match r.poll(now) {
                Slot::Go => n += 1,
                Slot::WaitUntil(t) => {
                    waits += 1;
                    let late = if waits % 5 == 0 { 60 } else { 1 };
                    now = t + Duration::from_millis(late);
                }
            }
        }
        let n = f64::from(n);
        assert!(
            (400.0 * 0.99..=400.0 * 1.01 + 2.0).contains(&n),
            "rps {rps}: {n} slots of 400"
        );
    }
}

#[test]
fn a_cautious_start_then_unlimited_until_the_first_429() {
    let mut r = AdaptiveRate::new(None);
    let t0 = Instant::now();
    // The first second is paced from START_RATE, doubling every START_DOUBLING: a few
    // requests, not the whole initial concurrency at once.
    assert_eq!(r.poll(t0), Slot::Go);
    assert!(matches!(r.poll(t0), Slot::WaitUntil(_)));
    assert_eq!(r.rate, Some(START_RATE));
    let _ = r.poll(t0 + START_DOUBLING * 3);
    assert_eq!(r.rate, Some(START_RATE * 8.0));
    assert_eq!(r.rate(), None, "a probe, not a rate");
    let mut fresh = AdaptiveRate::new(None);
    let first_second = slots_in(&mut fresh, t0, START_PROBE.as_secs_f64());
    assert!(
        first_second < 1_100,
        "{first_second} slots in the first second"
    );
    // Then unpaced, without a 429.
    let now = t0 + START_PROBE;
    for _ in 0..10_000 {
        assert_eq!(r.poll(now), Slot::Go);
    }
    assert_eq!(r.rate(), None);
}

/// A client past its cautious start, sending unpaced.
fn unpaced() -> AdaptiveRate {
    let mut r = AdaptiveRate::new(None);
    r.phase = Phase::Unlimited;
    r
}

/// 40 accepted answers at 100/s from an unpaced client, then a throttle event whose five
/// answers hold `throttled` 429s.
fn first_event(throttled: u64) -> AdaptiveRate {
    let mut r = unpaced();
    let t0 = Instant::now();
    for i in 0..40u64 {
        let t = t0 + Duration::from_millis(i * 10);
        assert_eq!(r.poll(t), Slot::Go);
        r.on_response(t + Duration::from_millis(5), t, false);
    }
    for i in 0..u64::from(EVENT_SAMPLES) {
        let t = t0 + Duration::from_millis(400 + i);
        assert_eq!(r.rate(), None, "no decision before {EVENT_SAMPLES} answers");
        r.on_response(t, t, i < throttled);
    }
    assert_eq!(r.cuts(), 1);
    r
}

#[test]
fn an_unpaced_clients_429s_are_a_floor_to_climb_from() {
    // Nothing held the client back, so the 429s may come from a clump of simultaneous
    // requests: the accepted rate (44 in 0.404 s) is a floor, and slow start climbs from it.
    for throttled in [1, 3, 5] {
        let r = first_event(throttled);
        let accepted = 40 + u64::from(EVENT_SAMPLES) - throttled;
        let want = accepted as f64 / 0.404;
        let rate = r.rate().unwrap();
        assert!((rate - want).abs() < 1.0, "{rate}, want {want}");
        assert_eq!(r.phase, Phase::SlowStart);
    }
}

#[test]
fn a_paced_event_installs_the_measured_rate_less_the_margin() {
    let mut r = first_event(1);
    let start = Instant::now() + Duration::from_secs(1);
    // Paced at the floor (~109/s) with callers queueing: the pacer holds them back, so the
    // server saw our rate. It accepts 80/s of it for 2 s (the answers slow down), then 429s.
    let mut t = start;
    for _ in 0..160 {
        while r.poll(t) == Slot::Go {}
        t += Duration::from_micros(12_500);
        r.on_response(t, t, false);
    }
    for _ in 0..EVENT_SAMPLES {
        t += Duration::from_millis(1);
        r.on_response(t, t, true);
    }
    let rate = r.rate().unwrap();
    let want = 80.0 * CUT_MARGIN;
    assert!((rate - want).abs() < 3.0, "{rate}, want {want}");
    assert_eq!(r.phase, Phase::Probe);
}

#[test]
fn a_cut_across_a_retry_after_pause_is_moderate() {
    // Paced at 200/s against a server of 200/s with a burst of 5 that answers 429 with
    // `Retry-After: 1`. The first event's last answers come during its pause, so the next
    // epoch spans the pause: 30 accepted in 1.15 s, of which 1 s paused. Counted whole,
    // that measured ~26/s and cut the rate to ~25/s for minutes of probing.
    let mut r = unpaced();
    r.rate = Some(200.0);
    r.phase = Phase::Probe;
    let t0 = Instant::now();
    let _ = r.poll(t0);
    let throttle_event = |r: &mut AdaptiveRate, from: Instant, accepted: u64| {
        let mut t = from;
        for _ in 0..accepted {
            t += Duration::from_millis(5);
            while r.poll(t) == Slot::Go {}
            r.on_response(t, t, false);
        }
        t += Duration::from_millis(1);
        r.on_response(t, t, true);
        r.on_pause(t + Duration::from_secs(1));
        for _ in 1..EVENT_SAMPLES {
            r.on_response(t, t, true);
        }
        t
    };
    let t1 = throttle_event(&mut r, t0, 200);
    let first = r.rate().unwrap();
    assert!((first - 200.0 * CUT_MARGIN).abs() < 5.0, "{first}");
    let _ = throttle_event(&mut r, t1 + Duration::from_secs(1), 30);
    let second = r.rate().unwrap();
    assert_eq!(r.phase, Phase::Probe);
    assert!(
        (second - first * ACROSS_PAUSE_CUT).abs() < 1.0,
        "{second}, want {}",
        first * ACROSS_PAUSE_CUT
    );
}

#[test]
fn a_429_storm_with_nothing_accepted_slow_starts_from_the_floor() {
    let mut r = AdaptiveRate::new(None);
    let t0 = Instant::now();
    for i in 0..u64::from(EVENT_SAMPLES) {
        let t = t0 + Duration::from_millis(i);
        let _ = r.poll(t);
        r.on_response(t + Duration::from_millis(1), t, true);
    }
    assert_eq!(r.rate(), Some(FIRST_RATE_FLOOR));
    // Clean answers while the pacer holds requests back: doubling.
    let mut t = t0 + Duration::from_millis(20);
    for _ in 0..8 {
        t += SLOW_START_INTERVAL;
        // Callers queue up until the pacer holds them back.
        while r.poll(t) == Slot::Go {}
        r.on_response(t, t, false);
    }
    assert!(r.rate().unwrap() >= 64.0, "{:?}", r.rate());
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
    /// `None` when admitted, else the `Retry-After` the sandbox would send (whole seconds,
    /// at least 1).
    fn admit(&mut self, t: f64) -> Option<u64> {
        self.tokens = (self.tokens + (t - self.last) * self.limit).min(self.burst);
        self.last = t;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some((((1.0 - self.tokens) / self.limit).ceil() as u64).max(1))
        }
    }
}

/// Runs `n` requests against a token bucket. 429s are retried after a deterministic backoff,
/// or, with `retry_after`, after pausing the whole client as the engine does. Returns
/// (achieved rate / limit, 429 count).
fn simulate(
    limit: f64,
    burst: f64,
    told: bool,
    retry_after: bool,
    n: usize,
    rtt_ms: u64,
    concurrency: usize,
) -> (f64, u32) {
    let client = Client {
        concurrency,
        ramp: Duration::ZERO,
        zero_backoff: false,
    };
    simulate_client(limit, burst, told, retry_after, n, rtt_ms, &client)
}

/// How the simulated client sends.
struct Client {
    /// Requests in flight, at most.
    concurrency: usize,
    /// The limit grows from 1 to `concurrency` over this long (adaptive concurrency
    /// climbing), so demand starts below the server's limit.
    ramp: Duration,
    /// 429s without `Retry-After` are retried at once (`ROSTER_ZERO_DELAYS=1`).
    zero_backoff: bool,
}

/// [`simulate`] with any [`Client`].
fn simulate_client(
    limit: f64,
    burst: f64,
    told: bool,
    retry_after: bool,
    n: usize,
    rtt_ms: u64,
    client: &Client,
) -> (f64, u32) {
    let Client {
        concurrency,
        ramp,
        zero_backoff,
    } = *client;
    let t0 = Instant::now();
    let cap = |now: Instant| -> usize {
        if ramp.is_zero() {
            return concurrency;
        }
        let share = (now.duration_since(t0).as_secs_f64() / ramp.as_secs_f64()).min(1.0);
        1 + ((concurrency - 1) as f64 * share) as usize
    };
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
    let mut pause_until = t0;
    loop {
        // Dispatch as much as the pause, the pacer and concurrency allow.
        while gate_wake.is_none() && in_flight < cap(now) && !ready.is_empty() {
            if now < pause_until {
                gate_wake = Some(pause_until);
                seq += 1;
                events.push(Reverse((pause_until, seq, Ev::Gate)));
                break;
            }
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
                let wait = server.admit(secs(t));
                seq += 1;
                let half = Duration::from_micros(rtt_ms * 500);
                events.push(Reverse((t + half, seq, Ev::Answer(id, sent, wait))));
            }
            Ev::Answer(id, sent, wait) => {
                in_flight -= 1;
                rate.on_response(t, sent, wait.is_some());
                if let Some(secs) = wait.filter(|_| retry_after) {
                    throttled += 1;
                    let until = t + Duration::from_secs(secs);
                    if until > pause_until {
                        pause_until = until;
                        rate.on_pause(until);
                    }
                    ready.push_front(id);
                } else if wait.is_none() {
                    done += 1;
                    last_done = t;
                } else {
                    throttled += 1;
                    retries[id] += 1;
                    let back = if zero_backoff {
                        Duration::ZERO
                    } else {
                        Duration::from_millis(137 * u64::from(retries[id]) % 1000)
                    };
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
    Answer(usize, Instant, Option<u64>),
    Requeue(usize),
}

#[test]
fn discovers_an_unknown_limit_efficiently() {
    // (limit/s, burst, Retry-After, round trip ms). The sandbox's default burst is one
    // second's worth; Appcues and SCIM answer with Retry-After, the others without.
    for (limit, burst, ra, rtt) in [
        (50.0, 50.0, false, 5),
        (50.0, 50.0, true, 5),
        (50.0, 50.0, false, 100),
        (50.0, 50.0, true, 100),
        (50.0, 10.0, false, 5),
        (50.0, 1000.0, false, 5),
        (10.0, 10.0, false, 5),
        (10.0, 10.0, true, 5),
        (10.0, 10.0, false, 100),
        (10.0, 600.0, false, 50),
    ] {
        let (eff, throttled) = simulate(limit, burst, false, ra, 5_000, rtt, 16);
        let share = f64::from(throttled) / 5_000.0;
        eprintln!(
            "unknown limit {limit}/s burst {burst} retry-after {ra} rtt {rtt} ms: {:.1}% of the limit, {:.2}% 429s",
            eff * 100.0,
            share * 100.0
        );
        assert!(
            eff >= 0.95,
            "limit {limit} burst {burst} ra {ra} rtt {rtt}: efficiency {eff:.3}"
        );
        assert!(
            share <= 0.02,
            "limit {limit} burst {burst} ra {ra} rtt {rtt}: 429 share {share:.4}"
        );
    }
}

#[test]
fn a_client_ramping_up_below_the_limit_still_finds_it() {
    // The sandbox's shape: 200/s with a burst of 5, and a client whose demand starts below
    // the limit (adaptive concurrency climbing), so its first 429s come from a clump of
    // simultaneous requests rather than from a full server. Once measured as the limit, that
    // demand kept the rate at about 70% of the limit for good.
    let mut failed = Vec::new();
    for (limit, burst, ra, rtt, conc, ramp_ms, zero_backoff) in [
        (200.0, 5.0, false, 25, 16, 3_000, false),
        (200.0, 5.0, false, 25, 16, 3_000, true),
        (200.0, 5.0, false, 25, 32, 1_000, false),
        (200.0, 5.0, true, 25, 32, 1_000, false),
        (200.0, 5.0, false, 10, 16, 2_000, true),
        (200.0, 5.0, false, 2, 16, 500, true),
        (50.0, 2.0, false, 60, 16, 2_000, false),
        (50.0, 2.0, false, 40, 16, 3_000, true),
        (50.0, 2.0, false, 40, 4, 3_000, true),
        (50.0, 50.0, true, 60, 16, 2_000, false),
        (10.0, 10.0, false, 100, 8, 2_000, false),
    ] {
        let n = 5_000;
        let client = Client {
            concurrency: conc,
            ramp: Duration::from_millis(ramp_ms),
            zero_backoff,
        };
        let (eff, throttled) = simulate_client(limit, burst, false, ra, n, rtt, &client);
        let share = f64::from(throttled) / n as f64;
        eprintln!(
            "ramp to {conc} over {ramp_ms} ms, rtt {rtt} ms, zero backoff {zero_backoff}; limit {limit}/s burst {burst} retry-after {ra}: {:.1}% of the limit, {:.2}% 429s",
            eff * 100.0,
            share * 100.0
        );
        // A server that says "Retry-After: 1" costs a second per throttle event.
        let floor = if ra { 0.8 } else { 0.9 };
        if eff < floor || share > 0.02 {
            failed.push((
                limit,
                burst,
                ra,
                rtt,
                conc,
                ramp_ms,
                zero_backoff,
                eff,
                share,
            ));
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}

/// Issue 11's 600-request case: a short run against a limit it is not told (40/s, a burst
/// of 5, 429 without `Retry-After`), whose 429s all come in the first 1.6 s while the
/// client went unpaced into a bucket of 5; a short run cannot earn them back. Before the
/// cautious start: 3.8–5.0% 429s with round trips of 2–10 ms (2.2% at 25 ms), 82–101% of
/// the limit; with it 1.3–1.5%, 99.2–99.5%. The goal is at most 2% 429s and at least 95%.
#[test]
fn a_short_run_starts_cautiously() {
    let mut failed = Vec::new();
    for (rtt, conc, ramp_ms, zero_backoff) in [
        (2, 16, 30, false),
        (2, 16, 30, true),
        (5, 16, 80, false),
        (10, 16, 160, false),
        (25, 16, 400, false),
        (2, 64, 100, false),
    ] {
        let client = Client {
            concurrency: conc,
            ramp: Duration::from_millis(ramp_ms),
            zero_backoff,
        };
        let n = 600;
        let (eff, throttled) = simulate_client(40.0, 5.0, false, false, n, rtt, &client);
        let share = f64::from(throttled) / n as f64;
        eprintln!(
            "600 requests, 40/s burst 5, rtt {rtt} ms, ramp to {conc} over {ramp_ms} ms, zero backoff {zero_backoff}: {:.1}% of the limit, {:.2}% 429s",
            eff * 100.0,
            share * 100.0
        );
        if eff < 0.95 || share > 0.02 {
            failed.push((rtt, conc, ramp_ms, zero_backoff, eff, share));
        }
    }
    assert!(failed.is_empty(), "{failed:?}");
}

/// target-roster's shape: 16 writes at once at most and 5 ms round trips (3,200 requests a
/// second unthrottled), against a vendor that has no limit except `limit(t)`, a token bucket
/// with a one-second burst while it is `Some`. A 429 is retried after a full-jitter backoff
/// (up to 1 s, then 2 s, ...), during which the write keeps its place among the 16. Returns
/// the accepted answers of each second, and the 429 count.
fn storm_run(secs: u64, limit: impl Fn(f64) -> Option<f64>) -> (Vec<u32>, u32) {
    storm_run_with(secs, limit, |_| 5)
}

/// [`storm_run`] with the round trip in milliseconds at each second given by `rtt` (a machine
/// starved of CPU answers slowly: 16 writes at 100 ms is 160 a second).
fn storm_run_with(
    secs: u64,
    limit: impl Fn(f64) -> Option<f64>,
    rtt: impl Fn(f64) -> u64,
) -> (Vec<u32>, u32) {
    let t0 = Instant::now();
    let mut rate = AdaptiveRate::new(None);
    let mut per_second = vec![0u32; secs as usize];
    let mut throttled = 0;
    let mut in_flight: VecDeque<(Instant, Instant, bool)> = VecDeque::new();
    // Writes backing off: (when to send again, retries so far).
    let mut backing_off: Vec<(Instant, u32)> = Vec::new();
    let mut ready_retries: VecDeque<u32> = VecDeque::new();
    let mut retries_of_sent: VecDeque<u32> = VecDeque::new();
    let mut jitter = 0u64;
    let (mut tokens, mut last_t, mut was_limited) = (0.0f64, 0.0f64, false);
    for ms in 0..secs * 1000 {
        let now = t0 + Duration::from_millis(ms);
        while let Some(i) = in_flight.iter().position(|a| a.0 <= now) {
            let Some((due, sent, limited)) = in_flight.remove(i) else {
                break;
            };
            let retries = retries_of_sent.remove(i).unwrap_or_default();
            rate.on_response(due, sent, limited);
            if limited {
                throttled += 1;
                jitter = jitter
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let ceiling = 1000u64 << retries.min(5);
                let back = (jitter >> 33) % ceiling;
                backing_off.push((now + Duration::from_millis(back), retries + 1));
            } else {
                per_second[(ms / 1000) as usize] += 1;
            }
        }
        backing_off.retain(|(at, r)| {
            if *at <= now {
                ready_retries.push_back(*r);
            }
            *at > now
        });
        while in_flight.len() + backing_off.len() < 16 {
            if rate.poll(now) != Slot::Go {
                break;
            }
            retries_of_sent.push_back(ready_retries.pop_front().unwrap_or(0));
            let t = ms as f64 / 1000.0;
            let limited = match limit(t) {
                None => {
                    was_limited = false;
                    false
                }
                Some(l) => {
                    if !was_limited {
                        (tokens, last_t, was_limited) = (l, t, true);
                    }
                    tokens = (tokens + (t - last_t) * l).min(l);
                    last_t = t;
                    if tokens >= 1.0 {
                        tokens -= 1.0;
                        false
                    } else {
                        true
                    }
                }
            };
            in_flight.push_back((now + Duration::from_millis(rtt(t)), now, limited));
        }
    }
    (per_second, throttled)
}

fn mean(xs: &[u32]) -> f64 {
    f64::from(xs.iter().sum::<u32>()) / xs.len() as f64
}

#[test]
fn the_rate_comes_back_within_seconds_after_a_429_storm() {
    // The soak's storms: 20 requests a second for 4 s, every 20 s. Before the recovery the
    // rate stayed at the storm's ~20/s and probed upwards at 0.3% a second (the soak fell
    // from thousands of records a second to about 100).
    let storm = |t: f64| (t % 20.0 >= 10.0 && t % 20.0 < 14.0).then_some(20.0);
    let (per_second, throttled) = storm_run(60, storm);
    eprintln!("accepted per second: {per_second:?}; {throttled} 429s");
    let before = mean(&per_second[5..10]);
    // The storm ends at 14 s; back to the rate before it by 24 s at the latest (a first
    // attempt during the storm fails, the next waits 4 s and doubles up in ~4 s), and again
    // after the second storm (30-34 s).
    for (from, to) in [(24, 30), (44, 50)] {
        let after = mean(&per_second[from..to]);
        assert!(
            after >= before * 0.8,
            "{from}-{to} s: {after:.0}/s after the storm, {before:.0}/s before it"
        );
    }
    let total: u32 = per_second.iter().sum();
    assert!(
        f64::from(throttled) < f64::from(total) * 0.01,
        "{throttled} 429s for {total} accepted"
    );
}

#[test]
fn a_limit_that_really_fell_is_found_and_kept() {
    // From 10 s on the vendor allows 50 requests a second for good: the recovery tries a few
    // times (after 2, 4, 8, 16 and 32 s of quiet), then gives up; the 429s it costs are few.
    let (per_second, throttled) = storm_run(140, |t| (t >= 10.0).then_some(50.0));
    eprintln!("accepted per second: {per_second:?}; {throttled} 429s");
    let late = mean(&per_second[80..140]);
    assert!(late >= 50.0 * 0.9, "{late:.1}/s of 50");
    let accepted_after: u32 = per_second[10..].iter().sum();
    assert!(
        f64::from(throttled) <= f64::from(accepted_after) * 0.03,
        "{throttled} 429s for {accepted_after} accepted after the limit fell"
    );
}

#[test]
fn a_told_limit_is_used_fully_without_429s() {
    for (limit, burst, ra) in [
        (50.0, 50.0, true),
        (50.0, 2.0, false),
        (10.0, 600.0, false),
        (10.0, 10.0, true),
    ] {
        let (eff, throttled) = simulate(limit, burst, true, ra, 5_000, 5, 16);
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

#[test]
fn a_storm_met_while_starved_aims_back_at_the_best_rate_of_the_last_minutes() {
    // An unpaced client accepted 500 answers a second for 20 s, then the machine was starved
    // and only 40 a second went out for 10 s; then a 429 storm. Before, the rate to return to
    // was the 40/s of the last 4 s, and a cut to the storm's rate (~20/s) was not deep enough
    // below it to arm a recovery: the rate stayed at the storm's once the machine was free. Now
    // the recovery aims at the 500/s of before the starvation.
    let mut r = unpaced();
    let t0 = Instant::now();
    let mut t = t0;
    let answer = |r: &mut AdaptiveRate, t: Instant, throttled: bool| {
        assert_eq!(r.poll(t), Slot::Go);
        r.on_response(t + Duration::from_millis(5), t, throttled);
    };
    while t < t0 + Duration::from_secs(20) {
        answer(&mut r, t, false);
        t += Duration::from_millis(2);
    }
    while t < t0 + Duration::from_secs(30) {
        answer(&mut r, t, false);
        t += Duration::from_millis(25);
    }
    // The storm: the vendor lets 20 a second through; the rest is 429.
    let mut n = 0u32;
    while r.rate().is_none_or(|r| r >= 50.0) && t < t0 + Duration::from_secs(40) {
        n += 1;
        if r.poll(t) == Slot::Go {
            r.on_response(t + Duration::from_millis(5), t, n % 2 == 0);
        }
        t += Duration::from_millis(25);
    }
    let rate = r.rate().unwrap_or(f64::INFINITY);
    assert!(rate < 50.0, "cut to {rate:.1}/s");
    let to = r.recovery.map(|rec| rec.to);
    assert!(
        to.is_some_and(|to| to > 400.0),
        "the recovery aims at {to:?}, not at the 500/s of before the starvation"
    );
}

#[test]
fn the_climb_after_a_storm_goes_past_the_remembered_rate_while_the_pacer_holds_back() {
    // A vendor limit of 100/s for 30 s (the client paces at it), a storm at 30-34 s, and no
    // limit after it. Before, the climb stopped at the remembered ~100/s and probed upwards at
    // 0.3% a second although the pacer held back a demand of thousands a second.
    let limit = |t: f64| match t {
        t if t < 30.0 => Some(100.0),
        t if t < 34.0 => Some(10.0),
        _ => None,
    };
    let (per_second, throttled) = storm_run(70, limit);
    eprintln!("accepted per second: {per_second:?}; {throttled} 429s");
    let paced = mean(&per_second[20..30]);
    assert!(paced <= 110.0, "{paced:.0}/s under a limit of 100/s");
    let after = mean(&per_second[50..70]);
    assert!(after >= 1000.0, "{after:.0}/s once the limit is gone");
}
