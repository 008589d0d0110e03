//! Partition tables, LVM2 and probing on images built by the real tools (sfdisk, sgdisk,
//! losetup + pvcreate/vgcreate/lvcreate, mkfs.*), compared with those tools' own view
//! (sfdisk --json, sgdisk -p, pvs/vgs/lvs --reportformat json, blkid -p).
//!
//! Device-mapper is not available here, so LVs are never activated: LVM runs with
//! `global/activation=0`, and the tests write their data into the PVs at the offsets LVM
//! reports (pe_start, seg_pe_ranges, stripe_size), then check that our LV mapping reads it
//! back. Loop devices are detached (and the VG removed) by a drop guard; LVM only sees the
//! test's own loop devices and keeps no backups on the host.

use serde_json::Value;
use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use virtkit_guest::{BlockDev, Error, FsInfo, Guest, TableKind};

/// Runs `prog args` under `timeout`; panics with its stderr when it fails.
fn run(prog: &str, args: &[&str]) -> String {
    let (ok, out, err) = try_run(prog, args);
    assert!(ok, "{prog} {args:?} failed:\n{err}");
    out
}

fn try_run(prog: &str, args: &[&str]) -> (bool, String, String) {
    let o = Command::new("timeout")
        .arg("-k5")
        .arg("60")
        .arg(prog)
        .args(args)
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sparse(path: &Path, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

/// Writes `data` at `off` in the file.
fn put(path: &Path, off: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(off)).unwrap();
    f.write_all(data).unwrap();
}

fn get(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let d = std::fs::read(path).unwrap();
    d[off as usize..off as usize + len].to_vec()
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A filesystem image made by `cmd` on a sparse file of `size` bytes (the file name is the
/// last argument).
fn mkfs(dir: &Path, name: &str, size: u64, cmd: &[&str]) -> PathBuf {
    let p = dir.join(name);
    sparse(&p, size);
    let mut args: Vec<&str> = cmd[1..].to_vec();
    args.push(s(&p));
    run(cmd[0], &args);
    p
}

/// `blkid -p -o export` of a file (or a region of it): TYPE, LABEL, UUID...
fn blkid(path: &Path, region: Option<(u64, u64)>) -> HashMap<String, String> {
    let mut args = vec!["-p".to_string(), "-o".into(), "export".into()];
    if let Some((off, len)) = region {
        args.extend(["-O".into(), off.to_string(), "-S".into(), len.to_string()]);
    }
    args.push(s(path).to_string());
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    // blkid exits 2 when it finds nothing.
    let (_, out, _) = try_run("blkid", &a);
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("\\ ", " ")))
        .collect()
}

/// Our probe result is what blkid says (TYPE absent = "unknown").
fn assert_blkid(what: &str, got: &FsInfo, b: &HashMap<String, String>) {
    let want = FsInfo {
        kind: b
            .get("TYPE")
            .cloned()
            .unwrap_or_else(|| "unknown".to_string()),
        label: b.get("LABEL").cloned(),
        uuid: b.get("UUID").cloned(),
    };
    assert_eq!(got, &want, "{what}: ours vs blkid -p {b:?}");
}

fn guest(paths: &[&Path]) -> Guest {
    let imgs: Vec<(PathBuf, Option<virtkit_image::Format>)> =
        paths.iter().map(|p| (p.to_path_buf(), None)).collect();
    Guest::open(&imgs).unwrap()
}

fn read_dev(d: &Arc<dyn BlockDev>, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read_at(&mut b, off).unwrap();
    b
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("bad JSON ({e}): {out}"))
}

fn ju64(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => s.trim_end_matches('B').parse().unwrap(),
        _ => panic!("not a number: {v}"),
    }
}

/// sfdisk --json partitions, keyed by partition number.
fn sfdisk_parts(img: &Path) -> (Value, HashMap<u32, Value>) {
    let v = json(&run("sfdisk", &["--json", s(img)]));
    let t = v["partitiontable"].clone();
    let mut m = HashMap::new();
    for p in t["partitions"].as_array().unwrap() {
        let node = p["node"].as_str().unwrap();
        let num: u32 = node[s(img).len()..].parse().unwrap();
        m.insert(num, p.clone());
    }
    (t, m)
}

