//! The writers' read capability: what the destination holds now for one record
//! ([`Sink::read`](super::Sink::read)), in roster's record model, and how it differs from the
//! record.
//!
//! `--plan` reads before it says what a run would create, update or leave alone; `sync_mode:
//! update_only` / `create_only` decide whether the vendor "holds" a record by it; `--verify`
//! reads back what a run wrote. A vendor that cannot read a kind answers
//! [`Holding::Unreadable`], and the ledger decides instead (docs/target.md lists which vendor
//! reads what). Reads go through the writer's own transport: paced, retried and counted like
//! its writes.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Kind;

/// What the destination holds for one record's key.
#[derive(Debug, Clone, PartialEq)]
pub enum Holding {
    /// The vendor cannot read this kind: the ledger decides.
    Unreadable,
    /// The vendor holds nothing under this key (or, for a membership, the user is not in the
    /// group).
    Absent,
    /// The vendor holds it.
    Held(Current),
}

impl Holding {
    /// True for [`Holding::Held`].
    pub fn is_held(&self) -> bool {
        matches!(self, Holding::Held(_))
    }
}

/// A record as the vendor holds it now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Current {
    /// The standard fields, by their model names (`email`, `name`, `first_name`, …).
    pub fields: Map<String, Value>,
    /// Everything else the vendor holds for it, by roster's attribute names.
    pub attributes: Map<String, Value>,
    /// What the record would change, as the writer would change it: empty when the vendor
    /// already holds what the record says.
    pub changes: Vec<FieldChange>,
}

/// One field a record would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// The field's name (roster's model name where the vendor's maps onto one).
    pub field: String,
    /// What the vendor holds (`null`: nothing).
    pub from: Value,
    /// What the record says.
    pub to: Value,
}

/// The changes a merging upsert of `record` (properties, `null` clears) would make to `held`
/// (the vendor's flat property map): properties the record leaves out are kept, so they are
/// not changes.
pub fn property_changes<'a, K: AsRef<str> + 'a>(
    record: impl IntoIterator<Item = (&'a K, &'a Value)>,
    held: &Map<String, Value>,
) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    for (key, value) in record {
        let key = key.as_ref();
        let now = held.get(key).unwrap_or(&Value::Null);
        let (wanted, always) = match value {
            // Userflow's change objects: `set` is a value; `set_once` changes only an unset
            // attribute; `add` / `subtract` always change it.
            Value::Object(change) if change.contains_key("set") => {
                (change.get("set").unwrap_or(&Value::Null), false)
            }
            Value::Object(change) if change.contains_key("set_once") && !now.is_null() => {
                (now, false)
            }
            Value::Object(change) if change.contains_key("set_once") => {
                (change.get("set_once").unwrap_or(&Value::Null), false)
            }
            Value::Object(_) => (value, true),
            other => (other, false),
        };
        if always || !same_value(now, wanted) {
            changes.push(FieldChange {
                field: key.to_string(),
                from: now.clone(),
                to: wanted.clone(),
            });
        }
    }
    changes
}

/// Equal as a vendor stores it: numbers by value (`1` and `1.0`), date-times by instant
/// (`2024-01-02T03:04:05Z` and `…05.000+00:00`), everything else exactly.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::String(x), Value::String(y)) if x != y => {
            match (
                chrono::DateTime::parse_from_rfc3339(x),
                chrono::DateTime::parse_from_rfc3339(y),
            ) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            }
        }
        _ => a == b,
    }
}

/// Splits a vendor's flat property map into the model's standard fields of `kind` and the
/// rest (attributes), as the tap would read it.
pub fn split_properties(kind: Kind, properties: &Map<String, Value>) -> Current {
    let standard: &[&str] = match kind {
        Kind::Users => &[
            "email",
            "name",
            "first_name",
            "last_name",
            "external_id",
            "active",
            "status",
            "created_at",
        ],
        Kind::Groups => &["name", "external_id", "created_at"],
        _ => &[],
    };
    let mut current = Current::default();
    for (key, value) in properties {
        if standard.contains(&key.as_str()) {
            current.fields.insert(key.clone(), value.clone());
        } else {
            current.attributes.insert(key.clone(), value.clone());
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn a_merging_upsert_changes_only_what_it_names_and_differs() {
        let held = map(json!({"email": "a@x.io", "plan": "free", "seats": 3, "keep": 1}));
        let record = map(json!({"email": "a@x.io", "plan": "pro", "seats": 3.0, "gone": null}));
        let changes = property_changes(&record, &held);
        assert_eq!(
            changes,
            vec![FieldChange {
                field: "plan".into(),
                from: json!("free"),
                to: json!("pro")
            }]
        );
        let cleared = property_changes(&map(json!({"keep": null})), &held);
        assert_eq!(cleared[0].to, Value::Null);
    }

    #[test]
    fn change_objects_compare_by_what_they_would_leave() {
        let held = map(json!({"plan": "pro", "n": 1}));
        assert!(property_changes(&map(json!({"plan": {"set": "pro"}})), &held).is_empty());
        assert!(property_changes(&map(json!({"plan": {"set_once": "x"}})), &held).is_empty());
        assert_eq!(
            property_changes(&map(json!({"n": {"add": 1}})), &held).len(),
            1,
            "add always changes"
        );
    }

    #[test]
    fn date_times_compare_as_instants() {
        assert!(same_value(
            &json!("2024-01-02T03:04:05Z"),
            &json!("2024-01-02T03:04:05.000+00:00")
        ));
        assert!(!same_value(&json!("a"), &json!("b")));
        assert!(same_value(&json!(2), &json!(2.0)));
    }
}
