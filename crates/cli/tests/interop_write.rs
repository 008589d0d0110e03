//! Every image virtkit creates or writes must be accepted by the real qemu-img:
//! `qemu-img check` exits 0, `qemu-img compare` against the source says identical,
//! and `qemu-img info --output=json` agrees with the same operation done by qemu-img.

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// `create` the same image with virtkit and qemu-img (in two subdirectories,
/// same file name), returning (virtkit_image, qemu_image).
fn create_both(
    dir: &Path,
    fmt: &str,
    opts: Option<&str>,
    extra: &[&str],
    size: Option<&str>,
) -> (PathBuf, PathBuf) {
    let vd = dir.join("vk");
    let qd = dir.join("qemu");
    std::fs::create_dir_all(&vd).unwrap();
    std::fs::create_dir_all(&qd).unwrap();
    let name = format!("img.{fmt}");
    let (vi, qi) = (vd.join(&name), qd.join(&name));
    let mk = |p: &Path| {
        let mut a: Vec<String> = vec!["create".into(), "-f".into(), fmt.into()];
        if let Some(o) = opts {
            a.push("-o".into());
            a.push(o.into());
        }
        a.extend(extra.iter().map(|x| x.to_string()));
        a.push(s(p).into());
        if let Some(sz) = size {
            a.push(sz.into());
        }
        a
    };
    let q = qemu_img(&mk(&qi));
    q.assert_ok();
    let v = vk(&mk(&vi));
    v.assert_ok();
    assert_eq!(
        v.stdout.replace(s(&vi), "IMG"),
        q.stdout.replace(s(&qi), "IMG"),
        "create output differs for opts {opts:?} {extra:?}"
    );
    (vi, qi)
}

/// The virtkit-made image is valid and equivalent to the qemu-made one.
#[track_caller]
fn verify_same_image(vi: &Path, qi: &Path, fmt: &str) {
    if fmt == "qcow2" {
        qemu_check_clean(vi);
    }
    let vj = info_fields(&qemu_info_json(vi));
    let qj = info_fields(&qemu_info_json(qi));
    // full-backing-filename is absolute and depends on the directory
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("full-backing-filename");
        v
    };
    assert_eq!(
        strip(vj),
        strip(qj),
        "qemu-img info of virtkit image {} vs qemu's",
        vi.display()
    );
    let out = qemu_img(&["compare", "-f", fmt, "-F", fmt, s(vi), s(qi)]);
    assert!(
        out.ok(),
        "qemu-img compare {} {}: {:?}\n{}{}",
        vi.display(),
        qi.display(),
        out.code,
        out.stdout,
        out.stderr
    );
}

/// Write `data` into the existing image with `virtkit img convert -n`, then
/// check it with qemu-img.
#[track_caller]
fn fill_with_vk(img: &Path, fmt: &str, raw: &Path) {
    vk(&["convert", "-n", "-f", "raw", "-O", fmt, s(raw), s(img)]).assert_ok();
    if fmt == "qcow2" {
        qemu_check_clean(img);
    }
    qemu_compare_identical(raw, "raw", img, fmt);
}

fn raw_file(dir: &Path, name: &str, size: usize, seed: u64) -> PathBuf {
    let p = dir.join(name);
    write_raw(&p, &gen_data(size, seed));
    p
}

/// virtkit converts `raw` to qcow2 with `opts`: the result must pass qemu-img check, compare
/// identical to the source, and agree with what qemu-img's own convert produces.
fn convert_like_qemu(dir: &Path, raw: &Path, opts: &str) {
    let out = dir.join("vk-conv.qcow2");
    vk(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        opts,
        s(raw),
        s(&out),
    ])
    .assert_ok();
    qemu_check_clean(&out);
    qemu_compare_identical(raw, "raw", &out, "qcow2");
    let qout = dir.join("qemu-conv.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        opts,
        s(raw),
        s(&qout),
    ])
    .assert_ok();
    verify_same_image(&out, &qout, "qcow2");
}

