//! The target's side of the vendor contract: what a vendor writer ([`Sink`]) is given, what it
//! must answer, and the one way it reaches the wire ([`Transport`]).
//!
//! The engine (`crate::load`) reads Singer messages, routes each record to a [`Kind`], maps it
//! to roster's record model ([`Item`]), validates it against its stream's SCHEMA, and hands it to
//! the sink as an [`Op`] carrying a [`Ticket`] (its place in the input). A sink:
//!
//! 1. **plans** each op ([`Sink::plan`], CPU only, no I/O): refuses what the vendor cannot take
//!    (a [`Refusal`] becomes a reject naming the reason), and says which keys order it and which
//!    batch it may share ([`Plan`]);
//! 2. **writes** batches ([`Sink::write`]): the engine calls it once every earlier op that shares a
//!    key has been written, so writes for one key reach the vendor in input order. Ops in a batch
//!    share a [`BatchKey`] and keep input order. The sink settles every op through [`Acks`]: at
//!    once (real-time upserts), or later (a bulk job that succeeds minutes afterwards, a group
//!    folded into the users it belongs to);
//! 3. **flushes** when the input ends ([`Sink::flush`]): upload what is spooled, wait for jobs,
//!    settle everything still pending;
//! 4. **checks** the connection once before a real run ([`Sink::check`]).
//!
//! The engine prints a STATE only once every op before it is settled (accepted, skipped or
//! rejected), so a sink that settles late holds the state back, and one that never settles an op
//! keeps the state from covering it (the run then fails loudly rather than skipping it). An
//! error from `write` or `flush` ([`SinkError`]) is fatal: the engine stops sending, waits for
//! what is in flight and writes the last safe state.
//!
//! A sink sends every request through the [`Transport`] its factory is given, so `--dry-run`
//! (which records requests and answers them with a synthetic success) and tests (fakes) exercise
//! the same writer code as a real run.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::config::{ConfigError, Secret, TargetSettings};
use crate::singer::Object;

use super::Resolved;

/// The kind of object a stream carries at the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// People.
    Users,
    /// Groups, companies, accounts, teams.
    Groups,
    /// A user in a group.
    Memberships,
    /// Something a user did.
    Events,
    /// A named list of user ids (Appcues segments).
    Segments,
}

impl Kind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [Kind; 5] = [
        Kind::Users,
        Kind::Groups,
        Kind::Memberships,
        Kind::Events,
        Kind::Segments,
    ];

    /// The kind's name as config and docs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Groups => "groups",
            Kind::Memberships => "memberships",
            Kind::Events => "events",
            Kind::Segments => "segments",
        }
    }

    /// A kind by its config name.
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which arrays and objects a vendor takes as property values; the engine applies the
/// `nested_values` setting to the others before the writer sees them.
#[derive(Debug, Clone, Copy)]
pub enum NestedRule {
    /// The writer places structured values itself (SCIM's multi-valued and extension
    /// attributes, Guru): `nested_values` does not apply.
    Taken,
    /// Only strings, numbers, booleans and null (Appcues, Userpilot, UserGuiding).
    ScalarsOnly,
    /// Scalars, and objects this function accepts (Userflow's change objects); no arrays.
    ScalarsAnd(fn(&Map<String, Value>) -> bool),
}

impl NestedRule {
    /// True when the vendor takes `value` as it is.
    pub fn takes(self, value: &Value) -> bool {
        match (self, value) {
            (NestedRule::Taken, _) => true,
            (_, Value::Array(_)) => false,
            (NestedRule::ScalarsAnd(ok), Value::Object(o)) => ok(o),
            (_, Value::Object(_)) => false,
            _ => true,
        }
    }
}

/// What a record asks of the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Create or update (merge: absent fields are kept, `null` clears).
    Upsert,
    /// `_sdc_deleted_at` was set: delete, deactivate or remove the membership.
    Delete,
}

/// A record in roster's record model (CONTRACT.md), after routing and field mapping and before
/// any vendor shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// What it is.
    pub kind: Kind,
    /// Upsert or delete.
    pub action: Action,
    /// The key of a user or group; the segment's name for segments.
    pub id: Option<String>,
    /// Memberships, events and segments: the user's key.
    pub user_id: Option<String>,
    /// Memberships: the group's key; events: the group it happened in, if any.
    pub group_id: Option<String>,
    /// The standard fields that were given, by their model names: users `email`, `name`,
    /// `first_name`, `last_name`, `external_id`, `active`, `status`, `created_at`; groups `name`,
    /// `external_id`, `created_at`; events `name`, `timestamp`. `null` is kept (it clears).
    pub fields: Map<String, Value>,
    /// Custom attributes: every non-reserved top-level field of a flat row, then the record's
    /// own `attributes` object (which wins on a clash). `null` is kept (it clears).
    pub attributes: Map<String, Value>,
}

impl Item {
    /// The standard fields the vendors that take free-form properties store as properties of
    /// the same name (`email`, `name`, `first_name`, `last_name`, `created_at`; CONTRACT.md),
    /// followed by `external_id`, `active` and `status` when given, then the attributes: the
    /// property map Userflow, Appcues, Userpilot and UserGuiding receive.
    pub fn properties(&self) -> Map<String, Value> {
        let mut out = Map::with_capacity(self.fields.len() + self.attributes.len());
        for (k, v) in &self.fields {
            out.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.attributes {
            out.insert(k.clone(), v.clone());
        }
        out
    }

    /// The entries of [`Item::properties`] without copying them (an attribute wins over a
    /// standard field of the same name), for the writers' checks: building the map only to
    /// check it cost a clone of every record.
    pub fn property_entries(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.fields
            .iter()
            .filter(|(k, _)| !self.attributes.contains_key(k.as_str()))
            .chain(&self.attributes)
    }

    /// The user key of a membership, event or segment, or the key of a user.
    pub fn user_key(&self) -> Option<&str> {
        match self.kind {
            Kind::Users => self.id.as_deref(),
            _ => self.user_id.as_deref(),
        }
    }

    /// The group key of a membership or event, or the key of a group.
    pub fn group_key(&self) -> Option<&str> {
        match self.kind {
            Kind::Groups => self.id.as_deref(),
            _ => self.group_id.as_deref(),
        }
    }
}

/// A record's place in the input: the engine settles tickets in any order and prints a STATE
/// once every ticket before it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Ticket(pub u64);

/// Where a record came from, kept so a reject can quote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    /// The input stream's name.
    pub stream: Arc<str>,
    /// The 1-based input line.
    pub line: u64,
    /// The record exactly as it came in.
    pub record: Object,
}

