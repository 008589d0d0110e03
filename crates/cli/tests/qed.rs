//! qed against the real qemu-img, both directions: images qemu-img/qemu-io write read
//! byte-identical in virtkit (map and info too), images virtkit writes pass `qemu-img check`
//! and `qemu-img compare`; create, check, resize and hostile input as qemu-img behaves; a
//! SIGKILL during convert leaves at worst leaks.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virtkit_image::OpenOptions;

const MIB: usize = 1 << 20;

/// `check --output=json` and exit code agree with qemu-img's.
#[track_caller]
fn same_check(path: &Path) {
    let q = qemu_img(&["check", "--output=json", "-f", "qed", s(path)]);
    let v = vk(&["check", "--output=json", "-f", "qed", s(path)]);
    assert_eq!(
        v.code, q.code,
        "check exit code\n{}\n{}",
        v.stderr, q.stderr
    );
    assert_eq!(v.json(), q.json(), "check JSON of {}", path.display());
}

/// info fields virtkit and qemu-img report agree.
#[track_caller]
fn same_info(path: &Path) {
    let q = info_fields(&qemu_info_json(path));
    let v = vk(&["info", "--output=json", s(path)]);
    v.assert_ok();
    assert_eq!(info_fields(&v.json()), q, "info of {}", path.display());
}

fn qemu_qed(dir: &Path, name: &str, opts: &str, size: &str) -> PathBuf {
    let p = dir.join(name);
    let mut a = vec!["create", "-f", "qed"];
    if !opts.is_empty() {
        a.extend(["-o", opts]);
    }
    a.extend([s(&p), size]);
    qemu_img(&a).assert_ok();
    p
}

#[test]
fn qed_create_matches_qemu() {
    let d = tmp();
    let base = d.path().join("base.raw");
    qemu_img(&["create", "-f", "raw", s(&base), "3M"]).assert_ok();
    let cases: &[(&[&str], Option<&str>)] = &[
        (&[], Some("1G")),
        (&["-o", "cluster_size=4k,table_size=2"], Some("100M")),
        (&["-o", "cluster_size=128k"], Some("1000")),
        (&["-b", "base.raw", "-F", "raw"], None),
        (
            &["-o", "backing_file=base.raw,backing_fmt=raw,table_size=8"],
            Some("5M"),
        ),
        (&[], Some("0")),
        (
            &["-o", "preallocation=falloc,extent_size_hint=0,nocow=on"],
            Some("3M"),
        ),
    ];
    for (i, (opts, size)) in cases.iter().enumerate() {
        let (q, v) = (
            d.path().join(format!("q{i}.qed")),
            d.path().join(format!("v{i}.qed")),
        );
        let args = |p: &Path| {
            let mut a = vec!["create".to_string(), "-f".into(), "qed".into()];
            a.extend(opts.iter().map(|x| x.to_string()));
            a.push(s(p).into());
            a.extend(size.iter().map(|x| x.to_string()));
            a
        };
        let qo = qemu_img(&args(&q));
        qo.assert_ok();
        let vo = vk(&args(&v));
        vo.assert_ok();
        assert_eq!(
            vo.stdout.replace(s(&v), "IMG"),
            qo.stdout.replace(s(&q), "IMG"),
            "Formatting line for {opts:?} {size:?}"
        );
        assert_bytes_eq(&format!("created file {opts:?}"), &read(&v), &read(&q));
        same_info(&v);
    }
    let h = vk(&["create", "-f", "qed", "-o", "help"]);
    h.assert_ok();
    assert_eq!(
        h.stdout,
        qemu_img(&["create", "-f", "qed", "-o", "help"]).stdout
    );
}

#[test]
fn qed_create_errors_as_qemu() {
    let d = tmp();
    let p = d.path().join("x.qed");
    for o in [
        "cluster_size=3k",
        "cluster_size=128M",
        "cluster_size=0",
        "table_size=3",
        "table_size=32",
        "table_size=0",
        "cluster_size=64M,table_size=16",
        "cluster_size=4k,table_size=1",
        "preallocation=metadata",
        "preallocation=bogus",
        "nocow=maybe",
        "extent_size_hint=-1",
        "extent_size_hint=5G",
        "foo=bar",
    ] {
        let q = qemu_img(&["create", "-f", "qed", "-o", o, s(&p), "2T"]);
        let Some(v) = vk_link(&["create", "-f", "qed", "-o", o, s(&p), "2T"]) else {
            return;
        };
        assert!(!q.ok(), "qemu-img accepted {o}");
        v.assert_one_line_error();
        assert_eq!(v.code, q.code, "{o}");
        assert_eq!(v.stdout, q.stdout, "{o}");
        if qemu_major() >= 10 {
            assert_eq!(
                v.stderr.trim(),
                q.stderr.lines().next().unwrap().trim(),
                "{o}"
            );
        }
    }
}

