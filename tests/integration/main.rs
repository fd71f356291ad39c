//! roster's integration tests, as one test binary: each file below was once its own binary,
//! and linking 24 of them against the whole crate cost CI minutes and gigabytes. Run one area
//! with a filter, e.g. `cargo test --test integration tap_resume::`.

// Test support, one tree (see support/mod.rs), and the writer compliance suite generated for
// every writable vendor (see compliance/mod.rs).
mod compliance;
mod support;

// The support modules' old names, for tests written before the tree (the lead may drop these
// once no branch uses them).
#[allow(unused_imports)]
use support::{
    api as sandbox_common, bulk as target_bulk_support, tap as tap_common, target as target_common,
};
#[allow(unused_imports)]
mod target_scim_common {
    pub use crate::support::{scim::*, target::*};
}

// The CLIs, docs and secrets.
mod cli;
mod docs;
mod quickstart;
mod secrets;

// The HTTP engine against a scripted server.
mod http_engine;

// roster-sandbox.
mod sandbox_admin;
mod sandbox_faults;
mod sandbox_guru;
mod sandbox_scim;
mod sandbox_userflow;
mod sandbox_writes;

// tap-roster.
mod tap_discover;
mod tap_guru;
mod tap_resume;
mod tap_scim;
mod tap_userflow;

// target-roster.
mod mirror;
mod mirror_pipes;
mod pipes;
mod plan;
mod sync;
mod target_appcues;
mod target_bulk_appcues;
mod target_bulk_userpilot;
mod target_cli;
mod target_guru;
mod target_mapping;
mod target_rejects;
mod target_samples;
mod target_scim;
mod target_userflow;
mod target_userguiding;
mod target_userpilot;
mod verify;

// Reliability: kill -9, fault storms, bad input, security.
mod bad_input;
mod crash;
mod faults;
mod security;
mod signals;

// With real tools from PyPI and Debian (Meltano, singer tools, PostgreSQL).
mod meltano;
mod reverse_etl;
mod scim_interop;
mod singer_tools;
mod sync_log;
mod wheel;
