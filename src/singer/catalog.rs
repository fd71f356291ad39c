//! The Singer catalog, its metadata, and stream/property selection.
//!
//! Selection follows the Meltano SDK (`singerlib/catalog.py::_breadcrumb_is_selected`), because
//! that is what Meltano writes: a deselected parent deselects its children; `unsupported` is
//! never selected; `automatic` always is; otherwise an explicit `selected`, else
//! `selected-by-default`, else the parent's value.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// A catalog: the streams a tap can emit, with their metadata.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Catalog {
    /// Every stream.
    pub streams: Vec<CatalogEntry>,
}

/// One stream of a catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    /// The stream's id (what state bookmarks are keyed by).
    pub tap_stream_id: String,
    /// The stream's name in SCHEMA and RECORD messages.
    pub stream: String,
    /// Its JSON Schema.
    pub schema: Value,
    /// Its key.
    #[serde(default)]
    pub key_properties: Vec<String>,
    /// `FULL_TABLE`, `INCREMENTAL` or `LOG_BASED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_method: Option<String>,
    /// Its replication key, if incremental.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_key: Option<String>,
    /// Stream- and property-level metadata.
    #[serde(default)]
    pub metadata: Vec<MetadataEntry>,
}

/// Metadata for one breadcrumb: `[]` for the stream, `["properties", "x"]` for a property.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataEntry {
    /// Where the metadata applies.
    pub breadcrumb: Vec<String>,
    /// The metadata itself (`selected`, `inclusion`, `selected-by-default`, …).
    pub metadata: Map<String, Value>,
}

/// Which properties of a selected stream to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Properties {
    /// Every property.
    All,
    /// Only these top-level properties (key properties are always among them).
    Only(Vec<String>),
}

impl Properties {
    /// True when `name` should be emitted.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Properties::All => true,
            Properties::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

impl Catalog {
    /// The entry for a stream, by `tap_stream_id` or `stream` name.
    pub fn find(&self, stream: &str) -> Option<&CatalogEntry> {
        self.streams
            .iter()
            .find(|entry| entry.tap_stream_id == stream || entry.stream == stream)
    }
}

impl CatalogEntry {
    /// A discovery entry: every property available and selected by default, key properties
    /// automatic.
    pub fn discovered(stream: &str, schema: Value, key_properties: &[&str]) -> Self {
        let mut metadata = vec![MetadataEntry {
            breadcrumb: Vec::new(),
            metadata: object(json!({
                "inclusion": "available",
                "selected-by-default": true,
                "table-key-properties": key_properties,
                "forced-replication-method": "FULL_TABLE",
            })),
        }];
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for name in properties.keys() {
                let inclusion = if key_properties.contains(&name.as_str()) {
                    "automatic"
                } else {
                    "available"
                };
                metadata.push(MetadataEntry {
                    breadcrumb: vec!["properties".into(), name.clone()],
                    metadata: object(json!({
                        "inclusion": inclusion,
                        "selected-by-default": true,
                    })),
                });
            }
        }
        Self {
            tap_stream_id: stream.to_string(),
            stream: stream.to_string(),
            schema,
            key_properties: key_properties.iter().map(|k| k.to_string()).collect(),
            replication_method: Some("FULL_TABLE".into()),
            replication_key: None,
            metadata,
        }
    }

    /// Offers INCREMENTAL replication by `key`: the stream-level metadata lists it in
    /// `valid-replication-keys` instead of forcing FULL_TABLE (which stays the default).
    pub fn with_replication_key(mut self, key: &str) -> Self {
        if let Some(top) = self.metadata.iter_mut().find(|m| m.breadcrumb.is_empty()) {
            top.metadata.remove("forced-replication-method");
            top.metadata
                .insert("valid-replication-keys".into(), json!([key]));
        }
        self
    }

    /// The replication method and key asked for: the stream-level metadata's
    /// `replication-method` and `replication-key` (what Meltano's `metadata:` extra writes),
    /// else the entry's own `replication_method` and `replication_key`.
    pub fn replication(&self) -> (Option<&str>, Option<&str>) {
        let top = self.metadata_at(&[]);
        let text = |key: &str| top.and_then(|m| m.get(key)).and_then(Value::as_str);
        (
            text("replication-method").or(self.replication_method.as_deref()),
            text("replication-key").or(self.replication_key.as_deref()),
        )
    }

