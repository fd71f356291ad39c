//! The SCIM 2.0 writer, shared by `scim` (any service provider) and `guru_scim` (Guru's
//! endpoint and credentials). It provisions as scim.md §5–§9 say a careful client does:
//!
//! | kind | upsert | delete |
//! | --- | --- | --- |
//! | users | look up (`externalId`, then `userName`); `PATCH` what differs, or `POST` when absent | `PATCH active=false` (`DELETE` with `hard_delete: true`) |
//! | groups | look up (`externalId`, then `displayName`); `PATCH` what differs, or `POST` | `DELETE /Groups/{id}` |
//! | memberships | `PATCH /Groups/{id}` with `remove`/`add` member deltas, batched per group | the same, as removals |
//!
//! - **Never a blind create.** A user is POSTed only after both lookups came back empty; a
//!   `409` is read as "it exists": the writer looks again by `userName`, `externalId` and
//!   email, adopts the one match, and otherwise rejects the record with the server's `detail`.
//!   A POST whose answer was lost is not repeated: the writer looks for what it may have made.
//! - **Updates** send only what differs from the server's copy (a record that changes nothing
//!   is skipped as unchanged). Servers without PATCH get `GET`, merge, `PUT` of the whole
//!   resource (so `active` and everything roster does not set are kept), with `If-Match` when
//!   the server has ETags, and one more read-merge-write after a `412`.
//! - **Memberships** name server ids: users and groups are mapped from their source keys (the
//!   run's map, else a lookup by `externalId`, then `userName` / `displayName`). A group's
//!   changes are compared with its current members first, so only real changes are sent:
//!   removals before additions, at most `membership_chunk_size` per PATCH (default 100). A
//!   chunk refused with `400` or `413` is halved until it passes or one change is left, which
//!   is then rejected (or skipped, when removing a member who is not there: `noTarget`). A
//!   `413`, or a `400` that blames the request rather than a value, also halves the chunk size
//!   for the rest of the run.
//! - **Capabilities** come from `/ServiceProviderConfig`, read once: PATCH, filters and ETags
//!   are used only when advertised (a server that refuses a filter anyway is then listed once
//!   instead, see [`super::directory`]). Bulk is not used: every SaaS SCIM server takes the
//!   per-resource calls, and few take `/Bulk` (scim.md §10).
//!
//! This file holds the writer, its lookups and the users and groups records; creating a
//! resource is `create.rs`, updating one `update.rs`, and memberships `members.rs`.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::scim::error::ScimError;
use crate::scim::{ACCEPT, ServiceProviderConfig};
use crate::sink::{
    Acks, Action, Auth, BatchKey, BatchLimits, ClientSpec, Kind, Method, Op, OrderKey, PayloadHash,
    Plan, Refusal, SendError, Sink, SinkContext, SinkError, Transport, WireRequest, WireStats,
    fatal_or, key_segment,
};

use super::config::Config;
use super::directory::{Attr, Directory, Found, Res, is_inactive};
use super::wire::{self, Change};
use crate::vendors::patterns::{self, Deleted};

/// Membership changes per PATCH unless `membership_chunk_size` says otherwise: AWS IAM Identity
/// Center's documented cap, and what Okta sends (scim.md §6).
pub const DEFAULT_CHUNK_SIZE: usize = 100;

/// Membership records one write gathers for a group (sent as chunks of the chunk size).
pub const MEMBERSHIP_BATCH: usize = 1000;

/// How long a group's membership batch gathers records.
pub const MEMBERSHIP_LINGER: Duration = Duration::from_millis(200);

/// SCIM's media type, sent with every body (Guru's OneLogin guide requires it).
pub const CONTENT_TYPE: &str = "application/scim+json";

/// How the writer behaves beyond its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `hard_delete`: DELETE users instead of deactivating them.
    pub hard_delete: bool,
    /// `membership_chunk_size`.
    pub chunk_size: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            hard_delete: false,
            chunk_size: DEFAULT_CHUNK_SIZE,
        }
    }
}

