//! virt-diff: the differences between the filesystems of two guests (-a ... for the first,
//! -A ... for the second), in libguestfs' line format: "+ added", "- deleted", "= content
//! changed" followed by `diff -u` of the contents, and "-"/"+" pairs with a "# changed:" line
//! naming the stat fields that differ.

use super::cat::{checksum_node, download};
use super::fmt::{csv_field, now, stat_columns, Columns};
use super::{api_err, inspect_mount, parse, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};
use std::io::Write;
use virtkit_guest::fs::{FileType, Stat};
use virtkit_guest::mounts::{Mounts, Node};

const USAGE: &str = "virt-diff: list differences between virtual machines
Usage:
  virt-diff [--options] -d domain1 -D domain2
  virt-diff [--options] -a disk1.img [-a ...] -A disk2.img [-A ...]
Options:
  -a|--add image       Add image from first guest
  --all                Same as: --extra-stats --times --uids --xattrs
  --atime              Don't ignore access time changes
  -A image             Add image from second guest
  --checksum[=...]     Use checksum of file content
  --csv                Comma-Separated Values output
  --dir-links          Don't ignore directory nlink changes
  --dir-times          Don't ignore directory time changes
  --extra-stats        Display extra stats
  --format[=raw|..]    Force disk format for -a or -A option
  --help               Display brief help
  -h|--human-readable  Human-readable sizes in output
  --times              Display file times
  --time-days          Display file times as days before now
  --time-relative      Display file times as seconds before now
  --time-t             Display file times as time_t's
  --uids               Display UID, GID
  -V|--version         Display version and exit
  --xattrs             Display extended attributes
For more information, see the manpage virt-diff(1).
";

#[derive(Default)]
struct Flags {
    dir_links: bool,
    dir_times: bool,
    xattrs: bool,
    /// --atime lives in `c.atime`.
    c: Columns,
}

struct File {
    path: String,
    st: Stat,
    node: Node,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    csum: Option<String>,
}

