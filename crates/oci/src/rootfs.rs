//! The container's root filesystem, built by its init inside the new mount namespace: the
//! rootfs bound onto itself, the config's mounts, the device nodes, then pivot_root (or
//! MS_MOVE + chroot with --no-pivot), and after that the masked and read-only paths.
//!
//! Every destination is resolved inside the rootfs with openat2(RESOLVE_IN_ROOT): a symlink
//! in the image (`/etc/x -> /`) is followed as the container would see it, never out to the
//! host, and the mount is made onto the descriptor (`/proc/self/fd/N`) we resolved, so the
//! path cannot be swapped between the check and the mount.

use crate::sys;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Errors here are reported to the user as "what: path: reason".
pub type Res<T> = std::result::Result<T, String>;

fn err(what: &str, path: &Path, e: io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// Paths inside /proc a mount may cover: what lxcfs and friends provide. Anything else under
/// /proc could hide a masked path or expose the host (runc refuses the same).
const PROC_MOUNT_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// The device nodes every container gets (runtime-spec "Default Devices").
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

pub struct Options<'a> {
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub no_pivot: bool,
    pub in_user_ns: bool,
    /// (controller directory as under /sys/fs/cgroup, host path) for `cgroup` mounts.
    pub cgroup_sources: Vec<(String, PathBuf)>,
}

/// Opens (O_PATH) `path` inside the root `root`, following symlinks as if `root` were `/`.
pub fn open_in_root(root: BorrowedFd, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    sys::openat2(
        root,
        &rel,
        flags as u64,
        0,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )
}

/// `path` without its root and `.`; `..` kept for openat2 to clamp at the root.
fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| {
            !matches!(
                c,
                Component::RootDir | Component::CurDir | Component::Prefix(_)
            )
        })
        .collect()
}

