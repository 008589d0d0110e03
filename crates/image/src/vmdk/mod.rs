//! VMDK images as QEMU reads and writes them: monolithicSparse, monolithicFlat,
//! twoGbMaxExtentSparse/Flat and streamOptimized (VMDK4 hosted sparse, compressed grains with
//! markers), descriptor files naming FLAT/SPARSE/VMFS/VMFSSPARSE/SESPARSE extents, the old
//! COWD (VMDK3) sparse format and ESXi seSparse (read-only), and parentFileNameHint backing
//! files with QEMU's parent CID check.
//!
//! References: VMware's "Virtual Disk Format 1.1" specification and QEMU's block/vmdk.c
//! (whose behaviour, limits and messages are reproduced here).
//!
//! Crash safety: grains are only ever appended past the end of their file, their data is
//! written before the grain table entries that point at them (primary, then redundant
//! copy), and grain tables are never allocated (they exist from creation, as QEMU and VMware
//! lay them out). A kill at any instant leaves at worst an appended grain nothing points to.

pub mod check;
pub mod cowd;
pub mod create;
pub mod descriptor;
pub mod sesparse;
pub mod sparse;
mod tables;

use self::descriptor::{Line, DESC_SIZE, MAX_DESC_READ};
use self::sparse::{Flavor, Grain, Slot, Sparse};
use crate::chain::{OpenCtx, Opened};
use crate::driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::{ChildInfo, ImageInfo, VmdkExtentInfo, VmdkInfo};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// More extents than a 62 TB disk split in 2 GiB files needs.
pub const MAX_EXTENTS: usize = 32768;
/// A sparse extent whose header is really a descriptor may nest this deep.
const MAX_NESTING: u32 = 2;
/// Grain tables kept in memory (bytes; 2 KiB each for VMDK4, 32 KiB for seSparse).
const L2_CACHE_BYTES: u64 = 16 << 20;
/// Largest descriptor file QEMU rewrites (for the CID).
const MAX_DESC_FILE: u64 = 16 << 20;
/// Clusters one lookup walks at most when merging neighbours (bounds each call's work).
const MAX_MERGE: u64 = 8192;

static ABSOLUTE_EXTENTS: AtomicBool = AtomicBool::new(true);

/// Whether absolute extent paths in descriptors are followed (they are, as in QEMU). A
/// process that opens untrusted descriptors which must not reach other host files (the fuzz
/// harness) turns this off.
pub fn allow_absolute_extents(on: bool) {
    ABSOLUTE_EXTENTS.store(on, Ordering::Relaxed);
}

/// QEMU's vmdk_probe: the magic of a sparse file, or a descriptor whose first line that is
/// not a comment or blank (spaces only) is `version=1`, `2` or `3`.
pub fn probe(head: &[u8], _path: &Path) -> bool {
    if head.len() < 4 {
        return false;
    }
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic == sparse::MAGIC || magic == cowd::MAGIC {
        return true;
    }
    let mut p = 0;
    let end = head.len();
    while p < end {
        if head[p] == b'#' {
            while p < end && head[p] != b'\n' {
                p += 1;
            }
            p += 1;
            continue;
        }
        if head[p] == b' ' {
            while p < end && head[p] == b' ' {
                p += 1;
            }
            if p < end && head[p] == b'\r' {
                p += 1;
            }
            if p == end || head[p] != b'\n' {
                return false;
            }
            p += 1;
            continue;
        }
        let rest = &head[p..];
        return [b"version=1", b"version=2", b"version=3"].iter().any(|v| {
            rest.starts_with(*v) && (rest[9..].starts_with(b"\n") || rest[9..].starts_with(b"\r\n"))
        });
    }
    false
}

pub fn open(path: &Path, o: &OpenCtx) -> Result<Opened> {
    let (v, hint) = Vmdk::open(path, o.writable)?;
    let fmt = hint.as_ref().map(|_| "vmdk".to_string());
    Ok(Opened {
        image: Box::new(v),
        backing_file: hint,
        backing_format: fmt,
    })
}

/// What one extent maps its range to.
#[derive(Debug)]
pub(crate) enum Kind {
    /// Raw data starting at this byte offset of the file.
    Flat {
        offset: u64,
    },
    Sparse(Sparse),
}

#[derive(Debug)]
pub(crate) struct Extent {
    pub fidx: usize,
    pub path: PathBuf,
    /// Lives in its own file (a descriptor's extent), not in the image file itself.
    pub own_file: bool,
    /// Guest byte range.
    pub start: u64,
    pub len: u64,
    /// The type word of its descriptor line (FLAT, SPARSE...), none for monolithic files.
    pub type_name: Option<&'static str>,
    pub kind: Kind,
}

impl Extent {
    fn sparse(&self) -> Option<&Sparse> {
        match &self.kind {
            Kind::Sparse(s) => Some(s),
            Kind::Flat { .. } => None,
        }
    }
    fn is_compressed(&self) -> bool {
        self.sparse().is_some_and(|s| s.compressed)
    }
}

/// Per-file allocation state.
#[derive(Debug, Clone, Copy)]
struct FileState {
    /// Length in bytes (including a pending extension, see `sized`).
    len: u64,
    /// Length the file actually has; stream-optimized files are extended to `len` (the
    /// zero-filled rest of the last grain's cluster, as QEMU leaves it) once, at flush or
    /// close, not with one truncate per grain.
    sized: u64,
    /// End (sectors) of what grains occupy; new grains go at or after it.
    end: u64,
}

/// A small cache of grain tables, least recently used out.
struct L2Cache {
    map: HashMap<(usize, u64), (Vec<u64>, u64)>,
    tick: u64,
    bytes: u64,
}

