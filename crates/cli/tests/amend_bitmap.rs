//! `qemu-img amend` and `qemu-img bitmap` against the real qemu-img: every amend direction on
//! images qemu-img and virtkit made (data, snapshots, zero and compressed clusters, backing
//! files), persistent bitmap operations compared bit for bit with qemu-img's, guest writes
//! recorded in the enabled bitmaps, refusals with qemu-img's messages, crashes (SIGKILL) in
//! the middle of a refcount-width change and of bitmap writes, and hostile bitmap directories.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn cp(a: &Path, b: &Path) {
    std::fs::copy(a, b).unwrap_or_else(|e| panic!("copy {a:?} -> {b:?}: {e}"));
}

/// virtkit with qemu-img's personality (messages start "qemu-img:"); under an override binary
/// that is the binary itself.
fn vkq(args: &[&str]) -> Out {
    match vk_link(args) {
        Some(o) => o,
        None => vk(args),
    }
}

/// Stderr with what legitimately differs between runs: QEMU's node names, and the path qemu-img
/// was run by (it names itself by argv[0]).
fn norm(s: &str) -> String {
    let s = s.replace(&qemu_img_bin(), "qemu-img");
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("#block") {
        out.push_str(&rest[..i + 6]);
        rest = rest[i + 6..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Same exit code and messages as qemu-img. qemu-img 7.2 words a few usage lines differently
/// from 10.x (whose words virtkit uses): with 7.2 only the first line must agree.
#[track_caller]
fn same_outcome(what: &str, ours: &Out, theirs: &Out) {
    ours.assert_sane();
    assert_eq!(
        ours.code, theirs.code,
        "{what}: exit code differs\nvirtkit: {}\n{}\nqemu-img: {}\n{}",
        ours.cmdline, ours.stderr, theirs.cmdline, theirs.stderr
    );
    let (a, b) = (norm(&ours.stderr), norm(&theirs.stderr));
    if qemu_major() >= 10 {
        assert_eq!(a, b, "{what}: stderr differs");
        return;
    }
    // 7.2 words command-line errors (getopt, -g, negative sizes) its own way; the rest
    // matches on line one.
    let first = b.lines().next().unwrap_or("");
    if first.contains("option")
        || first.contains("Invalid granularity")
        || first.contains("expects a non-negative number")
    {
        return;
    }
    assert_eq!(
        a.lines().next(),
        b.lines().next(),
        "{what}: first line of stderr differs"
    );
}

fn info(path: &Path) -> Value {
    qemu_info_json(path)
}

/// The format-specific fields amend and bitmap change.
fn fs(path: &Path) -> Value {
    let v = info(path);
    let d = v
        .pointer("/format-specific/data")
        .cloned()
        .unwrap_or_default();
    serde_json::json!({
        "virtual-size": v.get("virtual-size"),
        "compat": d.get("compat"),
        "refcount-bits": d.get("refcount-bits"),
        "lazy-refcounts": d.get("lazy-refcounts"),
        "bitmaps": d.get("bitmaps"),
        "backing": v.get("backing-filename"),
        "backing-format": v.get("backing-filename-format"),
        "snapshots": v.get("snapshots"),
    })
}

/// One persistent bitmap as the file stores it, decoded here independently of virtkit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bm {
    flags: u32,
    granularity_bits: u8,
    table_size: u32,
    /// Runs [a, b) of set bits (granule indexes).
    runs: Vec<(u64, u64)>,
}

/// Every bitmap of a qcow2 file: header extension -> directory -> tables -> data clusters.
fn decode_bitmaps(path: &Path) -> BTreeMap<String, Bm> {
    let b = read(path);
    let cs = 1u64 << be32(&b, hdr::CLUSTER_BITS);
    let size = be64(&b, hdr::SIZE);
    let mut out = BTreeMap::new();
    if be32(&b, hdr::VERSION) < 3 || be64(&b, hdr::AUTOCLEAR_FEATURES) & 1 == 0 {
        return out;
    }
    let mut off = be32(&b, hdr::HEADER_LENGTH) as usize;
    loop {
        let (kind, len) = (be32(&b, off), be32(&b, off + 4) as usize);
        if kind == 0 {
            return out;
        }
        if kind == 0x2385_2875 {
            let nb = be32(&b, off + 8);
            let mut p = be64(&b, off + 24) as usize;
            for _ in 0..nb {
                let toff = be64(&b, p) as usize;
                let tsize = be32(&b, p + 8);
                let flags = be32(&b, p + 12);
                let gb = b[p + 17];
                let nsz = be16(&b, p + 18) as usize;
                let extra = be32(&b, p + 20) as usize;
                let name =
                    String::from_utf8_lossy(&b[p + 24 + extra..p + 24 + extra + nsz]).into_owned();
                p += (24 + nsz + extra).div_ceil(8) * 8;
                let bits = size.div_ceil(1 << gb);
                let mut runs: Vec<(u64, u64)> = Vec::new();
                let mut set = |g: u64| match runs.last_mut() {
                    Some(r) if r.1 == g => r.1 += 1,
                    _ => runs.push((g, g + 1)),
                };
                for t in 0..tsize as u64 {
                    let e = be64(&b, toff + 8 * t as usize);
                    let o = e & 0x00ff_ffff_ffff_fe00;
                    for k in 0..cs * 8 {
                        let g = t * cs * 8 + k;
                        if g >= bits {
                            break;
                        }
                        let on = if o != 0 {
                            b.get((o + k / 8) as usize)
                                .is_some_and(|x| x >> (k % 8) & 1 != 0)
                        } else {
                            e & 1 != 0
                        };
                        if on {
                            set(g);
                        }
                    }
                }
                out.insert(
                    name,
                    Bm {
                        flags,
                        granularity_bits: gb,
                        table_size: tsize,
                        runs,
                    },
                );
            }
            return out;
        }
        off += 8 + len.div_ceil(8) * 8;
    }
}

/// qemu-img convert of one internal snapshot to raw bytes.
fn snapshot_bytes(path: &Path, snap: &str) -> Vec<u8> {
    let dir = tmp();
    let out = dir.path().join("snap.raw");
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        "-l",
        &format!("snapshot.name={snap}"),
        s(path),
        s(&out),
    ])
    .assert_ok();
    read(&out)
}

fn qio_img(path: &Path, cmds: &[&str]) {
    qio("qcow2", path, cmds);
}

/// An image qemu-img made: data, zero clusters (over data and over the backing file),
/// a compressed cluster, an internal snapshot and copy-on-write after it.
fn qemu_image(dir: &Path, name: &str, opts: &str, backing: Option<&Path>) -> PathBuf {
    let p = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2", "-o", opts];
    if let Some(b) = backing {
        args.extend(["-b", s(b), "-F", "raw"]);
    }
    args.extend([s(&p), "32M"]);
    qemu_img(&args).assert_ok();
    qio_img(
        &p,
        &[
            "write -P 0x11 0 1M",
            "write -z 2M 512k",
            "write -c -P 0x22 4M 64k",
            "write -P 0x33 8M 100k",
        ],
    );
    qemu_img(&["snapshot", "-c", "s1", s(&p)]).assert_ok();
    qio_img(
        &p,
        &[
            "write -P 0x44 512k 1M",
            "write -z 8M 64k",
            "write -z 20M 256k",
            "write -c -P 0x55 6M 64k",
        ],
    );
    p
}

