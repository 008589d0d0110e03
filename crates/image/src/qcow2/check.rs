//! Consistency check and repair: recompute every cluster's references from the metadata,
//! compare with the stored refcounts, and (on request) repair leaks, wrong counts and COPIED
//! flags, rebuilding the refcount structure when a referenced cluster has refcount zero.
//! Messages use qemu-img's words so scripts that grep them keep working.

use super::bitmap;
use super::header::{INCOMPAT_DIRTY, OFF_INCOMPAT, OFF_REFTABLE};
use super::l2::{self, Cluster, OFFSET_MASK, OFLAG_COPIED};
use super::{Meta, Qcow2};
use crate::driver::{CheckReport, Repair};
use crate::error::{Error, Result};
use crate::fileio;
use std::collections::HashMap;

const MAX_CHECK_CLUSTERS: u64 = 1 << 26;

/// Reference counts computed from the metadata. Sized by the file (plus what the refcount
/// structure claims), never by an unchecked field.
struct Refs {
    v: Vec<u32>,
    out_of_range: u64,
    file_len: u64,
}

impl Refs {
    fn inc(&mut self, r: &mut CheckReport, cb: u32, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        // As QEMU: the last cluster may be partly past the end of the file, but a region
        // ending a whole cluster or more past it is corrupt (it reads as zeros) and is not
        // counted, so the refcounts of clusters past the end are not "fixed" to point at it.
        if off.saturating_add(len) >= self.file_len.saturating_add(1 << cb) {
            r.corruptions += 1;
            r.messages.push(format!(
                "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset {off:#x} size {len:#x}"
            ));
            return;
        }
        let first = off >> cb;
        let last = (off + len - 1) >> cb;
        for c in first..=last {
            match self.v.get_mut(c as usize) {
                Some(x) => *x = x.saturating_add(1),
                None => {
                    self.out_of_range += 1;
                    r.corruptions += 1;
                    r.messages.push(format!(
                        "ERROR: cluster {c} is referenced but lies beyond the end of the image"
                    ));
                }
            }
        }
    }
}

struct Walk<'a> {
    m: &'a mut Meta,
    refs: Refs,
    r: CheckReport,
    /// References found in each clean L2 table: a table shared by many snapshots is decoded
    /// once and its references added again for each further L1 table that points at it.
    memo: HashMap<u64, Vec<(u64, u64)>>,
}

