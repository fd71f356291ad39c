//! What [`super::Sync`] remembers of each op in flight, packed.
//!
//! A bulk run keeps tens of thousands of ops in flight while their jobs run (three files of
//! 25,000 rows), so what is kept per op decides the run's memory. A hash map of
//! `Ticket → Pending` cost 144 bytes a bucket (the entry key inline, the 128-bit hash aligned to
//! 16), doubled by the table's growth, plus the key's own allocation: about 270 bytes an op,
//! 19 MB at 75,000 ops in flight (heaptrack, BENCHMARKS.md "Issue 15, night: bulk"). Here each
//! op takes a fixed 40-byte [`Meta`] and its key's bytes in a text buffer, in chunks of
//! [`CHUNK`] consecutive tickets, found by shifting the ticket: no hashing per op, no growth
//! beyond one chunk, and a chunk is freed whole once its last op settles (ops settle roughly in
//! ticket order; a job's rows settle together).

use crate::ledger::{Entry, EntryKey};
use crate::maps::FastMap;
use crate::sink::{Action, Kind, PayloadHash, Ticket};

/// Tickets per chunk (a power of two: a ticket's chunk is a shift, its slot a mask).
const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;

/// A slot with nothing in it.
const EMPTY: u32 = u32::MAX;

/// What is remembered of one op in flight until it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    /// Its ledger key (`None`: no key, or no ledger).
    pub(super) key: Option<EntryKey>,
    /// The entry the ledger gets when the vendor accepts it.
    pub(super) entry: Entry,
    /// Whether the ledger (or a read) said the vendor held it before.
    pub(super) existed: bool,
    /// The op's kind.
    pub(super) kind: Kind,
    /// The op's action.
    pub(super) action: Action,
}

const HAS_KEY: u8 = 1;
const HAS_HASH: u8 = 2;
const HELD: u8 = 4;
const EXISTED: u8 = 8;
const HAS_VERSION: u8 = 16;
const DELETE: u8 = 32;

/// One op, packed: 40 bytes (the hash split in two `u64`s so nothing aligns to 16).
#[derive(Debug, Clone, Copy)]
struct Meta {
    hash: [u64; 2],
    version: u64,
    /// Where its key and group end in the chunk's text (they start where the previous op's
    /// group ended).
    key_end: u32,
    group_end: u32,
    flags: u8,
    kind: u8,
}

const KINDS: [Kind; 5] = [
    Kind::Users,
    Kind::Groups,
    Kind::Memberships,
    Kind::Events,
    Kind::Segments,
];

fn kind_index(kind: Kind) -> u8 {
    KINDS.iter().position(|k| *k == kind).unwrap_or(0) as u8
}

#[derive(Debug)]
struct Chunk {
    /// Index into `metas` per ticket of the chunk, or [`EMPTY`].
    slots: Vec<u32>,
    metas: Vec<Meta>,
    /// The keys and groups, one after another.
    text: String,
    /// Ops in the chunk not yet taken.
    live: u32,
}

impl Chunk {
    fn new() -> Self {
        Chunk {
            slots: vec![EMPTY; CHUNK],
            metas: Vec::new(),
            text: String::new(),
            live: 0,
        }
    }
}

/// The ops in flight, by ticket.
#[derive(Debug, Default)]
pub(super) struct PendingBook {
    chunks: FastMap<u64, Chunk>,
    len: usize,
}

impl PendingBook {
    /// Ops remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Remembers `pending` for `ticket` (replacing what was there).
    pub(super) fn insert(&mut self, ticket: Ticket, pending: Pending) {
        let _ = self.remove(ticket);
        let chunk = self
            .chunks
            .entry(ticket.0 >> CHUNK_BITS)
            .or_insert_with(Chunk::new);
        let mut flags = 0;
        let set = |flags: &mut u8, on: bool, bit: u8| {
            if on {
                *flags |= bit;
            }
        };
        let hash = pending.entry.hash.map_or(0, |h| h.0);
        set(&mut flags, pending.key.is_some(), HAS_KEY);
        set(&mut flags, pending.entry.hash.is_some(), HAS_HASH);
        set(&mut flags, pending.entry.held, HELD);
        set(&mut flags, pending.existed, EXISTED);
        set(&mut flags, pending.entry.version.is_some(), HAS_VERSION);
        set(&mut flags, pending.action == Action::Delete, DELETE);
        let (key_kind, key, group) = match &pending.key {
            Some(key) => (key.kind, key.key.as_str(), key.group.as_str()),
            None => (pending.kind, "", ""),
        };
        chunk.text.push_str(key);
        let key_end = chunk.text.len();
        chunk.text.push_str(group);
        let group_end = chunk.text.len();
        let (Ok(key_end), Ok(group_end), Ok(index)) = (
            u32::try_from(key_end),
            u32::try_from(group_end),
            u32::try_from(chunk.metas.len()),
        ) else {
            // Over 4 GB of keys in one chunk of 4096 ops cannot happen (keys are bounded by
            // the line limit); drop the text rather than index past it.
            chunk
                .text
                .truncate(chunk.text.len() - key.len() - group.len());
            return;
        };
        chunk.metas.push(Meta {
            hash: [(hash >> 64) as u64, hash as u64],
            version: pending.entry.version.unwrap_or(0),
            key_end,
            group_end,
            flags,
            kind: kind_index(pending.kind) | (kind_index(key_kind) << 4),
        });
        if let Some(slot) = chunk.slots.get_mut(slot_of(ticket)) {
            *slot = index;
            chunk.live += 1;
            self.len += 1;
        }
    }

