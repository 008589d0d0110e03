//! Persistent dirty bitmaps: read only, so that `info` lists them and `check` counts their
//! clusters as referenced. They are never modified; guest writes clear the autoclear bit so
//! QEMU knows they went stale (see `Meta::begin_write`).

use super::header::{Header, AUTOCLEAR_BITMAPS};
use crate::error::{corrupt, Result};
use crate::fileio;
use crate::info::BitmapInfo;
use std::fs::File;

const MAX_BITMAPS: u32 = 65535;
const MAX_DIR_SIZE: u64 = 1024 * MAX_BITMAPS as u64;
const MAX_TABLE_ENTRIES: u32 = 1 << 24;

pub struct Bitmap {
    pub name: String,
    pub table_offset: u64,
    pub table_size: u32,
    pub flags: u32,
    pub granularity_bits: u8,
}

pub struct Directory {
    pub offset: u64,
    pub size: u64,
    pub bitmaps: Vec<Bitmap>,
}

/// Parses the bitmap directory when the extension is present and still valid (autoclear set).
pub fn directory(f: &File, h: &Header) -> Result<Option<Directory>> {
    let Some(ext) = h.bitmaps_ext() else {
        return Ok(None);
    };
    if h.autoclear_features & AUTOCLEAR_BITMAPS == 0 {
        return Ok(None);
    }
    if ext.len() < 24 {
        return corrupt("Invalid bitmaps extension length");
    }
    let nb = u32::from_be_bytes(ext[0..4].try_into().unwrap());
    let size = u64::from_be_bytes(ext[8..16].try_into().unwrap());
    let offset = u64::from_be_bytes(ext[16..24].try_into().unwrap());
    if nb > MAX_BITMAPS || size > MAX_DIR_SIZE || offset % h.cluster_size() != 0 {
        return corrupt("Invalid bitmaps extension");
    }
    let mut dir = vec![0u8; size as usize];
    fileio::read_full(f, &mut dir, offset)?;
    let mut bitmaps = Vec::new();
    let mut p = 0usize;
    for _ in 0..nb {
        if p + 24 > dir.len() {
            return corrupt("Bitmap directory is truncated");
        }
        let e = &dir[p..];
        let table_offset = u64::from_be_bytes(e[0..8].try_into().unwrap());
        let table_size = u32::from_be_bytes(e[8..12].try_into().unwrap());
        let flags = u32::from_be_bytes(e[12..16].try_into().unwrap());
        let granularity_bits = e[17];
        let name_size = u16::from_be_bytes(e[18..20].try_into().unwrap()) as usize;
        let extra = u32::from_be_bytes(e[20..24].try_into().unwrap()) as usize;
        let len = (24 + extra + name_size).div_ceil(8) * 8;
        if p + 24 + extra + name_size > dir.len() || table_size > MAX_TABLE_ENTRIES {
            return corrupt("Bitmap directory entry is invalid");
        }
        let name = String::from_utf8_lossy(&e[24 + extra..24 + extra + name_size]).into_owned();
        bitmaps.push(Bitmap {
            name,
            table_offset,
            table_size,
            flags,
            granularity_bits,
        });
        p += len;
    }
    Ok(Some(Directory {
        offset,
        size,
        bitmaps,
    }))
}

/// Host offsets of the data clusters of one bitmap table (bits 9-55; 0 means all zeros/ones).
pub fn table_clusters(f: &File, b: &Bitmap) -> Result<Vec<u64>> {
    let mut raw = vec![0u8; b.table_size as usize * 8];
    fileio::read_full(f, &mut raw, b.table_offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()) & 0x00ff_ffff_ffff_fe00)
        .filter(|&o| o != 0)
        .collect())
}

pub fn infos(f: &File, h: &Header) -> Result<Vec<BitmapInfo>> {
    Ok(directory(f, h)?
        .map(|d| {
            d.bitmaps
                .iter()
                .map(|b| {
                    let mut flags = Vec::new();
                    if b.flags & 1 != 0 {
                        flags.push("in-use");
                    }
                    if b.flags & 2 != 0 {
                        flags.push("auto");
                    }
                    BitmapInfo {
                        name: b.name.clone(),
                        granularity: 1u64 << b.granularity_bits.min(63),
                        flags,
                    }
                })
                .collect()
        })
        .unwrap_or_default())
}
