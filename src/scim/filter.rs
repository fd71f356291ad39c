//! SCIM filters for lookups (RFC 7644 §3.4.2.2): a single `attrPath eq "value"`, the only form
//! every SaaS server is known to take (Entra sends only `eq` and `and`; scim.md §4).
//!
//! The value is written as a JSON string literal, so `"` and `\` (and control characters) are
//! escaped the way the grammar's `compValue` expects; the whole expression is then
//! percent-encoded as one query value, spaces as `%20`.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986 unreserved characters is escaped in a query value, so a filter
/// survives any server's query parser (`+`, `&`, `=`, `#` and spaces included).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `attr eq "value"`, the value JSON-escaped (not yet percent-encoded).
pub fn eq(attr: &str, value: &str) -> String {
    // A JSON string encoder cannot fail on a &str; the fallback only keeps clippy content.
    let literal = serde_json::to_string(value).unwrap_or_else(|_| format!("\"{value}\""));
    format!("{attr} eq {literal}")
}

/// Percent-encodes a query value (a filter, a list of attributes).
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The query string of a lookup: `filter=<attr eq "value">`, percent-encoded.
pub fn query(attr: &str, value: &str) -> String {
    format!("filter={}", encode(&eq(attr, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_json_escaped() {
        assert_eq!(
            eq("userName", "o\"brien\\x"),
            r#"userName eq "o\"brien\\x""#
        );
        assert_eq!(eq("externalId", "a\nb"), r#"externalId eq "a\nb""#);
        assert_eq!(eq("displayName", "Ünïcode"), "displayName eq \"Ünïcode\"");
    }

    #[test]
    fn the_whole_filter_is_percent_encoded() {
        assert_eq!(
            query("userName", "a+b@x.io"),
            "filter=userName%20eq%20%22a%2Bb%40x.io%22"
        );
        assert_eq!(
            query("externalId", "x&y=#\"z"),
            "filter=externalId%20eq%20%22x%26y%3D%23%5C%22z%22"
        );
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn decoding_the_query_gives_back_the_json_literal() {
        let q = query("userName", "o\"brien\\x");
        let decoded: Vec<(String, String)> = url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            decoded,
            vec![("filter".into(), r#"userName eq "o\"brien\\x""#.into())]
        );
    }
}
