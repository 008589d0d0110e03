//! Output format and exit codes of `virtkit img` compared with qemu-img on
//! identical inputs. Only lines that are stable across qemu 7.2 .. 10.x are
//! compared (e.g. the "Child node" block of `info` and the column headings of
//! `snapshot -l` changed in 8.x).

mod common;
use common::*;
use std::path::{Path, PathBuf};

const MIB: usize = 1 << 20;

/// Run the same arguments through virtkit and qemu-img. `{}` placeholders are
/// not used: callers pass final paths.
fn both(args: &[&str]) -> (Out, Out) {
    let v = vk(args);
    let q = qemu_img(args);
    (v, q)
}

#[track_caller]
fn assert_same(args: &[&str]) -> (Out, Out) {
    let (v, q) = both(args);
    assert_eq!(
        (v.code, &v.stdout),
        (q.code, &q.stdout),
        "`{}` differs from qemu-img\nvirtkit stderr: {}\nqemu stderr: {}",
        args.join(" "),
        v.stderr,
        q.stderr
    );
    (v, q)
}

/// Error-line rule: exactly one message line on stderr, ignoring qemu-style
/// "Try '... --help' for more info" hints and "warning:" lines.
#[track_caller]
fn assert_one_error_line(o: &Out) {
    o.assert_sane();
    assert!(
        !o.ok(),
        "expected failure: {}\nstdout: {}",
        o.cmdline,
        o.stdout
    );
    let lines: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Try '") && !l.contains("warning:"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one error line from {}\nstderr:\n{}",
        o.cmdline,
        o.stderr
    );
}

fn message_lines(o: &Out) -> usize {
    o.stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Try '") && !l.contains("warning:"))
        .count()
}

/// Error lines compared with qemu-img's: one line, unless qemu-img itself
/// prints a multi-line message (e.g. the size-suffix help); never more than qemu.
#[track_caller]
fn assert_error_lines(v: &Out, q: &Out) {
    if message_lines(q) <= 1 {
        assert_one_error_line(v);
    } else {
        v.assert_sane();
        assert!(
            !v.ok(),
            "expected failure: {}\nstdout: {}",
            v.cmdline,
            v.stdout
        );
        let n = message_lines(v);
        assert!(
            (1..=message_lines(q)).contains(&n),
            "{} error lines from {} (qemu-img prints {})\nstderr:\n{}",
            n,
            v.cmdline,
            message_lines(q),
            v.stderr
        );
    }
}

/// The error case: same exit code as qemu-img, one error line, naming `name` if given.
#[track_caller]
fn assert_same_error(args: &[&str], name: Option<&str>) {
    let (v, q) = both(args);
    assert!(!q.ok(), "qemu-img unexpectedly succeeded: {}", q.cmdline);
    assert_error_lines(&v, &q);
    assert_eq!(
        v.code,
        q.code,
        "exit code of `{}`\nvirtkit stderr: {}\nqemu stderr: {}",
        args.join(" "),
        v.stderr,
        q.stderr
    );
    if let Some(n) = name {
        assert!(
            v.stderr.contains(n),
            "error message of `{}` does not name {n}: {}",
            args.join(" "),
            v.stderr
        );
    }
}

fn qcow2_with_data(dir: &Path, name: &str, opts: &str, size: usize, seed: u64) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    write_raw(&raw, &gen_data(size, seed));
    let img = dir.join(name);
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
    img
}

// ---------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------

#[test]
fn create_formatting_line() {
    let d = tmp();
    let cases: &[&[&str]] = &[
        &["-f", "qcow2"],
        &["-f", "raw"],
        &["-f", "qcow2", "-o", "cluster_size=4k"],
        &["-f", "qcow2", "-o", "compat=0.10"],
        &[
            "-f",
            "qcow2",
            "-o",
            "compat=1.1,lazy_refcounts=on,refcount_bits=8",
        ],
        &["-f", "qcow2", "-o", "extended_l2=on,compression_type=zstd"],
        &["-f", "qcow2", "-o", "preallocation=metadata"],
        &["-f", "qcow2", "-o", "preallocation=falloc,cluster_size=2M"],
        &["-f", "raw", "-o", "preallocation=full"],
        &["-f", "qcow2", "-o", "size=2M"],
    ];
    for (i, c) in cases.iter().enumerate() {
        let img = d.path().join(format!("img{i}"));
        let mut a: Vec<&str> = vec!["create"];
        a.extend_from_slice(c);
        a.push(s(&img));
        if !c.iter().any(|x| x.starts_with("size=")) {
            a.push("3M");
        }
        let q = qemu_img(&a);
        q.assert_ok();
        std::fs::remove_file(&img).unwrap();
        let v = vk(&a);
        v.assert_ok();
        assert_eq!(v.stdout, q.stdout, "`{}`", a.join(" "));
        assert!(v.stdout.starts_with("Formatting '"), "{}", v.stdout);
    }
    // backing file options appear in the line
    let base = d.path().join("img0");
    let top = d.path().join("top");
    let a = [
        "create",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&top),
    ];
    let q = qemu_img(&a);
    q.assert_ok();
    std::fs::remove_file(&top).unwrap();
    let v = vk(&a);
    v.assert_ok();
    assert_eq!(v.stdout, q.stdout);
    // size suffixes in the line
    for sz in ["1k", "1.5M", "2G", "100"] {
        let img = d.path().join("sfx");
        let a = ["create", "-f", "qcow2", s(&img), sz];
        let q = qemu_img(&a);
        std::fs::remove_file(&img).unwrap();
        let v = vk(&a);
        assert_eq!((v.code, v.stdout), (q.code, q.stdout), "create size {sz}");
    }
    // -q: quiet
    let img = d.path().join("quiet");
    let v = vk(&["create", "-q", "-f", "qcow2", s(&img), "1M"]);
    v.assert_ok();
    assert_eq!(v.stdout, "");
    assert_eq!(v.stderr, "");
}

