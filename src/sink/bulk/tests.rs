//! The pipeline against a scripted job API: file limits, the job lifecycle, 409, 413, failed
//! jobs, blamed rows, unknown statuses, timeouts, ordering with other writes.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::sink::{
    Action, Item, Kind, Method, Origin, SendError, SendFailure, Ticket, WireBody, WireRequest,
    WireResponse, WireStats,
};

/// How the fake vendor treats the next job.
#[derive(Debug, Clone, Default)]
struct Script {
    /// Answer 409 to this many uploads first.
    busy: u32,
    /// Answer 413 to uploads over this many bytes.
    max_body: Option<usize>,
    /// Polls a job answers "processing" before it ends.
    polls: u32,
    /// The status word while running.
    running_status: Option<&'static str>,
    /// Jobs end `failed` with this error (row-less).
    fail: Option<&'static str>,
    /// Row numbers (1-based) a job blames; with `fail_blamed` the job fails, else completes.
    blame: Vec<usize>,
    fail_blamed: bool,
    /// Only the first job fails or blames; later ones succeed.
    first_only: bool,
    /// Jobs never end.
    never_end: bool,
}

#[derive(Debug, Default)]
struct State {
    script: Script,
    uploads: Vec<(String, String)>,
    polls: Vec<String>,
    jobs: Vec<(u32, bool)>,
    conflicts: u32,
}

#[derive(Debug, Default)]
struct FakeVendor {
    state: Mutex<State>,
}

fn refused(status: u16, body: &str) -> SendError {
    SendError {
        failure: SendFailure::Refused,
        status: Some(status),
        body_excerpt: Some(body.into()),
        message: format!("POST answered {status}"),
        maybe_processed: false,
    }
}

#[async_trait::async_trait]
impl Transport for FakeVendor {
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError> {
        let mut st = self.state.lock();
        match request.method {
            Method::Post => {
                let WireBody::Bytes { bytes, .. } = &request.body else {
                    panic!("uploads carry bytes")
                };
                if st.conflicts < st.script.busy {
                    st.conflicts += 1;
                    return Err(refused(409, "another bulk job is in progress"));
                }
                if st.script.max_body.is_some_and(|m| bytes.len() > m) {
                    return Err(refused(413, "too large"));
                }
                st.uploads.push((
                    request.path.clone(),
                    String::from_utf8(bytes.to_vec()).unwrap(),
                ));
                let n = st.jobs.len();
                st.jobs.push((0, false));
                Ok(WireResponse {
                    status: 202,
                    body: json!({"job_id": format!("bulk:jobs:{n}/x"), "status": "queued"})
                        .to_string()
                        .into(),
                    dry_run: false,
                })
            }
            Method::Get => {
                st.polls.push(request.path.clone());
                let n: usize = request
                    .path
                    .rsplit("bulk%3Ajobs%3A")
                    .next()
                    .and_then(|rest| rest.strip_suffix("%2Fx"))
                    .and_then(|n| n.parse().ok())
                    .expect("the job id is percent-encoded in the path");
                let script = st.script.clone();
                let first = n == 0 || !script.first_only;
                let job = &mut st.jobs[n];
                job.0 += 1;
                if script.never_end || job.0 <= script.polls {
                    let status = script.running_status.unwrap_or("processing");
                    return Ok(WireResponse::ok(json!({"status": status})));
                }
                let body = if first && script.fail.is_some() {
                    json!({"status": "failed", "errors": [{"row": null, "message": script.fail}]})
                } else if first && !script.blame.is_empty() {
                    let errors: Vec<Value> = script
                        .blame
                        .iter()
                        .map(|r| json!({"row": r, "message": format!("row {r} is bad")}))
                        .collect();
                    let status = if script.fail_blamed {
                        "failed"
                    } else {
                        "completed"
                    };
                    json!({"status": status, "errors": errors})
                } else {
                    json!({"status": "completed", "errors": []})
                };
                Ok(WireResponse::ok(body))
            }
            _ => panic!("unexpected {request:?}"),
        }
    }

