//! The metadata log (MS-VHDX 2.3): finding the active sequence of a dirty log, checking it,
//! replaying it into the file (read-write) or into an in-memory overlay (read-only), and
//! building the entries virtkit writes.
//!
//! The log is a circular buffer of 4 KiB sectors. An entry is a header sector holding the
//! first descriptors, more descriptor sectors if needed, then one data sector per data
//! descriptor; its CRC-32C covers the whole entry. Entries of one sequence carry the log GUID
//! of the current header and consecutive sequence numbers.

use super::header::{checksum, le32, le64, put32, put64, Guid, Header, FIXED_END, MIB};
use crate::error::{corrupt, Error, Result};
use crate::fileio;
use std::collections::BTreeMap;
use std::fs::File;

pub const SECTOR: u64 = 4096;
const ENTRY_SIGNATURE: &[u8; 4] = b"loge";
const DESC_SIGNATURE: &[u8; 4] = b"desc";
const ZERO_SIGNATURE: &[u8; 4] = b"zero";
const DATA_SIGNATURE: &[u8; 4] = b"data";
/// Descriptors per sector, and the two slots the entry header takes in the first one.
const DESCS_PER_SECTOR: u64 = SECTOR / 32;
const HEADER_SLOTS: u64 = 2;
/// The log may make the file grow (LastFileOffset), but not beyond this.
const MAX_FILE_END: u64 = 1 << 48;

/// Where the log lives and which entries belong to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInfo {
    pub offset: u64,
    pub length: u64,
    pub guid: Guid,
}

/// QEMU's checks of the current header's log fields. `None`: nothing to replay.
pub fn log_info(h: &Header) -> Result<Option<LogInfo>> {
    if h.log_offset < MIB || !h.log_offset.is_multiple_of(MIB) {
        return corrupt(format!("VHDX log offset {} is invalid", h.log_offset));
    }
    if h.log_version != 0 {
        return Err(Error::Unsupported(format!(
            "VHDX log version {} is not supported",
            h.log_version
        )));
    }
    if h.log_guid.is_zero() || h.log_length == 0 {
        return Ok(None);
    }
    if !(h.log_length as u64).is_multiple_of(MIB) {
        return corrupt(format!("VHDX log length {} is invalid", h.log_length));
    }
    Ok(Some(LogInfo {
        offset: h.log_offset,
        length: h.log_length as u64,
        guid: h.log_guid,
    }))
}

/// Descriptor sectors of an entry with `n` descriptors (never 0).
pub fn desc_sectors(n: u64) -> u64 {
    (n + HEADER_SLOTS).div_ceil(DESCS_PER_SECTOR)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRef {
    /// File offset of the log data sector.
    pub src: u64,
    pub leading: [u8; 8],
    pub trailing: [u8; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desc {
    Data {
        target: u64,
        seq: u64,
        data: DataRef,
    },
    Zero {
        target: u64,
        len: u64,
    },
}

/// One valid log entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the log.
    pub pos: u64,
    pub seq: u64,
    pub tail: u64,
    pub flushed: u64,
    pub last: u64,
    pub descs: Vec<Desc>,
}

type Reader<'a> = &'a dyn Fn(&mut [u8], u64) -> Result<()>;

/// Reads the log of one file: positions wrap around, sectors past the end of the file read
/// as zeros without being read.
struct LogReader<'a> {
    read: Reader<'a>,
    log: LogInfo,
    file_len: u64,
}

impl LogReader<'_> {
    fn file_off(&self, pos: u64) -> Option<u64> {
        self.log.offset.checked_add(pos % self.log.length)
    }

    fn sector(&self, pos: u64) -> Result<Vec<u8>> {
        let mut b = vec![0u8; SECTOR as usize];
        if let Some(off) = self.file_off(pos) {
            if off < self.file_len {
                (self.read)(&mut b, off)?;
            }
        }
        Ok(b)
    }

    /// Continues `crc` over `n` sectors from log position `pos`.
    fn crc_sectors(&self, mut crc: u32, mut pos: u64, mut n: u64) -> Result<u32> {
        let mut buf = Vec::new();
        while n > 0 {
            let p = pos % self.log.length;
            // Up to the end of the log (where it wraps) and at most 1 MiB at a time.
            let run = n.min((self.log.length - p) / SECTOR).min(256);
            let bytes = run * SECTOR;
            match self.file_off(p) {
                Some(off) if off < self.file_len => {
                    buf.resize(bytes as usize, 0);
                    (self.read)(&mut buf, off)?;
                    crc = crc32c::crc32c_append(crc, &buf);
                }
                _ => crc = crc_append_zeros(crc, bytes),
            }
            pos = p + bytes;
            n -= run;
        }
        Ok(crc)
    }
}

