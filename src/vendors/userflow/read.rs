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
use futures::StreamExt;
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
    let client = ClientConfig::for_vendor(config, ClientSpec::new(Auth::Bearer(typed.api_key)))?
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

/// A users page as the cursor chain leaves it: the answer, scanned for its ids only.
struct Scanned {
    response: Response,
    /// Per user of the page, in order: true unless an earlier page of this run had it.
    fresh: Vec<bool>,
    /// The next page's cursor.
    next: Option<Value>,
    extracted_at: chrono::DateTime<Utc>,
}

/// Aborts the users chain when its pages are no longer wanted.
struct ChainTask(tokio::task::JoinHandle<()>);

impl Drop for ChainTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl List {
    /// The users listing in two stages, so the cursor chain never waits for a page to be made
    /// into records: a task of its own fetches each page, scans it for its ids (the cursor,
    /// the run's dedupe and the fallbacks need nothing else) and asks for the next page at
    /// once; the stream decodes the pages into records, in order, meanwhile.
    fn users_pages(
        self: Arc<Self>,
        request: &ListRequest,
        memberships: bool,
        run: Arc<Mutex<Run>>,
    ) -> PageStream {
        let list = self.clone();
        let mut chain = sequential_scans(request, move |cursor, from_state| {
            let list = list.clone();
            let run = run.clone();
            async move { list.scan(cursor, from_state, memberships, &run).await }
        });
        let (tx, rx) = tokio::sync::mpsc::channel(CHAIN_AHEAD);
        let task = ChainTask(tokio::spawn(async move {
            while let Some(item) = chain.next().await {
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        }));
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

    /// One step of the users chain: fetches the page after `cursor`, notes its ids and finds
    /// the next cursor.
    async fn scan(
        &self,
        cursor: Option<Value>,
        from_state: bool,
        memberships: bool,
        run: &Mutex<Run>,
    ) -> Result<Scanned, SourceError> {
        let response = self.fetch(cursor, from_state, memberships, run).await?;
        let extracted_at = Utc::now();
        let list: UsersScan = match quick_scan(&response.body) {
            Some(list) => list,
            None => serde_json::from_slice(&response.body).map_err(|err| {
                self.decode_error(&response, format!("not a Userflow list: {err}"))
            })?,
        };
        let more = list.has_more();
        let ids = list.ids;
        let mut next = None;
        if more {
            let last = ids.last().cloned().flatten();
            let from_url = || {
                list.next_page_url
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(cursor::starting_after)
            };
            let cursor = last.or_else(from_url).ok_or_else(|| {
                self.decode_error(
                    &response,
                    "the page says has_more but gives no cursor".into(),
                )
            })?;
            next = Some(Value::String(cursor));
        }
        let fresh = self.remember(run, &ids);
        Ok(Scanned {
            response,
            fresh,
            next,
            extracted_at,
        })
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

/// [`sequential`] for the users chain's scanned pages.
fn sequential_scans<F, Fut>(
    request: &ListRequest,
    fetch: F,
) -> futures::stream::BoxStream<'static, Result<Scanned, SourceError>>
where
    F: Fn(Option<Value>, bool) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Scanned, SourceError>> + Send + 'static,
{
    let from_state = request.start.is_some();
    let first = (Some(request.start.clone()), from_state);
    let fetch = Arc::new(fetch);
    Box::pin(futures::stream::unfold(
        first,
        move |(cursor, from_state)| {
            let fetch = fetch.clone();
            async move {
                let cursor = cursor?;
                match fetch(cursor, from_state).await {
                    Ok(scanned) => {
                        let next = scanned.next.clone().map(Some);
                        Some((Ok(scanned), (next, false)))
                    }
                    Err(err) => Some((Err(err), (None, false))),
                }
            }
        },
    ))
}

/// What a listing remembers between its pages in this process.
#[derive(Debug, Default)]
struct Run {
    /// Ids emitted so far.
    seen: Dedupe,
    /// The last page's ids but its last, newest first: where to start after instead when the
    /// cursor's own record was deleted meanwhile.
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
        let response = self.fetch(cursor, from_state, memberships, run).await?;
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
    /// cursor because it was deleted) after the page's earlier ids, else from the start.
    async fn fetch(
        &self,
        cursor: Option<Value>,
        from_state: bool,
        memberships: bool,
        run: &Mutex<Run>,
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
        let mut candidates: Vec<Option<String>> = vec![after];
        if !from_state {
            let fallbacks =
                std::mem::take(&mut run.lock().unwrap_or_else(PoisonError::into_inner).fallbacks);
            candidates.extend(fallbacks.into_iter().map(Some));
            candidates.push(None);
        }
        let mut candidates = candidates.into_iter().peekable();
        loop {
            let Some(after) = candidates.next() else {
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
                Err(err) if cursor_refused(&err) && candidates.peek().is_some() => {
                    let then = match candidates.peek() {
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
        let fresh = self.remember(run, &ids);
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
    /// fallback cursors for the next page.
    fn remember(&self, run: &Mutex<Run>, ids: &[Option<String>]) -> Vec<bool> {
        let mut run = run.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = ids
            .iter()
            .map(|id| id.as_ref().is_none_or(|id| run.seen.first(id)))
            .collect();
        let listed: Vec<String> = ids.iter().flatten().cloned().collect();
        run.fallbacks = listed.iter().rev().skip(1).cloned().collect();
        fresh
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

/// A `GET /users` page scanned for what its cursor chain needs: each user's id (`None` for a
/// user without a usable one, as `wire::id_of` reads it), `has_more` and `next_page_url`.
/// Nothing else is built, so the next page can be asked for before this one is decoded.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
struct UsersScan {
    /// Per user, its id.
    #[serde(default, rename = "data", deserialize_with = "scan_ids")]
    ids: Vec<Option<String>>,
    #[serde(default)]
    has_more: Option<Value>,
    #[serde(default)]
    next_page_url: Option<Value>,
}

impl UsersScan {
    /// True when another page follows, as `wire::UsersPage::has_more` says.
    fn has_more(&self) -> bool {
        wire::UsersPage {
            data: None,
            has_more: self.has_more.clone(),
            next_page_url: self.next_page_url.clone(),
        }
        .has_more()
    }
}

/// [`UsersScan`] without a parser, for the cursor chain: a byte walk that finds the page's
/// top-level keys and each user's own `id`, skipping everything else. Only for a body without
/// a backslash (so no string holds an escape, and a string ends at the next quote); `None`
/// for such a body, a numeric id, a repeated top-level key or anything else unexpected, which
/// the serde scan then reads. It does not check what it skips: the page's decoding parses the
/// whole answer and reports a malformed one.
fn quick_scan(body: &[u8]) -> Option<UsersScan> {
    if memchr::memchr(b'\\', body).is_some() {
        return None;
    }
    let mut walk = Walk { bytes: body, at: 0 };
    let mut scan = UsersScan::default();
    let mut seen = [false; 3];
    walk.open(b'{')?;
    if !walk.close(b'}')? {
        loop {
            let key = walk.key()?;
            let slot = match key {
                b"data" => 0,
                b"has_more" => 1,
                b"next_page_url" => 2,
                _ => {
                    walk.skip()?;
                    if walk.next(b'}')? {
                        break;
                    }
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            match slot {
                0 => scan.ids = walk.ids()?,
                // `null` is `None`, as serde reads an `Option`.
                1 => scan.has_more = Some(walk.value()?).filter(|v| !v.is_null()),
                _ => scan.next_page_url = Some(walk.value()?).filter(|v| !v.is_null()),
            }
            if walk.next(b'}')? {
                break;
            }
        }
    }
    walk.space();
    (walk.at == body.len()).then_some(scan)
}

/// A position in a body without escapes.
struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walk<'a> {
    fn space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.bytes.get(self.at).copied()
    }

    /// Takes `byte`, which must come next.
    fn open(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Takes `byte` when it comes next (an empty object or array).
    fn close(&mut self, byte: u8) -> Option<bool> {
        let closes = self.peek()? == byte;
        if closes {
            self.at += 1;
        }
        Some(closes)
    }

    /// After a member: `,` (false) or the closing `byte` (true).
    fn next(&mut self, byte: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(false)
            }
            b if b == byte => {
                self.at += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// A string's bytes, between its quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.open(b'"')?;
        let start = self.at;
        let len = memchr::memchr(b'"', self.bytes.get(start..)?)?;
        self.at = start + len + 1;
        self.bytes.get(start..start + len)
    }

    /// An object key and its colon.
    fn key(&mut self) -> Option<&'a [u8]> {
        let key = self.string()?;
        self.open(b':')?;
        Some(key)
    }

    /// Skips one value (not checking it).
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                // Strings (most of a page) are jumped over with memchr.
                let rest = self.bytes.get(self.at..)?;
                let mut depth = 0usize;
                let mut i = 0;
                while let Some(&b) = rest.get(i) {
                    match b {
                        b'"' => i += 1 + memchr::memchr(b'"', rest.get(i + 1..)?)?,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += i + 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                None
            }
            _ => {
                while self.bytes.get(self.at).is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.at += 1;
                }
                Some(())
            }
        }
    }

    /// One value, parsed.
    fn value(&mut self) -> Option<Value> {
        self.space();
        let start = self.at;
        self.skip()?;
        serde_json::from_slice(self.bytes.get(start..self.at)?).ok()
    }

    /// `data`: per user, its id (as `wire::id_of` reads it).
    fn ids(&mut self) -> Option<Vec<Option<String>>> {
        let mut ids = Vec::with_capacity(100);
        match self.peek()? {
            b'n' => {
                self.value()?.is_null().then_some(())?;
                return Some(ids);
            }
            b'[' => self.at += 1,
            _ => return None,
        }
        if self.close(b']')? {
            return Some(ids);
        }
        loop {
            ids.push(self.id()?);
            if self.next(b']')? {
                return Some(ids);
            }
        }
    }

    /// One user's id: its last `id` member, a non-blank string; `None` for anything else.
    fn id(&mut self) -> Option<Option<String>> {
        if self.peek()? != b'{' {
            self.skip()?;
            return Some(None);
        }
        self.at += 1;
        let mut id = None;
        if self.close(b'}')? {
            return Some(None);
        }
        loop {
            if self.key()? == b"id" {
                id = match self.peek()? {
                    b'"' => {
                        let text = std::str::from_utf8(self.string()?).ok()?;
                        (!text.trim().is_empty()).then(|| text.to_string())
                    }
                    // A numeric id: the serde scan writes it as serde_json does.
                    b'-' | b'0'..=b'9' => return None,
                    _ => {
                        self.skip()?;
                        None
                    }
                };
            } else {
                self.skip()?;
            }
            if self.next(b'}')? {
                return Some(id);
            }
        }
    }
}

/// `data`'s ids: `null` is no user, anything but an object a user without an id.
fn scan_ids<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Option<String>>, D::Error> {
    Ok(Option::<Vec<ScanId>>::deserialize(deserializer)?
        .unwrap_or_default()
        .into_iter()
        .map(|id| id.0)
        .collect())
}

/// One user's id, everything else of it skipped.
struct ScanId(Option<String>);

impl<'de> Deserialize<'de> for ScanId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScanId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Userflow user")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ScanId, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ScanId(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ScanId, A::Error> {
                // The last `id` wins, as in the decoded object.
                let mut id = None;
                while let Some(key) = map.next_key::<IsId>()? {
                    if key.0 {
                        id = Some(map.next_value::<Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ScanId(id.as_ref().and_then(key_text)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Whether a key is `id`, without building it.
struct IsId(bool);

impl<'de> Deserialize<'de> for IsId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IsId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsId, E> {
                Ok(IsId(v == "id"))
            }
        }
        deserializer.deserialize_str(V)
    }
}

// ---- The users page's fast path ----
//
// A page in the shape Userflow (and the sandbox) sends is decoded borrowing from the answer's
// bytes and each record is written as JSON text into the page's `rendered` buffer, with no
// `Value` tree and no map per record. Anything outside that shape (an escaped string, a nested
// or repeated attribute, an unknown key, a date-time that is not RFC 3339, a numeric id)
// makes the whole page go through `wire::user` instead; both give the same records.

/// A users page in the common shape.
#[derive(Deserialize)]
struct FastPage<'a> {
    #[serde(borrow)]
    data: Vec<FastUser<'a>>,
}

/// A user in the common shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastUser<'a> {
    #[serde(default, rename = "object")]
    _object: IgnoredAny,
    id: &'a str,
    #[serde(borrow)]
    attributes: Scalars<'a>,
    created_at: &'a str,
    updated_at: &'a str,
    #[serde(borrow, default)]
    memberships: Option<Vec<FastMembership<'a>>>,
    #[serde(default, rename = "groups")]
    _groups: IgnoredAny,
}

/// An expanded membership in the common shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastMembership<'a> {
    #[serde(default, rename = "object")]
    _object: IgnoredAny,
    #[serde(borrow)]
    attributes: Scalars<'a>,
    #[serde(borrow, default)]
    created_at: Present<'a>,
    group_id: &'a str,
    user_id: &'a str,
    #[serde(default, rename = "group")]
    _group: IgnoredAny,
    #[serde(default, rename = "user")]
    _user: IgnoredAny,
}

/// A JSON scalar, strings borrowed.
#[derive(Debug, Clone, PartialEq)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    Str(&'a str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON scalar")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'a>, E> {
                serde_json::Number::from_f64(v)
                    .map(Scalar::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'a>, E> {
                Ok(Scalar::Str(v))
            }
        }
        deserializer.deserialize_any(V(std::marker::PhantomData))
    }
}

/// A scalar that may be missing (`null` is a value here, unlike with `Option`).
#[derive(Default)]
enum Present<'a> {
    #[default]
    Absent,
    Is(Scalar<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Present<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Scalar::deserialize(deserializer).map(Present::Is)
    }
}

/// An object of scalars, in order, each key once (a repeated key falls back).
struct Scalars<'a>(Vec<(&'a str, Scalar<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Scalars<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Scalars<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of scalars")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalars<'a>, A::Error> {
                let mut out: Vec<(&'a str, Scalar<'a>)> = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<&'a str>()? {
                    if out.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom("a repeated key"));
                    }
                    out.push((key, map.next_value()?));
                }
                Ok(Scalars(out))
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

