//! Faults on demand: rate limits, UserGuiding's block, random 500/503, dropped connections,
//! added latency, "fail the next N requests to path P", answers lost after the write was applied
//! (`apply_then_fail`), and failing bulk jobs.
//!
//! Every request under a vendor prefix asks [`Faults::decide`] first; the decision is applied
//! by the request layer and named in the request log. Random faults draw from an RNG seeded
//! with the sandbox's seed, so a run with the same request order sees the same faults.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use super::state::Shared;
use super::{SandboxError, Vendor, seed};

/// A token-bucket rate limit: `per_second` refill, `burst` capacity.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RateLimit {
    /// The rate as written (`50/s`, `600/min`).
    pub spec: String,
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket capacity (default: one second's worth, at least 1).
    pub burst: f64,
    /// Send `Retry-After` on 429; `None` = as the vendor does (Appcues and SCIM send it;
    /// Userflow, Userpilot, Guru and UserGuiding document none).
    pub retry_after: Option<bool>,
}

impl RateLimit {
    /// Parses `N/s`, `N/min`, `N/h` (also `sec`, `second`, `m`, `minute`, `hour`), optionally
    /// followed by `,burst=B` and `,retry_after=true|false`.
    pub fn parse(spec: &str) -> Result<RateLimit, SandboxError> {
        let bad = || SandboxError::InvalidRate(spec.to_owned());
        let mut parts = spec.split(',');
        let rate = parts.next().ok_or_else(bad)?.trim();
        let (n, unit) = rate.split_once('/').ok_or_else(bad)?;
        let n: f64 = n.trim().parse().map_err(|_| bad())?;
        let secs = match unit.trim() {
            "s" | "sec" | "second" => 1.0,
            "m" | "min" | "minute" => 60.0,
            "h" | "hour" => 3600.0,
            _ => return Err(bad()),
        };
        if !(n > 0.0 && n.is_finite()) {
            return Err(bad());
        }
        let per_second = n / secs;
        let mut burst = per_second.max(1.0);
        let mut retry_after = None;
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(bad)?;
            match k.trim() {
                "burst" => burst = v.trim().parse::<f64>().map_err(|_| bad())?.max(1.0),
                "retry_after" | "retry-after" => {
                    retry_after = Some(match v.trim() {
                        "true" | "on" | "yes" => true,
                        "false" | "off" | "no" => false,
                        _ => return Err(bad()),
                    })
                }
                _ => return Err(bad()),
            }
        }
        Ok(RateLimit {
            spec: spec.to_owned(),
            per_second,
            burst,
            retry_after,
        })
    }

    /// Overrides whether `Retry-After` is sent.
    #[must_use]
    pub fn with_retry_after(mut self, on: bool) -> Self {
        self.retry_after = Some(on);
        self
    }
}

/// UserGuiding's documented rule: more than `max_requests` in `window_secs` blocks the key for
/// `block_secs` (help centre: 50 per 10 s, then 1 minute).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserGuidingBlock {
    /// Requests allowed per window.
    pub max_requests: u32,
    /// Window length in seconds.
    pub window_secs: f64,
    /// Block length in seconds (the flag `--userguiding-block-secs` shortens it for tests).
    pub block_secs: f64,
    /// Send `Retry-After` with the remaining block time (UserGuiding documents none).
    #[serde(default)]
    pub retry_after: bool,
}

impl Default for UserGuidingBlock {
    fn default() -> Self {
        UserGuidingBlock {
            max_requests: 50,
            window_secs: 10.0,
            block_secs: 60.0,
            retry_after: false,
        }
    }
}

/// "Fail the next `count` requests to `path`": answer `status`, or drop the connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FailRule {
    /// Full request path (prefix included), exact, or a prefix when it ends with `*`.
    pub path: String,
    /// Only this method (any when `None`).
    #[serde(default)]
    pub method: Option<String>,
    /// How many requests still to fail.
    pub count: u32,
    /// Status to answer (default 500).
    #[serde(default = "default_fail_status")]
    pub status: u16,
    /// Drop the connection instead of answering.
    #[serde(default)]
    pub drop: bool,
    /// `Retry-After` seconds to send with the answer.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Run the vendor's handler first (the write is applied), then answer `status` or drop
    /// the connection: "the vendor acted but the answer never arrived".
    #[serde(default)]
    pub apply_then_fail: bool,
    /// Answer in a way other than a vendor error (a redirect, an HTML page, a body cut short);
    /// `status` and `drop` are then ignored. The vendor's handler does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<FaultAnswer>,
}

