//! Version 2/3 directories. Short-form directories live in the inode; every other form
//! (block, leaf, node) keeps its entries in data blocks in the first 32 GiB of the
//! directory's address space, with hash indexes (leaf, node, free blocks) above that. A
//! listing only needs the data blocks, so block, leaf and node directories are read alike:
//! each mapped directory block below the leaf offset, in order.

use super::bmap::Fork;
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use super::{be16, be32, be64, verify_crc, Xfs};
use crate::error::{corrupt, Result};
use crate::fs::{DirEntry, FileType};

const XD2B: u32 = 0x5844_3242; // v4 single-block directory
const XD2D: u32 = 0x5844_3244; // v4 data block
const XDB3: u32 = 0x5844_4233; // v5 single-block directory
const XDD3: u32 = 0x5844_4433; // v5 data block

/// Byte offset of the leaf blocks in directory address space; data blocks lie below.
const LEAF_OFFSET: u64 = 32 << 30;

/// Names the trait promises: non-empty, no '/', no NUL. "." and ".." are left out.
fn keep_name(dir: u64, name: &[u8]) -> Result<bool> {
    if !crate::fs::valid_name(name) {
        return corrupt(format!("xfs: directory {dir}: invalid entry name"));
    }
    Ok(name != b"." && name != b"..")
}

impl Xfs {
    pub(super) fn dir_entries(&self, ip: &Inode) -> Result<Vec<DirEntry>> {
        let mut out = match ip.format {
            FMT_LOCAL => self.shortform(ip)?,
            FMT_EXTENTS | FMT_BTREE => self.dir_blocks(ip)?,
            f => return corrupt(format!("xfs: directory {}: bad fork format {f}", ip.ino)),
        };
        if !self.sb.ftype {
            for e in &mut out {
                e.kind = self.inode(e.ino)?.kind();
            }
        }
        Ok(out)
    }

    fn check_ino(&self, dir: u64, ino: u64) -> Result<u64> {
        self.sb.inode_offset(ino).map_err(|_| {
            crate::error::Error::Corrupt(format!(
                "xfs: directory {dir}: entry points at invalid inode {ino}"
            ))
        })?;
        Ok(ino)
    }

