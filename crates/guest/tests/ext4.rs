//! The ext2/3/4 reader against filesystems built by the real tools (mke2fs -d, debugfs,
//! a loop mount for a dirty journal), compared with the source tree and with debugfs' view.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use virtkit_guest::dev::{BlockDev, ImageDev, MemDev};
use virtkit_guest::fs::{open, DirEntry, FileType, Filesystem, Ino, Stat};
use virtkit_guest::Error;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift).
fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The source tree every test copies with mke2fs -d. `big` adds the large (htree)
/// directory and the several-MiB file.
fn make_tree(root: &Path, big: bool) {
    let p = |s: &str| root.join(s);
    fs::create_dir_all(p("a/b/c")).unwrap();
    fs::write(p("a/b/c/deep.txt"), b"deep file\n").unwrap();
    fs::write(p("empty"), b"").unwrap();
    fs::write(p("small.txt"), b"hello ext4\n").unwrap();
    fs::write(p("a/odd-size"), random_bytes(1, 5000)).unwrap();
    // Sparse: data at 0, a hole, data at 3 MiB + 100, a hole at the end.
    let f = fs::File::create(p("sparse")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(&random_bytes(2, 10000), (3 << 20) + 100)
        .unwrap();
    f.write_all_at(b"end", (5 << 20) + 3).unwrap();
    drop(f);
    if big {
        // A hole at the end too (mke2fs -d with inline_data loses such a size: only here).
        let f = fs::File::create(p("tailhole")).unwrap();
        f.write_all_at(b"x", 70000).unwrap();
        f.set_len(6 << 20).unwrap();
        fs::write(p("big.bin"), random_bytes(3, (3 << 20) + 1234)).unwrap();
        fs::create_dir(p("many")).unwrap();
        for i in 0..3200 {
            fs::write(p(&format!("many/entry-with-a-longish-name-{i:05}")), b"").unwrap();
        }
    }
    std::os::unix::fs::symlink("small.txt", p("fastlink")).unwrap();
    let long = format!("/{}", "x".repeat(100)) + "/target";
    std::os::unix::fs::symlink(&long, p("slowlink")).unwrap();
    std::os::unix::fs::symlink("a/b/c", p("a/dirlink")).unwrap();
    fs::hard_link(p("small.txt"), p("a/hardlink")).unwrap();
    sh("mknod", &[p("chr").to_str().unwrap(), "c", "4", "65"]);
    sh("mknod", &[p("blk").to_str().unwrap(), "b", "259", "300000"]);
    sh("mkfifo", &[p("fifo").to_str().unwrap()]);
    fs::set_permissions(p("a/odd-size"), fs::Permissions::from_mode(0o4751)).unwrap();
    std::os::unix::fs::chown(p("a/odd-size"), Some(1000), Some(70000)).unwrap();
    std::os::unix::fs::lchown(p("slowlink"), Some(12), Some(34)).unwrap();
    for (f, t) in [
        ("small.txt", "2001-02-03 04:05:06.123456789"),
        ("a", "1999-12-31 23:59:59"),
        ("sparse", "2037-01-01 00:00:01.5"),
    ] {
        sh("touch", &["-h", "-d", t, p(f).to_str().unwrap()]);
    }
    sh(
        "touch",
        &["-h", "-d", "1970-01-02", p("fastlink").to_str().unwrap()],
    );
}

fn mkfs(img: &Path, size_mib: u64, args: &[&str], src: &Path) {
    let _ = fs::remove_file(img);
    let mut a: Vec<String> = vec!["-q".into(), "-F".into()];
    a.extend(args.iter().map(|s| s.to_string()));
    a.extend([
        "-d".into(),
        src.display().to_string(),
        img.display().to_string(),
        format!("{size_mib}M"),
    ]);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    sh("mke2fs", &a);
}

fn open_img(img: &Path) -> virtkit_guest::Result<Arc<dyn Filesystem>> {
    let dev: Arc<dyn BlockDev> = Arc::new(ImageDev::open(img, None)?);
    open(dev, "ext4")
}

fn debugfs(img: &Path, req: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", req, img.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_all(fs: &dyn Filesystem, ino: Ino) -> Vec<u8> {
    let st = fs.stat(ino).unwrap();
    let mut out = vec![0u8; st.size as usize];
    let mut off = 0;
    // Uneven chunks, to cross block and extent boundaries at odd places.
    let mut chunk = 777;
    while off < out.len() {
        let end = (off + chunk).min(out.len());
        let n = fs.read(ino, off as u64, &mut out[off..end]).unwrap();
        assert_eq!(n, end - off);
        off = end;
        chunk = chunk * 3 % 300_001 + 1;
    }
    let mut past = [0u8; 10];
    assert_eq!(fs.read(ino, st.size, &mut past).unwrap(), 0);
    out
}

/// Every path (relative) -> (stat, entry kind) under `ino`.
fn walk(fs: &dyn Filesystem, ino: Ino, prefix: &str, out: &mut BTreeMap<String, (Stat, DirEntry)>) {
    for e in fs.read_dir(ino).unwrap() {
        let name = String::from_utf8(e.name.clone()).unwrap();
        let path = format!("{prefix}{name}");
        let st = fs.stat(e.ino).unwrap();
        assert_eq!(st.kind, e.kind, "{path}: entry type vs inode type");
        let found = fs.lookup(ino, &e.name).unwrap().unwrap();
        assert_eq!(found, e, "{path}: lookup");
        if st.kind == FileType::Directory {
            walk(fs, e.ino, &format!("{path}/"), out);
        }
        out.insert(path, (st, e));
    }
}

fn kind_of(m: &fs::Metadata) -> FileType {
    FileType::from_mode(m.mode())
}

/// Compares everything the reader sees with the source tree; `nsec` says whether the inodes
/// are large enough to hold nanoseconds.
fn compare_tree(fs: &dyn Filesystem, src: &Path, nsec: bool) {
    let mut seen = BTreeMap::new();
    walk(fs, fs.root(), "", &mut seen);
    seen.remove("lost+found");
    let mut want = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(src.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(r.clone());
            }
            want.push(r.to_str().unwrap().to_string());
        }
    }
    want.sort();
    let got: Vec<&String> = seen.keys().collect();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "paths");
    let mut inos: BTreeMap<u64, u64> = BTreeMap::new();
    for (path, (st, _)) in &seen {
        let m = fs::symlink_metadata(src.join(path)).unwrap();
        assert_eq!(st.kind, kind_of(&m), "{path}: type");
        assert_eq!(st.mode, m.mode(), "{path}: mode");
        assert_eq!((st.uid, st.gid), (m.uid(), m.gid()), "{path}: owner");
        assert_eq!(st.nlink, m.nlink(), "{path}: nlink");
        if st.kind != FileType::Directory {
            assert_eq!(st.size, m.size(), "{path}: size");
        }
        // mke2fs -d copies seconds only (nanoseconds are checked where debugfs set them).
        if nsec {
            assert_eq!(st.mtime.sec, m.mtime(), "{path}: mtime");
        } else {
            // Small inodes have 32-bit signed seconds and no nanoseconds.
            assert_eq!(st.mtime.sec, m.mtime() as i32 as i64, "{path}: mtime");
        }
        *inos.entry(st.ino).or_default() += 1;
        match st.kind {
            FileType::Regular => {
                let data = read_all(fs, st.ino);
                assert!(
                    data == fs::read(src.join(path)).unwrap(),
                    "{path}: contents"
                );
            }
            FileType::Symlink => {
                let t = fs::read_link(src.join(path)).unwrap();
                assert_eq!(
                    fs.readlink(st.ino).unwrap(),
                    t.as_os_str().as_encoded_bytes(),
                    "{path}"
                );
            }
            FileType::CharDevice | FileType::BlockDevice => {
                assert_eq!(st.rdev, m.rdev(), "{path}: rdev");
            }
            _ => {}
        }
    }
    // Hard links: one inode, two names.
    if let (Some(a), Some(b)) = (seen.get("small.txt"), seen.get("a/hardlink")) {
        assert_eq!(a.0.ino, b.0.ino);
    }
}

