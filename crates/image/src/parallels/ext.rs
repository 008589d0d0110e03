//! The Parallels Format Extension cluster (docs/interop/parallels.txt): an MD5-checked list
//! of features, of which QEMU knows dirty bitmaps. virtkit validates it as QEMU does and
//! keeps the clusters it uses out of the allocator's reach (QEMU ignores the extension on a
//! read-write open and may overwrite or truncate it away).

use crate::error::{Error, Result};
use crate::fileio;
use std::fs::File;

pub const MAGIC: u64 = 0xAB23_4CEF_23DC_EA87;
pub const END_OF_FEATURES: u64 = 0;
pub const DIRTY_BITMAP: u64 = 0x2038_5FAE_252C_B34A;
/// Extension header: magic and MD5 of the rest of the cluster.
const EXT_HEADER: u64 = 24;
/// Feature header: magic, flags, data_size, unused.
const FEATURE_HEADER: u64 = 24;
/// Dirty bitmap feature data before its L1 table.
const BITMAP_HEADER: u64 = 32;

/// What the extension references, in bytes from the start of the file.
#[derive(Debug, Default, Clone)]
pub struct Extension {
    /// The extension cluster and the bitmap data clusters.
    pub clusters: Vec<u64>,
    pub bitmaps: usize,
}

fn bad<T>(m: impl Into<String>) -> Result<T> {
    Err(Error::Corrupt(m.into()))
}

/// Reads and validates the extension cluster at `off` (bytes). `sectors`: the disk size.
pub fn read(f: &File, off: u64, cs: u64, sectors: u64) -> Result<Extension> {
    // Past the end of the file QEMU would checksum zeros; a real extension is in the file.
    if off.saturating_add(cs) > fileio::file_len(f)? {
        return bad("Format Extension cluster lies past the end of the file");
    }
    let mut ext = Extension {
        clusters: vec![off],
        bitmaps: 0,
    };
    let rd = |at: u64, n: usize| -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        fileio::read_full(f, &mut b, off + at)?;
        Ok(b)
    };
    let head = rd(0, EXT_HEADER as usize)?;
    let magic = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    if magic != MAGIC {
        return bad(format!(
            "Wrong parallels Format Extension magic: 0x{magic:x}, expected: 0x{MAGIC:x}"
        ));
    }
    // The checksum covers the rest of the cluster, read in bounded pieces.
    let mut md5 = Md5::new();
    let mut at = EXT_HEADER;
    while at < cs {
        let n = (cs - at).min(1 << 20);
        md5.update(&rd(at, n as usize)?);
        at += n;
    }
    if md5.finish()[..] != head[8..24] {
        return bad("Wrong checksum in Format Extension header. Format extension is corrupted.");
    }
    let mut pos = EXT_HEADER;
    loop {
        let remaining = cs.saturating_sub(pos);
        if remaining < FEATURE_HEADER {
            return bad(format!(
                "Can not read feature header, as remaining bytes ({remaining}) in Format \
                 Extension is less than Feature header size ({FEATURE_HEADER})"
            ));
        }
        let fh = rd(pos, FEATURE_HEADER as usize)?;
        let fmagic = u64::from_le_bytes(fh[..8].try_into().expect("8 bytes"));
        let flags = u64::from_le_bytes(fh[8..16].try_into().expect("8 bytes"));
        let size = u32::from_le_bytes(fh[16..20].try_into().expect("4 bytes")) as u64;
        pos += FEATURE_HEADER;
        if flags != 0 {
            return bad("Flags for extension feature are unsupported");
        }
        if size > remaining - FEATURE_HEADER {
            return bad("Feature data_size exceedes Format Extension cluster");
        }
        match fmagic {
            END_OF_FEATURES => return Ok(ext),
            DIRTY_BITMAP => {
                bitmap(f, off + pos, size, cs, sectors, &mut ext.clusters)?;
                ext.bitmaps += 1;
            }
            m => return bad(format!("Unknown feature: 0x{m:x}")),
        }
        pos = (pos + size).div_ceil(8) * 8;
    }
}

