//! The users chain's scan of a page: its ids and next cursor, nothing else built.

use super::*;

/// A `GET /users` page scanned for what its cursor chain needs: each user's id (`None` for a
/// user without a usable one, as `wire::id_of` reads it), `has_more` and `next_page_url`.
/// Nothing else is built, so the next page can be asked for before this one is decoded.
#[derive(Debug, Default, PartialEq, serde::Deserialize)]
pub(super) struct UsersScan {
    /// Per user, its id.
    #[serde(default, rename = "data", deserialize_with = "scan_ids")]
    pub(super) ids: Vec<Option<String>>,
    #[serde(default)]
    pub(super) has_more: Option<Value>,
    #[serde(default)]
    pub(super) next_page_url: Option<Value>,
}

impl UsersScan {
    /// True when another page follows, as `wire::UsersPage::has_more` says.
    pub(super) fn has_more(&self) -> bool {
        wire::UsersPage {
            data: None,
            has_more: self.has_more.clone(),
            next_page_url: self.next_page_url.clone(),
        }
        .has_more()
    }

    /// The next page's cursor: `None` on the last page, else the last user's id or, when it
    /// has none, `next_page_url`'s `starting_after`; `Err` when the page says has_more but
    /// gives neither.
    pub(super) fn next_cursor(&self) -> Result<Option<String>, NoCursor> {
        if !self.has_more() {
            return Ok(None);
        }
        let last = self.ids.last().cloned().flatten();
        let from_url = || {
            self.next_page_url
                .as_ref()
                .and_then(Value::as_str)
                .and_then(cursor::starting_after)
        };
        last.or_else(from_url).map(Some).ok_or(NoCursor)
    }
}

/// A page that says has_more but gives no cursor.
#[derive(Debug, PartialEq)]
pub(super) struct NoCursor;

/// The next cursor as the ends of a page give it, without walking the page's users: what the
/// users chain asks for next while the page is scanned in full. `Some` only for a body without
/// a backslash whose top-level members are scalars or strings but `data`, an array, and one
/// other array at most after it, each key once, and whose last array is empty or ends with an
/// object: that array is taken for `data` (true of every Userflow page), so the cursor is its
/// last object's id or `next_page_url`'s.
/// The chain checks the guess against [`quick_scan`] (or serde) and asks again when they
/// differ, so a page of another shape costs a request, not a wrong record.
pub(super) fn tail_cursor(body: &[u8]) -> Option<Option<String>> {
    if memchr::memchr(b'\\', body).is_some() {
        return None;
    }
    let mut scan = UsersScan::default();
    let mut seen: Vec<&[u8]> = Vec::with_capacity(4);
    // The members before `data` (`"object":"list"`), from the start.
    let mut walk = Walk { bytes: body, at: 0 };
    walk.open(b'{')?;
    loop {
        let key = walk.key()?;
        if key == b"data" {
            break;
        }
        let value = walk.value()?;
        note(&mut scan, &mut seen, key, value)?;
        if walk.next(b'}')? {
            return None;
        }
    }
    // Just inside `data`'s `[`.
    (walk.peek()? == b'[').then_some(())?;
    let data = walk.at + 1;
    // The members after it, from the end.
    let mut back = Back {
        bytes: body,
        at: body.len(),
    };
    back.take(b'}')?;
    while back.peek()? != b']' {
        let value = match back.peek()? {
            b'"' => Value::String(std::str::from_utf8(back.string()?).ok()?.to_owned()),
            b'}' => return None,
            _ => serde_json::from_slice(back.scalar()?).ok()?,
        };
        back.take(b':')?;
        let key = back.string()?;
        note(&mut scan, &mut seen, key, value)?;
        back.take(b',')?;
    }
    back.take(b']')?;
    match back.peek()? {
        // No users: `data`'s own brackets.
        b'[' => (back.at == data).then_some(())?,
        b'}' => {
            let end = back.at;
            back.object()?;
            (back.at >= data).then_some(())?;
            let mut walk = Walk {
                bytes: body,
                at: back.at,
            };
            let id = walk.id()?;
            (walk.at == end).then_some(())?;
            scan.ids.push(id);
        }
        _ => return None,
    }
    scan.next_cursor().ok()
}

