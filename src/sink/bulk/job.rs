//! Reading a vendor's bulk job: its id in the upload's answer, its status while it runs, how it
//! ended, and which rows it blamed; and the waits between polls.
//!
//! Userpilot documents its statuses (`queued`, `validating`, `processing`, `pending_refresh`,
//! `completed`, `failed`); Appcues' job shape was never captured (vendors.md §5), so the words
//! below cover what job APIs commonly say, and a status outside them counts as still running
//! (logged once with the whole body) until the job's timeout.

use std::time::Duration;

use serde_json::Value;

/// Statuses that mean the job is still going.
const RUNNING: &[&str] = &[
    "queued",
    "pending",
    "validating",
    "processing",
    "pending_refresh",
    "running",
    "in_progress",
    "started",
    "importing",
    "accepted",
    "waiting",
    "scheduled",
    "created",
];

/// Statuses that mean the job succeeded.
const COMPLETED: &[&str] = &[
    "completed",
    "complete",
    "succeeded",
    "success",
    "successful",
    "done",
    "finished",
];

/// Statuses that mean the job failed.
const FAILED: &[&str] = &[
    "failed",
    "failure",
    "error",
    "errored",
    "cancelled",
    "canceled",
    "aborted",
];

/// The first poll comes this soon after the upload: a small job is often done already, and
/// the waits grow fast (×1.5), so a long job costs only a few more polls. Jobs run one at a
/// time, so this wait is paid once per file: at 100 ms, a million users in 40 files spent
/// most of their wall time waiting between a finished job and the next upload.
pub const POLL_FIRST: Duration = Duration::from_millis(20);

/// Each wait between polls is this much longer than the last.
pub const POLL_FACTOR: f64 = 1.5;

/// The longest wait between two polls (Userpilot processes ~1,200 rows/min, so a 10,000-row job
/// takes ~8 minutes: 20 s between polls costs at most 20 s of it).
pub const POLL_CAP: Duration = Duration::from_secs(20);

/// The first wait after a 409 "another job is running".
pub const BUSY_FIRST: Duration = Duration::from_secs(2);

/// The longest wait between two tries after 409s.
pub const BUSY_CAP: Duration = Duration::from_secs(30);

/// Under `ROSTER_ZERO_DELAYS=1` (tests) waits are this short instead of zero, so a poller
/// never spins on the vendor.
pub const ZERO_DELAY_WAIT: Duration = Duration::from_millis(10);

/// Growing waits: `first`, then ×[`POLL_FACTOR`] up to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Waits from `first` up to `cap`; all [`ZERO_DELAY_WAIT`] when `zero`.
    pub fn new(first: Duration, cap: Duration, zero: bool) -> Self {
        if zero {
            Backoff {
                next: ZERO_DELAY_WAIT,
                cap: ZERO_DELAY_WAIT,
            }
        } else {
            Backoff { next: first, cap }
        }
    }

    /// The next wait.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = self.next.mul_f64(POLL_FACTOR).min(self.cap);
        wait
    }
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Still going (a known running status).
    Running,
    /// A status none of the lists knows: treated as running, logged with the body.
    Unknown,
    /// It succeeded (rows it blamed are still rejected).
    Completed,
    /// It failed.
    Failed,
}

/// A row the vendor blamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// The row's 1-based number in the upload.
    pub row: usize,
    /// What the vendor said.
    pub message: String,
}

/// One reading of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobStatus {
    /// Where it stands.
    pub phase: Phase,
    /// The status word as the vendor wrote it (`"(none)"` without one).
    pub status: String,
    /// Rows done so far, when the vendor says.
    pub completed_rows: Option<u64>,
    /// Rows in the job, when the vendor says.
    pub total_rows: Option<u64>,
    /// Rows the vendor blamed, by number.
    pub row_errors: Vec<RowError>,
    /// What the vendor said about the job as a whole (errors without a row, `error`,
    /// `message`, `detail`).
    pub error: Option<String>,
}

/// The object that describes the job: the body, or what it wraps in `job` or `data`.
fn job_object(body: &Value) -> &Value {
    for key in ["job", "data"] {
        if let Some(inner) = body.get(key).filter(|v| v.is_object())
            && body.get("status").is_none_or(|s| !s.is_string())
        {
            return inner;
        }
    }
    body
}

/// The job id in an upload's answer: `job_id`, `id` or `job.id`, a string or a number.
pub fn job_id(body: &Value) -> Option<String> {
    let job = job_object(body);
    ["job_id", "id", "jobId"]
        .iter()
        .find_map(|key| match job.get(*key) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Null => None,
        Value::Object(o) => ["message", "error", "detail", "reason", "title"]
            .iter()
            .find_map(|k| o.get(*k).and_then(text)),
        other => Some(other.to_string()),
    }
}

