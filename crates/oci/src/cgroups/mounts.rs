//! Where the cgroup hierarchies are: the cgroup and cgroup2 entries of /proc/self/mountinfo,
//! and the runtime's own cgroup in each (/proc/self/cgroup), for relative cgroupsPaths.

use super::{CgroupError, Layout};
use std::path::{Path, PathBuf};

/// The v1 controllers the kernel knows (a v1 mount's options name the ones it carries).
pub const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// One cgroup mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub mountpoint: PathBuf,
    /// The cgroup mounted there ("/" unless a sub-tree was bind-mounted or a cgroup namespace
    /// is in play).
    pub root: String,
    pub v2: bool,
    /// v1: the controllers of the hierarchy, sorted, and "name=X" for a named hierarchy.
    pub controllers: Vec<String>,
}

/// The cgroup and cgroup2 mounts of a mountinfo text, in order.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines().take(1 << 16) {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 6 || post.len() < 3 {
            continue;
        }
        let v2 = match post[0] {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let mut controllers: Vec<String> = if v2 {
            Vec::new()
        } else {
            post[2]
                .split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(String::from)
                .collect()
        };
        controllers.sort();
        if !v2 && controllers.is_empty() {
            continue;
        }
        out.push(Mount {
            mountpoint: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            v2,
            controllers,
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of /proc/PID/cgroup: "3:cpu,cpuacct:/a/b" (v2: "0::/a/b").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Membership {
    pub v2: bool,
    /// Sorted, as in `Mount::controllers`.
    pub controllers: Vec<String>,
    pub path: String,
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .take(1 << 10)
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (id, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            let mut controllers: Vec<String> = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            controllers.sort();
            Some(Membership {
                v2: id == "0" && controllers.is_empty(),
                controllers,
                path: path.to_string(),
            })
        })
        .collect()
}

/// The hierarchies to use: one mount per v1 hierarchy, and the v2 mount.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub v1: Vec<Mount>,
    pub v2: Option<Mount>,
    /// The runtime's own cgroups.
    pub own: Vec<Membership>,
}

impl Hierarchies {
    /// From mountinfo and /proc/self/cgroup texts. When a hierarchy is mounted more than once,
    /// the mount under /sys/fs/cgroup showing the whole tree wins.
    pub fn from_texts(mountinfo: &str, proc_cgroup: &str) -> Hierarchies {
        let score = |m: &Mount| {
            (m.mountpoint.starts_with("/sys/fs/cgroup") as u8) * 2 + (m.root == "/") as u8
        };
        let mut h = Hierarchies {
            own: parse_proc_cgroup(proc_cgroup),
            ..Hierarchies::default()
        };
        for m in parse_mountinfo(mountinfo) {
            if m.v2 {
                let better = match &h.v2 {
                    None => true,
                    Some(cur) => {
                        let rank = |p: &Path| {
                            if p == Path::new("/sys/fs/cgroup") {
                                3
                            } else if p == Path::new("/sys/fs/cgroup/unified") {
                                2
                            } else {
                                1
                            }
                        };
                        (rank(&m.mountpoint), score(&m)) > (rank(&cur.mountpoint), score(cur))
                    }
                };
                if better {
                    h.v2 = Some(m);
                }
                continue;
            }
            match h.v1.iter_mut().find(|x| x.controllers == m.controllers) {
                Some(cur) if score(&m) > score(cur) => *cur = m,
                Some(_) => {}
                None => h.v1.push(m),
            }
        }
        h
    }

    /// This process's view.
    pub fn discover() -> Result<Hierarchies, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| CgroupError::Io {
                op: "reading",
                path: p.into(),
                source,
            })
        };
        let h =
            Hierarchies::from_texts(&read("/proc/self/mountinfo")?, &read("/proc/self/cgroup")?);
        if h.v1.is_empty() && h.v2.is_none() {
            return Err(CgroupError::NoCgroupFs);
        }
        Ok(h)
    }

    pub fn layout(&self) -> Result<Layout, CgroupError> {
        // Named-only v1 hierarchies (name=systemd next to cgroup2) do not make a v1 host.
        let real_v1 = self
            .v1
            .iter()
            .any(|m| m.controllers.iter().any(|c| !c.starts_with("name=")));
        match (real_v1, self.v2.is_some()) {
            (true, true) => Ok(Layout::Hybrid),
            (true, false) => Ok(Layout::V1),
            (false, true) => Ok(Layout::V2),
            (false, false) => Err(CgroupError::NoCgroupFs),
        }
    }

    /// The runtime's own cgroup in mount `m`, as a path under the mount point (None when it is
    /// not visible through that mount).
    pub fn own_dir(&self, m: &Mount) -> Option<PathBuf> {
        let me = self.own.iter().find(|o| {
            if m.v2 {
                o.v2
            } else {
                o.controllers == m.controllers
            }
        })?;
        let rel = if m.root == "/" {
            me.path.as_str()
        } else {
            let r = me.path.strip_prefix(m.root.as_str())?;
            if !(r.is_empty() || r.starts_with('/')) {
                return None;
            }
            r
        };
        let mut p = m.mountpoint.clone();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            // /proc/self/cgroup is the kernel's, but stay inside the mount whatever it says.
            if c == "." || c == ".." {
                return None;
            }
            p.push(c);
        }
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 1 0:22 / /sys rw - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/net_cls,net_prio rw shared:9 - cgroup cgroup rw,net_cls,net_prio
36 1 0:28 /sub /mnt/mem\\040x rw - cgroup cgroup rw,memory
";
    const PROC: &str =
        "4:memory:/process_api/x\n3:cpu:/\n2:name=systemd:/\n1:net_cls,net_prio:/\n0::/\n";

    #[test]
    fn hybrid() {
        let h = Hierarchies::from_texts(MOUNTINFO, PROC);
        assert_eq!(h.layout().unwrap(), Layout::Hybrid);
        assert_eq!(h.v1.len(), 4);
        let mem = h.v1.iter().find(|m| m.controllers == ["memory"]).unwrap();
        assert_eq!(mem.mountpoint, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            h.own_dir(mem).unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/x")
        );
        let nc = h.v1.iter().find(|m| m.controllers.len() == 2).unwrap();
        assert_eq!(nc.controllers, ["net_cls", "net_prio"]);
        let v2 = h.v2.as_ref().unwrap();
        assert_eq!(h.own_dir(v2).unwrap(), Path::new("/sys/fs/cgroup/unified"));
        let all = parse_mountinfo(MOUNTINFO);
        assert_eq!(all.last().unwrap().mountpoint, Path::new("/mnt/mem x"));
        assert_eq!(all.last().unwrap().root, "/sub");
        // Seen through the /sub mount, /process_api/x is not visible.
        assert_eq!(h.own_dir(all.last().unwrap()), None);
    }

    #[test]
    fn pure_v2_and_none() {
        let h = Hierarchies::from_texts(
            "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/user.slice/x.scope\n",
        );
        assert_eq!(h.layout().unwrap(), Layout::V2);
        let h = Hierarchies::from_texts("", "");
        assert!(h.layout().is_err());
    }
}
