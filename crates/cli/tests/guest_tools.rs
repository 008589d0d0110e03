//! The libguestfs read tools (virt-ls, virt-cat, virt-copy-out, virt-tar-out,
//! virt-filesystems, virt-df, virt-inspector, guestfish) on real disks: an ext4 filesystem
//! made by mkfs.ext4 -d from a source tree, in an MBR partition made by sfdisk, next to a
//! swap partition; the results are compared with the source tree and with what e2fsprogs,
//! sfdisk, blkid and tar say. Inspection runs on a debootstrapped Debian root
//! (scripts/debroot.sh, cached under .build/debroot).

mod common;
use common::*;
use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const MIB: u64 = 1 << 20;
const FS_UUID: &str = "6f1c6d2e-8c1a-4c55-9a3b-1d2e3f405162";

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the binary under the name of a libguestfs tool; raw stdout bytes.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "failed: {}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

fn tool_with_stdin(name: &str, args: &[&str], stdin: Option<&str>) -> Run {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let d = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        for t in [
            "virt-ls",
            "virt-cat",
            "virt-copy-out",
            "virt-tar-out",
            "virt-filesystems",
            "virt-df",
            "virt-inspector",
            "virt-diff",
            "guestfish",
        ] {
            std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_virtkit"), d.path().join(t)).unwrap();
        }
        d
    });
    let mut c = Command::new(d.path().join(name));
    c.args(args)
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{name} panicked: {stderr}");
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: o.stdout,
        stderr,
    }
}

fn tool(name: &str, args: &[&str]) -> Run {
    tool_with_stdin(name, args, None)
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    disk: PathBuf,
    qcow2: PathBuf,
    fs_img: PathBuf,
}

/// The source tree: nested directories, random and empty files, names with spaces, a
/// symlink (relative and absolute), a hard link, a fifo and a large directory.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let p = |s: &str| src.join(s);
        std::fs::create_dir_all(p("etc/conf.d")).unwrap();
        std::fs::create_dir_all(p("data/deep/er/still")).unwrap();
        std::fs::create_dir_all(p("many")).unwrap();
        std::fs::write(p("etc/hostname"), "guest-one\n").unwrap();
        std::fs::write(p("etc/conf.d/a b.conf"), "key = \"value, with comma\"\n").unwrap();
        std::fs::write(p("data/big.bin"), random_bytes(3 * MIB as usize + 4097, 42)).unwrap();
        std::fs::write(p("data/empty"), b"").unwrap();
        std::fs::write(p("data/deep/er/still/leaf.txt"), b"leaf\n").unwrap();
        std::fs::hard_link(p("etc/hostname"), p("data/hostname.hard")).unwrap();
        std::fs::hard_link(p("data/deep/er/still/leaf.txt"), p("data/leaf.twin")).unwrap();
        std::os::unix::fs::symlink("../etc/hostname", p("data/rel-link")).unwrap();
        std::os::unix::fs::symlink("/etc/conf.d", p("data/abs-link")).unwrap();
        sh(&format!("mkfifo '{}'", p("data/fifo").display()));
        for i in 0..400 {
            std::fs::write(p(&format!("many/file-{i:04}")), format!("{i}\n")).unwrap();
        }
        std::fs::set_permissions(p("data/deep"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::set_permissions(p("etc/hostname"), std::fs::Permissions::from_mode(0o644)).unwrap();
        sh(&format!(
            "touch -h -d '2021-02-03 04:05:06 UTC' '{}' '{}'",
            p("data/big.bin").display(),
            p("data/rel-link").display()
        ));
        let fs_img = dir.path().join("root.ext4");
        sh(&format!(
            "mkfs.ext4 -q -F -b 4096 -L vkroot -U {FS_UUID} -d '{}' '{}' 40M",
            src.display(),
            fs_img.display()
        ));
        // MBR: p1 Linux (1 MiB .. 41 MiB) holding the filesystem, p2 swap.
        let disk = dir.path().join("disk.raw");
        sh(&format!("truncate -s 64M '{}'", disk.display()));
        sh(&format!(
            "printf 'label: dos\\nstart=2048, size=81920, type=83\\nstart=83968, type=82\\n' | sfdisk -q '{}'",
            disk.display()
        ));
        sh(&format!(
            "dd if='{}' of='{}' bs=1M seek=1 conv=notrunc status=none",
            fs_img.display(),
            disk.display()
        ));
        let swap = dir.path().join("swap");
        sh(&format!("truncate -s {} '{}' && mkswap -q -L vkswap '{}'", 64 * MIB - 83968 * 512, swap.display(), swap.display()));
        sh(&format!(
            "dd if='{}' of='{}' bs=512 seek=83968 conv=notrunc status=none",
            swap.display(),
            disk.display()
        ));
        let qcow2 = dir.path().join("disk.qcow2");
        qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&disk), s(&qcow2)]).assert_ok();
        Fixture {
            _dir: dir,
            src,
            disk,
            qcow2,
            fs_img,
        }
    })
}

