//! The VHD footer and dynamic disk header (big endian, checksummed), and the CHS geometry
//! QEMU derives from a disk size.

pub const FOOTER_LEN: usize = 512;
pub const DYN_HEADER_LEN: usize = 1024;
pub const COOKIE: &[u8; 8] = b"conectix";
pub const DYN_COOKIE: &[u8; 8] = b"cxsparse";

pub const TYPE_FIXED: u32 = 2;
pub const TYPE_DYNAMIC: u32 = 3;

/// Seconds from the Unix epoch to 2000-01-01 00:00:00 UTC, the VHD timestamp's origin.
pub const TIMESTAMP_BASE: u64 = 946_684_800;

pub const CHS_MAX_C: u64 = 65535;
pub const CHS_MAX_H: u64 = 16;
pub const CHS_MAX_S: u64 = 255;
pub const MAX_GEOMETRY: u64 = CHS_MAX_C * CHS_MAX_H * CHS_MAX_S;
/// 2040 GiB in sectors, QEMU's limit.
pub const MAX_SECTORS: u64 = 0xff00_0000;
/// QEMU's dynamic images use 2 MiB blocks.
pub const DEFAULT_BLOCK_SIZE: u32 = 0x20_0000;

// Footer field offsets.
pub const F_DATA_OFFSET: usize = 16;
pub const F_CREATOR_APP: usize = 28;
pub const F_CURRENT_SIZE: usize = 48;
pub const F_CYLS: usize = 56;
pub const F_HEADS: usize = 58;
pub const F_SECS: usize = 59;
pub const F_TYPE: usize = 60;
pub const F_CHECKSUM: usize = 64;

// Dynamic header field offsets.
pub const D_TABLE_OFFSET: usize = 16;
pub const D_MAX_ENTRIES: usize = 28;
pub const D_BLOCK_SIZE: usize = 32;
pub const D_CHECKSUM: usize = 36;

pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(b[off..off + 2].try_into().expect("2 bytes"))
}
pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
pub fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// One's complement of the byte sum, the checksum field itself counted as zero.
pub fn checksum(b: &[u8], field: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |s, (_, &x)| s.wrapping_add(x as u32));
    !sum
}

/// The sectors a footer describes, as QEMU 10's vpc_open decides: Virtual PC and old QEMU
/// ("vpc ", "qemu") size the disk by its CHS geometry, everyone else by current_size, and a
/// geometry at the CHS maximum always means current_size.
pub fn total_sectors(f: &[u8]) -> u64 {
    let chs = be16(f, F_CYLS) as u64 * f[F_HEADS] as u64 * f[F_SECS] as u64;
    let app = &f[F_CREATOR_APP..F_CREATOR_APP + 4];
    let use_chs = app == b"vpc " || app == b"qemu";
    if !use_chs || chs == MAX_GEOMETRY {
        be64(f, F_CURRENT_SIZE) / 512
    } else {
        chs
    }
}

/// CHS geometry for a number of sectors, the algorithm of the VHD specification as QEMU's
/// calculate_geometry implements it (C integer widths included). May round down.
pub fn calculate_geometry(total_sectors: u64) -> (u16, u8, u8) {
    let total = total_sectors.min(MAX_GEOMETRY);
    let (secs, heads, cth): (u8, u8, u32);
    if total >= 65535 * 16 * 63 {
        secs = 255;
        heads = 16;
        cth = (total / 255) as u32;
    } else {
        let mut s: u8 = 17;
        let mut c = (total / 17) as u32;
        // Stored in a uint8_t in QEMU: wraps.
        let mut h = c.div_ceil(1024) as u8;
        if h < 4 {
            h = 4;
        }
        if c >= h as u32 * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = (total / 31) as u32;
        }
        if c >= h as u32 * 1024 {
            s = 63;
            h = 16;
            c = (total / 63) as u32;
        }
        secs = s;
        heads = h;
        cth = c;
    }
    ((cth / heads as u32) as u16, heads, secs)
}