impl L2Cache {
    fn get(&mut self, key: (usize, u64)) -> Option<&mut Vec<u64>> {
        self.tick += 1;
        let t = self.tick;
        self.map.get_mut(&key).map(|(v, used)| {
            *used = t;
            v
        })
    }
    fn insert(&mut self, key: (usize, u64), v: Vec<u64>) {
        let sz = v.len() as u64 * 8;
        if self.bytes + sz > L2_CACHE_BYTES && !self.map.is_empty() {
            // Drop the least recently used quarter at once (eviction stays cheap).
            let mut by_age: Vec<((usize, u64), u64)> =
                self.map.iter().map(|(k, (_, u))| (*k, *u)).collect();
            by_age.sort_unstable_by_key(|(_, u)| *u);
            let drop = (by_age.len() / 4).max(1);
            for (k, _) in &by_age[..drop] {
                if let Some((o, _)) = self.map.remove(k) {
                    self.bytes -= o.len() as u64 * 8;
                }
            }
        }
        self.tick += 1;
        self.bytes += sz;
        self.map.insert(key, (v, self.tick));
    }
}

/// One decompressed grain of a stream-optimized extent.
struct GrainCache {
    ext: usize,
    host: u64,
    data: Vec<u8>,
    valid: usize,
}

struct State {
    files: Vec<FileState>,
    /// Next grain position per extent, in sectors (QEMU's next_cluster_sector).
    next: Vec<u64>,
    l2: L2Cache,
    cid_updated: bool,
    cid_checked: bool,
    grain: Option<GrainCache>,
}

pub struct Vmdk {
    path: PathBuf,
    files: Vec<Arc<File>>,
    extents: Vec<Extent>,
    size: u64,
    desc_offset: u64,
    cid: u32,
    parent_cid: u32,
    create_type: String,
    parent_hint: Option<String>,
    backing: Option<Box<dyn BlockDriver>>,
    read_only: bool,
    st: Mutex<State>,
}

/// Where a guest range of a sparse extent lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Map {
    Data(u64),
    Compressed(u64),
    Zero,
    Unallocated,
}

fn einval(what: &str) -> Error {
    Error::Invalid(format!("Invalid argument: {what}"))
}

/// The text of an I/O error without Rust's "(os error N)" suffix.
fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

/// Reads a descriptor as QEMU's vmdk_read_desc: at most 1 MiB - 1 bytes from `off` (QEMU
/// sees the file's length in whole sectors).
fn read_desc(f: &File, file_len: u64, off: u64) -> Result<Vec<u8>> {
    let file_len = file_len.div_ceil(512) * 512;
    if file_len < 4 {
        return corrupt("File is too small, not a valid image");
    }
    let n = file_len.min(MAX_DESC_READ) as usize;
    let mut b = vec![0u8; n];
    fileio::read_full(f, &mut b, off)?;
    Ok(b)
}

/// Raises the soft limit on open files to the hard one (as QEMU does at startup), for
/// images split into more files than the default limit allows.
fn raise_nofile_limit() -> bool {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 || r.rlim_cur >= r.rlim_max {
            return false;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0
    }
}

struct Builder<'a> {
    top: &'a Path,
    writable: bool,
    files: Vec<Arc<File>>,
    by_path: HashMap<PathBuf, usize>,
    extents: Vec<Extent>,
    create_type: Option<String>,
    budget: u64,
    end: u64,
}

