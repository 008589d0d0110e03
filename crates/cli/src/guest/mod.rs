//! The libguestfs read tools on virtkit-guest: `virtkit guest TOOL ...`, and links named
//! virt-ls, virt-cat, virt-copy-out, virt-tar-out, virt-filesystems, virt-df,
//! virt-inspector and guestfish, with their options, output and exit codes. No appliance:
//! the disks are read in-process.

mod cat;
mod copy;
mod df;
mod diff;
mod filesystems;
mod fish;
pub mod fmt;
mod inspector;
mod ls;

use crate::getopt::{Opt, Spec};
use std::path::PathBuf;
use virtkit_guest::inspect::{self, Devices};
use virtkit_guest::mounts::Mounts;
use virtkit_guest::Guest;
use virtkit_image::Format;

/// Names the tools answer to (as links, or as `virtkit guest NAME`).
pub const TOOLS: &[&str] = &[
    "virt-ls",
    "virt-cat",
    "virt-copy-out",
    "virt-tar-out",
    "virt-filesystems",
    "virt-df",
    "virt-inspector",
    "virt-diff",
    "guestfish",
];

pub fn main(tool: &str, args: &[String]) -> i32 {
    let prog = tool.to_string();
    let r = match tool {
        "virt-ls" => ls::run(&prog, args),
        "virt-cat" => cat::run(&prog, args),
        "virt-copy-out" => copy::copy_out(&prog, args),
        "virt-tar-out" => copy::tar_out(&prog, args),
        "virt-filesystems" => filesystems::run(&prog, args),
        "virt-df" => df::run(&prog, args),
        "virt-inspector" => inspector::run(&prog, args),
        "virt-diff" => diff::run(&prog, args),
        "guestfish" => fish::run(&prog, args),
        _ => {
            eprintln!(
                "virtkit guest: unknown tool '{tool}' (one of: {})",
                TOOLS.join(", ")
            );
            return 1;
        }
    };
    match r {
        Ok(code) => code,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            1
        }
    }
}

/// `virtkit guest TOOL ARGS` (TOOL with or without the "virt-" prefix).
pub fn main_native(args: &[String]) -> i32 {
    let Some(t) = args.first() else {
        eprintln!(
            "usage: virtkit guest TOOL [args...]\ntools: {}",
            TOOLS.join(", ")
        );
        return 1;
    };
    let name = if TOOLS.contains(&t.as_str()) {
        t.clone()
    } else {
        format!("virt-{t}")
    };
    main(&name, &args[1..])
}

/// An error from the guest layer, worded as libguestfs reports a failed API call.
pub fn api_err(call: &str, e: &virtkit_guest::Error) -> String {
    format!("libguestfs: error: {call}: {e}")
}

/// `-m dev[:mountpoint[:options[:fstype]]]`
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub device: String,
    pub mountpoint: String,
}

/// The options every tool shares: disks (with the --format in force when each was given),
/// mounts, inspection.
#[derive(Debug, Default)]
pub struct Common {
    pub drives: Vec<(PathBuf, Option<Format>)>,
    pub mounts: Vec<MountSpec>,
    pub inspector: bool,
    pub verbose: bool,
    /// --format given after the last -a (libguestfs refuses that).
    format_pending: bool,
    format: Option<Format>,
}

