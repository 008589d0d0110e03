//! vmdk through the library, with the real qemu-img / qemu-io as the oracle: writes of every
//! shape into every writable subformat, copy-on-write from a parent, zeroed grains, the
//! parent CID check, and images qemu-img cannot create (seSparse, COWD, a VMware-style
//! stream with its footer) built by hand from the format descriptions and read by both.

use std::path::{Path, PathBuf};
use std::process::Command;
use virtkit_image::{BlockDriver, Format, OpenOptions};

fn qemu_img_bin() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "/usr/bin/qemu-img".into())
}
fn qemu_io_bin() -> String {
    std::env::var("QEMU_IO").unwrap_or_else(|_| "/usr/bin/qemu-io".into())
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(prog: &str, args: &[&str]) -> Out {
    let o = Command::new(prog).args(args).output().expect("spawn");
    Out {
        code: o.status.code(),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    }
}

#[track_caller]
fn qemu_img(args: &[&str]) -> Out {
    let o = run(&qemu_img_bin(), args);
    assert_eq!(
        o.code,
        Some(0),
        "qemu-img {args:?} failed:\n{}{}",
        o.stdout,
        o.stderr
    );
    o
}

#[track_caller]
fn qemu_io(path: &Path, cmds: &[&str]) {
    let mut a = vec!["-f", "vmdk"];
    for c in cmds {
        a.push("-c");
        a.push(c);
    }
    let p = path.to_str().unwrap();
    a.push(p);
    let o = run(&qemu_io_bin(), &a);
    assert!(
        o.code == Some(0) && !o.stdout.contains("failed") && !o.stderr.contains("failed"),
        "qemu-io {a:?}:\n{}{}",
        o.stdout,
        o.stderr
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vk-vmdk-")
        .tempdir()
        .unwrap()
}

fn open(path: &Path, writable: bool) -> Box<dyn BlockDriver> {
    virtkit_image::open(
        path,
        &OpenOptions {
            format: Some(Format::Vmdk),
            writable,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A raw file mirroring the expected guest content (sparse where never written).
struct Model {
    path: PathBuf,
    f: std::fs::File,
}

impl Model {
    fn new(dir: &Path, size: u64) -> Model {
        let path = dir.join("expected.raw");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(size).unwrap();
        Model { path, f }
    }
    fn write(&self, data: &[u8], off: u64) {
        use std::os::unix::fs::FileExt;
        self.f.write_all_at(data, off).unwrap();
    }
}

#[track_caller]
fn qemu_identical(img: &Path, model: &Model) {
    let o = run(
        &qemu_img_bin(),
        &["compare", "-f", "raw", "-F", "vmdk", s(&model.path), s(img)],
    );
    assert_eq!(
        o.code,
        Some(0),
        "qemu-img compare: {}{}",
        o.stdout,
        o.stderr
    );
}

#[track_caller]
fn qemu_check_clean(img: &Path) {
    let o = run(&qemu_img_bin(), &["check", s(img)]);
    assert_eq!(o.code, Some(0), "qemu-img check: {}{}", o.stdout, o.stderr);
}

#[track_caller]
fn read_all(img: &dyn BlockDriver) -> Vec<u8> {
    let mut v = vec![0u8; img.virtual_size() as usize];
    img.read_at(&mut v, 0).unwrap();
    v
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Writes of every shape (unaligned, whole grains, runs, rewrites, across the 2 GiB extent
/// boundary, the disk's last bytes) through virtkit into qemu-img-made images of each
/// writable subformat; qemu-img must then read exactly the expected content and find the
/// image clean.
#[test]
fn writes_into_every_subformat_are_what_qemu_reads() {
    let size = 2 * GIB + 3 * MIB;
    let writes: &[(u64, usize)] = &[
        (0, 512),
        (1000, 3000),
        (64 << 10, 64 << 10),
        (200 << 10, 1 << 20),
        (5 * MIB + 17, 70_000),
        (300 << 10, 8192),
        (2 * GIB - 100_000, 300_000),
        (2 * GIB - (64 << 10), 128 << 10),
        (size - 4096, 4096),
        (32 * MIB - 512, 1024),
    ];
    for sub in [
        "monolithicSparse",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        for zeroed in [false, true] {
            if zeroed && sub.contains("Flat") {
                continue;
            }
            let d = tmp();
            let img = d.path().join("d.vmdk");
            let o = format!(
                "subformat={sub},zeroed_grain={}",
                if zeroed { "on" } else { "off" }
            );
            qemu_img(&["create", "-f", "vmdk", "-o", &o, s(&img), &size.to_string()]);
            let model = Model::new(d.path(), size);
            {
                let v = open(&img, true);
                for (i, &(off, len)) in writes.iter().enumerate() {
                    let p = pattern(len, i as u64 + 1);
                    v.write_at(&p, off).unwrap();
                    model.write(&p, off);
                }
                // Zeroes over data: whole grains and pieces.
                v.write_zeroes(64 << 10, 64 << 10, true).unwrap();
                model.write(&vec![0u8; 64 << 10], 64 << 10);
                v.write_zeroes(1500, 1000, false).unwrap();
                model.write(&[0u8; 1000], 1500);
                v.flush().unwrap();
                let mut back = vec![0u8; 300_000];
                v.read_at(&mut back, 2 * GIB - 100_000).unwrap();
                let mut want = vec![0u8; 300_000];
                {
                    use std::os::unix::fs::FileExt;
                    model.f.read_exact_at(&mut want, 2 * GIB - 100_000).unwrap();
                }
                assert!(back == want, "{sub}: read back across the extent boundary");
            }
            qemu_identical(&img, &model);
            qemu_check_clean(&img);
            if zeroed {
                let m = qemu_img(&["map", "--output=json", s(&img)]).stdout;
                assert!(
                    m.contains("\"start\": 65536, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false"),
                    "{sub}: zeroed grain not reported as zero:\n{m}"
                );
            }
        }
    }
}

/// The CID changes at the first write after each open, as QEMU does; the parent CID and the
/// rest of the descriptor stay; a split image's descriptor file keeps its sectors.
#[test]
fn first_write_updates_the_cid_only() {
    let d = tmp();
    for sub in ["monolithicSparse", "twoGbMaxExtentSparse"] {
        let img = d.path().join(format!("{sub}.vmdk"));
        qemu_img(&[
            "create",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&img),
            "16M",
        ]);
        let desc = |p: &Path| -> String {
            let b = std::fs::read(p).unwrap();
            let b = if sub == "monolithicSparse" {
                b[512..512 + 10240].to_vec()
            } else {
                b
            };
            let t = String::from_utf8_lossy(&b);
            t.trim_end_matches('\0').to_string()
        };
        let before = desc(&img);
        let len_before = std::fs::metadata(&img).unwrap().len();
        open(&img, true).write_at(&[1u8; 512], 0).unwrap();
        let after = desc(&img);
        let cid = |t: &str| {
            t.lines()
                .find(|l| l.starts_with("CID="))
                .map(|l| l.to_string())
        };
        assert_ne!(cid(&before), cid(&after), "{sub}: CID not updated");
        let strip = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with("CID="))
                .map(|l| l.to_string())
                .collect()
        };
        assert_eq!(strip(&before), strip(&after), "{sub}: descriptor changed");
        let len_after = std::fs::metadata(&img).unwrap().len();
        if sub != "monolithicSparse" {
            // QEMU rewrites the descriptor in place within the file's sectors.
            assert_eq!(len_after, len_before.div_ceil(512) * 512);
        }
        qemu_check_clean(&img);
    }
}

/// Copy-on-write from a qemu-made parent: partial grain writes keep the parent's bytes
/// around them; a zeroed grain hides the parent; qemu-img reads the same.
#[test]
fn backing_chain_copy_on_write() {
    let d = tmp();
    let base = d.path().join("base.vmdk");
    let top = d.path().join("top.vmdk");
    let size = 8 * MIB;
    qemu_img(&["create", "-f", "vmdk", s(&base), &size.to_string()]);
    qemu_io(&base, &["write -P 0x5a 0 8M"]);
    // Created by virtkit, with the parent CID taken from the base.
    let mut plan = virtkit_image::create::plan(
        Format::Vmdk,
        &[
            ("size".into(), size.to_string()),
            ("backing_file".into(), "base.vmdk".into()),
            ("backing_fmt".into(), "vmdk".into()),
            ("zeroed_grain".into(), "on".into()),
        ],
    )
    .unwrap();
    plan.set_size(size);
    plan.create(&top).unwrap();
    let model = Model::new(d.path(), size);
    model.write(&vec![0x5a; size as usize], 0);
    {
        let v = open(&top, true);
        for (i, &(off, len)) in [
            (100u64, 200usize),
            (70_000, 5),
            (1 << 20, 64 << 10),
            (3 << 20, 200_000),
        ]
        .iter()
        .enumerate()
        {
            let p = pattern(len, i as u64 + 40);
            v.write_at(&p, off).unwrap();
            model.write(&p, off);
        }
        v.write_zeroes(4 << 20, 128 << 10, true).unwrap();
        model.write(&vec![0u8; 128 << 10], 4 << 20);
        assert_eq!(read_all(v.as_ref()), std::fs::read(&model.path).unwrap());
    }
    qemu_identical(&top, &model);
    qemu_check_clean(&top);
    let info = qemu_img(&["info", s(&top)]).stdout;
    assert!(info.contains("backing file: base.vmdk"), "{info}");
}

/// VMware's parent CID check: once the parent is written (its CID changes), reading what
/// the child does not hold fails, in qemu-img and in virtkit alike.
#[test]
fn parent_cid_mismatch_is_refused() {
    let d = tmp();
    let base = d.path().join("base.vmdk");
    let top = d.path().join("top.vmdk");
    qemu_img(&["create", "-f", "vmdk", s(&base), "1M"]);
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        s(&top),
    ]);
    let mut b = vec![0u8; 4096];
    open(&top, false).read_at(&mut b, 0).unwrap();
    // The child's own grains read whatever the parent does.
    qemu_io(&top, &["write -P 2 64k 64k"]);
    qemu_io(&base, &["write -P 1 0 4k"]);
    let mut g = vec![0u8; 65536];
    open(&top, false).read_at(&mut g, 65536).unwrap();
    assert!(g.iter().all(|&x| x == 2));
    let e = open(&top, false).read_at(&mut b, 0).unwrap_err();
    assert!(e.to_string().contains("Invalid argument"), "{e}");
    let q = run(&qemu_io_bin(), &["-f", "vmdk", "-c", "read 0 4k", s(&top)]);
    assert!(q.stdout.contains("Invalid argument") || q.stderr.contains("Invalid argument"));
    // Allocating writes copy from the parent first, so they are refused too.
    let e = open(&top, true).write_at(&[1u8; 65536], 0).unwrap_err();
    assert!(e.to_string().contains("Invalid argument"), "{e}");
    let q = run(
        &qemu_io_bin(),
        &["-f", "vmdk", "-c", "write 0 64k", s(&top)],
    );
    assert!(q.stdout.contains("Invalid argument") || q.stderr.contains("Invalid argument"));
}

/// streamOptimized: whole grains append compressed; a grain is written once; partial or
/// repeated writes are refused as in QEMU.
#[test]
fn stream_optimized_writes() {
    let d = tmp();
    let img = d.path().join("s.vmdk");
    let size = 4 * MIB + 4096;
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&img),
        &size.to_string(),
    ]);
    let model = Model::new(d.path(), size);
    {
        let v = open(&img, true);
        assert!(v.needs_compressed_writes());
        let text: Vec<u8> = b"stream optimized "
            .iter()
            .cycle()
            .take(128 << 10)
            .copied()
            .collect();
        v.write_at(&text, 0).unwrap();
        model.write(&text, 0);
        let rnd = pattern(64 << 10, 3);
        let c = v.compress_cluster(&rnd).unwrap().expect("compressed");
        v.write_compressed_data(2 << 20, &c).unwrap();
        model.write(&rnd, 2 << 20);
        // The partial grain at the end of the disk.
        let tail = pattern(4096, 4);
        v.write_at(&tail, 4 * MIB).unwrap();
        model.write(&tail, 4 * MIB);
        assert!(v.write_at(&[1u8; 512], 1 << 20).is_err(), "partial grain");
        let e = v.write_at(&text[..65536], 0).unwrap_err();
        assert!(e.to_string().contains("allocated cluster"), "{e}");
    }
    qemu_identical(&img, &model);
    qemu_check_clean(&img);
    let len = std::fs::metadata(&img).unwrap().len();
    assert_eq!(len % 512, 0);
}

