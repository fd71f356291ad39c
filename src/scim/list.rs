//! Listing SCIM resources (RFC 7644 §3.4.2): one page at a time, by `startIndex` and `count`.
//!
//! - The next `startIndex` advances by the number of resources that actually came back, because
//!   servers cap `count` without saying so; a listing ends on an empty page or once
//!   `totalResults` is reached ([`crate::http::paginate::scim::next_start_index`]).
//! - Offset paging is not a snapshot: a resource created or deleted between two pages shifts the
//!   rest, so one can come twice, and one deleted before the current index makes the next one
//!   slip past unseen. So each next page starts [`overlap`] resources early, and the last ids
//!   of the page before ([`Cursor::after`], kept in the bookmark too, so a resume checks the
//!   same way) must be found in it; the resources after the last one found are its successors,
//!   whatever was deleted meanwhile. [`Dedupe`] drops what comes twice. A page where none is
//!   found (more deletions than the overlap), or a pass that saw fewer distinct ids than
//!   `totalResults`, is followed by a fill pass from index 1 (still deduplicated), at most
//!   [`MAX_FILL_PASSES`] times ([`Pass`]). A page that repeats the previous page exactly at
//!   another `startIndex` means the server ignores `startIndex`: an error, never a short
//!   listing that looks complete.
//!
//! Both binaries page through [`Pass`]: the tap one page per STATE (its bookmark is the
//! [`Cursor`]), the target's SCIM directory a whole listing at once through [`read_all`] (the
//! index it looks resources up in when the server takes no filters). Only the fetching differs
//! (the tap's `HttpClient`, the writer's `Transport`); the query ([`ListQuery`]) and the paging
//! rules are these.

use std::future::Future;

use serde_json::Value;

use super::ACCEPT;
pub use super::dedupe::Dedupe;
use crate::http::paginate::scim::{self as paging, FIRST_INDEX};
use crate::http::{HttpClient, HttpError};

/// Resources asked for per page: what Okta asks for, and a round trip's worth of work.
pub const PAGE_SIZE: u64 = 100;

/// Most resources re-read at the start of each next page: a tenth of the page (10 of 100 costs
/// 10% more reading), so up to that many deletions between two pages are bridged in place.
pub const MAX_OVERLAP: u64 = 10;

/// Fill passes after a pass that could not prove it missed nothing; each reads the listing
/// again from index 1, so more than two means the directory changes faster than it is read.
pub const MAX_FILL_PASSES: u32 = 2;

/// How many resources each next page re-reads for a page size of `count`.
pub fn overlap(count: u64) -> u64 {
    (count / 10).clamp(1, MAX_OVERLAP)
}

/// Where the next page of a pass starts: the bookmark.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    /// 1-based `startIndex` to ask for (already moved back by the overlap).
    pub start: u64,
    /// The last ids of the page before (the anchors the next page must hold one of).
    pub after: Vec<String>,
    /// 0 for the first pass, then the number of the fill pass.
    pub fill: u32,
    /// False for a bare `startIndex` bookmark (older roster versions): nothing to check it by.
    pub anchored: bool,
}

impl Cursor {
    /// The first page of the first pass.
    pub fn first() -> Self {
        Cursor {
            start: FIRST_INDEX,
            after: Vec::new(),
            fill: 0,
            anchored: true,
        }
    }

    /// A stored bookmark: `{"start_index", "after", "fill"}`, or a bare `startIndex` (a number
    /// or a numeric string; below 1 reads as 1).
    pub fn parse(value: &Value) -> Option<Self> {
        match value {
            Value::Object(o) => Some(Cursor {
                start: start_index(o.get("start_index")?)?,
                after: match o.get("after") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect::<Option<_>>()?,
                    Some(_) => return None,
                },
                fill: match o.get("fill") {
                    None | Some(Value::Null) => 0,
                    Some(v) => u32::try_from(v.as_u64()?).ok()?,
                },
                anchored: true,
            }),
            other => Some(Cursor {
                start: start_index(other)?,
                after: Vec::new(),
                fill: 0,
                anchored: false,
            }),
        }
    }

    /// As stored in the state's `next_page`.
    pub fn to_value(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("start_index".into(), Value::from(self.start));
        o.insert(
            "after".into(),
            Value::Array(self.after.iter().cloned().map(Value::String).collect()),
        );
        if self.fill > 0 {
            o.insert("fill".into(), Value::from(self.fill));
        }
        Value::Object(o)
    }

    /// True for the first page of a pass (the first or a fill pass).
    pub fn starts_pass(&self) -> bool {
        self.start <= FIRST_INDEX && self.after.is_empty()
    }
}

