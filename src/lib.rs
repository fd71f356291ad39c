//! roster moves people data in and out of product-adoption and knowledge SaaS apps with the
//! Singer protocol.
//!
//! # Layout
//! - [`singer`]: the protocol: messages, the streaming line reader, the one stdout writer,
//!   catalog selection and tap state.
//! - [`config`]: what every vendor's config shares: loading files and `--config ENV`, the
//!   common keys, validation against a settings schema, and the redacting [`config::Secret`].
//! - [`http`]: the HTTP engine every vendor uses: auth, retries with backoff and `Retry-After`,
//!   adaptive concurrency, client-side rate limits and pagination helpers.
//! - [`model`]: the record model: the `users`, `groups`, `memberships` and `events` streams,
//!   their keys and JSON Schemas, defined once for the tap and the target.
//! - [`scim`]: SCIM 2.0 client pieces shared by Guru SCIM and generic SCIM.
//! - [`sink`]: the target's contract every writer shares (scheduling, settling, wire types, the
//!   transport, bulk jobs), beside the vendor rooms.
//! - [`vendors`]: one room per vendor (config, streams, writer) and the registry that names them.
//! - [`tap`]: the tap engine: selection, paging, SCHEMA/RECORD/STATE.
//! - [`load`]: the target engine: routing, validation, ordered delivery, ack-ordered STATE.
//! - [`ledger`]: the sync ledger (SQLite): what each vendor account accepted, for change
//!   detection and sync modes.
//! - [`fsutil`]: private (0600) output files, and telling whether two paths are one file.
//! - [`cli`]: the command lines, `--about`, logging to stderr; [`exit`]: exit codes.
//!
//! `roster-sandbox`, the local emulator of every vendor API, is a crate of its own
//! (`crates/roster-sandbox`): the library links none of its server dependencies, and the tap and
//! target never import it.
//!
//! Dependencies point down only: `bin → tap/load → vendors → sink/scim/http/singer →
//! model/config`.

pub mod bloom;
pub mod cli;
pub mod config;
pub mod exit;
pub mod fsutil;
pub mod http;
pub mod ledger;
pub mod load;
pub mod maps;
pub mod model;
pub mod scim;
pub mod singer;
pub mod sink;
pub mod tap;
pub mod vendors;