impl Walk<'_> {
    fn l1(&mut self, l1_off: u64, l1: &[u64], active: bool) -> Result<()> {
        let g = self.m.g;
        self.refs
            .inc(&mut self.r, g.cluster_bits, l1_off, l1.len() as u64 * 8);
        for (i, &e) in l1.iter().enumerate() {
            let l2off = e & OFFSET_MASK;
            if l2off == 0 {
                continue;
            }
            if !l2off.is_multiple_of(g.cs) {
                self.r.corruptions += 1;
                self.r.messages.push(format!(
                    "ERROR l2_offset={l2off:x}: Table is not cluster aligned; L1 entry corrupted"
                ));
                continue;
            }
            self.refs.inc(&mut self.r, g.cluster_bits, l2off, g.cs);
            if !active {
                if let Some(list) = self.memo.get(&l2off) {
                    for &(o, l) in list {
                        self.refs.inc(&mut self.r, g.cluster_bits, o, l);
                    }
                    continue;
                }
            }
            let t = match self.m.l2_load(l2off) {
                Ok(t) => std::mem::take(t),
                Err(_) => {
                    self.r.corruptions += 1;
                    self.r.messages.push(format!(
                        "ERROR l2_offset={l2off:x}: L2 table is outside the image file (L1 index {i})"
                    ));
                    continue;
                }
            };
            let errors = self.r.corruptions;
            let list = self.l2(&t, active);
            *self.m.l2_load(l2off)? = t;
            for &(o, l) in &list {
                self.refs.inc(&mut self.r, g.cluster_bits, o, l);
            }
            if self.r.corruptions == errors {
                self.memo.insert(l2off, list);
            }
        }
        Ok(())
    }

    /// Checks one L2 table and returns the host ranges it references.
    fn l2(&mut self, t: &[u64], active: bool) -> Vec<(u64, u64)> {
        let g = self.m.g;
        let mut out = Vec::new();
        let mut next_contiguous = 0u64;
        for j in 0..g.l2_entries as usize {
            let e = t[j * g.w()];
            let bm = if g.extended { t[j * g.w() + 1] } else { 0 };
            if e == 0 && bm == 0 {
                continue;
            }
            let c = match l2::decode(e, g.comp, g.cs, g.extended) {
                Ok(c) => c,
                Err(_) => {
                    self.r.corruptions += 1;
                    self.r.messages.push(format!(
                        "ERROR offset={:x}: Cluster is not properly aligned; L2 entry corrupted.",
                        e & OFFSET_MASK
                    ));
                    continue;
                }
            };
            match c {
                Cluster::Compressed { offset, len } => {
                    if e & OFLAG_COPIED != 0 {
                        self.r.corruptions += 1;
                        self.r.messages.push(format!(
                            "ERROR: coffset={offset:#x}: copied flag must never be set for compressed clusters"
                        ));
                    }
                    if g.extended && bm != 0 {
                        self.r.corruptions += 1;
                        self.r.messages.push(format!(
                            "ERROR compressed cluster {j} with non-zero subcluster allocation bitmap, entry={e:#x}"
                        ));
                    }
                    let start = offset & !511;
                    let sectors = (offset + len - start) / 512;
                    out.push((start, sectors * 512));
                    if active {
                        self.r.allocated_clusters += 1;
                        self.r.compressed_clusters += 1;
                        self.r.fragmented_clusters += 1;
                    }
                }
                Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                    if g.extended && (bm >> 32) & bm != 0 {
                        self.r.corruptions += 1;
                        self.r.messages.push(format!(
                            "ERROR invalid cluster entry found  (L2 index {j:#x}, entry {e:#x}, bitmap {bm:#x})"
                        ));
                    }
                    if active {
                        self.r.allocated_clusters += 1;
                        if next_contiguous != 0 && h != next_contiguous {
                            self.r.fragmented_clusters += 1;
                        }
                        next_contiguous = h + g.cs;
                    }
                    out.push((h, g.cs));
                }
                Cluster::ZeroPlain => {}
                Cluster::Unallocated => {
                    if g.extended && bm & 0xffff_ffff != 0 {
                        self.r.corruptions += 1;
                        self.r.messages.push(
                            "ERROR: Unallocated cluster has non-zero subcluster allocation map"
                                .into(),
                        );
                    }
                }
            }
        }
        out
    }
}

/// Computes references from everything but the refcount structure itself.
fn walk(m: &mut Meta, nclusters: usize) -> Result<(Refs, CheckReport)> {
    let g = m.g;
    let mut w = Walk {
        refs: Refs {
            v: vec![0u32; nclusters],
            out_of_range: 0,
            file_len: m.file_len,
        },
        r: CheckReport::default(),
        memo: HashMap::new(),
        m,
    };
    w.refs.inc(&mut w.r, g.cluster_bits, 0, g.cs);
    let l1 = w.m.l1.clone();
    let l1_off = w.m.hdr.l1_table_offset;
    w.l1(l1_off, &l1, true)?;
    let snaps = w.m.snapshots.clone();
    if !snaps.is_empty() {
        for s in &snaps {
            let l1 = super::read_table(&w.m.f, s.l1_table_offset, s.l1_size as u64)?;
            w.l1(s.l1_table_offset, &l1, false)?;
        }
        let len = super::snapshot::table_len(&snaps);
        let off = w.m.hdr.snapshots_offset;
        w.refs.inc(&mut w.r, g.cluster_bits, off, len);
    }
    // Bitmaps, in use or not (QEMU's qcow2_check_bitmaps_refcounts): the directory, each
    // table and each data cluster; an invalid table entry is a corruption.
    if let Some(dir) = w.m.bm.dir.clone() {
        w.refs.inc(&mut w.r, g.cluster_bits, dir.offset, dir.size);
        for b in &dir.bitmaps {
            w.refs.inc(
                &mut w.r,
                g.cluster_bits,
                b.table_offset,
                b.table_size as u64 * 8,
            );
            for e in bitmap::table_entries(&w.m.f, b)? {
                match bitmap::entry_ok_for_check(e, g.cs) {
                    None => w.r.corruptions += 1,
                    Some(0) => {}
                    Some(off) => w.refs.inc(&mut w.r, g.cluster_bits, off, g.cs),
                }
            }
        }
    }
    Ok((w.refs, w.r))
}

