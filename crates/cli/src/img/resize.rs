//! qemu-img resize

use super::{has_flag, has_long, long_value, opt_last, parse_format, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use virtkit_image::{size, Preallocation};

const SPEC: Spec = Spec {
    short: "f:hq",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("preallocation", true),
        ("shrink", false),
    ],
};

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    // The size comes last and may start with '-': take it before option parsing, as qemu-img does.
    let Some((size_arg, rest)) = args.split_last() else {
        return Err(Fail::new("Expecting image file name and size"));
    };
    if rest.is_empty() && !matches!(size_arg.as_str(), "-h" | "--help") {
        return Err(Fail::new("Expecting image file name and size"));
    }
    let a = ctx.parse(&SPEC, rest)?;
    if wants_help(&a) || size_arg == "--help" || size_arg == "-h" {
        print!("{}", super::HELP);
        return Ok(0);
    }
    let quiet = has_flag(&a, 'q');
    let shrink = has_long(&a, "shrink");
    let fmt = opt_last(&a, 'f').map(|f| parse_format(&f)).transpose()?;
    let prealloc = match long_value(&a, "preallocation") {
        None => Preallocation::Off,
        Some(p) => Preallocation::from_name(&p)
            .filter(|m| *m != Preallocation::Metadata)
            .ok_or_else(|| Fail::new(format!("Invalid preallocation mode: '{p}'")))?,
    };
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting image file name and size"));
    };
    let (rel, num) = match size_arg.as_bytes().first() {
        Some(b'+') => (1i8, &size_arg[1..]),
        Some(b'-') => (-1, &size_arg[1..]),
        _ => (0, size_arg.as_str()),
    };
    let n = size::parse(num).map_err(|_| Fail::new("Invalid image size specified"))?;
    let img = super::open_image(ctx, file, fmt, true)?;
    let cur = img.virtual_size();
    let new = match rel {
        0 => n,
        1 => cur
            .checked_add(n)
            .ok_or_else(|| Fail::new("Image size is too large"))?,
        _ => match cur.checked_sub(n) {
            Some(v) if v > 0 => v,
            _ => return Err(Fail::new("New image size must be positive")),
        },
    };
    if new < cur && !shrink {
        eprintln!(
            "{}: Use the --shrink option to perform a shrink operation.",
            ctx.prog
        );
        return Err(Fail::new("warning: Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there."));
    }
    if new < cur && prealloc != Preallocation::Off {
        return Err(Fail::new(
            "Preallocation can only be used for growing images",
        ));
    }
    // qemu-img reports the driver's refusal without the file name.
    img.resize(new, prealloc, shrink)
        .map_err(|e| Fail::new(super::emsg(&e)))?;
    if !quiet {
        println!("Image resized.");
    }
    Ok(0)
}
