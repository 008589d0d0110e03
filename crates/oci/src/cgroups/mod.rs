//! cgroups: v1, v2 and the hybrid layout (v1 controllers under /sys/fs/cgroup/<ctrl> and the
//! unified hierarchy at /sys/fs/cgroup/unified, which crun 1.8 refuses); resources, device
//! rules (v1 lists, v2 eBPF), freezer, statistics, OOM kills.
//!
//! The `Manager` is created from the config (`new`), stored in the container's state (it is
//! serializable: absolute directories per hierarchy), and used by every later command.
//! In the hybrid layout the process is placed in every v1 hierarchy (named ones such as
//! name=systemd included, as runc does) and in the v2 cgroup too, so both `cgroup.procs`
//! list it; limits go to the v1 controller when it is mounted as v1, to v2 otherwise (see
//! resources.rs). Written by hand on std and libc: the cgroup crates (cgroups-rs, libcgroups)
//! either lack the hybrid layout or bring systemd/D-Bus and a BPF loader with them.

pub mod devices;
pub mod files;
pub mod mounts;
pub mod path;
pub mod resources;
pub mod stats;
pub mod v1;
pub mod v2;

use files::{CgroupDir, Dir};
use mounts::Hierarchies;
use oci_spec::runtime::LinuxResources;
use path::Inner;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use stats::Stats;

/// What was ignored while writing resources (kernel memory, v1-only knobs on v2...): for the
/// runtime to log as warnings.
pub type Notes = Vec<String>;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: {0}")]
    Invalid(String),
    #[error("cgroup: controller {controller} is not available ({detail})")]
    NotAvailable { controller: String, detail: String },
    #[error(
        "cgroup: cannot set {controller} limits: the container could not create or join {path} \
         (rootless without a delegated cgroup?)",
        path = path.display()
    )]
    NotJoined { controller: String, path: PathBuf },
    #[error("cgroup: cgroupsPath {path:?} escapes its base cgroup ('..' above the root)")]
    PathEscape { path: String },
    #[error("cgroup: {key}: {value}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("cgroup: {0}")]
    Unsupported(String),
    #[error("cgroup: {0}")]
    Systemd(String),
    #[error("cgroup: {op} {path}: {source}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cgroup: writing {value:?} to {path}: {source}", path = path.display())]
    Write {
        path: PathBuf,
        value: String,
        source: std::io::Error,
    },
    #[error("cgroup: {path}: malformed content: {detail}", path = path.display())]
    Parse { path: PathBuf, detail: String },
    #[error(
        "cgroup: unable to set memory limit to {limit} (current usage: {usage}, peak usage: {peak})"
    )]
    MemoryBusy { limit: i64, usage: u64, peak: u64 },
    #[error("cgroup: no cgroup filesystem is mounted (no cgroup or cgroup2 entry in /proc/self/mountinfo)")]
    NoCgroupFs,
    #[error("cgroup: {0}")]
    Freeze(String),
    #[error(
        "cgroup: bpf: {op} {path}: {source}{}",
        if log.is_empty() { String::new() } else { format!(" (verifier: {log})") },
        path = path.display()
    )]
    Bpf {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
        log: String,
    },
}

/// How this host mounts cgroups.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// cgroup v1 hierarchies only.
    V1,
    /// cgroup2 only (the unified hierarchy).
    V2,
    /// v1 controllers plus a cgroup2 mount (/sys/fs/cgroup/unified).
    Hybrid,
}

/// The layout of this host (from /proc/self/mountinfo).
pub fn detect() -> Result<Layout, CgroupError> {
    Hierarchies::discover()?.layout()
}

/// Whether systemd runs this host (runc's test: /run/systemd/system exists).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The container's cgroup in one v1 hierarchy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct V1Dir {
    /// The hierarchy's controllers ("cpu", "cpuacct"; "name=systemd" for the named one).
    pub controllers: Vec<String>,
    pub mountpoint: PathBuf,
    /// The container's cgroup.
    pub dir: PathBuf,
}

