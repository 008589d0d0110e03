//! Creating vhdx images with qemu-img's options, defaults, messages and file layout:
//! file identifier, two headers, two region tables, an empty log of `log_size` after the
//! 1 MiB header section, the BAT, the 1 MiB metadata region, and data from 5 MiB past the BAT.

use super::bat::{self, MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, PAYLOAD_FULLY_PRESENT, PAYLOAD_ZERO};
use super::header::{
    put64, region_table, Guid, Header, RegionEntry, BAT_GUID, FILE_SIGNATURE, HEADER1_OFFSET,
    HEADER2_OFFSET, HEADER_SECTION_END, HEADER_SIZE, METADATA_GUID, MIB, REGION1_OFFSET,
    REGION2_OFFSET,
};
use super::metadata;
use crate::create::{parse_bool_opt, unknown_opt, CreatePlan, Opts};
use crate::driver::Format;
use crate::error::{invalid, Error, Result};
use crate::fileio;
use std::fs::OpenOptions;
use std::path::Path;

pub const OPTION_HELP: &str = "\
Supported options:
  block_size=<size>      - Block Size; min 1MB, max 256MB. 0 means auto-calculate based on image size.
  block_state_zero=<bool (on/off)> - Force use of payload blocks of type 'ZERO'. Non-standard, but default.  Do not set to 'off' when using 'qemu-img convert' with subformat=dynamic.
  extent_size_hint=<size> - Extent size hint for the image file, 0 to disable
  log_size=<size>        - Log size; min 1MB.
  nocow=<bool (on/off)>  - Turn off copy-on-write (valid only on btrfs)
  preallocation=<str>    - Preallocation mode (allowed values: off, falloc, full)
  size=<size>            - Virtual disk size; max of 64TB.
  subformat=<str>        - VHDX format type, can be either 'dynamic' or 'fixed'. Default is 'dynamic'.
";

pub const DEFAULT_LOG_SIZE: u64 = MIB;
/// Where the creator string (UTF-16LE, diagnostic only) goes, after the signature.
const CREATOR: &str = concat!("virtkit v", env!("CARGO_PKG_VERSION"));

/// `qemu-img create -f vhdx` options as given.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub size: Option<u64>,
    pub log_size: Option<u64>,
    pub block_size: Option<u64>,
    pub subformat: Option<String>,
    /// block_state_zero: the value and its spelling (the Formatting line echoes it).
    pub block_state_zero: Option<(bool, String)>,
    pub nocow: Option<String>,
    pub preallocation: Option<String>,
    pub extent_size_hint: Option<u64>,
}

/// A size option as QEMU's option parser reads it, with its messages.
fn parse_size(k: &str, v: &str) -> Result<u64> {
    crate::size::parse(v).map_err(|_| {
        let t = v.trim();
        // Integer syntax that failed only by overflowing; negative numbers also count.
        let d = t
            .strip_suffix(|c: char| "kKmMgGtTpPeEbB".contains(c))
            .unwrap_or(t);
        let int = !d.is_empty() && d.chars().all(|c| c.is_ascii_digit());
        if t.starts_with('-') || int {
            Error::Invalid(format!("Value '{v}' is out of range for parameter '{k}'"))
        } else {
            Error::Invalid(format!(
                "Parameter '{k}' expects a non-negative number below 2^64"
            ))
        }
    })
}

pub fn plan(opts: &Opts) -> Result<Box<dyn CreatePlan>> {
    Ok(Box::new(Plan::parse(opts)?))
}

impl Plan {
    pub fn parse(opts: &Opts) -> Result<Plan> {
        let mut p = Plan::default();
        for (k, v) in opts {
            match k.as_str() {
                "size" => p.size = Some(parse_size(k, v)?),
                "log_size" => p.log_size = Some(parse_size(k, v)?),
                "block_size" => p.block_size = Some(parse_size(k, v)?),
                "extent_size_hint" => p.extent_size_hint = Some(parse_size(k, v)?),
                "subformat" => p.subformat = Some(v.clone()),
                "block_state_zero" => p.block_state_zero = Some((parse_bool_opt(k, v)?, v.clone())),
                "nocow" => {
                    parse_bool_opt(k, v)?;
                    p.nocow = Some(v.clone());
                }
                "preallocation" => p.preallocation = Some(v.clone()),
                _ => return unknown_opt(k),
            }
        }
        Ok(p)
    }