pub fn check(q: &Qcow2, repair: Repair) -> Result<CheckReport> {
    let mut m = q.lock();
    let g = m.g;
    if repair != Repair::None && q.read_only {
        return Err(Error::ReadOnly("Image is read-only".into()));
    }
    let file_len = fileio::file_len(&m.f)?;
    m.file_len = file_len;
    let file_clusters = file_len.div_ceil(g.cs);
    // The refcount structure may describe clusters past EOF (allocated, then killed before
    // the data write): cover them too, within reason.
    m.scan_end().or_else(|e| match e {
        Error::Corrupt(_) => Ok(()),
        e => Err(e),
    })?;
    // One counter per cluster of the file; a hostile sparse file can claim petabytes, so the
    // array is bounded (2^26 clusters: 4 TiB of file with 64 KiB clusters).
    let n = file_clusters.max(m.end).min(file_clusters + (1 << 16));
    if n > MAX_CHECK_CLUSTERS {
        return Err(Error::Unsupported(format!(
            "Image file is too large to check ({n} clusters; at most {MAX_CHECK_CLUSTERS})"
        )));
    }
    let n = n as usize;
    let (mut refs, mut r) = walk(&mut m, n)?;
    // The refcount table and its blocks.
    let rct = m.rct.clone();
    let rct_off = m.hdr.refcount_table_offset;
    refs.inc(
        &mut r,
        g.cluster_bits,
        rct_off,
        m.hdr.refcount_table_clusters as u64 * g.cs,
    );
    let mut bad_blocks = false;
    for (i, &e) in rct.iter().enumerate() {
        let off = e & OFFSET_MASK;
        if off == 0 {
            continue;
        }
        if !off.is_multiple_of(g.cs) {
            r.corruptions += 1;
            r.messages.push(format!(
                "ERROR refcount block {i} is not cluster aligned; refcount table entry corrupted"
            ));
            bad_blocks = true;
            continue;
        }
        if off >> g.cluster_bits >= file_clusters {
            r.corruptions += 1;
            r.messages
                .push(format!("ERROR refcount block {i} is outside image"));
            bad_blocks = true;
            continue;
        }
        refs.inc(&mut r, g.cluster_bits, off, g.cs);
    }
    // Compare.
    let mut rebuild = bad_blocks;
    let mut fixes: Vec<(u64, u64)> = Vec::new();
    let mut rebuild_errors = 0u64;
    let mut highest = 0u64;
    // Stored refcounts are read a refcount block at a time (per cluster, the lookups
    // dominated checks of small-cluster images).
    let mut disk_block: Vec<u64> = Vec::new();
    let mut block_start = 0u64;
    for i in 0..refs.v.len() as u64 {
        if i == block_start + disk_block.len() as u64 {
            block_start = i;
            let n = (g.rb_entries - (i & (g.rb_entries - 1))).min(refs.v.len() as u64 - i);
            disk_block = match m.refcounts_range(i, n) {
                Ok(v) => v,
                Err(_) => {
                    rebuild = true;
                    vec![0; n as usize]
                }
            };
        }
        let disk = disk_block[(i - block_start) as usize];
        let want = refs.v[i as usize] as u64;
        if disk != 0 || want != 0 {
            highest = highest.max(i + 1);
        }
        if disk == want {
            continue;
        }
        // A referenced cluster with refcount zero needs a rebuilt refcount structure; it is
        // reported as an error either way, as qemu-img does.
        let fixable = if disk == 0 {
            rebuild = true;
            false
        } else if disk > want {
            repair != Repair::None
        } else {
            repair == Repair::All
        };
        let what = if fixable {
            "Repairing"
        } else if disk < want {
            "ERROR"
        } else {
            "Leaked"
        };
        r.messages.push(format!(
            "{what} cluster {i} refcount={disk} reference={want}"
        ));
        if disk < want {
            r.corruptions += 1;
        } else {
            r.leaks += 1;
        }
        if disk == 0 {
            rebuild_errors += 1;
        } else if fixable {
            if disk < want {
                r.corruptions_fixed += 1;
            } else {
                r.leaks_fixed += 1;
            }
            fixes.push((i, want));
        }
    }
    if repair != Repair::None {
        if rebuild && repair == Repair::All {
            r.messages.push("Rebuilding refcount structure".into());
            let dropped = rebuild_refcounts(&mut m, refs.v)?;
            for c in dropped {
                r.messages
                    .push(format!("Repairing cluster {c} refcount=1 reference=0"));
            }
            r.corruptions_fixed += rebuild_errors;
        } else {
            for (c, d) in &fixes {
                m.rc_set(*c, *d)?;
            }
        }
        m.invalidate_caches();
    }
    // COPIED flags of the active tree, against the (repaired) refcounts.
    let copied_errors = copied_check(&mut m, &mut r, repair == Repair::All)?;
    if repair == Repair::All {
        if copied_errors > 0 {
            super::snapshot::fix_copied(&mut m)?;
            r.corruptions_fixed += copied_errors;
        }
        if m.hdr.incompatible_features & INCOMPAT_DIRTY != 0 {
            m.hdr.incompatible_features &= !INCOMPAT_DIRTY;
            let v = m.hdr.incompatible_features;
            fileio::write_full(&m.f, &v.to_be_bytes(), OFF_INCOMPAT)?;
        }
    }
    if repair != Repair::None {
        m.invalidate_caches();
        m.free_hint = 1;
        m.run_hint = 1;
        m.scan_end()?;
        highest = m.end;
        q.file.sync_data()?;
    }
    r.image_end_offset = highest * g.cs;
    r.total_clusters = q.virtual_size_pub().div_ceil(g.cs);
    Ok(r)
}

