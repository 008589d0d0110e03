//! blkid-like identification of what a device holds: the kind, label and UUID that
//! `blkid -p -o export` prints as TYPE, LABEL and UUID (and libguestfs' vfs-type, vfs-label,
//! vfs-uuid return). Each prober follows libblkid's checks (util-linux
//! libblkid/src/superblocks/*.c) closely enough to give the same answer on real images.
//!
//! Written by hand: the Rust blkid crates bind libblkid (C, reads the device itself), and
//! this must work on any `BlockDev` and treat every byte as hostile.

use crate::dev::BlockDev;
use crate::error::Result;
use crate::fs::FsInfo;
use crate::part::{le16, le32, le64};

/// Reads `len` bytes at `off`, or None when they do not lie inside the device.
fn read(dev: &dyn BlockDev, off: u64, len: usize) -> Result<Option<Vec<u8>>> {
    match off.checked_add(len as u64) {
        Some(end) if end <= dev.size() => {
            let mut b = vec![0u8; len];
            dev.read_at(&mut b, off)?;
            Ok(Some(b))
        }
        _ => Ok(None),
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A label as blkid stores it: the bytes up to the first NUL, trailing whitespace removed;
/// None when empty.
fn label(b: &[u8]) -> Option<String> {
    let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end();
    (!s.is_empty()).then(|| s.to_string())
}

/// A 16-byte UUID, lowercase and dashed; None when all zeros (blkid omits those).
fn uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&c| c == 0) {
        return None;
    }
    let h: Vec<String> = b.iter().map(|c| format!("{c:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

fn info(kind: &str, label: Option<String>, uuid: Option<String>) -> Option<FsInfo> {
    Some(FsInfo {
        kind: kind.to_string(),
        label,
        uuid,
    })
}

/// Identifies the content of `dev`. Kind "unknown" (no label, no UUID) when nothing is
/// recognised; an error only when the device cannot be read.
pub fn probe(dev: &dyn BlockDev) -> Result<FsInfo> {
    type Prober = fn(&dyn BlockDev) -> Result<Option<FsInfo>>;
    // libblkid's order: containers first, then filesystems.
    let probers: [Prober; 9] = [luks, lvm2, vfat, ext, xfs, iso9660, ntfs, btrfs, swap];
    for p in probers {
        if let Some(i) = p(dev)? {
            return Ok(i);
        }
    }
    Ok(FsInfo {
        kind: "unknown".to_string(),
        label: None,
        uuid: None,
    })
}

fn luks(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(h) = read(dev, 0, 512)? else {
        return Ok(None);
    };
    if &h[0..6] != b"LUKS\xba\xbe" {
        return Ok(None);
    }
    let version = be16(&h, 6);
    let uuid = label(&h[168..208]);
    Ok(match version {
        1 => info("crypto_LUKS", None, uuid),
        2 => info("crypto_LUKS", label(&h[24..72]), uuid),
        _ => None,
    })
}

fn lvm2(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    // A label with a bad pv_header is still an LVM2 member for blkid (it only checks the
    // label header): fall back to no UUID then.
    Ok(match crate::lvm::label::read(dev) {
        Ok(Some(l)) => info("LVM2_member", None, Some(l.uuid_dashed())),
        Ok(None) => None,
        Err(crate::error::Error::Corrupt(_)) => info("LVM2_member", None, None),
        Err(e) => return Err(e),
    })
}

/// FAT boot sector checks (libblkid's fat_valid_superblock), also used by the MBR reader to
/// tell a whole-disk FAT filesystem from a partition table.
pub fn is_fat_boot_sector(b: &[u8]) -> bool {
    if b.len() < 512 {
        return false;
    }
    let strong = &b[0x52..0x57] == b"MSWIN"
        || &b[0x52..0x5a] == b"FAT32   "
        || &b[0x36..0x3b] == b"MSDOS"
        || &b[0x36..0x3e] == b"FAT16   "
        || &b[0x36..0x3e] == b"FAT12   "
        || &b[0x36..0x3e] == b"FAT     ";
    let weak = b[0] == 0xeb || b[0] == 0xe9 || (b[0x1fe] == 0x55 && b[0x1ff] == 0xaa);
    if !strong && !weak {
        return false;
    }
    if !strong {
        // OS/2 and DFSee leave FAT-like pseudo boot sectors on JFS and HPFS.
        if &b[0x36..0x3e] == b"JFS     " || &b[0x36..0x3e] == b"HPFS    " {
            return false;
        }
    }
    let sector_size = le16(b, 0x0b);
    let cluster = b[0x0d];
    let reserved = le16(b, 0x0e);
    let fats = b[0x10];
    let media = b[0x15];
    if fats == 0 || reserved == 0 || !(media >= 0xf8 || media == 0xf0) {
        return false;
    }
    if cluster == 0 || !cluster.is_power_of_two() {
        return false;
    }
    if !matches!(sector_size, 512 | 1024 | 2048 | 4096) {
        return false;
    }
    let fat_length = le16(b, 0x16) as u32;
    let fat32_length = le32(b, 0x24);
    if fat_length == 0 && fat32_length == 0 {
        return false;
    }
    le16(b, 0x13) != 0 || le32(b, 0x20) != 0
}

/// NTFS boot sector checks (libblkid's ntfs prober).
pub fn is_ntfs_boot_sector(b: &[u8]) -> bool {
    if b.len() < 512 || &b[3..11] != b"NTFS    " {
        return false;
    }
    let sector_size = le16(b, 0x0b);
    if !(256..=4096).contains(&sector_size) || !sector_size.is_power_of_two() {
        return false;
    }
    let spc = b[0x0d];
    let valid_spc = matches!(spc, 1 | 2 | 4 | 8 | 16 | 32 | 64 | 128) || (244..=255).contains(&spc);
    // Fields FAT has and NTFS must leave zero.
    valid_spc
        && le16(b, 0x0e) == 0
        && b[0x10] == 0
        && le16(b, 0x11) == 0
        && le16(b, 0x13) == 0
        && le16(b, 0x16) == 0
        && le32(b, 0x20) == 0
}

/// Most root-directory clusters a FAT32 label search reads (libblkid stops at 100 too).
const FAT_MAX_CLUSTERS: usize = 100;
/// Most root-directory entries a FAT12/16 label search reads.
const FAT_MAX_ROOT_ENTRIES: u64 = 4096;

fn vfat(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(b) = read(dev, 0, 512)? else {
        return Ok(None);
    };
    if !is_fat_boot_sector(&b) {
        return Ok(None);
    }
    let ss = le16(&b, 0x0b) as u64;
    let reserved = le16(&b, 0x0e) as u64;
    let fats = b[0x10] as u64;
    let fat_length = le16(&b, 0x16) as u64;
    let vol_label;
    let serial;
    if fat_length != 0 {
        // FAT12/16: a fixed root directory after the FATs.
        let root = (reserved + fats * fat_length) * ss;
        let entries = (le16(&b, 0x11) as u64).min(FAT_MAX_ROOT_ENTRIES);
        vol_label = match read(dev, root, (entries * 32) as usize)? {
            Some(dir) => fat_label(&dir).0,
            None => None,
        };
        serial = [b[0x27], b[0x28], b[0x29], b[0x2a]];
    } else {
        // FAT32: the root directory is a cluster chain.
        let fat32_length = le32(&b, 0x24) as u64;
        let cluster_size = b[0x0d] as u64 * ss;
        let fat_start = reserved * ss;
        let data_start = (reserved + fats * fat32_length) * ss;
        let mut cluster = le32(&b, 0x2c) as u64;
        let mut found = None;
        for _ in 0..FAT_MAX_CLUSTERS {
            if !(2..0x0fff_fff8).contains(&cluster) {
                break;
            }
            let off = data_start + (cluster - 2) * cluster_size;
            let Some(dir) = read(dev, off, cluster_size as usize)? else {
                break;
            };
            let (l, end) = fat_label(&dir);
            if l.is_some() || end {
                found = l;
                break;
            }
            match read(dev, fat_start + cluster * 4, 4)? {
                Some(e) => cluster = (le32(&e, 0) & 0x0fff_ffff) as u64,
                None => break,
            }
        }
        vol_label = found;
        serial = [b[0x43], b[0x44], b[0x45], b[0x46]];
    }
    let uuid = format!(
        "{:02X}{:02X}-{:02X}{:02X}",
        serial[3], serial[2], serial[1], serial[0]
    );
    Ok(info("vfat", vol_label, Some(uuid)))
}

/// The volume label entry of a directory block, and whether the end of the directory was
/// reached in it.
fn fat_label(dir: &[u8]) -> (Option<String>, bool) {
    for e in dir.chunks_exact(32) {
        match e[0] {
            0x00 => return (None, true),
            0xe5 => continue,
            _ => {}
        }
        let attr = e[11];
        if attr == 0x0f {
            continue; // long file name entry
        }
        if attr & (0x08 | 0x10) == 0x08 {
            let mut name = [0u8; 11];
            name.copy_from_slice(&e[..11]);
            if name[0] == 0x05 {
                name[0] = 0xe5;
            }
            return (label(&name), true);
        }
    }
    (None, false)
}

const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
const EXT_INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const EXT_RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const EXT2_RO_COMPAT_SUPP: u32 = 0x1 | 0x2 | 0x4;
const EXT2_INCOMPAT_SUPP: u32 = 0x2 | 0x10;
const EXT3_RO_COMPAT_SUPP: u32 = 0x1 | 0x2 | 0x4;
const EXT3_INCOMPAT_SUPP: u32 = 0x2 | 0x4 | 0x10;
const EXT_FLAGS_TEST_FILESYS: u32 = 0x4;

/// The ext2/3/4 superblock, when valid.
fn ext_super(dev: &dyn BlockDev) -> Result<Option<Vec<u8>>> {
    let Some(sb) = read(dev, 1024, 1024)? else {
        return Ok(None);
    };
    if le16(&sb, 0x38) != 0xef53 {
        return Ok(None);
    }
    if le32(&sb, 0x64) & EXT_RO_COMPAT_METADATA_CSUM != 0 {
        // ext4's superblock checksum: crc32c from ~0 without the final inversion.
        let csum = !crc32c::crc32c(&sb[..0x3fc]);
        if csum != le32(&sb, 0x3fc) {
            return Ok(None);
        }
    }
    Ok(Some(sb))
}

/// ext2, ext3, ext4 (or ext4dev, or an external journal "jbd"), told apart by feature flags
/// as libblkid does: ext2 has no journal and only ext2 features; ext3 has a journal and
/// only ext3 features; ext4 is the rest.
fn ext(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(sb) = ext_super(dev)? else {
        return Ok(None);
    };
    let compat = le32(&sb, 0x5c);
    let incompat = le32(&sb, 0x60);
    let ro_compat = le32(&sb, 0x64);
    let flags = le32(&sb, 0x160);
    let kind = if incompat & EXT_INCOMPAT_JOURNAL_DEV != 0 {
        "jbd"
    } else if compat & EXT_COMPAT_HAS_JOURNAL == 0
        && ro_compat & !EXT2_RO_COMPAT_SUPP == 0
        && incompat & !EXT2_INCOMPAT_SUPP == 0
    {
        "ext2"
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0
        && ro_compat & !EXT3_RO_COMPAT_SUPP == 0
        && incompat & !EXT3_INCOMPAT_SUPP == 0
    {
        "ext3"
    } else if ro_compat & !EXT3_RO_COMPAT_SUPP == 0 && incompat & !EXT3_INCOMPAT_SUPP == 0 {
        // No journal but ext3-only features is ext2 above; this cannot be ext4 either.
        return Ok(None);
    } else if flags & EXT_FLAGS_TEST_FILESYS != 0 {
        "ext4dev"
    } else {
        "ext4"
    };
    Ok(info(kind, label(&sb[0x78..0x88]), uuid(&sb[0x68..0x78])))
}

fn xfs(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(sb) = read(dev, 0, 512)? else {
        return Ok(None);
    };
    if &sb[0..4] != b"XFSB" {
        return Ok(None);
    }
    let blocksize = be32(&sb, 4);
    let agcount = be32(&sb, 88);
    let sectsize = be16(&sb, 102);
    let inodesize = be16(&sb, 104);
    let ok = (512..=65536).contains(&blocksize)
        && blocksize.is_power_of_two()
        && (512..=32768).contains(&sectsize)
        && sectsize.is_power_of_two()
        && (256..=2048).contains(&inodesize)
        && inodesize.is_power_of_two()
        && agcount > 0;
    if !ok {
        return Ok(None);
    }
    Ok(info("xfs", label(&sb[108..120]), uuid(&sb[32..48])))
}

/// Descriptors looked at after the primary (ISO 9660 sets end with a terminator).
const ISO_MAX_DESCRIPTORS: u64 = 64;

fn iso9660(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(pvd) = read(dev, 32768, 2048)? else {
        return Ok(None);
    };
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Ok(None);
    }
    let mut joliet: Option<Vec<u8>> = None;
    for i in 1..ISO_MAX_DESCRIPTORS {
        let Some(vd) = read(dev, 32768 + i * 2048, 2048)? else {
            break;
        };
        if &vd[1..6] != b"CD001" || vd[0] == 255 {
            break;
        }
        if vd[0] == 2 && vd[88] == b'%' && vd[89] == b'/' && matches!(vd[90], b'@' | b'C' | b'E') {
            joliet = Some(vd[40..72].to_vec());
            break;
        }
    }
    let ascii = &pvd[40..72];
    let lbl = match &joliet {
        Some(j) => Some(merge_joliet(j, ascii).unwrap_or_else(|| utf16be(j))),
        None => label(ascii),
    }
    .map(|s| s.trim_end().to_string())
    .filter(|s| !s.is_empty());
    // blkid derives the UUID from the modification date, else the creation date.
    let uuid = iso_date(&pvd[830..847]).or_else(|| iso_date(&pvd[813..830]));
    Ok(info("iso9660", lbl, uuid))
}

fn utf16be(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// libblkid's merge of the Joliet (UTF-16, 16 characters) and the ISO 9660 (ASCII, 32
/// characters) volume identifiers: the Joliet characters where both agree (the ISO one has
/// '_' for what ASCII cannot hold), then the rest of the ASCII one. None when they disagree.
fn merge_joliet(j: &[u8], ascii: &[u8]) -> Option<String> {
    let mut out: Vec<u16> = Vec::new();
    let mut a = 0;
    for u in j.chunks_exact(2) {
        let (hi, lo) = (u[0], u[1]);
        let c = *ascii.get(a)?;
        if c == b'_' && (hi != 0 || lo >= 0x80) {
            out.push(u16::from_be_bytes([hi, lo]));
        } else if hi == 0 && lo == b'_' {
            out.push(c as u16);
        } else if hi == 0 && c.eq_ignore_ascii_case(&lo) {
            out.push(if c.is_ascii_uppercase() { lo } else { c } as u16);
        } else {
            return None;
        }
        a += 1;
    }
    out.extend(ascii[a..].iter().map(|&c| c as u16));
    let end = out.iter().position(|&u| u == 0).unwrap_or(out.len());
    Some(String::from_utf16_lossy(&out[..end]))
}

/// "YYYY-MM-DD-HH-MM-SS-CC" from a 17-byte volume descriptor date; None when unset.
fn iso_date(d: &[u8]) -> Option<String> {
    let digits = &d[..16];
    if digits.iter().all(|&c| c == b'0' || c == 0) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let s = std::str::from_utf8(digits).ok()?;
    Some(format!(
        "{}-{}-{}-{}-{}-{}-{}",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[8..10],
        &s[10..12],
        &s[12..14],
        &s[14..16]
    ))
}

/// Largest MFT record accepted.
const NTFS_MAX_RECORD: u64 = 64 << 10;
/// Attributes walked in the $Volume record.
const NTFS_MAX_ATTRS: usize = 64;

fn ntfs(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(b) = read(dev, 0, 512)? else {
        return Ok(None);
    };
    if !is_ntfs_boot_sector(&b) {
        return Ok(None);
    }
    let uuid = Some(format!("{:016X}", le64(&b, 0x48)));
    Ok(info("ntfs", ntfs_label(dev, &b)?, uuid))
}

/// The volume name: the $VOLUME_NAME attribute of MFT record 3 ($Volume).
fn ntfs_label(dev: &dyn BlockDev, b: &[u8]) -> Result<Option<String>> {
    let ss = le16(b, 0x0b) as u64;
    let spc = b[0x0d];
    let spc: u64 = if spc < 0x80 {
        spc as u64
    } else {
        1 << (256 - spc as u32).min(31)
    };
    let cluster = ss * spc;
    let cpr = b[0x40] as i8;
    let rec = if cpr > 0 {
        cluster.saturating_mul(cpr as u64)
    } else {
        1u64.checked_shl(cpr.unsigned_abs() as u32).unwrap_or(0)
    };
    if !(512..=NTFS_MAX_RECORD).contains(&rec) {
        return Ok(None);
    }
    let Some(off) = le64(b, 0x30)
        .checked_mul(cluster)
        .and_then(|m| m.checked_add(3 * rec))
    else {
        return Ok(None);
    };
    let Some(mut r) = read(dev, off, rec as usize)? else {
        return Ok(None);
    };
    if &r[0..4] != b"FILE" {
        return Ok(None);
    }
    // Update sequence fixups: the last two bytes of each sector are kept in the array.
    let usa = le16(&r, 4) as usize;
    let usa_count = le16(&r, 6) as usize;
    if usa_count > 0 && usa + usa_count * 2 <= r.len() {
        for i in 1..usa_count {
            let end = i * ss as usize;
            if end > r.len() {
                break;
            }
            let (a, c) = (r[usa + 2 * i], r[usa + 2 * i + 1]);
            r[end - 2] = a;
            r[end - 1] = c;
        }
    }
    let mut at = le16(&r, 0x14) as usize;
    for _ in 0..NTFS_MAX_ATTRS {
        if at + 24 > r.len() {
            break;
        }
        let ty = le32(&r, at);
        let len = le32(&r, at + 4) as usize;
        if ty == 0xffff_ffff || len < 24 || at + len > r.len() {
            break;
        }
        if ty == 0x60 && r[at + 8] == 0 {
            let vlen = le32(&r, at + 0x10) as usize;
            let voff = le16(&r, at + 0x14) as usize;
            if voff + vlen <= len {
                let v = &r[at + voff..at + voff + vlen];
                let units: Vec<u16> = v
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let s = String::from_utf16_lossy(&units);
                let s = s.trim_end();
                return Ok((!s.is_empty()).then(|| s.to_string()));
            }
            break;
        }
        at += len;
    }
    Ok(None)
}

fn btrfs(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    let Some(sb) = read(dev, 0x10000, 4096)? else {
        return Ok(None);
    };
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return Ok(None);
    }
    Ok(info(
        "btrfs",
        label(&sb[0x12b..0x22b]),
        uuid(&sb[0x20..0x30]),
    ))
}

fn swap(dev: &dyn BlockDev) -> Result<Option<FsInfo>> {
    for ps in [4096u64, 8192, 16384, 32768, 65536] {
        let Some(sig) = read(dev, ps - 10, 10)? else {
            break;
        };
        match &sig[..] {
            b"SWAPSPACE2" => {
                let Some(h) = read(dev, 1024, 44)? else {
                    return Ok(None);
                };
                let v = le32(&h, 0);
                if v != 1 && v.swap_bytes() != 1 {
                    return Ok(None);
                }
                return Ok(info("swap", label(&h[28..44]), uuid(&h[12..28])));
            }
            b"SWAP-SPACE" => return Ok(info("swap", None, None)),
            _ if matches!(&sig[..9], b"S1SUSPEND" | b"S2SUSPEND" | b"ULSUSPEND")
                || &sig[..] == b"LINHIB0001" =>
            {
                return Ok(info("swsuspend", None, None))
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::MemDev;

    #[test]
    fn small_and_empty_devices_are_unknown() {
        for n in [0usize, 1, 511, 512, 4096, 70000] {
            let d = MemDev(vec![0; n]);
            assert_eq!(probe(&d).unwrap().kind, "unknown");
        }
    }

    #[test]
    fn joliet_merge() {
        let j: Vec<u8> = "abc             "
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        let a = b"ABC                             ";
        assert_eq!(merge_joliet(&j, a).unwrap().trim_end(), "abc");
        let a = b"XYZ                             ";
        assert!(merge_joliet(&j, a).is_none());
    }
}
