//! L1/L2 table access: little-endian u64 offsets, cached in fixed-size slices so that memory
//! stays bounded whatever the table size (a QED table can be 1 GiB).

use crate::error::Result;
use crate::fileio;
use std::collections::HashMap;
use std::fs::File;

/// Entries per cached slice (32 KiB).
pub const SLICE: u64 = 4096;
/// Cached slices (16 MiB in all).
const CAPACITY: usize = 512;

/// Reads `n` entries at `off`.
pub fn read_entries(f: &File, off: u64, n: usize) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; n * 8];
    fileio::read_full(f, &mut raw, off)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Writes `v` as consecutive entries at `off`.
pub fn write_entries(f: &File, off: u64, v: &[u64]) -> Result<()> {
    let mut raw = Vec::with_capacity(v.len() * 8);
    for e in v {
        raw.extend_from_slice(&e.to_le_bytes());
    }
    fileio::write_full(f, &raw, off)?;
    Ok(())
}

/// Clean copies of L2 slices, keyed by (table offset, slice index); write-through.
pub struct SliceCache {
    slices: HashMap<(u64, u64), (u64, Vec<u64>)>,
    tick: u64,
    /// Entries per slice (the table's entry count when smaller than [`SLICE`]).
    len: u64,
}

impl SliceCache {
    pub fn new(table_entries: u64) -> SliceCache {
        SliceCache {
            slices: HashMap::new(),
            tick: 0,
            len: table_entries.min(SLICE),
        }
    }

    pub fn clear(&mut self) {
        self.slices.clear();
    }

    /// Entry `idx` of the L2 table at `table`.
    pub fn get(&mut self, f: &File, table: u64, idx: u64) -> Result<u64> {
        let key = (table, idx / self.len);
        self.tick += 1;
        let tick = self.tick;
        if let Some((t, s)) = self.slices.get_mut(&key) {
            *t = tick;
            return Ok(s[(idx % self.len) as usize]);
        }
        if self.slices.len() >= CAPACITY {
            if let Some(old) = self
                .slices
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| *k)
            {
                self.slices.remove(&old);
            }
        }
        let s = read_entries(f, table + key.1 * self.len * 8, self.len as usize)?;
        let v = s[(idx % self.len) as usize];
        self.slices.insert(key, (tick, s));
        Ok(v)
    }

    /// Sets entries `idx..idx + v.len()` of the table at `table`, on disk and in the cache.
    pub fn set(&mut self, f: &File, table: u64, idx: u64, v: &[u64]) -> Result<()> {
        write_entries(f, table + idx * 8, v)?;
        for (k, e) in v.iter().enumerate() {
            let i = idx + k as u64;
            if let Some((_, s)) = self.slices.get_mut(&(table, i / self.len)) {
                s[(i % self.len) as usize] = *e;
            }
        }
        Ok(())
    }
}