#[test]
fn create_errors() {
    let d = tmp();
    let img = d.path().join("x.qcow2");
    // missing size
    assert_same_error(&["create", "-f", "qcow2", s(&img)], Some("x.qcow2"));
    // unknown format
    assert_same_error(&["create", "-f", "qcow3", s(&img), "1M"], Some("qcow3"));
    // bad options
    for o in [
        "cluster_size=1000",
        "cluster_size=256",
        "cluster_size=4M",
        "refcount_bits=3",
        "refcount_bits=128",
        "compat=0.10,lazy_refcounts=on",
        "compat=0.10,refcount_bits=8",
        "compat=0.10,extended_l2=on",
        "compat=0.10,compression_type=zstd",
        "extended_l2=on,cluster_size=4k",
        "compression_type=lzo",
        "preallocation=bogus",
        "no_such_option=1",
    ] {
        let _ = std::fs::remove_file(&img);
        assert_same_error(&["create", "-f", "qcow2", "-o", o, s(&img), "1M"], None);
    }
    let raw = d.path().join("x.raw");
    assert_same_error(
        &[
            "create",
            "-f",
            "raw",
            "-o",
            "preallocation=metadata",
            s(&raw),
            "1M",
        ],
        None,
    );
    // bad sizes
    for sz in ["-1", "1Q", "abc", "1.5.3M"] {
        let _ = std::fs::remove_file(&img);
        assert_same_error(&["create", "-f", "qcow2", s(&img), sz], None);
    }
    // backing file that does not exist (without -u)
    let _ = std::fs::remove_file(&img);
    assert_same_error(
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "/nonexistent/base.qcow2",
            "-F",
            "qcow2",
            s(&img),
        ],
        Some("/nonexistent/base.qcow2"),
    );
}

// ---------------------------------------------------------------------------
// info
// ---------------------------------------------------------------------------

/// Lines of human `info` output that are stable across qemu versions: drop
/// "disk size" (host dependent) and everything from "Child node" on (8.0+).
fn stable_info_lines(out: &str) -> Vec<String> {
    // The snapshot table's header and columns changed between qemu 7.2 and 10 (virtkit prints
    // 10's); compare its rows by ID and tag only.
    let mut in_snapshots = false;
    out.lines()
        .take_while(|l| !l.starts_with("Child node"))
        .filter(|l| !l.starts_with("disk size:"))
        .filter_map(|l| {
            if l == "Snapshot list:" {
                in_snapshots = true;
                return Some(l.to_string());
            }
            if l.starts_with("Format specific") || l.is_empty() {
                in_snapshots = false;
            }
            if !in_snapshots {
                return Some(l.to_string());
            }
            if l.starts_with("ID ") {
                return None;
            }
            let mut f = l.split_whitespace();
            Some(format!("snapshot {} {}", f.next()?, f.next()?))
        })
        .collect()
}

