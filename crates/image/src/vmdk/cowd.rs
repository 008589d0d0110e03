//! The old VMDK3 / COWD sparse format (GSX and ESX 2 "vmfsSparse" extents), read and written
//! as QEMU does: a 32-bit grain directory at `l1dir_offset`, grain tables of 4096 entries.

use super::sparse::{Flavor, Sparse};
use super::tables;
use crate::error::Result;
use std::fs::File;

pub const MAGIC: u32 = 0x434f_5744; // "COWD"
/// Entries per grain table (fixed by the format).
const GT_ENTRIES: u64 = 4096;

/// QEMU's VMDK3Header (after the magic): only the fields QEMU uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct Header {
    pub version: u32,
    pub flags: u32,
    pub disk_sectors: u32,
    pub granularity: u32,
    pub l1dir_offset: u32,
    pub l1dir_size: u32,
    pub file_sectors: u32,
}

impl Header {
    pub fn parse(b: &[u8]) -> Header {
        let u = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        Header {
            version: u(0),
            flags: u(4),
            disk_sectors: u(8),
            granularity: u(12),
            l1dir_offset: u(16),
            l1dir_size: u(20),
            file_sectors: u(24),
        }
    }
}

/// Opens a COWD extent: returns its size in sectors and its tables.
pub fn open(f: &File, file_len: u64, head: &[u8], budget: &mut u64) -> Result<(u64, Sparse)> {
    let mut b = [0u8; 44];
    let n = head.len().min(44);
    b[..n].copy_from_slice(&head[..n]);
    let h = Header::parse(&b[4..]);
    let sparse = tables::build(
        f,
        file_len,
        tables::Layout {
            flavor: Flavor::Cowd,
            l1_offset: (h.l1dir_offset as u64) << 9,
            l1_backup_offset: 0,
            l1_size: h.l1dir_size as u64,
            l2_size: GT_ENTRIES,
            cluster_sectors: h.granularity as u64,
            data_start: 512,
            reserved: &[],
        },
        budget,
    )?;
    Ok((h.disk_sectors as u64, sparse))
}
