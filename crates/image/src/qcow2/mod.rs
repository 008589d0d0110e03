//! qcow2, versions 2 (compat 0.10) and 3 (compat 1.1), as QEMU reads and writes it.
//!
//! Written by hand: no crate handles compressed writes, zstd, internal snapshots and
//! extended L2 entries together. The specification is QEMU's docs/interop/qcow2.txt.
//!
//! Crash safety: all metadata is written through (the caches hold clean copies only), in the
//! order refcount -> data -> L2 entry -> L1 entry, and references are dropped before refcounts
//! are decremented. A kill at any instant leaves at worst clusters whose refcount is too high.

pub mod amend;
pub mod bitmap;
mod cache;
pub mod check;
pub mod compress;
pub mod create;
mod empty;
pub mod header;
pub mod l2;
mod refcount;
pub mod snapshot;
mod snapview;

use self::cache::TableCache;
use self::header::{Compression, Header};
use self::l2::{Cluster, CompressedLayout, Sub, OFFSET_MASK, OFLAG_COPIED, OFLAG_ZERO};
use self::snapshot::Snapshot;
use crate::driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
use crate::error::{corrupt, invalid, Error, Result};
use crate::fileio;
use crate::info::{ImageInfo, Qcow2Info, SnapshotInfo};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Host offsets are 56 bits in L2 entries; stay well inside.
pub const MAX_HOST_OFFSET: u64 = 1 << 56;
/// Caches: bounded whatever the image size.
const L2_CACHE_BYTES: u64 = 16 << 20;
const RC_CACHE_BYTES: u64 = 4 << 20;

/// Geometry fixed at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub cluster_bits: u32,
    pub cs: u64,
    pub l2_bits: u32,
    pub l2_entries: u64,
    pub extended: bool,
    pub sc_size: u64,
    pub rc_order: u32,
    pub rb_bits: u32,
    pub rb_entries: u64,
    pub comp: CompressedLayout,
    pub compression: Compression,
    pub version: u32,
}

impl Geometry {
    fn new(h: &Header) -> Geometry {
        let extended = h.extended_l2();
        let l2_bits = h.cluster_bits - 3 - extended as u32;
        let rb_bits = h.cluster_bits + 3 - h.refcount_order;
        Geometry {
            cluster_bits: h.cluster_bits,
            cs: 1 << h.cluster_bits,
            l2_bits,
            l2_entries: 1 << l2_bits,
            extended,
            sc_size: if extended {
                (1u64 << h.cluster_bits) / 32
            } else {
                1 << h.cluster_bits
            },
            rc_order: h.refcount_order,
            rb_bits,
            rb_entries: 1 << rb_bits,
            comp: CompressedLayout::new(h.cluster_bits),
            compression: h.compression,
            version: h.version,
        }
    }
    /// u64 words per L2 entry.
    fn w(&self) -> usize {
        1 + self.extended as usize
    }
    fn l1_index(&self, off: u64) -> usize {
        (off >> (self.cluster_bits + self.l2_bits)) as usize
    }
    fn l2_index(&self, off: u64) -> usize {
        ((off >> self.cluster_bits) & (self.l2_entries - 1)) as usize
    }
    fn l2_span(&self) -> u64 {
        1 << (self.cluster_bits + self.l2_bits)
    }
}

/// Mutable metadata, behind the driver's lock.
pub(crate) struct Meta {
    pub f: Arc<File>,
    pub g: Geometry,
    pub hdr: Header,
    pub l1: Vec<u64>,
    l2: TableCache<Vec<u64>>,
    pub rct: Vec<u64>,
    rcb: TableCache<Vec<u8>>,
    /// First cluster that may be free.
    free_hint: u64,
    /// Where the last multi-cluster allocation ended.
    run_hint: u64,
    /// First cluster past every cluster with a non-zero refcount.
    end: u64,
    /// Next byte for compressed data; 0 when no cluster is open for it.
    comp_cursor: u64,
    pub file_len: u64,
    pub snapshots: Vec<Snapshot>,
    /// Guest writes began: autoclear bits we do not maintain were cleared.
    write_started: bool,
    /// Persistent dirty bitmaps: the directory, and the tracking of guest writes.
    pub(crate) bm: bitmap::State,
    /// One decompressed cluster, keyed by its L2 entry's host offset.
    comp_cache: Option<(u64, Vec<u8>)>,
    /// Bumped whenever compressed data may have been freed or rewritten, so a cluster
    /// decompressed without the lock is only cached if nothing changed meanwhile.
    comp_gen: u64,
}

/// Where a guest range of the active layer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    Data(u64),
    Zero(Option<u64>),
    Unallocated(Option<u64>),
    Compressed { offset: u64, len: u64, guest: u64 },
}

impl Meta {
    pub(crate) fn l2_load(&mut self, off: u64) -> Result<&mut Vec<u64>> {
        if !self.l2.contains(off) {
            let cs = self.g.cs;
            if !off.is_multiple_of(cs) {
                return corrupt(format!("L2 table offset {off:#x} unaligned"));
            }
            if off + cs > self.file_len.div_ceil(cs) * cs {
                return corrupt(format!("L2 table at {off:#x} is past the end of the file"));
            }
            let mut raw = vec![0u8; cs as usize];
            fileio::read_full(&self.f, &mut raw, off)?;
            let t: Vec<u64> = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
                .collect();
            self.l2.insert(off, t);
        }
        Ok(self.l2.get_mut(off).expect("loaded"))
    }

    /// Raw L2 entry and bitmap for the guest cluster at `off`, with the L2 table's offset.
    fn entry(&mut self, off: u64) -> Result<(u64, u64, u64)> {
        let g = self.g;
        let l1i = g.l1_index(off);
        let Some(&l1e) = self.l1.get(l1i) else {
            return Ok((0, 0, 0));
        };
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 {
            return Ok((0, 0, 0));
        }
        let i = g.l2_index(off) * g.w();
        let t = self.l2_load(l2off)?;
        let e = t[i];
        let bm = if g.extended { t[i + 1] } else { 0 };
        Ok((e, bm, l2off))
    }