fn create_write_roundtrip(opts: &str, size: usize, seed: u64) {
    let d = tmp();
    let (vi, qi) = create_both(d.path(), "qcow2", Some(opts), &[], Some(&size.to_string()));
    verify_same_image(&vi, &qi, "qcow2");
    let raw = raw_file(d.path(), "src.raw", size, seed);
    fill_with_vk(&vi, "qcow2", &raw);
    // overwrite with different content: exercises rewriting allocated clusters
    let raw2 = raw_file(d.path(), "src2.raw", size, seed + 1000);
    fill_with_vk(&vi, "qcow2", &raw2);
    // and the same options through convert (fresh target)
    convert_like_qemu(d.path(), &raw, opts);
}

#[test]
fn create_cluster_sizes() {
    for (i, cs) in [
        512usize,
        1024,
        2048,
        4096,
        8192,
        16384,
        32768,
        65536,
        131072,
        262144,
        524288,
        1 << 20,
        2 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let size = if cs >= 1 << 20 { 8 * MIB } else { 3 * MIB };
        create_write_roundtrip(&format!("cluster_size={cs}"), size, 10 + i as u64);
    }
}

#[test]
fn create_compat_v2() {
    for (i, cs) in [512usize, 4096, 65536, 2 << 20].into_iter().enumerate() {
        create_write_roundtrip(
            &format!("compat=0.10,cluster_size={cs}"),
            4 * MIB,
            30 + i as u64,
        );
    }
    create_write_roundtrip("compat=v3", 2 * MIB, 35);
}

#[test]
fn create_refcount_bits() {
    for (i, rb) in [1, 2, 4, 8, 16, 32, 64].into_iter().enumerate() {
        create_write_roundtrip(
            &format!("refcount_bits={rb},cluster_size=4096"),
            3 * MIB,
            40 + i as u64,
        );
    }
}

#[test]
fn create_lazy_refcounts_extended_l2_zstd() {
    create_write_roundtrip("lazy_refcounts=on", 4 * MIB, 50);
    create_write_roundtrip("lazy_refcounts=on,cluster_size=4096", 2 * MIB, 51);
    create_write_roundtrip("extended_l2=on", 4 * MIB, 52);
    create_write_roundtrip("extended_l2=on,cluster_size=16384", 3 * MIB, 53);
    create_write_roundtrip("extended_l2=on,cluster_size=2M", 8 * MIB, 54);
    create_write_roundtrip("compression_type=zstd", 3 * MIB, 55);
    create_write_roundtrip(
        "compression_type=zstd,extended_l2=on,lazy_refcounts=on,refcount_bits=8",
        3 * MIB,
        56,
    );
}

