//! VHD (Virtual PC / Hyper-V generation 1), which QEMU calls vpc: fixed disks (the guest data
//! followed by a 512-byte footer) and dynamic disks (a footer copy, the dynamic disk header,
//! the block allocation table (BAT), then blocks of one sector bitmap plus data, and the
//! footer at the end), as QEMU's vpc driver reads and writes them.
//!
//! As in QEMU, reads ignore the per-block sector bitmaps (a written block's bitmap is all
//! ones); a write to a block sets its whole bitmap once, remembered for the session, instead
//! of QEMU's synchronous bitmap rewrite whenever the written block changes.
//!
//! Crash safety of a block allocation: the footer first goes to the new end of the file, then
//! the bitmap and the data over the old footer, then the BAT entry. At every instant the last
//! sector is a valid footer and the BAT points only at complete blocks; a kill leaves at worst
//! an unreferenced block, which the next allocation reuses.

pub mod create;
pub mod footer;

use self::footer::*;
use crate::chain::{OpenCtx, Opened};
use crate::driver::{Alloc, BlockDriver, Format, Preallocation, Status};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::ImageInfo;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const UNALLOCATED: u32 = 0xffff_ffff;

/// Whether the file's first bytes (at most 512, fewer for shorter files) are a vpc image.
/// Like QEMU, only a footer copy at offset 0 counts: fixed disks probe as raw.
pub fn probe(head: &[u8], _path: &Path) -> bool {
    head.len() >= 8 && &head[..8] == COOKIE
}

pub fn open(path: &Path, o: &OpenCtx) -> Result<Opened> {
    Ok(Opened {
        image: Box::new(Vpc::open(path, o)?),
        backing_file: None,
        backing_format: None,
    })
}

/// Dynamic disk geometry, fixed at open.
#[derive(Debug, Clone, Copy)]
struct Dyn {
    block_size: u64,
    bitmap_size: u64,
    bat_offset: u64,
}

struct Meta {
    bat: Vec<u32>,
    /// Where the next block goes (and the footer after it): past every block and the BAT.
    free: u64,
    file_len: u64,
    /// Blocks whose bitmap is known to be all ones (one bit per BAT entry).
    ones: Vec<u64>,
}

pub struct Vpc {
    path: PathBuf,
    file: File,
    size: u64,
    read_only: bool,
    /// None for fixed disks.
    dynamic: Option<Dyn>,
    /// The footer as read, written again at the end of the file when it grows.
    footer: [u8; FOOTER_LEN],
    m: Mutex<Meta>,
}

fn einval(m: &str) -> Error {
    Error::Invalid(m.to_string())
}

