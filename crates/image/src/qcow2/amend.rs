//! `qemu-img amend` for qcow2, as QEMU's qcow2_amend_options() does it: upgrade first, then
//! the refcount width, the backing file check, lazy refcounts, the size, and the downgrade
//! last (so that what v2 cannot hold is refused or converted before the header changes).
//!
//! Every step is crash-safe on its own: new structures are written completely and made
//! durable before the single header write that switches to them, and what they replace is
//! freed afterwards. A kill between steps leaves an image with the steps done so far.

use super::header::{
    self, Compression, Header, COMPAT_LAZY_REFCOUNTS, INCOMPAT_COMPRESSION, INCOMPAT_DIRTY,
};
use super::l2::{Cluster, OFFSET_MASK, OFLAG_COPIED};
use super::snapshot::{self, Snapshot};
use super::{Meta, Qcow2};
use crate::driver::{BlockDriver, Preallocation, Repair};
use crate::error::{Error, Result};
use crate::fileio;
use std::collections::HashSet;

/// What `qemu-img amend -f qcow2 -o help` prints.
pub const OPTION_HELP: &str = "\
Amend options for 'qcow2':
  backing_file=<str>     - File name of a base image
  backing_fmt=<str>      - Image format of the base image
  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])
  data_file=<str>        - File name of an external data file
  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image
  encrypt.iter-time=<num> - Time to spend in PBKDF in milliseconds
  encrypt.keyslot=<num>  - Select a single keyslot to modify explicitly
  encrypt.new-secret=<str> - New secret to set in the matching keyslots. Empty string to erase
  encrypt.old-secret=<str> - Select all keyslots that match this password
  encrypt.state=<str>    - Select new state of affected keyslots (active/inactive)
  lazy_refcounts=<bool (on/off)> - Postpone refcount updates
  refcount_bits=<num>    - Width of a reference count entry in bits
  size=<size>            - Virtual disk size
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Size,
    Number,
    Bool,
}

/// qcow2's amend options, in the order QEMU's option list has them (which is the order its
/// checks run in).
const AMEND_OPTS: &[(&str, Kind)] = &[
    ("encrypt.state", Kind::Str),
    ("encrypt.keyslot", Kind::Number),
    ("encrypt.old-secret", Kind::Str),
    ("encrypt.new-secret", Kind::Str),
    ("encrypt.iter-time", Kind::Number),
    ("size", Kind::Size),
    ("compat", Kind::Str),
    ("backing_file", Kind::Str),
    ("backing_fmt", Kind::Str),
    ("data_file", Kind::Str),
    ("data_file_raw", Kind::Bool),
    ("lazy_refcounts", Kind::Bool),
    ("refcount_bits", Kind::Number),
];

/// Options only `create` knows: amend names them as such.
const CREATE_ONLY_OPTS: &[(&str, Kind)] = &[
    ("encrypt", Kind::Bool),
    ("encrypt.format", Kind::Str),
    ("encrypt.key-secret", Kind::Str),
    ("encrypt.cipher-alg", Kind::Str),
    ("encrypt.cipher-mode", Kind::Str),
    ("encrypt.ivgen-alg", Kind::Str),
    ("encrypt.ivgen-hash-alg", Kind::Str),
    ("encrypt.hash-alg", Kind::Str),
    ("cluster_size", Kind::Size),
    ("preallocation", Kind::Str),
    ("compression_type", Kind::Str),
    ("extended_l2", Kind::Bool),
];

