//! The processes the runtime forks to make a container (or a process exec'd into one).
//!
//! Stage 1 (the intermediate child) joins the namespaces given by path (the user namespace
//! first), unshares the user namespace and waits for the runtime to write its id maps and
//! put it into the cgroups, unshares the other namespaces, then forks stage 2 with
//! CLONE_PARENT, so that the container's process is the runtime's child (for `run` and
//! foreground `exec` to wait on) and is inside the new pid and time namespaces, which only
//! apply to children. Stage 2 builds the root filesystem, becomes the configured user and
//! execs the program; for `create` it first blocks on the exec FIFO until `start`.
//!
//! Both stages run in a single-threaded copy of the runtime: they may allocate. Every error
//! goes back to the runtime as a message and the stage exits; they never return.

use crate::process::{self, CapMasks};
use crate::rootfs;
use crate::seccomp::Program;
use crate::sync::{Channel, Msg};
use crate::sys;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::ffi::OsStr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub enum Kind {
    /// `create`: a new container's init.
    Init {
        rootfs: PathBuf,
        bundle: PathBuf,
        no_pivot: bool,
        /// The exec FIFO, opened read-write (so the open never blocks); `start` writes a byte.
        fifo: OwnedFd,
        cgroup_sources: Vec<(String, PathBuf)>,
        /// A mount namespace is created (else the rootfs is only chrooted into).
        new_mount_ns: bool,
        /// prestart/createRuntime hooks exist: ask the runtime to run them at the right time.
        runtime_hooks: bool,
        /// A cgroup namespace is made, by the init itself once it is in its cgroups.
        cgroup_ns: bool,
    },
    /// `exec`: a process joining a running container.
    Exec,
}

pub struct Launch<'a> {
    pub id: &'a str,
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub kind: Kind,
    /// Namespaces joined by descriptor, the user namespace first.
    pub joins: Vec<(LinuxNamespaceType, OwnedFd)>,
    /// CLONE_NEW* flags to unshare after the user namespace (which is `new_user`).
    pub new_ns: libc::c_int,
    pub new_user: bool,
    pub in_user_ns: bool,
    pub setgroups_allowed: bool,
    pub caps: CapMasks,
    pub seccomp: Option<&'a Program>,
    /// The connected --console-socket, when process.terminal is set.
    pub console: Option<OwnedFd>,
    pub preserve_fds: u32,
    pub no_new_keyring: bool,
    /// Text for /proc/self/timens_offsets.
    pub time_offsets: Option<String>,
    /// Descriptors of the runtime's own the children must drop at once: the container
    /// directory's lock (a flock held by a descriptor the init inherited would outlive
    /// the command and block every later one).
    pub close_first: Vec<std::os::fd::RawFd>,
}

pub fn ns_flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// The /proc/PID/ns/ name of a namespace type.
pub fn ns_proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

fn fail(chan: &Channel, msg: String) -> ! {
    let _ = chan.send(&Msg::Error(msg));
    // SAFETY: _exit ends this forked copy without running the parent's destructors.
    unsafe { libc::_exit(1) }
}

