//! The engine's side of the ledger ([`crate::ledger`]): change detection, `sync_mode`, and how
//! an accepted record counts (created, updated, deleted).
//!
//! Before an op is handed to the dispatcher, [`Sync::decide`] looks its key up: a record whose
//! canonical hash equals the one the vendor last accepted is skipped as [`UNCHANGED`]; a record
//! the mode leaves out is skipped with the mode's name as the reason. Whether the destination
//! "holds" a record is decided by a read at the vendor for the kinds its writer can read
//! (`super::holds`, after this check), by the ledger for the others. When the op settles, [`Sync::settled`] stages the ledger
//! entry (only for a write the vendor accepted) and says how the record counts.
//!
//! The hash is computed once per op, here, over the record in roster's model as routed for this
//! vendor ([`Item`]: kind, action, keys, fields, attributes, top-level names sorted): it exists
//! before anything is sent, which the sinks' per-request hashes (one per batch for batched
//! vendors) do not.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::config::Resolved;
use crate::config::{ConfigError, LedgerSetting, SyncMode, TargetSettings};
use crate::ledger::{Entry, EntryKey, Ledger, LedgerError};
use crate::sink::{Action, Item, Kind, Op, Outcome, PayloadHash, Ticket};

/// Set (by `.cargo/config.toml` for `cargo test` and `cargo run`), an unset `ledger` key means
/// no ledger rather than the default file.
pub const NO_DEFAULT_LEDGER: &str = "ROSTER_NO_DEFAULT_LEDGER";

/// The skip reason of a record whose payload the vendor already accepted.
pub const UNCHANGED: &str = "unchanged";

/// How an accepted record counts in the summary and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The ledger did not hold it (events are always new).
    Created,
    /// The ledger held it.
    Updated,
    /// A delete.
    Deleted,
    /// An upsert without a ledger: created or updated, roster cannot tell.
    Upserted,
}

/// What to do with an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Hand it to the dispatcher.
    Send,
    /// Settle it as skipped with this reason.
    Skip(&'static str),
}

mod pending;

use pending::{Pending, PendingBook};

/// The ledger, the mode and the ops in flight.
#[derive(Debug)]
pub struct Sync {
    ledger: Option<Ledger>,
    change_detection: bool,
    mode: SyncMode,
    /// The ops in flight, packed (a bulk run keeps tens of thousands until their jobs end).
    pending: PendingBook,
    /// The kinds whose "holds" the vendor's reads decide (`super::holds`); the ledger the rest.
    reads: super::holds::ReadKinds,
}

/// The ledger's part of the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncSummary {
    /// The ledger file (`null`: no ledger).
    pub ledger: Option<String>,
    /// True when unchanged records were skipped.
    pub change_detection: bool,
    /// The `sync_mode`.
    pub sync_mode: &'static str,
}

impl Sync {
    /// No ledger, change detection off, `upsert` (tests, benches).
    pub fn off() -> Self {
        Sync {
            ledger: None,
            change_detection: false,
            mode: SyncMode::Upsert,
            pending: PendingBook::default(),
            reads: super::holds::ReadKinds::none(),
        }
    }

    /// A ledger in `ledger`, with change detection on unless `full_resync`.
    pub fn new(ledger: Option<Ledger>, change_detection: bool, mode: SyncMode) -> Self {
        Sync {
            change_detection: change_detection && ledger.is_some(),
            ledger,
            mode,
            pending: PendingBook::default(),
            reads: super::holds::ReadKinds::none(),
        }
    }

    /// Leaves `sync_mode`'s "holds" to the vendor's reads for the kinds in `reads`.
    pub fn reading(mut self, reads: super::holds::ReadKinds) -> Self {
        self.reads = reads;
        self
    }

