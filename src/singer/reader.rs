//! The streaming Singer reader: one line at a time, never the whole input.
//!
//! Lenient where the spec allows it (message types in any case, unknown types warned about once
//! and skipped, blank lines ignored, `\r\n` endings) and strict where data could be lost or
//! misread: malformed JSON, invalid UTF-8, a missing field, an over-long line and duplicate keys
//! inside a record are errors that carry the line number and a short excerpt.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, BufRead};

use serde::de::{self, DeserializeSeed};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use super::strict::StrictValue;

use super::message::{
    ActivateVersionMessage, BatchMessage, Message, Object, RecordMessage, SchemaMessage,
    StateMessage,
};

/// The longest line read by default: Meltano's `elt.buffer_size` (100 MiB) halved, its own
/// per-line limit under `meltano run`.
pub const DEFAULT_MAX_LINE_BYTES: usize = 50 * 1024 * 1024;

/// How many bytes of a bad line an error shows.
const EXCERPT_BYTES: usize = 96;

/// A message read from the input, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadMessage {
    /// 1-based line number in the input.
    pub line: u64,
    /// Length of the line in bytes, without its line ending.
    pub bytes: usize,
    /// The message.
    pub message: Message,
}

/// Why a line could not be read as a Singer message.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The input could not be read.
    #[error("line {line}: cannot read input: {source}")]
    Io {
        /// The line being read.
        line: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line is longer than the limit.
    #[error(
        "line {line}: line is {len} bytes, over the {limit}-byte limit (set by max_line_bytes): {excerpt}"
    )]
    TooLong {
        /// The line.
        line: u64,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
        /// Its first bytes.
        excerpt: String,
    },
    /// A line is not valid UTF-8.
    #[error("line {line}: invalid UTF-8 at byte {offset}: {excerpt}")]
    Utf8 {
        /// The line.
        line: u64,
        /// Byte offset of the first invalid sequence.
        offset: usize,
        /// Its first bytes.
        excerpt: String,
    },
    /// A line is not valid JSON, or not a JSON object.
    #[error("line {line}: invalid JSON at column {column}: {reason}: {excerpt}")]
    Json {
        /// The line.
        line: u64,
        /// 1-based column of the error.
        column: usize,
        /// What the parser said.
        reason: String,
        /// Its first bytes.
        excerpt: String,
    },
    /// A message lacks a field its type requires, or a field has the wrong shape.
    #[error("line {line}: {kind} message {problem}: {excerpt}")]
    Field {
        /// The line.
        line: u64,
        /// The message type (`RECORD`, …) or `Singer` when the type itself is missing.
        kind: String,
        /// What is wrong, naming the field.
        problem: String,
        /// Its first bytes.
        excerpt: String,
    },
    /// A record repeats a key. The record is ambiguous; the rest of the input is fine.
    #[error("line {line}: stream {stream:?}: record has duplicate key at {pointer}")]
    DuplicateKey {
        /// The line.
        line: u64,
        /// The record's stream.
        stream: String,
        /// JSON pointer of the repeated key, e.g. `/attributes/plan`.
        pointer: String,
        /// The record as parsed (the last value of a repeated key wins).
        record: Box<Object>,
    },
}

impl ReadError {
    /// The line number the error is about.
    pub fn line(&self) -> u64 {
        match self {
            ReadError::Io { line, .. }
            | ReadError::TooLong { line, .. }
            | ReadError::Utf8 { line, .. }
            | ReadError::Json { line, .. }
            | ReadError::Field { line, .. }
            | ReadError::DuplicateKey { line, .. } => *line,
        }
    }

    /// True when only this record is bad and the input can be read on.
    pub fn is_record_level(&self) -> bool {
        matches!(self, ReadError::DuplicateKey { .. })
    }
}

/// Reads Singer messages from any buffered input, one line at a time.
#[derive(Debug)]
pub struct MessageReader<R> {
    input: R,
    line: u64,
    buf: Vec<u8>,
    max_line_bytes: usize,
    unknown: UnknownTypes,
}

