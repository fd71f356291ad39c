//! The fault-storm matrix: every vendor the target writes, and every vendor the tap reads, under
//! each fault the sandbox can inject: 429 with and without `Retry-After`, bursts of 500 and of
//! 503, a seeded mix of both, added latency, dropped connections, UserGuiding's block rule
//! (shortened by the sandbox flag), and a vendor that is down.
//!
//! For every cell:
//! - **nothing is lost**: what the vendor holds equals the input (target), or the tap's output
//!   equals what the vendor holds (tap), with no record twice;
//! - **retries stay within budget and none is hidden**: every attempt the client counted
//!   reached the sandbox and every failed attempt the sandbox answered was counted by the
//!   client (`--report` JSON against the sandbox's counters); nothing was given up on;
//! - **exit code, summary and state are right**: 0 with every record sent and the last STATE
//!   printed, or, for a vendor that is down, 1 naming the vendor, nothing written, and every
//!   record covered by a printed state in the reject file.
//!
//! Faults are seeded (the sandbox's RNG draws in request order, so a class sees the same number
//! of faults run after run); `ROSTER_ZERO_DELAYS=1` is set except where a delay must be
//! honoured (`Retry-After`, UserGuiding's block, latency). `scripts/reliability.sh` runs the same
//! matrix at full size and tabulates it in RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod listings;
mod tap_matrix;
pub(crate) mod target_matrix;
mod unapplied;

use crate::support::holdings::{Model, actual, count_5xx, expected, s, status_count};
use crate::support::tap;
use crate::support::{self, bin};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use roster::vendors;
use roster_sandbox::{FailRule, RateLimit, Sandbox, SandboxBuilder, UserGuidingBlock, Vendor};
use serde_json::{Value, json};

/// The retry budget every cell runs with (`max_retries`).
const BUDGET: u64 = 8;

// ---------------------------------------------------------------------------------------------
// Fault classes.

/// One column of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A token bucket below the client's pace, answering 429 with `Retry-After`.
    RetryAfter429,
    /// The same bucket answering 429 without `Retry-After`.
    Plain429,
    /// The next three writes answer 500.
    Burst500,
    /// The next three writes answer 503.
    Burst503,
    /// A seeded share of all requests (25% for the target, 40% for the tap) answer 500 or 503.
    Mixed5xx,
    /// 150 ms added to every request.
    Latency,
    /// A seeded 15% of connections dropped without an answer.
    Drops,
    /// UserGuiding's 50-per-10-s rule with the block shortened to 2 s and announced in
    /// `Retry-After`, against a client told to go faster than the rule.
    UserGuidingBlock,
    /// Every request answers 500 or 503.
    Down,
    /// A seeded 15% of requests are applied by the vendor, then answered 500 or 503 or cut
    /// off (`apply_then_fail`): the case where a blind retry duplicates a create.
    LostAnswers,
}

const TARGET_FAULTS: [Fault; 9] = [
    Fault::RetryAfter429,
    Fault::Plain429,
    Fault::Burst500,
    Fault::Burst503,
    Fault::Mixed5xx,
    Fault::Latency,
    Fault::Drops,
    Fault::Down,
    Fault::LostAnswers,
];

impl Fault {
    /// Backoff only slows these down; the others must honour a real delay (a 429 without
    /// `Retry-After` is survived by backing off: with zero delays the budget burns in
    /// milliseconds against a bucket that refills four times a second).
    ///
    /// UserGuiding is the exception: its client pauses a whole minute (the vendor's block)
    /// after a 429 without `Retry-After`, so its plain-429 cell is three such answers in a row
    /// (see [`Fault::sandbox`]) retried without delays; the block itself is the
    /// [`Fault::UserGuidingBlock`] cell.
    fn zero_delays(self, vendor: Vendor) -> bool {
        match self {
            Fault::Plain429 => vendor == Vendor::UserGuiding,
            _ => !matches!(
                self,
                Fault::RetryAfter429 | Fault::Latency | Fault::UserGuidingBlock
            ),
        }
    }

    /// The sandbox for this cell: `seed` fixes the data and the fault draws.
    fn sandbox(
        self,
        vendor: Vendor,
        write_path: (&str, &str),
        base: SandboxBuilder,
        knobs: Knobs,
    ) -> Sandbox {
        let bucket = || RateLimit::parse(knobs.bucket).unwrap();
        let builder = base.seed(knobs.seed).log_capacity(200_000);
        let builder = match self {
            Fault::RetryAfter429 => {
                builder.rate_limit_with(vendor, bucket().with_retry_after(true))
            }
            Fault::Plain429 if vendor == Vendor::UserGuiding => builder,
            Fault::Plain429 => builder.rate_limit_with(vendor, bucket().with_retry_after(false)),
            Fault::Mixed5xx => builder.error_rate(Some(vendor), knobs.mixed_rate),
            Fault::Latency => builder.latency(Some(vendor), Duration::from_millis(150)),
            Fault::Drops => builder.drop_rate(Some(vendor), 0.15),
            Fault::Down => builder.error_rate(Some(vendor), 1.0),
            Fault::LostAnswers => builder.apply_then_fail_rate(Some(vendor), 0.15),
            Fault::UserGuidingBlock => builder.userguiding_block(Some(UserGuidingBlock {
                block_secs: 2.0,
                retry_after: true,
                ..UserGuidingBlock::default()
            })),
            Fault::Burst500 | Fault::Burst503 => builder,
        };
        let sb = builder.start_background().unwrap();
        let status = match self {
            Fault::Burst500 => Some(500),
            Fault::Burst503 => Some(503),
            Fault::Plain429 if vendor == Vendor::UserGuiding => Some(429),
            _ => None,
        };
        if let Some(status) = status {
            let (method, path) = write_path;
            sb.faults()
                .fail_next(FailRule::new(path, 3).status(status).method(method));
        }
        sb
    }
}

/// What a side of the matrix tunes: the sandbox seed (data and fault draws), the share of
/// failures in [`Fault::Mixed5xx`] and the token bucket of the 429 classes.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    seed: u64,
    mixed_rate: f64,
    bucket: &'static str,
}

/// The request a burst of failures is aimed at: each vendor's main write.
fn write_path(vendor: Vendor) -> (&'static str, &'static str) {
    match vendor {
        Vendor::Userflow => ("POST", "/userflow/users"),
        Vendor::UserGuiding => ("POST", "/userguiding/v1/identify"),
        Vendor::Userpilot => ("POST", "/userpilot/v1/identify"),
        Vendor::Appcues => ("PATCH", "/appcues/v2/accounts/10001/users/*"),
        Vendor::Guru => ("POST", "/guru/api/v1/members/invite"),
        Vendor::GuruScim => ("POST", "/guru/api/scim/v2/Users"),
        Vendor::Scim => ("POST", "/scim/v2/Users"),
    }
}

/// The request a tap burst is aimed at: each vendor's user listing.
fn read_path(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Userflow => "/userflow/users",
        Vendor::Guru => "/guru/api/v1/members",
        Vendor::GuruScim => "/guru/api/scim/v2/Users",
        Vendor::Scim => "/scim/v2/Users",
        other => panic!("{other} is not listable"),
    }
}
