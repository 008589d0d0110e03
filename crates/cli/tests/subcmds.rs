//! rebase, commit, measure, dd and bench against the real qemu-img: every command runs on
//! copies of the same inputs through both tools, and the results (image content, headers,
//! numbers, output, exit codes) must agree. Where qemu-img 7.2 and 10.x differ (messages of
//! some argument errors, options added since 7.2), the installed version's behaviour is
//! expected; virtkit speaks 10.x.

mod common;
use common::*;
use std::path::{Path, PathBuf};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

fn qemu10() -> bool {
    qemu_version().0 >= 10
}

/// Message lines of stderr without the program prefix and qemu's "Try ... --help" hints.
fn msgs(o: &Out) -> Vec<String> {
    o.stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("Try '"))
        .map(|l| {
            l.strip_prefix("qemu-img: ")
                .or_else(|| l.strip_prefix("virtkit: "))
                .unwrap_or(l)
                .to_string()
        })
        .collect()
}

/// Runs `args` through both tools; `{D}` in an argument is replaced by each tool's own copy
/// of the working directory.
fn both_in(qdir: &Path, vdir: &Path, args: &[&str]) -> (Out, Out) {
    let sub = |d: &Path| -> Vec<String> {
        args.iter()
            .map(|a| a.replace("{D}", s(d)))
            .collect::<Vec<_>>()
    };
    let q = qemu_img(&sub(qdir));
    let v = vk(&sub(vdir));
    (q, v)
}

/// Exit code and message lines equal; with `exact_msg` false only the exit code (messages of
/// that case changed after qemu 7.2 and the oracle is older).
#[track_caller]
fn assert_same_error(q: &Out, v: &Out, exact_msg: bool) {
    v.assert_sane();
    assert_eq!(
        v.code, q.code,
        "exit code differs for `{}`\nqemu: {}\nvirtkit: {}",
        v.cmdline, q.stderr, v.stderr
    );
    if exact_msg {
        assert_eq!(msgs(v), msgs(q), "messages differ for `{}`", v.cmdline);
    }
}

/// `o` with its working directory written as `{D}` in the messages.
fn undir(o: &Out, d: &Path) -> Out {
    let mut o = o.clone();
    o.stderr = o.stderr.replace(s(d), "{D}");
    o
}

/// Copies every file of `src` into two fresh directories, one per tool.
fn twins(src: &Path, root: &Path) -> (PathBuf, PathBuf) {
    let q = root.join("q");
    let v = root.join("v");
    for d in [&q, &v] {
        std::fs::create_dir_all(d).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
            }
        }
    }
    (q, v)
}

fn create(args: &[&str]) {
    qemu_img(args).assert_ok();
}

/// A three-level qcow2 chain in `dir` with data in every layer: base (4 MiB, 4 KiB clusters),
/// mid, and top (6 MiB, larger than both); zero clusters, a compressed cluster, partial
/// clusters and data past the end of the lower layers. Backing names are relative.
fn chain(dir: &Path, top_opts: &str) {
    let base = dir.join("base.qcow2");
    let mid = dir.join("mid.qcow2");
    let top = dir.join("top.qcow2");
    create(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&base),
        "4M",
    ]);
    qio(
        "qcow2",
        &base,
        &[
            "write -P 0x11 0 1M",
            "write -P 0x12 2M 512k",
            "write -P 0x13 3900k 4k",
        ],
    );
    create(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&mid),
    ]);
    qio(
        "qcow2",
        &mid,
        &[
            "write -P 0x21 512k 1M",
            "write -z 3M 64k",
            "write -P 0x22 100k 3k",
        ],
    );
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    if !top_opts.is_empty() {
        args.extend(["-o", top_opts]);
    }
    args.extend(["-b", "mid.qcow2", "-F", "qcow2", s(&top), "6M"]);
    create(&args);
    // Compressed writes are whole clusters.
    let cs = top_opts
        .split(',')
        .find_map(|o| o.strip_prefix("cluster_size="))
        .unwrap_or("64k");
    let compressed = format!("write -c -P 0x33 4M {cs}");
    qio(
        "qcow2",
        &top,
        &[
            "write -P 0x31 1M 64k",
            "write -P 0x32 3500k 4k",
            "write -z 0 4k",
            &compressed,
            "write -P 0x34 300k 3k",
            "write -P 0x35 5M 100k",
        ],
    );
}

/// A new backing file for rebase tests, of another size and cluster size, with some data
/// equal to the old chain's and some not.
fn new_backing(dir: &Path, cluster: &str, size: &str) {
    let nb = dir.join("new.qcow2");
    create(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("cluster_size={cluster}"),
        s(&nb),
        size,
    ]);
    qio(
        "qcow2",
        &nb,
        &[
            "write -P 0x11 0 512k",
            "write -P 0x99 600k 100k",
            "write -P 0x98 1900k 1k",
        ],
    );
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        s(&nb),
        s(&dir.join("new.raw")),
    ])
    .assert_ok();
}

fn info(path: &Path) -> Value {
    qemu_info_json(path)
}

fn backing_of(path: &Path) -> (Option<String>, Option<String>) {
    let v = info(path);
    let g = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    (g("backing-filename"), g("backing-filename-format"))
}

// ---------------------------------------------------------------------------
// rebase
// ---------------------------------------------------------------------------

