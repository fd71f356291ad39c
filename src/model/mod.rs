//! The record model: the streams every vendor shares, defined once.
//!
//! CONTRACT.md fixes them: the tap emits `users`, `groups` and `memberships` with the same fields
//! for every vendor, so `tap-roster | target-roster` works between any listable and any writable
//! vendor; the target also takes `events`. Everything about a stream lives in its [`StreamDef`]:
//! its name, key, required fields and typed fields. [`StreamDef::schema`] turns that into the
//! JSON Schema the tap writes in SCHEMA messages and `catalogs/<vendor>.json`, and the target
//! routes and validates by the same definitions.
//!
//! | stream | key | fields |
//! | --- | --- | --- |
//! | `users` | `id` | `email`, `name`, `first_name`, `last_name`, `external_id`, `active`, `status`, `created_at`, `updated_at`, `attributes`, `_sdc_deleted_at` |
//! | `groups` | `id` | `name`, `external_id`, `created_at`, `updated_at`, `attributes`, `_sdc_deleted_at` |
//! | `memberships` | `group_id`, `user_id` | `attributes`, `_sdc_deleted_at` |
//! | `events` (target only) | — | `user_id`, `name`, `timestamp`, `group_id`, `attributes` |
//!
//! Records are built with [`RecordBuilder`], which types every value as the schema says
//! (booleans from `"True"`/`"false"`/`1`, date-times normalised to RFC 3339) and never drops a
//! value it cannot type: that value goes into `attributes` under the vendor's own field name.
//! `attributes` holds scalar values only: nested objects are flattened with `.` between the keys
//! (`name.formatted`), arrays are kept as their JSON text.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value, json};

mod item;

pub use item::{Action, Item, Kind, PropKey, Props};

/// At most this many bytes of names are shared ([`intern`]); past it, names are not shared.
const INTERNED_BYTES: usize = 1 << 20;

/// A property name shared for the whole run, for the names a stream's SCHEMA declares: an
/// item's key is then a pointer, not a `String` allocated (and freed on another thread) per key
/// per record. Called when a SCHEMA comes, not per record. Each distinct name is kept once for
/// the life of the process; past [`INTERNED_BYTES`] of them, a name is returned as its own copy.
pub fn intern(name: &str) -> PropKey {
    use std::sync::OnceLock;
    static NAMES: OnceLock<parking_lot::Mutex<(crate::maps::FastSet<&'static str>, usize)>> =
        OnceLock::new();
    let mut names = NAMES.get_or_init(Default::default).lock();
    if let Some(&shared) = names.0.get(name) {
        return PropKey::Borrowed(shared);
    }
    if names.1 + name.len() > INTERNED_BYTES {
        return PropKey::Owned(name.to_string());
    }
    let shared: &'static str = Box::leak(name.into());
    names.0.insert(shared);
    names.1 += name.len();
    PropKey::Borrowed(shared)
}

/// A JSON object: one record (the one definition; `crate::singer::Object` is this).
pub type Object = Map<String, Value>;

/// The `users` stream name.
pub const USERS: &str = "users";
/// The `groups` stream name.
pub const GROUPS: &str = "groups";
/// The `memberships` stream name.
pub const MEMBERSHIPS: &str = "memberships";
/// The `events` stream name (target only).
pub const EVENTS: &str = "events";

/// The field every stream has for vendor-specific values.
pub const ATTRIBUTES: &str = "attributes";
/// When the vendor last changed a user or group: the INCREMENTAL replication key.
pub const UPDATED_AT: &str = "updated_at";
/// Set on a record to ask the target to delete or deactivate it (Singer convention).
pub const SDC_DELETED_AT: &str = "_sdc_deleted_at";

/// The type of one field, which decides its JSON Schema and how values are typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// A non-empty string that identifies the record; never null.
    Key,
    /// A string or null.
    String,
    /// A boolean or null.
    Boolean,
    /// An RFC 3339 date-time string or null.
    DateTime,
    /// An object of scalar values (string, number, boolean, null), or null.
    Attributes,
}

/// One field of a stream.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The field's name in records.
    pub name: &'static str,
    /// Its type.
    pub ty: FieldType,
    /// One line for the catalog and the docs.
    pub description: &'static str,
}

const fn field(name: &'static str, ty: FieldType, description: &'static str) -> Field {
    Field {
        name,
        ty,
        description,
    }
}