/// Reads a job's status from the answer to a poll.
pub fn read(body: &Value) -> JobStatus {
    let job = job_object(body);
    let status = job
        .get("status")
        .or_else(|| job.get("state"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let word = status.as_deref().unwrap_or("").to_ascii_lowercase();
    let phase = if RUNNING.contains(&word.as_str()) {
        Phase::Running
    } else if COMPLETED.contains(&word.as_str()) {
        Phase::Completed
    } else if FAILED.contains(&word.as_str()) {
        Phase::Failed
    } else {
        Phase::Unknown
    };
    let mut row_errors = Vec::new();
    let mut general = Vec::new();
    if let Some(errors) = job.get("errors").and_then(Value::as_array) {
        for error in errors {
            let row = ["row", "line"].iter().find_map(|k| {
                error
                    .get(*k)
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| *n > 0)
            });
            let message = text(error).unwrap_or_else(|| error.to_string());
            match row {
                Some(row) => row_errors.push(RowError { row, message }),
                None => general.push(message),
            }
        }
    }
    for key in ["error", "message", "detail", "reason"] {
        if let Some(message) = job.get(key).and_then(text)
            && !general.contains(&message)
        {
            general.push(message);
        }
    }
    let number = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| job.get(*k).and_then(Value::as_u64))
    };
    JobStatus {
        phase,
        status: status.unwrap_or_else(|| "(none)".into()),
        completed_rows: number(&["completed_rows", "processed_rows", "processed"]),
        total_rows: number(&["total_rows", "rows", "total"]),
        row_errors,
        error: (!general.is_empty()).then(|| general.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_quick_job_is_seen_soon_and_a_long_one_costs_few_polls() {
        let mut wait = Backoff::new(POLL_FIRST, POLL_CAP, false);
        assert!(wait.next_wait() <= Duration::from_millis(25));
        // Userpilot's largest job, ~8 minutes: polls until then.
        let (mut polls, mut waited) = (1, POLL_FIRST);
        while waited < Duration::from_secs(480) {
            waited += wait.next_wait();
            polls += 1;
        }
        assert!(polls <= 42, "{polls} polls");
    }

    #[test]
    fn reads_userpilot_and_appcues_jobs() {
        let userpilot = json!({"job_id": "bulk:jobs:NX-1:abc", "status": "pending_refresh",
            "completed_rows": 10, "total_rows": 10, "errors": []});
        let s = read(&userpilot);
        assert_eq!(s.phase, Phase::Running);
        assert_eq!((s.completed_rows, s.total_rows), (Some(10), Some(10)));
        assert_eq!(job_id(&userpilot).as_deref(), Some("bulk:jobs:NX-1:abc"));
        let failed = json!({"status": "failed", "errors": [
            {"row": 2, "message": "user_id is required"},
            {"row": null, "message": "sandbox fault: the job failed"}]});
        let s = read(&failed);
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(
            s.row_errors,
            vec![RowError {
                row: 2,
                message: "user_id is required".into()
            }]
        );
        assert_eq!(s.error.as_deref(), Some("sandbox fault: the job failed"));
        let appcues = json!({"status": 202, "title": "Accepted", "job_id": "c5ab", "job_url": "x"});
        assert_eq!(job_id(&appcues).as_deref(), Some("c5ab"));
        assert_eq!(
            read(&json!({"status": "COMPLETED"})).phase,
            Phase::Completed
        );
        assert_eq!(
            read(&json!({"job": {"id": 7, "state": "done"}})).phase,
            Phase::Completed
        );
        assert_eq!(job_id(&json!({"job": {"id": 7}})).as_deref(), Some("7"));
    }

    #[test]
    fn an_unknown_status_is_neither_success_nor_failure() {
        let s = read(&json!({"status": "reticulating"}));
        assert_eq!(
            (s.phase, s.status.as_str()),
            (Phase::Unknown, "reticulating")
        );
        let s = read(&json!({"ok": true}));
        assert_eq!((s.phase, s.status.as_str()), (Phase::Unknown, "(none)"));
        let s = read(&json!({"status": "error", "error": {"detail": "quota exceeded"}}));
        assert_eq!(s.phase, Phase::Failed);
        assert_eq!(s.error.as_deref(), Some("quota exceeded"));
    }

    #[test]
    fn backoff_grows_to_its_cap_and_zero_delays_stay_short() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(2), false);
        let waits: Vec<_> = (0..4).map(|_| b.next_wait()).collect();
        assert_eq!(
            waits,
            vec![
                Duration::from_secs(1),
                Duration::from_millis(1500),
                Duration::from_secs(2),
                Duration::from_secs(2)
            ]
        );
        let mut z = Backoff::new(Duration::from_secs(1), Duration::from_secs(2), true);
        assert_eq!(z.next_wait(), ZERO_DELAY_WAIT);
        assert_eq!(z.next_wait(), ZERO_DELAY_WAIT);
    }
}