fn a(f: &Fixture) -> Vec<String> {
    vec![
        "-a".into(),
        f.disk.display().to_string(),
        "-m".into(),
        "/dev/sda1".into(),
    ]
}

fn args<'a>(pre: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
    pre.iter()
        .map(String::as_str)
        .chain(rest.iter().copied())
        .collect()
}

/// Sorted names in a host directory (what `ls` in the guest must show).
fn host_names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn virt_ls_plain_and_recursive_match_the_source() {
    let f = fixture();
    let pre = a(f);
    for d in ["/etc", "/data", "/many", "/data/deep/er"] {
        let r = tool("virt-ls", &args(&pre, &[d])).ok();
        let got: Vec<String> = r.text().lines().map(String::from).collect();
        assert_eq!(got, host_names(&f.src.join(&d[1..])), "virt-ls {d}");
    }
    // -R /: every path below, as find prints it; lost+found is mkfs' own.
    let r = tool("virt-ls", &args(&pre, &["-R", "/"])).ok();
    let mut want: Vec<String> = sh(&format!("cd '{}' && find . -mindepth 1", f.src.display()))
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .chain(["lost+found".to_string()])
        .collect();
    want.sort();
    let got: Vec<String> = r.text().lines().map(String::from).collect();
    assert_eq!(got, want);
    // The same through a qcow2 image and the native subcommand.
    let q = Command::new(env!("CARGO_BIN_EXE_virtkit"))
        .args(["guest", "ls", "-a", s(&f.qcow2), "-m", "/dev/sda1", "/etc"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert_eq!(String::from_utf8_lossy(&q.stdout), "conf.d\nhostname\n");
    // And through the VMware formats qemu-img writes (sparse and streamOptimized), with
    // --format given and probed: every path, and a large file byte for byte.
    let d = tmp();
    for (sub, fmt) in [
        ("monolithicSparse", "--format=vmdk"),
        ("streamOptimized", "--format"),
    ] {
        let v = d.path().join(format!("{sub}.vmdk"));
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&f.disk),
            s(&v),
        ])
        .assert_ok();
        let r = tool("virt-ls", &[fmt, "-a", s(&v), "-m", "/dev/sda1", "-R", "/"]).ok();
        let got: Vec<String> = r.text().lines().map(String::from).collect();
        assert_eq!(got, want, "{sub}");
        let r = tool(
            "virt-cat",
            &["-a", s(&v), "-m", "/dev/sda1", "/data/big.bin"],
        )
        .ok();
        assert!(
            r.stdout == std::fs::read(f.src.join("data/big.bin")).unwrap(),
            "{sub}"
        );
    }
}

