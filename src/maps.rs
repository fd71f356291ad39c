//! Hash maps for the record path. The engine looks up tickets, order keys, record keys and
//! identity values several times per record, millions of times a run; std's SipHash was a
//! measurable share of a dry run's instructions. These maps hash with foldhash instead: fast,
//! and seeded per process (the keys come from the user's own input, so SipHash's resistance to
//! crafted collisions buys nothing here that is worth its cost).

/// A `HashMap` hashed with foldhash.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// A `HashSet` hashed with foldhash.
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
