//! The runtime's commands, runc's model: `create` forks the container's init and leaves it
//! waiting on the exec FIFO; `start` releases it; `delete` cleans up after it. Each command
//! works from the state directory and the live processes, under the container's lock.

use crate::cgroups::Manager;
use crate::init::{self, Kind, Launch};
use crate::process::CapMasks;
use crate::state::{self, io_err, ContainerDir, Public, Saved, Status};
use crate::sync::{Channel, Msg};
use crate::{hooks, seccomp, spec, sys, Error, Result};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Process, Spec};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Global options (runc's --root, --systemd-cgroup, --rootless).
#[derive(Debug, Clone)]
pub struct Runtime {
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    pub rootless: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
}

/// The state hooks get on stdin (the runtime-spec state object).
pub fn hook_state(spec: &Spec, id: &str, pid: i32, bundle: &Path, status: &str) -> Vec<u8> {
    hook_state_of(
        spec.version(),
        spec.annotations().as_ref(),
        id,
        pid,
        bundle,
        status,
    )
}

fn hook_state_of(
    version: &str,
    annotations: Option<&std::collections::HashMap<String, String>>,
    id: &str,
    pid: i32,
    bundle: &Path,
    status: &str,
) -> Vec<u8> {
    let mut v = serde_json::json!({
        "ociVersion": version,
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle,
        "annotations": annotations.cloned().unwrap_or_default(),
    });
    // No process (poststop): no pid, as runc writes it (the spec requires one only while
    // created or running).
    if pid <= 0 {
        if let Some(o) = v.as_object_mut() {
            o.remove("pid");
        }
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn saved_hook_state(s: &Saved, pid: i32, status: &str) -> Vec<u8> {
    hook_state_of(
        &s.oci_version,
        s.annotations.as_ref(),
        &s.id,
        pid,
        &s.bundle,
        status,
    )
}

fn other(msg: impl Into<String>) -> Error {
    Error::Other(msg.into())
}

/// The container's process pid for signal forwarding in `run`/`exec` (a signal handler can
/// only reach a static).
static FORWARD_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = FORWARD_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// While the runtime waits in the foreground, signals meant for the container go to it.
fn forward_signals(pid: i32) {
    FORWARD_PID.store(pid, Ordering::Relaxed);
    for sig in [
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
    ] {
        // SAFETY: installing an async-signal-safe handler.
        unsafe { libc::signal(sig, forward_signal as *const () as libc::sighandler_t) };
    }
}

/// Signal names as runc accepts them ("KILL", "SIGKILL", "9").
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(other(format!("invalid signal: {s}")));
    }
    // Case-insensitive, "SIG" optional, as runc's parseSignal (it upper-cases first).
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            if let Some(rt) = name.strip_prefix("RTMIN") {
                let off: i32 = if rt.is_empty() {
                    0
                } else {
                    rt.trim_start_matches('+').parse().unwrap_or(-1)
                };
                let n = libc::SIGRTMIN() + off;
                if off >= 0 && n <= libc::SIGRTMAX() {
                    return Ok(n);
                }
            }
            return Err(other(format!("unknown signal \"{s}\"")));
        }
    };
    Ok(n)
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    // Through a temporary name: a reader never sees a half-written pid.
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string()).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).map_err(|e| io_err(p, e))
}

/// The namespace plan of a config: descriptors to join (user first) and flags to unshare.
struct NsPlan {
    joins: Vec<(LinuxNamespaceType, OwnedFd)>,
    new_ns: libc::c_int,
    new_user: bool,
    in_user_ns: bool,
    new_mount: bool,
}

fn ns_plan(spec: &Spec) -> Result<NsPlan> {
    let mut plan = NsPlan {
        joins: Vec::new(),
        new_ns: 0,
        new_user: false,
        in_user_ns: false,
        new_mount: false,
    };
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in &nss {
        let t = ns.typ();
        match ns.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                let fd = sys::open(p, libc::O_RDONLY, 0).map_err(|e| {
                    other(format!(
                        "{} namespace path {}: {e}",
                        init::ns_proc_name(t),
                        p.display()
                    ))
                })?;
                if t == LinuxNamespaceType::User {
                    plan.in_user_ns = true;
                    plan.joins.insert(0, (t, fd));
                } else {
                    plan.joins.push((t, fd));
                }
            }
            _ => {
                if t == LinuxNamespaceType::User {
                    plan.new_user = true;
                    plan.in_user_ns = true;
                } else {
                    plan.new_ns |= init::ns_flag(t);
                    if t == LinuxNamespaceType::Mount {
                        plan.new_mount = true;
                    }
                }
            }
        }
    }
    Ok(plan)
}