    fn stats(&self) -> WireStats {
        WireStats::default()
    }
}

fn op(n: u64) -> Op {
    Op {
        ticket: Ticket(n),
        item: Item {
            kind: Kind::Users,
            action: Action::Upsert,
            id: Some(format!("u{n}")),
            user_id: None,
            group_id: None,
            fields: Default::default(),
            attributes: Default::default(),
        },
        origin: Arc::new(Origin {
            stream: "users".into(),
            line: n + 1,
            record: json!({"id": format!("u{n}"), "plan": "pro"})
                .as_object()
                .cloned()
                .unwrap()
                .into(),
        }),
    }
}

fn rows(ops: &[Op]) -> Vec<Row<'_>> {
    ops.iter()
        .map(|op| Row {
            op,
            bytes: format!("{{\"user_id\":\"{}\"}}", op.item.id.as_deref().unwrap()).into_bytes(),
            keys: vec![OrderKey::user(op.item.id.as_deref().unwrap())],
        })
        .collect()
}

fn lane(max_rows: usize, max_bytes: u64) -> Arc<Lane> {
    Lane::new(
        "fake import",
        "/import",
        Framing::NDJSON,
        FileLimits {
            max_rows,
            max_bytes,
        },
    )
}

fn pipeline(fake: &Arc<FakeVendor>, script: Script) -> Pipeline {
    fake.state.lock().script = script;
    let mut config = JobsConfig::new("fake", "/jobs");
    config.zero_delays = true;
    config.timeout = Duration::from_secs(30);
    Pipeline::new(config, fake.clone())
}

/// Users `0..n` pushed to `lane` with the vendor following `script`, then flushed: the vendor
/// and every settlement.
async fn run(script: Script, lane: &Arc<Lane>, n: u64) -> (Arc<FakeVendor>, Vec<Settlement>) {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(&fake, script);
    let ops: Vec<Op> = (0..n).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(lane, rows(&ops), &acks, false).await.unwrap();
    p.flush().await.unwrap();
    (fake, drain(&mut rx))
}

/// Every settlement so far, by ticket.
fn drain(rx: &mut mpsc::UnboundedReceiver<Settlement>) -> Vec<Settlement> {
    let mut out = Vec::new();
    while let Ok(s) = rx.try_recv() {
        out.push(s);
    }
    out.sort_by_key(|s| s.ticket);
    out
}

fn accepted(s: &[Settlement]) -> usize {
    s.iter()
        .filter(|s| matches!(s.outcome, Outcome::Accepted))
        .count()
}

fn reason(s: &Settlement) -> String {
    match &s.outcome {
        Outcome::Rejected(r) => r.reason.clone(),
        other => panic!("not rejected: {other:?}"),
    }
}

#[tokio::test]
async fn files_respect_the_row_limit_and_rows_settle_only_when_the_job_completes() {
    let lane = lane(3, 1 << 20);
    let (fake, settled) = run(
        Script {
            polls: 2,
            ..Script::default()
        },
        &lane,
        7,
    )
    .await;
    assert_eq!(accepted(&settled), 7);
    let st = fake.state.lock();
    let bodies: Vec<&str> = st.uploads.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        bodies,
        vec![
            "{\"user_id\":\"u0\"}\n{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
            "{\"user_id\":\"u3\"}\n{\"user_id\":\"u4\"}\n{\"user_id\":\"u5\"}\n",
            "{\"user_id\":\"u6\"}\n",
        ],
        "files in input order, each within the row limit"
    );
    assert!(
        st.polls
            .iter()
            .all(|p| p.starts_with("/jobs/bulk%3Ajobs%3A"))
    );
    assert_eq!(st.polls.len(), 3 * 3, "two running answers, then completed");
}