/// Safe rebase onto another file, onto a file lower in the chain, onto nothing (flatten), and
/// compressed: the image must read exactly as before, be what qemu-img made of it, and check
/// clean; its header must name the same backing file.
#[test]
fn rebase_safe_matches_qemu() {
    let modern = qemu_version().0 >= 8;
    for top_opts in [
        "",
        "compat=0.10",
        "extended_l2=on",
        "cluster_size=512",
        "cluster_size=2M",
    ] {
        // A larger new backing file with small clusters for the default and subcluster tops.
        let news: &[(&str, &str)] = if top_opts.is_empty() || top_opts.contains("extended") {
            &[("64k", "2M"), ("1k", "7M")]
        } else {
            &[("64k", "2M")]
        };
        for &(cl, size) in news {
            for mode in [
                &["-b", "new.qcow2", "-F", "qcow2"][..],
                &["-b", "base.qcow2", "-F", "qcow2"][..],
                &["-b", ""][..],
                &["-b", "new.raw", "-F", "raw"][..],
                &["-c", "-b", "new.qcow2", "-F", "qcow2"][..],
            ] {
                let what = format!("top[{top_opts}] new[{cl},{size}] {mode:?}");
                let src = tmp();
                chain(src.path(), top_opts);
                new_backing(src.path(), cl, size);
                let before = qemu_to_raw(&src.path().join("top.qcow2"), "qcow2");
                let root = tmp();
                let (qd, vd) = twins(src.path(), root.path());
                let qt = qd.join("top.qcow2");
                let vt = vd.join("top.qcow2");
                let mut qargs: Vec<&str> = vec!["rebase"];
                // rebase -c exists since qemu 8.0, and qemu-img 10 aborts on it when a
                // cluster is partly allocated (extended L2); the content is the same without.
                let qemu_c = modern && !top_opts.contains("extended_l2");
                qargs.extend(mode.iter().filter(|a| qemu_c || **a != "-c"));
                qargs.push(s(&qt));
                let mut vargs: Vec<&str> = vec!["rebase"];
                vargs.extend(mode);
                vargs.push(s(&vt));
                qemu_img(&qargs).assert_ok();
                let v = vk(&vargs);
                v.assert_ok();
                assert!(v.stdout.is_empty() && v.stderr.is_empty(), "{what}: {v:?}");
                qemu_check_clean(&vt);
                qemu_compare_identical(&qt, "qcow2", &vt, "qcow2");
                assert_bytes_eq(&what, &qemu_to_raw(&vt, "qcow2"), &before);
                assert_eq!(backing_of(&vt), backing_of(&qt), "{what}");
                if mode.contains(&"-c") && qemu_c {
                    // The same clusters were written compressed.
                    let compressed = |p: &Path| -> Vec<(u64, u64)> {
                        let m = qemu_map(p, "qcow2");
                        let mut v: Vec<(u64, u64)> = m
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|e| e["compressed"] == true && e["depth"] == 0)
                            .map(|e| (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
                            .collect();
                        v.sort_unstable();
                        v
                    };
                    assert_eq!(compressed(&vt), compressed(&qt), "{what}");
                }
            }
        }
    }
}

/// -u only rewrites the header (the old backing file need not exist); -u without -b removes
/// the backing file.
#[test]
fn rebase_unsafe_matches_qemu() {
    for mode in [
        &["-u", "-b", "new.qcow2", "-F", "qcow2"][..],
        &["-u", "-b", "somewhere/else.img", "-F", "raw"][..],
        &["-u"][..],
        &["-u", "-b", ""][..],
    ] {
        let src = tmp();
        chain(src.path(), "");
        new_backing(src.path(), "64k", "2M");
        // The old backing file is gone: unsafe mode must not need it.
        std::fs::remove_file(src.path().join("mid.qcow2")).unwrap();
        let root = tmp();
        let (qd, vd) = twins(src.path(), root.path());
        let qt = qd.join("top.qcow2");
        let vt = vd.join("top.qcow2");
        let with = |t: &Path| {
            let mut a: Vec<String> = vec!["rebase".into()];
            a.extend(mode.iter().map(|x| x.to_string()));
            a.push(s(t).into());
            a
        };
        qemu_img(&with(&qt)).assert_ok();
        vk(&with(&vt)).assert_ok();
        assert_eq!(backing_of(&vt), backing_of(&qt), "{mode:?}");
        // Only the header changed: everything past the first cluster is as qemu-img left it.
        let (qb, vb) = (read(&qt), read(&vt));
        assert_bytes_eq(&format!("{mode:?}"), &vb[65536..], &qb[65536..]);
        if !mode.contains(&"somewhere/else.img") {
            qemu_check_clean(&vt);
            qemu_compare_identical(&qt, "qcow2", &vt, "qcow2");
        }
    }
}

/// A relative -b names a file next to the image (not in the current directory) and is
/// stored as given.
#[test]
fn rebase_relative_name_resolves_next_to_image() {
    let src = tmp();
    chain(src.path(), "");
    new_backing(src.path(), "64k", "2M");
    let root = tmp();
    let (qd, vd) = twins(src.path(), root.path());
    // Run from the parent directory: "new.qcow2" exists only next to the image.
    let (q, v) = both_in(
        &qd,
        &vd,
        &["rebase", "-b", "new.qcow2", "-F", "qcow2", "{D}/top.qcow2"],
    );
    q.assert_ok();
    v.assert_ok();
    let (qt, vt) = (qd.join("top.qcow2"), vd.join("top.qcow2"));
    assert_eq!(backing_of(&vt).0.as_deref(), Some("new.qcow2"));
    qemu_compare_identical(&qt, "qcow2", &vt, "qcow2");
}

#[test]
fn rebase_errors_match_qemu() {
    let src = tmp();
    chain(src.path(), "");
    new_backing(src.path(), "64k", "2M");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "raw",
        s(&src.path().join("r.raw")),
        "1M",
    ])
    .assert_ok();
    let cases: &[&[&str]] = &[
        &["rebase", "{D}/top.qcow2"],
        &[
            "rebase",
            "-b",
            "new.qcow2",
            "-F",
            "qcow2",
            "{D}/top.qcow2",
            "{D}/mid.qcow2",
        ],
        &["rebase", "-b", "new.qcow2", "-F", "qcow3", "{D}/top.qcow2"],
        &[
            "rebase",
            "-b",
            "missing.qcow2",
            "-F",
            "qcow2",
            "{D}/top.qcow2",
        ],
        &["rebase", "-u", "-b", "new.qcow2", "{D}/top.qcow2"],
        &["rebase", "-b", "new.qcow2", "{D}/top.qcow2"],
        &[
            "rebase",
            "-c",
            "-b",
            "new.qcow2",
            "-F",
            "qcow2",
            "-f",
            "raw",
            "{D}/r.raw",
        ],
        &[
            "rebase",
            "-t",
            "bogus",
            "-b",
            "new.qcow2",
            "-F",
            "qcow2",
            "{D}/top.qcow2",
        ],
        &[
            "rebase",
            "-T",
            "bogus",
            "-b",
            "new.qcow2",
            "-F",
            "qcow2",
            "{D}/top.qcow2",
        ],
        &[
            "rebase",
            "-u",
            "-b",
            "x",
            "-F",
            "raw",
            "-f",
            "raw",
            "{D}/r.raw",
        ],
        &[
            "rebase",
            "-b",
            "new.qcow2",
            "-F",
            "qcow2",
            "{D}/missing.qcow2",
        ],
        &[
            "rebase",
            "-f",
            "bogus",
            "-b",
            "new.qcow2",
            "-F",
            "qcow2",
            "{D}/top.qcow2",
        ],
        &["rebase", "-Z", "{D}/top.qcow2"],
        &["rebase", "-b", "top.qcow2", "-F", "qcow2", "{D}/top.qcow2"],
    ];
    for args in cases {
        let root = tmp();
        let (qd, vd) = twins(src.path(), root.path());
        let before = read(&vd.join("top.qcow2"));
        let (q, v) = both_in(&qd, &vd, args);
        assert!(!q.ok(), "qemu-img accepted {args:?}");
        // "Try ... --help" hints aside, one line; the 7.2 wording of the usage error differs,
        // and rebase -c came in 8.0.
        let exact = !args.contains(&"-Z") && (!args.contains(&"-c") || qemu_version().0 >= 8);
        let (q, v) = (undir(&q, &qd), undir(&v, &vd));
        if args.contains(&"top.qcow2") {
            // QEMU's image locking refuses it, and adds a hint line to its message.
            assert_eq!(v.code, q.code);
            assert_eq!(msgs(&v)[..], msgs(&q)[..1], "{args:?}");
        } else {
            assert_same_error(&q, &v, exact);
        }
        assert_eq!(msgs(&v).len(), 1, "{args:?}: {}", v.stderr);
        // virtkit checks the backing format before copying anything: a failed rebase leaves
        // the image as it was.
        assert_eq!(
            read(&vd.join("top.qcow2")),
            before,
            "{args:?} changed the image"
        );
    }
}