    /// Takes what was remembered for `ticket`.
    pub(super) fn remove(&mut self, ticket: Ticket) -> Option<Pending> {
        let id = ticket.0 >> CHUNK_BITS;
        let chunk = self.chunks.get_mut(&id)?;
        let slot = chunk.slots.get_mut(slot_of(ticket))?;
        let index = std::mem::replace(slot, EMPTY);
        if index == EMPTY {
            return None;
        }
        let at = index as usize;
        let meta = *chunk.metas.get(at)?;
        let start = match at.checked_sub(1).and_then(|i| chunk.metas.get(i)) {
            Some(previous) => previous.group_end as usize,
            None => 0,
        };
        let key = chunk
            .text
            .get(start..meta.key_end as usize)
            .unwrap_or_default();
        let group = chunk
            .text
            .get(meta.key_end as usize..meta.group_end as usize)
            .unwrap_or_default();
        let on = |bit: u8| meta.flags & bit != 0;
        let kind = KINDS[usize::from(meta.kind & 0x0f) % KINDS.len()];
        let key_kind = KINDS[usize::from(meta.kind >> 4) % KINDS.len()];
        let pending = Pending {
            key: on(HAS_KEY).then(|| EntryKey {
                kind: key_kind,
                key: key.to_string(),
                group: group.to_string(),
            }),
            entry: Entry {
                hash: on(HAS_HASH).then(|| {
                    PayloadHash((u128::from(meta.hash[0]) << 64) | u128::from(meta.hash[1]))
                }),
                held: on(HELD),
                version: on(HAS_VERSION).then_some(meta.version),
            },
            existed: on(EXISTED),
            kind,
            action: if on(DELETE) {
                Action::Delete
            } else {
                Action::Upsert
            },
        };
        chunk.live -= 1;
        self.len -= 1;
        if chunk.live == 0 {
            self.chunks.remove(&id);
        }
        Some(pending)
    }
}

fn slot_of(ticket: Ticket) -> usize {
    (ticket.0 as usize) & (CHUNK - 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pending(i: u64) -> Pending {
        Pending {
            key: (i % 5 != 0).then(|| match i % 3 {
                0 => EntryKey::membership(format!("u{i}"), format!("g{i}é")),
                1 => EntryKey::new(Kind::Groups, format!("g-{i}")),
                _ => EntryKey::new(Kind::Users, String::new()),
            }),
            entry: Entry {
                hash: (i % 2 == 0).then_some(PayloadHash(u128::MAX - u128::from(i))),
                held: i % 3 == 0,
                version: (i % 4 == 0).then_some(i * 1000),
            },
            existed: i % 7 == 0,
            kind: KINDS[(i % 5) as usize],
            action: if i % 6 == 0 {
                Action::Delete
            } else {
                Action::Upsert
            },
        }
    }

    #[test]
    fn what_goes_in_comes_out_once_in_any_order() {
        let mut book = PendingBook::default();
        let tickets: Vec<u64> = (0..10_000).filter(|t| t % 11 != 3).collect();
        for t in &tickets {
            book.insert(Ticket(*t), pending(*t));
        }
        assert_eq!(book.len(), tickets.len());
        // Settle every other one first, then the rest backwards.
        for t in tickets.iter().step_by(2) {
            assert_eq!(book.remove(Ticket(*t)), Some(pending(*t)), "ticket {t}");
        }
        for t in tickets.iter().skip(1).step_by(2).rev() {
            assert_eq!(book.remove(Ticket(*t)), Some(pending(*t)), "ticket {t}");
            assert_eq!(book.remove(Ticket(*t)), None);
        }
        assert_eq!(book.len(), 0);
        assert!(book.chunks.is_empty(), "settled chunks are freed");
        assert_eq!(book.remove(Ticket(3)), None, "never inserted");
    }

    #[test]
    fn a_ticket_inserted_again_keeps_the_last_and_old_tickets_come_back() {
        let mut book = PendingBook::default();
        book.insert(Ticket(5), pending(5));
        book.insert(Ticket(5), pending(6));
        book.insert(Ticket(9_000_000), pending(9));
        // A held membership released at the end comes with an old ticket.
        book.insert(Ticket(1), pending(1));
        assert_eq!(book.len(), 3);
        assert_eq!(book.remove(Ticket(5)), Some(pending(6)));
        assert_eq!(book.remove(Ticket(1)), Some(pending(1)));
        assert_eq!(book.remove(Ticket(9_000_000)), Some(pending(9)));
        assert_eq!(book.len(), 0);
    }

    #[test]
    fn an_op_takes_a_fixed_forty_bytes_and_its_key() {
        assert_eq!(std::mem::size_of::<Meta>(), 40);
    }
}
