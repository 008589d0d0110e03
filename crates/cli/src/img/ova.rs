//! `virtkit img ova-import` / `ova-export`: OVF packages (no qemu-img equivalent; the flags
//! follow qemu-img's conventions: -O output format, -o options, -p progress, -q quiet).

use super::convert::Progress;
use super::{
    has_flag, has_long, long_value, opt_last, opt_values, output_json, parse_format, parse_o,
    wants_help, Ctx, Fail, R,
};
use crate::getopt::Spec;
use std::path::{Path, PathBuf};
use virtkit_image::size::human;
use virtkit_image::Format;
use virtkit_ovf::manifest::Algo;

const IMPORT_SPEC: Spec = Spec {
    short: "hO:o:m:pq",
    long: &[("help", false), ("output", true)],
};

const EXPORT_SPEC: Spec = Spec {
    short: "hf:m:pq",
    long: &[
        ("help", false),
        ("name", true),
        ("cpus", true),
        ("memory", true),
        ("sha256", false),
    ],
};

const IMPORT_HELP: &str = "\
usage: virtkit img ova-import [-O output_fmt] [-o options] [-m num_threads] [-p] [-q]
                              [--output=human|json] FILE.ova [DIR]

Unpacks an OVA package, verifies its manifest (SHA1/SHA256/SHA512), reads the OVF
descriptor (disks, capacities, CPUs, memory) and converts every disk into DIR
(default: the current directory) as an image of output_fmt (default: qcow2).
";

const EXPORT_HELP: &str = "\
usage: virtkit img ova-export [-f fmt] [--name NAME] [--cpus N] [--memory MiB] [--sha256]
                              [-m num_threads] [-p] [-q] DISK [DISK...] OUT.ova

Packs the disks (any format virtkit reads) into an OVA: an OVF 1.0 descriptor, the disks
as streamOptimized VMDK and a manifest (SHA1, or SHA256 with --sha256), the layout
VirtualBox's and VMware's OVF import read.
";

fn threads(a: &crate::getopt::Parsed) -> R<usize> {
    match opt_last(a, 'm') {
        None => Ok(8),
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=16).contains(&n) => Ok(n),
            _ => Err(Fail::new(
                "Invalid number of threads (-m): allowed values are 1 to 16",
            )),
        },
    }
}

fn ovf_err(file: &str, e: virtkit_ovf::Error) -> Fail {
    let m = match &e {
        virtkit_ovf::Error::Image(ie) => super::emsg(ie),
        virtkit_ovf::Error::Io(io) => super::emsg(&virtkit_image::Error::Io(std::io::Error::new(
            io.kind(),
            io.to_string(),
        ))),
        other => other.to_string(),
    };
    Fail::new(format!("{}: {}", super::show(file), super::show(&m)))
}

