//! vdi (VirtualBox) against the real qemu-img, both directions: images qemu-img makes read
//! byte-identical and map identically through virtkit; images virtkit makes (create, convert,
//! writes at any offset) pass `qemu-img check` and `qemu-img compare`; create and check say
//! what qemu-img says; hostile images give one-line errors and stay unchanged; a SIGKILL
//! during writes leaves a clean image with the data written so far intact.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};
use virtkit_image::{Format, OpenOptions};

const MIB: usize = 1 << 20;

/// The message after the program name ("qemu-img: " / "virtkit: ").
fn msg(stderr: &str, path: &Path) -> String {
    stderr
        .trim()
        .split_once(": ")
        .map(|(_, m)| m)
        .unwrap_or("")
        .replace(s(path), "IMG")
}

/// `create` with both tools (same file name in two directories).
fn create_both(dir: &Path, name: &str, opts: Option<&str>, size: Option<&str>) -> (Out, Out) {
    let (vd, qd) = (dir.join("vk"), dir.join("qemu"));
    std::fs::create_dir_all(&vd).unwrap();
    std::fs::create_dir_all(&qd).unwrap();
    let args = |p: &Path| {
        let mut a: Vec<String> = vec!["create".into(), "-f".into(), "vdi".into()];
        if let Some(o) = opts {
            a.push("-o".into());
            a.push(o.into());
        }
        a.push(s(p).into());
        if let Some(sz) = size {
            a.push(sz.into());
        }
        a
    };
    let (vi, qi) = (vd.join(name), qd.join(name));
    let q = qemu_img(&args(&qi));
    let v = vk(&args(&vi));
    assert_eq!(
        v.stdout.replace(s(&vi), "IMG"),
        q.stdout.replace(s(&qi), "IMG"),
        "create -o {opts:?} {size:?}: stdout differs"
    );
    assert_eq!(
        v.code.map(|c| c != 0),
        q.code.map(|c| c != 0),
        "create -o {opts:?} {size:?}: exit {:?} vs qemu-img's {:?}\n{}\n{}",
        v.code,
        q.code,
        v.stderr,
        q.stderr
    );
    assert_eq!(
        msg(&v.stderr, &vi),
        msg(&q.stderr, &qi),
        "create -o {opts:?} {size:?}: message differs"
    );
    (v, q)
}

/// The two files are the same but for the random UUIDs (image and last snapshot).
#[track_caller]
fn assert_same_but_uuids(a: &Path, b: &Path) {
    let (mut x, mut y) = (read(a), read(b));
    assert_eq!(
        x.len(),
        y.len(),
        "{} vs {}: length",
        a.display(),
        b.display()
    );
    for v in [&mut x, &mut y] {
        v[0x188..0x1a8].fill(0);
    }
    assert_bytes_eq(&format!("{} vs {}", a.display(), b.display()), &x, &y);
}

#[test]
fn create_like_qemu() {
    let d = tmp();
    let cases: &[(Option<&str>, &str)] = &[
        (None, "10M"),
        (Some("static=on"), "10M"),
        (None, "0"),
        (None, "1000"),
        (None, "1.5k"),
        (Some("static=on"), "3000"),
        (Some("static=true"), "5M"),
        (Some("preallocation=full"), "3M"),
        (Some("static=off,preallocation=falloc"), "1G"),
        (Some("static=on,preallocation=off"), "2049k"),
        (None, "100G"),
    ];
    for (i, (opts, size)) in cases.iter().enumerate() {
        let name = format!("c{i}.vdi");
        create_both(d.path(), &name, *opts, Some(size));
        let (vi, qi) = (
            d.path().join("vk").join(&name),
            d.path().join("qemu").join(&name),
        );
        assert_same_but_uuids(&vi, &qi);
        qemu_check_clean(&vi);
        assert_eq!(
            info_fields(&qemu_info_json(&vi)),
            info_fields(&qemu_info_json(&qi))
        );
        // UUIDs: random version 4, and not the same twice.
        let h = read(&vi);
        assert_eq!(h[0x188 + 7] >> 4, 4, "uuid version");
        assert_ne!(h[0x188..0x198], h[0x198..0x1a8]);
    }
    // size= inside -o, and a later size= wins
    create_both(d.path(), "o.vdi", Some("size=1M,size=2M"), None);
}

