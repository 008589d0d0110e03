//! qemu-img measure: the file size an image of a given format needs, exactly as QEMU computes
//! it (block/qcow2.c qcow2_measure, block/raw-format.c raw_measure), for a new empty image of
//! some size or for converting an existing image.

use crate::create::Opts;
use crate::driver::{Alloc, BlockDriver, Format};
use crate::error::{Error, Result};
use crate::qnum::{strtosz, strtou64, NumError};

/// QEMU's BlockMeasureInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureInfo {
    pub required: u64,
    pub fully_allocated: u64,
    /// Space for the source's persistent bitmaps, when both sides support them.
    pub bitmaps: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Size,
    Number,
}

/// Options of the file protocol, accepted with every format's creation options.
const FILE_OPTS: &[(&str, Kind)] = &[
    ("size", Kind::Size),
    ("nocow", Kind::Bool),
    ("preallocation", Kind::Str),
    ("extent_size_hint", Kind::Size),
];

const QCOW2_OPTS: &[(&str, Kind)] = &[
    ("size", Kind::Size),
    ("compat", Kind::Str),
    ("backing_file", Kind::Str),
    ("backing_fmt", Kind::Str),
    ("data_file", Kind::Str),
    ("data_file_raw", Kind::Bool),
    ("encryption", Kind::Bool),
    ("encrypt.format", Kind::Str),
    ("encrypt.key-secret", Kind::Str),
    ("encrypt.cipher-alg", Kind::Str),
    ("encrypt.cipher-mode", Kind::Str),
    ("encrypt.ivgen-alg", Kind::Str),
    ("encrypt.ivgen-hash-alg", Kind::Str),
    ("encrypt.hash-alg", Kind::Str),
    ("encrypt.iter-time", Kind::Number),
    ("cluster_size", Kind::Size),
    ("extended_l2", Kind::Bool),
    ("preallocation", Kind::Str),
    ("lazy_refcounts", Kind::Bool),
    ("refcount_bits", Kind::Number),
    ("compression_type", Kind::Str),
];

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "true" | "y" => Some(true),
        "off" | "no" | "false" | "n" => Some(false),
        _ => None,
    }
}

const SIZE_HINT: &str = "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.";

/// Checks `-o` the way QEMU's option parser does for the target format (names it knows,
/// values of the right type). The message is QEMU's; qemu-img follows it with
/// "Invalid options for file format '...'".
pub fn check_opts(target: Format, opts: &Opts) -> Result<()> {
    let own: &[(&str, Kind)] = match target {
        Format::Raw => &[("size", Kind::Size)],
        Format::Qcow2 => QCOW2_OPTS,
        other => {
            // Formats that cannot measure still refuse options they do not have.
            let mine: Vec<(String, String)> = opts
                .iter()
                .filter(|(k, _)| !FILE_OPTS.iter().any(|(n, _)| n == k))
                .cloned()
                .collect();
            return match crate::create::plan(other, &mine) {
                Err(Error::Invalid(m)) if m.starts_with("Invalid parameter '") => {
                    Err(Error::Invalid(m))
                }
                _ => Ok(()),
            };
        }
    };
    for (k, v) in opts {
        let Some(kind) = own
            .iter()
            .chain(FILE_OPTS.iter())
            .find(|(n, _)| n == k)
            .map(|(_, t)| *t)
        else {
            return Err(Error::Invalid(format!("Invalid parameter '{k}'")));
        };
        let bad = |m: String| Err(Error::Invalid(m));
        match kind {
            Kind::Str => {}
            Kind::Bool => {
                if parse_bool(v).is_none() {
                    return bad(format!("Parameter '{k}' expects 'on' or 'off'"));
                }
            }
            Kind::Size => match strtosz(v) {
                Ok(_) => {}
                Err(NumError::Range) => {
                    return bad(format!("Value '{v}' is out of range for parameter '{k}'"))
                }
                Err(NumError::Invalid) => {
                    return bad(format!(
                        "Parameter '{k}' expects a non-negative number below 2^64\n{SIZE_HINT}"
                    ))
                }
            },
            Kind::Number => match strtou64(v) {
                Ok(_) => {}
                Err(NumError::Range) => {
                    return bad(format!("Value '{v}' is too large for parameter '{k}'"))
                }
                Err(NumError::Invalid) => return bad(format!("Parameter '{k}' expects a number")),
            },
        }
    }
    Ok(())
}

