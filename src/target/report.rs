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

use crate::vendors::sink::WireStats;

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
    /// Why records were skipped (the first reason seen).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
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
    /// The last state printed (or, in a dry run, the one a real run would have printed).
    pub last_state: Option<Value>,
    /// Where rejects went, when there were any or the file was configured.
    pub reject_file: Option<String>,
    /// `ok`, or what stopped the run.
    pub outcome: String,
    /// The exit code.
    pub exit_code: u8,
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
    bar: Option<ProgressBar>,
    last_tick: Instant,
}

/// How often the progress bar is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

impl Tally {
    /// Starts counting; draws a progress bar when stderr is a terminal.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {elapsed_precise} {pos} records ({per_sec}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        });
        Tally {
            started: Instant::now(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            states_in: 0,
            states_out: 0,
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
            bar.finish_and_clear();
        }
        let mut totals = StreamCounts::default();
        for c in streams.values() {
            totals.records_in += c.records_in;
            totals.sent += c.sent;
            totals.rejected += c.rejected;
            totals.skipped += c.skipped;
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
            last_state,
            reject_file,
            outcome,
            exit_code,
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
        let mut out = String::new();
        let verb = if self.dry_run { "dry run" } else { "run" };
        let rate = if self.duration_seconds > 0.0 {
            self.totals.records_in as f64 / self.duration_seconds
        } else {
            0.0
        };
        out.push_str(&format!(
            "target-roster {verb} to {}: {} records in {:.1} s ({:.0}/s): {} {}, {} rejected, {} skipped\n",
            self.vendor,
            self.totals.records_in,
            self.duration_seconds,
            rate,
            self.totals.sent,
            if self.dry_run { "mapped" } else { "sent" },
            self.totals.rejected,
            self.totals.skipped,
        ));
        for (name, c) in &self.streams {
            // Stream names and reasons come from the input: escaped like every log value.
            let name = crate::cli::logging::escape(name);
            out.push_str(&format!(
                "  {name} → {}: {} in, {} {}, {} rejected, {} skipped{}\n",
                c.kind.unwrap_or("not written"),
                c.records_in,
                c.sent,
                if self.dry_run { "mapped" } else { "sent" },
                c.rejected,
                c.skipped,
                c.skip_reason
                    .as_deref()
                    .map(|r| format!(" ({})", crate::cli::logging::escape_max(r, 4096)))
                    .unwrap_or_default(),
            ));
        }
        let h = &self.http;
        out.push_str(&format!(
            "  http: {} requests, {} retries, {} answered 429, {} answered 5xx, {} without an answer, {:.1} s waiting on rate limits (summed over requests)\n",
            h.requests,
            h.retries,
            h.status_429,
            h.status_5xx,
            h.transport_errors,
            h.rate_limit_wait_seconds
        ));
        out.push_str(&format!(
            "  state: {} received, {} written to stdout\n",
            self.states_in, self.states_out
        ));
        if self.totals.rejected > 0 {
            if let Some(path) = &self.reject_file {
                out.push_str(&format!(
                    "  rejects: {} records in {path} (replay them with --input {path})\n",
                    self.totals.rejected
                ));
            }
        }
        out
    }

    /// Writes the summary to stderr.
    pub fn print_summary(&self) {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(self.summary().as_bytes());
        let _ = stderr.flush();
    }

    /// Writes the JSON report.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::from)?;
        std::fs::write(path, text)
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
}
