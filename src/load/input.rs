//! The input side: threads read Singer lines (stdin or `--input`), parse them on every core and
//! feed the async engine through a bounded channel in input order, so parsing runs beside
//! validation and delivery and a slow vendor slows the reader down instead of filling memory.
//!
//! - **singer-input** reads lines (one copy, into a pooled chunk buffer) and deals chunks of up
//!   to [`CHUNK_LINES`] lines round-robin to the parse workers;
//! - **singer-parse-N** (one per core, at most [`MAX_PARSE_WORKERS`]) parse their chunks and
//!   hand the emptied buffers back to the reader;
//! - **singer-order** takes the parsed chunks back in the same round-robin order, so the
//!   engine sees every message in input order, and stops at the first fatal error (nothing after
//!   it is delivered). Each queue is bounded: memory stays flat whatever the input's size.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use tokio::sync::mpsc;

use std::sync::Arc;

use crate::load::fast::{ItemSeed, Prepared, Published, Streams};
use crate::singer::{
    MessageReader, ParsedLine, RawRecord, ReadError, ReadMessage, UnknownTypes, parse_raw,
    parse_record_with,
};
use crate::sink::{Item, Refusal};

/// What the engine reads: a message, or a RECORD (its item already made when a parse worker
/// could: `crate::load::fast`).
#[derive(Debug)]
pub enum Input {
    /// Any message but a RECORD.
    Message(ReadMessage),
    /// A RECORD.
    Record(Box<Record>),
}

impl Input {
    /// Its line in the input.
    pub fn line(&self) -> u64 {
        match self {
            Input::Message(read) => read.line,
            Input::Record(record) => record.raw.line,
        }
    }
}

/// A RECORD as the parse workers hand it to the engine.
#[derive(Debug)]
pub struct Record {
    /// The message, its record still raw JSON.
    pub raw: RawRecord,
    /// What a worker made of it, and with which SCHEMA and route (`None`: the engine judges).
    pub prepared: Option<(Arc<Prepared>, Result<Item, Refusal>)>,
}

/// What the engine reads at once: the messages of one parsed chunk, in input order (one send
/// and one wake-up per chunk, not per message).
pub type Batch = Vec<Result<Input, ReadError>>;

/// The engine's end of the input.
pub type Receiver = mpsc::Receiver<Batch>;

/// Messages parsed ahead of the engine (each at most `max_line_bytes`, usually a few hundred
/// bytes): enough to keep the engine busy, small enough to keep memory flat.
pub const INPUT_QUEUE: usize = 1024;

/// Read buffer of the input.
const READ_BUFFER: usize = 256 * 1024;

