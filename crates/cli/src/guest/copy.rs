//! virt-copy-out and virt-tar-out: files and trees out of the guest, onto the host or into a
//! tar stream (GNU format, "./"-relative names, as `tar -C DIR -cf - .` in the appliance).
//!
//! Writing to the host is where a hostile guest could hurt: names are checked again here
//! (no '/', no "." or ".."), files are created with O_EXCL|O_NOFOLLOW, and the tree is only
//! ever descended through directories this process created, so no guest symlink is followed
//! on the host.

use super::cat::stream;
use super::{api_err, parse, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use virtkit_guest::fs::{FileType, Stat};
use virtkit_guest::mounts::{Mounts, Node};
use virtkit_guest::{Error, Result};

const COPY_USAGE: &str = "virt-copy-out: copy files out of a virtual machine
Usage:
  virt-copy-out -a disk.img /file|/dir [/file|/dir ...] localdir
  virt-copy-out -d domain /file|/dir [/file|/dir ...] localdir
Options:
  -a|--add image       Add image
  --format[=raw|..]    Force disk format for -a option
  -m|--mount dev[:mnt] Mount dev on mnt (if omitted, the guest's filesystems are inspected)
  --help               Display brief help
";

const TAR_USAGE: &str = "virt-tar-out: archive files out of a virtual machine
Usage:
  virt-tar-out -a disk.img /dir files.tar
  virt-tar-out -a disk.img /dir - | tar tf -
  virt-tar-out -a disk.img -z /dir files.tar.gz
Options:
  -a|--add image       Add image
  --format[=raw|..]    Force disk format for -a option
  -m|--mount dev[:mnt] Mount dev on mnt (if omitted, the guest's filesystems are inspected)
  -z|--gzip            Compress the archive with gzip
  --help               Display brief help
";

fn open_tool(
    prog: &str,
    args: &[String],
    short: &'static str,
    extra: &mut dyn FnMut(&Opt) -> bool,
    usage: &str,
) -> std::result::Result<Option<(Vec<String>, Mounts)>, String> {
    let spec = Spec {
        short,
        long: Box::leak(
            [COMMON_LONG, &[("gzip", false)][..]]
                .concat()
                .into_boxed_slice(),
        ),
    };
    let mut c = Common::default();
    let Some(rest) = parse(prog, &spec, args, &mut c, usage, &mut |o| Ok(extra(o)))? else {
        return Ok(None);
    };
    c.need_drives(prog)?;
    let g = c.launch()?;
    let m = c.mount(prog, &g, true)?;
    Ok(Some((rest, m)))
}

pub fn copy_out(prog: &str, args: &[String]) -> std::result::Result<i32, String> {
    let Some((rest, m)) = open_tool(prog, args, "a:c:d:m:vVx", &mut |_| false, COPY_USAGE)? else {
        return Ok(0);
    };
    if rest.len() < 2 {
        return Err(format!(
            "{prog}: error: missing arguments\nTry ‘{prog} --help’ for more information."
        ));
    }
    let (local, remotes) = rest.split_last().expect("two or more");
    let local = PathBuf::from(local);
    if !local.is_dir() {
        return Err(format!(
            "{prog}: error: target ‘{}’ is not a directory",
            local.display()
        ));
    }
    for r in remotes {
        copy_to_host(&m, r, &local).map_err(|e| api_err("copy_out", &e))?;
    }
    Ok(0)
}

/// guestfs_copy_out: a file goes to LOCAL/basename; a directory is copied whole to
/// LOCAL/basename (the root's contents straight into LOCAL).
pub fn copy_to_host(m: &Mounts, remote: &str, local: &Path) -> Result<()> {
    let n = m.resolve(remote, true)?;
    let st = m.stat_node(n)?;
    let base = remote
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("");
    match st.kind {
        FileType::Directory => {
            let target = if base.is_empty() {
                local.to_path_buf()
            } else {
                let t = local.join(base);
                make_dir(&t)?;
                t
            };
            let mut links = HashMap::new();
            write_tree(m, remote, n, &target, 0, &mut links)?;
            set_meta(&target, &st, false)?;
            Ok(())
        }
        FileType::Regular => {
            let t = local.join(base);
            write_file(m, n, remote, &t, &st)
        }
        _ => Err(Error::Invalid(format!(
            "{remote}: not a regular file or directory"
        ))),
    }
}

fn safe_name(name: &[u8]) -> Result<&[u8]> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(Error::Corrupt(format!(
            "refusing to write a file named {:?} on the host",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(name)
}

fn make_dir(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => {
            std::fs::remove_file(p)?;
            Ok(std::fs::create_dir(p)?)
        }
        Err(_) => Ok(std::fs::create_dir(p)?),
    }
}

/// Removes whatever non-directory is at `p`, so a new entry can be created (tar x does so).
fn clear(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(md) if md.is_dir() => Err(Error::IsDir(p.display().to_string())),
        Ok(_) => Ok(std::fs::remove_file(p)?),
        Err(_) => Ok(()),
    }
}

fn write_file(m: &Mounts, n: Node, shown: &str, t: &Path, st: &Stat) -> Result<()> {
    clear(t)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(t)?;
    stream(m, n, shown, &mut |b| f.write_all(b).map_err(Error::Io))?;
    drop(f);
    set_meta(t, st, false)
}

/// (mount, inode) of a regular file with several links -> where it was first written.
type Links = HashMap<Node, PathBuf>;

fn write_tree(
    m: &Mounts,
    dir: &str,
    n: Node,
    target: &Path,
    depth: usize,
    links: &mut Links,
) -> Result<()> {
    if depth > virtkit_guest::mounts::MAX_DEPTH {
        return Err(Error::Corrupt(format!("{dir}: directory tree too deep")));
    }
    for e in m.read_dir_node(n, dir)? {
        let name = safe_name(&e.name)?;
        let c = m.child(dir, n, &e);
        let st = m.stat_node(c)?;
        let path = virtkit_guest::mounts::join(dir, name);
        let t = target.join(std::ffi::OsStr::from_bytes(name));
        match st.kind {
            FileType::Directory => {
                make_dir(&t)?;
                write_tree(m, &path, c, &t, depth + 1, links)?;
                set_meta(&t, &st, false)?;
            }
            FileType::Regular => {
                if st.nlink > 1 {
                    if let Some(first) = links.get(&c) {
                        clear(&t)?;
                        std::fs::hard_link(first, &t)?;
                        continue;
                    }
                    links.insert(c, t.clone());
                }
                write_file(m, c, &path, &t, &st)?;
            }
            FileType::Symlink => {
                let target = m.fs(c).readlink(c.ino)?;
                clear(&t)?;
                symlink(std::ffi::OsStr::from_bytes(&target), &t)?;
                set_meta(&t, &st, true)?;
            }
            FileType::CharDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
                clear(&t)?;
                let cpath = cstr(&t)?;
                // SAFETY: cpath is a valid NUL-terminated path; mknod does not retain it.
                let r = unsafe {
                    libc::mknod(
                        cpath.as_ptr(),
                        st.mode as libc::mode_t,
                        st.rdev as libc::dev_t,
                    )
                };
                if r != 0 {
                    return Err(Error::Io(std::io::Error::last_os_error()));
                }
                set_meta(&t, &st, false)?;
            }
            FileType::Unknown => {}
        }
    }
    Ok(())
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Invalid(format!("{}: NUL in path", p.display())))
}

/// Mode, owner (when root) and times, without following a symlink at `p`.
fn set_meta(p: &Path, st: &Stat, is_link: bool) -> Result<()> {
    let c = cstr(p)?;
    // SAFETY: c is a valid NUL-terminated path for each call; the timespec array lives
    // across the utimensat call. Failures of lchown (not root) are ignored as tar does.
    unsafe {
        if libc::geteuid() == 0 {
            libc::lchown(c.as_ptr(), st.uid, st.gid);
        }
        if !is_link {
            libc::chmod(c.as_ptr(), (st.mode & 0o7777) as libc::mode_t);
        }
        let ts = [
            libc::timespec {
                tv_sec: st.atime.sec as libc::time_t,
                tv_nsec: st.atime.nsec as _,
            },
            libc::timespec {
                tv_sec: st.mtime.sec as libc::time_t,
                tv_nsec: st.mtime.nsec as _,
            },
        ];
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
    Ok(())
}

pub fn tar_out(prog: &str, args: &[String]) -> std::result::Result<i32, String> {
    let mut gzip = false;
    let Some((rest, m)) = open_tool(
        prog,
        args,
        "a:c:d:m:vVxz",
        &mut |o| {
            if matches!(o, Opt::Short('z', _) | Opt::Long("gzip", _)) {
                gzip = true;
                true
            } else {
                false
            }
        },
        TAR_USAGE,
    )?
    else {
        return Ok(0);
    };
    if rest.len() != 2 {
        return Err(format!("{prog}: error: expecting a directory and an output file\nTry ‘{prog} --help’ for more information."));
    }
    let (dir, out) = (&rest[0], &rest[1]);
    let sink: Box<dyn Write> = if out == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(out).map_err(|e| format!("{prog}: error: {out}: {e}"))?)
    };
    let sink: Box<dyn Write> = if gzip {
        Box::new(flate2::write::GzEncoder::new(
            sink,
            flate2::Compression::default(),
        ))
    } else {
        sink
    };
    let mut b = tar::Builder::new(sink);
    b.mode(tar::HeaderMode::Complete);
    write_tar(&m, dir, &mut b).map_err(|e| api_err("tar_out", &e))?;
    let w = b
        .into_inner()
        .map_err(|e| format!("{prog}: error: {out}: {e}"))?;
    finish(w).map_err(|e| format!("{prog}: error: {out}: {e}"))?;
    Ok(0)
}

