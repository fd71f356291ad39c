//! Spool files: rows of one upload written to disk under a row and a byte limit, so a million
//! users never sit in memory.
//!
//! A [`Spool`] is two anonymous temporary files (the `tempfile` crate's `tempfile()`: unlinked at
//! once, so even a `kill -9` leaves nothing behind):
//! - the **body**, exactly the bytes that will be uploaded: the [`Framing`]'s prefix, the rows
//!   one per line joined by its separator, and its suffix (NDJSON, a JSON envelope, a CSV file
//!   in a multipart form);
//! - the **origins**, one line per row with the record it came from (stream, input line,
//!   record), read back only when rows are rejected, since a reject must quote the record.
//!
//! In memory a spool keeps one [`RowMeta`] (ticket and payload hash) per row. A sealed spool
//! ([`Sealed`]) can be read back row by row, which is how a file refused as too large (413) is
//! split in halves and how the rows of a failed job that the vendor did not blame are sent
//! again.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use bytes::Bytes;

use crate::sink::{Origin, PayloadHash, RecordText, Ticket};

/// Write buffer of each spool file: large enough that a row is rarely a system call.
const WRITE_BUFFER: usize = 256 * 1024;

/// How rows are framed into one upload body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    /// Bytes before the first row; every `\n` in it starts a new line.
    pub prefix: &'static str,
    /// Bytes between two rows; always ends with `\n`, so each row is one line.
    pub separator: &'static str,
    /// Bytes after the last row.
    pub suffix: &'static str,
    /// The upload's `Content-Type`.
    pub content_type: &'static str,
}

impl Framing {
    /// NDJSON: one JSON object per line (Appcues imports).
    pub const NDJSON: Framing = Framing {
        prefix: "",
        separator: "\n",
        suffix: "\n",
        content_type: "application/x-ndjson",
    };

    /// The lines the prefix takes before the first row.
    fn prefix_lines(&self) -> usize {
        self.prefix.matches('\n').count()
    }

    /// What the separator leaves at the end of a row's line (`,` for a JSON array).
    fn line_tail(&self) -> &'static str {
        self.separator.trim_end_matches('\n')
    }

    /// The bytes a file of `rows` rows totalling `row_bytes` takes, framing included.
    pub fn size(&self, rows: usize, row_bytes: u64) -> u64 {
        let separators = rows.saturating_sub(1) as u64 * self.separator.len() as u64;
        self.prefix.len() as u64 + row_bytes + separators + self.suffix.len() as u64
    }
}

/// What is kept in memory per spooled row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMeta {
    /// The record's ticket, settled when the job ends.
    pub ticket: Ticket,
    /// The hash of the row as uploaded.
    pub payload: PayloadHash,
}

/// An open spool: rows are appended until it is sealed.
#[derive(Debug)]
pub struct Spool {
    framing: Framing,
    body: BufWriter<File>,
    origins: BufWriter<File>,
    rows: Vec<RowMeta>,
    row_bytes: u64,
    /// The origin line being built, reused from row to row.
    scratch: Vec<u8>,
}

impl Spool {
    /// An empty spool with its prefix written.
    pub fn new(framing: Framing) -> io::Result<Spool> {
        let mut body = BufWriter::with_capacity(WRITE_BUFFER, tempfile::tempfile()?);
        body.write_all(framing.prefix.as_bytes())?;
        Ok(Spool {
            framing,
            body,
            origins: BufWriter::with_capacity(WRITE_BUFFER, tempfile::tempfile()?),
            rows: Vec::new(),
            row_bytes: 0,
            scratch: Vec::with_capacity(1024),
        })
    }

    /// Rows so far.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The size of the upload if it were sealed now.
    pub fn size(&self) -> u64 {
        self.framing.size(self.rows.len(), self.row_bytes)
    }

    /// The size of the upload if one more row of `len` bytes were added and it were sealed.
    pub fn size_with(&self, len: usize) -> u64 {
        self.framing
            .size(self.rows.len() + 1, self.row_bytes + len as u64)
    }

