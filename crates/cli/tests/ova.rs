//! `virtkit img ova-import` / `ova-export`: OVF packages built by hand (the layouts VirtualBox
//! and VMware produce) and by virtkit itself, checked with qemu-img; hostile packages give
//! one-line errors and leave nothing behind.

mod common;

use common::*;
use std::path::Path;

/// One ustar entry, written by hand so tests can also build what a well-behaved tar refuses
/// to (`..` names, links, devices).
fn tar_entry(out: &mut Vec<u8>, name: &str, kind: u8, data: &[u8]) {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    let size = format!("{:011o}", data.len());
    h[124..135].copy_from_slice(size.as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    if kind == b'2' {
        h[157..163].copy_from_slice(b"/etc/x");
    }
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let cks = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(cks.as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn tar_end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

fn sha256_hex(data: &[u8]) -> String {
    let d = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(d.path(), data).unwrap();
    let o = std::process::Command::new("sha256sum")
        .arg(d.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A VirtualBox-style descriptor for one disk file of `capacity` bytes in format `uri`.
fn ovf(disk_file: &str, capacity: &str, uri: Option<&str>) -> String {
    format!(
        r#"<?xml version="1.0"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData">
  <References>
    <File ovf:id="file1" ovf:href="{disk_file}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="{capacity}" ovf:diskId="vmdisk1" ovf:fileRef="file1"{}/>
  </DiskSection>
  <VirtualSystem ovf:id="appliance">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <Item>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>3</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>MegaBytes</rasd:AllocationUnits>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>512</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:HostResource>/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        uri.map(|u| format!(" ovf:format=\"{u}\""))
            .unwrap_or_default()
    )
}

/// Package with descriptor, manifest (SHA256) and one disk file.
fn package(desc: &str, disk_name: &str, disk: &[u8], with_manifest: bool) -> Vec<u8> {
    let mut t = Vec::new();
    tar_entry(&mut t, "appliance.ovf", b'0', desc.as_bytes());
    if with_manifest {
        let mf = format!(
            "SHA256(appliance.ovf)= {}\nSHA256({disk_name})= {}\n",
            sha256_hex(desc.as_bytes()),
            sha256_hex(disk)
        );
        tar_entry(&mut t, "appliance.mf", b'0', mf.as_bytes());
    }
    tar_entry(&mut t, disk_name, b'0', disk);
    tar_end(&mut t);
    t
}

fn dir_entries(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn imports_raw_disk_and_reports_hardware() {
    let t = tmp();
    let data = gen_data(3 << 20, 11);
    let ova = t.path().join("a.ova");
    std::fs::write(
        &ova,
        package(&ovf("disk1.img", "3145728", None), "disk1.img", &data, true),
    )
    .unwrap();
    let out = t.path().join("out");
    let o = vk(&["ova-import", "--output=json", s(&ova), s(&out)]);
    o.assert_ok();
    let v = o.json();
    assert_eq!(v["cpus"], 3);
    assert_eq!(v["memory"], 512u64 << 20);
    assert_eq!(v["manifest"], "SHA256");
    assert_eq!(v["disks"][0]["format"], "raw");
    assert_eq!(v["disks"][0]["virtual-size"], 3u64 << 20);
    let q = out.join("disk1.qcow2");
    qemu_check_clean(&q);
    assert_bytes_eq("imported disk", &qemu_to_raw(&q, "qcow2"), &data);
    assert_eq!(dir_entries(&out), vec!["disk1.qcow2".to_string()]);

    // Human output, another output format, no manifest: a warning, still imported.
    let out2 = t.path().join("out2");
    std::fs::write(
        &ova,
        package(
            &ovf("disk1.img", "3145728", None),
            "disk1.img",
            &data,
            false,
        ),
    )
    .unwrap();
    let o = vk(&["ova-import", "-O", "raw", s(&ova), s(&out2)]);
    o.assert_ok();
    assert!(o.stderr.contains("no manifest"), "{}", o.stderr);
    assert!(o.stdout.contains("CPUs:   3"), "{}", o.stdout);
    assert!(o.stdout.contains("Memory: 512 MiB"), "{}", o.stdout);
    assert_eq!(read(&out2.join("disk1.raw")), data);

    // An existing output is not overwritten.
    let o = vk(&["ova-import", "-O", "raw", s(&ova), s(&out2)]);
    o.assert_one_line_error();
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    assert_eq!(read(&out2.join("disk1.raw")), data);
}

#[test]
fn hostile_packages_fail_cleanly() {
    let t = tmp();
    let data = gen_data(64 << 10, 3);
    let good_desc = ovf("disk1.img", "65536", None);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // Manifest digest mismatch (one byte of the disk changed after packing).
    let mut p = package(&good_desc, "disk1.img", &data, true);
    let n = p.len();
    p[n - 1024 - 512 - 100] ^= 1;
    cases.push(("digest", p, "does not match the manifest"));
    // Names that climb out, absolute names, links, devices, duplicates.
    for (name, kind, msg) in [
        ("../evil.img", b'0', "not a plain file name"),
        ("/tmp/evil.img", b'0', "not a plain file name"),
        ("sub/dir.img", b'0', "not a plain file name"),
        ("link.img", b'2', "not a regular file"),
        ("dev.img", b'3', "not a regular file"),
    ] {
        let mut t2 = Vec::new();
        tar_entry(&mut t2, "appliance.ovf", b'0', good_desc.as_bytes());
        tar_entry(&mut t2, name, kind, b"x");
        tar_entry(&mut t2, "disk1.img", b'0', &data);
        tar_end(&mut t2);
        cases.push(("entry", t2, msg));
    }
    let mut dup = Vec::new();
    tar_entry(&mut dup, "appliance.ovf", b'0', good_desc.as_bytes());
    tar_entry(&mut dup, "disk1.img", b'0', &data);
    tar_entry(&mut dup, "disk1.img", b'0', b"other");
    tar_end(&mut dup);
    cases.push(("duplicate", dup, "twice"));
    // Descriptors that lie.
    cases.push((
        "href",
        package(
            &ovf("../disk1.img", "65536", None),
            "disk1.img",
            &data,
            false,
        ),
        "not a plain file name",
    ));
    cases.push((
        "missing",
        package(
            &ovf("nothere.img", "65536", None),
            "disk1.img",
            &data,
            false,
        ),
        "does not hold",
    ));
    cases.push((
        "capacity",
        package(
            &ovf("disk1.img", "18446744073709551615999", None),
            "disk1.img",
            &data,
            false,
        ),
        "not a number",
    ));
    cases.push((
        "xml",
        package("<Envelope><oops></Envelope>", "disk1.img", &data, false),
        "not valid XML",
    ));
    let mut noovf = Vec::new();
    tar_entry(&mut noovf, "disk1.img", b'0', &data);
    tar_end(&mut noovf);
    cases.push(("noovf", noovf, "no OVF descriptor"));
    cases.push(("garbage", vec![0x5a; 4096], "tar"));
    // A manifest naming a file the package lacks.
    let mut p = Vec::new();
    tar_entry(&mut p, "appliance.ovf", b'0', good_desc.as_bytes());
    tar_entry(
        &mut p,
        "appliance.mf",
        b'0',
        format!("SHA1(ghost.img)= {}\n", "0".repeat(40)).as_bytes(),
    );
    tar_entry(&mut p, "disk1.img", b'0', &data);
    tar_end(&mut p);
    cases.push(("ghost", p, "does not hold"));

    for (i, (what, bytes, msg)) in cases.iter().enumerate() {
        let ova = t.path().join(format!("h{i}.ova"));
        std::fs::write(&ova, bytes).unwrap();
        let out = t.path().join(format!("out{i}"));
        let o = vk_t(&["ova-import", s(&ova), s(&out)], HOSTILE_TIMEOUT);
        o.assert_one_line_error();
        assert!(
            o.stderr.contains(msg) || (*msg == "tar" && o.stderr.contains("archive")),
            "{what}: expected '{msg}' in: {}",
            o.stderr
        );
        assert!(
            o.stderr.contains(&format!("h{i}.ova")),
            "{what}: the error names the package: {}",
            o.stderr
        );
        assert!(
            dir_entries(&out).is_empty(),
            "{what}: files left behind: {:?}",
            dir_entries(&out)
        );
        assert_eq!(&read(&ova), bytes, "{what}: package changed");
        assert!(!t.path().join("evil.img").exists() && !Path::new("/tmp/evil.img").exists());
    }
}

#[test]
fn imports_qemu_made_stream_optimized_vmdk() {
    let t = tmp();
    let data = gen_data(4 << 20, 21);
    let raw = t.path().join("src.raw");
    write_raw(&raw, &data);
    let vmdk = t.path().join("appliance-disk1.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
        s(&raw),
        s(&vmdk),
    ])
    .assert_ok();
    let uri = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";
    let desc = ovf("appliance-disk1.vmdk", "4", Some(uri)).replace(
        "ovf:capacity=\"4\"",
        "ovf:capacity=\"4\" ovf:capacityAllocationUnits=\"byte * 2^20\"",
    );
    let ova = t.path().join("app.ova");
    std::fs::write(
        &ova,
        package(&desc, "appliance-disk1.vmdk", &read(&vmdk), true),
    )
    .unwrap();
    let out = t.path().join("out");
    let o = vk(&["ova-import", "-O", "qcow2", s(&ova), s(&out)]);
    o.assert_ok();
    assert!(o.stdout.contains("(vmdk, 4 MiB)"), "{}", o.stdout);
    let q = out.join("appliance-disk1.qcow2");
    qemu_check_clean(&q);
    qemu_compare_identical(&raw, "raw", &q, "qcow2");
}

#[test]
fn export_round_trip_is_a_valid_package() {
    let t = tmp();
    let d1 = t.path().join("d1.raw");
    write_raw(&d1, &gen_data(6 << 20, 5));
    let d2 = t.path().join("d2.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&d2), "3M"]).assert_ok();
    qio("qcow2", &d2, &["write -P 0x5a 1M 512k"]);
    let ova = t.path().join("web.ova");
    let o = vk(&[
        "ova-export",
        "--cpus",
        "2",
        "--memory",
        "768",
        "--sha256",
        s(&d1),
        s(&d2),
        s(&ova),
    ]);
    o.assert_ok();
    // Layout: descriptor first, manifest second, then the disks (DSP0243), ustar.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let tv = std::process::Command::new("tar")
        .args(["-tvf", s(&ova)])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&tv.stdout);
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        names,
        ["web.ovf", "web.mf", "web-disk1.vmdk", "web-disk2.vmdk"],
        "{listing}"
    );
    let st = std::process::Command::new("tar")
        .args(["-xf", s(&ova), "-C", s(&x)])
        .status()
        .unwrap();
    assert!(st.success());
    // The manifest is "SHA256(FILE)= HASH" (not sha256sum's layout): check each line.
    let mf = std::fs::read_to_string(x.join("web.mf")).unwrap();
    assert_eq!(mf.lines().count(), 3, "{mf}");
    for line in mf.lines() {
        let (lhs, hash) = line.split_once("= ").unwrap();
        let file = lhs
            .strip_prefix("SHA256(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        assert_eq!(sha256_hex(&read(&x.join(file))), hash, "{file}");
    }
    // The descriptor is well-formed XML with the OVF 1.0 namespace and our hardware.
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys,xml.etree.ElementTree as E; r=E.parse(sys.argv[1]).getroot(); \
             print(r.tag); \
             print(len(r.findall('.//{http://schemas.dmtf.org/ovf/envelope/1}Disk')))",
            s(&x.join("web.ovf")),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&py.stdout),
        "{http://schemas.dmtf.org/ovf/envelope/1}Envelope\n2\n"
    );
    for (i, (src, fmt)) in [(&d1, "raw"), (&d2, "qcow2")].iter().enumerate() {
        let v = x.join(format!("web-disk{}.vmdk", i + 1));
        qemu_check_clean(&v);
        let info = qemu_info_json(&v);
        assert_eq!(
            info["format-specific"]["data"]["create-type"], "streamOptimized",
            "{info}"
        );
        qemu_compare_identical(src, fmt, &v, "vmdk");
    }
    // And back in.
    let out = t.path().join("imported");
    let o = vk(&["ova-import", "--output=json", s(&ova), s(&out)]);
    o.assert_ok();
    let v = o.json();
    assert_eq!(v["cpus"], 2);
    assert_eq!(v["memory"], 768u64 << 20);
    assert_eq!(v["manifest"], "SHA256");
    assert_eq!(v["ovf-version"], "1.0");
    qemu_compare_identical(&d1, "raw", &out.join("web-disk1.qcow2"), "qcow2");
    qemu_compare_identical(&d2, "qcow2", &out.join("web-disk2.qcow2"), "qcow2");
}
