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

/// Options of the protocol layer (QEMU's file driver) that qemu-img accepts with any image
/// format: echoed after the format's own in the "Formatting" line and checked when the file
/// is created. nocow and extent_size_hint only mean something on btrfs and XFS, where QEMU
/// sets them as hints; virtkit accepts them and leaves the file's attributes alone.
#[derive(Debug, Clone, Default)]
pub struct FileOpts {
    pub nocow: Option<bool>,
    pub preallocation: Option<String>,
    pub extent_size_hint: Option<u64>,
}

impl FileOpts {
    /// Takes `k=v` if it is a protocol option (Ok(false) otherwise).
    pub fn parse(&mut self, k: &str, v: &str) -> Result<bool> {
        match k {
            "nocow" => self.nocow = Some(parse_bool_opt(k, v)?),
            "preallocation" => self.preallocation = Some(v.to_string()),
            "extent_size_hint" => {
                if v.trim_start().starts_with('-') {
                    return invalid_value(format!(
                        "Value '{v}' is out of range for parameter '{k}'"
                    ));
                }
                self.extent_size_hint = Some(crate::size::parse(v).map_err(|_| {
                    Error::Invalid(format!(
                        "Parameter '{k}' expects a non-negative number below 2^64"
                    ))
                })?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// What the "Formatting" line adds for them, in qemu-img's order.
    pub fn formatting_suffix(&self) -> String {
        let mut s = String::new();
        if let Some(b) = self.nocow {
            s += &format!(" nocow={}", if b { "on" } else { "off" });
        }
        if let Some(p) = &self.preallocation {
            s += &format!(" preallocation={p}");
        }
        if let Some(h) = self.extent_size_hint {
            s += &format!(" extent_size_hint={h}");
        }
        s
    }

    /// The file driver's refusals (after the "Formatting" line, as in qemu-img).
    pub fn validate(&self) -> Result<()> {
        match self.preallocation.as_deref() {
            None | Some("off") | Some("falloc") | Some("full") => {}
            Some("metadata") => {
                return invalid_value("Unsupported preallocation mode: metadata".to_string())
            }
            Some(v) => return invalid_value(format!("invalid parameter value: {v}")),
        }
        if self.extent_size_hint.is_some_and(|h| h > u32::MAX as u64) {
            return invalid_value("Extent size hint is too large".to_string());
        }
        Ok(())
    }
}

fn invalid_value<T>(m: String) -> Result<T> {
    Err(Error::Invalid(m))
}
