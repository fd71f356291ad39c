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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use crate::scim::error::ScimError;
use crate::scim::patch::{self, MemberChange, Operation};
use crate::scim::types::{get, id_of};
use crate::scim::{ACCEPT, ServiceProviderConfig};
use crate::sink::{
    Acks, Action, Auth, BatchKey, BatchLimits, ClientSpec, Kind, Method, Op, OrderKey, PayloadHash,
    Plan, Refusal, SendError, SendFailure, Sink, SinkContext, SinkError, Transport, WireRequest,
    WireStats, WriteVerdict, fatal_or, key_segment, verdict,
};

use super::config::Config;
use super::directory::{Attr, Directory, Found, Res, is_inactive, member_ids};
use super::model::{self, Change, GROUP_SCHEMA, USER_SCHEMA};

/// Membership changes per PATCH unless `membership_chunk_size` says otherwise: AWS IAM Identity
/// Center's documented cap, and what Okta sends (scim.md §6).
pub const DEFAULT_CHUNK_SIZE: usize = 100;

/// Membership records one write gathers for a group (sent as chunks of the chunk size).
pub const MEMBERSHIP_BATCH: usize = 1000;

/// How long a group's membership batch gathers records.
pub const MEMBERSHIP_LINGER: Duration = Duration::from_millis(200);

/// Lookups of one membership batch's users that run at once.
const LOOKUP_CONCURRENCY: usize = 8;

/// How often a create whose answer never came is sent again after a fresh lookup shows it was
/// not made: the HTTP engine's budget for requests that are safe to repeat.
const UNCONFIRMED_RESENDS: u32 = crate::http::DEFAULT_MAX_RETRIES;

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
    vendor: &'static str,
    transport: Arc<dyn Transport>,
    options: Options,
    chunk: AtomicUsize,
    spc: OnceCell<ServiceProviderConfig>,
    dir: Directory,
    warned: Mutex<HashSet<String>>,
    /// True when a dry run answers (lookups find nothing, creates return no id).
    dry_run: AtomicBool,
    /// Each group's member ids as read once and changed by this run (`None`: the server does
    /// not list members).
    members: Mutex<HashMap<String, Option<BTreeSet<String>>>>,
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
fn with_body(method: Method, path: String, body: Value) -> WireRequest {
    WireRequest::new(method, path)
        .json(body)
        .header("content-type", CONTENT_TYPE)
}

/// The server's `detail` (else the excerpt, else the message) of a failed request.
fn detail_of(err: &SendError) -> String {
    err.body_excerpt
        .as_deref()
        .and_then(ScimError::parse)
        .and_then(|e| e.detail)
        .or_else(|| err.body_excerpt.clone())
        .unwrap_or_else(|| err.message.clone())
}

/// The SCIM Error of a failed request, if the body is one.
fn scim_error(err: &SendError) -> Option<ScimError> {
    err.body_excerpt.as_deref().and_then(ScimError::parse)
}

/// Builds a resource's changes from its current state, when that is known.
type ChangesFor<'a> = dyn Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync + 'a;

/// A lookup's answer: found or not, a refusal for the record, or a fatal error.
type Resolution = Result<Result<Option<Found>, Refusal>, SinkError>;

/// The outcome of one record's work, before it is settled.
enum Done {
    Accepted,
    Skipped(String),
    Rejected(Refusal),
}

impl Done {
    fn settle(self, op: &Op, acks: &Acks, payload: Option<PayloadHash>) {
        match self {
            Done::Accepted => acks.accepted(op, payload),
            Done::Skipped(reason) => acks.skipped(op, reason),
            Done::Rejected(refusal) => acks.rejected(op, refusal, payload),
        }
    }
}