#[test]
fn rebase_progress_and_quiet() {
    let src = tmp();
    chain(src.path(), "");
    new_backing(src.path(), "64k", "2M");
    let t = src.path().join("top.qcow2");
    let o = vk(&["rebase", "-p", "-b", "new.qcow2", "-F", "qcow2", s(&t)]);
    o.assert_ok();
    assert!(o.stdout.contains("(100.00/100%)"), "{}", o.stdout);
    assert!(o.stdout.starts_with("    (0.00/100%)\r"), "{:?}", o.stdout);
    let o = vk(&["rebase", "-p", "-q", "-b", "", s(&t)]);
    o.assert_ok();
    assert!(o.stdout.is_empty());
}

// ---------------------------------------------------------------------------
// commit
// ---------------------------------------------------------------------------

/// Extents of `path` stored in the image itself (depth 0).
fn own_extents(path: &Path) -> Vec<Extent> {
    map_extents(&qemu_map(path, "qcow2"), false)
        .into_iter()
        .filter(|e| e.depth == 0 && e.present != Some(false))
        .collect()
}

/// Commit into the immediate backing file (top emptied), with -d (top kept) and with -b
/// over a three-level chain (-d implied, the intermediate image untouched): every image must
/// equal what qemu-img made of it, the top's content must not change, and all must check
/// clean.
#[test]
fn commit_matches_qemu() {
    for top_opts in ["", "compat=0.10", "extended_l2=on", "cluster_size=512"] {
        for mode in [
            &[][..],
            &["-d"][..],
            &["-b", "base.qcow2"][..],
            &["-b", "mid.qcow2"][..],
            &["-p"][..],
            &["-q"][..],
            &["-r", "100M"][..],
        ] {
            let what = format!("top[{top_opts}] {mode:?}");
            let src = tmp();
            chain(src.path(), top_opts);
            let before = qemu_to_raw(&src.path().join("top.qcow2"), "qcow2");
            let root = tmp();
            let (qd, vd) = twins(src.path(), root.path());
            let mut args = vec!["commit"];
            args.extend(mode);
            args.push("{D}/top.qcow2");
            let (q, v) = both_in(&qd, &vd, &args);
            q.assert_ok();
            v.assert_ok();
            let last = |o: &Out| o.stdout.rsplit('\r').next().unwrap_or("").to_string();
            assert_eq!(last(&v), last(&q), "{what}");
            assert!(v.stderr.is_empty(), "{what}: {}", v.stderr);
            for f in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
                let (qf, vf) = (qd.join(f), vd.join(f));
                qemu_check_clean(&vf);
                qemu_compare_identical(&qf, "qcow2", &vf, "qcow2");
                assert_eq!(
                    info(&vf)["virtual-size"],
                    info(&qf)["virtual-size"],
                    "{what}: {f}"
                );
            }
            let vt = vd.join("top.qcow2");
            assert_bytes_eq(&what, &qemu_to_raw(&vt, "qcow2"), &before);
            let kept = own_extents(&vt);
            if mode.is_empty() || mode == ["-p"] || mode == ["-q"] || mode == ["-r", "100M"] {
                assert!(
                    kept.is_empty(),
                    "{what}: top not emptied:\n{}",
                    fmt_extents(&kept)
                );
            } else {
                assert_eq!(kept, own_extents(&qd.join("top.qcow2")), "{what}");
                assert!(!kept.is_empty(), "{what}");
            }
            // The layer that received the data holds what the top showed above it.
            let target = match mode {
                ["-b", b] => *b,
                _ => "mid.qcow2",
            };
            let got = qemu_to_raw(&vd.join(target), "qcow2");
            let want = qemu_to_raw(&qd.join(target), "qcow2");
            assert_bytes_eq(&format!("{what}: {target}"), &got, &want);
        }
    }
}

