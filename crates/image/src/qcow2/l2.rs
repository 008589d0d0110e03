//! L1/L2 entries: the map from guest clusters to host clusters, standard and extended (subclusters).

use crate::error::{corrupt, Result};

pub const OFLAG_COPIED: u64 = 1 << 63;
pub const OFLAG_COMPRESSED: u64 = 1 << 62;
pub const OFLAG_ZERO: u64 = 1 << 0;
/// Bits 9-55: host offset of an L2 table (in L1) or of a standard cluster (in L2).
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;

/// Decoded standard part of an L2 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cluster {
    Unallocated,
    /// Zero flag without a host cluster.
    ZeroPlain,
    /// Zero flag with a preallocated host cluster.
    ZeroAlloc(u64),
    Normal(u64),
    /// Compressed: host byte offset and the sector-rounded span length in bytes.
    Compressed {
        offset: u64,
        len: u64,
    },
}

/// Field geometry of compressed cluster descriptors for a cluster size.
#[derive(Debug, Clone, Copy)]
pub struct CompressedLayout {
    pub offset_bits: u32,
}

impl CompressedLayout {
    pub fn new(cluster_bits: u32) -> Self {
        CompressedLayout {
            offset_bits: 62 - (cluster_bits - 8),
        }
    }
    pub fn decode(self, e: u64) -> (u64, u64) {
        let off = e & ((1u64 << self.offset_bits) - 1);
        let sectors = ((e & !OFLAG_COPIED & !OFLAG_COMPRESSED) >> self.offset_bits) + 1;
        // Bytes from `off` to the end of the last sector the data touches.
        let len = sectors * 512 - (off & 511);
        (off, len)
    }
    pub fn encode(self, off: u64, len: u64) -> u64 {
        let nb = ((off + len - 1) >> 9) - (off >> 9);
        OFLAG_COMPRESSED | (nb << self.offset_bits) | off
    }
}

/// Decodes the standard 64-bit part of an L2 entry. `extended`: bit 0 is reserved then.
pub fn decode(
    e: u64,
    layout: CompressedLayout,
    cluster_size: u64,
    extended: bool,
) -> Result<Cluster> {
    if e & OFLAG_COMPRESSED != 0 {
        let (offset, len) = layout.decode(e);
        return Ok(Cluster::Compressed { offset, len });
    }
    let host = e & OFFSET_MASK;
    if !host.is_multiple_of(cluster_size) {
        return corrupt(format!(
            "Cluster allocation offset {host:#x} unaligned (L2 entry {e:#x})"
        ));
    }
    if !extended && e & OFLAG_ZERO != 0 {
        return Ok(if host == 0 {
            Cluster::ZeroPlain
        } else {
            Cluster::ZeroAlloc(host)
        });
    }
    Ok(if host == 0 {
        Cluster::Unallocated
    } else {
        Cluster::Normal(host)
    })
}

/// What one subcluster (or a whole cluster without extended L2) of the active layer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    /// Falls through to the backing file; the host cluster when one is allocated anyway.
    Unallocated(Option<u64>),
    /// Reads as zero; the host cluster when one is preallocated.
    Zero(Option<u64>),
    Data(u64),
    Compressed {
        offset: u64,
        len: u64,
    },
}

/// Status of subcluster `i` given the decoded cluster and the extended bitmap.
pub fn subcluster(c: Cluster, bitmap: u64, i: u32, sc_size: u64) -> Result<Sub> {
    let alloc = bitmap >> i & 1 != 0;
    let zero = bitmap >> (32 + i) & 1 != 0;
    match c {
        Cluster::Compressed { offset, len } => Ok(Sub::Compressed { offset, len }),
        Cluster::Unallocated | Cluster::ZeroPlain => {
            if alloc {
                return corrupt("Unallocated cluster has non-zero subcluster allocation map");
            }
            Ok(if zero {
                Sub::Zero(None)
            } else {
                Sub::Unallocated(None)
            })
        }
        Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
            if alloc && zero {
                return corrupt(
                    "Invalid subcluster allocation bitmap: subcluster both allocated and zero",
                );
            }
            Ok(if alloc {
                Sub::Data(h + i as u64 * sc_size)
            } else if zero {
                Sub::Zero(Some(h + i as u64 * sc_size))
            } else {
                Sub::Unallocated(Some(h + i as u64 * sc_size))
            })
        }
    }
}
