//! `target-roster --plan`: what a run would do, read against what the destination holds now,
//! without sending a single write.
//!
//! The engine runs as in a dry run (validation, routing, mapping, rejects, `sync_mode`; no
//! STATE on stdout, no reject file, no ledger write), but its sink is [`PlanSink`]: for each
//! record it asks the vendor's writer what the vendor holds ([`Sink::read`]: Userflow and
//! Appcues GETs, SCIM lookups) or, for what the vendor cannot read, the ledger, and says
//! whether the record would be created, updated (with the fields that change), left alone
//! (unchanged) or deleted, or left out by `sync_mode`. The records that would be sent go
//! through a second copy of the writer whose transport only counts requests, so the API-call
//! count is the writer's own (batching, lookups, jobs), not a guess. Under `sync_mode: mirror`
//! the engine's mirror ([`super::mirror`]) decides the deletes by the same rules as a run (a
//! pass read through to its close or a clean end; nothing without `ACTIVATE_VERSION`) and
//! sends them through this sink too; a guard that would stop them is named, not enforced.
//!
//! The per-stream summary goes to stderr, and into `--report`'s `plan` object;
//! `--plan-output FILE` gets one JSON line per record (its action and field diff) and the
//! would-be rejects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::config::{Resolved, SyncMode, TargetSettings};
use crate::ledger::Ledger;
use crate::sink::{
    Acks, Action, FieldChange, Holding, Item, Kind, NestedRule, Op, Plan, Refusal, SendError, Sink,
    SinkError, WireStats,
};

use super::dry_run::DryRunOutput;
use super::holds::{self, ReadKinds};
use super::report::{Report, plural};
use super::sync::{Sync, canonical_hash, entry_key};
use super::{TargetError, TargetRequest};

/// What the plan says of one record.
#[derive(Debug, Clone, PartialEq)]
enum Act {
    Create,
    Update,
    /// Created or updated: no ledger and no read can tell which.
    Upsert,
    Unchanged,
    Delete,
    LeftOut(&'static str),
    /// The read failed: the run would find out.
    Unknown(Refusal),
}

impl Act {
    fn name(&self) -> &'static str {
        match self {
            Act::Create => "create",
            Act::Update => "update",
            Act::Upsert => "upsert",
            Act::Unchanged => "unchanged",
            Act::Delete => "delete",
            Act::LeftOut(_) => "left_out",
            Act::Unknown(_) => "unknown",
        }
    }

    fn sends(&self) -> bool {
        matches!(self, Act::Create | Act::Update | Act::Upsert | Act::Delete)
    }
}

/// Where the plan learned what the destination holds.
const READ: &str = "read";
const LEDGER: &str = "ledger";
const NOTHING: &str = "nothing (no ledger, no read)";

struct Planned {
    act: Act,
    source: &'static str,
    changes: Vec<FieldChange>,
}

impl Planned {
    fn new(act: Act, source: &'static str) -> Self {
        Planned {
            act,
            source,
            changes: Vec::new(),
        }
    }
}

/// One stream's plan.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamPlan {
    /// The kind it is routed to.
    pub kind: Option<&'static str>,
    /// RECORD messages read.
    pub records_in: u64,
    /// Records a run would reject (validation, the vendor's rules), not counting `unknown`.
    pub rejected: u64,
    /// Records the vendor does not hold.
    pub create: u64,
    /// Records the vendor holds, with changes.
    pub update: u64,
    /// Records sent without a ledger or a read to tell create from update.
    pub upsert: u64,
    /// Records the vendor already holds as they are.
    pub unchanged: u64,
    /// The input's deletes and, under `sync_mode: mirror`, the target's own.
    pub delete: u64,
    /// Of `delete`: the target's own under `sync_mode: mirror` (records roster wrote that a
    /// pass read through no longer holds).
    pub mirror_deletes: u64,
    /// The guard that would stop this stream's mirror deletes (a run exits 1 there unless
    /// `--force-deletes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_guard: Option<String>,
    /// Left out by `sync_mode`, per mode.
    pub left_out: BTreeMap<&'static str, u64>,
    /// Records whose read failed.
    pub unknown: u64,
    /// Where what the destination holds came from (`read`, `ledger`, …).
    pub sources: BTreeSet<&'static str>,
    /// The fields updates change, with how many records change each.
    pub fields: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind_of_line: &'static str,
    stream: &'a str,
    line: u64,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<&'a str>,
    action: &'static str,
    source: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    changes: BTreeMap<&'a str, Change<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Change<'a> {
    from: &'a Value,
    to: &'a Value,
}

/// What the plan found, shared between the sink and the end of the run.
#[derive(Debug, Default)]
struct Book {
    streams: Mutex<BTreeMap<String, StreamPlan>>,
    /// Reads the run itself would make to decide `sync_mode` (`super::holds`).
    run_reads: std::sync::atomic::AtomicU64,
}

