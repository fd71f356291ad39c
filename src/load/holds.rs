//! `sync_mode: update_only` / `create_only` decided by a read where the vendor can read.
//!
//! Whether the destination "holds" a record is asked of the vendor itself
//! ([`Sink::read`]) for the kinds its writer can read, and of the ledger
//! (`super::sync`) for the others. [`ReadKinds`] says which; the ledger's check skips the
//! kinds it covers, and [`HoldsSink`] (a layer over the vendor's writer) reads each of their
//! records just before it would be written, leaving out with the mode's name as the reason
//! what the mode does not want. The read goes through the writer's own transport (paced,
//! retried, counted), and for SCIM it also fills the writer's key → id map, so the write that
//! follows needs no second lookup. A record created outside roster counts as held.

use std::sync::Arc;

use crate::config::SyncMode;
use crate::sink::{
    Acks, Action, Holding, Item, Kind, NestedRule, Op, Plan, Refusal, SendError, Sink, SinkError,
    WireStats, WriteVerdict, verdict,
};

/// Which kinds the vendor's writer can read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadKinds {
    users: bool,
    groups: bool,
    memberships: bool,
    segments: bool,
}

impl ReadKinds {
    /// What `sink` reads.
    pub fn of(sink: &dyn Sink) -> Self {
        ReadKinds {
            users: sink.reads(Kind::Users),
            groups: sink.reads(Kind::Groups),
            memberships: sink.reads(Kind::Memberships),
            segments: sink.reads(Kind::Segments),
        }
    }

    /// Nothing is read: the ledger decides everything.
    pub fn none() -> Self {
        ReadKinds::default()
    }

    /// True when the vendor reads `kind`.
    pub fn reads(&self, kind: Kind) -> bool {
        match kind {
            Kind::Users => self.users,
            Kind::Groups => self.groups,
            Kind::Memberships => self.memberships,
            Kind::Segments => self.segments,
            Kind::Events => false,
        }
    }

    /// True when whether `mode` leaves `item` out is decided by reads (else by the ledger):
    /// `update_only` asks whether the record (a membership: its user and group; an event: its
    /// user) is held, `create_only` whether the record is.
    pub fn decides(&self, mode: SyncMode, item: &Item) -> bool {
        match mode {
            SyncMode::Upsert | SyncMode::Mirror => false,
            SyncMode::UpdateOnly if item.action == Action::Delete => false,
            SyncMode::UpdateOnly => match item.kind {
                Kind::Memberships => self.users && self.groups,
                Kind::Events => self.users,
                kind => self.reads(kind),
            },
            SyncMode::CreateOnly => item.kind != Kind::Events && self.reads(item.kind),
        }
    }
}

/// A users or groups record standing for `key` (what a membership or event names).
fn stand_in(kind: Kind, key: &str) -> Item {
    Item {
        kind,
        action: Action::Upsert,
        id: Some(key.to_string()),
        user_id: None,
        group_id: None,
        fields: Default::default(),
        attributes: Default::default(),
    }
}

/// True when the vendor holds `item` (a record it cannot read counts as not held).
async fn held(sink: &dyn Sink, item: &Item) -> Result<bool, SendError> {
    Ok(matches!(sink.read(item).await?, Holding::Held(_)))
}

/// The mode's reason to leave `item` out, decided by reads (call only where
/// [`ReadKinds::decides`]).
pub async fn left_out(
    sink: &dyn Sink,
    mode: SyncMode,
    item: &Item,
) -> Result<Option<&'static str>, SendError> {
    let leave_out = match (mode, item.kind) {
        (SyncMode::UpdateOnly, Kind::Memberships | Kind::Events) => {
            let user = stand_in(Kind::Users, item.user_id.as_deref().unwrap_or_default());
            let group = item.group_id.as_deref().map(|g| stand_in(Kind::Groups, g));
            !held(sink, &user).await?
                || match (item.kind, group) {
                    (Kind::Memberships, Some(group)) => !held(sink, &group).await?,
                    _ => false,
                }
        }
        (SyncMode::UpdateOnly, _) => !held(sink, item).await?,
        (SyncMode::CreateOnly, _) => held(sink, item).await?,
        _ => false,
    };
    Ok(leave_out.then(|| mode.as_str()))
}