/// Emptying keeps internal snapshots (QEMU drops only the active clusters then), and the
/// snapshot's content stays readable.
#[test]
fn commit_keeps_snapshots() {
    let src = tmp();
    chain(src.path(), "");
    let t = src.path().join("top.qcow2");
    qemu_img(&["snapshot", "-c", "s1", s(&t)]).assert_ok();
    qio(
        "qcow2",
        &t,
        &["write -P 0x44 1M 4k", "write -P 0x45 5M 64k"],
    );
    let root = tmp();
    let (qd, vd) = twins(src.path(), root.path());
    let (q, v) = both_in(&qd, &vd, &["commit", "{D}/top.qcow2"]);
    q.assert_ok();
    v.assert_ok();
    let vt = vd.join("top.qcow2");
    let qt = qd.join("top.qcow2");
    qemu_check_clean(&vt);
    qemu_compare_identical(&qt, "qcow2", &vt, "qcow2");
    assert!(own_extents(&vt).is_empty());
    let snap = |d: &Path| {
        let out = d.join("snap.raw");
        qemu_img(&[
            "convert",
            "-l",
            "s1",
            "-O",
            "raw",
            s(&d.join("top.qcow2")),
            s(&out),
        ])
        .assert_ok();
        read(&out)
    };
    assert_bytes_eq("snapshot s1", &snap(&vd), &snap(&qd));
    for d in [&qd, &vd] {
        qemu_compare_identical(&d.join("mid.qcow2"), "qcow2", &qt, "qcow2");
    }
}

/// A raw image as the base of a qcow2 top.
#[test]
fn commit_into_raw_base() {
    let src = tmp();
    let b = src.path().join("base.raw");
    write_raw(&b, &gen_data(3 * MIB as usize, 7));
    create(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&src.path().join("top.qcow2")),
        "4M",
    ]);
    qio(
        "qcow2",
        &src.path().join("top.qcow2"),
        &[
            "write -P 7 1M 300k",
            "write -z 2M 64k",
            "write -P 8 3500k 1k",
        ],
    );
    let root = tmp();
    let (qd, vd) = twins(src.path(), root.path());
    let (q, v) = both_in(&qd, &vd, &["commit", "{D}/top.qcow2"]);
    q.assert_ok();
    v.assert_ok();
    assert_bytes_eq(
        "raw base",
        &read(&vd.join("base.raw")),
        &read(&qd.join("base.raw")),
    );
}

#[test]
fn commit_errors_match_qemu() {
    let src = tmp();
    chain(src.path(), "");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "raw",
        s(&src.path().join("r.raw")),
        "1M",
    ])
    .assert_ok();
    let cases: &[(&[&str], bool)] = &[
        (&["commit", "-f", "raw", "{D}/r.raw"], true),
        (&["commit", "-f", "qcow2", "{D}/base.qcow2"], true),
        (&["commit", "-b", "nonexistent", "{D}/top.qcow2"], false),
        (&["commit", "-b", "top.qcow2", "{D}/top.qcow2"], false),
        (&["commit", "-r", "x", "{D}/top.qcow2"], false),
        (&["commit", "-r", "-1", "{D}/top.qcow2"], false),
        (&["commit", "-t", "bogus", "{D}/top.qcow2"], true),
        (&["commit"], true),
        (&["commit", "{D}/top.qcow2", "{D}/mid.qcow2"], true),
        (&["commit", "{D}/missing.qcow2"], true),
        (&["commit", "-f", "bogus", "{D}/top.qcow2"], true),
    ];
    for (args, stable) in cases {
        let root = tmp();
        let (qd, vd) = twins(src.path(), root.path());
        let (q, v) = both_in(&qd, &vd, args);
        assert!(!q.ok(), "qemu-img accepted {args:?}");
        // The wording of -b and -r errors carries the full name and changed since 7.2.
        let exact = *stable || qemu10();
        assert_same_error(&undir(&q, &qd), &undir(&v, &vd), exact);
        assert_eq!(msgs(&v).len(), 1, "{args:?}: {}", v.stderr);
        for f in ["base.qcow2", "mid.qcow2", "top.qcow2"] {
            assert_eq!(
                read(&vd.join(f)),
                read(&src.path().join(f)),
                "{args:?}: {f}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// measure
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_measure_same(args: &[&str]) {
    let q = qemu_img(args);
    let v = vk(args);
    assert_eq!(
        (v.code, &v.stdout),
        (q.code, &q.stdout),
        "`{}`\nqemu stderr: {}\nvirtkit stderr: {}",
        args.join(" "),
        q.stderr,
        v.stderr
    );
    if q.ok() {
        assert!(v.stderr.is_empty(), "{}", v.stderr);
    } else {
        assert_eq!(msgs(&v), msgs(&q), "`{}`", args.join(" "));
    }
}

/// New images of many sizes with every option that changes the numbers.
#[test]
fn measure_size_matches_qemu() {
    let sizes = [
        "0", "1", "512", "1000", "65536", "65537", "1M", "100M", "1G", "3G", "1T", "16T", "100T",
    ];
    let optsets = [
        "",
        "cluster_size=512",
        "cluster_size=4k",
        "cluster_size=2M",
        "refcount_bits=1",
        "refcount_bits=64",
        "cluster_size=512,refcount_bits=1",
        "extended_l2=on",
        "extended_l2=on,cluster_size=2M",
        "compat=0.10",
        "preallocation=metadata",
        "preallocation=falloc",
        "preallocation=full,cluster_size=16k",
        "lazy_refcounts=on,compression_type=zstd",
        "backing_file=x.qcow2,backing_fmt=qcow2",
        "size=5G",
    ];
    for size in sizes {
        for o in optsets {
            let mut args = vec!["measure", "--size", size, "-O", "qcow2"];
            if !o.is_empty() {
                args.extend(["-o", o]);
            }
            assert_measure_same(&args);
        }
        assert_measure_same(&["measure", "--size", size]);
        assert_measure_same(&["measure", "--size", size, "-O", "raw", "--output=json"]);
        assert_measure_same(&["measure", "--size", size, "-O", "qcow2", "--output=json"]);
    }
}

/// Source images: sparse and full raw, a chain, compressed, preallocated, extended L2, v2,
/// persistent bitmaps; each measured for several targets.
#[test]
fn measure_images_match_qemu() {
    let d = tmp();
    let p = |n: &str| d.path().join(n);
    write_raw(&p("full.raw"), &random_bytes(3_000_000, 1));
    write_raw(&p("mixed.raw"), &gen_data(9 * MIB as usize, 2));
    qemu_img(&["create", "-q", "-f", "raw", s(&p("empty.raw")), "10M"]).assert_ok();
    chain(d.path(), "");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        s(&p("mixed.raw")),
        s(&p("comp.qcow2")),
    ])
    .assert_ok();
    for pre in ["metadata", "falloc", "full"] {
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("preallocation={pre}"),
            s(&p(&format!("pre_{pre}.qcow2"))),
            "5M",
        ])
        .assert_ok();
    }
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=128k",
        s(&p("ext.qcow2")),
        "5M",
    ])
    .assert_ok();
    qio(
        "qcow2",
        &p("ext.qcow2"),
        &["write -P 5 4k 4k", "write -P 6 1M 200k"],
    );
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&p("v2.qcow2")),
        "5M",
    ])
    .assert_ok();
    qio("qcow2", &p("v2.qcow2"), &["write -P 5 4k 4k"]);
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p("bm.qcow2")), "100M"]).assert_ok();
    qemu_img(&["bitmap", "--add", s(&p("bm.qcow2")), "b0"]).assert_ok();
    qemu_img(&[
        "bitmap",
        "--add",
        "-g",
        "512",
        s(&p("bm.qcow2")),
        "a-rather-long-bitmap-name",
    ])
    .assert_ok();
    qemu_img(&["bitmap", "--add", "-g", "2M", s(&p("bm.qcow2")), "b2"]).assert_ok();

    let images = [
        "full.raw",
        "mixed.raw",
        "empty.raw",
        "base.qcow2",
        "mid.qcow2",
        "top.qcow2",
        "comp.qcow2",
        "pre_metadata.qcow2",
        "pre_falloc.qcow2",
        "pre_full.qcow2",
        "ext.qcow2",
        "v2.qcow2",
        "bm.qcow2",
    ];
    let targets: &[&[&str]] = &[
        &[],
        &["-O", "qcow2"],
        &["-O", "qcow2", "--output=json"],
        &["-O", "qcow2", "-o", "cluster_size=512"],
        &["-O", "qcow2", "-o", "cluster_size=2M,refcount_bits=1"],
        &["-O", "qcow2", "-o", "compat=0.10"],
        &["-O", "qcow2", "-o", "backing_file=x"],
        &["-O", "qcow2", "-o", "preallocation=full"],
        &["-O", "qcow2", "-o", "extended_l2=on"],
        &["-O", "qcow2", "-o", "cluster_size=4k,size=1T"],
        &["-O", "raw", "--output=json"],
    ];
    for img in images {
        for t in targets {
            let path = p(img);
            let mut args = vec!["measure"];
            args.extend(*t);
            args.push(s(&path));
            assert_measure_same(&args);
        }
    }
}

