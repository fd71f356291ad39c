//! SCIM 2.0 client pieces shared by Guru SCIM and any SCIM service provider (RFC 7643/7644).
//!
//! Reading (the tap), lenient about what servers really send (see scim.md §0 and §11):
//! - [`types`]: resources, looked up case-insensitively, with `"True"`/`"False"` booleans,
//!   numbers as strings and missing `members`, turned into `users`, `groups` and `memberships`
//!   records;
//! - [`list`]: one page of `/Users` or `/Groups` by `startIndex`/`count`, advancing by what
//!   came back and stopping at `totalResults` or an empty page; [`list::Dedupe`] by id;
//! - [`spc`]: `/ServiceProviderConfig`, read once per run and never trusted blindly.
//!
//! The `ListResponse` envelope itself (`Resources` or `resources`, numbers as strings) is decoded
//! by the HTTP engine's pagination helper, [`crate::http::paginate::scim`].
//!
//! Writing (the target), in the standard shapes only (scim.md §0, §6):
//! - [`filter`]: `attr eq "value"` lookups, JSON-escaped and percent-encoded;
//! - [`patch`]: PatchOp messages, membership deltas cut into chunks (removals first) and halved
//!   when refused;
//! - [`error`]: the SCIM Error body (`status`, `scimType`, `detail`), read leniently.
//!
//! The tap's SCIM source (`crate::vendors::scim::read`) and the target's SCIM writer
//! (`crate::vendors::scim::write`) are built from these pieces; they live with the vendors
//! because this module sits below them.

pub mod dedupe;
pub mod error;
pub mod filter;
pub mod list;
pub mod patch;
pub mod spc;
pub mod types;

pub use spc::ServiceProviderConfig;

/// The `Accept` header SCIM requests send: SCIM's media type first, plain JSON as a fallback.
pub const ACCEPT: &str = "application/scim+json, application/json";