/// Inode numbers, modes, owners and sizes against `debugfs ls -l`.
fn compare_debugfs_ls(fs: &dyn Filesystem, img: &Path, dir: &str) {
    let listing = debugfs(img, &format!("ls -l {dir}"));
    let mut dino = fs.root();
    for part in dir.split('/').filter(|s| !s.is_empty()) {
        dino = fs.lookup(dino, part.as_bytes()).unwrap().unwrap().ino;
    }
    let ours: BTreeMap<Vec<u8>, DirEntry> = fs
        .read_dir(dino)
        .unwrap()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect();
    let mut n = 0;
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0].parse::<u64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "." || name == ".." {
            continue;
        }
        let e = ours
            .get(name.as_bytes())
            .unwrap_or_else(|| panic!("{dir}/{name} missing"));
        let st = fs.stat(e.ino).unwrap();
        assert_eq!(e.ino, f[0].parse::<u64>().unwrap(), "{name}: inode");
        assert_eq!(
            st.mode,
            u32::from_str_radix(f[1], 8).unwrap(),
            "{name}: mode"
        );
        assert_eq!(st.uid, f[3].parse::<u32>().unwrap(), "{name}: uid");
        assert_eq!(st.gid, f[4].parse::<u32>().unwrap(), "{name}: gid");
        if st.kind != FileType::CharDevice && st.kind != FileType::BlockDevice {
            assert_eq!(st.size, f[5].parse::<u64>().unwrap(), "{name}: size");
        }
        n += 1;
    }
    assert_eq!(
        n,
        ours.len(),
        "{dir}: debugfs lists {n} entries, we {}",
        ours.len()
    );
}

