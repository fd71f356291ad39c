//! What a run did: per-stream counts, the wire counters, the summary on stderr, the JSON report
//! (`--report FILE`) and the progress bar (only when stderr is a terminal).
//!
//! The summary avoids the words Meltano's loader test looks for ("error", "exception"), so a
//! clean run never reads as a failed one.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::sync::{Class, SyncSummary, UNCHANGED};
use crate::sink::WireStats;

/// Counts for one input stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamCounts {
    /// The kind it was routed to (`null` when not written).
    pub kind: Option<&'static str>,
    /// RECORD messages read.
    pub records_in: u64,
    /// Accepted by the vendor.
    pub sent: u64,
    /// Rejected (see the reject file).
    pub rejected: u64,
    /// Skipped: unrouted streams, `kind: "skip"`, or nothing to send.
    pub skipped: u64,
    /// Read but given no outcome, because the run stopped first (a fatal error, a signal): no
    /// state covers them, so a rerun sends them.
    /// `in + mirror_deletes = sent + rejected + skipped + unprocessed`.
    pub unprocessed: u64,
    /// Why records were skipped (the first reason seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Of `sent`: upserts of records the ledger did not hold, and events.
    pub created: u64,
    /// Of `sent`: upserts of records the ledger held.
    pub updated: u64,
    /// Of `sent`: deletes.
    pub deleted: u64,
    /// Of `sent`: upserts without a ledger (created or updated, roster cannot tell).
    #[serde(skip_serializing_if = "is_zero")]
    pub upserted: u64,
    /// Of `skipped`: the vendor already accepted this exact payload (the ledger).
    pub unchanged: u64,
    /// Of `skipped`: left out by `sync_mode`, per mode.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub left_out: BTreeMap<&'static str, u64>,
    /// Deletes the target made itself for records a full pass no longer holds (`sync_mode:
    /// mirror`): ops without an input record, counted in `sent` (as `deleted`), `rejected` or
    /// `skipped` like the records.
    #[serde(skip_serializing_if = "is_zero")]
    pub mirror_deletes: u64,
    /// `sync_mode: mirror`: the guard that stopped (or, under `--plan`, would stop) this
    /// stream's deletes, in its one line's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_guard: Option<String>,
    /// Users records whose email or key duplicates an earlier record's identity
    /// (`on_duplicate_identity`; counted whether warned about or rejected).
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicate_identities: u64,
}

impl StreamCounts {
    /// One record accepted, counted as `class` says (`None`: as an upsert of unknown kind).
    pub fn accepted(&mut self, class: Option<Class>) {
        self.sent += 1;
        match class.unwrap_or(Class::Upserted) {
            Class::Created => self.created += 1,
            Class::Updated => self.updated += 1,
            Class::Deleted => self.deleted += 1,
            Class::Upserted => self.upserted += 1,
        }
    }

    /// One record skipped for `why`.
    pub fn skip(&mut self, why: String) {
        self.skipped += 1;
        match why.as_str() {
            UNCHANGED => self.unchanged += 1,
            "update_only" => *self.left_out.entry("update_only").or_default() += 1,
            "create_only" => *self.left_out.entry("create_only").or_default() += 1,
            _ => {}
        }
        if self.skip_reason.is_none() {
            self.skip_reason = Some(why);
        }
    }

    /// Adds `other`'s counts (not its kind or first reason).
    fn add(&mut self, other: &StreamCounts) {
        self.records_in += other.records_in;
        self.sent += other.sent;
        self.rejected += other.rejected;
        self.skipped += other.skipped;
        self.unprocessed += other.unprocessed;
        self.duplicate_identities += other.duplicate_identities;
        self.mirror_deletes += other.mirror_deletes;
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.upserted += other.upserted;
        self.unchanged += other.unchanged;
        for (mode, n) in &other.left_out {
            *self.left_out.entry(mode).or_default() += n;
        }
    }
}

