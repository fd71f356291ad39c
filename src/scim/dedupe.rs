//! [`Dedupe`]: the ids a listing has already emitted in this run, so nothing comes twice, in
//! memory that stays flat however long the listing is.
//!
//! Ids are kept as 128-bit hashes (a collision is as likely as guessing a random UUID). The
//! first [`MEMORY_IDS`] live in a hash set; past that, the set is written to a temporary SQLite
//! table (on disk, deleted when the run ends) and emptied, and a Bloom filter of the ids on disk
//! answers "surely new" for about 99% of new ids without reading the table. A "maybe" reads the
//! table (one indexed point read). So a million ids cost about 1.2 MB of filter and a bounded set
//! instead of the ~35 MB (and ~52 MB while the table doubled) of a set of all of them.
//!
//! If the temporary table cannot be made or written, the ids stay in memory (warned once): a
//! listing never forgets an id it emitted, it only costs memory then.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use rusqlite::{Connection, params};

use crate::bloom::Bloom;

/// Ids held in memory before they go to the table on disk.
pub const MEMORY_IDS: usize = 100_000;

/// The ids a listing has already had (see the module's text).
#[derive(Debug)]
pub struct Dedupe {
    keys: (RandomState, RandomState),
    /// The ids not yet on disk.
    ids: HashSet<u128>,
    /// How many the set may hold before they go to disk.
    bound: usize,
    /// The ids on disk, when any went there.
    spilled: Option<Spilled>,
    /// Ids held in all.
    len: usize,
    /// Set when the table failed: everything stays in memory from then on.
    in_memory_only: bool,
}

#[derive(Debug)]
struct Spilled {
    db: Connection,
    filter: Bloom,
}

impl Default for Dedupe {
    fn default() -> Self {
        Self::with_bound(MEMORY_IDS)
    }
}

impl Dedupe {
    /// A dedupe that holds at most `bound` ids in memory before it writes them to disk.
    pub fn with_bound(bound: usize) -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            ids: HashSet::new(),
            bound: bound.max(1),
            spilled: None,
            len: 0,
            in_memory_only: false,
        }
    }

    /// True the first time `id` is seen.
    pub fn first(&mut self, id: &str) -> bool {
        let hash =
            (u128::from(self.keys.0.hash_one(id)) << 64) | u128::from(self.keys.1.hash_one(id));
        if self.ids.contains(&hash) || self.on_disk(hash) {
            return false;
        }
        self.ids.insert(hash);
        self.len += 1;
        if self.ids.len() >= self.bound && !self.in_memory_only {
            self.spill();
        }
        true
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many ids are held in memory now (at most the bound while the disk works).
    pub fn in_memory(&self) -> usize {
        self.ids.len()
    }

    fn on_disk(&mut self, hash: u128) -> bool {
        let Some(spilled) = self.spilled.as_ref() else {
            return false;
        };
        if !spilled.filter.may_contain(hash) {
            return false;
        }
        let found = spilled
            .db
            .prepare_cached("SELECT 1 FROM ids WHERE h = ?1")
            .and_then(|mut stmt| stmt.exists(params![&hash.to_le_bytes()[..]]));
        match found {
            Ok(found) => found,
            Err(err) => {
                // The table cannot be read: the id may have been emitted. Leaving it out would
                // lose a record, so it is taken as new (a duplicate at worst), and the ids stay
                // in memory from now on.
                self.give_up(&err);
                false
            }
        }
    }

    /// Writes the ids in memory to the table and empties the set.
    fn spill(&mut self) {
        if self.spilled.is_none() {
            match open() {
                Ok(db) => {
                    self.spilled = Some(Spilled {
                        db,
                        filter: Bloom::new(FIRST_LAYER),
                    })
                }
                Err(err) => return self.give_up(&err),
            }
        }
        let Some(spilled) = self.spilled.as_mut() else {
            return;
        };
        let written = (|| -> rusqlite::Result<()> {
            let tx = spilled.db.transaction()?;
            {
                let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO ids (h) VALUES (?1)")?;
                for hash in &self.ids {
                    insert.execute(params![&hash.to_le_bytes()[..]])?;
                }
            }
            tx.commit()
        })();
        match written {
            Ok(()) => {
                for hash in self.ids.drain() {
                    spilled.filter.insert(hash);
                }
                self.ids.shrink_to(self.bound);
            }
            Err(err) => self.give_up(&err),
        }
    }

    fn give_up(&mut self, err: &rusqlite::Error) {
        if !self.in_memory_only {
            tracing::warn!(
                "the ids this listing emitted cannot be kept on disk ({err}): they stay in memory"
            );
        }
        self.in_memory_only = true;
    }
}

/// A private temporary database (SQLite deletes its file when it is closed), with a page cache
/// of 256 KiB instead of SQLite's 2 MiB: its reads are point reads behind the Bloom filter, and
/// a listing's tap may hold several of these.
fn open() -> rusqlite::Result<Connection> {
    let db = Connection::open("")?;
    db.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -256;
         CREATE TABLE ids (h BLOB PRIMARY KEY) WITHOUT ROWID;",
    )?;
    Ok(db)
}

/// Ids the first layer of the filter holds (each next one twice as many).
const FIRST_LAYER: usize = 1 << 17;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spill_table_keeps_a_small_page_cache() {
        // SQLite's default is 2 MiB a connection; a tap holds one per long listing, and the
        // tap's peak RSS is a goal (a fifth of the peer's).
        let db = open().unwrap();
        let kib: i64 = db
            .query_row("PRAGMA cache_size", [], |row| row.get(0))
            .unwrap();
        assert_eq!(kib, -256);
    }

    #[test]
    fn seen_ids_are_remembered() {
        let mut seen = Dedupe::default();
        assert!(seen.first("a"));
        assert!(seen.first("b"));
        assert!(!seen.first("a"));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn past_the_bound_ids_go_to_disk_and_are_still_known() {
        let mut seen = Dedupe::with_bound(1_000);
        for i in 0..25_000 {
            assert!(seen.first(&format!("user-{i}")), "user-{i} is new");
            assert!(
                seen.in_memory() < 1_000,
                "{} ids in memory",
                seen.in_memory()
            );
        }
        assert!(seen.spilled.is_some());
        assert!(!seen.in_memory_only);
        // Every id, on disk or in memory, comes back as seen; new ones as new.
        for i in (0..25_000).step_by(7) {
            assert!(!seen.first(&format!("user-{i}")), "user-{i} was seen");
        }
        for i in 25_000..30_000 {
            assert!(seen.first(&format!("user-{i}")));
        }
        assert_eq!(seen.len(), 30_000);
    }
}
