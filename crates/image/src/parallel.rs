//! Work split into fixed chunks of a disk and spread over a few threads (rebase and commit
//! compare and copy independent ranges; the drivers serialize their metadata themselves).

use crate::error::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `f(offset, len)` for every `chunk`-sized piece of `[0, size)` on up to `threads`
/// threads, and reports progress after each piece. The first error stops the remaining work
/// and is returned.
pub(crate) fn for_each_chunk(
    size: u64,
    chunk: u64,
    threads: usize,
    f: &(dyn Fn(u64, u64) -> Result<()> + Sync),
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let chunk = chunk.max(1);
    let n = size.div_ceil(chunk);
    let threads = threads
        .min(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
        .clamp(1, n.clamp(1, 64) as usize);
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let first_err = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                if i >= n {
                    return;
                }
                let off = i * chunk;
                let len = chunk.min(size - off);
                if let Err(e) = f(off, len) {
                    stop.store(true, Ordering::Relaxed);
                    let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    g.get_or_insert(e);
                    return;
                }
                let d = done.fetch_add(len, Ordering::Relaxed) + len;
                progress(d, size);
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
