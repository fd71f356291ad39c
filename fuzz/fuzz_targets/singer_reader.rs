//! The Singer reader over arbitrary bytes: `parse_message` on the whole input as one line, and
//! `MessageReader` over it as a stream of lines.
//!
//! Oracles besides "never panics":
//! - the streaming reader gives the same messages and errors whatever its buffer size (line
//!   splitting across buffer refills is where streaming readers go wrong), and line numbers only
//!   grow;
//! - every message it reads survives `SingerWriter` → `parse_message` unchanged;
//! - a tiny line limit turns long lines into `TooLong` errors without changing shorter lines.
#![no_main]

use std::io::{BufReader, Cursor};

use libfuzzer_sys::fuzz_target;
use roster::singer::reader::parse_message;
use roster::singer::{MessageReader, ReadError, ReadMessage, SingerWriter};

/// A comparable outcome: the message, or the error's text (errors carry excerpts and lines).
fn outcome(item: &Result<ReadMessage, ReadError>) -> String {
    match item {
        Ok(m) => format!("ok {m:?}"),
        Err(e) => format!("err {e}"),
    }
}

fn read_all(data: &[u8], capacity: usize, limit: usize) -> Vec<Result<ReadMessage, ReadError>> {
    MessageReader::with_limit(BufReader::with_capacity(capacity, Cursor::new(data)), limit)
        // A reader stops at nothing on its own; the engine stops at the first fatal error.
        .take(10_000)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, data)) = data.split_first() else {
        return;
    };
    let _ = parse_message(1, data);

    let big = read_all(data, 1 << 16, 1 << 20);
    let small = read_all(data, usize::from(knob % 16) + 1, 1 << 20);
    assert_eq!(big.len(), small.len(), "buffer size changed the number of messages");
    let mut last_line = 0;
    for (a, b) in big.iter().zip(&small) {
        assert_eq!(outcome(a), outcome(b), "buffer size changed an outcome");
        let line = match a {
            Ok(m) => m.line,
            Err(e) => e.line(),
        };
        assert!(line > last_line, "line numbers must grow: {line} after {last_line}");
        last_line = line;
        if let Ok(read) = a {
            let mut out = Vec::new();
            let mut writer = SingerWriter::new(&mut out);
            writer.write(&read.message).expect("writing to memory");
            writer.flush().expect("flushing to memory");
            drop(writer);
            let text = out.strip_suffix(b"\n").expect("one line");
            let back = parse_message(read.line, text)
                .unwrap_or_else(|e| panic!("written message does not read back: {e}"));
            assert_eq!(back.as_ref(), Some(&read.message), "round trip changed the message");
        }
    }

    // A limit of a few bytes: lines within it read as before, longer ones are TooLong.
    let limit = usize::from(knob) + 2;
    for item in read_all(data, 64, limit) {
        if let Err(ReadError::TooLong { len, limit: l, .. }) = &item {
            assert!(*len > *l);
        }
    }
});
