//! Directory records (ECMA-119 9.1), their dates, and file identifiers as Linux shows them.

use crate::error::{corrupt, Result};
use crate::fs::Timespec;

pub const FLAG_DIR: u8 = 0x02;
pub const FLAG_ASSOCIATED: u8 = 0x04;
pub const FLAG_MULTI_EXTENT: u8 = 0x80;
/// Directory records never cross a 2048-byte sector (the standard's logical sector).
pub const SECTOR: u64 = 2048;

#[derive(Debug, Clone)]
pub struct Record {
    pub len: usize,
    pub ext_attr_len: u8,
    pub extent: u32,
    pub size: u32,
    pub date: [u8; 7],
    pub flags: u8,
    pub name: Vec<u8>,
    /// The system use area (SUSP / Rock Ridge), after the name and its padding byte.
    pub su: Vec<u8>,
}

pub fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

impl Record {
    /// Parses the record at the start of `b` (`b` ends where the record must end: its sector
    /// or its directory). A zero length byte is the caller's business (padding).
    pub fn parse(b: &[u8]) -> Result<Record> {
        let Some(&len) = b.first() else {
            return corrupt("iso9660: directory record past the end of its sector");
        };
        let len = len as usize;
        if len < 34 || len > b.len() {
            return corrupt(format!(
                "iso9660: directory record length {len} (room for {})",
                b.len()
            ));
        }
        let name_len = b[32] as usize;
        if name_len == 0 || 33 + name_len > len {
            return corrupt(format!(
                "iso9660: file identifier length {name_len} in a record of {len} bytes"
            ));
        }
        let mut date = [0u8; 7];
        date.copy_from_slice(&b[18..25]);
        let su_start = (33 + name_len + (1 - name_len % 2)).min(len);
        Ok(Record {
            len,
            ext_attr_len: b[1],
            extent: le32(b, 2),
            size: le32(b, 10),
            date,
            flags: b[25],
            name: b[33..33 + name_len].to_vec(),
            su: b[su_start..len].to_vec(),
        })
    }

    pub fn is_dir(&self) -> bool {
        self.flags & FLAG_DIR != 0
    }

    /// "." (identifier 0x00) or ".." (0x01).
    pub fn is_dot(&self) -> bool {
        self.name.len() == 1 && self.name[0] <= 1
    }

    /// Byte offset of the data, for a logical block size `bs`.
    pub fn data_offset(&self, bs: u64) -> u64 {
        (self.extent as u64 + self.ext_attr_len as u64) * bs
    }
}

/// The kernel's mktime64 (Gauss' algorithm), tolerant of out-of-range fields as it is.
pub fn mktime(year: i64, mon: i64, day: i64, hour: i64, min: i64, sec: i64) -> i64 {
    let (mut mon, mut year) = (mon - 2, year);
    if mon <= 0 {
        mon += 12;
        year -= 1;
    }
    (((year / 4 - year / 100 + year / 400 + 367 * mon / 12 + day) + year * 365 - 719499) * 24
        + hour)
        * 60
        * 60
        + min * 60
        + sec
}

/// A 7-byte recording date: years since 1900, month, day, time, and the offset from GMT in
/// 15-minute units (ignored when out of range, as the kernel does).
pub fn date7(p: &[u8]) -> Timespec {
    let mut t = mktime(
        p[0] as i64 + 1900,
        p[1] as i64,
        p[2] as i64,
        p[3] as i64,
        p[4] as i64,
        p[5] as i64,
    );
    let tz = p[6] as i8 as i64;
    if (-52..=52).contains(&tz) {
        t -= tz * 15 * 60;
    }
    Timespec { sec: t, nsec: 0 }
}

/// A 17-byte date ("YYYYMMDDHHMMSSCC" digits and a GMT offset); None when not digits.
pub fn date17(p: &[u8]) -> Option<Timespec> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = std::str::from_utf8(&p[r]).ok()?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let mut t = mktime(
        num(0..4)?,
        num(4..6)?,
        num(6..8)?,
        num(8..10)?,
        num(10..12)?,
        num(12..14)?,
    );
    let cs = num(14..16)?;
    let tz = p[16] as i8 as i64;
    if (-52..=52).contains(&tz) {
        t -= tz * 15 * 60;
    }
    Some(Timespec {
        sec: t,
        nsec: (cs as u32) * 10_000_000,
    })
}

/// A plain ISO 9660 identifier as Linux shows it with `map=normal`: lower case, the ";1"
/// version (and the '.' before it when the name has no extension) dropped, other ';' as '.'.
pub fn plain_name(id: &[u8]) -> Vec<u8> {
    let len = id.len();
    let mut out = Vec::with_capacity(len);
    for (i, &c) in id.iter().enumerate() {
        if c == 0 {
            break;
        }
        if c == b'.' && i + 3 == len && id[i + 1] == b';' && id[i + 2] == b'1' {
            break;
        }
        if c == b';' && i + 2 == len && id[i + 1] == b'1' {
            break;
        }
        out.push(match c {
            b';' | b'/' => b'.',
            c => c.to_ascii_lowercase(),
        });
    }
    out
}

/// A Joliet identifier (UCS-2 big endian) as UTF-8, ";1" and trailing dots dropped.
pub fn joliet_name(id: &[u8]) -> Vec<u8> {
    let units = id.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
    let mut s: String = char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    if s.len() > 2 && s.ends_with(";1") {
        s.truncate(s.len() - 2);
    }
    while s.len() >= 2 && s.ends_with('.') {
        s.pop();
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_linux_maps_them() {
        assert_eq!(plain_name(b"README.TXT;1"), b"readme.txt");
        assert_eq!(plain_name(b"MAKEFILE.;1"), b"makefile");
        assert_eq!(plain_name(b"DIR"), b"dir");
        assert_eq!(plain_name(b"A;2"), b"a.2");
        let j: Vec<u8> = "Ünï.txt;1"
            .encode_utf16()
            .flat_map(|u| u.to_be_bytes())
            .collect();
        assert_eq!(joliet_name(&j), "Ünï.txt".as_bytes());
    }

    #[test]
    fn dates() {
        // 2021-03-04 05:06:07 at GMT+1 (4 quarter hours).
        assert_eq!(date7(&[121, 3, 4, 5, 6, 7, 4]).sec, 1614834367 - 3600);
        assert_eq!(date17(b"2021030405060750\x00").unwrap().nsec, 500_000_000);
        assert!(date17(b"20210304050607xx\x00").is_none());
    }
}
