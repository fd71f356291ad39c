//! Memberships that arrive before their group or user.
//!
//! Writers that must find a membership's group and user at the vendor (SCIM, Guru) cannot write
//! it before the groups or users record that creates them, and taps do not all send groups and
//! users first (a SCIM tap's memberships ride on its groups listing, before the users). So for
//! those writers ([`crate::sink::Sink::holds_memberships`]) the engine holds a
//! membership whose group key or user key has not come in this run yet:
//!
//! - it is released (planned and handed to the writer, in input order) as soon as both keys
//!   have come, so it is written after the records that create them;
//! - what is still held when the input ends is released then: the writer looks the group and
//!   user up at the vendor (a replay of membership rejects without the users stream), and
//!   rejects only what it still cannot find, naming the key and what was missing.
//!
//! Memory is bounded: past [`DEFAULT_MEMORY_BOUND`] held memberships (or
//! `ROSTER_HELD_MEMBERSHIPS_IN_MEMORY`), every later membership goes to an anonymous temporary
//! file (`tempfile`, created 0600 and unlinked) and is replayed in input order at the end, so a
//! membership never overtakes an earlier one for the same group and user. Keys that came are
//! remembered as 64-bit hashes (a collision only releases a membership early, and the writer
//! then looks its keys up at the vendor).
//!
//! A held membership's ticket stays unsettled, so no STATE after it is printed until it is
//! written or rejected.

use crate::maps::{FastMap, FastSet};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::Props;
use crate::sink::{Action, Item, Kind, Op, Origin, RecordText, Ticket};

/// Held memberships kept in memory before the rest go to a temporary file: a held op is about
/// a kilobyte (the record, its item and its origin), so this is about 10 MB.
pub const DEFAULT_MEMORY_BOUND: usize = 10_000;

/// The environment variable that sets the memory bound (tests use a small one).
pub const MEMORY_BOUND_ENV: &str = "ROSTER_HELD_MEMBERSHIPS_IN_MEMORY";

/// The memory bound: [`MEMORY_BOUND_ENV`] when set to a number, else [`DEFAULT_MEMORY_BOUND`].
pub fn memory_bound_from_env() -> usize {
    std::env::var(MEMORY_BOUND_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MEMORY_BOUND)
}

fn hash(key: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key.as_bytes())
}

/// One spilled op, as a line of the temporary file.
#[derive(Debug, Serialize, Deserialize)]
struct Spilled {
    ticket: u64,
    stream: String,
    line: u64,
    record: RecordText,
    delete: bool,
    user_id: Option<String>,
    group_id: Option<String>,
    #[serde(default)]
    fields: Props,
    #[serde(default)]
    attributes: Props,
}

impl Spilled {
    fn of(op: &Op) -> Self {
        Spilled {
            ticket: op.ticket.0,
            stream: op.origin.stream.to_string(),
            line: op.origin.line,
            record: op.origin.record.clone(),
            delete: op.item.action == Action::Delete,
            user_id: op.item.user_id.clone(),
            group_id: op.item.group_id.clone(),
            fields: op.item.fields.clone(),
            attributes: op.item.attributes.clone(),
        }
    }

    fn into_op(self) -> Op {
        Op {
            ticket: Ticket(self.ticket),
            item: Item {
                kind: Kind::Memberships,
                action: if self.delete {
                    Action::Delete
                } else {
                    Action::Upsert
                },
                id: None,
                user_id: self.user_id,
                group_id: self.group_id,
                fields: self.fields.into_iter().collect(),
                attributes: self.attributes.into_iter().collect(),
            },
            origin: Arc::new(Origin {
                stream: self.stream.into(),
                line: self.line,
                record: self.record,
            }),
        }
    }
}

/// Why the spill file failed (the run stops: a held membership cannot be lost silently).
#[derive(Debug, thiserror::Error)]
#[error("cannot {doing} the temporary file of held memberships: {source}")]
pub struct SpillError {
    doing: &'static str,
    #[source]
    source: std::io::Error,
}

fn spill_err(doing: &'static str) -> impl FnOnce(std::io::Error) -> SpillError {
    move |source| SpillError { doing, source }
}

