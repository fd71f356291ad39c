//! Faults on demand: rate limits, UserGuiding's block, random 500/503, dropped connections,
//! added latency, "fail the next N requests to path P", answers lost after the write was applied
//! (`apply_then_fail`), and failing bulk jobs.
//!
//! Every request under a vendor prefix asks [`Faults::decide`] first; the decision is applied
//! by the request layer and named in the request log. Random faults draw from an RNG seeded
//! with the sandbox's seed, so a run with the same request order sees the same faults.
//!
//! `settings` holds what can be asked for, `handle` the library face; this file holds the live
//! state (token buckets, the UserGuiding block) and the decision, one named check per fault.

mod handle;
mod settings;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;

use super::{Vendor, seed};

pub use handle::FaultHandle;
pub(crate) use settings::check_fraction;
pub use settings::{
    FailRule, FaultAnswer, FaultSettings, FaultsView, RateLimit, UserGuidingBlock, VendorFaults,
};

/// What to do with one request.
#[derive(Debug)]
pub(crate) struct Decision {
    pub latency: Option<Duration>,
    pub action: Action,
    pub label: Option<String>,
    /// Run the vendor's handler (apply the write) before `action` replaces its answer.
    pub apply_first: bool,
}

#[derive(Debug)]
pub(crate) enum Action {
    Pass,
    Respond {
        status: u16,
        retry_after: Option<u64>,
        message: String,
    },
    Drop,
    /// A fault answer (redirect, HTML, truncated JSON) instead of the vendor's handler.
    Answer(FaultAnswer),
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(limit: &RateLimit, now: Instant) -> Bucket {
        Bucket {
            tokens: limit.burst,
            last: now,
        }
    }

    /// Refills at the limit's rate since the last request, then takes a token; a request up to
    /// `slack` tokens early still gets one. `Err` is how many seconds a token is away.
    fn take(&mut self, limit: &RateLimit, now: Instant, slack: f64) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.last = now;
        if self.tokens + slack >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(((1.0 - self.tokens) / limit.per_second).ceil().max(1.0) as u64)
    }
}

#[derive(Debug, Default)]
struct UgState {
    window: VecDeque<Instant>,
    blocked_until: Option<Instant>,
}

#[derive(Debug)]
struct Runtime {
    settings: FaultSettings,
    buckets: BTreeMap<Vendor, Bucket>,
    /// Userpilot's delete bucket.
    up_delete: Option<Bucket>,
    ug: UgState,
    rng: StdRng,
}

/// The live fault state shared by every request.
#[derive(Debug)]
pub(crate) struct Faults {
    rt: Mutex<Runtime>,
    /// Fast path: nothing configured, skip the lock entirely.
    quiet: AtomicBool,
}

/// How early a Userpilot delete may come and still count as paced at the limit (client and
/// server clocks, scheduling).
const DELETE_SLACK: Duration = Duration::from_millis(100);

/// Vendors that send `Retry-After` with a 429 (Appcues' CLI honours it; RFC 7644 §3.12 for
/// SCIM). The others document none.
fn sends_retry_after(v: Vendor) -> bool {
    matches!(v, Vendor::Appcues | Vendor::Scim | Vendor::GuruScim)
}

impl Faults {
    pub fn new(settings: FaultSettings, seed: u64) -> Faults {
        let quiet = settings.is_quiet();
        Faults {
            rt: Mutex::new(Runtime {
                settings,
                buckets: BTreeMap::new(),
                up_delete: None,
                ug: UgState::default(),
                rng: seed::rng(seed, 99),
            }),
            quiet: AtomicBool::new(quiet),
        }
    }

    pub fn settings(&self) -> FaultSettings {
        self.rt.lock().settings.clone()
    }

