//! GUID partition tables (UEFI spec, chapter 5): the header at LBA 1 and its backup at the
//! last LBA, each with a CRC32 of itself and of the entry array. The primary is used when
//! it is valid, else the backup (as parted and sgdisk do). Sector size 512, or 4096 when the
//! header is found at byte 4096.

use super::{le32, le64, Guid, PartTable, Partition, TableKind, ESP_TYPE};
use crate::dev::BlockDev;
use crate::error::{Error, Result};

/// Entries considered: the kernel stops at its 255-partition limit as well.
const MAX_ENTRIES: u32 = 255;
/// Largest entry array read (the header may claim more entries; only the CRC covers them).
const MAX_ARRAY: u64 = 4 << 20;

struct Header {
    disk_guid: Guid,
    entries_lba: u64,
    num_entries: u32,
    entry_size: u32,
    entries_crc: u32,
}

/// Reads the GPT of `dev`, which has a protective MBR.
pub fn read(dev: &dyn BlockDev) -> Result<PartTable> {
    let mut why = Vec::new();
    for ss in [512u64, 4096] {
        if dev.size() < 2 * ss {
            continue;
        }
        let last = dev.size() / ss - 1;
        match header(dev, ss, 1).and_then(|h| table(dev, ss, &h, false)) {
            Ok(t) => return Ok(t),
            Err(e) => why.push(format!("primary GPT header ({ss}-byte sectors): {e}")),
        }
        match header(dev, ss, last).and_then(|h| table(dev, ss, &h, true)) {
            Ok(t) => return Ok(t),
            Err(e) => why.push(format!("backup GPT header ({ss}-byte sectors): {e}")),
        }
    }
    Err(Error::Corrupt(format!(
        "protective MBR but no valid GPT: {}",
        why.join("; ")
    )))
}

fn header(dev: &dyn BlockDev, ss: u64, lba: u64) -> Result<Header> {
    let mut b = vec![0u8; ss as usize];
    dev.read_at(&mut b, lba * ss)?;
    if &b[0..8] != b"EFI PART" {
        return Err(Error::Corrupt(format!(
            "no EFI PART signature at LBA {lba}"
        )));
    }
    let hsize = le32(&b, 12) as u64;
    if !(92..=ss).contains(&hsize) {
        return Err(Error::Corrupt(format!("header size {hsize} is invalid")));
    }
    let stored = le32(&b, 16);
    b[16..20].fill(0);
    let crc = crc32fast::hash(&b[..hsize as usize]);
    if crc != stored {
        return Err(Error::Corrupt(format!(
            "header CRC {stored:08x} does not match its contents ({crc:08x})"
        )));
    }
    let my_lba = le64(&b, 24);
    if my_lba != lba {
        return Err(Error::Corrupt(format!(
            "header at LBA {lba} says it is at LBA {my_lba}"
        )));
    }
    let last = dev.size() / ss - 1;
    let (first_usable, last_usable) = (le64(&b, 40), le64(&b, 48));
    if first_usable > last_usable || last_usable > last {
        return Err(Error::Corrupt(format!(
            "usable LBAs {first_usable}..{last_usable} do not fit a disk of {} sectors",
            last + 1
        )));
    }
    let entry_size = le32(&b, 84);
    if entry_size < 128 || entry_size & 7 != 0 || entry_size as u64 > 64 << 10 {
        return Err(Error::Corrupt(format!(
            "partition entry size {entry_size} is invalid"
        )));
    }
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[56..72]);
    Ok(Header {
        disk_guid: Guid(g),
        entries_lba: le64(&b, 72),
        num_entries: le32(&b, 80),
        entry_size,
        entries_crc: le32(&b, 88),
    })
}

fn table(dev: &dyn BlockDev, ss: u64, h: &Header, backup: bool) -> Result<PartTable> {
    let bytes = h.num_entries as u64 * h.entry_size as u64;
    if bytes > MAX_ARRAY {
        return Err(Error::Corrupt(format!(
            "partition entry array of {} entries of {} bytes is too large",
            h.num_entries, h.entry_size
        )));
    }
    let off = h
        .entries_lba
        .checked_mul(ss)
        .filter(|o| o.checked_add(bytes).is_some_and(|e| e <= dev.size()))
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "partition entry array at LBA {} is outside the disk",
                h.entries_lba
            ))
        })?;
    let mut arr = vec![0u8; bytes as usize];
    dev.read_at(&mut arr, off)?;
    let crc = crc32fast::hash(&arr);
    if crc != h.entries_crc {
        return Err(Error::Corrupt(format!(
            "partition entry array CRC {:08x} does not match its contents ({crc:08x})",
            h.entries_crc
        )));
    }
    let disk_sectors = dev.size() / ss;
    let mut t = PartTable {
        kind: TableKind::Gpt,
        sector_size: ss as u32,
        disk_guid: Some(h.disk_guid),
        mbr_signature: None,
        used_backup: backup,
        partitions: Vec::new(),
        warnings: Vec::new(),
    };
    if backup {
        t.warnings
            .push("primary GPT header is invalid; the backup header was used".to_string());
    }
    for (i, e) in arr
        .chunks_exact(h.entry_size as usize)
        .take(MAX_ENTRIES as usize)
        .enumerate()
    {
        let mut ty = [0u8; 16];
        ty.copy_from_slice(&e[0..16]);
        let ty = Guid(ty);
        if ty.is_zero() {
            continue;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&e[16..32]);
        let (first, last) = (le64(e, 32), le64(e, 40));
        let number = i as u32 + 1;
        // The kernel skips entries that end past the disk; an inverted range is nonsense.
        if first > last || last >= disk_sectors {
            t.warnings.push(format!(
                "partition {number}: LBAs {first}..{last} are not inside the disk ({disk_sectors} sectors)"
            ));
            continue;
        }
        let units: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        let name = String::from_utf16_lossy(&units);
        let start = first * ss;
        let size = (last - first + 1) * ss;
        t.partitions.push(Partition {
            number,
            start,
            size,
            end: start + size - 1,
            mbr_id: None,
            gpt_type: Some(ty),
            gpt_guid: Some(Guid(id)),
            gpt_name: Some(name),
            gpt_attributes: Some(le64(e, 48)),
            bootable: ty.to_string() == ESP_TYPE,
            extended: false,
            logical: false,
        });
    }
    Ok(t)
}
