//! roster's integration tests, as one test binary: each file below was once its own binary,
//! and linking 24 of them against the whole crate cost CI minutes and gigabytes. Run one area
//! with a filter, e.g. `cargo test --test integration tap_resume::`.

// Shared helpers (each used by several areas).
mod sandbox_common;
mod support;
mod tap_common;
mod target_bulk_support;
mod target_common;
mod target_scim_common;

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
mod pipes;
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
mod wheel;
