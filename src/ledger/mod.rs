//! The sync ledger: what roster wrote to each vendor account, so the next run sends only what
//! changed (docs/sync.md).
//!
//! One SQLite file (users can open it with `sqlite3`), created `0600`. Each entry is keyed by
//! (vendor, account, kind, key) and holds the hash of the last payload the vendor *accepted*
//! for it ([`PayloadHash`]), when that was, whether the vendor holds the record (an accepted
//! delete leaves a tombstone that does not), the input stream that wrote it, and the last
//! Singer `version` it was seen in.
//!
//! Writes are staged in memory and committed in one transaction ([`Ledger::commit`]): by the
//! engine when it prints a STATE (before the state line, so the state never runs ahead of the
//! entries), when [`COMMIT_EVERY`] changes are staged, and at the end of the run. Only a write
//! the vendor acknowledged is ever staged, so a kill -9 can lose entries (the records are sent
//! again next time) but never marks an unsent record as sent.
//!
//! Lookups see what this run has already dispatched ([`Ledger::expect`]), so a key written twice
//! in one input is compared with the earlier write of the run, not with the file.
//!
//! The mirror deletes driven by `ACTIVATE_VERSION` read the ledger through
//! [`Ledger::older_than`] (the records roster wrote for a stream whose last-seen version is
//! older) and [`Ledger::held_counts`] (what the ledger holds per stream, for the guards), and
//! keep what they know of each stream's passes in [`Pass`] rows (`passes.rs`).

use crate::maps::FastMap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use crate::sink::{Kind, PayloadHash};

mod filter;
mod passes;

use filter::KeyFilter;
pub use passes::Pass;

/// Staged changes past which the ledger commits without waiting for a STATE: bounds memory on
/// an input with few or no STATE messages (a million-record file), and keeps each transaction
/// short (about 10 ms of SQLite work).
pub const COMMIT_EVERY: usize = 10_000;

/// The ledger file's schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS scopes (
    id INTEGER PRIMARY KEY,
    vendor TEXT NOT NULL,
    account TEXT NOT NULL,
    state TEXT,
    state_at INTEGER,
    UNIQUE (vendor, account)
);
CREATE TABLE IF NOT EXISTS entries (
    scope INTEGER NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    group_key TEXT NOT NULL DEFAULT '',
    stream TEXT NOT NULL,
    hash BLOB,
    held INTEGER NOT NULL,
    written_at INTEGER NOT NULL,
    version INTEGER,
    PRIMARY KEY (scope, kind, key, group_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_by_stream ON entries (scope, stream, version);
";

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file or its directory could not be created or opened.
    #[error("cannot open the ledger {path}: {detail}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A read or a commit failed.
    #[error("the ledger {path}: {context}: {source}")]
    Sql {
        /// The file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}

/// What an entry is about: a user or group key (the segment's name for segments), and for a
/// membership the group's key too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// users, groups, memberships or segments.
    pub kind: Kind,
    /// The user's key (memberships: the member's), the group's, or the segment's name.
    pub key: String,
    /// Memberships: the group's key; empty otherwise.
    pub group: String,
}

impl EntryKey {
    /// A user, group or segment.
    pub fn new(kind: Kind, key: impl Into<String>) -> Self {
        EntryKey {
            kind,
            key: key.into(),
            group: String::new(),
        }
    }

    /// A membership of `user` in `group`.
    pub fn membership(user: impl Into<String>, group: impl Into<String>) -> Self {
        EntryKey {
            kind: Kind::Memberships,
            key: user.into(),
            group: group.into(),
        }
    }
}

/// What the ledger knows of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// The hash of the last payload the vendor accepted; `None` when unknown (a write was
    /// refused or not confirmed, so the next one is sent whatever it holds).
    pub hash: Option<PayloadHash>,
    /// True when the vendor holds the record (roster created or updated it and has not deleted
    /// it since).
    pub held: bool,
    /// The last Singer `version` the record was seen in.
    pub version: Option<u64>,
}

/// An entry [`Ledger::older_than`] found: a record roster wrote whose last-seen version is
/// older than the one asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleEntry {
    /// Which record.
    pub key: EntryKey,
    /// Its last-seen version (`None`: written by a run whose input carried no version).
    pub version: Option<u64>,
}

