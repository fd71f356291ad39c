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
    // Each listing reads one page at a time: no initial burst for a cautious start to soften.
    let client = HttpClient::new(
        ClientConfig::for_vendor(config, ClientSpec::new(auth))?.without_cautious_start(),
    )?;
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

/// The writer's read capability ([`crate::sink::Sink::read`]): what the server holds for a
/// users or groups record, found as the writer finds it (the run's map, then `externalId`,
/// then `userName` / `displayName`), and the changes the writer would PATCH. Memberships are
/// not read (the ledger decides for them).
impl super::write::ScimSink {
    pub(super) async fn holding(
        &self,
        item: &crate::sink::Item,
    ) -> Result<crate::sink::Holding, crate::sink::SendError> {
        use super::directory::{Attr, Res};
        use crate::sink::{Holding, Kind as ItemKind};
        let key = item.id.clone().unwrap_or_default();
        let text = |field: &str| {
            item.fields
                .get(field)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let (res, fallback) = match item.kind {
            ItemKind::Users => (
                Res::User,
                (Attr::UserName, text("email").unwrap_or_else(|| key.clone())),
            ),
            ItemKind::Groups => (
                Res::Group,
                (
                    Attr::DisplayName,
                    text("name").unwrap_or_else(|| key.clone()),
                ),
            ),
            _ => return Ok(Holding::Unreadable),
        };
        let fallback = Some((fallback.0, fallback.1.as_str()));
        let found = match self.resolve(res, &key, fallback).await {
            Ok(Ok(Some(found))) => found,
            Ok(Ok(None)) => return Ok(Holding::Absent),
            Ok(Err(refusal)) => return Err(refusal_error(refusal)),
            Err(fatal) => return Err(fatal_error(fatal)),
        };
        let resource = match found.resource {
            Some(resource) => resource,
            None => match self.read(res, &found.id).await {
                Ok(Ok(Some((_, true)))) => return Ok(Holding::Unreadable),
                Ok(Ok(Some((resource, false)))) => resource,
                Ok(Ok(None)) => return Ok(Holding::Absent),
                Ok(Err(err)) => return Err(err),
                Err(fatal) => return Err(fatal_error(fatal)),
            },
        };
        if self.dry_run_lookups() {
            return Ok(Holding::Unreadable);
        }
        Ok(Holding::Held(current_of(item, &resource)))
    }
}

/// A SCIM resource in roster's record model, and the changes the writer would make to it.
fn current_of(
    item: &crate::sink::Item,
    resource: &serde_json::Map<String, Value>,
) -> crate::sink::Current {
    use super::wire;
    use crate::sink::{Current, FieldChange, Kind as ItemKind};
    let record = match item.kind {
        ItemKind::Users => types::user_record(Value::Object(resource.clone())).ok(),
        _ => types::group_records(Value::Object(resource.clone()), false).group,
    }
    .unwrap_or_default();
    let mut current = Current::default();
    for (name, value) in record {
        match (name.as_str(), value) {
            ("id", _) => {}
            ("attributes", Value::Object(attributes)) => current.attributes = attributes,
            (_, value) => {
                current.fields.insert(name, value);
            }
        }
    }
    let changes = match item.kind {
        ItemKind::Users => wire::user_changes(item, Some(resource)).0,
        _ => wire::group_changes(item),
    };
    current.changes = wire::pending(&changes, resource)
        .into_iter()
        .map(|change| FieldChange {
            field: model_name(&change.path.patch_path()),
            from: change.path.get(resource).cloned().unwrap_or(Value::Null),
            to: change.value.clone().unwrap_or(Value::Null),
        })
        .collect();
    current
}

/// A SCIM attribute path by roster's model name, where it is one of the standard fields.
fn model_name(path: &str) -> String {
    match path {
        "externalId" => "id (externalId)".into(),
        "userName" => "email (userName)".into(),
        "emails" => "email (emails)".into(),
        "name.givenName" => "first_name".into(),
        "name.familyName" => "last_name".into(),
        "displayName" => "name".into(),
        other => other.to_string(),
    }
}

/// A lookup that found several resources, or failed: the record cannot be planned.
fn refusal_error(refusal: crate::sink::Refusal) -> crate::sink::SendError {
    crate::sink::SendError {
        failure: if refusal.transient {
            crate::sink::SendFailure::Exhausted
        } else {
            crate::sink::SendFailure::Refused
        },
        status: refusal.vendor_status,
        body_excerpt: refusal.vendor_body.clone(),
        message: refusal.reason,
        maybe_processed: false,
    }
}

/// Refused credentials or an unreachable server, as the failed request it came from.
fn fatal_error(err: crate::sink::SinkError) -> crate::sink::SendError {
    let failure = match &err {
        crate::sink::SinkError::Credentials { .. } => crate::sink::SendFailure::Credentials,
        _ => crate::sink::SendFailure::Unreachable,
    };
    crate::sink::SendError {
        failure,
        status: None,
        body_excerpt: None,
        message: err.to_string(),
        maybe_processed: false,
    }
}