/// One record handed to a sink.
#[derive(Debug, Clone)]
pub struct Op {
    /// Its place in the input.
    pub ticket: Ticket,
    /// The record in roster's model.
    pub item: Item,
    /// The original record, for rejects.
    pub origin: Arc<Origin>,
}

/// A key that orders writes: two ops sharing one are written in input order. Built from a key
/// space (`"user"`, `"group"`, …) and the key; a hash, so an unlucky collision only serialises
/// two writes that could have run together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrderKey(pub u64);

impl OrderKey {
    /// The order key of `key` in `space`.
    pub fn new(space: &str, key: &str) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        space.hash(&mut hasher);
        key.hash(&mut hasher);
        OrderKey(hasher.finish())
    }

    /// A user's key.
    pub fn user(key: &str) -> Self {
        Self::new("user", key)
    }

    /// A group's key.
    pub fn group(key: &str) -> Self {
        Self::new("group", key)
    }
}

/// How long a batch may wait to fill and how big it may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// At most this many ops per batch.
    pub max_items: usize,
    /// A batch that is not full is written after this long.
    pub linger: Duration,
}

/// Ops with equal batch keys may be written together in one [`Sink::write`] call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    /// The partition, e.g. `"userpilot delete users"` or `"appcues group g1 members"`.
    pub partition: String,
    /// Its limits (the first op that opens a batch sets them).
    pub limits: BatchLimitsKey,
}

/// [`BatchLimits`] as part of a hashable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchLimitsKey {
    /// At most this many ops per batch.
    pub max_items: usize,
    /// Linger in milliseconds.
    pub linger_ms: u64,
}

impl BatchKey {
    /// A partition with its limits.
    pub fn new(partition: impl Into<String>, limits: BatchLimits) -> Self {
        BatchKey {
            partition: partition.into(),
            limits: BatchLimitsKey {
                max_items: limits.max_items.max(1),
                linger_ms: u64::try_from(limits.linger.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }

    /// The limits.
    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_items: self.limits.max_items,
            linger: Duration::from_millis(self.limits.linger_ms),
        }
    }
}

/// How the engine schedules one op.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Writes that share any of these keys keep input order.
    pub keys: Vec<OrderKey>,
    /// `None`: written alone. `Some`: may share a batch with other ops of the same key.
    pub batch: Option<BatchKey>,
}

impl Plan {
    /// Written alone, ordered by these keys.
    pub fn single(keys: Vec<OrderKey>) -> Self {
        Plan { keys, batch: None }
    }

    /// Batched with others of the same batch key, ordered by these keys.
    pub fn batched(keys: Vec<OrderKey>, batch: BatchKey) -> Self {
        Plan {
            keys,
            batch: Some(batch),
        }
    }
}

/// Why a record cannot be (or was not) written. Becomes a reject-file entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// What is wrong, naming the field or the vendor's answer.
    pub reason: String,
    /// The vendor's HTTP status, when the vendor refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_status: Option<u16>,
    /// An excerpt of the vendor's answer, when the vendor refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_body: Option<String>,
    /// True when the vendor kept failing (retry budget spent) rather than refusing: many in a
    /// row mean the vendor is down, and the engine stops the run.
    #[serde(skip)]
    pub transient: bool,
}

impl Refusal {
    /// A refusal by roster itself (validation, vendor rules known in advance).
    pub fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            vendor_status: None,
            vendor_body: None,
            transient: false,
        }
    }

    /// A refusal by the vendor.
    pub fn vendor(reason: impl Into<String>, status: Option<u16>, body: Option<String>) -> Self {
        Refusal {
            reason: reason.into(),
            vendor_status: status,
            vendor_body: body,
            transient: false,
        }
    }

    /// A record that could not be written because a request it needed (a lookup, say) failed:
    /// the vendor's status and body, and transient when the retry budget ran out, so a vendor
    /// that fails everything still counts as unreachable.
    pub fn failed(reason: impl Into<String>, err: &SendError) -> Self {
        Refusal {
            transient: err.failure == SendFailure::Exhausted,
            ..Refusal::vendor(reason, err.status, err.body_excerpt.clone())
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(status) = self.vendor_status {
            write!(f, " (vendor answered {status}")?;
            if let Some(body) = self.vendor_body.as_deref().filter(|b| !b.is_empty()) {
                write!(f, ": {body}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A stable 128-bit hash of the payload a sink sent for a record (xxh3 of the body's bytes), for
/// a future sync ledger: "was this exact payload accepted before?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadHash(pub u128);

/// The largest serialisation buffer [`PayloadHash::of_json`] keeps for the next body (bulk and
/// SCIM bodies can be far larger than a record's).
const PAYLOAD_BUFFER_KEEP: usize = 64 * 1024;

impl PayloadHash {
    /// The hash of some bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        PayloadHash(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// The hash of a JSON value as serialised (into a per-thread buffer that is reused: one
    /// fresh, regrown `Vec` per record was a measurable share of a dry run, BENCHMARKS.md).
    pub fn of_json(value: &Value) -> Self {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            let hash = match serde_json::to_writer(&mut *buffer, value) {
                Ok(()) => Self::of_bytes(&buffer),
                Err(_) => PayloadHash(0),
            };
            // A rare huge body does not pin its memory to the thread.
            if buffer.capacity() > PAYLOAD_BUFFER_KEEP {
                *buffer = Vec::new();
            }
            hash
        })
    }
}

impl fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for PayloadHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// How a record ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The vendor accepted it.
    Accepted,
    /// Nothing needed sending (already so at the vendor, or nothing roster can send for it):
    /// the reason says which.
    Skipped(String),
    /// It was not written: the refusal says why.
    Rejected(Refusal),
}

/// One settled record, as the engine receives it.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Which record.
    pub ticket: Ticket,
    /// How it ended.
    pub outcome: Outcome,
    /// The hash of the payload sent for it, when something was sent.
    pub payload: Option<PayloadHash>,
    /// The original record: needed for a reject (the engine keeps nothing once it hands an op
    /// over); optional otherwise.
    pub origin: Option<Arc<Origin>>,
}

/// Where a sink settles its ops. Cheap to clone; a sink that settles later keeps a clone.
#[derive(Debug, Clone)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Settlement>,
}