/// An image virtkit made the same ways: compressed data (convert -c), a snapshot, then data
/// and zeros written over it (convert -n).
fn vk_image(dir: &Path, name: &str, opts: &str, backing: Option<&Path>) -> PathBuf {
    let p = dir.join(name);
    let d1 = dir.join(format!("{name}.d1.raw"));
    let d2 = dir.join(format!("{name}.d2.raw"));
    write_raw(&d1, &gen_data(32 << 20, 7));
    let mut two = gen_data(32 << 20, 8);
    two[(20 << 20)..(21 << 20)].fill(0);
    write_raw(&d2, &two);
    let mut args = vec!["convert", "-c", "-f", "raw", "-O", "qcow2", "-o", opts];
    if let Some(b) = backing {
        args.extend(["-B", s(b), "-F", "raw"]);
    }
    args.extend([s(&d1), s(&p)]);
    vk(&args).assert_ok();
    vk(&["snapshot", "-c", "s1", s(&p)]).assert_ok();
    vk(&["convert", "-n", "-f", "raw", "-O", "qcow2", s(&d2), s(&p)]).assert_ok();
    p
}

fn backing_file(dir: &Path) -> PathBuf {
    let b = dir.join("base.raw");
    write_raw(&b, &gen_data(32 << 20, 99));
    b
}

/// Applies each amend step with virtkit, and with qemu-img on a copy of the same state; both
/// must agree on the outcome, and a successful step must leave an image qemu-img finds clean,
/// reading as before (snapshot included), with the same format fields as qemu-img's result.
fn amend_steps(img: &Path, steps: &[&str]) {
    let dir = img.parent().unwrap();
    let orig = dir.join("orig.qcow2");
    cp(img, &orig);
    let mut snap = snapshot_bytes(img, "s1");
    let reference = dir.join("ref.qcow2");
    for step in steps {
        cp(img, &reference);
        let ours = vkq(&["amend", "-o", step, s(img)]);
        let theirs = qemu_img(&["amend", "-o", step, s(&reference)]);
        same_outcome(&format!("amend -o {step} on {img:?}"), &ours, &theirs);
        qemu_check_clean(img);
        if step.starts_with("size=") {
            qemu_compare_identical(img, "qcow2", &reference, "qcow2");
            cp(img, &orig);
            // Snapshots read at the new size.
            snap = snapshot_bytes(&reference, "s1");
            assert_bytes_eq(
                "snapshot s1 after resize",
                &snapshot_bytes(img, "s1"),
                &snap,
            );
        } else {
            qemu_compare_identical(&orig, "qcow2", img, "qcow2");
            assert_bytes_eq(
                &format!("snapshot s1 after {step}"),
                &snapshot_bytes(img, "s1"),
                &snap,
            );
        }
        assert_eq!(
            fs(img),
            fs(&reference),
            "format fields after amend -o {step}"
        );
        // The image amended by virtkit is one qemu-img and virtkit both keep working on.
        vk(&["check", s(img)]).assert_ok();
    }
}

const STEPS_V3: &[&str] = &[
    "refcount_bits=1",
    "refcount_bits=2",
    "refcount_bits=64",
    "lazy_refcounts=on",
    "refcount_bits=8,lazy_refcounts=off",
    "compat=0.10",
    "refcount_bits=16,compat=0.10",
    "compat=0.10",
    "lazy_refcounts=on",
    "refcount_bits=4",
    "compat=1.1,lazy_refcounts=on,refcount_bits=32",
    "compat=v2",
    "compat=v3",
    "size=48M",
    "size=40M",
    "compat=0.10",
];

#[test]
fn amend_qemu_made_images() {
    let dir = tmp();
    let img = qemu_image(dir.path(), "q3.qcow2", "compat=1.1", None);
    amend_steps(&img, STEPS_V3);
    let dir = tmp();
    let img = qemu_image(dir.path(), "q2.qcow2", "compat=0.10", None);
    amend_steps(
        &img,
        &[
            "compat=1.1",
            "refcount_bits=2",
            "refcount_bits=16",
            "compat=0.10",
        ],
    );
}

#[test]
fn amend_qemu_made_images_with_backing() {
    let dir = tmp();
    let base = backing_file(dir.path());
    let img = qemu_image(
        dir.path(),
        "qb.qcow2",
        "compat=1.1,cluster_size=4k",
        Some(&base),
    );
    amend_steps(
        &img,
        &[
            "refcount_bits=8",
            "compat=0.10",
            "refcount_bits=16,compat=0.10",
            "compat=1.1,refcount_bits=64",
            "refcount_bits=16",
            "backing_file=base.raw",
            &format!("backing_file={},backing_fmt=raw", s(&base)),
            "compat=0.10",
        ],
    );
}

#[test]
fn amend_virtkit_made_images() {
    let dir = tmp();
    let img = vk_image(dir.path(), "v3.qcow2", "compat=1.1", None);
    amend_steps(&img, STEPS_V3);
    let dir = tmp();
    let base = backing_file(dir.path());
    let img = vk_image(
        dir.path(),
        "vb.qcow2",
        "compat=1.1,cluster_size=16k",
        Some(&base),
    );
    amend_steps(
        &img,
        &[
            "compat=0.10",
            "refcount_bits=16,compat=0.10",
            "compat=1.1",
            "refcount_bits=1",
        ],
    );
    let dir = tmp();
    let img = vk_image(dir.path(), "v2.qcow2", "compat=0.10,cluster_size=512", None);
    amend_steps(
        &img,
        &[
            "compat=1.1",
            "refcount_bits=64",
            "refcount_bits=16",
            "compat=0.10",
        ],
    );
}

