//! vmdk end to end through the binary, with qemu-img as the oracle: creation (options,
//! Formatting lines, files byte for byte), every subformat in both directions, info / map /
//! check output, backing chains through parentFileNameHint, convert -c per subformat,
//! hostile descriptors and headers, and SIGKILL during writes.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SUBFORMATS: [&str; 5] = [
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
    "streamOptimized",
];

/// stderr without the program name qemu-img or virtkit put before each message.
fn msg(o: &Out) -> String {
    o.stderr
        .lines()
        .map(|l| {
            l.strip_prefix("qemu-img: ")
                .or_else(|| l.strip_prefix("virtkit: "))
                .unwrap_or(l)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `args` with qemu-img and virtkit in `dir` (relative names, so outputs compare).
fn both(dir: &Path, args: &[&str]) -> (Out, Out) {
    let mut q = std::process::Command::new(qemu_img_bin());
    q.current_dir(dir).args(args);
    let q = run_cmd(q, TIMEOUT);
    let mut v = vk_command(args);
    v.current_dir(dir);
    let v = run_cmd(v, TIMEOUT);
    v.assert_sane();
    (q, v)
}

/// The descriptor text with its CID line (random at creation) masked.
fn mask_cid(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"\nCID=") {
            out.extend_from_slice(b"\nCID=");
            i += 5;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Two files equal but for the CID of their descriptor (embedded ones included: the text
/// ends at its first NUL, the 20 descriptor sectors are padding after it).
fn same_but_cid(a: &[u8], b: &[u8]) -> bool {
    if a.starts_with(b"KDMV") && b.starts_with(b"KDMV") && a.len() == b.len() && a.len() > 10752 {
        let text = |x: &[u8]| {
            let d = &x[512..10752];
            mask_cid(&d[..d.iter().position(|&c| c == 0).unwrap_or(d.len())])
        };
        return a[..512] == b[..512] && text(a) == text(b) && a[10752..] == b[10752..];
    }
    mask_cid(a) == mask_cid(b)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn create_help_formatting_lines_and_files_match_qemu() {
    let (q, v) = both(Path::new("/"), &["create", "-f", "vmdk", "-o", "help"]);
    assert_eq!(v.stdout, q.stdout, "-o help");
    let option_sets: &[&str] = &[
        "",
        "subformat=monolithicFlat",
        "subformat=twoGbMaxExtentSparse",
        "subformat=twoGbMaxExtentFlat",
        "subformat=streamOptimized",
        "adapter_type=lsilogic,hwversion=7,toolsversion=10240",
        "adapter_type=buslogic,compat6=on",
        "adapter_type=legacyESX,zeroed_grain=on",
        "zeroed_grain=yes,compat6=y,subformat=twoGbMaxExtentSparse",
        "subformat=streamOptimized,zeroed_grain=on,adapter_type=ide",
    ];
    for (i, o) in option_sets.iter().enumerate() {
        for size in ["5G", "1000", "7M"] {
            let qd = tmp();
            let vd = tmp();
            let mut args = vec!["create", "-f", "vmdk"];
            if !o.is_empty() {
                args.extend(["-o", o]);
            }
            args.extend(["d.vmdk", size]);
            let (q, _) = both(qd.path(), &args);
            let (_, v) = both(vd.path(), &args);
            q.assert_ok();
            v.assert_ok();
            assert_eq!(
                v.stdout, q.stdout,
                "set {i}: Formatting line for {o:?} {size}"
            );
            assert_eq!(files_in(vd.path()), files_in(qd.path()), "set {i}: files");
            for f in files_in(qd.path()) {
                let (qa, va) = (qd.path().join(&f), vd.path().join(&f));
                if std::fs::metadata(&qa).unwrap().len() > 64 << 20 {
                    // Flat extents: sparse files of the image's size.
                    files_equal(&qa, &va, &format!("set {i}: {f}"));
                    continue;
                }
                assert!(
                    same_but_cid(&read(&qa), &read(&va)),
                    "set {i} ({o:?} {size}): {f} differs from qemu-img's"
                );
            }
        }
    }
}

#[test]
fn create_errors_match_qemu() {
    let cases: &[&[&str]] = &[
        &["-o", "adapter_type=scsi"],
        &["-o", "subformat=monolithic"],
        &["-o", "compat6=maybe"],
        &["-o", "zeroed_grain=2"],
        &["-o", "compat6=on,hwversion=7"],
        &["-o", "subformat=monolithicFlat,zeroed_grain=on"],
        &["-o", "backing_fmt=qcow2"],
        &["-o", "bogus=1"],
    ];
    for c in cases {
        let d = tmp();
        let mut args = vec!["create", "-f", "vmdk"];
        args.extend_from_slice(c);
        args.extend(["e.vmdk", "1M"]);
        let (q, v) = both(d.path(), &args);
        assert_eq!(v.code, q.code, "{c:?}: exit code");
        assert_eq!(v.stdout, q.stdout, "{c:?}: stdout");
        assert_eq!(msg(&v), msg(&q), "{c:?}: message");
        v.assert_stderr_at_most_one_line();
    }
    // A flat image cannot have a parent.
    let d = tmp();
    qemu_img(&["create", "-f", "vmdk", s(&d.path().join("b.vmdk")), "1M"]).assert_ok();
    let args = [
        "create",
        "-f",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        "-b",
        "b.vmdk",
        "-F",
        "vmdk",
        "f.vmdk",
    ];
    let (q, v) = both(d.path(), &args);
    assert_eq!(v.code, q.code);
    assert_eq!(v.stdout, q.stdout);
    assert_eq!(msg(&v), msg(&q));
}

/// qemu-io commands giving each image grains of every kind.
fn fill_with_qemu(img: &Path, zeroed: bool) {
    let mut cmds = vec![
        "write -P 0x11 0 512",
        "write -P 0x22 4k 60k",
        "write -P 0x33 1M 2M",
        "write -P 0x44 5000k 3k",
        "write -P 0x55 2047M 2M",
        "write -P 0x66 2111M 1M",
    ];
    if zeroed {
        cmds.push("write -z 1088k 64k");
    }
    qio("vmdk", img, &cmds);
}

/// Human output as the oracle prints it: qemu-img before 10 has no "Child node" sections
/// in `info`.
fn human(s: &str) -> String {
    if qemu_major() >= 10 {
        return s.to_string();
    }
    let mut out = String::new();
    let mut skip = false;
    for l in s.lines() {
        if l.starts_with("Child node '/") {
            skip = true;
        } else if !l.starts_with(' ') {
            skip = false;
        }
        if !skip {
            out += l;
            out.push('\n');
        }
    }
    out
}

/// info, map and check outputs equal qemu-img's on the same file (human and JSON; with
/// qemu-img 7.2, whose JSON differs in known ways from 10.x, the fields both print).
fn same_reports(dir: &Path, name: &str) {
    let major = qemu_major();
    for args in [
        vec!["info", name],
        vec!["info", "--output=json", name],
        vec!["map", name],
        vec!["map", "--output=json", name],
        vec!["check", name],
        vec!["check", "--output=json", name],
    ] {
        let (q, v) = both(dir, &args);
        assert_eq!(v.code, q.code, "{args:?}: exit code\n{}", v.stderr);
        if major >= 10 || !args.contains(&"--output=json") {
            assert_eq!(
                human(&v.stdout),
                human(&q.stdout),
                "{args:?} in {}",
                dir.display()
            );
        } else if args[0] == "info" {
            let (qj, vj) = (q.json(), v.json());
            assert_eq!(info_fields(&vj), info_fields(&qj), "{args:?}");
            assert_eq!(
                vj["format-specific"], qj["format-specific"],
                "{args:?}: format-specific"
            );
        } else if args[0] == "map" {
            assert_extents_eq(
                &format!("{args:?}"),
                &map_extents(&v.json(), true),
                &map_extents(&q.json(), true),
            );
        } else {
            assert_eq!(v.json(), q.json(), "{args:?}");
        }
    }
}

/// virtkit and qemu-img convert `img` to raw files with the same bytes (compared in
/// pieces: the images are gigabytes).
fn same_raw(img: &Path, what: &str) {
    let d = tmp();
    let (a, b) = (d.path().join("vk.raw"), d.path().join("q.raw"));
    vk(&["convert", "-f", "vmdk", "-O", "raw", s(img), s(&a)]).assert_ok();
    qemu_img(&["convert", "-f", "vmdk", "-O", "raw", s(img), s(&b)]).assert_ok();
    files_equal(&a, &b, what);
}

/// Next data offset of a file at or after `off` (its length when only holes follow).
fn next_data(f: &std::fs::File, off: u64) -> u64 {
    use std::os::unix::io::AsRawFd;
    // SAFETY: lseek on an fd we own; the offset is only queried.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if r < 0 {
        f.metadata().unwrap().len()
    } else {
        r as u64
    }
}

/// Byte-equal files, compared in pieces and skipping what both hold as holes.
fn files_equal(a: &Path, b: &Path, what: &str) {
    use std::os::unix::fs::FileExt;
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let len = fa.metadata().unwrap().len();
    assert_eq!(len, fb.metadata().unwrap().len(), "{what}: sizes");
    let (mut ba, mut bb) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
    let mut off = 0u64;
    while off < len {
        let skip = next_data(&fa, off).min(next_data(&fb, off)) / 4096 * 4096;
        off = off.max(skip);
        if off >= len {
            break;
        }
        let n = (len - off).min(ba.len() as u64) as usize;
        fa.read_exact_at(&mut ba[..n], off).unwrap();
        fb.read_exact_at(&mut bb[..n], off).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!("{what}: content differs at offset {}", off + i as u64);
        }
        off += n as u64;
    }
}

#[test]
fn qemu_made_images_read_identically() {
    for sub in SUBFORMATS {
        for zeroed in [false, true] {
            if zeroed && (sub.contains("Flat") || sub == "streamOptimized") {
                continue;
            }
            let d = tmp();
            let img = d.path().join("d.vmdk");
            if sub == "streamOptimized" {
                let raw = d.path().join("src.raw");
                write_raw(&raw, &gen_data(24 << 20, 5));
                qemu_img(&[
                    "convert",
                    "-O",
                    "vmdk",
                    "-o",
                    "subformat=streamOptimized",
                    s(&raw),
                    s(&img),
                ])
                .assert_ok();
            } else {
                let o = format!(
                    "subformat={sub},zeroed_grain={}",
                    if zeroed { "on" } else { "off" }
                );
                qemu_img(&["create", "-f", "vmdk", "-o", &o, s(&img), "2112M"]).assert_ok();
                fill_with_qemu(&img, zeroed);
            }
            same_raw(&img, &format!("{sub} zeroed={zeroed}"));
            same_reports(d.path(), "d.vmdk");
        }
    }
}

#[test]
fn virtkit_images_pass_qemu_check_and_compare() {
    let d = tmp();
    let raw = d.path().join("src.raw");
    let size = 2 * 1024 + 300; // MiB: crosses the 2 GiB split
                               // Sparse source: data near the start and around the 2 GiB boundary.
    {
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(size << 20).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&gen_data(12 << 20, 9), 0).unwrap();
        f.write_all_at(&gen_data(6 << 20, 10), (2048 << 20) - (3 << 20))
            .unwrap();
        f.write_all_at(&random_bytes(1 << 20, 11), (size << 20) - (1 << 20))
            .unwrap();
    }
    for sub in SUBFORMATS {
        let sd = d.path().join(sub);
        std::fs::create_dir(&sd).unwrap();
        let img = sd.join("d.vmdk");
        vk(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&raw),
            s(&img),
        ])
        .assert_ok();
        qemu_check_clean(&img);
        qemu_compare_identical(&raw, "raw", &img, "vmdk");
        same_reports(&sd, "d.vmdk");
        // The same conversion by qemu-img: same format-specific fields but the CID.
        let qd = d.path().join(format!("q-{sub}"));
        std::fs::create_dir(&qd).unwrap();
        let qimg = qd.join("d.vmdk");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            s(&raw),
            s(&qimg),
        ])
        .assert_ok();
        let strip = |v: Value| {
            let mut d = v["format-specific"]["data"].clone();
            d["cid"] = Value::Null;
            for e in d["extents"].as_array_mut().unwrap() {
                let f = e["filename"].as_str().unwrap().to_string();
                e["filename"] =
                    Value::String(Path::new(&f).file_name().unwrap().to_string_lossy().into());
            }
            (info_fields(&v), d)
        };
        assert_eq!(
            strip(qemu_info_json(&img)),
            strip(qemu_info_json(&qimg)),
            "{sub}: info differs from qemu-img's own conversion"
        );
        assert_eq!(files_in(&sd), files_in(&qd), "{sub}: file names");
        if sub != "streamOptimized" {
            // Same layout: every grain where qemu-img puts it.
            assert_extents_eq(
                sub,
                &map_extents(&qemu_map(&img, "vmdk"), true),
                &map_extents(&qemu_map(&qimg, "vmdk"), true),
            );
        }
    }
}

