//! ext2, ext3 and ext4, read-only, with the journal replayed in memory.
//!
//! Written by hand: the `ext4-view` crate (1.0 / 0.9) is path-based and its metadata has no
//! inode numbers, timestamps, link counts, device numbers or extended attributes, which
//! virt-ls -l, --time-*, stat and virt-diff need; nothing else on crates.io reads ext4.
//!
//! Every structure is validated before use (see each module); metadata reads go through a
//! bounded page cache, and through the journal overlay when the filesystem needs recovery.

mod blockmap;
mod csum;
mod dir;
mod extent;
mod group;
mod inode;
mod journal;
mod superblock;
mod xattr;

use crate::dev::{BlockDev, CachedDev};
use crate::error::{Error, Result};
use crate::fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs};
use inode::{flags, Inode};
use journal::JBlock;
use std::collections::BTreeMap;
use std::sync::Arc;
use superblock::{compat, incompat, Superblock};

/// Memory the metadata cache may hold.
const CACHE_BYTES: usize = 8 << 20;
/// Where the superblock is.
const SB_OFFSET: u64 = 1024;

/// A contiguous run of logical blocks and what backs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// `n` blocks at physical block `p`.
    Data(u64, u64),
    /// Unallocated: reads as zeros.
    Hole(u64),
    /// Allocated but uninitialized (an unwritten extent): reads as zeros.
    Zero(u64),
}

impl Run {
    fn len(&self) -> u64 {
        match *self {
            Run::Data(_, n) | Run::Hole(n) | Run::Zero(n) => n,
        }
    }
}

/// The device as the filesystem sees it: bytes through the cache, with the newest journaled
/// copy of a block in place of the block when there is one.
struct Disk {
    dev: CachedDev,
    bs: u64,
    journal: BTreeMap<u64, JBlock>,
}

impl Disk {
    fn size(&self) -> u64 {
        self.dev.size()
    }

    fn read_block(&self, blk: u64, buf: &mut [u8]) -> Result<()> {
        let off = blk
            .checked_mul(self.bs)
            .ok_or_else(|| Error::Corrupt(format!("ext4: block {blk} out of range")))?;
        self.read_bytes(off, buf)
    }

    fn read_bytes(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.dev.read_at(buf, off)?;
        if self.journal.is_empty() || buf.is_empty() {
            return Ok(());
        }
        let end = off + buf.len() as u64;
        let (first, last) = (off / self.bs, (end - 1) / self.bs);
        let mut copy = vec![0u8; self.bs as usize];
        for (&blk, jb) in self.journal.range(first..=last) {
            self.dev.read_at(&mut copy, jb.loc * self.bs)?;
            if jb.escaped {
                copy[..4].copy_from_slice(&0xC03B_3998u32.to_be_bytes());
            }
            let bstart = blk * self.bs;
            let from = bstart.max(off);
            let to = (bstart + self.bs).min(end);
            buf[(from - off) as usize..(to - off) as usize]
                .copy_from_slice(&copy[(from - bstart) as usize..(to - bstart) as usize]);
        }
        Ok(())
    }
}

/// An ext2/3/4 filesystem opened read-only.
pub struct Ext4 {
    disk: Disk,
    sb: Superblock,
}

impl Ext4 {
    /// Reads the superblock, checks it, and replays the journal in memory when the
    /// filesystem needs recovery.
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<Ext4> {
        let dev = CachedDev::new(dev, CACHE_BYTES);
        let mut raw = [0u8; 1024];
        dev.read_at(&mut raw, SB_OFFSET)
            .map_err(|_| Error::Corrupt("ext2/3/4: device too small for a superblock".into()))?;
        let sb = Superblock::parse(&raw, dev.size())?;
        let mut fs = Ext4 {
            disk: Disk {
                dev,
                bs: sb.block_size,
                journal: BTreeMap::new(),
            },
            sb,
        };
        if fs.sb.has_incompat(incompat::RECOVER) && fs.sb.has_compat(compat::HAS_JOURNAL) {
            let map = fs.replay_journal()?;
            if !map.is_empty() {
                fs.disk.journal = map;
                // The superblock itself may have been journaled.
                fs.disk.read_bytes(SB_OFFSET, &mut raw)?;
                let size = fs.disk.size();
                fs.sb = Superblock::parse(&raw, size)?;
                fs.disk.bs = fs.sb.block_size;
            }
        }
        Ok(fs)
    }