#[test]
fn virt_ls_long_recursive_csv_matches_lstat() {
    let f = fixture();
    let pre = a(f);
    let r = tool(
        "virt-ls",
        &args(
            &pre,
            &[
                "-lR",
                "--csv",
                "--uids",
                "--time-t",
                "--extra-stats",
                "--checksum=sha256",
                "/data",
            ],
        ),
    )
    .ok();
    let mut seen = 0;
    for line in r.text().lines() {
        // type,perms,size,uid,gid,atime,mtime,ctime,dev,ino,nlink,rdev,blocks,[csum],path[,link]
        let cols = parse_csv(line);
        let path = if cols[0] == "l" {
            &cols[cols.len() - 2]
        } else {
            &cols[cols.len() - 1]
        };
        let host = if path == "/data" {
            f.src.join("data")
        } else {
            f.src.join(&path[1..])
        };
        let md = std::fs::symlink_metadata(&host).unwrap();
        assert_eq!(cols[1], format!("{:04o}", md.mode() & 0o7777), "{line}");
        if md.is_file() {
            assert_eq!(cols[2], md.len().to_string(), "{line}");
            let want = sh(&format!("sha256sum '{}'", host.display()));
            assert_eq!(cols[13], want.split_whitespace().next().unwrap(), "{line}");
        }
        // uids and times are right-aligned even in CSV, as virt-ls prints them.
        assert_eq!(cols[3].trim(), md.uid().to_string());
        assert_eq!(cols[6].trim(), md.mtime().to_string(), "mtime {line}");
        assert_eq!(cols[10], md.nlink().to_string(), "nlink {line}");
        if md.file_type().is_symlink() {
            let t = std::fs::read_link(&host).unwrap();
            assert_eq!(cols[cols.len() - 1], t.display().to_string());
        }
        seen += 1;
    }
    let want = sh(&format!("cd '{}' && find data | wc -l", f.src.display()));
    assert_eq!(seen.to_string(), want.trim());
    // -lR flags without -lR are refused as virt-ls does.
    let r = tool("virt-ls", &args(&pre, &["--csv", "/"]));
    assert_eq!(r.code, 1);
}

fn parse_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut q = false;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match (c, q) {
            ('"', false) => q = true,
            ('"', true) if it.peek() == Some(&'"') => {
                it.next();
                cur.push('"');
            }
            ('"', true) => q = false,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    out.push(cur);
    out
}

#[test]
fn virt_ls_long_is_ls_la() {
    let f = fixture();
    let r = tool("virt-ls", &args(&a(f), &["-l", "/etc"])).ok();
    let want = sh(&format!(
        "cd '{}' && LC_ALL=C TZ=UTC ls -la etc",
        f.src.display()
    ));
    let strip = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("total") && !l.ends_with(" ..") && !l.ends_with(" ."))
            .map(String::from)
            .collect()
    };
    assert_eq!(strip(&r.text()), strip(&want));
    assert!(r.text().starts_with("total "));
}

#[test]
fn virt_cat_is_byte_identical() {
    let f = fixture();
    let r = tool(
        "virt-cat",
        &args(&a(f), &["/data/big.bin", "/etc/hostname"]),
    )
    .ok();
    let mut want = std::fs::read(f.src.join("data/big.bin")).unwrap();
    want.extend_from_slice(b"guest-one\n");
    assert!(r.stdout == want, "virt-cat output differs");
    // Through a symlink (resolved inside the guest), and errors.
    let r = tool("virt-cat", &args(&a(f), &["/data/rel-link"])).ok();
    assert_eq!(r.text(), "guest-one\n");
    let r = tool("virt-cat", &args(&a(f), &["/nope"]));
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("/nope") && r.stderr.contains("No such file"),
        "{}",
        r.stderr
    );
    let r = tool("virt-cat", &args(&a(f), &["/etc"]));
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("Is a directory"), "{}", r.stderr);
}

