//! `tap-roster`: parse the command line, run, exit.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    roster::cli::run_tap(roster::cli::TapArgs::parse())
}
