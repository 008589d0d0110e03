//! Images written by the real qemu-img / qemu-io must read identically in virtkit:
//! `convert -O raw` byte for byte, `info --output=json` fields, `map --output=json`
//! extents (including offsets: both tools read the same metadata), and `check`.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// Fields compared between the two `info --output=json` outputs for the same file.
/// Snapshot dates are included since both tools read the same table.
fn read_info_fields(v: &Value) -> Value {
    let mut f = info_fields(v);
    if let Some(snaps) = v.get("snapshots").and_then(|x| x.as_array()) {
        let list: Vec<Value> = snaps
            .iter()
            .map(|sn| {
                let mut o = serde_json::Map::new();
                for k in [
                    "id",
                    "name",
                    "vm-state-size",
                    "date-sec",
                    "date-nsec",
                    "vm-clock-sec",
                    "vm-clock-nsec",
                ] {
                    o.insert(k.into(), sn.get(k).cloned().unwrap_or(Value::Null));
                }
                Value::Object(o)
            })
            .collect();
        f.as_object_mut()
            .unwrap()
            .insert("snapshots".into(), Value::Array(list));
    }
    f
}

fn check_json_fields(v: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for k in [
        "check-errors",
        "corruptions",
        "leaks",
        "image-end-offset",
        "total-clusters",
        "allocated-clusters",
        "fragmented-clusters",
        "compressed-clusters",
        "format",
    ] {
        if let Some(x) = v.get(k) {
            m.insert(k.into(), x.clone());
        }
    }
    Value::Object(m)
}

/// Everything virtkit can observe about an image written by qemu must agree with qemu.
fn verify_read(path: &Path, fmt: &str) {
    let want = qemu_to_raw(path, fmt);
    let got = vk_to_raw(path, fmt);
    assert_bytes_eq(&format!("convert -O raw {}", path.display()), &got, &want);

    // info
    let qi = qemu_img(&["info", "--output=json", "-f", fmt, s(path)]);
    qi.assert_ok();
    let vi = vk(&["info", "--output=json", "-f", fmt, s(path)]);
    vi.assert_ok();
    assert_eq!(
        read_info_fields(&vi.json()),
        read_info_fields(&qi.json()),
        "info --output=json fields differ for {}",
        path.display()
    );

    // map
    let qm = map_extents(&qemu_map(path, fmt), true);
    let vm = map_extents(&vk_map(path, fmt), true);
    assert_extents_eq(&format!("map {}", path.display()), &vm, &qm);

    // check (qcow2 only; raw has no check)
    if fmt == "qcow2" {
        verify_check_matches(path);
    }
}

fn verify_check_matches(path: &Path) {
    let qc = qemu_img(&["check", "-f", "qcow2", s(path)]);
    let vc = vk(&["check", "-f", "qcow2", s(path)]);
    assert_eq!(
        vc.code,
        qc.code,
        "check exit code for {}:\nvk: {}{}\nqemu: {}{}",
        path.display(),
        vc.stdout,
        vc.stderr,
        qc.stdout,
        qc.stderr
    );
    assert_eq!(vc.stdout, qc.stdout, "check output for {}", path.display());
    let qj = qemu_img(&["check", "--output=json", "-f", "qcow2", s(path)]);
    let vj = vk(&["check", "--output=json", "-f", "qcow2", s(path)]);
    assert_eq!(
        vj.code,
        qj.code,
        "check --output=json exit code for {}",
        path.display()
    );
    assert_eq!(
        check_json_fields(&vj.json()),
        check_json_fields(&qj.json()),
        "check --output=json fields for {}",
        path.display()
    );
}

/// A raw file of generated content plus a qcow2 made from it by qemu-img.
fn qemu_qcow2_from(dir: &Path, name: &str, size: usize, seed: u64, opts: &[&str]) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    write_raw(&raw, &gen_data(size, seed));
    let img = dir.join(format!("{name}.qcow2"));
    let mut args: Vec<&str> = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(s(&raw));
    args.push(s(&img));
    qemu_img(&args).assert_ok();
    img
}

#[test]
fn read_raw() {
    let d = tmp();
    let raw = d.path().join("a.raw");
    write_raw(&raw, &gen_data(3 * MIB + 4096, 1));
    verify_read(&raw, "raw");
}

