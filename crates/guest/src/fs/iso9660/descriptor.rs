//! The volume descriptor set (ECMA-119 8): the primary descriptor, a Joliet supplementary
//! descriptor if any, up to the set terminator, and the label and UUID blkid derives.

use crate::dev::BlockDev;
use crate::error::{corrupt, Result};

/// Descriptors scanned at most (the kernel stops at sector 100 too).
const LAST_SECTOR: u64 = 100;

pub struct Descriptors {
    pub primary: Box<[u8; 2048]>,
    /// The Joliet supplementary descriptor (escape sequence %/@, %/C or %/E).
    pub joliet: Option<Box<[u8; 2048]>>,
}

impl Descriptors {
    pub fn read(dev: &dyn BlockDev) -> Result<Descriptors> {
        let mut primary = None;
        let mut joliet = None;
        for s in 16..LAST_SECTOR {
            let off = s * 2048;
            if off + 2048 > dev.size() {
                break;
            }
            let mut b = Box::new([0u8; 2048]);
            dev.read_at(&mut b[..], off)?;
            if &b[1..6] != b"CD001" {
                continue; // as the kernel: skip what is not recognized
            }
            match b[0] {
                1 if primary.is_none() => primary = Some(b),
                2 if joliet.is_none()
                    && b[88] == b'%'
                    && b[89] == b'/'
                    && matches!(b[90], b'@' | b'C' | b'E') =>
                {
                    joliet = Some(b)
                }
                255 => break,
                _ => {}
            }
        }
        let Some(primary) = primary else {
            return corrupt("iso9660: no primary volume descriptor");
        };
        Ok(Descriptors { primary, joliet })
    }

    /// Logical block size (512, 1024 or 2048, as the kernel accepts).
    pub fn block_size(&self) -> Result<u64> {
        let bs = u16::from_le_bytes([self.primary[128], self.primary[129]]) as u64;
        if !matches!(bs, 512 | 1024 | 2048) {
            return corrupt(format!("iso9660: logical block size {bs}"));
        }
        Ok(bs)
    }

    /// Volume space size in logical blocks.
    pub fn volume_blocks(&self) -> u64 {
        super::record::le32(&self.primary[..], 80) as u64
    }

    /// The volume identifier as blkid shows it: the Joliet one merged over the primary one
    /// where they agree (Joliet keeps case and non-ASCII characters, but only has room for
    /// 16), trailing spaces trimmed; None when empty.
    pub fn label(&self) -> Option<String> {
        let ascii = &self.primary[40..72];
        let mut out = String::new();
        let mut a = 0;
        if let Some(j) = &self.joliet {
            let units: Vec<u16> = j[40..72]
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            for ch in char::decode_utf16(units.iter().copied()) {
                let Ok(ch) = ch else { break };
                let Some(&ac) = ascii.get(a) else { break };
                let agrees = (ac == b'_' && !ch.is_ascii())
                    || (ch.is_ascii() && (ch as u8).eq_ignore_ascii_case(&ac));
                out.push(if agrees { ch } else { ac as char });
                a += 1;
            }
        }
        out.extend(ascii[a..].iter().map(|&c| c as char));
        let t = out.trim_end_matches([' ', '\0']);
        (!t.is_empty()).then(|| t.to_string())
    }

    /// blkid's UUID: the modification date (or, when unset, the creation date) as
    /// "YYYY-MM-DD-HH-MM-SS-CC".
    pub fn uuid(&self) -> Option<String> {
        let fmt = |d: &[u8]| -> Option<String> {
            if d.iter().all(|&c| c == b'0' || c == 0) || !d.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let s = |r: std::ops::Range<usize>| String::from_utf8_lossy(&d[r]).into_owned();
            Some(format!(
                "{}-{}-{}-{}-{}-{}-{}",
                s(0..4),
                s(4..6),
                s(6..8),
                s(8..10),
                s(10..12),
                s(12..14),
                s(14..16)
            ))
        };
        fmt(&self.primary[830..846]).or_else(|| fmt(&self.primary[813..829]))
    }
}