/// The SCIM writer.
#[derive(Debug)]
pub struct ScimSink {
    pub(super) vendor: &'static str,
    pub(super) transport: Arc<dyn Transport>,
    options: Options,
    pub(super) chunk: AtomicUsize,
    spc: OnceCell<ServiceProviderConfig>,
    pub(super) dir: Directory,
    warned: Mutex<HashSet<String>>,
    /// True when a dry run answers (lookups find nothing, creates return no id).
    dry_run: AtomicBool,
    /// Each group's member ids as read once and changed by this run (`None`: the server does
    /// not list members).
    pub(super) members: Mutex<HashMap<String, Option<BTreeSet<String>>>>,
}

/// The generic SCIM vendor's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: Config = ctx.config.typed()?;
    let auth = config.credentials()?;
    build("scim", ctx, auth, None, config.membership_chunk_size)
}

/// Builds a SCIM writer for `vendor` with `auth` (also Guru SCIM's factory).
pub fn build(
    vendor: &'static str,
    ctx: &SinkContext<'_>,
    auth: Auth,
    requests_per_second: Option<f64>,
    chunk_size: Option<usize>,
) -> Result<Arc<dyn Sink>, SinkError> {
    let mut spec = ClientSpec::new(auth);
    spec.headers.push(("accept", ACCEPT));
    spec.requests_per_second = requests_per_second;
    // RFC 7644 §3.3, §3.5: a write answers with the resource (JSON) or 204.
    spec.json_answers = true;
    let options = Options {
        hard_delete: ctx.target.hard_delete,
        chunk_size: chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE).max(1),
    };
    Ok(Arc::new(ScimSink::new(
        vendor,
        ctx.transport(spec)?,
        options,
    )))
}

/// A request with a SCIM body.
pub(super) fn with_body(method: Method, path: String, body: Value) -> WireRequest {
    WireRequest::new(method, path)
        .json(body)
        .header("content-type", CONTENT_TYPE)
}

/// The server's `detail` (else the excerpt, else the message) of a failed request.
pub(super) fn detail_of(err: &SendError) -> String {
    err.body_excerpt
        .as_deref()
        .and_then(ScimError::parse)
        .and_then(|e| e.detail)
        .or_else(|| err.body_excerpt.clone())
        .unwrap_or_else(|| err.message.clone())
}

/// The SCIM Error of a failed request, if the body is one.
pub(super) fn scim_error(err: &SendError) -> Option<ScimError> {
    err.body_excerpt.as_deref().and_then(ScimError::parse)
}

/// Builds a resource's changes from its current state, when that is known.
pub(super) type ChangesFor<'a> =
    dyn Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync + 'a;

/// A lookup's answer: found or not, a refusal for the record, or a fatal error.
pub(super) type Resolution = Result<Result<Option<Found>, Refusal>, SinkError>;

/// The outcome of one record's work, before it is settled.
pub(super) enum Done {
    Accepted,
    Skipped(String),
    Rejected(Refusal),
}

impl Done {
    pub(super) fn settle(self, op: &Op, acks: &Acks, payload: Option<PayloadHash>) {
        match self {
            Done::Accepted => acks.accepted(op, payload),
            Done::Skipped(reason) => acks.skipped(op, reason),
            Done::Rejected(refusal) => acks.rejected(op, refusal, payload),
        }
    }
}

/// A failed request: a reject for the record, or fatal.
pub(super) fn rejected(vendor: &'static str, err: SendError) -> Result<Done, SinkError> {
    patterns::refusal(vendor, err).map(Done::Rejected)
}

impl ScimSink {
    /// A writer over any transport (tests, Guru SCIM).
    pub fn new(vendor: &'static str, transport: Arc<dyn Transport>, options: Options) -> Self {
        ScimSink {
            vendor,
            dir: Directory::new(vendor, transport.clone()),
            transport,
            chunk: AtomicUsize::new(options.chunk_size.max(1)),
            options,
            spc: OnceCell::new(),
            warned: Mutex::new(HashSet::new()),
            dry_run: AtomicBool::new(false),
            members: Mutex::new(HashMap::new()),
        }
    }

    /// The membership changes per PATCH now (lowered after a 413).
    pub fn chunk_size(&self) -> usize {
        self.chunk.load(Ordering::Relaxed)
    }

