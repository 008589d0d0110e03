//! qemu-img map

use super::{long_value, opt_last, output_json, parse_format, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use std::io::Write;
use virtkit_image::map::{chain_status, MapEntry};
use virtkit_image::size;

const SPEC: Spec = Spec {
    short: "f:hU",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("output", true),
        ("start-offset", true),
        ("max-length", true),
        ("force-share", false),
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
    let start = match long_value(&a, "start-offset") {
        Some(s) => size::parse(&s).map_err(|_| {
            Fail::new(
                "Invalid start offset specified! You may use k, M, G, T, P or E suffixes for ",
            )
        })?,
        None => 0,
    };
    let maxlen = match long_value(&a, "max-length") {
        Some(s) => Some(size::parse(&s).map_err(|_| {
            Fail::new("Invalid length specified! You may use k, M, G, T, P or E suffixes for ")
        })?),
        None => None,
    };
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    let img = super::open_image(ctx, file, fmt, false)?;
    let size = img.virtual_size();
    let end = match maxlen {
        Some(l) => start.saturating_add(l).min(size),
        None => size,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut first = true;
    if !json {
        let _ = writeln!(
            out,
            "{:<16}{:<16}{:<16}File",
            "Offset", "Length", "Mapped to"
        );
    }
    let mut cur: Option<MapEntry> = None;
    let mut pos = start;
    let emit = |out: &mut dyn Write, e: &MapEntry, first: &mut bool| -> R<()> {
        if json {
            let mut s = format!(
                "{}{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}, \"compressed\": {}",
                if *first { "[" } else { ",\n" },
                e.start, e.length, e.depth, e.present, e.zero, e.data, e.compressed
            );
            if let Some(o) = e.offset {
                s += &format!(", \"offset\": {o}");
            }
            s += "}";
            let _ = write!(out, "{s}");
            *first = false;
        } else if e.data && !e.zero {
            let Some(off) = e.offset else {
                return Err(Fail::new(
                    "File contains external, encrypted or compressed clusters.",
                ));
            };
            let hx = |v: u64| {
                if v == 0 {
                    "0".to_string()
                } else {
                    format!("{v:#x}")
                }
            };
            let _ = writeln!(
                out,
                "{:<16}{:<16}{:<16}{}",
                hx(e.start),
                hx(e.length),
                hx(off),
                e.filename.as_deref().unwrap_or("")
            );
        }
        Ok(())
    };
    while pos < end {
        let e = chain_status(img.as_ref(), pos, end - pos)
            .map_err(|e| Fail::new(format!("{file}: {}", super::emsg(&e))))?;
        pos += e.length;
        match &mut cur {
            Some(c) if c.mergeable(&e) => c.length += e.length,
            _ => {
                if let Some(c) = cur.take() {
                    emit(&mut out, &c, &mut first)?;
                }
                cur = Some(e);
            }
        }
    }
    if let Some(c) = cur {
        emit(&mut out, &c, &mut first)?;
    }
    if json {
        let _ = writeln!(out, "{}]", if first { "[" } else { "" });
    }
    Ok(0)
}