#[test]
fn create_preallocation_modes() {
    for (i, (p, cs)) in [
        ("off", "64k"),
        ("metadata", "64k"),
        ("metadata", "4k"),
        ("falloc", "64k"),
        ("full", "64k"),
        ("full", "512"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp();
        let size = 4 * MIB;
        let opts = format!("preallocation={p},cluster_size={cs}");
        let (vi, qi) = create_both(d.path(), "qcow2", Some(&opts), &[], Some("4M"));
        verify_same_image(&vi, &qi, "qcow2");
        // same allocation picture (offsets may differ)
        let vm = map_extents(&qemu_map(&vi, "qcow2"), false);
        let qm = map_extents(&qemu_map(&qi, "qcow2"), false);
        assert_extents_eq(
            &format!("map of preallocation={p} cluster_size={cs}"),
            &vm,
            &qm,
        );
        let md = std::fs::metadata(&vi).unwrap();
        if p != "off" {
            assert!(
                md.len() >= size as u64,
                "preallocation={p}: file length {} < virtual size",
                md.len()
            );
        }
        if p == "falloc" || p == "full" {
            assert!(
                md.blocks() * 512 >= size as u64,
                "preallocation={p}: only {} bytes allocated on disk",
                md.blocks() * 512
            );
        }
        let raw = raw_file(d.path(), "src.raw", size, 60 + i as u64);
        fill_with_vk(&vi, "qcow2", &raw);
    }
    // raw preallocation
    for p in ["off", "falloc", "full"] {
        let d = tmp();
        let (vi, qi) = create_both(
            d.path(),
            "raw",
            Some(&format!("preallocation={p}")),
            &[],
            Some("3M"),
        );
        verify_same_image(&vi, &qi, "raw");
        let md = std::fs::metadata(&vi).unwrap();
        assert_eq!(md.len(), 3 * MIB as u64);
        if p != "off" {
            assert!(
                md.blocks() * 512 >= 3 * MIB as u64,
                "raw preallocation={p} not allocated"
            );
        }
    }
}

#[test]
fn create_size_suffixes_and_raw() {
    for sz in [
        "100", "512", "1k", "64K", "1.5M", "3M", "2G", "1T", "1048577",
    ] {
        for fmt in ["qcow2", "raw"] {
            let d = tmp();
            let (vi, qi) = create_both(d.path(), fmt, None, &[], Some(sz));
            verify_same_image(&vi, &qi, fmt);
        }
    }
    // size given as an option
    let d = tmp();
    let (vi, qi) = create_both(
        d.path(),
        "qcow2",
        Some("size=5M,cluster_size=8k"),
        &[],
        None,
    );
    verify_same_image(&vi, &qi, "qcow2");
}

#[test]
fn create_with_backing_file() {
    let d = tmp();
    let base = d.path().join("base.qcow2");
    let raw = raw_file(d.path(), "base.raw", 4 * MIB, 70);
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&base)]).assert_ok();
    // -b/-F, size inherited from backing file
    let (vi, qi) = create_both(
        d.path(),
        "qcow2",
        None,
        &["-b", s(&base), "-F", "qcow2"],
        None,
    );
    verify_same_image(&vi, &qi, "qcow2");
    qemu_compare_identical(&vi, "qcow2", &raw, "raw");
    // -o backing_file,backing_fmt with explicit larger size
    let opt = format!("backing_file={},backing_fmt=qcow2", s(&base));
    let (vi, qi) = create_both(d.path(), "qcow2", Some(&opt), &[], Some("6M"));
    verify_same_image(&vi, &qi, "qcow2");
    // raw backing file
    let (vi, qi) = create_both(
        d.path(),
        "qcow2",
        Some("cluster_size=4k"),
        &["-b", s(&raw), "-F", "raw"],
        None,
    );
    verify_same_image(&vi, &qi, "qcow2");
    // writing into the overlay: only the overlay changes, contents match the new data
    let raw2 = raw_file(d.path(), "new.raw", 4 * MIB, 71);
    fill_with_vk(&vi, "qcow2", &raw2);
    qemu_compare_identical(&raw, "raw", &base, "qcow2");
    // -u: backing file need not exist
    let (vi, qi) = create_both(
        d.path(),
        "qcow2",
        None,
        &["-u", "-b", "does-not-exist.qcow2", "-F", "qcow2"],
        Some("2M"),
    );
    let vj = info_fields(&qemu_info_json(&vi));
    let qj = info_fields(&qemu_info_json(&qi));
    assert_eq!(vj["backing-filename"], qj["backing-filename"]);
    assert_eq!(vj["backing-filename-format"], qj["backing-filename-format"]);
    assert_eq!(vj["virtual-size"], qj["virtual-size"]);
}

#[test]
fn convert_variants_raw_to_qcow2() {
    for (i, opts) in [
        "compat=0.10",
        "compat=1.1,cluster_size=512",
        "cluster_size=2M",
        "refcount_bits=1",
        "refcount_bits=64,cluster_size=1k",
        "lazy_refcounts=on",
        "extended_l2=on,cluster_size=32k",
        "compression_type=zstd",
        "preallocation=metadata",
        "preallocation=falloc",
        "preallocation=full",
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp();
        let raw = raw_file(d.path(), "src.raw", 4 * MIB, 80 + i as u64);
        convert_like_qemu(d.path(), &raw, opts);
    }
}

#[test]
fn convert_qcow2_to_raw_and_qcow2_to_qcow2() {
    let d = tmp();
    let raw = raw_file(d.path(), "src.raw", 4 * MIB, 90);
    let q = d.path().join("q.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&raw),
        s(&q),
    ])
    .assert_ok();
    let out = d.path().join("out.raw");
    vk(&["convert", "-f", "qcow2", "-O", "raw", s(&q), s(&out)]).assert_ok();
    assert_bytes_eq("qcow2 -> raw", &read(&out), &read(&raw));
    let out2 = d.path().join("out2.qcow2");
    vk(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=64k",
        s(&q),
        s(&out2),
    ])
    .assert_ok();
    qemu_check_clean(&out2);
    qemu_compare_identical(&raw, "raw", &out2, "qcow2");
    // raw -> raw
    let out3 = d.path().join("out3.raw");
    vk(&["convert", "-f", "raw", "-O", "raw", s(&raw), s(&out3)]).assert_ok();
    assert_bytes_eq("raw -> raw", &read(&out3), &read(&raw));
}