    /// The server's capabilities, read once (`/ServiceProviderConfig`; the defaults when it
    /// cannot be read: PATCH and filters on, the rest off).
    pub(super) async fn spc(&self) -> &ServiceProviderConfig {
        self.spc
            .get_or_init(|| async {
                let request = WireRequest::new(Method::Get, "/ServiceProviderConfig");
                let spc = match self.transport.send(request).await {
                    Ok(response) => {
                        self.dry_run.store(response.dry_run, Ordering::Relaxed);
                        ServiceProviderConfig::from_value(&response.json())
                    }
                    Err(err) => {
                        tracing::debug!(
                            "{}: no usable ServiceProviderConfig, assuming PATCH and filters: {}",
                            self.vendor,
                            err.message
                        );
                        ServiceProviderConfig::default()
                    }
                };
                if !spc.filter {
                    self.dir.disable_filters();
                }
                self.dir
                    .set_page_size(spc.page_size(super::directory::INDEX_PAGE_SIZE));
                tracing::debug!("{}: {spc:?}", self.vendor);
                spc
            })
            .await
    }

    /// Warns once per attribute that SCIM has no place for.
    pub(super) fn warn_unplaced(&self, unplaced: &[String]) {
        let mut warned = self.warned.lock();
        for key in unplaced {
            if warned.insert(key.clone()) {
                tracing::warn!(
                    "{}: users attribute {key:?} has no SCIM attribute to go to and is not sent (SCIM takes RFC 7643 User attributes and urn:… extension attributes)",
                    self.vendor
                );
            }
        }
    }

    /// The stand-in id of a resource a dry run would have created.
    pub(super) fn dry_run_id(&self, res: Res, key: &str) -> String {
        format!("<{} id of {} {key}>", self.vendor, res.noun())
    }

    /// Looks `value` up by `attr`; one match, none, or a refusal (several, or the request failed).
    async fn find_one(
        &self,
        res: Res,
        attr: Attr,
        value: &str,
    ) -> Result<Result<Option<Found>, Refusal>, SinkError> {
        match self.dir.find(res, attr, value).await? {
            Err(err) => Ok(Err(Refusal::failed(
                format!(
                    "{} lookup of {} {} {value:?} failed: {}",
                    self.vendor,
                    res.noun(),
                    attr.path(),
                    err.message
                ),
                &err,
            ))),
            Ok(mut found) => Ok(match found.len() {
                0 => Ok(None),
                1 => Ok(found.pop()),
                n => Err(Refusal::new(format!(
                    "{n} {}s at {} have {} {value:?}, so roster cannot tell which one is meant",
                    res.noun(),
                    self.vendor,
                    attr.path()
                ))),
            }),
        }
    }

