//! The writer compliance suite: the same checks, generated for every vendor (and mode) the
//! target writes, against roster-sandbox. Each vendor's module (`compliance::<vendor>::…`) gets:
//!
//! - `upsert_round_trip`: the vendor-neutral [`Model`](crate::support::holdings::Model) written
//!   twice lands exactly (users, groups, memberships, with their fields), the second run
//!   duplicating nothing, per [`actual`](crate::support::holdings::actual);
//! - `state_follows_writes`: every record a printed STATE covers is already held, checked the
//!   moment the state comes out, through a slow vendor;
//! - `rejects_name_line_stream_and_field`: records no vendor can take are rejected alone, to the
//!   replayable reject file, with their line, stream and the missing field, and the rest lands;
//! - `meltano_test_stream_passes`: Meltano's loader test;
//!
//! and, where the vendor takes them (listed per vendor in [`compliance!`] below):
//!
//! - `fault_matrix`: the fault-storm row of [`crate::faults`] (every fault class, exact holdings);
//! - `events_429_storm`: a 429 storm delivers every record, events included, exactly once;
//! - `lost_answers_duplicate_nothing`: 5xx, dropped connections and answers lost after the
//!   vendor applied the write (`apply_then_fail`) lose nothing, and an event that may have been
//!   recorded is rejected with a replay hint rather than sent twice.
//!
//! A check only one vendor makes stays in that vendor's `target_<vendor>.rs`.
//!
//! To add a writer: a line in [`compliance!`] below, with its [`Writer`] and the extra checks it
//! takes; [`crate::support::holdings::actual`] must read its sandbox dump.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checks;

use std::path::{Path, PathBuf};

use roster_sandbox::{Sandbox, Vendor};
use serde_json::{Value, json};

/// A writer under test: a vendor in one mode, and what its runs are told.
#[derive(Debug, Clone)]
pub struct Writer {
    pub vendor: Vendor,
    /// `realtime` or `bulk`.
    pub mode: &'static str,
    /// Settings over the sandbox's config in every run of the suite.
    pub settings: Value,
    /// For `events_429_storm`: the sandbox's token bucket, and the client's settings.
    pub storm: Option<(&'static str, Value)>,
}

impl Writer {
    pub fn realtime(vendor: Vendor) -> Self {
        Self {
            vendor,
            mode: "realtime",
            settings: json!({}),
            storm: None,
        }
    }

    pub fn bulk(vendor: Vendor) -> Self {
        Self {
            mode: "bulk",
            ..Self::realtime(vendor)
        }
    }

    /// With `settings` over the sandbox's config.
    pub fn settings(mut self, settings: Value) -> Self {
        self.settings = settings;
        self
    }

    /// With the knobs of `events_429_storm`.
    pub fn storm(mut self, bucket: &'static str, settings: Value) -> Self {
        self.storm = Some((bucket, settings));
        self
    }

    /// The config for a run at `sb`: the sandbox's, the mode, [`Writer::settings`], then
    /// `extra`, with the reject file in `dir`; written to `dir/config.json`.
    pub fn config(&self, sb: &Sandbox, dir: &Path, extra: Value) -> PathBuf {
        let mut settings = json!({"mode": self.mode});
        for over in [&self.settings, &extra] {
            for (k, v) in over.as_object().unwrap() {
                settings[k] = v.clone();
            }
        }
        crate::support::target::config(sb, self.vendor, dir, settings)
    }
}

/// One module of tests per writer: the common checks and the listed extras (each a function of
/// [`checks`] taking the [`Writer`]).
macro_rules! compliance {
    ($($name:ident: $writer:expr => [$($extra:ident),* $(,)?];)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::{Writer, checks};
            use roster_sandbox::Vendor;
            #[allow(unused_imports)]
            use serde_json::json;

            fn writer() -> Writer {
                $writer
            }

            #[test]
            fn upsert_round_trip() {
                checks::upsert_round_trip(&writer());
            }

            #[test]
            fn state_follows_writes() {
                checks::state_follows_writes(&writer());
            }

            #[test]
            fn rejects_name_line_stream_and_field() {
                checks::rejects_name_line_stream_and_field(&writer());
            }

            #[test]
            fn meltano_test_stream_passes() {
                checks::meltano_test_stream_passes(&writer());
            }

            $(
                #[test]
                fn $extra() {
                    checks::$extra(&writer());
                }
            )*
        }
    )*};
}

compliance! {
    userflow: Writer::realtime(Vendor::Userflow)
        // Userflow documents no rate: none is configured, and each 429 is retried at once.
        .storm("200/s,burst=5", json!({"max_retries": 50}))
        => [fault_matrix, events_429_storm, lost_answers_duplicate_nothing];
    // UserGuiding's default pace (4.8/s) would make these runs take minutes; its pace is
    // checked in target_userguiding.rs and faults.rs.
    userguiding: Writer::realtime(Vendor::UserGuiding).settings(json!({"requests_per_second": 0}))
        => [fault_matrix];
    userpilot: Writer::realtime(Vendor::Userpilot).settings(json!({"requests_per_second": 0}))
        .storm("200/s,burst=5", json!({"max_retries": 50}))
        => [fault_matrix, events_429_storm, lost_answers_duplicate_nothing];
    // Appcues answers 429 with Retry-After; the account's real limit is below what the client
    // is told (another integration shares it).
    appcues: Writer::realtime(Vendor::Appcues)
        .storm("100/s,burst=5", json!({"max_retries": 50, "requests_per_second": 300}))
        => [fault_matrix, events_429_storm, lost_answers_duplicate_nothing];
    guru: Writer::realtime(Vendor::Guru) => [fault_matrix];
    guru_scim: Writer::realtime(Vendor::GuruScim) => [fault_matrix];
    scim: Writer::realtime(Vendor::Scim) => [fault_matrix];
    appcues_bulk: Writer::bulk(Vendor::Appcues) => [];
    userpilot_bulk: Writer::bulk(Vendor::Userpilot).settings(json!({"requests_per_second": 0}))
        => [];
}
