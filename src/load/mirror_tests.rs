#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::json;

use super::*;
use crate::ledger::EntryKey;
use crate::sink::PayloadHash;

const GUARDS: Guards = Guards {
    max_deletes: None,
    max_ratio: 1.0,
    force: false,
    plan: false,
};

fn ledger(dir: &tempfile::TempDir) -> Ledger {
    Ledger::open(&dir.path().join("ledger.sqlite"), "userflow", "acct").unwrap()
}

/// `keys` written (accepted) for `stream` in `version`, committed.
fn written(ledger: &mut Ledger, stream: &str, keys: &[&str], version: u64) {
    for key in keys {
        let key = EntryKey::new(Kind::Users, *key);
        let entry = Entry {
            hash: Some(PayloadHash(1)),
            held: true,
            version: Some(version),
        };
        ledger.expect(&key, entry);
        ledger.accepted(key, stream, entry);
    }
    ledger.commit(None).unwrap();
}

fn stale(ledger: &mut Ledger, due: &[Due]) -> Vec<String> {
    ledger.commit(None).unwrap();
    Mirror::plan(ledger, due).unwrap()[0]
        .stale
        .iter()
        .map(|s| s.key.key.clone())
        .collect()
}

fn due(stream: &str, version: u64) -> Due {
    Due {
        stream: stream.into(),
        version,
    }
}

#[test]
fn a_classic_pass_is_read_through_at_its_closing_message_and_remembered_as_classic() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    written(&mut ledger, "users", &["a", "b", "gone"], 1);
    let mut mirror = Mirror::new(GUARDS);
    assert!(!mirror.activate(&mut ledger, "users", 2).unwrap(), "opens");
    mirror.record(&mut ledger, "users", Some(2)).unwrap();
    written(&mut ledger, "users", &["a", "b"], 2);
    assert!(mirror.activate(&mut ledger, "users", 2).unwrap(), "closes");
    let found = mirror.due(&mut ledger, None, |_| true).unwrap();
    assert_eq!(found, [due("users", 2)]);
    assert_eq!(stale(&mut ledger, &found), ["gone"]);
    let pass = ledger.pass("users").unwrap();
    assert_eq!(
        (pass.closed, pass.pending, pass.classic),
        (Some(2), Some(2), true)
    );
    let planned = Mirror::plan(&ledger, &found).unwrap();
    Mirror::begin(&mut ledger, &planned);
    ledger.commit(None).unwrap();
    let gone = EntryKey::new(Kind::Users, "gone");
    assert_eq!(
        ledger.get(&gone).unwrap().unwrap().hash,
        None,
        "forgotten before the delete is sent"
    );
    Mirror::settled(&mut ledger, &planned).unwrap();
    assert_eq!(ledger.pass("users").unwrap().pending, None);

    // Next input: this tap closes its passes, so one it opens and never closes was cut short.
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "users", 3).unwrap();
    mirror.record(&mut ledger, "users", Some(3)).unwrap();
    assert_eq!(mirror.due(&mut ledger, None, |_| true).unwrap(), []);
}

#[test]
fn a_start_only_pass_is_read_through_at_the_clean_end_unless_the_state_keeps_it_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "public-users", 7).unwrap();
    mirror.record(&mut ledger, "public-users", Some(7)).unwrap();
    let under_way = json!({"bookmarks": {"public-users": {"version": 7}}});
    assert_eq!(
        mirror.due(&mut ledger, Some(&under_way), |_| true).unwrap(),
        []
    );
    let done = json!({"bookmarks": {"public-users": {}}});
    assert_eq!(
        mirror.due(&mut ledger, Some(&done), |_| true).unwrap(),
        [due("public-users", 7)]
    );
    assert!(!ledger.pass("public-users").unwrap().classic);
}

