//! What the tap reads from Userflow: two cursor-paged listings.
//!
//! - `GET /users?limit=100&order_by=created_at&sort=asc&expand=memberships` feeds `users` and,
//!   from each user's expanded memberships, `memberships`: no extra call per user. Without
//!   `memberships` selected the expand is left off.
//! - `GET /groups?limit=100&order_by=created_at&sort=asc` feeds `groups`.
//!
//! Both page with `starting_after=<last id>` until `has_more` is false; the bookmark is the last
//! id. Ordering by `created_at` is deliberate: Userflow answers 500 when the `order_by` field of
//! the `starting_after` record is null, and `created_at` never is. A stored id whose record was
//! deleted since gets `400 invalid_params`; the engine then warns and reads the stream again.
//!
//! The same can happen during a run: the last record of a page is deleted before the next page
//! is asked for. Then the next page starts after the page's previous id, and the one before
//! that, and so on (the listing is ordered, so what follows any of them is what was not read
//! yet); if every id of the page is gone, the listing is read again from the start. Either
//! way the ids already emitted in this run are left out ([`Dedupe`]), so nothing comes twice.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::wire;
use crate::config::Resolved;
use crate::http::paginate::cursor;
use crate::http::{
    Auth, ClientConfig, ClientSpec, HeaderName, HeaderValue, HttpClient, HttpError, RequestBuilder,
    Response, StatusCode,
};
use crate::model::{GROUPS, MEMBERSHIPS, USERS, key_text};
use crate::scim::list::Dedupe;
use crate::vendors::source::{
    Emit, ListRequest, Listing, Page, PageStream, Skipped, Source, SourceError, cursor_text,
    sequential,
};

/// Records per page: Userflow's maximum (its default is 20).
pub const PAGE_SIZE: &str = "100";

/// The order that keeps `starting_after` valid (see the module doc).
const ORDER_BY: &str = "created_at";

/// Builds the Userflow source (the registry's `source`).
pub fn source(config: &Resolved) -> Result<Box<dyn Source>, SourceError> {
    let typed: super::config::Config = config.typed()?;
    // Each listing is one page at a time (a cursor chain), so there is no initial burst for a
    // cautious start to soften; it cost ~0.6 s of a 1,000-page run.
    let client = ClientConfig::for_vendor(config, ClientSpec::new(Auth::Bearer(typed.api_key)))?
        .without_cautious_start()
        .header(
            HeaderName::from_static("userflow-version"),
            HeaderValue::from_static(super::API_VERSION),
        );
    Ok(Box::new(Userflow {
        client: HttpClient::new(client)?,
    }))
}

/// The Userflow source.
#[derive(Debug, Clone)]
pub struct Userflow {
    client: HttpClient,
}

#[async_trait::async_trait]
impl Source for Userflow {
    async fn check(&self) -> Result<(), SourceError> {
        self.client.get("/users").query("limit", "1").send().await?;
        Ok(())
    }