fn ino_of(fs: &dyn Filesystem, path: &str) -> Ino {
    let mut ino = fs.root();
    for part in path.split('/').filter(|s| !s.is_empty()) {
        ino = fs.lookup(ino, part.as_bytes()).unwrap().unwrap().ino;
    }
    ino
}

fn blkid(img: &Path, tag: &str) -> String {
    sh(
        "blkid",
        &["-p", "-o", "value", "-s", tag, img.to_str().unwrap()],
    )
    .trim()
    .to_string()
}

#[test]
fn ext4_default_matches_source_and_debugfs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, true);
    let img = t.path().join("fs.img");
    mkfs(
        &img,
        24,
        &["-t", "ext4", "-b", "4096", "-L", "guestroot"],
        &src,
    );
    // Attributes, a birth time and nanoseconds set with debugfs.
    let cmds = t.path().join("cmds");
    fs::write(
        &cmds,
        "ea_set /small.txt user.color blue\n\
         ea_set /small.txt trusted.t 12345\n\
         ea_set -f /etc/hostname /a security.selinux\n\
         set_inode_field /small.txt crtime 20200102030405\n\
         set_inode_field /small.txt crtime_extra 0x10\n\
         set_inode_field /empty mtime_extra 0x5\n",
    )
    .unwrap();
    let big_value = "v".repeat(3000);
    fs::write(t.path().join("bigval"), &big_value).unwrap();
    fs::write(
        t.path().join("cmds2"),
        format!(
            "ea_set -f {} /a/b user.big\n",
            t.path().join("bigval").display()
        ),
    )
    .unwrap();
    sh(
        "debugfs",
        &["-w", "-f", cmds.to_str().unwrap(), img.to_str().unwrap()],
    );
    sh(
        "debugfs",
        &[
            "-w",
            "-f",
            t.path().join("cmds2").to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    // mke2fs -d makes linear directories; e2fsck -D indexes the large one (htree).
    let _ = Command::new("e2fsck")
        .args(["-fyD", img.to_str().unwrap()])
        .output();
    let fs = open_img(&img).unwrap();
    let info = fs.info();
    assert_eq!(info.kind, "ext4");
    assert_eq!(info.kind, blkid(&img, "TYPE"));
    assert_eq!(info.label.as_deref(), Some("guestroot"));
    assert_eq!(info.uuid.as_deref(), Some(blkid(&img, "UUID").as_str()));

    // /empty's mtime_extra was changed after the copy: fix the source to match.
    let empty = ino_of(&*fs, "empty");
    let st = fs.stat(empty).unwrap();
    assert_eq!(st.mtime.nsec, 1);
    assert_eq!(
        st.mtime.sec,
        fs::metadata(src.join("empty")).unwrap().mtime() + (1 << 32)
    );
    fs::remove_file(src.join("empty")).unwrap();
    fs::write(src.join("empty"), b"").unwrap();
    let tm = format!("@{}.000000001", st.mtime.sec);
    sh("touch", &["-d", &tm, src.join("empty").to_str().unwrap()]);
    compare_tree(&*fs, &src, true);
    for d in ["/", "/a", "/many"] {
        compare_debugfs_ls(&*fs, &img, d);
    }
    // The large directory really is an htree.
    let many = ino_of(&*fs, "many");
    assert!(debugfs(&img, "stat /many").contains("Flags: 0x81000"));
    assert_eq!(fs.read_dir(many).unwrap().len(), 3200);
    assert!(fs
        .lookup(many, b"entry-with-a-longish-name-03199")
        .unwrap()
        .is_some());
    assert!(fs.lookup(many, b"nope").unwrap().is_none());

    // Birth time and its nanoseconds (crtime_extra 0x10 = 4 ns).
    let small = fs.stat(ino_of(&*fs, "small.txt")).unwrap();
    let cr = small.crtime.unwrap();
    assert_eq!(cr.nsec, 4);
    assert_eq!(cr.sec, 1577934245); // 2020-01-02 03:04:05 UTC
    assert_eq!(small.blksize, 4096);

    let mut x = fs.xattrs(ino_of(&*fs, "small.txt")).unwrap();
    x.sort();
    assert_eq!(
        x,
        vec![
            (b"trusted.t".to_vec(), b"12345".to_vec()),
            (b"user.color".to_vec(), b"blue".to_vec())
        ]
    );
    let a = fs.xattrs(ino_of(&*fs, "a")).unwrap();
    assert_eq!(
        a,
        vec![(
            b"security.selinux".to_vec(),
            fs::read("/etc/hostname").unwrap()
        )]
    );
    // 3000 bytes do not fit in the inode: an external attribute block.
    let b = ino_of(&*fs, "a/b");
    assert!(debugfs(&img, "stat /a/b").contains("File ACL: "));
    assert_eq!(
        fs.xattrs(b).unwrap(),
        vec![(b"user.big".to_vec(), big_value.into_bytes())]
    );

    // statfs against dumpe2fs.
    let sf = fs.statfs().unwrap();
    let dump = sh("dumpe2fs", &["-h", img.to_str().unwrap()]);
    let field = |k: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().parse::<u64>().unwrap()))
            .unwrap()
    };
    assert_eq!(sf.bsize, 4096);
    assert_eq!(sf.bfree, field("Free blocks:"));
    assert_eq!(sf.files, field("Inode count:"));
    assert_eq!(sf.ffree, field("Free inodes:"));
    // The kernel's figures: overhead (mke2fs records it) out of the total, and 2% (at most
    // 4096 blocks) kept back besides the reserved blocks (checked against a mounted
    // filesystem in ext4_dirty_journal_is_replayed).
    let count = field("Block count:");
    assert_eq!(sf.blocks, count - field("Overhead clusters:"));
    assert_eq!(
        sf.bavail,
        sf.bfree - field("Reserved block count:") - (count / 50).min(4096)
    );
    assert_eq!(sf.namemax, 255);

    // Errors: not a directory, is a directory, not found.
    assert!(matches!(fs.read_dir(small.ino), Err(Error::NotDir(_))));
    assert!(matches!(
        fs.read(fs.root(), 0, &mut [0u8; 4]),
        Err(Error::IsDir(_))
    ));
    assert!(matches!(fs.stat(0), Err(Error::NotFound(_))));
    assert!(matches!(fs.stat(1 << 40), Err(Error::NotFound(_))));
}