/// convert -c: plain writes into sparse subformats, "invalid cluster size" for flat ones,
/// compressed grains for streamOptimized with or without -c (as qemu-img).
#[test]
fn convert_compressed_per_subformat() {
    let d = tmp();
    let raw = d.path().join("src.raw");
    write_raw(&raw, &gen_data(8 << 20, 21));
    for sub in SUBFORMATS {
        for c in [true, false] {
            let qd = d.path().join(format!("q-{sub}-{c}"));
            let vd = d.path().join(format!("v-{sub}-{c}"));
            std::fs::create_dir(&qd).unwrap();
            std::fs::create_dir(&vd).unwrap();
            let o = format!("subformat={sub}");
            let mut args = vec!["convert"];
            if c {
                args.push("-c");
            }
            args.extend(["-f", "raw", "-O", "vmdk", "-o", &o, s(&raw), "d.vmdk"]);
            let (q, _) = both(&qd, &args);
            let (_, v) = both(&vd, &args);
            assert_eq!(v.code, q.code, "{args:?}: {}", v.stderr);
            assert_eq!(msg(&v), msg(&q), "{args:?}");
            if q.ok() {
                let img = vd.join("d.vmdk");
                qemu_check_clean(&img);
                qemu_compare_identical(&raw, "raw", &img, "vmdk");
                let qm = qemu_map(&qd.join("d.vmdk"), "vmdk");
                let vm = qemu_map(&img, "vmdk");
                let compressed = |m: &Value| {
                    m.as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["compressed"].as_bool() == Some(true))
                };
                if qemu_major() >= 10 {
                    assert_eq!(compressed(&vm), compressed(&qm), "{args:?}");
                }
                assert_eq!(top_data_bytes(&vm), top_data_bytes(&qm), "{args:?}");
            }
        }
    }
}

