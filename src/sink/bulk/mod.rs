//! Bulk jobs, written once for every vendor that has them (Appcues imports and segment uploads,
//! Userpilot bulk identify).
//!
//! A vendor's writer hands rows to a [`Pipeline`], each row for a [`Lane`] (one kind of upload:
//! Appcues profile imports, Userpilot users or companies, one Appcues segment's additions). The
//! pipeline:
//!
//! 1. **spools** each lane's rows to a temporary file ([`spool`]) until the file reaches the
//!    lane's row or byte limit (or the writer asks to seal it), so memory holds a ticket per row,
//!    never the rows;
//! 2. **uploads** sealed files one at a time, in the order they were sealed, from one background
//!    task. One at a time is what Userpilot allows (a 409 while any job runs), and it keeps the
//!    vendor applying rows in input order across files. A 409 means wait and try again; a 413
//!    splits the file in halves and lowers the lane's byte limit for later files;
//! 3. **polls** the job at `{poll_prefix}/{percent-encoded id}` with growing waits until it ends
//!    or the job timeout passes (then the run stops: the job's records are covered by no state,
//!    so a rerun from the last state sends them again). An unknown status is logged once with
//!    the whole body and counts as still running;
//! 4. **settles** the rows: accepted when the job completed, rejected with the vendor's words
//!    when it blamed them or failed. When a job failed but blamed only some rows, the others were
//!    not applied either: they are sent once more in a new job.
//!
//! Since tickets are settled only when the job ends, the engine holds back every STATE that
//! covers them until then. Files wait for the uploader in a queue of one, so a slow vendor slows
//! the writer (and the reader behind it) instead of filling the disk.
//!
//! Ordering with writes that do not go through jobs (a user delete after that user's import)
//! is kept by [`Pipeline::wait_for`]: a write that names keys with rows still in a file seals
//! that file and waits for its job. A row whose keys sit in another lane's open file seals that
//! file first, so it is uploaded earlier.

pub mod job;
pub mod spool;
mod upload;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::sink::{
    Acks, Op, OrderKey, Outcome, PayloadHash, Refusal, Settlement, SinkError, Transport,
};

pub use self::spool::Framing;
use self::spool::{Sealed, Spool};
use self::upload::Uploader;

/// Sealed files waiting for the uploader besides the one it works on: one keeps the vendor busy
/// while the next file fills, and bounds the disk a slow vendor can make roster use.
pub const QUEUED_FILES: usize = 1;

/// A job that has not ended this long after its upload stops the run (Userpilot processes
/// ~1,200 rows/min, so its largest job, 10,000 rows, takes ~8 minutes).
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(3600);

/// Polls answered 404 in a row after which the job counts as vanished (failed).
const MAX_MISSING_POLLS: u32 = 5;

/// Characters of a job's answer kept in a reject and in logs.
const BODY_EXCERPT: usize = 2000;

/// How many rows and bytes one upload may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// Rows per file at most.
    pub max_rows: usize,
    /// Bytes per file at most, framing included.
    pub max_bytes: u64,
}

/// One kind of upload: where its files go, how they are framed, how big they may get.
#[derive(Debug)]
pub struct Lane {
    /// Names it in logs and rejects: `appcues import`, `userpilot users bulk identify`.
    pub name: String,
    /// The upload path after the base URL (percent-encoded).
    pub path: String,
    /// How rows are framed.
    pub framing: Framing,
    /// Rows per file at most.
    pub max_rows: usize,
    /// Bytes per file at most; lowered when the vendor answers 413 to a smaller file.
    max_bytes: AtomicU64,
}

impl Lane {
    /// A lane.
    pub fn new(
        name: impl Into<String>,
        path: impl Into<String>,
        framing: Framing,
        limits: FileLimits,
    ) -> Arc<Lane> {
        Arc::new(Lane {
            name: name.into(),
            path: path.into(),
            framing,
            max_rows: limits.max_rows.max(1),
            max_bytes: AtomicU64::new(limits.max_bytes),
        })
    }

    /// Bytes per file at most, now.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    fn lower_max_bytes(&self, to: u64) {
        self.max_bytes.fetch_min(to.max(1), Ordering::Relaxed);
    }
}