/// The container's cgroup in the v2 hierarchy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct V2Dir {
    pub mountpoint: PathBuf,
    pub dir: PathBuf,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manager {
    layout: Layout,
    id: String,
    inner: Inner,
    /// cgroupsPath was given (runc tolerates rootless permission errors only without one).
    explicit: bool,
    rootless: bool,
    v1: Vec<V1Dir>,
    v2: Option<V2Dir>,
}

impl Manager {
    /// `cgroups_path`: linux.cgroupsPath (None if absent); `systemd`: --systemd-cgroup was
    /// given (an error unless systemd runs this host; with systemd the slice:prefix:name path
    /// is still placed on cgroupfs directly, without asking systemd over D-Bus); `rootless`:
    /// permission errors creating or joining cgroups are tolerated when no cgroupsPath was
    /// given, as runc does. Nothing is created here.
    pub fn new(
        cgroups_path: Option<&str>,
        id: &str,
        systemd: bool,
        rootless: bool,
    ) -> Result<Manager, CgroupError> {
        if systemd && !systemd_running() {
            let pid1 = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
            return Err(CgroupError::Systemd(format!(
                "--systemd-cgroup: systemd is not running on this host (PID 1 is {:?}); run \
                 without --systemd-cgroup (a \"slice:prefix:name\" cgroupsPath is then placed \
                 on cgroupfs where systemd would put it)",
                pid1.trim()
            )));
        }
        let inner = path::resolve(cgroups_path, id, systemd)?;
        let explicit = cgroups_path.is_some_and(|p| !p.is_empty());
        Manager::with_hierarchies(&Hierarchies::discover()?, inner, id, explicit, rootless)
    }

