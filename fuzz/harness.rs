//! Fuzz harness logic shared by the `cargo fuzz` targets (fuzz/fuzz_targets/*.rs) and by the
//! stable regression test (crates/image/tests/fuzz_regressions.rs), which both include this
//! file as a module. One function per target; each takes the raw fuzzer input.
//!
//! Contract checked: no panic, no hang, no unbounded allocation. Errors are fine. The work per
//! input is bounded whatever the image claims (virtual sizes up to 2^63, huge tables...): a fixed
//! number of sampled reads and block-status steps.
//!
//! The image targets write the input to a private file (tmpfs when available, one per process
//! and thread), open it, and unlink it right away; nothing else on the host is touched.

#![allow(dead_code)]

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use virtkit_image::{BlockDriver, Format, OpenOptions, Repair};

/// `virtkit_ovf::descriptor::parse` and `manifest::parse` on the input as text; what parses
/// is written back out (descriptor) and must parse again.
pub fn ovf_descriptor(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = virtkit_ovf::manifest::parse(text);
    if let Ok(env) = virtkit_ovf::descriptor::parse(text) {
        let spec = virtkit_ovf::descriptor::ExportSpec {
            name: env
                .systems
                .first()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
            cpus: 1,
            memory_mib: 1,
            disks: env
                .disks
                .iter()
                .map(|d| virtkit_ovf::descriptor::ExportDisk {
                    href: "d.vmdk".into(),
                    file_size: 0,
                    capacity: d.capacity,
                    populated_size: d.populated_size,
                })
                .collect(),
        };
        let back = virtkit_ovf::descriptor::write(&spec);
        virtkit_ovf::descriptor::parse(&back).expect("our own descriptor parses");
    }
}

/// The input as an OVA file: index it, read the small files it holds, parse what looks like
/// a descriptor or a manifest. Import itself (extraction, conversion) is not run: it writes.
pub fn ova_package(data: &[u8]) {
    let path = private_path("ova");
    std::fs::write(&path, data).expect("write the fuzz input to a private file");
    let _unlink = Unlink(path.clone());
    let Ok(pkg) = virtkit_ovf::archive::Package::open(&path) else {
        return;
    };
    for e in &pkg.entries {
        if let Ok(b) = pkg.read_small(e, 1 << 20) {
            if let Ok(t) = std::str::from_utf8(&b) {
                let _ = virtkit_ovf::manifest::parse(t);
                let _ = virtkit_ovf::descriptor::parse(t);
            }
        }
    }
}

/// Reads sampled across the virtual size per input.
const MAX_READS: u64 = 64;
/// Block-status steps of the walk from offset 0.
const MAX_STATUS_STEPS: usize = 256;
/// Longest single read.
const MAX_READ_LEN: u64 = 64 << 10;

/// `virtkit_image::qcow2::header::Header::parse`, then serialization of what was accepted.
pub fn qcow2_header(data: &[u8]) {
    use virtkit_image::qcow2::header::Header;
    // `first` is the file's first 2 MiB, `file_len` the file's length: the input is the file.
    if let Ok(h) = Header::parse(data, data.len() as u64) {
        let _ = h.cluster_size();
        let _ = h.bitmaps_ext();
        let _ = h.serialize();
    }
}

/// `virtkit_image::size::parse`, with a round trip of what it accepts.
pub fn size_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(v) = virtkit_image::size::parse(s) {
        let _ = virtkit_image::size::human(v);
        let back = virtkit_image::size::parse(&v.to_string());
        assert_eq!(
            back.ok(),
            Some(v),
            "size {v} from {s:?} does not round-trip"
        );
    }
}

/// Read-only open of the input as qcow2, then info, snapshots, block status, sampled reads
/// and check without repair.
pub fn qcow2_image(data: &[u8]) {
    let Some(img) = open_private(data, Format::Qcow2, "ro", false) else {
        return;
    };
    read_paths(&*img);
    let _ = img.check(Repair::None);
}

/// Writable open of a private copy, a few small writes on hostile metadata, a snapshot,
/// then check with full repair and the read paths again.
pub fn qcow2_write(data: &[u8]) {
    let Some(img) = open_private(data, Format::Qcow2, "rw", true) else {
        return;
    };
    write_paths(&*img);
}