impl Builder<'_> {
    fn open_file(&mut self, path: &Path) -> Result<usize> {
        if let Some(&i) = self.by_path.get(path) {
            return Ok(i);
        }
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(self.writable)
                .open(path)
        };
        let f = match open() {
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) && raise_nofile_limit() => open(),
            r => r,
        }
        .map_err(|e| {
            Error::Invalid(format!(
                "Could not open '{}': {}",
                path.display(),
                io_text(&e)
            ))
        })?;
        if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(Error::Invalid(format!(
                "'file' driver requires '{}' to be a regular file",
                path.display()
            )));
        }
        self.files.push(Arc::new(f));
        self.by_path
            .insert(path.to_path_buf(), self.files.len() - 1);
        Ok(self.files.len() - 1)
    }

    fn push(&mut self, mut e: Extent, sectors: u64) -> Result<()> {
        if self.extents.len() >= MAX_EXTENTS {
            return corrupt(format!(
                "Too many extents in the VMDK descriptor (at most {MAX_EXTENTS})"
            ));
        }
        let end = sectors
            .checked_mul(512)
            .and_then(|b| b.checked_add(self.end))
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or_else(|| Error::Corrupt("The VMDK extents add up to an absurd size".into()))?;
        e.start = self.end;
        e.len = end - self.end;
        self.end = end;
        self.extents.push(e);
        Ok(())
    }

    /// A relative extent name is resolved next to the descriptor and may not leave its
    /// directory (no "..", no symlink pointing out); absolute names are used as given.
    fn resolve(&self, name: &[u8]) -> Result<PathBuf> {
        let p = Path::new(OsStr::from_bytes(name));
        let shown = String::from_utf8_lossy(name);
        if p.is_absolute() {
            if !ABSOLUTE_EXTENTS.load(Ordering::Relaxed) {
                return Err(Error::Invalid(format!(
                    "Absolute extent path '{shown}' is not allowed"
                )));
            }
            return Ok(p.to_path_buf());
        }
        let outside = || {
            Error::Invalid(format!(
                "Extent file '{shown}' lies outside the directory of the descriptor file"
            ))
        };
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(outside());
        }
        let dir = self.top.parent().unwrap_or(Path::new(""));
        let joined = if dir.as_os_str().is_empty() {
            p.to_path_buf()
        } else {
            dir.join(p)
        };
        if let Ok(real) = std::fs::canonicalize(&joined) {
            let base = std::fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })?;
            if !real.starts_with(&base) {
                return Err(outside());
            }
        }
        Ok(joined)
    }

    /// A sparse file (VMDK4 or COWD) as an extent.
    fn open_sparse(
        &mut self,
        fidx: usize,
        path: &Path,
        own: bool,
        head: &[u8],
        depth: u32,
        type_name: Option<&'static str>,
    ) -> Result<()> {
        let f = self.files[fidx].clone();
        let len = fileio::file_len(&f)?;
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let ext = |kind, len: u64| Extent {
            fidx,
            path: path.to_path_buf(),
            own_file: own,
            start: 0,
            len,
            type_name,
            kind,
        };
        match magic {
            cowd::MAGIC => {
                let (sectors, sp) = cowd::open(&f, len, head, &mut self.budget)?;
                self.push(ext(Kind::Sparse(sp), 0), sectors)
            }
            sparse::MAGIC => match sparse::open(&f, len, head, self.writable, &mut self.budget)? {
                sparse::Opened4::Descriptor(sector) => {
                    if depth >= MAX_NESTING {
                        return corrupt("VMDK descriptors nest too deeply");
                    }
                    let off = sector
                        .checked_mul(512)
                        .ok_or_else(|| Error::Corrupt("Invalid descriptor offset".into()))?;
                    let d = read_desc(&f, len, off)?;
                    self.open_desc_file(&d, depth + 1)
                }
                sparse::Opened4::Extent { sectors, sparse } => {
                    if self.create_type.is_none() {
                        self.create_type = Some("monolithicSparse".into());
                    }
                    if sparse.compressed {
                        self.create_type = Some("streamOptimized".into());
                    }
                    self.push(ext(Kind::Sparse(sparse), 0), sectors)
                }
            },
            _ => corrupt("Image not in VMDK format"),
        }
    }

    /// QEMU's vmdk_open_desc_file and vmdk_parse_extents.
    fn open_desc_file(&mut self, desc: &[u8], depth: u32) -> Result<()> {
        let ct = descriptor::description(desc, "createType", 128)
            .ok_or_else(|| Error::Corrupt("invalid VMDK image descriptor".into()))?;
        let ct = String::from_utf8_lossy(&ct).into_owned();
        const TYPES: [&str; 6] = [
            "monolithicFlat",
            "vmfs",
            "vmfsSparse",
            "seSparse",
            "twoGbMaxExtentSparse",
            "twoGbMaxExtentFlat",
        ];
        if !TYPES.contains(&ct.as_str()) {
            return Err(Error::Unsupported(format!("Unsupported image type '{ct}'")));
        }
        self.create_type = Some(ct);
        for line in descriptor::lines(desc) {
            let x = match descriptor::parse_extent_line(line) {
                Line::Skip => continue,
                Line::Invalid => {
                    let l = String::from_utf8_lossy(line);
                    let l: String = l
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect();
                    return corrupt(format!("Invalid extent line: {l}"));
                }
                Line::Extent(x) => x,
            };
            if self.extents.len() >= MAX_EXTENTS {
                return corrupt(format!(
                    "Too many extents in the VMDK descriptor (at most {MAX_EXTENTS})"
                ));
            }
            let path = self.resolve(x.file)?;
            let fidx = self.open_file(&path)?;
            let before = self.extents.len();
            match x.kind {
                "FLAT" | "VMFS" => {
                    let offset = x
                        .offset
                        .checked_mul(512)
                        .ok_or_else(|| Error::Corrupt("Invalid flat extent offset".into()))?;
                    let e = Extent {
                        fidx,
                        path: path.clone(),
                        own_file: true,
                        start: 0,
                        len: 0,
                        type_name: Some(x.kind),
                        kind: Kind::Flat { offset },
                    };
                    self.push(e, x.sectors)?;
                }
                "SPARSE" | "VMFSSPARSE" => {
                    let f = self.files[fidx].clone();
                    let head = read_desc(&f, fileio::file_len(&f)?, 0)?;
                    self.open_sparse(fidx, &path, true, &head, depth, Some(x.kind))?;
                }
                _ => {
                    let f = self.files[fidx].clone();
                    let len = fileio::file_len(&f)?;
                    let (sectors, sp) = sesparse::open(&f, len, self.writable, &mut self.budget)?;
                    let e = Extent {
                        fidx,
                        path: path.clone(),
                        own_file: true,
                        start: 0,
                        len: 0,
                        type_name: Some(x.kind),
                        kind: Kind::Sparse(sp),
                    };
                    self.push(e, sectors)?;
                }
            }
            if self.extents.len() > before {
                if let Some(last) = self.extents.last_mut() {
                    last.type_name = Some(x.kind);
                }
            }
        }
        Ok(())
    }
}

