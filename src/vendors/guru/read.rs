//! What the tap reads from Guru REST: members, groups, and each group's members.
//!
//! Guru lists are bare JSON arrays; the next page is only in the `Link` header
//! (`<…?token=…>; rel="next-page"`, parsed leniently by the HTTP engine), and the server picks
//! the page size.
//!
//! - `GET /members` feeds `users`; `GET /groups` feeds `groups`. The bookmark is the next-page
//!   URL.
//! - `memberships` lists the groups, then `GET /groups/{id}/members` for each, up to
//!   [`GROUP_CONCURRENCY`] groups at once (each group's pages are fetched into a one-page
//!   buffer while earlier groups are written, so memory stays a few pages). Records come out in
//!   group order, so the bookmark is `{"group_id": <the group being read>, "next": <its
//!   next-page URL>}`, or just the group id when that group starts from its first page.
//!
//! Guru's page tokens are opaque, so the tap cannot tell whether one means "after this member"
//! or "skip this many": with the latter, a member removed during the listing shifts unread ones
//! past the token, and no page shows it. So every listing that took more than one page (or
//! resumed from a bookmark) is read once more from the start ([`Passes`]), leaving out by id
//! what was had already ([`Dedupe`]: bounded in memory, the rest on disk); a pass that still finds new ones
//! is followed by another, at most [`MAX_FILL_PASSES`] in all, then a warning. A one-page
//! listing is one answer and needs no second look. A page that repeats ids (a member added
//! before the token) has them left out and counted as duplicates.
//!
//! Page tokens expire. A stored one that Guru refuses (a 4xx on the first request of a resumed
//! listing), or a stored group that no longer exists, makes the engine warn and read the
//! stream again from the beginning. A group deleted while its members are being read is
//! reported and passed over.

use std::sync::Arc;

use chrono::Utc;
use futures::{StreamExt, stream};
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::wire;
use crate::config::Resolved;
use crate::http::{
    Auth, ClientConfig, ClientSpec, HttpClient, HttpError, Response, StatusCode, path_segment,
};
use crate::model::{GROUPS, MEMBERSHIPS, USERS};
use crate::scim::list::{Dedupe, MAX_FILL_PASSES};
use crate::vendors::source::{
    Emit, ListRequest, Listing, Page, PageStream, Skipped, Source, SourceError, cursor_text,
    sequential,
};

/// Groups whose members are read at once: enough to hide round trips behind the writer, few
/// enough for an API without a documented rate limit. Lowered by `max_concurrency`.
pub const GROUP_CONCURRENCY: usize = 4;

/// Builds the Guru REST source (the registry's `source`).
pub fn source(config: &Resolved) -> Result<Box<dyn Source>, SourceError> {
    let typed: super::config::Config = config.typed()?;
    let auth = Auth::Basic {
        username: typed.username,
        password: typed.api_token,
    };
    let client = HttpClient::new(ClientConfig::for_vendor(config, ClientSpec::new(auth))?)?;
    let concurrency = config
        .common
        .max_concurrency
        .filter(|m| *m > 0)
        .map_or(GROUP_CONCURRENCY, |m| m.min(GROUP_CONCURRENCY));
    Ok(Box::new(Guru {
        client,
        concurrency,
    }))
}

/// The Guru REST source.
#[derive(Debug, Clone)]
pub struct Guru {
    client: HttpClient,
    concurrency: usize,
}

#[async_trait::async_trait]
impl Source for Guru {
    async fn check(&self) -> Result<(), SourceError> {
        self.client.get("/whoami").send().await?;
        Ok(())
    }

    fn listings(&self) -> Vec<Arc<dyn Listing>> {
        // Groups first: a target writes a membership only once it knows its group.
        vec![
            Arc::new(Linked {
                client: self.client.clone(),
                kind: Kind::Groups,
            }),
            Arc::new(Linked {
                client: self.client.clone(),
                kind: Kind::Members,
            }),
            Arc::new(GroupMembers {
                client: self.client.clone(),
                concurrency: self.concurrency,
            }),
        ]
    }
}

