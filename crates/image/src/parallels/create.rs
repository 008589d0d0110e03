//! Creating parallels images with qemu-img's options, defaults, limits and messages
//! ("WithouFreSpacExt" images, as QEMU writes them).

use super::header::{self, Header};
use crate::create::{parse_size_opt, unknown_opt, CreatePlan, FileOpts, Opts};
use crate::driver::Format;
use crate::error::{Error, Result};
use crate::fileio;
use std::fs::OpenOptions;
use std::path::Path;

pub const OPTION_HELP: &str = "\
Supported parallels options:
  cluster_size=<size>    - Parallels image cluster size
  size=<size>            - Virtual disk size

The protocol level may support further options.
Specify the target filename to include those options.
";

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub size: Option<u64>,
    pub cluster_size: Option<u64>,
    pub file: FileOpts,
}

pub fn plan(opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    let mut p = Plan::default();
    for (k, v) in opts {
        match k.as_str() {
            "size" => p.size = Some(parse_size_opt(v)?),
            "cluster_size" => {
                p.cluster_size = Some(crate::size::parse(v).map_err(|_| {
                    Error::Invalid(
                        "Parameter 'cluster_size' expects a non-negative number below 2^64".into(),
                    )
                })?)
            }
            _ if p.file.parse(k, v)? => {}
            _ => return unknown_opt(k),
        }
    }
    Ok(Box::new(p))
}

impl Plan {
    /// The header QEMU's parallels_co_create writes, after its checks.
    pub fn header(&self) -> Result<Header> {
        // QEMU silently rounds both up to a sector.
        let round = |v: u64| v.div_ceil(512).saturating_mul(512);
        let total = round(self.size.unwrap_or(0));
        let cl = round(self.cluster_size.unwrap_or(header::DEFAULT_CLUSTER_SIZE));
        if cl >= i64::MAX as u64 / header::MAX_IMAGE_FACTOR {
            return Err(Error::Invalid("Cluster size is too large".into()));
        }
        if total >= header::MAX_IMAGE_FACTOR * cl {
            return Err(Error::Invalid(
                "Image size is too large for this cluster size".into(),
            ));
        }
        let bat_entries = total.div_ceil(cl);
        let bat_sectors = header::bat_entry_off(bat_entries).div_ceil(cl) * cl / 512;
        Ok(Header {
            magic: *header::MAGIC2,
            version: header::VERSION,
            heads: header::HEADS,
            cylinders: (total / 512 / header::HEADS as u64 / header::SEC_IN_CYL) as u32,
            tracks: (cl / 512) as u32,
            bat_entries: bat_entries as u32,
            nb_sectors: total / 512,
            inuse: 0,
            data_off: bat_sectors as u32,
            flags: 0,
            ext_off: 0,
        })
    }
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Parallels
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
    fn set_size(&mut self, size: u64) {
        self.size = Some(size);
    }
    fn formatting_line(&self, file: &str) -> String {
        format!(
            "Formatting '{file}', fmt=parallels size={} cluster_size={}{}",
            self.size.unwrap_or(0),
            self.cluster_size.unwrap_or(header::DEFAULT_CLUSTER_SIZE),
            self.file.formatting_suffix()
        )
    }
    fn create(&self, path: &Path) -> Result<()> {
        self.file.validate()?;
        let h = self.header()?;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut first = vec![0u8; 512];
        first[..header::LEN as usize].copy_from_slice(&h.encode());
        fileio::write_full(&f, &first, 0)?;
        // The BAT (and the padding to the data area) written as zeros, as QEMU does.
        let n = (h.data_off as u64 - 1) * 512;
        if n > 0 && fileio::fallocate(&f, 512, n).is_err() {
            fileio::write_zeroes_slow(&f, 512, n)?;
        }
        Ok(())
    }
}
