//! The background task of a [`super::Pipeline`]: uploads sealed files one at a time, polls
//! each job until it ends, and settles its rows (see the module docs of [`super`]).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::job::{self, Backoff, JobStatus, Phase};
use super::spool::Sealed;
use super::{JobsConfig, Lane, MAX_MISSING_POLLS, Queued, Shared, excerpt};
use crate::http::Shutdown;
use crate::sink::{
    Acks, Method, Outcome, Refusal, SendError, Settlement, SinkError, Transport, WireBody,
    WireRequest, WriteVerdict, key_segment, verdict,
};

/// How an upload went.
enum Upload {
    /// The vendor took it and started this job.
    Job(String),
    /// `--dry-run`: nothing was sent.
    DryRun,
    /// 413: the file is too large for the vendor.
    TooLarge(SendError),
    /// Refused, or the retry budget ran out: the rows are rejected with this.
    Refused(Refusal),
    /// A success without a job id to follow.
    NoJobId(String),
}

/// One file (or part of one) on its way through the vendor.
struct Part {
    sealed: Sealed,
    /// The rows of a failed job the vendor did not blame, sent again once.
    resent: bool,
}

/// The background task that uploads, polls and settles, one file at a time.
pub(super) struct Uploader {
    pub(super) config: Arc<JobsConfig>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) shared: Arc<Shared>,
}

