//! Client-side rate limiting that also *discovers* an unknown limit from 429s.
//!
//! [`AdaptiveRate`] is a pure state machine (every method takes `now`), so its behaviour is tested
//! with a virtual clock against simulated token-bucket servers (see the tests at the bottom).
//!
//! - **Pacing** is GCRA (a smooth token bucket of depth one): one request every `1/rate`, with a
//!   slack of [`PACING_SLACK`] so late wake-ups do not drift the rate down.
//! - **Told the limit** (`requests_per_second`): pace at it. A 429 still lowers the rate (the
//!   account may be shared), and probing climbs back to the configured ceiling, never above.
//! - **Not told**: start cautiously: the first [`START_PROBE`] is paced from [`START_RATE`],
//!   doubling every [`START_DOUBLING`], so the whole initial concurrency does not hit a small
//!   burst at once (a 600-request run against 40/s with a burst of 5 lost 4–5% of its requests
//!   to 429s that way; a short run cannot earn them back). A 429 in it measures the limit over
//!   its last [`START_STEPS_MEASURED`] steps as a floor and slow-starts from there. Without a 429
//!   the client then sends unpaced until 429s come. The estimate rests on token conservation: a
//!   server's bucket is empty whenever it answers 429, so between two *throttle events* it accepted
//!   exactly what it refilled, and `accepted answers / time between events` is its rate (pauses
//!   for `Retry-After` included, since the bucket refills during them). That holds only if we
//!   kept the server saturated in between, so the estimate is the largest of that and the
//!   accepted rate over the last 1 s and 5 s ([`ESTIMATE_WINDOWS`]) and, after a slow-start
//!   raise, over the time at the raised rate, each counted only with enough answers. A throttle
//!   event is the first 429 for a request sent after the previous decision (one round trip of
//!   grace, so requests still in flight at the old rate do not count); the decision waits for
//!   [`EVENT_SAMPLES`] answers from that 429 on (or [`EVENT_MAX`]) so it rests on data.
//! - **Saturated or not**: the estimate is the server's rate only if the server was full, and
//!   only our pacer holding requests back since the last decision shows that. Otherwise (an
//!   unpaced client whose demand is still climbing, a paced one whose demand is below the rate)
//!   the 429s may come from a clump of simultaneous requests, and their instant retries, that
//!   overran a small burst, and what was accepted is our own demand: a floor under the limit.
//!   Taking it for the limit kept a client ramping up against a 50/s or 200/s server with a
//!   burst of 2 to 5 at 40–70% of it for good (see the ramp simulation below).
//! - **Deciding**: from a saturated event the new rate is the estimate times [`CUT_MARGIN`],
//!   never above the old one. From a floor, or with too few accepted answers to trust (a burst
//!   at start, a very slow limit), the engine *slow-starts* instead: from the floor (at least
//!   [`FIRST_RATE_FLOOR`]) it doubles every [`SLOW_START_INTERVAL`] while the rate is what holds
//!   requests back, until the next event measures properly. Between events the rate probes
//!   upward by [`PROBE_PER_SECOND`], a little faster the longer it stays quiet, so an estimate
//!   that came out low recovers.
//! - **After a storm**: a decision that cuts the rate below [`RECOVERY_ARM`] of what the server
//!   had been accepting steadily before the event (over [`RECOVERY_MEASURED`], as over the
//!   [`RECOVERY_MEASURED`] before that, at least [`RECOVERY_SUSTAINED`] after the previous
//!   decision), which is a 429 storm (the vendor
//!   throttled for a while, far below its usual limit), remembers that rate. Probing at +0.3% a
//!   second would take over 20 minutes to climb back from a fiftieth of it, so once the server
//!   has gone [`RECOVERY_QUIET`] without a throttle event the engine slow-starts (doubling every
//!   [`SLOW_START_INTERVAL`]) back to the remembered rate, or to no pacing at all if there was
//!   none before. A throttle event during that climb (the storm goes on, or the limit really
//!   fell) ends the attempt as any event does, and the next one waits twice as long; after the
//!   wait passes [`RECOVERY_QUIET_MAX`] the engine gives up and keeps probing. A cut to the
//!   measured rate at a steady limit (to 0.97 of it, or 0.8 across a pause) never arms this.
//! - **Which rate to return to**: the highest steady rate of the last [`REFERENCE_MEMORY`]
//!   (sampled every second as the smaller of two adjacent seconds' accepted rates, and at each
//!   decision as above), not the last one: a storm met while the machine was starved (or in a
//!   stretch too uneven to count as steady) would otherwise arm nothing, or remember the starved
//!   rate, and every later storm would remember the paced rate that followed (the
//!   1,000,000-record soak sat at 80–115 records/s that way, with target-roster at 3% CPU). And
//!   the climb does not stop at that rate while the pacer still holds requests back: slow start
//!   goes on doubling until a 429 measures the limit or our own demand is met, so a remembered
//!   rate that was too low costs a few seconds, not the rest of the run. Giving up (above)
//!   forgets the remembered rates: the limit really fell.
//!
//! Against a token bucket this settles into a shallow sawtooth at the true limit with one 429 per
//! cycle. The constants were tuned with a discrete-event simulation (N=5,000; 50/s and 600/min
//! buckets, bursts of 10 to 1,000, round trips of 2–200 ms, with and without `Retry-After`):
//! ≥98% of the limit and ≤1.5% 429s for the sandbox's shapes when not told, 100% and no 429 when
//! told; and for clients still ramping up when the first 429 comes (demand below the limit,
//! bursts of 2 to 50), ≥90% of the limit (≥80% when every event costs a 1 s `Retry-After`)
//! with ≤2% 429s. A server whose burst is much smaller than its `Retry-After` times its rate
//! loses tokens during our pause, so an estimate that counts the pause comes out far too low
//! (200/s with a burst of 5 measured ~30/s, and probing took minutes to climb back); one that
//! ends at the pause and leaves it out is an upper bound. When the first is below
//! [`PAUSE_DOUBT`] of the second the cut is a moderate one ([`ACROSS_PAUSE_CUT`]). Every such
//! event still costs its pause: configure the documented rate for such vendors.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Not told the limit, the first [`START_PROBE`] is paced: from this rate, doubling every
/// [`START_DOUBLING`], so a small burst is not overrun by the whole initial concurrency at once.
pub const START_RATE: f64 = 10.0;
/// How often the cautious start doubles its rate.
pub const START_DOUBLING: Duration = Duration::from_millis(100);
/// A 429 during the cautious start measures the limit over this many of its last steps (the
/// older ones ran far below any limit that answers 429 at the current one); slow start climbs
/// from there.
pub const START_STEPS_MEASURED: u32 = 4;
/// How long the cautious start lasts; without a 429 by then the client goes unpaced (the rate is
/// 5,120/s by then, more than anything in roster's world).
pub const START_PROBE: Duration = Duration::from_secs(1);

