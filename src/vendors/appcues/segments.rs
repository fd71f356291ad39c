//! Appcues segments: a stream of (segment name, user id) records (kind `segments`; the key
//! field is `segment`) fills named segments, in both modes.
//!
//! - The segment is looked up by name (`GET /segments`, a bare array that does not paginate)
//!   and created only when it is missing (`POST /segments {"name", "description"}`); the
//!   name → id map lives for the run, and a name not in it is looked up again before anything
//!   is created, in case someone made it meanwhile.
//! - Members are uploaded as a CSV file with one `user_id` column in the multipart field `file`
//!   (the seed's `-F file=@user_ids.csv`) to `POST /segments/{id}/add_user_ids`; a record with
//!   `_sdc_deleted_at` set goes to `/remove_user_ids` (the Appcues CLI's `remove-users`). Both
//!   answer with a job that is polled at `/jobs/{id}` like an import, so a member counts as
//!   accepted only when its job completed.
//! - In real-time mode each batch the engine hands over (up to [`REALTIME_BATCH`] ids, gathered
//!   for up to [`REALTIME_LINGER`]) becomes one job; in bulk mode ids gather into files up to
//!   the bulk limits.
//! - Adding the same id twice is harmless (seed). An add followed by a remove of the same member
//!   are uploaded in that order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::sink::bulk::{FileLimits, Framing, Lane, Pipeline, Row};
use crate::sink::{
    Acks, Action, BatchKey, BatchLimits, Method, Op, OrderKey, Plan, Refusal, SendError, SinkError,
    Transport, WireRequest, key_segment,
};
use crate::vendors::patterns;

/// The vendor's name.
const VENDOR: &str = "appcues";

/// Real-time mode: member ids per job at most.
pub const REALTIME_BATCH: usize = 10_000;

/// Real-time mode: how long a segment's batch gathers ids before its job starts.
pub const REALTIME_LINGER: Duration = Duration::from_secs(1);

/// Bulk mode: ops per write; the file limits decide the job size.
pub const BULK_BATCH: usize = 512;

/// Bulk mode: how long ops gather before they are spooled.
pub const BULK_LINGER: Duration = Duration::from_millis(50);

/// The description of a segment roster creates.
const DESCRIPTION: &str = "Created by target-roster";

/// The multipart boundary of segment uploads (a user id holding it is refused).
macro_rules! boundary {
    () => {
        "roster-segment-upload-5d1a4c8b7f3c9b2e"
    };
}

/// A CSV file with a `user_id` column in the multipart field `file`.
pub const CSV_UPLOAD: Framing = Framing {
    prefix: concat!(
        "--",
        boundary!(),
        "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"user_ids.csv\"\r\nContent-Type: text/csv\r\n\r\nuser_id\n"
    ),
    separator: "\n",
    suffix: concat!("\n\r\n--", boundary!(), "--\r\n"),
    content_type: concat!("multipart/form-data; boundary=", boundary!()),
};

/// The order key of one member of one segment: an add and a remove of it stay in order.
fn member_key(name: &str, user: &str) -> OrderKey {
    OrderKey::new("appcues segment member", &format!("{name}\u{1f}{user}"))
}

/// One user id as a CSV field.
fn csv_field(id: &str) -> Vec<u8> {
    if id.contains([',', '"']) || id.starts_with(' ') || id.ends_with(' ') {
        format!("\"{}\"", id.replace('"', "\"\"")).into_bytes()
    } else {
        id.as_bytes().to_vec()
    }
}

/// The segments writer.
#[derive(Debug)]
pub struct Segments {
    transport: Arc<dyn Transport>,
    account: String,
    pipeline: Arc<Pipeline>,
    limits: FileLimits,
    realtime: bool,
    ids: tokio::sync::Mutex<Option<HashMap<String, String>>>,
    /// Upload lanes by segment id and whether they remove.
    lanes: parking_lot::Mutex<HashMap<(String, bool), Arc<Lane>>>,
}