impl Uploader {
    pub(super) async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        while let Some(file) = queue.recv().await {
            let result = self.process(&file.lane, file.sealed, &file.acks).await;
            {
                let mut pending = self.shared.pending.lock();
                for key in &file.keys {
                    if let Entry::Occupied(entry) = pending.entry(*key)
                        && *entry.get() == file.id
                    {
                        entry.remove();
                    }
                }
            }
            self.shared.sealed.lock().remove(&file.id);
            match result {
                Ok(()) => self.shared.progress.send_modify(|p| p.done = file.seq),
                Err(err) => {
                    tracing::error!(vendor = self.config.vendor, "bulk: {err}");
                    self.shared.fatal.lock().get_or_insert(err);
                    self.shared.progress.send_modify(|p| p.dead = true);
                    queue.close();
                    return;
                }
            }
        }
    }

    fn vendor(&self) -> &'static str {
        self.config.vendor
    }

    fn io_error(&self, context: &str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            context: format!("{} bulk: {context}", self.vendor()),
            source,
        }
    }

    async fn process(&self, lane: &Lane, sealed: Sealed, acks: &Acks) -> Result<(), SinkError> {
        let mut work = VecDeque::from([Part {
            sealed,
            resent: false,
        }]);
        while let Some(mut part) = work.pop_front() {
            let rows = part.sealed.rows();
            let size = part.sealed.size();
            match self.upload(lane, &mut part.sealed).await? {
                Upload::DryRun => self.settle(&mut part.sealed, acks, |_| Some(None))?,
                Upload::Job(id) => {
                    self.shared.totals.jobs.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        vendor = self.vendor(),
                        job = %id,
                        rows,
                        bytes = size,
                        "{}: job started",
                        lane.name
                    );
                    let started = Instant::now();
                    let status = self.poll(lane, &id, rows).await?;
                    self.conclude(lane, &id, part, status, started, acks, &mut work)?;
                }
                Upload::TooLarge(_) if rows > 1 => {
                    let half = rows / 2;
                    lane.lower_max_bytes(size / 2);
                    tracing::warn!(
                        vendor = self.vendor(),
                        rows,
                        bytes = size,
                        "{}: the vendor refused a {size}-byte upload as too large (413); sending it in halves and keeping later files under {} bytes",
                        lane.name,
                        lane.max_bytes()
                    );
                    let parts = part
                        .sealed
                        .split(2, |i| Some(usize::from(i >= half)))
                        .map_err(|e| self.io_error("cannot split a spool file", e))?;
                    for sealed in parts.into_iter().rev().flatten() {
                        work.push_front(Part {
                            sealed,
                            resent: part.resent,
                        });
                    }
                }
                Upload::TooLarge(err) => {
                    let refusal = Refusal::vendor(
                        format!(
                            "{} refused a {} upload of this one row as too large: {}",
                            self.vendor(),
                            lane.name,
                            err.message
                        ),
                        err.status,
                        err.body_excerpt,
                    );
                    self.settle(&mut part.sealed, acks, |_| Some(Some(refusal.clone())))?;
                }
                Upload::Refused(refusal) => {
                    self.settle(&mut part.sealed, acks, |_| Some(Some(refusal.clone())))?;
                }
                Upload::NoJobId(body) => {
                    let refusal = Refusal::vendor(
                        format!(
                            "{} took the {} upload but named no job to follow, so whether these rows were applied is unknown (replay them if they are missing)",
                            self.vendor(),
                            lane.name
                        ),
                        None,
                        Some(body),
                    );
                    self.settle(&mut part.sealed, acks, |_| Some(Some(refusal.clone())))?;
                }
            }
        }
        Ok(())
    }

    /// Uploads a file; waits and tries again while the vendor answers 409 (another job runs).
    async fn upload(&self, lane: &Lane, sealed: &mut Sealed) -> Result<Upload, SinkError> {
        let body: Bytes = sealed
            .body()
            .map_err(|e| self.io_error("cannot read a spool file", e))?;
        let started = Instant::now();
        let mut wait = Backoff::new(job::BUSY_FIRST, job::BUSY_CAP, self.config.zero_delays);
        let mut said_busy = false;
        loop {
            // Every row is an upsert by key (segment additions and removals too): sending a
            // file twice leaves the same result, so the HTTP engine may retry it.
            let mut request = WireRequest::new(Method::Post, lane.path.clone()).idempotent();
            request.body = WireBody::Bytes {
                content_type: lane.framing.content_type.to_string(),
                bytes: body.clone(),
            };
            match self.transport.send(request).await {
                Ok(answer) if answer.dry_run => return Ok(Upload::DryRun),
                Ok(answer) => {
                    return Ok(match job::job_id(&answer.json()) {
                        Some(id) => Upload::Job(id),
                        None => Upload::NoJobId(excerpt(&answer.body)),
                    });
                }
                Err(err) if err.status == Some(413) => return Ok(Upload::TooLarge(err)),
                Err(err) if err.status == Some(409) => {
                    if started.elapsed() >= self.config.timeout {
                        return Err(SinkError::Vendor {
                            vendor: self.vendor(),
                            detail: format!(
                                "{}: another bulk job kept the account busy (409) for {} s, the job timeout; the last answer: {}",
                                lane.name,
                                self.config.timeout.as_secs(),
                                err.body_excerpt.unwrap_or_default()
                            ),
                        });
                    }
                    if !said_busy {
                        said_busy = true;
                        tracing::info!(
                            vendor = self.vendor(),
                            "{}: another bulk job is running (409: {}); waiting for it to end",
                            lane.name,
                            err.body_excerpt.as_deref().unwrap_or("")
                        );
                    }
                    if Shutdown::process().sleep(wait.next_wait()).await.is_err() {
                        return Err(SinkError::Vendor {
                            vendor: self.vendor(),
                            detail: format!(
                                "{}: stopped by a signal while another bulk job kept the account busy; nothing was uploaded",
                                lane.name
                            ),
                        });
                    }
                }
                Err(err) => {
                    return match verdict(self.vendor(), err) {
                        WriteVerdict::Fatal(fatal) => Err(fatal),
                        WriteVerdict::Reject(refusal) => Ok(Upload::Refused(refusal)),
                    };
                }
            }
        }
    }

    /// Polls a job until it ends; `Err` when it outlives the timeout or the vendor is gone.
    async fn poll(&self, lane: &Lane, id: &str, rows: usize) -> Result<JobStatus, SinkError> {
        let path = format!("{}/{}", self.config.poll_prefix, key_segment(id));
        let started = Instant::now();
        let mut wait = Backoff::new(job::POLL_FIRST, job::POLL_CAP, self.config.zero_delays);
        let mut seen = Polls {
            unknown: Vec::new(),
            missing: 0,
            last: String::from("(not read yet)"),
        };
        loop {
            self.before_poll(lane, id, rows, &mut wait, started, &seen.last)
                .await?;
            match self
                .transport
                .send(WireRequest::new(Method::Get, path.clone()))
                .await
            {
                Ok(answer) => {
                    seen.missing = 0;
                    let mut status = job::read(&answer.json());
                    if matches!(status.phase, Phase::Completed | Phase::Failed) {
                        if status.phase == Phase::Failed && status.error.is_none() {
                            status.error = Some(excerpt(&answer.body));
                        }
                        return Ok(status);
                    }
                    self.still_running(lane, id, &status, &answer.body, &mut seen.unknown);
                    seen.last = status.status;
                }
                Err(err) if err.status == Some(404) => {
                    seen.missing += 1;
                    if seen.missing >= MAX_MISSING_POLLS {
                        return Ok(vanished(&err));
                    }
                }
                Err(err) => match verdict(self.vendor(), err) {
                    WriteVerdict::Fatal(fatal) => return Err(fatal),
                    WriteVerdict::Reject(refusal) => {
                        tracing::warn!(
                            vendor = self.vendor(),
                            job = %id,
                            "{}: polling the job failed ({refusal}); polling again",
                            lane.name
                        );
                    }
                },
            }
        }
    }

    /// Waits before the next poll; `Err` when a signal came or the job outlived the timeout.
    async fn before_poll(
        &self,
        lane: &Lane,
        id: &str,
        rows: usize,
        wait: &mut Backoff,
        started: Instant,
        last: &str,
    ) -> Result<(), SinkError> {
        if Shutdown::process().sleep(wait.next_wait()).await.is_err() {
            return Err(SinkError::Vendor {
                vendor: self.vendor(),
                detail: format!(
                    "stopped by a signal while waiting for {} job {id}; its {rows} record(s) are covered by no state, so a rerun from the last state sends them again",
                    lane.name
                ),
            });
        }
        if started.elapsed() >= self.config.timeout {
            return Err(SinkError::Vendor {
                vendor: self.vendor(),
                detail: format!(
                    "{} job {id} did not end within {} s (last status: {last}); its {rows} record(s) are covered by no state, so a rerun from the last state sends them again",
                    lane.name,
                    self.config.timeout.as_secs()
                ),
            });
        }
        Ok(())
    }

    /// Logs a job that has not ended: an unknown status once, with the whole body.
    fn still_running(
        &self,
        lane: &Lane,
        id: &str,
        status: &JobStatus,
        body: &Bytes,
        unknown: &mut Vec<String>,
    ) {
        if status.phase == Phase::Unknown {
            if !unknown.contains(&status.status) {
                tracing::warn!(
                    vendor = self.vendor(),
                    job = %id,
                    body = %String::from_utf8_lossy(body),
                    "{}: job status {:?} is not one roster knows; taking it as still running until the job timeout ({} s)",
                    lane.name,
                    status.status,
                    self.config.timeout.as_secs()
                );
                unknown.push(status.status.clone());
            }
            return;
        }
        tracing::debug!(
            vendor = self.vendor(),
            job = %id,
            status = %status.status,
            completed_rows = status.completed_rows,
            total_rows = status.total_rows,
            "{}: job running",
            lane.name
        );
    }

    /// Settles a finished job's rows; queues the rows of a failed job that the vendor did not
    /// blame for one more try.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &self,
        lane: &Lane,
        id: &str,
        mut part: Part,
        status: JobStatus,
        started: Instant,
        acks: &Acks,
        work: &mut VecDeque<Part>,
    ) -> Result<(), SinkError> {
        let rows = part.sealed.rows();
        let ended = Ended {
            vendor: self.vendor(),
            lane,
            id,
            rows,
            blamed: status
                .row_errors
                .iter()
                .filter(|e| e.row <= rows)
                .map(|e| (e.row - 1, e.message.clone()))
                .collect(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let blamed = &ended.blamed;
        match status.phase {
            Phase::Failed if !blamed.is_empty() && blamed.len() < rows && !part.resent => {
                self.resend_unblamed(&ended, part, acks, work)
            }
            Phase::Failed => {
                let error = status.error.as_deref().unwrap_or("no reason given");
                tracing::warn!(
                    vendor = ended.vendor,
                    job = %id,
                    "{}: job failed after {:.1} s: {error}; its {rows} record(s) go to the reject file",
                    lane.name,
                    ended.seconds
                );
                let failed = Refusal::vendor(
                    format!("{} {} job {id} failed: {error}", ended.vendor, lane.name),
                    None,
                    Some(excerpt(error.as_bytes())),
                );
                self.settle(&mut part.sealed, acks, |i| {
                    Some(Some(match blamed.get(&i) {
                        Some(message) => ended.row_refusal(i, message),
                        None => failed.clone(),
                    }))
                })
            }
            _ => {
                tracing::info!(
                    vendor = ended.vendor,
                    job = %id,
                    rows,
                    refused = blamed.len(),
                    "{}: job completed in {:.1} s",
                    lane.name,
                    ended.seconds
                );
                self.settle(&mut part.sealed, acks, |i| {
                    Some(blamed.get(&i).map(|m| ended.row_refusal(i, m)))
                })
            }
        }
    }

    /// A job failed blaming some of its rows: those are rejected, the others (which were not
    /// applied either) are queued to be sent once more in a new job.
    fn resend_unblamed(
        &self,
        ended: &Ended<'_>,
        mut part: Part,
        acks: &Acks,
        work: &mut VecDeque<Part>,
    ) -> Result<(), SinkError> {
        let blamed = &ended.blamed;
        tracing::warn!(
            vendor = ended.vendor,
            job = %ended.id,
            "{}: job failed after {:.1} s blaming {} of its {} rows; rejecting those and sending the other {} again",
            ended.lane.name,
            ended.seconds,
            blamed.len(),
            ended.rows,
            ended.rows - blamed.len()
        );
        self.settle(&mut part.sealed, acks, |i| {
            blamed.get(&i).map(|m| Some(ended.row_refusal(i, m)))
        })?;
        let kept = part
            .sealed
            .split(1, |i| (!blamed.contains_key(&i)).then_some(0))
            .map_err(|e| self.io_error("cannot rebuild a spool file", e))?;
        for sealed in kept.into_iter().flatten() {
            self.shared
                .totals
                .resent_rows
                .fetch_add(sealed.rows() as u64, Ordering::Relaxed);
            work.push_front(Part {
                sealed,
                resent: true,
            });
        }
        Ok(())
    }

    /// Settles rows: `outcome(index)` is `None` to leave the row for later, `Some(None)` to
    /// accept it, `Some(Some(refusal))` to reject it (its record is read back for the reject).
    fn settle(
        &self,
        sealed: &mut Sealed,
        acks: &Acks,
        mut outcome: impl FnMut(usize) -> Option<Option<Refusal>>,
    ) -> Result<(), SinkError> {
        let outcomes: Vec<Option<Option<Refusal>>> = (0..sealed.rows()).map(&mut outcome).collect();
        if !outcomes.iter().any(|o| matches!(o, Some(Some(_)))) {
            for (meta, outcome) in sealed.metas().iter().zip(&outcomes) {
                if outcome.is_some() {
                    acks.settle(Settlement {
                        ticket: meta.ticket,
                        outcome: Outcome::Accepted,
                        payload: Some(meta.payload),
                        origin: None,
                    });
                }
            }
            return Ok(());
        }
        let mut outcomes = outcomes.into_iter();
        sealed
            .for_each_row(|_, back| {
                match outcomes.next().flatten() {
                    None => {}
                    Some(None) => acks.settle(Settlement {
                        ticket: back.meta.ticket,
                        outcome: Outcome::Accepted,
                        payload: Some(back.meta.payload),
                        origin: None,
                    }),
                    Some(Some(refusal)) => acks.settle(Settlement {
                        ticket: back.meta.ticket,
                        outcome: Outcome::Rejected(refusal),
                        payload: Some(back.meta.payload),
                        origin: Some(Arc::new(back.origin()?)),
                    }),
                }
                Ok(())
            })
            .map_err(|e| self.io_error("cannot read a spool file back", e))
    }
}

/// What a poll loop has seen so far.
struct Polls {
    /// Unknown statuses already logged.
    unknown: Vec<String>,
    /// 404 answers in a row.
    missing: u32,
    /// The last status read.
    last: String,
}

/// A job that answered 404 [`MAX_MISSING_POLLS`] times in a row: failed, with why.
fn vanished(err: &SendError) -> JobStatus {
    JobStatus {
        phase: Phase::Failed,
        status: "(not found)".into(),
        completed_rows: None,
        total_rows: None,
        row_errors: Vec::new(),
        error: Some(format!(
            "the job vanished: {MAX_MISSING_POLLS} polls in a row answered 404 ({})",
            err.message
        )),
    }
}

/// A job that ended, as its rows are settled.
struct Ended<'a> {
    vendor: &'static str,
    lane: &'a Lane,
    id: &'a str,
    rows: usize,
    /// Rows the vendor blamed (0-based) and its words.
    blamed: HashMap<usize, String>,
    seconds: f64,
}

impl Ended<'_> {
    /// The refusal of a row the vendor blamed.
    fn row_refusal(&self, index: usize, message: &str) -> Refusal {
        Refusal::vendor(
            format!(
                "{} {} job {} refused row {}: {message}",
                self.vendor,
                self.lane.name,
                self.id,
                index + 1
            ),
            None,
            None,
        )
    }
}
