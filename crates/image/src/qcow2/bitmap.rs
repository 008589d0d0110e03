//! Persistent dirty bitmaps (docs/interop/qcow2.txt, "Bitmaps extension"), read and written as
//! QEMU does: the directory is validated at open with QEMU's limits and messages, `qemu-img
//! bitmap` operations rewrite it, and guest writes are recorded in the enabled bitmaps.
//!
//! Crash safety: bitmap data clusters and tables are never changed in place while a directory
//! that names them is valid. A change writes new data clusters, new tables and a new directory,
//! then switches the header extension in one write, then frees what the old directory used; a
//! kill at any instant leaves the old or the new set, plus leaked clusters at worst.
//!
//! Guest writes: before the first write, the enabled bitmaps are marked in use on disk (a
//! 4-byte flags write per entry, then a barrier), so a crash leaves them flagged inconsistent,
//! as QEMU leaves them. Written ranges are kept in memory and stored back (with the flag
//! cleared) on flush and when the image is closed.

use super::header::{Header, AUTOCLEAR_BITMAPS, EXT_BITMAPS};
use super::Meta;
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use crate::info::BitmapInfo;
use std::collections::BTreeMap;
use std::fs::File;

/// QEMU's limits (block/qcow2.h, block/qcow2-bitmap.c).
pub const MAX_BITMAPS: u32 = 65535;
pub const MAX_DIR_SIZE: u64 = 1024 * MAX_BITMAPS as u64;
const MAX_TABLE_SIZE: u64 = 0x800_0000;
/// Bound on one bitmap's data, which bounds what a bitmap may make us hold in memory.
const MAX_PHYS_SIZE: u64 = 0x2000_0000;
/// All bitmap tables of an image together (far above what real images use: 128M entries).
const MAX_TOTAL_TABLE_BYTES: u64 = 1 << 30;
pub const MAX_GRANULARITY_BITS: u32 = 31;
pub const MIN_GRANULARITY_BITS: u32 = 9;
pub const MAX_NAME_SIZE: usize = 1023;

pub const FLAG_IN_USE: u32 = 1 << 0;
pub const FLAG_AUTO: u32 = 1 << 1;
const RESERVED_FLAGS: u32 = !(FLAG_IN_USE | FLAG_AUTO);
const TYPE_DIRTY_TRACKING: u8 = 1;

/// Bitmap table entries: bits 9-55 the data cluster, bit 0 "all ones" when there is none.
const ENTRY_RESERVED: u64 = 0xff00_0000_0000_01fe;
const ENTRY_OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
const ENTRY_ALL_ONES: u64 = 1;

const DIR_ENTRY_HEADER: usize = 24;

/// One bitmap directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bitmap {
    pub name: String,
    pub table_offset: u64,
    pub table_size: u32,
    pub flags: u32,
    pub granularity_bits: u8,
}

impl Bitmap {
    pub fn in_use(&self) -> bool {
        self.flags & FLAG_IN_USE != 0
    }
    /// Enabled: records guest writes.
    pub fn auto(&self) -> bool {
        self.flags & FLAG_AUTO != 0
    }
    pub fn granularity(&self) -> u64 {
        1 << self.granularity_bits
    }
    fn entry_len(&self) -> u64 {
        entry_len(self.name.len())
    }
}

fn entry_len(name_len: usize) -> u64 {
    (DIR_ENTRY_HEADER + name_len).div_ceil(8) as u64 * 8
}

/// The bitmap directory the header extension names.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub offset: u64,
    pub size: u64,
    pub bitmaps: Vec<Bitmap>,
}

impl Directory {
    pub fn find(&self, name: &str) -> Option<usize> {
        self.bitmaps.iter().position(|b| b.name == name)
    }
}

/// Entries of a bitmap table for `size` bytes of guest disk (QEMU rounds the serialized bitmap
/// up to 64-bit words; with clusters of at least 512 bytes that changes nothing).
pub fn table_size_for(size: u64, granularity_bits: u32, cs: u64) -> u64 {
    size.div_ceil(1u64 << granularity_bits).div_ceil(cs * 8)
}

/// QEMU's check_dir_entry().
fn entry_ok(b: &Bitmap, typ: u8, name_size: usize, cs: u64, len: u64) -> bool {
    let gb = b.granularity_bits as u32;
    if b.table_size == 0
        || b.table_offset == 0
        || !b.table_offset.is_multiple_of(cs)
        || b.table_size as u64 > MAX_TABLE_SIZE
        || !(MIN_GRANULARITY_BITS..=MAX_GRANULARITY_BITS).contains(&gb)
        || b.flags & RESERVED_FLAGS != 0
        || name_size > MAX_NAME_SIZE
        || typ != TYPE_DIRTY_TRACKING
    {
        return false;
    }
    let phys = b.table_size as u64 * cs;
    if phys > MAX_PHYS_SIZE {
        return false;
    }
    // A consistent bitmap must cover the whole disk; an in-use one may have any size.
    b.in_use() || len <= (phys * 8) << gb
}

