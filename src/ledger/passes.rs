//! What the ledger remembers of each stream's full passes (`ACTIVATE_VERSION`), for the mirror
//! deletes of `sync_mode: mirror` (docs/sync.md#mirror-deletes).
//!
//! One row per (account, stream), written like entries: staged, then committed in the same
//! transaction as the entries and the STATE that covers them, so a kill -9 never leaves a pass
//! marked read whose records' versions were not committed.

use rusqlite::{OptionalExtension, params};

use super::{Change, Ledger, LedgerError, sql, version_sql};

/// The table (created with the entries' schema; additive, so an older roster reading the file
/// ignores it).
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS passes (
    scope INTEGER NOT NULL,
    stream TEXT NOT NULL,
    reading INTEGER,
    closed INTEGER,
    pending INTEGER,
    classic INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, stream)
) WITHOUT ROWID;
";

/// What the ledger knows of one stream's passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// The pass whose records this target read from its start (its opening `ACTIVATE_VERSION`,
    /// or its first record after a pass it saw end): a resumed pass of that version may close.
    pub reading: Option<u64>,
    /// The last pass whose records were all read.
    pub closed: Option<u64>,
    /// A pass whose records were all read and whose deletes are not all settled yet (a run
    /// stopped, killed or guarded in the middle): a later run finishes them.
    pub pending: Option<u64>,
    /// The stream's tap closed a pass with `ACTIVATE_VERSION` (the classic convention): an
    /// input that opens a pass and ends without closing it was cut short.
    pub classic: bool,
}

fn version_of(value: Option<i64>) -> Option<u64> {
    value.and_then(|v| u64::try_from(v).ok())
}

impl Ledger {
    /// What the ledger knows of `stream`'s passes: this run's changes first, else the file.
    pub fn pass(&mut self, stream: &str) -> Result<Pass, LedgerError> {
        if let Some(pass) = self.passes.get(stream) {
            return Ok(*pass);
        }
        if self.read_only && !self.has_passes()? {
            // A dry run over a file an older roster wrote.
            return Ok(Pass::default());
        }
        let pass = self
            .conn
            .query_row(
                "SELECT reading, closed, pending, classic FROM passes
                 WHERE scope = ?1 AND stream = ?2",
                params![self.scope, stream],
                |row| {
                    Ok(Pass {
                        reading: version_of(row.get(0)?),
                        closed: version_of(row.get(1)?),
                        pending: version_of(row.get(2)?),
                        classic: row.get::<_, i64>(3)? != 0,
                    })
                },
            )
            .optional()
            .map_err(sql(&self.path, "reading a pass"))?
            .unwrap_or_default();
        self.passes.insert(stream.to_string(), pass);
        Ok(pass)
    }

    /// Stages `pass` as what the ledger knows of `stream` (committed with the next commit).
    pub fn set_pass(&mut self, stream: &str, pass: Pass) {
        self.passes.insert(stream.to_string(), pass);
        if !self.read_only {
            self.staged.push(Change::Pass {
                stream: stream.to_string(),
                pass,
            });
        }
    }

    /// Streams with a pass whose deletes are not all settled, and that pass, from the file
    /// and this run's changes.
    pub fn pending_passes(&mut self) -> Result<Vec<(String, u64)>, LedgerError> {
        if self.read_only && !self.has_passes()? {
            return Ok(Vec::new());
        }
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT stream FROM passes WHERE scope = ?1 AND pending IS NOT NULL ORDER BY stream",
            )
            .map_err(sql(&self.path, "listing pending passes"))?;
        let streams: Vec<String> = statement
            .query_map(params![self.scope], |row| row.get(0))
            .map_err(sql(&self.path, "listing pending passes"))?
            .collect::<Result<_, _>>()
            .map_err(sql(&self.path, "listing pending passes"))?;
        drop(statement);
        let mut names: Vec<String> = self.passes.keys().cloned().collect();
        names.extend(streams);
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for stream in names {
            if let Some(pending) = self.pass(&stream)?.pending {
                out.push((stream, pending));
            }
        }
        Ok(out)
    }
}

impl Ledger {
    /// True when the file has the passes table (a read-only ledger cannot create it).
    fn has_passes(&self) -> Result<bool, LedgerError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'passes'",
                [],
                |row| row.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(sql(&self.path, "looking for the passes table"))
    }
}

/// Writes one staged pass inside the commit's transaction.
pub(super) fn write_pass(
    tx: &rusqlite::Transaction<'_>,
    scope: i64,
    stream: &str,
    pass: &Pass,
) -> Result<(), rusqlite::Error> {
    let mut write = tx.prepare_cached(
        "INSERT INTO passes (scope, stream, reading, closed, pending, classic)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (scope, stream) DO UPDATE SET
           reading = excluded.reading, closed = excluded.closed,
           pending = excluded.pending, classic = excluded.classic",
    )?;
    write.execute(params![
        scope,
        stream,
        version_sql(pass.reading),
        version_sql(pass.closed),
        version_sql(pass.pending),
        i64::from(pass.classic),
    ])?;
    Ok(())
}