/// What one listing remembers between its pages in this process.
#[derive(Debug, Default)]
pub struct Pass {
    /// Every id had in this process (across fill passes).
    pub seen: Dedupe,
    /// The previous page's ids and the index it was asked at (the repeat check).
    previous: Vec<String>,
    previous_start: u64,
    /// The previous page's `totalResults`.
    last_total: Option<u64>,
    /// Some page of this pass could not be placed after the one before.
    unsure: bool,
    /// This pass started at index 1 in this process, so `seen` can be checked against
    /// `totalResults`.
    from_first: bool,
}

/// What [`Pass::page`] decided about one page.
#[derive(Debug, Clone, PartialEq)]
pub struct PageVerdict {
    /// Positions (in the page) of resources to emit: first seen in this process.
    pub emit: Vec<usize>,
    /// Resources left out as seen before, beyond the overlap and fill passes that re-read on
    /// purpose.
    pub duplicates: u64,
    /// The next page's cursor; `None` when the listing is complete.
    pub next: Option<Cursor>,
    /// A warning for the log (a fill pass begins, or the listing could not be confirmed).
    pub note: Option<String>,
}

/// Why a page cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    /// The server answered the same resources at another `startIndex`.
    #[error(
        "startIndex {start} answered the same {count} resources as startIndex {previous}: the server ignores startIndex, so the listing cannot be read past its first page"
    )]
    IgnoresStartIndex {
        /// The index asked.
        start: u64,
        /// The index of the page it repeats.
        previous: u64,
        /// How many resources.
        count: usize,
    },
    /// After every fill pass, fewer distinct resources than `totalResults`.
    #[error(
        "read {seen} distinct resources but the server counts {total} (totalResults), even after {fills} passes from the start: the listing changes faster than it can be read, or the server's paging skips resources"
    )]
    Short {
        /// Distinct ids read.
        seen: u64,
        /// The last `totalResults`.
        total: u64,
        /// Fill passes made.
        fills: u32,
    },
}

impl Pass {
    /// Places one page that `cursor` asked for (`ids`: its resources' ids in order, `None` for
    /// a resource without one; `listed_next`: the next `startIndex` by what came back; `total`:
    /// `totalResults`; `count`: the page size asked) and says what to emit and where to go next.
    pub fn page(
        &mut self,
        cursor: &Cursor,
        ids: &[Option<String>],
        listed_next: Option<u64>,
        total: Option<u64>,
        count: u64,
    ) -> Result<PageVerdict, PassError> {
        if cursor.starts_pass() {
            self.from_first = true;
            self.unsure = false;
            self.previous.clear();
            self.last_total = None;
        }
        let page_ids: Vec<String> = ids.iter().flatten().cloned().collect();
        self.refuse_a_repeated_page(cursor, &page_ids)?;
        let aligned = self.align(cursor, ids, total);
        let (emit, duplicates) = self.new_on_the_page(cursor, ids, aligned);
        self.previous = page_ids;
        self.previous_start = cursor.start;
        let seen = self.seen.len() as u64;
        let short = self.from_first && total.is_some_and(|t| seen < t);
        // `totalResults` reached by index, but fewer distinct resources read than it counts:
        // the pages shifted later (a resource created before the index), so read on until an
        // empty page before deciding anything.
        let listed_next = listed_next
            .or_else(|| (short && !ids.is_empty()).then(|| cursor.start + ids.len() as u64));
        let mut verdict = PageVerdict {
            emit,
            duplicates,
            next: None,
            note: None,
        };
        if let Some(next) = listed_next {
            verdict.next = Some(self.overlapping(cursor, next, count));
            return Ok(verdict);
        }
        if !(self.unsure || short) {
            return Ok(verdict);
        }
        self.at_an_unsure_end(cursor, verdict, short.then_some(total.unwrap_or_default()))
    }