    fn metadata_at(&self, breadcrumb: &[&str]) -> Option<&Map<String, Value>> {
        self.metadata
            .iter()
            .find(|entry| {
                entry
                    .breadcrumb
                    .iter()
                    .map(String::as_str)
                    .eq(breadcrumb.iter().copied())
            })
            .map(|entry| &entry.metadata)
    }

    fn breadcrumb_selected(&self, breadcrumb: &[&str], parent: bool) -> bool {
        if !parent {
            return false;
        }
        let Some(metadata) = self.metadata_at(breadcrumb) else {
            return parent;
        };
        match metadata.get("inclusion").and_then(Value::as_str) {
            Some("unsupported") => return false,
            Some("automatic") => return true,
            _ => {}
        }
        if let Some(selected) = metadata.get("selected").and_then(Value::as_bool) {
            return selected;
        }
        if let Some(default) = metadata.get("selected-by-default").and_then(Value::as_bool) {
            return default;
        }
        parent
    }

    /// True when the stream is selected. A stream with no stream-level metadata is selected,
    /// as the SDK does for catalogs written by hand.
    pub fn is_selected(&self) -> bool {
        self.breadcrumb_selected(&[], true)
    }

    /// The properties to emit. Key properties are always included.
    pub fn selected_properties(&self) -> Properties {
        let Some(properties) = self.schema.get("properties").and_then(Value::as_object) else {
            return Properties::All;
        };
        let stream = self.is_selected();
        let mut names = Vec::with_capacity(properties.len());
        let mut all = true;
        for name in properties.keys() {
            let key = self.key_properties.iter().any(|k| k == name);
            if key || self.breadcrumb_selected(&["properties", name], stream) {
                names.push(name.clone());
            } else {
                all = false;
            }
        }
        if all {
            Properties::All
        } else {
            Properties::Only(names)
        }
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> CatalogEntry {
        CatalogEntry::discovered(
            "users",
            json!({"type":"object","properties":{"id":{"type":"string"},"email":{"type":["string","null"]},"name":{"type":["string","null"]}}}),
            &["id"],
        )
    }

    fn set(entry: &mut CatalogEntry, breadcrumb: &[&str], key: &str, value: Value) {
        let found = entry
            .metadata
            .iter_mut()
            .find(|m| {
                m.breadcrumb
                    .iter()
                    .map(String::as_str)
                    .eq(breadcrumb.iter().copied())
            })
            .unwrap();
        found.metadata.insert(key.into(), value);
    }

    #[test]
    fn discovered_streams_are_selected_with_every_property() {
        let entry = users();
        assert!(entry.is_selected());
        assert_eq!(entry.selected_properties(), Properties::All);
    }

    #[test]
    fn meltano_style_explicit_selection() {
        let mut entry = users();
        set(&mut entry, &[], "selected", json!(true));
        set(&mut entry, &["properties", "id"], "selected", json!(false));
        set(
            &mut entry,
            &["properties", "email"],
            "selected",
            json!(false),
        );
        set(&mut entry, &["properties", "name"], "selected", json!(true));
        assert!(entry.is_selected());
        assert_eq!(
            entry.selected_properties(),
            Properties::Only(vec!["id".into(), "name".into()]),
            "key properties are always emitted"
        );
    }

    #[test]
    fn a_deselected_stream_deselects_its_properties() {
        let mut entry = users();
        set(&mut entry, &[], "selected", json!(false));
        set(
            &mut entry,
            &["properties", "email"],
            "selected",
            json!(true),
        );
        assert!(!entry.is_selected());
    }

    #[test]
    fn unsupported_is_never_selected_and_defaults_apply() {
        let mut entry = users();
        set(
            &mut entry,
            &["properties", "email"],
            "inclusion",
            json!("unsupported"),
        );
        set(
            &mut entry,
            &["properties", "email"],
            "selected",
            json!(true),
        );
        set(
            &mut entry,
            &["properties", "name"],
            "selected-by-default",
            json!(false),
        );
        assert_eq!(
            entry.selected_properties(),
            Properties::Only(vec!["id".into()])
        );
    }

    #[test]
    fn reads_a_catalog_and_finds_streams() {
        let catalog: Catalog = serde_json::from_value(json!({"streams":[{"tap_stream_id":"groups","stream":"groups","schema":{"type":"object"}}]})).unwrap();
        let entry = catalog.find("groups").unwrap();
        assert!(entry.is_selected(), "no metadata means selected");
        assert!(catalog.find("users").is_none());
    }
}
