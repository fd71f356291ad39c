//! `target-roster`: parse the command line, run, exit.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: records are parsed into and mapped through many small
/// maps and strings, and glibc's allocator was 40% of the instructions of a dry run (callgrind,
/// BENCHMARKS.md). Its v2 line (Cargo.toml) keeps peak memory down.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    roster::cli::run_target(roster::cli::TargetArgs::parse())
}
