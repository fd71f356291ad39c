//! UserGuiding (`/userguiding/v1`): the seed's `POST /identify`, a user upsert with an optional
//! nested company. Attribute values must be scalars (help centre: no arrays or objects); a
//! `null` is stored as sent, since UserGuiding documents nothing about clearing.

mod routes;
mod store;

use crate::Vendor;

pub(crate) use routes::routes;
pub(crate) use store::Store;

const V: Vendor = Vendor::UserGuiding;