/// One staged change.
#[derive(Debug, Clone)]
enum Change {
    /// The vendor accepted a write: the entry becomes `entry`, written by `stream`.
    Written {
        key: EntryKey,
        stream: String,
        entry: Entry,
        at: i64,
    },
    /// The record was read again unchanged in `version`.
    Seen { key: EntryKey, version: u64 },
    /// A write was refused or its answer lost: what the vendor holds is unknown. The record was
    /// still read in `version` (it is in the source).
    Unknown { key: EntryKey, version: Option<u64> },
    /// What the ledger knows of a stream's passes.
    Pass { stream: String, pass: Pass },
}

/// What this run expects a key to be once its dispatched writes are acknowledged, and how many
/// of them are still in flight.
#[derive(Debug, Clone, Copy)]
struct Expected {
    entry: Packed,
    in_flight: u32,
}

/// An [`Entry`] in 32 bytes instead of 64 (its `Option<PayloadHash>` aligns to 16): a bulk run
/// holds tens of thousands of expectations while its jobs run.
#[derive(Debug, Clone, Copy)]
struct Packed {
    hash: [u64; 2],
    version: u64,
    /// 1: has a hash, 2: held, 4: has a version.
    flags: u8,
}

impl From<Entry> for Packed {
    fn from(entry: Entry) -> Self {
        let hash = entry.hash.map_or(0, |h| h.0);
        Packed {
            hash: [(hash >> 64) as u64, hash as u64],
            version: entry.version.unwrap_or(0),
            flags: u8::from(entry.hash.is_some())
                | (u8::from(entry.held) << 1)
                | (u8::from(entry.version.is_some()) << 2),
        }
    }
}

impl Packed {
    fn get(&self) -> Entry {
        Entry {
            hash: (self.flags & 1 != 0)
                .then(|| PayloadHash((u128::from(self.hash[0]) << 64) | u128::from(self.hash[1]))),
            held: self.flags & 2 != 0,
            version: (self.flags & 4 != 0).then_some(self.version),
        }
    }

    fn set_version(&mut self, version: u64) {
        self.version = version;
        self.flags |= 4;
    }
}

/// A key's 128-bit xxh3 print (kind, key and group, each ended by a 0xFF byte, which UTF-8
/// never holds): what [`Ledger`] keys this run's expectations by. Two keys share a print with
/// odds of about 2^-128, as two payloads share a [`PayloadHash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyPrint(u128);

impl KeyPrint {
    fn of(key: &EntryKey) -> Self {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in [key.kind.as_str(), key.key.as_str(), key.group.as_str()] {
            hasher.update(part.as_bytes());
            hasher.update(&[0xFF]);
        }
        KeyPrint(hasher.digest128())
    }
}

/// An open ledger, scoped to one vendor account.
#[derive(Debug)]
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    scope: i64,
    read_only: bool,
    /// The account had no entry when the ledger was opened (a first sync): a key this run has
    /// not written cannot be in the file, so it is answered from memory, without asking SQLite
    /// once per record. Keys this run staged are in [`Ledger::written`].
    none_stored: bool,
    /// With `none_stored`: every key this run staged a change for (so may have committed),
    /// as a filter that can say "maybe" of a key it never saw but never "no" of one it did.
    /// Those are looked up in the file.
    written: KeyFilter,
    /// Lookups that went to the file (for the tests).
    lookups: std::cell::Cell<u64>,
    staged: Vec<Change>,
    /// Keys this run dispatched or changed and has not committed yet (bounded by the writes in
    /// flight plus [`COMMIT_EVERY`]). Keyed by the key's 128-bit print ([`KeyPrint`]), not the
    /// key: a bulk run keeps tens of thousands of keys in flight until their jobs end, and the
    /// key inline (56 bytes and an allocation) doubled the table.
    expected: FastMap<KeyPrint, Expected>,
    /// Keys in `expected` with nothing in flight: what a commit frees. Counted, not measured
    /// by the map's size: a bulk run keeps tens of thousands of keys in flight until their job
    /// ends, and taking those for freeable made every settlement commit (and scan the map).
    idle: usize,
    /// The passes of the streams this run looked at or changed.
    passes: FastMap<String, Pass>,
    /// A read-only ledger under `sync_mode: mirror` (a dry run): the version each key was read
    /// in, which it cannot write, so [`Ledger::older_than`] shows what a real run would delete.
    read_in: Option<FastMap<EntryKey, u64>>,
}

