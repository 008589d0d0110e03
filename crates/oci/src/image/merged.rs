//! Read-only lookups through a stack of unpacked layer directories, with overlayfs' rules,
//! without mounting anything: a whiteout (0:0 character device) hides what is below it, a
//! directory marked `trusted.overlay.opaque=y` hides the directories below it, a directory hides
//! a non-directory below it. Symlinks met on the way are followed within the merged tree
//! (an absolute target or `..` never leaves its root), and every step is an `openat` with
//! `O_NOFOLLOW` inside one layer directory, so nothing outside the layers is ever read.
//!
//! Used to read `/etc/passwd` and `/etc/group` of an image, and to find the attributes of
//! directories a layer tar implies without listing them.

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// Symlinks followed for one lookup (the kernel's limit).
const MAX_HOPS: usize = 40;
/// Directory depth of a lookup (each level holds a descriptor per layer).
const MAX_DEPTH: usize = 256;

pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// A stack of layer directories, topmost first.
pub struct MergedView {
    roots: Vec<OwnedFd>,
}

/// The directories making up one merged directory, topmost first.
struct Level {
    dirs: Vec<OwnedFd>,
}

enum Child {
    Missing,
    Dir(Level, Box<Stat>),
    /// A non-directory, found in `level.dirs[index]`.
    Other {
        index: usize,
        stat: Box<Stat>,
    },
}

pub(crate) fn is_whiteout(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

pub(crate) fn is_opaque(dir: impl AsFd) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::fgetxattr(dir, OPAQUE_XATTR, &mut buf), Ok(1) if buf[0] == b'y')
}

fn open_dir_at(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

impl MergedView {
    /// `layers`: the layer directories, topmost first.
    pub fn open(layers: &[impl AsRef<Path>]) -> io::Result<MergedView> {
        let roots = layers
            .iter()
            .map(|p| {
                Ok(rustix::fs::open(
                    p.as_ref(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(MergedView { roots })
    }

    fn root_level(&self) -> io::Result<Level> {
        let mut dirs = Vec::new();
        for r in &self.roots {
            dirs.push(r.try_clone()?);
            if is_opaque(r) {
                break;
            }
        }
        Ok(Level { dirs })
    }

    fn child(level: &Level, name: &str) -> io::Result<Child> {
        let mut dirs = Vec::new();
        let mut top: Option<Box<Stat>> = None;
        for (i, d) in level.dirs.iter().enumerate() {
            let st = match rustix::fs::statat(d, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if is_whiteout(&st) {
                break;
            }
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let fd = open_dir_at(d, name)?;
                let opaque = is_opaque(&fd);
                dirs.push(fd);
                top.get_or_insert_with(|| Box::new(st));
                if opaque {
                    break;
                }
            } else if dirs.is_empty() {
                return Ok(Child::Other {
                    index: i,
                    stat: Box::new(st),
                });
            } else {
                break;
            }
        }
        Ok(match top {
            Some(st) => Child::Dir(Level { dirs }, st),
            None => Child::Missing,
        })
    }

    /// Resolves `path` (following symlinks inside the merged tree); returns the level holding
    /// the last component's parent, the last component's name, and what it is.
    fn resolve(&self, path: &str) -> io::Result<Option<(Level, String, Child)>> {
        let mut stack = vec![self.root_level()?];
        let mut pending: VecDeque<String> = components(path);
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let Some(level) = stack.last() else {
                return Ok(None);
            };
            match Self::child(level, &c)? {
                Child::Missing => return Ok(None),
                Child::Dir(l, st) => {
                    if pending.is_empty() {
                        let parent = stack.pop().unwrap_or(Level { dirs: Vec::new() });
                        return Ok(Some((parent, c, Child::Dir(l, st))));
                    }
                    if stack.len() > MAX_DEPTH {
                        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
                    }
                    stack.push(l);
                }
                Child::Other { index, stat } => {
                    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                        hops += 1;
                        if hops > MAX_HOPS {
                            return Err(io::Error::from_raw_os_error(libc::ELOOP));
                        }
                        let target =
                            rustix::fs::readlinkat(&level.dirs[index], c.as_str(), Vec::new())?;
                        let target = String::from_utf8_lossy(target.as_bytes()).into_owned();
                        if target.starts_with('/') {
                            stack.truncate(1);
                        }
                        for t in components(&target).into_iter().rev() {
                            pending.push_front(t);
                        }
                        continue;
                    }
                    if !pending.is_empty() {
                        return Ok(None);
                    }
                    let parent = stack.pop().unwrap_or(Level { dirs: Vec::new() });
                    return Ok(Some((parent, c, Child::Other { index, stat })));
                }
            }
        }
        Ok(None)
    }

    /// Reads a regular file of the merged tree, `None` when it does not exist (or is not a
    /// regular file); more than `limit` bytes is an error.
    pub fn read_file(&self, path: &str, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let Some((parent, name, Child::Other { index, stat })) = self.resolve(path)? else {
            return Ok(None);
        };
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Ok(None);
        }
        let fd = rustix::fs::openat(
            &parent.dirs[index],
            name.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let mut v = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut v)?;
        if v.len() as u64 > limit {
            return Err(io::Error::other(format!(
                "{path}: larger than {limit} bytes"
            )));
        }
        Ok(Some(v))
    }

    /// The attributes of a directory of the merged tree, without following a final symlink.
    pub fn dir_stat(&self, path: &str) -> io::Result<Option<Stat>> {
        if components(path).is_empty() {
            return Ok(match self.roots.first() {
                Some(r) => Some(rustix::fs::fstat(r)?),
                None => None,
            });
        }
        match self.resolve_nofollow(path)? {
            Some(Child::Dir(_, st)) => Ok(Some(*st)),
            _ => Ok(None),
        }
    }

    /// Like `resolve`, but a symlink anywhere means "not a directory here".
    fn resolve_nofollow(&self, path: &str) -> io::Result<Option<Child>> {
        let mut level = self.root_level()?;
        let comps = components(path);
        let n = comps.len();
        for (i, c) in comps.into_iter().enumerate() {
            if c == ".." {
                return Ok(None);
            }
            match Self::child(&level, &c)? {
                Child::Dir(l, st) => {
                    if i + 1 == n {
                        return Ok(Some(Child::Dir(l, st)));
                    }
                    level = l;
                }
                other => return Ok((i + 1 == n).then_some(other)),
            }
        }
        Ok(None)
    }
}

fn components(path: &str) -> VecDeque<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}
