//! The input side: a blocking thread reads Singer lines (stdin or `--input`) and feeds the async
//! engine through a bounded channel, so parsing runs beside validation and delivery and a slow
//! vendor slows the reader down instead of filling memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::singer::{MessageReader, ReadError, ReadMessage};

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
) -> Result<mpsc::Receiver<Result<ReadMessage, ReadError>>, InputError> {
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
    spawn_reader(source, max_line_bytes).map_err(|source| InputError {
        path: input.map_or_else(|| PathBuf::from("-"), Path::to_path_buf),
        source,
    })
}

/// Starts the reader thread over any input (tests).
pub fn spawn_reader(
    source: Box<dyn BufRead + Send>,
    max_line_bytes: usize,
) -> io::Result<mpsc::Receiver<Result<ReadMessage, ReadError>>> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE);
    std::thread::Builder::new()
        .name("singer-input".into())
        .spawn(move || {
            let reader = MessageReader::with_limit(source, max_line_bytes);
            for message in reader {
                let fatal = message.as_ref().is_err_and(|err| !err.is_record_level());
                if tx.blocking_send(message).is_err() || fatal {
                    break;
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_until_the_first_fatal_error() {
        let text = "{\"type\":\"STATE\",\"value\":1}\nnot json\n{\"type\":\"STATE\",\"value\":2}\n";
        let mut rx =
            spawn_reader(Box::new(io::Cursor::new(text.as_bytes().to_vec())), 1 << 20).unwrap();
        assert!(rx.recv().await.unwrap().is_ok());
        let err = rx.recv().await.unwrap().unwrap_err();
        assert_eq!(err.line(), 2);
        assert!(
            rx.recv().await.is_none(),
            "nothing is read after a fatal error"
        );
    }
}
