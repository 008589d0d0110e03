//! Creating vmdk images with qemu-img's options, defaults, file layout and messages
//! (QEMU's vmdk_co_create_opts / vmdk_co_do_create / vmdk_init_extent).

use super::descriptor::{Template, DESC_SIZE};
use super::sparse::{self, Header};
use crate::create::{parse_bool_opt, parse_size_opt, unknown_opt, CreatePlan, Opts};
use crate::driver::Format;
use crate::error::{Error, Result};
use crate::fileio;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

pub const OPTION_HELP: &str = "\
Supported vmdk options:
  adapter_type=<str>     - Virtual adapter type, can be one of ide (default), lsilogic, buslogic or legacyESX
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Must be 'vmdk' if present
  compat6=<bool (on/off)> - VMDK version 6 image
  hwversion=<str>        - VMDK hardware version
  size=<size>            - Virtual disk size
  subformat=<str>        - VMDK flat extent format, can be one of {monolithicSparse (default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | streamOptimized} 
  toolsversion=<str>     - VMware guest tools version
  zeroed_grain=<bool (on/off)> - Enable efficient zero writes using the zeroed-grain GTE feature

The protocol level may support further options.
Specify the target filename to include those options.
";

/// VMDK's constant split size for the twoGbMaxExtent subformats.
const SPLIT_SIZE: u64 = 0x8000_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Subformat {
    #[default]
    MonolithicSparse,
    MonolithicFlat,
    TwoGbMaxExtentSparse,
    TwoGbMaxExtentFlat,
    StreamOptimized,
}

impl Subformat {
    pub const ALL: [Subformat; 5] = [
        Subformat::MonolithicSparse,
        Subformat::MonolithicFlat,
        Subformat::TwoGbMaxExtentSparse,
        Subformat::TwoGbMaxExtentFlat,
        Subformat::StreamOptimized,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Subformat::MonolithicSparse => "monolithicSparse",
            Subformat::MonolithicFlat => "monolithicFlat",
            Subformat::TwoGbMaxExtentSparse => "twoGbMaxExtentSparse",
            Subformat::TwoGbMaxExtentFlat => "twoGbMaxExtentFlat",
            Subformat::StreamOptimized => "streamOptimized",
        }
    }
    pub fn from_name(s: &str) -> Option<Subformat> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }
    fn flat(self) -> bool {
        matches!(
            self,
            Subformat::MonolithicFlat | Subformat::TwoGbMaxExtentFlat
        )
    }
    fn split(self) -> bool {
        matches!(
            self,
            Subformat::TwoGbMaxExtentSparse | Subformat::TwoGbMaxExtentFlat
        )
    }
}

const ADAPTERS: [&str; 4] = ["ide", "buslogic", "lsilogic", "legacyESX"];

/// `qemu-img create -f vmdk` options as given (values are validated at creation, where
/// QEMU validates them, after the "Formatting" line).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub size: Option<u64>,
    pub adapter_type: Option<String>,
    pub backing_file: Option<String>,
    pub backing_fmt: Option<String>,
    /// As given (echoed in the Formatting line), and parsed.
    pub compat6: Option<(String, bool)>,
    pub hwversion: Option<String>,
    pub toolsversion: Option<String>,
    pub subformat: Option<String>,
    pub zeroed_grain: Option<(String, bool)>,
}

pub fn plan(opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    Ok(Box::new(Plan::parse(opts)?))
}

impl Plan {
    pub fn parse(opts: &Opts) -> Result<Plan> {
        let mut p = Plan::default();
        for (k, v) in opts {
            match k.as_str() {
                "size" => p.size = Some(parse_size_opt(v)?),
                "adapter_type" => p.adapter_type = Some(v.clone()),
                "backing_file" => p.backing_file = Some(v.clone()),
                "backing_fmt" => p.backing_fmt = Some(v.clone()),
                "compat6" => p.compat6 = Some((v.clone(), parse_bool(k, v)?)),
                "hwversion" => p.hwversion = Some(v.clone()),
                "toolsversion" => p.toolsversion = Some(v.clone()),
                "subformat" => p.subformat = Some(v.clone()),
                "zeroed_grain" => p.zeroed_grain = Some((v.clone(), parse_bool(k, v)?)),
                _ => return unknown_opt(k),
            }
        }
        Ok(p)
    }

    fn subformat(&self) -> Result<Subformat> {
        match &self.subformat {
            None => Ok(Subformat::MonolithicSparse),
            Some(s) => Subformat::from_name(s)
                .ok_or_else(|| Error::Invalid(format!("invalid parameter value: {s}"))),
        }
    }
}

