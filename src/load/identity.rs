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
//!
//! The hashes themselves spill too. Each index (keys, emails) keeps up to
//! [`DEFAULT_SPILL_BOUND`] entries in a hash map (`ROSTER_IDENTITY_IN_MEMORY` sets the bound;
//! tests use a small one); past it the map is sorted and merged into one sorted run of
//! `(hash, offset)` pairs in another unlinked temporary file. What stays in memory of the run
//! is the first hash of each 4 KiB block (8 bytes per 256 entries) and a Bloom filter (10 bits
//! per entry, 7 probes): a value not in the run, which is most values (a new user), costs no
//! read 99% of the time, and one in it costs one `pread` of one block. At 1,000,000 users with
//! an email each, peak RSS grows by 10 MB (2.2 s of index work) against 82 MB (1.5 s) with
//! every hash in a hash map, measured by `a_million_users_peak_memory` (release build, load
//! average 9 to 11). Sorted runs were chosen over a temporary SQLite table by reasoning, not a
//! measurement of SQLite: each lookup there is a B-tree descent through SQLite's page cache and
//! each insert a random B-tree write, for two lookups and up to two inserts per users record,
//! where the run needs a Bloom probe and an insert into a hash map, and writes sequentially (the
//! merge) once per 100,000 values.

use crate::maps::FastMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, Write};

use xxhash_rust::xxh3::xxh3_64_with_seed;

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

/// Index entries kept in memory (per index: keys, emails) before they spill to the index's
/// sorted run on disk: about 2 MB of hash map each.
pub const DEFAULT_SPILL_BOUND: usize = 100_000;

/// The environment variable that sets the spill bound (tests use a small one).
pub const SPILL_BOUND_ENV: &str = "ROSTER_IDENTITY_IN_MEMORY";