#[test]
fn read_v2_compat_0_10() {
    let d = tmp();
    let img = qemu_qcow2_from(d.path(), "v2", 4 * MIB, 2, &["-o", "compat=0.10"]);
    verify_read(&img, "qcow2");
    // v2 has no zero flag: write -z / discard deallocate instead
    qio(
        "qcow2",
        &img,
        &["write -z 0 128k", "discard 1M 256k", "write -P 0x5a 3M 4k"],
    );
    verify_read(&img, "qcow2");
}

#[test]
fn read_v3_cluster_sizes() {
    let d = tmp();
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
        1 << 20,
        2 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let size = if cs >= 1 << 20 { 8 * MIB } else { 3 * MIB };
        let img = qemu_qcow2_from(
            d.path(),
            &format!("cs{cs}"),
            size,
            100 + i as u64,
            &["-o", &format!("compat=1.1,cluster_size={cs}")],
        );
        verify_read(&img, "qcow2");
    }
}

#[test]
fn read_refcount_widths() {
    let d = tmp();
    for (i, rb) in [1, 2, 4, 8, 16, 32, 64].into_iter().enumerate() {
        let img = qemu_qcow2_from(
            d.path(),
            &format!("rb{rb}"),
            2 * MIB,
            200 + i as u64,
            &["-o", &format!("refcount_bits={rb},cluster_size=4096")],
        );
        verify_read(&img, "qcow2");
    }
}

#[test]
fn read_unaligned_virtual_size() {
    let d = tmp();
    // virtual size not a multiple of the cluster size (nor of 4k)
    let img = d.path().join("odd.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&img), "3146240"]).assert_ok(); // 3 MiB + 512
    qio(
        "qcow2",
        &img,
        &["write -P 0x33 0 64k", "write -P 0x44 3145728 512"],
    );
    verify_read(&img, "qcow2");
}

#[test]
fn read_backing_chain_qcow2_base() {
    let d = tmp();
    let base = qemu_qcow2_from(d.path(), "base", 4 * MIB, 300, &[]);
    let mid = d.path().join("mid.qcow2");
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&mid),
    ])
    .assert_ok();
    qio(
        "qcow2",
        &mid,
        &[
            "write -P 0xa1 64k 128k",
            "write -z 1M 64k",
            "write -P 0xa2 2M 4k",
        ],
    );
    // relative backing file name for the top layer
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ])
    .assert_ok();
    qio(
        "qcow2",
        &top,
        &[
            "write -P 0xb1 96k 64k",
            "discard 2M 64k",
            "write -P 0xb2 3M 512",
        ],
    );
    verify_read(&top, "qcow2");
    verify_read(&mid, "qcow2");

    // --backing-chain: compare fields per layer
    let q = qemu_img(&["info", "--output=json", "--backing-chain", s(&top)]);
    q.assert_ok();
    let v = vk(&["info", "--output=json", "--backing-chain", s(&top)]);
    v.assert_ok();
    let qa: Vec<Value> = q
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(read_info_fields)
        .collect();
    let va: Vec<Value> = v
        .json()
        .as_array()
        .expect("array for --backing-chain")
        .iter()
        .map(read_info_fields)
        .collect();
    assert_eq!(va, qa, "info --backing-chain");
}

#[test]
fn read_backing_chain_raw_base_depth3() {
    let d = tmp();
    let base = d.path().join("base.raw");
    write_raw(&base, &gen_data(4 * MIB, 301));
    let l1 = d.path().join("l1.qcow2");
    let l2 = d.path().join("l2.qcow2");
    let l3 = d.path().join("l3.qcow2");
    qemu_img(&["create", "-f", "qcow2", "-b", s(&base), "-F", "raw", s(&l1)]).assert_ok();
    qio("qcow2", &l1, &["write -P 1 0 64k", "write -z 512k 512k"]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4096",
        "-b",
        s(&l1),
        "-F",
        "qcow2",
        s(&l2),
    ])
    .assert_ok();
    qio(
        "qcow2",
        &l2,
        &["write -P 2 4k 4k", "discard 512k 64k", "write -P 3 1M 1k"],
    );
    // top layer larger than its backing file: the tail reads as zeros
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&l2),
        "-F",
        "qcow2",
        s(&l3),
        "6M",
    ])
    .assert_ok();
    qio("qcow2", &l3, &["write -P 4 2M 64k", "write -P 5 5M 64k"]);
    verify_read(&l3, "qcow2");
}

