//! The engine loop: one task that reads messages, validates and routes records, hands ops to the
//! dispatcher, books settlements, writes rejects, and prints each STATE once it is safe.
//!
//! Phases: *reading* (input flows; at most [`MAX_IN_FLIGHT`] ops are handed over and unwritten,
//! so a slow vendor slows the reader) → *releasing* (input ended: memberships still held for
//! their group or user, [`super::hold`], go to the writer, at most [`MAX_IN_FLIGHT`] unwritten at
//! a time) → *draining* (input ended or a protocol error: open batches go out and in-flight
//! writes finish) → *flushing* ([`Sink::flush`] settles deferred work) → under `sync_mode:
//! mirror`, *deleting* (the deletes of the passes read through, `mirror.rs`) → draining and
//! flushing again → done. A fatal error, a
//! record refused under `on_invalid: fail`, or SIGTERM/SIGINT switch to *stopping*: nothing new
//! is sent, writes in flight finish, the last safe state is printed. A second signal stops at
//! once.

mod close;
mod mirror;
mod outcomes;
mod pairs;
mod records;
mod stream;

use crate::maps::FastMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::OptionFuture;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::OnInvalid;
use crate::http::shutdown::{STOP_DEADLINE, Shutdown, Signals};
use crate::singer::{
    Message, Object, ReadError, ReadMessage, RecordMessage, SchemaMessage, SingerWriter,
};
use crate::sink::{
    Acks, Item, Kind, Op, Origin, Outcome, Plan, RecordText, Refusal, Settlement, Sink, SinkError,
    Ticket,
};

use super::TargetError;
use super::ack::AckTracker;
use super::dispatch::{Dispatcher, Written};
use super::dry_run::DryRunOutput;
use super::fast::{Prepared, Published};
use super::hold::Held;
use super::identity::{IdentityGuard, Screened};
use super::input::{Input, Record};
use super::reject::RejectFile;
use super::report::{Report, Tally};
use super::route::{Route, Router, StreamMap};
use super::schema::StreamSchema;
use super::sync::{Class, Decision, Sync};
use super::sync_log::SyncLog;
use stream::Stream;

/// Ops handed to the sink and not yet written, at most: bounds memory and keeps the reader from
/// running far ahead of a slow vendor.
pub const MAX_IN_FLIGHT: usize = 4096;

/// The shortest time between two state lines on stdout. Every newly safe state is printed, but
/// at most once a second (Meltano stores each line; thousands of pages would mean thousands of
/// writes), which is well inside the "at least every 30 s" promise.
pub const STATE_MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Records in a row whose retry budget ran out, with nothing accepted between them, after which
/// the vendor counts as unreachable and the run stops.
pub const MAX_CONSECUTIVE_TRANSIENT: u32 = 20;

/// Records with an outcome before `max_reject_ratio` is checked during the run (it is always
/// checked at the end of the input): enough that a few bad rows at the top of a file do not stop
/// a run whose rest is fine.
pub const REJECT_RATIO_MIN_OUTCOMES: u64 = 1000;
/// How often the loop wakes up with nothing to do (progress bar, lingering batches).
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Everything the engine needs.
pub struct Parts<W: Write> {
    /// The vendor's writer.
    pub sink: Arc<dyn Sink>,
    /// Stream routing.
    pub router: Router,
    /// reject or fail.
    pub on_invalid: OnInvalid,
    /// The reject file (`None` in a dry run).
    pub rejects: Option<RejectFile>,
    /// The dry-run output (`Some` in a dry run).
    pub dry_run: Option<DryRunOutput>,
    /// stdout.
    pub out: SingerWriter<W>,
    /// Writes inside the sink at once, at most (the HTTP client's `max_concurrency`).
    pub write_window: usize,
    /// Held memberships kept in memory before the rest go to a temporary file.
    pub hold_bound: usize,
    /// The share of rejects past which the run fails (`None`: no limit).
    pub max_reject_ratio: Option<f64>,
    /// The ledger, change detection and the sync mode.
    pub sync: Sync,
    /// `sync_log`: every record's outcome as Singer messages (`None`: off).
    pub sync_log: Option<SyncLog>,
    /// The duplicate-identity guard (`None`: off).
    pub identity: Option<IdentityGuard>,
    /// `sync_mode: mirror`: the passes and their deletes (`None`: another mode).
    pub mirror: Option<super::mirror::Mirror>,
    /// What the parse workers know of the streams (the input was spawned with it).
    pub published: Published,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Reading,
    Releasing,
    Draining,
    Flushing,
    Deleting,
    Stopping,
}

