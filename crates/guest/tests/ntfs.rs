//! NTFS reader against images made by mkntfs and populated through an ntfs-3g FUSE mount
//! (nested directories, a directory big enough for an index allocation, long and non-ASCII
//! names, a big random file, an empty file, a sparse file, a hard link, a symlink): tree,
//! contents and targets compared with the source; stat (ino, mode, nlink, size, blocks,
//! times) and statfs compared with what ntfs-3g itself shows; label and serial; a qcow2
//! conversion; corrupted images (each in a thread with a timeout).

mod tree;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tree::{run, Content};
use virtkit_guest::dev::{BlockDev, ImageDev, MemDev};
use virtkit_guest::fs::ntfs::NtfsFs;
use virtkit_guest::fs::{self, FileType, Filesystem};

fn source(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let w = |p: &str, data: &[u8]| {
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    };
    w("a/b/c/deep.txt", b"deep\n");
    for i in 0..60 {
        w(
            &format!("a/file with a rather long name number {i}.txt"),
            format!("{i}\n").as_bytes(),
        );
    }
    w("ünïcödé 日本語 name.txt", "non-ASCII".as_bytes());
    w("Mixed.Case.Name.tar.gz", b"dots");
    w("empty", b"");
    w("big.bin", &tree::random_bytes(3 << 20, 42));
    w("small", b"resident data");
    std::fs::create_dir_all(src.join("emptydir")).unwrap();
    std::fs::hard_link(src.join("small"), src.join("a/hardlink")).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", src.join("link")).unwrap();
    // Sparse: data, a hole, data.
    let mut sp = vec![0u8; 2 << 20];
    sp[..5000].copy_from_slice(&tree::random_bytes(5000, 1));
    sp[(2 << 20) - 3000..].copy_from_slice(&tree::random_bytes(3000, 2));
    w("sparse", &sp);
    src
}

/// What ntfs-3g shows for one path (stat through the FUSE mount).
#[derive(Debug)]
struct Seen {
    ino: u64,
    mode: u32,
    nlink: u64,
    size: u64,
    blocks: u64,
    times: [(i64, i64); 3],
}

/// mkntfs, then `cp -a` of `src` through an ntfs-3g mount; returns the image and ntfs-3g's
/// view of every path (remounted read-only, so what it reads back from disk).
fn make_image(
    dir: &Path,
    src: &Path,
) -> (
    PathBuf,
    std::collections::BTreeMap<String, Seen>,
    (u64, u64, u64),
) {
    let img = dir.join("ntfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(24 << 20)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-L", "WinData"])
        .arg(&img));
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(Command::new("ntfs-3g").arg(&img).arg(&mnt));
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(&mnt)
        .status();
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(cp.unwrap().success(), "cp -a into the ntfs-3g mount");
    // A sparse file with a real hole: truncate through the mount then write both ends.
    run(Command::new("ntfs-3g").arg(&img).arg(&mnt));
    let sp = std::fs::read(src.join("sparse")).unwrap();
    {
        use std::io::{Seek, SeekFrom, Write};
        let _ = std::fs::remove_file(mnt.join("sparse"));
        let mut f = std::fs::File::create(mnt.join("sparse")).unwrap();
        f.write_all(&sp[..5000]).unwrap();
        f.seek(SeekFrom::Start((sp.len() - 3000) as u64)).unwrap();
        f.write_all(&sp[sp.len() - 3000..]).unwrap();
    }
    run(Command::new("umount").arg(&mnt));
    run(Command::new("ntfs-3g")
        .args(["-o", "ro"])
        .arg(&img)
        .arg(&mnt));
    let mut seen = std::collections::BTreeMap::new();
    let mut stack = vec![(String::new(), mnt.clone())];
    while let Some((p, d)) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let path = format!("{p}/{}", e.file_name().to_str().unwrap());
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push((path.clone(), e.path()));
            }
            seen.insert(
                path,
                Seen {
                    ino: md.ino(),
                    mode: md.mode(),
                    nlink: md.nlink(),
                    size: md.size(),
                    blocks: md.blocks(),
                    times: [
                        (md.atime(), md.atime_nsec()),
                        (md.mtime(), md.mtime_nsec()),
                        (md.ctime(), md.ctime_nsec()),
                    ],
                },
            );
        }
    }
    let sfs = run(Command::new("stat")
        .args(["-f", "-c", "%S %b %f"])
        .arg(&mnt));
    run(Command::new("umount").arg(&mnt));
    let v: Vec<u64> = sfs.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (img, seen, (v[0], v[1], v[2]))
}

