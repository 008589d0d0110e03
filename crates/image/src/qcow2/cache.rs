//! A small bounded cache of metadata tables keyed by host offset. Tables are written through to
//! disk by their owners, so entries are always clean and eviction never writes.

use std::collections::HashMap;

pub struct TableCache<T> {
    slots: Vec<(u64, T, u64)>,
    index: HashMap<u64, usize>,
    capacity: usize,
    clock: u64,
}

impl<T> TableCache<T> {
    pub fn new(capacity: usize) -> Self {
        TableCache {
            slots: Vec::new(),
            index: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let i = *self.index.get(&key)?;
        self.clock += 1;
        self.slots[i].2 = self.clock;
        Some(&mut self.slots[i].1)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Inserts, evicting the least recently used entry when full.
    pub fn insert(&mut self, key: u64, val: T) -> &mut T {
        self.clock += 1;
        if let Some(&i) = self.index.get(&key) {
            self.slots[i] = (key, val, self.clock);
            return &mut self.slots[i].1;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push((key, val, self.clock));
            self.slots.len() - 1
        } else {
            let (i, _) = self
                .slots
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.2)
                .expect("capacity is at least one");
            self.index.remove(&self.slots[i].0);
            self.slots[i] = (key, val, self.clock);
            i
        };
        self.index.insert(key, i);
        &mut self.slots[i].1
    }

    pub fn remove(&mut self, key: u64) {
        if let Some(i) = self.index.remove(&key) {
            let last = self.slots.len() - 1;
            self.slots.swap(i, last);
            self.slots.pop();
            if i != last {
                let k = self.slots[i].0;
                self.index.insert(k, i);
            }
        }
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.index.clear();
    }
}