/// A stored request a Guru listing resumes from that Guru refuses: a client error other than
/// auth and rate limiting (an expired or foreign token is a 400), or a URL this client will not
/// request (another host after a `base_url` change).
fn refused(err: &HttpError) -> bool {
    match (err, err.status()) {
        (HttpError::InvalidUrl { .. }, _) => true,
        (_, Some(status)) => {
            status.is_client_error()
                && !matches!(
                    status,
                    StatusCode::UNAUTHORIZED
                        | StatusCode::FORBIDDEN
                        | StatusCode::TOO_MANY_REQUESTS
                )
        }
        _ => false,
    }
}

/// The entries of a Guru list page (a bare array).
fn entries(stream: &'static str, response: &Response) -> Result<Vec<Value>, SourceError> {
    match response.json::<Value>()? {
        Value::Array(items) => Ok(items),
        other => Err(SourceError::Decode {
            stream,
            url: response.url.to_string(),
            detail: format!(
                "expected a JSON array, got {}",
                match other {
                    Value::Object(_) => "an object",
                    Value::Null => "null",
                    _ => "a scalar",
                }
            ),
        }),
    }
}

/// What one Guru listing (or one group's members) remembers between its pages in this
/// process: the ids had, and the pass it is in.
#[derive(Debug)]
struct Passes {
    /// What the listing is, for the log ("members", "group g1's members").
    what: String,
    /// Every id had in this process, across passes.
    seen: Dedupe,
    /// Every skipped resource's reason already reported, so a second pass does not repeat it.
    reported: Dedupe,
    /// 0 for the first pass, then the number of the pass reading again.
    fill: u32,
    /// Pages read in this pass.
    pages: u32,
    /// Ids first had in this pass.
    found: u64,
    /// This pass started from a bookmark, not from the first page.
    resumed: bool,
}

/// Where one entry of a page goes.
enum Placed {
    /// First had: emit it.
    New,
    /// Had before: leave it out (`true` when it counts as a duplicate, not a re-read).
    Had(bool),
}

impl Passes {
    fn new(what: impl Into<String>, resumed: bool) -> Self {
        Self {
            what: what.into(),
            seen: Dedupe::default(),
            reported: Dedupe::default(),
            fill: 0,
            pages: 0,
            found: 0,
            resumed,
        }
    }

    /// Places the entry keyed `id`.
    fn place(&mut self, id: &str) -> Placed {
        if self.seen.first(id) {
            self.found += 1;
            Placed::New
        } else {
            Placed::Had(self.fill == 0)
        }
    }

    /// True the first time a skipped resource with this reason turns up.
    fn report(&mut self, reason: &str) -> bool {
        self.reported.first(reason)
    }

    /// The listing's pages ran out after one more page: true to read it again from the start.
    fn again(&mut self) -> bool {
        self.pages += 1;
        let pages = std::mem::take(&mut self.pages);
        let found = std::mem::take(&mut self.found);
        if self.fill > 0 && found > 0 {
            tracing::warn!(
                listing = %self.what,
                "{found} {} that the pass before missed (removed while the listing was read shifted them past a page token) were found by reading again",
                self.what
            );
        }
        let needed = if self.fill == 0 {
            pages > 1 || self.resumed
        } else {
            found > 0
        };
        if !needed {
            return false;
        }
        if self.fill >= MAX_FILL_PASSES {
            tracing::warn!(
                listing = %self.what,
                "{} kept changing while read {} times from the start: some created or removed during the run may be missing; the next run reads them",
                self.what,
                self.fill + 1
            );
            return false;
        }
        self.fill += 1;
        self.resumed = false;
        tracing::info!(
            listing = %self.what,
            "reading {} again from the start to confirm no page token skipped any (pass {} of at most {}), leaving out what was read already",
            self.what,
            self.fill + 1,
            MAX_FILL_PASSES + 1
        );
        true
    }
}

/// The key a record is deduplicated by.
fn record_key<'a>(record: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    record.get(field).and_then(Value::as_str)
}