/// Checks COPIED flags in the active L1 and its L2 tables against the stored refcounts.
fn copied_check(m: &mut Meta, r: &mut CheckReport, fixing: bool) -> Result<u64> {
    let what = if fixing { "Repairing" } else { "ERROR" };
    let g = m.g;
    let mut errors = 0;
    for i in 0..m.l1.len() {
        let l1e = m.l1[i];
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 || !l2off.is_multiple_of(g.cs) {
            continue;
        }
        let rc = m.refcount(l2off >> g.cluster_bits).unwrap_or(0);
        if (rc == 1) != (l1e & OFLAG_COPIED != 0) {
            errors += 1;
            r.corruptions += 1;
            r.messages.push(format!(
                "{what} OFLAG_COPIED L2 cluster: l1_index={i} l1_entry={l1e:x} refcount={rc}"
            ));
        }
        let Ok(t) = m.l2_load(l2off).map(|t| t.clone()) else {
            continue;
        };
        for j in 0..g.l2_entries as usize {
            let e = t[j * g.w()];
            if let Ok(Cluster::Normal(h) | Cluster::ZeroAlloc(h)) =
                l2::decode(e, g.comp, g.cs, g.extended)
            {
                let rc = m.refcount(h >> g.cluster_bits).unwrap_or(0);
                if (rc == 1) != (e & OFLAG_COPIED != 0) {
                    errors += 1;
                    r.corruptions += 1;
                    r.messages.push(format!(
                        "{what} OFLAG_COPIED data cluster: l2_entry={e:x} refcount={rc}"
                    ));
                }
            }
        }
    }
    Ok(errors)
}

