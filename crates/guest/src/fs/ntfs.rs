//! NTFS, read-only, on the `ntfs` crate (Colin Finck; no_std-capable, validates what it
//! parses, reads through `Read + Seek`). This module adapts it to [`Filesystem`]: a
//! range-checked cursor over the device with a read budget per operation (so that a hostile
//! B-tree whose subnode points back at its parent, which the crate would follow forever, ends
//! in an error), and the view ntfs-3g gives when libguestfs mounts NTFS without options:
//!
//! - inode number = MFT record number (root 5); uid/gid 0; mode 0777 for everything;
//! - the metadata files (records below 16: $MFT, $Bitmap, $Extend, ...) and DOS 8.3 name
//!   duplicates are hidden from listings (ntfs-3g's `show_sys_files` is off by default);
//! - times from $STANDARD_INFORMATION (atime, mtime, ctime = MFT change, crtime = creation);
//! - nlink = the record's hard link count (1 for directories, as ntfs-3g shows them);
//! - a directory's size is its $I30 index allocation's size (0 when the index is resident);
//! - Interix special files as ntfs-3g creates them (system attribute; "IntxLNK\1" + UTF-16
//!   target, "IntxCHR\0"/"IntxBLK\0" + major + minor, size 0 = FIFO, size 1 = socket);
//! - reparse-point symbolic links and junctions are symlinks; readlink gives relative
//!   symlink targets ('\' turned into '/'); absolute targets and junctions, whose
//!   translation ntfs-3g derives from the mount, are `Unsupported`. Other reparse points
//!   (dedup, WOF, ...) show as regular files whose reads are `Unsupported`.
//!
//! The crate is not panic-free on hostile input (see [`contained`]), and it turns an I/O
//! error inside its binrw parsing into a panic; the cursor therefore never fails a read.
//!
//! Not handled: LZNT1-compressed and EFS-encrypted data (the crate reads neither; reads are
//! `Unsupported`), named streams, data past the valid data length is read as stored.

use crate::dev::{BlockDev, CachedDev};
use crate::error::{corrupt, Error, Result};
use crate::fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs, Timespec};
use ntfs::structured_values::{NtfsFileAttributeFlags, NtfsFileNamespace};
use ntfs::{
    Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsError, NtfsFile, NtfsFileFlags, NtfsReadSeek,
};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

const ROOT_INO: Ino = 5;
/// ntfs-3g's FILE_first_user: records below it are metadata files, hidden from listings.
const FIRST_USER_RECORD: u64 = 16;
/// Most index entries one directory listing walks.
const MAX_DIR_ENTRIES: usize = 1 << 20;
/// Most attributes looked at in one record (attribute lists included).
const MAX_ATTRS: usize = 4096;
/// Bytes the crate may read for one metadata operation (a stat, a listing).
const META_BUDGET: u64 = 256 << 20;
/// What each read call costs on top of its bytes, so that tiny reads are bounded too.
const CALL_COST: u64 = 64;
/// ntfs-3g's bound on an Interix symlink: the magic and PATH_MAX UTF-16 units.
const INTX_MAX: u64 = 8 + 2 * 4096;
const REPARSE_MAX: u64 = 16 << 10;
const IO_REPARSE_TAG_SYMLINK: u32 = 0xA000_000C;
const IO_REPARSE_TAG_MOUNT_POINT: u32 = 0xA000_0003;

/// A `Read + Seek` view of the device for the crate. Reads never fail and are never short:
/// the crate turns an I/O error met while parsing one of its binrw structures into a panic
/// (`unreachable!` in its `From<binrw::Error>`), so past the end of the device, after a
/// device error, or once the operation's read budget is spent, the cursor hands out zeros
/// (which fail the crate's signature checks and end any walk) and records the fault, which
/// [`NtfsFs::with`] returns instead of the crate's result.
struct Cursor<'a> {
    dev: &'a dyn BlockDev,
    pos: u64,
    budget: u64,
    fault: Option<Error>,
}

