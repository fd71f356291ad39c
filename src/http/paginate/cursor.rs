//! Cursor-after-id pagination (Userflow): `{"data": [...], "has_more": bool, "next_page_url":
//! "/users?limit=100&starting_after=<id>" | null}`.
//!
//! The next cursor is the last record's `id` (the bookmark the tap stores); when the last record
//! has no usable id, the `starting_after` parameter of `next_page_url` is used, wherever it sits in
//! the query. `has_more` missing means "more if there is a next_page_url".

use serde_json::Value;

use super::PageError;

/// One decoded page.
#[derive(Debug, Clone, PartialEq)]
pub struct CursorPage {
    pub records: Vec<Value>,
    pub has_more: bool,
    /// `starting_after` for the next request; `None` on the last page.
    pub next_cursor: Option<String>,
    /// The server's `next_page_url`, as sent (relative or absolute).
    pub next_page_url: Option<String>,
}

/// Decodes a list envelope. A page that claims more but offers no cursor is an error, so a
/// caller can never loop forever on the same page.
pub fn parse(body: &[u8]) -> Result<CursorPage, PageError> {
    from_value(Value::Object(super::decode_object(body, "the list page")?))
}

/// As [`parse`], from an already decoded value.
pub fn from_value(value: Value) -> Result<CursorPage, PageError> {
    let Value::Object(mut obj) = value else {
        return Err(PageError("the list page is not a json object".to_owned()));
    };
    let records = match obj.remove("data") {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(PageError("`data` is not an array".to_owned())),
    };
    let next_page_url = match obj.get("next_page_url") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        _ => None,
    };
    let has_more = match obj.get("has_more") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.trim().eq_ignore_ascii_case("true"),
        _ => next_page_url.is_some(),
    };
    if !has_more {
        return Ok(CursorPage {
            records,
            has_more,
            next_cursor: None,
            next_page_url,
        });
    }
    let from_last = records.last().and_then(|r| r.get("id")).and_then(id_text);
    let next_cursor = from_last.or_else(|| next_page_url.as_deref().and_then(starting_after));
    if next_cursor.is_none() {
        return Err(PageError(
            "the page says has_more but gives no cursor (no id on the last record, no starting_after in next_page_url)"
                .to_owned(),
        ));
    }
    Ok(CursorPage {
        records,
        has_more,
        next_cursor,
        next_page_url,
    })
}

/// An id as cursor text: strings as they are, integers in decimal.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The `starting_after` value of a relative or absolute URL, wherever it sits in the query.
pub fn starting_after(next_page_url: &str) -> Option<String> {
    query_param(next_page_url, "starting_after")
}

/// A query parameter of a relative or absolute URL (first occurrence, percent-decoded).
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(v: Value) -> Result<CursorPage, PageError> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn userflow_envelopes() {
        let p = page(json!({
            "object": "list",
            "data": [{"id": "u1"}, {"id": "u2"}],
            "has_more": true,
            "url": "/users",
            "next_page_url": "/users?limit=2&starting_after=u2"
        }))
        .unwrap();
        assert_eq!(p.records.len(), 2);
        assert!(p.has_more);
        assert_eq!(p.next_cursor.as_deref(), Some("u2"));
        assert_eq!(
            p.next_page_url.as_deref(),
            Some("/users?limit=2&starting_after=u2")
        );

        let last = page(json!({"data": [{"id": "u3"}], "has_more": false, "next_page_url": null}))
            .unwrap();
        assert!(!last.has_more);
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn table() {
        struct Case {
            name: &'static str,
            body: Value,
            has_more: bool,
            cursor: Option<&'static str>,
            records: usize,
        }
        let cases = [
            Case {
                name: "cursor first in the query",
                body: json!({"data": [{"name": "no id"}], "has_more": true, "next_page_url": "/users?starting_after=x9&limit=1"}),
                has_more: true,
                cursor: Some("x9"),
                records: 1,
            },
            Case {
                name: "absolute next url, encoded cursor",
                body: json!({"data": [{}], "has_more": true, "next_page_url": "https://api.userflow.com/users?limit=1&order_by=created_at&starting_after=a%2Fb"}),
                has_more: true,
                cursor: Some("a/b"),
                records: 1,
            },
            Case {
                name: "numeric ids",
                body: json!({"data": [{"id": 7}, {"id": 8}], "has_more": true}),
                has_more: true,
                cursor: Some("8"),
                records: 2,
            },
            Case {
                name: "has_more missing, next url present",
                body: json!({"data": [{"id": "a"}], "next_page_url": "/users?limit=1&starting_after=a"}),
                has_more: true,
                cursor: Some("a"),
                records: 1,
            },
            Case {
                name: "has_more missing, no next url",
                body: json!({"data": [{"id": "a"}]}),
                has_more: false,
                cursor: None,
                records: 1,
            },
            Case {
                name: "empty data",
                body: json!({"data": [], "has_more": false}),
                has_more: false,
                cursor: None,
                records: 0,
            },
            Case {
                name: "data null",
                body: json!({"data": null}),
                has_more: false,
                cursor: None,
                records: 0,
            },
            Case {
                name: "has_more as string",
                body: json!({"data": [{"id": "z"}], "has_more": "true"}),
                has_more: true,
                cursor: Some("z"),
                records: 1,
            },
            Case {
                name: "last id wins over the url",
                body: json!({"data": [{"id": "b"}], "has_more": true, "next_page_url": "/users?starting_after=zz"}),
                has_more: true,
                cursor: Some("b"),
                records: 1,
            },
        ];
        for c in cases {
            let p = page(c.body).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(p.has_more, c.has_more, "{}", c.name);
            assert_eq!(p.next_cursor.as_deref(), c.cursor, "{}", c.name);
            assert_eq!(p.records.len(), c.records, "{}", c.name);
        }
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"\"x\"",
            b"{\"data\": 5}",
            b"{\"data\": {}}",
            b"{\"data\": [], \"has_more\": true}",
            b"{\"data\": [{\"id\": null}], \"has_more\": true, \"next_page_url\": \"/users?limit=1\"}",
            b"{\"data\": [{\"id\": {}}], \"has_more\": true, \"next_page_url\": \"???&&==\"}",
            b"\xff\xfe{",
            b"{\"data\": [",
        ] {
            assert!(parse(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn query_params_anywhere() {
        assert_eq!(starting_after("/users?starting_after=a"), Some("a".into()));
        assert_eq!(
            starting_after("/users?limit=1&starting_after=a&x=y"),
            Some("a".into())
        );
        assert_eq!(
            starting_after("/users?limit=1&starting_after=a+b#f"),
            Some("a b".into())
        );
        assert_eq!(starting_after("/users?limit=1&starting_after="), None);
        assert_eq!(starting_after("/users"), None);
        assert_eq!(starting_after("?"), None);
        assert_eq!(starting_after("%%%?starting_after=%zz"), Some("%zz".into()));
    }
}
