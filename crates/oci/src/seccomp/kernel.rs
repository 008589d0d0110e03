//! Loading a filter with seccomp(2), and asking the kernel which filter flags it knows.
//! `load` runs in the container's init right before execve, possibly in a child forked from
//! a multi-threaded parent: it makes system calls only, without allocating.

use super::bpf::Insn;
use super::compiler::{
    FLAG_LOG, FLAG_NEW_LISTENER, FLAG_SPEC_ALLOW, FLAG_TSYNC, FLAG_TSYNC_ESRCH,
    FLAG_WAIT_KILLABLE_RECV,
};
use super::SeccompError;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

/// The runtime-spec names of the flags, with their bits.
pub(crate) const FLAG_NAMES: &[(&str, u64)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", FLAG_TSYNC),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", FLAG_SPEC_ALLOW),
    ("SECCOMP_FILTER_FLAG_LOG", FLAG_LOG),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        FLAG_WAIT_KILLABLE_RECV,
    ),
    ("SECCOMP_FILTER_FLAG_NEW_LISTENER", FLAG_NEW_LISTENER),
    ("SECCOMP_FILTER_FLAG_TSYNC_ESRCH", FLAG_TSYNC_ESRCH),
];

fn seccomp_set_filter(flags: u64, prog: *const libc::sock_fprog) -> (libc::c_long, i32) {
    // SAFETY: seccomp(2) reads `prog` (a valid sock_fprog or NULL, which the kernel
    // reports as EFAULT) and nothing else of our memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_ulong,
            prog,
        )
    };
    let errno = if ret < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (ret, errno)
}

/// Whether the kernel accepts `flag`: with no program, a known flag set fails with EFAULT
/// (copying the program), an unknown one with EINVAL (how libseccomp probes too). Flags that
/// only go with a listener are probed with one.
pub(crate) fn flag_supported(flag: u64) -> bool {
    let mut flags = flag;
    if flag & (FLAG_WAIT_KILLABLE_RECV | FLAG_TSYNC_ESRCH) != 0 {
        flags |= FLAG_NEW_LISTENER;
    }
    if flag & FLAG_TSYNC_ESRCH != 0 {
        flags |= FLAG_TSYNC;
    }
    let (_, errno) = seccomp_set_filter(flags, std::ptr::null());
    errno == libc::EFAULT
}

/// Installs the filter on the calling thread. Allocation-free.
pub(crate) fn load(insns: &[Insn], flags: u64) -> Result<Option<OwnedFd>, SeccompError> {
    let Ok(len) = u16::try_from(insns.len()) else {
        return Err(SeccompError::Load(io::Error::from_raw_os_error(
            libc::EINVAL,
        )));
    };
    let prog = libc::sock_fprog {
        len,
        // Insn has the layout of struct sock_filter; the kernel only reads it.
        filter: insns.as_ptr() as *mut libc::sock_filter,
    };
    let (ret, errno) = seccomp_set_filter(flags, &prog);
    if ret < 0 {
        return Err(match errno {
            libc::EACCES => SeccompError::NeedsNoNewPrivs,
            libc::EINVAL => match FLAG_NAMES
                .iter()
                .find(|(_, bit)| flags & bit != 0 && !flag_supported(*bit))
            {
                Some((name, _)) => SeccompError::FlagUnsupported(name),
                None => SeccompError::Load(io::Error::from_raw_os_error(errno)),
            },
            libc::ESRCH if flags & FLAG_TSYNC != 0 => SeccompError::Tsync(None),
            libc::EBUSY if flags & FLAG_NEW_LISTENER != 0 => SeccompError::ListenerBusy,
            _ => SeccompError::Load(io::Error::from_raw_os_error(errno)),
        });
    }
    if flags & FLAG_NEW_LISTENER != 0 {
        let fd = libc::c_int::try_from(ret)
            .map_err(|_| SeccompError::Load(io::Error::from_raw_os_error(libc::EBADF)))?;
        // SAFETY: with NEW_LISTENER, seccomp(2) returns a new file descriptor we own.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
    }
    if ret > 0 {
        // TSYNC without ESRCH: the id of a thread that could not be synchronized.
        return Err(SeccompError::Tsync(Some(ret)));
    }
    Ok(None)
}
