//! The consistency check (QEMU's qed-check.c): every table and data cluster referenced once,
//! offsets inside the file; unreferenced clusters are leaks. With repair, invalid offsets are
//! cleared (leaks cannot be reclaimed: QED never frees clusters) and, when nothing is left
//! to fix, the need-check flag is cleared.

use super::header::{self, qemu_bytes_to_clusters};
use super::{table, Qed};
use crate::driver::CheckReport;
use crate::error::{Error, Result};

/// QEMU allocates its bitmap with g_try_new0 and fails with ENOMEM when it cannot; a bitmap
/// larger than this (a sparse file of petabytes) is refused the same way.
const MAX_BITMAP_BITS: u64 = 1 << 31;

/// Table entries read at a time.
const CHUNK: u64 = 1 << 16;

struct Used {
    bits: Vec<u64>,
    n: u64,
}

impl Used {
    fn test_and_set(&mut self, i: u64) -> bool {
        if i >= self.n {
            // Cannot happen for validated offsets; counted as a double reference if it did.
            return true;
        }
        let (w, b) = ((i / 64) as usize, i % 64);
        let was = self.bits[w] & (1 << b) != 0;
        self.bits[w] |= 1 << b;
        was
    }
    /// Marks `n` clusters from `off`; false (and corruptions counted) if any was marked.
    fn mark(&mut self, r: &mut CheckReport, cs: u64, off: u64, n: u64) -> bool {
        let first = qemu_bytes_to_clusters(off, cs);
        let mut bad = 0;
        for c in first..first + n {
            if self.test_and_set(c) {
                bad += 1;
            }
        }
        r.corruptions += bad;
        bad == 0
    }
    fn get(&self, i: u64) -> bool {
        i < self.n && self.bits[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
}

pub fn check(img: &Qed, fix: bool) -> Result<CheckReport> {
    if fix {
        crate::driver::check_writable(img.read_only)?;
    }
    let g = img.geometry();
    let mut m = img.lock();
    let hdr = m.hdr;
    let file_size = m.file_size;
    let mut r = CheckReport::default();
    let nclusters = qemu_bytes_to_clusters(file_size, g.cs);
    if nclusters > MAX_BITMAP_BITS {
        return Err(Error::Io(std::io::Error::from_raw_os_error(libc::ENOMEM)));
    }
    let mut used = Used {
        bits: vec![0u64; nclusters.div_ceil(64) as usize],
        n: nclusters,
    };
    r.total_clusters = hdr.image_size.div_ceil(g.cs);
    used.mark(&mut r, g.cs, hdr.l1_table_offset, g.ts);

    let file = &img.file;
    let mut i = 0u64;
    while i < g.entries {
        let n = CHUNK.min(g.entries - i);
        let mut l1 = table::read_entries(file, hdr.l1_table_offset + i * 8, n as usize)?;
        let mut chunk_fixed = false;
        for e in l1.iter_mut() {
            let l2 = *e;
            if l2 == 0 {
                continue;
            }
            if !hdr.table_offset_valid(l2, file_size) {
                if fix {
                    *e = 0;
                    chunk_fixed = true;
                    r.corruptions_fixed += 1;
                } else {
                    r.corruptions += 1;
                }
                continue;
            }
            if !used.mark(&mut r, g.cs, l2, g.ts) {
                continue; // a table that overlaps another is not descended
            }
            if check_l2(img, &hdr, &mut used, &mut r, l2, fix, file_size).is_err() {
                r.check_errors += 1;
            }
        }
        if chunk_fixed {
            table::write_entries(file, hdr.l1_table_offset + i * 8, &l1)?;
            for (k, e) in l1.iter().enumerate() {
                if let Some(slot) = m.l1.get_mut((i + k as u64) as usize) {
                    *slot = *e;
                }
            }
        }
        i += n;
    }
    if fix {
        // Tables were rewritten behind the cache.
        m.l2.clear();
    }
    if r.check_errors == 0 {
        for c in hdr.header_size as u64..nclusters {
            if !used.get(c) {
                r.leaks += 1;
            }
        }
        if fix && r.corruptions == 0 && m.hdr.features & header::F_NEED_CHECK != 0 {
            // Fixes durable before the flag says the image is consistent.
            file.sync_data()?;
            m.hdr.features &= !header::F_NEED_CHECK;
            img.write_header(&m.hdr)?;
        }
    }
    Ok(r)
}

/// Checks one L2 table: statistics, offsets, references. Invalid entries are cleared with
/// `fix`.
fn check_l2(
    img: &Qed,
    hdr: &header::Header,
    used: &mut Used,
    r: &mut CheckReport,
    l2: u64,
    fix: bool,
    file_size: u64,
) -> Result<()> {
    let g = img.geometry();
    let mut last = 0u64;
    let mut i = 0u64;
    while i < g.entries {
        let n = CHUNK.min(g.entries - i);
        let mut t = table::read_entries(&img.file, l2 + i * 8, n as usize)?;
        let mut fixed = false;
        for e in t.iter_mut() {
            let off = *e;
            if off <= 1 {
                continue;
            }
            r.allocated_clusters += 1;
            if last != 0 && last.wrapping_add(g.cs) != off {
                r.fragmented_clusters += 1;
            }
            last = off;
            if !hdr.cluster_offset_valid(off, file_size) {
                if fix {
                    *e = 0;
                    fixed = true;
                    r.corruptions_fixed += 1;
                } else {
                    r.corruptions += 1;
                }
                continue;
            }
            used.mark(r, g.cs, off, 1);
        }
        if fixed {
            table::write_entries(&img.file, l2 + i * 8, &t)?;
        }
        i += n;
    }
    Ok(())
}