/// `crc` continued over `n` zero bytes, in O(log n) (hostile entries claim gigabytes).
fn crc_append_zeros(crc: u32, n: u64) -> u32 {
    const CHUNK: usize = 4096;
    let zeros = [0u8; CHUNK];
    let z1 = crc32c::crc32c(&zeros);
    let mut crc = crc;
    let mut left = n;
    // crc of 2^k chunks of zeros, built by doubling.
    let mut pow = z1;
    let mut pow_len = CHUNK as u64;
    let whole = left / CHUNK as u64;
    let mut k = whole;
    let mut parts: Vec<(u32, u64)> = Vec::new();
    while k > 0 {
        if k & 1 == 1 {
            parts.push((pow, pow_len));
        }
        k >>= 1;
        if k > 0 {
            pow = crc32c::crc32c_combine(pow, pow, pow_len as usize);
            pow_len *= 2;
        }
    }
    for (c, l) in parts {
        crc = crc32c::crc32c_combine(crc, c, l as usize);
    }
    left -= whole * CHUNK as u64;
    crc32c::crc32c_append(crc, &zeros[..left as usize])
}

/// What the entry header at a log position says.
struct EntryHeader {
    checksum: u32,
    entry_length: u64,
    tail: u64,
    seq: u64,
    desc_count: u64,
    flushed: u64,
    last: u64,
}

fn parse_entry_header(s: &[u8], log: &LogInfo) -> Option<EntryHeader> {
    if &s[..4] != ENTRY_SIGNATURE {
        return None;
    }
    let h = EntryHeader {
        checksum: le32(s, 4),
        entry_length: le32(s, 8) as u64,
        tail: le32(s, 12) as u64,
        seq: le64(s, 16),
        desc_count: le32(s, 24) as u64,
        flushed: le64(s, 48),
        last: le64(s, 56),
    };
    // QEMU's header checks (vhdx_log_hdr_is_valid)...
    let ok = h.entry_length <= log.length
        && h.entry_length.is_multiple_of(SECTOR)
        && h.seq != 0
        && Guid::from_slice(&s[32..48]) == log.guid
        && h.desc_count * 32 <= h.entry_length
        // ...and an entry must hold its own descriptor sectors.
        && desc_sectors(h.desc_count) * SECTOR <= h.entry_length;
    ok.then_some(h)
}

