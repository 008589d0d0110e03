//! vpc (VHD) against the real qemu-img, both directions: the CHS size rounding of create
//! (many odd sizes, with and without force_size, dynamic and fixed) gives the same virtual
//! size and the same bytes; qemu-made images read and map identically; virtkit-made and
//! virtkit-written images compare identical in qemu-img; the size a footer means depends on
//! its creator as in QEMU; hostile images give one-line errors and stay unchanged; a SIGKILL
//! during a convert leaves an image qemu-img opens, with every mapped block complete.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use virtkit_image::{Format, OpenOptions};

const MIB: usize = 1 << 20;

fn msg(stderr: &str, path: &Path) -> String {
    stderr
        .trim()
        .split_once(": ")
        .map(|(_, m)| m)
        .unwrap_or("")
        .replace(s(path), "IMG")
}

fn create_args(p: &Path, opts: Option<&str>, size: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = vec!["create".into(), "-f".into(), "vpc".into()];
    if let Some(o) = opts {
        a.push("-o".into());
        a.push(o.into());
    }
    a.push(s(p).into());
    if let Some(sz) = size {
        a.push(sz.into());
    }
    a
}

/// `create` with both tools (same file name in two directories); outputs must agree.
fn create_both(dir: &Path, name: &str, opts: Option<&str>, size: Option<&str>) -> (Out, Out) {
    let (vd, qd) = (dir.join("vk"), dir.join("qemu"));
    std::fs::create_dir_all(&vd).unwrap();
    std::fs::create_dir_all(&qd).unwrap();
    let (vi, qi) = (vd.join(name), qd.join(name));
    let q = qemu_img(&create_args(&qi, opts, size));
    let v = vk(&create_args(&vi, opts, size));
    let ctx = format!("create -o {opts:?} {size:?}");
    assert_eq!(
        v.stdout.replace(s(&vi), "IMG"),
        q.stdout.replace(s(&qi), "IMG"),
        "{ctx}: stdout differs"
    );
    assert_eq!(v.ok(), q.ok(), "{ctx}: {}\n{}", v.stderr, q.stderr);
    assert_eq!(msg(&v.stderr, &vi), msg(&q.stderr, &qi), "{ctx}: message");
    (v, q)
}

/// Footers equal but for timestamp, checksum and UUID.
fn mask_footer(b: &mut [u8], at: usize) {
    b[at + 24..at + 28].fill(0);
    b[at + 64..at + 84].fill(0);
}

/// The last `n` bytes of a file (fixed disks can be huge sparse files).
fn tail(p: &Path, n: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len();
    let n = n.min(len);
    let mut b = vec![0u8; n as usize];
    f.read_exact_at(&mut b, len - n).unwrap();
    b
}

#[track_caller]
fn assert_same_image(a: &Path, b: &Path) {
    let (la, lb) = (
        std::fs::metadata(a).unwrap().len(),
        std::fs::metadata(b).unwrap().len(),
    );
    assert_eq!(la, lb, "{} vs {}: length", a.display(), b.display());
    // Up to 8 MiB from the end: all of a dynamic disk, the footer and some data of a fixed one.
    let (mut x, mut y) = (tail(a, 8 << 20), tail(b, 8 << 20));
    assert_eq!(
        x.len(),
        y.len(),
        "{} vs {}: length",
        a.display(),
        b.display()
    );
    for v in [&mut x, &mut y] {
        let n = v.len();
        mask_footer(v, n - 512);
        if la <= 8 << 20 && &v[..8] == b"conectix" {
            mask_footer(v, 0);
        }
    }
    assert_bytes_eq(&format!("{} vs {}", a.display(), b.display()), &x, &y);
}

fn vsize(img: &Path) -> u64 {
    let out = qemu_img(&["info", "--output=json", "-f", "vpc", s(img)]);
    out.assert_ok();
    out.json()["virtual-size"].as_u64().unwrap()
}