impl Vmdk {
    /// Opens the image (all its extents); returns it and the parent file name hint.
    pub fn open(path: &Path, writable: bool) -> Result<(Vmdk, Option<String>)> {
        let top = OpenOptions::new().read(true).write(writable).open(path)?;
        let len = fileio::file_len(&top)?;
        let head = read_desc(&top, len, 0)?;
        let mut b = Builder {
            top: path,
            writable,
            files: vec![Arc::new(top)],
            by_path: HashMap::new(),
            extents: Vec::new(),
            create_type: None,
            budget: tables::L1_BUDGET,
            end: 0,
        };
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let desc_offset = if magic == sparse::MAGIC || magic == cowd::MAGIC {
            b.open_sparse(0, path, false, &head, 0, None)?;
            0x200
        } else {
            b.open_desc_file(&head, 0)?;
            0
        };
        drop(head);
        let mut d = vec![0u8; DESC_SIZE];
        fileio::read_full(&b.files[0], &mut d, desc_offset)?;
        let bad = || Error::Io(std::io::Error::from_raw_os_error(libc::EINVAL));
        let hint = descriptor::parent_hint(&d).map_err(|_| bad())?;
        let cid = descriptor::read_cid(&d, false).ok_or_else(bad)?;
        let parent_cid = descriptor::read_cid(&d, true).ok_or_else(bad)?;
        let hint = hint
            .filter(|h| !h.is_empty())
            .map(|h| String::from_utf8_lossy(&h).into_owned());
        let mut files = Vec::with_capacity(b.files.len());
        for f in &b.files {
            let l = fileio::file_len(f)?;
            files.push(FileState {
                len: l,
                sized: l,
                end: l.div_ceil(512),
            });
        }
        let next = b
            .extents
            .iter()
            .map(|e| match &e.kind {
                Kind::Sparse(s) => {
                    files[e.fidx].end.div_ceil(s.cluster_sectors) * s.cluster_sectors
                }
                Kind::Flat { .. } => 0,
            })
            .collect();
        let v = Vmdk {
            path: path.to_path_buf(),
            files: b.files,
            size: b.end,
            extents: b.extents,
            desc_offset,
            cid,
            parent_cid,
            create_type: b.create_type.unwrap_or_default(),
            parent_hint: hint.clone(),
            backing: None,
            read_only: !writable,
            st: Mutex::new(State {
                files,
                next,
                l2: L2Cache {
                    map: HashMap::new(),
                    tick: 0,
                    bytes: 0,
                },
                cid_updated: false,
                cid_checked: false,
                grain: None,
            }),
        };
        Ok((v, hint))
    }

    pub fn cid(&self) -> u32 {
        self.cid
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        crate::driver::check_range(self.size, offset, len)
    }

    /// The extent holding guest byte `off` (< size).
    fn extent_at(&self, off: u64) -> Result<usize> {
        let i = self.extents.partition_point(|e| e.start + e.len <= off);
        if i >= self.extents.len() {
            return Err(Error::Io(std::io::Error::from_raw_os_error(libc::EIO)));
        }
        Ok(i)
    }

    /// The grain at extent-relative `rel`, with the table slot naming it.
    fn lookup(&self, st: &mut State, ei: usize, sp: &Sparse, rel: u64) -> Result<(Grain, Slot)> {
        let slot = sp.slot(rel)?;
        if slot.table == 0 {
            return Ok((Grain::Unallocated, slot));
        }
        let key = (ei, slot.table);
        if st.l2.get(key).is_none() {
            let e = &self.extents[ei];
            let t = sp.read_table(&self.files[e.fidx], slot.table, st.files[e.fidx].len)?;
            st.l2.insert(key, t);
        }
        let raw = st.l2.get(key).expect("cached")[slot.l2];
        Ok((sp.decode(raw)?, slot))
    }

    /// Mapping of a sparse extent at `rel` for at most `max` bytes (within the extent);
    /// neighbouring grains with the same status (and contiguous data) are merged.
    fn map(
        &self,
        st: &mut State,
        ei: usize,
        sp: &Sparse,
        rel: u64,
        max: u64,
    ) -> Result<(Map, u64)> {
        let cb = sp.cluster_bytes();
        let in_c = rel % cb;
        let (g, slot) = self.lookup(st, ei, sp, rel)?;
        let first = match g {
            Grain::Unallocated => Map::Unallocated,
            Grain::Zeroed => Map::Zero,
            Grain::At(h) if sp.compressed => Map::Compressed(h),
            Grain::At(h) => Map::Data(h + in_c),
        };
        let n = (cb - in_c).min(max);
        if let Map::Compressed(_) = first {
            return Ok((first, n));
        }
        let span = sp.l1_entry_sectors * 512;
        let end = rel + max;
        let mut pos = rel + n;
        // Grain table of the cluster just before `pos`.
        let mut table = slot.table;
        let mut steps = 0;
        while pos < end && steps < MAX_MERGE {
            steps += 1;
            if table == 0 && first == Map::Unallocated {
                // Without a grain table its whole span is unallocated: skip to its end.
                let span_end = ((pos - 1) / span + 1) * span;
                if span_end > pos {
                    pos = span_end.min(end);
                    continue;
                }
            }
            let (g2, s2) = self.lookup(st, ei, sp, pos)?;
            let same = match (first, g2) {
                (Map::Unallocated, Grain::Unallocated) | (Map::Zero, Grain::Zeroed) => true,
                (Map::Data(h), Grain::At(h2)) => h2 == h + (pos - rel),
                _ => false,
            };
            if !same {
                break;
            }
            table = s2.table;
            pos = (pos + cb).min(end);
        }
        let n = pos - rel;
        Ok((first, n))
    }

    /// VMware's parent CID check (QEMU's vmdk_is_cid_valid), done once per open before the
    /// first access to the parent.
    fn check_parent(&self, st: &mut State) -> Result<()> {
        let Some(b) = &self.backing else {
            return Ok(());
        };
        if st.cid_checked {
            return Ok(());
        }
        if b.format() != Format::Vmdk {
            return Err(einval(
                "the backing file of a vmdk image must be a vmdk image",
            ));
        }
        let pcid = read_cid_of(b.filename())?;
        if pcid != self.parent_cid {
            return Err(einval(&format!(
                "parentCID {:x} does not match the CID {:x} of the backing file",
                self.parent_cid, pcid
            )));
        }
        st.cid_checked = true;
        Ok(())
    }

    fn read_backing(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        self.check_parent(&mut self.lock())?;
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
        Ok(())
    }

