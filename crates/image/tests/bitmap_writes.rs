//! Guest writes through the library record in a qcow2 image's enabled persistent bitmaps
//! exactly what the same writes through qemu-io record (QEMU is the oracle), the bitmaps are
//! marked in use on disk while writes are pending and stored back on flush and close.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use virtkit_image::{BlockDriver, Format, OpenOptions};

fn qemu_img() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "/usr/bin/qemu-img".into())
}
fn qemu_io() -> String {
    std::env::var("QEMU_IO").unwrap_or_else(|_| "/usr/bin/qemu-io".into())
}

fn run(prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog).args(args).output().expect("spawn");
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn be(b: &[u8], off: usize, n: usize) -> u64 {
    b[off..off + n].iter().fold(0, |v, &x| v << 8 | x as u64)
}

/// name -> (flags, set granules as runs), decoded from the file independently of the library.
fn decode(path: &Path) -> BTreeMap<String, (u64, Vec<(u64, u64)>)> {
    let b = std::fs::read(path).unwrap();
    let cs = 1u64 << be(&b, 20, 4);
    let size = be(&b, 24, 8);
    let mut out = BTreeMap::new();
    let mut off = be(&b, 100, 4) as usize;
    loop {
        let (kind, len) = (be(&b, off, 4), be(&b, off + 4, 4) as usize);
        if kind == 0 {
            return out;
        }
        if kind == 0x2385_2875 {
            let nb = be(&b, off + 8, 4);
            let mut p = be(&b, off + 24, 8) as usize;
            for _ in 0..nb {
                let toff = be(&b, p, 8) as usize;
                let tsize = be(&b, p + 8, 4);
                let flags = be(&b, p + 12, 4);
                let gb = b[p + 17] as u32;
                let nsz = be(&b, p + 18, 2) as usize;
                let name = String::from_utf8_lossy(&b[p + 24..p + 24 + nsz]).into_owned();
                p += (24 + nsz).div_ceil(8) * 8;
                let bits = size.div_ceil(1 << gb);
                let mut runs: Vec<(u64, u64)> = Vec::new();
                for t in 0..tsize {
                    let e = be(&b, toff + 8 * t as usize, 8);
                    let o = e & 0x00ff_ffff_ffff_fe00;
                    for k in 0..cs * 8 {
                        let g = t * cs * 8 + k;
                        if g >= bits {
                            break;
                        }
                        let on = if o != 0 {
                            b[(o + k / 8) as usize] >> (k % 8) & 1 != 0
                        } else {
                            e & 1 != 0
                        };
                        if on {
                            match runs.last_mut() {
                                Some(r) if r.1 == g => r.1 += 1,
                                _ => runs.push((g, g + 1)),
                            }
                        }
                    }
                }
                out.insert(name, (flags, runs));
            }
            return out;
        }
        off += 8 + len.div_ceil(8) * 8;
    }
}

fn open_rw(path: &Path) -> Box<dyn BlockDriver> {
    virtkit_image::open(
        path,
        &OpenOptions {
            format: Some(Format::Qcow2),
            writable: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn image(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    run(&qemu_img(), &["create", "-q", "-f", "qcow2", s(&p), "64M"]);
    run(&qemu_io(), &["-f", "qcow2", "-c", "write -P 1 0 2M", s(&p)]);
    for (g, extra) in [
        ("64k", None),
        ("4k", None),
        ("512", None),
        ("1M", Some("--disable")),
    ] {
        let mut args = vec!["bitmap", "--add", "-g", g];
        args.extend(extra);
        let name = format!("b{g}");
        args.extend([s(&p), &name]);
        run(&qemu_img(), &args);
    }
    p
}

/// (library operation, the qemu-io command doing the same)
type Op = (fn(&dyn BlockDriver), &'static str);

#[test]
fn library_writes_match_qemu_io() {
    let dir = tempfile::tempdir().unwrap();
    let ours = image(dir.path(), "ours.qcow2");
    let theirs = dir.path().join("theirs.qcow2");
    std::fs::copy(&ours, &theirs).unwrap();
    let ops: Vec<Op> = vec![
        (
            |i| i.write_at(&[7u8; 1000], 100_000).unwrap(),
            "write 100000 1000",
        ),
        (
            |i| i.write_at(&[9u8; 8192], 10 << 20).unwrap(),
            "write 10M 8k",
        ),
        (
            |i| i.write_zeroes(20 << 20, 300_000, false).unwrap(),
            "write -z 20M 300000",
        ),
        (|i| i.discard(30 << 20, 1 << 20).unwrap(), "discard 30M 1M"),
        (|i| i.discard(40 << 20, 512).unwrap(), "discard 40M 512"),
        (
            |i| i.write_compressed(50 << 20, &vec![3u8; 65536]).unwrap(),
            "write -c 50M 64k",
        ),
        (
            |i| i.write_at(&[1u8; 512], (64 << 20) - 512).unwrap(),
            "write 67108352 512",
        ),
    ];
    {
        let img = open_rw(&ours);
        for (f, _) in &ops {
            f(img.as_ref());
        }
        // Pending writes: the enabled bitmaps are in use on disk, the disabled one is not.
        let d = decode(&ours);
        assert_eq!(d["b64k"].0, 3, "in use while writes are pending");
        assert_eq!(d["b1M"].0, 0);
    }
    let mut args = vec!["-f", "qcow2"];
    for (_, c) in &ops {
        args.extend(["-c", c]);
    }
    args.push(s(&theirs));
    run(&qemu_io(), &args);
    let (o, t) = (decode(&ours), decode(&theirs));
    assert_eq!(o, t, "bitmaps after the same writes");
    assert_eq!(o["b64k"].0, 2, "stored back on close, in-use flag cleared");
    assert!(o["b1M"].1.is_empty(), "the disabled bitmap records nothing");
    let chk = Command::new(qemu_img())
        .args(["check", s(&ours)])
        .output()
        .unwrap();
    assert!(
        chk.status.success(),
        "{}",
        String::from_utf8_lossy(&chk.stdout)
    );
}

#[test]
fn flush_stores_and_later_writes_mark_again() {
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path(), "f.qcow2");
    let img = open_rw(&p);
    img.write_at(&[5u8; 4096], 1 << 20).unwrap();
    img.flush().unwrap();
    let d = decode(&p);
    assert_eq!(d["b4k"], (2, vec![(256, 257)]), "stored by flush");
    img.write_at(&[5u8; 4096], 2 << 20).unwrap();
    assert_eq!(
        decode(&p)["b4k"].0,
        3,
        "marked in use again by the next write"
    );
    img.flush().unwrap();
    assert_eq!(decode(&p)["b4k"], (2, vec![(256, 257), (512, 513)]));
    // A read-only open writes nothing.
    drop(img);
    let before = std::fs::read(&p).unwrap();
    {
        let ro = virtkit_image::open(
            &p,
            &OpenOptions {
                format: Some(Format::Qcow2),
                ..Default::default()
            },
        )
        .unwrap();
        let mut buf = vec![0u8; 4096];
        ro.read_at(&mut buf, 0).unwrap();
    }
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let info = run(&qemu_img(), &["info", "--output=json", s(&p)]);
    assert!(!info.contains("in-use"), "{info}");
}