/// A fault answer that looks like success or a redirect, though the vendor applied nothing:
/// what a moved endpoint, a captive portal or a proxy that cut the body short sends.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAnswer {
    /// A 3xx (301, 302, 303, 307, 308) with this `Location`.
    Redirect {
        /// The status.
        status: u16,
        /// Where it points (absolute, possibly another host, or a path).
        location: String,
    },
    /// `200 OK` with a `text/html` page.
    Html,
    /// `200 OK`, `application/json`, with the JSON cut short (a complete, short body).
    Truncated,
}

fn default_fail_status() -> u16 {
    500
}

impl FailRule {
    /// Fail the next `count` requests to `path` with 500.
    pub fn new(path: impl Into<String>, count: u32) -> FailRule {
        FailRule {
            path: path.into(),
            method: None,
            count,
            status: 500,
            drop: false,
            retry_after: None,
            apply_then_fail: false,
            answer: None,
        }
    }
    /// Apply the next `count` requests to `path`, then answer 500 instead of the vendor's
    /// answer (chain `.status()` for another status, or use [`FailRule::apply_then_drop`]).
    pub fn apply_then_fail(path: impl Into<String>, count: u32) -> FailRule {
        FailRule::new(path, count).after_apply()
    }
    /// Apply the next `count` requests to `path`, then drop the connection without an answer.
    pub fn apply_then_drop(path: impl Into<String>, count: u32) -> FailRule {
        FailRule::drop_connection(path, count).after_apply()
    }
    /// Let the vendor's handler apply the request before the fault replaces its answer.
    #[must_use]
    pub fn after_apply(mut self) -> Self {
        self.apply_then_fail = true;
        self
    }
    /// Drop the connection of the next `count` requests to `path`.
    pub fn drop_connection(path: impl Into<String>, count: u32) -> FailRule {
        FailRule {
            drop: true,
            ..FailRule::new(path, count)
        }
    }
    /// Answer `status` with `Location: location` (a 3xx), applying nothing.
    pub fn redirect(
        path: impl Into<String>,
        count: u32,
        status: u16,
        location: impl Into<String>,
    ) -> FailRule {
        FailRule::new(path, count).answer(FaultAnswer::Redirect {
            status,
            location: location.into(),
        })
    }
    /// Answer with a fault answer instead of an error.
    #[must_use]
    pub fn answer(mut self, answer: FaultAnswer) -> Self {
        self.answer = Some(answer);
        self
    }
    /// Answer this status.
    #[must_use]
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    /// Only requests with this method.
    #[must_use]
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    /// Send `Retry-After: secs`.
    #[must_use]
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        };
        path_ok
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// Faults of one vendor.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct VendorFaults {
    /// Token-bucket limit.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// Fraction of requests answered 500 or 503.
    #[serde(default)]
    pub error_rate: f64,
    /// Fraction of requests whose connection is dropped.
    #[serde(default)]
    pub drop_rate: f64,
    /// Milliseconds added before answering.
    #[serde(default)]
    pub latency_ms: u64,
    /// Fraction of requests that the vendor applies and whose answer is then lost (a third
    /// each answered 500, answered 503, and dropped connections).
    #[serde(default)]
    pub apply_then_fail_rate: f64,
}

impl VendorFaults {
    fn is_quiet(&self) -> bool {
        self.rate_limit.is_none()
            && self.error_rate <= 0.0
            && self.drop_rate <= 0.0
            && self.apply_then_fail_rate <= 0.0
            && self.latency_ms == 0
    }
}

/// Every fault setting: what `/_sandbox/faults` shows and what flags fill in.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultSettings {
    /// Per-vendor faults (vendors without an entry have none).
    #[serde(default)]
    pub vendors: BTreeMap<Vendor, VendorFaults>,
    /// UserGuiding's 50-per-10-s block, when on.
    #[serde(default)]
    pub userguiding_block: Option<UserGuidingBlock>,
    /// Pending "fail the next N" rules, first match wins.
    #[serde(default)]
    pub fail_next: Vec<FailRule>,
    /// Every bulk job ends `failed`.
    #[serde(default)]
    pub fail_jobs: bool,
    /// Userpilot's own limit on deletes (`DELETE /v1/users`, `/v1/companies`): "1 request per
    /// 2 s", answered 429 without `Retry-After` when exceeded.
    #[serde(default)]
    pub userpilot_delete_limit: Option<RateLimit>,
}

