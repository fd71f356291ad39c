//! Write patterns several vendor writers share, written once: reading a failed request as a
//! refusal or the end of the run, settling a batch together, a delete for which 404 means
//! "done already", the `check()` probe, resending a create whose answer was lost only after a
//! fresh look shows it never happened, a read-modify-write that reads again after a `412`, and
//! a stack of chunks in which a refused chunk is put back as two halves.
//!
//! These sit on the writers' shared machinery ([`crate::sink`]) and know nothing of any
//! one vendor.

use std::future::Future;

use crate::sink::{
    Acks, Op, PayloadHash, Refusal, SendError, SendFailure, SinkError, Transport, WireRequest,
    WireResponse, WriteVerdict, verdict,
};

/// A failed request for records, read the standard way ([`verdict`]): the refusal to reject
/// them with, or (as `Err`, for `?`) the error that stops the run.
pub fn refusal(vendor: &'static str, err: SendError) -> Result<Refusal, SinkError> {
    match verdict(vendor, err) {
        WriteVerdict::Reject(refusal) => Ok(refusal),
        WriteVerdict::Fatal(fatal) => Err(fatal),
    }
}

/// Rejects every op with one refusal.
pub fn reject_all<'a>(
    ops: impl IntoIterator<Item = &'a Op>,
    refusal: &Refusal,
    payload: Option<PayloadHash>,
    acks: &Acks,
) {
    for op in ops {
        acks.rejected(op, refusal.clone(), payload);
    }
}

/// A failed request for one record: rejected with the vendor's answer, or fatal.
pub fn reject_one(
    vendor: &'static str,
    op: &Op,
    err: SendError,
    payload: Option<PayloadHash>,
    acks: &Acks,
) -> Result<(), SinkError> {
    acks.rejected(op, refusal(vendor, err)?, payload);
    Ok(())
}

/// A failed request for a batch sent as one request (all or nothing): every op rejected with
/// the vendor's answer, or fatal.
pub fn reject_batch(
    vendor: &'static str,
    batch: &[Op],
    err: SendError,
    payload: Option<PayloadHash>,
    acks: &Acks,
) -> Result<(), SinkError> {
    reject_all(batch, &refusal(vendor, err)?, payload, acks);
    Ok(())
}

/// `Sink::check` for a vendor with a cheap read: one request; refused credentials or an
/// unreachable vendor stop the run before anything is written, and any other failure (a 4xx on
/// an endpoint the key may not cover) is not a reason to stop before trying to write.
pub async fn probe(
    vendor: &'static str,
    transport: &dyn Transport,
    request: WireRequest,
) -> Result<(), SinkError> {
    match transport.send(request).await {
        Ok(_) => Ok(()),
        Err(err) => refusal(vendor, err).map(drop),
    }
}

/// How a delete ended, for a writer that keeps a map of what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Sent and accepted (`dry_run`: nothing was sent).
    Done {
        /// True in a dry run.
        dry_run: bool,
    },
    /// The vendor answered 404: it was gone already, and the op was skipped.
    Absent,
    /// Rejected (the op is settled).
    Refused,
}

/// Sends a delete for `op` and settles it: accepted; skipped with `absent()`'s reason when the
/// vendor answers 404 (gone already, which is what was asked); rejected; or fatal.
pub async fn delete(
    vendor: &'static str,
    transport: &dyn Transport,
    op: &Op,
    request: WireRequest,
    acks: &Acks,
    absent: impl FnOnce() -> String,
) -> Result<Deleted, SinkError> {
    match transport.send(request).await {
        Ok(response) => {
            acks.accepted(op, None);
            Ok(Deleted::Done {
                dry_run: response.dry_run,
            })
        }
        Err(err) if err.status == Some(404) => {
            acks.skipped(op, absent());
            Ok(Deleted::Absent)
        }
        Err(err) => {
            reject_one(vendor, op, err, None, acks)?;
            Ok(Deleted::Refused)
        }
    }
}

/// How often a create whose answer never came is sent again after a fresh look shows it was
/// not made: the HTTP engine's budget for requests that are safe to repeat.
pub const UNCONFIRMED_RESENDS: u32 = crate::http::DEFAULT_MAX_RETRIES;

/// True for a failure that may hide a write the vendor made: the request may have been
/// processed, and the retry budget ran out without an answer.
pub fn unconfirmed(err: &SendError) -> bool {
    err.maybe_processed && err.failure == SendFailure::Exhausted
}

/// What a fresh look found after a create's answer was lost.
#[derive(Debug)]
pub enum Looked<T> {
    /// Nothing: the create did not happen, so it may be sent again.
    Absent,
    /// What the create made (adopted as its answer).
    Found(T),
    /// Something else (several matches, a failed look): the create's error stands.
    Unsure,
}

/// How a create that is never repeated blindly ended.
#[derive(Debug)]
pub enum Created<T> {
    /// The vendor answered.
    Answered(WireResponse),
    /// The answer was lost, and a fresh look found what it made.
    Found(T),
    /// It failed (the last error; an unconfirmed one when the look was unsure).
    Failed(SendError),
}