/// The last value given for `k` (QEMU's option lookup takes the newest).
fn last<'a>(opts: &'a Opts, k: &str) -> Option<&'a str> {
    opts.iter()
        .rev()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

fn round_up(x: u128, a: u128) -> u128 {
    x.div_ceil(a) * a
}

/// Measures what converting `input` (or creating an empty image of `size` bytes) into
/// `target` needs. `opts` were accepted by [`check_opts`]; `size` (--size) wins over `-o size`.
pub fn measure(
    target: Format,
    opts: &Opts,
    size: Option<u64>,
    input: Option<&dyn BlockDriver>,
) -> Result<MeasureInfo> {
    let opt_size = || -> u64 {
        size.or_else(|| last(opts, "size").and_then(|v| strtosz(v).ok()))
            .unwrap_or(0)
    };
    match target {
        Format::Raw => {
            let required = match input {
                Some(i) => i.virtual_size(),
                None => opt_size().div_ceil(512).saturating_mul(512),
            };
            Ok(MeasureInfo {
                required,
                fully_allocated: required,
                bitmaps: None,
            })
        }
        Format::Qcow2 => qcow2(opts, opt_size(), input),
        other => Err(Error::Unsupported(format!(
            "Block driver '{}' does not support size measurement",
            other.name()
        ))),
    }
}

/// QEMU's qcow2_refcount_metadata_size: refcount blocks and table for `clusters` clusters,
/// found as the fixed point where they also count themselves.
fn refcount_metadata_size(clusters: u128, cs: u128, refcount_order: u32) -> u128 {
    let per_table_cluster = cs / 8;
    let per_block = cs * 8 / (1u128 << refcount_order);
    let (mut table, mut blocks, mut n) = (0u128, 0u128, 0u128);
    loop {
        let last = n;
        blocks = (clusters + table + blocks).div_ceil(per_block);
        table = blocks.div_ceil(per_table_cluster);
        n = clusters + blocks + table;
        if n == last {
            break;
        }
    }
    (blocks + table) * cs
}

/// QEMU's qcow2_calc_prealloc_size: the whole file of a fully allocated image.
fn calc_prealloc_size(total: u128, cs: u128, refcount_order: u32, extended: bool) -> u128 {
    let l2e = if extended { 16 } else { 8 };
    let aligned = round_up(total, cs);
    let mut meta = cs;
    let nl2e = round_up(aligned / cs, cs / l2e);
    meta += nl2e * l2e;
    let nl1e = round_up(nl2e * l2e / cs, cs / 8);
    meta += nl1e * 8;
    meta += refcount_metadata_size((meta + aligned) / cs, cs, refcount_order);
    meta + aligned
}

