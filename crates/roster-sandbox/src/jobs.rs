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
    let generation = sh.generation.load(Ordering::SeqCst);
    let step = sh.settings.job_step;
    let alive = |sh: &Shared| {
        sh.generation.load(Ordering::SeqCst) == generation
            && !sh.shutting_down.load(Ordering::SeqCst)
    };
    let set = |sh: &Shared, status: &'static str| {
        with_job(sh, owner, &id, |j| {
            j.status = status;
            if status == "processing" && j.started.is_none() {
                j.started = Some(util::now());
            }
            if !j.running() {
                j.ended = Some(util::now());
            }
        })
    };
    tokio::time::sleep(step).await;
    if !alive(&sh) {
        return;
    }
    if owner == Owner::Userpilot {
        set(&sh, "validating");
        tokio::time::sleep(step).await;
        if !alive(&sh) {
            return;
        }
        let invalid = with_job(&sh, owner, &id, |j| {
            let errors = userpilot::validate_rows(j.kind, &j.pending);
            let bad = !errors.is_empty();
            j.errors = errors;
            bad
        });
        match invalid {
            None => return,
            Some(true) => {
                set(&sh, "failed");
                return;
            }
            Some(false) => {}
        }
    }
    if sh.faults.settings().fail_jobs {
        with_job(&sh, owner, &id, |j| {
            j.errors.push(
                json!({"row": null, "message": "sandbox fault: the job failed (fail_jobs is on)"}),
            );
            j.pending.clear();
        });
        set(&sh, "failed");
        return;
    }
    set(&sh, "processing");
    let per_step = ((sh.settings.job_rows_per_sec as f64) * step.as_secs_f64()).max(1.0) as usize;
    loop {
        tokio::time::sleep(step.max(Duration::from_millis(1))).await;
        if !alive(&sh) {
            return;
        }
        let chunk = with_job(&sh, owner, &id, |j| {
            let n = per_step.min(j.pending.len());
            (
                j.kind,
                j.target.clone(),
                j.pending.drain(..n).collect::<Vec<_>>(),
            )
        });
        let Some((kind, target, rows)) = chunk else {
            return;
        };
        if rows.is_empty() {
            break;
        }
        let n = rows.len();
        match owner {
            Owner::Userpilot => sh.userpilot.lock().apply_rows(kind, rows),
            Owner::Appcues => sh.appcues.lock().apply_rows(kind, target.as_deref(), rows),
        }
        with_job(&sh, owner, &id, |j| j.completed_rows += n);
    }
    if owner == Owner::Userpilot {
        set(&sh, "pending_refresh");
        tokio::time::sleep(step).await;
        if !alive(&sh) {
            return;
        }
    }
    set(&sh, "completed");
}
