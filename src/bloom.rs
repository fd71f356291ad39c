//! [`Bloom`]: a Bloom filter of 128-bit hashes that grows by adding larger layers. It never says
//! "no" of a hash it was given and says "maybe" of about 1% of the others, in about 1.25 bytes a
//! hash. The ledger uses it for the keys a first sync has written (`ledger::filter`), the tap's
//! listings for the ids they moved to disk (`scim::dedupe`): a "maybe" is then checked where the
//! exact answer is kept, which is correct, only slower.

/// Bits per hash a layer is sized for (with [`PROBES`]: about 1% false "maybe").
const BITS_PER_HASH: usize = 10;

/// Bits set and tested per hash.
const PROBES: u64 = 7;

/// A growing Bloom filter (see the module's text).
#[derive(Debug)]
pub struct Bloom {
    layers: Vec<Layer>,
    first_layer: usize,
}

#[derive(Debug)]
struct Layer {
    bits: Vec<u64>,
    capacity: usize,
    len: usize,
}

impl Layer {
    fn new(capacity: usize) -> Self {
        Layer {
            bits: vec![0; (capacity * BITS_PER_HASH).div_ceil(64)],
            capacity,
            len: 0,
        }
    }

    /// The bit positions of a hash: double hashing on its two 64-bit halves, which must be
    /// independent (`h1 + i * h2`).
    fn positions(&self, hash: u128) -> impl Iterator<Item = usize> + use<> {
        let bits = (self.bits.len() * 64) as u64;
        let h1 = hash as u64;
        let h2 = ((hash >> 64) as u64) | 1;
        (0..PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % bits) as usize)
    }
}

impl Bloom {
    /// An empty filter whose first layer holds `first_layer` hashes (each next one twice as many).
    pub fn new(first_layer: usize) -> Self {
        Bloom {
            layers: Vec::new(),
            first_layer: first_layer.max(64),
        }
    }

    /// Adds a hash.
    pub fn insert(&mut self, hash: u128) {
        if self.layers.last().is_none_or(|l| l.len >= l.capacity) {
            let capacity = self
                .layers
                .last()
                .map_or(self.first_layer, |l| l.capacity * 2);
            self.layers.push(Layer::new(capacity));
        }
        if let Some(layer) = self.layers.last_mut() {
            for p in layer.positions(hash) {
                layer.bits[p / 64] |= 1 << (p % 64);
            }
            layer.len += 1;
        }
    }

    /// False only when `hash` was never inserted.
    pub fn may_contain(&self, hash: u128) -> bool {
        self.layers.iter().any(|layer| {
            layer
                .positions(hash)
                .all(|p| layer.bits[p / 64] & (1 << (p % 64)) != 0)
        })
    }

    /// How many layers it has grown.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn it_never_forgets_and_rarely_says_maybe() {
        let mut bloom = Bloom::new(4096);
        let keys = RandomState::new();
        let hash = |i: u64| (u128::from(keys.hash_one(i)) << 64) | u128::from(keys.hash_one(!i));
        assert!(!bloom.may_contain(hash(0)), "empty: nothing");
        for i in 0..300_000 {
            bloom.insert(hash(i));
        }
        assert!(bloom.layers() > 3, "grew by layers");
        assert!((0..300_000).all(|i| bloom.may_contain(hash(i))));
        let maybes = (1_000_000..1_100_000)
            .filter(|&i| bloom.may_contain(hash(i)))
            .count();
        assert!(maybes < 5_000, "{maybes} false maybes in 100,000");
    }
}