impl<R: BufRead> MessageReader<R> {
    /// A reader with the default line limit.
    pub fn new(input: R) -> Self {
        Self::with_limit(input, DEFAULT_MAX_LINE_BYTES)
    }

    /// A reader that refuses lines longer than `max_line_bytes`.
    pub fn with_limit(input: R, max_line_bytes: usize) -> Self {
        Self {
            input,
            line: 0,
            buf: Vec::with_capacity(4096),
            max_line_bytes,
            unknown: UnknownTypes::default(),
        }
    }

    /// The number of the last line read.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Reads the next message. `None` at the end of the input.
    pub fn read(&mut self) -> Option<Result<ReadMessage, ReadError>> {
        loop {
            let parsed = match self.next_text()? {
                Ok((line, bytes)) => parse_read(line, bytes),
                Err(err) => Err(err),
            };
            match parsed {
                Ok(ParsedLine::Message(message)) => return Some(Ok(message)),
                Ok(ParsedLine::Unknown { line, kind }) => self.unknown.skip(line, kind),
                Ok(ParsedLine::Record(_)) => {}
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The input being read (to ask, say, how much of it is buffered).
    pub fn input_ref(&self) -> &R {
        &self.input
    }

    /// Reads the next line that is not blank, without its line ending (and without a byte order
    /// mark on line 1), with its number; `None` at the end of the input. For readers that parse
    /// elsewhere ([`parse_read`]).
    pub fn next_text(&mut self) -> Option<Result<(u64, &[u8]), ReadError>> {
        loop {
            self.line += 1;
            let line = self.line;
            match self.next_line() {
                Ok(LineRead::Eof) => {
                    self.line -= 1;
                    return None;
                }
                Ok(LineRead::TooLong { len, head }) => {
                    return Some(Err(ReadError::TooLong {
                        line,
                        len,
                        limit: self.max_line_bytes,
                        excerpt: excerpt(&head),
                    }));
                }
                Ok(LineRead::Line) => {}
                Err(source) => return Some(Err(ReadError::Io { line, source })),
            }
            let end = trim_line(&self.buf).len();
            // A UTF-8 byte order mark, as some Windows tools write before the first line.
            let start = if line == 1 && self.buf[..end].starts_with(UTF8_BOM) {
                UTF8_BOM.len()
            } else {
                0
            };
            if !self.buf[start..end].iter().all(u8::is_ascii_whitespace) {
                return Some(Ok((line, &self.buf[start..end])));
            }
        }
    }

    /// Reads one line into `self.buf`, never holding more than the limit.
    fn next_line(&mut self) -> io::Result<LineRead> {
        self.buf.clear();
        let mut total = 0usize;
        let mut too_long = false;
        let mut consumed_any = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            if available.is_empty() {
                break;
            }
            let (chunk, found_newline) = match memchr::memchr(b'\n', available) {
                Some(at) => (&available[..at], true),
                None => (available, false),
            };
            total += chunk.len();
            if !too_long {
                if total > self.max_line_bytes {
                    too_long = true;
                    // Keep only the head for the excerpt and drop the rest as it streams by.
                    let room = EXCERPT_BYTES.saturating_sub(self.buf.len());
                    self.buf.extend_from_slice(&chunk[..room.min(chunk.len())]);
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let consumed = chunk.len() + usize::from(found_newline);
            self.input.consume(consumed);
            consumed_any = true;
            if found_newline {
                break;
            }
        }
        if too_long {
            self.buf.truncate(EXCERPT_BYTES);
            return Ok(LineRead::TooLong {
                len: total,
                head: std::mem::take(&mut self.buf),
            });
        }
        if !consumed_any {
            return Ok(LineRead::Eof);
        }
        Ok(LineRead::Line)
    }
}

impl<R: BufRead> Iterator for MessageReader<R> {
    type Item = Result<ReadMessage, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.read()
    }
}

/// The UTF-8 byte order mark.
const UTF8_BOM: &[u8] = b"\xef\xbb\xbf";

enum LineRead {
    Eof,
    Line,
    TooLong { len: usize, head: Vec<u8> },
}

enum Parsed {
    Message(Message),
    Record(RawRecord),
    Unknown(String),
}

/// One line, parsed.
#[derive(Debug)]
pub enum ParsedLine {
    /// A message.
    Message(ReadMessage),
    /// A message type roster does not know: skipped ([`UnknownTypes`] warns once per type).
    Unknown {
        /// The line.
        line: u64,
        /// Its `type`.
        kind: String,
    },
    /// A RECORD, its record unparsed (only from [`parse_raw`]).
    Record(RawRecord),
}

/// Parses one line (as [`MessageReader::next_text`] gives it) into a message with its place.
pub fn parse_read(line: u64, bytes: &[u8]) -> Result<ParsedLine, ReadError> {
    match parse_raw(line, bytes)? {
        ParsedLine::Record(raw) => raw.into_message().map(ParsedLine::Message),
        other => Ok(other),
    }
}

/// Like [`parse_read`], but a RECORD's record is left as its raw JSON text
/// ([`ParsedLine::Record`]): the target's parse workers turn it straight into roster's record
/// model, without a `serde_json` map in between.
pub fn parse_raw(line: u64, bytes: &[u8]) -> Result<ParsedLine, ReadError> {
    Ok(match parse_line(line, bytes)? {
        Parsed::Message(message) => ParsedLine::Message(ReadMessage {
            line,
            bytes: bytes.len(),
            message,
        }),
        Parsed::Record(raw) => ParsedLine::Record(raw),
        Parsed::Unknown(kind) => ParsedLine::Unknown { line, kind },
    })
}

/// A RECORD message whose record is still its raw JSON text (a JSON object: checked).
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// 1-based line number in the input.
    pub line: u64,
    /// Length of the line in bytes.
    pub bytes: usize,
    /// The stream's name.
    pub stream: String,
    /// The record, as the line wrote it.
    pub record: Box<RawValue>,
    /// When the tap read it.
    pub time_extracted: Option<String>,
    /// The stream version, with `ACTIVATE_VERSION`.
    pub version: Option<u64>,
}

impl RawRecord {
    /// The record parsed into a map, as [`parse_read`] gives it: a repeated key is a
    /// [`ReadError::DuplicateKey`].
    pub fn into_message(self) -> Result<ReadMessage, ReadError> {
        let parsed: StrictValue =
            serde_json::from_str(self.record.get()).map_err(|err| ReadError::Json {
                line: self.line,
                column: err.column(),
                reason: strip_position(&err.to_string()),
                excerpt: excerpt(self.record.get().as_bytes()),
            })?;
        let Value::Object(object) = parsed.value else {
            return Err(ReadError::Field {
                line: self.line,
                kind: "RECORD".into(),
                problem: "has a \"record\" that is not a JSON object".into(),
                excerpt: excerpt(self.record.get().as_bytes()),
            });
        };
        if let Some(pointer) = parsed.duplicate {
            return Err(ReadError::DuplicateKey {
                line: self.line,
                stream: self.stream,
                pointer,
                record: Box::new(object),
            });
        }
        Ok(ReadMessage {
            line: self.line,
            bytes: self.bytes,
            message: Message::Record(RecordMessage {
                stream: self.stream,
                record: object,
                time_extracted: self.time_extracted,
                version: self.version,
            }),
        })
    }
}

/// A RECORD line parsed in one pass, its record walked by a seed while the envelope is read
/// (not skipped as raw JSON and parsed a second time), for the common form where `type` and
/// `stream` come before `record` (every Singer SDK and singer-python tap writes it so).
/// `seed_for` gives the seed for a stream's records, or `None` when they are not walked.
///
/// `None` whenever the line is anything else or anything is unusual (another order of the
/// fields, an escaped field name, a repeated field, an error anywhere, the seed refusing the
/// record): the caller then reads the line with [`parse_raw`], which gives every error and every
/// outcome exactly as before. The record's text is kept as [`parse_raw`] keeps it (a copy of
/// its slice of the line, found from where the fields around it start and end).
pub fn parse_record_with<P, S, V>(line: u64, bytes: &[u8], seed_for: P) -> Option<(RawRecord, V)>
where
    P: FnOnce(&str) -> Option<S>,
    S: for<'de> DeserializeSeed<'de, Value = V>,
{
    let text = std::str::from_utf8(bytes).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let fused = de
        .deserialize_map(Fused {
            text,
            seed_for,
            _seed: std::marker::PhantomData,
        })
        .ok()?;
    de.end().ok()?;
    let check = FieldCheck {
        line,
        bytes,
        kind: "RECORD",
    };
    let record = serde_json::value::to_raw_value(&Verbatim(fused.record)).ok()?;
    Some((
        RawRecord {
            line,
            bytes: bytes.len(),
            stream: fused.stream,
            record,
            time_extracted: fused.time_extracted.and_then(raw_string),
            version: check.version(fused.version, false).ok()?,
        },
        fused.value,
    ))
}

/// JSON text written as it is: a slice of a line the parser has read as one JSON value.
struct Verbatim<'a>(&'a str);

impl serde::Serialize for Verbatim<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        // How `serde_json`'s own `RawValue` has its serializer write text verbatim.
        let mut s = serializer.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        s.serialize_field(RAW_VALUE_TOKEN, self.0)?;
        s.end()
    }
}