    /// Opens what the settings ask for: the ledger (read-only in a dry run, where a missing one
    /// is no ledger), change detection (off for `full_resync`) and the mode.
    pub fn open(
        config: &Resolved,
        settings: &TargetSettings,
        dry_run: bool,
        full_resync: bool,
    ) -> Result<Sync, ConfigError> {
        let path = ledger_path(settings)?;
        if path.is_none() && settings.sync_mode != SyncMode::Upsert {
            return Err(ConfigError::Invalid {
                key: "sync_mode".into(),
                problem: format!(
                    "is {:?}, which decides what the destination holds from the ledger; turn the ledger on (leave \"ledger\" out, or name a file)",
                    settings.sync_mode.as_str()
                ),
            });
        }
        let problem = |err: LedgerError| ConfigError::Invalid {
            key: "ledger".into(),
            problem: err.to_string(),
        };
        let ledger = match path {
            None => None,
            Some(path) => {
                let account = account(config)?;
                if dry_run {
                    Ledger::open_read_only(&path, config.spec.name, &account).map_err(problem)?
                } else {
                    Some(Ledger::open(&path, config.spec.name, &account).map_err(problem)?)
                }
            }
        };
        let mut ledger = ledger;
        if settings.sync_mode == SyncMode::Mirror
            && let Some(ledger) = ledger.as_mut()
        {
            ledger.remember_versions();
        }
        let detect = settings.change_detection.unwrap_or(true) && !full_resync;
        if let Some(ledger) = &ledger {
            tracing::info!(
                ledger = %ledger.path().display(),
                change_detection = detect,
                sync_mode = settings.sync_mode.as_str(),
                "using the ledger"
            );
        }
        Ok(Sync::new(ledger, detect, settings.sync_mode))
    }

    /// What the report says about the ledger.
    pub fn summary(&self) -> SyncSummary {
        SyncSummary {
            ledger: self.ledger.as_ref().map(|l| l.path().display().to_string()),
            change_detection: self.change_detection,
            sync_mode: self.mode.as_str(),
        }
    }

    /// Decides whether `op` goes out. A record sent is remembered until it settles; `version` is
    /// the Singer version its stream is in.
    pub fn decide(&mut self, op: &Op, version: Option<u64>) -> Result<Decision, LedgerError> {
        let item = &op.item;
        let key = entry_key(item);
        let pending = |key, entry, existed| Pending {
            key,
            entry,
            existed,
            kind: item.kind,
            action: item.action,
        };
        let Some(ledger) = self.ledger.as_mut() else {
            self.pending
                .insert(op.ticket, pending(None, Entry::default(), false));
            return Ok(Decision::Send);
        };
        if !self.reads.decides(self.mode, item)
            && let Some(reason) = mode_skip(self.mode, ledger, item, key.as_ref())?
        {
            return Ok(Decision::Skip(reason));
        }
        let Some(key) = key else {
            self.pending
                .insert(op.ticket, pending(None, Entry::default(), false));
            return Ok(Decision::Send);
        };
        let hash = canonical_hash(item);
        let current = ledger.get(&key)?;
        if let Some(current) = current
            && self.change_detection
            && current.hash == Some(hash)
        {
            if let Some(version) = version {
                ledger.seen(key, current, version);
            }
            return Ok(Decision::Skip(UNCHANGED));
        }
        let entry = Entry {
            hash: Some(hash),
            held: item.action == Action::Upsert,
            version: version.or(current.and_then(|c| c.version)),
        };
        ledger.expect(&key, entry);
        // Where a read at the vendor decides the mode, what it found is what the mode lets
        // through: held under update_only, absent under create_only.
        let existed = match self.mode {
            SyncMode::UpdateOnly if self.reads.decides(self.mode, item) => true,
            SyncMode::CreateOnly if self.reads.decides(self.mode, item) => false,
            _ => current.is_some_and(|c| c.held),
        };
        self.pending
            .insert(op.ticket, pending(Some(key), entry, existed));
        Ok(Decision::Send)
    }

    /// An op settled: stages its entry when the vendor accepted it, forgets the hash when it did
    /// not; says how an accepted record counts. `None` for ops [`Sync::decide`] skipped.
    pub fn settled(&mut self, ticket: Ticket, outcome: &Outcome, stream: &str) -> Option<Class> {
        let pending = self.pending.remove(ticket)?;
        let has_ledger = self.ledger.is_some();
        if let (Some(ledger), Some(key)) = (self.ledger.as_mut(), pending.key.clone()) {
            match outcome {
                Outcome::Accepted => ledger.accepted(key, stream, pending.entry),
                // A delete the writer skipped found nothing to delete (gone already, inactive
                // already, not a member): the vendor does not hold it, as after a delete.
                Outcome::Skipped(_) if pending.action == Action::Delete => {
                    ledger.accepted(key, stream, pending.entry)
                }
                // Refused, or skipped by the writer (nothing sent, or nothing it could send):
                // what the vendor holds is not known, so the next run sends it. The record was
                // read in its version all the same.
                Outcome::Rejected(_) | Outcome::Skipped(_) => {
                    ledger.unknown(key, pending.entry.version)
                }
            }
        }
        Some(match (pending.action, pending.kind) {
            (Action::Delete, _) => Class::Deleted,
            (_, Kind::Events) => Class::Created,
            _ if !has_ledger || pending.key.is_none() => Class::Upserted,
            _ if pending.existed => Class::Updated,
            _ => Class::Created,
        })
    }