/// Any other format (vmdk, vdi, vpc, vhdx, qed, parallels): the read paths on a read-only
/// open, check without repair, then the write paths on a writable open of a private copy.
pub fn format_image(fmt: Format, data: &[u8]) {
    if let Some(img) = open_private(data, fmt, "ro", false) {
        read_paths(&*img);
        let _ = img.check(Repair::None);
    }
    if let Some(img) = open_private(data, fmt, "rw", true) {
        write_paths(&*img);
    }
}

/// Small writes (partial, whole-cluster, compressed), zeroes, a discard and a snapshot on
/// hostile metadata, then check with full repair and the read paths again.
fn write_paths(img: &dyn BlockDriver) {
    let size = img.virtual_size();
    let cs = img.cluster_size().unwrap_or(512).clamp(512, 2 << 20);
    let pattern: Vec<u8> = (0..cs + 1024).map(|i| (i % 251) as u8 + 1).collect();
    if size > 0 {
        // Unaligned write straddling the first cluster boundary (copy-on-write of partial
        // clusters), then a whole-cluster write in the middle of the disk.
        let off = (cs - 100).min(size - 1);
        let len = 1024u64.min(size - off) as usize;
        let _ = img.write_at(&pattern[..len], off);
        let mid = (size / 2) / cs * cs;
        if mid + cs <= size {
            let _ = img.write_at(&pattern[..cs as usize], mid);
            let _ = img.write_compressed(mid, &pattern[..cs as usize]);
        }
        let last = (size - 1) / cs * cs;
        let _ = img.write_zeroes(last, size - last, true);
        let _ = img.discard(0, (2 * cs).min(size));
    }
    let _ = img.snapshot_create("fuzz");
    let _ = img.write_at(&pattern[..512.min(size) as usize], 0);
    let _ = img.snapshot_delete("fuzz");
    let _ = img.check(Repair::All);
    let _ = img.check(Repair::None);
    read_paths(img);
}

/// info, snapshots, a bounded block-status walk and bounded sampled reads.
fn read_paths(img: &dyn BlockDriver) {
    let _ = img.info();
    let _ = img.snapshots();
    let size = img.virtual_size();
    let cs = img.cluster_size().unwrap_or(512).clamp(512, 2 << 20);

    let mut off = 0u64;
    for _ in 0..MAX_STATUS_STEPS {
        if off >= size {
            break;
        }
        match virtkit_image::map::chain_status(img, off, size - off) {
            Ok(e) => {
                assert!(
                    e.length >= 1 && e.length <= size - off,
                    "block status at {off} returned length {} for a query of {}",
                    e.length,
                    size - off
                );
                off += e.length;
            }
            Err(_) => break,
        }
    }

    let mut buf = vec![0u8; MAX_READ_LEN as usize];
    for i in 0..MAX_READS {
        // The first clusters one by one, then points spread over the whole disk; odd samples
        // unaligned and crossing a cluster boundary.
        let base = if i < 8 { i * cs } else { size / MAX_READS * i };
        let off = if i % 2 == 1 {
            base.saturating_add((i * 4097) % cs)
        } else {
            base
        };
        if off >= size {
            continue;
        }
        let len = (cs + 513).min(size - off).min(MAX_READ_LEN);
        let _ = img.read_at(&mut buf[..len as usize], off);
        if let Ok(st) = img.block_status(off, len) {
            assert!(
                st.len >= 1 && st.len <= len,
                "block status at {off} returned length {} for a query of {len}",
                st.len
            );
        }
    }
}

/// Writes the input to this thread's private file, opens it as `fmt` without its backing
/// chain, and unlinks it (the open image keeps the inode). Extent files a descriptor names
/// are looked up next to it in the private directory, where none exist.
fn open_private(
    data: &[u8],
    fmt: Format,
    tag: &str,
    writable: bool,
) -> Option<Box<dyn BlockDriver>> {
    let path = private_path(tag);
    std::fs::write(&path, data).expect("write the fuzz input to a private file");
    let opts = OpenOptions {
        format: Some(fmt),
        writable,
        no_backing: true,
        // Other options at their defaults (a dirty image is repaired on a writable open).
        ..Default::default()
    };
    // Unlinked however open ends, a panic included.
    let _unlink = Unlink(path.clone());
    virtkit_image::open(&path, &opts).ok()
}

