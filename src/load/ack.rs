//! The ack tracker: Vector's ordered finalizer applied to Singer STATE.
//!
//! Every record gets a [`Ticket`] in input order. A STATE received after ticket `n` is *safe*
//! once every ticket below `n` is settled (accepted, skipped or rejected), whatever order the
//! vendor answered in. The tracker keeps one flag per ticket from the lowest unsettled one
//! onwards (a ring that moves forward as the low end settles) and the STATE values still
//! waiting for their records.

use std::collections::VecDeque;

use serde_json::Value;

use crate::sink::Ticket;

#[derive(Debug, Clone, Copy)]
struct Slot {
    settled: bool,
    stream: u32,
}

/// Tracks settled tickets and which STATE is safe to print.
#[derive(Debug, Default)]
pub struct AckTracker {
    /// The lowest unsettled ticket.
    low: u64,
    /// `slots[i]` is ticket `low + i`: settled yet, and the index of its stream.
    slots: VecDeque<Slot>,
    /// The next ticket to hand out.
    next: u64,
    /// STATE values waiting, each with the number of tickets it covers.
    waiting: VecDeque<(u64, Value)>,
    /// The newest safe STATE not yet taken.
    safe: Option<Value>,
    /// Tickets issued and not settled.
    open: u64,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands out the next ticket, for a record of stream number `stream`.
    pub fn issue(&mut self, stream: u32) -> Ticket {
        let ticket = Ticket(self.next);
        self.next += 1;
        self.open += 1;
        self.slots.push_back(Slot {
            settled: false,
            stream,
        });
        ticket
    }

    fn slot(&mut self, ticket: Ticket) -> Option<&mut Slot> {
        let offset = ticket.0.checked_sub(self.low)?;
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
    }

    /// The stream of an issued, unsettled ticket.
    pub fn stream_of(&mut self, ticket: Ticket) -> Option<u32> {
        self.slot(ticket).filter(|s| !s.settled).map(|s| s.stream)
    }

    /// Marks a ticket settled; false when it was settled already or never issued.
    pub fn settle(&mut self, ticket: Ticket) -> bool {
        let Some(slot) = self.slot(ticket) else {
            return false;
        };
        if slot.settled {
            return false;
        }
        slot.settled = true;
        self.open -= 1;
        while self.slots.front().is_some_and(|s| s.settled) {
            self.slots.pop_front();
            self.low += 1;
        }
        self.promote();
        true
    }

    /// Records a STATE: it covers every ticket issued so far.
    pub fn state(&mut self, value: Value) {
        let covers = self.next;
        // Consecutive states with no record between them: only the newest matters.
        if let Some(last) = self.waiting.back_mut()
            && last.0 == covers
        {
            last.1 = value;
        } else {
            self.waiting.push_back((covers, value));
        }
        self.promote();
    }

    fn promote(&mut self) {
        while let Some((covers, _)) = self.waiting.front() {
            if *covers > self.low {
                break;
            }
            if let Some((_, value)) = self.waiting.pop_front() {
                self.safe = Some(value);
            }
        }
    }

    /// The newest safe STATE, once; `None` when nothing new became safe.
    pub fn take_safe(&mut self) -> Option<Value> {
        self.safe.take()
    }

    /// True when a safe STATE is waiting to be taken.
    pub fn has_safe(&self) -> bool {
        self.safe.is_some()
    }

    /// Tickets issued and not yet settled.
    pub fn unsettled(&self) -> u64 {
        self.open
    }

    /// Tickets issued so far.
    pub fn issued(&self) -> u64 {
        self.next
    }

    /// The lowest unsettled ticket (equal to [`Self::issued`] when all are settled).
    pub fn low_water(&self) -> u64 {
        self.low
    }

    /// STATE messages still waiting for their records.
    pub fn states_waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_state_waits_for_every_earlier_record() {
        let mut t = AckTracker::new();
        t.state(json!({"s": 0}));
        assert_eq!(t.take_safe(), Some(json!({"s": 0})), "no records before it");
        let a = t.issue(0);
        let b = t.issue(0);
        t.state(json!({"s": 1}));
        let c = t.issue(0);
        t.state(json!({"s": 2}));
        t.settle(b);
        t.settle(c);
        assert_eq!(t.take_safe(), None, "a is still open");
        t.settle(a);
        assert_eq!(
            t.take_safe(),
            Some(json!({"s": 2})),
            "the newest safe state wins"
        );
        assert_eq!(t.unsettled(), 0);
        assert_eq!(t.low_water(), 3);
    }

    #[test]
    fn settles_out_of_order_and_ignores_strays() {
        let mut t = AckTracker::new();
        let tickets: Vec<Ticket> = (0..5).map(|_| t.issue(0)).collect();
        t.state(json!(1));
        for ticket in tickets.iter().rev() {
            assert_eq!(t.take_safe(), None);
            assert_eq!(t.stream_of(*ticket), Some(0));
            assert!(t.settle(*ticket));
        }
        assert!(!t.settle(Ticket(2)));
        assert!(!t.settle(Ticket(99)));
        assert_eq!(t.take_safe(), Some(json!(1)));
        assert_eq!(t.states_waiting(), 0);
    }

    #[test]
    fn consecutive_states_collapse() {
        let mut t = AckTracker::new();
        let a = t.issue(0);
        t.state(json!(1));
        t.state(json!(2));
        assert_eq!(t.states_waiting(), 1);
        t.settle(a);
        assert_eq!(t.take_safe(), Some(json!(2)));
    }
}
