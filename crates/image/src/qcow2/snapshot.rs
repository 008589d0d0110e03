//! Internal snapshots: the snapshot table, and create/apply/delete with their L1 tables and
//! refcounts.
//!
//! Refcount invariant (the one `qemu-img check` verifies): a data cluster's refcount is the
//! number of L1 tables (active and snapshots) whose tree reaches it, and an L2 table's refcount
//! is the number of L1 tables pointing at it. Increments always precede the reference they
//! account for, decrements follow its removal, so a crash leaks at worst.

use super::header::{Header, MAX_L1_BYTES, OFF_SNAPSHOTS};
use super::l2::{Cluster, OFFSET_MASK, OFLAG_COPIED};
use super::{Meta, Qcow2};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::SnapshotInfo;
use std::fs::File;
use std::sync::atomic::Ordering;

const MAX_EXTRA: u32 = 1024;
const MAX_TABLE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub l1_table_offset: u64,
    pub l1_size: u32,
    pub id: String,
    pub name: String,
    pub date_sec: u32,
    pub date_nsec: u32,
    pub vm_clock_nsec: u64,
    pub vm_state_size: u32,
    /// Extra data as stored (vm_state_size_large, disk_size, icount, then unknown fields).
    pub extra: Vec<u8>,
}

impl Snapshot {
    fn extra_u64(&self, at: usize) -> Option<u64> {
        self.extra
            .get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    }
    pub fn disk_size(&self) -> Option<u64> {
        self.extra_u64(8)
    }
    pub fn info(&self) -> SnapshotInfo {
        SnapshotInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            vm_state_size: self.extra_u64(0).unwrap_or(self.vm_state_size as u64),
            date_sec: self.date_sec as u64,
            date_nsec: self.date_nsec,
            vm_clock_nsec: self.vm_clock_nsec,
            icount: self.extra_u64(16).filter(|&v| v != u64::MAX),
            disk_size: self.disk_size(),
        }
    }

    fn serialize(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        out.extend_from_slice(&self.l1_size.to_be_bytes());
        out.extend_from_slice(&(self.id.len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.date_sec.to_be_bytes());
        out.extend_from_slice(&self.date_nsec.to_be_bytes());
        out.extend_from_slice(&self.vm_clock_nsec.to_be_bytes());
        out.extend_from_slice(&self.vm_state_size.to_be_bytes());
        out.extend_from_slice(&(self.extra.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.extra);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(self.name.as_bytes());
        let len = out.len() - start;
        out.resize(start + len.div_ceil(8) * 8, 0);
    }
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

/// Reads the snapshot table, bounding every size field before it is used.
pub fn read_table(f: &File, h: &Header, cs: u64, file_len: u64) -> Result<Vec<Snapshot>> {
    let mut out = Vec::with_capacity(h.nb_snapshots.min(1024) as usize);
    let mut off = h.snapshots_offset;
    let end_limit = h.snapshots_offset.saturating_add(MAX_TABLE_BYTES);
    for _ in 0..h.nb_snapshots {
        let mut fixed = [0u8; 40];
        if off.saturating_add(40) > file_len.min(end_limit) {
            return corrupt("Snapshot table is past the end of the file");
        }
        fileio::read_full(f, &mut fixed, off)?;
        let id_len = u16::from_be_bytes([fixed[12], fixed[13]]) as u64;
        let name_len = u16::from_be_bytes([fixed[14], fixed[15]]) as u64;
        let extra_len = be32(&fixed, 36);
        if extra_len > MAX_EXTRA {
            return corrupt("Too much extra metadata in snapshot table entry");
        }
        let var = extra_len as u64 + id_len + name_len;
        if off.saturating_add(40 + var) > file_len {
            return corrupt("Snapshot table is past the end of the file");
        }
        let mut rest = vec![0u8; var as usize];
        fileio::read_full(f, &mut rest, off + 40)?;
        let e = extra_len as usize;
        let sn = Snapshot {
            l1_table_offset: be64(&fixed, 0),
            l1_size: be32(&fixed, 8),
            date_sec: be32(&fixed, 16),
            date_nsec: be32(&fixed, 20),
            vm_clock_nsec: be64(&fixed, 24),
            vm_state_size: be32(&fixed, 32),
            extra: rest[..e].to_vec(),
            id: String::from_utf8_lossy(&rest[e..e + id_len as usize]).into_owned(),
            name: String::from_utf8_lossy(&rest[e + id_len as usize..]).into_owned(),
        };
        if sn.l1_size as u64 * 8 > MAX_L1_BYTES {
            return corrupt("Snapshot L1 table too large");
        }
        if sn.l1_size > 0 {
            super::header::check_table(
                sn.l1_table_offset,
                sn.l1_size as u64 * 8,
                cs,
                file_len,
                "Snapshot L1 table",
            )?;
        }
        off += (40 + var).div_ceil(8) * 8;
        out.push(sn);
    }
    Ok(out)
}

/// Bytes the table takes on disk.
pub(crate) fn table_len(list: &[Snapshot]) -> u64 {
    list.iter()
        .map(|s| (40 + s.extra.len() + s.id.len() + s.name.len()).div_ceil(8) as u64 * 8)
        .sum()
}

fn serialize_table(list: &[Snapshot]) -> Vec<u8> {
    let mut v = Vec::new();
    for s in list {
        s.serialize(&mut v);
    }
    v
}

fn read_l1(m: &Meta, sn: &Snapshot) -> Result<Vec<u64>> {
    super::read_table(&m.f, sn.l1_table_offset, sn.l1_size as u64)
}

/// Adds `delta` to the refcount of every L2 table and data cluster reachable from `l1`.
fn tree_refcounts(m: &mut Meta, l1: &[u64], delta: i64) -> Result<()> {
    let g = m.g;
    for &l1e in l1 {
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 {
            continue;
        }
        let t = m.l2_load(l2off)?.clone();
        for i in 0..g.l2_entries as usize {
            let e = t[i * g.w()];
            match m.decode(e)? {
                Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                    m.rc_update(h >> g.cluster_bits, 1, delta)?
                }
                Cluster::Compressed { offset, len } => {
                    let first = offset >> g.cluster_bits;
                    let last = (offset + len - 1) >> g.cluster_bits;
                    m.rc_update(first, last - first + 1, delta)?
                }
                Cluster::Unallocated | Cluster::ZeroPlain => {}
            }
        }
        m.rc_update(l2off >> g.cluster_bits, 1, delta)?;
    }
    Ok(())
}

/// Refuses, before anything is written, a snapshot whose refcounts would overflow.
fn check_headroom(m: &mut Meta, l1: &[u64]) -> Result<()> {
    let g = m.g;
    let max = m.rc_max();
    let probe = |m: &mut Meta, c: u64| -> Result<()> {
        if m.refcount(c)? >= max {
            return Err(Error::Invalid(format!(
                "Refcount overflow for cluster {c:#x}: refcount_bits={} is too narrow for another snapshot",
                1u32 << g.rc_order
            )));
        }
        Ok(())
    };
    for &l1e in l1 {
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 {
            continue;
        }
        probe(m, l2off >> g.cluster_bits)?;
        let t = m.l2_load(l2off)?.clone();
        for i in 0..g.l2_entries as usize {
            match m.decode(t[i * g.w()])? {
                Cluster::Normal(h) | Cluster::ZeroAlloc(h) => probe(m, h >> g.cluster_bits)?,
                Cluster::Compressed { offset, len } => {
                    for c in (offset >> g.cluster_bits)..=((offset + len - 1) >> g.cluster_bits) {
                        probe(m, c)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Sets COPIED in the active tree exactly where the refcount is 1, as QEMU requires.
pub(crate) fn fix_copied(m: &mut Meta) -> Result<()> {
    let g = m.g;
    for i in 0..m.l1.len() {
        let l1e = m.l1[i];
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 {
            continue;
        }
        let exclusive = m.refcount(l2off >> g.cluster_bits)? == 1;
        // Entries of shared tables are fixed too: their data is shared as well, so the flags
        // go off, which changes nothing for the snapshots that see the same table.
        {
            let t = m.l2_load(l2off)?.clone();
            let mut nt = t.clone();
            for j in 0..g.l2_entries as usize {
                let e = t[j * g.w()];
                let want = match m.decode(e)? {
                    Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                        m.refcount(h >> g.cluster_bits)? == 1
                    }
                    _ => false,
                };
                nt[j * g.w()] = if want {
                    e | OFLAG_COPIED
                } else {
                    e & !OFLAG_COPIED
                };
            }
            if nt != t {
                let mut raw = Vec::with_capacity(g.cs as usize);
                for v in &nt {
                    raw.extend_from_slice(&v.to_be_bytes());
                }
                fileio::write_full(&m.f, &raw, l2off)?;
                *m.l2_load(l2off)? = nt;
            }
        }
        let want = if exclusive {
            l1e | OFLAG_COPIED
        } else {
            l1e & !OFLAG_COPIED
        };
        if want != l1e {
            m.set_l1(i, want)?;
        }
    }
    Ok(())
}

/// Replaces the snapshot table: new table written, header switched in one write, old freed.
pub(crate) fn write_table(m: &mut Meta, list: Vec<Snapshot>) -> Result<()> {
    let g = m.g;
    let old_bytes = table_len(&m.snapshots);
    let old_off = m.hdr.snapshots_offset;
    let bytes = serialize_table(&list);
    let new_off = if bytes.is_empty() {
        0
    } else {
        let n = (bytes.len() as u64).div_ceil(g.cs);
        let off = m.alloc(n)?;
        let mut padded = bytes.clone();
        padded.resize((n * g.cs) as usize, 0);
        fileio::write_full(&m.f, &padded, off)?;
        m.file_len = m.file_len.max(off + n * g.cs);
        off
    };
    let mut hb = [0u8; 12];
    hb[..4].copy_from_slice(&(list.len() as u32).to_be_bytes());
    hb[4..].copy_from_slice(&new_off.to_be_bytes());
    // Barrier: the new structure must be durable before the header points at it.
    m.f.sync_data()?;
    fileio::write_full(&m.f, &hb, OFF_SNAPSHOTS)?;
    m.hdr.nb_snapshots = list.len() as u32;
    m.hdr.snapshots_offset = new_off;
    m.snapshots = list;
    if old_off != 0 && old_bytes > 0 {
        m.rc_update(old_off >> g.cluster_bits, old_bytes.div_ceil(g.cs), -1)?;
    }
    Ok(())
}

fn find(m: &Meta, name: &str) -> Option<usize> {
    m.snapshots
        .iter()
        .position(|s| s.id == name)
        .or_else(|| m.snapshots.iter().position(|s| s.name == name))
}

fn writable(m: &Meta) -> Result<()> {
    if m.hdr.incompatible_features & super::header::INCOMPAT_CORRUPT != 0 {
        return Err(Error::ReadOnly(
            "Image is corrupt; cannot be opened read/write".into(),
        ));
    }
    Ok(())
}

pub fn create(q: &Qcow2, name: &str) -> Result<()> {
    let mut m = q.lock();
    writable(&m)?;
    // Names need not be unique (QEMU allows it); IDs are.
    let g = m.g;
    let id = m
        .snapshots
        .iter()
        .filter_map(|s| s.id.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let l1 = m.l1.clone();
    check_headroom(&mut m, &l1)?;
    let l1_off = if l1.is_empty() {
        0
    } else {
        let n = (l1.len() as u64 * 8).div_ceil(g.cs);
        let off = m.alloc(n)?;
        let mut raw = Vec::with_capacity((n * g.cs) as usize);
        for e in &l1 {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw.resize((n * g.cs) as usize, 0);
        fileio::write_full(&m.f, &raw, off)?;
        m.file_len = m.file_len.max(off + n * g.cs);
        off
    };
    tree_refcounts(&mut m, &l1, 1)?;
    fix_copied(&mut m)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut extra = Vec::with_capacity(24);
    if g.version >= 3 {
        extra.extend_from_slice(&0u64.to_be_bytes()); // vm_state_size_large
        extra.extend_from_slice(&q.virtual_size_now().to_be_bytes()); // disk_size
        extra.extend_from_slice(&0u64.to_be_bytes()); // icount, as qemu-img writes it
    }
    let sn = Snapshot {
        l1_table_offset: l1_off,
        l1_size: l1.len() as u32,
        id: id.to_string(),
        name: name.to_string(),
        date_sec: now.as_secs() as u32,
        date_nsec: now.subsec_nanos(),
        vm_clock_nsec: 0,
        vm_state_size: 0,
        extra,
    };
    let mut list = m.snapshots.clone();
    list.push(sn);
    write_table(&mut m, list)
}

pub fn apply(q: &Qcow2, name: &str) -> Result<()> {
    let mut m = q.lock();
    writable(&m)?;
    let Some(i) = find(&m, name) else {
        return Err(Error::Invalid("snapshot not found".to_string()));
    };
    let sn = m.snapshots[i].clone();
    let g = m.g;
    let snap_l1 = read_l1(&m, &sn)?;
    if (snap_l1.len()) > m.l1.len() {
        q.resize_l1(&mut m, snap_l1.len() as u64)?;
    }
    tree_refcounts(&mut m, &snap_l1, 1)?;
    let old = m.l1.clone();
    let mut new = snap_l1.clone();
    new.resize(old.len(), 0);
    let mut raw = Vec::with_capacity(new.len() * 8);
    for e in &new {
        raw.extend_from_slice(&e.to_be_bytes());
    }
    let l1_off = m.hdr.l1_table_offset;
    fileio::write_full(&m.f, &raw, l1_off)?;
    m.l1 = new;
    tree_refcounts(&mut m, &old, -1)?;
    m.invalidate_caches();
    fix_copied(&mut m)?;
    if let Some(ds) = sn.disk_size() {
        if ds != q.virtual_size_now() && ds <= m.l1.len() as u64 * (g.cs << g.l2_bits) {
            m.set_size_field(ds)?;
            q.size.store(ds, Ordering::Relaxed);
        }
    }
    Ok(())
}

pub fn delete(q: &Qcow2, name: &str) -> Result<()> {
    let mut m = q.lock();
    writable(&m)?;
    let Some(i) = find(&m, name) else {
        return Err(Error::Invalid("snapshot not found".to_string()));
    };
    let g = m.g;
    let sn = m.snapshots[i].clone();
    let snap_l1 = read_l1(&m, &sn)?;
    let mut list = m.snapshots.clone();
    list.remove(i);
    write_table(&mut m, list)?;
    tree_refcounts(&mut m, &snap_l1, -1)?;
    if sn.l1_size > 0 {
        let n = (sn.l1_size as u64 * 8).div_ceil(g.cs);
        m.rc_update(sn.l1_table_offset >> g.cluster_bits, n, -1)?;
    }
    fix_copied(&mut m)
}

impl Qcow2 {
    fn virtual_size_now(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }
}
