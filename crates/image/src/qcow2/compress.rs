//! Cluster compression as QEMU does it: raw deflate with a 4 KiB window (zlib), or one zstd frame.

use super::header::Compression;
use crate::error::{corrupt, Result};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

/// Compresses one cluster. Returns None when the result would not be smaller than a cluster,
/// in which case QEMU (and we) store the cluster uncompressed.
pub fn compress(kind: Compression, input: &[u8], cluster_size: usize) -> Option<Vec<u8>> {
    let limit = cluster_size - 1;
    match kind {
        Compression::Zlib => {
            // QEMU: deflateInit2(Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, ...). A 12-bit window
            // matters: QEMU inflates with windowBits -12 and rejects longer back-references.
            let mut c = Compress::new_with_window_bits(flate2::Compression::default(), false, 12);
            let mut out = Vec::with_capacity(limit);
            match c.compress_vec(input, &mut out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) if out.len() <= limit => Some(out),
                _ => None,
            }
        }
        Compression::Zstd => {
            let out = zstd::bulk::compress(input, zstd::DEFAULT_COMPRESSION_LEVEL).ok()?;
            (out.len() <= limit).then_some(out)
        }
    }
}

/// Decompresses one cluster into `out` (exactly a cluster). `input` may carry trailing bytes
/// of the next compressed cluster, as the stored length is rounded up to sectors.
pub fn decompress(kind: Compression, input: &[u8], out: &mut [u8]) -> Result<()> {
    match kind {
        Compression::Zlib => {
            let mut d = Decompress::new_with_window_bits(false, 12);
            match d.decompress(input, out, FlushDecompress::Finish) {
                Ok(_) if d.total_out() as usize == out.len() => Ok(()),
                Ok(_) => corrupt("Compressed cluster is too short"),
                Err(e) => corrupt(format!("Could not decompress cluster: {e}")),
            }
        }
        Compression::Zstd => {
            use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};
            let mut d = Decoder::new().map_err(crate::Error::Io)?;
            let mut inb = InBuffer::around(input);
            let mut outb = OutBuffer::around(out);
            // Stop as soon as the cluster is full: whatever follows is not ours.
            loop {
                let before = (inb.pos(), outb.pos());
                let hint = d
                    .run(&mut inb, &mut outb)
                    .or_else(|e| corrupt(format!("Could not decompress cluster: {e}")))?;
                if outb.pos() == outb.capacity() {
                    return Ok(());
                }
                if hint == 0 || (inb.pos(), outb.pos()) == before || inb.pos() == inb.src.len() {
                    return corrupt("Compressed cluster is too short");
                }
            }
        }
    }
}