#[test]
fn convert_compressed_zlib_zstd() {
    for (i, (ct, cs)) in [
        ("zlib", "64k"),
        ("zstd", "64k"),
        ("zlib", "4k"),
        ("zstd", "2M"),
        ("zlib", "512"),
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp();
        let size = if cs == "2M" { 8 * MIB } else { 3 * MIB };
        let raw = raw_file(d.path(), "src.raw", size, 100 + i as u64);
        let out = d.path().join("out.qcow2");
        let opts = format!("compression_type={ct},cluster_size={cs}");
        vk(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &opts,
            s(&raw),
            s(&out),
        ])
        .assert_ok();
        qemu_check_clean(&out);
        qemu_compare_identical(&raw, "raw", &out, "qcow2");
        let info = qemu_info_json(&out);
        assert_eq!(
            info["format-specific"]["data"]["compression-type"],
            Value::from(ct),
            "{info}"
        );
        let cj = qemu_img(&["check", "--output=json", s(&out)]);
        cj.assert_ok();
        let cj = cj.json();
        let comp = cj
            .get("compressed-clusters")
            .and_then(|x| x.as_u64())
            .unwrap_or(0);
        assert!(comp > 0, "convert -c {opts}: no compressed clusters: {cj}");
        // zero areas are not allocated (same picture as qemu, ignoring compression
        // decisions: compare present/zero flags only)
        let qout = d.path().join("qout.qcow2");
        qemu_img(&[
            "convert",
            "-c",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            &opts,
            s(&raw),
            s(&qout),
        ])
        .assert_ok();
        let vm = map_extents(&qemu_map(&out, "qcow2"), false);
        let qm = map_extents(&qemu_map(&qout, "qcow2"), false);
        assert_extents_eq(&format!("map of convert -c {opts}"), &vm, &qm);
    }
}

#[test]
fn convert_compressed_v2() {
    let d = tmp();
    let raw = raw_file(d.path(), "src.raw", 3 * MIB, 110);
    let out = d.path().join("out.qcow2");
    vk(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&raw),
        s(&out),
    ])
    .assert_ok();
    qemu_check_clean(&out);
    qemu_compare_identical(&raw, "raw", &out, "qcow2");
}

#[test]
fn convert_with_backing_b_only_top_layer() {
    let d = tmp();
    let base_raw = raw_file(d.path(), "base.raw", 4 * MIB, 120);
    let base = d.path().join("base.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&base_raw),
        s(&base),
    ])
    .assert_ok();
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
    ])
    .assert_ok();
    qio(
        "qcow2",
        &top,
        &[
            "write -P 0x42 64k 64k",
            "write -P 0x43 1M 4k",
            "write -z 2M 64k",
            "write -P 0x44 3M 192k",
        ],
    );

    let out = d.path().join("out.qcow2");
    vk(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "qcow2",
        "-B",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
        s(&out),
    ])
    .assert_ok();
    qemu_check_clean(&out);
    qemu_compare_identical(&top, "qcow2", &out, "qcow2");
    let info = qemu_info_json(&out);
    assert_eq!(info["backing-filename"], Value::from(s(&base)), "{info}");
    assert_eq!(
        info["backing-filename-format"],
        Value::from("qcow2"),
        "{info}"
    );
    let qout = d.path().join("qout.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "qcow2",
        "-B",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
        s(&qout),
    ])
    .assert_ok();
    let vm = qemu_map(&out, "qcow2");
    let qm = qemu_map(&qout, "qcow2");
    // only the clusters that differ from the backing file are allocated in the output
    let top_bytes = top_data_bytes(&vm);
    assert!(
        top_bytes <= 448 * 1024,
        "convert -B copied {top_bytes} bytes into the overlay (expected only the top layer)\n{}",
        fmt_extents(&map_extents(&vm, false))
    );
    assert_extents_eq(
        "map of convert -B output",
        &map_extents(&vm, false),
        &map_extents(&qm, false),
    );
}