#[test]
fn virt_copy_out_and_tar_out_reproduce_the_tree() {
    let f = fixture();
    let out = tmp();
    tool(
        "virt-copy-out",
        &args(&a(f), &["/data", "/etc/hostname", s(out.path())]),
    )
    .ok();
    compare_trees(&f.src.join("data"), &out.path().join("data"));
    assert_eq!(
        std::fs::read(out.path().join("hostname")).unwrap(),
        b"guest-one\n"
    );
    // Hard links inside the copied tree stay hard links.
    let md = std::fs::metadata(out.path().join("data/leaf.twin")).unwrap();
    assert_eq!(md.nlink(), 2);
    let md2 = std::fs::metadata(out.path().join("data/deep/er/still/leaf.txt")).unwrap();
    assert_eq!(md.ino(), md2.ino());
    // tar-out: what GNU tar lists and extracts.
    let tarf = out.path().join("d.tar.gz");
    tool("virt-tar-out", &args(&a(f), &["-z", "/data", s(&tarf)])).ok();
    let x = out.path().join("x");
    std::fs::create_dir(&x).unwrap();
    sh(&format!(
        "tar -xzf '{}' -C '{}'",
        tarf.display(),
        x.display()
    ));
    compare_trees(&f.src.join("data"), &x);
    let list = sh(&format!("tar -tzf '{}'", tarf.display()));
    assert!(list.starts_with("./\n"), "{list}");
    assert!(list.contains("./deep/er/still/leaf.txt\n"));
}

/// Same names, types, modes, contents, link targets and mtimes.
fn compare_trees(want: &Path, got: &Path) {
    let walk = |root: &Path| -> BTreeMap<String, std::fs::Metadata> {
        let out = sh(&format!("cd '{}' && find . -mindepth 1", root.display()));
        out.lines()
            .map(|l| {
                (
                    l.to_string(),
                    std::fs::symlink_metadata(root.join(l)).unwrap(),
                )
            })
            .collect()
    };
    let (w, g) = (walk(want), walk(got));
    assert_eq!(w.keys().collect::<Vec<_>>(), g.keys().collect::<Vec<_>>());
    for (p, wm) in &w {
        let gm = &g[p];
        assert_eq!(wm.mode(), gm.mode(), "mode of {p}");
        if wm.is_file() {
            assert_eq!(
                std::fs::read(want.join(p)).unwrap(),
                std::fs::read(got.join(p)).unwrap(),
                "content of {p}"
            );
        }
        if wm.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(want.join(p)).unwrap(),
                std::fs::read_link(got.join(p)).unwrap()
            );
        } else {
            assert_eq!(wm.mtime(), gm.mtime(), "mtime of {p}");
        }
    }
}

#[test]
fn virt_filesystems_and_df_agree_with_the_tools() {
    let f = fixture();
    let d = ["-a", s(&f.disk)];
    let r = tool("virt-filesystems", &d).ok();
    assert_eq!(r.text(), "/dev/sda1\n");
    let r = tool(
        "virt-filesystems",
        &[&d[..], &["--all", "--long", "--csv", "--uuid"]].concat(),
    )
    .ok();
    let t = r.text();
    let rows: Vec<Vec<String>> = t.lines().map(parse_csv).collect();
    assert_eq!(
        rows[0],
        ["Name", "Type", "VFS", "Label", "MBR", "Size", "Parent", "UUID"]
    );
    let find = |name: &str, kind: &str| {
        rows.iter()
            .find(|r| r[0] == name && r[1] == kind)
            .unwrap_or_else(|| panic!("no {kind} {name} in\n{t}"))
            .clone()
    };
    let fs = find("/dev/sda1", "filesystem");
    assert_eq!(
        (fs[2].as_str(), fs[3].as_str(), fs[7].as_str()),
        ("ext4", "vkroot", FS_UUID)
    );
    let swap = find("/dev/sda2", "filesystem");
    assert_eq!((swap[2].as_str(), swap[3].as_str()), ("swap", "vkswap"));
    let p1 = find("/dev/sda1", "partition");
    assert_eq!(
        (p1[4].as_str(), p1[5].as_str(), p1[6].as_str()),
        ("83", "41943040", "/dev/sda")
    );
    let p2 = find("/dev/sda2", "partition");
    assert_eq!(p2[4], "82");
    let dev = find("/dev/sda", "device");
    assert_eq!(dev[5], (64 * MIB).to_string());
    // virt-df vs dumpe2fs.
    let r = tool("virt-df", &["-a", s(&f.disk), "--csv"]).ok();
    let t = r.text();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "VirtualMachine,Filesystem,1K-blocks,Used,Available,Use%"
    );
    let row = parse_csv(lines[1]);
    assert_eq!(row[0], "disk.raw");
    assert_eq!(row[1], "/dev/sda1");
    // The oracle is the kernel's statvfs, which virt-df runs in its appliance: df -k of a
    // read-only loop mount of the same filesystem.
    let mnt = tmp();
    sh(&format!(
        "mount -o ro,loop,noload '{}' '{}'",
        f.fs_img.display(),
        mnt.path().display()
    ));
    let df = sh(&format!(
        "df -k --output=size,used,avail '{}'; umount '{}'",
        mnt.path().display(),
        mnt.path().display()
    ));
    let k: Vec<&str> = df.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[2..5], &k[..], "virt-df vs df -k of a loop mount");
    let r = tool("virt-df", &["-a", s(&f.disk), "-h"]).ok();
    let title = format!(
        "{:<36}{:>10} {:>10} {:>10} {:>5}\n",
        "Filesystem", "Size", "Used", "Available", "Use%"
    );
    assert!(r.text().starts_with(&title), "{}", r.text());
    assert!(r.text().contains("disk.raw:/dev/sda1"));
}