#[test]
fn info_human_output() {
    let d = tmp();
    let imgs = [
        qcow2_with_data(d.path(), "v3.qcow2", "cluster_size=64k", 3 * MIB, 1),
        qcow2_with_data(
            d.path(),
            "v2.qcow2",
            "compat=0.10,cluster_size=4k",
            3 * MIB,
            2,
        ),
        qcow2_with_data(
            d.path(),
            "ext.qcow2",
            "extended_l2=on,lazy_refcounts=on,compression_type=zstd,refcount_bits=4",
            3 * MIB,
            3,
        ),
        qcow2_with_data(d.path(), "big.qcow2", "cluster_size=2M", 5 * MIB + 512, 4),
    ];
    for img in &imgs {
        let (v, q) = both(&["info", s(img)]);
        v.assert_ok();
        q.assert_ok();
        assert_eq!(
            stable_info_lines(&v.stdout),
            stable_info_lines(&q.stdout),
            "info {}",
            img.display()
        );
        let (v, q) = both(&["info", "-f", "qcow2", s(img)]);
        assert_eq!(
            stable_info_lines(&v.stdout),
            stable_info_lines(&q.stdout),
            "info -f qcow2 {}",
            img.display()
        );
    }
    // raw
    let raw = d.path().join("r.raw");
    write_raw(&raw, &gen_data(MIB + 512, 5));
    let (v, q) = both(&["info", s(&raw)]);
    v.assert_ok();
    assert_eq!(stable_info_lines(&v.stdout), stable_info_lines(&q.stdout));
    // backing file lines and --backing-chain
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "v3.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ])
    .assert_ok();
    let (v, q) = both(&["info", s(&top)]);
    assert_eq!(stable_info_lines(&v.stdout), stable_info_lines(&q.stdout));
    assert!(v.stdout.contains("backing file: v3.qcow2"), "{}", v.stdout);
    // --backing-chain: compare each layer's stable lines (layers separated by a blank line)
    let (v, q) = both(&["info", "--backing-chain", s(&top)]);
    v.assert_ok();
    let layers = |o: &str| -> Vec<Vec<String>> {
        o.split("\n\n")
            .filter(|b| b.starts_with("image:"))
            .map(stable_info_lines)
            .collect()
    };
    assert_eq!(layers(&v.stdout), layers(&q.stdout));
    assert_eq!(layers(&v.stdout).len(), 2);
    // snapshots appear in info
    let snap = &imgs[0];
    qemu_img(&["snapshot", "-c", "first", s(snap)]).assert_ok();
    let v = vk(&["info", s(snap)]);
    assert!(v.stdout.contains("Snapshot list:"), "{}", v.stdout);
    assert!(v
        .stdout
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("first")));
}

#[test]
fn info_json_output() {
    let d = tmp();
    let img = qcow2_with_data(
        d.path(),
        "a.qcow2",
        "cluster_size=16k,lazy_refcounts=on",
        3 * MIB,
        6,
    );
    qemu_img(&["snapshot", "-c", "s", s(&img)]).assert_ok();
    let (v, q) = both(&["info", "--output=json", s(&img)]);
    v.assert_ok();
    let vj = v.json();
    let qj = q.json();
    assert_eq!(info_fields(&vj), info_fields(&qj));
    for k in [
        "filename",
        "format",
        "virtual-size",
        "cluster-size",
        "dirty-flag",
    ] {
        assert_eq!(vj.get(k), qj.get(k), "key {k}");
    }
    // also `--output json` spelled with a space
    let v2 = vk(&["info", "--output", "json", s(&img)]);
    v2.assert_ok();
    assert_eq!(info_fields(&v2.json()), info_fields(&qj));
    // human is the default and explicit
    let (v, q) = both(&["info", "--output=human", s(&img)]);
    assert_eq!(stable_info_lines(&v.stdout), stable_info_lines(&q.stdout));
}

#[test]
fn info_errors() {
    let d = tmp();
    let missing = d.path().join("missing.qcow2");
    assert_same_error(&["info", s(&missing)], Some("missing.qcow2"));
    let raw = d.path().join("r.raw");
    write_raw(&raw, &[1u8; 4096]);
    // wrong explicit format
    assert_same_error(&["info", "-f", "qcow2", s(&raw)], Some("r.raw"));
    assert_same_error(&["info", "--output=yaml", s(&raw)], None);
    assert_same_error(&["info", "--bogus-flag", s(&raw)], None);
    assert_same_error(&["info"], None);
    // a directory
    assert_same_error(&["info", s(d.path())], None);
}

// ---------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------

fn hdr_u64(b: &[u8], off: usize) -> u64 {
    be64(b, off)
}

