//! seccomp filters on the real kernel: each test forks a child that installs a compiled
//! profile, makes system calls and reports through its exit status (0: all as expected,
//! another number: which check failed), or dies of the signal the filter sends.

use oci_spec::runtime::LinuxSeccomp;
use serde_json::json;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::time::{Duration, Instant};
use virtkit_oci::seccomp::{self, Program, SeccompError};

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exit(i32),
    Signal(i32),
}

fn profile(v: serde_json::Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("test profile parses")
}

fn compile(v: serde_json::Value) -> Program {
    seccomp::compile(&profile(v)).expect("profile compiles")
}

/// Forks; the child runs `body` and exits with what it returns (101 if it panics).
fn fork_child(body: impl FnOnce() -> i32) -> (libc::pid_t, impl FnOnce() -> Outcome) {
    // SAFETY: the child only runs `body` (system calls, small allocations, which glibc
    // supports after fork) and then _exit; the parent only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: ends the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    (pid, move || wait(pid))
}

fn wait(pid: libc::pid_t) -> Outcome {
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        Outcome::Exit(libc::WEXITSTATUS(status))
    } else {
        Outcome::Signal(libc::WTERMSIG(status))
    }
}

/// Installs `prog` in a child and runs `body` there (exit 100: install failed).
fn run_under(prog: &Program, body: impl FnOnce(Option<OwnedFd>) -> i32) -> Outcome {
    let (_, wait) = fork_child(|| match prog.install() {
        Ok(fd) => body(fd),
        Err(_) => 100,
    });
    wait()
}

/// A raw system call: the return value or the errno.
fn sys(nr: i64, args: &[u64]) -> Result<i64, i32> {
    let a = |i: usize| args.get(i).copied().unwrap_or(0);
    // SAFETY: the tests pass arguments valid for each call (pointers to live buffers).
    let r = unsafe { libc::syscall(nr, a(0), a(1), a(2), a(3), a(4), a(5)) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r)
    }
}

macro_rules! check {
    ($cond:expr, $code:expr) => {
        if !$cond {
            return $code;
        }
    };
}

fn cstr(p: &std::path::Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, which we own from then on.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

const AT_FDCWD: u64 = libc::AT_FDCWD as i64 as u64;

#[test]
fn errno_with_the_chosen_value() {
    let dir = tempfile::tempdir().unwrap();
    let a = cstr(&dir.path().join("a"));
    let b = cstr(&dir.path().join("b"));
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSPC},
            {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO"}
        ]
    }));
    let d = cstr(dir.path());
    let out = run_under(&prog, |_| {
        check!(
            sys(libc::SYS_mkdirat, &[AT_FDCWD, a.as_ptr() as u64, 0o755]) == Err(libc::ENOSPC),
            1
        );
        check!(
            sys(libc::SYS_mkdir, &[b.as_ptr() as u64, 0o755]) == Err(libc::ENOSPC),
            2
        );
        check!(
            sys(libc::SYS_rmdir, &[d.as_ptr() as u64]) == Err(libc::EPERM),
            3
        );
        check!(sys(libc::SYS_getpid, &[]).is_ok(), 4);
        0
    });
    assert_eq!(out, Outcome::Exit(0));
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
    assert!(dir.path().exists());
}

#[test]
fn allow_list_with_default_errno_and_enosys_for_newer_calls() {
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EOPNOTSUPP,
        "syscalls": [{"names": ["exit_group", "exit", "getpid"], "action": "SCMP_ACT_ALLOW"}]
    }));
    let out = run_under(&prog, |_| {
        check!(sys(libc::SYS_getpid, &[]).is_ok(), 1);
        check!(sys(libc::SYS_getppid, &[]) == Err(libc::EOPNOTSUPP), 2);
        check!(sys(libc::SYS_uname, &[0]) == Err(libc::EOPNOTSUPP), 3);
        // fanotify_init (300) is newer than exit_group (231), the newest call named.
        check!(
            sys(libc::SYS_fanotify_init, &[0, 0]) == Err(libc::ENOSYS),
            4
        );
        check!(sys(1000, &[]) == Err(libc::ENOSYS), 5);
        0
    });
    assert_eq!(out, Outcome::Exit(0));
}

extern "C" fn call_getppid(flag: *mut libc::c_void) -> *mut libc::c_void {
    // SAFETY: a plain system call.
    unsafe { libc::syscall(libc::SYS_getppid) };
    // SAFETY: `flag` points to the AtomicI32 the spawner keeps alive until the join.
    unsafe { (*(flag as *const AtomicI32)).store(1, Ordering::SeqCst) };
    std::ptr::null_mut()
}

/// Runs getppid in a second thread and joins it: 0 if the thread died in the call, 2 if it
/// came back. (pthread directly: std's join expects threads to finish normally.)
fn getppid_in_thread() -> i32 {
    let flag = AtomicI32::new(0);
    let mut t: libc::pthread_t = 0;
    // SAFETY: the thread gets a pointer to `flag`, which outlives the join below.
    let r = unsafe {
        libc::pthread_create(
            &mut t,
            std::ptr::null(),
            call_getppid,
            &flag as *const AtomicI32 as *mut libc::c_void,
        )
    };
    check!(r == 0, 1);
    // SAFETY: joins the thread created above.
    unsafe { libc::pthread_join(t, std::ptr::null_mut()) };
    if flag.load(Ordering::SeqCst) == 0 {
        0
    } else {
        2
    }
}

#[test]
fn kill_thread_kills_only_the_thread() {
    for action in ["SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL"] {
        let prog = compile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": action}]
        }));
        assert_eq!(
            run_under(&prog, |_| getppid_in_thread()),
            Outcome::Exit(0),
            "{action}"
        );
        // The only thread: the process goes with it.
        let out = run_under(&prog, |_| {
            let _ = sys(libc::SYS_getppid, &[]);
            3
        });
        assert_eq!(out, Outcome::Signal(libc::SIGSYS), "{action}");
    }
}

#[test]
fn kill_process_kills_every_thread() {
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]
    }));
    assert_eq!(
        run_under(&prog, |_| getppid_in_thread()),
        Outcome::Signal(libc::SIGSYS)
    );
}

static TRAP_CODE: AtomicI32 = AtomicI32::new(-1);
static TRAP_SYSCALL: AtomicI32 = AtomicI32::new(-1);
static TRAP_DATA: AtomicI32 = AtomicI32::new(-1);
static TRAP_ARCH: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; for SIGSYS the union holds
    // { void *call_addr; int syscall; unsigned int arch; } after the three leading ints.
    unsafe {
        TRAP_CODE.store((*info).si_code, Ordering::SeqCst);
        TRAP_DATA.store((*info).si_errno, Ordering::SeqCst);
        let base = (info as *const u8).add(2 * std::mem::size_of::<usize>());
        let sys = base.add(std::mem::size_of::<usize>()) as *const i32;
        TRAP_SYSCALL.store(*sys, Ordering::SeqCst);
        TRAP_ARCH.store(*(sys.add(1) as *const u32), Ordering::SeqCst);
    }
}