#[test]
fn mbr_primary_extended_and_logicals_match_sfdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("mbr.img");
    sparse(&img, 16 << 20);
    let script = "label: dos\nlabel-id: 0x12345678\n\
        start=2048, size=8192, type=83, bootable\n\
        start=10240, size=4096, type=c\n\
        start=14336, size=18432, type=5\n\
        start=16384, size=4096, type=83\n\
        start=22528, size=4096, type=82\n";
    let mut c = Command::new("sfdisk")
        .args(["-q", s(&img)])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
    // Filesystems in partitions 1, 2 and 6; 5 stays empty.
    let ext4 = mkfs(
        dir.path(),
        "p1",
        8192 * 512,
        &["mkfs.ext4", "-q", "-L", "rootfs"],
    );
    put(&img, 2048 * 512, &std::fs::read(&ext4).unwrap());
    let vfat = mkfs(dir.path(), "p2", 4096 * 512, &["mkfs.vfat", "-n", "BOOTFS"]);
    put(&img, 10240 * 512, &std::fs::read(&vfat).unwrap());
    let swap = mkfs(dir.path(), "p6", 4096 * 512, &["mkswap", "-q", "-L", "swp"]);
    put(&img, 22528 * 512, &std::fs::read(&swap).unwrap());

    let (t, want) = sfdisk_parts(&img);
    assert_eq!(t["label"], "dos");
    let g = guest(&[&img]);
    assert!(g.warnings().is_empty(), "{:?}", g.warnings());
    assert_eq!(g.devices(), ["/dev/sda"]);
    let table = g.part_table("/dev/sda").unwrap().unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    assert_eq!(table.mbr_signature, Some(0x12345678));
    let parts = g.partitions();
    let nums: Vec<u32> = parts.iter().map(|p| p.part.number).collect();
    assert_eq!(nums, [1, 2, 3, 5, 6]);
    for p in &parts {
        let w = &want[&p.part.number];
        assert_eq!(p.name, format!("/dev/sda{}", p.part.number));
        assert_eq!(p.part.start, ju64(&w["start"]) * 512, "{}", p.name);
        assert_eq!(p.part.size, ju64(&w["size"]) * 512, "{}", p.name);
        assert_eq!(p.part.end, p.part.start + p.part.size - 1);
        let ty = u8::from_str_radix(w["type"].as_str().unwrap(), 16).unwrap();
        assert_eq!(p.part.mbr_id, Some(ty), "{}", p.name);
        assert_eq!(p.part.gpt_type, None);
        assert_eq!(p.part.bootable, w["bootable"] == true, "{}", p.name);
        assert_eq!(p.part.extended, p.part.number == 3);
        assert_eq!(p.part.logical, p.part.number >= 5);
    }
    // Linux exposes an extended partition as its first 1 KiB.
    assert_eq!(g.size("/dev/sda3").unwrap(), 1024);
    assert_eq!(g.size("/dev/sda1").unwrap(), 8192 * 512);
    assert_eq!(g.size("/dev/sda").unwrap(), 16 << 20);
    let d1 = g.device("/dev/sda1").unwrap();
    assert_eq!(read_dev(&d1, 1024, 2048), get(&ext4, 1024, 2048));

    // list-filesystems: not the disk (it has partitions), not the extended partition.
    let fss = g.filesystems();
    let names: Vec<&str> = fss.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["/dev/sda1", "/dev/sda2", "/dev/sda5", "/dev/sda6"]);
    for (name, info) in &fss {
        let p = parts.iter().find(|p| &p.name == name).unwrap();
        let b = blkid(&img, Some((p.part.start, p.part.size)));
        assert_blkid(name, info, &b);
    }
    assert_eq!(fss[0].1.kind, "ext4");
    assert_eq!(fss[0].1.label.as_deref(), Some("rootfs"));
    assert_eq!(fss[1].1.kind, "vfat");
    assert_eq!(fss[2].1.kind, "unknown");
    assert_eq!(fss[3].1.kind, "swap");

    // Names as libguestfs accepts them.
    assert_eq!(g.canonical_name("/dev/hda5").unwrap(), "/dev/sda5");
    assert_eq!(g.canonical_name("/dev/vda").unwrap(), "/dev/sda");
    assert_eq!(g.canonical_name("/dev/xvda6").unwrap(), "/dev/sda6");
    for bad in [
        "/dev/sda4",
        "/dev/sdb",
        "/dev/sda7",
        "sda",
        "/dev/mapper/vg-lv",
        "/dev/vg/lv",
    ] {
        match g.device(bad) {
            Err(Error::NotFound(m)) => assert!(m.contains(bad), "{m}"),
            Err(e) => panic!("{bad}: {e}"),
            Ok(_) => panic!("{bad} found"),
        }
    }
    assert!(g.open_fs("/dev/sda5").is_err());
}

/// One row of `sgdisk -p`: number, first sector, last sector, code, name.
type SgdiskRow = (u32, u64, u64, String, String);

/// `sgdisk -p`: the logical sector size and the rows.
fn sgdisk_print(dev: &str) -> (u64, Vec<SgdiskRow>) {
    let out = run("sgdisk", &["-p", dev]);
    let mut ss = 0;
    let mut v = Vec::new();
    let mut table = false;
    for l in out.lines() {
        // "Sector size (logical): 512 bytes" or "(logical/physical): 4096/4096 bytes".
        if let Some(r) = l.strip_prefix("Sector size (logical") {
            let v = r.split(':').nth(1).unwrap().trim();
            ss = v.split(['/', ' ']).next().unwrap().parse().unwrap();
        }
        if l.starts_with("Number") {
            table = true;
            continue;
        }
        if table {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() >= 6 {
                v.push((
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[5].to_string(),
                    f[6..].join(" "),
                ));
            }
        }
    }
    (ss, v)
}

fn make_gpt(img: &Path) {
    sparse(img, 16 << 20);
    run(
        "sgdisk",
        &[
            "-o",
            "-n",
            "1:2048:+2M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI System",
            "-n",
            "2:0:+4M",
            "-t",
            "2:8300",
            "-c",
            "2:root",
            "-A",
            "2:set:2",
            "-n",
            "4:0:+1M",
            "-t",
            "4:8e00",
            "-c",
            "4:lvm pv",
            s(img),
        ],
    );
}

