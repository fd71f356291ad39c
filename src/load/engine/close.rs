//! The end of a run: the ledger's last commit, outputs flushed, and the report.

use std::collections::BTreeMap;
use std::io::Write;

use crate::load::TargetError;
use crate::load::report::{Report, StreamCounts};

use super::Engine;

impl<W: Write> Engine<W> {
    pub(super) fn finish(mut self) -> (Result<(), TargetError>, Report) {
        if let Some(TargetError::Stopped { state_printed, .. }) = &mut self.failure {
            *state_printed = self.tally.states_out > 0;
        }
        if self.input_ended {
            self.warn_unused_overrides();
        }
        // Writes the vendor accepted after the last state: a later run need not send them.
        if let Err(err) = self.sync.commit(None) {
            self.failure.get_or_insert(TargetError::Ledger(err));
        }
        self.flush_outputs();
        let streams: BTreeMap<String, StreamCounts> = self
            .streams
            .iter()
            .map(|s| {
                let mut counts = s.counts.clone();
                counts.unprocessed = (counts.records_in + counts.mirror_deletes)
                    .saturating_sub(counts.sent + counts.rejected + counts.skipped);
                (s.name.to_string(), counts)
            })
            .collect();
        if let Some(held) = &self.held {
            self.tally.held_memberships = held.held;
            self.tally.spilled_memberships = held.spilled;
        }
        let reject_file = self
            .rejects
            .as_ref()
            .filter(|r| r.exists())
            .map(|r| r.path().display().to_string());
        let (outcome, code) = match &self.failure {
            None => ("ok".to_string(), 0),
            Some(err) => (
                crate::exit::one_line(err),
                crate::exit::ExitStatus::exit_code(err),
            ),
        };
        let mut report = self.tally.report(
            streams,
            self.sink.vendor(),
            self.dry.is_some(),
            self.sink.stats(),
            self.last_state.clone(),
            reject_file,
            outcome,
            code,
        );
        report.sync = Some(self.sync.summary());
        let result = match self.failure {
            None => Ok(()),
            Some(err) => Err(err),
        };
        (result, report)
    }

    fn warn_unused_overrides(&self) {
        let seen: Vec<&str> = self.streams.iter().map(|s| &*s.name).collect();
        for key in self.router.unused(&seen) {
            tracing::warn!(
                "streams.{key} in the config matched no stream of the input (streams read: {})",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            );
        }
    }

    /// The reject file, the dry-run output and stdout, flushed; the first failure is kept.
    fn flush_outputs(&mut self) {
        if let Some(rejects) = self.rejects.as_mut()
            && let Err(err) = rejects.flush()
            && self.failure.is_none()
        {
            self.failure = Some(TargetError::RejectFile(err));
        }
        // sync_log hook: the closing STATE.
        if let Some(log) = self.sync_log.take()
            && let Err(err) = log.finish()
            && self.failure.is_none()
        {
            self.failure = Some(TargetError::SyncLog(err));
        }
        if let Some(dry) = &self.dry {
            if let Some(state) = &self.last_state {
                dry.state(state);
            }
            if let Err(err) = dry.finish()
                && self.failure.is_none()
            {
                self.failure = Some(TargetError::DryRunOutput(err));
            }
        }
        if let Err(err) = self.out.flush()
            && self.failure.is_none()
        {
            self.failure = Some(TargetError::Stdout(err));
        }
    }
}