/// The bulk keys every vendor with jobs takes (each declares them with its own defaults):
/// `bulk_max_rows`, `bulk_max_bytes`, `bulk_job_timeout_seconds`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct BulkSettings {
    /// Rows per upload file at most.
    #[serde(default)]
    pub bulk_max_rows: Option<usize>,
    /// Bytes per upload file at most.
    #[serde(default)]
    pub bulk_max_bytes: Option<u64>,
    /// Longest wait for one job.
    #[serde(default)]
    pub bulk_job_timeout_seconds: Option<f64>,
}

impl BulkSettings {
    /// The file limits: the configured ones, else the vendor's `defaults`. A limit above the
    /// vendor's documented one is kept (the vendor may have raised it for the account) with a
    /// warning, since a 413 then halves every file.
    pub fn limits(&self, vendor: &str, defaults: FileLimits, documented: FileLimits) -> FileLimits {
        let limits = FileLimits {
            max_rows: self.bulk_max_rows.unwrap_or(defaults.max_rows).max(1),
            max_bytes: self.bulk_max_bytes.unwrap_or(defaults.max_bytes).max(1),
        };
        if limits.max_rows > documented.max_rows || limits.max_bytes > documented.max_bytes {
            tracing::warn!(
                vendor,
                "bulk_max_rows {} / bulk_max_bytes {} exceed what {vendor} documents ({} rows, {} bytes per upload); uploads it refuses as too large (413) are halved",
                limits.max_rows,
                limits.max_bytes,
                documented.max_rows,
                documented.max_bytes
            );
        }
        limits
    }

    /// The job timeout: the configured one, else [`DEFAULT_JOB_TIMEOUT`].
    pub fn timeout(&self) -> Duration {
        self.bulk_job_timeout_seconds
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(DEFAULT_JOB_TIMEOUT)
    }
}

/// What the pipeline knows about the vendor's jobs.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// The vendor's `vendor` name.
    pub vendor: &'static str,
    /// Jobs are polled at `{poll_prefix}/{percent-encoded job id}`.
    pub poll_prefix: String,
    /// A job that has not ended this long after its upload (or a 409 that lasts this long)
    /// stops the run.
    pub timeout: Duration,
    /// `ROSTER_ZERO_DELAYS=1`: waits between polls are a few milliseconds.
    pub zero_delays: bool,
}

impl JobsConfig {
    /// A config with the default timeout and delays from the environment.
    pub fn new(vendor: &'static str, poll_prefix: impl Into<String>) -> Self {
        JobsConfig {
            vendor,
            poll_prefix: poll_prefix.into(),
            timeout: DEFAULT_JOB_TIMEOUT,
            zero_delays: crate::http::config::zero_delays_from_env(),
        }
    }
}

/// One row for a lane.
#[derive(Debug)]
pub struct Row<'a> {
    /// The record it comes from.
    pub op: &'a Op,
    /// The row's bytes: one line, no newline.
    pub bytes: Vec<u8>,
    /// Keys whose later writes must wait for this row's job (see [`Pipeline::wait_for`]).
    pub keys: Vec<OrderKey>,
}

/// Rows for one lane, encoded into one buffer: a batch of 512 rows costs a few allocations, not
/// a few per row. Build it with [`RowBatch::push`], spool it with [`Pipeline::push_batch`].
#[derive(Debug, Default)]
pub struct RowBatch<'a> {
    bytes: Vec<u8>,
    keys: Vec<OrderKey>,
    rows: Vec<BatchRow<'a>>,
}

/// Where one row of a [`RowBatch`] ends in its buffers.
#[derive(Debug)]
struct BatchRow<'a> {
    op: &'a Op,
    end: usize,
    keys_end: usize,
}

