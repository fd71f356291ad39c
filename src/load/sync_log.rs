//! The sync log (`sync_log: FILE`): what happened to every input record, as Singer messages a
//! warehouse loader takes as they are (`target-postgres < FILE`).
//!
//! Two streams:
//! - `_roster_sync_log`: one RECORD per input record that got an outcome: `run_id`, `stream`,
//!   `line`, `kind`, `key`, `action` (`sent`, `deleted`, `skipped`, `rejected`; `created` and
//!   `updated` where the writer knows), `reason` and `time`. Key: (`run_id`, `stream`, `line`).
//! - `_roster_rejects`: one RECORD per rejected record: `run_id`, `stream`, `line`, `field` (the
//!   field the reason names, when it names one), `reason`, `record` (the record as it came) and
//!   `time`. Same key.
//!
//! Both SCHEMAs come first, then the RECORDs in the order the outcomes were settled, a STATE
//! every [`STATE_EVERY`] records and one at the end (`{"roster_sync_log": {"run_id", "records",
//! "rejects", "complete"}}`). stdout is untouched: it stays state-only for Meltano.
//!
//! The file is per run. An existing non-empty file is never overwritten: it is renamed to
//! `FILE.<its modification time, UTC, YYYYmmddTHHMMSSZ>` (with `-2`, `-3`… when that is taken)
//! and the run writes a fresh `FILE`, so a scheduler always loads `FILE` and nothing it did not
//! load yet is lost. The file is created `0600` ([`crate::fsutil::open_private`]) and may not be
//! the input, the reject file, the report or the dry-run output (checked before the run).
//! A dry run writes no sync log.
//!
//! The engine calls this module at a few marked hooks (`// sync_log hook`): when a record is
//! routed to an op ([`SyncLog::routed`]), when its outcome is settled ([`SyncLog::settled`],
//! [`SyncLog::skipped`], [`SyncLog::rejected`]), when a two-op record's first half is folded
//! into its second ([`SyncLog::forget`]), with each state printed ([`SyncLog::flush`]) and at
//! the end ([`SyncLog::finish`]). A write error is kept and reported by
//! [`SyncLog::finish`]; it never stops the records themselves.

use crate::maps::FastMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::singer::{Object, SingerWriter};
use crate::sink::{Action as ItemAction, Item, Kind, Refusal, Ticket};

/// The stream of per-record outcomes.
pub const SYNC_LOG_STREAM: &str = "_roster_sync_log";
/// The stream of rejected records.
pub const REJECTS_STREAM: &str = "_roster_rejects";
/// Records between two STATE messages in the file: a loader commits what it loaded at each
/// STATE, so a huge run lands in steps.
pub const STATE_EVERY: u64 = 10_000;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Accepted by the vendor (created or updated, the writer does not say which).
    Sent,
    /// Accepted, and the vendor had no such record before.
    Created,
    /// Accepted, and the vendor had the record before.
    Updated,
    /// Deleted, deactivated or removed at the vendor.
    Deleted,
    /// Given no write, with a reason.
    Skipped,
    /// Written to the reject file, with a reason.
    Rejected,
}

impl Action {
    /// Its name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Sent => "sent",
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Deleted => "deleted",
            Action::Skipped => "skipped",
            Action::Rejected => "rejected",
        }
    }
}

/// Why the sync log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the sync log {path}: {source}")]
pub struct SyncLogError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// A record routed to an op and waiting for its outcome.
#[derive(Debug, Clone)]
struct Pending {
    stream: Arc<str>,
    line: u64,
    kind: &'static str,
    key: Option<String>,
    delete: bool,
}

/// The open sync log.
pub struct SyncLog {
    path: PathBuf,
    out: SingerWriter<File>,
    run_id: String,
    pending: FastMap<Ticket, Pending>,
    records: u64,
    rejects: u64,
    since_state: u64,
    error: Option<std::io::Error>,
}

impl std::fmt::Debug for SyncLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncLog")
            .field("path", &self.path)
            .field("run_id", &self.run_id)
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

