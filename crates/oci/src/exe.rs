//! Keeping the runtime binary out of the container's reach (the CVE-2019-5736 class): a
//! process inside the container can open `/proc/PID/exe` of a runtime process that entered
//! its namespaces and, once that process is gone, write through it to the host's binary.
//! Before `create`, `run` and `exec` fork anything, the runtime re-executes itself from a
//! copy nobody can write: a detached, read-only overlayfs mount over the binary's directory
//! (no copy, as runc 1.2 does), or, when overlayfs is refused, a sealed memfd copy.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Set in the environment of the re-executed runtime so that it never loops; removed again
/// before anything else runs (the container's environment comes from the config anyway).
const MARK: &str = "_VIRTKIT_SEALED_EXE";

const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const MOUNT_ATTR_RDONLY: u32 = 1;

/// Whether our executable is already on a read-only mount (then nothing to do).
fn exe_is_sealed() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fstatvfs into a zeroed struct on a descriptor we own.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    if st.f_flag & libc::ST_RDONLY != 0 {
        return true;
    }
    // A sealed memfd: writes are refused for good.
    // SAFETY: fcntl on a descriptor we own.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_WRITE != 0
}

/// Re-executes the runtime from a sealed copy unless it already runs from one. Returns only
/// when nothing needed doing (or when sealing is impossible: then the error says why).
pub fn ensure_sealed() -> io::Result<()> {
    if std::env::var_os(MARK).is_some() {
        std::env::remove_var(MARK);
        return Ok(());
    }
    if exe_is_sealed() {
        return Ok(());
    }
    let fd = match overlay_exe() {
        Ok(fd) => fd,
        Err(_) => memfd_exe()?,
    };
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(CString::new(format!("{MARK}=1")).unwrap_or_default());
    let mut a: Vec<*const libc::c_char> = args.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = env.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of C strings that live across the call; on success the
    // process image is replaced.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            a.as_ptr(),
            e.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(io::Error::last_os_error())
}

/// The binary opened through a detached overlayfs (lower layers: its directory and an empty
/// one; no upper layer, so the kernel refuses every write, even after a remount).
fn overlay_exe() -> io::Result<OwnedFd> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let dir = exe
        .parent()
        .ok_or_else(|| io::Error::other("no directory"))?;
    let name = exe.file_name().ok_or_else(|| io::Error::other("no name"))?;
    let bad = |p: &Path| p.as_os_str().as_bytes().iter().any(|b| b",:\\".contains(b));
    let empty = Path::new("/run/virtkit/empty");
    std::fs::create_dir_all(empty)?;
    if bad(dir) {
        return Err(io::Error::other("path not expressible as a lowerdir"));
    }
    let lower = CString::new(format!("{}:{}", dir.display(), empty.display()))?;
    // SAFETY: the new mount API through raw syscalls with valid C strings; every descriptor
    // returned is wrapped in an OwnedFd right away.
    unsafe {
        let fsfd = libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC);
        if fsfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fsfd = OwnedFd::from_raw_fd(fsfd as i32);
        for (k, v) in [(c"lowerdir", lower.as_c_str()), (c"source", c"virtkit-exe")] {
            if libc::syscall(
                libc::SYS_fsconfig,
                fsfd.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        if libc::syscall(
            libc::SYS_fsconfig,
            fsfd.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            0usize,
            0usize,
            0,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let mfd = libc::syscall(
            libc::SYS_fsmount,
            fsfd.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY,
        );
        if mfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mfd = OwnedFd::from_raw_fd(mfd as i32);
        let n = CString::new(name.as_bytes())?;
        let fd = libc::openat(
            mfd.as_raw_fd(),
            n.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// A sealed memfd holding a copy of the binary (the fallback: costs a copy per command).
fn memfd_exe() -> io::Result<OwnedFd> {
    let src = std::fs::File::open("/proc/self/exe")?;
    let len = src.metadata()?.len();
    // SAFETY: memfd_create with a valid name; the descriptor is owned right away.
    let fd = unsafe {
        libc::memfd_create(
            c"virtkit".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by us.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = len;
    while left > 0 {
        // SAFETY: sendfile between two descriptors we own; null offset uses the file position.
        let n = unsafe {
            libc::sendfile(
                fd.as_raw_fd(),
                src.as_raw_fd(),
                std::ptr::null_mut(),
                left.min(1 << 30) as usize,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        left -= n as u64;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}
