//! Ordering per key, ack-ordered STATE, batching, deferred settlement and fatal errors.

use super::*;

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

#[tokio::test(start_paused = true)]
async fn a_write_backing_off_does_not_hold_its_place_in_the_write_window() {
    // As many writes as the window has places back off for 10 s (a 5xx, then a retry); the
    // writes after them must not wait for those sleeps. Before, each sleeping write kept its
    // place, so a steady few per cent of 5xx left most of the window asleep.
    let t0 = tokio::time::Instant::now();
    let mut input = vec![serde_json::from_str::<Value>(USERS_SCHEMA).unwrap()];
    let window = crate::http::DEFAULT_MAX_CONCURRENCY;
    for i in 0..window {
        input.push(record(
            "users",
            json!({"id": format!("slow{i}"), "backoff_ms": 10_000}),
        ));
    }
    for i in 0..window * 2 {
        input.push(record("users", json!({"id": format!("fast{i}")})));
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
    assert_eq!(r.report.totals.sent, window as u64 * 3);
    let ended = r.fake.ended.lock().clone();
    for (id, at) in &ended {
        let after = at.duration_since(t0);
        if id.starts_with("fast") {
            assert!(
                after < Duration::from_secs(1),
                "{id} waited {after:?} for the writes backing off"
            );
        } else {
            assert!(
                after >= Duration::from_secs(10),
                "{id} ended after {after:?}"
            );
        }
    }
}
