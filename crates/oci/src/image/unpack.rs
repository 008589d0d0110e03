//! Unpacking one layer tar into a directory in overlayfs format, safe against hostile tars.
//!
//! The directory becomes an overlayfs lower layer, so image whiteouts are converted:
//! `.wh.NAME` becomes a 0:0 character device NAME, `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on its directory, and a directory that replaces a whiteout in the
//! same layer is made opaque (OCI: a whiteout only hides lower layers).
//!
//! Safety: a path is cleaned lexically (a leading `/` is dropped: tar's own behaviour; any
//! `..` refuses the layer), then resolved one component at a time with
//! `openat(O_DIRECTORY|O_NOFOLLOW)` from the layer's root, so a symlink in a parent component
//! (whatever it points to) refuses the layer instead of being followed; files are created with
//! `O_EXCL|O_NOFOLLOW` after removing what was there; hard link targets are resolved the same
//! way, so they can only name files already unpacked in this layer. Entry counts, file sizes,
//! total size, path lengths and extended headers are bounded. Ownership (numeric), modes
//! (setuid/setgid/sticky included), mtimes and extended attributes (`security.capability`
//! included; `trusted.overlay.*` from the tar is dropped, it would steer overlayfs) are kept;
//! the order chown, chmod, setxattr matters (chown clears capabilities and setuid bits).
//! Directory modes and times are applied at the end (writing children changes mtimes, and a
//! 0555 directory must stay writable while unpacking). Unprivileged, device nodes and
//! ownership are skipped with a note.

use super::merged::{is_whiteout, MergedView, OPAQUE_XATTR};
use super::tar_reader::{Entry, Kind, Stream, TarLimits, TarReader};
use super::ImageError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// Bounds on what one layer may contain.
#[derive(Clone, Debug)]
pub struct UnpackLimits {
    pub tar: TarLimits,
    /// Members (extended headers not counted).
    pub max_entries: u64,
    /// Largest single file.
    pub max_file_size: u64,
    /// All regular file data together.
    pub max_total_size: u64,
    /// Path bytes of directories remembered for their final mode and mtime.
    pub max_dir_bytes: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            tar: TarLimits::default(),
            max_entries: 4 << 20,
            max_file_size: 1 << 40,
            max_total_size: 4 << 40,
            max_dir_bytes: 128 << 20,
        }
    }
}

/// What unpacking found.
#[derive(Clone, Debug, Default)]
pub struct UnpackStats {
    /// Members unpacked (whiteouts included).
    pub entries: u64,
    /// Bytes of regular file data written.
    pub bytes: u64,
    /// Things skipped or not kept (device nodes when unprivileged, refused xattrs...).
    pub notes: Vec<String>,
}

const MAX_NOTES: usize = 32;

struct DeferredDir {
    comps: Vec<Vec<u8>>,
    mode: u32,
    mtime: Option<(i64, u32)>,
}

struct Unpacker<'a> {
    root: OwnedFd,
    label: &'a str,
    limits: &'a UnpackLimits,
    lowers: Option<MergedView>,
    privileged: bool,
    cache: Option<(Vec<Vec<u8>>, OwnedFd)>,
    dirs: Vec<DeferredDir>,
    dir_bytes: usize,
    note_keys: HashSet<String>,
    stats: UnpackStats,
}

/// Unpacks the layer tar read from `tar` into the existing, empty directory `dest`.
/// `lowers` are the unpacked layers below this one (topmost first): directories the tar
/// implies without listing get their attributes from there. `label` names the layer in errors.
/// Stops at the tar's end-of-archive marker: the caller drains `tar` if it hashes the stream.
pub fn unpack_layer<R: Read>(
    tar: &mut R,
    dest: &Path,
    lowers: &[impl AsRef<Path>],
    limits: &UnpackLimits,
    label: &str,
) -> Result<UnpackStats, ImageError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ImageError::Io {
        path: dest.to_path_buf(),
        source: e.into(),
    })?;
    let lowers = if lowers.is_empty() {
        None
    } else {
        Some(MergedView::open(lowers).map_err(|source| ImageError::Io {
            path: dest.to_path_buf(),
            source,
        })?)
    };
    let mut u = Unpacker {
        root,
        label,
        limits,
        lowers,
        privileged: rustix::process::geteuid().is_root(),
        cache: None,
        dirs: Vec::new(),
        dir_bytes: 0,
        note_keys: HashSet::new(),
        stats: UnpackStats::default(),
    };
    u.init_root()?;
    let mut reader = TarReader::new(Stream(tar), limits.tar.clone());
    while let Some(e) = reader.next_entry().map_err(|source| ImageError::Tar {
        blob: label.to_string(),
        source,
    })? {
        u.stats.entries += 1;
        if u.stats.entries > limits.max_entries {
            return Err(u.limit(format!("more than {} members", limits.max_entries)));
        }
        u.entry(&e, &mut reader)?;
    }
    u.finish()?;
    Ok(u.stats)
}

