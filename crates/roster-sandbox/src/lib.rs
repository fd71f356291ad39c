//! `roster-sandbox`: a local emulator of every vendor API roster talks to.
//!
//! One axum server on 127.0.0.1 serves each vendor under its own path prefix (see
//! [`Vendor::prefix`]), so a vendor's `base_url` points straight at it. Data lives in a seeded
//! in-memory store per vendor; an admin API under `/_sandbox/` dumps it, shows the request log,
//! resets, re-seeds and injects faults; the same things are reachable in-process through
//! [`Sandbox`] for tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roster_sandbox::SandboxError> {
//! use roster_sandbox::{Sandbox, Vendor};
//! let sb = Sandbox::builder().seed(7).users(250).groups(12).spawn().await?;
//! let url = sb.base_url(Vendor::Userflow); // "http://127.0.0.1:41234/userflow"
//! sb.faults().rate_limit(Vendor::Userflow, "50/s")?;
//! let users = sb.dump(Vendor::Userflow);
//! # let _ = (url, users); Ok(()) }
//! ```
//!
//! Layout: one room per vendor, `<vendor>/{mod,store,routes}.rs` (`store`: what the vendor
//! holds and how it looks on the wire; `routes`: its endpoints and request checks; SCIM serves
//! Guru SCIM too, under a second prefix). Beside them: `server` (accept loop, dropped
//! connections, graceful shutdown), `layer` (the middleware every vendor request passes:
//! faults, auth, request log), `faults`, `log`, `seed`, `jobs` (background bulk jobs), `admin`,
//! `auth`, `reply`, `ordered` (records in creation order) and `util`. roster's tap and
//! target never import this crate, and it imports nothing from roster.

// Handlers return a finished HTTP answer as their error: built once per failed request, so its
// size does not matter.
#![allow(clippy::result_large_err)]

mod admin;
mod appcues;
mod auth;
mod faults;
mod guru;
mod jobs;
mod layer;
mod log;
mod ordered;
mod reply;
mod scim;
mod seed;
mod server;
mod state;
mod userflow;
mod userguiding;
mod userpilot;
mod util;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use faults::{
    FailRule, FaultAnswer, FaultHandle, FaultSettings, FaultsView, RateLimit, UserGuidingBlock,
    VendorFaults,
};
pub use log::{RequestLogEntry, Stats};

use state::Shared;

/// The default port of the `roster-sandbox` binary; `samples/` point at it.
pub const DEFAULT_PORT: u16 = 8787;

/// Errors of the sandbox's library API.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The listening socket could not be bound.
    #[error("cannot bind the sandbox to 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The background thread or its runtime could not be started.
    #[error("cannot start the sandbox's background runtime: {0}")]
    Runtime(String),
    /// A rate like `50/s` or `600/min` could not be parsed.
    #[error(
        "invalid rate limit '{0}': expected N/s, N/min or N/h, optionally followed by ,burst=B and ,retry_after=true|false"
    )]
    InvalidRate(String),
    /// A fault setting was out of range.
    #[error("invalid fault setting: {0}")]
    InvalidFault(String),
    /// A vendor name was not one of the seven.
    #[error(
        "unknown vendor '{0}': expected one of userguiding, userflow, userpilot, appcues, guru, guru_scim, scim"
    )]
    UnknownVendor(String),
}

/// The vendors the sandbox emulates, with the `vendor` names roster's configs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// UserGuiding: write-only identify.
    #[serde(rename = "userguiding")]
    UserGuiding,
    /// Userflow: users, groups, memberships, events.
    Userflow,
    /// Userpilot: realtime identify/track and bulk jobs.
    Userpilot,
    /// Appcues v2: profiles, events, imports, segments.
    Appcues,
    /// Guru REST: members and groups.
    Guru,
    /// Guru SCIM 2.0.
    GuruScim,
    /// A generic SCIM 2.0 service provider.
    Scim,
}

impl Vendor {
    /// All seven, in a stable order.
    pub const ALL: [Vendor; 7] = [
        Vendor::UserGuiding,
        Vendor::Userflow,
        Vendor::Userpilot,
        Vendor::Appcues,
        Vendor::Guru,
        Vendor::GuruScim,
        Vendor::Scim,
    ];