#[test]
fn trap_delivers_sigsys_with_the_syscall() {
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}]
    }));
    let (_, wait) = fork_child(|| {
        // SAFETY: installs a SIGSYS handler that only stores into atomics.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
        }
        check!(prog.install().is_ok(), 100);
        let _ = sys(libc::SYS_getppid, &[]);
        check!(TRAP_CODE.load(Ordering::SeqCst) == 1, 1); // SYS_SECCOMP
        check!(
            TRAP_SYSCALL.load(Ordering::SeqCst) == libc::SYS_getppid as i32,
            2
        );
        check!(TRAP_DATA.load(Ordering::SeqCst) == 0, 3);
        check!(TRAP_ARCH.load(Ordering::SeqCst) == 0xc000_003e, 4);
        check!(sys(libc::SYS_getpid, &[]).is_ok(), 5);
        0
    });
    assert_eq!(wait(), Outcome::Exit(0));
}

/// Lines of the kernel log from now on (the /dev/kmsg reader starts at the end).
struct Kmsg(std::fs::File);

impl Kmsg {
    fn open() -> Option<Kmsg> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .ok()?;
        // SAFETY: lseek on our own descriptor; SEEK_END skips the records logged so far.
        unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        Some(Kmsg(f))
    }

    fn lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        // One record per read; EAGAIN when there is none left.
        while let Ok(n) = self.0.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

#[test]
fn log_allows_and_logs() {
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_LOG"}]
    }));
    let mut kmsg = Kmsg::open().expect("/dev/kmsg (the tests run as root)");
    let me = std::process::id() as i64;
    let (pid, wait) = fork_child(|| {
        check!(prog.install().is_ok(), 100);
        check!(sys(libc::SYS_getppid, &[]) == Ok(me), 1);
        0
    });
    assert_eq!(wait(), Outcome::Exit(0));
    // The audit record of a logged syscall: type=1326 ... pid=<child> ... syscall=110.
    let want_pid = format!(" pid={pid} ");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        seen.extend(kmsg.lines());
        if seen.iter().any(|l| {
            l.contains("type=1326") && l.contains(&want_pid) && l.contains(" syscall=110 ")
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no seccomp audit record for pid {pid} in the kernel log; saw:\n{}",
            seen.join("")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn argument_conditions_on_the_kernel() {
    let memfd = {
        let name = CString::new("seccomp-test").unwrap();
        // SAFETY: memfd_create with a valid name; the fd is owned right away.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
        assert!(fd >= 0);
        // SAFETY: fd is a new descriptor we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            // 64-bit value whose low half is a valid persona query (0xffffffff).
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES,
             "args": [{"index": 0, "value": 0x1_ffff_ffffu64, "op": "SCMP_CMP_EQ"}]},
            // Two rules for one syscall (OR): write access modes are refused.
            {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EROFS,
             "args": [{"index": 2, "value": 3, "valueTwo": libc::O_WRONLY, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EROFS,
             "args": [{"index": 2, "value": 3, "valueTwo": libc::O_RDWR, "op": "SCMP_CMP_MASKED_EQ"}]},
            // Offsets from 4 GiB on.
            {"names": ["lseek"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EFBIG,
             "args": [{"index": 1, "value": 0x1_0000_0000u64, "op": "SCMP_CMP_GE"}]},
            // Two conditions (AND): F_SETFL with non-zero flags.
            {"names": ["fcntl"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
             "args": [{"index": 1, "value": libc::F_SETFL, "op": "SCMP_CMP_EQ"},
                      {"index": 2, "value": 0, "op": "SCMP_CMP_NE"}]}
        ]
    }));
    let null = CString::new("/dev/null").unwrap();
    let fd = memfd.as_raw_fd() as u64;
    let out = run_under(&prog, |_| {
        check!(sys(libc::SYS_personality, &[0xffff_ffff]).is_ok(), 1);
        check!(
            sys(libc::SYS_personality, &[0x1_ffff_ffff]) == Err(libc::EACCES),
            2
        );
        let open = |flags: i32| {
            sys(
                libc::SYS_openat,
                &[AT_FDCWD, null.as_ptr() as u64, flags as u64],
            )
        };
        let ro = open(libc::O_RDONLY | libc::O_CLOEXEC);
        check!(ro.is_ok(), 3);
        check!(open(libc::O_WRONLY) == Err(libc::EROFS), 4);
        check!(open(libc::O_RDWR | libc::O_CLOEXEC) == Err(libc::EROFS), 5);
        check!(sys(libc::SYS_lseek, &[fd, 5, 0]) == Ok(5), 6);
        check!(
            sys(libc::SYS_lseek, &[fd, 0xffff_ffff, 0]) == Ok(0xffff_ffff),
            7
        );
        check!(
            sys(libc::SYS_lseek, &[fd, 0x1_0000_0000, 0]) == Err(libc::EFBIG),
            8
        );
        check!(sys(libc::SYS_fcntl, &[fd, libc::F_GETFL as u64]).is_ok(), 9);
        check!(
            sys(libc::SYS_fcntl, &[fd, libc::F_SETFL as u64, 0]).is_ok(),
            10
        );
        check!(
            sys(
                libc::SYS_fcntl,
                &[fd, libc::F_SETFL as u64, libc::O_NONBLOCK as u64]
            ) == Err(libc::EPERM),
            11
        );
        0
    });
    assert_eq!(out, Outcome::Exit(0));
}

/// A 32-bit x86 system call from this 64-bit process (the kernel tags it AUDIT_ARCH_I386).
fn int80(nr: u32) -> i32 {
    let ret: i32;
    // SAFETY: int 0x80 with no pointer arguments; the compat entry clobbers r8-r11.
    unsafe {
        // rbx belongs to LLVM: swap the (zero) first argument in around the call.
        std::arch::asm!(
            "xchg {arg1:r}, rbx",
            "int 0x80",
            "xchg {arg1:r}, rbx",
            arg1 = inout(reg) 0u64 => _,
            inlateout("eax") nr as i32 => ret,
            lateout("r8") _,
            lateout("r9") _,
            lateout("r10") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    ret
}

#[test]
fn architectures_x86_and_x32_on_x86_64() {
    const X86_GETPID: u32 = 20;
    const X86_GETPPID: u32 = 64;
    const X32_GETPID: i64 = 0x4000_0000 | 39;
    // This kernel runs 32-bit x86 calls (CONFIG_IA32_EMULATION): check without a filter.
    let (_, wait) = fork_child(|| if int80(X86_GETPID) > 0 { 0 } else { 1 });
    assert_eq!(wait(), Outcome::Exit(0), "int 0x80 getpid without a filter");

    // Not listed: x86 and x32 calls get the bad-arch action (kill).
    let native_only = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ESRCH}]
    }));
    assert_eq!(
        run_under(&native_only, |_| int80(X86_GETPID)),
        Outcome::Signal(libc::SIGSYS)
    );
    assert_eq!(
        run_under(&native_only, |_| sys(X32_GETPID, &[]).map_or(7, |_| 8)),
        Outcome::Signal(libc::SIGSYS)
    );

    // Listed: the rules apply with each ABI's numbers.
    let all = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": ["getppid", "getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ESRCH,
            "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]
    }));
    let out = run_under(&all, |_| {
        check!(int80(X86_GETPPID) == -libc::ESRCH, 1);
        check!(int80(X86_GETPID) == -libc::ESRCH, 2);
        check!(sys(libc::SYS_getppid, &[]) == Err(libc::ESRCH), 3);
        check!(sys(libc::SYS_getppid, &[1]).is_ok(), 4);
        // The filter answers before the kernel finds x32 disabled (it would say ENOSYS).
        check!(sys(X32_GETPID, &[]) == Err(libc::ESRCH), 5);
        check!(int80(1000) == -libc::ENOSYS, 6);
        0
    });
    assert_eq!(out, Outcome::Exit(0));
}

