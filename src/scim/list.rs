//! Listing SCIM resources (RFC 7644 §3.4.2): one page at a time, by `startIndex` and `count`.
//!
//! - The next `startIndex` advances by the number of resources that actually came back, because
//!   servers cap `count` without saying so; a listing ends on an empty page or once
//!   `totalResults` is reached ([`crate::http::paginate::scim::next_start_index`]).
//! - Offset paging is not a snapshot: a resource created or deleted between two pages shifts the
//!   rest, so one can come twice. [`Dedupe`] remembers the ids already seen.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};

use serde_json::Value;

use super::ACCEPT;
use crate::http::paginate::scim::{self as paging, FIRST_INDEX};
use crate::http::{HttpClient, HttpError};

/// Resources asked for per page: what Okta asks for, and a round trip's worth of work.
pub const PAGE_SIZE: u64 = 100;

/// One page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery<'a> {
    /// `/Users` or `/Groups`.
    pub path: &'a str,
    /// 1-based `startIndex`.
    pub start: u64,
    /// `count`.
    pub count: u64,
    /// A `filter` expression, if any.
    pub filter: Option<&'a str>,
    /// `excludedAttributes`, if any (`members`, to keep group pages small).
    pub excluded: Option<&'a str>,
}

/// One page that came back.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedPage {
    /// Its resources, as sent.
    pub resources: Vec<Value>,
    /// `totalResults`, if the server said.
    pub total_results: Option<u64>,
    /// The next `startIndex`; `None` when the listing is complete.
    pub next: Option<u64>,
}

/// Why a page could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The answer is not a `ListResponse`.
    #[error("{url}: not a SCIM ListResponse: {detail}")]
    Decode {
        /// The URL asked (no credentials).
        url: String,
        /// What is wrong.
        detail: String,
    },
}

/// Fetches one page.
pub async fn list_page(
    client: &HttpClient,
    query: &ListQuery<'_>,
) -> Result<ListedPage, ListError> {
    let start = query.start.max(FIRST_INDEX);
    let mut request = client
        .get(query.path)
        .header("accept", ACCEPT)
        .query("startIndex", start.to_string())
        .query("count", query.count.to_string());
    if let Some(filter) = query.filter {
        request = request.query("filter", filter);
    }
    if let Some(excluded) = query.excluded {
        request = request.query("excludedAttributes", excluded);
    }
    let response = request.send().await?;
    let page = paging::parse(&response.body).map_err(|err| ListError::Decode {
        url: response.url.to_string(),
        detail: err.to_string(),
    })?;
    Ok(ListedPage {
        next: paging::next_start_index(start, &page),
        total_results: page.total_results,
        resources: page.resources,
    })
}

/// A stored `startIndex`: a number, or a numeric string (below 1 reads as 1).
pub fn start_index(value: &Value) -> Option<u64> {
    let n = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(n.max(FIRST_INDEX))
}

/// The ids a listing has already had, as 128-bit hashes (about 20 bytes each, so a million
/// resources cost some 20 MB; a collision is as likely as guessing a random UUID).
#[derive(Debug)]
pub struct Dedupe {
    keys: (RandomState, RandomState),
    ids: HashSet<u128>,
}

impl Default for Dedupe {
    fn default() -> Self {
        Self {
            keys: (RandomState::new(), RandomState::new()),
            ids: HashSet::new(),
        }
    }
}

impl Dedupe {
    /// True the first time `id` is seen.
    pub fn first(&mut self, id: &str) -> bool {
        let hash =
            (u128::from(self.keys.0.hash_one(id)) << 64) | u128::from(self.keys.1.hash_one(id));
        self.ids.insert(hash)
    }

    /// How many ids it holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn seen_ids_are_remembered() {
        let mut seen = Dedupe::default();
        assert!(seen.first("a"));
        assert!(seen.first("b"));
        assert!(!seen.first("a"));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn stored_start_indexes_are_read_leniently() {
        assert_eq!(start_index(&json!(101)), Some(101));
        assert_eq!(start_index(&json!("201")), Some(201));
        assert_eq!(start_index(&json!(0)), Some(1));
        assert_eq!(start_index(&json!("u9")), None);
        assert_eq!(start_index(&json!({"x": 1})), None);
    }
}