/// The components of a member path, or why it is refused.
fn clean_path(p: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut out = Vec::new();
    for c in p.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains '..'"),
            c if c.contains(&0) => return Err("path contains a NUL byte"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// A tar's numeric owner as ids chown accepts (-1 means "unchanged" to the kernel).
fn owner(uid: u64, gid: u64) -> Option<(u32, u32)> {
    let uid = u32::try_from(uid).ok().filter(|u| *u != u32::MAX)?;
    let gid = u32::try_from(gid).ok().filter(|g| *g != u32::MAX)?;
    Some((uid, gid))
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn errno_io(e: Errno) -> io::Error {
    e.into()
}

/// Removes `name` in `parent`, recursively if it is a directory, never following symlinks.
pub(crate) fn remove_tree_at(parent: BorrowedFd<'_>, name: &[u8], depth: usize) -> io::Result<()> {
    if depth > 2048 {
        return Err(io::Error::other("directory tree too deep to remove"));
    }
    let dir = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            return rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(errno_io)
        }
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    loop {
        // Read a batch, remove it, read again: the directory shrinks as we go.
        let mut batch: Vec<(Vec<u8>, FileType)> = Vec::new();
        let mut it = rustix::fs::Dir::read_from(&dir)?;
        for ent in it.by_ref() {
            let ent = ent?;
            let n = ent.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            batch.push((n.to_vec(), ent.file_type()));
            if batch.len() >= 1024 {
                break;
            }
        }
        if batch.is_empty() {
            break;
        }
        for (n, t) in batch {
            if t == FileType::Directory || t == FileType::Unknown {
                remove_tree_at(dir.as_fd(), &n, depth + 1)?;
            } else {
                match rustix::fs::unlinkat(&dir, n.as_slice(), AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    drop(dir);
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).map_err(errno_io)
}

fn open_dir(parent: impl AsFd, name: &[u8]) -> Result<OwnedFd, Errno> {
    rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn timestamps(t: (i64, u32)) -> Timestamps {
    let ts = Timespec {
        tv_sec: t.0,
        tv_nsec: t.1 as _,
    };
    Timestamps {
        last_access: ts,
        last_modification: ts,
    }
}

/// What was at a name before an entry is created there.
#[derive(PartialEq, Eq)]
enum Prepared {
    Fresh,
    ExistingDir,
    ReplacedWhiteout,
}

impl Unpacker<'_> {
    fn io(&self, what: &str, e: impl Into<io::Error>) -> ImageError {
        ImageError::Blob {
            blob: self.label.to_string(),
            msg: format!("{what}: {}", e.into()),
        }
    }

    fn refuse(&self, entry: &[u8], reason: impl Into<String>) -> ImageError {
        ImageError::UnsafeEntry {
            blob: self.label.to_string(),
            entry: show(entry),
            reason: reason.into(),
        }
    }

    fn limit(&self, msg: String) -> ImageError {
        ImageError::Blob {
            blob: self.label.to_string(),
            msg: format!("layer exceeds a limit: {msg}"),
        }
    }

    fn note(&mut self, key: &str, msg: String) {
        if self.note_keys.len() < MAX_NOTES && self.note_keys.insert(key.to_string()) {
            self.stats.notes.push(format!("{}: {msg}", self.label));
        }
    }

    fn defer_dir(
        &mut self,
        comps: Vec<Vec<u8>>,
        mode: u32,
        mtime: Option<(i64, u32)>,
    ) -> Result<(), ImageError> {
        self.dir_bytes += comps.iter().map(|c| c.len() + 1).sum::<usize>() + 32;
        if self.dir_bytes > self.limits.max_dir_bytes {
            return Err(self.limit(format!(
                "more than {} bytes of directory paths",
                self.limits.max_dir_bytes
            )));
        }
        self.dirs.push(DeferredDir { comps, mode, mtime });
        Ok(())
    }

    /// Attributes of a directory the layer implies: the lower layers' directory, else 0755
    /// root.
    fn implied_attrs(&self, comps: &[Vec<u8>]) -> (u32, u32, u32, Option<(i64, u32)>) {
        if let Some(view) = &self.lowers {
            let path: Option<Vec<&str>> =
                comps.iter().map(|c| std::str::from_utf8(c).ok()).collect();
            if let Some(path) = path {
                if let Ok(Some(st)) = view.dir_stat(&path.join("/")) {
                    return (
                        st.st_mode & 0o7777,
                        st.st_uid,
                        st.st_gid,
                        Some((st.st_mtime, st.st_mtime_nsec as u32)),
                    );
                }
            }
        }
        (0o755, 0, 0, None)
    }

    fn init_root(&mut self) -> Result<(), ImageError> {
        let (mode, uid, gid, mtime) = self.implied_attrs(&[]);
        self.chown(
            self.root.try_clone().map_err(|e| self.io("root", e))?,
            uid as u64,
            gid as u64,
            b"/",
        )?;
        self.defer_dir(Vec::new(), mode, mtime)
    }

    fn chown(&mut self, fd: impl AsFd, uid: u64, gid: u64, entry: &[u8]) -> Result<(), ImageError> {
        let Some((uid, gid)) = owner(uid, gid) else {
            return Err(self.refuse(entry, format!("owner {uid}:{gid} out of range")));
        };
        if !self.privileged {
            if uid != 0 || gid != 0 {
                self.note("chown", "not root: file ownership not kept".into());
            }
            return Ok(());
        }
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        match rustix::fs::fchown(fd, Some(u), Some(g)) {
            Ok(()) => Ok(()),
            Err(Errno::PERM) | Err(Errno::INVAL) => {
                self.note(
                    "chown",
                    format!("ownership {uid}:{gid} refused by the kernel (user namespace?)"),
                );
                Ok(())
            }
            Err(e) => Err(self.io(&format!("chown {}", show(entry)), e)),
        }
    }

    fn chown_at(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        uid: u64,
        gid: u64,
        entry: &[u8],
    ) -> Result<(), ImageError> {
        let Some((uid, gid)) = owner(uid, gid) else {
            return Err(self.refuse(entry, format!("owner {uid}:{gid} out of range")));
        };
        if !self.privileged {
            return Ok(());
        }
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        match rustix::fs::chownat(parent, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(()) => Ok(()),
            Err(Errno::PERM) | Err(Errno::INVAL) => {
                self.note(
                    "chown",
                    format!("ownership {uid}:{gid} refused by the kernel (user namespace?)"),
                );
                Ok(())
            }
            Err(e) => Err(self.io(&format!("chown {}", show(entry)), e)),
        }
    }

    fn xattrs(&mut self, fd: impl AsFd, e: &Entry) -> Result<(), ImageError> {
        for (k, v) in &e.xattrs {
            if k.starts_with(b"trusted.overlay.") || k.starts_with(b"user.overlay.") {
                self.note(
                    "overlay-xattr",
                    format!("overlayfs attribute {} from the tar dropped", show(k)),
                );
                continue;
            }
            match rustix::fs::fsetxattr(&fd, k.as_slice(), v, XattrFlags::empty()) {
                Ok(()) => {}
                Err(
                    err @ (Errno::NOTSUP
                    | Errno::PERM
                    | Errno::ACCESS
                    | Errno::TOOBIG
                    | Errno::RANGE
                    | Errno::INVAL),
                ) => {
                    self.note(
                        &format!("xattr {}", show(k)),
                        format!(
                            "extended attribute {} not kept: {}",
                            show(k),
                            io::Error::from(err)
                        ),
                    );
                }
                Err(err) => {
                    return Err(self.io(&format!("setxattr {} on {}", show(k), show(&e.path)), err))
                }
            }
        }
        Ok(())
    }

    /// Opens the directory `comps` below the root, creating implied directories; `None` from
    /// `create` false when something is missing.
    fn dir_fd(
        &mut self,
        comps: &[Vec<u8>],
        create: bool,
        entry: &[u8],
    ) -> Result<Option<OwnedFd>, ImageError> {
        if let Some((c, fd)) = &self.cache {
            if c.as_slice() == comps {
                return fd.try_clone().map(Some).map_err(|e| self.io("dup", e));
            }
        }
        let mut cur = self.root.try_clone().map_err(|e| self.io("dup", e))?;
        for (i, c) in comps.iter().enumerate() {
            match open_dir(&cur, c) {
                Ok(fd) => cur = fd,
                Err(Errno::NOENT) if create => {
                    let (mode, uid, gid, mtime) = self.implied_attrs(&comps[..=i]);
                    rustix::fs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(|e| self.io(&format!("mkdir {}", show(entry)), e))?;
                    let fd = open_dir(&cur, c)
                        .map_err(|e| self.io(&format!("open {}", show(entry)), e))?;
                    self.chown(&fd, uid as u64, gid as u64, entry)?;
                    self.defer_dir(comps[..=i].to_vec(), mode, mtime)?;
                    cur = fd;
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
                    let st = rustix::fs::statat(&cur, c.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.io(&format!("stat {}", show(entry)), e))?;
                    let ft = FileType::from_raw_mode(st.st_mode);
                    if create && is_whiteout(&st) {
                        // `.wh.d` then `d/x`: the new directory hides the lower one.
                        rustix::fs::unlinkat(&cur, c.as_slice(), AtFlags::empty())
                            .map_err(|e| self.io(&format!("unlink {}", show(entry)), e))?;
                        rustix::fs::mkdirat(&cur, c.as_slice(), Mode::from_raw_mode(0o700))
                            .map_err(|e| self.io(&format!("mkdir {}", show(entry)), e))?;
                        let fd = open_dir(&cur, c)
                            .map_err(|e| self.io(&format!("open {}", show(entry)), e))?;
                        self.set_opaque(&fd, entry)?;
                        self.defer_dir(comps[..=i].to_vec(), 0o755, None)?;
                        cur = fd;
                        continue;
                    }
                    let what = if ft == FileType::Symlink {
                        "a symlink"
                    } else {
                        "not a directory"
                    };
                    let mut p = comps[..=i].join(&b'/');
                    p.insert(0, b'/');
                    return Err(self.refuse(entry, format!("parent {} is {what}", show(&p))));
                }
                Err(e) => return Err(self.io(&format!("open parent of {}", show(entry)), e)),
            }
        }
        if create {
            let dup = cur.try_clone().map_err(|e| self.io("dup", e))?;
            self.cache = Some((comps.to_vec(), dup));
        }
        Ok(Some(cur))
    }

    fn set_opaque(&mut self, dir: impl AsFd, entry: &[u8]) -> Result<(), ImageError> {
        rustix::fs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty()).map_err(|e| {
            self.io(
                &format!(
                    "marking {} opaque ({OPAQUE_XATTR}, needs root)",
                    show(entry)
                ),
                e,
            )
        })
    }

    /// Clears the way for a new entry at `name`.
    fn prepare(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        new_is_dir: bool,
        entry: &[u8],
    ) -> Result<Prepared, ImageError> {
        let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(Prepared::Fresh),
            Err(e) => return Err(self.io(&format!("stat {}", show(entry)), e)),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if is_dir && new_is_dir {
            return Ok(Prepared::ExistingDir);
        }
        if is_dir {
            self.cache = None;
            remove_tree_at(parent.as_fd(), name, 0)
                .map_err(|e| self.io(&format!("replacing {}", show(entry)), e))?;
            return Ok(Prepared::Fresh);
        }
        rustix::fs::unlinkat(parent, name, AtFlags::empty())
            .map_err(|e| self.io(&format!("replacing {}", show(entry)), e))?;
        Ok(if is_whiteout(&st) {
            Prepared::ReplacedWhiteout
        } else {
            Prepared::Fresh
        })
    }

    fn entry<R: super::tar_reader::TarInput>(
        &mut self,
        e: &Entry,
        reader: &mut TarReader<R>,
    ) -> Result<(), ImageError> {
        let comps = clean_path(&e.path).map_err(|r| self.refuse(&e.path, r))?;
        let Some((name, parent_comps)) = comps.split_last() else {
            // The layer's root ("./").
            if e.kind == Kind::Dir {
                self.chown(
                    self.root.try_clone().map_err(|err| self.io("root", err))?,
                    e.uid,
                    e.gid,
                    &e.path,
                )?;
                let root = self.root.try_clone().map_err(|err| self.io("root", err))?;
                self.xattrs(&root, e)?;
                self.defer_dir(Vec::new(), e.mode, Some(e.mtime))?;
                return Ok(());
            }
            return Err(self.refuse(&e.path, "names the layer's root but is not a directory"));
        };
        if let Some(target) = name.strip_prefix(b".wh.") {
            let parent = self
                .dir_fd(parent_comps, true, &e.path)?
                .ok_or_else(|| self.refuse(&e.path, "no parent"))?;
            if target == b".wh..opq" {
                return self.set_opaque(&parent, &e.path);
            }
            if target.starts_with(b".wh.") {
                self.note("aufs", format!("aufs metadata {} skipped", show(&e.path)));
                return Ok(());
            }
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.refuse(&e.path, "whiteout of nothing"));
            }
            return self.whiteout(&parent, target, &e.path);
        }
        let parent = self
            .dir_fd(parent_comps, true, &e.path)?
            .ok_or_else(|| self.refuse(&e.path, "no parent"))?;
        match e.kind {
            Kind::File => self.file(&parent, name, e, reader),
            Kind::Dir => self.dir(&parent, name, &comps, e),
            Kind::Symlink => self.symlink(&parent, name, e),
            Kind::HardLink => self.hardlink(&parent, name, e),
            Kind::Char | Kind::Block | Kind::Fifo => self.node(&parent, name, e),
            Kind::Other(t) => {
                self.note(
                    &format!("type {t}"),
                    format!(
                        "member {} of unknown type {:?} skipped",
                        show(&e.path),
                        t as char
                    ),
                );
                Ok(())
            }
        }
    }

    fn whiteout(&mut self, parent: &OwnedFd, name: &[u8], entry: &[u8]) -> Result<(), ImageError> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                // This layer's own directory stays; what is below it goes.
                let d = open_dir(parent, name)
                    .map_err(|err| self.io(&format!("open {}", show(entry)), err))?;
                return self.set_opaque(&d, entry);
            }
            // This layer's own file already hides the lower one.
            Ok(_) => return Ok(()),
            Err(Errno::NOENT) => {}
            Err(err) => return Err(self.io(&format!("stat {}", show(entry)), err)),
        }
        rustix::fs::mknodat(
            parent,
            name,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|err| {
            self.io(
                &format!(
                    "creating the whiteout device for {} (needs root)",
                    show(entry)
                ),
                err,
            )
        })?;
        Ok(())
    }

    fn file<R: super::tar_reader::TarInput>(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        e: &Entry,
        reader: &mut TarReader<R>,
    ) -> Result<(), ImageError> {
        if e.size > self.limits.max_file_size {
            return Err(self.limit(format!(
                "{} is {} bytes (limit {})",
                show(&e.path),
                e.size,
                self.limits.max_file_size
            )));
        }
        let total = self.stats.bytes.saturating_add(e.size);
        if total > self.limits.max_total_size {
            return Err(self.limit(format!(
                "more than {} bytes of files",
                self.limits.max_total_size
            )));
        }
        self.prepare(parent, name, false, &e.path)?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|err| self.io(&format!("create {}", show(&e.path)), err))?;
        let mut f = File::from(fd);
        let n = io::copy(&mut reader.by_ref().take(e.size), &mut f)
            .map_err(|err| self.io(&format!("writing {}", show(&e.path)), err))?;
        if n != e.size {
            return Err(self.io(
                &format!("writing {}", show(&e.path)),
                io::Error::new(io::ErrorKind::UnexpectedEof, "archive ends inside the file"),
            ));
        }
        self.stats.bytes = total;
        self.chown(&f, e.uid, e.gid, &e.path)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(e.mode & 0o7777))
            .map_err(|err| self.io(&format!("chmod {}", show(&e.path)), err))?;
        self.xattrs(&f, e)?;
        rustix::fs::futimens(&f, &timestamps(e.mtime))
            .map_err(|err| self.io(&format!("utimens {}", show(&e.path)), err))?;
        Ok(())
    }

    fn dir(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        comps: &[Vec<u8>],
        e: &Entry,
    ) -> Result<(), ImageError> {
        let prep = self.prepare(parent, name, true, &e.path)?;
        if prep != Prepared::ExistingDir {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
                .map_err(|err| self.io(&format!("mkdir {}", show(&e.path)), err))?;
        }
        let fd = open_dir(parent, name)
            .map_err(|err| self.io(&format!("open {}", show(&e.path)), err))?;
        self.chown(&fd, e.uid, e.gid, &e.path)?;
        self.xattrs(&fd, e)?;
        if prep == Prepared::ReplacedWhiteout {
            self.set_opaque(&fd, &e.path)?;
        }
        self.defer_dir(comps.to_vec(), e.mode, Some(e.mtime))
    }

    fn symlink(&mut self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Result<(), ImageError> {
        if e.link.is_empty() || e.link.contains(&0) {
            return Err(self.refuse(&e.path, "symlink without a valid target"));
        }
        self.prepare(parent, name, false, &e.path)?;
        rustix::fs::symlinkat(e.link.as_slice(), parent, name)
            .map_err(|err| self.io(&format!("symlink {}", show(&e.path)), err))?;
        self.chown_at(parent, name, e.uid, e.gid, &e.path)?;
        if !e.xattrs.is_empty() {
            self.note(
                "symlink-xattr",
                "extended attributes on symlinks not kept".into(),
            );
        }
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(e.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| self.io(&format!("utimens {}", show(&e.path)), err))
    }

    fn hardlink(&mut self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Result<(), ImageError> {
        let target = clean_path(&e.link)
            .map_err(|r| self.refuse(&e.path, format!("hard link target: {r}")))?;
        let Some((tname, tparent)) = target.split_last() else {
            return Err(self.refuse(&e.path, "hard link to the layer's root"));
        };
        let missing = || {
            format!(
                "hard link to {} which is not a file of this layer",
                show(&e.link)
            )
        };
        let tdir = match self.dir_fd(tparent, false, &e.path) {
            Ok(Some(d)) => d,
            Ok(None) => return Err(self.refuse(&e.path, missing())),
            Err(ImageError::UnsafeEntry { reason, .. }) => {
                return Err(self.refuse(&e.path, format!("hard link target: {reason}")))
            }
            Err(err) => return Err(err),
        };
        match rustix::fs::statat(&tdir, tname.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(self.refuse(&e.path, "hard link to a directory"))
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(self.refuse(&e.path, missing())),
            Err(err) => return Err(self.io(&format!("stat {}", show(&e.link)), err)),
        }
        if target.as_slice() == clean_path(&e.path).unwrap_or_default().as_slice() {
            return Ok(());
        }
        self.prepare(parent, name, false, &e.path)?;
        rustix::fs::linkat(&tdir, tname.as_slice(), parent, name, AtFlags::empty())
            .map_err(|err| self.io(&format!("link {} to {}", show(&e.path), show(&e.link)), err))
    }

    fn node(&mut self, parent: &OwnedFd, name: &[u8], e: &Entry) -> Result<(), ImageError> {
        let ft = match e.kind {
            Kind::Char => FileType::CharacterDevice,
            Kind::Block => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        if ft != FileType::Fifo && !self.privileged {
            self.note("devices", "not root: device nodes skipped".into());
            return Ok(());
        }
        self.prepare(parent, name, false, &e.path)?;
        let dev = rustix::fs::makedev(e.dev_major, e.dev_minor);
        match rustix::fs::mknodat(parent, name, ft, Mode::from_raw_mode(0o600), dev) {
            Ok(()) => {}
            Err(Errno::PERM) if ft != FileType::Fifo => {
                self.note(
                    "devices",
                    "device nodes refused by the kernel (user namespace?): skipped".into(),
                );
                return Ok(());
            }
            Err(err) => return Err(self.io(&format!("mknod {}", show(&e.path)), err)),
        }
        self.chown_at(parent, name, e.uid, e.gid, &e.path)?;
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(e.mode & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|err| self.io(&format!("chmod {}", show(&e.path)), err))?;
        rustix::fs::utimensat(
            parent,
            name,
            &timestamps(e.mtime),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| self.io(&format!("utimens {}", show(&e.path)), err))
    }

    /// Directory modes and mtimes, now that nothing is written into them any more.
    fn finish(&mut self) -> Result<(), ImageError> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for d in &dirs {
            let fd = match self.dir_fd(&d.comps, false, b"") {
                Ok(Some(fd)) => fd,
                // Replaced by a non-directory later in the tar.
                Ok(None) | Err(ImageError::UnsafeEntry { .. }) => continue,
                Err(e) => return Err(e),
            };
            let path = show(&d.comps.join(&b'/'));
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode & 0o7777))
                .map_err(|err| self.io(&format!("chmod /{path}"), err))?;
            if let Some(t) = d.mtime {
                rustix::fs::futimens(&fd, &timestamps(t))
                    .map_err(|err| self.io(&format!("utimens /{path}"), err))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::clean_path;

    #[test]
    fn paths() {
        assert_eq!(
            clean_path(b"./a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(
            clean_path(b"/etc/passwd").unwrap(),
            vec![b"etc".to_vec(), b"passwd".to_vec()]
        );
        assert!(clean_path(b"../x").is_err());
        assert!(clean_path(b"a/../../x").is_err());
        assert!(clean_path(b"./").unwrap().is_empty());
    }
}
