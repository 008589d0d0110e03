//! Block maps of the data and attribute forks: packed 128-bit extent records, kept either in
//! the inode (extents format) or in a B+tree whose root lives in the inode (btree format,
//! interior and leaf blocks "BMAP" on v4, "BMA3" with CRC/owner/location on v5).
//!
//! The whole map of a fork is loaded at once into a sorted, validated list: every record is
//! checked to lie inside its AG and to follow the previous one, which also stops a btree
//! whose pointers revisit blocks (the repeated records would not be in order).

use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS};
use super::{be16, be32, be64, verify_crc, Xfs};
use crate::dev::BlockDev;
use crate::error::{corrupt, Result};
use std::sync::Arc;

const BMAP_MAGIC: u32 = 0x424d_4150; // "BMAP"
const BMA3_MAGIC: u32 = 0x424d_4133; // "BMA3"
/// The kernel's bound is computed from the geometry and is below this for any real file.
const MAX_LEVELS: u16 = 10;

#[derive(Debug, Clone, Copy)]
pub(super) struct Extent {
    /// First file block.
    pub off: u64,
    /// First device block (linear: AG number times AG size plus AG block).
    pub block: u64,
    pub len: u64,
    /// Preallocated, never written: reads as zeros.
    pub unwritten: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fork {
    Data,
    Attr,
}

struct Walk {
    out: Vec<Extent>,
    max: u64,
    visits: u64,
}

impl Xfs {
    /// The extent list of a fork (cached for the last inode asked about: file reads come in
    /// many small calls).
    pub(super) fn extents(&self, ip: &Inode, fork: Fork) -> Result<Arc<Vec<Extent>>> {
        if let Some((ino, f, list)) = &*self.lock_extent_cache() {
            if *ino == ip.ino && *f == fork {
                return Ok(list.clone());
            }
        }
        let (fmt, bytes, n) = match fork {
            Fork::Data => (ip.format, ip.data_fork(), ip.nextents),
            Fork::Attr => match ip.attr_fork() {
                Some(a) => (ip.aformat, a, ip.anextents),
                None => return Ok(Arc::new(Vec::new())),
            },
        };
        // A file cannot have more extents than the filesystem has blocks.
        if n > self.sb.dblocks {
            return corrupt(format!("xfs: inode {}: absurd extent count {n}", ip.ino));
        }
        let mut w = Walk {
            out: Vec::with_capacity(n.min(1024) as usize),
            max: n,
            visits: 0,
        };
        match fmt {
            FMT_EXTENTS => {
                if n.saturating_mul(16) > bytes.len() as u64 {
                    return corrupt(format!(
                        "xfs: inode {}: {n} extents do not fit in the inode",
                        ip.ino
                    ));
                }
                for i in 0..n as usize {
                    self.push_record(ip.ino, &mut w, bytes, i * 16)?;
                }
            }
            FMT_BTREE => self.walk_root(ip.ino, bytes, &mut w)?,
            _ => {
                return corrupt(format!(
                    "xfs: inode {}: fork format {fmt} has no block map",
                    ip.ino
                ))
            }
        }
        let list = Arc::new(w.out);
        *self.lock_extent_cache() = Some((ip.ino, fork, list.clone()));
        Ok(list)
    }

    fn push_record(&self, ino: u64, w: &mut Walk, b: &[u8], at: usize) -> Result<()> {
        let l0 = be64(b, at)?;
        let l1 = be64(b, at + 8)?;
        let unwritten = l0 >> 63 != 0;
        let off = (l0 & !(1u64 << 63)) >> 9;
        let fsb = ((l0 & 0x1ff) << 43) | (l1 >> 21);
        let len = l1 & ((1 << 21) - 1);
        if len == 0 {
            return corrupt(format!("xfs: inode {ino}: zero-length extent"));
        }
        if let Some(prev) = w.out.last() {
            if off < prev.off + prev.len {
                return corrupt(format!(
                    "xfs: inode {ino}: extents out of order or overlapping at file block {off}"
                ));
            }
        }
        // Keeps every byte offset of the file below 2^63.
        if off + len > (1u64 << 63) >> self.sb.blocklog {
            return corrupt(format!("xfs: inode {ino}: extent beyond the largest file"));
        }
        if w.out.len() as u64 >= w.max {
            return corrupt(format!(
                "xfs: inode {ino}: more extents than the inode records ({})",
                w.max
            ));
        }
        let block = self.sb.fsb_to_block(fsb, len)?;
        w.out.push(Extent {
            off,
            block,
            len,
            unwritten,
        });
        Ok(())
    }