#[test]
fn convert_n_onto_existing() {
    let d = tmp();
    let img = d.path().join("dst.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=16k",
        s(&img),
        "4M",
    ])
    .assert_ok();
    qio(
        "qcow2",
        &img,
        &["write -P 0x99 0 2M", "write -P 0x98 3M 1M"],
    );
    let raw = raw_file(d.path(), "src.raw", 4 * MIB, 130);
    fill_with_vk(&img, "qcow2", &raw);
    // onto an existing raw image
    let rimg = d.path().join("dst.raw");
    write_raw(&rimg, &random_bytes(4 * MIB, 131));
    vk(&["convert", "-n", "-f", "raw", "-O", "raw", s(&raw), s(&rimg)]).assert_ok();
    assert_bytes_eq("convert -n onto raw", &read(&rimg), &read(&raw));
    // --target-is-zero onto a fresh image
    let z = d.path().join("zero.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&z), "4M"]).assert_ok();
    vk(&[
        "convert",
        "-n",
        "--target-is-zero",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw),
        s(&z),
    ])
    .assert_ok();
    qemu_check_clean(&z);
    qemu_compare_identical(&raw, "raw", &z, "qcow2");
    // parallel / out-of-order writes and progress
    let p = d.path().join("par.qcow2");
    let o = vk(&[
        "convert",
        "-p",
        "-m",
        "8",
        "-W",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw),
        s(&p),
    ]);
    o.assert_ok();
    qemu_check_clean(&p);
    qemu_compare_identical(&raw, "raw", &p, "qcow2");
}

#[test]
fn convert_sparse_threshold() {
    for (i, cs) in ["4k", "64k", "512"].into_iter().enumerate() {
        for sopt in ["0", "4k", "64k", "512"] {
            let d = tmp();
            let raw = raw_file(d.path(), "src.raw", 3 * MIB, 140 + i as u64);
            let opts = format!("cluster_size={cs}");
            let out = d.path().join("out.qcow2");
            vk(&[
                "convert",
                "-S",
                sopt,
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &opts,
                s(&raw),
                s(&out),
            ])
            .assert_ok();
            qemu_check_clean(&out);
            qemu_compare_identical(&raw, "raw", &out, "qcow2");
            let qout = d.path().join("qout.qcow2");
            qemu_img(&[
                "convert",
                "-S",
                sopt,
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-o",
                &opts,
                s(&raw),
                s(&qout),
            ])
            .assert_ok();
            let vm = map_extents(&qemu_map(&out, "qcow2"), false);
            let qm = map_extents(&qemu_map(&qout, "qcow2"), false);
            assert_extents_eq(&format!("map after convert -S {sopt} -o {opts}"), &vm, &qm);
            if sopt != "0" {
                // whatever is not mapped as data must really be zeros
                let data = gen_data(3 * MIB, 140 + i as u64);
                for e in map_extents(&qemu_map(&out, "qcow2"), false) {
                    if e.data {
                        continue;
                    }
                    let (a, b) = (e.start as usize, (e.start + e.length) as usize);
                    assert!(
                        data[a..b].iter().all(|&x| x == 0),
                        "non-data extent over non-zero data"
                    );
                }
            }
        }
    }
    // raw output: -S 0 writes everything, -S 4k leaves holes
    let d = tmp();
    let raw = raw_file(d.path(), "src.raw", 4 * MIB, 150);
    let o0 = d.path().join("o0.raw");
    let o4 = d.path().join("o4.raw");
    vk(&[
        "convert",
        "-S",
        "0",
        "-f",
        "raw",
        "-O",
        "raw",
        s(&raw),
        s(&o0),
    ])
    .assert_ok();
    vk(&[
        "convert",
        "-S",
        "4k",
        "-f",
        "raw",
        "-O",
        "raw",
        s(&raw),
        s(&o4),
    ])
    .assert_ok();
    assert_bytes_eq("-S 0 raw", &read(&o0), &read(&raw));
    assert_bytes_eq("-S 4k raw", &read(&o4), &read(&raw));
    let b0 = std::fs::metadata(&o0).unwrap().blocks();
    let b4 = std::fs::metadata(&o4).unwrap().blocks();
    assert!(
        b4 < b0,
        "-S 4k raw output should be sparser than -S 0 ({b4} vs {b0} blocks)"
    );
}