/// Most accepted-answer times kept for [`ESTIMATE_WINDOWS`] (5 s at 40,000 answers/s).
const RECENT_CAP: usize = 200_000;

/// The first slow-start rate never starts below this (a 429 on the very first requests says
/// nothing about the limit; slow start climbs from here).
pub const FIRST_RATE_FLOOR: f64 = 1.0;
/// Slow start doubles the rate this often while the rate is what holds requests back.
pub const SLOW_START_INTERVAL: Duration = Duration::from_millis(500);
/// Accepted answers (or 429s) a throttle event waits for before deciding; also the accepted
/// count below which an estimate is not trusted.
pub const EVENT_SAMPLES: u32 = 5;
/// Recent windows whose accepted rate also estimates the limit (see the module doc).
pub const ESTIMATE_WINDOWS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(5)];
/// A throttle event decides after this long even with fewer samples (slow limits).
pub const EVENT_MAX: Duration = Duration::from_secs(2);
/// A decision installs this share of the measured rate, so the server's bucket refills a little.
pub const CUT_MARGIN: f64 = 0.97;
/// Upward probe between events: +0.3% per second (the simulation's best 429s/throughput balance).
pub const PROBE_PER_SECOND: f64 = 0.003;
/// The probe speeds up by one more `PROBE_PER_SECOND` for every this long without a 429.
pub const PROBE_SPEEDUP_AFTER: Duration = Duration::from_secs(30);
/// How often the probe (and slow start) adjusts the rate.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// The rate never drops below this (one request every 20 s).
pub const MIN_RATE: f64 = 0.05;
/// Rates above this are treated as "no limit" (nothing in roster's world goes faster).
pub const MAX_RATE: f64 = 1_000_000.0;
/// Largest burst credit the pacer lets build up under a told rate, so timer lateness does not
/// lower it, at fast rates too (one interval of slack lost 2% of a told 50/s on a busy 2-core
/// machine, where wake-ups came 30–60 ms late; BENCHMARKS.md). A discovered rate keeps one
/// interval at most.
pub const PACING_SLACK: Duration = Duration::from_millis(100);
/// Across a `Retry-After` pause, an estimate that counts the pause below this share of one that
/// does not is doubted (see [`ACROSS_PAUSE_CUT`]).
pub const PAUSE_DOUBT: f64 = 0.5;
/// A doubted cut across a pause lowers the rate to this share of the rate in force (or to the
/// estimate without the pause, less [`CUT_MARGIN`], if lower); probing goes on from there.
pub const ACROSS_PAUSE_CUT: f64 = 0.8;
/// A decision that cuts the rate below this share of the rate the server had been accepting
/// before the event arms the recovery (see the module doc).
pub const RECOVERY_ARM: f64 = 0.5;
/// The accepted rate before an event counts for the recovery only when the previous decision (or
/// the first request) was at least this long before it (a burst drained at the start is not a
/// rate).
pub const RECOVERY_SUSTAINED: Duration = Duration::from_secs(5);
/// The rate before a storm is what the server accepted over this long before its first 429.
pub const RECOVERY_MEASURED: Duration = Duration::from_secs(2);
/// The two windows of [`RECOVERY_MEASURED`] before a storm must agree within this factor.
pub const RECOVERY_STEADY: f64 = 1.5;
/// The first recovery attempt starts after this long without a throttle event.
pub const RECOVERY_QUIET: Duration = Duration::from_secs(4);
/// Each failed attempt doubles the wait before the next; past this the engine gives up.
pub const RECOVERY_QUIET_MAX: Duration = Duration::from_secs(8);
/// The rate to return to after a storm is the highest steady rate of this long before it (a
/// storm met while the machine was starved must not make the starved rate the one to return to).
pub const REFERENCE_MEMORY: Duration = Duration::from_secs(180);
/// The steady rate is sampled over whole seconds: the smaller of two adjacent seconds' accepted
/// rates, neither of them holding a decision (a burst drained in one second is not a rate).
pub const STEADY_SAMPLE: Duration = Duration::from_secs(1);
/// Weight of a new sample in the smoothed round-trip time.
const SRTT_WEIGHT: f64 = 0.2;

