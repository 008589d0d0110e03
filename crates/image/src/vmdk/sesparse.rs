//! ESXi's space-efficient sparse format (seSparse, VMware 6.5+), read-only as in QEMU. The
//! format is not publicly documented; the checks are QEMU's strict ones, with its messages.

use super::sparse::{Flavor, Sparse};
use super::tables;
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use std::fs::File;

pub const CONST_MAGIC: u64 = 0xcafe_babe;
pub const VOLATILE_MAGIC: u64 = 0xcafe_cafe;
pub const VERSION: u64 = 0x0000_0002_0000_0001;

/// The constant header (first sector), little endian u64 fields then zero padding.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConstHeader {
    pub magic: u64,
    pub version: u64,
    pub capacity: u64,
    pub grain_size: u64,
    pub grain_table_size: u64,
    pub flags: u64,
    pub reserved: [u64; 4],
    pub volatile_header_offset: u64,
    pub volatile_header_size: u64,
    pub journal_header_offset: u64,
    pub journal_header_size: u64,
    pub journal_offset: u64,
    pub journal_size: u64,
    pub grain_dir_offset: u64,
    pub grain_dir_size: u64,
    pub grain_tables_offset: u64,
    pub grain_tables_size: u64,
    pub free_bitmap_offset: u64,
    pub free_bitmap_size: u64,
    pub backmap_offset: u64,
    pub backmap_size: u64,
    pub grains_offset: u64,
    pub grains_size: u64,
}

/// Number of u64 fields before the padding.
pub const CONST_FIELDS: usize = 26;

impl ConstHeader {
    pub fn parse(b: &[u8; 512]) -> ConstHeader {
        let u = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        ConstHeader {
            magic: u(0),
            version: u(1),
            capacity: u(2),
            grain_size: u(3),
            grain_table_size: u(4),
            flags: u(5),
            reserved: [u(6), u(7), u(8), u(9)],
            volatile_header_offset: u(10),
            volatile_header_size: u(11),
            journal_header_offset: u(12),
            journal_header_size: u(13),
            journal_offset: u(14),
            journal_size: u(15),
            grain_dir_offset: u(16),
            grain_dir_size: u(17),
            grain_tables_offset: u(18),
            grain_tables_size: u(19),
            free_bitmap_offset: u(20),
            free_bitmap_size: u(21),
            backmap_offset: u(22),
            backmap_size: u(23),
            grains_offset: u(24),
            grains_size: u(25),
        }
    }

    pub fn serialize(&self) -> [u8; 512] {
        let v = [
            self.magic,
            self.version,
            self.capacity,
            self.grain_size,
            self.grain_table_size,
            self.flags,
            self.reserved[0],
            self.reserved[1],
            self.reserved[2],
            self.reserved[3],
            self.volatile_header_offset,
            self.volatile_header_size,
            self.journal_header_offset,
            self.journal_header_size,
            self.journal_offset,
            self.journal_size,
            self.grain_dir_offset,
            self.grain_dir_size,
            self.grain_tables_offset,
            self.grain_tables_size,
            self.free_bitmap_offset,
            self.free_bitmap_size,
            self.backmap_offset,
            self.backmap_size,
            self.grains_offset,
            self.grains_size,
        ];
        let mut b = [0u8; 512];
        for (i, x) in v.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
        }
        b
    }
}

/// QEMU's check_se_sparse_const_header.
fn check_const(h: &ConstHeader, raw: &[u8; 512]) -> Result<()> {
    if h.magic != CONST_MAGIC {
        return corrupt(format!("Bad const header magic: 0x{:016x}", h.magic));
    }
    if h.version != VERSION {
        return unsupported(format!("Unsupported version: 0x{:016x}", h.version));
    }
    if h.grain_size != 8 {
        return unsupported(format!("Unsupported grain size: {}", h.grain_size));
    }
    if h.grain_table_size != 64 {
        return unsupported(format!(
            "Unsupported grain table size: {}",
            h.grain_table_size
        ));
    }
    if h.flags != 0 {
        return unsupported(format!("Unsupported flags: 0x{:016x}", h.flags));
    }
    if h.reserved.iter().any(|&r| r != 0) {
        return unsupported(format!(
            "Unsupported reserved bits: 0x{:016x} 0x{:016x} 0x{:016x} 0x{:016x}",
            h.reserved[0], h.reserved[1], h.reserved[2], h.reserved[3]
        ));
    }
    if raw[CONST_FIELDS * 8..].iter().any(|&b| b != 0) {
        return unsupported("Unsupported non-zero const header padding".to_string());
    }
    Ok(())
}

fn unsupported<T>(m: String) -> Result<T> {
    Err(Error::Unsupported(m))
}

/// Opens a seSparse extent read-only: returns its size in sectors and its tables.
pub fn open(f: &File, file_len: u64, writable: bool, budget: &mut u64) -> Result<(u64, Sparse)> {
    if writable {
        return Err(Error::ReadOnly(
            "No write support for seSparse images available".into(),
        ));
    }
    let mut raw = [0u8; 512];
    fileio::read_full(f, &mut raw, 0)?;
    let h = ConstHeader::parse(&raw);
    check_const(&h, &raw)?;
    let mut v = [0u8; 512];
    let voff = h
        .volatile_header_offset
        .checked_mul(512)
        .ok_or_else(|| Error::Corrupt("Could not read volatile header".into()))?;
    fileio::read_full(f, &mut v, voff)?;
    let u = |i: usize| u64::from_le_bytes(v[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    if u(0) != VOLATILE_MAGIC {
        return corrupt(format!("Bad volatile header magic: 0x{:016x}", u(0)));
    }
    if u(3) != 0 {
        return unsupported("Image is dirty, Replaying journal not supported".into());
    }
    if v[32..].iter().any(|&b| b != 0) {
        return unsupported("Unsupported non-zero volatile header padding".into());
    }
    let too_big = || Error::Corrupt("L1 size too big".into());
    let l1_offset = h.grain_dir_offset.checked_mul(512).ok_or_else(too_big)?;
    let l1_size = h.grain_dir_size.checked_mul(512).ok_or_else(too_big)? / 8;
    let sparse = tables::build(
        f,
        file_len,
        tables::Layout {
            flavor: Flavor::SeSparse {
                tables: h.grain_tables_offset,
                grains: h.grains_offset,
            },
            l1_offset,
            l1_backup_offset: 0,
            l1_size,
            l2_size: h.grain_table_size * 512 / 8,
            cluster_sectors: h.grain_size,
            data_start: u64::MAX,
            reserved: &[],
        },
        budget,
    )?;
    Ok((h.capacity, sparse))
}
