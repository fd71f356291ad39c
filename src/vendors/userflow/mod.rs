//! Userflow: upserts with merge semantics (`POST /users`, `POST /groups` with the id in the
//! body; omitted attributes are kept, `null` clears), memberships through the user upsert,
//! events, deletes, and cursor-paged lists (`starting_after`, `has_more`, `limit` ≤ 100,
//! `expand=memberships`). Bearer key plus `Userflow-Version: 2020-01-03`. US and EU hosts.

pub mod config;
pub mod read;
pub mod wire;
pub mod write;

use super::{Vendor, VendorSpec};

/// The `Userflow-Version` header every request carries (the only dated API version).
pub const API_VERSION: &str = "2020-01-03";

/// The registry entry.
pub const SPEC: VendorSpec = VendorSpec {
    vendor: Vendor {
        name: "userflow",
        title: "Userflow",
        reads_summary: "reads users, groups and memberships with cursor paging",
        writes_summary: "writes users, groups, memberships and events as merging upserts",
        base_url_us: Some("https://api.userflow.com"),
        base_url_eu: Some("https://api.eu.userflow.com"),
        settings: config::SETTINGS,
        reads: &["users", "groups", "memberships"],
        writes: &["users", "groups", "memberships", "events"],
        bulk: false,
        write_rate: None,
    },
    source: Some(read::source),
    sink: Some(write::sink),
};