    /// Header: count, count of 8-byte inode numbers (then all numbers are 8 bytes), parent.
    /// Entries: name length, 16-bit offset (its place in a block form), name, file type
    /// when the filesystem records it, inode number.
    fn shortform(&self, ip: &Inode) -> Result<Vec<DirEntry>> {
        let fork = ip.data_fork();
        if ip.size > fork.len() as u64 || ip.size < 6 {
            return corrupt(format!(
                "xfs: directory {}: short-form size {} does not fit the inode",
                ip.ino, ip.size
            ));
        }
        let b = &fork[..ip.size as usize];
        let count = usize::from(b[0]);
        let i8 = b[1] != 0;
        let isz = if i8 { 8 } else { 4 };
        let read_ino = |at: usize| -> Result<u64> {
            if i8 {
                be64(b, at)
            } else {
                be32(b, at).map(u64::from)
            }
        };
        self.check_ino(ip.ino, read_ino(2)?)?;
        let mut pos = 2 + isz;
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let namelen = usize::from(*b.get(pos).ok_or_else(|| short(ip.ino))?);
            let name = b
                .get(pos + 3..pos + 3 + namelen)
                .ok_or_else(|| short(ip.ino))?;
            let mut at = pos + 3 + namelen;
            let mut kind = FileType::Unknown;
            if self.sb.ftype {
                kind = FileType::from_dirent(*b.get(at).ok_or_else(|| short(ip.ino))?);
                at += 1;
            }
            let ino = self.check_ino(ip.ino, read_ino(at)?)?;
            pos = at + isz;
            if keep_name(ip.ino, name)? {
                out.push(DirEntry {
                    name: name.to_vec(),
                    ino,
                    kind,
                });
            }
        }
        Ok(out)
    }

    fn dir_blocks(&self, ip: &Inode) -> Result<Vec<DirEntry>> {
        let ext = self.extents(ip, Fork::Data)?;
        let dbs = self.sb.dirblksize() as u64;
        let fsb_per_db = 1u64 << self.sb.dirblklog;
        // A directory cannot hold more data than the filesystem: bounds the work of a map
        // that repeats the same blocks at many offsets.
        let limit = (ip.size.min(LEAF_OFFSET)).min(self.sb.dblocks << self.sb.blocklog);
        let mut out = Vec::new();
        let mut last_db: Option<u64> = None;
        for e in ext.iter() {
            let first = e.off / fsb_per_db;
            let end = (e.off + e.len).div_ceil(fsb_per_db);
            for db in first..end {
                if db * dbs >= limit {
                    break;
                }
                if last_db.is_some_and(|l| db <= l) {
                    continue;
                }
                last_db = Some(db);
                let mut b = vec![0u8; dbs as usize];
                self.read_mapped(&ext, db * dbs, &mut b)?;
                self.data_block(ip.ino, db, &b, &mut out)?;
            }
        }
        Ok(out)
    }

    fn data_block(&self, dir: u64, db: u64, b: &[u8], out: &mut Vec<DirEntry>) -> Result<()> {
        let magic = be32(b, 0)?;
        let crc = self.sb.crc();
        let single = if crc { magic == XDB3 } else { magic == XD2B };
        let data = if crc { magic == XDD3 } else { magic == XD2D };
        if !(single && db == 0 || data) {
            return corrupt(format!(
                "xfs: directory {dir}: block {db}: bad data block magic {magic:#x}"
            ));
        }
        let hdr = if crc {
            if !verify_crc(b, 4) {
                return corrupt(format!(
                    "xfs: directory {dir}: block {db}: checksum mismatch"
                ));
            }
            if be64(b, 40)? != dir {
                return corrupt(format!(
                    "xfs: directory {dir}: block {db} belongs to inode {}",
                    be64(b, 40)?
                ));
            }
            64
        } else {
            16
        };
        let mut end = b.len();
        if single {
            // Tail: leaf entry count and stale count; the leaf entries (8 bytes) precede it.
            let count = u64::from(be32(b, end - 8)?);
            let leaf = count * 8 + 8;
            if leaf > (end - hdr) as u64 {
                return corrupt(format!(
                    "xfs: directory {dir}: block form leaf of {count} entries too large"
                ));
            }
            end -= leaf as usize;
        }
        let mut pos = hdr;
        while pos < end {
            if be16(b, pos)? == 0xffff {
                let len = usize::from(be16(b, pos + 2)?);
                if len < 8 || len % 8 != 0 || pos + len > end {
                    return corrupt(format!(
                        "xfs: directory {dir}: block {db}: bad free space length {len}"
                    ));
                }
                pos += len;
                continue;
            }
            let ino = be64(b, pos)?;
            let namelen = usize::from(*b.get(pos + 8).ok_or_else(|| short(dir))?);
            let ft = usize::from(self.sb.ftype);
            let size = (8 + 1 + namelen + ft + 2).div_ceil(8) * 8;
            if namelen == 0 || pos + size > end {
                return corrupt(format!(
                    "xfs: directory {dir}: block {db}: bad entry at offset {pos}"
                ));
            }
            let name = &b[pos + 9..pos + 9 + namelen];
            let kind = if ft == 1 {
                FileType::from_dirent(b[pos + 9 + namelen])
            } else {
                FileType::Unknown
            };
            if keep_name(dir, name)? {
                out.push(DirEntry {
                    name: name.to_vec(),
                    ino: self.check_ino(dir, ino)?,
                    kind,
                });
            }
            pos += size;
        }
        Ok(())
    }
}

fn short(ino: u64) -> crate::error::Error {
    crate::error::Error::Corrupt(format!("xfs: directory {ino}: entries overrun"))
}