    /// A page that repeats the previous page's ids at another index: the server ignores
    /// `startIndex`, and reading on would never end or never see the rest.
    fn refuse_a_repeated_page(
        &self,
        cursor: &Cursor,
        page_ids: &[String],
    ) -> Result<(), PassError> {
        if cursor.start > FIRST_INDEX
            && !page_ids.is_empty()
            && page_ids == self.previous.as_slice()
            && self.previous_start != cursor.start
        {
            return Err(PassError::IgnoresStartIndex {
                start: cursor.start,
                previous: self.previous_start,
                count: page_ids.len(),
            });
        }
        Ok(())
    }

    /// Where the page meets the overlap: the last anchor found (everything after it is its
    /// successors now). A page that should hold an anchor and does not makes the pass unsure.
    fn align(
        &mut self,
        cursor: &Cursor,
        ids: &[Option<String>],
        total: Option<u64>,
    ) -> Option<usize> {
        let aligned = if cursor.after.is_empty() {
            None
        } else {
            ids.iter()
                .rposition(|id| id.as_ref().is_some_and(|id| cursor.after.contains(id)))
        };
        // A bare startIndex from an older bookmark has nothing to check the page by; it starts
        // the overlap early and is taken as it comes.
        // An empty page holds no anchor either: that is the end of the listing, unless the
        // total shrank meanwhile (deletions may have moved unread resources before the index).
        let shrank = total
            .zip(self.last_total)
            .is_some_and(|(now, before)| now < before);
        if !cursor.after.is_empty() && aligned.is_none() && (!ids.is_empty() || shrank) {
            self.unsure = true;
        }
        self.last_total = total;
        aligned
    }

    /// The positions on the page to emit (not seen before in this pass), and how many were
    /// duplicates the server should not have sent (outside the overlap and a fill pass).
    fn new_on_the_page(
        &mut self,
        cursor: &Cursor,
        ids: &[Option<String>],
        aligned: Option<usize>,
    ) -> (Vec<usize>, u64) {
        let mut emit = Vec::with_capacity(ids.len());
        let mut duplicates = 0;
        for (i, id) in ids.iter().enumerate() {
            match id {
                Some(id) if !self.seen.first(id) => {
                    // A fill pass re-reads on purpose; so does the overlap.
                    if cursor.fill == 0 && aligned.is_none_or(|a| i > a) {
                        duplicates += 1;
                    }
                }
                _ => emit.push(i),
            }
        }
        (emit, duplicates)
    }

    /// The next page, starting `overlap(count)` resources early with the page's last ids as
    /// its anchors.
    fn overlapping(&self, cursor: &Cursor, next: u64, count: u64) -> Cursor {
        let keep = overlap(count);
        let after: Vec<String> = self
            .previous
            .iter()
            .rev()
            .take(keep as usize)
            .rev()
            .cloned()
            .collect();
        Cursor {
            start: next.saturating_sub(keep).max(cursor.start + 1),
            after,
            fill: cursor.fill,
            anchored: true,
        }
    }

    /// The listing ended, but fewer distinct resources were read than the server counts
    /// (`short_of`: its total), or it shifted by more than the overlap: read it again from the
    /// start, leaving out what was read, up to `MAX_FILL_PASSES` times; then fail (short) or
    /// say what may be missing.
    fn at_an_unsure_end(
        &self,
        cursor: &Cursor,
        mut verdict: PageVerdict,
        short_of: Option<u64>,
    ) -> Result<PageVerdict, PassError> {
        let seen = self.seen.len() as u64;
        let why = match short_of {
            Some(total) => format!("{seen} distinct resources read but the server counts {total}"),
            None => "the listing shifted under the read by more than the overlap (resources deleted meanwhile)".to_string(),
        };
        if cursor.fill < MAX_FILL_PASSES {
            verdict.note = Some(format!(
                "{why}: reading the listing again from the start to fill the gap (pass {} of at most {}), leaving out what was read already",
                cursor.fill + 2,
                MAX_FILL_PASSES + 1
            ));
            verdict.next = Some(Cursor {
                fill: cursor.fill + 1,
                ..Cursor::first()
            });
            return Ok(verdict);
        }
        if let Some(total) = short_of {
            return Err(PassError::Short {
                seen,
                total,
                fills: cursor.fill,
            });
        }
        verdict.note = Some(format!(
            "{why}, even in the last pass from the start: resources created or deleted during the run may be missing; the next run reads them"
        ));
        Ok(verdict)
    }
}

/// One page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