    fn decode(&self, e: u64) -> Result<Cluster> {
        l2::decode(e, self.g.comp, self.g.cs, self.g.extended)
    }

    fn sub_at(&mut self, off: u64) -> Result<Sub> {
        let (e, bm, _) = self.entry(off)?;
        let c = self.decode(e)?;
        if !self.g.extended {
            return Ok(match c {
                Cluster::Unallocated => Sub::Unallocated(None),
                Cluster::ZeroPlain => Sub::Zero(None),
                Cluster::ZeroAlloc(h) => Sub::Zero(Some(h)),
                Cluster::Normal(h) => Sub::Data(h),
                Cluster::Compressed { offset, len } => Sub::Compressed { offset, len },
            });
        }
        let i = ((off & (self.g.cs - 1)) / self.g.sc_size) as u32;
        l2::subcluster(c, bm, i, self.g.sc_size)
    }

    /// The mapping at `off` and how many bytes (at most `max`) it covers contiguously.
    fn map(&mut self, off: u64, max: u64) -> Result<(Map, u64)> {
        let g = self.g;
        let first = self.sub_at(off)?;
        let in_sc = off & (g.sc_size - 1);
        if let Sub::Compressed { offset, len } = first {
            let cstart = off & !(g.cs - 1);
            let n = (cstart + g.cs - off).min(max);
            return Ok((
                Map::Compressed {
                    offset,
                    len,
                    guest: cstart,
                },
                n,
            ));
        }
        let m = match first {
            Sub::Data(h) => Map::Data(h + in_sc),
            Sub::Zero(h) => Map::Zero(h.map(|h| h + in_sc)),
            Sub::Unallocated(h) => Map::Unallocated(h.map(|h| h + in_sc)),
            Sub::Compressed { .. } => unreachable!(),
        };
        let mut n = (g.sc_size - in_sc).min(max);
        let table_end = (off & !(g.l2_span() - 1)) + g.l2_span();
        while n < max && off + n < table_end {
            let next = off + n;
            let s = self.sub_at(next)?;
            let same = match (m, s) {
                (Map::Data(h), Sub::Data(h2)) => h2 == h + n,
                (Map::Zero(None), Sub::Zero(None)) => true,
                (Map::Zero(Some(h)), Sub::Zero(Some(h2))) => h2 == h + n,
                (Map::Unallocated(None), Sub::Unallocated(None)) => true,
                (Map::Unallocated(Some(h)), Sub::Unallocated(Some(h2))) => h2 == h + n,
                _ => false,
            };
            if !same {
                break;
            }
            n += g.sc_size.min(max - n);
        }
        Ok((m, n))
    }

    /// Reads the compressed cluster whose data starts at `offset` (cached: sequential readers
    /// ask for the same cluster in pieces).
    fn drop_comp_cache(&mut self) {
        self.comp_cache = None;
        self.comp_gen += 1;
    }

    fn compressed_cluster(&mut self, offset: u64, len: u64) -> Result<&[u8]> {
        if self.comp_cache.as_ref().is_none_or(|(o, _)| *o != offset) {
            let mut raw = vec![0u8; len as usize];
            fileio::read_full(&self.f, &mut raw, offset)?;
            let mut out = vec![0u8; self.g.cs as usize];
            compress::decompress(self.g.compression, &raw, &mut out)?;
            self.comp_cache = Some((offset, out));
        }
        Ok(&self.comp_cache.as_ref().expect("filled").1)
    }