    /// `GET /attribute_definitions` (all pages): `scope` `user` types the users stream's
    /// attributes, `group` the groups stream's, by `data_type`. An account or server without the
    /// endpoint (404) has none: the columns are then typed from the values.
    async fn attribute_schemas(&self) -> Result<BTreeMap<String, Map<String, Value>>, SourceError> {
        let mut out: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let mut request = self
                .client
                .get("/attribute_definitions")
                .query("limit", PAGE_SIZE);
            if let Some(after) = &after {
                request = request.query("starting_after", after);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => {
                    tracing::info!(
                        "Userflow has no attribute definitions here; typing attribute columns from the values"
                    );
                    return Ok(BTreeMap::new());
                }
                Err(err) => return Err(err.into()),
            };
            let list = cursor::parse(&response.body).map_err(|err| SourceError::Decode {
                stream: USERS,
                url: response.url.to_string(),
                detail: err.to_string(),
            })?;
            for definition in &list.records {
                // The attributes that become standard fields have columns of their own.
                let (stream, standard): (&str, &[&str]) = match definition["scope"].as_str() {
                    Some("user") => (USERS, &["email", "name", "first_name", "last_name"]),
                    Some("group") => (GROUPS, &["name"]),
                    _ => continue,
                };
                let (Some(name), Some(data_type)) = (
                    definition["name"].as_str(),
                    definition["data_type"].as_str(),
                ) else {
                    continue;
                };
                if standard.contains(&name) {
                    continue;
                }
                if let Some(schema) = crate::tap::flatten::attribute_schema(data_type) {
                    out.entry(stream.to_string())
                        .or_default()
                        .insert(name.to_string(), schema);
                }
            }
            match list.next_cursor.filter(|_| list.has_more) {
                Some(next) if after.as_ref() != Some(&next) => after = Some(next),
                _ => return Ok(out),
            }
        }
    }

    fn listings(&self) -> Vec<Arc<dyn Listing>> {
        // Groups first: a target writes a membership only once it knows its group.
        vec![
            Arc::new(List {
                client: self.client.clone(),
                kind: Kind::Groups,
            }),
            Arc::new(List {
                client: self.client.clone(),
                kind: Kind::Users,
            }),
        ]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Users,
    Groups,
}

/// One Userflow list endpoint.
#[derive(Debug)]
struct List {
    client: HttpClient,
    kind: Kind,
}

impl Listing for List {
    fn streams(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Users => &[USERS, MEMBERSHIPS],
            Kind::Groups => &[GROUPS],
        }
    }

    fn pages(self: Arc<Self>, request: ListRequest) -> PageStream {
        let memberships = self.kind == Kind::Users && request.wants(MEMBERSHIPS);
        let run = Arc::new(Mutex::new(Run::default()));
        if self.kind == Kind::Users {
            return self.users_pages(&request, memberships, run);
        }
        sequential(&request, move |cursor, from_state| {
            let list = self.clone();
            let run = run.clone();
            async move { list.page(cursor, from_state, memberships, &run).await }
        })
    }
}

/// Answers the users chain holds ahead of the decoding: one being decoded, these waiting.
const CHAIN_AHEAD: usize = 2;

/// A fetch's fallback cursors (the previous page's ids but its last, newest first), awaited
/// only when Userflow refuses the cursor: the users chain asks for a page before it has noted
/// the ids of the one before.
type Fallbacks = futures::future::Shared<futures::future::BoxFuture<'static, Vec<String>>>;

/// A users page as the cursor chain leaves it: the answer, scanned for its ids only.
struct Scanned {
    response: Response,
    /// Per user of the page, in order: true unless an earlier page of this run had it.
    fresh: Vec<bool>,
    /// The next page's cursor.
    next: Option<Value>,
    extracted_at: chrono::DateTime<Utc>,
}