#[test]
fn amend_refusals_match_qemu() {
    let dir = tmp();
    let d = dir.path();
    let plain = d.join("plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&plain), "16M"]).assert_ok();
    let v2 = d.join("v2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&v2),
        "16M",
    ])
    .assert_ok();
    let rc8 = d.join("rc8.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "refcount_bits=8",
        s(&rc8),
        "16M",
    ])
    .assert_ok();
    let ext = d.join("ext.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        s(&ext),
        "16M",
    ])
    .assert_ok();
    let zstd = d.join("zstd.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        s(&zstd),
        "16M",
    ])
    .assert_ok();
    qio_img(&zstd, &["write -c -P 7 0 64k"]);
    let zstd_empty = d.join("zstd_empty.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compression_type=zstd",
        s(&zstd_empty),
        "16M",
    ])
    .assert_ok();
    let snap = d.join("snap.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&snap), "16M"]).assert_ok();
    qemu_img(&["snapshot", "-c", "s", s(&snap)]).assert_ok();
    qemu_img(&["resize", "-q", s(&snap), "32M"]).assert_ok();
    let raw = d.join("r.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "1M"]).assert_ok();
    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (&plain, vec!["-o", "cluster_size=4k"]),
        (&plain, vec!["-o", "preallocation=full"]),
        (&plain, vec!["-o", "extended_l2=on"]),
        (&plain, vec!["-o", "compression_type=zstd"]),
        (&plain, vec!["-o", "encrypt.format=luks"]),
        (&plain, vec!["-o", "cluster_size=abc"]),
        (&plain, vec!["-o", "cluster_size=4k,foo=1"]),
        (&plain, vec!["-o", "foo=bar"]),
        (&plain, vec!["-o", "compat=0.11"]),
        (&plain, vec!["-o", "compat"]),
        (&plain, vec!["-o", "refcount_bits=3,compat=0.11"]),
        (&plain, vec!["-o", "refcount_bits=3"]),
        (&plain, vec!["-o", "refcount_bits=0"]),
        (&plain, vec!["-o", "refcount_bits=128"]),
        (&plain, vec!["-o", "refcount_bits=-1"]),
        (&plain, vec!["-o", "refcount_bits=abc"]),
        (&plain, vec!["-o", "lazy_refcounts=maybe"]),
        (&plain, vec!["-o", "size=abc"]),
        (&plain, vec!["-o", "size=-1"]),
        (&plain, vec!["-o", "size=100000"]),
        (&plain, vec!["-o", "backing_file=foo"]),
        (&plain, vec!["-o", "backing_fmt=raw"]),
        (&plain, vec!["-o", "data_file=x"]),
        (&plain, vec!["-o", "data_file_raw=on"]),
        (&plain, vec!["-o", "encrypt.state=active"]),
        (&plain, vec!["-o", "encrypt.keyslot=x"]),
        (&plain, vec!["-o", ""]),
        (&plain, vec!["-o", ","]),
        (&plain, vec!["-o", "compat=1.1,"]),
        (&plain, vec![]),
        (&plain, vec!["-t", "bogus", "-o", "compat=1.1"]),
        (&plain, vec!["-o", "compat=0.10,refcount_bits=8"]),
        (&plain, vec!["-o", "compat=0.10,lazy_refcounts=on"]),
        (&rc8, vec!["-o", "compat=0.10"]),
        (&ext, vec!["-o", "compat=0.10"]),
        (&zstd, vec!["-o", "compat=0.10"]),
        (&snap, vec!["-o", "compat=0.10"]),
        (&v2, vec!["-o", "lazy_refcounts=on"]),
        (&v2, vec!["-o", "refcount_bits=8"]),
        (&raw, vec!["-f", "raw", "-o", "size=2M"]),
        (&raw, vec!["-o", "size=2M"]),
        (Path::new("/nonexistent/x.qcow2"), vec!["-o", "compat=1.1"]),
    ];
    for (img, opts) in cases {
        let work = d.join("work.img");
        let refc = d.join("ref.img");
        if img.exists() {
            cp(img, &work);
            cp(img, &refc);
        }
        let arg = |p: &Path| {
            let mut v: Vec<String> = vec!["amend".into()];
            v.extend(opts.iter().map(|x| x.to_string()));
            v.push(if img.exists() {
                s(p).to_string()
            } else {
                s(img).to_string()
            });
            v
        };
        let a1 = arg(&work);
        let a2 = arg(&refc);
        let ours = vkq(&a1.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        let theirs = qemu_img(&a2);
        // The file name appears in some messages: compare with it replaced.
        let fix = |o: &Out, p: &Path| {
            let mut o = o.clone();
            o.stderr = o.stderr.replace(s(p), "IMG");
            o
        };
        same_outcome(
            &format!("amend {opts:?} on {img:?}"),
            &fix(&ours, &work),
            &fix(&theirs, &refc),
        );
        if img.exists() && img.extension().is_some_and(|e| e == "qcow2") {
            assert_eq!(
                fs(&work),
                fs(&refc),
                "image after amend {opts:?} on {img:?}"
            );
            qemu_check_clean(&work);
        }
    }
    // A zstd image without compressed clusters may go back to v2 (as zlib).
    let ours = vkq(&["amend", "-o", "compat=0.10", s(&zstd_empty)]);
    ours.assert_ok();
    let v = info(&zstd_empty);
    assert_eq!(v.pointer("/format-specific/data/compat").unwrap(), "0.10");
    assert_eq!(
        v.pointer("/format-specific/data/compression-type").unwrap(),
        "zlib"
    );
    qemu_check_clean(&zstd_empty);
}

#[test]
fn amend_help_and_progress() {
    let dir = tmp();
    let img = dir.path().join("a.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "16M"]).assert_ok();
    qio_img(&img, &["write -P 1 0 1M"]);
    for args in [
        vec!["amend", "-f", "qcow2", "-o", "help"],
        vec![
            "amend",
            "-f",
            "qcow2",
            "-o",
            "help,compat=1.1",
            "/nonexistent",
        ],
        vec!["amend", "-o", "?", s(&img)],
        vec!["amend", "-f", "raw", "-o", "help"],
        vec!["amend", "-f", "vmdk", "-o", "help"],
        vec!["amend", "-f", "foo", "-o", "help"],
        vec!["amend", "-o", "help"],
    ] {
        let ours = vkq(&args);
        let theirs = qemu_img(&args);
        same_outcome(&format!("{args:?}"), &ours, &theirs);
        assert_eq!(ours.stdout, theirs.stdout, "{args:?}: stdout");
    }
    let out = vkq(&["amend", "-p", "-o", "refcount_bits=8", s(&img)]);
    out.assert_ok();
    assert!(
        out.stdout.starts_with("    (0.00/100%)\r")
            && out.stdout.ends_with("    (100.00/100%)\r\n"),
        "progress output: {:?}",
        out.stdout
    );
    let out = vkq(&["amend", "-p", "-q", "-o", "refcount_bits=16", s(&img)]);
    out.assert_ok();
    assert_eq!(out.stdout, "", "-q silences -p");
    qemu_check_clean(&img);
}

// ---------------------------------------------------------------------------------------
// Bitmaps
// ---------------------------------------------------------------------------------------

/// Runs the same `qemu-img bitmap` invocation on `ours` (virtkit) and `theirs` (qemu-img):
/// same outcome, then the same bitmaps (info and decoded contents), both clean.
fn bitmap_both(ours: &Path, theirs: &Path, args: &[&str]) {
    let mk = |p: &Path| {
        let mut v: Vec<String> = vec!["bitmap".into()];
        for a in args {
            v.push(if *a == "IMG" {
                s(p).to_string()
            } else {
                a.to_string()
            });
        }
        v
    };
    let a1 = mk(ours);
    let a2 = mk(theirs);
    let o = vkq(&a1.iter().map(|x| x.as_str()).collect::<Vec<_>>());
    let t = qemu_img(&a2);
    let fix = |o: &Out, p: &Path| {
        let mut o = o.clone();
        o.stderr = o.stderr.replace(s(p), "IMG");
        o
    };
    same_outcome(
        &format!("bitmap {args:?}"),
        &fix(&o, ours),
        &fix(&t, theirs),
    );
    assert_eq!(fs(ours), fs(theirs), "bitmap {args:?}: info");
    assert_eq!(
        decode_bitmaps(ours),
        decode_bitmaps(theirs),
        "bitmap {args:?}: bitmap contents"
    );
    qemu_check_clean(ours);
    qemu_check_clean(theirs);
}

/// A pair of identical images with data, one for virtkit and one for qemu-img.
fn pair(dir: &Path, name: &str, size: &str, cs: u64) -> (PathBuf, PathBuf) {
    let a = dir.join(format!("{name}.vk.qcow2"));
    let b = dir.join(format!("{name}.q.qcow2"));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("cluster_size={cs}"),
        s(&a),
        size,
    ])
    .assert_ok();
    let compressed = format!("write -c -P 2 {} {cs}", (2 * cs).max(2 << 20));
    qio_img(&a, &["write -P 1 0 1M", &compressed]);
    cp(&a, &b);
    (a, b)
}