fn sql<'a>(path: &'a Path, context: &'static str) -> impl Fn(rusqlite::Error) -> LedgerError + 'a {
    move |source| LedgerError::Sql {
        path: path.to_path_buf(),
        context,
        source,
    }
}

fn hash_bytes(hash: Option<PayloadHash>) -> Option<[u8; 16]> {
    hash.map(|h| h.0.to_be_bytes())
}

fn version_sql(version: Option<u64>) -> Option<i64> {
    version.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

impl Ledger {
    /// The default file: `$XDG_STATE_HOME/roster/ledger.sqlite`, else
    /// `~/.local/state/roster/ledger.sqlite`; `None` without either variable.
    pub fn default_path() -> Option<PathBuf> {
        let state = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| PathBuf::from(home).join(".local/state"))
            })?;
        Some(state.join("roster").join("ledger.sqlite"))
    }

    /// Opens (creating `0600` when new, its directory `0700`) the ledger at `path`, scoped to
    /// `vendor` and `account`.
    pub fn open(path: &Path, vendor: &str, account: &str) -> Result<Ledger, LedgerError> {
        let open_err = |detail: String| LedgerError::Open {
            path: path.to_path_buf(),
            detail,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder
                .create(dir)
                .map_err(|err| open_err(format!("cannot create {}: {err}", dir.display())))?;
        }
        // Created (never truncated) through fsutil so it is 0600 whatever the umask; SQLite
        // gives its -wal and -shm files the main file's mode.
        crate::fsutil::open_private(path, true).map_err(|err| open_err(err.to_string()))?;
        let conn = Connection::open(path).map_err(|err| open_err(err.to_string()))?;
        Self::prepare(conn, path, vendor, account, false)
    }

    /// Opens an existing ledger read-only (`--dry-run`): `Ok(None)` when there is none.
    pub fn open_read_only(
        path: &Path,
        vendor: &str,
        account: &str,
    ) -> Result<Option<Ledger>, LedgerError> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|err| LedgerError::Open {
                path: path.to_path_buf(),
                detail: err.to_string(),
            })?;
        Self::prepare(conn, path, vendor, account, true).map(Some)
    }

    fn prepare(
        conn: Connection,
        path: &Path,
        vendor: &str,
        account: &str,
        read_only: bool,
    ) -> Result<Ledger, LedgerError> {
        // Another run on the same file (two Meltano jobs) waits for the other's commit.
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql(path, "setting the busy timeout"))?;
        let scope = if read_only {
            conn.query_row(
                "SELECT id FROM scopes WHERE vendor = ?1 AND account = ?2",
                params![vendor, account],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql(path, "reading the account"))?
            .unwrap_or(-1)
        } else {
            // WAL: a commit is one append, and readers never block the writer. A kill -9
            // keeps every committed transaction; a power cut may lose the last ones, which
            // only means sending those records again.
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sql(path, "switching to WAL"))?;
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(sql(path, "setting synchronous"))?;
            let version: i64 = conn
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .map_err(sql(path, "reading the schema version"))?;
            if version > SCHEMA_VERSION {
                return Err(LedgerError::Open {
                    path: path.to_path_buf(),
                    detail: format!(
                        "it was written by a newer roster (schema {version}, this one knows {SCHEMA_VERSION})"
                    ),
                });
            }
            conn.execute_batch(SCHEMA)
                .map_err(sql(path, "creating the tables"))?;
            conn.execute_batch(passes::SCHEMA)
                .map_err(sql(path, "creating the tables"))?;
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(sql(path, "setting the schema version"))?;
            conn.execute(
                "INSERT INTO scopes (vendor, account) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![vendor, account],
            )
            .map_err(sql(path, "adding the account"))?;
            conn.query_row(
                "SELECT id FROM scopes WHERE vendor = ?1 AND account = ?2",
                params![vendor, account],
                |row| row.get(0),
            )
            .map_err(sql(path, "reading the account"))?
        };
        // When the account had no entry when the ledger opened (a dry run or a first sync), no
        // lookup of a key this run has not written can find one, and a run over a million
        // records need not ask SQLite a million times. Another run writing the same account at
        // the same time is not seen: its records are sent again (never skipped), as when the
        // ledger is missing.
        let none_stored = !conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM entries WHERE scope = ?1)",
                params![scope],
                |row| row.get::<_, bool>(0),
            )
            .map_err(sql(path, "reading the account"))?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
            scope,
            read_only,
            none_stored,
            written: KeyFilter::default(),
            lookups: std::cell::Cell::new(0),
            staged: Vec::new(),
            expected: FastMap::default(),
            idle: 0,
            passes: FastMap::default(),
            read_in: None,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the ledger knows of `key`: this run's expectation first, else the file.
    pub fn get(&self, key: &EntryKey) -> Result<Option<Entry>, LedgerError> {
        if let Some(expected) = self.expected.get(&KeyPrint::of(key)) {
            return Ok(Some(expected.entry.get()));
        }
        self.stored(key)
    }

    fn stored(&self, key: &EntryKey) -> Result<Option<Entry>, LedgerError> {
        if self.none_stored && !self.written.may_contain(key) {
            return Ok(None);
        }
        self.lookups.set(self.lookups.get() + 1);
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT hash, held, version FROM entries
                 WHERE scope = ?1 AND kind = ?2 AND key = ?3 AND group_key = ?4",
            )
            .map_err(sql(&self.path, "reading an entry"))?;
        statement
            .query_row(
                params![self.scope, key.kind.as_str(), key.key, key.group],
                |row| {
                    let hash: Option<Vec<u8>> = row.get(0)?;
                    let version: Option<i64> = row.get(2)?;
                    Ok(Entry {
                        hash: hash
                            .and_then(|b| <[u8; 16]>::try_from(b.as_slice()).ok())
                            .map(|b| PayloadHash(u128::from_be_bytes(b))),
                        held: row.get::<_, i64>(1)? != 0,
                        version: version.and_then(|v| u64::try_from(v).ok()),
                    })
                },
            )
            .optional()
            .map_err(sql(&self.path, "reading an entry"))
    }

    /// A read-only ledger (a dry run) under `sync_mode: mirror` remembers the version each key
    /// was read in, in memory (tens of bytes per key), since it cannot write it.
    pub fn remember_versions(&mut self) {
        if self.read_only {
            self.read_in.get_or_insert_with(FastMap::default);
        }
    }

    fn read_in(&mut self, key: &EntryKey, version: Option<u64>) {
        if let (Some(read_in), Some(version)) = (self.read_in.as_mut(), version) {
            read_in.insert(key.clone(), version);
        }
    }

    /// A write of `key` was dispatched: until it is settled, lookups see `entry` (what the
    /// vendor will hold once it accepts).
    pub fn expect(&mut self, key: &EntryKey, entry: Entry) {
        self.read_in(key, entry.version);
        match self.expected.get_mut(&KeyPrint::of(key)) {
            Some(expected) => {
                if expected.in_flight == 0 {
                    self.idle = self.idle.saturating_sub(1);
                }
                expected.entry = entry.into();
                expected.in_flight += 1;
            }
            None => {
                self.expected.insert(
                    KeyPrint::of(key),
                    Expected {
                        entry: entry.into(),
                        in_flight: 1,
                    },
                );
            }
        }
    }

    fn landed(&mut self, key: &EntryKey) {
        if let Some(expected) = self.expected.get_mut(&KeyPrint::of(key))
            && expected.in_flight > 0
        {
            expected.in_flight -= 1;
            if expected.in_flight == 0 {
                self.idle += 1;
            }
        }
    }

    /// Stages a change; on a first sync, remembers its key as one the file may now hold.
    fn stage(&mut self, change: Change) {
        if self.none_stored
            && !self.read_only
            && let Change::Written { key, .. }
            | Change::Seen { key, .. }
            | Change::Unknown { key, .. } = &change
        {
            self.written.insert(key);
        }
        self.staged.push(change);
    }

    /// Lookups of this ledger that went to the file (tests: a first sync asks it none).
    #[cfg(test)]
    fn lookups(&self) -> u64 {
        self.lookups.get()
    }

    /// The vendor accepted the write of `key` that [`Ledger::expect`] announced: stages `entry`.
    pub fn accepted(&mut self, key: EntryKey, stream: &str, entry: Entry) {
        self.landed(&key);
        if self.read_only {
            return;
        }
        self.stage(Change::Written {
            key,
            stream: stream.to_string(),
            entry,
            at: chrono::Utc::now().timestamp(),
        });
    }

    /// The write of `key` was refused, or its answer lost: the next write is sent whatever it
    /// holds. The record was read in `version` all the same (a mirror pass must not take it for
    /// deleted).
    pub fn unknown(&mut self, key: EntryKey, version: Option<u64>) {
        self.landed(&key);
        self.read_in(&key, version);
        if let Some(expected) = self.expected.get_mut(&KeyPrint::of(&key)) {
            let mut entry = expected.entry.get();
            entry.hash = None;
            entry.version = version.or(entry.version);
            expected.entry = entry.into();
        }
        if !self.read_only {
            self.stage(Change::Unknown { key, version });
        }
    }

    /// `key` was read in `version` and nothing was sent for it (rejected before it could be):
    /// it is in the source, so a mirror pass must not take it for deleted. A key the ledger
    /// has no entry for stays without one.
    pub fn present(&mut self, key: EntryKey, version: u64) {
        if self.read_only {
            self.read_in(&key, Some(version));
            return;
        }
        if let Some(expected) = self.expected.get_mut(&KeyPrint::of(&key)) {
            expected.entry.set_version(version);
        }
        self.stage(Change::Seen { key, version });
    }

    /// `key` was read again, unchanged, in `version`.
    pub fn seen(&mut self, key: EntryKey, entry: Entry, version: u64) {
        if self.read_only {
            self.read_in(&key, Some(version));
            return;
        }
        if entry.version == Some(version) {
            return;
        }
        match self.expected.get_mut(&KeyPrint::of(&key)) {
            Some(expected) => expected.entry.set_version(version),
            None => {
                let mut entry = entry;
                entry.version = Some(version);
                self.expected.insert(
                    KeyPrint::of(&key),
                    Expected {
                        entry: entry.into(),
                        in_flight: 0,
                    },
                );
                self.idle += 1;
            }
        }
        self.stage(Change::Seen { key, version });
    }

    /// Changes staged and not committed, or the keys this run remembers with nothing in flight
    /// (a dry run stages nothing but remembers what it would have sent), whichever is more:
    /// what a commit frees. Keys still in flight do not count: a commit keeps them.
    pub fn staged(&self) -> usize {
        self.staged.len().max(self.idle)
    }

    /// Commits every staged change in one transaction, with `state` (the STATE the engine is
    /// about to print, which covers them) when given; then forgets this run's expectations of
    /// keys with nothing in flight. Read-only (a dry run): only forgets.
    pub fn commit(&mut self, state: Option<&Value>) -> Result<(), LedgerError> {
        if !self.read_only && (!self.staged.is_empty() || state.is_some()) {
            let path = self.path.clone();
            let tx = self
                .conn
                .transaction()
                .map_err(sql(&path, "starting a commit"))?;
            write_changes(&tx, self.scope, &self.staged).map_err(sql(&path, "writing entries"))?;
            if let Some(state) = state {
                tx.execute(
                    "UPDATE scopes SET state = ?2, state_at = ?3 WHERE id = ?1",
                    params![
                        self.scope,
                        state.to_string(),
                        chrono::Utc::now().timestamp()
                    ],
                )
                .map_err(sql(&path, "writing the state"))?;
            }
            tx.commit().map_err(sql(&path, "committing"))?;
        }
        self.staged.clear();
        if self.idle > 0 {
            self.expected.retain(|_, e| e.in_flight > 0);
            self.idle = 0;
        }
        Ok(())
    }

    /// The records roster wrote for `stream` that the vendor still holds and whose last-seen
    /// version is older than `version` (or unknown: written by a run whose input carried no
    /// version), from the file (commit first). For mirror deletes.
    pub fn older_than(&self, stream: &str, version: u64) -> Result<Vec<StaleEntry>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT kind, key, group_key, version FROM entries
                 WHERE scope = ?1 AND stream = ?2 AND held = 1
                   AND (version IS NULL OR version < ?3)
                 ORDER BY kind, key, group_key",
            )
            .map_err(sql(&self.path, "listing older entries"))?;
        let rows = statement
            .query_map(
                params![self.scope, stream, version_sql(Some(version))],
                |row| {
                    let kind: String = row.get(0)?;
                    let version: Option<i64> = row.get(3)?;
                    Ok((
                        kind,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        version,
                    ))
                },
            )
            .map_err(sql(&self.path, "listing older entries"))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, key, group, last_seen) =
                row.map_err(sql(&self.path, "listing older entries"))?;
            let Some(kind) = Kind::parse(&kind) else {
                continue;
            };
            let key = EntryKey { kind, key, group };
            if let Some(read_in) = &self.read_in
                && read_in.get(&key).is_some_and(|v| *v >= version)
            {
                continue;
            }
            out.push(StaleEntry {
                key,
                version: last_seen.and_then(|v| u64::try_from(v).ok()),
            });
        }
        Ok(out)
    }

    /// Per stream, how many records the vendor holds that roster wrote (the guards' base).
    pub fn held_counts(&self) -> Result<BTreeMap<String, u64>, LedgerError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT stream, COUNT(*) FROM entries WHERE scope = ?1 AND held = 1 GROUP BY stream",
            )
            .map_err(sql(&self.path, "counting entries"))?;
        let rows = statement
            .query_map(params![self.scope], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(sql(&self.path, "counting entries"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (stream, count) = row.map_err(sql(&self.path, "counting entries"))?;
            out.insert(stream, u64::try_from(count).unwrap_or(0));
        }
        Ok(out)
    }

    /// The last STATE committed with entries for this account.
    pub fn last_state(&self) -> Result<Option<Value>, LedgerError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT state FROM scopes WHERE id = ?1",
                params![self.scope],
                |row| row.get(0),
            )
            .optional()
            .map_err(sql(&self.path, "reading the state"))?
            .flatten();
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }
}

