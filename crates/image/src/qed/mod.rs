//! qed (QEMU Enhanced Disk), read and written as QEMU's driver does
//! (docs/interop/qed_spec.txt; QEMU's block/qed*.c for limits, messages and quirks).
//!
//! Layout: header cluster(s), an L1 table, then L2 tables and data clusters appended at the
//! end of the file as they are allocated. Clusters are never freed. An L2 entry is 0
//! (unallocated: read the backing file or zeros), 1 (reads as zeros) or a cluster offset.
//!
//! Crash safety follows QEMU. Data is written before the L2 entry that points at it, a new L2
//! table before the L1 entry that points at it, so a kill at any instant leaves at worst
//! leaked clusters. Against power loss: without a backing file the header's need-check flag
//! is set (and synced) before the first allocation, so that after a power cut QEMU and
//! virtkit check the image on its next writable open and drop entries past the end of the
//! file; with a backing file (no need-check flag, as in QEMU) data and new tables are synced
//! before they are linked, since a partial cluster holds copied backing data. `flush` makes
//! everything durable and clears the flag; closing clears it without flushing, like
//! qemu-img convert's cache=unsafe target (see the README's durability model).

pub mod check;
pub mod create;
pub mod header;
mod table;

use self::header::Header;
use self::table::SliceCache;
use crate::chain::{OpenCtx, Opened};
use crate::driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::ImageInfo;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Whether the file's first bytes (at most 512, fewer for shorter files) are a qed image.
pub fn probe(head: &[u8], _path: &Path) -> bool {
    head.len() >= header::LEN && head[..4] == header::MAGIC.to_le_bytes()
}

/// Geometry fixed at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub cs: u64,
    pub cluster_bits: u32,
    /// Table size in clusters.
    pub ts: u64,
    /// Entries per table.
    pub entries: u64,
    /// Guest bytes one L2 table maps = 1 << l1_shift.
    pub l1_shift: u32,
}

impl Geometry {
    fn new(h: &Header) -> Geometry {
        let cs = h.cluster_size as u64;
        let ts = h.table_size as u64;
        let entries = cs * ts / 8;
        Geometry {
            cs,
            cluster_bits: cs.trailing_zeros(),
            ts,
            entries,
            l1_shift: cs.trailing_zeros() + entries.trailing_zeros(),
        }
    }
    pub fn table_bytes(&self) -> u64 {
        self.cs * self.ts
    }
    /// L1 entries that map guest data for a disk of `size` bytes.
    fn l1_needed(&self, size: u64) -> u64 {
        size.div_ceil(1u64 << self.l1_shift).min(self.entries)
    }
    fn l2_index(&self, off: u64) -> u64 {
        (off >> self.cluster_bits) & (self.entries - 1)
    }
}

/// Where a guest range lives in this layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    Data(u64),
    Zero,
    Unallocated,
}

/// Metadata, behind the driver's lock.
pub(crate) struct Meta {
    pub hdr: Header,
    /// The L1 entries that cover the virtual size (the rest only matters to `check`).
    pub l1: Vec<u64>,
    l2: SliceCache,
    /// End of the allocated area: the file length rounded down to a cluster, grown by
    /// allocations (QEMU's s->file_size).
    pub file_size: u64,
    backing_name: Option<String>,
}