/// Writes a complete new refcount structure past everything referenced, then switches the
/// header to it. `refs` holds the references of all but the old refcount structure... plus the
/// old structure's own clusters, which are dropped here.
fn rebuild_refcounts(m: &mut Meta, mut refs: Vec<u32>) -> Result<Vec<u64>> {
    let mut dropped = Vec::new();
    let g = m.g;
    // Old table and blocks are no longer wanted.
    let old_off = m.hdr.refcount_table_offset;
    for c in 0..m.hdr.refcount_table_clusters as u64 {
        let c = (old_off >> g.cluster_bits) + c;
        if let Some(x) = refs.get_mut(c as usize) {
            *x = x.saturating_sub(1);
            dropped.push(c);
        }
    }
    for &e in &m.rct.clone() {
        let off = e & OFFSET_MASK;
        if off != 0 && off.is_multiple_of(g.cs) {
            if let Some(x) = refs.get_mut((off >> g.cluster_bits) as usize) {
                *x = x.saturating_sub(1);
                dropped.push(off >> g.cluster_bits);
            }
        }
    }
    let top = refs
        .iter()
        .rposition(|&x| x > 0)
        .map(|i| i + 1)
        .unwrap_or(1) as u64;
    let start = top.max(m.file_len.div_ceil(g.cs));
    let rb = g.rb_entries;
    let per = g.cs / 8;
    let (mut nb, mut tcl) = (1u64, 1u64);
    loop {
        let total = start + nb + tcl;
        let nb2 = total.div_ceil(rb);
        let tcl2 = nb2.div_ceil(per);
        if nb2 == nb && tcl2 == tcl {
            break;
        }
        nb = nb2;
        tcl = tcl2;
    }
    let total = start + nb + tcl;
    refs.resize(total as usize, 0);
    for c in start..total {
        refs[c as usize] = 1;
    }
    let max = if g.rc_order == 6 {
        u64::MAX
    } else {
        (1u64 << (1 << g.rc_order)) - 1
    };
    let mut table = vec![0u64; (tcl * per) as usize];
    for b in 0..nb {
        let mut block = vec![0u8; g.cs as usize];
        for i in 0..rb {
            let c = b * rb + i;
            if c >= total {
                break;
            }
            let v = (refs[c as usize] as u64).min(max);
            if v != 0 {
                Meta::rb_set(g.rc_order, &mut block, i, v);
            }
        }
        let off = (start + b) * g.cs;
        fileio::write_full(&m.f, &block, off)?;
        table[b as usize] = off;
    }
    let table_off = (start + nb) * g.cs;
    let mut raw = Vec::with_capacity(table.len() * 8);
    for e in &table {
        raw.extend_from_slice(&e.to_be_bytes());
    }
    fileio::write_full(&m.f, &raw, table_off)?;
    let mut hb = [0u8; 12];
    hb[..8].copy_from_slice(&table_off.to_be_bytes());
    hb[8..].copy_from_slice(&(tcl as u32).to_be_bytes());
    // Barrier: the new structure must be durable before the header points at it.
    m.f.sync_data()?;
    fileio::write_full(&m.f, &hb, OFF_REFTABLE)?;
    m.hdr.refcount_table_offset = table_off;
    m.hdr.refcount_table_clusters = tcl as u32;
    m.rct = table;
    m.file_len = m.file_len.max(total * g.cs);
    m.invalidate_caches();
    dropped.sort_unstable();
    Ok(dropped)
}

impl Qcow2 {
    fn virtual_size_pub(&self) -> u64 {
        self.size.load(std::sync::atomic::Ordering::Relaxed)
    }
}
