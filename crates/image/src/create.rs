//! Creating images of any format from qemu-img's `-o key=value` options.
//!
//! Each format parses its own options (with qemu-img's defaults and error messages) into a
//! [`CreatePlan`]; the CLI fills in what it derives (the size from a backing file or a convert
//! source), prints the plan's "Formatting ..." line and creates the image.

use crate::driver::{Format, Preallocation};
use crate::error::{Error, Result};
use std::path::Path;

/// `-o` options in the order given (later ones win, as in QEMU's QemuOpts).
pub type Opts = [(String, String)];

/// A validated request to create one image.
pub trait CreatePlan {
    fn format(&self) -> Format;
    /// Virtual size given so far (`size=` or the size argument).
    fn size(&self) -> Option<u64>;
    fn set_size(&mut self, size: u64);
    /// Backing file name and format given in the options (formats with backing files only).
    fn backing(&self) -> Option<(String, Option<String>)> {
        None
    }
    /// qemu-img's "Formatting 'FILE', fmt=... " line, option for option as qemu-img prints it.
    fn formatting_line(&self, file: &str) -> String;
    /// Creates the image (truncating an existing file, as qemu-img does).
    fn create(&self, path: &Path) -> Result<()>;
}

/// Parses `opts` for `fmt`.
pub fn plan(fmt: Format, opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    Ok(match fmt {
        Format::Raw => Box::new(RawPlan::parse(opts)?),
        Format::Qcow2 => Box::new(crate::qcow2::create::Plan::parse(opts)?),
        Format::Vmdk => crate::vmdk::create::plan(opts)?,
        Format::Vdi => crate::vdi::create::plan(opts)?,
        Format::Vpc => crate::vpc::create::plan(opts)?,
        Format::Vhdx => crate::vhdx::create::plan(opts)?,
        Format::Qed => crate::qed::create::plan(opts)?,
        Format::Parallels => crate::parallels::create::plan(opts)?,
    })
}

/// Whether the format's create options include backing_file (qemu-img create -b).
pub fn supports_backing(fmt: Format) -> bool {
    matches!(fmt, Format::Qcow2 | Format::Vmdk | Format::Qed)
}

/// The text `qemu-img create -f FMT -o help` prints.
pub fn option_help(fmt: Format) -> &'static str {
    match fmt {
        Format::Raw => RAW_OPTS,
        Format::Qcow2 => crate::qcow2::create::OPTION_HELP,
        Format::Vmdk => crate::vmdk::create::OPTION_HELP,
        Format::Vdi => crate::vdi::create::OPTION_HELP,
        Format::Vpc => crate::vpc::create::OPTION_HELP,
        Format::Vhdx => crate::vhdx::create::OPTION_HELP,
        Format::Qed => crate::qed::create::OPTION_HELP,
        Format::Parallels => crate::parallels::create::OPTION_HELP,
    }
}

/// `size=` as qemu-img parses it.
pub fn parse_size_opt(v: &str) -> Result<u64> {
    crate::size::parse(v)
        .map_err(|_| Error::Invalid(format!("Invalid image size specified: '{v}'.")))
}

/// on/off values of boolean options.
pub fn parse_bool_opt(k: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(Error::Invalid(format!(
            "Parameter '{k}' expects 'on' or 'off'"
        ))),
    }
}

/// qemu-img's message for an option the format does not have.
pub fn unknown_opt<T>(k: &str) -> Result<T> {
    Err(Error::Invalid(format!("Invalid parameter '{k}'")))
}

/// preallocation= restricted to the modes the format offers.
pub fn parse_prealloc_opt(v: &str, allowed: &[Preallocation]) -> Result<Preallocation> {
    Preallocation::from_name(v)
        .filter(|m| allowed.contains(m))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "Parameter 'preallocation' does not accept value '{v}'"
            ))
        })
}

const RAW_OPTS: &str = "\
Supported options:
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
";

struct RawPlan {
    size: Option<u64>,
    prealloc: Option<Preallocation>,
}

impl RawPlan {
    fn parse(opts: &Opts) -> Result<RawPlan> {
        let mut p = RawPlan {
            size: None,
            prealloc: None,
        };
        for (k, v) in opts {
            match k.as_str() {
                "size" => p.size = Some(parse_size_opt(v)?),
                "preallocation" => {
                    p.prealloc = Some(parse_prealloc_opt(
                        v,
                        &[
                            Preallocation::Off,
                            Preallocation::Falloc,
                            Preallocation::Full,
                        ],
                    )?)
                }
                _ => return unknown_opt(k),
            }
        }
        Ok(p)
    }
}

impl CreatePlan for RawPlan {
    fn format(&self) -> Format {
        Format::Raw
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
    fn set_size(&mut self, size: u64) {
        self.size = Some(size);
    }
    fn formatting_line(&self, file: &str) -> String {
        let mut s = format!(
            "Formatting '{file}', fmt=raw size={}",
            self.size.unwrap_or(0)
        );
        if let Some(p) = self.prealloc {
            s += &format!(" preallocation={}", p.name());
        }
        s
    }
    fn create(&self, path: &Path) -> Result<()> {
        // QEMU's file driver rounds the size up to whole sectors.
        crate::raw::Raw::create(
            path,
            self.size.unwrap_or(0).div_ceil(512).saturating_mul(512),
            self.prealloc.unwrap_or_default(),
        )
    }
}