/// Validates the entry at `pos` (following sequence number `prev` if given): `None` if it is
/// not a valid entry of this log, an error if it is one whose descriptors are invalid (QEMU
/// refuses such a log). Also returns how many bytes it spans.
fn validate(r: &LogReader, pos: u64, prev: Option<u64>) -> Result<(Option<Entry>, u64)> {
    let s0 = r.sector(pos)?;
    let Some(h) = parse_entry_header(&s0, &r.log) else {
        return Ok((None, SECTOR));
    };
    if let Some(p) = prev {
        if p.checked_add(1) != Some(h.seq) {
            return Ok((None, SECTOR));
        }
    }
    let total = h.entry_length / SECTOR;
    let crc = crc32c::crc32c(&s0[..4]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    let crc = crc32c::crc32c_append(crc, &s0[8..]);
    let crc = r.crc_sectors(crc, pos + SECTOR, total - 1)?;
    if crc != h.checksum {
        return Ok((None, h.entry_length));
    }
    // A checksummed entry: its descriptors must be valid.
    let nd = desc_sectors(h.desc_count);
    let mut descs = Vec::new();
    let mut data_sectors = 0u64;
    let mut sector = s0;
    for i in 0..h.desc_count {
        let slot = i + HEADER_SLOTS;
        let k = slot / DESCS_PER_SECTOR;
        if k > 0 && slot.is_multiple_of(DESCS_PER_SECTOR) {
            sector = r.sector(pos + k * SECTOR)?;
        }
        let at = ((slot % DESCS_PER_SECTOR) * 32) as usize;
        let d = &sector[at..at + 32];
        let target = le64(d, 16);
        let dseq = le64(d, 24);
        let bad = || {
            Error::Corrupt(format!(
                "VHDX log entry {} has an invalid descriptor (number {i})",
                h.seq
            ))
        };
        if dseq != h.seq || !target.is_multiple_of(SECTOR) {
            return Err(bad());
        }
        if &d[..4] == ZERO_SIGNATURE {
            let len = le64(d, 8);
            if !len.is_multiple_of(SECTOR) {
                return Err(bad());
            }
            descs.push(Desc::Zero { target, len });
        } else if &d[..4] == DESC_SIGNATURE {
            let data_pos = pos + (nd + data_sectors) * SECTOR;
            data_sectors += 1;
            if nd + data_sectors > total {
                return corrupt(format!(
                    "VHDX log entry {} has more data descriptors than data sectors",
                    h.seq
                ));
            }
            let src = r
                .file_off(data_pos)
                .ok_or_else(|| Error::Corrupt("VHDX log offset out of range".into()))?;
            let mut leading = [0u8; 8];
            leading.copy_from_slice(&d[8..16]);
            let mut trailing = [0u8; 4];
            trailing.copy_from_slice(&d[4..8]);
            descs.push(Desc::Data {
                target,
                seq: h.seq,
                data: DataRef {
                    src,
                    leading,
                    trailing,
                },
            });
        } else {
            return Err(bad());
        }
    }
    Ok((
        Some(Entry {
            pos: pos % r.log.length,
            seq: h.seq,
            tail: h.tail,
            flushed: h.flushed,
            last: h.last,
            descs,
        }),
        h.entry_length,
    ))
}

/// Finds the active sequence of a log whose GUID is set: the chain of valid entries with
/// consecutive sequence numbers ending with the highest sequence number, replayed from its
/// head's tail when that is one of its entries (else from its first entry, as QEMU does).
/// `None` when the log holds no valid entry.
pub fn search(read: Reader, log: &LogInfo, file_len: u64) -> Result<Option<Vec<Entry>>> {
    let r = LogReader {
        read,
        log: *log,
        file_len,
    };
    let l = log.length;
    // Sectors at or past the end of the file read as zeros: no entry starts there.
    let scan_end = file_len.saturating_sub(log.offset).min(l);
    let mut best: Option<Vec<Entry>> = None;
    let mut pos = 0u64;
    let mut consumed = 0u64;
    while pos < scan_end && consumed < l {
        let start = pos;
        let (first, adv) = validate(&r, pos, None)?;
        consumed += adv;
        pos = (pos + adv) % l;
        if let Some(e) = first {
            let mut chain = vec![e];
            while consumed < l {
                let prev = chain.last().map(|e| e.seq);
                match validate(&r, pos, prev)? {
                    (Some(e), adv) => {
                        chain.push(e);
                        consumed += adv;
                        pos = (pos + adv) % l;
                    }
                    (None, _) => break,
                }
            }
            let better = match &best {
                None => true,
                Some(b) => {
                    let (bh, ch) = (b[b.len() - 1].seq, chain[chain.len() - 1].seq);
                    ch > bh || (ch == bh && chain.len() > b.len())
                }
            };
            if better {
                best = Some(chain);
            }
        }
        if pos <= start {
            // Wrapped around the end of the log: everything was seen.
            break;
        }
    }
    Ok(best.map(|mut chain| {
        let tail = chain[chain.len() - 1].tail;
        if let Some(i) = chain.iter().position(|e| e.pos == tail) {
            chain.drain(..i);
        }
        chain
    }))
}

/// One write of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Data { target: u64, data: DataRef },
    Zero { target: u64, len: u64 },
}

/// A checked replay: the writes in order and the file size it needs.
#[derive(Debug, Clone)]
pub struct Replay {
    pub ops: Vec<Op>,
    /// The file must be at least this long afterwards.
    pub file_end: u64,
    pub entries: usize,
}

/// The 4 KiB a log data sector stands for.
pub fn data_sector(f: &File, d: &DataRef) -> Result<Vec<u8>> {
    let mut b = vec![0u8; SECTOR as usize];
    fileio::read_full(f, &mut b, d.src)?;
    b[..8].copy_from_slice(&d.leading);
    b[SECTOR as usize - 4..].copy_from_slice(&d.trailing);
    Ok(b)
}

