//! Outcomes: settlements booked per stream (sent, skipped, rejected), the reject file, and the
//! limits that stop a run (`max_reject_ratio`, a vendor failing record after record).

use std::io::Write;

use crate::config::OnInvalid;
use crate::load::TargetError;
use crate::load::reject::Reject;
use crate::load::sync::Class;
use crate::load::sync_log::Action as LogAction;
use crate::singer::Object;
use crate::sink::{Outcome, Refusal, Settlement, SinkError, Ticket};

use super::{Engine, MAX_CONSECUTIVE_TRANSIENT, Phase, REJECT_RATIO_MIN_OUTCOMES};

impl<W: Write> Engine<W> {
    /// Stops the run when the share of rejects passed `max_reject_ratio`: at the end of the
    /// input (`at_end`), or during the run once [`REJECT_RATIO_MIN_OUTCOMES`] records have an
    /// outcome.
    pub(super) fn check_reject_ratio(&mut self, at_end: bool) {
        let Some(max) = self.max_reject_ratio else {
            return;
        };
        let (_, sent, rejected) = self.totals;
        let outcomes = sent + rejected + self.skipped;
        if outcomes == 0 || (!at_end && outcomes < REJECT_RATIO_MIN_OUTCOMES) {
            return;
        }
        let ratio = rejected as f64 / outcomes as f64;
        if ratio <= max {
            return;
        }
        let err = TargetError::RejectRatio {
            rejected,
            outcomes,
            ratio,
            max,
            at_end,
            reject_file: self
                .rejects
                .as_ref()
                .map(|r| r.path().display().to_string()),
        };
        if at_end {
            self.failure.get_or_insert(err);
        } else {
            self.stop(err);
        }
    }

    pub(super) fn duplicate_key(&mut self, line: u64, stream: &str, pointer: &str, record: Object) {
        let Some(&index) = self.by_name.get(stream) else {
            self.protocol(TargetError::Protocol {
                line,
                detail: format!(
                    "RECORD for stream {stream:?} before any SCHEMA for it (and its record repeats the key {pointer})"
                ),
            });
            return;
        };
        let ticket = self.tracker.issue(index as u32);
        self.totals.0 += 1;
        self.streams[index].counts.records_in += 1;
        self.book_reject(
            index,
            ticket,
            line,
            &record,
            Refusal::new(format!(
                "the record repeats the key {pointer}, so which value is meant is ambiguous"
            )),
        );
    }

    pub(super) fn book_reject(
        &mut self,
        index: usize,
        ticket: Ticket,
        line: u64,
        record: &Object,
        refusal: Refusal,
    ) {
        self.totals.2 += 1;
        self.mirror_rejected(index, ticket, record);
        let stream = &mut self.streams[index];
        stream.counts.rejected += 1;
        if let Some(dry) = &self.dry {
            dry.reject(&stream.name, line, record, &refusal);
        } else if let Some(rejects) = self.rejects.as_mut() {
            let schema = stream
                .schema
                .as_ref()
                .map(|s| (&s.message, stream.generation));
            let written = rejects.write(&Reject {
                stream: &stream.name,
                schema,
                line,
                record,
                refusal: &refusal,
                kind: stream.kind,
            });
            if let Err(err) = written {
                self.stop(TargetError::RejectFile(err));
                return;
            }
        }
        // sync_log hook: rejected.
        if let Some(log) = self.sync_log.as_mut() {
            log.rejected(ticket, &stream.name, line, record, &refusal);
        }
        tracing::debug!(line, stream = %stream.name, "rejected: {refusal}");
        if self.on_invalid == OnInvalid::Fail {
            // Like a protocol error: what came before is finished, nothing after is sent. The
            // record stays unsettled, so no state covers it and a rerun sends it again.
            let name = stream.name.to_string();
            self.protocol(TargetError::Invalid {
                line,
                stream: name,
                reason: refusal.to_string(),
            });
            return;
        }
        self.tracker.settle(ticket);
        if self.phase != Phase::Stopping {
            self.check_reject_ratio(false);
        }
    }

    pub(super) fn settled(&mut self, settlement: Settlement) {
        let Some(index) = self.tracker.stream_of(settlement.ticket) else {
            tracing::debug!(
                ticket = settlement.ticket.0,
                "ignoring a repeated settlement"
            );
            return;
        };
        let index = index as usize;
        let class = self.sync.settled(
            settlement.ticket,
            &settlement.outcome,
            &self.streams[index].name,
        );
        if self.sync.due() {
            self.commit_ledger(None);
        }
        let Some((settlement, class)) = self.pair_settled(settlement, class) else {
            return;
        };
        match settlement.outcome {
            Outcome::Accepted => {
                // sync_log hook: created, updated or deleted where the ledger tells, else sent.
                if let Some(log) = self.sync_log.as_mut() {
                    let action = match class {
                        Some(Class::Created) => Some(LogAction::Created),
                        Some(Class::Updated) => Some(LogAction::Updated),
                        Some(Class::Deleted) => Some(LogAction::Deleted),
                        Some(Class::Upserted) | None => None,
                    };
                    log.settled(settlement.ticket, action, None);
                }
                self.consecutive_transient = 0;
                self.totals.1 += 1;
                self.streams[index].counts.accepted(class);
                self.tracker.settle(settlement.ticket);
            }
            Outcome::Skipped(why) => {
                // sync_log hook: skipped by the writer, or unchanged / left out by the sync mode.
                if let Some(log) = self.sync_log.as_mut() {
                    log.settled(settlement.ticket, None, Some(&why));
                }
                self.skipped += 1;
                self.streams[index].counts.skip(why);
                self.tracker.settle(settlement.ticket);
            }
            Outcome::Rejected(refusal) => {
                let transient = refusal.transient;
                let (line, record) = match &settlement.origin {
                    Some(origin) => (origin.line, origin.record.object()),
                    None => (0, Object::new()),
                };
                self.book_reject(index, settlement.ticket, line, &record, refusal);
                if transient {
                    self.consecutive_transient += 1;
                    if self.consecutive_transient >= MAX_CONSECUTIVE_TRANSIENT {
                        self.stop(TargetError::Sink(SinkError::Unreachable {
                            vendor: self.sink.vendor(),
                            detail: format!(
                                "{MAX_CONSECUTIVE_TRANSIENT} records in a row failed past the retry budget (the last at line {line})"
                            ),
                        }));
                    }
                } else {
                    self.consecutive_transient = 0;
                }
            }
        }
    }
}
