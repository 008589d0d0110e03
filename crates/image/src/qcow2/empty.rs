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
        reset(q, &mut m, l1c, usize::MAX)
    } else {
        drop_active(&mut m)
    }
}

/// The fresh-layout reset; `stop_at` ends it before that step (tests simulate kills with it).
fn reset(q: &Qcow2, m: &mut Meta, l1c: u64, stop_at: usize) -> Result<()> {
    let g = m.g;
    let cs = g.cs;
    let f = q.file.clone();
    let incompat = m.hdr.incompatible_features | INCOMPAT_DIRTY;
    let clean = incompat & !INCOMPAT_DIRTY;
    let mut block = vec![0u8; cs as usize];
    for c in 0..3 + l1c {
        Meta::rb_set(g.rc_order, &mut block, c, 1);
    }
    let mut hb = [0u8; 20];
    hb[..8].copy_from_slice(&(3 * cs).to_be_bytes());
    hb[8..16].copy_from_slice(&cs.to_be_bytes());
    hb[16..].copy_from_slice(&1u32.to_be_bytes());
    let l1_off = m.hdr.l1_table_offset;
    let steps: [&dyn Fn() -> Result<()>; 8] = [
        &|| {
            fileio::write_full(&f, &incompat.to_be_bytes(), OFF_INCOMPAT)?;
            Ok(f.sync_data()?)
        },
        // From here on the refcounts may be wrong; the dirty bit says so.
        &|| {
            if l1_off != 0 && l1c > 0 {
                fileio::write_zeroes_slow(&f, l1_off, l1c * cs)?;
            }
            Ok(())
        },
        &|| Ok(fileio::write_zeroes_slow(&f, cs, (2 + l1c) * cs)?),
        &|| {
            fileio::write_full(&f, &hb, OFF_L1_OFFSET)?;
            Ok(f.sync_data()?)
        },
        &|| {
            fileio::write_full(&f, &(2 * cs).to_be_bytes(), cs)?;
            Ok(f.sync_data()?)
        },
        &|| {
            fileio::write_full(&f, &block, 2 * cs)?;
            Ok(f.sync_data()?)
        },
        &|| {
            fileio::write_full(&f, &clean.to_be_bytes(), OFF_INCOMPAT)?;
            Ok(f.sync_data()?)
        },
        &|| Ok(f.set_len((3 + l1c) * cs)?),
    ];
    for (i, step) in steps.iter().enumerate() {
        if i == stop_at {
            return Ok(());
        }
        step()?;
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qcow2::create::{create, CreateOptions};

    const MIB: u64 = 1 << 20;

    fn pattern(off: u64, len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((off as usize + i) as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// A base and a top showing the same content (as after commit copied the top down), the
    /// top with its own data, zero clusters and an L1 table of several clusters.
    fn setup(dir: &std::path::Path) -> Vec<u8> {
        let base = dir.join("base.qcow2");
        let top = dir.join("top.qcow2");
        let size = 64 * MIB;
        create(
            &base,
            &CreateOptions {
                size,
                cluster_size: 4096,
                ..Default::default()
            },
        )
        .unwrap();
        create(
            &top,
            &CreateOptions {
                size,
                cluster_size: 4096,
                backing_file: Some("base.qcow2".into()),
                backing_format: Some("qcow2".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let o = crate::OpenOptions {
            writable: true,
            ..Default::default()
        };
        let b = crate::open(&base, &o).unwrap();
        let t = crate::open(&top, &o).unwrap();
        for (i, off) in [0u64, 5 * MIB, 17 * MIB + 4096, 63 * MIB]
            .iter()
            .enumerate()
        {
            let d = pattern(*off, 300_000.min((size - off) as usize), i as u8);
            b.write_at(&d, *off).unwrap();
            t.write_at(&d, *off).unwrap();
        }
        t.write_zeroes(40 * MIB, MIB, false).unwrap();
        b.write_zeroes(40 * MIB, MIB, false).unwrap();
        let mut all = vec![0u8; size as usize];
        t.read_at(&mut all, 0).unwrap();
        all
    }

    /// A kill at any step of the reset leaves an image that a read-write open repairs, that
    /// checks clean afterwards, and that reads as before (QEMU's qemu-io too, when present).
    #[test]
    fn reset_survives_a_kill_at_every_step() {
        for stop in 0..=8 {
            let dir = tempfile::tempdir().unwrap();
            let want = setup(dir.path());
            let top = dir.path().join("top.qcow2");
            {
                let q = Qcow2::open(&top, true).unwrap().image;
                let mut m = q.lock();
                m.begin_write().unwrap();
                let l1c = (m.l1.len() as u64 * 8).div_ceil(m.g.cs);
                assert!(l1c >= 1);
                reset(&q, &mut m, l1c, stop).unwrap();
            }
            let qemu_io = std::env::var("QEMU_IO").unwrap_or_else(|_| "/usr/bin/qemu-io".into());
            if std::path::Path::new(&qemu_io).exists() {
                let copy = dir.path().join("copy.qcow2");
                std::fs::copy(&top, &copy).unwrap();
                let o = std::process::Command::new(&qemu_io)
                    .args(["-f", "qcow2", "-c", "read 0 64M"])
                    .arg(&copy)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "stop {stop}: qemu-io: {o:?}");
            }
            let o = crate::OpenOptions {
                writable: true,
                ..Default::default()
            };
            let t = crate::open(&top, &o).unwrap();
            let r = t.check(crate::Repair::None).unwrap();
            assert_eq!(
                (r.corruptions, r.leaks),
                (0, 0),
                "stop {stop}: {:?}",
                r.messages
            );
            let mut got = vec![0u8; want.len()];
            t.read_at(&mut got, 0).unwrap();
            assert!(got == want, "stop {stop}: content changed");
            // Finishing the job afterwards works.
            t.make_empty().unwrap();
            t.read_at(&mut got, 0).unwrap();
            assert!(got == want, "stop {stop}: content changed after emptying");
        }
    }
}
