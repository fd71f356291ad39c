//! The engine's side of the mirror deletes ([`crate::load::mirror`]): `ACTIVATE_VERSION` and
//! record versions handed to the pass tracker, rejected records kept from looking deleted,
//! and, after the input ended cleanly and the writer flushed, the deletes planned, guarded and
//! sent through the normal op path (plan → write → settle → ledger).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;

use serde_json::Value;

use crate::load::TargetError;
use crate::load::mirror::{Guards, Mirror, Planned, Tripped, delete_of};
use crate::load::route::Route;
use crate::singer::Object;
use crate::sink::{Op, Origin, Ticket};

use super::{Engine, MAX_IN_FLIGHT, Phase, Stream};

/// The mirror deletes' part of a run.
#[derive(Debug)]
pub(crate) struct MirrorRun {
    mirror: Mirror,
    /// The input's last STATE.
    last_state: Option<Value>,
    /// Deletes not yet handed to the writer.
    queue: VecDeque<Op>,
    /// The passes whose deletes this run sends (`None`: not at the deletes yet).
    deleting: Option<Vec<Planned>>,
}

impl MirrorRun {
    /// A run under `sync_mode: mirror`.
    pub(crate) fn new(mirror: Mirror) -> Self {
        MirrorRun {
            mirror,
            last_state: None,
            queue: VecDeque::new(),
            deleting: None,
        }
    }
}

impl<W: Write> Engine<W> {
    /// `ACTIVATE_VERSION`: a pass opens or closes (mirror), else it is noted once.
    pub(super) fn activate_version(&mut self, line: u64, stream: &str, version: u64) {
        let (Some(run), Some(ledger)) = (self.mirror.as_mut(), self.sync.ledger_mut()) else {
            if !self.warned_activate_version {
                self.warned_activate_version = true;
                tracing::info!(
                    line,
                    stream,
                    "ACTIVATE_VERSION: nothing to do unless sync_mode is mirror (deletes of a record come as _sdc_deleted_at)"
                );
            }
            return;
        };
        match run.mirror.activate(ledger, stream, version) {
            Ok(true) => tracing::info!(
                line,
                stream,
                version,
                "mirror: the pass closed; what it no longer holds is deleted once the input ends cleanly"
            ),
            Ok(false) => tracing::info!(line, stream, version, "mirror: a pass opened"),
            Err(err) => self.stop(TargetError::Ledger(err)),
        }
    }

    /// A RECORD of stream `index` with its `version`.
    pub(super) fn record_version(&mut self, index: usize, ticket: Ticket, version: Option<u64>) {
        let stream = &mut self.streams[index];
        if let Some(v) = version
            && stream.version != Some(v)
        {
            stream.version = Some(v);
            stream.versions.push((ticket.0, v));
        }
        let (Some(run), Some(ledger)) = (self.mirror.as_mut(), self.sync.ledger_mut()) else {
            return;
        };
        if let Err(err) = run.mirror.record(ledger, &stream.name, version) {
            self.stop(TargetError::Ledger(err));
        }
    }

    /// A STATE came (mirror: the last one says whether a pass is still under way).
    pub(super) fn state_in(&mut self, value: &Value) {
        if let Some(run) = self.mirror.as_mut() {
            run.last_state = Some(value.clone());
        }
    }

    /// A record was rejected: under mirror it is in the source all the same, so its ledger
    /// entry takes the pass's version; when its key cannot be read, its pass deletes nothing.
    pub(super) fn mirror_rejected(&mut self, index: usize, ticket: Ticket, record: &Object) {
        let Some(run) = self.mirror.as_mut() else {
            return;
        };
        // A delete of the mirror's own refused: it stays held, and the next pass tries again.
        if run.deleting.is_some() {
            return;
        }
        let stream = &self.streams[index];
        let Some(version) = stream.version_of(ticket) else {
            return;
        };
        let item = match &stream.route {
            Route::Write(map) => map.item(record).ok(),
            Route::Skip(_) | Route::Reject(_) => None,
        };
        match item {
            Some(item) => self.sync.present(&item, version),
            None => run.mirror.taint(&stream.name),
        }
    }

    /// The writer's flush returned: true when the run is done. After the input's flush, the
    /// deletes of the passes read through start (false); after theirs, the passes are done.
    pub(super) fn after_flush(&mut self) -> bool {
        let Some(run) = self.mirror.as_mut() else {
            return true;
        };
        if let Some(done) = run.deleting.take() {
            if self.failure.is_none()
                && self.tracker.unsettled() == 0
                && let Some(ledger) = self.sync.ledger_mut()
                && let Err(err) = Mirror::settled(ledger, &done)
            {
                self.failure = Some(TargetError::Ledger(err));
            }
            return true;
        }
        if !self.input_ended || self.failure.is_some() || self.tracker.unsettled() > 0 {
            return true;
        }
        self.check_reject_ratio(true);
        if self.failure.is_some() {
            return true;
        }
        match self.plan_deletes() {
            Ok(Some(planned)) => {
                self.queue_deletes(&planned);
                if let Some(run) = self.mirror.as_mut() {
                    run.deleting = Some(planned);
                }
                self.phase = Phase::Deleting;
                false
            }
            Ok(None) => true,
            Err(err) => {
                self.failure.get_or_insert(err);
                true
            }
        }
    }