/// Adds one page's records to `page`, leaving out what `passes` had before.
fn place_all(
    passes: &mut Passes,
    page: &mut Page,
    stream: &'static str,
    key: &str,
    records: impl IntoIterator<Item = Result<Map<String, Value>, String>>,
) {
    for record in records {
        match record {
            Ok(record) => {
                let placed = match record_key(&record, key) {
                    Some(id) => passes.place(id),
                    None => Placed::New,
                };
                match placed {
                    Placed::New => page.records.push(Emit::new(stream, record)),
                    Placed::Had(duplicate) => page.duplicates += u64::from(duplicate),
                }
            }
            Err(problem) => {
                if passes.report(&problem) {
                    page.skipped.push(Skipped::new(stream, problem));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Members,
    Groups,
}

/// `/members` or `/groups`, paged by `Link`.
#[derive(Debug)]
struct Linked {
    client: HttpClient,
    kind: Kind,
}

impl Listing for Linked {
    fn streams(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Members => &[USERS],
            Kind::Groups => &[GROUPS],
        }
    }

    fn pages(self: Arc<Self>, request: ListRequest) -> PageStream {
        let what = match self.kind {
            Kind::Members => "members",
            Kind::Groups => "groups",
        };
        let passes = Arc::new(Mutex::new(Passes::new(what, request.start.is_some())));
        sequential(&request, move |cursor, from_state| {
            let list = self.clone();
            let passes = passes.clone();
            async move { list.page(cursor, from_state, &passes).await }
        })
    }
}

impl Linked {
    fn first_url(&self) -> &'static str {
        match self.kind {
            Kind::Members => "/members",
            Kind::Groups => "/groups",
        }
    }

    async fn page(
        &self,
        cursor: Option<Value>,
        from_state: bool,
        passes: &Mutex<Passes>,
    ) -> Result<Page, SourceError> {
        let url = match &cursor {
            None => self.first_url().to_string(),
            Some(Value::String(url)) => url.clone(),
            Some(other) => {
                return Err(SourceError::BadCursor {
                    stream: self.main_stream(),
                    cursor: cursor_text(other),
                });
            }
        };
        let response = match self.client.get(&url).send().await {
            Ok(response) => response,
            Err(err) if from_state && refused(&err) => {
                return Err(SourceError::CursorRejected {
                    stream: self.main_stream(),
                    cursor: url,
                    detail: err
                        .body_excerpt()
                        .map_or_else(|| err.to_string(), str::to_string),
                });
            }
            Err(err) => return Err(err.into()),
        };
        let mut page = Page::last(Utc::now());
        let records = entries(self.main_stream(), &response)?
            .into_iter()
            .map(|entry| match self.kind {
                Kind::Members => wire::member(entry),
                Kind::Groups => wire::group(entry),
            });
        let mut passes = passes.lock();
        place_all(&mut passes, &mut page, self.main_stream(), "id", records);
        page.next = match response.next_link() {
            Some(next) => {
                passes.pages += 1;
                Some(Value::String(next.to_string()))
            }
            None => passes
                .again()
                .then(|| Value::String(self.first_url().to_string())),
        };
        Ok(page)
    }
}

/// Every group's members, read per group with bounded concurrency, emitted in group order.
#[derive(Debug)]
struct GroupMembers {
    client: HttpClient,
    concurrency: usize,
}

/// Where the memberships listing starts.
#[derive(Debug)]
struct Plan {
    /// The groups still to read, in order.
    groups: Vec<String>,
    /// The first group's stored next-page URL, when resuming mid-group.
    resume: Option<String>,
}

impl Listing for GroupMembers {
    fn streams(&self) -> &'static [&'static str] {
        &[MEMBERSHIPS]
    }

    fn pages(self: Arc<Self>, request: ListRequest) -> PageStream {
        let start = request.start;
        let planner = self.clone();
        let plan = async move { planner.plan(start).await };
        let concurrency = self.concurrency.max(1);
        stream::once(plan)
            .flat_map(move |plan| -> PageStream {
                let plan = match plan {
                    Ok(plan) => plan,
                    Err(err) => return stream::iter([Err(err)]).boxed(),
                };
                if plan.groups.is_empty() {
                    return stream::iter([Ok(Page::last(Utc::now()))]).boxed();
                }
                let groups = Arc::new(plan.groups);
                let mut resume = plan.resume;
                let this = self.clone();
                let order = groups.clone();
                stream::iter(0..groups.len())
                    .map(move |at| {
                        let pages = this.clone().group_pages(order.clone(), at, resume.take());
                        async move { pages }
                    })
                    .buffered(concurrency)
                    .flatten()
                    .boxed()
            })
            .boxed()
    }
}

impl GroupMembers {
    /// Lists the groups and finds where to start.
    async fn plan(&self, start: Option<Value>) -> Result<Plan, SourceError> {
        let (first, resume) = match &start {
            None => (None, None),
            Some(Value::Object(cursor)) => {
                let group = cursor.get("group_id").and_then(Value::as_str);
                let next = cursor.get("next").and_then(Value::as_str);
                match group {
                    Some(group) => (Some(group.to_string()), next.map(str::to_string)),
                    None => {
                        return Err(SourceError::BadCursor {
                            stream: MEMBERSHIPS,
                            cursor: cursor_text(start.as_ref().unwrap_or(&Value::Null)),
                        });
                    }
                }
            }
            Some(other) => {
                return Err(SourceError::BadCursor {
                    stream: MEMBERSHIPS,
                    cursor: cursor_text(other),
                });
            }
        };
        let mut groups = Vec::new();
        let mut passes = Passes::new("groups", false);
        let mut url = "/groups".to_string();
        loop {
            let response = self.client.get(&url).send().await?;
            for entry in entries(MEMBERSHIPS, &response)? {
                // A group without an id is reported by the groups stream.
                if let Some(id) = wire::group_id(&entry)
                    && matches!(passes.place(&id), Placed::New)
                {
                    groups.push(id);
                }
            }
            match response.next_link() {
                Some(next) if next.as_str() != url => {
                    passes.pages += 1;
                    url = next.to_string();
                }
                _ if passes.again() => url = "/groups".to_string(),
                _ => break,
            }
        }
        let Some(first) = first else {
            return Ok(Plan {
                groups,
                resume: None,
            });
        };
        match groups.iter().position(|g| *g == first) {
            Some(at) => Ok(Plan {
                groups: groups.split_off(at),
                resume,
            }),
            None => Err(SourceError::CursorRejected {
                stream: MEMBERSHIPS,
                cursor: cursor_text(start.as_ref().unwrap_or(&Value::Null)),
                detail: format!("group {first} no longer exists"),
            }),
        }
    }

    /// The pages of the group at `at`, fetched by a task of its own into a one-page buffer.
    fn group_pages(
        self: Arc<Self>,
        groups: Arc<Vec<String>>,
        at: usize,
        resume: Option<String>,
    ) -> PageStream {
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(async move {
            let id = &groups[at];
            let following = groups.get(at + 1);
            let from_state = resume.is_some();
            let start = format!("/groups/{}/members", path_segment(id));
            let mut url = resume.unwrap_or_else(|| start.clone());
            let mut passes = Passes::new(format!("group {id}'s members"), from_state);
            let mut first = true;
            loop {
                let page = self
                    .group_page(
                        id,
                        &url,
                        &start,
                        following,
                        first && from_state,
                        &mut passes,
                    )
                    .await;
                let next = match &page {
                    Ok(page) => page
                        .next
                        .as_ref()
                        .and_then(|c| c.get("next"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                    Err(_) => None,
                };
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed {
                    return;
                }
                match next {
                    Some(next) => url = next,
                    None => return,
                }
                first = false;
            }
        });
        let guard = AbortOnDrop(task);
        stream::unfold((rx, guard), |(mut rx, guard)| async move {
            let item = rx.recv().await?;
            Some((item, (rx, guard)))
        })
        .boxed()
    }

    async fn group_page(
        &self,
        id: &str,
        url: &str,
        start: &str,
        following: Option<&String>,
        from_state: bool,
        passes: &mut Passes,
    ) -> Result<Page, SourceError> {
        let after_this = || following.map(|g| json!({"group_id": g}));
        let response = match self.client.get(url).send().await {
            Ok(response) => response,
            Err(err) if from_state && refused(&err) => {
                return Err(SourceError::CursorRejected {
                    stream: MEMBERSHIPS,
                    cursor: url.to_string(),
                    detail: err
                        .body_excerpt()
                        .map_or_else(|| err.to_string(), str::to_string),
                });
            }
            Err(err) if err.status() == Some(StatusCode::NOT_FOUND) => {
                // Deleted after the groups were listed: its members are gone with it.
                let mut page = Page::last(Utc::now());
                page.next = after_this();
                page.skipped.push(Skipped::new(
                    MEMBERSHIPS,
                    format!("group {id} was deleted while its members were being read"),
                ));
                return Ok(page);
            }
            Err(err) => return Err(err.into()),
        };
        let mut page = Page::last(Utc::now());
        let records = entries(MEMBERSHIPS, &response)?
            .into_iter()
            .map(|entry| wire::group_member(id, entry));
        place_all(passes, &mut page, MEMBERSHIPS, "user_id", records);
        page.next = match response.next_link() {
            Some(next) => {
                passes.pages += 1;
                Some(json!({"group_id": id, "next": next.to_string()}))
            }
            None if passes.again() => Some(json!({"group_id": id, "next": start})),
            None => after_this(),
        };
        Ok(page)
    }
}

/// Stops a group's fetch task when its pages are no longer wanted.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `pages` (ids per page) as one pass; returns the ids placed as new and whether the
    /// listing is read again.
    fn pass(passes: &mut Passes, pages: &[&[&str]]) -> (Vec<String>, u64, bool) {
        let mut new = Vec::new();
        let mut duplicates = 0;
        for (i, page) in pages.iter().enumerate() {
            for id in *page {
                match passes.place(id) {
                    Placed::New => new.push((*id).to_string()),
                    Placed::Had(dup) => duplicates += u64::from(dup),
                }
            }
            if i + 1 < pages.len() {
                passes.pages += 1;
            }
        }
        (new, duplicates, passes.again())
    }

    #[test]
    fn one_page_is_read_once() {
        let mut p = Passes::new("members", false);
        let (new, dups, again) = pass(&mut p, &[&["a", "b"]]);
        assert_eq!((new.len(), dups, again), (2, 0, false));
    }

    #[test]
    fn a_resumed_single_page_is_confirmed() {
        let mut p = Passes::new("members", true);
        assert!(pass(&mut p, &[&["c"]]).2);
        // The second pass finds the members before the resume point, then nothing more.
        let (new, dups, again) = pass(&mut p, &[&["a", "b", "c"]]);
        assert_eq!(new, ["a", "b"]);
        assert_eq!((dups, again), (0, true));
        assert!(!pass(&mut p, &[&["a", "b", "c"]]).2);
    }

    #[test]
    fn several_pages_are_read_again_until_nothing_new() {
        let mut p = Passes::new("members", false);
        // Offset tokens after a removal: "d" slipped past the second page.
        let (new, dups, again) = pass(&mut p, &[&["a", "b"], &["b", "e"]]);
        assert_eq!(new, ["a", "b", "e"]);
        assert_eq!(dups, 1, "a repeated id is a duplicate in the first pass");
        assert!(again);
        let (new, dups, again) = pass(&mut p, &[&["a", "b"], &["d", "e"]]);
        assert_eq!(new, ["d"]);
        assert_eq!(dups, 0, "a pass that reads again re-reads on purpose");
        assert!(again, "it found one, so it is confirmed once more");
        let (new, _, again) = pass(&mut p, &[&["a", "b"], &["d", "e"]]);
        assert!(new.is_empty());
        assert!(!again);
    }

    #[test]
    fn passes_are_bounded() {
        let mut p = Passes::new("members", false);
        let mut reads = 1;
        let mut n = 0;
        loop {
            n += 1;
            let fresh = format!("new{n}");
            if !pass(&mut p, &[&["a"], &[fresh.as_str()]]).2 {
                break;
            }
            reads += 1;
        }
        assert_eq!(reads, MAX_FILL_PASSES + 1);
    }

    #[test]
    fn a_skipped_resource_is_reported_once() {
        let mut p = Passes::new("members", false);
        assert!(p.report("member without an email: {}"));
        assert!(!p.report("member without an email: {}"));
        assert!(p.report("member without an email: {\"id\":2}"));
    }
}