/// `serde_json`'s name for a raw value in its serializer (`serde_json::raw::TOKEN`; a test
/// checks the text comes out verbatim).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The fields [`Envelope`] knows: each may come once.
const ENVELOPE_FIELDS: [&str; 11] = [
    "type",
    "stream",
    "record",
    "schema",
    "key_properties",
    "bookmark_properties",
    "value",
    "time_extracted",
    "version",
    "encoding",
    "manifest",
];

/// The envelope read around a walked record ([`parse_record_with`]).
struct Fused<'t, P, S> {
    text: &'t str,
    seed_for: P,
    _seed: std::marker::PhantomData<S>,
}

/// What [`Fused`] read.
struct FusedRecord<'de, V> {
    stream: String,
    record: &'de str,
    value: V,
    time_extracted: Option<&'de RawValue>,
    version: Option<&'de RawValue>,
}

/// Not the common form: read the line the usual way.
#[derive(Debug)]
struct Unusual;

impl std::fmt::Display for Unusual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not the common form of a RECORD")
    }
}

/// JSON's whitespace.
fn json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The end of the value that precedes `at` (a `,` or `}` after it, with whitespace around).
fn value_end_before(text: &[u8], at: usize, separator: u8) -> Option<usize> {
    let mut i = at;
    while i > 0 && json_space(text[i - 1]) {
        i -= 1;
    }
    if i == 0 || text[i - 1] != separator {
        return None;
    }
    i -= 1;
    while i > 0 && json_space(text[i - 1]) {
        i -= 1;
    }
    Some(i)
}