// ---------------------------------------------------------------------------------------
// Hand-built images of formats qemu-img reads but cannot create.
// ---------------------------------------------------------------------------------------

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn descriptor(create_type: &str, lines: &str) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"{create_type}\"\n\n# Extent description\n{lines}\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
    )
}

/// A seSparse extent laid out as QEMU's reader expects: const header, volatile header,
/// grain directory, grain tables of 4096 u64 entries, 4 KiB grains; grains allocated,
/// zeroed and unmapped. Returns the file bytes and the expected guest content.
fn build_sesparse(sectors: u64) -> (Vec<u8>, Vec<u8>) {
    let gd_entries = sectors.div_ceil(8 * 4096); // one table covers 16 MiB
    let gd_sectors = (gd_entries * 8).div_ceil(512);
    let gd_off = 2u64;
    let gt_off = gd_off + gd_sectors;
    let n_tables = 2u64;
    let gt_sectors = n_tables * 64;
    let grains_off = gt_off + gt_sectors;
    let mut f = vec![0u8; ((grains_off + 8 * 8) * 512) as usize];
    let h: [u64; 26] = [
        0xcafe_babe,
        0x0000_0002_0000_0001,
        sectors,
        8,
        64,
        0,
        0,
        0,
        0,
        0,
        1,
        1,
        0,
        0,
        0,
        0,
        gd_off,
        gd_sectors,
        gt_off,
        gt_sectors,
        0,
        0,
        0,
        0,
        grains_off,
        8 * 8,
    ];
    for (i, v) in h.iter().enumerate() {
        put_u64(&mut f, i * 8, *v);
    }
    put_u64(&mut f, 512, 0xcafe_cafe);
    let mut expect = vec![0u8; (sectors * 512) as usize];
    // Directory: table 1 covers the first 16 MiB, table 0 the 16 MiB at 32 MiB.
    put_u64(&mut f, (gd_off * 512) as usize, 0x1000_0000_0000_0001);
    if gd_entries > 2 {
        put_u64(&mut f, (gd_off * 512 + 16) as usize, 0x1000_0000_0000_0000);
    }
    let table = |t: u64| (gt_off + t * 64) * 512;
    let mut grain_no = 0u64;
    let mut alloc = |f: &mut Vec<u8>, expect: &mut Vec<u8>, t: u64, idx: u64, guest: u64| {
        let g = grain_no;
        grain_no += 1;
        let e = 0x3000_0000_0000_0000 | ((g & 0xfff) << 48) | (g >> 12);
        put_u64(f, (table(t) + idx * 8) as usize, e);
        let data = pattern(4096, 100 + g);
        let at = ((grains_off + g * 8) * 512) as usize;
        f[at..at + 4096].copy_from_slice(&data);
        expect[guest as usize..guest as usize + 4096].copy_from_slice(&data);
    };
    alloc(&mut f, &mut expect, 1, 0, 0);
    alloc(&mut f, &mut expect, 1, 5, 5 * 4096);
    alloc(&mut f, &mut expect, 1, 4095, 4095 * 4096);
    // zero and unmapped grains
    put_u64(&mut f, (table(1) + 6 * 8) as usize, 0x2000_0000_0000_0000);
    put_u64(&mut f, (table(1) + 7 * 8) as usize, 0x1000_0000_0000_0000);
    if gd_entries > 2 {
        alloc(&mut f, &mut expect, 0, 3, (32 << 20) + 3 * 4096);
    }
    (f, expect)
}

