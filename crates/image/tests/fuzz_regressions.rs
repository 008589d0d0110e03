//! Replays every input saved under fuzz/regressions/<target>/ through the same harness the
//! `cargo fuzz` targets use (fuzz/harness.rs), on the stable toolchain: old crashes stay fixed.
//! Errors from the library are fine; a panic is a failure.

#[path = "../../../fuzz/harness.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
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
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} regression inputs panic:\n  {}",
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