fn qcow2(opts: &Opts, opt_size: u64, input: Option<&dyn BlockDriver>) -> Result<MeasureInfo> {
    let invalid = |m: &str| Err(Error::Invalid(m.to_string()));
    let extended = last(opts, "extended_l2")
        .and_then(parse_bool)
        .unwrap_or(false);
    let cs = match last(opts, "cluster_size") {
        None => 65536,
        Some(v) => strtosz(v).unwrap_or(0),
    };
    if !cs.is_power_of_two() || !(512..=2 << 20).contains(&cs) {
        return invalid("Cluster size must be a power of two between 512 and 2048k");
    }
    if extended && cs < 512 * 32 {
        return invalid(
            "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes",
        );
    }
    let version = match last(opts, "compat") {
        None | Some("1.1") => 3,
        Some("0.10") => 2,
        Some(v) => return invalid(&format!("Invalid compatibility level: '{v}'")),
    };
    let refcount_bits = last(opts, "refcount_bits")
        .map(|v| strtou64(v).unwrap_or(0))
        .unwrap_or(16);
    if refcount_bits > 64 || !refcount_bits.is_power_of_two() {
        return invalid("Refcount width must be a power of two and may not exceed 64 bits");
    }
    if version < 3 && refcount_bits != 16 {
        return invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
    }
    let full_prealloc = match last(opts, "preallocation") {
        None | Some("off") | Some("metadata") => false,
        Some("falloc") | Some("full") => true,
        Some(v) => return invalid(&format!("invalid parameter value: {v}")),
    };
    let has_backing = last(opts, "backing_file").is_some();
    match last(opts, "encrypt.format") {
        Some("luks") if last(opts, "encrypt.key-secret").is_none() => {
            return invalid("Parameter 'encrypt.key-secret' is required for cipher")
        }
        Some("luks") => {
            return Err(Error::Unsupported(
                "LUKS encryption is not supported".into(),
            ))
        }
        _ => {}
    }
    let cs128 = cs as u128;
    let l2e: u128 = if extended { 16 } else { 8 };
    let mut virtual_size = round_up(opt_size as u128, cs128);
    let l2_tables = (virtual_size / cs128).div_ceil(cs128 / l2e);
    if l2_tables * 8 > 32 << 20 {
        return invalid("The image size is too large (try using a larger cluster size)");
    }
    let mut required: u128 = 0;
    if let Some(src) = input {
        let ssize = src.virtual_size();
        virtual_size = round_up(ssize as u128, cs128);
        if has_backing {
            // The new backing file may share nothing with the input: count everything.
            required = virtual_size;
        } else {
            required = allocated_clusters(src, cs)? as u128;
        }
    }
    if full_prealloc {
        required = virtual_size;
    }
    let fully = calc_prealloc_size(
        virtual_size,
        cs128,
        refcount_bits.trailing_zeros(),
        extended,
    );
    let required = fully - virtual_size + required;
    let bitmaps = match input {
        Some(src) if version >= 3 => bitmaps_size(src, cs)?,
        _ => None,
    };
    let to64 = |x: u128| {
        u64::try_from(x).map_err(|_| Error::Invalid("The image size is too large".into()))
    };
    Ok(MeasureInfo {
        required: to64(required)?,
        fully_allocated: to64(fully)?,
        bitmaps,
    })
}

/// Bytes of whole clusters that hold data in `src` (its backing chain included), counted as
/// qcow2_measure walks the block status: zero ranges are skipped, data ranges extended to the
/// end of their cluster.
fn allocated_clusters(src: &dyn BlockDriver, cs: u64) -> Result<u64> {
    let ssize = src.virtual_size();
    let mut required: u64 = 0;
    let mut off = 0u64;
    let mut prealloc = PreallocCache::default();
    while off < ssize {
        let (data, mut pnum) = chain_data(src, off, ssize - off, &mut prealloc)?;
        if data {
            pnum = (off + pnum).div_ceil(cs) * cs - off;
            required = required.saturating_add(off % cs + pnum);
        }
        off = off.saturating_add(pnum);
    }
    Ok(required)
}

/// Per layer: whether it looks metadata-preallocated (QEMU's
/// qcow2_detect_metadata_preallocation: at least 10/9 as many clusters in use as the file has
/// clusters of real storage). Only then does QEMU look for holes under data clusters.
#[derive(Default)]
struct PreallocCache(Vec<(usize, bool)>);

impl PreallocCache {
    fn get(&mut self, l: &dyn BlockDriver) -> bool {
        let key = l as *const dyn BlockDriver as *const () as usize;
        if let Some(&(_, v)) = self.0.iter().find(|(k, _)| *k == key) {
            return v;
        }
        let v = l.format() == Format::Qcow2 && Self::detect(l);
        self.0.push((key, v));
        v
    }
    fn detect(l: &dyn BlockDriver) -> bool {
        let Some(cs) = l.cluster_size().filter(|&c| c > 0) else {
            return false;
        };
        let (Ok(len), Ok(real)) = (
            crate::fileio::file_len(l.file()),
            crate::fileio::allocated_bytes(l.file()),
        ) else {
            return false;
        };
        // Every cluster of a qcow2 file up to its end is in use, but for leaks and discards.
        let in_use = len.div_ceil(cs);
        let real = real / cs;
        in_use >= (real.saturating_mul(10) / 9).max(real + 2)
    }
}