impl ListQuery<'_> {
    /// The request as a path with its query string (`/Users?startIndex=1&count=100…`), for a
    /// transport that takes one; values percent-encoded.
    pub fn path_and_query(&self) -> String {
        let mut path = format!(
            "{}?startIndex={}&count={}",
            self.path,
            self.start.max(FIRST_INDEX),
            self.count
        );
        if let Some(filter) = self.filter {
            path.push_str("&filter=");
            path.push_str(&super::filter::encode(filter));
        }
        if let Some(excluded) = self.excluded {
            path.push_str("&excludedAttributes=");
            path.push_str(&super::filter::encode(excluded));
        }
        path
    }
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

impl ListedPage {
    /// A decoded `ListResponse` asked at `start`, with the next `startIndex` by what came back.
    pub fn from_scim(start: u64, page: paging::ScimPage) -> Self {
        ListedPage {
            next: paging::next_start_index(start.max(FIRST_INDEX), &page),
            total_results: page.total_results,
            resources: page.resources,
        }
    }

    /// A page without resources (the end of a listing).
    pub fn empty() -> Self {
        ListedPage {
            resources: Vec::new(),
            total_results: None,
            next: None,
        }
    }
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
    Ok(ListedPage::from_scim(start, page))
}

/// How a whole listing read by [`read_all`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadAll {
    /// Distinct resources handed over.
    pub distinct: u64,
    /// Pages asked for (fill passes included).
    pub pages: u64,
}

