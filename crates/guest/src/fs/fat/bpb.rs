//! The boot sector's BIOS parameter block: geometry of the volume, validated against itself
//! and the device before anything else is read.

use crate::error::{corrupt, Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FatKind {
    Fat12,
    Fat16,
    Fat32,
}

/// Where everything is, in bytes from the start of the device.
#[derive(Debug, Clone)]
pub struct Geometry {
    pub kind: FatKind,
    pub cluster_size: u32,
    /// First FAT (the one Linux reads).
    pub fat_offset: u64,
    pub fat_len: u64,
    /// Fixed root directory region of FAT12/16 (offset, length); None on FAT32.
    pub root_region: Option<(u64, u64)>,
    /// First cluster of the FAT32 root directory.
    pub root_cluster: u32,
    /// Byte offset of cluster 2.
    pub data_offset: u64,
    /// Number of data clusters (valid cluster numbers are 2..clusters+2).
    pub clusters: u32,
    pub serial: u32,
    /// The boot sector's volume label when the extended boot signature says it is there.
    pub label: Option<[u8; 11]>,
}

/// Largest cluster counts the kernel accepts for each FAT width (fs/fat/fat.h MAX_FAT*).
const MAX_FAT12: u64 = 0xFF4;
const MAX_FAT16: u64 = 0xFFF4;
const MAX_FAT32: u64 = 0x0FFF_FFF6;

fn le16(b: &[u8], o: usize) -> u64 {
    u16::from_le_bytes([b[o], b[o + 1]]) as u64
}
fn le32(b: &[u8], o: usize) -> u64 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as u64
}

impl Geometry {
    /// Parses the first 512 bytes of a device of `dev_size` bytes.
    pub fn parse(b: &[u8; 512], dev_size: u64) -> Result<Geometry> {
        let bps = le16(b, 11);
        if !(512..=4096).contains(&bps) || !bps.is_power_of_two() {
            return corrupt(format!("vfat: {bps} bytes per sector"));
        }
        let spc = b[13] as u64;
        if spc == 0 || !spc.is_power_of_two() {
            return corrupt(format!("vfat: {spc} sectors per cluster"));
        }
        let reserved = le16(b, 14);
        if reserved == 0 {
            return corrupt("vfat: no reserved sectors");
        }
        let nfats = b[16] as u64;
        if nfats == 0 {
            return corrupt("vfat: no FAT");
        }
        let media = b[21];
        if media != 0xF0 && media < 0xF8 {
            return corrupt(format!("vfat: media descriptor {media:#x}"));
        }
        let total = match le16(b, 19) {
            0 => le32(b, 32),
            n => n,
        };
        if total == 0 {
            return corrupt("vfat: zero total sectors");
        }
        if total * bps > dev_size {
            return corrupt(format!(
                "vfat: {total} sectors of {bps} bytes do not fit the device ({dev_size} bytes)"
            ));
        }
        // As the kernel does: no 16-bit FAT length means the FAT32 layout; otherwise the
        // cluster count chooses between 12 and 16 bits (Microsoft's rule, and the kernel's).
        let fat16_len = le16(b, 22);
        let fat32 = fat16_len == 0;
        let fat_sectors = if fat32 { le32(b, 36) } else { fat16_len };
        if fat_sectors == 0 {
            return corrupt("vfat: zero-length FAT");
        }
        let root_entries = le16(b, 17);
        if !fat32 && root_entries == 0 {
            return corrupt("vfat: FAT12/16 without root directory entries");
        }
        let root_sectors = if fat32 {
            0
        } else {
            (root_entries * 32).div_ceil(bps)
        };
        let fat_start = reserved;
        let root_start = fat_start + nfats * fat_sectors;
        let data_start = root_start + root_sectors;
        if data_start >= total {
            return corrupt("vfat: no room for data after the FATs and root directory");
        }
        let mut clusters = (total - data_start) / spc;
        let fat_bytes = fat_sectors * bps;
        let kind = if fat32 {
            FatKind::Fat32
        } else if clusters > MAX_FAT12 {
            FatKind::Fat16
        } else {
            FatKind::Fat12
        };
        // Entries the FAT can hold bound the usable clusters (the kernel clamps the same way).
        let entries = match kind {
            FatKind::Fat12 => fat_bytes * 2 / 3,
            FatKind::Fat16 => fat_bytes / 2,
            FatKind::Fat32 => fat_bytes / 4,
        };
        clusters = clusters.min(entries.saturating_sub(2));
        let max = match kind {
            FatKind::Fat12 => MAX_FAT12,
            FatKind::Fat16 => MAX_FAT16,
            FatKind::Fat32 => MAX_FAT32,
        };
        if clusters == 0 || clusters > max {
            return corrupt(format!("vfat: {clusters} clusters for {kind:?}"));
        }
        let (serial_at, sig_at) = if fat32 { (67, 66) } else { (39, 38) };
        let mut root_cluster = 0;
        if fat32 {
            if le16(b, 42) != 0 {
                return Err(Error::Unsupported(format!(
                    "vfat: FAT32 version {:#x}",
                    le16(b, 42)
                )));
            }
            root_cluster = le32(b, 44) as u32;
            if root_cluster < 2 || root_cluster as u64 >= clusters + 2 {
                return corrupt(format!("vfat: root cluster {root_cluster} out of range"));
            }
        }
        let label = (b[sig_at] == 0x29).then(|| {
            let mut l = [0u8; 11];
            l.copy_from_slice(&b[sig_at + 5..sig_at + 16]);
            l
        });
        Ok(Geometry {
            kind,
            cluster_size: (spc * bps) as u32,
            fat_offset: fat_start * bps,
            fat_len: fat_bytes,
            root_region: (!fat32).then_some((root_start * bps, root_entries * 32)),
            root_cluster,
            data_offset: data_start * bps,
            clusters: clusters as u32,
            serial: le32(b, serial_at) as u32,
            label,
        })
    }

    /// Byte offset of data cluster `c` (checked by the caller to be in range).
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + (c as u64 - 2) * self.cluster_size as u64
    }

    pub fn valid_cluster(&self, c: u32) -> bool {
        c >= 2 && (c as u64) < self.clusters as u64 + 2
    }
}