#[tokio::test]
async fn nothing_settles_before_the_job_ends() {
    let fake = Arc::new(FakeVendor::default());
    fake.state.lock().script.never_end = true;
    let mut config = JobsConfig::new("fake", "/jobs");
    config.zero_delays = true;
    config.timeout = Duration::from_millis(300);
    let p2 = Pipeline::new(config, fake.clone());
    let lane = lane(10, 1 << 20);
    let ops: Vec<Op> = (0..3).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p2.push(&lane, rows(&ops), &acks, true).await.unwrap();
    let err = p2.flush().await.unwrap_err().to_string();
    assert!(err.contains("did not end within"), "{err}");
    assert!(err.contains("rerun from the last state"), "{err}");
    assert!(
        drain(&mut rx).is_empty(),
        "a job that never ended settles nothing"
    );
    let again = p2.push(&lane, rows(&ops), &acks, false).await.unwrap_err();
    assert!(again.to_string().contains("did not end within"));
}

#[tokio::test]
async fn a_busy_account_is_waited_for() {
    let (fake, settled) = run(
        Script {
            busy: 3,
            ..Script::default()
        },
        &lane(10, 1 << 20),
        2,
    )
    .await;
    assert_eq!(accepted(&settled), 2);
    let st = fake.state.lock();
    assert_eq!((st.conflicts, st.uploads.len()), (3, 1));
}

#[tokio::test]
async fn a_413_halves_the_file_and_lowers_the_limit_for_later_files() {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(
        &fake,
        Script {
            max_body: Some(40),
            ..Script::default()
        },
    );
    let lane = lane(100, 1 << 20);
    let ops: Vec<Op> = (0..5).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(&lane, rows(&ops), &acks, true).await.unwrap();
    p.flush().await.unwrap();
    assert_eq!(accepted(&drain(&mut rx)), 5);
    assert!(lane.max_bytes() < 85, "{}", lane.max_bytes());
    {
        let st = fake.state.lock();
        let all: String = st.uploads.iter().map(|(_, b)| b.as_str()).collect();
        assert_eq!(
            all.lines().collect::<Vec<_>>(),
            (0..5)
                .map(|n| format!("{{\"user_id\":\"u{n}\"}}"))
                .collect::<Vec<_>>(),
            "every row once, in order"
        );
        assert!(st.uploads.iter().all(|(_, b)| b.len() <= 40));
    }
    // A later file is cut at the lowered limit before it is sent.
    let more: Vec<Op> = (5..9).map(op).collect();
    let before = fake.state.lock().uploads.len();
    p.push(&lane, rows(&more), &acks, false).await.unwrap();
    p.flush().await.unwrap();
    let st = fake.state.lock();
    assert!(
        st.uploads[before..]
            .iter()
            .all(|(_, b)| b.len() as u64 <= lane.max_bytes())
    );
}

#[tokio::test]
async fn a_row_too_large_alone_is_rejected() {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(
        &fake,
        Script {
            max_body: Some(10),
            ..Script::default()
        },
    );
    let ops: Vec<Op> = (0..2).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    // Larger than the lane's own limit: rejected before any upload.
    p.push(&lane(10, 12), rows(&ops[..1]), &acks, false)
        .await
        .unwrap();
    // Within the lane's limit but refused by the vendor even alone.
    p.push(&lane(10, 1000), rows(&ops[1..]), &acks, false)
        .await
        .unwrap();
    p.flush().await.unwrap();
    let settled = drain(&mut rx);
    assert!(reason(&settled[0]).contains("more than one fake import upload may hold (12 bytes)"));
    assert!(
        reason(&settled[1]).contains("as too large"),
        "{}",
        reason(&settled[1])
    );
    assert_eq!(settled[1].origin.as_ref().unwrap().line, 2);
}

