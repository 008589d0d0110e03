//! virt-filesystems: list filesystems, partitions, block devices and LVM objects, with
//! libguestfs' columns, column layout and CSV.

use super::fmt::{csv_field, human};
use super::{parse, Common, COMMON_LONG};
use crate::getopt::{Opt, Spec};

const USAGE: &str = "virt-filesystems: list filesystems, partitions, block devices,
LVM in a virtual machine or disk image
Usage:
  virt-filesystems [--options] -d domname
  virt-filesystems [--options] -a disk.img [-a disk.img ...]
Options:
  -a|--add image       Add image
  --all                Display everything
  --blkdevs|--block-devices
                       Display block devices
  --csv                Output as Comma-Separated Values
  --extra              Display swap and data filesystems
  --filesystems        Display mountable filesystems
  --format[=raw|..]    Force disk format for -a option
  -h|--human-readable  Human-readable sizes in --long output
  --help               Display brief help
  -l|--long            Long output
  --lvs|--logvols|--logical-volumes
                       Display LVM logical volumes
  --no-title           No title in --long output
  --parts|--partitions Display partitions
  --pvs|--physvols|--physical-volumes
                       Display LVM physical volumes
  --uuid|--uuids       Add UUIDs to --long output
  --vgs|--volgroups|--volume-groups
                       Display LVM volume groups
  -V|--version         Display version and exit
For more information, see the manpage virt-filesystems(1).
";

const O_FS: u32 = 1;
const O_FS_EXTRA: u32 = 2;
const O_PARTS: u32 = 4;
const O_BLKDEVS: u32 = 8;
const O_LVS: u32 = 16;
const O_VGS: u32 = 32;
const O_PVS: u32 = 64;
const O_ALL: u32 = 127;

const C_NAME: usize = 0;
const C_TYPE: usize = 1;
const C_VFS_TYPE: usize = 2;
const C_VFS_LABEL: usize = 3;
const C_MBR: usize = 4;
const C_SIZE: usize = 5;
const C_PARENTS: usize = 6;
const C_UUID: usize = 7;
const NCOLS: usize = 8;

type Row = [Option<String>; NCOLS];

