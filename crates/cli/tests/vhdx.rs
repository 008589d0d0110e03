//! vhdx against the real qemu-img: create options and layout, images read both ways, dirty
//! logs (replayed read-write, read read-only without touching the file), differencing
//! images built by hand after MS-VHDX, hostile inputs, and SIGKILL during writes.

mod common;
use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const K64: usize = 0x10000;

// ---------------------------------------------------------------------------
// Little-endian fields and CRC-32C, for reading and crafting images (independent of the
// library, so that the tests check it against the specification).
// ---------------------------------------------------------------------------

fn crc32c(data: &[u8]) -> u32 {
    let mut t = [0u32; 256];
    for (i, e) in t.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
        }
        *e = c;
    }
    let mut crc = !0u32;
    for &b in data {
        crc = t[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Stores the CRC-32C of `b` (checksum field at `at` counted as zero) in that field.
fn seal(b: &mut [u8], at: usize) {
    b[at..at + 4].fill(0);
    let c = crc32c(b);
    b[at..at + 4].copy_from_slice(&c.to_le_bytes());
}

fn p16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn p32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}
fn p64(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

const BAT_GUID: [u8; 16] = [
    0x66, 0x77, 0xc2, 0x2d, 0x23, 0xf6, 0x00, 0x42, 0x9d, 0x64, 0x11, 0x5e, 0x9b, 0xfd, 0x4a, 0x08,
];
const MD_GUID: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];

/// Offset of the current header (the valid one with the higher sequence number).
fn cur_header(b: &[u8]) -> usize {
    if le64(b, 0x10008) > le64(b, 0x20008) {
        0x10000
    } else {
        0x20000
    }
}

/// (offset, length) of a region of the first region table.
fn region(b: &[u8], guid: &[u8; 16]) -> (usize, usize) {
    let n = le32(b, 0x30008) as usize;
    (0..n)
        .map(|i| &b[0x30010 + 32 * i..0x30030 + 32 * i])
        .find(|e| &e[..16] == guid)
        .map(|e| (le64(e, 16) as usize, le32(e, 24) as usize))
        .expect("region")
}

// ---------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------

#[test]
fn option_help_matches_qemu() {
    let q = qemu_img(&["create", "-f", "vhdx", "-o", "help", "x.vhdx"]);
    q.assert_ok();
    let v = vk(&["create", "-f", "vhdx", "-o", "help", "x.vhdx"]);
    v.assert_ok();
    assert_eq!(v.stdout, q.stdout);
}

#[test]
fn create_lines_and_errors_match_qemu() {
    let d = tmp();
    let newer = qemu_version().0 >= 10;
    let cases: &[(&str, &str)] = &[
        ("", "100M"),
        ("subformat=fixed", "10M"),
        (
            "subformat=dynamic,block_size=2M,log_size=3M,block_state_zero=off",
            "10M",
        ),
        (
            "block_state_zero=yes,nocow=off,preallocation=off,extent_size_hint=1M",
            "10M",
        ),
        ("block_size=1000,log_size=1.5M", "1000"),
        ("block_size=512M", "10M"),
        ("block_size=3M", "10M"),
        ("log_size=0", "1M"),
        ("log_size=4294967295", "1M"),
        ("log_size=5G", "1M"),
        ("subformat=foo", "1M"),
        ("subformat=FIXED", "1M"),
        ("preallocation=metadata", "1M"),
        ("preallocation=foo", "1M"),
        ("preallocation=full", "1M"),
        ("extent_size_hint=5T", "1M"),
        ("block_state_zero=x", "1M"),
        ("nocow=x", "1M"),
        ("foo=1", "1M"),
        ("block_size=abc", "1M"),
        ("block_size=1.5", "1M"),
        ("size=5M", ""),
        ("", "65T"),
        ("", "64T"),
        ("", "0"),
    ];
    // 7.2 words these differently ("expects a non-negative number"); virtkit follows 10.x.
    let version_dependent = ["block_size=-1", "size=-5"];
    let mut all: Vec<(String, String)> = cases
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for v in version_dependent {
        all.push((v.to_string(), "1M".to_string()));
    }
    for (opts, size) in &all {
        let qf = d.path().join("q.vhdx");
        let vf = d.path().join("v.vhdx");
        let mk = |f: &Path| {
            let mut a = vec!["create".to_string(), "-f".into(), "vhdx".into()];
            if !opts.is_empty() {
                a.push("-o".into());
                a.push(opts.clone());
            }
            a.push(s(f).to_string());
            if !size.is_empty() {
                a.push(size.clone());
            }
            a
        };
        let _ = std::fs::remove_file(&qf);
        let _ = std::fs::remove_file(&vf);
        let q = qemu_img(&mk(&qf));
        let Some(v) = vk_link(&mk(&vf)) else { return };
        let ctx = format!("-o {opts:?} size {size:?}");
        let qout = q.stdout.replace(s(&qf), "IMG");
        let vout = v.stdout.replace(s(&vf), "IMG");
        assert_eq!(vout, qout, "{ctx}: stdout");
        assert_eq!(v.code, q.code, "{ctx}: exit code\n{}", v.stderr);
        if q.ok() {
            assert!(v.stderr.is_empty(), "{ctx}: {}", v.stderr);
            same_layout(&qf, &vf, &ctx);
            qemu_check_clean(&vf);
        } else {
            v.assert_one_line_error();
            let ql = q.stderr.lines().next().unwrap_or("").replace(s(&qf), "IMG");
            let vl = v.stderr.lines().next().unwrap_or("").replace(s(&vf), "IMG");
            if newer || !version_dependent.contains(&opts.as_str()) {
                assert_eq!(vl, ql, "{ctx}: error");
            }
        }
    }
}

/// Two images created with the same options have the same structure: everything but the
/// creator string, GUIDs, sequence numbers and checksums is identical.
fn same_layout(q: &Path, v: &Path, ctx: &str) {
    let (a, b) = (read(q), read(v));
    assert_eq!(a.len(), b.len(), "{ctx}: file length");
    assert_eq!(&a[..8], &b[..8], "{ctx}: signature");
    for h in [0x10000usize, 0x20000] {
        assert_eq!(&a[h..h + 4], &b[h..h + 4], "{ctx}: header signature");
        assert_eq!(
            &a[h + 48..h + 80],
            &b[h + 48..h + 80],
            "{ctx}: header fields"
        );
        assert_eq!(
            le64(&a, h + 8) - le64(&a, 0x10008),
            le64(&b, h + 8) - le64(&b, 0x10008),
            "{ctx}: sequence numbers"
        );
    }
    assert_eq!(
        &a[0x30000..0x50000],
        &b[0x30000..0x50000],
        "{ctx}: region tables"
    );
    let (bat, bat_len) = region(&a, &BAT_GUID);
    assert!(
        a[bat..bat + bat_len] == b[bat..bat + bat_len],
        "{ctx}: BAT differs"
    );
    let (md, _) = region(&a, &MD_GUID);
    assert_eq!(&a[md..md + K64], &b[md..md + K64], "{ctx}: metadata table");
    // Items: file parameters, size, (page 83 is random), sector sizes.
    let it = md + K64;
    assert_eq!(&a[it..it + 16], &b[it..it + 16], "{ctx}: metadata items");
    assert_eq!(
        &a[it + 32..it + 40],
        &b[it + 32..it + 40],
        "{ctx}: sector sizes"
    );
}

// ---------------------------------------------------------------------------
// Images both ways
// ---------------------------------------------------------------------------

/// Data in the blocks of interest: first block, a block boundary, the partial last block.
fn qemu_writes(img: &Path, size: u64) {
    let last = size - 4096;
    qio(
        "vhdx",
        img,
        &[
            "write -P 0x11 0 64k",
            "write -P 0x22 1023k 2k",
            "write -P 0x33 5M 1M",
            "write -z 5M 4k",
            &format!("write -P 0x44 {last} 4k"),
        ],
    );
}

fn same_map(img: &Path) {
    let q = map_extents(&qemu_map(img, "vhdx"), true);
    let v = map_extents(&vk_map(img, "vhdx"), true);
    assert_extents_eq(&format!("map of {}", img.display()), &v, &q);
}

fn same_info(img: &Path) {
    let q = qemu_img(&["info", "--output=json", "-f", "vhdx", s(img)]);
    q.assert_ok();
    let v = vk(&["info", "--output=json", "-f", "vhdx", s(img)]);
    v.assert_ok();
    assert_eq!(info_fields(&v.json()), info_fields(&q.json()));
    assert_eq!(v.json()["cluster-size"], q.json()["cluster-size"]);
    assert_eq!(v.json()["actual-size"], q.json()["actual-size"]);
    let q = qemu_img(&["info", "-f", "vhdx", s(img)]);
    let v = vk(&["info", "-f", "vhdx", s(img)]);
    // qemu-img before 8.0 does not show the child node.
    let mut vs = v.stdout.as_str();
    if !q.stdout.contains("Child node") {
        vs = vs.split("Child node").next().unwrap();
    }
    assert_eq!(vs, q.stdout);
}

#[test]
fn qemu_images_read_identically() {
    let d = tmp();
    let size = (10u64 << 20) + 4096;
    for (i, opts) in [
        "",
        "block_size=1M",
        "block_size=2M,log_size=3M",
        "block_state_zero=off,block_size=1M",
        "subformat=fixed",
        "subformat=fixed,block_state_zero=off,block_size=4M",
        "block_size=32M,log_size=2M",
    ]
    .iter()
    .enumerate()
    {
        let img = d.path().join(format!("q{i}.vhdx"));
        let mut a = vec!["create", "-f", "vhdx"];
        if !opts.is_empty() {
            a.extend(["-o", opts]);
        }
        let sz = size.to_string();
        a.extend([s(&img), sz.as_str()]);
        qemu_img(&a).assert_ok();
        qemu_writes(&img, size);
        assert_bytes_eq(opts, &vk_to_raw(&img, "vhdx"), &qemu_to_raw(&img, "vhdx"));
        same_map(&img);
        same_info(&img);
        let c = vk(&["check", "-f", "vhdx", s(&img)]);
        c.assert_ok();
        assert_eq!(c.stdout, "No errors were found on the image.\n");
        let cj = vk(&["check", "--output=json", "-f", "vhdx", s(&img)]);
        let qj = qemu_img(&["check", "--output=json", "-f", "vhdx", s(&img)]);
        assert_eq!(cj.json(), qj.json());
    }
}

#[test]
fn virtkit_images_pass_qemu_and_match_its_layout() {
    let d = tmp();
    let raw = d.path().join("src.raw");
    let size = 40 * MIB + 512 * 3;
    write_raw(&raw, &gen_data(size, 99));
    for opts in [
        "",
        "block_size=1M",
        "block_size=2M,log_size=2M,block_state_zero=off",
        "subformat=fixed,block_size=1M",
        "subformat=fixed,block_state_zero=off",
    ] {
        let v = d.path().join("v.vhdx");
        let q = d.path().join("q.vhdx");
        let conv = |tool: &dyn Fn(&[&str]) -> Out, out: &Path| {
            let mut a = vec!["convert", "-f", "raw", "-O", "vhdx"];
            if !opts.is_empty() {
                a.extend(["-o", opts]);
            }
            a.extend([s(&raw), s(out)]);
            tool(&a).assert_ok();
        };
        conv(&|a| vk(a), &v);
        conv(&|a| qemu_img(a), &q);
        qemu_check_clean(&v);
        qemu_compare_identical(&raw, "raw", &v, "vhdx");
        // Same blocks allocated at the same places (convert writes in guest order).
        let (a, b) = (read(&q), read(&v));
        let (bat, len) = region(&a, &BAT_GUID);
        assert!(
            a[bat..bat + len] == b[bat..bat + len],
            "{opts}: BAT differs"
        );
        assert_eq!(a.len(), b.len(), "{opts}: file length");
        assert_eq!(
            &a[cur_header(&a) + 48..cur_header(&a) + 64],
            &[0u8; 16],
            "no log left"
        );
        assert_eq!(&b[cur_header(&b) + 48..cur_header(&b) + 64], &[0u8; 16]);

        // Rewrite in place (-n): allocated data overwritten, zero ranges zeroed.
        let raw2 = d.path().join("src2.raw");
        write_raw(&raw2, &gen_data(size, 100));
        vk(&["convert", "-n", "-f", "raw", "-O", "vhdx", s(&raw2), s(&v)]).assert_ok();
        qemu_check_clean(&v);
        qemu_compare_identical(&raw2, "raw", &v, "vhdx");
    }
}

// ---------------------------------------------------------------------------
// Dirty logs
// ---------------------------------------------------------------------------

/// A QEMU image caught between "log entry durable" and "BAT updated": QEMU writes data,
/// then we put the log GUID of its (still present) last log entry back into the current
/// header and revert the BAT entry the entry updates.
fn dirty_image(dir: &Path) -> PathBuf {
    let p = dir.join("dirty.vhdx");
    qemu_img(&["create", "-f", "vhdx", "-o", "block_size=1M", s(&p), "8M"]).assert_ok();
    // Two processes: each starts its log at the beginning, so the entry there is the
    // last one (within one process QEMU appends entries).
    qio("vhdx", &p, &["write -P 0x5a 3M 64k"]);
    qio("vhdx", &p, &["write -P 0x6b 5M 4k"]);
    let mut b = read(&p);
    let log = le64(&b, cur_header(&b) + 72) as usize;
    assert_eq!(&b[log..log + 4], b"loge");
    let guid: [u8; 16] = b[log + 32..log + 48].try_into().unwrap();
    let target = le64(&b, log + 64 + 16) as usize;
    let (bat, _) = region(&b, &BAT_GUID);
    assert_eq!(target, bat);
    let h = cur_header(&b);
    b[h + 48..h + 64].copy_from_slice(&guid);
    seal(&mut b[h..h + 4096], 4);
    // The last write allocated block 5: back to ZERO on disk; only the log knows it.
    assert_eq!(le64(&b, bat + 5 * 8) & 7, 6);
    p64(&mut b, bat + 5 * 8, 2);
    std::fs::write(&p, &b).unwrap();
    p
}

#[test]
fn dirty_log_read_only_and_replayed() {
    let d = tmp();
    let img = dirty_image(d.path());
    let orig = read(&img);
    // The expected content: QEMU's replay on a copy.
    let qc = d.path().join("qcopy.vhdx");
    std::fs::copy(&img, &qc).unwrap();
    let qr = qemu_img(&["check", "-r", "all", "-f", "vhdx", s(&qc)]);
    qr.assert_ok();
    let want = qemu_to_raw(&qc, "vhdx");
    assert!(want[5 * MIB..5 * MIB + 4096].iter().all(|&x| x == 0x6b));

    // QEMU refuses a read-only open; virtkit reads through the log, the file untouched.
    assert!(!qemu_img(&["info", "-f", "vhdx", s(&img)]).ok());
    vk(&["info", "-f", "vhdx", s(&img)]).assert_ok();
    assert_bytes_eq("ro read", &vk_to_raw(&img, "vhdx"), &want);
    vk(&["map", "--output=json", "-f", "vhdx", s(&img)]).assert_ok();
    vk(&["compare", "-f", "vhdx", "-F", "vhdx", s(&img), s(&qc)]).assert_ok();
    let c = vk(&["check", "-f", "vhdx", s(&img)]);
    c.assert_code(2);
    c.assert_stderr_at_most_one_line();
    assert!(
        c.stderr.contains("log that needs to be replayed"),
        "{}",
        c.stderr
    );
    assert!(read(&img) == orig, "a read-only open changed the file");

    // check -r all replays, with qemu-img's report.
    let v = vk(&["check", "-r", "all", "-f", "vhdx", s(&img)]);
    v.assert_ok();
    assert_eq!(v.stdout, qr.stdout);
    let b = read(&img);
    assert_eq!(&b[cur_header(&b) + 48..cur_header(&b) + 64], &[0u8; 16]);
    qemu_check_clean(&img);
    assert_bytes_eq("after replay", &qemu_to_raw(&img, "vhdx"), &want);

    // JSON report, and -r leaks replays too (as in QEMU).
    for r in ["all", "leaks"] {
        let img2 = dirty_image(d.path());
        let q2 = d.path().join("q2.vhdx");
        std::fs::copy(&img2, &q2).unwrap();
        let qj = qemu_img(&["check", "-r", r, "--output=json", "-f", "vhdx", s(&q2)]);
        let vj = vk(&["check", "-r", r, "--output=json", "-f", "vhdx", s(&img2)]);
        assert_eq!(vj.code, qj.code);
        let (mut a, mut b) = (vj.json(), qj.json());
        a["filename"] = Value::Null;
        b["filename"] = Value::Null;
        assert_eq!(a, b);
        assert_bytes_eq(r, &vk_to_raw(&img2, "vhdx"), &want);
    }

    // A read-write open (convert -n into it) replays before writing.
    let img3 = dirty_image(d.path());
    let raw = d.path().join("one.raw");
    write_raw(&raw, &vec![0x7c; 8 * MIB]);
    vk(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "vhdx",
        s(&raw),
        s(&img3),
    ])
    .assert_ok();
    qemu_check_clean(&img3);
    qemu_compare_identical(&raw, "raw", &img3, "vhdx");
}