/// Makes every directory of `path` inside `root` (like mkdir -p, each level resolved in the
/// root) and returns the last one opened O_PATH.
pub fn mkdir_all_in_root(root: BorrowedFd, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let mut prefix = PathBuf::new();
    let mut cur = open_in_root(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY)?;
    for comp in rel.components() {
        prefix.push(comp);
        match open_in_root(root, &prefix, libc::O_PATH | libc::O_DIRECTORY) {
            Ok(fd) => cur = fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let name = comp.as_os_str();
                match sys::mkdirat(cur.as_fd(), name, mode) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                cur = open_in_root(root, &prefix, libc::O_PATH | libc::O_DIRECTORY)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(cur)
}

/// Makes an empty file at `path` inside `root` (parents too) unless something is there, and
/// opens it O_PATH: the mount point for a bind mount of a file or a device.
fn touch_in_root(root: BorrowedFd, path: &Path) -> io::Result<OwnedFd> {
    if let Ok(fd) = open_in_root(root, path, libc::O_PATH) {
        return Ok(fd);
    }
    let parent = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = mkdir_all_in_root(root, parent, 0o755)?;
    let _ = sys::openat2(
        dir.as_fd(),
        Path::new(name),
        (libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW) as u64,
        0o644,
        RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    )?;
    open_in_root(root, path, libc::O_PATH)
}

/// Where a descriptor really is (for the /proc check after symlinks were followed).
fn real_path(fd: BorrowedFd) -> io::Result<PathBuf> {
    std::fs::read_link(sys::fd_path(fd))
}

/// The path as seen inside the container: `real` minus the rootfs prefix.
fn container_path(real: &Path, rootfs: &Path) -> PathBuf {
    match real.strip_prefix(rootfs) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => real.to_path_buf(),
    }
}

#[derive(Default, Debug)]
pub struct MountFlags {
    pub flags: libc::c_ulong,
    /// Flags cleared by options like `rw`, `dev`, `suid` (only matter on remount).
    pub clear: libc::c_ulong,
    pub propagation: Vec<libc::c_ulong>,
    pub data: Vec<String>,
    pub bind: bool,
    pub rec: bool,
}

/// Splits mount options into flags, propagation and the filesystem's data string, with the
/// names mount(8) uses.
pub fn parse_options(opts: &[String]) -> Res<MountFlags> {
    let mut m = MountFlags::default();
    for o in opts {
        let (set, clear): (libc::c_ulong, libc::c_ulong) = match o.as_str() {
            "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "remount" => (libc::MS_REMOUNT, 0),
            "mand" => (libc::MS_MANDLOCK, 0),
            "nomand" => (0, libc::MS_MANDLOCK),
            "atime" => (0, libc::MS_NOATIME),
            "noatime" => (libc::MS_NOATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            "silent" => (libc::MS_SILENT, 0),
            "loud" => (0, libc::MS_SILENT),
            "bind" => {
                m.bind = true;
                (0, 0)
            }
            "rbind" => {
                m.bind = true;
                m.rec = true;
                (0, 0)
            }
            "private" => {
                m.propagation.push(libc::MS_PRIVATE);
                (0, 0)
            }
            "rprivate" => {
                m.propagation.push(libc::MS_PRIVATE | libc::MS_REC);
                (0, 0)
            }
            "shared" => {
                m.propagation.push(libc::MS_SHARED);
                (0, 0)
            }
            "rshared" => {
                m.propagation.push(libc::MS_SHARED | libc::MS_REC);
                (0, 0)
            }
            "slave" => {
                m.propagation.push(libc::MS_SLAVE);
                (0, 0)
            }
            "rslave" => {
                m.propagation.push(libc::MS_SLAVE | libc::MS_REC);
                (0, 0)
            }
            "unbindable" => {
                m.propagation.push(libc::MS_UNBINDABLE);
                (0, 0)
            }
            "runbindable" => {
                m.propagation.push(libc::MS_UNBINDABLE | libc::MS_REC);
                (0, 0)
            }
            "idmap" | "ridmap" => {
                return Err(format!(
                    "mount option {o} (id-mapped mounts) is not supported yet"
                ))
            }
            _ => {
                m.data.push(o.clone());
                (0, 0)
            }
        };
        m.flags = (m.flags | set) & !clear;
        m.clear |= clear;
    }
    Ok(m)
}

/// The propagation flag of `rootfsPropagation` (runc's default: rslave).
pub fn propagation_flag(name: Option<&str>) -> Res<libc::c_ulong> {
    Ok(match name.unwrap_or("") {
        "" | "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        other => {
            return Err(format!(
                "rootfsPropagation {other:?} is not a propagation mode"
            ))
        }
    })
}

/// Everything before pivot_root: propagation, the rootfs bind, mounts, devices.
pub fn prepare(spec: &Spec, o: &Options) -> Res<()> {
    let linux = spec.linux().as_ref();
    let prop = propagation_flag(linux.and_then(|l| l.rootfs_propagation().as_deref()))?;
    // Our copy of the host's mounts must not propagate back (rslave unless asked otherwise).
    sys::mount(None, Path::new("/"), None, prop, None)
        .map_err(|e| err("making / ", Path::new("/"), e))?;
    // pivot_root needs the new root to be a mount point whose parent is not shared.
    make_parent_private(o.rootfs)?;
    sys::mount(
        Some(o.rootfs.as_os_str()),
        o.rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| err("bind-mounting the rootfs", o.rootfs, e))?;
    let root = sys::open(o.rootfs, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|e| err("opening the rootfs", o.rootfs, e))?;

    let mounts = spec.mounts().clone().unwrap_or_default();
    for m in &mounts {
        mount_one(root.as_fd(), m, o)?;
    }
    let dev_bound = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && m.options()
                .as_ref()
                .is_some_and(|opts| opts.iter().any(|x| x == "bind" || x == "rbind"))
    });
    if !dev_bound {
        create_devices(root.as_fd(), linux.and_then(|l| l.devices().as_ref()), o)?;
        default_symlinks(root.as_fd())?;
    }
    Ok(())
}

fn make_parent_private(rootfs: &Path) -> Res<()> {
    // Walk up to the mount point containing rootfs (from /proc/self/mountinfo) and make it
    // private when it is shared.
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| err("reading", Path::new("/proc/self/mountinfo"), e))?;
    let mut best: Option<(&str, bool)> = None;
    for line in info.lines() {
        let mut f = line.split(' ');
        let mp = f.nth(4).unwrap_or("");
        let optional: Vec<&str> = f.skip(1).take_while(|x| *x != "-").collect();
        let shared = optional.iter().any(|x| x.starts_with("shared:"));
        let mp_path = Path::new(mp);
        if rootfs.starts_with(mp_path) && best.is_none_or(|(b, _)| mp.len() >= b.len()) {
            best = Some((mp, shared));
        }
    }
    if let Some((mp, true)) = best {
        sys::mount(None, Path::new(mp), None, libc::MS_PRIVATE, None)
            .map_err(|e| err("making private", Path::new(mp), e))?;
    }
    Ok(())
}