#[test]
fn sesparse_hand_built_reads_like_qemu() {
    let d = tmp();
    let sectors = 100 * 2048; // 100 MiB
    let (ext, expect) = build_sesparse(sectors);
    std::fs::write(d.path().join("disk-sesparse.vmdk"), &ext).unwrap();
    let desc = d.path().join("disk.vmdk");
    std::fs::write(
        &desc,
        descriptor(
            "seSparse",
            &format!("RW {sectors} SESPARSE \"disk-sesparse.vmdk\"\n"),
        ),
    )
    .unwrap();
    let v = open(&desc, false);
    assert_eq!(v.virtual_size(), sectors * 512);
    assert_eq!(read_all(v.as_ref()), expect);
    let out = d.path().join("q.raw");
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&desc), s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), expect);
    // Writable opens are refused, as in QEMU.
    let e = virtkit_image::open(
        &desc,
        &OpenOptions {
            format: Some(Format::Vmdk),
            writable: true,
            ..Default::default()
        },
    )
    .err()
    .expect("writable seSparse");
    assert!(
        e.to_string().contains("No write support for seSparse"),
        "{e}"
    );
    // A dirty journal is refused with QEMU's words.
    let mut dirty = ext.clone();
    put_u64(&mut dirty, 512 + 24, 1);
    std::fs::write(d.path().join("disk-sesparse.vmdk"), &dirty).unwrap();
    let e = virtkit_image::open(&desc, &OpenOptions::default())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("Replaying journal not supported"),
        "{e}"
    );
}

