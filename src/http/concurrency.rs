//! Adaptive concurrency (AIMD), after Vector's adaptive request concurrency (ARC).
//!
//! [`Aimd`] is the pure controller: once per observation window (one mean round trip long) the
//! limit grows by one if requests queued at the limit and round trips stayed at or below their
//! moving average, and shrinks to `floor(limit * 0.9)` (at least 1) if any answer in the window
//! was back-pressure (429, 408, 5xx, timeout, dropped connection) or round trips blew past
//! `mean + 2.5 * deviation`. [`Concurrency`] enforces the limit with a semaphore whose size
//! follows the controller.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

    /// One answer came back after `rtt`. Returns the new limit when it changed.
    pub fn on_response(
        &mut self,
        now: Instant,
        rtt: Duration,
        back_pressure: bool,
    ) -> Option<usize> {
        if back_pressure {
            self.back_pressure = true;
        } else {
            self.window_rtt_sum += rtt.as_secs_f64();
            self.window_rtt_n += 1;
        }
        let end = *self.window_end.get_or_insert(now + MIN_WINDOW);
        if now < end {
            return None;
        }
        let before = self.limit;
        let current =
            (self.window_rtt_n > 0).then(|| self.window_rtt_sum / f64::from(self.window_rtt_n));
        match (current, self.mean) {
            (_, _) if self.back_pressure => {
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
        self.window_rtt_sum = 0.0;
        self.window_rtt_n = 0;
        (self.limit != before).then_some(self.limit)
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
        }
    }

    /// Waits for a slot under the current limit.
    pub async fn acquire(&self) -> Permit {
        // The semaphore is never closed, so this only fails in theory; fall back to no permit.
        let permit = self.sem.clone().acquire_owned().await.ok();
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
    pub fn on_response(&self, rtt: Duration, back_pressure: bool, paced_rate: Option<f64>) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let before = st.aimd.limit();
        let _ = st.aimd.on_response(Instant::now(), rtt, back_pressure);
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
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grows_while_fast_and_clean_at_the_limit() {
        let mut a = Aimd::new(10);
        let mut now = Instant::now();
        assert_eq!(a.limit(), 1);
        for _ in 0..200 {
            a.on_start(a.limit());
            now += ms(20);
            a.on_response(now, ms(20), false);
        }
        assert_eq!(a.limit(), 10, "grows to the ceiling and stops there");
    }

    #[test]
    fn does_not_grow_when_the_limit_is_not_reached() {
        let mut a = Aimd::new(10);
        let mut now = Instant::now();
        for _ in 0..200 {
            a.on_start(0);
            now += ms(20);
            a.on_response(now, ms(20), false);
        }
        assert_eq!(a.limit(), 1);
    }

    #[test]
    fn shrinks_on_back_pressure_to_a_floor_of_one() {
        let mut a = Aimd::new(50);
        let mut now = Instant::now();
        for _ in 0..500 {
            a.on_start(a.limit());
            now += ms(20);
            a.on_response(now, ms(20), false);
        }
        assert_eq!(a.limit(), 50);
        now += ms(20);
        a.on_response(now, ms(20), true);
        assert_eq!(a.limit(), 45, "50 * 0.9");
        now += ms(1);
        a.on_response(now, ms(20), true);
        assert_eq!(a.limit(), 45, "one decrease per window");
        for _ in 0..200 {
            now += ms(25);
            a.on_response(now, ms(20), true);
        }
        assert_eq!(a.limit(), 1);
    }

    #[test]
    fn shrinks_when_round_trips_blow_up() {
        let mut a = Aimd::new(20);
        let mut now = Instant::now();
        for i in 0..300u64 {
            a.on_start(a.limit());
            now += ms(20);
            // A little natural noise.
            a.on_response(now, ms(18 + i % 5), false);
        }
        let before = a.limit();
        now += ms(25);
        a.on_response(now, ms(400), false);
        assert!(a.limit() < before, "{} -> {}", before, a.limit());
    }

    #[test]
    fn a_paced_rate_sets_a_floor() {
        let mut a = Aimd::new(16);
        let mut now = Instant::now();
        a.set_floor(4);
        assert_eq!(a.limit(), 4);
        for _ in 0..50 {
            now += ms(25);
            a.on_response(now, ms(20), true);
        }
        assert_eq!(a.limit(), 4, "back-pressure stops at the floor");
        a.set_floor(100);
        assert_eq!(a.limit(), 16, "never above the ceiling");
    }

    #[tokio::test(start_paused = true)]
    async fn the_semaphore_follows_the_limit() {
        let c = Concurrency::new(8);
        assert_eq!(c.limit(), 1);
        // Grow to 8 with clean fast answers while every slot is in use.
        for _ in 0..200 {
            let mut round = Vec::new();
            for _ in 0..c.limit() {
                round.push(c.acquire().await);
            }
            tokio::time::sleep(ms(10)).await;
            for _ in &round {
                c.on_response(ms(10), false, None);
            }
        }
        assert_eq!(c.limit(), 8);
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(c.acquire().await);
        }
        assert!(
            tokio::time::timeout(ms(20), c.acquire()).await.is_err(),
            "a ninth must wait"
        );
        // Back-pressure while all 8 are out: the limit drops and the returned permits are swallowed.
        tokio::time::sleep(ms(10)).await;
        c.on_response(ms(1), true, None);
        let after = c.limit();
        assert!(after < 8);
        held.clear();
        let mut again = Vec::new();
        for _ in 0..after {
            again.push(c.acquire().await);
        }
        assert!(
            tokio::time::timeout(ms(20), c.acquire()).await.is_err(),
            "only {after} fit now"
        );
    }
}