/// Guest writes done by qemu-io on both images (qemu-io records them in enabled bitmaps).
fn qio_both(a: &Path, b: &Path, cmds: &[&str]) {
    qio_img(a, cmds);
    qio_img(b, cmds);
}

#[test]
fn bitmap_operations_match_qemu() {
    let dir = tmp();
    let (a, b) = pair(dir.path(), "ops", "64M", 65536);
    bitmap_both(&a, &b, &["--add", "IMG", "b0"]);
    bitmap_both(&a, &b, &["--add", "-g", "4k", "IMG", "b4k"]);
    bitmap_both(&a, &b, &["--add", "--disable", "-g", "1M", "IMG", "off"]);
    bitmap_both(&a, &b, &["--add", "-g", "2G", "IMG", "huge"]);
    bitmap_both(&a, &b, &["--add", "-g", "512", "IMG", "fine"]);
    bitmap_both(&a, &b, &["--add", "-g", "0", "IMG", "default"]);
    qio_both(
        &a,
        &b,
        &[
            "write -P 3 100k 8k",
            "write -z 10M 1M",
            "discard 20M 64k",
            "write -c 30M 64k",
        ],
    );
    assert!(
        !decode_bitmaps(&a)["b4k"].runs.is_empty(),
        "qemu-io writes must have dirtied b4k"
    );
    bitmap_both(&a, &b, &["--disable", "IMG", "b0"]);
    bitmap_both(&a, &b, &["--enable", "IMG", "off"]);
    bitmap_both(&a, &b, &["--merge", "b4k", "IMG", "off"]);
    bitmap_both(&a, &b, &["--merge", "fine", "IMG", "huge"]);
    bitmap_both(&a, &b, &["--merge", "off", "IMG", "fine"]);
    bitmap_both(&a, &b, &["--clear", "IMG", "b4k"]);
    bitmap_both(&a, &b, &["--remove", "IMG", "default"]);
    // Several operations in one invocation, applied in order.
    bitmap_both(
        &a,
        &b,
        &["--add", "--disable", "--merge", "fine", "IMG", "combo"],
    );
    bitmap_both(
        &a,
        &b,
        &["--clear", "--merge", "off", "--enable", "IMG", "b4k"],
    );
    bitmap_both(&a, &b, &["--add", "--remove", "IMG", "tmp"]);
    // A source bitmap from another image (-b, with and without -F).
    let src = dir.path().join("src.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&src), "64M"]).assert_ok();
    qemu_img(&["bitmap", "--add", "-g", "8k", s(&src), "sb"]).assert_ok();
    qio_img(&src, &["write 5M 24k", "write 63M 4k"]);
    bitmap_both(&a, &b, &["--merge", "sb", "-b", s(&src), "IMG", "b0"]);
    bitmap_both(
        &a,
        &b,
        &[
            "--merge",
            "sb",
            "-b",
            s(&src),
            "-F",
            "qcow2",
            "IMG",
            "combo",
        ],
    );
    // Guest writes on images whose bitmaps virtkit wrote, by qemu-io, then virtkit again.
    qio_both(&a, &b, &["write 40M 200k"]);
    bitmap_both(&a, &b, &["--remove", "IMG", "b0"]);
    bitmap_both(&a, &b, &["--remove", "IMG", "combo"]);
    for name in ["b4k", "off", "huge", "fine"] {
        bitmap_both(&a, &b, &["--remove", "IMG", name]);
    }
    assert!(decode_bitmaps(&a).is_empty());
    let v = info(&a);
    assert!(v.pointer("/format-specific/data/bitmaps").is_none());
}

#[test]
fn bitmap_small_clusters_and_odd_sizes() {
    let dir = tmp();
    let (a, b) = pair(dir.path(), "small", "100M", 512);
    bitmap_both(&a, &b, &["--add", "IMG", "d"]);
    bitmap_both(&a, &b, &["--add", "-g", "512", "IMG", "fine"]);
    qio_both(&a, &b, &["write 0 3M", "write 99M 512", "write 50M 64k"]);
    bitmap_both(&a, &b, &["--merge", "fine", "IMG", "d"]);
    bitmap_both(&a, &b, &["--clear", "IMG", "fine"]);
    let (a, b) = pair(dir.path(), "odd", "12345k", 2 << 20);
    bitmap_both(&a, &b, &["--add", "-g", "4k", "IMG", "x"]);
    qio_both(&a, &b, &["write 12340k 5k"]);
    bitmap_both(&a, &b, &["--add", "--merge", "x", "IMG", "y"]);
    let d = decode_bitmaps(&a);
    assert_eq!(d["x"].runs, vec![(3085, 3087)]);
    assert_eq!(
        d["y"].runs,
        vec![(192, 193)],
        "64k granules of the merged copy"
    );
}

#[test]
fn bitmaps_interoperate_both_ways() {
    let dir = tmp();
    let img = dir.path().join("x.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "32M"]).assert_ok();
    // virtkit adds, qemu writes and merges, virtkit merges and removes, qemu reads it all.
    vk(&["bitmap", "--add", s(&img), "v1"]).assert_ok();
    vk(&["bitmap", "--add", "-g", "4k", s(&img), "v2"]).assert_ok();
    qio_img(&img, &["write 1M 4k", "write 9M 100k"]);
    qemu_img(&["bitmap", "--add", "--disable", s(&img), "q1"]).assert_ok();
    qemu_img(&["bitmap", "--merge", "v2", s(&img), "q1"]).assert_ok();
    qemu_check_clean(&img);
    vk(&["bitmap", "--merge", "q1", s(&img), "v1"]).assert_ok();
    vk(&["bitmap", "--clear", s(&img), "v2"]).assert_ok();
    qemu_img(&["bitmap", "--remove", s(&img), "v2"]).assert_ok();
    qemu_check_clean(&img);
    let d = decode_bitmaps(&img);
    assert_eq!(d.keys().collect::<Vec<_>>(), ["q1", "v1"]);
    assert_eq!(d["q1"].runs, vec![(16, 17), (144, 146)]);
    assert_eq!(d["v1"].runs, vec![(16, 17), (144, 146)]);
    assert_eq!(d["q1"].flags, 0);
    assert_eq!(d["v1"].flags, 2);
    // qemu-img convert --bitmaps copies virtkit's bitmaps with their contents.
    let copy = dir.path().join("copy.qcow2");
    qemu_img(&["convert", "--bitmaps", "-O", "qcow2", s(&img), s(&copy)]).assert_ok();
    let c = decode_bitmaps(&copy);
    assert_eq!(c["q1"].runs, d["q1"].runs);
    assert_eq!(c["v1"].runs, d["v1"].runs);
    // And virtkit's info shows what qemu-img's shows.
    let ours = vk(&["info", "--output=json", s(&img)]).json();
    let theirs = info(&img);
    assert_eq!(
        ours.pointer("/format-specific/data/bitmaps"),
        theirs.pointer("/format-specific/data/bitmaps")
    );
}

#[test]
fn bitmap_refusals_match_qemu() {
    let dir = tmp();
    let d = dir.path();
    let base = d.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "64M"]).assert_ok();
    qemu_img(&["bitmap", "--add", s(&base), "b0"]).assert_ok();
    qemu_img(&["bitmap", "--add", "--disable", s(&base), "b1"]).assert_ok();
    // A bitmap a crash left in use: qemu-io killed after a write.
    let inuse = d.join("inuse.qcow2");
    cp(&base, &inuse);
    let o = qemu_io(&[
        "-f",
        "qcow2",
        "-c",
        "write 0 64k",
        "-c",
        "sigraise 9",
        s(&inuse),
    ]);
    assert!(o.signal.is_some() || o.code != Some(0));
    let flags = info(&inuse);
    assert_eq!(
        flags
            .pointer("/format-specific/data/bitmaps/0/flags")
            .unwrap(),
        &serde_json::json!(["in-use", "auto"])
    );
    let v2 = d.join("v2.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&v2),
        "64M",
    ])
    .assert_ok();
    let raw = d.join("r.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "64M"]).assert_ok();
    let small = d.join("small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&small), "32M"]).assert_ok();
    qemu_img(&["bitmap", "--add", s(&small), "sb"]).assert_ok();
    let long = "x".repeat(1024);
    let ok_long = "y".repeat(1023);
    let cases: Vec<(&Path, Vec<&str>)> = vec![
        (&base, vec!["IMG", "b0"]),
        (&base, vec!["--add", "IMG"]),
        (&base, vec!["--add", "IMG", "b9", "extra"]),
        (&base, vec!["--add", "IMG", "b0"]),
        (&base, vec!["--add", "--add", "IMG", "twice"]),
        (&base, vec!["--remove", "IMG", "nope"]),
        (&base, vec!["--clear", "IMG", "nope"]),
        (&base, vec!["--enable", "IMG", "nope"]),
        (&base, vec!["--disable", "IMG", "nope"]),
        (&base, vec!["--merge", "nope", "IMG", "b0"]),
        (&base, vec!["--merge", "b0", "IMG", "nope"]),
        (&base, vec!["--add", "-g", "1000", "IMG", "g"]),
        (&base, vec!["--add", "-g", "256", "IMG", "g"]),
        (&base, vec!["--add", "-g", "4G", "IMG", "g"]),
        (&base, vec!["--add", "-g", "abc", "IMG", "g"]),
        (&base, vec!["--remove", "-g", "64k", "IMG", "b0"]),
        (&base, vec!["--remove", "-F", "qcow2", "IMG", "b0"]),
        (&base, vec!["--remove", "-b", "x", "IMG", "b0"]),
        (&base, vec!["--add", "IMG", &long]),
        (&base, vec!["--add", "IMG", &ok_long]),
        (&base, vec!["--add", "IMG", ""]),
        (&base, vec!["--frob", "IMG", "b0"]),
        (&base, vec!["--merge"]),
        (&base, vec!["-q", "--add", "IMG", "b0"]),
        (&base, vec!["--add", "-f", "foo", "IMG", "b0"]),
        (&base, vec!["--merge", "sb", "-b", s(&small), "IMG", "b0"]),
        (&base, vec!["--merge", "b0", "-b", s(&raw), "IMG", "b1"]),
        (
            &base,
            vec!["--merge", "b0", "-b", "/nonexistent.qcow2", "IMG", "b1"],
        ),
        (
            &base,
            vec!["--merge", "b0", "-b", s(&base), "-F", "raw", "IMG", "b1"],
        ),
        (&inuse, vec!["--clear", "IMG", "b0"]),
        (&inuse, vec!["--enable", "IMG", "b0"]),
        (&inuse, vec!["--disable", "IMG", "b0"]),
        (&inuse, vec!["--merge", "b1", "IMG", "b0"]),
        (&inuse, vec!["--add", "--merge", "b0", "IMG", "new"]),
        (&inuse, vec!["--remove", "IMG", "b0"]),
        (&inuse, vec!["--add", "IMG", "fresh"]),
        (&v2, vec!["--add", "IMG", "b0"]),
        (&v2, vec!["--remove", "IMG", "b0"]),
        (&raw, vec!["--add", "-f", "raw", "IMG", "b0"]),
        (&raw, vec!["--add", "-g", "1000", "-f", "raw", "IMG", "b0"]),
        (&raw, vec!["--clear", "-f", "raw", "IMG", "b0"]),
    ];
    for (img, args) in cases {
        let work = d.join("work.img");
        let refc = d.join("ref.img");
        cp(img, &work);
        cp(img, &refc);
        let mk = |p: &Path| {
            let mut v: Vec<String> = vec!["bitmap".into()];
            for a in &args {
                v.push(if *a == "IMG" {
                    s(p).to_string()
                } else {
                    a.to_string()
                });
            }
            v
        };
        let a1 = mk(&work);
        let a2 = mk(&refc);
        let ours = vkq(&a1.iter().map(|x| x.as_str()).collect::<Vec<_>>());
        let theirs = qemu_img(&a2);
        let fix = |o: &Out, p: &Path| {
            let mut o = o.clone();
            o.stderr = o.stderr.replace(s(p), "IMG");
            o
        };
        same_outcome(
            &format!("bitmap {args:?} on {img:?}"),
            &fix(&ours, &work),
            &fix(&theirs, &refc),
        );
        if img.extension().is_some_and(|e| e == "qcow2") {
            assert_eq!(
                fs(&work),
                fs(&refc),
                "bitmap {args:?} on {img:?}: info after"
            );
            qemu_check_clean(&work);
        }
    }
}

/// Writes through virtkit record in the enabled bitmaps what qemu-img's writes record: compared
/// exactly where both write the same ranges (granularity of a cluster or more), and as a
/// superset at finer granularity (virtkit's convert writes whole clusters).
#[test]
fn virtkit_writes_mark_enabled_bitmaps() {
    let dir = tmp();
    let d = dir.path();
    let src = d.join("src.raw");
    let mut data = vec![0u8; 64 << 20];
    data[(1 << 20) + 100..(1 << 20) + 200].fill(9);
    data[(10 << 20) + 4096..(10 << 20) + 12288].copy_from_slice(&random_bytes(8192, 1));
    data[(30 << 20) + 7000..(30 << 20) + 307000].copy_from_slice(&random_bytes(300000, 2));
    write_raw(&src, &data);
    let mk = |name: &str| {
        let p = d.join(name);
        qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "64M"]).assert_ok();
        qemu_img(&["bitmap", "--add", s(&p), "b64k"]).assert_ok();
        qemu_img(&["bitmap", "--add", "-g", "1M", s(&p), "b1m"]).assert_ok();
        qemu_img(&["bitmap", "--add", "-g", "4k", s(&p), "b4k"]).assert_ok();
        qemu_img(&["bitmap", "--add", "--disable", s(&p), "off"]).assert_ok();
        p
    };
    let ours = mk("ours.qcow2");
    let theirs = mk("theirs.qcow2");
    vk(&[
        "convert",
        "-n",
        "--target-is-zero",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&src),
        s(&ours),
    ])
    .assert_ok();
    qemu_img(&[
        "convert",
        "-n",
        "--target-is-zero",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&src),
        s(&theirs),
    ])
    .assert_ok();
    qemu_check_clean(&ours);
    qemu_compare_identical(&ours, "qcow2", &theirs, "qcow2");
    let (o, t) = (decode_bitmaps(&ours), decode_bitmaps(&theirs));
    assert_eq!(o["b64k"], t["b64k"]);
    assert_eq!(o["b1m"], t["b1m"]);
    assert_eq!(o["off"], t["off"]);
    assert!(
        o["off"].runs.is_empty(),
        "a disabled bitmap records nothing"
    );
    assert_eq!(o["b64k"].runs, vec![(16, 17), (160, 161), (480, 485)]);
    // Finer than a cluster: every granule qemu-img dirtied is dirty here too.
    let covered = |runs: &[(u64, u64)], g: u64| runs.iter().any(|&(a, b)| a <= g && g < b);
    for &(a, b) in &t["b4k"].runs {
        for g in a..b {
            assert!(covered(&o["b4k"].runs, g), "granule {g} of b4k not marked");
        }
    }
    assert_eq!(fs(&ours), fs(&theirs), "flags after the writes");
    // Writes through virtkit again on top (the bitmaps are stored back each time).
    vk(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&src),
        s(&ours),
    ])
    .assert_ok();
    let o = decode_bitmaps(&ours);
    assert_eq!(
        o["b64k"].runs,
        vec![(0, 1024)],
        "convert -n writes the whole disk"
    );
    assert!(o["off"].runs.is_empty());
    qemu_check_clean(&ours);
}