#[test]
fn measure_errors_match_qemu() {
    let d = tmp();
    let img = d.path().join("i.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "1M"]).assert_ok();
    let i = s(&img);
    let stable: &[&[&str]] = &[
        &["measure"],
        &["measure", "--size", "1G", i],
        &["measure", "--size", "1G", "-f", "qcow2"],
        &["measure", i, i],
        &["measure", "--size", "1G", "-O", "vdi"],
        &["measure", "--size", "1G", "-O", "bogus"],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=3k",
        ],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=abc",
        ],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "refcount_bits=12",
        ],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "refcount_bits=x",
        ],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "compat=0.10,refcount_bits=8",
        ],
        &["measure", "--size", "1G", "-O", "qcow2", "-o", "compat=v2"],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "lazy_refcounts=maybe",
        ],
        &["measure", "--size", "1G", "-O", "qcow2", "-o", "bogus=1"],
        &["measure", "--size", "1G", "-O", "qcow2", "-o", "help"],
        &["measure", "--size", "1G", "-O", "qcow2", "-o", ",,"],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "preallocation=bogus",
        ],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "qcow2",
            "-o",
            "extended_l2=on,cluster_size=8k",
        ],
        &[
            "measure",
            "--size",
            "1G",
            "-O",
            "raw",
            "-o",
            "cluster_size=4k",
        ],
        &[
            "measure",
            "--size",
            "100T",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=512",
        ],
        &["measure", "-O", "qcow2", "-l", "nosuch", i],
        &["measure", "-O", "qcow2", "missing.qcow2"],
    ];
    for args in stable {
        assert_measure_same(args);
    }
    // Reworded after 7.2: exit codes must agree, and the words when the oracle is 10.x.
    let reworded: &[&[&str]] = &[
        &["measure", "--size", "-1"],
        &["measure", "--size", "1X"],
        &["measure", "--size", "1G", "--output=yaml"],
    ];
    for args in reworded {
        let q = qemu_img(args);
        let v = vk(args);
        assert_same_error(&q, &v, qemu10());
        assert_eq!(msgs(&v).len(), 1, "{args:?}");
    }
}

// ---------------------------------------------------------------------------
// dd
// ---------------------------------------------------------------------------

/// bs/count/skip combinations (including qemu-img's own reading of count with skip: count
/// blocks from the start of the input, of which skip are skipped), raw and qcow2 output.
#[test]
fn dd_matches_qemu() {
    let src = tmp();
    // Not a multiple of 512: the input reads as a whole number of sectors.
    write_raw(&src.path().join("in.raw"), &gen_data(1_000_000, 3));
    chain(src.path(), "");
    let combos: &[&[&str]] = &[
        &[],
        &["bs=4096"],
        &["bs=4096", "count=4", "skip=2"],
        &["bs=4k", "skip=100"],
        &["bs=1000", "count=10", "skip=2"],
        &["bs=7", "count=3", "skip=5"],
        &["bs=65536", "count=1", "skip=1"],
        &["bs=1M"],
        &["bs=99999", "skip=1"],
        &["bs=1.5k", "count=100"],
        &["count=0"],
        &["skip=1953"],
        &["skip=5000"],
        &["bs=512", "count=99999"],
    ];
    for input in ["in.raw", "top.qcow2"] {
        for combo in combos {
            for ofmt in ["raw", "qcow2"] {
                let root = tmp();
                let (qd, vd) = twins(src.path(), root.path());
                let inp = format!("if={{D}}/{input}");
                let mut args = vec!["dd", "-O", ofmt, &inp, "of={D}/out.img"];
                args.extend(*combo);
                let (q, v) = both_in(&qd, &vd, &args);
                assert_eq!(v.code, q.code, "{args:?}: {}", v.stderr);
                assert_eq!(msgs(&undir(&v, &vd)), msgs(&undir(&q, &qd)), "{args:?}");
                if !q.ok() {
                    continue;
                }
                let (qo, vo) = (qd.join("out.img"), vd.join("out.img"));
                if ofmt == "raw" {
                    assert_bytes_eq(&format!("{args:?}"), &read(&vo), &read(&qo));
                } else {
                    qemu_check_clean(&vo);
                    qemu_compare_identical(&qo, "qcow2", &vo, "qcow2");
                    assert_eq!(info(&vo)["virtual-size"], info(&qo)["virtual-size"]);
                }
            }
        }
    }
}

