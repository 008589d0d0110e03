//! Loading and validating the grain directory of a sparse extent (QEMU's vmdk_add_extent and
//! vmdk_init_tables, with the bounds QEMU leaves out): allocation is capped by sane limits and
//! by the file, and no grain table may overlap the header or the directories, so that table
//! updates can never overwrite them.

use super::sparse::{self, Flavor, Sparse};
use crate::error::{corrupt, Result};
use std::fs::File;

/// QEMU's limit for one grain directory (entries).
pub const MAX_L1_SIZE: u64 = 32 * 1024 * 1024;
/// Directory entries all extents of one image may load together (primary and redundant):
/// 256 MiB of memory, far above any real image (62 TB with 64 KiB grains needs 4M).
pub const L1_BUDGET: u64 = 32 * 1024 * 1024;
/// Largest grain accepted: 32 MiB. QEMU allows 1 GiB, which no real image uses (VMware
/// writes 64 KiB) and which would make every partial write or compressed read allocate that.
const MAX_CLUSTER_SECTORS: u64 = 0x1_0000;

pub struct Layout<'a> {
    pub flavor: Flavor,
    pub l1_offset: u64,
    /// Redundant grain directory (0: none).
    pub l1_backup_offset: u64,
    pub l1_size: u64,
    pub l2_size: u64,
    pub cluster_sectors: u64,
    pub data_start: u64,
    /// Byte ranges grain tables must stay out of besides the header sector and the
    /// directories (start, end, what).
    pub reserved: &'a [(u64, u64, &'static str)],
}

/// Checks the geometry, reads the directories and validates every grain table they name.
pub fn build(f: &File, file_len: u64, l: Layout, budget: &mut u64) -> Result<Sparse> {
    if l.cluster_sectors > MAX_CLUSTER_SECTORS {
        return corrupt("Invalid granularity, image may be corrupt");
    }
    if l.l1_size > MAX_L1_SIZE {
        return corrupt("L1 size too big");
    }
    let l1_entry_sectors = l.l2_size * l.cluster_sectors;
    if l1_entry_sectors == 0 {
        return corrupt("L1 entry size is invalid");
    }
    let entry = match l.flavor {
        Flavor::SeSparse { .. } => 8,
        _ => 4,
    };
    let copies = if l.l1_backup_offset != 0 { 2 } else { 1 };
    let need = l.l1_size * copies;
    if need > *budget {
        return corrupt("L1 size too big");
    }
    *budget -= need;
    let dir_bytes = l.l1_size * entry;
    let file_end = file_len.div_ceil(512) * 512;
    let check_dir = |off: u64, what: &str| -> Result<()> {
        if dir_bytes == 0 {
            return Ok(());
        }
        if off < 512 {
            return corrupt(format!("The {what} overlaps the header"));
        }
        if off.checked_add(dir_bytes).is_none_or(|e| e > file_end) {
            return corrupt(format!("The {what} lies past the end of the file"));
        }
        Ok(())
    };
    check_dir(l.l1_offset, "grain directory")?;
    let l1 = sparse::read_dir(f, l.l1_offset, l.l1_size, entry)?;
    let l1_backup = if l.l1_backup_offset != 0 {
        check_dir(l.l1_backup_offset, "redundant grain directory")?;
        Some(sparse::read_dir(f, l.l1_backup_offset, l.l1_size, entry)?)
    } else {
        None
    };
    let sp = Sparse {
        flavor: l.flavor,
        cluster_sectors: l.cluster_sectors,
        l2_size: l.l2_size,
        l1_entry_sectors,
        l1,
        l1_backup,
        compressed: false,
        has_marker: false,
        zeroed_grain: false,
        version: 0,
        data_start: l.data_start,
    };
    if !matches!(l.flavor, Flavor::SeSparse { .. }) {
        let gt_bytes = sp.table_bytes();
        let mut ranges: Vec<(u64, u64, &str)> = vec![(0, 512, "header")];
        ranges.push((l.l1_offset, l.l1_offset + dir_bytes, "grain directory"));
        if l.l1_backup_offset != 0 {
            ranges.push((
                l.l1_backup_offset,
                l.l1_backup_offset + dir_bytes,
                "redundant grain directory",
            ));
        }
        ranges.extend_from_slice(l.reserved);
        let dirs = std::iter::once(("grain directory", &sp.l1)).chain(
            sp.l1_backup
                .iter()
                .map(|b| ("redundant grain directory", b)),
        );
        for (what, dir) in dirs {
            for (i, &e) in dir.iter().enumerate() {
                if e == 0 {
                    continue;
                }
                let start = e * 512;
                let end = start + gt_bytes;
                if end > file_end {
                    return corrupt(format!(
                        "Grain table {i} of the {what} (sector {e}) lies past the end of the file"
                    ));
                }
                for &(a, b, name) in &ranges {
                    if start < b && a < end {
                        return corrupt(format!(
                            "Grain table {i} of the {what} (sector {e}) overlaps the {name}"
                        ));
                    }
                }
            }
        }
    }
    Ok(sp)
}