#[test]
fn tsync_filters_every_thread_and_flags_load() {
    let dir = tempfile::tempdir().unwrap();
    for (flags, expect_filtered) in [
        (
            json!([
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
            ]),
            true,
        ),
        (json!(["SECCOMP_FILTER_FLAG_LOG"]), false),
    ] {
        let prog = compile(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": flags,
            "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSPC}]
        }));
        let path = cstr(&dir.path().join(format!("t{expect_filtered}")));
        let (_, wait) = fork_child(|| {
            let (rd, wr) = pipe();
            let rd = std::fs::File::from(rd);
            let p = path.as_ptr() as u64;
            // A thread that exists before the filter and calls mkdirat after it.
            let t = std::thread::spawn(move || {
                let mut b = [0u8; 1];
                let _ = (&rd).read(&mut b);
                sys(libc::SYS_mkdirat, &[AT_FDCWD, p, 0o755])
            });
            check!(prog.install().is_ok(), 100);
            drop(wr);
            let r = t.join().unwrap_or(Err(-1));
            match (expect_filtered, r) {
                (true, Err(libc::ENOSPC)) | (false, Ok(0)) => 0,
                _ => 1,
            }
        });
        assert_eq!(wait(), Outcome::Exit(0), "flags {flags}");
        assert_eq!(
            dir.path().join(format!("t{expect_filtered}")).exists(),
            !expect_filtered
        );
    }
}

/// Receives one message with one descriptor: the bytes and the descriptor.
fn recv_with_fd(sock: RawFd) -> (Vec<u8>, Option<OwnedFd>) {
    let mut buf = vec![0u8; 1 << 16];
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr points to live buffers for the duration of recvmsg.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        buf.truncate(n as usize);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        let fd = if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            None
        } else {
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
            Some(OwnedFd::from_raw_fd(fd))
        };
        (buf, fd)
    }
}

fn accept_within(listener: &UnixListener, secs: u64) -> std::os::unix::net::UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("no connection from the child: {e}"),
        }
    }
}

fn poll_in(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

#[test]
fn notify_through_the_listener_path() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let prog = compile(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock_path,
        "listenerMetadata": "meta-1",
        "flags": ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdirat", "mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    }));
    assert!(prog.needs_listener());
    let state: oci_spec::runtime::State = serde_json::from_value(json!({
        "ociVersion": "1.2.0", "id": "ctr-1", "status": "running", "pid": 1, "bundle": "/b"
    }))
    .unwrap();
    let names: Vec<CString> = ["one", "two", "three"]
        .iter()
        .map(|n| cstr(&dir.path().join(n)))
        .collect();
    let path_for_child = sock_path.clone();
    let (pid, wait) = fork_child(|| {
        let Ok(Some(fd)) = prog.install() else {
            return 100;
        };
        let Ok(json) = seccomp::process_state_json(
            // SAFETY: getpid has no preconditions.
            unsafe { libc::getpid() },
            Some("meta-1"),
            &state,
        ) else {
            return 101;
        };
        check!(
            seccomp::send_listener_fd(&path_for_child, fd.as_fd(), &json).is_ok(),
            102
        );
        drop(fd);
        let mk = |n: &CString| sys(libc::SYS_mkdirat, &[AT_FDCWD, n.as_ptr() as u64, 0o755]);
        check!(mk(&names[0]) == Err(libc::EXDEV), 1);
        check!(mk(&names[1]) == Ok(0), 2);
        check!(mk(&names[2]) == Ok(42), 3);
        0
    });

    // The agent: the state and the listener arrive on the socket.
    let conn = accept_within(&listener, 20);
    let (json, fd) = recv_with_fd(conn.as_raw_fd());
    let notify = fd.expect("the listener fd came with the message");
    let st: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(st["ociVersion"], "1.2.0");
    assert_eq!(st["fds"], json!(["seccompFd"]));
    assert_eq!(st["pid"], pid);
    assert_eq!(st["metadata"], "meta-1");
    assert_eq!(st["state"]["id"], "ctr-1");
    assert_eq!(st["state"]["status"], "running");

    // Answer three notifications: an error, "continue" (the kernel runs it), a value.
    for round in 0..3 {
        assert!(
            poll_in(notify.as_raw_fd(), 20_000),
            "no notification {round}"
        );
        // SAFETY: both structures are plain data the ioctls fill or read.
        unsafe {
            let mut req: libc::seccomp_notif = std::mem::zeroed();
            let r = libc::ioctl(notify.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req);
            assert_eq!(r, 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
            assert_eq!(req.pid as i32, pid);
            assert_eq!(req.data.nr as i64, libc::SYS_mkdirat);
            assert_eq!(req.data.arch, 0xc000_003e);
            let mut resp: libc::seccomp_notif_resp = std::mem::zeroed();
            resp.id = req.id;
            match round {
                0 => resp.error = -libc::EXDEV,
                1 => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                _ => resp.val = 42,
            }
            let r = libc::ioctl(
                notify.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND,
                &mut resp,
            );
            assert_eq!(r, 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
        }
    }
    assert_eq!(wait(), Outcome::Exit(0));
    assert!(!dir.path().join("one").exists());
    assert!(dir.path().join("two").is_dir());
    assert!(!dir.path().join("three").exists());
}

#[test]
fn send_listener_fd_passes_the_descriptor_and_a_long_state() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("agent.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let (rd, wr) = pipe();
    // Longer than a socket buffer: the rest follows the first message.
    let state = format!("{{\"pad\":\"{}\"}}", "x".repeat(300_000)).into_bytes();
    let expected = state.clone();
    let agent = std::thread::spawn(move || {
        let conn = accept_within(&listener, 20);
        let (mut got, fd) = recv_with_fd(conn.as_raw_fd());
        (&conn).read_to_end(&mut got).unwrap();
        (got, fd)
    });
    seccomp::send_listener_fd(&sock_path, wr.as_fd(), &state).unwrap();
    let (got, fd) = agent.join().unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected);
    // The received descriptor is the pipe's write end.
    let fd = fd.expect("descriptor received");
    drop(wr);
    let mut w = std::fs::File::from(fd);
    std::io::Write::write_all(&mut w, b"ping").unwrap();
    drop(w);
    let mut s = String::new();
    std::fs::File::from(rd).read_to_string(&mut s).unwrap();
    assert_eq!(s, "ping");

    let err =
        seccomp::send_listener_fd(&dir.path().join("nobody"), dir_fd(&dir), b"{}").unwrap_err();
    assert!(matches!(err, SeccompError::ListenerConnect { .. }));
    assert!(err.to_string().contains("nobody"), "{err}");
}