impl Acks {
    /// Acks that deliver to `tx` (the engine; tests).
    pub fn new(tx: mpsc::UnboundedSender<Settlement>) -> Self {
        Acks { tx }
    }

    /// Acks and the receiving end, for tests and for sinks that stage settlements.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Settlement>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Acks { tx }, rx)
    }

    /// Settles one record. A closed engine (the run is stopping) is not an error.
    pub fn settle(&self, settlement: Settlement) {
        let _ = self.tx.send(settlement);
    }

    /// The vendor accepted `op`; `payload` is the hash of what was sent for it.
    pub fn accepted(&self, op: &Op, payload: Option<PayloadHash>) {
        self.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Accepted,
            payload,
            origin: None,
        });
    }

    /// Nothing needed sending for `op`.
    pub fn skipped(&self, op: &Op, reason: impl Into<String>) {
        self.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Skipped(reason.into()),
            payload: None,
            origin: None,
        });
    }

    /// `op` was not written.
    pub fn rejected(&self, op: &Op, refusal: Refusal, payload: Option<PayloadHash>) {
        self.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Rejected(refusal),
            payload,
            origin: Some(op.origin.clone()),
        });
    }
}

/// A failure that ends the run: the engine stops sending, waits for what is in flight, writes
/// the last safe state and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The vendor refused the credentials (401/403).
    #[error("{vendor} refused the credentials ({}): {detail}", crate::vendors::credentials_hint(.vendor))]
    Credentials {
        /// The vendor.
        vendor: &'static str,
        /// The request and the answer.
        detail: String,
    },
    /// The vendor could not be reached, or kept failing, past the retry budget.
    #[error("{vendor} is unreachable: {detail}")]
    Unreachable {
        /// The vendor.
        vendor: &'static str,
        /// The request and the last failure.
        detail: String,
    },
    /// The config cannot drive this sink.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Local I/O (spool files) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else the vendor did that makes going on pointless.
    #[error("{vendor}: {detail}")]
    Vendor {
        /// The vendor.
        vendor: &'static str,
        /// What happened.
        detail: String,
    },
}

/// A vendor writer. See the module docs for the contract.
#[async_trait::async_trait]
pub trait Sink: Send + Sync + 'static {
    /// The vendor's `vendor` name.
    fn vendor(&self) -> &'static str;

    /// Vendor rules and scheduling for one op, CPU only: refuse what this vendor cannot take
    /// (nested values where only scalars go, a delete the vendor has no call for, a missing id)
    /// and say which keys order it and which batch it may share.
    fn plan(&self, op: &Op) -> Result<Plan, Refusal>;

    /// Writes one batch: a single op, or ops sharing a [`BatchKey`] in input order. Every
    /// earlier op sharing an [`OrderKey`] with any of them has been written. Settle every op
    /// through `acks`, now or later. `Err` is fatal; ops not settled then are simply not covered
    /// by any STATE.
    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError>;

    /// The input ended: finish deferred work (upload spooled files, wait for jobs, send what
    /// was held back) and settle every op still pending before returning.
    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        let _ = acks;
        Ok(())
    }

    /// One cheap authenticated call before a real run, so bad credentials stop the run before
    /// any input is read. Vendors without a read endpoint answer `Ok` without a call.
    async fn check(&self) -> Result<(), SinkError>;

    /// The wire counters of the sink's transport, for the run report.
    fn stats(&self) -> WireStats;

    /// True when a membership can be written only once its group and user exist at the vendor
    /// (SCIM, Guru): the engine then holds a membership whose group or user has not come in
    /// the run yet until both have, or until the input ends (`crate::load::hold`).
    fn holds_memberships(&self) -> bool {
        false
    }

    /// Which arrays and objects this vendor takes as property values (the engine applies
    /// `nested_values` to the rest).
    fn nested_rule(&self) -> NestedRule {
        NestedRule::Taken
    }
}

/// What a sink factory is given.
#[derive(Debug)]
pub struct SinkContext<'a> {
    /// The checked config.
    pub config: &'a Resolved,
    /// The target's own keys.
    pub target: &'a TargetSettings,
    /// Set for `--dry-run` and tests: the transport every request must go through instead of
    /// the vendor's HTTP client.
    pub transport: Option<Arc<dyn Transport>>,
    /// Set by `target-roster --test`: receives the HTTP transport the factory builds, so the
    /// connection test sends its one request with the writer's own auth and headers.
    pub built: Option<&'a BuiltTransport>,
}

/// Where [`SinkContext::transport`] leaves the HTTP transport it built (see `built`).
pub type BuiltTransport = parking_lot::Mutex<Option<Arc<dyn Transport>>>;

/// How a vendor's requests authenticate.
#[derive(Debug, Clone)]
pub enum WireAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// The user (an email, an API key).
        username: String,
        /// The secret.
        password: Secret,
    },
    /// `Authorization: Token <key>`.
    Token(Secret),
}

/// What a writer asks of its HTTP client: auth, fixed headers and the vendor's documented
/// limits. The common config keys (`max_concurrency`, `requests_per_second`, `timeout_seconds`,
/// `max_retries`) are applied on top.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Auth.
    pub auth: WireAuth,
    /// Fixed headers on every request.
    pub headers: Vec<(&'static str, &'static str)>,
    /// The vendor's documented rate, used when `requests_per_second` is not configured.
    pub requests_per_second: Option<f64>,
    /// The least the whole client pauses after a 429 without `Retry-After`.
    pub default_429_wait: Option<Duration>,
    /// Named buckets with their own rate (requests per second).
    pub buckets: Vec<(&'static str, f64)>,
    /// The vendor documents JSON answers to its writes: a write answered 2xx (but 204) with a
    /// body that is not JSON (an HTML page, a body cut short) is not counted as applied.
    pub json_answers: bool,
}

