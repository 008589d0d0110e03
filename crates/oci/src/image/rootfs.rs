//! The bundle's rootfs: overlayfs over the store's layer directories, with the bundle's own
//! upper and work directories (`<bundle>/.virtkit/{upper,work}`). The parameters live in
//! `<bundle>/.virtkit/rootfs.json` so the rootfs can be mounted again after a reboot.
//!
//! mount(2) passes overlay's options as one string of at most a page (4 KiB here, NUL
//! included): about 40 layers with the default store path. Beyond that (or when a path holds
//! a character overlay's option syntax reserves: `:` `,` `\`) the new mount API is used
//! instead, one `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", dir)` per layer (Linux 6.8+), each
//! path its own string. (Podman's alternative, short relative symlinks under the store and a
//! chdir before mount(2), would need the mounting process to change its working directory,
//! which a library in a threaded program must not do.)

use super::ImageError;
use rustix::fs::{Mode, OFlags};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub const RECORD: &str = ".virtkit/rootfs.json";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootfsRecord {
    pub version: u32,
    pub store: PathBuf,
    /// diff_ids, bottom layer first.
    pub layers: Vec<String>,
    /// Layer directories, topmost first (overlay's lowerdir order).
    pub lowerdirs: Vec<PathBuf>,
    /// Relative to the bundle.
    pub upperdir: PathBuf,
    pub workdir: PathBuf,
    pub target: PathBuf,
}

fn io_err(path: &Path, e: impl Into<std::io::Error>) -> ImageError {
    ImageError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

pub fn read_record(bundle: &Path) -> Result<RootfsRecord, ImageError> {
    let p = bundle.join(RECORD);
    let b = fs::read(&p).map_err(|e| io_err(&p, e))?;
    let rec: RootfsRecord = serde_json::from_slice(&b).map_err(|e| ImageError::Blob {
        blob: p.display().to_string(),
        msg: e.to_string(),
    })?;
    for rel in [&rec.upperdir, &rec.workdir, &rec.target] {
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(ImageError::Blob {
                blob: p.display().to_string(),
                msg: format!("{} is not a path inside the bundle", rel.display()),
            });
        }
    }
    Ok(rec)
}

pub fn write_record(bundle: &Path, rec: &RootfsRecord) -> Result<(), ImageError> {
    let p = bundle.join(RECORD);
    let tmp = p.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(rec).map_err(|e| ImageError::Invalid(e.to_string()))?;
    fs::write(&tmp, body).map_err(|e| io_err(&tmp, e))?;
    fs::rename(&tmp, &p).map_err(|e| io_err(&p, e))
}

/// Whether something is mounted on `target` (its device differs from its parent's).
pub fn is_mounted(target: &Path) -> bool {
    let parent = target.parent().unwrap_or(Path::new("/"));
    match (fs::symlink_metadata(target), fs::metadata(parent)) {
        (Ok(t), Ok(p)) => t.dev() != p.dev(),
        _ => false,
    }
}

/// The mount(2) option string, or `None` when it cannot be one (too long, reserved chars).
pub fn legacy_options(lower: &[PathBuf], upper: &Path, work: &Path) -> Option<String> {
    let mut all: Vec<&Path> = lower.iter().map(PathBuf::as_path).collect();
    all.push(upper);
    all.push(work);
    let mut strs = Vec::new();
    for p in all {
        let s = p.to_str()?;
        if s.contains([':', ',', '\\']) {
            return None;
        }
        strs.push(s);
    }
    let (l, rest) = strs.split_at(lower.len());
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        l.join(":"),
        rest[0],
        rest[1]
    );
    (opts.len() < rustix::param::page_size()).then_some(opts)
}

/// Mounts the bundle's rootfs from its record (nothing to do when already mounted).
pub fn mount_rootfs(bundle: &Path) -> Result<(), ImageError> {
    let rec = read_record(bundle)?;
    let target = bundle.join(&rec.target);
    let upper = bundle.join(&rec.upperdir);
    let work = bundle.join(&rec.workdir);
    if is_mounted(&target) {
        return Ok(());
    }
    for d in &rec.lowerdirs {
        if !d.is_dir() {
            return Err(ImageError::Mount {
                target,
                msg: format!(
                    "a layer is missing from the store ({} does not exist: pruned?)",
                    d.display()
                ),
            });
        }
    }
    for d in [&upper, &work, &target] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(d)
            .map_err(|e| io_err(d, e))?;
    }
    if rec.lowerdirs.is_empty() {
        return Err(ImageError::Mount {
            target,
            msg: "the image has no layers".into(),
        });
    }
    match legacy_options(&rec.lowerdirs, &upper, &work) {
        Some(opts) => {
            let data =
                std::ffi::CString::new(opts).map_err(|e| ImageError::Invalid(e.to_string()))?;
            rustix::mount::mount(
                "overlay",
                &target,
                "overlay",
                MountFlags::empty(),
                data.as_c_str(),
            )
            .map_err(|e| ImageError::Mount {
                target: target.clone(),
                msg: format!(
                    "overlay mount with {} layers: {}",
                    rec.lowerdirs.len(),
                    std::io::Error::from(e)
                ),
            })
        }
        None => mount_fsconfig(&rec.lowerdirs, &upper, &work, &target),
    }
}