/// The SCHEMA of `_roster_sync_log`.
pub fn sync_log_schema() -> Value {
    json!({
        "type": "SCHEMA",
        "stream": SYNC_LOG_STREAM,
        "key_properties": ["run_id", "stream", "line"],
        "schema": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "run_id": {"type": "string"},
                "stream": {"type": "string"},
                "line": {"type": "integer"},
                "kind": {"type": ["string", "null"]},
                "key": {"type": ["string", "null"]},
                "action": {"type": "string", "enum": ["sent", "created", "updated", "deleted", "skipped", "rejected"]},
                "reason": {"type": ["string", "null"]},
                "time": {"type": "string", "format": "date-time"}
            },
            "required": ["run_id", "stream", "line", "action", "time"]
        }
    })
}

/// The SCHEMA of `_roster_rejects`.
pub fn rejects_schema() -> Value {
    json!({
        "type": "SCHEMA",
        "stream": REJECTS_STREAM,
        "key_properties": ["run_id", "stream", "line"],
        "schema": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "run_id": {"type": "string"},
                "stream": {"type": "string"},
                "line": {"type": "integer"},
                "field": {"type": ["string", "null"]},
                "reason": {"type": "string"},
                "record": {"type": ["object", "null"]},
                "time": {"type": "string", "format": "date-time"}
            },
            "required": ["run_id", "stream", "line", "reason", "time"]
        }
    })
}

/// The name an existing sync log is moved to: `FILE.<mtime>` (`-2`, `-3`… when taken).
fn rotated_name(path: &Path) -> PathBuf {
    let stamp = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(chrono::DateTime::<chrono::Utc>::from)
        .unwrap_or_else(|_| chrono::Utc::now())
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let base = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{stamp}{suffix}"));
        PathBuf::from(name)
    };
    let mut candidate = base("");
    let mut n = 2;
    while candidate.exists() {
        candidate = base(&format!("-{n}"));
        n += 1;
    }
    candidate
}

/// The field a reject reason names (`field "email" …`), when it names one.
pub fn field_of(reason: &str) -> Option<String> {
    let at = reason.find("field \"")? + "field ".len();
    let mut de = serde_json::Deserializer::from_str(&reason[at..]).into_iter::<String>();
    de.next()?.ok()
}

/// The key a sync log row names for an op: the user or group key; `group/user` for a
/// membership; the user's key for an event.
fn key_of(item: &Item) -> Option<String> {
    match item.kind {
        Kind::Memberships => match (&item.group_id, &item.user_id) {
            (Some(g), Some(u)) => Some(format!("{g}/{u}")),
            _ => None,
        },
        Kind::Events => item.user_id.clone().or_else(|| item.id.clone()),
        _ => item.id.clone().or_else(|| item.user_id.clone()),
    }
}