/// QEMU's boolean option values (also y/n).
fn parse_bool(k: &str, v: &str) -> Result<bool> {
    match v {
        "y" => Ok(true),
        "n" => Ok(false),
        _ => parse_bool_opt(k, v),
    }
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Vmdk
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
    /// Options in the order of QEMU's vmdk_create_opts; compat6 and hwversion always (they
    /// have defaults), the others when given, values as the user spelled them.
    fn formatting_line(&self, file: &str) -> String {
        let mut s = format!(
            "Formatting '{file}', fmt=vmdk size={}",
            self.size.unwrap_or(0)
        );
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                s += &format!(" {k}={v}");
            }
        };
        opt("adapter_type", &self.adapter_type);
        opt("backing_file", &self.backing_file);
        opt("backing_fmt", &self.backing_fmt);
        s += &format!(
            " compat6={}",
            self.compat6.as_ref().map(|c| c.0.as_str()).unwrap_or("off")
        );
        s += &format!(
            " hwversion={}",
            self.hwversion.as_deref().unwrap_or("undefined")
        );
        let mut opt = |k: &str, v: Option<&str>| {
            if let Some(v) = v {
                s += &format!(" {k}={v}");
            }
        };
        opt("toolsversion", self.toolsversion.as_deref());
        opt("subformat", self.subformat.as_deref());
        opt(
            "zeroed_grain",
            self.zeroed_grain.as_ref().map(|z| z.0.as_str()),
        );
        s
    }
    fn create(&self, path: &Path) -> Result<()> {
        create(self, path)
    }
}

/// QEMU's filename_decompose: directory (with its '/'), name before the last '.', and the
/// extension from that '.'.
fn decompose(filename: &str) -> Result<(String, String, String)> {
    if filename.is_empty() {
        return Err(Error::Invalid("No filename provided".into()));
    }
    let (dir, base) = match filename.rfind('/') {
        Some(i) => (&filename[..=i], &filename[i + 1..]),
        None => ("", filename),
    };
    let (prefix, postfix) = match base.rfind('.') {
        Some(i) => (&base[..i], &base[i..]),
        None => (base, ""),
    };
    Ok((dir.to_string(), prefix.to_string(), postfix.to_string()))
}

fn create_file(path: &Path) -> Result<File> {
    Ok(OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?)
}

