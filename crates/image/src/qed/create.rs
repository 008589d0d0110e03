//! Creating qed images with qemu-img's options, defaults, limits and messages.

use super::header::{self, Header};
use crate::create::{parse_size_opt, unknown_opt, CreatePlan, FileOpts, Opts};
use crate::driver::Format;
use crate::error::{Error, Result};
use crate::fileio;
use std::fs::OpenOptions;
use std::path::Path;

pub const OPTION_HELP: &str = "\
Supported qed options:
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  cluster_size=<size>    - Cluster size (in bytes)
  size=<size>            - Virtual disk size
  table_size=<size>      - L1/L2 table size (in clusters)

The protocol level may support further options.
Specify the target filename to include those options.
";

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub size: Option<u64>,
    pub backing_file: Option<String>,
    pub backing_fmt: Option<String>,
    pub cluster_size: Option<u64>,
    pub table_size: Option<u64>,
    pub file: FileOpts,
}

fn size_param(k: &str, v: &str) -> Result<u64> {
    crate::size::parse(v).map_err(|_| {
        Error::Invalid(format!(
            "Parameter '{k}' expects a non-negative number below 2^64"
        ))
    })
}

pub fn plan(opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    let mut p = Plan::default();
    for (k, v) in opts {
        match k.as_str() {
            "size" => p.size = Some(parse_size_opt(v)?),
            "backing_file" => p.backing_file = Some(v.clone()),
            "backing_fmt" => p.backing_fmt = Some(v.clone()),
            "cluster_size" => p.cluster_size = Some(size_param(k, v)?),
            "table_size" => p.table_size = Some(size_param(k, v)?),
            _ if p.file.parse(k, v)? => {}
            _ => return unknown_opt(k),
        }
    }
    Ok(Box::new(p))
}

impl Plan {
    /// The header QEMU's bdrv_qed_co_create writes, after its checks.
    pub fn header(&self) -> Result<Header> {
        let cs = self.cluster_size.unwrap_or(header::DEFAULT_CLUSTER_SIZE);
        let ts = self.table_size.unwrap_or(header::DEFAULT_TABLE_SIZE);
        // QEMU silently rounds the size up to a sector.
        let size = self.size.unwrap_or(0).div_ceil(512).saturating_mul(512);
        if !header::cluster_size_valid(cs) {
            return Err(Error::Invalid(format!(
                "QED cluster size must be within range [{}, {}] and power of 2",
                header::MIN_CLUSTER_SIZE,
                header::MAX_CLUSTER_SIZE
            )));
        }
        if !header::table_size_valid(ts) {
            return Err(Error::Invalid(format!(
                "QED table size must be within range [{}, {}] and power of 2",
                header::MIN_TABLE_SIZE,
                header::MAX_TABLE_SIZE
            )));
        }
        if !header::image_size_valid(size, cs, ts) {
            return Err(Error::Invalid(format!(
                "QED image size must be a non-zero multiple of cluster size and less than {} bytes",
                header::max_image_size(cs, ts)
            )));
        }
        let mut h = Header {
            cluster_size: cs as u32,
            table_size: ts as u32,
            header_size: 1,
            l1_table_offset: cs,
            image_size: size,
            ..Default::default()
        };
        if let Some(b) = &self.backing_file {
            if header::LEN as u64 + b.len() as u64 > cs {
                return Err(Error::Invalid(
                    "Backing file name too long for the QED header".into(),
                ));
            }
            h.features |= header::F_BACKING_FILE;
            h.backing_filename_offset = header::LEN as u32;
            h.backing_filename_size = b.len() as u32;
            if self.backing_fmt.as_deref() == Some("raw") {
                h.features |= header::F_BACKING_FORMAT_NO_PROBE;
            }
        }
        Ok(h)
    }
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Qed
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
    fn set_size(&mut self, size: u64) {
        self.size = Some(size);
    }
    fn backing(&self) -> Option<(String, Option<String>)> {
        self.backing_file
            .clone()
            .map(|b| (b, self.backing_fmt.clone()))
    }
    fn formatting_line(&self, file: &str) -> String {
        let mut s = format!(
            "Formatting '{file}', fmt=qed size={}",
            self.size.unwrap_or(0)
        );
        if let Some(b) = &self.backing_file {
            s += &format!(" backing_file={b}");
        }
        if let Some(f) = &self.backing_fmt {
            s += &format!(" backing_fmt={f}");
        }
        s += &format!(
            " cluster_size={}",
            self.cluster_size.unwrap_or(header::DEFAULT_CLUSTER_SIZE)
        );
        if let Some(t) = self.table_size {
            s += &format!(" table_size={t}");
        }
        s + &self.file.formatting_suffix()
    }
    fn create(&self, path: &Path) -> Result<()> {
        self.file.validate()?;
        let h = self.header()?;
        // The file's length is what QED allocates from: it starts empty.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let mut first = h.encode().to_vec();
        if let Some(b) = &self.backing_file {
            first.extend_from_slice(b.as_bytes());
        }
        fileio::write_full(&f, &first, 0)?;
        // The L1 table is written out as zeros, as QEMU does.
        fileio::write_zeroes_slow(
            &f,
            h.l1_table_offset,
            h.cluster_size as u64 * h.table_size as u64,
        )?;
        Ok(())
    }
}
