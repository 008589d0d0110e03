//! Creating vpc (VHD) images with qemu-img's options, defaults, size rounding and messages.

use super::footer::*;
use crate::create::{parse_bool_opt, parse_size_opt, unknown_opt, CreatePlan, Opts};
use crate::driver::Format;
use crate::error::{Error, Result};
use crate::fileio;
use std::fs::OpenOptions;
use std::path::Path;

/// What `qemu-img create -f vpc -o help FILE` lists (the file protocol's preallocation
/// included; its nocow and extent_size_hint are not offered).
pub const OPTION_HELP: &str = "\
Supported options:
  force_size=<bool (on/off)> - Force disk size calculation to use the actual size specified, rather than using the nearest CHS-based calculation
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
  subformat=<str>        - Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed} 
";

pub fn plan(opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    Ok(Box::new(Plan::parse(opts)?))
}

#[derive(Debug, Default)]
struct Plan {
    size: Option<u64>,
    /// As given; checked when the image is created (after qemu-img's "Formatting" line).
    subformat: Option<String>,
    force_size: bool,
    force_given: Option<String>,
    prealloc: Option<String>,
}

impl Plan {
    fn parse(opts: &Opts) -> Result<Plan> {
        let mut p = Plan::default();
        for (k, v) in opts {
            match k.as_str() {
                "size" => p.size = Some(parse_size_opt(v)?),
                "subformat" => p.subformat = Some(v.clone()),
                "force_size" => {
                    p.force_size = parse_bool_opt(k, v)?;
                    p.force_given = Some(v.clone());
                }
                "preallocation" => p.prealloc = Some(v.clone()),
                _ => return unknown_opt(k),
            }
        }
        Ok(p)
    }
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Vpc
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
    fn set_size(&mut self, size: u64) {
        self.size = Some(size);
    }
    fn formatting_line(&self, file: &str) -> String {
        let mut s = format!(
            "Formatting '{file}', fmt=vpc size={}",
            self.size.unwrap_or(0)
        );
        if let Some(v) = &self.subformat {
            s += &format!(" subformat={v}");
        }
        if let Some(v) = &self.force_given {
            s += &format!(" force_size={v}");
        }
        if let Some(v) = &self.prealloc {
            s += &format!(" preallocation={v}");
        }
        s
    }
    fn create(&self, path: &Path) -> Result<()> {
        crate::vdi::create::check_file_prealloc(self.prealloc.as_deref())?;
        let fixed = match self.subformat.as_deref() {
            None | Some("dynamic") => false,
            Some("fixed") => true,
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "Parameter 'subformat' does not accept value '{v}'"
                )))
            }
        };
        create(path, self.size.unwrap_or(0), fixed, self.force_size)
    }
}

/// The virtual size qemu-img gives a vpc image created with `size` bytes (None: too large).
pub fn virtual_size_for(size: u64, force_size: bool) -> Option<u64> {
    let size = size.checked_next_multiple_of(512)?;
    rounded_size(size, force_size).map(|(t, _)| t * 512)
}

/// Creates (or truncates) a VHD laid out as QEMU's vpc_co_create does.
pub fn create(path: &Path, size: u64, fixed: bool, force_size: bool) -> Result<()> {
    let too_large = || Error::Invalid("The image size is too large for file format 'vpc'".into());
    // Rounded up to sectors, then (unless force_size) to what a CHS geometry holds.
    let size = size.checked_next_multiple_of(512).ok_or_else(too_large)?;
    let (total, geo) = rounded_size(size, force_size).ok_or_else(too_large)?;
    let size = total * 512;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let uuid = crate::vdi::header::random_uuid_v4()?;
    let disk_type = if fixed { TYPE_FIXED } else { TYPE_DYNAMIC };
    let footer = new_footer(size, geo, disk_type, force_size, uuid, now);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    if fixed {
        file.set_len(size + FOOTER_LEN as u64)?;
        fileio::write_full(&file, &footer, size)?;
        return Ok(());
    }
    let entries = total.div_ceil(DEFAULT_BLOCK_SIZE as u64 / 512);
    let bat_bytes = (entries * 4).next_multiple_of(512);
    let mut b = Vec::with_capacity(1536 + bat_bytes as usize + FOOTER_LEN);
    b.extend_from_slice(&footer);
    // total <= 2040 GiB in sectors, so the entry count fits.
    b.extend_from_slice(&new_dyn_header(entries as u32));
    b.resize(1536 + bat_bytes as usize, 0xff);
    b.extend_from_slice(&footer);
    fileio::write_full(&file, &b, 0)?;
    Ok(())
}
