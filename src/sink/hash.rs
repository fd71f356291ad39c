//! [`PayloadHash`]: what a sink sent for a record, as a stable 128-bit hash. Its own module, so
//! the wire types (which hash a request body) and the settlements (which carry the hash) do not
//! import each other.

use std::fmt;

use serde::Serialize;
use serde_json::Value;

/// A stable 128-bit hash of the payload a sink sent for a record (xxh3 of the body's bytes), for
/// a future sync ledger: "was this exact payload accepted before?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadHash(pub u128);

/// The largest serialisation buffer [`PayloadHash::of_json`] keeps for the next body (bulk and
/// SCIM bodies can be far larger than a record's).
const PAYLOAD_BUFFER_KEEP: usize = 64 * 1024;

impl PayloadHash {
    /// The hash of some bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        PayloadHash(xxhash_rust::xxh3::xxh3_128(bytes))
    }

    /// The hash of a JSON value as serialised (into a per-thread buffer that is reused: one
    /// fresh, regrown `Vec` per record was a measurable share of a dry run, BENCHMARKS.md).
    pub fn of_json(value: &Value) -> Self {
        thread_local! {
            static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUFFER.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            buffer.clear();
            let hash = match serde_json::to_writer(&mut *buffer, value) {
                Ok(()) => Self::of_bytes(&buffer),
                Err(_) => PayloadHash(0),
            };
            // A rare huge body does not pin its memory to the thread.
            if buffer.capacity() > PAYLOAD_BUFFER_KEEP {
                *buffer = Vec::new();
            }
            hash
        })
    }
}

impl fmt::Display for PayloadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl Serialize for PayloadHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_hashes_are_stable_and_print_as_hex() {
        let a = PayloadHash::of_json(&json!({"id": "u1", "attributes": {"plan": "pro"}}));
        let b = PayloadHash::of_json(&json!({"id": "u1", "attributes": {"plan": "pro"}}));
        assert_eq!(a, b);
        assert_eq!(a.to_string().len(), 32);
        assert_ne!(a, PayloadHash::of_json(&json!({"id": "u2"})));
    }
}