#[test]
fn read_backing_shorter_than_overlay_and_shrunk_base() {
    let d = tmp();
    let base = qemu_qcow2_from(d.path(), "base", 2 * MIB, 302, &[]);
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
        "4M",
    ])
    .assert_ok();
    qio("qcow2", &top, &["write -P 7 1M 4k"]);
    verify_read(&top, "qcow2");
}

#[test]
fn read_compressed_zlib_and_zstd() {
    let d = tmp();
    for ct in ["zlib", "zstd"] {
        for cs in [4096usize, 65536, 2 << 20] {
            let img = qemu_qcow2_from(
                d.path(),
                &format!("c-{ct}-{cs}"),
                if cs > 65536 { 8 * MIB } else { 3 * MIB },
                400 + cs as u64,
                &[
                    "-c",
                    "-o",
                    &format!("compression_type={ct},cluster_size={cs}"),
                ],
            );
            verify_read(&img, "qcow2");
        }
    }
    // compressed v2 image (zlib only)
    let img = qemu_qcow2_from(d.path(), "c-v2", 3 * MIB, 450, &["-c", "-o", "compat=0.10"]);
    verify_read(&img, "qcow2");
    // compressed clusters partially overwritten afterwards
    qio("qcow2", &img, &["write -P 0x77 4k 4k", "write -z 1M 64k"]);
    verify_read(&img, "qcow2");
}

#[test]
fn read_internal_snapshots_active_layer() {
    let d = tmp();
    let img = qemu_qcow2_from(d.path(), "snap", 4 * MIB, 500, &[]);
    qemu_img(&["snapshot", "-c", "one", s(&img)]).assert_ok();
    qio("qcow2", &img, &["write -P 0x11 0 256k", "write -z 1M 128k"]);
    qemu_img(&["snapshot", "-c", "two", s(&img)]).assert_ok();
    qio("qcow2", &img, &["write -P 0x22 128k 256k", "discard 2M 1M"]);
    verify_read(&img, "qcow2");
    // snapshot list: tags visible in virtkit's listing
    let v = vk(&["snapshot", "-l", s(&img)]);
    v.assert_ok();
    assert!(
        v.stdout.starts_with("Snapshot list:\n"),
        "snapshot -l:\n{}",
        v.stdout
    );
    for tag in ["one", "two"] {
        assert!(
            v.stdout
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(tag)),
            "snapshot {tag} missing from:\n{}",
            v.stdout
        );
    }
}

#[test]
fn read_zero_clusters_and_discard_v3() {
    let d = tmp();
    let img = qemu_qcow2_from(d.path(), "z", 4 * MIB, 600, &[]);
    qio(
        "qcow2",
        &img,
        &[
            "write -z 0 64k",        // whole-cluster zero (keeps allocation)
            "write -z -u 128k 128k", // zero + unmap
            "write -z 300k 8k",      // partial-cluster zero (COW)
            "discard 1M 512k",
            "discard 2M 4k", // partial discard: writes zeros
            "write -P 0xee 3M 64k",
        ],
    );
    verify_read(&img, "qcow2");
    // zero clusters over a backing file must mask the backing content
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&img),
        "-F",
        "qcow2",
        s(&top),
    ])
    .assert_ok();
    qio(
        "qcow2",
        &top,
        &["write -z 3M 64k", "write -z 0 1M", "discard 2M 1M"],
    );
    verify_read(&top, "qcow2");
}

