//! qemu-img amend

use super::{has_flag, has_long, wants_help, Ctx, Fail, R};
use crate::getopt::{Opt, Spec};
use virtkit_image::qcow2::{amend, Qcow2};
use virtkit_image::Format;

const SPEC: Spec = Spec {
    short: "ho:f:t:pq",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("force", false),
        ("format", true),
        ("cache", true),
        ("progress", false),
        ("quiet", false),
        ("options", true),
    ],
};

/// What qemu-img 10 prints for `amend --help`.
const HELP: &str = "\
Usage:
Update format-specific options of the image.  Usage:

  qemu-img amend [-f FMT | --image-opts] [t CACHE] [--force] [-p] [-q]
        [--object OBJDEF -o OPTIONS FILENAME

Arguments:
  -h, --help
     print this help and exit
  -q, --quiet
     quiet operation
  -p, --progres
     show progress
  -f, --format FMT
     specify FILENAME format explicitly
  --image-opts
     indicates that FILENAME is a complete image specification
   instead of a file name (incompatible with --format)
  -t, --cache CACHE
     cache mode for FILENAME (writeback)
  --force
     allow certain unsafe operations

";

/// qemu-img's is_valid_option_list(): not empty, not starting with a comma, and no odd run of
/// trailing commas (",," is an escaped comma).
pub fn valid_option_list(s: &str) -> bool {
    if s.is_empty() || s.starts_with(',') {
        return false;
    }
    let trailing = s.len() - s.trim_end_matches(',').len();
    trailing.is_multiple_of(2)
}

/// QemuOpts parsing of "k=v,k2=v2": ",," is a literal comma; a bare "foo" is foo=on and a bare
/// "nofoo" is foo=off.
pub fn split_options(s: &str) -> Vec<(String, String)> {
    let mut items = Vec::new();
    let mut cur = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == ',' {
            if it.peek() == Some(&',') {
                it.next();
                cur.push(',');
            } else {
                items.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    items.push(cur);
    items
        .into_iter()
        .filter(|i| !i.is_empty())
        .map(|i| match i.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => match i.strip_prefix("no") {
                Some(k) => (k.to_string(), "off".to_string()),
                None => (i, "on".to_string()),
            },
        })
        .collect()
}

fn is_help(kv: &[(String, String)]) -> bool {
    kv.iter().any(|(k, _)| k == "help" || k == "?")
}

/// The amend option help for a format, or qemu-img's refusal.
fn option_help(fmt: &str) -> R {
    match Format::from_name(fmt) {
        None => Err(Fail::new(format!("Unknown file format '{fmt}'"))),
        Some(Format::Qcow2) => {
            print!("{}", amend::OPTION_HELP);
            Ok(0)
        }
        Some(f) => Err(no_amend(f.name())),
    }
}

fn no_amend(fmt: &str) -> Fail {
    Fail::new(format!(
        "Format driver '{fmt}' does not support option amendment"
    ))
}

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{HELP}");
        return Ok(0);
    }
    let mut lists = Vec::new();
    let mut fmt = None;
    let mut cache = None;
    for o in &a.opts {
        match o {
            Opt::Short('o', Some(v)) | Opt::Long("options", Some(v)) => {
                if !valid_option_list(v) {
                    return Err(Fail::new(format!("Invalid option list: {v}")));
                }
                lists.push(v.clone());
            }
            Opt::Short('f', Some(v)) | Opt::Long("format", Some(v)) => fmt = Some(v.clone()),
            Opt::Short('t', Some(v)) | Opt::Long("cache", Some(v)) => cache = Some(v.clone()),
            _ => {}
        }
    }
    if lists.is_empty() {
        return Err(Fail::new(format!(
            "Must specify options (-o)\nTry '{} amend --help' for more info",
            if ctx.prog == "virtkit" {
                "virtkit img"
            } else {
                "qemu-img"
            }
        )));
    }
    let quiet = has_flag(&a, 'q') || has_long(&a, "quiet");
    let progress = (has_flag(&a, 'p') || has_long(&a, "progress")) && !quiet;
    let kv = split_options(&lists.join(","));
    if let (Some(f), true) = (&fmt, is_help(&kv)) {
        return option_help(f);
    }
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    if let Some(c) = &cache {
        if !matches!(
            c.as_str(),
            "none" | "off" | "writeback" | "writethrough" | "directsync" | "unsafe"
        ) {
            return Err(Fail::new(format!("Invalid cache option: {c}")));
        }
    }
    let fmt = match &fmt {
        Some(f) => Some(Format::from_name(f).ok_or_else(|| {
            Fail::new(format!(
                "Could not open '{}': Unknown driver '{f}'",
                super::show(file)
            ))
        })?),
        None => None,
    };
    let img = super::open_image(ctx, file, fmt, true)?;
    let name = img.format().name();
    if is_help(&kv) {
        return option_help(name);
    }
    let Some(q) = img.as_any().and_then(|x| x.downcast_ref::<Qcow2>()) else {
        return Err(no_amend(name));
    };
    let opts = amend::Options::parse(&kv).map_err(|e| Fail::new(super::emsg(&e)))?;
    let bar = super::convert::Progress::new(ctx, progress);
    let r = amend::amend(q, &opts, &mut |d, t| bar.update(d, t));
    if r.is_ok() {
        bar.update(1, 1);
    }
    bar.finish();
    r.map_err(|e| Fail::new(super::emsg(&e)))?;
    // Closing stores what the image still holds in memory; a failure there is an error too.
    img.flush().map_err(|e| Fail::new(super::emsg(&e)))?;
    Ok(0)
}