impl Meta {
    /// The mapping at `off` for at most `max` bytes, within one L2 table (QEMU's
    /// qed_find_cluster and its count of contiguous clusters).
    fn map(&mut self, f: &File, g: &Geometry, off: u64, max: u64) -> Result<(Map, u64)> {
        let span = 1u64 << g.l1_shift;
        let len = max.min(span - (off & (span - 1)));
        let l2 = self
            .l1
            .get((off >> g.l1_shift) as usize)
            .copied()
            .unwrap_or(0);
        if l2 == 0 {
            return Ok((Map::Unallocated, len));
        }
        if !self.hdr.table_offset_valid(l2, self.file_size) {
            return corrupt(format!("Invalid L2 table offset {l2:#x}"));
        }
        let in_c = off & (g.cs - 1);
        let idx = g.l2_index(off);
        let end = (idx + (in_c + len).div_ceil(g.cs)).min(g.entries);
        let first = self.l2.get(f, l2, idx)?;
        let kind = match first {
            0 => Map::Unallocated,
            1 => Map::Zero,
            h if self.hdr.cluster_offset_valid(h, self.file_size) => Map::Data(h + in_c),
            h => return corrupt(format!("Invalid cluster offset {h:#x}")),
        };
        let mut last = first;
        let mut i = idx + 1;
        while i < end {
            let e = self.l2.get(f, l2, i)?;
            let same = match kind {
                Map::Unallocated => e == 0,
                Map::Zero => e == 1,
                // `last` is below the file size, so the sum cannot overflow.
                Map::Data(_) => e == last + g.cs && e < self.file_size,
            };
            if !same {
                break;
            }
            last = e;
            i += 1;
        }
        Ok((kind, len.min((i - idx) * g.cs - in_c)))
    }

    /// Reserves `n` clusters at the end of the allocated area (QEMU's qed_alloc_clusters).
    fn alloc(&mut self, cs: u64, n: u64) -> Result<u64> {
        let host = self.file_size;
        match n.checked_mul(cs).and_then(|b| host.checked_add(b)) {
            Some(end) if end <= i64::MAX as u64 => {
                self.file_size = end;
                Ok(host)
            }
            _ => Err(Error::Invalid("Image file is too large".into())),
        }
    }
}

pub struct Qed {
    path: PathBuf,
    file: File,
    g: Geometry,
    backing: Option<Box<dyn BlockDriver>>,
    size: AtomicU64,
    read_only: bool,
    m: Mutex<Meta>,
}

pub fn open(path: &Path, o: &OpenCtx) -> Result<Opened> {
    let file = OpenOptions::new().read(true).write(o.writable).open(path)?;
    let len = fileio::file_len(&file)?;
    let mut b = [0u8; header::LEN];
    fileio::read_full(&file, &mut b, 0)?;
    let hdr = Header::decode(&b)?;
    // QEMU rounds the file length down to the last cluster.
    let file_size = if header::cluster_size_valid(hdr.cluster_size as u64) {
        len & !(hdr.cluster_size as u64 - 1)
    } else {
        0
    };
    hdr.validate(file_size)?;
    let g = Geometry::new(&hdr);
    let mut backing_name = None;
    if hdr.features & header::F_BACKING_FILE != 0 {
        let n = hdr.backing_filename_size;
        if n >= header::MAX_BACKING_NAME {
            return corrupt("Failed to read backing filename");
        }
        let mut raw = vec![0u8; n as usize];
        fileio::read_full(&file, &mut raw, hdr.backing_filename_offset as u64)?;
        // A C string: it ends at the first NUL.
        let end = raw.iter().position(|&c| c == 0).unwrap_or(raw.len());
        let name = String::from_utf8_lossy(&raw[..end]).into_owned();
        if !name.is_empty() {
            backing_name = Some(name);
        }
    }
    let backing_format = (backing_name.is_some()
        && hdr.features & header::F_BACKING_FORMAT_NO_PROBE != 0)
        .then(|| "raw".to_string());
    let l1 = table::read_entries(
        &file,
        hdr.l1_table_offset,
        g.l1_needed(hdr.image_size) as usize,
    )?;
    let mut img = Qed {
        path: path.to_path_buf(),
        file,
        g,
        backing: None,
        size: AtomicU64::new(hdr.image_size),
        read_only: !o.writable,
        m: Mutex::new(Meta {
            hdr,
            l1,
            l2: SliceCache::new(g.entries),
            file_size,
            backing_name: backing_name.clone(),
        }),
    };
    // Not closed cleanly: check and repair before any write (QEMU does the same; a
    // read-only open may read an inconsistent image as it is).
    if o.writable
        && !o.for_check
        && img.lock().hdr.features & header::F_NEED_CHECK != 0
        && img.check(Repair::All).is_err()
    {
        // Left as found: dropping must not mark the image clean.
        img.read_only = true;
        return corrupt("Image corrupted");
    }
    if o.writable && img.lock().hdr.autoclear_features & !header::AUTOCLEAR_FEATURE_MASK != 0 {
        // Knock out autoclear bits we do not maintain, as QEMU does, so that a newer
        // program sees its feature is no longer valid.
        let mut m = img.lock();
        m.hdr.autoclear_features &= header::AUTOCLEAR_FEATURE_MASK;
        img.write_header(&m.hdr)?;
        img.file.sync_data()?;
    }
    Ok(Opened {
        image: Box::new(img),
        backing_file: backing_name,
        backing_format,
    })
}