#[test]
fn gpt_partitions_match_sfdisk_and_sgdisk() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("gpt.img");
    make_gpt(&img);
    let vfat = mkfs(dir.path(), "esp", 2 << 20, &["mkfs.vfat", "-n", "ESP"]);
    put(&img, 2048 * 512, &std::fs::read(&vfat).unwrap());
    let ext4 = mkfs(
        dir.path(),
        "root",
        4 << 20,
        &["mkfs.ext4", "-q", "-L", "gptroot"],
    );

    let (t, want) = sfdisk_parts(&img);
    let (ss, printed) = sgdisk_print(s(&img));
    assert_eq!(ss, 512);
    let g = guest(&[&img]);
    assert!(g.warnings().is_empty(), "{:?}", g.warnings());
    let table = g.part_table("/dev/vda").unwrap().unwrap().clone();
    assert_eq!(table.kind, TableKind::Gpt);
    assert!(!table.used_backup);
    assert_eq!(
        table.disk_guid.unwrap().to_string(),
        t["id"].as_str().unwrap()
    );
    let parts = g.partitions();
    assert_eq!(parts.len(), 3);
    // GPT numbering is the entry index: 1, 2, 4.
    assert_eq!(
        parts.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["/dev/sda1", "/dev/sda2", "/dev/sda4"]
    );
    for p in &parts {
        let w = &want[&p.part.number];
        assert_eq!(p.table, TableKind::Gpt);
        assert_eq!(p.part.start, ju64(&w["start"]) * 512);
        assert_eq!(p.part.size, ju64(&w["size"]) * 512);
        assert_eq!(
            p.part.gpt_type.unwrap().to_string(),
            w["type"].as_str().unwrap()
        );
        assert_eq!(
            p.part.gpt_guid.unwrap().to_string(),
            w["uuid"].as_str().unwrap()
        );
        assert_eq!(p.part.gpt_name.as_deref(), w["name"].as_str());
        assert_eq!(p.part.mbr_id, None);
        let pr = printed
            .iter()
            .find(|x| x.0 == p.part.number)
            .expect("sgdisk lists it");
        assert_eq!((p.part.start / 512, p.part.end / 512), (pr.1, pr.2));
        assert_eq!(p.part.gpt_name.as_deref(), Some(pr.4.as_str()));
    }
    assert!(parts[0].part.bootable, "ESP is parted's boot flag");
    assert!(!parts[1].part.bootable);
    assert_eq!(parts[1].part.gpt_attributes, Some(1 << 2));
    assert_eq!(
        want[&2]["attrs"].as_str(),
        Some("LegacyBIOSBootable"),
        "sfdisk agrees on the attribute"
    );

    put(&img, parts[1].part.start, &std::fs::read(&ext4).unwrap());
    let g = guest(&[&img]);
    for (name, info) in g.filesystems() {
        let p = parts.iter().find(|p| p.name == name).unwrap();
        assert_blkid(
            &name,
            &info,
            &blkid(&img, Some((p.part.start, p.part.size))),
        );
    }
    assert_eq!(
        g.probe("/dev/sda2").unwrap().label.as_deref(),
        Some("gptroot")
    );

    // A bad primary header, then a bad primary entry array: the backup is used and gives
    // the same partitions.
    for (what, off) in [("header", 512 + 40), ("entry array", 1024 + 40)] {
        let bad = dir.path().join("bad.img");
        std::fs::copy(&img, &bad).unwrap();
        put(&bad, off, &[0xff; 4]);
        let g2 = guest(&[&bad]);
        let t2 = g2.part_table("/dev/sda").unwrap().unwrap();
        assert!(t2.used_backup, "{what}");
        assert_eq!(g2.partitions(), g.partitions(), "{what}");
        assert!(g2.warnings().iter().any(|w| w.contains("backup")));
        assert_eq!(g2.probe("/dev/sda2").unwrap().kind, "ext4");
    }
    // Both headers bad: no partitions, a warning, and the disk itself is listed.
    let bad = dir.path().join("bad2.img");
    std::fs::copy(&img, &bad).unwrap();
    put(&bad, 512 + 40, &[0xff; 4]);
    put(&bad, (16 << 20) - 512 + 40, &[0xff; 4]);
    let g3 = guest(&[&bad]);
    assert!(g3.partitions().is_empty());
    assert!(
        g3.warnings().iter().any(|w| w.contains("no valid GPT")),
        "{:?}",
        g3.warnings()
    );
    assert_eq!(g3.filesystems()[0].0, "/dev/sda");
}

/// Loop devices and a VG made for one test; the drop guard removes the VG (if the test
/// failed before detaching) and detaches the loops.
struct LvmEnv {
    loops: Vec<String>,
    vgs: Vec<String>,
}

static NEXT_VG: AtomicU32 = AtomicU32::new(0);

impl LvmEnv {
    fn new() -> LvmEnv {
        LvmEnv {
            loops: Vec::new(),
            vgs: Vec::new(),
        }
    }

    fn vg_name(&mut self, tag: &str) -> String {
        let n = format!(
            "vkt{}x{}{tag}",
            std::process::id(),
            NEXT_VG.fetch_add(1, Ordering::Relaxed)
        );
        self.vgs.push(n.clone());
        n
    }

    fn attach(&mut self, file: &Path, extra: &[&str]) -> String {
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(extra);
        args.push(s(file));
        let dev = run("losetup", &args).trim().to_string();
        assert!(dev.starts_with("/dev/loop"), "{dev}");
        self.loops.push(dev.clone());
        dev
    }

