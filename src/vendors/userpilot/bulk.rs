//! Userpilot bulk identify (`mode: bulk`): users, memberships and companies as bulk jobs;
//! deletes and events still go to the real-time writer ([`super::write`]), through the same
//! HTTP client.
//!
//! | kind | bulk row | upload |
//! | --- | --- | --- |
//! | users | `{"user_id", "metadata"}` (the real-time identify body) | `POST /v1/users/bulk_identify {"users": […]}` |
//! | memberships | `{"user_id", "company_id"}` | the same users file |
//! | groups | `{"company_id", "metadata"}` (the real-time company body) | `POST /v1/companies/bulk_identify {"companies": […]}` |
//!
//! Values are strings, by the real-time writer's rule. A request holds at most 10,000 rows and
//! 50 MB (defaults 10,000 and 48.75 MB; `bulk_max_rows`, `bulk_max_bytes`); over either Userpilot
//! answers 413 and the file is halved. Only one bulk job (user or company) runs per account: a
//! 409 means wait and try again. Jobs are polled at `/v1/background_jobs/{id}` with the id
//! percent-encoded (ids look like `bulk:jobs:NX-ac54070e:c6f91301-…`) until `completed` or
//! `failed` ([`crate::sink::bulk`]). A delete waits for the job holding that user's or
//! company's row, so a job never brings back what was deleted after it.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::write::{UserpilotSink, client_spec, request};
use crate::sink::bulk::{
    BulkSettings, FileLimits, Framing, JobsConfig, Lane, Pipeline, RowBatch, properties_in_order,
    write_entry,
};
use crate::sink::{
    Acks, Action, BatchKey, BatchLimits, Kind, Op, OrderKey, Plan, Refusal, Sink, SinkContext,
    SinkError, WireBody, WireStats,
};

/// The vendor's name.
const VENDOR: &str = "userpilot";

/// Userpilot's documented limits per bulk request: 10,000 rows and 50 MB.
pub const DOCUMENTED_LIMITS: FileLimits = FileLimits {
    max_rows: 10_000,
    max_bytes: 50_000_000,
};

/// Defaults: the documented rows, and 2.5% under the documented bytes so neither a MB/MiB
/// reading nor a proxy's framing tips a file over.
pub const DEFAULT_LIMITS: FileLimits = FileLimits {
    max_rows: 10_000,
    max_bytes: 48_750_000,
};

/// Ops per write: they are only spooled, so large batches cost nothing.
pub const WRITE_BATCH: usize = 512;

/// How long bulk ops gather before they are spooled.
pub const WRITE_LINGER: Duration = Duration::from_millis(50);

/// Bytes a row is expected to take, to size a batch's buffer once.
const ROW_BYTES: usize = 256;

/// The users file: `{"users": [` rows `]}`.
pub const USERS_FILE: Framing = Framing {
    prefix: "{\"users\":[\n",
    separator: ",\n",
    suffix: "\n]}\n",
    content_type: "application/json",
};

/// The companies file: `{"companies": [` rows `]}`.
pub const COMPANIES_FILE: Framing = Framing {
    prefix: "{\"companies\":[\n",
    separator: ",\n",
    suffix: "\n]}\n",
    content_type: "application/json",
};

/// The Userpilot bulk writer.
#[derive(Debug)]
pub struct BulkSink {
    realtime: Arc<UserpilotSink>,
    pipeline: Pipeline,
    users: Arc<Lane>,
    companies: Arc<Lane>,
}

