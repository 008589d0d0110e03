//! Parallels expandable images ("WithoutFreeSpace" and "WithouFreSpacExt"), read and written
//! as QEMU's driver does (docs/interop/parallels.txt; QEMU's block/parallels.c for limits,
//! messages and the repair at open).
//!
//! Layout: header, BAT (one 32-bit entry per guest cluster: a host offset in sectors, or in
//! clusters for "WithouFreSpacExt"; 0 = unallocated, reads as zeros), data area. A read-write
//! open marks the header "in use" (synced) and close clears it and trims the file to the end
//! of the data; an image found in use was not closed cleanly and is checked and repaired by
//! the next read-write open (a read-only open leaves it as it is).
//!
//! Allocation follows QEMU: holes in the data area first, else the end, where the file grows
//! by the request plus 128 MiB of preallocation (fallocate, QEMU's default prealloc-mode;
//! on tmpfs, where that costs memory and time, a sparse extension: QEMU's "truncate" mode),
//! trimmed at close. Crash safety: data is written before its BAT entry, a BAT entry is
//! cleared before its cluster is punched; a kill leaves at worst leaked space (and the in-use
//! mark QEMU's check reports). Against power loss the in-use mark is synced at open: after a
//! power cut the next writable open checks and repairs the image. Closing does not flush,
//! like qemu-img convert's cache=unsafe target; `flush` does.

pub mod check;
pub mod create;
pub mod ext;
pub mod header;

use self::header::Header;
use crate::chain::{OpenCtx, Opened};
use crate::driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::ImageInfo;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// QEMU's default prealloc-size: the file grows by at least this much at a time.
const PREALLOC_BYTES: u64 = 128 << 20;
/// Most cluster slots the allocator tracks (256 MiB of bitmap).
const MAX_SLOTS: u64 = 1 << 31;

/// Whether the file's first bytes (at most 512, fewer for shorter files) are a parallels image.
pub fn probe(head: &[u8], _path: &Path) -> bool {
    head.len() >= header::LEN as usize
        && (head[..16] == header::MAGIC[..] || head[..16] == header::MAGIC2[..])
        && head[16..20] == header::VERSION.to_le_bytes()
}

/// Geometry fixed at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub cs: u64,
    /// Cluster size in sectors.
    pub tracks: u64,
    /// Sectors per BAT unit.
    pub mult: u64,
    pub bat_size: u64,
}

/// One bit per cluster-sized slot of the data area, from the data offset: the allocator's view
/// of what is in use.
#[derive(Debug, Default, Clone)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    pub len: u64,
}

impl Bitmap {
    fn new(len: u64) -> Bitmap {
        Bitmap {
            words: vec![0; len.div_ceil(64) as usize],
            len,
        }
    }
    fn grow(&mut self, len: u64) {
        if len > self.len {
            self.words.resize(len.div_ceil(64) as usize, 0);
            self.len = len;
        }
    }
    pub fn get(&self, i: u64) -> bool {
        i < self.len && self.words[(i / 64) as usize] & (1 << (i % 64)) != 0
    }
    fn put(&mut self, i: u64, v: bool) {
        if i < self.len {
            let w = &mut self.words[(i / 64) as usize];
            if v {
                *w |= 1 << (i % 64);
            } else {
                *w &= !(1 << (i % 64));
            }
        }
    }
    /// First clear bit at or after `from`.
    fn next_clear(&self, from: u64) -> Option<u64> {
        let mut i = from;
        while i < self.len {
            let w = self.words[(i / 64) as usize] | ((1u64 << (i % 64)) - 1);
            if w != u64::MAX {
                let b = (i / 64) * 64 + (!w).trailing_zeros() as u64;
                return (b < self.len).then_some(b);
            }
            i = (i / 64 + 1) * 64;
        }
        None
    }
    /// First set bit at or after `from` (`len` when none).
    fn next_set(&self, from: u64) -> u64 {
        let mut i = from;
        while i < self.len {
            let w = self.words[(i / 64) as usize] & !((1u64 << (i % 64)) - 1);
            if w != 0 {
                return ((i / 64) * 64 + w.trailing_zeros() as u64).min(self.len);
            }
            i = (i / 64 + 1) * 64;
        }
        self.len
    }
}

