//! The Parallels expandable image header (docs/interop/parallels.txt): 64 little-endian
//! bytes, followed by the BAT.

use crate::error::{Error, Result};

pub const MAGIC: &[u8; 16] = b"WithoutFreeSpace";
/// Images whose BAT entries count clusters rather than sectors.
pub const MAGIC2: &[u8; 16] = b"WithouFreSpacExt";
pub const VERSION: u32 = 2;
/// `inuse` while opened read-write.
pub const INUSE_MAGIC: u32 = 0x746F_6E59;
pub const LEN: u64 = 64;
pub const HEADS: u32 = 16;
pub const SEC_IN_CYL: u64 = 32;
pub const DEFAULT_CLUSTER_SIZE: u64 = 1 << 20;
/// QEMU's MAX_PARALLELS_IMAGE_FACTOR: at most 2^32 clusters.
pub const MAX_IMAGE_FACTOR: u64 = 1 << 32;

pub const OFF_INUSE: u64 = 44;
pub const OFF_DATA_OFF: u64 = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 16],
    pub version: u32,
    pub heads: u32,
    pub cylinders: u32,
    /// Cluster size in sectors.
    pub tracks: u32,
    pub bat_entries: u32,
    pub nb_sectors: u64,
    pub inuse: u32,
    /// Data area start, in sectors.
    pub data_off: u32,
    pub flags: u32,
    /// Format extension cluster, in sectors.
    pub ext_off: u64,
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

impl Header {
    pub fn decode(b: &[u8; LEN as usize]) -> Header {
        Header {
            magic: b[..16].try_into().expect("16 bytes"),
            version: le32(b, 16),
            heads: le32(b, 20),
            cylinders: le32(b, 24),
            tracks: le32(b, 28),
            bat_entries: le32(b, 32),
            nb_sectors: le64(b, 36),
            inuse: le32(b, 44),
            data_off: le32(b, 48),
            flags: le32(b, 52),
            ext_off: le64(b, 56),
        }
    }

    pub fn encode(&self) -> [u8; LEN as usize] {
        let mut b = [0u8; LEN as usize];
        b[..16].copy_from_slice(&self.magic);
        b[16..20].copy_from_slice(&self.version.to_le_bytes());
        b[20..24].copy_from_slice(&self.heads.to_le_bytes());
        b[24..28].copy_from_slice(&self.cylinders.to_le_bytes());
        b[28..32].copy_from_slice(&self.tracks.to_le_bytes());
        b[32..36].copy_from_slice(&self.bat_entries.to_le_bytes());
        b[36..44].copy_from_slice(&self.nb_sectors.to_le_bytes());
        b[44..48].copy_from_slice(&self.inuse.to_le_bytes());
        b[48..52].copy_from_slice(&self.data_off.to_le_bytes());
        b[52..56].copy_from_slice(&self.flags.to_le_bytes());
        b[56..64].copy_from_slice(&self.ext_off.to_le_bytes());
        b
    }

    /// "WithoutFreeSpace": BAT entries in sectors, 32-bit sector count, data_off may be 0.
    pub fn old_magic(&self) -> bool {
        &self.magic == MAGIC
    }

    /// QEMU's open-time checks, in its order and words.
    pub fn validate(&self) -> Result<()> {
        if self.version != VERSION || (&self.magic != MAGIC && &self.magic != MAGIC2) {
            return Err(Error::Corrupt("Image not in Parallels format".into()));
        }
        if self.tracks == 0 {
            return Err(Error::Corrupt(
                "Invalid image: Zero sectors per track".into(),
            ));
        }
        if self.tracks > i32::MAX as u32 / 513 {
            return Err(Error::Corrupt("Invalid image: Too big cluster".into()));
        }
        if self.bat_entries > i32::MAX as u32 / 4 {
            return Err(Error::Corrupt("Catalog too large".into()));
        }
        if self.ext_off >= (i64::MAX >> 9) as u64 {
            return Err(Error::Corrupt("Invalid image: Too big offset".into()));
        }
        if self.sectors() > (i64::MAX >> 9) as u64 {
            return Err(Error::Corrupt("Invalid image: Too big disk size".into()));
        }
        Ok(())
    }

    /// Virtual size in sectors (old images use only the low 32 bits).
    pub fn sectors(&self) -> u64 {
        if self.old_magic() {
            self.nb_sectors & 0xffff_ffff
        } else {
            self.nb_sectors
        }
    }

    /// Sectors per BAT unit.
    pub fn off_multiplier(&self) -> u64 {
        if self.old_magic() {
            1
        } else {
            self.tracks as u64
        }
    }

    /// The smallest valid data offset in sectors: header and BAT, rounded up to a sector
    /// (and to a cluster for "WithouFreSpacExt" images).
    pub fn min_data_off(&self) -> u64 {
        let s = bat_entry_off(self.bat_entries as u64).div_ceil(512);
        if self.old_magic() {
            s
        } else {
            s.div_ceil(self.tracks as u64) * self.tracks as u64
        }
    }

    /// QEMU's parallels_test_data_off: whether data_off is valid, and the data offset to use.
    pub fn test_data_off(&self, file_sectors: u64) -> (bool, u64) {
        let min = self.min_data_off();
        let d = self.data_off as u64;
        if d == 0 && self.old_magic() {
            return (true, min);
        }
        if d < min || d > file_sectors {
            return (false, min);
        }
        (true, d)
    }
}

/// Byte offset of BAT entry `idx`.
pub fn bat_entry_off(idx: u64) -> u64 {
    LEN + 4 * idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_offsets() {
        let h = Header {
            magic: *MAGIC2,
            version: 2,
            heads: 16,
            cylinders: 256,
            tracks: 128,
            bat_entries: 1024,
            nb_sectors: 0x20000,
            inuse: 0,
            data_off: 128,
            flags: 0,
            ext_off: 0,
        };
        assert_eq!(Header::decode(&h.encode()), h);
        h.validate().unwrap();
        assert_eq!(h.min_data_off(), 128);
        assert_eq!(h.test_data_off(128), (true, 128));
        assert_eq!(h.test_data_off(100), (false, 128));
        assert_eq!(h.off_multiplier(), 128);
    }
}