/// Snapshot create/apply/delete round trips, all done by virtkit, verified by qemu-img.
#[test]
fn snapshot_round_trips() {
    for (i, opts) in [
        "cluster_size=64k",
        "cluster_size=4k,compat=0.10",
        "cluster_size=16k,extended_l2=on,refcount_bits=4",
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp();
        let img = d.path().join("s.qcow2");
        vk(&["create", "-q", "-f", "qcow2", "-o", opts, s(&img), "4M"]).assert_ok();
        let a = raw_file(d.path(), "a.raw", 4 * MIB, 160 + i as u64 * 3);
        let b = raw_file(d.path(), "b.raw", 4 * MIB, 161 + i as u64 * 3);
        let c = raw_file(d.path(), "c.raw", 4 * MIB, 162 + i as u64 * 3);
        fill_with_vk(&img, "qcow2", &a);
        vk(&["snapshot", "-c", "snapA", s(&img)]).assert_ok();
        qemu_check_clean(&img);
        fill_with_vk(&img, "qcow2", &b);
        vk(&["snapshot", "-c", "snapB", s(&img)]).assert_ok();
        qemu_check_clean(&img);
        fill_with_vk(&img, "qcow2", &c);

        let names = |p: &Path| -> Vec<String> {
            qemu_info_json(p)["snapshots"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|x| x["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(names(&img), vec!["snapA", "snapB"]);

        vk(&["snapshot", "-a", "snapA", s(&img)]).assert_ok();
        qemu_check_clean(&img);
        qemu_compare_identical(&a, "raw", &img, "qcow2");
        vk(&["snapshot", "-a", "snapB", s(&img)]).assert_ok();
        qemu_check_clean(&img);
        qemu_compare_identical(&b, "raw", &img, "qcow2");

        vk(&["snapshot", "-d", "snapA", s(&img)]).assert_ok();
        qemu_check_clean(&img);
        assert_eq!(names(&img), vec!["snapB"]);
        qemu_compare_identical(&b, "raw", &img, "qcow2");
        // write after apply (COW from the snapshot), then go back
        fill_with_vk(&img, "qcow2", &c);
        vk(&["snapshot", "-a", "snapB", s(&img)]).assert_ok();
        qemu_compare_identical(&b, "raw", &img, "qcow2");
        vk(&["snapshot", "-d", "snapB", s(&img)]).assert_ok();
        qemu_check_clean(&img);
        assert!(names(&img).is_empty());
        qemu_compare_identical(&b, "raw", &img, "qcow2");

        // qemu-img can apply a snapshot virtkit made
        vk(&["snapshot", "-c", "x", s(&img)]).assert_ok();
        fill_with_vk(&img, "qcow2", &a);
        qemu_img(&["snapshot", "-a", "x", s(&img)]).assert_ok();
        qemu_compare_identical(&b, "raw", &img, "qcow2");
        qemu_check_clean(&img);
    }
}

#[test]
fn snapshot_of_qemu_snapshot_image() {
    // virtkit applies/deletes snapshots qemu-img made
    let d = tmp();
    let img = d.path().join("s.qcow2");
    let a = raw_file(d.path(), "a.raw", 2 * MIB, 170);
    let b = raw_file(d.path(), "b.raw", 2 * MIB, 171);
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&a), s(&img)]).assert_ok();
    qemu_img(&["snapshot", "-c", "qa", s(&img)]).assert_ok();
    qemu_img(&["convert", "-n", "-f", "raw", "-O", "qcow2", s(&b), s(&img)]).assert_ok();
    vk(&["snapshot", "-a", "qa", s(&img)]).assert_ok();
    qemu_check_clean(&img);
    qemu_compare_identical(&a, "raw", &img, "qcow2");
    vk(&["snapshot", "-d", "qa", s(&img)]).assert_ok();
    qemu_check_clean(&img);
    qemu_compare_identical(&a, "raw", &img, "qcow2");
}

