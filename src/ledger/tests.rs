#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use serde_json::json;

fn entry(hash: u128, version: Option<u64>) -> Entry {
    Entry {
        hash: Some(PayloadHash(hash)),
        held: true,
        version,
    }
}

#[test]
fn entries_are_scoped_and_survive_a_reopen_only_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/roster/ledger.sqlite");
    let u1 = EntryKey::new(Kind::Users, "u1");
    let mut ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    ledger.expect(&u1, entry(7, None));
    assert_eq!(
        ledger.get(&u1).unwrap(),
        Some(entry(7, None)),
        "this run sees what it sent"
    );
    ledger.accepted(u1.clone(), "users", entry(7, None));
    drop(ledger);
    // Never committed (a kill before the commit): the record is simply sent again.
    let mut ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    assert_eq!(ledger.get(&u1).unwrap(), None);
    ledger.expect(&u1, entry(7, Some(3)));
    ledger.accepted(u1.clone(), "users", entry(7, Some(3)));
    ledger.commit(Some(&json!({"bookmarks": 1}))).unwrap();
    drop(ledger);
    let ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    assert_eq!(ledger.get(&u1).unwrap(), Some(entry(7, Some(3))));
    assert_eq!(ledger.last_state().unwrap(), Some(json!({"bookmarks": 1})));
    let other = Ledger::open(&path, "userflow", "https://b").unwrap();
    assert_eq!(other.get(&u1).unwrap(), None, "another account");
    let other = Ledger::open(&path, "appcues", "https://a").unwrap();
    assert_eq!(other.get(&u1).unwrap(), None, "another vendor");
}

#[cfg(unix)]
#[test]
fn the_file_and_its_directory_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/ledger.sqlite");
    let mut ledger = Ledger::open(&path, "userflow", "x").unwrap();
    let key = EntryKey::new(Kind::Users, "u1");
    ledger.expect(&key, entry(1, None));
    ledger.accepted(key, "users", entry(1, None));
    ledger.commit(None).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    let wal = path.with_extension("sqlite-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
}

#[test]
fn a_refused_write_forgets_the_hash_but_not_that_the_record_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path, "scim", "x").unwrap();
    let key = EntryKey::new(Kind::Users, "u1");
    ledger.expect(&key, entry(1, None));
    ledger.accepted(key.clone(), "users", entry(1, None));
    ledger.commit(None).unwrap();
    ledger.expect(&key, entry(2, None));
    ledger.unknown(key.clone(), None);
    assert_eq!(ledger.get(&key).unwrap().unwrap().hash, None);
    ledger.commit(None).unwrap();
    let stored = ledger.get(&key).unwrap().unwrap();
    assert_eq!((stored.hash, stored.held), (None, true));
}

#[test]
fn older_versions_and_counts_per_stream_for_mirror_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path, "userflow", "x").unwrap();
    for (key, stream, version) in [
        (EntryKey::new(Kind::Users, "old"), "users", Some(1)),
        (EntryKey::new(Kind::Users, "new"), "users", Some(2)),
        (EntryKey::new(Kind::Users, "none"), "users", None),
        (EntryKey::membership("u", "g"), "members", Some(1)),
    ] {
        ledger.expect(&key, entry(1, version));
        ledger.accepted(key, stream, entry(1, version));
    }
    // A deleted record (tombstone) is not held, so it is never deleted again.
    let gone = EntryKey::new(Kind::Users, "gone");
    let tombstone = Entry {
        held: false,
        ..entry(5, Some(1))
    };
    ledger.expect(&gone, tombstone);
    ledger.accepted(gone, "users", tombstone);
    ledger.commit(None).unwrap();
    let stale: Vec<String> = ledger
        .older_than("users", 2)
        .unwrap()
        .into_iter()
        .map(|s| s.key.key)
        .collect();
    assert_eq!(stale, ["none", "old"]);
    assert_eq!(
        ledger.held_counts().unwrap(),
        BTreeMap::from([("members".to_string(), 1), ("users".to_string(), 3)])
    );
    // Seen again unchanged in version 2: no longer older.
    let old = EntryKey::new(Kind::Users, "old");
    let current = ledger.get(&old).unwrap().unwrap();
    ledger.seen(old, current, 2);
    ledger.commit(None).unwrap();
    assert_eq!(ledger.older_than("users", 2).unwrap().len(), 1);
}