/// Rows one multi-row upsert writes: one statement (bound, stepped and reset once) for this
/// many accepted writes, where a statement per row cost about a third of a commit.
const ROWS_PER_INSERT: usize = 64;

/// The upsert of `rows` entries in one statement. A key twice in one statement is applied in
/// order, as by separate statements (SQLite's upsert handles a conflict with a row the same
/// statement inserted).
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO entries (scope, kind, key, group_key, stream, hash, held, written_at, version) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push(',');
        }
        let p = row * 9;
        sql.push_str(&format!(
            "(?{},?{},?{},?{},?{},?{},?{},?{},?{})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5,
            p + 6,
            p + 7,
            p + 8,
            p + 9
        ));
    }
    sql.push_str(
        " ON CONFLICT (scope, kind, key, group_key) DO UPDATE SET
           stream = excluded.stream, hash = excluded.hash, held = excluded.held,
           written_at = excluded.written_at,
           version = COALESCE(excluded.version, entries.version)",
    );
    sql
}

/// Binds one accepted write's nine parameters at `offset`.
fn bind_written(
    statement: &mut rusqlite::CachedStatement<'_>,
    offset: usize,
    scope: i64,
    change: &Change,
) -> Result<(), rusqlite::Error> {
    let Change::Written {
        key,
        stream,
        entry,
        at,
    } = change
    else {
        return Ok(());
    };
    statement.raw_bind_parameter(offset + 1, scope)?;
    statement.raw_bind_parameter(offset + 2, key.kind.as_str())?;
    statement.raw_bind_parameter(offset + 3, key.key.as_str())?;
    statement.raw_bind_parameter(offset + 4, key.group.as_str())?;
    statement.raw_bind_parameter(offset + 5, stream.as_str())?;
    statement.raw_bind_parameter(offset + 6, hash_bytes(entry.hash))?;
    statement.raw_bind_parameter(offset + 7, i64::from(entry.held))?;
    statement.raw_bind_parameter(offset + 8, *at)?;
    statement.raw_bind_parameter(offset + 9, version_sql(entry.version))?;
    Ok(())
}