impl Vpc {
    pub fn open(path: &Path, o: &OpenCtx) -> Result<Vpc> {
        let file = OpenOptions::new().read(true).write(o.writable).open(path)?;
        let file_len = fileio::file_len(&file)?;
        let mut f = [0u8; FOOTER_LEN];
        fileio::read_full(&file, &mut f, 0)?;
        let mut fixed = false;
        if &f[..8] != COOKIE {
            if file_len < FOOTER_LEN as u64 {
                return Err(einval("File too small for a VHD header"));
            }
            // A fixed disk has its footer only at the end.
            fileio::read_full(&file, &mut f, file_len - FOOTER_LEN as u64)?;
            if &f[..8] != COOKIE || be32(&f, F_TYPE) != TYPE_FIXED {
                return Err(einval("invalid VPC image"));
            }
            fixed = true;
        }
        if checksum(&f, F_CHECKSUM) != be32(&f, F_CHECKSUM) {
            return Err(einval("Incorrect header checksum"));
        }
        let sectors = total_sectors(&f);
        if sectors > MAX_SECTORS {
            return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EFBIG)));
        }
        let size = sectors * 512;
        let mut meta = Meta {
            bat: Vec::new(),
            free: 0,
            file_len,
            ones: Vec::new(),
        };
        let dynamic = if fixed {
            // Stricter than QEMU: the data must lie in front of the footer, so that no write
            // can reach the footer or grow the file.
            if size > file_len - FOOTER_LEN as u64 {
                return corrupt(format!(
                    "VHD fixed disk of {size} bytes does not fit in front of its footer (file of {file_len} bytes)"
                ));
            }
            None
        } else {
            let (d, bat, free) = open_dynamic(&file, &f, size, file_len)?;
            if be32(&f, F_TYPE) == TYPE_FIXED {
                // QEMU would do raw I/O over the dynamic disk's metadata.
                return corrupt("VHD footer at offset 0 describes a fixed disk");
            }
            meta.ones = vec![0; bat.len().div_ceil(64)];
            meta.bat = bat;
            meta.free = free;
            Some(d)
        };
        Ok(Vpc {
            path: path.to_path_buf(),
            file,
            size,
            read_only: !o.writable,
            dynamic,
            footer: f,
            m: Mutex::new(meta),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Meta> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.size, offset, len)
    }

    /// Host offset of guest offset `off` in a dynamic disk (None: unallocated).
    fn host(d: &Dyn, m: &Meta, off: u64) -> Option<u64> {
        let e = *m.bat.get((off / d.block_size) as usize)?;
        (e != UNALLOCATED).then(|| e as u64 * 512 + d.bitmap_size + off % d.block_size)
    }

    /// Makes the bitmap of the allocated block `idx` all ones (QEMU's rule: every sector of a
    /// block we write to counts as present), reading it once per session.
    fn bitmap_ones(&self, d: &Dyn, m: &mut Meta, idx: usize) -> Result<()> {
        let (w, b) = (idx / 64, idx % 64);
        if m.ones[w] >> b & 1 != 0 {
            return Ok(());
        }
        let at = m.bat[idx] as u64 * 512;
        let mut bm = vec![0u8; d.bitmap_size as usize];
        fileio::read_full(&self.file, &mut bm, at)?;
        if bm.iter().any(|&x| x != 0xff) {
            bm.fill(0xff);
            fileio::write_full(&self.file, &bm, at)?;
        }
        m.ones[w] |= 1 << b;
        Ok(())
    }

    /// Appends new blocks for the `k` unallocated BAT entries from `idx`, with `data` (at guest
    /// offset `off`) written into them, and links them.
    fn allocate(
        &self,
        d: &Dyn,
        m: &mut Meta,
        idx: usize,
        k: usize,
        data: &[u8],
        off: u64,
    ) -> Result<()> {
        let stride = d.bitmap_size + d.block_size;
        let start = m.free;
        let end = start + k as u64 * stride;
        let sector = |x: u64| (x / 512) as u32;
        if end / 512 > u32::MAX as u64 {
            return Err(Error::Invalid(
                "VHD image is full: block offsets exceed the BAT's 32 bits".into(),
            ));
        }
        let old_len = m.file_len;
        // 1. The footer at the new end: the file stays a valid VHD whatever follows.
        fileio::write_full(&self.file, &self.footer, end)?;
        m.file_len = m.file_len.max(end + FOOTER_LEN as u64);
        // Anything between the old footer and the new end (left by an interrupted write)
        // would show through the unwritten parts of the new blocks.
        if old_len > start + FOOTER_LEN as u64 {
            let to = old_len.min(end);
            if to > start {
                fileio::punch_hole(&self.file, start, to - start)?;
            }
        }
        // 2. Bitmaps and data, over the old footer.
        let ones = vec![0xffu8; d.bitmap_size as usize];
        let mut pos = 0usize;
        for j in 0..k {
            let bstart = start + j as u64 * stride;
            fileio::write_full(&self.file, &ones, bstart)?;
            let g = off + pos as u64;
            let n = (d.block_size - g % d.block_size).min((data.len() - pos) as u64) as usize;
            // The data area is a hole here: zero pages stay holes.
            fileio::write_sparse(
                &self.file,
                &data[pos..pos + n],
                bstart + d.bitmap_size + g % d.block_size,
                true,
            )?;
            pos += n;
        }
        // 3. The BAT entries.
        let mut raw = Vec::with_capacity(k * 4);
        for j in 0..k {
            let e = sector(start + j as u64 * stride);
            m.bat[idx + j] = e;
            m.ones[(idx + j) / 64] |= 1 << ((idx + j) % 64);
            raw.extend_from_slice(&e.to_be_bytes());
        }
        fileio::write_full(&self.file, &raw, d.bat_offset + idx as u64 * 4)?;
        m.free = end;
        if old_len > end + FOOTER_LEN as u64 {
            // Stale bytes behind the new footer: the footer must be the file's last sector.
            self.file.set_len(end + FOOTER_LEN as u64)?;
            m.file_len = end + FOOTER_LEN as u64;
        }
        Ok(())
    }
}