#[test]
fn dd_errors_match_qemu() {
    let src = tmp();
    write_raw(&src.path().join("in.raw"), &gen_data(100_000, 4));
    let stable: &[&[&str]] = &[
        &["dd", "if={D}/in.raw"],
        &["dd", "of={D}/o.raw"],
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "foo=1"],
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "bar"],
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "bs=0"],
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "bs=3G"],
        &["dd", "-O", "bogus", "if={D}/in.raw", "of={D}/o.raw"],
        &["dd", "if={D}/missing.raw", "of={D}/o.raw"],
        &["dd", "-f", "qcow2", "if={D}/in.raw", "of={D}/o.raw"],
        &["dd", "if={D}/in.raw", "of={D}/no/such/dir/o.raw"],
        &["dd", "-f", "bogus", "if={D}/in.raw", "of={D}/o.raw"],
    ];
    let reworded: &[&[&str]] = &[
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "bs=-1"],
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "count=-1"],
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "count=x"],
    ];
    for (args, exact) in stable
        .iter()
        .map(|a| (a, true))
        .chain(reworded.iter().map(|a| (a, qemu10())))
    {
        let root = tmp();
        let (qd, vd) = twins(src.path(), root.path());
        let (q, v) = both_in(&qd, &vd, args);
        assert!(!q.ok(), "qemu-img accepted {args:?}");
        assert_same_error(&undir(&q, &qd), &undir(&v, &vd), exact);
        assert_eq!(msgs(&v).len(), 1, "{args:?}: {}", v.stderr);
    }
    // Skipping past the end warns and creates an empty output, successfully.
    let root = tmp();
    let (qd, vd) = twins(src.path(), root.path());
    let (q, v) = both_in(
        &qd,
        &vd,
        &["dd", "if={D}/in.raw", "of={D}/o.raw", "skip=1000"],
    );
    q.assert_ok();
    v.assert_ok();
    assert_eq!(msgs(&v).len(), 1);
    assert!(msgs(&v)[0].ends_with("in.raw: cannot skip to specified offset"));
    assert_eq!(read(&vd.join("o.raw")).len(), 0);
    // Writing over the input (or a file under it) is refused, not a silent loss of the input
    // as in qemu-img.
    let inp = vd.join("in.raw");
    let before = read(&inp);
    let o = vk(&["dd", &format!("if={}", s(&inp)), &format!("of={}", s(&inp))]);
    o.assert_one_line_error();
    assert_eq!(read(&inp), before);
    let top = vd.join("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "in.raw",
        "-F",
        "raw",
        s(&top),
    ])
    .assert_ok();
    let o = vk(&["dd", &format!("if={}", s(&top)), &format!("of={}", s(&inp))]);
    o.assert_one_line_error();
    assert_eq!(read(&inp), before);
}

// ---------------------------------------------------------------------------
// bench
// ---------------------------------------------------------------------------

/// The two lines (three with a flush interval) qemu-img prints, the last with the time.
#[track_caller]
fn check_bench_output(q: &Out, v: &Out) {
    let ql: Vec<&str> = q.stdout.lines().collect();
    let vl: Vec<&str> = v.stdout.lines().collect();
    assert_eq!(vl.len(), ql.len(), "{}\n{}", q.stdout, v.stdout);
    let n = vl.len();
    assert_eq!(vl[..n - 1], ql[..n - 1]);
    let last = vl[n - 1];
    let secs = last
        .strip_prefix("Run completed in ")
        .and_then(|x| x.strip_suffix(" seconds."))
        .unwrap_or_else(|| panic!("bad last line {last:?}"));
    let (a, b) = secs.split_once('.').expect("a decimal point");
    assert!(
        a.parse::<u64>().is_ok() && b.len() == 3 && b.parse::<u32>().is_ok(),
        "{last}"
    );
}

#[test]
fn bench_output_matches_qemu() {
    let d = tmp();
    let img = d.path().join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "16M"]).assert_ok();
    let raw = d.path().join("b.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "16M"]).assert_ok();
    let cases: &[&[&str]] = &[
        &["-c", "1000"],
        &["-c", "200", "-d", "4", "-s", "64k"],
        &["-c", "300", "-d", "1", "-o", "1k", "-S", "3"],
        &["-c", "100", "-w", "--pattern=7", "-d", "8"],
        &["-c", "100", "-w", "--flush-interval=10", "-d", "4"],
        &[
            "-c",
            "100",
            "-w",
            "--flush-interval=2",
            "--no-drain",
            "-d",
            "1",
        ],
        &["-c", "50", "-t", "writethrough", "-w"],
        &["-c", "50", "-i", "threads", "-q"],
        &["-c", "20", "-d", "2", "-s", "8k", "-S", "0"],
    ];
    for c in cases {
        for (f, fmt) in [(&img, "qcow2"), (&raw, "raw")] {
            let mut args = vec!["bench", "-f", fmt];
            args.extend(*c);
            args.push(s(f));
            let q = qemu_img(&args);
            let v = vk(&args);
            q.assert_ok();
            v.assert_ok();
            assert!(v.stderr.is_empty(), "{args:?}: {}", v.stderr);
            check_bench_output(&q, &v);
        }
    }
    qemu_check_clean(&img);
    // qemu-img 10's long options are the short ones.
    let l = vk(&[
        "bench",
        "--count=20",
        "--depth=2",
        "--buffer-size=8k",
        "--step-size=0",
        s(&img),
    ]);
    let sh = vk(&[
        "bench",
        "-c",
        "20",
        "-d",
        "2",
        "-s",
        "8k",
        "-S",
        "0",
        s(&img),
    ]);
    l.assert_ok();
    check_bench_output(&sh, &l);
}