#[test]
fn a_dry_run_reads_and_never_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    assert!(Ledger::open_read_only(&path, "v", "a").unwrap().is_none());
    assert!(!path.exists(), "a dry run creates no ledger");
    let mut ledger = Ledger::open(&path, "v", "a").unwrap();
    let key = EntryKey::new(Kind::Groups, "g1");
    ledger.expect(&key, entry(9, None));
    ledger.accepted(key.clone(), "groups", entry(9, None));
    ledger.commit(None).unwrap();
    drop(ledger);
    let mut read = Ledger::open_read_only(&path, "v", "a").unwrap().unwrap();
    assert_eq!(read.get(&key).unwrap(), Some(entry(9, None)));
    read.expect(&key, entry(10, None));
    read.accepted(key.clone(), "groups", entry(10, None));
    read.commit(None).unwrap();
    assert_eq!(read.get(&key).unwrap(), Some(entry(9, None)));
}

#[test]
fn a_dry_run_of_an_account_without_entries_still_sees_what_it_sent_itself() {
    // Read-only over an account with no entry: lookups skip SQLite, but a key the run
    // dispatched earlier (a record repeated in the input) is still found.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path, "v", "other").unwrap();
    let key = EntryKey::new(Kind::Users, "u1");
    ledger.expect(&key, entry(9, None));
    ledger.accepted(key.clone(), "users", entry(9, None));
    ledger.commit(None).unwrap();
    drop(Ledger::open(&path, "v", "a").unwrap());
    let mut read = Ledger::open_read_only(&path, "v", "a").unwrap().unwrap();
    assert_eq!(read.get(&key).unwrap(), None, "another account's entry");
    read.expect(&key, entry(10, None));
    assert_eq!(read.get(&key).unwrap(), Some(entry(10, None)));
    let other = Ledger::open_read_only(&path, "v", "other")
        .unwrap()
        .unwrap();
    assert_eq!(other.get(&key).unwrap(), Some(entry(9, None)));
}

#[test]
fn passes_are_committed_with_the_entries_and_a_refused_write_keeps_its_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut ledger = Ledger::open(&path, "userflow", "x").unwrap();
    let (kept, refused, dropped) = (
        EntryKey::new(Kind::Users, "kept"),
        EntryKey::new(Kind::Users, "refused"),
        EntryKey::new(Kind::Users, "dropped"),
    );
    for key in [&kept, &refused, &dropped] {
        ledger.expect(key, entry(1, Some(1)));
        ledger.accepted(key.clone(), "users", entry(1, Some(1)));
    }
    ledger.commit(None).unwrap();
    // Pass 2: `kept` is rejected before anything is sent, `refused` is refused by the vendor:
    // both are in the source, so neither may look deleted.
    ledger.present(kept.clone(), 2);
    ledger.expect(&refused, entry(2, Some(2)));
    ledger.unknown(refused.clone(), Some(2));
    ledger.present(EntryKey::new(Kind::Users, "never written"), 2);
    let pass = Pass {
        reading: Some(2),
        closed: Some(2),
        pending: Some(2),
        classic: true,
    };
    ledger.set_pass("users", pass);
    assert_eq!(
        ledger.pass("users").unwrap(),
        pass,
        "this run sees its change"
    );
    drop(ledger);
    let mut ledger = Ledger::open(&path, "userflow", "x").unwrap();
    assert_eq!(
        ledger.pass("users").unwrap(),
        Pass::default(),
        "not committed: not known"
    );
    assert_eq!(ledger.older_than("users", 2).unwrap().len(), 3);
    ledger.present(kept.clone(), 2);
    ledger.unknown(refused.clone(), Some(2));
    ledger.set_pass("users", pass);
    ledger.commit(Some(&json!({"s": 1}))).unwrap();
    drop(ledger);
    let mut ledger = Ledger::open(&path, "userflow", "x").unwrap();
    let stale: Vec<String> = ledger
        .older_than("users", 2)
        .unwrap()
        .into_iter()
        .map(|s| s.key.key)
        .collect();
    assert_eq!(stale, ["dropped"]);
    assert_eq!(ledger.pass("users").unwrap(), pass);
    assert_eq!(ledger.pending_passes().unwrap(), [("users".to_string(), 2)]);
    assert_eq!(
        ledger
            .get(&EntryKey::new(Kind::Users, "never written"))
            .unwrap(),
        None
    );
    let mut read = Ledger::open_read_only(&path, "userflow", "x")
        .unwrap()
        .unwrap();
    assert_eq!(read.pass("users").unwrap(), pass);
}