/// Parses the dynamic disk header and BAT with QEMU's checks and messages, plus checks that
/// no block overlaps the metadata or another block.
fn open_dynamic(
    file: &File,
    f: &[u8; FOOTER_LEN],
    size: u64,
    file_len: u64,
) -> Result<(Dyn, Vec<u32>, u64)> {
    let data_offset = be64(f, F_DATA_OFFSET);
    if data_offset > i64::MAX as u64 - DYN_HEADER_LEN as u64 {
        return Err(einval("Error reading dynamic VHD header"));
    }
    let mut h = [0u8; DYN_HEADER_LEN];
    fileio::read_full(file, &mut h, data_offset)?;
    if &h[..8] != DYN_COOKIE {
        return Err(einval("Invalid header magic"));
    }
    let block_size = be32(&h, D_BLOCK_SIZE);
    if !block_size.is_power_of_two() || block_size < 512 {
        return Err(einval(&format!("Invalid block size {block_size}")));
    }
    let block_size = block_size as u64;
    let bitmap_size = (block_size / (8 * 512)).next_multiple_of(512);
    // A C int in QEMU: large values are negative there.
    let mte = be32(&h, D_MAX_ENTRIES) as i32;
    if size / block_size > 0xffff_ffff {
        return Err(einval("Too many blocks"));
    }
    let computed = (mte as i64 as u64).wrapping_mul(block_size);
    if computed < size {
        return Err(einval("Page table too small"));
    }
    if !(0..=i32::MAX / 4).contains(&mte) {
        return Err(einval(&format!("Max Table Entries too large ({mte})")));
    }
    let entries = mte as u64;
    let bat_offset = be64(&h, D_TABLE_OFFSET);
    let bat_len = entries * 4;
    let truncated = || {
        einval(
            "block-vpc: free_data_block_offset points after the end of file. The image has been truncated.",
        )
    };
    // QEMU computes the first free offset from the BAT's end, so a BAT past the end of the
    // file fails there; checked before reading it, which bounds the table by the file size.
    let bat_end = bat_offset
        .checked_add(bat_len)
        .and_then(|e| e.checked_next_multiple_of(512))
        .ok_or_else(truncated)?;
    if bat_end > file_len {
        return Err(truncated());
    }
    let mut raw = vec![0u8; bat_len as usize];
    fileio::read_full(file, &mut raw, bat_offset)?;
    let bat: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().expect("4 bytes")))
        .collect();
    drop(raw);
    let stride = bitmap_size + block_size;
    let mut free = bat_end;
    let mut blocks: Vec<(u64, usize)> = Vec::new();
    for (i, &e) in bat.iter().enumerate() {
        if e != UNALLOCATED {
            let at = e as u64 * 512;
            free = free.max(at + stride);
            blocks.push((at, i));
        }
    }
    if free > file_len {
        return Err(truncated());
    }
    // Stricter than QEMU: blocks overlapping the headers, the BAT or each other would let
    // a write destroy metadata or other data.
    let meta: [(u64, u64, &str); 3] = [
        (0, FOOTER_LEN as u64, "footer copy"),
        (data_offset, DYN_HEADER_LEN as u64, "dynamic disk header"),
        (bat_offset, bat_len, "BAT"),
    ];
    for &(at, i) in &blocks {
        for &(m0, mlen, what) in &meta {
            if at < m0.saturating_add(mlen) && m0 < at + stride {
                return corrupt(format!(
                    "VHD block {i} (at offset {at:#x}) overlaps the {what}"
                ));
            }
        }
    }
    blocks.sort_unstable();
    for w in blocks.windows(2) {
        if w[0].0 + stride > w[1].0 {
            return corrupt(format!(
                "VHD blocks {} and {} overlap (at offsets {:#x} and {:#x})",
                w[0].1, w[1].1, w[0].0, w[1].0
            ));
        }
    }
    Ok((
        Dyn {
            block_size,
            bitmap_size,
            bat_offset,
        },
        bat,
        free,
    ))
}