#[test]
fn qed_reads_qemu_written_images() {
    let d = tmp();
    for (name, opts, size) in [
        ("a.qed", "", "8M"),
        ("b.qed", "cluster_size=4k,table_size=2", "40M"),
        ("c.qed", "cluster_size=1M,table_size=16", "100M"),
        ("d.qed", "cluster_size=8k,table_size=4", "6001k"),
    ] {
        let p = qemu_qed(d.path(), name, opts, size);
        qio(
            "qed",
            &p,
            &[
                "write -P 0x11 0 100k",
                "write -P 0x22 1000 3000",
                "write -z 1M 1M",
                "write -P 0x33 3M 8k",
                "write -P 0x44 5000k 20k",
                "write -z 5008k 4k",
                "write -P 0x55 512k 512",
            ],
        );
        same_read_and_map(&p, "qed");
        same_check(&p);
        same_info(&p);
    }
    // A large image with 4 KiB clusters: qemu-img's check counts leaks with its own
    // arithmetic; virtkit reproduces the counts.
    let p = qemu_qed(d.path(), "big.qed", "cluster_size=4k,table_size=2", "64M");
    qio("qed", &p, &["write -P 1 0 40M"]);
    same_check(&p);
}

#[test]
fn qed_backing_chains_read_identical() {
    let d = tmp();
    let base = d.path().join("base.raw");
    write_raw(&base, &gen_data(6 * MIB, 77));
    // raw base, backing format stored (no probing).
    let mid = d.path().join("mid.qed");
    qemu_img(&[
        "create",
        "-f",
        "qed",
        "-b",
        "base.raw",
        "-F",
        "raw",
        "-o",
        "cluster_size=4k,table_size=2",
        s(&mid),
    ])
    .assert_ok();
    qio(
        "qed",
        &mid,
        &[
            "write -P 0x61 1000 3000",
            "write -z 64k 8k",
            "write -P 0x62 2M 9k",
        ],
    );
    // qed over qed (probed), larger than its backing file.
    let top = d.path().join("top.qed");
    qemu_img(&[
        "create",
        "-f",
        "qed",
        "-b",
        "mid.qed",
        "-F",
        "qed",
        s(&top),
        "8M",
    ])
    .assert_ok();
    qio(
        "qed",
        &top,
        &[
            "write -P 0x71 100k 70k",
            "write -z 2M 64k",
            "write -P 0x72 7M 4k",
        ],
    );
    for p in [&mid, &top] {
        same_read_and_map(p, "qed");
        same_info(p);
        same_check(p);
    }
    let a = ["info", "--backing-chain", "--output=json", s(&top)];
    let q = qemu_img(&a);
    let v = vk(&a);
    v.assert_ok();
    let fields =
        |x: Value| -> Vec<Value> { x.as_array().unwrap().iter().map(info_fields).collect() };
    assert_eq!(fields(v.json()), fields(q.json()));
}

#[test]
fn qed_virtkit_writes_pass_qemu_check() {
    let d = tmp();
    let src = d.path().join("src.raw");
    let data = gen_data(12 * MIB + 4096, 5);
    write_raw(&src, &data);
    for opts in [
        "",
        "cluster_size=4k,table_size=2",
        "cluster_size=1M,table_size=2",
    ] {
        let out = d.path().join(format!("o{}.qed", opts.len()));
        let mut a = vec!["convert", "-O", "qed"];
        if !opts.is_empty() {
            a.extend(["-o", opts]);
        }
        a.extend([s(&src), s(&out)]);
        vk(&a).assert_ok();
        qemu_check_clean(&out);
        qemu_compare_identical(&out, "qed", &src, "raw");
        // virtkit's compare, through the generic code, agrees.
        let c = vk(&["compare", "-f", "qed", "-F", "raw", s(&out), s(&src)]);
        c.assert_ok();
        assert_eq!(c.stdout, "Images are identical.\n");
        same_read_and_map(&out, "qed");
        same_info(&out);
        // Clean close: the need-check flag is not left behind.
        assert_eq!(
            le64(&read(&out), 16) & 2,
            0,
            "need-check flag after convert"
        );
    }
}

