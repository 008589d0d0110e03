//! qemu-img rebase: change an image's backing file, copying first (safe mode) whatever the
//! image would otherwise see change.

use super::args::{alias_longs, cache_mode, format_for_open, out};
use super::convert::Progress;
use super::{emsg, has_flag, opt_last, show, Ctx, Fail, R};
use crate::getopt::Spec;
use std::path::Path;
use virtkit_image::rebase::{copy_differences, RebaseOptions};
use virtkit_image::{BlockDriver, Error, Format};

const SPEC: Spec = Spec {
    short: "hf:t:cb:F:B:T:uUpq",
    long: &[
        ("help", false),
        ("format", true),
        ("image-opts", false),
        ("cache", true),
        ("compress", false),
        ("backing", true),
        ("backing-format", true),
        ("backing-cache", true),
        ("backing-unsafe", false),
        ("force-share", false),
        ("progress", false),
        ("quiet", false),
        ("object", true),
    ],
};

const LONG: &[(&str, char)] = &[
    ("help", 'h'),
    ("format", 'f'),
    ("cache", 't'),
    ("compress", 'c'),
    ("backing", 'b'),
    ("backing-format", 'F'),
    ("backing-cache", 'T'),
    ("backing-unsafe", 'u'),
    ("force-share", 'U'),
    ("progress", 'p'),
    ("quiet", 'q'),
];

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = alias_longs(ctx.parse(&SPEC, args)?, LONG);
    if has_flag(&a, 'h') {
        out(HELP);
        return Ok(0);
    }
    let unsafe_mode = has_flag(&a, 'u');
    let quiet = has_flag(&a, 'q');
    let compress = has_flag(&a, 'c');
    let backing = opt_last(&a, 'b');
    // -B is qemu-img 10.1's name for -F.
    let backing_fmt = a.opts.iter().rev().find_map(|o| match o {
        crate::getopt::Opt::Short('F' | 'B', Some(v)) => Some(v.clone()),
        _ => None,
    });
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    if !unsafe_mode && backing.is_none() {
        return Err(Fail::new(
            "Must specify backing file (-b) or use unsafe mode (-u)",
        ));
    }
    let bar = Progress::new(ctx, has_flag(&a, 'p') && !quiet);
    let r = rebase(
        ctx,
        &a,
        file,
        unsafe_mode,
        compress,
        backing,
        backing_fmt,
        &bar,
    );
    bar.finish();
    r
}

#[allow(clippy::too_many_arguments)]
fn rebase(
    ctx: &Ctx,
    a: &crate::getopt::Parsed,
    file: &str,
    unsafe_mode: bool,
    compress: bool,
    backing: Option<String>,
    backing_fmt: Option<String>,
    bar: &Progress,
) -> R {
    let cache = opt_last(a, 't').unwrap_or_else(|| "writeback".into());
    if cache_mode(&cache).is_none() {
        return Err(Fail::new(format!("Invalid cache option: {cache}")));
    }
    let src_cache = opt_last(a, 'T').unwrap_or_else(|| "writeback".into());
    if cache_mode(&src_cache).is_none() {
        return Err(Fail::new(format!(
            "Invalid source cache option: {src_cache}"
        )));
    }
    let fmt = format_for_open(file, opt_last(a, 'f').as_deref())?;
    // Unsafe mode ignores the old backing file: it may be the one that moved.
    let img = super::open_image_ext(ctx, file, fmt, true, false, unsafe_mode)?;
    if compress && img.compress_cluster(&[0u8; 512]).is_err() {
        return Err(Fail::new("Compression not supported for this file format"));
    }
    let new_fmt = match &backing_fmt {
        None => None,
        Some(f) => Some(
            Format::from_name(f)
                .ok_or_else(|| Fail::new(format!("Invalid format name: '{}'", show(f))))?,
        ),
    };
    let target = backing.as_deref().filter(|b| !b.is_empty());
    let change_err = |m: &str| {
        Fail::new(format!(
            "Could not change the backing file to '{}': {m}",
            show(backing.as_deref().unwrap_or("(null)"))
        ))
    };
    let new = match (unsafe_mode, target) {
        (false, Some(b)) => Some(open_new_backing(img.as_ref(), b, new_fmt)?),
        _ => None,
    };
    if target.is_some() && backing_fmt.is_none() {
        // QEMU refuses to record a backing file without its format (checked here, before
        // anything is copied; qemu-img finds out only after the copy).
        return Err(change_err("backing format must be specified"));
    }
    if !unsafe_mode {
        let o = RebaseOptions {
            compress,
            ..Default::default()
        };
        copy_differences(
            img.as_ref(),
            img.backing(),
            new.as_deref(),
            &o,
            &|done, total| bar.update(done, total),
        )
        .map_err(|e| Fail::new(format!("Error while writing to COW image: {}", emsg(&e))))?;
    }
    let fmt_name = target.and(backing_fmt.as_deref());
    img.change_backing_file(target, fmt_name)
        .map_err(|e| match e {
            Error::Unsupported(_) => change_err("Operation not supported"),
            e => change_err(&emsg(&e)),
        })?;
    img.flush()
        .map_err(|e| Fail::new(format!("{file}: {}", emsg(&e))))?;
    bar.update(1, 1);
    Ok(0)
}

