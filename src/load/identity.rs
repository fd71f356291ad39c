//! The duplicate-identity guard (`on_duplicate_identity`): before a users record is sent, it
//! finds
//! - one email on several user keys (`Ann@X.com ` on `u1` and `ann@x.com` on `u2`), and
//! - user keys that differ only in case or surrounding whitespace (`u1`, `U1`, `u1 `),
//!
//! each of which a vendor would otherwise turn into two people. The first record of an identity
//! wins; a later one is a duplicate, reported with the earlier key, stream and line. Under
//! `warn` (the default) it is still sent; under `reject` it goes to the reject file.
//!
//! Normalisation: surrounding Unicode whitespace is trimmed and the text is case-folded as
//! `lower(upper(lower(s)))`, which equates the full Unicode folds the standard library lacks
//! (`straße` = `STRASSE`, final `ς` = `σ`, the Kelvin sign = `k`). No other normalisation
//! (NFC/NFKC) is applied: precomposed and decomposed accents count as different.
//!
//! Memory stays flat: the index holds no text. It maps a 64-bit xxh3 of each normalised key
//! and email to the offset of the first record that carried it in an unlinked temporary file
//! (`tempfile`, 0600), which holds that record's line, stream, key and email. A hash hit is
//! confirmed by reading the earlier record back and comparing the normalised values, so a hash
//! collision never reports a false duplicate (it only leaves the colliding value unindexed,
//! about one chance in 10^7 at a million values), and the warning can name the earlier key.
//! The hashes live in a small hash map that is merged, past [`HOT_BOUND`] entries, into a
//! sorted vector: 16 bytes per distinct key or email, so a million users with an email each
//! cost about 32 MB (peak RSS grew by 41 MB, measured by `a_million_users_peak_memory`),
//! against a `HashMap<String, …>` of the texts at well over 100 MB. A spill
//! of the index itself was not needed at that size; the texts are the part that would grow.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Hash entries kept in the hash map before they are merged into the sorted vector: small
/// enough that the map's slack stays negligible, large enough that merges are rare (a million
/// entries take about 30 merges).
pub const HOT_BOUND: usize = 65_536;

/// Duplicates warned about one by one; past this, one line says more were found (the counts
/// are in the summary and the report).
pub const MAX_WARNINGS: u64 = 20;

/// Seeds that keep the key index and the email index apart.
const KEY_SEED: u64 = 0x006b_6579;
const EMAIL_SEED: u64 = 0x0065_6d61_696c;

/// The normalised form of a key or an email: trimmed and case-folded.
pub fn normalise(value: &str) -> String {
    let trimmed = value.trim();
    if trimmed.is_ascii() {
        return trimmed.to_ascii_lowercase();
    }
    trimmed.to_lowercase().to_uppercase().to_lowercase()
}

/// What makes a record a duplicate of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duplicate {
    /// Its key equals an earlier key but for case or surrounding whitespace.
    Key {
        /// The earlier key, as it came.
        earlier_key: String,
        /// The earlier record's stream.
        earlier_stream: String,
        /// The earlier record's line.
        earlier_line: u64,
    },
    /// Its email is an earlier record's email under another key.
    Email {
        /// The email, as this record has it.
        email: String,
        /// The earlier key, as it came.
        earlier_key: String,
        /// The earlier record's stream.
        earlier_stream: String,
        /// The earlier record's line.
        earlier_line: u64,
    },
}

impl Duplicate {
    /// The reason, naming this record's key and the earlier key, stream and line.
    pub fn reason(&self, key: &str) -> String {
        match self {
            Duplicate::Key {
                earlier_key,
                earlier_stream,
                earlier_line,
            } => format!(
                "duplicate identity: user key {key:?} differs only in case or surrounding whitespace from key {earlier_key:?} (stream {earlier_stream:?}, line {earlier_line})"
            ),
            Duplicate::Email {
                email,
                earlier_key,
                earlier_stream,
                earlier_line,
            } => format!(
                "duplicate identity: field email {email:?} of user key {key:?} is already the email of key {earlier_key:?} (stream {earlier_stream:?}, line {earlier_line})"
            ),
        }
    }
}

/// xxh3 of a normalised value → the offset of its first record in the texts file.
#[derive(Debug, Default)]
struct Index {
    hot: HashMap<u64, u64>,
    cold: Vec<(u64, u64)>,
}

