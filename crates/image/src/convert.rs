//! The copy engine behind `convert`: sparse-aware, parallel, bounded memory.
//!
//! Worker threads plan, read, detect zeros and compress fixed-size chunks; one writer applies
//! the results in guest order (or as they come with `out_of_order`), so the target's layout is
//! sequential like qemu-img's and compression uses every core. Zero and unallocated ranges are
//! never written as data.

use crate::driver::{Alloc, BlockDriver};
use crate::error::{Error, Result};
use crate::map::chain_status;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Write data clusters compressed (-c).
    pub compress: bool,
    /// Zero runs of at least this many bytes are not written (-S); 0 writes everything.
    pub sparse_size: u64,
    /// Parallel workers (-m).
    pub threads: usize,
    /// Allow out-of-order writes (-W).
    pub out_of_order: bool,
    /// The target already reads as zero everywhere (fresh image, or --target-is-zero).
    pub target_zero_init: bool,
    /// The target has a backing file (-B): copy only what the source's top layer holds.
    pub target_has_backing: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            compress: false,
            sparse_size: 4096,
            threads: 8,
            out_of_order: false,
            target_zero_init: true,
            target_has_backing: false,
        }
    }
}

#[derive(Debug)]
enum Op {
    Data(u64, Vec<u8>),
    /// Part of a read buffer shared by the chunk's pieces (no copy per data run); the last
    /// piece written returns the buffer to the pool.
    Piece(u64, Arc<Vec<u8>>, Range<usize>),
    Compressed(u64, Vec<u8>),
    Zero(u64, u64),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Data,
    Zero,
    /// Left to the target's backing file.
    Skip,
}

struct Chunk {
    src: usize,
    src_off: u64,
    dst_off: u64,
    len: u64,
}

const CHUNK: u64 = 2 << 20;
/// Spare read buffers kept for reuse (each at most a chunk).
const POOL_MAX: usize = 4;

fn is_zero(b: &[u8]) -> bool {
    // SAFETY: u64 has no invalid bit patterns; align_to only reinterprets the aligned middle.
    let (pre, mid, post) = unsafe { b.align_to::<u64>() };
    pre.iter().all(|&x| x == 0) && post.iter().all(|&x| x == 0) && mid.iter().all(|&x| x == 0)
}

