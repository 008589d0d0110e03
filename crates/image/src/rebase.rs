//! Safe rebase (qemu-img rebase without -u): before an image's backing file changes, every
//! range the image does not allocate itself and where the old and the new backing file read
//! differently is copied into the image, so that its guest-visible content stays the same.
//!
//! A kill at any moment is harmless: the copied data equals what the old backing file shows,
//! and the header switch (`BlockDriver::change_backing_file`) comes last.

use crate::driver::{Alloc, BlockDriver};
use crate::error::Result;
use crate::parallel::for_each_chunk;

/// qemu-img's IO_BUF_SIZE: the unit of work (and of progress).
const CHUNK: u64 = 2 << 20;

#[derive(Debug, Clone)]
pub struct RebaseOptions {
    /// Write the copied clusters compressed (-c).
    pub compress: bool,
    pub threads: usize,
}

impl Default for RebaseOptions {
    fn default() -> Self {
        RebaseOptions {
            compress: false,
            threads: 4,
        }
    }
}

/// The write granularity qemu-img uses: the (sub)cluster, or the cluster when compressing.
fn write_align(top: &dyn BlockDriver, compress: bool) -> u64 {
    let Some(cs) = top.cluster_size().filter(|&c| c > 0) else {
        return 512;
    };
    if compress {
        return cs;
    }
    let extended = top
        .info()
        .ok()
        .and_then(|i| i.qcow2)
        .is_some_and(|q| q.extended_l2);
    if extended {
        (cs / 32).max(1)
    } else {
        cs
    }
}

/// Copies into `top` what it needs to keep its content when its backing file changes from
/// `old` to `new` (`None`: no backing file, reads as zeros). `progress(done, total)`.
pub fn copy_differences(
    top: &dyn BlockDriver,
    old: Option<&dyn BlockDriver>,
    new: Option<&dyn BlockDriver>,
    o: &RebaseOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let size = top.virtual_size();
    let align = write_align(top, o.compress);
    let cs = top.cluster_size().unwrap_or(align).max(1);
    let chunk = CHUNK.max(align).div_ceil(align) * align;
    let ctx = Ctx {
        top,
        old,
        new,
        size,
        old_size: old.map_or(0, |b| b.virtual_size()),
        new_size: new.map_or(0, |b| b.virtual_size()),
        align,
        cs,
        compress: o.compress,
    };
    for_each_chunk(
        size,
        chunk,
        o.threads,
        &|off, len| ctx.chunk(off, len),
        progress,
    )?;
    top.flush()
}

struct Ctx<'a> {
    top: &'a dyn BlockDriver,
    old: Option<&'a dyn BlockDriver>,
    new: Option<&'a dyn BlockDriver>,
    size: u64,
    old_size: u64,
    new_size: u64,
    align: u64,
    cs: u64,
    compress: bool,
}

/// Reads `buf.len()` bytes of `b`'s view at `off`; past its end (or without it) zeros.
fn read_view(b: Option<&dyn BlockDriver>, b_size: u64, buf: &mut [u8], off: u64) -> Result<()> {
    let n = (buf.len() as u64).min(b_size.saturating_sub(off)) as usize;
    if let (Some(b), true) = (b, n > 0) {
        b.read_at(&mut buf[..n], off)?;
    }
    buf[n..].fill(0);
    Ok(())
}

impl Ctx<'_> {
    fn chunk(&self, start: u64, len: u64) -> Result<()> {
        let end = start + len;
        let mut bo = Vec::new();
        let mut bn = Vec::new();
        let mut pos = start;
        while pos < end {
            let st = self.top.block_status(pos, end - pos)?;
            let n = st.len.clamp(1, end - pos);
            if matches!(st.alloc, Alloc::Unallocated { .. }) {
                self.run(pos, n, &mut bo, &mut bn)?;
            }
            pos += n;
        }
        Ok(())
    }

    /// One range the top image does not allocate: compare the backing files' views there and
    /// copy the old view wherever it differs.
    fn run(&self, pos: u64, n: u64, bo: &mut Vec<u8>, bn: &mut Vec<u8>) -> Result<()> {
        bo.resize(n as usize, 0);
        bn.resize(n as usize, 0);
        read_view(self.old, self.old_size, bo, pos)?;
        read_view(self.new, self.new_size, bn, pos)?;
        let end = pos + n;
        // Pieces on the write grid; consecutive pieces that differ are written together.
        let mut run_start: Option<u64> = None;
        let mut p = pos;
        while p < end {
            let e = ((p / self.align + 1) * self.align).min(end);
            let (a, b) = ((p - pos) as usize, (e - pos) as usize);
            if bo[a..b] != bn[a..b] {
                if self.compress {
                    self.write(p, e, pos, bo)?;
                } else if run_start.is_none() {
                    run_start = Some(p);
                }
            } else if let Some(s) = run_start.take() {
                self.write(s, p, pos, bo)?;
            }
            p = e;
        }
        if let Some(s) = run_start {
            self.write(s, end, pos, bo)?;
        }
        Ok(())
    }

    /// Writes the old view of `[s, e)` into the top image (`buf` holds the range from `base`).
    fn write(&self, s: u64, e: u64, base: u64, buf: &[u8]) -> Result<()> {
        if s >= self.old_size {
            // The old backing file ended here: the image read zeros, and must keep doing so.
            return self.top.write_zeroes(s, e - s, false);
        }
        let data = &buf[(s - base) as usize..(e - base) as usize];
        let whole_cluster =
            s.is_multiple_of(self.cs) && (e - s == self.cs || (e == self.size && e - s < self.cs));
        if self.compress && whole_cluster {
            self.top.write_compressed(s, data)
        } else {
            self.top.write_at(data, s)
        }
    }
}
