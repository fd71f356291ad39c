//! `--dry-run`: every record is validated and mapped and goes through the vendor's writer as in a
//! real run, but the writer's [`Transport`] is this recorder, which writes each request it would
//! send as one NDJSON line and answers it with an empty success. Nothing reaches the vendor.
//!
//! Lines (to stderr, or to `--dry-run-output FILE`):
//! - `{"type":"request","method":"POST","url":"…","path":"/users","body":{…}}` per request;
//! - `{"type":"reject","stream":…,"line":…,"reason":…,"record":{…}}` per record that would be
//!   rejected before sending (the reject file is not touched);
//! - `{"type":"state","value":{…}}` once at the end: the state a real run would have printed.
//!
//! A dry run prints no STATE on stdout, so it never advances anybody's bookmark.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::singer::Object;
use crate::sink::{
    Method, Refusal, SendError, SendFailure, Transport, WireBody, WireRequest, WireResponse,
    WireStats,
};

/// The largest line buffer a thread keeps for its next line.
const LINE_BUFFER_KEEP: usize = 64 * 1024;

/// The shared dry-run output.
#[derive(Clone)]
pub struct DryRunOutput {
    out: Arc<Mutex<BufWriter<Box<dyn Write + Send>>>>,
    failed: Arc<Mutex<Option<io::Error>>>,
}

impl std::fmt::Debug for DryRunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DryRunOutput")
    }
}

impl DryRunOutput {
    /// Output to a file (truncated, created `0600`: it holds records), or to stderr.
    pub fn open(path: Option<&Path>) -> io::Result<Self> {
        let sink: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(crate::fsutil::open_private(path, false)?),
            None => Box::new(io::stderr()),
        };
        Ok(Self::new(sink))
    }

    /// Output to any writer (tests).
    pub fn new(sink: Box<dyn Write + Send>) -> Self {
        DryRunOutput {
            out: Arc::new(Mutex::new(BufWriter::with_capacity(256 * 1024, sink))),
            failed: Arc::new(Mutex::new(None)),
        }
    }

    /// Writes one line: serialised into this thread's reused buffer outside the lock, then
    /// copied to the output in one piece.
    pub(crate) fn line<T: Serialize>(&self, value: &T) {
        self.line_with(value, None);
    }

    /// Writes one line, `value` serialised as a JSON object; with `raw`, `,"body":` and those
    /// bytes (a JSON value already serialised) are appended as its last member.
    fn line_with<T: Serialize>(&self, value: &T, raw: Option<&[u8]>) {
        thread_local! {
            static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        let result = BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            serde_json::to_writer(&mut *buffer, value).map_err(io::Error::from)?;
            if let Some(raw) = raw
                && buffer.pop() == Some(b'}')
            {
                buffer.extend_from_slice(b",\"body\":");
                buffer.extend_from_slice(raw);
                buffer.push(b'}');
            }
            buffer.push(b'\n');
            let written = self.out.lock().write_all(&buffer);
            // A rare huge line does not pin its memory to the thread.
            if buffer.capacity() > LINE_BUFFER_KEEP {
                *buffer = Vec::new();
            }
            written
        });
        if let Err(err) = result {
            self.failed.lock().get_or_insert(err);
        }
    }

    /// Writes a would-be reject.
    pub fn reject(&self, stream: &str, line: u64, record: &Object, refusal: &Refusal) {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            stream: &'a str,
            line: u64,
            reason: &'a str,
            record: &'a Object,
        }
        self.line(&Line {
            kind: "reject",
            stream,
            line,
            reason: &refusal.reason,
            record,
        });
    }

    /// Writes the state a real run would have printed last.
    pub fn state(&self, value: &Value) {
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            value: &'a Value,
        }
        self.line(&Line {
            kind: "state",
            value,
        });
    }

    /// Flushes; reports the first write failure, if any.
    pub fn finish(&self) -> io::Result<()> {
        if let Some(err) = self.failed.lock().take() {
            return Err(err);
        }
        self.out.lock().flush()
    }
}

/// One would-be request, as the dry-run output writes it.
#[derive(Serialize)]
struct RequestLine<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    method: Method,
    url: JoinedUrl<'a>,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
}

/// The base URL and a path, serialised as one string without building it first.
struct JoinedUrl<'a>(&'a str, &'a str);

impl Serialize for JoinedUrl<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

/// The recording transport.
#[derive(Debug)]
pub struct DryRunTransport {
    base: String,
    out: DryRunOutput,
    requests: AtomicU64,
}