    /// The checks QEMU makes after printing the Formatting line, in its order, and the
    /// resulting layout parameters.
    pub fn resolve(&self) -> Result<Resolved> {
        match self.preallocation.as_deref() {
            None | Some("off" | "falloc" | "full") => {}
            Some("metadata") => return invalid("Unsupported preallocation mode: metadata"),
            Some(v) => return invalid(format!("invalid parameter value: {v}")),
        }
        if self.extent_size_hint.is_some_and(|h| h > u32::MAX as u64) {
            return invalid("Extent size hint is too large");
        }
        let fixed = match self.subformat.as_deref() {
            None | Some("dynamic") => false,
            Some("fixed") => true,
            Some(v) => {
                return invalid(format!("Parameter 'subformat' does not accept value '{v}'"))
            }
        };
        // QEMU rounds silently: size to sectors, log and block size up to MiB (block size
        // clamped to the maximum; 0 means automatic).
        let size = self.size.unwrap_or(0);
        let size = size.div_ceil(512).saturating_mul(512);
        if size > MAX_VIRTUAL_SIZE {
            return invalid("Image size too large; max of 64TB");
        }
        let log_size = match self.log_size {
            None => DEFAULT_LOG_SIZE,
            Some(l) => l.div_ceil(MIB).saturating_mul(MIB),
        };
        if log_size > u32::MAX as u64 {
            return invalid("Log size must be smaller than 4 GB");
        }
        if log_size < MIB {
            return invalid("Log size must be a multiple of 1 MB");
        }
        let given = self
            .block_size
            .map(|b| b.div_ceil(MIB).saturating_mul(MIB).min(MAX_BLOCK_SIZE))
            .filter(|&b| b != 0);
        let block_size = given.unwrap_or(if size > 32 << 40 {
            64 * MIB
        } else if size > 100 << 30 {
            32 * MIB
        } else if size > 1 << 30 {
            16 * MIB
        } else {
            8 * MIB
        });
        if !block_size.is_power_of_two() {
            return invalid("Block size must be a power of two");
        }
        Ok(Resolved {
            size,
            log_size,
            block_size,
            fixed,
            zero_blocks: self.block_state_zero.as_ref().is_none_or(|z| z.0),
        })
    }
}

/// Validated creation parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub size: u64,
    pub log_size: u64,
    pub block_size: u64,
    pub fixed: bool,
    /// block_state_zero: unallocated blocks are PAYLOAD_BLOCK_ZERO rather than NOT_PRESENT.
    pub zero_blocks: bool,
}

impl CreatePlan for Plan {
    fn format(&self) -> Format {
        Format::Vhdx
    }
    fn size(&self) -> Option<u64> {
        self.size
    }
    fn set_size(&mut self, size: u64) {
        self.size = Some(size);
    }
    fn formatting_line(&self, file: &str) -> String {
        let mut s = format!(
            "Formatting '{file}', fmt=vhdx size={} log_size={} block_size={}",
            self.size.unwrap_or(0),
            self.log_size.unwrap_or(DEFAULT_LOG_SIZE),
            self.block_size.unwrap_or(0)
        );
        if let Some(v) = &self.subformat {
            s += &format!(" subformat={v}");
        }
        if let Some((_, v)) = &self.block_state_zero {
            s += &format!(" block_state_zero={v}");
        }
        if let Some(v) = &self.nocow {
            s += &format!(" nocow={v}");
        }
        if let Some(v) = &self.preallocation {
            s += &format!(" preallocation={v}");
        }
        if let Some(v) = self.extent_size_hint {
            s += &format!(" extent_size_hint={v}");
        }
        s
    }
    fn create(&self, path: &Path) -> Result<()> {
        create(path, &self.resolve()?)
    }
}

