//! Outcomes: why a record was not written ([`Refusal`]), how it ended ([`Outcome`],
//! [`Settlement`]), where a sink settles it ([`Acks`]), and the standard reading of a failed
//! request ([`verdict`] → [`WriteVerdict`], [`fatal_or`], [`send_and_settle`]).

use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use super::SinkError;
use super::hash::PayloadHash;
use super::plan::{Op, Origin, Ticket};
use super::transport::Transport;
use super::wire::{SendError, SendFailure, WireRequest, WireResponse};

/// Why a record cannot be (or was not) written. Becomes a reject-file entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    /// What is wrong, naming the field or the vendor's answer.
    pub reason: String,
    /// The vendor's HTTP status, when the vendor refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_status: Option<u16>,
    /// An excerpt of the vendor's answer, when the vendor refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor_body: Option<String>,
    /// True when the vendor kept failing (retry budget spent) rather than refusing: many in a
    /// row mean the vendor is down, and the engine stops the run.
    #[serde(skip)]
    pub transient: bool,
}

impl Refusal {
    /// A refusal by roster itself (validation, vendor rules known in advance).
    pub fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
            vendor_status: None,
            vendor_body: None,
            transient: false,
        }
    }

    /// A refusal by the vendor.
    pub fn vendor(reason: impl Into<String>, status: Option<u16>, body: Option<String>) -> Self {
        Refusal {
            reason: reason.into(),
            vendor_status: status,
            vendor_body: body,
            transient: false,
        }
    }

    /// A record that could not be written because a request it needed (a lookup, say) failed:
    /// the vendor's status and body, and transient when the retry budget ran out, so a vendor
    /// that fails everything still counts as unreachable.
    pub fn failed(reason: impl Into<String>, err: &SendError) -> Self {
        Refusal {
            transient: err.failure == SendFailure::Exhausted,
            ..Refusal::vendor(reason, err.status, err.body_excerpt.clone())
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if let Some(status) = self.vendor_status {
            write!(f, " (vendor answered {status}")?;
            if let Some(body) = self.vendor_body.as_deref().filter(|b| !b.is_empty()) {
                write!(f, ": {body}")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// How a record ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The vendor accepted it.
    Accepted,
    /// Nothing needed sending (already so at the vendor, or nothing roster can send for it):
    /// the reason says which.
    Skipped(String),
    /// It was not written: the refusal says why.
    Rejected(Refusal),
}

/// One settled record, as the engine receives it.
#[derive(Debug, Clone)]
pub struct Settlement {
    /// Which record.
    pub ticket: Ticket,
    /// How it ended.
    pub outcome: Outcome,
    /// The hash of the payload sent for it, when something was sent.
    pub payload: Option<PayloadHash>,
    /// The original record: needed for a reject (the engine keeps nothing once it hands an op
    /// over); optional otherwise.
    pub origin: Option<Arc<Origin>>,
}

/// Where a sink settles its ops. Cheap to clone; a sink that settles later keeps a clone.
#[derive(Debug, Clone)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Settlement>,
}

impl Acks {
    /// Acks that deliver to `tx` (the engine; tests).
    pub fn new(tx: mpsc::UnboundedSender<Settlement>) -> Self {
        Acks { tx }
    }

    /// Acks and the receiving end, for tests and for sinks that stage settlements.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Settlement>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Acks { tx }, rx)
    }

    /// Settles one record. A closed engine (the run is stopping) is not an error.
    pub fn settle(&self, settlement: Settlement) {
        let _ = self.tx.send(settlement);
    }

    /// The vendor accepted `op`; `payload` is the hash of what was sent for it.
    pub fn accepted(&self, op: &Op, payload: Option<PayloadHash>) {
        self.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Accepted,
            payload,
            origin: None,
        });
    }

    /// Nothing needed sending for `op`.
    pub fn skipped(&self, op: &Op, reason: impl Into<String>) {
        self.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Skipped(reason.into()),
            payload: None,
            origin: None,
        });
    }

    /// `op` was not written.
    pub fn rejected(&self, op: &Op, refusal: Refusal, payload: Option<PayloadHash>) {
        self.settle(Settlement {
            ticket: op.ticket,
            outcome: Outcome::Rejected(refusal),
            payload,
            origin: Some(op.origin.clone()),
        });
    }
}

/// What a writer does with a failed request: settle the op or stop the run.
#[derive(Debug)]
pub enum WriteVerdict {
    /// Reject the record with this refusal; the run goes on.
    Reject(Refusal),
    /// Stop the run.
    Fatal(SinkError),
}

