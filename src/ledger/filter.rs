//! [`KeyFilter`]: the keys a first sync has written, in about 1.5 bytes a key. A Bloom filter
//! ([`crate::bloom::Bloom`])
//! that grows by adding larger layers: it never says "no" of a key it was given, and says
//! "maybe" of about 1% of the others (those are then looked up in the file, which is correct,
//! only slower). A million keys take about 1.6 MB, where a set of 64-bit hashes took ~16 MB.

use std::hash::{BuildHasher, Hash};

use super::EntryKey;
use crate::bloom::Bloom;

/// Keys the first layer holds before the next, twice as large, is started.
const FIRST_LAYER: usize = 4096;

/// The keys a run staged, as a growing Bloom filter (see the module's text).
#[derive(Debug)]
pub(super) struct KeyFilter {
    bloom: Bloom,
    hasher: foldhash::quality::FixedState,
}

impl Default for KeyFilter {
    fn default() -> Self {
        KeyFilter {
            bloom: Bloom::new(FIRST_LAYER),
            hasher: foldhash::quality::FixedState::default(),
        }
    }
}

impl KeyFilter {
    pub(super) fn insert(&mut self, key: &EntryKey) {
        let hash = self.hash(key);
        self.bloom.insert(hash);
    }

    /// False only when `key` was never inserted.
    pub(super) fn may_contain(&self, key: &EntryKey) -> bool {
        self.bloom.may_contain(self.hash(key))
    }

    /// The key's 64-bit hash, and the same rotated as the second half the filter probes with.
    fn hash(&self, key: &EntryKey) -> u128 {
        let mut hasher = self.hasher.build_hasher();
        key.hash(&mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        (u128::from(hash.rotate_left(32)) << 64) | u128::from(hash)
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
        assert!(filter.bloom.layers() > 3, "grew by layers");
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