#[test]
fn create_errors_like_qemu() {
    let d = tmp();
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (Some("static=2"), Some("1M")),
        (Some("preallocation=metadata"), Some("1M")),
        (Some("preallocation=xyz"), Some("1M")),
        (None, Some("3P")),
        (None, Some("2P")),
        (Some("cluster_size=4k"), Some("1M")),
        (Some("subformat=fixed"), Some("1M")),
        (None, None),
    ];
    for (i, (opts, size)) in cases.iter().enumerate() {
        let (v, _) = create_both(d.path(), &format!("e{i}.vdi"), *opts, *size);
        assert!(!v.ok(), "create -o {opts:?} {size:?} should fail");
        v.assert_one_line_error();
    }
    // -o help: qemu-img's list, less the file options virtkit does not offer.
    let q = qemu_img(&["create", "-f", "vdi", "-o", "help", "x.vdi"]);
    let v = vk(&["create", "-f", "vdi", "-o", "help", "x.vdi"]);
    v.assert_ok();
    let ql: Vec<&str> = q.stdout.lines().collect();
    for l in v.stdout.lines() {
        assert!(
            ql.contains(&l),
            "help line {l:?} not in qemu-img's:\n{}",
            q.stdout
        );
    }
    for opt in ["size=", "static=", "preallocation="] {
        assert!(v.stdout.contains(opt));
    }
}

/// virtkit and qemu-img read, map, info and check `img` alike.
#[track_caller]
fn reads_like_qemu(img: &Path) {
    assert_bytes_eq(
        &format!("{} content", img.display()),
        &vk_to_raw(img, "vdi"),
        &qemu_to_raw(img, "vdi"),
    );
    let (vm, qm) = (vk_map(img, "vdi"), qemu_map(img, "vdi"));
    assert_extents_eq(
        &format!("{} map", img.display()),
        &map_extents(&vm, true),
        &map_extents(&qm, true),
    );
    let vi = vk(&["info", "--output=json", s(img)]);
    vi.assert_ok();
    assert_eq!(info_fields(&vi.json()), info_fields(&qemu_info_json(img)));
    check_like_qemu(img);
}

/// `check` prints and exits as qemu-img's does.
#[track_caller]
fn check_like_qemu(img: &Path) {
    for json in [false, true] {
        let mut args = vec!["check", "-f", "vdi"];
        if json {
            args.push("--output=json");
        }
        args.push(s(img));
        let (v, q) = (vk(&args), qemu_img(&args));
        assert_eq!(
            v.code,
            q.code,
            "{}: check exit\n{}{}",
            img.display(),
            v.stderr,
            q.stderr
        );
        assert_eq!(v.stdout, q.stdout, "{}: check output", img.display());
        assert_eq!(v.stderr, q.stderr, "{}: check messages", img.display());
    }
}

#[test]
fn qemu_made_images_read_identically() {
    let d = tmp();
    for (name, opts, size) in [
        ("dyn.vdi", "static=off", "10M"),
        ("static.vdi", "static=on", "10M"),
        ("odd.vdi", "static=off", "5000k"),
        ("odd-static.vdi", "static=on", "3073k"),
    ] {
        let img = d.path().join(name);
        qemu_img(&["create", "-f", "vdi", "-o", opts, s(&img), size]).assert_ok();
        reads_like_qemu(&img);
        // Partial blocks, a write across a block boundary, a whole block, the last sector.
        let len = qemu_info_json(&img)["virtual-size"].as_u64().unwrap();
        let cmds = [
            "write -P 0x11 0 4k".to_string(),
            "write -P 0x22 1048064 1k".to_string(),
            "write -P 0x33 2M 1M".to_string(),
            format!("write -P 0x44 {} 517", len - 3 * 512),
            format!("write -P 0x55 {} 512", len - 512),
        ];
        let cmds: Vec<&str> = cmds.iter().map(|c| c.as_str()).collect();
        qio("vdi", &img, &cmds);
        reads_like_qemu(&img);
    }
    // Converted by qemu-img from mixed data, dynamic and static.
    let raw = d.path().join("src.raw");
    write_raw(&raw, &gen_data(13 * MIB + 4096, 7));
    for (name, opts) in [("cd.vdi", "static=off"), ("cs.vdi", "static=on")] {
        let img = d.path().join(name);
        qemu_img(&["convert", "-O", "vdi", "-o", opts, s(&raw), s(&img)]).assert_ok();
        reads_like_qemu(&img);
        qemu_compare_identical(&raw, "raw", &img, "vdi");
    }
    // Probing: virtkit says vdi where qemu-img does.
    let img = d.path().join("cd.vdi");
    let v = vk(&["info", "--output=json", s(&img)]);
    assert_eq!(v.json()["format"], "vdi");
}

