//! Handing the notify listener to the seccomp agent at `listenerPath`, as runc does: connect
//! to the unix socket and send the container process state (runtime-spec
//! "ContainerProcessState" JSON) with the listener fd attached (SCM_RIGHTS).

use super::SeccompError;
use oci_spec::runtime::{ContainerProcessState, State, SECCOMP_FD_NAME};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The ContainerProcessState JSON runc sends: `fds` names the one descriptor
/// (`["seccompFd"]`), `pid` is the container process, `metadata` the profile's
/// `listenerMetadata`, `state` the container state.
pub fn process_state_json(
    pid: i32,
    metadata: Option<&str>,
    state: &State,
) -> Result<Vec<u8>, SeccompError> {
    let mut s = ContainerProcessState::default();
    let version = if state.version().is_empty() {
        oci_spec::runtime::VERSION.to_string()
    } else {
        state.version().clone()
    };
    s.set_version(version)
        .set_fds(vec![SECCOMP_FD_NAME.to_string()])
        .set_pid(pid)
        .set_metadata(metadata.map(str::to_string))
        .set_state(state.clone());
    serde_json::to_vec(&s)
        .map_err(|e| SeccompError::Invalid(format!("container process state: {e}")))
}

pub fn send_listener_fd(
    listener_path: &Path,
    fd: BorrowedFd,
    state_json: &[u8],
) -> Result<(), SeccompError> {
    let send_err = |source: io::Error| SeccompError::ListenerSend {
        path: listener_path.to_path_buf(),
        source,
    };
    if state_json.is_empty() {
        // A stream socket drops ancillary data sent without payload.
        return Err(send_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty container process state",
        )));
    }
    let mut sock =
        UnixStream::connect(listener_path).map_err(|source| SeccompError::ListenerConnect {
            path: listener_path.to_path_buf(),
            source,
        })?;

    let raw: libc::c_int = fd.as_raw_fd();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    // u64 elements keep the buffer aligned for struct cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: state_json.as_ptr() as *mut libc::c_void,
        iov_len: state_json.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the sendmsg call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points to `space` bytes, room for one header with one int.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(send_err(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(send_err(io::Error::last_os_error()));
    }
    // The descriptor went with the first bytes; the rest of a long state follows plainly.
    let sent = sent as usize;
    if sent < state_json.len() {
        sock.write_all(&state_json[sent..]).map_err(send_err)?;
    }
    Ok(())
}