    /// LVM configuration: only our loop devices, no device-mapper, no udev, no backups.
    fn config(&self) -> String {
        let accept: Vec<String> = self.loops.iter().map(|l| format!("\"a|^{l}$|\"")).collect();
        format!(
            "devices {{ filter=[{},\"r|.*|\"] use_devicesfile=0 hints=\"none\" }} \
             activation {{ udev_sync=0 udev_rules=0 }} backup {{ backup=0 archive=0 }} \
             global {{ activation=0 use_lvmpolld=0 }}",
            accept.join(",")
        )
    }

    fn lvm(&self, cmd: &str, args: &[&str]) -> String {
        let c = self.config();
        let mut a = vec![cmd, "--config", &c];
        a.extend_from_slice(args);
        run("lvm", &a)
    }

    fn report(&self, cmd: &str, fields: &str, extra: &[&str]) -> Vec<Value> {
        let mut a = vec![
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            fields,
        ];
        a.extend_from_slice(extra);
        let v = json(&self.lvm(cmd, &a));
        let key = &cmd[..2];
        v["report"][0][key].as_array().unwrap().clone()
    }

    /// Detaches the loops: after this the images are plain files.
    fn detach(&mut self) {
        for l in self.loops.drain(..) {
            let _ = try_run("losetup", &["-d", &l]);
        }
        self.vgs.clear();
    }
}

impl Drop for LvmEnv {
    fn drop(&mut self) {
        if !self.loops.is_empty() {
            for vg in self.vgs.clone() {
                let c = self.config();
                let _ = try_run("lvm", &["vgremove", "--config", &c, "-ff", &vg]);
            }
        }
        self.detach();
    }
}

/// "/dev/loop3:4-5" -> ("/dev/loop3", 4).
fn pe_range(r: &str) -> (String, u64) {
    let (dev, range) = r.rsplit_once(':').unwrap();
    (
        dev.to_string(),
        range.split('-').next().unwrap().parse().unwrap(),
    )
}

/// Adds a thin pool (with its hidden data and metadata LVs) and a thin volume to the VG's
/// metadata. lvcreate cannot make thin pools without device-mapper; vgcfgrestore can.
fn add_thin(env: &LvmEnv, vg: &str, dir: &Path) {
    let f = dir.join("vg.txt");
    env.lvm("vgcfgbackup", &["-f", s(&f), vg]);
    let text = std::fs::read_to_string(&f).unwrap();
    let seg = |start: u64, n: u64, body: &str| {
        format!("segment_count = 1\nsegment1 {{\nstart_extent = {start}\nextent_count = {n}\n{body}\n}}\n")
    };
    let lv = |name: &str, id: &str, visible: bool, body: String| {
        let st = if visible {
            "[\"READ\", \"WRITE\", \"VISIBLE\"]"
        } else {
            "[\"READ\", \"WRITE\"]"
        };
        format!("{name} {{\nid = \"{id}\"\nstatus = {st}\nflags = []\n{body}}}\n")
    };
    let lvs = [
        lv(
            "pool",
            "Pool00-0000-0000-0000-0000-0000-000001",
            true,
            seg(0, 2, "type = \"thin-pool\"\nmetadata = \"pool_tmeta\"\npool = \"pool_tdata\"\ntransaction_id = 1\nchunk_size = 128\ndiscards = \"passdown\"\nzero_new_blocks = 0"),
        ),
        lv(
            "thin",
            "Thin00-0000-0000-0000-0000-0000-000002",
            true,
            seg(0, 4, "type = \"thin\"\nthin_pool = \"pool\"\ntransaction_id = 0\ndevice_id = 1"),
        ),
        lv(
            "pool_tmeta",
            "Tmeta0-0000-0000-0000-0000-0000-000003",
            false,
            seg(0, 1, "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv1\", 2]"),
        ),
        lv(
            "pool_tdata",
            "Tdata0-0000-0000-0000-0000-0000-000004",
            false,
            seg(0, 2, "type = \"striped\"\nstripe_count = 1\nstripes = [\"pv1\", 3]"),
        ),
    ]
    .concat();
    let at = text.find("logical_volumes {").unwrap() + "logical_volumes {".len();
    let new = format!("{}\n{lvs}{}", &text[..at], &text[at..]);
    std::fs::write(&f, new).unwrap();
    env.lvm("vgcfgrestore", &["--force", "-f", s(&f), vg]);
}

