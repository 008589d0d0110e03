//! change_backing_file rewrites the header as qemu-img reads it.

use std::process::Command;
use virtkit_image::{open, Format, OpenOptions};

fn qemu_img() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "qemu-img".into())
}

fn info(p: &std::path::Path) -> serde_json::Value {
    let o = Command::new(qemu_img())
        .args(["info", "-U", "--output=json"])
        .arg(p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn qcow2_backing_set_changed_and_removed() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.raw");
    std::fs::write(&base, vec![7u8; 1 << 20]).unwrap();
    let top = d.path().join("top.qcow2");
    let st = Command::new(qemu_img())
        .args(["create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw"])
        .arg(&top)
        .status()
        .unwrap();
    assert!(st.success());
    let o = OpenOptions {
        format: Some(Format::Qcow2),
        writable: true,
        no_backing: true,
        ..Default::default()
    };
    let img = open(&top, &o).unwrap();
    img.change_backing_file(Some("other-name.qcow2"), Some("qcow2"))
        .unwrap();
    drop(img);
    let v = info(&top);
    assert_eq!(v["backing-filename"], "other-name.qcow2");
    assert_eq!(v["backing-filename-format"], "qcow2");

    let img = open(&top, &o).unwrap();
    // Too long for the header cluster: refused, header unchanged.
    assert!(img
        .change_backing_file(Some(&"x".repeat(70000)), Some("raw"))
        .is_err());
    img.change_backing_file(None, None).unwrap();
    drop(img);
    let v = info(&top);
    assert!(v.get("backing-filename").is_none(), "{v}");
    let st = Command::new(qemu_img())
        .args(["check", "-q"])
        .arg(&top)
        .status()
        .unwrap();
    assert!(st.success());
}
