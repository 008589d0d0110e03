//! The ext2/3/4 superblock (1024 bytes at byte 1024): geometry checked against the device,
//! feature flags checked against what this reader handles.

use super::csum::{crc32c, le16, le32};
use crate::error::{Error, Result};

pub const MAGIC: u16 = 0xEF53;

pub mod compat {
    pub const HAS_JOURNAL: u32 = 0x4;
}

pub mod incompat {
    pub const COMPRESSION: u32 = 0x1;
    pub const FILETYPE: u32 = 0x2;
    pub const RECOVER: u32 = 0x4;
    pub const JOURNAL_DEV: u32 = 0x8;
    pub const META_BG: u32 = 0x10;
    pub const EXTENTS: u32 = 0x40;
    pub const BIT64: u32 = 0x80;
    pub const MMP: u32 = 0x100;
    pub const FLEX_BG: u32 = 0x200;
    pub const EA_INODE: u32 = 0x400;
    pub const DIRDATA: u32 = 0x1000;
    pub const CSUM_SEED: u32 = 0x2000;
    pub const LARGEDIR: u32 = 0x4000;
    pub const INLINE_DATA: u32 = 0x8000;
    pub const ENCRYPT: u32 = 0x10000;
    pub const CASEFOLD: u32 = 0x20000;
    /// What this reader understands (read-only).
    pub const SUPPORTED: u32 = FILETYPE
        | RECOVER
        | META_BG
        | EXTENTS
        | BIT64
        | MMP
        | FLEX_BG
        | EA_INODE
        | CSUM_SEED
        | LARGEDIR
        | INLINE_DATA
        | ENCRYPT
        | CASEFOLD;
    /// What ext2 and ext3 know (blkid's EXT2/3_FEATURE_INCOMPAT_SUPP).
    pub const EXT2_SUPP: u32 = FILETYPE | META_BG;
    pub const EXT3_SUPP: u32 = FILETYPE | RECOVER | META_BG;
}

pub mod ro_compat {
    pub const SPARSE_SUPER: u32 = 0x1;
    pub const LARGE_FILE: u32 = 0x2;
    pub const BTREE_DIR: u32 = 0x4;
    pub const HUGE_FILE: u32 = 0x8;
    pub const GDT_CSUM: u32 = 0x10;
    pub const BIGALLOC: u32 = 0x200;
    pub const METADATA_CSUM: u32 = 0x400;
    /// blkid's EXT2/3_FEATURE_RO_COMPAT_SUPP.
    pub const EXT3_SUPP: u32 = SPARSE_SUPER | LARGE_FILE | BTREE_DIR;
}

/// The geometry and features this reader uses.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub inodes_count: u32,
    pub blocks_count: u64,
    pub r_blocks_count: u64,
    pub free_blocks_count: u64,
    pub free_inodes_count: u32,
    pub first_data_block: u32,
    pub block_size: u64,
    pub blocks_per_group: u32,
    pub inodes_per_group: u32,
    pub inode_size: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub journal_inum: u32,
    pub desc_size: u32,
    pub first_meta_bg: u32,
    pub backup_bgs: [u32; 2],
    pub overhead_clusters: u32,
    pub group_count: u32,
    /// Seed of every metadata_csum checksum.
    pub csum_seed: u32,
}