/// Stage 1, in the intermediate child. Never returns.
pub fn stage1(chan: Channel, mut l: Launch) -> ! {
    for fd in &l.close_first {
        // SAFETY: closing a descriptor number this copy of the process inherited and never
        // uses; no Rust object owns it here.
        unsafe { libc::close(*fd) };
    }
    for (t, fd) in &l.joins {
        if let Err(e) = sys::setns(fd.as_fd(), ns_flag(*t)) {
            fail(
                &chan,
                format!("joining the {} namespace: {e}", ns_proc_name(*t)),
            );
        }
    }
    if l.new_user {
        if let Err(e) = sys::unshare(libc::CLONE_NEWUSER) {
            fail(&chan, format!("creating the user namespace: {e}"));
        }
        if chan.send(&Msg::UsernsReady).is_err() {
            // SAFETY: as in fail().
            unsafe { libc::_exit(1) }
        }
    }
    match chan.recv() {
        Ok((Msg::Go, _)) => {}
        // SAFETY: the runtime gave up on us; end quietly.
        _ => unsafe { libc::_exit(1) },
    }
    if l.in_user_ns {
        // Become root of the user namespace: the rest of setup needs its capabilities.
        // SAFETY: plain syscalls with integer arguments.
        let r = unsafe {
            if libc::setresgid(0, 0, 0) != 0 {
                -1
            } else {
                libc::setresuid(0, 0, 0)
            }
        };
        if r != 0 {
            fail(
                &chan,
                format!(
                    "becoming root in the user namespace: {} (is container uid/gid 0 mapped?)",
                    std::io::Error::last_os_error()
                ),
            );
        }
    }
    if l.new_ns != 0 {
        if let Err(e) = sys::unshare(l.new_ns) {
            fail(&chan, format!("creating namespaces: {e}"));
        }
    }
    if let Some(off) = &l.time_offsets {
        if let Err(e) = std::fs::write("/proc/self/timens_offsets", off) {
            fail(&chan, format!("writing /proc/self/timens_offsets: {e}"));
        }
    }
    match sys::fork(true) {
        Ok(0) => {
            l.joins.clear();
            stage2(chan, l)
        }
        Ok(pid) => {
            let _ = chan.send(&Msg::Pid(pid));
            // SAFETY: as in fail().
            unsafe { libc::_exit(0) }
        }
        Err(e) => fail(&chan, format!("fork: {e}")),
    }
}

/// Stage 2: the container's process. Never returns.
fn stage2(chan: Channel, l: Launch) -> ! {
    match setup(&chan, &l) {
        Ok(exec) => exec_now(&chan, &l, exec),
        Err(e) => fail(&chan, e),
    }
}

/// What is left to do after setup: the program, its argv and env.
struct Exec {
    program: std::ffi::CString,
    argv: Vec<std::ffi::CString>,
    envp: Vec<std::ffi::CString>,
    seccomp_late: bool,
}