#[test]
fn ext4_variants_match_source() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, false);
    let img = t.path().join("fs.img");
    for (args, nsec, kind) in [
        (&["-t", "ext4", "-O", "^has_journal"][..], true, "ext4"),
        (&["-t", "ext4", "-b", "1024"][..], true, "ext4"),
        (&["-t", "ext4", "-I", "128"][..], false, "ext4"),
        (&["-t", "ext4", "-O", "inline_data"][..], true, "ext4"),
        (
            &["-t", "ext4", "-O", "^metadata_csum,^64bit,uninit_bg"][..],
            true,
            "ext4",
        ),
        (
            &[
                "-t",
                "ext4",
                "-O",
                "^metadata_csum,^64bit,^extent,^flex_bg,meta_bg,^resize_inode",
            ][..],
            true,
            "ext4",
        ),
        (
            &[
                "-t",
                "ext4",
                "-b",
                "1024",
                "-O",
                "64bit,metadata_csum_seed",
                "-U",
                "clear",
            ][..],
            true,
            "ext4",
        ),
        (&["-t", "ext3"][..], true, "ext3"),
        (&["-t", "ext2", "-b", "1024"][..], true, "ext2"),
        (
            &["-t", "ext2", "-I", "128", "-O", "^filetype"][..],
            false,
            "ext2",
        ),
    ] {
        mkfs(&img, 12, args, &src);
        let fs = open_img(&img).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(fs.info().kind, kind, "{args:?}");
        assert_eq!(blkid(&img, "TYPE"), kind, "{args:?}");
        compare_tree(&*fs, &src, nsec);
        compare_debugfs_ls(&*fs, &img, "/");
        compare_debugfs_ls(&*fs, &img, "/a");
        if args.contains(&"inline_data") {
            assert!(debugfs(&img, "stat /small.txt").contains("Size of inline data"));
        }
    }
}

