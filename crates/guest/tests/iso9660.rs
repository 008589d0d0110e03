//! ISO 9660 reader against images made by xorriso (as mkisofs): Rock Ridge + Joliet, Rock
//! Ridge only, Joliet only, plain level 1; names, modes, owners, times, symlinks, devices
//! and contents compared with the source tree and with xorriso's own listing; label and
//! UUID with blkid; a qcow2 conversion; corrupted images.

mod tree;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tree::{run, Content};
use virtkit_guest::dev::{BlockDev, ImageDev, MemDev};
use virtkit_guest::fs::iso9660::{IsoFs, Names};
use virtkit_guest::fs::{self, FileType, Filesystem};

const LONG: &str =
    "a long name that goes on past sixty-four characters, which Joliet needs -joliet-long for.txt";

/// Files and directories every variant can hold.
fn plain_source(dir: &Path, big: usize) -> PathBuf {
    let src = dir.join("src");
    let w = |p: &str, data: &[u8]| {
        let f = src.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    };
    w("Readme.txt", b"mixed case\n");
    w("UPPER.TXT", b"upper\n");
    w("noext", b"no extension");
    w("empty", b"");
    w(LONG, b"long");
    w("ünïcödé.txt", "non-ASCII".as_bytes());
    w("Sub/inner file.dat", &tree::random_bytes(5000, 3));
    w("d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/deep.txt", b"deep\n");
    w("big.bin", &tree::random_bytes(big, 11));
    std::fs::create_dir_all(src.join("emptydir")).unwrap();
    src
}

/// Plus what only Rock Ridge can hold: symlinks, a fifo, a device, modes and owners.
fn rock_source(dir: &Path, big: usize) -> PathBuf {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let src = plain_source(dir, big);
    symlink("Readme.txt", src.join("rel-link")).unwrap();
    symlink("/etc/passwd", src.join("abs-link")).unwrap();
    symlink("../nowhere/./x", src.join("Sub/dangling")).unwrap();
    run(Command::new("mkfifo").arg(src.join("fifo")));
    let _ = Command::new("mknod")
        .arg(src.join("null"))
        .args(["c", "1", "3"])
        .status();
    let perm = |p: &str, m: u32| {
        std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    perm("Readme.txt", 0o640);
    perm("noext", 0o4755);
    perm("Sub", 0o700);
    chown(src.join("UPPER.TXT"), Some(1234), Some(5678)).unwrap();
    src
}

fn mkisofs(dir: &Path, name: &str, src: &Path, args: &[&str]) -> PathBuf {
    let iso = dir.join(name);
    run(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "MyLabel"])
        .args(args)
        .arg("-o")
        .arg(&iso)
        .arg(src));
    iso
}

fn open_raw(iso: &Path) -> IsoFs {
    let dev: Arc<dyn BlockDev> = Arc::new(ImageDev::open(iso, None).unwrap());
    IsoFs::open(dev).unwrap()
}

/// xorriso's own listing of the tree it reads (Rock Ridge names, or Joliet, or ISO names
/// with `norock`), paths sorted.
fn xorriso_paths(iso: &Path, read_fs: &str) -> Vec<String> {
    let out = run(Command::new("xorriso")
        .args(["-read_fs", read_fs, "-indev"])
        .arg(iso)
        .args(["-find", "/"])
        .stderr(std::process::Stdio::null()));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix('\'')?.strip_suffix('\''))
        .filter(|l| *l != "/")
        .map(|l| l.replace("'\"'\"'", "'"))
        .collect();
    v.sort();
    v
}

fn blkid(iso: &Path, tag: &str) -> String {
    run(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", tag])
        .arg(iso))
    .trim()
    .to_string()
}

fn check_identity(fs: &IsoFs, iso: &Path) {
    let info = fs.info();
    assert_eq!(info.kind, "iso9660");
    assert_eq!(info.label.as_deref(), Some(blkid(iso, "LABEL").as_str()));
    assert_eq!(info.uuid.as_deref(), Some(blkid(iso, "UUID").as_str()));
    let sf = fs.statfs().unwrap();
    assert_eq!(sf.bsize * sf.blocks, std::fs::metadata(iso).unwrap().len());
}

