//! The reject file (`reject_file`, NDJSON): the rejected records, each with `reject.line` and
//! `reject.reason`, and lookups among them.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use serde_json::Value;

/// The name the helpers give the reject file in a run's directory.
pub const FILE: &str = "rejects.ndjson";

/// The record entries (RECORD lines) of `dir/rejects.ndjson`; none when there is no file.
pub fn rejects(dir: &Path) -> Vec<Value> {
    read(&dir.join(FILE))
}

/// The record entries (RECORD lines) of the reject file at `path`; none when there is no file.
pub fn read(path: &Path) -> Vec<Value> {
    parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The record entries (RECORD lines) of a reject file's text.
pub fn parse(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "RECORD")
        .collect()
}

/// The reject entry for input line `line`, if any.
pub fn reject_at(rejects: &[Value], line: u64) -> Option<&Value> {
    rejects.iter().find(|r| r["reject"]["line"] == line)
}

/// The reject whose record has `value` at `field`, if any.
pub fn reject_for<'a>(rejects: &'a [Value], field: &str, value: &str) -> Option<&'a Value> {
    rejects
        .iter()
        .find(|r| r["record"][field].as_str() == Some(value))
}

/// The reason of a reject entry.
pub fn reason(reject: &Value) -> &str {
    reject["reject"]["reason"].as_str().unwrap()
}
