//! The tap's side of the vendor contract: what a listable vendor implements.
//!
//! A vendor gives the tap a [`Source`]: one cheap authenticated call for `--test`, and its
//! [`Listing`]s in sync order. A listing is one paged endpoint (Userflow `/users`, SCIM
//! `/Groups`, Guru's per-group member lists taken together). It may feed more than one stream:
//! the Userflow users listing yields `users` and, from `expand=memberships`, `memberships`;
//! the SCIM groups listing yields `groups` and, from `Group.members`, `memberships`.
//!
//! A listing pages with an opaque cursor (a JSON value the engine stores in the state as
//! `next_page` and hands back on resume) and streams [`Page`]s. The engine does the rest:
//! selection, SCHEMA/RECORD/STATE, prefetching, resume and the summary. Retries, backoff and
//! rate limits live in the HTTP engine, so no vendor writes its own.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde_json::Value;

use crate::config::ConfigError;
use crate::config::Resolved;
use crate::exit::ExitStatus;
use crate::http::HttpError;
use crate::model::Object;

/// Builds a vendor's source from its checked config.
pub type SourceFactory = fn(&Resolved) -> Result<Box<dyn Source>, SourceError>;

/// A vendor the tap can read.
#[async_trait::async_trait]
pub trait Source: Send + Sync + fmt::Debug {
    /// One cheap authenticated call: `Ok` when the vendor answered and accepted the
    /// credentials.
    async fn check(&self) -> Result<(), SourceError>;

    /// The vendor's listings, in the order a sync runs them.
    fn listings(&self) -> Vec<Arc<dyn Listing>>;

    /// True when the server can filter the listings of
    /// [`crate::tap::select::incremental_streams`] by modification time in this run (a SCIM
    /// server's ServiceProviderConfig may say it cannot); asked once, before the first listing,
    /// and only when a catalog asks for INCREMENTAL. False by default.
    async fn filters_now(&self) -> Result<bool, SourceError> {
        Ok(false)
    }

    /// The `attributes` keys the vendor declares, per stream, with each one's column schema
    /// (for schema flattening). Empty for vendors without attribute definitions.
    async fn attribute_schemas(
        &self,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Map<String, Value>>, SourceError>
    {
        Ok(std::collections::BTreeMap::new())
    }
}

/// One paged endpoint, feeding one or more streams.
pub trait Listing: Send + Sync + fmt::Debug {
    /// The streams it feeds, the main one first (the one `currently_syncing` names).
    fn streams(&self) -> &'static [&'static str];

    /// The main stream: the one errors and `currently_syncing` name.
    fn main_stream(&self) -> &'static str {
        self.streams().first().copied().unwrap_or_default()
    }

    /// Streams its pages from `request.start` (or from the beginning). The first page always
    /// comes, even when empty; the last page has `next: None`.
    ///
    /// When `request.start` came from a stored state and the vendor refuses it (a deleted
    /// Userflow id, an expired Guru token), the first item is [`SourceError::CursorRejected`]
    /// and the engine starts the listing over.
    fn pages(self: Arc<Self>, request: ListRequest) -> PageStream;
}

/// The pages of a listing, in order.
pub type PageStream = BoxStream<'static, Result<Page, SourceError>>;

/// What the engine asks of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    /// Where to start: a cursor from a stored state, or `None` for the beginning.
    pub start: Option<Value>,
    /// The streams the engine will emit; a listing skips work for the others (no
    /// `expand=memberships` when memberships are not wanted, say).
    pub wanted: Vec<&'static str>,
    /// INCREMENTAL: list only what changed after this instant (RFC 3339); only asked of a
    /// listing whose main stream is among [`crate::tap::select::incremental_streams`].
    pub since: Option<String>,
}

impl ListRequest {
    /// True when `stream` is wanted.
    pub fn wants(&self, stream: &str) -> bool {
        self.wanted.contains(&stream)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Its records, in the order the vendor sent them.
    pub records: Vec<Emit>,
    /// The cursor of the next page; `None` when this page was the last.
    pub next: Option<Value>,
    /// When the vendor's answer arrived (`time_extracted`).
    pub extracted_at: DateTime<Utc>,
    /// Resources the vendor sent that could not be made into records, with why. The engine
    /// warns about each and counts them; they are never dropped silently.
    pub skipped: Vec<Skipped>,
    /// Resources of the listing's main stream left out because an earlier page of this run
    /// already had them (SCIM offset paging shifts when data changes between pages).
    pub duplicates: u64,
    /// Records a listing wrote as JSON text (see [`Emit::rendered`]), back to back.
    pub rendered: Vec<u8>,
}

impl Page {
    /// An empty page that ends the listing.
    pub fn last(extracted_at: DateTime<Utc>) -> Self {
        Self {
            records: Vec::new(),
            next: None,
            extracted_at,
            skipped: Vec::new(),
            duplicates: 0,
            rendered: Vec::new(),
        }
    }
}

/// A vendor resource that could not be made into a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// The stream it was meant for.
    pub stream: &'static str,
    /// Why, naming the resource and the field (e.g. `user without an id: {…}`).
    pub reason: String,
}