#[test]
fn read_extended_l2_partial_clusters() {
    let d = tmp();
    let img = d.path().join("ext.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=64k",
        s(&img),
        "4M",
    ])
    .assert_ok();
    qio(
        "qcow2",
        &img,
        &[
            "write -P 1 4k 4k",
            "write -z 8k 2k",
            "write -P 2 64k 64k",
            "write -z 64k 4k",
            "discard 96k 8k",
            "write -P 3 1M 1k",
            "write -P 4 1050k 3k",
            "write -z -u 2M 128k",
        ],
    );
    verify_read(&img, "qcow2");

    // extended L2 overlay over a backing file: unallocated subclusters come from below
    let base = qemu_qcow2_from(d.path(), "base", 4 * MIB, 700, &[]);
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=32k",
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
            "write -P 9 2k 1k",
            "write -z 40k 1k",
            "discard 100k 4k",
            "write -P 8 3M 10k",
        ],
    );
    verify_read(&top, "qcow2");

    // extended L2 with compression and small clusters
    let c = qemu_qcow2_from(
        d.path(),
        "extc",
        2 * MIB,
        701,
        &["-c", "-o", "extended_l2=on,cluster_size=16k"],
    );
    verify_read(&c, "qcow2");
}

#[test]
fn read_dirty_lazy_refcounts_image() {
    let d = tmp();
    let img = d.path().join("dirty.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-o",
        "lazy_refcounts=on,cluster_size=4096",
        s(&img),
        "8M",
    ])
    .assert_ok();
    qio("qcow2", &img, &["write -P 0x10 0 1M"]);
    let out = qemu_io(&[
        "-f",
        "qcow2",
        "-c",
        "write -P 0x11 1M 1M",
        "-c",
        "write -z 0 64k",
        "-c",
        "write -P 0x12 4M 12k",
        "-c",
        "sigraise 9",
        s(&img),
    ]);
    assert_eq!(
        out.signal,
        Some(9),
        "qemu-io should have died of SIGKILL: {out:?}"
    );
    let info = qemu_info_json(&img);
    assert_eq!(
        info["dirty-flag"],
        Value::Bool(true),
        "dirty bit expected: {info}"
    );

    let before = read(&img);
    let want = qemu_to_raw(&img, "qcow2");
    let got = vk_to_raw(&img, "qcow2");
    assert_bytes_eq("dirty image contents", &got, &want);
    let vi = vk(&["info", "--output=json", s(&img)]);
    vi.assert_ok();
    assert_eq!(
        read_info_fields(&vi.json()),
        read_info_fields(&info),
        "info of dirty image"
    );
    let vm = map_extents(&vk_map(&img, "qcow2"), true);
    let qm = map_extents(&qemu_map(&img, "qcow2"), true);
    assert_extents_eq("map of dirty image", &vm, &qm);
    // read-only operations leave the dirty image untouched
    assert!(
        read(&img) == before,
        "read-only operations modified the dirty image"
    );

    // check of a dirty image agrees with qemu (exit code and report)
    verify_check_matches(&img);
    assert!(read(&img) == before, "check without -r modified the image");
}

#[test]
fn read_convert_to_qcow2_roundtrip_of_qemu_images() {
    // virtkit reading qemu images through a qcow2->qcow2 convert as well
    let d = tmp();
    let img = qemu_qcow2_from(d.path(), "rt", 4 * MIB, 800, &["-o", "cluster_size=8192"]);
    qio("qcow2", &img, &["write -z 0 64k", "discard 1M 64k"]);
    let out = d.path().join("out.qcow2");
    vk(&["convert", "-f", "qcow2", "-O", "qcow2", s(&img), s(&out)]).assert_ok();
    qemu_check_clean(&out);
    qemu_compare_identical(&img, "qcow2", &out, "qcow2");
}

#[test]
fn read_compare_against_qemu_written() {
    let d = tmp();
    let raw = d.path().join("a.raw");
    let data = gen_data(3 * MIB, 900);
    write_raw(&raw, &data);
    let img = qemu_qcow2_from(d.path(), "b", 3 * MIB, 900, &["-c"]);
    let out = vk(&["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(&img)]);
    out.assert_code(0);
    assert_eq!(out.stdout.trim_end(), "Images are identical.");
    qio("qcow2", &img, &["write -P 0xfe 1234k 1k"]);
    let q = qemu_img(&["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(&img)]);
    let v = vk(&["compare", "-f", "raw", "-F", "qcow2", s(&raw), s(&img)]);
    assert_eq!(
        v.code, q.code,
        "compare exit code\nvk: {}{}\nqemu: {}{}",
        v.stdout, v.stderr, q.stdout, q.stderr
    );
    assert_eq!(v.stdout, q.stdout, "compare output");
}