#[test]
fn guestfish_script() {
    let f = fixture();
    let script = "run\nlist-filesystems\nmount-ro /dev/sda1 /\nls /etc\nis-dir /data\nis-file /data\nexists /nope\ncat /etc/hostname\nreadlink /data/rel-link\n-write /x hello\nchecksum md5 /data/empty\n";
    let r = tool_with_stdin("guestfish", &["--ro", "-a", s(&f.disk)], Some(script)).ok();
    assert_eq!(
        r.text(),
        "/dev/sda1: ext4\n/dev/sda2: swap\nconf.d\nhostname\ntrue\nfalse\nfalse\nguest-one\n../etc/hostname\nd41d8cd98f00b204e9800998ecf8427e\n"
    );
    assert!(r.stderr.contains("read-only"), "{}", r.stderr);
    // Without '-', an error ends the script with status 1.
    let r = tool_with_stdin(
        "guestfish",
        &["--ro", "-a", s(&f.disk), "-m", "/dev/sda1"],
        Some("cat /nope\nls /\n"),
    );
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    // Commands on the command line.
    let r = tool(
        "guestfish",
        &[
            "--ro",
            "-a",
            s(&f.disk),
            "-m",
            "/dev/sda1",
            "cat",
            "/etc/hostname",
            ":",
            "is-dir",
            "/etc",
        ],
    )
    .ok();
    assert_eq!(r.text(), "guest-one\ntrue\n");
}

#[test]
fn no_operating_system_is_an_error() {
    let f = fixture();
    let r = tool("virt-ls", &["-a", s(&f.disk), "/"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no operating system was found"),
        "{}",
        r.stderr
    );
    let r = tool("virt-inspector", &["-a", s(&f.disk)]).ok();
    assert_eq!(r.text(), "<?xml version=\"1.0\"?>\n<operatingsystems/>\n");
}

/// The cached Debian root (scripts/debroot.sh; `make test` builds it through deps).
fn debroot() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.build/debroot");
    if !p.join("etc/os-release").exists() {
        sh(&format!(
            "'{}/../../scripts/debroot.sh'",
            env!("CARGO_MANIFEST_DIR")
        ));
    }
    p
}