/// The geometry and sector count QEMU gives a new image of `size` bytes (a multiple of 512):
/// the smallest CHS geometry holding the size unless `force_size`, and the size itself when
/// the geometry is the maximum. `None` past 2040 GiB.
pub fn rounded_size(size: u64, force_size: bool) -> Option<(u64, (u16, u8, u8))> {
    let geo = if force_size {
        (CHS_MAX_C as u16, CHS_MAX_H as u8, CHS_MAX_S as u8)
    } else {
        let ts = MAX_GEOMETRY.min(size / 512);
        let mut g = (0u16, 0u8, 0u8);
        let mut i = 0;
        while ts > prod(g) {
            g = calculate_geometry(ts + i);
            i += 1;
        }
        g
    };
    let total = if prod(geo) == MAX_GEOMETRY {
        let t = size / 512;
        if t > MAX_SECTORS {
            return None;
        }
        t
    } else {
        prod(geo)
    };
    Some((total, geo))
}

fn prod(g: (u16, u8, u8)) -> u64 {
    g.0 as u64 * g.1 as u64 * g.2 as u64
}

/// A footer as QEMU's vpc_co_create writes it.
pub fn new_footer(
    size: u64,
    geo: (u16, u8, u8),
    disk_type: u32,
    force_size: bool,
    uuid: [u8; 16],
    now: u64,
) -> [u8; FOOTER_LEN] {
    let mut f = [0u8; FOOTER_LEN];
    f[..8].copy_from_slice(COOKIE);
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    let data_offset: u64 = if disk_type == TYPE_DYNAMIC {
        FOOTER_LEN as u64
    } else {
        u64::MAX
    };
    f[16..24].copy_from_slice(&data_offset.to_be_bytes());
    f[24..28].copy_from_slice(&(now.wrapping_sub(TIMESTAMP_BASE) as u32).to_be_bytes());
    f[28..32].copy_from_slice(if force_size { b"qem2" } else { b"qemu" });
    // Virtual PC 2007's version.
    f[32..34].copy_from_slice(&5u16.to_be_bytes());
    f[34..36].copy_from_slice(&3u16.to_be_bytes());
    f[36..40].copy_from_slice(b"Wi2k");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[56..58].copy_from_slice(&geo.0.to_be_bytes());
    f[58] = geo.1;
    f[59] = geo.2;
    f[60..64].copy_from_slice(&disk_type.to_be_bytes());
    f[68..84].copy_from_slice(&uuid);
    let c = checksum(&f, F_CHECKSUM);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    f
}

/// A dynamic disk header as QEMU writes it: BAT right after it, 2 MiB blocks.
pub fn new_dyn_header(entries: u32) -> [u8; DYN_HEADER_LEN] {
    let mut d = [0u8; DYN_HEADER_LEN];
    d[..8].copy_from_slice(DYN_COOKIE);
    // The spec says 0xFFFFFFFF; Microsoft's tools want all 64 bits set.
    d[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    d[16..24].copy_from_slice(&1536u64.to_be_bytes());
    d[24..28].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    d[28..32].copy_from_slice(&entries.to_be_bytes());
    d[32..36].copy_from_slice(&DEFAULT_BLOCK_SIZE.to_be_bytes());
    let c = checksum(&d, D_CHECKSUM);
    d[36..40].copy_from_slice(&c.to_be_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_like_qemu() {
        // qemu-img create -f vpc x 10M: 10514432 bytes = 302 * 4 * 17 sectors.
        let (t, g) = rounded_size(10 << 20, false).unwrap();
        assert_eq!(t * 512, 10514432);
        assert_eq!(g, (302, 4, 17));
        assert_eq!(rounded_size(1024, false).unwrap().0 * 512, 34816);
        assert_eq!(rounded_size(0, false).unwrap().0, 0);
        // Past the CHS maximum the size itself counts; past 2040 GiB nothing.
        assert_eq!(
            rounded_size(2040 << 30, false).unwrap().0 * 512,
            2190433320960
        );
        assert!(rounded_size(2041 << 30, false).is_none());
        assert_eq!(rounded_size(10 << 20, true).unwrap().0 * 512, 10 << 20);
    }

    #[test]
    fn checksum_skips_its_field() {
        let f = new_footer(
            1 << 20,
            (1, 2, 3),
            TYPE_FIXED,
            false,
            [7; 16],
            TIMESTAMP_BASE,
        );
        assert_eq!(checksum(&f, F_CHECKSUM), be32(&f, F_CHECKSUM));
    }
}
