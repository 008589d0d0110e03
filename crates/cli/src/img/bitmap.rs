//! qemu-img bitmap

use super::{wants_help, Ctx, Fail, R};
use crate::getopt::{Opt, Spec};
use virtkit_image::qcow2::bitmap::{self, ops};
use virtkit_image::qcow2::Qcow2;
use virtkit_image::{BlockDriver, Error, Format};

const SPEC: Spec = Spec {
    short: "b:f:F:g:h",
    long: &[
        ("help", false),
        ("object", true),
        ("image-opts", false),
        ("add", false),
        ("remove", false),
        ("clear", false),
        ("enable", false),
        ("disable", false),
        ("merge", true),
        ("granularity", true),
        ("source-file", true),
        ("source-format", true),
    ],
};

/// What qemu-img 10 prints for `bitmap --help`.
const HELP: &str = "\
Usage:
Perform modifications of the persistent bitmap in the image.  Usage:

  qemu-img bitmap ( --merge SOURCE | --add | --remove | --clear |
                --enable | --disable ).. [-f FMT | --image-opts]
        [ -b SRC_FILENAME [-F SOURCE_FMT]] [-g SIZE[KMGTPE]] [--object OBJDEF]
        FILENAME BITMAP

Arguments:
  -h, --help
     print this help and exit
  -f, --format FMT
     specify FILENAME format explicitly
  --image-opts
     indicates that FILENAME is a complete image specification
     instead of a file name (incompatible with --format)
  --add
     creates BITMAP, enables to record future edits
   -g, --granularity SIZE[KMGTPE]
     sets non-default bitmap granularity for --add to this size
  --remove
     removes BITMAP
  --clear
     clears BITMAP
  --enable, --disable
     starts and stops recording future edits to BITMAP
  --merge SRC_FILENAME
     merges contents of SRC_FILENAME bitmap into BITMAP
   -b, --source-file SRC_FILENAME
     select alternative source file for --merge
   -F, --source-format SRC_FMT
     specify format for SRC_FILENAME explicitly

";

enum Act {
    Add,
    Remove,
    Clear,
    Enable,
    Disable,
    Merge(String),
}

impl Act {
    fn name(&self) -> &'static str {
        match self {
            Act::Add => "add",
            Act::Remove => "remove",
            Act::Clear => "clear",
            Act::Enable => "enable",
            Act::Disable => "disable",
            Act::Merge(_) => "merge",
        }
    }
}

fn qcow2(img: &dyn BlockDriver) -> Option<&Qcow2> {
    img.as_any().and_then(|x| x.downcast_ref::<Qcow2>())
}

/// Opens one image as qemu-img bitmap does: an unknown -f is QEMU's "Unknown driver".
fn open(ctx: &Ctx, file: &str, fmt: Option<&str>, writable: bool) -> R<Box<dyn BlockDriver>> {
    let fmt = match fmt {
        Some(f) => Some(Format::from_name(f).ok_or_else(|| {
            Fail::new(format!(
                "Could not open '{}': Unknown driver '{f}'",
                super::show(file)
            ))
        })?),
        None => None,
    };
    super::open_image(ctx, file, fmt, writable)
}