    /// Copies from the stream-optimized grain at `host` (cached while sequential readers
    /// consume it in pieces); decompression runs without the lock.
    fn read_grain(&self, ei: usize, host: u64, in_c: usize, dst: &mut [u8]) -> Result<()> {
        {
            let st = self.lock();
            if let Some(g) = st.grain.as_ref().filter(|g| g.ext == ei && g.host == host) {
                return copy_grain(&g.data, g.valid, in_c, dst);
            }
        }
        let e = &self.extents[ei];
        let sp = e.sparse().expect("compressed extents are sparse");
        let cb = sp.cluster_bytes() as usize;
        let mut data = vec![0u8; cb];
        let valid = sparse::read_compressed(
            &self.files[e.fidx],
            host,
            cb as u64,
            sp.has_marker,
            &mut data,
        )?;
        let r = copy_grain(&data, valid, in_c, dst);
        self.lock().grain = Some(GrainCache {
            ext: ei,
            host,
            data,
            valid,
        });
        r
    }

    /// Allocates `k` grains for a plain sparse extent (QEMU: next_cluster_sector).
    fn alloc(&self, st: &mut State, ei: usize, sp: &Sparse, k: u64) -> Result<u64> {
        let e = &self.extents[ei];
        let cs = sp.cluster_sectors;
        let fe = st.files[e.fidx].end;
        let pos = st.next[ei].max(fe.div_ceil(cs) * cs);
        let end = pos + k * cs;
        if end > sparse::MAX_EXTENT_SECTORS {
            return Err(einval(
                "the extent file is full (grains past 2 TiB cannot be addressed)",
            ));
        }
        st.next[ei] = end;
        let fs = &mut st.files[e.fidx];
        fs.end = fs.end.max(end);
        fs.len = fs.len.max(end * 512);
        Ok(pos)
    }

    /// Points `k` consecutive grain table entries from `slot` at grains from sector `pos`,
    /// in the grain table and then in its redundant copy.
    fn set_entries(
        &self,
        st: &mut State,
        ei: usize,
        sp: &Sparse,
        slot: Slot,
        vals: &[u64],
    ) -> Result<()> {
        let e = &self.extents[ei];
        let f = &self.files[e.fidx];
        let mut raw = Vec::with_capacity(vals.len() * 4);
        for &v in vals {
            raw.extend_from_slice(&(v as u32).to_le_bytes());
        }
        let at = slot.table * 512 + slot.l2 as u64 * 4;
        fileio::write_full(f, &raw, at)?;
        if let Some(t) = st.l2.get((ei, slot.table)) {
            t[slot.l2..slot.l2 + vals.len()].copy_from_slice(vals);
        }
        if let Some(b) = sp.l1_backup.as_ref().and_then(|b| b.get(slot.l1)) {
            if *b != 0 {
                fileio::write_full(f, &raw, b * 512 + slot.l2 as u64 * 4)?;
                if let Some(t) = st.l2.get((ei, *b)) {
                    t[slot.l2..slot.l2 + vals.len()].copy_from_slice(vals);
                }
            }
        }
        Ok(())
    }

    /// Writes into one sparse (not compressed) extent from `rel`; returns bytes consumed.
    fn write_sparse(
        &self,
        st: &mut State,
        ei: usize,
        sp: &Sparse,
        off: u64,
        rel: u64,
        data: &[u8],
    ) -> Result<usize> {
        let e = &self.extents[ei];
        let f = &self.files[e.fidx];
        let cb = sp.cluster_bytes();
        let in_c = rel % cb;
        let (g, slot) = self.lookup(st, ei, sp, rel)?;
        let piece = (cb - in_c).min(data.len() as u64) as usize;
        if let Grain::At(h) = g {
            if h < sp.data_start || h >= st.files[e.fidx].len {
                return corrupt(format!(
                    "Grain at offset {h:#x} overlaps metadata or lies past the end of the file"
                ));
            }
            fileio::write_full(f, &data[..piece], h + in_c)?;
            return Ok(piece);
        }
        if slot.table == 0 {
            return Err(Error::Unsupported(
                "Cannot allocate a grain whose grain table is not allocated".into(),
            ));
        }
        self.check_parent(st)?;
        // Whole unallocated grains in a row (same table): one data write, one table write.
        let mut k = 0u64;
        if in_c == 0 {
            let whole = data.len() as u64 / cb;
            let room = sp.l2_size - slot.l2 as u64;
            let ext_room = (e.len - rel) / cb;
            let limit = whole.min(room).min(ext_room);
            while k < limit {
                let (g2, _) = if k == 0 {
                    (g, slot)
                } else {
                    self.lookup(st, ei, sp, rel + k * cb)?
                };
                if matches!(g2, Grain::At(_)) {
                    break;
                }
                k += 1;
            }
        }
        if k > 0 {
            let pos = self.alloc(st, ei, sp, k)?;
            let n = (k * cb) as usize;
            fileio::write_full(f, &data[..n], pos * 512)?;
            let vals: Vec<u64> = (0..k).map(|j| pos + j * sp.cluster_sectors).collect();
            self.set_entries(st, ei, sp, slot, &vals)?;
            return Ok(n);
        }
        // A partial grain: the rest comes from the parent (or is zero), as QEMU's
        // get_whole_cluster does; the whole grain is written before the entry.
        let mut buf = vec![0u8; cb as usize];
        let cstart = off - in_c;
        if self.backing.is_some() && g != Grain::Zeroed {
            let valid = (e.start + e.len - cstart).min(cb) as usize;
            self.read_backing_locked(&mut buf[..valid], cstart)?;
        }
        buf[in_c as usize..in_c as usize + piece].copy_from_slice(&data[..piece]);
        let pos = self.alloc(st, ei, sp, 1)?;
        fileio::write_full(f, &buf, pos * 512)?;
        self.set_entries(st, ei, sp, slot, &[pos])?;
        Ok(piece)
    }

    /// Parent read while the state lock is held (the CID was checked by the caller).
    fn read_backing_locked(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
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
        Ok(())
    }

