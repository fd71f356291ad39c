//! A record's JSON, parsed with its first repeated object key remembered (as a JSON pointer):
//! the reader refuses such a record, since which value is meant is ambiguous.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// A JSON value that remembers the first repeated object key inside it, as a JSON pointer.
pub(crate) struct StrictValue {
    pub(crate) value: Value,
    pub(crate) duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl StrictVisitor {
    fn plain(value: Value) -> StrictValue {
        StrictValue {
            value,
            duplicate: None,
        }
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        Ok(Self::plain(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::String(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::Null))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(Self::plain(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<StrictValue, D::Error> {
        StrictValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        let mut duplicate = None;
        while let Some(item) = seq.next_element::<StrictValue>()? {
            if duplicate.is_none() {
                if let Some(inner) = item.duplicate {
                    duplicate = Some(format!("/{}{inner}", items.len()));
                }
            }
            items.push(item.value);
        }
        Ok(StrictValue {
            value: Value::Array(items),
            duplicate,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        let mut object = Map::new();
        let mut duplicate = None;
        while let Some(key) = map.next_key::<String>()? {
            let item: StrictValue = map.next_value()?;
            if duplicate.is_none()
                && let Some(inner) = &item.duplicate
            {
                duplicate = Some(format!("/{}{inner}", pointer_token(&key)));
            }
            // One hash per key (the entry), not two (a lookup, then an insert).
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(item.value);
                }
                Entry::Occupied(mut slot) => {
                    if duplicate.is_none() {
                        duplicate = Some(format!("/{}", pointer_token(slot.key())));
                    }
                    slot.insert(item.value);
                }
            }
        }
        Ok(StrictValue {
            value: Value::Object(object),
            duplicate,
        })
    }
}