    fn set_l2(&mut self, l2off: u64, idx: usize, e: u64, bm: u64) -> Result<()> {
        let g = self.g;
        let w = g.w();
        let t = self.l2_load(l2off)?;
        t[idx * w] = e;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&e.to_be_bytes());
        if w == 2 {
            t[idx * w + 1] = bm;
            b[8..].copy_from_slice(&bm.to_be_bytes());
        }
        fileio::write_full(&self.f, &b[..8 * w], l2off + (idx * w * 8) as u64)?;
        Ok(())
    }

    fn set_l1(&mut self, i: usize, e: u64) -> Result<()> {
        self.l1[i] = e;
        fileio::write_full(
            &self.f,
            &e.to_be_bytes(),
            self.hdr.l1_table_offset + i as u64 * 8,
        )?;
        Ok(())
    }

    /// The L2 table for `off`, made exclusively ours (COPIED) and created when missing.
    fn l2_for_write(&mut self, off: u64) -> Result<u64> {
        let l1i = self.g.l1_index(off);
        if l1i >= self.l1.len() {
            return invalid("Write beyond the end of the L1 table");
        }
        let e = self.l1[l1i];
        let old = e & OFFSET_MASK;
        if old != 0 && e & OFLAG_COPIED != 0 {
            return Ok(old);
        }
        let content = if old == 0 {
            vec![0u64; (self.g.cs / 8) as usize]
        } else {
            self.l2_load(old)?.clone()
        };
        let new = self.alloc(1)?;
        let mut raw = Vec::with_capacity(self.g.cs as usize);
        for v in &content {
            raw.extend_from_slice(&v.to_be_bytes());
        }
        fileio::write_full(&self.f, &raw, new)?;
        self.file_len = self.file_len.max(new + self.g.cs);
        self.l2.insert(new, content);
        self.set_l1(l1i, new | OFLAG_COPIED)?;
        if old != 0 {
            self.rc_update(old >> self.g.cluster_bits, 1, -1)?;
            self.l2.remove(old);
        }
        Ok(new)
    }

    /// Drops the host storage an old L2 entry referenced (after the entry was replaced).
    fn release(&mut self, old: Cluster) -> Result<()> {
        match old {
            Cluster::Normal(h) | Cluster::ZeroAlloc(h) => {
                self.rc_update(h >> self.g.cluster_bits, 1, -1)
            }
            Cluster::Compressed { offset, len } => {
                self.drop_comp_cache();
                self.free_bytes(offset, len)
            }
            Cluster::Unallocated | Cluster::ZeroPlain => Ok(()),
        }
    }

    /// Allocates `len` bytes (< one cluster) for compressed data, packing clusters as QEMU does:
    /// every compressed cluster adds one reference to each host cluster it touches.
    fn alloc_bytes(&mut self, len: u64) -> Result<u64> {
        let cs = self.g.cs;
        let cb = self.g.cluster_bits;
        let mut cur = self.comp_cursor;
        // Narrow refcounts (refcount_bits=1) cannot count more sharers: start a fresh cluster.
        if cur != 0 && !cur.is_multiple_of(cs) && self.refcount(cur >> cb)? >= self.rc_max() {
            cur = 0;
        }
        if cur != 0 {
            let used = cur % cs;
            if used != 0 && used + len <= cs {
                self.rc_update(cur >> cb, 1, 1)?;
                self.comp_cursor = cur + len;
                return Ok(cur);
            }
            // Try to continue into the next cluster so the data may straddle.
            let next = if used == 0 {
                cur >> cb
            } else {
                (cur >> cb) + 1
            };
            if !self.rc_block_present(next) {
                self.ensure_rc_block(next)?;
            }
            if self.refcount(next)? == 0 && (next << cb) + cs <= MAX_HOST_OFFSET {
                if used != 0 {
                    self.rc_update(cur >> cb, 1, 1)?;
                }
                self.rc_update(next, 1, 1)?;
                self.comp_cursor = cur + len;
                return Ok(cur);
            }
        }
        let host = self.alloc(1)?;
        self.comp_cursor = host + len;
        Ok(host)
    }

    /// Before the first guest write: autoclear bits we do not maintain are cleared (and a
    /// bitmaps extension nothing vouches for is dropped), as QEMU does on a writable open; and
    /// the enabled bitmaps are marked in use before the data they describe changes.
    fn begin_write(&mut self) -> Result<()> {
        if !self.write_started {
            if self.hdr.incompatible_features & header::INCOMPAT_CORRUPT != 0 {
                return Err(Error::ReadOnly(
                    "Image is corrupt; cannot be opened read/write".into(),
                ));
            }
            let keep = if self.bm.dir.is_some() {
                header::AUTOCLEAR_BITMAPS
            } else {
                0
            };
            if bitmap::stale_ext(&self.hdr) {
                let mut h = self.hdr.clone();
                h.set_extension(header::EXT_BITMAPS, None);
                h.autoclear_features &= keep;
                fileio::write_full(&self.f, &h.serialize()?, 0)?;
                self.hdr = h;
            } else if self.hdr.autoclear_features & !keep != 0 {
                self.hdr.autoclear_features &= keep;
                let v = self.hdr.autoclear_features;
                fileio::write_full(&self.f, &v.to_be_bytes(), header::OFF_AUTOCLEAR)?;
            }
            self.write_started = true;
        }
        if self.bm.armed() {
            self.bitmaps_mark(false)?;
        }
        Ok(())
    }
}

pub struct Qcow2 {
    path: PathBuf,
    file: Arc<File>,
    g: Geometry,
    backing: Option<Box<dyn BlockDriver>>,
    size: AtomicU64,
    read_only: bool,
    /// The compression type, read without the lock (amend may change it).
    zstd: AtomicBool,
    m: Mutex<Meta>,
}

/// What `Qcow2::open_file` found, before the backing file is opened by the caller.
pub struct Opened {
    pub image: Qcow2,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

impl Qcow2 {
    /// Opens the file and parses all metadata; the caller attaches the backing chain.
    pub fn open(path: &Path, writable: bool) -> Result<Opened> {
        Self::open_with(path, writable, false)
    }

    /// `for_check`: leave a dirty image as it is, for `check` to report and repair.
    pub fn open_with(path: &Path, writable: bool, for_check: bool) -> Result<Opened> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        let file_len = fileio::file_len(&file)?;
        let mut first = vec![0u8; file_len.min(2 << 20) as usize];
        fileio::read_full(&file, &mut first, 0)?;
        let hdr = Header::parse(&first, file_len)?;
        drop(first);
        let g = Geometry::new(&hdr);
        if hdr.incompatible_features & header::INCOMPAT_CORRUPT != 0 && writable {
            return Err(Error::ReadOnly(
                "qcow2: Image is corrupt; cannot be opened read/write".into(),
            ));
        }
        let l1 = read_table(&file, hdr.l1_table_offset, hdr.l1_size as u64)?;
        let rct = read_table(
            &file,
            hdr.refcount_table_offset,
            hdr.refcount_table_clusters as u64 * g.cs / 8,
        )?;
        let snapshots = snapshot::read_table(&file, &hdr, g.cs, file_len)?;
        let bitmaps = bitmap::load_directory(&file, &hdr, file_len, hdr.size)?;
        let tables = |bytes: u64| (bytes / g.cs).max(4) as usize;
        let backing_file = hdr.backing_file.clone();
        let backing_format = hdr.backing_format.clone();
        let size = hdr.size;
        let file = Arc::new(file);
        let mut meta = Meta {
            f: file.clone(),
            g,
            hdr,
            l1,
            l2: TableCache::new(tables(L2_CACHE_BYTES)),
            rct,
            rcb: TableCache::new(tables(RC_CACHE_BYTES)),
            free_hint: 1,
            run_hint: 1,
            end: 0,
            comp_cursor: 0,
            file_len,
            snapshots,
            write_started: false,
            bm: bitmap::State::new(bitmaps),
            comp_cache: None,
            comp_gen: 0,
        };
        if writable {
            meta.scan_end()?;
        }
        let img = Qcow2 {
            path: path.to_path_buf(),
            file,
            g,
            backing: None,
            size: AtomicU64::new(size),
            read_only: !writable,
            zstd: AtomicBool::new(g.compression == Compression::Zstd),
            m: Mutex::new(meta),
        };
        if writable
            && !for_check
            && img.lock().hdr.incompatible_features & header::INCOMPAT_DIRTY != 0
        {
            // Lazy refcounts left dirty by a crash: rebuild them before any allocation.
            let report = img.check(Repair::All)?;
            if report.corruptions > report.corruptions_fixed {
                return corrupt("Could not repair dirty image");
            }
        }
        Ok(Opened {
            image: img,
            backing_file,
            backing_format,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Meta> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.g
    }

    fn compression(&self) -> Compression {
        if self.zstd.load(Ordering::Relaxed) {
            Compression::Zstd
        } else {
            Compression::Zlib
        }
    }

    pub(crate) fn set_compression(&self, c: Compression) {
        self.zstd.store(c == Compression::Zstd, Ordering::Relaxed);
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.virtual_size(), offset, len)
    }

