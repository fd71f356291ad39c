//! The record path's fast lane: a RECORD line turned straight into roster's record model on
//! the parse workers, checked against its stream's SCHEMA on the way, with no `serde_json` map
//! in between.
//!
//! The engine publishes, for each written stream, what a worker needs ([`Prepared`]: the
//! compiled SCHEMA, the stream's route, and the SCHEMA's [`Shape`] when it has one). A worker
//! that reads a RECORD of a published stream walks the record's fields once
//! ([`Prepared::item`]): each value is type-checked as the SCHEMA says and moved into an
//! [`Item`] by the same mapping code as every other record ([`StreamMap::item_of`]).
//!
//! It only ever says "yes, and here is the item" or "ask the engine": a record it is not sure
//! about (a repeated key, a value the SCHEMA refuses, a number it would have to judge, a SCHEMA
//! with a keyword it does not know) goes the engine's way, where `jsonschema` checks it and the
//! reject names the field exactly as before. The engine takes a worker's item only when the
//! stream's SCHEMA and route are still the ones the worker used (a SCHEMA that came in between
//! makes the engine check the record again).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::load::route::{ATTRIBUTES, Entry, StreamMap};
use crate::load::schema::StreamSchema;
use crate::maps::FastMap;
use crate::model::{self, PropKey};
use crate::singer::strict::StrictValue;
use crate::sink::{Item, Refusal};

/// The written streams the workers know, by name.
pub type Streams = Arc<FastMap<Box<str>, Arc<Prepared>>>;

/// What the workers know of each written stream; replaced whole when a SCHEMA comes.
#[derive(Debug, Clone, Default)]
pub struct Published(Arc<Mutex<Streams>>);

impl Published {
    /// The streams published now (a worker takes this once per chunk of lines).
    pub fn snapshot(&self) -> Streams {
        self.0.lock().clone()
    }

    /// Publishes a stream, or withdraws it (`None`: its records go the engine's way).
    pub fn set(&self, stream: &str, prepared: Option<Prepared>) {
        let mut guard = self.0.lock();
        let mut streams = FastMap::clone(&guard);
        match prepared {
            Some(prepared) => streams.insert(stream.into(), Arc::new(prepared)),
            None => streams.remove(stream),
        };
        *guard = Arc::new(streams);
    }
}

/// A written stream as a worker sees it.
#[derive(Debug)]
pub struct Prepared {
    /// The SCHEMA the record is checked against.
    pub schema: Arc<StreamSchema>,
    /// The stream's mapping.
    pub map: Arc<StreamMap>,
    shape: Shape,
}

impl Prepared {
    /// What the workers need for a stream with this SCHEMA and route, or `None` when its
    /// records must go the engine's way (a field mapping, or a SCHEMA the fast lane cannot
    /// check).
    pub fn new(schema: Arc<StreamSchema>, map: Arc<StreamMap>) -> Option<Prepared> {
        if map.mapping.is_some() || !map.nests_attributes() {
            return None;
        }
        let shape = Shape::compile(&schema.message.schema)?;
        if !shape.types.allows(Types::OBJECT) {
            return None;
        }
        Some(Prepared { schema, map, shape })
    }

    /// The record's item (or why the stream's mapping refuses it), or `None` when the engine
    /// must judge the record.
    pub fn item(&self, record: &RawValue) -> Option<Result<Item, Refusal>> {
        let mut de = serde_json::Deserializer::from_str(record.get());
        let entries = TopSeed { shape: &self.shape }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(self.map.item_of(entries))
    }
}

/// A record walked into its item while its line's envelope is read
/// ([`crate::singer::parse_record_with`]): what [`Prepared::item`] makes of the same text, and
/// the stream's [`Prepared`] it used. An error (the engine must judge the record) stops that
/// one-pass read; the line is then read again the usual way.
#[derive(Debug)]
pub struct ItemSeed<'p>(pub &'p Arc<Prepared>);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = (Arc<Prepared>, Result<Item, Refusal>);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let entries = TopSeed {
            shape: &self.0.shape,
        }
        .deserialize(deserializer)?;
        Ok((Arc::clone(self.0), self.0.map.item_of(entries)))
    }
}

/// The JSON types a SCHEMA allows, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types(u8);

impl Types {
    const NULL: u8 = 1;
    const BOOLEAN: u8 = 2;
    const INTEGER: u8 = 4;
    const NUMBER: u8 = 8;
    const STRING: u8 = 16;
    const ARRAY: u8 = 32;
    const OBJECT: u8 = 64;
    const ANY: Types = Types(127);