#[test]
fn a_pass_whose_start_was_not_read_deletes_nothing_and_the_next_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    // A classic tap's later pass (no opening message) on a ledger that never saw a pass: its
    // first records may have gone elsewhere.
    let mut mirror = Mirror::new(GUARDS);
    mirror.record(&mut ledger, "users", Some(5)).unwrap();
    mirror.activate(&mut ledger, "users", 5).unwrap();
    assert_eq!(mirror.due(&mut ledger, None, |_| true).unwrap(), []);
    assert_eq!(ledger.pass("users").unwrap().closed, Some(5));
    // The next pass begins after one this target saw close: read from its start.
    let mut mirror = Mirror::new(GUARDS);
    mirror.record(&mut ledger, "users", Some(6)).unwrap();
    assert_eq!(ledger.pass("users").unwrap().reading, Some(6));
    mirror.activate(&mut ledger, "users", 6).unwrap();
    assert_eq!(
        mirror.due(&mut ledger, None, |_| true).unwrap(),
        [due("users", 6)]
    );
}

#[test]
fn a_resumed_pass_closes_when_this_target_read_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "users", 9).unwrap();
    mirror.record(&mut ledger, "users", Some(9)).unwrap();
    ledger.commit(Some(&json!({"page": 1}))).unwrap();
    // Killed; the tap resumes pass 9 and closes it.
    let mut mirror = Mirror::new(GUARDS);
    mirror.record(&mut ledger, "users", Some(9)).unwrap();
    mirror.activate(&mut ledger, "users", 9).unwrap();
    assert_eq!(
        mirror.due(&mut ledger, None, |_| true).unwrap(),
        [due("users", 9)]
    );
}

#[test]
fn a_resumed_pass_with_nothing_left_closes_at_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "users", 9).unwrap();
    mirror.record(&mut ledger, "users", Some(9)).unwrap();
    ledger.commit(None).unwrap();
    // Resumed after its last page: the closing message alone.
    let mut mirror = Mirror::new(GUARDS);
    assert!(mirror.activate(&mut ledger, "users", 9).unwrap(), "closes");
    assert_eq!(
        mirror.due(&mut ledger, None, |_| true).unwrap(),
        [due("users", 9)]
    );
    assert!(ledger.pass("users").unwrap().classic);
}

#[test]
fn a_start_only_run_in_the_same_second_as_the_last_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    for _ in 0..2 {
        let mut mirror = Mirror::new(GUARDS);
        assert!(!mirror.activate(&mut ledger, "users", 5).unwrap(), "opens");
        mirror.record(&mut ledger, "users", Some(5)).unwrap();
        assert_eq!(
            mirror.due(&mut ledger, None, |_| true).unwrap(),
            [due("users", 5)]
        );
        ledger.commit(None).unwrap();
    }
    assert!(!ledger.pass("users").unwrap().classic);
}

#[test]
fn no_activate_version_no_delete_even_with_a_pending_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    ledger.set_pass(
        "users",
        Pass {
            pending: Some(4),
            closed: Some(4),
            ..Pass::default()
        },
    );
    let mut mirror = Mirror::new(GUARDS);
    mirror.record(&mut ledger, "users", None).unwrap();
    assert_eq!(mirror.due(&mut ledger, None, |_| true).unwrap(), []);
    // The next input with an ACTIVATE_VERSION for the stream finishes it.
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "users", 8).unwrap();
    mirror.record(&mut ledger, "users", Some(8)).unwrap();
    mirror.record(&mut ledger, "users", None).unwrap();
    assert_eq!(
        mirror.due(&mut ledger, None, |_| true).unwrap(),
        [due("users", 4)],
        "a record without a version spoils pass 8, not the pending pass 4"
    );
}

#[test]
fn a_stream_that_is_not_written_has_no_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "users", 2).unwrap();
    mirror.record(&mut ledger, "users", Some(2)).unwrap();
    mirror.activate(&mut ledger, "users", 2).unwrap();
    assert_eq!(mirror.due(&mut ledger, None, |s| s != "users").unwrap(), []);
    assert_eq!(ledger.pass("users").unwrap().pending, None);
}

