//! vhdx (Hyper-V, MS-VHDX): dynamic and fixed images read and written as QEMU does, and
//! differencing images read (QEMU refuses them).
//!
//! Metadata changes go through the log. A write that allocates blocks writes its data at the
//! end of the file first, then appends one log entry holding the new BAT sectors; the BAT
//! itself is only rewritten in place at a checkpoint (log full, flush, close): write the
//! logged sectors in place, then clear the log GUID in both headers. A kill at any moment
//! leaves either the old BAT or a log whose replay (by virtkit or QEMU) gives the new one.
//!
//! Like a disk with a write-back cache (and qemu-img convert, whose target is cache=unsafe),
//! only `flush` waits for the disk: it syncs data and log before the in-place writes and
//! those before the header switch, so a power loss keeps everything flushed. Without a
//! flush the syscall order alone keeps the image consistent across a kill.
//!
//! A dirty log is replayed on a read-write open, as QEMU does; a read-only open replays it in
//! memory (an overlay over the file) and never writes.

pub mod bat;
pub mod create;
pub mod header;
pub mod log;
pub mod metadata;

use self::bat::{Block, Geometry};
use self::header::{Guid, Header, RegionEntry, Regions, HEADER_SIZE, MIB};
use self::log::{Overlay, Replay};
use self::metadata::Metadata;
use crate::chain::{OpenCtx, Opened};
use crate::driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::ImageInfo;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// BAT entries per 4 KiB sector (the unit the log writes).
const BAT_PER_SECTOR: u64 = log::SECTOR / 8;
/// BAT sectors per log entry: one descriptor sector's worth.
const SECTORS_PER_ENTRY: usize = 126;

/// Whether the file's first bytes are a vhdx image.
pub fn probe(head: &[u8], _path: &Path) -> bool {
    head.len() >= 8 && &head[..8] == header::FILE_SIGNATURE
}

/// Where things are, from the header section and the metadata.
#[derive(Debug, Clone)]
struct Layout {
    g: Geometry,
    /// Guest-visible size: the metadata's, in whole logical sectors.
    size: u64,
    bat_offset: u64,
    regions: Regions,
    md: Metadata,
}

/// A log session of this process: entries appended from the start of the log.
#[derive(Debug, Clone, Copy)]
struct Session {
    guid: Guid,
    pos: u64,
}

struct Meta {
    lay: Layout,
    /// Loaded BAT entries; entries past the end (a BAT past the end of the file) read 0.
    bat: Vec<u64>,
    headers: [Option<Header>; 2],
    cur: usize,
    file_len: u64,
    /// File length as of the last sync: what new log entries may claim as flushed.
    durable_len: u64,
    /// A dirty log read-only: reads see it replayed in memory.
    overlay: Option<Arc<Overlay>>,
    /// The replay behind `overlay`, for `check -r`.
    pending: Option<Replay>,
    replayed_on_open: bool,
    /// The BAT passed `check_bat` (skipped when opened for `check`): writes need it.
    bat_checked: bool,
    /// File write GUID of this open (set at the first write).
    session_guid: Option<Guid>,
    log: Option<Session>,
    next_seq: u64,
    /// BAT sectors logged but not yet rewritten in place.
    dirty: BTreeSet<u64>,
}

impl Meta {
    fn bat_get(&self, i: u64) -> u64 {
        self.bat.get(i as usize).copied().unwrap_or(0)
    }
    fn bat_set(&mut self, i: u64, e: u64) {
        if i as usize >= self.bat.len() {
            self.bat.resize(i as usize + 1, 0);
        }
        self.bat[i as usize] = e;
    }
    fn header(&self) -> &Header {
        self.headers[self.cur]
            .as_ref()
            .expect("current header is valid")
    }
}

pub struct Vhdx {
    path: PathBuf,
    file: File,
    read_only: bool,
    size: AtomicU64,
    g: Geometry,
    /// Parent named by the locator (differencing images).
    parent_name: Option<String>,
    backing: Option<Box<dyn BlockDriver>>,
    m: Mutex<Meta>,
}

/// Both headers can be rewritten (their sequence numbers do not overflow).
fn headers_updatable(h: &Header) -> Result<()> {
    match h.seq.checked_add(2) {
        Some(_) => Ok(()),
        None => corrupt("VHDX header sequence number overflow"),
    }
}

