//! Which streams and properties a sync emits.
//!
//! Without a catalog every stream of the vendor is synced with every property. With one, the
//! catalog's `selected` metadata decides, by the Meltano SDK's algorithm (see
//! [`crate::singer::catalog`]): Meltano writes an explicit `true` or `false` on every node. A
//! stream missing from the catalog is not synced, as in the SDK. Key properties are always
//! emitted. Selection is read against the tap's own schema (the record model), so a catalog
//! written before a property existed still selects it when its stream is selected.

use serde_json::Value;

use crate::model::{self, Object, StreamDef, UPDATED_AT};
use crate::singer::{Catalog, CatalogEntry, Properties, SchemaMessage};

/// One selected stream.
#[derive(Debug, Clone)]
pub struct SelectedStream {
    /// Its definition in the record model.
    pub def: &'static StreamDef,
    /// The properties to emit.
    pub properties: Properties,
    /// The catalog asks for INCREMENTAL replication by `updated_at` (else FULL_TABLE).
    pub incremental: bool,
}

impl SelectedStream {
    /// The SCHEMA message: the model's schema without the deselected properties.
    pub fn schema_message(&self) -> SchemaMessage {
        let mut schema = self.def.schema();
        if let Properties::Only(keep) = &self.properties {
            if let Some(Value::Object(properties)) = schema.get_mut("properties") {
                properties.retain(|name, _| keep.iter().any(|k| k == name));
            }
            if let Some(Value::Array(required)) = schema.get_mut("required") {
                required.retain(|name| keep.iter().any(|k| Some(k.as_str()) == name.as_str()));
            }
        }
        SchemaMessage {
            stream: self.def.name.to_string(),
            schema,
            key_properties: self
                .def
                .key_properties
                .iter()
                .map(|k| k.to_string())
                .collect(),
            bookmark_properties: Vec::new(),
        }
    }

    /// True when no property is deselected (a record is written as it is).
    pub fn keeps_all(&self) -> bool {
        match &self.properties {
            Properties::All => true,
            Properties::Only(keep) => self
                .def
                .fields
                .iter()
                .all(|f| keep.iter().any(|k| k == f.name)),
        }
    }

    /// Removes the deselected properties from a record.
    pub fn project(&self, record: &mut Object) {
        if let Properties::Only(keep) = &self.properties {
            record.retain(|name, _| keep.iter().any(|k| k == name));
        }
    }
}

/// The selected streams of a sync.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    streams: Vec<SelectedStream>,
    /// Catalog streams the vendor does not have (warned about, ignored).
    pub unknown: Vec<String>,
}

impl Selection {
    /// Every stream in `streams`, every property: a sync without a catalog.
    pub fn all(streams: &[&str]) -> Self {
        Self {
            streams: streams
                .iter()
                .filter_map(|name| model::find(name))
                .map(|def| SelectedStream {
                    def,
                    properties: Properties::All,
                    incremental: false,
                })
                .collect(),
            unknown: Vec::new(),
        }
    }

    /// What `catalog` selects among `streams`.
    pub fn from_catalog(catalog: &Catalog, streams: &[&str]) -> Self {
        let mut selected = Vec::new();
        for name in streams {
            let (Some(def), Some(entry)) = (model::find(name), catalog.find(name)) else {
                continue;
            };
            // Read the catalog's metadata against the model's schema and key.
            let entry = CatalogEntry {
                schema: def.schema(),
                key_properties: def.key_properties.iter().map(|k| k.to_string()).collect(),
                ..entry.clone()
            };
            if entry.is_selected() {
                selected.push(SelectedStream {
                    def,
                    properties: entry.selected_properties(),
                    incremental: asks_incremental(&entry),
                });
            }
        }
        let unknown = catalog
            .streams
            .iter()
            .filter(|entry| {
                !streams
                    .iter()
                    .any(|s| *s == entry.tap_stream_id || *s == entry.stream)
            })
            .map(|entry| entry.tap_stream_id.clone())
            .collect();
        Self {
            streams: selected,
            unknown,
        }
    }

    /// The selected stream of that name, if it is selected.
    pub fn get(&self, name: &str) -> Option<&SelectedStream> {
        self.streams.iter().find(|s| s.def.name == name)
    }

    /// True when `name` is selected.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The selected streams' names.
    pub fn names(&self) -> Vec<&'static str> {
        self.streams.iter().map(|s| s.def.name).collect()
    }
}

