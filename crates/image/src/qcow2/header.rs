//! The qcow2 header and its extensions (QEMU docs/interop/qcow2.txt), parsed with every field
//! that sizes an allocation or a table checked against hard limits first.

use crate::error::{corrupt, Error, Result};

pub const MAGIC: u32 = 0x5146_49fb;
pub const V2_HEADER_LEN: u32 = 72;
pub const V3_HEADER_LEN: u32 = 104;
/// QEMU writes 112: the compression type byte plus padding.
pub const V3_HEADER_LEN_WRITTEN: u32 = 112;

pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// QEMU's limits: larger tables are refused rather than allocated.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
pub const MAX_SNAPSHOTS: u32 = 65536;
pub const MAX_BACKING_NAME: u32 = 1023;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
pub const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;
pub const AUTOCLEAR_BITMAPS: u64 = 1 << 0;
pub const AUTOCLEAR_DATA_FILE_RAW: u64 = 1 << 1;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;
pub const EXT_BITMAPS: u32 = 0x2385_2875;
pub const EXT_CRYPTO: u32 = 0x0537_be77;
pub const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Byte offsets of the fields we rewrite in place.
pub const OFF_SIZE: u64 = 24;
pub const OFF_L1: u64 = 36; // l1_size, then l1_table_offset
pub const OFF_REFTABLE: u64 = 48; // offset, then clusters
pub const OFF_SNAPSHOTS: u64 = 60; // nb_snapshots, then offset
pub const OFF_INCOMPAT: u64 = 72;
pub const OFF_AUTOCLEAR: u64 = 88;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Zlib,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zlib => "zlib",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Extension {
    pub kind: u32,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression: Compression,
    /// All extensions in file order, unknown ones included, so they can be written back untouched.
    pub extensions: Vec<Extension>,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], o: usize) -> u32 {
    u32::from_be_bytes(b[o..o + 4].try_into().unwrap())
}
fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().unwrap())
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    pub fn extended_l2(&self) -> bool {
        self.incompatible_features & INCOMPAT_EXTL2 != 0
    }

    /// Parses the header from the start of the file. `first` holds up to the first 2 MiB of the
    /// file (fewer bytes when the file is shorter); `file_len` is the file's length.
    pub fn parse(first: &[u8], file_len: u64) -> Result<Header> {
        if first.len() < V2_HEADER_LEN as usize {
            return corrupt("Image is not in qcow2 format");
        }
        if be32(first, 0) != MAGIC {
            return corrupt("Image is not in qcow2 format");
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!(
                "Unsupported qcow2 version {version}"
            )));
        }
        let cluster_bits = be32(first, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return corrupt(format!("Unsupported cluster size: 2^{cluster_bits}"));
        }
        let cs = 1u64 << cluster_bits;
        let mut h = Header {
            version,
            backing_file_offset: be64(first, 8),
            backing_file_size: be32(first, 16),
            cluster_bits,
            size: be64(first, 24),
            crypt_method: be32(first, 32),
            l1_size: be32(first, 36),
            l1_table_offset: be64(first, 40),
            refcount_table_offset: be64(first, 48),
            refcount_table_clusters: be32(first, 56),
            nb_snapshots: be32(first, 60),
            snapshots_offset: be64(first, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN,
            compression: Compression::Zlib,
            extensions: Vec::new(),
            backing_file: None,
            backing_format: None,
        };
        if version == 3 {
            if first.len() < V3_HEADER_LEN as usize {
                return corrupt("qcow2 header exceeds cluster size");
            }
            h.incompatible_features = be64(first, 72);
            h.compatible_features = be64(first, 80);
            h.autoclear_features = be64(first, 88);
            h.refcount_order = be32(first, 96);
            h.header_length = be32(first, 100);
            if h.header_length < V3_HEADER_LEN {
                return corrupt("qcow2 header too short");
            }
            if h.header_length as u64 > cs || h.header_length as usize > first.len() {
                return corrupt("qcow2 header exceeds cluster size");
            }
            if h.header_length > V3_HEADER_LEN {
                h.compression = match first[104] {
                    0 => Compression::Zlib,
                    1 => Compression::Zstd,
                    t => return Err(Error::Unsupported(format!("Unknown compression type {t}"))),
                };
            }
            let has_ct = h.incompatible_features & INCOMPAT_COMPRESSION != 0;
            if h.compression != Compression::Zlib && !has_ct {
                return corrupt(
                    "compression_type field is non-zero but compression type bit is not set",
                );
            }
            if h.compression == Compression::Zlib && has_ct {
                return corrupt("Compression type bit is set but compression_type is zlib");
            }
        }
        if h.refcount_order > 6 {
            return corrupt("Reference count entry width too large; may not exceed 64 bits");
        }
        if h.crypt_method != 0 {
            return Err(Error::Unsupported(
                "Encrypted qcow2 images are not supported".into(),
            ));
        }
        let unknown = h.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(Error::Unsupported(format!(
                "Unsupported qcow2 feature(s): {unknown:#x}"
            )));
        }
        if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::Unsupported(
                "qcow2 images with an external data file are not supported yet".into(),
            ));
        }
        if h.extended_l2() && cluster_bits < 14 {
            return corrupt("Extended L2 entries need a cluster size of at least 16 KiB");
        }
        // Size limits: the L1 table must be able to map the virtual size, and stay bounded.
        if h.l1_size as u64 * 8 > MAX_L1_BYTES {
            return corrupt("Active L1 table too large");
        }
        let l2_bits = cluster_bits - 3 - h.extended_l2() as u32;
        let needed = l1_entries_for(h.size, cluster_bits, l2_bits)
            .ok_or_else(|| Error::Corrupt("Image is too big".into()))?;
        if needed > h.l1_size as u64 {
            return corrupt("L1 table is too small");
        }
        if h.l1_size > 0 {
            check_table(
                h.l1_table_offset,
                h.l1_size as u64 * 8,
                cs,
                file_len,
                "Active L1 table",
            )?;
        }
        if h.refcount_table_clusters as u64 * cs > MAX_REFTABLE_BYTES {
            return corrupt("Reference count table too large");
        }
        if h.refcount_table_clusters == 0 {
            return corrupt("Image does not contain a reference count table");
        }
        check_table(
            h.refcount_table_offset,
            h.refcount_table_clusters as u64 * cs,
            cs,
            file_len,
            "Reference count table",
        )?;
        if h.nb_snapshots > MAX_SNAPSHOTS {
            return corrupt("Too many snapshots");
        }
        if h.nb_snapshots > 0 {
            // Each entry is at least 40 bytes: bound the table before reading it.
            check_table(
                h.snapshots_offset,
                h.nb_snapshots as u64 * 40,
                cs,
                file_len,
                "Snapshot table",
            )?;
        }
        h.parse_extensions(first, cs)?;
        if h.backing_file_offset != 0 {
            if h.backing_file_size > MAX_BACKING_NAME
                || h.backing_file_offset
                    .checked_add(h.backing_file_size as u64)
                    .is_none_or(|e| e > cs)
            {
                return corrupt("Backing file name too long");
            }
            let s = h.backing_file_offset as usize;
            let e = s + h.backing_file_size as usize;
            if e > first.len() {
                return corrupt("Backing file name is past the end of the file");
            }
            h.backing_file = Some(String::from_utf8_lossy(&first[s..e]).into_owned());
        }
        Ok(h)
    }

    fn parse_extensions(&mut self, first: &[u8], cs: u64) -> Result<()> {
        let mut off = self.header_length as usize;
        // Extensions live in the first cluster, before the backing file name if there is one.
        let end = if self.backing_file_offset != 0 {
            (self.backing_file_offset as usize).min(cs as usize)
        } else {
            cs as usize
        }
        .min(first.len());
        loop {
            if off + 8 > end {
                // QEMU tolerates a missing end marker when the space runs out.
                break;
            }
            let kind = be32(first, off);
            let len = be32(first, off + 4) as usize;
            off += 8;
            if kind == EXT_END {
                break;
            }
            if len > end - off {
                return corrupt(
                    "Invalid qcow2 header extension: length is past the end of the header cluster",
                );
            }
            let data = first[off..off + len].to_vec();
            off += len.div_ceil(8) * 8;
            match kind {
                EXT_BACKING_FORMAT => {
                    self.backing_format = Some(
                        String::from_utf8_lossy(&data)
                            .trim_end_matches('\0')
                            .to_string(),
                    )
                }
                EXT_CRYPTO => {
                    return Err(Error::Unsupported(
                        "Encrypted qcow2 images are not supported".into(),
                    ))
                }
                _ => {}
            }
            self.extensions.push(Extension { kind, data });
        }
        Ok(())
    }

    pub fn bitmaps_ext(&self) -> Option<&[u8]> {
        self.extensions
            .iter()
            .find(|e| e.kind == EXT_BITMAPS)
            .map(|e| e.data.as_slice())
    }

    /// Replaces (or with `None` removes) the extension of `kind`.
    pub fn set_extension(&mut self, kind: u32, data: Option<Vec<u8>>) {
        let at = self.extensions.iter().position(|e| e.kind == kind);
        match (at, data) {
            (Some(i), Some(d)) => self.extensions[i].data = d,
            (Some(i), None) => {
                self.extensions.remove(i);
            }
            (None, Some(d)) => self.extensions.push(Extension { kind, data: d }),
            (None, None) => {}
        }
    }

    /// Serializes the header, its extensions and the backing file name into one cluster.
    /// Fails when they do not fit.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let cs = self.cluster_size() as usize;
        let mut b = Vec::with_capacity(cs);
        let hl = if self.version == 2 {
            V2_HEADER_LEN
        } else {
            self.header_length.max(V3_HEADER_LEN_WRITTEN)
        };
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset, patched below
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.crypt_method.to_be_bytes());
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        if self.version >= 3 {
            b.extend_from_slice(&self.incompatible_features.to_be_bytes());
            b.extend_from_slice(&self.compatible_features.to_be_bytes());
            b.extend_from_slice(&self.autoclear_features.to_be_bytes());
            b.extend_from_slice(&self.refcount_order.to_be_bytes());
            b.extend_from_slice(&hl.to_be_bytes());
            b.resize(hl as usize, 0);
            b[104] = match self.compression {
                Compression::Zlib => 0,
                Compression::Zstd => 1,
            };
        }
        // QEMU's order: backing format, feature table (v3), bitmaps, then unknown extensions
        // as found. The feature table is QEMU's own, rewritten whole as QEMU does.
        if let Some(f) = &self.backing_format {
            push_ext(&mut b, EXT_BACKING_FORMAT, f.as_bytes());
        }
        // QEMU leaves the table out with clusters of 4 KiB or less: it would crowd out the
        // backing file name.
        if self.version >= 3 && self.cluster_size() > 4096 {
            push_ext(&mut b, EXT_FEATURE_TABLE, &feature_table());
        }
        if let Some(bm) = self.bitmaps_ext() {
            push_ext(&mut b, EXT_BITMAPS, bm);
        }
        for e in &self.extensions {
            if matches!(e.kind, EXT_BACKING_FORMAT | EXT_FEATURE_TABLE | EXT_BITMAPS) {
                continue;
            }
            push_ext(&mut b, e.kind, &e.data);
        }
        push_ext(&mut b, EXT_END, &[]);
        if let Some(bf) = &self.backing_file {
            if bf.len() > MAX_BACKING_NAME as usize {
                return Err(Error::Invalid("Backing file name too long".into()));
            }
            let off = b.len() as u64;
            b.extend_from_slice(bf.as_bytes());
            b[8..16].copy_from_slice(&off.to_be_bytes());
            b[16..20].copy_from_slice(&(bf.len() as u32).to_be_bytes());
        }
        if b.len() > cs {
            return Err(Error::Invalid(
                "Header, extensions and backing file name do not fit in the first cluster".into(),
            ));
        }
        Ok(b)
    }
}