/// Metadata, behind the driver's lock.
pub(crate) struct Meta {
    pub hdr: Header,
    /// The BAT entries stored in the file (all of them for a writable image; a read-only
    /// image cut short keeps those before the end of the file, the rest read as 0).
    pub bat: Vec<u32>,
    /// Start of the data area, in sectors.
    pub data_start: u64,
    /// End of the data area, in sectors (QEMU's s->data_end).
    pub data_end: u64,
    pub used: Bitmap,
    /// Found "in use": not closed cleanly.
    pub unclean: bool,
    /// Clusters the format extension uses (bytes), kept away from the allocator.
    pub protect: Vec<u64>,
    /// Free space from here on reads as zeros (the file's end at open, then extended only
    /// by us); free slots before it may hold old data and are zeroed before reuse.
    pub zero_from: u64,
}

impl Meta {
    pub fn entry(&self, i: u64) -> u32 {
        self.bat.get(i as usize).copied().unwrap_or(0)
    }
    /// Host byte offset of guest cluster `i` (0 when unallocated).
    pub fn host(&self, g: &Geometry, i: u64) -> u64 {
        self.entry(i) as u64 * g.mult * 512
    }
}

pub struct Parallels {
    path: PathBuf,
    pub(crate) file: File,
    g: Geometry,
    size: u64,
    read_only: bool,
    /// Preallocate with fallocate (else by extending the file sparsely).
    falloc: bool,
    m: Mutex<Meta>,
}

/// Whether reserving space is cheap for this file (not on tmpfs, where it takes memory).
fn falloc_is_cheap(f: &File) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    // f_type's width differs between architectures.
    #[allow(clippy::unnecessary_cast)]
    rustix::fs::fstatfs(f).is_ok_and(|s| s.f_type as i64 != TMPFS_MAGIC)
}

pub fn open(path: &Path, o: &OpenCtx) -> Result<Opened> {
    let file = OpenOptions::new().read(true).write(o.writable).open(path)?;
    let len = fileio::file_len(&file)?;
    let file_sectors = len.div_ceil(512);
    let mut b = [0u8; header::LEN as usize];
    fileio::read_full(&file, &mut b, 0)?;
    let mut hdr = Header::decode(&b);
    hdr.validate()?;
    let g = Geometry {
        cs: hdr.tracks as u64 * 512,
        tracks: hdr.tracks as u64,
        mult: hdr.off_multiplier(),
        bat_size: hdr.bat_entries as u64,
    };
    // Entries past the end of the file read as 0 (QEMU zero-fills short reads); only those
    // in the file are loaded, so a hostile entry count cannot size the allocation.
    let in_file = len.saturating_sub(header::LEN).div_ceil(4).min(g.bat_size);
    if o.writable && in_file < g.bat_size {
        return corrupt("The BAT extends past the end of the file");
    }
    let mut raw = vec![0u8; (in_file * 4) as usize];
    fileio::read_full(&file, &mut raw, header::LEN)?;
    let bat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect();
    drop(raw);
    let unclean = hdr.inuse == header::INUSE_MAGIC;
    let (data_ok, data_start) = hdr.test_data_off(file_sectors);
    let mut need_check = unclean || !data_ok;

    let mut protect = Vec::new();
    if hdr.ext_off != 0 {
        let r = ext::read(&file, hdr.ext_off * 512, g.cs, hdr.sectors());
        match r {
            Ok(e) => protect = e.clusters,
            // QEMU ignores the extension on a read-write open; a read-only open fails on it.
            Err(e) if !o.writable => return Err(e),
            Err(_) => protect.push(hdr.ext_off * 512),
        }
        protect.retain(|&c| c.saturating_add(g.cs) <= len);
    }
    let original = hdr;
    // The allocator's bitmap covers the file: refuse (as QEMU's failing allocation does)
    // rather than size it by a petabyte-long sparse file.
    if o.writable && len.saturating_sub(data_start * 512).div_ceil(g.cs) > MAX_SLOTS {
        return Err(Error::Io(std::io::Error::from_raw_os_error(libc::ENOMEM)));
    }
    if o.writable {
        if !hdr.old_magic() && data_start % g.tracks != 0 {
            return Err(Error::Unsupported(
                "Image data area is not aligned to its cluster size".into(),
            ));
        }
        hdr.inuse = header::INUSE_MAGIC;
        fileio::write_full(&file, &hdr.encode(), 0)?;
        file.sync_data()?;
    }
    let size = hdr.sectors() * 512;
    let mut m = Meta {
        hdr,
        bat,
        data_start,
        data_end: data_start,
        used: Bitmap::default(),
        unclean,
        protect,
        zero_from: len,
    };
    m.data_end = data_end(&m, &g);
    need_check |= m.data_end > file_sectors;
    // Only writers allocate.
    if o.writable {
        need_check |= !rebuild_used(&mut m, &g, len);
    }
    let falloc = o.writable && falloc_is_cheap(&file);
    let mut img = Parallels {
        path: path.to_path_buf(),
        file,
        g,
        size,
        read_only: !o.writable,
        falloc,
        m: Mutex::new(m),
    };
    if o.writable && !o.for_check && need_check {
        if let Err(e) = img.check(Repair::All) {
            // Put the in-use mark back as it was; no close, no trimming.
            let _ = img.write_header(&original);
            img.read_only = true;
            let why = e.to_string();
            let why = why.split(" (os error").next().unwrap_or(&why);
            return corrupt(format!("Could not repair corrupted image: {why}"));
        }
    }
    Ok(Opened {
        image: Box::new(img),
        backing_file: None,
        backing_format: None,
    })
}