    /// The btree root in the inode: level, count, then keys and pointers, the pointers placed
    /// after as many keys as the fork could hold.
    fn walk_root(&self, ino: u64, b: &[u8], w: &mut Walk) -> Result<()> {
        let level = be16(b, 0)?;
        let numrecs = usize::from(be16(b, 2)?);
        let maxrecs = b.len().saturating_sub(4) / 16;
        if level == 0 || level > MAX_LEVELS || numrecs == 0 || numrecs > maxrecs {
            return corrupt(format!(
                "xfs: inode {ino}: bad block map root (level {level}, {numrecs} records)"
            ));
        }
        let ptrs = 4 + maxrecs * 8;
        for i in 0..numrecs {
            self.walk_block(ino, be64(b, ptrs + i * 8)?, level - 1, w)?;
        }
        Ok(())
    }

    fn walk_block(&self, ino: u64, fsb: u64, level: u16, w: &mut Walk) -> Result<()> {
        w.visits += 1;
        if w.visits
            > w.max
                .saturating_add(1)
                .saturating_mul(u64::from(MAX_LEVELS))
        {
            return corrupt(format!("xfs: inode {ino}: block map tree too large"));
        }
        let block = self.sb.fsb_to_block(fsb, 1)?;
        let bs = self.sb.blocksize as usize;
        let mut b = vec![0u8; bs];
        self.dev
            .read_at(&mut b, block * u64::from(self.sb.blocksize))?;
        let hdr = if self.sb.crc() {
            if be32(&b, 0)? != BMA3_MAGIC {
                return corrupt(format!("xfs: inode {ino}: bad block map block magic"));
            }
            if !verify_crc(&b, 64) {
                return corrupt(format!(
                    "xfs: inode {ino}: block map block checksum mismatch"
                ));
            }
            if be64(&b, 56)? != ino || be64(&b, 24)? != block << (self.sb.blocklog - 9) {
                return corrupt(format!(
                    "xfs: inode {ino}: block map block belongs elsewhere"
                ));
            }
            72
        } else {
            if be32(&b, 0)? != BMAP_MAGIC {
                return corrupt(format!("xfs: inode {ino}: bad block map block magic"));
            }
            24
        };
        let blevel = be16(&b, 4)?;
        let numrecs = usize::from(be16(&b, 6)?);
        let maxrecs = (bs - hdr) / 16;
        if blevel != level || numrecs == 0 || numrecs > maxrecs {
            return corrupt(format!(
                "xfs: inode {ino}: bad block map block (level {blevel}, expected {level}, {numrecs} records)"
            ));
        }
        if level == 0 {
            for i in 0..numrecs {
                self.push_record(ino, w, &b, hdr + i * 16)?;
            }
        } else {
            let ptrs = hdr + maxrecs * 8;
            for i in 0..numrecs {
                self.walk_block(ino, be64(&b, ptrs + i * 8)?, level - 1, w)?;
            }
        }
        Ok(())
    }

    /// Fills `buf` with the fork's bytes from byte `off`: holes and unwritten extents read as
    /// zeros.
    pub(super) fn read_mapped(&self, ext: &[Extent], off: u64, buf: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.sb.blocksize);
        let log = self.sb.blocklog;
        let mut pos = 0usize;
        while pos < buf.len() {
            let at = off + pos as u64;
            let fblock = at >> log;
            let idx = ext.partition_point(|e| e.off + e.len <= fblock);
            let rest = buf.len() - pos;
            match ext.get(idx) {
                Some(e) if e.off <= fblock => {
                    let avail = ((e.off + e.len) << log) - at;
                    let n = (avail.min(rest as u64)) as usize;
                    if e.unwritten {
                        buf[pos..pos + n].fill(0);
                    } else {
                        let dev_off = (e.block + (fblock - e.off)) * bs + (at & (bs - 1));
                        self.dev.read_at(&mut buf[pos..pos + n], dev_off)?;
                    }
                    pos += n;
                }
                next => {
                    let n = match next {
                        Some(e) => ((e.off << log) - at).min(rest as u64) as usize,
                        None => rest,
                    };
                    buf[pos..pos + n].fill(0);
                    pos += n;
                }
            }
        }
        Ok(())
    }
}