#[test]
fn create_sizes_like_qemu() {
    let d = tmp();
    let mut sizes: Vec<u64> = vec![
        0,
        1,
        511,
        512,
        1000,
        34816,
        1 << 20,
        10 << 20,
        (10 << 20) + 1,
        63 * 16 * 512 * 1024,
        65535 * 16 * 63 * 512 - 512,
        65535 * 16 * 63 * 512,
        65535 * 16 * 63 * 512 + 512,
        127 << 30,
        65535 * 16 * 255 * 512 - 1,
        65535 * 16 * 255 * 512,
        200 << 30,
        2040 << 30,
    ];
    let mut rng = Rng::new(2024);
    for _ in 0..24 {
        // Odd sizes from a few KiB to 300 GiB, spread over the magnitudes.
        let bits = 12 + rng.below(27);
        sizes.push(rng.below(1 << bits) + 1);
    }
    for (i, size) in sizes.iter().enumerate() {
        for (j, opts) in [
            "subformat=dynamic",
            "subformat=fixed",
            "force_size=on",
            "subformat=fixed,force_size=on",
        ]
        .iter()
        .enumerate()
        {
            // Fixed images are sparse files of the full size: skip the huge ones.
            if opts.contains("fixed") && *size > 300 << 30 {
                continue;
            }
            let name = format!("s{i}-{j}.vhd");
            let sz = size.to_string();
            let (v, _) = create_both(d.path(), &name, Some(opts), Some(&sz));
            if !v.ok() {
                continue;
            }
            let (vi, qi) = (
                d.path().join("vk").join(&name),
                d.path().join("qemu").join(&name),
            );
            assert_same_image(&vi, &qi);
            let q = qemu_img(&["info", "--output=json", "-f", "vpc", s(&qi)]);
            let v = vk(&["info", "--output=json", "-f", "vpc", s(&vi)]);
            if !q.ok() {
                // A fixed disk of 0 bytes is its footer alone, which QEMU takes for the
                // copy at the start of a dynamic disk.
                assert!(!v.ok(), "{name}: qemu-img cannot open it, virtkit can");
                assert_eq!(msg(&v.stderr, &vi), msg(&q.stderr, &qi));
                continue;
            }
            let vs = vsize(&vi);
            assert_eq!(vs, vsize(&qi), "{name}: virtual size of {size} with {opts}");
            // virtkit reads the same size.
            assert_eq!(v.json()["virtual-size"].as_u64(), Some(vs));
            let _ = std::fs::remove_file(&vi);
            let _ = std::fs::remove_file(&qi);
        }
    }
    // Too large, with and without force_size.
    create_both(d.path(), "big.vhd", None, Some("2041G"));
    create_both(d.path(), "big2.vhd", Some("force_size=on"), Some("3T"));
}

#[test]
fn create_options_like_qemu() {
    let d = tmp();
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (None, Some("10M")),
        (Some("force_size=yes,size=1k"), None),
        (Some("size=1.5k,size=2k"), None),
        (
            Some("subformat=fixed,preallocation=full,force_size=on"),
            Some("1M"),
        ),
        (Some("preallocation=falloc"), Some("3M")),
        (Some("force_size=off,subformat=dynamic"), Some("1000")),
        (Some("subformat=xyz"), Some("1M")),
        (Some("force_size=maybe"), Some("1M")),
        (Some("preallocation=metadata"), Some("1M")),
        (Some("preallocation=xyz,subformat=fixed"), Some("1M")),
        (Some("cluster_size=4k"), Some("1M")),
        (Some("static=on"), Some("1M")),
        (None, None),
    ];
    for (i, (opts, size)) in cases.iter().enumerate() {
        let (v, _) = create_both(d.path(), &format!("o{i}.vhd"), *opts, *size);
        if !v.ok() {
            v.assert_one_line_error();
        }
    }
    let q = qemu_img(&["create", "-f", "vpc", "-o", "help", "x.vhd"]);
    let v = vk(&["create", "-f", "vpc", "-o", "help", "x.vhd"]);
    v.assert_ok();
    let ql: Vec<&str> = q.stdout.lines().collect();
    for l in v.stdout.lines() {
        assert!(
            ql.contains(&l),
            "help line {l:?} not in qemu-img's:\n{}",
            q.stdout
        );
    }
    for opt in ["size=", "subformat=", "force_size=", "preallocation="] {
        assert!(v.stdout.contains(opt));
    }
}

