//! vfat reader against images made by mkfs.vfat and populated by mtools: names (long,
//! mixed case, NT lower-case bits, non-ASCII), sizes, contents, times, label and serial
//! compared with the source tree and with mdir; FAT12, FAT16, FAT32; a qcow2 conversion;
//! corrupted images.

mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tree::{run, Content};
use virtkit_guest::dev::{BlockDev, ImageDev, MemDev};
use virtkit_guest::fs::fat::bpb::FatKind;
use virtkit_guest::fs::fat::FatFs;
use virtkit_guest::fs::{self, FileType, Filesystem};

/// A source tree with what FAT names can be: long, mixed case, lower case only (NT bits),
/// upper case 8.3, non-ASCII, nested directories, an empty file and a big random one.
fn source(dir: &Path, big: usize) -> PathBuf {
    let src = dir.join("src");
    let w = |p: &str, data: &[u8]| {
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    };
    w("Readme.txt", b"mixed case: a long name entry\n");
    w("lower.txt", b"lower case: the NT case bits\n");
    w("UPPER.TXT", b"upper case 8.3\n");
    w("noext", b"no extension");
    w("empty", b"");
    w("ünïcödé file.txt", "non-ASCII long name".as_bytes());
    w(
        "Sub/a very long name with spaces and more than thirteen characters.data",
        b"x",
    );
    w("Sub/deeper/x/y/z.bin", &tree::random_bytes(5000, 7));
    w("Sub/Mixed.Dots.In.Name.tar.gz", b"dots");
    w("big.bin", &tree::random_bytes(big, 42));
    std::fs::create_dir_all(src.join("emptydir")).unwrap();
    src
}

/// mkfs.vfat -F `bits` on a `mib` MiB image, then mcopy -s -m of `src` (times preserved,
/// in UTC).
fn make_image(dir: &Path, bits: u32, mib: u64, src: &Path, extra: &[&str]) -> PathBuf {
    let img = dir.join(format!("fat{bits}.img"));
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    run(Command::new("mkfs.vfat")
        .args(["-F", &bits.to_string(), "-n", "MYLABEL", "-i", "1234abcd"])
        .args(extra)
        .arg(&img));
    let mut cmd = Command::new("mcopy");
    cmd.env("TZ", "UTC").env("MTOOLS_SKIP_CHECK", "1");
    cmd.args(["-s", "-m", "-i"]).arg(&img);
    for e in std::fs::read_dir(src).unwrap() {
        cmd.arg(e.unwrap().path());
    }
    cmd.arg("::/");
    run(&mut cmd);
    img
}

fn open_raw(img: &Path) -> FatFs {
    let dev: Arc<dyn BlockDev> = Arc::new(ImageDev::open(img, None).unwrap());
    FatFs::open(dev).unwrap()
}

/// mdir -b: every path, directories with a trailing '/'.
fn mdir_paths(img: &Path) -> Vec<String> {
    let out = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-b", "-/", "-a", "-i"])
        .arg(img)
        .arg("::/"));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("::"))
        .map(|l| l.trim_end_matches('/').to_string())
        .collect();
    v.sort();
    v
}

/// "bytes free" from mdir's summary.
fn mdir_free(img: &Path) -> u64 {
    let out = run(Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i"])
        .arg(img)
        .arg("::/"));
    let line = out.lines().find(|l| l.contains("bytes free")).unwrap();
    line.replace("bytes free", "")
        .replace([' ', '\u{a0}'], "")
        .parse()
        .unwrap()
}

fn check_against_source(fs: &FatFs, img: &Path, src: &Path) {
    let ours = tree::walk(fs);
    let host = tree::host_tree(src);
    tree::assert_same_content(&ours, &host);
    let mut paths: Vec<String> = ours.keys().cloned().collect();
    paths.sort();
    assert_eq!(paths, mdir_paths(img), "listing differs from mdir's");
    for (p, (st, c)) in &ours {
        let md = &host[p].0;
        let (want_mode, nlink) = match c {
            Content::Dir => (0o040755, None),
            _ => (0o100755, Some(1)),
        };
        assert_eq!(st.mode, want_mode, "{p}: mode");
        if let Some(n) = nlink {
            assert_eq!(st.nlink, n, "{p}: nlink");
        }
        assert_eq!((st.uid, st.gid), (0, 0));
        if let Content::File(d) = c {
            assert_eq!(st.size, d.len() as u64, "{p}: size");
            let cs = fs.geometry().cluster_size as u64;
            assert_eq!(st.blocks, st.size.div_ceil(cs) * cs / 512, "{p}: blocks");
            // FAT keeps even seconds.
            use std::os::unix::fs::MetadataExt;
            assert_eq!(st.mtime.sec, md.mtime() & !1, "{p}: mtime");
        }
        assert!(st.ino > 1);
    }
    let root = fs.stat(1).unwrap();
    assert_eq!(root.kind, FileType::Directory);
    // Directory links as the kernel counts them: 2 + subdirectories.
    let subdirs = |dir: &str| {
        host.iter()
            .filter(|(p, (_, c))| {
                *c == Content::Dir && p.rsplit_once('/').map(|x| x.0) == Some(dir)
            })
            .count() as u64
    };
    assert_eq!(root.nlink, 2 + subdirs(""));
    let sub = fs.lookup(1, b"Sub").unwrap().unwrap();
    assert_eq!(fs.stat(sub.ino).unwrap().nlink, 2 + subdirs("/Sub"));
    assert_eq!(subdirs("/Sub"), 1);
    // Case-insensitive lookup, as the vfat driver matches.
    assert_eq!(
        fs.lookup(1, b"README.TXT").unwrap().unwrap().name,
        b"Readme.txt"
    );
    assert!(fs.lookup(1, b"nothere").unwrap().is_none());
    let info = fs.info();
    assert_eq!(info.kind, "vfat");
    assert_eq!(info.label.as_deref(), Some("MYLABEL"));
    assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
    let blkid = run(Command::new("blkid")
        .args(["-p", "-s", "UUID", "-o", "value"])
        .arg(img));
    assert_eq!(blkid.trim(), "1234-ABCD");
    let sf = fs.statfs().unwrap();
    assert_eq!(
        sf.bfree * sf.bsize,
        mdir_free(img),
        "free space differs from mdir's"
    );
    assert!(sf.bfree < sf.blocks);
}