    /// Appends one compressed grain to a stream-optimized extent, as QEMU lays it out: a
    /// marker (guest sector, size) and the zlib stream at the next free sector; the grain's
    /// whole cluster is reserved (zero-filled) behind it; then the table entries.
    fn append_grain(
        &self,
        st: &mut State,
        ei: usize,
        sp: &Sparse,
        off: u64,
        rel: u64,
        z: &[u8],
    ) -> Result<()> {
        let e = &self.extents[ei];
        let cb = sp.cluster_bytes();
        if !rel.is_multiple_of(cb) || !sp.has_marker {
            return Err(einval("streamOptimized images take whole grains only"));
        }
        if z.is_empty() || z.len() as u64 + sparse::MARKER_LEN as u64 > 2 * cb {
            return Err(einval("compressed grain too large"));
        }
        let (g, slot) = self.lookup(st, ei, sp, rel)?;
        if let Grain::At(_) = g {
            return Err(Error::Io(std::io::Error::other(
                "Could not write to allocated cluster for streamOptimized",
            )));
        }
        if slot.table == 0 {
            return Err(Error::Unsupported(
                "Cannot allocate a grain whose grain table is not allocated".into(),
            ));
        }
        self.check_parent(st)?;
        // Right after the previous grain's data (QEMU: next_cluster_sector = write end).
        let pos = st.next[ei].max(st.files[e.fidx].end);
        let mut buf = Vec::with_capacity(sparse::MARKER_LEN + z.len());
        buf.extend_from_slice(&(off >> 9).to_le_bytes());
        buf.extend_from_slice(&(z.len() as u32).to_le_bytes());
        buf.extend_from_slice(z);
        let write_end = (pos * 512 + buf.len() as u64).div_ceil(512);
        if write_end > sparse::MAX_EXTENT_SECTORS {
            return Err(einval(
                "the extent file is full (grains past 2 TiB cannot be addressed)",
            ));
        }
        let f = &self.files[e.fidx];
        fileio::write_full(f, &buf, pos * 512)?;
        let fs = &mut st.files[e.fidx];
        fs.sized = fs.sized.max(pos * 512 + buf.len() as u64);
        fs.len = fs.len.max(pos * 512 + cb).max(write_end * 512);
        st.next[ei] = write_end;
        st.files[e.fidx].end = write_end;
        self.set_entries(st, ei, sp, slot, &[pos])
    }

    /// QEMU updates the CID in the descriptor at the first write after each open: an
    /// embedded descriptor in its 20 sectors, a descriptor file as a whole (in sectors).
    fn touch_cid(&self, st: &mut State) -> Result<()> {
        if st.cid_updated {
            return Ok(());
        }
        st.cid_updated = true;
        let f = &self.files[0];
        let size = if self.desc_offset == 0 {
            let l = fileio::file_len(f)?.div_ceil(512) * 512;
            if l > MAX_DESC_FILE {
                return Err(Error::Invalid("VMDK description file too big".into()));
            }
            l as usize
        } else {
            DESC_SIZE
        };
        let mut buf = vec![0u8; size];
        fileio::read_full(f, &mut buf, self.desc_offset)?;
        if descriptor::write_cid(&mut buf, random_u32()).is_none() {
            return Err(einval("descriptor has no parentCID"));
        }
        fileio::write_full(f, &buf, self.desc_offset)?;
        f.sync_data()?;
        Ok(())
    }

    /// Gives stream-optimized files the length QEMU's layout has (see FileState::sized).
    fn settle_lengths(&self) -> Result<()> {
        let mut st = self.lock();
        for (i, fs) in st.files.iter_mut().enumerate() {
            if fs.len > fs.sized {
                self.files[i].set_len(fs.len)?;
                fs.sized = fs.len;
            }
        }
        Ok(())
    }

    /// Sets whole grains of a zeroed_grain extent to "zeroed" (QEMU: VMDK_GTE_ZEROED).
    fn zero_grain(&self, st: &mut State, ei: usize, sp: &Sparse, rel: u64) -> Result<()> {
        let (g, slot) = self.lookup(st, ei, sp, rel)?;
        if g == Grain::Zeroed {
            return Ok(());
        }
        if slot.table == 0 {
            return Err(Error::Unsupported(
                "Cannot zero a grain whose grain table is not allocated".into(),
            ));
        }
        self.set_entries(st, ei, sp, slot, &[sparse::GTE_ZEROED])
    }

    /// Sizes and names of the files holding data, for `info`.
    fn allocated(&self) -> Result<u64> {
        let mut total = fileio::allocated_bytes(&self.files[0])?;
        for e in self.extents.iter().filter(|e| e.own_file) {
            total += fileio::allocated_bytes(&self.files[e.fidx])?;
        }
        Ok(total)
    }

    /// QEMU's vmdk_co_get_info: a cluster size when every extent is of the same kind and
    /// the first is sparse.
    fn info_cluster_size(&self) -> Option<u64> {
        let first = self.extents.first()?;
        let key = |e: &Extent| match &e.kind {
            Kind::Flat { .. } => (true, false, 0),
            Kind::Sparse(s) => (false, s.compressed, s.cluster_sectors),
        };
        let k0 = key(first);
        if self.extents.iter().any(|e| key(e) != k0) {
            return None;
        }
        first.sparse().map(|s| s.cluster_bytes())
    }
}

impl Drop for Vmdk {
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.settle_lengths();
        }
    }
}

fn copy_grain(data: &[u8], valid: usize, in_c: usize, dst: &mut [u8]) -> Result<()> {
    if in_c + dst.len() > valid {
        return corrupt("Compressed grain holds less data than the grain size");
    }
    dst.copy_from_slice(&data[in_c..in_c + dst.len()]);
    Ok(())
}

