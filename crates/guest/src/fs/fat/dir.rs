//! Directory entries: 8.3 short entries, the VFAT long-name entries before them (checked
//! against the short name's checksum), and FAT date/time fields.

use super::bpb::FatKind;
use crate::error::{corrupt, Result};
use crate::fs::Timespec;

pub const ATTR_RO: u8 = 0x01;
pub const ATTR_VOLUME: u8 = 0x08;
pub const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;

/// A short (8.3) directory entry.
#[derive(Debug, Clone)]
pub struct Short {
    pub name: [u8; 11],
    pub attr: u8,
    /// Bits 0x08 (base) and 0x10 (extension): shown in lower case (Windows NT's flag).
    pub case: u8,
    pub ctime_cs: u8,
    pub ctime: u16,
    pub cdate: u16,
    pub adate: u16,
    pub first_cluster: u32,
    pub wtime: u16,
    pub wdate: u16,
    pub size: u32,
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

impl Short {
    pub fn parse(b: &[u8; 32], kind: FatKind) -> Short {
        let mut name = [0u8; 11];
        name.copy_from_slice(&b[..11]);
        let hi = if kind == FatKind::Fat32 {
            le16(b, 20) as u32
        } else {
            0
        };
        Short {
            name,
            attr: b[11],
            case: b[12],
            ctime_cs: b[13],
            ctime: le16(b, 14),
            cdate: le16(b, 16),
            adate: le16(b, 18),
            first_cluster: hi << 16 | le16(b, 26) as u32,
            wtime: le16(b, 22),
            wdate: le16(b, 24),
            size: u32::from_le_bytes([b[28], b[29], b[30], b[31]]),
        }
    }

    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIR != 0
    }

    /// "." or ".." (present in every directory but the root).
    pub fn is_dot(&self) -> bool {
        &self.name == b".          " || &self.name == b"..         "
    }

    /// The 8.3 name as Linux shows it: code page 437 to UTF-8, the NT lower-case bits applied.
    pub fn display_name(&self) -> Vec<u8> {
        let mut base = self.name[..8].to_vec();
        if base[0] == 0x05 {
            base[0] = 0xE5; // 0xE5 is the deleted mark; 0x05 stands for it
        }
        let mut out = String::new();
        let push = |out: &mut String, part: &[u8], lower: bool| {
            let end = part.iter().rposition(|&c| c != b' ').map_or(0, |p| p + 1);
            for &c in &part[..end] {
                let ch = if c < 0x80 {
                    let c = if lower { c.to_ascii_lowercase() } else { c };
                    c as char
                } else {
                    char::from_u32(CP437_HIGH[(c - 0x80) as usize] as u32).unwrap_or('?')
                };
                out.push(ch);
            }
        };
        push(&mut out, &base, self.case & 0x08 != 0);
        if self.name[8..].iter().any(|&c| c != b' ') {
            out.push('.');
            push(&mut out, &self.name[8..], self.case & 0x10 != 0);
        }
        out.into_bytes()
    }
}

/// The checksum of an 8.3 name that its long-name entries carry.
pub fn checksum(name: &[u8; 11]) -> u8 {
    name.iter()
        .fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c))
}

/// One name in a directory listing.
#[derive(Debug, Clone)]
pub struct Named {
    pub name: Vec<u8>,
    /// Device byte offset of the short entry (the inode number is this / 32).
    pub off: u64,
    pub short: Short,
}

/// Long-name entries collected so far, waiting for their short entry.
struct Lfn {
    /// Sequence number expected next (counts down to 1).
    expect: u8,
    csum: u8,
    units: Vec<u16>,
}

