//! The tap engine: drives a vendor's listings, applies catalog selection, writes
//! SCHEMA/RECORD/STATE with a STATE after every page, and resumes from bookmarks.

use std::path::PathBuf;

use crate::exit::ExitStatus;
use crate::vendors::{self, Resolved};

/// What the tap was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapAction {
    /// Read the selected streams (the default).
    Sync,
    /// Print the catalog (`--discover`).
    Discover,
    /// One cheap authenticated call (`--test`).
    Test,
}

/// A parsed tap command line with its checked config.
#[derive(Debug, Clone)]
pub struct TapRequest {
    /// The checked config.
    pub config: Resolved,
    /// What to do.
    pub action: TapAction,
    /// `--state`.
    pub state: Option<PathBuf>,
    /// `--catalog` (or `--properties`).
    pub catalog: Option<PathBuf>,
}

/// Why a tap run failed.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The vendor has no list API.
    #[error(
        "vendor {vendor} has no list API, so tap-roster cannot read it (the tap reads: {listable})"
    )]
    NotListable {
        /// The vendor.
        vendor: &'static str,
        /// The vendors the tap can read.
        listable: String,
    },
    /// The sync engine is being built (issue: tap-roster).
    #[error("syncing vendor {0} is not available in this build yet")]
    NotBuilt(&'static str),
}

impl ExitStatus for TapError {
    fn exit_code(&self) -> u8 {
        match self {
            TapError::NotListable { .. } => 2,
            TapError::NotBuilt(_) => 1,
        }
    }
}

/// Runs the tap.
pub async fn run(request: TapRequest) -> Result<(), TapError> {
    let spec = request.config.spec;
    if !spec.listable() {
        return Err(TapError::NotListable {
            vendor: spec.name,
            listable: vendors::listable_names(),
        });
    }
    Err(TapError::NotBuilt(spec.name))
}