/// Aborts a task of the users chain (the chain, a request sent ahead) when its result is no
/// longer wanted.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl List {
    /// The users listing in two stages, so the cursor chain never waits for a page to be made
    /// into records: a task of its own ([`List::users_chain`]) fetches each page, scans it for
    /// its ids (the cursor, the run's dedupe and the fallbacks need nothing else) and asks for
    /// the next page; the stream decodes the pages into records, in order, meanwhile.
    fn users_pages(
        self: Arc<Self>,
        request: &ListRequest,
        memberships: bool,
        run: Arc<Mutex<Run>>,
    ) -> PageStream {
        let (tx, rx) = tokio::sync::mpsc::channel(CHAIN_AHEAD);
        let chain = self
            .clone()
            .users_chain(request.start.clone(), memberships, run, tx);
        let task = AbortOnDrop(tokio::spawn(chain));
        Box::pin(futures::stream::unfold(
            (rx, task),
            move |(mut rx, task)| {
                let list = self.clone();
                async move {
                    let item = rx.recv().await?;
                    let page = item.and_then(|scanned| list.decode_users(scanned, memberships));
                    Some((page, (rx, task)))
                }
            },
        ))
    }

    /// The users cursor chain. Each page's next request goes out as soon as the end of the
    /// answer names the cursor ([`tail_cursor`]), before the page is scanned for its ids; the
    /// scan then checks that cursor, and when it names another one (a page not in Userflow's
    /// usual shape) the request sent ahead is dropped and the scan's cursor asked for instead.
    /// The chain ends after the last page or the first error, each sent to `tx` in order.
    async fn users_chain(
        self: Arc<Self>,
        start: Option<Value>,
        memberships: bool,
        run: Arc<Mutex<Run>>,
        tx: tokio::sync::mpsc::Sender<Result<Scanned, SourceError>>,
    ) {
        let mut from_state = start.is_some();
        let mut cursor = start;
        let mut fallbacks: Fallbacks = futures::FutureExt::shared(futures::FutureExt::boxed(
            futures::future::ready(Vec::new()),
        ));
        // The request sent ahead for `cursor`, and the cursor it asked for.
        let mut ahead: Option<(String, AbortOnDrop<Result<Response, SourceError>>)> = None;
        loop {
            let fetched = match ahead.take() {
                Some((_, mut task)) => (&mut task.0).await.ok(),
                None => None,
            };
            let fetched = match fetched {
                Some(fetched) => fetched,
                None => {
                    let fallbacks = fallbacks.clone();
                    self.fetch(cursor.clone(), from_state, memberships, fallbacks)
                        .await
                }
            };
            let response = match fetched {
                Ok(response) => response,
                Err(err) => {
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            let extracted_at = Utc::now();
            let (noted, next_fallbacks) = tokio::sync::oneshot::channel::<Vec<String>>();
            let next_fallbacks: Fallbacks = futures::FutureExt::shared(futures::FutureExt::boxed(
                futures::FutureExt::map(next_fallbacks, Result::unwrap_or_default),
            ));
            if let Some(Some(guess)) = tail_cursor(&response.body) {
                let list = self.clone();
                let fallbacks = next_fallbacks.clone();
                let after = Some(Value::String(guess.clone()));
                let task =
                    tokio::spawn(
                        async move { list.fetch(after, false, memberships, fallbacks).await },
                    );
                ahead = Some((guess, AbortOnDrop(task)));
            }
            let scanned = match self.scan(response, extracted_at, &run) {
                Ok((scanned, page_fallbacks)) => {
                    let _ = noted.send(page_fallbacks);
                    scanned
                }
                Err(err) => {
                    drop(ahead);
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            let next = scanned.next.clone();
            if ahead.as_ref().map(|(guess, _)| guess.as_str())
                != next.as_ref().and_then(Value::as_str)
            {
                ahead = None;
            }
            if tx.send(Ok(scanned)).await.is_err() {
                return;
            }
            if next.is_none() {
                return;
            }
            cursor = next;
            from_state = false;
            fallbacks = next_fallbacks;
        }
    }

    /// A users page scanned: its ids noted (which are new to this run), its next cursor, and
    /// the fallback cursors for the page after it.
    fn scan(
        &self,
        response: Response,
        extracted_at: chrono::DateTime<Utc>,
        run: &Mutex<Run>,
    ) -> Result<(Scanned, Vec<String>), SourceError> {
        let list: UsersScan = match quick_scan(&response.body) {
            Some(list) => list,
            None => serde_json::from_slice(&response.body).map_err(|err| {
                self.decode_error(&response, format!("not a Userflow list: {err}"))
            })?,
        };
        let next = list
            .next_cursor()
            .map_err(|NoCursor| {
                self.decode_error(
                    &response,
                    "the page says has_more but gives no cursor".into(),
                )
            })?
            .map(Value::String);
        let (fresh, fallbacks) = self.remember(run, &list.ids);
        Ok((
            Scanned {
                response,
                fresh,
                next,
                extracted_at,
            },
            fallbacks,
        ))
    }

    /// A scanned users page made into records: rendered straight from the answer's bytes
    /// when it is in Userflow's usual shape, else through `wire::user`.
    fn decode_users(&self, scanned: Scanned, memberships: bool) -> Result<Page, SourceError> {
        let Scanned {
            response,
            fresh,
            next,
            extracted_at,
        } = scanned;
        let mut page = Page::last(extracted_at);
        page.next = next;
        users_records(&response.body, &fresh, memberships, &mut page)
            .map_err(|err| self.decode_error(&response, format!("not a Userflow list: {err}")))?;
        Ok(page)
    }
}

/// A users page's records (`fresh` per user: false for one an earlier page had).
fn users_records(
    body: &[u8],
    fresh: &[bool],
    memberships: bool,
    page: &mut Page,
) -> Result<(), serde_json::Error> {
    if fast_users_page(body, fresh, memberships, page).is_some() {
        return Ok(());
    }
    let list: wire::UsersPage = serde_json::from_slice(body)?;
    let users = list.data.unwrap_or_default();
    page.records.reserve(users.len() * 2);
    for (wire, fresh) in users.into_iter().zip(fresh) {
        if !fresh {
            page.duplicates += 1;
            continue;
        }
        let parts = wire::user(wire, memberships);
        if let Some(user) = parts.user {
            page.records.push(Emit::new(USERS, user));
        }
        for membership in parts.memberships {
            page.records.push(Emit::new(MEMBERSHIPS, membership));
        }
        page.skipped.extend(parts.problems);
    }
    Ok(())
}

/// What a listing remembers between its pages in this process.
#[derive(Debug, Default)]
struct Run {
    /// Ids emitted so far.
    seen: Dedupe,
    /// The groups listing's last page's ids but its last, newest first: where to start after
    /// instead when the cursor's own record was deleted meanwhile (the users chain hands its
    /// pages' fallbacks to the next fetch itself).
    fallbacks: Vec<String>,
}

/// The id of a listed group, if it has one.
fn listed_id(value: &Value) -> Option<String> {
    let id = value.get("id")?;
    id.as_str()
        .map(str::to_owned)
        .or_else(|| id.as_u64().map(|n| n.to_string()))
}

impl List {
    async fn page(
        &self,
        cursor: Option<Value>,
        from_state: bool,
        memberships: bool,
        run: &Mutex<Run>,
    ) -> Result<Page, SourceError> {
        // Users go through `users_pages`; this reads the groups listing.
        let fallbacks = async {
            std::mem::take(&mut run.lock().unwrap_or_else(PoisonError::into_inner).fallbacks)
        };
        let response = self
            .fetch(cursor, from_state, memberships, fallbacks)
            .await?;
        let mut page = Page::last(Utc::now());
        self.groups_page(&response, run, &mut page)?;
        Ok(page)
    }

    /// The listing's path.
    fn path(&self) -> &'static str {
        match self.kind {
            Kind::Users => "/users",
            Kind::Groups => "/groups",
        }
    }

    /// Reads one page: after the cursor, else (during a run, when Userflow no longer knows the
    /// cursor because it was deleted) after the previous page's earlier ids (`fallbacks`,
    /// awaited only then), else from the start.
    async fn fetch(
        &self,
        cursor: Option<Value>,
        from_state: bool,
        memberships: bool,
        fallbacks: impl std::future::Future<Output = Vec<String>>,
    ) -> Result<Response, SourceError> {
        let after = match &cursor {
            Some(Value::String(id)) => Some(id.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(SourceError::BadCursor {
                    stream: self.main_stream(),
                    cursor: other.to_string(),
                });
            }
            None => None,
        };
        // The cursor, then (during a run) the page's earlier ids, then the start.
        let mut candidates: std::collections::VecDeque<Option<String>> = [after].into();
        let mut fallbacks = (!from_state).then_some(fallbacks);
        loop {
            let Some(after) = candidates.pop_front() else {
                return Err(SourceError::Decode {
                    stream: self.main_stream(),
                    url: self.path().to_string(),
                    detail: "no cursor left to read on from".into(),
                });
            };
            match self.request(memberships, after.as_deref()).send().await {
                Ok(response) => return Ok(response),
                Err(err) if from_state && cursor_refused(&err) => {
                    return Err(SourceError::CursorRejected {
                        stream: self.main_stream(),
                        cursor: cursor.as_ref().map(cursor_text).unwrap_or_default(),
                        detail: err.body_excerpt().unwrap_or_default().to_string(),
                    });
                }
                Err(err)
                    if cursor_refused(&err) && (fallbacks.is_some() || !candidates.is_empty()) =>
                {
                    if let Some(fallbacks) = fallbacks.take() {
                        candidates.extend(fallbacks.await.into_iter().map(Some));
                        candidates.push_back(None);
                    }
                    let then = match candidates.front() {
                        Some(Some(id)) => format!("reading on after {id}, read earlier"),
                        _ => "reading the listing again from the start, leaving out what was read"
                            .into(),
                    };
                    tracing::warn!(
                        stream = self.main_stream(),
                        "userflow no longer knows {} (deleted during the run); {then}",
                        after.as_deref().unwrap_or_default()
                    );
                }
                Err(err) => return Err(err.into()),
            }
        }
    }

    /// The request for one page after `after` (from the start without it).
    fn request(&self, memberships: bool, after: Option<&str>) -> RequestBuilder {
        let mut request = self
            .client
            .get(self.path())
            .query("limit", PAGE_SIZE)
            .query("order_by", ORDER_BY)
            .query("sort", "asc");
        if memberships {
            request = request.query("expand", "memberships");
        }
        if let Some(after) = after {
            // Last, so that `next_page_url` parsers that split on the first `&` still work.
            request = request.query("starting_after", after);
        }
        request
    }

    /// A page's decoding failed.
    fn decode_error(&self, response: &Response, detail: String) -> SourceError {
        SourceError::Decode {
            stream: self.main_stream(),
            url: response.url.to_string(),
            detail,
        }
    }

    /// A groups page: its groups and the next cursor.
    fn groups_page(
        &self,
        response: &Response,
        run: &Mutex<Run>,
        page: &mut Page,
    ) -> Result<(), SourceError> {
        let list = cursor::parse(&response.body)
            .map_err(|err| self.decode_error(response, err.to_string()))?;
        page.next = list
            .next_cursor
            .filter(|_| list.has_more)
            .map(Value::String);
        let ids: Vec<Option<String>> = list.records.iter().map(listed_id).collect();
        let (fresh, fallbacks) = self.remember(run, &ids);
        run.lock().unwrap_or_else(PoisonError::into_inner).fallbacks = fallbacks;
        for (value, fresh) in list.records.into_iter().zip(fresh) {
            if !fresh {
                page.duplicates += 1;
                continue;
            }
            match wire::group(value) {
                Ok(group) => page.records.push(Emit::new(GROUPS, group)),
                Err(problem) => page.skipped.push(Skipped::new(GROUPS, problem)),
            }
        }
        Ok(())
    }
}

impl List {
    /// Notes a page's ids: which are new to this run (the others are left out), and the
    /// fallback cursors for the next page (its ids but the last, newest first).
    fn remember(&self, run: &Mutex<Run>, ids: &[Option<String>]) -> (Vec<bool>, Vec<String>) {
        let mut run = run.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = ids
            .iter()
            .map(|id| id.as_ref().is_none_or(|id| run.seen.first(id)))
            .collect();
        let fallbacks = ids.iter().flatten().rev().skip(1).cloned().collect();
        (fresh, fallbacks)
    }
}

/// Userflow's answer to a `starting_after` id that no longer exists:
/// `400 {"error": {"code": "invalid_params", "message": "starting_after: … not found"}}`.
fn cursor_refused(err: &HttpError) -> bool {
    err.status() == Some(StatusCode::BAD_REQUEST)
        && err
            .body_excerpt()
            .is_some_and(|body| body.contains("invalid_params") || body.contains("starting_after"))
}

mod fast;
mod scan;

use fast::*;
use scan::*;

#[cfg(test)]
mod fast_tests;
