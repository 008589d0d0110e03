//! MBR (DOS) partition tables: four primary entries, extended partitions holding a chain of
//! EBRs with one logical partition each. Numbering and the sanity rules for the third and
//! fourth EBR entries follow the Linux kernel (block/partitions/msdos.c), since libguestfs
//! names partitions after the kernel's devices.

use super::{le32, PartTable, Partition, TableKind};
use crate::dev::BlockDev;
use crate::error::Result;
use std::collections::HashSet;

const SECTOR: u64 = 512;
/// EBRs followed per extended partition (the kernel gives up after 100 as well).
const MAX_EBRS: usize = 128;
/// The kernel's partition limit per disk.
const MAX_PARTITIONS: u32 = 255;

struct Entry {
    boot: u8,
    kind: u8,
    lba: u64,
    sectors: u64,
}

fn entries(sector: &[u8; 512]) -> [Entry; 4] {
    std::array::from_fn(|i| {
        let e = &sector[446 + 16 * i..462 + 16 * i];
        Entry {
            boot: e[0],
            kind: e[4],
            lba: le32(e, 8) as u64,
            sectors: le32(e, 12) as u64,
        }
    })
}

/// A protective MBR: one of the entries is of type 0xEE (GPT follows).
pub fn is_protective(sector: &[u8; 512]) -> bool {
    entries(sector)
        .iter()
        .any(|e| e.kind == 0xee && e.sectors != 0)
}

/// Parses an MBR whose sector 0 (`sector`, with the 55AA signature) was read already.
/// `Ok(None)` when the sector is not a partition table: a FAT or NTFS boot sector of a
/// filesystem on the whole disk, or boot indicators other than 0 / 0x80 (as the kernel
/// and blkid decide).
pub fn read(dev: &dyn BlockDev, sector: &[u8; 512]) -> Result<Option<PartTable>> {
    let es = entries(sector);
    if es.iter().any(|e| e.boot != 0 && e.boot != 0x80) {
        return Ok(None);
    }
    if crate::probe::is_fat_boot_sector(sector) || crate::probe::is_ntfs_boot_sector(sector) {
        return Ok(None);
    }
    let disk = dev.size();
    let mut t = PartTable {
        kind: TableKind::Mbr,
        sector_size: SECTOR as u32,
        disk_guid: None,
        mbr_signature: Some(le32(sector, 440)),
        used_backup: false,
        partitions: Vec::new(),
        warnings: Vec::new(),
    };
    let mut extended = Vec::new();
    for (i, e) in es.iter().enumerate() {
        if e.sectors == 0 {
            continue;
        }
        let ext = Partition::is_extended_type(e.kind);
        let p = part(i as u32 + 1, e, e.lba, ext, false);
        if p.start >= disk {
            t.warnings.push(format!(
                "partition {} starts at byte {} past the end of the disk ({disk} bytes)",
                p.number, p.start
            ));
            continue;
        }
        if ext {
            extended.push((e.lba, e.sectors));
        }
        t.partitions.push(p);
    }
    let mut next = 5u32;
    for (start, sectors) in extended {
        logicals(dev, start, sectors, &mut next, &mut t)?;
    }
    Ok(Some(t))
}

fn part(number: u32, e: &Entry, lba: u64, extended: bool, logical: bool) -> Partition {
    // lba < 2^33 and sectors < 2^32: no overflow in bytes.
    let start = lba * SECTOR;
    let size = e.sectors * SECTOR;
    Partition {
        number,
        start,
        size,
        end: start + size - 1,
        mbr_id: Some(e.kind),
        gpt_type: None,
        gpt_guid: None,
        gpt_name: None,
        gpt_attributes: None,
        bootable: e.boot == 0x80,
        extended,
        logical,
    }
}

/// Follows the EBR chain of the extended partition at `ext_lba`. Each EBR's logical entries
/// are relative to that EBR; its link entry is relative to the extended partition's start.
/// The chain is cut (with a warning) at a bad signature, a loop, an EBR past the disk, or
/// after [`MAX_EBRS`] links.
fn logicals(
    dev: &dyn BlockDev,
    ext_lba: u64,
    ext_sectors: u64,
    next: &mut u32,
    t: &mut PartTable,
) -> Result<()> {
    let disk = dev.size();
    let mut seen = HashSet::new();
    let (mut this, mut this_sectors) = (ext_lba, ext_sectors);
    for _ in 0..MAX_EBRS {
        if !seen.insert(this) {
            t.warnings
                .push(format!("EBR chain loops back to sector {this}; chain cut"));
            return Ok(());
        }
        let off = this * SECTOR;
        if off.saturating_add(SECTOR) > disk {
            t.warnings.push(format!(
                "EBR at sector {this} is past the end of the disk; chain cut"
            ));
            return Ok(());
        }
        let mut sector = [0u8; 512];
        dev.read_at(&mut sector, off)?;
        if sector[510] != 0x55 || sector[511] != 0xaa {
            if this != ext_lba {
                t.warnings.push(format!(
                    "EBR at sector {this} has no 55AA signature; chain cut"
                ));
            }
            return Ok(());
        }
        let es = entries(&sector);
        for (i, e) in es.iter().enumerate() {
            if e.sectors == 0 || Partition::is_extended_type(e.kind) {
                continue;
            }
            // The 3rd and 4th entries often hold garbage: the kernel only believes them
            // when they lie inside this EBR's extent.
            if i >= 2 && (e.lba.saturating_add(e.sectors) > this_sectors) {
                continue;
            }
            if *next > MAX_PARTITIONS {
                t.warnings
                    .push("more than 255 partitions; the rest ignored".to_string());
                return Ok(());
            }
            let p = part(*next, e, this + e.lba, false, true);
            if p.start >= disk {
                t.warnings.push(format!(
                    "logical partition {} starts past the end of the disk",
                    p.number
                ));
                continue;
            }
            t.partitions.push(p);
            *next += 1;
        }
        match es
            .iter()
            .find(|e| e.sectors != 0 && Partition::is_extended_type(e.kind))
        {
            Some(e) => {
                this = ext_lba + e.lba;
                this_sectors = e.sectors;
            }
            None => return Ok(()),
        }
    }
    t.warnings.push(format!(
        "more than {MAX_EBRS} EBRs in the extended partition; chain cut"
    ));
    Ok(())
}