    fn check_writable(&self) -> Result<()> {
        crate::driver::check_writable(self.read_only)
    }

    fn read_backing(&self, buf: &mut [u8], off: u64) -> Result<()> {
        match &self.backing {
            None => buf.fill(0),
            Some(b) => {
                let bs = b.virtual_size();
                let n = if off >= bs {
                    0
                } else {
                    (bs - off).min(buf.len() as u64) as usize
                };
                if n > 0 {
                    b.read_at(&mut buf[..n], off)?;
                }
                buf[n..].fill(0);
            }
        }
        Ok(())
    }

    /// Reads this layer's view with the lock held (used to fill copy-on-write clusters).
    fn read_locked(&self, m: &mut Meta, buf: &mut [u8], off: u64) -> Result<()> {
        let mut pos = 0usize;
        while pos < buf.len() {
            let (map, n) = m.map(off + pos as u64, (buf.len() - pos) as u64)?;
            let dst = &mut buf[pos..pos + n as usize];
            match map {
                Map::Data(h) => fileio::read_full(&self.file, dst, h)?,
                Map::Zero(_) => dst.fill(0),
                Map::Unallocated(_) => self.read_backing(dst, off + pos as u64)?,
                Map::Compressed { offset, len, guest } => {
                    let c = m.compressed_cluster(offset, len)?;
                    let s = (off + pos as u64 - guest) as usize;
                    dst.copy_from_slice(&c[s..s + dst.len()]);
                }
            }
            pos += n as usize;
        }
        Ok(())
    }

    /// Writes within one cluster: in place when the cluster is ours, else copy-on-write.
    fn write_piece(&self, m: &mut Meta, data: &[u8], off: u64) -> Result<()> {
        let g = self.g;
        let cstart = off & !(g.cs - 1);
        let (e, bm, _) = m.entry(off)?;
        let c = m.decode(e)?;
        let copied = e & OFLAG_COPIED != 0;
        if !g.extended {
            if let (Cluster::Normal(h), true) = (c, copied) {
                m.check_owned(h)?;
                fileio::write_full(&self.file, data, h + (off - cstart))?;
                m.drop_comp_cache();
                return Ok(());
            }
            return self.copy_cluster(m, cstart, Some(((off - cstart) as usize, data)), c);
        }
        // Extended L2: work in whole subclusters.
        let sc = g.sc_size;
        let first = (off - cstart) / sc;
        let last = (off + data.len() as u64 - 1 - cstart) / sc;
        let a_start = cstart + first * sc;
        let a_len = ((last - first + 1) * sc) as usize;
        let mut buf = vec![0u8; a_len];
        let valid = (self.virtual_size().saturating_sub(a_start)).min(a_len as u64) as usize;
        self.read_locked(m, &mut buf[..valid], a_start)?;
        let s = (off - a_start) as usize;
        buf[s..s + data.len()].copy_from_slice(data);
        let touched: u64 = ((1u64 << (last - first + 1)) - 1) << first;
        match (c, copied) {
            (Cluster::Normal(h), true) => {
                m.check_owned(h)?;
                fileio::write_full(&self.file, &buf, h + first * sc)?;
                let nbm = (bm | touched) & !(touched << 32);
                if nbm != bm {
                    let l2off = m.l2_for_write(off)?;
                    m.set_l2(l2off, g.l2_index(off), e, nbm)?;
                }
                Ok(())
            }
            (Cluster::Unallocated | Cluster::ZeroPlain, _) => {
                let l2off = m.l2_for_write(off)?;
                let host = m.alloc(1)?;
                fileio::write_full(&self.file, &buf, host + first * sc)?;
                m.file_len = m.file_len.max(host + g.cs);
                let nbm = (bm | touched) & !(touched << 32);
                m.set_l2(l2off, g.l2_index(off), host | OFLAG_COPIED, nbm)
            }
            _ => {
                // Shared or compressed cluster: copy all of it into a new one.
                self.copy_cluster(m, cstart, Some(((a_start - cstart) as usize, &buf)), c)
            }
        }
    }

    /// Gives the guest cluster at `cstart` a new host cluster holding its current content,
    /// overlaid with `patch` (offset in cluster, bytes) when given.
    fn copy_cluster(
        &self,
        m: &mut Meta,
        cstart: u64,
        patch: Option<(usize, &[u8])>,
        old: Cluster,
    ) -> Result<()> {
        let mut buf = vec![0u8; self.g.cs as usize];
        let valid = (self.virtual_size() - cstart).min(self.g.cs) as usize;
        self.read_locked(m, &mut buf[..valid], cstart)?;
        if let Some((at, data)) = patch {
            buf[at..at + data.len()].copy_from_slice(data);
        }
        self.store_cluster(m, cstart, &buf, old)
    }

    /// Writes a whole cluster's content to a newly allocated host cluster and links it.
    fn store_cluster(&self, m: &mut Meta, cstart: u64, buf: &[u8], old: Cluster) -> Result<()> {
        let g = self.g;
        let l2off = m.l2_for_write(cstart)?;
        let host = m.alloc(1)?;
        fileio::write_full(&self.file, buf, host)?;
        m.file_len = m.file_len.max(host + g.cs);
        let bm = if g.extended { 0xffff_ffff } else { 0 };
        m.set_l2(l2off, g.l2_index(cstart), host | OFLAG_COPIED, bm)?;
        m.release(old)
    }