// ---------------------------------------------------------------------------
// Differencing images (qemu-img cannot make them): written here after MS-VHDX.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Blk {
    /// In the child, filled with the byte.
    Full(u8),
    /// Sectors whose bit is set come from the child (filled with the byte).
    Partial(u8, &'static [u64]),
    NotPresent,
    Zero,
    Undefined,
}

const PARENT_TYPE: [u8; 16] = [
    0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13,
];

fn guid_text(g: &[u8]) -> String {
    format!(
        "{{{:08x}-{:04x}-{:04x}-{}-{}}}",
        le32(g, 0),
        le16(g, 4),
        le16(g, 6),
        g[8..10]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
        g[10..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// The DataWriteGuid of a VHDX file's current header.
fn data_write_guid(p: &Path) -> String {
    let b = read(p);
    let h = cur_header(&b);
    guid_text(&b[h + 32..h + 48])
}

/// A differencing VHDX: 1 MiB blocks, log at 1 MiB, BAT at 2 MiB, metadata at 3 MiB, the
/// sector bitmap of chunk 0 at 4 MiB, payload blocks from 5 MiB.
fn write_child(path: &Path, size: u64, blocks: &[Blk], locator: &[(&str, &str)]) {
    let bs = MIB;
    let mut b = vec![0u8; 5 * MIB];
    b[..8].copy_from_slice(b"vhdxfile");
    for (i, h) in [0x10000usize, 0x20000].into_iter().enumerate() {
        let hb = &mut b[h..h + 4096];
        hb[..4].copy_from_slice(b"head");
        p64(hb, 8, 10 + i as u64);
        hb[16..32].copy_from_slice(&[0x11; 16]);
        hb[32..48].copy_from_slice(&[0x22; 16]);
        p16(hb, 66, 1);
        p32(hb, 68, MIB as u32);
        p64(hb, 72, MIB as u64);
        seal(hb, 4);
    }
    let mut rt = vec![0u8; K64];
    rt[..4].copy_from_slice(b"regi");
    p32(&mut rt, 8, 2);
    rt[16..32].copy_from_slice(&BAT_GUID);
    p64(&mut rt, 32, 2 * MIB as u64);
    p32(&mut rt, 40, MIB as u32);
    p32(&mut rt, 44, 1);
    rt[48..64].copy_from_slice(&MD_GUID);
    p64(&mut rt, 64, 3 * MIB as u64);
    p32(&mut rt, 72, MIB as u32);
    p32(&mut rt, 76, 1);
    seal(&mut rt, 4);
    b[0x30000..0x40000].copy_from_slice(&rt);
    b[0x40000..0x50000].copy_from_slice(&rt);

    // Metadata: the five required items and the parent locator.
    let md = 3 * MIB;
    b[md..md + 8].copy_from_slice(b"metadata");
    let mut loc = vec![0u8; 20 + 12 * locator.len()];
    loc[..16].copy_from_slice(&PARENT_TYPE);
    p16(&mut loc, 18, locator.len() as u16);
    for (i, (k, v)) in locator.iter().enumerate() {
        let ko = loc.len();
        loc.extend(k.encode_utf16().flat_map(|u| u.to_le_bytes()));
        let vo = loc.len();
        loc.extend(v.encode_utf16().flat_map(|u| u.to_le_bytes()));
        p32(&mut loc, 20 + 12 * i, ko as u32);
        p32(&mut loc, 24 + 12 * i, vo as u32);
        p16(&mut loc, 28 + 12 * i, (vo - ko) as u16);
        let vl = loc.len() - vo;
        p16(&mut loc, 30 + 12 * i, vl as u16);
    }
    let mut items = vec![0u8; 40];
    p32(&mut items, 0, bs as u32);
    p32(&mut items, 4, 2); // HasParent
    p64(&mut items, 8, size);
    items[16..32].copy_from_slice(&[0x33; 16]);
    p32(&mut items, 32, 512);
    p32(&mut items, 36, 512);
    items.extend_from_slice(&loc);
    let ids: [([u8; 16], usize, usize); 6] = [
        (
            guid_bytes(
                0xcaa16737,
                0xfa36,
                0x4d43,
                [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
            ),
            0,
            8,
        ),
        (
            guid_bytes(
                0x2fa54224,
                0xcd1b,
                0x4876,
                [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
            ),
            8,
            8,
        ),
        (
            guid_bytes(
                0xbeca12ab,
                0xb2e6,
                0x4523,
                [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
            ),
            16,
            16,
        ),
        (
            guid_bytes(
                0x8141bf1d,
                0xa96f,
                0x4709,
                [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
            ),
            32,
            4,
        ),
        (
            guid_bytes(
                0xcda348c7,
                0x445d,
                0x4471,
                [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
            ),
            36,
            4,
        ),
        (
            guid_bytes(
                0xa8d35f2d,
                0xb30b,
                0x454d,
                [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
            ),
            40,
            loc.len(),
        ),
    ];
    p16(&mut b, md + 10, ids.len() as u16);
    for (i, (g, off, len)) in ids.iter().enumerate() {
        let e = md + 32 + 32 * i;
        b[e..e + 16].copy_from_slice(g);
        p32(&mut b, e + 16, (K64 + off) as u32);
        p32(&mut b, e + 20, *len as u32);
        p32(&mut b, e + 24, 4);
    }
    b[md + K64..md + K64 + items.len()].copy_from_slice(&items);

    // BAT (differencing layout: chunk ratio 4096 payload entries, then the bitmap entry).
    let bat = 2 * MIB;
    let cr = 4096usize;
    let bitmap_off = 4 * MIB;
    let mut bitmap = vec![0u8; MIB];
    let mut data = Vec::new();
    for (blk, kind) in blocks.iter().enumerate() {
        let e = match *kind {
            Blk::Full(v) | Blk::Partial(v, _) => {
                let off = 5 * MIB + data.len();
                data.extend(std::iter::repeat_n(v, bs));
                if let Blk::Partial(_, secs) = kind {
                    for &s in secs.iter() {
                        let bit = blk as u64 * (bs as u64 / 512) + s;
                        bitmap[(bit / 8) as usize] |= 1 << (bit % 8);
                    }
                    off as u64 | 7
                } else {
                    off as u64 | 6
                }
            }
            Blk::NotPresent => 0,
            Blk::Zero => 2,
            Blk::Undefined => 1,
        };
        p64(&mut b, bat + 8 * blk, e);
    }
    p64(&mut b, bat + 8 * cr, bitmap_off as u64 | 6);
    b[bitmap_off..bitmap_off + MIB].copy_from_slice(&bitmap);
    b.extend_from_slice(&data);
    std::fs::write(path, &b).unwrap();
}

fn guid_bytes(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&d1.to_le_bytes());
    g[4..6].copy_from_slice(&d2.to_le_bytes());
    g[6..8].copy_from_slice(&d3.to_le_bytes());
    g[8..].copy_from_slice(&d4);
    g
}

#[test]
fn differencing_images_read_through_their_parent() {
    let d = tmp();
    let size = 6 * MIB as u64;
    let parent = d.path().join("parent.vhdx");
    qemu_img(&[
        "create",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&parent),
        "6M",
    ])
    .assert_ok();
    qio("vhdx", &parent, &["write -P 0xa1 0 6M"]);
    let link = data_write_guid(&parent);
    let blocks = [
        Blk::Full(0xc0),
        Blk::Partial(0xc1, &[0, 1, 2, 7, 100, 2047]),
        Blk::NotPresent,
        Blk::Zero,
        Blk::Undefined,
        Blk::Partial(0xc5, &[]),
    ];
    let mut want = vec![0xa1u8; size as usize];
    for (i, k) in blocks.iter().enumerate() {
        let blk = &mut want[i * MIB..(i + 1) * MIB];
        match *k {
            Blk::Full(v) => blk.fill(v),
            Blk::Partial(v, secs) => {
                for &s in secs {
                    blk[s as usize * 512..(s as usize + 1) * 512].fill(v);
                }
            }
            Blk::Zero => blk.fill(0),
            Blk::NotPresent | Blk::Undefined => {}
        }
    }
    let child = d.path().join("child.vhdx");
    write_child(
        &child,
        size,
        &blocks,
        &[
            ("parent_linkage", &link),
            ("relative_path", ".\\parent.vhdx"),
            ("absolute_win32_path", "\\\\?\\D:\\vms\\parent.vhdx"),
        ],
    );
    assert_bytes_eq("child", &vk_to_raw(&child, "vhdx"), &want);
    let i = vk(&["info", "-f", "vhdx", s(&child)]);
    i.assert_ok();
    assert!(
        i.stdout.contains("backing file: parent.vhdx"),
        "{}",
        i.stdout
    );
    vk(&["check", "-f", "vhdx", s(&child)]).assert_ok();
    // Map: child data at depth 0, the parent below.
    let m = map_extents(&vk_map(&child, "vhdx"), false);
    assert!(
        m.iter().any(|e| e.depth == 1 && e.data),
        "{}",
        fmt_extents(&m)
    );
    assert!(
        m.iter().any(|e| e.depth == 0 && e.data),
        "{}",
        fmt_extents(&m)
    );
    assert!(m.iter().any(|e| e.depth == 0 && e.zero && !e.data));
    // Converting flattens the chain.
    let flat = d.path().join("flat.vhdx");
    vk(&["convert", "-f", "vhdx", "-O", "vhdx", s(&child), s(&flat)]).assert_ok();
    qemu_check_clean(&flat);
    assert_bytes_eq("flattened", &qemu_to_raw(&flat, "vhdx"), &want);
    // Writes are refused, one line.
    vk(&[
        "convert",
        "-n",
        "-f",
        "vhdx",
        "-O",
        "vhdx",
        s(&flat),
        s(&child),
    ])
    .assert_one_line_error();

    // Windows path one directory up.
    std::fs::create_dir(d.path().join("sub")).unwrap();
    let up = d.path().join("sub/up.vhdx");
    write_child(
        &up,
        size,
        &blocks,
        &[
            ("relative_path", "..\\parent.vhdx"),
            ("parent_linkage", &link),
        ],
    );
    assert_bytes_eq("up", &vk_to_raw(&up, "vhdx"), &want);

    // Only a Win32 path that does not exist here: a one-line error naming it.
    let lost = d.path().join("lost.vhdx");
    write_child(
        &lost,
        size,
        &blocks,
        &[
            ("parent_linkage", &link),
            ("absolute_win32_path", "\\\\?\\D:\\vms\\gone.vhdx"),
        ],
    );
    let o = vk(&["info", "-f", "vhdx", s(&lost)]);
    o.assert_one_line_error();
    assert!(o.stderr.contains("gone.vhdx"), "{}", o.stderr);

    // The parent changed since the child was made: the chain is broken.
    let stale = d.path().join("stale.vhdx");
    write_child(
        &stale,
        size,
        &blocks,
        &[
            ("parent_linkage", "{01234567-89ab-4def-8123-456789abcdef}"),
            ("relative_path", "parent.vhdx"),
        ],
    );
    let o = vk(&[
        "convert",
        "-O",
        "raw",
        s(&stale),
        s(&d.path().join("x.raw")),
    ]);
    o.assert_one_line_error();
    assert!(o.stderr.contains("parent linkage"), "{}", o.stderr);
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

type Mutation = (
    &'static str,
    Box<dyn Fn(&mut Vec<u8>)>,
    Option<&'static str>,
);

fn refresh_header(b: &mut [u8], h: usize) {
    seal(&mut b[h..h + 4096], 4);
}

fn reseal_regions(b: &mut [u8]) {
    seal(&mut b[0x30000..0x40000], 4);
}

/// Writes a one-entry log (valid CRC) into `b` at the log, writing `sector` at `target`,
/// and points the current header at it. `tweak` edits the entry before sealing.
fn add_log_entry(b: &mut Vec<u8>, target: u64, zero_len: Option<u64>, tweak: &dyn Fn(&mut [u8])) {
    let h = cur_header(b);
    let log = le64(b, h + 72) as usize;
    let guid = [0x5c; 16];
    let seq = 9u64;
    let mut e = vec![0u8; 8192];
    e[..4].copy_from_slice(b"loge");
    p32(&mut e, 8, 8192);
    p64(&mut e, 16, seq);
    p32(&mut e, 24, 1);
    e[32..48].copy_from_slice(&guid);
    p64(&mut e, 48, b.len() as u64);
    p64(&mut e, 56, b.len() as u64);
    match zero_len {
        Some(l) => {
            e[64..68].copy_from_slice(b"zero");
            p64(&mut e, 72, l);
            p32(&mut e, 8, 4096);
        }
        None => {
            e[64..68].copy_from_slice(b"desc");
            e[4096..4100].copy_from_slice(b"data");
            p32(&mut e, 8188, seq as u32);
        }
    }
    p64(&mut e, 80, target);
    p64(&mut e, 88, seq);
    let len = le32(&e, 8) as usize;
    e.truncate(len);
    tweak(&mut e);
    seal(&mut e, 4);
    if b.len() < log + e.len() {
        b.resize(log + e.len(), 0);
    }
    b[log..log + e.len()].copy_from_slice(&e);
    b[h + 48..h + 64].copy_from_slice(&guid);
    refresh_header(b, h);
}

#[test]
fn hostile_vhdx_inputs() {
    let d = tmp();
    let base_p = d.path().join("base.vhdx");
    qemu_img(&[
        "create",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&base_p),
        "4M",
    ])
    .assert_ok();
    qio("vhdx", &base_p, &["write -P 0x5a 1M 64k"]);
    let base = read(&base_p);
    let (bat, _) = region(&base, &BAT_GUID);
    let (md, _) = region(&base, &MD_GUID);
    let h = cur_header(&base);
    let blk1 = le64(&base, bat + 8) & !0xfffff;
    let muts: Vec<Mutation> = vec![
        (
            "both headers bad",
            Box::new(|b| {
                b[0x10010] ^= 1;
                b[0x20010] ^= 1;
            }),
            Some("No valid VHDX header found"),
        ),
        (
            "equal sequence numbers",
            Box::new(|b| {
                let s2 = le64(b, 0x20008);
                p64(b, 0x10008, s2);
                b[0x10030] ^= 1;
                refresh_header(b, 0x10000);
            }),
            Some("No valid VHDX header found"),
        ),
        (
            "both region tables bad",
            Box::new(|b| {
                b[0x30100] ^= 1;
                b[0x40100] ^= 1;
            }),
            Some("region table"),
        ),
        (
            "region entries 2^32-1",
            Box::new(|b| {
                p32(b, 0x30008, u32::MAX);
                reseal_regions(b);
                b[0x40100] ^= 1;
            }),
            Some("entries"),
        ),
        (
            "metadata region overlaps the BAT",
            Box::new(move |b| {
                p64(b, 0x30010 + 32 + 16, bat as u64);
                reseal_regions(b);
                b[0x40100] ^= 1;
            }),
            Some("overlaps"),
        ),
        (
            "BAT region over the headers",
            Box::new(|b| {
                p64(b, 0x30010 + 16, 0x10000);
                reseal_regions(b);
                b[0x40100] ^= 1;
            }),
            Some("overlaps"),
        ),
        (
            "BAT region of 8 bytes",
            Box::new(|b| {
                p32(b, 0x30010 + 24, 8);
                reseal_regions(b);
                b[0x40100] ^= 1;
            }),
            Some("too small"),
        ),
        (
            "BAT entry past EOF",
            Box::new(move |b| p64(b, bat + 8, (1u64 << 40) | 6)),
            Some("points after end of file"),
        ),
        (
            "BAT entry at offset 0 (headers)",
            Box::new(move |b| p64(b, bat + 8, 6)),
            Some("overlaps"),
        ),
        (
            "BAT entry into the log",
            Box::new(move |b| p64(b, bat + 8, (1 << 20) | 6)),
            Some("overlaps"),
        ),
        (
            "BAT entry offset overflow",
            Box::new(move |b| p64(b, bat + 8, !0xfffffu64 | 6)),
            Some("overflow"),
        ),
        (
            "BAT entry reserved state",
            Box::new(move |b| p64(b, bat + 8, blk1 | 4)),
            None,
        ),
        (
            "metadata item length 4 GiB",
            Box::new(move |b| p32(b, md + 32 + 20, u32::MAX)),
            Some("length"),
        ),
        (
            "metadata item past the region",
            Box::new(move |b| p32(b, md + 32 + 16, 0xfff_fff0)),
            Some("outside"),
        ),
        (
            "metadata entry count 65535",
            Box::new(move |b| p16(b, md + 10, u16::MAX)),
            Some("entries"),
        ),
        (
            "block size 3 MiB",
            Box::new(move |b| p32(b, md + K64, 3 * MIB as u32)),
            Some("block size"),
        ),
        (
            "virtual size 2^63",
            Box::new(move |b| p64(b, md + K64 + 8, 1 << 63)),
            Some("64 TiB"),
        ),
        (
            "logical sector size 1000",
            Box::new(move |b| p32(b, md + K64 + 32, 1000)),
            Some("sector size"),
        ),
        (
            "has parent without locator",
            Box::new(move |b| p32(b, md + K64 + 4, 2)),
            Some("parent locator"),
        ),
        (
            "unknown required metadata item",
            Box::new(move |b| {
                b[md + 32 + 4 * 32] ^= 0xff;
            }),
            Some("required"),
        ),
        (
            "log offset 0",
            Box::new(move |b| {
                p64(b, h + 72, 0);
                refresh_header(b, h);
            }),
            Some("log offset"),
        ),
        (
            "log length 4 GiB - 1 MiB, dirty",
            Box::new(move |b| {
                add_log_entry(b, bat as u64, None, &|_| {});
                let h = cur_header(b);
                p32(b, h + 68, u32::MAX - (MIB as u32 - 1));
                refresh_header(b, h);
            }),
            None,
        ),
        (
            "dirty log, header sequence number 2^64-1",
            Box::new(move |b| {
                add_log_entry(b, bat as u64, None, &|_| {});
                let h = cur_header(b);
                p64(b, h + 8, u64::MAX);
                refresh_header(b, h);
            }),
            None,
        ),
        (
            "log entry sequence number 2^64-1",
            Box::new(move |b| add_log_entry(b, 0x200000, None, &|e| p64(e, 16, u64::MAX))),
            None,
        ),
        (
            "log entry writing into the headers",
            Box::new(|b| add_log_entry(b, 0x10000, None, &|_| {})),
            Some("outside"),
        ),
        (
            "log entry zeroing past the end of the file",
            Box::new(|b| add_log_entry(b, 0x200000, Some(1 << 50), &|_| {})),
            Some("outside"),
        ),
        (
            "log entry zeroing 2^64 - 4 KiB",
            Box::new(|b| add_log_entry(b, 0x200000, Some(!0xfffu64), &|_| {})),
            Some("outside"),
        ),
        (
            "log entry with a bad checksum (ignored)",
            Box::new(|b| add_log_entry(b, 0x200000, None, &|e| e[5000] ^= 1)),
            None,
        ),
        (
            "log entry with 2^32-1 descriptors (ignored)",
            Box::new(|b| add_log_entry(b, 0x200000, None, &|e| p32(e, 24, u32::MAX))),
            None,
        ),
        (
            "log entry with a bad descriptor",
            Box::new(|b| add_log_entry(b, 0x200000, None, &|e| e[64] = b'x')),
            Some("descriptor"),
        ),
        (
            "log data sector of another entry",
            Box::new(|b| add_log_entry(b, 0x200000, None, &|e| p32(e, 8188, 3))),
            Some("another entry"),
        ),
        (
            "log entry flushed past the end (truncated file)",
            Box::new(|b| {
                add_log_entry(b, 0x200000, None, &|e| p64(e, 48, 1 << 40));
            }),
            Some("truncated"),
        ),
        (
            "truncated to 300 KiB",
            Box::new(|b| b.truncate(300 << 10)),
            None,
        ),
        (
            "truncated to 100 bytes",
            Box::new(|b| b.truncate(100)),
            None,
        ),
    ];
    for (name, m, want) in muts {
        let p = d.path().join("h.vhdx");
        let mut b = base.clone();
        m(&mut b);
        std::fs::write(&p, &b).unwrap();
        let mut failures = 0;
        for args in [
            vec!["info", "-f", "vhdx", s(&p)],
            vec!["info", "--output=json", "-f", "vhdx", s(&p)],
            vec!["convert", "-f", "vhdx", "-O", "raw", s(&p), "/dev/null"],
            vec!["map", "--output=json", "-f", "vhdx", s(&p)],
            vec!["check", "-f", "vhdx", s(&p)],
            vec!["check", "-r", "all", "-f", "vhdx", s(&p)],
        ] {
            let o = vk_t(&args, HOSTILE_TIMEOUT);
            o.assert_sane();
            if !o.ok() {
                if args[0] != "check" || o.code == Some(1) {
                    o.assert_stderr_at_most_one_line();
                }
                failures += 1;
                if let (Some(w), "info") = (want, args[0]) {
                    assert!(o.stderr.contains(w), "{name}: {args:?}: {}", o.stderr);
                }
            } else if args.contains(&"--output=json") {
                o.json();
            }
            let changed = read(&p) != b;
            // Only a successful check -r all may write (a replayed log).
            assert!(
                !changed || (args[2] == "all" && o.ok()),
                "{name}: {args:?} changed the file"
            );
            std::fs::write(&p, &b).unwrap();
        }
        if want.is_some() {
            assert!(failures > 0, "{name}: accepted");
        }
    }
}

// ---------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------

/// Spawns `virtkit img ARGS -p`, kills it after `delay`; returns whether it was still
/// running and the last progress percentage it printed.
fn kill_after(args: &[&str], delay: Duration) -> (bool, f64) {
    let mut cmd = vk_command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let mut so = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + delay;
    let mut running = true;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            running = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if running {
        let _ = child.kill();
    }
    let _ = child.wait();
    let out = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    let pct = out
        .split('(')
        .filter_map(|p| p.split('/').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    (running, pct)
}

/// After a kill: virtkit reads the image (through the log), QEMU replays the log on a
/// copy and reads the same, every sector is old or new content, and everything up to the
/// reported progress is new.
fn verify_crash(img: &Path, old: &[u8], new: &[u8], pct: f64, ctx: &str) {
    let got = vk_to_raw(img, "vhdx");
    assert_eq!(got.len(), new.len(), "{ctx}");
    let copy = img.with_extension("copy");
    std::fs::copy(img, &copy).unwrap();
    let q = qemu_img(&["check", "-r", "all", "-f", "vhdx", s(&copy)]);
    assert!(
        q.ok(),
        "{ctx}: qemu-img check -r all: {}{}",
        q.stdout,
        q.stderr
    );
    qemu_check_clean(&copy);
    assert_bytes_eq(ctx, &qemu_to_raw(&copy, "vhdx"), &got);
    let done = ((pct / 100.0) * new.len() as f64) as usize;
    for (i, sec) in got.chunks(512).enumerate() {
        let a = &old[i * 512..i * 512 + sec.len()];
        let b = &new[i * 512..i * 512 + sec.len()];
        assert!(
            sec == a || sec == b,
            "{ctx}: sector {i} is neither old nor new content"
        );
        if (i + 1) * 512 <= done {
            assert!(
                sec == b,
                "{ctx}: sector {i} was written before the kill but is lost"
            );
        }
    }
    let c = vk(&["check", "-r", "all", "-f", "vhdx", s(img)]);
    c.assert_ok();
    qemu_check_clean(img);
}

fn kill_loop(args: &[&str], img: &Path, prepare: &dyn Fn(), old: &[u8], new: &[u8], seed: u64) {
    prepare();
    let t = Instant::now();
    vk(args).assert_ok();
    let full = t.elapsed().as_millis().max(60) as u64;
    let mut rng = Rng::new(seed);
    let mut interrupted = 0;
    let mut ms = full;
    for i in 0..8 {
        prepare();
        let delay = Duration::from_millis(ms / 10 + rng.below(ms * 8 / 10 + 1));
        let (running, pct) = kill_after(args, delay);
        if !running {
            // Finished before the kill (the calibration ran slower): aim earlier.
            ms = ms * 2 / 3;
        }
        if !img.exists() {
            continue;
        }
        interrupted += running as usize;
        verify_crash(
            img,
            old,
            new,
            if running { pct } else { 100.0 },
            &format!("kill #{i} after {delay:?}"),
        );
    }
    assert!(
        interrupted > 0,
        "nothing was interrupted (full run {full} ms)"
    );
}

#[test]
fn kill_during_convert_and_writes() {
    let d = tmp();
    let size = 160 * MIB;
    let new = gen_data(size, 5);
    let src = d.path().join("new.raw");
    write_raw(&src, &new);
    let img = d.path().join("t.vhdx");
    // Convert into a new image with small blocks (many allocations, the log fills up).
    let zero = vec![0u8; size];
    let args = [
        "convert",
        "-p",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M,log_size=1M",
        s(&src),
        s(&img),
    ];
    kill_loop(
        &args,
        &img,
        &|| {
            let _ = std::fs::remove_file(&img);
        },
        &zero,
        &new,
        1,
    );

    // Rewrites of an image full of other data (in place, zeroing, and new blocks).
    let old = gen_data(size, 6);
    let orig_raw = d.path().join("old.raw");
    write_raw(&orig_raw, &old);
    let orig = d.path().join("orig.vhdx");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&orig_raw),
        s(&orig),
    ])
    .assert_ok();
    let args = [
        "convert",
        "-p",
        "-n",
        "-f",
        "raw",
        "-O",
        "vhdx",
        s(&src),
        s(&img),
    ];
    kill_loop(
        &args,
        &img,
        &|| {
            std::fs::copy(&orig, &img).unwrap();
        },
        &old,
        &new,
        2,
    );
}

/// check on images QEMU opens for checking: BAT entries past the end of the file or over
/// other structures, reported with QEMU's messages, counts and exit codes.
#[test]
fn check_reports_like_qemu() {
    let d = tmp();
    let base_p = d.path().join("base.vhdx");
    qemu_img(&[
        "create",
        "-f",
        "vhdx",
        "-o",
        "block_size=1M",
        s(&base_p),
        "4M",
    ])
    .assert_ok();
    qio(
        "vhdx",
        &base_p,
        &["write -P 0x5a 1M 64k", "write -P 0x5b 3M 64k"],
    );
    let base = read(&base_p);
    let (bat, _) = region(&base, &BAT_GUID);
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch)> = vec![
        (
            "past EOF",
            Box::new(move |b| p64(b, bat + 8, (1 << 30) | 6)),
        ),
        ("truncated", Box::new(|b| b.truncate(b.len() - 4096))),
        (
            "two problems",
            Box::new(move |b| {
                p64(b, bat + 8, (1 << 30) | 6);
                p64(b, bat + 24, (2 << 30) | 6);
            }),
        ),
    ];
    for (name, patch) in cases {
        let p = d.path().join("c.vhdx");
        let mut b = base.clone();
        patch(&mut b);
        std::fs::write(&p, &b).unwrap();
        for extra in [vec![], vec!["--output=json"], vec!["-r", "all"]] {
            let mut a = vec!["check", "-f", "vhdx"];
            a.extend(extra.iter().copied());
            a.push(s(&p));
            let q = qemu_img(&a);
            let v = vk(&a);
            assert_eq!(v.code, q.code, "{name} {extra:?}: exit code");
            if extra.contains(&"--output=json") {
                assert_eq!(v.json(), q.json(), "{name}");
            } else {
                assert_eq!(v.stdout, q.stdout, "{name} {extra:?}");
            }
            let strip = |e: &str| -> Vec<String> {
                e.lines()
                    .map(|l| l.trim_start_matches("qemu-img: ").to_string())
                    .collect()
            };
            assert_eq!(strip(&v.stderr), strip(&q.stderr), "{name} {extra:?}");
            assert!(read(&p) == b, "{name}: check changed the file");
        }
    }
}