    /// Changes the settings; bucket and block state restart when a limit changes.
    pub fn update(&self, f: impl FnOnce(&mut FaultSettings)) {
        let mut rt = self.rt.lock();
        let before = rt.settings.clone();
        f(&mut rt.settings);
        for v in Vendor::ALL {
            let old = before.vendors.get(&v).and_then(|f| f.rate_limit.as_ref());
            let new = rt
                .settings
                .vendors
                .get(&v)
                .and_then(|f| f.rate_limit.as_ref());
            if old != new {
                rt.buckets.remove(&v);
            }
        }
        if before.userguiding_block != rt.settings.userguiding_block {
            rt.ug = UgState::default();
        }
        if before.userpilot_delete_limit != rt.settings.userpilot_delete_limit {
            rt.up_delete = None;
        }
        rt.settings.fail_next.retain(|r| r.count > 0);
        self.quiet.store(rt.settings.is_quiet(), Ordering::Relaxed);
    }

    /// Replaces everything, restarting buckets and blocks.
    pub fn replace(&self, settings: FaultSettings, seed: u64) {
        let mut rt = self.rt.lock();
        self.quiet.store(settings.is_quiet(), Ordering::Relaxed);
        rt.settings = settings;
        rt.buckets.clear();
        rt.up_delete = None;
        rt.ug = UgState::default();
        rt.rng = seed::rng(seed, 99);
    }

    /// What to do with one request: the first fault that applies, in the order fail_next,
    /// UserGuiding's block, Userpilot's delete limit, the rate limit, random faults.
    pub fn decide(&self, vendor: Vendor, method: &str, path: &str) -> Decision {
        if self.quiet.load(Ordering::Relaxed) {
            return Decision {
                latency: None,
                action: Action::Pass,
                label: None,
                apply_first: false,
            };
        }
        let now = Instant::now();
        let mut rt = self.rt.lock();
        let rt = &mut *rt;
        let vf = rt
            .settings
            .vendors
            .get(&vendor)
            .cloned()
            .unwrap_or_default();
        let hit = self
            .fail_next(rt, method, path)
            .or_else(|| rt.userguiding_block(vendor, now))
            .or_else(|| rt.userpilot_delete_limit(vendor, method, now))
            .or_else(|| rt.rate_limited(vendor, &vf, now))
            .or_else(|| rt.random_fault(&vf));
        let latency = (vf.latency_ms > 0).then(|| Duration::from_millis(vf.latency_ms));
        let mut labels: Vec<String> = latency
            .map(|_| format!("latency {}ms", vf.latency_ms))
            .into_iter()
            .collect();
        let (action, apply_first) = match hit {
            Some(h) => {
                labels.push(h.label);
                (h.action, h.apply_first)
            }
            None => (Action::Pass, false),
        };
        Decision {
            latency,
            action,
            label: (!labels.is_empty()).then(|| labels.join(", ")),
            apply_first,
        }
    }

    /// "Fail the next N": the test asked for exactly this request. A rule counts down and goes
    /// when spent.
    fn fail_next(&self, rt: &mut Runtime, method: &str, path: &str) -> Option<Hit> {
        let rules = &mut rt.settings.fail_next;
        let i = rules.iter().position(|r| r.matches(method, path))?;
        let rule = rules[i].clone();
        rules[i].count -= 1;
        if rules[i].count == 0 {
            rules.remove(i);
            self.quiet.store(rt.settings.is_quiet(), Ordering::Relaxed);
        }
        if let Some(answer) = rule.answer {
            let label = match &answer {
                FaultAnswer::Redirect { status, .. } => format!("fail_next redirect {status}"),
                FaultAnswer::Html => "fail_next html".into(),
                FaultAnswer::Truncated => "fail_next truncated".into(),
            };
            return Some(Hit::new(Action::Answer(answer), label));
        }
        let action = if rule.drop {
            Action::Drop
        } else {
            Action::Respond {
                status: rule.status,
                retry_after: rule.retry_after,
                message: format!("sandbox fault: fail_next rule for {}", rule.path),
            }
        };
        let label = match (rule.apply_then_fail, rule.drop) {
            (true, true) => "apply_then_fail dropped",
            (true, false) => "apply_then_fail",
            (false, true) => "fail_next dropped",
            (false, false) => "fail_next",
        };
        let mut hit = Hit::new(action, label);
        hit.apply_first = rule.apply_then_fail;
        Some(hit)
    }
}

