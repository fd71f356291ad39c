//! `target-roster --verify`: after the run, read back what it wrote where the vendor can read
//! ([`Sink::read`]) and report drift: records the vendor does not hold, and fields that differ
//! from what the run sent. Drift makes the run exit 3.
//!
//! [`VerifySink`] is a layer over the vendor's writer that keeps a **sample** of the upserts it
//! writes, for the kinds the writer reads: every one up to [`VERIFY_SAMPLE`], and past that a
//! uniform random sample of that many (reservoir sampling), so memory stays bounded (about a
//! kilobyte a sampled record) and the read-back costs at most [`VERIFY_SAMPLE`] requests
//! however large the input. A later record of the same key replaces the earlier one in the
//! sample, and a delete removes it, so a key is checked against what the run wrote last. The
//! layer relays the writer's settlements to the engine and notes which sampled records the
//! vendor accepted; only those are read back. Deletes, events and kinds the vendor cannot read
//! are not verified.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;

use crate::ledger::EntryKey;
use crate::sink::{
    Acks, Action, FieldChange, Holding, Item, Kind, NestedRule, Op, Outcome, Plan, Refusal,
    SendError, Settlement, Sink, SinkError, Ticket, WireStats,
};

use super::TargetError;
use super::report::{Report, plural};
use super::sync::entry_key;

/// Records read back at most: all of a run up to this many, a uniform sample past it.
pub const VERIFY_SAMPLE: usize = 10_000;

/// Reads in flight at once during the read-back (the transport paces them further).
const READ_CONCURRENCY: usize = 8;

/// Drift examples kept for the report and the log.
const EXAMPLES: usize = 20;

/// The ticket of the relay's barrier (no record has it: tickets count up from 0).
const BARRIER: Ticket = Ticket(u64::MAX);

#[derive(Debug)]
struct Sampled {
    ticket: Ticket,
    key: EntryKey,
    item: Item,
    stream: Arc<str>,
    line: u64,
    accepted: bool,
}

/// The reservoir.
#[derive(Debug, Default)]
struct Sample {
    slots: Vec<Sampled>,
    by_ticket: HashMap<Ticket, usize>,
    by_key: HashMap<EntryKey, usize>,
    /// Upserts offered (the population the sample is drawn from).
    offered: u64,
    rng: u64,
}

impl Sample {
    fn next_random(&mut self) -> u64 {
        // xorshift64*: enough for a uniform sample, no dependency.
        let mut x = self.rng.max(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn put(&mut self, index: usize, entry: Sampled) {
        self.by_ticket.insert(entry.ticket, index);
        self.by_key.insert(entry.key.clone(), index);
        if index == self.slots.len() {
            self.slots.push(entry);
        } else {
            let old = std::mem::replace(&mut self.slots[index], entry);
            self.by_ticket.remove(&old.ticket);
            if old.key != self.slots[index].key {
                self.by_key.remove(&old.key);
            }
        }
    }

    fn remove(&mut self, index: usize) {
        let old = self.slots.swap_remove(index);
        self.by_ticket.remove(&old.ticket);
        self.by_key.remove(&old.key);
        if let Some(moved) = self.slots.get(index) {
            self.by_ticket.insert(moved.ticket, index);
            self.by_key.insert(moved.key.clone(), index);
        }
    }

    fn offer(&mut self, op: &Op) {
        let Some(key) = entry_key(&op.item) else {
            return;
        };
        let existing = self.by_key.get(&key).copied();
        if op.item.action == Action::Delete {
            if let Some(index) = existing {
                self.remove(index);
            }
            return;
        }
        self.offered += 1;
        let entry = Sampled {
            ticket: op.ticket,
            key,
            item: op.item.clone(),
            stream: op.origin.stream.clone(),
            line: op.origin.line,
            accepted: false,
        };
        if let Some(index) = existing {
            self.put(index, entry);
        } else if self.slots.len() < VERIFY_SAMPLE {
            self.put(self.slots.len(), entry);
        } else {
            let pick = self.next_random() % self.offered;
            if let Ok(index) = usize::try_from(pick)
                && index < VERIFY_SAMPLE
            {
                self.put(index, entry);
            }
        }
    }

    fn settled(&mut self, ticket: Ticket, outcome: &Outcome) {
        if let Some(&index) = self.by_ticket.get(&ticket) {
            self.slots[index].accepted = *outcome == Outcome::Accepted;
        }
    }
}

/// Relays the writer's settlements to the engine, noting the sampled ones.
#[derive(Debug)]
struct Relay {
    acks: Acks,
    drained: Arc<Notify>,
}

/// The vendor's writer, with a sample of what it writes kept for the read-back.
pub struct VerifySink {
    inner: Arc<dyn Sink>,
    sample: Arc<Mutex<Sample>>,
    relay: OnceLock<Relay>,
}

impl VerifySink {
    /// `inner` with the sampling layer, and the handle that reads back after the run.
    pub fn wrap(inner: Arc<dyn Sink>) -> (Arc<dyn Sink>, Verifier) {
        let sample = Arc::new(Mutex::new(Sample::default()));
        let verifier = Verifier {
            sink: inner.clone(),
            sample: sample.clone(),
        };
        let sink = VerifySink {
            inner,
            sample,
            relay: OnceLock::new(),
        };
        (Arc::new(sink), verifier)
    }

    /// The acks the writer settles through: relayed to the engine's `acks`.
    fn relay(&self, acks: &Acks) -> &Relay {
        self.relay.get_or_init(|| {
            let (mine, mut settlements) = Acks::channel();
            let engine = acks.clone();
            let sample = self.sample.clone();
            let drained = Arc::new(Notify::new());
            let notify = drained.clone();
            tokio::spawn(async move {
                while let Some(settlement) = settlements.recv().await {
                    if settlement.ticket == BARRIER {
                        notify.notify_one();
                        continue;
                    }
                    sample
                        .lock()
                        .settled(settlement.ticket, &settlement.outcome);
                    engine.settle(settlement);
                }
            });
            Relay {
                acks: mine,
                drained,
            }
        })
    }
}

impl std::fmt::Debug for VerifySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifySink")
            .field("vendor", &self.inner.vendor())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Sink for VerifySink {
    fn vendor(&self) -> &'static str {
        self.inner.vendor()
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        self.inner.plan(op)
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        {
            let mut sample = self.sample.lock();
            for op in &batch {
                if op.item.kind != Kind::Events && self.inner.reads(op.item.kind) {
                    sample.offer(op);
                }
            }
        }
        let relay = self.relay(acks);
        self.inner.write(batch, &relay.acks).await
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        let relay = self.relay(acks);
        let flushed = self.inner.flush(&relay.acks).await;
        // Everything the writer settled before returning is ahead of the barrier: once the
        // relay reaches it, the engine has every settlement.
        relay.acks.settle(Settlement {
            ticket: BARRIER,
            outcome: Outcome::Skipped(String::new()),
            payload: None,
            origin: None,
        });
        relay.drained.notified().await;
        flushed
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.inner.check().await
    }

    fn stats(&self) -> WireStats {
        self.inner.stats()
    }

    fn holds_memberships(&self) -> bool {
        self.inner.holds_memberships()
    }

    fn nested_rule(&self) -> NestedRule {
        self.inner.nested_rule()
    }

    fn reads(&self, kind: Kind) -> bool {
        self.inner.reads(kind)
    }

    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        self.inner.read(item).await
    }
}