#[test]
fn virtkit_made_images_pass_qemu() {
    let d = tmp();
    for (i, size) in [24 * MIB + 4096, 3 * MIB, 2048 * 1024 + 512]
        .into_iter()
        .enumerate()
    {
        let raw = d.path().join(format!("src{i}.raw"));
        write_raw(&raw, &gen_data(size, 100 + i as u64));
        for opts in ["static=off", "static=on"] {
            let v = d.path().join(format!("v{i}-{opts}.vdi"));
            let q = d.path().join(format!("q{i}-{opts}.vdi"));
            vk(&["convert", "-O", "vdi", "-o", opts, s(&raw), s(&v)]).assert_ok();
            qemu_img(&["convert", "-O", "vdi", "-o", opts, s(&raw), s(&q)]).assert_ok();
            qemu_check_clean(&v);
            qemu_compare_identical(&raw, "raw", &v, "vdi");
            assert_eq!(
                info_fields(&qemu_info_json(&v)),
                info_fields(&qemu_info_json(&q))
            );
            if opts == "static=off" {
                // Same allocation as qemu-img's convert (same blocks, same order).
                assert_extents_eq(
                    &format!("{} vs qemu-img's convert", v.display()),
                    &map_extents(&qemu_map(&v, "vdi"), true),
                    &map_extents(&qemu_map(&q, "vdi"), true),
                );
            }
            // As sparse as qemu-img's (zero pages left as holes; qemu-img aligns them to
            // the guest's 4 KiB, virtkit to the file's, so the layouts differ slightly).
            let used = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
            assert!(
                used(&v) <= used(&q) + 64 * 1024,
                "{}: {} bytes on disk, qemu-img's {}",
                v.display(),
                used(&v),
                used(&q)
            );
            // And back.
            assert_bytes_eq("round trip", &vk_to_raw(&v, "vdi"), &read(&raw));
        }
    }
}

