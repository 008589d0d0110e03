//! The VDI header (VirtualBox's 1.1 layout, as QEMU reads and writes it): the first 512 bytes
//! of the file, little endian. Everything is validated before it is used.

use crate::error::{Error, Result};

pub const SIGNATURE: u32 = 0xbeda_107f;
pub const VERSION_1_1: u32 = 0x0001_0001;
pub const TYPE_DYNAMIC: u32 = 1;
pub const TYPE_STATIC: u32 = 2;
/// What QEMU writes into the text field of the images it creates.
pub const TEXT: &str = "<<< QEMU VM Virtual Disk Image >>>\n";
pub const SECTOR: u64 = 512;
/// The only block size QEMU accepts (and creates).
pub const BLOCK_SIZE: u32 = 1 << 20;
pub const HEADER_LEN: usize = 512;

/// Block map entry of a block never written (reads as zero in a dynamic image).
pub const UNALLOCATED: u32 = 0xffff_ffff;
/// Block map entry of a discarded block (reads as zero).
pub const DISCARDED: u32 = 0xffff_fffe;

pub fn is_allocated(e: u32) -> bool {
    e < DISCARDED
}

/// QEMU's limit: the block map (4 bytes per block, rounded up to a sector) must fit in an int.
pub const BLOCKS_MAX: u32 = ((i32::MAX as u32) + 1 - SECTOR as u32) / 4;
pub const DISK_SIZE_MAX: u64 = BLOCKS_MAX as u64 * BLOCK_SIZE as u64;

/// Field offsets.
pub const OFF_SIGNATURE: usize = 0x40;
pub const OFF_VERSION: usize = 0x44;
pub const OFF_HEADER_SIZE: usize = 0x48;
pub const OFF_IMAGE_TYPE: usize = 0x4c;
pub const OFF_BMAP: usize = 0x154;
pub const OFF_DATA: usize = 0x158;
pub const OFF_SECTOR_SIZE: usize = 0x168;
pub const OFF_DISK_SIZE: usize = 0x170;
pub const OFF_BLOCK_SIZE: usize = 0x178;
pub const OFF_BLOCKS: usize = 0x180;
pub const OFF_ALLOCATED: usize = 0x184;
pub const OFF_UUID_IMAGE: usize = 0x188;
pub const OFF_UUID_LAST_SNAP: usize = 0x198;
pub const OFF_UUID_LINK: usize = 0x1a8;
pub const OFF_UUID_PARENT: usize = 0x1b8;

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The header fields the driver uses, validated as QEMU's vdi_open does.
#[derive(Debug, Clone)]
pub struct Header {
    /// The header as read, so that rewriting it changes only the fields we maintain.
    pub raw: [u8; HEADER_LEN],
    pub image_type: u32,
    pub offset_bmap: u32,
    pub offset_data: u32,
    /// Rounded up to whole sectors, as QEMU does for VBoxManage's odd sizes.
    pub disk_size: u64,
    pub blocks_in_image: u32,
    pub blocks_allocated: u32,
}

impl Header {
    /// Checks in QEMU's order, with QEMU's messages.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header> {
        let unsupported = |m: String| Err(Error::Unsupported(m));
        let mut disk_size = le64(b, OFF_DISK_SIZE);
        if disk_size > DISK_SIZE_MAX {
            return unsupported(format!(
                "Unsupported VDI image size (size is {disk_size:#x}, max supported is {DISK_SIZE_MAX:#x})"
            ));
        }
        disk_size = disk_size.div_ceil(SECTOR) * SECTOR;
        let signature = le32(b, OFF_SIGNATURE);
        let version = le32(b, OFF_VERSION);
        let offset_bmap = le32(b, OFF_BMAP);
        let offset_data = le32(b, OFF_DATA);
        let sector_size = le32(b, OFF_SECTOR_SIZE);
        let block_size = le32(b, OFF_BLOCK_SIZE);
        let blocks_in_image = le32(b, OFF_BLOCKS);
        let room = blocks_in_image as u64 * block_size as u64;
        if signature != SIGNATURE {
            return Err(Error::Invalid(format!(
                "Image not in VDI format (bad signature {signature:08x})"
            )));
        } else if version != VERSION_1_1 {
            return unsupported(format!(
                "unsupported VDI image (version {}.{})",
                version >> 16,
                version & 0xffff
            ));
        } else if !(offset_bmap as u64).is_multiple_of(SECTOR) {
            return unsupported(format!(
                "unsupported VDI image (unaligned block map offset {offset_bmap:#x})"
            ));
        } else if !(offset_data as u64).is_multiple_of(SECTOR) {
            return unsupported(format!(
                "unsupported VDI image (unaligned data offset {offset_data:#x})"
            ));
        } else if sector_size as u64 != SECTOR {
            return unsupported(format!(
                "unsupported VDI image (sector size {sector_size} is not 512)"
            ));
        } else if block_size != BLOCK_SIZE {
            return unsupported(format!(
                "unsupported VDI image (block size {block_size} is not {BLOCK_SIZE})"
            ));
        } else if disk_size > room {
            return unsupported(format!(
                "unsupported VDI image (disk size {disk_size}, image bitmap has room for {room})"
            ));
        } else if b[OFF_UUID_LINK..OFF_UUID_LINK + 16] != [0; 16] {
            return unsupported("unsupported VDI image (non-NULL link UUID)".into());
        } else if b[OFF_UUID_PARENT..OFF_UUID_PARENT + 16] != [0; 16] {
            return unsupported("unsupported VDI image (non-NULL parent UUID)".into());
        } else if blocks_in_image > BLOCKS_MAX {
            return unsupported(format!(
                "unsupported VDI image (too many blocks {blocks_in_image}, max is {BLOCKS_MAX})"
            ));
        }
        Ok(Header {
            raw: *b,
            image_type: le32(b, OFF_IMAGE_TYPE),
            offset_bmap,
            offset_data,
            disk_size,
            blocks_in_image,
            blocks_allocated: le32(b, OFF_ALLOCATED),
        })
    }

    /// Bytes of the block map as stored: 4 per block, rounded up to whole sectors.
    pub fn bmap_bytes(&self) -> u64 {
        (self.blocks_in_image as u64 * 4).div_ceil(SECTOR) * SECTOR
    }

    /// The header with the current allocation count, ready to be written at offset 0.
    pub fn bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = self.raw;
        b[OFF_ALLOCATED..OFF_ALLOCATED + 4].copy_from_slice(&self.blocks_allocated.to_le_bytes());
        b
    }
}