/// The spill bound: [`SPILL_BOUND_ENV`] when set to a number (at least 1), else
/// [`DEFAULT_SPILL_BOUND`].
pub fn spill_bound_from_env() -> usize {
    std::env::var(SPILL_BOUND_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(DEFAULT_SPILL_BOUND, |n| n.max(1))
}

/// Bytes of one run entry: the hash and the offset, little-endian.
const ENTRY: usize = 16;

/// Entries per block of a run (4 KiB): one read finds an entry once the fences name its block.
const BLOCK: usize = 256;

/// Bloom filter bits per run entry and probes per lookup: about 1% of the lookups of a value
/// not in the run read a block for nothing.
const BLOOM_BITS_PER_ENTRY: u64 = 10;
const BLOOM_PROBES: u64 = 7;

/// xxh3 of a normalised value → the offset of its first record in the texts file: up to
/// `bound` entries in a hash map, the rest in one sorted run in an unlinked temporary file.
#[derive(Debug)]
struct Index {
    bound: usize,
    hot: FastMap<u64, u64>,
    run: Option<Run>,
}

/// A sorted run on disk, with what stays in memory to find an entry in one read: the first
/// hash of each block (8 bytes per 256 entries) and a Bloom filter (10 bits per entry), so a
/// value not in the run (most of them: a new user) is mostly answered without a read.
#[derive(Debug)]
struct Run {
    file: File,
    len: usize,
    fences: Vec<u64>,
    bloom: Bloom,
}

#[derive(Debug)]
struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    fn for_entries(n: usize) -> Self {
        let bits = (n as u64).saturating_mul(BLOOM_BITS_PER_ENTRY).max(64);
        Bloom {
            words: vec![0; bits.div_ceil(64) as usize],
        }
    }

    /// The bit positions of `hash` (double hashing; the hash is already xxh3).
    fn probes(&self, hash: u64) -> impl Iterator<Item = usize> + use<> {
        let bits = self.words.len() as u64 * 64;
        let step = splitmix(hash) | 1;
        (0..BLOOM_PROBES).map(move |i| (hash.wrapping_add(i.wrapping_mul(step)) % bits) as usize)
    }

    fn insert(&mut self, hash: u64) {
        for bit in self.probes(hash) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_hold(&self, hash: u64) -> bool {
        self.probes(hash)
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn entry(bytes: &[u8]) -> (u64, u64) {
    let mut hash = [0u8; 8];
    let mut offset = [0u8; 8];
    hash.copy_from_slice(&bytes[..8]);
    offset.copy_from_slice(&bytes[8..ENTRY]);
    (u64::from_le_bytes(hash), u64::from_le_bytes(offset))
}

impl Run {
    fn get(&self, hash: u64) -> io::Result<Option<u64>> {
        if !self.bloom.may_hold(hash) {
            return Ok(None);
        }
        let block = match self.fences.partition_point(|&first| first <= hash) {
            0 => return Ok(None),
            after => after - 1,
        };
        let first = block * BLOCK;
        let n = BLOCK.min(self.len - first);
        let mut bytes = vec![0u8; n * ENTRY];
        read_at(&self.file, &mut bytes, (first * ENTRY) as u64)?;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (h, offset) = entry(&bytes[mid * ENTRY..]);
            match h.cmp(&hash) {
                std::cmp::Ordering::Equal => return Ok(Some(offset)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }
}

/// Writes a new run: entries in order, with its fences and Bloom filter.
struct RunWriter {
    out: BufWriter<File>,
    len: usize,
    fences: Vec<u64>,
    bloom: Bloom,
}

impl RunWriter {
    fn new(entries: usize) -> io::Result<Self> {
        Ok(RunWriter {
            out: BufWriter::with_capacity(64 * 1024, tempfile::tempfile()?),
            len: 0,
            fences: Vec::with_capacity(entries.div_ceil(BLOCK)),
            bloom: Bloom::for_entries(entries),
        })
    }

    fn put(&mut self, (hash, offset): (u64, u64)) -> io::Result<()> {
        if self.len % BLOCK == 0 {
            self.fences.push(hash);
        }
        self.bloom.insert(hash);
        self.out.write_all(&hash.to_le_bytes())?;
        self.out.write_all(&offset.to_le_bytes())?;
        self.len += 1;
        Ok(())
    }

    fn finish(self) -> io::Result<Run> {
        Ok(Run {
            file: self
                .out
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?,
            len: self.len,
            fences: self.fences,
            bloom: self.bloom,
        })
    }
}

impl Index {
    fn new(bound: usize) -> Self {
        Index {
            bound: bound.max(1),
            hot: FastMap::default(),
            run: None,
        }
    }

    fn get(&self, hash: u64) -> io::Result<Option<u64>> {
        if let Some(&offset) = self.hot.get(&hash) {
            return Ok(Some(offset));
        }
        match &self.run {
            Some(run) => run.get(hash),
            None => Ok(None),
        }
    }

    fn insert(&mut self, hash: u64, offset: u64) -> io::Result<()> {
        self.hot.insert(hash, offset);
        if self.hot.len() >= self.bound {
            self.spill()?;
        }
        Ok(())
    }

    /// Merges the hash map into the run on disk (a new run: the old one read in order, the
    /// map's entries sorted in), and empties the map (keeping its capacity).
    fn spill(&mut self) -> io::Result<()> {
        let mut fresh: Vec<(u64, u64)> = self.hot.drain().collect();
        fresh.sort_unstable();
        let old = self.run.take();
        let mut writer = RunWriter::new(fresh.len() + old.as_ref().map_or(0, |r| r.len))?;
        let mut fresh = fresh.into_iter().peekable();
        if let Some(old) = &old {
            let mut reader = io::BufReader::with_capacity(64 * 1024, &old.file);
            reader.seek(io::SeekFrom::Start(0))?;
            let mut bytes = [0u8; ENTRY];
            for _ in 0..old.len {
                reader.read_exact(&mut bytes)?;
                let was = entry(&bytes);
                while let Some(new) = fresh.next_if(|new| new.0 < was.0) {
                    writer.put(new)?;
                }
                writer.put(was)?;
            }
        }
        for new in fresh {
            writer.put(new)?;
        }
        self.run = Some(writer.finish()?);
        Ok(())
    }

    fn len(&self) -> usize {
        self.hot.len() + self.run.as_ref().map_or(0, |r| r.len)
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
#[derive(Debug)]
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

impl Default for IdentityGuard {
    fn default() -> Self {
        Self::with_spill_bound(false, spill_bound_from_env())
    }
}

impl IdentityGuard {
    /// An empty guard that warns (nothing is allocated until the first record).
    pub fn new() -> Self {
        Self::default()
    }

    /// A guard that warns (`reject` false) or rejects later duplicates, spilling past
    /// [`spill_bound_from_env`] entries per index.
    pub fn with_policy(reject: bool) -> Self {
        Self::with_spill_bound(reject, spill_bound_from_env())
    }

    /// A guard whose key and email indexes each keep `bound` entries in memory before they
    /// spill to disk.
    pub fn with_spill_bound(reject: bool, bound: usize) -> Self {
        IdentityGuard {
            reject,
            warnings: 0,
            broken: false,
            keys: Index::new(bound),
            emails: Index::new(bound),
            texts: Texts::default(),
            found: 0,
            warned_collision: false,
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
        match self.keys.get(key_hash)? {
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
                self.keys.insert(key_hash, at)?;
            }
        }
        // The email.
        let Some(norm_email) = norm_email else {
            return Ok(None);
        };
        let email_hash = xxh3_64_with_seed(norm_email.as_bytes(), EMAIL_SEED);
        match self.emails.get(email_hash)? {
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
                self.emails.insert(email_hash, at)?;
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
mod tests;