fn push_ext(b: &mut Vec<u8>, kind: u32, data: &[u8]) {
    b.extend_from_slice(&kind.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().div_ceil(8) * 8, 0);
}

/// Number of L1 entries needed to map `size` bytes; None on overflow.
pub fn l1_entries_for(size: u64, cluster_bits: u32, l2_bits: u32) -> Option<u64> {
    let shift = cluster_bits + l2_bits;
    let per = 1u64.checked_shl(shift)?;
    Some(size.div_ceil(per))
}

/// A table must be cluster aligned, not overflow, and lie within the file.
pub fn check_table(offset: u64, len: u64, cs: u64, file_len: u64, what: &str) -> Result<()> {
    if !offset.is_multiple_of(cs) {
        return corrupt(format!("{what} offset invalid"));
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len.div_ceil(cs) * cs && offset != 0 => Ok(()),
        _ => corrupt(format!("{what} is past the end of the file")),
    }
}

/// The feature name table QEMU writes into every new v3 image, so tools can name bits.
pub fn feature_table() -> Vec<u8> {
    const FEATURES: &[(u8, u8, &str)] = &[
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];
    let mut v = Vec::with_capacity(FEATURES.len() * 48);
    for (t, bit, name) in FEATURES {
        v.push(*t);
        v.push(*bit);
        let mut n = [0u8; 46];
        n[..name.len()].copy_from_slice(name.as_bytes());
        v.extend_from_slice(&n);
    }
    v
}