fn check_rock(fs: &IsoFs, iso: &Path, src: &Path) {
    assert!(matches!(fs.names(), Names::Rock(_)));
    let ours = tree::walk(fs);
    let host = tree::host_tree(src);
    tree::assert_same_content(&ours, &host);
    let paths: Vec<String> = ours.keys().cloned().collect();
    assert_eq!(paths, xorriso_paths(iso, "any"));
    for (p, (st, c)) in &ours {
        let md = &host[p].0;
        assert_eq!(st.mode, md.mode(), "{p}: mode");
        assert_eq!((st.uid, st.gid), (md.uid(), md.gid()), "{p}: owner");
        if !matches!(c, Content::Dir) {
            assert_eq!(st.mtime.sec, md.mtime(), "{p}: mtime");
            // (Reading the source to build the image may have moved its atime since.)
            assert!(st.atime.sec <= md.atime(), "{p}: atime");
        }
        match c {
            Content::File(d) => assert_eq!(st.size, d.len() as u64),
            Content::Link(t) => assert_eq!(st.size, t.len() as u64),
            Content::Other(FileType::CharDevice) => assert_eq!(st.rdev, md.rdev(), "{p}: rdev"),
            _ => {}
        }
    }
    assert_eq!(
        fs.readlink(fs.lookup(fs.root(), b"abs-link").unwrap().unwrap().ino)
            .unwrap(),
        b"/etc/passwd"
    );
    check_identity(fs, iso);
}

#[test]
fn rock_ridge_and_joliet_shows_rock_ridge() {
    let t = tempfile::tempdir().unwrap();
    let src = rock_source(t.path(), 3 << 20);
    let iso = mkisofs(t.path(), "rj.iso", &src, &["-R", "-J", "-joliet-long"]);
    let fs = open_raw(&iso);
    check_rock(&fs, &iso, &src);
}

#[test]
fn rock_ridge_only() {
    let t = tempfile::tempdir().unwrap();
    let src = rock_source(t.path(), 100_000);
    let iso = mkisofs(t.path(), "r.iso", &src, &["-R"]);
    let fs = open_raw(&iso);
    check_rock(&fs, &iso, &src);
}

#[test]
fn relocated_deep_directories_appear_where_they_belong() {
    let t = tempfile::tempdir().unwrap();
    let src = rock_source(t.path(), 1000);
    let iso = t.path().join("deep.iso");
    run(Command::new("xorriso")
        .args(["-compliance", "deep_paths_off", "-rr_reloc_dir", "rr_moved"])
        .args(["-as", "mkisofs", "-quiet", "-R", "-o"])
        .arg(&iso)
        .arg(&src));
    let fs = open_raw(&iso);
    // libisofs marks the relocation directory itself RE too: hidden, as the kernel hides it.
    let ours = tree::walk(&fs);
    assert!(!ours.keys().any(|k| k.to_lowercase().contains("rr_moved")));
    tree::assert_same_content(&ours, &tree::host_tree(&src));
    let paths: Vec<String> = ours.keys().cloned().collect();
    assert_eq!(paths, xorriso_paths(&iso, "any"));
    // The placeholder's stat is the relocated directory's; the image really relocated.
    assert!(std::fs::read(&iso)
        .unwrap()
        .windows(4)
        .any(|w| w == b"CL\x0c\x01"));
    let p = "/d1/d2/d3/d4/d5/d6/d7/d8";
    let host = tree::host_tree(&src);
    assert_eq!(ours[p].0.mode, host[p].0.mode());
}

#[test]
fn joliet_only_keeps_names_and_shows_mode_0555() {
    let t = tempfile::tempdir().unwrap();
    let src = plain_source(t.path(), 300_000);
    let iso = mkisofs(t.path(), "j.iso", &src, &["--norock", "-J", "-joliet-long"]);
    let fs = open_raw(&iso);
    assert_eq!(fs.names(), Names::Joliet);
    let ours = tree::walk(&fs);
    tree::assert_same_content(&ours, &tree::host_tree(&src));
    let paths: Vec<String> = ours.keys().cloned().collect();
    assert_eq!(paths, xorriso_paths(&iso, "any"));
    for (p, (st, c)) in &ours {
        let want = if *c == Content::Dir {
            0o040555
        } else {
            0o100555
        };
        assert_eq!((st.mode, st.nlink, st.uid), (want, 1, 0), "{p}");
    }
    // Joliet lookups are case-insensitive (the kernel's check=relaxed there).
    assert!(fs.lookup(fs.root(), b"README.TXT").unwrap().is_some());
    check_identity(&fs, &iso);
}