    /// Full clusters at `off` that need a fresh host cluster (nothing of ours to write into),
    /// up to `max` and within one L2 table.
    fn fresh_run(&self, m: &mut Meta, off: u64, max: u64) -> Result<u64> {
        let g = self.g;
        let table_left = (g.l2_span() - (off & (g.l2_span() - 1))) >> g.cluster_bits;
        let mut k = 0;
        while k < max.min(table_left) {
            let (e, _, _) = m.entry(off + (k << g.cluster_bits))?;
            let c = m.decode(e)?;
            if matches!(c, Cluster::Normal(_)) && e & OFLAG_COPIED != 0 {
                break;
            }
            k += 1;
        }
        Ok(k)
    }

    /// Writes `k` whole clusters into one new contiguous host run, then links them.
    fn write_fresh(&self, m: &mut Meta, data: &[u8], off: u64, k: u64) -> Result<()> {
        let g = self.g;
        let l2off = m.l2_for_write(off)?;
        let host = m.alloc(k)?;
        fileio::write_full(&self.file, data, host)?;
        m.file_len = m.file_len.max(host + (k << g.cluster_bits));
        let idx = g.l2_index(off);
        let w = g.w();
        let mut old = Vec::with_capacity(k as usize);
        let mut raw = Vec::with_capacity(k as usize * 8 * w);
        {
            let t = m.l2_load(l2off)?;
            for j in 0..k as usize {
                old.push(t[(idx + j) * w]);
                let e = (host + ((j as u64) << g.cluster_bits)) | OFLAG_COPIED;
                t[(idx + j) * w] = e;
                raw.extend_from_slice(&e.to_be_bytes());
                if w == 2 {
                    t[(idx + j) * w + 1] = 0xffff_ffff;
                    raw.extend_from_slice(&0xffff_ffffu64.to_be_bytes());
                }
            }
        }
        fileio::write_full(&self.file, &raw, l2off + (idx * w * 8) as u64)?;
        for e in old {
            let c = m.decode(e)?;
            m.release(c)?;
        }
        Ok(())
    }

    /// Sets whole clusters (or subclusters) to read as zero.
    fn zero_clusters(&self, m: &mut Meta, off: u64, len: u64, may_unmap: bool) -> Result<()> {
        let g = self.g;
        let mut pos = off;
        let end = off + len;
        while pos < end {
            let cstart = pos & !(g.cs - 1);
            let (e, _bm, _) = m.entry(pos)?;
            let c = m.decode(e)?;
            if g.extended {
                let first = (pos - cstart) / g.sc_size;
                let last = ((end.min(cstart + g.cs)) - cstart) / g.sc_size;
                let mask: u64 = ((1u64 << (last - first)) - 1) << first;
                let l2off = m.l2_for_write(pos)?;
                // Subclusters of a compressed or shared cluster cannot be zeroed in place:
                // give the cluster its own plain copy first, then zero in it.
                let shared = matches!(c, Cluster::Normal(_)) && e & OFLAG_COPIED == 0;
                if matches!(c, Cluster::Compressed { .. }) || shared {
                    self.copy_cluster(m, cstart, None, c)?;
                    continue;
                }
                let (e, bm, _) = m.entry(pos)?;
                let nbm = (bm & !mask) | (mask << 32);
                let all_zero = (nbm >> 32) & 0xffff_ffff == 0xffff_ffff;
                if all_zero && may_unmap && e & OFFSET_MASK != 0 {
                    m.set_l2(l2off, g.l2_index(pos), 0, 0xffff_ffff << 32)?;
                    m.release(m.decode(e)?)?;
                } else {
                    m.set_l2(l2off, g.l2_index(pos), e, nbm)?;
                }
                pos = cstart + last * g.sc_size;
                continue;
            }
            let has_backing = self.backing.is_some();
            if m.g.version < 3 {
                // No zero flag: drop the cluster (reads zero without a backing file).
                if !matches!(c, Cluster::Unallocated) {
                    let l2off = m.l2_for_write(pos)?;
                    m.set_l2(l2off, g.l2_index(pos), 0, 0)?;
                    m.release(c)?;
                }
            } else {
                let keep = match c {
                    Cluster::Normal(h) | Cluster::ZeroAlloc(h)
                        if !may_unmap && e & OFLAG_COPIED != 0 =>
                    {
                        Some(h)
                    }
                    _ => None,
                };
                let new = match keep {
                    Some(h) => h | OFLAG_ZERO | OFLAG_COPIED,
                    None if !has_backing && c == Cluster::Unallocated => 0,
                    None => OFLAG_ZERO,
                };
                if new != e {
                    let l2off = m.l2_for_write(pos)?;
                    m.set_l2(l2off, g.l2_index(pos), new, 0)?;
                    if keep.is_none() {
                        m.release(c)?;
                    }
                }
            }
            pos = cstart + g.cs;
        }
        m.drop_comp_cache();
        Ok(())
    }

    /// Allocates host clusters for [from, to) without writing data (preallocation=metadata),
    /// then extends the file as the mode asks.
    pub(crate) fn preallocate(&self, from: u64, to: u64, mode: Preallocation) -> Result<()> {
        if mode == Preallocation::Off || from >= to {
            return Ok(());
        }
        let g = self.g;
        let mut m = self.lock();
        let mut pos = from & !(g.cs - 1);
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut last_end = 0;
        while pos < to {
            let k = self.fresh_run(&mut m, pos, (to - pos).div_ceil(g.cs))?;
            if k == 0 {
                pos += g.cs;
                continue;
            }
            let l2off = m.l2_for_write(pos)?;
            let host = m.alloc(k)?;
            runs.push((host, k << g.cluster_bits));
            last_end = last_end.max(host + (k << g.cluster_bits));
            let idx = g.l2_index(pos);
            for j in 0..k as usize {
                // Like QEMU: normal clusters; with subclusters, allocated host clusters whose
                // subclusters stay unallocated (so a backing file would still show through).
                let e = (host + ((j as u64) << g.cluster_bits)) | OFLAG_COPIED;
                m.set_l2(l2off, idx + j, e, 0)?;
            }
            pos += k << g.cluster_bits;
        }
        let file = self.file.clone();
        drop(m);
        // Data runs may sit between metadata clusters (small clusters interleave L2 tables
        // and data), so each run is reserved on its own.
        if fileio::file_len(&file)? < last_end {
            file.set_len(last_end)?;
        }
        for (host, len) in runs {
            match mode {
                Preallocation::Falloc => fileio::fallocate(&file, host, len)?,
                Preallocation::Full => fileio::write_zeroes_slow(&file, host, len)?,
                Preallocation::Metadata | Preallocation::Off => {}
            }
        }
        self.lock().file_len = fileio::file_len(&file)?;
        Ok(())
    }