/// A new header as QEMU's vdi_co_do_create writes it.
pub fn new_header(disk_size: u64, blocks: u32, is_static: bool) -> Result<[u8; HEADER_LEN]> {
    let bmap_bytes = (blocks as u64 * 4).div_ceil(SECTOR) * SECTOR;
    let mut b = [0u8; HEADER_LEN];
    b[..TEXT.len()].copy_from_slice(TEXT.as_bytes());
    let mut put32 = |off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put32(OFF_SIGNATURE, SIGNATURE);
    put32(OFF_VERSION, VERSION_1_1);
    put32(OFF_HEADER_SIZE, 0x180);
    put32(
        OFF_IMAGE_TYPE,
        if is_static { TYPE_STATIC } else { TYPE_DYNAMIC },
    );
    put32(OFF_BMAP, 0x200);
    // blocks <= BLOCKS_MAX keeps the data offset within 32 bits.
    put32(OFF_DATA, (0x200 + bmap_bytes) as u32);
    put32(OFF_SECTOR_SIZE, SECTOR as u32);
    put32(OFF_BLOCK_SIZE, BLOCK_SIZE);
    put32(OFF_BLOCKS, blocks);
    put32(OFF_ALLOCATED, if is_static { blocks } else { 0 });
    b[OFF_DISK_SIZE..OFF_DISK_SIZE + 8].copy_from_slice(&disk_size.to_le_bytes());
    b[OFF_UUID_IMAGE..OFF_UUID_IMAGE + 16].copy_from_slice(&to_vbox_uuid(random_uuid_v4()?));
    b[OFF_UUID_LAST_SNAP..OFF_UUID_LAST_SNAP + 16]
        .copy_from_slice(&to_vbox_uuid(random_uuid_v4()?));
    Ok(b)
}

/// A random (version 4, RFC 4122 variant) UUID in network byte order, as qemu_uuid_generate.
pub(crate) fn random_uuid_v4() -> Result<[u8; 16]> {
    use std::io::Read;
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut u)?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

/// VirtualBox stores the first three UUID fields little endian (IPRT's RTUUID layout).
fn to_vbox_uuid(mut u: [u8; 16]) -> [u8; 16] {
    u[0..4].reverse();
    u[4..6].reverse();
    u[6..8].reverse();
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_match_qemu() {
        assert_eq!(BLOCKS_MAX, 536_870_784);
        assert_eq!(DISK_SIZE_MAX, 0x1fffff8000000);
    }

    #[test]
    fn new_header_parses_back() {
        let b = new_header(10 << 20, 10, false).unwrap();
        let h = Header::parse(&b).unwrap();
        assert_eq!(h.disk_size, 10 << 20);
        assert_eq!(h.offset_bmap, 0x200);
        assert_eq!(h.offset_data, 0x400);
        assert_eq!(h.blocks_in_image, 10);
        assert_eq!(h.blocks_allocated, 0);
        assert_eq!(h.image_type, TYPE_DYNAMIC);
        // Version nibble of the little-endian third field.
        assert_eq!(b[OFF_UUID_IMAGE + 7] >> 4, 4);
    }
}