#[test]
fn a_rejected_record_whose_key_is_unknown_spoils_its_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    let mut mirror = Mirror::new(GUARDS);
    mirror.activate(&mut ledger, "users", 2).unwrap();
    mirror.record(&mut ledger, "users", Some(2)).unwrap();
    mirror.taint("users");
    mirror.activate(&mut ledger, "users", 2).unwrap();
    assert_eq!(mirror.due(&mut ledger, None, |_| true).unwrap(), []);
}

#[test]
fn memberships_of_a_deleted_user_are_not_sent_and_deletes_go_memberships_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = ledger(&dir);
    let entry = Entry {
        hash: Some(PayloadHash(1)),
        held: true,
        version: Some(1),
    };
    for key in [
        EntryKey::new(Kind::Users, "u1"),
        EntryKey::new(Kind::Users, "u2"),
        EntryKey::membership("u1", "g"),
        EntryKey::membership("u2", "g"),
        EntryKey::membership("u3", "g"),
    ] {
        ledger.expect(&key, entry);
        ledger.accepted(key, "users", entry);
    }
    ledger.commit(None).unwrap();
    let key = EntryKey::new(Kind::Users, "u2");
    ledger.seen(key, entry, 2);
    let key = EntryKey::membership("u2", "g");
    ledger.seen(key, entry, 2);
    ledger.commit(None).unwrap();
    let planned = Mirror::plan(&ledger, &[due("users", 2)]).unwrap();
    Mirror::begin(&mut ledger, &planned);
    let keys: Vec<(Kind, &str)> = planned[0]
        .stale
        .iter()
        .map(|s| (s.key.kind, s.key.key.as_str()))
        .collect();
    assert_eq!(keys, [(Kind::Memberships, "u3"), (Kind::Users, "u1")]);
    assert_eq!(planned[0].held, 5);
    ledger.commit(None).unwrap();
    let gone = ledger
        .get(&EntryKey::membership("u1", "g"))
        .unwrap()
        .unwrap();
    assert!(!gone.held, "it went with its user");
}

#[test]
fn guards_name_the_first_limit_passed() {
    let planned = |deletes: usize, held: u64| Planned {
        stream: "users".into(),
        version: 1,
        stale: (0..deletes)
            .map(|i| StaleEntry {
                key: EntryKey::new(Kind::Users, i.to_string()),
                version: None,
            })
            .collect(),
        with_owner: Vec::new(),
        held,
    };
    let guards = Guards {
        max_deletes: Some(5),
        max_ratio: 0.1,
        force: false,
        plan: false,
    };
    assert_eq!(guards.check(&planned(1, 10)), None, "10% is not past 0.1");
    let tripped = guards.check(&planned(2, 10)).unwrap();
    assert_eq!(
        (tripped.deletes, tripped.held, tripped.limit.as_str()),
        (2, 10, "max_delete_ratio 0.1")
    );
    let tripped = guards.check(&planned(6, 1000)).unwrap();
    assert_eq!(tripped.limit, "max_deletes 5");
    assert_eq!(guards.check(&planned(0, 0)), None);
}

#[test]
fn a_delete_stands_for_a_replayable_record() {
    let user = StaleEntry {
        key: EntryKey::new(Kind::Users, "u1"),
        version: Some(1),
    };
    let (item, record) = delete_of(&user, "id", "2026-01-01T00:00:00Z");
    assert_eq!((item.kind, item.action), (Kind::Users, Action::Delete));
    assert_eq!(item.id.as_deref(), Some("u1"));
    assert_eq!(
        Value::Object(record),
        json!({"id": "u1", "_sdc_deleted_at": "2026-01-01T00:00:00Z"})
    );
    let member = StaleEntry {
        key: EntryKey::membership("u1", "g1"),
        version: None,
    };
    let (item, record) = delete_of(&member, "id", "t");
    assert_eq!(
        (item.user_id.as_deref(), item.group_id.as_deref()),
        (Some("u1"), Some("g1"))
    );
    assert_eq!(record["group_id"], "g1");
}