/// One record that drifted.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    /// The input stream.
    pub stream: String,
    /// The input line.
    pub line: u64,
    /// The record's key.
    pub key: String,
    /// `missing`, `changed` or `unreadable`.
    pub issue: &'static str,
    /// The fields that differ: what the vendor holds (`from`) and what the run sent (`to`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Why it could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What the read-back found (the report's `verify` object).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verified {
    /// One line for the summary.
    pub summary: String,
    /// Upserts of kinds the vendor can be read for that the run sent.
    pub written: u64,
    /// Of those, read back.
    pub checked: u64,
    /// True when `checked` is a sample of `written`.
    pub sampled: bool,
    /// Records the vendor does not hold.
    pub missing: u64,
    /// Records whose fields differ.
    pub changed: u64,
    /// Records whose read failed.
    pub unreadable: u64,
    /// The fields that differ, with how many records each.
    pub fields: BTreeMap<String, u64>,
    /// The first drifted records.
    pub examples: Vec<Drift>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("vendor", &self.sink.vendor())
            .finish_non_exhaustive()
    }
}

/// Reads back after the run.
pub struct Verifier {
    sink: Arc<dyn Sink>,
    sample: Arc<Mutex<Sample>>,
}

impl Verifier {
    /// Reads back the accepted sampled records.
    async fn read_back(&self) -> Result<Verified, SinkError> {
        let (slots, offered) = {
            let mut sample = self.sample.lock();
            let taken = std::mem::take(&mut *sample);
            (taken.slots, taken.offered)
        };
        let accepted: Vec<Sampled> = slots.into_iter().filter(|s| s.accepted).collect();
        let mut out = Verified {
            written: offered,
            checked: accepted.len() as u64,
            sampled: offered > VERIFY_SAMPLE as u64,
            ..Verified::default()
        };
        let sink = self.sink.clone();
        let mut reads = futures::stream::iter(accepted)
            .map(|s| {
                let sink = sink.clone();
                async move {
                    let holding = sink.read(&s.item).await;
                    (s, holding)
                }
            })
            .buffer_unordered(READ_CONCURRENCY);
        while let Some((s, holding)) = reads.next().await {
            let (issue, changes, reason) = match holding {
                Ok(Holding::Held(current)) if current.changes.is_empty() => continue,
                Ok(Holding::Unreadable) => continue,
                Ok(Holding::Held(current)) => ("changed", current.changes, None),
                Ok(Holding::Absent) => ("missing", Vec::new(), None),
                Err(err) => {
                    let refusal = super::holds::read_failed(sink.vendor(), "it", err)?;
                    ("unreadable", Vec::new(), Some(refusal.reason))
                }
            };
            match issue {
                "changed" => out.changed += 1,
                "missing" => out.missing += 1,
                _ => out.unreadable += 1,
            }
            for change in &changes {
                *out.fields.entry(change.field.clone()).or_default() += 1;
            }
            if out.examples.len() < EXAMPLES {
                out.examples.push(Drift {
                    stream: s.stream.to_string(),
                    line: s.line,
                    key: key_text(&s.key),
                    issue,
                    changes,
                    reason,
                });
            }
        }
        out.summary = summary_line(&out, sink.vendor());
        Ok(out)
    }

