//! Extent trees (EXT4_EXTENTS_FL): logical block -> physical run. Depth is bounded (the
//! kernel's maximum of 5) and must drop by one per level, so a tree that points back at
//! itself ends; every node is checked (magic, counts, order) and every extent against the
//! filesystem size.

use super::csum::{crc32c, le16, le32};
use super::inode::Inode;
use super::{Ext4, Run};
use crate::error::{Error, Result};

const MAGIC: u16 = 0xF30A;
const MAX_DEPTH: u16 = 5;

struct Header {
    entries: usize,
    depth: u16,
}

fn header(node: &[u8], ino: u32, what: &str) -> Result<Header> {
    let bad = |m: String| Err(Error::Corrupt(format!("ext4: inode {ino}: {what}: {m}")));
    if le16(node, 0) != MAGIC {
        return bad("bad extent header magic".into());
    }
    let entries = le16(node, 2) as usize;
    let max = le16(node, 4) as usize;
    let depth = le16(node, 6);
    if entries > max || 12 + max * 12 > node.len() {
        return bad(format!("{entries} of {max} extent entries do not fit"));
    }
    if depth > MAX_DEPTH {
        return bad(format!("extent tree depth {depth}"));
    }
    Ok(Header { entries, depth })
}

impl Ext4 {
    /// Maps logical block `lblk` of an extent-mapped inode.
    pub(super) fn extent_map(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        let ino = inode.ino;
        // Logical block numbers are 32-bit: everything past is a hole.
        if lblk > u32::MAX as u64 {
            return Ok(Run::Hole(u64::MAX - lblk));
        }
        let mut node: Vec<u8> = inode.i_block().to_vec();
        let mut h = header(&node, ino, "extent root")?;
        // First logical block past this subtree.
        let mut end: u64 = 1 << 32;
        let mut where_ = "extent root".to_string();
        loop {
            let e = |i: usize| &node[12 + i * 12..24 + i * 12];
            // Entries are sorted by logical block; find the last starting at or before lblk.
            let mut found = None;
            let mut prev: Option<u64> = None;
            for i in 0..h.entries {
                let start = le32(e(i), 0) as u64;
                if prev.is_some_and(|p| start <= p) {
                    return Err(Error::Corrupt(format!(
                        "ext4: inode {ino}: {where_}: extent entries out of order"
                    )));
                }
                prev = Some(start);
                if start <= lblk {
                    found = Some(i);
                } else {
                    end = end.min(start);
                    break;
                }
            }
            if h.depth == 0 {
                let Some(i) = found else {
                    return Ok(Run::Hole(end - lblk));
                };
                let x = e(i);
                let start = le32(x, 0) as u64;
                let raw_len = le16(x, 4);
                let (len, uninit) = if raw_len > 32768 {
                    (raw_len as u64 - 32768, true)
                } else {
                    (raw_len as u64, false)
                };
                let pblk = le32(x, 8) as u64 | (le16(x, 6) as u64) << 32;
                if len == 0
                    || start + len > 1 << 32
                    || !matches!(pblk.checked_add(len), Some(e) if e <= self.sb.blocks_count)
                    || pblk < self.sb.first_data_block as u64
                {
                    return Err(Error::Corrupt(format!(
                        "ext4: inode {ino}: {where_}: extent of {len} blocks at {pblk} is outside the filesystem"
                    )));
                }
                if lblk >= start + len {
                    return Ok(Run::Hole(end.min(1 << 32) - lblk));
                }
                let skip = lblk - start;
                let n = (len - skip).min(end - lblk);
                return Ok(if uninit {
                    Run::Zero(n)
                } else {
                    Run::Data(pblk + skip, n)
                });
            }
            let Some(i) = found else {
                return Ok(Run::Hole(end - lblk));
            };
            let x = e(i);
            let child = le32(x, 4) as u64 | (le16(x, 8) as u64) << 32;
            if child < self.sb.first_data_block as u64 || child >= self.sb.blocks_count {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {ino}: {where_}: extent index points at block {child}, outside the filesystem"
                )));
            }
            let mut blk = vec![0u8; self.sb.block_size as usize];
            self.disk.read_block(child, &mut blk)?;
            where_ = format!("extent block {child}");
            let ch = header(&blk, ino, &where_)?;
            if ch.depth + 1 != h.depth {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {ino}: {where_}: depth {} under depth {}",
                    ch.depth, h.depth
                )));
            }
            if self.sb.metadata_csum() {
                let max = le16(&blk, 4) as usize;
                let tail = 12 + max * 12;
                if tail + 4 > blk.len() {
                    return Err(Error::Corrupt(format!(
                        "ext4: inode {ino}: {where_}: no room for the checksum"
                    )));
                }
                if crc32c(inode.csum_seed, &blk[..tail]) != le32(&blk, tail) {
                    return Err(Error::Corrupt(format!(
                        "ext4: inode {ino}: {where_}: checksum mismatch"
                    )));
                }
            }
            node = blk;
            h = ch;
        }
    }
}