impl Scalars<'_> {
    fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == key)
    }
}

/// Appends a JSON string, escaped as serde_json escapes it.
fn put_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's own escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends a scalar as JSON.
fn put_scalar(out: &mut Vec<u8>, value: &Scalar<'_>) {
    match value {
        Scalar::Null => out.extend_from_slice(b"null"),
        Scalar::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Scalar::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Scalar::Str(s) => put_str(out, s),
    }
}

/// Appends a standard string field's value: a string as is, a number or boolean as its text
/// (as `model::typed` makes them).
fn put_string_field(out: &mut Vec<u8>, value: &Scalar<'_>) {
    match value {
        Scalar::Null | Scalar::Str(_) => put_scalar(out, value),
        Scalar::Bool(b) => out.extend_from_slice(if *b { b"\"true\"" } else { b"\"false\"" }),
        Scalar::Number(n) => put_str(out, &n.to_string()),
    }
}

/// An RFC 3339 date-time as `model::date_time` keeps it (trimmed), if it is one.
fn rfc3339(s: &str) -> Option<&str> {
    let s = s.trim();
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|_| s)
}

/// A non-blank key, as `model::key_text` takes it.
fn key(s: &str) -> Option<&str> {
    (!s.trim().is_empty()).then_some(s)
}