/// One action on `img`; `src` is the -b image (the image itself without -b).
fn apply(
    img: &dyn BlockDriver,
    src: Option<&dyn BlockDriver>,
    name: &str,
    act: &Act,
    granularity: u64,
) -> Result<(), Error> {
    let Some(q) = qcow2(img) else {
        // Other formats have no persistent bitmaps.
        let g = granularity as u32;
        return Err(match act {
            Act::Add if name.is_empty() => Error::Invalid("Bitmap name cannot be empty".into()),
            Act::Add if granularity != 0 && (g < 512 || !g.is_power_of_two()) => {
                Error::Invalid("Granularity must be power of 2 and at least 512".into())
            }
            Act::Add => Error::Invalid(format!(
                "Can't store persistent bitmaps to {}: Operation not supported",
                bitmap::NODE_NAME
            )),
            _ => bitmap::not_found(name),
        });
    };
    match act {
        // The granularity travels as a 32-bit QMP argument; 0 means the default.
        Act::Add => ops::add(
            q,
            name,
            (granularity != 0).then_some(granularity as u32 as u64),
        ),
        Act::Remove => ops::remove(q, name),
        Act::Clear => ops::clear(q, name),
        Act::Enable => ops::set_enabled(q, name, true),
        Act::Disable => ops::set_enabled(q, name, false),
        Act::Merge(s) => {
            ops::merge_target(q, name)?;
            let sq = match src {
                Some(other) => qcow2(other).ok_or_else(|| bitmap::not_found(s))?,
                None => q,
            };
            let source = ops::source(sq, s)?;
            ops::merge(q, name, &source)
        }
    }
}

pub fn run(ctx: &Ctx, args: &[String]) -> R {
    let a = ctx.parse(&SPEC, args)?;
    if wants_help(&a) {
        print!("{HELP}");
        return Ok(0);
    }
    let mut acts = Vec::new();
    let (mut fmt, mut src_fmt, mut src_file) = (None, None, None);
    let mut granularity = 0u64;
    for o in &a.opts {
        match o {
            Opt::Long("add", _) => acts.push(Act::Add),
            Opt::Long("remove", _) => acts.push(Act::Remove),
            Opt::Long("clear", _) => acts.push(Act::Clear),
            Opt::Long("enable", _) => acts.push(Act::Enable),
            Opt::Long("disable", _) => acts.push(Act::Disable),
            Opt::Long("merge", Some(s)) => acts.push(Act::Merge(s.clone())),
            Opt::Short('f', Some(v)) => fmt = Some(v.clone()),
            Opt::Short('F', Some(v)) | Opt::Long("source-format", Some(v)) => {
                src_fmt = Some(v.clone())
            }
            Opt::Short('b', Some(v)) | Opt::Long("source-file", Some(v)) => {
                src_file = Some(v.clone())
            }
            Opt::Short('g', Some(v)) | Opt::Long("granularity", Some(v)) => {
                granularity = virtkit_image::size::parse(v)
                    .map_err(|_| Fail::new(format!("Invalid granularity specified: '{v}'.")))?;
            }
            _ => {}
        }
    }
    if acts.is_empty() {
        return Err(Fail::new(
            "Need at least one of --add, --remove, --clear, --enable, --disable, or --merge",
        ));
    }
    let add = acts.iter().any(|x| matches!(x, Act::Add));
    let merge = acts.iter().any(|x| matches!(x, Act::Merge(_)));
    if granularity != 0 && !add {
        return Err(Fail::new("granularity only supported with --add"));
    }
    if src_fmt.is_some() && src_file.is_none() {
        return Err(Fail::new("-F only supported with -b"));
    }
    if src_file.is_some() && !merge {
        return Err(Fail::new(
            "Merge bitmap source file only supported with --merge",
        ));
    }
    let [file, name] = a.args.as_slice() else {
        return Err(Fail::new("Expecting filename and bitmap name"));
    };
    let img = open(ctx, file, fmt.as_deref(), true)?;
    let src = match &src_file {
        Some(s) => Some(open(ctx, s, src_fmt.as_deref(), false)?),
        None => None,
    };
    for act in &acts {
        if let Err(e) = apply(img.as_ref(), src.as_deref(), name, act, granularity) {
            let msg = super::emsg(&e);
            if msg.starts_with("Lost persistent bitmaps") {
                // QEMU fails this one when it closes the image, not in the operation.
                return Err(Fail::new(format!(
                    "{msg}\nqemu-img: Error while closing the image: Invalid argument"
                )));
            }
            return Err(Fail::new(format!(
                "Operation {} on bitmap {name} failed: {msg}",
                act.name()
            )));
        }
    }
    img.flush().map_err(|e| Fail::new(super::emsg(&e)))?;
    Ok(0)
}