impl SyncLog {
    /// Opens a fresh sync log at `path` (an existing non-empty file is renamed first, and its
    /// new name returned) and writes both SCHEMAs.
    pub fn open(path: &Path) -> Result<(SyncLog, Option<PathBuf>), SyncLogError> {
        let err = |source| SyncLogError {
            path: path.to_path_buf(),
            source,
        };
        let mut rotated = None;
        if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0) {
            let to = rotated_name(path);
            std::fs::rename(path, &to).map_err(err)?;
            rotated = Some(to);
        }
        let file = crate::fsutil::open_private(path, false).map_err(err)?;
        let now = chrono::Utc::now();
        let mut log = SyncLog {
            path: path.to_path_buf(),
            out: SingerWriter::new(file),
            run_id: format!(
                "{}-{}",
                now.format("%Y%m%dT%H%M%S%.6fZ"),
                std::process::id()
            ),
            pending: FastMap::default(),
            records: 0,
            rejects: 0,
            since_state: 0,
            error: None,
        };
        for schema in [sync_log_schema(), rejects_schema()] {
            log.out
                .write_json(&schema)
                .map_err(|e| err(std::io::Error::other(e)))?;
        }
        Ok((log, rotated))
    }

    /// This run's id (the first column of both streams).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hook: `ticket` is an op for the record at `line` of `stream`.
    pub fn routed(&mut self, ticket: Ticket, stream: &Arc<str>, line: u64, item: &Item) {
        self.pending.insert(
            ticket,
            Pending {
                stream: stream.clone(),
                line,
                kind: item.kind.as_str(),
                key: key_of(item),
                delete: item.action == ItemAction::Delete,
            },
        );
    }

    /// Hook: `ticket` was half of a two-op record whose outcome is booked under the other.
    pub fn forget(&mut self, ticket: Ticket) {
        self.pending.remove(&ticket);
    }

    /// Hook: the op `ticket` was accepted (`reason` `None`) or skipped with a reason.
    /// `action` overrides the default (`sent`, or `deleted` for a delete; `skipped` with a
    /// reason).
    pub fn settled(&mut self, ticket: Ticket, action: Option<Action>, reason: Option<&str>) {
        let Some(p) = self.pending.remove(&ticket) else {
            return;
        };
        let action = action.unwrap_or(match (reason, p.delete) {
            (Some(_), _) => Action::Skipped,
            (None, true) => Action::Deleted,
            (None, false) => Action::Sent,
        });
        self.row(
            &p.stream,
            p.line,
            Some(p.kind),
            p.key.as_deref(),
            action,
            reason,
        );
    }

    /// Hook: the record at `line` of `stream` was skipped before it became an op.
    pub fn skipped(&mut self, stream: &str, line: u64, reason: &str) {
        self.row(stream, line, None, None, Action::Skipped, Some(reason));
    }

    /// Hook: the record (op `ticket`, if it became one) was rejected.
    pub fn rejected(
        &mut self,
        ticket: Ticket,
        stream: &str,
        line: u64,
        record: &Object,
        refusal: &Refusal,
    ) {
        let p = self.pending.remove(&ticket);
        let reason = refusal.to_string();
        self.row(
            stream,
            line,
            p.as_ref().map(|p| p.kind),
            p.as_ref().and_then(|p| p.key.as_deref()),
            Action::Rejected,
            Some(&reason),
        );
        let mut row = Map::new();
        row.insert("run_id".into(), self.run_id.clone().into());
        row.insert("stream".into(), stream.into());
        row.insert("line".into(), line.into());
        row.insert("field".into(), field_of(&refusal.reason).into());
        row.insert("reason".into(), reason.into());
        row.insert("record".into(), Value::Object(record.clone()));
        row.insert("time".into(), now().into());
        self.rejects += 1;
        self.write(REJECTS_STREAM, &row);
    }

    fn row(
        &mut self,
        stream: &str,
        line: u64,
        kind: Option<&str>,
        key: Option<&str>,
        action: Action,
        reason: Option<&str>,
    ) {
        let mut row = Map::new();
        row.insert("run_id".into(), self.run_id.clone().into());
        row.insert("stream".into(), stream.into());
        row.insert("line".into(), line.into());
        row.insert("kind".into(), kind.into());
        row.insert("key".into(), key.into());
        row.insert("action".into(), action.as_str().into());
        row.insert("reason".into(), reason.into());
        row.insert("time".into(), now().into());
        self.records += 1;
        self.write(SYNC_LOG_STREAM, &row);
    }

    fn write(&mut self, stream: &str, row: &Object) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.out.write_record(stream, row, None, None) {
            self.error = Some(std::io::Error::other(e));
            return;
        }
        self.since_state += 1;
        if self.since_state >= STATE_EVERY {
            self.state(false);
        }
    }

    fn state(&mut self, complete: bool) {
        self.since_state = 0;
        if self.error.is_some() {
            return;
        }
        let value = json!({"roster_sync_log": {
            "run_id": self.run_id,
            "records": self.records,
            "rejects": self.rejects,
            "complete": complete,
        }});
        if let Err(e) = self.out.write_state(&value) {
            self.error = Some(std::io::Error::other(e));
        }
    }

    /// Hook: flushes the rows written so far (the engine calls it with each state it prints,
    /// so a killed run leaves whole lines behind, up to its last state at least).
    pub fn flush(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(std::io::Error::other(e));
        }
    }

    /// Writes the closing STATE and flushes; the first write error of the run, if any.
    pub fn finish(mut self) -> Result<u64, SyncLogError> {
        if !self.pending.is_empty() {
            tracing::debug!(
                "{} op(s) without an outcome are not in the sync log",
                self.pending.len()
            );
        }
        self.state(true);
        if self.error.is_none()
            && let Err(e) = self.out.flush()
        {
            self.error = Some(std::io::Error::other(e));
        }
        match self.error {
            None => Ok(self.records),
            Some(source) => Err(SyncLogError {
                path: self.path,
                source,
            }),
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(kind: Kind, id: &str) -> Item {
        Item {
            kind,
            action: ItemAction::Upsert,
            id: Some(id.into()),
            user_id: None,
            group_id: None,
            fields: Default::default(),
            attributes: Default::default(),
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn schemas_first_then_one_row_per_outcome_then_a_closing_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.singer");
        let (mut log, rotated) = SyncLog::open(&path).unwrap();
        assert!(rotated.is_none());
        let users: Arc<str> = "users".into();
        log.routed(Ticket(1), &users, 2, &item(Kind::Users, "u1"));
        log.routed(Ticket(2), &users, 3, &item(Kind::Users, "u2"));
        log.settled(Ticket(1), None, None);
        log.settled(Ticket(2), None, Some("unchanged"));
        let mut record = Map::new();
        record.insert("id".into(), "u3".into());
        log.rejected(
            Ticket(3),
            "users",
            4,
            &record,
            &Refusal::new("field \"email\" is not an email"),
        );
        log.skipped("audit", 5, "names no kind");
        assert_eq!(log.finish().unwrap(), 4);
        let msgs = lines(&path);
        assert_eq!(msgs[0]["type"], "SCHEMA");
        assert_eq!(msgs[0]["stream"], SYNC_LOG_STREAM);
        assert_eq!(msgs[1]["stream"], REJECTS_STREAM);
        let rows: Vec<&Value> = msgs.iter().filter(|m| m["type"] == "RECORD").collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(rows[0]["record"]["key"], "u1");
        assert_eq!(rows[0]["record"]["action"], "sent");
        assert_eq!(rows[1]["record"]["action"], "skipped");
        assert_eq!(rows[1]["record"]["reason"], "unchanged");
        assert_eq!(rows[2]["record"]["action"], "rejected");
        assert_eq!(rows[3]["stream"], REJECTS_STREAM);
        assert_eq!(rows[3]["record"]["field"], "email");
        assert_eq!(rows[3]["record"]["record"]["id"], "u3");
        assert_eq!(rows[4]["record"]["stream"], "audit");
        let last = msgs.last().unwrap();
        assert_eq!(last["type"], "STATE");
        assert_eq!(last["value"]["roster_sync_log"]["complete"], true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn an_existing_log_is_moved_aside_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.singer");
        std::fs::write(&path, "earlier run\n").unwrap();
        let (log, rotated) = SyncLog::open(&path).unwrap();
        log.finish().unwrap();
        let rotated = rotated.unwrap();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "earlier run\n");
        assert!(
            rotated
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("sync.singer.")
        );
        // A second rotation within the same second takes a suffix.
        std::fs::write(&path, "second\n").unwrap();
        let filetime = std::fs::metadata(&rotated).unwrap().modified().unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(filetime).unwrap();
        drop(f);
        let (log, again) = SyncLog::open(&path).unwrap();
        log.finish().unwrap();
        let again = again.unwrap();
        assert_ne!(again, rotated);
        assert_eq!(std::fs::read_to_string(&again).unwrap(), "second\n");
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "earlier run\n");
    }

    #[test]
    fn field_of_reads_the_named_field() {
        assert_eq!(
            field_of("required field \"email\" is missing").as_deref(),
            Some("email")
        );
        assert_eq!(
            field_of("key field \"a\\\"b\" is empty").as_deref(),
            Some("a\"b")
        );
        assert_eq!(field_of("the vendor said no"), None);
    }

    #[test]
    fn a_state_comes_every_state_every_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let (mut log, _) = SyncLog::open(&path).unwrap();
        for line in 0..STATE_EVERY + 1 {
            log.skipped("s", line, "r");
        }
        log.finish().unwrap();
        let states: Vec<Value> = lines(&path)
            .into_iter()
            .filter(|m| m["type"] == "STATE")
            .collect();
        assert_eq!(states.len(), 2);
        assert_eq!(states[0]["value"]["roster_sync_log"]["complete"], false);
    }
}
