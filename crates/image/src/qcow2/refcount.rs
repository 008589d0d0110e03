//! Refcount table and blocks: reading and updating reference counts, and cluster allocation.
//!
//! Every update is written through before the caller links the cluster anywhere, so a kill at
//! any instant leaves refcounts that are at worst too high (leaked clusters), never too low.

use super::header::OFF_REFTABLE;
use super::Meta;
use crate::error::{corrupt, Error, Result};
use crate::fileio;

impl Meta {
    pub(super) fn rc_max(&self) -> u64 {
        if self.g.rc_order == 6 {
            u64::MAX
        } else {
            (1u64 << (1 << self.g.rc_order)) - 1
        }
    }

    /// Loads refcount block at `off` into the cache (validated) and returns it.
    fn rcb_load(&mut self, off: u64) -> Result<&mut Vec<u8>> {
        if !self.rcb.contains(off) {
            let cs = self.g.cs;
            if !off.is_multiple_of(cs) {
                return corrupt(format!("Refblock offset {off:#x} unaligned"));
            }
            if off + cs > self.file_len.div_ceil(cs) * cs {
                return corrupt(format!("Refblock at {off:#x} is past the end of the file"));
            }
            let mut buf = vec![0u8; cs as usize];
            fileio::read_full(&self.f, &mut buf, off)?;
            self.rcb.insert(off, buf);
        }
        Ok(self.rcb.get_mut(off).expect("just inserted"))
    }

    fn rb_get(&self, b: &[u8], i: u64) -> u64 {
        let i = i as usize;
        match self.g.rc_order {
            0 => (b[i / 8] >> (i % 8)) as u64 & 1,
            1 => (b[i / 4] >> (2 * (i % 4))) as u64 & 3,
            2 => (b[i / 2] >> (4 * (i % 2))) as u64 & 15,
            3 => b[i] as u64,
            4 => u16::from_be_bytes([b[2 * i], b[2 * i + 1]]) as u64,
            5 => u32::from_be_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as u64,
            _ => u64::from_be_bytes(b[8 * i..8 * i + 8].try_into().unwrap()),
        }
    }

    pub(super) fn rb_set(order: u32, b: &mut [u8], i: u64, v: u64) {
        let i = i as usize;
        match order {
            0..=2 => {
                let bits = 1usize << order;
                let per = 8 / bits;
                let shift = bits * (i % per);
                let mask = (((1u16 << bits) - 1) as u8) << shift;
                b[i / per] = (b[i / per] & !mask) | (((v as u8) << shift) & mask);
            }
            3 => b[i] = v as u8,
            4 => b[2 * i..2 * i + 2].copy_from_slice(&(v as u16).to_be_bytes()),
            5 => b[4 * i..4 * i + 4].copy_from_slice(&(v as u32).to_be_bytes()),
            _ => b[8 * i..8 * i + 8].copy_from_slice(&v.to_be_bytes()),
        }
    }

    /// Byte range in a refcount block holding entries [i, i+n).
    fn rb_bytes(&self, i: u64, n: u64) -> (usize, usize) {
        let bits = 1u64 << self.g.rc_order;
        let s = (i * bits) / 8;
        let e = ((i + n) * bits).div_ceil(8);
        (s as usize, e as usize)
    }

    pub(crate) fn refcount(&mut self, cluster: u64) -> Result<u64> {
        let ti = cluster >> self.g.rb_bits;
        let Some(&e) = self.rct.get(ti as usize) else {
            return Ok(0);
        };
        let off = e & super::l2::OFFSET_MASK;
        if off == 0 {
            return Ok(0);
        }
        let i = cluster & (self.g.rb_entries - 1);
        let b = self.rcb_load(off)?;
        let b = std::mem::take(b);
        let v = self.rb_get(&b, i);
        *self.rcb.get_mut(off).expect("loaded") = b;
        Ok(v)
    }