/// The extension's fields (count, directory size, directory offset) when the image carries
/// bitmaps QEMU would load: a v3 image whose autoclear bit vouches for the extension.
fn ext_fields(h: &Header) -> Result<Option<(u32, u64, u64)>> {
    let Some(ext) = h.bitmaps_ext() else {
        return Ok(None);
    };
    if h.version < 3 || h.autoclear_features & AUTOCLEAR_BITMAPS == 0 {
        // Written by a program that did not keep the bitmaps: they are stale (QEMU warns and
        // ignores them).
        return Ok(None);
    }
    if ext.len() != 24 {
        return corrupt("bitmaps_ext: Invalid extension length");
    }
    let nb = u32::from_be_bytes(ext[0..4].try_into().unwrap());
    let reserved = u32::from_be_bytes(ext[4..8].try_into().unwrap());
    let size = u64::from_be_bytes(ext[8..16].try_into().unwrap());
    let offset = u64::from_be_bytes(ext[16..24].try_into().unwrap());
    if reserved != 0 {
        return corrupt("bitmaps_ext: Reserved field is not zero");
    }
    if nb > MAX_BITMAPS {
        return corrupt(format!(
            "bitmaps_ext: Image has {nb} bitmaps, exceeding the QEMU supported maximum of {MAX_BITMAPS}"
        ));
    }
    if nb == 0 {
        return corrupt("found bitmaps extension with zero bitmaps");
    }
    if !offset.is_multiple_of(h.cluster_size()) {
        return corrupt("bitmaps_ext: invalid bitmap directory offset");
    }
    if size > MAX_DIR_SIZE {
        return corrupt(format!(
            "bitmaps_ext: bitmap directory size ({size}) exceeds the maximum supported size ({MAX_DIR_SIZE})"
        ));
    }
    Ok(Some((nb, size, offset)))
}

/// Whether the header carries a bitmaps extension nothing vouches for any more.
pub fn stale_ext(h: &Header) -> bool {
    h.bitmaps_ext().is_some() && (h.version < 3 || h.autoclear_features & AUTOCLEAR_BITMAPS == 0)
}

/// Reads and validates the bitmap directory as QEMU does when it opens an image (every check
/// of bitmap_list_load() and check_dir_entry(), and unique names). `len` is the virtual size.
pub fn load_directory(f: &File, h: &Header, file_len: u64, len: u64) -> Result<Option<Directory>> {
    let Some((nb, size, offset)) = ext_fields(h)? else {
        return Ok(None);
    };
    if size == 0 {
        return corrupt("Requested bitmap directory size is zero");
    }
    let cs = h.cluster_size();
    // Bytes past the end of the file read as zeros (as QEMU's file driver returns them); only
    // what the file holds is read and allocated.
    let avail = file_len.saturating_sub(offset).min(size) as usize;
    let mut dir = vec![0u8; avail];
    fileio::read_full(f, &mut dir, offset)?;
    let byte = |i: u64| -> u8 { dir.get(i as usize).copied().unwrap_or(0) };
    let be = |at: u64, n: usize| -> u64 {
        (0..n as u64).fold(0u64, |v, k| v << 8 | byte(at + k) as u64)
    };
    let broken = || Err(Error::Corrupt("Broken bitmap directory".into()));
    let mut bitmaps: Vec<Bitmap> = Vec::new();
    let mut p = 0u64;
    let mut count = 0u32;
    while p < size {
        if p + DIR_ENTRY_HEADER as u64 > size {
            return broken();
        }
        count += 1;
        if count > nb {
            return corrupt("More bitmaps found than specified in header extension");
        }
        let table_offset = be(p, 8);
        let table_size = be(p + 8, 4) as u32;
        let flags = be(p + 12, 4) as u32;
        let typ = byte(p + 16);
        let granularity_bits = byte(p + 17);
        let name_size = be(p + 18, 2) as usize;
        let extra = be(p + 20, 4);
        let len_entry = (DIR_ENTRY_HEADER as u64 + name_size as u64 + extra).div_ceil(8) * 8;
        if p + len_entry > size {
            return broken();
        }
        let name_at = p + DIR_ENTRY_HEADER as u64 + extra;
        // QEMU copies the name with g_strndup: it ends at the first NUL.
        let raw: Vec<u8> = (0..name_size as u64)
            .map(|k| byte(name_at + k))
            .take_while(|&c| c != 0)
            .collect();
        let name = String::from_utf8_lossy(&raw).into_owned();
        if extra != 0 {
            return corrupt("Bitmap extra data is not supported");
        }
        let b = Bitmap {
            name,
            table_offset,
            table_size,
            flags,
            granularity_bits,
        };
        if !entry_ok(&b, typ, name_size, cs, len) {
            return corrupt(format!(
                "Bitmap '{}' doesn't satisfy the constraints",
                b.name
            ));
        }
        bitmaps.push(b);
        p += len_entry;
    }
    if count != nb {
        return corrupt("Less bitmaps found than specified in header extension");
    }
    let mut names = std::collections::HashSet::new();
    for b in &bitmaps {
        if !names.insert(b.name.as_str()) {
            return corrupt(format!("Bitmap already exists: {}", b.name));
        }
    }
    // Each table is bounded; their sum is too, so that walking every table (check, storing
    // tracked bitmaps) stays bounded whatever a hostile directory repeats.
    let total: u64 = bitmaps.iter().map(|b| b.table_size as u64 * 8).sum();
    if total > MAX_TOTAL_TABLE_BYTES {
        return corrupt("Bitmap tables are too large");
    }
    Ok(Some(Directory {
        offset,
        size,
        bitmaps,
    }))
}