/// What `/_sandbox/faults` shows.
pub type FaultsView = FaultSettings;

impl FaultSettings {
    /// One vendor's faults, created empty if absent.
    pub fn vendor_mut(&mut self, v: Vendor) -> &mut VendorFaults {
        self.vendors.entry(v).or_default()
    }

    /// Applies `f` to one vendor's faults, or to every vendor's when `v` is `None`.
    pub fn for_each(&mut self, v: Option<Vendor>, mut f: impl FnMut(&mut VendorFaults)) {
        match v {
            Some(v) => f(self.vendor_mut(v)),
            None => Vendor::ALL.into_iter().for_each(|v| f(self.vendor_mut(v))),
        }
    }

    /// Each vendor's documented limits (vendors.md): Userpilot 600/min and 1 delete per 2 s,
    /// Appcues 60/s with Retry-After, UserGuiding 50 per 10 s then a 60 s block.
    pub fn apply_realistic(&mut self) {
        if let Ok(r) = RateLimit::parse("600/min") {
            self.vendor_mut(Vendor::Userpilot).rate_limit = Some(r);
        }
        if let Ok(r) = RateLimit::parse("30/min,burst=1") {
            self.userpilot_delete_limit = Some(r);
        }
        if let Ok(r) = RateLimit::parse("60/s") {
            self.vendor_mut(Vendor::Appcues).rate_limit = Some(r);
        }
        if self.userguiding_block.is_none() {
            self.userguiding_block = Some(UserGuidingBlock::default());
        }
    }

    /// Checks fractions and the block rule.
    pub fn validate(&self) -> Result<(), SandboxError> {
        for (v, f) in &self.vendors {
            for (name, x) in [
                ("error_rate", f.error_rate),
                ("drop_rate", f.drop_rate),
                ("apply_then_fail_rate", f.apply_then_fail_rate),
            ] {
                if !(0.0..=1.0).contains(&x) {
                    return Err(SandboxError::InvalidFault(format!(
                        "{v} {name} must be between 0 and 1, got {x}"
                    )));
                }
            }
        }
        if let Some(b) = &self.userguiding_block
            && (b.max_requests == 0 || b.window_secs <= 0.0 || b.block_secs < 0.0)
        {
            return Err(SandboxError::InvalidFault(
                "userguiding_block needs max_requests > 0, window_secs > 0 and block_secs >= 0"
                    .into(),
            ));
        }
        Ok(())
    }