/// Reads a whole listing in this process through one [`Pass`], from the first page to the end
/// (fill passes included): `fetch` asks the server for one page, `each` gets every resource
/// the first time it comes (duplicates and the overlap's re-reads left out). `what` names the
/// listing in the log (the vendor). `Err` is `fetch`'s error; `Ok(Err)` is the pass's verdict
/// ([`PassError`]), after every resource read so far was handed over.
pub async fn read_all<'q, E, F, Fut>(
    what: &str,
    query: ListQuery<'q>,
    mut fetch: F,
    mut each: impl FnMut(Value),
) -> Result<Result<ReadAll, PassError>, E>
where
    F: FnMut(ListQuery<'q>) -> Fut,
    Fut: Future<Output = Result<ListedPage, E>>,
{
    let mut pass = Pass::default();
    let mut cursor = Cursor::first();
    let mut pages = 0;
    loop {
        let asked = ListQuery {
            start: cursor.start,
            ..query
        };
        let listed = fetch(asked).await?;
        pages += 1;
        let ids: Vec<Option<String>> = listed
            .resources
            .iter()
            .map(|r| r.as_object().and_then(super::types::id_of))
            .collect();
        let verdict = match pass.page(
            &cursor,
            &ids,
            listed.next,
            listed.total_results,
            query.count,
        ) {
            Ok(verdict) => verdict,
            Err(err) => return Ok(Err(err)),
        };
        if let Some(note) = &verdict.note {
            tracing::warn!("{what}: listing {}: {note}", query.path);
        }
        if verdict.duplicates > 0 {
            tracing::debug!(
                "{what}: listing {}: {} resources came twice and were left out",
                query.path,
                verdict.duplicates
            );
        }
        let mut emit = verdict.emit.into_iter().peekable();
        for (i, resource) in listed.resources.into_iter().enumerate() {
            if emit.next_if_eq(&i).is_some() {
                each(resource);
            }
        }
        match verdict.next {
            Some(next) => cursor = next,
            None => {
                return Ok(Ok(ReadAll {
                    distinct: pass.seen.len() as u64,
                    pages,
                }));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads a simulated directory page by page through [`Pass`], calling `change` after
    /// each page (with the number of pages served so far), as a tap would. Returns the ids
    /// emitted, in order, or the error.
    fn walk(
        dir: &mut Vec<String>,
        count: u64,
        mut change: impl FnMut(usize, &mut Vec<String>),
        ignores_start_index: bool,
    ) -> Result<Vec<String>, PassError> {
        let mut pass = Pass::default();
        let mut cursor = Cursor::first();
        let mut emitted = Vec::new();
        for served in 1..10_000 {
            let start = if ignores_start_index { 1 } else { cursor.start };
            let page: Vec<Value> = dir
                .iter()
                .skip(start as usize - 1)
                .take(count as usize)
                .map(|id| json!({"id": id}))
                .collect();
            let scim = paging::ScimPage {
                resources: page.clone(),
                total_results: Some(dir.len() as u64),
                start_index: Some(cursor.start),
                items_per_page: Some(page.len() as u64),
            };
            let next = paging::next_start_index(cursor.start, &scim);
            let ids: Vec<Option<String>> = page
                .iter()
                .map(|r| r["id"].as_str().map(str::to_owned))
                .collect();
            let verdict = pass.page(&cursor, &ids, next, Some(dir.len() as u64), count)?;
            emitted.extend(verdict.emit.iter().map(|&i| ids[i].clone().unwrap()));
            change(served, dir);
            match verdict.next {
                Some(next) => cursor = next,
                None => return Ok(emitted),
            }
        }
        panic!("no end");
    }

    fn directory(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("u{i:04}")).collect()
    }

    #[test]
    fn deletions_during_a_pass_never_hide_a_live_resource() {
        // (what, users, page size, after which page, how many deleted, from which position)
        for (what, n, count, after, deleted, from) in [
            ("7 of 50 at the start, pages of 10", 50, 10, 1, 7, 0),
            ("1 behind the index, pages of 10", 50, 10, 2, 1, 5),
            ("25 of 100 behind the index, pages of 10", 100, 10, 3, 25, 0),
            ("every other one of the first page", 30, 5, 1, 3, 0),
            ("the anchors themselves", 40, 10, 1, 3, 7),
            ("more than a page", 1000, 100, 2, 150, 10),
        ] {
            let mut dir = directory(n);
            let before = dir.clone();
            let mut gone = Vec::new();
            let emitted = walk(
                &mut dir,
                count,
                |served, dir| {
                    if served == after {
                        gone = dir.drain(from..from + deleted).collect();
                    }
                },
                false,
            )
            .unwrap();
            let got: std::collections::BTreeSet<&String> = emitted.iter().collect();
            assert_eq!(got.len(), emitted.len(), "{what}: a resource emitted twice");
            for id in before.iter().filter(|id| !gone.contains(id)) {
                assert!(got.contains(id), "{what}: live {id} missed");
            }
        }
    }

    #[test]
    fn creations_during_a_pass_repeat_nothing_and_miss_nothing_old() {
        let mut dir = directory(50);
        let before = dir.clone();
        let emitted = walk(
            &mut dir,
            10,
            |served, dir| {
                if served <= 3 {
                    dir.insert(0, format!("new{served}"));
                }
            },
            false,
        )
        .unwrap();
        let got: std::collections::BTreeSet<&String> = emitted.iter().collect();
        assert_eq!(got.len(), emitted.len());
        assert!(before.iter().all(|id| got.contains(id)));
    }

    #[test]
    fn a_server_that_ignores_start_index_is_an_error() {
        let mut dir = directory(1000);
        let err = walk(&mut dir, 100, |_, _| {}, true).unwrap_err();
        assert!(matches!(err, PassError::IgnoresStartIndex { .. }), "{err}");
        assert!(err.to_string().contains("ignores startIndex"), "{err}");
    }

    #[test]
    fn a_quiet_pass_reads_each_page_once_with_the_overlap() {
        let mut dir = directory(250);
        let emitted = walk(&mut dir, 100, |_, _| {}, false).unwrap();
        assert_eq!(emitted, directory(250));
    }

    #[test]
    fn cursors_round_trip_and_bare_start_indexes_still_read() {
        let c = Cursor {
            start: 91,
            after: vec!["a".into(), "b".into()],
            fill: 1,
            anchored: true,
        };
        assert_eq!(Cursor::parse(&c.to_value()), Some(c));
        let bare = Cursor::parse(&json!(101)).unwrap();
        assert_eq!((bare.start, bare.anchored), (101, false));
        assert_eq!(Cursor::parse(&json!({"start_index": "x"})), None);
        assert_eq!(
            Cursor::parse(&json!({"start_index": 3, "after": [1]})),
            None
        );
    }

    #[test]
    fn a_long_listing_keeps_a_bounded_set_of_ids_in_memory() {
        let mut seen = Dedupe::default();
        for i in 0..300_000u32 {
            assert!(seen.first(&format!("2819c223-7f76-453a-919d-{i:012}")));
            assert!(seen.in_memory() <= crate::scim::dedupe::MEMORY_IDS);
        }
        for i in (0..300_000u32).step_by(1_009) {
            assert!(!seen.first(&format!("2819c223-7f76-453a-919d-{i:012}")));
        }
        assert_eq!(seen.len(), 300_000);
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
