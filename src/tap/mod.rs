//! The tap engine: drives a vendor's listings, applies catalog selection, writes
//! SCHEMA/RECORD/STATE with a STATE after every page, and resumes from bookmarks.
//!
//! - [`select`]: which streams and properties a sync emits, and the `--discover` catalog.
//! - [`sync`]: the paging loop with prefetch, STATE after each page, resume and restart.
//!
//! The vendor side is [`crate::vendors::source`]: each listable vendor's registry entry has a
//! [`crate::vendors::source::SourceFactory`].

pub mod flatten;
pub mod select;
pub mod sync;

use std::path::{Path, PathBuf};

use crate::exit::ExitStatus;
use crate::singer::{Catalog, SingerWriter, TapState, WriteError};
use crate::vendors::source::SourceError;
use crate::vendors::{self, Resolved};

pub use select::{SelectedStream, Selection};
pub use sync::{ReadCounts, Summary, SyncError};

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
    /// A `--state` or `--catalog` file cannot be used.
    #[error("{what} {path}: {problem}")]
    Input {
        /// `--state` or `--catalog`.
        what: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Reading the vendor failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// stdout failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A listing ended early.
    #[error(transparent)]
    Sync(SyncError),
}

impl ExitStatus for TapError {
    fn exit_code(&self) -> u8 {
        match self {
            TapError::NotListable { .. } | TapError::Input { .. } => 2,
            TapError::Source(err) => err.exit_code(),
            TapError::Write(_) | TapError::Sync(_) => 1,
        }
    }
}

impl From<SyncError> for TapError {
    fn from(err: SyncError) -> Self {
        match err {
            SyncError::Source(err) => TapError::Source(err),
            SyncError::Write(err) => TapError::Write(err),
            other => TapError::Sync(other),
        }
    }
}

/// Runs the tap, writing to this process's stdout.
pub async fn run(request: TapRequest) -> Result<(), TapError> {
    let mut writer = SingerWriter::stdout();
    run_with(request, &mut writer).await
}

/// Runs the tap, writing to `writer`.
pub async fn run_with<W: std::io::Write>(
    request: TapRequest,
    writer: &mut SingerWriter<W>,
) -> Result<(), TapError> {
    let spec = request.config.spec;
    let not_listable = || TapError::NotListable {
        vendor: spec.name,
        listable: vendors::listable_names(),
    };
    if !spec.listable() {
        return Err(not_listable());
    }
    if request.action == TapAction::Discover {
        let catalog = select::discover(spec.reads, select::incremental_streams(spec.name));
        return match writer.write_json(&catalog) {
            Ok(()) | Err(WriteError::Closed) => Ok(()),
            Err(err) => Err(err.into()),
        };
    }
    let factory = vendors::entry(&request.config)
        .and_then(|entry| entry.source)
        .ok_or_else(not_listable)?;
    let source = factory(&request.config)?;
    if request.action == TapAction::Test {
        source.check().await?;
        tracing::info!(vendor = spec.name, "connection test passed");
        return Ok(());
    }
    let selection = match &request.catalog {
        Some(path) => {
            let catalog = read_catalog(path)?;
            let selection = Selection::from_catalog(&catalog, spec.reads);
            for unknown in &selection.unknown {
                tracing::warn!(
                    "catalog stream {unknown} is not a stream of vendor {}; ignoring it",
                    spec.name
                );
            }
            selection
        }
        None => Selection::all(spec.reads),
    };
    if selection.names().is_empty() {
        tracing::warn!("no stream is selected in the catalog; nothing to sync");
    }
    let state = match &request.state {
        Some(path) => read_state(path)?,
        None => TapState::default(),
    };
    let start_date = request
        .config
        .typed::<IncrementalSettings>()
        .map_err(SourceError::from)?
        .start_date()?;
    let options = sync::Options {
        start_date: start_date.as_deref(),
        incremental: select::incremental_streams(spec.name),
    };
    let flattening = request
        .config
        .typed::<flatten::FlatteningSettings>()
        .map_err(SourceError::from)?
        .flattening();
    let summary = match flattening {
        None => sync::sync(source.as_ref(), &selection, state, writer, &options).await?,
        Some(mut flattening) => {
            flattening.attributes = source.attribute_schemas().await?;
            let mut flat = SingerWriter::new(flatten::FlattenWriter::new(writer, flattening));
            let summary = sync::sync(source.as_ref(), &selection, state, &mut flat, &options).await;
            flat.flush()?;
            summary?
        }
    };
    tracing::info!("tap-roster {}: {}", spec.name, summary.line());
    Ok(())
}

/// The tap's `start_date`: where an INCREMENTAL stream without a bookmark starts.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct IncrementalSettings {
    #[serde(default)]
    start_date: Option<String>,
}

impl IncrementalSettings {
    /// `start_date` as RFC 3339 in UTC (a bare `YYYY-MM-DD` is that day's midnight UTC).
    fn start_date(&self) -> Result<Option<String>, TapError> {
        let Some(text) = self.start_date.as_deref().map(str::trim) else {
            return Ok(None);
        };
        let at = chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&chrono::Utc))
            .or_else(|_| {
                chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc())
            })
            .map_err(|_| {
                SourceError::from(crate::config::ConfigError::Invalid {
                    key: "start_date".into(),
                    problem: format!(
                        "must be an RFC 3339 date-time (2026-01-01T00:00:00Z) or a date (2026-01-01), got {text:?}"
                    ),
                })
            })?;
        Ok(Some(crate::singer::state::timestamp(at)))
    }
}

fn read_json(what: &'static str, path: &Path) -> Result<serde_json::Value, TapError> {
    let input_error = |problem: String| TapError::Input {
        what,
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|err| input_error(err.to_string()))?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(&text).map_err(|err| input_error(format!("invalid JSON: {err}")))
}

fn read_state(path: &Path) -> Result<TapState, TapError> {
    let value = read_json("--state", path)?;
    TapState::from_value(value).map_err(|err| TapError::Input {
        what: "--state",
        path: path.display().to_string(),
        problem: crate::exit::one_line(&err),
    })
}

fn read_catalog(path: &Path) -> Result<Catalog, TapError> {
    let value = read_json("--catalog", path)?;
    serde_json::from_value(value).map_err(|err| TapError::Input {
        what: "--catalog",
        path: path.display().to_string(),
        problem: format!("not a Singer catalog: {err}"),
    })
}
