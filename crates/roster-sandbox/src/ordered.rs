//! Records kept in creation order with O(1) lookup by id, and paged from a cursor: what the
//! Userflow and SCIM stores keep their users and groups in.

use std::collections::{BTreeMap, HashMap};

/// Records kept in insertion (= creation) order with O(1) lookup by id.
#[derive(Debug)]
pub(crate) struct Ordered<T> {
    by_id: HashMap<String, (u64, T)>,
    order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered {
            by_id: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 1,
        }
    }
}

impl<T> Ordered<T> {
    pub(crate) fn get(&self, id: &str) -> Option<&T> {
        self.by_id.get(id).map(|(_, t)| t)
    }
    pub(crate) fn get_mut(&mut self, id: &str) -> Option<&mut T> {
        self.by_id.get_mut(id).map(|(_, t)| t)
    }
    pub(crate) fn seq(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).map(|(s, _)| *s)
    }
    pub(crate) fn insert(&mut self, id: String, t: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, id.clone());
        self.by_id.insert(id, (seq, t));
    }
    pub(crate) fn remove(&mut self, id: &str) -> Option<T> {
        let (seq, t) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some(t)
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.order
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, t)| (id, t)))
    }
    pub(crate) fn get_key_value(&self, id: &str) -> Option<(&String, &T)> {
        self.by_id.get_key_value(id).map(|(k, (_, t))| (k, t))
    }
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.by_id.values_mut().map(|(_, t)| t)
    }
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }
    /// One page in creation order after (or, descending, before) the cursor.
    pub(crate) fn page(
        &self,
        after: Option<u64>,
        desc: bool,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Page<'_, T> {
        let ids: Box<dyn Iterator<Item = &String>> = match (desc, after) {
            (false, Some(s)) => Box::new(self.order.range(s + 1..).map(|(_, id)| id)),
            (false, None) => Box::new(self.order.values()),
            (true, Some(s)) => Box::new(self.order.range(..s).rev().map(|(_, id)| id)),
            (true, None) => Box::new(self.order.values().rev()),
        };
        let mut out: Vec<_> = ids
            .filter_map(|id| self.by_id.get(id).map(|(_, t)| (id, t)))
            .filter(|(_, t)| keep(t))
            .take(limit + 1)
            .collect();
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }
}

/// One page of records and whether more follow.
pub(crate) type Page<'a, T> = (Vec<(&'a String, &'a T)>, bool);
