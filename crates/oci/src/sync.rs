//! The messages the runtime and the processes it forks exchange over a SOCK_SEQPACKET pair
//! while a container is being created or a process exec'd into it. One datagram per message,
//! JSON encoded; descriptors travel with SCM_RIGHTS.

use crate::sys;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Intermediate child: I unshared the user namespace, write my uid/gid maps.
    UsernsReady,
    /// Runtime: maps written, cgroups joined; go on.
    Go,
    /// Intermediate child: the container process has this pid (in the runtime's namespace).
    Pid(i32),
    /// Runtime: the container process is in its cgroups (it sets up its mounts meanwhile:
    /// the first write to cgroup.procs waits for an RCU grace period, milliseconds).
    CgroupsDone,
    /// Container process: the runtime environment exists; run prestart/createRuntime hooks.
    RunCreateHooks,
    /// Runtime: hooks done.
    HooksDone,
    /// Container process: here is the seccomp listener descriptor (attached).
    SeccompListener,
    /// Runtime: the listener descriptor was handed over.
    SeccompDone,
    /// Container process: set up, now waiting to be started (or, for exec, about to execve).
    Ready,
    /// Any child: this went wrong (the message is shown to the user).
    Error(String),
}

pub struct Channel(pub OwnedFd);

/// The largest message: errors carry a path and a reason, nothing big.
const MAX_MSG: usize = 64 * 1024;

impl Channel {
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = sys::socketpair_seqpacket()?;
        Ok((Channel(a), Channel(b)))
    }

    pub fn send(&self, msg: &Msg) -> io::Result<()> {
        self.send_fds(msg, &[])
    }

    pub fn send_fds(&self, msg: &Msg, fds: &[&dyn AsRawFd]) -> io::Result<()> {
        let data = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        sys::send_with_fds(self.0.as_fd(), &data, &raw)
    }

    /// The next message; an error when the peer exited without one.
    pub fn recv(&self) -> io::Result<(Msg, Vec<OwnedFd>)> {
        let mut buf = vec![0u8; MAX_MSG];
        let (n, fds) = sys::recv_with_fds(self.0.as_fd(), &mut buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the container process exited during setup",
            ));
        }
        let msg = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
        Ok((msg, fds))
    }
}
