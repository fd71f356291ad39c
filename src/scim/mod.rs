//! SCIM 2.0 client pieces shared by Guru SCIM and any SCIM service provider (RFC 7643/7644).
//!
//! Writing (the target), in the standard shapes only (scim.md §0, §6):
//! - [`filter`]: `attr eq "value"` lookups, JSON-escaped and percent-encoded;
//! - [`patch`]: PatchOp messages, membership deltas cut into chunks (removals first) and halved
//!   when refused;
//! - [`error`]: the SCIM Error body (`status`, `scimType`, `detail`), read leniently.
//!
//! The target's SCIM writer (`crate::vendors::scim::writer`) is built from these pieces; it
//! lives with the vendors because this module sits below them.

pub mod error;
pub mod filter;
pub mod patch;