/// LVM on a region of `img` (a partition): a PV, a VG `vg` with the given LVs (MiB), made by
/// the real tools on a loop device without device-mapper (activation off, our loop only, no
/// backups, no udev), so nothing of the host's LVM state changes. Returns each LV's byte
/// offset in `img`.
fn make_lvm(img: &Path, off: u64, len: u64, vg: &str, lvs: &[(&str, u64)]) -> Vec<u64> {
    let l = sh(&format!(
        "losetup -f --show -o {off} --sizelimit {len} '{}'",
        img.display()
    ))
    .trim()
    .to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _guard = Detach(l.clone());
    let conf = format!(
        "devices {{ filter=[\\\"a|^{l}$|\\\",\\\"r|.*|\\\"] use_devicesfile=0 hints=\\\"none\\\" }} activation {{ udev_sync=0 udev_rules=0 }} backup {{ backup=0 archive=0 }} global {{ activation=0 use_lvmpolld=0 }}"
    );
    let lvm = |args: &str| sh(&format!("timeout 60 lvm {args} --config \"{conf}\""));
    lvm(&format!("pvcreate -q {l}"));
    lvm(&format!("vgcreate -q -s 1M {vg} {l}"));
    for (name, mib) in lvs {
        lvm(&format!("lvcreate -q -an -Zn -Wn -L {mib}M -n {name} {vg}"));
    }
    let pe_start: u64 = lvm("pvs --noheadings --units b --nosuffix -o pe_start")
        .trim()
        .parse()
        .unwrap();
    lvs.iter()
        .map(|(name, _)| {
            let r = lvm(&format!("lvs --noheadings -o seg_pe_ranges {vg}/{name}"));
            let pe: u64 = r
                .trim()
                .rsplit_once(':')
                .unwrap()
                .1
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            off + pe_start + pe * MIB
        })
        .collect()
}

fn put_at(img: &Path, file: &Path, off: u64) {
    sh(&format!(
        "dd if='{}' of='{}' bs=1M oflag=seek_bytes seek={off} conv=notrunc status=none",
        file.display(),
        img.display()
    ));
}

