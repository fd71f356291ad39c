//! SCIM 2.0 `ListResponse` paging (RFC 7644 §3.4.2.4), read leniently: `totalResults`,
//! `startIndex` and `itemsPerPage` as numbers or numeric strings, `Resources` or `resources` (or
//! missing, meaning an empty page). The next `startIndex` advances by what actually came back, not
//! by the requested `count`, because servers cap pages silently.

use serde_json::Value;

use super::{PageError, lenient_u64};

/// SCIM's first index (1-based).
pub const FIRST_INDEX: u64 = 1;

/// One decoded page.
#[derive(Debug, Clone, PartialEq)]
pub struct ScimPage {
    pub resources: Vec<Value>,
    pub total_results: Option<u64>,
    pub start_index: Option<u64>,
    pub items_per_page: Option<u64>,
}

/// Decodes a `ListResponse` body.
pub fn parse(body: &[u8]) -> Result<ScimPage, PageError> {
    from_value(Value::Object(super::decode_object(
        body,
        "the list response",
    )?))
}

/// As [`parse`], from an already decoded value.
pub fn from_value(value: Value) -> Result<ScimPage, PageError> {
    let Value::Object(mut obj) = value else {
        return Err(PageError(
            "the list response is not a json object".to_owned(),
        ));
    };
    // Attribute names are case-insensitive in SCIM (RFC 7643 §2.1).
    let key_of = |obj: &serde_json::Map<String, Value>, name: &str| {
        obj.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned()
    };
    let resources = match key_of(&obj, "Resources").and_then(|k| obj.remove(&k)) {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(PageError("`Resources` is not an array".to_owned())),
    };
    let number = |name: &str| {
        key_of(&obj, name)
            .and_then(|k| obj.get(&k))
            .and_then(lenient_u64)
    };
    Ok(ScimPage {
        total_results: number("totalResults"),
        start_index: number("startIndex"),
        items_per_page: number("itemsPerPage"),
        resources,
    })
}

/// The `startIndex` of the next page after a request made with `requested_start`, or `None` when
/// the listing is complete: an empty page, or `totalResults` reached. The page's own `startIndex`
/// wins over the requested one when present and non-zero.
pub fn next_start_index(requested_start: u64, page: &ScimPage) -> Option<u64> {
    if page.resources.is_empty() {
        return None;
    }
    let start = page
        .start_index
        .filter(|s| *s >= FIRST_INDEX)
        .unwrap_or(requested_start.max(FIRST_INDEX));
    let next = start.checked_add(page.resources.len() as u64)?;
    match page.total_results {
        Some(total) if next > total => None,
        _ => Some(next),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn users(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({"id": format!("u{i}")})).collect()
    }

    #[test]
    fn table() {
        // (name, body, requested start, resources, next)
        let cases: Vec<(&str, Value, u64, usize, Option<u64>)> = vec![
            (
                "rfc shape, more to come",
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 5, "startIndex": 1, "itemsPerPage": 2, "Resources": users(2)}),
                1,
                2,
                Some(3),
            ),
            (
                "last page exactly",
                json!({"totalResults": 5, "startIndex": 5, "itemsPerPage": 1, "Resources": users(1)}),
                5,
                1,
                None,
            ),
            (
                "numbers as strings",
                json!({"totalResults": "4", "startIndex": "3", "itemsPerPage": "2", "Resources": users(2)}),
                3,
                2,
                None,
            ),
            (
                "lowercase resources",
                json!({"totalResults": 10, "startIndex": 1, "resources": users(3)}),
                1,
                3,
                Some(4),
            ),
            (
                "server capped the page below count",
                json!({"totalResults": 100, "startIndex": 11, "itemsPerPage": 100, "Resources": users(10)}),
                11,
                10,
                Some(21),
            ),
            (
                "missing resources = empty page",
                json!({"totalResults": 0, "startIndex": 1}),
                1,
                0,
                None,
            ),
            (
                "empty page stops even if total says more",
                json!({"totalResults": 50, "startIndex": 21, "Resources": []}),
                21,
                0,
                None,
            ),
            (
                "no total: continue until empty",
                json!({"Resources": users(2)}),
                7,
                2,
                Some(9),
            ),
            (
                "startIndex 0 falls back to the request",
                json!({"totalResults": 10, "startIndex": 0, "Resources": users(2)}),
                1,
                2,
                Some(3),
            ),
            (
                "garbage numbers ignored",
                json!({"totalResults": "many", "startIndex": -3, "Resources": users(1)}),
                4,
                1,
                Some(5),
            ),
            (
                "resources null",
                json!({"Resources": null, "totalResults": 3}),
                1,
                0,
                None,
            ),
        ];
        for (name, body, start, n, next) in cases {
            let page = parse(body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(page.resources.len(), n, "{name}");
            assert_eq!(next_start_index(start, &page), next, "{name}");
        }
    }

    #[test]
    fn a_full_walk_visits_every_index_once() {
        let total = 23u64;
        let cap = 5u64;
        let mut start = FIRST_INDEX;
        let mut seen = Vec::new();
        loop {
            let end = (start + cap - 1).min(total);
            let res: Vec<Value> = (start..=end).map(|i| json!({"id": i})).collect();
            let body = json!({"totalResults": total, "startIndex": start, "itemsPerPage": res.len(), "Resources": res});
            let page = parse(body.to_string().as_bytes()).unwrap();
            seen.extend(page.resources.iter().filter_map(|r| r["id"].as_u64()));
            match next_start_index(start, &page) {
                Some(n) => start = n,
                None => break,
            }
        }
        assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    }

    #[test]
    fn hostile_input() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"Resources\": 1}",
            b"{\"Resources\": {}}",
            b"\xff",
            b"{\"Resources\": [",
        ] {
            assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
        let huge = ScimPage {
            resources: users(1),
            total_results: None,
            start_index: Some(u64::MAX),
            items_per_page: None,
        };
        assert_eq!(next_start_index(1, &huge), None);
    }
}