    /// Resizes the active L1 table to `entries`, moving it when it outgrows its clusters.
    fn resize_l1(&self, m: &mut Meta, entries: u64) -> Result<()> {
        let g = self.g;
        if entries * 8 > header::MAX_L1_BYTES {
            return invalid("Image size is too large for this cluster size");
        }
        let old_n = m.l1.len() as u64;
        if entries == old_n {
            return Ok(());
        }
        if entries < old_n {
            // Shrink: drop the L2 tables past the end, but keep the table's size (as QEMU
            // does), so that the L1 table's clusters stay exactly accounted for.
            for i in entries..old_n {
                let e = m.l1[i as usize];
                if e & OFFSET_MASK != 0 {
                    m.set_l1(i as usize, 0)?;
                    m.rc_update((e & OFFSET_MASK) >> g.cluster_bits, 1, -1)?;
                    m.l2.remove(e & OFFSET_MASK);
                }
            }
            return Ok(());
        }
        let old_bytes = (old_n * 8).div_ceil(g.cs) * g.cs;
        let mut new_l1 = m.l1.clone();
        new_l1.resize(entries as usize, 0);
        let mut raw = Vec::with_capacity(entries as usize * 8);
        for e in &new_l1 {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        if m.hdr.l1_table_offset != 0 && entries * 8 <= old_bytes {
            fileio::write_full(&self.file, &raw, m.hdr.l1_table_offset)?;
            fileio::write_full(&self.file, &(entries as u32).to_be_bytes(), header::OFF_L1)?;
            m.l1 = new_l1;
            m.hdr.l1_size = entries as u32;
            return Ok(());
        }
        let clusters = (entries * 8).div_ceil(g.cs);
        let new_off = m.alloc(clusters)?;
        raw.resize((clusters * g.cs) as usize, 0);
        fileio::write_full(&self.file, &raw, new_off)?;
        m.file_len = m.file_len.max(new_off + clusters * g.cs);
        let mut hb = [0u8; 12];
        hb[..4].copy_from_slice(&(entries as u32).to_be_bytes());
        hb[4..].copy_from_slice(&new_off.to_be_bytes());
        // Barrier: the new structure must be durable before the header points at it.
        self.file.sync_data()?;
        fileio::write_full(&self.file, &hb, header::OFF_L1)?;
        let old_off = m.hdr.l1_table_offset;
        m.hdr.l1_table_offset = new_off;
        m.hdr.l1_size = entries as u32;
        m.l1 = new_l1;
        if old_off != 0 && old_n > 0 {
            m.rc_update(old_off >> g.cluster_bits, old_bytes / g.cs, -1)?;
        }
        Ok(())
    }

    /// write_zeroes; `note`: whether the range counts as a guest write for the bitmaps
    /// (not when a resize zeroes the area it adds).
    fn zero_range(&self, offset: u64, len: u64, may_unmap: bool, note: bool) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let g = self.g;
        let mut m = self.lock();
        m.begin_write()?;
        if note {
            m.bitmaps_note(offset, len);
        }
        let end = offset + len;
        let gran = g.sc_size;
        let a = offset.div_ceil(gran) * gran;
        let b = (end / gran * gran).max(a);
        // Clusters that may be left zero without a write: v2 only without a backing file.
        let flag_ok = m.g.version >= 3 || self.backing.is_none();
        let zero = vec![0u8; gran as usize];
        let write_real = |m: &mut Meta, s: u64, e: u64| -> Result<()> {
            let mut p = s;
            while p < e {
                let n = (e - p).min(gran - p % gran);
                self.write_piece(m, &zero[..n as usize], p)?;
                p += n;
            }
            Ok(())
        };
        if !flag_ok || a >= b {
            return write_real(&mut m, offset, end);
        }
        write_real(&mut m, offset, a)?;
        // Aligned middle: whole clusters (subclusters) set to zero; a partial final cluster
        // of the image counts as whole.
        let b_eff = if end == self.virtual_size() {
            end.div_ceil(gran) * gran
        } else {
            b
        };
        let mut p = a;
        while p < b_eff {
            let cend = ((p / g.cs) + 1) * g.cs;
            let n = b_eff.min(cend) - p;
            if g.extended || n == g.cs || (p.is_multiple_of(g.cs) && p + n >= self.virtual_size()) {
                self.zero_clusters(&mut m, p, n, may_unmap)?;
            } else {
                write_real(&mut m, p, (p + n).min(end))?;
            }
            p += n;
        }
        if b_eff < end {
            write_real(&mut m, b_eff, end)?;
        }
        Ok(())
    }

    pub fn header(&self) -> Header {
        self.lock().hdr.clone()
    }

    /// Writes the header fields and extensions that `amend`-like operations change.
    pub fn rewrite_header(&self, h: &Header) -> Result<()> {
        self.check_writable()?;
        let bytes = h.serialize()?;
        let mut m = self.lock();
        fileio::write_full(&self.file, &bytes, 0)?;
        m.hdr = h.clone();
        Ok(())
    }
}

fn read_table(f: &File, off: u64, n: u64) -> Result<Vec<u64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut raw = vec![0u8; (n * 8) as usize];
    fileio::read_full(f, &mut raw, off)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect())
}

