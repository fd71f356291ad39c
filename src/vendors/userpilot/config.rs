//! Userpilot settings.

use serde::Deserialize;

use crate::config::{Applies, Kind, Secret, Setting};

/// Userpilot's own keys.
pub const SETTINGS: &[Setting] = &[
    Setting::new(
        "api_key",
        Kind::String,
        "Userpilot API key (Settings → Environment; not the app token), sent as `Token <key>`",
    )
    .secret()
    .required(),
    Setting::new(
        "bulk_max_rows",
        Kind::Integer,
        "mode: bulk: rows per bulk identify request at most (Userpilot takes up to 10,000)",
    )
    .default("10000")
    .range(1.0, 10_000_000.0)
    .only(Applies::Target),
    Setting::new(
        "bulk_max_bytes",
        Kind::Integer,
        "mode: bulk: bytes per bulk identify request at most (Userpilot takes up to 50 MB)",
    )
    .default("48750000")
    .range(1024.0, 1_000_000_000.0)
    .only(Applies::Target),
    Setting::new(
        "bulk_job_timeout_seconds",
        Kind::Number,
        "mode: bulk: longest wait for one bulk job (Userpilot processes ~1,200 rows/min); past it the run stops and a rerun from the last state sends the job's records again",
    )
    .default("3600")
    .range(1.0, 604_800.0)
    .only(Applies::Target),
];

/// Typed Userpilot config.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// The API key.
    pub api_key: Secret,
}
