//! The streaming Singer reader: one line at a time, never the whole input.
//!
//! Lenient where the spec allows it (message types in any case, unknown types warned about once
//! and skipped, blank lines ignored, `\r\n` endings) and strict where data could be lost or
//! misread: malformed JSON, invalid UTF-8, a missing field, an over-long line and duplicate keys
//! inside a record are errors that carry the line number and a short excerpt.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

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
    warned_types: HashSet<String>,
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
            warned_types: HashSet::new(),
        }
    }

    /// The number of the last line read.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Reads the next message. `None` at the end of the input.
    pub fn read(&mut self) -> Option<Result<ReadMessage, ReadError>> {
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
            let mut bytes = trim_line(&self.buf);
            if line == 1 {
                // A UTF-8 byte order mark, as some Windows tools write before the first line.
                bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let len = bytes.len();
            match parse_line(line, bytes) {
                Ok(Parsed::Message(message)) => {
                    return Some(Ok(ReadMessage {
                        line,
                        bytes: len,
                        message,
                    }));
                }
                Ok(Parsed::Unknown(kind)) => {
                    if self.warned_types.insert(kind.clone()) {
                        tracing::warn!(
                            line,
                            message_type = %kind,
                            "skipping messages of unknown type (warned once per type)"
                        );
                    }
                }
                Err(err) => return Some(Err(err)),
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
    Unknown(String),
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

/// Every field any message type may carry. Unknown fields are ignored; a repeated envelope
/// field is a JSON error.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: Option<String>,
    stream: Option<Value>,
    record: Option<StrictValue>,
    schema: Option<Value>,
    key_properties: Option<Value>,
    bookmark_properties: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    time_extracted: Option<Value>,
    version: Option<Value>,
    encoding: Option<Value>,
    manifest: Option<Value>,
}

/// Keeps an explicit `null` apart from a missing field.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Envelope {
    fn into_message(self, line: u64, bytes: &[u8]) -> Result<Parsed, ReadError> {
        let field_error = |kind: &str, problem: String| ReadError::Field {
            line,
            kind: kind.to_string(),
            problem,
            excerpt: excerpt(bytes),
        };
        let Some(kind) = self.kind else {
            return Err(field_error("Singer", "has no \"type\" field".into()));
        };
        let upper = kind.to_ascii_uppercase();
        let kind_name = upper.as_str();
        let stream = |stream: Option<Value>| -> Result<String, ReadError> {
            match stream {
                Some(Value::String(s)) if !s.is_empty() => Ok(s),
                Some(Value::String(_)) => {
                    Err(field_error(kind_name, "has an empty \"stream\"".into()))
                }
                Some(_) => Err(field_error(
                    kind_name,
                    "has a \"stream\" that is not a string".into(),
                )),
                None => Err(field_error(kind_name, "has no \"stream\" field".into())),
            }
        };
        let strings = |field: &str, value: Option<Value>| -> Result<Vec<String>, ReadError> {
            match value {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .into_iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s),
                        _ => Err(field_error(
                            kind_name,
                            format!("has a non-string item in \"{field}\""),
                        )),
                    })
                    .collect(),
                Some(_) => Err(field_error(
                    kind_name,
                    format!("has a \"{field}\" that is not an array"),
                )),
            }
        };
        let version = |value: Option<Value>, required: bool| -> Result<Option<u64>, ReadError> {
            match value {
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => {
                    Err(field_error(kind_name, "has no \"version\" field".into()))
                }
                Some(v) => v
                    .as_u64()
                    .or_else(|| {
                        v.as_f64()
                            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                            .map(|f| f as u64)
                    })
                    .map(Some)
                    .ok_or_else(|| {
                        field_error(
                            kind_name,
                            "has a \"version\" that is not a non-negative integer".into(),
                        )
                    }),
            }
        };
        let message = match kind_name {
            "RECORD" => {
                let stream = stream(self.stream)?;
                let Some(record) = self.record else {
                    return Err(field_error("RECORD", "has no \"record\" field".into()));
                };
                let Value::Object(object) = record.value else {
                    return Err(field_error(
                        "RECORD",
                        "has a \"record\" that is not a JSON object".into(),
                    ));
                };
                if let Some(pointer) = record.duplicate {
                    return Err(ReadError::DuplicateKey {
                        line,
                        stream,
                        pointer,
                        record: Box::new(object),
                    });
                }
                Message::Record(RecordMessage {
                    stream,
                    record: object,
                    time_extracted: match self.time_extracted {
                        Some(Value::String(s)) => Some(s),
                        _ => None,
                    },
                    version: version(self.version, false)?,
                })
            }
            "SCHEMA" => {
                let stream = stream(self.stream)?;
                let schema = match self.schema {
                    Some(schema @ Value::Object(_)) => schema,
                    Some(_) => {
                        return Err(field_error(
                            "SCHEMA",
                            "has a \"schema\" that is not a JSON object".into(),
                        ));
                    }
                    None => return Err(field_error("SCHEMA", "has no \"schema\" field".into())),
                };
                Message::Schema(SchemaMessage {
                    stream,
                    schema,
                    key_properties: strings("key_properties", self.key_properties)?,
                    bookmark_properties: strings("bookmark_properties", self.bookmark_properties)?,
                })
            }
            "STATE" => match self.value {
                Some(value) => Message::State(StateMessage { value }),
                None => return Err(field_error("STATE", "has no \"value\" field".into())),
            },
            "ACTIVATE_VERSION" => Message::ActivateVersion(ActivateVersionMessage {
                stream: stream(self.stream)?,
                version: version(self.version, true)?.unwrap_or_default(),
            }),
            "BATCH" => {
                let stream = stream(self.stream)?;
                let Some(encoding) = self.encoding else {
                    return Err(field_error("BATCH", "has no \"encoding\" field".into()));
                };
                if self.manifest.is_none() {
                    return Err(field_error("BATCH", "has no \"manifest\" field".into()));
                }
                Message::Batch(BatchMessage {
                    stream,
                    encoding,
                    manifest: strings("manifest", self.manifest)?,
                })
            }
            _ => return Ok(Parsed::Unknown(kind)),
        };
        Ok(Parsed::Message(message))
    }
}

