//! `virtkit img` and the `qemu-img` personality: qemu-img's command line, output and exit codes.

mod amend;
mod args;
mod bench;
mod bitmap;
mod check;
mod commit;
mod compare;
mod convert;
mod create;
mod dd;
mod info;
mod map;
mod measure;
mod ova;
mod rebase;
mod resize;
mod snapshot;

use crate::getopt::{Opt, Parsed, Spec};
use std::path::Path;
use virtkit_image::{BlockDriver, Error, Format};

/// A failure: the one line printed after the program name, and the exit code.
pub struct Fail {
    pub msg: String,
    pub code: i32,
}

impl Fail {
    pub fn new(msg: impl Into<String>) -> Fail {
        Fail {
            msg: msg.into(),
            code: 1,
        }
    }
    pub fn code(mut self, code: i32) -> Fail {
        self.code = code;
        self
    }
}

pub type R<T = i32> = Result<T, Fail>;

/// Shared per-invocation context.
pub struct Ctx {
    /// Program name for messages: "qemu-img" or "virtkit".
    pub prog: &'static str,
    /// Sub-command, for getopt errors ("qemu-img info: invalid option").
    pub cmd: &'static str,
}

impl Ctx {
    pub fn parse(&self, spec: &Spec, args: &[String]) -> R<Parsed> {
        spec.parse(args).map_err(|e| {
            Fail::new(format!(
                "{e}\nTry '{} {} --help' for more info",
                self.personality(),
                self.cmd
            ))
            .code(1)
        })
    }
    fn personality(&self) -> &'static str {
        if self.prog == "virtkit" {
            "virtkit img"
        } else {
            "qemu-img"
        }
    }
    /// Prints a qemu-img style warning (several lines are what qemu-img prints).
    pub fn warn_probed_raw(&self, file: &str) {
        eprintln!(
            "WARNING: Image format was not specified for '{file}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions."
        );
    }
}

const HELP: &str = "\
usage: qemu-img [standard options] command [command options]
QEMU disk image utility (virtkit implementation)

Command syntax:
  amend [-p] [-q] [-f fmt] [--force] -o options filename
  bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-n] [--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] [-U] filename
  bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b source_file [-F source_fmt]] [-g granularity] [-f fmt] filename bitmap
  check [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-U] filename
  commit [-q] [-f fmt] [-t cache] [-b base] [-d] [-p] filename
  compare [-f fmt] [-F fmt] [-p] [-q] [-s] [-U] filename1 filename2
  convert [--target-is-zero] [-U] [-c] [-p] [-q] [-n] [-f fmt] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-S sparse_size] [-m num_coroutines] [-W] filename [filename2 [...]] output_filename
  create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]
  dd [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] if=input of=output
  info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename
  map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename
  measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [-f fmt] [-l snapshot_param] filename]
  rebase [-U] [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-c] -b backing_file [-F backing_fmt] filename
  resize [-f fmt] [--preallocation=prealloc] [-q] [--shrink] filename [+ | -]size
  snapshot [-U] [-q] [-l | -a snapshot | -c snapshot | -d snapshot] filename

virtkit extensions:
  ova-import [-O output_fmt] [-o options] [-m num] [-p] [-q] [--output=ofmt] package.ova [directory]
  ova-export [-f fmt] [--name name] [--cpus n] [--memory MiB] [--sha256] disk [disk...] package.ova

Supported formats: raw qcow2 vmdk vdi vpc vhdx qed parallels
";

pub fn main(prog: &'static str, args: &[String]) -> i32 {
    let Some(cmd) = args.first() else {
        eprintln!("{prog}: Not enough arguments\nTry '{prog} --help' for more information");
        return 1;
    };
    let rest = &args[1..];
    let run = |cmd: &'static str, f: fn(&Ctx, &[String]) -> R| {
        let ctx = Ctx { prog, cmd };
        match f(&ctx, rest) {
            Ok(code) => code,
            Err(e) => {
                let prefix = if e.msg.contains("invalid option")
                    || e.msg.contains("unrecognized option")
                    || e.msg.contains("requires an argument")
                    || e.msg.contains("doesn't allow")
                    || e.msg.contains("is ambiguous")
                {
                    format!("{prog} {cmd}")
                } else {
                    prog.to_string()
                };
                eprintln!("{prefix}: {}", e.msg);
                e.code
            }
        }
    };
    match cmd.as_str() {
        "create" => run("create", create::run),
        "info" => run("info", info::run),
        "convert" => run("convert", convert::run),
        "check" => run("check", check::run),
        "resize" => run("resize", resize::run),
        "snapshot" => run("snapshot", snapshot::run),
        "compare" => run("compare", compare::run),
        "map" => run("map", map::run),
        "amend" => run("amend", amend::run),
        "bench" => run("bench", bench::run),
        "bitmap" => run("bitmap", bitmap::run),
        "commit" => run("commit", commit::run),
        "dd" => run("dd", dd::run),
        "measure" => run("measure", measure::run),
        "rebase" => run("rebase", rebase::run),
        "ova-import" => run("ova-import", ova::import),
        "ova-export" => run("ova-export", ova::export),
        "-h" | "--help" | "help" => {
            print!("{HELP}");
            0
        }
        "-V" | "--version" => {
            println!(
                "qemu-img version 10.0.0 (virtkit {})\nCopyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        c if c.starts_with('-') => {
            eprintln!(
                "{prog}: invalid option -- '{}'\nTry '{prog} --help' for more info",
                c.trim_start_matches('-')
            );
            1
        }
        c => {
            eprintln!("{prog}: Command not found: {c}");
            1
        }
    }
}

