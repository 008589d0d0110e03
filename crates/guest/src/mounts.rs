//! The guest's mounted tree: filesystems attached at mountpoints, and path resolution across
//! them, as libguestfs' appliance sees it after `mount`.
//!
//! Every path is resolved here, component by component, inside the guest: symbolic links are
//! followed with their targets interpreted relative to the guest's root (an absolute target
//! starts again at the guest's `/`, `..` never climbs above it), so nothing a guest contains
//! can make a lookup leave the guest. The host's filesystem is never touched. Link chains are
//! bounded like the kernel's (40), and walks keep a visited set so a corrupt directory graph
//! cannot loop.

use crate::error::{Error, Result};
use crate::fs::{DirEntry, FileType, Filesystem, Ino, Stat, StatFs};
use std::collections::HashSet;
use std::sync::Arc;

/// Symbolic links followed in one resolution at most (Linux: MAXSYMLINKS).
const MAX_LINKS: usize = 40;
/// Deepest directory a walk descends into.
pub const MAX_DEPTH: usize = 4096;

pub struct Mount {
    /// Canonical absolute path: "/", "/boot", "/boot/efi".
    pub mountpoint: String,
    /// The device name it came from ("/dev/sda1", "/dev/VG/LV").
    pub device: String,
    pub fs: Arc<dyn Filesystem>,
}

/// A resolved location: which mount, which inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Node {
    pub mount: usize,
    pub ino: Ino,
}

#[derive(Default)]
pub struct Mounts {
    mounts: Vec<Mount>,
}

impl Mounts {
    pub fn new() -> Mounts {
        Mounts::default()
    }

    pub fn list(&self) -> &[Mount] {
        &self.mounts
    }

    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    pub fn fs(&self, n: Node) -> &Arc<dyn Filesystem> {
        &self.mounts[n.mount].fs
    }

    /// Attaches `fs` at `mountpoint`. "/" first; any other mountpoint must be an existing
    /// directory of the tree (symlinks in it resolved inside the guest, as mount(8) does).
    pub fn mount(&mut self, mountpoint: &str, device: &str, fs: Arc<dyn Filesystem>) -> Result<()> {
        let canon = if self.mounts.is_empty() {
            if mountpoint != "/" {
                return Err(Error::Invalid(format!(
                    "mount: {mountpoint}: the root filesystem must be mounted on / first"
                )));
            }
            "/".to_string()
        } else {
            let (path, node) = self.resolve_path(mountpoint.as_bytes(), true)?;
            if self.stat_node(node)?.kind != FileType::Directory {
                return Err(Error::NotDir(format!("mount: {mountpoint}")));
            }
            String::from_utf8_lossy(&path).into_owned()
        };
        if let Some(i) = self.mounts.iter().position(|m| m.mountpoint == canon) {
            // Mounting again over the same point hides the earlier mount, as in Linux.
            self.mounts.remove(i);
        }
        self.mounts.push(Mount {
            mountpoint: canon,
            device: device.to_string(),
            fs,
        });
        Ok(())
    }

    pub fn umount_all(&mut self) {
        self.mounts.clear();
    }

    fn mount_at(&self, canon: &[u8]) -> Option<usize> {
        // The last mount on a path wins (a later mount hides an earlier one).
        self.mounts
            .iter()
            .rposition(|m| m.mountpoint.as_bytes() == canon)
    }

    fn root(&self) -> Result<Node> {
        let m = self
            .mount_at(b"/")
            .ok_or_else(|| Error::Invalid("no filesystem is mounted on /".into()))?;
        Ok(Node {
            mount: m,
            ino: self.mounts[m].fs.root(),
        })
    }

    pub fn stat_node(&self, n: Node) -> Result<Stat> {
        self.fs(n).stat(n.ino)
    }