impl ClientSpec {
    /// A spec with this auth and nothing else.
    pub fn new(auth: WireAuth) -> Self {
        ClientSpec {
            auth,
            headers: Vec::new(),
            requests_per_second: None,
            default_429_wait: None,
            buckets: Vec::new(),
            json_answers: false,
        }
    }
}

impl SinkContext<'_> {
    /// The transport a writer must send through: the given one (dry run, tests), else the
    /// vendor's HTTP client built from `spec` and the common config keys.
    pub fn transport(&self, spec: ClientSpec) -> Result<Arc<dyn Transport>, SinkError> {
        match &self.transport {
            Some(transport) => Ok(transport.clone()),
            None => {
                let transport = http_transport(self.config, spec)?;
                if let Some(built) = self.built {
                    *built.lock() = Some(transport.clone());
                }
                Ok(transport)
            }
        }
    }
}

/// Builds a vendor's sink (the registry's `sink` field).
pub type SinkFactory = fn(&SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError>;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// GET
    #[serde(rename = "GET")]
    Get,
    /// POST
    #[serde(rename = "POST")]
    Post,
    /// PUT
    #[serde(rename = "PUT")]
    Put,
    /// PATCH
    #[serde(rename = "PATCH")]
    Patch,
    /// DELETE
    #[serde(rename = "DELETE")]
    Delete,
}

impl Method {
    /// The method as HTTP writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request body.
#[derive(Debug, Clone, PartialEq)]
pub enum WireBody {
    /// No body.
    None,
    /// A JSON body.
    Json(Value),
    /// Raw bytes (NDJSON, CSV) with their content type.
    Bytes {
        /// `Content-Type`.
        content_type: String,
        /// The body.
        bytes: Bytes,
    },
    /// A file streamed as the body (bulk uploads spooled to disk).
    File {
        /// `Content-Type`.
        content_type: String,
        /// The file.
        path: PathBuf,
    },
}

/// One request, relative to the vendor's base URL.
#[derive(Debug, Clone, PartialEq)]
pub struct WireRequest {
    /// The method.
    pub method: Method,
    /// The path after the base URL (with its leading `/`), query included, each part already
    /// percent-encoded.
    pub path: String,
    /// The body.
    pub body: WireBody,
    /// False for calls that must not be repeated after an ambiguous failure (events, invites,
    /// SCIM POST): the HTTP engine then retries only answers that prove nothing happened.
    pub idempotent: bool,
    /// A named rate bucket of the vendor's client (e.g. Userpilot's delete: 1 request per 2 s).
    pub bucket: Option<&'static str>,
    /// Headers of this request only (SCIM's `Content-Type: application/scim+json`, `If-Match`),
    /// over the client's fixed ones.
    pub headers: Vec<(&'static str, String)>,
    /// Fields the vendor documents in a successful answer (UserGuiding's `success`): an answer
    /// without them is not counted as applied. Checked for vendors with
    /// [`ClientSpec::json_answers`].
    pub expect_fields: &'static [&'static str],
}

impl WireRequest {
    /// A request without a body. GET, PUT and DELETE count as idempotent, POST and PATCH do
    /// not (RFC 9110) until marked with [`WireRequest::idempotent`].
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        WireRequest {
            method,
            path: path.into(),
            body: WireBody::None,
            idempotent: !matches!(method, Method::Post | Method::Patch),
            bucket: None,
            headers: Vec::new(),
            expect_fields: &[],
        }
    }

    /// The fields a successful answer must hold (see [`WireRequest::expect_fields`]).
    pub fn expect_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.expect_fields = fields;
        self
    }

    /// Adds a header to this request.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Marks a POST or PATCH as safe to repeat (an upsert by key, a merge of properties).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// With a JSON body.
    pub fn json(mut self, body: Value) -> Self {
        self.body = WireBody::Json(body);
        self
    }

    /// Marks the request as unsafe to repeat blindly.
    pub fn not_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// Sends it through a named rate bucket.
    pub fn bucket(mut self, name: &'static str) -> Self {
        self.bucket = Some(name);
        self
    }

    /// The payload hash of the body.
    pub fn payload_hash(&self) -> Option<PayloadHash> {
        match &self.body {
            WireBody::None => None,
            WireBody::Json(v) => Some(PayloadHash::of_json(v)),
            WireBody::Bytes { bytes, .. } => Some(PayloadHash::of_bytes(bytes)),
            WireBody::File { path, .. } => {
                Some(PayloadHash::of_bytes(path.to_string_lossy().as_bytes()))
            }
        }
    }
}

/// A successful answer (any status the HTTP engine hands back as success: 2xx).
#[derive(Debug, Clone, PartialEq)]
pub struct WireResponse {
    /// The status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
    /// True when no request was sent (`--dry-run`): the body is empty and a writer that reads
    /// answers must assume the case that sends the most.
    pub dry_run: bool,
}

impl WireResponse {
    /// A `200` with a JSON body (`null`: empty).
    pub fn ok(body: Value) -> Self {
        WireResponse {
            status: 200,
            body: if body.is_null() {
                Bytes::new()
            } else {
                Bytes::from(body.to_string())
            },
            dry_run: false,
        }
    }

    /// The body as JSON (`Value::Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// How a request failed, as far as a writer needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendFailure {
    /// 401 or 403: the credentials are wrong or lack a permission. Fatal.
    Credentials,
    /// A 4xx (other than 401/403/408/429): the vendor refused this request. Reject the record.
    Refused,
    /// A retryable answer (429, 408, 5xx) until the retry budget ran out, or a non-idempotent
    /// request that failed ambiguously and was not repeated. Reject the record with the last
    /// answer; many in a row mean the vendor is down.
    Exhausted,
    /// No answer at all (connect failure, timeouts, resets) past the retry budget. Fatal.
    Unreachable,
    /// The request could not be built or encoded (a bug or a local problem). Reject the record.
    Local,
}

