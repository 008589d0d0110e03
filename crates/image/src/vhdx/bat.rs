//! The block allocation table (MS-VHDX 2.5): payload block entries interleaved with one
//! sector bitmap entry per chunk, and the arithmetic that maps guest offsets onto it.

use super::header::MIB;

pub const PAYLOAD_NOT_PRESENT: u64 = 0;
pub const PAYLOAD_UNDEFINED: u64 = 1;
pub const PAYLOAD_ZERO: u64 = 2;
pub const PAYLOAD_UNMAPPED: u64 = 3;
/// PAYLOAD_BLOCK_UNMAPPED of the 0.95 specification; QEMU still reads it as zeros.
pub const PAYLOAD_UNMAPPED_V095: u64 = 5;
pub const PAYLOAD_FULLY_PRESENT: u64 = 6;
pub const PAYLOAD_PARTIALLY_PRESENT: u64 = 7;
pub const SB_PRESENT: u64 = 6;

pub const STATE_MASK: u64 = 7;
/// FileOffsetMB: the upper 44 bits, in units of 1 MiB.
pub const OFFSET_MASK: u64 = !(MIB - 1);
/// Sectors described by one 1 MiB sector bitmap block.
pub const SECTORS_PER_BITMAP: u64 = 1 << 23;
/// The largest virtual disk the specification allows.
pub const MAX_VIRTUAL_SIZE: u64 = 64 << 40;
pub const MIN_BLOCK_SIZE: u64 = MIB;
pub const MAX_BLOCK_SIZE: u64 = 256 * MIB;

pub fn state(e: u64) -> u64 {
    e & STATE_MASK
}

pub fn offset(e: u64) -> u64 {
    e & OFFSET_MASK
}

/// What a payload block entry says about its block's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// In this file at the given offset.
    Present(u64),
    /// Some sectors here, the rest in the parent (sector bitmap decides).
    Partial(u64),
    /// Reads as zeros.
    Zero,
    /// Not in this file: the parent's content, or zeros without a parent.
    Absent,
    /// A reserved state value.
    Invalid(u64),
}

pub fn decode(e: u64) -> Block {
    match state(e) {
        PAYLOAD_FULLY_PRESENT => Block::Present(offset(e)),
        PAYLOAD_PARTIALLY_PRESENT => Block::Partial(offset(e)),
        PAYLOAD_ZERO | PAYLOAD_UNMAPPED | PAYLOAD_UNMAPPED_V095 => Block::Zero,
        PAYLOAD_NOT_PRESENT | PAYLOAD_UNDEFINED => Block::Absent,
        s => Block::Invalid(s),
    }
}

/// Sizes that follow from the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub virtual_size: u64,
    pub block_size: u64,
    pub block_bits: u32,
    pub sector_size: u64,
    pub sector_bits: u32,
    /// Payload blocks per sector bitmap block.
    pub chunk_ratio: u64,
    pub chunk_bits: u32,
    pub data_blocks: u64,
    /// Entries the BAT must hold.
    pub bat_entries: u64,
    pub has_parent: bool,
}

impl Geometry {
    /// `block_size` and `sector_size` are powers of two within the specification's limits
    /// and `virtual_size` at most 64 TiB (checked by the caller).
    pub fn new(virtual_size: u64, block_size: u64, sector_size: u64, has_parent: bool) -> Self {
        let chunk_ratio = SECTORS_PER_BITMAP * sector_size / block_size;
        let chunk_bits = chunk_ratio.trailing_zeros();
        let data_blocks = virtual_size.div_ceil(block_size);
        let bat_entries = if has_parent {
            data_blocks.div_ceil(chunk_ratio) * (chunk_ratio + 1)
        } else {
            data_blocks + (data_blocks.saturating_sub(1) >> chunk_bits)
        };
        Geometry {
            virtual_size,
            block_size,
            block_bits: block_size.trailing_zeros(),
            sector_size,
            sector_bits: sector_size.trailing_zeros(),
            chunk_ratio,
            chunk_bits,
            data_blocks,
            bat_entries,
            has_parent,
        }
    }

    /// BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> u64 {
        block + (block >> self.chunk_bits)
    }

    /// BAT index of the sector bitmap of the chunk holding payload block `block`.
    pub fn bitmap_index(&self, block: u64) -> u64 {
        let chunk = block >> self.chunk_bits;
        chunk * (self.chunk_ratio + 1) + self.chunk_ratio
    }

    /// Whether BAT index `i` holds a sector bitmap entry.
    pub fn is_bitmap_index(&self, i: u64) -> bool {
        i % (self.chunk_ratio + 1) == self.chunk_ratio
    }

    /// Payload block number of BAT index `i` (a payload index).
    pub fn block_of_index(&self, i: u64) -> u64 {
        i - i / (self.chunk_ratio + 1)
    }

    /// Bit number, within its chunk's sector bitmap, of the sector at guest offset `off`.
    pub fn bitmap_bit(&self, off: u64) -> u64 {
        (off >> self.sector_bits) & (SECTORS_PER_BITMAP - 1)
    }
}

/// BAT entry count as QEMU computes it when creating images: 32-bit arithmetic, so an empty
/// disk gets the huge table QEMU writes for it.
pub fn qemu_bat_entries(virtual_size: u64, block_size: u64, sector_size: u64) -> u64 {
    let chunk_ratio = SECTORS_PER_BITMAP * sector_size / block_size;
    let data_blocks = virtual_size.div_ceil(block_size) as u32;
    let extra = data_blocks.wrapping_sub(1) >> chunk_ratio.trailing_zeros();
    data_blocks.wrapping_add(extra) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving() {
        // 1 MiB blocks, 512-byte sectors: 4096 payload blocks per chunk.
        let g = Geometry::new(8 << 30, MIB, 512, false);
        assert_eq!(g.chunk_ratio, 4096);
        assert_eq!(g.data_blocks, 8192);
        assert_eq!(g.bat_entries, 8192 + 1);
        assert_eq!(g.payload_index(4095), 4095);
        assert_eq!(g.payload_index(4096), 4097);
        assert_eq!(g.bitmap_index(0), 4096);
        assert!(g.is_bitmap_index(4096));
        assert_eq!(g.block_of_index(4097), 4096);
        let d = Geometry::new(8 << 30, MIB, 512, true);
        assert_eq!(d.bat_entries, 2 * 4097);
        assert_eq!(qemu_bat_entries(0, 8 * MIB, 512), 8388607);
        assert_eq!(qemu_bat_entries(100 << 20, 8 * MIB, 512), 13);
    }
}