/// Sends a create that must not be repeated blindly (a lost answer may hide what it made).
/// When its answer is lost ([`unconfirmed`]), `look` checks afresh (told whether a resend is
/// still allowed, so it may spare the look when it would only resend): what it finds is
/// adopted; a create that did not happen is sent again, at most [`UNCONFIRMED_RESENDS`] times.
/// `what` names it in the log. Refused credentials or an unreachable vendor are fatal.
pub async fn create_once<T, F, Fut>(
    vendor: &'static str,
    transport: &dyn Transport,
    request: &WireRequest,
    what: &str,
    mut look: F,
) -> Result<Created<T>, SinkError>
where
    F: FnMut(&SendError, bool) -> Fut,
    Fut: Future<Output = Result<Looked<T>, SinkError>>,
{
    let mut resent = 0;
    loop {
        let err = match transport.send(request.clone()).await {
            Ok(response) => return Ok(Created::Answered(response)),
            Err(err) => crate::sink::fatal_or(vendor, err)?,
        };
        if !unconfirmed(&err) {
            return Ok(Created::Failed(err));
        }
        match look(&err, resent < UNCONFIRMED_RESENDS).await? {
            Looked::Found(found) => return Ok(Created::Found(found)),
            Looked::Absent if resent < UNCONFIRMED_RESENDS => {
                resent += 1;
                tracing::info!(
                    "{vendor}: creating {what} was not confirmed ({}) and it does not exist; sending it again ({resent} of {UNCONFIRMED_RESENDS})",
                    err.message
                );
            }
            Looked::Absent | Looked::Unsure => return Ok(Created::Failed(err)),
        }
    }
}

/// How often a read-modify-write is tried when the vendor answers `412` (someone changed the
/// resource between the read and the write).
pub const PRECONDITION_ATTEMPTS: u32 = 2;

/// One read-modify-write: what it ended with, or a `412` (stale) to read and merge again.
#[derive(Debug)]
pub enum Attempt<T> {
    /// It ended (written, or settled otherwise).
    Done(T),
    /// The vendor answered `412` to the write sent with this payload.
    Stale(SendError, Option<PayloadHash>),
}

/// True for a `412 Precondition Failed`: the copy the write was merged into is stale.
pub fn stale(err: &SendError) -> bool {
    err.status == Some(412)
}

/// Runs a read-modify-write (`attempt`), reading and merging again after a `412`, up to
/// [`PRECONDITION_ATTEMPTS`] times; the last `412` is handed to `give_up`.
pub async fn reread_on_412<T, F, Fut, G>(attempt: F, give_up: G) -> Result<T, SinkError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Attempt<T>, SinkError>>,
    G: FnOnce(SendError, Option<PayloadHash>) -> Result<T, SinkError>,
{
    let mut attempts = 1;
    loop {
        match attempt().await? {
            Attempt::Done(done) => return Ok(done),
            Attempt::Stale(err, payload) if attempts >= PRECONDITION_ATTEMPTS => {
                return give_up(err, payload);
            }
            Attempt::Stale(..) => attempts += 1,
        }
    }
}

/// A chunk split into two halves (the first one larger when odd); `None` for a single item,
/// which cannot be split.
pub fn halves<T: Clone>(chunk: &[T]) -> Option<(Vec<T>, Vec<T>)> {
    if chunk.len() < 2 {
        return None;
    }
    let (a, b) = chunk.split_at(chunk.len().div_ceil(2));
    Some((a.to_vec(), b.to_vec()))
}

/// Chunks still to send, in order. A refused chunk can be put back whole or as two halves,
/// which are then sent next, so the items that are refused end up standing alone.
#[derive(Debug)]
pub struct Pending<T> {
    /// A stack: the next chunk is last.
    stack: Vec<Vec<T>>,
}

impl<T: Clone> Pending<T> {
    /// `items` in chunks of at most `size` (at least 1).
    pub fn chunks(items: &[T], size: usize) -> Self {
        Pending::of(items.chunks(size.max(1)).map(<[T]>::to_vec).collect())
    }

    /// These chunks, in this order.
    pub fn of(mut chunks: Vec<Vec<T>>) -> Self {
        chunks.reverse();
        Pending { stack: chunks }
    }

    /// The next chunk to send.
    pub fn next_chunk(&mut self) -> Option<Vec<T>> {
        self.stack.pop()
    }

    /// Sends `chunk` next (nothing when it is empty).
    pub fn put_back(&mut self, chunk: Vec<T>) {
        if !chunk.is_empty() {
            self.stack.push(chunk);
        }
    }

    /// Sends `chunk` next as two halves, the first half first; false (and nothing put back)
    /// when it holds one item.
    pub fn halve(&mut self, chunk: &[T]) -> bool {
        match halves(chunk) {
            Some((first, second)) => {
                self.stack.push(second);
                self.stack.push(first);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_split_until_one_item_is_left() {
        assert_eq!(halves(&[1]), None);
        assert_eq!(halves(&[1, 2, 3]), Some((vec![1, 2], vec![3])));
        let mut pending = Pending::chunks(&[1, 2, 3, 4, 5], 4);
        let first = pending.next_chunk().unwrap();
        assert_eq!(first, vec![1, 2, 3, 4]);
        assert!(pending.halve(&first));
        assert_eq!(pending.next_chunk(), Some(vec![1, 2]));
        assert!(!pending.halve(&[9]));
        pending.put_back(vec![]);
        assert_eq!(pending.next_chunk(), Some(vec![3, 4]));
        assert_eq!(pending.next_chunk(), Some(vec![5]));
        assert_eq!(pending.next_chunk(), None);
    }

    #[tokio::test]
    async fn a_412_reads_again_once_then_gives_up() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let tries = AtomicU32::new(0);
        let err = || SendError {
            failure: SendFailure::Refused,
            status: Some(412),
            body_excerpt: None,
            message: "stale".into(),
            maybe_processed: false,
        };
        let out = reread_on_412(
            || async {
                tries.fetch_add(1, Ordering::Relaxed);
                Ok(Attempt::<&str>::Stale(err(), None))
            },
            |e, _| Ok(if stale(&e) { "gave up" } else { "?" }),
        )
        .await;
        assert_eq!(out.ok(), Some("gave up"));
        assert_eq!(tries.load(Ordering::Relaxed), PRECONDITION_ATTEMPTS);
    }
}
