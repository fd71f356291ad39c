//! The target engine: routes streams to kinds, validates records, delivers them in key order
//! with adaptive concurrency, writes rejects, and emits STATE once everything before it is
//! accepted or rejected.
//!
//! - [`input`]: the reader thread feeding the engine through a bounded channel.
//! - [`route`]: stream → kind, field mapping, flat rows → attributes, `_sdc_deleted_at`.
//! - [`schema`]: each SCHEMA compiled once; records checked against it.
//! - [`dispatch`]: per-key ordering and partitioned batching in front of the vendor's sink.
//! - [`ack`]: the ordered finalizer that decides when a STATE is safe.
//! - [`reject`]: the replayable NDJSON reject file.
//! - [`report`]: counts, the stderr summary, `--report FILE`, the progress bar.
//! - [`dry_run`]: `--dry-run`'s recording transport and output.
//!
//! The vendor side of the contract is [`crate::vendors::sink`].

pub mod ack;
pub mod dispatch;
pub mod dry_run;
mod engine;
pub mod input;
pub mod reject;
pub mod report;
pub mod route;
pub mod schema;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use engine::{MAX_CONSECUTIVE_TRANSIENT, MAX_IN_FLIGHT, STATE_MIN_INTERVAL};

use crate::config::{ConfigError, Mode, OnInvalid, TargetSettings};
use crate::exit::ExitStatus;
use crate::singer::{ReadError, ReadMessage, SingerWriter, WriteError};
use crate::vendors::Resolved;
use crate::vendors::sink::{Sink, SinkContext, SinkError, Transport};

