//! System Use Sharing Protocol entries and the Rock Ridge ones Linux uses: NM (name), PX
//! (mode, links, owner), PN (device number), SL (symlink target), TF (times), CL/PL/RE
//! (relocated deep directories). Continuation areas (CE) are followed at most
//! [`MAX_CONTINUATIONS`] times, each within one logical block, so a CE loop ends.

use super::record::{date17, date7, le32};
use crate::dev::{check_range, BlockDev};
use crate::error::{corrupt, Result};
use crate::fs::Timespec;

/// The kernel's RR_MAX_CE_ENTRIES.
pub const MAX_CONTINUATIONS: usize = 32;
/// Longest name kept (NAME_MAX) and longest symlink target (PATH_MAX).
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Px {
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Rock {
    /// Bytes to skip at the start of every system use area (from SP).
    pub sp: Option<u8>,
    pub name: Option<Vec<u8>>,
    pub px: Option<Px>,
    pub rdev: Option<u64>,
    pub symlink: Option<Vec<u8>>,
    pub mtime: Option<Timespec>,
    pub atime: Option<Timespec>,
    pub ctime: Option<Timespec>,
    /// Child link: this entry stands for the directory relocated to this block.
    pub cl: Option<u32>,
    /// Relocated directory: hidden where it physically is.
    pub re: bool,
}

/// Linux's makedev encoding (glibc's gnu_dev_makedev).
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (ma, mi) = (major as u64, minor as u64);
    ((ma & 0xffff_f000) << 32) | ((ma & 0xfff) << 8) | ((mi & 0xffff_ff00) << 12) | (mi & 0xff)
}

/// State of a symlink being assembled from SL components.
#[derive(Default)]
struct Sl {
    target: Vec<u8>,
}

/// Parses the system use area `su` (already past the SP skip) and its continuations.
/// `bs` is the logical block size CE block numbers are in.
pub fn parse(dev: &dyn BlockDev, bs: u64, su: &[u8]) -> Result<Rock> {
    let mut r = Rock::default();
    let mut sl: Option<Sl> = None;
    let mut area = su.to_vec();
    let mut followed = 0;
    loop {
        let mut ce: Option<(u64, u64)> = None;
        let mut i = 0;
        while i + 4 <= area.len() {
            let len = area[i + 2] as usize;
            if len < 4 || i + len > area.len() {
                break; // the kernel stops at a malformed entry too
            }
            let e = &area[i..i + len];
            i += len;
            match &e[..2] {
                b"SP" if len >= 7 && e[4] == 0xBE && e[5] == 0xEF => r.sp = Some(e[6]),
                b"CE" if len >= 28 => {
                    ce = Some((
                        le32(e, 4) as u64 * bs + le32(e, 12) as u64,
                        le32(e, 20) as u64,
                    ));
                    // The offset must leave the area inside the block it names.
                    if le32(e, 12) as u64 + le32(e, 20) as u64 > bs {
                        return corrupt("iso9660: Rock Ridge continuation area crosses its block");
                    }
                }
                b"ST" => break,
                b"NM" if len >= 5 => {
                    let flags = e[4];
                    if flags & 0x06 == 0 {
                        let n = r.name.get_or_insert_with(Vec::new);
                        let room = NAME_MAX.saturating_sub(n.len());
                        n.extend_from_slice(&e[5..5 + (len - 5).min(room)]);
                    }
                }
                b"PX" if len >= 36 => {
                    r.px = Some(Px {
                        mode: le32(e, 4),
                        nlink: le32(e, 12),
                        uid: le32(e, 20),
                        gid: le32(e, 28),
                    })
                }
                b"PN" if len >= 20 => {
                    let (high, low) = (le32(e, 4), le32(e, 12));
                    r.rdev = Some(if high == 0 && low & !0xff != 0 {
                        makedev(low >> 8, low & 0xff)
                    } else {
                        makedev(high, low)
                    });
                }
                b"SL" if len >= 5 => {
                    let s = sl.get_or_insert_with(Sl::default);
                    symlink_components(s, e[4] & 1 != 0, &e[5..])?;
                }
                b"TF" if len >= 5 => times(&mut r, e[4], &e[5..]),
                b"CL" if len >= 12 => r.cl = Some(le32(e, 4)),
                b"RE" => r.re = true,
                _ => {}
            }
        }
        let Some((off, clen)) = ce else { break };
        followed += 1;
        if followed > MAX_CONTINUATIONS {
            return corrupt("iso9660: too many Rock Ridge continuation areas (a loop?)");
        }
        check_range("iso9660 continuation area", dev.size(), off, clen)?;
        area = vec![0u8; clen as usize];
        dev.read_at(&mut area, off)?;
    }
    r.symlink = sl.map(|s| s.target);
    Ok(r)
}

/// Appends SL components to the target: "/" for the root, "." and "..", names, with '/'
/// between components unless a component continues into the next (as the kernel joins them).
fn symlink_components(s: &mut Sl, entry_continues: bool, mut c: &[u8]) -> Result<()> {
    while c.len() >= 2 {
        let (flags, len) = (c[0], c[1] as usize);
        if 2 + len > c.len() {
            return corrupt("iso9660: Rock Ridge symlink component past its entry");
        }
        let root = flags & 0x08 != 0;
        match flags & !1 {
            0x02 => s.target.push(b'.'),
            0x04 => s.target.extend_from_slice(b".."),
            0x08 => s.target.push(b'/'),
            _ => s.target.extend_from_slice(&c[2..2 + len]),
        }
        c = &c[2 + len..];
        let last = c.len() < 2;
        let continued = flags & 1 != 0;
        if !root && !continued && (!last || entry_continues) {
            s.target.push(b'/');
        }
        if s.target.len() > PATH_MAX {
            return corrupt("iso9660: Rock Ridge symlink target longer than PATH_MAX");
        }
    }
    Ok(())
}

/// TF: the recorded times in flag order (creation, modification, access, attributes, ...),
/// 7- or 17-byte form. Linux shows creation then attribute change as ctime.
fn times(r: &mut Rock, flags: u8, mut d: &[u8]) {
    let long = flags & 0x80 != 0;
    let sz = if long { 17 } else { 7 };
    for bit in 0..7 {
        if flags & (1 << bit) == 0 {
            continue;
        }
        if d.len() < sz {
            return;
        }
        let t = if long {
            date17(&d[..sz])
        } else {
            Some(date7(&d[..sz]))
        };
        d = &d[sz..];
        let Some(t) = t else { continue };
        match bit {
            0 | 3 => r.ctime = Some(t),
            1 => r.mtime = Some(t),
            2 => r.atime = Some(t),
            _ => {}
        }
    }
}
