//! Extended attributes: short-form (in the inode's attribute fork), leaf blocks (one block,
//! or the leaves of a node tree walked left to right through their sibling links), with
//! values stored locally in the leaf or in "remote" value blocks.
//!
//! Namespaces are flag bits: none is "user.", ROOT is "trusted.", SECURE is "security.".
//! POSIX ACLs are kept as trusted "SGI_ACL_FILE"/"SGI_ACL_DEFAULT" in XFS's own big-endian
//! layout; they are shown as Linux shows them, system.posix_acl_access/default in the
//! little-endian xattr layout. Parent pointers (v5 "parent" feature) are not xattrs and are
//! left out, as are half-set (INCOMPLETE) attributes.

use super::bmap::{Extent, Fork};
use super::inode::{Inode, FMT_BTREE, FMT_EXTENTS, FMT_LOCAL};
use super::{be16, be32, be64, verify_crc, Xfs};
use crate::error::{corrupt, Error, Result};
use std::collections::HashSet;

const FLAG_LOCAL: u8 = 0x01;
const FLAG_ROOT: u8 = 0x02;
const FLAG_SECURE: u8 = 0x04;
const FLAG_PARENT: u8 = 0x08;
const FLAG_INCOMPLETE: u8 = 0x80;

const LEAF_MAGIC: u16 = 0xfbee;
const LEAF3_MAGIC: u16 = 0x3bee;
const NODE_MAGIC: u16 = 0xfebe;
const NODE3_MAGIC: u16 = 0x3ebe;
const RMT_MAGIC: u32 = 0x5841_524d; // "XARM"
/// XATTR_SIZE_MAX: no value is larger.
const MAX_VALUE: usize = 65536;
const MAX_DEPTH: usize = 8;
/// Names and values of one inode, all together: far above any real inode (a hostile chain of
/// leaves full of 64 KiB remote values would otherwise grow without bound).
const MAX_TOTAL: usize = 64 << 20;

type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

fn full_name(flags: u8, name: &[u8], value: Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
    if flags & (FLAG_PARENT | FLAG_INCOMPLETE) != 0 {
        return None;
    }
    if flags & FLAG_ROOT != 0 {
        let acl = match name {
            b"SGI_ACL_FILE" => Some(&b"system.posix_acl_access"[..]),
            b"SGI_ACL_DEFAULT" => Some(&b"system.posix_acl_default"[..]),
            _ => None,
        };
        if let (Some(n), Some(v)) = (acl, acl_to_linux(&value)) {
            return Some((n.to_vec(), v));
        }
    }
    let prefix: &[u8] = if flags & FLAG_ROOT != 0 {
        b"trusted."
    } else if flags & FLAG_SECURE != 0 {
        b"security."
    } else {
        b"user."
    };
    Some(([prefix, name].concat(), value))
}

