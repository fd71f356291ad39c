//! The reject file: every record the target could not write, with why, as NDJSON that replays.
//!
//! The file is itself a Singer stream: before the first reject of a stream (and again when the
//! stream's SCHEMA changes) it repeats the stream's SCHEMA message, and each reject is a RECORD
//! message with the original record plus a `reject` object (input line, reason, the vendor's
//! status and an excerpt of its answer, the time). Fix the records (or the config) and replay
//! with `target-roster --config … --input rejects.ndjson`; the `reject` field is ignored on
//! input.
//!
//! The file is never truncated. It is created (`0600`) at the first reject of a run, so a
//! clean run leaves none behind, and a run appends to a file that holds earlier runs' rejects
//! (after a newline, when the last line was cut off). Replaying it (`--input` naming the
//! reject file, or stdin being it) first moves it aside to `NAME.replayed-<UTC time>` and
//! reads from there ([`RejectFile::set_aside`]): the records rejected again go to a fresh
//! `NAME`, and the moved-aside copy is deleted only when the replay read the whole file and
//! every record in it was sent or rejected again. Without a configured file, rejects go to
//! [`DEFAULT_REJECT_FILE`] in the working directory. The file is flushed before every STATE is
//! printed, so a state never covers a reject that is not on disk.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::singer::{Object, SchemaMessage};
use crate::sink::Refusal;

/// Where rejects go when `reject_file` is not set.
pub const DEFAULT_REJECT_FILE: &str = "target-roster-rejects.ndjson";

/// Why the reject file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the reject file {path}: {source}")]
pub struct RejectFileError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// One reject, as the engine hands it over.
#[derive(Debug)]
pub struct Reject<'a> {
    /// The stream.
    pub stream: &'a str,
    /// Its SCHEMA, if one was received, with a generation number that changes with each SCHEMA.
    pub schema: Option<(&'a SchemaMessage, u64)>,
    /// The input line.
    pub line: u64,
    /// The record as received.
    pub record: &'a Object,
    /// Why.
    pub refusal: &'a Refusal,
    /// The kind it was routed to, if it was.
    pub kind: Option<&'static str>,
}

/// The NDJSON reject file.
#[derive(Debug)]
pub struct RejectFile {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    schemas_written: HashMap<String, u64>,
    count: u64,
}

impl RejectFile {
    /// The reject file of a run: `configured`, else the default. Nothing is created until the
    /// first reject.
    pub fn open(configured: Option<&Path>) -> Self {
        RejectFile {
            path: configured.map_or_else(|| PathBuf::from(DEFAULT_REJECT_FILE), Path::to_path_buf),
            out: None,
            schemas_written: HashMap::new(),
            count: 0,
        }
    }