impl<'a> RowBatch<'a> {
    /// An empty batch with room for `rows` rows of `bytes` bytes in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        RowBatch {
            bytes: Vec::with_capacity(bytes),
            keys: Vec::with_capacity(rows),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Adds `op`'s row: `encode` appends its bytes (one line, no newline) and returns the keys
    /// whose later writes must wait for the row's job (see [`Pipeline::wait_for`]). When
    /// `encode` fails nothing of the row is kept and its error is returned.
    pub fn push<K, E>(
        &mut self,
        op: &'a Op,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<K, E>,
    ) -> Result<(), E>
    where
        K: IntoIterator<Item = OrderKey>,
    {
        let start = self.bytes.len();
        let keys = match encode(&mut self.bytes) {
            Ok(keys) => keys,
            Err(err) => {
                self.bytes.truncate(start);
                return Err(err);
            }
        };
        self.keys.extend(keys);
        self.rows.push(BatchRow {
            op,
            end: self.bytes.len(),
            keys_end: self.keys.len(),
        });
        Ok(())
    }

    /// Rows in the batch.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when it holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every row: its op, bytes and keys, in order.
    fn iter(&self) -> impl Iterator<Item = (&'a Op, &[u8], &[OrderKey])> + '_ {
        let mut start = 0;
        let mut keys_start = 0;
        self.rows.iter().map(move |row| {
            let bytes = self.bytes.get(start..row.end).unwrap_or_default();
            let keys = self.keys.get(keys_start..row.keys_end).unwrap_or_default();
            start = row.end;
            keys_start = row.keys_end;
            (row.op, bytes, keys)
        })
    }
}

impl<'a> From<Vec<Row<'a>>> for RowBatch<'a> {
    fn from(rows: Vec<Row<'a>>) -> Self {
        let bytes = rows.iter().map(|r| r.bytes.len()).sum();
        let mut batch = RowBatch::with_capacity(rows.len(), bytes);
        for row in rows {
            let pushed: Result<(), std::convert::Infallible> = batch.push(row.op, |out| {
                out.extend_from_slice(&row.bytes);
                Ok(row.keys)
            });
            let Ok(()) = pushed;
        }
        batch
    }
}

/// The entries of [`crate::model::Item::properties`] in its order, without building it: the
/// standard fields, each with the value of an attribute of the same name when there is one,
/// then the other attributes. For writers that serialise rows straight from the item.
pub fn properties_in_order(
    item: &crate::sink::Item,
) -> impl Iterator<Item = (&crate::model::PropKey, &serde_json::Value)> {
    let clashes = !item.attributes.is_empty();
    let fields = item.fields.iter().map(move |(key, value)| {
        let value = match clashes {
            true => item.attributes.get(&**key).unwrap_or(value),
            false => value,
        };
        (key, value)
    });
    let overlap = !item.fields.is_empty();
    let attributes = item
        .attributes
        .iter()
        .filter(move |(key, _)| !overlap || !item.fields.contains_key(&**key));
    fields.chain(attributes)
}

/// `,"key":value` (or without the comma when `first`), escaped as `serde_json` escapes a map's
/// entries.
pub fn write_entry(
    out: &mut Vec<u8>,
    first: bool,
    key: &str,
    value: &impl serde::Serialize,
) -> Result<(), serde_json::Error> {
    if !first {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    serde_json::to_writer(&mut *out, value)
}

/// A hasher for [`OrderKey`]s, which are hashes already: it only spreads their bits (SipHash
/// on every spooled row, and again when its job ends, was a measurable share of a bulk run).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let mixed = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = mixed ^ (mixed >> 29);
    }
}

/// A map keyed by [`OrderKey`]s.
pub(crate) type KeyMap<V> = HashMap<OrderKey, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Counters for the run's log line.
#[derive(Debug, Default)]
struct Totals {
    files: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    jobs: AtomicU64,
    resent_rows: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Every sealed file up to this sequence number is finished.
    done: u64,
    /// The uploader stopped on a fatal error.
    dead: bool,
}

/// What the writer side and the uploader share.
#[derive(Debug)]
struct Shared {
    /// Keys with rows in a file that is not finished, and that file's id.
    pending: Mutex<KeyMap<u64>>,
    /// Sealed, unfinished files: id → sequence number.
    sealed: Mutex<HashMap<u64, u64>>,
    progress: watch::Sender<Progress>,
    fatal: Mutex<Option<SinkError>>,
    totals: Totals,
    started: Instant,
}

