//! [`HttpError`]: every way a request can end badly. Each message names the vendor, the method
//! and the URL with credentials stripped; status errors add a short, scrubbed body excerpt.
//! No variant ever holds a credential.

use reqwest::{Method, StatusCode};

/// What went wrong on the wire when no usable response came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The connection could not be made (DNS, refused, TLS handshake): the request never left.
    Connect,
    /// No complete answer within the request timeout.
    Timeout,
    /// The connection dropped or reset before or while the answer came.
    Connection,
    /// The body could not be read completely.
    Body,
    /// The answer was too large to hold.
    TooLarge,
    /// Anything else reqwest reports (redirect loops, protocol errors).
    Other,
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransportKind::Connect => "could not connect",
            TransportKind::Timeout => "timed out",
            TransportKind::Connection => "connection closed or reset",
            TransportKind::Body => "could not read the response body",
            TransportKind::TooLarge => "response body too large",
            TransportKind::Other => "request failed",
        })
    }
}

/// An HTTP engine error.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The client could not be built (bad header, TLS backend).
    #[error("{vendor}: cannot set up the http client: {detail}")]
    Build {
        vendor: &'static str,
        detail: String,
    },

    /// A path or URL that cannot be requested from this client.
    #[error("{vendor}: cannot request {input:?}: {reason}")]
    InvalidUrl {
        vendor: &'static str,
        input: String,
        reason: String,
    },

    /// A request body could not be encoded.
    #[error("{vendor}: {method} {url}: cannot encode the request body: {detail}")]
    Encode {
        vendor: &'static str,
        method: Method,
        url: String,
        detail: String,
    },

    /// The server answered with a status that failed (not retryable, or the retry budget ran
    /// out, or a non-idempotent request that must not be repeated blindly).
    #[error("{vendor}: {method} {url} answered {status} after {}{}: {excerpt}", attempts_text(*.attempts), why_suffix(.why))]
    Status {
        vendor: &'static str,
        method: Method,
        url: String,
        status: StatusCode,
        excerpt: String,
        attempts: u32,
        maybe_processed: bool,
        why: Option<String>,
    },

    /// No usable answer: connect failure, timeout, reset, unreadable body.
    #[error("{vendor}: {method} {url} {kind} after {}{}: {detail}", attempts_text(*.attempts), why_suffix(.why))]
    Transport {
        vendor: &'static str,
        method: Method,
        url: String,
        kind: TransportKind,
        detail: String,
        attempts: u32,
        maybe_processed: bool,
        why: Option<String>,
    },

    /// A signal stopped the run: the request was not sent, or its answer did not come within
    /// the grace after the signal.
    #[error("{vendor}: {method} {url}: stopped by a signal {}", if *.on_the_wire { "before the answer came (abandoned after the grace)" } else { "before it was sent" })]
    Stopped {
        vendor: &'static str,
        method: Method,
        url: String,
        attempts: u32,
        /// The last attempt was on the wire when it was abandoned.
        on_the_wire: bool,
        maybe_processed: bool,
    },

    /// A body that is not the JSON the caller expected.
    #[error("{vendor}: {url}: unexpected response body ({detail}): {excerpt}")]
    Decode {
        vendor: &'static str,
        url: String,
        detail: String,
        excerpt: String,
    },
}

/// What ended the attempts: the retry budget spent, or a request not repeated (`why`), else an
/// answer that is not retried.
fn why_suffix(why: &Option<String>) -> String {
    match why {
        Some(w) => format!(" ({w})"),
        None => " (not retryable)".to_string(),
    }
}

fn attempts_text(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".to_string()
    } else {
        format!("{attempts} attempts")
    }
}

impl HttpError {
    /// The HTTP status of the last answer, for status errors.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True for 401 and 403: the credentials are wrong or lack permission.
    pub fn is_auth(&self) -> bool {
        matches!(
            self.status(),
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        )
    }

    /// True for a 404 answer.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(StatusCode::NOT_FOUND)
    }

    /// True when a signal stopped the request.
    pub fn is_stopped(&self) -> bool {
        matches!(self, HttpError::Stopped { .. })
    }

    /// True for a timeout on the last attempt.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            HttpError::Transport {
                kind: TransportKind::Timeout,
                ..
            }
        )
    }

    /// A short, scrubbed excerpt of the body, for status and decode errors.
    pub fn body_excerpt(&self) -> Option<&str> {
        match self {
            HttpError::Status { excerpt, .. } | HttpError::Decode { excerpt, .. } => Some(excerpt),
            _ => None,
        }
    }

    /// How many attempts were made (0 when the request never went out).
    pub fn attempts(&self) -> u32 {
        match self {
            HttpError::Status { attempts, .. }
            | HttpError::Transport { attempts, .. }
            | HttpError::Stopped { attempts, .. } => *attempts,
            _ => 0,
        }
    }

    /// True when some attempt may have reached the server and changed something we cannot see:
    /// a timeout or a dropped connection after the request was written, or a 5xx answer. A
    /// caller of a non-idempotent request must look up before trying again.
    pub fn maybe_processed(&self) -> bool {
        match self {
            HttpError::Status {
                maybe_processed, ..
            }
            | HttpError::Transport {
                maybe_processed, ..
            }
            | HttpError::Stopped {
                maybe_processed, ..
            } => *maybe_processed,
            _ => false,
        }
    }

    /// True when the failure is transient (the retry budget ran out on a retryable answer, or a
    /// non-idempotent request was stopped): a later run may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            HttpError::Transport { kind, .. } => *kind != TransportKind::TooLarge,
            // A write answered with a redirect goes wherever it goes on every try.
            HttpError::Status { status, .. } if status.is_redirection() => false,
            HttpError::Status { status, why, .. } => {
                why.is_some()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || (status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED)
            }
            _ => false,
        }
    }
}