#[test]
fn lvm_linear_striped_and_thin_over_two_disks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    sparse(&a, 16 << 20);
    sparse(&b, 16 << 20);
    let mut env = LvmEnv::new();
    let la = env.attach(&a, &[]);
    let lb = env.attach(&b, &[]);
    let vg = env.vg_name("two");
    env.lvm("pvcreate", &["-q", &la, &lb]);
    env.lvm("vgcreate", &["-q", "-s", "1M", &vg, &la, &lb]);
    env.lvm(
        "lvcreate",
        &["-q", "-an", "-Zn", "-Wn", "-L", "4M", "-n", "lin", &vg, &la],
    );
    // A copy of b's metadata before the striped and thin LVs exist (older seqno).
    let b_old = dir.path().join("b-old.img");
    std::fs::copy(&b, &b_old).unwrap();
    env.lvm(
        "lvcreate",
        &[
            "-q", "-an", "-Zn", "-Wn", "-i2", "-I64k", "-L", "4M", "-n", "str", &vg,
        ],
    );
    add_thin(&env, &vg, dir.path());

    let pvs = env.report("pvs", "pv_name,pv_uuid,pe_start,pv_pe_count,vg_name", &[]);
    let vgs = env.report(
        "vgs",
        "vg_name,vg_uuid,vg_seqno,vg_extent_size,vg_extent_count,vg_free_count,pv_count,lv_count",
        &[&vg],
    );
    let lvs = env.report(
        "lvs",
        "lv_name,lv_uuid,lv_size,seg_start_pe,seg_size_pe,segtype,stripes,stripe_size,seg_pe_ranges,lv_role",
        &[&vg],
    );
    env.detach();
    let loop_to_disk = |l: &str| {
        if l == la {
            "/dev/sda"
        } else if l == lb {
            "/dev/sdb"
        } else {
            panic!("{l}")
        }
    };
    let pe_start: HashMap<String, u64> = pvs
        .iter()
        .map(|p| {
            (
                p["pv_name"].as_str().unwrap().to_string(),
                ju64(&p["pe_start"]),
            )
        })
        .collect();
    let file_of = |l: &str| if l == la { a.clone() } else { b.clone() };
    let lv_row = |name: &str| {
        lvs.iter()
            .find(|l| l["lv_name"] == name)
            .unwrap_or_else(|| panic!("lvs has no {name}"))
            .clone()
    };
    let mb = 1u64 << 20;

    // Data written where LVM says the extents are.
    let ext4 = mkfs(
        dir.path(),
        "lin.fs",
        4 * mb,
        &["mkfs.ext4", "-q", "-L", "linfs"],
    );
    let (dev, pe) = pe_range(lv_row("lin")["seg_pe_ranges"].as_str().unwrap());
    put(
        &file_of(&dev),
        pe_start[&dev] + pe * mb,
        &std::fs::read(&ext4).unwrap(),
    );
    let data = pattern(4 << 20, 7);
    let st = lv_row("str");
    let chunk = ju64(&st["stripe_size"]);
    assert_eq!(chunk, 64 << 10);
    let ranges: Vec<(String, u64)> = st["seg_pe_ranges"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(pe_range)
        .collect();
    assert_eq!(ranges.len(), 2);
    for (c, piece) in data.chunks(chunk as usize).enumerate() {
        let (dev, pe) = &ranges[c % 2];
        let off = pe_start[dev] + pe * mb + (c as u64 / 2) * chunk;
        put(&file_of(dev), off, piece);
    }

    let g = guest(&[&a, &b]);
    assert!(g.warnings().is_empty(), "{:?}", g.warnings());
    // pvs
    let ours = g.pvs();
    assert_eq!(ours.len(), 2);
    for p in &pvs {
        let name = loop_to_disk(p["pv_name"].as_str().unwrap());
        let o = ours.iter().find(|o| o.name == name).unwrap();
        assert_eq!(o.uuid, p["pv_uuid"].as_str().unwrap());
        assert_eq!(o.pe_start, ju64(&p["pe_start"]));
        assert_eq!(o.pe_count, ju64(&p["pv_pe_count"]));
        assert_eq!(o.vg_name.as_deref(), p["vg_name"].as_str());
        assert!(!o.missing);
        // blkid sees a PV with the same UUID, and list-filesystems leaves it out.
        let info = g.probe(name).unwrap();
        assert_eq!(info.kind, "LVM2_member");
        assert_blkid(
            name,
            &info,
            &blkid(if name == "/dev/sda" { &a } else { &b }, None),
        );
    }
    // vgs
    let v = &vgs[0];
    let ov = &g.vgs()[0];
    assert_eq!(ov.name, vg);
    assert_eq!(ov.uuid, v["vg_uuid"].as_str().unwrap());
    assert_eq!(ov.seqno, ju64(&v["vg_seqno"]));
    assert_eq!(ov.extent_size, ju64(&v["vg_extent_size"]));
    assert_eq!(ov.extent_count, ju64(&v["vg_extent_count"]));
    assert_eq!(ov.free_count, ju64(&v["vg_free_count"]));
    assert_eq!(ov.pv_count as u64, ju64(&v["pv_count"]));
    assert_eq!(ov.lv_count as u64, ju64(&v["lv_count"]));
    // lvs: the public ones (libguestfs leaves out the private pool and hidden LVs).
    let public: Vec<String> = lvs
        .iter()
        .filter(|l| l["lv_role"] == "public")
        .map(|l| format!("/dev/{vg}/{}", l["lv_name"].as_str().unwrap()))
        .collect();
    let ol = g.lvs();
    assert_eq!(
        ol.iter().map(|l| l.path.clone()).collect::<Vec<_>>(),
        public
    );
    for l in &ol {
        let w = lv_row(&l.name);
        assert_eq!(l.uuid, w["lv_uuid"].as_str().unwrap());
        assert_eq!(l.size, ju64(&w["lv_size"]), "{}", l.name);
        let seg = &l.segments[0];
        assert_eq!(seg.start_extent, ju64(&w["seg_start_pe"]));
        assert_eq!(seg.extent_count, ju64(&w["seg_size_pe"]));
        let segtype = w["segtype"].as_str().unwrap();
        assert_eq!(
            seg.segtype,
            if segtype == "linear" {
                "striped"
            } else {
                segtype
            }
        );
        if segtype != "thin" {
            assert_eq!(seg.stripes.len() as u64, ju64(&w["stripes"]));
            assert_eq!(seg.stripe_size, ju64(&w["stripe_size"]));
            let want: Vec<(String, u64)> = w["seg_pe_ranges"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(|r| {
                    let (d, pe) = pe_range(r);
                    (loop_to_disk(&d).to_string(), pe)
                })
                .collect();
            assert_eq!(seg.stripes, want);
        }
    }

    // The linear LV holds the ext4 image, the striped one the pattern.
    let lin = g.device(&format!("/dev/{vg}/lin")).unwrap();
    assert_eq!(lin.size(), 4 * mb);
    assert_eq!(read_dev(&lin, 0, 4 << 20), std::fs::read(&ext4).unwrap());
    let info = g.probe(&format!("/dev/mapper/{vg}-lin")).unwrap();
    assert_blkid("lin", &info, &blkid(&ext4, None));
    let sd = g.device(&format!("/dev/{vg}/str")).unwrap();
    assert_eq!(read_dev(&sd, 0, 4 << 20), data);
    for (off, len) in [
        (65436u64, 300usize),
        (3 * 65536 + 5, 200_000),
        ((4 << 20) - 10, 10),
    ] {
        assert_eq!(
            read_dev(&sd, off, len),
            data[off as usize..off as usize + len]
        );
    }
    let mut one = [0u8; 1];
    assert!(sd.read_at(&mut one, 4 << 20).is_err());
    assert_eq!(
        g.canonical_name(&format!("/dev/mapper/{vg}-str")).unwrap(),
        format!("/dev/{vg}/str")
    );

    // Thin pool and thin volume: Unsupported, the rest of the VG fine.
    match g.device(&format!("/dev/{vg}/thin")) {
        Err(Error::Unsupported(m)) => assert!(m.contains("thin"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("thin LV readable"),
    }
    match g.device(&format!("/dev/{vg}/pool")) {
        Err(Error::Unsupported(m)) => assert!(m.contains("thin pool"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("thin pool readable"),
    }
    assert!(ol
        .iter()
        .find(|l| l.name == "thin")
        .unwrap()
        .error
        .is_some());
    // Hidden sub-LVs are reachable by name (like /dev/VG/pool_tdata is not in libguestfs,
    // but reading them does no harm) and are plain linear volumes.
    assert!(g.device(&format!("/dev/{vg}/pool_tdata")).is_ok());

    let fss = g.filesystems();
    let names: Vec<&str> = fss.iter().map(|(n, _)| n.as_str()).collect();
    let (lin_p, str_p, thin_p) = (
        format!("/dev/{vg}/lin"),
        format!("/dev/{vg}/str"),
        format!("/dev/{vg}/thin"),
    );
    assert_eq!(names, [&lin_p, &str_p, &thin_p]);
    assert_eq!(fss[0].1.kind, "ext4");
    assert_eq!(fss[1].1.kind, "unknown");

    // A missing PV: the LVs on it fail clearly, the others still read.
    let g1 = guest(&[&a]);
    assert_eq!(
        read_dev(&g1.device(&lin_p).unwrap(), 0, 4096),
        get(&ext4, 0, 4096)
    );
    match g1.device(&str_p) {
        Err(Error::NotFound(m)) => assert!(m.contains("missing") && m.contains("pv1"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("striped LV readable without its second PV"),
    }
    assert_eq!(g1.vgs()[0].missing_pv_count, 1);
    assert!(g1.pvs().iter().any(|p| p.missing && p.name == "[unknown]"));

    // Stale metadata on one PV: the newest seqno wins, whatever the disk order.
    for order in [
        [a.as_path(), b_old.as_path()],
        [b_old.as_path(), a.as_path()],
    ] {
        let g2 = guest(&order);
        assert_eq!(g2.vgs()[0].seqno, ov.seqno);
        assert_eq!(g2.lvs().len(), ol.len());
    }
    // The old copy alone: only "lin" then.
    let g3 = guest(&[&b_old]);
    assert_eq!(g3.lvs().len(), 1);

    // A corrupt metadata area on one PV: the other PV's copy is used. The current text is
    // where the mda_header's first raw_locn says (LVM appends versions around the ring).
    let a_bad = dir.path().join("a-bad.img");
    std::fs::copy(&a, &a_bad).unwrap();
    let mda = get(&a_bad, 4096, 512);
    let text_at = u64::from_le_bytes(mda[40..48].try_into().unwrap());
    let meta_off = 4096 + text_at + 100;
    let mut byte = get(&a_bad, meta_off, 1);
    byte[0] ^= 0x55;
    put(&a_bad, meta_off, &byte);
    let g4 = guest(&[&a_bad, &b]);
    assert_eq!(g4.lvs().len(), ol.len());
    assert!(
        g4.warnings()
            .iter()
            .any(|w| w.starts_with("/dev/sda: ") && w.contains("checksum")),
        "{:?}",
        g4.warnings()
    );
    // With both corrupt (mda header checksum on b): no VG, warnings, no panic.
    let b_bad = dir.path().join("b-bad.img");
    std::fs::copy(&b, &b_bad).unwrap();
    put(&b_bad, 4096 + 8, b"garbage!");
    let g5 = guest(&[&a_bad, &b_bad]);
    assert!(g5.vgs().is_empty());
    assert_eq!(g5.warnings().len(), 2, "{:?}", g5.warnings());
    assert_eq!(g5.pvs().len(), 2, "PVs without a VG are still listed");
}

#[test]
fn gpt_lvm_disk_through_qcow2() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    sparse(&img, 24 << 20);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+2M",
            "-t",
            "1:8300",
            "-n",
            "2:0:+16M",
            "-t",
            "2:8e00",
            s(&img),
        ],
    );
    let (_, parts) = sfdisk_parts(&img);
    let p2 = ju64(&parts[&2]["start"]) * 512;
    let p2len = ju64(&parts[&2]["size"]) * 512;
    let mut env = LvmEnv::new();
    let l = env.attach(
        &img,
        &["-o", &p2.to_string(), "--sizelimit", &p2len.to_string()],
    );
    let vg = env.vg_name("q");
    env.lvm("pvcreate", &["-q", &l]);
    env.lvm("vgcreate", &["-q", "-s", "1M", &vg, &l]);
    env.lvm(
        "lvcreate",
        &["-q", "-an", "-Zn", "-Wn", "-L", "4M", "-n", "data", &vg],
    );
    let pvs = env.report("pvs", "pe_start", &[]);
    let lvs = env.report("lvs", "seg_pe_ranges", &[&vg]);
    env.detach();
    let (_, pe) = pe_range(lvs[0]["seg_pe_ranges"].as_str().unwrap());
    let ext4 = mkfs(
        dir.path(),
        "data.fs",
        4 << 20,
        &["mkfs.ext4", "-q", "-L", "qdata"],
    );
    put(
        &img,
        p2 + ju64(&pvs[0]["pe_start"]) + pe * (1 << 20),
        &std::fs::read(&ext4).unwrap(),
    );
    let q = dir.path().join("disk.qcow2");
    run("qemu-img", &["convert", "-O", "qcow2", s(&img), s(&q)]);

    for fmt in [Some(virtkit_image::Format::Qcow2), None] {
        let g = Guest::open(&[(q.clone(), fmt)]).unwrap();
        assert_eq!(g.partitions().len(), 2);
        assert_eq!(g.pvs()[0].name, "/dev/sda2");
        let lv = format!("/dev/{vg}/data");
        assert_eq!(
            read_dev(&g.device(&lv).unwrap(), 0, 4 << 20),
            std::fs::read(&ext4).unwrap()
        );
        let fss = g.filesystems();
        let names: Vec<&str> = fss.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["/dev/sda1", lv.as_str()]);
        assert_blkid(&lv, &fss[1].1, &blkid(&ext4, None));
    }
}

#[test]
fn gpt_with_4096_byte_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("4k.img");
    sparse(&img, 16 << 20);
    let mut env = LvmEnv::new();
    let l = env.attach(&img, &["-b", "4096"]);
    run(
        "sgdisk",
        &["-o", "-n", "1:0:+4M", "-t", "1:8300", "-c", "1:four", &l],
    );
    let (ss, printed) = sgdisk_print(&l);
    env.detach();
    assert_eq!(ss, 4096);
    let g = guest(&[&img]);
    let t = g.part_table("/dev/sda").unwrap().unwrap();
    assert_eq!((t.kind, t.sector_size), (TableKind::Gpt, 4096));
    let p = &g.partitions()[0];
    assert_eq!(
        (p.part.start, p.part.end + 1),
        (printed[0].1 * 4096, (printed[0].2 + 1) * 4096)
    );
    assert_eq!(p.part.gpt_name.as_deref(), Some("four"));
}

/// A LUKS header as cryptsetup lays it out (only the fields blkid reads).
fn luks_header(version: u16, label: &str, uuid: &str) -> Vec<u8> {
    let mut h = vec![0u8; 4096];
    h[0..6].copy_from_slice(b"LUKS\xba\xbe");
    h[6..8].copy_from_slice(&version.to_be_bytes());
    if version == 1 {
        h[8..11].copy_from_slice(b"aes");
        h[40..43].copy_from_slice(b"xts");
        h[72..78].copy_from_slice(b"sha256");
    } else {
        h[8..16].copy_from_slice(&16384u64.to_be_bytes());
        h[24..24 + label.len()].copy_from_slice(label.as_bytes());
        h[72..78].copy_from_slice(b"sha256");
    }
    h[168..168 + uuid.len()].copy_from_slice(uuid.as_bytes());
    h
}

#[test]
fn probe_matches_blkid_on_whole_disk_filesystems() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mb = 1u64 << 20;
    let mut imgs = vec![
        mkfs(d, "ext2", 4 * mb, &["mkfs.ext2", "-q", "-L", "e2lab"]),
        mkfs(d, "ext3", 8 * mb, &["mkfs.ext3", "-q", "-L", "e3lab"]),
        mkfs(
            d,
            "ext4",
            8 * mb,
            &[
                "mkfs.ext4",
                "-q",
                "-L",
                "e4lab",
                "-U",
                "0b5a1b2e-7c1d-4f00-8a2b-123456789abc",
            ],
        ),
        mkfs(
            d,
            "ext4nj",
            4 * mb,
            &["mkfs.ext4", "-q", "-O", "^has_journal"],
        ),
        mkfs(d, "xfs", 300 * mb, &["mkfs.xfs", "-q", "-L", "xlab"]),
        mkfs(
            d,
            "fat12",
            4 * mb,
            &["mkfs.vfat", "-n", "F12LAB", "-i", "1234abcd"],
        ),
        mkfs(d, "fat16", 20 * mb, &["mkfs.vfat", "-F", "16", "-n", "F16"]),
        mkfs(
            d,
            "fat32",
            40 * mb,
            &["mkfs.vfat", "-F", "32", "-n", "BIG32"],
        ),
        mkfs(d, "fatnolab", 4 * mb, &["mkfs.vfat"]),
        mkfs(d, "btrfs", 128 * mb, &["mkfs.btrfs", "-q", "-L", "blab"]),
        mkfs(
            d,
            "ntfs",
            16 * mb,
            &["mkfs.ntfs", "-q", "-F", "-f", "-L", "nlab"],
        ),
        mkfs(d, "swap", 2 * mb, &["mkswap", "-q", "-L", "slab"]),
        mkfs(d, "swapnolab", 2 * mb, &["mkswap", "-q"]),
    ];
    let src = d.join("isosrc");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let iso = d.join("iso");
    run(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "MY_ISO",
            "-J",
            "-R",
            "-o",
            s(&iso),
            s(&src),
        ],
    );
    imgs.push(iso);
    let zero = d.join("zero");
    sparse(&zero, mb);
    imgs.push(zero);
    let luks1 = d.join("luks1");
    sparse(&luks1, mb);
    put(
        &luks1,
        0,
        &luks_header(1, "", "8f1d3c2a-1111-4222-8333-944455556666"),
    );
    let luks2 = d.join("luks2");
    sparse(&luks2, mb);
    put(
        &luks2,
        0,
        &luks_header(2, "cryptlab", "0c8e2b1a-aaaa-4bbb-8ccc-dddd00001111"),
    );
    imgs.push(luks1);
    imgs.push(luks2);

    let mut kinds = Vec::new();
    for img in &imgs {
        let b = blkid(img, None);
        let g = guest(&[img]);
        assert!(g.partitions().is_empty(), "{}: no table", img.display());
        let info = g.probe("/dev/sda").unwrap();
        assert_blkid(&img.display().to_string(), &info, &b);
        let fss = g.filesystems();
        if info.kind == "crypto_LUKS" {
            assert!(fss.is_empty(), "LUKS containers are left out");
        } else {
            assert_eq!(fss, [("/dev/sda".to_string(), info.clone())]);
        }
        kinds.push(info.kind);
    }
    // Every kind was really recognised (a test that always says "unknown" cannot pass).
    for k in [
        "ext2",
        "ext3",
        "ext4",
        "xfs",
        "vfat",
        "btrfs",
        "ntfs",
        "swap",
        "iso9660",
        "unknown",
        "crypto_LUKS",
    ] {
        assert!(kinds.iter().any(|x| x == k), "{k} not seen: {kinds:?}");
    }
}

