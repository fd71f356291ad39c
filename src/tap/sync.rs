//! The sync loop: runs each listing that feeds a selected stream, writes every page's RECORDs
//! and then one STATE, and resumes from bookmarks.
//!
//! - **Prefetch.** Each listing's pages are pulled by a task of their own into a small bounded
//!   channel, so the next page is on the wire while the current one is written. Memory holds at
//!   most [`PREFETCH_PAGES`] pages plus the one being fetched and the one being written,
//!   whatever the account size.
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

/// Runs a sync of the selected streams, starting from `state`.
pub async fn sync<W: Write>(
    source: &dyn Source,
    selection: &Selection,
    mut state: TapState,
    writer: &mut SingerWriter<W>,
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
    let resuming = state.begin_run(Utc::now());
    let mut plan = Vec::new();
    for listing in listings {
        let served: Vec<&'static str> = listing
            .streams()
            .iter()
            .copied()
            .filter(|s| selection.contains(s))
            .collect();
        if served.is_empty() {
            continue;
        }
        if resuming && served.iter().all(|s| state.finished_in_this_run(s)) {
            tracing::info!(
                streams = %served.join(", "),
                "finished in the interrupted run this one resumes; not read again"
            );
            summary.already_done.extend(&served);
            continue;
        }
        plan.push((listing, served));
    }
    if plan.is_empty() && resuming {
        // Every listing was done: this run only closes the interrupted one.
        state.end_run();
        writer
            .write_state(&state.to_value())
            .map_err(SyncError::Write)?;
    }
    let count = plan.len();
    for (n, (listing, served)) in plan.into_iter().enumerate() {
        let last = n + 1 == count;
        match run_listing(
            listing,
            &served,
            selection,
            &mut state,
            writer,
            &mut summary,
            last,
        )
        .await
        {
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

async fn run_listing<W: Write>(
    listing: Arc<dyn Listing>,
    served: &[&'static str],
    selection: &Selection,
    state: &mut TapState,
    writer: &mut SingerWriter<W>,
    summary: &mut Summary,
    last: bool,
) -> Result<(), SyncError> {
    let main = served[0];
    for stream in served {
        if let Some(selected) = selection.get(stream) {
            writer
                .write(&Message::Schema(selected.schema_message()))
                .map_err(SyncError::Write)?;
        }
    }
    let mut start = start_point(state, served);
    match &start {
        Some(cursor) => tracing::info!(
            stream = main,
            cursor = %cursor_text(cursor),
            "resuming from the stored bookmark"
        ),
        None => tracing::info!(stream = main, "reading from the beginning"),
    }
    'attempt: loop {
        let request = ListRequest {
            start: start.clone(),
            wanted: served.to_vec(),
        };
        let (mut pages, _task) = prefetch(listing.clone(), request);
        let mut previous = start.clone();
        let mut first = true;
        while let Some(item) = pages.recv().await {
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
                    summary.restarted.push(main);
                    start = None;
                    continue 'attempt;
                }
                Err(err) => return Err(err.into()),
            };
            first = false;
            summary.pages += 1;
            if let Some(next) = &page.next {
                if previous.as_ref() == Some(next) {
                    return Err(SourceError::Loop {
                        stream: main,
                        cursor: cursor_text(next),
                    }
                    .into());
                }
            }
            let next = write_page(page, main, selection, writer, summary)?;
            match &next {
                Some(next) => {
                    for stream in served {
                        state.set_next_page(stream, next.clone());
                    }
                    state.currently_syncing = Some(main.to_string());
                }
                None => {
                    let now = timestamp(Utc::now());
                    for stream in served {
                        state.complete(stream, now.clone());
                    }
                    state.currently_syncing = None;
                    if last {
                        state.end_run();
                    }
                }
            }
            writer
                .write_state(&state.to_value())
                .map_err(SyncError::Write)?;
            if next.is_none() {
                return Ok(());
            }
            previous = next;
        }
        return Err(SyncError::Truncated(main));
    }
}

/// Writes a page's records (projected to the selected properties) and returns its cursor.
fn write_page<W: Write>(
    page: Page,
    main: &'static str,
    selection: &Selection,
    writer: &mut SingerWriter<W>,
    summary: &mut Summary,
) -> Result<Option<Value>, SyncError> {
    let extracted = page
        .extracted_at
        .to_rfc3339_opts(SecondsFormat::Micros, false);
    for mut emit in page.records {
        let Some(selected) = selection.get(emit.stream) else {
            continue;
        };
        selected.project(&mut emit.record);
        writer
            .write_record(emit.stream, &emit.record, Some(&extracted))
            .map_err(SyncError::Write)?;
        summary.counts_mut(emit.stream).records += 1;
    }
    for skipped in page.skipped.iter().filter(|s| selection.contains(s.stream)) {
        tracing::warn!(
            stream = skipped.stream,
            "skipped a vendor resource: {}",
            skipped.reason
        );
        summary.counts_mut(skipped.stream).skipped += 1;
    }
    if page.duplicates > 0 {
        tracing::debug!(
            stream = main,
            count = page.duplicates,
            "left out resources an earlier page had"
        );
        summary.counts_mut(main).duplicates += page.duplicates;
    }
    Ok(page.next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MEMBERSHIPS, USERS};
    use crate::singer::{Catalog, reader::parse_message};
    use crate::tap::select::discover;
    use crate::vendors::source::{Emit, PageStream, Skipped};
    use serde_json::json;
    use std::sync::Mutex;

    /// A listing of `users` (and their memberships) paged by offset, three per page.
    #[derive(Debug)]
    struct Fake {
        users: usize,
        reject: Option<Value>,
        requests: Mutex<Vec<ListRequest>>,
    }

    const PER_PAGE: usize = 3;

    impl Listing for Fake {
        fn streams(&self) -> &'static [&'static str] {
            &[USERS, MEMBERSHIPS]
        }

        fn pages(self: Arc<Self>, request: ListRequest) -> PageStream {
            self.requests.lock().unwrap().push(request.clone());
            let reject = request.start.is_some() && request.start == self.reject;
            let start = request.start.as_ref().and_then(Value::as_u64).unwrap_or(0) as usize;
            let total = self.users;
            let pages = futures::stream::unfold(Some(start), move |at| async move {
                let at = at?;
                if reject {
                    return Some((
                        Err(SourceError::CursorRejected {
                            stream: USERS,
                            cursor: at.to_string(),
                            detail: "gone".into(),
                        }),
                        None,
                    ));
                }
                let end = (at + PER_PAGE).min(total);
                let mut records = Vec::new();
                for i in at..end {
                    let user = json!({"id": format!("u{i}"), "email": format!("u{i}@x.io"), "attributes": {}});
                    records.push(Emit::new(USERS, user.as_object().cloned().unwrap()));
                    let m = json!({"group_id": "g1", "user_id": format!("u{i}"), "attributes": {}});
                    records.push(Emit::new(MEMBERSHIPS, m.as_object().cloned().unwrap()));
                }
                let next = (end < total).then(|| json!(end));
                let page = Page {
                    records,
                    next: next.clone(),
                    extracted_at: Utc::now(),
                    skipped: if at == 0 {
                        vec![Skipped::new(USERS, "user without an id: {}")]
                    } else {
                        Vec::new()
                    },
                    duplicates: 0,
                };
                Some((Ok(page), next.map(|n| n.as_u64().unwrap() as usize)))
            });
            Box::pin(pages)
        }
    }

    #[derive(Debug)]
    struct FakeSource(Arc<Fake>);

    #[async_trait::async_trait]
    impl Source for FakeSource {
        async fn check(&self) -> Result<(), SourceError> {
            Ok(())
        }
        fn listings(&self) -> Vec<Arc<dyn Listing>> {
            vec![self.0.clone()]
        }
    }

    fn fake(users: usize, reject: Option<Value>) -> (FakeSource, Arc<Fake>) {
        let fake = Arc::new(Fake {
            users,
            reject,
            requests: Mutex::new(Vec::new()),
        });
        (FakeSource(fake.clone()), fake)
    }

    async fn run(
        source: &FakeSource,
        selection: &Selection,
        state: TapState,
    ) -> (Vec<Message>, Summary) {
        let mut writer = SingerWriter::new(Vec::new());
        let summary = sync(source, selection, state, &mut writer).await.unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        let messages = text
            .lines()
            .enumerate()
            .map(|(i, l)| parse_message(i as u64 + 1, l.as_bytes()).unwrap().unwrap())
            .collect();
        (messages, summary)
    }

    fn states(messages: &[Message]) -> Vec<Value> {
        messages
            .iter()
            .filter_map(|m| match m {
                Message::State(s) => Some(s.value.clone()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_state_follows_every_page_and_the_last_completes_the_streams() {
        let (source, _) = fake(7, None);
        let (messages, summary) = run(
            &source,
            &Selection::all(&[USERS, MEMBERSHIPS]),
            TapState::default(),
        )
        .await;
        let kinds: String = messages
            .iter()
            .map(|m| match m {
                Message::Schema(_) => 'S',
                Message::Record(_) => 'R',
                Message::State(_) => 'T',
                _ => '?',
            })
            .collect();
        assert_eq!(kinds, "SSRRRRRRTRRRRRRTRRT");
        let states = states(&messages);
        assert_eq!(states[0]["bookmarks"]["users"]["next_page"], 3);
        assert_eq!(states[0]["bookmarks"]["memberships"]["next_page"], 3);
        assert_eq!(states[0]["currently_syncing"], "users");
        assert_eq!(states[2]["currently_syncing"], Value::Null);
        assert!(states[2]["bookmarks"]["users"]["completed_at"].is_string());
        assert!(states[2]["bookmarks"]["users"].get("next_page").is_none());
        for m in &messages {
            if let Message::Record(r) = m {
                assert!(r.time_extracted.as_deref().unwrap().ends_with("+00:00"));
            }
        }
        assert_eq!(summary.counts(USERS).records, 7);
        assert_eq!(summary.counts(USERS).skipped, 1);
        assert_eq!(summary.pages, 3);
        assert_eq!(
            summary.line(),
            "users 7 (1 skipped, see warnings), memberships 7 in 3 page(s)"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unfinished_streams_resume_and_finished_ones_start_over() {
        let (source, listing) = fake(7, None);
        let selection = Selection::all(&[USERS, MEMBERSHIPS]);
        let state = TapState::from_value(json!({
            "bookmarks": {"users": {"next_page": 6}, "memberships": {"next_page": 6}},
            "currently_syncing": "users"
        }))
        .unwrap();
        let (messages, summary) = run(&source, &selection, state).await;
        assert_eq!(summary.counts(USERS).records, 1);
        assert_eq!(listing.requests.lock().unwrap()[0].start, Some(json!(6)));
        let last = states(&messages).pop().unwrap();
        // A finished stream starts a fresh pass.
        let (_, summary) = run(&source, &selection, TapState::from_value(last).unwrap()).await;
        assert_eq!(summary.counts(USERS).records, 7);
        assert_eq!(listing.requests.lock().unwrap()[1].start, None);
        // Streams of one listing that disagree make it start over: nothing is skipped.
        let state = TapState::from_value(json!({
            "bookmarks": {"users": {"next_page": 6}, "memberships": {"completed_at": "2026-01-01T00:00:00Z"}}
        }))
        .unwrap();
        let (_, summary) = run(&source, &selection, state).await;
        assert_eq!(summary.counts(MEMBERSHIPS).records, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_finished_within_the_interrupted_run_are_not_read_again() {
        let (source, listing) = fake(7, None);
        let selection = Selection::all(&[USERS, MEMBERSHIPS]);
        // The first run: it marks itself under way and its last STATE clears that.
        let (messages, _) = run(&source, &selection, TapState::default()).await;
        let all = states(&messages);
        assert!(all[0]["sync_started_at"].is_string());
        assert_eq!(all.last().unwrap()["sync_started_at"], Value::Null);
        // A run killed after this listing finished but before the others did.
        let mut interrupted = all.last().unwrap().clone();
        interrupted["sync_started_at"] = json!("2026-01-01T00:00:00.000Z");
        interrupted["currently_syncing"] = json!("groups");
        let (messages, summary) = run(
            &source,
            &selection,
            TapState::from_value(interrupted.clone()).unwrap(),
        )
        .await;
        assert_eq!(listing.requests.lock().unwrap().len(), 1, "no second read");
        assert_eq!(summary.counts(USERS).records, 0);
        assert_eq!(summary.already_done, [USERS, MEMBERSHIPS]);
        assert!(
            summary
                .line()
                .contains("users done before the interruption")
        );
        let closing = states(&messages);
        assert_eq!(closing.len(), 1);
        assert_eq!(closing[0]["sync_started_at"], Value::Null);
        // Finished before the interrupted run started: read again.
        interrupted["sync_started_at"] = json!("2999-01-01T00:00:00.000Z");
        let (_, summary) = run(
            &source,
            &selection,
            TapState::from_value(interrupted).unwrap(),
        )
        .await;
        assert_eq!(summary.counts(USERS).records, 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rejected_cursor_restarts_the_listing_once() {
        let (source, listing) = fake(4, Some(json!(3)));
        let state =
            TapState::from_value(json!({"bookmarks": {"users": {"next_page": 3}}})).unwrap();
        let (messages, summary) = run(&source, &Selection::all(&[USERS]), state).await;
        assert_eq!(summary.restarted, [USERS]);
        assert_eq!(summary.counts(USERS).records, 4);
        let ids: Vec<_> = messages
            .iter()
            .filter_map(|m| match m {
                Message::Record(r) => Some(r.record["id"].clone()),
                _ => None,
            })
            .collect();
        assert_eq!(ids, ["u0", "u1", "u2", "u3"], "no record twice");
        let requests = listing.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].start, None);
        assert_eq!(
            requests[1].wanted,
            [USERS],
            "memberships were not asked for"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unselected_listing_is_never_asked_for_pages() {
        let (source, listing) = fake(4, None);
        let mut catalog: Catalog = discover(&[USERS, MEMBERSHIPS]);
        for entry in &mut catalog.streams {
            entry.metadata[0]
                .metadata
                .insert("selected".into(), json!(false));
        }
        let selection = Selection::from_catalog(&catalog, &[USERS, MEMBERSHIPS]);
        let (messages, summary) = run(&source, &selection, TapState::default()).await;
        assert!(messages.is_empty());
        assert_eq!(summary.line(), "no stream selected");
        assert!(listing.requests.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_stdout_stops_cleanly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let (source, _) = fake(700, None);
        let mut writer = SingerWriter::new(Closed);
        let summary = sync(
            &source,
            &Selection::all(&[USERS]),
            TapState::default(),
            &mut writer,
        )
        .await
        .unwrap();
        assert!(summary.stopped_early);
    }
}