/// Writes a new image with QEMU's layout.
pub fn create(path: &Path, r: &Resolved) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    // File identifier: signature and creator.
    let mut id = FILE_SIGNATURE.to_vec();
    for u in CREATOR.encode_utf16() {
        id.extend_from_slice(&u.to_le_bytes());
    }
    fileio::write_full(&f, &id, 0)?;

    // Two headers, the second current; QEMU starts from a random 32-bit sequence number.
    let mut seq = [0u8; 4];
    super::header::random_bytes(&mut seq);
    let mut h = Header {
        seq: u32::from_le_bytes(seq) as u64,
        file_write_guid: Guid::random(),
        data_write_guid: Guid::random(),
        log_guid: Guid::ZERO,
        log_version: 0,
        version: 1,
        log_length: r.log_size as u32,
        log_offset: HEADER_SECTION_END,
    };
    let blank = [0u8; HEADER_SIZE];
    fileio::write_full(&f, &h.serialize(&blank), HEADER1_OFFSET)?;
    h.seq += 1;
    fileio::write_full(&f, &h.serialize(&blank), HEADER2_OFFSET)?;

    // Layout: log, BAT, metadata, then data 5 MiB after the BAT (QEMU leaves room).
    let entries = bat::qemu_bat_entries(r.size, r.block_size, 512);
    let bat_len = (entries * 8).div_ceil(MIB) * MIB;
    let bat_off = (HEADER_SECTION_END + r.log_size).div_ceil(MIB) * MIB;
    let md_off = (bat_off + bat_len).div_ceil(MIB) * MIB;
    let data_off = bat_off + bat_len + 5 * MIB;
    let regions = [
        RegionEntry {
            guid: BAT_GUID,
            file_offset: bat_off,
            length: bat_len as u32,
            required: false,
        },
        RegionEntry {
            guid: METADATA_GUID,
            file_offset: md_off,
            length: MIB as u32,
            required: false,
        },
    ];
    let rt = region_table(&regions);
    fileio::write_full(&f, &rt, REGION1_OFFSET)?;
    fileio::write_full(&f, &rt, REGION2_OFFSET)?;

    f.set_len(if r.fixed { data_off + r.size } else { data_off })?;
    if r.fixed || r.zero_blocks {
        write_bat(&f, r, bat_off, bat_len, data_off)?;
    }

    let (table, items) = metadata::create_blocks(r.block_size as u32, r.fixed, r.size, 512);
    fileio::write_full(&f, &table, md_off)?;
    fileio::write_full(&f, &items, md_off + table.len() as u64)?;
    f.sync_all()?;
    Ok(())
}

/// The BAT of a new image, written whole (zeros included) as QEMU does, a piece at a time:
/// fixed images point every payload entry at its preallocated block, block_state_zero
/// makes them PAYLOAD_BLOCK_ZERO instead (the preallocated space then stays unused).
fn write_bat(
    f: &std::fs::File,
    r: &Resolved,
    bat_off: u64,
    bat_len: u64,
    data_off: u64,
) -> Result<()> {
    let g = bat::Geometry::new(r.size, r.block_size, 512, false);
    let state = if r.zero_blocks {
        PAYLOAD_ZERO
    } else if r.fixed {
        PAYLOAD_FULLY_PRESENT
    } else {
        return Ok(());
    };
    const PIECE: u64 = MIB;
    let mut buf = vec![0u8; PIECE as usize];
    let mut block = 0u64;
    let mut at = 0u64;
    while at < bat_len {
        buf.fill(0);
        let first = at / 8;
        let last = (at + PIECE) / 8;
        while block < g.data_blocks {
            let i = g.payload_index(block);
            if i >= last {
                break;
            }
            let e = if state == PAYLOAD_ZERO {
                PAYLOAD_ZERO
            } else {
                ((data_off + block * r.block_size).div_ceil(MIB) * MIB) | state
            };
            put64(&mut buf, ((i - first) * 8) as usize, e);
            block += 1;
        }
        let n = PIECE.min(bat_len - at) as usize;
        fileio::write_full(f, &buf[..n], bat_off + at)?;
        at += PIECE;
    }
    Ok(())
}