fn dir_fd(dir: &tempfile::TempDir) -> std::os::fd::BorrowedFd<'static> {
    let f = std::fs::File::open(dir.path()).unwrap();
    // Leaked on purpose: the test only needs some descriptor that stays open.
    let fd = f.as_raw_fd();
    std::mem::forget(f);
    // SAFETY: the descriptor stays open for the rest of the process.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Docker's default profile as dockerd hands it to runc on amd64 with the default
/// capabilities (moby profiles/seccomp/default.json with its includes resolved).
fn docker_default() -> serde_json::Value {
    let allowed = [
        "accept",
        "accept4",
        "access",
        "adjtimex",
        "alarm",
        "bind",
        "brk",
        "capget",
        "capset",
        "chdir",
        "chmod",
        "chown",
        "chown32",
        "clock_adjtime",
        "clock_adjtime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_gettime",
        "clock_gettime64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "close",
        "close_range",
        "connect",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "epoll_wait_old",
        "eventfd",
        "eventfd2",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fadvise64_64",
        "fallocate",
        "fanotify_mark",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchown",
        "fchown32",
        "fchownat",
        "fcntl",
        "fcntl64",
        "fdatasync",
        "fgetxattr",
        "flistxattr",
        "flock",
        "fork",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstat64",
        "fstatat64",
        "fstatfs",
        "fstatfs64",
        "fsync",
        "ftruncate",
        "ftruncate64",
        "futex",
        "futex_time64",
        "futex_waitv",
        "futimesat",
        "getcpu",
        "getcwd",
        "getdents",
        "getdents64",
        "getegid",
        "getegid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getgroups",
        "getgroups32",
        "getitimer",
        "getpeername",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrandom",
        "getresgid",
        "getresgid32",
        "getresuid",
        "getresuid32",
        "getrlimit",
        "get_robust_list",
        "getrusage",
        "getsid",
        "getsockname",
        "getsockopt",
        "get_thread_area",
        "gettid",
        "gettimeofday",
        "getuid",
        "getuid32",
        "getxattr",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "io_cancel",
        "ioctl",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "ioprio_get",
        "ioprio_set",
        "io_setup",
        "io_submit",
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
        "ipc",
        "kill",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "lchown",
        "lchown32",
        "lgetxattr",
        "link",
        "linkat",
        "listen",
        "listxattr",
        "llistxattr",
        "_llseek",
        "lremovexattr",
        "lseek",
        "lsetxattr",
        "lstat",
        "lstat64",
        "madvise",
        "membarrier",
        "memfd_create",
        "memfd_secret",
        "mincore",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mmap2",
        "mprotect",
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_unlink",
        "mremap",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "name_to_handle_at",
        "nanosleep",
        "newfstatat",
        "_newselect",
        "open",
        "openat",
        "openat2",
        "pause",
        "pidfd_open",
        "pidfd_send_signal",
        "pipe",
        "pipe2",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "poll",
        "ppoll",
        "ppoll_time64",
        "prctl",
        "pread64",
        "preadv",
        "preadv2",
        "prlimit64",
        "process_mrelease",
        "pselect6",
        "pselect6_time64",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmmsg_time64",
        "recvmsg",
        "remap_file_pages",
        "removexattr",
        "rename",
        "renameat",
        "renameat2",
        "restart_syscall",
        "rmdir",
        "rseq",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "seccomp",
        "select",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "send",
        "sendfile",
        "sendfile64",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setfsgid",
        "setfsgid32",
        "setfsuid",
        "setfsuid32",
        "setgid",
        "setgid32",
        "setgroups",
        "setgroups32",
        "setitimer",
        "setpgid",
        "setpriority",
        "setregid",
        "setregid32",
        "setresgid",
        "setresgid32",
        "setresuid",
        "setresuid32",
        "setreuid",
        "setreuid32",
        "setrlimit",
        "set_robust_list",
        "setsid",
        "setsockopt",
        "set_thread_area",
        "set_tid_address",
        "setuid",
        "setuid32",
        "setxattr",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        "shutdown",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigprocmask",
        "sigreturn",
        "socketcall",
        "socketpair",
        "splice",
        "stat",
        "stat64",
        "statfs",
        "statfs64",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "sysinfo",
        "tee",
        "tgkill",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        "times",
        "tkill",
        "truncate",
        "truncate64",
        "ugetrlimit",
        "umask",
        "uname",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimensat_time64",
        "utimes",
        "vfork",
        "vmsplice",
        "wait4",
        "waitid",
        "waitpid",
        "write",
        "writev",
    ];
    let personality = |v: u64| {
        json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]})
    };
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": allowed.to_vec(), "action": "SCMP_ACT_ALLOW"},
            {"names": ["process_vm_readv", "process_vm_writev", "ptrace"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_NE"}]},
            personality(0), personality(8), personality(131072), personality(131080),
            personality(4294967295),
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["modify_ldt"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
        ]
    })
}

