//! The target engine: routes streams to kinds, validates records, delivers them in key order
//! with adaptive concurrency, writes rejects, and emits STATE once everything before it is
//! accepted or rejected.

use std::path::PathBuf;

use crate::exit::ExitStatus;
use crate::vendors::Resolved;

/// A parsed target command line with its checked config.
#[derive(Debug, Clone)]
pub struct TargetRequest {
    /// The checked config.
    pub config: Resolved,
    /// `--input` (default stdin).
    pub input: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--dry-run-output`.
    pub dry_run_output: Option<PathBuf>,
    /// `--report`.
    pub report: Option<PathBuf>,
    /// `--max-line-bytes`.
    pub max_line_bytes: usize,
}

/// Why a target run failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The delivery engine is being built (issue: target-roster).
    #[error("writing to vendor {0} is not available in this build yet")]
    NotBuilt(&'static str),
}

impl ExitStatus for TargetError {
    fn exit_code(&self) -> u8 {
        1
    }
}

/// Runs the target.
pub async fn run(request: TargetRequest) -> Result<(), TargetError> {
    Err(TargetError::NotBuilt(request.config.spec.name))
}