/// Notes a top-level member of a page for [`tail_cursor`]; `None` for a repeated key or `data`.
fn note<'a>(
    scan: &mut UsersScan,
    seen: &mut Vec<&'a [u8]>,
    key: &'a [u8],
    value: Value,
) -> Option<()> {
    if seen.contains(&key) {
        return None;
    }
    seen.push(key);
    match key {
        // `null` is `None`, as serde reads an `Option`.
        b"has_more" => scan.has_more = Some(value).filter(|v| !v.is_null()),
        b"next_page_url" => scan.next_page_url = Some(value).filter(|v| !v.is_null()),
        b"data" => return None,
        _ => {}
    }
    Some(())
}

/// A position in a body without escapes, read backwards (`at` is one past the next byte).
struct Back<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Back<'a> {
    fn byte(&self) -> Option<u8> {
        self.bytes.get(self.at.checked_sub(1)?).copied()
    }

    fn space(&mut self) {
        while self
            .byte()
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at -= 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.byte()
    }

    /// Takes `byte`, which must come next.
    fn take(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at -= 1)
    }

    /// A string's bytes, between its quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.take(b'"')?;
        let end = self.at;
        let start = memchr::memrchr(b'"', self.bytes.get(..end)?)?;
        self.at = start;
        self.bytes.get(start + 1..end)
    }

    /// A scalar's bytes (a number, `true`, `false` or `null`).
    fn scalar(&mut self) -> Option<&'a [u8]> {
        self.space();
        let end = self.at;
        while self.byte().is_some_and(|b| {
            !matches!(
                b,
                b':' | b',' | b'[' | b'{' | b'"' | b' ' | b'\t' | b'\n' | b'\r'
            )
        }) {
            self.at -= 1;
        }
        (self.at < end).then(|| self.bytes.get(self.at..end))?
    }

    /// Skips back over an object to its opening brace (strings jumped over with memrchr).
    fn object(&mut self) -> Option<()> {
        self.take(b'}')?;
        let mut depth = 1usize;
        while depth > 0 {
            self.at = self.at.checked_sub(1)?;
            match self.bytes.get(self.at)? {
                b'"' => self.at = memchr::memrchr(b'"', self.bytes.get(..self.at)?)?,
                b'}' | b']' => depth += 1,
                b'{' | b'[' => depth -= 1,
                _ => {}
            }
        }
        Some(())
    }
}