fn setup(chan: &Channel, l: &Launch) -> Result<Exec, String> {
    let p = l.process;
    let linux = l.spec.linux().as_ref();
    let terminal = p.terminal().unwrap_or(false);
    // A session of its own (and the controlling terminal below, when asked).
    // SAFETY: setsid has no arguments; failing (already a leader) is harmless.
    unsafe { libc::setsid() };

    if let Kind::Init {
        rootfs,
        bundle,
        no_pivot,
        cgroup_sources,
        new_mount_ns,
        runtime_hooks,
        cgroup_ns,
        ..
    } = &l.kind
    {
        if let Some(h) = l.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
            // SAFETY: pointer and length of a live string.
            if unsafe { libc::sethostname(h.as_ptr() as *const libc::c_char, h.len()) } != 0 {
                return Err(format!("sethostname: {}", std::io::Error::last_os_error()));
            }
        }
        if let Some(d) = l.spec.domainname().as_deref().filter(|h| !h.is_empty()) {
            // SAFETY: as above.
            if unsafe { libc::setdomainname(d.as_ptr() as *const libc::c_char, d.len()) } != 0 {
                return Err(format!(
                    "setdomainname: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if *new_mount_ns {
            let opts = rootfs::Options {
                rootfs,
                bundle,
                no_pivot: *no_pivot,
                in_user_ns: l.in_user_ns,
                cgroup_sources: cgroup_sources.clone(),
            };
            rootfs::prepare(l.spec, &opts)?;
            // The working directory exists in the container (runc makes it too).
            let root = sys::open(rootfs, libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| format!("opening {}: {e}", rootfs.display()))?;
            let _ = rootfs::mkdir_all_in_root(root.as_fd(), p.cwd(), 0o755);
        }
        // Our cgroups were joined while the mounts were made; the cgroup namespace (rooted
        // at the container's cgroup) can only be made after that.
        match chan.recv() {
            Ok((Msg::CgroupsDone, _)) => {}
            // SAFETY: the runtime failed (it reports); end quietly.
            _ => unsafe { libc::_exit(1) },
        }
        if *cgroup_ns {
            sys::unshare(libc::CLONE_NEWCGROUP)
                .map_err(|e| format!("creating the cgroup namespace: {e}"))?;
        }
        if *runtime_hooks {
            chan.send(&Msg::RunCreateHooks).map_err(|e| e.to_string())?;
            match chan.recv() {
                Ok((Msg::HooksDone, _)) => {}
                // SAFETY: the runtime failed (it reports); end quietly.
                _ => unsafe { libc::_exit(1) },
            }
        }
        if let Some(hooks) = l.spec.hooks() {
            // Still being created (runc's status for createContainer too).
            let state =
                crate::container::hook_state(l.spec, l.id, sys::getpid(), bundle, "creating");
            crate::hooks::run_all("createContainer", hooks.create_container().as_ref(), &state)?;
        }
        if *new_mount_ns {
            rootfs::enter(rootfs, *no_pivot)?;
        } else {
            rootfs::chroot_only(rootfs)?;
        }
    }

    if terminal {
        let Some(sock) = &l.console else {
            return Err("process.terminal is set but no console socket was given".into());
        };
        let size = p.console_size().as_ref().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        });
        let (master, slave) =
            crate::console::open_pty(size).map_err(|e| format!("creating the console: {e}"))?;
        crate::console::send_master(sock.as_fd(), master.as_fd())
            .map_err(|e| format!("sending the console to the console socket: {e}"))?;
        drop(master);
        crate::console::become_stdio(&slave).map_err(|e| format!("setting up the console: {e}"))?;
    }

    if let Kind::Init { .. } = l.kind {
        for (k, v) in linux
            .and_then(|l| l.sysctl().as_ref())
            .into_iter()
            .flatten()
        {
            let path = Path::new("/proc/sys").join(k.replace('.', "/"));
            std::fs::write(&path, v).map_err(|e| format!("sysctl {k}={v}: {e}"))?;
        }
        rootfs::finalize(l.spec)?;
    }

    if !l.no_new_keyring {
        // A fresh session keyring per container, so containers do not share the host's keys.
        let name = std::ffi::CString::new(format!("_ses.{}", l.id)).unwrap_or_default();
        // SAFETY: keyctl(KEYCTL_JOIN_SESSION_KEYRING, name); errors are ignored where keyrings
        // are unavailable (ENOSYS) or refused (as runc does).
        unsafe { libc::syscall(libc::SYS_keyctl, 1, name.as_ptr()) };
    }

    process::apply_personality(linux)?;
    process::apply_rlimits(p)?;
    process::apply_io_priority(p)?;
    process::apply_scheduler(p)?;

    let env = process::with_home(p.env().as_deref().unwrap_or(&[]), p.user().uid());
    let args = p.args().clone().unwrap_or_default();
    let arg0 = args.first().ok_or("process.args is empty")?;
    let program = process::find_program(arg0, &env, p.cwd())?;

    let nnp = p.no_new_privileges().unwrap_or(false);
    // Nothing of ours reaches the program: every descriptor past the preserved ones is
    // closed on exec (the console, the channel, the FIFO, anything inherited). Done before
    // the seccomp filter goes in: a profile need not allow close_range or fcntl.
    let first = 3 + l.preserve_fds;
    for fd in 3..first {
        let _ = sys::set_cloexec(fd as i32, false);
    }
    sys::cloexec_from(first).map_err(|e| format!("close_range: {e}"))?;
    let mut seccomp_late = false;
    if let Some(prog) = l.seccomp {
        if prog.needs_listener() || !nnp {
            // Without no_new_privs installing a filter needs CAP_SYS_ADMIN: before the
            // capabilities go. With a listener, the descriptor must reach the runtime now.
            install_seccomp(chan, prog)?;
        } else {
            seccomp_late = true;
        }
    }

    process::apply_bounding(&l.caps)?;
    process::apply_user(p, l.setgroups_allowed)?;
    process::apply_caps(&l.caps)?;
    if nnp {
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|e| format!("no_new_privs: {e}"))?;
    }

    sys::chdir(p.cwd()).map_err(|e| {
        format!(
            "chdir to cwd ({}) set in config.json failed: {e}",
            p.cwd().display()
        )
    })?;
    // A working directory outside the container's root (a leaked host descriptor, the
    // CVE-2024-21626 class) shows as "(unreachable)": refuse to run there.
    match std::env::current_dir() {
        Ok(d) if d.is_absolute() => {}
        _ => {
            return Err(format!(
                "cwd {} is outside the container root",
                p.cwd().display()
            ))
        }
    }

    Ok(Exec {
        program: process::path_cstring(&program)?,
        argv: process::cstrings(&args)?,
        envp: process::cstrings(&env)?,
        seccomp_late,
    })
}