/// virtkit reads, maps, describes and (not) checks `img` as qemu-img does.
#[track_caller]
fn reads_like_qemu(img: &Path) {
    assert_bytes_eq(
        &format!("{} content", img.display()),
        &vk_to_raw(img, "vpc"),
        &qemu_to_raw(img, "vpc"),
    );
    assert_extents_eq(
        &format!("{} map", img.display()),
        &map_extents(&vk_map(img, "vpc"), true),
        &map_extents(&qemu_map(img, "vpc"), true),
    );
    let vi = vk(&["info", "--output=json", "-f", "vpc", s(img)]);
    vi.assert_ok();
    let qi = qemu_img(&["info", "--output=json", "-f", "vpc", s(img)]);
    assert_eq!(info_fields(&vi.json()), info_fields(&qi.json()));
    // No check for vpc in qemu-img: same message, same exit code.
    let args = ["check", "-f", "vpc", s(img)];
    let (v, q) = (vk(&args), qemu_img(&args));
    assert_eq!(v.code, q.code);
    assert_eq!(msg(&v.stderr, img), msg(&q.stderr, img));
}

#[test]
fn qemu_made_images_read_identically() {
    let d = tmp();
    for (name, opts, size) in [
        ("dyn.vhd", "subformat=dynamic", "10M"),
        ("fixed.vhd", "subformat=fixed", "10M"),
        ("odd.vhd", "subformat=dynamic", "5001k"),
        ("forced.vhd", "force_size=on", "7777k"),
        ("forced-fixed.vhd", "subformat=fixed,force_size=on", "3333k"),
    ] {
        let img = d.path().join(name);
        qemu_img(&["create", "-f", "vpc", "-o", opts, s(&img), size]).assert_ok();
        reads_like_qemu(&img);
        let len = vsize(&img);
        let cmds = [
            "write -P 0x11 0 4k".to_string(),
            "write -P 0x22 2096640 1k".to_string(),
            "write -P 0x33 1M 2M".to_string(),
            format!("write -P 0x44 {} 517", len - 3 * 512),
            format!("write -P 0x55 {} 512", len - 512),
        ];
        let cmds: Vec<&str> = cmds.iter().map(|c| c.as_str()).collect();
        qio("vpc", &img, &cmds);
        reads_like_qemu(&img);
        // Probing: fixed disks are raw to both, dynamic ones vpc.
        let q = qemu_img(&["info", "--output=json", s(&img)]).json();
        let v = vk(&["info", "--output=json", s(&img)]).json();
        assert_eq!(v["format"], q["format"], "{name}: probed format");
        assert_eq!(
            q["format"],
            if opts.contains("fixed") { "raw" } else { "vpc" }
        );
    }
    let raw = d.path().join("src.raw");
    write_raw(&raw, &gen_data(13 * MIB + 4096, 7));
    for opts in ["subformat=dynamic", "subformat=fixed"] {
        let img = d.path().join(format!("c-{opts}.vhd"));
        qemu_img(&["convert", "-O", "vpc", "-o", opts, s(&raw), s(&img)]).assert_ok();
        reads_like_qemu(&img);
    }
}