/// The rate to climb back to after a storm.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Recovery {
    /// What the server accepted before the storm.
    to: f64,
    /// There was no pacing before the storm: return to none.
    unlimited: bool,
    /// How long without a throttle event before the next attempt.
    quiet: Duration,
    /// An attempt (a slow start towards `to`) is under way.
    climbing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Unknown limit, first [`START_PROBE`]: paced, doubling every [`START_DOUBLING`].
    Start,
    /// No rate yet (unknown limit, no 429 so far).
    Unlimited,
    /// Doubling until the next throttle event.
    SlowStart,
    /// Measured rate, slow upward probe.
    Probe,
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
    /// When the last decision was taken (or the first request went out).
    last_event: Option<Instant>,
    /// Accepted answers since `last_event`.
    accepted: u32,
    /// A throttle event is waiting for enough samples to decide.
    pending: bool,
    /// 429s counted towards the pending event.
    throttled: u32,
    /// Only 429s for requests sent at or after this start an event.
    measure_from: Option<Instant>,
    pause_end: Option<Instant>,
    /// Recent `Retry-After` pauses (start, end), kept as long as [`ESTIMATE_WINDOWS`].
    pauses: VecDeque<(Instant, Instant)>,
    /// When the last answer came (where a pause announced next starts).
    last_answer: Option<Instant>,
    last_adjust: Option<Instant>,
    /// A request had to wait for the pacer since the last adjustment.
    bound: bool,
    /// A request had to wait for the pacer since the last decision: the rate, not our own
    /// demand, was what the server saw.
    held: bool,
    /// Accepted answers since the pending throttle event's first 429.
    sampled: u32,
    /// When the pending throttle event's first 429 came.
    pending_since: Option<Instant>,
    /// When slow start last raised the rate (the window its next decision also measures).
    raised_at: Option<Instant>,
    srtt: Option<Duration>,
    /// When recent accepted answers came back, for the windowed estimates.
    recent: VecDeque<Instant>,
    cuts: u64,
    /// The first poll (the cautious start's clock).
    started: Option<Instant>,
    /// Armed after a storm's deep cut.
    recovery: Option<Recovery>,
    /// The highest sustained rate measured in the last [`REFERENCE_MEMORY`]: (rate, unpaced
    /// then, when).
    reference: Option<(f64, bool, Instant)>,
    /// The second being counted for the steady rate: (start, accepted answers in it).
    second: Option<(Instant, u32)>,
    /// The last whole second's accepted rate: (its start, rate).
    last_second: Option<(Instant, f64)>,
    /// When the storm that armed the recovery was met (for the log line when it ends).
    storm_at: Option<Instant>,
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
                Phase::Start
            },
            tat: None,
            last_event: None,
            accepted: 0,
            pending: false,
            throttled: 0,
            measure_from: None,
            pause_end: None,
            pauses: VecDeque::new(),
            last_answer: None,
            last_adjust: None,
            bound: false,
            held: false,
            sampled: 0,
            pending_since: None,
            raised_at: None,
            srtt: None,
            recent: VecDeque::new(),
            cuts: 0,
            started: None,
            recovery: None,
            reference: None,
            second: None,
            last_second: None,
            storm_at: None,
        }
    }

    /// The rate in force (requests per second), `None` while unlimited and during the cautious
    /// start (a probe, not a rate: it must not set the concurrency's floor).
    pub fn rate(&self) -> Option<f64> {
        if self.phase == Phase::Start {
            return None;
        }
        self.rate
    }

    /// Skips the cautious start: unpaced from the first request until a 429 (tests with zero
    /// delays, whose first requests must not wait).
    pub fn without_cautious_start(mut self) -> Self {
        if self.phase == Phase::Start {
            self.phase = Phase::Unlimited;
        }
        self
    }

    /// How many times the rate was lowered after 429s.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// Takes a slot if the pacing allows one at `now`.
    pub fn poll(&mut self, now: Instant) -> Slot {
        self.last_event.get_or_insert(now);
        self.last_adjust.get_or_insert(now);
        self.measure_from.get_or_insert(now);
        let started = *self.started.get_or_insert(now);
        if self.phase == Phase::Start {
            let elapsed = now.saturating_duration_since(started);
            if elapsed >= START_PROBE {
                // No 429 in the whole start: our demand, not the pacer, was what held requests
                // back, and the next event measures from here.
                self.phase = Phase::Unlimited;
                self.rate = None;
                self.held = false;
                self.bound = false;
            } else {
                let steps = elapsed.as_nanos() / START_DOUBLING.as_nanos().max(1);
                let steps = u32::try_from(steps).unwrap_or(u32::MAX);
                self.rate = Some(START_RATE * 2f64.powi(i32::try_from(steps).unwrap_or(i32::MAX)));
                let back = (steps + 1).saturating_sub(START_STEPS_MEASURED);
                self.raised_at = Some(started + START_DOUBLING * back);
            }
        }
        let Some(rate) = self.rate else {
            return Slot::Go;
        };
        let interval = Duration::from_secs_f64(1.0 / rate);
        let tat = self.tat.unwrap_or(now);
        if now < tat {
            self.bound = true;
            self.held = true;
            return Slot::WaitUntil(tat);
        }
        // Lateness up to the slack (a timer or a task that woke late on a busy machine) is not
        // lost, so the rate does not drift down: the requests it held back go at once. Longer
        // idleness banks no more than the slack's worth of requests. A discovered rate keeps
        // one interval of slack: its estimate already sits at the server's limit, and catch-up
        // bursts there cost 429s (the simulations below).
        let slack = if self.ceiling.is_some() {
            PACING_SLACK
        } else {
            interval.min(PACING_SLACK)
        };
        // A `Retry-After` pause is not lateness: the server's bucket refilled during it and the
        // first request after it takes what it holds, so the next one waits a whole interval
        // from the pause's end. With slack, the second request after every pause went early and
        // met 429 behind a bucket with a burst of 1 (Guru's 1/s), pause after pause.
        let mut earliest = now.checked_sub(slack).unwrap_or(now);
        if let Some(p) = self.pause_end.filter(|p| *p <= now) {
            earliest = earliest.max(p);
        }
        let base = tat.max(earliest);
        self.tat = Some(base + interval);
        Slot::Go
    }

    /// The whole client pauses until `until` (a `Retry-After`): the pause counts in the
    /// estimate's interval, and 429s for requests sent before it end cannot start a new event.
    pub fn on_pause(&mut self, until: Instant) {
        if self.pause_end.is_none_or(|p| p < until) {
            self.pause_end = Some(until);
            let start = self.last_answer.unwrap_or(until).min(until);
            match self.pauses.back_mut() {
                // Overlapping pauses merge.
                Some(last) if last.1 >= start => last.1 = last.1.max(until),
                _ => self.pauses.push_back((start, until)),
            }
        }
    }

    /// Feeds back one answer: `throttled` is a 429, `sent_at` when its request went out.
    pub fn on_response(&mut self, now: Instant, sent_at: Instant, throttled: bool) {
        self.last_answer = Some(self.last_answer.map_or(now, |l| l.max(now)));
        let rtt = now.saturating_duration_since(sent_at);
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => s.mul_f64(1.0 - SRTT_WEIGHT) + rtt.mul_f64(SRTT_WEIGHT),
        });
        let last_event = *self.last_event.get_or_insert(sent_at);
        if throttled {
            if self.measure_from.is_none_or(|m| sent_at >= m) {
                if !self.pending {
                    self.pending = true;
                    self.pending_since = Some(now);
                }
                self.throttled += 1;
            }
        } else {
            self.accepted = self.accepted.saturating_add(1);
            if self.pending {
                self.sampled = self.sampled.saturating_add(1);
            }
            self.remember_accepted(now);
            self.count_second(now);
        }
        if self.pending {
            let since = self
                .pending_since
                .map_or(Duration::ZERO, |p| now.saturating_duration_since(p));
            if self.sampled + self.throttled >= EVENT_SAMPLES || since >= EVENT_MAX {
                self.decide(now, last_event);
            }
            return;
        }
        if throttled {
            return;
        }
        if let Some(rec) = self.recovery.as_mut() {
            if !rec.climbing && now.saturating_duration_since(last_event) >= rec.quiet {
                // Quiet long enough: climb back towards the rate before the storm.
                rec.climbing = true;
                self.phase = Phase::SlowStart;
                self.last_adjust = Some(now);
                return;
            }
        }
        self.climb(now, last_event);
    }

    /// No 429 and no decision pending: raise the rate as the phase says (slow start doubles it,
    /// a probe grows it a little each second).
    fn climb(&mut self, now: Instant, last_event: Instant) {
        let last_adjust = *self.last_adjust.get_or_insert(now);
        let since = now.saturating_duration_since(last_adjust);
        match self.phase {
            Phase::SlowStart if since >= SLOW_START_INTERVAL => {
                let climbing = self.recovery.filter(|r| r.climbing);
                if self.bound {
                    self.set_rate(self.rate.map(|r| r * 2.0));
                    self.raised_at = Some(now);
                    tracing::debug!(rate = ?self.rate, "pacing: slow start doubles the rate");
                }
                if let Some(rec) = climbing {
                    // The rate no longer holds requests back: the storm is over. Back at the
                    // rate before it with no pacing then: none again. Back at a paced rate
                    // before it while the pacer still holds requests back: the storm is over
                    // too, but that rate may have been measured while the machine was starved
                    // (or the vendor has since raised its limit), so slow start goes on past it
                    // until a 429 measures the limit or our own demand is met.
                    let reached = self.rate.is_none_or(|r| r >= rec.to);
                    if !self.bound || (reached && rec.unlimited) {
                        self.recovered(now, rec);
                    } else if reached {
                        self.recovery = None;
                        self.log_restored(now);
                    }
                }
                self.bound = false;
                self.last_adjust = Some(now);
            }
            Phase::Probe if since >= PROBE_INTERVAL => {
                let quiet = now.saturating_duration_since(last_event).as_secs_f64();
                let speed = PROBE_PER_SECOND * (1.0 + quiet / PROBE_SPEEDUP_AFTER.as_secs_f64());
                let factor = (1.0 + speed).powf(since.as_secs_f64());
                self.set_rate(self.rate.map(|r| r * factor));
                self.last_adjust = Some(now);
            }
            _ => {}
        }
    }

    /// The climb after a storm reached the rate before it.
    fn recovered(&mut self, now: Instant, rec: Recovery) {
        self.recovery = None;
        self.raised_at = None;
        self.held = false;
        self.accepted = 0;
        self.last_event = Some(now);
        if rec.unlimited {
            self.phase = Phase::Unlimited;
            self.rate = None;
            self.tat = None;
        } else {
            self.phase = Phase::Probe;
            self.set_rate(Some(rec.to.max(self.rate.unwrap_or(0.0))));
        }
        self.log_restored(now);
    }

    /// The one-line note that a storm's cut is over.
    fn log_restored(&mut self, now: Instant) {
        let after = self
            .storm_at
            .take()
            .map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64());
        match self.rate {
            Some(r) => tracing::info!(
                "pacing: the rate is back to {r:.1} requests/s, {after:.0} s after a 429 storm cut it"
            ),
            None => tracing::info!(
                "pacing: no pacing again, {after:.0} s after a 429 storm cut the rate"
            ),
        }
    }

    /// Counts one accepted answer into the current whole second; when a second ends, the
    /// smaller of its rate and the previous second's (when adjacent, and no decision fell in
    /// either) is a steady rate, and the highest of the last [`REFERENCE_MEMORY`] is kept.
    fn count_second(&mut self, now: Instant) {
        let (start, n) = *self.second.get_or_insert((now, 0));
        if now < start + STEADY_SAMPLE {
            self.second = Some((start, n.saturating_add(1)));
            return;
        }
        let end = start + STEADY_SAMPLE;
        let time = self.unpaused(start, end);
        let rate = (time >= STEADY_SAMPLE / 2).then(|| f64::from(n) / time.as_secs_f64());
        let clean = self.last_event.is_none_or(|e| e <= start)
            && self
                .started
                .is_some_and(|s| start.saturating_duration_since(s) >= RECOVERY_SUSTAINED);
        if let (Some(rate), Some((prev_start, prev))) = (rate, self.last_second) {
            if clean
                && prev_start + STEADY_SAMPLE == start
                && self.last_event.is_none_or(|e| e <= prev_start)
            {
                let steady = rate.min(prev);
                if steady * STEADY_SAMPLE.as_secs_f64() >= f64::from(EVENT_SAMPLES) {
                    let unpaced = self.phase == Phase::Unlimited && self.ceiling.is_none();
                    self.remember_reference(steady, unpaced, end);
                }
            }
        }
        self.last_second = rate.map(|r| (start, r));
        // The next second starts where this answer falls (whole seconds after `start`).
        let skipped = now.saturating_duration_since(start).as_nanos() / STEADY_SAMPLE.as_nanos();
        let skipped = u32::try_from(skipped).unwrap_or(u32::MAX);
        let next = start + STEADY_SAMPLE.saturating_mul(skipped);
        if next != end {
            self.last_second = None;
        }
        self.second = Some((next, 1));
    }

    /// Keeps the highest sustained rate of the last [`REFERENCE_MEMORY`].
    fn remember_reference(&mut self, rate: f64, unpaced: bool, at: Instant) {
        let keep_old = self.reference.is_some_and(|(old, _, when)| {
            old >= rate && at.saturating_duration_since(when) <= REFERENCE_MEMORY
        });
        if !keep_old {
            self.reference = Some((rate, unpaced, at));
        }
    }

    /// What the server accepted over the last [`RECOVERY_MEASURED`] before `until`, if that was a
    /// steady rate: the last decision (or the first request) at least [`RECOVERY_SUSTAINED`]
    /// before, and the [`RECOVERY_MEASURED`] before it within [`RECOVERY_STEADY`] of it (a large
    /// burst draining at a falling rate is not a rate to return to).
    fn sustained_rate(&self, now: Instant, last_event: Instant, until: Instant) -> Option<f64> {
        if until.checked_sub(RECOVERY_SUSTAINED)? < last_event {
            return None;
        }
        // Accepted answers are kept for the longest estimate window only.
        let kept = ESTIMATE_WINDOWS.iter().max().copied().unwrap_or_default();
        let horizon = now.checked_sub(kept)?;
        let mid = until.checked_sub(RECOVERY_MEASURED)?;
        let from = mid.checked_sub(RECOVERY_MEASURED)?.max(horizon);
        if mid.saturating_duration_since(from) < RECOVERY_MEASURED / 4 || mid < horizon {
            return None;
        }
        let rate_in = |a: Instant, b: Instant| {
            let n = self.recent.iter().filter(|t| **t >= a && **t < b).count();
            let time = self.unpaused(a, b).as_secs_f64();
            (n >= EVENT_SAMPLES as usize && time > 0.0).then(|| n as f64 / time)
        };
        let (earlier, last) = (rate_in(from, mid)?, rate_in(mid, until)?);
        (earlier.max(last) <= earlier.min(last) * RECOVERY_STEADY).then_some(last)
    }

    fn remember_accepted(&mut self, now: Instant) {
        let longest = ESTIMATE_WINDOWS
            .iter()
            .max()
            .copied()
            .unwrap_or(Duration::ZERO);
        if let Some(horizon) = now.checked_sub(longest) {
            while self.recent.front().is_some_and(|t| *t < horizon) {
                self.recent.pop_front();
            }
            while self.pauses.front().is_some_and(|p| p.1 < horizon) {
                self.pauses.pop_front();
            }
        }
        if self.recent.len() >= RECENT_CAP {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
    }

    /// The limit as measured since the last decision. `pause_share`: how much of the time
    /// paused for a `Retry-After` counts (1: all of it, as a bucket whose burst covers the pause
    /// refills it all; 0: none, as a bucket with a small burst refills almost nothing). `trim`:
    /// the measurement ends where a pause that began since the last decision began (the answers
    /// after it drain the refill, not the rate).
    fn measure(&self, now: Instant, last_event: Instant, pause_share: f64, trim: bool) -> f64 {
        let end = if trim {
            self.pauses
                .iter()
                .map(|p| p.0)
                .find(|start| *start > last_event && *start <= now)
                .unwrap_or(now)
        } else {
            now
        };
        let credited = |from: Instant| {
            let free = self.unpaused(from, end);
            let paused = end.saturating_duration_since(from).saturating_sub(free);
            free + paused.mul_f64(pause_share)
        };
        let after_end = self.recent.iter().rev().take_while(|t| **t > end).count();
        let accepted = u64::from(self.accepted).saturating_sub(after_end as u64);
        let since_event = end.saturating_duration_since(last_event);
        let mut measured = accepted as f64 / credited(last_event).as_secs_f64().max(1e-3);
        let mut windows: Vec<Duration> = ESTIMATE_WINDOWS
            .iter()
            .map(|w| (*w).min(since_event))
            .collect();
        // After a slow-start raise, the time at the raised rate is what overloaded the server.
        if let Some(raised) = self.raised_at.filter(|r| *r > last_event && *r < end) {
            windows.push(end.saturating_duration_since(raised));
        }
        for w in windows {
            let Some(from) = end.checked_sub(w) else {
                continue;
            };
            let n = self
                .recent
                .iter()
                .rev()
                .skip(after_end)
                .take_while(|t| **t >= from)
                .count();
            let time = credited(from);
            if n >= EVENT_SAMPLES as usize && !time.is_zero() {
                measured = measured.max(n as f64 / time.as_secs_f64().max(1e-3));
            }
        }
        measured
    }

    fn decide(&mut self, now: Instant, last_event: Instant) {
        // What the server accepted before this storm began: measured now if the last decision
        // was long enough ago, else as measured at the storm's first decision (a storm often
        // takes two: the first cuts to the rate before it, the next to what it lets through).
        if self.phase != Phase::Start {
            let until = self.pending_since.unwrap_or(now);
            if let Some(r) = self.sustained_rate(now, last_event, until) {
                let unpaced = self.phase == Phase::Unlimited && self.ceiling.is_none();
                self.remember_reference(r, unpaced, now);
            }
        }
        self.reference = self
            .reference
            .filter(|r| now.saturating_duration_since(r.2) <= REFERENCE_MEMORY);
        let measured = self.measure(now, last_event, 1.0, false);
        // Across a `Retry-After` pause the estimate above is right for a bucket whose burst
        // covers the pause, and far too low for one with a small burst (200/s with a burst of 5
        // and `Retry-After: 1` measured ~30/s, and probing took minutes to climb back). Ending
        // at the pause and leaving it out gives an upper bound instead. Far apart, the truth is
        // unknown: a moderate cut, then probing as usual.
        let unpaused = self.measure(now, last_event, 0.0, true);
        let across_pause = measured < unpaused * PAUSE_DOUBT;
        // Token conservation holds only if the server was saturated since the last decision, and
        // only our pacer holding requests back shows that. Otherwise the 429s may have come from
        // a clump of simultaneous requests (and their instant retries) overrunning a small burst,
        // and what was accepted is our own demand: a floor under the limit, not the limit.
        let saturated = self.held;
        let current = self.rate.unwrap_or(f64::INFINITY);
        let mut new = current.min(measured * CUT_MARGIN);
        if self.phase == Phase::Start {
            // The cautious start overran the limit at its current step. What its last steps
            // got accepted is a floor (our demand may have been below the step): climb from it.
            self.phase = Phase::SlowStart;
            new = measured.max(FIRST_RATE_FLOOR);
        } else if self.accepted >= EVENT_SAMPLES && saturated && across_pause {
            self.phase = Phase::Probe;
            new = (unpaused * CUT_MARGIN).min(current * ACROSS_PAUSE_CUT);
        } else if self.accepted >= EVENT_SAMPLES && saturated {
            self.phase = Phase::Probe;
        } else {
            // Too little data to trust, or only a floor: climb from here quickly instead.
            self.phase = Phase::SlowStart;
            new = new.max(current.min(measured.max(FIRST_RATE_FLOOR)));
        }
        tracing::debug!(
            from = ?self.rate,
            to = new,
            measured,
            saturated,
            phase = ?self.phase,
            "pacing: a 429 decided the rate"
        );
        self.set_rate(Some(new));
        self.arm_recovery(now, new);
        self.start_measuring_after_cut(now);
    }

    /// After a cut to `new`: a recovery attempt that met the storm waits longer next time (or
    /// gives up); a cut far below what the server accepted steadily before arms one.
    fn arm_recovery(&mut self, now: Instant, new: f64) {
        match self.recovery.as_mut() {
            Some(rec) if rec.climbing => {
                // The attempt met the storm (or a limit that really fell): wait longer next time.
                rec.climbing = false;
                rec.quiet = rec.quiet.saturating_mul(2);
                if rec.quiet > RECOVERY_QUIET_MAX {
                    // The limit really fell: the rates before it are not ones to return to.
                    self.recovery = None;
                    self.reference = None;
                    self.last_second = None;
                    self.storm_at = None;
                    tracing::info!(
                        "pacing: the rate stays at {new:.1} requests/s: 429s ended every climb back after the storm"
                    );
                }
            }
            Some(_) => {}
            None => {
                if let Some((to, unlimited, _)) =
                    self.reference.filter(|r| new < r.0 * RECOVERY_ARM)
                {
                    self.recovery = Some(Recovery {
                        to,
                        unlimited,
                        quiet: RECOVERY_QUIET,
                        climbing: false,
                    });
                    self.storm_at = Some(now);
                    tracing::info!(
                        "pacing: a 429 storm cut the rate to {new:.1} requests/s (the vendor had accepted {to:.1}/s); climbing back once it is quiet"
                    );
                }
            }
        }
    }

    /// Forgets the samples of the cut's window; the next window starts a round trip after
    /// `now`, or when a `Retry-After` pause ends if that is later.
    fn start_measuring_after_cut(&mut self, now: Instant) {
        self.cuts += 1;
        self.accepted = 0;
        self.throttled = 0;
        self.sampled = 0;
        self.pending_since = None;
        self.pending = false;
        self.held = false;
        self.raised_at = None;
        self.last_event = Some(now);
        self.last_adjust = Some(now);
        self.bound = false;
        let grace = now + self.srtt.unwrap_or(Duration::ZERO);
        self.measure_from = Some(match self.pause_end {
            Some(p) if p > grace => p,
            _ => grace,
        });
    }

    /// The part of `from..to` the client was not paused for a `Retry-After`.
    fn unpaused(&self, from: Instant, to: Instant) -> Duration {
        let paused: Duration = self
            .pauses
            .iter()
            .map(|(s, e)| (*e).min(to).saturating_duration_since((*s).max(from)))
            .sum();
        to.saturating_duration_since(from).saturating_sub(paused)
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
}

#[cfg(test)]
mod tests;