/// The plan's sink: reads, decides, writes plan lines, counts the requests a run would send.
pub struct PlanSink {
    real: Arc<dyn Sink>,
    counter: Arc<dyn Sink>,
    counter_acks: Acks,
    ledger: Option<Mutex<Ledger>>,
    change_detection: bool,
    mode: SyncMode,
    reads: ReadKinds,
    book: Arc<Book>,
    out: DryRunOutput,
}

impl PlanSink {
    fn ledger_entry(&self, item: &Item) -> Result<Option<crate::ledger::Entry>, SinkError> {
        let (Some(ledger), Some(key)) = (&self.ledger, entry_key(item)) else {
            return Ok(None);
        };
        ledger.lock().get(&key).map_err(|err| SinkError::Vendor {
            vendor: self.real.vendor(),
            detail: format!("the plan cannot read the ledger: {err}"),
        })
    }

    /// A failed read: the record's plan is "unknown" with the reason, or the run stops.
    fn unknown(&self, err: SendError) -> Result<Planned, SinkError> {
        let what = format!("what {} holds", self.real.vendor());
        let refusal = holds::read_failed(self.real.vendor(), &what, err)?;
        Ok(Planned::new(Act::Unknown(refusal), READ))
    }

    async fn classify(&self, item: &Item) -> Result<Planned, SinkError> {
        if item.kind == Kind::Events {
            return Ok(Planned::new(Act::Create, "events are always new"));
        }
        let entry = self.ledger_entry(item)?;
        let ledger_source = if self.ledger.is_some() {
            LEDGER
        } else {
            NOTHING
        };
        if item.action == Action::Delete {
            return Ok(Planned::new(Act::Delete, ledger_source));
        }
        if self.change_detection && entry.and_then(|e| e.hash) == Some(canonical_hash(item)) {
            return Ok(Planned::new(Act::Unchanged, LEDGER));
        }
        if self.reads.decides(self.mode, item) {
            let reads = match (self.mode, item.kind) {
                (SyncMode::UpdateOnly, Kind::Memberships) => 2,
                _ => 1,
            };
            self.book
                .run_reads
                .fetch_add(reads, std::sync::atomic::Ordering::Relaxed);
            match holds::left_out(self.real.as_ref(), self.mode, item).await {
                Ok(Some(mode)) => return Ok(Planned::new(Act::LeftOut(mode), READ)),
                Ok(None) => {}
                Err(err) => return self.unknown(err),
            }
        }
        if self.real.reads(item.kind) {
            match self.real.read(item).await {
                Ok(Holding::Absent) => return Ok(Planned::new(Act::Create, READ)),
                Ok(Holding::Held(current)) if current.changes.is_empty() => {
                    return Ok(Planned::new(Act::Unchanged, READ));
                }
                Ok(Holding::Held(current)) => {
                    return Ok(Planned {
                        act: Act::Update,
                        source: READ,
                        changes: current.changes,
                    });
                }
                Ok(Holding::Unreadable) => {}
                Err(err) => return self.unknown(err),
            }
        }
        Ok(match (&self.ledger, entry) {
            (None, _) => Planned::new(Act::Upsert, NOTHING),
            (Some(_), Some(e)) if e.held => Planned::new(Act::Update, LEDGER),
            (Some(_), _) => Planned::new(Act::Create, LEDGER),
        })
    }

    /// Books one record's plan and writes its line.
    fn book(&self, op: &Op, planned: &Planned) {
        let item = &op.item;
        let stream: &str = &op.origin.stream;
        {
            let mut streams = self.book.streams.lock();
            let plan = streams.entry(stream.to_string()).or_default();
            plan.kind = Some(item.kind.as_str());
            plan.sources.insert(planned.source);
            match &planned.act {
                Act::Create => plan.create += 1,
                Act::Update => plan.update += 1,
                Act::Upsert => plan.upsert += 1,
                Act::Unchanged => plan.unchanged += 1,
                Act::Delete => plan.delete += 1,
                Act::LeftOut(mode) => *plan.left_out.entry(mode).or_default() += 1,
                Act::Unknown(_) => plan.unknown += 1,
            }
            for change in &planned.changes {
                *plan.fields.entry(change.field.clone()).or_default() += 1;
            }
        }
        let reason = match &planned.act {
            Act::Unknown(refusal) => Some(refusal.reason.as_str()),
            Act::LeftOut(mode) => Some(*mode),
            _ => None,
        };
        self.out.line(&Line {
            kind_of_line: "plan",
            stream,
            line: op.origin.line,
            kind: item.kind,
            key: item.id.as_deref(),
            user_id: item.user_id.as_deref(),
            group_id: item.group_id.as_deref(),
            action: planned.act.name(),
            source: planned.source,
            changes: planned
                .changes
                .iter()
                .map(|c| {
                    (
                        c.field.as_str(),
                        Change {
                            from: &c.from,
                            to: &c.to,
                        },
                    )
                })
                .collect(),
            reason,
        });
    }
}