struct Engine<W: Write> {
    sink: Arc<dyn Sink>,
    router: Router,
    on_invalid: OnInvalid,
    rejects: Option<RejectFile>,
    dry: Option<DryRunOutput>,
    out: SingerWriter<W>,
    tracker: AckTracker,
    tally: Tally,
    dispatcher: Dispatcher,
    acks: Acks,
    streams: Vec<Stream>,
    by_name: FastMap<String, usize>,
    last_emit: Option<Instant>,
    last_state: Option<Value>,
    consecutive_transient: u32,
    totals: (u64, u64, u64),
    phase: Phase,
    failure: Option<TargetError>,
    warned_activate_version: bool,
    /// Memberships waiting for their group or user (writers that need both to exist).
    held: Option<Held>,
    max_reject_ratio: Option<f64>,
    /// Records settled as skipped (with `totals`' sent and rejected: the records with an outcome).
    skipped: u64,
    input_ended: bool,
    /// Records written as two ops (a users row and the membership its `group_key` names): each
    /// op's ticket → the other's, and whether it is the membership half.
    pairs: FastMap<Ticket, (Ticket, Option<String>)>,
    /// The first half of a pair to settle, waiting for the other, and how it counts.
    halves: FastMap<Ticket, (Settlement, Option<Class>)>,
    sync: Sync,
    sync_log: Option<SyncLog>,
    identity: Option<IdentityGuard>,
    mirror: Option<mirror::MirrorRun>,
    published: Published,
}

/// Messages the engine reads in one turn of its loop at most (when they are already queued).
const INPUT_BATCH: usize = 64;