    /// Maps logical block `lblk` of `inode` to a run, checked against the filesystem.
    fn map(&self, inode: &Inode, lblk: u64) -> Result<Run> {
        let run = if inode.has(flags::EXTENTS) {
            self.extent_map(inode, lblk)?
        } else {
            self.blockmap_map(inode, lblk)?
        };
        if let Run::Data(p, n) = run {
            if n == 0 || !matches!(p.checked_add(n), Some(e) if e <= self.sb.blocks_count) {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {}: {n} blocks at {p} are outside the filesystem",
                    inode.ino
                )));
            }
        }
        if run.len() == 0 {
            return Err(Error::Corrupt(format!(
                "ext4: inode {}: empty run",
                inode.ino
            )));
        }
        Ok(run)
    }

    /// Reads file data at `off` of `inode` (any type: regular files, slow symlinks, the
    /// journal, attribute inodes); short only at end of file.
    fn read_data(&self, inode: &Inode, off: u64, buf: &mut [u8]) -> Result<usize> {
        if inode.has(flags::ENCRYPT) {
            return Err(Error::Unsupported(format!(
                "ext4: inode {}: encrypted file",
                inode.ino
            )));
        }
        if off >= inode.size {
            return Ok(0);
        }
        let n = (buf.len() as u64).min(inode.size - off) as usize;
        let buf = &mut buf[..n];
        if inode.has(flags::INLINE_DATA) {
            let data = self.inline_data(inode)?;
            if inode.size > data.len() as u64 {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {}: size {} is more than its inline data",
                    inode.ino, inode.size
                )));
            }
            buf.copy_from_slice(&data[off as usize..off as usize + n]);
            return Ok(n);
        }
        let bs = self.sb.block_size;
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let lblk = pos / bs;
            let in_blk = pos % bs;
            let run = self.map(inode, lblk)?;
            let avail = run.len().saturating_mul(bs) - in_blk;
            let len = avail.min((n - done) as u64) as usize;
            let out = &mut buf[done..done + len];
            match run {
                Run::Data(p, _) => self.disk.read_bytes(p * bs + in_blk, out)?,
                Run::Hole(_) | Run::Zero(_) => out.fill(0),
            }
            done += len;
        }
        Ok(n)
    }

    fn stat_inode(&self, i: &Inode) -> Stat {
        let kind = i.kind();
        Stat {
            ino: i.ino as u64,
            kind,
            mode: i.mode as u32,
            nlink: i.links() as u64,
            uid: i.uid(),
            gid: i.gid(),
            size: i.size,
            blocks: i.blocks_512(self.huge_file(), self.sb.block_size),
            blksize: self.sb.block_size as u32,
            rdev: match kind {
                FileType::CharDevice | FileType::BlockDevice => i.rdev(),
                _ => 0,
            },
            atime: i.atime(),
            mtime: i.mtime(),
            ctime: i.ctime(),
            crtime: i.crtime(),
        }
    }

    /// Blocks the kernel counts as overhead in statfs (ext4_calculate_overhead).
    fn overhead(&self) -> Result<u64> {
        let sb = &self.sb;
        if sb.overhead_clusters != 0 {
            return Ok(sb.overhead_clusters as u64);
        }
        let per_block = sb.block_size / sb.desc_size as u64;
        let gdb = (sb.group_count as u64).div_ceil(per_block);
        let itb = (sb.inodes_per_group as u64 * sb.inode_size as u64).div_ceil(sb.block_size);
        let meta = sb.has_incompat(incompat::META_BG);
        let mut total = sb.first_data_block as u64;
        for g in 0..sb.group_count {
            let has_super = sb.group_has_super(g);
            let g64 = g as u64;
            let gd_blocks = if meta && g64 / per_block >= sb.first_meta_bg as u64 {
                let i = g64 % per_block;
                (i == 0 || i == 1 || i == per_block - 1) as u64
            } else if has_super {
                if meta {
                    sb.first_meta_bg as u64
                } else {
                    gdb
                }
            } else {
                0
            };
            total += has_super as u64 + gd_blocks + itb + 2;
        }
        if sb.has_compat(compat::HAS_JOURNAL) && sb.journal_inum != 0 {
            if let Ok(j) = self.inode(sb.journal_inum as u64) {
                total += j.size / sb.block_size;
            }
        }
        Ok(total)
    }
}