/// Validates one dirty bitmap feature whose data (`size` bytes) starts at `at`, and collects
/// the clusters its L1 table points at.
fn bitmap(f: &File, at: u64, size: u64, cs: u64, sectors: u64, out: &mut Vec<u64>) -> Result<()> {
    if size < BITMAP_HEADER {
        return bad(format!(
            "Too small Bitmap Feature area in Parallels Format Extension: {size} bytes, \
             expected at least {BITMAP_HEADER} bytes"
        ));
    }
    let mut h = [0u8; BITMAP_HEADER as usize];
    fileio::read_full(f, &mut h, at)?;
    let bsize = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    let gran_sectors = u32::from_le_bytes(h[24..28].try_into().expect("4 bytes")) as u64;
    let l1_size = u32::from_le_bytes(h[28..32].try_into().expect("4 bytes")) as u64;
    if bsize != sectors {
        return bad(format!(
            "Bitmap size (in sectors) {bsize} differs from disk size in sectors {sectors}"
        ));
    }
    if l1_size * 8 > size - BITMAP_HEADER {
        return bad("Bitmaps feature corrupted: l1 table exceeds extension data_size");
    }
    // QEMU keeps the granularity in 32 bits and asserts a power of two of at least a sector.
    let gran = gran_sectors << 9;
    if gran == 0 || !gran.is_power_of_two() || gran > u32::MAX as u64 {
        return bad(format!(
            "Invalid bitmap granularity: {gran_sectors} sectors"
        ));
    }
    let bits = (sectors * 512).div_ceil(gran);
    let tab_size = (bits.div_ceil(64) * 8).div_ceil(cs);
    if tab_size != l1_size {
        return bad(format!(
            "Bitmap table size {l1_size} does not correspond to bitmap size and cluster size. \
             Expected {tab_size}"
        ));
    }
    let mut i = 0;
    while i < l1_size {
        let n = (l1_size - i).min(8192);
        let mut raw = vec![0u8; (n * 8) as usize];
        fileio::read_full(f, &mut raw, at + BITMAP_HEADER + i * 8)?;
        for c in raw.chunks_exact(8) {
            let e = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            // 0: all zeros, 1: all ones; otherwise a data cluster, in sectors.
            if e > 1 {
                match e.checked_mul(512) {
                    Some(o) if o <= i64::MAX as u64 => out.push(o),
                    _ => return bad(format!("Invalid bitmap data cluster offset {e}")),
                }
            }
        }
        i += n;
    }
    Ok(())
}

/// MD5 (RFC 1321), for the extension's checksum.
pub struct Md5 {
    s: [u32; 4],
    buf: Vec<u8>,
    len: u64,
}

const K: [u32; 64] = {
    // floor(abs(sin(i + 1)) * 2^32), precomputed as in RFC 1321.
    [
        0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
        0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
        0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
        0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
        0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
        0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
        0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
        0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
        0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
        0xeb86d391,
    ]
};
const R: [u32; 16] = [7, 12, 17, 22, 5, 9, 14, 20, 4, 11, 16, 23, 6, 10, 15, 21];

impl Default for Md5 {
    fn default() -> Self {
        Self::new()
    }
}

impl Md5 {
    pub fn new() -> Md5 {
        Md5 {
            s: [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476],
            buf: Vec::with_capacity(64),
            len: 0,
        }
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if !self.buf.is_empty() {
            let n = (64 - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == 64 {
                let b: [u8; 64] = self.buf[..].try_into().expect("64 bytes");
                self.block(&b);
                self.buf.clear();
            }
        }
        let mut chunks = data.chunks_exact(64);
        for c in &mut chunks {
            self.block(c.try_into().expect("64 bytes"));
        }
        self.buf.extend_from_slice(chunks.remainder());
    }

    pub fn finish(mut self) -> [u8; 16] {
        let bits = self.len.wrapping_mul(8);
        let mut pad = vec![0x80u8];
        pad.resize((55usize.wrapping_sub(self.buf.len()) % 64) + 1, 0);
        pad.extend_from_slice(&bits.to_le_bytes());
        let len = self.len;
        self.update(&pad);
        self.len = len;
        debug_assert!(self.buf.is_empty());
        let mut out = [0u8; 16];
        for (i, w) in self.s.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
        }
        out
    }

    fn block(&mut self, b: &[u8; 64]) {
        let m: Vec<u32> = b
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let [mut a, mut bb, mut c, mut d] = self.s;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((bb & c) | (!bb & d), i),
                1 => ((d & bb) | (!d & c), (5 * i + 1) % 16),
                2 => (bb ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (bb | !d), (7 * i) % 16),
            };
            let r = R[(i / 16) * 4 + i % 4];
            let t = d;
            d = c;
            c = bb;
            bb = bb.wrapping_add(
                a.wrapping_add(f)
                    .wrapping_add(K[i])
                    .wrapping_add(m[g])
                    .rotate_left(r),
            );
            a = t;
        }
        self.s[0] = self.s[0].wrapping_add(a);
        self.s[1] = self.s[1].wrapping_add(bb);
        self.s[2] = self.s[2].wrapping_add(c);
        self.s[3] = self.s[3].wrapping_add(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: [u8; 16]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn md5(d: &[u8]) -> String {
        let mut m = Md5::new();
        m.update(d);
        hex(m.finish())
    }

    #[test]
    fn rfc1321_vectors() {
        assert_eq!(md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            ),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
        // Split updates agree with one update.
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let mut m = Md5::new();
        m.update(&data[..3]);
        m.update(&data[3..130]);
        m.update(&data[130..]);
        assert_eq!(hex(m.finish()), md5(&data));
    }
}