/// A COWD (VMDK3) delta referenced from a vmfsSparse descriptor, and one with more grains
/// than its directory covers (QEMU's lookup error, reported by check).
#[test]
fn cowd_hand_built_reads_like_qemu() {
    let d = tmp();
    let sectors: u64 = 40 * 2048; // 40 MiB
    let gran = 16u64; // 8 KiB grains: one table covers 32 MiB
    let l1 = sectors.div_ceil(4096 * gran);
    let gd_sector = 4u64;
    let gt0 = 8u64;
    let gts = gt0 + l1 * 32;
    let mut f = vec![0u8; (gts * 512) as usize];
    f[..4].copy_from_slice(b"COWD");
    for (i, v) in [
        1u32,
        3,
        sectors as u32,
        gran as u32,
        gd_sector as u32,
        l1 as u32,
        0,
    ]
    .iter()
    .enumerate()
    {
        put_u32(&mut f, 4 + i * 4, *v);
    }
    for t in 0..l1 {
        put_u32(
            &mut f,
            (gd_sector * 512 + t * 4) as usize,
            (gt0 + t * 32) as u32,
        );
    }
    let mut expect = vec![0u8; (sectors * 512) as usize];
    for (k, guest_grain) in [0u64, 3, 4095, 4096, 4999].iter().enumerate() {
        let t = guest_grain / 4096;
        let idx = guest_grain % 4096;
        let sector = (f.len() / 512) as u64;
        put_u32(
            &mut f,
            ((gt0 + t * 32) * 512 + idx * 4) as usize,
            sector as u32,
        );
        let data = pattern((gran * 512) as usize, 300 + k as u64);
        f.extend_from_slice(&data);
        let g = (guest_grain * gran * 512) as usize;
        expect[g..g + data.len()].copy_from_slice(&data);
    }
    std::fs::write(d.path().join("disk-delta.vmdk"), &f).unwrap();
    let desc = d.path().join("disk.vmdk");
    std::fs::write(
        &desc,
        descriptor(
            "vmfsSparse",
            &format!("RW {sectors} VMFSSPARSE \"disk-delta.vmdk\"\n"),
        ),
    )
    .unwrap();
    let v = open(&desc, false);
    assert_eq!(read_all(v.as_ref()), expect);
    let out = d.path().join("q.raw");
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&desc), s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), expect);
    let info = v.info().unwrap();
    assert_eq!(info.vmdk.unwrap().extents[0].format, "VMFSSPARSE");
    // Writes go where QEMU puts them (appended grains), and qemu-img reads them back.
    drop(v);
    let w = open(&desc, true);
    let p = pattern(10_000, 77);
    w.write_at(&p, 12_345).unwrap();
    expect[12_345..22_345].copy_from_slice(&p);
    drop(w);
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&desc), s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), expect);
}

