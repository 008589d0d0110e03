//! qemu-img create

use super::{opt_last, opt_values, parse_format, parse_o, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use std::path::Path;
use virtkit_image::create::{option_help, plan, supports_backing};
use virtkit_image::{size, Format};

const SPEC: Spec = Spec {
    short: "F:b:f:ho:qu",
    long: &[("object", true), ("help", false)],
};

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{}", super::HELP);
        return Ok(0);
    }
    let fmt = parse_format(opt_last(&a, 'f').as_deref().unwrap_or("raw"))?;
    let quiet = super::has_flag(&a, 'q');
    let unsafe_ = super::has_flag(&a, 'u');
    let olist = opt_values(&a, 'o');
    if olist.iter().any(|o| o == "help" || o == "?") {
        print!("{}", option_help(fmt));
        return Ok(0);
    }
    let Some(file) = a.args.first().cloned() else {
        return Err(Fail::new("Expecting image file name"));
    };
    if a.args.len() > 2 {
        return Err(Fail::new(format!("Unexpected argument: {}", a.args[2])));
    }
    let fail = |m: String| Fail::new(format!("{file}: {m}"));
    let mut opts = parse_o(&olist).map_err(|e| fail(e.msg))?;
    if let Some(b) = opt_last(&a, 'b') {
        opts.push(("backing_file".into(), b));
    }
    if let Some(f) = opt_last(&a, 'F') {
        opts.push(("backing_fmt".into(), f));
    }
    if let Some(sz) = a.args.get(1) {
        if sz.starts_with('-') {
            return Err(Fail::new("Image size must be less than 8 EiB!"));
        }
        let v = size::parse(sz)
            .map_err(|_| Fail::new(format!("Invalid image size specified: '{sz}'.")))?;
        opts.push(("size".into(), v.to_string()));
    }
    if !supports_backing(fmt) && opts.iter().any(|(k, _)| k == "backing_file") {
        return Err(fail(format!(
            "Backing file not supported for file format '{}'",
            fmt.name()
        )));
    }
    let mut p = plan(fmt, &opts).map_err(|e| fail(super::emsg(&e)))?;
    if let Some((b, bf)) = p.backing() {
        let Some(bf) = bf else {
            return Err(fail("Backing file specified without backing format".into()));
        };
        parse_format(&bf).map_err(|e| fail(e.msg))?;
        if !unsafe_ || p.size().is_none() {
            let bpath = virtkit_image::chain::resolve_backing(Path::new(&file), &b);
            let bimg =
                super::open_image(ctx, &bpath.to_string_lossy(), Format::from_name(&bf), false)
                    .map_err(|e| fail(format!("Could not open backing image: {}", e.msg)))?;
            if p.size().is_none() {
                p.set_size(bimg.virtual_size());
            }
        }
    }
    if p.size().is_none() {
        return Err(fail("Image creation needs a size parameter".into()));
    }
    if !quiet {
        println!("{}", p.formatting_line(&file));
    }
    p.create(Path::new(&file))
        .map_err(|e| fail(super::emsg(&e)))?;
    Ok(0)
}