impl Segments {
    /// Segments of the account whose paths start with `account` (`/v2/accounts/{id}`).
    pub fn new(
        transport: Arc<dyn Transport>,
        account: String,
        pipeline: Arc<Pipeline>,
        limits: FileLimits,
        realtime: bool,
    ) -> Self {
        Segments {
            transport,
            account,
            pipeline,
            limits,
            realtime,
            ids: tokio::sync::Mutex::new(None),
            lanes: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Checks a member record and batches it with others of its segment.
    pub fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        let name = op.item.id.as_deref().unwrap_or_default();
        let user = op.item.user_id.as_deref().unwrap_or_default();
        if name.trim().is_empty() {
            return Err(Refusal::new("the segment name is empty"));
        }
        if user.contains(['\n', '\r']) {
            return Err(Refusal::new(
                "the user_id holds a line break, which a segment's CSV upload cannot carry",
            ));
        }
        if user.contains(boundary!()) {
            return Err(Refusal::new(
                "the user_id holds roster's multipart boundary and cannot be uploaded",
            ));
        }
        let (max_items, linger) = if self.realtime {
            (REALTIME_BATCH, REALTIME_LINGER)
        } else {
            (BULK_BATCH, BULK_LINGER)
        };
        let verb = match op.item.action {
            Action::Upsert => "add",
            Action::Delete => "remove",
        };
        Ok(Plan::batched(
            vec![member_key(name, user)],
            BatchKey::new(
                format!("appcues segment {name:?} {verb}"),
                BatchLimits { max_items, linger },
            ),
        ))
    }

    /// Writes a batch of one segment's additions (or removals).
    pub async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let Some(first) = batch.first() else {
            return Ok(());
        };
        let name = first.item.id.clone().unwrap_or_default();
        let action = first.item.action;
        let id = match self.id(&name).await? {
            Ok(id) => id,
            Err(refusal) => {
                for op in &batch {
                    acks.rejected(op, refusal.clone(), None);
                }
                return Ok(());
            }
        };
        let lane = self.lane(&name, &id, action);
        let rows: Vec<Row<'_>> = batch
            .iter()
            .map(|op| {
                let user = op.item.user_id.as_deref().unwrap_or_default();
                Row {
                    op,
                    bytes: csv_field(user),
                    keys: vec![member_key(&name, user)],
                }
            })
            .collect();
        self.pipeline.push(&lane, rows, acks, self.realtime).await
    }

    fn lane(&self, name: &str, id: &str, action: Action) -> Arc<Lane> {
        let mut lanes = self.lanes.lock();
        lanes
            .entry((id.to_string(), action == Action::Delete))
            .or_insert_with(|| {
                let (verb, call) = match action {
                    Action::Upsert => ("add", "add_user_ids"),
                    Action::Delete => ("remove", "remove_user_ids"),
                };
                Lane::new(
                    format!("appcues segment {name:?} {verb}"),
                    format!("{}/segments/{}/{call}", self.account, key_segment(id)),
                    CSV_UPLOAD,
                    self.limits,
                )
            })
            .clone()
    }

    /// The segment's id: looked up by name, created when missing. `Ok(Err)` rejects the
    /// segment's records (the vendor refused to create it).
    async fn id(&self, name: &str) -> Result<Result<String, Refusal>, SinkError> {
        let mut ids = self.ids.lock().await;
        if let Some(id) = ids.as_ref().and_then(|ids| ids.get(name)) {
            return Ok(Ok(id.clone()));
        }
        // Not known yet: list again (someone may have created it since the run began).
        match self.list().await? {
            Ok(listed) => {
                let found = listed.get(name).cloned();
                *ids = Some(listed);
                if let Some(id) = found {
                    return Ok(Ok(id));
                }
            }
            Err(refusal) => return Ok(Err(refusal)),
        }
        let request = WireRequest::new(Method::Post, format!("{}/segments", self.account))
            .json(json!({"name": name, "description": DESCRIPTION}));
        let answer = match self.transport.send(request).await {
            Ok(answer) => answer,
            Err(err) => return refused(err, &format!("cannot create segment {name:?}")),
        };
        let id = if answer.dry_run {
            // Nothing was created: name the segment in the paths a real run would use.
            format!("(id of new segment {name})")
        } else {
            match text_id(&answer.json()) {
                Some(id) => id,
                None => {
                    return Ok(Err(Refusal::vendor(
                        format!("appcues created segment {name:?} but its answer has no id"),
                        Some(answer.status),
                        Some(String::from_utf8_lossy(&answer.body).into_owned()),
                    )));
                }
            }
        };
        tracing::info!(vendor = VENDOR, segment = %name, id = %id, "created segment");
        ids.get_or_insert_with(HashMap::new)
            .insert(name.to_string(), id.clone());
        Ok(Ok(id))
    }