struct Unlink(PathBuf);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn private_path(tag: &str) -> PathBuf {
    static NEXT_THREAD: AtomicU64 = AtomicU64::new(0);
    thread_local!(static THREAD: Cell<Option<u64>> = const { Cell::new(None) });
    let t = THREAD.with(|c| {
        let v = c
            .get()
            .unwrap_or_else(|| NEXT_THREAD.fetch_add(1, Ordering::Relaxed));
        c.set(Some(v));
        v
    });
    let shm = PathBuf::from("/dev/shm");
    let dir = if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("virtkit-fuzz-{}-{t}-{tag}.img", std::process::id()))
}

/// vmdk: the generic image paths on the input, then the input as the extent file of each
/// sparse kind a descriptor can name (COWD and seSparse are only reachable that way).
/// Absolute extent paths are refused so that no input can reach host files.
pub fn vmdk_image(data: &[u8]) {
    virtkit_image::vmdk::allow_absolute_extents(false);
    format_image(Format::Vmdk, data);
    let dir = private_path("vmdk-extents");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let _rm = RemoveDir(dir.clone());
    let desc = dir.join("d.vmdk");
    let ext = dir.join("e");
    for (create_type, kind) in [
        ("twoGbMaxExtentSparse", "SPARSE"),
        ("vmfsSparse", "VMFSSPARSE"),
        ("seSparse", "SESPARSE"),
    ] {
        let text = format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\nRW 2048 {kind} \"e\"\n"
        );
        for writable in [false, true] {
            if std::fs::write(&desc, &text).is_err() || std::fs::write(&ext, data).is_err() {
                return;
            }
            let opts = OpenOptions {
                format: Some(Format::Vmdk),
                writable,
                no_backing: true,
                ..Default::default()
            };
            if let Ok(img) = virtkit_image::open(&desc, &opts) {
                if writable {
                    write_paths(&*img);
                } else {
                    read_paths(&*img);
                    let _ = img.check(Repair::None);
                }
            }
        }
    }
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The vmdk descriptor parser alone: extent lines, createType, CIDs (read and rewritten),
/// the parent hint and the probe, on arbitrary text.
pub fn vmdk_descriptor(data: &[u8]) {
    use virtkit_image::vmdk::descriptor as d;
    for line in d::lines(data) {
        if let d::Line::Extent(x) = d::parse_extent_line(line) {
            assert!(x.sectors > 0 && !x.file.is_empty() && x.file.len() <= 511);
        }
    }
    let _ = d::description(data, "createType", 128);
    let mut buf = vec![0u8; d::DESC_SIZE];
    let n = data.len().min(d::DESC_SIZE);
    buf[..n].copy_from_slice(&data[..n]);
    let _ = d::read_cid(&buf, false);
    let _ = d::read_cid(&buf, true);
    let _ = d::parent_hint(&buf);
    if d::write_cid(&mut buf, 0x1234_5678).is_some() {
        let _ = d::read_cid(&buf, false);
    }
    let head = &data[..data.len().min(512)];
    let _ = virtkit_image::vmdk::probe(head, std::path::Path::new("x"));
}

/// Reads sampled per guest device (start, middle, end) and their length.
const GUEST_SAMPLES: usize = 64;
const GUEST_READ: usize = 4096;

/// Bounded reads of a device: its first, middle and last 4 KiB.
fn guest_read(dev: &dyn virtkit_guest::BlockDev) {
    let size = dev.size();
    let mut buf = vec![0u8; GUEST_READ];
    for off in [0, size / 2, size.saturating_sub(GUEST_READ as u64)] {
        let len = (GUEST_READ as u64).min(size - off.min(size)) as usize;
        let _ = dev.read_at(&mut buf[..len], off);
    }
    let _ = dev.read_at(&mut buf[..1], size);
}

