//! qemu-img check

use super::{has_flag, opt_last, output_json, parse_format, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use crate::qjson::{self, Dict, V};
use virtkit_image::{CheckReport, Error, Repair};

const SPEC: Spec = Spec {
    short: "hf:r:T:qU",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("output", true),
        ("repair", true),
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
    let quiet = has_flag(&a, 'q');
    let fmt = opt_last(&a, 'f').map(|f| parse_format(&f)).transpose()?;
    let repair = match opt_last(&a, 'r')
        .or_else(|| super::long_value(&a, "repair"))
        .as_deref()
    {
        None => Repair::None,
        Some("leaks") => Repair::Leaks,
        Some("all") => Repair::All,
        Some(_) => {
            return Err(Fail::new(
                "Invalid option for -r: valid options are leaks and all",
            ))
        }
    };
    let [file] = a.args.as_slice() else {
        return Err(Fail::new("Expecting one image file name"));
    };
    let img = super::open_image_with(ctx, file, fmt, repair != Repair::None, true)?;
    let fmt_name = img.format().name();
    let first = match img.check(repair) {
        Ok(r) => r,
        Err(Error::Unsupported(m)) => return Err(Fail::new(m).code(63)),
        Err(e) => return Err(Fail::new(format!("Check failed: {}", super::emsg(&e)))),
    };
    for m in &first.messages {
        eprintln!("{m}");
    }
    if let Some(f) = &first.fatal {
        return Err(Fail::new(format!("Check failed: {f}")));
    }
    let mut report = first.clone();
    if first.corruptions_fixed > 0 || first.leaks_fixed > 0 {
        if !json && !quiet {
            println!(
                "The following inconsistencies were found and repaired:\n\n    {} leaked clusters\n    {} corruptions\n\nDouble checking the fixed image now...",
                first.leaks_fixed, first.corruptions_fixed
            );
        }
        report = img
            .check(Repair::None)
            .map_err(|e| Fail::new(format!("Check failed: {}", super::emsg(&e))))?;
        for m in &report.messages {
            eprintln!("{m}");
        }
        report.leaks_fixed = first.leaks_fixed;
        report.corruptions_fixed = first.corruptions_fixed;
    }
    if json {
        println!(
            "{}",
            qjson::to_string(&V::Dict(json_dict(file, fmt_name, &report)))
        );
    } else if !quiet {
        print!("{}", human(&report));
    }
    if report.check_errors > 0 {
        return Err(Fail::new("Check failed"));
    }
    Ok(if report.corruptions > 0 {
        2
    } else if report.leaks > 0 {
        3
    } else {
        0
    })
}

fn json_dict(file: &str, fmt: &str, r: &CheckReport) -> Dict {
    let mut d = Dict::new();
    d.str("filename", file)
        .str("format", fmt)
        .int("check-errors", r.check_errors);
    let mut opt = |k: &str, v: u64| {
        if v != 0 {
            d.int(k, v);
        }
    };
    opt("image-end-offset", r.image_end_offset);
    opt("corruptions", r.corruptions);
    opt("leaks", r.leaks);
    opt("corruptions-fixed", r.corruptions_fixed);
    opt("leaks-fixed", r.leaks_fixed);
    opt("total-clusters", r.total_clusters);
    opt("allocated-clusters", r.allocated_clusters);
    opt("fragmented-clusters", r.fragmented_clusters);
    opt("compressed-clusters", r.compressed_clusters);
    d
}

fn human(r: &CheckReport) -> String {
    let mut s = String::new();
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        s += "No errors were found on the image.\n";
    } else {
        if r.corruptions > 0 {
            s += &format!(
                "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.\n",
                r.corruptions
            );
        }
        if r.leaks > 0 {
            s += &format!(
                "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.\n",
                r.leaks
            );
        }
        if r.check_errors > 0 {
            s += &format!(
                "\n{} internal errors have occurred during the check.\n",
                r.check_errors
            );
        }
    }
    if r.total_clusters != 0 && r.allocated_clusters != 0 {
        let a = r.allocated_clusters as f64;
        s += &format!(
            "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters\n",
            r.allocated_clusters,
            r.total_clusters,
            a * 100.0 / r.total_clusters as f64,
            r.fragmented_clusters as f64 * 100.0 / a,
            r.compressed_clusters as f64 * 100.0 / a
        );
    }
    if r.image_end_offset != 0 {
        s += &format!("Image end offset: {}\n", r.image_end_offset);
    }
    s
}