fn mount_one(root: BorrowedFd, m: &Mount, o: &Options) -> Res<()> {
    let dest = m.destination();
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = parse_options(m.options().as_deref().unwrap_or(&[]))?;
    let bind = opts.bind || typ == "bind";
    let source = m.source().clone().unwrap_or_default();
    let source = if bind && source.is_relative() {
        o.bundle.join(source)
    } else {
        source
    };

    if typ == "cgroup" {
        return mount_cgroup(root, dest, &opts, o);
    }

    // The mount point: a file for a bind of a non-directory, a directory otherwise.
    let source_is_file = bind
        && std::fs::metadata(&source)
            .map(|md| !md.is_dir())
            .unwrap_or(false);
    let target = if source_is_file {
        touch_in_root(root, dest)
    } else {
        mkdir_all_in_root(root, dest, 0o755)
    }
    .map_err(|e| err("creating mount point", dest, e))?;

    // Where did that land after symlinks? Not anywhere in /proc but the allowed files.
    let real = real_path(target.as_fd()).map_err(|e| err("resolving", dest, e))?;
    let inside = container_path(&real, o.rootfs);
    if inside.starts_with("/proc") {
        let ok = (inside == Path::new("/proc") && typ == "proc")
            || (bind && PROC_MOUNT_ALLOWED.iter().any(|p| inside == Path::new(p)));
        if !ok {
            return Err(format!(
                "mount destination {} (resolved to {}) is inside /proc: refused, it could \
                 defeat masked paths",
                dest.display(),
                inside.display()
            ));
        }
    }
    let tpath = sys::fd_path(target.as_fd());
    let data = opts.data.join(",");
    let data = (!data.is_empty()).then_some(data.as_str());

    if bind {
        let flags = libc::MS_BIND | if opts.rec { libc::MS_REC } else { 0 };
        sys::mount(Some(source.as_os_str()), &tpath, None, flags, None)
            .map_err(|e| err("bind-mounting", &source, e))?;
        // Flags on a bind mount take a remount; in a user namespace the flags the host
        // locked (nosuid, nodev, noexec) must be kept or the kernel refuses.
        let remount = opts.flags & !(libc::MS_REMOUNT);
        if remount != 0 {
            let mounted = reopen(root, dest)?;
            let mpath = sys::fd_path(mounted.as_fd());
            let locked = if o.in_user_ns {
                locked_flags(&mpath)
            } else {
                0
            };
            sys::mount(
                None,
                &mpath,
                None,
                libc::MS_REMOUNT | libc::MS_BIND | remount | locked,
                None,
            )
            .map_err(|e| err("remounting", dest, e))?;
        }
    } else {
        let src = if source.as_os_str().is_empty() {
            OsStr::new(typ)
        } else {
            source.as_os_str()
        };
        let r = sys::mount(Some(src), &tpath, Some(typ), opts.flags, data);
        match r {
            Ok(()) => {}
            // sysfs cannot be mounted in a user namespace that does not own the network
            // namespace: bind the host's read-only instead, as runc does.
            Err(e) if typ == "sysfs" && e.raw_os_error() == Some(libc::EPERM) => {
                sys::mount(
                    Some(OsStr::new("/sys")),
                    &tpath,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map_err(|e| err("bind-mounting /sys on", dest, e))?;
                let mounted = reopen(root, dest)?;
                let mpath = sys::fd_path(mounted.as_fd());
                let locked = locked_flags(&mpath);
                let _ = sys::mount(
                    None,
                    &mpath,
                    None,
                    libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | locked,
                    None,
                );
            }
            Err(e) => return Err(format!("mounting {typ} on {}: {e}", dest.display())),
        }
    }
    if !opts.propagation.is_empty() {
        let mounted = reopen(root, dest)?;
        let mpath = sys::fd_path(mounted.as_fd());
        for p in &opts.propagation {
            sys::mount(None, &mpath, None, *p, None)
                .map_err(|e| err("setting propagation of", dest, e))?;
        }
    }
    Ok(())
}

/// The destination opened again after something was mounted on it: the descriptor used
/// for the mount still names the covered mount point, and a remount or propagation change
/// through it would hit the mount underneath (EINVAL for a bind's remount, or the rootfs's
/// own propagation changed).
fn reopen(root: BorrowedFd, dest: &Path) -> Res<OwnedFd> {
    open_in_root(root, dest, libc::O_PATH).map_err(|e| err("opening the new mount", dest, e))
}

fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(c) = sys::cstr(path) else { return 0 };
    // SAFETY: statvfs into a zeroed struct with a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    let mut f = 0;
    for (st_flag, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            f |= ms;
        }
    }
    f
}

