//! The Appcues writer with jobs: user profiles as NDJSON import jobs (`mode: bulk`), and
//! segments through upload jobs in both modes ([`super::segments`]). Everything else (groups,
//! memberships, events, profile deletes) goes to the real-time writer ([`super::write`]),
//! through the same HTTP client.
//!
//! In `mode: bulk`, each user upsert becomes one NDJSON line `{"user_id": …, …properties}`
//! (flat, the properties the real-time PATCH would send; `null` is passed on) in a file of at
//! most `bulk_max_rows` rows and `bulk_max_bytes` bytes (default 19.5 MB, under the vendor's
//! documented 20 MB POST body limit), POSTed as `application/x-ndjson` to
//! `/v2/accounts/{account}{import_path}` (`/import/profiles` by default; the vendor's API
//! document's `/import/users` also works) and polled at `/jobs/{id}` until it ends
//! ([`crate::sink::bulk`]). A profile delete waits for the import job holding that user's
//! row, so an import never brings back a user deleted after it.

use std::sync::Arc;
use std::time::Duration;

use super::segments::Segments;
use super::write::{AppcuesSink, client_spec};
use crate::sink::bulk::{
    BulkSettings, FileLimits, Framing, JobsConfig, Lane, Pipeline, RowBatch, properties_in_order,
    write_entry,
};
use crate::sink::{
    Acks, Action, BatchKey, BatchLimits, Kind, Op, OrderKey, Plan, Refusal, Sink, SinkContext,
    SinkError, Transport, WireStats, key_segment,
};

/// The vendor's name.
const VENDOR: &str = "appcues";

/// The vendor's documented POST body limit for imports: 20 MB.
pub const DOCUMENTED_MAX_BYTES: u64 = 20_000_000;

/// Upload defaults: 2.5% under the body limit, so neither a MB/MiB reading nor a proxy's
/// framing tips a file over; and 10,000 rows (Appcues documents no row limit), which bounds the
/// records one failed job rejects and the memory a run needs: the file being uploaded is held
/// in memory, and each row waiting for its job holds its ticket and ledger entry (up to three
/// files are in flight). A million users peaked at 101–114 MB with 25,000-row files and stay
/// under 100 MB with 10,000 (benches/bulk.sh, docs/bulk.md).
pub const DEFAULT_LIMITS: FileLimits = FileLimits {
    max_rows: 10_000,
    max_bytes: 19_500_000,
};

/// Ops per write in bulk mode: they are only spooled, so large batches cost nothing.
pub const WRITE_BATCH: usize = 512;

/// How long bulk ops gather before they are spooled.
pub const WRITE_LINGER: Duration = Duration::from_millis(50);

/// Bytes a row is expected to take, to size a batch's buffer once.
const ROW_BYTES: usize = 256;

/// The Appcues writer with jobs.
#[derive(Debug)]
pub struct JobsSink {
    realtime: Arc<AppcuesSink>,
    pipeline: Arc<Pipeline>,
    /// `Some` in `mode: bulk`: where profile imports go.
    imports: Option<Arc<Lane>>,
    segments: Segments,
}

/// What the writers of both modes are built from: the real-time writer, the job pipeline, and
/// the segment uploads (which go through jobs in both modes).
pub(super) struct Parts {
    config: super::config::Config,
    transport: Arc<dyn Transport>,
    limits: FileLimits,
    account: String,
    pipeline: Arc<Pipeline>,
}

