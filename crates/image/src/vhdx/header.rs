//! The header section (MS-VHDX 2.2): file identifier, the two headers with their sequence
//! numbers and CRC-32C checksums, and the region table.
//!
//! All integers are little-endian; GUIDs are kept as the 16 bytes stored on disk (Microsoft
//! layout: the first three fields little-endian).

use crate::error::{corrupt, Error, Result};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
/// Each structure of the header section lives in its own 64 KiB block.
pub const BLOCK_64K: u64 = 64 * KIB;
pub const HEADER1_OFFSET: u64 = BLOCK_64K;
pub const HEADER2_OFFSET: u64 = 2 * BLOCK_64K;
pub const REGION1_OFFSET: u64 = 3 * BLOCK_64K;
pub const REGION2_OFFSET: u64 = 4 * BLOCK_64K;
/// The header section is 1 MiB (the log starts after it).
pub const HEADER_SECTION_END: u64 = MIB;
/// End of the file identifier, headers and region tables: what nothing else may overlap.
pub const FIXED_END: u64 = REGION2_OFFSET + BLOCK_64K;
/// The checksum of a header covers its whole 4 KiB.
pub const HEADER_SIZE: usize = 4096;
/// Bytes of a header that carry fields (the rest of the 4 KiB is reserved).
pub const HEADER_FIELDS: usize = 80;
pub const FILE_SIGNATURE: &[u8; 8] = b"vhdxfile";
const HEADER_SIGNATURE: &[u8; 4] = b"head";
const REGION_SIGNATURE: &[u8; 4] = b"regi";
/// MS-VHDX: at most 2047 region table entries.
const MAX_REGIONS: u32 = 2047;