/// With 1 KiB blocks, data at 70 MiB is behind the triple-indirect block of an ext2 block
/// map; a big file uses the double-indirect ones.
#[test]
fn ext2_indirect_blocks() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let f = fs::File::create(src.join("far")).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&random_bytes(9, 3000), 70 << 20).unwrap();
    f.write_all_at(b"first", 0).unwrap();
    drop(f);
    fs::write(src.join("mid"), random_bytes(8, 2 << 20)).unwrap();
    let img = t.path().join("fs.img");
    mkfs(&img, 8, &["-t", "ext2", "-b", "1024"], &src);
    let fs = open_img(&img).unwrap();
    compare_tree(&*fs, &src, true);
    assert!(debugfs(&img, "stat /far").contains("TIND"));
}

/// Read through a converted qcow2 image (the block layer path).
#[test]
fn ext4_through_qcow2() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, false);
    let img = t.path().join("fs.img");
    mkfs(&img, 12, &["-t", "ext4"], &src);
    let q = t.path().join("fs.qcow2");
    sh(
        "qemu-img",
        &[
            "convert",
            "-O",
            "qcow2",
            img.to_str().unwrap(),
            q.to_str().unwrap(),
        ],
    );
    let fs = open_img(&q).unwrap();
    compare_tree(&*fs, &src, true);
}

