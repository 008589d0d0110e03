//! The QED header (docs/interop/qed_spec.txt): 64 little-endian bytes at offset 0, followed
//! in the header clusters by the backing file name.

use crate::error::{Error, Result};

/// "QED\0" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"QED\0");
pub const LEN: usize = 64;

pub const F_BACKING_FILE: u64 = 0x01;
pub const F_NEED_CHECK: u64 = 0x02;
pub const F_BACKING_FORMAT_NO_PROBE: u64 = 0x04;
pub const FEATURE_MASK: u64 = F_BACKING_FILE | F_NEED_CHECK | F_BACKING_FORMAT_NO_PROBE;
/// No compatible or autoclear features are defined.
pub const COMPAT_FEATURE_MASK: u64 = 0;
pub const AUTOCLEAR_FEATURE_MASK: u64 = 0;

pub const MIN_CLUSTER_SIZE: u64 = 4 << 10;
pub const MAX_CLUSTER_SIZE: u64 = 64 << 20;
pub const DEFAULT_CLUSTER_SIZE: u64 = 64 << 10;
pub const MIN_TABLE_SIZE: u64 = 1;
pub const MAX_TABLE_SIZE: u64 = 16;
pub const DEFAULT_TABLE_SIZE: u64 = 4;
/// QEMU keeps backing names in a PATH_MAX buffer and refuses longer ones.
pub const MAX_BACKING_NAME: u32 = 4096;

/// Byte offsets of the fields QEMU rewrites in place.
pub const OFF_FEATURES: usize = 16;
pub const OFF_IMAGE_SIZE: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub cluster_size: u32,
    /// L1 and L2 table size, in clusters.
    pub table_size: u32,
    /// Header size, in clusters.
    pub header_size: u32,
    pub features: u64,
    pub compat_features: u64,
    pub autoclear_features: u64,
    pub l1_table_offset: u64,
    pub image_size: u64,
    pub backing_filename_offset: u32,
    pub backing_filename_size: u32,
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl Header {
    /// Decodes the fields (no validation beyond the magic; see [`Header::validate`]).
    pub fn decode(b: &[u8; LEN]) -> Result<Header> {
        if le32(b, 0) != MAGIC {
            return Err(Error::Corrupt("Image not in QED format".into()));
        }
        Ok(Header {
            cluster_size: le32(b, 4),
            table_size: le32(b, 8),
            header_size: le32(b, 12),
            features: le64(b, 16),
            compat_features: le64(b, 24),
            autoclear_features: le64(b, 32),
            l1_table_offset: le64(b, 40),
            image_size: le64(b, 48),
            backing_filename_offset: le32(b, 56),
            backing_filename_size: le32(b, 60),
        })
    }

    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.cluster_size.to_le_bytes());
        b[8..12].copy_from_slice(&self.table_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.header_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.features.to_le_bytes());
        b[24..32].copy_from_slice(&self.compat_features.to_le_bytes());
        b[32..40].copy_from_slice(&self.autoclear_features.to_le_bytes());
        b[40..48].copy_from_slice(&self.l1_table_offset.to_le_bytes());
        b[48..56].copy_from_slice(&self.image_size.to_le_bytes());
        b[56..60].copy_from_slice(&self.backing_filename_offset.to_le_bytes());
        b[60..64].copy_from_slice(&self.backing_filename_size.to_le_bytes());
        b
    }

    /// QEMU's open-time checks, in its order and words. `file_size` is the file length
    /// rounded down to a cluster.
    pub fn validate(&self, file_size: u64) -> Result<()> {
        let bad = |m: &str| Err(Error::Corrupt(m.into()));
        if self.features & !FEATURE_MASK != 0 {
            return Err(Error::Unsupported(format!(
                "Unsupported QED features: {:x}",
                self.features & !FEATURE_MASK
            )));
        }
        if !cluster_size_valid(self.cluster_size as u64) {
            return bad("QED cluster size is invalid");
        }
        if !table_size_valid(self.table_size as u64) {
            return bad("QED table size is invalid");
        }
        if !image_size_valid(
            self.image_size,
            self.cluster_size as u64,
            self.table_size as u64,
        ) {
            return bad("QED image size is invalid");
        }
        if !self.table_offset_valid(self.l1_table_offset, file_size) {
            return bad("QED table offset is invalid");
        }
        if self.header_size > u32::MAX / self.cluster_size {
            return bad("QED header size is too large");
        }
        if self.features & F_BACKING_FILE != 0
            && self.backing_filename_offset as u64 + self.backing_filename_size as u64
                > self.header_bytes()
        {
            return bad("QED backing filename offset is invalid");
        }
        Ok(())
    }

    /// Bytes taken by the header clusters (fits u32 once validated).
    pub fn header_bytes(&self) -> u64 {
        self.header_size as u64 * self.cluster_size as u64
    }

    /// QEMU's qed_check_cluster_offset: aligned, past the header, before the end of the file.
    pub fn cluster_offset_valid(&self, off: u64, file_size: u64) -> bool {
        off.is_multiple_of(self.cluster_size as u64)
            && off >= self.header_bytes()
            && off < file_size
    }

    /// QEMU's qed_check_table_offset. Like QEMU, a one-cluster table never passes (its last
    /// cluster is its first, which QEMU's overflow test rejects): images with table_size=1
    /// can be created but not opened.
    pub fn table_offset_valid(&self, off: u64, file_size: u64) -> bool {
        let end = off.wrapping_add((self.table_size as u64 - 1) * self.cluster_size as u64);
        if end <= off {
            return false;
        }
        self.cluster_offset_valid(off, file_size) && self.cluster_offset_valid(end, file_size)
    }
}