/// A fault that answers instead of the vendor (or, with `apply_first`, after it), and the
/// name the request log gives it.
struct Hit {
    action: Action,
    apply_first: bool,
    label: String,
}

impl Hit {
    fn new(action: Action, label: impl Into<String>) -> Hit {
        Hit {
            action,
            apply_first: false,
            label: label.into(),
        }
    }

    fn too_many(retry_after: Option<u64>, message: impl Into<String>, label: &str) -> Hit {
        let action = Action::Respond {
            status: 429,
            retry_after,
            message: message.into(),
        };
        Hit::new(action, label)
    }
}

/// What UserGuiding answers while a key is blocked.
const UG_BLOCKED: &str = "too many requests: blocked after exceeding 50 requests per 10 seconds";

impl Runtime {
    /// UserGuiding's block: over the window's budget blocks the key for a while.
    fn userguiding_block(&mut self, vendor: Vendor, now: Instant) -> Option<Hit> {
        if vendor != Vendor::UserGuiding {
            return None;
        }
        let b = self.settings.userguiding_block.clone()?;
        let ug = &mut self.ug;
        if let Some(until) = ug.blocked_until {
            if now < until {
                let left = until.saturating_duration_since(now).as_secs_f64().ceil() as u64;
                let retry = b.retry_after.then_some(left.max(1));
                return Some(Hit::too_many(retry, UG_BLOCKED, "userguiding_block"));
            }
            ug.blocked_until = None;
            ug.window.clear();
        }
        let window = Duration::from_secs_f64(b.window_secs);
        while ug
            .window
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            ug.window.pop_front();
        }
        if ug.window.len() >= b.max_requests as usize {
            ug.blocked_until = Some(now + Duration::from_secs_f64(b.block_secs));
            ug.window.clear();
            let retry = b.retry_after.then_some(b.block_secs.ceil() as u64);
            return Some(Hit::too_many(retry, UG_BLOCKED, "userguiding_block"));
        }
        ug.window.push_back(now);
        None
    }

    /// Userpilot's delete limit: 1 request per 2 s, on top of the 600/min.
    fn userpilot_delete_limit(
        &mut self,
        vendor: Vendor,
        method: &str,
        now: Instant,
    ) -> Option<Hit> {
        if vendor != Vendor::Userpilot || !method.eq_ignore_ascii_case("DELETE") {
            return None;
        }
        let limit = self.settings.userpilot_delete_limit.clone()?;
        let bucket = self.up_delete.get_or_insert(Bucket::full(&limit, now));
        // A client pacing itself at exactly the limit may arrive a few milliseconds early.
        let slack = DELETE_SLACK.as_secs_f64() * limit.per_second;
        let wait = bucket.take(&limit, now, slack).err()?;
        Some(Hit::too_many(
            limit.retry_after.unwrap_or(false).then_some(wait),
            format!(
                "rate limit exceeded: deletes are limited to 1 request per 2 seconds ({})",
                limit.spec
            ),
            "userpilot_delete_limit",
        ))
    }

    /// The vendor's token bucket.
    fn rate_limited(&mut self, vendor: Vendor, vf: &VendorFaults, now: Instant) -> Option<Hit> {
        let limit = vf.rate_limit.as_ref()?;
        let bucket = self
            .buckets
            .entry(vendor)
            .or_insert_with(|| Bucket::full(limit, now));
        let wait = bucket.take(limit, now, 0.0).err()?;
        let send = limit.retry_after.unwrap_or(sends_retry_after(vendor));
        Some(Hit::too_many(
            send.then_some(wait),
            format!("rate limit exceeded ({})", limit.spec),
            "rate_limited",
        ))
    }

    /// Random server errors, dropped connections, and writes applied then failed.
    fn random_fault(&mut self, vf: &VendorFaults) -> Option<Hit> {
        if vf.error_rate > 0.0 && self.rng.random_bool(vf.error_rate.min(1.0)) {
            let status = if self.rng.random_bool(0.5) { 500 } else { 503 };
            let action = Action::Respond {
                status,
                retry_after: None,
                message: "sandbox fault: injected server error".into(),
            };
            return Some(Hit::new(action, format!("error_{status}")));
        }
        if vf.drop_rate > 0.0 && self.rng.random_bool(vf.drop_rate.min(1.0)) {
            return Some(Hit::new(Action::Drop, "dropped"));
        }
        if vf.apply_then_fail_rate > 0.0 && self.rng.random_bool(vf.apply_then_fail_rate.min(1.0)) {
            let mut hit = match self.rng.random_range(0..3u8) {
                0 => Hit::new(Action::Drop, "apply_then_fail dropped"),
                n => {
                    let status = if n == 1 { 500 } else { 503 };
                    let action = Action::Respond {
                        status,
                        retry_after: None,
                        message: "sandbox fault: the request was applied, then failed".into(),
                    };
                    Hit::new(action, format!("apply_then_fail {status}"))
                }
            };
            hit.apply_first = true;
            return Some(hit);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        let r = RateLimit::parse("600/min").unwrap();
        assert!((r.per_second - 10.0).abs() < 1e-9);
        assert!((r.burst - 10.0).abs() < 1e-9);
        let r = RateLimit::parse("50/s,burst=5,retry_after=false").unwrap();
        assert!((r.burst - 5.0).abs() < 1e-9);
        assert_eq!(r.retry_after, Some(false));
        assert!(RateLimit::parse("fast").is_err());
        assert!(RateLimit::parse("0/s").is_err());
        assert!(RateLimit::parse("5/day").is_err());
    }

    #[test]
    fn bucket_answers_429_with_vendor_retry_after() {
        let mut s = FaultSettings::default();
        s.vendor_mut(Vendor::Appcues).rate_limit = Some(RateLimit::parse("2/min").unwrap());
        s.vendor_mut(Vendor::Userflow).rate_limit = Some(RateLimit::parse("1/min").unwrap());
        let f = Faults::new(s, 1);
        assert!(matches!(
            f.decide(Vendor::Appcues, "GET", "/x").action,
            Action::Pass
        ));
        match f.decide(Vendor::Appcues, "GET", "/x").action {
            Action::Respond {
                status: 429,
                retry_after: Some(s),
                ..
            } => assert!(s >= 1),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            f.decide(Vendor::Userflow, "GET", "/x").action,
            Action::Pass
        ));
        assert!(matches!(
            f.decide(Vendor::Userflow, "GET", "/x").action,
            Action::Respond {
                status: 429,
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn fail_next_counts_down_and_matches_prefix() {
        let mut s = FaultSettings::default();
        s.fail_next
            .push(FailRule::new("/userflow/*", 2).status(503).method("post"));
        let f = Faults::new(s, 1);
        assert!(matches!(
            f.decide(Vendor::Userflow, "GET", "/userflow/users").action,
            Action::Pass
        ));
        for _ in 0..2 {
            assert!(matches!(
                f.decide(Vendor::Userflow, "POST", "/userflow/users").action,
                Action::Respond { status: 503, .. }
            ));
        }
        assert!(matches!(
            f.decide(Vendor::Userflow, "POST", "/userflow/users").action,
            Action::Pass
        ));
        assert!(f.settings().fail_next.is_empty());
    }

    #[test]
    fn userguiding_blocks_after_budget() {
        let s = FaultSettings {
            userguiding_block: Some(UserGuidingBlock {
                max_requests: 3,
                window_secs: 10.0,
                block_secs: 60.0,
                retry_after: false,
            }),
            ..Default::default()
        };
        let f = Faults::new(s, 1);
        for _ in 0..3 {
            assert!(matches!(
                f.decide(Vendor::UserGuiding, "POST", "/u").action,
                Action::Pass
            ));
        }
        for _ in 0..3 {
            assert!(matches!(
                f.decide(Vendor::UserGuiding, "POST", "/u").action,
                Action::Respond { status: 429, .. }
            ));
        }
    }
}