    /// The `vendor` config name.
    pub fn name(self) -> &'static str {
        match self {
            Vendor::UserGuiding => "userguiding",
            Vendor::Userflow => "userflow",
            Vendor::Userpilot => "userpilot",
            Vendor::Appcues => "appcues",
            Vendor::Guru => "guru",
            Vendor::GuruScim => "guru_scim",
            Vendor::Scim => "scim",
        }
    }

    /// The path prefix this vendor is served under; `base_url` is the origin plus this.
    pub fn prefix(self) -> &'static str {
        match self {
            Vendor::UserGuiding => "/userguiding/v1",
            Vendor::Userflow => "/userflow",
            Vendor::Userpilot => "/userpilot",
            Vendor::Appcues => "/appcues",
            Vendor::Guru => "/guru/api/v1",
            Vendor::GuruScim => "/guru/api/scim/v2",
            Vendor::Scim => "/scim/v2",
        }
    }

    /// Parses a `vendor` config name.
    pub fn from_name(name: &str) -> Result<Vendor, SandboxError> {
        Vendor::ALL
            .into_iter()
            .find(|v| v.name() == name)
            .ok_or_else(|| SandboxError::UnknownVendor(name.to_owned()))
    }

    /// The vendor whose prefix `path` starts with, if any.
    pub(crate) fn from_path(path: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| {
            let p = v.prefix();
            path.starts_with(p) && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        })
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Vendor {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vendor::from_name(s)
    }
}

/// The fixed credentials each emulated vendor accepts. The defaults are documented in
/// `docs/sandbox.md` and used by `samples/`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credentials {
    /// UserGuiding `Authorization: Bearer <key>`.
    pub userguiding_api_key: String,
    /// Userflow `Authorization: Bearer <key>`.
    pub userflow_api_key: String,
    /// Userpilot `Authorization: Token <key>`.
    pub userpilot_api_key: String,
    /// Appcues account id (the `{account_id}` in every path).
    pub appcues_account_id: String,
    /// Appcues Basic user.
    pub appcues_api_key: String,
    /// Appcues Basic password.
    pub appcues_api_secret: String,
    /// Guru REST Basic user: the admin's email.
    pub guru_username: String,
    /// Guru REST Basic password: the user token.
    pub guru_api_token: String,
    /// Guru SCIM username (Basic user, or the part before `:` in Bearer).
    pub guru_scim_username: String,
    /// Guru SCIM token.
    pub guru_scim_token: String,
    /// Generic SCIM Bearer token.
    pub scim_bearer_token: String,
    /// Generic SCIM Basic user (accepted besides the Bearer token).
    pub scim_username: String,
    /// Generic SCIM Basic password.
    pub scim_password: String,
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            userguiding_api_key: "sandbox-userguiding-key".into(),
            userflow_api_key: "sandbox-userflow-key".into(),
            userpilot_api_key: "sandbox-userpilot-key".into(),
            appcues_account_id: "10001".into(),
            appcues_api_key: "sandbox-appcues-key".into(),
            appcues_api_secret: "sandbox-appcues-secret".into(),
            guru_username: "admin@sandbox.example".into(),
            guru_api_token: "sandbox-guru-token".into(),
            guru_scim_username: "sandbox-guru-scim".into(),
            guru_scim_token: "sandbox-guru-scim-token".into(),
            scim_bearer_token: "sandbox-scim-token".into(),
            scim_username: "scim-admin".into(),
            scim_password: "sandbox-scim-password".into(),
        }
    }
}

/// What to seed: the same generated people appear in every listable vendor.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeedSpec {
    /// RNG seed; the same seed gives byte-identical data.
    pub seed: u64,
    /// People per listable vendor.
    pub users: usize,
    /// Groups per listable vendor.
    pub groups: usize,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            seed: 1,
            users: DEFAULT_USERS,
            groups: DEFAULT_GROUPS,
        }
    }
}

