//! Block group descriptors (32 bytes, or `s_desc_size` with 64bit), found where the kernel
//! looks for them: after the primary superblock, or per meta group with meta_bg.

use super::csum::{crc16, crc32c, le16, le32, zeroed};
use super::superblock::{incompat, ro_compat};
use super::Ext4;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct GroupDesc {
    pub inode_table: u64,
}

impl Ext4 {
    /// Byte offset of the descriptor of group `g`.
    fn desc_offset(&self, g: u32) -> Result<u64> {
        let sb = &self.sb;
        let bs = sb.block_size;
        let ds = sb.desc_size as u64;
        let per_block = bs / ds;
        let g64 = g as u64;
        let meta = sb.has_incompat(incompat::META_BG);
        if !meta || g64 / per_block < sb.first_meta_bg as u64 {
            return Ok((sb.first_data_block as u64 + 1) * bs + g64 * ds);
        }
        // meta_bg: the descriptors of a meta group are in its first group, after the
        // superblock backup if that group has one.
        let first = (g64 / per_block) * per_block;
        let first32 = u32::try_from(first).map_err(|_| Error::Corrupt("ext4: group".into()))?;
        let mut blk = sb.first_data_block as u64 + first * sb.blocks_per_group as u64;
        if blk == 0 && bs == 1024 {
            blk = 1;
        }
        if sb.group_has_super(first32) {
            blk += 1;
        }
        Ok(blk * bs + (g64 % per_block) * ds)
    }

    pub(super) fn group_desc(&self, g: u32) -> Result<GroupDesc> {
        let sb = &self.sb;
        if g >= sb.group_count {
            return Err(Error::Corrupt(format!(
                "ext4: block group {g} out of range"
            )));
        }
        let ds = sb.desc_size as usize;
        let mut raw = vec![0u8; ds];
        self.disk.read_bytes(self.desc_offset(g)?, &mut raw)?;
        let stored = le16(&raw, 30);
        if sb.metadata_csum() {
            let mut c = crc32c(sb.csum_seed, &g.to_le_bytes());
            c = crc32c(c, &zeroed(&raw, 30, 2));
            if c as u16 != stored {
                return Err(Error::Corrupt(format!(
                    "ext4: group descriptor {g} checksum mismatch"
                )));
            }
        } else if sb.has_ro_compat(ro_compat::GDT_CSUM) {
            let mut c = crc16(!0, &sb.uuid);
            c = crc16(c, &g.to_le_bytes());
            c = crc16(c, &raw[..30]);
            if ds > 32 {
                c = crc16(c, &raw[32..]);
            }
            if c != stored {
                return Err(Error::Corrupt(format!(
                    "ext4: group descriptor {g} checksum mismatch"
                )));
            }
        }
        let mut inode_table = le32(&raw, 8) as u64;
        if ds >= 64 {
            inode_table |= (le32(&raw, 40) as u64) << 32;
        }
        let itable_blocks =
            (sb.inodes_per_group as u64 * sb.inode_size as u64).div_ceil(sb.block_size);
        if inode_table == 0
            || !matches!(inode_table.checked_add(itable_blocks), Some(e) if e <= sb.blocks_count)
        {
            return Err(Error::Corrupt(format!(
                "ext4: group {g}: inode table at block {inode_table} is outside the filesystem"
            )));
        }
        Ok(GroupDesc { inode_table })
    }
}