/// A failed request.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// The class of failure.
    pub failure: SendFailure,
    /// The last HTTP status, if one came back.
    pub status: Option<u16>,
    /// An excerpt of the last answer's body (credentials scrubbed).
    pub body_excerpt: Option<String>,
    /// One line naming the vendor, method, URL (no credentials) and what happened.
    pub message: String,
    /// True when the vendor may have acted on the request although it failed.
    pub maybe_processed: bool,
}

/// Counters a transport keeps for the run report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WireStats {
    /// Requests (`send` calls).
    pub requests: u64,
    /// Attempts after the first, over all requests.
    pub retries: u64,
    /// 429 answers.
    pub status_429: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Attempts that got no answer (connect failures, resets, timeouts).
    pub transport_errors: u64,
    /// Seconds spent waiting on rate limits: the client-side limit plus pauses after 429s
    /// (`Retry-After`, UserGuiding's block).
    pub rate_limit_wait_seconds: f64,
    /// Seconds spent in backoff between attempts.
    pub backoff_wait_seconds: f64,
}

/// The one way a sink reaches the vendor: the vendor's HTTP client in a real run, a recorder in
/// `--dry-run`, a fake in tests.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends one request (retries, rate limits and backoff happen inside).
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError>;

    /// The counters so far.
    fn stats(&self) -> WireStats;
}

/// What a writer does with a failed request: settle the op or stop the run.
#[derive(Debug)]
pub enum Verdict {
    /// Reject the record with this refusal; the run goes on.
    Reject(Refusal),
    /// Stop the run.
    Fatal(SinkError),
}

/// The standard reading of a failed request for a record (DESIGN.md, "Reliability model"):
/// refused credentials and an unreachable vendor are fatal; a refusal, a spent retry budget and
/// a local failure reject the record with the vendor's status and body excerpt.
pub fn verdict(vendor: &'static str, err: SendError) -> Verdict {
    match err.failure {
        SendFailure::Credentials => Verdict::Fatal(SinkError::Credentials {
            vendor,
            detail: err.message,
        }),
        SendFailure::Unreachable => Verdict::Fatal(SinkError::Unreachable {
            vendor,
            detail: err.message,
        }),
        SendFailure::Refused | SendFailure::Local => Verdict::Reject(Refusal::vendor(
            format!("{vendor} refused the request: {}", err.message),
            err.status,
            err.body_excerpt,
        )),
        SendFailure::Exhausted => {
            let reason = if err.status.is_some_and(|s| (200..300).contains(&s)) {
                format!(
                    "{vendor} did not confirm the request in the shape it documents (replay this record if it is missing): {}",
                    err.message
                )
            } else if err.maybe_processed && err.status.is_none_or(|s| s >= 500) {
                format!(
                    "{vendor} did not confirm the request and it was not repeated, since repeating it could duplicate it (replay this record if it is missing): {}",
                    err.message
                )
            } else {
                format!(
                    "{vendor} kept failing past the retry budget: {}",
                    err.message
                )
            };
            let mut refusal = Refusal::vendor(reason, err.status, err.body_excerpt);
            refusal.transient = true;
            Verdict::Reject(refusal)
        }
    }
}

/// A failed request a writer handles itself (a lookup, a 404, a 409): refused credentials and
/// an unreachable vendor stay fatal, anything else comes back to the writer.
pub fn fatal_or(vendor: &'static str, err: SendError) -> Result<SendError, SinkError> {
    match err.failure {
        SendFailure::Credentials => Err(SinkError::Credentials {
            vendor,
            detail: err.message,
        }),
        SendFailure::Unreachable => Err(SinkError::Unreachable {
            vendor,
            detail: err.message,
        }),
        _ => Ok(err),
    }
}

/// Sends one request for `op` and settles it: accepted (with the body's payload hash) on
/// success, rejected when the vendor refused it or the retry budget ran out. `Ok(Some)` holds
/// the answer of an accepted request; `Err` is fatal (refused credentials, vendor unreachable).
pub async fn send_and_settle(
    vendor: &'static str,
    transport: &dyn Transport,
    op: &Op,
    request: WireRequest,
    acks: &Acks,
) -> Result<Option<WireResponse>, SinkError> {
    let payload = request.payload_hash();
    match transport.send(request).await {
        Ok(response) => {
            acks.accepted(op, payload);
            Ok(Some(response))
        }
        Err(err) => match verdict(vendor, err) {
            Verdict::Reject(refusal) => {
                acks.rejected(op, refusal, payload);
                Ok(None)
            }
            Verdict::Fatal(fatal) => Err(fatal),
        },
    }
}

/// Vendors that take only scalar values (string, number, boolean, null): the first value that
/// is an array or an object, named.
pub fn scalars_only<'a>(
    vendor: &str,
    what: &str,
    values: impl IntoIterator<Item = (&'a String, &'a Value)>,
) -> Result<(), Refusal> {
    match values
        .into_iter()
        .find(|(_, v)| v.is_array() || v.is_object())
    {
        None => Ok(()),
        Some((key, value)) => Err(Refusal::new(format!(
            "{vendor} takes only strings, numbers, booleans and null as {what}, but {key:?} is {}",
            if value.is_array() {
                "an array"
            } else {
                "an object"
            }
        ))),
    }
}

/// Every value as a string (numbers and booleans in their JSON text); `null` stays `null`.
pub fn stringify(values: Map<String, Value>) -> Map<String, Value> {
    values
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(_) | Value::Null => v,
                other => Value::String(other.to_string()),
            };
            (k, v)
        })
        .collect()
}

/// A JSON object from `(key, value)` pairs.
pub fn object<I, K>(pairs: I) -> Value
where
    I: IntoIterator<Item = (K, Value)>,
    K: Into<String>,
{
    Value::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
}

/// Percent-encodes one path segment (ids in paths may hold `/`, `@`, spaces).
pub fn segment(raw: &str) -> String {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    /// Everything but RFC 3986 unreserved characters.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    utf8_percent_encode(raw, SEGMENT).to_string()
}

