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

pub mod body;
pub mod bulk;
pub mod guard;
pub mod hash;
pub mod plan;
pub mod read;
pub mod settle;
pub mod testing;
pub mod transport;
pub mod wire;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::{ConfigError, Resolved, TargetSettings};

pub use crate::http::{Auth, ClientSpec};
pub use crate::model::{Action, Item, Kind};
pub use guard::{path_key, path_keys, scalars_only, single_email};
pub use hash::PayloadHash;
pub use plan::{
    BatchKey, BatchLimits, BatchLimitsKey, Op, OrderKey, Origin, Plan, RecordText, Ticket,
};
pub use read::{Current, FieldChange, Holding};
pub use settle::{
    Acks, Outcome, Refusal, Settlement, WriteVerdict, fatal_or, send_and_settle, verdict,
};
pub use testing::ScriptedTransport;
pub use transport::{BuiltTransport, HttpTransport, Transport};
pub use wire::{
    Method, SendError, SendFailure, WireBody, WireRequest, WireResponse, WireStats, key_segment,
    object, stringify,
};

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

/// A failure that ends the run: the engine stops sending, waits for what is in flight, writes
/// the last safe state and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The vendor refused the credentials (401/403).
    #[error("{vendor} refused the credentials: {detail}")]
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

    /// True when [`Sink::read`] can tell what the vendor holds for records of `kind` (the
    /// ledger decides for the others). CPU only.
    fn reads(&self, kind: Kind) -> bool {
        let _ = kind;
        false
    }

    /// What the vendor holds now under `item`'s key, in roster's record model, with what an
    /// upsert of `item` would change ([`read`] module). Sent through the writer's own
    /// transport. `Err` is the failed request (the caller reads it as a refusal for the record,
    /// or fatal, as [`verdict`] says). Vendors that cannot read answer
    /// [`Holding::Unreadable`].
    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        let _ = item;
        Ok(Holding::Unreadable)
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

/// Builds a vendor's sink (the registry's `sink` field).
pub type SinkFactory = fn(&SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError>;