/// File offset `in_block` bytes into the block at `h`, for an access of `len` bytes: BAT
/// entries of images opened for `check` are not validated, so nothing may overflow.
fn host(h: u64, in_block: u64, len: u64) -> Result<u64> {
    match h.checked_add(in_block) {
        Some(o) if o.checked_add(len).is_some_and(|e| e <= i64::MAX as u64) => Ok(o),
        _ => corrupt(format!("VHDX block at file offset {h} is out of range")),
    }
}

/// Reads `buf` at `off` from the file as the log leaves it.
fn read_through(f: &File, ov: Option<&Overlay>, buf: &mut [u8], off: u64) -> Result<()> {
    match ov {
        Some(o) => o.read(f, buf, off),
        None => Ok(fileio::read_full(f, buf, off)?),
    }
}

fn read_headers(f: &File) -> Result<([Option<Header>; 2], usize)> {
    let mut sig = [0u8; 8];
    fileio::read_full(f, &mut sig, 0)?;
    if &sig != header::FILE_SIGNATURE {
        return corrupt("Image is not in vhdx format");
    }
    let mut hs: [Option<Header>; 2] = [None, None];
    for (i, off) in [header::HEADER1_OFFSET, header::HEADER2_OFFSET]
        .into_iter()
        .enumerate()
    {
        let mut b = vec![0u8; HEADER_SIZE];
        fileio::read_full(f, &mut b, off)?;
        hs[i] = Header::parse(&b);
    }
    let cur = header::current_header(hs[0].as_ref(), hs[1].as_ref())?;
    Ok((hs, cur))
}

/// The region table (the second copy if the first is damaged), metadata and BAT location.
fn read_layout(f: &File, ov: Option<&Overlay>, h: &Header) -> Result<Layout> {
    let mut regions = Regions::default();
    // What virtkit itself rewrites (headers) or reads first (region tables) must not be
    // claimed by anything else; QEMU does not check this.
    regions.register(0, header::FIXED_END);
    regions.register(h.log_offset, h.log_length as u64);
    let mut rt = vec![0u8; header::BLOCK_64K as usize];
    read_through(f, ov, &mut rt, header::REGION1_OFFSET)?;
    let table = match header::parse_region_table(&rt) {
        Ok(t) => t,
        Err(e) => {
            read_through(f, ov, &mut rt, header::REGION2_OFFSET)?;
            header::parse_region_table(&rt).map_err(|_| e)?
        }
    };
    let (mut bat_r, mut md_r): (Option<RegionEntry>, Option<RegionEntry>) = (None, None);
    for r in table {
        regions.check(r.file_offset, r.length as u64)?;
        regions.register(r.file_offset, r.length as u64);
        let slot = if r.guid == header::BAT_GUID {
            &mut bat_r
        } else if r.guid == header::METADATA_GUID {
            &mut md_r
        } else if r.required {
            return Err(Error::Unsupported(format!(
                "VHDX region {} is required but unknown",
                r.guid.to_text()
            )));
        } else {
            continue;
        };
        if slot.is_some() {
            return corrupt("VHDX region table lists a region twice");
        }
        *slot = Some(r);
    }
    let (Some(bat_r), Some(md_r)) = (bat_r, md_r) else {
        return corrupt("VHDX region table lacks the BAT or the metadata region");
    };
    let read = |buf: &mut [u8], off: u64| read_through(f, ov, buf, off);
    let md = metadata::parse(&read, md_r.file_offset, md_r.length)?;
    let g = Geometry::new(
        md.virtual_size,
        md.block_size,
        md.logical_sector,
        md.has_parent,
    );
    if g.bat_entries > bat_r.length as u64 / 8 {
        return corrupt(format!(
            "VHDX BAT region of {} bytes is too small for {} entries",
            bat_r.length, g.bat_entries
        ));
    }
    Ok(Layout {
        g,
        size: md.virtual_size / md.logical_sector * md.logical_sector,
        bat_offset: bat_r.file_offset,
        regions,
        md,
    })
}

/// The BAT entries that lie inside the file (the rest read as 0).
fn read_bat(f: &File, ov: Option<&Overlay>, lay: &Layout, file_len: u64) -> Result<Vec<u64>> {
    let in_file = file_len.saturating_sub(lay.bat_offset) / 8;
    let n = lay.g.bat_entries.min(in_file);
    let mut bat = Vec::with_capacity(n as usize);
    let mut buf = vec![0u8; MIB as usize];
    let mut i = 0u64;
    while i < n {
        let k = (n - i).min(MIB / 8);
        let b = &mut buf[..(k * 8) as usize];
        read_through(f, ov, b, lay.bat_offset + i * 8)?;
        bat.extend(
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
        );
        i += k;
    }
    Ok(bat)
}

