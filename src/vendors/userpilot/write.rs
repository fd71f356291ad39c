//! The Userpilot writer (real-time HTTP API; `mode: bulk` is issue 6's bulk identify).
//!
//! | kind | upsert | delete |
//! | --- | --- | --- |
//! | users | `POST /v1/identify {"user_id", "metadata"}` | `DELETE /v1/users {"users": [ids]}`, batched |
//! | groups | `POST /v1/companies/identify {"company_id", "metadata"}` | `DELETE /v1/companies {"companies": [ids]}`, batched |
//! | memberships | `POST /v1/identify {"user_id", "company": {"id", "company_id"}}`, folded into the user's identify when both are in the run | rejected: no call removes a user from a company |
//! | events | `POST /v1/track {"user_id", "event_name", "metadata"}` | rejected |
//!
//! Values must be scalar and are sent as strings (the identify OpenAPI: "only string values are
//! supported"); `null` stays `null`. A 202 is accepted. The company in identify carries its key
//! as `id` (the seed and Userpilot's guide) and as `company_id` (the newer OpenAPI requires it).
//!
//! **Folding.** Identify takes the user's metadata and its company in one call, and identify is
//! what the 600/min limit counts. When a users record is written while a membership of that
//! user, later in the input, is already planned and not yet written, the user's identify carries
//! the membership's company; the membership is then accepted, without a request of its own, when
//! its turn comes (after the user's, since both are ordered by the user). It is settled only
//! then, so a STATE never covers it before the identify that carried it was accepted. Only the
//! first such membership is carried: Userpilot keeps one company per user, so a later one must
//! still come after it. If the vendor refuses the combined identify, the user is sent alone and
//! the membership goes on its own. Deletes are
//! scheduled by Userpilot (run daily) and limited to 1 request per 2 s, so they are gathered into
//! batches of up to [`DELETE_BATCH`] ids through their own rate bucket. Identify and track: 600
//! requests/min. A membership's own attributes have no place at Userpilot and are not sent.
//!
//! Track takes `user_id`, `event_name` and `metadata` only (the API document and its OpenAPI):
//! there is no time field, Userpilot records the time it receives the event. An event's
//! `timestamp` is not sent (a warning says so once; it used to go into `metadata.timestamp`,
//! where Userpilot stores it as an ordinary property); rename the column to keep it as one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::sink::{
    Acks, Action, Auth, BatchKey, BatchLimits, ClientSpec, Kind, Method, Op, OrderKey, PayloadHash,
    Plan, Refusal, Sink, SinkContext, SinkError, Ticket, Transport, WireBody, WireRequest,
    WireStats, scalars_only, send_and_settle, stringify,
};
use crate::vendors::patterns;

/// The vendor's name.
const VENDOR: &str = "userpilot";

/// Identify and track: 600 requests per minute (Userpilot docs).
pub const REQUESTS_PER_SECOND: f64 = 10.0;

/// Deletes: 1 request per 2 s (Userpilot docs).
pub const DELETE_REQUESTS_PER_SECOND: f64 = 0.5;

/// The rate bucket of deletes.
pub const DELETE_BUCKET: &str = "delete";

/// Ids per delete request: Userpilot documents no cap, so keep a request small enough to fail
/// cheaply and retry whole.
pub const DELETE_BATCH: usize = 1000;

/// How long a delete batch gathers ids: one delete slot (2 s).
pub const DELETE_LINGER: Duration = Duration::from_secs(2);

/// The Userpilot writer.
#[derive(Debug)]
pub struct UserpilotSink {
    transport: Arc<dyn Transport>,
    warned_membership_attributes: AtomicBool,
    warned_event_time: AtomicBool,
    /// Memberships planned and not yet written: user → (ticket → group).
    planned: parking_lot::Mutex<HashMap<String, BTreeMap<Ticket, String>>>,
    /// Memberships a user's identify carried and the vendor accepted: ticket → payload hash.
    carried: parking_lot::Mutex<HashMap<Ticket, Option<PayloadHash>>>,
    /// Memberships carried by a user's identify (for the report and tests).
    folded: std::sync::atomic::AtomicU64,
}

/// The registry's factory.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: super::config::Config = ctx.config.typed()?;
    Ok(Arc::new(UserpilotSink::new(
        ctx.transport(client_spec(&config))?,
    )))
}

/// What the Userpilot HTTP client needs: `Token` auth, `X-API-Version`, the identify/track
/// pace and the delete bucket (shared with the bulk writer, which sends through the same
/// client).
pub fn client_spec(config: &super::config::Config) -> ClientSpec {
    let mut spec = ClientSpec::new(Auth::Token(config.api_key.clone()));
    spec.headers.push(("X-API-Version", super::API_VERSION));
    spec.requests_per_second = Some(REQUESTS_PER_SECOND);
    spec.buckets
        .push((DELETE_BUCKET, DELETE_REQUESTS_PER_SECOND));
    spec
}

