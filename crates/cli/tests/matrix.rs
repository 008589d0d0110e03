//! The full convert matrix (issue 3 §4): every writable format (and vmdk subformat) converted
//! by virtkit into every other, from sparse random data. Each output is read back by qemu-img
//! and must equal the source data; formats qemu-img checks must check clean.

mod common;

use common::*;
use std::path::{Path, PathBuf};

/// (format, -o options, whether qemu-img check supports it)
const TARGETS: &[(&str, &str, bool)] = &[
    ("raw", "", false),
    ("qcow2", "", true),
    ("qcow2", "compat=0.10,cluster_size=4096", true),
    ("vmdk", "", true),
    ("vmdk", "subformat=monolithicFlat", true),
    ("vmdk", "subformat=twoGbMaxExtentSparse", true),
    ("vmdk", "subformat=streamOptimized", true),
    ("vdi", "", true),
    ("vdi", "static=on", true),
    ("vpc", "", false),
    ("vpc", "subformat=fixed", false),
    ("vhdx", "", true),
    ("vhdx", "subformat=fixed", true),
    ("qed", "", true),
    ("parallels", "", true),
];

/// A size every format represents exactly (vpc's CHS geometry included: 16 heads, 63
/// sectors per track, 65 cylinders).
const SIZE: usize = 65 * 16 * 63 * 512;

fn name(fmt: &str, o: &str) -> String {
    let sub = o
        .split(',')
        .find_map(|kv| kv.strip_prefix("subformat="))
        .map(|s| format!("-{s}"))
        .unwrap_or_else(|| {
            if o.is_empty() {
                String::new()
            } else {
                "-opts".into()
            }
        });
    format!("{fmt}{sub}")
}

fn make(dir: &Path, src: &Path, src_fmt: &str, fmt: &str, o: &str) -> PathBuf {
    let d = dir.join(name(fmt, o));
    std::fs::create_dir_all(&d).unwrap();
    let out = d.join(format!("disk.{fmt}"));
    let mut args = vec!["convert", "-f", src_fmt, "-O", fmt];
    if !o.is_empty() {
        args.extend(["-o", o]);
    }
    args.extend([s(src), s(&out)]);
    vk(&args).assert_ok();
    out
}

fn expect_content(path: &Path, fmt: &str, data: &[u8], what: &str) {
    let got = qemu_to_raw(path, fmt);
    assert!(got.len() >= data.len(), "{what}: image too small");
    assert_bytes_eq(what, &got[..data.len()], data);
    assert!(
        got[data.len()..].iter().all(|&b| b == 0),
        "{what}: non-zero bytes past the end of the source"
    );
}

#[test]
fn every_format_into_every_format() {
    let t = tmp();
    // Sparse: a third of the 512 KiB stretches are holes.
    let mut data = gen_data(SIZE, 305);
    for (i, c) in data.chunks_mut(512 << 10).enumerate() {
        if i % 3 == 1 {
            c.fill(0);
        }
    }
    let raw = t.path().join("src.raw");
    write_raw(&raw, &data);

    // Sources: virtkit's own output in every format (checked on the way).
    let mut sources = Vec::new();
    for (fmt, o, checks) in TARGETS {
        let p = make(&t.path().join("src"), &raw, "raw", fmt, o);
        if *checks {
            qemu_check_clean(&p);
        }
        expect_content(&p, fmt, &data, &format!("raw -> {}", name(fmt, o)));
        sources.push((p, *fmt, name(fmt, o)));
    }
    let mut n = 0;
    for (src, sfmt, sname) in &sources {
        for (fmt, o, checks) in TARGETS {
            let dir = t.path().join(format!("m-{sname}"));
            let out = make(&dir, src, sfmt, fmt, o);
            let what = format!("{sname} -> {}", name(fmt, o));
            if *checks {
                qemu_check_clean(&out);
            }
            expect_content(&out, fmt, &data, &what);
            n += 1;
        }
        std::fs::remove_dir_all(t.path().join(format!("m-{sname}"))).unwrap();
    }
    assert_eq!(n, TARGETS.len() * TARGETS.len());
}
