//! Userpilot (`/userpilot`): realtime identify, company identify and track (202, no body),
//! bulk identify jobs, scheduled deletes.
//!
//! `Token` auth and `X-API-Version: 2020-09-22` are checked by the request layer. A company in
//! identify may carry its key as `id` (the seed and guide) or `company_id` (the OpenAPI).
//! Bulk endpoints take at most 10,000 rows (413 above, or above 50 MB), answer 409 while any
//! other bulk job runs, and report progress at `GET /v1/background_jobs/{id}` with ids like
//! `bulk:jobs:NX-…:…` that clients must percent-encode. Deletes are scheduled (Userpilot runs
//! them daily), so deleted users stay until then and are listed under `scheduled_deletions`.

mod routes;
mod store;

use crate::Vendor;

pub(crate) use routes::{routes, validate_rows};
pub(crate) use store::Store;

const V: Vendor = Vendor::Userpilot;