    /// After a run that succeeded: reads back, puts what it found into the report, and turns
    /// drift into the run's error (exit 3).
    pub async fn finish(
        self,
        result: Result<(), TargetError>,
        report: &mut Report,
    ) -> Result<(), TargetError> {
        result?;
        let verified = self.read_back().await?;
        for drift in &verified.examples {
            tracing::warn!(
                stream = %drift.stream,
                line = drift.line,
                key = %drift.key,
                "verify: {} at {}{}",
                drift.issue,
                self.sink.vendor(),
                describe(drift)
            );
        }
        let drifted = verified.missing + verified.changed;
        report.verify = serde_json::to_value(&verified).ok();
        if drifted == 0 {
            return Ok(());
        }
        let err = TargetError::Drift {
            drifted,
            checked: verified.checked,
            vendor: self.sink.vendor(),
        };
        report.outcome = crate::exit::one_line(&err);
        report.exit_code = crate::exit::ExitStatus::exit_code(&err);
        Err(err)
    }
}

fn key_text(key: &EntryKey) -> String {
    if key.group.is_empty() {
        key.key.clone()
    } else {
        format!("{} in {}", key.key, key.group)
    }
}

fn describe(drift: &Drift) -> String {
    if let Some(reason) = &drift.reason {
        return format!(": {reason}");
    }
    let fields: Vec<String> = drift
        .changes
        .iter()
        .map(|c| format!("{} is {} (the run sent {})", c.field, c.from, c.to))
        .collect();
    if fields.is_empty() {
        String::new()
    } else {
        format!(": {}", fields.join(", "))
    }
}

fn summary_line(v: &Verified, vendor: &str) -> String {
    if v.written == 0 {
        return format!(
            "nothing to read back (the run sent no upsert of a kind {vendor} can be read for)"
        );
    }
    let of = if v.sampled {
        format!("a sample of {} of the {} written", v.checked, v.written)
    } else {
        plural(v.checked, "record")
    };
    let mut line = format!(
        "read back {of}: {} missing, {} changed",
        v.missing, v.changed
    );
    if !v.fields.is_empty() {
        let fields: Vec<String> = v.fields.iter().map(|(f, n)| format!("{f} ×{n}")).collect();
        line.push_str(&format!(" ({})", fields.join(", ")));
    }
    if v.unreadable > 0 {
        line.push_str(&format!(", {} could not be read", v.unreadable));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Origin;

    fn op(ticket: u64, key: &str, action: Action) -> Op {
        Op {
            ticket: Ticket(ticket),
            item: Item {
                kind: Kind::Users,
                action,
                id: Some(key.into()),
                user_id: None,
                group_id: None,
                fields: Default::default(),
                attributes: Default::default(),
            },
            origin: Arc::new(Origin {
                stream: "users".into(),
                line: ticket + 1,
                record: Default::default(),
            }),
        }
    }

    #[test]
    fn the_sample_is_bounded_and_keeps_the_last_write_of_a_key() {
        let mut sample = Sample::default();
        for i in 0..(VERIFY_SAMPLE as u64 + 5000) {
            sample.offer(&op(i, &format!("u{i}"), Action::Upsert));
        }
        assert_eq!(sample.slots.len(), VERIFY_SAMPLE);
        assert_eq!(sample.by_ticket.len(), VERIFY_SAMPLE);
        assert_eq!(sample.by_key.len(), VERIFY_SAMPLE);
        let mut small = Sample::default();
        small.offer(&op(1, "a", Action::Upsert));
        small.offer(&op(2, "b", Action::Upsert));
        small.offer(&op(3, "a", Action::Upsert));
        assert_eq!(small.slots.len(), 2);
        assert!(!small.by_ticket.contains_key(&Ticket(1)));
        small.settled(Ticket(3), &Outcome::Accepted);
        assert!(small.slots[small.by_ticket[&Ticket(3)]].accepted);
        small.offer(&op(4, "b", Action::Delete));
        assert_eq!(small.slots.len(), 1);
        assert_eq!(small.by_key.len(), 1);
    }
}
