//! Rejects, `max_reject_ratio`, `on_invalid: fail`, protocol errors and skipped streams.

use super::*;

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

#[tokio::test]
async fn records_after_a_new_schema_are_judged_by_it_even_when_parsed_before_it_was_read() {
    // The parse workers run ahead of the engine and check records against the SCHEMA the
    // engine has published so far: records after the second SCHEMA are parsed (and passed) with
    // the first one before the engine reads the second. The engine must judge them again.
    let loose = json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
        "schema": {"type": "object", "properties": {"id": {"type": "string"}}}});
    let strict = json!({"type": "SCHEMA", "stream": "users", "key_properties": ["id"],
        "schema": {"type": "object", "properties": {"id": {"type": "string"},
        "seats": {"type": "integer"}}}});
    let n = 3000;
    let mut items = vec![loose];
    items.extend((0..n).map(|i| record("users", json!({"id": format!("a{i}"), "seats": "many"}))));
    items.push(strict);
    items.extend((0..n).map(|i| record("users", json!({"id": format!("b{i}"), "seats": "many"}))));
    items.push(state(1));
    let r = run(
        lines(&items),
        Script::default(),
        OnInvalid::Reject,
        json!({}),
    )
    .await;
    r.result.unwrap();
    let t = &r.report.totals;
    assert_eq!((t.records_in, t.sent, t.rejected), (2 * n, n, n));
    let rejected_lines: Vec<u64> = r
        .rejects
        .iter()
        .filter_map(|v| v["reject"]["line"].as_u64())
        .collect();
    assert_eq!(rejected_lines.len(), n as usize);
    assert!(
        rejected_lines.iter().all(|&line| line > n + 1),
        "a record before the second SCHEMA was rejected"
    );
}