#[derive(Debug)]
struct OpenFile {
    id: u64,
    lane: Arc<Lane>,
    spool: Spool,
    keys: Vec<OrderKey>,
}

#[derive(Debug)]
struct Queued {
    seq: u64,
    id: u64,
    lane: Arc<Lane>,
    sealed: Sealed,
    keys: Vec<OrderKey>,
    acks: Acks,
}

#[derive(Debug, Default)]
struct Spooler {
    /// The open file of each lane that has one (a few lanes: a scan beats hashing the name of
    /// the lane for every row).
    open: Vec<OpenFile>,
    next_file: u64,
    last_seq: u64,
    queue: Option<mpsc::Sender<Queued>>,
    acks: Option<Acks>,
}

impl Spooler {
    fn lane_of_open_file(&self, id: u64) -> Option<String> {
        self.open
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.lane.name.clone())
    }

    /// The lane's open file.
    fn file(&mut self, lane: &str) -> Option<&mut OpenFile> {
        self.open.iter_mut().find(|f| f.lane.name == lane)
    }

    /// True when a lane other than `lane` has an open file.
    fn others_open(&self, lane: &str) -> bool {
        self.open.iter().any(|f| f.lane.name != lane)
    }
}

/// The bulk machinery of one sink. See the module docs.
#[derive(Debug)]
pub struct Pipeline {
    config: Arc<JobsConfig>,
    transport: Arc<dyn Transport>,
    spooler: tokio::sync::Mutex<Spooler>,
    shared: Arc<Shared>,
}