#[test]
fn backing_chains_through_parent_file_name_hint() {
    let d = tmp();
    let dir = d.path();
    qemu_img(&["create", "-f", "vmdk", s(&dir.join("base.vmdk")), "64M"]).assert_ok();
    qio(
        "vmdk",
        &dir.join("base.vmdk"),
        &["write -P 1 0 8M", "write -P 2 40M 1M"],
    );
    // virtkit creates the child; qemu-img accepts it and reads through it.
    let mut q = std::process::Command::new(qemu_img_bin());
    q.current_dir(dir).args([
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        "qtop.vmdk",
    ]);
    let q = run_cmd(q, TIMEOUT);
    q.assert_ok();
    let mut v = vk_command(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        "top.vmdk",
    ]);
    v.current_dir(dir);
    let v = run_cmd(v, TIMEOUT);
    v.assert_ok();
    assert_eq!(v.stdout, q.stdout.replace("qtop.vmdk", "top.vmdk"));
    // The same file as qemu-img's but for the CID and the name in the extent line.
    let (vb, qb) = (read(&dir.join("top.vmdk")), read(&dir.join("qtop.vmdk")));
    let text = |b: &[u8]| {
        let t = String::from_utf8_lossy(&b[512..512 + 10240]).replace("qtop.vmdk", "top.vmdk");
        mask_cid(t.trim_end_matches('\0').as_bytes())
    };
    assert_eq!(text(&vb), text(&qb));
    assert!(vb[..512] == qb[..512] && vb[512 + 10240..] == qb[512 + 10240..]);
    let top = dir.join("top.vmdk");
    qemu_check_clean(&top);
    qemu_compare_identical(&dir.join("base.vmdk"), "vmdk", &top, "vmdk");
    qio("vmdk", &top, &["write -P 3 4M 100k", "write -P 4 63M 1M"]);
    same_raw(&top, "chain");
    same_reports(dir, "top.vmdk");
    let (q, v) = both(dir, &["info", "--backing-chain", "top.vmdk"]);
    assert_eq!(human(&v.stdout), human(&q.stdout));
    // convert -B: only the top layer is copied into a new child of the same base.
    let (q, v) = both(
        dir,
        &[
            "convert",
            "-O",
            "vmdk",
            "-B",
            "base.vmdk",
            "-F",
            "vmdk",
            "top.vmdk",
            "copy.vmdk",
        ],
    );
    q.assert_ok();
    v.assert_ok();
    let copy = dir.join("copy.vmdk");
    qemu_check_clean(&copy);
    qemu_compare_identical(&top, "vmdk", &copy, "vmdk");
    let info = qemu_info_json(&copy);
    assert_eq!(info["backing-filename"], "base.vmdk");
    assert_eq!(
        top_data_bytes(&qemu_map(&copy, "vmdk")),
        top_data_bytes(&qemu_map(&top, "vmdk"))
    );
    // Once the parent changes, its CID no longer matches: reads through it fail in both.
    qio("vmdk", &dir.join("base.vmdk"), &["write -P 9 60M 4k"]);
    let (q, v) = both(dir, &["convert", "-O", "raw", "top.vmdk", "out.raw"]);
    assert!(!q.ok());
    v.assert_one_line_error();
    assert!(v.stderr.contains("Invalid argument"), "{}", v.stderr);
}

