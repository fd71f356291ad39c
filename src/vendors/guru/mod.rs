//! Guru REST (`/api/v1`): members keyed by email (list, invite with a comma-separated emails
//! string, remove), groups (list, create), group members (list, add ≤ 100 emails at once,
//! all-or-nothing; remove one). Lists are bare JSON arrays paged by a `Link` header
//! (`rel="next-page"`, `?token=`). Basic `email:user_token`.

pub mod config;
pub mod group_map;
mod groups;
mod members;
pub mod read;
pub mod wire;
pub mod write;

use super::{Vendor, VendorSpec};

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "guru",
        title: "Guru (REST)",
        reads_summary: "reads team members (keyed by email), groups and group members with Link-header paging",
        writes_summary: "writes team members (invited by email), groups and group members",
        base_url_us: Some("https://api.getguru.com/api/v1"),
        base_url_eu: None,
        settings: config::SETTINGS,
        reads: &["users", "groups", "memberships"],
        writes: &["users", "groups", "memberships"],
        bulk: false,
        write_rate: Some(write::REQUESTS_PER_SECOND),
    },
    source: Some(read::source),
    sink: Some(write::sink),
};