    /// Moves the reject file at `path` aside to `NAME.replayed-<UTC time>` (before a run reads
    /// it as its input), and returns where it went.
    pub fn set_aside(path: &Path) -> Result<PathBuf, RejectFileError> {
        let err = |source| RejectFileError {
            path: path.to_path_buf(),
            source,
        };
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".replayed-{stamp}"));
        let mut aside = PathBuf::from(&name);
        let mut n = 1;
        while aside.exists() {
            n += 1;
            let mut numbered = name.clone();
            numbered.push(format!("-{n}"));
            aside = PathBuf::from(numbered);
        }
        std::fs::rename(path, &aside).map_err(err)?;
        Ok(aside)
    }

    fn create(&mut self) -> Result<&mut BufWriter<File>, RejectFileError> {
        if self.out.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|source| self.err(source))?;
            }
            let mut file =
                crate::fsutil::open_private(&self.path, true).map_err(|source| self.err(source))?;
            // Earlier runs' rejects stay; a line cut off by a crash must not swallow ours.
            if ends_mid_line(&self.path).map_err(|source| self.err(source))? {
                file.write_all(b"\n").map_err(|source| self.err(source))?;
            }
            self.out = Some(BufWriter::new(file));
        }
        match self.out.as_mut() {
            Some(out) => Ok(out),
            None => Err(RejectFileError {
                path: self.path.clone(),
                source: io::Error::other("the reject file is not open"),
            }),
        }
    }

    fn err(&self, source: io::Error) -> RejectFileError {
        RejectFileError {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one reject (and the stream's SCHEMA first, when it is new to the file).
    pub fn write(&mut self, reject: &Reject<'_>) -> Result<(), RejectFileError> {
        #[derive(Serialize)]
        struct Schema<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            stream: &'a str,
            schema: &'a Value,
            key_properties: &'a [String],
        }
        #[derive(Serialize)]
        struct Why<'a> {
            line: u64,
            reason: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            vendor_status: Option<u16>,
            #[serde(skip_serializing_if = "Option::is_none")]
            vendor_body: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            kind: Option<&'static str>,
            at: String,
        }
        #[derive(Serialize)]
        struct Record<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            stream: &'a str,
            record: &'a Object,
            reject: Why<'a>,
        }
        let new_schema = reject
            .schema
            .filter(|(_, generation)| self.schemas_written.get(reject.stream) != Some(generation));
        let path = self.path.clone();
        let out = self.create()?;
        let io_err = |source: io::Error| RejectFileError {
            path: path.clone(),
            source,
        };
        if let Some((schema, _)) = new_schema {
            serde_json::to_writer(
                &mut *out,
                &Schema {
                    kind: "SCHEMA",
                    stream: reject.stream,
                    schema: &schema.schema,
                    key_properties: &schema.key_properties,
                },
            )
            .map_err(|e| io_err(e.into()))?;
            out.write_all(b"\n").map_err(io_err)?;
        }
        serde_json::to_writer(
            &mut *out,
            &Record {
                kind: "RECORD",
                stream: reject.stream,
                record: reject.record,
                reject: Why {
                    line: reject.line,
                    reason: &reject.refusal.reason,
                    vendor_status: reject.refusal.vendor_status,
                    vendor_body: reject.refusal.vendor_body.as_deref(),
                    kind: reject.kind,
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                },
            },
        )
        .map_err(|e| io_err(e.into()))?;
        out.write_all(b"\n").map_err(io_err)?;
        if let Some((_, generation)) = new_schema {
            self.schemas_written
                .insert(reject.stream.to_string(), generation);
        }
        self.count += 1;
        Ok(())
    }

    /// Pushes buffered rejects to disk.
    pub fn flush(&mut self) -> Result<(), RejectFileError> {
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|source| RejectFileError {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// How many rejects were written.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once this run wrote to the file.
    pub fn exists(&self) -> bool {
        self.out.is_some()
    }
}

/// True when the file is not empty and its last byte is not a newline.
fn ends_mid_line(path: &Path) -> io::Result<bool> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::singer::{Message, MessageReader};
    use serde_json::json;

    #[test]
    fn rejects_replay_as_a_singer_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/rejects.ndjson");
        let mut file = RejectFile::open(Some(&path));
        assert!(!path.exists(), "nothing is created before the first reject");
        let schema = SchemaMessage {
            stream: "users".into(),
            schema: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
            key_properties: vec!["id".into()],
            bookmark_properties: vec![],
        };
        let record = json!({"id": "u1", "plan": ["a"]})
            .as_object()
            .cloned()
            .unwrap();
        for line in [3, 4] {
            file.write(&Reject {
                stream: "users",
                schema: Some((&schema, 1)),
                line,
                record: &record,
                refusal: &Refusal::vendor("refused", Some(400), Some("bad plan".into())),
                kind: Some("users"),
            })
            .unwrap();
        }
        file.flush().unwrap();
        assert_eq!(file.count(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let messages: Vec<Message> = MessageReader::new(text.as_bytes())
            .map(|m| m.unwrap().message)
            .collect();
        assert_eq!(messages.len(), 3, "one SCHEMA, two RECORDs: {text}");
        assert!(matches!(messages[0], Message::Schema(_)));
        let Message::Record(r) = &messages[2] else {
            panic!()
        };
        assert_eq!(r.record, record);
        let second: Value = serde_json::from_str(text.lines().nth(2).unwrap()).unwrap();
        assert_eq!(second["reject"]["line"], 4);
        assert_eq!(second["reject"]["vendor_status"], 400);
        assert_eq!(second["reject"]["vendor_body"], "bad plan");
        assert_eq!(second["reject"]["reason"], "refused");
    }

    #[test]
    fn earlier_rejects_are_kept_and_a_cut_line_is_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.ndjson");
        let earlier = "{\"type\":\"RECORD\",\"stream\":\"users\",\"record\":{\"id\":\"old\"}}\n{\"type\":\"REC";
        std::fs::write(&path, earlier).unwrap();
        let mut file = RejectFile::open(Some(&path));
        let record = json!({"id": "u9"}).as_object().cloned().unwrap();
        file.write(&Reject {
            stream: "users",
            schema: None,
            line: 2,
            record: &record,
            refusal: &Refusal::new("no"),
            kind: None,
        })
        .unwrap();
        file.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(earlier), "{text}");
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["record"]["id"], "u9");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let fresh = dir.path().join("fresh.ndjson");
            let mut file = RejectFile::open(Some(&fresh));
            file.write(&Reject {
                stream: "users",
                schema: None,
                line: 2,
                record: &record,
                refusal: &Refusal::new("no"),
                kind: None,
            })
            .unwrap();
            let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn set_aside_moves_the_file_and_never_overwrites_an_earlier_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rejects.ndjson");
        std::fs::write(&path, "one").unwrap();
        let first = RejectFile::set_aside(&path).unwrap();
        std::fs::write(&path, "two").unwrap();
        let second = RejectFile::set_aside(&path).unwrap();
        assert!(!path.exists());
        assert_ne!(first, second);
        assert!(
            first.to_string_lossy().contains("rejects.ndjson.replayed-"),
            "{}",
            first.display()
        );
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "one");
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "two");
    }

    #[test]
    fn the_default_file_appears_only_with_a_reject() {
        let file = RejectFile::open(None);
        assert!(!file.exists());
        assert_eq!(file.path(), Path::new(DEFAULT_REJECT_FILE));
    }
}