/// Applies staged changes inside a transaction, in order: runs of accepted writes
/// [`ROWS_PER_INSERT`] rows a statement, the rest one statement each.
fn write_changes(
    tx: &rusqlite::Transaction<'_>,
    scope: i64,
    changes: &[Change],
) -> Result<(), rusqlite::Error> {
    let mut rest = changes;
    while !rest.is_empty() {
        let run = rest
            .iter()
            .take(ROWS_PER_INSERT)
            .take_while(|c| matches!(c, Change::Written { .. }))
            .count();
        if run == ROWS_PER_INSERT {
            static INSERT_MANY: LazyLock<String> = LazyLock::new(|| insert_sql(ROWS_PER_INSERT));
            let mut write = tx.prepare_cached(&INSERT_MANY)?;
            for (row, change) in rest[..run].iter().enumerate() {
                bind_written(&mut write, row * 9, scope, change)?;
            }
            write.raw_execute()?;
            rest = &rest[run..];
            continue;
        }
        let (change, tail) = (&rest[0], &rest[1..]);
        write_change(tx, scope, change)?;
        rest = tail;
    }
    Ok(())
}

/// Applies one staged change.
fn write_change(
    tx: &rusqlite::Transaction<'_>,
    scope: i64,
    change: &Change,
) -> Result<(), rusqlite::Error> {
    match change {
        Change::Written { .. } => {
            static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1));
            let mut write = tx.prepare_cached(&INSERT_ONE)?;
            bind_written(&mut write, 0, scope, change)?;
            write.raw_execute()?;
        }
        Change::Seen { key, version } => {
            tx.prepare_cached(
                "UPDATE entries SET version = ?5
                 WHERE scope = ?1 AND kind = ?2 AND key = ?3 AND group_key = ?4",
            )?
            .execute(params![
                scope,
                key.kind.as_str(),
                key.key,
                key.group,
                version_sql(Some(*version)),
            ])?;
        }
        Change::Unknown { key, version } => {
            tx.prepare_cached(
                "UPDATE entries SET hash = NULL, version = COALESCE(?5, version)
                 WHERE scope = ?1 AND kind = ?2 AND key = ?3 AND group_key = ?4",
            )?
            .execute(params![
                scope,
                key.kind.as_str(),
                key.key,
                key.group,
                version_sql(*version),
            ])?;
        }
        Change::Pass { stream, pass } => passes::write_pass(tx, scope, stream, pass)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests;