/// QEMU's vhdx_check_bat_entries: blocks in use must lie inside the file and outside the
/// header section, log and regions. With `report` every problem is counted there (check);
/// without, the first one is the error (open).
fn check_bat(
    lay: &Layout,
    bat: &[u64],
    file_len: u64,
    mut report: Option<&mut CheckReport>,
) -> Result<()> {
    let g = &lay.g;
    let mut fail = |msg: String| -> Result<()> {
        match report.as_deref_mut() {
            Some(r) => {
                r.corruptions += 1;
                r.messages.push(msg);
                Ok(())
            }
            None => Err(Error::Corrupt(msg)),
        }
    };
    for (i, &e) in bat.iter().enumerate() {
        let i = i as u64;
        let bitmap = g.is_bitmap_index(i);
        let used = if bitmap {
            g.has_parent && bat::state(e) == bat::SB_PRESENT
        } else {
            matches!(
                bat::state(e),
                bat::PAYLOAD_FULLY_PRESENT | bat::PAYLOAD_PARTIALLY_PRESENT
            )
        };
        if !used {
            continue;
        }
        let off = bat::offset(e);
        let span = if bitmap { MIB } else { g.block_size };
        // The last block may lie partly past the end of the disk (and of the file).
        let len = if bitmap {
            MIB
        } else {
            let start = g.block_of_index(i) << g.block_bits;
            span.min(g.virtual_size.saturating_sub(start)).max(1)
        };
        if off > i64::MAX as u64 - span {
            fail(format!("VHDX BAT entry {i} offset overflow."))?;
            continue;
        }
        if off >= file_len {
            fail(format!(
                "VHDX BAT entry {i} start offset {off} points after end of file ({file_len}). Image has probably been truncated."
            ))?;
        } else if off + len > file_len {
            fail(format!(
                "VHDX BAT entry {i} end offset {} points after end of file ({file_len}). Image has probably been truncated.",
                off + len - 1
            ))?;
        }
        if let Err(Error::Corrupt(m)) = lay.regions.check(off, span) {
            fail(m)?;
        }
    }
    Ok(())
}

/// The parent's path from the locator: relative_path (next to this image), then
/// volume_path and absolute_win32_path; the first that exists, else the first given.
/// Windows separators become '/'.
fn parent_path(image: &Path, md: &Metadata) -> Result<Option<String>> {
    let Some(loc) = &md.parent else {
        return Ok(None);
    };
    if loc.locator_type != metadata::VHDX_PARENT_TYPE {
        return Err(Error::Unsupported(format!(
            "VHDX parent locator type {} is not supported",
            loc.locator_type.to_text()
        )));
    }
    let mut cands = Vec::new();
    for key in ["relative_path", "volume_path", "absolute_win32_path"] {
        if let Some(v) = loc.get(key) {
            let mut p = v.replace('\\', "/");
            // "\\?\" (and "\\.\") prefixes of Win32 paths.
            for pre in ["//?/", "//./"] {
                if let Some(rest) = p.strip_prefix(pre) {
                    p = rest.to_string();
                }
            }
            while let Some(rest) = p.strip_prefix("./") {
                p = rest.to_string();
            }
            if !p.is_empty() && !p.contains('\0') {
                cands.push(p);
            }
        }
    }
    if cands.is_empty() {
        return corrupt("VHDX parent locator names no parent path");
    }
    let found = cands
        .iter()
        .find(|c| crate::chain::resolve_backing(image, c).is_file())
        .unwrap_or(&cands[0]);
    Ok(Some(found.clone()))
}

/// MS-VHDX: the parent's DataWriteGuid must be one of the linkage GUIDs, else the parent
/// changed since the child was made and the chain is broken.
fn check_linkage(image: &Path, md: &Metadata, parent: &str) -> Result<()> {
    let Some(loc) = &md.parent else {
        return Ok(());
    };
    let Some(link) = loc.get("parent_linkage") else {
        return corrupt("VHDX parent locator lacks parent_linkage");
    };
    let p = crate::chain::resolve_backing(image, parent);
    let Ok(f) = File::open(&p) else {
        // Reported when the chain opens the parent.
        return Ok(());
    };
    let Ok((hs, cur)) = read_headers(&f) else {
        return Ok(());
    };
    let dw = hs[cur].as_ref().expect("current").data_write_guid;
    let ok = [Some(link), loc.get("parent_linkage2")]
        .into_iter()
        .flatten()
        .any(|l| Guid::parse_text(l) == Some(dw));
    if !ok {
        return corrupt(format!(
            "VHDX parent '{parent}' does not match the parent linkage (it was modified after this differencing image was made)"
        ));
    }
    Ok(())
}

