//! Pagination helpers: pure functions over bodies and headers, lenient about what servers send and
//! never panicking on garbage (they are fuzzed).
//!
//! - [`cursor`]: Userflow's list envelope `{data, has_more, next_page_url}` and its
//!   `starting_after` cursor.
//! - [`link`]: a next-page URL in the `Link` header (Guru REST: `rel="next-page"`, `?token=`).
//! - [`scim`]: SCIM 2.0 `ListResponse` paged by `startIndex`/`count`.

pub mod cursor;
pub mod link;
pub mod scim;

/// A page body that cannot be read as the expected envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PageError(pub String);

/// Decodes a page body that must be a JSON object; `what` names it in errors.
pub(crate) fn decode_object(
    body: &[u8],
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, PageError> {
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(PageError(format!("{what} is not a json object"))),
        Err(e) => Err(PageError(format!("{what} is not json: {e}"))),
    }
}

/// Reads a non-negative integer given as a JSON number (integral) or a numeric string.
pub(crate) fn lenient_u64(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e19)
                .map(|f| f as u64)
        }),
        serde_json::Value::String(s) => {
            let t = s.trim();
            t.parse::<u64>().ok().or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e19)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lenient_numbers() {
        for (v, want) in [
            (json!(5), Some(5)),
            (json!(5.0), Some(5)),
            (json!("5"), Some(5)),
            (json!(" 12 "), Some(12)),
            (json!("1e2"), Some(100)),
            (json!(-1), None),
            (json!("-1"), None),
            (json!(1.5), None),
            (json!("x"), None),
            (json!(null), None),
            (json!([1]), None),
            (json!("NaN"), None),
            (json!("1e300"), None),
        ] {
            assert_eq!(lenient_u64(&v), want, "{v}");
        }
    }
}