impl Drop for Qcow2 {
    /// Closing stores the tracked bitmaps back (QEMU does it when it closes the image); an
    /// error leaves them marked in use, which is what readers must then see.
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.lock().bitmaps_store();
        }
    }
}

impl BlockDriver for Qcow2 {
    fn format(&self) -> Format {
        Format::Qcow2
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
    fn filename(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &File {
        &self.file
    }
    fn virtual_size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }
    fn cluster_size(&self) -> Option<u64> {
        Some(self.g.cs)
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn backing(&self) -> Option<&dyn BlockDriver> {
        self.backing.as_deref()
    }
    fn set_backing(&mut self, b: Option<Box<dyn BlockDriver>>) {
        self.backing = b;
    }
    fn change_backing_file(&self, file: Option<&str>, fmt: Option<&str>) -> Result<()> {
        let mut h = self.header();
        h.backing_file = file.map(str::to_string);
        h.backing_format = file.and(fmt).map(str::to_string);
        // Serialized first: a name that does not fit in the header cluster fails before
        // anything is written.
        self.rewrite_header(&h)
    }
    fn make_empty(&self) -> Result<()> {
        empty::make_empty(self)
    }
    fn snapshot_load_tmp(&self, id: Option<&str>, name: Option<&str>) -> Result<()> {
        snapview::load_tmp(self, id, name)
    }
    fn has_zero_init(&self) -> bool {
        // A fresh qcow2 reads zero only without a backing file.
        self.backing.is_none()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let mut m = self.lock();
            let (map, n) = m.map(off, (buf.len() - pos) as u64)?;
            let dst = &mut buf[pos..pos + n as usize];
            match map {
                Map::Compressed {
                    offset: co,
                    len,
                    guest,
                } => {
                    let s = (off - guest) as usize;
                    if let Some((_, c)) = m.comp_cache.as_ref().filter(|(o, _)| *o == co) {
                        dst.copy_from_slice(&c[s..s + dst.len()]);
                    } else {
                        // Decompress without the lock so several readers use several cores.
                        let gen = m.comp_gen;
                        drop(m);
                        let mut raw = vec![0u8; len as usize];
                        fileio::read_full(&self.file, &mut raw, co)?;
                        let mut c = vec![0u8; self.g.cs as usize];
                        compress::decompress(self.compression(), &raw, &mut c)?;
                        dst.copy_from_slice(&c[s..s + dst.len()]);
                        let mut m = self.lock();
                        if m.comp_gen == gen {
                            m.comp_cache = Some((co, c));
                        }
                    }
                }
                Map::Data(h) => {
                    drop(m);
                    fileio::read_full(&self.file, dst, h)?;
                }
                Map::Zero(_) => dst.fill(0),
                Map::Unallocated(_) => {
                    drop(m);
                    self.read_backing(dst, off)?;
                }
            }
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        let g = self.g;
        let mut m = self.lock();
        m.begin_write()?;
        m.bitmaps_note(offset, buf.len() as u64);
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let left = (buf.len() - pos) as u64;
            if off.is_multiple_of(g.cs) && left >= g.cs {
                let k = self.fresh_run(&mut m, off, left / g.cs)?;
                if k > 0 {
                    let n = (k << g.cluster_bits) as usize;
                    self.write_fresh(&mut m, &buf[pos..pos + n], off, k)?;
                    pos += n;
                    continue;
                }
            }
            let n = (g.cs - off % g.cs).min(left) as usize;
            self.write_piece(&mut m, &buf[pos..pos + n], off)?;
            pos += n;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.zero_range(offset, len, may_unmap, true)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let g = self.g;
        let mut m = self.lock();
        // The whole request counts as written for the bitmaps, even where nothing is dropped.
        m.begin_write()?;
        m.bitmaps_note(offset, len);
        // Only whole clusters can be dropped; v2 with a backing file cannot express it.
        if m.g.version < 3 && self.backing.is_some() {
            return Ok(());
        }
        let a = offset.div_ceil(g.cs) * g.cs;
        let end = offset + len;
        let b = if end == self.virtual_size() {
            end.div_ceil(g.cs) * g.cs
        } else {
            end / g.cs * g.cs
        };
        if a >= b {
            return Ok(());
        }
        self.zero_clusters(&mut m, a, b - a, true)
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            self.lock().bitmaps_store()?;
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        let (map, n) = self.lock().map(offset, len)?;
        let alloc = match map {
            Map::Data(h) => Alloc::Data {
                host: Some(h),
                compressed: false,
            },
            Map::Compressed { .. } => Alloc::Data {
                host: None,
                compressed: true,
            },
            Map::Zero(h) => Alloc::Zero { host: h },
            Map::Unallocated(host) => Alloc::Unallocated { host },
        };
        Ok(Status { alloc, len: n })
    }

    fn resize(&self, new_size: u64, prealloc: Preallocation, shrink: bool) -> Result<()> {
        self.check_writable()?;
        let g = self.g;
        let old = self.virtual_size();
        if !new_size.is_multiple_of(512) {
            return invalid("The new size must be a multiple of 512");
        }
        {
            let m = self.lock();
            if !m.snapshots.is_empty() && m.g.version < 3 {
                return invalid("Can't resize a v2 image which has snapshots");
            }
        }
        if new_size < old && !shrink {
            return invalid("Use the --shrink option to perform a shrink operation.");
        }
        let entries = header::l1_entries_for(new_size, g.cluster_bits, g.l2_bits)
            .ok_or_else(|| Error::Invalid("Image size is too large".into()))?;
        {
            // Bitmaps follow the new size (QEMU refuses while one is left in use by a crash).
            // All are marked in use first, so a crash mid-resize leaves them inconsistent
            // rather than the wrong size.
            let mut m = self.lock();
            m.bitmaps_check_all_usable()?;
            m.begin_write()?;
            m.bitmaps_mark(true)?;
        }
        if new_size < old {
            // Drop every cluster wholly past the new end, then the L2 tables past it.
            let from = new_size.div_ceil(g.cs) * g.cs;
            {
                let mut m = self.lock();
                m.begin_write()?;
                let mut p = from;
                while p < old {
                    let (e, _, _) = m.entry(p)?;
                    if e != 0 {
                        let c = m.decode(e)?;
                        let l2off = m.l2_for_write(p)?;
                        m.set_l2(l2off, g.l2_index(p), 0, 0)?;
                        m.release(c)?;
                    }
                    p += g.cs;
                }
                let mut hb = [0u8; 8];
                hb.copy_from_slice(&new_size.to_be_bytes());
                fileio::write_full(&self.file, &hb, header::OFF_SIZE)?;
                m.hdr.size = new_size;
                self.size.store(new_size, Ordering::Relaxed);
                self.resize_l1(&mut m, entries)?;
                m.bitmaps_store()?;
            }
            return Ok(());
        }
        {
            let mut m = self.lock();
            m.begin_write()?;
            if entries > m.l1.len() as u64 {
                self.resize_l1(&mut m, entries)?;
            }
            fileio::write_full(&self.file, &new_size.to_be_bytes(), header::OFF_SIZE)?;
            m.hdr.size = new_size;
        }
        self.size.store(new_size, Ordering::Relaxed);
        // Stale bytes past the old end (from an earlier shrink) or a longer backing file must
        // not show through in the new area.
        let tail_end = (old.div_ceil(g.cs) * g.cs).min(new_size);
        let backing_len = self.backing.as_ref().map(|b| b.virtual_size()).unwrap_or(0);
        let zero_to = tail_end.max(backing_len.min(new_size));
        if zero_to > old {
            self.zero_range(old, zero_to - old, false, false)?;
        }
        self.preallocate(old, new_size, prealloc)?;
        self.lock().bitmaps_store()
    }

    fn info(&self) -> Result<ImageInfo> {
        let m = self.lock();
        let h = &m.hdr;
        let v3 = h.version >= 3;
        let q = Qcow2Info {
            compat: if v3 { "1.1" } else { "0.10" },
            compression_type: h.compression.name(),
            lazy_refcounts: h.compatible_features & header::COMPAT_LAZY_REFCOUNTS != 0,
            refcount_bits: 1 << h.refcount_order,
            corrupt: h.incompatible_features & header::INCOMPAT_CORRUPT != 0,
            extended_l2: h.extended_l2(),
            data_file: None,
            bitmaps: bitmap::infos(m.bm.dir.as_ref()),
        };
        let snapshots = m.snapshots.iter().map(Snapshot::info).collect();
        let full_backing = h.backing_file.as_ref().map(|b| {
            crate::chain::resolve_backing(&self.path, b)
                .display()
                .to_string()
        });
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "qcow2",
            virtual_size: self.virtual_size(),
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?.div_ceil(512) * 512,
            cluster_size: Some(self.g.cs),
            backing_filename: h.backing_file.clone(),
            full_backing_filename: full_backing,
            backing_format: h.backing_format.clone(),
            dirty: h.incompatible_features & header::INCOMPAT_DIRTY != 0,
            snapshots,
            qcow2: Some(q),
            ..Default::default()
        })
    }