/// Writes through the library into an overlay with a backing file (partial clusters copy
/// the backing data) and into zero clusters; qemu-img reads what a model says.
#[test]
fn qed_library_writes_over_backing_file() {
    let d = tmp();
    let base = d.path().join("base.raw");
    let bdata = random_bytes(3 * MIB, 9);
    write_raw(&base, &bdata);
    let ov = d.path().join("ov.qed");
    qemu_img(&[
        "create",
        "-f",
        "qed",
        "-b",
        "base.raw",
        "-F",
        "raw",
        "-o",
        "cluster_size=4k,table_size=2",
        s(&ov),
    ])
    .assert_ok();
    qio("qed", &ov, &["write -z 1M 64k", "write -P 0x19 2M 4k"]);
    let mut model = bdata.clone();
    model[MIB..MIB + 65536].fill(0);
    model[2 * MIB..2 * MIB + 4096].fill(0x19);
    {
        let img = virtkit_image::open(
            &ov,
            &OpenOptions {
                writable: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut put = |off: usize, buf: &[u8]| {
            img.write_at(buf, off as u64).unwrap();
            model[off..off + buf.len()].copy_from_slice(buf);
        };
        put(100, &[0xa1; 300]);
        put(8192 + 4000, &random_bytes(10_000, 3));
        put(MIB + 4096 + 17, &[0xb2; 100]); // inside the zero run
        put(2 * MIB + 100, &[0xc3; 50]); // allocated cluster, in place
        put(3 * MIB - 5000, &[0xd4; 5000]); // up to the end
        img.write_zeroes(512 * 1024, 8192, true).unwrap();
        model[512 * 1024..512 * 1024 + 8192].fill(0);
        img.write_zeroes(700 * 1024 + 10, 5000, false).unwrap();
        model[700 * 1024 + 10..700 * 1024 + 5010].fill(0);
        // Allocated clusters are zeroed in place.
        img.write_zeroes(8192, 8192, true).unwrap();
        model[8192..16384].fill(0);
        img.flush().unwrap();
    }
    qemu_check_clean(&ov);
    assert_bytes_eq(
        "overlay written by virtkit",
        &qemu_to_raw(&ov, "qed"),
        &model,
    );
    same_read_and_map(&ov, "qed");
    // compare, through the generic code, as qemu-img: equal to the model, and where it
    // first differs from the base.
    let m = d.path().join("model.raw");
    write_raw(&m, &model);
    for other in [&m, &base] {
        let a = ["compare", "-f", "qed", "-F", "raw", s(&ov), s(other)];
        let (v, q) = (vk(&a), qemu_img(&a));
        assert_eq!(
            (v.code, &v.stdout),
            (q.code, &q.stdout),
            "compare with {}",
            other.display()
        );
    }
}

#[test]
fn qed_need_check_image_repaired_only_by_writable_open() {
    let d = tmp();
    let p = qemu_qed(d.path(), "n.qed", "cluster_size=4k,table_size=2", "4M");
    qio("qed", &p, &["write -P 0x31 0 16k", "write -P 0x32 1M 8k"]);
    let mut b = read(&p);
    // Need-check set, an L2 entry past the end of the file, a leaked cluster at the end.
    b[16] |= 2;
    let l1 = le64(&b, 40) as usize;
    let l2 = le64(&b, l1) as usize;
    put_le64(&mut b, l2 + 8 * 5, 1 << 40);
    b.extend_from_slice(&[0x77; 4096]);
    std::fs::write(&p, &b).unwrap();
    // Read-only uses never write.
    vk(&["info", s(&p)]).assert_ok();
    vk(&["map", "--output=json", s(&p)]);
    vk(&["check", s(&p)]);
    assert_eq!(read(&p), b, "a read-only open changed a need-check image");
    same_check(&p);
    // Both repair the same way.
    let q = d.path().join("q.qed");
    std::fs::write(&q, &b).unwrap();
    let qr = qemu_img(&["check", "-r", "all", "--output=json", s(&q)]);
    let vr = vk(&["check", "-r", "all", "--output=json", s(&p)]);
    assert_eq!(vr.code, qr.code);
    let unnamed = |mut v: Value| {
        v.as_object_mut().unwrap().remove("filename");
        v
    };
    assert_eq!(unnamed(vr.json()), unnamed(qr.json()));
    assert_bytes_eq("repaired image", &read(&p), &read(&q));
    // A plain writable open repairs too (and leaves the flag clear).
    std::fs::write(&p, &b).unwrap();
    vk(&["resize", s(&p), "4M"]).assert_ok();
    let after = read(&p);
    assert_eq!(le64(&after, 16) & 2, 0);
    assert_eq!(le64(&after, l2 + 8 * 5), 0);
    let c = qemu_img(&["check", s(&p)]);
    assert_eq!(c.code, Some(3), "only the leak is left:\n{}", c.stdout);
}

#[test]
fn qed_resize_as_qemu() {
    let d = tmp();
    let p = qemu_qed(d.path(), "r.qed", "", "10M");
    qio("qed", &p, &["write -P 1 0 64k"]);
    let q = d.path().join("q.qed");
    std::fs::copy(&p, &q).unwrap();
    for args in [
        vec!["resize", "IMG", "30M"],
        vec!["resize", "IMG", "+1M"],
        vec!["resize", "IMG", "5M"],
        vec!["resize", "--shrink", "IMG", "5M"],
        vec!["resize", "--preallocation=falloc", "IMG", "64M"],
        vec!["resize", "IMG", "100000001"],
    ] {
        let sub = |x: &Path| -> Vec<String> {
            args.iter()
                .map(|a| {
                    if *a == "IMG" {
                        s(x).to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        let qo = qemu_img(&sub(&q));
        let Some(vo) = vk_link(&sub(&p)) else { return };
        assert_eq!(vo.code, qo.code, "{args:?}: {}", vo.stderr);
        assert_eq!(vo.stdout, qo.stdout, "{args:?}");
        let strip = |e: &str, x: &Path| e.replace(s(x), "IMG");
        assert_eq!(strip(&vo.stderr, &p), strip(&qo.stderr, &q), "{args:?}");
        assert_bytes_eq(&format!("after {args:?}"), &read(&p), &read(&q));
    }
    same_read_and_map(&p, "qed");
    // The grown area takes writes (L1 entries past the old size).
    let size = qemu_info_json(&p)["virtual-size"].as_u64().unwrap();
    {
        let img = virtkit_image::open(
            &p,
            &OpenOptions {
                writable: true,
                ..Default::default()
            },
        )
        .unwrap();
        img.write_at(&[0x5e; 8192], size - 8192).unwrap();
    }
    qemu_check_clean(&p);
    let r = qemu_to_raw(&p, "qed");
    assert!(r[r.len() - 8192..].iter().all(|&b| b == 0x5e));
    same_read_and_map(&p, "qed");
}

#[test]
fn qed_change_backing_file_as_qemu() {
    let d = tmp();
    let base = d.path().join("base.raw");
    write_raw(&base, &gen_data(MIB, 1));
    let b2 = d.path().join("other.qed");
    qemu_img(&["create", "-f", "qed", s(&b2), "1M"]).assert_ok();
    let p = d.path().join("c.qed");
    qemu_img(&["create", "-f", "qed", "-b", "base.raw", "-F", "raw", s(&p)]).assert_ok();
    let q = d.path().join("q.qed");
    std::fs::copy(&p, &q).unwrap();
    let open = |x: &Path| {
        virtkit_image::open(
            x,
            &OpenOptions {
                writable: true,
                no_backing: true,
                ..Default::default()
            },
        )
        .unwrap()
    };
    open(&p)
        .change_backing_file(Some("other.qed"), Some("qed"))
        .unwrap();
    qemu_img(&["rebase", "-u", "-b", "other.qed", "-F", "qed", s(&q)]).assert_ok();
    assert_bytes_eq("rebase -u to qed", &read(&p), &read(&q));
    open(&p)
        .change_backing_file(Some("base.raw"), Some("raw"))
        .unwrap();
    qemu_img(&["rebase", "-u", "-b", "base.raw", "-F", "raw", s(&q)]).assert_ok();
    assert_bytes_eq("rebase -u to raw", &read(&p), &read(&q));
    same_info(&p);
    open(&p).change_backing_file(None, None).unwrap();
    qemu_img(&["rebase", "-u", "-b", "", s(&q)]).assert_ok();
    assert_bytes_eq("rebase -u -b ''", &read(&p), &read(&q));
    same_info(&p);
    // A name that does not fit in the header cluster: ENOSPC, nothing written.
    let before = read(&p);
    let long = "x".repeat(70_000);
    let e = open(&p).change_backing_file(Some(&long), None).unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    assert_eq!(read(&p), before);
}

/// One crafted image per hostile field: every command fails (or succeeds) with one line,
/// no panic, bounded time, and the file is left unchanged.
#[test]
fn qed_hostile_inputs() {
    let d = tmp();
    let p = qemu_qed(d.path(), "h.qed", "cluster_size=4k,table_size=2", "4M");
    qio("qed", &p, &["write -P 0x31 0 16k", "write -z 1M 8k"]);
    let good = read(&p);
    let l1 = le64(&good, 40) as usize;
    let l2 = le64(&good, l1) as usize;
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch)> = vec![
        ("l1-past-eof", Box::new(|b| put_le64(b, 40, 1 << 40))),
        ("l1-unaligned", Box::new(|b| put_le64(b, 40, 4097))),
        ("l1-in-header", Box::new(|b| put_le64(b, 40, 0))),
        ("cluster-size-huge", Box::new(|b| put_le32(b, 4, 1 << 31))),
        ("cluster-size-odd", Box::new(|b| put_le32(b, 4, 12288))),
        ("table-size-huge", Box::new(|b| put_le32(b, 8, u32::MAX))),
        ("table-size-zero", Box::new(|b| put_le32(b, 8, 0))),
        ("header-size-huge", Box::new(|b| put_le32(b, 12, u32::MAX))),
        (
            "image-size-huge",
            Box::new(|b| put_le64(b, 48, u64::MAX - 511)),
        ),
        ("image-size-unaligned", Box::new(|b| put_le64(b, 48, 1000))),
        ("unknown-feature", Box::new(|b| b[16] |= 0x10)),
        (
            "backing-past-header",
            Box::new(|b| {
                b[16] |= 1;
                put_le32(b, 56, 4000);
                put_le32(b, 60, 200);
            }),
        ),
        (
            "backing-name-huge",
            Box::new(|b| {
                b[16] |= 1;
                put_le32(b, 12, 2);
                put_le32(b, 56, 64);
                put_le32(b, 60, 5000);
            }),
        ),
        (
            "backing-offset-overflow",
            Box::new(|b| {
                b[16] |= 1;
                put_le32(b, 56, u32::MAX);
                put_le32(b, 60, u32::MAX);
            }),
        ),
        (
            "l2-entry-past-eof",
            Box::new(move |b| put_le64(b, l2, 1 << 50)),
        ),
        (
            "l2-entry-unaligned",
            Box::new(move |b| put_le64(b, l2 + 8, 4096 * 3 + 5)),
        ),
        (
            "l2-entry-in-header",
            Box::new(move |b| put_le64(b, l2 + 16, 2)),
        ),
        (
            "l2-table-past-eof",
            Box::new(move |b| put_le64(b, l1, 1 << 45)),
        ),
        (
            "l2-table-is-l1",
            Box::new(move |b| put_le64(b, l1, l1 as u64)),
        ),
        (
            "need-check",
            Box::new(move |b| {
                b[16] |= 2;
                put_le64(b, l2, 1 << 50);
            }),
        ),
        ("truncated", Box::new(|b| b.truncate(40))),
        ("truncated-l1", Box::new(|b| b.truncate(4096 + 100))),
    ];
    for (name, patch) in cases {
        let mut b = good.clone();
        patch(&mut b);
        let f = d.path().join(format!("{name}.qed"));
        std::fs::write(&f, &b).unwrap();
        for args in [
            vec!["info", "-f", "qed"],
            vec!["info", "--output=json"],
            vec!["map", "--output=json", "-f", "qed"],
            vec!["convert", "-f", "qed", "-O", "raw"],
            vec!["check", "-f", "qed"],
        ] {
            let mut a: Vec<String> = args.iter().map(|x| x.to_string()).collect();
            a.push(s(&f).into());
            if args[0] == "convert" {
                a.push(s(&d.path().join("out.raw")).into());
            }
            let o = vk_t(&a, HOSTILE_TIMEOUT);
            if !o.ok() && args[0] != "check" {
                o.assert_one_line_error();
            }
            assert_eq!(read(&f), b, "{name}: {args:?} changed the file");
        }
        // A writable repair either refuses with one line or leaves an image qemu-img finds
        // free of corruption (QED cannot reclaim leaks).
        let w = d.path().join(format!("{name}-rw.qed"));
        std::fs::write(&w, &b).unwrap();
        let o = vk_t(&["check", "-r", "all", "-f", "qed", s(&w)], HOSTILE_TIMEOUT);
        o.assert_sane();
        if matches!(o.code, Some(0 | 3)) {
            let q = qemu_img(&["check", "-f", "qed", s(&w)]);
            assert!(
                matches!(q.code, Some(0 | 3)),
                "{name}: qemu-img check after repair: {}{}",
                q.stdout,
                q.stderr
            );
        } else if o.code == Some(1) {
            o.assert_one_line_error();
            assert_eq!(read(&w), b, "{name}: a refused repair changed the file");
        }
    }
}

// ---------------------------------------------------------------------------
// Crash consistency
// ---------------------------------------------------------------------------

/// SIGKILL at random moments of `convert -O qed` (fresh target, and `-n` onto a partly
/// written one): afterwards qemu-img check finds no corruption (leaks at most), and what
/// the image reads is, cluster by cluster, either the source or zeros.
#[test]
fn qed_convert_survives_sigkill() {
    if using_override() {
        return;
    }
    let d = tmp();
    let src = d.path().join("src.raw");
    let data = random_bytes(48 * MIB, 21);
    write_raw(&src, &data);
    let dst = d.path().join("dst.qed");
    let args: Vec<String> = ["convert", "-O", "qed", "-o", "cluster_size=4k,table_size=2"]
        .iter()
        .map(|x| x.to_string())
        .chain([s(&src).to_string(), s(&dst).to_string()])
        .collect();
    let t = Instant::now();
    vk(&args).assert_ok();
    let full = t.elapsed().max(Duration::from_millis(20));
    let mut rng = Rng::new(99);
    let mut killed = 0;
    for i in 0..12 {
        let _ = std::fs::remove_file(&dst);
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 + 1));
        if kill_after(&args, delay) {
            killed += 1;
        }
        if !dst.exists() || std::fs::metadata(&dst).unwrap().len() < 4096 * 3 {
            continue; // killed before the image existed
        }
        let q = qemu_img(&["check", "-f", "qed", s(&dst)]);
        assert!(
            matches!(q.code, Some(0 | 3)),
            "kill {i} after {delay:?}: qemu-img check exited {:?}\n{}{}",
            q.code,
            q.stdout,
            q.stderr
        );
        let got = qemu_to_raw(&dst, "qed");
        for (c, (a, b)) in got.chunks(4096).zip(data.chunks(4096)).enumerate() {
            assert!(
                a == b || a.iter().all(|&x| x == 0),
                "kill {i}: cluster {c} holds neither the source nor zeros"
            );
        }
        // The survivor opens writable (need-check repair) and takes the rest of the copy.
        vk(&["convert", "-n", "-f", "raw", "-O", "qed", s(&src), s(&dst)]).assert_ok();
        let q = qemu_img(&["check", "-f", "qed", s(&dst)]);
        assert!(
            matches!(q.code, Some(0 | 3)),
            "after completing: {:?}",
            q.code
        );
        qemu_compare_identical(&dst, "qed", &src, "raw");
    }
    assert!(killed > 0, "no convert was killed while running");
}

/// Data in 1 MiB runs (the benchmark's shape): virtkit's convert writes the very file
/// qemu-img's does.
#[test]
fn qed_convert_layout_is_qemus() {
    let d = tmp();
    let src = d.path().join("src.raw");
    let mut data = vec![0u8; 16 * MIB];
    for (i, c) in data.chunks_mut(MIB).enumerate() {
        if i % 2 == 0 {
            c.copy_from_slice(&random_bytes(MIB, i as u64));
        }
    }
    write_raw(&src, &data);
    let (v, q) = (d.path().join("v.img"), d.path().join("q.img"));
    vk(&["convert", "-O", "qed", s(&src), s(&v)]).assert_ok();
    qemu_img(&["convert", "-O", "qed", s(&src), s(&q)]).assert_ok();
    assert_bytes_eq("convert -O qed", &read(&v), &read(&q));
}
