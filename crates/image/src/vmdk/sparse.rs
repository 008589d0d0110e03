//! Hosted sparse extents (VMDK4 "KDMV", monolithicSparse, twoGbMaxExtentSparse and
//! streamOptimized): the header, the footer of stream-optimized files, grain markers and
//! grain compression; and the two-level grain directory / grain table lookup that the COWD
//! and seSparse readers share.

use crate::error::{corrupt, Error, Result};
use crate::fileio;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::fs::File;

pub const MAGIC: u32 = 0x4b44_4d56; // "KDMV"
pub const FLAG_NL_DETECT: u32 = 1;
pub const FLAG_RGD: u32 = 1 << 1;
pub const FLAG_ZERO_GRAIN: u32 = 1 << 2;
pub const FLAG_COMPRESS: u32 = 1 << 16;
pub const FLAG_MARKER: u32 = 1 << 17;
pub const COMPRESSION_DEFLATE: u16 = 1;
pub const GD_AT_END: u64 = u64::MAX;
/// Grain table entry of a zeroed grain (zeroed_grain images).
pub const GTE_ZEROED: u64 = 1;
/// New grains must start below this sector (32-bit grain table entries).
pub const MAX_EXTENT_SECTORS: u64 = 1 << 32;
/// Header bytes after the magic.
pub const HEADER_LEN: usize = 75;
/// Size of a grain marker before the compressed data (lba u64, size u32).
pub const MARKER_LEN: usize = 12;

pub const MARKER_EOS: u32 = 0;
pub const MARKER_FOOTER: u32 = 3;

/// QEMU's VMDK4Header (everything after the 4-byte magic), little endian, packed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub capacity: u64,
    pub granularity: u64,
    pub desc_offset: u64,
    pub desc_size: u64,
    pub num_gtes_per_gt: u32,
    pub rgd_offset: u64,
    pub gd_offset: u64,
    pub grain_offset: u64,
    pub filler: u8,
    pub check_bytes: [u8; 4],
    pub compress_algorithm: u16,
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64le(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// From the bytes following the magic (at least HEADER_LEN).
    pub fn parse(b: &[u8]) -> Header {
        Header {
            version: u32le(b, 0),
            flags: u32le(b, 4),
            capacity: u64le(b, 8),
            granularity: u64le(b, 16),
            desc_offset: u64le(b, 24),
            desc_size: u64le(b, 32),
            num_gtes_per_gt: u32le(b, 40),
            rgd_offset: u64le(b, 44),
            gd_offset: u64le(b, 52),
            grain_offset: u64le(b, 60),
            filler: b[68],
            check_bytes: [b[69], b[70], b[71], b[72]],
            compress_algorithm: u16::from_le_bytes([b[73], b[74]]),
        }
    }

    /// Magic and header, as the first 79 bytes of the file.
    pub fn serialize(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + HEADER_LEN);
        v.extend_from_slice(&MAGIC.to_be_bytes());
        v.extend_from_slice(&self.version.to_le_bytes());
        v.extend_from_slice(&self.flags.to_le_bytes());
        v.extend_from_slice(&self.capacity.to_le_bytes());
        v.extend_from_slice(&self.granularity.to_le_bytes());
        v.extend_from_slice(&self.desc_offset.to_le_bytes());
        v.extend_from_slice(&self.desc_size.to_le_bytes());
        v.extend_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        v.extend_from_slice(&self.rgd_offset.to_le_bytes());
        v.extend_from_slice(&self.gd_offset.to_le_bytes());
        v.extend_from_slice(&self.grain_offset.to_le_bytes());
        v.push(self.filler);
        v.extend_from_slice(&self.check_bytes);
        v.extend_from_slice(&self.compress_algorithm.to_le_bytes());
        v
    }
}

/// The header of a stream-optimized file whose grain directory is at the end: the footer
/// (footer marker, magic + header, end-of-stream marker, one sector each) ending the file.
pub fn read_footer(f: &File, file_len: u64) -> Result<Header> {
    let end = file_len.div_ceil(512) * 512;
    let Some(at) = end.checked_sub(1536) else {
        return corrupt("Invalid footer");
    };
    let mut b = vec![0u8; 1536];
    fileio::read_full(f, &mut b, at)?;
    let (fm, rest) = b.split_at(512);
    let (hdr, eos) = rest.split_at(512);
    let ok = u32::from_be_bytes(hdr[0..4].try_into().expect("4 bytes")) == MAGIC
        && u32le(fm, 8) == 0
        && u32le(fm, 12) == MARKER_FOOTER
        && u64le(eos, 0) == 0
        && u32le(eos, 8) == 0
        && u32le(eos, 12) == MARKER_EOS;
    if !ok {
        return corrupt("Invalid footer");
    }
    Ok(Header::parse(&hdr[4..]))
}