pub fn open(path: &Path, o: &OpenCtx) -> Result<Opened> {
    let file = OpenOptions::new().read(true).write(o.writable).open(path)?;
    let file_len = fileio::file_len(&file)?;
    let (mut headers, cur) = read_headers(&file)?;
    let h = headers[cur].clone().expect("current");
    let mut overlay = None;
    let mut pending = None;
    let mut replayed = false;
    if let Some(li) = log::log_info(&h)? {
        let read =
            |buf: &mut [u8], off: u64| -> Result<()> { Ok(fileio::read_full(&file, buf, off)?) };
        if let Some(entries) = log::search(&read, &li, file_len)? {
            let r = log::plan(&file, &entries, &li, file_len)?;
            if o.writable && !o.for_check {
                // The header update that ends the replay must be possible before the
                // replay writes anything.
                headers_updatable(&h)?;
                r.apply(&file)?;
                replayed = true;
            } else {
                overlay = Some(Arc::new(Overlay::new(&r, file_len)));
                pending = Some(r);
            }
        }
    }
    let lay = read_layout(&file, overlay.as_deref(), &h)?;
    let g = lay.g;
    let eff_len = overlay
        .as_ref()
        .map_or(file_len, |ov| ov.file_len.max(file_len));
    let bat = read_bat(&file, overlay.as_deref(), &lay, eff_len)?;
    if !o.for_check {
        check_bat(&lay, &bat, eff_len, None)?;
    }
    let parent_name = parent_path(path, &lay.md)?;
    if let Some(p) = &parent_name {
        check_linkage(path, &lay.md, p)?;
    }
    let size = lay.size;
    let img = Vhdx {
        path: path.to_path_buf(),
        file,
        read_only: !o.writable,
        size: AtomicU64::new(size),
        g,
        parent_name: parent_name.clone(),
        backing: None,
        m: Mutex::new(Meta {
            lay,
            bat,
            headers: [headers[0].take(), headers[1].take()],
            cur,
            file_len,
            durable_len: file_len,
            overlay,
            pending,
            replayed_on_open: false,
            bat_checked: !o.for_check,
            session_guid: None,
            log: None,
            next_seq: 1,
            dirty: BTreeSet::new(),
        }),
    };
    if replayed {
        // As QEMU: the replay is a visible write, then the log is marked empty.
        let mut m = img.lock();
        m.file_len = fileio::file_len(&img.file)?;
        img.first_write(&mut m, Guid::ZERO, true)?;
        m.replayed_on_open = true;
    }
    Ok(Opened {
        image: Box::new(img),
        backing_file: parent_name,
        // The only parent type MS-VHDX defines is a VHDX file.
        backing_format: g.has_parent.then(|| "vhdx".to_string()),
    })
}

