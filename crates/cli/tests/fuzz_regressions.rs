//! Replays every input saved under fuzz/regressions/<target>/ through the same harness the
//! `cargo fuzz` targets use (fuzz/harness.rs), on the stable toolchain: old crashes stay fixed.
//! Errors from the library are fine; a panic, an abort (failed allocation) or a hang is a
//! failure. Each input runs in a child process (this test binary re-executed for one test)
//! so that an abort or a hang is reported with the input's name instead of killing the run.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child: the one input to run.
const INPUT_ENV: &str = "VIRTKIT_FUZZ_REGRESSION_INPUT";
/// Generous for unoptimized builds; every input runs in milliseconds when the bug is fixed.
const TIME_LIMIT: Duration = Duration::from_secs(60);

fn replay(target: &str, run: fn(&[u8])) {
    if let Ok(input) = std::env::var(INPUT_ENV) {
        let data = std::fs::read(&input).unwrap();
        run(&data);
        return;
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // no regression inputs for this target yet
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for f in &files {
        let mut child = Command::new(&exe)
            .args([target, "--exact", "--test-threads=1", "--nocapture"])
            .env(INPUT_ENV, f)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let outcome = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break if status.success() {
                    None
                } else {
                    Some(format!("{status}"))
                };
            }
            if start.elapsed() > TIME_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                break Some(format!("still running after {}s", TIME_LIMIT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(why) = outcome {
            failed.push(format!("{}: {why}", f.display()));
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} regression inputs fail (panic, abort or hang; output above):\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
}

#[test]
fn qcow2_header() {
    replay("qcow2_header", harness::qcow2_header);
}

#[test]
fn qcow2_image() {
    replay("qcow2_image", harness::qcow2_image);
}

#[test]
fn qcow2_write() {
    replay("qcow2_write", harness::qcow2_write);
}

#[test]
fn size_parse() {
    replay("size_parse", harness::size_parse);
}

#[test]
fn vmdk_image() {
    replay("vmdk_image", harness::vmdk_image);
}

#[test]
fn vmdk_descriptor() {
    replay("vmdk_descriptor", harness::vmdk_descriptor);
}

#[test]
fn vdi_image() {
    replay("vdi_image", |d| {
        harness::format_image(virtkit_image::Format::Vdi, d)
    });
}

#[test]
fn vpc_image() {
    replay("vpc_image", |d| {
        harness::format_image(virtkit_image::Format::Vpc, d)
    });
}

#[test]
fn vhdx_image() {
    replay("vhdx_image", |d| {
        harness::format_image(virtkit_image::Format::Vhdx, d)
    });
}

#[test]
fn qed_image() {
    replay("qed_image", |d| {
        harness::format_image(virtkit_image::Format::Qed, d)
    });
}

#[test]
fn parallels_image() {
    replay("parallels_image", |d| {
        harness::format_image(virtkit_image::Format::Parallels, d)
    });
}

#[test]
fn ovf_descriptor() {
    replay("ovf_descriptor", harness::ovf_descriptor);
}

#[test]
fn ova_package() {
    replay("ova_package", harness::ova_package);
}

#[test]
fn guest_partitions() {
    replay("guest_partitions", harness::guest_partitions);
}

#[test]
fn guest_lvm() {
    replay("guest_lvm", harness::guest_lvm);
}

#[test]
fn guest_probe() {
    replay("guest_probe", harness::guest_probe);
}

#[test]
fn guest_ext4() {
    replay("guest_ext4", harness::guest_ext4);
}

#[test]
fn guest_fat() {
    replay("guest_fat", |d| harness::guest_fs("vfat", d));
}

#[test]
fn guest_ntfs() {
    replay("guest_ntfs", harness::guest_ntfs);
}

#[test]
fn guest_iso9660() {
    replay("guest_iso9660", |d| harness::guest_fs("iso9660", d));
}

#[test]
fn guest_xfs() {
    replay("guest_xfs", harness::guest_xfs);
}

#[test]
fn guest_inspect() {
    replay("guest_inspect", harness::guest_inspect);
}

#[test]
fn oci_config() {
    replay("oci_config", harness::oci_config);
}

#[test]
fn oci_image_manifest() {
    replay("oci_image_manifest", harness::oci_image_manifest);
}

#[test]
fn oci_image_tar() {
    replay("oci_image_tar", harness::oci_image_tar);
}
