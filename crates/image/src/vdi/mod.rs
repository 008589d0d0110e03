//! VDI (VirtualBox) images, dynamic and static, as QEMU's vdi driver reads and writes them.
//!
//! Layout: a 512-byte header, the block map (one little-endian u32 per 1 MiB block: the
//! block's index in the data area, 0xffffffff never written, 0xfffffffe discarded) and the
//! data area, where blocks are appended in allocation order.
//!
//! Crash safety: a new block reads as zero except for the data written into it, and that data
//! is written before the block map entry that points to it. The header's allocation count and
//! the map entries change together: when the map lies right behind the header (every image
//! QEMU and VirtualBox make) and the changed entries are near enough, header and entries go
//! out in one write from offset 0, which a kill cannot split while it stays within the first
//! page (the first 896 blocks); otherwise the count is written first, so a kill in between
//! leaves a count one too high (QEMU's own order, which `qemu-img check` reports as a
//! mismatch), never a block used twice.

pub mod check;
pub mod create;
pub mod header;

use self::header::{is_allocated, Header, BLOCK_SIZE, HEADER_LEN, SECTOR, TYPE_STATIC};
use crate::chain::{OpenCtx, Opened};
use crate::driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::ImageInfo;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

const BS: u64 = BLOCK_SIZE as u64;
/// Header and block map go out in one write when the changed entries end this close to the
/// start of the file.
const ONE_WRITE_SPAN: u64 = 64 << 10;

/// Whether the file's first bytes (at most 512, fewer for shorter files) are a vdi image.
pub fn probe(head: &[u8], _path: &Path) -> bool {
    head.len() >= HEADER_LEN
        && u32::from_le_bytes([head[0x40], head[0x41], head[0x42], head[0x43]]) == header::SIGNATURE
}

pub fn open(path: &Path, o: &OpenCtx) -> Result<Opened> {
    Ok(Opened {
        image: Box::new(Vdi::open(path, o)?),
        backing_file: None,
        backing_format: None,
    })
}

/// Mutable metadata, behind the driver's lock.
struct Meta {
    hdr: Header,
    /// The block map as on disk (host-endian values).
    bmap: Vec<u32>,
    /// Index the next new block gets: past every block in use and past the header's count.
    next: u32,
    file_len: u64,
}

pub struct Vdi {
    path: PathBuf,
    file: File,
    size: u64,
    read_only: bool,
    is_static: bool,
    offset_bmap: u64,
    offset_data: u64,
    blocks: u32,
    m: Mutex<Meta>,
}

/// Where a guest range lives.
enum Loc {
    /// Host offset of the guest offset asked for.
    Host(u64),
    Zero,
}