impl Parts {
    /// Reads the settings and opens the HTTP client.
    pub(super) fn new(ctx: &SinkContext<'_>) -> Result<Self, SinkError> {
        let config: super::config::Config = ctx.config.typed()?;
        config.check_paths()?;
        let settings: BulkSettings = ctx.config.typed()?;
        let transport = ctx.transport(client_spec(&config))?;
        let limits = settings.limits(
            VENDOR,
            DEFAULT_LIMITS,
            FileLimits {
                max_rows: usize::MAX,
                max_bytes: DOCUMENTED_MAX_BYTES,
            },
        );
        let account = format!("/v2/accounts/{}", key_segment(&config.account_id));
        let mut jobs = JobsConfig::new(VENDOR, format!("{account}/jobs"));
        jobs.timeout = settings.timeout();
        let pipeline = Arc::new(Pipeline::new(jobs, transport.clone()));
        Ok(Parts {
            config,
            transport,
            limits,
            account,
            pipeline,
        })
    }

    /// The lane profile imports go to (`mode: bulk`).
    fn import_lane(&self) -> Arc<Lane> {
        let path = if self.config.import_path.starts_with('/') {
            self.config.import_path.clone()
        } else {
            format!("/{}", self.config.import_path)
        };
        Lane::new(
            format!("appcues import {path}"),
            format!("{}{path}", self.account),
            Framing::NDJSON,
            self.limits,
        )
    }

    /// The writer: profile upserts go to `imports` when it is given, in real time otherwise.
    pub(super) fn into_sink(self, imports: Option<Arc<Lane>>) -> Arc<dyn Sink> {
        Arc::new(JobsSink {
            realtime: Arc::new(AppcuesSink::new(
                self.transport.clone(),
                &self.config.account_id,
            )),
            segments: Segments::new(
                self.transport,
                self.account,
                self.pipeline.clone(),
                self.limits,
                imports.is_none(),
            ),
            pipeline: self.pipeline,
            imports,
        })
    }
}

/// The `mode: bulk` writer: profile upserts become NDJSON import jobs.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let parts = Parts::new(ctx)?;
    let imports = parts.import_lane();
    Ok(parts.into_sink(Some(imports)))
}

/// One NDJSON import line: `user_id` first, then the properties the real-time PATCH sends.
pub fn import_row(op: &Op) -> Result<Vec<u8>, serde_json::Error> {
    let mut row = Vec::with_capacity(256);
    write_import_row(op, &mut row)?;
    Ok(row)
}

/// Appends [`import_row`]'s line to `out`, serialised straight from the item: `user_id`
/// first, then the properties in [`crate::model::Item::properties`]' order, leaving out a
/// property called `user_id` (the key wins). No map is built and nothing is allocated per
/// record: a million-user import spends its time on the bytes.
pub fn write_import_row(op: &Op, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
    out.push(b'{');
    write_entry(
        out,
        true,
        "user_id",
        &op.item.id.as_deref().unwrap_or_default(),
    )?;
    for (key, value) in properties_in_order(&op.item) {
        if key != "user_id" {
            write_entry(out, false, key, value)?;
        }
    }
    out.push(b'}');
    Ok(())
}

impl JobsSink {
    fn imported(&self, op: &Op) -> bool {
        self.imports.is_some() && op.item.kind == Kind::Users && op.item.action == Action::Upsert
    }
}