#[test]
fn docker_default_profile() {
    let prog = compile(docker_default());
    assert!(
        prog.instructions().len() < 1500,
        "{} instructions",
        prog.instructions().len()
    );
    // A program still runs under it.
    let true_bin = CString::new("/bin/true").unwrap();
    let argv = [true_bin.as_ptr(), std::ptr::null()];
    let out = run_under(&prog, |_| {
        // SAFETY: argv is a NULL-terminated array of C strings that outlive the call.
        unsafe { libc::execv(true_bin.as_ptr(), argv.as_ptr()) };
        99
    });
    assert_eq!(out, Outcome::Exit(0));
    // What it refuses.
    let out = run_under(&prog, |_| {
        check!(sys(libc::SYS_keyctl, &[0, 0]) == Err(libc::EPERM), 1);
        check!(
            sys(libc::SYS_unshare, &[libc::CLONE_NEWUSER as u64]) == Err(libc::EPERM),
            2
        );
        check!(sys(libc::SYS_clone3, &[0, 0]) == Err(libc::ENOSYS), 3);
        check!(
            sys(
                libc::SYS_clone,
                &[(libc::CLONE_NEWUSER | libc::SIGCHLD) as u64, 0, 0, 0, 0]
            ) == Err(libc::EPERM),
            4
        );
        check!(
            sys(libc::SYS_mount, &[0, 0, 0, 0, 0]) == Err(libc::EPERM),
            5
        );
        check!(
            sys(libc::SYS_socket, &[40, libc::SOCK_STREAM as u64, 0]) == Err(libc::EPERM),
            6
        );
        let unix = sys(
            libc::SYS_socket,
            &[
                libc::AF_UNIX as u64,
                (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
                0,
            ],
        );
        check!(unix.is_ok(), 7);
        check!(sys(libc::SYS_personality, &[0xffff_ffff]).is_ok(), 8);
        check!(sys(libc::SYS_personality, &[0x1234]) == Err(libc::EPERM), 9);
        check!(sys(libc::SYS_getpid, &[]).is_ok(), 10);
        // Newer than anything the profile names: ENOSYS, not EPERM (runc's stub).
        check!(sys(600, &[]) == Err(libc::ENOSYS), 11);
        // A call that exists but is not allowed: EPERM.
        check!(sys(libc::SYS_reboot, &[0, 0, 0, 0]) == Err(libc::EPERM), 12);
        check!(int80(20) > 0, 13);
        check!(int80(25) == -libc::EPERM, 14); // x86 stime: not allowed
        0
    });
    assert_eq!(out, Outcome::Exit(0));
}

#[test]
fn features_lists() {
    assert!(seccomp::supported_actions().contains(&"SCMP_ACT_NOTIFY"));
    assert!(seccomp::supported_actions().contains(&"SCMP_ACT_KILL_PROCESS"));
    assert_eq!(seccomp::supported_operators().len(), 7);
    for a in [
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_S390X",
    ] {
        assert!(seccomp::supported_archs().contains(&a), "{a}");
    }
    // Linux 6.18 knows all four flags.
    assert_eq!(
        seccomp::kernel_supported_flags(),
        seccomp::supported_flags()
    );
}

#[test]
fn install_errors_come_from_the_kernel() {
    // Without no_new_privs and without CAP_SYS_ADMIN the kernel refuses: EACCES.
    let prog = compile(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    let (_, wait) = fork_child(|| {
        // Drop every capability (we run as root) but keep no_new_privs off.
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: i32,
        }
        let hdr = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [0u32; 6]; // two {effective, permitted, inheritable}
                              // SAFETY: capset with a valid header and data array.
        check!(
            unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) } == 0,
            1
        );
        match prog.install() {
            Err(SeccompError::NeedsNoNewPrivs) => 0,
            _ => 2,
        }
    });
    assert_eq!(wait(), Outcome::Exit(0));
}

