//! Guru REST (`/guru/api/v1`): team members and groups, keyed by email as Guru's SDK does.
//!
//! Lists are bare JSON arrays; the next page is only in a `Link: <…?token=…>; rel="next-page"`
//! header, with a server-chosen page size. Page tokens are signed, carry the listing they
//! belong to, and expire (after a TTL, or at once through the admin API), so the tap can
//! test its "stale token → restart the listing" path. Guru's tokens are opaque; by default one
//! continues after the last email served (keyset), and with `guru_offset_tokens` after a count
//! of members (offset), so members removed mid-listing shift unread ones past the token. Light users (ACCESS_TYPE READ_ONLY,
//! BILLING_TYPE FREE) cannot be put in groups, as Guru documents.

mod routes;
mod store;

use crate::Vendor;

pub(crate) use routes::routes;
pub(crate) use store::Store;

const V: Vendor = Vendor::Guru;
