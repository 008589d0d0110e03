//! vhdx through the library: the log virtkit writes is replayed by QEMU and by virtkit after
//! an unclean end, and random writes, zeroes and discards match a model (and QEMU's reading).

use std::path::{Path, PathBuf};
use std::process::Command;
use virtkit_image::create::plan;
use virtkit_image::{BlockDriver, Format, OpenOptions};

fn qemu_img() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "/usr/bin/qemu-img".into())
}

fn qemu(args: &[&str]) -> std::process::Output {
    Command::new(qemu_img()).args(args).output().unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn create(path: &Path, size: u64, opts: &[(&str, &str)]) {
    let mut o: Vec<(String, String)> = opts
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    o.push(("size".into(), size.to_string()));
    plan(Format::Vhdx, &o).unwrap().create(path).unwrap();
}

fn open(path: &Path, writable: bool) -> Box<dyn BlockDriver> {
    virtkit_image::open(
        path,
        &OpenOptions {
            format: Some(Format::Vhdx),
            writable,
            ..Default::default()
        },
    )
    .unwrap()
}

fn read_all(img: &dyn BlockDriver) -> Vec<u8> {
    let mut v = vec![0u8; img.virtual_size() as usize];
    img.read_at(&mut v, 0).unwrap();
    v
}

/// The log GUID of the current header (all zero when the log is empty).
fn log_guid(path: &Path) -> [u8; 16] {
    let b = std::fs::read(path).unwrap();
    let seq = |o: usize| u64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap());
    let cur = if seq(0x10000) > seq(0x20000) {
        0x10000
    } else {
        0x20000
    };
    b[cur + 48..cur + 64].try_into().unwrap()
}

