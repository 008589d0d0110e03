//! The shared layer store: each layer unpacked once, keyed by its diff_id (the sha256 of its
//! uncompressed tar), so bundles from images sharing layers share their directories.
//!
//! Layout under the store root (mode 0700: layers hold setuid binaries and device nodes):
//! - `<hex>/diff/`: the layer in overlayfs format (an overlayfs lowerdir);
//! - `<hex>/layer.json`: what it is (diff_id, size, where it came from);
//! - `.tmp/`: layers being unpacked, `<hex>.<pid>.<n>`; a complete one is renamed to `<hex>`
//!   (after syncfs), so a crash never leaves a partial layer under its final name;
//! - `.lock`: imports hold it shared, `prune` exclusive.
//!
//! A layer's content depends only on its tar, except for directories the tar implies without
//! listing them: those copy their attributes from the layers below at the first unpack (docker
//! keys its layers by chain id for that reason; real layer tars list their directories).

use super::digest::Sha256Digest;
use super::rootfs::read_record;
use super::unpack::remove_tree_at;
use super::{ImageError, LayerInfo};
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const DEFAULT_STORE: &str = "/var/lib/virtkit/layers";

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerMeta {
    pub diff_id: String,
    /// Bytes of file data.
    pub size: u64,
    pub entries: u64,
    /// The blob it was unpacked from.
    pub source: String,
}

pub struct Store {
    root: PathBuf,
    root_fd: OwnedFd,
    _lock: File,
}

fn io_err(path: &Path, e: impl Into<std::io::Error>) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating) the store and takes its lock, shared or exclusive.
    pub fn open(root: &Path, exclusive: bool) -> Result<Store, ImageError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(".tmp"))
            .map_err(|e| io_err(root, e))?;
        let root = fs::canonicalize(root).map_err(|e| io_err(root, e))?;
        let root_fd = rustix::fs::open(
            &root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&root, e))?;
        let lock_path = root.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        let op = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        rustix::fs::flock(&lock, op).map_err(|e| io_err(&lock_path, e))?;
        let s = Store {
            root,
            root_fd,
            _lock: lock,
        };
        s.clean_temps(exclusive);
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn diff_dir(&self, d: &Sha256Digest) -> PathBuf {
        self.root.join(d.hex()).join("diff")
    }

    /// The layer's record when it is in the store.
    pub fn get(&self, d: &Sha256Digest) -> Option<LayerMeta> {
        let b = fs::read(self.root.join(d.hex()).join("layer.json")).ok()?;
        let m: LayerMeta = serde_json::from_slice(&b).ok()?;
        (self.diff_dir(d).is_dir() && m.diff_id == d.to_string()).then_some(m)
    }

    /// A fresh temporary layer directory (with an empty `diff/` inside).
    pub fn begin(&self, d: &Sha256Digest) -> Result<PathBuf, ImageError> {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(".tmp")
            .join(format!("{}.{}.{n}", d.hex(), std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        let diff = tmp.join("diff");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&diff)
            .map_err(|e| io_err(&diff, e))?;
        Ok(tmp)
    }

    /// Installs a complete temporary layer under its final name. `false` when another import
    /// installed the same layer meanwhile (ours is then discarded).
    pub fn commit(&self, tmp: &Path, meta: &LayerMeta) -> Result<bool, ImageError> {
        let d = Sha256Digest::parse(&meta.diff_id).map_err(ImageError::Invalid)?;
        let json = tmp.join("layer.json");
        let mut f = File::create(&json).map_err(|e| io_err(&json, e))?;
        let body =
            serde_json::to_vec_pretty(meta).map_err(|e| ImageError::Invalid(e.to_string()))?;
        f.write_all(&body).map_err(|e| io_err(&json, e))?;
        drop(f);
        // Everything on disk before the name says "complete".
        rustix::fs::syncfs(&self.root_fd).map_err(|e| io_err(&self.root, e))?;
        let rel_tmp = tmp.strip_prefix(&self.root).unwrap_or(tmp);
        match rustix::fs::renameat_with(
            &self.root_fd,
            rel_tmp,
            &self.root_fd,
            d.hex(),
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => {
                let _ = rustix::fs::fsync(&self.root_fd);
                Ok(true)
            }
            Err(Errno::EXIST) | Err(Errno::NOTEMPTY) => {
                self.abort(tmp);
                Ok(false)
            }
            Err(e) => Err(io_err(tmp, e)),
        }
    }

    /// Removes a temporary layer.
    pub fn abort(&self, tmp: &Path) {
        if let (Some(parent), Some(name)) = (tmp.parent(), tmp.file_name()) {
            if let Ok(p) = rustix::fs::open(
                parent,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                let _ = remove_tree_at(p.as_fd(), name.as_encoded_bytes(), 0);
            }
        }
    }

    /// Removes leftovers of crashed imports (all of them when we hold the lock exclusively).
    fn clean_temps(&self, all: bool) {
        let tmp = self.root.join(".tmp");
        let Ok(rd) = fs::read_dir(&tmp) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let s = name.to_string_lossy();
            let pid = s.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if all || !alive {
                self.abort(&e.path());
            }
        }
    }

    /// The layers in the store.
    pub fn list(&self) -> Result<Vec<LayerInfo>, ImageError> {
        let mut v = Vec::new();
        for e in fs::read_dir(&self.root)
            .map_err(|e| io_err(&self.root, e))?
            .flatten()
        {
            let name = e.file_name();
            let Some(d) = Sha256Digest::from_hex(&name.to_string_lossy()) else {
                continue;
            };
            if let Some(m) = self.get(&d) {
                v.push(LayerInfo {
                    diff_id: d.to_string(),
                    dir: self.diff_dir(&d),
                    reused: false,
                    size: m.size,
                });
            }
        }
        v.sort_by(|a, b| a.diff_id.cmp(&b.diff_id));
        Ok(v)
    }

    /// Removes a layer (renamed away first, so it disappears at once).
    fn remove(&self, d: &Sha256Digest) -> Result<(), ImageError> {
        let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let trash = format!(".tmp/{}.{}.{n}.prune", d.hex(), std::process::id());
        rustix::fs::renameat(&self.root_fd, d.hex(), &self.root_fd, trash.as_str())
            .map_err(|e| io_err(&self.root.join(d.hex()), e))?;
        let tmp_fd = rustix::fs::openat(
            &self.root_fd,
            ".tmp",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&self.root.join(".tmp"), e))?;
        let name = trash.trim_start_matches(".tmp/");
        remove_tree_at(tmp_fd.as_fd(), name.as_bytes(), 0)
            .map_err(|e| io_err(&self.root.join(&trash), e))
    }
}