impl std::fmt::Debug for PlanSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanSink")
            .field("vendor", &self.real.vendor())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Sink for PlanSink {
    fn vendor(&self) -> &'static str {
        self.real.vendor()
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        self.real.plan(op)
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let mut sent = Vec::new();
        for op in batch {
            let planned = self.classify(&op.item).await?;
            self.book(&op, &planned);
            match planned.act {
                act if act.sends() => {
                    acks.accepted(&op, None);
                    sent.push(op);
                }
                Act::LeftOut(mode) => acks.skipped(&op, mode),
                Act::Unknown(refusal) => acks.rejected(&op, refusal, None),
                _ => acks.skipped(&op, super::sync::UNCHANGED),
            }
        }
        if !sent.is_empty() {
            // Counted, not sent: the counter's transport records and answers every request.
            self.counter.write(sent, &self.counter_acks).await?;
        }
        Ok(())
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        let _ = acks;
        self.counter.flush(&self.counter_acks).await
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.real.check().await
    }

    fn stats(&self) -> WireStats {
        self.real.stats()
    }

    fn holds_memberships(&self) -> bool {
        self.real.holds_memberships()
    }

    fn nested_rule(&self) -> NestedRule {
        self.real.nested_rule()
    }
}

/// A plan being made: what the end of the run needs.
pub struct Planning {
    book: Arc<Book>,
    counter: Arc<dyn Sink>,
    rate: Option<f64>,
    out: DryRunOutput,
}

impl std::fmt::Debug for Planning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planning")
            .field("vendor", &self.counter.vendor())
            .finish_non_exhaustive()
    }
}

/// The requests per second a run would go at: `requests_per_second`, else the vendor's
/// documented rate (`None`: the vendor documents none, and the run finds it from 429s).
pub fn run_rate(config: &Resolved) -> Option<f64> {
    config.common.requests_per_second.or(config.spec.write_rate)
}

impl Planning {
    /// Builds the plan's sink over `real` (the vendor's writer with its real transport) and
    /// `counter` (the same writer over a counting transport).
    pub fn start(
        request: &TargetRequest,
        settings: &TargetSettings,
        real: Arc<dyn Sink>,
        counter: Arc<dyn Sink>,
        sync: Sync,
        out: DryRunOutput,
    ) -> Result<(Arc<dyn Sink>, Sync, Planning), TargetError> {
        let ledger_path = sync.ledger().map(|l| l.path().to_path_buf());
        let account = super::sync::account(&request.config)?;
        let vendor = request.config.spec.name;
        let ledger = match &ledger_path {
            Some(path) => Ledger::open_read_only(path, vendor, &account)?.map(Mutex::new),
            None => None,
        };
        let reads = ReadKinds::of(real.as_ref());
        let sync = sync.reading(reads);
        let book = Arc::new(Book::default());
        let (counter_acks, settlements) = Acks::channel();
        // The counter's settlements are of no interest: with the receiver gone they are dropped.
        drop(settlements);
        let sink = PlanSink {
            real,
            counter: counter.clone(),
            counter_acks,
            change_detection: ledger.is_some()
                && settings.change_detection.unwrap_or(true)
                && !request.full_resync,
            ledger,
            mode: settings.sync_mode,
            reads,
            book: book.clone(),
            out: out.clone(),
        };
        let planning = Planning {
            book,
            counter,
            rate: run_rate(&request.config),
            out,
        };
        Ok((Arc::new(sink), sync, planning))
    }

