//! A small bounded cache of metadata tables keyed by host offset. Tables are written through to
//! disk by their owners, so entries are always clean and eviction never writes.

use std::collections::HashMap;

pub struct TableCache<T> {
    /// (key, table, referenced since the clock hand last passed)
    slots: Vec<(u64, T, bool)>,
    index: HashMap<u64, usize>,
    capacity: usize,
    /// CLOCK eviction (second chance): amortized O(1), where a least-recently-used scan
    /// over thousands of small-cluster tables made every miss slow.
    hand: usize,
}

impl<T> TableCache<T> {
    pub fn new(capacity: usize) -> Self {
        TableCache {
            slots: Vec::new(),
            index: HashMap::new(),
            capacity: capacity.max(1),
            hand: 0,
        }
    }

    pub fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let i = *self.index.get(&key)?;
        self.slots[i].2 = true;
        Some(&mut self.slots[i].1)
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    /// Inserts, evicting an entry not used since the clock hand last passed when full.
    pub fn insert(&mut self, key: u64, val: T) -> &mut T {
        if let Some(&i) = self.index.get(&key) {
            self.slots[i] = (key, val, true);
            return &mut self.slots[i].1;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push((key, val, true));
            self.slots.len() - 1
        } else {
            loop {
                if self.hand >= self.slots.len() {
                    self.hand = 0;
                }
                let h = self.hand;
                self.hand += 1;
                if std::mem::replace(&mut self.slots[h].2, false) {
                    continue;
                }
                self.index.remove(&self.slots[h].0);
                self.slots[h] = (key, val, true);
                break h;
            }
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
        self.hand = 0;
    }
}