    fn of(name: &str) -> Option<u8> {
        Some(match name {
            "null" => Self::NULL,
            "boolean" => Self::BOOLEAN,
            "integer" => Self::INTEGER,
            "number" => Self::NUMBER | Self::INTEGER,
            "string" => Self::STRING,
            "array" => Self::ARRAY,
            "object" => Self::OBJECT,
            _ => return None,
        })
    }

    fn allows(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// Keywords that never make a value invalid (formats are not asserted: `StreamSchema`).
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "format",
    "$comment",
    "$schema",
    "$id",
    "readOnly",
    "writeOnly",
    "deprecated",
    "contentMediaType",
    "contentEncoding",
    "inclusion",
    "selected",
];

/// The part of a JSON Schema the fast lane checks itself: `type`, `properties`, `required`
/// and `additionalProperties: true`, with annotations. Any other keyword: no shape.
#[derive(Debug)]
struct Shape {
    types: Types,
    /// Each property's name (shared: [`crate::model::intern`]) and shape.
    properties: Vec<(PropKey, Shape)>,
    required: Vec<String>,
}

impl Shape {
    fn compile(schema: &Value) -> Option<Shape> {
        let object = match schema {
            Value::Bool(true) => {
                return Some(Shape {
                    types: Types::ANY,
                    properties: Vec::new(),
                    required: Vec::new(),
                });
            }
            Value::Object(object) => object,
            _ => return None,
        };
        let mut shape = Shape {
            types: Types::ANY,
            properties: Vec::new(),
            required: Vec::new(),
        };
        for (keyword, value) in object {
            match keyword.as_str() {
                "type" => shape.types = Self::types(value)?,
                "properties" => {
                    for (name, schema) in value.as_object()? {
                        shape
                            .properties
                            .push((model::intern(name), Shape::compile(schema)?));
                    }
                }
                "required" => {
                    for name in value.as_array()? {
                        shape.required.push(name.as_str()?.to_string());
                    }
                }
                "additionalProperties" => match value {
                    Value::Bool(true) => {}
                    Value::Object(o) if o.is_empty() => {}
                    _ => return None,
                },
                k if ANNOTATIONS.contains(&k) || k.starts_with("x-") => {}
                _ => return None,
            }
        }
        Some(shape)
    }

    fn types(value: &Value) -> Option<Types> {
        match value {
            Value::String(name) => Types::of(name).map(Types),
            Value::Array(names) => names.iter().try_fold(Types(0), |acc, name| {
                Some(Types(acc.0 | Types::of(name.as_str()?)?))
            }),
            _ => None,
        }
    }

    fn property(&self, name: &str) -> Option<&Shape> {
        self.named(name).map(|(_, s)| s)
    }

    /// A property's shared name and shape.
    fn named(&self, name: &str) -> Option<(&PropKey, &Shape)> {
        self.properties
            .iter()
            .find_map(|(k, s)| (k == name).then_some((k, s)))
    }

    /// True when `value` is valid here for sure; false when the engine must judge it.
    fn admits(&self, value: &Value) -> bool {
        let t = self.types;
        match value {
            Value::Null => t.allows(Types::NULL),
            Value::Bool(_) => t.allows(Types::BOOLEAN),
            // An integer is a number; a float is judged by the engine when only integers go.
            Value::Number(n) if n.is_f64() => t.allows(Types::NUMBER),
            Value::Number(_) => t.allows(Types::INTEGER),
            Value::String(_) => t.allows(Types::STRING),
            Value::Array(_) => t.allows(Types::ARRAY),
            Value::Object(map) => {
                t.allows(Types::OBJECT)
                    && self.required.iter().all(|r| map.contains_key(r))
                    && map
                        .iter()
                        .all(|(k, v)| self.property(k).is_none_or(|s| s.admits(v)))
            }
        }
    }
}

/// Why a worker gave a record to the engine (never shown: the engine judges it again).
#[derive(Debug)]
struct Unsure;

impl fmt::Display for Unsure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("for the engine to judge")
    }
}

/// A record's top-level fields, type-checked on the way.
struct TopSeed<'s> {
    shape: &'s Shape,
}

type Entries<'de> = Vec<(Cow<'de, str>, Entry)>;

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Entries<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Entries<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: Entries<'de> = Vec::with_capacity(16);
        let mut lookup = Lookup::new(Some(self.shape));
        while let Some(Key(key)) = map.next_key()? {
            let found = lookup.find(&key);
            if lookup.repeated(found, &key, entries.iter().map(|(k, _)| k.as_ref())) {
                return Err(de::Error::custom(Unsure));
            }
            let shape = found.map(|(_, s)| s);
            let entry = if key == ATTRIBUTES {
                map.next_value_seed(AttributesSeed { shape })?
            } else {
                Entry::Value(checked(map.next_value::<StrictValue>()?, shape)?)
            };
            entries.push((key, entry));
        }
        if !required(&self.shape.required, entries.iter().map(|(k, _)| k)) {
            return Err(de::Error::custom(Unsure));
        }
        Ok(entries)
    }
}