impl BlockDriver for Vpc {
    fn format(&self) -> Format {
        Format::Vpc
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
        self.dynamic.map(|d| d.block_size)
    }
    fn write_granularity(&self) -> Option<u64> {
        // Partial blocks are written in place (new blocks read as zero around them).
        Some(4096)
    }
    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let Some(d) = self.dynamic else {
            return Ok(fileio::read_full(&self.file, buf, offset)?);
        };
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let left = (buf.len() - pos) as u64;
            let mut n = (d.block_size - off % d.block_size).min(left);
            let host = {
                let m = self.lock();
                let h = Self::host(&d, &m, off);
                if h.is_none() {
                    while n < left && Self::host(&d, &m, off + n).is_none() {
                        n += d.block_size.min(left - n);
                    }
                }
                h
            };
            let dst = &mut buf[pos..pos + n as usize];
            match host {
                Some(h) => fileio::read_sparse(&self.file, dst, h)?,
                None => dst.fill(0),
            }
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, buf.len() as u64)?;
        let Some(d) = self.dynamic else {
            return Ok(fileio::write_sparse(&self.file, buf, offset, false)?);
        };
        let mut in_place: Vec<(u64, usize, usize)> = Vec::new();
        {
            let mut m = self.lock();
            let mut pos = 0usize;
            while pos < buf.len() {
                let off = offset + pos as u64;
                let idx = (off / d.block_size) as usize;
                let n = (d.block_size - off % d.block_size).min((buf.len() - pos) as u64) as usize;
                if let Some(h) = Self::host(&d, &m, off) {
                    self.bitmap_ones(&d, &mut m, idx)?;
                    in_place.push((h, pos, n));
                    pos += n;
                    continue;
                }
                let mut len = n;
                let mut k = 1;
                while pos + len < buf.len() && m.bat[idx + k] == UNALLOCATED {
                    len += (d.block_size as usize).min(buf.len() - pos - len);
                    k += 1;
                }
                self.allocate(&d, &mut m, idx, k, &buf[pos..pos + len], off)?;
                pos += len;
            }
        }
        for (h, pos, n) in in_place {
            fileio::write_sparse(&self.file, &buf[pos..pos + n], h, false)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, len)?;
        let Some(d) = self.dynamic else {
            if may_unmap {
                fileio::punch_hole(&self.file, offset, len)?;
            } else {
                fileio::write_zeroes_slow(&self.file, offset, len)?;
            }
            return Ok(());
        };
        // Unallocated blocks read as zero already; allocated ones get zeros written.
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (d.block_size - pos % d.block_size).min(end - pos);
            let host = {
                let mut m = self.lock();
                let h = Self::host(&d, &m, pos);
                if h.is_some() {
                    self.bitmap_ones(&d, &mut m, (pos / d.block_size) as usize)?;
                }
                h
            };
            if let Some(h) = host {
                fileio::write_zeroes_slow(&self.file, h, n)?;
            }
            pos += n;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // QEMU's vpc driver has no discard.
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, len)
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        let Some(d) = self.dynamic else {
            // QEMU: data at the same offset, recursing into the file (holes read as zero).
            return Ok(match fileio::seek_data(&self.file, offset)? {
                Some(x) if x <= offset => {
                    let hole = fileio::seek_hole(&self.file, offset)?.unwrap_or(offset + len);
                    Status {
                        alloc: Alloc::Data {
                            host: Some(offset),
                            compressed: false,
                        },
                        len: hole.min(offset + len).max(offset + 1) - offset,
                    }
                }
                x => Status {
                    alloc: Alloc::DataZero { host: Some(offset) },
                    len: x.map_or(len, |x| (x - offset).min(len)),
                },
            });
        };
        let m = self.lock();
        let first = (d.block_size - offset % d.block_size).min(len);
        match Self::host(&d, &m, offset) {
            // One block at most: a bitmap sits between blocks.
            Some(h) => Ok(Status {
                alloc: Alloc::Data {
                    host: Some(h),
                    compressed: false,
                },
                len: first,
            }),
            None => {
                let mut n = first;
                while n < len && Self::host(&d, &m, offset + n).is_none() {
                    n += d.block_size.min(len - n);
                }
                Ok(Status {
                    alloc: Alloc::Zero { host: None },
                    len: n,
                })
            }
        }
    }

    fn resize(&self, _new_size: u64, _prealloc: Preallocation, _shrink: bool) -> Result<()> {
        Err(Error::Unsupported(
            "Image format driver does not support resize".into(),
        ))
    }

    fn has_zero_init(&self) -> bool {
        self.dynamic.is_some()
            || self
                .file
                .metadata()
                .map(|m| m.file_type().is_file())
                .unwrap_or(false)
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "vpc",
            virtual_size: self.size,
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?.div_ceil(512) * 512,
            cluster_size: self.cluster_size(),
            ..Default::default()
        })
    }
}
