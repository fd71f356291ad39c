//! Appcues v2 (`/appcues`, then `/v2/accounts/{account_id}/…`): user and group profiles,
//! events, group membership, asynchronous imports and segments.
//!
//! Profiles are flat property maps (the CLI's shape); PATCH merges and stores `null` as sent.
//! Imports take NDJSON or CSV (raw body, or multipart field `file`) at `/import/profiles` (what
//! production code uses) and `/import/users` (the seed's path), answer 202 with a job, 413 over
//! 20 MB (200 MB for a multipart file), and run in the background; rows without a `user_id`
//! are skipped and listed in the job's `errors`. Segments are created by name and filled from a
//! CSV `user_id` column.

mod routes;
mod store;

use crate::Vendor;

pub(crate) use routes::routes;
pub(crate) use store::Store;

const V: Vendor = Vendor::Appcues;