/// Resizing an image with bitmaps resizes them as qemu-img does; amend keeps them across a
/// refcount width change; a downgrade to v2 (which cannot hold them) drops them.
#[test]
fn bitmaps_across_resize_and_amend() {
    let dir = tmp();
    let (a, b) = pair(dir.path(), "rs", "64M", 65536);
    bitmap_both(&a, &b, &["--add", "-g", "4k", "IMG", "x"]);
    bitmap_both(&a, &b, &["--add", "--disable", "IMG", "y"]);
    qio_both(&a, &b, &["write 60M 4M", "write 0 64k"]);
    bitmap_both(&a, &b, &["--merge", "x", "IMG", "y"]);
    for step in [
        "size=128M",
        "size=62M",
        "refcount_bits=1",
        "refcount_bits=16",
        "size=63M",
    ] {
        let ours = vkq(&["amend", "-o", step, s(&a)]);
        let theirs = qemu_img(&["amend", "-o", step, s(&b)]);
        same_outcome(step, &ours, &theirs);
        qemu_check_clean(&a);
        assert_eq!(fs(&a), fs(&b), "after amend -o {step}");
        assert_eq!(
            decode_bitmaps(&a),
            decode_bitmaps(&b),
            "after amend -o {step}"
        );
    }
    vk(&["resize", s(&a), "70M"]).assert_ok();
    qemu_img(&["resize", s(&b), "70M"]).assert_ok();
    assert_eq!(decode_bitmaps(&a), decode_bitmaps(&b), "after resize");
    assert_eq!(fs(&a), fs(&b));
    qemu_check_clean(&a);
    // Downgrade: qemu-img leaves the bitmaps' clusters leaked; virtkit frees them.
    vkq(&["amend", "-o", "compat=0.10", s(&a)]).assert_ok();
    qemu_img(&["amend", "-o", "compat=0.10", s(&b)]).assert_ok();
    assert_eq!(fs(&a), fs(&b), "after downgrade");
    qemu_check_clean(&a);
    qemu_compare_identical(&a, "qcow2", &b, "qcow2");
}