/// Offsets of qemu-img bench's requests: the first where asked, then `step` apart, wrapping
/// within the image.
fn bench_offsets(start: u64, step: u64, bufsize: u64, size: u64, count: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut off = start;
    for _ in 0..count {
        v.push(off);
        off = if size <= bufsize {
            0
        } else {
            (off + step) % (size - bufsize)
        };
    }
    v
}

/// -w really writes the pattern, where qemu-img's walk puts the requests.
#[test]
fn bench_write_writes_the_pattern() {
    let d = tmp();
    let img = d.path().join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "8M"]).assert_ok();
    vk(&[
        "bench",
        "-w",
        "-c",
        "40",
        "-d",
        "8",
        "-s",
        "64k",
        "-S",
        "320k",
        "-o",
        "64k",
        "--pattern=0xa5",
        s(&img),
    ])
    .assert_ok();
    qemu_check_clean(&img);
    let data = qemu_to_raw(&img, "qcow2");
    let mut want = vec![0u8; 8 * MIB as usize];
    // 40 requests 320k apart from 64k wrap around the 8M image.
    for off in bench_offsets(64 * KIB, 320 * KIB, 64 * KIB, 8 * MIB, 40) {
        want[off as usize..(off + 64 * KIB) as usize].fill(0xa5);
    }
    assert_bytes_eq("bench -w", &data, &want);
    // The raw format too, with unaligned requests.
    let raw = d.path().join("b.raw");
    qemu_img(&["create", "-q", "-f", "raw", s(&raw), "1M"]).assert_ok();
    vk(&[
        "bench",
        "-f",
        "raw",
        "-w",
        "-c",
        "30",
        "-s",
        "5000",
        "-S",
        "40000",
        "-o",
        "7",
        "--pattern=3",
        s(&raw),
    ])
    .assert_ok();
    let mut want = vec![0u8; MIB as usize];
    for off in bench_offsets(7, 40000, 5000, MIB, 30) {
        want[off as usize..off as usize + 5000].fill(3);
    }
    assert_bytes_eq("bench -w raw", &read(&raw), &want);
}

#[test]
fn bench_errors_match_qemu() {
    let d = tmp();
    let img = d.path().join("b.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "16M"]).assert_ok();
    let i = s(&img);
    let stable: &[&[&str]] = &[
        &["bench", "-c", "10", "-o", "16M", i],
        &["bench", "-c", "10", "-o", "15M", "-s", "2M", i],
        &[
            "bench",
            "-c",
            "100",
            "-w",
            "--flush-interval=10",
            "-d",
            "40",
            i,
        ],
        &["bench", "-c", "100", "--flush-interval=10", i],
        &["bench", "-c", "10", "-t", "bogus", i],
        &["bench", "-c", "10", "-i", "bogus", i],
        &["bench", "-c", "10", "-n", i],
        &["bench", "-c", "10", "missing.qcow2"],
        &["bench", "-c", "10"],
    ];
    let reworded: &[&[&str]] = &[
        &["bench", "-c", "x", i],
        &["bench", "-c", "1k", i],
        &["bench", "-w", "--pattern=256", i],
    ];
    // qemu-img 7.2 accepted these (and ran a useless or endless benchmark).
    let since_10: &[&[&str]] = &[&["bench", "-d", "0", i], &["bench", "-s", "0", i]];
    let v10 = qemu10();
    for (args, exact) in stable
        .iter()
        .map(|a| (a, true))
        .chain(reworded.iter().map(|a| (a, v10)))
        .chain(since_10.iter().filter(|_| v10).map(|a| (a, true)))
    {
        let q = qemu_img(args);
        let v = vk(args);
        assert!(!q.ok(), "qemu-img accepted {args:?}");
        assert_same_error(&q, &v, exact);
        assert_eq!(msgs(&v).len(), 1, "{args:?}: {}", v.stderr);
    }
    // A failed request still printed the plan first, as qemu-img does.
    let v = vk(&["bench", "-c", "10", "-o", "16M", i]);
    assert!(v.stdout.starts_with("Sending 10 read requests"));
}

/// The qemu-img personality prints its own name.
#[test]
fn personality_prefix() {
    let Some(o) = vk_link(&["commit", "/nonexistent/x.qcow2"]) else {
        return;
    };
    o.assert_code(1);
    assert!(
        o.stderr.starts_with("qemu-img: Could not open"),
        "{}",
        o.stderr
    );
}

/// measure -l reads an internal snapshot in place (by ID, by name, or both).
#[test]
fn measure_snapshot_matches_qemu() {
    let d = tmp();
    let img = d.path().join("s.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&img), "64M"]).assert_ok();
    qio("qcow2", &img, &["write -P 1 0 3M"]);
    qemu_img(&["snapshot", "-c", "first", s(&img)]).assert_ok();
    qio("qcow2", &img, &["write -P 2 10M 20M", "discard 0 1M"]);
    let i = s(&img);
    let now = vk(&["measure", "-O", "qcow2", i]);
    let then = vk(&["measure", "-O", "qcow2", "-l", "first", i]);
    assert_ne!(now.stdout, then.stdout, "the snapshot was not used");
    for args in [
        &["measure", "-O", "qcow2", "-l", "first", i][..],
        &["measure", "-O", "qcow2", "-l", "1", i],
        &["measure", "-O", "qcow2", "-l", "snapshot.name=first", i],
        &[
            "measure",
            "-O",
            "qcow2",
            "-l",
            "snapshot.id=1,snapshot.name=first",
            i,
        ],
        &["measure", "-l", "first", "--output=json", i],
        &[
            "measure",
            "-O",
            "qcow2",
            "-l",
            "snapshot.id=1,snapshot.name=other",
            i,
        ],
        &["measure", "-O", "qcow2", "-l", "nosuch", i],
        &["measure", "-O", "qcow2", "-l", "snapshot.bogus=1", i],
        &["measure", "-O", "qcow2", "-f", "raw", "-l", "first", i],
    ] {
        let q = qemu_img(args);
        let v = vk(args);
        assert_eq!((v.code, &v.stdout), (q.code, &q.stdout), "{args:?}");
        assert_eq!(msgs(&v), msgs(&q), "{args:?}");
    }
}

/// Runs `args` (virtkit) and SIGKILLs it after `delay`; whether it was still running.
fn kill_after(args: &[&str], delay: std::time::Duration) -> bool {
    let mut cmd = vk_command(args);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = std::time::Instant::now() + delay;
    while std::time::Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    running
}

/// A kill at any moment of a safe rebase or a commit leaves the top's guest-visible content
/// as it was and every image consistent (leaked clusters at worst; a half-emptied top is
/// repaired by the next read-write open, QEMU's included).
#[test]
fn rebase_and_commit_survive_kill() {
    let src = tmp();
    let base = src.path().join("base.qcow2");
    let raw = src.path().join("base.raw");
    write_raw(&raw, &gen_data(96 * MIB as usize, 5));
    qemu_img(&["convert", "-O", "qcow2", s(&raw), s(&base)]).assert_ok();
    std::fs::remove_file(&raw).unwrap();
    let top = src.path().join("top.qcow2");
    create(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&top),
    ]);
    qio("qcow2", &top, &["write -P 7 10M 3M", "write -z 50M 1M"]);
    let want = qemu_to_raw(&top, "qcow2");
    let mut rng = Rng::new(17);
    for op in [&["rebase", "-b", ""][..], &["commit"][..]] {
        let mut interrupted = 0;
        let mut ms = 0u64;
        for i in 0..6 {
            let root = tmp();
            let (_, vd) = twins(src.path(), root.path());
            let t = vd.join("top.qcow2");
            let mut args: Vec<&str> = op.to_vec();
            args.push(s(&t));
            if ms == 0 {
                let start = std::time::Instant::now();
                vk(&args).assert_ok();
                ms = (start.elapsed().as_millis() as u64).max(40);
                continue;
            }
            let delay = std::time::Duration::from_millis(ms / 10 + rng.below(ms * 85 / 100 + 1));
            if kill_after(&args, delay) {
                interrupted += 1;
            } else {
                ms = ms * 2 / 3;
            }
            let ctx = format!("{op:?} kill #{i} after {delay:?}");
            // A read-write open first: it repairs what a kill left dirty.
            for f in ["top.qcow2", "base.qcow2"] {
                let p = vd.join(f);
                qio("qcow2", &p, &["read 0 512"]);
                let c = qemu_img(&["check", s(&p)]);
                assert!(matches!(c.code, Some(0 | 3)), "{ctx}: {f}: {c:?}");
                vk(&["check", "-r", "leaks", s(&p)]).assert_ok();
                qemu_check_clean(&p);
            }
            assert_bytes_eq(&ctx, &qemu_to_raw(&t, "qcow2"), &want);
        }
        assert!(interrupted > 0, "{op:?}: never interrupted ({ms} ms runs)");
    }
}

