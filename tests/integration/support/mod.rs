//! Test support for the integration tests, one tree (`use crate::support::…`):
//!
//! - [`bin`]: the one command builder for `tap-roster`, `target-roster` and `roster-sandbox`
//!   (sets `ROSTER_ZERO_DELAYS=1` and clears inherited log settings; `output`, `run`, `command`);
//! - [`process`]: children killed on drop, runs with a timeout, free ports, shell pipelines;
//! - [`singer`]: building Singer input and reading what a binary printed (`states`, `records`);
//! - [`rejects`]: the reject file; [`files`]: temporary directories and file writers;
//! - [`holdings`]: what the sandbox holds, vendor-neutrally (the `Model` input, `expected` and
//!   `actual` views, events, the tap's `Holdings`, dump and request-log lookups);
//! - [`target`], [`tap`], [`bulk`]: runs of the target (per vendor config, states, kills), of the
//!   tap, and of bulk mode; [`scim`]: a racing proxy in front of a SCIM server;
//! - [`api`]: an HTTP client for the sandbox's own tests; [`python`]: virtualenvs and the wheel.
//!
//! The writer compliance suite that uses them for every writable vendor is `crate::compliance`.
#![allow(dead_code)]

pub mod api;
pub mod bin;
pub mod bulk;
pub mod files;
pub mod holdings;
pub mod process;
pub mod python;
pub mod rejects;
pub mod scim;
pub mod singer;
pub mod tap;
pub mod target;

#[allow(unused_imports)]
pub use bin::dir as bin_dir;
pub use files::write_json;
pub use process::*;
pub use python::{python3, venv, wheel};
pub use singer::messages as singer_lines;