/// How a sparse extent's tables are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// VMDK4 hosted sparse: 32-bit sector numbers in both levels.
    Vmdk4,
    /// VMDK3 / COWD (ESX 2 vmfsSparse): like VMDK4, 4096 entries per grain table.
    Cowd,
    /// ESXi seSparse: 64-bit entries with type nibbles; offsets relative to two areas.
    SeSparse { tables: u64, grains: u64 },
}

/// What a grain table entry says about one grain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    /// No grain table, or an empty entry: reads fall through to the parent (or zero).
    Unallocated,
    /// Zeroed grain (zeroed_grain images, seSparse zero/unmapped grains).
    Zeroed,
    /// Stored at this byte offset of the extent file.
    At(u64),
}

/// Where an entry lives, for updating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub l1: usize,
    pub l2: usize,
    /// Grain table start, in sectors (0: no table).
    pub table: u64,
}

/// The immutable description of one sparse extent.
#[derive(Debug, Clone)]
pub struct Sparse {
    pub flavor: Flavor,
    pub cluster_sectors: u64,
    /// Entries per grain table.
    pub l2_size: u64,
    pub l1_entry_sectors: u64,
    pub l1: Vec<u64>,
    pub l1_backup: Option<Vec<u64>>,
    pub compressed: bool,
    pub has_marker: bool,
    pub zeroed_grain: bool,
    pub version: u32,
    /// Grains written in place must start here or later (header and tables come before).
    pub data_start: u64,
}

impl Sparse {
    pub fn cluster_bytes(&self) -> u64 {
        self.cluster_sectors * 512
    }
    pub fn entry_size(&self) -> u64 {
        match self.flavor {
            Flavor::SeSparse { .. } => 8,
            _ => 4,
        }
    }
    pub fn table_bytes(&self) -> u64 {
        self.l2_size * self.entry_size()
    }

    /// The grain table holding extent-relative byte `rel`, and the entry's index in it.
    pub fn slot(&self, rel: u64) -> Result<Slot> {
        let sector = rel >> 9;
        let l1 = sector / self.l1_entry_sectors;
        let Some(&e) = self.l1.get(l1 as usize) else {
            return corrupt(format!(
                "Grain directory index {l1} out of range ({} entries)",
                self.l1.len()
            ));
        };
        let l2 = ((sector / self.cluster_sectors) % self.l2_size) as usize;
        let table = match self.flavor {
            Flavor::SeSparse { tables, .. } => {
                if e == 0 {
                    0
                } else if e & 0xffff_ffff_0000_0000 != 0x1000_0000_0000_0000 {
                    return corrupt(format!("Invalid seSparse grain directory entry {e:#x}"));
                } else {
                    let t = tables
                        .checked_add((e & 0xffff_ffff) * (self.table_bytes() / 512))
                        .filter(|&t| t <= 0xffff_ffff);
                    match t {
                        Some(t) => t,
                        None => {
                            return corrupt(format!(
                                "seSparse grain table {e:#x} lies out of range"
                            ))
                        }
                    }
                }
            }
            _ => e,
        };
        Ok(Slot {
            l1: l1 as usize,
            l2,
            table,
        })
    }

    /// Decodes one raw grain table entry.
    pub fn decode(&self, e: u64) -> Result<Grain> {
        match self.flavor {
            Flavor::SeSparse { grains, .. } => match e >> 60 {
                0 if e == 0 => Ok(Grain::Unallocated),
                1 | 2 => Ok(Grain::Zeroed),
                3 => {
                    let idx =
                        ((e & 0x0fff_0000_0000_0000) >> 48) | ((e & 0x0000_ffff_ffff_ffff) << 12);
                    idx.checked_mul(self.cluster_sectors)
                        .and_then(|s| s.checked_add(grains))
                        .and_then(|s| s.checked_mul(512))
                        .map(Grain::At)
                        .ok_or_else(|| {
                            Error::Corrupt(format!("seSparse grain entry {e:#x} out of range"))
                        })
                }
                _ => corrupt(format!("Invalid seSparse grain table entry {e:#x}")),
            },
            _ => Ok(match e {
                0 => Grain::Unallocated,
                GTE_ZEROED if self.zeroed_grain => Grain::Zeroed,
                s => Grain::At(s * 512),
            }),
        }
    }