impl Filesystem for Ext4 {
    fn info(&self) -> FsInfo {
        let name = &self.sb.volume_name;
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let label = (end > 0).then(|| String::from_utf8_lossy(&name[..end]).into_owned());
        let u = &self.sb.uuid;
        let uuid = u.iter().any(|&b| b != 0).then(|| {
            let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                h[..4].concat(),
                h[4..6].concat(),
                h[6..8].concat(),
                h[8..10].concat(),
                h[10..].concat()
            )
        });
        FsInfo {
            kind: self.sb.kind().into(),
            label,
            uuid,
        }
    }

    fn root(&self) -> Ino {
        2
    }

    fn stat(&self, ino: Ino) -> Result<Stat> {
        Ok(self.stat_inode(&self.inode(ino)?))
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let dir = self.inode(ino)?;
        let mut out = Vec::new();
        self.walk_dir(&dir, &mut |e| {
            out.push(e);
            Ok(false)
        })?;
        Ok(out)
    }

    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        let dir = self.inode(dir)?;
        let mut found = None;
        self.walk_dir(&dir, &mut |e| {
            if e.name == name {
                found = Some(e);
                return Ok(true);
            }
            Ok(false)
        })?;
        Ok(found)
    }

    fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let i = self.inode(ino)?;
        match i.kind() {
            FileType::Directory => Err(Error::IsDir(format!("ext4: inode {ino}"))),
            FileType::Regular => self.read_data(&i, off, buf),
            _ => Err(Error::Invalid(format!(
                "ext4: inode {ino} is not a regular file"
            ))),
        }
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let i = self.inode(ino)?;
        if i.kind() != FileType::Symlink {
            return Err(Error::Invalid(format!(
                "ext4: inode {ino} is not a symbolic link"
            )));
        }
        // PATH_MAX bounds a target; anything longer is corrupt.
        if i.size == 0 || i.size > 4096 {
            return Err(Error::Corrupt(format!(
                "ext4: symlink inode {ino}: target of {} bytes",
                i.size
            )));
        }
        let ea_blocks = if i.file_acl() != 0 {
            self.sb.block_size / 512
        } else {
            0
        };
        let blocks = i.blocks_512(self.huge_file(), self.sb.block_size);
        if !i.has(flags::INLINE_DATA) && i.size < 60 && blocks.saturating_sub(ea_blocks) == 0 {
            // Fast symlink: the target is in i_block.
            return Ok(i.i_block()[..i.size as usize].to_vec());
        }
        let mut v = vec![0u8; i.size as usize];
        let n = self.read_data(&i, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    fn xattrs(&self, ino: Ino) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let i = self.inode(ino)?;
        self.list_xattrs(&i)
    }

    fn statfs(&self) -> Result<StatFs> {
        let sb = &self.sb;
        let blocks = sb.blocks_count.saturating_sub(self.overhead()?);
        // The kernel keeps back 2% (at most 4096 clusters) on extent filesystems
        // (s_resv_clusters) besides the reserved blocks.
        let resv = if sb.has_incompat(incompat::EXTENTS) {
            (sb.blocks_count / 50).min(4096)
        } else {
            0
        };
        let bfree = sb.free_blocks_count;
        Ok(StatFs {
            bsize: sb.block_size,
            blocks,
            bfree,
            bavail: bfree.saturating_sub(sb.r_blocks_count + resv),
            files: sb.inodes_count as u64,
            ffree: sb.free_inodes_count as u64,
            namemax: 255,
        })
    }
}