/// A JSON value that remembers the first repeated object key inside it, as a JSON pointer.
struct StrictValue {
    value: Value,
    duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl StrictVisitor {
    fn plain(value: Value) -> StrictValue {
        StrictValue {
            value,
            duplicate: None,
        }
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        Ok(Self::plain(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::String(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::Null))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<StrictValue, D::Error> {
        StrictValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut duplicate = None;
        while let Some(item) = seq.next_element::<StrictValue>()? {
            if duplicate.is_none() {
                if let Some(inner) = item.duplicate {
                    duplicate = Some(format!("/{}{inner}", items.len()));
                }
            }
            items.push(item.value);
        }
        Ok(StrictValue {
            value: Value::Array(items),
            duplicate,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = Map::new();
        let mut duplicate = None;
        while let Some(key) = map.next_key::<String>()? {
            let item: StrictValue = map.next_value()?;
            if duplicate.is_none()
                && let Some(inner) = &item.duplicate
            {
                duplicate = Some(format!("/{}{inner}", pointer_token(&key)));
            }
            // One hash per key (the entry), not two (a lookup, then an insert).
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(item.value);
                }
                Entry::Occupied(mut slot) => {
                    if duplicate.is_none() {
                        duplicate = Some(format!("/{}", pointer_token(slot.key())));
                    }
                    slot.insert(item.value);
                }
            }
        }
        Ok(StrictValue {
            value: Value::Object(object),
            duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_all(input: &str) -> Vec<Result<ReadMessage, ReadError>> {
        MessageReader::new(input.as_bytes()).collect()
    }

    #[test]
    fn reads_every_message_type_case_insensitively() {
        let input = concat!(
            r#"{"type":"schema","stream":"users","schema":{"type":"object"},"key_properties":["id"]}"#,
            "\n",
            r#"{"type":"Record","stream":"users","record":{"id":"u1"},"time_extracted":"2026-01-01T00:00:00Z","version":3}"#,
            "\n",
            r#"{"type":"STATE","value":{"bookmarks":{}}}"#,
            "\r\n",
            "\n",
            r#"{"type":"activate_version","stream":"users","version":3}"#,
            "\n",
            r#"{"type":"BATCH","stream":"users","encoding":{"format":"jsonl"},"manifest":["file:///tmp/a"]}"#,
        );
        let messages: Vec<_> = read_all(input).into_iter().map(|m| m.unwrap()).collect();
        assert_eq!(messages.len(), 5);
        assert_eq!(messages[0].message.type_name(), "SCHEMA");
        let Message::Record(record) = &messages[1].message else {
            panic!()
        };
        assert_eq!(record.record["id"], "u1");
        assert_eq!(record.version, Some(3));
        assert_eq!(messages[2].line, 3);
        assert_eq!(messages[3].line, 5, "blank lines still count");
        assert_eq!(messages[4].message.type_name(), "BATCH");
    }

    #[test]
    fn a_byte_order_mark_is_read_past_on_line_one_only() {
        let input =
            "\u{feff}{\"type\":\"STATE\",\"value\":1}\n\u{feff}{\"type\":\"STATE\",\"value\":2}\n";
        let messages = read_all(input);
        assert_eq!(messages[0].as_ref().unwrap().line, 1);
        let err = messages[1].as_ref().unwrap_err().to_string();
        assert!(err.starts_with("line 2"), "{err}");
    }

    #[test]
    fn skips_unknown_types() {
        let input = "{\"type\":\"METRIC\",\"x\":1}\n{\"type\":\"STATE\",\"value\":1}\n";
        let messages: Vec<_> = read_all(input).into_iter().map(|m| m.unwrap()).collect();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].line, 2);
    }

    #[test]
    fn state_keeps_an_explicit_null_value() {
        let messages = read_all(r#"{"type":"STATE","value":null}"#);
        let Message::State(state) = &messages[0].as_ref().unwrap().message else {
            panic!()
        };
        assert_eq!(state.value, Value::Null);
    }

    #[test]
    fn malformed_json_names_the_line_and_shows_an_excerpt() {
        let input =
            "{\"type\":\"STATE\",\"value\":{}}\n{\"type\":\"RECORD\",\"stream\":\"users\",\"rec";
        let results = read_all(input);
        let err = results[1].as_ref().unwrap_err();
        assert_eq!(err.line(), 2);
        let text = err.to_string();
        assert!(text.starts_with("line 2: invalid JSON at column"), "{text}");
        assert!(text.contains("{\"type\":\"RECORD\""), "{text}");
        assert!(!text.contains(" at line 1 "), "{text}");
    }

    #[test]
    fn invalid_utf8_is_an_error_with_the_offset() {
        let mut input = b"{\"type\":\"RECORD\",\"stream\":\"u\",\"record\":{\"n\":\"".to_vec();
        input.extend_from_slice(&[0xff, 0xfe]);
        input.extend_from_slice(b"\"}}\n");
        let results: Vec<_> = MessageReader::new(&input[..]).collect();
        match results[0].as_ref().unwrap_err() {
            ReadError::Utf8 { line, offset, .. } => {
                assert_eq!((*line, *offset), (1, 45));
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn missing_fields_are_named() {
        let cases = [
            (r#"{"stream":"u"}"#, "has no \"type\" field"),
            (
                r#"{"type":"RECORD","record":{}}"#,
                "has no \"stream\" field",
            ),
            (
                r#"{"type":"RECORD","stream":"u"}"#,
                "has no \"record\" field",
            ),
            (
                r#"{"type":"RECORD","stream":"u","record":[1]}"#,
                "\"record\" that is not a JSON object",
            ),
            (
                r#"{"type":"SCHEMA","stream":"u"}"#,
                "has no \"schema\" field",
            ),
            (
                r#"{"type":"SCHEMA","stream":"u","schema":{},"key_properties":"id"}"#,
                "\"key_properties\" that is not an array",
            ),
            (r#"{"type":"STATE"}"#, "has no \"value\" field"),
            (
                r#"{"type":"ACTIVATE_VERSION","stream":"u"}"#,
                "has no \"version\" field",
            ),
            (
                r#"{"type":"BATCH","stream":"u","encoding":{}}"#,
                "has no \"manifest\" field",
            ),
        ];
        for (line, expected) in cases {
            let err = parse_message(9, line.as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("line 9: "), "{text}");
            assert!(text.contains(expected), "{line}: {text}");
        }
    }

    #[test]
    fn over_long_lines_are_refused_without_buffering_them() {
        let long = format!(
            "{{\"type\":\"RECORD\",\"stream\":\"u\",\"record\":{{\"x\":\"{}\"}}}}\n{{\"type\":\"STATE\",\"value\":2}}\n",
            "a".repeat(10_000)
        );
        let mut reader =
            MessageReader::with_limit(std::io::BufReader::with_capacity(64, long.as_bytes()), 1000);
        match reader.read().unwrap().unwrap_err() {
            ReadError::TooLong {
                line,
                len,
                limit,
                excerpt,
            } => {
                assert_eq!((line, limit), (1, 1000));
                assert!(len > 10_000);
                assert!(excerpt.len() <= EXCERPT_BYTES + 3);
            }
            other => panic!("{other}"),
        }
        assert!(reader.buf.capacity() < 10_000, "the long line was buffered");
        let next = reader.read().unwrap().unwrap();
        assert_eq!(next.line, 2, "reading goes on after the long line");
    }

    #[test]
    fn duplicate_keys_in_a_record_are_a_record_level_error() {
        let line = r#"{"type":"RECORD","stream":"users","record":{"id":"u1","attributes":{"plan":"a","plan":"b"}}}"#;
        let err = parse_message(4, line.as_bytes()).unwrap_err();
        assert!(err.is_record_level());
        match err {
            ReadError::DuplicateKey {
                line,
                stream,
                pointer,
                record,
            } => {
                assert_eq!(
                    (line, stream.as_str(), pointer.as_str()),
                    (4, "users", "/attributes/plan")
                );
                assert_eq!(record["attributes"]["plan"], "b");
            }
            other => panic!("{other}"),
        }
        let top = r#"{"type":"RECORD","stream":"users","record":{"id":"u1","id":"u2"}}"#;
        assert!(
            matches!(parse_message(1, top.as_bytes()), Err(ReadError::DuplicateKey { pointer, .. }) if pointer == "/id")
        );
        let envelope = r#"{"type":"RECORD","stream":"users","stream":"x","record":{}}"#;
        assert!(matches!(
            parse_message(1, envelope.as_bytes()),
            Err(ReadError::Json { .. })
        ));
    }

    #[test]
    fn records_keep_numbers_and_key_order() {
        let line = r#"{"type":"RECORD","stream":"u","record":{"z":1,"a":-2,"m":0.1,"big":18446744073709551615,"n":null,"arr":[{"k":true}]}}"#;
        let Some(Message::Record(record)) = parse_message(1, line.as_bytes()).unwrap() else {
            panic!()
        };
        let keys: Vec<_> = record.record.keys().cloned().collect();
        assert_eq!(keys, ["z", "a", "m", "big", "n", "arr"]);
        assert_eq!(
            Value::Object(record.record),
            json!({"z":1,"a":-2,"m":0.1,"big":18446744073709551615u64,"n":null,"arr":[{"k":true}]})
        );
    }
}
