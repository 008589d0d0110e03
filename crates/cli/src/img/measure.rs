//! qemu-img measure: the file size a new image needs, for a given size or to convert an image.

use super::args::{alias_longs, cvtnum, format_for_open, option_list_ok, out};
use super::{emsg, parse_o, show, Ctx, Fail, R};
use crate::getopt::{Opt, Spec};
use crate::qjson::{self, Dict, V};
use virtkit_image::measure::{check_opts, measure};
use virtkit_image::{BlockDriver, Format};

const SPEC: Spec = Spec {
    short: "hf:l:O:o:Us:",
    long: &[
        ("help", false),
        ("source-format", true),
        ("format", true),
        ("image-opts", false),
        ("source-image-opts", false),
        ("snapshot", true),
        ("target-format", true),
        ("target-format-options", true),
        ("options", true),
        ("force-share", false),
        ("output", true),
        ("object", true),
        ("size", true),
    ],
};

const LONG: &[(&str, char)] = &[
    ("help", 'h'),
    ("source-format", 'f'),
    ("format", 'f'),
    ("snapshot", 'l'),
    ("target-format", 'O'),
    ("target-format-options", 'o'),
    ("options", 'o'),
    ("force-share", 'U'),
    ("size", 's'),
];

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = alias_longs(ctx.parse(&SPEC, args)?, LONG);
    let mut json = false;
    let mut fmt: Option<String> = None;
    let mut out_fmt = "raw".to_string();
    let mut olist: Vec<String> = Vec::new();
    let mut size: Option<u64> = None;
    let mut snapshot: Option<SnapshotParam> = None;
    let mut image_opts = false;
    // In order, as qemu-img's getopt loop: the first bad value is the one reported.
    for o in &a.opts {
        match o {
            Opt::Short('h', _) => {
                out(HELP);
                return Ok(0);
            }
            Opt::Short('f', Some(v)) => fmt = Some(v.clone()),
            Opt::Short('O', Some(v)) => out_fmt = v.clone(),
            Opt::Short('l', Some(v)) => snapshot = Some(snapshot_param(ctx, v)?),
            Opt::Short('o', Some(v)) => {
                if !option_list_ok(v) {
                    return Err(Fail::new(format!("Invalid option list: {v}")));
                }
                olist.push(v.clone());
            }
            Opt::Short('s', Some(v)) => size = Some(cvtnum("image size", v, true)?),
            Opt::Long("output", Some(v)) => {
                json = match v.as_str() {
                    "human" => false,
                    "json" => true,
                    _ => {
                        return Err(Fail::new(format!(
                            "--output expects 'human' or 'json' not '{v}'"
                        )))
                    }
                }
            }
            Opt::Long("image-opts" | "source-image-opts", _) => image_opts = true,
            _ => {}
        }
    }
    if a.args.len() > 1 {
        return Err(Fail::new("At most one filename argument is allowed."));
    }
    let file = a.args.first();
    if file.is_none() && (image_opts || fmt.is_some() || snapshot.is_some()) {
        return Err(Fail::new(
            "--image-opts, -f, and -l require a filename argument.",
        ));
    }
    if file.is_some() && size.is_some() {
        return Err(Fail::new(
            "--size N cannot be used together with a filename.",
        ));
    }
    if file.is_none() && size.is_none() {
        return Err(Fail::new(
            "Either --size N or one filename must be specified.",
        ));
    }
    let input: Option<Box<dyn BlockDriver>> = match file {
        None => None,
        Some(f) => {
            let fmt = format_for_open(f, fmt.as_deref())?;
            let img = super::open_image(ctx, f, fmt, false)?;
            if let Some(sp) = &snapshot {
                load_snapshot(img.as_ref(), sp)?;
            }
            Some(img)
        }
    };
    let target = Format::from_name(&out_fmt)
        .ok_or_else(|| Fail::new(format!("Unknown file format '{}'", show(&out_fmt))))?;
    let opts = parse_o(&olist)?;
    check_opts(target, &opts).map_err(|e| {
        Fail::new(format!(
            "{}\n{}: Invalid options for file format '{}'",
            emsg(&e),
            ctx.prog,
            target.name()
        ))
    })?;
    let m = measure(target, &opts, size, input.as_deref()).map_err(|e| Fail::new(emsg(&e)))?;
    if json {
        let mut d = Dict::new();
        d.int("required", m.required)
            .int("fully-allocated", m.fully_allocated);
        if let Some(b) = m.bitmaps {
            d.int("bitmaps", b);
        }
        out(&format!("{}\n", qjson::to_string(&V::Dict(d))));
    } else {
        out(&format!("required size: {}\n", m.required));
        out(&format!("fully allocated size: {}\n", m.fully_allocated));
        if let Some(b) = m.bitmaps {
            out(&format!("bitmaps size: {b}\n"));
        }
    }
    Ok(0)
}

/// -l: a snapshot by ID or name, or "snapshot.id=ID,snapshot.name=NAME".
enum SnapshotParam {
    IdOrName(String),
    Exact(Option<String>, Option<String>),
}

fn snapshot_param(ctx: &Ctx, v: &str) -> R<SnapshotParam> {
    if !v.starts_with("snapshot.") {
        return Ok(SnapshotParam::IdOrName(v.to_string()));
    }
    let (mut id, mut name) = (None, None);
    for (k, val) in parse_o(&[v.to_string()])? {
        match k.as_str() {
            "snapshot.id" => id = Some(val),
            "snapshot.name" => name = Some(val),
            _ => {
                return Err(Fail::new(format!(
                    "Invalid parameter '{}'\n{}: Failed in parsing snapshot param '{}'",
                    show(&k),
                    ctx.prog,
                    show(v)
                )))
            }
        }
    }
    Ok(SnapshotParam::Exact(id, name))
}

/// Shows the snapshot instead of the image's current state, as qemu-img does by ID first,
/// then by name.
fn load_snapshot(img: &dyn BlockDriver, sp: &SnapshotParam) -> R<()> {
    let r = match sp {
        SnapshotParam::Exact(id, name) => img.snapshot_load_tmp(id.as_deref(), name.as_deref()),
        SnapshotParam::IdOrName(x) => img
            .snapshot_load_tmp(Some(x), None)
            .or_else(|_| img.snapshot_load_tmp(None, Some(x))),
    };
    r.map_err(|e| Fail::new(format!("Failed to load snapshot: {}", emsg(&e))))
}

const HELP: &str = r#"Usage:
Calculate file size requred for a new image.  Usage:

  qemu-img measure [-f FMT|--image-opts] [-o OPTIONS] [-O OUTPUT_FMT]
       [--output OFMT] [--object OBJDEF] [-l SNAPSHOT_PARAM]
       (--size SIZE | FILENAME)

Arguments:
  -h, --help
     print this help and exit
  -O, --target-format FMT
     desired target/output image format (default raw)
  -s, --size SIZE
     measure file size for given image size
  FILENAME
     measure file size required to convert from FILENAME
  -f, --format
     specify format of FILENAME explicitly
  --image-opts
     indicates that FILENAME is a complete image specification
     instead of a file name (incompatible with --format)
  -l, --snapshot SNAPSHOT
     use this snapshot in FILENAME as source
  --output human|json
     output format
  -U, --force-share
     open images in shared mode for concurrent access

"#;
