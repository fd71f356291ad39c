//! Engine tests against a scripted in-memory sink: ordering per key, ack-ordered STATE,
//! batching, deferred settlement, rejects, `on_invalid: fail`, protocol errors and fatal errors.

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
use crate::vendors::sink::{
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
    let rx = input::spawn_reader(Box::new(io::Cursor::new(input.into_bytes())), 1 << 20).unwrap();
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
            sync: super::sync::Sync::off(),
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

#[tokio::test]
async fn writes_for_one_key_keep_input_order_under_scrambled_latency() {
    let mut input = vec![serde_json::from_str::<Value>(USERS_SCHEMA).unwrap()];
    for i in 0..30u64 {
        // Five keys; early writes of each key are slow, later ones fast.
        let key = format!("u{}", i % 5);
        input.push(record(
            "users",
            json!({"id": key, "seq": i, "pause_ms": 30 - i}),
        ));
    }
    input.push(state(1));
    let r = run(
        lines(&input),
        Script::default(),
        OnInvalid::Reject,
        json!({}),
    )
    .await;
    r.result.unwrap();
    let writes = r.fake.writes.lock().clone();
    assert_eq!(writes.len(), 30);
    assert_eq!(r.report.totals.sent, 30);
    // Within each key, writes started in input order (the next one waits for the previous).
    for key in 0..5 {
        let seqs: Vec<u64> = writes
            .iter()
            .filter_map(|w| w[0].strip_prefix(&format!("u{key}#")))
            .map(|seq| seq.parse().unwrap())
            .collect();
        let expected: Vec<u64> = (0..30).filter(|i| i % 5 == key).collect();
        assert_eq!(seqs, expected, "{writes:?}");
    }
    // …while different keys overlapped: the first write of u1 started before u0's last.
    let first_u1 = writes.iter().position(|w| w[0].starts_with("u1#")).unwrap();
    let last_u0 = writes
        .iter()
        .rposition(|w| w[0].starts_with("u0#"))
        .unwrap();
    assert!(first_u1 < last_u0, "{writes:?}");
    assert_eq!(r.stdout, vec![json!({"bookmarks": {"users": {"n": 1}}})]);
}

#[tokio::test]
async fn rejects_go_to_the_file_and_the_run_goes_on() {
    let input = lines(&[
        serde_json::from_str(USERS_SCHEMA).unwrap(),
        record("users", json!({"id": "u1"})),
        record("users", json!({"id": "u2", "seats": "many"})),
        record("users", json!({"seats": 1})),
        record("users", json!({"id": "u4", "nested": {"a": 1}})),
        record("users", json!({"id": "bad"})),
        record("users", json!({"id": "u6"})),
        state(1),
    ]);
    let script = Script {
        refuse: vec!["bad"],
        ..Script::default()
    };
    let r = run(input, script, OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    let t = &r.report.totals;
    assert_eq!((t.records_in, t.sent, t.rejected), (6, 2, 4));
    // One SCHEMA line, then four RECORD lines with their reasons and lines.
    assert_eq!(r.rejects.len(), 5, "{:#?}", r.rejects);
    assert_eq!(r.rejects[0]["type"], "SCHEMA");
    let reasons: BTreeMap<u64, String> = r.rejects[1..]
        .iter()
        .map(|v| {
            (
                v["reject"]["line"].as_u64().unwrap(),
                v["reject"]["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(reasons[&3].contains("field seats"), "{reasons:?}");
    assert!(reasons[&4].contains("\"id\" is missing"), "{reasons:?}");
    assert!(reasons[&5].contains("must be scalar"), "{reasons:?}");
    assert!(reasons[&6].contains("fake refused it"), "{reasons:?}");
    let vendor = r.rejects.iter().find(|v| v["reject"]["line"] == 6).unwrap();
    assert_eq!(vendor["reject"]["vendor_status"], 422);
    assert_eq!(vendor["record"], json!({"id": "bad"}));
    assert_eq!(r.stdout.len(), 1, "the state covers rejects too");
}

#[tokio::test]
async fn max_reject_ratio_fails_at_the_end_after_the_last_safe_state() {
    let input = lines(&[
        serde_json::from_str(USERS_SCHEMA).unwrap(),
        record("users", json!({"id": "u1"})),
        record("users", json!({"id": "u2", "seats": "many"})),
        record("users", json!({"id": "u3"})),
        record("users", json!({"id": "u4", "seats": "lots"})),
        state(1),
    ]);
    // 2 of 4 rejected: 50% passes a limit of 0.5 and fails one of 0.25.
    let r = run_with(
        input.clone(),
        Script::default(),
        OnInvalid::Reject,
        json!({}),
        Some(0.5),
    )
    .await;
    r.result.unwrap();
    let r = run_with(
        input,
        Script::default(),
        OnInvalid::Reject,
        json!({}),
        Some(0.25),
    )
    .await;
    let err = r.result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("2 of 4 records rejected (50.0%), more than max_reject_ratio 0.25 allows"),
        "{text}"
    );
    assert_eq!(
        r.stdout,
        vec![json!({"bookmarks": {"users": {"n": 1}}})],
        "every record has its outcome, so the state is written first"
    );
    assert_eq!(r.report.exit_code, 1);
    assert_eq!(r.report.totals.sent, 2);
}

#[tokio::test]
async fn max_reject_ratio_stops_a_run_early_once_enough_records_have_an_outcome() {
    let mut input = vec![serde_json::from_str::<Value>(USERS_SCHEMA).unwrap()];
    for i in 0..3000u64 {
        input.push(record(
            "users",
            json!({"id": format!("u{i}"), "seats": "bad"}),
        ));
        if i % 100 == 99 {
            input.push(state(i));
        }
    }
    let r = run_with(
        lines(&input),
        Script::default(),
        OnInvalid::Reject,
        json!({}),
        Some(0.1),
    )
    .await;
    let err = r.result.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("stopped before the rest of the input"),
        "{text}"
    );
    let t = &r.report.totals;
    assert!(t.rejected >= REJECT_RATIO_MIN_OUTCOMES, "{t:?}");
    assert!(t.rejected < 3000, "the run stopped early: {t:?}");
    assert_eq!(
        t.records_in,
        t.sent + t.rejected + t.skipped + t.unprocessed,
        "{t:?}"
    );
}

#[tokio::test]
async fn a_signal_before_any_state_does_not_claim_one_covers_the_records() {
    let err = TargetError::Stopped {
        signal: "SIGINT",
        state_printed: false,
    };
    let text = err.to_string();
    assert!(!text.contains("last state printed"), "{text}");
    assert!(text.contains("no state was printed"), "{text}");
}

#[tokio::test]
async fn on_invalid_fail_stops_at_the_first_reject_and_keeps_the_state_before_it() {
    let input = lines(&[
        serde_json::from_str(USERS_SCHEMA).unwrap(),
        record("users", json!({"id": "u1"})),
        state(1),
        record("users", json!({"id": "u2", "seats": "many"})),
        state(2),
        record("users", json!({"id": "u3"})),
        state(3),
    ]);
    let r = run(input, Script::default(), OnInvalid::Fail, json!({})).await;
    let err = r.result.unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let text = err.to_string();
    assert!(text.starts_with("line 4: stream \"users\""), "{text}");
    assert_eq!(r.stdout, vec![json!({"bookmarks": {"users": {"n": 1}}})]);
    assert_eq!(r.report.exit_code, 1);
}

#[tokio::test]
async fn a_record_before_its_schema_fails_after_finishing_what_came_before() {
    let input = lines(&[
        serde_json::from_str(USERS_SCHEMA).unwrap(),
        record("users", json!({"id": "u1"})),
        state(1),
        record("groups", json!({"id": "g1"})),
        record("users", json!({"id": "u9"})),
        state(2),
    ]);
    let r = run(input, Script::default(), OnInvalid::Reject, json!({})).await;
    let err = r.result.unwrap_err().to_string();
    assert!(
        err.starts_with("line 4: RECORD for stream \"groups\" before any SCHEMA"),
        "{err}"
    );
    assert_eq!(r.report.totals.sent, 1, "u9 after the bad line is not sent");
    assert_eq!(r.stdout, vec![json!({"bookmarks": {"users": {"n": 1}}})]);
    assert!(*r.fake.flushed.lock(), "what came before is flushed");
}

#[tokio::test]
async fn invalid_json_names_the_line() {
    let input = format!(
        "{}\n{}\n{{\"type\": \"RECORD\", \"stream\": \"users\", \"record\": {{\"id\": \n",
        USERS_SCHEMA,
        record("users", json!({"id": "u1"}))
    );
    let r = run(input, Script::default(), OnInvalid::Reject, json!({})).await;
    let err = r.result.unwrap_err().to_string();
    assert!(err.starts_with("line 3: invalid JSON"), "{err}");
    assert_eq!(r.report.totals.sent, 1);
}

#[tokio::test]
async fn deferred_settlements_hold_the_state_until_flush() {
    let input = lines(&[
        json!({"type": "SCHEMA", "stream": "groups", "schema": {"type": "object"}, "key_properties": ["id"]}),
        serde_json::from_str(USERS_SCHEMA).unwrap(),
        record("users", json!({"id": "u1"})),
        state(1),
        record("groups", json!({"id": "g1"})),
        state(2),
        record("users", json!({"id": "u2"})),
        state(3),
    ]);
    let script = Script {
        defer_groups: true,
        ..Script::default()
    };
    let r = run(input, script, OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    assert_eq!(r.report.totals.sent, 3);
    // State 2 needs g1, which is settled only at flush, together with everything after it.
    assert_eq!(
        r.stdout.last(),
        Some(&json!({"bookmarks": {"users": {"n": 3}}}))
    );
    assert!(
        !r.stdout
            .contains(&json!({"bookmarks": {"users": {"n": 2}}}))
    );
}

#[tokio::test]
async fn batches_fill_per_partition_and_never_deadlock_on_shared_keys() {
    let mut input = vec![
        json!({"type": "SCHEMA", "stream": "memberships", "schema": {"type": "object"}, "key_properties": ["group_id", "user_id"]}),
        serde_json::from_str(USERS_SCHEMA).unwrap(),
    ];
    // m(g1,u1) opens a batch; the user upsert of u1 closes it (shared key); then more members.
    input.push(record(
        "memberships",
        json!({"group_id": "g1", "user_id": "u1"}),
    ));
    input.push(record(
        "memberships",
        json!({"group_id": "g2", "user_id": "u2"}),
    ));
    input.push(record("users", json!({"id": "u1"})));
    input.push(record(
        "memberships",
        json!({"group_id": "g1", "user_id": "u1"}),
    ));
    for u in 3..8 {
        input.push(record(
            "memberships",
            json!({"group_id": "g2", "user_id": format!("u{u}")}),
        ));
    }
    input.push(state(1));
    let script = Script {
        batch_memberships: true,
        ..Script::default()
    };
    let r = run(lines(&input), script, OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    assert_eq!(r.report.totals.sent, 9);
    let writes = r.fake.writes.lock().clone();
    let first_g1 = writes
        .iter()
        .position(|w| w == &vec!["g1:u1".to_string()])
        .unwrap();
    let user = writes
        .iter()
        .position(|w| w == &vec!["u1".to_string()])
        .unwrap();
    assert!(first_g1 < user, "{writes:?}");
    assert!(
        writes.iter().all(|w| w.len() <= 3),
        "batches respect max_items: {writes:?}"
    );
    assert!(
        writes.iter().any(|w| w.len() == 3),
        "batches fill: {writes:?}"
    );
}

#[tokio::test]
async fn a_fatal_error_stops_sending_and_prints_the_last_safe_state() {
    let mut input = vec![serde_json::from_str::<Value>(USERS_SCHEMA).unwrap()];
    input.push(record("users", json!({"id": "u1"})));
    input.push(state(1));
    input.push(record("users", json!({"id": "boom", "pause_ms": 20})));
    for i in 0..50 {
        input.push(record(
            "users",
            json!({"id": format!("later{i}"), "pause_ms": 50}),
        ));
    }
    input.push(state(2));
    let script = Script {
        fatal_on: Some("boom"),
        ..Script::default()
    };
    let r = run(lines(&input), script, OnInvalid::Reject, json!({})).await;
    let err = r.result.unwrap_err();
    assert!(
        matches!(err, TargetError::Sink(SinkError::Credentials { .. })),
        "{err}"
    );
    assert_eq!(r.stdout, vec![json!({"bookmarks": {"users": {"n": 1}}})]);
    assert!(!*r.fake.flushed.lock(), "no flush after a fatal error");
}

#[tokio::test]
async fn unrouted_streams_are_skipped_with_a_reason_like_meltanos_test_stream() {
    let input = lines(&[
        json!({"type": "SCHEMA", "stream": "meltano_test_stream", "schema": {"type": "object", "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"}}}, "key_properties": ["id"]}),
        record(
            "meltano_test_stream",
            json!({"id": 1, "name": "Meltano Test Record", "created_at": "2025-09-29T00:00:00Z"}),
        ),
        json!({"type": "STATE", "value": {"bookmarks": {"meltano_test_stream": {}}}}),
    ]);
    let r = run(input, Script::default(), OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    let counts = &r.report.streams["meltano_test_stream"];
    assert_eq!((counts.records_in, counts.skipped), (1, 1));
    assert!(
        counts
            .skip_reason
            .as_ref()
            .unwrap()
            .contains("streams.meltano_test_stream.kind")
    );
    let summary = r.report.summary().to_lowercase();
    assert!(
        !summary.contains("error") && !summary.contains("exception"),
        "{summary}"
    );
    assert_eq!(r.stdout.len(), 1);
}

#[tokio::test]
async fn a_writer_that_forgets_a_record_fails_the_run_without_covering_it() {
    let input = lines(&[
        serde_json::from_str(USERS_SCHEMA).unwrap(),
        record("users", json!({"id": "u1"})),
        state(1),
        record("users", json!({"id": "lost"})),
        state(2),
    ]);
    let script = Script {
        forget: Some("lost"),
        ..Script::default()
    };
    let r = run(input, script, OnInvalid::Reject, json!({})).await;
    let err = r.result.unwrap_err().to_string();
    assert!(err.contains("left 1 record without an outcome"), "{err}");
    assert_eq!(r.stdout, vec![json!({"bookmarks": {"users": {"n": 1}}})]);
}

#[tokio::test]
async fn duplicate_keys_reject_only_that_record() {
    let input = format!(
        "{}\n{}\n{}\n{}\n",
        USERS_SCHEMA,
        r#"{"type":"RECORD","stream":"users","record":{"id":"u1","id":"u2"}}"#,
        record("users", json!({"id": "u3"})),
        state(1)
    );
    let r = run(input, Script::default(), OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    assert_eq!((r.report.totals.sent, r.report.totals.rejected), (1, 1));
    assert!(
        r.rejects[1]["reject"]["reason"]
            .as_str()
            .unwrap()
            .contains("repeats the key /id")
    );
}

const GROUPS_SCHEMA: &str =
    r#"{"type":"SCHEMA","stream":"groups","schema":{"type":"object"},"key_properties":["id"]}"#;
const MEMBERSHIPS_SCHEMA: &str = r#"{"type":"SCHEMA","stream":"memberships","schema":{"type":"object"},"key_properties":["group_id","user_id"]}"#;

fn schemas() -> Vec<Value> {
    [USERS_SCHEMA, GROUPS_SCHEMA, MEMBERSHIPS_SCHEMA]
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect()
}

fn membership(group: &str, user: &str) -> Value {
    record("memberships", json!({"group_id": group, "user_id": user}))
}

fn position(writes: &[Vec<String>], id: &str) -> usize {
    writes
        .iter()
        .position(|w| w.iter().any(|i| i == id))
        .unwrap_or_else(|| panic!("{id} never written: {writes:?}"))
}

fn holding() -> Script {
    Script {
        needs_group_and_user: true,
        ..Script::default()
    }
}

#[tokio::test]
async fn memberships_before_their_groups_wait_for_them() {
    let mut input = schemas();
    input.push(record("users", json!({"id": "u1"})));
    input.push(membership("g1", "u1"));
    input.push(state(1));
    input.push(membership("g2", "u1"));
    input.push(record("groups", json!({"id": "g1"})));
    input.push(state(2));
    input.push(record("groups", json!({"id": "g2"})));
    input.push(state(3));
    let r = run(lines(&input), holding(), OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    assert_eq!(r.report.totals.sent, 5, "{:?}", r.rejects);
    assert_eq!(r.report.totals.rejected, 0);
    let writes = r.fake.writes.lock().clone();
    assert!(
        position(&writes, "g1") < position(&writes, "g1:u1"),
        "{writes:?}"
    );
    assert!(
        position(&writes, "g2") < position(&writes, "g2:u1"),
        "{writes:?}"
    );
    assert_eq!(r.report.held_memberships, 2);
    assert_eq!(r.report.spilled_memberships, 0);
    // A held membership holds back the states after it until it is written.
    assert_eq!(
        r.stdout.last(),
        Some(&json!({"bookmarks": {"users": {"n": 3}}}))
    );
}

#[tokio::test]
async fn memberships_before_their_users_wait_for_them() {
    let mut input = schemas();
    input.push(record("groups", json!({"id": "g1"})));
    for u in 1..=3 {
        input.push(membership("g1", &format!("u{u}")));
    }
    input.push(state(1));
    for u in 1..=3 {
        input.push(record("users", json!({"id": format!("u{u}")})));
    }
    input.push(state(2));
    let r = run(lines(&input), holding(), OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    assert_eq!(r.report.totals.rejected, 0, "{:?}", r.rejects);
    assert_eq!(r.report.totals.sent, 7);
    let writes = r.fake.writes.lock().clone();
    for u in 1..=3 {
        assert!(
            position(&writes, &format!("u{u}")) < position(&writes, &format!("g1:u{u}")),
            "{writes:?}"
        );
    }
    assert_eq!(r.report.held_memberships, 3);
}

#[tokio::test]
async fn a_membership_whose_group_never_comes_is_rejected_at_the_end_with_a_reason() {
    let mut input = schemas();
    input.push(record("users", json!({"id": "u1"})));
    input.push(membership("g404", "u1"));
    input.push(state(1));
    input.push(record("groups", json!({"id": "g1"})));
    input.push(membership("g1", "u1"));
    input.push(state(2));
    let r = run(lines(&input), holding(), OnInvalid::Reject, json!({})).await;
    r.result.unwrap();
    assert_eq!(r.report.totals.sent, 3);
    assert_eq!(r.report.totals.rejected, 1);
    let writes = r.fake.writes.lock().clone();
    // Tried only once the input had ended: after everything else.
    assert_eq!(
        writes.last(),
        Some(&vec!["g404:u1".to_string()]),
        "{writes:?}"
    );
    let reject = r.rejects.iter().find(|l| l["type"] == "RECORD").unwrap();
    assert_eq!(reject["stream"], "memberships");
    assert_eq!(reject["record"]["group_id"], "g404");
    assert_eq!(reject["reject"]["line"], 5);
    assert_eq!(reject["reject"]["reason"], "no group g404 at fake");
    assert_eq!(
        r.stdout.last(),
        Some(&json!({"bookmarks": {"users": {"n": 2}}}))
    );
}

#[tokio::test]
async fn held_memberships_past_the_bound_spill_to_a_file_and_all_arrive_in_order() {
    let mut input = schemas();
    // 40 memberships (and a removal) before their groups and users, with a bound of 5 in memory.
    for g in 0..4 {
        for u in 0..10 {
            input.push(membership(&format!("g{g}"), &format!("u{u}")));
        }
        input.push(state(g));
    }
    input.push(record(
        "memberships",
        json!({"group_id": "g0", "user_id": "u0", "_sdc_deleted_at": "2026-01-01T00:00:00Z"}),
    ));
    for g in 0..4 {
        input.push(record("groups", json!({"id": format!("g{g}")})));
    }
    for u in 0..10 {
        input.push(record("users", json!({"id": format!("u{u}")})));
    }
    input.push(state(99));
    let r = run_held(lines(&input), holding(), OnInvalid::Reject, json!({}), 5).await;
    r.result.unwrap();
    assert_eq!(r.report.totals.rejected, 0, "{:?}", r.rejects);
    assert_eq!(r.report.totals.sent, 55);
    assert_eq!(r.report.held_memberships, 41);
    assert_eq!(
        r.report.spilled_memberships, 36,
        "all but the first 5 went to the file"
    );
    let writes = r.fake.writes.lock().clone();
    // The removal of g0:u0 comes after its addition, though one was in memory and one spilled.
    let g0u0: Vec<usize> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.iter().any(|i| i == "g0:u0"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(g0u0.len(), 2, "{writes:?}");
    assert!(position(&writes, "u9") < position(&writes, "g3:u9"));
    assert_eq!(
        r.stdout.last(),
        Some(&json!({"bookmarks": {"users": {"n": 99}}}))
    );
}

#[tokio::test]
async fn writers_that_need_no_lookup_get_memberships_at_once() {
    let mut input = schemas();
    input.push(membership("g1", "u1"));
    input.push(record("groups", json!({"id": "g1"})));
    let r = run(
        lines(&input),
        Script::default(),
        OnInvalid::Reject,
        json!({}),
    )
    .await;
    r.result.unwrap();
    let writes = r.fake.writes.lock().clone();
    assert!(
        position(&writes, "g1:u1") < position(&writes, "g1"),
        "{writes:?}"
    );
    assert_eq!(r.report.held_memberships, 0);
}

#[tokio::test]
async fn under_on_invalid_fail_a_held_membership_rejected_at_the_end_fails_the_run() {
    let mut input = schemas();
    input.push(record("users", json!({"id": "u1"})));
    input.push(state(1));
    input.push(membership("g404", "u1"));
    input.push(state(2));
    let r = run(lines(&input), holding(), OnInvalid::Fail, json!({})).await;
    let err = r.result.unwrap_err().to_string();
    assert!(err.contains("line 6") && err.contains("g404"), "{err}");
    assert_eq!(r.stdout, vec![json!({"bookmarks": {"users": {"n": 1}}})]);
}