/// Everything a Guest lists, and bounded reads of its devices.
fn guest_walk(g: &virtkit_guest::Guest) {
    let _ = g.vgs();
    let _ = g.pvs();
    let mut names = g.devices();
    names.extend(g.partitions().into_iter().map(|p| p.name));
    names.extend(g.lvs().into_iter().map(|l| l.path));
    for n in names.iter().take(GUEST_SAMPLES) {
        let _ = g.canonical_name(n);
        if let Ok(d) = g.device(n) {
            guest_read(&*d);
        }
    }
    let _ = g.filesystems();
    for bad in ["/dev/hda1", "/dev/mapper/a--b-c", "/dev/sdzz9", "/dev/x/y"] {
        let _ = g.device(bad);
    }
}

/// The input as a disk: its partition table, then a Guest over it (partitions, PVs on them).
pub fn guest_partitions(data: &[u8]) {
    use std::sync::Arc;
    let dev: Arc<dyn virtkit_guest::BlockDev> = Arc::new(virtkit_guest::dev::MemDev(data.to_vec()));
    if let Ok(Some(t)) = virtkit_guest::part::read(&*dev) {
        for p in &t.partitions {
            assert!(p.size > 0 && p.end == p.start + p.size - 1);
            assert!(p.number >= 1 && p.number <= 255);
        }
    }
    if let Ok(g) = virtkit_guest::Guest::from_devs(vec![dev]) {
        guest_walk(&g);
    }
}

/// LVM: the metadata text parser and the VG assembly and extent mapping on the input as
/// text (past the checksums, over PVs of patterned bytes), then the input as one PV and as
/// two PVs (its halves), through labels, metadata areas and checksums.
pub fn guest_lvm(data: &[u8]) {
    use std::sync::Arc;
    use virtkit_guest::lvm::{metadata, Lvm};
    use virtkit_guest::BlockDev;
    if let Ok(root) = metadata::parse(data) {
        let ids: Vec<String> = root
            .sections
            .first()
            .and_then(|vg| vg.section("physical_volumes"))
            .map(|p| {
                p.sections
                    .iter()
                    .filter_map(|s| s.str("id").map(str::to_string))
                    .take(8)
                    .collect()
            })
            .unwrap_or_default();
        let pvs: Vec<(String, String, Arc<dyn BlockDev>)> = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| {
                let bytes: Vec<u8> = (0..256u32 << 10)
                    .map(|x| (x % 251) as u8 ^ i as u8)
                    .collect();
                let d: Arc<dyn BlockDev> = Arc::new(virtkit_guest::dev::MemDev(bytes));
                (id, format!("/dev/sd{}", (b'a' + i as u8) as char), d)
            })
            .collect();
        if let Ok(lvm) = Lvm::from_metadata(data, &pvs) {
            let _ = lvm.vgs();
            let _ = lvm.pvs();
            for lv in lvm.lvs().iter().take(GUEST_SAMPLES) {
                assert_eq!(lv.size % 512, 0);
                if let Some(Ok(d)) = lvm.lv_device(&lv.vg_name, &lv.name) {
                    assert_eq!(d.size(), lv.size);
                    guest_read(&*d);
                }
            }
        }
    }
    let whole: Arc<dyn BlockDev> = Arc::new(virtkit_guest::dev::MemDev(data.to_vec()));
    if let Ok(g) = virtkit_guest::Guest::from_devs(vec![whole]) {
        guest_walk(&g);
    }
    let half = data.len() / 2 / 512 * 512;
    let a: Arc<dyn BlockDev> = Arc::new(virtkit_guest::dev::MemDev(data[..half].to_vec()));
    let b: Arc<dyn BlockDev> = Arc::new(virtkit_guest::dev::MemDev(data[half..].to_vec()));
    if let Ok(g) = virtkit_guest::Guest::from_devs(vec![a, b]) {
        guest_walk(&g);
    }
}

/// blkid-like probing of the input as a device.
pub fn guest_probe(data: &[u8]) {
    let dev = virtkit_guest::dev::MemDev(data.to_vec());
    if let Ok(info) = virtkit_guest::probe::probe(&dev) {
        assert!(!info.kind.is_empty());
    }
}