/// Opens the new backing file read-only, its name resolved relative to the image as QEMU
/// resolves it.
fn open_new_backing(
    img: &dyn BlockDriver,
    name: &str,
    fmt: Option<Format>,
) -> R<Box<dyn BlockDriver>> {
    let path = virtkit_image::chain::resolve_backing(img.filename(), name);
    let shown_path = show(&path.to_string_lossy());
    let new = virtkit_image::open(
        Path::new(&path),
        &virtkit_image::OpenOptions {
            format: fmt,
            writable: false,
            no_backing: false,
            for_check: false,
        },
    )
    .map_err(|e| {
        let inner = match &e {
            Error::Io(_) => format!("Could not open '{shown_path}': {}", emsg(&e)),
            e => emsg(e),
        };
        Fail::new(format!(
            "Could not open new backing file '{}': {inner}",
            show(name)
        ))
    })?;
    // The image cannot sit below itself (QEMU's image locking refuses the same).
    let me = std::fs::canonicalize(img.filename()).ok();
    let mut layer: Option<&dyn BlockDriver> = Some(new.as_ref());
    while let Some(l) = layer {
        if me.is_some() && std::fs::canonicalize(l.filename()).ok() == me {
            return Err(Fail::new(format!(
                "Could not open new backing file '{}': Failed to get shared \"write\" lock",
                show(name)
            )));
        }
        layer = l.backing();
    }
    Ok(new)
}

const HELP: &str = r#"Usage:
Change backing file of the image.  Usage:

  qemu-img rebase [-f FMT | --image-opts] [-t CACHE] [-q] [-U] [-p]
        [-b BACKING_FILENAME [-F BACKING_FMT] [-T BACKING_CACHE]] [-u]
        [--object OBJDEF] [-c] FILENAME
Rebases FILENAME on top of BACKING_FILENAME or no backing file

Arguments:
  -h, --help
     print this help and exit
  -q, --quiet
     quiet operation
  -p, --progress
     show progress indicator
  -f, --format FMT
     specify FILENAME format explicitly
  --image-opts
     indicates that FILENAME is a complete image specification
     instead of a file name (incompatible with --format)
  -t, --cache CACHE
     cache mode for FILENAME (writeback)
  -b, --backing BACKING_FILENAME|""
     rebase onto this file (or no backing file)
  -F, --backing-format BACKING_FMT
     specify format for BACKING_FILENAME
  -T, --backing-cache CACHE
     BACKING_FILENAME cache mode (writeback)
  -u, --backing-unsafe
     do not fail if BACKING_FILENAME can not be read
  -c, --compress
     compress image (when image supports this)
  -U, --force-share
     open image in shared mode for concurrent access
  --object OBJDEF
     QEMU user-creatable object (eg encryption key)
  FILENAME
     image file name (or specification with --image-opts)

"#;