#[test]
fn check_and_compare_like_qemu() {
    let d = tmp();
    let dir = d.path();
    let img = dir.join("c.vmdk");
    qemu_img(&["create", "-f", "vmdk", s(&img), "1M"]).assert_ok();
    qio("vmdk", &img, &["write -P 7 0 128k"]);
    // check -r is refused with exit 63.
    let (q, v) = both(dir, &["check", "-r", "all", "c.vmdk"]);
    assert_eq!(v.code, q.code);
    assert_eq!(msg(&v), msg(&q));
    // A grain pointing past the end of the file.
    let mut b = read(&img);
    let gd = u64::from_le_bytes(b[56..64].try_into().unwrap()) as usize;
    let gt = u32::from_le_bytes(b[gd * 512..gd * 512 + 4].try_into().unwrap()) as usize;
    b[gt * 512 + 12..gt * 512 + 16].copy_from_slice(&100_000u32.to_le_bytes());
    std::fs::write(&img, &b).unwrap();
    for args in [
        ["check", "c.vmdk", ""],
        ["check", "--output=json", "c.vmdk"],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let (q, v) = both(dir, &args);
        assert_eq!(v.code, q.code, "{args:?}");
        assert_eq!(v.stdout, q.stdout, "{args:?}");
        assert_eq!(msg(&v), msg(&q), "{args:?}");
    }
    assert_eq!(read(&img), b, "check changed the image");
    // compare across formats, and the first difference as qemu-img reports it.
    let raw = dir.join("r.raw");
    write_raw(&raw, &gen_data(4 << 20, 3));
    qemu_img(&["convert", "-O", "qcow2", s(&raw), s(&dir.join("r.qcow2"))]).assert_ok();
    vk(&["convert", "-O", "vmdk", s(&raw), s(&dir.join("r.vmdk"))]).assert_ok();
    for (a, b) in [
        ("r.raw", "r.vmdk"),
        ("r.qcow2", "r.vmdk"),
        ("r.vmdk", "c.vmdk"),
    ] {
        let (q, v) = both(dir, &["compare", a, b]);
        assert_eq!(v.code, q.code, "compare {a} {b}");
        assert_eq!(v.stdout, q.stdout, "compare {a} {b}");
    }
}