/// Hostile tables: an EBR chain that loops, a GPT claiming 2^32 entries, partitions past
/// the end of the disk. Errors or warnings, never a panic or a hang.
#[test]
fn hostile_partition_tables() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("mbr.img");
    sparse(&img, 8 << 20);
    let script = "label: dos\nstart=2048, size=2048, type=83\nstart=4096, size=8192, type=5\n\
                  start=6144, size=1024, type=83\nstart=10240, size=1024, type=83\n";
    let mut c = Command::new("sfdisk")
        .args(["-q", s(&img)])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
    let g = guest(&[&img]);
    assert_eq!(g.partitions().len(), 4);
    // The second EBR links back to the first one (relative start 0, type 5).
    let ebr2 = {
        let d = std::fs::read(&img).unwrap();
        let first = 4096 * 512 + 446 + 16;
        u32::from_le_bytes(d[first + 8..first + 12].try_into().unwrap()) as u64 + 4096
    };
    let mut link = [0u8; 16];
    link[4] = 5;
    link[12..16].copy_from_slice(&100u32.to_le_bytes());
    put(&img, ebr2 * 512 + 446 + 16, &link);
    let g = guest(&[&img]);
    assert_eq!(g.partitions().len(), 4);
    assert!(
        g.warnings().iter().any(|w| w.contains("loops")),
        "{:?}",
        g.warnings()
    );
    // Partition 1 claims 2^32-1 sectors: listed, but its device is an error.
    put(&img, 446 + 12, &u32::MAX.to_le_bytes());
    let g = guest(&[&img]);
    let p1 = &g.partitions()[0];
    assert!(p1.error.is_some());
    assert!(matches!(g.device("/dev/sda1"), Err(Error::Corrupt(_))));

    // A GPT whose primary header claims 2^32-1 entries (CRC fixed up): the backup is used.
    let gimg = dir.path().join("gpt.img");
    make_gpt(&gimg);
    let mut h = get(&gimg, 512, 92);
    h[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
    h[16..20].fill(0);
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    put(&gimg, 512, &h);
    let g = guest(&[&gimg]);
    let t = g.part_table("/dev/sda").unwrap().unwrap();
    assert!(t.used_backup);
    assert_eq!(g.partitions().len(), 3);
}

/// zlib's CRC32, for fixing up headers in hostile tests.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
