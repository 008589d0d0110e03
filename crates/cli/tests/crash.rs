//! Crash consistency: `virtkit img convert` into qcow2 is killed with SIGKILL at
//! (seeded) random points. After every kill the target must not be corrupt
//! (`qemu-img check` exits 0 or 3 — leaks are acceptable), `virtkit img check
//! -r leaks` must repair it, and `qemu-img check` must then exit 0. Finally a
//! complete convert onto the survivor must produce the right content.

mod common;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

/// Run a full convert once to learn how long it takes (capped).
fn calibrate(args: &[&str], cap: Duration) -> Duration {
    let t = Instant::now();
    let o = run_cmd(vk_command(args), cap);
    o.assert_sane();
    if !o.timed_out {
        o.assert_ok();
    }
    t.elapsed().min(cap)
}

/// After a kill: no corruption, repairable leaks, clean afterwards.
fn verify_survivor(img: &Path, ctx: &str) {
    let q = qemu_img(&["check", "-f", "qcow2", s(img)]);
    assert!(
        matches!(q.code, Some(0 | 3)),
        "{ctx}: qemu-img check after kill exited {:?} (corruption?)\n{}{}",
        q.code,
        q.stdout,
        q.stderr
    );
    let r = vk(&["check", "-r", "leaks", "-f", "qcow2", s(img)]);
    assert_eq!(
        r.code,
        Some(0),
        "{ctx}: virtkit img check -r leaks exited {:?}\n{}{}",
        r.code,
        r.stdout,
        r.stderr
    );
    let q = qemu_img(&["check", "-f", "qcow2", s(img)]);
    assert_eq!(
        q.code,
        Some(0),
        "{ctx}: qemu-img check after repair exited {:?}\n{}{}",
        q.code,
        q.stdout,
        q.stderr
    );
}

fn kill_loop(src: &Path, dst: &Path, args: &[&str], kills: usize, seed: u64, fresh: bool) {
    let full = calibrate(args, Duration::from_secs(60));
    if fresh {
        let _ = std::fs::remove_file(dst);
    }
    let mut rng = Rng::new(seed);
    let mut ms = full.as_millis().max(50) as u64;
    let mut interrupted = 0;
    for i in 0..kills {
        // somewhere between 10% and 95% of a full run (at least 30 ms in)
        let delay = Duration::from_millis((ms / 10 + rng.below(ms * 85 / 100 + 1)).max(30));
        if fresh {
            let _ = std::fs::remove_file(dst);
        }
        if kill_after(args, delay) {
            interrupted += 1;
        } else {
            // finished before the kill (calibration ran slower): aim earlier
            ms = ms * 2 / 3;
        }
        if !dst.exists() {
            continue; // killed before the target was created
        }
        verify_survivor(
            dst,
            &format!("kill #{i} after {delay:?} of `{}`", args.join(" ")),
        );
    }
    assert!(
        interrupted > 0,
        "no convert was interrupted (full run takes {full:?})"
    );
    // the survivor is a usable target: a complete run produces the right content
    if fresh {
        let _ = std::fs::remove_file(dst);
    }
    let o = vk(args);
    o.assert_ok();
    qemu_check_clean(dst);
    qemu_compare_identical(src, "raw", dst, "qcow2");
}

fn big_source(dir: &Path, size: usize, seed: u64) -> std::path::PathBuf {
    let p = dir.join("src.raw");
    write_raw(&p, &gen_data(size, seed));
    p
}

#[test]
fn kill_during_convert_to_qcow2() {
    let d = tmp();
    let src = big_source(d.path(), 256 * MIB, 1);
    let dst = d.path().join("dst.qcow2");
    let args = ["convert", "-f", "raw", "-O", "qcow2", s(&src), s(&dst)];
    kill_loop(&src, &dst, &args, 6, 11, true);
    // small clusters: far more metadata updates in flight
    let dst2 = d.path().join("dst4k.qcow2");
    let args = [
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=4k",
        s(&src),
        s(&dst2),
    ];
    kill_loop(&src, &dst2, &args, 4, 12, true);
}

#[test]
fn kill_during_compressed_convert() {
    let d = tmp();
    // compression is CPU bound (and slow in debug builds): keep the source small
    let src = big_source(d.path(), 24 * MIB, 2);
    let dst = d.path().join("dst.qcow2");
    let args = [
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&src),
        s(&dst),
    ];
    kill_loop(&src, &dst, &args, 5, 21, true);
}

#[test]
fn kill_during_convert_n_onto_snapshotted_image() {
    let d = tmp();
    let size = 192 * MIB;
    let src = big_source(d.path(), size, 3);
    // target: qemu-made qcow2 with data and an internal snapshot, so every
    // write must COW away from clusters shared with the snapshot
    let orig = d.path().join("orig.raw");
    write_raw(&orig, &gen_data(size, 4));
    let dst = d.path().join("dst.qcow2");
    qemu_img(&["convert", "-f", "raw", "-O", "qcow2", s(&orig), s(&dst)]).assert_ok();
    qemu_img(&["snapshot", "-c", "keep", s(&dst)]).assert_ok();
    let args = [
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "qcow2",
        s(&src),
        s(&dst),
    ];
    // calibration in kill_loop runs the convert once fully; restore the snapshot
    // state so the kills hit the COW path again
    kill_loop_n(&src, &dst, &orig, &args, 6, 31);
}

fn kill_loop_n(src: &Path, dst: &Path, orig: &Path, args: &[&str], kills: usize, seed: u64) {
    let full = calibrate(args, Duration::from_secs(60));
    let mut rng = Rng::new(seed);
    let mut ms = full.as_millis().max(50) as u64;
    let mut interrupted = 0;
    for i in 0..kills {
        // go back to the snapshot: all clusters shared again (done by qemu-img)
        qemu_img(&["snapshot", "-a", "keep", s(dst)]).assert_ok();
        let delay = Duration::from_millis((ms / 10 + rng.below(ms * 85 / 100 + 1)).max(30));
        if kill_after(args, delay) {
            interrupted += 1;
        } else {
            ms = ms * 2 / 3;
        }
        verify_survivor(
            dst,
            &format!("kill #{i} after {delay:?} of `{}`", args.join(" ")),
        );
        // the snapshot's data is intact
        let names = qemu_info_json(dst)["snapshots"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        assert_eq!(names, 1, "snapshot lost after kill #{i}");
    }
    assert!(
        interrupted > 0,
        "no convert was interrupted (full run takes {full:?})"
    );
    vk(args).assert_ok();
    qemu_check_clean(dst);
    qemu_compare_identical(src, "raw", dst, "qcow2");
    qemu_img(&["snapshot", "-a", "keep", s(dst)]).assert_ok();
    qemu_compare_identical(orig, "raw", dst, "qcow2");
    qemu_check_clean(dst);
}
