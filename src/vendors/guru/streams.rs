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
//! Page tokens expire. A stored one that Guru refuses (a 4xx on the first request of a resumed
//! listing), or a stored group that no longer exists, makes the engine warn and read the
//! stream again from the beginning. A group deleted while its members are being read is
//! reported and passed over.

use std::sync::Arc;

use chrono::Utc;
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::model;
use crate::http::{Auth, HttpClient, HttpError, Response, StatusCode, path_segment};
use crate::model::{GROUPS, MEMBERSHIPS, USERS};
use crate::vendors::Resolved;
use crate::vendors::source::{
    Emit, ListRequest, Listing, Page, PageStream, Skipped, Source, SourceError, client_config,
    cursor_text, sequential,
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
    let client = HttpClient::new(client_config(config, auth)?)?;
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
        sequential(&request, move |cursor, from_state| {
            let list = self.clone();
            async move { list.page(cursor, from_state).await }
        })
    }
}

impl Linked {
    async fn page(&self, cursor: Option<Value>, from_state: bool) -> Result<Page, SourceError> {
        let url = match &cursor {
            None => match self.kind {
                Kind::Members => "/members".to_string(),
                Kind::Groups => "/groups".to_string(),
            },
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
        page.next = response.next_link().map(|u| Value::String(u.to_string()));
        for entry in entries(self.main_stream(), &response)? {
            let record = match self.kind {
                Kind::Members => model::member(entry),
                Kind::Groups => model::group(entry),
            };
            match record {
                Ok(record) => page.records.push(Emit::new(self.main_stream(), record)),
                Err(problem) => page.skipped.push(Skipped::new(self.main_stream(), problem)),
            }
        }
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
        let mut url = "/groups".to_string();
        loop {
            let response = self.client.get(&url).send().await?;
            for entry in entries(MEMBERSHIPS, &response)? {
                // A group without an id is reported by the groups stream.
                if let Some(id) = model::group_id(&entry) {
                    groups.push(id);
                }
            }
            match response.next_link() {
                Some(next) if next.as_str() != url => url = next.to_string(),
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
            let mut url = resume.unwrap_or_else(|| format!("/groups/{}/members", path_segment(id)));
            let mut first = true;
            loop {
                let page = self
                    .group_page(id, &url, following, first && from_state)
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
        following: Option<&String>,
        from_state: bool,
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
        page.next = match response.next_link() {
            Some(next) => Some(json!({"group_id": id, "next": next.to_string()})),
            None => after_this(),
        };
        for entry in entries(MEMBERSHIPS, &response)? {
            match model::group_member(id, entry) {
                Ok(record) => page.records.push(Emit::new(MEMBERSHIPS, record)),
                Err(problem) => page.skipped.push(Skipped::new(MEMBERSHIPS, problem)),
            }
        }
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
