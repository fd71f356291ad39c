//! UserGuiding: write-only. `POST /v1/identify` upserts a user (`userId` + scalar `attributes`),
//! with the company nested in the same call (`company.companyId` + `attributes`). No list API,
//! no delete. Rate limit (help centre): 50 requests per 10 s, then a 60 s block with 429.

pub mod config;
pub mod wire;
pub mod write;

use super::{Vendor, VendorSpec};

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "userguiding",
        title: "UserGuiding",
        reads_summary: "",
        writes_summary: "writes users with identify upserts, each user's company nested in the same call",
        base_url_us: Some("https://api.userguiding.com/v1"),
        base_url_eu: None,
        settings: config::SETTINGS,
        reads: &[],
        writes: &["users", "groups", "memberships"],
        bulk: false,
        write_rate: Some(write::REQUESTS_PER_SECOND),
    },
    source: None,
    sink: Some(write::sink),
};