#[tokio::test]
async fn a_failed_job_rejects_its_records_with_the_vendors_error() {
    let (_, settled) = run(
        Script {
            fail: Some("the account is over its import quota"),
            ..Script::default()
        },
        &lane(10, 1 << 20),
        3,
    )
    .await;
    assert_eq!(settled.len(), 3);
    for (n, s) in settled.iter().enumerate() {
        let why = reason(s);
        assert!(why.contains("job bulk:jobs:0/x failed"), "{why}");
        assert!(why.contains("over its import quota"), "{why}");
        let origin = s.origin.as_ref().unwrap();
        assert_eq!(origin.line, n as u64 + 1);
        assert_eq!(origin.record.object()["id"], format!("u{n}"));
    }
}

#[tokio::test]
async fn a_failed_job_that_blames_rows_rejects_them_and_sends_the_rest_again() {
    let (fake, settled) = run(
        Script {
            blame: vec![2],
            fail_blamed: true,
            first_only: true,
            ..Script::default()
        },
        &lane(10, 1 << 20),
        4,
    )
    .await;
    assert_eq!(settled.len(), 4);
    assert!(reason(&settled[1]).contains("refused row 2: row 2 is bad"));
    assert_eq!(accepted(&settled), 3);
    let st = fake.state.lock();
    assert_eq!(st.uploads.len(), 2);
    assert_eq!(
        st.uploads[1].1,
        "{\"user_id\":\"u0\"}\n{\"user_id\":\"u2\"}\n{\"user_id\":\"u3\"}\n"
    );
}

#[tokio::test]
async fn a_completed_job_that_skipped_rows_rejects_only_those() {
    let (fake, settled) = run(
        Script {
            blame: vec![1, 3],
            ..Script::default()
        },
        &lane(10, 1 << 20),
        3,
    )
    .await;
    assert!(reason(&settled[0]).contains("refused row 1"));
    assert!(matches!(settled[1].outcome, Outcome::Accepted));
    assert!(reason(&settled[2]).contains("refused row 3"));
    assert_eq!(fake.state.lock().uploads.len(), 1, "nothing is sent again");
}

#[tokio::test]
async fn an_unknown_status_counts_as_running() {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(
        &fake,
        Script {
            polls: 3,
            running_status: Some("reticulating_splines"),
            ..Script::default()
        },
    );
    let ops: Vec<Op> = (0..2).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(&lane(10, 1 << 20), rows(&ops), &acks, false)
        .await
        .unwrap();
    p.flush().await.unwrap();
    assert_eq!(accepted(&drain(&mut rx)), 2);
    assert_eq!(fake.state.lock().polls.len(), 4);
}

#[tokio::test]
async fn a_write_waits_for_the_job_holding_its_key() {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(
        &fake,
        Script {
            polls: 2,
            ..Script::default()
        },
    );
    let lane = lane(100, 1 << 20);
    let ops: Vec<Op> = (0..3).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(&lane, rows(&ops), &acks, false).await.unwrap();
    // Nothing waits for keys that have no rows pending.
    p.wait_for(&[OrderKey::user("nobody")]).await.unwrap();
    assert!(fake.state.lock().uploads.is_empty());
    // u1's row is in the open file: it is sealed, uploaded, and its job ends first.
    p.wait_for(&[OrderKey::user("u1")]).await.unwrap();
    assert_eq!(fake.state.lock().uploads.len(), 1);
    assert_eq!(accepted(&drain(&mut rx)), 3);
    p.wait_for(&[OrderKey::user("u1")]).await.unwrap();
    assert_eq!(
        fake.state.lock().uploads.len(),
        1,
        "finished keys are forgotten"
    );
}