    fn is_quiet(&self) -> bool {
        self.vendors.values().all(VendorFaults::is_quiet)
            && self.userguiding_block.is_none()
            && self.userpilot_delete_limit.is_none()
            && self.fail_next.is_empty()
    }
}

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

    pub fn decide(&self, vendor: Vendor, method: &str, path: &str) -> Decision {
        let mut d = Decision {
            latency: None,
            action: Action::Pass,
            label: None,
            apply_first: false,
        };
        if self.quiet.load(Ordering::Relaxed) {
            return d;
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
        let mut labels = Vec::new();
        if vf.latency_ms > 0 {
            d.latency = Some(Duration::from_millis(vf.latency_ms));
            labels.push(format!("latency {}ms", vf.latency_ms));
        }
        let finish = |mut d: Decision, mut labels: Vec<String>, label: Option<String>| {
            labels.extend(label);
            if !labels.is_empty() {
                d.label = Some(labels.join(", "));
            }
            d
        };

        // 1. "fail the next N": the test asked for exactly this request.
        if let Some(i) = rt
            .settings
            .fail_next
            .iter()
            .position(|r| r.matches(method, path))
        {
            let rule = rt.settings.fail_next[i].clone();
            rt.settings.fail_next[i].count -= 1;
            if rt.settings.fail_next[i].count == 0 {
                rt.settings.fail_next.remove(i);
                self.quiet.store(rt.settings.is_quiet(), Ordering::Relaxed);
            }
            if let Some(answer) = rule.answer {
                let label = match &answer {
                    FaultAnswer::Redirect { status, .. } => format!("fail_next redirect {status}"),
                    FaultAnswer::Html => "fail_next html".into(),
                    FaultAnswer::Truncated => "fail_next truncated".into(),
                };
                d.action = Action::Answer(answer);
                return finish(d, labels, Some(label));
            }
            d.action = if rule.drop {
                Action::Drop
            } else {
                Action::Respond {
                    status: rule.status,
                    retry_after: rule.retry_after,
                    message: format!("sandbox fault: fail_next rule for {}", rule.path),
                }
            };
            d.apply_first = rule.apply_then_fail;
            let label = match (rule.apply_then_fail, rule.drop) {
                (true, true) => "apply_then_fail dropped",
                (true, false) => "apply_then_fail",
                (false, true) => "fail_next dropped",
                (false, false) => "fail_next",
            };
            return finish(d, labels, Some(label.into()));
        }

        // 2. UserGuiding's block: over the window's budget blocks the key for a while.
        if vendor == Vendor::UserGuiding
            && let Some(b) = rt.settings.userguiding_block.clone()
        {
            let ug = &mut rt.ug;
            if let Some(until) = ug.blocked_until {
                if now < until {
                    let left = until.saturating_duration_since(now).as_secs_f64().ceil() as u64;
                    d.action = Action::Respond {
                        status: 429,
                        retry_after: b.retry_after.then_some(left.max(1)),
                        message:
                            "too many requests: blocked after exceeding 50 requests per 10 seconds"
                                .into(),
                    };
                    return finish(d, labels, Some("userguiding_block".into()));
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
                d.action = Action::Respond {
                    status: 429,
                    retry_after: b.retry_after.then_some(b.block_secs.ceil() as u64),
                    message:
                        "too many requests: blocked after exceeding 50 requests per 10 seconds"
                            .into(),
                };
                return finish(d, labels, Some("userguiding_block".into()));
            }
            ug.window.push_back(now);
        }

        // 2b. Userpilot's delete limit: 1 request per 2 s, on top of the 600/min.
        if vendor == Vendor::Userpilot
            && method.eq_ignore_ascii_case("DELETE")
            && let Some(limit) = rt.settings.userpilot_delete_limit.clone()
        {
            let bucket = rt.up_delete.get_or_insert(Bucket {
                tokens: limit.burst,
                last: now,
            });
            let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
            bucket.last = now;
            // A client pacing itself at exactly the limit may arrive a few milliseconds early.
            let slack = DELETE_SLACK.as_secs_f64() * limit.per_second;
            if bucket.tokens + slack >= 1.0 {
                bucket.tokens -= 1.0;
            } else {
                let wait = ((1.0 - bucket.tokens) / limit.per_second).ceil().max(1.0) as u64;
                d.action = Action::Respond {
                    status: 429,
                    retry_after: limit.retry_after.unwrap_or(false).then_some(wait),
                    message: format!(
                        "rate limit exceeded: deletes are limited to 1 request per 2 seconds ({})",
                        limit.spec
                    ),
                };
                return finish(d, labels, Some("userpilot_delete_limit".into()));
            }
        }

        // 3. Token bucket.
        if let Some(limit) = &vf.rate_limit {
            let bucket = rt.buckets.entry(vendor).or_insert(Bucket {
                tokens: limit.burst,
                last: now,
            });
            let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * limit.per_second).min(limit.burst);
            bucket.last = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
            } else {
                let wait = ((1.0 - bucket.tokens) / limit.per_second).ceil().max(1.0) as u64;
                let send = limit.retry_after.unwrap_or(sends_retry_after(vendor));
                d.action = Action::Respond {
                    status: 429,
                    retry_after: send.then_some(wait),
                    message: format!("rate limit exceeded ({})", limit.spec),
                };
                return finish(d, labels, Some("rate_limited".into()));
            }
        }

        // 4. Random server errors and dropped connections.
        if vf.error_rate > 0.0 && rt.rng.random_bool(vf.error_rate.min(1.0)) {
            let status = if rt.rng.random_bool(0.5) { 500 } else { 503 };
            d.action = Action::Respond {
                status,
                retry_after: None,
                message: "sandbox fault: injected server error".into(),
            };
            return finish(d, labels, Some(format!("error_{status}")));
        }
        if vf.drop_rate > 0.0 && rt.rng.random_bool(vf.drop_rate.min(1.0)) {
            d.action = Action::Drop;
            return finish(d, labels, Some("dropped".into()));
        }
        if vf.apply_then_fail_rate > 0.0 && rt.rng.random_bool(vf.apply_then_fail_rate.min(1.0)) {
            d.apply_first = true;
            let label = match rt.rng.random_range(0..3u8) {
                0 => {
                    d.action = Action::Drop;
                    "apply_then_fail dropped".to_string()
                }
                n => {
                    let status = if n == 1 { 500 } else { 503 };
                    d.action = Action::Respond {
                        status,
                        retry_after: None,
                        message: "sandbox fault: the request was applied, then failed".into(),
                    };
                    format!("apply_then_fail {status}")
                }
            };
            return finish(d, labels, Some(label));
        }
        finish(d, labels, None)
    }
}