/// Renders a page in the common shape into `page`; `None` (and `page` untouched) when it is
/// not in that shape.
fn fast_users_page(body: &[u8], fresh: &[bool], memberships: bool, page: &mut Page) -> Option<()> {
    let list: FastPage<'_> = serde_json::from_slice(body).ok()?;
    if list.data.len() != fresh.len() {
        return None;
    }
    let mut text: Vec<u8> = Vec::with_capacity(body.len());
    let mut records = Vec::with_capacity(list.data.len() * 2);
    let mut duplicates = 0;
    for (user, fresh) in list.data.iter().zip(fresh) {
        if !*fresh {
            duplicates += 1;
            continue;
        }
        let id = key(user.id)?;
        let start = text.len();
        text.extend_from_slice(b"{\"id\":");
        put_str(&mut text, id);
        for field in ["email", "name", "first_name", "last_name"] {
            if let Some((_, value)) = user.attributes.0.iter().find(|(k, _)| *k == field) {
                text.extend_from_slice(b",\"");
                text.extend_from_slice(field.as_bytes());
                text.extend_from_slice(b"\":");
                put_string_field(&mut text, value);
            }
        }
        text.extend_from_slice(b",\"created_at\":");
        put_str(&mut text, rfc3339(user.created_at)?);
        text.extend_from_slice(b",\"updated_at\":");
        put_str(&mut text, rfc3339(user.updated_at)?);
        text.extend_from_slice(b",\"attributes\":{");
        let mut first = true;
        for (name, value) in &user.attributes.0 {
            if ["email", "name", "first_name", "last_name"].contains(name) {
                continue;
            }
            if !first {
                text.push(b',');
            }
            first = false;
            put_str(&mut text, name);
            text.push(b':');
            put_scalar(&mut text, value);
        }
        text.extend_from_slice(b"}}");
        records.push(rendered(USERS, start, text.len()));
        if !memberships {
            continue;
        }
        for m in user.memberships.iter().flatten() {
            let group_id = key(m.group_id)?;
            let user_id = key(m.user_id)?;
            if m.attributes.has("created_at") {
                return None;
            }
            let start = text.len();
            text.extend_from_slice(b"{\"group_id\":");
            put_str(&mut text, group_id);
            text.extend_from_slice(b",\"user_id\":");
            put_str(&mut text, user_id);
            text.extend_from_slice(b",\"attributes\":{");
            let mut first = true;
            for (name, value) in &m.attributes.0 {
                if !first {
                    text.push(b',');
                }
                first = false;
                put_str(&mut text, name);
                text.push(b':');
                put_scalar(&mut text, value);
            }
            if let Present::Is(created) = &m.created_at {
                if !first {
                    text.push(b',');
                }
                text.extend_from_slice(b"\"created_at\":");
                put_scalar(&mut text, created);
            }
            text.extend_from_slice(b"}}");
            records.push(rendered(MEMBERSHIPS, start, text.len()));
        }
    }
    page.records = records;
    page.duplicates += duplicates;
    page.rendered = text;
    Some(())
}

