//! The jbd2 journal, replayed in memory: when a filesystem was not cleanly unmounted
//! (needs_recovery), the blocks of its committed transactions are found (descriptor blocks
//! and their tags, revoke blocks, commit blocks, with the v2/v3 checksums) and every later
//! read sees the newest journaled copy of a block, as after the kernel's recovery, without
//! writing anything. The scan visits at most one lap of the log.

use super::csum::{be16, be32, crc32c};
use super::{Ext4, Run};
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};

const MAGIC: u32 = 0xC03B_3998;
const DESCRIPTOR: u32 = 1;
const COMMIT: u32 = 2;
const SB_V1: u32 = 3;
const SB_V2: u32 = 4;
const REVOKE: u32 = 5;

const INCOMPAT_REVOKE: u32 = 0x1;
const INCOMPAT_64BIT: u32 = 0x2;
const INCOMPAT_ASYNC_COMMIT: u32 = 0x4;
const INCOMPAT_CSUM_V2: u32 = 0x8;
const INCOMPAT_CSUM_V3: u32 = 0x10;
const INCOMPAT_FAST_COMMIT: u32 = 0x20;

const FLAG_ESCAPE: u32 = 1;
const FLAG_SAME_UUID: u32 = 2;
const FLAG_LAST_TAG: u32 = 8;

/// Where the newest journaled copy of a filesystem block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JBlock {
    /// Filesystem block holding the copy (inside the journal).
    pub loc: u64,
    /// The copy's first four bytes were the journal magic, stored as zeros.
    pub escaped: bool,
}

struct Tag {
    target: u64,
    loc: u64,
    escaped: bool,
}