impl DryRunTransport {
    /// Records requests to `out`, naming full URLs under `base_url` (credentials never appear:
    /// base URLs cannot carry them).
    pub fn new(base_url: &url::Url, out: DryRunOutput) -> Self {
        DryRunTransport {
            base: base_url.as_str().trim_end_matches('/').to_string(),
            out,
            requests: AtomicU64::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Transport for DryRunTransport {
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // The body is written from where it is (no copy of the record's value tree per request);
        // a body serialised once is written as those bytes, after the other members (where
        // `body` comes in a line: `body_file` and `content_type` are absent for JSON bodies).
        let mut raw = None;
        let (body, body_file, content_type) = match &request.body {
            WireBody::None => (None, None, None),
            WireBody::JsonBytes(bytes) => {
                raw = Some(&bytes[..]);
                (None, None, None)
            }
            WireBody::Json(v) => (Some(Cow::Borrowed(v)), None, None),
            WireBody::Bytes {
                content_type,
                bytes,
            } => (
                Some(Cow::Owned(Value::String(
                    String::from_utf8_lossy(bytes).into_owned(),
                ))),
                None,
                Some(content_type.as_str()),
            ),
            WireBody::File { content_type, path } => (
                None,
                Some(path.display().to_string()),
                Some(content_type.as_str()),
            ),
        };
        let line = RequestLine {
            kind: "request",
            method: request.method,
            url: JoinedUrl(&self.base, &request.path),
            path: &request.path,
            body,
            body_file,
            content_type,
        };
        self.out.line_with(&line, raw);
        if let Some(err) = self.out.failed.lock().as_ref() {
            return Err(SendError {
                failure: SendFailure::Local,
                status: None,
                body_excerpt: None,
                message: format!("cannot write the dry-run output: {err}"),
                maybe_processed: false,
            });
        }
        Ok(WireResponse {
            status: 200,
            body: Bytes::new(),
            dry_run: true,
        })
    }

    fn stats(&self) -> WireStats {
        WireStats {
            requests: self.requests.load(Ordering::Relaxed),
            ..WireStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn records_requests_rejects_and_the_final_state() {
        let buf = Shared::default();
        let out = DryRunOutput::new(Box::new(buf.clone()));
        let base = url::Url::parse("http://127.0.0.1:1/userflow").unwrap();
        let transport = DryRunTransport::new(&base, out.clone());
        let response = transport
            .send(WireRequest::new(Method::Post, "/users").json(json!({"id": "u1"})))
            .await
            .unwrap();
        assert!(response.dry_run);
        assert_eq!(response.json(), Value::Null);
        let record = json!({"id": 5}).as_object().cloned().unwrap();
        out.reject("users", 7, &record, &Refusal::new("no"));
        out.state(&json!({"bookmarks": {}}));
        out.finish().unwrap();
        let text = String::from_utf8(buf.0.lock().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"type": "request", "method": "POST", "url": "http://127.0.0.1:1/userflow/users",
                   "path": "/users", "body": {"id": "u1"}})
        );
        assert_eq!(lines[1]["type"], "reject");
        assert_eq!(lines[1]["line"], 7);
        assert_eq!(
            lines[2],
            json!({"type": "state", "value": {"bookmarks": {}}})
        );
        assert_eq!(transport.stats().requests, 1);
    }

    #[tokio::test]
    async fn a_body_serialised_once_is_written_as_the_same_line() {
        // The request line of a body serialised once is the line its `Value` gave, byte for
        // byte (`--dry-run-output` is compared and replayed by users).
        let body = json!({"id": "u1", "attributes": {"email": "a@x.io", "n": 1.5, "x": null}});
        let mut lines = Vec::new();
        for request in [
            WireRequest::new(Method::Post, "/users").json(body.clone()),
            WireRequest::new(Method::Post, "/users")
                .json_of(&body)
                .unwrap(),
        ] {
            let buf = Shared::default();
            let out = DryRunOutput::new(Box::new(buf.clone()));
            let base = url::Url::parse("http://127.0.0.1:1/userflow").unwrap();
            DryRunTransport::new(&base, out.clone())
                .send(request)
                .await
                .unwrap();
            out.finish().unwrap();
            lines.push(String::from_utf8(buf.0.lock().clone()).unwrap());
        }
        assert!(matches!(
            WireRequest::new(Method::Post, "/users")
                .json_of(&body)
                .unwrap()
                .body,
            WireBody::JsonBytes(_)
        ));
        assert_eq!(lines[0], lines[1]);
        assert!(lines[1].ends_with(",\"body\":{\"id\":\"u1\",\"attributes\":{\"email\":\"a@x.io\",\"n\":1.5,\"x\":null}}}\n"), "{}", lines[1]);
    }
}