/// A failed read, as the record's refusal (or fatal: refused credentials, vendor unreachable).
pub fn read_failed(vendor: &'static str, what: &str, err: SendError) -> Result<Refusal, SinkError> {
    match verdict(vendor, err) {
        WriteVerdict::Reject(mut refusal) => {
            refusal.reason = format!("cannot tell {what}: {}", refusal.reason);
            Ok(refusal)
        }
        WriteVerdict::Fatal(fatal) => Err(fatal),
    }
}

/// The vendor's writer, with `update_only` / `create_only` decided by reads before each write.
pub struct HoldsSink {
    inner: Arc<dyn Sink>,
    mode: SyncMode,
    reads: ReadKinds,
}

impl HoldsSink {
    /// `inner` with `mode` decided by its reads; `inner` itself when the mode needs no read.
    pub fn wrap(inner: Arc<dyn Sink>, mode: SyncMode) -> Arc<dyn Sink> {
        let reads = ReadKinds::of(inner.as_ref());
        if !matches!(mode, SyncMode::UpdateOnly | SyncMode::CreateOnly)
            || reads == ReadKinds::none()
        {
            return inner;
        }
        Arc::new(HoldsSink { inner, mode, reads })
    }
}

impl std::fmt::Debug for HoldsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HoldsSink")
            .field("vendor", &self.inner.vendor())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Sink for HoldsSink {
    fn vendor(&self) -> &'static str {
        self.inner.vendor()
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        self.inner.plan(op)
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let mut kept = Vec::with_capacity(batch.len());
        for op in batch {
            if !self.reads.decides(self.mode, &op.item) {
                kept.push(op);
                continue;
            }
            match left_out(self.inner.as_ref(), self.mode, &op.item).await {
                Ok(None) => kept.push(op),
                Ok(Some(reason)) => acks.skipped(&op, reason),
                Err(err) => {
                    let what = format!("whether {} holds this record", self.vendor());
                    let refusal = read_failed(self.vendor(), &what, err)?;
                    acks.rejected(&op, refusal, None);
                }
            }
        }
        if kept.is_empty() {
            return Ok(());
        }
        self.inner.write(kept, acks).await
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        self.inner.flush(acks).await
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.inner.check().await
    }

    fn stats(&self) -> WireStats {
        self.inner.stats()
    }

    fn holds_memberships(&self) -> bool {
        self.inner.holds_memberships()
    }

    fn nested_rule(&self) -> NestedRule {
        self.inner.nested_rule()
    }

    fn reads(&self, kind: Kind) -> bool {
        self.inner.reads(kind)
    }

    async fn read(&self, item: &Item) -> Result<Holding, SendError> {
        self.inner.read(item).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::sink::{Origin, Outcome, ScriptedTransport, SendFailure, Ticket, WireResponse};
    use crate::vendors::userflow::write::UserflowSink;
    use serde_json::json;

    fn item(kind: Kind, action: Action) -> Item {
        Item {
            kind,
            action,
            id: Some("k".into()),
            user_id: Some("u".into()),
            group_id: Some("g".into()),
            fields: Default::default(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn reads_decide_only_for_the_kinds_the_vendor_reads() {
        let userflow = ReadKinds {
            users: true,
            groups: true,
            memberships: true,
            segments: false,
        };
        let users_only = ReadKinds {
            users: true,
            ..ReadKinds::none()
        };
        let upsert = |k| item(k, Action::Upsert);
        assert!(!userflow.decides(SyncMode::Upsert, &upsert(Kind::Users)));
        assert!(userflow.decides(SyncMode::UpdateOnly, &upsert(Kind::Users)));
        assert!(!userflow.decides(SyncMode::UpdateOnly, &item(Kind::Users, Action::Delete)));
        assert!(userflow.decides(SyncMode::UpdateOnly, &upsert(Kind::Events)));
        assert!(!userflow.decides(SyncMode::CreateOnly, &upsert(Kind::Events)));
        assert!(!userflow.decides(SyncMode::CreateOnly, &upsert(Kind::Segments)));
        // A membership under update_only needs both its user and its group read.
        assert!(!users_only.decides(SyncMode::UpdateOnly, &upsert(Kind::Memberships)));
        assert!(users_only.decides(SyncMode::UpdateOnly, &upsert(Kind::Events)));
        assert!(!users_only.decides(SyncMode::CreateOnly, &upsert(Kind::Groups)));
        assert!(!ReadKinds::none().decides(SyncMode::UpdateOnly, &upsert(Kind::Users)));
    }

    #[test]
    fn the_ledger_leaves_the_kinds_reads_decide_to_the_reads() {
        use crate::ledger::Ledger;
        use crate::load::sync::{Decision, Sync};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let open = || Ledger::open(&path, "userflow", "acct").unwrap();
        // A user the ledger does not hold: the ledger leaves it out...
        let mut by_ledger = Sync::new(Some(open()), true, SyncMode::UpdateOnly);
        assert_eq!(
            by_ledger.decide(&op("x"), None).unwrap(),
            Decision::Skip("update_only")
        );
        drop(by_ledger);
        // ...unless the vendor's reads decide for users.
        let reads = ReadKinds {
            users: true,
            ..ReadKinds::none()
        };
        let mut by_read = Sync::new(Some(open()), true, SyncMode::UpdateOnly).reading(reads);
        assert_eq!(by_read.decide(&op("x"), None).unwrap(), Decision::Send);
    }

    fn op(id: &str) -> Op {
        Op {
            ticket: Ticket(0),
            item: Item {
                id: Some(id.into()),
                ..item(Kind::Users, Action::Upsert)
            },
            origin: Arc::new(Origin {
                stream: "users".into(),
                line: 1,
                record: Default::default(),
            }),
        }
    }

    /// Userflow holds `held` (GET answers 200), not `absent` (404).
    fn userflow() -> (Arc<ScriptedTransport>, Arc<dyn Sink>) {
        let transport = Arc::new(ScriptedTransport::new(|request| {
            if request.path.ends_with("/absent") {
                return Err(SendError {
                    failure: SendFailure::Refused,
                    status: Some(404),
                    body_excerpt: None,
                    message: "GET /users/absent answered 404".into(),
                    maybe_processed: false,
                });
            }
            Ok(WireResponse::ok(json!({"id": "held", "attributes": {}})))
        }));
        let sink: Arc<dyn Sink> = Arc::new(UserflowSink::new(transport.clone()));
        (transport, sink)
    }

    #[tokio::test]
    async fn update_only_writes_what_the_vendor_holds_and_create_only_what_it_does_not() {
        for (mode, id, written) in [
            (SyncMode::UpdateOnly, "held", true),
            (SyncMode::UpdateOnly, "absent", false),
            (SyncMode::CreateOnly, "held", false),
            (SyncMode::CreateOnly, "absent", true),
        ] {
            let (transport, inner) = userflow();
            let sink = HoldsSink::wrap(inner, mode);
            let (acks, mut settled) = Acks::channel();
            sink.write(vec![op(id)], &acks).await.unwrap();
            let posts = transport
                .requests()
                .iter()
                .filter(|r| r.method == crate::sink::Method::Post)
                .count();
            assert_eq!(posts == 1, written, "{mode:?} {id}");
            let outcome = settled.try_recv().unwrap().outcome;
            if !written {
                assert_eq!(
                    outcome,
                    Outcome::Skipped(mode.as_str().into()),
                    "{mode:?} {id}"
                );
            }
        }
    }
}