/// [`UsersScan`] without a parser, for the cursor chain: a byte walk that finds the page's
/// top-level keys and each user's own `id`, skipping everything else. Only for a body without
/// a backslash (so no string holds an escape, and a string ends at the next quote); `None`
/// for such a body, a numeric id, a repeated top-level key or anything else unexpected, which
/// the serde scan then reads. It does not check what it skips: the page's decoding parses the
/// whole answer and reports a malformed one.
pub(super) fn quick_scan(body: &[u8]) -> Option<UsersScan> {
    if memchr::memchr(b'\\', body).is_some() {
        return None;
    }
    let mut walk = Walk { bytes: body, at: 0 };
    let mut scan = UsersScan::default();
    let mut seen = [false; 3];
    walk.open(b'{')?;
    if !walk.close(b'}')? {
        loop {
            let key = walk.key()?;
            let slot = match key {
                b"data" => 0,
                b"has_more" => 1,
                b"next_page_url" => 2,
                _ => {
                    walk.skip()?;
                    if walk.next(b'}')? {
                        break;
                    }
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return None;
            }
            match slot {
                0 => scan.ids = walk.ids()?,
                // `null` is `None`, as serde reads an `Option`.
                1 => scan.has_more = Some(walk.value()?).filter(|v| !v.is_null()),
                _ => scan.next_page_url = Some(walk.value()?).filter(|v| !v.is_null()),
            }
            if walk.next(b'}')? {
                break;
            }
        }
    }
    walk.space();
    (walk.at == body.len()).then_some(scan)
}

/// A position in a body without escapes.
pub(super) struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Walk<'a> {
    fn space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.space();
        self.bytes.get(self.at).copied()
    }

    /// Takes `byte`, which must come next.
    fn open(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Takes `byte` when it comes next (an empty object or array).
    fn close(&mut self, byte: u8) -> Option<bool> {
        let closes = self.peek()? == byte;
        if closes {
            self.at += 1;
        }
        Some(closes)
    }

    /// After a member: `,` (false) or the closing `byte` (true).
    fn next(&mut self, byte: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.at += 1;
                Some(false)
            }
            b if b == byte => {
                self.at += 1;
                Some(true)
            }
            _ => None,
        }
    }

    /// A string's bytes, between its quotes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.open(b'"')?;
        let start = self.at;
        let len = memchr::memchr(b'"', self.bytes.get(start..)?)?;
        self.at = start + len + 1;
        self.bytes.get(start..start + len)
    }

    /// An object key and its colon.
    fn key(&mut self) -> Option<&'a [u8]> {
        let key = self.string()?;
        self.open(b':')?;
        Some(key)
    }

    /// Skips one value (not checking it).
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                // Strings (most of a page) are jumped over with memchr.
                let rest = self.bytes.get(self.at..)?;
                let mut depth = 0usize;
                let mut i = 0;
                while let Some(&b) = rest.get(i) {
                    match b {
                        b'"' => i += 1 + memchr::memchr(b'"', rest.get(i + 1..)?)?,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.at += i + 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                None
            }
            _ => {
                while self.bytes.get(self.at).is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    self.at += 1;
                }
                Some(())
            }
        }
    }

    /// One value, parsed.
    fn value(&mut self) -> Option<Value> {
        self.space();
        let start = self.at;
        self.skip()?;
        serde_json::from_slice(self.bytes.get(start..self.at)?).ok()
    }

    /// `data`: per user, its id (as `wire::id_of` reads it).
    fn ids(&mut self) -> Option<Vec<Option<String>>> {
        let mut ids = Vec::with_capacity(100);
        match self.peek()? {
            b'n' => {
                self.value()?.is_null().then_some(())?;
                return Some(ids);
            }
            b'[' => self.at += 1,
            _ => return None,
        }
        if self.close(b']')? {
            return Some(ids);
        }
        loop {
            ids.push(self.id()?);
            if self.next(b']')? {
                return Some(ids);
            }
        }
    }

    /// One user's id: its last `id` member, a non-blank string; `None` for anything else.
    fn id(&mut self) -> Option<Option<String>> {
        if self.peek()? != b'{' {
            self.skip()?;
            return Some(None);
        }
        self.at += 1;
        let mut id = None;
        if self.close(b'}')? {
            return Some(None);
        }
        loop {
            if self.key()? == b"id" {
                id = match self.peek()? {
                    b'"' => {
                        let text = std::str::from_utf8(self.string()?).ok()?;
                        (!text.trim().is_empty()).then(|| text.to_string())
                    }
                    // A numeric id: the serde scan writes it as serde_json does.
                    b'-' | b'0'..=b'9' => return None,
                    _ => {
                        self.skip()?;
                        None
                    }
                };
            } else {
                self.skip()?;
            }
            if self.next(b'}')? {
                return Some(id);
            }
        }
    }
}

/// `data`'s ids: `null` is no user, anything but an object a user without an id.
pub(super) fn scan_ids<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Option<String>>, D::Error> {
    Ok(Option::<Vec<ScanId>>::deserialize(deserializer)?
        .unwrap_or_default()
        .into_iter()
        .map(|id| id.0)
        .collect())
}

/// One user's id, everything else of it skipped.
pub(super) struct ScanId(Option<String>);

impl<'de> Deserialize<'de> for ScanId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ScanId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a Userflow user")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<ScanId, E> {
                Ok(ScanId(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ScanId, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ScanId(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ScanId, A::Error> {
                // The last `id` wins, as in the decoded object.
                let mut id = None;
                while let Some(key) = map.next_key::<IsId>()? {
                    if key.0 {
                        id = Some(map.next_value::<Value>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ScanId(id.as_ref().and_then(key_text)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Whether a key is `id`, without building it.
pub(super) struct IsId(bool);

impl<'de> Deserialize<'de> for IsId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IsId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IsId, E> {
                Ok(IsId(v == "id"))
            }
        }
        deserializer.deserialize_str(V)
    }
}

// ---- The users page's fast path ----
//
// A page in the shape Userflow (and the sandbox) sends is decoded borrowing from the answer's
// bytes and each record is written as JSON text into the page's `rendered` buffer, with no
// `Value` tree and no map per record. Anything outside that shape (an escaped string, a nested
// or repeated attribute, an unknown key, a date-time that is not RFC 3339, a numeric id)
// makes the whole page go through `wire::user` instead; both give the same records.