use self::dry_run::{DryRunOutput, DryRunTransport};
use self::reject::{RejectFile, RejectFileError};
use self::report::Report;
use self::route::Router;

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
    /// The config cannot drive the target.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The vendor has no writer in this build.
    #[error("vendor {vendor} cannot be written by this build of target-roster")]
    NotWritable {
        /// The vendor.
        vendor: &'static str,
    },
    /// The input could not be opened.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// A line that is not a usable Singer message.
    #[error("line {line}: {detail}")]
    Protocol {
        /// The input line.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// A record was rejected under `on_invalid: fail`.
    #[error(
        "line {line}: stream {stream:?}: record rejected, and on_invalid is \"fail\": {reason}"
    )]
    Invalid {
        /// The input line.
        line: u64,
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// The vendor refused the credentials or could not be reached.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// SIGTERM or SIGINT.
    #[error(
        "stopped by {signal}; the last state printed covers every record sent, the rest are sent again from it"
    )]
    Stopped {
        /// Which signal.
        signal: &'static str,
    },
    /// stdout could not be written.
    #[error("cannot write the state to stdout: {0}")]
    Stdout(#[source] WriteError),
    /// The reject file could not be written.
    #[error(transparent)]
    RejectFile(#[from] RejectFileError),
    /// The dry-run output could not be written.
    #[error("cannot write the dry-run output: {0}")]
    DryRunOutput(#[source] std::io::Error),
    /// The report could not be written.
    #[error("cannot write the report {path}: {source}")]
    Report {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The writer left records without an outcome (a bug in the writer).
    #[error("the {vendor} writer left {count} record(s) without an outcome; no state covers them")]
    Unsettled {
        /// The vendor.
        vendor: &'static str,
        /// How many.
        count: u64,
    },
}

impl ExitStatus for TargetError {
    fn exit_code(&self) -> u8 {
        match self {
            TargetError::Config(_) | TargetError::NotWritable { .. } => 2,
            _ => 1,
        }
    }
}

/// Runs the target: stdin (or `--input`) in, state on stdout, summary on stderr.
pub async fn run(request: TargetRequest) -> Result<(), TargetError> {
    let settings: TargetSettings = request.config.typed()?;
    let dry_run = if request.dry_run {
        Some(
            DryRunOutput::open(request.dry_run_output.as_deref())
                .map_err(TargetError::DryRunOutput)?,
        )
    } else {
        None
    };
    let router = Router::new(
        request.config.spec.name,
        request.config.spec.writes,
        &settings.streams,
    )?
    .defaults(settings.nested_values, settings.null_values);
    let sink = build_sink(&request.config, &settings, dry_run.as_ref())?;
    if dry_run.is_none()
        && let Err(err) = sink.check().await
    {
        // Refused credentials or an unreachable vendor still leave a `--report` behind, so a
        // scheduler reading it learns why nothing was sent.
        let err = TargetError::from(err);
        let report = report::Tally::new().report(
            std::collections::BTreeMap::new(),
            sink.vendor(),
            false,
            sink.stats(),
            None,
            None,
            crate::exit::one_line(&err),
            err.exit_code(),
        );
        if let Some(path) = request.report.as_deref()
            && let Err(source) = report.write(path)
        {
            tracing::warn!("cannot write the report {}: {source}", path.display());
        }
        return Err(err);
    }
    let rejects = match dry_run {
        Some(_) => None,
        None => Some(RejectFile::open(settings.reject_file.as_deref())?),
    };
    let input = input::spawn(request.input.as_deref(), request.max_line_bytes)?;
    let parts = engine::Parts {
        sink,
        router,
        on_invalid: settings.on_invalid,
        rejects,
        dry_run,
        out: SingerWriter::stdout(),
        // A dry run has no wire to hold writes back from: let the recorder go as fast as it can.
        write_window: if request.dry_run {
            MAX_IN_FLIGHT
        } else {
            request
                .config
                .common
                .max_concurrency
                .unwrap_or(crate::http::DEFAULT_MAX_CONCURRENCY)
        },
    };
    let (result, report) = engine::run(parts, input).await;
    finish(result, &report, request.report.as_deref())
}

/// Builds the vendor's sink: with the dry-run recorder as its transport under `--dry-run`.
pub fn build_sink(
    config: &Resolved,
    settings: &TargetSettings,
    dry_run: Option<&DryRunOutput>,
) -> Result<Arc<dyn Sink>, TargetError> {
    let spec = config.spec;
    let Some(factory) = spec.sink else {
        return Err(TargetError::NotWritable { vendor: spec.name });
    };
    if settings.mode == Mode::Bulk && !spec.bulk {
        return Err(ConfigError::Invalid {
            key: "mode".into(),
            problem: format!(
                "is \"bulk\", which vendor {} does not offer (only realtime)",
                spec.name
            ),
        }
        .into());
    }
    let transport = match dry_run {
        Some(out) => Some(
            Arc::new(DryRunTransport::new(&config.base_url()?, out.clone())) as Arc<dyn Transport>,
        ),
        None => None,
    };
    Ok(factory(&SinkContext {
        config,
        target: settings,
        transport,
    })?)
}

/// Runs the engine over already-built parts (tests, benches): messages from `input`, state to
/// `out`. Returns the outcome and the report; prints nothing on stderr.
pub async fn run_parts<W: Write>(
    sink: Arc<dyn Sink>,
    router: Router,
    on_invalid: OnInvalid,
    rejects: Option<RejectFile>,
    dry_run: Option<DryRunOutput>,
    out: SingerWriter<W>,
    input: mpsc::Receiver<Result<ReadMessage, ReadError>>,
) -> (Result<(), TargetError>, Report) {
    engine::run(
        engine::Parts {
            sink,
            router,
            on_invalid,
            rejects,
            dry_run,
            out,
            write_window: crate::http::DEFAULT_MAX_CONCURRENCY,
        },
        input,
    )
    .await
}

fn finish(
    result: Result<(), TargetError>,
    report: &Report,
    path: Option<&std::path::Path>,
) -> Result<(), TargetError> {
    report.print_summary();
    if let Some(path) = path
        && let Err(source) = report.write(path)
    {
        let err = TargetError::Report {
            path: path.to_path_buf(),
            source,
        };
        return result.and(Err(err));
    }
    result
}