/// Our syscall numbers against libseccomp's resolver (Debian's `seccomp` package), for the
/// calls of Docker's profile on the architectures both know.
#[test]
fn syscall_numbers_match_libseccomp() {
    let Ok(out) = std::process::Command::new("scmp_sys_resolver")
        .arg("read")
        .output()
    else {
        eprintln!("scmp_sys_resolver not installed (Debian package seccomp): comparison skipped");
        return;
    };
    assert!(out.status.success());
    let names: Vec<String> = docker_default()["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
        })
        .chain(
            [
                "breakpoint",
                "set_tls",
                "cacheflush",
                "riscv_flush_icache",
                "s390_runtime_instr",
                "spu_run",
                "newfstatat",
                "fstatat64",
                "uselib",
                "mmap2",
            ]
            .map(String::from),
        )
        .collect();
    let mut compared = 0;
    let mut wrong = Vec::new();
    for (arch, ours) in [
        ("x86_64", "SCMP_ARCH_X86_64"),
        ("x86", "SCMP_ARCH_X86"),
        ("x32", "SCMP_ARCH_X32"),
        ("aarch64", "SCMP_ARCH_AARCH64"),
        ("arm", "SCMP_ARCH_ARM"),
        ("riscv64", "SCMP_ARCH_RISCV64"),
        ("ppc64le", "SCMP_ARCH_PPC64LE"),
        ("s390x", "SCMP_ARCH_S390X"),
        ("mips", "SCMP_ARCH_MIPS"),
        ("mips64", "SCMP_ARCH_MIPS64"),
    ] {
        for name in &names {
            let out = std::process::Command::new("scmp_sys_resolver")
                .args(["-a", arch, name])
                .output()
                .unwrap();
            let theirs: i64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(-1);
            let mine = seccomp::resolve_syscall(ours, name);
            if theirs < 0 {
                // Unknown to this libseccomp, or only through socketcall/ipc there.
                continue;
            }
            compared += 1;
            if mine != Some(theirs as u32) {
                wrong.push(format!("{arch} {name}: libseccomp {theirs}, ours {mine:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(compared > 2000, "{compared}");
}

/// Builds a filter with libseccomp (Debian's python3-seccomp) the way runc does, for each
/// profile on stdin (one JSON per line, flattened: one name and no repeated argument per
/// rule, so runc's splitting is already done; rules equal to the default are skipped as runc
/// skips them). Prints libseccomp's pseudo filter code (its rule tree; its BPF is not used:
/// libseccomp 2.5.4 mis-tracks the accumulator between sibling argument checks), the
/// largest syscall number per architecture as runc's -ENOSYS stub computes it, and, when
/// asked, the rules libseccomp drops for each syscall of each architecture ("ARCH:nr"):
/// removing them one after the other leaves the same checks for that syscall.
const LIBSECCOMP_AS_RUNC: &str = r##"
import sys, json, ctypes, tempfile, seccomp
lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
ARCH = {"SCMP_ARCH_X86_64": seccomp.Arch.X86_64, "SCMP_ARCH_X86": seccomp.Arch.X86,
        "SCMP_ARCH_X32": seccomp.Arch.X32}
OPS = {"SCMP_CMP_NE": seccomp.NE, "SCMP_CMP_LT": seccomp.LT, "SCMP_CMP_LE": seccomp.LE,
       "SCMP_CMP_EQ": seccomp.EQ, "SCMP_CMP_GE": seccomp.GE, "SCMP_CMP_GT": seccomp.GT,
       "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ}
def act(name, ret):
    r = 1 if ret is None else ret
    return {"SCMP_ACT_ALLOW": seccomp.ALLOW, "SCMP_ACT_ERRNO": seccomp.ERRNO(r),
            "SCMP_ACT_KILL": seccomp.KILL, "SCMP_ACT_KILL_THREAD": seccomp.KILL,
            "SCMP_ACT_KILL_PROCESS": seccomp.KILL_PROCESS, "SCMP_ACT_TRAP": seccomp.TRAP,
            "SCMP_ACT_LOG": seccomp.LOG, "SCMP_ACT_TRACE": seccomp.TRACE(r)}[name]
def pfc(p, skip, only=None):
    d = act(p["defaultAction"], p.get("defaultErrnoRet"))
    f = seccomp.SyscallFilter(d)
    for a in (p.get("architectures", []) if only is None else [only]):
        if not f.exist_arch(ARCH[a]):
            f.add_arch(ARCH[a])
    if only is not None and only != "SCMP_ARCH_X86_64":
        f.remove_arch(seccomp.Arch.NATIVE)
    f.set_attr(seccomp.Attr.CTL_NNP, 0)
    for i, r in enumerate(p.get("syscalls", [])):
        a = act(r["action"], r.get("errnoRet"))
        if i in skip or a == d:
            continue
        conds = [seccomp.Arg(x["index"], OPS[x["op"]], x["value"], x.get("valueTwo", 0))
                 for x in r.get("args", [])]
        f.add_rule(a, r["names"][0], *conds)
    t = tempfile.TemporaryFile()
    f.export_pfc(t)
    t.seek(0)
    return t.read().decode()
NAMES = {"x86_64": "SCMP_ARCH_X86_64", "x86": "SCMP_ARCH_X86", "x32": "SCMP_ARCH_X32"}
def blocks(text):
    out, arch, key = {}, None, None
    for l in text.splitlines():
        t = l.strip()
        if t.startswith("# filter for arch "):
            arch = NAMES[t.split()[4]]
            key = None
        elif t.startswith("# filter for syscall "):
            key = arch + ":" + t.split("(")[1].split(")")[0]
            out[key] = ""
        elif t.startswith("# default action") or t.startswith("# invalid"):
            key = None
        elif key is not None:
            out[key] += l + "\n"
    return out
for line in sys.stdin:
    q = json.loads(line)
    p = q["profile"]
    out = {}
    try:
        full = pfc(p, set())
        out["pfc"] = full
        # Per architecture and syscall: libseccomp merges (and prunes) the rules of each
        # syscall of each architecture separately.
        out["dropped"] = {}
        whole = blocks(full)
        for key in (whole if q["find_dropped"] else []):
            dropped = []
            for i in range(len(p.get("syscalls", []))):
                try:
                    if blocks(pfc(p, set(dropped + [i]))).get(key) == whole[key]:
                        dropped.append(i)
                except Exception:
                    pass
            out["dropped"][key] = dropped
        names = [n for r in p.get("syscalls", []) for n in r["names"]]
        mx = {}
        for an in set(["SCMP_ARCH_X86_64"] + p.get("architectures", [])):
            m = 0
            for n in names:
                m = max(m, lib.seccomp_syscall_resolve_name_arch(int(ARCH[an]) & 0xffffffff, n.encode()))
            if m > 0:
                mx[an] = m
        out["max"] = mx
    except Exception as e:
        out["error"] = repr(e)
    print(json.dumps(out), flush=True)
"##;

/// The profile as runc hands it to libseccomp: one rule per name and, for rules with
/// repeated arguments, per condition.
fn flatten(p: &serde_json::Value) -> serde_json::Value {
    let mut out = p.clone();
    let mut rules = Vec::new();
    for r in p["syscalls"].as_array().unwrap() {
        let args: Vec<serde_json::Value> = r
            .get("args")
            .and_then(|a| a.as_array())
            .cloned()
            .unwrap_or_default();
        let idx: Vec<u64> = args.iter().map(|a| a["index"].as_u64().unwrap()).collect();
        let repeated = (1..idx.len()).any(|i| idx[..i].contains(&idx[i]));
        let alternatives: Vec<Vec<serde_json::Value>> = if repeated {
            args.iter().map(|a| vec![a.clone()]).collect()
        } else {
            vec![args]
        };
        for n in r["names"].as_array().unwrap() {
            for alt in &alternatives {
                let mut f = r.clone();
                f["names"] = json!([n]);
                if alt.is_empty() {
                    f.as_object_mut().unwrap().remove("args");
                } else {
                    f["args"] = json!(alt);
                }
                rules.push(f);
            }
        }
    }
    out["syscalls"] = json!(rules);
    out
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }
}

const POOL_NAMES: &[&str] = &[
    "personality",
    "mmap",
    "ioctl",
    "socket",
    "getpid",
    "openat",
    "mkdir",
    "clone",
    "accept",
    "semop",
    "fcntl",
    "lseek",
    "prctl",
    "arch_prctl",
    "connect",
];
const POOL_VALUES: &[u64] = &[
    0,
    1,
    2,
    3,
    5,
    0xff,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0005,
    0x8000_0000_0000_0000,
    u64::MAX,
];

fn random_action(rng: &mut Rng) -> serde_json::Value {
    match rng.below(8) {
        0 => json!({"action": "SCMP_ACT_ALLOW"}),
        1 => json!({"action": "SCMP_ACT_ERRNO", "errnoRet": 1 + rng.below(4)}),
        2 => json!({"action": "SCMP_ACT_ERRNO"}),
        3 => json!({"action": "SCMP_ACT_KILL"}),
        4 => json!({"action": "SCMP_ACT_KILL_PROCESS"}),
        5 => json!({"action": "SCMP_ACT_TRAP"}),
        6 => json!({"action": "SCMP_ACT_LOG"}),
        _ => json!({"action": "SCMP_ACT_TRACE", "errnoRet": 1 + rng.below(3)}),
    }
}

fn random_profile(rng: &mut Rng) -> serde_json::Value {
    let default = random_action(rng);
    let mut p = json!({"defaultAction": default["action"]});
    if let Some(e) = default.get("errnoRet") {
        p["defaultErrnoRet"] = e.clone();
    }
    let mut archs = Vec::new();
    for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
        if rng.below(2) == 0 {
            archs.push(a);
        }
    }
    p["architectures"] = json!(archs);
    let mut rules = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let mut r = random_action(rng);
        let names: Vec<&str> = (0..1 + rng.below(2))
            .map(|_| rng.pick(POOL_NAMES))
            .collect();
        r["names"] = json!(names);
        let args: Vec<serde_json::Value> = (0..rng.below(4))
            .map(|_| {
                let op = rng.pick(&[
                    "SCMP_CMP_NE",
                    "SCMP_CMP_LT",
                    "SCMP_CMP_LE",
                    "SCMP_CMP_EQ",
                    "SCMP_CMP_GE",
                    "SCMP_CMP_GT",
                    "SCMP_CMP_MASKED_EQ",
                ]);
                json!({"index": rng.below(3), "op": op, "value": rng.pick(POOL_VALUES),
                       "valueTwo": rng.pick(POOL_VALUES)})
            })
            .collect();
        if !args.is_empty() {
            r["args"] = json!(args);
        }
        rules.push(r);
    }
    p["syscalls"] = json!(rules);
    p
}

/// libseccomp's pseudo filter code as a tree: `if` with its then and else branches,
/// `action`, in statement order.
#[derive(Debug)]
enum Pfc {
    If {
        cond: String,
        then: Vec<Pfc>,
        otherwise: Vec<Pfc>,
    },
    Action(u32),
}

fn pfc_action(s: &str) -> u32 {
    let s = s.trim_end_matches(';');
    let data = |p: &str| -> u32 {
        s.strip_prefix(p)
            .and_then(|r| r.strip_suffix(')'))
            .map(|n| n.parse().unwrap())
            .unwrap_or(0)
    };
    match s {
        "ALLOW" => 0x7fff_0000,
        "KILL" => 0,
        "KILL_PROCESS" => 0x8000_0000,
        "TRAP" => 0x0003_0000,
        "LOG" => 0x7ffc_0000,
        "NOTIFY" => 0x7fc0_0000,
        _ if s.starts_with("ERRNO(") => 0x0005_0000 | data("ERRNO("),
        _ if s.starts_with("TRACE(") => 0x7ff0_0000 | data("TRACE("),
        _ => panic!("unknown pfc action {s}"),
    }
}

/// Parses the statements indented by `indent` from `lines[*i]` on.
fn pfc_parse(lines: &[(usize, &str)], i: &mut usize, indent: usize) -> Vec<Pfc> {
    let mut out = Vec::new();
    while let Some(&(ind, text)) = lines.get(*i) {
        if ind < indent {
            break;
        }
        *i += 1;
        if let Some(cond) = text.strip_prefix("if (").and_then(|c| c.strip_suffix(')')) {
            let then = pfc_parse(lines, i, indent + 2);
            let mut otherwise = Vec::new();
            if lines.get(*i) == Some(&(indent, "else")) {
                *i += 1;
                otherwise = pfc_parse(lines, i, indent + 2);
            }
            out.push(Pfc::If {
                cond: cond.to_string(),
                then,
                otherwise,
            });
        } else if let Some(a) = text.strip_prefix("action ") {
            out.push(Pfc::Action(pfc_action(a)));
        } else {
            panic!("unexpected pfc line {text:?}");
        }
    }
    out
}

fn pfc_tree(text: &str) -> Vec<Pfc> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .map(|l| (l.len() - l.trim_start().len(), l.trim()))
        .filter(|(_, t)| !t.is_empty() && !t.starts_with('#'))
        .collect();
    let mut i = 0;
    pfc_parse(&lines, &mut i, 0)
}

/// Evaluates a condition such as `$a1.hi32 & 0x00000003 == 1` or `$syscall == 56`.
fn pfc_cond(cond: &str, d: &seccomp::SeccompData) -> bool {
    let parts: Vec<&str> = cond.split_whitespace().collect();
    let (lhs, mask, op, rhs) = match parts.as_slice() {
        [l, "&", m, op, r] => (
            *l,
            u32::from_str_radix(m.trim_start_matches("0x"), 16).unwrap(),
            *op,
            *r,
        ),
        [l, op, r] => (*l, u32::MAX, *op, *r),
        _ => panic!("unexpected pfc condition {cond:?}"),
    };
    let value: u32 = match lhs {
        "$arch" => d.arch,
        "$syscall" => d.nr as u32,
        _ => {
            let (arg, half) = lhs
                .trim_start_matches("$a")
                .split_once('.')
                .unwrap_or((lhs.trim_start_matches("$a"), "lo32"));
            let a = d.args[arg.parse::<usize>().unwrap()];
            if half == "hi32" {
                (a >> 32) as u32
            } else {
                a as u32
            }
        }
    } & mask;
    let rhs: u32 = rhs.parse::<i64>().unwrap() as u32;
    match op {
        "==" => value == rhs,
        ">" => value > rhs,
        ">=" => value >= rhs,
        _ => panic!("unexpected pfc operator {op}"),
    }
}

fn pfc_run(stmts: &[Pfc], d: &seccomp::SeccompData) -> Option<u32> {
    for s in stmts {
        match s {
            Pfc::Action(a) => return Some(*a),
            Pfc::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if pfc_cond(cond, d) { then } else { otherwise };
                if let Some(a) = pfc_run(branch, d) {
                    return Some(a);
                }
            }
        }
    }
    None
}

