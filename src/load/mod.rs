//! The target engine: routes streams to kinds, validates records, delivers them in key order
//! with adaptive concurrency, writes rejects, and emits STATE once everything before it is
//! accepted or rejected.
//!
//! - [`input`]: the reader thread feeding the engine through a bounded channel.
//! - [`route`]: stream → kind, field mapping, flat rows → attributes, `_sdc_deleted_at`.
//! - [`schema`]: each SCHEMA compiled once; records checked against it.
//! - [`dispatch`]: per-key ordering and partitioned batching in front of the vendor's sink.
//! - [`ack`]: the ordered finalizer that decides when a STATE is safe.
//! - [`hold`]: memberships waiting for their group or user, spilled to a temporary file past
//!   a bound.
//! - [`reject`]: the replayable NDJSON reject file.
//! - [`report`]: counts, the stderr summary, `--report FILE`, the progress bar.
//! - [`dry_run`]: `--dry-run`'s recording transport and output.
//! - [`sync_log`]: `sync_log`, every record's outcome and the rejects as Singer messages.
//! - [`identity`]: the duplicate-identity guard (`on_duplicate_identity`).
//! - [`sync`]: the ledger's side of the engine: change detection, `sync_mode`, created/updated.
//! - [`holds`]: `update_only` / `create_only` decided by reads where the vendor can read.
//! - [`plan`]: `--plan`, what a run would do against what the destination holds.
//! - [`verify`]: `--verify`, the read-back after a run (drift exits 3).
//!
//! The vendor side of the contract is [`crate::sink`].

pub mod ack;
pub mod checked;
pub mod dispatch;
pub mod dry_run;
mod engine;
pub mod fast;
pub mod hold;
pub mod holds;
pub mod identity;
pub mod input;
pub mod mirror;
pub mod plan;
pub mod probe;
pub mod reject;
pub mod report;
pub mod route;
pub mod schema;
pub mod sync;
pub mod sync_log;
#[cfg(test)]
mod tests;
pub mod verify;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

pub use engine::{
    MAX_CONSECUTIVE_TRANSIENT, MAX_IN_FLIGHT, REJECT_RATIO_MIN_OUTCOMES, STATE_MIN_INTERVAL,
};