#[test]
fn fat12_matches_source_and_mdir() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path(), 3 << 20);
    let img = make_image(t.path(), 12, 8, &src, &[]);
    let fs = open_raw(&img);
    assert_eq!(fs.geometry().kind, FatKind::Fat12);
    check_against_source(&fs, &img, &src);
}

#[test]
fn fat16_matches_source_and_mdir() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path(), 4 << 20);
    let img = make_image(t.path(), 16, 16, &src, &[]);
    let fs = open_raw(&img);
    assert_eq!(fs.geometry().kind, FatKind::Fat16);
    check_against_source(&fs, &img, &src);
}

#[test]
fn fat32_matches_source_and_mdir_with_a_big_directory() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path(), 5 << 20);
    let many = src.join("Many Files");
    std::fs::create_dir(&many).unwrap();
    // Names that differ in their first characters: mtools' short-name mangling is slow
    // when thousands of names share a prefix.
    for i in 1000..2100 {
        std::fs::write(
            many.join(format!("{i} file with a long name.txt")),
            i.to_string(),
        )
        .unwrap();
    }
    let img = make_image(t.path(), 32, 40, &src, &["-s", "1"]);
    let fs = open_raw(&img);
    assert_eq!(fs.geometry().kind, FatKind::Fat32);
    let dir = fs.lookup(1, b"Many Files").unwrap().unwrap();
    let entries = fs.read_dir(dir.ino).unwrap();
    assert_eq!(entries.len(), 1100);
    // 1102 slots of 32 bytes over 512-byte clusters: a long chain.
    assert!(fs.stat(dir.ino).unwrap().size >= 1100 * 32 * 3);
    check_against_source(&fs, &img, &src);
}

#[test]
fn read_only_attribute_and_volume_label_entry() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path(), 1000);
    let img = make_image(t.path(), 12, 2, &src, &[]);
    run(Command::new("mattrib")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i"])
        .arg(&img)
        .args(["+r", "::/Readme.txt"]));
    // A new label in the root directory entry only: blkid (and we) prefer it.
    run(Command::new("mlabel")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i"])
        .arg(&img)
        .args(["-N", "0000ffff", "::OTHER"]));
    let fs = open_raw(&img);
    let e = fs.lookup(1, b"Readme.txt").unwrap().unwrap();
    assert_eq!(fs.stat(e.ino).unwrap().mode, 0o100555);
    let blkid = run(Command::new("blkid")
        .args(["-p", "-s", "LABEL", "-o", "value"])
        .arg(&img));
    assert_eq!(fs.info().label.as_deref(), Some(blkid.trim()));
    assert_eq!(fs.info().uuid.as_deref(), Some("0000-FFFF"));
}

#[test]
fn qcow2_image_through_the_block_layer() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path(), 1 << 20);
    let img = make_image(t.path(), 16, 16, &src, &[]);
    let q = t.path().join("fat.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&img)
        .arg(&q));
    let dev: Arc<dyn BlockDev> = Arc::new(ImageDev::open(&q, None).unwrap());
    let fs = fs::open(dev, "vfat").unwrap();
    tree::assert_same_content(&tree::walk(&*fs), &tree::host_tree(&src));
    assert_eq!(fs.info().label.as_deref(), Some("MYLABEL"));
}

// ---- hostile images ----

fn fat16_image(t: &Path) -> (Vec<u8>, PathBuf) {
    let src = source(t, 200_000);
    let img = make_image(t, 16, 16, &src, &[]);
    (std::fs::read(&img).unwrap(), src)
}

fn open_mem(data: Vec<u8>) -> virtkit_guest::Result<FatFs> {
    FatFs::open(Arc::new(MemDev(data)))
}

fn err_contains<T>(r: virtkit_guest::Result<T>, what: &str) {
    match r {
        Ok(_) => panic!("expected an error mentioning {what:?}"),
        Err(e) => assert!(e.to_string().contains(what), "{e} (wanted {what:?})"),
    }
}