/// The new mount API: one `lowerdir+` per layer, no length limit on the whole.
fn mount_fsconfig(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    target: &Path,
) -> Result<(), ImageError> {
    let fail = |what: &str, e: rustix::io::Errno, fs: Option<&std::os::fd::OwnedFd>| {
        // The kernel explains fsconfig failures in messages read from the context fd.
        let mut detail = String::new();
        if let Some(fs) = fs {
            let mut buf = [0u8; 1024];
            while let Ok(n) = rustix::io::read(fs, &mut buf) {
                if n == 0 {
                    break;
                }
                detail.push_str(" [");
                detail.push_str(String::from_utf8_lossy(&buf[..n]).trim());
                detail.push(']');
            }
        }
        ImageError::Mount {
            target: target.to_path_buf(),
            msg: format!("{what}: {}{detail}", std::io::Error::from(e)),
        }
    };
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| fail("fsopen(overlay)", e, None))?;
    for l in lower {
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", l.as_path()).map_err(|e| {
            fail(
                &format!(
                    "overlay lowerdir+ {} (needs Linux 6.8+ with {} layers)",
                    l.display(),
                    lower.len()
                ),
                e,
                Some(&fs),
            )
        })?;
    }
    rustix::mount::fsconfig_set_string(&fs, "upperdir", upper)
        .map_err(|e| fail("overlay upperdir", e, Some(&fs)))?;
    rustix::mount::fsconfig_set_string(&fs, "workdir", work)
        .map_err(|e| fail("overlay workdir", e, Some(&fs)))?;
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail("overlay create", e, Some(&fs)))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| fail("fsmount", e, Some(&fs)))?;
    let cwd = rustix::fs::CWD;
    rustix::mount::move_mount(
        &mnt,
        "",
        cwd,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", e, None))
}

/// Unmounts the bundle's rootfs (nothing to do when not mounted). Lazily when busy.
pub fn unmount_rootfs(bundle: &Path) -> Result<(), ImageError> {
    let rec = read_record(bundle)?;
    let target = bundle.join(&rec.target);
    if !is_mounted(&target) {
        return Ok(());
    }
    let r = match rustix::mount::unmount(&target, UnmountFlags::empty()) {
        Err(rustix::io::Errno::BUSY) => rustix::mount::unmount(&target, UnmountFlags::DETACH),
        r => r,
    };
    r.map_err(|e| ImageError::Mount {
        target: target.clone(),
        msg: format!("unmount: {}", std::io::Error::from(e)),
    })
}

/// Creates the bundle's directories; the upper directory (the merged root's attributes come
/// from it) takes the top layer's root mode and owner.
pub fn prepare_dirs(bundle: &Path, top_root: Option<&Path>) -> Result<(), ImageError> {
    let vk = bundle.join(".virtkit");
    fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&vk)
        .map_err(|e| io_err(&vk, e))?;
    for d in ["upper", "work"] {
        let p = vk.join(d);
        fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&p)
            .map_err(|e| io_err(&p, e))?;
    }
    let rootfs = bundle.join("rootfs");
    fs::DirBuilder::new()
        .mode(0o755)
        .recursive(true)
        .create(&rootfs)
        .map_err(|e| io_err(&rootfs, e))?;
    if let Some(top) = top_root {
        let upper = vk.join("upper");
        let st = fs::metadata(top).map_err(|e| io_err(top, e))?;
        let fd = rustix::fs::open(
            &upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&upper, e))?;
        if rustix::process::geteuid().is_root() {
            rustix::fs::fchown(
                &fd,
                Some(rustix::fs::Uid::from_raw(st.uid())),
                Some(rustix::fs::Gid::from_raw(st.gid())),
            )
            .map_err(|e| io_err(&upper, e))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(st.mode() & 0o7777))
            .map_err(|e| io_err(&upper, e))?;
    }
    Ok(())
}