/// Default seeded people: enough for several pages everywhere.
pub const DEFAULT_USERS: usize = 100;
/// Default seeded groups.
pub const DEFAULT_GROUPS: usize = 8;
/// Guru's page size, chosen by the server ("50" in developer.getguru.com's paging example).
pub const DEFAULT_GURU_PAGE_SIZE: usize = 50;
/// How long a Guru page token stays valid (Guru does not document a lifetime).
pub const DEFAULT_GURU_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// The SCIM server-side page cap (RFC 7644 §3.4.2.4 lets servers cap `count` silently).
pub const DEFAULT_SCIM_PAGE_CAP: usize = 100;
/// SCIM `count` when the client sends none (Guru's documented default, vendors.md §3).
pub const DEFAULT_SCIM_COUNT: usize = 20;
/// Request-log ring size: bounded so million-record benchmarks stay flat.
pub const DEFAULT_LOG_CAPACITY: usize = 10_000;
/// Bulk-job speed in rows per second (fast by default so tests finish; Userpilot documents
/// ~1,200 rows/min, which `--job-rows-per-sec 20` reproduces).
pub const DEFAULT_JOB_ROWS_PER_SEC: u64 = 50_000;
/// Time a job spends in each status before moving on.
pub const DEFAULT_JOB_STEP: Duration = Duration::from_millis(25);

/// Everything the sandbox is configured with (the builder and the binary's flags fill it).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The initial seed.
    pub seed: SeedSpec,
    /// Port on 127.0.0.1 (0 = any free port).
    pub port: u16,
    /// Credentials per vendor.
    pub credentials: Credentials,
    /// Guru REST page size.
    pub guru_page_size: usize,
    /// Guru page-token lifetime.
    pub guru_token_ttl: Duration,
    /// Guru page tokens carry a position ("skip the first n") instead of the last key served
    /// ("after this email"): Guru's tokens are opaque, so this is the harshest plausible
    /// server, where members removed during a listing shift the rest past the token.
    pub guru_offset_tokens: bool,
    /// SCIM server-side page cap.
    pub scim_page_cap: usize,
    /// SCIM default `count`.
    pub scim_default_count: usize,
    /// Serve SCIM numbers and booleans as strings (`"True"`, `"5"`), a quirk the tap tolerates.
    pub scim_stringly: bool,
    /// Answer successful SCIM PATCHes with 204 and no body (RFC 7644 allows either).
    pub scim_patch_no_content: bool,
    /// SCIM PATCH is supported (advertised in the ServiceProviderConfig); off, PATCH answers
    /// 501 and clients must GET, merge and PUT.
    pub scim_patch: bool,
    /// SCIM filters are supported (advertised); off, a `filter` answers 400 `invalidFilter`.
    pub scim_filter: bool,
    /// At most this many member values per SCIM PATCH (AWS IAM Identity Center allows 100);
    /// more answer 413.
    pub scim_max_patch_members: Option<usize>,
    /// Request-log ring size.
    pub log_capacity: usize,
    /// Bulk-job rows processed per second.
    pub job_rows_per_sec: u64,
    /// Time a bulk job spends in each status.
    pub job_step: Duration,
    /// Appcues POST body limit (seed: 20 MB).
    pub appcues_body_limit: usize,
    /// Appcues multipart file limit (seed: 200 MB).
    pub appcues_file_limit: usize,
    /// Userpilot bulk rows per request (vendor docs: 10,000).
    pub userpilot_max_rows: usize,
    /// Userpilot bulk body limit (vendor docs: 50 MB).
    pub userpilot_body_limit: usize,
    /// Faults active from the start (and restored by `reset`).
    pub faults: faults::FaultSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            seed: SeedSpec::default(),
            port: 0,
            credentials: Credentials::default(),
            guru_page_size: DEFAULT_GURU_PAGE_SIZE,
            guru_token_ttl: DEFAULT_GURU_TOKEN_TTL,
            guru_offset_tokens: false,
            scim_page_cap: DEFAULT_SCIM_PAGE_CAP,
            scim_default_count: DEFAULT_SCIM_COUNT,
            scim_stringly: false,
            scim_patch_no_content: false,
            scim_patch: true,
            scim_filter: true,
            scim_max_patch_members: None,
            log_capacity: DEFAULT_LOG_CAPACITY,
            job_rows_per_sec: DEFAULT_JOB_ROWS_PER_SEC,
            job_step: DEFAULT_JOB_STEP,
            appcues_body_limit: 20 * 1024 * 1024,
            appcues_file_limit: 200 * 1024 * 1024,
            userpilot_max_rows: 10_000,
            userpilot_body_limit: 50 * 1024 * 1024,
            faults: faults::FaultSettings::default(),
        }
    }
}