/// A stream of the record model.
#[derive(Debug)]
pub struct StreamDef {
    /// The stream's name in SCHEMA and RECORD messages.
    pub name: &'static str,
    /// What it carries.
    pub kind: Kind,
    /// One line for the catalog and the docs.
    pub description: &'static str,
    /// Its key (`key_properties`).
    pub key_properties: &'static [&'static str],
    /// Fields every record must have.
    pub required: &'static [&'static str],
    /// Every field, in the order records carry them.
    pub fields: &'static [Field],
    /// True when the tap emits it; `events` is only written.
    pub tap: bool,
}

const DELETED: Field = field(
    SDC_DELETED_AT,
    FieldType::DateTime,
    "When set, the target deletes or deactivates this record; the tap leaves it out",
);
const ATTRS: Field = field(
    ATTRIBUTES,
    FieldType::Attributes,
    "Every other value the vendor returned, as scalars: nested objects flattened with '.', arrays as JSON text",
);

/// `users`: people, keyed by the vendor's user key (Userflow id, Guru email, SCIM id).
pub const USERS_DEF: StreamDef = StreamDef {
    name: USERS,
    kind: Kind::Users,
    description: "People, keyed by the vendor's user key: the Userflow id, the Guru email, the SCIM id",
    key_properties: &["id"],
    required: &["id"],
    fields: &[
        field(
            "id",
            FieldType::Key,
            "The vendor's user key: Userflow id, Guru email, SCIM id",
        ),
        field("email", FieldType::String, "Email address"),
        field("name", FieldType::String, "Display name"),
        field("first_name", FieldType::String, "Given name"),
        field("last_name", FieldType::String, "Family name"),
        field(
            "external_id",
            FieldType::String,
            "The id a provisioning client gave the user (SCIM externalId)",
        ),
        field(
            "active",
            FieldType::Boolean,
            "False when the user is deactivated",
        ),
        field(
            "status",
            FieldType::String,
            "The vendor's own status word (Guru: ACTIVE, PENDING, INACTIVE)",
        ),
        field(
            "created_at",
            FieldType::DateTime,
            "When the vendor created the user",
        ),
        field(
            UPDATED_AT,
            FieldType::DateTime,
            "When the vendor last changed the user, where it says (SCIM meta.lastModified, Userflow updated_at): the INCREMENTAL replication key",
        ),
        ATTRS,
        DELETED,
    ],
    tap: true,
};

/// `groups`: groups, companies and teams.
pub const GROUPS_DEF: StreamDef = StreamDef {
    name: GROUPS,
    kind: Kind::Groups,
    description: "Groups, companies and teams, keyed by the vendor's group id",
    key_properties: &["id"],
    required: &["id"],
    fields: &[
        field("id", FieldType::Key, "The vendor's group id"),
        field("name", FieldType::String, "The group's name"),
        field(
            "external_id",
            FieldType::String,
            "The id a provisioning client gave the group (SCIM externalId)",
        ),
        field(
            "created_at",
            FieldType::DateTime,
            "When the vendor created the group",
        ),
        field(
            UPDATED_AT,
            FieldType::DateTime,
            "When the vendor last changed the group, where it says (SCIM meta.lastModified, Userflow updated_at): the INCREMENTAL replication key",
        ),
        ATTRS,
        DELETED,
    ],
    tap: true,
};

/// `memberships`: a user in a group. Ids are the same keys as the `users` and `groups` records.
pub const MEMBERSHIPS_DEF: StreamDef = StreamDef {
    name: MEMBERSHIPS,
    kind: Kind::Memberships,
    description: "A user in a group, keyed by the group's and the user's keys",
    key_properties: &["group_id", "user_id"],
    required: &["group_id", "user_id"],
    fields: &[
        field(
            "group_id",
            FieldType::Key,
            "The group's id (the groups key)",
        ),
        field("user_id", FieldType::Key, "The user's key (the users key)"),
        ATTRS,
        DELETED,
    ],
    tap: true,
};

/// `events`: something a user did. The target writes them; no vendor lists them.
pub const EVENTS_DEF: StreamDef = StreamDef {
    name: EVENTS,
    kind: Kind::Events,
    description: "Something a user did (target only)",
    key_properties: &[],
    required: &["user_id", "name"],
    fields: &[
        field("user_id", FieldType::Key, "The user's key"),
        field("name", FieldType::Key, "The event's name"),
        field(
            "timestamp",
            FieldType::DateTime,
            "When it happened: Appcues takes it (the time it is sent when absent); Userflow and Userpilot document no event time and record when they receive it, so it is not sent to them",
        ),
        field("group_id", FieldType::String, "The group it happened in"),
        ATTRS,
    ],
    tap: false,
};

