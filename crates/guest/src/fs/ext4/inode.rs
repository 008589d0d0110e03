//! On-disk inodes (any `s_inode_size` >= 128): fields, timestamps with their extra
//! nanosecond/epoch bits, and the metadata_csum check.

use super::csum::{crc32c, le16, le32, zeroed};
use super::superblock::ro_compat;
use super::Ext4;
use crate::error::{Error, Result};
use crate::fs::{FileType, Timespec};

pub mod flags {
    pub const ENCRYPT: u32 = 0x800;
    pub const INDEX: u32 = 0x1000;
    pub const HUGE_FILE: u32 = 0x40000;
    pub const EXTENTS: u32 = 0x80000;
    pub const EA_INODE: u32 = 0x200000;
    pub const INLINE_DATA: u32 = 0x1000_0000;
}

/// i_block: 60 bytes at offset 40.
pub const I_BLOCK: std::ops::Range<usize> = 40..100;

#[derive(Debug, Clone)]
pub struct Inode {
    pub ino: u32,
    /// The whole on-disk inode (`s_inode_size` bytes).
    pub raw: Vec<u8>,
    /// 128 + i_extra_isize, validated to lie inside `raw`.
    pub body_end: usize,
    pub mode: u16,
    pub flags: u32,
    pub size: u64,
    /// Seed for the checksums of blocks owned by this inode.
    pub csum_seed: u32,
}

impl Inode {
    pub fn i_block(&self) -> &[u8] {
        &self.raw[I_BLOCK]
    }
    pub fn kind(&self) -> FileType {
        FileType::from_mode(self.mode as u32)
    }
    pub fn has(&self, f: u32) -> bool {
        self.flags & f != 0
    }
    pub fn links(&self) -> u16 {
        le16(&self.raw, 26)
    }
    pub fn uid(&self) -> u32 {
        le16(&self.raw, 2) as u32 | (le16(&self.raw, 120) as u32) << 16
    }
    pub fn gid(&self) -> u32 {
        le16(&self.raw, 24) as u32 | (le16(&self.raw, 122) as u32) << 16
    }
    pub fn file_acl(&self) -> u64 {
        le32(&self.raw, 104) as u64 | (le16(&self.raw, 118) as u64) << 32
    }
    /// Whether a field at `off..off+len` of the large inode is present (EXT4_FITS_IN_INODE).
    fn fits(&self, off: usize, len: usize) -> bool {
        off + len <= self.body_end
    }
    /// A timestamp: seconds at `sec_off`, extra (epoch bits, nanoseconds) at `extra_off`.
    pub fn time(&self, sec_off: usize, extra_off: usize) -> Timespec {
        let mut sec = le32(&self.raw, sec_off) as i32 as i64;
        let mut nsec = 0;
        if self.fits(extra_off, 4) {
            let extra = le32(&self.raw, extra_off);
            sec += ((extra & 3) as i64) << 32;
            nsec = extra >> 2;
            if nsec > 999_999_999 {
                nsec = 0;
            }
        }
        Timespec { sec, nsec }
    }
    pub fn atime(&self) -> Timespec {
        self.time(8, 140)
    }
    pub fn ctime(&self) -> Timespec {
        self.time(12, 132)
    }
    pub fn mtime(&self) -> Timespec {
        self.time(16, 136)
    }
    pub fn crtime(&self) -> Option<Timespec> {
        self.fits(144, 4).then(|| self.time(144, 148))
    }
    /// Allocated 512-byte sectors.
    pub fn blocks_512(&self, huge_file: bool, block_size: u64) -> u64 {
        let lo = le32(&self.raw, 28) as u64;
        if !huge_file {
            return lo;
        }
        let n = lo | (le16(&self.raw, 116) as u64) << 32;
        if self.has(flags::HUGE_FILE) {
            n.saturating_mul(block_size / 512)
        } else {
            n
        }
    }
    /// Device number of a device node, in the Linux `makedev` encoding.
    pub fn rdev(&self) -> u64 {
        let b = self.i_block();
        let old = le32(b, 0);
        let (major, minor) = if old != 0 {
            ((old >> 8) & 0xff, old & 0xff)
        } else {
            let d = le32(b, 4);
            ((d & 0xfff00) >> 8, (d & 0xff) | ((d >> 12) & 0xfff00))
        };
        let (major, minor) = (major as u64, minor as u64);
        ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff)
    }
}

impl Ext4 {
    /// Reads and checks inode `ino`. An inode never allocated (mode 0) is NotFound.
    pub(super) fn inode(&self, ino: u64) -> Result<Inode> {
        let sb = &self.sb;
        let ino32 = match u32::try_from(ino) {
            Ok(i) if i >= 1 && i <= sb.inodes_count => i,
            _ => return Err(Error::NotFound(format!("ext4: inode {ino}"))),
        };
        let idx = ino32 - 1;
        let gd = self.group_desc(idx / sb.inodes_per_group)?;
        let off = gd.inode_table * sb.block_size
            + (idx % sb.inodes_per_group) as u64 * sb.inode_size as u64;
        let mut raw = vec![0u8; sb.inode_size as usize];
        self.disk.read_bytes(off, &mut raw)?;
        let body_end = if raw.len() > 128 {
            let extra = le16(&raw, 128) as usize;
            if 128 + extra > raw.len() || !extra.is_multiple_of(4) {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {ino}: extra inode size {extra} does not fit"
                )));
            }
            128 + extra
        } else {
            128
        };
        let gen = le32(&raw, 100);
        let seed = crc32c(
            crc32c(sb.csum_seed, &ino32.to_le_bytes()),
            &gen.to_le_bytes(),
        );
        if sb.metadata_csum() && raw.iter().any(|&b| b != 0) {
            let hi = body_end >= 132;
            let mut z = zeroed(&raw, 124, 2);
            if hi {
                z[130..132].fill(0);
            }
            let c = crc32c(seed, &z);
            let stored = le16(&raw, 124) as u32
                | if hi {
                    (le16(&raw, 130) as u32) << 16
                } else {
                    0
                };
            let c = if hi { c } else { c & 0xffff };
            if c != stored {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {ino}: checksum mismatch"
                )));
            }
        }
        let mode = le16(&raw, 0);
        if mode == 0 {
            return Err(Error::NotFound(format!("ext4: inode {ino} (not in use)")));
        }
        let size = le32(&raw, 4) as u64 | (le32(&raw, 108) as u64) << 32;
        let flags = le32(&raw, 32);
        Ok(Inode {
            ino: ino32,
            body_end,
            mode,
            flags,
            size,
            csum_seed: seed,
            raw,
        })
    }

    pub(super) fn huge_file(&self) -> bool {
        self.sb.has_ro_compat(ro_compat::HUGE_FILE)
    }
}