fn finish(mut w: Box<dyn Write>) -> std::io::Result<()> {
    w.flush()
}

fn header(st: &Stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.mode & 0o7777);
    h.set_uid(st.uid as u64);
    h.set_gid(st.gid as u64);
    h.set_mtime(st.mtime.sec.max(0) as u64);
    h.set_size(0);
    if st.uid == 0 {
        let _ = h.set_username("root");
    }
    if st.gid == 0 {
        let _ = h.set_groupname("root");
    }
    h
}

/// `tar -C DIR -cf - .`: "./" first, then every entry below, hard links as links.
fn write_tar<W: Write>(m: &Mounts, dir: &str, b: &mut tar::Builder<W>) -> Result<()> {
    let top = m.resolve(dir, true)?;
    let st = m.stat_node(top)?;
    if st.kind != FileType::Directory {
        return Err(Error::NotDir(dir.to_string()));
    }
    let mut h = header(&st, tar::EntryType::Directory);
    put(b, &mut h, b"./", None, std::io::empty())?;
    let base = dir.trim_end_matches('/').to_string();
    let mut links: HashMap<Node, String> = HashMap::new();
    let mut err: Option<Error> = None;
    m.walk(dir, &mut |p: &str, st: &Stat, n: Node| {
        let rel = format!(".{}", p.strip_prefix(&base).unwrap_or(p));
        let r: std::io::Result<()> = (|| match st.kind {
            FileType::Directory => {
                let mut h = header(st, tar::EntryType::Directory);
                put(
                    b,
                    &mut h,
                    format!("{rel}/").as_bytes(),
                    None,
                    std::io::empty(),
                )
            }
            FileType::Regular => {
                if st.nlink > 1 {
                    if let Some(first) = links.get(&n) {
                        let mut h = header(st, tar::EntryType::Link);
                        return put(
                            b,
                            &mut h,
                            rel.as_bytes(),
                            Some(first.as_bytes()),
                            std::io::empty(),
                        );
                    }
                    links.insert(n, rel.clone());
                }
                let mut h = header(st, tar::EntryType::Regular);
                h.set_size(st.size);
                let reader = NodeReader {
                    m,
                    n,
                    off: 0,
                    size: st.size,
                };
                put(b, &mut h, rel.as_bytes(), None, reader)
            }
            FileType::Symlink => {
                let t = m
                    .fs(n)
                    .readlink(n.ino)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let mut h = header(st, tar::EntryType::Symlink);
                put(b, &mut h, rel.as_bytes(), Some(&t), std::io::empty())
            }
            FileType::CharDevice | FileType::BlockDevice => {
                let kind = if st.kind == FileType::CharDevice {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                };
                let mut h = header(st, kind);
                let (ma, mi) = super::fmt::dev_split(st.rdev);
                h.set_device_major(ma as u32)?;
                h.set_device_minor(mi as u32)?;
                put(b, &mut h, rel.as_bytes(), None, std::io::empty())
            }
            FileType::Fifo => {
                let mut h = header(st, tar::EntryType::Fifo);
                put(b, &mut h, rel.as_bytes(), None, std::io::empty())
            }
            // GNU tar skips sockets ("socket ignored").
            FileType::Socket | FileType::Unknown => Ok(()),
        })();
        r.map_err(|e| {
            let msg = e.to_string();
            err.get_or_insert(Error::Io(e));
            Error::Invalid(msg)
        })
    })
    .map_err(|e| err.take().unwrap_or(e))?;
    b.finish()?;
    Ok(())
}