/// The streams of `vendor` whose listing can be filtered by modification time, for which
/// INCREMENTAL replication by `updated_at` is offered: SCIM's `meta.lastModified gt` (when the
/// server's ServiceProviderConfig says it filters, [`crate::vendors::source::Source::filters_now`]).
/// Userflow and Guru REST list by cursor only (docs/tap.md). Static, so discovery needs no
/// credentials.
pub fn incremental_streams(vendor: &str) -> &'static [&'static str] {
    match vendor {
        "scim" | "guru_scim" => &[model::USERS, model::GROUPS],
        _ => &[],
    }
}

/// True when `entry` asks for INCREMENTAL replication by `updated_at` (the only replication key
/// the tap keeps); another key is warned about and the stream stays FULL_TABLE.
fn asks_incremental(entry: &CatalogEntry) -> bool {
    let (method, key) = entry.replication();
    if !method.is_some_and(|m| m.eq_ignore_ascii_case("INCREMENTAL")) {
        return false;
    }
    match key {
        None | Some(UPDATED_AT) => true,
        Some(other) => {
            tracing::warn!(
                stream = %entry.tap_stream_id,
                "replication-key {other} is not one the tap keeps (only {UPDATED_AT}); the stream stays FULL_TABLE"
            );
            false
        }
    }
}

/// The catalog `--discover` prints for a vendor that reads `streams`; those in `incremental`
/// can be filtered by modification time and offer `updated_at` as their replication key.
pub fn discover(streams: &[&str], incremental: &[&str]) -> Catalog {
    Catalog {
        streams: streams
            .iter()
            .filter_map(|name| model::find(name))
            .map(|def| {
                let entry = CatalogEntry::discovered(def.name, def.schema(), def.key_properties);
                if incremental.contains(&def.name) {
                    entry.with_replication_key(UPDATED_AT)
                } else {
                    entry
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const READS: &[&str] = &["users", "groups", "memberships"];

    fn meltano_catalog(deselect: &[&str], deselect_props: &[(&str, &str)]) -> Catalog {
        let mut catalog = discover(READS, &[]);
        for entry in &mut catalog.streams {
            let stream = entry.stream.clone();
            for meta in &mut entry.metadata {
                let selected = if meta.breadcrumb.is_empty() {
                    !deselect.contains(&stream.as_str())
                } else {
                    !deselect_props
                        .iter()
                        .any(|(s, p)| *s == stream && meta.breadcrumb[1] == *p)
                };
                meta.metadata.insert("selected".into(), json!(selected));
            }
        }
        catalog
    }

    #[test]
    fn without_a_catalog_everything_is_selected() {
        let selection = Selection::all(READS);
        assert_eq!(selection.names(), READS);
        let users = selection.get("users").unwrap();
        assert_eq!(users.properties, Properties::All);
        assert_eq!(users.schema_message().schema, model::USERS_DEF.schema());
    }

    #[test]
    fn meltano_selection_with_explicit_false_everywhere() {
        let catalog = meltano_catalog(&["groups"], &[("users", "email"), ("users", "id")]);
        let selection = Selection::from_catalog(&catalog, READS);
        assert_eq!(selection.names(), ["users", "memberships"]);
        let users = selection.get("users").unwrap();
        assert!(users.properties.includes("id"), "keys are always emitted");
        assert!(!users.properties.includes("email"));
        let schema = users.schema_message();
        assert!(schema.schema["properties"].get("email").is_none());
        assert!(schema.schema["properties"].get("id").is_some());
        assert_eq!(schema.key_properties, ["id"]);
        let mut record: Object = json!({"id": "u1", "email": "a@x.io", "name": "A"})
            .as_object()
            .cloned()
            .unwrap();
        users.project(&mut record);
        assert_eq!(Value::Object(record), json!({"id": "u1", "name": "A"}));
    }

    #[test]
    fn streams_missing_from_the_catalog_are_not_synced() {
        let mut catalog = discover(READS, &[]);
        catalog.streams.retain(|e| e.stream == "groups");
        catalog.streams.push(CatalogEntry::discovered(
            "tickets",
            json!({"type": "object"}),
            &[],
        ));
        let selection = Selection::from_catalog(&catalog, READS);
        assert_eq!(selection.names(), ["groups"]);
        assert_eq!(selection.unknown, ["tickets"]);
    }

    #[test]
    fn discovery_lists_the_model_streams_with_automatic_keys() {
        let catalog = discover(READS, &[]);
        assert_eq!(catalog.streams.len(), 3);
        let memberships = catalog.find("memberships").unwrap();
        assert_eq!(memberships.key_properties, ["group_id", "user_id"]);
        let automatic: Vec<_> = memberships
            .metadata
            .iter()
            .filter(|m| m.metadata.get("inclusion") == Some(&json!("automatic")))
            .map(|m| m.breadcrumb[1].clone())
            .collect();
        assert_eq!(automatic, ["group_id", "user_id"]);
    }
}