    /// Adds `delta` to the refcounts of clusters [start, start+n). The refcount blocks must
    /// exist (allocation creates them first); a missing one for a decrement is corruption.
    pub(crate) fn rc_update(&mut self, start: u64, n: u64, delta: i64) -> Result<()> {
        let mut c = start;
        let end = start + n;
        let max = self.rc_max();
        while c < end {
            let ti = c >> self.g.rb_bits;
            let i0 = c & (self.g.rb_entries - 1);
            let cnt = (self.g.rb_entries - i0).min(end - c);
            let off = match self.rct.get(ti as usize) {
                Some(&e) if e & super::l2::OFFSET_MASK != 0 => e & super::l2::OFFSET_MASK,
                _ => {
                    if delta > 0 {
                        self.ensure_rc_block(c)?
                    } else {
                        return corrupt(format!("Cluster {c:#x} has no refcount block"));
                    }
                }
            };
            let order = self.g.rc_order;
            let mut b = std::mem::take(self.rcb_load(off)?);
            let mut err = None;
            for i in i0..i0 + cnt {
                let v = self.rb_get(&b, i);
                let nv = if delta >= 0 {
                    v.checked_add(delta as u64).filter(|&x| x <= max)
                } else {
                    v.checked_sub(delta.unsigned_abs())
                };
                match nv {
                    Some(nv) => {
                        Self::rb_set(order, &mut b, i, nv);
                        if nv == 0 {
                            let cl = (ti << self.g.rb_bits) + i;
                            self.free_hint = self.free_hint.min(cl);
                            // The cluster compressed data was being packed into is gone.
                            if self.comp_cursor != 0
                                && (self.comp_cursor - 1) >> self.g.cluster_bits == cl
                            {
                                self.comp_cursor = 0;
                            }
                        }
                    }
                    None => {
                        err = Some(if delta > 0 {
                            Error::Invalid(format!(
                                "Refcount overflow for cluster {:#x}: the image's refcount_bits are too narrow",
                                (ti << self.g.rb_bits) + i
                            ))
                        } else {
                            Error::Corrupt(format!(
                                "Refcount underflow for cluster {:#x}",
                                (ti << self.g.rb_bits) + i
                            ))
                        });
                        break;
                    }
                }
            }
            let (s, e) = self.rb_bytes(i0, cnt);
            let wr = if err.is_none() {
                fileio::write_full(&self.f, &b[s..e], off + s as u64)
            } else {
                Ok(())
            };
            *self.rcb.get_mut(off).expect("loaded") = b;
            if let Some(e) = err {
                // Roll the cached block back to what is on disk.
                self.rcb.remove(off);
                return Err(e);
            }
            wr?;
            c += cnt;
        }
        if delta > 0 {
            self.end = self.end.max(end);
        }
        Ok(())
    }

    /// Sets one cluster's refcount (repairs). The block must exist unless `v` is 0.
    pub(crate) fn rc_set(&mut self, cluster: u64, v: u64) -> Result<()> {
        let cur = self.refcount(cluster)?;
        if cur == v {
            return Ok(());
        }
        if v > self.rc_max() {
            return Err(Error::Invalid(format!(
                "Refcount {v} does not fit the image's refcount width"
            )));
        }
        let ti = (cluster >> self.g.rb_bits) as usize;
        let off = match self.rct.get(ti) {
            Some(&e) if e & super::l2::OFFSET_MASK != 0 => e & super::l2::OFFSET_MASK,
            _ => self.ensure_rc_block(cluster)?,
        };
        let i = cluster & (self.g.rb_entries - 1);
        let order = self.g.rc_order;
        let mut b = std::mem::take(self.rcb_load(off)?);
        Self::rb_set(order, &mut b, i, v);
        let (s, e) = self.rb_bytes(i, 1);
        let wr = fileio::write_full(&self.f, &b[s..e], off + s as u64);
        *self.rcb.get_mut(off).expect("loaded") = b;
        wr?;
        if v == 0 {
            self.free_hint = self.free_hint.min(cluster);
        } else {
            self.end = self.end.max(cluster + 1);
        }
        Ok(())
    }