    /// The end of a plan: the summary on stderr, the report (with its `plan`), the output file.
    pub fn finish(
        self,
        result: Result<(), TargetError>,
        mut report: Report,
        path: Option<&std::path::Path>,
    ) -> Result<(), TargetError> {
        let mut streams = std::mem::take(&mut *self.book.streams.lock());
        // What the engine decided before the plan's sink saw a record: rejects, and what the
        // ledger left out by `sync_mode` (the plan's own left-outs are counted there too).
        for (stream, counts) in &report.streams {
            let plan = streams.entry(stream.clone()).or_default();
            plan.kind = plan.kind.or(counts.kind);
            plan.records_in = counts.records_in;
            plan.rejected = counts.rejected.saturating_sub(plan.unknown);
            plan.left_out = counts.left_out.clone();
            // The engine's mirror deletes went through the plan's sink (counted in `delete`).
            plan.mirror_deletes = counts.mirror_deletes;
            plan.delete_guard = counts.delete_guard.clone();
        }
        let reads = report.http.requests;
        let calls = self.counter.stats().requests
            + self
                .book
                .run_reads
                .load(std::sync::atomic::Ordering::Relaxed);
        let eta = self.rate.filter(|r| *r > 0.0).map(|r| calls as f64 / r);
        let summary = summary_text(report.vendor, &streams, calls, reads, self.rate, eta);
        let mut stderr = std::io::stderr().lock();
        let _ = std::io::Write::write_all(&mut stderr, summary.as_bytes());
        drop(stderr);
        report.plan = serde_json::to_value(PlanReport {
            streams: &streams,
            api_calls: calls,
            reads,
            requests_per_second: self.rate,
            eta_seconds: eta,
        })
        .ok();
        if let Err(err) = self.out.finish() {
            return result.and(Err(TargetError::DryRunOutput(err)));
        }
        super::write_report(result, &report, path)
    }
}

#[derive(Serialize)]
struct PlanReport<'a> {
    streams: &'a BTreeMap<String, StreamPlan>,
    api_calls: u64,
    reads: u64,
    requests_per_second: Option<f64>,
    eta_seconds: Option<f64>,
}

/// `3 s`, `4 min`, `5.8 h`.
fn duration_text(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{:.0} s", seconds.ceil())
    } else if seconds < 5400.0 {
        format!("{:.0} min", (seconds / 60.0).ceil())
    } else {
        format!("{:.1} h", seconds / 3600.0)
    }
}

fn summary_text(
    vendor: &str,
    streams: &BTreeMap<String, StreamPlan>,
    calls: u64,
    reads: u64,
    rate: Option<f64>,
    eta: Option<f64>,
) -> String {
    let mut out = format!("target-roster plan for {vendor} (nothing was written):\n");
    for (name, p) in streams {
        let name = crate::cli::logging::escape(name);
        let mut parts = vec![
            format!("{} to create", p.create),
            format!("{} to update", p.update),
        ];
        if !p.fields.is_empty() {
            let fields: Vec<String> = p.fields.iter().map(|(f, n)| format!("{f} ×{n}")).collect();
            let last = parts.len() - 1;
            parts[last].push_str(&format!(" ({})", fields.join(", ")));
        }
        if p.upsert > 0 {
            parts.push(format!("{} to create or update", p.upsert));
        }
        parts.push(format!("{} unchanged", p.unchanged));
        parts.push(format!("{} to delete", p.delete));
        if let Some(guard) = &p.delete_guard {
            parts.push(format!("deletes stopped by a guard in a run: {guard}"));
        }
        for (mode, n) in &p.left_out {
            parts.push(format!("{n} left out by {mode}"));
        }
        if p.rejected > 0 {
            parts.push(format!("{} rejected", p.rejected));
        }
        if p.unknown > 0 {
            parts.push(format!("{} not readable (see --plan-output)", p.unknown));
        }
        let sources: Vec<&str> = p.sources.iter().copied().collect();
        out.push_str(&format!(
            "  {name} → {}: {} in: {}; what {vendor} holds from: {}\n",
            p.kind.unwrap_or("not written"),
            p.records_in,
            parts.join(", "),
            if sources.is_empty() {
                "-".to_string()
            } else {
                sources.join(", ")
            }
        ));
    }
    let pace = match (rate, eta) {
        (Some(rate), Some(eta)) => format!("at {rate}/s, about {}", duration_text(eta)),
        _ => format!("{vendor} documents no rate; the run finds its limit from 429 answers"),
    };
    out.push_str(&format!(
        "  api calls the run would make: {} ({pace}); this plan made {}\n",
        calls,
        plural(reads, "read")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration_text(2.2), "3 s");
        assert_eq!(duration_text(600.0), "10 min");
        assert_eq!(duration_text(20_833.0), "5.8 h");
    }

    #[test]
    fn the_summary_names_the_changing_fields_and_the_pace() {
        let mut streams = BTreeMap::new();
        let mut p = StreamPlan {
            kind: Some("users"),
            create: 1,
            update: 2,
            unchanged: 3,
            ..StreamPlan::default()
        };
        p.fields.insert("plan".into(), 2);
        p.sources.insert(READ);
        streams.insert("users".to_string(), p);
        let text = summary_text("appcues", &streams, 3, 6, Some(50.0), Some(0.06));
        assert!(
            text.contains("1 to create, 2 to update (plan ×2), 3 unchanged, 0 to delete"),
            "{text}"
        );
        assert!(text.contains("from: read"), "{text}");
        assert!(
            text.contains(
                "api calls the run would make: 3 (at 50/s, about 1 s); this plan made 6 reads"
            ),
            "{text}"
        );
    }
}
