//! The checks of the compliance suite, each for one [`Writer`]; see the module above.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use roster_sandbox::Sandbox;
use serde_json::{Value, json};

use super::Writer;
use crate::support::holdings::{Model, actual, assert_unique, events_held, expected, status_count};
use crate::support::rejects::{reason, reject_at, rejects};
use crate::support::target::{self, last_state, succeeded};

/// The input of the round trip and the reject check.
const SMALL: Model = Model::new(12, 3);
/// The input of the ack-order check: enough records that writers which settle in batches print
/// states mid-run.
const ACKED: Model = Model::new(60, 4);
/// The input of the storms: enough events that a lost answer meets one.
const STORM: Model = Model::new(150, 7).with_events();

/// The last state a run of `model` ends with.
fn final_state(model: &Model) -> String {
    json!({"offset": model.singer().1}).to_string()
}

pub fn upsert_round_trip(w: &Writer) {
    let sb = target::sandbox();
    let (input, _) = SMALL.singer();
    for pass in ["first", "second"] {
        let dir = tempfile::tempdir().unwrap();
        let out = target::run(&w.config(&sb, dir.path(), json!({})), &input);
        let stderr = succeeded(&out);
        let what = format!("{} {} ({pass} run): {stderr}", w.vendor, w.mode);
        assert_eq!(last_state(&out), Some(final_state(&SMALL)), "{what}");
        assert_eq!(rejects(dir.path()), Vec::<Value>::new(), "{what}");
        assert_eq!(
            actual(&sb, w.vendor),
            expected(w.vendor, &SMALL),
            "what {} holds after the {pass} run: {what}",
            w.vendor
        );
    }
}

pub fn state_follows_writes(w: &Writer) {
    let sb = target::builder()
        .latency(Some(w.vendor), Duration::from_millis(40))
        .start_background()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = w.config(&sb, dir.path(), json!({}));
    let (input, total) = ACKED.singer();
    let mut printed = Vec::new();
    target::each_state(&cfg, input, |state| {
        // Read the store the moment the line arrives: the sandbox applies a write before it
        // answers, so every covered record must be there already.
        let held = actual(&sb, w.vendor);
        let covers = state["offset"].as_u64().unwrap() as usize;
        for n in 0..covers {
            assert!(
                ACKED.holds(w.vendor, &held, n),
                "state {state} printed before {:?} was held by {} ({})",
                ACKED.record_key(n),
                w.vendor,
                w.mode
            );
        }
        printed.push(covers);
    });
    assert_eq!(printed.last(), Some(&total), "{printed:?}");
}