/// Appends an entry under exactly `name` (GNU tar keeps the leading "./", which the tar
/// crate's path setters drop), with GNU LongName/LongLink records for names of 100 bytes
/// or more, as GNU tar writes them.
fn put<W: Write>(
    b: &mut tar::Builder<W>,
    h: &mut tar::Header,
    name: &[u8],
    link: Option<&[u8]>,
    data: impl std::io::Read,
) -> std::io::Result<()> {
    let long = |b: &mut tar::Builder<W>, kind: tar::EntryType, v: &[u8]| {
        let mut lh = tar::Header::new_gnu();
        lh.set_entry_type(kind);
        set_raw(&mut lh.as_old_mut().name, b"././@LongLink");
        lh.set_mode(0o644);
        lh.set_size(v.len() as u64 + 1);
        lh.set_cksum();
        let mut body = v.to_vec();
        body.push(0);
        b.append(&lh, body.as_slice())
    };
    if let Some(l) = link {
        if l.len() >= 100 {
            long(b, tar::EntryType::GNULongLink, l)?;
        }
        set_raw(&mut h.as_old_mut().linkname, &l[..l.len().min(99)]);
    }
    if name.len() >= 100 {
        long(b, tar::EntryType::GNULongName, name)?;
    }
    set_raw(&mut h.as_old_mut().name, &name[..name.len().min(99)]);
    h.set_cksum();
    b.append(h, data)
}

fn set_raw(field: &mut [u8], v: &[u8]) {
    field.fill(0);
    field[..v.len()].copy_from_slice(v);
}

/// A guest file as an `io::Read` for the tar builder; a file that reads short is padded
/// with zeros to the size in its header (the archive stays well-formed).
struct NodeReader<'a> {
    m: &'a Mounts,
    n: Node,
    off: u64,
    size: u64,
}

impl std::io::Read for NodeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.off >= self.size {
            return Ok(0);
        }
        let want = ((self.size - self.off) as usize).min(buf.len());
        let got = self
            .m
            .read_node(self.n, self.off, &mut buf[..want])
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let got = if got == 0 {
            buf[..want].fill(0);
            want
        } else {
            got
        };
        self.off += got as u64;
        Ok(got)
    }
}