/// Make a copy of a 4k-cluster image with one leaked cluster (an L2 entry cleared).
fn make_leaky(src: &Path, dst: &Path) {
    let mut b = read(src);
    let l1 = hdr_u64(&b, hdr::L1_TABLE_OFFSET) as usize;
    let l2 = (be64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    assert!(be64(&b, l2 + 8) != 0, "expected allocated cluster at L2[1]");
    put_be64(&mut b, l2 + 8, 0);
    std::fs::write(dst, b).unwrap();
}

/// Make a copy with the refcount of the first data cluster set to 0 (corruption).
fn make_corrupt(src: &Path, dst: &Path) {
    let mut b = read(src);
    let cb = be32(&b, hdr::CLUSTER_BITS);
    let l1 = hdr_u64(&b, hdr::L1_TABLE_OFFSET) as usize;
    let l2 = (be64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let data = be64(&b, l2) & 0x00ff_ffff_ffff_fe00;
    let rt = hdr_u64(&b, hdr::REFCOUNT_TABLE_OFFSET) as usize;
    let rb = be64(&b, rt) as usize;
    let idx = (data >> cb) as usize;
    put_be16(&mut b, rb + 2 * idx, 0);
    std::fs::write(dst, b).unwrap();
}

#[test]
fn check_clean_leaks_corrupt() {
    let d = tmp();
    let img = d.path().join("a.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&img),
        "1M",
    ])
    .assert_ok();
    qio("qcow2", &img, &["write -P 1 0 16k", "write -P 2 512k 8k"]);

    // clean: exit 0, identical output
    let (v, _) = assert_same(&["check", s(&img)]);
    assert_eq!(v.code, Some(0));
    assert!(
        v.stdout.starts_with("No errors were found on the image.\n"),
        "{}",
        v.stdout
    );
    let (v, q) = both(&["check", "--output=json", s(&img)]);
    assert_eq!(v.code, Some(0));
    assert_eq!(v.json(), q.json());
    let (v, _) = assert_same(&["check", "-f", "qcow2", s(&img)]);
    assert_eq!(v.code, Some(0));

    // leaks only: exit 3
    let leaky = d.path().join("leaky.qcow2");
    make_leaky(&img, &leaky);
    let (v, q) = assert_same(&["check", s(&leaky)]);
    assert_eq!(v.code, Some(3));
    assert_eq!(v.stderr, q.stderr, "leak report lines");
    let (v, q) = both(&["check", "--output=json", s(&leaky)]);
    assert_eq!(v.code, Some(3));
    assert_eq!(v.json(), q.json());

    // corruption: exit 2
    let bad = d.path().join("bad.qcow2");
    make_corrupt(&img, &bad);
    let (v, q) = assert_same(&["check", s(&bad)]);
    assert_eq!(v.code, Some(2));
    assert_eq!(v.stderr, q.stderr, "corruption report lines");
    let (v, q) = both(&["check", "--output=json", s(&bad)]);
    assert_eq!(v.code, Some(2));
    assert_eq!(v.json(), q.json());

    // data clusters past the end of the file (a truncated copy): read as zeros, reported as
    // corruption with qemu-img's words
    let cut = d.path().join("cut.qcow2");
    assert!(vk(&["create", "-q", "-f", "qcow2", s(&cut), "10M"]).ok());
    qio(
        "qcow2",
        &cut,
        &["write -P 0x55 0 64k", "write -P 0x66 1M 64k"],
    );
    let len = std::fs::metadata(&cut).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 2 * 65536)
        .unwrap();
    let (v, q) = both(&["check", s(&cut)]);
    assert_eq!(q.code, Some(2), "{}", q.stderr);
    assert_eq!(v.code, Some(2), "{}{}", v.stdout, v.stderr);
    for line in q.stderr.lines().filter(|l| l.starts_with("ERROR")) {
        assert!(v.stderr.contains(line), "missing {line:?} in\n{}", v.stderr);
    }
    assert_eq!(vk_to_raw(&cut, "qcow2"), qemu_to_raw(&cut, "qcow2"));

    // -r leaks repairs leaks: same report, then clean
    let l1 = d.path().join("l1.qcow2");
    let l2 = d.path().join("l2.qcow2");
    std::fs::copy(&leaky, &l1).unwrap();
    std::fs::copy(&leaky, &l2).unwrap();
    let v = vk(&["check", "-r", "leaks", s(&l1)]);
    let q = qemu_img(&["check", "-r", "leaks", s(&l2)]);
    assert_eq!((v.code, &v.stdout), (q.code, &q.stdout), "check -r leaks");
    assert_eq!(v.code, Some(0));
    qemu_check_clean(&l1);

    // -r all repairs the corruption
    let c1 = d.path().join("c1.qcow2");
    std::fs::copy(&bad, &c1).unwrap();
    let v = vk(&["check", "-r", "all", s(&c1)]);
    assert_eq!(v.code, Some(0), "check -r all: {}{}", v.stdout, v.stderr);
    assert!(
        v.stdout
            .contains("The following inconsistencies were found and repaired:"),
        "{}",
        v.stdout
    );
    qemu_check_clean(&c1);
    qemu_compare_identical(&img, "qcow2", &c1, "qcow2");

    // check on raw: 63 unsupported
    let raw = d.path().join("r.raw");
    write_raw(&raw, &[0u8; 4096]);
    let (v, q) = both(&["check", s(&raw)]);
    assert_eq!(q.code, Some(63));
    assert_eq!(v.code, Some(63), "{}", v.stderr);
    assert_error_lines(&v, &q);
    let (v, _) = both(&["check", "-f", "raw", s(&raw)]);
    assert_eq!(v.code, Some(63));

    // missing file: exit 1
    let missing = d.path().join("nope.qcow2");
    assert_same_error(&["check", s(&missing)], Some("nope.qcow2"));
    assert_same_error(&["check", "-r", "bogus", s(&img)], None);
}