/// Builds a [`Sandbox`]; every option has a documented default.
#[derive(Debug, Default, Clone)]
#[must_use]
pub struct SandboxBuilder {
    settings: Settings,
    errors: Vec<String>,
}

impl SandboxBuilder {
    /// RNG seed for the generated data.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed.seed = seed;
        self
    }
    /// Seeded people per listable vendor.
    pub fn users(mut self, n: usize) -> Self {
        self.settings.seed.users = n;
        self
    }
    /// Seeded groups per listable vendor.
    pub fn groups(mut self, n: usize) -> Self {
        self.settings.seed.groups = n;
        self
    }
    /// Port on 127.0.0.1 (default 0: any free port).
    pub fn port(mut self, port: u16) -> Self {
        self.settings.port = port;
        self
    }
    /// Replace the accepted credentials.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.settings.credentials = credentials;
        self
    }
    /// Guru REST page size (default 50).
    pub fn guru_page_size(mut self, n: usize) -> Self {
        self.settings.guru_page_size = n.max(1);
        self
    }
    /// Guru page-token lifetime (default 1 h).
    pub fn guru_token_ttl(mut self, ttl: Duration) -> Self {
        self.settings.guru_token_ttl = ttl;
        self
    }
    /// Guru page tokens by position rather than by last key (default off); see
    /// [`Settings::guru_offset_tokens`].
    pub fn guru_offset_tokens(mut self, on: bool) -> Self {
        self.settings.guru_offset_tokens = on;
        self
    }
    /// SCIM server-side page cap (default 100).
    pub fn scim_page_cap(mut self, n: usize) -> Self {
        self.settings.scim_page_cap = n.max(1);
        self
    }
    /// SCIM default `count` (default 20).
    pub fn scim_default_count(mut self, n: usize) -> Self {
        self.settings.scim_default_count = n;
        self
    }
    /// Serve SCIM numbers and booleans as strings.
    pub fn scim_stringly(mut self, on: bool) -> Self {
        self.settings.scim_stringly = on;
        self
    }
    /// Answer SCIM PATCH with 204 and no body.
    pub fn scim_patch_no_content(mut self, on: bool) -> Self {
        self.settings.scim_patch_no_content = on;
        self
    }
    /// SCIM PATCH supported (default true); off, PATCH answers 501.
    pub fn scim_patch(mut self, on: bool) -> Self {
        self.settings.scim_patch = on;
        self
    }
    /// SCIM filters supported (default true); off, a filter answers 400 `invalidFilter`.
    pub fn scim_filter(mut self, on: bool) -> Self {
        self.settings.scim_filter = on;
        self
    }
    /// At most `n` member values per SCIM PATCH; more answer 413 (default: no cap).
    pub fn scim_max_patch_members(mut self, n: usize) -> Self {
        self.settings.scim_max_patch_members = Some(n.max(1));
        self
    }
    /// Request-log ring size (default 10,000).
    pub fn log_capacity(mut self, n: usize) -> Self {
        self.settings.log_capacity = n.max(1);
        self
    }
    /// Bulk-job rows per second (default 50,000).
    pub fn job_rows_per_sec(mut self, n: u64) -> Self {
        self.settings.job_rows_per_sec = n.max(1);
        self
    }
    /// Time a bulk job spends in each status (default 25 ms).
    pub fn job_step(mut self, d: Duration) -> Self {
        self.settings.job_step = d;
        self
    }
    /// Appcues import body limit (default 20 MB).
    pub fn appcues_body_limit(mut self, bytes: usize) -> Self {
        self.settings.appcues_body_limit = bytes;
        self
    }
    /// Userpilot bulk rows per request (default 10,000).
    pub fn userpilot_max_rows(mut self, n: usize) -> Self {
        self.settings.userpilot_max_rows = n;
        self
    }
    /// A token-bucket rate limit for one vendor, e.g. `"50/s"` or `"600/min,burst=20"`.
    pub fn rate_limit(mut self, vendor: Vendor, rate: &str) -> Self {
        match RateLimit::parse(rate) {
            Ok(r) => self.settings.faults.vendor_mut(vendor).rate_limit = Some(r),
            Err(e) => self.errors.push(e.to_string()),
        }
        self
    }
    /// A rate limit with an explicit `Retry-After` choice.
    pub fn rate_limit_with(mut self, vendor: Vendor, limit: RateLimit) -> Self {
        self.settings.faults.vendor_mut(vendor).rate_limit = Some(limit);
        self
    }
    /// UserGuiding's documented rule: 50 requests per 10 s, then a block (60 s by default).
    pub fn userguiding_block(mut self, block: Option<UserGuidingBlock>) -> Self {
        self.settings.faults.userguiding_block = block;
        self
    }
    /// Each vendor's documented limits at once (Userpilot 600/min and 1 delete per 2 s,
    /// Appcues 60/s, UserGuiding 50 per 10 s then a 60 s block).
    pub fn realistic_limits(mut self) -> Self {
        self.settings.faults.apply_realistic();
        self
    }
    /// A seeded fraction (0..=1) of answers that are 500 or 503; `None` = every vendor.
    pub fn error_rate(mut self, vendor: Option<Vendor>, rate: f64) -> Self {
        self.settings
            .faults
            .for_each(vendor, |f| f.error_rate = rate);
        self
    }
    /// A seeded fraction of requests whose connection is dropped without an answer.
    pub fn drop_rate(mut self, vendor: Option<Vendor>, rate: f64) -> Self {
        self.settings
            .faults
            .for_each(vendor, |f| f.drop_rate = rate);
        self
    }
    /// A seeded fraction of requests the vendor applies before the answer is lost (500, 503
    /// or a dropped connection): the case that makes a blind retry duplicate a write.
    pub fn apply_then_fail_rate(mut self, vendor: Option<Vendor>, rate: f64) -> Self {
        self.settings
            .faults
            .for_each(vendor, |f| f.apply_then_fail_rate = rate);
        self
    }
    /// Latency added to every request.
    pub fn latency(mut self, vendor: Option<Vendor>, latency: Duration) -> Self {
        self.settings
            .faults
            .for_each(vendor, |f| f.latency_ms = latency.as_millis() as u64);
        self
    }
    /// Make every bulk job (Userpilot, Appcues) end `failed`.
    pub fn fail_jobs(mut self, on: bool) -> Self {
        self.settings.faults.fail_jobs = on;
        self
    }
    /// The whole settings struct, for callers that fill it themselves (the binary).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    fn check(&self) -> Result<(), SandboxError> {
        if let Some(e) = self.errors.first() {
            return Err(SandboxError::InvalidFault(e.clone()));
        }
        self.settings.faults.validate()
    }

    /// Binds 127.0.0.1 and serves in the current tokio runtime.
    pub async fn spawn(self) -> Result<Sandbox, SandboxError> {
        self.check()?;
        let shared = Shared::new(self.settings);
        let running = server::spawn(shared.clone()).await?;
        Ok(Sandbox {
            shared,
            running: Some(running),
        })
    }

    /// Serves on a thread with its own runtime: usable from plain `#[test]` functions.
    pub fn start_background(self) -> Result<Sandbox, SandboxError> {
        self.check()?;
        let shared = Shared::new(self.settings);
        let running = server::start_background(shared.clone())?;
        Ok(Sandbox {
            shared,
            running: Some(running),
        })
    }
}