/// Checks a key that a writer puts into a URL path as one segment ([`segment`]): `Err` says
/// why it cannot be one, naming `what` (`user key`, `group id`, ...).
///
/// Percent-encoding keeps `/`, `?`, `#` and `%` inside the segment, but not a key that *is* a
/// dot segment: URL parsers (the `url` crate that reqwest uses, and servers) resolve `.` and `..`
/// as "this" and "the parent" directory, so `/users/..` would become `/` (and `%2e%2e` is
/// resolved the same way by WHATWG parsers). An empty key would address the collection itself
/// (`DELETE /users/`). So these are refused before any request, with a reason.
pub fn path_key(what: &str, raw: &str) -> Result<(), Refusal> {
    let shown = excerpt(raw);
    if raw.is_empty() {
        return Err(Refusal::new(format!(
            "{what} is empty, and it goes into a url path"
        )));
    }
    if crate::http::is_dot_segment(raw) {
        return Err(Refusal::new(format!(
            "{what} {shown:?} is a dot segment, which a url path resolves as a directory step (it would address another resource), so it is not sent"
        )));
    }
    if let Some(c) = raw.chars().find(|c| c.is_control()) {
        return Err(Refusal::new(format!(
            "{what} {shown:?} contains the control character {c:?}, which no vendor key holds"
        )));
    }
    Ok(())
}

/// A value as a reason quotes it: at most 80 characters (a hostile key can be megabytes).
fn excerpt(raw: &str) -> String {
    const MAX: usize = 80;
    if raw.chars().count() > MAX {
        format!("{}…", raw.chars().take(MAX).collect::<String>())
    } else {
        raw.to_string()
    }
}

/// [`path_key`] for every key an item has (`id`, `user_id`, `group_id`), for a writer that puts
/// them into paths.
pub fn path_keys(item: &Item) -> Result<(), Refusal> {
    for (field, key) in [
        ("id", &item.id),
        ("user_id", &item.user_id),
        ("group_id", &item.group_id),
    ] {
        if let Some(key) = key {
            path_key(&format!("key {field}"), key)?;
        }
    }
    Ok(())
}

/// The characters that separate or wrap addresses in an email header or a list (RFC 5322
/// specials other than `@` and `.`), which one address in a list or a path never holds.
const EMAIL_SEPARATORS: &[char] = &[',', ';', '<', '>', '"', '(', ')', '[', ']', '\\', ':'];

/// The longest address RFC 5321 lets through (a 254-character path).
const MAX_EMAIL_LEN: usize = 254;

/// One email address, trimmed, for a writer to put into a list (Guru's comma-separated invite)
/// or a path: exactly one `@` with text on both sides, and no separator (`,` `;` `<` `>` `"`
/// `(` `)` `[` `]` `\` `:`), whitespace or control character. `Err` says what is wrong, quoting
/// the value (cut short), so the record is rejected before any request: a comma in an email must
/// never invite a second person.
pub fn single_email(raw: &str) -> Result<&str, String> {
    let email = raw.trim();
    let shown = excerpt(email);
    if email.is_empty() {
        return Err("is empty".into());
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(format!(
            "{shown:?} is not one email address: it is longer than {MAX_EMAIL_LEN} characters"
        ));
    }
    if let Some(c) = email
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || EMAIL_SEPARATORS.contains(c))
    {
        return Err(format!(
            "{shown:?} is not one email address: it contains {c:?}, which separates addresses in a list"
        ));
    }
    match email.split_once('@') {
        Some((local, domain))
            if !local.is_empty() && !domain.is_empty() && !domain.contains('@') =>
        {
            Ok(email)
        }
        _ => Err(format!(
            "{shown:?} is not one email address: it needs exactly one @ with text on both sides"
        )),
    }
}

/// The vendor's HTTP client as a [`Transport`]: `spec` plus the common keys
/// (`requests_per_second` overrides the vendor's documented rate, `0` turns pacing off;
/// `max_concurrency`, `timeout_seconds`, `max_retries`).
fn http_transport(config: &Resolved, spec: ClientSpec) -> Result<Arc<dyn Transport>, SinkError> {
    use crate::http::{Auth, ClientConfig, HeaderName, HeaderValue, HttpClient, Rate};
    let vendor = config.spec.name;
    let auth = match spec.auth {
        WireAuth::Bearer(token) => Auth::Bearer(token),
        WireAuth::Token(token) => Auth::Token(token),
        WireAuth::Basic { username, password } => Auth::Basic { username, password },
    };
    let mut cfg = ClientConfig::new(vendor, config.base_url()?, auth);
    for (name, value) in spec.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|err| SinkError::Vendor {
            vendor,
            detail: format!("invalid header name {name:?}: {err}"),
        })?;
        cfg = cfg.header(name, HeaderValue::from_static(value));
    }
    let common = &config.common;
    cfg.requests_per_second = match common.requests_per_second {
        Some(rate) if rate > 0.0 => Some(rate),
        Some(_) => None,
        None => spec.requests_per_second,
    };
    if let Some(max) = common.max_concurrency {
        cfg.max_concurrency = max.max(1);
    }
    if let Some(secs) = common.timeout_seconds.filter(|s| *s > 0.0) {
        cfg.timeout = Duration::from_secs_f64(secs);
    }
    if let Some(retries) = common.max_retries {
        cfg.max_retries = retries;
    }
    cfg.default_429_wait = spec.default_429_wait;
    for (name, per_second) in spec.buckets {
        cfg = cfg.bucket(name, Some(Rate::per_second(per_second)));
    }
    let client = HttpClient::new(cfg).map_err(|err| SinkError::Vendor {
        vendor,
        detail: err.to_string(),
    })?;
    Ok(Arc::new(HttpTransport {
        client,
        json_answers: spec.json_answers,
    }))
}

/// [`crate::http::HttpClient`] as a [`Transport`].
#[derive(Debug)]
pub struct HttpTransport {
    client: crate::http::HttpClient,
    json_answers: bool,
}