// ---------------------------------------------------------------------------
// compare
// ---------------------------------------------------------------------------

#[test]
fn compare_messages_and_codes() {
    let d = tmp();
    let data = gen_data(2 * MIB, 7);
    let a = d.path().join("a.raw");
    write_raw(&a, &data);
    let q = d.path().join("a.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&a), s(&q)]).assert_ok();

    let (v, _) = assert_same(&["compare", s(&a), s(&q)]);
    assert_eq!(v.code, Some(0));
    assert_eq!(v.stdout, "Images are identical.\n");
    assert_same(&["compare", "-f", "raw", "-F", "qcow2", s(&a), s(&q)]);
    assert_same(&["compare", "-s", "-f", "raw", "-F", "qcow2", s(&a), s(&q)]);

    // content mismatch at a specific offset
    let mut data2 = data.clone();
    data2[1_234_567] ^= 0xff;
    let b = d.path().join("b.raw");
    write_raw(&b, &data2);
    let (v, _) = assert_same(&["compare", s(&q), s(&b)]);
    assert_eq!(v.code, Some(1));
    assert!(
        v.stdout.contains("Content mismatch at offset "),
        "{}",
        v.stdout
    );

    // size mismatch, extra area zero: warning + identical (exit 0); strict: exit 1
    let c = d.path().join("c.raw");
    let mut data3 = data.clone();
    data3.resize(3 * MIB, 0);
    write_raw(&c, &data3);
    let (v, _) = assert_same(&["compare", s(&q), s(&c)]);
    assert_eq!(v.code, Some(0));
    assert!(
        v.stdout.contains("Warning: Image size mismatch!"),
        "{}",
        v.stdout
    );
    let (v, _) = assert_same(&["compare", "-s", s(&q), s(&c)]);
    assert_eq!(v.code, Some(1));
    assert!(
        v.stdout.contains("Strict mode: Image size mismatch!"),
        "{}",
        v.stdout
    );

    // size mismatch with non-zero data beyond the shorter image
    let e = d.path().join("e.raw");
    let mut data4 = data3.clone();
    data4[2 * MIB + 4096 + 17] = 9;
    write_raw(&e, &data4);
    let (v, _) = assert_same(&["compare", s(&q), s(&e)]);
    assert_eq!(v.code, Some(1));
    let (v, _) = assert_same(&["compare", s(&e), s(&q)]);
    assert_eq!(v.code, Some(1));

    // strict mode: allocation difference (zero written vs unallocated)
    let z1 = d.path().join("z1.qcow2");
    let z2 = d.path().join("z2.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&z1), "1M"]).assert_ok();
    qemu_img(&["create", "-q", "-f", "qcow2", s(&z2), "1M"]).assert_ok();
    qio("qcow2", &z2, &["write -P 0 64k 64k"]);
    let (v, _) = assert_same(&["compare", s(&z1), s(&z2)]);
    assert_eq!(v.code, Some(0));
    assert_same(&["compare", "-s", s(&z1), s(&z2)]);

    // errors: exit 2
    let missing = d.path().join("missing.raw");
    let (v, q2) = both(&["compare", s(&a), s(&missing)]);
    assert_eq!(q2.code, Some(2));
    assert_eq!(v.code, Some(2), "{}", v.stderr);
    assert_error_lines(&v, &q2);
    assert!(v.stderr.contains("missing.raw"), "{}", v.stderr);
    let (v, q2) = both(&["compare", "-F", "qcow2", s(&a), s(&a)]);
    assert_eq!(v.code, Some(2));
    assert_error_lines(&v, &q2);
    let (v, q2) = both(&["compare", s(&a)]);
    assert_eq!(v.code, q2.code);
    assert_error_lines(&v, &q2);
}

// ---------------------------------------------------------------------------
// map
// ---------------------------------------------------------------------------

#[test]
fn map_human_and_json() {
    let d = tmp();
    let img = d.path().join("m.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&img),
        "4M",
    ])
    .assert_ok();
    qio(
        "qcow2",
        &img,
        &[
            "write -P 1 0 64k",
            "write -P 2 1M 4k",
            "write -z 2M 64k",
            "write -P 3 3M 128k",
            "discard 3M 4k",
        ],
    );
    let (v, q) = assert_same(&["map", s(&img)]);
    v.assert_ok();
    assert!(
        v.stdout
            .starts_with("Offset          Length          Mapped to       File\n"),
        "{}",
        q.stdout
    );
    let (v, q) = both(&["map", "--output=json", s(&img)]);
    // qemu-img 8.0 added the "compressed" field; ours is the current shape.
    let vs = if qemu_major() < 8 {
        v.stdout.replace(", \"compressed\": false", "")
    } else {
        v.stdout.clone()
    };
    assert_eq!(
        (v.code, vs.as_str()),
        (q.code, q.stdout.as_str()),
        "map --output=json"
    );
    v.assert_ok();
    assert_extents_eq(
        "map json",
        &map_extents(&v.json(), true),
        &map_extents(&q.json(), true),
    );
    // each line of JSON output is one extent (same layout as qemu-img)
    assert_eq!(
        v.stdout.lines().count(),
        q.stdout.lines().count(),
        "map json lines:\n{}\n---\n{}",
        v.stdout,
        q.stdout
    );

    // backing chain: depth and file names in human output
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&img),
        "-F",
        "qcow2",
        s(&top),
    ])
    .assert_ok();
    qio("qcow2", &top, &["write -P 9 32k 64k"]);
    assert_same(&["map", s(&top)]);
    let (v, q) = both(&["map", "--output=json", s(&top)]);
    assert_extents_eq(
        "map json chain",
        &map_extents(&v.json(), true),
        &map_extents(&q.json(), true),
    );

    // raw
    let raw = d.path().join("r.raw");
    write_raw(&raw, &gen_data(MIB, 8));
    assert_same(&["map", "-f", "raw", s(&raw)]);
    let (v, q) = both(&["map", "--output=json", "-f", "raw", s(&raw)]);
    assert_extents_eq(
        "map json raw",
        &map_extents(&v.json(), true),
        &map_extents(&q.json(), true),
    );

    let missing = d.path().join("missing");
    assert_same_error(&["map", s(&missing)], Some("missing"));
    assert_same_error(&["map", "--output=xml", s(&img)], None);
}