impl Ext4 {
    /// Scans the journal and returns the block -> copy map replay would apply.
    pub(super) fn replay_journal(&self) -> Result<BTreeMap<u64, JBlock>> {
        let sb = &self.sb;
        let bs = sb.block_size as usize;
        if sb.journal_inum == 0 {
            return Err(Error::Unsupported(
                "ext4: needs journal recovery from an external journal device".into(),
            ));
        }
        let jino = self.inode(sb.journal_inum as u64)?;
        let jlen = jino.size / sb.block_size;
        let bad = |m: String| Err(Error::Corrupt(format!("ext4: journal: {m}")));
        let phys = |l: u64| -> Result<u64> {
            if l >= jlen {
                return Err(Error::Corrupt(format!(
                    "ext4: journal: block {l} past its end"
                )));
            }
            match self.map(&jino, l)? {
                Run::Data(p, _) => Ok(p),
                _ => Err(Error::Corrupt(format!(
                    "ext4: journal: block {l} is not allocated"
                ))),
            }
        };
        let mut jsb = vec![0u8; bs];
        self.disk.read_block(phys(0)?, &mut jsb)?;
        let btype = be32(&jsb, 4);
        if be32(&jsb, 0) != MAGIC || (btype != SB_V1 && btype != SB_V2) {
            return bad("bad superblock".into());
        }
        if be32(&jsb, 12) as usize != bs {
            return bad(format!(
                "block size {} is not the filesystem's",
                be32(&jsb, 12)
            ));
        }
        let maxlen = be32(&jsb, 16) as u64;
        let first = be32(&jsb, 20) as u64;
        let mut seq = be32(&jsb, 24);
        let start = be32(&jsb, 28) as u64;
        let incompat = if btype == SB_V2 { be32(&jsb, 40) } else { 0 };
        let known = INCOMPAT_REVOKE
            | INCOMPAT_64BIT
            | INCOMPAT_ASYNC_COMMIT
            | INCOMPAT_CSUM_V2
            | INCOMPAT_CSUM_V3
            | INCOMPAT_FAST_COMMIT;
        if incompat & !known != 0 {
            return Err(Error::Unsupported(format!(
                "ext4: journal: incompatible features {:#x}",
                incompat & !known
            )));
        }
        let v3 = incompat & INCOMPAT_CSUM_V3 != 0;
        let v2 = incompat & INCOMPAT_CSUM_V2 != 0;
        let csum = v2 || v3;
        let bit64 = incompat & INCOMPAT_64BIT != 0;
        if csum {
            let mut z = jsb[..1024].to_vec();
            z[0xFC..0x100].fill(0);
            if jsb[0x50] != 4 || crc32c(!0, &z) != be32(&jsb, 0xFC) {
                return bad("superblock checksum mismatch".into());
            }
        }
        // The fast-commit area at the end of the log is not part of the ring (and not
        // replayed by this reader).
        let mut last = maxlen;
        if incompat & INCOMPAT_FAST_COMMIT != 0 {
            let fc = match be32(&jsb, 0x54) {
                0 => 256,
                n => n as u64,
            };
            last = last.saturating_sub(fc);
        }
        if maxlen > jlen || first == 0 || first >= last {
            return bad(format!(
                "geometry (first {first}, length {maxlen}, file {jlen} blocks)"
            ));
        }
        let mut map = BTreeMap::new();
        if start == 0 {
            return Ok(map); // clean
        }
        if start < first || start >= last {
            return bad(format!("start block {start} outside the log"));
        }
        let seed = crc32c(!0, &jsb[48..64]);
        let tag_bytes = if v3 {
            16
        } else {
            let sz = 12 + if v2 { 2 } else { 0 };
            if bit64 {
                sz
            } else {
                sz - 4
            }
        };
        let tail = if csum { 4 } else { 0 };
        let ring = last - first;
        let next = |b: u64| if b + 1 >= last { first } else { b + 1 };
        let block_csum_ok = |b: &[u8], at: usize| -> bool {
            let mut z = b.to_vec();
            z[at..at + 4].fill(0);
            crc32c(seed, &z) == be32(b, at)
        };

        let mut revoked: HashMap<u64, u32> = HashMap::new();
        let mut committed: Vec<(u32, Vec<Tag>)> = Vec::new();
        let mut tags: Vec<Tag> = Vec::new();
        let mut pending_revokes: Vec<u64> = Vec::new();
        let mut blk = start;
        let mut visited = 0u64;
        let mut buf = vec![0u8; bs];
        let mut data = vec![0u8; bs];
        'scan: while visited < ring {
            self.disk.read_block(phys(blk)?, &mut buf)?;
            visited += 1;
            if be32(&buf, 0) != MAGIC || be32(&buf, 8) != seq {
                break;
            }
            match be32(&buf, 4) {
                DESCRIPTOR => {
                    if csum && !block_csum_ok(&buf, bs - 4) {
                        break; // a torn or stale transaction: the end of the log
                    }
                    let mut off = 12;
                    loop {
                        if off + tag_bytes > bs - tail {
                            break;
                        }
                        let t = &buf[off..off + tag_bytes];
                        let mut target = be32(t, 0) as u64;
                        let (flags, tcsum) = if v3 {
                            (be32(t, 4), be32(t, 12))
                        } else {
                            (be16(t, 6) as u32, be16(t, 4) as u32)
                        };
                        if bit64 {
                            target |= (be32(t, 8) as u64) << 32;
                        }
                        off += tag_bytes;
                        if flags & FLAG_SAME_UUID == 0 {
                            off += 16;
                        }
                        blk = next(blk);
                        visited += 1;
                        if visited > ring {
                            break 'scan;
                        }
                        let loc = phys(blk)?;
                        let mut ok = true;
                        if csum {
                            self.disk.read_block(loc, &mut data)?;
                            let c = crc32c(crc32c(seed, &seq.to_be_bytes()), &data);
                            ok = if v3 { c == tcsum } else { c & 0xffff == tcsum };
                        }
                        if ok {
                            if target >= sb.blocks_count {
                                return bad(format!(
                                    "transaction {seq} logs block {target}, outside the filesystem"
                                ));
                            }
                            tags.push(Tag {
                                target,
                                loc,
                                escaped: flags & FLAG_ESCAPE != 0,
                            });
                        }
                        if flags & FLAG_LAST_TAG != 0 {
                            break;
                        }
                    }
                }
                COMMIT => {
                    if csum && !block_csum_ok(&buf, 16) {
                        break;
                    }
                    committed.push((seq, std::mem::take(&mut tags)));
                    for b in pending_revokes.drain(..) {
                        let e = revoked.entry(b).or_insert(seq);
                        *e = (*e).max(seq);
                    }
                    seq = seq.wrapping_add(1);
                }
                REVOKE => {
                    if csum && !block_csum_ok(&buf, bs - 4) {
                        break;
                    }
                    let used = be32(&buf, 12) as usize;
                    if used < 16 || used > bs - tail {
                        return bad(format!("revoke block of {used} bytes"));
                    }
                    let rs = if bit64 { 8 } else { 4 };
                    let mut off = 16;
                    while off + rs <= used {
                        let b = if bit64 {
                            (be32(&buf, off) as u64) << 32 | be32(&buf, off + 4) as u64
                        } else {
                            be32(&buf, off) as u64
                        };
                        pending_revokes.push(b);
                        off += rs;
                    }
                }
                _ => break,
            }
            blk = next(blk);
        }
        for (tseq, tags) in committed {
            for t in tags {
                if revoked.get(&t.target).is_some_and(|&r| r >= tseq) {
                    continue;
                }
                map.insert(
                    t.target,
                    JBlock {
                        loc: t.loc,
                        escaped: t.escaped,
                    },
                );
            }
        }
        Ok(map)
    }
}