impl Vdi {
    pub fn open(path: &Path, o: &OpenCtx) -> Result<Vdi> {
        let file = OpenOptions::new().read(true).write(o.writable).open(path)?;
        let file_len = fileio::file_len(&file)?;
        let mut raw = [0u8; HEADER_LEN];
        fileio::read_full(&file, &mut raw, 0)?;
        let hdr = Header::parse(&raw)?;
        let blocks = hdr.blocks_in_image;
        let offset_bmap = hdr.offset_bmap as u64;
        let offset_data = hdr.offset_data as u64;
        let map_len = blocks as u64 * 4;
        // Stricter than QEMU (which reads a missing map as zeros, i.e. every block at index 0):
        // the map must be in the file, which also bounds its allocation by the file's size.
        if offset_bmap + map_len > file_len {
            return corrupt(format!(
                "VDI block map ({blocks} entries at offset {offset_bmap:#x}) extends past the end of the file"
            ));
        }
        if blocks > 0 && offset_bmap < HEADER_LEN as u64 {
            return corrupt("VDI block map overlaps the header");
        }
        if blocks > 0 && (offset_data < offset_bmap + map_len || offset_data < HEADER_LEN as u64) {
            return corrupt(format!(
                "VDI data area (offset {offset_data:#x}) overlaps the header or the block map"
            ));
        }
        let mut rawmap = vec![0u8; map_len as usize];
        fileio::read_full(&file, &mut rawmap, offset_bmap)?;
        let bmap: Vec<u32> = rawmap
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        drop(rawmap);
        let mut max_used: Option<u32> = None;
        for &e in &bmap {
            if is_allocated(e) && e < blocks {
                max_used = Some(max_used.map_or(e, |m| m.max(e)));
            }
        }
        if o.writable && !o.for_check {
            // Writes through a map that points outside the data area, past the end of the
            // file or twice at one block would damage other data: refuse them up front.
            sound_map(&bmap, blocks, offset_data, file_len)?;
        }
        let next = hdr
            .blocks_allocated
            .max(max_used.map_or(0, |m| m.saturating_add(1)));
        if o.writable && !o.for_check {
            // Every unallocated entry must still find a block, or a write could fail halfway.
            let free = bmap.iter().filter(|&&e| !is_allocated(e)).count() as u64;
            if next as u64 + free > blocks as u64 {
                return corrupt(format!(
                    "VDI header counts {} allocated blocks: no room for the {free} blocks not yet allocated among {blocks}",
                    hdr.blocks_allocated
                ));
            }
        }
        Ok(Vdi {
            path: path.to_path_buf(),
            file,
            size: hdr.disk_size,
            read_only: !o.writable,
            is_static: hdr.image_type == TYPE_STATIC,
            offset_bmap,
            offset_data,
            blocks,
            m: Mutex::new(Meta {
                hdr,
                bmap,
                next,
                file_len,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Meta> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn header(&self) -> Header {
        self.lock().hdr.clone()
    }

    pub(crate) fn block_map(&self) -> Vec<u32> {
        self.lock().bmap.clone()
    }

    fn block_host(&self, index: u32) -> u64 {
        self.offset_data + index as u64 * BS
    }

    /// Where the guest offset `off` lives, validating the map entry before it is used.
    fn locate(&self, m: &Meta, off: u64) -> Result<Loc> {
        let blk = (off / BS) as usize;
        let e = m.bmap[blk];
        if !is_allocated(e) {
            return Ok(Loc::Zero);
        }
        if e >= self.blocks {
            return corrupt(format!(
                "VDI block map entry {blk} points to block {e}, outside the image's {} blocks",
                self.blocks
            ));
        }
        let host = self.block_host(e);
        if host >= m.file_len {
            return corrupt(format!(
                "VDI block {e} (guest block {blk}) lies past the end of the file"
            ));
        }
        Ok(Loc::Host(host + off % BS))
    }

    /// Writes the allocation count and the map entries of blocks `first..=last`.
    fn write_meta(&self, m: &Meta, first: usize, last: usize) -> Result<()> {
        let sec = SECTOR as usize;
        let s0 = first * 4 / sec * sec;
        let s1 = ((last + 1) * 4).div_ceil(sec) * sec;
        let s1 = s1.min(m.bmap.len() * 4);
        let hdr = m.hdr.bytes();
        if self.offset_bmap == HEADER_LEN as u64 && HEADER_LEN as u64 + s1 as u64 <= ONE_WRITE_SPAN
        {
            let mut b = Vec::with_capacity(HEADER_LEN + s1);
            b.extend_from_slice(&hdr);
            for e in &m.bmap[..s1 / 4] {
                b.extend_from_slice(&e.to_le_bytes());
            }
            fileio::write_full(&self.file, &b, 0)?;
            return Ok(());
        }
        fileio::write_full(&self.file, &hdr, 0)?;
        let mut b = Vec::with_capacity(s1 - s0);
        for e in &m.bmap[s0 / 4..s1 / 4] {
            b.extend_from_slice(&e.to_le_bytes());
        }
        fileio::write_full(&self.file, &b, self.offset_bmap + s0 as u64)?;
        Ok(())
    }

    /// Gives the guest blocks `first..first+n` (all unallocated) new consecutive blocks and
    /// writes `data` (guest offset `off`, inside those blocks) into them, then publishes them.
    fn allocate(&self, m: &mut Meta, first: usize, n: usize, data: &[u8], off: u64) -> Result<()> {
        let idx = m.next;
        let end_idx = idx as u64 + n as u64;
        if end_idx > self.blocks as u64 {
            return corrupt(format!(
                "VDI image has no free block left (next block {idx}, {} blocks in the image)",
                self.blocks
            ));
        }
        let start = self.block_host(idx);
        let end = start + n as u64 * BS;
        // Blocks read back whole: what the data does not cover must read as zero. Space past
        // the end of the file does; anything left there by an interrupted write must go.
        if start < m.file_len {
            fileio::punch_hole(&self.file, start, m.file_len.min(end) - start)?;
        }
        if m.file_len < end {
            self.file.set_len(end)?;
            m.file_len = end;
        }
        // Zero pages stay holes, as after qemu-img convert.
        fileio::write_sparse(&self.file, data, start + (off - first as u64 * BS), true)?;
        for k in 0..n {
            m.bmap[first + k] = idx + k as u32;
        }
        m.next = end_idx as u32;
        m.hdr.blocks_allocated = m.next;
        self.write_meta(m, first, first + n - 1)
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.size, offset, len)
    }
}

/// Every allocated entry inside the data area, inside the file and used once.
fn sound_map(bmap: &[u32], blocks: u32, offset_data: u64, file_len: u64) -> Result<()> {
    let mut seen = vec![0u64; (blocks as usize).div_ceil(64)];
    for (i, &e) in bmap.iter().enumerate() {
        if !is_allocated(e) {
            continue;
        }
        if e >= blocks {
            return corrupt(format!(
                "VDI block map entry {i} points to block {e}, outside the image's {blocks} blocks"
            ));
        }
        if offset_data + e as u64 * BS >= file_len {
            return corrupt(format!(
                "VDI block {e} (guest block {i}) lies past the end of the file"
            ));
        }
        let (w, b) = (e as usize / 64, e % 64);
        if seen[w] >> b & 1 != 0 {
            return corrupt(format!(
                "VDI block {e} is used by more than one guest block; the image is corrupt"
            ));
        }
        seen[w] |= 1 << b;
    }
    Ok(())
}

impl BlockDriver for Vdi {
    fn format(&self) -> Format {
        Format::Vdi
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
        Some(BS)
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
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let mut n = (BS - off % BS).min((buf.len() - pos) as u64);
            let loc = {
                let m = self.lock();
                let loc = self.locate(&m, off)?;
                // Extend over blocks that follow on in the file (sequential allocation).
                if let Loc::Host(h) = loc {
                    while pos as u64 + n < buf.len() as u64 {
                        let next = off + n;
                        match self.locate(&m, next)? {
                            Loc::Host(h2) if h2 == h + n => {
                                n += BS.min(buf.len() as u64 - pos as u64 - n)
                            }
                            _ => break,
                        }
                    }
                } else {
                    while pos as u64 + n < buf.len() as u64 {
                        match self.locate(&m, off + n)? {
                            Loc::Zero => n += BS.min(buf.len() as u64 - pos as u64 - n),
                            _ => break,
                        }
                    }
                }
                loc
            };
            let dst = &mut buf[pos..pos + n as usize];
            match loc {
                Loc::Zero => dst.fill(0),
                Loc::Host(h) => fileio::read_sparse(&self.file, dst, h)?,
            }
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, buf.len() as u64)?;
        let mut in_place: Vec<(u64, usize, usize)> = Vec::new();
        {
            let mut m = self.lock();
            let mut pos = 0usize;
            while pos < buf.len() {
                let off = offset + pos as u64;
                let blk = (off / BS) as usize;
                let n = (BS - off % BS).min((buf.len() - pos) as u64) as usize;
                match self.locate(&m, off)? {
                    Loc::Host(h) => {
                        in_place.push((h, pos, n));
                        pos += n;
                    }
                    Loc::Zero => {
                        // A run of unallocated blocks gets consecutive new blocks.
                        let mut len = n;
                        let mut k = 1;
                        while pos + len < buf.len() && !is_allocated(m.bmap[blk + k]) {
                            len += (BS as usize).min(buf.len() - pos - len);
                            k += 1;
                        }
                        self.allocate(&mut m, blk, k, &buf[pos..pos + len], off)?;
                        pos += len;
                    }
                }
            }
        }
        for (h, pos, n) in in_place {
            fileio::write_sparse(&self.file, &buf[pos..pos + n], h, false)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, len)?;
        // Unallocated blocks already read as zero; allocated ones get zeros written (VDI has
        // no way to give a block back).
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (BS - pos % BS).min(end - pos);
            let loc = self.locate(&self.lock(), pos)?;
            if let Loc::Host(h) = loc {
                fileio::write_zeroes_slow(&self.file, h, n)?;
            }
            pos += n;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // As in QEMU: nothing to give back.
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
        let m = self.lock();
        let first = (BS - offset % BS).min(len);
        match self.locate(&m, offset)? {
            Loc::Zero => {
                // QEMU: BDRV_BLOCK_ZERO, one block per call (qemu-img map merges them).
                let mut n = first;
                while n < len && matches!(self.locate(&m, offset + n)?, Loc::Zero) {
                    n += BS.min(len - n);
                }
                Ok(Status {
                    alloc: Alloc::Zero { host: None },
                    len: n,
                })
            }
            Loc::Host(h) if !self.is_static => {
                let mut n = first;
                while n < len {
                    match self.locate(&m, offset + n)? {
                        Loc::Host(h2) if h2 == h + n => n += BS.min(len - n),
                        _ => break,
                    }
                }
                Ok(Status {
                    alloc: Alloc::Data {
                        host: Some(h),
                        compressed: false,
                    },
                    len: n,
                })
            }
            Loc::Host(h) => {
                // Static images: QEMU recurses into the file, so holes read as data+zero.
                drop(m);
                let n = first;
                match fileio::seek_data(&self.file, h)? {
                    Some(d) if d <= h => {
                        let hole = fileio::seek_hole(&self.file, h)?.unwrap_or(h + n);
                        Ok(Status {
                            alloc: Alloc::Data {
                                host: Some(h),
                                compressed: false,
                            },
                            len: (hole.min(h + n).max(h + 1)) - h,
                        })
                    }
                    d => Ok(Status {
                        alloc: Alloc::DataZero { host: Some(h) },
                        len: d.map_or(n, |d| (d - h).min(n)),
                    }),
                }
            }
        }
    }

    fn resize(&self, _new_size: u64, _prealloc: Preallocation, _shrink: bool) -> Result<()> {
        Err(Error::Unsupported(
            "Image format driver does not support resize".into(),
        ))
    }

    fn has_zero_init(&self) -> bool {
        if self.is_static {
            self.file
                .metadata()
                .map(|m| m.file_type().is_file())
                .unwrap_or(false)
        } else {
            true
        }
    }

    fn info(&self) -> Result<ImageInfo> {
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "vdi",
            virtual_size: self.size,
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?.div_ceil(512) * 512,
            cluster_size: Some(BS),
            ..Default::default()
        })
    }

    fn check(&self, repair: Repair) -> Result<CheckReport> {
        check::check(self, repair)
    }
}