// ---------------------------------------------------------------------------
// snapshot
// ---------------------------------------------------------------------------

#[test]
fn snapshot_list_and_errors() {
    let d = tmp();
    let img = qcow2_with_data(d.path(), "s.qcow2", "cluster_size=64k", 2 * MIB, 9);
    // no snapshots: same (empty) output
    let (v, q) = both(&["snapshot", "-l", s(&img)]);
    assert_eq!((v.code, &v.stdout), (q.code, &q.stdout));
    for n in ["alpha", "beta", "gamma"] {
        qemu_img(&["snapshot", "-c", n, s(&img)]).assert_ok();
    }
    let (v, q) = both(&["snapshot", "-l", s(&img)]);
    v.assert_ok();
    let vl: Vec<&str> = v.stdout.lines().collect();
    let ql: Vec<&str> = q.stdout.lines().collect();
    assert_eq!(vl.len(), ql.len(), "snapshot -l:\n{}", v.stdout);
    assert_eq!(vl[0], "Snapshot list:");
    let heads: Vec<&str> = vl[1].split_whitespace().take(2).collect();
    assert_eq!(heads, ["ID", "TAG"], "header line: {}", vl[1]);
    for (a, b) in vl.iter().zip(ql.iter()).skip(2) {
        // ID, TAG, VM size (e.g. "0 B") are stable; date is the same metadata
        let at: Vec<&str> = a.split_whitespace().collect();
        let bt: Vec<&str> = b.split_whitespace().collect();
        assert_eq!(at[..4], bt[..4], "snapshot row\n{a}\n{b}");
    }
    // errors
    assert_same_error(&["snapshot", "-a", "nosuch", s(&img)], Some("nosuch"));
    assert_same_error(&["snapshot", "-d", "nosuch", s(&img)], Some("nosuch"));
    let raw = d.path().join("r.raw");
    write_raw(&raw, &[0u8; 4096]);
    assert_same_error(&["snapshot", "-c", "x", s(&raw)], None);
    // formats without internal snapshots: qemu-img's words per operation (7.2 prints the
    // errno number before "Operation not supported"; compare from there)
    for fmt in ["vmdk", "vdi", "vpc", "vhdx", "qed", "parallels"] {
        let f = d.path().join(format!("n.{fmt}"));
        qemu_img(&["create", "-q", "-f", fmt, s(&f), "4M"]).assert_ok();
        for op in ["-c", "-a", "-d"] {
            let (v, q) = both(&["snapshot", op, "x", s(&f)]);
            assert_eq!(v.code, q.code, "{fmt} {op}");
            let tail = |e: &str| {
                e.rsplit([':', '('])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_end_matches(')')
                    .to_string()
            };
            assert_eq!(tail(&v.stderr), tail(&q.stderr), "{fmt} {op}: {}", v.stderr);
        }
    }
    let missing = d.path().join("missing.qcow2");
    assert_same_error(&["snapshot", "-l", s(&missing)], Some("missing.qcow2"));
    // create/delete print nothing
    let (v, q) = both(&["snapshot", "-c", "delta", s(&img)]);
    assert_eq!((v.code, &v.stdout), (q.code, &q.stdout));
    let _ = q;
}

// ---------------------------------------------------------------------------
// resize
// ---------------------------------------------------------------------------