/// The inspection disk: GPT with an EFI system partition (vfat), /boot (ext4) and
/// an LVM PV whose VG holds the debootstrapped root (ext4) and swap; fstab names them by
/// /dev/mapper name, LABEL= and UUID=.
#[test]
fn inspection_of_a_debian_root_on_lvm_in_gpt() {
    let root = debroot();
    let d = tmp();
    let vg = format!("vkt{}", std::process::id());
    let disk = d.path().join("deb.raw");
    sh(&format!("truncate -s 420M '{}'", disk.display()));
    sh(&format!(
        "sgdisk -n 1:2048:+32M -t 1:ef00 -n 2:0:+48M -t 2:8300 -n 3:0:0 -t 3:8e00 '{}' >/dev/null",
        disk.display()
    ));
    let parts = sh(&format!(
        "sfdisk -q -l -o Start,Sectors '{}' | tail -n 3",
        disk.display()
    ));
    let p: Vec<(u64, u64)> = parts
        .lines()
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0] * 512, v[1] * 512)
        })
        .collect();
    let offs = make_lvm(&disk, p[2].0, p[2].1, &vg, &[("root", 320), ("swap", 8)]);

    let esp_src = d.path().join("esp");
    std::fs::create_dir_all(esp_src.join("EFI/debian")).unwrap();
    std::fs::write(esp_src.join("EFI/debian/grubx64.efi"), b"MZ not really").unwrap();
    let esp = d.path().join("esp.vfat");
    sh(&format!(
        "mkfs.vfat -C -n ESP -i 1234ABCD '{}' 32768 >/dev/null",
        esp.display()
    ));
    sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mcopy -s -i '{}' '{}/EFI' ::/",
        esp.display(),
        esp_src.display()
    ));
    let boot_src = d.path().join("boot");
    std::fs::create_dir_all(boot_src.join("efi")).unwrap();
    std::fs::write(boot_src.join("vmlinuz-test"), b"kernel").unwrap();
    let boot = d.path().join("boot.ext4");
    sh(&format!(
        "mkfs.ext4 -q -F -L BOOT -d '{}' '{}' 48M",
        boot_src.display(),
        boot.display()
    ));
    let rootfs = d.path().join("root.ext4");
    sh(&format!(
        "mkfs.ext4 -q -F -U {FS_UUID} -d '{}' '{}' 320M",
        root.display(),
        rootfs.display()
    ));
    let fstab = d.path().join("fstab");
    std::fs::write(
        &fstab,
        format!("# test\n/dev/mapper/{vg}-root / ext4 errors=remount-ro 0 1\nLABEL=BOOT /boot ext4 defaults 0 2\nUUID=1234-ABCD /boot/efi vfat umask=0077 0 1\n/dev/{vg}/swap none swap sw 0 0\nproc /proc proc defaults 0 0\n"),
    )
    .unwrap();
    sh(&format!(
        "debugfs -w -R 'rm /etc/fstab' '{r}' >/dev/null 2>&1; printf 'cd /etc\\nwrite {f} fstab\\n' | debugfs -w -f - '{r}' >/dev/null 2>&1",
        r = rootfs.display(),
        f = fstab.display()
    ));
    let swap = d.path().join("swap");
    sh(&format!(
        "truncate -s 8M '{}' && mkswap -q '{}'",
        swap.display(),
        swap.display()
    ));
    put_at(&disk, &esp, p[0].0);
    put_at(&disk, &boot, p[1].0);
    put_at(&disk, &rootfs, offs[0]);
    put_at(&disk, &swap, offs[1]);
    let qcow2 = d.path().join("deb.qcow2");
    qemu_img(&["convert", "-O", "qcow2", s(&disk), s(&qcow2)]).assert_ok();

    let r = tool("virt-inspector", &["-a", s(&qcow2)]).ok();
    let x = r.text();
    let ver = std::fs::read_to_string(root.join("etc/debian_version")).unwrap();
    let (ma, mi) = ver.trim().split_once('.').unwrap();
    let lv = format!("/dev/{vg}/root");
    for want in [
        format!("<root>{lv}</root>"),
        "<name>linux</name>".into(),
        "<arch>x86_64</arch>".into(),
        "<distro>debian</distro>".into(),
        "<product_name>Debian GNU/Linux 12 (bookworm)</product_name>".into(),
        format!("<major_version>{ma}</major_version>"),
        format!("<minor_version>{mi}</minor_version>"),
        "<package_format>deb</package_format>".into(),
        "<package_management>apt</package_management>".into(),
        "<hostname>virtkit-test</hostname>".into(),
        "<osinfo>debian12</osinfo>".into(),
        format!("    <mountpoints>\n      <mountpoint dev=\"{lv}\">/</mountpoint>\n      <mountpoint dev=\"/dev/sda2\">/boot</mountpoint>\n      <mountpoint dev=\"/dev/sda1\">/boot/efi</mountpoint>\n    </mountpoints>"),
        format!("<filesystem dev=\"/dev/{vg}/swap\">\n        <type>swap</type>"),
        format!("<uuid>{FS_UUID}</uuid>"),
        "<label>BOOT</label>".into(),
        "<uuid>1234-ABCD</uuid>".into(),
    ] {
        assert!(x.contains(&want), "missing {want} in\n{x}");
    }
    // Every installed package, with dpkg-query's versions.
    let q = sh(&format!(
        "dpkg-query --admindir='{}/var/lib/dpkg' -W -f '${{Package}} ${{Version}}\\n'",
        root.display()
    ));
    assert_eq!(x.matches("<application>").count(), q.lines().count());
    assert!(x.contains("<name>dpkg</name>"));
    // Without -m the tools mount as fstab says: /boot and /boot/efi are the other filesystems.
    let r = tool("virt-ls", &["-a", s(&qcow2), "/boot"]).ok();
    assert_eq!(r.text(), "efi\nlost+found\nvmlinuz-test\n");
    let r = tool(
        "virt-cat",
        &["-a", s(&qcow2), "/boot/efi/EFI/debian/grubx64.efi"],
    )
    .ok();
    assert_eq!(r.text(), "MZ not really");
    let r = tool("virt-cat", &["-a", s(&disk), "/etc/hostname"]).ok();
    assert_eq!(r.text(), "virtkit-test\n");
    let script = format!("inspect-os\ninspect-get-distro {lv}\ninspect-get-mountpoints {lv}\nlvs\nvgs\npvs\nmount-ro /dev/mapper/{vg}-root /\nis-dir /usr/bin\n");
    let r = tool_with_stdin("guestfish", &["--ro", "-a", s(&disk), "-i"], Some(&script)).ok();
    assert_eq!(
        r.text(),
        format!("{lv}\ndebian\n/: {lv}\n/boot: /dev/sda2\n/boot/efi: /dev/sda1\n/dev/{vg}/root\n/dev/{vg}/swap\n{vg}\n/dev/sda3\ntrue\n")
    );
    // virt-filesystems --all --long: LVM objects and partitions as libguestfs lists them.
    let r = tool(
        "virt-filesystems",
        &["-a", s(&disk), "--all", "--long", "--csv", "--no-title"],
    )
    .ok();
    let t = r.text();
    for want in [
        format!("{lv},filesystem,ext4,,"),
        "/dev/sda1,filesystem,vfat,ESP,".to_string(),
        format!("{lv},lv,,,,{},/dev/{vg}", 320 * MIB),
        format!("/dev/{vg},vg,,,,"),
        "/dev/sda3,pv,,,,".to_string(),
        "/dev/sda1,partition,,,,".to_string(),
        format!("/dev/sda,device,,,,{},", 420 * MIB),
    ] {
        assert!(t.contains(&want), "missing {want} in\n{t}");
    }
    // virt-df lists the filesystems it can read, partitions before LVs as libguestfs'
    // list-filesystems orders them (swap left out).
    let r = tool("virt-df", &["-a", s(&disk), "--csv"]).ok();
    let devs: Vec<String> = r
        .text()
        .lines()
        .skip(1)
        .map(|l| parse_csv(l)[1].clone())
        .collect();
    assert_eq!(
        devs,
        ["/dev/sda1".to_string(), "/dev/sda2".into(), lv.clone()]
    );
}

