//! Mirror deletes (`sync_mode: mirror`, docs/sync.md#mirror-deletes): once every record of a
//! stream's full pass (Singer `version`) has been read, the records roster wrote earlier for that
//! stream whose last-seen version is older are deleted at the vendor.
//!
//! [`Mirror`] follows each stream's passes through the input:
//!
//! - `ACTIVATE_VERSION` v before any record of v **opens** pass v (the classic taps' first pass,
//!   every FULL_TABLE pass of a singer-sdk tap): its start is read here.
//! - The first record of a version no message opened begins a pass too (a classic tap's later
//!   passes send no opening message). Its start counts as read only when the ledger says so: it
//!   is the pass this target began reading earlier (a resumed pass), or the stream's last pass
//!   closed before it (the tap moved on to a new pass).
//! - `ACTIVATE_VERSION` v after records of v, or after an opening v, **closes** pass v (the
//!   classic convention): its records are all read, if its start was.
//! - At the clean end of the input, a pass that was opened here and never closed is read
//!   through (the singer-sdk convention, which sends the message at the start only), unless
//!   the ledger remembers the stream's tap as classic (it closed a pass before, so a pass left
//!   open was cut short) or the input's last STATE keeps the pass's version as under way.
//!
//! Deletes are made only after the input ended cleanly and every record has its outcome, never
//! during the input: an input that ends with an error, a stop or a failure deletes nothing. The
//! guards ([`Guards`]) are checked for every stream before the first delete is sent. A pass
//! whose deletes are decided is kept in the ledger as pending (committed with the last STATE)
//! until they are all settled, so a run killed in the middle of its deletes leaves the rest to
//! the next run with an `ACTIVATE_VERSION` for the stream.

use std::collections::{BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::ledger::{Entry, Ledger, LedgerError, Pass, StaleEntry};
use crate::model::SDC_DELETED_AT;
use crate::sink::{Action, Item, Kind};

/// The share of what the ledger holds for a stream that its pass may delete, by default.
pub const DEFAULT_MAX_DELETE_RATIO: f64 = 0.1;

/// What the input showed of one stream's passes.
#[derive(Debug, Default)]
struct Track {
    /// The version of the pass under way (the last opening message, or the records' version).
    version: Option<u64>,
    /// An `ACTIVATE_VERSION` opened `version` in this input.
    opened: bool,
    /// The start of pass `version` was read by this target.
    from_start: bool,
    /// Records of `version` read.
    records: u64,
    /// Why pass `version` may not delete anything.
    tainted: Option<&'static str>,
    /// The last pass a closing `ACTIVATE_VERSION` ended in this input.
    closed: Option<Closed>,
    /// An `ACTIVATE_VERSION` for the stream came in this input.
    activated: bool,
}

#[derive(Debug, Clone, Copy)]
struct Closed {
    version: u64,
    from_start: bool,
    tainted: Option<&'static str>,
}

/// A pass whose records were all read: its deletes are due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The stream.
    pub stream: String,
    /// The pass.
    pub version: u64,
}

/// The deletes of one stream's pass, and what the ledger holds for the stream.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The stream.
    pub stream: String,
    /// The pass.
    pub version: u64,
    /// The records to delete: memberships first, then users, segments and groups.
    pub stale: Vec<StaleEntry>,
    /// Memberships of a user or group deleted with them: not sent (the vendor drops them with
    /// their user or group), marked not held once the deletes begin.
    pub with_owner: Vec<StaleEntry>,
    /// What the ledger holds for the stream (the ratio's base).
    pub held: u64,
}

/// `max_deletes`, `max_delete_ratio` and `--force-deletes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guards {
    /// The most deletes one stream's pass may make.
    pub max_deletes: Option<u64>,
    /// The largest share of what the ledger holds for a stream that its pass may delete.
    pub max_ratio: f64,
    /// `--force-deletes`: the guards are reported, not enforced.
    pub force: bool,
    /// `--plan`: a guard that trips is reported with the plan (a run would stop there), and the
    /// deletes are still planned so the plan shows them.
    pub plan: bool,
}

