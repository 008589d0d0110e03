//! qemu-img commit: write an image's changes into a backing file, then (unless -d) empty it.

use super::args::{alias_longs, cache_mode, cvtnum, format_for_open, out};
use super::convert::Progress;
use super::{emsg, has_flag, opt_last, show, Ctx, Fail, R};
use crate::getopt::{Opt, Spec};
use std::path::Path;
use virtkit_image::commit::{commit, find_backing, layer_at, CommitOptions};
use virtkit_image::Error;

const SPEC: Spec = Spec {
    short: "hf:t:db:r:pq",
    long: &[
        ("help", false),
        ("format", true),
        ("image-opts", false),
        ("cache", true),
        ("drop", false),
        ("base", true),
        ("rate", true),
        ("rate-limit", true),
        ("progress", false),
        ("quiet", false),
        ("object", true),
    ],
};

const LONG: &[(&str, char)] = &[
    ("help", 'h'),
    ("format", 'f'),
    ("cache", 't'),
    ("drop", 'd'),
    ("base", 'b'),
    ("rate", 'r'),
    ("rate-limit", 'r'),
    ("progress", 'p'),
    ("quiet", 'q'),
];

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = alias_longs(ctx.parse(&SPEC, args)?, LONG);
    let mut drop = false;
    let mut rate = 0;
    // In order, as qemu-img's getopt loop: the first bad value is the one reported.
    for o in &a.opts {
        match o {
            Opt::Short('h', _) => {
                out(HELP);
                return Ok(0);
            }
            // -b implies -d: the chain between stays as it is.
            Opt::Short('d' | 'b', _) => drop = true,
            Opt::Short('r', Some(v)) => rate = cvtnum("rate limit", v, true)?,
            _ => {}
        }
    }
    let quiet = has_flag(&a, 'q');
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    let cache = opt_last(&a, 't').unwrap_or_else(|| "writeback".into());
    if cache_mode(&cache).is_none() {
        return Err(Fail::new(format!("Invalid cache option: {cache}")));
    }
    let fmt = format_for_open(file, opt_last(&a, 'f').as_deref())?;
    let top = super::open_image(ctx, file, fmt, true)?;
    let bar = Progress::new(ctx, has_flag(&a, 'p') && !quiet);
    let r = (|| -> R<()> {
        let depth = match opt_last(&a, 'b') {
            Some(b) => find_backing(top.as_ref(), &b).ok_or_else(|| {
                Fail::new(format!(
                    "Did not find '{}' in the backing chain of '{}'",
                    show(&b),
                    show(file)
                ))
            })?,
            None if top.backing().is_some() => 1,
            None => return Err(Fail::new("Image does not have a backing file")),
        };
        let layer = layer_at(top.as_ref(), depth).expect("found in the chain");
        let base_path = layer.filename().to_path_buf();
        // The chain holds the base read-only; the copy goes through a writable handle.
        let base = virtkit_image::open(
            Path::new(&base_path),
            &virtkit_image::OpenOptions {
                format: Some(layer.format()),
                writable: true,
                no_backing: false,
                for_check: false,
            },
        )
        .map_err(|e| {
            Fail::new(format!(
                "Could not reopen file '{}': {}",
                show(&base_path.to_string_lossy()),
                emsg(&e)
            ))
        })?;
        let o = CommitOptions {
            rate_limit: rate,
            ..Default::default()
        };
        commit(top.as_ref(), depth, base.as_ref(), &o, &|d, t| {
            bar.update(d, t)
        })
        .map_err(|e| Fail::new(format!("Block job failed: {}", emsg(&e))))?;
        bar.update(1, 1);
        if !drop {
            match top.make_empty() {
                Ok(()) | Err(Error::Unsupported(_)) => {}
                Err(e) => {
                    return Err(Fail::new(format!(
                        "Failed to empty {}: {}",
                        show(file),
                        emsg(&e)
                    )))
                }
            }
        }
        top.flush()
            .map_err(|e| Fail::new(format!("Error while closing the image: {}", emsg(&e))))
    })();
    bar.finish();
    r?;
    if !quiet {
        out("Image committed.\n");
    }
    Ok(0)
}

const HELP: &str = r#"Usage:
Commit image to its backing file.  Usage:

  qemu-img commit [-f FMT | --image-opts] [-t CACHE_MODE] [-b BASE_IMG] [-d]
        [-r RATE] [--object OBJDEF] FILENAME

Arguments:
  -h, --help
     print this help and exit
  -q, --quiet
     quiet operations
  -p, --progress
     show operation progress
  -f, --format FMT
     specify FILENAME image format explicitly
  --image-opts
     indicates that FILENAME is a complete image specification
     instead of a file name (incompatible with --format)
  -t, --cache CACHE_MODE image cache mode (writeback)
  -d, --drop
     skip emptying FILENAME on completion
  -b, --base BASE_IMG
     image in the backing chain to which to commit changes
     instead of the previous one (implies --drop)
  -r, --rate RATE
     I/O rate limit
  --object OBJDEF
     QEMU user-creatable object (eg encryption key)
  FILENAME
     name of the image file to operate on

"#;
