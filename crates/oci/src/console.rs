//! The container's terminal: a pty made inside the container (its /dev/pts), the master sent
//! over --console-socket with SCM_RIGHTS as runc does, the slave made the process's
//! controlling terminal and stdio.

use crate::sys;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Connects to the console socket (a unix stream socket the caller listens on).
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path)?;
    Ok(OwnedFd::from(s))
}

/// Opens a new pty pair from /dev/ptmx (the container's, after pivot_root).
pub fn open_pty(size: Option<(u16, u16)>) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = sys::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY, 0)?;
    // SAFETY: ioctls on the master we own with valid argument pointers.
    unsafe {
        let mut unlock: libc::c_int = 0;
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &mut unlock) != 0 {
            return Err(io::Error::last_os_error());
        }
        // TIOCGPTPEER opens the slave through the master: no path lookup in /dev/pts.
        let slave = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(slave);
        if let Some((h, w)) = size {
            let ws = libc::winsize {
                ws_row: h,
                ws_col: w,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
        Ok((master, slave))
    }
}

/// Sends the master to whoever listens on the console socket.
pub fn send_master(sock: BorrowedFd, master: BorrowedFd) -> io::Result<()> {
    // runc sends the pty's name as the message; containerd only uses the descriptor.
    sys::send_with_fds(sock, b"/dev/ptmx", &[master.as_raw_fd()])
}

/// Makes the slave the controlling terminal and stdin/stdout/stderr of this process.
pub fn become_stdio(slave: &OwnedFd) -> io::Result<()> {
    // SAFETY: setsid and ioctl with no pointers.
    unsafe {
        libc::setsid();
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    for fd in 0..3 {
        sys::dup2(slave.as_fd().as_raw_fd(), fd)?;
    }
    Ok(())
}