impl<'de, P, S, V> de::Visitor<'de> for Fused<'de, P, S>
where
    P: FnOnce(&str) -> Option<S>,
    S: DeserializeSeed<'de, Value = V>,
{
    type Value = FusedRecord<'de, V>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Singer message")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let unusual = || de::Error::custom(Unusual);
        let bytes = self.text.as_bytes();
        let base = self.text.as_ptr() as usize;
        let mut seed_for = Some(self.seed_for);
        let mut seen = 0u16;
        let mut is_record = false;
        let mut stream: Option<String> = None;
        // The record: where its text starts and ends (once the next field or the end shows
        // it), and what the seed made of it.
        let mut walked: Option<(usize, Option<usize>, V)> = None;
        let mut time_extracted = None;
        let mut version = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            // A key borrowed from the line: its text starts right after its opening quote.
            let at = (key.as_ptr() as usize).wrapping_sub(base);
            if at == 0 || at > bytes.len() {
                return Err(unusual());
            }
            if let Some((_, end @ None, _)) = walked.as_mut() {
                *end = Some(value_end_before(bytes, at - 1, b',').ok_or_else(unusual)?);
            }
            if let Some(n) = ENVELOPE_FIELDS.iter().position(|f| *f == key) {
                if seen & (1 << n) != 0 {
                    return Err(unusual());
                }
                seen |= 1 << n;
            }
            match key {
                "type" => {
                    let kind: &'de str = map.next_value()?;
                    if !kind.eq_ignore_ascii_case("RECORD") {
                        return Err(unusual());
                    }
                    is_record = true;
                }
                "stream" => {
                    let raw: &'de RawValue = map.next_value()?;
                    stream = Some(
                        raw_string(raw)
                            .filter(|s| !s.is_empty())
                            .ok_or_else(unusual)?,
                    );
                }
                "record" => {
                    let (true, Some(name)) = (is_record, stream.as_deref()) else {
                        return Err(unusual());
                    };
                    let seed = seed_for.take().and_then(|f| f(name)).ok_or_else(unusual)?;
                    // After the key's closing quote: whitespace, `:`, whitespace, the record.
                    let mut start = at + key.len() + 1;
                    while bytes.get(start).copied().is_some_and(json_space) {
                        start += 1;
                    }
                    if bytes.get(start) != Some(&b':') {
                        return Err(unusual());
                    }
                    start += 1;
                    while bytes.get(start).copied().is_some_and(json_space) {
                        start += 1;
                    }
                    if bytes.get(start) != Some(&b'{') {
                        return Err(unusual());
                    }
                    walked = Some((start, None, map.next_value_seed(seed)?));
                }
                "time_extracted" => time_extracted = Some(map.next_value::<&'de RawValue>()?),
                "version" => version = Some(map.next_value::<&'de RawValue>()?),
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        let Some((start, end, value)) = walked else {
            return Err(unusual());
        };
        let end = match end {
            Some(end) => end,
            // The record was the last field: it ends before the envelope's closing brace,
            // the line's last character but whitespace (`end()` checks nothing follows).
            None => {
                let mut close = bytes.len();
                while close > 0 && json_space(bytes[close - 1]) {
                    close -= 1;
                }
                value_end_before(bytes, close, b'}').ok_or_else(unusual)?
            }
        };
        let record = self.text.get(start..end).ok_or_else(unusual)?;
        if !record.ends_with('}') {
            return Err(unusual());
        }
        Ok(FusedRecord {
            stream: stream.ok_or_else(unusual)?,
            record,
            value,
            time_extracted,
            version,
        })
    }
}

/// The unknown message types seen so far: each is warned about once.
#[derive(Debug, Default)]
pub struct UnknownTypes(HashSet<String>);

impl UnknownTypes {
    /// Skips a message of an unknown type, warning the first time the type is seen.
    pub fn skip(&mut self, line: u64, kind: String) {
        if !self.0.contains(&kind) {
            tracing::warn!(
                line,
                message_type = %kind,
                "skipping messages of unknown type (warned once per type)"
            );
            self.0.insert(kind);
        }
    }
}

fn trim_line(buf: &[u8]) -> &[u8] {
    buf.strip_suffix(b"\r").unwrap_or(buf)
}

/// The first bytes of a line, printable.
fn excerpt(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(EXCERPT_BYTES)];
    let mut text: String = String::from_utf8_lossy(head)
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if bytes.len() > EXCERPT_BYTES {
        text.push('…');
    }
    text
}

/// Parses one line. Exposed for fuzzing and for readers that bring their own lines.
pub fn parse_message(line: u64, bytes: &[u8]) -> Result<Option<Message>, ReadError> {
    match parse_line(line, bytes)? {
        Parsed::Message(message) => Ok(Some(message)),
        Parsed::Record(raw) => raw.into_message().map(|read| Some(read.message)),
        Parsed::Unknown(_) => Ok(None),
    }
}

fn parse_line(line: u64, bytes: &[u8]) -> Result<Parsed, ReadError> {
    let text = std::str::from_utf8(bytes).map_err(|err| ReadError::Utf8 {
        line,
        offset: err.valid_up_to(),
        excerpt: excerpt(bytes),
    })?;
    let envelope: Envelope = serde_json::from_str(text).map_err(|err| ReadError::Json {
        line,
        column: err.column(),
        reason: strip_position(&err.to_string()),
        excerpt: excerpt(bytes),
    })?;
    envelope.into_message(line, bytes)
}

/// serde_json appends " at line 1 column N"; the reader reports the input line itself.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

/// Every field any message type may carry, borrowed from the line: a RECORD line builds only
/// its record and stream name. Unknown fields are ignored, a repeated one is a JSON error.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    record: Option<&'a RawValue>,
    #[serde(borrow)]
    schema: Option<&'a RawValue>,
    #[serde(borrow)]
    key_properties: Option<&'a RawValue>,
    #[serde(borrow)]
    bookmark_properties: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    time_extracted: Option<&'a RawValue>,
    #[serde(borrow)]
    version: Option<&'a RawValue>,
    #[serde(borrow)]
    encoding: Option<&'a RawValue>,
    #[serde(borrow)]
    manifest: Option<&'a RawValue>,
}