/// The factory of `mode: bulk`.
pub fn sink(ctx: &SinkContext<'_>) -> Result<Arc<dyn Sink>, SinkError> {
    let config: super::config::Config = ctx.config.typed()?;
    let settings: BulkSettings = ctx.config.typed()?;
    let transport = ctx.transport(client_spec(&config))?;
    let limits = settings.limits(VENDOR, DEFAULT_LIMITS, DOCUMENTED_LIMITS);
    let mut jobs = JobsConfig::new(VENDOR, "/v1/background_jobs");
    jobs.timeout = settings.timeout();
    Ok(Arc::new(BulkSink {
        realtime: Arc::new(UserpilotSink::new(transport.clone())),
        pipeline: Pipeline::new(jobs, transport),
        users: Lane::new(
            "userpilot users bulk identify",
            "/v1/users/bulk_identify",
            USERS_FILE,
            limits,
        ),
        companies: Lane::new(
            "userpilot companies bulk identify",
            "/v1/companies/bulk_identify",
            COMPANIES_FILE,
            limits,
        ),
    }))
}

/// True for what goes into bulk files: upserts of users, companies and memberships.
fn bulk(op: &Op) -> bool {
    op.item.action == Action::Upsert
        && matches!(op.item.kind, Kind::Users | Kind::Groups | Kind::Memberships)
}

/// One bulk row and the key a later delete of it must wait for.
pub fn row(op: &Op) -> Option<(Value, OrderKey)> {
    let item = &op.item;
    match item.kind {
        Kind::Memberships => {
            let user = item.user_id.clone()?;
            let key = OrderKey::user(&user);
            Some((
                json!({"user_id": user, "company_id": item.group_id.clone()?}),
                key,
            ))
        }
        Kind::Users | Kind::Groups => {
            // The real-time identify body is exactly the bulk row.
            let WireBody::Json(body) = request(op)?.body else {
                return None;
            };
            let id = item.id.as_deref()?;
            let key = match item.kind {
                Kind::Groups => OrderKey::group(id),
                _ => OrderKey::user(id),
            };
            Some((body, key))
        }
        Kind::Events | Kind::Segments => None,
    }
}

/// Appends [`row`]'s bytes to `out`, serialised straight from the item (no body `Value`, no
/// stringified map); `None` when the record has no bulk row.
pub fn write_row(op: &Op, out: &mut Vec<u8>) -> Option<Result<OrderKey, serde_json::Error>> {
    let item = &op.item;
    let (id_key, id, key) = match item.kind {
        Kind::Memberships => {
            let user = item.user_id.as_deref()?;
            let group = item.group_id.as_deref()?;
            let written = write_membership(out, user, group);
            return Some(written.map(|()| OrderKey::user(user)));
        }
        Kind::Users => {
            let id = item.id.as_deref()?;
            ("user_id", id, OrderKey::user(id))
        }
        Kind::Groups => {
            let id = item.id.as_deref()?;
            ("company_id", id, OrderKey::group(id))
        }
        Kind::Events | Kind::Segments => return None,
    };
    Some(write_identify(out, id_key, id, item).map(|()| key))
}

/// `{"user_id": …, "company_id": …}`.
fn write_membership(out: &mut Vec<u8>, user: &str, group: &str) -> Result<(), serde_json::Error> {
    out.push(b'{');
    write_entry(out, true, "user_id", &user)?;
    write_entry(out, false, "company_id", &group)?;
    out.push(b'}');
    Ok(())
}

/// The real-time identify body: `{id_key: id, "metadata": {…properties as strings}}`.
fn write_identify(
    out: &mut Vec<u8>,
    id_key: &str,
    id: &str,
    item: &crate::sink::Item,
) -> Result<(), serde_json::Error> {
    out.push(b'{');
    write_entry(out, true, id_key, &id)?;
    out.extend_from_slice(b",\"metadata\":{");
    let mut first = true;
    for (key, value) in properties_in_order(item) {
        match value {
            Value::String(_) | Value::Null => write_entry(out, first, key, value)?,
            // A number or a boolean as a string: its JSON text needs no escaping.
            Value::Number(_) | Value::Bool(_) => {
                write_entry(out, first, key, &"")?;
                out.pop();
                serde_json::to_writer(&mut *out, value)?;
                out.push(b'"');
            }
            other => write_entry(out, first, key, &other.to_string())?,
        }
        first = false;
    }
    out.extend_from_slice(b"}}");
    Ok(())
}