pub fn cluster_size_valid(cs: u64) -> bool {
    (MIN_CLUSTER_SIZE..=MAX_CLUSTER_SIZE).contains(&cs) && cs.is_power_of_two()
}

pub fn table_size_valid(ts: u64) -> bool {
    (MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&ts) && ts.is_power_of_two()
}

/// QEMU's qed_max_image_size, with its 64-bit wraparound: for the largest clusters and
/// tables the product overflows and QEMU's limit becomes 0 (or small), which we follow so
/// that both accept the same images.
pub fn max_image_size(cs: u64, ts: u64) -> u64 {
    let entries = (ts * cs) / 8;
    let l2_size = entries.wrapping_mul(cs);
    l2_size.wrapping_mul(entries)
}

pub fn image_size_valid(size: u64, cs: u64, ts: u64) -> bool {
    size.is_multiple_of(512) && size <= max_image_size(cs, ts)
}

/// QEMU's qed_bytes_to_clusters, divisor `cluster_size - 1` included: the consistency check
/// indexes its bitmap with it, and its counts (spurious leaks on large images with small
/// clusters) are only reproduced with the same arithmetic.
pub fn qemu_bytes_to_clusters(bytes: u64, cs: u64) -> u64 {
    (bytes.saturating_add(cs - 1) & !(cs - 1)) / (cs - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_size_wraps_like_qemu() {
        assert_eq!(max_image_size(64 << 10, 4), 1 << 46);
        assert_eq!(max_image_size(4096, 1), 1 << 30);
        assert_eq!(max_image_size(64 << 20, 16), 0);
        assert_eq!(max_image_size(64 << 20, 8), 0);
    }

    #[test]
    fn round_trip() {
        let h = Header {
            cluster_size: 65536,
            table_size: 4,
            header_size: 1,
            features: 5,
            l1_table_offset: 65536,
            image_size: 1 << 30,
            backing_filename_offset: 64,
            backing_filename_size: 8,
            ..Default::default()
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        h.validate(5 * 65536).unwrap();
        assert!(h.validate(65536).is_err());
    }

    #[test]
    fn one_cluster_tables_are_never_valid() {
        let h = Header {
            cluster_size: 4096,
            table_size: 1,
            header_size: 1,
            ..Default::default()
        };
        assert!(!h.table_offset_valid(4096, 1 << 20));
    }
}