/// Hostile headers and descriptors: one line of error, no panic or hang, input unchanged;
/// qemu-img's words where qemu-img refuses the same file.
#[test]
fn hostile_inputs() {
    let d = tmp();
    let dir = d.path();
    let good = dir.join("good.vmdk");
    qemu_img(&["create", "-f", "vmdk", s(&good), "4M"]).assert_ok();
    qio("vmdk", &good, &["write -P 1 0 64k"]);
    let g = read(&good);
    let gd_sector = u64::from_le_bytes(g[56..64].try_into().unwrap()) as usize;
    let patch = |name: &str, f: &dyn Fn(&mut Vec<u8>)| -> PathBuf {
        let mut b = g.clone();
        f(&mut b);
        let p = dir.join(name);
        std::fs::write(&p, &b).unwrap();
        p
    };
    std::fs::write(dir.join("f.raw"), vec![0u8; 1 << 20]).unwrap();
    let desc = |name: &str, body: &str| -> PathBuf {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n{body}"),
        )
        .unwrap();
        p
    };
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("../f.raw", dir.join("sub/link.raw")).unwrap();
    let mut many = String::new();
    for _ in 0..40000 {
        many += "RW 1 FLAT \"f.raw\" 0\n";
    }
    // (file, qemu-img refuses it with the same message too)
    let cases: Vec<(PathBuf, Option<&str>, bool)> = vec![
        (desc("dotdot.vmdk", "RW 2048 FLAT \"../x/f.raw\" 0\n"), Some("outside the directory"), false),
        (desc("sub/escape.vmdk", "RW 2048 FLAT \"link.raw\" 0\n"), Some("outside the directory"), false),
        (desc("many.vmdk", &many), Some("Too many extents"), false),
        (desc("missing.vmdk", "RW 2048 FLAT \"nope.raw\" 0\n"), Some("Could not open"), true),
        (desc("badline.vmdk", "RW 2048 FLAT \"f.raw\"\n"), Some("Invalid extent line"), true),
        (desc("absurd.vmdk", "RW 9223372036854775807 FLAT \"f.raw\" 0\nRW 9223372036854775807 FLAT \"f.raw\" 0\n"), Some("absurd size"), false),
        (patch("gt-past-eof.vmdk", &|b| b[gd_sector * 512..gd_sector * 512 + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes())), Some("past the end of the file"), false),
        (patch("gt-on-header.vmdk", &|b| b[gd_sector * 512..gd_sector * 512 + 4].copy_from_slice(&0u32.to_le_bytes()) ), None, false),
        (patch("gt-header.vmdk", &|b| b[(gd_sector) * 512..gd_sector * 512 + 4].copy_from_slice(&1u32.to_le_bytes())), Some("overlaps the embedded descriptor"), false),
        (patch("gd-header.vmdk", &|b| b[56..64].copy_from_slice(&0u64.to_le_bytes())), Some("grain directory overlaps the header"), false),
        (patch("gd-on-gd.vmdk", &|b| {
            let v = gd_sector as u32;
            b[gd_sector * 512..gd_sector * 512 + 4].copy_from_slice(&v.to_le_bytes())
        }), Some("overlaps the grain directory"), false),
        (patch("version.vmdk", &|b| b[4..8].copy_from_slice(&4u32.to_le_bytes())), Some("Unsupported VMDK version 4"), true),
        (patch("gtes.vmdk", &|b| b[44..48].copy_from_slice(&1000u32.to_le_bytes())), Some("L2 table size too big"), true),
        (patch("gran0.vmdk", &|b| b[20..28].copy_from_slice(&0u64.to_le_bytes())), Some("L1 entry size is invalid"), true),
        (patch("gran-huge.vmdk", &|b| b[20..28].copy_from_slice(&0x40_0000u64.to_le_bytes())), Some("Invalid granularity"), true),
        (patch("capacity.vmdk", &|b| b[12..20].copy_from_slice(&(1u64 << 62).to_le_bytes())), Some("L1 size too big"), false),
        (patch("truncated.vmdk", &|b| b[64..72].copy_from_slice(&(1u64 << 40).to_le_bytes())), Some("File truncated, expecting at least 562949953421312 bytes"), true),
        (patch("footer.vmdk", &|b| b[56..64].copy_from_slice(&u64::MAX.to_le_bytes())), Some("Invalid footer"), true),
        (patch("magic.vmdk", &|b| b[0..4].copy_from_slice(b"KDMX")), Some("invalid VMDK image descriptor"), true),
        (patch("tiny.vmdk", &|b| b.truncate(3)), Some("invalid VMDK image descriptor"), true),
        (patch("empty.vmdk", &|b| b.clear()), Some("File is too small, not a valid image"), true),
    ];
    for (p, want, qemu_same) in &cases {
        let before = read(p);
        for args in [
            vec!["info", "-f", "vmdk", s(p)],
            vec![
                "convert",
                "-f",
                "vmdk",
                "-O",
                "raw",
                s(p),
                s(&dir.join("out.raw")),
            ],
            vec!["check", "-f", "vmdk", s(p)],
            vec!["map", "-f", "vmdk", s(p)],
        ] {
            let o = vk_t(&args, HOSTILE_TIMEOUT);
            if o.ok() {
                // Only a GD entry of 0 is harmless (no grain table: reads zero).
                assert!(want.is_none(), "{args:?} succeeded");
                continue;
            }
            o.assert_one_line_error();
            if let Some(w) = want {
                assert!(o.stderr.contains(w), "{args:?}: {}", o.stderr);
            }
        }
        assert_eq!(&read(p), &before, "{} changed", p.display());
        if *qemu_same {
            let q = qemu_img(&["info", "-f", "vmdk", s(p)]);
            assert!(!q.ok());
            let (v, _) = (vk(&["info", "-f", "vmdk", s(p)]), ());
            assert_eq!(msg(&v), msg(&q), "{}", p.display());
        }
        // Writable opens refuse the same files and do not touch them either.
        let o = vk_t(
            &[
                "convert",
                "-n",
                "-f",
                "raw",
                "-O",
                "vmdk",
                s(&dir.join("f.raw")),
                s(p),
            ],
            HOSTILE_TIMEOUT,
        );
        o.assert_sane();
        if want.is_some() {
            assert!(!o.ok());
            assert_eq!(
                &read(p),
                &before,
                "{} changed by a writable open",
                p.display()
            );
        }
    }
    // Absolute extent paths are followed as written.
    let abs = desc(
        "abs.vmdk",
        &format!("RW 2048 FLAT \"{}\" 0\n", dir.join("f.raw").display()),
    );
    vk(&["info", s(&abs)]).assert_ok();
    assert_bytes_eq(
        "absolute extent",
        &vk_to_raw(&abs, "vmdk"),
        &qemu_to_raw(&abs, "vmdk"),
    );
}

