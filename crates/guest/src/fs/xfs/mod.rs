//! XFS, v4 and v5 (CRC) filesystems, read-only.
//!
//! Written by hand: no maintained Rust crate reads XFS (the few that exist are partial,
//! unmaintained, or trust on-disk fields). Every structure is validated before use: magic
//! numbers, v5 CRCs and owner fields, AG bounds of every block and inode number, and the
//! sizes and counts that drive allocations and loops (see [`sb`], [`bmap`], [`dir`]).
//!
//! Layout in brief: the device is cut into allocation groups (AGs); block and inode numbers
//! carry the AG number in their high bits. Inodes hold a data fork and an optional attribute
//! fork, each either inline ("local"), a list of extents, or a B+tree of extents.
//!
//! The log is never replayed: a filesystem that was not cleanly unmounted is read as it is on
//! disk (as `xfs_db -r` does), so the most recent changes still in the log are not seen and
//! metadata may be momentarily inconsistent; such inconsistencies are reported as corrupt.
//! Nothing is ever written. Realtime files are not readable (their data is on another device).

mod attr;
mod bmap;
mod dir;
mod inode;
mod sb;

use crate::dev::{BlockDev, CachedDev};
use crate::error::{corrupt, Error, Result};
use crate::fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs};
use bmap::{Extent, Fork};
use inode::{Inode, FMT_EXTENTS, FMT_LOCAL};
use std::sync::{Arc, Mutex};

/// Metadata cache size.
const CACHE_BYTES: usize = 8 << 20;
/// MAXPATHLEN: no symlink target is longer.
const MAX_SYMLINK: u64 = 1024;
const SYMLINK_MAGIC: u32 = 0x5853_4c4d; // "XSLM"

pub(super) fn be16(b: &[u8], at: usize) -> Result<u16> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => corrupt("xfs: structure overruns its block"),
    }
}

pub(super) fn be32(b: &[u8], at: usize) -> Result<u32> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        None => corrupt("xfs: structure overruns its block"),
    }
}

pub(super) fn be64(b: &[u8], at: usize) -> Result<u64> {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            Ok(u64::from_be_bytes(a))
        }
        None => corrupt("xfs: structure overruns its block"),
    }
}

