//! [`KeyFilter`]: the keys a first sync has written, in about 1.5 bytes a key. A Bloom filter
//! that grows by adding larger layers: it never says "no" of a key it was given, and says
//! "maybe" of about 1% of the others (those are then looked up in the file, which is correct,
//! only slower). A million keys take about 1.6 MB, where a set of 64-bit hashes took ~16 MB.

use std::hash::{BuildHasher, Hash};

use super::EntryKey;

/// Keys the first layer holds before the next, twice as large, is started.
const FIRST_LAYER: usize = 4096;

/// Bits per key a layer is sized for (with [`PROBES`]: about 1% false "maybe").
const BITS_PER_KEY: usize = 10;

/// Bits set and tested per key.
const PROBES: u64 = 7;

#[derive(Debug)]
struct Layer {
    bits: Vec<u64>,
    capacity: usize,
    len: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        Layer {
            bits: vec![0; (capacity * BITS_PER_KEY).div_ceil(64)],
            capacity,
            len: 0,
        }
    }

    /// The bit positions of a hash (double hashing: `h1 + i * h2`).
    fn positions(&self, hash: u64) -> impl Iterator<Item = usize> + use<> {
        let bits = (self.bits.len() * 64) as u64;
        let h1 = hash;
        let h2 = hash.rotate_left(32) | 1;
        (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }

    fn insert(&mut self, hash: u64) {
        for p in self.positions(hash) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.len += 1;
    }

    fn may_contain(&self, hash: u64) -> bool {
        self.positions(hash)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// The keys a run staged, as a growing Bloom filter (see the module's text).
#[derive(Debug, Default)]
pub(super) struct KeyFilter {
    layers: Vec<Layer>,
    hasher: foldhash::quality::FixedState,
}

impl KeyFilter {
    pub(super) fn insert(&mut self, key: &EntryKey) {
        let hash = self.hash(key);
        if self.layers.last().is_none_or(|l| l.len >= l.capacity) {
            let capacity = self.layers.last().map_or(FIRST_LAYER, |l| l.capacity * 2);
            self.layers.push(Layer::new(capacity));
        }
        if let Some(layer) = self.layers.last_mut() {
            layer.insert(hash);
        }
    }

    /// False only when `key` was never inserted.
    pub(super) fn may_contain(&self, key: &EntryKey) -> bool {
        if self.layers.is_empty() {
            return false;
        }
        let hash = self.hash(key);
        self.layers.iter().any(|l| l.may_contain(hash))
    }

    fn hash(&self, key: &EntryKey) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        key.hash(&mut hasher);
        std::hash::Hasher::finish(&hasher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Kind;

    #[test]
    fn every_key_inserted_is_found_across_layers_and_few_others_are() {
        let mut filter = KeyFilter::default();
        let key = |i: usize| EntryKey::new(Kind::Users, format!("user-{i}"));
        assert!(!filter.may_contain(&key(0)), "empty: no key");
        for i in 0..100_000 {
            filter.insert(&key(i));
        }
        assert!(filter.layers.len() > 3, "grew by layers");
        assert!((0..100_000).all(|i| filter.may_contain(&key(i))));
        let false_maybes = (100_000..200_000)
            .filter(|i| filter.may_contain(&key(*i)))
            .count();
        assert!(
            false_maybes < 5_000,
            "{false_maybes} false maybes in 100,000"
        );
    }
}