impl Vhdx {
    fn lock(&self) -> MutexGuard<'_, Meta> {
        self.m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.virtual_size(), offset, len)
    }

    fn check_writable(&self) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        if self.g.has_parent {
            return Err(Error::Unsupported(
                "Writing to differencing VHDX images is not supported".into(),
            ));
        }
        Ok(())
    }

    /// Writes both headers in turn (the inactive one becomes current each time), as MS-VHDX
    /// asks: new sequence number, this session's file write GUID, `log_guid`, and a new data
    /// write GUID when `new_data` (before the first guest-visible change).
    fn update_headers(
        &self,
        m: &mut Meta,
        new_data: bool,
        log_guid: Guid,
        durable: bool,
    ) -> Result<()> {
        let session = *m.session_guid.get_or_insert_with(Guid::random);
        let base = m.header().clone();
        let dw = if new_data {
            Guid::random()
        } else {
            base.data_write_guid
        };
        for _ in 0..2 {
            let idx = 1 - m.cur;
            let off = [header::HEADER1_OFFSET, header::HEADER2_OFFSET][idx];
            let seq = m
                .header()
                .seq
                .checked_add(1)
                .ok_or_else(|| Error::Corrupt("VHDX header sequence number overflow".into()))?;
            let h = Header {
                seq,
                file_write_guid: session,
                data_write_guid: dw,
                log_guid,
                ..base.clone()
            };
            let mut blk = vec![0u8; HEADER_SIZE];
            fileio::read_full(&self.file, &mut blk, off)?;
            fileio::write_full(&self.file, &h.serialize(&blk), off)?;
            if durable {
                self.file.sync_data()?;
            }
            m.headers[idx] = Some(h);
            m.cur = idx;
        }
        Ok(())
    }

    /// Before the first change of this open: new file and data write GUIDs (and, when
    /// given, the log GUID of a new log session) in both headers.
    fn first_write(&self, m: &mut Meta, log_guid: Guid, durable: bool) -> Result<()> {
        m.session_guid = Some(Guid::random());
        self.update_headers(m, true, log_guid, durable)
    }

    fn begin_write(&self, m: &mut Meta) -> Result<()> {
        if m.overlay.is_some() {
            return Err(Error::ReadOnly(
                "The VHDX log must be replayed before writing (qemu-img check -r all)".into(),
            ));
        }
        if !m.bat_checked {
            let len = m.file_len.max(fileio::file_len(&self.file)?);
            check_bat(&m.lay, &m.bat, len, None)?;
            m.bat_checked = true;
        }
        if m.session_guid.is_none() {
            let guid = Guid::random();
            self.first_write(m, guid, false)?;
            m.log = Some(Session { guid, pos: 0 });
        }
        Ok(())
    }

    /// The 4 KiB BAT sector `k` as it should be: the file's bytes under the loaded entries.
    fn bat_sector(&self, m: &Meta, k: u64) -> Result<Vec<u8>> {
        let mut s = vec![0u8; log::SECTOR as usize];
        let off = m.lay.bat_offset + k * log::SECTOR;
        fileio::read_full(&self.file, &mut s, off)?;
        let first = k * BAT_PER_SECTOR;
        let end = (first + BAT_PER_SECTOR).min(m.lay.g.bat_entries);
        for i in first..end {
            let at = ((i - first) * 8) as usize;
            s[at..at + 8].copy_from_slice(&m.bat_get(i).to_le_bytes());
        }
        Ok(s)
    }

    /// Logs the BAT sectors holding `changed` entries (already set in memory). Called
    /// after the data they point to was written.
    fn commit(&self, m: &mut Meta, changed: &BTreeSet<u64>) -> Result<()> {
        if changed.is_empty() {
            return Ok(());
        }
        let (log_off, log_len) = {
            let h = m.header();
            (h.log_offset, h.log_length as u64)
        };
        if log_len < MIB || !m.lay.bat_offset.is_multiple_of(log::SECTOR) {
            return Err(Error::Unsupported(
                "This VHDX image cannot be updated (no usable log)".into(),
            ));
        }
        let sectors: BTreeSet<u64> = changed.iter().map(|i| i / BAT_PER_SECTOR).collect();
        let list: Vec<u64> = sectors.into_iter().collect();
        for group in list.chunks(SECTORS_PER_ENTRY) {
            let mut data = Vec::with_capacity(group.len());
            for &k in group {
                data.push((m.lay.bat_offset + k * log::SECTOR, self.bat_sector(m, k)?));
            }
            let need = (log::desc_sectors(group.len() as u64) + group.len() as u64) * log::SECTOR;
            let fits = m.log.is_some_and(|s| s.pos + need <= log_len);
            if !fits {
                let guid = Guid::random();
                if m.log.is_some() {
                    self.checkpoint_to(m, guid, false)?;
                } else {
                    self.update_headers(m, false, guid, false)?;
                    m.log = Some(Session { guid, pos: 0 });
                }
            }
            let s = m.log.expect("session");
            let e = log::build_entry(s.guid, m.next_seq, 0, m.durable_len, m.file_len, &data);
            fileio::write_full(&self.file, &e, log_off + s.pos)?;
            m.next_seq += 1;
            m.log = Some(Session {
                guid: s.guid,
                pos: s.pos + e.len() as u64,
            });
            m.dirty.extend(group.iter().copied());
        }
        Ok(())
    }

    /// Writes the logged BAT sectors in place and marks the log empty (`durable`: with the
    /// syncs that make it survive a power loss).
    fn checkpoint(&self, m: &mut Meta, durable: bool) -> Result<()> {
        if m.log.is_none() {
            return Ok(());
        }
        self.checkpoint_to(m, Guid::ZERO, durable)
    }

    /// As `checkpoint`, the headers then naming `next` as the log GUID (a new session
    /// starting at the beginning of the log) or none.
    fn checkpoint_to(&self, m: &mut Meta, next: Guid, durable: bool) -> Result<()> {
        if durable {
            // Data and log entries before the in-place writes they justify.
            self.file.sync_data()?;
            m.durable_len = m.file_len;
        }
        if !m.dirty.is_empty() {
            let dirty: Vec<u64> = m.dirty.iter().copied().collect();
            for k in dirty {
                let s = self.bat_sector(m, k)?;
                fileio::write_full(&self.file, &s, m.lay.bat_offset + k * log::SECTOR)?;
            }
            if durable {
                // The BAT before the headers that drop the log.
                self.file.sync_data()?;
            }
            m.dirty.clear();
        }
        self.update_headers(m, false, next, durable)?;
        m.log = (!next.is_zero()).then_some(Session { guid: next, pos: 0 });
        Ok(())
    }

    /// A new block at the end of the file, 1 MiB aligned, as QEMU allocates: the file is
    /// extended over the whole block so that its unwritten parts read as zeros.
    fn allocate(&self, m: &mut Meta) -> Result<u64> {
        let off = m.file_len.div_ceil(MIB) * MIB;
        let end = off
            .checked_add(self.g.block_size)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| Error::Invalid("VHDX file would grow too large".into()))?;
        self.file.set_len(end)?;
        m.file_len = end;
        Ok(off)
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

    /// Sector bitmap bits for guest range [off, off+len) within one block: one bool per
    /// logical sector touched.
    fn bitmap_bits(&self, m: &Meta, block: u64, off: u64, len: u64) -> Result<Vec<bool>> {
        let g = &self.g;
        let e = m.bat_get(g.bitmap_index(block));
        if bat::state(e) != bat::SB_PRESENT {
            return corrupt(format!(
                "VHDX block {block} is partially present but its sector bitmap is not"
            ));
        }
        let first = g.bitmap_bit(off);
        let last = g.bitmap_bit(off + len - 1);
        let (b0, b1) = (first / 8, last / 8);
        let mut bytes = vec![0u8; (b1 - b0 + 1) as usize];
        read_through(
            &self.file,
            m.overlay.as_deref(),
            &mut bytes,
            bat::offset(e) + b0,
        )?;
        Ok((first..=last)
            .map(|bit| bytes[(bit / 8 - b0) as usize] >> (bit % 8) & 1 == 1)
            .collect())
    }

    fn invalid_state(block: u64, s: u64) -> Error {
        Error::Corrupt(format!(
            "VHDX BAT entry of block {block} has the invalid state {s}"
        ))
    }

    /// Replays a pending log into the file (check -r) and reloads the metadata.
    fn replay_pending(&self, m: &mut Meta) -> Result<()> {
        if m.pending.is_none() {
            return Ok(());
        }
        headers_updatable(m.header())?;
        let Some(r) = m.pending.take() else {
            return Ok(());
        };
        r.apply(&self.file)?;
        m.overlay = None;
        m.file_len = fileio::file_len(&self.file)?;
        self.first_write(m, Guid::ZERO, true)?;
        let h = m.header().clone();
        let lay = read_layout(&self.file, None, &h)?;
        if lay.g != self.g {
            return corrupt("VHDX log replay changed the disk geometry");
        }
        m.bat = read_bat(&self.file, None, &lay, m.file_len)?;
        m.lay = lay;
        m.bat_checked = false;
        Ok(())
    }

    /// Zeroes [off, off+len) inside the present block at `host` (the range's file offset).
    fn zero_in_place(&self, host: u64, len: u64, may_unmap: bool) -> Result<()> {
        if may_unmap {
            fileio::punch_hole(&self.file, host, len)?;
        } else {
            fileio::write_zeroes_slow(&self.file, host, len)?;
        }
        Ok(())
    }
}