fn open_raw(img: &Path) -> Arc<dyn Filesystem> {
    let dev: Arc<dyn BlockDev> = Arc::new(ImageDev::open(img, None).unwrap());
    let kind = virtkit_guest::probe::probe(&*dev).unwrap().kind;
    assert_eq!(kind, "ntfs");
    fs::open(dev, &kind).unwrap()
}

#[test]
fn ntfs_matches_source_and_ntfs_3g() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path());
    let (img, seen, (bsize, blocks, bfree)) = make_image(t.path(), &src);
    let fs = open_raw(&img);
    let info = fs.info();
    assert_eq!(info.kind, "ntfs");
    assert_eq!(info.label.as_deref(), Some("WinData"));
    let blkid = run(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "UUID"])
        .arg(&img));
    assert_eq!(info.uuid.as_deref(), Some(blkid.trim()));

    let ours = tree::walk(&*fs);
    let host = tree::host_tree(&src);
    tree::assert_same_content(&ours, &host);
    assert!(matches!(&ours["/link"].1, Content::Link(t) if t == b"a/b/c/deep.txt"));
    assert_eq!(ours["/link"].0.kind, FileType::Symlink);
    assert_eq!(ours["/a/hardlink"].0.ino, ours["/small"].0.ino);

    // The same view as ntfs-3g's: every path, inode, mode, link count, size, blocks, times.
    let paths: Vec<&String> = ours.keys().collect();
    let paths3g: Vec<&String> = seen.keys().collect();
    assert_eq!(paths, paths3g, "listing differs from ntfs-3g's");
    for (p, (st, _)) in &ours {
        let s = &seen[p];
        assert_eq!(st.ino, s.ino, "{p}: ino");
        assert_eq!(st.mode, s.mode, "{p}: mode");
        assert_eq!(st.nlink, s.nlink, "{p}: nlink");
        assert_eq!(st.size, s.size, "{p}: size");
        assert_eq!(st.blocks, s.blocks, "{p}: blocks");
        let t = |x: virtkit_guest::fs::Timespec| (x.sec, x.nsec as i64);
        assert_eq!(
            [t(st.atime), t(st.mtime), t(st.ctime)],
            s.times,
            "{p}: times"
        );
    }
    let root = fs.stat(fs.root()).unwrap();
    assert_eq!(
        (root.ino, root.kind, root.mode),
        (5, FileType::Directory, 0o40777)
    );
    assert!(
        ours["/sparse"].0.blocks < (2 << 20) / 512,
        "sparse file has a hole"
    );

    let sfs = fs.statfs().unwrap();
    assert_eq!((sfs.bsize, sfs.blocks, sfs.bfree), (bsize, blocks, bfree));

    // ntfsls's root listing (system files and DOS names hidden) is ours too.
    let ls = run(Command::new("ntfsls").arg(&img));
    let mut theirs: Vec<&str> = ls.lines().collect();
    theirs.sort();
    let mut mine: Vec<String> = fs
        .read_dir(fs.root())
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .collect();
    mine.sort();
    assert_eq!(mine, theirs);

    // Reads at odd offsets, past the end, and on a directory.
    let big = ours["/big.bin"].0.ino;
    let mut buf = vec![0u8; 10];
    assert_eq!(fs.read(big, (3 << 20) - 4, &mut buf).unwrap(), 4);
    assert_eq!(fs.read(big, 3 << 20, &mut buf).unwrap(), 0);
    assert!(matches!(
        fs.read(fs.root(), 0, &mut buf),
        Err(virtkit_guest::Error::IsDir(_))
    ));
    assert!(matches!(
        fs.read_dir(big),
        Err(virtkit_guest::Error::NotDir(_))
    ));
}

