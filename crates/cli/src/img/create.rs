//! qemu-img create

use super::{opt_last, opt_values, parse_bool, parse_format, parse_o, wants_help, Ctx, Fail, R};
use crate::getopt::Spec;
use std::path::Path;
use virtkit_image::qcow2::create::CreateOptions;
use virtkit_image::qcow2::header::Compression;
use virtkit_image::{size, Format, Preallocation};

const SPEC: Spec = Spec {
    short: "F:b:f:ho:qu",
    long: &[("object", true), ("help", false)],
};

const QCOW2_OPTS: &str = "\
Supported options:
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  cluster_size=<size>    - qcow2 cluster size
  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])
  compression_type=<str> - Compression method used for image cluster compression
  extended_l2=<bool (on/off)> - Extended L2 tables
  lazy_refcounts=<bool (on/off)> - Postpone refcount updates
  preallocation=<str>    - Preallocation mode (allowed values: off, metadata, falloc, full)
  refcount_bits=<num>    - Width of a reference count entry in bits
  size=<size>            - Virtual disk size
";
const RAW_OPTS: &str = "\
Supported options:
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
";

/// Everything `create` (and `convert`'s target creation) needs, parsed from -o and flags.
pub struct Plan {
    pub fmt: Format,
    pub q: CreateOptions,
    pub prealloc_given: bool,
    pub compat_given: Option<String>,
    pub size_given: bool,
}

pub fn option_help(fmt: Format) -> &'static str {
    match fmt {
        Format::Qcow2 => QCOW2_OPTS,
        Format::Raw => RAW_OPTS,
    }
}

/// Applies -o options for `fmt`. Errors use qemu-img's words.
pub fn plan(fmt: Format, opts: &[(String, String)]) -> R<Plan> {
    let mut p = Plan {
        fmt,
        q: CreateOptions::default(),
        prealloc_given: false,
        compat_given: None,
        size_given: false,
    };
    for (k, v) in opts {
        let k = k.as_str();
        match (fmt, k) {
            (_, "size") => {
                p.q.size = size::parse(v)
                    .map_err(|_| Fail::new(format!("Invalid image size specified: '{v}'.")))?;
                p.size_given = true;
            }
            (_, "preallocation") => {
                let pa = Preallocation::from_name(v)
                    .filter(|m| fmt == Format::Qcow2 || *m != Preallocation::Metadata)
                    .ok_or_else(|| {
                        Fail::new(format!(
                            "Parameter 'preallocation' does not accept value '{v}'"
                        ))
                    })?;
                p.q.preallocation = pa;
                p.prealloc_given = true;
            }
            (Format::Qcow2, "compat") => {
                p.q.v3 = match v.as_str() {
                    "0.10" | "v2" => false,
                    "1.1" | "v3" => true,
                    _ => {
                        return Err(Fail::new(format!(
                            "Parameter 'version' does not accept value '{v}'"
                        )))
                    }
                };
                p.compat_given = Some(v.clone());
            }
            (Format::Qcow2, "backing_file") => p.q.backing_file = Some(v.clone()),
            (Format::Qcow2, "backing_fmt") => p.q.backing_format = Some(v.clone()),
            (Format::Qcow2, "cluster_size") => {
                p.q.cluster_size = size::parse(v).map_err(|_| {
                    Fail::new("Cluster size must be a power of two between 512 and 2048k")
                })?
            }
            (Format::Qcow2, "lazy_refcounts") => p.q.lazy_refcounts = parse_bool(k, v)?,
            (Format::Qcow2, "extended_l2") => p.q.extended_l2 = parse_bool(k, v)?,
            (Format::Qcow2, "refcount_bits") => {
                p.q.refcount_bits = v.parse().map_err(|_| {
                    Fail::new("Refcount width must be a power of two and may not exceed 64 bits")
                })?
            }
            (Format::Qcow2, "compression_type") => {
                p.q.compression = match v.as_str() {
                    "zlib" => Compression::Zlib,
                    "zstd" => Compression::Zstd,
                    _ => {
                        return Err(Fail::new(format!(
                            "Parameter 'compression-type' does not accept value '{v}'"
                        )))
                    }
                }
            }
            (Format::Qcow2, "encryption" | "encrypt.format") if v == "off" => {}
            _ => return Err(Fail::new(format!("Invalid parameter '{k}'"))),
        }
    }
    Ok(p)
}

/// "Formatting 'f', fmt=qcow2 cluster_size=65536 ..." exactly as qemu-img 10 prints it.
pub fn formatting_line(file: &str, p: &Plan) -> String {
    let q = &p.q;
    let onoff = |b: bool| if b { "on" } else { "off" };
    let mut s = format!("Formatting '{file}', fmt={}", p.fmt.name());
    match p.fmt {
        Format::Raw => {
            s += &format!(" size={}", q.size);
            if p.prealloc_given {
                s += &format!(" preallocation={}", q.preallocation.name());
            }
        }
        Format::Qcow2 => {
            s += &format!(
                " cluster_size={} extended_l2={}",
                q.cluster_size,
                onoff(q.extended_l2)
            );
            if p.prealloc_given {
                s += &format!(" preallocation={}", q.preallocation.name());
            }
            s += &format!(" compression_type={} size={}", q.compression.name(), q.size);
            if let Some(c) = &p.compat_given {
                s += &format!(" compat={c}");
            }
            if let Some(b) = &q.backing_file {
                s += &format!(" backing_file={b}");
            }
            if let Some(b) = &q.backing_format {
                s += &format!(" backing_fmt={b}");
            }
            s += &format!(
                " lazy_refcounts={} refcount_bits={}",
                onoff(q.lazy_refcounts),
                q.refcount_bits
            );
        }
    }
    s
}

/// Creates the image described by `p` at `file`.
pub fn create_image(file: &str, p: &Plan) -> Result<(), virtkit_image::Error> {
    match p.fmt {
        Format::Raw => {
            virtkit_image::raw::Raw::create(Path::new(file), p.q.size, p.q.preallocation)
        }
        Format::Qcow2 => virtkit_image::qcow2::create::create(Path::new(file), &p.q),
    }
}

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
    if fmt == Format::Raw && opts.iter().any(|(k, _)| k == "backing_file") {
        return Err(fail(
            "Backing file not supported for file format 'raw'".into(),
        ));
    }
    let mut p = plan(fmt, &opts).map_err(|e| fail(e.msg))?;
    if let Some(b) = p.q.backing_file.clone() {
        let Some(bf) = p.q.backing_format.clone() else {
            return Err(fail("Backing file specified without backing format".into()));
        };
        parse_format(&bf).map_err(|e| fail(e.msg))?;
        if !unsafe_ || !p.size_given {
            let bpath = virtkit_image::chain::resolve_backing(Path::new(&file), &b);
            let bimg =
                super::open_image(ctx, &bpath.to_string_lossy(), Format::from_name(&bf), false)
                    .map_err(|e| fail(format!("Could not open backing image: {}", e.msg)))?;
            if !p.size_given {
                p.q.size = bimg.virtual_size();
                p.size_given = true;
            }
        }
    }
    if !p.size_given {
        return Err(fail("Image creation needs a size parameter".into()));
    }
    if !quiet {
        println!("{}", formatting_line(&file, &p));
    }
    create_image(&file, &p).map_err(|e| fail(super::emsg(&e)))?;
    Ok(0)
}