/// The ext2/3/4 reader on the input as a whole device (virtkit_guest::fs::ext4): open
/// (superblock, journal replay), then a bounded walk from the root: at most 64 directories,
/// 64 entries each, and per entry stat, xattrs, readlink or two reads (the start and far
/// past it), plus statfs.
pub fn guest_ext4(data: &[u8]) {
    use std::sync::Arc;
    use virtkit_guest::dev::{BlockDev, MemDev};
    use virtkit_guest::fs::FileType;
    let dev: Arc<dyn BlockDev> = Arc::new(MemDev(data.to_vec()));
    let Ok(fs) = virtkit_guest::fs::open(dev, "ext4") else {
        return;
    };
    let _ = fs.info();
    let _ = fs.statfs();
    let mut buf = vec![0u8; 16384];
    let mut dirs = vec![fs.root()];
    let mut visited = 0;
    while let Some(d) = dirs.pop() {
        visited += 1;
        if visited > 64 {
            break;
        }
        let _ = fs.stat(d);
        let _ = fs.xattrs(d);
        let _ = fs.lookup(d, b"lost+found");
        let Ok(entries) = fs.read_dir(d) else {
            continue;
        };
        for e in entries.into_iter().take(64) {
            let _ = fs.stat(e.ino);
            let _ = fs.xattrs(e.ino);
            match e.kind {
                FileType::Directory => dirs.push(e.ino),
                FileType::Symlink => {
                    let _ = fs.readlink(e.ino);
                }
                _ => {
                    let _ = fs.read(e.ino, 0, &mut buf);
                    let _ = fs.read(e.ino, 1 << 40, &mut buf[..4096]);
                }
            }
        }
    }
}

/// Entries visited per input by the filesystem targets, and directory depth.
const FS_MAX_ENTRIES: usize = 512;
const FS_MAX_DEPTH: usize = 16;

/// The input as a whole device holding a `kind` filesystem (virtkit_guest::fs::open): info,
/// statfs, then a bounded walk with stat, readlink and reads of every entry. Checks the
/// trait's contract on what comes back (names, read lengths).
/// The NTFS reader (on the `ntfs` crate) on the input: open, walk, stat, read, readlink.
pub fn guest_ntfs(data: &[u8]) {
    guest_fs("ntfs", data);
}

pub fn guest_fs(kind: &str, data: &[u8]) {
    use std::sync::Arc;
    use virtkit_guest::dev::MemDev;
    use virtkit_guest::fs::FileType;
    let Ok(fs) = virtkit_guest::fs::open(Arc::new(MemDev(data.to_vec())), kind) else {
        return;
    };
    let _ = fs.info();
    let _ = fs.statfs();
    let mut buf = vec![0u8; 4096];
    let mut stack = vec![(fs.root(), 0usize)];
    let mut seen = 0usize;
    while let Some((ino, depth)) = stack.pop() {
        let _ = fs.stat(ino);
        let Ok(entries) = fs.read_dir(ino) else {
            continue;
        };
        for e in entries {
            assert!(
                !e.name.is_empty()
                    && e.name != b"."
                    && e.name != b".."
                    && !e.name.contains(&b'/')
                    && !e.name.contains(&0),
                "bad name {:?}",
                e.name
            );
            seen += 1;
            if seen > FS_MAX_ENTRIES {
                return;
            }
            let _ = fs.stat(e.ino);
            let _ = fs.readlink(e.ino);
            let _ = fs.lookup(ino, &e.name);
            for off in [0u64, 5000, 1 << 20] {
                if let Ok(n) = fs.read(e.ino, off, &mut buf) {
                    assert!(n <= buf.len());
                }
            }
            if e.kind == FileType::Directory && depth < FS_MAX_DEPTH {
                stack.push((e.ino, depth + 1));
            }
        }
    }
}

/// A fuzz input as a device: the input's bytes at the start of a 64 MiB device that reads
/// as zeros past them, so that a seed can be the head of a small real filesystem (its
/// superblock, AG headers, inodes and directories) instead of all of it.
struct ZeroTail(Vec<u8>);

const ZERO_TAIL_SIZE: u64 = 64 << 20;

