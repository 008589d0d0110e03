//! Directories: linear and htree (whose interior blocks read as empty space to a linear scan),
//! inline directories, and the metadata_csum checks of leaf and index blocks. Every entry is
//! checked like the kernel's `__ext4_check_dir_entry`.

use super::csum::{crc32c, le16, le32};
use super::inode::{flags, Inode};
use super::superblock::incompat;
use super::{Ext4, Run};
use crate::error::{Error, Result};
use crate::fs::{DirEntry, FileType};

/// Bound on the entries of one directory, far above anything real.
const MAX_ENTRIES: usize = 1 << 24;

fn rec_len(raw: u16, bs: usize) -> usize {
    if bs >= 65536 && (raw == 65535 || raw == 0) {
        65536
    } else {
        (raw as usize & 65532) | ((raw as usize & 3) << 16)
    }
}

impl Ext4 {
    /// Calls `f` on each entry ("." and ".." left out) until it returns true.
    pub(super) fn walk_dir(
        &self,
        dir: &Inode,
        f: &mut dyn FnMut(DirEntry) -> Result<bool>,
    ) -> Result<()> {
        let ino = dir.ino;
        if dir.kind() != FileType::Directory {
            return Err(Error::NotDir(format!("ext4: inode {ino}")));
        }
        if dir.has(flags::ENCRYPT) {
            return Err(Error::Unsupported(format!(
                "ext4: inode {ino}: encrypted directory"
            )));
        }
        let mut count = 0usize;
        let mut emit = |e: DirEntry| -> Result<bool> {
            count += 1;
            if count > MAX_ENTRIES {
                return Err(Error::Corrupt(format!(
                    "ext4: inode {ino}: too many entries"
                )));
            }
            f(e)
        };
        if dir.has(flags::INLINE_DATA) {
            let data = self.inline_data(dir)?;
            let first = data.get(4..60.min(data.len())).unwrap_or(&[]);
            if self.parse_entries(first, ino, "inline data", &mut emit)? {
                return Ok(());
            }
            if data.len() > 60 {
                self.parse_entries(&data[60..], ino, "inline data", &mut emit)?;
            }
            return Ok(());
        }
        let bs = self.sb.block_size;
        if dir.size > self.disk.size() {
            return Err(Error::Corrupt(format!(
                "ext4: directory inode {ino}: size {} is larger than the device",
                dir.size
            )));
        }
        let nblocks = dir.size.div_ceil(bs);
        let mut buf = vec![0u8; bs as usize];
        let mut lblk = 0u64;
        while lblk < nblocks {
            let run = self.map(dir, lblk)?;
            let n = run.len().clamp(1, nblocks - lblk);
            if let Run::Data(p, _) = run {
                for i in 0..n {
                    self.disk.read_block(p + i, &mut buf)?;
                    let what = format!("directory block {}", p + i);
                    let end = self.check_dir_block(dir, &buf, lblk + i, &what)?;
                    if self.parse_entries(&buf[..end], ino, &what, &mut emit)? {
                        return Ok(());
                    }
                }
            }
            lblk += n;
        }
        Ok(())
    }

    /// Verifies a directory block's checksum; returns the length holding entries.
    fn check_dir_block(&self, dir: &Inode, b: &[u8], lblk: u64, what: &str) -> Result<usize> {
        let bs = b.len();
        if !self.sb.metadata_csum() {
            return Ok(bs);
        }
        let bad = |m: &str| {
            Err(Error::Corrupt(format!(
                "ext4: inode {}: {what}: {m}",
                dir.ino
            )))
        };
        let t = bs - 12;
        // Leaf blocks end with a fake entry holding the checksum.
        if le32(b, t) == 0 && le16(b, t + 4) == 12 && b[t + 6] == 0 && b[t + 7] == 0xDE {
            if crc32c(dir.csum_seed, &b[..t]) != le32(b, t + 8) {
                return bad("checksum mismatch");
            }
            return Ok(t);
        }
        // Else an htree index block (root or node), which holds no names.
        if dir.has(flags::INDEX) {
            let first = rec_len(le16(b, 4), bs);
            let count_offset = if first == bs && le32(b, 0) == 0 {
                Some(8)
            } else if lblk == 0 && first == 12 && rec_len(le16(b, 16), bs) == bs - 12 {
                (le32(b, 24) == 0 && b[29] == 8).then_some(32)
            } else {
                None
            };
            if let Some(co) = count_offset {
                let limit = le16(b, co) as usize;
                let count = le16(b, co + 2) as usize;
                let tail = co + limit * 8;
                if count > limit || tail + 8 > bs {
                    return bad("htree index does not fit its block");
                }
                let c = crc32c(dir.csum_seed, &b[..co + count * 8]);
                let c = crc32c(crc32c(c, &b[tail..tail + 4]), &[0; 4]);
                if c != le32(b, tail + 4) {
                    return bad("htree index checksum mismatch");
                }
                return Ok(0);
            }
        }
        bad("no checksum at the end of the block")
    }

    /// Parses the entries packed in `b`; returns true when `f` asked to stop.
    fn parse_entries(
        &self,
        b: &[u8],
        ino: u32,
        what: &str,
        f: &mut dyn FnMut(DirEntry) -> Result<bool>,
    ) -> Result<bool> {
        let filetype = self.sb.has_incompat(incompat::FILETYPE);
        let bs = self.sb.block_size as usize;
        let mut off = 0usize;
        while off + 8 <= b.len() {
            let child = le32(b, off);
            let rl = rec_len(le16(b, off + 4), bs);
            let name_len = if filetype {
                b[off + 6] as usize
            } else {
                le16(b, off + 6) as usize
            };
            let bad = |m: String| -> Result<bool> {
                Err(Error::Corrupt(format!(
                    "ext4: directory inode {ino}: {what}: entry at offset {off}: {m}"
                )))
            };
            if rl < 12 || !rl.is_multiple_of(4) || off + rl > b.len() || 8 + name_len > rl {
                return bad(format!("bad record length {rl} (name length {name_len})"));
            }
            if child != 0 {
                if child > self.sb.inodes_count {
                    return bad(format!("inode {child} out of range"));
                }
                let name = &b[off + 8..off + 8 + name_len];
                if !crate::fs::valid_name(name) {
                    return bad(format!("bad name {:?}", String::from_utf8_lossy(name)));
                }
                if name != b"." && name != b".." {
                    let kind = if filetype {
                        FileType::from_dirent(b[off + 7])
                    } else {
                        self.inode(child as u64)?.kind()
                    };
                    let e = DirEntry {
                        name: name.to_vec(),
                        ino: child as u64,
                        kind,
                    };
                    if f(e)? {
                        return Ok(true);
                    }
                }
            }
            off += rl;
        }
        Ok(false)
    }
}
