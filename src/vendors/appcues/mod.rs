//! Appcues (public API v2, paths under `/v2/accounts/{account_id}`): profile PATCH upserts for
//! users and groups, group membership, events, profile deletes, NDJSON/CSV import jobs
//! (`/import/profiles`; the seed's `/import/users` also works) polled at `/jobs/{id}`, and
//! segments. Basic `api_key:api_secret`. Account limit 60 requests/s, with `Retry-After`.

pub mod bulk;
pub mod config;
pub mod segments;
pub mod write;

use std::sync::Arc;

use super::{Vendor, VendorSpec};
use crate::config::Mode;
use crate::sink::{Sink, SinkContext, SinkError};

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "appcues",
        title: "Appcues",
        reads_summary: "",
        writes_summary: "writes user and group profiles, memberships, events, segments, and NDJSON bulk import jobs",
        base_url_us: Some("https://api.appcues.com"),
        base_url_eu: Some("https://api.eu.appcues.com"),
        settings: config::SETTINGS,
        reads: &[],
        writes: &["users", "groups", "memberships", "events", "segments"],
        bulk: true,
        write_rate: Some(write::REQUESTS_PER_SECOND),
    },
    source: None,
    sink: Some(sink),
};

/// The writer for the configured mode: `bulk` imports user profiles as NDJSON jobs; segments go
/// through upload jobs in both modes; everything else is written in real time.
fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    match ctx.target.mode {
        Mode::Bulk => bulk::sink(ctx),
        Mode::Realtime => write::sink(ctx),
    }
}