#[test]
fn keys_in_flight_do_not_make_a_commit_due() {
    // A bulk run keeps a whole file of keys in flight until its job ends: those are not what
    // a commit frees, so they must not make every settlement commit (and scan them all).
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("l.sqlite"), "appcues", "https://a").unwrap();
    let keys: Vec<EntryKey> = (0..2 * COMMIT_EVERY + 2)
        .map(|i| EntryKey::new(Kind::Users, format!("u{i}")))
        .collect();
    for key in &keys {
        ledger.expect(key, entry(1, None));
    }
    ledger.accepted(keys[0].clone(), "users", entry(1, None));
    assert_eq!(ledger.staged(), 1, "one change staged, the rest in flight");
    ledger.commit(None).unwrap();
    assert_eq!(ledger.staged(), 0);
    for key in &keys[1..] {
        ledger.accepted(key.clone(), "users", entry(1, None));
    }
    assert_eq!(ledger.staged(), keys.len() - 1);
    ledger.commit(None).unwrap();
    assert_eq!(ledger.staged(), 0, "a commit frees the keys that landed");
    // Keys read again unchanged with nothing in flight count as freeable; sent again, not.
    ledger.seen(keys[0].clone(), entry(1, None), 4);
    assert_eq!(ledger.staged(), 1);
    ledger.commit(None).unwrap();
    ledger.seen(keys[1].clone(), entry(1, None), 5);
    ledger.expect(&keys[1], entry(2, Some(5)));
    ledger.commit(None).unwrap();
    assert_eq!(ledger.get(&keys[1]).unwrap(), Some(entry(2, Some(5))));
}