/// A stream-optimized file laid out as VMware writes it: grain directory at the end, grain
/// tables and directory behind markers, footer and end-of-stream marker.
#[test]
fn vmware_stream_with_footer_reads_like_qemu() {
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;
    let d = tmp();
    let sectors: u64 = 8 * 2048; // 8 MiB: one grain table of 512 grains (32 MiB span)
    let mut f = vec![0u8; 128 * 512];
    let header = |gd: u64| {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"KDMV");
        put_u32(&mut h, 4, 3);
        put_u32(&mut h, 8, 0x30001);
        put_u64(&mut h, 12, sectors);
        put_u64(&mut h, 20, 128);
        put_u64(&mut h, 28, 1);
        put_u64(&mut h, 36, 20);
        put_u32(&mut h, 44, 512);
        put_u64(&mut h, 48, 0);
        put_u64(&mut h, 56, gd);
        put_u64(&mut h, 64, 128);
        h[73..77].copy_from_slice(&[0xa, 0x20, 0xd, 0xa]);
        h[77] = 1;
        h
    };
    f[..512].copy_from_slice(&header(u64::MAX));
    let desc = descriptor(
        "streamOptimized",
        &format!("RW {sectors} SPARSE \"s.vmdk\"\n"),
    );
    f[512..512 + desc.len()].copy_from_slice(desc.as_bytes());
    let mut gt = vec![0u32; 512];
    let mut expect = vec![0u8; (sectors * 512) as usize];
    for (k, g) in [0u64, 1, 7, 100].iter().enumerate() {
        let data: Vec<u8> = if k % 2 == 0 {
            pattern(65536, 500 + k as u64)
        } else {
            format!("grain {k} ").bytes().cycle().take(65536).collect()
        };
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(&data).unwrap();
        let z = e.finish().unwrap();
        gt[*g as usize] = (f.len() / 512) as u32;
        let mut m = vec![0u8; 12];
        put_u64(&mut m, 0, g * 128);
        put_u32(&mut m, 8, z.len() as u32);
        f.extend_from_slice(&m);
        f.extend_from_slice(&z);
        f.resize(f.len().div_ceil(512) * 512, 0);
        let at = (g * 65536) as usize;
        expect[at..at + 65536].copy_from_slice(&data);
    }
    let marker = |val: u64, ty: u32| {
        let mut m = vec![0u8; 512];
        put_u64(&mut m, 0, val);
        put_u32(&mut m, 12, ty);
        m
    };
    f.extend_from_slice(&marker(4, 1));
    let gt_sector = (f.len() / 512) as u32;
    for e in &gt {
        f.extend_from_slice(&e.to_le_bytes());
    }
    f.extend_from_slice(&marker(1, 2));
    let gd_sector = (f.len() / 512) as u64;
    let mut gd = vec![0u8; 512];
    put_u32(&mut gd, 0, gt_sector);
    f.extend_from_slice(&gd);
    f.extend_from_slice(&marker(1, 3));
    f.extend_from_slice(&header(gd_sector));
    f.extend_from_slice(&marker(0, 0));
    let img = d.path().join("s.vmdk");
    std::fs::write(&img, &f).unwrap();
    let v = open(&img, false);
    assert_eq!(read_all(v.as_ref()), expect);
    let out = d.path().join("q.raw");
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(&img), s(&out)]);
    assert_eq!(std::fs::read(&out).unwrap(), expect);
    qemu_check_clean(&img);
    assert!(v
        .check(virtkit_image::Repair::None)
        .unwrap()
        .messages
        .is_empty());
}