/// QEMU's data_end: past the last cluster any BAT entry names (and the extension's).
fn data_end(m: &Meta, g: &Geometry) -> u64 {
    let mut end = m.data_start;
    for &e in &m.bat {
        if e != 0 {
            end = end.max(e as u64 * g.mult + g.tracks);
        }
    }
    for &p in &m.protect {
        end = end.max((p + g.cs).div_ceil(512));
    }
    end
}

/// Rebuilds the allocator's bitmap over the file (`len` bytes). False when an entry lies
/// outside the data area or shares a slot with another (QEMU's fill_used_bitmap errors: the
/// image needs a check).
fn rebuild_used(m: &mut Meta, g: &Geometry, len: u64) -> bool {
    let ds = m.data_start * 512;
    let payload = match len.checked_sub(ds) {
        Some(p) if p.div_ceil(g.cs) <= MAX_SLOTS => p,
        _ => {
            m.used = Bitmap::default();
            return false;
        }
    };
    let mut used = Bitmap::new(payload.div_ceil(g.cs));
    let mut ok = true;
    let mark = |used: &mut Bitmap, host: u64| -> bool {
        if host < ds {
            return false;
        }
        // A cluster that straddles two slots (old images need not align) takes both.
        let a = (host - ds) / g.cs;
        let b = (host - ds + g.cs).div_ceil(g.cs);
        if b > used.len {
            return false;
        }
        let mut fresh = true;
        for s in a..b {
            fresh &= !used.get(s);
            used.put(s, true);
        }
        fresh
    };
    for i in 0..m.bat.len() as u64 {
        let h = m.host(g, i);
        if h != 0 && !mark(&mut used, h) {
            ok = false;
        }
    }
    for &p in &m.protect {
        mark(&mut used, p);
    }
    m.used = used;
    ok
}

