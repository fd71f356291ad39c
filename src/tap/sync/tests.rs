use super::*;
use crate::model::{MEMBERSHIPS, USERS};
use crate::singer::{Catalog, reader::parse_message};
use crate::tap::select::discover;
use crate::vendors::source::{Emit, PageStream, Skipped};
use serde_json::json;
use std::sync::Mutex;

/// The fake vendor lists `users` by modification time.
const INCREMENTAL: Options<'static> = Options {
    start_date: None,
    incremental: &[USERS],
};

/// A listing of `users` (and their memberships) paged by offset, three per page.
#[derive(Debug)]
struct Fake {
    users: usize,
    reject: Option<Value>,
    requests: Mutex<Vec<ListRequest>>,
    /// Give the records as JSON text in the page (`Emit::rendered`), as Userflow's users do.
    render: bool,
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
        let render = self.render;
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
                // Modification times out of listing order, as a filtered listing has them.
                let updated = format!("2026-01-01T00:00:{:02}Z", (i * 5) % 11);
                let user = json!({"id": format!("u{i}"), "email": format!("u{i}@x.io"), "updated_at": updated, "attributes": {}});
                records.push(Emit::new(USERS, user.as_object().cloned().unwrap()));
                let m = json!({"group_id": "g1", "user_id": format!("u{i}"), "attributes": {}});
                records.push(Emit::new(MEMBERSHIPS, m.as_object().cloned().unwrap()));
            }
            let mut rendered = Vec::new();
            if render {
                for emit in &mut records {
                    let start = rendered.len();
                    serde_json::to_writer(&mut rendered, &emit.record).unwrap();
                    emit.record = serde_json::Map::new();
                    emit.rendered = Some(start..rendered.len());
                }
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
                rendered,
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
    async fn filters_now(&self) -> Result<bool, SourceError> {
        Ok(true)
    }
}

fn fake(users: usize, reject: Option<Value>) -> (FakeSource, Arc<Fake>) {
    let fake = Arc::new(Fake {
        users,
        reject,
        requests: Mutex::new(Vec::new()),
        render: false,
    });
    (FakeSource(fake.clone()), fake)
}

async fn run(
    source: &FakeSource,
    selection: &Selection,
    state: TapState,
) -> (Vec<Message>, Summary) {
    let mut writer = SingerWriter::new(Vec::new());
    let summary = sync(source, selection, state, &mut writer, &INCREMENTAL)
        .await
        .unwrap();
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
            Message::ActivateVersion(_) => 'A',
            _ => '?',
        })
        .collect();
    // A first pass opens and closes with ACTIVATE_VERSION for each stream.
    assert_eq!(kinds, "SSAARRRRRRTRRRRRRTRRAAT");
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
    let state = TapState::from_value(json!({"bookmarks": {"users": {"next_page": 3}}})).unwrap();
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
    let mut catalog: Catalog = discover(&[USERS, MEMBERSHIPS], &[]);
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
        &INCREMENTAL,
    )
    .await
    .unwrap();
    assert!(summary.stopped_early);
}

