//! The XFS superblock (sector 0 of AG 0): geometry, feature flags, counters, identity.
//! Every geometry field is checked against the others and against the device before any
//! other structure is located with it.

use super::{be16, be32, be64, verify_crc};
use crate::dev::BlockDev;
use crate::error::{corrupt, Error, Result};

const MAGIC: u32 = 0x5846_5342; // "XFSB"

// sb_versionnum bits (v4 feature flags live there).
const VERSION_NUMBITS: u16 = 0x000f;
const VERSION_NLINKBIT: u16 = 0x0020;
const VERSION_DIRV2BIT: u16 = 0x2000;
const VERSION_MOREBITSBIT: u16 = 0x8000;

// sb_features2 (v4).
const F2_CRC: u32 = 0x0100;
const F2_FTYPE: u32 = 0x0200;
/// LAZYSBCOUNT, ATTR2, PARENT (never used), PROJID32, FTYPE: the bits a v4 filesystem may set.
const F2_OKBITS: u32 = 0x0002 | 0x0008 | 0x0010 | 0x0080 | F2_FTYPE;

// sb_features_incompat (v5).
const INCOMPAT_FTYPE: u32 = 0x01;
const INCOMPAT_SPINODES: u32 = 0x02;
const INCOMPAT_META_UUID: u32 = 0x04;
const INCOMPAT_BIGTIME: u32 = 0x08;
const INCOMPAT_NEEDSREPAIR: u32 = 0x10;
const INCOMPAT_NREXT64: u32 = 0x20;
const INCOMPAT_EXCHRANGE: u32 = 0x40;
const INCOMPAT_PARENT: u32 = 0x80;
/// What this reader understands. EXCHRANGE only concerns the log; PARENT adds xattrs we skip;
/// sparse inode chunks only change how inodes are allocated, not how they are found.
const INCOMPAT_KNOWN: u32 = INCOMPAT_FTYPE
    | INCOMPAT_SPINODES
    | INCOMPAT_META_UUID
    | INCOMPAT_BIGTIME
    | INCOMPAT_NREXT64
    | INCOMPAT_EXCHRANGE
    | INCOMPAT_PARENT;

fn incompat_name(bit: u32) -> String {
    match bit {
        INCOMPAT_NEEDSREPAIR => "needsrepair".into(),
        0x100 => "metadir".into(),
        0x200 => "zoned".into(),
        _ => format!("{bit:#x}"),
    }
}

#[derive(Debug, Clone)]
pub(super) struct Sb {
    /// 4 or 5.
    pub version: u8,
    pub blocksize: u32,
    pub blocklog: u8,
    pub dblocks: u64,
    pub uuid: [u8; 16],
    pub logstart: u64,
    pub logblocks: u32,
    pub rootino: u64,
    pub agblocks: u32,
    pub agcount: u32,
    pub inodesize: u16,
    pub inopblog: u8,
    pub agblklog: u8,
    pub imax_pct: u8,
    pub fname: [u8; 12],
    pub icount: u64,
    pub ifree: u64,
    pub fdblocks: u64,
    pub dirblklog: u8,
    pub ftype: bool,
    /// v4 without the NLINK bit: version 1 inodes (16-bit link counts) may occur.
    pub v1_inodes_ok: bool,
}