/// Random writes of any length at any offset through the library, against a model.
fn random_writes(img: &Path, model: &mut [u8], seed: u64, n: usize) {
    let h = virtkit_image::open(
        img,
        &OpenOptions {
            format: Some(Format::Vdi),
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
            2 => rng.below(3 << 20) + 1,
            _ => 1 << 20,
        }
        .min(size);
        let off = if rng.below(3) == 0 {
            rng.below(size / (1 << 20) + 1) << 20
        } else {
            rng.below(size - len + 1)
        }
        .min(size - len);
        let (o, l) = (off as usize, len as usize);
        if i % 7 == 6 {
            h.write_zeroes(off, len, true).unwrap();
            model[o..o + l].fill(0);
        } else {
            let mut buf = vec![0u8; l];
            rng.fill(&mut buf);
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
    let size = 9 * MIB + 1536;
    for (name, maker, opts) in [
        ("vk-dyn.vdi", "vk", "static=off"),
        ("vk-static.vdi", "vk", "static=on"),
        ("q-dyn.vdi", "qemu", "static=off"),
        ("q-static.vdi", "qemu", "static=on"),
    ] {
        let img = d.path().join(name);
        let args = [
            "create",
            "-f",
            "vdi",
            "-o",
            opts,
            s(&img),
            &size.to_string(),
        ];
        if maker == "vk" {
            vk(&args).assert_ok();
        } else {
            qemu_img(&args).assert_ok();
        }
        let mut model = vec![0u8; size];
        if maker == "qemu" {
            // Some blocks qemu-io allocated first, in its order.
            qio(
                "vdi",
                &img,
                &["write -P 0x61 5M 10k", "write -P 0x62 1M 1M"],
            );
            model[5 * MIB..5 * MIB + 10240].fill(0x61);
            model[MIB..2 * MIB].fill(0x62);
        }
        for round in 0..3 {
            random_writes(&img, &mut model, round * 31 + name.len() as u64, 40);
            qemu_check_clean(&img);
            assert_bytes_eq(
                &format!("{name} after round {round}"),
                &qemu_to_raw(&img, "vdi"),
                &model,
            );
            reads_like_qemu(&img);
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

/// A qemu-made 8 MiB dynamic image with blocks 0, 1, 3 and 5 allocated (in that order).
fn hostile_base(dir: &Path) -> Vec<u8> {
    let p = dir.join("base.vdi");
    qemu_img(&["create", "-f", "vdi", s(&p), "8M"]).assert_ok();
    qio(
        "vdi",
        &p,
        &[
            "write -P 1 0 4k",
            "write -P 2 1M 1M",
            "write -P 3 3M 100",
            "write -P 4 5M 1M",
        ],
    );
    read(&p)
}

/// Read-only commands finish sanely, fail with one line (check may print more), and leave
/// the file alone; a write attempt fails with one line or succeeds.
fn probe(dir: &Path, label: &str, bytes: &[u8]) {
    let img = dir.join(format!("{label}.vdi"));
    std::fs::write(&img, bytes).unwrap();
    let out = dir.join("out.raw");
    let clean = dir.join("clean.raw");
    std::fs::write(&clean, vec![0u8; 8 * MIB]).unwrap();
    let data = dir.join("data.raw");
    write_raw(&data, &gen_data(8 * MIB, 3));
    let cmds: Vec<Vec<&str>> = vec![
        vec!["info", s(&img)],
        vec!["info", "--output=json", "-f", "vdi", s(&img)],
        vec!["map", "--output=json", "-f", "vdi", s(&img)],
        vec!["convert", "-f", "vdi", "-O", "raw", s(&img), s(&out)],
        vec!["compare", "-f", "vdi", "-F", "raw", s(&img), s(&clean)],
        vec!["check", "-f", "vdi", s(&img)],
        vec!["check", "-f", "vdi", "--output=json", s(&img)],
    ];
    for args in cmds {
        let o = vk_raw(&args, HOSTILE_TIMEOUT);
        let ctx = format!("[{label}] {}", o.cmdline);
        o.assert_sane();
        let differ = args[0] == "compare" && o.code == Some(1);
        if !o.ok() && !differ && args[0] != "check" {
            o.assert_one_line_error();
        }
        if args[0] == "check" {
            assert!(matches!(o.code, Some(0..=3)), "{ctx}: exit {:?}", o.code);
        }
        if o.ok() && args.contains(&"--output=json") {
            let _ = o.json();
        }
        assert!(read(&img) == bytes, "{ctx}: the input changed");
        let _ = std::fs::remove_file(&out);
    }
    // Writes: refused with one line (image unchanged), or done.
    let w = vk_raw(
        &["convert", "-n", "-f", "raw", "-O", "vdi", s(&data), s(&img)],
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

fn with(base: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = base.to_vec();
    edit(&mut b);
    b
}

#[test]
fn hostile_images() {
    let d = tmp();
    let dir = d.path();
    let base = hostile_base(dir);
    let bmap = 0x200;
    assert_eq!(le32(&base, 0x184), 4);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "entry-past-eof",
            with(&base, |b| put_le32(b, bmap + 4 * 7, 6)),
        ),
        (
            "entry-too-large",
            with(&base, |b| put_le32(b, bmap + 4 * 2, 0x7fff_0000)),
        ),
        (
            "entry-duplicate",
            with(&base, |b| put_le32(b, bmap + 4 * 7, 1)),
        ),
        ("count-high", with(&base, |b| put_le32(b, 0x184, 9))),
        ("count-low", with(&base, |b| put_le32(b, 0x184, 1))),
        (
            "count-absurd",
            with(&base, |b| put_le32(b, 0x184, u32::MAX)),
        ),
        (
            "blocks-huge",
            with(&base, |b| put_le32(b, 0x180, 0x1fff_ff80)),
        ),
        (
            "blocks-over-max",
            with(&base, |b| put_le32(b, 0x180, 0x7fff_ffff)),
        ),
        ("blocks-zero", with(&base, |b| put_le32(b, 0x180, 0))),
        (
            "disk-size-absurd",
            with(&base, |b| put_le64(b, 0x170, 1 << 60)),
        ),
        (
            "disk-size-no-room",
            with(&base, |b| put_le64(b, 0x170, 9 << 20)),
        ),
        (
            "disk-size-odd",
            with(&base, |b| put_le64(b, 0x170, (8 << 20) - 100)),
        ),
        ("block-size", with(&base, |b| put_le32(b, 0x178, 4096))),
        ("sector-size", with(&base, |b| put_le32(b, 0x168, 4096))),
        ("version", with(&base, |b| put_le32(b, 0x44, 0x0001_0002))),
        ("bmap-unaligned", with(&base, |b| put_le32(b, 0x154, 0x201))),
        ("bmap-in-header", with(&base, |b| put_le32(b, 0x154, 0))),
        (
            "bmap-past-eof",
            with(&base, |b| put_le32(b, 0x154, 0x4000_0000)),
        ),
        ("data-over-bmap", with(&base, |b| put_le32(b, 0x158, 0x200))),
        ("data-in-header", with(&base, |b| put_le32(b, 0x158, 0))),
        ("data-far", with(&base, |b| put_le32(b, 0x158, 0xffff_fe00))),
        ("link-uuid", with(&base, |b| b[0x1a8] = 1)),
        ("parent-uuid", with(&base, |b| b[0x1c7] = 1)),
        ("static-holes", with(&base, |b| put_le32(b, 0x4c, 2))),
        ("type-absurd", with(&base, |b| put_le32(b, 0x4c, 77))),
        ("trunc-300", base[..300].to_vec()),
        ("trunc-header", base[..512].to_vec()),
        ("trunc-bmap", base[..0x210].to_vec()),
        ("trunc-mid-block", base[..base.len() - 1000].to_vec()),
        ("trunc-data", base[..0x400 + 4096].to_vec()),
        ("empty", Vec::new()),
    ];
    for (label, bytes) in &cases {
        probe(dir, label, bytes);
    }
    // Where qemu-img opens the image, check reports what qemu-img's reports; where qemu-img
    // refuses it, the message is qemu-img's.
    for label in [
        "entry-too-large",
        "entry-duplicate",
        "count-high",
        "count-low",
        "count-absurd",
        "entry-past-eof",
        "disk-size-odd",
    ] {
        let bytes = &cases.iter().find(|c| c.0 == label).unwrap().1;
        let img = dir.join(format!("{label}.vdi"));
        std::fs::write(&img, bytes).unwrap();
        check_like_qemu(&img);
    }
    for label in [
        "blocks-over-max",
        "disk-size-absurd",
        "disk-size-no-room",
        "block-size",
        "sector-size",
        "version",
        "bmap-unaligned",
        "link-uuid",
        "parent-uuid",
        "trunc-300",
    ] {
        let bytes = &cases.iter().find(|c| c.0 == label).unwrap().1;
        let img = dir.join(format!("{label}.vdi"));
        std::fs::write(&img, bytes).unwrap();
        let args = ["info", "-f", "vdi", s(&img)];
        let (v, q) = (vk(&args), qemu_img(&args));
        assert!(!v.ok() && !q.ok(), "{label}: both refuse it");
        assert_eq!(
            msg(&v.stderr, &img),
            msg(&q.stderr, &img),
            "{label}: message"
        );
    }
    // Seeded byte flips over the header and the block map.
    let mut rng = Rng::new(99);
    for i in 0..60 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(0x240) as usize;
            b[at] = rng.below(256) as u8;
        }
        probe(dir, &format!("flip{i}"), &b);
    }
}

/// Writes that go through a sound map, even one the header miscounts, keep images
/// consistent: a count too high after a crash in QEMU's order does not make virtkit reuse a
/// block.
#[test]
fn miscounted_header_never_reuses_a_block() {
    let d = tmp();
    let base = hostile_base(d.path());
    let img = d.path().join("low.vdi");
    // Header says 2 blocks, the map uses 4: the next block must not be index 2 or 3.
    std::fs::write(&img, with(&base, |b| put_le32(b, 0x184, 2))).unwrap();
    let mut model = qemu_to_raw(&img, "vdi");
    let h = virtkit_image::open(
        &img,
        &OpenOptions {
            format: Some(Format::Vdi),
            writable: true,
            ..Default::default()
        },
    )
    .unwrap();
    h.write_at(&[0x77; 4096], 7 << 20).unwrap();
    drop(h);
    model[7 * MIB..7 * MIB + 4096].fill(0x77);
    assert_bytes_eq("after write", &qemu_to_raw(&img, "vdi"), &model);
    let b = read(&img);
    assert_eq!(le32(&b, 0x200 + 4 * 7), 4, "new block after every used one");
    assert_eq!(le32(&b, 0x184), 5);
    qemu_check_clean(&img);
}

// ---------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------

fn full_run(args: &[&str]) -> Duration {
    let t = Instant::now();
    vk(args).assert_ok();
    t.elapsed()
}

/// qemu-img check passes (vdi has no leak category: a lost block is not reported).
#[track_caller]
fn check_after_kill(img: &Path, ctx: &str) {
    let q = qemu_img(&["check", "-f", "vdi", s(img)]);
    assert!(
        matches!(q.code, Some(0 | 3)),
        "{ctx}: qemu-img check exited {:?}\n{}{}",
        q.code,
        q.stdout,
        q.stderr
    );
}

/// Each 512-byte sector of `got` equals that sector of one of `sources`, or is zero (a
/// kill may cut a write between two pages of the file, never inside a sector).
#[track_caller]
fn assert_sectors_from(got: &[u8], sources: &[&[u8]], ctx: &str) {
    for (i, sec) in got.chunks(512).enumerate() {
        let r = i * 512..i * 512 + sec.len();
        let ok =
            sec.iter().all(|&x| x == 0) || sources.iter().any(|s| s.get(r.clone()) == Some(sec));
        assert!(ok, "{ctx}: sector {i} holds neither old nor new data");
    }
}

#[test]
fn kill_during_convert_to_vdi() {
    let d = tmp();
    let size = 256 * MIB;
    let src_data = gen_data(size, 5);
    let src = d.path().join("src.raw");
    write_raw(&src, &src_data);
    let dst = d.path().join("dst.vdi");
    let args = ["convert", "-f", "raw", "-O", "vdi", s(&src), s(&dst)];
    let full = full_run(&args).as_millis().max(50) as u64;
    let mut rng = Rng::new(17);
    let mut interrupted = 0;
    for i in 0..8 {
        let _ = std::fs::remove_file(&dst);
        let delay = Duration::from_millis((full / 10 + rng.below(full * 85 / 100 + 1)).max(20));
        interrupted += kill_after(&args, delay) as usize;
        if !dst.exists() {
            continue;
        }
        let ctx = format!("kill #{i} after {delay:?}");
        check_after_kill(&dst, &ctx);
        // Every sector holds its final content or, not written yet, zero: nothing else.
        let got = qemu_to_raw(&dst, "vdi");
        assert_sectors_from(&got, &[&src_data], &ctx);
    }
    assert!(
        interrupted > 0,
        "no run was interrupted (a full run takes {full} ms)"
    );
    let _ = std::fs::remove_file(&dst);
    vk(&args).assert_ok();
    qemu_check_clean(&dst);
    qemu_compare_identical(&src, "raw", &dst, "vdi");
}

#[test]
fn kill_during_overwrite_of_vdi() {
    let d = tmp();
    let size = 128 * MIB;
    let old = gen_data(size, 8);
    let new = gen_data(size, 9);
    let old_raw = d.path().join("old.raw");
    let new_raw = d.path().join("new.raw");
    write_raw(&old_raw, &old);
    write_raw(&new_raw, &new);
    let orig = d.path().join("orig.vdi");
    // Half the blocks allocated by qemu-img, the rest left for virtkit to allocate.
    qemu_img(&["create", "-f", "vdi", s(&orig), &size.to_string()]).assert_ok();
    qemu_img(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "vdi",
        s(&old_raw),
        s(&orig),
    ])
    .assert_ok();
    let dst = d.path().join("dst.vdi");
    let args = [
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "vdi",
        s(&new_raw),
        s(&dst),
    ];
    std::fs::copy(&orig, &dst).unwrap();
    let full = full_run(&args).as_millis().max(50) as u64;
    let mut rng = Rng::new(23);
    let mut interrupted = 0;
    for i in 0..6 {
        std::fs::copy(&orig, &dst).unwrap();
        let delay = Duration::from_millis((full / 10 + rng.below(full * 85 / 100 + 1)).max(20));
        interrupted += kill_after(&args, delay) as usize;
        let ctx = format!("kill #{i} after {delay:?}");
        check_after_kill(&dst, &ctx);
        // Each sector holds the old or the new data, nothing else.
        let got = qemu_to_raw(&dst, "vdi");
        assert_sectors_from(&got, &[&old, &new], &ctx);
    }
    assert!(
        interrupted > 0,
        "no run was interrupted (a full run takes {full} ms)"
    );
    std::fs::copy(&orig, &dst).unwrap();
    vk(&args).assert_ok();
    qemu_check_clean(&dst);
    qemu_compare_identical(&new_raw, "raw", &dst, "vdi");
}