/// What runc with libseccomp returns: runc's -ENOSYS stub (from libseccomp's per-arch
/// maxima), libseccomp's architecture and x32 checks (as its BPF generator makes them), then
/// the rule tree of the syscall's architecture from the pseudo filter code.
fn runc_libseccomp(
    p: &serde_json::Value,
    answer: &serde_json::Value,
    d: &seccomp::SeccompData,
) -> u32 {
    const ENOSYS: u32 = 0x0005_0000 | 38;
    const KILL: u32 = 0;
    let nr = d.nr as u32;
    let configured: Vec<&str> = std::iter::once("SCMP_ARCH_X86_64")
        .chain(
            p["architectures"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap()),
        )
        .collect();
    let x32_mode = nr & 0x4000_0000 != 0;
    let key = match (d.arch, x32_mode) {
        (0xc000_003e, false) => "SCMP_ARCH_X86_64",
        (0xc000_003e, true) => "SCMP_ARCH_X32",
        (0x4000_0003, _) => "SCMP_ARCH_X86",
        _ => return KILL,
    };
    let allowish = ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"];
    if !allowish.contains(&p["defaultAction"].as_str().unwrap()) {
        if let Some(m) = answer["max"].get(key).and_then(|m| m.as_u64()) {
            if nr > m as u32 {
                return ENOSYS;
            }
        }
    }
    if d.arch == 0x4000_0003 && !configured.contains(&"SCMP_ARCH_X86") {
        return KILL;
    }
    // libseccomp's x86_64 section without x32 kills numbers from the x32 bit up (jge),
    // except nr -1, which goes on to the x86_64 rules.
    let mut key = key;
    if d.arch == 0xc000_003e && !configured.contains(&"SCMP_ARCH_X32") {
        if nr >= 0x4000_0000 && nr != u32::MAX {
            return KILL;
        }
        key = "SCMP_ARCH_X86_64";
    }
    // The pfc lists one block per architecture, in order: x86_64, then the added ones. Pick
    // the block of the syscall's ABI: the n-th `if ($arch == ...)` for the n-th in order.
    let tree = pfc_tree(answer["pfc"].as_str().unwrap());
    let mut order: Vec<&str> = vec!["SCMP_ARCH_X86_64"];
    for a in &configured[1..] {
        if !order.contains(a) {
            order.push(a);
        }
    }
    let idx = order.iter().position(|a| *a == key).unwrap_or(usize::MAX);
    let blocks: Vec<&Vec<Pfc>> = tree
        .iter()
        .filter_map(|s| match s {
            Pfc::If { then, .. } => Some(then),
            _ => None,
        })
        .collect();
    let Some(block) = blocks.get(idx) else {
        return KILL;
    };
    // The block: one `if ($syscall == n)` per syscall, then the default action.
    pfc_run(block, d).expect("every architecture block ends with the default action")
}

/// Runs LIBSECCOMP_AS_RUNC over the profiles; `None` without python3-seccomp.
fn libseccomp_answers(
    profiles: &[serde_json::Value],
    find_dropped: bool,
) -> Option<Vec<serde_json::Value>> {
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", LIBSECCOMP_AS_RUNC])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    // Written from a thread: the answers come back while the profiles go in.
    let mut stdin = child.stdin.take().unwrap();
    let lines: Vec<String> = profiles
        .iter()
        .map(|p| json!({"profile": p, "find_dropped": find_dropped}).to_string())
        .collect();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        for l in lines {
            if writeln!(stdin, "{l}").is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    if String::from_utf8_lossy(&out.stderr).contains("No module named 'seccomp'") {
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), profiles.len());
    Some(answers)
}