fn time_offsets(spec: &Spec) -> Option<String> {
    let offs = spec.linux().as_ref()?.time_offsets().as_ref()?;
    let mut s = String::new();
    for (clock, o) in offs {
        let name = match clock.as_str() {
            "monotonic" | "boottime" => clock.as_str(),
            _ => continue,
        };
        s.push_str(&format!(
            "{name} {} {}\n",
            o.secs().unwrap_or(0),
            o.nanosecs().unwrap_or(0)
        ));
    }
    (!s.is_empty()).then_some(s)
}

/// Writes the id maps of a process that unshared its user namespace.
fn write_id_maps(spec: &Spec, pid: i32, rootless: bool) -> Result<()> {
    let linux = spec.linux().as_ref();
    let fmt = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| -> String {
        maps.into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    };
    let uid = fmt(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = fmt(linux.and_then(|l| l.gid_mappings().as_ref()));
    let base = PathBuf::from(format!("/proc/{pid}"));
    if rootless {
        let p = base.join("setgroups");
        std::fs::write(&p, "deny").map_err(|e| io_err(&p, e))?;
    }
    for (name, text) in [("uid_map", uid), ("gid_map", gid)] {
        let p = base.join(name);
        std::fs::write(&p, &text).map_err(|e| {
            other(format!(
                "writing {name} ({}): {e}{}",
                text.trim().replace('\n', ", "),
                if e.raw_os_error() == Some(libc::EPERM) {
                    " (a host id in the mapping is not ours to map)"
                } else {
                    ""
                }
            ))
        })?;
    }
    Ok(())
}

impl Runtime {
    pub fn open(&self, id: &str) -> Result<(ContainerDir, Saved)> {
        let dir = ContainerDir::open(&self.root, id)?;
        let saved = dir.load()?;
        Ok((dir, saved))
    }

    /// `create`: the container's init, set up and waiting to be started. Returns its pid.
    pub fn create(&self, o: &CreateOptions) -> Result<i32> {
        self.create_inner(o, false).map(|(pid, _, _)| pid)
    }

    /// With `foreground` and a terminal but no console socket, the pty's master comes back
    /// to us (runc's `run` without -d relays the terminal itself).
    fn create_inner(
        &self,
        o: &CreateOptions,
        foreground: bool,
    ) -> Result<(i32, Saved, Option<OwnedFd>)> {
        let bundle = absolute(&o.bundle)?;
        let (spec, config_text) = spec::load_with_text(&bundle)?;
        let Some(process) = spec.process().clone() else {
            return Err(Error::Config {
                path: bundle.join("config.json"),
                msg: "process must be specified to create a container".into(),
            });
        };
        let rootfs_cfg = spec::rootfs_path(&spec, &bundle);
        let rootfs = std::fs::canonicalize(&rootfs_cfg).map_err(|e| {
            other(format!(
                "rootfs ({}) does not exist: {e}",
                rootfs_cfg.display()
            ))
        })?;
        let linux = spec.linux().clone().unwrap_or_default();
        let prog = linux.seccomp().as_ref().map(seccomp::compile).transpose()?;
        if let Some(r) = linux.resources() {
            crate::cgroups::resources::validate(r)?;
        }
        if process.terminal().unwrap_or(false) && o.console_socket.is_none() && !foreground {
            return Err(other(
                "cannot allocate tty if runc will detach without setting console socket",
            ));
        }
        if !process.terminal().unwrap_or(false) && o.console_socket.is_some() {
            return Err(other(
                "cannot use console socket if runc will not detach or allocate tty",
            ));
        }
        let plan = ns_plan(&spec)?;
        let dir = ContainerDir::create(&self.root, &o.id)?;
        let cleanup = |dir: ContainerDir, cg: Option<&Manager>| {
            if let Some(cg) = cg {
                let _ = cg.destroy();
            }
            let _ = dir.remove();
        };
        let cg = match Manager::new(
            linux.cgroups_path().as_ref().and_then(|p| p.to_str()),
            &o.id,
            self.systemd_cgroup,
            self.rootless,
        ) {
            Ok(cg) => cg,
            Err(e) => {
                cleanup(dir, None);
                return Err(e.into());
            }
        };
        let own_tty =
            foreground && process.terminal().unwrap_or(false) && o.console_socket.is_none();
        match self.spawn_init(
            &config_text,
            own_tty,
            o,
            &spec,
            &process,
            &bundle,
            &rootfs,
            prog.as_ref(),
            plan,
            &dir,
            &cg,
        ) {
            Ok((pid, saved, master)) => {
                if let Some(pf) = &o.pid_file {
                    if let Err(e) = write_pid_file(pf, pid) {
                        let _ = sys::kill(pid, libc::SIGKILL);
                        cleanup(dir, Some(&cg));
                        return Err(e);
                    }
                }
                Ok((pid, saved, master))
            }
            Err(e) => {
                cleanup(dir, Some(&cg));
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn_init(
        &self,
        config_text: &str,
        own_tty: bool,
        o: &CreateOptions,
        spec: &Spec,
        process: &Process,
        bundle: &Path,
        rootfs: &Path,
        prog: Option<&seccomp::Program>,
        plan: NsPlan,
        dir: &ContainerDir,
        cg: &Manager,
    ) -> Result<(i32, Saved, Option<OwnedFd>)> {
        let fifo_path = dir.fifo();
        let c = sys::cstr(&fifo_path).map_err(|e| io_err(&fifo_path, e))?;
        // SAFETY: mkfifo with a valid path.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o622) } != 0 {
            return Err(io_err(&fifo_path, std::io::Error::last_os_error()));
        }
        // Read-write: the open does not wait for a writer; the init reads `start`'s byte.
        let fifo = sys::open(&fifo_path, libc::O_RDWR, 0).map_err(|e| io_err(&fifo_path, e))?;
        let (tty_ours, tty_theirs) = if own_tty {
            let (a, b) = console_pair()?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let console = o
            .console_socket
            .as_deref()
            .map(|p| {
                crate::console::connect(p).map_err(|e| {
                    other(format!(
                        "connecting to the console socket {}: {e}",
                        p.display()
                    ))
                })
            })
            .transpose()?
            .or(tty_theirs);
        let hooks = spec.hooks().clone().unwrap_or_default();
        let runtime_hooks = hooks.prestart().as_ref().is_some_and(|h| !h.is_empty())
            || hooks
                .create_runtime()
                .as_ref()
                .is_some_and(|h| !h.is_empty());
        let linux = spec.linux().clone().unwrap_or_default();
        let caps = CapMasks::from_spec(process.capabilities().as_ref());
        let new_user = plan.new_user;
        let launch = Launch {
            id: &o.id,
            spec,
            process,
            kind: Kind::Init {
                rootfs: rootfs.to_path_buf(),
                bundle: bundle.to_path_buf(),
                no_pivot: o.no_pivot,
                fifo,
                cgroup_sources: cg.mount_sources(),
                new_mount_ns: plan.new_mount,
                runtime_hooks,
                cgroup_ns: plan.new_ns & libc::CLONE_NEWCGROUP != 0,
            },
            joins: plan.joins,
            new_ns: plan.new_ns & !libc::CLONE_NEWCGROUP,
            new_user,
            in_user_ns: plan.in_user_ns,
            setgroups_allowed: !self.rootless,
            caps,
            seccomp: prog,
            console,
            preserve_fds: o.preserve_fds,
            no_new_keyring: o.no_new_keyring,
            time_offsets: time_offsets(spec),
            close_first: vec![dir.lock_fd()],
        };
        // runc's device rules: the config's, an allow for each configured device node,
        // then the defaults every container gets (null, zero, tty, ptys...).
        let devices = linux.devices().clone().unwrap_or_default();
        let mut resources = linux.resources().clone().unwrap_or_default();
        let mut rules = resources.devices().clone().unwrap_or_default();
        // Only block and character devices have cgroup rules (runc skips fifos too); an
        // unbuffered character device ("u") is a "c" there.
        rules.extend(
            devices
                .iter()
                .filter(|d| d.typ() != oci_spec::runtime::LinuxDeviceType::P)
                .map(|d| {
                    let mut r = oci_spec::runtime::LinuxDeviceCgroup::from(d);
                    if d.typ() == oci_spec::runtime::LinuxDeviceType::U {
                        r.set_typ(Some(oci_spec::runtime::LinuxDeviceType::C));
                    }
                    r
                }),
        );
        resources.set_devices(Some(rules));
        let resources = crate::cgroups::devices::with_runc_defaults(Some(&resources), &devices);
        cg.prepare(Some(&resources))?;
        let (ours, theirs) = Channel::pair().map_err(|e| other(format!("socketpair: {e}")))?;
        let c1 = match sys::fork(false) {
            Ok(0) => {
                drop(ours);
                init::stage1(theirs, launch)
            }
            Ok(pid) => pid,
            Err(e) => return Err(other(format!("fork: {e}"))),
        };
        drop(theirs);
        drop(launch);
        let mut c2 = 0;
        let r = self.drive_init(
            &ours, c1, &mut c2, spec, process, &o.id, bundle, new_user, &linux, cg,
        );
        // The intermediate child has exited, or ends when it sees the channel closed (it may
        // still wait for Go when setting it up failed here).
        drop(ours);
        let _ = sys::waitpid(c1, 0);
        if let Err(e) = r {
            if c2 > 0 {
                let _ = sys::kill(c2, libc::SIGKILL);
            }
            return Err(e);
        }
        let saved = Saved {
            id: o.id.clone(),
            pid: c2,
            pid_start: sys::start_time(c2).unwrap_or(0),
            bundle: bundle.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            created: state::now_rfc3339(),
            owner: owner_name(),
            rootless: self.rootless,
            cgroup: Some(cg.clone()),
            config: serde_json::value::RawValue::from_string(config_text.to_string())
                .map_err(|e| other(format!("config.json: {e}")))?,
            oci_version: spec.version().clone(),
            hooks: spec.hooks().clone(),
            annotations: spec.annotations().clone(),
            started: false,
        };
        dir.save(&saved)?;
        let master = match tty_ours {
            Some(sock) => Some(recv_master(&sock)?),
            None => None,
        };
        Ok((c2, saved, master))
    }

    #[allow(clippy::too_many_arguments)]
    fn drive_init(
        &self,
        chan: &Channel,
        c1: i32,
        c2: &mut i32,
        spec: &Spec,
        process: &Process,
        id: &str,
        bundle: &Path,
        new_user: bool,
        linux: &oci_spec::runtime::Linux,
        cg: &Manager,
    ) -> Result<()> {
        let recv = || -> Result<(Msg, Vec<OwnedFd>)> {
            chan.recv()
                .map_err(|e| other(format!("container init: {e}")))
        };
        if new_user {
            match recv()? {
                (Msg::UsernsReady, _) => write_id_maps(spec, c1, self.rootless)?,
                (Msg::Error(e), _) => return Err(other(e)),
                (m, _) => return Err(other(format!("unexpected message {m:?}"))),
            }
        }
        if let Some(adj) = process.oom_score_adj() {
            let p = PathBuf::from(format!("/proc/{c1}/oom_score_adj"));
            std::fs::write(&p, adj.to_string()).map_err(|e| io_err(&p, e))?;
        }
        chan.send(&Msg::Go)
            .map_err(|e| other(format!("container init: {e}")))?;
        loop {
            match recv()? {
                (Msg::Pid(p), _) => {
                    *c2 = p;
                    cg.add_pid(p)?;
                    // If the init already failed, its error message is the next to read:
                    // report that rather than our broken pipe.
                    let _ = chan.send(&Msg::CgroupsDone);
                }
                (Msg::RunCreateHooks, _) => {
                    let state = hook_state(spec, id, *c2, bundle, "creating");
                    let h = spec.hooks().clone().unwrap_or_default();
                    #[allow(deprecated)]
                    hooks::run_all("prestart", h.prestart().as_ref(), &state).map_err(other)?;
                    hooks::run_all("createRuntime", h.create_runtime().as_ref(), &state)
                        .map_err(other)?;
                    chan.send(&Msg::HooksDone)
                        .map_err(|e| other(format!("container init: {e}")))?;
                }
                (Msg::SeccompListener, fds) => {
                    let path = linux
                        .seccomp()
                        .as_ref()
                        .and_then(|s| s.listener_path().clone())
                        .ok_or_else(|| other("seccomp notify needs linux.seccomp.listenerPath"))?;
                    let fd = fds
                        .first()
                        .ok_or_else(|| other("no seccomp listener descriptor received"))?;
                    let st = hook_state(spec, id, *c2, bundle, "creating");
                    seccomp::send_listener_fd(&path, fd.as_fd(), &st)?;
                    chan.send(&Msg::SeccompDone)
                        .map_err(|e| other(format!("container init: {e}")))?;
                }
                (Msg::Ready, _) => return Ok(()),
                (Msg::Error(e), _) => return Err(other(e)),
                (m, _) => return Err(other(format!("unexpected message {m:?}"))),
            }
        }
    }

    /// `start`: releases a created container's init to exec the program.
    pub fn start(&self, id: &str) -> Result<()> {
        let (dir, mut saved) = self.open(id)?;
        match saved.status(&dir.path) {
            Status::Created => {}
            Status::Stopped => return Err(other("cannot start a container that has stopped")),
            s => {
                return Err(other(format!(
                    "cannot start an already {} container",
                    s.as_str()
                )))
            }
        }
        let fifo = dir.fifo();
        // Non-blocking: no reader means the init is gone.
        let fd = sys::open(&fifo, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                other("container init is not waiting (it exited)")
            } else {
                io_err(&fifo, e)
            }
        })?;
        // A reader of our own, then a second writer: the kernel reports a hang-up to a FIFO
        // reader only after a writer opened later than it went away. The init closes its
        // end when it executes the program (close-on-exec) or dies.
        let watch =
            sys::open(&fifo, libc::O_RDONLY | libc::O_NONBLOCK, 0).map_err(|e| io_err(&fifo, e))?;
        let fd2 =
            sys::open(&fifo, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| io_err(&fifo, e))?;
        drop(fd);
        sys::write_all(fd2.as_fd(), b"0").map_err(|e| io_err(&fifo, e))?;
        drop(fd2);
        let _ = std::fs::remove_file(&fifo);
        saved.started = true;
        dir.save(&saved)?;
        // Like runc's start: back once the program runs (after the startContainer hooks),
        // so poststart hooks run after it was executed, as the spec requires.
        wait_fifo_closed(&watch, &saved);
        if let Some(h) = &saved.hooks {
            let st = saved_hook_state(&saved, saved.pid, "running");
            if let Err(e) = hooks::run_all("poststart", h.poststart().as_ref(), &st) {
                // A failing poststart hook: the container is killed (the spec's MUST).
                let _ = sys::kill(saved.pid, libc::SIGKILL);
                return Err(other(e));
            }
        }
        Ok(())
    }

    /// `run`: create, start, and (unless detached) wait for the init and delete the
    /// container; returns the exit code to exit with.
    /// `tty` relays a terminal the runtime allocated itself (process.terminal without a
    /// console socket); it returns when the container side of the terminal closes.
    pub fn run(
        &self,
        o: &CreateOptions,
        detach: bool,
        tty: Option<&mut dyn FnMut(OwnedFd)>,
    ) -> Result<i32> {
        let (pid, _, master) = self.create_inner(o, !detach && tty.is_some())?;
        if let Err(e) = self.start(&o.id) {
            let _ = self.delete(&o.id, true);
            return Err(e);
        }
        if detach {
            return Ok(0);
        }
        forward_signals(pid);
        if let (Some(m), Some(relay)) = (master, tty) {
            relay(m);
        }
        let code = match sys::waitpid(pid, 0) {
            Ok((_, st)) => sys::exit_code(st),
            Err(e) => return Err(other(format!("waiting for the container: {e}"))),
        };
        FORWARD_PID.store(0, Ordering::Relaxed);
        self.delete(&o.id, true)?;
        Ok(code)
    }

    pub fn state(&self, id: &str) -> Result<Public> {
        let dir_path = self.root.join(id);
        state::validate_id(id)?;
        let saved = match state::load_file(&dir_path.join(state::STATE_FILE)) {
            Ok(s) => s,
            Err(_) if !dir_path.exists() => return Err(Error::NotExist(id.into())),
            Err(e) => return Err(e),
        };
        Ok(saved.public(saved.status(&dir_path)))
    }

    pub fn list(&self) -> Result<Vec<Public>> {
        Ok(state::list(&self.root)?
            .into_iter()
            .map(|(_, s)| {
                let st = s.status(&self.root.join(&s.id));
                s.public(st)
            })
            .collect())
    }

    pub fn kill(&self, id: &str, sig: i32, all: bool) -> Result<()> {
        let (dir, saved) = self.open(id)?;
        let st = saved.status(&dir.path);
        if st == Status::Stopped && !all {
            return Err(other("container not running"));
        }
        if all {
            if let Some(cg) = &saved.cgroup {
                for pid in cg.pids()? {
                    let _ = sys::kill(pid, sig);
                }
                if st == Status::Paused && sig == libc::SIGKILL {
                    let _ = cg.thaw();
                }
                return Ok(());
            }
        }
        sys::kill(saved.pid, sig).map_err(|e| other(format!("kill {}: {e}", saved.pid)))?;
        if sig == libc::SIGKILL {
            // SIGKILL cannot be caught: give the kernel a moment to finish the init off, so
            // that `state` right after `kill KILL` says stopped, as it does with runc.
            let deadline = Instant::now() + Duration::from_millis(200);
            while saved.init_alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        Ok(())
    }

    /// `delete`: a stopped (or created) container's remains go; `force` kills a running one.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let (dir, saved) = self.open(id)?;
        let st = saved.status(&dir.path);
        match st {
            Status::Stopped => {}
            Status::Created => kill_and_wait(&saved),
            Status::Running | Status::Paused | Status::Creating if force => kill_and_wait(&saved),
            s => {
                return Err(other(format!(
                    "cannot delete container {id} that is not stopped: {}",
                    s.as_str()
                )))
            }
        }
        if let Some(cg) = &saved.cgroup {
            cg.destroy()?;
        }
        let poststop = saved.hooks.as_ref().and_then(|h| h.poststop().clone());
        let st_json = saved_hook_state(&saved, 0, "stopped");
        dir.remove()?;
        // Poststop failures are logged by runc, not fatal: the container is gone already.
        if let Err(e) = hooks::run_all("poststop", poststop.as_ref(), &st_json) {
            return Err(other(format!("{e} (the container was deleted)")));
        }
        Ok(())
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let (dir, saved) = self.open(id)?;
        match saved.status(&dir.path) {
            Status::Running | Status::Created => {}
            s => return Err(other(format!("container not running: {}", s.as_str()))),
        }
        let cg = saved
            .cgroup
            .as_ref()
            .ok_or_else(|| other("container has no cgroup to freeze"))?;
        Ok(cg.freeze()?)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let (dir, saved) = self.open(id)?;
        if saved.status(&dir.path) != Status::Paused {
            return Err(other("container not paused"));
        }
        let cg = saved
            .cgroup
            .as_ref()
            .ok_or_else(|| other("container has no cgroup to thaw"))?;
        Ok(cg.thaw()?)
    }

    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (_dir, saved) = self.open(id)?;
        match &saved.cgroup {
            Some(cg) => Ok(cg.pids()?),
            None => Ok(if saved.init_alive() {
                vec![saved.pid]
            } else {
                vec![]
            }),
        }
    }

    pub fn update(&self, id: &str, r: &LinuxResources) -> Result<()> {
        let (dir, mut saved) = self.open(id)?;
        if saved.status(&dir.path) == Status::Stopped {
            return Err(other("cannot update a stopped container"));
        }
        let cg = saved
            .cgroup
            .clone()
            .ok_or_else(|| other("container has no cgroup"))?;
        cg.update(r)?;
        let mut spec = saved.spec()?;
        if let Some(l) = spec.linux_mut() {
            l.set_resources(Some(merge_resources(l.resources().clone(), r)));
        }
        let text = serde_json::to_string(&spec).map_err(|e| other(e.to_string()))?;
        saved.config =
            serde_json::value::RawValue::from_string(text).map_err(|e| other(e.to_string()))?;
        dir.save(&saved)
    }

    pub fn stats(&self, id: &str) -> Result<(Status, serde_json::Value, u64)> {
        let (dir, saved) = self.open(id)?;
        let st = saved.status(&dir.path);
        let cg = saved
            .cgroup
            .as_ref()
            .ok_or_else(|| other("container has no cgroup"))?;
        let stats = serde_json::to_value(cg.stats()?).unwrap_or_default();
        Ok((st, stats, cg.oom_kill_count().unwrap_or(0)))
    }

    /// `exec`: a new process in a running container. Returns its exit code (0 when detached).
    pub fn exec(
        &self,
        id: &str,
        o: &ExecOptions,
        tty: Option<&mut dyn FnMut(OwnedFd)>,
    ) -> Result<i32> {
        let (dir, saved) = self.open(id)?;
        match saved.status(&dir.path) {
            Status::Running | Status::Created => {}
            Status::Paused => return Err(other("cannot exec in a paused container")),
            _ => return Err(other("cannot exec in a stopped container")),
        }
        let spec = &saved.spec()?;
        let p = &o.process;
        let own_tty = p.terminal().unwrap_or(false)
            && o.console_socket.is_none()
            && !o.detach
            && tty.is_some();
        if p.terminal().unwrap_or(false) && o.console_socket.is_none() && !own_tty {
            return Err(other(
                "cannot allocate tty if runc will detach without setting console socket",
            ));
        }
        let (tty_ours, tty_theirs) = if own_tty {
            let (a, b) = console_pair()?;
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let prog = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(seccomp::compile)
            .transpose()?;
        // Join every namespace the container has, through its init.
        let mut joins = Vec::new();
        let mut in_user_ns = false;
        for ns in spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
        {
            let t = ns.typ();
            let path = PathBuf::from(format!("/proc/{}/ns/{}", saved.pid, init::ns_proc_name(t)));
            let fd = sys::open(&path, libc::O_RDONLY, 0).map_err(|e| io_err(&path, e))?;
            if t == LinuxNamespaceType::User {
                in_user_ns = true;
                joins.insert(0, (t, fd));
            } else {
                joins.push((t, fd));
            }
        }
        let console = o
            .console_socket
            .as_deref()
            .map(|p| {
                crate::console::connect(p).map_err(|e| {
                    other(format!(
                        "connecting to the console socket {}: {e}",
                        p.display()
                    ))
                })
            })
            .transpose()?
            .or(tty_theirs);
        let launch = Launch {
            id,
            spec,
            process: p,
            kind: Kind::Exec,
            joins,
            new_ns: 0,
            new_user: false,
            in_user_ns,
            setgroups_allowed: !saved.rootless,
            caps: CapMasks::from_spec(p.capabilities().as_ref()),
            seccomp: prog.as_ref(),
            console,
            preserve_fds: o.preserve_fds,
            no_new_keyring: true,
            time_offsets: None,
            close_first: vec![dir.lock_fd()],
        };
        let (ours, theirs) = Channel::pair().map_err(|e| other(format!("socketpair: {e}")))?;
        let c1 = match sys::fork(false) {
            Ok(0) => {
                drop(ours);
                init::stage1(theirs, launch)
            }
            Ok(pid) => pid,
            Err(e) => return Err(other(format!("fork: {e}"))),
        };
        drop(theirs);
        drop(launch);
        let r = (|| -> Result<i32> {
            if let Some(adj) = p.oom_score_adj() {
                let path = PathBuf::from(format!("/proc/{c1}/oom_score_adj"));
                std::fs::write(&path, adj.to_string()).map_err(|e| io_err(&path, e))?;
            }
            if let Some(cg) = &saved.cgroup {
                cg.add_pid(c1)?;
            }
            ours.send(&Msg::Go)
                .map_err(|e| other(format!("exec: {e}")))?;
            let mut c2 = 0;
            loop {
                match ours.recv().map_err(|e| other(format!("exec: {e}")))? {
                    (Msg::Pid(pid), _) => c2 = pid,
                    (Msg::Ready, _) => return Ok(c2),
                    (Msg::SeccompListener, _) => ours
                        .send(&Msg::SeccompDone)
                        .map_err(|e| other(e.to_string()))?,
                    (Msg::Error(e), _) => {
                        if c2 > 0 {
                            let _ = sys::waitpid(c2, 0);
                        }
                        return Err(other(e));
                    }
                    (m, _) => return Err(other(format!("unexpected message {m:?}"))),
                }
            }
        })();
        // As in create: the child may still wait for Go; closing the channel ends it.
        drop(ours);
        let _ = sys::waitpid(c1, 0);
        let c2 = r?;
        drop(dir);
        if let Some(pf) = &o.pid_file {
            write_pid_file(pf, c2)?;
        }
        if o.detach {
            return Ok(0);
        }
        forward_signals(c2);
        if let (Some(sock), Some(relay)) = (tty_ours, tty) {
            relay(recv_master(&sock)?);
        }
        let code = match sys::waitpid(c2, 0) {
            Ok((_, st)) => sys::exit_code(st),
            Err(e) => return Err(other(format!("waiting for the process: {e}"))),
        };
        FORWARD_PID.store(0, Ordering::Relaxed);
        Ok(code)
    }
}

/// A connected stream pair standing in for --console-socket when we relay the terminal.
fn console_pair() -> Result<(OwnedFd, OwnedFd)> {
    let (a, b) =
        std::os::unix::net::UnixStream::pair().map_err(|e| other(format!("socketpair: {e}")))?;
    Ok((OwnedFd::from(a), OwnedFd::from(b)))
}

/// The pty master the container's process sent over our console pair.
fn recv_master(sock: &OwnedFd) -> Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let (_, mut fds) = sys::recv_with_fds(sock.as_fd(), &mut buf)
        .map_err(|e| other(format!("receiving the terminal: {e}")))?;
    if fds.is_empty() {
        return Err(other("the container sent no terminal"));
    }
    Ok(fds.swap_remove(0))
}

/// `update` changes only what it is given: fold the new values into the saved resources.
fn merge_resources(old: Option<LinuxResources>, new: &LinuxResources) -> LinuxResources {
    let mut r = old.unwrap_or_default();
    if let Some(m) = new.memory() {
        r.set_memory(Some(*m));
    }
    if let Some(c) = new.cpu() {
        r.set_cpu(Some(c.clone()));
    }
    if let Some(p) = new.pids() {
        r.set_pids(Some(*p));
    }
    if let Some(b) = new.block_io() {
        r.set_block_io(Some(b.clone()));
    }
    if let Some(u) = new.unified() {
        r.set_unified(Some(u.clone()));
    }
    r
}

/// Waits until nobody but `watch` holds the exec FIFO: the init executed its program or
/// died.
fn wait_fifo_closed(watch: &OwnedFd, saved: &Saved) {
    use std::os::fd::AsRawFd;
    loop {
        let mut p = libc::pollfd {
            fd: watch.as_raw_fd(),
            // Nothing asked: POLLHUP is always reported, and the byte the init has not read
            // yet (POLLIN) must not wake us.
            events: 0,
            revents: 0,
        };
        // SAFETY: poll on one pollfd we own.
        let r = unsafe { libc::poll(&mut p, 1, 100) };
        if r > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
        if r == 0 && !saved.init_alive() {
            return;
        }
    }
}

fn kill_and_wait(saved: &Saved) {
    let _ = sys::kill(saved.pid, libc::SIGKILL);
    if let Some(cg) = &saved.cgroup {
        for pid in cg.pids().unwrap_or_default() {
            let _ = sys::kill(pid, libc::SIGKILL);
        }
        if cg.is_frozen().unwrap_or(false) {
            let _ = cg.thaw();
        }
    }
    // Reap it if it is our child; otherwise wait for whoever reaps it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pause = Duration::from_micros(100);
    while saved.init_alive() && Instant::now() < deadline {
        let _ = sys::waitpid(saved.pid, libc::WNOHANG);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn owner_name() -> String {
    let uid = sys::getuid();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}