#[test]
fn resize_messages() {
    let d = tmp();
    let v_img = d.path().join("v.qcow2");
    let q_img = d.path().join("q.qcow2");
    for p in [&v_img, &q_img] {
        qemu_img(&["create", "-q", "-f", "qcow2", s(p), "4M"]).assert_ok();
    }
    for args in [
        &["+1M"][..],
        &["8M"],
        &["--shrink", "2M"],
        &["--shrink", "-512K"],
        &["-q", "3M"],
    ] {
        let mut va: Vec<&str> = vec!["resize"];
        va.extend_from_slice(args);
        let mut qa = va.clone();
        va.push(s(&v_img));
        qa.push(s(&q_img));
        // size comes last
        let sz = va.remove(va.len() - 2);
        va.push(sz);
        let sz = qa.remove(qa.len() - 2);
        qa.push(sz);
        let v = vk(&va);
        let q = qemu_img(&qa);
        assert_eq!(
            (v.code, &v.stdout),
            (q.code, &q.stdout),
            "`{}`: {}",
            va.join(" "),
            v.stderr
        );
        assert_eq!(
            qemu_info_json(&v_img)["virtual-size"],
            qemu_info_json(&q_img)["virtual-size"]
        );
    }
    let v = vk(&["resize", s(&v_img), "+1M"]);
    assert_eq!(v.stdout, "Image resized.\n");
    // shrinking without --shrink is refused
    let (v, q) = both(&["resize", s(&v_img), "1M"]);
    assert!(!q.ok());
    assert_error_lines(&v, &q);
    assert_eq!(v.code, q.code);
    // errors
    assert_same_error(
        &["resize", s(&d.path().join("missing.qcow2")), "1M"],
        Some("missing.qcow2"),
    );
    assert_same_error(&["resize", s(&v_img), "bogus"], None);
    assert_same_error(&["resize", s(&v_img)], None);
}

// ---------------------------------------------------------------------------
// convert
// ---------------------------------------------------------------------------

#[test]
fn convert_output_and_errors() {
    let d = tmp();
    let raw = d.path().join("a.raw");
    write_raw(&raw, &gen_data(2 * MIB, 10));
    let v_out = d.path().join("v.qcow2");
    let q_out = d.path().join("q.qcow2");
    let v = vk(&["convert", "-O", "qcow2", s(&raw), s(&v_out)]);
    let q = qemu_img(&["convert", "-O", "qcow2", s(&raw), s(&q_out)]);
    assert_eq!(
        (v.code, &v.stdout, &v.stderr),
        (q.code, &q.stdout, &q.stderr),
        "convert is silent"
    );
    // -p writes progress to stdout and still succeeds; final state 100%
    let p_out = d.path().join("p.qcow2");
    let v = vk(&["convert", "-p", "-O", "qcow2", s(&raw), s(&p_out)]);
    v.assert_ok();
    assert!(
        v.stdout.contains("100.00/100%"),
        "progress output: {:?}",
        v.stdout
    );
    // errors
    let missing = d.path().join("missing.raw");
    assert_same_error(
        &[
            "convert",
            "-O",
            "qcow2",
            s(&missing),
            s(&d.path().join("o1")),
        ],
        Some("missing.raw"),
    );
    assert_same_error(
        &["convert", "-O", "qcow3", s(&raw), s(&d.path().join("o2"))],
        Some("qcow3"),
    );
    assert_same_error(
        &[
            "convert",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=3k",
            s(&raw),
            s(&d.path().join("o3")),
        ],
        None,
    );
    assert_same_error(
        &[
            "convert",
            "-n",
            "-O",
            "qcow2",
            s(&raw),
            s(&d.path().join("o4")),
        ],
        Some("o4"),
    );
    assert_same_error(
        &[
            "convert",
            "-O",
            "raw",
            "-c",
            s(&raw),
            s(&d.path().join("o5")),
        ],
        None,
    );
    assert_same_error(&["convert", "-O", "qcow2", s(&raw)], None);
    assert_same_error(
        &[
            "convert",
            "-m",
            "0",
            "-O",
            "qcow2",
            s(&raw),
            s(&d.path().join("o6")),
        ],
        None,
    );
    assert_same_error(
        &[
            "convert",
            "-S",
            "junk",
            "-O",
            "qcow2",
            s(&raw),
            s(&d.path().join("o7")),
        ],
        None,
    );
}

// ---------------------------------------------------------------------------
// generic usage errors
// ---------------------------------------------------------------------------

#[test]
fn usage_errors() {
    let d = tmp();
    let (v, q) = both(&[] as &[&str]);
    assert_eq!(v.code, q.code);
    assert_error_lines(&v, &q);
    let (v, q) = both(&["frobnicate"]);
    assert_eq!(v.code, q.code);
    assert_error_lines(&v, &q);
    assert!(v.stderr.contains("frobnicate"), "{}", v.stderr);
    for cmd in [
        "info", "check", "map", "snapshot", "resize", "compare", "convert", "create",
    ] {
        let (v, q) = both(&[cmd, "--definitely-not-a-flag", s(&d.path().join("x"))]);
        assert_eq!(v.code, q.code, "{cmd} with a bad flag: {}", v.stderr);
        assert_error_lines(&v, &q);
    }
}