#[test]
fn plain_level_1_names_are_mapped_like_linux() {
    let t = tempfile::tempdir().unwrap();
    let src = plain_source(t.path(), 10_000);
    let iso = mkisofs(t.path(), "p.iso", &src, &["--norock", "-iso-level", "1"]);
    let fs = open_raw(&iso);
    assert_eq!(fs.names(), Names::Plain);
    let ours = tree::walk(&fs);
    let paths: Vec<String> = ours.keys().cloned().collect();
    // xorriso shows the ISO names without ";1"; Linux (map=normal) lower-cases them.
    let mut theirs: Vec<String> = xorriso_paths(&iso, "norock")
        .into_iter()
        .map(|p| p.to_lowercase())
        .collect();
    theirs.sort();
    assert_eq!(paths, theirs);
    let host = tree::host_tree(&src);
    for (p, c) in [
        ("/readme.txt", "/Readme.txt"),
        ("/sub/inner_fi.dat", "/Sub/inner file.dat"),
    ] {
        assert!(ours[p].1 == host[c].1, "{p}");
    }
    check_identity(&fs, &iso);
}

#[test]
fn qcow2_image_through_the_block_layer() {
    let t = tempfile::tempdir().unwrap();
    let src = rock_source(t.path(), 200_000);
    let iso = mkisofs(t.path(), "rj.iso", &src, &["-R", "-J", "-joliet-long"]);
    let q = t.path().join("iso.qcow2");
    run(Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&iso)
        .arg(&q));
    let dev: Arc<dyn BlockDev> = Arc::new(ImageDev::open(&q, None).unwrap());
    let fs = fs::open(dev, "iso9660").unwrap();
    tree::assert_same_content(&tree::walk(&*fs), &tree::host_tree(&src));
    assert_eq!(fs.info().label.as_deref(), Some("MyLabel"));
}

/// xorriso splits only files of 4 GiB and more; two adjacent records made into the two
/// sections of one file (same identifier, the first flagged multi-extent) stand in for one.
#[test]
fn multi_extent_file_reads_as_one() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let a = tree::random_bytes(5000, 1);
    let b = tree::random_bytes(7000, 2);
    std::fs::write(src.join("PARTA.BIN"), &a).unwrap();
    std::fs::write(src.join("PARTB.BIN"), &b).unwrap();
    let iso = mkisofs(t.path(), "m.iso", &src, &["--norock"]);
    let mut data = std::fs::read(&iso).unwrap();
    let fs = open_mem(data.clone()).unwrap();
    let at = record(&fs, b"parta.bin");
    assert_eq!(&data[at + 33..at + 44], b"PARTA.BIN;1");
    data[at + 33..at + 44].copy_from_slice(b"PARTB.BIN;1");
    data[at + 25] |= 0x80;
    let fs = open_mem(data).unwrap();
    let all = tree::walk(&fs);
    assert_eq!(all.keys().collect::<Vec<_>>(), ["/partb.bin"]);
    let (st, c) = &all["/partb.bin"];
    assert_eq!(st.size, 12000);
    assert!(*c == Content::File([a, b].concat()));
    let mut buf = [0u8; 10];
    assert_eq!(fs.read(st.ino, 4995, &mut buf).unwrap(), 10);
}

// ---- hostile images ----

fn open_mem(data: Vec<u8>) -> virtkit_guest::Result<IsoFs> {
    IsoFs::open(Arc::new(MemDev(data)))
}

fn err_contains<T>(r: virtkit_guest::Result<T>, what: &str) {
    match r {
        Ok(_) => panic!("expected an error mentioning {what:?}"),
        Err(e) => assert!(e.to_string().contains(what), "{e} (wanted {what:?})"),
    }
}

fn small_rock_iso(t: &Path) -> Vec<u8> {
    let src = rock_source(t, 50_000);
    std::fs::read(mkisofs(t, "h.iso", &src, &["-R", "-J"])).unwrap()
}

/// Device offset of a root entry's directory record (its inode number).
fn record(fs: &IsoFs, name: &[u8]) -> usize {
    fs.lookup(fs.root(), name).unwrap().unwrap().ino as usize
}