/// The layers in a store (directory and size each).
pub fn list_layers(store: &Path) -> Result<Vec<LayerInfo>, ImageError> {
    Store::open(store, false)?.list()
}

/// Removes every layer no live bundle uses (bundles' `.virtkit/rootfs.json` say which), and
/// leftovers of interrupted imports. Returns the diff_ids removed. Holds the store's lock
/// exclusively, so it waits for running imports. A bundle whose record cannot be read stops
/// the prune (rather than deleting layers it might use).
pub fn prune(store: &Path, live_bundles: &[PathBuf]) -> Result<Vec<String>, ImageError> {
    let mut keep: HashSet<String> = HashSet::new();
    for b in live_bundles {
        let rec = read_record(b)?;
        keep.extend(rec.layers);
    }
    let s = Store::open(store, true)?;
    let mut removed = Vec::new();
    for l in s.list()? {
        if keep.contains(&l.diff_id) {
            continue;
        }
        let d = Sha256Digest::parse(&l.diff_id).map_err(ImageError::Invalid)?;
        s.remove(&d)?;
        removed.push(l.diff_id);
    }
    // Stray entries that are not complete layers (no layer.json) are leftovers too.
    for e in fs::read_dir(s.root())
        .map_err(|e| io_err(s.root(), e))?
        .flatten()
    {
        let name = e.file_name();
        if let Some(d) = Sha256Digest::from_hex(&name.to_string_lossy()) {
            if s.get(&d).is_none() && !keep.contains(&d.to_string()) {
                let _ = rustix::fs::statat(&s.root_fd, d.hex(), AtFlags::SYMLINK_NOFOLLOW)
                    .ok()
                    .map(|_| s.remove(&d));
            }
        }
    }
    Ok(removed)
}
