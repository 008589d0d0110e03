//! Cluster compression as QEMU does it: raw deflate with a 4 KiB window (zlib), or one zstd frame.

use super::header::Compression;
use crate::error::{corrupt, Result};
use flate2::{Compress, Decompress, FlushCompress, FlushDecompress, Status};

/// Compresses one cluster. Returns None when the result would not be smaller than a cluster,
/// in which case QEMU (and we) store the cluster uncompressed.
pub fn compress(kind: Compression, input: &[u8], cluster_size: usize) -> Option<Vec<u8>> {
    let limit = cluster_size - 1;
    if looks_random(input) {
        return None;
    }
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

/// Whether a cluster is (almost certainly) incompressible: its byte entropy is as high as that
/// of random data of the same length. QEMU compresses such clusters and throws the result away;
/// skipping the attempt is the largest single saving of `convert -c` on mixed disks. Only used
/// for clusters of 16 KiB and more, where the estimate is tight; a miss costs a slightly larger
/// output, never wrong data.
pub fn looks_random(b: &[u8]) -> bool {
    let n = b.len();
    if n < 16384 {
        return false;
    }
    let mut h = [[0u32; 256]; 4];
    let mut chunks = b.chunks_exact(4);
    for c in &mut chunks {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &x in chunks.remainder() {
        h[0][x as usize] += 1;
    }
    let nf = n as f64;
    let mut e = 0.0;
    for i in 0..256 {
        let c = h.iter().map(|t| t[i]).sum::<u32>() as f64;
        if c > 0.0 {
            let p = c / nf;
            e -= p * p.log2();
        }
    }
    // Expected entropy of n random bytes is about 8 - 255 / (2 n ln 2); allow twice that bias.
    let bias = 255.0 / (2.0 * nf * std::f64::consts::LN_2);
    e > 8.0 - 2.0 * bias - 0.002
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(n: usize, mut s: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    #[test]
    fn random_is_skipped_text_is_not() {
        assert!(looks_random(&xorshift(65536, 7)));
        assert!(looks_random(&xorshift(2 << 20, 9)));
        let text: Vec<u8> = b"the quick brown fox jumps over the lazy dog "
            .iter()
            .cycle()
            .take(65536)
            .copied()
            .collect();
        assert!(!looks_random(&text));
        // Random 4 KiB repeated: compressible, and its histogram is visibly less flat.
        let rep: Vec<u8> = xorshift(4096, 3).into_iter().cycle().take(65536).collect();
        assert!(!looks_random(&rep));
        assert!(!looks_random(&vec![0u8; 65536]));
    }

    #[test]
    fn round_trip_both_kinds() {
        let text: Vec<u8> = b"abcabcabd".iter().cycle().take(65536).copied().collect();
        for kind in [Compression::Zlib, Compression::Zstd] {
            let c = compress(kind, &text, 65536).expect("compressible");
            let mut out = vec![0u8; 65536];
            // Trailing bytes after the stream, as in a real image, must not matter.
            let mut padded = c.clone();
            padded.extend_from_slice(&[0xaa; 300]);
            decompress(kind, &padded, &mut out).unwrap();
            assert_eq!(out, text);
        }
    }
}