/// Every stream of the model.
pub const STREAMS: &[&StreamDef] = &[&USERS_DEF, &GROUPS_DEF, &MEMBERSHIPS_DEF, &EVENTS_DEF];

/// The streams the tap emits, in the order it syncs them.
pub const TAP_STREAMS: &[&StreamDef] = &[&USERS_DEF, &GROUPS_DEF, &MEMBERSHIPS_DEF];

/// A stream by its exact name.
pub fn find(name: &str) -> Option<&'static StreamDef> {
    STREAMS.iter().copied().find(|def| def.name == name)
}

impl StreamDef {
    /// A field by name.
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The stream's JSON Schema.
    pub fn schema(&self) -> Value {
        let mut properties = Map::new();
        for f in self.fields {
            properties.insert(f.name.to_string(), field_schema(f));
        }
        json!({
            "type": "object",
            "description": self.description,
            "properties": properties,
            "required": self.required,
        })
    }
}

fn field_schema(f: &Field) -> Value {
    let mut schema = match f.ty {
        FieldType::Key => json!({"type": "string", "minLength": 1}),
        FieldType::String => json!({"type": ["string", "null"]}),
        FieldType::Boolean => json!({"type": ["boolean", "null"]}),
        FieldType::DateTime => json!({"type": ["string", "null"], "format": "date-time"}),
        FieldType::Attributes => json!({
            "type": ["object", "null"],
            "additionalProperties": {"type": ["string", "number", "boolean", "null"]},
        }),
    };
    schema["description"] = Value::from(f.description);
    schema
}

/// Builds one record of a stream, typing each value as the schema says.
///
/// A value that cannot be typed (a `created_at` that is no date) is not dropped: it goes into
/// `attributes` under the vendor's field name.
#[derive(Debug)]
pub struct RecordBuilder {
    def: &'static StreamDef,
    /// One slot per field of `def`, in schema order (no map until `build`).
    slots: [Option<Value>; MAX_FIELDS],
    attributes: Object,
}

/// The most fields a stream has (`users`: 11).
const MAX_FIELDS: usize = 12;

impl RecordBuilder {
    /// A new, empty record of `def`.
    pub fn new(def: &'static StreamDef) -> Self {
        Self {
            def,
            slots: Default::default(),
            attributes: Object::new(),
        }
    }

    fn slot(&self, name: &str) -> Option<(usize, FieldType)> {
        self.def
            .fields
            .iter()
            .take(MAX_FIELDS)
            .position(|f| f.name == name)
            .map(|at| (at, self.def.fields[at].ty))
    }

    /// Sets a key field (`id`, `group_id`, `user_id`).
    pub fn key(&mut self, name: &'static str, value: impl Into<String>) -> &mut Self {
        if let Some((at, _)) = self.slot(name) {
            self.slots[at] = Some(Value::String(value.into()));
        }
        self
    }

    /// Sets a standard field from the vendor's `vendor_key`, typed as the schema says. When the
    /// value cannot be typed it goes into `attributes` as `vendor_key` instead.
    pub fn field(&mut self, name: &'static str, vendor_key: &str, value: Value) -> &mut Self {
        let Some((at, ty)) = self.slot(name) else {
            flatten_into(&mut self.attributes, vendor_key, value);
            return self;
        };
        match typed(ty, value) {
            Ok(value) => self.slots[at] = Some(value),
            Err(raw) => flatten_into(&mut self.attributes, vendor_key, raw),
        }
        self
    }

    /// Sets a standard field when the vendor sent it (`Some`, including an explicit `null`).
    pub fn field_opt(
        &mut self,
        name: &'static str,
        vendor_key: &str,
        value: Option<Value>,
    ) -> &mut Self {
        if let Some(value) = value {
            self.field(name, vendor_key, value);
        }
        self
    }

    /// Adds a vendor value to `attributes`, flattened to scalars under `key`.
    pub fn attribute(&mut self, key: &str, value: Value) -> &mut Self {
        flatten_into(&mut self.attributes, key, value);
        self
    }

    /// Adds every entry of a vendor object to `attributes`.
    pub fn attributes(&mut self, values: Object) -> &mut Self {
        if self.attributes.is_empty() && values.values().all(is_scalar) {
            // Already flat (the usual case): take the object as it is.
            self.attributes = values;
            return self;
        }
        for (key, value) in values {
            flatten_owned(&mut self.attributes, key, value);
        }
        self
    }