#[test]
fn bad_records_and_extents_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let data = small_rock_iso(t.path());
    let fs = open_mem(data.clone()).unwrap();
    let root = fs.root();
    let n = fs.read_dir(root).unwrap().len();

    // Length 0: the rest of the sector is padding; entries vanish, nothing breaks.
    let mut d = data.clone();
    let at = record(&fs, b"big.bin");
    d[at] = 0;
    let bad = open_mem(d).unwrap();
    let left = bad.read_dir(root).unwrap().len();
    assert!(left < n && bad.lookup(root, b"big.bin").unwrap().is_none());

    // A name longer than its record.
    let mut d = data.clone();
    d[at + 32] = 250;
    err_contains(open_mem(d).unwrap().read_dir(root), "identifier length");

    // A file extent past the end of the device.
    let mut d = data.clone();
    d[at + 2..at + 6].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    let bad = open_mem(d).unwrap();
    err_contains(
        bad.read(at as u64, 0, &mut [0u8; 4096]),
        "outside the device",
    );

    // A directory extent past the end.
    let mut d = data.clone();
    let sub = record(&fs, b"Sub");
    d[sub + 2..sub + 6].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    err_contains(
        open_mem(d).unwrap().read_dir(sub as u64),
        "outside the device",
    );

    // A directory claiming 4 GiB.
    let mut d = data.clone();
    d[sub + 10..sub + 14].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(open_mem(d).unwrap().read_dir(sub as u64).is_err());

    // No primary descriptor.
    let mut d = data.clone();
    d[16 * 2048 + 1] = b'X';
    err_contains(open_mem(d), "no primary");
    err_contains(open_mem(vec![0u8; 4096]), "no primary");
}

#[test]
fn continuation_area_loop_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let mut data = small_rock_iso(t.path());
    let fs = open_mem(data.clone()).unwrap();
    let at = record(&fs, b"Readme.txt");
    // The system use area: after the 33-byte header, the name and its padding.
    let nl = data[at + 32] as usize;
    let su = at + 33 + nl + (1 - nl % 2);
    let ce = |block: u32, off: u32, len: u32| -> Vec<u8> {
        let mut e = b"CE\x1c\x01".to_vec();
        for v in [block, off, len] {
            e.extend_from_slice(&v.to_le_bytes());
            e.extend_from_slice(&v.to_be_bytes());
        }
        e
    };
    // A continuation area in the (unused) system area, sector 1, continuing to itself.
    data[2048..2048 + 28].copy_from_slice(&ce(1, 0, 28));
    // Replace the record's first SUSP entry (at least 28 bytes long) with a CE to it.
    let first_len = data[su + 2] as usize;
    assert!(first_len >= 28, "{:?}", &data[su..su + 4]);
    data[su..su + 28].copy_from_slice(&ce(1, 0, 28));
    if first_len > 28 {
        // Keep the rest of the old entry from parsing as an entry.
        data[su + 28..su + first_len].fill(0);
    }
    let bad = open_mem(data).unwrap();
    err_contains(bad.stat(at as u64), "continuation");
    err_contains(bad.read_dir(bad.root()), "continuation");
}

#[test]
fn mutated_images_never_panic_or_hang() {
    let t = tempfile::tempdir().unwrap();
    let src = rock_source(t.path(), 2000);
    for (i, args) in [&["-R", "-J"][..], &["--norock", "-J"][..]]
        .iter()
        .enumerate()
    {
        let iso = mkisofs(t.path(), &format!("m{i}.iso"), &src, args);
        let data = std::fs::read(&iso).unwrap();
        // Descriptors and directories (the file data after them is of no interest).
        let meta = data.len().min(64 * 2048);
        for (k, (at, x)) in tree::mutations(i as u64 + 5, 300, meta - 16 * 2048)
            .into_iter()
            .enumerate()
        {
            let mut d = data.clone();
            let at = at + 16 * 2048;
            d[at] ^= x;
            if k % 4 == 0 {
                for j in 1..8 {
                    let p = 16 * 2048 + (at + j * 33) % (meta - 16 * 2048);
                    d[p] ^= x;
                }
            }
            if let Ok(fs) = open_mem(d) {
                tree::walk_hostile(&fs);
            }
        }
    }
}
