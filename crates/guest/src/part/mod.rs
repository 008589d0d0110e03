//! Partition tables: MBR (with extended/logical chains) and GPT (with the backup header).
//!
//! Written by hand rather than with the `gpt` or `mbrman` crates: both read through
//! `Read + Seek` of a whole disk, allocate the entry array from header fields before
//! checking them against the disk, and do not number partitions the way the Linux kernel
//! (hence libguestfs) does (logicals from 5, GPT numbers = entry index + 1, entries past the
//! disk skipped). Here every field is checked against the [`BlockDev`] it came from.

pub mod gpt;
pub mod mbr;

use crate::dev::BlockDev;
use crate::error::Result;
use std::fmt;

/// Which kind of table, named as parted / libguestfs' `part-get-parttype` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Mbr,
    Gpt,
}

impl TableKind {
    /// "msdos" or "gpt".
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Mbr => "msdos",
            TableKind::Gpt => "gpt",
        }
    }
}

/// A GUID as stored on disk (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
    /// Lowercase, as blkid prints PARTUUID / PTUUID.
    pub fn lower(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

/// Uppercase "0FC63DAF-8483-4772-8E79-3D69D8477DE4", as sgdisk and libguestfs print it.
impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        for x in &b[10..] {
            write!(f, "{x:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The EFI System Partition type: parted's (and libguestfs' `part-get-bootable`) "boot" flag
/// on GPT.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

/// One partition, with what `part-list`, `part-get-mbr-id`, `part-get-gpt-type`,
/// `part-get-gpt-guid`, `part-get-name`, `part-get-bootable` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// Kernel numbering: MBR primaries 1-4, logicals from 5; GPT entry index + 1.
    pub number: u32,
    /// Byte offset of the first byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Byte offset of the last byte (`part-list`'s part_end, inclusive).
    pub end: u64,
    /// MBR partition type byte.
    pub mbr_id: Option<u8>,
    pub gpt_type: Option<Guid>,
    pub gpt_guid: Option<Guid>,
    pub gpt_name: Option<String>,
    pub gpt_attributes: Option<u64>,
    /// MBR: boot indicator 0x80. GPT: the EFI System Partition type (parted's "boot" flag).
    pub bootable: bool,
    /// An MBR extended partition (a container of logical partitions, not a filesystem).
    pub extended: bool,
    /// MBR logical partition (inside an extended one).
    pub logical: bool,
}

impl Partition {
    /// The MBR types the Linux kernel treats as extended partitions.
    pub fn is_extended_type(t: u8) -> bool {
        matches!(t, 0x05 | 0x0f | 0x85)
    }

    /// Whether libguestfs' list-filesystems looks for a filesystem here: not extended
    /// partitions, not Windows LDM metadata/data (MBR 0x42 and their GPT types), not
    /// Microsoft Reserved, not Windows snapshot partitions.
    pub fn can_hold_filesystem(&self) -> bool {
        if self.extended || self.mbr_id == Some(0x42) {
            return false;
        }
        match self.gpt_type {
            Some(t) => !matches!(
                t.to_string().as_str(),
                "5808C8AA-7E8F-42E0-85D2-E1E90434CFB3"
                    | "AF9B60A0-1431-4F62-BC68-3311714A69AD"
                    | "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
                    | "CADDEBF1-4400-4DE8-B103-12117DCF3CCD"
                    | "00000000-0000-0000-0000-000000000000"
            ),
            None => true,
        }
    }

    /// The bytes of the device the kernel exposes for this partition: the whole partition,
    /// except for an extended one, which Linux exposes as its first two sectors (one if it is
    /// one sector long) so that fdisk can read the first EBR.
    pub fn device_extent(&self) -> (u64, u64) {
        if self.extended {
            (self.start, self.size.min(1024))
        } else {
            (self.start, self.size)
        }
    }
}

/// A disk's partition table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTable {
    pub kind: TableKind,
    /// Logical sector size the table is laid out in (512, or 4096 for a GPT found at 4096).
    pub sector_size: u32,
    /// GPT disk GUID.
    pub disk_guid: Option<Guid>,
    /// MBR disk signature (bytes 440..444).
    pub mbr_signature: Option<u32>,
    /// GPT only: the primary header was bad and the backup at the end of the disk was used.
    pub used_backup: bool,
    /// In number order.
    pub partitions: Vec<Partition>,
    /// Entries that were skipped (past the end of the disk, overlapping their table, a
    /// broken EBR chain...), each described in one line.
    pub warnings: Vec<String>,
}

/// Reads the partition table of `dev`, if it has one. `Ok(None)`: no table (the whole disk
/// may hold a filesystem). An error: a table that is there but unusable (a protective MBR
/// whose GPT headers are both bad).
pub fn read(dev: &dyn BlockDev) -> Result<Option<PartTable>> {
    if dev.size() < 512 {
        return Ok(None);
    }
    let mut sector = [0u8; 512];
    dev.read_at(&mut sector, 0)?;
    if sector[510] != 0x55 || sector[511] != 0xaa {
        return Ok(None);
    }
    if mbr::is_protective(&sector) {
        return gpt::read(dev).map(Some);
    }
    mbr::read(dev, &sector)
}

pub(crate) fn le16(b: &[u8], at: usize) -> u16 {
    let mut a = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        a.copy_from_slice(s);
    }
    u16::from_le_bytes(a)
}

pub(crate) fn le32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        a.copy_from_slice(s);
    }
    u32::from_le_bytes(a)
}

pub(crate) fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}
