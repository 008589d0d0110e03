//! qemu-img commit: the data that an image and its backing files above a base allocate is
//! copied into the base, as QEMU's active commit (a mirror of the top's view restricted to what
//! is allocated above the base) does. Emptying the top afterwards is `BlockDriver::make_empty`.
//!
//! Nothing is removed from any image before the base holds the data, so a kill at any moment
//! leaves every image's guest-visible content as it was.

use crate::driver::{Alloc, BlockDriver, Preallocation};
use crate::error::Result;
use crate::parallel::for_each_chunk;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CHUNK: u64 = 2 << 20;

#[derive(Debug, Clone)]
pub struct CommitOptions {
    /// Bytes per second (-r); 0 is unlimited.
    pub rate_limit: u64,
    pub threads: usize,
}

impl Default for CommitOptions {
    fn default() -> Self {
        CommitOptions {
            rate_limit: 0,
            threads: 4,
        }
    }
}

/// The layer of `top`'s backing chain that `name` designates, as QEMU's
/// bdrv_find_backing_image matches it: for each layer, `name` resolved relative to that layer
/// and its backing file's path, both canonicalized, must be the same file. Returns the depth
/// (1 is the immediate backing file).
pub fn find_backing(top: &dyn BlockDriver, name: &str) -> Option<usize> {
    let mut layer = top;
    let mut depth = 0;
    while let Some(b) = layer.backing() {
        depth += 1;
        let cand = crate::chain::resolve_backing(layer.filename(), name);
        if let (Ok(x), Ok(y)) = (
            std::fs::canonicalize(&cand),
            std::fs::canonicalize(b.filename()),
        ) {
            if x == y {
                return Some(depth);
            }
        }
        layer = b;
    }
    None
}

/// The layer at `depth` below `top` (0 is `top`).
pub fn layer_at(top: &dyn BlockDriver, depth: usize) -> Option<&dyn BlockDriver> {
    let mut l = top;
    for _ in 0..depth {
        l = l.backing()?;
    }
    Some(l)
}

/// What the layers above the base say about a range.
enum Above {
    Data,
    Zero,
    /// Nothing above the base: the base already shows it.
    No,
}

/// Status of `[off, off + len)` in the layers of `top` above `base_depth`, for a prefix.
fn above_base(
    top: &dyn BlockDriver,
    base_depth: usize,
    off: u64,
    len: u64,
) -> Result<(Above, u64)> {
    let mut l = top;
    let mut n = len;
    for d in 0..base_depth {
        let st = l.block_status(off, n)?;
        n = st.len.clamp(1, n);
        match st.alloc {
            Alloc::Data { .. } => return Ok((Above::Data, n)),
            Alloc::Zero { .. } | Alloc::DataZero { .. } => return Ok((Above::Zero, n)),
            Alloc::Unallocated { .. } => {}
        }
        if d + 1 == base_depth {
            break;
        }
        match l.backing() {
            // A shorter intermediate layer reads as zeros past its end, as if it held them.
            Some(b) if off >= b.virtual_size() => return Ok((Above::Zero, n)),
            Some(b) => {
                n = n.min(b.virtual_size() - off);
                l = b;
            }
            None => return Ok((Above::No, n)),
        }
    }
    Ok((Above::No, n))
}

/// Copies everything `top` and its layers above `base_depth` allocate into `base` (a
/// writable handle of the layer at `base_depth`), growing the base to the top's size first.
pub fn commit(
    top: &dyn BlockDriver,
    base_depth: usize,
    base: &dyn BlockDriver,
    o: &CommitOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let size = top.virtual_size();
    if size > base.virtual_size() {
        base.resize(size, Preallocation::Off, false)?;
    }
    let limiter = Limiter::new(o.rate_limit);
    let work = |start: u64, len: u64| -> Result<()> {
        let end = start + len;
        let mut buf = Vec::new();
        let mut pos = start;
        while pos < end {
            let (what, n) = above_base(top, base_depth, pos, end - pos)?;
            match what {
                Above::Data => {
                    buf.resize(n as usize, 0);
                    top.read_at(&mut buf, pos)?;
                    base.write_at(&buf, pos)?;
                    limiter.account(n);
                }
                Above::Zero => base.write_zeroes(pos, n, true)?,
                Above::No => {}
            }
            pos += n;
        }
        Ok(())
    };
    let threads = if o.rate_limit > 0 { 1 } else { o.threads };
    for_each_chunk(size, CHUNK, threads, &work, progress)?;
    base.flush()
}

/// Throttles copying to a number of bytes per second (commit -r).
struct Limiter {
    rate: u64,
    start: Instant,
    done: Mutex<u64>,
}

impl Limiter {
    fn new(rate: u64) -> Limiter {
        Limiter {
            rate,
            start: Instant::now(),
            done: Mutex::new(0),
        }
    }
    fn account(&self, n: u64) {
        if self.rate == 0 {
            return;
        }
        let due = {
            let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
            *d = d.saturating_add(n);
            Duration::from_secs_f64(*d as f64 / self.rate as f64)
        };
        let el = self.start.elapsed();
        if due > el {
            std::thread::sleep(due - el);
        }
    }
}
