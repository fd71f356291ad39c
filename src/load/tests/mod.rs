//! Engine tests against a scripted in-memory sink (the fake sink and the run harness are here):
//! ordering per key, ack-ordered STATE, batching, deferred settlement and fatal errors
//! (`order`); rejects, `max_reject_ratio`, `on_invalid: fail` and protocol errors (`rejects`);
//! memberships held for their groups and users (`memberships`).

mod memberships;
mod order;
mod rejects;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};

use super::reject::RejectFile;
use super::route::Router;
use super::*;
use crate::config::StreamOverride;
use crate::sink::{
    Acks, BatchKey, BatchLimits, Kind, Op, OrderKey, Plan, Refusal, Sink, SinkError, WireStats,
};

/// What the fake sink does with one user id.
#[derive(Debug, Clone, Default)]
struct Script {
    /// Ids answered with a vendor refusal.
    refuse: Vec<&'static str>,
    /// Id whose write is fatal.
    fatal_on: Option<&'static str>,
    /// Groups are settled only at flush.
    defer_groups: bool,
    /// Memberships are batched per group.
    batch_memberships: bool,
    /// Forget to settle this id.
    forget: Option<&'static str>,
    /// Like SCIM and Guru: a membership is written only when its group and user were, and the
    /// engine holds memberships for them.
    needs_group_and_user: bool,
}

#[derive(Debug, Default)]
struct Fake {
    script: Script,
    /// Every write, as the ids it carried, in the order writes started.
    writes: Mutex<Vec<Vec<String>>>,
    /// When each write ended (virtual time in tests with a paused clock), by its first id.
    ended: Mutex<Vec<(String, tokio::time::Instant)>>,
    /// (event, id): "start"/"end" marks, to see overlap.
    deferred: Mutex<Vec<Op>>,
    flushed: Mutex<bool>,
    /// Users and groups written so far ("user u1", "group g1").
    known: Mutex<std::collections::HashSet<String>>,
}

fn id_of(op: &Op) -> String {
    match op.item.kind {
        Kind::Memberships => format!(
            "{}:{}",
            op.item.group_id.clone().unwrap_or_default(),
            op.item.user_id.clone().unwrap_or_default()
        ),
        _ => match op.item.attributes.get("seq") {
            Some(seq) => format!("{}#{seq}", op.item.id.clone().unwrap_or_default()),
            None => op.item.id.clone().unwrap_or_default(),
        },
    }
}