/// Why a write's successful answer is not the shape the vendor documents (`None`: it is): a
/// JSON content type and a body that parses, holding `fields`. 204 and an empty body with no
/// fields expected pass (deletes and some upserts answer with nothing).
fn unconfirmed_answer(response: &crate::http::Response, fields: &[&str]) -> Option<String> {
    if response.status.as_u16() == 204 || (response.body.is_empty() && fields.is_empty()) {
        return None;
    }
    let content_type = response.header("content-type").unwrap_or("");
    if !content_type.to_ascii_lowercase().contains("json") {
        return Some(format!(
            "the answer is {} instead of JSON",
            if content_type.is_empty() {
                "without a content type".to_string()
            } else {
                format!("{content_type:?}")
            }
        ));
    }
    let body: Value = match serde_json::from_slice(&response.body) {
        Ok(body) => body,
        Err(err) if err.is_eof() => {
            return Some(format!(
                "the JSON answer is cut short after {} bytes",
                response.body.len()
            ));
        }
        Err(err) => return Some(format!("the answer is not valid JSON ({err})")),
    };
    let missing: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| body.get(f).is_none())
        .collect();
    (!missing.is_empty()).then(|| format!("the answer lacks {}", missing.join(", ")))
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError> {
        use crate::http::Method as M;
        let method = match request.method {
            Method::Get => M::GET,
            Method::Post => M::POST,
            Method::Put => M::PUT,
            Method::Patch => M::PATCH,
            Method::Delete => M::DELETE,
        };
        let write = crate::http::client::is_write(&method);
        let shown = format!("{method} {}", request.path);
        let expect_fields = request.expect_fields;
        let mut builder = self
            .client
            .request(method, &request.path)
            .idempotent(request.idempotent);
        if let Some(bucket) = request.bucket {
            builder = builder.bucket(bucket);
        }
        // Before the body, so a request's own Content-Type wins over the JSON default.
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        builder = match request.body {
            WireBody::None => builder,
            WireBody::Json(value) => builder.json(&value),
            WireBody::Bytes {
                content_type,
                bytes,
            } => builder.body(bytes, &content_type),
            WireBody::File { content_type, path } => match tokio::fs::read(&path).await {
                Ok(bytes) => builder.body(bytes, &content_type),
                Err(err) => {
                    return Err(SendError {
                        failure: SendFailure::Local,
                        status: None,
                        body_excerpt: None,
                        message: format!("cannot read {}: {err}", path.display()),
                        maybe_processed: false,
                    });
                }
            },
        };
        match builder.send().await {
            Ok(response) if write && self.json_answers => {
                match unconfirmed_answer(&response, expect_fields) {
                    None => Ok(WireResponse {
                        status: response.status.as_u16(),
                        body: response.body,
                        dry_run: false,
                    }),
                    Some(why) => Err(SendError {
                        failure: SendFailure::Exhausted,
                        status: Some(response.status.as_u16()),
                        body_excerpt: Some(response.excerpt()),
                        message: format!(
                            "{}: {shown} answered {} but {why}, so the write is not counted as applied",
                            self.client.vendor(),
                            response.status
                        ),
                        // Something answered 2xx: the vendor may have acted (a proxy's page, a
                        // body cut short), so a create is looked up before it is sent again.
                        maybe_processed: !request.idempotent,
                    }),
                }
            }
            Ok(response) => Ok(WireResponse {
                status: response.status.as_u16(),
                body: response.body,
                dry_run: false,
            }),
            Err(err) => Err(send_error(&err, request.idempotent)),
        }
    }

    fn stats(&self) -> WireStats {
        let s = self.client.stats();
        WireStats {
            requests: s.requests,
            retries: s.retries,
            status_429: s.status_429,
            status_5xx: s.status_5xx,
            transport_errors: s.transport_errors,
            rate_limit_wait_seconds: (s.rate_limit_wait + s.pause_wait).as_secs_f64(),
            backoff_wait_seconds: s.backoff_wait.as_secs_f64(),
        }
    }
}

/// Reads an [`crate::http::HttpError`] the way writers need it.
fn send_error(err: &crate::http::HttpError, idempotent: bool) -> SendError {
    use crate::http::HttpError;
    let failure = match err {
        _ if err.is_auth() => SendFailure::Credentials,
        // A signal stopped the run: the record is not settled, the run ends.
        HttpError::Stopped { .. } => SendFailure::Unreachable,
        HttpError::Status { .. } if err.is_transient() => SendFailure::Exhausted,
        HttpError::Status { .. } => SendFailure::Refused,
        // A request that may have been acted on was not repeated: that is about this record.
        HttpError::Transport { .. } if !idempotent && err.maybe_processed() => {
            SendFailure::Exhausted
        }
        HttpError::Transport { .. } => SendFailure::Unreachable,
        HttpError::Build { .. }
        | HttpError::InvalidUrl { .. }
        | HttpError::Encode { .. }
        | HttpError::Decode { .. } => SendFailure::Local,
    };
    SendError {
        failure,
        status: err.status().map(|s| s.as_u16()),
        body_excerpt: err.body_excerpt().map(str::to_string),
        message: err.to_string(),
        // Only a request that must not be repeated makes "it may have been acted on" the
        // record's business; an idempotent one was repeated until its budget ran out.
        maybe_processed: err.maybe_processed() && !idempotent,
    }
}

/// A transport that records every request and answers from a script: for writer tests and
/// benches (the sandbox tests use the real HTTP client).
pub struct ScriptedTransport {
    log: parking_lot::Mutex<Vec<WireRequest>>,
    #[allow(clippy::type_complexity)]
    answer: Box<dyn Fn(&WireRequest) -> Result<WireResponse, SendError> + Send + Sync>,
}

impl fmt::Debug for ScriptedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedTransport")
            .field("requests", &self.log.lock().len())
            .finish()
    }
}

impl ScriptedTransport {
    /// Answers every request with `200` and an empty body.
    pub fn ok() -> Self {
        Self::new(|_| Ok(WireResponse::ok(Value::Null)))
    }