impl Index {
    fn get(&self, hash: u64) -> Option<u64> {
        if let Some(&offset) = self.hot.get(&hash) {
            return Some(offset);
        }
        self.cold
            .binary_search_by_key(&hash, |&(h, _)| h)
            .ok()
            .map(|i| self.cold[i].1)
    }

    fn insert(&mut self, hash: u64, offset: u64) {
        self.hot.insert(hash, offset);
        if self.hot.len() >= HOT_BOUND {
            let mut run: Vec<(u64, u64)> = self.hot.drain().collect();
            run.sort_unstable();
            // Two sorted runs: the stable sort merges them in linear time. The vector grows
            // by exactly the run, so it holds no doubling slack.
            self.cold.reserve_exact(run.len());
            self.cold.extend(run);
            self.cold.sort();
            self.hot.shrink_to(HOT_BOUND);
        }
    }

    fn len(&self) -> usize {
        self.hot.len() + self.cold.len()
    }
}

/// One record as the texts file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Earlier {
    line: u64,
    stream: String,
    key: String,
    email: String,
}

/// The unlinked temporary file of first records: `[line u64][len u32][stream][len u32][key]
/// [len u32][email]`, little-endian.
#[derive(Debug, Default)]
struct Texts {
    file: Option<BufWriter<File>>,
    end: u64,
}

impl Texts {
    fn append(&mut self, line: u64, stream: &str, key: &str, email: &str) -> io::Result<u64> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(BufWriter::new(tempfile::tempfile()?)),
        };
        let offset = self.end;
        file.write_all(&line.to_le_bytes())?;
        let mut written = 8;
        for text in [stream, key, email] {
            let len = u32::try_from(text.len()).map_err(|_| io::Error::other("text too long"))?;
            file.write_all(&len.to_le_bytes())?;
            file.write_all(text.as_bytes())?;
            written += 4 + text.len() as u64;
        }
        self.end += written;
        Ok(offset)
    }

    fn read(&mut self, offset: u64) -> io::Result<Earlier> {
        let Some(file) = &mut self.file else {
            return Err(io::Error::other("no identity index file"));
        };
        file.flush()?;
        let file = file.get_ref();
        let mut at = offset;
        let mut word = [0u8; 8];
        read_at(file, &mut word, at)?;
        at += 8;
        let line = u64::from_le_bytes(word);
        let mut texts = Vec::with_capacity(3);
        for _ in 0..3 {
            let mut len = [0u8; 4];
            read_at(file, &mut len, at)?;
            at += 4;
            let mut text = vec![0u8; u32::from_le_bytes(len) as usize];
            read_at(file, &mut text, at)?;
            at += text.len() as u64;
            texts.push(String::from_utf8(text).map_err(io::Error::other)?);
        }
        let email = texts.pop().unwrap_or_default();
        let key = texts.pop().unwrap_or_default();
        let stream = texts.pop().unwrap_or_default();
        Ok(Earlier {
            line,
            stream,
            key,
            email,
        })
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        let n = file.seek_read(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(())
}

/// What the engine does with a users record after [`IdentityGuard::screen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Not a duplicate (or not a users upsert).
    Clear,
    /// A duplicate, warned about; send it.
    Warned,
    /// A duplicate under `on_duplicate_identity: reject`: reject it with this reason.
    Reject(String),
}

/// The guard: every users record's key and email go through [`IdentityGuard::check`].
#[derive(Debug, Default)]
pub struct IdentityGuard {
    /// `on_duplicate_identity: reject`.
    reject: bool,
    /// Duplicates warned about one by one so far.
    warnings: u64,
    /// The index failed (its temporary file): the guard is off for the rest of the run.
    broken: bool,
    keys: Index,
    emails: Index,
    texts: Texts,
    /// Duplicates found so far.
    pub found: u64,
    /// A hash collision left a value unindexed (logged once).
    warned_collision: bool,
}

impl IdentityGuard {
    /// An empty guard (nothing is allocated until the first record).
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard that warns (`reject` false) or rejects later duplicates.
    pub fn with_policy(reject: bool) -> Self {
        IdentityGuard {
            reject,
            ..Self::default()
        }
    }