#[test]
fn virtkit_made_images_pass_qemu() {
    let d = tmp();
    for (i, size) in [24 * MIB + 4096, 3 * MIB, 2 * MIB + 512]
        .into_iter()
        .enumerate()
    {
        let raw = d.path().join(format!("src{i}.raw"));
        write_raw(&raw, &gen_data(size, 100 + i as u64));
        for opts in [
            "subformat=dynamic",
            "subformat=fixed",
            "force_size=on",
            "subformat=fixed,force_size=on",
        ] {
            let v = d.path().join(format!("v{i}-{opts}.vhd"));
            let q = d.path().join(format!("q{i}-{opts}.vhd"));
            vk(&["convert", "-O", "vpc", "-o", opts, s(&raw), s(&v)]).assert_ok();
            qemu_img(&["convert", "-O", "vpc", "-o", opts, s(&raw), s(&q)]).assert_ok();
            qemu_compare_identical(&raw, "raw", &v, "vpc");
            assert_eq!(vsize(&v), vsize(&q), "{}", v.display());
            if !opts.contains("fixed") {
                assert_extents_eq(
                    &format!("{} vs qemu-img's convert", v.display()),
                    &map_extents(&qemu_map(&v, "vpc"), true),
                    &map_extents(&qemu_map(&q, "vpc"), true),
                );
            }
            let used = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
            assert!(
                used(&v) <= used(&q) + 64 * 1024,
                "{}: {} bytes on disk, qemu-img's {}",
                v.display(),
                used(&v),
                used(&q)
            );
            let back = vk_to_raw(&v, "vpc");
            assert_bytes_eq("round trip", &back[..size], &read(&raw));
            assert!(back[size..].iter().all(|&b| b == 0));
        }
    }
}

fn random_writes(img: &Path, model: &mut [u8], seed: u64, n: usize) {
    let h = virtkit_image::open(
        img,
        &OpenOptions {
            format: Some(Format::Vpc),
            writable: true,
            ..Default::default()
        },
    )
    .unwrap();
    let size = model.len() as u64;
    let mut rng = Rng::new(seed);
    for i in 0..n {
        let len = match rng.below(4) {
            0 => rng.below(600) + 1,
            1 => rng.below(64 << 10) + 1,
            2 => rng.below(5 << 20) + 1,
            _ => 2 << 20,
        }
        .min(size);
        let off = if rng.below(3) == 0 {
            rng.below(size / (2 << 20) + 1) << 21
        } else {
            rng.below(size - len + 1)
        }
        .min(size - len);
        let (o, l) = (off as usize, len as usize);
        if i % 7 == 6 {
            h.write_zeroes(off, len, i % 2 == 0).unwrap();
            model[o..o + l].fill(0);
        } else {
            let mut buf = vec![0u8; l];
            if i % 5 != 4 {
                rng.fill(&mut buf);
            }
            h.write_at(&buf, off).unwrap();
            model[o..o + l].copy_from_slice(&buf);
        }
        if i % 10 == 0 {
            let mut back = vec![0u8; l];
            h.read_at(&mut back, off).unwrap();
            assert_bytes_eq("read back", &back, &model[o..o + l]);
        }
    }
    h.flush().unwrap();
}

#[test]
fn library_writes_pass_qemu() {
    let d = tmp();
    for (name, maker, opts) in [
        ("vk-dyn.vhd", "vk", "subformat=dynamic"),
        ("vk-fixed.vhd", "vk", "subformat=fixed"),
        ("q-dyn.vhd", "qemu", "subformat=dynamic"),
        ("q-fixed.vhd", "qemu", "subformat=fixed"),
    ] {
        let img = d.path().join(name);
        let args = ["create", "-f", "vpc", "-o", opts, s(&img), "11M"];
        if maker == "vk" {
            vk(&args).assert_ok();
        } else {
            qemu_img(&args).assert_ok();
        }
        let size = vsize(&img) as usize;
        let mut model = vec![0u8; size];
        if maker == "qemu" {
            qio(
                "vpc",
                &img,
                &["write -P 0x61 6M 10k", "write -P 0x62 2M 2M"],
            );
            model[6 * MIB..6 * MIB + 10240].fill(0x61);
            model[2 * MIB..4 * MIB].fill(0x62);
        }
        for round in 0..3 {
            random_writes(&img, &mut model, round * 31 + name.len() as u64, 40);
            assert_bytes_eq(
                &format!("{name} after round {round}"),
                &qemu_to_raw(&img, "vpc"),
                &model,
            );
            reads_like_qemu(&img);
        }
        // The footer is still the file's last sector (and, dynamic, equal to the copy).
        let b = read(&img);
        let n = b.len();
        assert_eq!(&b[n - 512..n - 504], b"conectix");
        if opts.contains("dynamic") {
            assert_eq!(b[..512], b[n - 512..]);
        }
    }
}

