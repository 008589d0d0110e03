//! Creating qcow2 images with qemu-img's options, defaults and error messages.

use super::header::{self, Compression, Header};
use super::Qcow2;
use crate::create::{
    parse_bool_opt, parse_prealloc_opt, parse_size_opt, unknown_opt, CreatePlan, Opts,
};
use crate::driver::Format;
use crate::driver::Preallocation;
use crate::error::{invalid, Error, Result};
use crate::fileio;
use std::fs::OpenOptions;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_size: u64,
    /// compat=1.1 (v3) when true, compat=0.10 (v2) otherwise.
    pub v3: bool,
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
    pub preallocation: Preallocation,
    pub lazy_refcounts: bool,
    pub compression: Compression,
    pub refcount_bits: u32,
    pub extended_l2: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size: 0,
            cluster_size: 65536,
            v3: true,
            backing_file: None,
            backing_format: None,
            preallocation: Preallocation::Off,
            lazy_refcounts: false,
            compression: Compression::Zlib,
            refcount_bits: 16,
            extended_l2: false,
        }
    }
}

pub fn validate(o: &CreateOptions) -> Result<()> {
    let cs = o.cluster_size;
    if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
        return invalid("Cluster size must be a power of two between 512 and 2048k");
    }
    if !o.refcount_bits.is_power_of_two() || o.refcount_bits > 64 {
        return invalid("Refcount width must be a power of two and may not exceed 64 bits");
    }
    if !o.v3 {
        if o.lazy_refcounts {
            return invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        }
        if o.refcount_bits != 16 {
            return invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
        }
        if o.compression != Compression::Zlib {
            return invalid("Compression type selection is only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        }
        if o.extended_l2 {
            return invalid("Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
        }
    }
    if o.extended_l2 && cs < 16384 {
        return invalid(
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
        );
    }
    if o.backing_file.is_some() && o.preallocation != Preallocation::Off && !o.extended_l2 {
        return invalid(
            "Backing file and preallocation can only be used at the same time if extended_l2 is on",
        );
    }
    Ok(())
}

/// Creates a new image: header, one refcount table and block, then an L1 table sized for the
/// virtual size through the normal allocator, then preallocation.
pub fn create(path: &Path, o: &CreateOptions) -> Result<()> {
    validate(o)?;
    let cs = o.cluster_size;
    let cluster_bits = cs.trailing_zeros();
    let size = o.size.div_ceil(512) * 512;
    let refcount_order = o.refcount_bits.trailing_zeros();
    let mut incompat = 0;
    if o.compression != Compression::Zlib {
        incompat |= header::INCOMPAT_COMPRESSION;
    }
    if o.extended_l2 {
        incompat |= header::INCOMPAT_EXTL2;
    }
    let h = Header {
        version: if o.v3 { 3 } else { 2 },
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits,
        size: 0,
        crypt_method: 0,
        l1_size: 0,
        l1_table_offset: 3 * cs,
        refcount_table_offset: cs,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: incompat,
        compatible_features: if o.lazy_refcounts {
            header::COMPAT_LAZY_REFCOUNTS
        } else {
            0
        },
        autoclear_features: 0,
        refcount_order,
        header_length: if o.v3 {
            header::V3_HEADER_LEN_WRITTEN
        } else {
            header::V2_HEADER_LEN
        },
        compression: o.compression,
        extensions: if o.v3 {
            vec![header::Extension {
                kind: header::EXT_FEATURE_TABLE,
                data: header::feature_table(),
            }]
        } else {
            Vec::new()
        },
        backing_file: o.backing_file.clone(),
        backing_format: o.backing_format.clone(),
    };
    let hbytes = h.serialize()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let mut first = vec![0u8; 3 * cs as usize];
    first[..hbytes.len()].copy_from_slice(&hbytes);
    // Refcount table: one block at cluster 2; the block counts clusters 0, 1 and 2.
    first[cs as usize..cs as usize + 8].copy_from_slice(&(2 * cs).to_be_bytes());
    let block = &mut first[2 * cs as usize..];
    for c in 0..3u64 {
        super::Meta::rb_set(refcount_order, block, c, 1);
    }
    fileio::write_full(&file, &first, 0)?;
    drop(file);

    let q = Qcow2::open(path, true)?.image;
    {
        let g = q.geometry();
        let entries = header::l1_entries_for(size, cluster_bits, g.l2_bits)
            .ok_or_else(|| crate::Error::Invalid("Image size is too large".into()))?;
        let mut m = q.lock();
        q.resize_l1(&mut m, entries.max(1))?;
        m.set_size_field(size)?;
    }
    q.size.store(size, std::sync::atomic::Ordering::Relaxed);
    q.preallocate(0, size, o.preallocation)?;
    Ok(())
}

pub const OPTION_HELP: &str = "\
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

/// `qemu-img create -f qcow2` options, parsed.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub o: CreateOptions,
    pub prealloc_given: bool,
    /// compat= as the user spelled it (the Formatting line echoes it).
    pub compat_given: Option<String>,
    pub size_given: bool,
}

impl Plan {
    pub fn parse(opts: &Opts) -> Result<Plan> {
        let mut p = Plan::default();
        for (k, v) in opts {
            let k = k.as_str();
            match k {
                "size" => {
                    p.o.size = parse_size_opt(v)?;
                    p.size_given = true;
                }
                "preallocation" => {
                    p.o.preallocation = parse_prealloc_opt(
                        v,
                        &[
                            Preallocation::Off,
                            Preallocation::Metadata,
                            Preallocation::Falloc,
                            Preallocation::Full,
                        ],
                    )?;
                    p.prealloc_given = true;
                }
                "compat" => {
                    p.o.v3 = match v.as_str() {
                        "0.10" | "v2" => false,
                        "1.1" | "v3" => true,
                        _ => {
                            return invalid(format!(
                                "Parameter 'version' does not accept value '{v}'"
                            ))
                        }
                    };
                    p.compat_given = Some(v.clone());
                }
                "backing_file" => p.o.backing_file = Some(v.clone()),
                "backing_fmt" => p.o.backing_format = Some(v.clone()),
                "cluster_size" => {
                    p.o.cluster_size = crate::size::parse(v).map_err(|_| {
                        Error::Invalid(
                            "Cluster size must be a power of two between 512 and 2048k".into(),
                        )
                    })?
                }
                "lazy_refcounts" => p.o.lazy_refcounts = parse_bool_opt(k, v)?,
                "extended_l2" => p.o.extended_l2 = parse_bool_opt(k, v)?,
                "refcount_bits" => {
                    p.o.refcount_bits = v.parse().map_err(|_| {
                        Error::Invalid(
                            "Refcount width must be a power of two and may not exceed 64 bits"
                                .into(),
                        )
                    })?
                }
                "compression_type" => {
                    p.o.compression = match v.as_str() {
                        "zlib" => Compression::Zlib,
                        "zstd" => Compression::Zstd,
                        _ => {
                            return invalid(format!(
                                "Parameter 'compression-type' does not accept value '{v}'"
                            ))
                        }
                    }
                }
                "encryption" | "encrypt.format" if v == "off" => {}
                _ => return unknown_opt(k),
            }
        }
        Ok(p)
    }
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Qcow2
    }
    fn size(&self) -> Option<u64> {
        self.size_given.then_some(self.o.size)
    }
    fn set_size(&mut self, size: u64) {
        self.o.size = size;
        self.size_given = true;
    }
    fn backing(&self) -> Option<(String, Option<String>)> {
        self.o
            .backing_file
            .clone()
            .map(|b| (b, self.o.backing_format.clone()))
    }
    /// Exactly as qemu-img 10 prints it.
    fn formatting_line(&self, file: &str) -> String {
        let q = &self.o;
        let onoff = |b: bool| if b { "on" } else { "off" };
        let mut s = format!(
            "Formatting '{file}', fmt=qcow2 cluster_size={} extended_l2={}",
            q.cluster_size,
            onoff(q.extended_l2)
        );
        if self.prealloc_given {
            s += &format!(" preallocation={}", q.preallocation.name());
        }
        s += &format!(" compression_type={} size={}", q.compression.name(), q.size);
        if let Some(c) = &self.compat_given {
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
        s
    }
    fn create(&self, path: &Path) -> Result<()> {
        create(path, &self.o)
    }
}