/// Finds a record's keys among a shape's properties, trying first the one after the last
/// found (taps write a record's fields in their SCHEMA's order), and notices a key given twice:
/// a bit per declared property, a comparison with the keys before only for the others.
struct Lookup<'s> {
    shape: Option<&'s Shape>,
    next: usize,
    seen: u64,
}

impl<'s> Lookup<'s> {
    fn new(shape: Option<&'s Shape>) -> Self {
        Lookup {
            shape,
            next: 0,
            seen: 0,
        }
    }

    /// The key's property: its place among the shape's properties, and its shape.
    fn find(&mut self, key: &str) -> Option<(usize, &'s Shape)> {
        let properties = &self.shape?.properties;
        let index = match properties.get(self.next) {
            Some((name, _)) if name == key => self.next,
            _ => properties.iter().position(|(name, _)| name == key)?,
        };
        self.next = index + 1;
        Some((index, &properties[index].1))
    }

    /// The shared name of the property at `index` (as [`Lookup::find`] gave it).
    fn name(&self, index: usize) -> PropKey {
        self.shape
            .and_then(|s| s.properties.get(index))
            .map_or_else(Default::default, |(name, _)| name.clone())
    }

    /// True when `key` (found as `found`) is among the keys before it (`before`).
    fn repeated<'k>(
        &mut self,
        found: Option<(usize, &Shape)>,
        key: &str,
        mut before: impl Iterator<Item = &'k str>,
    ) -> bool {
        match found {
            Some((index, _)) if index < 64 => {
                let bit = 1u64 << index;
                let seen = self.seen & bit != 0;
                self.seen |= bit;
                seen
            }
            _ => before.any(|k| k == key),
        }
    }
}

/// True when every required name is among `keys`.
fn required<'k>(required: &[String], keys: impl Iterator<Item = &'k Cow<'k, str>> + Clone) -> bool {
    required
        .iter()
        .all(|r| keys.clone().any(|k| k.as_ref() == r.as_str()))
}

/// A value parsed with its repeated keys noticed, and checked against its property's shape.
fn checked<E: de::Error>(value: StrictValue, shape: Option<&Shape>) -> Result<Value, E> {
    if value.duplicate.is_some() || shape.is_some_and(|s| !s.admits(&value.value)) {
        return Err(E::custom(Unsure));
    }
    Ok(value.value)
}

/// The record's `attributes`: its entries when it is an object, else the value.
struct AttributesSeed<'s> {
    shape: Option<&'s Shape>,
}

impl<'de> DeserializeSeed<'de> for AttributesSeed<'_> {
    type Value = Entry;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl AttributesSeed<'_> {
    fn scalar<E: de::Error>(&self, value: Value) -> Result<Entry, E> {
        checked(
            StrictValue {
                value,
                duplicate: None,
            },
            self.shape,
        )
        .map(Entry::Value)
    }
}

impl<'de> Visitor<'de> for AttributesSeed<'_> {
    type Value = Entry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("attributes")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self.shape.is_some_and(|s| !s.types.allows(Types::OBJECT)) {
            return Err(de::Error::custom(Unsure));
        }
        let mut entries: Vec<(PropKey, Value)> = Vec::with_capacity(16);
        let mut lookup = Lookup::new(self.shape);
        while let Some(Key(key)) = map.next_key()? {
            let found = lookup.find(&key);
            if lookup.repeated(found, &key, entries.iter().map(|(k, _)| k.as_ref())) {
                return Err(de::Error::custom(Unsure));
            }
            let value = checked(map.next_value::<StrictValue>()?, found.map(|(_, s)| s))?;
            // The SCHEMA's name when it declares this one: no key allocated per record.
            let key = match found {
                Some((index, _)) => lookup.name(index),
                None => PropKey::Owned(key.into_owned()),
            };
            entries.push((key, value));
        }
        if let Some(shape) = self.shape
            && !required(&shape.required, entries.iter().map(|(k, _)| k))
        {
            return Err(de::Error::custom(Unsure));
        }
        Ok(Entry::Nested(entries))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.scalar(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.scalar(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.scalar(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.scalar(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.scalar(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        match serde_json::Number::from_f64(v) {
            Some(n) => self.scalar(Value::Number(n)),
            None => Err(E::custom(Unsure)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.scalar(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.scalar(Value::String(v))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // An array in `attributes`: rare; the engine judges it.
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Err(de::Error::custom(Unsure))
    }
}

/// An object key, borrowed from the line when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests;