/// A filesystem copied while mounted, after a commit but before the metadata was written
/// back: the new files exist only in the journal. Needs a loop mount (root); skipped
/// without one.
#[test]
fn ext4_dirty_journal_is_replayed() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("fs.img");
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("gone"), b"removed while mounted").unwrap();
    mkfs(&img, 16, &["-t", "ext4", "-b", "4096"], &src);
    let m = Command::new("mount")
        .args([
            "-o",
            "loop,commit=60",
            img.to_str().unwrap(),
            mnt.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    if !m.status.success() {
        eprintln!(
            "skipped: no loop mount: {}",
            String::from_utf8_lossy(&m.stderr)
        );
        return;
    }
    // statfs as the kernel computes it, on the clean filesystem.
    let kernel = sh(
        "stat",
        &["-f", "-c", "%S %b %f %a %c %d %l", mnt.to_str().unwrap()],
    );
    let ours = open_img(&img).unwrap().statfs().unwrap();
    let ours = format!(
        "{} {} {} {} {} {} {}",
        ours.bsize, ours.blocks, ours.bfree, ours.bavail, ours.files, ours.ffree, ours.namemax
    );
    if kernel.trim() != ours {
        sh("umount", &[mnt.to_str().unwrap()]);
        panic!("statfs: kernel {kernel} ours {ours}");
    }
    let dirty = t.path().join("dirty.img");
    let content = random_bytes(5, 20000);
    let res = std::panic::catch_unwind(|| {
        fs::create_dir(mnt.join("newdir")).unwrap();
        fs::write(mnt.join("newdir/file"), &content).unwrap();
        std::os::unix::fs::symlink("file", mnt.join("newdir/link")).unwrap();
        for i in 0..20 {
            let p = mnt.join(format!("newdir/n{i}"));
            fs::write(&p, format!("{i}")).unwrap();
            fs::File::open(&p).unwrap().sync_all().unwrap();
        }
        fs::remove_file(mnt.join("gone")).unwrap();
        // fsync commits the transaction to the journal; the metadata is written back only
        // much later (commit=60, dirty_expire), so the copy has it only in the journal.
        sh("sync", &[mnt.join("newdir/file").to_str().unwrap()]);
        fs::copy(&img, &dirty).unwrap();
    });
    sh("umount", &[mnt.to_str().unwrap()]);
    res.unwrap();
    // What recovery gives: e2fsck replays the journal on a copy.
    let recovered = t.path().join("recovered.img");
    fs::copy(&dirty, &recovered).unwrap();
    let _ = Command::new("e2fsck")
        .args(["-fy", recovered.to_str().unwrap()])
        .output();
    assert!(
        !debugfs(&dirty, "ls /").contains("newdir"),
        "the copy already has the new directory outside the journal: nothing to test"
    );
    assert!(sh("dumpe2fs", &["-h", dirty.to_str().unwrap()]).contains("needs_recovery"));
    let fs = open_img(&dirty).unwrap();
    let d = ino_of(&*fs, "newdir");
    assert_eq!(fs.read_dir(d).unwrap().len(), 22);
    assert_eq!(read_all(&*fs, ino_of(&*fs, "newdir/file")), content);
    assert_eq!(fs.readlink(ino_of(&*fs, "newdir/link")).unwrap(), b"file");
    assert!(fs.lookup(fs.root(), b"gone").unwrap().is_none());
    compare_debugfs_ls(&*fs, &recovered, "/");
    compare_debugfs_ls(&*fs, &recovered, "/newdir");
    for i in [0, 19] {
        let ino = ino_of(&*fs, &format!("newdir/n{i}"));
        assert_eq!(read_all(&*fs, ino), format!("{i}").into_bytes());
    }

    // A corrupt descriptor block: an error or the unreplayed view, never a panic.
    let jdesc = journal_block(&dirty, 1);
    let mut bytes = fs::read(&dirty).unwrap();
    for b in &mut bytes[jdesc + 12..jdesc + 60] {
        *b ^= 0x5a;
    }
    hostile(bytes);
}

/// Byte offset of block `n` of the journal (inode 8).
fn journal_block(img: &Path, n: u64) -> usize {
    let out = debugfs(img, &format!("bmap <8> {n}"));
    let blk: usize = out.trim().parse().unwrap();
    blk * 4096
}

/// Opens and walks a corrupted image with bounded work: errors are fine, panics and hangs
/// are not. Returns whether anything failed.
fn hostile(bytes: Vec<u8>) -> bool {
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev(bytes));
    let fs = match open(dev, "ext4") {
        Ok(fs) => fs,
        Err(e) => {
            if std::env::var("EXT4_DEBUG").is_ok() {
                eprintln!("open: {e}");
            }
            return true;
        }
    };
    let mut failed = false;
    let mut stack = vec![fs.root()];
    let mut steps = 0;
    while let Some(ino) = stack.pop() {
        steps += 1;
        if steps > 200 {
            break;
        }
        let _ = fs.xattrs(ino);
        match fs.read_dir(ino) {
            Ok(entries) => {
                for e in entries.into_iter().take(50) {
                    match e.kind {
                        FileType::Directory => stack.push(e.ino),
                        FileType::Symlink => failed |= fs.readlink(e.ino).is_err(),
                        FileType::Regular => {
                            let mut buf = vec![0u8; 1 << 20];
                            let r = fs.read(e.ino, 0, &mut buf);
                            let r2 = fs.read(e.ino, 1 << 59, &mut buf[..4096]);
                            if std::env::var("EXT4_DEBUG").is_ok() {
                                eprintln!("{:?} {:?} {:?}", e, r, r2);
                            }
                            failed |= r.is_err() || r2.is_err();
                        }
                        _ => {}
                    }
                    failed |= fs.stat(e.ino).is_err();
                }
            }
            Err(e) => {
                if std::env::var("EXT4_DEBUG").is_ok() {
                    eprintln!("read_dir {ino}: {e}");
                }
                failed = true
            }
        }
    }
    failed |= fs.statfs().is_err();
    failed
}

