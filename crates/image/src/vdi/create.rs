//! Creating vdi images with qemu-img's options, defaults and messages.

use super::header::{self, BLOCK_SIZE, DISK_SIZE_MAX, SECTOR};
use crate::create::{parse_bool_opt, parse_size_opt, unknown_opt, CreatePlan, Opts};
use crate::driver::Format;
use crate::error::{Error, Result};
use crate::fileio;
use std::fs::OpenOptions;
use std::path::Path;

/// What `qemu-img create -f vdi -o help FILE` lists (the file protocol's preallocation
/// included; its nocow and extent_size_hint are not offered).
pub const OPTION_HELP: &str = "\
Supported options:
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size
  static=<bool (on/off)> - VDI static (pre-allocated) image
";

pub fn plan(opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    Ok(Box::new(Plan::parse(opts)?))
}

#[derive(Debug, Default)]
struct Plan {
    size: Option<u64>,
    is_static: bool,
    /// static= as given (the Formatting line echoes it).
    static_given: Option<String>,
    /// preallocation= as given: the file protocol's option. QEMU creates the file empty and
    /// writes the header afterwards, so it only decides whether creation fails.
    prealloc: Option<String>,
}

impl Plan {
    fn parse(opts: &Opts) -> Result<Plan> {
        let mut p = Plan::default();
        for (k, v) in opts {
            match k.as_str() {
                "size" => p.size = Some(parse_size_opt(v)?),
                "static" => {
                    p.is_static = parse_bool_opt(k, v)?;
                    p.static_given = Some(v.clone());
                }
                "preallocation" => p.prealloc = Some(v.clone()),
                _ => return unknown_opt(k),
            }
        }
        Ok(p)
    }
}

/// The file protocol's verdict on preallocation= (given after the "Formatting" line).
pub(crate) fn check_file_prealloc(v: Option<&str>) -> Result<()> {
    match v {
        None | Some("off" | "falloc" | "full") => Ok(()),
        Some("metadata") => Err(Error::Invalid(
            "Unsupported preallocation mode: metadata".into(),
        )),
        Some(v) => Err(Error::Invalid(format!("invalid parameter value: {v}"))),
    }
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Vdi
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
    fn set_size(&mut self, size: u64) {
        self.size = Some(size);
    }
    fn formatting_line(&self, file: &str) -> String {
        let mut s = format!(
            "Formatting '{file}', fmt=vdi size={} static={}",
            self.size.unwrap_or(0),
            self.static_given.as_deref().unwrap_or("off")
        );
        if let Some(p) = &self.prealloc {
            s += &format!(" preallocation={p}");
        }
        s
    }
    fn create(&self, path: &Path) -> Result<()> {
        check_file_prealloc(self.prealloc.as_deref())?;
        create(path, self.size.unwrap_or(0), self.is_static)
    }
}

/// Creates (or truncates) a vdi image laid out as QEMU's vdi_co_do_create does.
pub fn create(path: &Path, size: u64, is_static: bool) -> Result<()> {
    // QEMU rounds up silently.
    let size = size.checked_next_multiple_of(SECTOR).unwrap_or(u64::MAX);
    if size > DISK_SIZE_MAX {
        return Err(Error::Unsupported(format!(
            "Unsupported VDI image size (size is {size:#x}, max supported is {DISK_SIZE_MAX:#x})"
        )));
    }
    let blocks = size.div_ceil(BLOCK_SIZE as u64) as u32;
    let hdr = header::new_header(size, blocks, is_static)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let bmap_bytes = (blocks as u64 * 4).div_ceil(SECTOR) * SECTOR;
    let mut b = Vec::with_capacity(512 + bmap_bytes as usize);
    b.extend_from_slice(&hdr);
    for i in 0..blocks {
        let e = if is_static { i } else { header::UNALLOCATED };
        b.extend_from_slice(&e.to_le_bytes());
    }
    b.resize(512 + bmap_bytes as usize, 0);
    fileio::write_full(&file, &b, 0)?;
    if is_static {
        file.set_len(512 + bmap_bytes + blocks as u64 * BLOCK_SIZE as u64)?;
    }
    Ok(())
}
