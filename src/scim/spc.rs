//! `/ServiceProviderConfig` (RFC 7643 §5), read once per run and never trusted blindly.
//!
//! Many SaaS servers serve it incompletely or not at all, so a failure to read it is not an
//! error: roster then assumes PATCH works and everything optional (bulk, sort, ETags, cursor
//! paging) does not, as scim.md advises. Booleans and numbers are read leniently.

use serde_json::Value;

use super::types::get;
use crate::http::HttpClient;
use crate::model::{Object, lenient_bool};

/// What a SCIM service provider says it supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceProviderConfig {
    /// `patch.supported`.
    pub patch: bool,
    /// `bulk.supported`, with `maxOperations` and `maxPayloadSize`.
    pub bulk: Option<BulkLimits>,
    /// `filter.supported`.
    pub filter: bool,
    /// `filter.maxResults`.
    pub filter_max_results: Option<u64>,
    /// `sort.supported`.
    pub sort: bool,
    /// `etag.supported`.
    pub etag: bool,
    /// RFC 9865 `pagination.cursor`.
    pub cursor_paging: bool,
    /// RFC 9865 `pagination.maxPageSize`.
    pub max_page_size: Option<u64>,
    /// RFC 9865 `pagination.defaultPageSize`.
    pub default_page_size: Option<u64>,
}

/// Bulk limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkLimits {
    /// `maxOperations`.
    pub max_operations: Option<u64>,
    /// `maxPayloadSize` in bytes.
    pub max_payload_size: Option<u64>,
}

impl Default for ServiceProviderConfig {
    /// What to assume without a usable document: PATCH on, everything optional off.
    fn default() -> Self {
        Self {
            patch: true,
            bulk: None,
            filter: true,
            filter_max_results: None,
            sort: false,
            etag: false,
            cursor_paging: false,
            max_page_size: None,
            default_page_size: None,
        }
    }
}

fn number(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn section<'a>(doc: &'a Object, name: &str) -> Option<&'a Object> {
    get(doc, name)?.as_object()
}

fn supported(doc: &Object, name: &str, default: bool) -> bool {
    section(doc, name)
        .and_then(|s| get(s, "supported"))
        .and_then(lenient_bool)
        .unwrap_or(default)
}

impl ServiceProviderConfig {
    /// Reads a ServiceProviderConfig document leniently; anything unreadable keeps its default.
    pub fn from_value(value: &Value) -> Self {
        let Some(doc) = value.as_object() else {
            return Self::default();
        };
        let defaults = Self::default();
        let bulk = section(doc, "bulk").filter(|_| supported(doc, "bulk", false));
        let pagination = section(doc, "pagination");
        Self {
            patch: supported(doc, "patch", defaults.patch),
            bulk: bulk.map(|b| BulkLimits {
                max_operations: number(get(b, "maxOperations")),
                max_payload_size: number(get(b, "maxPayloadSize")),
            }),
            filter: supported(doc, "filter", defaults.filter),
            filter_max_results: section(doc, "filter").and_then(|f| number(get(f, "maxResults"))),
            sort: supported(doc, "sort", false),
            etag: supported(doc, "etag", false),
            cursor_paging: pagination
                .and_then(|p| get(p, "cursor"))
                .and_then(lenient_bool)
                .unwrap_or(false),
            max_page_size: pagination
                .and_then(|p| number(get(p, "maxPageSize")))
                .filter(|n| *n > 0),
            default_page_size: pagination.and_then(|p| number(get(p, "defaultPageSize"))),
        }
    }

    /// Reads `/ServiceProviderConfig`; any failure gives the defaults (logged at debug level).
    pub async fn read(client: &HttpClient) -> Self {
        let answer = client
            .get("/ServiceProviderConfig")
            .header("accept", super::ACCEPT)
            .max_retries(1)
            .send()
            .await;
        match answer.and_then(|response| response.json::<Value>()) {
            Ok(value) => Self::from_value(&value),
            Err(err) => {
                tracing::debug!("no usable ServiceProviderConfig, assuming the defaults: {err}");
                Self::default()
            }
        }
    }

    /// The page size to ask for: `wanted`, lowered to the server's `maxPageSize` if it has one.
    pub fn page_size(&self, wanted: u64) -> u64 {
        self.max_page_size
            .map_or(wanted, |max| wanted.min(max))
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_full_document_leniently() {
        let spc = ServiceProviderConfig::from_value(&json!({
            "patch": {"supported": "True"},
            "bulk": {"supported": true, "maxOperations": "1000", "maxPayloadSize": 1048576},
            "Filter": {"supported": true, "maxResults": 200},
            "sort": {"supported": "false"},
            "etag": {"supported": true},
            "pagination": {"cursor": true, "index": true, "defaultPageSize": 2, "maxPageSize": "3"}
        }));
        assert_eq!(
            spc,
            ServiceProviderConfig {
                patch: true,
                bulk: Some(BulkLimits {
                    max_operations: Some(1000),
                    max_payload_size: Some(1_048_576)
                }),
                filter: true,
                filter_max_results: Some(200),
                sort: false,
                etag: true,
                cursor_paging: true,
                max_page_size: Some(3),
                default_page_size: Some(2),
            }
        );
        assert_eq!(spc.page_size(100), 3);
    }

    #[test]
    fn missing_or_broken_documents_give_the_defaults() {
        assert_eq!(
            ServiceProviderConfig::from_value(&json!("nope")),
            ServiceProviderConfig::default()
        );
        let spc = ServiceProviderConfig::from_value(
            &json!({"bulk": {"supported": false, "maxOperations": 5}}),
        );
        assert_eq!(spc.bulk, None);
        assert!(spc.patch);
        assert_eq!(spc.page_size(100), 100);
    }
}