    /// Screens a record routed to `item` (users upserts only): warns about a duplicate, once
    /// per record up to [`MAX_WARNINGS`], and says whether to send or reject it. A failure of
    /// the index's temporary file turns the guard off with a warning: it is a check, and the
    /// records themselves go on.
    pub fn screen(&mut self, stream: &str, line: u64, item: &crate::sink::Item) -> Screened {
        use crate::sink::{Action, Kind};
        if self.broken || item.kind != Kind::Users || item.action != Action::Upsert {
            return Screened::Clear;
        }
        let Some(key) = item.id.as_deref() else {
            return Screened::Clear;
        };
        let email = item.fields.get("email").and_then(|v| v.as_str());
        let dup = match self.check(stream, line, key, email) {
            Ok(Some(dup)) => dup,
            Ok(None) => return Screened::Clear,
            Err(err) => {
                self.broken = true;
                tracing::warn!(
                    "the duplicate-identity guard is off for the rest of the run: its temporary file failed: {err}"
                );
                return Screened::Clear;
            }
        };
        let reason = dup.reason(key);
        self.warnings += 1;
        if self.warnings <= MAX_WARNINGS {
            tracing::warn!(
                stream = %crate::cli::logging::escape(stream),
                line,
                "{}{}",
                crate::cli::logging::escape_max(&reason, 4096),
                if self.reject { "; rejected (on_duplicate_identity: reject)" } else { "; sent anyway (on_duplicate_identity: warn)" }
            );
        } else if self.warnings == MAX_WARNINGS + 1 {
            tracing::warn!("more duplicate identities; the summary and the report count them");
        }
        if self.reject {
            Screened::Reject(reason)
        } else {
            Screened::Warned
        }
    }

    /// Distinct keys and emails indexed.
    pub fn indexed(&self) -> usize {
        self.keys.len() + self.emails.len()
    }

    /// Checks a users record (`key`, and its `email` when it has one) read at `line` of
    /// `stream`; the first of an identity is remembered, a later one is returned as a
    /// duplicate. The same key again (an update of the same user) is no duplicate.
    pub fn check(
        &mut self,
        stream: &str,
        line: u64,
        key: &str,
        email: Option<&str>,
    ) -> io::Result<Option<Duplicate>> {
        let norm_key = normalise(key);
        let norm_email = email.map(normalise).filter(|e| !e.is_empty());
        let mut offset: Option<u64> = None;
        // The key.
        let key_hash = xxh3_64_with_seed(norm_key.as_bytes(), KEY_SEED);
        match self.keys.get(key_hash) {
            Some(at) => {
                let earlier = self.texts.read(at)?;
                if normalise(&earlier.key) != norm_key {
                    self.collision();
                } else if earlier.key != key {
                    self.found += 1;
                    return Ok(Some(Duplicate::Key {
                        earlier_key: earlier.key,
                        earlier_stream: earlier.stream,
                        earlier_line: earlier.line,
                    }));
                }
            }
            None => {
                let at = self
                    .texts
                    .append(line, stream, key, email.unwrap_or_default())?;
                offset = Some(at);
                self.keys.insert(key_hash, at);
            }
        }
        // The email.
        let Some(norm_email) = norm_email else {
            return Ok(None);
        };
        let email_hash = xxh3_64_with_seed(norm_email.as_bytes(), EMAIL_SEED);
        match self.emails.get(email_hash) {
            Some(at) => {
                let earlier = self.texts.read(at)?;
                if normalise(&earlier.email) != norm_email {
                    self.collision();
                } else if normalise(&earlier.key) != norm_key {
                    self.found += 1;
                    return Ok(Some(Duplicate::Email {
                        email: email.unwrap_or_default().to_string(),
                        earlier_key: earlier.key,
                        earlier_stream: earlier.stream,
                        earlier_line: earlier.line,
                    }));
                }
            }
            None => {
                let at = match offset {
                    Some(at) => at,
                    None => self
                        .texts
                        .append(line, stream, key, email.unwrap_or_default())?,
                };
                self.emails.insert(email_hash, at);
            }
        }
        Ok(None)
    }