// ---------------------------------------------------------------------------------------
// Crashes
// ---------------------------------------------------------------------------------------

fn kill_after(args: &[&str], delay: Duration) -> bool {
    let mut cmd = vk_command(args);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// After a kill: qemu-img check exits 0 or 3 (leaks only), contents unchanged.
fn survivor_ok(img: &Path, orig: &Path, what: &str) {
    let q = qemu_img(&["check", "-f", "qcow2", s(img)]);
    assert!(
        matches!(q.code, Some(0 | 3)),
        "{what}: qemu-img check exited {:?}\n{}{}",
        q.code,
        q.stdout,
        q.stderr
    );
    qemu_compare_identical(orig, "qcow2", img, "qcow2");
}

#[test]
fn crash_during_refcount_width_change() {
    let dir = tmp();
    let d = dir.path();
    // Many small clusters: the refcount structure is large and rewriting it takes a while.
    let img0 = d.join("img0.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=512",
        s(&img0),
        "256M",
    ])
    .assert_ok();
    let raw = d.join("d.raw");
    write_raw(&raw, &gen_data(96 << 20, 5));
    qemu_img(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw),
        s(&img0),
    ])
    .assert_ok();
    qemu_img(&["bitmap", "--add", s(&img0), "b"]).assert_ok();
    let img = d.join("img.qcow2");
    let widths = ["8", "64", "2", "32", "16"];
    // Learn how long one change takes.
    cp(&img0, &img);
    let t = Instant::now();
    vk(&["amend", "-o", "refcount_bits=8", s(&img)]).assert_ok();
    let full = t.elapsed();
    let mut rng = Rng::new(11);
    let mut kills = 0;
    for round in 0..12 {
        cp(&img0, &img);
        let w = widths[round % widths.len()];
        let delay = full.mul_f64(rng.below(1000) as f64 / 1000.0);
        let opt = format!("refcount_bits={w}");
        if kill_after(&["amend", "-o", &opt, s(&img)], delay) {
            kills += 1;
        }
        survivor_ok(&img, &img0, &format!("kill during {opt} after {delay:?}"));
        let dirty = decode_bitmaps(&img);
        assert_eq!(dirty.len(), 1, "the bitmap survives");
        // The image can still be amended to the end.
        vk(&["amend", "-o", &opt, s(&img)]).assert_ok();
        let q = qemu_img(&["check", s(&img)]);
        assert!(matches!(q.code, Some(0 | 3)), "{}", q.stdout);
        assert_eq!(
            info(&img).pointer("/format-specific/data/refcount-bits"),
            Some(&serde_json::json!(w.parse::<u64>().unwrap()))
        );
    }
    assert!(kills > 0, "no kill landed during the amend ({full:?})");
}

