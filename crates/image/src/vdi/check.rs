//! `qemu-img check` for vdi: the block map against itself and the header's allocation count,
//! with QEMU's messages. Like QEMU, no repair.

use super::header::is_allocated;
use super::Vdi;
use crate::driver::{CheckReport, Repair};
use crate::error::{Error, Result};

pub fn check(img: &Vdi, repair: Repair) -> Result<CheckReport> {
    if repair != Repair::None {
        return Err(Error::Unsupported(
            "This image format does not support checks".into(),
        ));
    }
    let hdr = img.header();
    let bmap = img.block_map();
    let blocks = hdr.blocks_in_image;
    let mut r = CheckReport::default();
    // Which data blocks are taken (QEMU keeps a u32 per block; one bit does).
    let mut used = vec![0u64; (blocks as usize).div_ceil(64)];
    let mut allocated: u32 = 0;
    for (block, &e) in bmap.iter().enumerate() {
        if !is_allocated(e) {
            continue;
        }
        if e < blocks {
            allocated += 1;
            let (w, b) = (e as usize / 64, e % 64);
            if used[w] >> b & 1 == 0 {
                used[w] |= 1 << b;
            } else {
                // QEMU prints the block index twice here.
                r.messages
                    .push(format!("ERROR: block index {e} also used by {e}"));
                r.corruptions += 1;
            }
        } else {
            r.messages
                .push(format!("ERROR: block index {block} too large, is {e}"));
            r.corruptions += 1;
        }
    }
    if allocated != hdr.blocks_allocated {
        r.messages.push(format!(
            "ERROR: allocated blocks mismatch, is {allocated}, should be {}",
            hdr.blocks_allocated
        ));
        r.corruptions += 1;
    }
    Ok(r)
}