/// A running sandbox. Dropping it shuts the server down.
#[derive(Debug)]
pub struct Sandbox {
    shared: Arc<Shared>,
    running: Option<server::Running>,
}

impl Sandbox {
    /// A builder with the defaults (seed 1, 100 users, 8 groups, no faults, any free port).
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.running
            .as_ref()
            .map(|r| r.addr)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The vendor's `base_url`, e.g. `http://127.0.0.1:41234/userflow`.
    pub fn base_url(&self, vendor: Vendor) -> String {
        format!("{}{}", self.origin(), vendor.prefix())
    }

    /// A ready roster config for the vendor: `vendor`, `base_url` and its credential keys.
    pub fn config(&self, vendor: Vendor) -> Value {
        vendor_config(
            vendor,
            &self.base_url(vendor),
            &self.shared.settings.credentials,
        )
    }

    /// Exactly what the vendor holds now (the same JSON as `GET /_sandbox/dump/{vendor}`).
    pub fn dump(&self, vendor: Vendor) -> Value {
        self.shared.dump(vendor)
    }

    /// The request log, oldest first (bounded: the newest `log_capacity` entries).
    pub fn requests(&self) -> Vec<RequestLogEntry> {
        self.shared.log.entries(None, None)
    }

    /// Exact request counters that survive the ring buffer's wrap-around.
    pub fn stats(&self) -> Stats {
        self.shared.log.stats()
    }