/// Keeps an explicit `null` apart from a missing field.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// A raw JSON value as a string, when it is one.
fn raw_string(raw: &RawValue) -> Option<String> {
    let text = raw.get();
    if !text.starts_with('"') {
        return None;
    }
    // Most are plain text between quotes (a stream's name, a timestamp): no escape to decode.
    // The text is JSON the envelope's parse checked, so without a backslash it has no control
    // character either.
    match text.get(1..text.len() - 1) {
        Some(inner) if !inner.contains('\\') => Some(inner.to_owned()),
        _ => serde_json::from_str(text).ok(),
    }
}

/// Names the line and message type in a field error.
struct FieldCheck<'a> {
    line: u64,
    bytes: &'a [u8],
    kind: &'static str,
}

impl FieldCheck<'_> {
    fn error(&self, problem: impl Into<String>) -> ReadError {
        ReadError::Field {
            line: self.line,
            kind: self.kind.to_string(),
            problem: problem.into(),
            excerpt: excerpt(self.bytes),
        }
    }

    /// A field of the envelope as a JSON value (the rarer message types only). Its text was
    /// checked as JSON already; a number out of range is still an error, at its column.
    fn decoded(&self, raw: Option<&RawValue>) -> Result<Option<Value>, ReadError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|err| ReadError::Json {
                line: self.line,
                column: (raw.get().as_ptr() as usize).saturating_sub(self.bytes.as_ptr() as usize)
                    + err.column(),
                reason: strip_position(&err.to_string()),
                excerpt: excerpt(self.bytes),
            })
    }

    /// The `stream` field: a non-empty string.
    fn stream(&self, stream: Option<&RawValue>) -> Result<String, ReadError> {
        let Some(raw) = stream else {
            return Err(self.error("has no \"stream\" field"));
        };
        match raw_string(raw) {
            Some(s) if !s.is_empty() => Ok(s),
            Some(_) => Err(self.error("has an empty \"stream\"")),
            None => Err(self.error("has a \"stream\" that is not a string")),
        }
    }

    /// An optional array of strings (`key_properties`, `manifest`, …).
    fn strings(&self, field: &str, value: Option<&RawValue>) -> Result<Vec<String>, ReadError> {
        match self.decoded(value)? {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(self.error(format!("has a non-string item in \"{field}\""))),
                })
                .collect(),
            Some(_) => Err(self.error(format!("has a \"{field}\" that is not an array"))),
        }
    }

    /// `version`: a non-negative integer (a float without a fraction too).
    fn version(&self, value: Option<&RawValue>, required: bool) -> Result<Option<u64>, ReadError> {
        match self.decoded(value)? {
            None | Some(Value::Null) if !required => Ok(None),
            None | Some(Value::Null) => Err(self.error("has no \"version\" field")),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                        .map(|f| f as u64)
                })
                .map(Some)
                .ok_or_else(|| self.error("has a \"version\" that is not a non-negative integer")),
        }
    }
}