    /// True when enough is staged that the ledger should commit now.
    pub fn due(&self) -> bool {
        self.ledger
            .as_ref()
            .is_some_and(|l| l.staged() >= crate::ledger::COMMIT_EVERY)
    }

    /// Commits what is staged, with the STATE about to be printed.
    pub fn commit(&mut self, state: Option<&Value>) -> Result<(), LedgerError> {
        match self.ledger.as_mut() {
            Some(ledger) => ledger.commit(state),
            None => Ok(()),
        }
    }

    /// The ledger, for what builds on it (mirror deletes).
    pub fn ledger(&self) -> Option<&Ledger> {
        self.ledger.as_ref()
    }

    /// The ledger, for the mirror deletes' pass rows.
    pub fn ledger_mut(&mut self) -> Option<&mut Ledger> {
        self.ledger.as_mut()
    }

    /// The mode.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// A record read in `version` was rejected before anything was sent for it: it is in the
    /// source all the same, so a mirror pass must not take it for deleted.
    pub fn present(&mut self, item: &Item, version: u64) {
        if let (Some(ledger), Some(key)) = (self.ledger.as_mut(), entry_key(item)) {
            ledger.present(key, version);
        }
    }
}

/// The ledger file the settings name: `None` for `ledger: false`, or when there is no default
/// location (no `XDG_STATE_HOME` and no `HOME`, warned).
fn ledger_path(settings: &TargetSettings) -> Result<Option<PathBuf>, ConfigError> {
    match &settings.ledger {
        Some(LedgerSetting::On(false)) => Ok(None),
        Some(LedgerSetting::Path(path)) if path.as_os_str().is_empty() => {
            Err(ConfigError::Invalid {
                key: "ledger".into(),
                problem:
                    "is empty: name a file, leave the key out for the default, or set it to false"
                        .into(),
            })
        }
        // Meltano and `--config ENV` pass strings.
        Some(LedgerSetting::Path(path)) if matches!(path.to_str(), Some("false" | "off")) => {
            Ok(None)
        }
        Some(LedgerSetting::Path(path)) => Ok(Some(path.clone())),
        // Under cargo (.cargo/config.toml): tests start a sandbox on a new port each, and ports
        // come round again, so a default ledger shared between them would skip records a later
        // test expects to be sent. Tests of the ledger name one or unset this variable.
        None if std::env::var_os(NO_DEFAULT_LEDGER).is_some_and(|v| !v.is_empty()) => {
            tracing::debug!("{NO_DEFAULT_LEDGER} is set and \"ledger\" is not: no ledger");
            Ok(None)
        }
        Some(LedgerSetting::On(true)) | None => {
            let path = Ledger::default_path();
            if path.is_none() {
                tracing::warn!(
                    "no ledger: neither XDG_STATE_HOME nor HOME is set, so every record is sent; set \"ledger\" to a file"
                );
            }
            Ok(path)
        }
    }
}

/// Which vendor account the entries are about: the base URL, the account keys that are not
/// secret, and a fingerprint of the credentials (two environments of one vendor behind one
/// base URL, such as Userflow's test and production, differ only by their token). A new
/// credential starts a fresh scope: everything is sent once.
pub fn account(config: &Resolved) -> Result<String, ConfigError> {
    let mut account = config.base_url()?.to_string();
    let mut secrets = Vec::new();
    for setting in config.spec.settings {
        let Some(value) = config.values.get(setting.name) else {
            continue;
        };
        if setting.secret {
            secrets.push(value.to_string());
        } else if matches!(setting.name, "account_id" | "username") {
            account.push_str(&format!(
                " {}={}",
                setting.name,
                value.as_str().unwrap_or("")
            ));
        }
    }
    if !secrets.is_empty() {
        let fingerprint = xxhash_rust::xxh3::xxh3_64(secrets.join("\n").as_bytes());
        account.push_str(&format!(" key#{:08x}", fingerprint >> 32));
    }
    Ok(account)
}

