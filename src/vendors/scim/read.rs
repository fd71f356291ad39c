//! What the tap reads from a SCIM 2.0 service provider (also Guru SCIM's reader).
//!
//! - `GET /Users?startIndex=…&count=100` feeds `users`.
//! - `GET /Groups?startIndex=…&count=100` feeds `groups` and, from `Group.members`,
//!   `memberships`. Without `memberships` selected it adds `excludedAttributes=members`, as
//!   Entra does, to keep the pages small.
//!
//! `count` is lowered to the ServiceProviderConfig's `maxPageSize`, which is read once per run
//! when the first listing starts. An INCREMENTAL listing adds `filter=meta.lastModified gt
//! "<since>"` when the ServiceProviderConfig says the server filters. Paging, leniency, the overlap that bridges deletions during a
//! run, fill passes and deduplication are [`crate::scim::list`]'s; turning resources into
//! records is [`crate::scim::types`]'. The bookmark is a [`list::Cursor`]:
//! `{"start_index", "after": [the page's last ids], "fill"}` (a bare `startIndex` from an older
//! state is read too).

use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::config::Config;
use crate::config::Resolved;
use crate::http::{ClientConfig, ClientSpec, HttpClient, StatusCode};
use crate::model::{GROUPS, MEMBERSHIPS, USERS};
use crate::scim::list::{self, Cursor, ListError, ListQuery, PAGE_SIZE, Pass};
use crate::scim::{ACCEPT, ServiceProviderConfig, types};
use crate::vendors::source::{
    Emit, ListRequest, Listing, Page, PageStream, Skipped, Source, SourceError, cursor_text,
    sequential,
};

/// Builds the generic SCIM source (the registry's `source`).
pub fn source(config: &Resolved) -> Result<Box<dyn Source>, SourceError> {
    let typed: Config = config.typed()?;
    let auth = typed.credentials()?;
    let client = HttpClient::new(ClientConfig::for_vendor(config, ClientSpec::new(auth))?)?;
    Ok(Box::new(ScimSource::new(client)))
}

/// The tap's source for a SCIM service provider.
#[derive(Debug, Clone)]
pub struct ScimSource {
    client: HttpClient,
    spc: Arc<OnceCell<ServiceProviderConfig>>,
}

impl ScimSource {
    /// A source reading through `client`, whose base URL is the SCIM base (`…/scim/v2`).
    pub fn new(client: HttpClient) -> Self {
        Self {
            client,
            spc: Arc::new(OnceCell::new()),
        }
    }

    /// The ServiceProviderConfig, read once per run.
    async fn spc(&self) -> &ServiceProviderConfig {
        let client = &self.client;
        self.spc
            .get_or_init(|| ServiceProviderConfig::read(client))
            .await
    }
}

#[async_trait::async_trait]
impl Source for ScimSource {
    async fn check(&self) -> Result<(), SourceError> {
        // Not /ServiceProviderConfig: RFC 7644 lets servers serve it without authentication.
        self.client
            .get("/Users")
            .header("accept", ACCEPT)
            .query("startIndex", "1")
            .query("count", "1")
            .send()
            .await?;
        Ok(())
    }

    /// `filter.supported` in the ServiceProviderConfig (RFC 7644 §5): `meta.lastModified gt`
    /// is then a filter the server must answer.
    async fn filters_now(&self) -> Result<bool, SourceError> {
        Ok(self.spc().await.filter)
    }