impl Qed {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Meta> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.g
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.virtual_size(), offset, len)
    }

    fn check_writable(&self) -> Result<()> {
        crate::driver::check_writable(self.read_only)
    }

    fn read_backing(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let n = match &self.backing {
            None => 0,
            Some(b) => {
                let n = b.virtual_size().saturating_sub(off).min(buf.len() as u64) as usize;
                if n > 0 {
                    b.read_at(&mut buf[..n], off)?;
                }
                n
            }
        };
        buf[n..].fill(0);
        Ok(())
    }

    /// Rewrites the 64 header bytes (the backing name after them is left alone).
    pub(crate) fn write_header(&self, h: &Header) -> Result<()> {
        fileio::write_full(&self.file, &h.encode(), 0)?;
        Ok(())
    }

    /// Marks the image as needing a check before its first allocation (only without a
    /// backing file; with one, allocations sync their data before linking it).
    fn set_need_check(&self, m: &mut Meta) -> Result<()> {
        if self.backing.is_some() || m.hdr.features & header::F_NEED_CHECK != 0 {
            return Ok(());
        }
        m.hdr.features |= header::F_NEED_CHECK;
        self.write_header(&m.hdr)?;
        // Durable before any table points at new clusters.
        self.file.sync_data()?;
        Ok(())
    }

    /// Everything written is consistent: clear the need-check flag (QEMU's clean close).
    /// `durable`: flush the writes before and the header after.
    fn clear_need_check(&self, durable: bool) -> Result<()> {
        let mut m = self.lock();
        if m.hdr.features & header::F_NEED_CHECK == 0 {
            return Ok(());
        }
        if durable {
            self.file.sync_data()?;
        }
        m.hdr.features &= !header::F_NEED_CHECK;
        self.write_header(&m.hdr)?;
        if durable {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// The L2 table for `off`, created (zeroed, synced, then linked in L1) when missing.
    fn l2_for_write(&self, m: &mut Meta, off: u64) -> Result<u64> {
        let g = self.g;
        let l1i = (off >> g.l1_shift) as usize;
        let cur =
            m.l1.get(l1i)
                .copied()
                .ok_or_else(|| Error::Invalid("Write beyond the end of the L1 table".into()))?;
        if cur != 0 {
            if !m.hdr.table_offset_valid(cur, m.file_size) {
                return corrupt(format!("Invalid L2 table offset {cur:#x}"));
            }
            return Ok(cur);
        }
        let t = m.alloc(g.cs, g.ts)?;
        fileio::write_zeroes_slow(&self.file, t, g.table_bytes())?;
        if self.backing.is_some() {
            // No need-check flag to recover with: durable before L1 names it.
            self.file.sync_data()?;
        }
        table::write_entries(&self.file, m.hdr.l1_table_offset + l1i as u64 * 8, &[t])?;
        m.l1[l1i] = t;
        Ok(t)
    }

    /// Writes `data` at `off` into newly allocated clusters (the range maps to one kind of
    /// unallocated run within one L2 table), filling the rest of partial clusters from the
    /// backing file (or zeros), then links them.
    fn write_alloc(&self, m: &mut Meta, data: &[u8], off: u64, was_zero: bool) -> Result<()> {
        let g = self.g;
        let in_c = off & (g.cs - 1);
        let ncl = (in_c + data.len() as u64).div_ceil(g.cs);
        self.set_need_check(m)?;
        // Data clusters first, then a new L2 table after them: QEMU's layout.
        let host = m.alloc(g.cs, ncl)?;
        let l2 = self.l2_for_write(m, off)?;
        if in_c == 0 && data.len() as u64 == ncl * g.cs {
            fileio::write_full(&self.file, data, host)?;
        } else {
            let mut buf = vec![0u8; (ncl * g.cs) as usize];
            let (a, b) = (in_c as usize, in_c as usize + data.len());
            // A zero cluster stays zero around the new data (QEMU copies the backing file
            // there, which would resurrect data the zero cluster hid).
            if !was_zero && self.backing.is_some() {
                self.read_backing(&mut buf[..a], off - in_c)?;
                self.read_backing(&mut buf[b..], off + data.len() as u64)?;
            }
            buf[a..b].copy_from_slice(data);
            fileio::write_full(&self.file, &buf, host)?;
        }
        if self.backing.is_some() {
            // Copied backing data must be durable before the entry hides the backing file.
            self.file.sync_data()?;
        }
        let entries: Vec<u64> = (0..ncl).map(|k| host + k * g.cs).collect();
        m.l2.set(&self.file, l2, g.l2_index(off), &entries)
    }

    /// Makes whole clusters [off, off+len) read as zero (QEMU's zero-write path: zeros
    /// written in place over allocated clusters, the zero marker elsewhere).
    fn zero_clusters(&self, off: u64, len: u64, mark_unallocated: bool) -> Result<()> {
        let g = self.g;
        let end = off + len;
        let mut p = off;
        while p < end {
            let mut m = self.lock();
            let (map, n) = m.map(&self.file, &g, p, end - p)?;
            match map {
                Map::Data(h) => {
                    drop(m);
                    fileio::write_zeroes_slow(&self.file, h, n)?;
                }
                Map::Zero => {}
                Map::Unallocated if !mark_unallocated => {}
                Map::Unallocated => {
                    self.set_need_check(&mut m)?;
                    let l2 = self.l2_for_write(&mut m, p)?;
                    let ones = vec![1u64; (n / g.cs) as usize];
                    m.l2.set(&self.file, l2, g.l2_index(p), &ones)?;
                }
            }
            p += n;
        }
        Ok(())
    }

    /// Writes explicit zeros (for the unaligned parts of a zero write, as QEMU's fallback).
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
}

impl Drop for Qed {
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.clear_need_check(false);
        }
    }
}

