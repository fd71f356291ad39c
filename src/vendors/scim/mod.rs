//! Any SCIM 2.0 service provider (RFC 7643/7644) at a configured base URL, with Bearer or Basic
//! auth. The SCIM client itself is shared with Guru SCIM in `crate::scim`.

pub mod config;
mod create;
pub mod directory;
mod members;
pub mod read;
mod update;
pub mod wire;
pub mod write;

use super::{Vendor, VendorSpec};

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "scim",
        title: "SCIM 2.0",
        reads_summary: "reads users, groups and memberships from any SCIM 2.0 service provider",
        writes_summary: "writes users, groups and memberships to any SCIM 2.0 service provider",
        base_url_us: None,
        base_url_eu: None,
        settings: config::SETTINGS,
        reads: &["users", "groups", "memberships"],
        writes: &["users", "groups", "memberships"],
        bulk: false,
        write_rate: None,
    },
    source: Some(read::source),
    sink: Some(write::sink),
};
