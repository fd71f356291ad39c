//! The sync loop: runs each listing that feeds a selected stream, writes every page's RECORDs
//! and then one STATE, and resumes from bookmarks.
//!
//! - **Prefetch.** Each listing's pages are pulled by a task of their own into a small bounded
//!   channel, so the next page is on the wire while the current one is written. Every listing's
//!   task starts at once (groups and users are separate listings), and the listings are written
//!   one after the other, in order. Memory holds at most [`PREFETCH_PAGES`] pages plus the one
//!   being fetched per listing, and the one being written, whatever the account size.
//! - **Versions.** A FULL_TABLE pass carries a version (classic Singer `ACTIVATE_VERSION`):
//!   announced before the first record of a stream's first pass, on every RECORD, kept in the
//!   state while the pass is under way (a resumed pass continues it), and activated after the
//!   pass's last page. An INCREMENTAL listing (by `updated_at`, where the vendor filters) asks
//!   for what changed after the last finished pass's highest value and carries no version.
//! - **State.** After each page: that page's RECORDs, then a STATE with the listing's cursor as
//!   `next_page` of every selected stream it feeds and `currently_syncing` naming its main
//!   stream. The last page marks those streams `completed_at` instead.
//! - **Resume.** A listing resumes from the stored `next_page` when every selected stream it
//!   feeds is unfinished at the same cursor; a finished stream (no `next_page`) starts a fresh
//!   pass, unless it finished within the interrupted run being resumed (`sync_started_at`
//!   still set, `completed_at` after it): such a listing is not read again. If the streams of
//!   a listing disagree it starts over: re-reading is safe, skipping is not. The listing named
//!   by `currently_syncing` runs first, as singer-python taps do. The last listing's last STATE
//!   sets `sync_started_at` back to `null`.
//! - **A rejected cursor** (the vendor refuses the stored one) is warned about once and the
//!   listing starts over; no record of it has been written yet, so nothing is emitted twice.
//! - **A closed stdout** (`tap | head`) ends the sync cleanly.

use std::io::Write;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::select::Selection;
use crate::model::UPDATED_AT;
use crate::singer::state::timestamp;
use crate::singer::{Message, SingerWriter, TapState, WriteError};
use crate::vendors::source::{ListRequest, Listing, Page, Source, SourceError, cursor_text};

/// Pages buffered between a listing's fetch task and the writer: enough to ride out one slow
/// answer, few enough that memory stays a handful of pages.
pub const PREFETCH_PAGES: usize = 2;

/// What the tap read for one stream (the target's are `crate::load::report::StreamCounts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// RECORDs written.
    pub records: u64,
    /// Vendor resources that could not be made into records (each warned about).
    pub skipped: u64,
    /// Resources a later page repeated, left out (SCIM offset paging).
    pub duplicates: u64,
}

/// What a sync did, for the summary on stderr.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Per selected stream, in sync order.
    pub streams: Vec<(&'static str, ReadCounts)>,
    /// Pages read.
    pub pages: u64,
    /// Listings that started over because the vendor rejected the stored cursor.
    pub restarted: Vec<&'static str>,
    /// Streams the interrupted run being resumed had finished, so not read again.
    pub already_done: Vec<&'static str>,
    /// True when stdout was closed by its reader before the sync finished.
    pub stopped_early: bool,
}

impl Summary {
    /// The counts of `stream`.
    pub fn counts(&self, stream: &str) -> ReadCounts {
        self.streams
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    fn counts_mut(&mut self, stream: &'static str) -> &mut ReadCounts {
        let at = match self.streams.iter().position(|(s, _)| *s == stream) {
            Some(at) => at,
            None => {
                self.streams.push((stream, ReadCounts::default()));
                self.streams.len() - 1
            }
        };
        &mut self.streams[at].1
    }

    /// One line: `users 250, groups 12, memberships 800`.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        for (stream, counts) in &self.streams {
            if counts.records == 0 && self.already_done.contains(stream) {
                parts.push(format!("{stream} done before the interruption"));
                continue;
            }
            let mut part = format!("{stream} {}", counts.records);
            if counts.skipped > 0 {
                part.push_str(&format!(" ({} skipped, see warnings)", counts.skipped));
            }
            if counts.duplicates > 0 {
                part.push_str(&format!(" ({} repeated by the vendor)", counts.duplicates));
            }
            parts.push(part);
        }
        if parts.is_empty() {
            "no stream selected".into()
        } else {
            format!("{} in {} page(s)", parts.join(", "), self.pages)
        }
    }
}