#[async_trait::async_trait]
impl Sink for BulkSink {
    fn vendor(&self) -> &'static str {
        VENDOR
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        // The real-time writer's rules (scalar values, no membership removal) hold here too.
        let plan = self.realtime.rules(op)?;
        if !bulk(op) {
            return Ok(plan);
        }
        let file = match op.item.kind {
            Kind::Groups => "companies",
            _ => "users",
        };
        Ok(Plan::batched(
            plan.keys,
            BatchKey::new(
                format!("userpilot bulk {file}"),
                BatchLimits {
                    max_items: WRITE_BATCH,
                    linger: WRITE_LINGER,
                },
            ),
        ))
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        if bulk(first) {
            let lane = match first.item.kind {
                Kind::Groups => &self.companies,
                _ => &self.users,
            };
            let mut rows = RowBatch::with_capacity(batch.len(), batch.len() * ROW_BYTES);
            for op in &batch {
                let pushed = rows.push(op, |out| match write_row(op, out) {
                    Some(Ok(key)) => Ok([key]),
                    Some(Err(err)) => Err(format!("cannot encode the bulk row: {err}")),
                    None => Err(format!(
                        "userpilot cannot bulk identify this {} record",
                        op.item.kind
                    )),
                });
                if let Err(reason) = pushed {
                    acks.rejected(op, Refusal::new(reason), None);
                }
            }
            return self.pipeline.push_batch(lane, &rows, acks, false).await;
        }
        // A (scheduled) delete must not overtake the job that identifies the same user or
        // company.
        let waits: Vec<OrderKey> = batch
            .iter()
            .filter(|op| op.item.action == Action::Delete)
            .filter_map(|op| match (op.item.kind, op.item.id.as_deref()) {
                (Kind::Users, Some(id)) => Some(OrderKey::user(id)),
                (Kind::Groups, Some(id)) => Some(OrderKey::group(id)),
                _ => None,
            })
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::sink::{Item, Origin, Ticket};

    fn op(kind: Kind, id: Option<&str>, fields: Value, attributes: Value) -> Op {
        let map = |v: Value| v.as_object().cloned().unwrap_or_default();
        Op {
            ticket: Ticket(1),
            item: Item {
                kind,
                action: Action::Upsert,
                id: id.map(str::to_string),
                user_id: Some("u\"1".into()),
                group_id: Some("g/1".into()),
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

    #[test]
    fn a_row_written_in_place_is_the_real_time_body() {
        let fields = json!({"email": "a@b.c", "name": "Ann \"Q\"\n", "created_at": null});
        let attributes = json!({
            "email": "wins@x", "plan": "pro", "seats": 12, "ratio": -0.25, "big": 1e300,
            "active": false, "user_id": "kept in metadata", "tags": ["a", "\"b\""], "o": {"k": 1}
        });
        let ops = [
            op(Kind::Users, Some("u1"), fields.clone(), attributes.clone()),
            op(Kind::Users, Some("é\u{1}"), json!({}), json!({})),
            op(Kind::Groups, Some("g1"), fields, attributes),
            op(Kind::Memberships, None, json!({}), json!({})),
        ];
        for op in &ops {
            let (row, key) = row(op).unwrap();
            let mut written = b"left alone".to_vec();
            let written_key = write_row(op, &mut written).unwrap().unwrap();
            assert_eq!(
                String::from_utf8(written[b"left alone".len()..].to_vec()).unwrap(),
                serde_json::to_string(&row).unwrap(),
                "{:?}",
                op.item.kind
            );
            assert_eq!(written_key, key);
        }
        let no_id = op(Kind::Users, None, json!({}), json!({}));
        assert!(write_row(&no_id, &mut Vec::new()).is_none());
        assert!(row(&no_id).is_none());
        let event = op(Kind::Events, Some("e"), json!({"name": "x"}), json!({}));
        assert!(write_row(&event, &mut Vec::new()).is_none());
    }
}