    /// Answers with `answer`.
    pub fn new(
        answer: impl Fn(&WireRequest) -> Result<WireResponse, SendError> + Send + Sync + 'static,
    ) -> Self {
        ScriptedTransport {
            log: parking_lot::Mutex::new(Vec::new()),
            answer: Box::new(answer),
        }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<WireRequest> {
        self.log.lock().clone()
    }
}

#[async_trait::async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError> {
        let answer = (self.answer)(&request);
        self.log.lock().push(request);
        answer
    }

    fn stats(&self) -> WireStats {
        WireStats {
            requests: self.log.lock().len() as u64,
            ..WireStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(failure: SendFailure, status: Option<u16>, maybe: bool) -> SendError {
        SendError {
            failure,
            status,
            body_excerpt: Some("{\"error\":\"x\"}".into()),
            message: "POST /users answered".into(),
            maybe_processed: maybe,
        }
    }

    #[test]
    fn verdicts_follow_the_reliability_model() {
        assert!(matches!(
            verdict("userflow", err(SendFailure::Credentials, Some(401), false)),
            Verdict::Fatal(SinkError::Credentials { .. })
        ));
        assert!(matches!(
            verdict("userflow", err(SendFailure::Unreachable, None, true)),
            Verdict::Fatal(SinkError::Unreachable { .. })
        ));
        let Verdict::Reject(r) = verdict("userflow", err(SendFailure::Refused, Some(422), false))
        else {
            panic!()
        };
        assert_eq!(r.vendor_status, Some(422));
        assert_eq!(r.vendor_body.as_deref(), Some("{\"error\":\"x\"}"));
        let Verdict::Reject(r) = verdict("appcues", err(SendFailure::Exhausted, Some(500), true))
        else {
            panic!()
        };
        assert!(r.reason.contains("could duplicate"), "{}", r.reason);
        let Verdict::Reject(r) = verdict("appcues", err(SendFailure::Exhausted, Some(429), false))
        else {
            panic!()
        };
        assert!(r.reason.contains("retry budget"), "{}", r.reason);
    }

    #[test]
    fn refusals_print_the_vendor_answer() {
        let r = Refusal::vendor("rejected", Some(400), Some("bad id".into()));
        assert_eq!(r.to_string(), "rejected (vendor answered 400: bad id)");
        assert_eq!(Refusal::new("no id").to_string(), "no id");
    }

    #[test]
    fn payload_hashes_are_stable_and_print_as_hex() {
        let a = PayloadHash::of_json(&json!({"id": "u1", "attributes": {"plan": "pro"}}));
        let b = PayloadHash::of_json(&json!({"id": "u1", "attributes": {"plan": "pro"}}));
        assert_eq!(a, b);
        assert_eq!(a.to_string().len(), 32);
        assert_ne!(a, PayloadHash::of_json(&json!({"id": "u2"})));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("a b/c@d.e"), "a%20b%2Fc%40d.e");
        assert_eq!(segment("u_1-x~"), "u_1-x~");
        // Encoded, so a key cannot smuggle a dot segment in through `%`.
        assert_eq!(segment("%2e%2e"), "%252e%252e");
        assert_eq!(segment("a/../b"), "a%2F..%2Fb");
    }

    #[test]
    fn dot_segment_and_empty_keys_cannot_go_into_a_path() {
        for bad in [
            ".", "..", "%2e%2e", "%2E.", ".%2e", "%2e", "", "a\nb", "\u{0}",
        ] {
            let err = path_key("user key", bad).unwrap_err();
            assert!(
                err.reason.starts_with("user key"),
                "{bad:?}: {}",
                err.reason
            );
        }
        for good in ["...", "a.b", "..a", "a/../b", "x%2fy", "ann@x.io", "u 1"] {
            assert!(path_key("user key", good).is_ok(), "{good:?}");
        }
        // What reqwest's url crate does with them, which is why they are refused.
        let mut url = url::Url::parse("https://api.example.com/v1").unwrap();
        url.set_path("/v1/users/..");
        assert_eq!(url.path(), "/v1/");
        url.set_path("/v1/users/%2e%2E");
        assert_eq!(url.path(), "/v1/");
        url.set_path(&format!("/v1/users/{}", segment("a/../b")));
        assert_eq!(url.path(), "/v1/users/a%2F..%2Fb");
    }

    #[test]
    fn an_email_in_a_list_or_a_path_is_exactly_one_address() {
        assert_eq!(single_email("  ann@x.io "), Ok("ann@x.io"));
        assert_eq!(
            single_email("o'brien+tag@x.co.uk"),
            Ok("o'brien+tag@x.co.uk")
        );
        for bad in [
            "alice@example.com,mallory@evil.example",
            "alice@example.com;mallory@evil.example",
            "alice@example.com mallory@evil.example",
            "Alice <alice@example.com>",
            "alice@example.com\tmallory@evil.example",
            "alice@example.com\u{0}",
            "alice@example.com\u{2028}mallory@evil.example",
            "\"a,b\"@example.com",
            "alice@@example.com",
            "a@b@example.com",
            "@example.com",
            "alice@",
            "alice",
            "",
        ] {
            assert!(single_email(bad).is_err(), "{bad:?}");
        }
        let err = single_email("a@x.io,m@evil.example").unwrap_err();
        assert!(err.contains("contains ','"), "{err}");
    }

    #[test]
    fn kinds_round_trip_their_names() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("people"), None);
    }

    #[test]
    fn properties_put_standard_fields_first_and_attributes_win() {
        let item = Item {
            kind: Kind::Users,
            action: Action::Upsert,
            id: Some("u1".into()),
            user_id: None,
            group_id: None,
            fields: json!({"email": "a@x.io", "name": null})
                .as_object()
                .cloned()
                .unwrap(),
            attributes: json!({"plan": "pro", "email": "b@x.io"})
                .as_object()
                .cloned()
                .unwrap(),
        };
        assert_eq!(
            Value::Object(item.properties()),
            json!({"email": "b@x.io", "name": null, "plan": "pro"})
        );
        assert_eq!(item.user_key(), Some("u1"));
        assert_eq!(item.group_key(), None);
    }
}