impl BlockDriver for Qed {
    fn format(&self) -> Format {
        Format::Qed
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
    fn has_zero_init(&self) -> bool {
        self.backing.is_none()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let (map, n) = self
                .lock()
                .map(&self.file, &self.g, off, (buf.len() - pos) as u64)?;
            let dst = &mut buf[pos..pos + n as usize];
            match map {
                Map::Data(h) => fileio::read_full(&self.file, dst, h)?,
                Map::Zero => dst.fill(0),
                Map::Unallocated => self.read_backing(dst, off)?,
            }
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let mut m = self.lock();
            let (map, n) = m.map(&self.file, &self.g, off, (buf.len() - pos) as u64)?;
            let src = &buf[pos..pos + n as usize];
            match map {
                Map::Data(h) => {
                    drop(m);
                    fileio::write_full(&self.file, src, h)?;
                }
                Map::Zero => self.write_alloc(&mut m, src, off, true)?,
                Map::Unallocated => self.write_alloc(&mut m, src, off, false)?,
            }
            pos += n as usize;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let cs = self.g.cs;
        let end = offset + len;
        let a = offset.div_ceil(cs) * cs;
        let b = end / cs * cs;
        if a >= b {
            return self.write_zero_bytes(offset, len);
        }
        self.write_zero_bytes(offset, a - offset)?;
        self.zero_clusters(a, b - a, true)?;
        self.write_zero_bytes(b, end - b)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // QED cannot free clusters (QEMU ignores discard). Whole allocated clusters are
        // zeroed in place so that they read as zero; unallocated ones keep showing the
        // backing file. Partial clusters are left as they are.
        self.check_writable()?;
        self.check_range(offset, len)?;
        let cs = self.g.cs;
        let a = offset.div_ceil(cs) * cs;
        let b = (offset + len) / cs * cs;
        if a < b {
            self.zero_clusters(a, b - a, false)?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            self.file.sync_data()?;
            self.clear_need_check(true)?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        let (map, n) = self.lock().map(&self.file, &self.g, offset, len)?;
        let alloc = match map {
            Map::Data(h) => Alloc::Data {
                host: Some(h),
                compressed: false,
            },
            Map::Zero => Alloc::Zero { host: None },
            Map::Unallocated => Alloc::Unallocated { host: None },
        };
        Ok(Status { alloc, len: n })
    }

    fn resize(&self, new_size: u64, prealloc: Preallocation, shrink: bool) -> Result<()> {
        self.check_writable()?;
        let old = self.virtual_size();
        if new_size < old && !shrink {
            return Err(Error::Invalid(
                "Use the --shrink option to perform a shrink operation.".into(),
            ));
        }
        if prealloc != Preallocation::Off {
            return Err(Error::Unsupported(format!(
                "Unsupported preallocation mode '{}'",
                prealloc.name()
            )));
        }
        if !header::image_size_valid(new_size, self.g.cs, self.g.ts) {
            return Err(Error::Invalid("Invalid image size specified".into()));
        }
        if new_size < old {
            return Err(Error::Unsupported(
                "Shrinking images is currently not supported".into(),
            ));
        }
        let mut m = self.lock();
        let have = m.l1.len() as u64;
        let need = self.g.l1_needed(new_size);
        if need > have {
            let more = table::read_entries(
                &self.file,
                m.hdr.l1_table_offset + have * 8,
                (need - have) as usize,
            )?;
            m.l1.extend(more);
        }
        let mut h = m.hdr;
        h.image_size = new_size;
        self.write_header(&h)?;
        m.hdr = h;
        self.size.store(new_size, Ordering::Relaxed);
        Ok(())
    }

    fn change_backing_file(&self, file: Option<&str>, fmt: Option<&str>) -> Result<()> {
        self.check_writable()?;
        let mut m = self.lock();
        let mut h = m.hdr;
        // With an unknown compatible feature the bytes after the header may be in use.
        if file.is_some() && h.compat_features & !header::COMPAT_FEATURE_MASK != 0 {
            return Err(Error::Unsupported("Operation not supported".into()));
        }
        h.features &= !(header::F_BACKING_FILE | header::F_BACKING_FORMAT_NO_PROBE);
        let name = file.unwrap_or("").as_bytes();
        if file.is_some() {
            h.features |= header::F_BACKING_FILE;
            if fmt == Some("raw") {
                h.features |= header::F_BACKING_FORMAT_NO_PROBE;
            }
        }
        let total = header::LEN as u64 + name.len() as u64;
        if total > h.header_bytes() {
            return Err(Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)));
        }
        h.backing_filename_offset = header::LEN as u32;
        h.backing_filename_size = name.len() as u32;
        let mut buf = h.encode().to_vec();
        buf.extend_from_slice(name);
        fileio::write_full(&self.file, &buf, 0)?;
        self.file.sync_data()?;
        m.hdr = h;
        m.backing_name = file.filter(|f| !f.is_empty()).map(str::to_string);
        Ok(())
    }

    fn info(&self) -> Result<ImageInfo> {
        let m = self.lock();
        let backing_format = (m.backing_name.is_some()
            && m.hdr.features & header::F_BACKING_FORMAT_NO_PROBE != 0)
            .then(|| "raw".to_string());
        let full = m.backing_name.as_ref().map(|b| {
            crate::chain::resolve_backing(&self.path, b)
                .display()
                .to_string()
        });
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "qed",
            virtual_size: self.virtual_size(),
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?.div_ceil(512) * 512,
            cluster_size: Some(self.g.cs),
            backing_filename: m.backing_name.clone(),
            full_backing_filename: full,
            backing_format,
            // QEMU's need-check timer clears the flag in memory before `info` asks for it
            // (the drain fires it at once), so qemu-img always reports a clean image.
            dirty: false,
            ..Default::default()
        })
    }

    fn check(&self, repair: Repair) -> Result<CheckReport> {
        check::check(self, repair != Repair::None)
    }
}