/// The ledger key of a record: users, groups and segments by their key, memberships by user and
/// group; events have none (each is new).
pub fn entry_key(item: &Item) -> Option<EntryKey> {
    match item.kind {
        Kind::Users | Kind::Groups | Kind::Segments => {
            item.id.as_deref().map(|id| EntryKey::new(item.kind, id))
        }
        Kind::Memberships => Some(EntryKey::membership(
            item.user_id.as_deref()?,
            item.group_id.as_deref()?,
        )),
        Kind::Events => None,
    }
}

fn held(ledger: &Ledger, key: Option<&EntryKey>) -> Result<bool, LedgerError> {
    match key {
        Some(key) => Ok(ledger.get(key)?.is_some_and(|e| e.held)),
        None => Ok(false),
    }
}

/// The mode's reason to leave `item` out, if any. `update_only` never creates a user, group or
/// segment the ledger does not hold (nor a membership or event of one); `create_only` never
/// changes or deletes one it holds.
fn mode_skip(
    mode: SyncMode,
    ledger: &Ledger,
    item: &Item,
    key: Option<&EntryKey>,
) -> Result<Option<&'static str>, LedgerError> {
    let leave_out = match mode {
        SyncMode::Upsert | SyncMode::Mirror => false,
        SyncMode::UpdateOnly if item.action == Action::Delete => false,
        SyncMode::UpdateOnly => match item.kind {
            Kind::Users | Kind::Groups | Kind::Segments => !held(ledger, key)?,
            Kind::Memberships | Kind::Events => {
                let user = item
                    .user_id
                    .as_deref()
                    .map(|u| EntryKey::new(Kind::Users, u));
                let group = item
                    .group_id
                    .as_deref()
                    .map(|g| EntryKey::new(Kind::Groups, g));
                !held(ledger, user.as_ref())?
                    || (item.kind == Kind::Memberships && !held(ledger, group.as_ref())?)
            }
        },
        SyncMode::CreateOnly => item.kind != Kind::Events && held(ledger, key)?,
    };
    Ok(leave_out.then(|| mode.as_str()))
}

/// The hash of a record in roster's model: the payload whose acceptance the ledger remembers.
///
/// xxh3-128 of the record's canonical form: the JSON `serde_json` writes (compact) for
/// `{"kind", "action", "id", "user_id", "group_id", "fields", "attributes"}` with the two maps'
/// top-level names sorted (byte order) and nested values as they are. The ledgers on disk hold
/// these hashes, so the bytes must never change; they are written here directly into a reused
/// buffer (serde's serializer machinery and a sorted `Vec` per map were 9,600 instructions an
/// upsert, BENCHMARKS.md), and a test compares them with `serde_json`'s on hostile input.
pub fn canonical_hash(item: &Item) -> PayloadHash {
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        canonical::write(&mut buffer, item);
        let hash = PayloadHash::of_bytes(&buffer);
        if buffer.capacity() > 64 * 1024 {
            *buffer = Vec::new();
        }
        hash
    })
}

/// The canonical form's bytes, written as `serde_json::to_writer` wrote them.
mod canonical {
    use std::io::Write as _;

    use serde_json::Value;

    use crate::model::{PropKey, Props};
    use crate::sink::{Action, Item, Kind};

    /// At most this many top-level names are sorted on the stack (an index fits in a `u8`).
    const STACK_KEYS: usize = 32;

    pub(super) fn write(out: &mut Vec<u8>, item: &Item) {
        out.extend_from_slice(b"{\"kind\":\"");
        out.extend_from_slice(kind(item.kind).as_bytes());
        out.extend_from_slice(b"\",\"action\":\"");
        out.extend_from_slice(match item.action {
            Action::Upsert => b"upsert".as_slice(),
            Action::Delete => b"delete".as_slice(),
        });
        out.extend_from_slice(b"\",\"id\":");
        opt_str(out, item.id.as_deref());
        out.extend_from_slice(b",\"user_id\":");
        opt_str(out, item.user_id.as_deref());
        out.extend_from_slice(b",\"group_id\":");
        opt_str(out, item.group_id.as_deref());
        out.extend_from_slice(b",\"fields\":");
        sorted(out, &item.fields);
        out.extend_from_slice(b",\"attributes\":");
        sorted(out, &item.attributes);
        out.push(b'}');
    }