    /// Finds `n` contiguous free clusters (refcount 0). Beyond the last refcounted cluster
    /// everything is free. Single clusters fill holes from `free_hint`; runs start where the
    /// last run ended, so a long convert does not rescan the image for every allocation.
    fn find_free(&mut self, n: u64) -> Result<u64> {
        let mut c = if n == 1 {
            self.free_hint
        } else {
            self.free_hint.max(self.run_hint)
        }
        .max(1);
        'outer: while c < self.end {
            for k in 0..n {
                if c + k >= self.end {
                    break;
                }
                if self.refcount(c + k)? != 0 {
                    if n == 1 && c == self.free_hint {
                        self.free_hint = c + 1;
                    }
                    c += k + 1;
                    continue 'outer;
                }
            }
            return Ok(c);
        }
        Ok(c.max(self.end))
    }

    pub(super) fn rc_block_present(&self, cluster: u64) -> bool {
        self.rct
            .get((cluster >> self.g.rb_bits) as usize)
            .is_some_and(|e| e & super::l2::OFFSET_MASK != 0)
    }

    /// Allocates `n` contiguous clusters with refcount 1 and returns the host byte offset.
    pub(crate) fn alloc(&mut self, n: u64) -> Result<u64> {
        loop {
            let c = self.find_free(n)?;
            let cb = self.g.cluster_bits;
            if (c + n)
                .checked_shl(cb)
                .is_none_or(|e| e > super::MAX_HOST_OFFSET)
            {
                return Err(Error::Invalid("Image file would grow too large".into()));
            }
            // Every refcount block the run needs must exist first; creating one may take the
            // clusters we found, so search again afterwards.
            let mut x = c;
            let mut missing = None;
            while x < c + n {
                if !self.rc_block_present(x) {
                    missing = Some(x);
                    break;
                }
                x = ((x >> self.g.rb_bits) + 1) << self.g.rb_bits;
            }
            if let Some(x) = missing {
                self.ensure_rc_block(x)?;
                continue;
            }
            self.rc_update(c, n, 1)?;
            if n == 1 && self.free_hint == c {
                self.free_hint = c + 1;
            }
            if n > 1 {
                self.run_hint = c + n;
            }
            return Ok(c << cb);
        }
    }

    /// Creates the refcount block that covers `cluster`, growing the refcount table if needed.
    /// Returns the block's host offset.
    pub(super) fn ensure_rc_block(&mut self, cluster: u64) -> Result<u64> {
        loop {
            let ti = (cluster >> self.g.rb_bits) as usize;
            if let Some(&e) = self.rct.get(ti) {
                if e & super::l2::OFFSET_MASK != 0 {
                    return Ok(e & super::l2::OFFSET_MASK);
                }
            } else {
                self.grow_reftable(ti + 1)?;
                continue;
            }
            // The block goes at the first free cluster. If that cluster is covered by this very
            // block, the block describes itself; otherwise the covering block must exist first.
            let b = self.find_free(1)?;
            let bti = (b >> self.g.rb_bits) as usize;
            if bti != ti && !self.rc_block_present(b) {
                self.ensure_rc_block(b)?;
                continue;
            }
            let cs = self.g.cs;
            let off = b << self.g.cluster_bits;
            let mut block = vec![0u8; cs as usize];
            if bti == ti {
                Self::rb_set(self.g.rc_order, &mut block, b & (self.g.rb_entries - 1), 1);
                self.end = self.end.max(b + 1);
            } else {
                self.rc_update(b, 1, 1)?;
            }
            fileio::write_full(&self.f, &block, off)?;
            self.file_len = self.file_len.max(off + cs);
            self.rcb.insert(off, block);
            // Block content is on disk; only now publish it in the table.
            self.rct[ti] = off;
            fileio::write_full(
                &self.f,
                &off.to_be_bytes(),
                self.hdr.refcount_table_offset + ti as u64 * 8,
            )?;
            return Ok(off);
        }
    }

    /// Moves the refcount table to a new, larger place at the end of the file, together with
    /// the refcount blocks that describe the new table itself.
    fn grow_reftable(&mut self, min_entries: usize) -> Result<()> {
        // Refuse before any arithmetic over table slots: a hostile offset can ask for 2^40.
        if (min_entries as u64).saturating_mul(8) > super::header::MAX_REFTABLE_BYTES {
            return Err(Error::Corrupt(
                "Cluster offset is beyond what the refcount table can describe".into(),
            ));
        }
        let cs = self.g.cs;
        let per_cluster = cs / 8;
        let rb = self.g.rb_entries;
        // Everything new goes past all referenced clusters and past the file's end.
        let start = self.end.max(self.file_len.div_ceil(cs)).max(1);
        let want = (min_entries as u64).max(self.rct.len() as u64 * 3 / 2 + 1);
        let mut tcl = want.div_ceil(per_cluster);
        let missing_in = |rct: &[u64], from: u64, to: u64| {
            (from..=to)
                .filter(|&t| {
                    rct.get(t as usize)
                        .is_none_or(|e| e & super::l2::OFFSET_MASK == 0)
                })
                .count() as u64
        };
        // New blocks for [start, start+tcl+nb) go right after the table; find the fixed point
        // where the blocks cover the table, themselves, and the table has slots for them all.
        let mut nb = 0;
        loop {
            loop {
                let last_ti = (start + tcl + nb.max(1) - 1) / rb;
                let m = missing_in(&self.rct, start / rb, last_ti);
                if m <= nb {
                    break;
                }
                nb = m;
            }
            let entries = ((start + tcl + nb) / rb + 1).max(want);
            if entries.div_ceil(per_cluster) <= tcl {
                break;
            }
            tcl = entries.div_ceil(per_cluster);
        }
        if tcl * cs > super::header::MAX_REFTABLE_BYTES {
            return Err(Error::Invalid("Refcount table would grow too large".into()));
        }
        let table_off = start * cs;
        let mut table = self.rct.clone();
        table.resize((tcl * per_cluster) as usize, 0);
        // Assign new blocks to the missing table slots covering the new area.
        let mut next_block = start + tcl;
        let first_ti = start / rb;
        let last_ti = (start + tcl + nb.max(1) - 1) / rb;
        let mut new_blocks: Vec<(u64, Vec<u8>)> = Vec::new();
        for t in first_ti..=last_ti {
            if table[t as usize] & super::l2::OFFSET_MASK == 0 {
                table[t as usize] = next_block * cs;
                new_blocks.push((next_block * cs, vec![0u8; cs as usize]));
                next_block += 1;
            }
        }
        debug_assert_eq!(next_block, start + tcl + nb);
        // Refcounts of the table and the new blocks: set in whichever block covers them
        // (an existing one is updated in place before the table switch: a leak at worst).
        for c in start..start + tcl + nb {
            let t = c / rb;
            let i = c % rb;
            if let Some((_, b)) = new_blocks.iter_mut().find(|(o, _)| *o == table[t as usize]) {
                Self::rb_set(self.g.rc_order, b, i, 1);
            } else {
                self.rc_update(c, 1, 1)?;
            }
        }
        for (o, b) in &new_blocks {
            fileio::write_full(&self.f, b, *o)?;
        }
        let mut tb = Vec::with_capacity(table.len() * 8);
        for e in &table {
            tb.extend_from_slice(&e.to_be_bytes());
        }
        fileio::write_full(&self.f, &tb, table_off)?;
        // Switch the header to the new table in one write.
        let mut hb = [0u8; 12];
        hb[..8].copy_from_slice(&table_off.to_be_bytes());
        hb[8..].copy_from_slice(&(tcl as u32).to_be_bytes());
        // Barrier: the new structure must be durable before the header points at it.
        self.f.sync_data()?;
        fileio::write_full(&self.f, &hb, OFF_REFTABLE)?;
        let old_off = self.hdr.refcount_table_offset;
        let old_cl = self.hdr.refcount_table_clusters as u64;
        self.hdr.refcount_table_offset = table_off;
        self.hdr.refcount_table_clusters = tcl as u32;
        self.rct = table;
        for (o, b) in new_blocks {
            self.rcb.insert(o, b);
        }
        self.end = self.end.max(start + tcl + nb);
        self.file_len = self.file_len.max((start + tcl + nb) * cs);
        // The old table is no longer referenced.
        self.rc_update(old_off / cs, old_cl, -1)?;
        Ok(())
    }

    /// Releases a host range that held a cluster (or a compressed cluster's bytes).
    pub(crate) fn free_bytes(&mut self, off: u64, len: u64) -> Result<()> {
        let cb = self.g.cluster_bits;
        let first = off >> cb;
        let last = (off + len - 1) >> cb;
        self.rc_update(first, last - first + 1, -1)
    }

    /// Scans the refcount structure for the last used cluster (sets `end`).
    pub(crate) fn scan_end(&mut self) -> Result<()> {
        let mut end = 0;
        for ti in (0..self.rct.len()).rev() {
            let off = self.rct[ti] & super::l2::OFFSET_MASK;
            if off == 0 {
                continue;
            }
            let b = std::mem::take(self.rcb_load(off)?);
            let mut last = None;
            for i in (0..self.g.rb_entries).rev() {
                if self.rb_get(&b, i) != 0 {
                    last = Some(i);
                    break;
                }
            }
            *self.rcb.get_mut(off).expect("loaded") = b;
            if let Some(i) = last {
                end = ((ti as u64) << self.g.rb_bits) + i + 1;
                break;
            }
        }
        self.end = end;
        Ok(())
    }
}