/// The CID in the descriptor of the vmdk file at `path` (QEMU's vmdk_read_cid on a parent).
pub fn read_cid_of(path: &Path) -> Result<u32> {
    let f = File::open(path)?;
    let mut m = [0u8; 4];
    fileio::read_full(&f, &mut m, 0)?;
    let magic = u32::from_be_bytes(m);
    let off = if magic == sparse::MAGIC || magic == cowd::MAGIC {
        0x200
    } else {
        0
    };
    let mut d = vec![0u8; DESC_SIZE];
    fileio::read_full(&f, &mut d, off)?;
    descriptor::read_cid(&d, false).ok_or_else(|| einval("the parent descriptor has no CID"))
}

/// A random CID (QEMU: g_random_int).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    if n == 4 {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ (t >> 32) ^ std::process::id() as u64) as u32
}

impl BlockDriver for Vmdk {
    fn format(&self) -> Format {
        Format::Vmdk
    }
    fn filename(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &File {
        &self.files[0]
    }
    fn virtual_size(&self) -> u64 {
        self.size
    }
    fn cluster_size(&self) -> Option<u64> {
        self.info_cluster_size()
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
        // Fresh sparse grains read zero; flat extents only on regular files.
        self.extents.iter().all(|e| match e.kind {
            Kind::Sparse(_) => true,
            Kind::Flat { .. } => self.files[e.fidx]
                .metadata()
                .map(|m| m.file_type().is_file())
                .unwrap_or(false),
        })
    }
    fn needs_compressed_writes(&self) -> bool {
        self.extents.first().is_some_and(|e| e.is_compressed())
    }
    fn data_file_name(&self, offset: u64) -> Option<String> {
        let i = self.extent_at(offset).ok()?;
        Some(self.extents[i].path.display().to_string())
    }
    fn zero_holes_are_data(&self) -> bool {
        true
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let ei = self.extent_at(off)?;
            let e = &self.extents[ei];
            let rel = off - e.start;
            let max = ((buf.len() - pos) as u64).min(e.len - rel);
            let n = match &e.kind {
                Kind::Flat { offset } => {
                    let dst = &mut buf[pos..pos + max as usize];
                    fileio::read_full(&self.files[e.fidx], dst, offset + rel)?;
                    max
                }
                Kind::Sparse(sp) => {
                    let (m, n) = {
                        let mut st = self.lock();
                        self.map(&mut st, ei, sp, rel, max)?
                    };
                    let dst = &mut buf[pos..pos + n as usize];
                    match m {
                        Map::Data(h) => fileio::read_full(&self.files[e.fidx], dst, h)?,
                        Map::Compressed(h) => {
                            let in_c = (rel % sp.cluster_bytes()) as usize;
                            self.read_grain(ei, h, in_c, dst)?
                        }
                        Map::Zero => dst.fill(0),
                        Map::Unallocated => self.read_backing(dst, off)?,
                    }
                    n
                }
            };
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, buf.len() as u64)?;
        let mut st = self.lock();
        let mut pos = 0usize;
        while pos < buf.len() {
            let off = offset + pos as u64;
            let ei = self.extent_at(off)?;
            let e = &self.extents[ei];
            let rel = off - e.start;
            let max = ((buf.len() - pos) as u64).min(e.len - rel) as usize;
            let data = &buf[pos..pos + max];
            let n = match &e.kind {
                Kind::Flat { offset } => {
                    fileio::write_full(&self.files[e.fidx], data, offset + rel)?;
                    max
                }
                Kind::Sparse(sp) if matches!(sp.flavor, Flavor::SeSparse { .. }) => {
                    return Err(Error::Unsupported("Operation not supported".into()));
                }
                Kind::Sparse(sp) if sp.compressed => {
                    let cb = sp.cluster_bytes();
                    let n = (cb - rel % cb).min(max as u64) as usize;
                    if n as u64 != cb && rel + n as u64 != e.len {
                        return Err(einval("streamOptimized images take whole grains only"));
                    }
                    let z = sparse::compress_grain(&data[..n]);
                    self.append_grain(&mut st, ei, sp, off, rel, &z)?;
                    n
                }
                Kind::Sparse(sp) => self.write_sparse(&mut st, ei, sp, off, rel, data)?,
            };
            pos += n;
        }
        self.touch_cid(&mut st)
    }