    /// The finished record, fields in schema order, `attributes` always present.
    pub fn build(self) -> Object {
        let RecordBuilder {
            def,
            slots,
            attributes,
        } = self;
        let mut attributes = Some(attributes);
        let mut out = Object::new();
        for (f, slot) in def.fields.iter().zip(slots) {
            if f.ty == FieldType::Attributes {
                out.insert(
                    f.name.to_string(),
                    Value::Object(attributes.take().unwrap_or_default()),
                );
            } else if let Some(value) = slot {
                out.insert(f.name.to_string(), value);
            }
        }
        out
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Object(_) | Value::Array(_))
}

/// Types a value for a field, or gives it back when it cannot be typed.
pub fn typed(ty: FieldType, value: Value) -> Result<Value, Value> {
    if value.is_null() && ty != FieldType::Key {
        return Ok(Value::Null);
    }
    match ty {
        FieldType::Key => match value {
            Value::String(s) if !s.is_empty() => Ok(Value::String(s)),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            other => Err(other),
        },
        FieldType::String => match value {
            Value::String(_) => Ok(value),
            Value::Number(n) => Ok(Value::String(n.to_string())),
            Value::Bool(b) => Ok(Value::String(b.to_string())),
            other => Err(other),
        },
        FieldType::Boolean => lenient_bool(&value).map(Value::Bool).ok_or(value),
        FieldType::DateTime => date_time(&value).map(Value::String).ok_or(value),
        FieldType::Attributes => match value {
            Value::Object(map) => {
                let mut out = Object::new();
                for (key, value) in map {
                    flatten_into(&mut out, &key, value);
                }
                Ok(Value::Object(out))
            }
            other => Err(other),
        },
    }
}

/// A key value as text: a non-blank string, or a number (vendors send numeric ids too).
pub fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean from JSON `true`/`false`, the strings `"True"`/`"false"` (any case, as Entra and
/// Guru's SCIM mapping send them) and `0`/`1`.
pub fn lenient_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Epoch numbers above this are milliseconds (it is 5138 AD in seconds, 1973 in milliseconds).
const EPOCH_MILLIS_ABOVE: i64 = 100_000_000_000;

/// An RFC 3339 date-time from what vendors send: RFC 3339 itself (kept exactly), a date-time
/// without an offset (read as UTC), a space instead of `T`, a bare date, or epoch seconds or
/// milliseconds.
pub fn date_time(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => {
            let s = s.trim();
            if DateTime::parse_from_rfc3339(s).is_ok() {
                return Some(s.to_string());
            }
            for format in [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f%:z",
                "%Y-%m-%d %H:%M:%S%.f%z",
                "%Y-%m-%dT%H:%M:%S%.f%z",
            ] {
                if let Ok(dt) = DateTime::parse_from_str(s, format) {
                    return Some(rfc3339(dt.with_timezone(&Utc)));
                }
                if let Ok(naive) = NaiveDateTime::parse_from_str(s, format) {
                    return Some(rfc3339(Utc.from_utc_datetime(&naive)));
                }
            }
            if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                return Some(rfc3339(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?)));
            }
            None
        }
        Value::Number(n) => {
            let n = n
                .as_i64()
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))?;
            let dt = if n.abs() > EPOCH_MILLIS_ABOVE {
                Utc.timestamp_millis_opt(n).single()?
            } else {
                Utc.timestamp_opt(n, 0).single()?
            };
            Some(rfc3339(dt))
        }
        _ => None,
    }
}