/// The v5 metadata checksum: CRC32C of the buffer with its 4-byte checksum field (stored
/// little-endian) taken as zero.
pub(super) fn verify_crc(b: &[u8], at: usize) -> bool {
    let Some(stored) = b.get(at..at + 4) else {
        return false;
    };
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let crc = crc32c::crc32c(&b[..at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &b[at + 4..]) == stored
}

type ExtentCache = Option<(u64, Fork, Arc<Vec<Extent>>)>;

/// An XFS filesystem on a device.
pub struct Xfs {
    dev: CachedDev,
    sb: sb::Sb,
    extent_cache: Mutex<ExtentCache>,
}

impl Xfs {
    /// Reads and validates the superblock and the root inode.
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<Xfs> {
        let dev = CachedDev::new(dev, CACHE_BYTES);
        let sb = sb::Sb::read(&dev)?;
        let fs = Xfs {
            dev,
            sb,
            extent_cache: Mutex::new(None),
        };
        let root = fs.inode(fs.sb.rootino)?;
        if root.kind() != FileType::Directory {
            return corrupt("xfs: the root inode is not a directory");
        }
        Ok(fs)
    }

    fn inode(&self, ino: u64) -> Result<Inode> {
        Inode::read(&self.sb, &self.dev, ino)
    }

    fn lock_extent_cache(&self) -> std::sync::MutexGuard<'_, ExtentCache> {
        self.extent_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir_inode(&self, ino: u64) -> Result<Inode> {
        let ip = self.inode(ino)?;
        if ip.kind() != FileType::Directory {
            return Err(Error::NotDir(format!("xfs inode {ino}")));
        }
        Ok(ip)
    }

    /// A remote symlink: the target in the data fork's blocks; on v5 each extent starts with
    /// an "XSLM" header (byte offset, byte count, CRC, owner) covering that extent.
    fn remote_symlink(&self, ip: &Inode) -> Result<Vec<u8>> {
        let ext = self.extents(ip, Fork::Data)?;
        let len = ip.size as usize;
        let bs = u64::from(self.sb.blocksize);
        if !self.sb.crc() {
            let mut out = vec![0u8; len];
            self.read_mapped(&ext, 0, &mut out)?;
            return Ok(out);
        }
        let mut out = Vec::with_capacity(len);
        for e in ext.iter() {
            if out.len() >= len {
                break;
            }
            // A 1024-byte target needs at most 3 blocks of 512 bytes.
            if e.len > 4 || e.unwritten {
                return corrupt(format!("xfs: symlink {}: bad extent", ip.ino));
            }
            let mut b = vec![0u8; (e.len * bs) as usize];
            self.dev.read_at(&mut b, e.block * bs)?;
            let n = (b.len() - 56).min(len - out.len());
            if be32(&b, 0)? != SYMLINK_MAGIC
                || !verify_crc(&b, 12)
                || be32(&b, 4)? as usize != out.len()
                || be32(&b, 8)? as usize != n
                || be64(&b, 32)? != ip.ino
            {
                return corrupt(format!("xfs: symlink {}: bad remote block", ip.ino));
            }
            out.extend_from_slice(&b[56..56 + n]);
        }
        if out.len() != len {
            return corrupt(format!("xfs: symlink {}: target blocks missing", ip.ino));
        }
        Ok(out)
    }
}

impl Filesystem for Xfs {
    fn info(&self) -> FsInfo {
        let label = self.sb.fname.split(|&c| c == 0).next().unwrap_or(&[]);
        let u = &self.sb.uuid;
        let hex =
            |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
        FsInfo {
            kind: "xfs".into(),
            label: (!label.is_empty()).then(|| String::from_utf8_lossy(label).into_owned()),
            // blkid prints sb_uuid (not sb_meta_uuid, the one stamped in v5 metadata).
            uuid: Some(format!(
                "{}-{}-{}-{}-{}",
                hex(0..4),
                hex(4..6),
                hex(6..8),
                hex(8..10),
                hex(10..16)
            )),
        }
    }

    fn root(&self) -> Ino {
        self.sb.rootino
    }

    fn stat(&self, ino: Ino) -> Result<Stat> {
        let ip = self.inode(ino)?;
        Ok(Stat {
            ino,
            kind: ip.kind(),
            mode: ip.mode,
            nlink: ip.nlink,
            uid: ip.uid,
            gid: ip.gid,
            size: ip.size,
            blocks: ip
                .nblocks
                .saturating_mul(u64::from(self.sb.blocksize / 512)),
            blksize: self.sb.blocksize,
            rdev: match ip.kind() {
                FileType::CharDevice | FileType::BlockDevice => ip.rdev(),
                _ => 0,
            },
            atime: ip.atime,
            mtime: ip.mtime,
            ctime: ip.ctime,
            crtime: ip.crtime,
        })
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let ip = self.dir_inode(ino)?;
        self.dir_entries(&ip)
    }

    fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let ip = self.inode(ino)?;
        match ip.kind() {
            FileType::Regular => {}
            FileType::Directory => return Err(Error::IsDir(format!("xfs inode {ino}"))),
            _ => {
                return Err(Error::Invalid(format!(
                    "xfs inode {ino}: not a regular file"
                )))
            }
        }
        if ip.realtime {
            return Err(Error::Unsupported(format!(
                "xfs inode {ino}: realtime file data is not supported"
            )));
        }
        if off >= ip.size || buf.is_empty() {
            return Ok(0);
        }
        let n = ((ip.size - off).min(buf.len() as u64)) as usize;
        if ip.format == FMT_LOCAL {
            return corrupt(format!("xfs inode {ino}: regular file in local format"));
        }
        let ext = self.extents(&ip, Fork::Data)?;
        self.read_mapped(&ext, off, &mut buf[..n])?;
        Ok(n)
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let ip = self.inode(ino)?;
        if ip.kind() != FileType::Symlink {
            return Err(Error::Invalid(format!(
                "xfs inode {ino}: not a symbolic link"
            )));
        }
        if ip.size == 0 || ip.size > MAX_SYMLINK {
            return corrupt(format!("xfs: symlink {ino}: bad length {}", ip.size));
        }
        match ip.format {
            FMT_LOCAL => match ip.data_fork().get(..ip.size as usize) {
                Some(t) => Ok(t.to_vec()),
                None => corrupt(format!("xfs: symlink {ino}: target overruns the inode")),
            },
            FMT_EXTENTS | inode::FMT_BTREE => self.remote_symlink(&ip),
            f => corrupt(format!("xfs: symlink {ino}: bad fork format {f}")),
        }
    }

    fn xattrs(&self, ino: Ino) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let ip = self.inode(ino)?;
        self.inode_xattrs(&ip)
    }

    fn statfs(&self) -> Result<StatFs> {
        let sb = &self.sb;
        let log = if sb.logstart != 0 {
            u64::from(sb.logblocks)
        } else {
            0
        };
        let blocks = sb.dblocks - log;
        let bfree = sb.fdblocks.min(blocks);
        let icount = sb.icount;
        // As the kernel's xfs_fs_statfs: inodes that could still be made from free space,
        // capped by imaxpct, never below what is allocated.
        let per_block = 1u64 << sb.inopblog;
        let mut files = icount.saturating_add(bfree.saturating_mul(per_block));
        if sb.imax_pct != 0 {
            let max =
                (sb.dblocks.saturating_mul(u64::from(sb.imax_pct)) / 100).saturating_mul(per_block);
            files = files.min(max);
        }
        files = files.max(icount);
        let used = icount.saturating_sub(sb.ifree);
        Ok(StatFs {
            bsize: u64::from(sb.blocksize),
            blocks,
            bfree,
            bavail: bfree,
            files,
            ffree: files.saturating_sub(used),
            namemax: 255,
        })
    }
}
