//! Request bodies serialised once: [`encode_json`] writes a body into a pooled buffer and hands
//! back its bytes, which are what the HTTP client sends, what the payload hash
//! ([`super::PayloadHash`]) is taken from and what a dry run writes. [`Properties`] serialises an
//! item's property map straight from the item, without building (cloning) it first.
//!
//! The bytes are the ones `serde_json` wrote for the same body built as a `Value` (same key
//! order, same number and string forms), so a payload hash stored by an earlier version, which
//! hashed the `Value`'s serialisation, still compares equal for an unchanged record.

use std::cell::RefCell;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::model::Item;

/// The size of the blocks the per-thread pool carves bodies from. A body is a slice of its
/// block; a block is reused once every body cut from it is dropped.
const BLOCK: usize = 16 * 1024;

/// Serialises `body` as compact JSON into this thread's pooled buffer and returns the bytes
/// (a slice of a shared block: no copy, no allocation per body while blocks are reused).
pub fn encode_json<T: Serialize + ?Sized>(body: &T) -> Result<Bytes, serde_json::Error> {
    thread_local! {
        static POOL: RefCell<BytesMut> = RefCell::new(BytesMut::new());
        static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    // Serialised into a plain reused `Vec` first, then copied into the block in one piece:
    // `serde_json` writes a body in many small pieces (a quote, a key, a colon, …), and each
    // write through `BytesMut`'s `io::Write` adapter cost more than the copy.
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        let written = serde_json::to_writer(&mut *scratch, body);
        let bytes = written.map(|()| {
            POOL.with(|pool| {
                let mut buffer = pool.borrow_mut();
                buffer.clear();
                if buffer.capacity() < BLOCK / 4 {
                    // Takes the block back if every body cut from it is gone, else starts a
                    // new one.
                    buffer.reserve(BLOCK);
                }
                buffer.put_slice(&scratch);
                let body = buffer.split().freeze();
                // A rare huge body does not pin its block to the thread.
                if buffer.capacity() > 4 * BLOCK {
                    *buffer = BytesMut::new();
                }
                body
            })
        });
        if scratch.capacity() > 4 * BLOCK {
            *scratch = Vec::new();
        }
        bytes
    })
}

/// [`Item::properties`] as a serialisable view over the item: the standard fields in order (an
/// attribute of the same name gives the value, in the field's place), then the attributes that
/// are not standard fields. The same entries in the same order as the map `properties()` builds,
/// so the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct Properties<'a>(pub &'a Item);

impl Properties<'_> {
    /// True when the item has neither fields nor attributes (`properties()` would be empty).
    pub fn is_empty(&self) -> bool {
        self.0.fields.is_empty() && self.0.attributes.is_empty()
    }
}

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let item = self.0;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in item.fields.iter() {
            let value = item.attributes.get(&**key).unwrap_or(value);
            map.serialize_entry(key, value)?;
        }
        for (key, value) in item.attributes.iter() {
            if !item.fields.contains_key(&**key) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Kind};
    use crate::sink::PayloadHash;
    use serde_json::{Value, json};

    fn item(fields: Value, attributes: Value) -> Item {
        Item {
            kind: Kind::Users,
            action: Action::Upsert,
            id: Some("u1".into()),
            user_id: None,
            group_id: None,
            fields: fields
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            attributes: attributes
                .as_object()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn the_view_writes_the_bytes_properties_wrote_so_stored_hashes_still_match() {
        // A clash (the attribute's value in the field's place), null, floats, big integers,
        // escapes, unicode and a change object.
        let item = item(
            json!({"email": "a@x.io", "name": null, "first_name": "Zoë \"Z\"", "created_at": "2024-01-02T03:04:05Z"}),
            json!({"plan": "pro", "email": "b@x.io", "score": 0.1, "big": 18446744073709551615u64,
                   "neg": -12, "tab": "a\tb\u{1}", "logins": {"add": 1}, "exp": 1e300}),
        );
        let old = Value::Object(item.properties());
        let new = encode_json(&Properties(&item)).unwrap();
        assert_eq!(&new[..], serde_json::to_vec(&old).unwrap().as_slice());
        assert_eq!(PayloadHash::of_bytes(&new), PayloadHash::of_json(&old));
        assert!(!Properties(&item).is_empty());
        assert!(Properties(&self::item(json!({}), json!({}))).is_empty());
    }

    #[test]
    fn pooled_bodies_stay_intact_while_the_pool_is_reused() {
        let bodies: Vec<Bytes> = (0..5000)
            .map(|n| {
                encode_json(&json!({"id": format!("u{n}"), "pad": "x".repeat(n % 300)})).unwrap()
            })
            .collect();
        for (n, body) in bodies.iter().enumerate() {
            let value: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(value["id"], format!("u{n}"));
        }
    }
}