impl<'a> Cursor<'a> {
    fn new(dev: &'a dyn BlockDev, budget: u64) -> Cursor<'a> {
        Cursor {
            dev,
            pos: 0,
            budget,
            fault: None,
        }
    }

    fn fail(&mut self, e: Error) {
        if self.fault.is_none() {
            self.fault = Some(e);
        }
    }
}

impl Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(0);
        let len = buf.len() as u64;
        let cost = len + CALL_COST;
        if self.fault.is_some() {
            // Zeros until the operation ends.
        } else if cost > self.budget {
            self.fail(Error::Corrupt(
                "ntfs: structures need more reads than any sane volume (a loop?)".into(),
            ));
        } else {
            self.budget -= cost;
            let size = self.dev.size();
            match self.pos.checked_add(len) {
                Some(end) if end <= size => {
                    if let Err(e) = self.dev.read_at(buf, self.pos) {
                        self.fail(e);
                    }
                }
                _ => self.fail(Error::Corrupt(format!(
                    "ntfs: a structure at byte {} lies past the end of the device ({size} bytes)",
                    self.pos
                ))),
            }
        }
        self.pos = self.pos.saturating_add(len);
        Ok(buf.len())
    }
}

impl Seek for Cursor<'_> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.dev.size().checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek out of range",
            )),
        }
    }
}

/// Runs crate code, turning a panic into `Error::Corrupt`. The crate (0.4.0) indexes some
/// slices of hostile index records without checking their length first (e.g.
/// `NtfsIndexEntry::index_entry_length` on a truncated entry); until it checks them itself,
/// this keeps such records an error for our callers. (The process's panic hook still runs.)
fn contained<R>(f: impl FnOnce() -> Result<R>) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(Error::Corrupt(
            "ntfs: malformed structures (the ntfs crate panicked on them)".into(),
        ))
    })
}

/// The crate's errors, with the file named: all are on-disk problems.
fn err(ino: Ino, e: NtfsError) -> Error {
    let msg = format!("ntfs: file record {ino}: {e}");
    if format!("{e:?}").starts_with("Unsupported") {
        Error::Unsupported(msg)
    } else {
        Error::Corrupt(msg)
    }
}

/// NT time (100 ns units since 1601-01-01) as Unix seconds and nanoseconds.
fn nt_time(t: u64) -> Timespec {
    Timespec {
        sec: (t / 10_000_000) as i64 - 11_644_473_600,
        nsec: (t % 10_000_000) as u32 * 100,
    }
}

/// What a record turned out to be, as ntfs-3g shows it.
struct Node {
    kind: FileType,
    rdev: u64,
    /// The symlink target (Interix or a relative reparse symlink), or why there is none.
    target: Option<std::result::Result<Vec<u8>, String>>,
    /// A reparse point whose data cannot be read as a file.
    opaque: bool,
}

pub struct NtfsFs {
    dev: Arc<dyn BlockDev>,
    ntfs: Ntfs,
    label: Option<String>,
    uuid: Option<String>,
}

impl NtfsFs {
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<NtfsFs> {
        let dev: Arc<dyn BlockDev> = Arc::new(CachedDev::new(dev, 4 << 20));
        let mut c = Cursor::new(&*dev, META_BUDGET);
        let ntfs =
            contained(|| Ntfs::new(&mut c).map_err(|e| Error::Corrupt(format!("ntfs: {e}"))));
        if let Some(e) = c.fault {
            return Err(e);
        }
        let ntfs = ntfs?;
        let id = crate::probe::probe(&*dev)?;
        let (label, uuid) = if id.kind == "ntfs" {
            (id.label, id.uuid)
        } else {
            (None, None)
        };
        let fs = NtfsFs {
            dev,
            ntfs,
            label,
            uuid,
        };
        // The root must be there and be a directory, or nothing else works.
        let root_is_dir = fs.with(META_BUDGET, |c| Ok(fs.file(c, ROOT_INO)?.is_directory()))?;
        if !root_is_dir {
            return corrupt("ntfs: the root (file record 5) is not a directory");
        }
        Ok(fs)
    }