/// Injects and clears faults at runtime: the library face of `/_sandbox/faults`.
#[derive(Clone, Debug)]
pub struct FaultHandle {
    shared: Arc<Shared>,
}

impl FaultHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> FaultHandle {
        FaultHandle { shared }
    }

    fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Token-bucket limit for one vendor, e.g. `"50/s"`, `"600/min"`, `"10/s,burst=1"`.
    pub fn rate_limit(&self, vendor: Vendor, rate: &str) -> Result<(), SandboxError> {
        let r = RateLimit::parse(rate)?;
        self.set_rate_limit(vendor, Some(r));
        Ok(())
    }

    /// Sets or clears one vendor's limit.
    pub fn set_rate_limit(&self, vendor: Vendor, limit: Option<RateLimit>) {
        self.faults()
            .update(|s| s.vendor_mut(vendor).rate_limit = limit);
    }

    /// UserGuiding's block rule (`None` turns it off).
    pub fn userguiding_block(&self, block: Option<UserGuidingBlock>) {
        self.faults().update(|s| s.userguiding_block = block);
    }

    /// Fraction of 500/503 answers; `None` = every vendor.
    pub fn error_rate(&self, vendor: Option<Vendor>, rate: f64) -> Result<(), SandboxError> {
        check_fraction("error_rate", rate)?;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.error_rate = rate));
        Ok(())
    }

    /// Fraction of dropped connections; `None` = every vendor.
    pub fn drop_rate(&self, vendor: Option<Vendor>, rate: f64) -> Result<(), SandboxError> {
        check_fraction("drop_rate", rate)?;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.drop_rate = rate));
        Ok(())
    }

    /// Fraction of requests applied and then answered 500/503 or dropped; `None` = every
    /// vendor.
    pub fn apply_then_fail_rate(
        &self,
        vendor: Option<Vendor>,
        rate: f64,
    ) -> Result<(), SandboxError> {
        check_fraction("apply_then_fail_rate", rate)?;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.apply_then_fail_rate = rate));
        Ok(())
    }

    /// Added latency; `None` = every vendor.
    pub fn latency(&self, vendor: Option<Vendor>, latency: Duration) {
        let ms = latency.as_millis() as u64;
        self.faults()
            .update(|s| s.for_each(vendor, |f| f.latency_ms = ms));
    }

    /// Adds a "fail the next N requests to path P" rule.
    pub fn fail_next(&self, rule: FailRule) {
        self.faults().update(|s| s.fail_next.push(rule));
    }

    /// Makes bulk jobs fail (or stop failing).
    pub fn fail_jobs(&self, on: bool) {
        self.faults().update(|s| s.fail_jobs = on);
    }

    /// Each vendor's documented limits at once.
    pub fn realistic_limits(&self) {
        self.faults().update(FaultSettings::apply_realistic);
    }

    /// Replaces every fault setting.
    pub fn set(&self, settings: FaultSettings) -> Result<(), SandboxError> {
        settings.validate()?;
        self.faults().update(|s| *s = settings);
        Ok(())
    }

    /// No faults at all.
    pub fn clear(&self) {
        self.faults().update(|s| *s = FaultSettings::default());
    }

    /// The current settings (pending `fail_next` counts included).
    pub fn view(&self) -> FaultsView {
        self.faults().settings()
    }
}

fn check_fraction(name: &str, x: f64) -> Result<(), SandboxError> {
    if (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(SandboxError::InvalidFault(format!(
            "{name} must be between 0 and 1, got {x}"
        )))
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