/// A guard that stopped the deletes: the figures of its one line.
#[derive(Debug, Clone, PartialEq)]
pub struct Tripped {
    /// The stream.
    pub stream: String,
    /// The deletes its pass would make.
    pub deletes: u64,
    /// What the ledger holds for it.
    pub held: u64,
    /// deletes / held.
    pub ratio: f64,
    /// The limit passed, as the config names it (`max_delete_ratio 0.1`).
    pub limit: String,
}

impl Guards {
    /// The first limit `planned` passes, if any.
    pub fn check(&self, planned: &Planned) -> Option<Tripped> {
        let deletes = planned.stale.len() as u64;
        if deletes == 0 {
            return None;
        }
        let ratio = deletes as f64 / planned.held.max(1) as f64;
        let limit = match self.max_deletes {
            Some(max) if deletes > max => format!("max_deletes {max}"),
            _ if ratio > self.max_ratio => format!("max_delete_ratio {}", self.max_ratio),
            _ => return None,
        };
        Some(Tripped {
            stream: planned.stream.clone(),
            deletes,
            held: planned.held,
            ratio,
            limit,
        })
    }
}

/// Each stream's passes through the input, and the deletes they decide.
#[derive(Debug)]
pub struct Mirror {
    streams: HashMap<String, Track>,
    /// The guards.
    pub guards: Guards,
}

impl Mirror {
    /// No pass seen yet.
    pub fn new(guards: Guards) -> Self {
        Mirror {
            streams: HashMap::new(),
            guards,
        }
    }

    /// `ACTIVATE_VERSION` `version` for `stream`: opens or closes a pass. Returns true when it
    /// closed one.
    pub fn activate(
        &mut self,
        ledger: &mut Ledger,
        stream: &str,
        version: u64,
    ) -> Result<bool, LedgerError> {
        let pass = ledger.pass(stream)?;
        let track = self.streams.entry(stream.to_string()).or_default();
        track.activated = true;
        let read_here = track.version == Some(version) && (track.records > 0 || track.opened);
        // A pass this target began reading in an earlier run and never saw end, resumed with
        // nothing left to read: the message closes it. (A start-only tap's pass that ended
        // is closed already: its next run, should it start in the same second, opens again.)
        let resumed = track.version.is_none()
            && pass.reading == Some(version)
            && pass.closed != Some(version);
        if read_here || resumed {
            track.closed = Some(Closed {
                version,
                from_start: track.from_start || resumed,
                tainted: track.tainted,
            });
            let closed = track.closed;
            *track = Track {
                closed,
                activated: true,
                ..Track::default()
            };
            return Ok(true);
        }
        *track = Track {
            version: Some(version),
            opened: true,
            from_start: true,
            closed: track.closed,
            activated: true,
            ..Track::default()
        };
        ledger.set_pass(
            stream,
            Pass {
                reading: Some(version),
                ..pass
            },
        );
        Ok(false)
    }

    /// A RECORD of `stream` carrying `version`.
    pub fn record(
        &mut self,
        ledger: &mut Ledger,
        stream: &str,
        version: Option<u64>,
    ) -> Result<(), LedgerError> {
        if !self.streams.contains_key(stream) {
            self.streams.insert(stream.to_string(), Track::default());
        }
        let Some(track) = self.streams.get_mut(stream) else {
            return Ok(());
        };
        match version {
            None => {
                if track.version.is_some() {
                    track
                        .tainted
                        .get_or_insert("a RECORD without a version came in the pass");
                }
                return Ok(());
            }
            Some(v) if track.version == Some(v) => {}
            Some(v) => {
                let pass = ledger.pass(stream)?;
                let from_start =
                    pass.reading == Some(v) || pass.closed.is_some_and(|closed| closed < v);
                *track = Track {
                    version: Some(v),
                    from_start,
                    closed: track.closed,
                    activated: track.activated,
                    ..Track::default()
                };
                if from_start && pass.reading != Some(v) {
                    ledger.set_pass(
                        stream,
                        Pass {
                            reading: Some(v),
                            ..pass
                        },
                    );
                }
            }
        }
        track.records += 1;
        Ok(())
    }

