//! Singer messages: building a target's input ([`schema`], [`rec`], [`state`], [`lines`], or the
//! [`Input`] builder) and reading what a binary printed ([`messages`] of a tap, [`states`] and
//! [`records`] among them, and [`emitted`]/[`last_state`] of a target, which prints STATE
//! values only).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};

/// A SCHEMA message that takes any object.
pub fn schema(stream: &str) -> Value {
    json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": []})
}

/// A RECORD message.
pub fn rec(stream: &str, record: Value) -> Value {
    json!({"type": "RECORD", "stream": stream, "record": record})
}

/// A STATE message.
pub fn state(value: Value) -> Value {
    json!({"type": "STATE", "value": value})
}

/// Messages as Singer input text, one per line.
pub fn lines(items: &[Value]) -> String {
    items.iter().map(|v| format!("{v}\n")).collect()
}

/// Singer input, one message per line, built up in order.
#[derive(Debug, Default, Clone)]
pub struct Input(pub Vec<String>);

impl Input {
    pub fn new() -> Self {
        Self::default()
    }

    /// A SCHEMA for `stream` with the given key properties (an open schema).
    pub fn schema(mut self, stream: &str, keys: &[&str]) -> Self {
        self.0.push(
            json!({"type": "SCHEMA", "stream": stream, "schema": {"type": "object"}, "key_properties": keys})
                .to_string(),
        );
        self
    }

    pub fn record(mut self, stream: &str, record: Value) -> Self {
        self.0.push(rec(stream, record).to_string());
        self
    }

    pub fn state(mut self, value: Value) -> Self {
        self.0.push(state(value).to_string());
        self
    }

    pub fn text(&self) -> String {
        let mut s = self.0.join("\n");
        s.push('\n');
        s
    }
}

/// The messages of a tap's stdout, one JSON value per non-empty line (panics naming the line
/// that is not JSON).
pub fn messages(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}: {l}", i + 1))
        })
        .collect()
}

/// The RECORD values of `stream` among a tap's messages, in order.
pub fn records(messages: &[Value], stream: &str) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "RECORD" && m["stream"] == stream)
        .map(|m| m["record"].clone())
        .collect()
}

/// The STATE values among a tap's messages, in order.
pub fn states(messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m["type"] == "STATE")
        .map(|m| m["value"].clone())
        .collect()
}

/// The STATE values a target printed (its stdout is nothing else), in order.
pub fn emitted(stdout: impl AsRef<[u8]>) -> Vec<Value> {
    messages(&String::from_utf8_lossy(stdout.as_ref()))
}

/// The last line a target printed (its last safe state), as printed.
pub fn last_state(stdout: impl AsRef<[u8]>) -> Option<String> {
    String::from_utf8_lossy(stdout.as_ref())
        .lines()
        .last()
        .map(str::to_string)
}