impl Parallels {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Meta> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.g
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.size, offset, len)
    }

    fn check_writable(&self) -> Result<()> {
        crate::driver::check_writable(self.read_only)
    }

    /// The host offset (None: unallocated) at `off` and how many bytes (at most `max`) map
    /// the same way contiguously (QEMU's block_status).
    fn map(&self, m: &Meta, off: u64, max: u64) -> (Option<u64>, u64) {
        let g = self.g;
        let mut idx = off / g.cs;
        let in_c = off % g.cs;
        let start = m.host(&g, idx);
        let mut n = (g.cs - in_c).min(max);
        let mut next = start.saturating_add(g.cs);
        idx += 1;
        while n < max {
            let h = m.host(&g, idx);
            let same = if start == 0 { h == 0 } else { h == next };
            if !same {
                break;
            }
            n += g.cs.min(max - n);
            next = next.saturating_add(g.cs);
            idx += 1;
            // Past the BAT everything is unallocated: no need to walk it cluster by cluster.
            if start == 0 && idx >= m.bat.len() as u64 {
                n = max;
            }
        }
        ((start != 0).then(|| start + in_c), n)
    }

    pub(crate) fn write_header(&self, h: &Header) -> Result<()> {
        fileio::write_full(&self.file, &h.encode(), 0)?;
        Ok(())
    }

    /// Sets BAT entries from `idx`, on disk and in memory.
    pub(crate) fn set_bat(&self, m: &mut Meta, idx: u64, v: &[u32]) -> Result<()> {
        let mut raw = Vec::with_capacity(v.len() * 4);
        for e in v {
            raw.extend_from_slice(&e.to_le_bytes());
        }
        fileio::write_full(&self.file, &raw, header::bat_entry_off(idx))?;
        m.bat[idx as usize..idx as usize + v.len()].copy_from_slice(v);
        Ok(())
    }

    /// Reserves up to `want` contiguous clusters (QEMU's allocate_clusters): the first hole
    /// of the data area, else the end, preallocated. Returns the host offset and the count.
    pub(crate) fn alloc(&self, m: &mut Meta, want: u64) -> Result<(u64, u64)> {
        let g = self.g;
        let ds = m.data_start * 512;
        let (slot, count) = match m.used.next_clear(0) {
            Some(free) => (free, want.min(m.used.next_set(free) - free)),
            None => {
                // Past every slot and past the data QEMU accounts for.
                let end_slot = (m.data_end * 512).saturating_sub(ds).div_ceil(g.cs);
                let slot = m.used.len.max(end_slot);
                let host = ds + slot * g.cs;
                let bytes = want * g.cs + PREALLOC_BYTES.max(g.cs);
                let end = host
                    .checked_add(bytes)
                    .filter(|&e| e <= i64::MAX as u64)
                    .ok_or_else(|| Error::Invalid("Image file is too large".into()))?;
                let reserved = self.falloc && fileio::fallocate(&self.file, host, bytes).is_ok();
                if !reserved && fileio::file_len(&self.file)? < end {
                    self.file.set_len(end)?;
                }
                m.used.grow((end - ds) / g.cs);
                (slot, want)
            }
        };
        let host = ds + slot * g.cs;
        if (host / 512 + count * g.tracks) / g.mult > u32::MAX as u64 {
            return Err(Error::Invalid("Image file is too large".into()));
        }
        for s in slot..slot + count {
            m.used.put(s, true);
        }
        m.data_end = m.data_end.max((host + count * g.cs) / 512);
        Ok((host, count))
    }

    /// Drops whole clusters [a, b) (QEMU's discard): BAT entry cleared first, then the host
    /// space punched and returned to the allocator.
    fn discard_clusters(&self, a: u64, b: u64) -> Result<()> {
        let g = self.g;
        let mut m = self.lock();
        let ds = m.data_start * 512;
        for idx in a / g.cs..b / g.cs {
            let h = m.host(&g, idx);
            if h == 0 {
                continue;
            }
            self.set_bat(&mut m, idx, &[0])?;
            if h >= ds {
                fileio::punch_hole(&self.file, h, g.cs)?;
                if (h - ds).is_multiple_of(g.cs) {
                    m.used.put((h - ds) / g.cs, false);
                }
            }
        }
        Ok(())
    }

    fn write_zero_bytes(&self, mut off: u64, len: u64) -> Result<()> {
        let end = off + len;
        let z = vec![0u8; len.min(1 << 20) as usize];
        while off < end {
            let n = (end - off).min(z.len() as u64) as usize;
            self.write_at(&z[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }

    /// After repairs: data end and allocator recomputed from the BAT.
    pub(crate) fn refresh(&self, m: &mut Meta) -> Result<()> {
        m.data_end = data_end(m, &self.g);
        rebuild_used(m, &self.g, fileio::file_len(&self.file)?);
        Ok(())
    }

    /// QEMU's close: not in use any more, file trimmed to the end of the data.
    fn close(&self) -> Result<()> {
        let mut m = self.lock();
        m.hdr.inuse = 0;
        self.write_header(&m.hdr)?;
        let end = m.data_end * 512;
        if end < fileio::file_len(&self.file)? {
            self.file.set_len(end)?;
        }
        Ok(())
    }
}

impl Drop for Parallels {
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.close();
        }
    }
}

