//! The one writer of stdout.
//!
//! stdout is the Singer protocol, so nothing else in roster may write to it: `clippy.toml`
//! disallows `std::io::stdout` everywhere but here. Output is buffered and flushed at every
//! STATE (so a checkpoint is never stuck in a buffer behind the records it covers) and at exit.
//! A reader that went away (`tap | head`) surfaces as [`WriteError::Closed`], which the tap
//! treats as a clean stop.

use std::io::{self, BufWriter, Write};

use serde::Serialize;
use serde_json::Value;

use super::message::{Message, Object};

/// Output buffer size: large enough that one write call carries many records.
const BUFFER_BYTES: usize = 256 * 1024;

/// Why output could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The reading end of stdout was closed.
    #[error("stdout was closed by the reader")]
    Closed,
    /// Any other I/O failure.
    #[error("cannot write to stdout: {0}")]
    Io(#[source] io::Error),
    /// A value could not be serialised (a map with non-string keys, say).
    #[error("cannot serialise a message: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl From<io::Error> for WriteError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Io(err)
        }
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(err: serde_json::Error) -> Self {
        match err.io_error_kind() {
            Some(io::ErrorKind::BrokenPipe) => WriteError::Closed,
            Some(kind) => WriteError::Io(io::Error::new(kind, err)),
            None => WriteError::Serialize(err),
        }
    }
}

/// Writes Singer messages, one JSON object per line.
#[derive(Debug)]
pub struct SingerWriter<W: Write = io::Stdout> {
    out: BufWriter<W>,
    lines: u64,
}

impl SingerWriter<io::Stdout> {
    /// The writer of this process's stdout. Create it once, in the binary's run function.
    #[allow(clippy::disallowed_methods)] // the one place stdout is opened
    pub fn stdout() -> Self {
        Self::new(io::stdout())
    }
}

impl<W: Write> SingerWriter<W> {
    /// A writer over any sink (tests use a `Vec<u8>`).
    pub fn new(out: W) -> Self {
        Self {
            out: BufWriter::with_capacity(BUFFER_BYTES, out),
            lines: 0,
        }
    }

    /// Writes one message. A STATE is flushed at once.
    pub fn write(&mut self, message: &Message) -> Result<(), WriteError> {
        self.line(message)?;
        if matches!(message, Message::State(_)) {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes a RECORD without building a [`Message`] (the tap's hot path).
    pub fn write_record(
        &mut self,
        stream: &str,
        record: &Object,
        time_extracted: Option<&str>,
        version: Option<u64>,
    ) -> Result<(), WriteError> {
        #[derive(Serialize)]
        struct Record<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            stream: &'a str,
            record: &'a Object,
            #[serde(skip_serializing_if = "Option::is_none")]
            version: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            time_extracted: Option<&'a str>,
        }
        self.line(&Record {
            kind: "RECORD",
            stream,
            record,
            version,
            time_extracted,
        })
    }

    /// Writes a RECORD whose record is already JSON text (an object, as `write_record` would
    /// write it): the same line, with no map built for it.
    pub fn write_record_json(
        &mut self,
        stream: &str,
        record: &[u8],
        time_extracted: Option<&str>,
        version: Option<u64>,
    ) -> Result<(), WriteError> {
        self.out.write_all(b"{\"type\":\"RECORD\",\"stream\":")?;
        serde_json::to_writer(&mut self.out, stream)?;
        self.out.write_all(b",\"record\":")?;
        self.out.write_all(record)?;
        if let Some(version) = version {
            write!(self.out, ",\"version\":{version}")?;
        }
        if let Some(time) = time_extracted {
            self.out.write_all(b",\"time_extracted\":")?;
            serde_json::to_writer(&mut self.out, time)?;
        }
        self.out.write_all(b"}\n")?;
        self.lines += 1;
        Ok(())
    }

    /// Writes an ACTIVATE_VERSION message: `stream`'s records of older versions are obsolete.
    pub fn write_activate_version(&mut self, stream: &str, version: u64) -> Result<(), WriteError> {
        #[derive(Serialize)]
        struct Activate<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            stream: &'a str,
            version: u64,
        }
        self.line(&Activate {
            kind: "ACTIVATE_VERSION",
            stream,
            version,
        })
    }

    /// Writes a STATE message (the tap) and flushes.
    pub fn write_state(&mut self, value: &Value) -> Result<(), WriteError> {
        #[derive(Serialize)]
        struct State<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            value: &'a Value,
        }
        self.line(&State {
            kind: "STATE",
            value,
        })?;
        self.flush()
    }