/// Runs the engine over `input` until the input ends, a protocol error, a fatal error or a
/// signal. Returns the outcome and the run report.
pub async fn run<W: Write>(
    parts: Parts<W>,
    mut input: super::input::Receiver,
) -> (Result<(), TargetError>, Report) {
    let (acks, mut settled) = Acks::channel();
    let (written_tx, mut written) = mpsc::unbounded_channel::<Written>();
    let mut engine = Engine::new(parts, acks, written_tx);
    // Signals are listened for by a task of their own: polling the signal streams in every
    // turn of the loop below cost about as much as a record (its futures are built anew).
    let (mut signals, listener) = signal_listener();
    let mut flush: Option<JoinHandle<Result<(), SinkError>>> = None;
    let mut hard_stop = false;
    // Set by the first signal: past it, writes still in flight are abandoned.
    let mut stop_by: Option<Instant> = None;
    // The rest of the batch of messages last read from the input.
    let mut queued = Vec::new().into_iter();
    loop {
        if engine.advance(&mut flush) {
            break;
        }
        let wake = engine.next_wake();
        let can_read = engine.phase == Phase::Reading && engine.dispatcher.has_room(MAX_IN_FLIGHT);
        tokio::select! {
            biased;
            Some(signal) = signals.recv() => {
                if engine.signalled(signal, &mut flush) {
                    hard_stop = true;
                    break;
                }
                stop_by = Some(Instant::now() + STOP_DEADLINE);
            }
            () = sleep_until_or_never(stop_by) => {
                tracing::warn!(
                    "{} write(s) still in flight {} ms after the signal: stopping without their answers",
                    engine.dispatcher.in_flight(),
                    STOP_DEADLINE.as_millis()
                );
                hard_stop = true;
                break;
            }
            Some(settlement) = settled.recv() => {
                // All that are queued, in one turn (one settles per write, and a turn of this
                // loop costs more than a settlement).
                engine.settled(settlement);
                while let Ok(settlement) = settled.try_recv() {
                    engine.settled(settlement);
                }
            }
            Some(done) = written.recv() => {
                engine.written(done);
                while let Ok(done) = written.try_recv() {
                    engine.written(done);
                }
            }
            batch = input.recv(), if can_read && queued.len() == 0 => match batch {
                None => engine.input_end(),
                Some(batch) => {
                    queued = batch.into_iter();
                    engine.read_queued(&mut queued);
                }
            },
            Some(result) = OptionFuture::from(flush.as_mut()), if flush.is_some() => {
                flush = None;
                while let Ok(settlement) = settled.try_recv() {
                    engine.settled(settlement);
                }
                if engine.flushed(result) {
                    break;
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {
                engine.dispatcher.dispatch_due(Instant::now());
            }
            // Messages of a batch already read: on with them once nothing else is ready.
            () = std::future::ready(()), if can_read && queued.len() > 0 => {
                engine.read_queued(&mut queued);
            }
        }
        engine.emit(false);
        engine.progress();
    }
    if !hard_stop {
        // Settlements sent before the writes and the flush returned are still queued.
        while let Ok(settlement) = settled.try_recv() {
            engine.settled(settlement);
        }
        engine.check_at_end();
    }
    engine.emit(true);
    listener.abort();
    engine.finish()
}

/// The process's signals, as a channel the engine's loop polls cheaply, and the task that
/// listens for them (registered before this returns, so no signal after it is missed).
fn signal_listener() -> (mpsc::Receiver<&'static str>, JoinHandle<()>) {
    let mut signals = Signals::new();
    let (tx, rx) = mpsc::channel(4);
    let listener = tokio::spawn(async move {
        while let Some(signal) = signals.recv().await {
            if tx.send(signal).await.is_err() {
                break;
            }
        }
    });
    (rx, listener)
}

impl<W: Write> Engine<W> {
    fn new(parts: Parts<W>, acks: Acks, written: mpsc::UnboundedSender<Written>) -> Self {
        let held = parts
            .sink
            .holds_memberships()
            .then(|| Held::new(parts.hold_bound));
        Engine {
            held,
            dispatcher: Dispatcher::new(
                parts.sink.clone(),
                acks.clone(),
                written,
                parts.write_window,
            ),
            router: parts.router.nested_rule(parts.sink.nested_rule()),
            sink: parts.sink,
            on_invalid: parts.on_invalid,
            rejects: parts.rejects,
            dry: parts.dry_run,
            out: parts.out,
            tracker: AckTracker::new(),
            tally: Tally::new(),
            acks,
            streams: Vec::new(),
            by_name: FastMap::default(),
            last_emit: None,
            last_state: None,
            consecutive_transient: 0,
            totals: (0, 0, 0),
            phase: Phase::Reading,
            failure: None,
            warned_activate_version: false,
            max_reject_ratio: parts.max_reject_ratio,
            skipped: 0,
            input_ended: false,
            pairs: FastMap::default(),
            halves: FastMap::default(),
            sync: parts.sync,
            sync_log: parts.sync_log,
            identity: parts.identity,
            mirror: parts.mirror.map(mirror::MirrorRun::new),
            published: parts.published,
        }
    }

    /// Moves the run on between phases: the flush once everything is written, the held
    /// memberships and the mirror's deletes at the end. True when the run is over.
    fn advance(&mut self, flush: &mut Option<JoinHandle<Result<(), SinkError>>>) -> bool {
        match self.phase {
            Phase::Draining if self.dispatcher.in_flight() == 0 => {
                let sink = self.sink.clone();
                let acks = self.acks.clone();
                *flush = Some(tokio::spawn(async move { sink.flush(&acks).await }));
                self.phase = Phase::Flushing;
            }
            Phase::Stopping if self.dispatcher.in_flight() == 0 => return true,
            Phase::Releasing => self.release_at_end(),
            Phase::Deleting => self.feed_deletes(),
            _ => {}
        }
        false
    }

    /// Reads on in the batch last read from the input, up to [`INPUT_BATCH`] messages in one
    /// turn of the loop (its `select!`, signal poll and STATE check cost more than a record).
    fn read_queued(&mut self, queued: &mut std::vec::IntoIter<Result<Input, ReadError>>) {
        for _ in 0..INPUT_BATCH {
            if self.phase != Phase::Reading || !self.dispatcher.has_room(MAX_IN_FLIGHT) {
                return;
            }
            match queued.next() {
                Some(message) => self.message(message),
                None => return,
            }
        }
    }

    /// A signal: true when it is the second (stop at once). The first ends every wait
    /// (Retry-After, backoff, pacing, job polls) and lets a request on the wire answer.
    fn signalled(
        &mut self,
        signal: &'static str,
        flush: &mut Option<JoinHandle<Result<(), SinkError>>>,
    ) -> bool {
        if self.phase == Phase::Stopping {
            tracing::warn!("{signal} again: stopping without waiting for requests in flight");
            return true;
        }
        tracing::warn!(
            "{signal}: sending nothing new, waiting for requests in flight, then writing the last safe state"
        );
        Shutdown::process().begin();
        if let Some(task) = flush.take() {
            task.abort();
        }
        self.stop(TargetError::Stopped {
            signal,
            state_printed: true,
        });
        false
    }

    /// The input ended: release held memberships, or drain.
    fn input_end(&mut self) {
        self.input_ended = true;
        if self.held.as_ref().is_some_and(|h| !h.is_empty()) {
            self.phase = Phase::Releasing;
            self.release_at_end();
        } else {
            self.dispatcher.dispatch_all();
            self.phase = Phase::Draining;
        }
    }

    /// The sink's flush returned: true when the run is done.
    fn flushed(&mut self, result: Result<Result<(), SinkError>, tokio::task::JoinError>) -> bool {
        match result {
            Ok(Ok(())) => return self.after_flush(),
            Ok(Err(err)) => self.stop(TargetError::Sink(err)),
            Err(join) => self.stop(TargetError::Sink(SinkError::Vendor {
                vendor: self.sink.vendor(),
                detail: format!("the writer's flush did not finish: {join}"),
            })),
        }
        false
    }

    /// After the loop: records no settlement covered, and the reject ratio at the end.
    fn check_at_end(&mut self) {
        let unsettled = self.tracker.unsettled();
        if self.failure.is_none() && unsettled > 0 {
            self.failure = Some(TargetError::Unsettled {
                vendor: self.sink.vendor(),
                count: unsettled,
            });
        }
        if self.failure.is_none() {
            self.check_reject_ratio(true);
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + HEARTBEAT;
        if let Some(deadline) = self.dispatcher.next_deadline() {
            wake = wake.min(deadline);
        }
        if self.tracker.has_safe()
            && let Some(last) = self.last_emit
        {
            wake = wake.min(last + STATE_MIN_INTERVAL);
        }
        wake
    }

    /// The input ended: hands held memberships to the writer, in input order, while fewer than
    /// [`MAX_IN_FLIGHT`] ops are unwritten; then drains.
    fn release_at_end(&mut self) {
        while self.phase == Phase::Releasing && self.dispatcher.has_room(MAX_IN_FLIGHT) {
            if self.failure.is_some() {
                // A reject under `on_invalid: fail`: nothing after it is sent.
                self.dispatcher.dispatch_all();
                self.phase = Phase::Draining;
                return;
            }
            let next = match self.held.as_mut() {
                Some(held) => held.next_at_end(),
                None => Ok(None),
            };
            match next {
                Ok(Some(op)) => self.submit(op),
                Ok(None) => {
                    self.dispatcher.dispatch_all();
                    self.phase = Phase::Draining;
                }
                Err(err) => self.stop(TargetError::Hold(err)),
            }
        }
    }

    /// Plans an op and hands it to the dispatcher, or rejects it.
    fn submit(&mut self, op: Op) {
        match self.sink.plan(&op) {
            Ok(plan) => self.dispatch(op, plan),
            // Settled like a vendor's refusal, so a `group_key` half books its row once.
            Err(refusal) => self.settled(Settlement {
                ticket: op.ticket,
                outcome: Outcome::Rejected(refusal),
                payload: None,
                origin: Some(op.origin),
            }),
        }
    }

    /// Hands a planned op to the dispatcher, or settles it as skipped when the ledger says it
    /// is unchanged or the sync mode leaves it out.
    fn dispatch(&mut self, op: Op, plan: Plan) {
        let version = self
            .tracker
            .stream_of(op.ticket)
            .and_then(|i| self.streams.get(i as usize))
            .and_then(|s| s.version_of(op.ticket));
        match self.sync.decide(&op, version) {
            Ok(Decision::Send) => self.dispatcher.submit(op, plan),
            Ok(Decision::Skip(reason)) => self.settled(Settlement {
                ticket: op.ticket,
                outcome: Outcome::Skipped(reason.to_string()),
                payload: None,
                origin: None,
            }),
            Err(err) => self.stop(TargetError::Ledger(err)),
        }
    }

    fn stop(&mut self, err: TargetError) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
        if self.phase != Phase::Stopping {
            self.dispatcher.stop();
            self.phase = Phase::Stopping;
        }
    }

    /// A protocol error (or a reject under `on_invalid: fail`): finish what came before the bad
    /// line, send nothing after it, then fail.
    fn protocol(&mut self, err: TargetError) {
        if self.failure.is_none() {
            self.failure = Some(err);
        }
        if self.phase == Phase::Reading {
            self.dispatcher.dispatch_all();
            self.phase = Phase::Draining;
        }
    }

    fn written(&mut self, written: Written) {
        self.dispatcher.finished(&written);
        if let Err(err) = written.result {
            self.stop(TargetError::Sink(err));
        }
    }

    /// Prints the newest safe state, at most once per [`STATE_MIN_INTERVAL`] unless `force`.
    fn emit(&mut self, force: bool) {
        if !self.tracker.has_safe() {
            return;
        }
        if !force
            && self
                .last_emit
                .is_some_and(|t| t.elapsed() < STATE_MIN_INTERVAL)
        {
            return;
        }
        let Some(value) = self.tracker.take_safe() else {
            return;
        };
        self.last_emit = Some(Instant::now());
        if self.last_state.as_ref() == Some(&value) {
            return;
        }
        // The ledger entries the state covers are committed before it is printed.
        if !self.commit_ledger(Some(&value)) {
            return;
        }
        if self.dry.is_none() {
            // Rejects the state covers must be on disk before the state is.
            if let Some(rejects) = self.rejects.as_mut()
                && let Err(err) = rejects.flush()
            {
                self.stop(TargetError::RejectFile(err));
                return;
            }
            // sync_log hook: its rows so far reach the disk with each state.
            if let Some(log) = self.sync_log.as_mut() {
                log.flush();
            }
            if let Err(err) = self.out.write_state_value(&value) {
                self.stop(TargetError::Stdout(err));
                return;
            }
            self.tally.states_out += 1;
        }
        self.last_state = Some(value);
    }

    /// Commits the ledger (with the state about to be printed); false when that failed and the
    /// run is stopping.
    fn commit_ledger(&mut self, state: Option<&Value>) -> bool {
        match self.sync.commit(state) {
            Ok(()) => true,
            Err(err) => {
                self.stop(TargetError::Ledger(err));
                false
            }
        }
    }

    fn progress(&mut self) {
        let (records, sent, rejected) = self.totals;
        self.tally
            .progress(records, sent, rejected, self.dispatcher.in_flight());
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// `line 12: …` from the reader: the engine's error adds the line itself.
fn strip_line(text: &str) -> String {
    match text.split_once(": ") {
        Some((head, rest)) if head.starts_with("line ") => rest.to_string(),
        _ => text.to_string(),
    }
}