// ---------------------------------------------------------------------------
// Footer creators, checksums and hostile input
// ---------------------------------------------------------------------------

fn checksum(b: &[u8], field: usize) -> u32 {
    let sum = b
        .iter()
        .enumerate()
        .filter(|(i, _)| !(field..field + 4).contains(i))
        .fold(0u32, |a, (_, &x)| a.wrapping_add(x as u32));
    !sum
}

/// Recomputes the checksums of the footer copy at 0, the dynamic header and the last footer.
fn fix_sums(b: &mut [u8]) {
    let n = b.len();
    if n >= 512 && &b[..8] == b"conectix" {
        let c = checksum(&b[..512], 64);
        put_be32(b, 64, c);
    }
    if n >= 1536 && &b[512..520] == b"cxsparse" {
        let c = checksum(&b[512..1536], 36);
        put_be32(b, 512 + 36, c);
    }
    if n >= 1024 && &b[n - 512..n - 504] == b"conectix" {
        let c = checksum(&b[n - 512..], 64);
        put_be32(b, n - 512 + 64, c);
    }
}

fn with(base: &[u8], fix: bool, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = base.to_vec();
    edit(&mut b);
    if fix {
        fix_sums(&mut b);
    }
    b
}

/// Edits both footers (the copy at 0 and the last sector) the same way.
fn footers(b: &mut [u8], f: impl Fn(&mut [u8])) {
    let n = b.len();
    if &b[..8] == b"conectix" {
        f(&mut b[..512]);
    }
    f(&mut b[n - 512..]);
}

#[test]
fn creator_decides_the_size() {
    let d = tmp();
    let q10 = qemu_major() >= 10;
    // CHS for 10 MiB holds 10514432 bytes; current_size says 10 MiB.
    for fixed in [false, true] {
        let base_p = d.path().join("base.vhd");
        let opts = if fixed {
            "subformat=fixed"
        } else {
            "subformat=dynamic"
        };
        qemu_img(&["create", "-f", "vpc", "-o", opts, s(&base_p), "10M"]).assert_ok();
        let base = read(&base_p);
        for (app, chs_in_10) in [
            (*b"vpc ", true),
            (*b"qemu", true),
            (*b"qem2", false),
            (*b"win ", false),
            (*b"d2v ", false),
            (*b"tap\0", false),
            (*b"CTXS", false),
            (*b"wa\0\0", false),
            (*b"xyz ", false),
        ] {
            let b = with(&base, true, |b| {
                footers(b, |f| {
                    f[28..32].copy_from_slice(&app);
                    put_be64(f, 48, 10 << 20);
                })
            });
            let img = d.path().join("c.vhd");
            std::fs::write(&img, &b).unwrap();
            let want = if chs_in_10 { 10514432 } else { 10 << 20 };
            let v = vk(&["info", "--output=json", "-f", "vpc", s(&img)]);
            assert_eq!(v.json()["virtual-size"].as_u64(), Some(want), "{app:?}");
            // QEMU 7.2 sized unknown creators by CHS; 10.0 by current_size.
            let old_rule_differs = matches!(&app, b"wa\0\0" | b"xyz ");
            if q10 || !old_rule_differs {
                assert_eq!(vsize(&img), want, "qemu-img, creator {app:?}");
                reads_like_qemu(&img);
            }
        }
        // The maximum geometry means current_size whatever the creator.
        let b = with(&base, true, |b| {
            footers(b, |f| {
                put_be16(f, 56, 65535);
                f[58] = 16;
                f[59] = 255;
                put_be64(f, 48, 10 << 20);
            })
        });
        let img = d.path().join("m.vhd");
        std::fs::write(&img, &b).unwrap();
        assert_eq!(vsize(&img), 10 << 20);
        let v = vk(&["info", "--output=json", "-f", "vpc", s(&img)]);
        assert_eq!(v.json()["virtual-size"].as_u64(), Some(10 << 20));
    }
}

