//! Background bulk jobs shared by Userpilot (bulk identify) and Appcues (imports, segment
//! uploads).
//!
//! A job moves through its vendor's statuses on a background task: Userpilot `queued →
//! validating → processing → pending_refresh → completed` (or `failed`), Appcues `queued →
//! processing → completed` (or `failed`). Rows are applied in chunks at `job_rows_per_sec`,
//! so a poller sees `completed_rows` grow. The `fail_jobs` fault makes a job end `failed`
//! with nothing applied. A reset or reseed ends every running job.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::state::Shared;
use super::{userpilot, util};

/// Which vendor's store holds the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    Userpilot,
    Appcues,
}

/// One bulk job.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub id: String,
    /// `users_bulk_identify`, `companies_bulk_identify`, `import_profiles`,
    /// `segment_add_user_ids`, `segment_remove_user_ids`.
    pub kind: &'static str,
    pub status: &'static str,
    pub total_rows: usize,
    pub completed_rows: usize,
    /// Rows not yet applied.
    pub pending: Vec<Value>,
    /// Row-level problems (row number from 1, message).
    pub errors: Vec<Value>,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub file_size: usize,
    pub filename: String,
    /// The segment a segment job changes.
    pub target: Option<String>,
}

impl Job {
    pub fn new(
        id: String,
        kind: &'static str,
        rows: Vec<Value>,
        file_size: usize,
        filename: &str,
    ) -> Job {
        Job {
            id,
            kind,
            status: "queued",
            total_rows: rows.len(),
            completed_rows: 0,
            pending: rows,
            errors: Vec::new(),
            created: util::now(),
            started: None,
            ended: None,
            file_size,
            filename: filename.to_owned(),
            target: None,
        }
    }

    pub fn running(&self) -> bool {
        !matches!(self.status, "completed" | "failed")
    }

    pub fn elapsed_secs(&self) -> f64 {
        let end = self.ended.unwrap_or_else(util::now);
        (end - self.created).num_milliseconds() as f64 / 1000.0
    }

    pub fn times(&self) -> (Value, Value, Value) {
        (
            json!(util::iso(self.created)),
            self.started.map_or(Value::Null, |t| json!(util::iso(t))),
            self.ended.map_or(Value::Null, |t| json!(util::iso(t))),
        )
    }
}

/// Runs `f` on the job if it still exists in its owner's store.
fn with_job<R>(sh: &Shared, owner: Owner, id: &str, f: impl FnOnce(&mut Job) -> R) -> Option<R> {
    match owner {
        Owner::Userpilot => sh.userpilot.lock().job_mut(id).map(f),
        Owner::Appcues => sh.appcues.lock().job_mut(id).map(f),
    }
}

/// Starts the background task that drives job `id`.
pub(crate) fn spawn(sh: Arc<Shared>, owner: Owner, id: String) {
    tokio::spawn(async move { drive(sh, owner, id).await });
}

async fn drive(sh: Arc<Shared>, owner: Owner, id: String) {
    let d = Driver {
        generation: sh.generation.load(Ordering::SeqCst),
        step: sh.settings.job_step,
        sh,
        owner,
        id,
    };
    if !d.pause().await {
        return;
    }
    if owner == Owner::Userpilot && !d.validated().await {
        return;
    }
    if d.sh.faults.settings().fail_jobs {
        d.fail_injected();
        return;
    }
    d.set("processing");
    if !d.process().await {
        return;
    }
    if owner == Owner::Userpilot {
        d.set("pending_refresh");
        if !d.pause().await {
            return;
        }
    }
    d.set("completed");
}

/// One job on its way through its statuses; it stops when the sandbox is reset, reseeded or
/// shut down, or the job is gone.
struct Driver {
    sh: Arc<Shared>,
    owner: Owner,
    id: String,
    /// The store generation the job belongs to.
    generation: u64,
    step: Duration,
}

impl Driver {
    fn alive(&self) -> bool {
        self.sh.generation.load(Ordering::SeqCst) == self.generation
            && !self.sh.shutting_down.load(Ordering::SeqCst)
    }

    /// Waits one step; false when the job should stop.
    async fn pause(&self) -> bool {
        tokio::time::sleep(self.step).await;
        self.alive()
    }

    fn with_job<R>(&self, f: impl FnOnce(&mut Job) -> R) -> Option<R> {
        with_job(&self.sh, self.owner, &self.id, f)
    }

    fn set(&self, status: &'static str) {
        self.with_job(|j| {
            j.status = status;
            if status == "processing" && j.started.is_none() {
                j.started = Some(util::now());
            }
            if !j.running() {
                j.ended = Some(util::now());
            }
        });
    }

    /// Userpilot's `validating` stage: a job with a bad row fails whole, nothing applied.
    /// False when the job ends here.
    async fn validated(&self) -> bool {
        self.set("validating");
        if !self.pause().await {
            return false;
        }
        let invalid = self.with_job(|j| {
            let errors = userpilot::validate_rows(j.kind, &j.pending);
            let bad = !errors.is_empty();
            j.errors = errors;
            bad
        });
        match invalid {
            None => false,
            Some(true) => {
                self.set("failed");
                false
            }
            Some(false) => true,
        }
    }

    /// The `fail_jobs` fault: the job fails with nothing applied.
    fn fail_injected(&self) {
        self.with_job(|j| {
            j.errors.push(
                json!({"row": null, "message": "sandbox fault: the job failed (fail_jobs is on)"}),
            );
            j.pending.clear();
        });
        self.set("failed");
    }

    /// Applies the rows, one chunk a step, at `job_rows_per_sec`; false when the job stopped first.
    async fn process(&self) -> bool {
        let rate = self.sh.settings.job_rows_per_sec as f64;
        let per_step = (rate * self.step.as_secs_f64()).max(1.0) as usize;
        loop {
            tokio::time::sleep(self.step.max(Duration::from_millis(1))).await;
            if !self.alive() {
                return false;
            }
            let chunk = self.with_job(|j| {
                let n = per_step.min(j.pending.len());
                let rows: Vec<Value> = j.pending.drain(..n).collect();
                (j.kind, j.target.clone(), rows)
            });
            let Some((kind, target, rows)) = chunk else {
                return false;
            };
            if rows.is_empty() {
                return true;
            }
            let n = rows.len();
            match self.owner {
                Owner::Userpilot => self.sh.userpilot.lock().apply_rows(kind, rows),
                Owner::Appcues => self
                    .sh
                    .appcues
                    .lock()
                    .apply_rows(kind, target.as_deref(), rows),
            }
            self.with_job(|j| j.completed_rows += n);
        }
    }
}