pub fn run(prog: &str, args: &[String]) -> Result<i32, String> {
    let long: &'static [(&'static str, bool)] = Box::leak(
        [
            COMMON_LONG,
            &[
                ("all", false),
                ("blkdevs", false),
                ("block-devices", false),
                ("csv", false),
                ("extra", false),
                ("filesystems", false),
                ("human-readable", false),
                ("logical-volumes", false),
                ("logvols", false),
                ("long", false),
                ("lvs", false),
                ("no-title", false),
                ("parts", false),
                ("partitions", false),
                ("physical-volumes", false),
                ("physvols", false),
                ("pvs", false),
                ("uuid", false),
                ("uuids", false),
                ("vgs", false),
                ("volgroups", false),
                ("volume-groups", false),
            ][..],
        ]
        .concat()
        .into_boxed_slice(),
    );
    let spec = Spec {
        short: "a:c:d:hlvVx",
        long,
    };
    let mut c = Common::default();
    let (mut csv, mut hum, mut long_mode, mut no_title, mut uuid) =
        (false, false, false, false, false);
    let mut output = 0u32;
    let Some(rest) = parse(prog, &spec, args, &mut c, USAGE, &mut |o| {
        match o {
            Opt::Long("all", _) => output = O_ALL,
            Opt::Long("blkdevs" | "block-devices", _) => output |= O_BLKDEVS,
            Opt::Long("csv", _) => csv = true,
            Opt::Long("extra", _) => output |= O_FS | O_FS_EXTRA,
            Opt::Long("filesystems", _) => output |= O_FS,
            Opt::Long("logical-volumes" | "logvols" | "lvs", _) => output |= O_LVS,
            Opt::Long("no-title", _) => no_title = true,
            Opt::Long("parts" | "partitions", _) => output |= O_PARTS,
            Opt::Long("physical-volumes" | "physvols" | "pvs", _) => output |= O_PVS,
            Opt::Long("uuid" | "uuids", _) => uuid = true,
            Opt::Long("vgs" | "volgroups" | "volume-groups", _) => output |= O_VGS,
            Opt::Short('h', _) | Opt::Long("human-readable", _) => hum = true,
            Opt::Short('l', _) | Opt::Long("long", _) => long_mode = true,
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(0);
    };
    if !rest.is_empty() {
        return Err(format!(
            "{prog}: error: extra argument ‘{}’ on the command line.\nMake sure to specify the argument for --format like '--format=%s'.",
            rest[0]
        ));
    }
    if hum && csv {
        return Err(format!(
            "{prog}: you cannot use -h and --csv options together."
        ));
    }
    c.need_drives(prog)?;
    if output == 0 {
        output = O_FS;
    }
    let mut cols = [false; NCOLS];
    cols[C_NAME] = true;
    if long_mode {
        cols[C_TYPE] = true;
        cols[C_SIZE] = true;
        if output & O_FS != 0 {
            cols[C_VFS_TYPE] = true;
            cols[C_VFS_LABEL] = true;
        }
        cols[C_PARENTS] = true;
        if output & O_PARTS != 0 {
            cols[C_MBR] = true;
        }
        if uuid {
            cols[C_UUID] = true;
        }
    }
    let g = c.launch()?;
    let size = |n: u64| {
        if hum {
            human(n, 1)
        } else {
            n.to_string()
        }
    };
    let mut rows: Vec<Row> = Vec::new();
    if long_mode && !no_title {
        let mut r: Row = Default::default();
        for (i, t) in [
            "Name", "Type", "VFS", "Label", "MBR", "Size", "Parent", "UUID",
        ]
        .iter()
        .enumerate()
        {
            r[i] = Some(t.to_string());
        }
        rows.push(r);
    }
    let mk = |name: String, kind: &str| -> Row {
        let mut r: Row = Default::default();
        r[C_NAME] = Some(name);
        r[C_TYPE] = Some(kind.to_string());
        r
    };
    if output & O_FS != 0 {
        for (dev, info) in g.filesystems() {
            if output & O_FS_EXTRA == 0 && matches!(info.kind.as_str(), "swap" | "unknown") {
                continue;
            }
            let mut r = mk(dev.clone(), "filesystem");
            r[C_VFS_TYPE] = Some(info.kind.clone());
            r[C_VFS_LABEL] = Some(info.label.clone().unwrap_or_default());
            r[C_UUID] = Some(info.uuid.clone().unwrap_or_default());
            if cols[C_SIZE] {
                // The filesystem's own size when it can be read, else the device's.
                let n = g
                    .open_fs(&dev)
                    .and_then(|fs| fs.statfs())
                    .map(|s| s.blocks * s.bsize)
                    .or_else(|_| g.device(&dev).map(|d| d.size()));
                r[C_SIZE] = n.ok().map(size);
            }
            r[C_PARENTS] = Some(String::new());
            rows.push(r);
        }
    }
    // LVM UUIDs as libguestfs shows them: the 32 characters without LVM's dashes.
    let lvm_uuid = |u: &str| u.replace('-', "");
    if output & O_LVS != 0 {
        for lv in g.lvs() {
            let mut r = mk(lv.path.clone(), "lv");
            r[C_SIZE] = Some(size(lv.size));
            r[C_UUID] = Some(lvm_uuid(&lv.uuid));
            r[C_PARENTS] = Some(format!("/dev/{}", lv.vg_name));
            rows.push(r);
        }
    }
    if output & O_VGS != 0 {
        let pvs = g.pvs();
        for vg in g.vgs() {
            let mut r = mk(format!("/dev/{}", vg.name), "vg");
            r[C_SIZE] = Some(size(vg.extent_size.saturating_mul(vg.extent_count)));
            r[C_UUID] = Some(lvm_uuid(&vg.uuid));
            let parents: Vec<String> = pvs
                .iter()
                .filter(|p| p.vg_name.as_deref() == Some(vg.name.as_str()))
                .map(|p| p.name.clone())
                .collect();
            r[C_PARENTS] = Some(parents.join(","));
            rows.push(r);
        }
    }
    if output & O_PVS != 0 {
        for pv in g.pvs() {
            let mut r = mk(pv.name.clone(), "pv");
            r[C_SIZE] = Some(size(pv.dev_size));
            r[C_UUID] = Some(lvm_uuid(&pv.uuid));
            r[C_PARENTS] = Some(String::new());
            rows.push(r);
        }
    }
    if output & O_PARTS != 0 {
        for p in g.partitions() {
            let mut r = mk(p.name.clone(), "partition");
            r[C_SIZE] = Some(size(p.part.size));
            r[C_MBR] = p.part.mbr_id.map(|id| format!("{id:02x}"));
            r[C_PARENTS] = Some(p.device.clone());
            rows.push(r);
        }
    }
    if output & O_BLKDEVS != 0 {
        for d in g.devices() {
            let mut r = mk(d.clone(), "device");
            r[C_SIZE] = g.device(&d).ok().map(|x| size(x.size()));
            r[C_PARENTS] = Some(String::new());
            rows.push(r);
        }
    }
    print!("{}", render(&rows, &cols, csv));
    Ok(0)
}

/// filesystems.c's do_output_end: columns padded to their widest cell, two spaces apart
/// (one when that would pass 72 columns), empty cells as "-"; CSV fields quoted.
fn render(rows: &[Row], cols: &[bool; NCOLS], csv: bool) -> String {
    let mut out = String::new();
    if csv {
        for r in rows {
            let v: Vec<String> = (0..NCOLS)
                .filter(|&i| cols[i])
                .map(|i| r[i].as_deref().map(csv_field).unwrap_or_default())
                .collect();
            out.push_str(&v.join(","));
            out.push('\n');
        }
        return out;
    }
    let mut width = [0usize; NCOLS];
    for r in rows {
        for i in 0..NCOLS {
            if cols[i] {
                let w = match r[i].as_deref() {
                    None | Some("") => 1,
                    Some(s) => s.chars().count(),
                };
                width[i] = width[i].max(w);
            }
        }
    }
    let total: usize = width.iter().map(|w| w + 2).sum();
    let gap = if total > 72 { 1 } else { 2 };
    for r in rows {
        let mut pad = 0;
        for i in 0..NCOLS {
            if width[i] == 0 {
                continue;
            }
            out.push_str(&" ".repeat(pad));
            let cell = match r[i].as_deref() {
                None | Some("") => "-",
                Some(s) => s,
            };
            out.push_str(cell);
            pad = width[i] - cell.chars().count() + gap;
        }
        out.push('\n');
    }
    out
}
