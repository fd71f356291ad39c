//! The fault settings: what `/_sandbox/faults` shows and takes, the builder's and the flags'
//! vocabulary (rate limits, UserGuiding's block, fail-next rules, random fault rates).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{SandboxError, Vendor};

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

    pub(super) fn matches(&self, method: &str, path: &str) -> bool {
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
    pub(super) fn is_quiet(&self) -> bool {
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

    pub(super) fn is_quiet(&self) -> bool {
        self.vendors.values().all(VendorFaults::is_quiet)
            && self.userguiding_block.is_none()
            && self.userpilot_delete_limit.is_none()
            && self.fail_next.is_empty()
    }
}

pub(crate) fn check_fraction(name: &str, x: f64) -> Result<(), SandboxError> {
    if (0.0..=1.0).contains(&x) {
        Ok(())
    } else {
        Err(SandboxError::InvalidFault(format!(
            "{name} must be between 0 and 1, got {x}"
        )))
    }
}
