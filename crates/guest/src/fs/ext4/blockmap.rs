//! ext2/ext3 block maps: 12 direct blocks, then single, double and triple indirect blocks.
//! Depth is fixed by the logical block number, so no loop is possible; every pointer is
//! checked against the filesystem size; 0 is a hole.

use super::csum::le32;
use super::inode::Inode;
use super::{Ext4, Run};
use crate::error::{Error, Result};

impl Ext4 {
    pub(super) fn blockmap_map(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        let per = self.sb.block_size / 4;
        let ib = inode.i_block();
        // (root pointer slot, levels of indirection, index inside that tree)
        let (slot, levels, mut rel) = if lblk < 12 {
            // Direct blocks: the run continues while the next slots are contiguous.
            return Ok(run_in(ib, lblk as usize, 12));
        } else if lblk - 12 < per {
            (12, 1, lblk - 12)
        } else if lblk - 12 - per < per * per {
            (13, 2, lblk - 12 - per)
        } else if lblk - 12 - per - per * per < per * per * per {
            (14, 3, lblk - 12 - per - per * per)
        } else {
            return Ok(Run::Hole(u64::MAX - lblk));
        };
        let mut ptr = le32(ib, slot * 4) as u64;
        let mut span = per.pow(levels - 1);
        let mut blk = vec![0u8; self.sb.block_size as usize];
        for level in 0..levels {
            if ptr == 0 {
                // The whole subtree is a hole.
                return Ok(Run::Hole(span * per - rel));
            }
            self.check_block(ptr, inode.ino, "indirect block")?;
            self.disk.read_block(ptr, &mut blk)?;
            let idx = (rel / span) as usize;
            if level + 1 == levels {
                return Ok(run_in(&blk, idx, per as usize));
            }
            ptr = le32(&blk, idx * 4) as u64;
            rel %= span;
            span /= per;
        }
        Err(Error::Corrupt("ext4: block map walk".into()))
    }

    pub(super) fn check_block(&self, blk: u64, ino: u32, what: &str) -> Result<()> {
        if blk < self.sb.first_data_block as u64 || blk >= self.sb.blocks_count {
            return Err(Error::Corrupt(format!(
                "ext4: inode {ino}: {what} {blk} is outside the filesystem"
            )));
        }
        Ok(())
    }
}

/// The run starting at slot `idx` of an array of `n` block pointers.
fn run_in(arr: &[u8], idx: usize, n: usize) -> Run {
    let first = le32(arr, idx * 4) as u64;
    let mut len = 1u64;
    for j in idx + 1..n {
        let p = le32(arr, j * 4) as u64;
        let contiguous = if first == 0 { p == 0 } else { p == first + len };
        if !contiguous {
            break;
        }
        len += 1;
    }
    if first == 0 {
        Run::Hole(len)
    } else {
        Run::Data(first, len)
    }
}
