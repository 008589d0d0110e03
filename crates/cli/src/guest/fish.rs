//! guestfish, read-only: the shell's command line (-a, -i, -m, -f, commands after the
//! options separated by ':'), its script syntax (quotes, '#' comments, a leading '-' to
//! ignore a failure) and the read commands. Write commands answer that the write path does
//! not exist yet.

use super::cat::{checksum_node, download};
use super::fmt::{find, human, ll};
use super::{api_err, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};
use std::io::{BufRead, Write};
use virtkit_guest::fs::FileType;
use virtkit_guest::inspect::{self, Devices, OsInfo};
use virtkit_guest::mounts::Mounts;
use virtkit_guest::Guest;

const USAGE: &str = "guestfish: guest filesystem shell (virtkit: read-only)
Usage:
  guestfish [--options] cmd [: cmd : cmd ...]
Options:
  -a|--add image       Add image
  --format[=raw|..]    Force disk format for -a option
  -f|--file file       Read commands from file
  -i|--inspector       Automatically mount filesystems
  -m|--mount dev[:mnt] Mount dev on mnt (if omitted, /)
  --ro|-r              Mount read-only
  -V|--version         Display version and exit
Commands: run list-devices list-partitions list-filesystems lvs vgs pvs mount mount-ro
  umount-all mounts ls ll cat head tail head-n tail-n file stat lstat exists is-file
  is-dir is-symlink readlink download copy-out find checksum df-h statvfs blockdev-getsize64
  vfs-type vfs-label vfs-uuid canonical-device-name inspect-os inspect-get-roots
  inspect-get-type inspect-get-distro inspect-get-product-name inspect-get-major-version
  inspect-get-minor-version inspect-get-arch inspect-get-hostname
  inspect-get-package-format inspect-get-package-management inspect-get-osinfo
  inspect-get-mountpoints inspect-get-filesystems echo help quit
";

/// Commands that would change the guest: refused until the write path exists.
const WRITE_COMMANDS: &[&str] = &[
    "write",
    "write-append",
    "upload",
    "tar-in",
    "copy-in",
    "mkdir",
    "mkdir-p",
    "rm",
    "rm-rf",
    "rm-f",
    "rmdir",
    "touch",
    "chmod",
    "chown",
    "ln",
    "ln-s",
    "ln-sf",
    "mv",
    "cp",
    "cp-a",
    "cp-r",
    "truncate",
    "mkfs",
    "part-init",
    "part-add",
    "part-disk",
    "pvcreate",
    "vgcreate",
    "lvcreate",
    "lvresize",
    "resize2fs",
    "edit",
    "vi",
    "emacs",
    "setxattr",
    "sh",
    "command",
    "zero",
    "fill",
    "dd",
    "mknod",
    "mkfifo",
    "download-offset",
    "upload-offset",
];

struct Shell {
    prog: String,
    drives: Common,
    guest: Option<Guest>,
    mounts: Mounts,
    roots: Option<Vec<OsInfo>>,
}

