//! Extended attributes: in the inode body after i_extra_isize, and in one external block
//! (i_file_acl); large values in their own inode (ea_inode). Also the `system.data` attribute
//! that holds the part of an inline file or directory beyond i_block. ACLs are converted from
//! ext4's compact on-disk form to the `system.posix_acl_*` form getfattr shows.

use super::csum::{crc32c, le16, le32, zeroed};
use super::inode::{flags, Inode, I_BLOCK};
use super::Ext4;
use crate::error::{Error, Result};

const MAGIC: u32 = 0xEA02_0000;
/// XATTR_SIZE_MAX: no value is larger.
const MAX_VALUE: u64 = 65536;

struct Raw {
    index: u8,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Ext4 {
    /// All attributes, with their prefixes, as listxattr shows them.
    pub(super) fn list_xattrs(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for r in self.raw_xattrs(inode, true)? {
            let prefix: &[u8] = match r.index {
                1 => b"user.",
                2 => b"system.posix_acl_access",
                3 => b"system.posix_acl_default",
                4 => b"trusted.",
                6 => b"security.",
                10 => b"gnu.",
                // system.data (inline data) and richacl have no handler in the kernel:
                // listxattr does not show them.
                _ => continue,
            };
            let mut name = prefix.to_vec();
            name.extend_from_slice(&r.name);
            let value = if r.index == 2 || r.index == 3 {
                acl_to_xattr(&r.value, inode.ino)?
            } else {
                r.value
            };
            out.push((name, value));
        }
        Ok(out)
    }

    /// The contents of an inline-data inode: i_block then the system.data value.
    pub(super) fn inline_data(&self, inode: &Inode) -> Result<Vec<u8>> {
        let mut data = inode.raw[I_BLOCK].to_vec();
        for r in self.raw_xattrs(inode, false)? {
            if r.index == 7 && r.name == b"data" {
                data.extend_from_slice(&r.value);
                break;
            }
        }
        Ok(data)
    }

    fn raw_xattrs(&self, inode: &Inode, external: bool) -> Result<Vec<Raw>> {
        let ino = inode.ino;
        let mut out = Vec::new();
        let start = inode.body_end;
        if inode.raw.len() >= start + 4 && le32(&inode.raw, start) == MAGIC {
            let region = &inode.raw[start + 4..];
            self.parse_xattr_entries(region, region, ino, "in-inode attributes", &mut out)?;
        }
        let acl = inode.file_acl();
        if external && acl != 0 {
            self.check_block(acl, ino, "attribute block")?;
            let mut b = vec![0u8; self.sb.block_size as usize];
            self.disk.read_block(acl, &mut b)?;
            let what = format!("attribute block {acl}");
            if le32(&b, 0) != MAGIC || le32(&b, 8) != 1 {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {ino}: {what}: bad header"
                )));
            }
            if self.sb.metadata_csum() {
                let c = crc32c(self.sb.csum_seed, &acl.to_le_bytes());
                if crc32c(c, &zeroed(&b, 16, 4)) != le32(&b, 16) {
                    return Err(Error::Corrupt(format!(
                        "ext4: inode {ino}: {what}: checksum mismatch"
                    )));
                }
            }
            self.parse_xattr_entries(&b[32..], &b, ino, &what, &mut out)?;
        }
        Ok(out)
    }

    /// Entries are in `entries`; value offsets count from the start of `base`.
    fn parse_xattr_entries(
        &self,
        entries: &[u8],
        base: &[u8],
        ino: u32,
        what: &str,
        out: &mut Vec<Raw>,
    ) -> Result<()> {
        let bad = |m: String| Err(Error::Corrupt(format!("ext4: inode {ino}: {what}: {m}")));
        let mut off = 0usize;
        while off + 4 <= entries.len() && le32(entries, off) != 0 {
            if off + 16 > entries.len() {
                return bad("truncated entry".into());
            }
            let name_len = entries[off] as usize;
            let index = entries[off + 1];
            let value_offs = le16(entries, off + 2) as usize;
            let value_inum = le32(entries, off + 4);
            let value_size = le32(entries, off + 8) as u64;
            let Some(name) = entries.get(off + 16..off + 16 + name_len) else {
                return bad("entry name past the end".into());
            };
            if value_size > MAX_VALUE {
                return bad(format!("value of {value_size} bytes"));
            }
            let value = if value_inum != 0 {
                self.ea_inode_value(value_inum, value_size, ino)?
            } else {
                match base.get(value_offs..value_offs + value_size as usize) {
                    Some(v) => v.to_vec(),
                    None => return bad("value past the end".into()),
                }
            };
            out.push(Raw {
                index,
                name: name.to_vec(),
                value,
            });
            off += (16 + name_len + 3) & !3;
        }
        Ok(())
    }

    fn ea_inode_value(&self, inum: u32, size: u64, owner: u32) -> Result<Vec<u8>> {
        let ea = self.inode(inum as u64)?;
        if !ea.has(flags::EA_INODE) || ea.size != size {
            return Err(Error::Corrupt(format!(
                "ext4: inode {owner}: attribute value inode {inum} is not one"
            )));
        }
        let mut v = vec![0u8; size as usize];
        let n = self.read_data(&ea, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }
}

/// ext4's ACL (version 1; short entries for the owner/group/mask/other tags) to the
/// POSIX ACL xattr (version 2, 8-byte entries).
fn acl_to_xattr(v: &[u8], ino: u32) -> Result<Vec<u8>> {
    let bad = || Error::Corrupt(format!("ext4: inode {ino}: bad ACL"));
    if v.len() < 4 || le32(v, 0) != 1 {
        return Err(bad());
    }
    let mut out = 2u32.to_le_bytes().to_vec();
    let mut off = 4;
    while off < v.len() {
        let tag = le16(v, off);
        let perm = le16(v, off + 2);
        let (id, n) = match tag {
            2 | 8 => {
                if off + 8 > v.len() {
                    return Err(bad());
                }
                (le32(v, off + 4), 8)
            }
            1 | 4 | 0x10 | 0x20 => (u32::MAX, 4),
            _ => return Err(bad()),
        };
        if off + n > v.len() {
            return Err(bad());
        }
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
        off += n;
    }
    Ok(out)
}