// ---------------------------------------------------------------------------
// qemu-img personality via symlink
// ---------------------------------------------------------------------------

#[test]
fn symlink_personality_matches() {
    if using_override() {
        eprintln!("skipped: VIRTKIT_TEST_IMG override in use");
        return;
    }
    let d = tmp();
    let img = qcow2_with_data(d.path(), "a.qcow2", "cluster_size=4k", 2 * MIB, 11);
    let raw = d.path().join("a.qcow2.raw");
    let cases: Vec<Vec<String>> = vec![
        vec!["info".into(), s(&img).into()],
        vec!["info".into(), "--output=json".into(), s(&img).into()],
        vec!["check".into(), s(&img).into()],
        vec!["map".into(), s(&img).into()],
        vec!["map".into(), "--output=json".into(), s(&img).into()],
        vec!["compare".into(), s(&raw).into(), s(&img).into()],
        vec!["snapshot".into(), "-l".into(), s(&img).into()],
        vec!["info".into(), s(&d.path().join("missing")).into()],
        vec!["frobnicate".into()],
        vec!["check".into(), s(&raw).into()],
    ];
    for c in &cases {
        let v = vk(c);
        let l = vk_link(c).unwrap();
        // The native command names itself `virtkit` in messages; the link says `qemu-img`.
        let native_err = v
            .stderr
            .replace("virtkit img", "qemu-img")
            .replace("virtkit:", "qemu-img:");
        assert_eq!(
            (l.code, &l.stdout, &l.stderr),
            (v.code, &v.stdout, &native_err),
            "symlink qemu-img {} differs from virtkit img",
            c.join(" ")
        );
    }
    // writing through the symlink
    let out = d.path().join("via-link.qcow2");
    let l = vk_link(&["convert", "-O", "qcow2", s(&raw), s(&out)]).unwrap();
    l.assert_ok();
    qemu_check_clean(&out);
    qemu_compare_identical(&raw, "raw", &out, "qcow2");
    let c = d.path().join("c.qcow2");
    let l = vk_link(&["create", "-f", "qcow2", s(&c), "1M"]).unwrap();
    let q = qemu_img(&["create", "-f", "qcow2", s(&d.path().join("c2.qcow2")), "1M"]);
    assert_eq!(
        l.stdout.replace("c.qcow2", "X"),
        q.stdout.replace("c2.qcow2", "X")
    );
}

/// A reader that stops early (`qemu-img map x | head -1`) ends the command the way it ends
/// qemu-img: by SIGPIPE, with no panic message on stderr.
#[test]
fn closed_stdout_pipe_is_not_a_panic() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let d = tmp();
    let img = d.path().join("many.qcow2");
    assert!(vk(&["create", "-q", "-f", "qcow2", s(&img), "128M"]).ok());
    // Every other 64 KiB cluster written: 2048 JSON map entries, far more than a pipe buffer.
    let cmds: Vec<String> = (0..1024)
        .map(|i| format!("write {} 64k", i * 128 * 1024))
        .collect();
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qio("qcow2", &img, &refs);
    let mut c = vk_command(&["map", "--output=json", s(&img)]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let st = child.wait().unwrap();
    assert!(!err.contains("panicked"), "stderr: {err}");
    assert!(
        st.signal() == Some(13), // SIGPIPE
        "status {st:?}, stderr: {err}"
    );
}

/// `convert -c` to a format without compressed writes fails as qemu-img does: before the
/// target exists, with qemu-img's message.
#[test]
fn convert_compress_unsupported_format() {
    let d = tmp();
    let src = d.path().join("src.raw");
    write_raw(&src, &random_bytes(1 << 20, 7));
    for fmt in ["raw", "vdi", "vpc", "vhdx", "qed", "parallels"] {
        let (vt, qt) = (
            d.path().join(format!("v.{fmt}")),
            d.path().join(format!("q.{fmt}")),
        );
        let v = vk(&["convert", "-c", "-O", fmt, s(&src), s(&vt)]);
        let q = qemu_img(&["convert", "-c", "-O", fmt, s(&src), s(&qt)]);
        assert_eq!(v.code, q.code, "{fmt}: {} / {}", v.stderr, q.stderr);
        assert_error_lines(&v, &q);
        assert_eq!(
            v.stderr.replace("virtkit", "qemu-img"),
            q.stderr,
            "{fmt} error message"
        );
        assert!(!vt.exists(), "{fmt}: target created");
        assert!(!qt.exists(), "{fmt}: qemu-img created its target");
    }
}