/// The message types, by their upper-case names.
const KINDS: [&str; 5] = ["RECORD", "SCHEMA", "STATE", "ACTIVATE_VERSION", "BATCH"];

impl Envelope<'_> {
    fn into_message(self, line: u64, bytes: &[u8]) -> Result<Parsed, ReadError> {
        let Some(kind) = self.kind.as_deref() else {
            let check = FieldCheck {
                line,
                bytes,
                kind: "Singer",
            };
            return Err(check.error("has no \"type\" field"));
        };
        // Message types in any case, without an upper-cased copy per line.
        let Some(known) = KINDS.into_iter().find(|k| k.eq_ignore_ascii_case(kind)) else {
            return Ok(Parsed::Unknown(kind.to_string()));
        };
        let check = FieldCheck {
            line,
            bytes,
            kind: known,
        };
        let message = match known {
            "RECORD" => return self.record(&check).map(Parsed::Record),
            "SCHEMA" => self.schema(&check)?,
            "STATE" => match self.value {
                Some(raw) => Message::State(StateMessage {
                    value: check.decoded(Some(raw))?.unwrap_or(Value::Null),
                }),
                None => return Err(check.error("has no \"value\" field")),
            },
            "ACTIVATE_VERSION" => Message::ActivateVersion(ActivateVersionMessage {
                stream: check.stream(self.stream)?,
                version: check.version(self.version, true)?.unwrap_or_default(),
            }),
            _ => self.batch(&check)?,
        };
        Ok(Parsed::Message(message))
    }

    fn record(self, check: &FieldCheck<'_>) -> Result<RawRecord, ReadError> {
        let stream = check.stream(self.stream)?;
        let Some(record) = self.record else {
            return Err(check.error("has no \"record\" field"));
        };
        if !record.get().starts_with('{') {
            return Err(check.error("has a \"record\" that is not a JSON object"));
        }
        Ok(RawRecord {
            line: check.line,
            bytes: check.bytes.len(),
            stream,
            record: record.to_owned(),
            time_extracted: self.time_extracted.and_then(raw_string),
            version: check.version(self.version, false)?,
        })
    }

    fn schema(self, check: &FieldCheck<'_>) -> Result<Message, ReadError> {
        let stream = check.stream(self.stream)?;
        let schema = match check.decoded(self.schema)? {
            Some(schema @ Value::Object(_)) => schema,
            Some(_) => return Err(check.error("has a \"schema\" that is not a JSON object")),
            None => return Err(check.error("has no \"schema\" field")),
        };
        Ok(Message::Schema(SchemaMessage {
            stream,
            schema,
            key_properties: check.strings("key_properties", self.key_properties)?,
            bookmark_properties: check.strings("bookmark_properties", self.bookmark_properties)?,
        }))
    }

    fn batch(self, check: &FieldCheck<'_>) -> Result<Message, ReadError> {
        let stream = check.stream(self.stream)?;
        let Some(encoding) = check.decoded(self.encoding)? else {
            return Err(check.error("has no \"encoding\" field"));
        };
        if self.manifest.is_none() {
            return Err(check.error("has no \"manifest\" field"));
        }
        Ok(Message::Batch(BatchMessage {
            stream,
            encoding,
            manifest: check.strings("manifest", self.manifest)?,
        }))
    }
}

#[cfg(test)]
mod tests;