    /// Reads one grain table (entries widened to u64).
    pub fn read_table(&self, f: &File, table: u64, file_len: u64) -> Result<Vec<u64>> {
        let bytes = self.table_bytes();
        let off = table * 512;
        if off
            .checked_add(bytes)
            .is_none_or(|end| end > file_len.div_ceil(512) * 512)
        {
            return corrupt(format!(
                "Grain table at offset {off:#x} lies past the end of the file"
            ));
        }
        let mut raw = vec![0u8; bytes as usize];
        fileio::read_full(f, &mut raw, off)?;
        Ok(match self.entry_size() {
            8 => raw
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            _ => raw
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64)
                .collect(),
        })
    }
}

/// Reads `n` little-endian entries of `size` bytes at `off` (the grain directory).
pub fn read_dir(f: &File, off: u64, n: u64, size: u64) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; (n * size) as usize];
    fileio::read_full(f, &mut raw, off)?;
    Ok(if size == 8 {
        raw.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        raw.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as u64)
            .collect()
    })
}

/// One grain as a zlib stream (what QEMU's compress() makes and uncompress() reads).
/// Incompressible grains become "stored" deflate blocks: a valid stream every reader
/// accepts, produced at memcpy speed instead of spending a deflate pass on random data.
pub fn compress_grain(input: &[u8]) -> Vec<u8> {
    let level = if crate::qcow2::compress::looks_random(input) {
        Compression::none()
    } else {
        Compression::default()
    };
    let mut c = Compress::new(level, true);
    // Stored blocks add 5 bytes per 64 KiB, the zlib wrapper 6; deflate never needs more
    // than that plus a little on incompressible input.
    let mut out = Vec::with_capacity(input.len() + input.len() / 8192 * 5 + 64);
    loop {
        let before_in = c.total_in() as usize;
        match c.compress_vec(&input[before_in..], &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => return out,
            Ok(_) => out.reserve(out.capacity().max(1024)),
            Err(_) => {
                // Cannot happen with an in-memory buffer; fall back to a stored stream.
                return stored(input);
            }
        }
    }
}