    /// A manager over the given hierarchies (tests point it at a private cgroup2 mount).
    pub fn with_hierarchies(
        h: &Hierarchies,
        inner: Inner,
        id: &str,
        explicit: bool,
        rootless: bool,
    ) -> Result<Manager, CgroupError> {
        let layout = h.layout()?;
        let place = |m: &mounts::Mount, parent_of_own: bool| -> Result<PathBuf, CgroupError> {
            let base = match &inner {
                Inner::Absolute(_) => m.mountpoint.clone(),
                Inner::Relative(_) => {
                    let own = h.own_dir(m).unwrap_or_else(|| m.mountpoint.clone());
                    if parent_of_own && own != m.mountpoint {
                        own.parent().map(Path::to_path_buf).unwrap_or(own)
                    } else {
                        own
                    }
                }
            };
            let dir = base.join(inner.as_str());
            // `inner` is clean and non-empty: this only guards the invariant.
            if !dir.starts_with(&m.mountpoint) || dir == m.mountpoint {
                return Err(CgroupError::PathEscape {
                    path: inner.to_string(),
                });
            }
            Ok(dir)
        };
        let mut v1 = Vec::new();
        // Named hierarchies other than name=systemd belong to whoever made them (runc joins
        // only that one too).
        let joined = h.v1.iter().filter(|m| {
            m.controllers
                .iter()
                .any(|c| !c.starts_with("name=") || c == "name=systemd")
        });
        for m in joined {
            v1.push(V1Dir {
                controllers: m.controllers.clone(),
                mountpoint: m.mountpoint.clone(),
                dir: place(m, false)?,
            });
        }
        let v2 = match &h.v2 {
            // Pure v2: runc uses the parent of its own cgroup (which holds the runtime
            // itself, so no controller could be delegated below it); hybrid: runc's v1 code
            // joins the unified hierarchy like any other, under its own cgroup.
            Some(m) if layout != Layout::V1 => Some(V2Dir {
                mountpoint: m.mountpoint.clone(),
                dir: place(m, layout == Layout::V2)?,
            }),
            _ => None,
        };
        Ok(Manager {
            layout,
            id: id.to_string(),
            inner,
            explicit,
            rootless,
            v1,
            v2,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's cgroup per controller (runc's cgroup_paths: "memory", "cpu", ...,
    /// "name=systemd"; "" for the v2 cgroup).
    pub fn paths(&self) -> BTreeMap<String, PathBuf> {
        let mut m = BTreeMap::new();
        for h in &self.v1 {
            for c in &h.controllers {
                m.insert(c.clone(), h.dir.clone());
            }
        }
        if let Some(v2) = &self.v2 {
            m.insert(String::new(), v2.dir.clone());
        }
        m
    }

    /// The v2 cgroup directory, if the host has a v2 hierarchy.
    pub fn v2_dir(&self) -> Option<&Path> {
        self.v2.as_ref().map(|v| v.dir.as_path())
    }

    /// The container's directory in the v1 hierarchy of `controller`.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
            .map(|h| h.dir.as_path())
    }

    fn dirs(&self) -> (Vec<(Vec<String>, Dir)>, Option<Dir>) {
        (
            self.v1
                .iter()
                .map(|h| (h.controllers.clone(), Dir::new(&h.dir)))
                .collect(),
            self.v2.as_ref().map(|v| Dir::new(&v.dir)),
        )
    }

    fn with_target<T>(&self, f: impl FnOnce(&resources::Target) -> T) -> T {
        let (v1, v2) = self.dirs();
        let mut list: Vec<(&str, &dyn CgroupDir)> = Vec::new();
        for (ctrls, d) in &v1 {
            for c in ctrls {
                list.push((c.as_str(), d as &dyn CgroupDir));
            }
        }
        let t = resources::Target {
            layout: self.layout,
            v1: list,
            v2: v2.as_ref().map(|d| d as &dyn CgroupDir),
            v2_mount: self.v2.as_ref().map(|v| v.mountpoint.as_path()),
            rootless: self.rootless,
        };
        f(&t)
    }

    fn tolerated(&self, e: &std::io::Error) -> bool {
        self.rootless
            && !self.explicit
            && matches!(
                e.raw_os_error(),
                Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS)
            )
    }

    /// Creates the cgroup directories, writes the limits, moves `pid` in (every hierarchy).
    /// On an error the caller destroys what was created (`destroy`).
    pub fn apply(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        self.apply_noting(pid, resources).map(|_| ())
    }

    /// `apply`, returning what was ignored (to log as warnings).
    pub fn apply_noting(
        &self,
        pid: i32,
        resources: Option<&LinuxResources>,
    ) -> Result<Notes, CgroupError> {
        if let Some(r) = resources {
            // Before anything is created: a bad value leaves no trace.
            resources::validate(r)?;
        }
        self.create()?;
        let notes = match resources {
            Some(r) => self.with_target(|t| resources::set_resources(t, r))?,
            None => Notes::new(),
        };
        self.add_pid(pid)?;
        Ok(notes)
    }

    /// `apply` without moving a process: the directories and the limits, so that the
    /// container's process can be moved in later (`add_pid`) while it sets itself up.
    pub fn prepare(&self, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        if let Some(r) = resources {
            resources::validate(r)?;
        }
        self.create()?;
        if let Some(r) = resources {
            self.with_target(|t| resources::set_resources(t, r))?;
        }
        Ok(())
    }

    /// Creates the directories (all levels), with a v1 cpuset's cpus/mems copied from its
    /// parent at each level, and the v2 controllers enabled in each ancestor.
    fn create(&self) -> Result<(), CgroupError> {
        for h in &self.v1 {
            let cpuset = h.controllers.iter().any(|c| c == "cpuset");
            match mkdir_levels(&h.mountpoint, &h.dir, &mut |parent, child| {
                if cpuset {
                    v1::copy_cpuset_from_parent(&Dir::new(child), &Dir::new(parent))?;
                }
                Ok(())
            }) {
                Err(MkdirError::Io(e, _)) if self.tolerated(&e) => continue,
                Err(MkdirError::Io(source, path)) => {
                    return Err(CgroupError::Io {
                        op: "creating",
                        path,
                        source,
                    })
                }
                Err(MkdirError::Cgroup(e)) => return Err(e),
                Ok(()) => {}
            }
        }
        if let Some(v) = &self.v2 {
            match mkdir_levels(&v.mountpoint, &v.dir, &mut |parent, _child| {
                // Before the child exists would be too late for nothing: controllers enabled
                // in the parent show up in the child's cgroup.controllers at once.
                v2::enable_controllers(&Dir::new(parent))
            }) {
                Err(MkdirError::Io(e, _)) if self.tolerated(&e) => {}
                Err(MkdirError::Io(source, path)) => {
                    return Err(CgroupError::Io {
                        op: "creating",
                        path,
                        source,
                    })
                }
                Err(MkdirError::Cgroup(e)) => return Err(e),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// Moves `pid` into the container's cgroups (every hierarchy): `exec`.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        let (v1, v2) = self.dirs();
        let all = v1.iter().map(|(_, d)| d).chain(v2.as_ref());
        for d in all {
            if let Err(e) = d.write("cgroup.procs", &pid.to_string()) {
                let missing = e.kind() == std::io::ErrorKind::NotFound;
                if self.tolerated(&e) || (self.rootless && !self.explicit && missing) {
                    continue;
                }
                return Err(CgroupError::Write {
                    path: d.path().join("cgroup.procs"),
                    value: pid.to_string(),
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// `runc update`: writes the given resources (devices only when the list is given).
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.update_noting(resources).map(|_| ())
    }

    pub fn update_noting(&self, resources: &LinuxResources) -> Result<Notes, CgroupError> {
        self.with_target(|t| resources::set_resources(t, resources))
    }

    /// The freezer: v1 freezer when mounted, else v2 cgroup.freeze.
    fn freezer(&self) -> Result<(Dir, bool), CgroupError> {
        if let Some(d) = self.v1_dir("freezer") {
            return Ok((Dir::new(d), true));
        }
        if let Some(v) = &self.v2 {
            return Ok((Dir::new(&v.dir), false));
        }
        Err(CgroupError::NotAvailable {
            controller: "freezer".into(),
            detail: "no cgroup v1 hierarchy has it mounted".into(),
        })
    }

    /// Freezes every process of the container; returns once they are frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            (d, true) => v1::freeze(&d),
            (d, false) => v2::set_frozen(&d, true),
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            (d, true) => v1::thaw(&d),
            (d, false) => v2::set_frozen(&d, false),
        }
    }

    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.freezer()? {
            (d, _) if !d.is_present() => Ok(false),
            (d, true) => v1::is_frozen(&d),
            (d, false) => v2::is_frozen(&d),
        }
    }

    /// The directory whose cgroup.procs tree lists the container's processes: v2 on a pure
    /// v2 host, else the v1 freezer (what pause acts on), devices, pids, memory, any other.
    fn procs_dir(&self) -> Option<PathBuf> {
        if self.layout == Layout::V2 {
            return self.v2.as_ref().map(|v| v.dir.clone());
        }
        for c in ["freezer", "devices", "pids", "memory"] {
            if let Some(d) = self.v1_dir(c) {
                return Some(d.to_path_buf());
            }
        }
        self.v2
            .as_ref()
            .map(|v| v.dir.clone())
            .or_else(|| self.v1.first().map(|h| h.dir.clone()))
    }

    /// Every process in the container's cgroup and its sub-cgroups.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let Some(dir) = self.procs_dir() else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        collect_pids(&dir, 0, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Statistics in runc's `events --stats` shape.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        let mut s = Stats::default();
        let (v1, v2) = self.dirs();
        for (ctrls, d) in &v1 {
            if !d.is_present() {
                continue;
            }
            for c in ctrls {
                v1::stats(c, d, &mut s)?;
            }
        }
        let v1_has = |c: &str| self.v1_dir(c).is_some();
        let mut pids_somewhere = v1_has("pids");
        if let Some(d) = v2.as_ref().filter(|d| d.is_present()) {
            let ctrls = v2::controllers(d)?;
            // cpu.stat is there without the cpu controller on v2 (the core accounts usage).
            let has = |c: &str| {
                let v1name = if c == "io" { "blkio" } else { c };
                !v1_has(v1name)
                    && (ctrls.iter().any(|x| x == c) || (c == "cpu" && self.layout == Layout::V2))
            };
            v2::stats(d, &has, &mut s)?;
            pids_somewhere |= ctrls.iter().any(|c| c == "pids");
        }
        if !pids_somewhere {
            s.pids.current = self.pids()?.len() as u64;
        }
        Ok(s)
    }

    fn memory_dir(&self) -> Result<(Dir, bool), CgroupError> {
        if let Some(d) = self.v1_dir("memory") {
            return Ok((Dir::new(d), true));
        }
        if let Some(v) = &self.v2 {
            let d = Dir::new(&v.dir);
            if d.exists("memory.events") {
                return Ok((d, false));
            }
        }
        let ctrls = match &self.v2 {
            Some(v) => v2::controllers(&Dir::new(&v.dir)).unwrap_or_default(),
            None => Vec::new(),
        };
        Err(self.with_target(|t| t.not_available("memory", Some("memory"), &ctrls)))
    }

    /// How many processes of the container the kernel OOM-killed so far.
    pub fn oom_kill_count(&self) -> Result<u64, CgroupError> {
        match self.memory_dir()? {
            (d, _) if !d.is_present() && self.rootless => Ok(0),
            (d, true) => v1::oom_kill_count(&d),
            (d, false) => v2::oom_kill_count(&d),
        }
    }

    /// A file descriptor that becomes readable when the container hits an OOM (v1: an eventfd
    /// registered on memory.oom_control, read 8 bytes to consume; v2: an inotify watch on
    /// memory.events, read the events to consume, then compare `oom_kill_count`). For
    /// `events` to wait on instead of polling.
    pub fn oom_notifier(&self) -> Result<OwnedFd, CgroupError> {
        let (d, v1) = self.memory_dir()?;
        let os_err = |op: &'static str, path: &Path| CgroupError::Io {
            op,
            path: path.to_path_buf(),
            source: std::io::Error::last_os_error(),
        };
        if v1 {
            let ctl =
                std::fs::File::open(d.path().join("memory.oom_control")).map_err(|source| {
                    CgroupError::Io {
                        op: "opening",
                        path: d.path().join("memory.oom_control"),
                        source,
                    }
                })?;
            // SAFETY: eventfd has no pointer arguments; a non-negative result is a new fd
            // that we own from here on.
            let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
            if efd < 0 {
                return Err(os_err("creating an eventfd for", d.path()));
            }
            // SAFETY: `efd` is a fresh descriptor nobody else owns.
            let efd = unsafe { OwnedFd::from_raw_fd(efd) };
            use std::os::fd::AsRawFd;
            files::write(
                &d,
                "cgroup.event_control",
                &format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
            )?;
            Ok(efd)
        } else {
            // SAFETY: no pointer arguments; a non-negative result is a new fd we own.
            let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
            if ifd < 0 {
                return Err(os_err("creating an inotify instance for", d.path()));
            }
            // SAFETY: `ifd` is a fresh descriptor nobody else owns.
            let ifd = unsafe { OwnedFd::from_raw_fd(ifd) };
            let p = d.path().join("memory.events");
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
                CgroupError::Invalid(format!("{}: path with a NUL byte", p.display()))
            })?;
            use std::os::fd::AsRawFd;
            // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
            let w =
                unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) };
            if w < 0 {
                return Err(os_err("watching", &p));
            }
            Ok(ifd)
        }
    }

    /// Removes the container's cgroups (sub-cgroups first), retrying briefly while the last
    /// processes exit. Missing directories are fine; parents (such as a slice) stay, as with
    /// runc.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_err = None;
        let dirs = self
            .v1
            .iter()
            .map(|h| (&h.mountpoint, &h.dir))
            .chain(self.v2.iter().map(|v| (&v.mountpoint, &v.dir)));
        for (mnt, dir) in dirs {
            if !dir.starts_with(mnt) || dir == mnt {
                continue;
            }
            if let Err(e) = remove_tree(dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// For `cgroup` mounts inside the container: (directory name under /sys/fs/cgroup, the
    /// host directory of this container's cgroup there): "cpu,cpuacct", "memory",
    /// "systemd" (name=systemd), "unified" in the hybrid layout, "" on a pure v2 host.
    pub fn mount_sources(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = self
            .v1
            .iter()
            .map(|h| (mount_name(&h.mountpoint), h.dir.clone()))
            .collect();
        if let Some(v) = &self.v2 {
            let name = if self.layout == Layout::V2 {
                String::new()
            } else {
                mount_name(&v.mountpoint)
            };
            out.push((name, v.dir.clone()));
        }
        out
    }

    /// The symlinks that go with `mount_sources` for co-mounted controllers: (link name,
    /// target), e.g. ("cpu", "cpu,cpuacct") and ("cpuacct", "cpu,cpuacct").
    pub fn mount_symlinks(&self) -> Vec<(String, String)> {
        let names: Vec<String> = self.v1.iter().map(|h| mount_name(&h.mountpoint)).collect();
        let mut out = Vec::new();
        for n in names.iter().filter(|n| n.contains(',')) {
            for part in n.split(',') {
                if !part.is_empty() && !names.iter().any(|x| x == part) {
                    out.push((part.to_string(), n.clone()));
                }
            }
        }
        out
    }
}

fn mount_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

enum MkdirError {
    Io(std::io::Error, PathBuf),
    Cgroup(CgroupError),
}

/// mkdir of each level from `root` (exclusive) to `dir`, calling `each(parent, child)` after
/// each level exists (created now or before).
fn mkdir_levels(
    root: &Path,
    dir: &Path,
    each: &mut dyn FnMut(&Path, &Path) -> Result<(), CgroupError>,
) -> Result<(), MkdirError> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Err(MkdirError::Cgroup(CgroupError::Invalid(format!(
            "{} is not under {}",
            dir.display(),
            root.display()
        ))));
    };
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        let parent = cur.clone();
        cur.push(c);
        match std::fs::create_dir(&cur) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(MkdirError::Io(e, cur)),
        }
        each(&parent, &cur).map_err(MkdirError::Cgroup)?;
    }
    Ok(())
}

