//! Userpilot: write-only. `POST /v1/identify` (202), `/v1/companies/identify`, `/v1/track`,
//! bulk identify jobs (≤ 10,000 rows, one job at a time), scheduled deletes
//! (`DELETE /v1/users`, 1 request per 2 s). `Authorization: Token <key>` plus
//! `X-API-Version: 2020-09-22`. Identify and track: 600 requests/min. US and EU hosts.

pub mod bulk;
pub mod config;
pub mod write;

use std::sync::Arc;

use super::{Vendor, VendorSpec};
use crate::config::Mode;
use crate::sink::{Sink, SinkContext, SinkError};

/// The `X-API-Version` header every request carries.
pub const API_VERSION: &str = "2020-09-22";

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "userpilot",
        title: "Userpilot",
        reads_summary: "",
        writes_summary: "writes users and companies with identify upserts, events, and bulk identify jobs",
        base_url_us: Some("https://analytex.userpilot.io"),
        base_url_eu: Some("https://analytex-eu.userpilot.io"),
        settings: config::SETTINGS,
        reads: &[],
        writes: &["users", "groups", "memberships", "events"],
        bulk: true,
        write_rate: Some(write::REQUESTS_PER_SECOND),
    },
    source: None,
    sink: Some(sink),
};

/// The writer for the configured mode: bulk identify jobs, or real-time identify calls.
fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    match ctx.target.mode {
        Mode::Bulk => bulk::sink(ctx),
        Mode::Realtime => write::sink(ctx),
    }
}