/// A zlib stream of stored blocks (the fallback of `compress_grain`).
fn stored(input: &[u8]) -> Vec<u8> {
    let mut out = vec![0x78, 0x01];
    let mut chunks = input.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(c) = chunks.next() {
        out.push(if chunks.peek().is_none() { 1 } else { 0 });
        let n = c.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in input.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    out.extend_from_slice(&((b << 16) | a).to_be_bytes());
    out
}

/// Inflates one grain into `out` (a whole grain); returns how many bytes the stream held.
/// Fails, as zlib's uncompress() does, when the stream is cut short or longer than `out`.
pub fn decompress_grain(input: &[u8], out: &mut [u8]) -> Result<usize> {
    let mut d = Decompress::new(true);
    match d.decompress(input, out, FlushDecompress::Finish) {
        Ok(Status::StreamEnd) => Ok(d.total_out() as usize),
        Ok(_) => corrupt("Compressed grain is truncated or larger than a grain"),
        Err(e) => corrupt(format!("Could not decompress grain: {e}")),
    }
}

/// Reads and inflates the grain at `host`: a marker (lba, size) then the stream when the
/// extent has markers, the bare stream otherwise.
pub fn read_compressed(
    f: &File,
    host: u64,
    cluster_bytes: u64,
    has_marker: bool,
    out: &mut [u8],
) -> Result<usize> {
    let (data_off, len) = if has_marker {
        let mut m = [0u8; MARKER_LEN];
        fileio::read_full(f, &mut m, host)?;
        let size = u32le(&m, 8) as u64;
        // QEMU reads two grains from the marker on; the stream must fit in them.
        if size == 0 || size > 2 * cluster_bytes {
            return corrupt(format!(
                "Compressed grain at offset {host:#x} has invalid size {size}"
            ));
        }
        (host + MARKER_LEN as u64, size)
    } else {
        (host, cluster_bytes)
    };
    let mut raw = vec![0u8; len as usize];
    fileio::read_full(f, &mut raw, data_off)?;
    decompress_grain(&raw, out)
}

/// What the start of a VMDK4 file turned out to be.
pub enum Opened4 {
    /// Capacity 0 with a descriptor offset: a descriptor file in disguise (sector given).
    Descriptor(u64),
    Extent {
        sectors: u64,
        sparse: Sparse,
    },
}

/// QEMU's vmdk_open_vmdk4: header (or footer), its checks and messages, then the tables.
pub fn open(
    f: &File,
    file_len: u64,
    head: &[u8],
    writable: bool,
    budget: &mut u64,
) -> Result<Opened4> {
    let mut b = [0u8; 4 + HEADER_LEN];
    let n = head.len().min(b.len());
    b[..n].copy_from_slice(&head[..n]);
    let mut h = Header::parse(&b[4..]);
    if h.capacity == 0 && h.desc_offset != 0 {
        return Ok(Opened4::Descriptor(h.desc_offset));
    }
    if h.gd_offset == GD_AT_END {
        h = read_footer(f, file_len)?;
    }
    let compressed = h.compress_algorithm == COMPRESSION_DEFLATE;
    if h.version > 3 {
        return Err(Error::Unsupported(format!(
            "Unsupported VMDK version {}",
            h.version
        )));
    }
    if h.version == 3 && writable && !compressed {
        // Version 3 adds changed block tracking we would not maintain.
        return Err(Error::Invalid("VMDK version 3 must be read only".into()));
    }
    if h.num_gtes_per_gt > 512 {
        return corrupt("L2 table size too big");
    }
    let Some(l1_entry_sectors) = (h.num_gtes_per_gt as u64).checked_mul(h.granularity) else {
        return corrupt("Invalid granularity, image may be corrupt");
    };
    if l1_entry_sectors == 0 {
        return corrupt("L1 entry size is invalid");
    }
    let l1_size = h.capacity.div_ceil(l1_entry_sectors);
    let backup = if h.flags & FLAG_RGD != 0 {
        h.rgd_offset
            .checked_mul(512)
            .ok_or_else(|| Error::Corrupt("Invalid redundant grain directory offset".into()))?
    } else {
        0
    };
    if file_len.div_ceil(512) < h.grain_offset {
        return corrupt(format!(
            "File truncated, expecting at least {} bytes",
            h.grain_offset.saturating_mul(512).min(i64::MAX as u64)
        ));
    }
    let gd = h
        .gd_offset
        .checked_mul(512)
        .ok_or_else(|| Error::Corrupt("Invalid grain directory offset".into()))?;
    let desc_area = [(
        h.desc_offset.saturating_mul(512),
        h.desc_offset
            .saturating_add(h.desc_size)
            .saturating_mul(512),
        "embedded descriptor",
    )];
    let reserved: &[(u64, u64, &'static str)] = if h.desc_offset != 0 { &desc_area } else { &[] };
    let mut sp = super::tables::build(
        f,
        file_len,
        super::tables::Layout {
            flavor: Flavor::Vmdk4,
            l1_offset: gd,
            l1_backup_offset: backup,
            l1_size,
            l2_size: h.num_gtes_per_gt as u64,
            cluster_sectors: h.granularity,
            data_start: (h.grain_offset * 512).max(512),
            reserved,
        },
        budget,
    )?;
    sp.compressed = compressed;
    sp.has_marker = h.flags & FLAG_MARKER != 0;
    sp.zeroed_grain = h.flags & FLAG_ZERO_GRAIN != 0;
    sp.version = h.version;
    Ok(Opened4::Extent {
        sectors: h.capacity,
        sparse: sp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize) -> Vec<u8> {
        let mut s = 0x1234_5678_9abc_def0u64;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    #[test]
    fn grains_round_trip_through_zlib() {
        let text: Vec<u8> = b"grain ".iter().cycle().take(65536).copied().collect();
        for input in [text, noise(65536), noise(1000), vec![]] {
            let c = compress_grain(&input);
            let mut out = vec![0u8; 65536];
            let n = decompress_grain(&c, &mut out).unwrap();
            assert_eq!(&out[..n], &input[..]);
            let s = stored(&input);
            let n = decompress_grain(&s, &mut out).unwrap();
            assert_eq!(&out[..n], &input[..]);
        }
        // Random grains are stored: barely larger than the input.
        assert!(compress_grain(&noise(65536)).len() < 65536 + 32);
    }

    #[test]
    fn header_round_trip() {
        let h = Header {
            version: 1,
            flags: 3,
            capacity: 2048,
            granularity: 128,
            desc_offset: 1,
            desc_size: 20,
            num_gtes_per_gt: 512,
            rgd_offset: 21,
            gd_offset: 26,
            grain_offset: 128,
            filler: 0,
            check_bytes: [0xa, 0x20, 0xd, 0xa],
            compress_algorithm: 0,
        };
        let b = h.serialize();
        assert_eq!(b.len(), 79);
        assert_eq!(Header::parse(&b[4..]), h);
    }
}