    /// Clears the request log and its counters.
    pub fn clear_requests(&self) {
        self.shared.log.clear();
    }

    /// Inject and clear faults at runtime (the same effects as `/_sandbox/faults`).
    pub fn faults(&self) -> FaultHandle {
        FaultHandle::new(self.shared.clone())
    }

    /// Back to the start: the initial seed's data, no jobs, an empty log, the initial faults.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Replace every vendor's data with a new seed (write-only vendors become empty).
    pub fn reseed(&self, spec: SeedSpec) {
        self.shared.reseed(spec);
    }

    /// Deletes these users (Userflow and SCIM ids, Guru emails), as the vendor's own delete
    /// does, right after the `after_pages`-th page of `GET path` (full path, prefix included)
    /// is served: a listing that changes under a running tap.
    pub fn delete_after_pages(&self, vendor: Vendor, path: &str, after_pages: u32, ids: &[&str]) {
        self.shared.deletes.lock().push(state::DeleteAfter {
            vendor,
            path: path.to_owned(),
            after_pages,
            served: 0,
            ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        });
    }

    /// Deletes one user now (Userflow and SCIM ids, Guru emails) as the vendor's delete does;
    /// false when it is absent.
    pub fn delete_user(&self, vendor: Vendor, id: &str) -> bool {
        self.shared.delete_user(vendor, id)
    }

    /// Makes every Guru page token issued so far invalid (the tap's "expired token" path).
    pub fn expire_guru_tokens(&self) {
        self.shared.expire_guru_tokens();
    }

    /// Stops the server; in-flight requests get a short grace period.
    pub fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }

    /// Stops the server and waits until every connection is closed.
    pub async fn shutdown_gracefully(mut self) {
        if let Some(r) = self.running.take() {
            r.stop_and_wait().await;
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

/// A roster config for `vendor` at `base_url` with the sandbox's credentials.
pub fn vendor_config(vendor: Vendor, base_url: &str, c: &Credentials) -> Value {
    let mut v = json!({"vendor": vendor.name(), "base_url": base_url});
    let extra = match vendor {
        Vendor::UserGuiding => json!({"api_key": c.userguiding_api_key}),
        Vendor::Userflow => json!({"api_key": c.userflow_api_key}),
        Vendor::Userpilot => json!({"api_key": c.userpilot_api_key}),
        Vendor::Appcues => json!({
            "account_id": c.appcues_account_id,
            "api_key": c.appcues_api_key,
            "api_secret": c.appcues_api_secret,
        }),
        Vendor::Guru => json!({"username": c.guru_username, "api_token": c.guru_api_token}),
        Vendor::GuruScim => {
            json!({"scim_username": c.guru_scim_username, "scim_token": c.guru_scim_token})
        }
        Vendor::Scim => json!({"bearer_token": c.scim_bearer_token}),
    };
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
    }
    v
}