/// Whether `[off, off + len)` of the chain under `top` holds data (a prefix of it).
///
/// As QEMU's block status does for a metadata-preallocated qcow2 layer, data whose host range
/// is a hole in the layer's file counts as zeros.
fn chain_data(
    top: &dyn BlockDriver,
    off: u64,
    len: u64,
    prealloc: &mut PreallocCache,
) -> Result<(bool, u64)> {
    let mut l = top;
    let mut n = len;
    loop {
        let st = l.block_status(off, n)?;
        n = st.len.clamp(1, n);
        match st.alloc {
            Alloc::Data {
                host: Some(h),
                compressed: false,
            } if prealloc.get(l) => {
                return match crate::fileio::seek_data(l.file(), h)? {
                    // A hole here: zeros up to the next data.
                    Some(d) if d > h => Ok((false, n.min(d - h))),
                    None => Ok((false, n)),
                    Some(_) => {
                        let hole = crate::fileio::seek_hole(l.file(), h)?.unwrap_or(h + n);
                        Ok((true, n.min(hole.saturating_sub(h)).max(1)))
                    }
                };
            }
            Alloc::Data { .. } => return Ok((true, n)),
            Alloc::Zero { .. } | Alloc::DataZero { .. } => return Ok((false, n)),
            Alloc::Unallocated { .. } => match l.backing() {
                Some(b) if off < b.virtual_size() => {
                    n = n.min(b.virtual_size() - off);
                    l = b;
                }
                _ => return Ok((false, n)),
            },
        }
    }
}

/// QEMU's qcow2_get_persistent_dirty_bitmap_size for `src`'s bitmaps, when `src` supports
/// persistent bitmaps (qcow2 v3, parallels).
fn bitmaps_size(src: &dyn BlockDriver, cs: u64) -> Result<Option<u64>> {
    match src.format() {
        Format::Qcow2 => {}
        // QEMU's parallels driver supports persistent bitmaps, but the ones it loads from
        // the format extension are not persistent: nothing to count.
        Format::Parallels => return Ok(Some(0)),
        _ => return Ok(None),
    }
    let info = src.info()?;
    let Some(q) = info.qcow2 else {
        return Ok(None);
    };
    if q.compat != "1.1" {
        return Ok(None);
    }
    let len = src.virtual_size() as u128;
    let cs = cs as u128;
    let mut total: u128 = 0;
    let mut dir: u128 = 0;
    for b in &q.bitmaps {
        let gran = (b.granularity as u128).max(1);
        let bytes = len.div_ceil(gran).div_ceil(8);
        let clusters = bytes.div_ceil(cs);
        total += clusters * cs;
        total += round_up(clusters * 8, cs);
        dir += round_up(24 + b.name.len() as u128, 8);
    }
    total += round_up(dir, cs);
    Ok(Some(u64::try_from(total).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn empty_qcow2_matches_qemu() {
        // qemu-img measure --size 1G -O qcow2: 393216 / 1074135040
        let m = measure(Format::Qcow2, &[], Some(1 << 30), None).unwrap();
        assert_eq!((m.required, m.fully_allocated), (393216, 1074135040));
        // qemu-img measure --size 1000 -O qcow2: 327680 / 393216
        let m = measure(Format::Qcow2, &[], Some(1000), None).unwrap();
        assert_eq!((m.required, m.fully_allocated), (327680, 393216));
        let o = vec![("cluster_size".to_string(), "4k".to_string())];
        let m = measure(Format::Qcow2, &o, Some(1 << 30), None).unwrap();
        assert_eq!((m.required, m.fully_allocated), (2637824, 1076379648));
    }
}
