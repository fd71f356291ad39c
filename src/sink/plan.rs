//! Scheduling: a record's place in the input ([`Ticket`], [`Origin`], [`Op`]) and how the
//! engine orders and batches its write ([`OrderKey`], [`BatchKey`], [`Plan`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::model::{Item, Object};

/// A record's place in the input: the engine settles tickets in any order and prints a STATE
/// once every ticket before it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Ticket(pub u64);

/// Where a record came from, kept so a reject can quote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The input stream's name.
    pub stream: Arc<str>,
    /// The 1-based input line.
    pub line: u64,
    /// The record exactly as it came in.
    pub record: RecordText,
}

/// A record as its line wrote it: the raw JSON text of an object, kept as bytes (a reject
/// quotes it; nothing else reads it), so the record path builds no map of it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordText(Box<RawValue>);

impl RecordText {
    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The record as a map (for a reject). The text was parsed as an object when it was read,
    /// so this only fails on memory exhaustion; an empty map then.
    pub fn object(&self) -> Object {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl From<Box<RawValue>> for RecordText {
    fn from(raw: Box<RawValue>) -> Self {
        RecordText(raw)
    }
}

impl From<&Object> for RecordText {
    fn from(record: &Object) -> Self {
        // A map with string keys always serialises; `null` is never taken.
        RecordText(serde_json::value::to_raw_value(record).unwrap_or_default())
    }
}

impl From<Object> for RecordText {
    fn from(record: Object) -> Self {
        RecordText::from(&record)
    }
}

impl Default for RecordText {
    /// `{}`.
    fn default() -> Self {
        RecordText::from(&Object::new())
    }
}

impl PartialEq for RecordText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl std::fmt::Debug for RecordText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

/// One record handed to a sink.
#[derive(Debug, Clone)]
pub struct Op {
    /// Its place in the input.
    pub ticket: Ticket,
    /// The record in roster's model.
    pub item: Item,
    /// The original record, for rejects.
    pub origin: Arc<Origin>,
}

/// A key that orders writes: two ops sharing one are written in input order. Built from a key
/// space (`"user"`, `"group"`, …) and the key; a hash, so an unlucky collision only serialises
/// two writes that could have run together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderKey(pub u64);

impl OrderKey {
    /// The order key of `key` in `space`.
    pub fn new(space: &str, key: &str) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        space.hash(&mut hasher);
        key.hash(&mut hasher);
        OrderKey(hasher.finish())
    }

    /// A user's key.
    pub fn user(key: &str) -> Self {
        Self::new("user", key)
    }

    /// A group's key.
    pub fn group(key: &str) -> Self {
        Self::new("group", key)
    }
}

/// How long a batch may wait to fill and how big it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many ops per batch.
    pub max_items: usize,
    /// A batch that is not full is written after this long.
    pub linger: Duration,
}

/// Ops with equal batch keys may be written together in one [`Sink::write`] call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// The partition, e.g. `"userpilot delete users"` or `"appcues group g1 members"`.
    pub partition: String,
    /// Its limits (the first op that opens a batch sets them).
    pub limits: BatchLimitsKey,
}

/// [`BatchLimits`] as part of a hashable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchLimitsKey {
    /// At most this many ops per batch.
    pub max_items: usize,
    /// Linger in milliseconds.
    pub linger_ms: u64,
}

impl BatchKey {
    /// A partition with its limits.
    pub fn new(partition: impl Into<String>, limits: BatchLimits) -> Self {
        BatchKey {
            partition: partition.into(),
            limits: BatchLimitsKey {
                max_items: limits.max_items.max(1),
                linger_ms: u64::try_from(limits.linger.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }

    /// The limits.
    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: self.limits.max_items,
            linger: Duration::from_millis(self.limits.linger_ms),
        }
    }
}

/// How the engine schedules one op.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Writes that share any of these keys keep input order.
    pub keys: Vec<OrderKey>,
    /// `None`: written alone. `Some`: may share a batch with other ops of the same key.
    pub batch: Option<BatchKey>,
}

impl Plan {
    /// Written alone, ordered by these keys.
    pub fn single(keys: Vec<OrderKey>) -> Self {
        Plan { keys, batch: None }
    }

    /// Batched with others of the same batch key, ordered by these keys.
    pub fn batched(keys: Vec<OrderKey>, batch: BatchKey) -> Self {
        Plan {
            keys,
            batch: Some(batch),
        }
    }
}