fn kind_of(list: &[&[(&'static str, Kind)]], k: &str) -> Option<Kind> {
    list.iter()
        .flat_map(|l| l.iter())
        .find(|(n, _)| *n == k)
        .map(|(_, t)| *t)
}

/// QEMU's qemu_strtou64 with base 0 (decimal, 0x hex, 0 octal; a minus sign wraps).
fn parse_number(v: &str) -> Option<u64> {
    let (neg, s) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    let n = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()?
    } else {
        s.parse().ok()?
    };
    Some(if neg { n.wrapping_neg() } else { n })
}

fn parse_bool(k: &str, v: &str) -> Result<bool> {
    match v {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(Error::Invalid(format!(
            "Parameter '{k}' expects 'on' or 'off'"
        ))),
    }
}

/// A size as QEMU's option parser takes it, with its two messages.
fn parse_size(k: &str, v: &str) -> Result<u64> {
    if let Ok(n) = crate::size::parse(v) {
        return Ok(n);
    }
    let t = v.trim();
    let digits = t.trim_start_matches(['-', '+']);
    let numeric = !digits.is_empty()
        && digits
            .trim_end_matches(|c: char| "bBkKmMgGtTpPeE".contains(c))
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.');
    if t.starts_with('-') || numeric {
        return Err(Error::Invalid(format!(
            "Value '{v}' is out of range for parameter '{k}'"
        )));
    }
    Err(Error::Invalid(format!(
        "Parameter '{k}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively."
    )))
}

fn check_value(k: &str, kind: Kind, v: &str) -> Result<()> {
    match kind {
        Kind::Str => Ok(()),
        Kind::Size => parse_size(k, v).map(|_| ()),
        Kind::Bool => parse_bool(k, v).map(|_| ()),
        Kind::Number => parse_number(v)
            .map(|_| ())
            .ok_or_else(|| Error::Invalid(format!("Parameter '{k}' expects a number"))),
    }
}

/// The options of one `amend`, parsed and checked as QEMU parses them.
#[derive(Debug, Default, Clone)]
pub struct Options {
    compat: Option<String>,
    size: Option<u64>,
    backing_file: Option<String>,
    backing_fmt: Option<String>,
    data_file_raw: Option<bool>,
    lazy_refcounts: Option<bool>,
    refcount_bits: Option<u64>,
    encrypt: bool,
}

impl Options {
    /// `opts` in the order given (later ones win). Unknown options fail with QEMU's message,
    /// with its hint when they are creation options.
    pub fn parse(opts: &[(String, String)]) -> Result<Options> {
        for (k, v) in opts {
            match kind_of(&[AMEND_OPTS], k) {
                Some(kind) => check_value(k, kind, v)?,
                None => {
                    let mut msg = format!("Invalid parameter '{k}'");
                    // QEMU retries with the creation options too and adds a hint when the
                    // whole list parses that way.
                    let all_ok = opts.iter().all(|(k2, v2)| {
                        kind_of(&[AMEND_OPTS, CREATE_ONLY_OPTS], k2)
                            .is_some_and(|kind| check_value(k2, kind, v2).is_ok())
                    });
                    if all_ok {
                        msg += "\nThis option is only supported for image creation";
                    }
                    return Err(Error::Invalid(msg));
                }
            }
        }
        let last = |name: &str| {
            opts.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut o = Options {
            encrypt: opts.iter().any(|(k, _)| k.starts_with("encrypt.")),
            ..Options::default()
        };
        // QEMU's checks, in its option list's order.
        if o.encrypt {
            return Err(Error::Invalid(
                "Can't amend encryption options - encryption not present".into(),
            ));
        }
        if let Some(v) = last("size") {
            o.size = Some(parse_size("size", &v)?);
        }
        if let Some(c) = last("compat") {
            if !matches!(c.as_str(), "0.10" | "v2" | "1.1" | "v3") {
                return Err(Error::Invalid(format!("Unknown compatibility level {c}")));
            }
            o.compat = Some(c);
        }
        o.backing_file = last("backing_file");
        o.backing_fmt = last("backing_fmt");
        if let Some(d) = last("data_file") {
            // No external data file is supported, so none can be renamed.
            let _ = d;
            return Err(Error::Invalid(
                "data-file can only be set for images that use an external data file".into(),
            ));
        }
        if let Some(v) = last("data_file_raw") {
            let raw = parse_bool("data_file_raw", &v)?;
            if raw {
                return Err(Error::Invalid(
                    "data-file-raw cannot be set on existing images".into(),
                ));
            }
            o.data_file_raw = Some(raw);
        }
        if let Some(v) = last("lazy_refcounts") {
            o.lazy_refcounts = Some(parse_bool("lazy_refcounts", &v)?);
        }
        if let Some(v) = last("refcount_bits") {
            let n = parse_number(&v).unwrap_or(0);
            // QEMU stores it in an int.
            let bits = n as u32 as i32;
            if bits <= 0 || bits > 64 || !(bits as u32).is_power_of_two() {
                return Err(Error::Invalid(
                    "Refcount width must be a power of two and may not exceed 64 bits".into(),
                ));
            }
            o.refcount_bits = Some(bits as u64);
        }
        Ok(o)
    }
}

/// Reports progress as (done, total) over the whole amend.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// Spreads the progress of the long operations (version change, refcount width) over the
/// whole, as QEMU's amend helper does.
struct Steps<'a> {
    cb: Progress<'a>,
    total: u64,
    done: u64,
}

impl Steps<'_> {
    const UNIT: u64 = 10_000;
    fn report(&mut self, done: u64, total: u64) {
        let frac = (done.min(total) * Self::UNIT)
            .checked_div(total)
            .unwrap_or(Self::UNIT);
        let t = self.total.max(1);
        (self.cb)(
            ((self.done * Self::UNIT + frac) / t).min(Self::UNIT),
            Self::UNIT,
        );
    }
    fn next(&mut self) {
        self.done += 1;
    }
}

/// Applies `o` to the image.
pub fn amend(q: &Qcow2, o: &Options, progress: Progress) -> Result<()> {
    let (old_version, cur_order) = {
        let m = q.lock();
        (m.hdr.version, m.hdr.refcount_order)
    };
    let new_version = match o.compat.as_deref() {
        Some("0.10" | "v2") => 2,
        Some(_) => 3,
        None => old_version,
    };
    let new_order = o
        .refcount_bits
        .map(|b| b.trailing_zeros())
        .unwrap_or(cur_order);
    let mut steps = Steps {
        cb: progress,
        total: (new_version != old_version) as u64 + (new_order != cur_order) as u64,
        done: 0,
    };
    steps.report(0, 1);

    // Upgrade first: later steps may need v3.
    if new_version > old_version {
        upgrade(q, &mut steps)?;
        steps.next();
    }
    if new_order != cur_order {
        if new_version < 3 && new_order != 4 {
            return Err(Error::Invalid(
                "Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"
                    .into(),
            ));
        }
        let mut m = q.lock();
        m.bitmaps_store()?;
        m.change_refcount_order(new_order, &mut |d, t| steps.report(d, t))?;
        drop(m);
        steps.next();
    }
    {
        // QEMU rewrites the header here whatever changed (its own feature table, a stale
        // bitmaps extension dropped).
        let mut m = q.lock();
        let mut h = m.hdr.clone();
        if super::bitmap::stale_ext(&h) {
            h.set_extension(header::EXT_BITMAPS, None);
        }
        write_header(&mut m, h)?;
    }
    if o.backing_file.is_some() || o.backing_fmt.is_some() {
        let h = q.header();
        if o.backing_file.as_deref() != h.backing_file.as_deref()
            || o.backing_fmt.as_deref() != h.backing_format.as_deref()
        {
            return Err(Error::Invalid(
                "Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.".into(),
            ));
        }
    }
    if let Some(lazy) = o.lazy_refcounts {
        set_lazy(q, lazy, new_version)?;
    }
    if let Some(size) = o.size.filter(|&s| s != 0) {
        // Exactly the size asked for: shrinking needs no --shrink here.
        q.resize(size, Preallocation::Off, true)?;
    }
    // Downgrade last, once nothing v2 cannot hold is left to convert.
    if new_version < old_version {
        downgrade(q, &mut steps)?;
        steps.next();
    }
    steps.report(1, 1);
    Ok(())
}

/// Writes a whole header in one write, after a barrier (what it names must be durable).
fn write_header(m: &mut Meta, h: Header) -> Result<()> {
    let bytes = h.serialize()?;
    m.f.sync_data()?;
    fileio::write_full(&m.f, &bytes, 0)?;
    m.hdr = h;
    Ok(())
}

fn set_lazy(q: &Qcow2, lazy: bool, new_version: u32) -> Result<()> {
    let cur = q.lock().hdr.compatible_features & COMPAT_LAZY_REFCOUNTS != 0;
    if cur == lazy {
        return Ok(());
    }
    if lazy && new_version < 3 {
        return Err(Error::Invalid(
            "Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"
                .into(),
        ));
    }
    if !lazy {
        mark_clean(q)?;
    }
    let mut m = q.lock();
    let mut h = m.hdr.clone();
    if lazy {
        h.compatible_features |= COMPAT_LAZY_REFCOUNTS;
    } else {
        h.compatible_features &= !COMPAT_LAZY_REFCOUNTS;
    }
    write_header(&mut m, h)
}

/// Refcounts left behind by lazy refcounts are repaired and the dirty bit cleared (a writable
/// open already does this; here for an image that became dirty since).
fn mark_clean(q: &Qcow2) -> Result<()> {
    if q.lock().hdr.incompatible_features & INCOMPAT_DIRTY == 0 {
        return Ok(());
    }
    let r = q.check(Repair::All)?;
    if r.corruptions > r.corruptions_fixed {
        return Err(Error::Invalid(
            "Failed to make the image clean: Input/output error".into(),
        ));
    }
    q.file.sync_data()?;
    Ok(())
}

/// compat 0.10 -> 1.1: snapshots get the extra data v3 requires, then the v3 header.
fn upgrade(q: &Qcow2, steps: &mut Steps) -> Result<()> {
    let mut m = q.lock();
    steps.report(0, 2);
    let size = m.hdr.size;
    if m.snapshots.iter().any(|s| s.extra.len() < 16) {
        let list: Vec<Snapshot> = m
            .snapshots
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if s.extra.len() < 16 {
                    let large = s
                        .extra
                        .get(0..8)
                        .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
                        .unwrap_or(s.vm_state_size as u64);
                    let mut extra = Vec::with_capacity(24);
                    extra.extend_from_slice(&large.to_be_bytes());
                    extra.extend_from_slice(&size.to_be_bytes());
                    // No instruction count recorded (QEMU's -1).
                    extra.extend_from_slice(&u64::MAX.to_be_bytes());
                    s.extra = extra;
                }
                s
            })
            .collect();
        snapshot::write_table(&mut m, list)?;
    }
    steps.report(1, 2);
    let mut h = m.hdr.clone();
    h.version = 3;
    h.header_length = header::V3_HEADER_LEN_WRITTEN;
    h.incompatible_features = 0;
    h.compatible_features = 0;
    h.autoclear_features = 0;
    h.refcount_order = 4;
    h.compression = Compression::Zlib;
    // A v2 image may carry a bitmaps extension from a downgrade: nothing vouches for it.
    h.set_extension(header::EXT_BITMAPS, None);
    write_header(&mut m, h)?;
    m.g.version = 3;
    steps.report(2, 2);
    Ok(())
}

