//! qemu-img info

use super::{has_long, opt_last, output_json, parse_format, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use crate::qjson::{self, Dict, V};
use virtkit_image::info::{ImageInfo, SnapshotInfo};
use virtkit_image::size::human;
use virtkit_image::BlockDriver;

const SPEC: Spec = Spec {
    short: "f:hU",
    long: &[
        ("object", true),
        ("image-opts", false),
        ("output", true),
        ("backing-chain", false),
        ("force-share", false),
        ("limits", false),
        ("help", false),
    ],
};

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{}", super::HELP);
        return Ok(0);
    }
    let json = output_json(&a)?;
    let fmt = opt_last(&a, 'f').map(|f| parse_format(&f)).transpose()?;
    let chain = has_long(&a, "backing-chain");
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    let img = super::open_image(ctx, file, fmt, false)?;
    let mut infos = Vec::new();
    let mut layer: Option<&dyn BlockDriver> = Some(img.as_ref());
    while let Some(l) = layer {
        infos.push(
            l.info()
                .map_err(|e| Fail::new(format!("{file}: {}", super::emsg(&e))))?,
        );
        if !chain {
            break;
        }
        layer = l.backing();
    }
    if json {
        let v = if chain {
            V::List(infos.iter().map(|i| V::Dict(info_dict(i))).collect())
        } else {
            V::Dict(info_dict(&infos[0]))
        };
        println!("{}", qjson::to_string(&v));
    } else {
        for (i, info) in infos.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", human_info(info));
        }
    }
    Ok(0)
}

pub fn snapshot_dict(s: &SnapshotInfo) -> Dict {
    let mut d = Dict::new();
    d.str("id", &s.id)
        .str("name", &s.name)
        .int("vm-state-size", s.vm_state_size)
        .int("date-sec", s.date_sec)
        .int("date-nsec", s.date_nsec)
        .int("vm-clock-sec", s.vm_clock_nsec / 1_000_000_000)
        .int("vm-clock-nsec", s.vm_clock_nsec % 1_000_000_000);
    if let Some(ic) = s.icount {
        d.int("icount", ic);
    }
    d
}

fn vmdk_specific(v: &virtkit_image::info::VmdkInfo) -> Dict {
    let mut data = Dict::new();
    // Inserted in QAPI field order (ImageInfoSpecificVmdk, VmdkExtentInfo).
    data.str("create-type", &v.create_type)
        .int("cid", v.cid)
        .int("parent-cid", v.parent_cid);
    let l = v
        .extents
        .iter()
        .map(|e| {
            let mut d = Dict::new();
            d.str("filename", &e.filename)
                .str("format", &e.format)
                .int("virtual-size", e.virtual_size);
            if let Some(cs) = e.cluster_size {
                d.int("cluster-size", cs);
            }
            if e.compressed {
                d.bool("compressed", true);
            }
            V::Dict(d)
        })
        .collect();
    data.put("extents", V::List(l));
    let mut d = Dict::new();
    d.str("type", "vmdk").put("data", V::Dict(data));
    d
}

fn format_specific(info: &ImageInfo) -> Option<Dict> {
    if let Some(v) = &info.vmdk {
        return Some(vmdk_specific(v));
    }
    let q = info.qcow2.as_ref()?;
    let mut data = Dict::new();
    data.str("compat", q.compat);
    if q.compat != "0.10" {
        data.bool("extended-l2", q.extended_l2)
            .bool("lazy-refcounts", q.lazy_refcounts)
            .bool("corrupt", q.corrupt);
    }
    data.int("refcount-bits", q.refcount_bits);
    if !q.bitmaps.is_empty() {
        let l = q
            .bitmaps
            .iter()
            .map(|b| {
                let mut d = Dict::new();
                d.put(
                    "flags",
                    V::List(b.flags.iter().map(|f| V::Str(f.to_string())).collect()),
                )
                .str("name", &b.name)
                .int("granularity", b.granularity);
                V::Dict(d)
            })
            .collect();
        data.put("bitmaps", V::List(l));
    }
    data.str("compression-type", q.compression_type);
    let mut d = Dict::new();
    d.str("type", "qcow2").put("data", V::Dict(data));
    Some(d)
}