    fn collision(&mut self) {
        if !self.warned_collision {
            self.warned_collision = true;
            tracing::debug!(
                "duplicate-identity guard: a 64-bit hash collision; the value is checked but not indexed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(g: &mut IdentityGuard, line: u64, key: &str, email: &str) -> Option<Duplicate> {
        g.check("users", line, key, Some(email)).unwrap()
    }

    #[test]
    fn normalise_trims_and_folds() {
        assert_eq!(normalise("  Ann@Example.COM\t"), "ann@example.com");
        assert_eq!(normalise("straße"), normalise("STRASSE"));
        assert_eq!(normalise("ΟΔΟΣ"), normalise("οδος"));
        assert_eq!(normalise("οδος"), normalise("οδοσ"));
        assert_eq!(normalise("\u{212A}elvin"), "kelvin");
        assert_eq!(normalise("\u{00A0}u1\u{2003}"), "u1");
    }

    #[test]
    fn one_email_on_two_keys_names_the_earlier_key_and_line() {
        let mut g = IdentityGuard::new();
        assert_eq!(check(&mut g, 2, "u1", "ann@x.com"), None);
        let dup = check(&mut g, 7, "u2", "  ANN@X.com ").unwrap();
        assert_eq!(
            dup,
            Duplicate::Email {
                email: "  ANN@X.com ".into(),
                earlier_key: "u1".into(),
                earlier_stream: "users".into(),
                earlier_line: 2
            }
        );
        let reason = dup.reason("u2");
        assert!(
            reason.contains("\"u1\"") && reason.contains("line 2"),
            "{reason}"
        );
        assert_eq!(g.found, 1);
    }

    #[test]
    fn keys_that_differ_in_case_whitespace_or_fold_are_duplicates() {
        let mut g = IdentityGuard::new();
        assert_eq!(check(&mut g, 1, "u1", "a@x.com"), None);
        assert!(matches!(
            check(&mut g, 2, "u1 ", "b@x.com"),
            Some(Duplicate::Key {
                earlier_line: 1,
                ..
            })
        ));
        assert!(matches!(
            check(&mut g, 3, "U1", "c@x.com"),
            Some(Duplicate::Key { .. })
        ));
        assert_eq!(check(&mut g, 4, "straße", "d@x.com"), None);
        let dup = check(&mut g, 5, "STRASSE", "e@x.com").unwrap();
        assert!(dup.reason("STRASSE").contains("\"straße\""));
        assert_eq!(g.found, 3);
    }

    #[test]
    fn the_same_key_again_is_an_update_not_a_duplicate() {
        let mut g = IdentityGuard::new();
        assert_eq!(check(&mut g, 1, "u1", "a@x.com"), None);
        assert_eq!(check(&mut g, 2, "u1", "A@x.com"), None);
        assert_eq!(check(&mut g, 3, "u1", "new@x.com"), None);
        assert_eq!(g.check("users", 4, "u3", None).unwrap(), None);
        assert_eq!(g.check("users", 5, "u4", Some("  ")).unwrap(), None);
        assert_eq!(g.found, 0);
    }

    /// The peak memory of a million users with an email each (run by hand:
    /// `cargo test --release --lib load::identity -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn a_million_users_peak_memory() {
        fn hwm_kb() -> u64 {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                .unwrap()
        }
        let before = hwm_kb();
        let started = std::time::Instant::now();
        let mut g = IdentityGuard::new();
        for i in 0..1_000_000u64 {
            let key = format!("user-{i:08}");
            let email = format!("Person.{i}@Example.com");
            assert_eq!(g.check("users", i + 1, &key, Some(&email)).unwrap(), None);
        }
        let dup = g
            .check("users", 1_000_001, "x", Some("person.5@example.com "))
            .unwrap();
        assert!(matches!(
            dup,
            Some(Duplicate::Email {
                earlier_line: 6,
                ..
            })
        ));
        eprintln!(
            "1,000,000 users: peak RSS grew by {} MB in {:.1} s ({} values indexed)",
            (hwm_kb() - before) / 1024,
            started.elapsed().as_secs_f64(),
            g.indexed()
        );
    }

    #[test]
    fn the_index_stays_exact_past_the_hot_bound() {
        let mut g = IdentityGuard::new();
        let n = HOT_BOUND as u64 * 2 + 10;
        for i in 0..n {
            assert_eq!(
                check(&mut g, i + 1, &format!("u{i}"), &format!("p{i}@x.com")),
                None
            );
        }
        assert!(!g.keys.cold.is_empty());
        assert_eq!(g.indexed() as u64, 2 * n);
        let dup = check(&mut g, n + 1, "other", "P17@X.COM").unwrap();
        assert!(
            matches!(
                dup,
                Duplicate::Email {
                    earlier_line: 18,
                    ..
                }
            ),
            "{dup:?}"
        );
        let dup = check(&mut g, n + 2, "U99999 ", "z@x.com").unwrap();
        assert!(
            matches!(
                dup,
                Duplicate::Key {
                    earlier_line: 100000,
                    ..
                }
            ),
            "{dup:?}"
        );
    }
}