impl virtkit_guest::dev::BlockDev for ZeroTail {
    fn size(&self) -> u64 {
        ZERO_TAIL_SIZE.max(self.0.len() as u64)
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> virtkit_guest::Result<()> {
        virtkit_guest::dev::check_range("fuzz device", self.size(), off, buf.len() as u64)?;
        buf.fill(0);
        let have = self.0.len() as u64;
        if off < have {
            let n = (have - off).min(buf.len() as u64) as usize;
            buf[..n].copy_from_slice(&self.0[off as usize..off as usize + n]);
        }
        Ok(())
    }
}

/// Walks a filesystem with bounded work: at most `budget` entries, depth 4, reads of up to
/// 64 KiB at the start and near the end of files, links, xattrs, lookups, statfs.
fn walk_fs(fs: &dyn virtkit_guest::Filesystem) {
    let _ = fs.info();
    let _ = fs.statfs();
    let mut budget = 256usize;
    let mut stack = vec![(fs.root(), 0u32)];
    let mut buf = vec![0u8; 64 << 10];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for e in entries {
            if budget == 0 {
                return;
            }
            budget -= 1;
            let _ = fs.lookup(dir, &e.name);
            let Ok(st) = fs.stat(e.ino) else { continue };
            let _ = fs.xattrs(e.ino);
            match st.kind {
                virtkit_guest::FileType::Directory if depth < 4 => stack.push((e.ino, depth + 1)),
                virtkit_guest::FileType::Symlink => {
                    let _ = fs.readlink(e.ino);
                }
                virtkit_guest::FileType::Regular => {
                    let _ = fs.read(e.ino, 0, &mut buf);
                    let _ = fs.read(e.ino, st.size.saturating_sub(1000), &mut buf[..4096]);
                }
                _ => {}
            }
        }
    }
}

/// The XFS reader on the input (the head of a device, zeros after it): open, then a
/// bounded walk of everything reachable.
pub fn guest_xfs(data: &[u8]) {
    let dev = std::sync::Arc::new(ZeroTail(data.to_vec()));
    if let Ok(fs) = virtkit_guest::fs::xfs::Xfs::open(dev) {
        walk_fs(&fs);
    }
}

/// The parsers of guest text files behind inspection (os-release, lsb-release,
/// redhat-release, debian_version, fstab, dpkg status): any bytes, lossily as text.
pub fn guest_inspect(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let n = virtkit_guest::inspect::fuzz_parsers(&text);
    assert!(n <= data.len());
}

/// The image JSON parsers of virtkit-oci on the input: OCI image index, manifest and config
/// (diff_ids validated), docker-archive manifest.json and repositories; what parses as a
/// config is converted to a runtime spec. The input as text: passwd/group parsing, User
/// resolution of each line against them, image references normalized and matched.
pub fn oci_image_manifest(data: &[u8]) {
    use virtkit_oci::image::{conversion, manifest, user};
    let _ = manifest::parse_index(data);
    let _ = manifest::parse_manifest(data);
    let _ = manifest::parse_docker_manifest(data);
    let _ = manifest::parse_repositories(data);
    if let Ok((cfg, ids)) = manifest::parse_config(data) {
        assert_eq!(ids.len(), cfg.rootfs().diff_ids().len());
        let u = user::ResolvedUser {
            uid: 1,
            gid: 2,
            additional_gids: vec![3],
            home: None,
        };
        let (spec, _) = conversion::to_spec(
            conversion::base_spec(),
            &cfg,
            &u,
            &conversion::Overrides::default(),
        );
        serde_json::to_vec(&spec).expect("a converted spec serializes");
    }
    let text = String::from_utf8_lossy(data);
    let p = user::parse_passwd(&text);
    let g = user::parse_group(&text);
    for line in text.lines().take(16) {
        let _ = user::resolve(line, Some(&p), Some(&g));
        let n = manifest::normalize_ref(line);
        let _ = manifest::ref_matches(line, &n);
    }
}