/// Checks every entry before anything is written: the file was not truncated behind the
/// log's back (FlushedFileOffset), data sectors carry their entry's sequence number, and
/// every write stays clear of the headers, region tables and log, and inside the file.
pub fn plan(f: &File, entries: &[Entry], log: &LogInfo, file_len: u64) -> Result<Replay> {
    let mut file_end = file_len;
    for e in entries {
        if e.flushed > file_len {
            return corrupt(format!(
                "VHDX log entry {} needs a file of at least {} bytes but the file has {}; the image has probably been truncated",
                e.seq, e.flushed, file_len
            ));
        }
        if e.last > file_end {
            if e.last > MAX_FILE_END {
                return corrupt(format!(
                    "VHDX log entry {} claims a file size of {} bytes",
                    e.seq, e.last
                ));
            }
            file_end = e.last.div_ceil(MIB) * MIB;
        }
    }
    let log_end = log.offset.saturating_add(log.length);
    let mut ops = Vec::new();
    for e in entries {
        for d in &e.descs {
            let (target, len) = match *d {
                Desc::Data { target, .. } => (target, SECTOR),
                Desc::Zero { target, len } => (target, len),
            };
            let end = target.saturating_add(len);
            if target < FIXED_END || end > file_end || (target < log_end && end > log.offset) {
                return corrupt(format!(
                    "VHDX log entry {} writes {len} bytes at offset {target}, outside the image's metadata",
                    e.seq
                ));
            }
            match *d {
                Desc::Data { target, seq, data } => {
                    let mut s = [0u8; SECTOR as usize];
                    fileio::read_full(f, &mut s, data.src)?;
                    let dseq = (le32(&s, 4) as u64) << 32 | le32(&s, SECTOR as usize - 4) as u64;
                    if dseq != seq {
                        return corrupt(format!(
                            "VHDX log entry {seq} has a data sector of another entry"
                        ));
                    }
                    ops.push(Op::Data { target, data });
                }
                Desc::Zero { target, len } => {
                    if len > 0 {
                        ops.push(Op::Zero { target, len })
                    }
                }
            }
        }
    }
    Ok(Replay {
        ops,
        file_end,
        entries: entries.len(),
    })
}

impl Replay {
    /// Writes the replay into the file and makes it durable.
    pub fn apply(&self, f: &File) -> Result<()> {
        for op in &self.ops {
            match op {
                Op::Data { target, data } => {
                    fileio::write_full(f, &data_sector(f, data)?, *target)?;
                }
                Op::Zero { target, len } => fileio::write_zeroes_slow(f, *target, *len)?,
            }
        }
        if fileio::file_len(f)? < self.file_end {
            f.set_len(self.file_end)?;
        }
        f.sync_data()?;
        Ok(())
    }
}

/// A replay kept in memory: reads of the file see the replayed metadata, the file is not
/// touched. Data sectors are read from the log when needed.
#[derive(Debug, Default)]
pub struct Overlay {
    sectors: BTreeMap<u64, DataRef>,
    /// Disjoint zeroed ranges, start -> end.
    zeros: BTreeMap<u64, u64>,
    /// Length of the file after the replay.
    pub file_len: u64,
}

impl Overlay {
    pub fn new(r: &Replay, file_len: u64) -> Overlay {
        let mut o = Overlay {
            file_len: file_len.max(r.file_end),
            ..Default::default()
        };
        for op in &r.ops {
            match *op {
                Op::Data { target, data } => {
                    o.unzero(target, target + SECTOR);
                    o.sectors.insert(target, data);
                }
                Op::Zero { target, len } => {
                    let end = target + len;
                    let keys: Vec<u64> = o.sectors.range(target..end).map(|(k, _)| *k).collect();
                    for k in keys {
                        o.sectors.remove(&k);
                    }
                    o.add_zero(target, end);
                }
            }
        }
        o
    }

    /// Removes [s, e) from the zeroed ranges.
    fn unzero(&mut self, s: u64, e: u64) {
        let hit: Vec<(u64, u64)> = self
            .zeros
            .range(..e)
            .rev()
            .take_while(|(_, &ze)| ze > s)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (zs, ze) in hit {
            self.zeros.remove(&zs);
            if zs < s {
                self.zeros.insert(zs, s);
            }
            if ze > e {
                self.zeros.insert(e, ze);
            }
        }
    }

    fn add_zero(&mut self, s: u64, e: u64) {
        let (mut ns, mut ne) = (s, e);
        let hit: Vec<(u64, u64)> = self
            .zeros
            .range(..=e)
            .rev()
            .take_while(|(_, &ze)| ze >= s)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (zs, ze) in hit {
            self.zeros.remove(&zs);
            ns = ns.min(zs);
            ne = ne.max(ze);
        }
        self.zeros.insert(ns, ne);
    }