/// Parses a directory's slots (device offset, 32 bytes), stopping at the end mark. Deleted
/// entries and volume labels are skipped; "." and ".." are left out. A long name that does
/// not match its short entry is dropped, as the kernel does, and the 8.3 name used.
pub fn parse<'a>(
    slots: impl Iterator<Item = (u64, &'a [u8; 32])>,
    kind: FatKind,
) -> Result<Vec<Named>> {
    let mut out = Vec::new();
    let mut lfn: Option<Lfn> = None;
    for (off, b) in slots {
        match b[0] {
            0 => break,
            0xE5 => {
                lfn = None;
                continue;
            }
            _ => {}
        }
        let attr = b[11];
        if attr & 0x3F == ATTR_LFN {
            let seq = b[0] & 0x1F;
            let csum = b[13];
            let mut chars = [0u16; 13];
            for (i, o) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
                .iter()
                .enumerate()
            {
                chars[i] = le16(b, *o);
            }
            if b[0] & 0x40 != 0 {
                // The last entry of a name comes first; up to 20 entries (255 characters).
                lfn = (1..=20).contains(&seq).then(|| Lfn {
                    expect: seq,
                    csum,
                    units: vec![0xFFFF; seq as usize * 13],
                });
            } else if seq == 0 || !matches!(&lfn, Some(l) if l.expect == seq && l.csum == csum) {
                lfn = None;
            }
            if let Some(l) = &mut lfn {
                let at = (seq as usize - 1) * 13;
                l.units[at..at + 13].copy_from_slice(&chars);
                l.expect -= 1;
            }
            continue;
        }
        let pending = lfn.take();
        if attr & ATTR_VOLUME != 0 {
            continue;
        }
        let short = Short::parse(b, kind);
        if short.is_dot() {
            continue;
        }
        let long = pending
            .filter(|l| l.expect == 0 && l.csum == checksum(&short.name))
            .and_then(|l| decode_long(&l.units));
        let name = match long {
            Some(n) => n,
            None => short.display_name(),
        };
        if !crate::fs::valid_name(&name) {
            return corrupt(format!(
                "vfat: invalid name {:?} in the directory entry at byte {off}",
                String::from_utf8_lossy(&name)
            ));
        }
        out.push(Named { name, off, short });
    }
    Ok(out)
}

/// UCS-2 (UTF-16 as Windows writes it) up to the NUL terminator, as UTF-8; None when the
/// name is unusable (empty, "." or "..", containing '/').
fn decode_long(units: &[u16]) -> Option<Vec<u8>> {
    let end = units.iter().position(|&u| u == 0).unwrap_or(units.len());
    let s: String = char::decode_utf16(units[..end].iter().copied())
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if s.is_empty() || s == "." || s == ".." || s.contains('/') {
        return None;
    }
    Some(s.into_bytes())
}

/// FAT date and time (and 10 ms units) as Unix time, computed the way the kernel's
/// fat_time_fat2unix does (including its tolerance of month 0 and day 0), in UTC.
pub fn to_unix(time: u16, date: u16, cs: u8) -> Timespec {
    // Days before each month in a non-leap year; indexes 13..15 are the kernel's zeros.
    const DAYS: [i64; 16] = [
        0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 0, 0, 0,
    ];
    const DAYS_DELTA: i64 = 365 * 10 + 2; // 1970-01-01 to 1980-01-01
    const YEAR_2100: i64 = 120;
    let year = (date >> 9) as i64;
    let month = (((date >> 5) & 0xF) as usize).max(1);
    let day = ((date & 0x1F) as i64).max(1) - 1;
    let mut leap = (year + 3) / 4;
    if year > YEAR_2100 {
        leap -= 1;
    }
    if (year & 3) == 0 && year != YEAR_2100 && month > 2 {
        leap += 1;
    }
    let days = year * 365 + leap + DAYS[month] + day + DAYS_DELTA;
    let secs = ((time >> 11) as i64) * 3600
        + (((time >> 5) & 0x3F) as i64) * 60
        + ((time & 0x1F) as i64) * 2;
    let mut sec = days * 86400 + secs;
    let mut nsec = 0;
    if cs != 0 {
        sec += cs as i64 / 100;
        nsec = (cs as u32 % 100) * 10_000_000;
    }
    Timespec { sec, nsec }
}