/// The CID rewrite at the first write leaves the descriptor exactly as QEMU's does (QEMU
/// rewrites a descriptor file whole, in sectors, and the embedded one in its 20 sectors),
/// also for descriptors longer than 20 sectors (many extents).
#[test]
fn cid_rewrite_is_byte_identical_to_qemu() {
    // The text up to its NUL, CID masked (after the NUL QEMU leaves the old text's last
    // bytes when the new CID is shorter: invisible, and random like the CID).
    let mask = |b: &[u8]| -> Vec<u8> {
        let b = &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())];
        let t = String::from_utf8_lossy(b).into_owned();
        let mut out = String::new();
        for (i, l) in t.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out += if l.starts_with("CID=") { "CID=" } else { l };
        }
        out.into_bytes()
    };
    for (sub, size) in [
        ("twoGbMaxExtentSparse", "600G"),
        ("twoGbMaxExtentSparse", "4M"),
        ("monolithicFlat", "4M"),
        ("monolithicSparse", "4M"),
    ] {
        let (qd, vd) = (tmp(), tmp());
        let (qi, vi) = (qd.path().join("d.vmdk"), vd.path().join("d.vmdk"));
        qemu_img(&[
            "create",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&qi),
            size,
        ]);
        for e in std::fs::read_dir(qd.path()).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), vd.path().join(e.file_name())).unwrap();
        }
        qemu_io(&qi, &["write -P 1 0 512"]);
        open(&vi, true).write_at(&[1u8; 512], 0).unwrap();
        let (q, v) = (std::fs::read(&qi).unwrap(), std::fs::read(&vi).unwrap());
        let (q, v) = if sub == "monolithicSparse" {
            (q[512..10752].to_vec(), v[512..10752].to_vec())
        } else {
            (q, v)
        };
        assert_eq!(q.len(), v.len(), "{sub} {size}: descriptor length");
        assert!(
            mask(&q) == mask(&v),
            "{sub} {size}: descriptor differs from QEMU's"
        );
    }
}