/// A qemu-made 8 MiB dynamic image with blocks 0 and 2 written (BAT at 1536).
fn hostile_base(dir: &Path) -> Vec<u8> {
    let p = dir.join("base.vhd");
    qemu_img(&["create", "-f", "vpc", "-o", "force_size=on", s(&p), "8M"]).assert_ok();
    qio("vpc", &p, &["write -P 1 0 4k", "write -P 2 4M 1M"]);
    read(&p)
}

fn probe(dir: &Path, label: &str, bytes: &[u8]) {
    let img = dir.join(format!("{label}.vhd"));
    std::fs::write(&img, bytes).unwrap();
    let out = dir.join("out.raw");
    let data = dir.join("data.raw");
    if !data.exists() {
        write_raw(&data, &gen_data(8 * MIB, 3));
    }
    let cmds: Vec<Vec<&str>> = vec![
        vec!["info", s(&img)],
        vec!["info", "--output=json", "-f", "vpc", s(&img)],
        vec!["map", "--output=json", "-f", "vpc", s(&img)],
        vec!["convert", "-f", "vpc", "-O", "raw", s(&img), s(&out)],
        vec!["compare", "-f", "vpc", "-F", "raw", s(&img), s(&data)],
        vec!["check", "-f", "vpc", s(&img)],
    ];
    for args in cmds {
        let o = vk_raw(&args, HOSTILE_TIMEOUT);
        let ctx = format!("[{label}] {}", o.cmdline);
        o.assert_sane();
        let differ = args[0] == "compare" && o.code == Some(1);
        if !o.ok() && !differ {
            o.assert_one_line_error();
        }
        if o.ok() && args.contains(&"--output=json") {
            let _ = o.json();
        }
        assert!(read(&img) == bytes, "{ctx}: the input changed");
        let _ = std::fs::remove_file(&out);
    }
    let w = vk_raw(
        &["convert", "-n", "-f", "raw", "-O", "vpc", s(&data), s(&img)],
        HOSTILE_TIMEOUT,
    );
    w.assert_sane();
    if !w.ok() {
        w.assert_one_line_error();
        assert!(
            read(&img) == bytes,
            "[{label}] failed write changed the input"
        );
    }
    std::fs::remove_file(&img).unwrap();
}