impl Superblock {
    /// Parses and validates `raw` (the 1024 superblock bytes) for a device of `dev_size`
    /// bytes.
    pub fn parse(raw: &[u8], dev_size: u64) -> Result<Superblock> {
        if raw.len() < 1024 || le16(raw, 56) != MAGIC {
            return Err(Error::Corrupt("ext2/3/4: bad superblock magic".into()));
        }
        let rev_level = le32(raw, 76);
        let compat = le32(raw, 92);
        let incompat = le32(raw, 96);
        let ro_compat = le32(raw, 100);
        if rev_level > 1 {
            return Err(Error::Unsupported(format!(
                "ext4: superblock revision {rev_level}"
            )));
        }
        let unknown = incompat & !incompat::SUPPORTED;
        if unknown != 0 {
            return Err(Error::Unsupported(format!(
                "ext4: incompatible features not supported: {}",
                incompat_names(unknown)
            )));
        }
        if ro_compat & ro_compat::METADATA_CSUM != 0 {
            if raw[373] != 1 {
                return Err(Error::Unsupported(format!(
                    "ext4: metadata checksum type {}",
                    raw[373]
                )));
            }
            let want = le32(raw, 0x3FC);
            let got = crc32c(!0, &raw[..0x3FC]);
            if want != got {
                return Err(Error::Corrupt(format!(
                    "ext4: superblock checksum mismatch (stored {want:#010x}, computed {got:#010x})"
                )));
            }
        }
        let log_bs = le32(raw, 24);
        if log_bs > 6 {
            return Err(Error::Corrupt(format!(
                "ext4: block size 2^{} out of range",
                log_bs.saturating_add(10)
            )));
        }
        let block_size = 1024u64 << log_bs;
        let bit64 = incompat & incompat::BIT64 != 0;
        let hi = |off: usize| {
            if bit64 {
                (le32(raw, off) as u64) << 32
            } else {
                0
            }
        };
        let blocks_count = le32(raw, 4) as u64 | hi(336);
        let r_blocks_count = le32(raw, 8) as u64 | hi(340);
        let free_blocks_count = le32(raw, 12) as u64 | hi(344);
        let inodes_count = le32(raw, 0);
        let first_data_block = le32(raw, 20);
        let blocks_per_group = le32(raw, 32);
        let inodes_per_group = le32(raw, 40);
        let bits = block_size * 8;
        let bad = |what: String| Err(Error::Corrupt(format!("ext4: {what}")));
        if blocks_count == 0
            || !matches!(blocks_count.checked_mul(block_size), Some(b) if b <= dev_size)
        {
            return bad(format!(
                "{blocks_count} blocks of {block_size} bytes do not fit the device ({dev_size} bytes)"
            ));
        }
        if first_data_block as u64 >= blocks_count
            || (block_size == 1024 && first_data_block != 1)
            || (block_size > 1024 && first_data_block != 0 && ro_compat & ro_compat::BIGALLOC == 0)
        {
            return bad(format!("first data block {first_data_block}"));
        }
        if blocks_per_group == 0
            || blocks_per_group as u64 > bits && ro_compat & ro_compat::BIGALLOC == 0
        {
            return bad(format!("{blocks_per_group} blocks per group"));
        }
        if inodes_per_group == 0 || inodes_per_group as u64 > bits {
            return bad(format!("{inodes_per_group} inodes per group"));
        }
        let groups = (blocks_count - first_data_block as u64).div_ceil(blocks_per_group as u64);
        if groups == 0 || groups > u32::MAX as u64 {
            return bad(format!("{groups} block groups"));
        }
        if groups * inodes_per_group as u64 != inodes_count as u64 {
            return bad(format!(
                "inode count {inodes_count} is not {groups} groups of {inodes_per_group}"
            ));
        }
        let (inode_size, first_ino) = if rev_level == 0 {
            (128, 11)
        } else {
            (le16(raw, 88) as u32, le32(raw, 84))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size as u64 > block_size {
            return bad(format!("inode size {inode_size}"));
        }
        if first_ino < 11 || first_ino > inodes_count {
            return bad(format!("first inode {first_ino}"));
        }
        let desc_size = if bit64 {
            let d = le16(raw, 254) as u32;
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return bad(format!("group descriptor size {d}"));
            }
            d
        } else {
            32
        };
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&raw[104..120]);
        let mut volume_name = [0u8; 16];
        volume_name.copy_from_slice(&raw[120..136]);
        let csum_seed = if incompat & incompat::CSUM_SEED != 0 {
            le32(raw, 0x270)
        } else {
            crc32c(!0, &uuid)
        };
        Ok(Superblock {
            inodes_count,
            blocks_count,
            r_blocks_count,
            free_blocks_count,
            free_inodes_count: le32(raw, 16),
            first_data_block,
            block_size,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            compat,
            incompat,
            ro_compat,
            uuid,
            volume_name,
            journal_inum: le32(raw, 224),
            desc_size,
            first_meta_bg: le32(raw, 260),
            backup_bgs: [le32(raw, 0x24C), le32(raw, 0x250)],
            overhead_clusters: le32(raw, 0x248),
            group_count: groups as u32,
            csum_seed,
        })
    }

    pub fn has_compat(&self, f: u32) -> bool {
        self.compat & f != 0
    }
    pub fn has_incompat(&self, f: u32) -> bool {
        self.incompat & f != 0
    }
    pub fn has_ro_compat(&self, f: u32) -> bool {
        self.ro_compat & f != 0
    }
    pub fn metadata_csum(&self) -> bool {
        self.has_ro_compat(ro_compat::METADATA_CSUM)
    }

    /// Whether group `g` holds a superblock backup (and so the group descriptor table).
    pub fn group_has_super(&self, g: u32) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & 0x200 != 0 {
            // sparse_super2: at most two backups, where the superblock says.
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g <= 1 || !self.has_ro_compat(ro_compat::SPARSE_SUPER) {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        [3u32, 5, 7].iter().any(|&p| {
            let mut n = g;
            while n.is_multiple_of(p) {
                n /= p;
            }
            n == 1
        })
    }

    /// blkid's choice between ext2, ext3 and ext4.
    pub fn kind(&self) -> &'static str {
        let beyond_ext3 = self.ro_compat & !ro_compat::EXT3_SUPP != 0
            || self.incompat & !incompat::EXT3_SUPP != 0;
        if beyond_ext3 {
            "ext4"
        } else if self.has_compat(compat::HAS_JOURNAL) {
            "ext3"
        } else if self.incompat & !incompat::EXT2_SUPP != 0 {
            // needs_recovery without a journal: not ext2 to blkid, and not ext3 either.
            "ext4"
        } else {
            "ext2"
        }
    }
}

fn incompat_names(bits: u32) -> String {
    let mut names = Vec::new();
    for i in 0..32 {
        let b = 1u32 << i;
        if bits & b == 0 {
            continue;
        }
        names.push(match b {
            incompat::COMPRESSION => "compression".to_string(),
            incompat::JOURNAL_DEV => "journal_dev (an external journal, not a filesystem)".into(),
            incompat::DIRDATA => "dirdata".into(),
            _ => format!("FEATURE_I{i}"),
        });
    }
    names.join(", ")
}