/// The run report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The vendor written to.
    pub vendor: &'static str,
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Wall time in seconds.
    pub duration_seconds: f64,
    /// Per input stream.
    pub streams: BTreeMap<String, StreamCounts>,
    /// Sums over the streams.
    pub totals: StreamCounts,
    /// Requests, retries, 429s, time waiting on rate limits.
    pub http: WireStats,
    /// STATE messages received.
    pub states_in: u64,
    /// State lines printed on stdout.
    pub states_out: u64,
    /// Memberships held until their group and user had come (or the input ended), when the
    /// writer needs both to exist (SCIM, Guru).
    #[serde(skip_serializing_if = "is_zero")]
    pub held_memberships: u64,
    /// Of those, how many waited in a temporary file (past the in-memory bound).
    #[serde(skip_serializing_if = "is_zero")]
    pub spilled_memberships: u64,
    /// The last state printed (or, in a dry run, the one a real run would have printed).
    pub last_state: Option<Value>,
    /// Where rejects went, when there were any or the file was configured.
    pub reject_file: Option<String>,
    /// `ok`, or what stopped the run.
    pub outcome: String,
    /// The exit code.
    pub exit_code: u8,
    /// The ledger, change detection and the sync mode (absent when the run stopped before
    /// they were set up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSummary>,
    /// `--plan`: what a run would do, per stream (`super::plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Value>,
    /// `--verify`: what the read-back found (`super::verify`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Value>,
}

/// Live counters plus the progress bar.
#[derive(Debug)]
pub struct Tally {
    started: Instant,
    started_at: String,
    /// STATE messages received.
    pub states_in: u64,
    /// State lines printed.
    pub states_out: u64,
    /// Memberships held for their group or user.
    pub held_memberships: u64,
    /// Held memberships that went to a temporary file.
    pub spilled_memberships: u64,
    bar: Option<ProgressBar>,
    last_tick: Instant,
}

/// How often the progress bar is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// `1 record`, `2 records`.
pub fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {noun}s")
    }
}

/// The progress bar's rate: whole records per second.
fn whole_rate(per_sec: f64) -> String {
    format!("{:.0}/s", per_sec.max(0.0))
}

/// The progress bar's line.
const PROGRESS_TEMPLATE: &str = "{spinner} {elapsed_precise} {pos} records ({rate}) {msg}";