#[test]
fn ext4_hostile_images() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, false);
    let img = t.path().join("fs.img");
    mkfs(
        &img,
        8,
        &[
            "-t",
            "ext4",
            "-b",
            "4096",
            "-I",
            "256",
            "-O",
            "^metadata_csum",
        ],
        &src,
    );
    let clean = fs::read(&img).unwrap();
    assert!(
        !hostile(clean.clone()),
        "the clean image reads without errors"
    );
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let put32 = |b: &mut Vec<u8>, o: usize, v: u32| b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let put16 = |b: &mut Vec<u8>, o: usize, v: u16| b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    // Inode locations from the first group descriptor (block 1).
    let itable = le32(&clean, 4096 + 8) as usize * 4096;
    let inode_at = |ino: usize| itable + (ino - 1) * 256;
    let fs0 = open_img(&img).unwrap();
    let sparse = ino_of(&*fs0, "sparse") as usize;
    let small = ino_of(&*fs0, "small.txt") as usize;
    let dir_a = ino_of(&*fs0, "a") as usize;
    drop(fs0);
    let expect_err = |name: &str, b: Vec<u8>| {
        assert!(hostile(b), "{name}: expected an error");
    };

    // Superblock: magic, block size, block count past the device, inode count, unknown
    // incompat feature (named in the error).
    let mut b = clean.clone();
    b[1024 + 56] ^= 0xff;
    expect_err("magic", b);
    let mut b = clean.clone();
    put32(&mut b, 1024 + 24, 30);
    expect_err("log block size", b);
    let mut b = clean.clone();
    put32(&mut b, 1024 + 4, u32::MAX);
    expect_err("block count", b);
    let mut b = clean.clone();
    put32(&mut b, 1024 + 40, 0);
    expect_err("inodes per group", b);
    let mut b = clean.clone();
    let f = le32(&b, 1024 + 96);
    put32(&mut b, 1024 + 96, f | 0x1000 | 0x100000);
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev(b));
    match open(dev, "ext4") {
        Err(Error::Unsupported(m)) => {
            assert!(m.contains("dirdata") && m.contains("FEATURE_I20"), "{m}")
        }
        Err(e) => panic!("unknown feature: {e}"),
        Ok(_) => panic!("unknown feature accepted"),
    }
    // Group descriptor: inode table past the end.
    let mut b = clean.clone();
    put32(&mut b, 4096 + 8, 0x7fff_ffff);
    expect_err("inode table", b);
    // Inodes: absurd size (reads of holes, bounded by the buffer), extent past the end,
    // extent depth 100, bad extent magic, bad extra isize.
    let mut b = clean.clone();
    put32(&mut b, inode_at(sparse) + 4, u32::MAX);
    put32(&mut b, inode_at(sparse) + 108, u32::MAX >> 4);
    assert!(!hostile(b), "a huge sparse file reads as zeros");
    let mut b = clean.clone();
    put32(&mut b, inode_at(small) + 40 + 12 + 8, 0x7fff_0000);
    expect_err("extent past the end", b);
    let mut b = clean.clone();
    put16(&mut b, inode_at(small) + 40 + 6, 100);
    expect_err("extent depth", b);
    let mut b = clean.clone();
    put16(&mut b, inode_at(small) + 40 + 2, 500);
    expect_err("extent count", b);
    let mut b = clean.clone();
    put16(&mut b, inode_at(small) + 128, 1000);
    expect_err("extra isize", b);
    // An extent index pointing at itself (a cycle): depth 1 root whose child is a block
    // claiming depth 1 again.
    let dir_blk = {
        let ib = inode_at(dir_a) + 40;
        le32(&clean, ib + 12 + 8) as usize
    };
    let mut b = clean.clone();
    let ib = inode_at(small) + 40;
    put16(&mut b, ib + 6, 1);
    put32(&mut b, ib + 12 + 4, dir_blk as u32);
    put16(&mut b, ib + 12 + 8, 0);
    let o = dir_blk * 4096;
    put16(&mut b, o, 0xF30A);
    put16(&mut b, o + 2, 1);
    put16(&mut b, o + 4, 340);
    put16(&mut b, o + 6, 1);
    put32(&mut b, o + 12, 0);
    put32(&mut b, o + 12 + 4, dir_blk as u32);
    expect_err("extent cycle", b);
    // Directory block: rec_len 0, rec_len past the block, name past the record.
    for (off, v) in [(4usize, 0u16), (4, 5000), (16, 9000)] {
        let mut b = clean.clone();
        put16(&mut b, dir_blk * 4096 + off, v);
        expect_err("directory entry", b);
    }
    // Random damage over the metadata area: whatever happens, no panic or hang.
    let mut seed = 7u64;
    for _ in 0..200 {
        let mut b = clean.clone();
        for _ in 0..8 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let at = (seed >> 33) as usize % (itable + 64 * 256);
            b[at] ^= (seed >> 13) as u8 | 1;
        }
        hostile(b);
    }
}