impl Pipeline {
    /// A pipeline sending through `transport`.
    pub fn new(config: JobsConfig, transport: Arc<dyn Transport>) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        Pipeline {
            config: Arc::new(config),
            transport,
            spooler: tokio::sync::Mutex::new(Spooler::default()),
            shared: Arc::new(Shared {
                pending: Mutex::new(KeyMap::default()),
                sealed: Mutex::new(HashMap::new()),
                progress,
                fatal: Mutex::new(None),
                totals: Totals::default(),
                started: Instant::now(),
            }),
        }
    }

    /// The vendor.
    pub fn vendor(&self) -> &'static str {
        self.config.vendor
    }

    fn alive(&self) -> Result<(), SinkError> {
        match self.shared.fatal.lock().as_ref() {
            None => Ok(()),
            Some(err) => Err(copy_error(self.config.vendor, err)),
        }
    }

    fn io_error(&self, context: &str, source: std::io::Error) -> SinkError {
        SinkError::Io {
            context: format!("{} bulk: {context}", self.config.vendor),
            source,
        }
    }

    /// Spools `rows` into `lane`. With `seal`, the lane's file is uploaded right after (the
    /// real-time mode of segments: one job per batch). Rows settle when their job ends; a row
    /// too large for any upload is rejected at once.
    pub async fn push(
        &self,
        lane: &Arc<Lane>,
        rows: Vec<Row<'_>>,
        acks: &Acks,
        seal: bool,
    ) -> Result<(), SinkError> {
        self.push_batch(lane, &RowBatch::from(rows), acks, seal)
            .await
    }

    /// [`Pipeline::push`] for rows encoded into one buffer.
    pub async fn push_batch(
        &self,
        lane: &Arc<Lane>,
        rows: &RowBatch<'_>,
        acks: &Acks,
        seal: bool,
    ) -> Result<(), SinkError> {
        self.alive()?;
        let mut spooler = self.spooler.lock().await;
        if spooler.acks.is_none() {
            spooler.acks = Some(acks.clone());
        }
        // Only this batch opens files while it runs, so once no other lane has an open file
        // none will until it ends.
        let mut others = spooler.others_open(&lane.name);
        for (op, bytes, keys) in rows.iter() {
            if self.reject_oversized(lane, op, bytes, acks) {
                continue;
            }
            if others {
                self.seal_other_lanes(&mut spooler, lane, keys).await?;
                others = spooler.others_open(&lane.name);
            }
            let full = spooler.file(&lane.name).is_some_and(|f| {
                f.spool.rows() >= lane.max_rows || f.spool.size_with(bytes.len()) > lane.max_bytes()
            });
            if full {
                self.seal(&mut spooler, &lane.name).await?;
            }
            let file = self.open_file(&mut spooler, lane)?;
            file.spool
                .push(bytes, op.ticket, &op.origin)
                .map_err(|e| self.io_error("cannot write a spool file", e))?;
            if !keys.is_empty() {
                let mut pending = self.shared.pending.lock();
                for key in keys {
                    pending.insert(*key, file.id);
                }
            }
            file.keys.extend_from_slice(keys);
            if file.spool.rows() >= lane.max_rows {
                self.seal(&mut spooler, &lane.name).await?;
            }
        }
        if seal {
            self.seal(&mut spooler, &lane.name).await?;
        }
        Ok(())
    }

    /// Rejects a row too large for any upload of its lane at once; true when it did.
    fn reject_oversized(&self, lane: &Lane, op: &Op, bytes: &[u8], acks: &Acks) -> bool {
        let alone = lane.framing.size(1, bytes.len() as u64);
        if alone <= lane.max_bytes() {
            return false;
        }
        acks.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Rejected(Refusal::new(format!(
                "the row is {alone} bytes, more than one {} upload may hold ({} bytes)",
                lane.name,
                lane.max_bytes()
            ))),
            payload: Some(PayloadHash::of_bytes(bytes)),
            origin: Some(op.origin.clone()),
        });
        true
    }

    /// Rows for `keys` waiting in another lane's open file must reach the vendor first: that
    /// file goes to the queue now.
    async fn seal_other_lanes(
        &self,
        spooler: &mut Spooler,
        lane: &Lane,
        keys: &[OrderKey],
    ) -> Result<(), SinkError> {
        let others: Vec<String> = {
            let pending = self.shared.pending.lock();
            keys.iter()
                .filter_map(|k| pending.get(k))
                .filter_map(|id| spooler.lane_of_open_file(*id))
                .filter(|name| *name != lane.name)
                .collect()
        };
        for name in others {
            self.seal(spooler, &name).await?;
        }
        Ok(())
    }

    /// The lane's open file, opening a new spool file when it has none.
    fn open_file<'s>(
        &self,
        spooler: &'s mut Spooler,
        lane: &Arc<Lane>,
    ) -> Result<&'s mut OpenFile, SinkError> {
        let at = match spooler.open.iter().position(|f| f.lane.name == lane.name) {
            Some(at) => at,
            None => {
                let spool = Spool::new(lane.framing)
                    .map_err(|e| self.io_error("cannot create a spool file", e))?;
                spooler.next_file += 1;
                spooler.open.push(OpenFile {
                    id: spooler.next_file,
                    lane: lane.clone(),
                    spool,
                    keys: Vec::new(),
                });
                spooler.open.len() - 1
            }
        };
        spooler.open.get_mut(at).ok_or_else(|| SinkError::Vendor {
            vendor: self.config.vendor,
            detail: "bulk: a spool file vanished while open (a bug)".into(),
        })
    }

    /// Seals the lane's open file and queues it (waiting while the queue is full).
    async fn seal(&self, spooler: &mut Spooler, lane: &str) -> Result<(), SinkError> {
        let Some(at) = spooler.open.iter().position(|f| f.lane.name == lane) else {
            return Ok(());
        };
        let file = spooler.open.remove(at);
        if file.spool.rows() == 0 {
            return Ok(());
        }
        let sealed = file
            .spool
            .seal()
            .map_err(|e| self.io_error("cannot finish a spool file", e))?;
        let totals = &self.shared.totals;
        totals.files.fetch_add(1, Ordering::Relaxed);
        totals
            .rows
            .fetch_add(sealed.rows() as u64, Ordering::Relaxed);
        totals.bytes.fetch_add(sealed.size(), Ordering::Relaxed);
        spooler.last_seq += 1;
        let seq = spooler.last_seq;
        self.shared.sealed.lock().insert(file.id, seq);
        let acks = spooler.acks.clone().ok_or_else(|| SinkError::Vendor {
            vendor: self.config.vendor,
            detail: "bulk: a file was sealed before any row was pushed (a bug)".into(),
        })?;
        let queue = match &spooler.queue {
            Some(queue) => queue.clone(),
            None => {
                let (tx, rx) = mpsc::channel(QUEUED_FILES);
                let uploader = Uploader {
                    config: self.config.clone(),
                    transport: self.transport.clone(),
                    shared: self.shared.clone(),
                };
                tokio::spawn(uploader.run(rx));
                spooler.queue = Some(tx.clone());
                tx
            }
        };
        let queued = Queued {
            seq,
            id: file.id,
            lane: file.lane,
            sealed,
            keys: file.keys,
            acks,
        };
        if queue.send(queued).await.is_err() {
            self.alive()?;
            return Err(SinkError::Vendor {
                vendor: self.config.vendor,
                detail: "the bulk uploader stopped".into(),
            });
        }
        Ok(())
    }

    /// Before a write that does not go through jobs: when any of `keys` has rows in a file
    /// whose job has not ended, seal that file (if still open) and wait for its job.
    pub async fn wait_for(&self, keys: &[OrderKey]) -> Result<(), SinkError> {
        self.alive()?;
        let files: Vec<u64> = {
            let pending = self.shared.pending.lock();
            keys.iter()
                .filter_map(|k| pending.get(k).copied())
                .collect()
        };
        if files.is_empty() {
            return Ok(());
        }
        let mut spooler = self.spooler.lock().await;
        let mut until = 0;
        for id in files {
            if let Some(lane) = spooler.lane_of_open_file(id) {
                self.seal(&mut spooler, &lane).await?;
            }
            if let Some(seq) = self.shared.sealed.lock().get(&id) {
                until = until.max(*seq);
            }
        }
        drop(spooler);
        self.wait_until(until).await
    }

    async fn wait_until(&self, seq: u64) -> Result<(), SinkError> {
        if seq == 0 {
            return self.alive();
        }
        let mut progress = self.shared.progress.subscribe();
        let reached = progress
            .wait_for(|p| p.done >= seq || p.dead)
            .await
            .map(|p| p.done >= seq)
            .unwrap_or(false);
        self.alive()?;
        if reached {
            Ok(())
        } else {
            Err(SinkError::Vendor {
                vendor: self.config.vendor,
                detail: "the bulk uploader stopped".into(),
            })
        }
    }

    /// End of input: upload every open file and wait for every job.
    pub async fn flush(&self) -> Result<(), SinkError> {
        self.alive()?;
        let mut spooler = self.spooler.lock().await;
        let mut lanes: Vec<(u64, String)> = spooler
            .open
            .iter()
            .map(|f| (f.id, f.lane.name.clone()))
            .collect();
        lanes.sort();
        for (_, lane) in lanes {
            self.seal(&mut spooler, &lane).await?;
        }
        let last = spooler.last_seq;
        drop(spooler);
        self.wait_until(last).await?;
        let t = &self.shared.totals;
        let files = t.files.load(Ordering::Relaxed);
        if files > 0 {
            let bytes = t.bytes.load(Ordering::Relaxed);
            let seconds = self.shared.started.elapsed().as_secs_f64();
            tracing::info!(
                vendor = self.config.vendor,
                files,
                jobs = t.jobs.load(Ordering::Relaxed),
                rows = t.rows.load(Ordering::Relaxed),
                resent_rows = t.resent_rows.load(Ordering::Relaxed),
                bytes,
                seconds = format!("{seconds:.1}"),
                "bulk: {files} file(s) spooled ({:.1} MB), every job ended",
                bytes as f64 / 1e6
            );
        }
        Ok(())
    }
}

/// A fatal error again, for every caller that asks after the first.
fn copy_error(vendor: &'static str, err: &SinkError) -> SinkError {
    match err {
        SinkError::Credentials { vendor, detail } => SinkError::Credentials {
            vendor,
            detail: detail.clone(),
        },
        SinkError::Unreachable { vendor, detail } => SinkError::Unreachable {
            vendor,
            detail: detail.clone(),
        },
        SinkError::Vendor { vendor, detail } => SinkError::Vendor {
            vendor,
            detail: detail.clone(),
        },
        other => SinkError::Vendor {
            vendor,
            detail: other.to_string(),
        },
    }
}

/// The first [`BODY_EXCERPT`] characters of an answer.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests;