fn qemu_raw(path: &Path) -> Vec<u8> {
    let out = path.with_extension("qemu.raw");
    let o = qemu(&[
        "convert",
        "-f",
        "vhdx",
        "-O",
        "raw",
        path.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(&out).unwrap()
}

/// Writes that allocate many blocks (small blocks and a small log, so that the log fills up
/// and is checkpointed mid-way), then the process "dies": the image is leaked, never
/// flushed or closed.
fn unclean_image(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("dirty.vhdx");
    let size = 300u64 << 20;
    create(&path, size, &[("block_size", "1M"), ("log_size", "1M")]);
    let img = open(&path, true);
    let mut model = vec![0u8; size as usize];
    let mut rng = Rng(7);
    for i in 0..200u64 {
        // Every block touched once (1 MiB blocks: 200 allocations, more than one log holds),
        // at an unaligned offset inside it.
        let block = (i * 37) % 300;
        let off = (block << 20) + rng.below(1 << 19);
        let len = 1 + rng.below(300_000) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8 | 1).collect();
        img.write_at(&data, off).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
    }
    // A rewrite of data already written (in place when its block is allocated).
    let at = (5 << 20) as usize;
    img.write_at(&[0x77; 4096], at as u64).unwrap();
    model[at..at + 4096].fill(0x77);
    std::mem::forget(img);
    (path, model)
}

#[test]
fn unclean_log_replays_in_virtkit_and_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let (path, model) = unclean_image(dir.path());
    assert_ne!(log_guid(&path), [0; 16], "the log should be dirty");
    let before = std::fs::read(&path).unwrap();

    // Read-only: the log is applied in memory, the file is not touched.
    {
        let img = open(&path, false);
        assert!(read_all(&*img) == model, "read-only overlay differs");
        let r = img.check(virtkit_image::Repair::None).unwrap();
        assert_eq!(r.corruptions, 1, "a pending log is reported by check");
    }
    assert!(
        std::fs::read(&path).unwrap() == before,
        "read-only open wrote"
    );

    // QEMU replays what virtkit wrote.
    let q = dir.path().join("q.vhdx");
    std::fs::copy(&path, &q).unwrap();
    let o = qemu(&["check", "-r", "all", "-f", "vhdx", q.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "qemu-img check -r all: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(log_guid(&q), [0; 16]);
    assert!(qemu_raw(&q) == model, "QEMU's replay differs");

    // virtkit replays on a read-write open.
    {
        let img = open(&path, true);
        assert!(read_all(&*img) == model, "virtkit's replay differs");
    }
    assert_eq!(log_guid(&path), [0; 16]);
    let o = qemu(&["check", "-f", "vhdx", path.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(qemu_raw(&path) == model);
}

#[test]
fn random_writes_zeroes_discards_match_model() {
    let dir = tempfile::tempdir().unwrap();
    for (n, opts) in [
        vec![("block_size", "1M")],
        vec![("block_size", "2M"), ("block_state_zero", "off")],
        vec![("subformat", "fixed"), ("block_size", "1M")],
        vec![
            ("subformat", "fixed"),
            ("block_state_zero", "off"),
            ("block_size", "1M"),
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("m{n}.vhdx"));
        let size = (24u64 << 20) + 3 * 512;
        create(&path, size, &opts);
        let mut model = vec![0u8; size as usize];
        let mut rng = Rng(n as u64 + 1);
        {
            let img = open(&path, true);
            for step in 0..300 {
                let off = rng.below(size);
                let len = (1 + rng.below(3 << 20)).min(size - off);
                match rng.below(10) {
                    0..=5 => {
                        let v = (step % 250) as u8 + 1;
                        img.write_at(&vec![v; len as usize], off).unwrap();
                        model[off as usize..(off + len) as usize].fill(v);
                    }
                    6 | 7 => {
                        img.write_zeroes(off, len, rng.below(2) == 0).unwrap();
                        model[off as usize..(off + len) as usize].fill(0);
                    }
                    8 => {
                        img.discard(off, len).unwrap();
                        model[off as usize..(off + len) as usize].fill(0);
                    }
                    _ => img.flush().unwrap(),
                }
                if step % 50 == 0 {
                    assert!(read_all(&*img) == model, "{opts:?}: step {step}");
                }
            }
            assert!(read_all(&*img) == model, "{opts:?}");
        }
        assert_eq!(log_guid(&path), [0; 16], "closed cleanly");
        let o = qemu(&["check", "-f", "vhdx", path.to_str().unwrap()]);
        assert!(o.status.success(), "{opts:?}");
        assert!(qemu_raw(&path) == model, "{opts:?}: QEMU reads otherwise");
        let img = open(&path, false);
        assert!(read_all(&*img) == model);
    }
}

/// The two headers of a file, parsed (both must be valid).
fn headers(path: &Path) -> [virtkit_image::vhdx::header::Header; 2] {
    use virtkit_image::vhdx::header::Header;
    let b = std::fs::read(path).unwrap();
    [0x10000usize, 0x20000].map(|o| Header::parse(&b[o..o + 4096]).expect("valid header"))
}

fn bat_entry(path: &Path, i: usize) -> u64 {
    let b = std::fs::read(path).unwrap();
    // QEMU's layout for a 1 MiB log: the BAT at 2 MiB.
    u64::from_le_bytes(
        b[(2 << 20) + 8 * i..(2 << 20) + 8 * i + 8]
            .try_into()
            .unwrap(),
    )
}

#[test]
fn header_updates_and_block_states() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.vhdx");
    create(
        &path,
        8 << 20,
        &[("block_size", "1M"), ("block_state_zero", "off")],
    );
    let orig = std::fs::read(&path).unwrap();
    let h0 = headers(&path);
    // Opens without writes leave the file alone (read-write too, as QEMU).
    drop(open(&path, false));
    drop(open(&path, true));
    assert!(std::fs::read(&path).unwrap() == orig);

    let img = open(&path, true);
    img.write_at(&[0x42; 4096], 4096).unwrap();
    drop(img);
    let h1 = headers(&path);
    let top = |h: &[virtkit_image::vhdx::header::Header; 2]| h.iter().map(|x| x.seq).max().unwrap();
    assert!(top(&h1) > top(&h0), "sequence numbers advance");
    assert_eq!(h1[0].file_write_guid, h1[1].file_write_guid);
    assert_ne!(
        h1[0].file_write_guid, h0[0].file_write_guid,
        "new file write GUID"
    );
    assert_eq!(h1[0].data_write_guid, h1[1].data_write_guid);
    assert_ne!(
        h1[0].data_write_guid, h0[0].data_write_guid,
        "new data write GUID"
    );
    assert!(
        h1[0].log_guid.is_zero() && h1[1].log_guid.is_zero(),
        "log emptied"
    );
    // Block 0 allocated at the old end of the file, 1 MiB aligned, fully present.
    let e = bat_entry(&path, 0);
    assert_eq!(e & 7, 6);
    assert_eq!(e & !0xfffff, orig.len() as u64);
    assert_eq!(bat_entry(&path, 1), 0, "block_state_zero=off: not present");

    // Whole blocks zeroed become PAYLOAD_BLOCK_ZERO, allocated or not.
    let img = open(&path, true);
    img.write_zeroes(1 << 20, 1 << 20, false).unwrap();
    img.write_zeroes(0, 1 << 20, true).unwrap();
    img.discard(5 << 20, 3 << 20).unwrap();
    let mut b = vec![1u8; 8 << 20];
    img.read_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    drop(img);
    for i in [0, 1, 5, 6, 7] {
        assert_eq!(bat_entry(&path, i), 2, "block {i}");
    }
    assert_eq!(bat_entry(&path, 2), 0);
    let o = qemu(&["check", "-f", "vhdx", path.to_str().unwrap()]);
    assert!(o.status.success());
    assert!(qemu_raw(&path).iter().all(|&x| x == 0));
}