    /// Runs `f` with a fresh cursor; a fault the cursor met wins over `f`'s result (which
    /// was computed from zeros).
    fn with<R>(&self, budget: u64, f: impl FnOnce(&mut Cursor<'_>) -> Result<R>) -> Result<R> {
        let mut c = Cursor::new(&*self.dev, budget);
        let r = contained(|| f(&mut c));
        match c.fault {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn file<'n>(&'n self, c: &mut Cursor<'_>, ino: Ino) -> Result<NtfsFile<'n>> {
        let f = self.ntfs.file(c, ino).map_err(|e| err(ino, e))?;
        if !f.flags().contains(NtfsFileFlags::IN_USE) {
            return Err(Error::NotFound(format!("ntfs: file record {ino}")));
        }
        Ok(f)
    }

    /// The whole value of the first attribute of type `ty` (unnamed for $DATA), up to `max`
    /// bytes; None when absent or larger.
    fn small_attr(
        &self,
        c: &mut Cursor<'_>,
        f: &NtfsFile<'_>,
        ino: Ino,
        ty: NtfsAttributeType,
        max: u64,
    ) -> Result<Option<Vec<u8>>> {
        let mut attrs = f.attributes();
        let mut n = 0;
        while let Some(item) = attrs.next(c) {
            n += 1;
            if n > MAX_ATTRS {
                return corrupt(format!("ntfs: file record {ino}: too many attributes"));
            }
            let item = item.map_err(|e| err(ino, e))?;
            let a = item.to_attribute().map_err(|e| err(ino, e))?;
            if a.ty().map_err(|e| err(ino, e))? != ty {
                continue;
            }
            if ty == NtfsAttributeType::Data && !a.name().map_err(|e| err(ino, e))?.is_empty() {
                continue;
            }
            let len = a.value_length();
            if len > max {
                return Ok(None);
            }
            if a.flags()
                .intersects(NtfsAttributeFlags::COMPRESSED | NtfsAttributeFlags::ENCRYPTED)
            {
                return Ok(None);
            }
            let mut v = a.value(c).map_err(|e| err(ino, e))?;
            let mut buf = vec![0u8; len as usize];
            v.read_exact(c, &mut buf).map_err(|e| err(ino, e))?;
            return Ok(Some(buf));
        }
        Ok(None)
    }

    /// Kind and link target, from the attributes and (for system files and reparse points)
    /// the data, as ntfs-3g decides them.
    fn node(
        &self,
        c: &mut Cursor<'_>,
        f: &NtfsFile<'_>,
        ino: Ino,
        attrs: NtfsFileAttributeFlags,
    ) -> Result<Node> {
        let mut node = Node {
            kind: if f.is_directory() {
                FileType::Directory
            } else {
                FileType::Regular
            },
            rdev: 0,
            target: None,
            opaque: false,
        };
        if attrs.contains(NtfsFileAttributeFlags::REPARSE_POINT) {
            if let Some(r) =
                self.small_attr(c, f, ino, NtfsAttributeType::ReparsePoint, REPARSE_MAX)?
            {
                let tag = r
                    .get(0..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                match tag {
                    Some(IO_REPARSE_TAG_SYMLINK) | Some(IO_REPARSE_TAG_MOUNT_POINT) => {
                        node.kind = FileType::Symlink;
                        node.target = Some(reparse_target(&r));
                    }
                    _ if !f.is_directory() => node.opaque = true,
                    _ => {}
                }
            }
            return Ok(node);
        }
        if f.is_directory() || !attrs.contains(NtfsFileAttributeFlags::SYSTEM) {
            return Ok(node);
        }
        let Some(data) = self.small_attr(c, f, ino, NtfsAttributeType::Data, INTX_MAX)? else {
            return Ok(node);
        };
        if !attrs.contains(NtfsFileAttributeFlags::HIDDEN) {
            match data.len() {
                0 => node.kind = FileType::Fifo,
                1 => node.kind = FileType::Socket,
                _ => {}
            }
        }
        if data.len() > 8 {
            let dev_no = |d: &[u8]| {
                let le = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                let (major, minor) = (le(&d[8..16]), le(&d[16..24]));
                (minor & 0xff)
                    | ((major & 0xfff) << 8)
                    | ((minor & !0xff) << 12)
                    | ((major & !0xfff) << 32)
            };
            match &data[..8] {
                b"IntxLNK\x01" => {
                    let units: Vec<u16> = data[8..]
                        .chunks_exact(2)
                        .map(|b| u16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    node.kind = FileType::Symlink;
                    node.target = Some(Ok(String::from_utf16_lossy(&units).into_bytes()));
                }
                b"IntxCHR\0" if data.len() == 24 => {
                    node.kind = FileType::CharDevice;
                    node.rdev = dev_no(&data);
                }
                b"IntxBLK\0" if data.len() == 24 => {
                    node.kind = FileType::BlockDevice;
                    node.rdev = dev_no(&data);
                }
                _ => {}
            }
        }
        Ok(node)
    }

    /// Size and allocated bytes of the unnamed $DATA stream (or the $I30 allocation of a
    /// directory), as ntfs-3g reports them.
    fn sizes(&self, c: &mut Cursor<'_>, f: &NtfsFile<'_>, ino: Ino) -> Result<(u64, u64)> {
        let dir = f.is_directory();
        let mut attrs = f.attributes();
        let mut n = 0;
        while let Some(item) = attrs.next(c) {
            n += 1;
            if n > MAX_ATTRS {
                return corrupt(format!("ntfs: file record {ino}: too many attributes"));
            }
            let item = item.map_err(|e| err(ino, e))?;
            let a = item.to_attribute().map_err(|e| err(ino, e))?;
            let ty = a.ty().map_err(|e| err(ino, e))?;
            let name = a.name().map_err(|e| err(ino, e))?;
            let wanted = if dir {
                ty == NtfsAttributeType::IndexAllocation && name == "$I30"
            } else {
                ty == NtfsAttributeType::Data && name.is_empty()
            };
            if !wanted {
                continue;
            }
            let len = a.value_length();
            let v = a.value(c).map_err(|e| err(ino, e))?;
            let alloc = match v {
                ntfs::attribute_value::NtfsAttributeValue::Resident(_) => len.div_ceil(8) * 8,
                ntfs::attribute_value::NtfsAttributeValue::NonResident(nr) => {
                    let mut total = 0u64;
                    let mut k = 0;
                    for r in nr.data_runs() {
                        k += 1;
                        if k > MAX_DIR_ENTRIES {
                            return corrupt(format!("ntfs: file record {ino}: too many data runs"));
                        }
                        let r = r.map_err(|e| err(ino, e))?;
                        if r.data_position().value().is_some() {
                            total = total.saturating_add(r.allocated_size());
                        }
                    }
                    total
                }
                _ => {
                    len.div_ceil(self.ntfs.cluster_size() as u64) * self.ntfs.cluster_size() as u64
                }
            };
            return Ok((len, alloc));
        }
        Ok((0, 0))
    }

    fn entries(&self, c: &mut Cursor<'_>, ino: Ino) -> Result<Vec<DirEntry>> {
        let f = self.file(c, ino)?;
        if !f.is_directory() {
            return Err(Error::NotDir(format!("ntfs: file record {ino}")));
        }
        let index = f.directory_index(c).map_err(|e| err(ino, e))?;
        let mut it = index.entries();
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(e) = it.next(c) {
            n += 1;
            if n > MAX_DIR_ENTRIES {
                return corrupt(format!(
                    "ntfs: directory (file record {ino}) has more than {MAX_DIR_ENTRIES} entries"
                ));
            }
            let e = e.map_err(|e| err(ino, e))?;
            let Some(key) = e.key() else { continue };
            let key = key.map_err(|e| err(ino, e))?;
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let rec = e.file_reference().file_record_number();
            if rec < FIRST_USER_RECORD {
                continue;
            }
            let units: Vec<u16> = key.name().u16_iter().collect();
            let name = String::from_utf16_lossy(&units).into_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
                return corrupt(format!(
                    "ntfs: directory (file record {ino}) has an invalid name {:?}",
                    String::from_utf8_lossy(&name)
                ));
            }
            let fa = key.file_attributes();
            // The index copy of the attributes settles ordinary files and directories; only
            // system files and reparse points need their record read.
            let kind = if fa
                .intersects(NtfsFileAttributeFlags::SYSTEM | NtfsFileAttributeFlags::REPARSE_POINT)
            {
                self.with(META_BUDGET, |c2| {
                    let f2 = self.file(c2, rec)?;
                    let si = f2.info().map_err(|e| err(rec, e))?;
                    Ok(self.node(c2, &f2, rec, si.file_attributes())?.kind)
                })?
            } else if key.is_directory() {
                FileType::Directory
            } else {
                FileType::Regular
            };
            out.push(DirEntry {
                name,
                ino: rec,
                kind,
            });
        }
        Ok(out)
    }

    fn free_clusters(&self, c: &mut Cursor<'_>) -> Result<u64> {
        const BITMAP: u64 = 6;
        let clusters = self.total_clusters();
        let f = self.file(c, BITMAP)?;
        let item = match f.data(c, "") {
            Some(i) => i.map_err(|e| err(BITMAP, e))?,
            None => return corrupt("ntfs: $Bitmap has no data"),
        };
        let a = item.to_attribute().map_err(|e| err(BITMAP, e))?;
        let mut v = a.value(c).map_err(|e| err(BITMAP, e))?;
        let bytes = clusters.div_ceil(8);
        if v.len() < bytes {
            return corrupt("ntfs: $Bitmap is smaller than the volume");
        }
        let mut used = 0u64;
        let mut done = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        c.budget = c.budget.saturating_add(bytes.saturating_mul(2));
        while done < bytes {
            let want = (bytes - done).min(buf.len() as u64) as usize;
            v.read_exact(c, &mut buf[..want])
                .map_err(|e| err(BITMAP, e))?;
            for (i, b) in buf[..want].iter().enumerate() {
                let bit0 = (done + i as u64) * 8;
                let valid = (clusters - bit0).min(8) as u32;
                let mask = if valid == 8 { 0xff } else { (1u8 << valid) - 1 };
                used += (b & mask).count_ones() as u64;
            }
            done += want as u64;
        }
        Ok(clusters - used)
    }

    fn total_clusters(&self) -> u64 {
        self.ntfs.size() / (self.ntfs.cluster_size() as u64).max(1)
    }
}

/// A reparse symlink's relative target; absolute ones and junctions are not translated.
fn reparse_target(r: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let le16 = |at: usize| {
        r.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let tag = r
        .get(0..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if tag != Some(IO_REPARSE_TAG_SYMLINK) {
        return Err("junction targets are not translated".into());
    }
    let flags = r
        .get(16..20)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if flags != Some(1) {
        return Err("absolute symlink targets are not translated".into());
    }
    let (Some(off), Some(len)) = (le16(8), le16(10)) else {
        return Err("truncated reparse data".into());
    };
    let Some(name) = r.get(20 + off..20 + off + len) else {
        return Err("reparse target outside its data".into());
    };
    let units: Vec<u16> = name
        .chunks_exact(2)
        .map(|b| match u16::from_le_bytes([b[0], b[1]]) {
            0x5c => 0x2f,
            u => u,
        })
        .collect();
    Ok(String::from_utf16_lossy(&units).into_bytes())
}

impl Filesystem for NtfsFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "ntfs".into(),
            label: self.label.clone(),
            uuid: self.uuid.clone(),
        }
    }

    fn root(&self) -> Ino {
        ROOT_INO
    }

    fn stat(&self, ino: Ino) -> Result<Stat> {
        self.with(META_BUDGET, |c| self.stat_in(c, ino))
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        self.with(META_BUDGET, |c| self.entries(c, ino))
    }

    fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        self.with(META_BUDGET, |c| self.read_in(c, ino, off, buf))
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.with(META_BUDGET, |c| self.readlink_in(c, ino))
    }

    fn statfs(&self) -> Result<StatFs> {
        let free = self.with(META_BUDGET, |c| self.free_clusters(c))?;
        Ok(StatFs {
            bsize: self.ntfs.cluster_size() as u64,
            blocks: self.total_clusters(),
            bfree: free,
            bavail: free,
            // Not computed (ntfs-3g derives them from the MFT bitmap and free space).
            files: 0,
            ffree: 0,
            namemax: 255,
        })
    }
}

impl NtfsFs {
    fn stat_in(&self, c: &mut Cursor<'_>, ino: Ino) -> Result<Stat> {
        let f = self.file(c, ino)?;
        let si = f.info().map_err(|e| err(ino, e))?;
        let node = self.node(c, &f, ino, si.file_attributes())?;
        let (mut size, alloc) = self.sizes(c, &f, ino)?;
        if node.kind == FileType::Symlink {
            size = match &node.target {
                Some(Ok(t)) => t.len() as u64,
                _ => 0,
            };
        }
        Ok(Stat {
            ino,
            kind: node.kind,
            mode: node.kind.mode_bits() | 0o777,
            nlink: if f.is_directory() {
                1
            } else {
                f.hard_link_count() as u64
            },
            uid: 0,
            gid: 0,
            size,
            blocks: alloc.div_ceil(512),
            blksize: self.ntfs.cluster_size(),
            rdev: node.rdev,
            atime: nt_time(si.access_time().nt_timestamp()),
            mtime: nt_time(si.modification_time().nt_timestamp()),
            ctime: nt_time(si.mft_record_modification_time().nt_timestamp()),
            crtime: Some(nt_time(si.creation_time().nt_timestamp())),
        })
    }

    fn read_in(&self, c: &mut Cursor<'_>, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let f = self.file(c, ino)?;
        if f.is_directory() {
            return Err(Error::IsDir(format!("ntfs: file record {ino}")));
        }
        let si = f.info().map_err(|e| err(ino, e))?;
        if si
            .file_attributes()
            .contains(NtfsFileAttributeFlags::REPARSE_POINT)
            && self.node(c, &f, ino, si.file_attributes())?.opaque
        {
            return Err(Error::Unsupported(format!(
                "ntfs: file record {ino}: reading reparse points of this kind is not supported"
            )));
        }
        let item = match f.data(c, "") {
            Some(i) => i.map_err(|e| err(ino, e))?,
            None => return Ok(0),
        };
        let a = item.to_attribute().map_err(|e| err(ino, e))?;
        if a.flags().contains(NtfsAttributeFlags::COMPRESSED) {
            return Err(Error::Unsupported(format!(
                "ntfs: file record {ino}: reading compressed (LZNT1) files is not supported"
            )));
        }
        if a.flags().contains(NtfsAttributeFlags::ENCRYPTED) {
            return Err(Error::Unsupported(format!(
                "ntfs: file record {ino}: reading encrypted (EFS) files is not supported"
            )));
        }
        let mut v = a.value(c).map_err(|e| err(ino, e))?;
        let len = v.len();
        if off >= len || buf.is_empty() {
            return Ok(0);
        }
        let want = (len - off).min(buf.len() as u64) as usize;
        c.budget = c.budget.saturating_add(2 * want as u64);
        v.seek(c, SeekFrom::Start(off)).map_err(|e| err(ino, e))?;
        v.read_exact(c, &mut buf[..want]).map_err(|e| err(ino, e))?;
        Ok(want)
    }

    fn readlink_in(&self, c: &mut Cursor<'_>, ino: Ino) -> Result<Vec<u8>> {
        let f = self.file(c, ino)?;
        let si = f.info().map_err(|e| err(ino, e))?;
        match self.node(c, &f, ino, si.file_attributes())?.target {
            Some(Ok(t)) => Ok(t),
            Some(Err(why)) => Err(Error::Unsupported(format!(
                "ntfs: file record {ino}: {why}"
            ))),
            None => Err(Error::Invalid(format!(
                "ntfs: file record {ino} is not a symbolic link"
            ))),
        }
    }
}