/// The commands work on every format through the driver trait: measure of an image of each
/// format, dd into each format, bench on each, and commit and rebase with a qed top.
#[test]
fn other_formats_match_qemu() {
    let src = tmp();
    let raw = src.path().join("in.raw");
    write_raw(&raw, &gen_data(3 * MIB as usize, 9));
    for fmt in ["vmdk", "vdi", "vpc", "vhdx", "qed", "parallels"] {
        let img = src.path().join(format!("in.{fmt}"));
        qemu_img(&["convert", "-O", fmt, s(&raw), s(&img)]).assert_ok();
        for t in [
            &["-O", "qcow2"][..],
            &["-O", "raw"],
            &["-O", "qcow2", "--output=json"],
        ] {
            let mut args = vec!["measure", "-f", fmt];
            args.extend(t);
            args.push(s(&img));
            if fmt == "parallels" && !qemu10() {
                // Bitmap support for parallels (and its "bitmaps size" line) came after 7.2.
                let (q, v) = (qemu_img(&args), vk(&args));
                let strip = |o: &str| -> String {
                    o.lines()
                        .filter(|l| !l.contains("bitmaps"))
                        .map(|l| format!("{l}\n"))
                        .collect()
                };
                assert_eq!(strip(&v.stdout), strip(&q.stdout), "{args:?}");
                continue;
            }
            assert_measure_same(&args);
        }
        let root = tmp();
        let (qd, vd) = twins(src.path(), root.path());
        let inp = format!("if={{D}}/in.{fmt}");
        let (q, v) = both_in(
            &qd,
            &vd,
            &[
                "dd",
                "-f",
                fmt,
                "-O",
                fmt,
                &inp,
                "of={D}/out",
                "bs=64k",
                "count=40",
                "skip=3",
            ],
        );
        q.assert_ok();
        v.assert_ok();
        qemu_compare_identical(&qd.join("out"), fmt, &vd.join("out"), fmt);
        let args = ["bench", "-f", fmt, "-c", "200", "-d", "4", s(&img)];
        let (q, v) = (qemu_img(&args), vk(&args));
        q.assert_ok();
        v.assert_ok();
        check_bench_output(&q, &v);
    }
    for op in [
        &["commit", "{D}/top.qed"][..],
        &["rebase", "-b", "new.qcow2", "-F", "qcow2", "{D}/top.qed"],
        &["rebase", "-b", "", "{D}/top.qed"],
    ] {
        let d = tmp();
        chain(d.path(), "");
        new_backing(d.path(), "64k", "2M");
        let top = d.path().join("top.qed");
        create(&[
            "create",
            "-q",
            "-f",
            "qed",
            "-b",
            "top.qcow2",
            "-F",
            "qcow2",
            s(&top),
            "6M",
        ]);
        qio(
            "qed",
            &top,
            &["write -P 0x51 64k 200k", "write -P 0x52 4M 1M"],
        );
        let before = qemu_to_raw(&top, "qed");
        let root = tmp();
        let (qd, vd) = twins(d.path(), root.path());
        let (q, v) = both_in(&qd, &vd, op);
        q.assert_ok();
        v.assert_ok();
        for (f, fmt) in [("top.qed", "qed"), ("top.qcow2", "qcow2")] {
            qemu_compare_identical(&qd.join(f), fmt, &vd.join(f), fmt);
        }
        assert_bytes_eq(
            &format!("{op:?}"),
            &qemu_to_raw(&vd.join("top.qed"), "qed"),
            &before,
        );
        assert_eq!(
            backing_of(&vd.join("top.qed")),
            backing_of(&qd.join("top.qed"))
        );
        let c = qemu_img(&["check", s(&vd.join("top.qed"))]);
        assert!(c.ok(), "{op:?}: {c:?}");
    }
}