enum Spill {
    Writing(BufWriter<std::fs::File>),
    Reading(std::io::Lines<BufReader<std::fs::File>>),
}

/// The held memberships.
pub struct Held {
    bound: usize,
    users: FastSet<u64>,
    groups: FastSet<u64>,
    /// Held in memory, by ticket.
    waiting: BTreeMap<u64, Op>,
    by_user: FastMap<u64, Vec<u64>>,
    by_group: FastMap<u64, Vec<u64>>,
    spill: Option<Spill>,
    /// Memberships held at any point in the run.
    pub held: u64,
    /// Memberships that went to the temporary file.
    pub spilled: u64,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("in_memory", &self.waiting.len())
            .field("held", &self.held)
            .field("spilled", &self.spilled)
            .finish()
    }
}

impl Held {
    /// Nothing held; at most `bound` held memberships in memory.
    pub fn new(bound: usize) -> Self {
        Held {
            bound,
            users: FastSet::default(),
            groups: FastSet::default(),
            waiting: BTreeMap::new(),
            by_user: FastMap::default(),
            by_group: FastMap::default(),
            spill: None,
            held: 0,
            spilled: 0,
        }
    }

    /// Memberships held now (in memory or in the file).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.spill.is_none()
    }

    /// A users record with this key came: returns the memberships that now have both keys, in
    /// input order.
    pub fn user_came(&mut self, key: &str) -> Vec<Op> {
        let h = hash(key);
        if !self.users.insert(h) {
            return Vec::new();
        }
        let tickets = self.by_user.remove(&h).unwrap_or_default();
        self.release(tickets)
    }

    /// A groups record with this key came: like [`Held::user_came`].
    pub fn group_came(&mut self, key: &str) -> Vec<Op> {
        let h = hash(key);
        if !self.groups.insert(h) {
            return Vec::new();
        }
        let tickets = self.by_group.remove(&h).unwrap_or_default();
        self.release(tickets)
    }

    fn known(&self, op: &Op) -> (bool, bool) {
        let user = op.item.user_id.as_deref().map(hash);
        let group = op.item.group_id.as_deref().map(hash);
        (
            user.is_none_or(|h| self.users.contains(&h)),
            group.is_none_or(|h| self.groups.contains(&h)),
        )
    }

    fn release(&mut self, tickets: Vec<u64>) -> Vec<Op> {
        let mut out = Vec::new();
        for ticket in tickets {
            let ready = self
                .waiting
                .get(&ticket)
                .is_some_and(|op| self.known(op) == (true, true));
            if ready && let Some(op) = self.waiting.remove(&ticket) {
                out.push(op);
            }
        }
        out.sort_by_key(|op| op.ticket);
        out
    }

    /// A membership: `Ok(Some(op))` when it can go now, `Ok(None)` when it is held.
    pub fn offer(&mut self, op: Op) -> Result<Option<Op>, SpillError> {
        if let Some(Spill::Writing(file)) = &mut self.spill {
            // Once memberships spill, every later one does too: none may overtake a spilled
            // one for the same group and user.
            self.held += 1;
            self.spilled += 1;
            serde_json::to_writer(&mut *file, &Spilled::of(&op))
                .map_err(|e| spill_err("write")(std::io::Error::other(e)))?;
            file.write_all(b"\n").map_err(spill_err("write"))?;
            return Ok(None);
        }
        let (user, group) = self.known(&op);
        if user && group {
            return Ok(Some(op));
        }
        if self.waiting.len() >= self.bound {
            tracing::info!(
                "more than {} memberships are waiting for their group or user; holding the rest in a temporary file until the input ends",
                self.bound
            );
            let file = tempfile::tempfile().map_err(spill_err("create"))?;
            self.spill = Some(Spill::Writing(BufWriter::new(file)));
            return self.offer(op);
        }
        self.held += 1;
        let ticket = op.ticket.0;
        if !user && let Some(key) = op.item.user_id.as_deref() {
            self.by_user.entry(hash(key)).or_default().push(ticket);
        }
        if !group && let Some(key) = op.item.group_id.as_deref() {
            self.by_group.entry(hash(key)).or_default().push(ticket);
        }
        self.waiting.insert(ticket, op);
        Ok(None)
    }

    /// The input ended: the next held membership, in input order (memory first, then the
    /// file), or `None` when none is left.
    pub fn next_at_end(&mut self) -> Result<Option<Op>, SpillError> {
        if let Some((_, op)) = self.waiting.pop_first() {
            return Ok(Some(op));
        }
        self.by_user.clear();
        self.by_group.clear();
        if matches!(self.spill, Some(Spill::Writing(_)))
            && let Some(Spill::Writing(writer)) = self.spill.take()
        {
            let mut file = writer
                .into_inner()
                .map_err(|e| spill_err("write")(e.into_error()))?;
            file.seek(SeekFrom::Start(0)).map_err(spill_err("rewind"))?;
            self.spill = Some(Spill::Reading(BufReader::new(file).lines()));
        }
        let Some(Spill::Reading(lines)) = &mut self.spill else {
            return Ok(None);
        };
        match lines.next() {
            None => {
                self.spill = None;
                Ok(None)
            }
            Some(line) => {
                let line = line.map_err(spill_err("read"))?;
                let spilled: Spilled = serde_json::from_str(&line)
                    .map_err(|e| spill_err("read")(std::io::Error::other(e)))?;
                Ok(Some(spilled.into_op()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn membership(ticket: u64, group: &str, user: &str) -> Op {
        Op {
            ticket: Ticket(ticket),
            item: Item {
                kind: Kind::Memberships,
                action: Action::Upsert,
                id: None,
                user_id: Some(user.into()),
                group_id: Some(group.into()),
                fields: Default::default(),
                attributes: json!({"role": "x"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            },
            origin: Arc::new(Origin {
                stream: "memberships".into(),
                line: ticket + 1,
                record: json!({"group_id": group, "user_id": user})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into(),
            }),
        }
    }

    fn tickets(ops: &[Op]) -> Vec<u64> {
        ops.iter().map(|op| op.ticket.0).collect()
    }

    #[test]
    fn a_membership_waits_for_both_keys_and_known_ones_pass() {
        let mut held = Held::new(10);
        assert!(held.offer(membership(0, "g1", "u1")).unwrap().is_none());
        assert!(held.offer(membership(1, "g1", "u2")).unwrap().is_none());
        assert!(held.group_came("g1").is_empty(), "users still missing");
        assert_eq!(tickets(&held.user_came("u2")), vec![1]);
        assert_eq!(tickets(&held.user_came("u1")), vec![0]);
        assert!(held.user_came("u1").is_empty(), "a key comes once");
        // Both keys known: it goes at once.
        assert!(held.offer(membership(2, "g1", "u1")).unwrap().is_some());
        assert!(held.is_empty());
        assert_eq!(held.held, 2);
    }

    #[test]
    fn past_the_bound_memberships_spill_and_come_back_in_order() {
        let mut held = Held::new(2);
        for t in 0..5 {
            assert!(
                held.offer(membership(t, "g", &format!("u{t}")))
                    .unwrap()
                    .is_none()
            );
        }
        held.group_came("g");
        // In memory: released once its user comes.
        assert_eq!(tickets(&held.user_came("u1")), vec![1]);
        // Spilled ones wait for the end, even when their keys came.
        assert!(held.user_came("u3").is_empty());
        // A later membership with known keys spills too (it must not overtake).
        assert!(held.offer(membership(5, "g", "u1")).unwrap().is_none());
        assert_eq!(held.spilled, 4);
        let mut rest = Vec::new();
        while let Some(op) = held.next_at_end().unwrap() {
            rest.push(op);
        }
        assert_eq!(tickets(&rest), vec![0, 2, 3, 4, 5]);
        assert_eq!(rest[4].origin.line, 6);
        assert_eq!(rest[4].item.attributes["role"], "x");
        assert_eq!(rest[4].item.kind, Kind::Memberships);
        assert!(held.is_empty());
    }
}