    /// Every segment by name.
    async fn list(&self) -> Result<Result<HashMap<String, String>, Refusal>, SinkError> {
        let request = WireRequest::new(Method::Get, format!("{}/segments", self.account));
        let answer = match self.transport.send(request).await {
            Ok(answer) => answer,
            Err(err) => return refused(err, "cannot list segments"),
        };
        let body = answer.json();
        let items = match &body {
            Value::Array(items) => items.as_slice(),
            Value::Object(o) => ["segments", "data", "items"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_array))
                .map(Vec::as_slice)
                .unwrap_or_default(),
            _ => &[],
        };
        let mut by_name = HashMap::new();
        for item in items {
            let (Some(name), Some(id)) = (item.get("name").and_then(Value::as_str), text_id(item))
            else {
                continue;
            };
            if by_name.contains_key(name) {
                tracing::warn!(
                    vendor = VENDOR,
                    segment = %name,
                    "more than one segment has this name; using the first listed"
                );
                continue;
            }
            by_name.insert(name.to_string(), id);
        }
        Ok(Ok(by_name))
    }
}

/// A failed segment call: fatal, or a refusal of the segment's records saying what failed.
fn refused<T>(err: SendError, what: &str) -> Result<Result<T, Refusal>, SinkError> {
    let refusal = patterns::refusal(VENDOR, err)?;
    Ok(Err(Refusal {
        reason: format!("{what}: {}", refusal.reason),
        ..refusal
    }))
}

/// An `id` field as text.
fn text_id(v: &Value) -> Option<String> {
    match v.get("id") {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_csv_fields() {
        assert_eq!(csv_field("u1"), b"u1");
        assert_eq!(csv_field("a,b"), b"\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), b"\"say \"\"hi\"\"\"");
        let mut reader = csv::Reader::from_reader(&b"user_id\n\"a,b\"\n\"say \"\"hi\"\"\"\n"[..]);
        let ids: Vec<String> = reader
            .records()
            .map(|r| r.unwrap()[0].to_string())
            .collect();
        assert_eq!(ids, vec!["a,b", "say \"hi\""]);
    }

    #[test]
    fn csv_uploads_split_and_read_back_row_by_row() {
        use crate::sink::bulk::spool::Spool;
        use crate::sink::{Origin, Ticket};
        let mut spool = Spool::new(CSV_UPLOAD).unwrap();
        for (n, id) in ["u1", "a,b", "u3"].iter().enumerate() {
            let origin = Origin {
                stream: "segments".into(),
                line: n as u64 + 2,
                record: serde_json::Map::new().into(),
            };
            spool
                .push(&csv_field(id), Ticket(n as u64), &origin)
                .unwrap();
        }
        let mut sealed = spool.seal().unwrap();
        let parts = sealed.split(2, |i| Some(usize::from(i >= 1))).unwrap();
        let mut parts: Vec<_> = parts.into_iter().map(Option::unwrap).collect();
        let second = String::from_utf8(parts[1].body().unwrap().to_vec()).unwrap();
        assert_eq!(
            second,
            format!("{}\"a,b\"\nu3{}", CSV_UPLOAD.prefix, CSV_UPLOAD.suffix)
        );
        let first = String::from_utf8(parts[0].body().unwrap().to_vec()).unwrap();
        assert_eq!(
            first,
            format!("{}u1{}", CSV_UPLOAD.prefix, CSV_UPLOAD.suffix)
        );
    }

    #[test]
    fn the_upload_is_a_multipart_csv_file() {
        assert!(CSV_UPLOAD.content_type.ends_with(boundary!()));
        let body = format!("{}u1\n\"a,b\"{}", CSV_UPLOAD.prefix, CSV_UPLOAD.suffix);
        assert!(body.starts_with(concat!("--", boundary!(), "\r\n")));
        assert!(body.ends_with(concat!("\r\n--", boundary!(), "--\r\n")));
        assert!(
            body.contains(
                "filename=\"user_ids.csv\"\r\nContent-Type: text/csv\r\n\r\nuser_id\nu1\n"
            )
        );
    }
}
