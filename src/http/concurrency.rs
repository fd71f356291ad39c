//! Adaptive concurrency (AIMD), after Vector's adaptive request concurrency (ARC).
//!
//! [`Aimd`] is the pure controller: once per observation window (one mean round trip long) the
//! limit grows by one if requests queued at the limit and round trips stayed at or below their
//! moving average, and shrinks to `floor(limit * 0.9)` (at least 1) if any answer in the window
//! was back-pressure (429, 408, timeout, dropped connection), if the window held a 5xx while the
//! smoothed share of 5xx answers is above [`ERROR_SHARE_CUT`], or if round trips blew past
//! `mean + 2.5 * deviation`. [`Concurrency`] enforces the limit with a semaphore whose size
//! follows the controller.
//!
//! Why 5xx answers are not back-pressure one by one: Vector's ARC counts every retryable answer,
//! which is right for a service that only fails when overloaded. A vendor that fails a steady few
//! per cent of requests for reasons of its own (the soak's 5%) then cuts nearly every window (at
//! 16 answers a window, 1 - 0.95^16 = 56% of them hold a 5xx), and the limit sits at its floor
//! although the vendor is not loaded at all. An overloaded service fails a rising share of
//! requests, so the share is the signal: smoothed over about [`ERROR_SHARE_SPAN`] answers (as
//! gRPC's and Envoy's outlier detection judge a host by its success rate over a window of
//! requests, not by single failures) and compared with a threshold well above the failure rate of
//! a healthy but flaky vendor. 429, 408, timeouts and dropped connections stay back-pressure on
//! their own: they say "too much" (or say nothing, and waiting costs less than piling on).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Starting limit; Vector's ARC starts at 1 and climbs one per round trip.
pub const INITIAL_CONCURRENCY: usize = 1;
/// Multiplicative decrease; Vector's `decrease_ratio` default.
pub const DECREASE_RATIO: f64 = 0.9;
/// Weight of a new window in the round-trip average; Vector's `ewma_alpha` default.
pub const EWMA_ALPHA: f64 = 0.4;
/// Round trips this many deviations above the mean count as congestion; Vector's
/// `rtt_deviation_scale` default.
pub const RTT_DEVIATION_SCALE: f64 = 2.5;
/// Shortest observation window, so sub-millisecond loopback round trips do not make the limit
/// jitter on timer noise.
pub const MIN_WINDOW: Duration = Duration::from_millis(5);
/// The smoothed 5xx share above which a window with a 5xx in it is back-pressure: four times a
/// steady 5% of failures (which then stays below it: the smoothed share's standard deviation at
/// 5% is about 0.03), and reached after about 7 answers when every answer fails and about 16 when
/// half do.
pub const ERROR_SHARE_CUT: f64 = 0.2;
/// The 5xx share is smoothed over about this many answers (an exponential moving average with a
/// weight of 1/span per answer).
pub const ERROR_SHARE_SPAN: f64 = 32.0;

/// What one answer says about the load on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer (success, or a failure that says nothing about load: a 4xx).
    Clean,
    /// A 5xx: back-pressure only while their share is high (see the module doc).
    ServerError,
    /// 429, 408, a timeout, a dropped connection: back-pressure.
    BackPressure,
}

/// The AIMD controller, clock injected.
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: usize,
    max: usize,
    /// Decreases stop here: enough slots for the paced rate at the current round trip.
    floor: usize,
    window_end: Option<Instant>,
    reached_limit: bool,
    back_pressure: bool,
    /// A 5xx came back in this window.
    server_error: bool,
    /// The smoothed share of 5xx among answers.
    error_share: f64,
    window_rtt_sum: f64,
    window_rtt_n: u32,
    mean: Option<f64>,
    deviation: f64,
}

impl Aimd {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            limit: INITIAL_CONCURRENCY.min(max),
            max,
            floor: 1,
            window_end: None,
            reached_limit: false,
            back_pressure: false,
            server_error: false,
            error_share: 0.0,
            window_rtt_sum: 0.0,
            window_rtt_n: 0,
            mean: None,
            deviation: 0.0,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The smoothed round trip of clean answers, once known.
    pub fn mean_rtt(&self) -> Option<Duration> {
        self.mean.map(Duration::from_secs_f64)
    }

    /// Keeps at least `floor` slots (at most the ceiling): when a pacer sends `rate` requests per
    /// second, `rate * rtt` of them are in flight at once, and fewer slots would turn timing noise
    /// on a busy machine into lost throughput.
    pub fn set_floor(&mut self, floor: usize) {
        self.floor = floor.clamp(1, self.max);
        self.limit = self.limit.max(self.floor);
    }

    /// A request started with `in_flight` requests (itself included) running.
    pub fn on_start(&mut self, in_flight: usize) {
        if in_flight >= self.limit {
            self.reached_limit = true;
        }
    }

    /// The smoothed share of 5xx answers.
    pub fn error_share(&self) -> f64 {
        self.error_share
    }