/// Device offset of a root entry's short slot (its inode number is that / 32).
fn entry(fs: &FatFs, name: &[u8]) -> usize {
    fs.lookup(1, name).unwrap().unwrap().ino as usize * 32
}

fn first_cluster(data: &[u8], off: usize) -> u32 {
    u16::from_le_bytes([data[off + 26], data[off + 27]]) as u32
}

#[test]
fn cluster_chain_loop_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let (mut data, _) = fat16_image(t.path());
    let fs = open_mem(data.clone()).unwrap();
    let g = fs.geometry().clone();
    let off = entry(&fs, b"big.bin");
    let c = first_cluster(&data, off);
    // The file's third cluster points back to its first.
    let third = {
        let mut c2 = c;
        for _ in 0..2 {
            let o = g.fat_offset as usize + c2 as usize * 2;
            c2 = u16::from_le_bytes([data[o], data[o + 1]]) as u32;
        }
        c2
    };
    let o = g.fat_offset as usize + third as usize * 2;
    data[o..o + 2].copy_from_slice(&(c as u16).to_le_bytes());
    let fs = open_mem(data).unwrap();
    let e = fs.lookup(1, b"big.bin").unwrap().unwrap();
    let mut buf = vec![0u8; 4096];
    err_contains(fs.read(e.ino, 0, &mut buf), "loop");
}

#[test]
fn directory_chain_loop_and_cluster_past_the_end_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let (data, _) = fat16_image(t.path());
    let fs = open_mem(data.clone()).unwrap();
    let g = fs.geometry().clone();

    // A directory whose cluster points to itself.
    let mut d = data.clone();
    let off = entry(&fs, b"Sub");
    let c = first_cluster(&d, off);
    let o = g.fat_offset as usize + c as usize * 2;
    d[o..o + 2].copy_from_slice(&(c as u16).to_le_bytes());
    let bad = open_mem(d).unwrap();
    let sub = bad.lookup(1, b"Sub").unwrap().unwrap();
    err_contains(bad.read_dir(sub.ino), "twice");
    tree::walk_hostile(&bad);

    // A file starting past the last cluster.
    let mut d = data.clone();
    let off = entry(&fs, b"big.bin");
    d[off + 26..off + 28].copy_from_slice(&0xFFF0u16.to_le_bytes());
    let bad = open_mem(d).unwrap();
    let e = bad.lookup(1, b"big.bin").unwrap().unwrap();
    err_contains(bad.read(e.ino, 0, &mut [0u8; 512]), "out of range");

    // A chain running into a free cluster.
    let mut d = data;
    let c = first_cluster(&d, off);
    let o = g.fat_offset as usize + c as usize * 2;
    d[o..o + 2].copy_from_slice(&0u16.to_le_bytes());
    let bad = open_mem(d).unwrap();
    let e = bad.lookup(1, b"big.bin").unwrap().unwrap();
    err_contains(bad.read(e.ino, 0, &mut [0u8; 512]), "free cluster");
}

#[test]
fn hostile_boot_sectors_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let (data, _) = fat16_image(t.path());
    let cases: &[(usize, &[u8], &str)] = &[
        (13, &[0], "sectors per cluster"),
        (13, &[3], "sectors per cluster"),
        (11, &[0, 0], "bytes per sector"),
        (11, &[0, 0x20], "bytes per sector"),
        (16, &[0], "no FAT"),
        (14, &[0, 0], "reserved"),
        // 16-bit total sectors zero and a 32-bit count far past the device.
        (19, &[0, 0], "do not fit"),
        (22, &[0xFF, 0xFF], "no room"),
    ];
    for (off, bytes, what) in cases {
        let mut d = data.clone();
        d[*off..off + bytes.len()].copy_from_slice(bytes);
        if *off == 19 {
            d[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        err_contains(open_mem(d), what);
    }
    err_contains(open_mem(vec![0u8; 100]), "smaller");
}

#[test]
fn mutated_images_never_panic_or_hang() {
    let t = tempfile::tempdir().unwrap();
    let src = source(t.path(), 20_000);
    for (bits, mib) in [(12u32, 1u64), (32, 34)] {
        let img = make_image(t.path(), bits, mib, &src, &["-s", "1"]);
        let data = std::fs::read(&img).unwrap();
        let fs = open_mem(data.clone()).unwrap();
        let g = fs.geometry().clone();
        // Metadata: boot sector, FAT, root directory and the first data clusters.
        let meta = (g.data_offset as usize + 64 * 512).min(data.len());
        for (i, (at, x)) in tree::mutations(bits as u64, 300, meta)
            .into_iter()
            .enumerate()
        {
            let mut d = data.clone();
            d[at] ^= x;
            // Every fourth case several bytes at once.
            if i % 4 == 0 {
                for k in 1..8 {
                    let j = (at + k * 37) % meta;
                    d[j] ^= x;
                }
            }
            if let Ok(fs) = open_mem(d) {
                tree::walk_hostile(&fs);
            }
        }
    }
}