impl Meta {
    /// Refcounts of clusters [start, start+n), read a refcount block at a time.
    pub(crate) fn refcounts_range(&mut self, start: u64, n: u64) -> Result<Vec<u64>> {
        let mut v = Vec::with_capacity(n as usize);
        let mut c = start;
        let end = start + n;
        while c < end {
            let ti = c >> self.g.rb_bits;
            let i0 = c & (self.g.rb_entries - 1);
            let cnt = (self.g.rb_entries - i0).min(end - c);
            let off = self
                .rct
                .get(ti as usize)
                .map(|e| e & super::l2::OFFSET_MASK)
                .unwrap_or(0);
            if off == 0 {
                v.extend(std::iter::repeat_n(0, cnt as usize));
            } else {
                let b = std::mem::take(self.rcb_load(off)?);
                for i in i0..i0 + cnt {
                    v.push(self.rb_get(&b, i));
                }
                *self.rcb.get_mut(off).expect("loaded") = b;
            }
            c += cnt;
        }
        Ok(v)
    }

    /// Rewrites the refcount structure with entries of 2^order bits (QEMU's
    /// qcow2_change_refcount_order): the new refcount blocks and table are allocated in the
    /// old structure (until nothing more needs allocating), written completely, made durable,
    /// then one header write switches width and table together; the old blocks and table are
    /// freed in the new structure afterwards. A kill at any point leaks at worst.
    pub(crate) fn change_refcount_order(
        &mut self,
        order: u32,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let cs = self.g.cs;
        let new_bits = 1u32 << order;
        let new_max = if order == 6 {
            u64::MAX
        } else {
            (1u64 << new_bits) - 1
        };
        let new_rb_bits = self.g.cluster_bits + 3 - order;
        let per_block = 1u64 << new_rb_bits;
        // Work over bounded windows of refcounts, one new refcount block's worth at a time.
        let nonempty_blocks = |m: &mut Meta| -> Result<Vec<u64>> {
            m.scan_end()?;
            let end = m.end;
            let mut v = Vec::new();
            let mut ti = 0;
            while ti * per_block < end {
                let n = per_block.min(end - ti * per_block);
                let r = m.refcounts_range(ti * per_block, n)?;
                if let Some(i) = r.iter().position(|&x| x > new_max) {
                    return Err(Error::Invalid(format!(
                        "Cannot decrease refcount entry width to {new_bits} bits: Cluster at offset {:#x} has a refcount of {}",
                        (ti * per_block + i as u64) << m.g.cluster_bits,
                        r[i]
                    )));
                }
                if r.iter().any(|&x| x != 0) {
                    v.push(ti);
                }
                ti += 1;
            }
            Ok(v)
        };
        let mut blocks: std::collections::BTreeMap<u64, u64> = Default::default();
        let (mut table_off, mut table_clusters) = (0u64, 0u64);
        let mut walks = 0u64;
        loop {
            walks += 1;
            progress(walks, walks + 2);
            let needed = nonempty_blocks(self)?;
            let mut changed = false;
            for &ti in &needed {
                if let std::collections::btree_map::Entry::Vacant(e) = blocks.entry(ti) {
                    let off = self.alloc(1)?;
                    e.insert(off);
                    changed = true;
                }
            }
            let entries = blocks.keys().next_back().map(|&t| t + 1).unwrap_or(1);
            let want = (entries * 8).div_ceil(cs);
            if want * cs > super::header::MAX_REFTABLE_BYTES {
                return Err(Error::Invalid(
                    "This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting".into(),
                ));
            }
            if want > table_clusters {
                if table_off != 0 {
                    self.free_bytes(table_off, table_clusters * cs)?;
                }
                table_off = self.alloc(want)?;
                table_clusters = want;
                changed = true;
            }
            if !changed {
                break;
            }
        }
        // Write pass: the refcounts as they stand now, which is what the switch makes current.
        self.scan_end()?;
        let end = self.end;
        let total_blocks = blocks.len() as u64;
        let mut table = vec![0u64; (table_clusters * cs / 8) as usize];
        for (k, (&ti, &off)) in blocks.iter().enumerate() {
            let start = ti * per_block;
            let n = per_block.min(end.saturating_sub(start));
            let r = self.refcounts_range(start, n)?;
            let mut block = vec![0u8; cs as usize];
            for (i, &x) in r.iter().enumerate() {
                if x != 0 {
                    Self::rb_set(order, &mut block, i as u64, x);
                }
            }
            fileio::write_full(&self.f, &block, off)?;
            self.file_len = self.file_len.max(off + cs);
            table[ti as usize] = off;
            progress(
                walks * total_blocks + k as u64,
                (walks + 1) * total_blocks.max(1),
            );
        }
        let mut raw = Vec::with_capacity(table.len() * 8);
        for e in &table {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        fileio::write_full(&self.f, &raw, table_off)?;
        self.file_len = self.file_len.max(table_off + table_clusters * cs);
        // Barrier, then the switch: reftable offset and clusters (48..60) and refcount_order
        // (96..100) lie in one write of bytes 48..100, the fields between written unchanged.
        self.f.sync_data()?;
        let mut h = self.hdr.clone();
        h.refcount_table_offset = table_off;
        h.refcount_table_clusters = table_clusters as u32;
        h.refcount_order = order;
        let bytes = h.serialize()?;
        fileio::write_full(&self.f, &bytes[48..100], 48)?;
        let old_table = std::mem::replace(&mut self.rct, table);
        let old_off = self.hdr.refcount_table_offset;
        let old_clusters = self.hdr.refcount_table_clusters as u64;
        self.hdr = h;
        self.g.rc_order = order;
        self.g.rb_bits = new_rb_bits;
        self.g.rb_entries = per_block;
        self.rcb.clear();
        self.free_hint = 1;
        self.run_hint = 1;
        self.scan_end()?;
        // The old structure is garbage now; a failure here only leaks.
        for e in old_table {
            let off = e & super::l2::OFFSET_MASK;
            if off != 0 {
                let _ = self.free_bytes(off, cs);
            }
        }
        let _ = self.free_bytes(old_off, old_clusters * cs);
        progress(1, 1);
        Ok(())
    }
}