    /// One answer came back after `rtt`. Returns the new limit when it changed.
    pub fn on_response(&mut self, now: Instant, rtt: Duration, signal: Signal) -> Option<usize> {
        let failed = if signal == Signal::ServerError {
            1.0
        } else {
            0.0
        };
        self.error_share += (failed - self.error_share) / ERROR_SHARE_SPAN;
        match signal {
            Signal::BackPressure => self.back_pressure = true,
            Signal::ServerError => self.server_error = true,
            Signal::Clean => {
                self.window_rtt_sum += rtt.as_secs_f64();
                self.window_rtt_n += 1;
            }
        }
        let end = *self.window_end.get_or_insert(now + MIN_WINDOW);
        if now < end {
            return None;
        }
        let before = self.limit;
        let current =
            (self.window_rtt_n > 0).then(|| self.window_rtt_sum / f64::from(self.window_rtt_n));
        let overloaded = self.server_error && self.error_share > ERROR_SHARE_CUT;
        match (current, self.mean) {
            (_, _) if self.back_pressure || overloaded => {
                self.limit = ((self.limit as f64 * DECREASE_RATIO) as usize).max(self.floor);
            }
            (Some(cur), Some(mean)) => {
                if cur >= mean + RTT_DEVIATION_SCALE * self.deviation
                    && self.deviation > 0.0
                    && cur > mean * 1.5
                {
                    self.limit = ((self.limit as f64 * DECREASE_RATIO) as usize).max(self.floor);
                } else if self.reached_limit && cur <= mean * 1.05 && self.limit < self.max {
                    self.limit += 1;
                }
            }
            (Some(_), None) => {
                if self.reached_limit && self.limit < self.max {
                    self.limit += 1;
                }
            }
            (None, _) => {}
        }
        if let Some(cur) = current {
            match self.mean {
                None => self.mean = Some(cur),
                Some(mean) => {
                    let new_mean = mean + EWMA_ALPHA * (cur - mean);
                    self.deviation += EWMA_ALPHA * ((cur - mean).abs() - self.deviation);
                    self.mean = Some(new_mean);
                }
            }
        }
        let window = Duration::from_secs_f64(self.mean.unwrap_or(0.0)).max(MIN_WINDOW);
        self.window_end = Some(now + window);
        self.reached_limit = false;
        self.back_pressure = false;
        self.server_error = false;
        self.window_rtt_sum = 0.0;
        self.window_rtt_n = 0;
        (self.limit != before).then_some(self.limit)
    }
}

tokio::task_local! {
    /// The place in a [`WriteWindow`] that the current task's work holds.
    static PLACE: Arc<Place>;
}

/// A window of concurrent work (the target's writes inside the sink: at most `max_concurrency`
/// at once), whose places are given up while a retry sleeps in backoff.
///
/// A write that backs off after a 5xx sleeps for up to seconds with nothing on the wire. Holding
/// its place meanwhile left most of the window asleep under a steady 5% of failures (about 11 of
/// 16 places in the soak), so the wire ran far below what the vendor and the adaptive concurrency
/// allowed. The sleeping write gives its place to the next write; when it wakes it takes a place
/// back before new work does (from a reserve as large as the window when none is free), so a
/// retry never waits behind the queue of new writes, and at most twice the window's writes are
/// inside the sink at once. The HTTP client's own concurrency permit is freed before the sleep
/// as well (see `retry`), so the AIMD limiter counts only requests on the wire.
#[derive(Debug, Clone)]
pub struct WriteWindow {
    places: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

/// The place one piece of work holds (none while its retry sleeps).
#[derive(Debug)]
struct Place {
    window: WriteWindow,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl WriteWindow {
    /// A window of `size` places (at least one).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            places: Arc::new(Semaphore::new(size)),
            reserve: Arc::new(Semaphore::new(size)),
        }
    }

    /// Waits for a place, then runs `work` holding it; a retry inside `work` that sleeps through
    /// [`away_from_window`] gives the place up meanwhile.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        // The semaphores are never closed, so this only fails in theory; run without a place.
        let permit = self.places.clone().acquire_owned().await.ok();
        let place = Arc::new(Place {
            window: self.clone(),
            permit: Mutex::new(permit),
        });
        PLACE.scope(place, work).await
    }

    /// A place for work that gave its own up: a free one, else one of the reserve.
    async fn take_back(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.places.clone().try_acquire_owned() {
            return Some(p);
        }
        tokio::select! {
            biased;
            p = self.places.clone().acquire_owned() => p.ok(),
            p = self.reserve.clone().acquire_owned() => p.ok(),
        }
    }
}

/// Runs `sleep` (a backoff) without the place in the [`WriteWindow`] the current task holds, if
/// any, and takes a place back after it.
pub async fn away_from_window<F: Future>(sleep: F) -> F::Output {
    let place = PLACE.try_with(Arc::clone).ok();
    if let Some(p) = &place {
        let given = p
            .permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(given);
    }
    let out = sleep.await;
    if let Some(p) = place {
        let held = p
            .permit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !held {
            let permit = p.window.take_back().await;
            let mut slot = p.permit.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.is_none() {
                *slot = permit;
            }
        }
    }
    out
}