    /// Appends one row (one line, no newline in it) and the record it came from.
    pub fn push(&mut self, row: &[u8], ticket: Ticket, origin: &Origin) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.scratch);
        line.clear();
        serde_json::to_writer(&mut line, &(&*origin.stream, origin.line, &origin.record))?;
        line.push(b'\n');
        let pushed = self.push_raw(
            row,
            &line,
            RowMeta {
                ticket,
                payload: PayloadHash::of_bytes(row),
            },
        );
        self.scratch = line;
        pushed
    }

    /// Appends a row and its origin line (with its newline) as they are.
    fn push_raw(&mut self, row: &[u8], origin_line: &[u8], meta: RowMeta) -> io::Result<()> {
        if !self.rows.is_empty() {
            self.body.write_all(self.framing.separator.as_bytes())?;
        }
        self.body.write_all(row)?;
        self.origins.write_all(origin_line)?;
        self.row_bytes += row.len() as u64;
        self.rows.push(meta);
        Ok(())
    }

    /// Writes the suffix and closes the spool for reading.
    pub fn seal(mut self) -> io::Result<Sealed> {
        self.body.write_all(self.framing.suffix.as_bytes())?;
        let size = self.size();
        let body = self.body.into_inner().map_err(|e| e.into_error())?;
        let origins = self.origins.into_inner().map_err(|e| e.into_error())?;
        Ok(Sealed {
            framing: self.framing,
            body,
            origins,
            rows: self.rows,
            size,
        })
    }
}

/// A sealed spool: the upload body and the origins of its rows.
#[derive(Debug)]
pub struct Sealed {
    framing: Framing,
    body: File,
    origins: File,
    rows: Vec<RowMeta>,
    size: u64,
}

/// One row read back from a sealed spool.
#[derive(Debug)]
pub struct RowBack {
    /// The row's bytes as uploaded.
    pub row: Vec<u8>,
    /// Its origin line (with its newline).
    pub origin_line: Vec<u8>,
    /// Ticket and payload hash.
    pub meta: RowMeta,
}

impl RowBack {
    /// The record the row came from.
    pub fn origin(&self) -> io::Result<Origin> {
        let (stream, line, record): (String, u64, RecordText) =
            serde_json::from_slice(&self.origin_line)?;
        Ok(Origin {
            stream: Arc::from(stream),
            line,
            record,
        })
    }
}

impl Sealed {
    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// The upload's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The framing.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Ticket and payload hash of every row, in order.
    pub fn metas(&self) -> &[RowMeta] {
        &self.rows
    }

    /// The whole upload body (read into memory for the one request that sends it).
    pub fn body(&mut self) -> io::Result<Bytes> {
        self.body.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        self.body.read_to_end(&mut bytes)?;
        Ok(Bytes::from(bytes))
    }

    /// Calls `each` with every row in order: its index, bytes, origin line and meta.
    pub fn for_each_row(
        &mut self,
        mut each: impl FnMut(usize, RowBack) -> io::Result<()>,
    ) -> io::Result<()> {
        self.body.seek(SeekFrom::Start(0))?;
        self.origins.seek(SeekFrom::Start(0))?;
        let mut body = BufReader::with_capacity(WRITE_BUFFER, &self.body);
        let mut origins = BufReader::with_capacity(WRITE_BUFFER, &self.origins);
        let mut line = Vec::new();
        for _ in 0..self.framing.prefix_lines() {
            line.clear();
            body.read_until(b'\n', &mut line)?;
        }
        let tail = self.framing.line_tail().as_bytes();
        for (index, meta) in self.rows.iter().enumerate() {
            let mut row = Vec::new();
            if body.read_until(b'\n', &mut row)? == 0 {
                return Err(truncated("spool body"));
            }
            if row.last() == Some(&b'\n') {
                row.pop();
            }
            if index + 1 < self.rows.len() && row.ends_with(tail) {
                row.truncate(row.len() - tail.len());
            }
            let mut origin_line = Vec::new();
            if origins.read_until(b'\n', &mut origin_line)? == 0 {
                return Err(truncated("spool origins"));
            }
            each(
                index,
                RowBack {
                    row,
                    origin_line,
                    meta: *meta,
                },
            )?;
        }
        Ok(())
    }