/// Copies the concatenation of `srcs` into `dst`. `progress(done, total)` is called by the
/// writer after each chunk.
pub fn convert(
    srcs: &[&dyn BlockDriver],
    dst: &dyn BlockDriver,
    o: &ConvertOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<()> {
    let total: u64 = srcs.iter().map(|s| s.virtual_size()).sum();
    if total > dst.virtual_size() {
        return Err(Error::Invalid(
            "Target image is smaller than the source".into(),
        ));
    }
    for s in srcs {
        // Only mapped data is read, in large requests: readahead would just fill holes.
        if s.format() == crate::driver::Format::Raw {
            crate::fileio::advise_no_readahead(s.file());
        }
    }
    let cs = dst.write_granularity().unwrap_or(4096);
    // Block: the unit of classification (a target cluster; a page for raw targets).
    let block = cs;
    let chunk_len = CHUNK.max(block) / block * block;
    let mut chunks = Vec::new();
    let mut dst_off = 0;
    for (i, s) in srcs.iter().enumerate() {
        let size = s.virtual_size();
        let mut off = 0;
        while off < size {
            let len = (chunk_len - dst_off % chunk_len).min(size - off);
            chunks.push(Chunk {
                src: i,
                src_off: off,
                dst_off,
                len,
            });
            off += len;
            dst_off += len;
        }
    }
    let threads = o
        .threads
        .min(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        )
        .max(1);
    let window = threads * 3;
    let next = AtomicUsize::new(0);
    let written = Mutex::new(0usize);
    let cv = Condvar::new();
    let abort = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(usize, Result<Vec<Op>>)>();
    let pool = Pool::default();

    std::thread::scope(|sc| -> Result<()> {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, written, cv, abort, chunks, pool) =
                (&next, &written, &cv, &abort, &chunks, &pool);
            sc.spawn(move || loop {
                let idx = next.fetch_add(1, Ordering::Relaxed);
                if idx >= chunks.len() || abort.load(Ordering::Relaxed) {
                    return;
                }
                // Bound memory: stay within a window of the writer.
                {
                    let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
                    while idx >= *w + window && !abort.load(Ordering::Relaxed) {
                        w = cv.wait(w).unwrap_or_else(|p| p.into_inner());
                    }
                }
                let c = &chunks[idx];
                let r = plan(srcs[c.src], dst, c, block, o, pool);
                if tx.send((idx, r)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut pending: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
        let mut expect = 0usize;
        let mut done = 0u64;
        let mut result = Ok(());
        for (idx, r) in rx.iter() {
            let ops = match r {
                Ok(ops) => ops,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if o.out_of_order {
                if let Err(e) = apply(dst, ops, o, &pool) {
                    result = Err(e);
                    break;
                }
                done += chunks[idx].len;
                expect += 1;
            } else {
                pending.insert(idx, ops);
                let mut failed = None;
                while let Some(ops) = pending.remove(&expect) {
                    if let Err(e) = apply(dst, ops, o, &pool) {
                        failed = Some(e);
                        break;
                    }
                    done += chunks[expect].len;
                    expect += 1;
                }
                if let Some(e) = failed {
                    result = Err(e);
                    break;
                }
            }
            *written.lock().unwrap_or_else(|p| p.into_inner()) = expect;
            cv.notify_all();
            progress(done, total);
        }
        if result.is_err() {
            abort.store(true, Ordering::Relaxed);
            cv.notify_all();
            // Drain so that workers blocked on send finish.
            for _ in rx.iter() {}
        }
        result
    })?;
    progress(total, total);
    Ok(())
}

/// Read buffers go back and forth between workers and the writer instead of being allocated
/// (and zero-filled, and faulted in) for every chunk.
#[derive(Default)]
struct Pool(Mutex<Vec<Vec<u8>>>);

impl Pool {
    /// A buffer of `len` bytes with unspecified content (callers overwrite all of it).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        v.resize(len, 0);
        v
    }
    fn give(&self, v: Vec<u8>) {
        let mut p = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() < POOL_MAX {
            p.push(v);
        }
    }
}

fn apply(dst: &dyn BlockDriver, ops: Vec<Op>, o: &ConvertOptions, pool: &Pool) -> Result<()> {
    for op in ops {
        match op {
            Op::Data(off, buf) => {
                dst.write_at(&buf, off)?;
                pool.give(buf);
            }
            Op::Piece(off, buf, r) => {
                dst.write_at(&buf[r], off)?;
                if let Ok(buf) = Arc::try_unwrap(buf) {
                    pool.give(buf);
                }
            }
            Op::Compressed(off, c) => dst.write_compressed_data(off, &c)?,
            Op::Zero(off, len) => {
                if !o.target_zero_init {
                    dst.write_zeroes(off, len, true)?
                }
            }
        }
    }
    Ok(())
}

/// Status of the source at `off`: what to do with a prefix of at most `len` bytes.
fn kind_at(src: &dyn BlockDriver, off: u64, len: u64, o: &ConvertOptions) -> Result<(Kind, u64)> {
    if o.target_has_backing {
        let st = src.block_status(off, len)?;
        let k = match st.alloc {
            Alloc::Data { .. } => Kind::Data,
            Alloc::Zero { .. } | Alloc::DataZero { .. } => Kind::Zero,
            Alloc::Unallocated { .. } => Kind::Skip,
        };
        return Ok((k, st.len));
    }
    let e = chain_status(src, off, len)?;
    Ok((
        if e.data && !e.zero {
            Kind::Data
        } else {
            Kind::Zero
        },
        e.length,
    ))
}

/// Reads and prepares one chunk. Runs on a worker thread.
fn plan(
    src: &dyn BlockDriver,
    dst: &dyn BlockDriver,
    c: &Chunk,
    block: u64,
    o: &ConvertOptions,
    pool: &Pool,
) -> Result<Vec<Op>> {
    // 1. Classify into runs, widening data runs to whole blocks of the target.
    let mut runs: Vec<(Kind, u64, u64)> = Vec::new(); // (kind, offset in chunk, len)
    let mut pos = 0u64;
    while pos < c.len {
        let (mut k, n) = kind_at(src, c.src_off + pos, c.len - pos, o)?;
        if k == Kind::Zero && o.sparse_size == 0 {
            k = Kind::Data;
        }
        let abs = c.dst_off + pos;
        let end = if k != Kind::Data && abs.is_multiple_of(block) && n >= block {
            pos + n / block * block
        } else if k != Kind::Data && pos + n == c.len {
            c.len
        } else {
            // Data, or a sliver of something else inside a block that holds data.
            let e = (abs + n).div_ceil(block) * block - c.dst_off;
            if k != Kind::Data {
                k = Kind::Data;
            }
            e.min(c.len)
        };
        match runs.last_mut() {
            Some((lk, lo, ll)) if *lk == k && *lo + *ll == pos => *ll += end - pos,
            _ => runs.push((k, pos, end - pos)),
        }
        pos = end;
    }
    // 2. Read data runs; skip zero blocks; compress if asked.
    let gran = if o.sparse_size == 0 {
        u64::MAX
    } else {
        o.sparse_size.div_ceil(block) * block
    };
    let mut ops = Vec::new();
    for (k, off, len) in runs {
        let dst_abs = c.dst_off + off;
        match k {
            Kind::Skip => {}
            Kind::Zero => ops.push(Op::Zero(dst_abs, len)),
            Kind::Data => {
                let mut buf = pool.take(len as usize);
                src.read_at(&mut buf, c.src_off + off)?;
                let buf = Arc::new(buf);
                let unit = if o.compress { block } else { gran.min(len) };
                let mut p = 0u64;
                let mut data_start: Option<u64> = None;
                let flush = |ops: &mut Vec<Op>, s: u64, e: u64, buf: &Arc<Vec<u8>>| {
                    ops.push(Op::Piece(dst_abs + s, buf.clone(), s as usize..e as usize));
                };
                while p < len {
                    // Units are aligned to the target's grid.
                    let a = dst_abs + p;
                    let ue = ((a / unit + 1) * unit).min(dst_abs + len) - dst_abs;
                    let piece = &buf[p as usize..ue as usize];
                    let zero = o.sparse_size != 0 && is_zero(piece);
                    if o.compress {
                        if zero {
                            ops.push(Op::Zero(a, ue - p));
                        } else if a.is_multiple_of(block)
                            && (piece.len() as u64 == block
                                || a + piece.len() as u64 == dst.virtual_size())
                        {
                            match dst.compress_cluster(piece)? {
                                Some(z) => ops.push(Op::Compressed(a, z)),
                                None => ops.push(Op::Data(a, piece.to_vec())),
                            }
                        } else {
                            ops.push(Op::Data(a, piece.to_vec()));
                        }
                    } else if zero {
                        if let Some(s) = data_start.take() {
                            flush(&mut ops, s, p, &buf);
                        }
                        ops.push(Op::Zero(a, ue - p));
                    } else if data_start.is_none() {
                        data_start = Some(p);
                    }
                    p = ue;
                }
                if let Some(s) = data_start {
                    flush(&mut ops, s, len, &buf);
                }
            }
        }
    }
    Ok(ops)
}