#[tokio::test]
async fn a_row_whose_key_waits_in_another_lane_goes_after_it() {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(&fake, Script::default());
    let adds = Lane::new(
        "adds",
        "/add",
        Framing::NDJSON,
        FileLimits {
            max_rows: 100,
            max_bytes: 1 << 20,
        },
    );
    let removes = Lane::new(
        "removes",
        "/remove",
        Framing::NDJSON,
        FileLimits {
            max_rows: 100,
            max_bytes: 1 << 20,
        },
    );
    let ops: Vec<Op> = (0..3).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(&adds, rows(&ops[..2]), &acks, false).await.unwrap();
    // u1 is removed after it was added: the adds file must be uploaded first.
    p.push(&removes, rows(&ops[1..2]), &acks, false)
        .await
        .unwrap();
    p.push(&adds, rows(&ops[2..]), &acks, false).await.unwrap();
    p.flush().await.unwrap();
    assert_eq!(accepted(&drain(&mut rx)), 4);
    let st = fake.state.lock();
    let paths: Vec<&str> = st.uploads.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, vec!["/add", "/remove", "/add"]);
}

#[tokio::test]
async fn a_dry_run_accepts_without_polling() {
    let fake = Arc::new(crate::sink::ScriptedTransport::new(|_| {
        Ok(WireResponse {
            status: 200,
            body: Default::default(),
            dry_run: true,
        })
    }));
    let mut config = JobsConfig::new("fake", "/jobs");
    config.zero_delays = true;
    let p = Pipeline::new(config, fake.clone());
    let ops: Vec<Op> = (0..2).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(&lane(10, 1 << 20), rows(&ops), &acks, false)
        .await
        .unwrap();
    p.flush().await.unwrap();
    assert_eq!(accepted(&drain(&mut rx)), 2);
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn refused_credentials_stop_the_run() {
    let fake = Arc::new(crate::sink::ScriptedTransport::new(|_| {
        Err(SendError {
            failure: SendFailure::Credentials,
            status: Some(401),
            body_excerpt: None,
            message: "POST /import answered 401".into(),
            maybe_processed: false,
        })
    }));
    let mut config = JobsConfig::new("fake", "/jobs");
    config.zero_delays = true;
    let p = Pipeline::new(config, fake);
    let ops: Vec<Op> = (0..2).map(op).collect();
    let (acks, mut rx) = Acks::channel();
    p.push(&lane(10, 1 << 20), rows(&ops), &acks, false)
        .await
        .unwrap();
    let err = p.flush().await.unwrap_err();
    assert!(matches!(err, SinkError::Credentials { .. }), "{err}");
    assert!(drain(&mut rx).is_empty());
}

#[tokio::test]
async fn a_row_batch_keeps_no_byte_of_a_row_that_failed_to_encode() {
    let fake = Arc::new(FakeVendor::default());
    let p = pipeline(&fake, Script::default());
    let ops: Vec<Op> = (0..4).map(op).collect();
    let mut batch = RowBatch::with_capacity(0, 0);
    for op in &ops {
        let id = op.item.id.clone().unwrap();
        let pushed = batch.push(op, |out| {
            out.extend_from_slice(format!("{{\"user_id\":\"{id}\"").as_bytes());
            if id == "u2" {
                return Err("half a row");
            }
            out.push(b'}');
            Ok([OrderKey::user(&id)])
        });
        assert_eq!(pushed.is_err(), id == "u2");
    }
    assert_eq!(batch.len(), 3);
    let (acks, mut rx) = Acks::channel();
    p.push_batch(&lane(10, 1 << 20), &batch, &acks, false)
        .await
        .unwrap();
    p.wait_for(&[OrderKey::user("u3")]).await.unwrap();
    let settled = drain(&mut rx);
    assert_eq!(
        settled.iter().map(|s| s.ticket).collect::<Vec<_>>(),
        vec![Ticket(0), Ticket(1), Ticket(3)],
        "waiting for u3's key sealed its file and waited for the job"
    );
    assert_eq!(
        fake.state.lock().uploads[0].1,
        "{\"user_id\":\"u0\"}\n{\"user_id\":\"u1\"}\n{\"user_id\":\"u3\"}\n"
    );
}