/// virt-diff between a small Linux root and a copy changed with debugfs: a file removed, one
/// added, one rewritten (shown with diff -u) and one chmod'ed ("# changed: st_mode").
#[test]
fn virt_diff_lists_changes() {
    let d = tmp();
    let src = d.path().join("root");
    for dir in ["etc", "bin", "data"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
    }
    std::fs::write(src.join("etc/fstab"), "/dev/sda / ext4 defaults 0 1\n").unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n10.0.0.1 old\n").unwrap();
    std::fs::write(src.join("data/gone"), "bye\n").unwrap();
    std::fs::write(src.join("data/perm"), "p\n").unwrap();
    for f in ["etc/fstab", "etc/hosts", "data/gone", "data/perm"] {
        std::fs::set_permissions(src.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let a = d.path().join("a.img");
    sh(&format!(
        "mkfs.ext4 -q -F -b 4096 -d '{}' '{}' 8M",
        src.display(),
        a.display()
    ));
    let b = d.path().join("b.img");
    std::fs::copy(&a, &b).unwrap();
    let hosts = d.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n10.0.0.2 new\n").unwrap();
    let newf = d.path().join("new");
    std::fs::write(&newf, "hello\n").unwrap();
    sh(&format!(
        "printf 'rm /data/gone\\ncd /data\\nwrite {n} new\\nsif /data/perm mode 0100600\\nrm /etc/hosts\\ncd /etc\\nwrite {h} hosts\\nsif /etc/hosts mtime 20300101000000\\n' | debugfs -w -f - '{b}' >/dev/null 2>&1",
        n = newf.display(),
        h = hosts.display(),
        b = b.display()
    ));
    let r = tool("virt-diff", &["-a", s(&a), "-A", s(&b)]).ok();
    let t = r.text();
    for want in [
        "- - 0644          4 /data/gone\n",
        "+ - 0644          6 /data/new\n",
        "- - 0644          2 /data/perm\n+ - 0600          2 /data/perm\n# changed: st_mode\n",
        "= - 0644         33 /etc/hosts\n@@ -1,2 +1,2 @@\n 127.0.0.1 localhost\n-10.0.0.1 old\n+10.0.0.2 new\n@@ End of diff @@\n",
    ] {
        assert!(t.contains(want), "missing {want:?} in\n{t}");
    }
    assert_eq!(
        t.lines()
            .filter(|l| l.starts_with(['+', '-', '=', '#']))
            .count(),
        8,
        "{t}"
    );
    // Identical guests: no output.
    let r = tool("virt-diff", &["-a", s(&a), "-A", s(&a)]).ok();
    assert_eq!(r.text(), "");
}