#[test]
fn hostile_images() {
    let d = tmp();
    let dir = d.path();
    let base = hostile_base(dir);
    let n = base.len();
    let bat = 1536;
    let e0 = be32(&base, bat);
    assert_ne!(e0, u32::MAX);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("bad-checksum", with(&base, false, |b| b[64] ^= 1)),
        (
            "bad-checksum-fixed-at-end",
            with(&base, false, |b| b[28] = b'x'),
        ),
        (
            "bat-on-footer",
            with(&base, true, |b| put_be32(b, bat + 4, 0)),
        ),
        (
            "bat-on-dyn-header",
            with(&base, true, |b| put_be32(b, bat + 4, 1)),
        ),
        ("bat-on-bat", with(&base, true, |b| put_be32(b, bat + 4, 3))),
        (
            "bat-duplicate",
            with(&base, true, |b| put_be32(b, bat + 4, e0)),
        ),
        (
            "bat-overlap",
            with(&base, true, |b| put_be32(b, bat + 4, e0 + 8)),
        ),
        (
            "bat-past-eof",
            with(&base, true, |b| put_be32(b, bat + 4, 0x0100_0000)),
        ),
        (
            "bat-max",
            with(&base, true, |b| put_be32(b, bat + 4, 0xffff_fffe)),
        ),
        (
            "block-size-odd",
            with(&base, true, |b| put_be32(b, 512 + 32, 3000)),
        ),
        (
            "block-size-small",
            with(&base, true, |b| put_be32(b, 512 + 32, 256)),
        ),
        (
            "block-size-huge",
            with(&base, true, |b| put_be32(b, 512 + 32, 1 << 31)),
        ),
        (
            "block-size-512",
            with(&base, true, |b| put_be32(b, 512 + 32, 512)),
        ),
        (
            "entries-huge",
            with(&base, true, |b| put_be32(b, 512 + 28, 0x7fff_ffff)),
        ),
        (
            "entries-negative",
            with(&base, true, |b| put_be32(b, 512 + 28, 0xffff_fff0)),
        ),
        (
            "entries-few",
            with(&base, true, |b| put_be32(b, 512 + 28, 1)),
        ),
        (
            "entries-file",
            with(&base, true, |b| put_be32(b, 512 + 28, 0x0010_0000)),
        ),
        (
            "table-past-eof",
            with(&base, true, |b| put_be64(b, 512 + 16, 1 << 40)),
        ),
        (
            "table-absurd",
            with(&base, true, |b| put_be64(b, 512 + 16, u64::MAX - 10)),
        ),
        (
            "table-at-0",
            with(&base, true, |b| put_be64(b, 512 + 16, 0)),
        ),
        (
            "dyn-offset-far",
            with(&base, true, |b| put_be64(b, 16, 1 << 62)),
        ),
        (
            "dyn-offset-max",
            with(&base, true, |b| put_be64(b, 16, u64::MAX)),
        ),
        ("dyn-offset-0", with(&base, true, |b| put_be64(b, 16, 0))),
        ("dyn-magic", with(&base, true, |b| b[512] = b'X')),
        (
            "size-absurd",
            with(&base, true, |b| {
                put_be16(b, 56, 65535);
                b[58] = 16;
                b[59] = 255;
                put_be64(b, 48, 3 << 40);
            }),
        ),
        (
            "size-beyond-bat",
            with(&base, true, |b| put_be64(b, 48, 100 << 20)),
        ),
        ("type-fixed-at-0", with(&base, true, |b| put_be32(b, 60, 2))),
        (
            "type-differencing",
            with(&base, true, |b| put_be32(b, 60, 4)),
        ),
        ("trunc-100", base[..100].to_vec()),
        ("trunc-footer", base[..512].to_vec()),
        ("trunc-dyn", base[..1000].to_vec()),
        ("trunc-bat", base[..1700].to_vec()),
        ("trunc-block", base[..n - 4096].to_vec()),
        ("no-end-footer", base[..n - 512].to_vec()),
        ("empty", Vec::new()),
    ];
    for (label, bytes) in &cases {
        probe(dir, label, bytes);
    }
    // Where qemu-img refuses too, it says the same.
    for label in [
        "bad-checksum",
        "bat-past-eof",
        "block-size-odd",
        "block-size-small",
        "entries-huge",
        "entries-negative",
        "entries-few",
        "table-past-eof",
        "dyn-offset-far",
        "dyn-offset-max",
        "dyn-magic",
        "size-absurd",
        "trunc-bat",
        "trunc-block",
        "trunc-100",
    ] {
        let bytes = &cases.iter().find(|c| c.0 == label).unwrap().1;
        let img = dir.join(format!("{label}.vhd"));
        std::fs::write(&img, bytes).unwrap();
        let args = ["info", "-f", "vpc", s(&img)];
        let (v, q) = (vk(&args), qemu_img(&args));
        assert!(
            !v.ok() && !q.ok(),
            "{label}: both refuse it\n{}{}",
            v.stdout,
            q.stdout
        );
        assert_eq!(
            msg(&v.stderr, &img),
            msg(&q.stderr, &img),
            "{label}: message"
        );
    }
    // Fixed disks: footer checksum, a footer that claims more data than the file holds.
    let fp = dir.join("fixed.vhd");
    qemu_img(&["create", "-f", "vpc", "-o", "subformat=fixed", s(&fp), "4M"]).assert_ok();
    qio("vpc", &fp, &["write -P 7 1M 64k"]);
    let fixed = read(&fp);
    let fcases: Vec<(&str, Vec<u8>)> = vec![
        (
            "fixed-checksum",
            with(&fixed, false, |b| b[fixed.len() - 1] ^= 1),
        ),
        (
            "fixed-too-big",
            with(&fixed, true, |b| {
                let n = b.len();
                put_be16(&mut b[n - 512..], 56, 2000);
            }),
        ),
        (
            "fixed-absurd",
            with(&fixed, true, |b| {
                let n = b.len();
                b[n - 512 + 28..n - 512 + 32].copy_from_slice(b"win ");
                put_be64(&mut b[n - 512..], 48, 3 << 40);
            }),
        ),
        (
            "fixed-type-dynamic",
            with(&fixed, true, |b| {
                let n = b.len();
                put_be32(&mut b[n - 512..], 60, 3);
            }),
        ),
        ("fixed-trunc", fixed[..fixed.len() - 100].to_vec()),
    ];
    for (label, bytes) in &fcases {
        probe(dir, label, bytes);
    }
    // Seeded byte flips over the footer, the dynamic header and the BAT, checksums fixed so
    // that the fields themselves are tested.
    let mut rng = Rng::new(77);
    for i in 0..80 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(2048) as usize;
            b[at] = rng.below(256) as u8;
        }
        fix_sums(&mut b);
        probe(dir, &format!("flip{i}"), &b);
    }
}