/// A GUID as stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// From the textual fields of a Microsoft GUID.
    pub const fn ms(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// A random (version 4) GUID, as QEMU generates them.
    pub fn random() -> Guid {
        let mut b = [0u8; 16];
        random_bytes(&mut b);
        // Version 4 in the high nibble of Data3 (stored little-endian), RFC 4122 variant.
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }

    pub fn from_slice(b: &[u8]) -> Guid {
        let mut g = [0u8; 16];
        g.copy_from_slice(&b[..16]);
        Guid(g)
    }

    /// "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (braces optional, any case).
    pub fn parse_text(s: &str) -> Option<Guid> {
        let s = s.trim();
        let s = s.strip_prefix('{').unwrap_or(s);
        let s = s.strip_suffix('}').unwrap_or(s);
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 5
            || [8, 4, 4, 4, 12] != parts.iter().map(|p| p.len()).collect::<Vec<_>>()[..]
        {
            return None;
        }
        let d1 = u32::from_str_radix(parts[0], 16).ok()?;
        let d2 = u16::from_str_radix(parts[1], 16).ok()?;
        let d3 = u16::from_str_radix(parts[2], 16).ok()?;
        let rest = format!("{}{}", parts[3], parts[4]);
        let mut d4 = [0u8; 8];
        for (i, b) in d4.iter_mut().enumerate() {
            *b = u8::from_str_radix(rest.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Guid::ms(d1, d2, d3, d4))
    }

    /// The lowercase braced form the parent locator uses.
    pub fn to_text(&self) -> String {
        let b = &self.0;
        format!(
            "{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// Fills `buf` from the kernel's random source.
pub fn random_bytes(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which we own.
        let r = unsafe {
            libc::getrandom(
                buf[done..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - done,
                0,
            )
        };
        if r > 0 {
            done += r as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    if done < buf.len() {
        // No getrandom (very old kernels): GUIDs need uniqueness, not secrecy.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut x = (t as u64) ^ ((std::process::id() as u64) << 32) ^ (buf.as_ptr() as u64);
        for b in &mut buf[done..] {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (x >> 33) as u8;
        }
    }
}

pub fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
pub fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
pub fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
pub fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// CRC-32C of `buf`, the 4-byte checksum field at `at` counted as zero.
pub fn checksum(buf: &[u8], at: usize) -> u32 {
    let c = crc32c::crc32c(&buf[..at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &buf[at + 4..])
}

/// Stores the checksum of `buf` in its field at `at`.
pub fn seal(buf: &mut [u8], at: usize) {
    let c = checksum(buf, at);
    put32(buf, at, c);
}

/// One of the two headers (MS-VHDX 2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub seq: u64,
    pub file_write_guid: Guid,
    pub data_write_guid: Guid,
    /// Zero when the log is empty.
    pub log_guid: Guid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    /// A header block (its first 4 KiB) as QEMU accepts it: valid checksum, signature "head",
    /// version 1. Anything else is not a header.
    pub fn parse(b: &[u8]) -> Option<Header> {
        if b.len() < HEADER_SIZE || &b[..4] != HEADER_SIGNATURE {
            return None;
        }
        if checksum(&b[..HEADER_SIZE], 4) != le32(b, 4) {
            return None;
        }
        let h = Header {
            seq: le64(b, 8),
            file_write_guid: Guid::from_slice(&b[16..]),
            data_write_guid: Guid::from_slice(&b[32..]),
            log_guid: Guid::from_slice(&b[48..]),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        };
        (h.version == 1).then_some(h)
    }

    /// The header written over `block` (the 4 KiB found on disk, whose reserved bytes count
    /// in the checksum), checksum included.
    pub fn serialize(&self, block: &[u8]) -> Vec<u8> {
        let mut b = block[..HEADER_SIZE].to_vec();
        b[..HEADER_FIELDS].fill(0);
        b[..4].copy_from_slice(HEADER_SIGNATURE);
        put64(&mut b, 8, self.seq);
        b[16..32].copy_from_slice(&self.file_write_guid.0);
        b[32..48].copy_from_slice(&self.data_write_guid.0);
        b[48..64].copy_from_slice(&self.log_guid.0);
        put16(&mut b, 64, self.log_version);
        put16(&mut b, 66, self.version);
        put32(&mut b, 68, self.log_length);
        put64(&mut b, 72, self.log_offset);
        seal(&mut b, 4);
        b
    }
}

/// Which header is current, by QEMU's rules: the valid one, or of two valid ones the one with
/// the higher sequence number; equal numbers only if the headers are identical (Disk2VHD
/// writes them so), then the first.
pub fn current_header(h1: Option<&Header>, h2: Option<&Header>) -> Result<usize> {
    match (h1, h2) {
        (Some(_), None) => Ok(0),
        (None, Some(_)) => Ok(1),
        (None, None) => corrupt("No valid VHDX header found"),
        (Some(a), Some(b)) => {
            if a.seq > b.seq {
                Ok(0)
            } else if b.seq > a.seq {
                Ok(1)
            } else if a == b {
                Ok(0)
            } else {
                corrupt("No valid VHDX header found")
            }
        }
    }
}

/// Known region GUIDs (MS-VHDX 2.2.3.2).
pub const BAT_GUID: Guid = Guid::ms(
    0x2dc27766,
    0xf623,
    0x4200,
    [0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08],
);
pub const METADATA_GUID: Guid = Guid::ms(
    0x8b7ca206,
    0x4790,
    0x4b9a,
    [0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e],
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionEntry {
    pub guid: Guid,
    pub file_offset: u64,
    pub length: u32,
    pub required: bool,
}

/// A region table block (64 KiB): checksum, signature, entries.
pub fn parse_region_table(b: &[u8]) -> Result<Vec<RegionEntry>> {
    let bad = |m: &str| Error::Corrupt(format!("VHDX region table: {m}"));
    if b.len() < BLOCK_64K as usize || checksum(&b[..BLOCK_64K as usize], 4) != le32(b, 4) {
        return Err(bad("checksum mismatch"));
    }
    if &b[..4] != REGION_SIGNATURE {
        return Err(bad("bad signature"));
    }
    let n = le32(b, 8);
    if n > MAX_REGIONS {
        return Err(bad(&format!("{n} entries (at most {MAX_REGIONS})")));
    }
    Ok((0..n as usize)
        .map(|i| {
            let e = &b[16 + 32 * i..16 + 32 * (i + 1)];
            RegionEntry {
                guid: Guid::from_slice(e),
                file_offset: le64(e, 16),
                length: le32(e, 24),
                required: le32(e, 28) & 1 != 0,
            }
        })
        .collect())
}

/// A region table block holding `entries`, as QEMU writes it (flags left clear).
pub fn region_table(entries: &[RegionEntry]) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK_64K as usize];
    b[..4].copy_from_slice(REGION_SIGNATURE);
    put32(&mut b, 8, entries.len() as u32);
    for (i, r) in entries.iter().enumerate() {
        let e = &mut b[16 + 32 * i..16 + 32 * (i + 1)];
        e[..16].copy_from_slice(&r.guid.0);
        put64(e, 16, r.file_offset);
        put32(e, 24, r.length);
        put32(e, 28, r.required as u32);
    }
    seal(&mut b, 4);
    b
}

/// File ranges that must not overlap (QEMU's region list): header section, log, regions.
#[derive(Debug, Clone, Default)]
pub struct Regions(Vec<(u64, u64)>);

impl Regions {
    /// Whether [start, start+len) overlaps a registered range (QEMU's test, with the
    /// message it prints). Ranges that wrap around are refused.
    pub fn check(&self, start: u64, len: u64) -> Result<()> {
        let Some(end) = start.checked_add(len) else {
            return corrupt(format!(
                "VHDX region at {start} of length {len} is out of range"
            ));
        };
        // Latest first, as QEMU's list (so the same region is named).
        for &(s, e) in self.0.iter().rev() {
            if !(start >= e || end <= s) {
                // QEMU prints the last number with "%.lu", which shows 0 as nothing.
                let e_txt = if e == 0 { String::new() } else { e.to_string() };
                return corrupt(format!(
                    "VHDX region {start}-{end} overlaps with region {s}-{e_txt}"
                ));
            }
        }
        Ok(())
    }

    pub fn register(&mut self, start: u64, len: u64) {
        self.0.push((start, start.saturating_add(len)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_round_trip() {
        let g = Guid::parse_text("{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}").unwrap();
        assert_eq!(g.to_text(), "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}");
        assert_eq!(&g.0[..4], &[0xc3, 0x0e, 0xed, 0x83]);
        assert_eq!(
            Guid::parse_text("83ED0EC3-24C8-49A6-A959-5E4BF1288BFB"),
            Some(g)
        );
        assert_eq!(Guid::parse_text("{83ed0ec3-24c8-49a6-a959}"), None);
        assert_eq!(BAT_GUID.0[..4], [0x66, 0x77, 0xc2, 0x2d]);
    }

    #[test]
    fn header_round_trip_and_checksum() {
        let h = Header {
            seq: 7,
            file_write_guid: Guid::random(),
            data_write_guid: Guid::random(),
            log_guid: Guid::ZERO,
            log_version: 0,
            version: 1,
            log_length: MIB as u32,
            log_offset: MIB,
        };
        let mut b = h.serialize(&[0u8; HEADER_SIZE]);
        assert_eq!(Header::parse(&b), Some(h.clone()));
        b[100] ^= 1; // reserved bytes are covered by the checksum
        assert_eq!(Header::parse(&b), None);
        assert_eq!(current_header(Some(&h), None).unwrap(), 0);
        let mut h2 = h.clone();
        h2.seq = 8;
        assert_eq!(current_header(Some(&h), Some(&h2)).unwrap(), 1);
        h2.seq = 7;
        h2.log_length = 2 * MIB as u32;
        assert!(current_header(Some(&h), Some(&h2)).is_err());
    }
}
