//! Memberships held until their groups and users are written, spilled past a bound, and
//! rejected at the end when their group never comes.

use super::*;

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