    /// Resolves an absolute guest path. `follow_last`: whether a symlink in the last
    /// component is followed (stat vs lstat). Returns the canonical path and the node.
    pub fn resolve_path(&self, path: &[u8], follow_last: bool) -> Result<(Vec<u8>, Node)> {
        let shown = String::from_utf8_lossy(path).into_owned();
        if path.first() != Some(&b'/') {
            return Err(Error::Invalid(format!(
                "{shown}: path must start with a / character"
            )));
        }
        // Pending components, last first (so links can push their targets in front).
        let mut todo: Vec<Vec<u8>> = split(path).into_iter().rev().collect();
        // The way down: (canonical path, node) per level, root first.
        let mut stack: Vec<(Vec<u8>, Node)> = vec![(b"/".to_vec(), self.root()?)];
        let mut links = 0usize;
        while let Some(c) = todo.pop() {
            if c == b"." {
                continue;
            }
            if c == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let (cur_path, cur) = stack.last().cloned().expect("root stays on the stack");
            let st = self.stat_node(cur)?;
            if st.kind != FileType::Directory {
                return Err(Error::NotDir(shown));
            }
            let e = self
                .fs(cur)
                .lookup(cur.ino, &c)?
                .ok_or_else(|| Error::NotFound(shown.clone()))?;
            let mut child_path = cur_path.clone();
            if child_path.len() > 1 {
                child_path.push(b'/');
            }
            child_path.extend_from_slice(&c);
            let mut child = Node {
                mount: cur.mount,
                ino: e.ino,
            };
            if let Some(m) = self.mount_at(&child_path) {
                child = Node {
                    mount: m,
                    ino: self.mounts[m].fs.root(),
                };
            }
            let last = todo.is_empty();
            let kind = if e.kind == FileType::Unknown || child.mount != cur.mount {
                self.stat_node(child)?.kind
            } else {
                e.kind
            };
            if kind == FileType::Symlink && (!last || follow_last) {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Error::Loop(shown));
                }
                let target = self.fs(child).readlink(child.ino)?;
                if target.is_empty() {
                    return Err(Error::NotFound(shown));
                }
                if target[0] == b'/' {
                    stack.truncate(1);
                }
                for t in split(&target).into_iter().rev() {
                    todo.push(t);
                }
                continue;
            }
            if stack.len() > MAX_DEPTH {
                return Err(Error::Invalid(format!("{shown}: path too deep")));
            }
            stack.push((child_path, child));
        }
        Ok(stack.pop().expect("root stays on the stack"))
    }

    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Node> {
        Ok(self.resolve_path(path.as_bytes(), follow_last)?.1)
    }

    pub fn stat(&self, path: &str) -> Result<Stat> {
        self.stat_node(self.resolve(path, true)?)
    }

    pub fn lstat(&self, path: &str) -> Result<Stat> {
        self.stat_node(self.resolve(path, false)?)
    }

    pub fn exists(&self, path: &str) -> Result<bool> {
        match self.resolve(path, true) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) | Err(Error::NotDir(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Directory entries of `path` (followed if a link), names sorted as libguestfs' `ls`
    /// sorts them (bytewise).
    pub fn read_dir(&self, path: &str) -> Result<Vec<DirEntry>> {
        let n = self.resolve(path, true)?;
        self.read_dir_node(n, path)
    }

    pub fn read_dir_node(&self, n: Node, shown: &str) -> Result<Vec<DirEntry>> {
        if self.stat_node(n)?.kind != FileType::Directory {
            return Err(Error::NotDir(shown.to_string()));
        }
        let mut v = self.fs(n).read_dir(n.ino)?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// A child of a directory node, with mounts crossed (what `stat dir/name` sees).
    pub fn child(&self, dir_path: &str, dir: Node, e: &DirEntry) -> Node {
        let p = join(dir_path, &e.name);
        match self.mount_at(p.as_bytes()) {
            Some(m) => Node {
                mount: m,
                ino: self.mounts[m].fs.root(),
            },
            None => Node {
                mount: dir.mount,
                ino: e.ino,
            },
        }
    }

    pub fn readlink(&self, path: &str) -> Result<Vec<u8>> {
        let n = self.resolve(path, false)?;
        if self.stat_node(n)?.kind != FileType::Symlink {
            return Err(Error::Invalid(format!("{path}: Invalid argument")));
        }
        self.fs(n).readlink(n.ino)
    }

    /// Reads a regular file whole, refusing files larger than `limit` bytes (callers that
    /// stream use [`Mounts::read_node`]).
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let n = self.resolve(path, true)?;
        let st = self.stat_node(n)?;
        match st.kind {
            FileType::Directory => return Err(Error::IsDir(path.to_string())),
            FileType::Regular => {}
            _ => {
                return Err(Error::Invalid(format!("{path}: not a regular file")));
            }
        }
        if st.size > limit {
            return Err(Error::Invalid(format!(
                "{path}: file is too large ({} bytes) to read into memory",
                st.size
            )));
        }
        let mut v = vec![0u8; st.size as usize];
        let got = self.read_node(n, 0, &mut v)?;
        v.truncate(got);
        Ok(v)
    }

    /// Reads from a file node at `off` until `buf` is full or the file ends.
    pub fn read_node(&self, n: Node, off: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let k = self
                .fs(n)
                .read(n.ino, off + done as u64, &mut buf[done..])?;
            if k == 0 {
                break;
            }
            done += k;
        }
        Ok(done)
    }

    /// statvfs of the filesystem holding `path`.
    pub fn statfs(&self, path: &str) -> Result<StatFs> {
        let n = self.resolve(path, true)?;
        self.fs(n).statfs()
    }

    /// Walks the tree under `path` depth-first, in sorted order, calling `f(path, stat)` for
    /// every entry below it (not `path` itself). Symlinks are not followed; each directory is
    /// entered once (a corrupt graph that links back is not re-entered).
    pub fn walk(
        &self,
        path: &str,
        f: &mut dyn FnMut(&str, &Stat, Node) -> Result<()>,
    ) -> Result<()> {
        let start = self.resolve(path, true)?;
        let mut seen: HashSet<Node> = HashSet::new();
        seen.insert(start);
        let base = if path.len() > 1 {
            path.trim_end_matches('/').to_string()
        } else {
            path.to_string()
        };
        self.walk_dir(&base, start, 0, &mut seen, f)
    }

    fn walk_dir(
        &self,
        path: &str,
        dir: Node,
        depth: usize,
        seen: &mut HashSet<Node>,
        f: &mut dyn FnMut(&str, &Stat, Node) -> Result<()>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::Corrupt(format!("{path}: directory tree too deep")));
        }
        for e in self.read_dir_node(dir, path)? {
            let child = self.child(path, dir, &e);
            let p = join(path, &e.name);
            let st = self.stat_node(child)?;
            f(&p, &st, child)?;
            if st.kind == FileType::Directory && seen.insert(child) {
                self.walk_dir(&p, child, depth + 1, seen, f)?;
            }
        }
        Ok(())
    }
}

/// "a/b//c/" -> ["a", "b", "c"]
fn split(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| c.to_vec())
        .collect()
}

/// `dir` + "/" + `name` (names are shown lossily as UTF-8).
pub fn join(dir: &str, name: &[u8]) -> String {
    let n = String::from_utf8_lossy(name);
    if dir.ends_with('/') {
        format!("{dir}{n}")
    } else {
        format!("{dir}/{n}")
    }
}