/// A record rendered into the page's text at `start..end`.
fn rendered(stream: &'static str, start: usize, end: usize) -> Emit {
    Emit {
        stream,
        record: Map::new(),
        rendered: Some(start..end),
    }
}

#[cfg(test)]
mod fast_tests {
    use super::*;
    use serde_json::json;

    /// A sandbox-shaped user with `extra` merged over it.
    fn user(id: &str, extra: Value) -> Value {
        let mut u = json!({
            "object": "user",
            "id": id,
            "attributes": {"name": "Zoë Ng", "email": "zoe@x.io", "plan": "pro", "seats": 3,
                           "ratio": 1.50, "beta": false, "nothing": null},
            "created_at": "2024-01-02T03:04:05.000Z",
            "updated_at": "2024-02-02T03:04:05+02:00",
            "memberships": [{
                "object": "group_membership",
                "attributes": {"primary": true},
                "created_at": "2024-01-02T03:04:05.000Z",
                "group_id": "g1",
                "user_id": id,
                "group": {"object": "group", "id": "g1", "attributes": {"name": "Acme"},
                          "created_at": "2024-01-01T00:00:00.000Z", "updated_at": "2024-01-01T00:00:00.000Z"}
            }]
        });
        if let (Some(u), Value::Object(extra)) = (u.as_object_mut(), extra) {
            for (k, v) in extra {
                u.insert(k, v);
            }
        }
        u
    }

