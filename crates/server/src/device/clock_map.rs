//! A bounded map that forgets its least recently used entries approximately (the CLOCK
//! algorithm), for the device cache's shards.
//!
//! Why not an exact LRU list: every hit of one moves its entry to the front, which touches the
//! entry's two neighbours and the head, each a likely cache miss in a map of 100,000 devices;
//! the boot storm's lookups were a visible part of a cached request. Here a hit sets one flag
//! in the entry it reads anyway. When full, a hand sweeps the entries in order, clearing the
//! flags it finds set and evicting the first entry whose flag is clear: an entry used since
//! the hand last passed survives a round.

use std::hash::{BuildHasher, Hash};

use indexmap::IndexMap;

#[derive(Debug)]
struct Slot<V> {
    value: V,
    used: bool,
}

#[derive(Debug)]
pub struct ClockMap<K, V, S> {
    entries: IndexMap<K, Slot<V>, S>,
    capacity: usize,
    /// Where the next eviction sweep starts.
    hand: usize,
}

impl<K: Hash + Eq, V, S: BuildHasher> ClockMap<K, V, S> {
    /// A map of at most `capacity` entries (at least one).
    pub fn with_hasher(capacity: usize, hasher: S) -> Self {
        let capacity = capacity.max(1);
        Self {
            // Grown as filled: a bound sized for millions of devices costs nothing until used.
            entries: IndexMap::with_hasher(hasher),
            capacity,
            hand: 0,
        }
    }

    /// The value, marking it used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        let slot = self.entries.get_mut(key)?;
        slot.used = true;
        Some(&slot.value)
    }

    /// The value, without marking it used.
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|slot| &slot.value)
    }

    /// Puts the value (marked used, in place of any under the same key), and returns the
    /// entry evicted to make room for it, if the map was full.
    pub fn push(&mut self, key: K, value: V) -> Option<(K, V)> {
        if let Some(slot) = self.entries.get_mut(&key) {
            *slot = Slot { value, used: true };
            return None;
        }
        let evicted = if self.entries.len() >= self.capacity {
            self.evict()
        } else {
            None
        };
        self.entries.insert(key, Slot { value, used: true });
        evicted
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        // The last entry takes the removed one's place: if that is behind the hand, the sweep
        // passes it over once, which an approximate recency allows.
        self.entries.swap_remove(key).map(|slot| slot.value)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.hand = 0;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry the hand stops at: the first not used since the hand last passed it.
    fn evict(&mut self) -> Option<(K, V)> {
        let len = self.entries.len();
        // Two rounds at most: the first clears every flag it passes.
        for _ in 0..=2 * len {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let (_, slot) = self.entries.get_index_mut(self.hand)?;
            if slot.used {
                slot.used = false;
                self.hand += 1;
            } else {
                let (key, slot) = self.entries.swap_remove_index(self.hand)?;
                return Some((key, slot.value));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    type Map = ClockMap<u32, u32, std::collections::hash_map::RandomState>;

    fn map(capacity: usize) -> Map {
        ClockMap::with_hasher(capacity, Default::default())
    }

    #[test]
    fn a_used_entry_outlives_an_unused_one() {
        let mut m = map(3);
        for k in 1..=3 {
            assert_eq!(m.push(k, k * 10), None);
        }
        // The first sweep clears every flag and takes the entry it started at; entries used
        // after it survive the next one.
        assert_eq!(m.push(4, 40), Some((1, 10)));
        assert_eq!(m.get(&2), Some(&20));
        assert_eq!(
            m.push(5, 50),
            Some((3, 30)),
            "2 was used since the hand passed"
        );
        assert_eq!(m.peek(&2), Some(&20));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn peek_does_not_count_as_a_use() {
        let mut m = map(2);
        m.push(1, 1);
        m.push(2, 2);
        m.push(3, 3); // sweeps: clears 1 and 2, evicts 1
        assert_eq!(m.peek(&2), Some(&2));
        assert_eq!(m.push(4, 4), Some((2, 2)));
    }

    #[test]
    fn replacing_a_key_evicts_nothing() {
        let mut m = map(2);
        m.push(1, 1);
        m.push(2, 2);
        assert_eq!(m.push(2, 22), None);
        assert_eq!(m.peek(&2), Some(&22));
        assert_eq!(m.len(), 2);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(u8, u32),
        Get(u8),
        Remove(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..24, any::<u32>()).prop_map(|(k, v)| Op::Push(k, v)),
            3 => (0u8..24).prop_map(Op::Get),
            1 => (0u8..24).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        /// Against a plain map: never more than the bound, every value is the last one put
        /// under its key, and an entry leaves only when removed, cleared or handed back as
        /// the one evicted for a new key when full.
        #[test]
        fn behaves_as_a_bounded_map(capacity in 1usize..8, ops in prop::collection::vec(op(), 0..200)) {
            let mut m = map(capacity);
            let mut model: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Push(k, v) => {
                        let k = u32::from(k);
                        let full = model.len() >= capacity && !model.contains_key(&k);
                        let evicted = m.push(k, v);
                        if full {
                            let (gone, value) = evicted.unwrap();
                            prop_assert_ne!(gone, k);
                            prop_assert_eq!(model.remove(&gone), Some(value));
                        } else {
                            prop_assert_eq!(evicted, None);
                        }
                        model.insert(k, v);
                    }
                    Op::Get(k) => {
                        let k = u32::from(k);
                        prop_assert_eq!(m.get(&k).copied(), model.get(&k).copied());
                    }
                    Op::Remove(k) => {
                        let k = u32::from(k);
                        prop_assert_eq!(m.remove(&k), model.remove(&k));
                    }
                    Op::Clear => {
                        m.clear();
                        model.clear();
                    }
                }
                prop_assert!(m.len() <= capacity);
                prop_assert_eq!(m.len(), model.len());
                for (k, v) in &model {
                    prop_assert_eq!(m.peek(k), Some(v));
                }
            }
        }
    }
}