/// Where our program and runc+libseccomp answer differently, over samples of every
/// architecture, the profile's syscalls and argument values (the same samples for a seed).
fn differences(
    p: &serde_json::Value,
    theirs: &serde_json::Value,
    ours: &dyn Fn(&str) -> Program,
    names: &[&str],
    seed: u64,
) -> Vec<String> {
    // The program to judge a sample with, by "ARCH:nr".
    let program_for = |arch: u32, nr: u32| -> Program {
        let key = match (arch, nr & 0x4000_0000 != 0) {
            (0x4000_0003, _) => "SCMP_ARCH_X86",
            (0xc000_003e, true) => "SCMP_ARCH_X32",
            _ => "SCMP_ARCH_X86_64",
        };
        ours(&format!("{key}:{nr}"))
    };
    let mut rng = Rng(seed | 1);
    let mut nrs = vec![0u32, 400, 1000, 0x4000_0000 | 1000, 0x8000_0000, u32::MAX];
    for n in names {
        for a in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
            nrs.extend(seccomp::resolve_syscall(a, n));
        }
    }
    nrs.extend([102, 117]); // x86 socketcall, ipc
    let mut out = Vec::new();
    for &arch in &[0xc000_003e, 0x4000_0003, 0xc000_00b7] {
        for &nr in &nrs {
            let program = program_for(arch, nr);
            for _ in 0..6 {
                let mut args = [0u64; 6];
                for a in args.iter_mut().take(3) {
                    *a = rng.pick(POOL_VALUES);
                }
                let data = seccomp::SeccompData {
                    nr: nr as i32,
                    arch,
                    instruction_pointer: 0,
                    args,
                };
                let mine = program.evaluate(&data);
                let expected = runc_libseccomp(p, theirs, &data);
                if mine != expected {
                    out.push(format!(
                        "{p}\n  arch {arch:#x} nr {nr:#x} args {args:x?}: ours {mine:#x}, libseccomp+runc {expected:#x}"
                    ));
                }
            }
        }
    }
    out
}

/// Random profiles (many overlapping rules with different actions, all operators, 64-bit
/// values, x86/x32) compiled by us and by libseccomp as runc uses it must answer alike. Where
/// they do not, it must be because libseccomp dropped a rule: its pruning sometimes drops a
/// rule that is not redundant (a bug we do not copy: every rule of the profile counts); with
/// the rules libseccomp drops turned into no-ops, our program must then answer as libseccomp.
#[test]
fn same_answers_as_libseccomp_on_random_profiles() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let profiles: Vec<serde_json::Value> = (0..1500)
        .map(|_| flatten(&random_profile(&mut rng)))
        .collect();
    let Some(answers) = libseccomp_answers(&profiles, false) else {
        eprintln!("python3-seccomp not installed: comparison with libseccomp skipped");
        return;
    };
    let mut compared = 0;
    let mut refusals = Vec::new();
    let mut differ = Vec::new();
    for (k, (p, theirs)) in profiles.iter().zip(&answers).enumerate() {
        let ours = match (
            theirs["pfc"].as_str(),
            seccomp::compile(&profile(p.clone())),
        ) {
            (Some(_), Ok(ours)) => ours,
            (None, Err(_)) => continue, // both refuse (conflicting rules)
            (t, o) => {
                refusals.push(format!(
                    "{p}\n  libseccomp: {}, ours: {}",
                    t.map_or_else(|| theirs["error"].to_string(), |_| "compiles".into()),
                    o.map_or_else(|e| e.to_string(), |_| "compiles".into())
                ));
                continue;
            }
        };
        compared += 1;
        if !differences(p, theirs, &|_| ours.clone(), POOL_NAMES, k as u64).is_empty() {
            differ.push(k);
        }
    }
    assert!(
        refusals.is_empty(),
        "{} refused by one side only:\n{}",
        refusals.len(),
        refusals.join("\n")
    );
    assert!(
        compared > 1200,
        "only {compared} of {} profiles compared",
        profiles.len()
    );

    // The profiles that differ, again, with the rules libseccomp drops (for the syscall and
    // architecture of each sample) made no-ops: the default action, which runc skips, while
    // their names still count for the -ENOSYS stub.
    let suspects: Vec<serde_json::Value> = differ.iter().map(|&k| profiles[k].clone()).collect();
    let again = libseccomp_answers(&suspects, true).unwrap();
    let mut unexplained = Vec::new();
    for ((&k, p), theirs) in differ.iter().zip(&suspects).zip(&again) {
        let kept = |key: &str| -> Program {
            let mut kept = p.clone();
            for i in theirs["dropped"][key].as_array().into_iter().flatten() {
                let r = &mut kept["syscalls"][i.as_u64().unwrap() as usize];
                r["action"] = p["defaultAction"].clone();
                match p.get("defaultErrnoRet") {
                    Some(e) => r["errnoRet"] = e.clone(),
                    None => {
                        r.as_object_mut().unwrap().remove("errnoRet");
                    }
                }
            }
            seccomp::compile(&profile(kept)).expect("fewer rules compile")
        };
        unexplained.extend(
            differences(p, theirs, &kept, POOL_NAMES, k as u64)
                .into_iter()
                .take(2),
        );
    }
    assert!(unexplained.is_empty(), "{}", unexplained.join("\n"));
    // Rare: two in 3000 profiles of this generator.
    assert!(
        differ.len() * 200 < compared,
        "{} of {compared} differ",
        differ.len()
    );
    eprintln!(
        "{compared} profiles compared; {} differ only by rules libseccomp drops",
        differ.len()
    );
}

/// Real profiles through both compilers: Docker's default, and the socket rules of
/// containers-common (Podman), whose conditional rules overlap with different actions (and
/// conflict in libseccomp's eyes in one order).
#[test]
fn real_profiles_same_answers_as_libseccomp() {
    let socket_rules = |order: [usize; 3]| {
        let rules = [
            json!({"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                   "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                            {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]}),
            json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]}),
            json!({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"}]}),
        ];
        let mut syscalls = vec![
            json!({"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}),
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}),
            json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}),
            json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                   "args": [{"index": 0, "value": 2114060288u64, "op": "SCMP_CMP_MASKED_EQ"}]}),
        ];
        syscalls.extend(order.map(|i| rules[i].clone()));
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": syscalls
        })
    };
    // libseccomp refuses the three socket rules in the first order (EEXIST): so must we.
    let profiles = vec![
        flatten(&docker_default()),
        flatten(&socket_rules([1, 2, 0])),
        flatten(&socket_rules([2, 0, 1])),
        flatten(&socket_rules([0, 1, 2])),
    ];
    let Some(answers) = libseccomp_answers(&profiles, false) else {
        eprintln!("python3-seccomp not installed: comparison with libseccomp skipped");
        return;
    };
    for (k, (p, theirs)) in profiles.iter().zip(&answers).enumerate() {
        let ours = seccomp::compile(&profile(p.clone()));
        if theirs.get("pfc").is_none() {
            assert!(
                matches!(ours, Err(SeccompError::ConflictingRules { .. })),
                "libseccomp refuses {p}: {}",
                theirs["error"]
            );
            continue;
        }
        let ours = ours.unwrap();
        let names: Vec<&str> = p["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["names"][0].as_str().unwrap())
            .collect();
        let diff = differences(p, theirs, &|_| ours.clone(), &names, k as u64 + 7);
        assert!(
            diff.is_empty(),
            "{}",
            diff.into_iter().take(3).collect::<Vec<_>>().join("\n")
        );
    }
}