fn versions(messages: &[Message]) -> (Vec<Option<u64>>, Vec<(String, u64)>) {
    let mut records = Vec::new();
    let mut activations = Vec::new();
    for m in messages {
        match m {
            Message::Record(r) => records.push(r.version),
            Message::ActivateVersion(a) => activations.push((a.stream.clone(), a.version)),
            _ => {}
        }
    }
    (records, activations)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_pass_resumes_with_its_version_and_closes_once() {
    let (source, _) = fake(7, None);
    let selection = Selection::all(&[USERS, MEMBERSHIPS]);
    let (messages, _) = run(&source, &selection, TapState::default()).await;
    let (records, activations) = versions(&messages);
    let v = records[0].unwrap();
    assert!(records.iter().all(|r| *r == Some(v)), "{records:?}");
    assert_eq!(
        activations,
        [
            ("users".into(), v),
            ("memberships".into(), v),
            ("users".into(), v),
            ("memberships".into(), v)
        ]
    );
    let all = states(&messages);
    assert_eq!(
        all[0]["bookmarks"]["users"]["version"], v,
        "the pass's version is kept"
    );
    assert!(
        all[2]["bookmarks"]["users"].get("version").is_none(),
        "and dropped at its end"
    );
    // Killed after the first page: the resumed pass goes on with the same version, sends no
    // opening message and closes once, at its true end.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let (messages, summary) = run(
        &source,
        &selection,
        TapState::from_value(all[0].clone()).unwrap(),
    )
    .await;
    assert_eq!(summary.counts(USERS).records, 4);
    let (records, activations) = versions(&messages);
    assert!(records.iter().all(|r| *r == Some(v)), "{records:?}");
    assert_eq!(
        activations,
        [("users".into(), v), ("memberships".into(), v)]
    );
    let last = messages
        .iter()
        .rposition(|m| matches!(m, Message::ActivateVersion(_)))
        .unwrap();
    assert!(matches!(messages[last + 1], Message::State(_)));
    assert_eq!(
        last + 2,
        messages.len(),
        "the closing messages come after the last record"
    );
    // The next pass has a new version and, not being the first, no opening message.
    let done = states(&messages).pop().unwrap();
    let (messages, _) = run(&source, &selection, TapState::from_value(done).unwrap()).await;
    let (records, activations) = versions(&messages);
    let next = records[0].unwrap();
    assert!(next > v);
    assert_eq!(
        activations,
        [("users".into(), next), ("memberships".into(), next)]
    );
    assert!(
        matches!(messages[2], Message::Record(_)),
        "no opening ACTIVATE_VERSION"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_resumed_from_a_state_without_a_version_activates_nothing() {
    let (source, _) = fake(7, None);
    let state = TapState::from_value(json!({
        "bookmarks": {"users": {"next_page": 3}, "memberships": {"next_page": 3}}
    }))
    .unwrap();
    let (messages, summary) = run(&source, &Selection::all(&[USERS, MEMBERSHIPS]), state).await;
    assert_eq!(summary.counts(USERS).records, 4);
    let (records, activations) = versions(&messages);
    assert!(records.iter().all(Option::is_none), "{records:?}");
    assert!(
        activations.is_empty(),
        "records before the resume point carry no version"
    );
}

fn incremental_users() -> Selection {
    let mut catalog: Catalog = discover(&[USERS], &[USERS]);
    let top = &mut catalog.streams[0].metadata[0].metadata;
    assert!(top.get("forced-replication-method").is_none());
    assert_eq!(top["valid-replication-keys"], json!(["updated_at"]));
    top.insert("replication-method".into(), json!("INCREMENTAL"));
    top.insert("replication-key".into(), json!("updated_at"));
    Selection::from_catalog(&catalog, &[USERS])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_stream_keeps_the_highest_updated_at_once_its_pass_ends() {
    let (source, listing) = fake(7, None);
    let selection = incremental_users();
    let mut writer = SingerWriter::new(Vec::new());
    let state = TapState::default();
    sync(
        &source,
        &selection,
        state,
        &mut writer,
        &Options {
            start_date: Some("2025-06-01T00:00:00.000Z"),
            incremental: &[USERS],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        listing.requests.lock().unwrap()[0].since.as_deref(),
        Some("2025-06-01T00:00:00.000Z"),
        "start_date where there is no bookmark"
    );
    let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    let messages: Vec<Message> = text
        .lines()
        .enumerate()
        .map(|(i, l)| parse_message(i as u64 + 1, l.as_bytes()).unwrap().unwrap())
        .collect();
    let (records, activations) = versions(&messages);
    assert_eq!(records.len(), 7);
    assert!(
        records.iter().all(Option::is_none) && activations.is_empty(),
        "no versions"
    );
    let all = states(&messages);
    // Mid-pass: the highest value so far is progress, not yet the bookmark.
    assert_eq!(
        all[0]["bookmarks"]["users"]["progress_value"],
        "2026-01-01T00:00:10Z"
    );
    assert!(
        all[0]["bookmarks"]["users"]
            .get("replication_key_value")
            .is_none()
    );
    let done = &all[2]["bookmarks"]["users"];
    assert_eq!(done["replication_key"], "updated_at");
    assert_eq!(done["replication_key_value"], "2026-01-01T00:00:10Z");
    assert!(done.get("progress_value").is_none());
    // The next run asks for what changed after it; an interrupted one for the same.
    run(
        &source,
        &selection,
        TapState::from_value(all[2].clone()).unwrap(),
    )
    .await;
    run(
        &source,
        &selection,
        TapState::from_value(all[0].clone()).unwrap(),
    )
    .await;
    let requests = listing.requests.lock().unwrap();
    assert_eq!(requests[1].since.as_deref(), Some("2026-01-01T00:00:10Z"));
    assert_eq!(
        requests[2].since, None,
        "mid-pass the filter stays the pass's own"
    );
    assert_eq!(requests[2].start, Some(json!(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_falls_back_to_full_table_where_the_vendor_cannot_filter() {
    #[derive(Debug)]
    struct Unfiltered(Arc<Fake>);
    #[async_trait::async_trait]
    impl Source for Unfiltered {
        async fn check(&self) -> Result<(), SourceError> {
            Ok(())
        }
        fn listings(&self) -> Vec<Arc<dyn Listing>> {
            vec![self.0.clone()]
        }
    }
    let (_, listing) = fake(4, None);
    let source = Unfiltered(listing.clone());
    let mut writer = SingerWriter::new(Vec::new());
    sync(
        &source,
        &incremental_users(),
        TapState::default(),
        &mut writer,
        &Options {
            start_date: Some("2025-01-01"),
            incremental: &[USERS],
        },
    )
    .await
    .unwrap();
    assert_eq!(listing.requests.lock().unwrap()[0].since, None);
    let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
    assert_eq!(text.matches("ACTIVATE_VERSION").count(), 2, "{text}");
}

/// The records and the bookmarks' replication values of a run, without its clock.
fn records_and_marks(messages: &[Message]) -> (Vec<(String, crate::model::Object)>, Vec<Value>) {
    let records = messages
        .iter()
        .filter_map(|m| match m {
            Message::Record(r) => Some((r.stream.clone(), r.record.clone())),
            _ => None,
        })
        .collect();
    let marks = states(messages)
        .iter()
        .map(|s| s["bookmarks"]["users"]["replication_key_value"].clone())
        .collect();
    (records, marks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_given_as_json_text_are_written_projected_and_bookmarked_alike() {
    let plain = fake(7, None).0;
    let rendered = FakeSource(Arc::new(Fake {
        users: 7,
        reject: None,
        requests: Mutex::new(Vec::new()),
        render: true,
    }));
    let mut projected: Catalog = discover(&[USERS, MEMBERSHIPS], &[]);
    for meta in &mut projected.streams[0].metadata {
        if meta.breadcrumb == ["properties", "email"] {
            meta.metadata.insert("selected".into(), json!(false));
        }
    }
    let projected = Selection::from_catalog(&projected, &[USERS, MEMBERSHIPS]);
    for selection in [
        Selection::all(&[USERS, MEMBERSHIPS]),
        incremental_users(),
        projected,
    ] {
        let (want, want_summary) = run(&plain, &selection, TapState::default()).await;
        let (got, got_summary) = run(&rendered, &selection, TapState::default()).await;
        let (records, marks) = records_and_marks(&got);
        assert_eq!(
            (&records, &marks),
            (&records_and_marks(&want).0, &records_and_marks(&want).1)
        );
        assert_eq!(got_summary.line(), want_summary.line());
        assert_eq!(got.len(), want.len());
        assert!(!records.is_empty());
    }
}