/// A `cgroup` mount: a tmpfs holding, per hierarchy, a bind of this container's own cgroup
/// (v1 and hybrid), or the container's cgroup2 directory bound at the destination (pure v2).
fn mount_cgroup(root: BorrowedFd, dest: &Path, opts: &MountFlags, o: &Options) -> Res<()> {
    let target = mkdir_all_in_root(root, dest, 0o755).map_err(|e| err("creating", dest, e))?;
    let tpath = sys::fd_path(target.as_fd());
    let ro = opts.flags & libc::MS_RDONLY;
    let base = opts.flags & (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    let pure_v2 = o.cgroup_sources.len() == 1 && o.cgroup_sources[0].0.is_empty();
    if o.cgroup_sources.is_empty() {
        return Ok(());
    }
    if pure_v2 {
        let src = &o.cgroup_sources[0].1;
        sys::mount(
            Some(src.as_os_str()),
            &tpath,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| err("bind-mounting", src, e))?;
        let _ = sys::mount(
            None,
            &tpath,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | base | ro,
            None,
        );
        return Ok(());
    }
    sys::mount(
        Some(OsStr::new("tmpfs")),
        &tpath,
        Some("tmpfs"),
        base,
        Some("mode=755"),
    )
    .map_err(|e| err("mounting tmpfs on", dest, e))?;
    let dir = open_in_root(root, dest, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| err("opening", dest, e))?;
    for (name, src) in &o.cgroup_sources {
        if name.is_empty() || name.contains('/') {
            continue;
        }
        if !src.exists() {
            continue;
        }
        let sub = dest.join(name);
        let fd = mkdir_all_in_root(root, &sub, 0o755).map_err(|e| err("creating", &sub, e))?;
        let p = sys::fd_path(fd.as_fd());
        sys::mount(
            Some(src.as_os_str()),
            &p,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| err("bind-mounting", src, e))?;
        let _ = sys::mount(
            None,
            &p,
            None,
            libc::MS_REMOUNT | libc::MS_BIND | base | ro,
            None,
        );
        // cpu -> cpu,cpuacct and friends, as on the host.
        if name.contains(',') {
            for part in name.split(',') {
                let _ = sys::symlinkat(OsStr::new(name), dir.as_fd(), OsStr::new(part));
            }
        }
    }
    if ro != 0 {
        let _ = sys::mount(
            None,
            &tpath,
            None,
            libc::MS_REMOUNT | base | ro,
            Some("mode=755"),
        );
    }
    Ok(())
}

fn create_devices(root: BorrowedFd, devices: Option<&Vec<LinuxDevice>>, o: &Options) -> Res<()> {
    // SAFETY: umask only changes this process's mask; we restore it below.
    let old = unsafe { libc::umask(0) };
    let r = (|| {
        for (path, major, minor) in DEFAULT_DEVICES {
            let user_given = devices.is_some_and(|d| d.iter().any(|x| x.path() == Path::new(path)));
            if !user_given {
                make_device(root, Path::new(path), 'c', *major, *minor, 0o666, 0, 0, o)?;
            }
        }
        for d in devices.into_iter().flatten() {
            let kind = match d.typ() {
                LinuxDeviceType::C | LinuxDeviceType::U => 'c',
                LinuxDeviceType::B => 'b',
                LinuxDeviceType::P => 'p',
                LinuxDeviceType::A => {
                    return Err(format!(
                        "device {}: type \"a\" is not a device",
                        d.path().display()
                    ))
                }
            };
            if !d.path().starts_with("/dev") {
                return Err(format!("device {} is not under /dev", d.path().display()));
            }
            let (major, minor) = (d.major(), d.minor());
            if major < 0 || minor < 0 || major > 0xfff || minor > 0xfffff {
                return Err(format!(
                    "device {}: bad major:minor {major}:{minor}",
                    d.path().display()
                ));
            }
            make_device(
                root,
                d.path(),
                kind,
                major as u64,
                minor as u64,
                d.file_mode().unwrap_or(0o666) & 0o7777,
                d.uid().unwrap_or(0),
                d.gid().unwrap_or(0),
                o,
            )?;
        }
        Ok(())
    })();
    // SAFETY: restores the mask saved above.
    unsafe { libc::umask(old) };
    r
}

#[allow(clippy::too_many_arguments)]
fn make_device(
    root: BorrowedFd,
    path: &Path,
    kind: char,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    o: &Options,
) -> Res<()> {
    let parent = path.parent().unwrap_or(Path::new("/dev"));
    let name = path.file_name().unwrap_or_default();
    let dir = mkdir_all_in_root(root, parent, 0o755).map_err(|e| err("creating", parent, e))?;
    if o.in_user_ns {
        // No mknod in a user namespace: bind the host's node onto an empty file.
        let host = Path::new("/").join(path.strip_prefix("/").unwrap_or(path));
        let host_ok = std::fs::metadata(&host).is_ok_and(|md| {
            use std::os::unix::fs::MetadataExt;
            let rdev = md.rdev();
            libc::major(rdev) as u64 == major && libc::minor(rdev) as u64 == minor
        });
        if !host_ok {
            return Err(format!(
                "device {}: cannot create it in a user namespace (no host node {major}:{minor} to bind)",
                path.display()
            ));
        }
        let target = touch_in_root(root, path).map_err(|e| err("creating", path, e))?;
        sys::mount(
            Some(host.as_os_str()),
            &sys::fd_path(target.as_fd()),
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(|e| err("bind-mounting device", path, e))?;
        return Ok(());
    }
    let fmt = match kind {
        'c' => libc::S_IFCHR,
        'b' => libc::S_IFBLK,
        _ => libc::S_IFIFO,
    };
    let dev = libc::makedev(major as u32, minor as u32);
    match sys::mknodat(dir.as_fd(), name, fmt | mode, dev) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            // An image may ship /dev/null as a plain file: replace nothing, but refuse to
            // silently leave a non-device where a device was asked for.
            let fd = open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW)
                .map_err(|e| err("opening", path, e))?;
            let real = std::fs::metadata(sys::fd_path(fd.as_fd())).ok();
            use std::os::unix::fs::FileTypeExt;
            if !real.is_some_and(|m| {
                m.file_type().is_char_device()
                    || m.file_type().is_block_device()
                    || m.file_type().is_fifo()
            }) {
                return Err(format!(
                    "device {}: a non-device file is in the way",
                    path.display()
                ));
            }
            return Ok(());
        }
        Err(e) => return Err(err("mknod", path, e)),
    }
    let fd = open_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW)
        .map_err(|e| err("opening", path, e))?;
    // fchown on an O_PATH descriptor is refused; go through its /proc path (same object).
    let p = sys::cstr(sys::fd_path(fd.as_fd())).map_err(|e| err("device", path, e))?;
    // SAFETY: valid C string; chown of the node we just made.
    if unsafe { libc::chown(p.as_ptr(), uid, gid) } != 0 {
        return Err(err("chown", path, io::Error::last_os_error()));
    }
    Ok(())
}