    /// A record of `stream` was rejected and its key cannot be read: whether the vendor holds
    /// it is unknown, so its pass deletes nothing.
    pub fn taint(&mut self, stream: &str) {
        let track = self.streams.entry(stream.to_string()).or_default();
        if track.version.is_some() {
            track
                .tainted
                .get_or_insert("a record of the pass was rejected, and its key cannot be read");
        }
    }

    /// The input ended cleanly: the passes whose records were all read, with the ledger's
    /// pending passes of streams that had an `ACTIVATE_VERSION` in this input. Stages each
    /// stream's pass row (the caller commits it with the last state). `last_state` is the
    /// input's last STATE; `written` says which streams were written (a stream skipped or
    /// rejected by its route had no record's version recorded, so no pass of it counts).
    pub fn due(
        &mut self,
        ledger: &mut Ledger,
        last_state: Option<&Value>,
        written: impl Fn(&str) -> bool,
    ) -> Result<Vec<Due>, LedgerError> {
        let mut due = Vec::new();
        let mut names: Vec<&String> = self.streams.keys().collect();
        names.sort();
        for stream in names {
            let track = &self.streams[stream];
            if !written(stream) {
                if track.activated {
                    tracing::warn!(
                        stream = stream.as_str(),
                        "mirror: deleting nothing for this stream: it is not written (its route skips or rejects it)"
                    );
                }
                continue;
            }
            let mut pass = ledger.pass(stream)?;
            let read = read_through(stream, track, &pass, last_state);
            if let Some(closed) = track.closed {
                pass.classic = true;
                pass.closed = Some(closed.version.max(pass.closed.unwrap_or(0)));
            }
            if let Some(version) = read {
                pass.closed = Some(version.max(pass.closed.unwrap_or(0)));
                pass.pending = Some(version.max(pass.pending.unwrap_or(0)));
            }
            if track.activated
                && let Some(version) = pass.pending
            {
                due.push(Due {
                    stream: stream.clone(),
                    version,
                });
            }
            if pass != ledger.pass(stream)? {
                ledger.set_pass(stream, pass);
            }
        }
        Ok(due)
    }

    /// The deletes each due pass makes (the ledger committed first): the records roster wrote
    /// for the stream that the vendor still holds and whose last-seen version is older. A
    /// membership of a user or group deleted with it is set apart.
    pub fn plan(ledger: &Ledger, due: &[Due]) -> Result<Vec<Planned>, LedgerError> {
        let held = ledger.held_counts()?;
        let mut found = Vec::new();
        for Due { stream, version } in due {
            found.push((stream, *version, ledger.older_than(stream, *version)?));
        }
        // Users and groups deleted by any stream's pass (a memberships stream's entries name
        // the users of a users stream).
        let gone: BTreeSet<(Kind, &str)> = found
            .iter()
            .flat_map(|(_, _, stale)| stale)
            .filter(|s| matches!(s.key.kind, Kind::Users | Kind::Groups))
            .map(|s| (s.key.kind, s.key.key.as_str()))
            .collect();
        let mut planned = Vec::new();
        for (stream, version, stale) in &found {
            let (with_owner, mut stale): (Vec<StaleEntry>, Vec<StaleEntry>) =
                stale.iter().cloned().partition(|s| {
                    s.key.kind == Kind::Memberships
                        && (gone.contains(&(Kind::Users, s.key.key.as_str()))
                            || gone.contains(&(Kind::Groups, s.key.group.as_str())))
                });
            stale.sort_by_key(|s| order(s.key.kind));
            planned.push(Planned {
                stream: stream.to_string(),
                version: *version,
                stale,
                with_owner,
                held: held.get(stream.as_str()).copied().unwrap_or(0),
            });
        }
        Ok(planned)
    }

