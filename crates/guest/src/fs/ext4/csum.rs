//! Checksums of ext4 metadata (crc32c in the kernel's convention, crc16 for the older
//! `gdt_csum`) and bounds-safe little/big-endian field readers: a field that lies past the end
//! of its buffer reads as zero, so a short or hostile structure never panics (lengths are
//! validated separately where they matter).

/// The kernel's `crc32c(seed, data)`: no pre- or post-inversion, unlike the crc32c crate's
/// standard CRC, hence the inversions around `crc32c_append`.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// CRC-16 (polynomial 0x8005, reflected), as `gdt_csum` group descriptors use it.
pub fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

pub fn le16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.saturating_add(2)) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]),
        None => 0,
    }
}

pub fn le32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.saturating_add(4)) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

pub fn be32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.saturating_add(4)) {
        Some(s) => u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

pub fn be16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.saturating_add(2)) {
        Some(s) => u16::from_be_bytes([s[0], s[1]]),
        None => 0,
    }
}

/// Zeroes `len` bytes at `off` of a copy, for checksums computed with their own field zeroed.
pub fn zeroed(b: &[u8], off: usize, len: usize) -> Vec<u8> {
    let mut v = b.to_vec();
    if let Some(s) = v.get_mut(off..off.saturating_add(len)) {
        s.fill(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_convention() {
        // crc32c("123456789") is 0xe3069283 with the standard inversions.
        assert_eq!(!crc32c(!0, b"123456789"), 0xe306_9283);
        // Chaining equals one pass.
        assert_eq!(
            crc32c(crc32c(7, b"1234"), b"56789"),
            crc32c(7, b"123456789")
        );
        assert_eq!(le32(&[1, 0, 0], 0), 0);
        assert_eq!(be32(&[0, 0, 1, 2], 0), 0x102);
    }
}