impl Drop for Vhdx {
    fn drop(&mut self) {
        if !self.read_only {
            let m = &mut *self.m.lock().unwrap_or_else(|p| p.into_inner());
            // Best effort: a failure leaves a log that the next open replays.
            let _ = self.checkpoint(m, false);
        }
    }
}

impl BlockDriver for Vhdx {
    fn format(&self) -> Format {
        Format::Vhdx
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
    /// None: blocks of 1 MiB and more are far too coarse for convert's zero detection;
    /// QEMU copies into vhdx at its usual small granularity too. (`info` shows the block
    /// size as the cluster size.)
    fn cluster_size(&self) -> Option<u64> {
        None
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
        if self.g.has_parent {
            return false;
        }
        let m = self.lock();
        if bat::state(m.bat_get(0)) == bat::PAYLOAD_FULLY_PRESENT {
            // Fixed: as zero as the file's unwritten space.
            return self.file.metadata().map(|md| md.is_file()).unwrap_or(false);
        }
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let g = self.g;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let block = off >> g.block_bits;
            let in_block = off & (g.block_size - 1);
            let n = (g.block_size - in_block).min((buf.len() - pos) as u64) as usize;
            let dst = &mut buf[pos..pos + n];
            let m = self.lock();
            let e = m.bat_get(g.payload_index(block));
            match bat::decode(e) {
                Block::Present(h) => {
                    let ov = m.overlay.clone();
                    drop(m);
                    read_through(&self.file, ov.as_deref(), dst, host(h, in_block, n as u64)?)?;
                }
                Block::Zero => dst.fill(0),
                Block::Absent => {
                    drop(m);
                    if g.has_parent {
                        self.read_backing(dst, off)?;
                    } else {
                        dst.fill(0);
                    }
                }
                Block::Partial(h) if g.has_parent => {
                    let bits = self.bitmap_bits(&m, block, off, n as u64)?;
                    let ov = m.overlay.clone();
                    drop(m);
                    // Runs of sectors from this file or from the parent.
                    let first_sector = off >> g.sector_bits;
                    let mut p = 0usize;
                    while p < n {
                        let o = off + p as u64;
                        let si = ((o >> g.sector_bits) - first_sector) as usize;
                        let mine = bits[si];
                        let sj = si + bits[si..].iter().take_while(|&&b| b == mine).count();
                        let q =
                            ((((first_sector + sj as u64) << g.sector_bits) - off) as usize).min(n);
                        let part = &mut dst[p..q];
                        if mine {
                            let at = host(h, o & (g.block_size - 1), part.len() as u64)?;
                            read_through(&self.file, ov.as_deref(), part, at)?;
                        } else {
                            self.read_backing(part, o)?;
                        }
                        p = q;
                    }
                }
                Block::Partial(_) => {
                    return Err(Self::invalid_state(block, bat::PAYLOAD_PARTIALLY_PRESENT))
                }
                Block::Invalid(s) => return Err(Self::invalid_state(block, s)),
            }
            pos += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        let g = self.g;
        let mut in_place: Vec<(u64, usize, usize)> = Vec::new();
        {
            let mut m = self.lock();
            self.begin_write(&mut m)?;
            let mut changed = BTreeSet::new();
            let mut walk = |m: &mut Meta| -> Result<()> {
                let mut pos = 0usize;
                while pos < buf.len() {
                    let off = offset + pos as u64;
                    let block = off >> g.block_bits;
                    let in_block = off & (g.block_size - 1);
                    let n = (g.block_size - in_block).min((buf.len() - pos) as u64) as usize;
                    let idx = g.payload_index(block);
                    match bat::decode(m.bat_get(idx)) {
                        Block::Present(h) => {
                            if h < header::HEADER_SECTION_END {
                                return corrupt(format!(
                                    "VHDX BAT entry {idx} points into the header section"
                                ));
                            }
                            in_place.push((host(h, in_block, n as u64)?, pos, n));
                        }
                        Block::Zero | Block::Absent => {
                            // Data first, then the BAT entry (logged below).
                            let h = self.allocate(m)?;
                            fileio::write_full(&self.file, &buf[pos..pos + n], h + in_block)?;
                            m.bat_set(idx, h | bat::PAYLOAD_FULLY_PRESENT);
                            changed.insert(idx);
                        }
                        Block::Partial(_) => {
                            return Err(Self::invalid_state(block, bat::PAYLOAD_PARTIALLY_PRESENT))
                        }
                        Block::Invalid(s) => return Err(Self::invalid_state(block, s)),
                    }
                    pos += n;
                }
                Ok(())
            };
            let r = walk(&mut m);
            // Blocks allocated before a failure are logged all the same.
            self.commit(&mut m, &changed)?;
            r?;
        }
        for (host, pos, n) in in_place {
            fileio::write_full(&self.file, &buf[pos..pos + n], host)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        let g = self.g;
        let size = self.virtual_size();
        let mut m = self.lock();
        let fixed = m.lay.md.leave_allocated;
        self.begin_write(&mut m)?;
        let mut changed = BTreeSet::new();
        let mut walk = |m: &mut Meta| -> Result<()> {
            let end = offset + len;
            let mut off = offset;
            while off < end {
                let block = off >> g.block_bits;
                let in_block = off & (g.block_size - 1);
                let n = (g.block_size - in_block).min(end - off);
                let idx = g.payload_index(block);
                // A range reaching the end of the disk covers the block's tail too.
                let whole = in_block == 0 && (n == g.block_size || off + n == size);
                match bat::decode(m.bat_get(idx)) {
                    Block::Present(h) => {
                        if h < header::HEADER_SECTION_END {
                            return corrupt(format!(
                                "VHDX BAT entry {idx} points into the header section"
                            ));
                        }
                        if whole && may_unmap && !fixed {
                            m.bat_set(idx, bat::PAYLOAD_ZERO);
                            changed.insert(idx);
                            // The block is no longer referenced: give its space back.
                            let _ = fileio::punch_hole(&self.file, h, g.block_size);
                        } else {
                            self.zero_in_place(host(h, in_block, n)?, n, may_unmap)?;
                        }
                    }
                    Block::Zero => {}
                    Block::Absent => {
                        // QEMU reads these as zeros; a whole block is made explicitly zero.
                        if whole {
                            m.bat_set(idx, bat::PAYLOAD_ZERO);
                            changed.insert(idx);
                        }
                    }
                    Block::Partial(_) => {
                        return Err(Self::invalid_state(block, bat::PAYLOAD_PARTIALLY_PRESENT))
                    }
                    Block::Invalid(s) => return Err(Self::invalid_state(block, s)),
                }
                off += n;
            }
            Ok(())
        };
        let r = walk(&mut m);
        self.commit(&mut m, &changed)?;
        r
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len, true)
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            let mut m = self.lock();
            self.checkpoint(&mut m, true)?;
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        let g = self.g;
        if !g.has_parent {
            // QEMU's vhdx driver has no block status: everything is data, at no offset.
            return Ok(Status {
                alloc: Alloc::Data {
                    host: None,
                    compressed: false,
                },
                len,
            });
        }
        let block = offset >> g.block_bits;
        let in_block = offset & (g.block_size - 1);
        let n = (g.block_size - in_block).min(len);
        let m = self.lock();
        let (alloc, n) = match bat::decode(m.bat_get(g.payload_index(block))) {
            Block::Present(h) => (
                Alloc::Data {
                    host: Some(host(h, in_block, n)?),
                    compressed: false,
                },
                n,
            ),
            Block::Zero => (Alloc::Zero { host: None }, n),
            Block::Absent => (Alloc::Unallocated { host: None }, n),
            Block::Partial(h) => {
                let bits = self.bitmap_bits(&m, block, offset, n)?;
                let mine = bits[0];
                let run = bits.iter().take_while(|&&b| b == mine).count() as u64;
                let sector_end = ((offset >> g.sector_bits) + run) << g.sector_bits;
                let k = (sector_end - offset).min(n);
                if mine {
                    (
                        Alloc::Data {
                            host: Some(host(h, in_block, k)?),
                            compressed: false,
                        },
                        k,
                    )
                } else {
                    (Alloc::Unallocated { host: None }, k)
                }
            }
            Block::Invalid(s) => return Err(Self::invalid_state(block, s)),
        };
        Ok(Status { alloc, len: n })
    }

    fn resize(&self, _new_size: u64, _prealloc: Preallocation, _shrink: bool) -> Result<()> {
        Err(Error::Unsupported(
            "Image format driver does not support resize".into(),
        ))
    }

    fn info(&self) -> Result<ImageInfo> {
        let full = self.parent_name.as_ref().map(|p| {
            crate::chain::resolve_backing(&self.path, p)
                .display()
                .to_string()
        });
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "vhdx",
            virtual_size: self.virtual_size(),
            actual_size: fileio::allocated_bytes(&self.file)?,
            file_length: fileio::file_len(&self.file)?.div_ceil(512) * 512,
            cluster_size: Some(self.g.block_size),
            backing_filename: self.parent_name.clone(),
            full_backing_filename: full,
            backing_format: None,
            ..Default::default()
        })
    }

    fn check(&self, repair: Repair) -> Result<CheckReport> {
        let mut r = CheckReport::default();
        let mut m = self.lock();
        if m.pending.is_some() {
            if repair != Repair::None && !self.read_only {
                self.replay_pending(&mut m)?;
                r.corruptions_fixed += 1;
            } else {
                r.corruptions += 1;
                r.messages.push(format!(
                    "VHDX image file '{}' contains a log that needs to be replayed (run: qemu-img check -r all '{}')",
                    self.path.display(),
                    self.path.display()
                ));
            }
        } else if m.replayed_on_open {
            r.corruptions_fixed += 1;
        }
        let eff_len = m
            .overlay
            .as_ref()
            .map_or(m.file_len, |o| o.file_len.max(m.file_len));
        let file_len = if self.read_only {
            eff_len
        } else {
            fileio::file_len(&self.file)?.max(eff_len)
        };
        check_bat(&m.lay, &m.bat, file_len, Some(&mut r))?;
        Ok(r)
    }
}