fn serialize_dir(list: &[Bitmap]) -> Vec<u8> {
    let mut v = Vec::new();
    for b in list {
        let start = v.len();
        v.extend_from_slice(&b.table_offset.to_be_bytes());
        v.extend_from_slice(&b.table_size.to_be_bytes());
        v.extend_from_slice(&b.flags.to_be_bytes());
        v.push(TYPE_DIRTY_TRACKING);
        v.push(b.granularity_bits);
        v.extend_from_slice(&(b.name.len() as u16).to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(b.name.as_bytes());
        v.resize(start + b.entry_len() as usize, 0);
    }
    v
}

fn entry_valid(e: u64, cs: u64) -> bool {
    if e & ENTRY_RESERVED != 0 {
        return false;
    }
    let off = e & ENTRY_OFFSET;
    off == 0 || (e & ENTRY_ALL_ONES == 0 && off.is_multiple_of(cs))
}

fn read_entries(f: &File, b: &Bitmap) -> Result<Vec<u64>> {
    // table_size * cluster size <= 512 MiB was checked at open: at most 8 MiB here.
    let mut raw = vec![0u8; b.table_size as usize * 8];
    fileio::read_full(f, &mut raw, b.table_offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
        .collect())
}

/// A bitmap's table with every entry checked (QEMU's bitmap_table_load()).
pub fn read_table(f: &File, b: &Bitmap, cs: u64) -> Result<Vec<u64>> {
    let t = read_entries(f, b)?;
    if t.iter().any(|&e| !entry_valid(e, cs)) {
        return corrupt(format!(
            "Could not read bitmap_table table from image for bitmap '{}': Invalid argument",
            b.name
        ));
    }
    Ok(t)
}

/// Raw table entries for `check`: entries that fail validation are counted by the caller.
pub(crate) fn table_entries(f: &File, b: &Bitmap) -> Result<Vec<u64>> {
    read_entries(f, b)
}

pub(crate) fn entry_ok_for_check(e: u64, cs: u64) -> Option<u64> {
    if !entry_valid(e, cs) {
        return None;
    }
    Some(e & ENTRY_OFFSET)
}

pub fn infos(dir: Option<&Directory>) -> Vec<BitmapInfo> {
    dir.map(|d| {
        d.bitmaps
            .iter()
            .map(|b| {
                let mut flags = Vec::new();
                if b.in_use() {
                    flags.push("in-use");
                }
                if b.auto() {
                    flags.push("auto");
                }
                BitmapInfo {
                    name: b.name.clone(),
                    granularity: b.granularity(),
                    flags,
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The node name QEMU's messages give the image (QEMU numbers its nodes "#blockNNN").
pub const NODE_NAME: &str = "#block000";

/// QEMU's default granularity for a new bitmap: the cluster size, within [4 KiB, 64 KiB].
pub fn default_granularity(cs: u64) -> u64 {
    cs.clamp(4096, 65536)
}

/// One data cluster's worth of a bitmap.
#[derive(Debug, Clone)]
enum Chunk {
    /// Unchanged, in the data cluster at this offset of the image.
    Disk(u64),
    Ones,
    Data(Vec<u8>),
}

/// A bitmap's bits: sparse, one chunk per bitmap table entry (absent chunks are zeros). Chunks
/// are read from the image only when they change, so storing a bitmap back writes only the
/// data clusters that changed.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    gb: u32,
    /// Guest bytes covered.
    size: u64,
    /// Cluster size of the image the chunks belong to.
    cs: u64,
    chunks: BTreeMap<u64, Chunk>,
    /// The table this content was loaded from (entries and place), to reuse and free.
    old: Option<(u64, u32, Vec<u64>)>,
}

impl Content {
    pub fn empty(gb: u32, size: u64, cs: u64) -> Content {
        Content {
            gb,
            size,
            cs,
            chunks: BTreeMap::new(),
            old: None,
        }
    }

    /// The content of `b` for a disk of `size` bytes; the table must have the matching size.
    pub fn load(f: &File, b: &Bitmap, cs: u64, size: u64) -> Result<Content> {
        let t = read_table(f, b, cs)?;
        if t.len() as u64 != table_size_for(size, b.granularity_bits as u32, cs) {
            return corrupt(format!(
                "Could not read bitmap '{}' from image: Invalid argument",
                b.name
            ));
        }
        let mut c = Content::empty(b.granularity_bits as u32, size, cs);
        for (i, &e) in t.iter().enumerate() {
            let off = e & ENTRY_OFFSET;
            if off != 0 {
                c.chunks.insert(i as u64, Chunk::Disk(off));
            } else if e & ENTRY_ALL_ONES != 0 {
                c.chunks.insert(i as u64, Chunk::Ones);
            }
        }
        c.old = Some((b.table_offset, b.table_size, t));
        Ok(c)
    }

    fn granules(&self) -> u64 {
        self.size.div_ceil(1u64 << self.gb)
    }
    /// Granules per chunk.
    fn per_chunk(&self) -> u64 {
        self.cs * 8
    }
    pub fn table_size(&self) -> u64 {
        self.granules().div_ceil(self.per_chunk())
    }

    /// Valid bits of chunk `idx`.
    fn chunk_bits(&self, idx: u64) -> u64 {
        self.granules()
            .saturating_sub(idx * self.per_chunk())
            .min(self.per_chunk())
    }

    fn mask(&self, idx: u64, d: &mut [u8]) {
        let valid = self.chunk_bits(idx) as usize;
        for (i, byte) in d.iter_mut().enumerate() {
            let lo = i * 8;
            if lo >= valid {
                *byte = 0;
            } else if lo + 8 > valid {
                *byte &= (1u16 << (valid - lo)) as u8 - 1;
            }
        }
    }

    /// The bytes of chunk `idx` (zeros when absent), bits past the end cleared.
    fn chunk_bytes(&self, f: &File, idx: u64) -> Result<Vec<u8>> {
        let mut d = match self.chunks.get(&idx) {
            None => vec![0u8; self.cs as usize],
            Some(Chunk::Ones) => vec![0xffu8; self.cs as usize],
            Some(Chunk::Data(d)) => d.clone(),
            Some(Chunk::Disk(o)) => {
                let mut d = vec![0u8; self.cs as usize];
                fileio::read_full(f, &mut d, *o)?;
                d
            }
        };
        self.mask(idx, &mut d);
        Ok(d)
    }

    /// Chunk `idx` as bytes held in memory, or `None` when it is all ones already.
    fn chunk_mut(&mut self, f: &File, idx: u64) -> Result<Option<&mut Vec<u8>>> {
        match self.chunks.get(&idx) {
            Some(Chunk::Ones) => return Ok(None),
            Some(Chunk::Data(_)) => {}
            _ => {
                let d = self.chunk_bytes(f, idx)?;
                self.chunks.insert(idx, Chunk::Data(d));
            }
        }
        match self.chunks.get_mut(&idx) {
            Some(Chunk::Data(d)) => Ok(Some(d)),
            _ => unreachable!("chunk was just made data"),
        }
    }

    /// Sets granules [a, b).
    pub fn set_granules(&mut self, f: &File, a: u64, b: u64) -> Result<()> {
        let b = b.min(self.granules());
        let per = self.per_chunk();
        let mut g = a;
        while g < b {
            let idx = g / per;
            let lo = g - idx * per;
            let hi = (b - idx * per).min(per);
            if let Some(d) = self.chunk_mut(f, idx)? {
                set_bits(d, lo as usize, hi as usize);
            }
            g = idx * per + hi;
        }
        Ok(())
    }

    /// Marks guest bytes [start, end) dirty.
    pub fn set_bytes(&mut self, f: &File, start: u64, end: u64) -> Result<()> {
        if start >= end {
            return Ok(());
        }
        let a = start >> self.gb;
        let b = end.div_ceil(1u64 << self.gb);
        self.set_granules(f, a, b)
    }

    pub fn clear(&mut self) {
        self.chunks.clear();
    }

    /// Calls `run` with every maximal run [a, b) of set granules.
    fn for_each_run(&self, f: &File, run: &mut dyn FnMut(u64, u64) -> Result<()>) -> Result<()> {
        let per = self.per_chunk();
        let mut open: Option<u64> = None;
        let mut next_idx = 0u64;
        for &idx in self.chunks.keys() {
            if idx != next_idx {
                if let Some(s) = open.take() {
                    run(s, next_idx * per)?;
                }
            }
            let base = idx * per;
            let d = self.chunk_bytes(f, idx)?;
            for (i, &byte) in d.iter().enumerate() {
                let g0 = base + i as u64 * 8;
                match byte {
                    0 => {
                        if let Some(s) = open.take() {
                            run(s, g0)?;
                        }
                    }
                    0xff => {
                        open.get_or_insert(g0);
                    }
                    _ => {
                        for k in 0..8u64 {
                            if byte >> k & 1 != 0 {
                                open.get_or_insert(g0 + k);
                            } else if let Some(s) = open.take() {
                                run(s, g0 + k)?;
                            }
                        }
                    }
                }
            }
            next_idx = idx + 1;
        }
        if let Some(s) = open {
            run(s, (next_idx * per).min(self.granules()))?;
        }
        Ok(())
    }

    /// Every chunk held in memory, so that the content no longer needs its image's file.
    pub fn materialize(&mut self, f: &File) -> Result<()> {
        let idxs: Vec<u64> = self
            .chunks
            .iter()
            .filter(|(_, c)| matches!(c, Chunk::Disk(_)))
            .map(|(i, _)| *i)
            .collect();
        for idx in idxs {
            let d = self.chunk_bytes(f, idx)?;
            self.chunks.insert(idx, Chunk::Data(d));
        }
        Ok(())
    }

    /// ORs `src` into this bitmap, converting between granularities as QEMU's merge does
    /// (a destination granule is set when any byte it covers is dirty in the source).
    pub fn merge_from(&mut self, f: &File, src: &Content, f_src: &File) -> Result<()> {
        let (sgb, size) = (src.gb, self.size);
        src.for_each_run(f_src, &mut |a, b| {
            self.set_bytes(f, a << sgb, (b << sgb).min(size))
        })
    }

    /// Changes the disk size the bitmap covers: bits past a new, smaller end are dropped; a
    /// larger disk gains clear bits.
    pub fn resize(&mut self, f: &File, size: u64) -> Result<()> {
        if size == self.size {
            return Ok(());
        }
        // The last chunk may hold bits past the old end: make them explicit zeros first.
        let last = self.table_size().saturating_sub(1);
        if self.chunks.contains_key(&last) {
            let d = self.chunk_bytes(f, last)?;
            self.chunks.insert(last, Chunk::Data(d));
        }
        self.size = size;
        let n = self.table_size();
        self.chunks.retain(|&i, _| i < n);
        let last = n.saturating_sub(1);
        if self.chunks.contains_key(&last) {
            let d = self.chunk_bytes(f, last)?;
            self.chunks.insert(last, Chunk::Data(d));
        }
        Ok(())
    }
}

fn set_bits(d: &mut [u8], lo: usize, hi: usize) {
    let mut i = lo;
    while i < hi && !i.is_multiple_of(8) {
        d[i / 8] |= 1 << (i % 8);
        i += 1;
    }
    let full_end = hi / 8 * 8;
    if i < full_end {
        d[i / 8..full_end / 8].fill(0xff);
        i = full_end;
    }
    while i < hi {
        d[i / 8] |= 1 << (i % 8);
        i += 1;
    }
}

/// A stored table: its offset and entries, and the ranges to free after the switch.
pub(crate) type Stored = (u64, u32, Vec<(u64, u64)>);

/// What this process does with the bitmaps while the image is written.
#[derive(Debug, Default)]
pub(crate) enum Track {
    /// Nothing marked in use by us.
    #[default]
    Idle,
    /// Bitmaps we marked in use: (name, records writes), the disk size when they were marked,
    /// and the guest byte ranges written since (merged, start -> end).
    Active {
        names: std::collections::HashMap<String, bool>,
        size: u64,
        ranges: BTreeMap<u64, u64>,
        /// Ranges are kept at this alignment (the finest tracked granularity).
        align: u64,
    },
}

/// Bitmap state kept with the metadata.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub dir: Option<Directory>,
    pub track: Track,
    /// Enabled consistent bitmaps exist and are not yet marked: the next guest write marks them.
    armed: bool,
}

impl State {
    pub fn new(dir: Option<Directory>) -> State {
        let mut s = State {
            dir,
            track: Track::Idle,
            armed: false,
        };
        s.rearm();
        s
    }
    fn rearm(&mut self) {
        self.armed = matches!(self.track, Track::Idle)
            && self
                .dir
                .as_ref()
                .is_some_and(|d| d.bitmaps.iter().any(|b| b.auto() && !b.in_use()));
    }
    /// In use on disk because this process marked it (its content is good in memory).
    fn ours(&self, name: &str) -> bool {
        match &self.track {
            Track::Active { names, .. } => names.contains_key(name),
            Track::Idle => false,
        }
    }
    pub fn armed(&self) -> bool {
        self.armed
    }
}

/// The message QEMU gives for a bitmap that a crash left in use.
pub fn inconsistent(name: &str) -> Error {
    Error::Invalid(format!(
        "Bitmap '{name}' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk"
    ))
}

pub fn not_found(name: &str) -> Error {
    Error::Invalid(format!("Dirty bitmap '{name}' not found"))
}

impl Meta {
    /// Marks bitmaps in use on disk before the guest data they describe changes: the enabled
    /// consistent ones (they record writes), and with `all` every consistent one (a resize
    /// changes them all). A barrier follows, so no data write overtakes the flags.
    pub(crate) fn bitmaps_mark(&mut self, all: bool) -> Result<()> {
        let Some(dir) = self.bm.dir.clone() else {
            return Ok(());
        };
        let size = self.hdr.size;
        let cs = self.g.cs;
        let mut marked = Vec::new();
        let mut entry_at = dir.offset;
        for (i, b) in dir.bitmaps.iter().enumerate() {
            let at = entry_at + 12;
            entry_at += b.entry_len();
            if b.in_use() || !(all || b.auto()) {
                continue;
            }
            // A table of the wrong size cannot be stored back: QEMU refuses such images.
            if b.table_size as u64 != table_size_for(size, b.granularity_bits as u32, cs) {
                return corrupt(format!(
                    "Could not read bitmap '{}' from image: Invalid argument",
                    b.name
                ));
            }
            fileio::write_full(&self.f, &(b.flags | FLAG_IN_USE).to_be_bytes(), at)?;
            marked.push((i, b.name.clone(), b.auto()));
        }
        if marked.is_empty() {
            self.bm.rearm();
            return Ok(());
        }
        self.f.sync_data()?;
        let d = self.bm.dir.as_mut().expect("directory present");
        let mut align = u64::MAX;
        for (i, _, _) in &marked {
            d.bitmaps[*i].flags |= FLAG_IN_USE;
            align = align.min(d.bitmaps[*i].granularity());
        }
        match &mut self.bm.track {
            Track::Active {
                names, align: a, ..
            } => {
                for (_, n, rec) in marked {
                    names.insert(n, rec);
                }
                *a = (*a).min(align);
            }
            Track::Idle => {
                self.bm.track = Track::Active {
                    names: marked.into_iter().map(|(_, n, r)| (n, r)).collect(),
                    size,
                    ranges: BTreeMap::new(),
                    align,
                };
            }
        }
        self.bm.armed = false;
        Ok(())
    }

    /// Records a guest write of [off, off+len) for the bitmaps being tracked.
    pub(crate) fn bitmaps_note(&mut self, off: u64, len: u64) {
        let Track::Active { ranges, align, .. } = &mut self.bm.track else {
            return;
        };
        if len == 0 {
            return;
        }
        let mut s = off / *align * *align;
        let mut e = off
            .saturating_add(len)
            .div_ceil(*align)
            .saturating_mul(*align);
        if let Some((&ps, &pe)) = ranges.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
                ranges.remove(&ps);
            }
        }
        while let Some((&ns, &ne)) = ranges.range(s..=e).next() {
            e = e.max(ne);
            ranges.remove(&ns);
        }
        ranges.insert(s, e);
    }

    /// Stores the tracked bitmaps back (written ranges added, disk size applied, in-use flag
    /// cleared) through one directory switch. Nothing to do when nothing is tracked.
    pub(crate) fn bitmaps_store(&mut self) -> Result<()> {
        let Track::Active {
            names,
            size: old_size,
            ranges,
            ..
        } = std::mem::take(&mut self.bm.track)
        else {
            return Ok(());
        };
        let Some(dir) = self.bm.dir.clone() else {
            self.bm.rearm();
            return Ok(());
        };
        let size = self.hdr.size;
        let cs = self.g.cs;
        let f = self.f.clone();
        let mut list = dir.bitmaps.clone();
        let mut frees = Vec::new();
        let result = (|| -> Result<()> {
            for b in list.iter_mut() {
                let Some(records) = names.get(&b.name) else {
                    continue;
                };
                let mut c = Content::load(&f, b, cs, old_size)?;
                c.resize(&f, size)?;
                if *records {
                    for (&s, &e) in &ranges {
                        c.set_bytes(&f, s, e.min(size))?;
                    }
                }
                let (off, n, fr) = self.store_content(&c)?;
                b.table_offset = off;
                b.table_size = n;
                b.flags &= !FLAG_IN_USE;
                frees.extend(fr);
            }
            Ok(())
        })();
        if let Err(e) = result {
            // The bitmaps stay in use on disk (inconsistent), which is what a reader must see.
            self.bm.rearm();
            return Err(e);
        }
        self.bitmaps_commit(list, frees)
    }

    /// Writes `c` as a bitmap table and data clusters; returns the table's place and size and
    /// the ranges the old table used that are no longer needed (to free after the switch).
    /// Unchanged data clusters, and an unchanged table, are reused.
    pub(crate) fn store_content(&mut self, c: &Content) -> Result<Stored> {
        let cs = self.g.cs;
        let n = c.table_size();
        if n == 0 || n > MAX_TABLE_SIZE || n * cs > MAX_PHYS_SIZE {
            return Err(Error::Invalid("Bitmap is too big".into()));
        }
        let mut entries = vec![0u64; n as usize];
        let mut written: Vec<u64> = Vec::new();
        let res = (|| -> Result<()> {
            for (&i, ch) in &c.chunks {
                entries[i as usize] = match ch {
                    Chunk::Disk(o) => *o,
                    Chunk::Ones => ENTRY_ALL_ONES,
                    Chunk::Data(d) => {
                        if d.iter().all(|&x| x == 0) {
                            0
                        } else {
                            let o = self.alloc(1)?;
                            written.push(o);
                            fileio::write_full(&self.f, d, o)?;
                            self.file_len = self.file_len.max(o + cs);
                            o
                        }
                    }
                };
            }
            Ok(())
        })();
        if let Err(e) = res {
            for o in written {
                let _ = self.free_bytes(o, cs);
            }
            return Err(e);
        }
        let mut frees = Vec::new();
        if let Some((toff, tsize, old)) = &c.old {
            let kept: std::collections::HashSet<u64> =
                entries.iter().map(|e| e & ENTRY_OFFSET).collect();
            for e in old {
                let o = e & ENTRY_OFFSET;
                if o != 0 && !kept.contains(&o) {
                    frees.push((o, cs));
                }
            }
            if *old == entries {
                return Ok((*toff, *tsize, frees));
            }
            frees.push((*toff, *tsize as u64 * 8));
        }
        let bytes = n * 8;
        let clusters = bytes.div_ceil(cs);
        let toff = self.alloc(clusters)?;
        let mut raw = Vec::with_capacity((clusters * cs) as usize);
        for e in &entries {
            raw.extend_from_slice(&e.to_be_bytes());
        }
        raw.resize((clusters * cs) as usize, 0);
        fileio::write_full(&self.f, &raw, toff)?;
        self.file_len = self.file_len.max(toff + clusters * cs);
        Ok((toff, n as u32, frees))
    }

    /// Makes `list` the bitmap directory: new directory written, header extension switched in
    /// one write after a barrier, then the old directory and `frees` released.
    pub(crate) fn bitmaps_commit(
        &mut self,
        list: Vec<Bitmap>,
        frees: Vec<(u64, u64)>,
    ) -> Result<()> {
        let cs = self.g.cs;
        let old = self.bm.dir.clone();
        let mut h = self.hdr.clone();
        let new_dir = if list.is_empty() {
            h.set_extension(EXT_BITMAPS, None);
            h.autoclear_features &= !AUTOCLEAR_BITMAPS;
            None
        } else {
            if list.len() as u64 > MAX_BITMAPS as u64 {
                return Err(Error::Invalid("Too many persistent bitmaps".into()));
            }
            let bytes = serialize_dir(&list);
            let size = bytes.len() as u64;
            if size > MAX_DIR_SIZE {
                return Err(Error::Invalid("Bitmap directory is too large".into()));
            }
            let clusters = size.div_ceil(cs);
            let off = self.alloc(clusters)?;
            let mut padded = bytes;
            padded.resize((clusters * cs) as usize, 0);
            fileio::write_full(&self.f, &padded, off)?;
            self.file_len = self.file_len.max(off + clusters * cs);
            let mut ext = Vec::with_capacity(24);
            ext.extend_from_slice(&(list.len() as u32).to_be_bytes());
            ext.extend_from_slice(&0u32.to_be_bytes());
            ext.extend_from_slice(&size.to_be_bytes());
            ext.extend_from_slice(&off.to_be_bytes());
            h.set_extension(EXT_BITMAPS, Some(ext));
            h.autoclear_features |= AUTOCLEAR_BITMAPS;
            Some(Directory {
                offset: off,
                size,
                bitmaps: list,
            })
        };
        let hbytes = h.serialize()?;
        // Barrier: tables and directory durable before the header names them.
        self.f.sync_data()?;
        fileio::write_full(&self.f, &hbytes, 0)?;
        self.hdr = h;
        self.bm.dir = new_dir;
        self.bm.track = Track::Idle;
        self.bm.rearm();
        // Releases after the switch; a failure here leaks at worst (as in QEMU).
        if let Some(o) = old {
            let _ = self.free_bytes(o.offset, o.size);
        }
        for (o, l) in frees {
            if l > 0 {
                let _ = self.free_bytes(o, l);
            }
        }
        Ok(())
    }

    /// The ranges one bitmap's table and data use (best effort: an unreadable table frees
    /// only the table, as QEMU does).
    fn bitmap_ranges(&self, b: &Bitmap) -> Vec<(u64, u64)> {
        let cs = self.g.cs;
        let mut v = vec![(b.table_offset, b.table_size as u64 * 8)];
        if let Ok(t) = read_table(&self.f, b, cs) {
            for e in t {
                let o = e & ENTRY_OFFSET;
                if o != 0 {
                    v.push((o, cs));
                }
            }
        }
        v
    }

    /// Removes every bitmap (a downgrade to v2, which cannot hold them): what they used.
    pub(crate) fn bitmaps_take_all(&mut self) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        if let Some(d) = self.bm.dir.take() {
            for b in &d.bitmaps {
                v.extend(self.bitmap_ranges(b));
            }
            v.push((d.offset, d.size));
        }
        self.bm.track = Track::Idle;
        self.bm.rearm();
        v
    }

    /// Every bitmap usable (a resize needs them all).
    pub(crate) fn bitmaps_check_all_usable(&self) -> Result<()> {
        if let Some(d) = &self.bm.dir {
            for b in &d.bitmaps {
                self.usable(b)?;
            }
        }
        Ok(())
    }

    /// Checks that a bitmap can be used (QEMU's BDRV_BITMAP_DEFAULT check).
    fn usable(&self, b: &Bitmap) -> Result<()> {
        if b.in_use() && !self.bm.ours(&b.name) {
            return Err(inconsistent(&b.name));
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Result<usize> {
        self.bm
            .dir
            .as_ref()
            .and_then(|d| d.find(name))
            .ok_or_else(|| not_found(name))
    }
}

/// The operations of `qemu-img bitmap`, each applied and stored on its own, in order.
pub mod ops {
    use super::*;
    use crate::qcow2::Qcow2;

    /// --add: a new enabled, empty persistent bitmap.
    pub fn add(q: &Qcow2, name: &str, granularity: Option<u64>) -> Result<()> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        if name.is_empty() {
            return Err(Error::Invalid("Bitmap name cannot be empty".into()));
        }
        let cs = m.g.cs;
        let g = match granularity {
            Some(g) => {
                if g < 512 || !g.is_power_of_two() || g > u32::MAX as u64 {
                    return Err(Error::Invalid(
                        "Granularity must be power of 2 and at least 512".into(),
                    ));
                }
                g
            }
            None => default_granularity(cs),
        };
        if m.bm.dir.as_ref().is_some_and(|d| d.find(name).is_some()) {
            return Err(Error::Invalid(format!("Bitmap already exists: {name}")));
        }
        let cant = |msg: &str| {
            Error::Invalid(format!(
                "Can't make bitmap '{name}' persistent in '{}': {msg}",
                NODE_NAME
            ))
        };
        if m.hdr.version < 3 {
            return Err(cant("Cannot store dirty bitmaps in qcow2 v2 files"));
        }
        let gb = g.trailing_zeros();
        let len = m.hdr.size;
        let bytes = len.div_ceil(g).div_ceil(8);
        if bytes > MAX_PHYS_SIZE || bytes > MAX_TABLE_SIZE * cs {
            return Err(cant(
                "Too much space will be occupied by the bitmap. Use larger granularity",
            ));
        }
        if name.len() > MAX_NAME_SIZE {
            return Err(cant(&format!(
                "Name length exceeds maximum ({MAX_NAME_SIZE} characters)"
            )));
        }
        let list =
            m.bm.dir
                .as_ref()
                .map(|d| d.bitmaps.clone())
                .unwrap_or_default();
        if list.len() + 1 > MAX_BITMAPS as usize {
            return Err(cant(
                "Maximum number of persistent bitmaps is already reached",
            ));
        }
        let dir_size: u64 = list.iter().map(|b| b.entry_len()).sum::<u64>() + entry_len(name.len());
        if dir_size > MAX_DIR_SIZE {
            return Err(cant("Not enough space in the bitmap directory"));
        }
        if len == 0 {
            // QEMU accepts the bitmap, then cannot store a zero-sized table when it closes.
            return Err(Error::Invalid(format!(
                "Lost persistent bitmaps during inactivation of node '{}': No memory",
                NODE_NAME
            )));
        }
        let c = Content::empty(gb, len, cs);
        let (off, n, _) = m.store_content(&c)?;
        let mut list = list;
        list.push(Bitmap {
            name: name.to_string(),
            table_offset: off,
            table_size: n,
            flags: FLAG_AUTO,
            granularity_bits: gb as u8,
        });
        m.bitmaps_commit(list, Vec::new())
    }

    /// --remove (allowed on a bitmap a crash left in use).
    pub fn remove(q: &Qcow2, name: &str) -> Result<()> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        let i = m.lookup(name)?;
        let mut list = m.bm.dir.as_ref().expect("found").bitmaps.clone();
        let b = list.remove(i);
        let frees = m.bitmap_ranges(&b);
        m.bitmaps_commit(list, frees)
    }

    /// --clear
    pub fn clear(q: &Qcow2, name: &str) -> Result<()> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        let i = m.lookup(name)?;
        let mut list = m.bm.dir.as_ref().expect("found").bitmaps.clone();
        m.usable(&list[i])?;
        let (cs, size) = (m.g.cs, m.hdr.size);
        let mut c = Content::load(&m.f, &list[i], cs, size)?;
        c.clear();
        let (off, n, frees) = m.store_content(&c)?;
        list[i].table_offset = off;
        list[i].table_size = n;
        m.bitmaps_commit(list, frees)
    }

    /// --enable / --disable
    pub fn set_enabled(q: &Qcow2, name: &str, enabled: bool) -> Result<()> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        let i = m.lookup(name)?;
        let mut list = m.bm.dir.as_ref().expect("found").bitmaps.clone();
        m.usable(&list[i])?;
        if enabled {
            list[i].flags |= FLAG_AUTO;
        } else {
            list[i].flags &= !FLAG_AUTO;
        }
        m.bitmaps_commit(list, Vec::new())
    }

    /// A source bitmap for --merge, read whole into memory (it may live in another image).
    pub struct Source {
        content: Content,
    }

    /// Looks up `name` in `q` and reads it, with QEMU's checks on a merge source.
    pub fn source(q: &Qcow2, name: &str) -> Result<Source> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        let i = m.lookup(name)?;
        let b = m.bm.dir.as_ref().expect("found").bitmaps[i].clone();
        m.usable(&b)?;
        let (cs, size) = (m.g.cs, m.hdr.size);
        let mut content = Content::load(&m.f, &b, cs, size)?;
        content.materialize(&m.f)?;
        content.old = None;
        Ok(Source { content })
    }

    /// Checks the destination of a merge before its source is looked up (QEMU's order).
    pub fn merge_target(q: &Qcow2, name: &str) -> Result<()> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        let i = m.lookup(name)?;
        let b = m.bm.dir.as_ref().expect("found").bitmaps[i].clone();
        m.usable(&b)
    }

    /// --merge: ORs `src` into bitmap `name`.
    pub fn merge(q: &Qcow2, name: &str, src: &Source) -> Result<()> {
        let mut m = q.lock();
        m.bitmaps_store()?;
        let i = m.lookup(name)?;
        let mut list = m.bm.dir.as_ref().expect("found").bitmaps.clone();
        m.usable(&list[i])?;
        let (cs, size) = (m.g.cs, m.hdr.size);
        if src.content.size != size {
            return Err(Error::Invalid(format!(
                "Bitmaps are of different sizes (destination size is {size}, source size is {}) and can't be merged",
                src.content.size
            )));
        }
        let f = m.f.clone();
        let mut c = Content::load(&f, &list[i], cs, size)?;
        c.merge_from(&f, &src.content, &f)?;
        let (off, n, frees) = m.store_content(&c)?;
        if off == list[i].table_offset && n == list[i].table_size {
            return Ok(());
        }
        list[i].table_offset = off;
        list[i].table_size = n;
        m.bitmaps_commit(list, frees)
    }

    /// Guest bytes covered by each set bit of bitmap `name`, as runs [start, end) (for tests
    /// and tools that inspect bitmap contents).
    pub fn dirty_ranges(q: &Qcow2, name: &str) -> Result<Vec<(u64, u64)>> {
        let src = source(q, name)?;
        let c = &src.content;
        let mut v = Vec::new();
        // Materialized: the file is not read again.
        c.for_each_run(&q.file, &mut |a, b| {
            v.push((a << c.gb, (b << c.gb).min(c.size)));
            Ok(())
        })?;
        Ok(v)
    }
}