impl Common {
    /// Handles a shared option; false when `o` is not one of them.
    pub fn take(&mut self, prog: &str, o: &Opt) -> Result<bool, String> {
        match o {
            Opt::Short('a', Some(v)) | Opt::Long("add", Some(v)) => {
                self.drives.push((PathBuf::from(v), self.format));
                self.format_pending = false;
            }
            Opt::Long("format", v) => {
                self.format = match v.as_deref() {
                    None | Some("") | Some("auto") => None,
                    Some(f) => Some(Format::from_name(f).ok_or_else(|| {
                        format!("{prog}: error: unknown disk format: {f}")
                    })?),
                };
                self.format_pending = true;
            }
            Opt::Short('m', Some(v)) | Opt::Long("mount", Some(v)) => {
                let mut it = v.splitn(4, ':');
                let device = it.next().unwrap_or("").to_string();
                let mountpoint = it.next().filter(|s| !s.is_empty()).unwrap_or("/").to_string();
                self.mounts.push(MountSpec { device, mountpoint });
            }
            Opt::Short('i', None) | Opt::Long("inspector", None) => self.inspector = true,
            Opt::Short('v', None) | Opt::Long("verbose", None) => self.verbose = true,
            Opt::Short('x', None) | Opt::Long("ro", None) | Opt::Short('r', None) => {}
            Opt::Short('d', Some(_)) | Opt::Long("domain", Some(_)) => {
                return Err(format!(
                    "{prog}: error: -d: libvirt domains are not supported yet (the VM manager is not written); use -a DISK"
                ))
            }
            Opt::Short('c', Some(_)) | Opt::Long("connect", Some(_)) => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The --format in force (after all options).
    pub fn format(&self) -> Option<Format> {
        self.format
    }

    /// libguestfs: "--format parameter must appear before -a parameter".
    pub fn finish(&self, prog: &str) -> Result<(), String> {
        if self.format_pending && self.format.is_some() {
            return Err(format!(
                "{prog}: error: --format parameter must appear before -a parameter"
            ));
        }
        Ok(())
    }

    pub fn need_drives(&self, prog: &str) -> Result<(), String> {
        if self.drives.is_empty() {
            return Err(format!(
                "{prog}: error: you must specify at least one -a or -d option.\nTry ‘{prog} --help’ for more information."
            ));
        }
        Ok(())
    }

    /// Opens the disks (the appliance's "launch").
    pub fn launch(&self) -> Result<Guest, String> {
        Guest::open(&self.drives).map_err(|e| format!("libguestfs: error: {e}"))
    }

    /// Mounts what -m says, or (with -i, or by default for the tools that inspect) the
    /// inspected operating system's filesystems.
    pub fn mount(&self, prog: &str, g: &Guest, inspect_by_default: bool) -> Result<Mounts, String> {
        if !self.mounts.is_empty() {
            let mut m = Mounts::new();
            for s in &self.mounts {
                let fs = g
                    .open_fs(&s.device)
                    .map_err(|e| api_err("mount_options", &e))?;
                let dev = g
                    .canonical_name(&s.device)
                    .unwrap_or_else(|_| s.device.clone());
                m.mount(&s.mountpoint, &dev, fs)
                    .map_err(|e| api_err("mount_options", &e))?;
            }
            return Ok(m);
        }
        if !(self.inspector || inspect_by_default) {
            return Ok(Mounts::new());
        }
        inspect_mount(prog, g, self.inspector)
    }
}

const NO_OS_HINT: &str = "If using guestfish ‘-i’ option, remove this option and instead
use the commands ‘run’ followed by ‘list-filesystems’.
You can then mount filesystems you think are correct, using
‘mount’ or ‘mount-ro’ command.";

/// libguestfs' inspect_mount: exactly one operating system, mounted as its fstab says.
pub fn inspect_mount(prog: &str, g: &Guest, fish_hint: bool) -> Result<Mounts, String> {
    let roots = inspect::inspect_os(g as &dyn Devices);
    let hint = if fish_hint {
        format!("\n{NO_OS_HINT}")
    } else {
        String::new()
    };
    match roots.len() {
        0 => Err(format!(
            "{prog}: no operating system was found on this disk{hint}"
        )),
        1 => inspect::mount_os(g as &dyn Devices, &roots[0]).map_err(|e| api_err("mount_ro", &e)),
        _ => Err(format!(
            "{prog}: multi-boot operating systems are not supported{hint}"
        )),
    }
}

/// Parses with `spec`, feeding shared options to `common` and the rest to `own`.
/// `--help` prints `usage` and `-V`/`--version` the version, and the result is None (the
/// tool exits 0), as soon as they are seen, as the libguestfs tools do.
pub fn parse(
    prog: &str,
    spec: &Spec,
    args: &[String],
    common: &mut Common,
    usage: &str,
    own: &mut dyn FnMut(&Opt) -> Result<bool, String>,
) -> Result<Option<Vec<String>>, String> {
    // getopt's optional arguments (--format, --checksum): only "--opt=value" gives one; a
    // bare "--opt" takes none (the next word stays a positional argument).
    let mut argv: Vec<String> = Vec::with_capacity(args.len());
    let mut ended = false;
    for a in args {
        if a == "--" {
            ended = true;
        }
        match a.strip_prefix("--") {
            Some(n) if !ended && OPTIONAL_ARG.contains(&n) => argv.push(format!("{a}=")),
            _ => argv.push(a.clone()),
        }
    }
    let p = spec
        .parse(&argv)
        .map_err(|e| format!("{prog}: {e}\nTry ‘{prog} --help’ for more information."))?;
    for o in &p.opts {
        match o {
            Opt::Long("help", _) => {
                print!("{usage}");
                return Ok(None);
            }
            Opt::Short('V', _) | Opt::Long("version", _) => {
                version(prog);
                return Ok(None);
            }
            _ => {}
        }
        if common.take(prog, o)? {
            continue;
        }
        if !own(o)? {
            return Err(format!("Try ‘{prog} --help’ for more information."));
        }
    }
    common.finish(prog)?;
    Ok(Some(p.args))
}

/// Long options whose argument is optional in libguestfs' getopt tables.
const OPTIONAL_ARG: &[&str] = &["format", "checksum", "checksums", "blocksize"];

/// Options every tool accepts, for the getopt spec.
pub const COMMON_LONG: &[(&str, bool)] = &[
    ("add", true),
    ("format", true),
    ("mount", true),
    ("inspector", false),
    ("verbose", false),
    ("ro", false),
    ("domain", true),
    ("connect", true),
    ("help", false),
    ("version", false),
];

pub fn version(prog: &str) -> i32 {
    println!("{prog} {} (virtkit)", env!("CARGO_PKG_VERSION"));
    0
}