impl BlockDriver for Parallels {
    fn format(&self) -> Format {
        Format::Parallels
    }
    fn filename(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &File {
        &self.file
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn cluster_size(&self) -> Option<u64> {
        Some(self.g.cs)
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn has_zero_init(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let (host, n) = self.map(&self.lock(), off, (buf.len() - pos) as u64);
            let dst = &mut buf[pos..pos + n as usize];
            match host {
                Some(h) => fileio::read_full(&self.file, dst, h)?,
                None => dst.fill(0),
            }
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        let g = self.g;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let idx = off / g.cs;
            if idx >= g.bat_size {
                return corrupt("Write beyond the end of the BAT");
            }
            let mut m = self.lock();
            let (host, n) = self.map(&m, off, (buf.len() - pos) as u64);
            match host {
                Some(h) => {
                    if h < m.data_start * 512 {
                        return corrupt(format!("BAT entry {idx} points into the image header"));
                    }
                    drop(m);
                    fileio::write_full(&self.file, &buf[pos..pos + n as usize], h)?;
                    pos += n as usize;
                }
                None => {
                    let in_c = off % g.cs;
                    let last = (off + n - 1) / g.cs;
                    let want = (last.min(g.bat_size - 1) - idx) + 1;
                    let (h, got) = self.alloc(&mut m, want)?;
                    let n = n.min(got * g.cs - in_c) as usize;
                    let src = &buf[pos..pos + n];
                    let whole = in_c == 0 && n as u64 == got * g.cs;
                    if h < m.zero_from && !whole {
                        // Reused space: the rest of the clusters must read as zeros.
                        fileio::punch_hole(&self.file, h, got * g.cs)?;
                    }
                    // Like QEMU, only the data is written: fresh space reads as zeros.
                    fileio::write_full(&self.file, src, h + in_c)?;
                    let first = (h / 512 / g.mult) as u32;
                    let step = (g.tracks / g.mult) as u32;
                    let v: Vec<u32> = (0..got as u32).map(|k| first + k * step).collect();
                    self.set_bat(&mut m, idx, &v)?;
                    pos += n;
                }
            }
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        // QEMU discards aligned requests (unallocated reads as zero) and writes zeros
        // for any other.
        if offset.is_multiple_of(self.g.cs) && len.is_multiple_of(self.g.cs) {
            return self.discard_clusters(offset, offset + len);
        }
        self.write_zero_bytes(offset, len)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let cs = self.g.cs;
        let a = offset.div_ceil(cs) * cs;
        let b = (offset + len) / cs * cs;
        if a < b {
            self.discard_clusters(a, b)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        let (host, n) = self.map(&self.lock(), offset, len);
        let alloc = match host {
            Some(h) => Alloc::Data {
                host: Some(h),
                compressed: false,
            },
            None => Alloc::Unallocated { host: None },
        };
        Ok(Status { alloc, len: n })
    }

    fn resize(&self, _new_size: u64, _prealloc: Preallocation, _shrink: bool) -> Result<()> {
        Err(Error::Unsupported(
            "Image format driver does not support resize".into(),
        ))
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "parallels",
            virtual_size: self.size,
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?.div_ceil(512) * 512,
            // QEMU's parallels driver has no bdrv_get_info: no cluster size, no dirty flag.
            cluster_size: None,
            no_driver_info: true,
            ..Default::default()
        })
    }

    fn check(&self, repair: Repair) -> Result<CheckReport> {
        check::check(self, repair)
    }
}