pub fn rejects_name_line_stream_and_field(w: &Writer) {
    let sb = target::sandbox();
    let dir = tempfile::tempdir().unwrap();
    let (mut input, total) = SMALL.singer();
    let first_bad = input.lines().count() as u64 + 1;
    // A user with no key at all, and a membership with no group.
    let bad = [
        ("users", json!({"name": "Nobody"}), "is missing"),
        (
            "memberships",
            json!({"user_id": Model::user_id(0)}),
            "required field \"group_id\" is missing",
        ),
    ];
    for (stream, record, _) in &bad {
        input.push_str(&format!(
            "{}\n",
            json!({"type": "RECORD", "stream": stream, "record": record})
        ));
    }
    input.push_str(&format!(
        "{}\n",
        json!({"type": "STATE", "value": {"offset": "end"}})
    ));
    let out = target::run(&w.config(&sb, dir.path(), json!({})), &input);
    let stderr = succeeded(&out);
    let what = format!("{} {}: {stderr}", w.vendor, w.mode);
    assert_eq!(
        last_state(&out).as_deref(),
        Some(r#"{"offset":"end"}"#),
        "{what}"
    );
    let rejected = rejects(dir.path());
    assert_eq!(rejected.len(), bad.len(), "{rejected:?}: {what}");
    for (at, (stream, record, says)) in bad.iter().enumerate() {
        let line = first_bad + at as u64;
        let r = reject_at(&rejected, line)
            .unwrap_or_else(|| panic!("no reject for line {line}: {rejected:?}: {what}"));
        assert_eq!(r["stream"], *stream, "{r}");
        assert_eq!(r["record"], *record, "the record as read, to replay: {r}");
        assert!(reason(r).contains(says), "line {line}: {}", reason(r));
    }
    assert!(
        stderr.contains(&format!("{} records", total + 2)) && stderr.contains(", 2 rejected"),
        "the summary counts them: {what}"
    );
    assert_eq!(actual(&sb, w.vendor), expected(w.vendor, &SMALL), "{what}");
}

pub fn meltano_test_stream_passes(w: &Writer) {
    let sb = target::sandbox();
    let dir = tempfile::tempdir().unwrap();
    target::assert_meltano_test_stream_passes(&w.config(&sb, dir.path(), json!({})));
}

pub fn fault_matrix(w: &Writer) {
    assert_eq!(w.mode, "realtime", "the matrix runs real-time writers");
    crate::faults::target_matrix::target_row(w.vendor);
}

/// Runs [`STORM`] through `sb` with `extra` settings; checks that the run ended well and that
/// users, groups and memberships landed exactly; returns the events held and the rejects.
fn storm_run(w: &Writer, sb: &Sandbox, extra: Value) -> (Vec<String>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let out = target::run(&w.config(sb, dir.path(), extra), &STORM.singer().0);
    let stderr = succeeded(&out);
    assert_eq!(last_state(&out), Some(final_state(&STORM)), "{stderr}");
    assert_eq!(
        actual(sb, w.vendor),
        expected(w.vendor, &STORM),
        "what {} holds: {stderr}",
        w.vendor
    );
    let events: Vec<String> = events_held(sb, w.vendor)
        .into_iter()
        .map(|(user, name)| {
            assert_eq!(name, "seen", "{user}'s event");
            user
        })
        .collect();
    assert_unique(events.clone(), "events");
    (events, rejects(dir.path()))
}

/// A 429 storm: every event arrives once, nothing is rejected (a 429 proves nothing happened,
/// so even events are repeated safely), and the sandbox did answer 429s.
pub fn events_429_storm(w: &Writer) {
    let (bucket, settings) = w.storm.clone().expect("the writer's storm knobs");
    let sb = target::builder()
        .rate_limit(w.vendor, bucket)
        .start_background()
        .unwrap();
    let (events, rejected) = storm_run(w, &sb, settings);
    assert_eq!(events.len(), STORM.users);
    assert!(rejected.is_empty(), "{rejected:?}");
    let throttled = status_count(&sb, w.vendor, "429");
    assert!(
        throttled > 0,
        "the sandbox answered no 429: {:?}",
        sb.stats()
    );
}

/// After 5xx answers, dropped connections and answers lost after the vendor applied the event
/// (`apply_then_fail`): an event that got a 5xx or lost its connection may have been recorded,
/// so it is not repeated but rejected with a replay hint. What the vendor holds is counted, not
/// merged: each event at most once; every event held or rejected; an event both held and
/// rejected is one the vendor applied before its answer was lost, so there are at most as many
/// as the sandbox lost answers, and at least one (the run did meet the case that a blind retry
/// would duplicate). Nothing else is rejected.
pub fn lost_answers_duplicate_nothing(w: &Writer) {
    let sb = target::builder()
        .error_rate(Some(w.vendor), 0.15)
        .drop_rate(Some(w.vendor), 0.05)
        .apply_then_fail_rate(Some(w.vendor), 0.1)
        .start_background()
        .unwrap();
    let (events, rejected) = storm_run(w, &sb, json!({"max_retries": 30}));
    let mut held = BTreeMap::<&str, usize>::new();
    for e in &events {
        *held.entry(e.as_str()).or_default() += 1;
    }
    assert!(
        rejected.iter().all(|r| r["stream"] == "events"),
        "{rejected:?}"
    );
    let mut rejected_users = BTreeSet::new();
    for r in &rejected {
        let user = r["record"]["user_id"].as_str().unwrap().to_string();
        assert!(reason(r).contains("could duplicate"), "{}", reason(r));
        assert!(rejected_users.insert(user.clone()), "{user} rejected twice");
    }
    let both = rejected_users
        .iter()
        .filter(|u| held.contains_key(u.as_str()))
        .count();
    assert_eq!(
        held.len() + rejected_users.len() - both,
        STORM.users,
        "every event is held or rejected"
    );
    let lost_answers = sb
        .requests()
        .iter()
        .filter(|r| {
            r.fault
                .as_deref()
                .is_some_and(|f| f.starts_with("apply_then_fail"))
        })
        .count();
    assert!(
        both <= lost_answers,
        "{both} events held and rejected, but only {lost_answers} answers were lost after the write"
    );
    assert!(
        both >= 1,
        "no event was applied with its answer lost: the run never met the case a blind retry duplicates ({lost_answers} lost answers)"
    );
}
