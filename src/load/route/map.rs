//! How one record of a routed stream becomes an [`Item`]: the field mapping (`rename`,
//! `include`, `exclude`, `constants`), the split into keys, standard fields and attributes,
//! `null_values` and `nested_values`, the required keys, and [`is_deletion`].

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{ATTRIBUTES, DELETED_AT, StreamMap};
use crate::config::{NestedValues, NullValues, StreamOverride};
use crate::model::{self, FieldType, PropKey, Props, StreamDef};
use crate::singer::Object;
use crate::sink::{Action, Item, Kind, Refusal};

/// The record model's definition of a kind (segments are Appcues-only and have none).
fn model_def(kind: Kind) -> Option<&'static StreamDef> {
    match kind {
        Kind::Users => Some(&model::USERS_DEF),
        Kind::Groups => Some(&model::GROUPS_DEF),
        Kind::Memberships => Some(&model::MEMBERSHIPS_DEF),
        Kind::Events => Some(&model::EVENTS_DEF),
        Kind::Segments => None,
    }
}

/// The model's name of a standard field of the record model (kept apart from custom
/// attributes): every field of the kind's model definition but its keys, `attributes` and
/// `_sdc_deleted_at`; `None` for any other field.
fn standard(def: Option<&'static StreamDef>, field: &str) -> Option<&'static str> {
    def.and_then(|d| d.field(field))
        .filter(|f| {
            f.name != ATTRIBUTES
                && f.name != DELETED_AT
                && (f.ty != FieldType::Key || f.name == "name")
                && f.name != "user_id"
                && f.name != "group_id"
        })
        .map(|f| f.name)
}

impl StreamMap {
    /// Turns a record into an item, or says why it cannot be one.
    pub fn item(&self, record: &Object) -> Result<Item, Refusal> {
        match &self.mapping {
            None => self.normalize(self.entries(record.clone())),
            Some(mapping) => self.normalize(self.entries(self.apply(mapping, record))),
        }
    }

    /// Turns a record's top-level fields, in input order and with no key twice, into an item:
    /// what [`StreamMap::item`] does, for records the parse workers have read field by field
    /// (`crate::load::fast`). Only for streams without a field mapping.
    pub fn item_of<'a>(&self, entries: Vec<(Cow<'a, str>, Entry)>) -> Result<Item, Refusal> {
        debug_assert!(self.mapping.is_none());
        self.normalize(entries)
    }

    /// True when the record's `attributes` object may be handed over as its entries
    /// ([`Entry::Nested`]): it is not a key field of this stream.
    pub fn nests_attributes(&self) -> bool {
        self.key_field != ATTRIBUTES && self.group_key.as_deref() != Some(ATTRIBUTES)
    }

    /// A record as [`Self::normalize`] takes it.
    fn entries(&self, record: Object) -> Vec<(Cow<'static, str>, Entry)> {
        let nest = self.nests_attributes();
        record
            .into_iter()
            .map(|(k, v)| {
                let entry = match v {
                    Value::Object(map) if nest && k == ATTRIBUTES => {
                        Entry::Nested(map.into_iter().map(|(k, v)| (k.into(), v)).collect())
                    }
                    v => Entry::Value(v),
                };
                (Cow::Owned(k), entry)
            })
            .collect()
    }

    /// The membership a users record names through `group_key`, taken out of `user` (whose
    /// `group_id` carries it from [`StreamMap::item`]): `None` when the stream has no group key,
    /// the record is a delete, or the value is null or absent.
    pub fn membership(&self, user: &mut Item) -> Option<Item> {
        if self.kind != Kind::Users || self.group_key.is_none() {
            return None;
        }
        let group = user.group_id.take()?;
        if user.action != Action::Upsert {
            return None;
        }
        Some(Item {
            kind: Kind::Memberships,
            action: Action::Upsert,
            id: None,
            user_id: user.id.clone(),
            group_id: Some(group),
            fields: Default::default(),
            attributes: Default::default(),
        })
    }

    /// Fields `include` always keeps.
    fn essential(&self, name: &str) -> bool {
        name == DELETED_AT
            || name == self.key_field
            || self.group_key.as_deref() == Some(name)
            || match self.kind {
                Kind::Memberships => name == "group_id" || name == "user_id",
                Kind::Events => name == "user_id" || name == "name",
                Kind::Segments => name == "user_id",
                Kind::Users | Kind::Groups => false,
            }
    }

    fn apply(&self, m: &StreamOverride, record: &Object) -> Object {
        let mut out = Map::with_capacity(record.len() + m.constants.len());
        for (k, v) in record {
            let name = m.rename.get(k).unwrap_or(k);
            if let Some(include) = &m.include
                && !include.iter().any(|i| i == name)
                && !self.essential(name)
            {
                continue;
            }
            if m.exclude.iter().any(|e| e == name) {
                continue;
            }
            out.insert(name.clone(), v.clone());
        }
        for (k, v) in &m.constants {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
        out
    }

    fn normalize<'a>(&self, entries: Vec<(Cow<'a, str>, Entry)>) -> Result<Item, Refusal> {
        let deleted = entries.iter().find_map(|(k, e)| match e {
            Entry::Value(v) if k == DELETED_AT => Some(v),
            _ => None,
        });
        let action = if is_deletion(deleted)? {
            Action::Delete
        } else {
            Action::Upsert
        };
        let mut item = self.empty_item(&entries, action);
        let def = model_def(self.kind);
        let mut nested: Option<Vec<(PropKey, Value)>> = None;
        for (k, entry) in entries {
            let v = match entry {
                Entry::Nested(map) => {
                    nested = Some(map);
                    continue;
                }
                Entry::Value(v) => v,
            };
            let k = k.as_ref();
            if self.take_key(&mut item, k, &v)? {
                continue;
            }
            if k == ATTRIBUTES {
                match v {
                    Value::Object(map) => {
                        nested = Some(map.into_iter().map(|(k, v)| (k.into(), v)).collect());
                    }
                    Value::Null => {}
                    other => {
                        return Err(Refusal::new(format!(
                            "field \"attributes\" must be an object, got {}",
                            type_name(&other)
                        )));
                    }
                }
            } else if k.starts_with("_sdc_") {
                // Singer metadata columns; _sdc_deleted_at was read above.
            } else if k == model::UPDATED_AT {
                // The source's change time (its INCREMENTAL bookmark), not a trait of the user
                // or group: not sent, and not part of the hash change detection compares. A
                // user who wants it at the vendor renames it (docs/contract.md).
            } else if let Some(name) = standard(def, k) {
                if let Some(v) = self.value(Field::Top(k), v)? {
                    // The model's own name: no key allocated per record.
                    item.fields.insert(PropKey::Borrowed(name), v);
                }
            } else if let Some(v) = self.value(Field::Top(k), v)? {
                item.attributes.insert(PropKey::Owned(k.to_string()), v);
            }
        }
        if let Some(nested) = nested {
            for (k, v) in nested {
                if let Some(v) = self.value(Field::Attribute(&k), v)? {
                    item.attributes.insert(k, v);
                }
            }
        }
        self.require(&item)?;
        Ok(item)
    }

    /// An item of this stream's kind with no fields yet, its maps sized for the record.
    fn empty_item(&self, entries: &[(Cow<'_, str>, Entry)], action: Action) -> Item {
        let nested = entries
            .iter()
            .map(|(k, e)| match e {
                Entry::Nested(map) => map.len(),
                Entry::Value(Value::Object(map)) if k == ATTRIBUTES => map.len(),
                Entry::Value(_) => 0,
            })
            .sum::<usize>();
        Item {
            kind: self.kind,
            action,
            id: None,
            user_id: None,
            group_id: None,
            // Sized up front: growing two hash maps per record was a measurable share. (Built
            // as a `serde_json::Map` and collected, they were neither: an empty iterator sizes
            // nothing, and the map built for it was freed at once.)
            fields: Props::with_capacity(entries.len()),
            attributes: Props::with_capacity(entries.len() + nested),
        }
    }

    /// Takes column `k` into the item's keys when it is one (the record's key, a users row's
    /// `group_key`, a membership's or event's `user_id`/`group_id`); false for any other column.
    fn take_key(&self, item: &mut Item, k: &str, v: &Value) -> Result<bool, Refusal> {
        let ids: &[&str] = match self.kind {
            Kind::Users | Kind::Groups => &[],
            Kind::Memberships => &["group_id", "user_id"],
            Kind::Events => &["user_id", "group_id"],
            Kind::Segments => &["user_id"],
        };
        if k == self.key_field && matches!(self.kind, Kind::Users | Kind::Groups | Kind::Segments) {
            item.id = Some(key_value(&self.key_field, v)?);
        } else if self.kind == Kind::Users && self.group_key.as_deref() == Some(k) {
            // The group the user belongs to (taken out again by `membership`).
            if !v.is_null() {
                item.group_id = Some(key_value(k, v)?);
            }
        } else if ids.contains(&k) {
            let required = !(self.kind == Kind::Events && k == "group_id");
            let value = if required || !v.is_null() {
                Some(key_value(k, v)?)
            } else {
                None
            };
            match k {
                "user_id" => item.user_id = value,
                _ => item.group_id = value,
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// A property value under `null_values` and `nested_values`: `None` leaves it out.
    fn value(&self, field: Field<'_>, v: Value) -> Result<Option<Value>, Refusal> {
        if v.is_null() {
            return Ok(match self.nulls {
                NullValues::Clear => Some(Value::Null),
                NullValues::Skip => None,
            });
        }
        if !(v.is_array() || v.is_object()) || self.rule.takes(&v) {
            return Ok(Some(v));
        }
        let (outcome, out) = match self.nested {
            NestedValues::JsonString => {
                ("sending its JSON text", Some(Value::String(v.to_string())))
            }
            NestedValues::Drop => ("leaving it out", None),
            // The writer refuses it, naming the field and what the vendor takes.
            NestedValues::Reject => return Ok(Some(v)),
        };
        let first = self
            .warned
            .lock()
            .insert((self.stream.to_string(), field.to_string()));
        let field = field.to_string();
        if first {
            tracing::warn!(
                stream = %self.stream,
                "field {field:?} holds {}, which {} does not take: {outcome} (nested_values; said once per field)",
                type_name(&v),
                self.vendor,
            );
        }
        Ok(out)
    }

    fn require(&self, item: &Item) -> Result<(), Refusal> {
        let missing = |field: &str| {
            Err(Refusal::new(format!(
                "required field {field:?} is missing ({} records need it)",
                self.kind
            )))
        };
        match self.kind {
            Kind::Users | Kind::Groups | Kind::Segments if item.id.is_none() => {
                missing(&self.key_field)
            }
            Kind::Memberships if item.group_id.is_none() => missing("group_id"),
            Kind::Memberships | Kind::Events | Kind::Segments if item.user_id.is_none() => {
                missing("user_id")
            }
            Kind::Events => match item.fields.get("name") {
                Some(Value::String(s)) if !s.is_empty() => {
                    if item.action == Action::Delete {
                        Err(Refusal::new(
                            "an event cannot be deleted (_sdc_deleted_at is set on an events record)",
                        ))
                    } else {
                        Ok(())
                    }
                }
                Some(Value::String(_)) | None | Some(Value::Null) => missing("name"),
                Some(other) => Err(Refusal::new(format!(
                    "field \"name\" must be a string, got {}",
                    type_name(other)
                ))),
            },
            _ => Ok(()),
        }
    }
}

/// A top-level value of a record as [`StreamMap::item_of`] takes it.
#[derive(Debug)]
pub enum Entry {
    /// The value.
    Value(Value),
    /// The record's `attributes` object, as its entries in input order (no key twice), the
    /// names its SCHEMA declares shared ([`crate::model::intern`]).
    Nested(Vec<(PropKey, Value)>),
}

/// A property's name for warnings, built only when one is written (a `format!` per nested
/// attribute per record was a measurable share of the dry run).
#[derive(Clone, Copy)]
enum Field<'a> {
    /// A top-level field of the record.
    Top(&'a str),
    /// A key inside the record's `attributes` object.
    Attribute(&'a str),
}

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Top(name) => f.write_str(name),
            Field::Attribute(name) => write!(f, "{ATTRIBUTES}.{name}"),
        }
    }
}

/// Longest excerpt of a bad `_sdc_deleted_at` value quoted in a reject reason.
const DELETED_AT_EXCERPT_CHARS: usize = 40;

/// Whether a record's `_sdc_deleted_at` makes it a delete: the one place this is decided, for
/// every kind and vendor. Only a valid RFC 3339 date-time deletes; absent, `null`, `""`, `false`
/// and `0` mean "not deleted" (warehouses and CSV taps write those for an empty cell). Anything
/// else (`"not-a-date"`, `true`, `1`, an object) is refused naming the field, because guessing
/// either way could delete a live user or keep one the source removed.
pub fn is_deletion(value: Option<&Value>) -> Result<bool, Refusal> {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(false),
        Some(Value::String(s)) if s.is_empty() => Ok(false),
        Some(Value::Number(n)) if n.as_f64() == Some(0.0) => Ok(false),
        Some(Value::String(s)) if chrono::DateTime::parse_from_rfc3339(s.trim()).is_ok() => {
            Ok(true)
        }
        Some(other) => {
            let shown = match other {
                Value::String(s) => {
                    let cut: String = s.chars().take(DELETED_AT_EXCERPT_CHARS).collect();
                    if cut.len() < s.len() {
                        format!("{cut:?}...")
                    } else {
                        format!("{cut:?}")
                    }
                }
                Value::Bool(_) | Value::Number(_) => other.to_string(),
                _ => type_name(other).to_string(),
            };
            Err(Refusal::new(format!(
                "field {DELETED_AT:?} must be an RFC 3339 date-time (the record is a delete) or null, \"\", false or 0 (not deleted), got {shown}"
            )))
        }
    }
}

/// A key as a string: strings (non-empty) as they are, integers in decimal.
fn key_value(field: &str, v: &Value) -> Result<String, Refusal> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::String(_) => Err(Refusal::new(format!("key field {field:?} is empty"))),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::Null => Err(Refusal::new(format!("key field {field:?} is null"))),
        other => Err(Refusal::new(format!(
            "key field {field:?} must be a string or an integer, got {}",
            type_name(other)
        ))),
    }
}

/// A JSON value's type, for messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
