//! Userflow (`/userflow`): users, groups, memberships, events and the content lists the peer
//! taps read.
//!
//! Upserts merge: given attributes replace, omitted ones are kept, `null` removes one, and the
//! change objects of userflow.js (`set`, `set_once`, `add`, `subtract`) work. Both the vendor
//! form (`POST /users` with `id` in the body) and the seed form (`POST /users/{id}`) are
//! served. Lists page by cursor: `starting_after` is looked up in a hash map and the page read
//! from a B-tree, so a page costs O(log n + limit) even at 100,000 users.

mod list;
mod routes;
mod store;

use crate::Vendor;

pub(crate) use routes::routes;
pub(crate) use store::Store;

const V: Vendor = Vendor::Userflow;
