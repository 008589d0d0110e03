//! Emptying an image after `commit` (QEMU's qcow2_make_empty): afterwards every read falls
//! through to the backing file.
//!
//! A v3 image without snapshots or bitmaps is reset to a fresh layout (header, refcount table,
//! one refcount block, zeroed L1), the file truncated, as QEMU's make_completely_empty does;
//! the dirty bit is set for the duration, so a kill in between leaves an image that is
//! rebuilt on the next read-write open (by us or by QEMU) and reads as empty meanwhile.
//! Otherwise every cluster of the active L1 is dropped (snapshots keep theirs), the L1 table
//! cleared before any refcount is decremented, so a kill leaves at worst leaked clusters.

use super::header::{self, INCOMPAT_DIRTY, OFF_INCOMPAT};
use super::l2::OFFSET_MASK;
use super::{Meta, Qcow2};
use crate::error::Result;
use crate::fileio;

/// Byte offset of l1_table_offset, refcount_table_offset and refcount_table_clusters.
const OFF_L1_OFFSET: u64 = 40;

pub(super) fn make_empty(q: &Qcow2) -> Result<()> {
    q.check_writable()?;
    let mut m = q.lock();
    m.begin_write()?;
    let g = m.g;
    let l1c = (m.l1.len() as u64 * 8).div_ceil(g.cs);
    let simple = g.version >= 3
        && m.snapshots.is_empty()
        && m.hdr.nb_snapshots == 0
        && m.hdr.bitmaps_ext().is_none()
        && m.hdr.crypt_method == 0
        && m.hdr.incompatible_features & header::INCOMPAT_DATA_FILE == 0
        && 3 + l1c <= g.rb_entries;
    if simple {
        reset(q, &mut m, l1c)
    } else {
        drop_active(&mut m)
    }
}

fn reset(q: &Qcow2, m: &mut Meta, l1c: u64) -> Result<()> {
    let g = m.g;
    let cs = g.cs;
    let f = q.file.clone();
    let incompat = m.hdr.incompatible_features | INCOMPAT_DIRTY;
    fileio::write_full(&f, &incompat.to_be_bytes(), OFF_INCOMPAT)?;
    f.sync_data()?;
    m.hdr.incompatible_features = incompat;
    // From here on the refcounts may be wrong; the dirty bit says so.
    if m.hdr.l1_table_offset != 0 && l1c > 0 {
        fileio::write_zeroes_slow(&f, m.hdr.l1_table_offset, l1c * cs)?;
    }
    fileio::write_zeroes_slow(&f, cs, (2 + l1c) * cs)?;
    let mut hb = [0u8; 20];
    hb[..8].copy_from_slice(&(3 * cs).to_be_bytes());
    hb[8..16].copy_from_slice(&cs.to_be_bytes());
    hb[16..].copy_from_slice(&1u32.to_be_bytes());
    fileio::write_full(&f, &hb, OFF_L1_OFFSET)?;
    f.sync_data()?;
    fileio::write_full(&f, &(2 * cs).to_be_bytes(), cs)?;
    f.sync_data()?;
    let mut block = vec![0u8; cs as usize];
    for c in 0..3 + l1c {
        Meta::rb_set(g.rc_order, &mut block, c, 1);
    }
    fileio::write_full(&f, &block, 2 * cs)?;
    f.sync_data()?;
    let clean = incompat & !INCOMPAT_DIRTY;
    fileio::write_full(&f, &clean.to_be_bytes(), OFF_INCOMPAT)?;
    f.sync_data()?;
    f.set_len((3 + l1c) * cs)?;

    m.hdr.incompatible_features = clean;
    m.hdr.l1_table_offset = 3 * cs;
    m.hdr.refcount_table_offset = cs;
    m.hdr.refcount_table_clusters = 1;
    let n = m.l1.len();
    m.l1 = vec![0; n];
    m.rct = vec![0; (cs / 8) as usize];
    m.rct[0] = 2 * cs;
    m.invalidate_caches();
    m.free_hint = 3 + l1c;
    m.run_hint = 3 + l1c;
    m.end = 3 + l1c;
    m.comp_cursor = 0;
    m.file_len = (3 + l1c) * cs;
    Ok(())
}

fn drop_active(m: &mut Meta) -> Result<()> {
    let g = m.g;
    let old = std::mem::take(&mut m.l1);
    let n = old.len();
    m.l1 = vec![0; n];
    if m.hdr.l1_table_offset != 0 && n > 0 {
        fileio::write_zeroes_slow(&m.f, m.hdr.l1_table_offset, n as u64 * 8)?;
    }
    // No reference is left before any count goes down.
    m.f.sync_data()?;
    for e in old {
        let l2off = e & OFFSET_MASK;
        if l2off == 0 {
            continue;
        }
        let t = m.l2_load(l2off)?.clone();
        for i in (0..t.len()).step_by(g.w()) {
            if t[i] == 0 {
                continue;
            }
            let c = m.decode(t[i])?;
            m.release(c)?;
        }
        m.l2.remove(l2off);
        m.rc_update(l2off >> g.cluster_bits, 1, -1)?;
    }
    m.drop_comp_cache();
    Ok(())
}