/// compat 1.1 -> 0.10: refuses what v2 cannot express, turns zero clusters into what v2 can
/// read, then writes the v2 header; bitmaps (which v2 cannot keep) are dropped and freed.
fn downgrade(q: &Qcow2, steps: &mut Steps) -> Result<()> {
    {
        let m = q.lock();
        if m.hdr.refcount_order != 4 {
            return Err(Error::Invalid(
                "compat=0.10 requires refcount_bits=16".into(),
            ));
        }
        let size = m.hdr.size;
        for s in &m.snapshots {
            let info = s.info();
            if info.vm_state_size > u32::MAX as u64 || s.disk_size().unwrap_or(size) != size {
                return Err(Error::Invalid(
                    "Internal snapshots prevent downgrade of image".into(),
                ));
            }
        }
    }
    mark_clean(q)?;
    let has_backing = q.backing.is_some() || q.header().backing_file.is_some();
    let mut m = q.lock();
    m.bitmaps_store()?;
    let incompat = m.hdr.incompatible_features & !INCOMPAT_COMPRESSION;
    if incompat != 0 {
        return Err(Error::Invalid(format!(
            "Cannot downgrade an image with incompatible features {incompat:#x} set"
        )));
    }
    let mut h = m.hdr.clone();
    if h.compression != Compression::Zlib {
        if has_compressed_clusters(&mut m)? {
            return Err(Error::Invalid(
                "Cannot downgrade an image with zstd compression type and existing compressed clusters"
                    .into(),
            ));
        }
        h.compression = Compression::Zlib;
        h.incompatible_features &= !INCOMPAT_COMPRESSION;
    }
    expand_zero_clusters(&mut m, has_backing, &mut |d, t| steps.report(d, t))?;
    h.version = 2;
    h.header_length = header::V2_HEADER_LEN;
    h.compatible_features = 0;
    h.autoclear_features = 0;
    h.set_extension(header::EXT_BITMAPS, None);
    let frees = m.bitmaps_take_all();
    write_header(&mut m, h)?;
    m.g.version = 2;
    m.g.compression = Compression::Zlib;
    q.set_compression(Compression::Zlib);
    for (o, l) in frees {
        if l > 0 {
            let _ = m.free_bytes(o, l);
        }
    }
    Ok(())
}