#[async_trait::async_trait]
impl Sink for JobsSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        if op.item.kind == Kind::Segments {
            return self.segments.plan(op);
        }
        // The real-time writer's rules (scalar values only) hold for imports too.
        let plan = self.realtime.plan(op)?;
        if self.imported(op) {
            return Ok(Plan::batched(
                plan.keys,
                BatchKey::new(
                    "appcues bulk import",
                    BatchLimits {
                        max_items: WRITE_BATCH,
                        linger: WRITE_LINGER,
                    },
                ),
            ));
        }
        Ok(plan)
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        if first.item.kind == Kind::Segments {
            return self.segments.write(batch, acks).await;
        }
        if let Some(lane) = &self.imports
            && self.imported(first)
        {
            let mut rows = RowBatch::with_capacity(batch.len(), batch.len() * ROW_BYTES);
            for op in &batch {
                let key = OrderKey::user(op.item.id.as_deref().unwrap_or_default());
                if let Err(err) = rows.push(op, |out| write_import_row(op, out).map(|()| [key])) {
                    acks.rejected(
                        op,
                        Refusal::new(format!("cannot encode the import row: {err}")),
                        None,
                    );
                }
            }
            return self.pipeline.push_batch(lane, &rows, acks, false).await;
        }
        // A profile delete must not overtake the import of that profile.
        let waits: Vec<OrderKey> = batch
            .iter()
            .filter(|op| op.item.kind == Kind::Users && op.item.action == Action::Delete)
            .filter_map(|op| op.item.id.as_deref().map(OrderKey::user))
            .collect();
        self.pipeline.wait_for(&waits).await?;
        self.realtime.write(batch, acks).await
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        self.pipeline.flush().await?;
        self.realtime.flush(acks).await
    }

    async fn check(&self) -> Result<(), SinkError> {
        self.realtime.check().await
    }

    fn stats(&self) -> WireStats {
        self.realtime.stats()
    }

    fn nested_rule(&self) -> crate::sink::NestedRule {
        crate::sink::NestedRule::ScalarsOnly
    }

    fn reads(&self, kind: crate::sink::Kind) -> bool {
        self.realtime.reads(kind)
    }

    async fn read(
        &self,
        item: &crate::sink::Item,
    ) -> Result<crate::sink::Holding, crate::sink::SendError> {
        self.realtime.read_holding(item).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Map, Value, json};

    use super::*;
    use crate::sink::{Item, Origin, Ticket};

    fn user(id: &str, fields: Value, attributes: Value) -> Op {
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        Op {
            ticket: Ticket(1),
            item: Item {
                kind: Kind::Users,
                action: Action::Upsert,
                id: Some(id.into()),
                user_id: None,
                group_id: None,
                fields: map(fields).into_iter().collect(),
                attributes: map(attributes).into_iter().collect(),
            },
            origin: Arc::new(Origin {
                stream: "users".into(),
                line: 1,
                record: Default::default(),
            }),
        }
    }

    /// The row as it was built before it was written in place: a map of `user_id` and the
    /// item's properties, serialised.
    fn through_a_map(op: &Op) -> Vec<u8> {
        let mut row = Map::new();
        row.insert(
            "user_id".into(),
            json!(op.item.id.clone().unwrap_or_default()),
        );
        for (k, v) in op.item.properties() {
            if k != "user_id" {
                row.insert(k, v);
            }
        }
        serde_json::to_vec(&row).unwrap()
    }

    #[test]
    fn an_import_row_written_in_place_is_the_row_a_map_would_give() {
        let ops = [
            user("u1", json!({}), json!({})),
            user(
                "u\"2\u{1}/é",
                json!({"email": "a@b.c", "name": "Ann \"Q\"\n", "created_at": null, "active": true}),
                json!({"plan": "pro", "seats": 12, "ratio": 0.25, "big": 12345678901234567890u64}),
            ),
            // An attribute named like a standard field wins, in the field's place; a property
            // called user_id loses to the key.
            user(
                "u3",
                json!({"email": "old@x", "name": "N", "user_id": "f"}),
                json!({"user_id": "evil", "email": "new@x", "z": null, "a": -1.5e300}),
            ),
            user(
                "",
                json!({"name": "no id"}),
                json!({"tags": ["a"], "nested": {"k": 1}}),
            ),
        ];
        for op in &ops {
            let mut written = b"left alone".to_vec();
            write_import_row(op, &mut written).unwrap();
            assert_eq!(
                String::from_utf8(written[b"left alone".len()..].to_vec()).unwrap(),
                String::from_utf8(through_a_map(op)).unwrap()
            );
        }
        let row: Value = serde_json::from_slice(&import_row(&ops[2]).unwrap()).unwrap();
        assert_eq!(
            row.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["user_id", "email", "name", "z", "a"]
        );
        assert_eq!(row["user_id"], "u3");
        assert_eq!(row["email"], "new@x");
    }
}