    /// The deletes of `planned` are about to be sent: each entry forgets its hash first (the
    /// caller commits before the first delete), so that a delete the vendor made but whose
    /// answer a kill -9 lost never makes the record, back in a later pass, look unchanged. The
    /// memberships set apart are marked not held.
    pub fn begin(ledger: &mut Ledger, planned: &[Planned]) {
        for p in planned {
            for s in &p.stale {
                ledger.unknown(s.key.clone(), None);
            }
            for s in &p.with_owner {
                let gone = Entry {
                    hash: None,
                    held: false,
                    version: s.version,
                };
                ledger.accepted(s.key.clone(), &p.stream, gone);
            }
        }
    }

    /// Every delete of `done` settled (accepted, skipped or rejected): their passes are no
    /// longer pending. A rejected delete stays held in the ledger, so the next pass tries again.
    pub fn settled(ledger: &mut Ledger, done: &[Planned]) -> Result<(), LedgerError> {
        for planned in done {
            let pass = ledger.pass(&planned.stream)?;
            if pass.pending.is_some_and(|p| p <= planned.version) {
                ledger.set_pass(
                    &planned.stream,
                    Pass {
                        pending: None,
                        ..pass
                    },
                );
            }
        }
        Ok(())
    }
}

/// The pass of `stream` this input read through, if any; warns about one it did not.
fn read_through(stream: &str, track: &Track, pass: &Pass, state: Option<&Value>) -> Option<u64> {
    if let Some(closed) = track.closed {
        let why = if !closed.from_start {
            Some(
                "its start was not read by this target (no ACTIVATE_VERSION opened it in this input, and the ledger does not know it began)",
            )
        } else {
            closed.tainted
        };
        let Some(why) = why else {
            return Some(closed.version);
        };
        tracing::warn!(
            stream,
            version = closed.version,
            "mirror: deleting nothing for this pass: {why}; the next full pass deletes"
        );
        return None;
    }
    let (Some(version), true) = (track.version, track.opened) else {
        return None;
    };
    let under_way = state
        .and_then(|s| s.get("bookmarks"))
        .and_then(|b| b.get(stream))
        .and_then(|b| b.get("version"))
        .and_then(Value::as_u64)
        == Some(version);
    let why = if pass.classic {
        Some(
            "the input ended without the closing ACTIVATE_VERSION, and this stream's tap closed its passes before (a classic tap), so the pass was cut short",
        )
    } else if under_way {
        Some(
            "the input ended without the closing ACTIVATE_VERSION, and the tap's last STATE keeps the pass's version as under way",
        )
    } else {
        track.tainted
    };
    match why {
        None => Some(version),
        Some(why) => {
            tracing::warn!(
                stream,
                version,
                "mirror: deleting nothing for this pass: {why}"
            );
            None
        }
    }
}

/// Memberships go first (before the user or group they name), then users, segments, groups.
fn order(kind: Kind) -> u8 {
    match kind {
        Kind::Memberships => 0,
        Kind::Users => 1,
        Kind::Segments => 2,
        Kind::Groups => 3,
        Kind::Events => 4,
    }
}

/// The delete of a stale entry, in roster's record model, and the record it stands for (what
/// the reject file and the sync log show): the key under `key_field` (memberships: `user_id`
/// and `group_id`) and `_sdc_deleted_at`, so a replay of a reject sends the delete again.
pub fn delete_of(stale: &StaleEntry, key_field: &str, at: &str) -> (Item, Map<String, Value>) {
    let key = &stale.key;
    let mut item = Item {
        kind: key.kind,
        action: Action::Delete,
        id: None,
        user_id: None,
        group_id: None,
        fields: Default::default(),
        attributes: Default::default(),
    };
    let mut record = Map::new();
    match key.kind {
        Kind::Memberships => {
            item.user_id = Some(key.key.clone());
            item.group_id = Some(key.group.clone());
            record.insert("user_id".into(), json!(key.key));
            record.insert("group_id".into(), json!(key.group));
        }
        _ => {
            item.id = Some(key.key.clone());
            record.insert(key_field.to_string(), json!(key.key));
        }
    }
    record.insert(SDC_DELETED_AT.into(), json!(at));
    (item, record)
}

#[cfg(test)]
#[path = "mirror_tests.rs"]
mod tests;