/// Every L1 table of the image: the active one and each snapshot's.
fn all_l1_tables(m: &Meta) -> Result<Vec<Vec<u64>>> {
    let mut v = vec![m.l1.clone()];
    for s in &m.snapshots {
        v.push(super::read_table(
            &m.f,
            s.l1_table_offset,
            s.l1_size as u64,
        )?);
    }
    Ok(v)
}

/// Whether any L2 table, in the active tree or a snapshot's, holds a compressed cluster.
fn has_compressed_clusters(m: &mut Meta) -> Result<bool> {
    let g = m.g;
    let mut seen = HashSet::new();
    for l1 in all_l1_tables(m)? {
        for e in l1 {
            let l2off = e & OFFSET_MASK;
            if l2off == 0 || !seen.insert(l2off) {
                continue;
            }
            let t = m.l2_load(l2off)?;
            if (0..g.l2_entries as usize).any(|i| t[i * g.w()] & super::l2::OFLAG_COMPRESSED != 0) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// v2 has no zero flag. Without a backing file a zero cluster may simply become unallocated;
/// with one it must read as zeros, so it gets a zeroed data cluster. Preallocated zero clusters
/// keep their cluster, zeroed. Each L2 table (shared ones once) is fixed in place, entry by
/// entry: cluster zeroed before the entry points at it.
fn expand_zero_clusters(m: &mut Meta, has_backing: bool, progress: Progress) -> Result<()> {
    let g = m.g;
    let tables = all_l1_tables(m)?;
    let total: u64 = tables.iter().map(|t| t.len() as u64).sum();
    let mut visited = 0u64;
    let mut seen = HashSet::new();
    for l1 in tables {
        for e in l1 {
            visited += 1;
            let l2off = e & OFFSET_MASK;
            if l2off == 0 || !seen.insert(l2off) {
                continue;
            }
            let l2_refs = m.refcount(l2off >> g.cluster_bits)?;
            let t = m.l2_load(l2off)?.clone();
            for i in 0..g.l2_entries as usize {
                let e = t[i * g.w()];
                let (host, old) = match m.decode(e)? {
                    Cluster::ZeroPlain if !has_backing => {
                        m.set_l2(l2off, i, 0, 0)?;
                        continue;
                    }
                    // A preallocated zero cluster is zeroed in place only when nothing else
                    // uses its data: zeroing written over data it once shared with a snapshot
                    // keeps the cluster, and that snapshot still reads it.
                    Cluster::ZeroAlloc(h) if m.refcount(h >> g.cluster_bits)? <= l2_refs => {
                        (h, None)
                    }
                    Cluster::ZeroPlain | Cluster::ZeroAlloc(_) => {
                        let h = m.alloc(1)?;
                        if l2_refs > 1 {
                            // Each L1 table reaching the shared L2 table counts.
                            m.rc_update(h >> g.cluster_bits, 1, l2_refs as i64 - 1)?;
                        }
                        let old = match m.decode(e)? {
                            Cluster::ZeroAlloc(o) => Some(o),
                            _ => None,
                        };
                        (h, old)
                    }
                    _ => continue,
                };
                zero_cluster(m, host)?;
                let exclusive = l2_refs == 1 && m.refcount(host >> g.cluster_bits)? == 1;
                let ne = if exclusive { host | OFLAG_COPIED } else { host };
                m.set_l2(l2off, i, ne, 0)?;
                if let Some(o) = old {
                    m.rc_update(o >> g.cluster_bits, 1, -(l2_refs as i64))?;
                }
            }
            progress(visited, total);
        }
    }
    m.drop_comp_cache();
    progress(total, total);
    Ok(())
}

/// Makes one host cluster read as zeros (a hole where the file allows).
fn zero_cluster(m: &mut Meta, host: u64) -> Result<()> {
    let cs = m.g.cs;
    let len = fileio::file_len(&m.f)?;
    if host >= len {
        m.f.set_len(host + cs)?;
    } else {
        if host + cs > len {
            m.f.set_len(host + cs)?;
        }
        fileio::punch_hole(&m.f, host, cs)?;
    }
    m.file_len = m.file_len.max(host + cs);
    Ok(())
}