/// XFS ACL (count, then tag/id/perm/pad big-endian) to the Linux xattr form (version 2,
/// then tag/perm/id little-endian; ids only for named users and groups).
fn acl_to_linux(v: &[u8]) -> Option<Vec<u8>> {
    let count = be32(v, 0).ok()? as usize;
    if v.len() != 4 + count.checked_mul(12)? {
        return None;
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    for i in 0..count {
        let e = &v[4 + i * 12..];
        let tag = be32(e, 0).ok()?;
        let id = be32(e, 4).ok()?;
        let perm = be16(e, 8).ok()?;
        out.extend_from_slice(&(tag as u16).to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        let id = if tag == 2 || tag == 8 { id } else { u32::MAX };
        out.extend_from_slice(&id.to_le_bytes());
    }
    Some(out)
}

impl Xfs {
    pub(super) fn inode_xattrs(&self, ip: &Inode) -> Result<Xattrs> {
        let Some(fork) = ip.attr_fork() else {
            return Ok(Vec::new());
        };
        match ip.aformat {
            FMT_LOCAL => shortform(ip.ino, fork),
            FMT_EXTENTS | FMT_BTREE => self.attr_blocks(ip),
            f => corrupt(format!(
                "xfs: inode {}: bad attribute fork format {f}",
                ip.ino
            )),
        }
    }

    fn attr_blocks(&self, ip: &Inode) -> Result<Xattrs> {
        let ext = self.extents(ip, Fork::Attr)?;
        if ext.is_empty() {
            return Ok(Vec::new());
        }
        let crc = self.sb.crc();
        let mut out = Vec::new();
        let mut blk = 0u32;
        // Down the leftmost path of a node tree to the first leaf.
        for depth in 0.. {
            let b = self.attr_block(ip.ino, &ext, blk)?;
            let magic = be16(&b, 8)?;
            if magic == if crc { LEAF3_MAGIC } else { LEAF_MAGIC } {
                break;
            }
            if magic != if crc { NODE3_MAGIC } else { NODE_MAGIC } || depth >= MAX_DEPTH {
                return corrupt(format!(
                    "xfs: inode {}: attribute block {blk}: bad magic {magic:#x}",
                    ip.ino
                ));
            }
            let hdr = if crc { 64 } else { 16 };
            if be16(&b, hdr - if crc { 8 } else { 4 })? == 0 {
                return corrupt(format!("xfs: inode {}: empty attribute node", ip.ino));
            }
            blk = be32(&b, hdr + 4)?;
        }
        // Then along the leaves.
        let total: u64 = ext.iter().map(|e| e.len).sum();
        let mut seen = HashSet::new();
        let mut total_bytes = 0;
        loop {
            if !seen.insert(blk) || seen.len() as u64 > total {
                return corrupt(format!("xfs: inode {}: attribute leaves loop", ip.ino));
            }
            let b = self.attr_block(ip.ino, &ext, blk)?;
            if be16(&b, 8)? != if crc { LEAF3_MAGIC } else { LEAF_MAGIC } {
                return corrupt(format!(
                    "xfs: inode {}: attribute block {blk} is not a leaf",
                    ip.ino
                ));
            }
            self.attr_leaf(ip.ino, &ext, &b, &mut out, &mut total_bytes)?;
            blk = be32(&b, 0)?;
            if blk == 0 {
                return Ok(out);
            }
        }
    }

    /// One block of the attribute fork, with its v5 header checked.
    fn attr_block(&self, ino: u64, ext: &[Extent], blk: u32) -> Result<Vec<u8>> {
        let bs = self.sb.blocksize as usize;
        let mut b = vec![0u8; bs];
        self.read_mapped(ext, u64::from(blk) * bs as u64, &mut b)?;
        if self.sb.crc() {
            if !verify_crc(&b, 12) {
                return corrupt(format!(
                    "xfs: inode {ino}: attribute block {blk}: checksum mismatch"
                ));
            }
            if be64(&b, 48)? != ino {
                return corrupt(format!(
                    "xfs: inode {ino}: attribute block {blk} belongs elsewhere"
                ));
            }
        }
        Ok(b)
    }

    fn attr_leaf(
        &self,
        ino: u64,
        ext: &[Extent],
        b: &[u8],
        out: &mut Xattrs,
        total: &mut usize,
    ) -> Result<()> {
        let (hdr, count) = if self.sb.crc() {
            (80, be16(b, 56)?)
        } else {
            (32, be16(b, 12)?)
        };
        let bad = |what: &str| Error::Corrupt(format!("xfs: inode {ino}: attribute leaf: {what}"));
        if hdr + usize::from(count) * 8 > b.len() {
            return Err(bad("too many entries"));
        }
        for i in 0..usize::from(count) {
            let e = hdr + i * 8;
            let idx = usize::from(be16(b, e + 4)?);
            let flags = b[e + 6];
            if idx >= b.len() {
                return Err(bad("name offset outside the block"));
            }
            let (name, value) = if flags & FLAG_LOCAL != 0 {
                let vlen = usize::from(be16(b, idx)?);
                let nlen = usize::from(*b.get(idx + 2).ok_or_else(|| bad("entry overruns"))?);
                let nv = b
                    .get(idx + 3..idx + 3 + nlen + vlen)
                    .ok_or_else(|| bad("entry overruns"))?;
                (&nv[..nlen], nv[nlen..].to_vec())
            } else {
                let vblk = be32(b, idx)?;
                let vlen = be32(b, idx + 4)? as usize;
                let nlen = usize::from(*b.get(idx + 8).ok_or_else(|| bad("entry overruns"))?);
                let name = b
                    .get(idx + 9..idx + 9 + nlen)
                    .ok_or_else(|| bad("entry overruns"))?;
                if flags & FLAG_INCOMPLETE != 0 {
                    continue;
                }
                (name, self.remote_value(ino, ext, vblk, vlen)?)
            };
            if name.is_empty() {
                return Err(bad("empty name"));
            }
            *total += name.len() + value.len();
            if *total > MAX_TOTAL {
                return Err(Error::Unsupported(format!(
                    "xfs: inode {ino}: more than {MAX_TOTAL} bytes of extended attributes"
                )));
            }
            out.extend(full_name(flags, name, value));
        }
        Ok(())
    }

    /// A value kept in its own blocks of the attribute fork; on v5 every block starts with
    /// an "XARM" header (offset, byte count, CRC, owner).
    fn remote_value(&self, ino: u64, ext: &[Extent], blk: u32, len: usize) -> Result<Vec<u8>> {
        if len > MAX_VALUE {
            return corrupt(format!("xfs: inode {ino}: attribute value of {len} bytes"));
        }
        let bs = self.sb.blocksize as usize;
        let mut out = Vec::with_capacity(len);
        if !self.sb.crc() {
            out.resize(len, 0);
            self.read_mapped(ext, u64::from(blk) * bs as u64, &mut out)?;
            return Ok(out);
        }
        let per = bs - 56;
        let mut b = vec![0u8; bs];
        let mut blk = u64::from(blk);
        while out.len() < len {
            self.read_mapped(ext, blk * bs as u64, &mut b)?;
            let n = per.min(len - out.len());
            if be32(&b, 0)? != RMT_MAGIC
                || !verify_crc(&b, 12)
                || be32(&b, 4)? as usize != out.len()
                || be32(&b, 8)? as usize != n
                || be64(&b, 32)? != ino
            {
                return corrupt(format!(
                    "xfs: inode {ino}: bad remote attribute value block {blk}"
                ));
            }
            out.extend_from_slice(&b[56..56 + n]);
            blk += 1;
        }
        Ok(out)
    }
}

/// Header: total size, count, pad. Entries: name length, value length, flags, name, value.
fn shortform(ino: u64, fork: &[u8]) -> Result<Xattrs> {
    let total = usize::from(be16(fork, 0)?);
    let count = *fork.get(2).unwrap_or(&0);
    if total > fork.len() || total < 4 {
        return corrupt(format!(
            "xfs: inode {ino}: short-form attributes overrun the fork"
        ));
    }
    let b = &fork[..total];
    let mut pos = 4;
    let mut out = Vec::new();
    for _ in 0..count {
        let bad = || Error::Corrupt(format!("xfs: inode {ino}: short-form attribute overruns"));
        let h = b.get(pos..pos + 3).ok_or_else(bad)?;
        let (nlen, vlen, flags) = (usize::from(h[0]), usize::from(h[1]), h[2]);
        let nv = b.get(pos + 3..pos + 3 + nlen + vlen).ok_or_else(bad)?;
        if nlen == 0 {
            return corrupt(format!("xfs: inode {ino}: empty attribute name"));
        }
        out.extend(full_name(flags, &nv[..nlen], nv[nlen..].to_vec()));
        pos += 3 + nlen + vlen;
    }
    Ok(out)
}