/// Where the input could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the input {path}: {source}")]
pub struct InputError {
    /// The file (`-` for stdin).
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// Starts the reader thread over `--input` or stdin. The thread stops at the end of the input,
/// after a fatal read error, or when the engine drops the receiver.
pub fn spawn(
    input: Option<&Path>,
    max_line_bytes: usize,
    published: Published,
) -> Result<Receiver, InputError> {
    let source: Box<dyn BufRead + Send> = match input {
        Some(path) => Box::new(BufReader::with_capacity(
            READ_BUFFER,
            File::open(path).map_err(|source| InputError {
                path: path.to_path_buf(),
                source,
            })?,
        )),
        None => Box::new(BufReader::with_capacity(READ_BUFFER, io::stdin())),
    };
    spawn_published(source, max_line_bytes, published).map_err(|source| InputError {
        path: input.map_or_else(|| PathBuf::from("-"), Path::to_path_buf),
        source,
    })
}

/// Starts the reader threads over any input, nothing published (tests).
pub fn spawn_reader(
    source: Box<dyn BufRead + Send>,
    max_line_bytes: usize,
) -> io::Result<Receiver> {
    spawn_published(source, max_line_bytes, Published::default())
}

/// Starts the reader threads over any input; the parse workers make the items of RECORDs of
/// the streams the engine publishes.
pub fn spawn_published(
    source: Box<dyn BufRead + Send>,
    max_line_bytes: usize,
    published: Published,
) -> io::Result<Receiver> {
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_PARSE_WORKERS);
    let (tx, rx) = mpsc::channel(INPUT_QUEUE / CHUNK_LINES);
    let (pool_tx, pool_rx) = std_mpsc::channel::<Vec<u8>>();
    let mut to_workers = Vec::with_capacity(workers);
    let mut from_workers = Vec::with_capacity(workers);
    for n in 0..workers {
        let (chunk_tx, chunk_rx) = std_mpsc::sync_channel::<Chunk>(CHUNKS_QUEUED);
        let (parsed_tx, parsed_rx) = std_mpsc::sync_channel::<Vec<Parsed>>(CHUNKS_QUEUED);
        let pool = pool_tx.clone();
        let published = published.clone();
        std::thread::Builder::new()
            .name(format!("singer-parse-{n}"))
            .spawn(move || {
                for mut chunk in chunk_rx {
                    let parsed = chunk.parse(&published.snapshot());
                    // The buffer goes back to the reader (gone when the reader has stopped).
                    let _ = pool.send(chunk.text);
                    if parsed_tx.send(parsed).is_err() {
                        break;
                    }
                }
            })?;
        to_workers.push(chunk_tx);
        from_workers.push(parsed_rx);
    }
    drop(pool_tx);
    std::thread::Builder::new()
        .name("singer-order".into())
        .spawn(move || deliver(&from_workers, &tx))?;
    std::thread::Builder::new()
        .name("singer-input".into())
        .spawn(move || {
            let mut reader = MessageReader::with_limit(Tracked::new(source), max_line_bytes);
            let mut next = 0usize;
            loop {
                let mut text = pool_rx.try_recv().unwrap_or_default();
                text.clear();
                let (chunk, more) = Chunk::read(&mut reader, text);
                if !chunk.lines.is_empty() {
                    if to_workers[next % to_workers.len()].send(chunk).is_err() {
                        break;
                    }
                    next += 1;
                }
                if !more {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Parse workers at most: past a few, the engine is the bottleneck.
pub const MAX_PARSE_WORKERS: usize = 4;

/// Lines a reader hands a parse worker at once.
pub const CHUNK_LINES: usize = 256;

/// Bytes after which a chunk is handed over before it has [`CHUNK_LINES`] lines.
const CHUNK_BYTES: usize = 256 * 1024;

/// A chunk buffer larger than this is not kept for reuse (one huge line does not pin memory).
const CHUNK_KEEP: usize = 1024 * 1024;

/// Chunks queued for each parse worker, and parsed chunks queued from it.
const CHUNKS_QUEUED: usize = 2;

/// A line's outcome.
type Parsed = Result<Line, ReadError>;

/// A line, parsed.
enum Line {
    Input(Input),
    Unknown { line: u64, kind: String },
}

/// Lines read and not parsed yet: their text back to back, and where each one is.
struct Chunk {
    text: Vec<u8>,
    lines: Vec<Slot>,
}

enum Slot {
    /// A line: its number and its bytes in the chunk's text.
    Line { line: u64, start: usize, end: usize },
    /// A line that could not be read (too long, an I/O error): reading stops after it.
    Failed(ReadError),
}

impl Chunk {
    /// Reads up to [`CHUNK_LINES`] lines into `text`; false with it when the input is done.
    /// A chunk is handed over early when no more input is buffered: the next read may wait
    /// for the tap, and what came so far (a STATE to print, records to send) must not wait
    /// with it.
    fn read<R: BufRead>(
        reader: &mut MessageReader<Tracked<R>>,
        mut text: Vec<u8>,
    ) -> (Chunk, bool) {
        if text.capacity() > CHUNK_KEEP {
            text = Vec::new();
        }
        let mut lines = Vec::with_capacity(CHUNK_LINES);
        let mut more = true;
        while lines.len() < CHUNK_LINES && text.len() < CHUNK_BYTES {
            match reader.next_text() {
                None => {
                    more = false;
                    break;
                }
                Some(Ok((line, bytes))) => {
                    let start = text.len();
                    text.extend_from_slice(bytes);
                    lines.push(Slot::Line {
                        line,
                        start,
                        end: text.len(),
                    });
                    if reader.input_ref().buffered() == 0 {
                        break;
                    }
                }
                Some(Err(err)) => {
                    lines.push(Slot::Failed(err));
                    more = false;
                    break;
                }
            }
        }
        (Chunk { text, lines }, more)
    }

    /// Parses every line; a line that could not be read stays the error it is. A RECORD of a
    /// published stream becomes its item here.
    fn parse(&mut self, streams: &Streams) -> Vec<Parsed> {
        let text = &self.text;
        self.lines
            .drain(..)
            .map(|slot| match slot {
                Slot::Line { line, start, end } => {
                    // A RECORD of a published stream in the common form: one pass.
                    if let Some((raw, prepared)) =
                        parse_record_with(line, &text[start..end], |stream| {
                            streams.get(stream).map(ItemSeed)
                        })
                    {
                        return Ok(Line::Input(Input::Record(Box::new(Record {
                            raw,
                            prepared: Some(prepared),
                        }))));
                    }
                    parse_raw(line, &text[start..end]).map(|parsed| match parsed {
                        ParsedLine::Message(message) => Line::Input(Input::Message(message)),
                        ParsedLine::Record(raw) => {
                            let prepared = streams.get(raw.stream.as_str()).and_then(|p| {
                                p.item(&raw.record).map(|item| (Arc::clone(p), item))
                            });
                            Line::Input(Input::Record(Box::new(Record { raw, prepared })))
                        }
                        ParsedLine::Unknown { line, kind } => Line::Unknown { line, kind },
                    })
                }
                Slot::Failed(err) => Err(err),
            })
            .collect()
    }
}

/// A `BufRead` that knows how much of its last fill is still unread: zero means the next line
/// needs a read that may block (a tap that has not written it yet).
struct Tracked<R> {
    inner: R,
    left: usize,
}

impl<R> Tracked<R> {
    fn new(inner: R) -> Self {
        Tracked { inner, left: 0 }
    }

    /// Bytes buffered and not consumed yet.
    fn buffered(&self) -> usize {
        self.left
    }
}

impl<R: BufRead> io::Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bypasses the count: unknown afterwards, so taken as empty.
        self.left = 0;
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Tracked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let bytes = self.inner.fill_buf()?;
        self.left = bytes.len();
        Ok(bytes)
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt);
        self.left = self.left.saturating_sub(amt);
    }
}

/// Hands the parsed chunks to the engine in input order, until the first fatal error, the end
/// of the input, or the engine dropping its receiver.
fn deliver(from_workers: &[std_mpsc::Receiver<Vec<Parsed>>], tx: &mpsc::Sender<Batch>) {
    let mut unknown = UnknownTypes::default();
    for next in 0usize.. {
        let Ok(parsed) = from_workers[next % from_workers.len()].recv() else {
            return;
        };
        let mut batch = Vec::with_capacity(parsed.len());
        let mut fatal = false;
        for outcome in parsed {
            let message = match outcome {
                Ok(Line::Input(input)) => Ok(input),
                Ok(Line::Unknown { line, kind }) => {
                    unknown.skip(line, kind);
                    continue;
                }
                Err(err) => Err(err),
            };
            fatal = message.as_ref().is_err_and(|err| !err.is_record_level());
            batch.push(message);
            if fatal {
                break;
            }
        }
        if (!batch.is_empty() && tx.blocking_send(batch).is_err()) || fatal {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The input one message at a time, as the engine takes them from its batches.
    struct Messages {
        rx: Receiver,
        queued: std::collections::VecDeque<Result<Input, ReadError>>,
    }

    impl Messages {
        fn new(rx: Receiver) -> Self {
            Messages {
                rx,
                queued: Default::default(),
            }
        }

        async fn recv(&mut self) -> Option<Result<Input, ReadError>> {
            while self.queued.is_empty() {
                let batch = self.rx.recv().await?;
                assert!(!batch.is_empty(), "an empty batch was sent");
                self.queued.extend(batch);
            }
            self.queued.pop_front()
        }
    }

    /// A tap that has written some lines and not the next: reads block until it does.
    struct Trickle(std_mpsc::Receiver<Vec<u8>>);

    impl io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.recv() {
                Ok(bytes) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    Ok(bytes.len())
                }
                Err(_) => Ok(0),
            }
        }
    }

    #[tokio::test]
    async fn what_came_is_handed_over_while_the_tap_is_still_writing() {
        // A STATE followed by silence (a tap waiting on its vendor) must reach the engine at
        // once, not when a chunk fills: the parallel reader once held it until 256 lines came.
        let (tx, rx_bytes) = std_mpsc::channel::<Vec<u8>>();
        tx.send(b"{\"type\":\"STATE\",\"value\":1}\n{\"type\":\"STATE\",\"value\":2}\n".to_vec())
            .unwrap();
        let source = Box::new(io::BufReader::new(Trickle(rx_bytes)));
        let mut rx = Messages::new(spawn_reader(source, 1 << 20).unwrap());
        for _ in 0..2 {
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
            assert!(
                matches!(got, Ok(Some(Ok(_)))),
                "a line the tap wrote waited for more input"
            );
        }
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn reads_until_the_first_fatal_error() {
        let text = "{\"type\":\"STATE\",\"value\":1}\nnot json\n{\"type\":\"STATE\",\"value\":2}\n";
        let mut rx = Messages::new(
            spawn_reader(Box::new(io::Cursor::new(text.as_bytes().to_vec())), 1 << 20).unwrap(),
        );
        assert!(rx.recv().await.unwrap().is_ok());
        let err = rx.recv().await.unwrap().unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(
            rx.recv().await.is_none(),
            "nothing is read after a fatal error"
        );
    }

    #[tokio::test]
    async fn messages_arrive_in_input_order_across_chunks_and_workers() {
        // Enough lines for many chunks on every worker, with blank lines, unknown types and a
        // record-level error among them; then a fatal error, then lines that must not arrive.
        let mut text = String::new();
        let mut expected = Vec::new();
        let mut line = 0u64;
        for i in 0..(CHUNK_LINES * MAX_PARSE_WORKERS * 3 + 17) {
            line += 1;
            match i % 97 {
                5 => text.push('\n'),
                6 => text.push_str("{\"type\":\"METRIC\",\"value\":1}\n"),
                7 => {
                    text.push_str(
                        "{\"type\":\"RECORD\",\"stream\":\"s\",\"record\":{\"a\":1,\"a\":2}}\n",
                    );
                    expected.push(line);
                }
                _ => {
                    text.push_str(&format!("{{\"type\":\"STATE\",\"value\":{i}}}\n"));
                    expected.push(line);
                }
            }
        }
        text.push_str("not json\n{\"type\":\"STATE\",\"value\":-1}\n");
        let fatal_line = line + 1;
        let mut rx = Messages::new(
            spawn_reader(Box::new(io::Cursor::new(text.into_bytes())), 1 << 20).unwrap(),
        );
        let mut seen = Vec::new();
        while let Some(message) = rx.recv().await {
            match message {
                Ok(read) => seen.push(read.line()),
                Err(err) if err.is_record_level() => seen.push(err.line()),
                Err(err) => {
                    assert_eq!(err.line(), fatal_line, "{err}");
                    assert!(
                        rx.recv().await.is_none(),
                        "a line after the fatal error arrived"
                    );
                    break;
                }
            }
        }
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn an_over_long_line_stops_the_input_at_its_place() {
        let text = format!(
            "{{\"type\":\"STATE\",\"value\":1}}\n{{\"type\":\"STATE\",\"value\":\"{}\"}}\n{{\"type\":\"STATE\",\"value\":3}}\n",
            "x".repeat(5000)
        );
        let mut rx = Messages::new(
            spawn_reader(Box::new(io::Cursor::new(text.into_bytes())), 1000).unwrap(),
        );
        assert_eq!(rx.recv().await.unwrap().unwrap().line(), 1);
        let err = rx.recv().await.unwrap().unwrap_err();
        assert!(matches!(err, ReadError::TooLong { line: 2, .. }), "{err}");
        assert!(rx.recv().await.is_none());
    }
}