/// Why a sync stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading the vendor failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// stdout failed (other than being closed by its reader).
    #[error(transparent)]
    Write(WriteError),
    /// A listing's fetch task ended without its last page.
    #[error("stream {0}: the listing ended before its last page")]
    Truncated(&'static str),
}

/// What a sync needs beyond the selection and the state.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// Where an INCREMENTAL stream without a bookmark starts (RFC 3339).
    pub start_date: Option<&'a str>,
    /// The streams the vendor can list by modification time
    /// ([`super::select::incremental_streams`]).
    pub incremental: &'static [&'static str],
}

/// Runs a sync of the selected streams, starting from `state`.
pub async fn sync<W: Write>(
    source: &dyn Source,
    selection: &Selection,
    mut state: TapState,
    writer: &mut SingerWriter<W>,
    options: &Options<'_>,
) -> Result<Summary, SyncError> {
    let mut summary = Summary::default();
    for name in selection.names() {
        summary.streams.push((name, ReadCounts::default()));
    }
    let mut listings = source.listings();
    // The interrupted listing goes first.
    if let Some(current) = state.currently_syncing.clone() {
        if let Some(at) = listings
            .iter()
            .position(|l| l.streams().contains(&current.as_str()))
        {
            let listing = listings.remove(at);
            listings.insert(0, listing);
        }
    }
    let now = Utc::now();
    let resuming = state.begin_run(now);
    // The streams listed by modification time in this run.
    let filtered: &[&str] = if filters_now(source, selection, options.incremental).await? {
        options.incremental
    } else {
        &[]
    };
    let pass = Pass {
        selection,
        filtered,
        version: timestamp_version(now),
        start_date: options.start_date,
    };
    let mut plan = Vec::new();
    for listing in listings {
        if let Some(planned) = pass.plan(listing, &state, resuming, &mut summary) {
            plan.push(planned);
        }
    }
    if plan.is_empty() && resuming {
        // Every listing was done: this run only closes the interrupted one.
        state.end_run();
        writer
            .write_state(&state.to_value())
            .map_err(SyncError::Write)?;
    }
    let count = plan.len();
    for (n, planned) in plan.into_iter().enumerate() {
        let mut run = Run {
            selection,
            state: &mut state,
            writer: &mut *writer,
            summary: &mut summary,
            last: n + 1 == count,
        };
        match run.listing(planned).await {
            Ok(()) => {}
            Err(SyncError::Write(WriteError::Closed)) => {
                summary.stopped_early = true;
                tracing::info!("stdout was closed by its reader; stopping the sync");
                return Ok(summary);
            }
            Err(err) => return Err(err),
        }
    }
    Ok(summary)
}

/// What planning a listing needs from the run.
struct Pass<'a> {
    selection: &'a Selection,
    /// The streams listed by modification time in this run.
    filtered: &'a [&'a str],
    /// The version of the FULL_TABLE passes this run begins.
    version: u64,
    start_date: Option<&'a str>,
}