/// With metadata_csum, a flipped byte anywhere in a checksummed structure is reported as
/// corrupt, naming the structure.
#[test]
fn ext4_checksums_are_verified() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    make_tree(&src, false);
    // 16 extents for one file need an extent block (the inode holds 4).
    let f = fs::File::create(src.join("fragmented")).unwrap();
    use std::os::unix::fs::FileExt;
    for i in 0..16u64 {
        f.write_all_at(b"x", i * 65536).unwrap();
    }
    drop(f);
    let img = t.path().join("fs.img");
    mkfs(&img, 8, &["-t", "ext4", "-b", "4096", "-I", "256"], &src);
    let clean = fs::read(&img).unwrap();
    let fs0 = open_img(&img).unwrap();
    let frag = ino_of(&*fs0, "fragmented");
    let a = ino_of(&*fs0, "a");
    drop(fs0);
    let le32 = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let itable = le32(&clean, 4096 + 8) as usize * 4096;
    let inode_at = |ino: u64| itable + (ino as usize - 1) * 256;
    let ext_blk = le32(&clean, inode_at(frag) + 40 + 12 + 4) as usize;
    assert_eq!(
        clean[inode_at(frag) + 40 + 6],
        1,
        "fragmented has an extent block"
    );
    let dir_blk = le32(&clean, inode_at(a) + 40 + 12 + 8) as usize;
    let check = |what: &str,
                 at: usize,
                 needle: &str,
                 op: &dyn Fn(&dyn Filesystem) -> virtkit_guest::Result<()>| {
        let mut b = clean.clone();
        b[at] ^= 0x01;
        let dev: Arc<dyn BlockDev> = Arc::new(MemDev(b));
        let r = open(dev, "ext4").and_then(|fs| op(&*fs));
        match r {
            Err(Error::Corrupt(m)) => assert!(m.contains(needle), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    };
    check(
        "superblock",
        1024 + 0x80,
        "superblock checksum",
        &|_| Ok(()),
    );
    check(
        "group descriptor",
        4096 + 12,
        "group descriptor 0 checksum",
        &|fs| fs.stat(2).map(|_| ()),
    );
    check(
        "inode",
        inode_at(frag) + 0x20 + 2,
        &format!("inode {frag}: checksum"),
        &|fs| fs.stat(frag).map(|_| ()),
    );
    check(
        "extent block",
        ext_blk * 4096 + 30,
        &format!("extent block {ext_blk}: checksum"),
        &|fs| fs.read(frag, 15 * 65536, &mut [0u8; 1]).map(|_| ()),
    );
    check(
        "directory block",
        dir_blk * 4096 + 20,
        &format!("directory block {dir_blk}: checksum"),
        &|fs| fs.read_dir(a).map(|_| ()),
    );
}