#[test]
fn crash_during_bitmap_writes() {
    let dir = tmp();
    let d = dir.path();
    // A large image with a dense bitmap: a merge writes many bitmap data clusters. A discard
    // of the whole (empty) disk dirties every granule without allocating anything.
    let img0 = d.join("img0.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img0), "64G"]).assert_ok();
    qemu_img(&["bitmap", "--add", "-g", "512", s(&img0), "dense"]).assert_ok();
    let cmds: Vec<String> = (0..64).map(|i| format!("discard {i}G 1G")).collect();
    qio_img(&img0, &cmds.iter().map(|c| c.as_str()).collect::<Vec<_>>());
    let before = decode_bitmaps(&img0);
    assert_eq!(before["dense"].runs, vec![(0, 1 << 27)]);
    let img = d.join("img.qcow2");
    cp(&img0, &img);
    let t = Instant::now();
    vk(&[
        "bitmap",
        "--add",
        "-g",
        "512",
        "--merge",
        "dense",
        s(&img),
        "copy",
    ])
    .assert_ok();
    let full = t.elapsed();
    let mut rng = Rng::new(12);
    let mut kills = 0;
    for _ in 0..10 {
        cp(&img0, &img);
        let delay = full.mul_f64(rng.below(1000) as f64 / 1000.0);
        if kill_after(
            &[
                "bitmap",
                "--add",
                "-g",
                "512",
                "--merge",
                "dense",
                s(&img),
                "copy",
            ],
            delay,
        ) {
            kills += 1;
        }
        let q = qemu_img(&["check", s(&img)]);
        assert!(
            matches!(q.code, Some(0 | 3)),
            "kill after {delay:?}: qemu-img check {:?}\n{}{}",
            q.code,
            q.stdout,
            q.stderr
        );
        // Old or new bitmap set, never a broken one.
        let now = decode_bitmaps(&img);
        assert_eq!(now["dense"], before["dense"]);
        if let Some(c) = now.get("copy") {
            assert!(c.runs.is_empty() || c.runs == before["dense"].runs, "{c:?}");
        }
        qemu_img(&["info", s(&img)]).assert_ok();
    }
    assert!(
        kills > 0,
        "no kill landed during the bitmap write ({full:?})"
    );

    // A kill while virtkit writes guest data leaves the enabled bitmap in use (inconsistent),
    // the disabled one untouched, and an image qemu-img finds without corruption.
    let w = d.join("w.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&w), "256M"]).assert_ok();
    qemu_img(&["bitmap", "--add", s(&w), "on"]).assert_ok();
    qemu_img(&["bitmap", "--add", "--disable", s(&w), "off"]).assert_ok();
    let raw = d.join("big.raw");
    write_raw(&raw, &random_bytes(200 << 20, 3));
    let args = ["convert", "-n", "-f", "raw", "-O", "qcow2", s(&raw), s(&w)];
    let t = Instant::now();
    let w0 = d.join("w0.qcow2");
    cp(&w, &w0);
    vk(&args).assert_ok();
    let full = t.elapsed();
    let mut landed = false;
    for i in 1..8 {
        cp(&w0, &w);
        if kill_after(&args, full.mul_f64(0.1 * i as f64)) {
            landed = true;
            let v = info(&w);
            let bms = v.pointer("/format-specific/data/bitmaps").unwrap();
            assert_eq!(
                bms[0]["flags"],
                serde_json::json!(["in-use", "auto"]),
                "{bms}"
            );
            assert_eq!(bms[1]["flags"], serde_json::json!([]), "{bms}");
            let q = qemu_img(&["check", s(&w)]);
            assert!(matches!(q.code, Some(0 | 3)), "{}{}", q.stdout, q.stderr);
            // Both tools refuse the inconsistent bitmap alike, and both can remove it.
            let ours = vkq(&["bitmap", "--clear", s(&w), "on"]);
            let theirs = qemu_img(&["bitmap", "--clear", s(&w), "on"]);
            same_outcome("clear of an in-use bitmap", &ours, &theirs);
            vk(&["bitmap", "--remove", s(&w), "on"]).assert_ok();
            let q = qemu_img(&["check", s(&w)]);
            assert!(matches!(q.code, Some(0 | 3)));
            break;
        }
    }
    assert!(landed, "no kill landed during the convert ({full:?})");
}

// ---------------------------------------------------------------------------------------
// Hostile bitmap directories
// ---------------------------------------------------------------------------------------

#[test]
fn hostile_bitmap_directories() {
    let dir = tmp();
    let d = dir.path();
    let base = d.join("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "64M"]).assert_ok();
    qio_img(&base, &["write -P 1 0 1M"]);
    qemu_img(&["bitmap", "--add", s(&base), "b0"]).assert_ok();
    qemu_img(&["bitmap", "--add", s(&base), "b1"]).assert_ok();
    qio_img(&base, &["write -P 2 0 64k"]);
    let b = read(&base);
    let mut ext = be32(&b, hdr::HEADER_LENGTH) as usize;
    while be32(&b, ext) != 0x2385_2875 {
        ext += 8 + (be32(&b, ext + 4) as usize).div_ceil(8) * 8;
    }
    let doff = be64(&b, ext + 24) as usize;
    let toff = be64(&b, doff) as usize;
    type Mutate = Box<dyn Fn(&mut Vec<u8>)>;
    // (name, mutation, qemu-img's message when QEMU refuses to open the image)
    let cases: Vec<(&str, Mutate, Option<&str>)> = vec![
        (
            "dir_past_eof",
            Box::new(move |b| put_be64(b, ext + 24, 1 << 40)),
            Some("Bitmap '' doesn't satisfy the constraints"),
        ),
        (
            "dir_size_huge",
            Box::new(move |b| put_be64(b, ext + 16, 1 << 30)),
            Some("bitmaps_ext: bitmap directory size (1073741824) exceeds the maximum supported size (67107840)"),
        ),
        (
            "dir_size_max",
            Box::new(move |b| put_be64(b, ext + 16, 67107840)),
            Some("More bitmaps found than specified in header extension"),
        ),
        (
            "dir_unaligned",
            Box::new(move |b| put_be64(b, ext + 24, doff as u64 + 8)),
            Some("bitmaps_ext: invalid bitmap directory offset"),
        ),
        (
            "nb_zero",
            Box::new(move |b| put_be32(b, ext + 8, 0)),
            Some("found bitmaps extension with zero bitmaps"),
        ),
        (
            "nb_more",
            Box::new(move |b| put_be32(b, ext + 8, 3)),
            Some("Less bitmaps found than specified in header extension"),
        ),
        (
            "nb_huge",
            Box::new(move |b| put_be32(b, ext + 8, 100000)),
            Some("bitmaps_ext: Image has 100000 bitmaps, exceeding the QEMU supported maximum of 65535"),
        ),
        (
            "ext_len",
            Box::new(move |b| put_be32(b, ext + 4, 16)),
            Some("bitmaps_ext: Invalid extension length"),
        ),
        (
            "ext_reserved",
            Box::new(move |b| put_be32(b, ext + 12, 1)),
            Some("bitmaps_ext: Reserved field is not zero"),
        ),
        (
            "table_size_absurd",
            Box::new(move |b| put_be32(b, doff + 8, 0x7fff_ffff)),
            Some("Bitmap 'b0' doesn't satisfy the constraints"),
        ),
        (
            "table_size_zero",
            Box::new(move |b| put_be32(b, doff + 8, 0)),
            Some("Bitmap 'b0' doesn't satisfy the constraints"),
        ),
        (
            "table_unaligned",
            Box::new(move |b| put_be64(b, doff, toff as u64 + 512)),
            Some("Bitmap 'b0' doesn't satisfy the constraints"),
        ),
        (
            "granularity_40",
            Box::new(move |b| b[doff + 17] = 40),
            Some("Bitmap 'b0' doesn't satisfy the constraints"),
        ),
        (
            "type_2",
            Box::new(move |b| b[doff + 16] = 2),
            Some("Bitmap 'b0' doesn't satisfy the constraints"),
        ),
        (
            "reserved_flags",
            Box::new(move |b| put_be32(b, doff + 12, 6)),
            Some("Bitmap 'b0' doesn't satisfy the constraints"),
        ),
        (
            "extra_data",
            Box::new(move |b| put_be32(b, doff + 20, 8)),
            Some("Bitmap extra data is not supported"),
        ),
        (
            "name_huge",
            Box::new(move |b| put_be16(b, doff + 18, 5000)),
            Some("Broken bitmap directory"),
        ),
        (
            "duplicate_names",
            Box::new(move |b| b[doff + 57] = b'0'),
            Some("Bitmap already exists: b0"),
        ),
        // QEMU reads zeros past the end of the file: a valid, empty table to it; `check`
        // reports the table as lying past the end.
        ("table_past_eof", Box::new(move |b| put_be64(b, doff, 1 << 40)), None),
        (
            "entry_past_eof",
            Box::new(move |b| put_be64(b, toff, 1 << 40)),
            None,
        ),
        ("entry_reserved_bits", Box::new(move |b| put_be64(b, toff, 0x1_0000 | 2)), None),
        ("entry_all_ones", Box::new(move |b| put_be64(b, toff, 1)), None),
    ];
    for (name, mutate, qemu_msg) in cases {
        let p = d.join(format!("{name}.qcow2"));
        let mut bytes = b.clone();
        mutate(&mut bytes);
        std::fs::write(&p, &bytes).unwrap();
        let before = read(&p);
        let inf = vk_t(&["info", s(&p)], HOSTILE_TIMEOUT);
        let chk = vk_t(&["check", s(&p)], HOSTILE_TIMEOUT);
        assert_eq!(
            read(&p),
            before,
            "{name}: a read-only open changed the file"
        );
        let copy = d.join(format!("{name}.w.qcow2"));
        cp(&p, &copy);
        let add = vk_t(&["bitmap", "--add", s(&copy), "x"], HOSTILE_TIMEOUT);
        cp(&p, &copy);
        let raw = d.join(format!("{name}.raw"));
        write_raw(&raw, &random_bytes(1 << 20, 4));
        let wr = vk_t(
            &[
                "convert",
                "-n",
                "-f",
                "raw",
                "-O",
                "qcow2",
                s(&raw),
                s(&copy),
            ],
            HOSTILE_TIMEOUT,
        );
        // A check that runs reports what it finds (exit 2 or 3, one line per problem);
        // anything else that fails says why in one line.
        let checked = matches!(chk.code, Some(2 | 3)) && chk.stdout.contains("found on the image");
        for o in [&inf, &add, &wr] {
            if !o.ok() {
                o.assert_one_line_error();
            }
        }
        if !chk.ok() && !checked {
            chk.assert_one_line_error();
        }
        if let Some(m) = qemu_msg {
            for o in [&inf, &chk, &add, &wr] {
                assert!(
                    !o.ok(),
                    "{name}: {} succeeded where qemu-img refuses",
                    o.cmdline
                );
                assert!(
                    o.stderr.contains(m),
                    "{name}: {}\nwant: {m}\ngot: {}",
                    o.cmdline,
                    o.stderr
                );
            }
            let q = qemu_img(&["info", s(&p)]);
            assert!(
                !q.ok() && q.stderr.contains(m),
                "{name}: qemu-img says {}",
                q.stderr
            );
        } else {
            // Images QEMU opens: the writes leave them without new damage.
            let q = qemu_img(&["check", s(&copy)]);
            assert!(q.code.is_some(), "{name}: {}", q.stderr);
        }
    }
    // Stale bitmaps (autoclear bit clear): ignored, and dropped on the first write, as QEMU
    // does; their clusters are leaked.
    let stale = d.join("stale.qcow2");
    let mut bytes = b.clone();
    put_be64(&mut bytes, hdr::AUTOCLEAR_FEATURES, 0);
    std::fs::write(&stale, &bytes).unwrap();
    let v = vk(&["info", "--output=json", s(&stale)]).json();
    assert!(v.pointer("/format-specific/data/bitmaps").is_none());
    let raw = d.join("stale.raw");
    write_raw(&raw, &random_bytes(1 << 20, 4));
    vk(&[
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&raw),
        s(&stale),
    ])
    .assert_ok();
    let q = qemu_img(&["check", s(&stale)]);
    assert_eq!(
        q.code,
        Some(3),
        "stale bitmaps leak: {}{}",
        q.stdout,
        q.stderr
    );
    assert!(
        !q.stderr.contains("warning"),
        "extension dropped: {}",
        q.stderr
    );
    vk(&["bitmap", "--add", s(&stale), "n"]).assert_ok();
    assert_eq!(decode_bitmaps(&stale).len(), 1);
}