fn default_symlinks(root: BorrowedFd) -> Res<()> {
    let dev = match open_in_root(root, Path::new("/dev"), libc::O_PATH | libc::O_DIRECTORY) {
        Ok(d) => d,
        Err(_) => return Ok(()),
    };
    // /dev/core only where the kernel has /proc/kcore (CONFIG_PROC_KCORE), as runc does:
    // a dangling link otherwise.
    let kcore = Path::new("/proc/kcore").exists();
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        if name == "core" && !kcore {
            continue;
        }
        match sys::symlinkat(OsStr::new(target), dev.as_fd(), OsStr::new(name)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(err("symlink", &Path::new("/dev").join(name), e)),
        }
    }
    // /dev/ptmx -> pts/ptmx when a devpts is mounted at /dev/pts.
    if open_in_root(root, Path::new("/dev/pts/ptmx"), libc::O_PATH).is_ok() {
        let _ = std::fs::remove_file(sys::fd_path(dev.as_fd()).join("ptmx"));
        let _ = sys::symlinkat(OsStr::new("pts/ptmx"), dev.as_fd(), OsStr::new("ptmx"));
    }
    Ok(())
}

/// pivot_root into the rootfs and detach the old root; or, with --no-pivot, move the rootfs
/// over / and chroot (for ramfs roots where pivot_root is impossible).
pub fn enter(rootfs: &Path, no_pivot: bool) -> Res<()> {
    if no_pivot {
        sys::chdir(rootfs).map_err(|e| err("chdir", rootfs, e))?;
        sys::mount(
            Some(OsStr::new(".")),
            Path::new("/"),
            None,
            libc::MS_MOVE,
            None,
        )
        .map_err(|e| err("moving the rootfs to", Path::new("/"), e))?;
        sys::chroot(Path::new(".")).map_err(|e| err("chroot", rootfs, e))?;
        sys::chdir(Path::new("/")).map_err(|e| err("chdir", Path::new("/"), e))?;
        return Ok(());
    }
    let old = sys::open(Path::new("/"), libc::O_DIRECTORY | libc::O_RDONLY, 0)
        .map_err(|e| err("opening", Path::new("/"), e))?;
    let new = sys::open(rootfs, libc::O_DIRECTORY | libc::O_RDONLY, 0)
        .map_err(|e| err("opening", rootfs, e))?;
    sys::fchdir(new.as_fd()).map_err(|e| err("chdir", rootfs, e))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one, then unmounted; no
    // directory is needed in the image for it.
    sys::pivot_root(Path::new("."), Path::new(".")).map_err(|e| err("pivot_root", rootfs, e))?;
    sys::fchdir(old.as_fd()).map_err(|e| err("chdir", Path::new("(old root)"), e))?;
    // Keep the unmount of the old root from propagating to the host.
    sys::mount(
        None,
        Path::new("."),
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
    )
    .map_err(|e| err("making the old root a slave", Path::new("."), e))?;
    sys::umount2(Path::new("."), libc::MNT_DETACH)
        .map_err(|e| err("unmounting the old root", Path::new("."), e))?;
    sys::chdir(Path::new("/")).map_err(|e| err("chdir", Path::new("/"), e))?;
    Ok(())
}