pub fn run(prog: &str, args: &[String]) -> Result<i32, String> {
    let long: &'static [(&'static str, bool)] = Box::leak(
        [
            COMMON_LONG,
            &[
                ("file", true),
                ("no-sync", false),
                ("keys-from-stdin", false),
            ][..],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let spec = Spec {
        short: "a:c:d:f:im:nrvVx",
        long,
    };
    let mut c = Common::default();
    let mut script: Option<String> = None;
    let Some(rest) = super::parse(prog, &spec, args, &mut c, USAGE, &mut |o| {
        match o {
            Opt::Short('f', Some(f)) | Opt::Long("file", Some(f)) => script = Some(f.clone()),
            Opt::Short('n', _) | Opt::Long("no-sync" | "keys-from-stdin", _) => {}
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(0);
    };
    let mut sh = Shell {
        prog: prog.to_string(),
        drives: c,
        guest: None,
        mounts: Mounts::new(),
        roots: None,
    };
    // -i or -m: launch and mount before the first command, as guestfish does.
    if sh.drives.inspector || !sh.drives.mounts.is_empty() {
        sh.drives.need_drives(prog)?;
        let g = sh.drives.launch()?;
        sh.mounts = sh.drives.mount(prog, &g, false)?;
        sh.guest = Some(g);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // Commands on the command line: words, ':' between commands.
    if !rest.is_empty() {
        for cmd in rest.split(|w| w == ":") {
            if cmd.is_empty() {
                continue;
            }
            if let Err(e) = sh.exec(cmd, &mut out) {
                let _ = out.flush();
                eprintln!("{e}");
                return Ok(1);
            }
        }
        return Ok(0);
    }
    let input: Box<dyn BufRead> = match &script {
        Some(f) => Box::new(std::io::BufReader::new(
            std::fs::File::open(f).map_err(|e| format!("{prog}: {f}: {e}"))?,
        )),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    for line in input.lines() {
        let line = line.map_err(|e| format!("{prog}: {e}"))?;
        let words = split_words(&line).map_err(|e| format!("{prog}: {e}"))?;
        let Some(first) = words.first() else { continue };
        let (ignore, words) = match first.strip_prefix('-') {
            Some(c) if !c.is_empty() => {
                let mut w = words.clone();
                w[0] = c.to_string();
                (true, w)
            }
            _ => (false, words),
        };
        if words[0] == "quit" || words[0] == "exit" || words[0] == "q" {
            break;
        }
        if let Err(e) = sh.exec(&words, &mut out) {
            let _ = out.flush();
            eprintln!("{e}");
            if !ignore {
                return Ok(1);
            }
        }
    }
    out.flush().map_err(|e| format!("{prog}: {e}"))?;
    Ok(0)
}

/// guestfish's word splitting: whitespace, "double" and 'single' quotes, '#' comments.
fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut have = false;
    let mut it = line.chars().peekable();
    while let Some(ch) = it.next() {
        match ch {
            '#' if !have => break,
            ' ' | '\t' => {
                if have {
                    words.push(std::mem::take(&mut cur));
                    have = false;
                }
            }
            '"' => {
                have = true;
                loop {
                    match it.next() {
                        None => return Err("unterminated double quote".into()),
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some('n') => cur.push('\n'),
                            Some('t') => cur.push('\t'),
                            Some(c) => cur.push(c),
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                    }
                }
            }
            '\'' => {
                have = true;
                loop {
                    match it.next() {
                        None => return Err("unterminated single quote".into()),
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                    }
                }
            }
            c => {
                have = true;
                cur.push(c);
            }
        }
    }
    if have {
        words.push(cur);
    }
    Ok(words)
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl Shell {
    fn guest(&self, cmd: &str) -> Result<&Guest, String> {
        self.guest.as_ref().ok_or_else(|| {
            format!("libguestfs: error: {}: call launch before using this function\n(in guestfish, don't forget to use the 'run' command)", cmd.replace('-', "_"))
        })
    }

    fn roots(&mut self) -> Result<&[OsInfo], String> {
        if self.roots.is_none() {
            let g = self.guest("inspect-os")?;
            self.roots = Some(inspect::inspect_os(g as &dyn Devices));
        }
        Ok(self.roots.as_deref().unwrap_or(&[]))
    }

    fn root(&mut self, cmd: &str, root: &str) -> Result<OsInfo, String> {
        let api = cmd.replace('-', "_");
        self.roots()?
            .iter()
            .find(|o| o.root == root)
            .cloned()
            .ok_or_else(|| format!("libguestfs: error: {api}: {root}: no inspection data: call guestfs_inspect_os first"))
    }

    fn exec(&mut self, w: &[String], out: &mut dyn Write) -> Result<(), String> {
        let cmd = w[0].as_str();
        let args = &w[1..];
        let api = cmd.replace('-', "_");
        let need = |n: usize| -> Result<(), String> {
            if args.len() != n {
                Err(format!(
                    "error: incorrect number of arguments\nusage: {cmd} ... ({n} argument{} expected)",
                    if n == 1 { "" } else { "s" }
                ))
            } else {
                Ok(())
            }
        };
        let wr = |out: &mut dyn Write, s: &str| -> Result<(), String> {
            out.write_all(s.as_bytes()).map_err(|e| format!("{e}"))
        };
        if WRITE_COMMANDS.contains(&cmd) {
            return Err(format!(
                "{}: {cmd}: read-only for now: virtkit's guest write path is not written yet",
                self.prog
            ));
        }
        let e = |err: virtkit_guest::Error| api_err(&api, &err);
        match cmd {
            "run" | "launch" => {
                need(0)?;
                if self.guest.is_none() {
                    self.drives.need_drives(&self.prog)?;
                    self.guest = Some(self.drives.launch()?);
                }
            }
            "echo" => wr(out, &format!("{}\n", args.join(" ")))?,
            "help" => wr(out, USAGE)?,
            "list-devices" => {
                for d in self.guest(cmd)?.devices() {
                    wr(out, &format!("{d}\n"))?;
                }
            }
            "list-partitions" => {
                for p in self.guest(cmd)?.partitions() {
                    wr(out, &format!("{}\n", p.name))?;
                }
            }
            "list-filesystems" => {
                for (d, i) in self.guest(cmd)?.filesystems() {
                    wr(out, &format!("{d}: {}\n", i.kind))?;
                }
            }
            "lvs" => {
                for l in self.guest(cmd)?.lvs() {
                    wr(out, &format!("{}\n", l.path))?;
                }
            }
            "vgs" => {
                for v in self.guest(cmd)?.vgs() {
                    wr(out, &format!("{}\n", v.name))?;
                }
            }
            "pvs" => {
                for p in self.guest(cmd)?.pvs() {
                    wr(out, &format!("{}\n", p.name))?;
                }
            }
            "mount" | "mount-ro" | "mount-options" => {
                let (dev, mp) = match (cmd, args) {
                    ("mount-options", [_, d, m]) => (d, m),
                    (_, [d, m]) if cmd != "mount-options" => (d, m),
                    _ => return Err(need(if cmd == "mount-options" { 3 } else { 2 }).unwrap_err()),
                };
                let g = self.guest(cmd)?;
                let fs = g.open_fs(dev).map_err(e)?;
                let name = g.canonical_name(dev).unwrap_or_else(|_| dev.clone());
                self.mounts.mount(mp, &name, fs).map_err(e)?;
            }
            "umount-all" => self.mounts.umount_all(),
            "mounts" => {
                for m in self.mounts.list() {
                    wr(out, &format!("{}\n", m.device))?;
                }
            }
            "mountpoints" => {
                for m in self.mounts.list() {
                    wr(out, &format!("{}: {}\n", m.device, m.mountpoint))?;
                }
            }
            "ls" => {
                need(1)?;
                for d in self.mounts.read_dir(&args[0]).map_err(e)? {
                    out.write_all(&d.name).map_err(|e| e.to_string())?;
                    wr(out, "\n")?;
                }
            }
            "ll" => {
                need(1)?;
                wr(out, &ll(&self.mounts, &args[0]).map_err(e)?)?;
            }
            "find" => {
                need(1)?;
                for p in find(&self.mounts, &args[0]).map_err(e)? {
                    wr(out, &format!("{p}\n"))?;
                }
            }
            "cat" | "read-file" => {
                need(1)?;
                let b = self.mounts.read_file(&args[0], 2 << 20).map_err(e)?;
                out.write_all(&b).map_err(|e| e.to_string())?;
                if cmd == "cat" && !b.is_empty() && !b.ends_with(b"\n") {
                    wr(out, "\n")?;
                }
            }
            "head" | "tail" | "head-n" | "tail-n" => {
                let (n, path) = match (cmd, args) {
                    ("head" | "tail", [p]) => (10i64, p),
                    ("head-n" | "tail-n", [n, p]) => (
                        n.parse::<i64>()
                            .map_err(|_| format!("{cmd}: {n}: not a number"))?,
                        p,
                    ),
                    _ => return Err(need(if cmd.ends_with("-n") { 2 } else { 1 }).unwrap_err()),
                };
                let b = self.mounts.read_file(path, 64 << 20).map_err(e)?;
                let text = String::from_utf8_lossy(&b);
                let lines: Vec<&str> = text.lines().collect();
                let take: Vec<&str> = if cmd.starts_with("head") {
                    let k = if n >= 0 {
                        (n as usize).min(lines.len())
                    } else {
                        lines.len().saturating_sub(n.unsigned_abs() as usize)
                    };
                    lines[..k].to_vec()
                } else {
                    let k = if n >= 0 {
                        lines.len().saturating_sub(n as usize)
                    } else {
                        ((n.unsigned_abs() as usize).saturating_sub(1)).min(lines.len())
                    };
                    lines[k..].to_vec()
                };
                for l in take {
                    wr(out, &format!("{l}\n"))?;
                }
            }
            "file" => {
                need(1)?;
                wr(
                    out,
                    &format!("{}\n", file_type(&self.mounts, &args[0]).map_err(e)?),
                )?;
            }
            "stat" | "lstat" | "statns" | "lstatns" => {
                need(1)?;
                let follow = !cmd.starts_with('l');
                let n = self.mounts.resolve(&args[0], follow).map_err(e)?;
                let st = self.mounts.stat_node(n).map_err(e)?;
                let blk = if st.blksize == 0 { 4096 } else { st.blksize };
                let s = if cmd.ends_with("ns") {
                    format!(
                        "st_dev: 0\nst_ino: {}\nst_mode: {}\nst_nlink: {}\nst_uid: {}\nst_gid: {}\nst_rdev: {}\nst_size: {}\nst_blksize: {blk}\nst_blocks: {}\nst_atime_sec: {}\nst_atime_nsec: {}\nst_mtime_sec: {}\nst_mtime_nsec: {}\nst_ctime_sec: {}\nst_ctime_nsec: {}\nst_spare1: 0\nst_spare2: 0\nst_spare3: 0\nst_spare4: 0\nst_spare5: 0\nst_spare6: 0\n",
                        st.ino, st.mode, st.nlink, st.uid, st.gid, st.rdev, st.size, st.blocks,
                        st.atime.sec, st.atime.nsec, st.mtime.sec, st.mtime.nsec, st.ctime.sec, st.ctime.nsec
                    )
                } else {
                    format!(
                        "dev: 0\nino: {}\nmode: {}\nnlink: {}\nuid: {}\ngid: {}\nrdev: {}\nsize: {}\nblksize: {blk}\nblocks: {}\natime: {}\nmtime: {}\nctime: {}\n",
                        st.ino, st.mode, st.nlink, st.uid, st.gid, st.rdev, st.size, st.blocks,
                        st.atime.sec, st.mtime.sec, st.ctime.sec
                    )
                };
                wr(out, &s)?;
            }
            "exists" => {
                need(1)?;
                wr(
                    out,
                    &format!("{}\n", bool_str(self.mounts.exists(&args[0]).map_err(e)?)),
                )?;
            }
            "is-file" | "is-dir" | "is-symlink" | "is-chardev" | "is-blockdev" | "is-fifo"
            | "is-socket" => {
                need(1)?;
                let want = match cmd {
                    "is-file" => FileType::Regular,
                    "is-dir" => FileType::Directory,
                    "is-symlink" => FileType::Symlink,
                    "is-chardev" => FileType::CharDevice,
                    "is-blockdev" => FileType::BlockDevice,
                    "is-fifo" => FileType::Fifo,
                    _ => FileType::Socket,
                };
                let follow = cmd != "is-symlink";
                let r = match self.mounts.resolve(&args[0], follow) {
                    Ok(n) => self.mounts.stat_node(n).map_err(e)?.kind == want,
                    Err(virtkit_guest::Error::NotFound(_)) => false,
                    Err(x) => return Err(e(x)),
                };
                wr(out, &format!("{}\n", bool_str(r)))?;
            }
            "readlink" => {
                need(1)?;
                let t = self.mounts.readlink(&args[0]).map_err(e)?;
                out.write_all(&t).map_err(|e| e.to_string())?;
                wr(out, "\n")?;
            }
            "download" => {
                need(2)?;
                if args[1] == "-" {
                    download(&self.mounts, &args[0], out).map_err(e)?;
                } else {
                    let mut f = std::fs::File::create(&args[1])
                        .map_err(|x| format!("{}: {}: {x}", self.prog, args[1]))?;
                    download(&self.mounts, &args[0], &mut f).map_err(e)?;
                }
            }
            "copy-out" => {
                if args.len() < 2 {
                    return Err(need(2).unwrap_err());
                }
                let (local, remotes) = args.split_last().expect("two or more");
                for r in remotes {
                    super::copy::copy_to_host(&self.mounts, r, std::path::Path::new(local))
                        .map_err(e)?;
                }
            }
            "checksum" => {
                need(2)?;
                let n = self.mounts.resolve(&args[1], true).map_err(e)?;
                wr(
                    out,
                    &format!("{}\n", checksum_node(&self.mounts, n, &args[0]).map_err(e)?),
                )?;
            }
            "statvfs" => {
                need(1)?;
                let s = self.mounts.statfs(&args[0]).map_err(e)?;
                wr(out, &format!(
                    "bsize: {}\nfrsize: {}\nblocks: {}\nbfree: {}\nbavail: {}\nfiles: {}\nffree: {}\nfavail: {}\nfsid: 0\nflag: 1\nnamemax: {}\n",
                    s.bsize, s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.ffree, s.namemax
                ))?;
            }
            "df-h" | "df" => {
                need(0)?;
                let mut rows = vec![[
                    "Filesystem".to_string(),
                    if cmd == "df" { "1K-blocks" } else { "Size" }.to_string(),
                    "Used".to_string(),
                    if cmd == "df" { "Available" } else { "Avail" }.to_string(),
                    "Use%".to_string(),
                    "Mounted on".to_string(),
                ]];
                for m in self.mounts.list() {
                    let s = m.fs.statfs().map_err(e)?;
                    let used = s.blocks.saturating_sub(s.bfree);
                    let pct = if used + s.bavail == 0 {
                        "-".to_string()
                    } else {
                        format!("{}%", (used * 100).div_ceil(used + s.bavail))
                    };
                    let f = |n: u64| {
                        if cmd == "df" {
                            (n * s.bsize / 1024).to_string()
                        } else {
                            human(n, s.bsize)
                        }
                    };
                    rows.push([
                        m.device.clone(),
                        f(s.blocks),
                        f(used),
                        f(s.bavail),
                        pct,
                        format!(
                            "/sysroot{}",
                            if m.mountpoint == "/" {
                                ""
                            } else {
                                &m.mountpoint
                            }
                        ),
                    ]);
                }
                let w: Vec<usize> = (0..6)
                    .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
                    .collect();
                for r in &rows {
                    wr(
                        out,
                        &format!(
                            "{:<w0$} {:>w1$} {:>w2$} {:>w3$} {:>w4$} {}\n",
                            r[0],
                            r[1],
                            r[2],
                            r[3],
                            r[4],
                            r[5],
                            w0 = w[0],
                            w1 = w[1],
                            w2 = w[2],
                            w3 = w[3],
                            w4 = w[4]
                        ),
                    )?;
                }
            }
            "blockdev-getsize64" => {
                need(1)?;
                let d = self.guest(cmd)?.device(&args[0]).map_err(e)?;
                wr(out, &format!("{}\n", d.size()))?;
            }
            "vfs-type" | "vfs-label" | "vfs-uuid" => {
                need(1)?;
                let g = self.guest(cmd)?;
                let name = g.canonical_name(&args[0]).map_err(e)?;
                let info = g
                    .filesystems()
                    .into_iter()
                    .find(|(d, _)| *d == name)
                    .map(|(_, i)| i)
                    .unwrap_or_default();
                let v = match cmd {
                    "vfs-type" => info.kind,
                    "vfs-label" => info.label.unwrap_or_default(),
                    _ => info.uuid.unwrap_or_default(),
                };
                wr(out, &format!("{v}\n"))?;
            }
            "canonical-device-name" => {
                need(1)?;
                let n = self.guest(cmd)?.canonical_name(&args[0]).map_err(e)?;
                wr(out, &format!("{n}\n"))?;
            }
            "inspect-os" | "inspect-get-roots" => {
                need(0)?;
                let roots: Vec<String> = self.roots()?.iter().map(|o| o.root.clone()).collect();
                for r in roots {
                    wr(out, &format!("{r}\n"))?;
                }
            }
            c if c.starts_with("inspect-get-") => {
                need(1)?;
                let o = self.root(cmd, &args[0])?;
                let v = match &c["inspect-get-".len()..] {
                    "type" => o.os_type,
                    "distro" => o.distro,
                    "product-name" => o.product_name,
                    "major-version" => o.major_version.to_string(),
                    "minor-version" => o.minor_version.to_string(),
                    "arch" => o.arch,
                    "hostname" => o.hostname,
                    "package-format" => o.package_format,
                    "package-management" => o.package_management,
                    "osinfo" => o.osinfo,
                    "format" => "installed".into(),
                    "mountpoints" => o
                        .mountpoints
                        .iter()
                        .map(|(d, m)| format!("{m}: {d}"))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    "filesystems" => o.filesystems.join("\n"),
                    other => {
                        return Err(format!(
                            "{}: inspect-get-{other}: not supported by virtkit yet",
                            self.prog
                        ))
                    }
                };
                wr(out, &format!("{v}\n"))?;
            }
            other => {
                return Err(format!("{}: {other}: unknown command", self.prog));
            }
        }
        Ok(())
    }
}

/// What libguestfs' `file` says: the type for non-regular files, else what file(1) makes of
/// the first bytes (run on the host over a pipe: the guest's bytes never reach a path).
fn file_type(m: &Mounts, path: &str) -> virtkit_guest::Result<String> {
    let n = m.resolve(path, false)?;
    let st = m.stat_node(n)?;
    Ok(match st.kind {
        FileType::Directory => "directory".into(),
        FileType::Symlink => "symbolic link".into(),
        FileType::CharDevice => "character device".into(),
        FileType::BlockDevice => "block device".into(),
        FileType::Fifo => "FIFO".into(),
        FileType::Socket => "socket".into(),
        FileType::Unknown => "unknown".into(),
        FileType::Regular if st.size == 0 => "empty".into(),
        FileType::Regular => {
            let mut head = vec![0u8; (st.size.min(1 << 20)) as usize];
            let got = m.read_node(n, 0, &mut head)?;
            head.truncate(got);
            describe(&head)
        }
    })
}

fn describe(bytes: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let child = Command::new("file")
        .args(["-b", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return "data".into();
    };
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(bytes);
    }
    match child.wait_with_output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        _ => "data".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(split_words("ls /").unwrap(), ["ls", "/"]);
        assert_eq!(
            split_words("cat \"/a b\" 'c d' # x").unwrap(),
            ["cat", "/a b", "c d"]
        );
        assert!(split_words("cat \"/x").is_err());
        assert!(split_words("   # only").unwrap().is_empty());
    }
}
