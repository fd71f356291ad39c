//! Records written as two ops: a users row and the membership its `group_key` names. Both are
//! planned first (a membership that cannot be written rejects the row whole); each half settles
//! on its own, and the row is booked once, when the second half settles.

use std::io::Write;

use crate::sink::{Op, Outcome, Refusal, Settlement, Ticket};

use super::Engine;
use crate::load::sync::Class;

/// A reject reason for the membership a users row's `group_key` names.
pub(super) fn membership_reason(group: &str, reason: &str) -> String {
    format!("its membership in group {group:?} (from group_key): {reason}")
}

impl<W: Write> Engine<W> {
    /// A users row and the membership its `group_key` names, written as two ops: planned both
    /// first, so that a membership that cannot be written rejects the row whole and neither
    /// goes (a replay sends both).
    pub(super) fn submit_pair(&mut self, index: usize, op: Op, second: Op, group: String) {
        let (ticket, line) = (op.ticket, op.origin.line);
        let plan = match self.sink.plan(&op) {
            Ok(plan) => plan,
            Err(refusal) => {
                self.tracker.settle(second.ticket);
                // sync_log hook: the row is booked under the first half.
                if let Some(log) = self.sync_log.as_mut() {
                    log.forget(second.ticket);
                }
                self.book_reject(index, ticket, line, &op.origin.record.object(), refusal);
                return;
            }
        };
        match self.sink.plan(&second) {
            Ok(second_plan) => {
                self.pairs.insert(ticket, (second.ticket, None));
                self.pairs.insert(second.ticket, (ticket, Some(group)));
                self.dispatch(op, plan);
                self.dispatch(second, second_plan);
            }
            Err(refusal) => {
                self.tracker.settle(second.ticket);
                // sync_log hook: the row is booked under the first half.
                if let Some(log) = self.sync_log.as_mut() {
                    log.forget(second.ticket);
                }
                let refusal = Refusal {
                    reason: membership_reason(&group, &refusal.reason),
                    ..refusal
                };
                self.book_reject(index, ticket, line, &op.origin.record.object(), refusal);
            }
        }
    }

    /// Half of a record written as two ops: the first half waits (its ticket settled, nothing
    /// booked); the second books the record once, rejected if either half was, counted as the
    /// users half counts. Any other settlement passes through.
    pub(super) fn pair_settled(
        &mut self,
        mut settlement: Settlement,
        class: Option<Class>,
    ) -> Option<(Settlement, Option<Class>)> {
        let Some((other, group)) = self.pairs.remove(&settlement.ticket) else {
            return Some((settlement, class));
        };
        if let Some(group) = &group
            && let Outcome::Rejected(refusal) = &mut settlement.outcome
        {
            refusal.reason = membership_reason(group, &refusal.reason);
        }
        // sync_log hook: the row is booked under the half that settles last.
        if self.halves.contains_key(&other)
            && let Some(log) = self.sync_log.as_mut()
        {
            log.forget(other);
        }
        let Some((first, first_class)) = self.halves.remove(&other) else {
            self.tracker.settle(settlement.ticket);
            self.halves.insert(settlement.ticket, (settlement, class));
            return None;
        };
        // The users half is the one without a group.
        let class = if group.is_some() {
            first_class.or(class)
        } else {
            class.or(first_class)
        };
        let (outcome, origin) = match (first.outcome, settlement.outcome) {
            (Outcome::Rejected(refusal), _) => (Outcome::Rejected(refusal), first.origin),
            (_, Outcome::Rejected(refusal)) => (Outcome::Rejected(refusal), settlement.origin),
            (Outcome::Accepted, _) | (_, Outcome::Accepted) => (Outcome::Accepted, None),
            (Outcome::Skipped(why), Outcome::Skipped(_)) => (Outcome::Skipped(why), None),
        };
        let ticket: Ticket = settlement.ticket;
        Some((
            Settlement {
                ticket,
                outcome,
                payload: settlement.payload,
                origin,
            },
            class,
        ))
    }
}