fn install_seccomp(chan: &Channel, prog: &Program) -> Result<(), String> {
    let listener = prog.install().map_err(|e| e.to_string())?;
    if let Some(fd) = listener {
        chan.send_fds(&Msg::SeccompListener, &[&fd])
            .map_err(|e| format!("sending the seccomp listener: {e}"))?;
        match chan.recv() {
            Ok((Msg::SeccompDone, _)) => {}
            // SAFETY: the runtime failed and reports; end quietly.
            _ => unsafe { libc::_exit(1) },
        }
    }
    Ok(())
}

fn exec_now(chan: &Channel, l: &Launch, x: Exec) -> ! {
    let _ = chan.send(&Msg::Ready);
    if let Kind::Init { fifo, bundle, .. } = &l.kind {
        // Block until `start` writes its byte.
        let mut b = [0u8; 1];
        loop {
            // SAFETY: read into a one-byte buffer from our FIFO descriptor.
            let r = unsafe { libc::read(fifo.as_raw_fd(), b.as_mut_ptr() as *mut libc::c_void, 1) };
            if r == 1 {
                break;
            }
            if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // SAFETY: nothing left to start.
            unsafe { libc::_exit(1) }
        }
        if let Some(hooks) = l.spec.hooks() {
            let state =
                // The program is not running yet: "created", as runc says.
                crate::container::hook_state(l.spec, l.id, sys::getpid(), bundle, "created");
            if let Err(e) =
                crate::hooks::run_all("startContainer", hooks.start_container().as_ref(), &state)
            {
                eprintln_raw(&e);
                // SAFETY: the hook failed; the container must not run.
                unsafe { libc::_exit(1) }
            }
        }
    }
    if x.seccomp_late {
        if let Some(prog) = l.seccomp {
            if let Err(e) = prog.install() {
                eprintln_raw(&e.to_string());
                // SAFETY: refusing to run unconfined.
                unsafe { libc::_exit(1) }
            }
        }
    }
    let e = sys::execve(&x.program, &x.argv, &x.envp);
    eprintln_raw(&format!(
        "exec {}: {e}",
        OsStr::new(std::str::from_utf8(x.program.as_bytes()).unwrap_or("?")).to_string_lossy()
    ));
    // SAFETY: exec failed; 127 as a shell would.
    unsafe { libc::_exit(127) }
}

/// Writes a line to stderr without std's locks (we are a forked child).
fn eprintln_raw(s: &str) {
    let mut line = s.as_bytes().to_vec();
    line.push(b'\n');
    // SAFETY: fd 2 is a valid descriptor number; writing to it has no memory-safety impact.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    let _ = sys::write_all(fd, &line);
}