/// QEMU's vmdk_init_extent on a new file: a flat extent is just sized (its first block
/// allocated, as QEMU's file creation does); a sparse one gets its header, grain directory,
/// redundant grain directory and room for every grain table.
fn init_extent(f: &File, size: u64, flat: bool, compress: bool, zeroed: bool) -> Result<()> {
    if flat {
        f.set_len(size)?;
        if size > 0 {
            fileio::write_full(f, &vec![0u8; size.min(4096) as usize], 0)?;
        }
        return Ok(());
    }
    let capacity = size / 512;
    let granularity = 128u64;
    let gtes = 512u64;
    let grains = capacity.div_ceil(granularity);
    let gt_size = (gtes * 4).div_ceil(512);
    let gt_count = grains.div_ceil(gtes);
    let gd_sectors = (gt_count * 4).div_ceil(512);
    let desc_offset = 1u64;
    let desc_size = 20u64;
    let rgd_offset = desc_offset + desc_size;
    let gd_offset = rgd_offset + gd_sectors + gt_size * gt_count;
    let grain_offset =
        (gd_offset + gd_sectors + gt_size * gt_count).div_ceil(granularity) * granularity;
    if gd_offset + gd_sectors + gt_size * gt_count >= sparse::MAX_EXTENT_SECTORS {
        return Err(Error::Invalid(
            "Image size is too large for a sparse VMDK extent".into(),
        ));
    }
    let h = Header {
        version: if compress {
            3
        } else if zeroed {
            2
        } else {
            1
        },
        flags: sparse::FLAG_RGD
            | sparse::FLAG_NL_DETECT
            | if compress {
                sparse::FLAG_COMPRESS | sparse::FLAG_MARKER
            } else {
                0
            }
            | if zeroed { sparse::FLAG_ZERO_GRAIN } else { 0 },
        capacity,
        granularity,
        desc_offset,
        desc_size,
        num_gtes_per_gt: gtes as u32,
        rgd_offset,
        gd_offset,
        grain_offset,
        filler: 0,
        check_bytes: [0xa, 0x20, 0xd, 0xa],
        compress_algorithm: if compress {
            sparse::COMPRESSION_DEFLATE
        } else {
            0
        },
    };
    fileio::write_full(f, &h.serialize(), 0)?;
    f.set_len(grain_offset * 512)?;
    let dir = |first: u64| -> Vec<u8> {
        let mut b = vec![0u8; (gd_sectors * 512) as usize];
        for i in 0..gt_count {
            let v = (first + i * gt_size) as u32;
            b[i as usize * 4..i as usize * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    };
    fileio::write_full(f, &dir(rgd_offset + gd_sectors), rgd_offset * 512)?;
    fileio::write_full(f, &dir(gd_offset + gd_sectors), gd_offset * 512)?;
    Ok(())
}

pub fn create(p: &Plan, path: &Path) -> Result<()> {
    if p.backing_fmt.as_deref().is_some_and(|f| f != "vmdk") {
        return Err(Error::Invalid("backing_file must be a vmdk image".into()));
    }
    let size = p.size.unwrap_or(0).div_ceil(512) * 512;
    let adapter = match p.adapter_type.as_deref() {
        None => "ide",
        Some(a) => ADAPTERS
            .into_iter()
            .find(|x| *x == a)
            .ok_or_else(|| Error::Invalid(format!("invalid parameter value: {a}")))?,
    };
    let sub = p.subformat()?;
    let compat6 = p.compat6.as_ref().is_some_and(|c| c.1);
    let zeroed = p.zeroed_grain.as_ref().is_some_and(|z| z.1);
    let hw_given = p.hwversion.as_deref().filter(|h| *h != "undefined");
    if compat6 && hw_given.is_some() {
        return Err(Error::Invalid(
            "compat6 cannot be enabled with hwversion set".into(),
        ));
    }
    let hw = if compat6 {
        "6"
    } else {
        hw_given.unwrap_or("4")
    };
    let tools = p.toolsversion.as_deref().unwrap_or("2147483647");
    let heads: u32 = if adapter == "ide" { 16 } else { 255 };
    let (flat, split, compress) = (sub.flat(), sub.split(), sub == Subformat::StreamOptimized);
    if flat && p.backing_file.is_some() {
        return Err(Error::Unsupported(
            "Flat image can't have backing file".into(),
        ));
    }
    if flat && zeroed {
        return Err(Error::Unsupported(
            "Flat image can't enable zeroed grain".into(),
        ));
    }
    let fname = path.to_string_lossy().into_owned();
    let (dir, prefix, postfix) = decompose(&fname)?;
    let extent_size = if split { SPLIT_SIZE } else { size };
    let monolithic = !split && !flat;
    let mut created = if monolithic { extent_size } else { 0 };
    let line = |sectors: u64, name: &str| {
        if flat {
            format!("RW {sectors} FLAT \"{name}\" 0\n")
        } else {
            format!("RW {sectors} SPARSE \"{name}\"\n")
        }
    };
    // The descriptor file (for monolithic subformats, the whole image).
    let main = create_file(path)?;
    init_extent(&main, created, flat, compress, zeroed)?;
    let basename = |p: &str| -> String {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut lines = String::new();
    if monolithic {
        lines += &line(created.div_ceil(512), &basename(&fname));
    }
    let mut parent_cid = 0xffff_ffffu32;
    if let Some(b) = &p.backing_file {
        let full = crate::chain::resolve_backing(path, b);
        let fmt = crate::chain::probe(&full).map_err(|e| match e {
            Error::Io(io) => Error::Invalid(format!(
                "Could not open '{}': {}",
                full.display(),
                super::io_text(&io)
            )),
            e => e,
        })?;
        if fmt != Format::Vmdk {
            return Err(Error::Invalid(format!(
                "Invalid backing file format: {}. Must be vmdk",
                fmt.name()
            )));
        }
        super::Vmdk::open(&full, false)?;
        parent_cid = super::read_cid_of(&full)
            .map_err(|_| Error::Invalid("Failed to read parent CID".into()))?;
    }
    let mut idx = 1u32;
    while created < size {
        let cur = (size - created).min(extent_size);
        let rel = if split {
            format!("{prefix}-{}{idx:03}{postfix}", if flat { 'f' } else { 's' })
        } else {
            format!("{prefix}-flat{postfix}")
        };
        let ext_path = PathBuf::from(format!("{dir}{rel}"));
        let f = create_file(&ext_path)?;
        init_extent(&f, cur, flat, compress, zeroed)?;
        lines += &line(cur.div_ceil(512), &basename(&rel));
        created += cur;
        idx += 1;
    }
    let desc = Template {
        cid: super::random_u32(),
        parent_cid,
        create_type: sub.name(),
        parent_hint: p.backing_file.as_deref(),
        extents: &lines,
        hw_version: hw,
        cylinders: size / (63 * heads as u64 * 512),
        heads,
        adapter_type: adapter,
        tools_version: tools,
    }
    .render();
    if monolithic {
        // The embedded descriptor has 20 sectors; QEMU would overwrite the directories.
        if desc.len() > DESC_SIZE {
            return Err(Error::Invalid(
                "The VMDK descriptor does not fit in its 20 sectors".into(),
            ));
        }
        fileio::write_full(&main, desc.as_bytes(), 0x200)?;
    } else {
        fileio::write_full(&main, desc.as_bytes(), 0)?;
        main.set_len(desc.len() as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_decomposition() {
        assert_eq!(
            decompose("a/b/c.d.vmdk").unwrap(),
            ("a/b/".into(), "c.d".into(), ".vmdk".into())
        );
        assert_eq!(
            decompose("disk").unwrap(),
            ("".into(), "disk".into(), "".into())
        );
        assert!(decompose("").is_err());
    }

    #[test]
    fn formatting_line_like_qemu() {
        let o: Vec<(String, String)> = [
            ("zeroed_grain", "yes"),
            ("subformat", "streamOptimized"),
            ("adapter_type", "lsilogic"),
            ("size", "1048576"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let p = Plan::parse(&o).unwrap();
        assert_eq!(
            p.formatting_line("x.vmdk"),
            "Formatting 'x.vmdk', fmt=vmdk size=1048576 adapter_type=lsilogic compat6=off hwversion=undefined subformat=streamOptimized zeroed_grain=yes"
        );
    }
}