impl Skipped {
    /// A skipped resource of `stream`.
    pub fn new(stream: &'static str, reason: impl Into<String>) -> Self {
        Self {
            stream,
            reason: reason.into(),
        }
    }
}

/// One record for one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// The stream (one of the listing's [`Listing::streams`]).
    pub stream: &'static str,
    /// The record, built with [`crate::model::RecordBuilder`]; empty when it is `rendered`.
    pub record: Object,
    /// Where the page's `rendered` text holds the record as a JSON object instead: the same
    /// object, keys in the same order, that `record` would serialise to (the Userflow users
    /// listing's fast path).
    pub rendered: Option<std::ops::Range<usize>>,
}

impl Emit {
    /// A record for `stream`.
    pub fn new(stream: &'static str, record: Object) -> Self {
        Self {
            stream,
            record,
            rendered: None,
        }
    }
}

/// Why reading a vendor failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The config cannot make a source (missing credentials, a bad base URL).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP engine gave up (its message names the vendor, the method and the URL).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The vendor refused a cursor from the stored state.
    #[error("stream {stream}: the vendor rejected the stored cursor {cursor}: {detail}")]
    CursorRejected {
        /// The listing's main stream.
        stream: &'static str,
        /// The cursor, as stored.
        cursor: String,
        /// What the vendor said.
        detail: String,
    },
    /// The vendor answered with something that is not the listing it should be.
    #[error("stream {stream}: {url}: unexpected response: {detail}")]
    Decode {
        /// The listing's main stream.
        stream: &'static str,
        /// The URL asked (no credentials).
        url: String,
        /// What is wrong.
        detail: String,
    },
    /// A cursor from the state has a shape this listing never writes.
    #[error("stream {stream}: the state's next_page {cursor} is not a cursor of this listing")]
    BadCursor {
        /// The listing's main stream.
        stream: &'static str,
        /// The cursor, as stored.
        cursor: String,
    },
    /// The vendor's paging went in a circle (the same cursor twice).
    #[error("stream {stream}: the vendor sent the same next page twice ({cursor}); stopping")]
    Loop {
        /// The listing's main stream.
        stream: &'static str,
        /// The repeated cursor.
        cursor: String,
    },
}

impl ExitStatus for SourceError {
    fn exit_code(&self) -> u8 {
        match self {
            SourceError::Config(_) => 2,
            SourceError::Http(HttpError::Build { .. } | HttpError::InvalidUrl { .. }) => 2,
            _ => 1,
        }
    }
}

/// A page of a cursor chain: it names the cursor of the page after it (`None`: the last).
pub trait Chained {
    /// The next page's cursor.
    fn next_cursor(&self) -> Option<Value>;
}

impl Chained for Page {
    fn next_cursor(&self) -> Option<Value> {
        self.next.clone()
    }
}

/// A listing whose pages come one after another, each from the cursor the previous one gave.
///
/// `fetch(cursor, from_state)` reads one page; `from_state` is true for the first request of a
/// listing resumed from a stored cursor, so the vendor can turn a refusal into
/// [`SourceError::CursorRejected`]. The stream ends after the page whose `next` is `None`, or
/// after the first error.
pub fn sequential<T, F, Fut>(
    request: &ListRequest,
    fetch: F,
) -> BoxStream<'static, Result<T, SourceError>>
where
    T: Chained + Send + 'static,
    F: Fn(Option<Value>, bool) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, SourceError>> + Send + 'static,
{
    let from_state = request.start.is_some();
    let first = (Some(request.start.clone()), from_state);
    let fetch = Arc::new(fetch);
    Box::pin(futures::stream::unfold(
        first,
        move |(cursor, from_state)| {
            let fetch = fetch.clone();
            async move {
                let cursor = cursor?;
                match fetch(cursor, from_state).await {
                    Ok(page) => {
                        let next = page.next_cursor().map(Some);
                        Some((Ok(page), (next, false)))
                    }
                    Err(err) => Some((Err(err), (None, false))),
                }
            }
        },
    ))
}

/// A cursor for error messages: strings bare, anything else as JSON.
pub fn cursor_text(cursor: &Value) -> String {
    match cursor {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::vendors::REGISTRY;

    #[test]
    fn every_vendor_that_reads_has_a_source_and_only_those() {
        for spec in REGISTRY {
            assert_eq!(spec.source.is_some(), spec.listable(), "{}", spec.name);
            for stream in spec.reads {
                assert!(
                    crate::model::TAP_STREAMS.iter().any(|d| d.name == *stream),
                    "{}: {stream} is not a tap stream of the model",
                    spec.name
                );
            }
        }
    }
}