impl Sb {
    pub fn read(dev: &dyn BlockDev) -> Result<Sb> {
        let mut b = vec![0u8; 512];
        if dev.size() < 512 {
            return corrupt("xfs: device too small for a superblock");
        }
        dev.read_at(&mut b, 0)?;
        if be32(&b, 0)? != MAGIC {
            return corrupt("xfs: bad superblock magic (not XFSB)");
        }
        let versionnum = be16(&b, 100)?;
        let version = (versionnum & VERSION_NUMBITS) as u8;
        if version != 4 && version != 5 {
            return Err(Error::Unsupported(format!(
                "xfs: superblock version {version} is not supported (only 4 and 5)"
            )));
        }
        let blocksize = be32(&b, 4)?;
        let blocklog = b[120];
        if !(9..=16).contains(&blocklog) || blocksize != 1 << blocklog {
            return corrupt(format!("xfs: bad block size {blocksize} (log {blocklog})"));
        }
        let sectsize = be16(&b, 102)?;
        let sectlog = b[121];
        if !(9..=15).contains(&sectlog) || u32::from(sectsize) != 1 << sectlog {
            return corrupt(format!("xfs: bad sector size {sectsize}"));
        }
        let inodesize = be16(&b, 104)?;
        let inodelog = b[122];
        if !(8..=11).contains(&inodelog)
            || u32::from(inodesize) != 1 << inodelog
            || inodelog > blocklog
        {
            return corrupt(format!("xfs: bad inode size {inodesize}"));
        }
        let inopblock = be16(&b, 106)?;
        let inopblog = b[123];
        if inopblog != blocklog - inodelog || u32::from(inopblock) != 1 << inopblog {
            return corrupt(format!("xfs: bad inodes per block {inopblock}"));
        }
        let dblocks = be64(&b, 8)?;
        let agblocks = be32(&b, 84)?;
        let agcount = be32(&b, 88)?;
        let agblklog = b[124];
        // XFS_MIN_AG_BLOCKS is 64; agblklog is agblocks rounded up to a power of two.
        if agblocks < 64 || agblklog > 31 || u64::from(agblocks) > 1u64 << agblklog || {
            agblklog == 0 || u64::from(agblocks) <= 1u64 << (agblklog - 1)
        } {
            return corrupt(format!(
                "xfs: bad AG size {agblocks} blocks (log {agblklog})"
            ));
        }
        if u32::from(agblklog) + u32::from(inopblog) > 32 {
            return corrupt("xfs: AG inode numbers do not fit in 32 bits");
        }
        let full = u64::from(agcount) * u64::from(agblocks);
        if agcount == 0 || dblocks > full || dblocks <= full - u64::from(agblocks) {
            return corrupt(format!(
                "xfs: {dblocks} blocks do not fit {agcount} AGs of {agblocks} blocks"
            ));
        }
        let bytes = dblocks.checked_mul(u64::from(blocksize));
        if bytes.is_none_or(|n| n > dev.size()) {
            return corrupt(format!(
                "xfs: filesystem of {dblocks} blocks of {blocksize} bytes is larger than the device ({} bytes)",
                dev.size()
            ));
        }
        if b[126] != 0 {
            return corrupt("xfs: mkfs did not finish (sb_inprogress is set)");
        }
        // The whole sector is covered by the v5 checksum.
        if usize::from(sectsize) > b.len() {
            b.resize(usize::from(sectsize), 0);
            dev.read_at(&mut b, 0)?;
        }
        let mut ftype = false;
        if version == 5 {
            if !verify_crc(&b[..usize::from(sectsize)], 224) {
                return corrupt("xfs: superblock checksum mismatch");
            }
            let incompat = be32(&b, 216)?;
            let unknown = incompat & !INCOMPAT_KNOWN;
            if unknown != 0 {
                let names: Vec<String> = (0..32)
                    .map(|i| 1u32 << i)
                    .filter(|bit| unknown & bit != 0)
                    .map(incompat_name)
                    .collect();
                return Err(Error::Unsupported(format!(
                    "xfs: incompatible features not supported: {}",
                    names.join(", ")
                )));
            }
            ftype = incompat & INCOMPAT_FTYPE != 0;
        } else {
            if versionnum & VERSION_DIRV2BIT == 0 {
                return Err(Error::Unsupported(
                    "xfs: version 1 directories (pre-1994 v4 filesystems) are not supported".into(),
                ));
            }
            if versionnum & VERSION_MOREBITSBIT != 0 {
                // Old kernels wrote features2 at the wrong offset; the kernel merges both.
                let f2 = be32(&b, 200)? | be32(&b, 204)?;
                if f2 & F2_CRC != 0 {
                    return corrupt("xfs: v4 superblock with the CRC feature");
                }
                if f2 & !F2_OKBITS != 0 {
                    return Err(Error::Unsupported(format!(
                        "xfs: v4 features2 bits not supported: {:#x}",
                        f2 & !F2_OKBITS
                    )));
                }
                ftype = f2 & F2_FTYPE != 0;
            }
        }
        let dirblklog = b[192];
        if u32::from(blocklog) + u32::from(dirblklog) > 16 {
            return corrupt(format!(
                "xfs: directory block size 2^{} too large",
                u32::from(blocklog) + u32::from(dirblklog)
            ));
        }
        let logstart = be64(&b, 48)?;
        let logblocks = be32(&b, 96)?;
        if logstart != 0 && u64::from(logblocks) > dblocks {
            return corrupt("xfs: internal log larger than the filesystem");
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[32..48]);
        let mut fname = [0u8; 12];
        fname.copy_from_slice(&b[108..120]);
        Ok(Sb {
            version,
            blocksize,
            blocklog,
            dblocks,
            uuid,
            logstart,
            logblocks,
            rootino: be64(&b, 56)?,
            agblocks,
            agcount,
            inodesize,
            inopblog,
            agblklog,
            imax_pct: b[127],
            fname,
            icount: be64(&b, 128)?,
            ifree: be64(&b, 136)?,
            fdblocks: be64(&b, 144)?,
            dirblklog,
            ftype,
            v1_inodes_ok: version == 4 && versionnum & VERSION_NLINKBIT == 0,
        })
    }

    pub fn crc(&self) -> bool {
        self.version == 5
    }

    /// Blocks in AG `agno` (the last one may be short).
    pub fn ag_blocks(&self, agno: u64) -> u64 {
        let start = agno * u64::from(self.agblocks);
        (self.dblocks - start).min(u64::from(self.agblocks))
    }

    /// A filesystem block number (agno in the high bits above agblklog, agbno below) as a
    /// linear block number on the device, checked to lie with `len` blocks inside its AG.
    pub fn fsb_to_block(&self, fsb: u64, len: u64) -> Result<u64> {
        let agno = fsb >> self.agblklog;
        let agbno = fsb & ((1u64 << self.agblklog) - 1);
        if agno >= u64::from(self.agcount) || agbno + len > self.ag_blocks(agno) {
            return corrupt(format!(
                "xfs: block {fsb} (AG {agno}, block {agbno}, {len} blocks) is outside its AG"
            ));
        }
        Ok(agno * u64::from(self.agblocks) + agbno)
    }

    /// Byte offset on the device of inode `ino`.
    pub fn inode_offset(&self, ino: u64) -> Result<u64> {
        let shift = u32::from(self.agblklog) + u32::from(self.inopblog);
        let agno = ino >> shift;
        let agino = ino & ((1u64 << shift) - 1);
        let agbno = agino >> self.inopblog;
        let idx = agino & ((1u64 << self.inopblog) - 1);
        if agno >= u64::from(self.agcount) || agbno >= self.ag_blocks(agno) || agbno == 0 {
            return corrupt(format!("xfs: inode number {ino} is outside the filesystem"));
        }
        let block = agno * u64::from(self.agblocks) + agbno;
        Ok(block * u64::from(self.blocksize) + idx * u64::from(self.inodesize))
    }

    pub fn dirblksize(&self) -> usize {
        (self.blocksize as usize) << self.dirblklog
    }
}