/// Without a mount namespace: only chroot (runc refuses a rootfs without one; we allow it
/// for configs that join the host's mount namespace on purpose).
pub fn chroot_only(rootfs: &Path) -> Res<()> {
    sys::chroot(rootfs).map_err(|e| err("chroot", rootfs, e))?;
    sys::chdir(Path::new("/")).map_err(|e| err("chdir", Path::new("/"), e))
}

/// After pivot_root: read-only paths, then masked ones (a masked path inside a read-only
/// one still gets masked), then the root made read-only when asked.
pub fn finalize(spec: &Spec) -> Res<()> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(Path::new(p))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        let locked = locked_flags(Path::new("/"));
        sys::mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | locked,
            None,
        )
        .map_err(|e| err("making the root read-only", Path::new("/"), e))?;
    }
    Ok(())
}

fn readonly_path(p: &Path) -> Res<()> {
    match sys::mount(
        Some(p.as_os_str()),
        p,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    ) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(err("bind-mounting read-only path", p, e)),
    }
    let locked = locked_flags(p);
    sys::mount(
        None,
        p,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | locked,
        None,
    )
    .map_err(|e| err("remounting read-only", p, e))
}

fn mask_path(p: &Path) -> Res<()> {
    let md = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if md.is_dir() {
        sys::mount(
            Some(OsStr::new("tmpfs")),
            p,
            Some("tmpfs"),
            libc::MS_RDONLY,
            None,
        )
        .map_err(|e| err("masking", p, e))
    } else {
        match sys::mount(Some(OsStr::new("/dev/null")), p, None, libc::MS_BIND, None) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(err("masking", p, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let o = parse_options(&[
            "ro".into(),
            "nosuid".into(),
            "rbind".into(),
            "rprivate".into(),
            "mode=755".into(),
        ])
        .unwrap();
        assert!(o.bind && o.rec);
        assert_eq!(o.flags, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(o.propagation, vec![libc::MS_PRIVATE | libc::MS_REC]);
        assert_eq!(o.data, vec!["mode=755".to_string()]);
        let o = parse_options(&["ro".into(), "rw".into()]).unwrap();
        assert_eq!(o.flags, 0);
        assert!(parse_options(&["idmap".into()]).is_err());
    }

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/./b/../c")),
            PathBuf::from("a/b/../c")
        );
        assert_eq!(
            container_path(Path::new("/r/proc/x"), Path::new("/r")),
            PathBuf::from("/proc/x")
        );
    }
}