    /// Splits the rows into `parts` new spools: `route(index)` names the part of each row, or
    /// `None` to leave it out. Parts that get no row are `None`.
    pub fn split(
        &mut self,
        parts: usize,
        mut route: impl FnMut(usize) -> Option<usize>,
    ) -> io::Result<Vec<Option<Sealed>>> {
        let framing = self.framing;
        let mut spools: Vec<Spool> = (0..parts)
            .map(|_| Spool::new(framing))
            .collect::<io::Result<_>>()?;
        self.for_each_row(|index, back| {
            match route(index).and_then(|part| spools.get_mut(part)) {
                Some(spool) => spool.push_raw(&back.row, &back.origin_line, back.meta),
                None => Ok(()),
            }
        })?;
        spools
            .into_iter()
            .map(|spool| {
                if spool.rows() == 0 {
                    Ok(None)
                } else {
                    spool.seal().map(Some)
                }
            })
            .collect()
    }
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the {what} file ended before its last row"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ENVELOPE: Framing = Framing {
        prefix: "{\"users\":[\n",
        separator: ",\n",
        suffix: "\n]}\n",
        content_type: "application/json",
    };

    fn origin(line: u64) -> Origin {
        Origin {
            stream: "users".into(),
            line,
            record: json!({"id": format!("u{line}"), "n": line})
                .as_object()
                .cloned()
                .unwrap()
                .into(),
        }
    }

    fn spool(framing: Framing, n: u64) -> Sealed {
        let mut s = Spool::new(framing).unwrap();
        for i in 1..=n {
            let row = serde_json::to_vec(&json!({"user_id": format!("u{i}")})).unwrap();
            let expected = s.size_with(row.len());
            s.push(&row, Ticket(i), &origin(i)).unwrap();
            assert_eq!(s.size(), expected);
        }
        s.seal().unwrap()
    }

    #[test]
    fn the_body_is_exactly_the_framed_rows_and_its_size_is_known() {
        let mut ndjson = spool(Framing::NDJSON, 3);
        let body = ndjson.body().unwrap();
        assert_eq!(
            &body[..],
            b"{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n{\"user_id\":\"u3\"}\n"
        );
        assert_eq!(ndjson.size(), body.len() as u64);
        let mut envelope = spool(ENVELOPE, 2);
        let body = envelope.body().unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"users": [{"user_id": "u1"}, {"user_id": "u2"}]})
        );
        assert_eq!(envelope.size(), body.len() as u64);
    }

    #[test]
    fn rows_and_origins_read_back_in_order() {
        for framing in [Framing::NDJSON, ENVELOPE] {
            let mut sealed = spool(framing, 4);
            let mut seen = Vec::new();
            sealed
                .for_each_row(|i, back| {
                    let origin = back.origin().unwrap();
                    seen.push((
                        i,
                        String::from_utf8(back.row).unwrap(),
                        origin.line,
                        back.meta.ticket,
                    ));
                    Ok(())
                })
                .unwrap();
            assert_eq!(seen.len(), 4);
            assert_eq!(seen[3], (3, "{\"user_id\":\"u4\"}".into(), 4, Ticket(4)));
            assert_eq!(seen[0].1, "{\"user_id\":\"u1\"}", "{framing:?}");
        }
    }

    #[test]
    fn splits_into_parts_and_leaves_rows_out() {
        let mut sealed = spool(ENVELOPE, 5);
        let parts = sealed
            .split(2, |i| if i == 2 { None } else { Some(i / 3) })
            .unwrap();
        let mut parts: Vec<Sealed> = parts.into_iter().map(Option::unwrap).collect();
        let first: serde_json::Value = serde_json::from_slice(&parts[0].body().unwrap()).unwrap();
        assert_eq!(
            first,
            json!({"users": [{"user_id": "u1"}, {"user_id": "u2"}]})
        );
        let second: serde_json::Value = serde_json::from_slice(&parts[1].body().unwrap()).unwrap();
        assert_eq!(
            second,
            json!({"users": [{"user_id": "u4"}, {"user_id": "u5"}]})
        );
        assert_eq!(
            parts[1]
                .metas()
                .iter()
                .map(|m| m.ticket)
                .collect::<Vec<_>>(),
            vec![Ticket(4), Ticket(5)]
        );
        let mut origins = Vec::new();
        parts[1]
            .for_each_row(|_, b| {
                origins.push(b.origin().unwrap().record);
                Ok(())
            })
            .unwrap();
        assert_eq!(origins[0], origin(4).record);
        let none = sealed.split(1, |_| None).unwrap();
        assert!(none[0].is_none());
    }
}