impl UserpilotSink {
    /// A writer over any transport (tests).
    pub fn new(transport: Arc<dyn Transport>) -> Self {
        UserpilotSink {
            transport,
            warned_membership_attributes: AtomicBool::new(false),
            warned_event_time: AtomicBool::new(false),
            planned: parking_lot::Mutex::new(HashMap::new()),
            carried: parking_lot::Mutex::new(HashMap::new()),
            folded: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Userpilot's rules and scheduling for one op, noting nothing (the bulk writer shares them;
    /// its memberships go into files, never into a user's identify).
    pub fn rules(&self, op: &Op) -> Result<Plan, Refusal> {
        let item = &op.item;
        match (item.kind, item.action) {
            (Kind::Users | Kind::Groups, Action::Upsert) => {
                scalars_only(VENDOR, "metadata values", item.property_entries())?;
                let id = item.id.as_deref().unwrap_or_default();
                Ok(Plan::single(vec![key(item.kind, id)]))
            }
            (Kind::Users | Kind::Groups, Action::Delete) => {
                let id = item.id.as_deref().unwrap_or_default();
                Ok(Plan::batched(
                    vec![key(item.kind, id)],
                    BatchKey::new(
                        format!("userpilot delete {}", item.kind),
                        BatchLimits {
                            max_items: DELETE_BATCH,
                            linger: DELETE_LINGER,
                        },
                    ),
                ))
            }
            (Kind::Memberships, Action::Upsert) => Ok(Plan::single(vec![
                OrderKey::user(item.user_id.as_deref().unwrap_or_default()),
                OrderKey::group(item.group_id.as_deref().unwrap_or_default()),
            ])),
            (Kind::Memberships, Action::Delete) => Err(Refusal::new(
                "userpilot has no call to remove a user from a company",
            )),
            (Kind::Events, _) => {
                scalars_only(VENDOR, "event metadata values", &item.attributes)?;
                Ok(Plan::single(vec![OrderKey::user(
                    item.user_id.as_deref().unwrap_or_default(),
                )]))
            }
            (Kind::Segments, _) => Err(Refusal::new("userpilot has no segments")),
        }
    }

    /// How many memberships went out inside their user's identify.
    pub fn folded(&self) -> u64 {
        self.folded.load(Ordering::Relaxed)
    }

    /// Claims the first membership of `user` planned after `after` and not yet written.
    fn claim_membership(&self, user: &str, after: Ticket) -> Option<(Ticket, String)> {
        let mut planned = self.planned.lock();
        let pending = planned.get_mut(user)?;
        let ticket = *pending.range(after..).find(|(t, _)| **t > after)?.0;
        let group = pending.remove(&ticket)?;
        if pending.is_empty() {
            planned.remove(user);
        }
        Some((ticket, group))
    }

    /// A user's identify, carrying a later membership's company when one is waiting.
    async fn write_user(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        let Some(request) = request(op) else {
            acks.rejected(
                op,
                Refusal::new("userpilot cannot write this users record"),
                None,
            );
            return Ok(());
        };
        let user = op.item.id.as_deref().unwrap_or_default();
        let Some((membership, group)) = self.claim_membership(user, op.ticket) else {
            send_and_settle(VENDOR, self.transport.as_ref(), op, request, acks).await?;
            return Ok(());
        };
        let folded = with_company(request.clone(), &group);
        let payload = folded.payload_hash();
        match self.transport.send(folded).await {
            Ok(_) => {
                acks.accepted(op, payload);
                self.carried.lock().insert(membership, payload);
                self.folded.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => {
                // The company may be what was refused: the user alone, the membership on its own.
                patterns::refusal(VENDOR, err)?;
                send_and_settle(VENDOR, self.transport.as_ref(), op, request, acks).await?;
            }
        }
        Ok(())
    }

    /// A membership: accepted if its user's identify carried it, else its own identify.
    async fn write_membership(&self, op: &Op, acks: &Acks) -> Result<(), SinkError> {
        if let Some(user) = op.item.user_id.as_deref() {
            let mut planned = self.planned.lock();
            if let Some(pending) = planned.get_mut(user) {
                pending.remove(&op.ticket);
                if pending.is_empty() {
                    planned.remove(user);
                }
            }
        }
        if let Some(payload) = self.carried.lock().remove(&op.ticket) {
            acks.accepted(op, payload);
            return Ok(());
        }
        match request(op) {
            Some(request) => {
                send_and_settle(VENDOR, self.transport.as_ref(), op, request, acks).await?;
            }
            None => acks.rejected(
                op,
                Refusal::new("userpilot cannot write this memberships record"),
                None,
            ),
        }
        Ok(())
    }

    async fn delete_batch(&self, kind: Kind, batch: &[Op], acks: &Acks) -> Result<(), SinkError> {
        let (path, field) = match kind {
            Kind::Users => ("/v1/users", "users"),
            _ => ("/v1/companies", "companies"),
        };
        let ids: Vec<Value> = batch
            .iter()
            .filter_map(|op| op.item.id.clone().map(Value::String))
            .collect();
        let request = WireRequest::new(Method::Delete, path)
            .json(json!({ field: ids }))
            .bucket(DELETE_BUCKET);
        match self.transport.send(request).await {
            Ok(_) => batch.iter().for_each(|op| acks.accepted(op, None)),
            // All or nothing: the batch is one request.
            Err(err) => patterns::reject_batch(VENDOR, batch, err, None, acks)?,
        }
        Ok(())
    }
}

/// The request of an upsert or event.
pub fn request(op: &Op) -> Option<WireRequest> {
    let item = &op.item;
    let body = match item.kind {
        Kind::Users => json!({
            "user_id": item.id.clone()?,
            "metadata": Value::Object(stringify(item.properties())),
        }),
        Kind::Groups => json!({
            "company_id": item.id.clone()?,
            "metadata": Value::Object(stringify(item.properties())),
        }),
        Kind::Memberships => json!({
            "user_id": item.user_id.clone()?,
            "company": company(item.group_id.as_deref()?),
        }),
        Kind::Events => {
            let mut body = Map::new();
            body.insert("user_id".into(), Value::String(item.user_id.clone()?));
            body.insert("event_name".into(), item.fields.get("name")?.clone());
            let mut metadata = stringify(
                item.attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            );
            if let Some(group) = &item.group_id {
                metadata.insert("company_id".into(), Value::String(group.clone()));
            }
            if !metadata.is_empty() {
                body.insert("metadata".into(), Value::Object(metadata));
            }
            Value::Object(body)
        }
        Kind::Segments => return None,
    };
    let path = match item.kind {
        Kind::Groups => "/v1/companies/identify",
        Kind::Events => "/v1/track",
        _ => "/v1/identify",
    };
    let request = WireRequest::new(Method::Post, path).json(body);
    Some(if item.kind == Kind::Events {
        request
    } else {
        request.idempotent()
    })
}

#[async_trait::async_trait]
impl Sink for UserpilotSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let plan = self.rules(op)?;
        let item = &op.item;
        if (item.kind, item.action) == (Kind::Memberships, Action::Upsert)
            && let (Some(user), Some(group)) = (&item.user_id, &item.group_id)
        {
            // A user's identify written before this membership may carry it.
            self.planned
                .lock()
                .entry(user.clone())
                .or_default()
                .insert(op.ticket, group.clone());
        }
        Ok(plan)
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        if let Some(first) = batch.first()
            && first.item.action == Action::Delete
        {
            return self.delete_batch(first.item.kind, &batch, acks).await;
        }
        for op in &batch {
            if op.item.kind == Kind::Memberships
                && !op.item.attributes.is_empty()
                && !self
                    .warned_membership_attributes
                    .swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    "userpilot has no place for a membership's own attributes; they are not sent"
                );
            }
            if op.item.kind == Kind::Events
                && op
                    .item
                    .fields
                    .get("timestamp")
                    .is_some_and(|t| !t.is_null())
                && !self.warned_event_time.swap(true, Ordering::Relaxed)
            {
                tracing::warn!(
                    "userpilot takes no time for an event (it records when it receives one), so the events' \"timestamp\" is not sent; rename the column to keep it as an event property"
                );
            }
            match (op.item.kind, op.item.action) {
                (Kind::Users, Action::Upsert) => {
                    self.write_user(op, acks).await?;
                    continue;
                }
                (Kind::Memberships, Action::Upsert) => {
                    self.write_membership(op, acks).await?;
                    continue;
                }
                _ => {}
            }
            match request(op) {
                Some(request) => {
                    send_and_settle(VENDOR, self.transport.as_ref(), op, request, acks).await?;
                }
                None => acks.rejected(
                    op,
                    Refusal::new(format!(
                        "userpilot cannot write this {} record",
                        op.item.kind
                    )),
                    None,
                ),
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        let request = WireRequest::new(Method::Get, "/v1/validate");
        patterns::probe(VENDOR, self.transport.as_ref(), request).await
    }

    fn stats(&self) -> WireStats {
        self.transport.stats()
    }

    fn nested_rule(&self) -> crate::sink::NestedRule {
        crate::sink::NestedRule::ScalarsOnly
    }
}

/// The company object of identify: the key as `id` (the API document, Userpilot's guide) and
/// as `company_id` (the newer OpenAPI requires it).
fn company(group: &str) -> Value {
    json!({"id": group, "company_id": group})
}

/// A user's identify with a company added.
fn with_company(mut request: WireRequest, group: &str) -> WireRequest {
    if let WireBody::Json(Value::Object(body)) = &mut request.body {
        body.insert("company".into(), company(group));
    }
    request
}

fn key(kind: Kind, id: &str) -> OrderKey {
    match kind {
        Kind::Groups => OrderKey::group(id),
        _ => OrderKey::user(id),
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