    fn write_zeroes(&self, offset: u64, len: u64, _may_unmap: bool) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, len)?;
        let mut st = self.lock();
        let end = offset + len;
        let mut off = offset;
        let zeros = vec![0u8; 1 << 20];
        while off < end {
            let ei = self.extent_at(off)?;
            let e = &self.extents[ei];
            let rel = off - e.start;
            let max = (end - off).min(e.len - rel);
            let n = match &e.kind {
                Kind::Flat { offset } => {
                    fileio::write_zeroes_slow(&self.files[e.fidx], offset + rel, max)?;
                    max
                }
                Kind::Sparse(sp) => {
                    if matches!(sp.flavor, Flavor::SeSparse { .. }) {
                        return Err(Error::Unsupported("Operation not supported".into()));
                    }
                    let cb = sp.cluster_bytes();
                    let in_c = rel % cb;
                    let n = (cb - in_c).min(max);
                    let (g, _) = self.lookup(&mut st, ei, sp, rel)?;
                    if sp.compressed {
                        if let Grain::At(_) = g {
                            return Err(Error::Io(std::io::Error::other(
                                "Could not write to allocated cluster for streamOptimized",
                            )));
                        }
                        if self.backing.is_some() {
                            let z = sparse::compress_grain(&zeros[..n as usize]);
                            self.append_grain(&mut st, ei, sp, off, rel, &z)?;
                        }
                    } else if sp.zeroed_grain && in_c == 0 && n == cb {
                        self.zero_grain(&mut st, ei, sp, rel)?;
                    } else if g == Grain::Zeroed
                        || (g == Grain::Unallocated && self.backing.is_none())
                    {
                        // Already reads as zero.
                    } else {
                        let mut done = 0;
                        while done < n {
                            let k = (n - done).min(zeros.len() as u64) as usize;
                            done += self.write_sparse(
                                &mut st,
                                ei,
                                sp,
                                off + done,
                                rel + done,
                                &zeros[..k],
                            )? as u64;
                        }
                    }
                    n
                }
            };
            off += n;
        }
        self.touch_cid(&mut st)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        // QEMU's vmdk driver has no discard: the range keeps its data.
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, len)
    }

    fn flush(&self) -> Result<()> {
        if !self.read_only {
            self.settle_lengths()?;
            for f in &self.files {
                f.sync_data()?;
            }
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<Status> {
        self.check_range(offset, len)?;
        if len == 0 {
            return crate::error::invalid("Empty block status request");
        }
        let ei = self.extent_at(offset)?;
        let e = &self.extents[ei];
        let rel = offset - e.start;
        let max = len.min(e.len - rel);
        match &e.kind {
            Kind::Flat { offset: fo } => {
                // QEMU asks the file below (BDRV_BLOCK_RECURSE): holes read as zero.
                let f = &self.files[e.fidx];
                let host = fo + rel;
                let (alloc, n) = match fileio::seek_data(f, host)? {
                    Some(d) if d <= host => {
                        let hole = fileio::seek_hole(f, host)?.unwrap_or(host + max);
                        (
                            Alloc::Data {
                                host: Some(host),
                                compressed: false,
                            },
                            (hole - host).clamp(1, max),
                        )
                    }
                    Some(d) => (Alloc::Zero { host: Some(host) }, (d - host).clamp(1, max)),
                    None => (Alloc::Zero { host: Some(host) }, max),
                };
                Ok(Status { alloc, len: n })
            }
            Kind::Sparse(sp) => {
                let (m, n) = self.map(&mut self.lock(), ei, sp, rel, max)?;
                let alloc = match m {
                    Map::Data(h) => Alloc::Data {
                        host: Some(h),
                        compressed: false,
                    },
                    Map::Compressed(_) => Alloc::Data {
                        host: None,
                        compressed: true,
                    },
                    Map::Zero => Alloc::Zero { host: None },
                    Map::Unallocated => Alloc::Unallocated { host: None },
                };
                Ok(Status { alloc, len: n })
            }
        }
    }

    fn resize(&self, _new_size: u64, _prealloc: Preallocation, _shrink: bool) -> Result<()> {
        Err(Error::Unsupported(
            "Image format driver does not support resize".into(),
        ))
    }

    fn info(&self) -> Result<ImageInfo> {
        let extents = self
            .extents
            .iter()
            .map(|e| VmdkExtentInfo {
                filename: e.path.display().to_string(),
                format: e.type_name.unwrap_or("").to_string(),
                virtual_size: e.len,
                cluster_size: e.sparse().map(|s| s.cluster_bytes()),
                compressed: e.is_compressed(),
            })
            .collect();
        let mut children = Vec::new();
        for (i, e) in self.extents.iter().enumerate().rev() {
            if e.own_file {
                let f = &self.files[e.fidx];
                children.push(ChildInfo {
                    name: format!("extents.{i}"),
                    filename: e.path.display().to_string(),
                    actual_size: fileio::allocated_bytes(f)?,
                    file_length: fileio::file_len(f)?.div_ceil(512) * 512,
                });
            }
        }
        let full = self.parent_hint.as_ref().map(|b| {
            crate::chain::resolve_backing(&self.path, b)
                .display()
                .to_string()
        });
        Ok(ImageInfo {
            filename: self.path.display().to_string(),
            format: "vmdk",
            virtual_size: self.size,
            actual_size: self.allocated()?,
            file_length: fileio::file_len(&self.files[0])?.div_ceil(512) * 512,
            cluster_size: self.info_cluster_size(),
            backing_filename: self.parent_hint.clone(),
            full_backing_filename: full,
            backing_format: self.parent_hint.as_ref().map(|_| "vmdk".to_string()),
            vmdk: Some(VmdkInfo {
                cid: self.cid,
                parent_cid: self.parent_cid,
                create_type: self.create_type.clone(),
                extents,
            }),
            children,
            ..Default::default()
        })
    }

    fn compress_cluster(&self, buf: &[u8]) -> Result<Option<Vec<u8>>> {
        if !self.needs_compressed_writes() {
            // QEMU writes plain data through vmdk_co_pwritev_compressed on these.
            return Ok(None);
        }
        Ok(Some(sparse::compress_grain(buf)))
    }

    fn write_compressed_data(&self, offset: u64, data: &[u8]) -> Result<()> {
        crate::driver::check_writable(self.read_only)?;
        self.check_range(offset, 1)?;
        let ei = self.extent_at(offset)?;
        let e = &self.extents[ei];
        let rel = offset - e.start;
        match &e.kind {
            Kind::Sparse(sp) if sp.compressed => {
                let mut st = self.lock();
                self.append_grain(&mut st, ei, sp, offset, rel, data)?;
                self.touch_cid(&mut st)
            }
            _ => {
                // A mixed image whose first extent is compressed but this one is not.
                let cb = self.info_cluster_size().unwrap_or(65536) as usize;
                let mut out = vec![0u8; cb.max(65536)];
                let n = sparse::decompress_grain(data, &mut out)?;
                let n = n.min((self.size - offset) as usize);
                self.write_at(&out[..n], offset)
            }
        }
    }

    fn check(&self, repair: Repair) -> Result<CheckReport> {
        check::check(self, repair)
    }
}