    /// Writes a bare state value (the target: Meltano stores each stdout line as the whole
    /// state) and flushes.
    pub fn write_state_value(&mut self, value: &Value) -> Result<(), WriteError> {
        self.line(value)?;
        self.flush()
    }

    /// Writes any serialisable value as one line (the catalog for `--discover`, `--about`).
    pub fn write_json<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        self.line(value)?;
        self.flush()
    }

    /// Writes text as is (`--about` in text or markdown).
    pub fn write_text(&mut self, text: &str) -> Result<(), WriteError> {
        self.out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            self.out.write_all(b"\n")?;
        }
        self.flush()
    }

    /// Pushes buffered lines out.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        self.out.flush()?;
        Ok(())
    }

    /// How many lines were written.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// The underlying sink, after a flush (tests).
    pub fn into_inner(self) -> Result<W, WriteError> {
        self.out
            .into_inner()
            .map_err(|err| WriteError::from(err.into_error()))
    }

    fn line<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), WriteError> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")?;
        self.lines += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::singer::message::{RecordMessage, StateMessage};
    use serde_json::json;

    #[test]
    fn writes_one_line_per_message_and_flushes_state() {
        let mut writer = SingerWriter::new(Vec::new());
        let record: Object = json!({"id": "u1"}).as_object().cloned().unwrap();
        writer
            .write_record("users", &record, Some("2026-01-01T00:00:00+00:00"), None)
            .unwrap();
        writer.write_state(&json!({"bookmarks": {}})).unwrap();
        writer
            .write_state_value(&json!({"bookmarks": {"users": {}}}))
            .unwrap();
        writer
            .write(&Message::Record(RecordMessage {
                stream: "groups".into(),
                record: Object::new(),
                time_extracted: None,
                version: None,
            }))
            .unwrap();
        writer
            .write(&Message::State(StateMessage { value: json!(1) }))
            .unwrap();
        assert_eq!(writer.lines(), 5);
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"type":"RECORD","stream":"users","record":{"id":"u1"},"time_extracted":"2026-01-01T00:00:00+00:00"}"#,
                "\n",
                r#"{"type":"STATE","value":{"bookmarks":{}}}"#,
                "\n",
                r#"{"bookmarks":{"users":{}}}"#,
                "\n",
                r#"{"type":"RECORD","stream":"groups","record":{}}"#,
                "\n",
                r#"{"type":"STATE","value":1}"#,
                "\n",
            )
        );
    }

    #[test]
    fn a_record_given_as_json_text_is_the_same_line() {
        let record: Object = json!({"id": "u1", "name": "Zoë \"Z\"", "attributes": {"n": 1.5}})
            .as_object()
            .cloned()
            .unwrap();
        let text = serde_json::to_vec(&record).unwrap();
        for (time, version) in [(None, None), (Some("2026-01-01T00:00:00+00:00"), Some(7))] {
            let mut a = SingerWriter::new(Vec::new());
            a.write_record("users", &record, time, version).unwrap();
            let mut b = SingerWriter::new(Vec::new());
            b.write_record_json("users", &text, time, version).unwrap();
            assert_eq!(b.lines(), 1);
            assert_eq!(b.into_inner().unwrap(), a.into_inner().unwrap());
        }
    }

    /// A sink that behaves like a pipe whose reader went away.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    #[test]
    fn a_closed_reader_is_reported_as_closed() {
        let mut writer = SingerWriter::new(ClosedPipe);
        let err = writer.write_state(&json!({})).unwrap_err();
        assert!(matches!(err, WriteError::Closed), "{err:?}");
    }
}
