//! Userflow's list parameters and cursor paging (`limit`, `order_by`, `starting_after`,
//! `ending_before`), shared by every list endpoint.

use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::routes::bad;
use crate::ordered::{Ordered, Page};
use crate::{reply, util};

/// `limit` when none is sent (seed and both Singer taps).
pub(super) const DEFAULT_LIMIT: usize = 20;
/// Largest `limit` (seed; both taps use `MAX_PAGE_SIZE = 100`).
pub(super) const MAX_LIMIT: usize = 100;

/// A list answer: `data` in order, `next_page_url` when there is more.
#[derive(Serialize)]
pub(super) struct ListView<'a, T> {
    object: &'static str,
    data: Vec<T>,
    has_more: bool,
    url: &'a str,
    next_page_url: Option<String>,
}

/// Parsed list parameters shared by every list endpoint.
pub(super) struct ListQuery {
    pub(super) pairs: Vec<(String, String)>,
    limit: usize,
    desc: bool,
    starting_after: Option<String>,
    ending_before: Option<String>,
}

pub(super) fn list_query(raw: Option<&str>, allowed_order: &[&str]) -> Result<ListQuery, Response> {
    let pairs = util::query_pairs(raw);
    let limit = match util::first(&pairs, "limit") {
        None => DEFAULT_LIMIT,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(bad(&format!(
                    "limit: must be an integer between 1 and {MAX_LIMIT}, got '{s}'"
                )));
            }
        },
    };
    let mut desc = false;
    if let Some(o) = util::first(&pairs, "order_by") {
        let (field, d) = match o.strip_prefix('-') {
            Some(f) => (f, true),
            None => (o, false),
        };
        if !allowed_order.contains(&field) {
            return Err(bad(&format!(
                "order_by: the sandbox orders by {} only, got '{o}'",
                allowed_order.join(" or ")
            )));
        }
        desc = d;
    }
    match util::first(&pairs, "sort") {
        None | Some("asc") => {}
        Some("desc") => desc = !desc,
        Some(other) => return Err(bad(&format!("sort: must be asc or desc, got '{other}'"))),
    }
    let starting_after = util::first(&pairs, "starting_after").map(str::to_owned);
    let ending_before = util::first(&pairs, "ending_before").map(str::to_owned);
    if starting_after.is_some() && ending_before.is_some() {
        return Err(bad(
            "only one of starting_after and ending_before may be set",
        ));
    }
    Ok(ListQuery {
        pairs,
        limit,
        desc,
        starting_after,
        ending_before,
    })
}

/// `next_page_url`: the request's own parameters, the cursor always last and never first
/// (both Python taps read it with `parse_qs`, which breaks when it leads).
pub(super) fn next_page_url(path: &str, q: &ListQuery, last_id: &str) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in &q.pairs {
        if k != "starting_after" && k != "ending_before" {
            ser.append_pair(k, v);
            any = true;
        }
    }
    if !any {
        ser.append_pair("limit", &q.limit.to_string());
    }
    ser.append_pair("starting_after", last_id);
    format!("{path}?{}", ser.finish())
}

pub(super) fn list_envelope<'a, T: Serialize>(
    path: &'a str,
    q: &ListQuery,
    data: Vec<T>,
    has_more: bool,
    last: Option<&str>,
) -> ListView<'a, T> {
    let next_page_url = match (has_more, last, &q.ending_before) {
        (true, Some(id), None) => Some(next_page_url(path, q, id)),
        _ => None,
    };
    ListView {
        object: "list",
        data,
        has_more,
        url: path,
        next_page_url,
    }
}

pub(super) fn page_of<'a, T>(
    coll: &'a Ordered<T>,
    what: &str,
    q: &ListQuery,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<'a, T>, Response> {
    if let Some(before) = &q.ending_before {
        let Some(seq) = coll.seq(before) else {
            return Err(bad(&format!(
                "ending_before: {what} with id '{before}' not found"
            )));
        };
        // The `limit` items just before the cursor, in the listing's order.
        let (mut items, more) = coll.page(Some(seq), !q.desc, q.limit, keep);
        items.reverse();
        return Ok((items, more));
    }
    let after = match &q.starting_after {
        None => None,
        Some(id) => match coll.seq(id) {
            Some(s) => Some(s),
            None => {
                return Err(bad(&format!(
                    "starting_after: {what} with id '{id}' not found"
                )));
            }
        },
    };
    Ok(coll.page(after, q.desc, q.limit, keep))
}

/// Lists over the small seeded content collections (linear; they hold at most a few thousand).
pub(super) fn list_static(
    path: &str,
    what: &str,
    items: &[Value],
    raw: Option<&str>,
    order: &[&str],
    filters: &[&str],
) -> Response {
    let q = match list_query(raw, order) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let wanted: Vec<(&str, String)> = filters
        .iter()
        .filter_map(|f| util::first(&q.pairs, f).map(|v| (*f, v.to_owned())))
        .collect();
    let matching: Vec<&Value> = items
        .iter()
        .filter(|v| {
            wanted
                .iter()
                .all(|(k, want)| v.get(*k).and_then(Value::as_str) == Some(want.as_str()))
        })
        .collect();
    let ordered: Vec<&Value> = if q.desc {
        matching.into_iter().rev().collect()
    } else {
        matching
    };
    let start = match &q.starting_after {
        None => 0,
        Some(id) => match ordered
            .iter()
            .position(|v| v.get("id").and_then(Value::as_str) == Some(id.as_str()))
        {
            Some(i) => i + 1,
            None => return bad(&format!("starting_after: {what} with id '{id}' not found")),
        },
    };
    let page: Vec<Value> = ordered
        .iter()
        .skip(start)
        .take(q.limit)
        .map(|v| (*v).clone())
        .collect();
    let more = ordered.len() > start + page.len();
    let last = page
        .last()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    reply::ok(&list_envelope(path, &q, page, more, last.as_deref()))
}