    /// The passes read through, recorded and committed with the last safe state (printed
    /// first); their deletes, checked against the guards. `None`: nothing to delete, or a
    /// guard stopped them.
    fn plan_deletes(&mut self) -> Result<Option<Vec<Planned>>, TargetError> {
        let (Some(run), Some(ledger)) = (self.mirror.as_mut(), self.sync.ledger_mut()) else {
            return Ok(None);
        };
        let (by_name, streams) = (&self.by_name, &self.streams);
        let written = |name: &str| {
            by_name
                .get(name)
                .is_some_and(|&i| matches!(streams[i].route, Route::Write(_)))
        };
        let due = run.mirror.due(ledger, run.last_state.as_ref(), written)?;
        let guards = run.mirror.guards;
        // The last safe state, committed with the passes read through (pending until their
        // deletes are settled).
        self.emit(true);
        if self.failure.is_some() || !self.commit_ledger(None) || due.is_empty() {
            return Ok(None);
        }
        let Some(ledger) = self.sync.ledger_mut() else {
            return Ok(None);
        };
        let planned = Mirror::plan(ledger, &due)?;
        for p in &planned {
            tracing::info!(
                stream = %p.stream,
                version = p.version,
                deletes = p.stale.len(),
                held = p.held,
                "mirror: the pass was read through"
            );
        }
        let tripped: Vec<Tripped> = planned.iter().filter_map(|p| guards.check(p)).collect();
        self.guard(&tripped, guards)?;
        let Some(ledger) = self.sync.ledger_mut() else {
            return Ok(None);
        };
        Mirror::begin(ledger, &planned);
        if planned.iter().all(|p| p.stale.is_empty()) {
            Mirror::settled(ledger, &planned)?;
        }
        if !self.commit_ledger(None) || planned.iter().all(|p| p.stale.is_empty()) {
            return Ok(None);
        }
        Ok(Some(planned))
    }

    /// The guards that tripped: each is noted on its stream's counts (the report names it);
    /// without `--force-deletes` the first stops the deletes (exit 1), except under `--plan`,
    /// which shows the deletes and says that a run would stop there.
    fn guard(&mut self, tripped: &[Tripped], guards: Guards) -> Result<(), TargetError> {
        for t in tripped {
            let line = format!(
                "{} deletes of {} held ({:.1}%), past {}",
                t.deletes,
                t.held,
                t.ratio * 100.0,
                t.limit
            );
            let index = self.stream_index(&t.stream);
            self.streams[index].counts.delete_guard = Some(line.clone());
            if guards.force {
                tracing::warn!("--force-deletes: stream {:?}: deleting {line}", t.stream);
            } else if guards.plan {
                tracing::warn!(
                    "plan: stream {:?}: {line}: a run would stop before the first delete (exit 1) unless --force-deletes",
                    t.stream
                );
            }
        }
        let Some(first) = tripped.first().filter(|_| !guards.force && !guards.plan) else {
            return Ok(());
        };
        for t in &tripped[1..] {
            tracing::warn!(
                "mirror: stream {:?} too: {} deletes of {} held ({:.1}%), past {}",
                t.stream,
                t.deletes,
                t.held,
                t.ratio * 100.0,
                t.limit
            );
        }
        Err(TargetError::DeleteGuard {
            stream: first.stream.clone(),
            deletes: first.deletes,
            held: first.held,
            ratio: first.ratio,
            limit: first.limit.clone(),
        })
    }

    /// Each planned delete as an op of its stream (a ticket after every record of the input).
    fn queue_deletes(&mut self, planned: &[Planned]) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut queue = VecDeque::new();
        for p in planned {
            let index = self.stream_index(&p.stream);
            let key_field = match &self.streams[index].route {
                Route::Write(map) => map.key_field.clone(),
                Route::Skip(_) | Route::Reject(_) => "id".to_string(),
            };
            let name = self.streams[index].name.clone();
            for stale in &p.stale {
                let (item, record) = delete_of(stale, &key_field, &at);
                let ticket = self.tracker.issue(index as u32);
                self.streams[index].counts.mirror_deletes += 1;
                // sync_log hook: a delete the target made itself (line 0).
                if let Some(log) = self.sync_log.as_mut() {
                    log.routed(ticket, &name, 0, &item);
                }
                let origin = Arc::new(Origin {
                    stream: name.clone(),
                    line: 0,
                    record: record.into(),
                });
                queue.push_back(Op {
                    ticket,
                    item,
                    origin,
                });
            }
        }
        if let Some(run) = self.mirror.as_mut() {
            run.queue = queue;
        }
    }

    /// Hands queued deletes to the writer while fewer than [`MAX_IN_FLIGHT`] ops are unwritten;
    /// then drains.
    pub(super) fn feed_deletes(&mut self) {
        while self.phase == Phase::Deleting && self.dispatcher.has_room(MAX_IN_FLIGHT) {
            let next = match self.failure {
                None => self.mirror.as_mut().and_then(|r| r.queue.pop_front()),
                Some(_) => None,
            };
            match next {
                Some(op) => self.submit(op),
                None => {
                    self.dispatcher.dispatch_all();
                    self.phase = Phase::Draining;
                }
            }
        }
    }

    /// The stream named `name`, added when the input had none (a pending pass of an earlier
    /// run).
    fn stream_index(&mut self, name: &str) -> usize {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        let route = self.router.route(name);
        let kind = match &route {
            Route::Write(map) => Some(map.kind.as_str()),
            Route::Skip(_) | Route::Reject(_) => None,
        };
        self.by_name.insert(name.to_string(), self.streams.len());
        self.streams
            .push(Stream::new(name.into(), None, route, kind));
        self.streams.len() - 1
    }
}

impl Stream {
    /// The Singer version the stream was in when `ticket` was issued.
    pub(super) fn version_of(&self, ticket: Ticket) -> Option<u64> {
        let at = self.versions.partition_point(|(from, _)| *from <= ticket.0);
        at.checked_sub(1).map(|i| self.versions[i].1)
    }
}