    fn compress_cluster(&self, buf: &[u8]) -> Result<Option<Vec<u8>>> {
        let cs = self.g.cs as usize;
        if buf.len() > cs {
            return invalid("Compressed writes must be single clusters");
        }
        if buf.len() < cs {
            let mut padded = vec![0u8; cs];
            padded[..buf.len()].copy_from_slice(buf);
            return Ok(compress::compress(self.compression(), &padded, cs));
        }
        Ok(compress::compress(self.compression(), buf, cs))
    }

    fn write_compressed_data(&self, offset: u64, c: &[u8]) -> Result<()> {
        self.check_writable()?;
        let g = self.g;
        if !offset.is_multiple_of(g.cs) || c.len() as u64 >= g.cs || c.is_empty() {
            return invalid("Compressed writes must be single aligned clusters");
        }
        self.check_range(offset, 1)?;
        let mut m = self.lock();
        m.begin_write()?;
        m.bitmaps_note(offset, g.cs.min(self.virtual_size() - offset));
        let (e, _, _) = m.entry(offset)?;
        let old = m.decode(e)?;
        let l2off = m.l2_for_write(offset)?;
        let host = m.alloc_bytes(c.len() as u64)?;
        fileio::write_full(&self.file, c, host)?;
        m.file_len = m.file_len.max(host + c.len() as u64);
        let ne = g.comp.encode(host, c.len() as u64);
        m.set_l2(l2off, g.l2_index(offset), ne, 0)?;
        m.drop_comp_cache();
        m.release(old)
    }

    fn check(&self, repair: Repair) -> Result<CheckReport> {
        check::check(self, repair)
    }

    fn snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        Ok(self.lock().snapshots.iter().map(Snapshot::info).collect())
    }
    fn snapshot_create(&self, name: &str) -> Result<()> {
        self.check_writable()?;
        snapshot::create(self, name)
    }
    fn snapshot_apply(&self, name: &str) -> Result<()> {
        self.check_writable()?;
        snapshot::apply(self, name)
    }
    fn snapshot_delete(&self, name: &str) -> Result<()> {
        self.check_writable()?;
        snapshot::delete(self, name)
    }
}

impl Meta {
    /// A cluster we are about to overwrite in place must be one the refcounts account for;
    /// a hostile L2 entry could otherwise aim writes at any offset (and grow the file to
    /// petabytes).
    fn check_owned(&self, host: u64) -> Result<()> {
        if host >> self.g.cluster_bits >= self.end {
            return corrupt(format!(
                "Data cluster at {host:#x} lies past every allocated cluster; the image is corrupt"
            ));
        }
        Ok(())
    }

    pub(crate) fn invalidate_caches(&mut self) {
        self.l2.clear();
        self.rcb.clear();
        self.drop_comp_cache();
    }
    pub(crate) fn set_size_field(&mut self, size: u64) -> Result<()> {
        fileio::write_full(&self.f, &size.to_be_bytes(), header::OFF_SIZE)?;
        self.hdr.size = size;
        Ok(())
    }
}