// ---------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------

#[test]
fn kill_during_convert_to_vpc() {
    let d = tmp();
    let size = 192 * MIB;
    let src_data = gen_data(size, 6);
    let src = d.path().join("src.raw");
    write_raw(&src, &src_data);
    let dst = d.path().join("dst.vhd");
    let args = ["convert", "-f", "raw", "-O", "vpc", s(&src), s(&dst)];
    let t = Instant::now();
    vk(&args).assert_ok();
    let full = t.elapsed().as_millis().max(50) as u64;
    let mut rng = Rng::new(41);
    let mut interrupted = 0;
    for i in 0..6 {
        let _ = std::fs::remove_file(&dst);
        let delay = Duration::from_millis((full / 10 + rng.below(full * 85 / 100 + 1)).max(20));
        interrupted += kill_after(&args, delay) as usize;
        if !dst.exists() {
            continue;
        }
        let ctx = format!("kill #{i} after {delay:?}");
        // qemu-img opens it (no "truncated" image), the footer is the last sector, and every
        // sector holds its final content or, not written yet, zero.
        let got = qemu_to_raw(&dst, "vpc");
        let b = read(&dst);
        assert_eq!(
            &b[b.len() - 512..b.len() - 504],
            b"conectix",
            "{ctx}: footer"
        );
        for (i, sec) in got[..size].chunks(512).enumerate() {
            let r = i * 512..(i + 1) * 512;
            assert!(
                sec.iter().all(|&x| x == 0) || sec == &src_data[r],
                "{ctx}: sector {i} holds neither zeros nor the source's data"
            );
        }
        // Writing on goes on from there.
        vk(&["convert", "-n", "-f", "raw", "-O", "vpc", s(&src), s(&dst)]).assert_ok();
        qemu_compare_identical(&src, "raw", &dst, "vpc");
    }
    assert!(
        interrupted > 0,
        "no run was interrupted (a full run takes {full} ms)"
    );
}