#[test]
fn qcow2_image_through_the_block_layer() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big.bin"), tree::random_bytes(1 << 20, 9)).unwrap();
    let img = t.path().join("ntfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-L", "Q"])
        .arg(&img));
    run(Command::new("ntfscp")
        .arg(&img)
        .arg(src.join("big.bin"))
        .arg("big.bin"));
    let q = t.path().join("ntfs.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&img)
        .arg(&q));
    let fs = open_raw(&q);
    assert_eq!(fs.info().label.as_deref(), Some("Q"));
    let ours = tree::walk(&*fs);
    tree::assert_same_content(&ours, &tree::host_tree(&src));
}

fn small_image(t: &Path) -> Vec<u8> {
    let src = source(t);
    let img = t.join("small.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-f", "-q", "-L", "H"])
        .arg(&img));
    for f in ["small", "empty", "Mixed.Case.Name.tar.gz"] {
        run(Command::new("ntfscp").arg(&img).arg(src.join(f)).arg(f));
    }
    std::fs::read(&img).unwrap()
}

/// Opens and walks `data` in a thread; fails the test on a panic or after 20 s.
fn survives(data: Vec<u8>, what: &str) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = NtfsFs::open(Arc::new(MemDev(data)));
        let opened = r.is_ok();
        if let Ok(fs) = r {
            tree::walk_hostile(&fs);
        }
        let _ = tx.send(opened);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(opened) => opened,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("{what}: hangs"),
        Err(_) => panic!("{what}: panicked"),
    }
}

fn le16(d: &[u8], at: usize) -> usize {
    u16::from_le_bytes([d[at], d[at + 1]]) as usize
}

#[test]
fn hostile_images_are_errors_not_panics_or_hangs() {
    let t = tempfile::tempdir().unwrap();
    let data = small_image(t.path());
    assert!(survives(data.clone(), "intact"));
    // Boot sector: sector size, cluster size, MFT position, record size, all zero.
    for (at, v) in [
        (0x0b, 0x00u8),
        (0x0c, 0xff),
        (0x0d, 0x00),
        (0x30, 0xff),
        (0x37, 0x7f),
        (0x40, 0x7f),
        (0x40, 0x81),
    ] {
        let mut d = data.clone();
        d[at] = v;
        survives(d, &format!("boot sector byte {at:#x} = {v:#x}"));
    }
    let mut d = data.clone();
    d[..512].fill(0);
    assert!(!survives(d, "zeroed boot sector"));
    assert!(NtfsFs::open(Arc::new(MemDev(vec![0u8; 100]))).is_err());

    // The MFT: records of the root (5) and of the first user file (64), sweeps of flips.
    let cluster = le16(&data, 0x0b) * data[0x0d] as usize;
    let mft = u64::from_le_bytes(data[0x30..0x38].try_into().unwrap()) as usize * cluster;
    for rec in [0usize, 5, 64] {
        let base = mft + rec * 1024;
        for (i, (at, x)) in tree::mutations(rec as u64 + 3, 120, 1024)
            .into_iter()
            .enumerate()
        {
            let mut d = data.clone();
            d[base + at] ^= x;
            if i % 3 == 0 {
                for k in 1..6 {
                    d[base + (at + k * 41) % 1024] ^= x;
                }
            }
            survives(d, &format!("MFT record {rec} byte {at}"));
        }
    }
    // The root's index record (INDX): flips.
    let indx = (0..data.len() / 4096)
        .map(|i| i * 4096)
        .find(|&o| &data[o..o + 4] == b"INDX")
        .expect("an index record");
    for (at, x) in tree::mutations(11, 150, 4096) {
        let mut d = data.clone();
        d[indx + at] ^= x;
        survives(d, &format!("INDX byte {at}"));
    }
}
