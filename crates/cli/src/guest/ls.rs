//! virt-ls: list files in a guest's filesystems (plain, -l, -R, -lR with its extra columns).

use super::fmt::{csv_field, find, ll, now, stat_columns, Columns};
use super::{api_err, parse, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};
use std::io::Write;
use virtkit_guest::fs::{FileType, Stat};
use virtkit_guest::mounts::{Mounts, Node};

const LONG: &[(&str, bool)] = &[
    ("checksum", true),
    ("checksums", true),
    ("csv", false),
    ("extra-stat", false),
    ("extra-stats", false),
    ("human-readable", false),
    ("long", false),
    ("recursive", false),
    ("time", false),
    ("times", false),
    ("time-days", false),
    ("time-relative", false),
    ("time-t", false),
    ("uid", false),
    ("uids", false),
];

#[derive(Default)]
struct Flags {
    long: bool,
    recursive: bool,
    c: Columns,
}

const USAGE: &str = "virt-ls: list files in a virtual machine
Copyright (C) 2010-2023 Red Hat Inc.
Usage:
  virt-ls [--options] -d domname directory [directory ...]
  virt-ls [--options] -a disk.img [-a disk.img ...] directory [directory ...]
Options:
  -a|--add image       Add image
  --checksum[=...]     Display file checksums
  --csv                Comma-Separated Values output
  --extra-stats        Display extra stats
  --format[=raw|..]    Force disk format for -a option
  --help               Display brief help
  -h|--human-readable  Human-readable sizes in output
  -l|--long            Long listing
  -m|--mount dev[:mnt[:opts[:fstype]]]
                       Mount dev on mnt (if omitted, /)
  -R|--recursive       Recursive listing
  --times              Display file times
  --time-days          Display file times as days before now
  --time-relative      Display file times as seconds before now
  --time-t             Display file times as time_t's
  --uids               Display UID, GID
  -V|--version         Display version and exit
For more information, see the manpage virt-ls(1).
";

pub fn run(prog: &str, args: &[String]) -> Result<i32, String> {
    let mut long: Vec<(&str, bool)> = COMMON_LONG.to_vec();
    long.extend_from_slice(LONG);
    let long: &'static [(&'static str, bool)] = Box::leak(long.into_boxed_slice());
    let spec = Spec {
        short: "a:c:d:hlm:RvVx",
        long,
    };
    let mut c = Common::default();
    let mut f = Flags {
        c: Columns {
            atime: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let Some(rest) = parse(prog, &spec, args, &mut c, USAGE, &mut |o| {
        match o {
            Opt::Short('l', _) | Opt::Long("long", _) => f.long = true,
            Opt::Short('R', _) | Opt::Long("recursive", _) => f.recursive = true,
            o if f.c.take(o) => {}
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(0);
    };
    let mut dirs = rest;
    // Old-style syntax: no -a, the disks come before the one directory.
    if c.drives.is_empty() && dirs.len() > 1 {
        let n = dirs.len() - 1;
        for d in dirs.drain(..n) {
            c.drives.push((d.into(), None));
        }
    }
    let lr = f.long && f.recursive;
    if !lr && (f.c.csv || f.c.human || f.c.uids || f.c.times || f.c.extra || f.c.checksum.is_some())
    {
        return Err(format!("{prog}: used a flag which can only be combined with -lR mode\nFor more information, read the virt-ls(1) man page."));
    }
    if f.c.human && f.c.csv {
        return Err(format!(
            "{prog}: you cannot use -h and --csv options together."
        ));
    }
    if dirs.is_empty() {
        return Err(format!("Try ‘{prog} --help’ for more information."));
    }
    c.need_drives(prog)?;
    if let Some(k) = &f.c.checksum {
        super::cat::checksum_kind(k).map_err(|e| format!("libguestfs: error: checksum: {e}"))?;
    }
    let g = c.launch()?;
    let m = c.mount(prog, &g, true)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut errors = 0;
    for dir in &dirs {
        let r = match (f.long, f.recursive) {
            (false, false) => m.read_dir(dir).map_err(|e| api_err("ls", &e)).map(|v| {
                for e in v {
                    let _ = out.write_all(&e.name);
                    let _ = out.write_all(b"\n");
                }
            }),
            (true, false) => ll(&m, dir).map_err(|e| api_err("ll", &e)).map(|s| {
                let _ = out.write_all(s.as_bytes());
            }),
            (false, true) => find(&m, dir).map_err(|e| api_err("find", &e)).map(|v| {
                for p in v {
                    let _ = writeln!(out, "{p}");
                }
            }),
            (true, true) => ls_lr(&m, dir, &f, &mut out),
        };
        if let Err(e) = r {
            let _ = out.flush();
            eprintln!("{e}");
            errors += 1;
        }
    }
    out.flush()
        .map_err(|e| format!("{prog}: write error: {e}"))?;
    Ok(if errors == 0 { 0 } else { 1 })
}

/// virt-ls -lR: the directory itself, then everything below it, one line each.
fn ls_lr(m: &Mounts, dir: &str, f: &Flags, out: &mut dyn Write) -> Result<(), String> {
    let now = now();
    let top = m.resolve(dir, false).map_err(|e| api_err("lstatns", &e))?;
    let st = m.stat_node(top).map_err(|e| api_err("lstatns", &e))?;
    let shown = if dir == "/" {
        "/".to_string()
    } else {
        dir.trim_end_matches('/').to_string()
    };
    line(m, &shown, &st, top, f, now, out)?;
    if st.kind != FileType::Directory {
        return Ok(());
    }
    m.walk(dir, &mut |p: &str, st: &Stat, n: Node| {
        line(m, p, st, n, f, now, out).map_err(virtkit_guest::Error::Invalid)
    })
    .map_err(|e| match e {
        virtkit_guest::Error::Invalid(s) if s.starts_with("libguestfs") => s,
        e => api_err("ls0", &e),
    })
}

fn line(
    m: &Mounts,
    path: &str,
    st: &Stat,
    n: Node,
    f: &Flags,
    now: i64,
    out: &mut dyn Write,
) -> Result<(), String> {
    let sep = if f.c.csv { "," } else { " " };
    let mut fields = stat_columns(st, &f.c, now);
    if let Some(kind) = &f.c.checksum {
        if st.kind == FileType::Regular {
            fields
                .push(super::cat::checksum_node(m, n, kind).map_err(|e| api_err("checksum", &e))?);
        } else if f.c.csv {
            fields.push(String::new());
        }
    }
    let quote = |s: &str| if f.c.csv { csv_field(s) } else { s.to_string() };
    fields.push(quote(path));
    if st.kind == FileType::Symlink {
        let l = m
            .fs(n)
            .readlink(n.ino)
            .map_err(|e| api_err("readlink", &e))?;
        let l = String::from_utf8_lossy(&l);
        fields.push(if f.c.csv {
            csv_field(&l)
        } else {
            format!("-> {l}")
        });
    }
    writeln!(out, "{}", fields.join(sep)).map_err(|e| format!("write error: {e}"))
}