/// cgroup.procs of `dir` and of every sub-cgroup (depth-bounded).
fn collect_pids(dir: &Path, depth: usize, out: &mut Vec<i32>) -> Result<(), CgroupError> {
    if depth > 64 {
        return Ok(());
    }
    let d = Dir::new(dir);
    let Some(t) = files::read_opt(&d, "cgroup.procs")? else {
        return Ok(());
    };
    out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in rd.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_pids(&e.path(), depth + 1, out)?;
        }
    }
    Ok(())
}

/// rmdir of `dir` after its sub-cgroups; EBUSY (processes still exiting) retried for about
/// a second in total, as runc does.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    fn rec(dir: &Path, depth: usize) -> std::io::Result<()> {
        if depth <= 64 {
            match std::fs::read_dir(dir) {
                Ok(rd) => {
                    for e in rd.flatten() {
                        if e.file_type().is_ok_and(|t| t.is_dir()) {
                            rec(&e.path(), depth + 1)?;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let mut delay = Duration::from_millis(10);
        for _ in 0..7 {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                Err(e) => return Err(e),
            }
        }
        std::fs::remove_dir(dir).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(e)
            }
        })
    }
    rec(dir, 0).map_err(|source| CgroupError::Io {
        op: "removing",
        path: dir.to_path_buf(),
        source,
    })
}
