//! Block status across a backing chain: what `qemu-img map` reports for a range.

use crate::driver::{Alloc, BlockDriver};
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    /// Layer that decided the range (0 = top).
    pub depth: u32,
    /// Allocated in some layer (not merely "reads zero because nothing is there").
    pub present: bool,
    pub zero: bool,
    pub data: bool,
    pub compressed: bool,
    pub offset: Option<u64>,
    /// File holding `offset`.
    pub filename: Option<String>,
}

impl MapEntry {
    /// Whether `next` continues this entry (qemu-img merges such neighbours).
    pub fn mergeable(&self, next: &MapEntry) -> bool {
        self.start + self.length == next.start
            && self.depth == next.depth
            && self.present == next.present
            && self.zero == next.zero
            && self.data == next.data
            && self.compressed == next.compressed
            && self.filename == next.filename
            && match (self.offset, next.offset) {
                (Some(a), Some(b)) => a + self.length == b,
                (None, None) => true,
                _ => false,
            }
    }
}

/// Status of the chain under `top` at `off`, for a prefix of at most `len` bytes.
pub fn chain_status(top: &dyn BlockDriver, off: u64, len: u64) -> Result<MapEntry> {
    let mut d = top;
    let mut depth = 0u32;
    let mut n = len;
    loop {
        let st = d.block_status(off, n)?;
        n = st.len;
        let e =
            |present, zero, data, compressed, offset: Option<u64>, d: &dyn BlockDriver| MapEntry {
                start: off,
                length: n,
                depth,
                present,
                zero,
                data,
                compressed,
                filename: offset.map(|_| {
                    d.data_file_name(off)
                        .unwrap_or_else(|| d.filename().display().to_string())
                }),
                offset,
            };
        match st.alloc {
            Alloc::Data { host, compressed } => {
                return Ok(e(true, false, true, compressed, host, d))
            }
            Alloc::Zero { host } => {
                let data = host.is_some() && d.zero_holes_are_data();
                return Ok(e(true, true, data, false, host, d));
            }
            Alloc::DataZero { host } => return Ok(e(true, true, true, false, host, d)),
            Alloc::Unallocated { host } => match d.backing() {
                Some(b) if off < b.virtual_size() => {
                    n = n.min(b.virtual_size() - off);
                    d = b;
                    depth += 1;
                }
                // Nothing below, or past the end of the backing file: reads as zero.
                _ => return Ok(e(false, true, false, false, host, d)),
            },
        }
    }
}