    fn body(users: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"object": "list", "data": users, "has_more": false, "url": "/users"}),
        )
        .unwrap()
    }

    /// The records of a page as the tap writes them: (stream, record JSON text).
    fn lines(page: &Page) -> Vec<(&'static str, String)> {
        page.records
            .iter()
            .map(|e| match &e.rendered {
                Some(range) => (
                    e.stream,
                    String::from_utf8(page.rendered[range.clone()].to_vec()).unwrap(),
                ),
                None => (e.stream, serde_json::to_string(&e.record).unwrap()),
            })
            .collect()
    }

    /// Through `wire::user` only (what every page went through before the fast path).
    fn generic(body: &[u8], fresh: &[bool], memberships: bool) -> Page {
        let mut page = Page::last(Utc::now());
        let list: wire::UsersPage = serde_json::from_slice(body).unwrap();
        for (wire, fresh) in list.data.unwrap_or_default().into_iter().zip(fresh) {
            if !fresh {
                page.duplicates += 1;
                continue;
            }
            let parts = wire::user(wire, memberships);
            page.records.extend(parts.user.map(|u| Emit::new(USERS, u)));
            page.records.extend(
                parts
                    .memberships
                    .into_iter()
                    .map(|m| Emit::new(MEMBERSHIPS, m)),
            );
            page.skipped.extend(parts.problems);
        }
        page
    }

    fn check(users: Vec<Value>, fresh: &[bool], memberships: bool, fast: bool) {
        let body = body(users);
        let mut page = Page::last(Utc::now());
        users_records(&body, fresh, memberships, &mut page).unwrap();
        let want = generic(&body, fresh, memberships);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(lines(&page), lines(&want), "{text}");
        assert_eq!(page.skipped, want.skipped, "{text}");
        assert_eq!(page.duplicates, want.duplicates, "{text}");
        let took_fast = page.records.iter().any(|e| e.rendered.is_some());
        assert_eq!(took_fast, fast, "fast path taken: {took_fast}: {text}");
    }

    #[test]
    fn usual_pages_are_rendered_straight_and_give_the_records_wire_user_gives() {
        let usual = vec![
            user("u1", json!({})),
            user(
                "u2",
                json!({"attributes": {"email": 42, "name": true, "first_name": null, "last_name": "Ng", "score": -0.25, "big": 18446744073709551615_u64}}),
            ),
            user("u3", json!({"memberships": null})),
            user("u4", json!({"memberships": []})),
            user(
                "u5",
                json!({"attributes": {}, "created_at": " 2024-01-02T03:04:05Z "}),
            ),
            user(
                "u6",
                json!({"memberships": [
                    {"attributes": {}, "group_id": "g2", "user_id": "u6"},
                    {"attributes": {"role": "admin"}, "created_at": null, "group_id": "g3", "user_id": "u6", "group": null}
                ]}),
            ),
        ];
        check(usual.clone(), &[true; 6], true, true);
        check(usual.clone(), &[true; 6], false, true);
        check(usual, &[true, false, true, false, true, true], true, true);
        let mut without = user("u7", json!({}));
        without.as_object_mut().unwrap().remove("memberships");
        check(vec![without], &[true], true, true);
        // An empty page has no record to render either way.
        check(Vec::new(), &[], true, false);
    }

    /// The serde scan (what every page went through before the byte walk).
    fn serde_scan(body: &[u8]) -> Option<UsersScan> {
        serde_json::from_slice(body).ok()
    }

    #[test]
    fn the_byte_walk_finds_what_the_serde_scan_finds() {
        let mut group = user("u9", json!({}));
        group["memberships"][0]["group"]["id"] = json!("not the user's");
        let users = vec![
            user("u1", json!({})),
            group,
            json!({"attributes": {"id": "nested"}, "id": "u3", "x": [1, {"id": "deep"}], "id": "u3b"}),
            json!({"id": "u4", "id": null}),
            json!({"id": "  "}),
            json!({"id": {"v": 1}}),
            json!({}),
            json!("not a user"),
            json!([{"id": "in an array"}]),
            json!(null),
            json!(12),
        ];
        let mut bodies = Vec::new();
        for envelope in [
            json!({"object": "list", "data": users.clone(), "has_more": true, "next_page_url": "/users?starting_after=u9"}),
            json!({"has_more": "TRUE ", "data": users.clone(), "url": "/users"}),
            json!({"data": null, "has_more": false, "next_page_url": null}),
            json!({"data": [], "next_page_url": "/users?starting_after=x"}),
            json!({"object": "list"}),
            json!({}),
        ] {
            bodies.push(serde_json::to_vec(&envelope).unwrap());
            bodies.push(serde_json::to_vec_pretty(&envelope).unwrap());
        }
        for body in &bodies {
            let text = String::from_utf8_lossy(body);
            assert_eq!(quick_scan(body), serde_scan(body), "{text}");
            assert!(quick_scan(body).is_some(), "{text}");
        }
        // Left to the serde scan: escapes, numeric ids, a repeated top-level key, not an object.
        for body in [
            &br#"{"data":[{"id":"u\u0031"}],"has_more":false}"#[..],
            br#"{"data":[{"id":17}],"has_more":false}"#,
            br#"{"data":[],"data":[]}"#,
            br#"{"data":{"id":"u1"}}"#,
            br#"[]"#,
            br#"{"data":[]} trailing"#,
        ] {
            assert_eq!(quick_scan(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn unusual_pages_go_through_wire_user() {
        let unusual = [
            json!({"attributes": {"name": "a \"quoted\" name"}}),
            json!({"attributes": {"address": {"city": "Oslo"}}}),
            json!({"attributes": {"tags": ["a", "b"]}}),
            json!({"created_at": "2024-01-02 03:04:05"}),
            json!({"updated_at": 1_700_000_000}),
            json!({"created_at": null}),
            json!({"id": 17}),
            json!({"id": "  "}),
            json!({"extra": "kept in attributes"}),
            json!({"attributes": null}),
            json!({"memberships": {"data": [], "has_more": true}}),
            json!({"memberships": [{"attributes": {"created_at": "x"}, "created_at": "y", "group_id": "g1", "user_id": "u1"}]}),
            json!({"memberships": [{"attributes": {}, "group": {"id": "g9"}, "user_id": "u1"}]}),
            json!({"memberships": [{"attributes": {}, "group_id": "g1"}]}),
            json!({"memberships": [{"attributes": {}, "group_id": "g1", "user_id": "u1", "note": "x"}]}),
            json!({"memberships": ["not an object"]}),
        ];
        for extra in unusual {
            check(
                vec![user("u1", json!({})), user("u2", extra)],
                &[true, true],
                true,
                false,
            );
        }
        check(
            vec![json!("not a user"), user("u1", json!({}))],
            &[true, true],
            true,
            false,
        );
        // A repeated attribute: the last value wins in place, as in a JSON object.
        let repeated = br#"{"data":[{"id":"u1","attributes":{"plan":"a","plan":"b"},"created_at":"2024-01-02T03:04:05Z","updated_at":"2024-01-02T03:04:05Z"}]}"#;
        let mut page = Page::last(Utc::now());
        users_records(repeated, &[true], true, &mut page).unwrap();
        assert_eq!(lines(&page), lines(&generic(repeated, &[true], true)));
        assert!(page.records.iter().all(|e| e.rendered.is_none()));
    }
}
