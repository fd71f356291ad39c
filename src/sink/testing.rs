//! [`ScriptedTransport`]: a transport that records every request and answers from a script,
//! for writer tests and benches.

use std::fmt;

use serde_json::Value;

use super::transport::Transport;
use super::wire::{SendError, WireRequest, WireResponse, WireStats};

/// A transport that records every request and answers from a script: for writer tests and
/// benches (the sandbox tests use the real HTTP client).
pub struct ScriptedTransport {
    log: parking_lot::Mutex<Vec<WireRequest>>,
    #[allow(clippy::type_complexity)]
    answer: Box<dyn Fn(&WireRequest) -> Result<WireResponse, SendError> + Send + Sync>,
}

impl fmt::Debug for ScriptedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptedTransport")
            .field("requests", &self.log.lock().len())
            .finish()
    }
}

impl ScriptedTransport {
    /// Answers every request with `200` and an empty body.
    pub fn ok() -> Self {
        Self::new(|_| Ok(WireResponse::ok(Value::Null)))
    }

    /// Answers with `answer`.
    pub fn new(
        answer: impl Fn(&WireRequest) -> Result<WireResponse, SendError> + Send + Sync + 'static,
    ) -> Self {
        ScriptedTransport {
            log: parking_lot::Mutex::new(Vec::new()),
            answer: Box::new(answer),
        }
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<WireRequest> {
        self.log.lock().clone()
    }
}

#[async_trait::async_trait]
impl Transport for ScriptedTransport {
    async fn send(&self, request: WireRequest) -> Result<WireResponse, SendError> {
        let answer = (self.answer)(&request);
        self.log.lock().push(request);
        answer
    }

    fn stats(&self) -> WireStats {
        WireStats {
            requests: self.log.lock().len() as u64,
            ..WireStats::default()
        }
    }
}