fn resized(data: &[u8], size: usize) -> Vec<u8> {
    let mut v = data.to_vec();
    v.resize(size, 0);
    v
}

#[test]
fn resize_grow_shrink() {
    for (i, opts) in [
        "cluster_size=64k",
        "cluster_size=4k",
        "compat=0.10",
        "extended_l2=on",
        "refcount_bits=1,cluster_size=512",
    ]
    .into_iter()
    .enumerate()
    {
        let d = tmp();
        let img = d.path().join("r.qcow2");
        let data = gen_data(4 * MIB, 180 + i as u64);
        let raw = d.path().join("src.raw");
        write_raw(&raw, &data);
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            opts,
            s(&raw),
            s(&img),
        ])
        .assert_ok();
        let exp = d.path().join("exp.raw");

        // grow (relative)
        vk(&["resize", s(&img), "+3M"]).assert_ok();
        qemu_check_clean(&img);
        assert_eq!(
            qemu_info_json(&img)["virtual-size"],
            Value::from(7 * MIB as u64)
        );
        write_raw(&exp, &resized(&data, 7 * MIB));
        qemu_compare_identical(&exp, "raw", &img, "qcow2");

        // grow (absolute, large: needs new L1 table)
        // (qemu-img itself is very slow shrinking 512-byte-cluster images from GiB sizes)
        let (big, big_bytes) = if opts.contains("cluster_size=512") {
            ("64M", 64u64 << 20)
        } else {
            ("3G", 3u64 << 30)
        };
        vk(&["resize", "-f", "qcow2", s(&img), big]).assert_ok();
        qemu_check_clean(&img);
        assert_eq!(qemu_info_json(&img)["virtual-size"], Value::from(big_bytes));

        // shrink back (absolute), then relative shrink into the data
        vk(&["resize", "--shrink", s(&img), "7M"]).assert_ok();
        qemu_check_clean(&img);
        vk(&["resize", "--shrink", s(&img), "-5M"]).assert_ok();
        qemu_check_clean(&img);
        assert_eq!(
            qemu_info_json(&img)["virtual-size"],
            Value::from(2 * MIB as u64)
        );
        write_raw(&exp, &resized(&data, 2 * MIB));
        qemu_compare_identical(&exp, "raw", &img, "qcow2");

        // grow after shrink: the old data must not reappear
        vk(&["resize", s(&img), "4M"]).assert_ok();
        qemu_check_clean(&img);
        write_raw(&exp, &resized(&resized(&data, 2 * MIB), 4 * MIB));
        qemu_compare_identical(&exp, "raw", &img, "qcow2");
    }
    // raw
    let d = tmp();
    let data = gen_data(3 * MIB, 190);
    let raw = d.path().join("r.raw");
    write_raw(&raw, &data);
    vk(&["resize", "-f", "raw", s(&raw), "+1M"]).assert_ok();
    assert_bytes_eq("raw grow", &read(&raw), &resized(&data, 4 * MIB));
    vk(&["resize", "-f", "raw", "--shrink", s(&raw), "1M"]).assert_ok();
    assert_bytes_eq("raw shrink", &read(&raw), &data[..MIB]);
}

#[test]
fn written_image_info_matches_qemu() {
    // virtkit's own info on images it wrote equals qemu-img's info on them
    let d = tmp();
    let raw = raw_file(d.path(), "src.raw", 3 * MIB, 200);
    let img = d.path().join("o.qcow2");
    vk(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k,lazy_refcounts=on",
        s(&raw),
        s(&img),
    ])
    .assert_ok();
    vk(&["snapshot", "-c", "s1", s(&img)]).assert_ok();
    let v = vk(&["info", "--output=json", s(&img)]);
    v.assert_ok();
    assert_eq!(info_fields(&v.json()), info_fields(&qemu_info_json(&img)));
    let vm = map_extents(&vk_map(&img, "qcow2"), true);
    let qm = map_extents(&qemu_map(&img, "qcow2"), true);
    assert_extents_eq("map of virtkit-written image", &vm, &qm);
}