    fn listings(&self) -> Vec<Arc<dyn Listing>> {
        // Groups first: a target writes a membership only once it knows its group (the
        // memberships ride on the groups listing, so they come before their users, which a
        // target holds until it has seen them).
        [Kind::Groups, Kind::Users]
            .into_iter()
            .map(|kind| {
                Arc::new(ScimList {
                    source: self.clone(),
                    kind,
                }) as Arc<dyn Listing>
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Users,
    Groups,
}

/// One SCIM resource listing.
#[derive(Debug)]
struct ScimList {
    source: ScimSource,
    kind: Kind,
}

impl Listing for ScimList {
    fn streams(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Users => &[USERS],
            Kind::Groups => &[GROUPS, MEMBERSHIPS],
        }
    }

    fn pages(self: Arc<Self>, request: ListRequest) -> PageStream {
        let memberships = self.kind == Kind::Groups && request.wants(MEMBERSHIPS);
        let seen = Arc::new(Mutex::new(Pass::default()));
        // RFC 7644 §3.4.2.2: dateTime attributes compare as instants.
        let filter: Option<Arc<str>> = request
            .since
            .as_ref()
            .map(|since| format!("meta.lastModified gt {}", Value::from(since.as_str())).into());
        sequential(&request, move |cursor, from_state| {
            let list = self.clone();
            let seen = seen.clone();
            let filter = filter.clone();
            async move {
                list.page(cursor, from_state, memberships, filter.as_deref(), &seen)
                    .await
            }
        })
    }
}

impl ScimList {
    async fn page(
        &self,
        cursor: Option<Value>,
        from_state: bool,
        memberships: bool,
        filter: Option<&str>,
        pass: &Mutex<Pass>,
    ) -> Result<Page, SourceError> {
        let mut cursor = match &cursor {
            None => Cursor::first(),
            Some(value) => Cursor::parse(value).ok_or_else(|| SourceError::BadCursor {
                stream: self.main_stream(),
                cursor: cursor_text(value),
            })?,
        };
        let stored_start = cursor.start;
        let client = &self.source.client;
        let spc = self.source.spc().await;
        let count = spc.page_size(PAGE_SIZE);
        if !cursor.anchored {
            // A bare startIndex: start a little earlier, as every next page does.
            cursor.start = cursor.start.saturating_sub(list::overlap(count)).max(1);
        }
        let start = cursor.start;
        let query = ListQuery {
            path: match self.kind {
                Kind::Users => "/Users",
                Kind::Groups => "/Groups",
            },
            start,
            count,
            filter,
            excluded: (self.kind == Kind::Groups && !memberships).then_some("members"),
        };
        let listed = list::list_page(client, &query)
            .await
            .map_err(|err| self.list_error(err, from_state, stored_start))?;
        let mut page = Page::last(Utc::now());
        let ids: Vec<Option<String>> = listed
            .resources
            .iter()
            .map(|r| r.as_object().and_then(types::id_of))
            .collect();
        let verdict = pass
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .page(&cursor, &ids, listed.next, listed.total_results, count)
            .map_err(|err| SourceError::Decode {
                stream: self.main_stream(),
                url: format!("{}{}", client.base_url(), query.path),
                detail: err.to_string(),
            })?;
        if let Some(note) = &verdict.note {
            tracing::warn!(stream = self.main_stream(), "{note}");
        }
        page.next = verdict.next.as_ref().map(Cursor::to_value);
        page.duplicates = verdict.duplicates;
        let mut emit = verdict.emit.into_iter().peekable();
        for (i, resource) in listed.resources.into_iter().enumerate() {
            if emit.next_if_eq(&i).is_none() {
                continue;
            }
            self.push(&mut page, resource, memberships);
        }
        Ok(page)
    }

    /// A failed page, as the tap's error.
    fn list_error(&self, err: ListError, from_state: bool, stored_start: u64) -> SourceError {
        match err {
            // A server that refuses a stored startIndex instead of answering an empty page.
            ListError::Http(err) if from_state && err.status() == Some(StatusCode::BAD_REQUEST) => {
                SourceError::CursorRejected {
                    stream: self.main_stream(),
                    cursor: stored_start.to_string(),
                    detail: err.body_excerpt().unwrap_or_default().to_string(),
                }
            }
            ListError::Http(err) => err.into(),
            ListError::Decode { url, detail } => SourceError::Decode {
                stream: self.main_stream(),
                url,
                detail,
            },
        }
    }

    /// One listed resource's records (a group's with its memberships, when they are wanted).
    fn push(&self, page: &mut Page, resource: Value, memberships: bool) {
        match self.kind {
            Kind::Users => match types::user_record(resource) {
                Ok(user) => page.records.push(Emit::new(USERS, user)),
                Err(problem) => page.skipped.push(Skipped::new(USERS, problem)),
            },
            Kind::Groups => {
                let parts = types::group_records(resource, memberships);
                if let Some(group) = parts.group {
                    page.records.push(Emit::new(GROUPS, group));
                }
                page.records.extend(
                    parts
                        .memberships
                        .into_iter()
                        .map(|m| Emit::new(MEMBERSHIPS, m)),
                );
                page.skipped.extend(
                    parts
                        .problems
                        .into_iter()
                        .map(|(stream, reason)| Skipped::new(stream, reason)),
                );
            }
        }
    }
}