pub fn run(prog: &str, args: &[String]) -> Result<i32, String> {
    let long: &'static [(&'static str, bool)] = Box::leak(
        [
            COMMON_LONG,
            &[
                ("all", false),
                ("atime", false),
                ("checksum", true),
                ("checksums", true),
                ("csv", false),
                ("dir-link", false),
                ("dir-links", false),
                ("dir-nlink", false),
                ("dir-nlinks", false),
                ("dir-time", false),
                ("dir-times", false),
                ("extra-stat", false),
                ("extra-stats", false),
                ("human-readable", false),
                ("time", false),
                ("times", false),
                ("time-days", false),
                ("time-relative", false),
                ("time-t", false),
                ("uid", false),
                ("uids", false),
                ("xattr", false),
                ("xattrs", false),
            ][..],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let spec = Spec {
        short: "a:A:c:d:D:hvVx",
        long,
    };
    // -a and --format go to the first guest's options; -A takes the --format in force.
    let mut c1 = Common::default();
    let mut second: Vec<(std::path::PathBuf, Option<virtkit_image::Format>)> = Vec::new();
    let mut f = Flags::default();
    let Some(rest) = parse(prog, &spec, args, &mut c1, USAGE, &mut |o| {
        match o {
            Opt::Short('A', Some(v)) => second.push((v.into(), None)),
            Opt::Short('D', Some(_)) => {
                return Err(format!("{prog}: error: -D: libvirt domains are not supported yet (the VM manager is not written); use -A DISK"))
            }
            Opt::Long("all", _) => {
                f.c.extra = true;
                f.c.times = true;
                f.c.uids = true;
                f.xattrs = true;
            }
            Opt::Long("atime", _) => f.c.atime = true,
            Opt::Long("dir-link" | "dir-links" | "dir-nlink" | "dir-nlinks", _) => f.dir_links = true,
            Opt::Long("dir-time" | "dir-times", _) => f.dir_times = true,
            Opt::Long("xattr" | "xattrs", _) => f.xattrs = true,
            o if f.c.take(o) => {}
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(0);
    };
    // -A disks take the --format given on the command line (if any).
    for d in &mut second {
        d.1 = c1.format();
    }
    if !rest.is_empty() {
        return Err(format!(
            "{prog}: error: extra argument ‘{}’ on the command line",
            rest[0]
        ));
    }
    if c1.drives.is_empty() || second.is_empty() {
        return Err(format!(
            "{prog}: error: you must specify some -a or -d options, and some -A or -D options.\nTry ‘{prog} --help’ for more information."
        ));
    }
    if f.c.human && f.c.csv {
        return Err(format!(
            "{prog}: you cannot use -h and --csv options together."
        ));
    }
    if let Some(k) = &f.c.checksum {
        super::cat::checksum_kind(k).map_err(|e| format!("libguestfs: error: checksum: {e}"))?;
    }
    let g1 = c1.launch()?;
    let c2 = Common {
        drives: second,
        ..Default::default()
    };
    let g2 = c2.launch()?;
    let m1 = inspect_mount(prog, &g1, false)?;
    let m2 = inspect_mount(prog, &g2, false)?;
    let t1 = tree(&m1, &f)?;
    let t2 = tree(&m2, &f)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let now = now();
    let (mut i, mut j) = (0, 0);
    while i < t1.len() || j < t2.len() {
        let ord = match (t1.get(i), t2.get(j)) {
            (Some(a), Some(b)) => a.path.as_bytes().cmp(b.path.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                line(&mut out, &f, now, "-", &m1, &t1[i])?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                line(&mut out, &f, now, "+", &m2, &t2[j])?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                changed(&mut out, &f, now, &m1, &t1[i], &m2, &t2[j])?;
                i += 1;
                j += 1;
            }
        }
    }
    out.flush().map_err(|e| format!("{prog}: {e}"))?;
    Ok(0)
}

/// visit("/") of one guest: every path with its stat (flattened as virt-diff flattens
/// atime and directory nlink/times unless asked), xattrs and checksum, in strcmp order.
fn tree(m: &Mounts, f: &Flags) -> Result<Vec<File>, String> {
    let mut v = Vec::new();
    let root = m.resolve("/", false).map_err(|e| api_err("lstatns", &e))?;
    let mut add = |path: &str, st: &Stat, n: Node| -> virtkit_guest::Result<()> {
        let mut st = st.clone();
        if !f.c.atime {
            st.atime = Default::default();
        }
        if st.kind == FileType::Directory {
            if !f.dir_links {
                st.nlink = 0;
            }
            if !f.dir_times {
                st.atime = Default::default();
                st.mtime = Default::default();
                st.ctime = Default::default();
            }
        }
        let csum = match (&f.c.checksum, st.kind) {
            (Some(k), FileType::Regular) => Some(checksum_node(m, n, k)?),
            _ => None,
        };
        let mut xattrs = m.fs(n).xattrs(n.ino)?;
        xattrs.sort();
        v.push(File {
            path: path.to_string(),
            st,
            node: n,
            xattrs,
            csum,
        });
        Ok(())
    };
    let st = m.stat_node(root).map_err(|e| api_err("lstatns", &e))?;
    add("/", &st, root).map_err(|e| api_err("lstatns", &e))?;
    m.walk("/", &mut add).map_err(|e| api_err("ls0", &e))?;
    v.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(v)
}

fn same_stat(a: &Stat, b: &Stat) -> bool {
    a == b
}

fn changed(
    out: &mut dyn Write,
    f: &Flags,
    now: i64,
    m1: &Mounts,
    a: &File,
    m2: &Mounts,
    b: &File,
) -> Result<(), String> {
    let content = a.csum != b.csum
        || (a.st.kind == FileType::Regular
            && b.st.kind == FileType::Regular
            && (a.st.mtime.sec != b.st.mtime.sec
                || a.st.ctime.sec != b.st.ctime.sec
                || a.st.size != b.st.size));
    if content {
        line(out, f, now, "=", m1, a)?;
        if !f.c.csv && a.st.kind == FileType::Regular && b.st.kind == FileType::Regular {
            out.flush().map_err(|e| e.to_string())?;
            unified_diff(out, m1, a, m2, b)?;
        }
    } else if !same_stat(&a.st, &b.st) || a.xattrs != b.xattrs {
        line(out, f, now, "-", m1, a)?;
        line(out, f, now, "+", m2, b)?;
        let mut names = vec!["#".to_string(), "changed:".to_string()];
        let (x, y) = (&a.st, &b.st);
        for (n, d) in [
            ("st_dev", false),
            ("st_ino", x.ino != y.ino),
            ("st_mode", x.mode != y.mode),
            ("st_nlink", x.nlink != y.nlink),
            ("st_uid", x.uid != y.uid),
            ("st_gid", x.gid != y.gid),
            ("st_rdev", x.rdev != y.rdev),
            ("st_size", x.size != y.size),
            ("st_blksize", x.blksize != y.blksize),
            ("st_blocks", x.blocks != y.blocks),
            ("st_atime_sec", x.atime.sec != y.atime.sec),
            ("st_mtime_sec", x.mtime.sec != y.mtime.sec),
            ("st_ctime_sec", x.ctime.sec != y.ctime.sec),
        ] {
            if d {
                names.push(n.to_string());
            }
        }
        if a.xattrs != b.xattrs {
            names.push("xattrs".into());
        }
        let sep = if f.c.csv { "," } else { " " };
        writeln!(out, "{}", names.join(sep)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `diff -u a b | tail -n +3`, then "@@ End of diff @@", on copies of the two files in a
/// private temporary directory.
fn unified_diff(
    out: &mut dyn Write,
    m1: &Mounts,
    a: &File,
    m2: &Mounts,
    b: &File,
) -> Result<(), String> {
    let d = std::env::temp_dir().join(format!("virtdiff{}", std::process::id()));
    std::fs::create_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let (pa, pb) = (d.join("a"), d.join("b"));
    let r = (|| -> Result<(), String> {
        let mut fa = std::fs::File::create(&pa).map_err(|e| e.to_string())?;
        download(m1, &a.path, &mut fa).map_err(|e| api_err("download", &e))?;
        let mut fb = std::fs::File::create(&pb).map_err(|e| e.to_string())?;
        download(m2, &b.path, &mut fb).map_err(|e| api_err("download", &e))?;
        let o = std::process::Command::new("diff")
            .arg("-u")
            .arg(&pa)
            .arg(&pb)
            .output()
            .map_err(|e| format!("diff: {e}"))?;
        let text = o.stdout;
        // Drop the two header lines (they name the temporary files).
        let mut n = 0;
        let body = text
            .split_inclusive(|&c| c == b'\n')
            .filter(|_| {
                n += 1;
                n > 2
            })
            .flatten()
            .copied()
            .collect::<Vec<u8>>();
        out.write_all(&body).map_err(|e| e.to_string())?;
        writeln!(out, "@@ End of diff @@").map_err(|e| e.to_string())
    })();
    let _ = std::fs::remove_dir_all(&d);
    r
}

fn line(
    out: &mut dyn Write,
    f: &Flags,
    now: i64,
    tag: &str,
    m: &Mounts,
    file: &File,
) -> Result<(), String> {
    let st = &file.st;
    let mut v = vec![tag.to_string()];
    v.extend(stat_columns(st, &f.c, now));
    if let Some(c) = &file.csum {
        v.push(c.clone());
    }
    v.push(if f.c.csv {
        csv_field(&file.path)
    } else {
        file.path.clone()
    });
    if st.kind == FileType::Symlink {
        if let Ok(l) = m.fs(file.node).readlink(file.node.ino) {
            let l = String::from_utf8_lossy(&l).into_owned();
            v.push(if f.c.csv {
                csv_field(&l)
            } else {
                format!("-> {l}")
            });
        }
    }
    if f.xattrs {
        for (k, val) in &file.xattrs {
            v.push(binary(k, f.c.csv));
            v.push(binary(val, f.c.csv));
        }
    }
    let sep = if f.c.csv { "," } else { " " };
    writeln!(out, "{}", v.join(sep)).map_err(|e| e.to_string())
}

/// output_binary: printable bytes as they are, others as \xNN; CSV-quoted when needed.
fn binary(b: &[u8], csv: bool) -> String {
    let printable = |c: u8| (0x20..0x7f).contains(&c);
    let plain: String = b
        .iter()
        .map(|&c| {
            if printable(c) {
                (c as char).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect();
    if csv
        && b.iter()
            .any(|&c| !printable(c) || matches!(c, b' ' | b'"' | b'\n' | b','))
    {
        format!("\"{}\"", plain.replace('"', "\"\""))
    } else {
        plain
    }
}