impl Tally {
    /// Starts counting; draws a progress bar when stderr is a terminal.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(PROGRESS_TEMPLATE)
                    .map(|style| {
                        style.with_key(
                            "rate",
                            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                                let _ = w.write_str(&whole_rate(state.per_sec()));
                            },
                        )
                    })
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            // Log lines go through the bar (above it), so a warning never tears it.
            crate::cli::logging::set_progress_bar(Some(bar.clone()));
            bar
        });
        Tally {
            started: Instant::now(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            states_in: 0,
            states_out: 0,
            held_memberships: 0,
            spilled_memberships: 0,
            bar,
            last_tick: Instant::now(),
        }
    }

    /// Redraws the progress bar now and then.
    pub fn progress(&mut self, records: u64, sent: u64, rejected: u64, in_flight: usize) {
        let Some(bar) = &self.bar else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(self.last_tick) < PROGRESS_EVERY {
            return;
        }
        self.last_tick = now;
        bar.set_position(records);
        bar.set_message(format!(
            "sent {sent}, rejected {rejected}, in flight {in_flight}"
        ));
    }

    /// Builds the report.
    #[allow(clippy::too_many_arguments)]
    pub fn report(
        &self,
        streams: BTreeMap<String, StreamCounts>,
        vendor: &'static str,
        dry_run: bool,
        http: WireStats,
        last_state: Option<Value>,
        reject_file: Option<String>,
        outcome: String,
        exit_code: u8,
    ) -> Report {
        if let Some(bar) = &self.bar {
            crate::cli::logging::set_progress_bar(None);
            bar.finish_and_clear();
        }
        let mut totals = StreamCounts::default();
        for c in streams.values() {
            totals.add(c);
        }
        Report {
            vendor,
            dry_run,
            started_at: self.started_at.clone(),
            duration_seconds: self.started.elapsed().as_secs_f64(),
            streams,
            totals,
            http,
            states_in: self.states_in,
            states_out: self.states_out,
            held_memberships: self.held_memberships,
            spilled_memberships: self.spilled_memberships,
            last_state,
            reject_file,
            outcome,
            exit_code,
            sync: None,
            plan: None,
            verify: None,
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

impl Report {
    /// The summary for stderr, one line per stream.
    pub fn summary(&self) -> String {
        let mut out = self.headline();
        let sent = if self.dry_run { "mapped" } else { "sent" };
        for (name, c) in &self.streams {
            // Stream names and reasons come from the input: escaped like every log value.
            let name = crate::cli::logging::escape(name);
            out.push_str(&format!(
                "  {name} → {}: {} in, {} {sent}, {} rejected, {} skipped{}{}{}\n",
                c.kind.unwrap_or("not written"),
                c.records_in,
                c.sent,
                c.rejected,
                c.skipped,
                unprocessed(c.unprocessed),
                c.skip_reason
                    .as_deref()
                    .filter(|r| !matches!(*r, UNCHANGED | "update_only" | "create_only"))
                    .map(|r| format!(" ({})", crate::cli::logging::escape_max(r, 4096)))
                    .unwrap_or_default(),
                breakdown(c),
            ));
        }
        if self.totals.unprocessed > 0 {
            out.push_str(&format!(
                "  unprocessed: {} read but not sent because the run stopped first; no state covers them, so a rerun sends them\n",
                plural(self.totals.unprocessed, "record")
            ));
        }
        self.footer(&mut out);
        out
    }

    /// The first line: the run, its speed and the totals.
    fn headline(&self) -> String {
        let verb = if self.dry_run { "dry run" } else { "run" };
        let rate = if self.duration_seconds > 0.0 {
            self.totals.records_in as f64 / self.duration_seconds
        } else {
            0.0
        };
        let sent = if self.dry_run { "mapped" } else { "sent" };
        // The columns always add up to the records read: what the run stopped before giving an
        // outcome is shown as "unprocessed".
        format!(
            "target-roster {verb} to {}: {} in {:.1} s ({:.0}/s): {} {sent}, {} rejected, {} skipped{}{}\n",
            self.vendor,
            plural(self.totals.records_in, "record"),
            self.duration_seconds,
            rate,
            self.totals.sent,
            self.totals.rejected,
            self.totals.skipped,
            unprocessed(self.totals.unprocessed),
            breakdown(&self.totals),
        )
    }

    /// The wire, state, held-membership, ledger and reject lines.
    fn footer(&self, out: &mut String) {
        if let Some(line) = self
            .verify
            .as_ref()
            .and_then(|v| v.get("summary"))
            .and_then(Value::as_str)
        {
            out.push_str(&format!("  verify: {line}\n"));
        }
        if self.totals.duplicate_identities > 0 {
            out.push_str(&format!(
                "  duplicate identities: {} (one email on several user keys, or keys that differ only in case or whitespace; see on_duplicate_identity)\n",
                plural(self.totals.duplicate_identities, "record")
            ));
        }
        let h = &self.http;
        out.push_str(&format!(
            "  http: {}, {}, {} answered 429, {} answered 5xx, {} without an answer, {:.1} s waiting on rate limits (summed over requests)\n",
            plural(h.requests, "request"),
            plural(h.retries, "retry"),
            h.status_429,
            h.status_5xx,
            h.transport_errors,
            h.rate_limit_wait_seconds
        ));
        out.push_str(&format!(
            "  state: {} received, {} written to stdout\n",
            self.states_in, self.states_out
        ));
        if self.held_memberships > 0 {
            out.push_str(&format!(
                "  held: {} ({} in a temporary file)\n",
                if self.held_memberships == 1 {
                    "1 membership waited for its group or user".to_string()
                } else {
                    format!(
                        "{} memberships waited for their group or user",
                        self.held_memberships
                    )
                },
                self.spilled_memberships
            ));
        }
        if let Some(sync) = &self.sync
            && let Some(ledger) = &sync.ledger
        {
            out.push_str(&format!(
                "  ledger: {}, change detection {}, sync_mode {}\n",
                crate::cli::logging::escape(ledger),
                if sync.change_detection { "on" } else { "off" },
                sync.sync_mode
            ));
        }
        if self.totals.rejected > 0
            && let Some(path) = &self.reject_file
        {
            out.push_str(&format!(
                "  rejects: {} in {path} (replay them with --input {path})\n",
                plural(self.totals.rejected, "record")
            ));
        }
    }

    /// Writes the summary to stderr.
    pub fn print_summary(&self) {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(self.summary().as_bytes());
        let _ = stderr.flush();
    }

    /// Writes the JSON report (`0600`: it can name records' streams and the reject file).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::from)?;
        crate::fsutil::write_private(path, &text)
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `, 2 unprocessed`, or nothing.
fn unprocessed(n: u64) -> String {
    if n > 0 {
        format!(", {n} unprocessed")
    } else {
        String::new()
    }
}

/// `; 1 created, 2 updated, 27 unchanged, 1 update_only`: how the ledger and the sync mode
/// split `sent` and `skipped` (only the parts that are not zero; nothing without any).
fn breakdown(c: &StreamCounts) -> String {
    let mut parts: Vec<String> = [
        (c.created, "created"),
        (c.updated, "updated"),
        (c.deleted, "deleted"),
        (c.unchanged, "unchanged"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    for (mode, n) in &c.left_out {
        parts.push(format!("{n} {mode}"));
    }
    if c.mirror_deletes > 0 {
        // Ops the target made itself: why the outcomes add up to more than the records read.
        parts.push(format!(
            "{} mirror {} (not in the input)",
            c.mirror_deletes,
            if c.mirror_deletes == 1 {
                "delete"
            } else {
                "deletes"
            }
        ));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("; {}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_streams_and_never_says_error() {
        let tally = Tally::new();
        let mut streams = BTreeMap::new();
        streams.insert(
            "users".to_string(),
            StreamCounts {
                kind: Some("users"),
                records_in: 3,
                sent: 2,
                rejected: 1,
                ..StreamCounts::default()
            },
        );
        streams.insert(
            "meltano_test_stream".to_string(),
            StreamCounts {
                records_in: 1,
                skipped: 1,
                skip_reason: Some("names no kind".into()),
                ..StreamCounts::default()
            },
        );
        let report = tally.report(
            streams,
            "appcues",
            false,
            WireStats::default(),
            None,
            Some("r.ndjson".into()),
            "ok".into(),
            0,
        );
        let summary = report.summary();
        assert!(
            summary.contains("users → users: 3 in, 2 sent, 1 rejected"),
            "{summary}"
        );
        assert!(
            summary.contains("meltano_test_stream → not written"),
            "{summary}"
        );
        assert!(summary.contains("r.ndjson"), "{summary}");
        let lower = summary.to_lowercase();
        assert!(
            !lower.contains("error") && !lower.contains("exception"),
            "{summary}"
        );
        assert_eq!(report.totals.records_in, 4);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["streams"]["users"]["rejected"], 1);
        assert_eq!(json["http"]["status_429"], 0);
    }

    #[test]
    fn counts_agree_in_number_and_add_up_to_the_records_read() {
        assert_eq!(plural(1, "record"), "1 record");
        assert_eq!(plural(0, "record"), "0 records");
        assert_eq!(plural(1, "retry"), "1 retry");
        assert_eq!(plural(2, "retry"), "2 retries");
        let tally = Tally::new();
        let mut streams = BTreeMap::new();
        streams.insert(
            "users".to_string(),
            StreamCounts {
                kind: Some("users"),
                records_in: 1,
                sent: 1,
                ..StreamCounts::default()
            },
        );
        let http = WireStats {
            requests: 1,
            retries: 1,
            ..WireStats::default()
        };
        let report = tally.report(
            streams.clone(),
            "userflow",
            false,
            http,
            None,
            None,
            "ok".into(),
            0,
        );
        let summary = report.summary();
        assert!(summary.contains(": 1 record in "), "{summary}");
        assert!(summary.contains("http: 1 request, 1 retry,"), "{summary}");
        assert!(!summary.contains("unprocessed"), "{summary}");
        // After a 401 on the first write: 3 read, 1 rejected, the rest never got an outcome.
        streams.insert(
            "users".to_string(),
            StreamCounts {
                kind: Some("users"),
                records_in: 3,
                rejected: 1,
                unprocessed: 2,
                ..StreamCounts::default()
            },
        );
        let report = Tally::new().report(
            streams,
            "userflow",
            false,
            WireStats::default(),
            None,
            None,
            "stopped".into(),
            1,
        );
        let summary = report.summary();
        assert!(
            summary.contains("users → users: 3 in, 0 sent, 1 rejected, 0 skipped, 2 unprocessed"),
            "{summary}"
        );
        assert_eq!(report.totals.unprocessed, 2);
    }

    #[test]
    fn the_progress_rate_is_whole_records() {
        assert_eq!(whole_rate(1234.5678), "1235/s");
        assert_eq!(whole_rate(0.25), "0/s");
        assert!(!PROGRESS_TEMPLATE.contains("per_sec"));
    }
}