#[test]
fn a_first_sync_asks_the_file_only_for_keys_it_wrote_and_finds_them_after_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let mut ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    let keys: Vec<EntryKey> = (0..3 * COMMIT_EVERY)
        .map(|i| EntryKey::new(Kind::Users, format!("u{i}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(ledger.get(key).unwrap(), None);
        ledger.expect(key, entry(i as u128, Some(1)));
        ledger.accepted(key.clone(), "users", entry(i as u128, Some(1)));
        if ledger.staged() >= COMMIT_EVERY {
            ledger.commit(None).unwrap();
        }
    }
    // Only the filter's false "maybe"s (about 1%) go to the file; before, every record did.
    assert!(
        ledger.lookups() < keys.len() as u64 / 50,
        "a first sync asked SQLite {} times for {} new keys",
        ledger.lookups(),
        keys.len()
    );
    ledger.commit(None).unwrap();
    // Written and committed in this run: found in the file, as before.
    for (i, key) in keys.iter().enumerate().step_by(997) {
        assert_eq!(ledger.get(key).unwrap(), Some(entry(i as u128, Some(1))));
    }
    // A refused write of a new key, committed: still no entry for it.
    let refused = EntryKey::new(Kind::Users, "refused");
    ledger.expect(&refused, entry(1, None));
    ledger.unknown(refused.clone(), Some(1));
    ledger.commit(None).unwrap();
    assert_eq!(ledger.get(&refused).unwrap(), None);
    // Keys never written: at most a few false "maybe"s go to the file.
    let before = ledger.lookups();
    for i in 0..10_000 {
        let key = EntryKey::new(Kind::Users, format!("new-{i}"));
        assert_eq!(ledger.get(&key).unwrap(), None);
    }
    assert!(
        ledger.lookups() - before < 500,
        "{}",
        ledger.lookups() - before
    );
    drop(ledger);
    // A run on an account with entries asks the file.
    let ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    assert_eq!(ledger.get(&keys[5]).unwrap(), Some(entry(5, Some(1))));
    assert_eq!(
        ledger.get(&EntryKey::new(Kind::Users, "new-1")).unwrap(),
        None
    );
    assert_eq!(ledger.lookups(), 2);
}

#[test]
fn a_commit_of_many_rows_applies_them_in_order_as_one_statement_each_did() {
    // Runs of accepted writes go out 64 rows a statement: a key twice in one run ends as its
    // last write (a missing version keeps the earlier one), and other changes between them
    // stay in their place.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sqlite");
    let mut ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    let twice = EntryKey::new(Kind::Users, "twice");
    let seen = EntryKey::new(Kind::Users, "seen");
    ledger.expect(&seen, entry(9, Some(1)));
    ledger.accepted(seen.clone(), "users", entry(9, Some(1)));
    ledger.commit(None).unwrap();
    for i in 0..300u128 {
        let key = match i {
            3 => twice.clone(),
            10 => twice.clone(),
            _ => EntryKey::new(Kind::Users, format!("u{i}")),
        };
        let written = match i {
            10 => entry(2, None),
            3 => entry(1, Some(7)),
            _ => entry(i, Some(1)),
        };
        ledger.expect(&key, written);
        ledger.accepted(key, "users", written);
        if i == 100 {
            ledger.seen(seen.clone(), entry(9, Some(1)), 4);
        }
    }
    ledger.commit(None).unwrap();
    drop(ledger);
    let ledger = Ledger::open(&path, "userflow", "https://a").unwrap();
    assert_eq!(ledger.get(&twice).unwrap(), Some(entry(2, Some(7))));
    assert_eq!(ledger.get(&seen).unwrap(), Some(entry(9, Some(4))));
    for i in [0u128, 63, 64, 127, 128, 299] {
        let key = EntryKey::new(Kind::Users, format!("u{i}"));
        assert_eq!(ledger.get(&key).unwrap(), Some(entry(i, Some(1))), "u{i}");
    }
    assert_eq!(ledger.held_counts().unwrap().get("users"), Some(&300));
}

#[test]
fn expectations_are_kept_packed_and_by_key_print_without_losing_a_bit() {
    for entry in [
        Entry::default(),
        entry(u128::MAX, Some(u64::MAX)),
        entry(1 << 64 | 3, Some(0)),
        Entry {
            hash: Some(PayloadHash(0)),
            held: false,
            version: None,
        },
    ] {
        assert_eq!(Packed::from(entry).get(), entry);
    }
    assert_eq!(std::mem::size_of::<Expected>(), 40);
    // A membership is not the user whose key is its member's, nor the group split elsewhere.
    let prints = [
        KeyPrint::of(&EntryKey::new(Kind::Users, "ab")),
        KeyPrint::of(&EntryKey::membership("ab", "")),
        KeyPrint::of(&EntryKey::membership("a", "b")),
        KeyPrint::of(&EntryKey::new(Kind::Groups, "ab")),
    ];
    for (i, a) in prints.iter().enumerate() {
        for b in &prints[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut ledger = Ledger::open(&dir.path().join("l.sqlite"), "appcues", "a").unwrap();
    let (user, member) = (
        EntryKey::new(Kind::Users, "ab"),
        EntryKey::membership("a", "b"),
    );
    ledger.expect(&user, entry(5, Some(2)));
    assert_eq!(ledger.get(&user).unwrap(), Some(entry(5, Some(2))));
    assert_eq!(ledger.get(&member).unwrap(), None);
    ledger.unknown(user.clone(), Some(3));
    let unknown = ledger.get(&user).unwrap().unwrap();
    assert_eq!(
        (unknown.hash, unknown.held, unknown.version),
        (None, true, Some(3))
    );
}