/// The layer unpacker on the input as a layer tar, into a private directory (removed
/// afterwards), with small bounds; then the input as a whole image archive (docker-archive or
/// OCI layout tar): indexing, manifest choice, blob verification, decompression (gzip, zstd),
/// unpacking into a private store and config conversion, without mounting.
pub fn oci_image_tar(data: &[u8]) {
    use virtkit_oci::image;
    let dir = private_path("oci-image");
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(dir.join("layer")).is_err() {
        return;
    }
    let _rm = RemoveDir(dir.clone());
    let limits = image::UnpackLimits {
        max_entries: 4096,
        max_file_size: 1 << 20,
        max_total_size: 16 << 20,
        max_dir_bytes: 1 << 20,
        ..Default::default()
    };
    let _ = image::unpack_layer(
        &mut &data[..],
        &dir.join("layer"),
        &[] as &[PathBuf],
        &limits,
        "fuzz layer",
    );
    let input = dir.join("input.tar");
    if std::fs::write(&input, data).is_err() {
        return;
    }
    let opts = image::ImportOptions {
        store: dir.join("store"),
        reference: None,
        mount: false,
    };
    let _ = image::import_with_limits(
        &input,
        &dir.join("bundle"),
        &opts,
        &image::Overrides::default(),
        &limits,
    );
}

/// A bundle's config.json as the runtime reads it before forking anything: parse and
/// validate, compile the seccomp profile, parse every mount's options and the propagation
/// mode, and the resources' validation. Also the saved state file's parser.
pub fn oci_config(data: &[u8]) {
    if let Ok(spec) = virtkit_oci::spec::parse(data) {
        if let Some(linux) = spec.linux() {
            if let Some(s) = linux.seccomp() {
                let _ = virtkit_oci::seccomp::compile(s);
            }
            let _ = virtkit_oci::rootfs::propagation_flag(linux.rootfs_propagation().as_deref());
            if let Some(r) = linux.resources() {
                let _ = virtkit_oci::cgroups::resources::validate(r);
            }
        }
        for m in spec.mounts().iter().flatten() {
            let _ = virtkit_oci::rootfs::parse_options(m.options().as_deref().unwrap_or(&[]));
        }
    }
    let _ = serde_json::from_slice::<virtkit_oci::state::Saved>(data);
}

/// The seccomp compiler of the OCI runtime. Only under `cargo fuzz` (cfg `fuzzing`): the
/// stable regression replay in crates/cli includes this file too, and that crate does not
/// link virtkit-oci yet.
pub mod oci {
    #![allow(unexpected_cfgs)]

    /// The input as a `linux.seccomp` object: compiled for a few native architectures; what
    /// compiles must fit the kernel's limit, pass its program checks and run on syscalls
    /// taken from the input (it is never installed).
    #[cfg(fuzzing)]
    pub fn oci_seccomp(data: &[u8]) {
        use virtkit_oci::seccomp;
        let Ok(spec) = serde_json::from_slice::<oci_spec::runtime::LinuxSeccomp>(data) else {
            return;
        };
        for native in [
            "SCMP_ARCH_X86_64",
            "SCMP_ARCH_AARCH64",
            "SCMP_ARCH_S390X",
            "SCMP_ARCH_X86",
        ] {
            let Ok(prog) = seccomp::compile_for_arch(&spec, native) else {
                continue;
            };
            let insns = prog.instructions();
            assert!(insns.len() <= seccomp::bpf::MAX_INSNS);
            seccomp::bpf::verify(insns).expect("a compiled program passes the kernel's checks");
            let word = |i: usize| -> u64 {
                let mut b = [0u8; 8];
                for (k, x) in b.iter_mut().enumerate() {
                    *x = data
                        .get((i * 8 + k) % data.len().max(1))
                        .copied()
                        .unwrap_or(0);
                }
                u64::from_le_bytes(b)
            };
            for i in 0..8 {
                let w = word(i);
                let d = seccomp::SeccompData {
                    nr: (w % 600) as i32,
                    arch: [0xc000_003e, 0x4000_0003, 0xc000_00b7, 0x8000_0016][i % 4],
                    instruction_pointer: 0,
                    args: [w, word(i + 1), word(i + 2), w >> 7, !w, 0],
                };
                prog.evaluate(&d);
            }
        }
    }
}
