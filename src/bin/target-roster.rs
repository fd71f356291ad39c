//! `target-roster`: parse the command line, run, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    roster::cli::run_target(roster::cli::TargetArgs::parse())
}