pub fn info_dict(info: &ImageInfo) -> Dict {
    let mut d = Dict::new();
    d.str("filename", &info.filename).str("format", info.format);
    if !info.no_driver_info {
        d.bool("dirty-flag", info.dirty);
    }
    d.int("actual-size", info.actual_size)
        .int("virtual-size", info.virtual_size);
    if let Some(cs) = info.cluster_size {
        d.int("cluster-size", cs);
    }
    if let Some(b) = &info.backing_filename {
        d.str("backing-filename", b);
        if let Some(f) = &info.full_backing_filename {
            d.str("full-backing-filename", f);
        }
        if let Some(f) = &info.backing_format {
            d.str("backing-filename-format", f);
        }
    }
    if !info.snapshots.is_empty() {
        d.put(
            "snapshots",
            V::List(
                info.snapshots
                    .iter()
                    .map(|s| V::Dict(snapshot_dict(s)))
                    .collect(),
            ),
        );
    }
    if let Some(fs) = format_specific(info) {
        d.put("format-specific", V::Dict(fs));
    }
    let node = |name: &str, filename: &str, actual: u64, length: u64| {
        let mut file = Dict::new();
        let mut fs = Dict::new();
        fs.str("type", "file").put("data", V::Dict(Dict::new()));
        file.str("filename", filename)
            .str("format", "file")
            .bool("dirty-flag", false)
            .int("actual-size", actual)
            .int("virtual-size", length)
            .put("format-specific", V::Dict(fs))
            .put("children", V::List(Vec::new()));
        let mut child = Dict::new();
        child.str("name", name).put("info", V::Dict(file));
        V::Dict(child)
    };
    // The file child's own size: the image's total minus the other children.
    let others: u64 = info.children.iter().map(|c| c.actual_size).sum();
    let mut children: Vec<V> = info
        .children
        .iter()
        .map(|c| node(&c.name, &c.filename, c.actual_size, c.file_length))
        .collect();
    children.push(node(
        "file",
        &info.filename,
        info.actual_size.saturating_sub(others),
        info.file_length,
    ));
    d.put("children", V::List(children));
    d
}

/// QEMU's localtime "%Y-%m-%d %H:%M:%S".
pub fn local_date(sec: u64) -> String {
    let t = sec as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we own; both pointers are valid.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

pub fn snapshot_table(snaps: &[SnapshotInfo]) -> String {
    let mut s = format!(
        "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
        "ID", "TAG", "VM_SIZE", "DATE", "VM_CLOCK", "ICOUNT"
    );
    for sn in snaps {
        let ns = sn.vm_clock_nsec;
        let secs = ns / 1_000_000_000;
        let clock = format!(
            "{:04}:{:02}:{:02}.{:03}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60,
            (ns / 1_000_000) % 1000
        );
        let icount = sn.icount.map(|i| i.to_string()).unwrap_or_default();
        s += &format!(
            "{:<7} {:<16} {:>8} {:>19} {:>15} {:>10}\n",
            sn.id,
            sn.name,
            human(sn.vm_state_size),
            local_date(sn.date_sec),
            clock,
            icount
        );
    }
    s
}

fn dump(v: &V, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        V::Dict(d) => {
            for (k, e) in d.ordered() {
                let key = k.replace('-', " ");
                match e {
                    V::Dict(_) | V::List(_) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        dump(e, indent + 4, out);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(e))),
                }
            }
        }
        V::List(l) => {
            for (i, e) in l.iter().enumerate() {
                match e {
                    V::Dict(_) | V::List(_) => {
                        out.push_str(&format!("{pad}[{i}]:\n"));
                        dump(e, indent + 4, out);
                    }
                    _ => out.push_str(&format!("{pad}[{i}]: {}\n", scalar(e))),
                }
            }
        }
        e => out.push_str(&format!("{pad}{}\n", scalar(e))),
    }
}

fn scalar(v: &V) -> String {
    match v {
        V::Int(i) => i.to_string(),
        V::Bool(b) => b.to_string(),
        V::Str(s) => s.clone(),
        _ => String::new(),
    }
}

pub fn human_info(info: &ImageInfo) -> String {
    let mut s = format!(
        "image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n",
        info.filename,
        info.format,
        human(info.virtual_size),
        info.virtual_size,
        human(info.actual_size)
    );
    if let Some(cs) = info.cluster_size {
        s += &format!("cluster_size: {cs}\n");
    }
    if info.dirty {
        s += "cleanly shut down: no\n";
    }
    if let Some(b) = &info.backing_filename {
        s += &format!("backing file: {b}");
        if let Some(full) = &info.full_backing_filename {
            if full != b {
                s += &format!(" (actual path: {full})");
            }
        }
        s += "\n";
    }
    if let Some(f) = &info.backing_format {
        s += &format!("backing file format: {f}\n");
    }
    if !info.snapshots.is_empty() {
        s += "Snapshot list:\n";
        s += &snapshot_table(&info.snapshots);
    }
    if let Some(fs) = format_specific(info) {
        s += "Format specific information:\n";
        if let Some((_, data)) = fs.ordered().into_iter().find(|(k, _)| k == "data") {
            dump(data, 4, &mut s);
        }
    }
    let node = |name: &str, filename: &str, length: u64, actual: u64| {
        format!(
            "Child node '/{name}':\n    filename: {filename}\n    protocol type: file\n    file length: {} ({length} bytes)\n    disk size: {}\n",
            human(length),
            human(actual)
        )
    };
    let others: u64 = info.children.iter().map(|c| c.actual_size).sum();
    for c in &info.children {
        s += &node(&c.name, &c.filename, c.file_length, c.actual_size);
    }
    s += &node(
        "file",
        &info.filename,
        info.file_length,
        info.actual_size.saturating_sub(others),
    );
    s
}
