//! Positional I/O on a plain file: exact reads that zero-fill past EOF, exact writes, holes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsFd;

/// Reads `buf.len()` bytes at `off`; bytes past end-of-file read as zero (as QEMU's file driver does).
pub fn read_full(f: &File, buf: &mut [u8], mut off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off) {
            Ok(0) => {
                buf[done..].fill(0);
                return Ok(());
            }
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub fn write_full(f: &File, buf: &[u8], off: u64) -> io::Result<()> {
    f.write_all_at(buf, off)
}

pub fn file_len(f: &File) -> io::Result<u64> {
    Ok(f.metadata()?.len())
}

/// Bytes actually allocated on the host (st_blocks * 512), what qemu-img calls "disk size".
pub fn allocated_bytes(f: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(f.metadata()?.blocks() * 512)
}

/// Punches a hole so the range reads as zero and frees host space; falls back to writing zeros.
pub fn punch_hole(f: &File, off: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    let r = fallocate(
        f.as_fd(),
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        off,
        len,
    );
    match r {
        Ok(()) => Ok(()),
        Err(_) => write_zeroes_slow(f, off, len),
    }
}

/// Reserves host space for a range (posix_fallocate semantics, size may grow).
pub fn fallocate(f: &File, off: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    fallocate(f.as_fd(), FallocateFlags::empty(), off, len).map_err(io::Error::from)
}

pub fn write_zeroes_slow(f: &File, mut off: u64, mut len: u64) -> io::Result<()> {
    let z = vec![0u8; (len.min(1 << 20)) as usize];
    while len > 0 {
        let n = len.min(z.len() as u64) as usize;
        f.write_all_at(&z[..n], off)?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Tells the kernel not to read ahead: callers that consult SEEK_DATA read exactly the data
/// runs, and readahead would only pull in (and zero-fill) the holes next to them.
pub fn advise_no_readahead(f: &File) {
    use rustix::fs::{fadvise, Advice};
    let _ = fadvise(f.as_fd(), 0, None, Advice::Random);
}

/// Next data offset at or after `off` (SEEK_DATA); `None` past the last data.
pub fn seek_data(f: &File, off: u64) -> io::Result<Option<u64>> {
    seek(f, off, libc::SEEK_DATA)
}

/// Next hole at or after `off` (SEEK_HOLE); end of file counts as a hole.
pub fn seek_hole(f: &File, off: u64) -> io::Result<Option<u64>> {
    seek(f, off, libc::SEEK_HOLE)
}

fn seek(f: &File, off: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: lseek on a valid, owned fd has no memory-safety preconditions. We use a dup'ed
    // offset-free query: lseek moves the shared file offset, which none of our code relies on
    // (all I/O is positional).
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(r as u64))
}

/// Writes `buf` at `off` but leaves out the all-zero parts (in 4 KiB pages of the file) where
/// the file already reads zero: everywhere when `hole` says the range is known to be a hole,
/// else where SEEK_DATA finds no data. Keeps preallocated and freshly appended blocks as
/// sparse as qemu-img leaves them.
pub fn write_sparse(f: &File, buf: &[u8], off: u64, hole: bool) -> io::Result<()> {
    const PAGE: u64 = 4096;
    let end = off + buf.len() as u64;
    // Runs of (zero?, start, end) in file offsets.
    let mut pos = off;
    let mut run: Option<(bool, u64)> = None;
    let flush = |zero: bool, s: u64, e: u64| -> io::Result<()> {
        let piece = &buf[(s - off) as usize..(e - off) as usize];
        if zero && (hole || seek_data(f, s)?.is_none_or(|d| d >= e)) {
            return Ok(());
        }
        write_full(f, piece, s)
    };
    while pos < end {
        let pe = ((pos / PAGE + 1) * PAGE).min(end);
        let zero = page_is_zero(&buf[(pos - off) as usize..(pe - off) as usize]);
        match run {
            Some((z, _)) if z == zero => {}
            Some((z, s)) => {
                flush(z, s, pos)?;
                run = Some((zero, pos));
            }
            None => run = Some((zero, pos)),
        }
        pos = pe;
    }
    if let Some((z, s)) = run {
        flush(z, s, end)?;
    }
    Ok(())
}

/// Whether a (page-sized) slice is all zero: 64 bytes at a time (vectorized within a line),
/// stopping at the first line with data, which for data pages is the first one.
fn page_is_zero(b: &[u8]) -> bool {
    let lines = b.chunks_exact(64);
    let tail = lines.remainder();
    lines.into_iter().all(|l| {
        l.chunks_exact(8).fold(0u64, |a, w| {
            a | u64::from_ne_bytes(w.try_into().expect("8 bytes"))
        }) == 0
    }) && tail.iter().all(|&x| x == 0)
}

/// Like `read_full`, but holes of the file are filled with zeros here instead of being read
/// (which would fill the page cache with zero pages): for large reads of blocks that may be
/// sparse, as qemu-img leaves vpc and vdi blocks.
pub fn read_sparse(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    const MIN: usize = 64 << 10;
    if buf.len() < MIN {
        return read_full(f, buf, off);
    }
    let end = off + buf.len() as u64;
    let mut pos = off;
    while pos < end {
        let d = match seek_data(f, pos)? {
            Some(d) if d < end => d,
            _ => {
                buf[(pos - off) as usize..].fill(0);
                return Ok(());
            }
        };
        buf[(pos - off) as usize..(d - off) as usize].fill(0);
        let h = seek_hole(f, d)?.unwrap_or(end).min(end);
        read_full(f, &mut buf[(d - off) as usize..(h - off) as usize], d)?;
        pos = h;
    }
    Ok(())
}