/// The standard reading of a failed request for a record (DESIGN.md, "Reliability model"):
/// refused credentials and an unreachable vendor are fatal; a refusal, a spent retry budget and
/// a local failure reject the record with the vendor's status and body excerpt.
pub fn verdict(vendor: &'static str, err: SendError) -> WriteVerdict {
    match err.failure {
        SendFailure::Credentials => WriteVerdict::Fatal(SinkError::Credentials {
            vendor,
            detail: err.message,
        }),
        SendFailure::Unreachable => WriteVerdict::Fatal(SinkError::Unreachable {
            vendor,
            detail: err.message,
        }),
        SendFailure::Refused | SendFailure::Local => WriteVerdict::Reject(Refusal::vendor(
            format!("{vendor} refused the request: {}", err.message),
            err.status,
            err.body_excerpt,
        )),
        SendFailure::Exhausted => {
            let reason = if err.status.is_some_and(|s| (200..300).contains(&s)) {
                format!(
                    "{vendor} did not confirm the request in the shape it documents (replay this record if it is missing): {}",
                    err.message
                )
            } else if err.maybe_processed && err.status.is_none_or(|s| s >= 500) {
                format!(
                    "{vendor} did not confirm the request and it was not repeated, since repeating it could duplicate it (replay this record if it is missing): {}",
                    err.message
                )
            } else {
                format!(
                    "{vendor} kept failing past the retry budget: {}",
                    err.message
                )
            };
            let mut refusal = Refusal::vendor(reason, err.status, err.body_excerpt);
            refusal.transient = true;
            WriteVerdict::Reject(refusal)
        }
    }
}

/// A failed request a writer handles itself (a lookup, a 404, a 409): refused credentials and
/// an unreachable vendor stay fatal, anything else comes back to the writer.
pub fn fatal_or(vendor: &'static str, err: SendError) -> Result<SendError, SinkError> {
    match err.failure {
        SendFailure::Credentials => Err(SinkError::Credentials {
            vendor,
            detail: err.message,
        }),
        SendFailure::Unreachable => Err(SinkError::Unreachable {
            vendor,
            detail: err.message,
        }),
        _ => Ok(err),
    }
}

/// Sends one request for `op` and settles it: accepted (with the body's payload hash) on
/// success, rejected when the vendor refused it or the retry budget ran out. `Ok(Some)` holds
/// the answer of an accepted request; `Err` is fatal (refused credentials, vendor unreachable).
pub async fn send_and_settle(
    vendor: &'static str,
    transport: &dyn Transport,
    op: &Op,
    mut request: WireRequest,
    acks: &Acks,
) -> Result<Option<WireResponse>, SinkError> {
    // A JSON body is serialised once: sent, hashed (and shown by a dry run) as the same bytes.
    let payload = request.encode_body();
    match transport.send(request).await {
        Ok(response) => {
            acks.accepted(op, payload);
            Ok(Some(response))
        }
        Err(err) => match verdict(vendor, err) {
            WriteVerdict::Reject(refusal) => {
                acks.rejected(op, refusal, payload);
                Ok(None)
            }
            WriteVerdict::Fatal(fatal) => Err(fatal),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(failure: SendFailure, status: Option<u16>, maybe: bool) -> SendError {
        SendError {
            failure,
            status,
            body_excerpt: Some("{\"error\":\"x\"}".into()),
            message: "POST /users answered".into(),
            maybe_processed: maybe,
        }
    }

    #[test]
    fn verdicts_follow_the_reliability_model() {
        assert!(matches!(
            verdict("userflow", err(SendFailure::Credentials, Some(401), false)),
            WriteVerdict::Fatal(SinkError::Credentials { .. })
        ));
        assert!(matches!(
            verdict("userflow", err(SendFailure::Unreachable, None, true)),
            WriteVerdict::Fatal(SinkError::Unreachable { .. })
        ));
        let WriteVerdict::Reject(r) =
            verdict("userflow", err(SendFailure::Refused, Some(422), false))
        else {
            panic!()
        };
        assert_eq!(r.vendor_status, Some(422));
        assert_eq!(r.vendor_body.as_deref(), Some("{\"error\":\"x\"}"));
        let WriteVerdict::Reject(r) =
            verdict("appcues", err(SendFailure::Exhausted, Some(500), true))
        else {
            panic!()
        };
        assert!(r.reason.contains("could duplicate"), "{}", r.reason);
        let WriteVerdict::Reject(r) =
            verdict("appcues", err(SendFailure::Exhausted, Some(429), false))
        else {
            panic!()
        };
        assert!(r.reason.contains("retry budget"), "{}", r.reason);
    }

    #[test]
    fn refusals_print_the_vendor_answer() {
        let r = Refusal::vendor("rejected", Some(400), Some("bad id".into()));
        assert_eq!(r.to_string(), "rejected (vendor answered 400: bad id)");
        assert_eq!(Refusal::new("no id").to_string(), "no id");
    }
}
