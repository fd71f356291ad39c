//! Guru SCIM 2.0 (`/api/scim/v2`; the seed's `/scim/v2` is older): `/Users` and `/Groups` with
//! Guru's SCIM token alone as a Bearer token (Guru's API document), or a SCIM username and token
//! sent as Basic (Okta, Nango) or as Bearer `username:token` (OneLogin). Everything else is the shared SCIM client in `crate::scim`.

pub mod config;
pub mod read;
pub mod write;

use super::{Vendor, VendorSpec};

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "guru_scim",
        title: "Guru SCIM",
        reads_summary: "reads users, groups and memberships over SCIM 2.0 with Guru's SCIM credentials",
        writes_summary: "writes users, groups and memberships over SCIM 2.0 with Guru's SCIM credentials",
        base_url_us: Some("https://api.getguru.com/api/scim/v2"),
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