pub fn import(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&IMPORT_SPEC, args)?;
    if wants_help(&a) {
        print!("{IMPORT_HELP}");
        return Ok(0);
    }
    let json = output_json(&a)?;
    let fmt = parse_format(opt_last(&a, 'O').as_deref().unwrap_or("qcow2"))?;
    let quiet = has_flag(&a, 'q');
    let progress = has_flag(&a, 'p') && !quiet;
    let opts = parse_o(&opt_values(&a, 'o'))?;
    let (ova, dir) = match a.args.as_slice() {
        [ova] => (ova.clone(), PathBuf::from(".")),
        [ova, dir] => (ova.clone(), PathBuf::from(dir)),
        [] => return Err(Fail::new("Expecting an OVA file name")),
        _ => return Err(Fail::new(format!("Unexpected argument: {}", a.args[2]))),
    };
    let o = virtkit_ovf::import::ImportOptions {
        format: fmt,
        create_opts: opts,
        dest_dir: dir,
        threads: threads(&a)?,
    };
    let bar = Progress::new(ctx, progress);
    let r = virtkit_ovf::import::import(Path::new(&ova), &o, &|d, t| bar.update(d, t));
    bar.finish();
    let rep = r.map_err(|e| ovf_err(&ova, e))?;
    let sys = rep.envelope.systems.first();
    let name = sys
        .and_then(|s| s.name.clone().or_else(|| Some(s.id.clone())))
        .unwrap_or_default();
    if json {
        let disks: Vec<serde_json::Value> = rep
            .disks
            .iter()
            .map(|d| {
                serde_json::json!({
                    "disk-id": d.disk_id,
                    "file": d.href,
                    "format": d.source_format.name(),
                    "virtual-size": d.capacity,
                    "output": d.output.to_string_lossy(),
                    "output-format": fmt.name(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "name": name,
            "descriptor": rep.descriptor,
            "ovf-version": rep.envelope.version,
            "manifest": rep.manifest.map(|m| m.name()),
            "cpus": sys.and_then(|s| s.cpus),
            "memory": sys.and_then(|s| s.memory_bytes),
            "os": sys.and_then(|s| s.os_description.clone()),
            "networks": sys.map(|s| s.networks.clone()).unwrap_or_default(),
            "disks": disks,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into())
        );
        return Ok(0);
    }
    if rep.manifest.is_none() {
        eprintln!(
            "{}: warning: {}: the package has no manifest; its contents were not verified",
            ctx.prog,
            super::show(&ova)
        );
    }
    if quiet {
        return Ok(0);
    }
    println!(
        "Imported '{}' from {} (OVF {}{})",
        super::show(&name),
        super::show(&ova),
        rep.envelope.version.as_deref().unwrap_or("1.x"),
        match rep.manifest {
            Some(m) => format!(", manifest {} verified", m.name()),
            None => String::new(),
        }
    );
    if let Some(s) = sys {
        if let Some(os) = &s.os_description {
            println!("  OS:     {}", super::show(os));
        }
        if let Some(c) = s.cpus {
            println!("  CPUs:   {c}");
        }
        if let Some(m) = s.memory_bytes {
            println!("  Memory: {} MiB", m >> 20);
        }
    }
    for d in &rep.disks {
        println!(
            "  Disk {}: {} ({}, {}) -> {}",
            super::show(&d.disk_id),
            if d.href.is_empty() {
                "(blank)".to_string()
            } else {
                super::show(&d.href)
            },
            d.source_format.name(),
            human(d.capacity),
            super::show(&d.output.to_string_lossy())
        );
    }
    Ok(0)
}

pub fn export(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&EXPORT_SPEC, args)?;
    if wants_help(&a) {
        print!("{EXPORT_HELP}");
        return Ok(0);
    }
    let src_fmt = opt_last(&a, 'f').map(|f| parse_format(&f)).transpose()?;
    let quiet = has_flag(&a, 'q');
    let progress = has_flag(&a, 'p') && !quiet;
    if a.args.len() < 2 {
        return Err(Fail::new(
            "Expecting one or more disk images and the OVA file name",
        ));
    }
    let (out, disks) = a.args.split_last().expect("two or more");
    let default_name = Path::new(out)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "vm".into());
    let name = long_value(&a, "name").unwrap_or(default_name);
    let num = |k: &str, default: u64| -> R<u64> {
        match long_value(&a, k) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=1 << 24).contains(n))
                .ok_or_else(|| Fail::new(format!("Invalid --{k} value '{v}'"))),
        }
    };
    let o = virtkit_ovf::export::ExportOptions {
        name,
        cpus: num("cpus", 1)?,
        memory_mib: num("memory", 1024)?,
        algo: if has_long(&a, "sha256") {
            Algo::Sha256
        } else {
            Algo::Sha1
        },
        threads: threads(&a)?,
    };
    let list: Vec<(PathBuf, Option<Format>)> =
        disks.iter().map(|d| (PathBuf::from(d), src_fmt)).collect();
    let bar = Progress::new(ctx, progress);
    let r = virtkit_ovf::export::export(&list, Path::new(out), &o, &|d, t| bar.update(d, t));
    bar.finish();
    let rep = r.map_err(|e| ovf_err(out, e))?;
    if !quiet {
        println!("Wrote {} ({} files):", super::show(out), rep.files.len());
        for (n, len) in &rep.files {
            println!("  {:>12}  {}", len, super::show(n));
        }
    }
    Ok(0)
}