/// Code page 437 (the kernel's default `codepage=437`) bytes 0x80..=0xFF as Unicode.
const CP437_HIGH: [u16; 128] = [
    0xc7, 0xfc, 0xe9, 0xe2, 0xe4, 0xe0, 0xe5, 0xe7, 0xea, 0xeb, 0xe8, 0xef, 0xee, 0xec, 0xc4, 0xc5,
    0xc9, 0xe6, 0xc6, 0xf4, 0xf6, 0xf2, 0xfb, 0xf9, 0xff, 0xd6, 0xdc, 0xa2, 0xa3, 0xa5, 0x20a7,
    0x192, 0xe1, 0xed, 0xf3, 0xfa, 0xf1, 0xd1, 0xaa, 0xba, 0xbf, 0x2310, 0xac, 0xbd, 0xbc, 0xa1,
    0xab, 0xbb, 0x2591, 0x2592, 0x2593, 0x2502, 0x2524, 0x2561, 0x2562, 0x2556, 0x2555, 0x2563,
    0x2551, 0x2557, 0x255d, 0x255c, 0x255b, 0x2510, 0x2514, 0x2534, 0x252c, 0x251c, 0x2500, 0x253c,
    0x255e, 0x255f, 0x255a, 0x2554, 0x2569, 0x2566, 0x2560, 0x2550, 0x256c, 0x2567, 0x2568, 0x2564,
    0x2565, 0x2559, 0x2558, 0x2552, 0x2553, 0x256b, 0x256a, 0x2518, 0x250c, 0x2588, 0x2584, 0x258c,
    0x2590, 0x2580, 0x3b1, 0xdf, 0x393, 0x3c0, 0x3a3, 0x3c3, 0xb5, 0x3c4, 0x3a6, 0x398, 0x3a9,
    0x3b4, 0x221e, 0x3c6, 0x3b5, 0x2229, 0x2261, 0xb1, 0x2265, 0x2264, 0x2320, 0x2321, 0xf7,
    0x2248, 0xb0, 0x2219, 0xb7, 0x221a, 0x207f, 0xb2, 0x25a0, 0xa0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_the_kernel_computes_them() {
        // 2021-03-04 05:06:08 -> 1614834368
        let date = (41 << 9) | (3 << 5) | 4;
        let time = (5 << 11) | (6 << 5) | 4;
        assert_eq!(to_unix(time, date, 0).sec, 1614834368);
        assert_eq!(to_unix(0, 0, 0).sec, 315532800);
        let t = to_unix(time, date, 155);
        assert_eq!((t.sec, t.nsec), (1614834369, 550_000_000));
    }

    fn lfn_slot(ord: u8, csum: u8, text: &str) -> [u8; 32] {
        let mut b = [0xFFu8; 32];
        b[0] = ord;
        b[11] = ATTR_LFN;
        b[12] = 0;
        b[13] = csum;
        b[26] = 0;
        b[27] = 0;
        let mut units: Vec<u16> = text.encode_utf16().collect();
        units.push(0);
        for (i, o) in [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30]
            .iter()
            .enumerate()
        {
            if let Some(u) = units.get(i) {
                b[*o..*o + 2].copy_from_slice(&u.to_le_bytes());
            }
        }
        b
    }

    fn short_slot(name: &[u8; 11]) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..11].copy_from_slice(name);
        b[11] = 0x20;
        b
    }

    #[test]
    fn long_names_checked_and_broken_sequences_dropped() {
        let n = *b"LONGNA~1TXT";
        let c = checksum(&n);
        let parse_names = |slots: &[[u8; 32]]| -> Vec<Vec<u8>> {
            parse(
                slots.iter().enumerate().map(|(i, b)| (i as u64 * 32, b)),
                FatKind::Fat16,
            )
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect()
        };
        let good = [lfn_slot(0x41, c, "Long name.txt"), short_slot(&n)];
        assert_eq!(parse_names(&good), [b"Long name.txt".to_vec()]);
        // Wrong checksum: the 8.3 name.
        let bad = [lfn_slot(0x41, c ^ 1, "Long name.txt"), short_slot(&n)];
        assert_eq!(parse_names(&bad), [b"LONGNA~1.TXT".to_vec()]);
        // A sequence number 0 after the last part (once a panic: index underflow).
        let zero = [
            lfn_slot(0x41, c, "x"),
            lfn_slot(0x20, c, "y"),
            short_slot(&n),
        ];
        assert_eq!(parse_names(&zero), [b"LONGNA~1.TXT".to_vec()]);
    }

    #[test]
    fn checksum_of_a_short_name() {
        // The checksum Windows and mtools store for "README  TXT".
        let n = *b"README  TXT";
        let mut s = 0u8;
        for c in n {
            s = (if s & 1 != 0 { 0x80u8 } else { 0 })
                .wrapping_add(s >> 1)
                .wrapping_add(c);
        }
        assert_eq!(checksum(&n), s);
    }
}