use crate::config::Resolved;
use crate::config::{ConfigError, Mode, OnInvalid, TargetSettings};
use crate::exit::ExitStatus;
use crate::singer::{ReadError, ReadMessage, SingerWriter, WriteError};
use crate::sink::{BuiltTransport, Sink, SinkContext, SinkError, Transport};

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
    /// `--full-resync`: send every record, unchanged or not, and refresh the ledger.
    pub full_resync: bool,
    /// `--plan`: say what a run would do against what the destination holds; send no write.
    pub plan: bool,
    /// `--plan-output`: one JSON line per record with its planned action and field diff.
    pub plan_output: Option<PathBuf>,
    /// `--verify`: read back what the run wrote and report drift (exit 3).
    pub verify: bool,
    /// `--force-deletes`: `sync_mode: mirror` deletes past `max_deletes` or `max_delete_ratio`
    /// for this run.
    pub force_deletes: bool,
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
    /// The vendor refused the credentials (the message names the keys to check) or could not
    /// be reached.
    #[error("{}", sink_message(.0))]
    Sink(#[from] SinkError),
    /// SIGTERM or SIGINT.
    #[error("stopped by {signal}; {}", if *.state_printed {
        "the last state printed covers every record before it, and a rerun from it sends the rest again"
    } else {
        "no state was printed, so a rerun sends every record again"
    })]
    Stopped {
        /// Which signal.
        signal: &'static str,
        /// Whether any state reached stdout.
        state_printed: bool,
    },
    /// More records were rejected than `max_reject_ratio` allows.
    #[error(
        "{rejected} of {outcomes} records rejected ({:.1}%), more than max_reject_ratio {max} allows{}{}",
        .ratio * 100.0,
        if *.at_end { "" } else { "; stopped before the rest of the input" },
        .reject_file.as_deref().map(|p| format!(" (the rejects are in {p})")).unwrap_or_default()
    )]
    RejectRatio {
        /// Records rejected.
        rejected: u64,
        /// Records with an outcome (sent, rejected or skipped).
        outcomes: u64,
        /// rejected / outcomes.
        ratio: f64,
        /// The limit.
        max: f64,
        /// Checked at the end of the input (else during the run).
        at_end: bool,
        /// Where the rejects are.
        reject_file: Option<String>,
    },
    /// Two of the run's files are one (an output would overwrite the input).
    #[error("{0}")]
    Paths(String),
    /// stdout could not be written.
    #[error("cannot write the state to stdout: {0}")]
    Stdout(#[source] WriteError),
    /// The reject file could not be written.
    #[error(transparent)]
    RejectFile(#[from] RejectFileError),
    /// The temporary file of held memberships failed.
    #[error(transparent)]
    Hold(#[from] hold::SpillError),
    /// The ledger could not be read or committed.
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The dry-run output could not be written.
    #[error("cannot write the dry-run output: {0}")]
    DryRunOutput(#[source] std::io::Error),
    /// The sync log could not be written.
    #[error(transparent)]
    SyncLog(#[from] sync_log::SyncLogError),
    /// The report could not be written.
    #[error("cannot write the report {path}: {source}")]
    Report {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--verify` read back records that differ from what the run wrote, or are missing.
    #[error(
        "verify: {} of {} read back from {vendor} differ from what this run wrote or are missing (see the summary and the report)",
        .drifted, report::plural(*.checked, "record")
    )]
    Drift {
        /// Records missing or changed.
        drifted: u64,
        /// Records read back.
        checked: u64,
        /// The vendor.
        vendor: &'static str,
    },
    /// `sync_mode: mirror`: a pass would delete more than `max_deletes` or `max_delete_ratio`
    /// allows; no delete was sent.
    #[error(
        "mirror deletes stopped before the first was sent: stream {stream:?}: {deletes} deletes of {held} records held ({:.1}%), past {limit}; nothing was deleted and the last safe state was written; check the source, then rerun with --force-deletes to delete them",
        .ratio * 100.0
    )]
    DeleteGuard {
        /// The stream.
        stream: String,
        /// The deletes its pass would make.
        deletes: u64,
        /// What the ledger holds for it.
        held: u64,
        /// deletes / held.
        ratio: f64,
        /// The limit passed (`max_delete_ratio 0.1`).
        limit: String,
    },
    /// The writer left records without an outcome (a bug in the writer).
    #[error("the {vendor} writer left {} without an outcome; no state covers them", report::plural(*.count, "record"))]
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
            TargetError::Config(_)
            | TargetError::NotWritable { .. }
            | TargetError::Paths(_)
            | TargetError::Sink(SinkError::Config(_)) => 2,
            TargetError::Drift { .. } => crate::exit::DRIFT,
            _ => 1,
        }
    }
}

/// Runs the target: stdin (or `--input`) in, state on stdout, summary on stderr.
pub async fn run(request: TargetRequest) -> Result<(), TargetError> {
    let settings = target_settings(&request.config)?;
    check_paths(&request, &settings)?;
    let dry_run = if request.dry_run {
        Some(
            DryRunOutput::open(request.dry_run_output.as_deref())
                .map_err(TargetError::DryRunOutput)?,
        )
    } else if request.plan {
        // The plan's lines (and its would-be rejects) go to --plan-output, else nowhere.
        Some(match request.plan_output.as_deref() {
            Some(path) => DryRunOutput::open(Some(path)).map_err(TargetError::DryRunOutput)?,
            None => DryRunOutput::new(Box::new(std::io::sink())),
        })
    } else {
        None
    };
    let router = Router::new(
        request.config.spec.name,
        request.config.spec.writes,
        &settings.streams,
    )?
    .defaults(settings.nested_values, settings.null_values);
    let sink = build_sink(
        &request.config,
        &settings,
        dry_run.as_ref().filter(|_| !request.plan),
    )?;
    // A plan reads the ledger as a dry run does, and applies change detection itself.
    let sync = sync::Sync::open(
        &request.config,
        &settings,
        request.dry_run || request.plan,
        request.full_resync || request.plan,
    )?;
    let (sink, sync, planning, verifier) = layers(&request, &settings, sink, sync, &dry_run)?;
    // A plan checks the connection before it reads anything; a run's writer checks it just
    // before its first request (`checked.rs`), so a run with nothing to send sends nothing.
    if request.plan
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
        None => Some(RejectFile::open(settings.reject_file.as_deref())),
    };
    // Replaying the reject file: move it aside and read it from there, so the records rejected
    // again go to a fresh file and nothing of the old one is lost.
    let mut input_path = request.input.clone();
    let mut replayed = None;
    if let Some(rejects) = &rejects
        && rejects.path().exists()
    {
        let path = rejects.path();
        let is_input = match request.input.as_deref() {
            Some(input) => crate::fsutil::same_file(input, path),
            None => crate::fsutil::stdin_is(path),
        };
        if is_input {
            let aside = RejectFile::set_aside(path)?;
            tracing::info!(
                "replaying the reject file: moved {} to {}; records rejected again go to a new {}",
                path.display(),
                aside.display(),
                path.display()
            );
            if input_path.is_some() {
                input_path = Some(aside.clone());
            }
            replayed = Some(aside);
        } else {
            tracing::info!(
                "{} holds rejects of earlier runs; this run's rejects are added after them",
                path.display()
            );
        }
    }
    let published = fast::Published::default();
    let input = input::spawn(
        input_path.as_deref(),
        request.max_line_bytes,
        published.clone(),
    )?;
    // sync_log hook: opened after the input, so a bad input path creates no log. A dry run
    // writes none.
    let sync_log = match settings.sync_log.as_deref() {
        Some(path) if !request.dry_run && !request.plan => {
            let (log, rotated) = sync_log::SyncLog::open(path)?;
            if let Some(rotated) = rotated {
                tracing::info!(
                    "the sync log of an earlier run was moved to {}; this run's is {}",
                    rotated.display(),
                    path.display()
                );
            }
            Some(log)
        }
        Some(path) => {
            tracing::info!("dry run: no sync log is written to {}", path.display());
            None
        }
        None => None,
    };
    let parts = engine::Parts {
        sink,
        router,
        on_invalid: settings.on_invalid,
        rejects,
        dry_run,
        out: SingerWriter::stdout(),
        // A dry run has no wire to hold writes back from: the recorder's window only has to keep
        // the runtime's threads busy (a window of MAX_IN_FLIGHT let 4096 ops pile up).
        write_window: if request.dry_run {
            dispatch::DRY_RUN_WINDOW
        } else {
            request
                .config
                .common
                .max_concurrency
                .unwrap_or(crate::http::DEFAULT_MAX_CONCURRENCY)
        },
        hold_bound: hold::memory_bound_from_env(),
        max_reject_ratio: settings.max_reject_ratio,
        sync_log,
        identity: Some(identity::IdentityGuard::with_policy(
            settings.on_duplicate_identity == crate::config::OnDuplicateIdentity::Reject,
        )),
        mirror: (sync.mode() == crate::config::SyncMode::Mirror).then(|| {
            mirror::Mirror::new(mirror::Guards {
                max_deletes: settings.max_deletes,
                max_ratio: settings
                    .max_delete_ratio
                    .unwrap_or(mirror::DEFAULT_MAX_DELETE_RATIO),
                force: request.force_deletes,
                plan: request.plan,
            })
        }),
        sync,
        published,
    };
    let (result, mut report) = engine::run(parts, input).await;
    if let Some(planning) = planning {
        return planning.finish(result, report, request.report.as_deref());
    }
    if let Some(aside) = replayed {
        settle_replayed(&aside, &result, &report);
    }
    let result = match verifier {
        Some(verifier) => verifier.finish(result, &mut report).await,
        None => result,
    };
    finish(result, &report, request.report.as_deref())
}

/// The layers over the vendor's writer: `--plan`'s (reads and counts, sends nothing), or the
/// real run's `update_only` / `create_only` reads and `--verify`'s sample.
#[allow(clippy::type_complexity)]
fn layers(
    request: &TargetRequest,
    settings: &TargetSettings,
    sink: Arc<dyn Sink>,
    sync: sync::Sync,
    dry_run: &Option<DryRunOutput>,
) -> Result<
    (
        Arc<dyn Sink>,
        sync::Sync,
        Option<plan::Planning>,
        Option<verify::Verifier>,
    ),
    TargetError,
> {
    if request.plan {
        let out = dry_run
            .clone()
            .unwrap_or_else(|| DryRunOutput::new(Box::new(std::io::sink())));
        let counted = DryRunOutput::new(Box::new(std::io::sink()));
        let counter = build_sink(&request.config, settings, Some(&counted))?;
        let (sink, sync, planning) =
            plan::Planning::start(request, settings, sink, counter, sync, out)?;
        return Ok((sink, sync, Some(planning), None));
    }
    if request.dry_run {
        // A dry run reads nothing: the ledger decides what the destination holds.
        let vendor = request.config.spec.name;
        if matches!(vendor, "scim" | "guru_scim" | "guru") {
            tracing::warn!(
                "dry run: {vendor} is not read, so the writer's lookups find nothing: users and groups it already holds show as creates, and its ids as stand-ins (<… id of …>); --plan reads what it holds and says what a run would do"
            );
        }
        return Ok((sink, sync, None, None));
    }
    let sync = sync.reading(holds::ReadKinds::of(sink.as_ref()));
    let sink = checked::CheckFirst::wrap(sink);
    let sink = holds::HoldsSink::wrap(sink, settings.sync_mode);
    if request.verify {
        let (sink, verifier) = verify::VerifySink::wrap(sink);
        return Ok((sink, sync, None, Some(verifier)));
    }
    Ok((sink, sync, None, None))
}

/// After a replay: the moved-aside reject file goes once every record in it was sent or
/// rejected again (into the new reject file); otherwise it stays, and the log says where.
fn settle_replayed(aside: &std::path::Path, result: &Result<(), TargetError>, report: &Report) {
    let t = &report.totals;
    let replayed_all = result.is_ok() && t.records_in == t.sent + t.rejected;
    if replayed_all && std::fs::remove_file(aside).is_ok() {
        tracing::info!(
            "replayed {}: {} sent, {} rejected again{}",
            report::plural(t.records_in, "record"),
            t.sent,
            t.rejected,
            report
                .reject_file
                .as_deref()
                .map(|p| format!(" (now in {p})"))
                .unwrap_or_default()
        );
    } else {
        tracing::warn!(
            "the replayed rejects are kept in {} (the replay did not send or reject every record again); replay it with --input {}",
            aside.display(),
            aside.display()
        );
    }
}

/// The target's keys, typed, with `streams`, `reject_file` and `max_reject_ratio` checked so
/// each error names its key.
fn target_settings(config: &Resolved) -> Result<TargetSettings, TargetError> {
    if let Some(streams) = config.values.get("streams") {
        route::check_overrides(streams)?;
    }
    let settings: TargetSettings = config.typed()?;
    if settings
        .sync_log
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(ConfigError::Invalid {
            key: "sync_log".into(),
            problem: "is empty: name a file, or leave the key out for no sync log".into(),
        }
        .into());
    }
    if settings
        .reject_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err(ConfigError::Invalid {
            key: "reject_file".into(),
            problem: format!(
                "is empty: name a file, or leave the key out for {} in the working directory",
                reject::DEFAULT_REJECT_FILE
            ),
        }
        .into());
    }
    if let Some(ratio) = settings.max_reject_ratio
        && !(0.0..=1.0).contains(&ratio)
    {
        return Err(ConfigError::Invalid {
            key: "max_reject_ratio".into(),
            problem: format!("must be a number from 0 to 1 (a share of the records), got {ratio}"),
        }
        .into());
    }
    Ok(settings)
}

/// Refuses a run whose outputs would overwrite its input or each other, before anything is
/// opened for writing. (The reject file as the input is a replay, handled in [`run`].)
fn check_paths(request: &TargetRequest, settings: &TargetSettings) -> Result<(), TargetError> {
    use crate::fsutil::{same_file, stdin_is};
    let reject_file = settings
        .reject_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(reject::DEFAULT_REJECT_FILE));
    let mut outputs: Vec<(&str, &std::path::Path)> = Vec::new();
    if let Some(path) = request.report.as_deref() {
        outputs.push(("--report", path));
    }
    if request.plan {
        if let Some(path) = request.plan_output.as_deref() {
            outputs.push(("--plan-output", path));
        }
    } else if request.dry_run {
        if let Some(path) = request.dry_run_output.as_deref() {
            outputs.push(("--dry-run-output", path));
        }
    } else {
        outputs.push(("reject_file", &reject_file));
        if let Some(path) = settings.sync_log.as_deref() {
            outputs.push(("sync_log", path));
        }
    }
    let ledger = match &settings.ledger {
        Some(crate::config::LedgerSetting::Path(path)) => Some(path.clone()),
        _ => None,
    };
    if let Some(path) = ledger.as_deref() {
        outputs.push(("ledger", path));
    }
    for (i, (name, path)) in outputs.iter().enumerate() {
        let is_input = match request.input.as_deref() {
            Some(input) => same_file(input, path),
            None => stdin_is(path),
        };
        if is_input && *name != "reject_file" {
            return Err(TargetError::Paths(format!(
                "{name} {} is the input file, which it would overwrite; name another file",
                path.display()
            )));
        }
        for (other, other_path) in &outputs[i + 1..] {
            if same_file(path, other_path) {
                return Err(TargetError::Paths(format!(
                    "{name} and {other} are the same file ({}); name two files",
                    path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Builds the vendor's sink: with the dry-run recorder as its transport under `--dry-run`.
pub fn build_sink(
    config: &Resolved,
    settings: &TargetSettings,
    dry_run: Option<&DryRunOutput>,
) -> Result<Arc<dyn Sink>, TargetError> {
    build(config, settings, dry_run, None)
}

/// Builds the vendor's real sink and leaves the HTTP transport it built in `built`
/// (`--test` sends its request through it).
pub fn build_sink_into(
    config: &Resolved,
    settings: &TargetSettings,
    built: &BuiltTransport,
) -> Result<Arc<dyn Sink>, TargetError> {
    build(config, settings, None, Some(built))
}

/// A fatal sink error as the run reports it: refused credentials name the config keys to check
/// (the registry knows them; the sink machinery below it does not).
fn sink_message(err: &SinkError) -> String {
    match err {
        SinkError::Credentials { vendor, detail } => format!(
            "{vendor} refused the credentials ({}): {detail}",
            crate::vendors::credentials_hint(vendor)
        ),
        other => other.to_string(),
    }
}

fn build(
    config: &Resolved,
    settings: &TargetSettings,
    dry_run: Option<&DryRunOutput>,
    built: Option<&BuiltTransport>,
) -> Result<Arc<dyn Sink>, TargetError> {
    let spec = config.spec;
    let Some(factory) = crate::vendors::entry(config).and_then(|entry| entry.sink) else {
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
        built,
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
            hold_bound: hold::memory_bound_from_env(),
            max_reject_ratio: None,
            sync_log: None,
            identity: None,
            mirror: None,
            sync: sync::Sync::off(),
            published: fast::Published::default(),
        },
        messages(input),
    )
    .await
}

/// Messages already parsed, as the engine reads its input.
fn messages(mut input: mpsc::Receiver<Result<ReadMessage, ReadError>>) -> input::Receiver {
    let (tx, rx) = mpsc::channel(input::INPUT_QUEUE / input::CHUNK_LINES);
    tokio::spawn(async move {
        while let Some(message) = input.recv().await {
            if tx
                .send(vec![message.map(input::Input::Message)])
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

fn finish(
    result: Result<(), TargetError>,
    report: &Report,
    path: Option<&std::path::Path>,
) -> Result<(), TargetError> {
    report.print_summary();
    write_report(result, report, path)
}

/// Writes `--report` (when asked); a failure to write it fails a run that had not failed.
fn write_report(
    result: Result<(), TargetError>,
    report: &Report,
    path: Option<&std::path::Path>,
) -> Result<(), TargetError> {
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
