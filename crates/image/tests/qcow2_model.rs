//! Randomized model test of the qcow2 write path: random writes, zero writes, discards,
//! compressed writes and snapshot operations are applied both to an image (through the
//! library) and to an in-memory model. After every step batch the image must read back as the
//! model, `qemu-img check` must find nothing, and `qemu-img convert -O raw` must agree.

use std::path::Path;
use std::process::Command;
use virtkit_image::qcow2::create::{create, CreateOptions};
use virtkit_image::qcow2::header::Compression;
use virtkit_image::{open, BlockDriver, OpenOptions};

/// Small deterministic PRNG (xorshift): tests must be reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The oracle: /usr/bin/qemu-img unless QEMU_IMG names another build.
fn qemu_img_bin() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "/usr/bin/qemu-img".into())
}

fn qemu_check(path: &Path) {
    let out = Command::new(qemu_img_bin())
        .args(["check", "-q"])
        .arg(path)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "qemu-img check failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn qemu_raw(path: &Path) -> Vec<u8> {
    let dir = path.parent().unwrap();
    let raw = dir.join("oracle.raw");
    let st = Command::new(qemu_img_bin())
        .args(["convert", "-O", "raw"])
        .arg(path)
        .arg(&raw)
        .status()
        .expect("qemu-img runs");
    assert!(st.success());
    std::fs::read(raw).unwrap()
}

fn open_rw(path: &Path) -> Box<dyn BlockDriver> {
    open(
        path,
        &OpenOptions {
            writable: true,
            ..Default::default()
        },
    )
    .unwrap()
}

fn run_model(seed: u64, o: CreateOptions, with_snapshots: bool, steps: usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.qcow2");
    let size = o.size as usize;
    create(&path, &o).unwrap();
    let mut rng = Rng(seed | 1);
    let mut model = vec![0u8; size];
    let mut snaps: Vec<(String, Vec<u8>)> = Vec::new();
    let cs = o.cluster_size;
    let mut serial = 0;
    for round in 0..4 {
        let img = open_rw(&path);
        for _ in 0..steps {
            let op = rng.below(if with_snapshots { 10 } else { 8 });
            let off = rng.below(size as u64);
            let len = (rng.below(3 * cs) + 1).min(size as u64 - off);
            let before = model.clone();
            let desc = format!("op {op} off {off} len {len}");
            match op {
                0..=3 => {
                    let v = (rng.next() & 0xff) as u8;
                    let mut buf = vec![v; len as usize];
                    // Some variety inside a write.
                    for (i, b) in buf.iter_mut().enumerate().step_by(97) {
                        *b = (i as u8).wrapping_mul(31) ^ v;
                    }
                    img.write_at(&buf, off).unwrap();
                    model[off as usize..(off + len) as usize].copy_from_slice(&buf);
                }
                4 => {
                    img.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                    model[off as usize..(off + len) as usize].fill(0);
                }
                5 => {
                    // Discard only promises "reads zero or old data" in general; without a
                    // backing file, whole clusters read as zero afterwards.
                    img.discard(off, len).unwrap();
                    let a = off.div_ceil(cs) * cs;
                    let end = off + len;
                    let b = if end == size as u64 {
                        end
                    } else {
                        end / cs * cs
                    };
                    if a < b {
                        model[a as usize..b as usize].fill(0);
                    }
                }
                6 | 7 => {
                    // Whole cluster, compressed.
                    let c = rng.below(size as u64 / cs) * cs;
                    let n = cs.min(size as u64 - c) as usize;
                    let mut buf = vec![0u8; n];
                    let v = (rng.next() & 0xff) as u8;
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = if (i / 64) % 3 == 0 {
                            v
                        } else {
                            (i % 251) as u8
                        };
                    }
                    img.write_compressed(c, &buf).unwrap();
                    model[c as usize..c as usize + n].copy_from_slice(&buf);
                }
                8 => {
                    serial += 1;
                    let name = format!("s{round}-{serial}");
                    if std::env::var_os("MODEL_STEP_CHECK").is_some() {
                        eprintln!("create {name}");
                    }
                    img.snapshot_create(&name).unwrap();
                    snaps.push((name, model.clone()));
                }
                _ => {
                    if !snaps.is_empty() {
                        let i = rng.below(snaps.len() as u64) as usize;
                        if rng.below(2) == 0 {
                            if std::env::var_os("MODEL_STEP_CHECK").is_some() {
                                eprintln!("apply {} of {}", snaps[i].0, snaps.len());
                            }
                            img.snapshot_apply(&snaps[i].0).unwrap();
                            model = snaps[i].1.clone();
                        } else {
                            if std::env::var_os("MODEL_STEP_CHECK").is_some() {
                                eprintln!("delete {} of {}", snaps[i].0, snaps.len());
                            }
                            img.snapshot_delete(&snaps[i].0).unwrap();
                            snaps.remove(i);
                        }
                    }
                }
            }
            if std::env::var_os("MODEL_STEP_CHECK").is_some() {
                let mut back = vec![0u8; size];
                img.read_at(&mut back, 0).unwrap();
                if back != model {
                    let first = back.iter().zip(&model).position(|(a, b)| a != b).unwrap();
                    let was = before[first];
                    panic!("seed {seed}: after {desc}: first difference at {first}: got {} want {} (before op: {was})", back[first], model[first]);
                }
            }
        }
        let mut back = vec![0u8; size];
        img.read_at(&mut back, 0).unwrap();
        assert!(
            back == model,
            "seed {seed} round {round}: read-back differs"
        );
        drop(img);
        qemu_check(&path);
        assert!(
            qemu_raw(&path) == model,
            "seed {seed} round {round}: qemu-img reads different data"
        );
    }
}

fn opts(cs: u64, f: impl FnOnce(&mut CreateOptions)) -> CreateOptions {
    let mut o = CreateOptions {
        size: 4 << 20,
        cluster_size: cs,
        ..Default::default()
    };
    f(&mut o);
    o
}

#[test]
fn v3_64k_with_snapshots() {
    run_model(1, opts(65536, |_| {}), true, 120);
}

#[test]
fn v2_4k_with_snapshots() {
    run_model(2, opts(4096, |o| o.v3 = false), true, 120);
}

#[test]
fn small_clusters_wide_refcounts() {
    run_model(3, opts(512, |o| o.refcount_bits = 64), true, 150);
}

#[test]
fn extended_l2() {
    run_model(4, opts(65536, |o| o.extended_l2 = true), true, 120);
}

#[test]
fn zstd_narrow_refcounts() {
    // refcount_bits=4 allows a few sharers: snapshots stay below the limit here.
    run_model(
        5,
        opts(16384, |o| {
            o.compression = Compression::Zstd;
            o.refcount_bits = 8
        }),
        true,
        100,
    );
}

#[test]
fn refcount_bits_1_without_snapshots() {
    run_model(6, opts(4096, |o| o.refcount_bits = 1), false, 150);
}

#[test]
fn odd_size_and_2m_clusters() {
    run_model(7, opts(2 << 20, |o| o.size = (5 << 20) + 512 * 3), true, 60);
}