    /// `Kind`'s serde name (`rename_all = "lowercase"`).
    fn kind(kind: Kind) -> &'static str {
        match kind {
            Kind::Users => "users",
            Kind::Groups => "groups",
            Kind::Memberships => "memberships",
            Kind::Events => "events",
            Kind::Segments => "segments",
        }
    }

    fn opt_str(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            Some(s) => string(out, s),
            None => out.extend_from_slice(b"null"),
        }
    }

    /// A map with its top-level names in byte order, sorted without allocating when small.
    fn sorted(out: &mut Vec<u8>, map: &Props) {
        let n = map.len();
        if n <= STACK_KEYS {
            let mut order: [(&str, u8); STACK_KEYS] = [("", 0); STACK_KEYS];
            for (i, (slot, (k, _))) in order.iter_mut().zip(map.iter()).enumerate() {
                *slot = (k.as_ref(), i as u8);
            }
            let order = &mut order[..n];
            if !order.is_sorted_by(|a, b| a.0 <= b.0) {
                order.sort_unstable_by(|a, b| a.0.cmp(b.0));
            }
            entries(
                out,
                order
                    .iter()
                    .filter_map(|(_, i)| map.get_index(usize::from(*i))),
            );
        } else {
            let mut order: Vec<(&PropKey, &Value)> = map.iter().collect();
            order.sort_unstable_by(|a, b| a.0.cmp(b.0));
            entries(out, order.into_iter());
        }
    }

    fn entries<'a, K: AsRef<str> + 'a>(
        out: &mut Vec<u8>,
        entries: impl Iterator<Item = (&'a K, &'a Value)>,
    ) {
        out.push(b'{');
        let mut first = true;
        for (k, v) in entries {
            if !first {
                out.push(b',');
            }
            first = false;
            string(out, k.as_ref());
            out.push(b':');
            value(out, v);
        }
        out.push(b'}');
    }

    fn value(out: &mut Vec<u8>, value: &Value) {
        match value {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            // The text `serde_json` writes for a number: itoa for integers; for a float,
            // `Number`'s `Display`, which is its serialiser's shortest round-trip form.
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
                } else if let Some(i) = n.as_i64() {
                    out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
                } else {
                    let _ = write!(out, "{n}");
                }
            }
            Value::String(s) => string(out, s),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self::value(out, item);
                }
                out.push(b']');
            }
            // Nested objects in their own order, as `serde_json` writes a `Map`.
            Value::Object(map) => entries(out, map.iter()),
        }
    }

    /// A JSON string as `serde_json` escapes it: `"` and `\\` escaped, `\b \t \n \f \r`
    /// short, other control characters `\u00xx` (lowercase hex), everything else as is.
    fn string(out: &mut Vec<u8>, s: &str) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = s.as_bytes();
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        // Most strings need no escape: one pass without an early exit (it vectorises).
        if !bytes.iter().fold(false, |any, &b| {
            any | (b < 0x20) | (b == b'"') | (b == b'\\')
        }) {
            out.extend_from_slice(bytes);
            out.push(b'"');
            return;
        }
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x09 => b't',
                0x0A => b'n',
                0x0C => b'f',
                0x0D => b'r',
                0x00..=0x1F => b'u',
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            start = i + 1;
            if short == b'u' {
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xF)],
                ]);
            } else {
                out.extend_from_slice(&[b'\\', short]);
            }
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }

    /// The form as it was first written, through serde: the reference the tests hold the
    /// direct writer to.
    #[cfg(test)]
    pub(super) fn reference(item: &Item) -> Vec<u8> {
        use serde::Serialize;

        struct Sorted<'a>(&'a Props);

        impl Serialize for Sorted<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut entries: Vec<(&PropKey, &Value)> = self.0.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                serializer.collect_map(entries)
            }
        }

        #[derive(Serialize)]
        struct Canonical<'a> {
            kind: Kind,
            action: Action,
            id: Option<&'a str>,
            user_id: Option<&'a str>,
            group_id: Option<&'a str>,
            fields: Sorted<'a>,
            attributes: Sorted<'a>,
        }

        serde_json::to_vec(&Canonical {
            kind: item.kind,
            action: item.action,
            id: item.id.as_deref(),
            user_id: item.user_id.as_deref(),
            group_id: item.group_id.as_deref(),
            fields: Sorted(&item.fields),
            attributes: Sorted(&item.attributes),
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
