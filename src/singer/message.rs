//! Singer messages: what goes over the pipe between a tap and a target.
//!
//! Writing is strict: serde produces the `type` tags (`SCHEMA`, `RECORD`, `STATE`,
//! `ACTIVATE_VERSION`, `BATCH`). Reading is lenient (see [`super::reader`]): the type is matched
//! case-insensitively, as the Singer spec says, and unknown types are skipped with a warning.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON object: a record, a schema, a config (the record model's [`crate::model::Object`]).
pub use crate::model::Object;

/// One Singer message.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Message {
    /// Declares a stream: its JSON Schema and key.
    Schema(SchemaMessage),
    /// One row of a stream.
    Record(RecordMessage),
    /// A checkpoint the tap can resume from.
    State(StateMessage),
    /// The start of a new version of a stream (full-table replication).
    ActivateVersion(ActivateVersionMessage),
    /// A batch of records in files (Meltano SDK extension).
    Batch(BatchMessage),
}

impl Message {
    /// The message type as written on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            Message::Schema(_) => "SCHEMA",
            Message::Record(_) => "RECORD",
            Message::State(_) => "STATE",
            Message::ActivateVersion(_) => "ACTIVATE_VERSION",
            Message::Batch(_) => "BATCH",
        }
    }

    /// The stream this message belongs to, if any.
    pub fn stream(&self) -> Option<&str> {
        match self {
            Message::Schema(m) => Some(&m.stream),
            Message::Record(m) => Some(&m.stream),
            Message::ActivateVersion(m) => Some(&m.stream),
            Message::Batch(m) => Some(&m.stream),
            Message::State(_) => None,
        }
    }
}

/// `SCHEMA`: the JSON Schema of a stream and its key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaMessage {
    /// The stream's name.
    pub stream: String,
    /// A JSON Schema whose top level is an object.
    pub schema: Value,
    /// The fields that identify a record. May be empty.
    #[serde(default)]
    pub key_properties: Vec<String>,
    /// Fields used for incremental bookmarks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bookmark_properties: Vec<String>,
}

/// `RECORD`: one row of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordMessage {
    /// The stream's name.
    pub stream: String,
    /// The row itself.
    pub record: Object,
    /// When the tap read it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_extracted: Option<String>,
    /// The stream version, with `ACTIVATE_VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// `STATE`: an opaque checkpoint; the target echoes `value` once it is safe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateMessage {
    /// The state value (`{"bookmarks": …}` by convention).
    pub value: Value,
}

/// `ACTIVATE_VERSION`: records of older versions of the stream are obsolete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivateVersionMessage {
    /// The stream's name.
    pub stream: String,
    /// The version now active.
    pub version: u64,
}

/// `BATCH`: records of a stream stored in files (Meltano SDK extension, "preview").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchMessage {
    /// The stream's name.
    pub stream: String,
    /// How the files are encoded: `{"format": "jsonl", "compression": "gzip"|"none"}`.
    pub encoding: Value,
    /// File URLs, one JSON object per line in each.
    pub manifest: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_with_screaming_snake_case_tags() {
        let msg = Message::ActivateVersion(ActivateVersionMessage {
            stream: "users".into(),
            version: 7,
        });
        assert_eq!(
            serde_json::to_value(&msg).unwrap(),
            json!({"type": "ACTIVATE_VERSION", "stream": "users", "version": 7})
        );
        assert_eq!(msg.type_name(), "ACTIVATE_VERSION");
    }

    #[test]
    fn omits_absent_optional_fields() {
        let msg = Message::Record(RecordMessage {
            stream: "users".into(),
            record: Object::new(),
            time_extracted: None,
            version: None,
        });
        assert_eq!(
            serde_json::to_string(&msg).unwrap(),
            r#"{"type":"RECORD","stream":"users","record":{}}"#
        );
    }
}
