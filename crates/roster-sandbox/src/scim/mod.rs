//! SCIM 2.0 (RFC 7643/7644): one implementation served twice, as Guru SCIM
//! (`/guru/api/scim/v2`) and as a generic provider (`/scim/v2`), each with its own store.
//!
//! Lists are ListResponses paged by `startIndex`/`count` with a server-side cap; filters as
//! in [`filter`]; POST answers 409 `uniqueness` for a taken `userName`
//! (case-insensitive); PATCH is all-or-nothing; PUT replaces; DELETE removes a user from every
//! group too. Group members must be existing user ids (Entra's behaviour), so a client that
//! sends emails or externalIds as member values gets a clear 400. ETags are weak versions and
//! `If-Match` is honoured. Optional quirks: numbers and booleans served as strings, and 204 for
//! PATCH.
//!
//! As strict as RFC 7643/7644 and scim2-server, so it can serve as an oracle: `schemas` is
//! required on every POST, PUT and PATCH (never added for the client), `name` and `emails`
//! must have their RFC shapes, and a body must come as `application/scim+json` (or
//! `application/json`).

mod discovery;
mod filter;
mod patch;
mod routes;
mod store;
mod validate;

pub(crate) use routes::routes;
pub(crate) use store::Store;

pub(crate) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(crate) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