    pub fn is_empty(&self) -> bool {
        self.sectors.is_empty() && self.zeros.is_empty()
    }

    /// Reads `buf` at `off` from the file as the replay would have left it.
    pub fn read(&self, f: &File, buf: &mut [u8], off: u64) -> Result<()> {
        fileio::read_full(f, buf, off)?;
        let end = off + buf.len() as u64;
        for (&t, d) in self.sectors.range(off.saturating_sub(SECTOR - 1)..end) {
            let s = data_sector(f, d)?;
            let a = t.max(off);
            let b = (t + SECTOR).min(end);
            if a < b {
                buf[(a - off) as usize..(b - off) as usize]
                    .copy_from_slice(&s[(a - t) as usize..(b - t) as usize]);
            }
        }
        for (&zs, &ze) in self.zeros.range(..end).rev() {
            if ze <= off {
                break;
            }
            let a = zs.max(off);
            let b = ze.min(end);
            buf[(a - off) as usize..(b - off) as usize].fill(0);
        }
        Ok(())
    }
}

/// A log entry writing whole sectors `sectors` (file offset, 4 KiB each), as QEMU lays
/// them out: header and descriptors, then one data sector per descriptor.
pub fn build_entry(
    guid: Guid,
    seq: u64,
    tail: u64,
    flushed: u64,
    last: u64,
    sectors: &[(u64, Vec<u8>)],
) -> Vec<u8> {
    let n = sectors.len() as u64;
    let nd = desc_sectors(n);
    let len = ((nd + n) * SECTOR) as usize;
    let mut b = vec![0u8; len];
    b[..4].copy_from_slice(ENTRY_SIGNATURE);
    put32(&mut b, 8, len as u32);
    put32(&mut b, 12, tail as u32);
    put64(&mut b, 16, seq);
    put32(&mut b, 24, n as u32);
    b[32..48].copy_from_slice(&guid.0);
    put64(&mut b, 48, flushed);
    put64(&mut b, 56, last);
    for (i, (target, data)) in sectors.iter().enumerate() {
        let at = ((i as u64 + HEADER_SLOTS) * 32) as usize;
        b[at..at + 4].copy_from_slice(DESC_SIGNATURE);
        b[at + 4..at + 8].copy_from_slice(&data[SECTOR as usize - 4..]);
        b[at + 8..at + 16].copy_from_slice(&data[..8]);
        put64(&mut b, at + 16, *target);
        put64(&mut b, at + 24, seq);
        let ds = ((nd + i as u64) * SECTOR) as usize;
        b[ds..ds + 4].copy_from_slice(DATA_SIGNATURE);
        put32(&mut b, ds + 4, (seq >> 32) as u32);
        b[ds + 8..ds + SECTOR as usize - 4].copy_from_slice(&data[8..SECTOR as usize - 4]);
        put32(&mut b, ds + SECTOR as usize - 4, seq as u32);
    }
    let c = checksum(&b, 4);
    put32(&mut b, 4, c);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_crc_matches() {
        for n in [0u64, 1, 100, 4096, 4097, 3 * 4096 + 5, 1 << 20] {
            let z = vec![0u8; n as usize];
            let c0 = crc32c::crc32c(b"abc");
            assert_eq!(
                crc_append_zeros(c0, n),
                crc32c::crc32c_append(c0, &z),
                "{n}"
            );
        }
    }

    #[test]
    fn overlay_ranges() {
        let d = DataRef {
            src: 0,
            leading: [0; 8],
            trailing: [0; 4],
        };
        let r = Replay {
            ops: vec![
                Op::Zero {
                    target: 1 << 20,
                    len: 4 * SECTOR,
                },
                Op::Data {
                    target: (1 << 20) + SECTOR,
                    data: d,
                },
                Op::Zero {
                    target: (1 << 20) + 3 * SECTOR,
                    len: 2 * SECTOR,
                },
            ],
            file_end: 0,
            entries: 1,
        };
        let o = Overlay::new(&r, 0);
        let z: Vec<(u64, u64)> = o.zeros.iter().map(|(a, b)| (*a, *b)).collect();
        let m = 1 << 20;
        assert_eq!(z, vec![(m, m + SECTOR), (m + 2 * SECTOR, m + 5 * SECTOR)]);
        assert_eq!(o.sectors.len(), 1);
    }
}