/// A failed request: a reject for the record, or fatal.
fn rejected(vendor: &'static str, err: SendError) -> Result<Done, SinkError> {
    match verdict(vendor, err) {
        WriteVerdict::Reject(refusal) => Ok(Done::Rejected(refusal)),
        WriteVerdict::Fatal(fatal) => Err(fatal),
    }
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
    async fn spc(&self) -> &ServiceProviderConfig {
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
    fn warn_unplaced(&self, unplaced: &[String]) {
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
    fn dry_run_id(&self, res: Res, key: &str) -> String {
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
    async fn resolve(&self, res: Res, key: &str, fallback: Option<(Attr, &str)>) -> Resolution {
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
    async fn read(
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

    /// Brings a found resource in line with `changes` (computed against its current state).
    /// Looked-up resources come with their state; mapped or indexed ones are read first when
    /// the changes depend on it (`emails`) or the server lacks PATCH.
    async fn update<F>(
        &self,
        res: Res,
        key: &str,
        found: Found,
        changes_for: F,
    ) -> Result<(Done, Option<PayloadHash>), SinkError>
    where
        F: Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync,
    {
        let patch_ok = self.spc().await.patch;
        if !patch_ok {
            return self.put_merged(res, key, &found.id, &changes_for).await;
        }
        let mut current = found.resource;
        if current.is_none()
            && changes_for(None)
                .iter()
                .any(|c| c.path.patch_path() == "emails")
        {
            match self.read(res, &found.id).await? {
                Ok(Some((resource, false))) => current = Some(resource),
                Ok(Some((_, true))) => {}
                Ok(None) => return self.gone(res, key, &found.id).await,
                Err(err) => return Ok((rejected(self.vendor, err)?, None)),
            }
        }
        let changes = changes_for(current.as_ref());
        let todo: Vec<&Change> = match &current {
            Some(resource) => model::pending(&changes, resource),
            None => changes.iter().collect(),
        };
        if todo.is_empty() {
            return Ok((Done::Skipped(format!("unchanged at {}", self.vendor)), None));
        }
        let operations: Vec<Operation> = todo
            .iter()
            .map(|c| match &c.value {
                Some(value) => Operation::replace(c.path.patch_path(), value.clone()),
                None => Operation::remove(c.path.patch_path()),
            })
            .collect();
        let request = with_body(
            Method::Patch,
            format!("{}/{}", res.endpoint(), key_segment(&found.id)),
            patch::body(&operations),
        )
        // Replacing values with the same values again changes nothing.
        .idempotent();
        let payload = request.payload_hash();
        match self.transport.send(request).await {
            Ok(_) => {
                if let Some(resource) = &current {
                    let merged = model::merged(resource, &todo);
                    self.dir
                        .remember(res, key, &found.id, merged.as_object())
                        .await;
                }
                Ok((Done::Accepted, payload))
            }
            Err(err) if err.status == Some(404) => self.gone(res, key, &found.id).await,
            Err(err) => Ok((rejected(self.vendor, err)?, payload)),
        }
    }

    /// A mapped resource answered 404: forget it; the record is rejected so a replay creates it.
    async fn gone(
        &self,
        res: Res,
        key: &str,
        id: &str,
    ) -> Result<(Done, Option<PayloadHash>), SinkError> {
        self.dir.forget(res, key, id).await;
        Ok((
            Done::Rejected(Refusal::vendor(
                format!(
                    "{} {} {id} (key {key:?}) disappeared from {} while roster was writing it; replay the record to create it again",
                    res.noun(),
                    id,
                    self.vendor
                ),
                Some(404),
                None,
            )),
            None,
        ))
    }

    /// GET, merge, PUT the whole resource (servers without PATCH), with `If-Match` when the
    /// server has ETags, and once more after a 412.
    async fn put_merged<F>(
        &self,
        res: Res,
        key: &str,
        id: &str,
        changes_for: &F,
    ) -> Result<(Done, Option<PayloadHash>), SinkError>
    where
        F: Fn(Option<&Map<String, Value>>) -> Vec<Change> + Send + Sync,
    {
        let etag = self.spc().await.etag;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (resource, dry_run) = match self.read(res, id).await? {
                Ok(Some(read)) => read,
                Ok(None) => return self.gone(res, key, id).await,
                Err(err) => return Ok((rejected(self.vendor, err)?, None)),
            };
            let changes = changes_for((!dry_run).then_some(&resource));
            let todo: Vec<&Change> = if dry_run {
                changes.iter().collect()
            } else {
                model::pending(&changes, &resource)
            };
            if todo.is_empty() {
                return Ok((Done::Skipped(format!("unchanged at {}", self.vendor)), None));
            }
            let body = model::merged(&resource, &todo);
            let mut request = with_body(
                Method::Put,
                format!("{}/{}", res.endpoint(), key_segment(id)),
                body.clone(),
            );
            let version = get(&resource, "meta")
                .and_then(Value::as_object)
                .and_then(|m| get(m, "version"))
                .and_then(Value::as_str);
            if etag && let Some(version) = version {
                request = request.header("if-match", version);
            }
            let payload = request.payload_hash();
            match self.transport.send(request).await {
                Ok(_) => {
                    self.dir.remember(res, key, id, body.as_object()).await;
                    return Ok((Done::Accepted, payload));
                }
                // Someone changed it between our read and our write: read and merge again.
                Err(err) if err.status == Some(412) && attempts < 2 => continue,
                Err(err) if err.status == Some(404) => return self.gone(res, key, id).await,
                Err(err) => return Ok((rejected(self.vendor, err)?, payload)),
            }
        }
    }

    /// True when a fresh listing finds nothing under any of the keys a create could clash
    /// on: an unconfirmed create did not happen.
    async fn absent(&self, res: Res, adopt_by: &[(Attr, String)]) -> Result<bool, SinkError> {
        self.dir.refresh(res).await?;
        for (attr, value) in adopt_by {
            match self.dir.find(res, *attr, value).await? {
                Ok(found) if found.is_empty() => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// POSTs a new resource. A 409 (or an unconfirmed POST) looks again and adopts the one
    /// match; an unconfirmed POST that left nothing behind is sent again.
    async fn create(
        &self,
        res: Res,
        key: &str,
        changes: &[Change],
        adopt_by: &[(Attr, String)],
        changes_for: &ChangesFor<'_>,
    ) -> Result<(Done, Option<PayloadHash>), SinkError> {
        let core = match res {
            Res::User => USER_SCHEMA,
            Res::Group => GROUP_SCHEMA,
        };
        let body = model::create_body(core, changes);
        // A create is not repeated blindly: a lost answer may hide a created resource.
        let request =
            with_body(Method::Post, res.endpoint().to_string(), body.clone()).not_idempotent();
        let payload = request.payload_hash();
        let mut resent = 0;
        let err = loop {
            let err = match self.transport.send(request.clone()).await {
                Ok(response) => break Ok(response),
                Err(err) => fatal_or(self.vendor, err)?,
            };
            // An unconfirmed POST that a fresh lookup shows never happened (the server failed
            // before creating anything) is sent again, as often as the engine would retry a
            // request that is safe to repeat; one that did happen is adopted below.
            if err.status != Some(409)
                && err.maybe_processed
                && err.failure == SendFailure::Exhausted
                && resent < UNCONFIRMED_RESENDS
                && self.absent(res, adopt_by).await?
            {
                resent += 1;
                tracing::info!(
                    "{}: creating {} {key:?} was not confirmed ({}) and it does not exist; sending it again ({resent} of {UNCONFIRMED_RESENDS})",
                    self.vendor,
                    res.noun(),
                    err.message
                );
                continue;
            }
            break Err(err);
        };
        let err = match err {
            Ok(response) => {
                let created = response.json();
                let id = created
                    .as_object()
                    .and_then(id_of)
                    .or_else(|| response.dry_run.then(|| self.dry_run_id(res, key)));
                match id {
                    Some(id) => {
                        let known = created
                            .as_object()
                            .filter(|o| !o.is_empty())
                            .or(body.as_object());
                        self.dir.remember(res, key, &id, known).await;
                    }
                    None => tracing::warn!(
                        "{}: the answer to creating {} {key:?} has no id; it will be looked up when needed",
                        self.vendor,
                        res.noun()
                    ),
                }
                return Ok((Done::Accepted, payload));
            }
            Err(err) => err,
        };
        let conflict = err.status == Some(409);
        if !(conflict || err.maybe_processed && err.failure == SendFailure::Exhausted) {
            return Ok((rejected(self.vendor, err)?, payload));
        }
        // It exists (409), or may have just been made: find it, by every key it could clash on.
        self.dir.refresh(res).await?;
        let mut ids: Vec<Found> = Vec::new();
        for (attr, value) in adopt_by {
            match self.dir.find(res, *attr, value).await? {
                Ok(found) => {
                    for f in found {
                        if !ids.iter().any(|i| i.id == f.id) {
                            ids.push(f);
                        }
                    }
                }
                Err(lookup) => {
                    let mut refusal = Refusal::vendor(
                        format!(
                            "{} answered {} to creating {} {key:?}, and looking for the existing one failed: {}",
                            self.vendor,
                            err.status.map_or("nothing".to_string(), |s| s.to_string()),
                            res.noun(),
                            lookup.message
                        ),
                        err.status,
                        err.body_excerpt,
                    );
                    // A create and its lookup both failing past the budget is the vendor being
                    // down: counted towards "unreachable" like any other exhausted request.
                    refusal.transient = err.failure == SendFailure::Exhausted;
                    return Ok((Done::Rejected(refusal), payload));
                }
            }
        }
        if ids.len() == 1 {
            let found = ids.remove(0);
            tracing::info!(
                "{}: {} {key:?} exists as {} ({}); adopting it",
                self.vendor,
                res.noun(),
                found.id,
                if conflict {
                    "409"
                } else {
                    "unconfirmed create"
                }
            );
            self.dir
                .remember(res, key, &found.id, found.resource.as_ref())
                .await;
            let (done, update_payload) = self.update(res, key, found, changes_for).await?;
            let done = match done {
                Done::Skipped(_) => Done::Accepted,
                other => other,
            };
            return Ok((done, update_payload.or(payload)));
        }
        if !conflict {
            return Ok((rejected(self.vendor, err)?, payload));
        }
        let keys: Vec<String> = adopt_by
            .iter()
            .map(|(a, v)| format!("{} {v:?}", a.path()))
            .collect();
        Ok((
            Done::Rejected(Refusal::vendor(
                format!(
                    "{} refused to create {} {key:?}: {} ({} existing {}s match {}, so none was adopted)",
                    self.vendor,
                    res.noun(),
                    detail_of(&err),
                    ids.len(),
                    res.noun(),
                    keys.join(" or ")
                ),
                err.status,
                err.body_excerpt,
            )),
            payload,
        ))
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
            |current: Option<&Map<String, Value>>| model::user_changes(item, current).0;
        let (changes, unplaced) = model::user_changes(item, None);
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
                            path: model::AttrPath::Top("userName".into()),
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

    async fn delete_user(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let item = &op.item;
        let key = item.id.clone().unwrap_or_default();
        let email = item
            .fields
            .get("email")
            .and_then(Value::as_str)
            .map(str::to_string);
        let fallback = email.as_deref().map(|e| (Attr::UserName, e));
        let found = match self.resolve(Res::User, &key, fallback).await? {
            Ok(Some(found)) => found,
            Ok(None) => {
                acks.skipped(
                    op,
                    format!("no user with externalId {key:?} at {}", self.vendor),
                );
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        if self.options.hard_delete {
            let request =
                WireRequest::new(Method::Delete, format!("/Users/{}", key_segment(&found.id)));
            match self.transport.send(request).await {
                Ok(_) => {
                    self.dir.forget(Res::User, &key, &found.id).await;
                    acks.accepted(op, None);
                }
                Err(err) if err.status == Some(404) => {
                    self.dir.forget(Res::User, &key, &found.id).await;
                    acks.skipped(
                        op,
                        format!("user {} is gone from {} already", found.id, self.vendor),
                    );
                }
                Err(err) => rejected(self.vendor, err)?.settle(op, acks, None),
            }
            return Ok(());
        }
        if found.resource.as_ref().is_some_and(is_inactive) {
            acks.skipped(op, format!("already inactive at {}", self.vendor));
            return Ok(());
        }
        let deactivate = |_: Option<&Map<String, Value>>| {
            vec![Change {
                path: model::AttrPath::Top("active".into()),
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
        let changes_for = |_: Option<&Map<String, Value>>| model::group_changes(item);
        let (done, payload) = match found {
            Some(found) => self.update(Res::Group, &key, found, changes_for).await?,
            None => {
                let mut changes = model::group_changes(item);
                if name.is_none() {
                    // SCIM requires a displayName: a group without a name is called by its key.
                    changes.push(Change {
                        path: model::AttrPath::Top("displayName".into()),
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
        let found = match self.resolve(Res::Group, &key, fallback).await? {
            Ok(Some(found)) => found,
            Ok(None) => {
                acks.skipped(
                    op,
                    format!("no group with externalId {key:?} at {}", self.vendor),
                );
                return Ok(());
            }
            Err(refusal) => {
                acks.rejected(op, refusal, None);
                return Ok(());
            }
        };
        let request = WireRequest::new(
            Method::Delete,
            format!("/Groups/{}", key_segment(&found.id)),
        );
        match self.transport.send(request).await {
            Ok(_) => {
                self.dir.forget(Res::Group, &key, &found.id).await;
                acks.accepted(op, None);
            }
            Err(err) if err.status == Some(404) => {
                self.dir.forget(Res::Group, &key, &found.id).await;
                acks.skipped(
                    op,
                    format!("group {} is gone from {} already", found.id, self.vendor),
                );
            }
            Err(err) => rejected(self.vendor, err)?.settle(op, acks, None),
        }
        Ok(())
    }

    /// One group's membership records: resolve ids, compare with the current members, send
    /// the real changes in chunks.
    async fn memberships(&self, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let Some(group_key) = batch.first().and_then(|op| op.item.group_id.clone()) else {
            return Ok(());
        };
        let group = match self
            .resolve(
                Res::Group,
                &group_key,
                Some((Attr::DisplayName, &group_key)),
            )
            .await?
        {
            Ok(Some(found)) => found,
            Ok(None) if self.dry_run_lookups() => Found {
                id: self.dry_run_id(Res::Group, &group_key),
                resource: None,
            },
            Ok(None) => {
                for op in batch {
                    match op.item.action {
                        Action::Delete => acks.skipped(
                            op,
                            format!("no group with externalId {group_key:?} at {}, so no member in it", self.vendor),
                        ),
                        Action::Upsert => acks.rejected(
                            op,
                            Refusal::new(format!(
                                "{} record in group key {group_key:?}: no group with externalId or displayName {group_key:?} at {}, and none was created from this run's groups records",
                                op.origin.stream,
                                self.vendor
                            )),
                            None,
                        ),
                    }
                }
                return Ok(());
            }
            Err(refusal) => {
                for op in batch {
                    acks.rejected(op, refusal.clone(), None);
                }
                return Ok(());
            }
        };
        // Map each user key to its server id (a few lookups at once).
        let keys: Vec<String> = {
            let mut seen = HashSet::new();
            batch
                .iter()
                .filter_map(|op| op.item.user_id.clone())
                .filter(|k| seen.insert(k.clone()))
                .collect()
        };
        let resolved: Vec<(String, Resolution)> = futures::stream::iter(keys)
            .map(|key| async move {
                let result = self
                    .resolve(Res::User, &key, Some((Attr::UserName, &key)))
                    .await;
                (key, result)
            })
            .buffer_unordered(LOOKUP_CONCURRENCY)
            .collect()
            .await;
        let mut user_ids: HashMap<String, Result<Option<String>, Refusal>> = HashMap::new();
        for (key, result) in resolved {
            let id = match result? {
                Ok(Some(found)) => Ok(Some(found.id)),
                Ok(None) if self.dry_run_lookups() => Ok(Some(self.dry_run_id(Res::User, &key))),
                Ok(None) => Ok(None),
                Err(refusal) => Err(refusal),
            };
            user_ids.insert(key, id);
        }
        // The group's members, read once per run and kept current, to send only real changes.
        if !self.members.lock().contains_key(&group.id) {
            let known = match self.read(Res::Group, &group.id).await? {
                Ok(Some((resource, false))) => member_ids(&resource),
                Ok(Some((_, true))) => None,
                Ok(None) => {
                    self.dir.forget(Res::Group, &group_key, &group.id).await;
                    for op in batch {
                        acks.rejected(
                            op,
                            Refusal::vendor(
                                format!(
                                    "group {} (key {group_key:?}) disappeared from {}",
                                    group.id, self.vendor
                                ),
                                Some(404),
                                None,
                            ),
                            None,
                        );
                    }
                    return Ok(());
                }
                Err(err) => {
                    let refusal = match verdict(self.vendor, err) {
                        WriteVerdict::Reject(refusal) => refusal,
                        WriteVerdict::Fatal(fatal) => return Err(fatal),
                    };
                    for op in batch {
                        acks.rejected(op, refusal.clone(), None);
                    }
                    return Ok(());
                }
            };
            self.members.lock().insert(group.id.clone(), known);
        }
        // The last record for a user wins; earlier ones share its outcome.
        let mut wanted: Vec<(String, Action, Vec<&Op>)> = Vec::new();
        for op in batch {
            let key = op.item.user_id.as_deref().unwrap_or_default();
            let id = match user_ids.get(key) {
                Some(Ok(Some(id))) => id.clone(),
                Some(Ok(None)) | None => {
                    match op.item.action {
                        Action::Delete => acks.skipped(
                            op,
                            format!("no user with externalId {key:?} at {}, so not a member", self.vendor),
                        ),
                        Action::Upsert => acks.rejected(
                            op,
                            Refusal::new(format!(
                                "{} record of user key {key:?}: no user with externalId or userName {key:?} at {}, and none was created from this run's users records",
                                op.origin.stream,
                                self.vendor
                            )),
                            None,
                        ),
                    }
                    continue;
                }
                Some(Err(refusal)) => {
                    acks.rejected(op, refusal.clone(), None);
                    continue;
                }
            };
            match wanted.iter_mut().find(|(i, _, _)| *i == id) {
                Some(entry) => {
                    entry.1 = op.item.action;
                    entry.2.push(op);
                }
                None => wanted.push((id, op.item.action, vec![op])),
            }
        }
        let mut changes: Vec<MemberChange> = Vec::new();
        let mut ops_of: HashMap<MemberChange, Vec<&Op>> = HashMap::new();
        for (id, action, ops) in wanted {
            let member = self
                .members
                .lock()
                .get(&group.id)
                .and_then(|known| known.as_ref().map(|c| c.contains(&id)));
            let change = match (action, member) {
                (Action::Upsert, Some(true)) => {
                    for op in ops {
                        acks.skipped(op, format!("already a member at {}", self.vendor));
                    }
                    continue;
                }
                (Action::Delete, Some(false)) => {
                    for op in ops {
                        acks.skipped(op, format!("not a member at {}", self.vendor));
                    }
                    continue;
                }
                (Action::Upsert, _) => MemberChange::Add(id),
                (Action::Delete, _) => MemberChange::Remove(id),
            };
            changes.push(change.clone());
            ops_of.insert(change, ops);
        }
        self.send_changes(&group.id, changes, &ops_of, acks).await
    }

    /// True when the server's answers come from a dry run (nothing was read).
    fn dry_run_lookups(&self) -> bool {
        self.dry_run.load(Ordering::Relaxed)
    }

    /// Sends membership changes in chunks (removals first), halving refused chunks.
    async fn send_changes(
        &self,
        group_id: &str,
        changes: Vec<MemberChange>,
        ops_of: &HashMap<MemberChange, Vec<&Op>>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let settle = |chunk: &[MemberChange], done: &dyn Fn(&Op)| {
            for change in chunk {
                for op in ops_of.get(change).into_iter().flatten() {
                    done(op);
                }
            }
        };
        if changes.is_empty() {
            return Ok(());
        }
        if !self.spc().await.patch {
            return self.put_members(group_id, &changes, ops_of, acks).await;
        }
        // A stack of chunks still to send: the next one is last.
        let mut pending: Vec<Vec<MemberChange>> = patch::chunks(&changes, self.chunk_size());
        pending.reverse();
        while let Some(chunk) = pending.pop() {
            let request = with_body(
                Method::Patch,
                format!("/Groups/{}", key_segment(group_id)),
                patch::body(&patch::member_operations(&chunk)),
            )
            // Adding a member twice changes nothing; removing one twice is a noTarget, read below.
            .idempotent();
            let payload = request.payload_hash();
            let err = match self.transport.send(request).await {
                Ok(_) => {
                    if let Some(Some(known)) = self.members.lock().get_mut(group_id) {
                        for change in &chunk {
                            match change {
                                MemberChange::Add(id) => known.insert(id.clone()),
                                MemberChange::Remove(id) => known.remove(id),
                            };
                        }
                    }
                    settle(&chunk, &|op| acks.accepted(op, payload));
                    continue;
                }
                Err(err) => fatal_or(self.vendor, err)?,
            };
            // What the run knows of this group may be stale: read it again next time.
            self.members.lock().remove(group_id);
            let size_problem = matches!(err.status, Some(400 | 413));
            if size_problem && let Some((first, second)) = patch::halves(&chunk) {
                let scim = scim_error(&err);
                let blames_a_value = scim.as_ref().is_some_and(|e| {
                    [
                        "noTarget",
                        "invalidValue",
                        "uniqueness",
                        "mutability",
                        "invalidPath",
                    ]
                    .iter()
                    .any(|t| e.is(t))
                });
                if err.status == Some(413) || !blames_a_value {
                    let half = first.len();
                    let before = self.chunk.fetch_min(half, Ordering::Relaxed);
                    if half < before {
                        tracing::info!(
                            "{}: a PATCH of {} membership changes was refused ({}); sending at most {half} per PATCH from now on",
                            self.vendor,
                            chunk.len(),
                            err.status.unwrap_or_default()
                        );
                    }
                }
                pending.push(second);
                pending.push(first);
                continue;
            }
            // One change left (or another failure): settle it.
            let no_target = scim_error(&err).is_some_and(|e| e.is("noTarget"));
            if chunk.len() == 1 && no_target && matches!(chunk[0], MemberChange::Remove(_)) {
                settle(&chunk, &|op| {
                    acks.skipped(op, format!("not a member at {} (noTarget)", self.vendor));
                });
                continue;
            }
            let refusal = if chunk.len() == 1 && size_problem {
                let what = match &chunk[0] {
                    MemberChange::Add(id) => format!("adding user {id} to"),
                    MemberChange::Remove(id) => format!("removing user {id} from"),
                };
                Refusal::vendor(
                    format!(
                        "{} refused {what} group {group_id}: {}",
                        self.vendor,
                        detail_of(&err)
                    ),
                    err.status,
                    err.body_excerpt.clone(),
                )
            } else {
                match verdict(self.vendor, err) {
                    WriteVerdict::Reject(refusal) => refusal,
                    WriteVerdict::Fatal(fatal) => return Err(fatal),
                }
            };
            settle(&chunk, &|op| acks.rejected(op, refusal.clone(), payload));
        }
        Ok(())
    }
}

impl ScimSink {
    /// Membership changes on a server without PATCH (its ServiceProviderConfig says
    /// `patch.supported: false`): read the group, apply every change to its `members`, and PUT
    /// the whole group back, with `If-Match` when the server has ETags and once more after a
    /// `412`. The changes succeed or fail together, as one request.
    async fn put_members(
        &self,
        group_id: &str,
        changes: &[MemberChange],
        ops_of: &HashMap<MemberChange, Vec<&Op>>,
        acks: &Acks,
    ) -> Result<(), SinkError> {
        let settle = |done: &dyn Fn(&Op)| {
            for change in changes {
                for op in ops_of.get(change).into_iter().flatten() {
                    done(op);
                }
            }
        };
        let etag = self.spc().await.etag;
        let path = format!("{}/{}", Res::Group.endpoint(), key_segment(group_id));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut resource = match self.read(Res::Group, group_id).await? {
                Ok(Some((resource, _))) => resource,
                Ok(None) => {
                    let refusal = Refusal::vendor(
                        format!("group {group_id} disappeared from {}", self.vendor),
                        Some(404),
                        None,
                    );
                    settle(&|op| acks.rejected(op, refusal.clone(), None));
                    return Ok(());
                }
                Err(err) => {
                    let refusal = match verdict(self.vendor, err) {
                        WriteVerdict::Reject(refusal) => refusal,
                        WriteVerdict::Fatal(fatal) => return Err(fatal),
                    };
                    settle(&|op| acks.rejected(op, refusal.clone(), None));
                    return Ok(());
                }
            };
            let mut members: Vec<Value> = get(&resource, "members")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for change in changes {
                match change {
                    MemberChange::Add(id) => {
                        if !members.iter().any(|m| m["value"].as_str() == Some(id)) {
                            members.push(json!({"value": id}));
                        }
                    }
                    MemberChange::Remove(id) => {
                        members.retain(|m| m["value"].as_str() != Some(id));
                    }
                }
            }
            let version = get(&resource, "meta")
                .and_then(Value::as_object)
                .and_then(|m| get(m, "version"))
                .and_then(Value::as_str)
                .map(str::to_string);
            // Attribute names are case-insensitive in SCIM: one `members` key goes back.
            resource.retain(|k, _| !k.eq_ignore_ascii_case("members"));
            resource.insert("members".into(), Value::Array(members));
            // Setting the same members again changes nothing (a repeat after a lost answer
            // meets a 412 at worst, which reads the group again).
            let mut request =
                with_body(Method::Put, path.clone(), Value::Object(resource)).idempotent();
            if etag && let Some(version) = version {
                request = request.header("if-match", version);
            }
            let payload = request.payload_hash();
            match self.transport.send(request).await {
                Ok(_) => {
                    if let Some(Some(known)) = self.members.lock().get_mut(group_id) {
                        for change in changes {
                            match change {
                                MemberChange::Add(id) => known.insert(id.clone()),
                                MemberChange::Remove(id) => known.remove(id),
                            };
                        }
                    }
                    settle(&|op| acks.accepted(op, payload));
                    return Ok(());
                }
                // Someone changed the group between our read and our write: read it again.
                Err(err) if err.status == Some(412) && attempts < 2 => continue,
                Err(err) => {
                    self.members.lock().remove(group_id);
                    let refusal = match verdict(self.vendor, err) {
                        WriteVerdict::Reject(refusal) => refusal,
                        WriteVerdict::Fatal(fatal) => return Err(fatal),
                    };
                    settle(&|op| acks.rejected(op, refusal.clone(), payload));
                    return Ok(());
                }
            }
        }
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
        if let Err(err) = self.transport.send(request).await {
            fatal_or(self.vendor, err)?;
        }
        self.spc().await;
        Ok(())
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn holds_memberships(&self) -> bool {
        true
    }
}