    /// Finds the resource a source key stands for: the run's map, then `externalId`, then the
    /// fallback attribute (`userName` / `displayName`).
    pub(super) async fn resolve(
        &self,
        res: Res,
        key: &str,
        fallback: Option<(Attr, &str)>,
    ) -> Resolution {
        if let Some(id) = self.dir.mapped(res, key) {
            return Ok(Ok(Some(Found { id, resource: None })));
        }
        self.spc().await;
        let mut found = match self.find_one(res, Attr::ExternalId, key).await? {
            Ok(found) => found,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if found.is_none()
            && let Some((attr, value)) = fallback
        {
            found = match self.find_one(res, attr, value).await? {
                Ok(found) => found,
                Err(refusal) => return Ok(Err(refusal)),
            };
        }
        if let Some(f) = &found {
            self.dir
                .remember(res, key, &f.id, f.resource.as_ref())
                .await;
        }
        Ok(Ok(found))
    }

    /// GETs one resource. `Ok(None)`: it is gone (404).
    pub(super) async fn read(
        &self,
        res: Res,
        id: &str,
    ) -> Result<Result<Option<(Map<String, Value>, bool)>, SendError>, SinkError> {
        let path = format!("{}/{}", res.endpoint(), key_segment(id));
        match self
            .transport
            .send(WireRequest::new(Method::Get, path))
            .await
        {
            Ok(response) => Ok(Ok(Some((
                response.json().as_object().cloned().unwrap_or_default(),
                response.dry_run,
            )))),
            Err(err) if err.status == Some(404) => Ok(Ok(None)),
            Err(err) => Ok(Err(fatal_or(self.vendor, err)?)),
        }
    }

    async fn upsert_user(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let item = &op.item;
        let key = item.id.clone().unwrap_or_default();
        let email = item
            .fields
            .get("email")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        let user_name = email.clone().unwrap_or_else(|| key.clone());
        let found = match self
            .resolve(Res::User, &key, Some((Attr::UserName, &user_name)))
            .await?
        {
            Ok(found) => found,
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let changes_for =
            |current: Option<&Map<String, Value>>| wire::user_changes(item, current).0;
        let (changes, unplaced) = wire::user_changes(item, None);
        self.warn_unplaced(&unplaced);
        let (done, payload) = match found {
            Some(found) => self.update(Res::User, &key, found, changes_for).await?,
            None => {
                let mut changes = changes;
                if !changes.iter().any(|c| c.path.patch_path() == "userName") {
                    // SCIM requires a userName; a user without an email gets its key (CONTRACT.md).
                    changes.insert(
                        1,
                        Change {
                            path: wire::AttrPath::Top("userName".into()),
                            value: Some(json!(key)),
                        },
                    );
                }
                let mut adopt_by = vec![
                    (Attr::UserName, user_name.clone()),
                    (Attr::ExternalId, key.clone()),
                ];
                if let Some(email) = &email {
                    adopt_by.push((Attr::Email, email.clone()));
                }
                self.create(Res::User, &key, &changes, &adopt_by, &changes_for)
                    .await?
            }
        };
        done.settle(op, acks, payload);
        Ok(())
    }

    /// The resource a delete names; `None` when there is none (skipped: nothing to delete) or
    /// its lookup failed (rejected).
    async fn to_delete(
        &self,
        res: Res,
        key: &str,
        fallback: Option<(Attr, &str)>,
        op: &Op,
        acks: &Acks,
    ) -> Result<Option<Found>, SinkError> {
        match self.resolve(res, key, fallback).await? {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) => {
                let noun = res.noun();
                let why = format!("no {noun} with externalId {key:?} at {}", self.vendor);
                acks.skipped(op, why);
                Ok(None)
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                Ok(None)
            }
        }
    }

    /// `DELETE`s a resource (404: gone already, skipped) and forgets it unless it was refused.
    async fn delete(
        &self,
        res: Res,
        key: &str,
        id: &str,
        op: &Op,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let path = format!("{}/{}", res.endpoint(), key_segment(id));
        let request = WireRequest::new(Method::Delete, path);
        let gone = || format!("{} {id} is gone from {} already", res.noun(), self.vendor);
        let transport = self.transport.as_ref();
        let deleted = patterns::delete(self.vendor, transport, op, request, acks, gone).await?;
        if deleted != Deleted::Refused {
            self.dir.forget(res, key, id).await;
        }
        Ok(())
    }

    async fn delete_user(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let item = &op.item;
        let key = item.id.clone().unwrap_or_default();
        let email = item
            .fields
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fallback = email.as_deref().map(|e| (Attr::UserName, e));
        let Some(found) = self.to_delete(Res::User, &key, fallback, op, acks).await? else {
            return Ok(());
        };
        if self.options.hard_delete {
            return self.delete(Res::User, &key, &found.id, op, acks).await;
        }
        if found.resource.as_ref().is_some_and(is_inactive) {
            acks.skipped(op, format!("already inactive at {}", self.vendor));
            return Ok(());
        }
        let deactivate = |_: Option<&Map<String, Value>>| {
            vec![Change {
                path: wire::AttrPath::Top("active".into()),
                value: Some(json!(false)),
            }]
        };
        let (done, payload) = self.update(Res::User, &key, found, deactivate).await?;
        done.settle(op, acks, payload);
        Ok(())
    }

    async fn upsert_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let item = &op.item;
        let key = item.id.clone().unwrap_or_default();
        let name = item
            .fields
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fallback = name.as_deref().map(|n| (Attr::DisplayName, n));
        let found = match self.resolve(Res::Group, &key, fallback).await? {
            Ok(found) => found,
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let changes_for = |_: Option<&Map<String, Value>>| wire::group_changes(item);
        let (done, payload) = match found {
            Some(found) => self.update(Res::Group, &key, found, changes_for).await?,
            None => {
                let mut changes = wire::group_changes(item);
                if name.is_none() {
                    // SCIM requires a displayName: a group without a name is called by its key.
                    changes.push(Change {
                        path: wire::AttrPath::Top("displayName".into()),
                        value: Some(json!(key)),
                    });
                }
                let display = name.clone().unwrap_or_else(|| key.clone());
                let adopt_by = vec![
                    (Attr::ExternalId, key.clone()),
                    (Attr::DisplayName, display),
                ];
                self.create(Res::Group, &key, &changes, &adopt_by, &changes_for)
                    .await?
            }
        };
        done.settle(op, acks, payload);
        Ok(())
    }

    async fn delete_group(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let key = op.item.id.clone().unwrap_or_default();
        let name = op
            .item
            .fields
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fallback = name.as_deref().map(|n| (Attr::DisplayName, n));
        let Some(found) = self.to_delete(Res::Group, &key, fallback, op, acks).await? else {
            return Ok(());
        };
        self.delete(Res::Group, &key, &found.id, op, acks).await
    }

    /// True when the server's answers come from a dry run (nothing was read).
    pub(super) fn dry_run_lookups(&self) -> bool {
        self.dry_run.load(Ordering::Relaxed)
    }
}

#[async_trait::async_trait]
impl Sink for ScimSink {
    fn vendor(&self) -> &'static str {
        self.vendor
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        match item.kind {
            Kind::Users => {
                let Some(key) = item.id.as_deref().filter(|k| !k.is_empty()) else {
                    return Err(Refusal::new(
                        "a users record needs an id (it becomes externalId)",
                    ));
                };
                let mut keys = vec![OrderKey::user(key)];
                if let Some(email) = item.fields.get("email").and_then(Value::as_str) {
                    keys.push(OrderKey::new("scim userName", &email.trim().to_lowercase()));
                }
                Ok(Plan::single(keys))
            }
            Kind::Groups => {
                let Some(key) = item.id.as_deref().filter(|k| !k.is_empty()) else {
                    return Err(Refusal::new(
                        "a groups record needs an id (it becomes externalId)",
                    ));
                };
                let mut keys = vec![OrderKey::group(key)];
                if let Some(name) = item.fields.get("name").and_then(Value::as_str) {
                    keys.push(OrderKey::new("scim displayName", &name.to_lowercase()));
                }
                Ok(Plan::single(keys))
            }
            Kind::Memberships => {
                let (Some(user), Some(group)) = (item.user_id.as_deref(), item.group_id.as_deref())
                else {
                    return Err(Refusal::new("a membership needs user_id and group_id"));
                };
                Ok(Plan::batched(
                    vec![OrderKey::group(group), OrderKey::user(user)],
                    BatchKey::new(
                        format!("{} group {group} members", self.vendor),
                        BatchLimits {
                            max_items: MEMBERSHIP_BATCH,
                            linger: MEMBERSHIP_LINGER,
                        },
                    ),
                ))
            }
            Kind::Events => Err(Refusal::new(format!("{} takes no events", self.vendor))),
            Kind::Segments => Err(Refusal::new(format!("{} has no segments", self.vendor))),
        }
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        if first.item.kind == Kind::Memberships {
            return self.memberships(&batch, acks).await;
        }
        for op in &batch {
            match (op.item.kind, op.item.action) {
                (Kind::Users, Action::Upsert) => self.upsert_user(op, acks).await?,
                (Kind::Users, Action::Delete) => self.delete_user(op, acks).await?,
                (Kind::Groups, Action::Upsert) => self.upsert_group(op, acks).await?,
                (Kind::Groups, Action::Delete) => self.delete_group(op, acks).await?,
                _ => acks.rejected(
                    op,
                    Refusal::new(format!(
                        "{} cannot write this {} record",
                        self.vendor, op.item.kind
                    )),
                    None,
                ),
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        // Not /ServiceProviderConfig: RFC 7644 lets servers serve it without authentication.
        let request = WireRequest::new(Method::Get, "/Users?startIndex=1&count=1");
        patterns::probe(self.vendor, self.transport.as_ref(), request).await?;
        self.spc().await;
        Ok(())
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn holds_memberships(&self) -> bool {
        true
    }

    fn reads(&self, kind: Kind) -> bool {
        matches!(kind, Kind::Users | Kind::Groups)
    }

    async fn read(&self, item: &crate::sink::Item) -> Result<crate::sink::Holding, SendError> {
        self.holding(item).await
    }
}