#[async_trait::async_trait]
impl Sink for Fake {
    fn vendor(&self) -> &'static str {
        "fake"
    }

    fn plan(&self, op: &Op) -> Result<Plan, Refusal> {
        if op
            .item
            .attributes
            .get("nested")
            .is_some_and(Value::is_object)
        {
            return Err(Refusal::new("attributes.nested must be scalar"));
        }
        Ok(match op.item.kind {
            Kind::Memberships if self.script.batch_memberships => {
                let group = op.item.group_id.clone().unwrap_or_default();
                Plan::batched(
                    vec![
                        OrderKey::group(&group),
                        OrderKey::user(op.item.user_id.as_deref().unwrap_or_default()),
                    ],
                    BatchKey::new(
                        format!("members of {group}"),
                        BatchLimits {
                            max_items: 3,
                            linger: Duration::from_millis(20),
                        },
                    ),
                )
            }
            Kind::Memberships => Plan::single(vec![OrderKey::user(
                op.item.user_id.as_deref().unwrap_or_default(),
            )]),
            _ => Plan::single(vec![OrderKey::user(
                op.item.id.as_deref().unwrap_or_default(),
            )]),
        })
    }

    async fn write(&self, batch: Vec<Op>, acks: &Acks) -> Result<(), SinkError> {
        let ids: Vec<String> = batch.iter().map(id_of).collect();
        self.writes.lock().push(ids.clone());
        // Scramble completion order: later ids of a key would overtake earlier ones if the
        // engine did not order them.
        let pause = batch
            .first()
            .and_then(|op| op.item.attributes.get("pause_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // A retry backing off, as the HTTP client's does: it gives the write's place in the
        // engine's write window up while it sleeps.
        let backoff = batch
            .first()
            .and_then(|op| op.item.attributes.get("backoff_ms"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if backoff > 0 {
            crate::http::concurrency::away_from_window(tokio::time::sleep(Duration::from_millis(
                backoff,
            )))
            .await;
        }
        if let Some(id) = ids.first() {
            self.ended
                .lock()
                .push((id.clone(), tokio::time::Instant::now()));
        }
        for op in batch {
            let id = id_of(&op);
            if self.script.fatal_on == Some(id.as_str()) {
                return Err(SinkError::Credentials {
                    vendor: "fake",
                    detail: "401".into(),
                });
            }
            if self.script.forget == Some(id.as_str()) {
                continue;
            }
            if self.script.needs_group_and_user {
                let key = op.item.id.clone().unwrap_or_default();
                match op.item.kind {
                    Kind::Users => {
                        self.known.lock().insert(format!("user {key}"));
                    }
                    Kind::Groups => {
                        self.known.lock().insert(format!("group {key}"));
                    }
                    Kind::Memberships => {
                        let group =
                            format!("group {}", op.item.group_id.as_deref().unwrap_or_default());
                        let user =
                            format!("user {}", op.item.user_id.as_deref().unwrap_or_default());
                        let known = self.known.lock();
                        let missing = [group, user].into_iter().find(|k| !known.contains(k));
                        drop(known);
                        if let Some(missing) = missing {
                            acks.rejected(&op, Refusal::new(format!("no {missing} at fake")), None);
                            continue;
                        }
                    }
                    _ => {}
                }
            }
            if op.item.kind == Kind::Groups && self.script.defer_groups {
                self.deferred.lock().push(op);
            } else if self.script.refuse.contains(&id.as_str()) {
                acks.rejected(
                    &op,
                    Refusal::vendor("fake refused it", Some(422), Some("{\"bad\":1}".into())),
                    None,
                );
            } else {
                acks.accepted(&op, None);
            }
        }
        Ok(())
    }

    async fn flush(&self, acks: &Acks) -> Result<(), SinkError> {
        *self.flushed.lock() = true;
        for op in self.deferred.lock().drain(..) {
            acks.accepted(&op, None);
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }

    fn stats(&self) -> WireStats {
        WireStats {
            requests: self.writes.lock().len() as u64,
            ..WireStats::default()
        }
    }

    fn holds_memberships(&self) -> bool {
        self.script.needs_group_and_user
    }
}

/// A stdout stand-in the test can read after the engine consumed the writer.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Run {
    result: Result<(), TargetError>,
    report: report::Report,
    stdout: Vec<Value>,
    fake: Arc<Fake>,
    rejects: Vec<Value>,
}

const USERS_SCHEMA: &str = r#"{"type":"SCHEMA","stream":"users","schema":{"type":"object","properties":{"id":{"type":"string"},"seats":{"type":["integer","null"]}}},"key_properties":["id"]}"#;

fn lines(items: &[Value]) -> String {
    items
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run(input: String, script: Script, on_invalid: OnInvalid, overrides: Value) -> Run {
    run_full(
        input,
        script,
        on_invalid,
        overrides,
        hold::DEFAULT_MEMORY_BOUND,
        None,
    )
    .await
}

/// [`run`] with this many held memberships in memory before they spill.
async fn run_held(
    input: String,
    script: Script,
    on_invalid: OnInvalid,
    overrides: Value,
    hold_bound: usize,
) -> Run {
    run_full(input, script, on_invalid, overrides, hold_bound, None).await
}

/// [`run`] with a `max_reject_ratio`.
async fn run_with(
    input: String,
    script: Script,
    on_invalid: OnInvalid,
    overrides: Value,
    max_reject_ratio: Option<f64>,
) -> Run {
    run_full(
        input,
        script,
        on_invalid,
        overrides,
        hold::DEFAULT_MEMORY_BOUND,
        max_reject_ratio,
    )
    .await
}

async fn run_full(
    input: String,
    script: Script,
    on_invalid: OnInvalid,
    overrides: Value,
    hold_bound: usize,
    max_reject_ratio: Option<f64>,
) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let reject_path = dir.path().join("rejects.ndjson");
    let fake = Arc::new(Fake {
        script,
        ..Fake::default()
    });
    let overrides: BTreeMap<String, StreamOverride> = serde_json::from_value(overrides).unwrap();
    let router = Router::new(
        "fake",
        &["users", "groups", "memberships", "events"],
        &overrides,
    )
    .unwrap();
    let out = SharedBuf::default();
    // The parse workers make items of published streams, as in a real run.
    let published = crate::load::fast::Published::default();
    let rx = input::spawn_published(
        Box::new(io::Cursor::new(input.into_bytes())),
        1 << 20,
        published.clone(),
    )
    .unwrap();
    let (result, report) = engine::run(
        engine::Parts {
            sink: fake.clone(),
            router,
            on_invalid,
            rejects: Some(RejectFile::open(Some(&reject_path))),
            dry_run: None,
            out: SingerWriter::new(out.clone()),
            write_window: crate::http::DEFAULT_MAX_CONCURRENCY,
            hold_bound,
            max_reject_ratio,
            sync: crate::load::sync::Sync::off(),
            sync_log: None,
            identity: None,
            mirror: None,
            published,
        },
        rx,
    )
    .await;
    let rejects = std::fs::read_to_string(&reject_path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text = String::from_utf8(out.0.lock().clone()).unwrap();
    let stdout = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run {
        result,
        report,
        stdout,
        fake,
        rejects,
    }
}

fn record(stream: &str, record: Value) -> Value {
    json!({"type": "RECORD", "stream": stream, "record": record})
}

fn state(n: u64) -> Value {
    json!({"type": "STATE", "value": {"bookmarks": {"users": {"n": n}}}})
}
