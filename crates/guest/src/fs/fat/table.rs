//! The file allocation table: next-cluster lookups and cluster chains, walked with a length
//! bound and checked for loops (a chain that visits a cluster twice is corrupt).

use super::bpb::{FatKind, Geometry};
use crate::dev::BlockDev;
use crate::error::{corrupt, Result};

/// What a FAT entry says about the cluster after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Cluster(u32),
    End,
    Free,
    Bad,
}

/// A chain as runs of consecutive clusters: (first cluster, count).
#[derive(Debug, Clone, Default)]
pub struct Chain {
    pub runs: Vec<(u32, u32)>,
    pub clusters: u64,
    /// The chain reached its end-of-chain mark (rather than the requested length).
    pub ended: bool,
}

pub fn decode(kind: FatKind, raw: u32) -> Next {
    let (v, bad, end) = match kind {
        FatKind::Fat12 => (raw & 0xFFF, 0xFF7, 0xFF8),
        FatKind::Fat16 => (raw & 0xFFFF, 0xFFF7, 0xFFF8),
        FatKind::Fat32 => (raw & 0x0FFF_FFFF, 0x0FFF_FFF7, 0x0FFF_FFF8),
    };
    match v {
        0 => Next::Free,
        v if v >= end => Next::End,
        v if v == bad => Next::Bad,
        v => Next::Cluster(v),
    }
}

/// The raw entry for cluster `c` from a FAT image starting at byte 0 of `fat` (used when the
/// whole or a chunk of the FAT is in memory; `base` is the first cluster `fat` covers).
pub fn entry_in(kind: FatKind, fat: &[u8], c: u32) -> Option<u32> {
    let c = c as usize;
    match kind {
        FatKind::Fat12 => {
            let o = c + c / 2;
            let v = u16::from_le_bytes([*fat.get(o)?, *fat.get(o + 1)?]) as u32;
            Some(if c & 1 == 1 { v >> 4 } else { v & 0xFFF })
        }
        FatKind::Fat16 => Some(u16::from_le_bytes([*fat.get(2 * c)?, *fat.get(2 * c + 1)?]) as u32),
        FatKind::Fat32 => {
            let b = fat.get(4 * c..4 * c + 4)?;
            Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
}

/// Next cluster after `c` (which the caller has checked is a valid data cluster).
pub fn next(dev: &dyn BlockDev, g: &Geometry, c: u32) -> Result<Next> {
    let (off, len) = match g.kind {
        FatKind::Fat12 => (c as u64 * 3 / 2, 2),
        FatKind::Fat16 => (c as u64 * 2, 2),
        FatKind::Fat32 => (c as u64 * 4, 4),
    };
    if off + len > g.fat_len {
        return corrupt(format!("vfat: cluster {c} has no FAT entry"));
    }
    let mut b = [0u8; 4];
    dev.read_at(&mut b[..len as usize], g.fat_offset + off)?;
    let raw = u32::from_le_bytes(b);
    let raw = match g.kind {
        FatKind::Fat12 if c & 1 == 1 => raw >> 4,
        _ => raw,
    };
    Ok(decode(g.kind, raw))
}

/// Walks the chain from `first` for at most `max` clusters (stopping early at its end).
/// Every cluster must be a valid data cluster, and none may appear twice.
pub fn walk(dev: &dyn BlockDev, g: &Geometry, first: u32, max: u64) -> Result<Chain> {
    let mut ch = Chain::default();
    if max == 0 {
        return Ok(ch);
    }
    // No chain without repeats is longer than the number of clusters.
    let max = max.min(g.clusters as u64);
    let mut c = first;
    loop {
        if !g.valid_cluster(c) {
            return corrupt(format!("vfat: cluster {c} in a chain is out of range"));
        }
        match ch.runs.last_mut() {
            Some((s, n)) if *s as u64 + *n as u64 == c as u64 => *n += 1,
            _ => ch.runs.push((c, 1)),
        }
        ch.clusters += 1;
        if ch.clusters >= max {
            break;
        }
        match next(dev, g, c)? {
            Next::Cluster(n) => c = n,
            Next::End => {
                ch.ended = true;
                break;
            }
            Next::Free => return corrupt(format!("vfat: chain runs into free cluster after {c}")),
            Next::Bad => return corrupt(format!("vfat: chain runs into a bad cluster after {c}")),
        }
    }
    // Loop check: runs sorted by start must not overlap.
    let mut sorted = ch.runs.clone();
    sorted.sort_unstable();
    for w in sorted.windows(2) {
        if w[0].0 as u64 + w[0].1 as u64 > w[1].0 as u64 {
            return corrupt(format!(
                "vfat: cluster chain from {first} visits cluster {} twice (a loop)",
                w[1].0
            ));
        }
    }
    Ok(ch)
}

/// Counts the free clusters, reading the FAT in bounded chunks.
pub fn count_free(dev: &dyn BlockDev, g: &Geometry) -> Result<u64> {
    // A multiple of 12 bytes holds a whole, even number of entries for every width (FAT12
    // packs two entries in 3 bytes).
    let chunk: u64 = (1 << 16) / 12 * 12;
    let per_chunk: u64 = match g.kind {
        FatKind::Fat12 => chunk * 2 / 3,
        FatKind::Fat16 => chunk / 2,
        FatKind::Fat32 => chunk / 4,
    };
    let end = g.clusters as u64 + 2;
    let mut free = 0u64;
    let mut buf = vec![0u8; chunk as usize];
    let mut first = 0u64;
    while first < end {
        let off = first / per_chunk * chunk;
        let len = chunk.min(g.fat_len - off.min(g.fat_len));
        if len == 0 {
            break;
        }
        let b = &mut buf[..len as usize];
        dev.read_at(b, g.fat_offset + off)?;
        let last = (first + per_chunk).min(end);
        for c in first.max(2)..last {
            if let Some(raw) = entry_in(g.kind, b, (c - first) as u32) {
                if decode(g.kind, raw) == Next::Free {
                    free += 1;
                }
            }
        }
        first += per_chunk;
    }
    Ok(free)
}
