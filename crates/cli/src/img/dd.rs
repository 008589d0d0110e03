//! qemu-img dd: copy an image (or part of it) into a new image, dd(1) style operands.

use super::args::{alias_longs, cvtnum, cvtnum_full, format_for_open, out, INT_MAX};
use super::{emsg, has_flag, opt_last, show, Ctx, Fail, R};
use crate::getopt::Spec;
use std::path::Path;
use virtkit_image::{BlockDriver, Error, Format};

const SPEC: Spec = Spec {
    short: "hf:O:U",
    long: &[
        ("help", false),
        ("format", true),
        ("image-opts", false),
        ("output-format", true),
        ("force-share", false),
        ("object", true),
    ],
};

const LONG: &[(&str, char)] = &[
    ("help", 'h'),
    ("format", 'f'),
    ("output-format", 'O'),
    ("force-share", 'U'),
];

/// Copies go through this much memory at a time, whatever bs is (the result is the same:
/// qemu-img reads and writes the blocks in order).
const COPY_BUF: u64 = 4 << 20;

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = alias_longs(ctx.parse(&SPEC, args)?, LONG);
    if has_flag(&a, 'h') {
        out(HELP);
        return Ok(0);
    }
    let mut bs: u64 = 512;
    let mut count: Option<u64> = None;
    let mut skip: Option<u64> = None;
    let mut input: Option<String> = None;
    let mut output: Option<String> = None;
    for arg in &a.args {
        let Some((k, v)) = arg.split_once('=') else {
            return Err(Fail::new(format!("unrecognized operand {}", show(arg))));
        };
        match k {
            "bs" => bs = cvtnum_full("bs", v, true, 1, INT_MAX)?,
            // qemu-img 10.0 reads count and skip as plain numbers (no size suffixes).
            "count" => count = Some(cvtnum("count", v, false)?),
            "skip" => skip = Some(cvtnum("skip", v, false)?),
            "if" => input = Some(v.to_string()),
            "of" => output = Some(v.to_string()),
            _ => return Err(Fail::new(format!("unrecognized operand {}", show(k)))),
        }
    }
    let (Some(input), Some(output)) = (input, output) else {
        return Err(Fail::new("Must specify both input and output files"));
    };
    let fmt = format_for_open(&input, opt_last(&a, 'f').as_deref())?;
    let src = super::open_image(ctx, &input, fmt, false)?;
    let out_fmt = opt_last(&a, 'O').unwrap_or_else(|| "raw".into());
    let out_fmt = Format::from_name(&out_fmt).ok_or_else(|| Fail::new("Unknown file format"))?;

    let mut size = src.virtual_size();
    if let Some(c) = count {
        if c <= i64::MAX as u64 / bs && c * bs < size {
            size = c * bs;
        }
    }
    // A skip past the input's end gives an empty output, as dd(1) does.
    let skip_bytes = skip.and_then(|s| {
        (s <= i64::MAX as u64 / bs)
            .then(|| s * bs)
            .filter(|&b| b <= size)
    });
    let out_size = match (skip, skip_bytes) {
        (Some(_), None) => 0,
        (_, b) => size - b.unwrap_or(0),
    };
    let create_err = |e: &Error| {
        let m = match e {
            Error::Io(_) => format!("Could not create '{}': {}", show(&output), emsg(e)),
            e => emsg(e),
        };
        Fail::new(format!(
            "{}: error while creating output image: {m}",
            show(&output)
        ))
    };
    // Creating the output truncates it: it must not be a file the input reads (qemu-img would
    // silently destroy the input here).
    if let Ok(om) = std::fs::metadata(&output) {
        use std::os::unix::fs::MetadataExt;
        let mut layer: Option<&dyn BlockDriver> = Some(src.as_ref());
        while let Some(l) = layer {
            if let Ok(im) = std::fs::metadata(l.filename()) {
                if (im.dev(), im.ino()) == (om.dev(), om.ino()) {
                    return Err(Fail::new(format!(
                        "{}: error while creating output image: the output is an input file",
                        show(&output)
                    )));
                }
            }
            layer = l.backing();
        }
    }
    let plan = virtkit_image::create::plan(out_fmt, &[("size".into(), out_size.to_string())])
        .map_err(|e| create_err(&e))?;
    plan.create(Path::new(&output))
        .map_err(|e| create_err(&e))?;
    let dst = super::open_image(ctx, &output, Some(out_fmt), true)?;

    let mut in_pos = match (skip, skip_bytes) {
        (Some(_), None) => {
            eprintln!(
                "{}: {}: cannot skip to specified offset",
                ctx.prog,
                show(&input)
            );
            size
        }
        (_, b) => b.unwrap_or(0),
    };
    let mut out_pos = 0u64;
    let mut buf = vec![0u8; (size - in_pos).min(COPY_BUF) as usize];
    while in_pos < size {
        let n = (size - in_pos).min(buf.len() as u64) as usize;
        src.read_at(&mut buf[..n], in_pos).map_err(|e| {
            Fail::new(format!(
                "error while reading from input image file: {}",
                emsg(&e)
            ))
        })?;
        dst.write_at(&buf[..n], out_pos).map_err(|e| {
            Fail::new(format!(
                "error while writing to output image file: {}",
                emsg(&e)
            ))
        })?;
        in_pos += n as u64;
        out_pos += n as u64;
    }
    dst.flush()
        .map_err(|e| Fail::new(format!("{}: {}", show(&output), emsg(&e))))?;
    Ok(0)
}

const HELP: &str = r#"Usage:
Copy input to output with optional format conversion.  Usage:

  qemu-img dd [-f FMT|--image-opts] [-O OUTPUT_FMT] [-U]
        [bs=BLOCK_SIZE] [count=BLOCKS] if=INPUT of=OUTPUT

Arguments:
  -h, --help
     print this help and exit
  -f, --format FMT
     specify format for INPUT explicitly
  --image-opts
     indicates that INPUT is a complete image specification
     instead of a file name (incompatible with --format)
  -O, --output-format OUTPUT_FMT
     format of the OUTPUT (default raw)
  -U, --force-share
     open images in shared mode for concurrent access
  bs=BLOCK_SIZE[kKMGTP]
     size of I/O block (default 512)
  count=COUNT
     number of blocks to convert (default whole INPUT)
  if=INPUT
     input file name (or image specification with --image-opts)
  of=OUTPUT
     output file name to create

"#;