/// The message of a library error, as a user reads it.
pub fn emsg(e: &Error) -> String {
    match e {
        Error::Io(io) => io_msg(io),
        Error::Backing { path, source } => format!(
            "Could not open backing file '{}': {}",
            show(&path.to_string_lossy()),
            emsg(source)
        ),
        other => other.to_string(),
    }
}

/// A file name fit for a one-line message: control characters escaped (a hostile image can
/// name its backing file anything).
pub fn show(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_control() {
            s.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            s.push(c);
        }
    }
    s
}

fn io_msg(e: &std::io::Error) -> String {
    // "No such file or directory" rather than Rust's "(os error 2)" suffix.
    match e.raw_os_error() {
        Some(n) => {
            let s = std::io::Error::from_raw_os_error(n).to_string();
            s.split(" (os error").next().unwrap_or(&s).to_string()
        }
        None => e.to_string(),
    }
}

pub fn parse_format(s: &str) -> R<Format> {
    Format::from_name(s).ok_or_else(|| Fail::new(format!("Unknown file format '{s}'")))
}

/// Opens an image (and its chain) the way every read command does.
pub fn open_image(
    ctx: &Ctx,
    path: &str,
    fmt: Option<Format>,
    writable: bool,
) -> R<Box<dyn BlockDriver>> {
    open_image_with(ctx, path, fmt, writable, false)
}

pub fn open_image_with(
    ctx: &Ctx,
    path: &str,
    fmt: Option<Format>,
    writable: bool,
    for_check: bool,
) -> R<Box<dyn BlockDriver>> {
    open_image_ext(ctx, path, fmt, writable, for_check, false)
}

/// As [`open_image_with`]; `no_backing` leaves the backing file closed (rebase -u).
pub fn open_image_ext(
    ctx: &Ctx,
    path: &str,
    fmt: Option<Format>,
    writable: bool,
    for_check: bool,
    no_backing: bool,
) -> R<Box<dyn BlockDriver>> {
    let shown = show(path);
    let probed_raw = fmt.is_none()
        && writable
        && virtkit_image::chain::probe(Path::new(path))
            .map(|f| f == Format::Raw)
            .unwrap_or(false);
    let img = virtkit_image::open(
        Path::new(path),
        &virtkit_image::OpenOptions {
            format: fmt,
            writable,
            no_backing,
            for_check,
        },
    )
    .map_err(|e| match e {
        Error::Io(ref io) => Fail::new(format!(
            "Could not open '{shown}': Could not open '{shown}': {}",
            io_msg(io)
        )),
        e @ Error::Corrupt(_) if fmt.is_some() => {
            let m = emsg(&e);
            Fail::new(format!("Could not open '{shown}': {m}"))
        }
        e => Fail::new(format!("Could not open '{shown}': {}", emsg(&e))),
    })?;
    if probed_raw {
        ctx.warn_probed_raw(path);
    }
    Ok(img)
}

/// Options given with -o: "k=v,k2=v2" (",," is a literal comma), merged over several -o.
pub fn parse_o(list: &[String]) -> R<Vec<(String, String)>> {
    let mut out = Vec::new();
    for s in list {
        let mut cur = String::new();
        let mut items = Vec::new();
        let mut it = s.chars().peekable();
        while let Some(c) = it.next() {
            if c == ',' {
                if it.peek() == Some(&',') {
                    it.next();
                    cur.push(',');
                } else {
                    items.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(c);
            }
        }
        items.push(cur);
        for it in items {
            if it.is_empty() {
                continue;
            }
            match it.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), v.to_string())),
                None => out.push((it.clone(), "on".to_string())),
            }
        }
    }
    Ok(out)
}

/// Collects `-o` values and -f style single options from parsed options.
pub fn opt_values(p: &Parsed, c: char) -> Vec<String> {
    p.opts
        .iter()
        .filter_map(|o| match o {
            Opt::Short(x, Some(v)) if *x == c => Some(v.clone()),
            _ => None,
        })
        .collect()
}

pub fn opt_last(p: &Parsed, c: char) -> Option<String> {
    opt_values(p, c).pop()
}

pub fn has_flag(p: &Parsed, c: char) -> bool {
    p.opts
        .iter()
        .any(|o| matches!(o, Opt::Short(x, None) if *x == c))
}

pub fn long_value(p: &Parsed, name: &str) -> Option<String> {
    p.opts.iter().rev().find_map(|o| match o {
        Opt::Long(n, v) if *n == name => Some(v.clone().unwrap_or_default()),
        _ => None,
    })
}

pub fn has_long(p: &Parsed, name: &str) -> bool {
    p.opts
        .iter()
        .any(|o| matches!(o, Opt::Long(n, _) if *n == name))
}

/// --output=human|json
pub fn output_json(p: &Parsed) -> R<bool> {
    match long_value(p, "output").as_deref() {
        None | Some("human") => Ok(false),
        Some("json") => Ok(true),
        Some(_) => Err(Fail::new(
            "--output must be used with human or json as argument.",
        )),
    }
}

pub fn wants_help(p: &Parsed) -> bool {
    has_flag(p, 'h') || has_long(p, "help")
}