impl Pass<'_> {
    /// Where a listing starts and how, with its fetch task started (every listing is fetched at
    /// once, each a few pages ahead; they are written in order). `None` when it has nothing to
    /// do: no selected stream, or finished within the interrupted run being resumed.
    fn plan(
        &self,
        listing: Arc<dyn Listing>,
        state: &TapState,
        resuming: bool,
        summary: &mut Summary,
    ) -> Option<Planned> {
        let served: Vec<&'static str> = listing
            .streams()
            .iter()
            .copied()
            .filter(|s| self.selection.contains(s))
            .collect();
        if served.is_empty() {
            return None;
        }
        if resuming && served.iter().all(|s| state.finished_in_this_run(s)) {
            tracing::info!(
                streams = %served.join(", "),
                "finished in the interrupted run this one resumes; not read again"
            );
            summary.already_done.extend(&served);
            return None;
        }
        let start = start_point(state, &served);
        let mode = Mode::of(
            state,
            &served,
            self.selection,
            self.filtered,
            &start,
            self.version,
            self.start_date,
        );
        let fetch = prefetch(listing.clone(), request(&served, start.clone(), &mode));
        Some(Planned {
            listing,
            served,
            start,
            mode,
            fetch,
        })
    }
}

/// The streams whose listing will be filtered by modification time in this run: those the
/// catalog asks INCREMENTAL for, when the vendor can filter them now.
async fn filters_now(
    source: &dyn Source,
    selection: &Selection,
    can: &[&str],
) -> Result<bool, SyncError> {
    let asked = selection
        .names()
        .into_iter()
        .filter(|s| selection.get(s).is_some_and(|s| s.incremental))
        .collect::<Vec<_>>();
    if asked.is_empty() {
        return Ok(false);
    }
    let filters = asked.iter().any(|s| can.contains(s)) && source.filters_now().await?;
    for stream in asked {
        if !(filters && can.contains(&stream)) {
            tracing::warn!(
                stream,
                "INCREMENTAL replication was asked for, but the vendor cannot list this stream by modification time; it is read FULL_TABLE, with ACTIVATE_VERSION"
            );
        }
    }
    Ok(filters)
}

/// How a listing's streams are replicated in this run.
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// FULL_TABLE. `version` is the pass's (its RECORDs carry it, and the pass's end sends
    /// ACTIVATE_VERSION); `None` for a pass resumed from a state that kept no version, whose
    /// earlier records carry none: it activates nothing. `open`: the streams whose first pass
    /// this is, announced with ACTIVATE_VERSION before their first record (the classic taps'
    /// convention).
    Full {
        version: Option<u64>,
        open: Vec<&'static str>,
    },
    /// INCREMENTAL by `updated_at`: only what changed after `since` (all when `None`).
    Incremental { since: Option<String> },
}