/// Retries go before first attempts through a FIFO wait (a concurrency slot, a pacer's turn),
/// and are served FIFO among themselves.
///
/// Why: behind a small bucket (Guru's 1 request/s with a burst of 1, answering 429 with
/// `Retry-After: 1`) each pause ends with one token and a queue of waiters. A request whose retry
/// re-entered the FIFO behind first attempts that queued while it was on the wire was the second
/// in line after pause upon pause, met 429 each time, and spent its whole budget while the
/// requests ahead of it went through (the tap's concurrent listings, 9 attempts in a row). A
/// retry has already waited its turn once; it now waits only for the retries ahead of it.
///
/// How: a retry queues on the wait directly. First attempts queue one at a time (a door in front
/// of the wait), and the one at the door hands what it got straight back (to the retry queued
/// behind it, the wait being FIFO) while any retry waits, then tries again once none does.
#[derive(Debug, Default)]
pub struct RetriesFirst {
    door: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
    none_waiting: Notify,
}

/// Counts a retry as waiting until it got what it waited for (or gave up).
struct Waiting<'a>(&'a RetriesFirst);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.0.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.none_waiting.notify_waiters();
        }
    }
}

impl RetriesFirst {
    /// True while a retry waits.
    pub fn retry_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    /// Runs `take` (a FIFO wait) for a retry (`retry`) or a first attempt.
    pub async fn take<T, F, Fut>(&self, retry: bool, mut take: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = T>,
    {
        if retry {
            self.waiting.fetch_add(1, Ordering::SeqCst);
            let _waiting = Waiting(self);
            return take().await;
        }
        let _door = self.door.lock().await;
        loop {
            // Registered before the check, so a retry leaving in between still wakes us.
            let gone = self.none_waiting.notified();
            if self.waiting.load(Ordering::SeqCst) == 0 {
                let got = take().await;
                if self.waiting.load(Ordering::SeqCst) == 0 {
                    return got;
                }
                // A retry queued behind us meanwhile: it goes first.
                drop(got);
            }
            gone.await;
        }
    }
}

#[derive(Debug)]
struct State {
    aimd: Aimd,
    in_flight: usize,
    /// Permits to swallow as they come back, after a decrease while they were out.
    debt: usize,
}

/// The enforced limit: a semaphore resized by the [`Aimd`] controller.
#[derive(Debug, Clone)]
pub struct Concurrency {
    sem: Arc<Semaphore>,
    state: Arc<Mutex<State>>,
    order: Arc<RetriesFirst>,
}

/// Held while a request is on the wire.
#[derive(Debug)]
pub struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    state: Arc<Mutex<State>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.in_flight = st.in_flight.saturating_sub(1);
        if let Some(p) = self.permit.take() {
            if st.debt > 0 {
                st.debt -= 1;
                p.forget();
            }
        }
    }
}

impl Concurrency {
    pub fn new(max: usize) -> Self {
        let aimd = Aimd::new(max);
        Self {
            sem: Arc::new(Semaphore::new(aimd.limit())),
            state: Arc::new(Mutex::new(State {
                aimd,
                in_flight: 0,
                debt: 0,
            })),
            order: Arc::new(RetriesFirst::default()),
        }
    }

    /// Waits for a slot under the current limit (a first attempt).
    pub async fn acquire(&self) -> Permit {
        self.acquire_for(false).await
    }

    /// Waits for a slot under the current limit; a retry (`retry`) goes before first attempts
    /// (see [`RetriesFirst`]).
    pub async fn acquire_for(&self, retry: bool) -> Permit {
        // The semaphore is never closed, so this only fails in theory; fall back to no permit.
        let permit = self
            .order
            .take(retry, || self.sem.clone().acquire_owned())
            .await
            .ok();
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.in_flight += 1;
        let n = st.in_flight;
        st.aimd.on_start(n);
        Permit {
            permit,
            state: self.state.clone(),
        }
    }

    /// Feeds one answer to the controller and resizes the semaphore if the limit moved.
    /// `paced_rate`: the client-wide pacer's rate, which sets the floor of the limit.
    pub fn on_response(&self, rtt: Duration, signal: Signal, paced_rate: Option<f64>) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let before = st.aimd.limit();
        let _ = st.aimd.on_response(Instant::now(), rtt, signal);
        if let Some(rate) = paced_rate {
            let rtt = st.aimd.mean_rtt().unwrap_or(rtt).as_secs_f64();
            let floor = (rate * rtt).ceil().min(1e6) as usize + 1;
            st.aimd.set_floor(floor);
        }
        let after = st.aimd.limit();
        if after != before {
            if after > before {
                let mut add = after - before;
                let paid = add.min(st.debt);
                st.debt -= paid;
                add -= paid;
                if add > 0 {
                    self.sem.add_permits(add);
                }
            } else {
                let remove = before - after;
                let removed = self.sem.forget_permits(remove);
                st.debt += remove - removed;
            }
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .aimd
            .limit()
    }
}

#[cfg(test)]
mod tests;
