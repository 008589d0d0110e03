//! On-disk inodes (`xfs_dinode`): the core (v1/v2 on v4 filesystems, v3 with a CRC and
//! its own number on v5) followed by the literal area holding the data fork and, from
//! `di_forkoff`, the attribute fork.

use super::sb::Sb;
use super::{be16, be32, be64, verify_crc};
use crate::dev::BlockDev;
use crate::error::{corrupt, Result};
use crate::fs::{FileType, Timespec};

const MAGIC: u16 = 0x494e; // "IN"

pub(super) const FMT_DEV: u8 = 0;
pub(super) const FMT_LOCAL: u8 = 1;
pub(super) const FMT_EXTENTS: u8 = 2;
pub(super) const FMT_BTREE: u8 = 3;

const DIFLAG_REALTIME: u16 = 0x0001;
const DIFLAG2_BIGTIME: u64 = 0x0008;
const DIFLAG2_NREXT64: u64 = 0x0010;

/// Seconds between the bigtime epoch (the lowest 32-bit signed time) and the Unix epoch.
const BIGTIME_EPOCH_OFFSET: i64 = 1 << 31;

pub(super) struct Inode {
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Option<Timespec>,
    pub size: u64,
    pub nblocks: u64,
    pub format: u8,
    pub aformat: u8,
    pub nextents: u64,
    pub anextents: u64,
    pub realtime: bool,
    raw: Vec<u8>,
    /// Where the literal area starts (100 for v1/v2, 176 for v3).
    lit: usize,
    /// Data fork length in bytes (the rest of the literal area is the attribute fork).
    dsize: usize,
    has_attr_fork: bool,
}

fn timestamp(b: &[u8], off: usize, bigtime: bool) -> Result<Timespec> {
    if bigtime {
        let ns = be64(b, off)?;
        Ok(Timespec {
            sec: (ns / 1_000_000_000) as i64 - BIGTIME_EPOCH_OFFSET,
            nsec: (ns % 1_000_000_000) as u32,
        })
    } else {
        Ok(Timespec {
            sec: i64::from(be32(b, off)? as i32),
            // A hostile nsec is clamped, not trusted to be below a second.
            nsec: be32(b, off + 4)?.min(999_999_999),
        })
    }
}

impl Inode {
    pub fn read(sb: &Sb, dev: &dyn BlockDev, ino: u64) -> Result<Inode> {
        let off = sb.inode_offset(ino)?;
        let mut raw = vec![0u8; usize::from(sb.inodesize)];
        dev.read_at(&mut raw, off)?;
        let b = &raw[..];
        if be16(b, 0)? != MAGIC {
            return corrupt(format!("xfs: inode {ino}: bad magic"));
        }
        let version = b[4];
        let ok_version = if sb.crc() {
            version == 3
        } else {
            version == 2 || (version == 1 && sb.v1_inodes_ok)
        };
        if !ok_version {
            return corrupt(format!("xfs: inode {ino}: bad inode version {version}"));
        }
        let lit = if version == 3 {
            if !verify_crc(b, 100) {
                return corrupt(format!("xfs: inode {ino}: checksum mismatch"));
            }
            if be64(b, 152)? != ino {
                return corrupt(format!(
                    "xfs: inode {ino}: records inode number {}",
                    be64(b, 152)?
                ));
            }
            176
        } else {
            100
        };
        let flags2 = if version == 3 { be64(b, 120)? } else { 0 };
        let bigtime = flags2 & DIFLAG2_BIGTIME != 0;
        let (nextents, anextents) = if flags2 & DIFLAG2_NREXT64 != 0 {
            (be64(b, 24)?, u64::from(be32(b, 76)?))
        } else {
            (u64::from(be32(b, 76)?), u64::from(be16(b, 80)?))
        };
        let nlink = if version == 1 {
            u64::from(be16(b, 6)?)
        } else {
            u64::from(be32(b, 16)?)
        };
        let litsize = raw.len() - lit;
        let forkoff = usize::from(b[82]) * 8;
        if forkoff >= litsize {
            return corrupt(format!(
                "xfs: inode {ino}: attribute fork offset {forkoff} too large"
            ));
        }
        let size = be64(b, 56)?;
        if size > i64::MAX as u64 {
            return corrupt(format!("xfs: inode {ino}: negative size"));
        }
        Ok(Inode {
            ino,
            mode: u32::from(be16(b, 2)?),
            uid: be32(b, 8)?,
            gid: be32(b, 12)?,
            nlink,
            atime: timestamp(b, 32, bigtime)?,
            mtime: timestamp(b, 40, bigtime)?,
            ctime: timestamp(b, 48, bigtime)?,
            crtime: if version == 3 {
                Some(timestamp(b, 144, bigtime)?)
            } else {
                None
            },
            size,
            nblocks: be64(b, 64)?,
            format: b[5],
            aformat: b[83],
            nextents,
            anextents,
            realtime: be16(b, 90)? & DIFLAG_REALTIME != 0,
            lit,
            dsize: if forkoff == 0 { litsize } else { forkoff },
            has_attr_fork: forkoff != 0,
            raw,
        })
    }

    pub fn kind(&self) -> FileType {
        FileType::from_mode(self.mode)
    }

    pub fn data_fork(&self) -> &[u8] {
        &self.raw[self.lit..self.lit + self.dsize]
    }

    pub fn attr_fork(&self) -> Option<&[u8]> {
        self.has_attr_fork
            .then(|| &self.raw[self.lit + self.dsize..])
    }

    /// The device number of a character or block device, in Linux `makedev` encoding. XFS
    /// stores a 32-bit number with a 14-bit major above an 18-bit minor.
    pub fn rdev(&self) -> u64 {
        if self.format != FMT_DEV {
            return 0;
        }
        let Ok(d) = be32(self.data_fork(), 0) else {
            return 0;
        };
        let (major, minor) = (u64::from(d >> 18), u64::from(d & 0x3ffff));
        (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
    }
}