impl Mode {
    fn of(
        state: &TapState,
        served: &[&'static str],
        selection: &Selection,
        filtered: &[&str],
        start: &Option<Value>,
        version: u64,
        start_date: Option<&str>,
    ) -> Mode {
        let main = served[0];
        let bookmark = state.bookmarks.get(main);
        if filtered.contains(&main) && selection.get(main).is_some_and(|s| s.incremental) {
            let since = bookmark.and_then(|b| b.replication_key_value.clone());
            return Mode::Incremental {
                since: since.or_else(|| start_date.map(str::to_owned)),
            };
        }
        if start.is_some() {
            // A resumed pass continues its version.
            return Mode::Full {
                version: bookmark.and_then(|b| b.version),
                open: Vec::new(),
            };
        }
        let open = served
            .iter()
            .copied()
            .filter(|s| {
                state
                    .bookmarks
                    .get(*s)
                    .is_none_or(|b| b.completed_at.is_none())
            })
            .collect();
        Mode::Full {
            version: Some(version),
            open,
        }
    }

    fn version(&self) -> Option<u64> {
        match self {
            Mode::Full { version, .. } => *version,
            Mode::Incremental { .. } => None,
        }
    }
}

fn request(served: &[&'static str], start: Option<Value>, mode: &Mode) -> ListRequest {
    ListRequest {
        start,
        wanted: served.to_vec(),
        since: match mode {
            Mode::Incremental { since } => since.clone(),
            Mode::Full { .. } => None,
        },
    }
}

/// A listing with its fetch task under way.
struct Planned {
    listing: Arc<dyn Listing>,
    served: Vec<&'static str>,
    start: Option<Value>,
    mode: Mode,
    fetch: (mpsc::Receiver<Result<Page, SourceError>>, FetchTask),
}

/// Aborts a listing's fetch task when the listing is done with it.
struct FetchTask(JoinHandle<()>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn prefetch(
    listing: Arc<dyn Listing>,
    request: ListRequest,
) -> (mpsc::Receiver<Result<Page, SourceError>>, FetchTask) {
    let (tx, rx) = mpsc::channel(PREFETCH_PAGES);
    let handle = tokio::spawn(async move {
        let mut pages = listing.pages(request);
        while let Some(item) = pages.next().await {
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    (rx, FetchTask(handle))
}

/// Where a listing starts: the shared cursor of its unfinished streams, or the beginning.
fn start_point(state: &TapState, served: &[&'static str]) -> Option<Value> {
    let first = state.resume_point(served.first()?)?;
    if served.iter().all(|s| state.resume_point(s) == Some(first)) {
        Some(first.clone())
    } else {
        tracing::info!(
            streams = %served.join(", "),
            "the streams of one listing stopped at different places; reading it from the beginning"
        );
        None
    }
}

/// What writing one listing needs.
struct Run<'a, W: Write> {
    selection: &'a Selection,
    state: &'a mut TapState,
    writer: &'a mut SingerWriter<W>,
    summary: &'a mut Summary,
    /// The run's last listing: its last STATE ends the run.
    last: bool,
}

impl<W: Write> Run<'_, W> {
    /// Writes one listing: SCHEMAs, then its pages, each followed by a STATE.
    async fn listing(&mut self, planned: Planned) -> Result<(), SyncError> {
        let Planned {
            listing,
            served,
            mut start,
            mut mode,
            fetch: (mut pages, mut task),
        } = planned;
        let main = served[0];
        self.open(&served, &start, &mode)?;
        let mut previous = start.clone();
        let mut first = true;
        loop {
            let Some(item) = pages.recv().await else {
                return Err(SyncError::Truncated(main));
            };
            let page = match item {
                Ok(page) => page,
                Err(SourceError::CursorRejected {
                    stream,
                    cursor,
                    detail,
                }) if first && start.is_some() => {
                    tracing::warn!(
                        stream,
                        cursor = %cursor,
                        "the vendor rejected the stored cursor ({detail}); reading the stream from the beginning"
                    );
                    self.summary.restarted.push(main);
                    start = None;
                    if let Mode::Full { version, .. } = &mut mode {
                        // Read from the start, a pass without a version can take one.
                        version.get_or_insert_with(|| timestamp_version(Utc::now()));
                    }
                    drop(task);
                    (pages, task) = prefetch(listing.clone(), request(&served, None, &mode));
                    previous = None;
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            if first {
                self.announce(&mode)?;
            }
            first = false;
            self.summary.pages += 1;
            if page.next.is_some() && previous == page.next {
                return Err(SourceError::Loop {
                    stream: main,
                    cursor: page.next.as_ref().map(cursor_text).unwrap_or_default(),
                }
                .into());
            }
            let next = self.page(page, main, &mode)?;
            self.settle(&served, next.clone(), &mode)?;
            if next.is_none() {
                return Ok(());
            }
            previous = next;
        }
    }

    /// ACTIVATE_VERSION for the streams whose first pass begins: once the first page came, so a
    /// vendor that cannot be read makes a loader drop nothing.
    fn announce(&mut self, mode: &Mode) -> Result<(), SyncError> {
        if let Mode::Full {
            version: Some(version),
            open,
        } = mode
        {
            for stream in open {
                self.writer
                    .write_activate_version(stream, *version)
                    .map_err(SyncError::Write)?;
            }
        }
        Ok(())
    }

    /// The listing's SCHEMAs.
    fn open(
        &mut self,
        served: &[&'static str],
        start: &Option<Value>,
        mode: &Mode,
    ) -> Result<(), SyncError> {
        let main = served[0];
        for stream in served {
            if let Some(selected) = self.selection.get(stream) {
                self.writer
                    .write(&Message::Schema(selected.schema_message()))
                    .map_err(SyncError::Write)?;
            }
        }
        match (start, mode) {
            (Some(cursor), _) => tracing::info!(
                stream = main,
                cursor = %cursor_text(cursor),
                "resuming from the stored bookmark"
            ),
            (None, Mode::Incremental { since: Some(since) }) => {
                tracing::info!(stream = main, "reading what changed after {since}")
            }
            (None, _) => tracing::info!(stream = main, "reading from the beginning"),
        }
        if let Mode::Full { version: None, .. } = mode {
            tracing::info!(
                stream = main,
                "the stored state keeps no version for this pass (an older roster wrote it): its records carry none and its end sends no ACTIVATE_VERSION"
            );
        }
        Ok(())
    }

    /// The STATE after a page: the next cursor and the pass's version or, after the last page,
    /// ACTIVATE_VERSION and the finished streams.
    fn settle(
        &mut self,
        served: &[&'static str],
        next: Option<Value>,
        mode: &Mode,
    ) -> Result<(), SyncError> {
        let state = &mut *self.state;
        match next {
            Some(next) => {
                for stream in served {
                    state.set_next_page(stream, next.clone());
                    state.bookmark_mut(stream).version = mode.version();
                }
                state.currently_syncing = Some(served[0].to_string());
            }
            None => {
                if let Some(version) = mode.version() {
                    for stream in served {
                        self.writer
                            .write_activate_version(stream, version)
                            .map_err(SyncError::Write)?;
                    }
                }
                let now = timestamp(Utc::now());
                for stream in served {
                    state.complete(stream, now.clone());
                }
                state.currently_syncing = None;
                if self.last {
                    state.end_run();
                }
            }
        }
        self.writer
            .write_state(&state.to_value())
            .map_err(SyncError::Write)
    }

    /// Writes a page's records (projected to the selected properties) and returns its cursor.
    fn page(
        &mut self,
        page: Page,
        main: &'static str,
        mode: &Mode,
    ) -> Result<Option<Value>, SyncError> {
        let extracted = page
            .extracted_at
            .to_rfc3339_opts(SecondsFormat::Micros, false);
        let version = mode.version();
        let incremental = matches!(mode, Mode::Incremental { .. });
        let Page {
            records,
            next,
            skipped,
            duplicates,
            rendered,
            ..
        } = page;
        for mut emit in records {
            let Some(selected) = self.selection.get(emit.stream) else {
                continue;
            };
            if let Some(range) = emit.rendered.take() {
                let text = rendered.get(range).unwrap_or_default();
                if !incremental && selected.keeps_all() {
                    // Written as the listing rendered it: no map, no second serialisation.
                    self.writer
                        .write_record_json(emit.stream, text, Some(&extracted), version)
                        .map_err(SyncError::Write)?;
                    self.summary.counts_mut(emit.stream).records += 1;
                    continue;
                }
                emit.record = serde_json::from_slice(text)
                    .map_err(|err| SyncError::Write(WriteError::Serialize(err)))?;
            }
            if incremental {
                if let Some(Value::String(updated)) = emit.record.get(UPDATED_AT) {
                    let bookmark = self.state.bookmark_mut(emit.stream);
                    bookmark.replication_key = Some(UPDATED_AT.to_string());
                    bookmark.note_progress(updated);
                }
            }
            selected.project(&mut emit.record);
            self.writer
                .write_record(emit.stream, &emit.record, Some(&extracted), version)
                .map_err(SyncError::Write)?;
            self.summary.counts_mut(emit.stream).records += 1;
        }
        for skipped in skipped.iter().filter(|s| self.selection.contains(s.stream)) {
            tracing::warn!(
                stream = skipped.stream,
                "skipped a vendor resource: {}",
                skipped.reason
            );
            self.summary.counts_mut(skipped.stream).skipped += 1;
        }
        if duplicates > 0 {
            tracing::debug!(
                stream = main,
                count = duplicates,
                "left out resources an earlier page had"
            );
            self.summary.counts_mut(main).duplicates += duplicates;
        }
        Ok(next)
    }
}

/// A pass's version: its start in milliseconds since the epoch, as classic Singer taps do.
fn timestamp_version(at: chrono::DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_millis()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
