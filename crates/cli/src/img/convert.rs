//! qemu-img convert

use super::{
    has_flag, has_long, opt_last, opt_values, parse_format, parse_o, wants_help, Ctx, Fail, R,
};
use crate::getopt::Spec;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;
use virtkit_image::convert::{convert, ConvertOptions};
use virtkit_image::{size, BlockDriver, Format};

const SPEC: Spec = Spec {
    short: "hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("target-image-opts", false),
        ("target-is-zero", false),
        ("salvage", false),
        ("bitmaps", false),
        ("skip-broken-bitmaps", false),
        ("force-share", false),
    ],
};

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{}", super::HELP);
        return Ok(0);
    }
    let src_fmt = opt_last(&a, 'f').map(|f| parse_format(&f)).transpose()?;
    let out_fmt = parse_format(opt_last(&a, 'O').as_deref().unwrap_or("raw"))?;
    let compress = has_flag(&a, 'c');
    let progress = has_flag(&a, 'p') && !has_flag(&a, 'q');
    let no_create = has_flag(&a, 'n');
    let target_is_zero = has_long(&a, "target-is-zero");
    let out_of_order = has_flag(&a, 'W');
    let backing = opt_last(&a, 'B');
    let backing_fmt = opt_last(&a, 'F');
    let olist = opt_values(&a, 'o');
    if olist.iter().any(|o| o == "help" || o == "?") {
        print!("{}", virtkit_image::create::option_help(out_fmt));
        return Ok(0);
    }
    if opt_last(&a, 'l').is_some() {
        return Err(Fail::new(
            "Converting from an internal snapshot (-l) is not supported yet",
        ));
    }
    let threads = match opt_last(&a, 'm') {
        None => 8,
        Some(m) => match m.parse::<usize>() {
            Ok(n) if (1..=16).contains(&n) => n,
            _ => return Err(Fail::new(
                "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16",
            )),
        },
    };
    let sparse_size = match opt_last(&a, 'S') {
        None => 4096,
        Some(s) => match size::parse(&s) {
            Ok(v) if v % 512 == 0 && v <= 16 << 20 => v,
            _ => {
                return Err(Fail::new(
                    "Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to 16M.",
                ))
            }
        },
    };
    if target_is_zero && !no_create {
        return Err(Fail::new("--target-is-zero requires use of -n flag"));
    }
    if no_create && !olist.is_empty() {
        return Err(Fail::new("-o has no effect when skipping image creation"));
    }
    if no_create && backing.is_some() {
        return Err(Fail::new("-B makes no sense when skipping image creation"));
    }
    if a.args.len() < 2 {
        return Err(Fail::new("Must specify image file name"));
    }
    let (out, inputs) = a.args.split_last().expect("two or more");
    let srcs: Vec<Box<dyn BlockDriver>> = inputs
        .iter()
        .map(|f| super::open_image(ctx, f, src_fmt, false))
        .collect::<R<_>>()?;
    // As qemu-img: after the sources open, before the target is created.
    if compress && !matches!(out_fmt, Format::Qcow2 | Format::Vmdk) {
        return Err(Fail::new("Compression not supported for this file format"));
    }
    let total: u64 = srcs.iter().map(|s| s.virtual_size()).sum();

    let dst: Box<dyn BlockDriver> = if no_create {
        let d = super::open_image(ctx, out, Some(out_fmt), true)?;
        if d.virtual_size() < total {
            return Err(Fail::new(format!(
                "{out}: Target image is smaller than the source ({} < {total} bytes)",
                d.virtual_size()
            )));
        }
        d
    } else {
        let mut opts = parse_o(&olist).map_err(|e| Fail::new(format!("{out}: {}", e.msg)))?;
        opts.retain(|(k, _)| k != "size");
        opts.push(("size".into(), total.to_string()));
        if let Some(b) = &backing {
            if !virtkit_image::create::supports_backing(out_fmt) {
                return Err(Fail::new(format!(
                    "{out}: Backing file not supported for file format '{}'",
                    out_fmt.name()
                )));
            }
            opts.push(("backing_file".into(), b.clone()));
            let bf = match &backing_fmt {
                Some(f) => f.clone(),
                None => {
                    let bp = virtkit_image::chain::resolve_backing(Path::new(out), b);
                    virtkit_image::chain::probe(&bp)
                        .map_err(|e| {
                            Fail::new(format!(
                                "{out}: Could not open backing file '{b}': {}",
                                super::emsg(&e)
                            ))
                        })?
                        .name()
                        .to_string()
                }
            };
            opts.push(("backing_fmt".into(), bf));
        }
        let p = virtkit_image::create::plan(out_fmt, &opts)
            .map_err(|e| Fail::new(format!("{out}: {}", super::emsg(&e))))?;
        p.create(Path::new(out))
            .map_err(|e| Fail::new(format!("{out}: {}", super::emsg(&e))))?;
        super::open_image(ctx, out, Some(out_fmt), true)?
    };
    // Targets that only take compressed data (vmdk streamOptimized) get it without -c.
    let compress = compress || dst.needs_compressed_writes();
    if compress && dst.cluster_size().is_none_or(|c| c == 0 || c > 2 << 20) {
        return Err(Fail::new("invalid cluster size"));
    }
    let o = ConvertOptions {
        compress,
        sparse_size,
        threads,
        out_of_order,
        target_zero_init: if no_create {
            target_is_zero
        } else {
            dst.has_zero_init()
        },
        target_has_backing: backing.is_some(),
    };
    let refs: Vec<&dyn BlockDriver> = srcs.iter().map(|s| s.as_ref()).collect();
    let bar = Progress::new(ctx, progress);
    let r = convert(&refs, dst.as_ref(), &o, &|done, total| {
        bar.update(done, total)
    });
    bar.finish();
    r.map_err(|e| {
        Fail::new(format!(
            "{out}: error while converting {}: {}",
            out_fmt.name(),
            super::emsg(&e)
        ))
    })?;
    Ok(0)
}

/// -p: qemu-img's "    (12.34/100%)" line, or a progress bar for `virtkit img` on a terminal.
pub struct Progress {
    mode: u8,
    bar: Option<indicatif::ProgressBar>,
    last: Mutex<f64>,
}

impl Progress {
    pub fn new(ctx: &Ctx, on: bool) -> Progress {
        if !on {
            return Progress {
                mode: 0,
                bar: None,
                last: Mutex::new(-1.0),
            };
        }
        if ctx.prog == "virtkit" && std::io::stdout().is_terminal() {
            let b = indicatif::ProgressBar::new(100);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {percent:>3}% {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            return Progress {
                mode: 2,
                bar: Some(b),
                last: Mutex::new(-1.0),
            };
        }
        print!("    (0.00/100%)\r");
        let _ = std::io::stdout().flush();
        Progress {
            mode: 1,
            bar: None,
            last: Mutex::new(0.0),
        }
    }

    pub fn update(&self, done: u64, total: u64) {
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        match self.mode {
            1 => {
                let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
                // qemu-img reprints on each whole-percent step.
                if pct - *last >= 1.0 || (pct >= 100.0 && *last < 100.0) {
                    *last = pct;
                    print!("    ({pct:.2}/100%)\r");
                    let _ = std::io::stdout().flush();
                }
            }
            2 => {
                if let Some(b) = &self.bar {
                    b.set_length(total.max(1));
                    b.set_position(done);
                }
            }
            _ => {}
        }
    }

    pub fn finish(&self) {
        match self.mode {
            1 => println!(),
            2 => {
                if let Some(b) = &self.bar {
                    b.finish();
                }
            }
            _ => {}
        }
    }
}