fn rfc3339(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// As [`flatten_into`], taking the key by value (no copy for a scalar).
pub fn flatten_owned(attributes: &mut Object, key: String, value: Value) {
    if is_scalar(&value) {
        attributes.insert(key, value);
    } else {
        flatten_into(attributes, &key, value);
    }
}

/// Puts a vendor value into an attributes object as scalars: objects are flattened with `.`
/// between keys, arrays are kept as JSON text, scalars as they are.
pub fn flatten_into(attributes: &mut Object, key: &str, value: Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (inner, value) in map {
                flatten_into(attributes, &format!("{key}.{inner}"), value);
            }
        }
        Value::Object(_) => {
            attributes.insert(key.to_string(), Value::String("{}".into()));
        }
        Value::Array(_) => {
            attributes.insert(key.to_string(), Value::String(value.to_string()));
        }
        scalar => {
            attributes.insert(key.to_string(), scalar);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stream_has_its_keys_required_and_typed_as_keys() {
        for def in STREAMS {
            let schema = def.schema();
            assert_eq!(schema["type"], "object");
            for key in def.key_properties {
                assert!(def.required.contains(key), "{}.{key}", def.name);
                assert_eq!(def.field(key).unwrap().ty, FieldType::Key);
            }
            for required in def.required {
                assert!(schema["properties"].get(*required).is_some());
            }
            assert!(def.field(ATTRIBUTES).is_some(), "{}", def.name);
            assert_eq!(find(def.name).unwrap().name, def.name);
        }
        assert_eq!(
            TAP_STREAMS.iter().map(|d| d.name).collect::<Vec<_>>(),
            ["users", "groups", "memberships"]
        );
        assert!(STREAMS.iter().filter(|d| !d.tap).all(|d| d.name == EVENTS));
    }

    #[test]
    fn schemas_give_types_formats_and_required_keys() {
        let users = USERS_DEF.schema();
        assert_eq!(users["required"], json!(["id"]));
        assert_eq!(users["properties"]["id"]["type"], "string");
        assert_eq!(
            users["properties"]["active"]["type"],
            json!(["boolean", "null"])
        );
        assert_eq!(users["properties"]["created_at"]["format"], "date-time");
        let memberships = MEMBERSHIPS_DEF.schema();
        assert_eq!(memberships["required"], json!(["group_id", "user_id"]));
        assert_eq!(
            memberships["properties"]["attributes"]["additionalProperties"]["type"],
            json!(["string", "number", "boolean", "null"])
        );
    }

    #[test]
    fn builds_typed_records_in_schema_order() {
        let mut b = RecordBuilder::new(&USERS_DEF);
        b.attribute("plan", json!("pro"))
            .field("active", "active", json!("False"))
            .field("created_at", "meta.created", json!("2024-01-02 03:04:05"))
            .field("email", "email", json!("a@x.io"))
            .key("id", "u1");
        let record = b.build();
        assert_eq!(
            Value::Object(record.clone()),
            json!({"id": "u1", "email": "a@x.io", "active": false, "created_at": "2024-01-02T03:04:05Z", "attributes": {"plan": "pro"}})
        );
        let keys: Vec<&str> = record.keys().map(String::as_str).collect();
        assert_eq!(keys, ["id", "email", "active", "created_at", "attributes"]);
    }

    #[test]
    fn values_that_cannot_be_typed_go_into_attributes() {
        let mut b = RecordBuilder::new(&USERS_DEF);
        b.key("id", "u1")
            .field("created_at", "dateCreated", json!("last tuesday"))
            .field("active", "enabled", json!("maybe"))
            .field("email", "mail", json!(null));
        assert_eq!(
            Value::Object(b.build()),
            json!({"id": "u1", "email": null, "attributes": {"dateCreated": "last tuesday", "enabled": "maybe"}})
        );
    }

    #[test]
    fn lenient_booleans_and_date_times() {
        for (raw, want) in [
            (json!(true), Some(true)),
            (json!("True"), Some(true)),
            (json!("FALSE"), Some(false)),
            (json!(0), Some(false)),
            (json!("yes please"), None),
        ] {
            assert_eq!(lenient_bool(&raw), want, "{raw}");
        }
        for (raw, want) in [
            (
                json!("2024-05-06T07:08:09.123+02:00"),
                Some("2024-05-06T07:08:09.123+02:00"),
            ),
            (json!("2024-05-06T07:08:09"), Some("2024-05-06T07:08:09Z")),
            (json!("2024-05-06"), Some("2024-05-06T00:00:00Z")),
            (json!(1_700_000_000), Some("2023-11-14T22:13:20Z")),
            (
                json!(1_700_000_000_123_i64),
                Some("2023-11-14T22:13:20.123Z"),
            ),
            (json!("soon"), None),
            (json!(true), None),
        ] {
            assert_eq!(date_time(&raw).as_deref(), want, "{raw}");
        }
    }

    #[test]
    fn attributes_are_flattened_to_scalars() {
        let mut attrs = Object::new();
        flatten_into(
            &mut attrs,
            "name",
            json!({"formatted": "Ann Lee", "honorific": {"prefix": "Dr"}}),
        );
        flatten_into(&mut attrs, "emails", json!([{"value": "a@x.io"}]));
        flatten_into(&mut attrs, "empty", json!({}));
        flatten_into(&mut attrs, "n", json!(3));
        assert_eq!(
            Value::Object(attrs),
            json!({"name.formatted": "Ann Lee", "name.honorific.prefix": "Dr", "emails": "[{\"value\":\"a@x.io\"}]", "empty": "{}", "n": 3})
        );
    }
}