// ---------------------------------------------------------------------------------------
// Crash safety
// ---------------------------------------------------------------------------------------

/// Every sector of `img` holds what one of `sources` holds there (or zero for a fresh
/// target): no garbage, no grain pointing at the wrong data.
fn sectors_from(img: &Path, sources: &[&[u8]], ctx: &str) {
    let got = qemu_to_raw(img, "vmdk");
    for (i, sec) in got.chunks(512).enumerate() {
        let ok = sources
            .iter()
            .any(|s| &s[i * 512..(i * 512 + 512).min(s.len())] == sec);
        assert!(ok, "{ctx}: sector {i} holds data from no source");
    }
}

#[test]
fn kill_during_convert_and_writes() {
    let d = tmp();
    let size = 96usize << 20;
    let a = gen_data(size, 31);
    let b = gen_data(size, 32);
    let zero = vec![0u8; size];
    let src_a = d.path().join("a.raw");
    let src_b = d.path().join("b.raw");
    write_raw(&src_a, &a);
    write_raw(&src_b, &b);
    let mut rng = Rng::new(77);
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "twoGbMaxExtentSparse",
    ] {
        let dst = d.path().join(format!("{sub}.vmdk"));
        let o = format!("subformat={sub}");
        let args = [
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            &o,
            s(&src_a),
            s(&dst),
        ];
        let t = Instant::now();
        vk(&args).assert_ok();
        let full = t.elapsed().as_millis().max(40) as u64;
        let mut interrupted = 0;
        for k in 0..5 {
            let _ = std::fs::remove_file(&dst);
            let delay = Duration::from_millis((full / 10 + rng.below(full * 8 / 10 + 1)).max(20));
            if kill_after(&args, delay) {
                interrupted += 1;
            }
            if !dst.exists() {
                continue;
            }
            let ctx = format!("{sub}: kill #{k} after {delay:?}");
            if qemu_img(&["info", "-f", "vmdk", s(&dst)]).ok() {
                let q = qemu_img(&["check", "-f", "vmdk", s(&dst)]);
                assert_eq!(q.code, Some(0), "{ctx}: {}{}", q.stdout, q.stderr);
                sectors_from(&dst, &[&a, &zero], &ctx);
            }
        }
        assert!(interrupted > 0, "{sub}: no convert was interrupted");
        // Writes over an existing image (sparse subformats): killed halfway, every sector
        // is old or new data.
        if sub != "streamOptimized" {
            vk(&args).assert_ok();
            let n_args = [
                "convert",
                "-n",
                "-f",
                "raw",
                "-O",
                "vmdk",
                s(&src_b),
                s(&dst),
            ];
            let t = Instant::now();
            vk(&n_args).assert_ok();
            let full = t.elapsed().as_millis().max(40) as u64;
            for k in 0..4 {
                vk(&args[..]).assert_ok();
                let delay =
                    Duration::from_millis((full / 10 + rng.below(full * 8 / 10 + 1)).max(20));
                kill_after(&n_args, delay);
                let ctx = format!("{sub}: convert -n kill #{k} after {delay:?}");
                let q = qemu_img(&["check", "-f", "vmdk", s(&dst)]);
                assert_eq!(q.code, Some(0), "{ctx}: {}{}", q.stdout, q.stderr);
                sectors_from(&dst, &[&a, &b, &zero], &ctx);
            }
            vk(&n_args).assert_ok();
            qemu_compare_identical(&src_b, "raw", &dst, "vmdk");
        }
    }
}
