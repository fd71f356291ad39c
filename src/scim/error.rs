//! The SCIM Error message (RFC 7644 §3.12), read leniently: `status` as a string or a number,
//! attribute names in any case, and a body that is not JSON at all (then there is no detail).

use serde_json::Value;

/// What a SCIM server said when it refused a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScimError {
    /// `status`, as a number.
    pub status: Option<u16>,
    /// `scimType` (`uniqueness`, `invalidFilter`, `noTarget`, …).
    pub scim_type: Option<String>,
    /// `detail`, the human-readable reason.
    pub detail: Option<String>,
}

/// `name` in `object`, ignoring ASCII case (SCIM attribute names are case-insensitive).
fn field<'a>(object: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

impl ScimError {
    /// Reads an Error body; `None` when it is not a JSON object.
    pub fn parse(body: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(body.trim()).ok()?;
        let object = value.as_object()?;
        let text = |name: &str| {
            field(object, name)
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let status = match field(object, "status") {
            Some(Value::String(s)) => s.trim().parse().ok(),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            _ => None,
        };
        Some(ScimError {
            status,
            scim_type: text("scimType"),
            detail: text("detail"),
        })
    }

    /// True for `scimType` `t` (compared ignoring case).
    pub fn is(&self, t: &str) -> bool {
        self.scim_type
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_string_or_number_status_and_any_case() {
        let e = ScimError::parse(
            r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"409","scimType":"uniqueness","detail":"taken"}"#,
        )
        .unwrap();
        assert_eq!(e.status, Some(409));
        assert!(e.is("Uniqueness"));
        assert_eq!(e.detail.as_deref(), Some("taken"));
        let e = ScimError::parse(r#"{"Status":400,"SCIMTYPE":"noTarget","Detail":" x "}"#).unwrap();
        assert_eq!((e.status, e.detail.as_deref()), (Some(400), Some("x")));
        assert!(e.is("notarget"));
        assert_eq!(ScimError::parse("<html>bad gateway</html>"), None);
        assert_eq!(ScimError::parse("[1]"), None);
    }
}
