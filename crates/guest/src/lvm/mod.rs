//! LVM2: physical volumes found by their label, the volume group metadata in their metadata
//! areas (the newest seqno of each VG wins across its PVs), and logical volumes as byte
//! devices that map logical extents to PV offsets (pe_start + extent * extent_size), like
//! device-mapper's linear and striped targets.
//!
//! Written by hand: no crate reads LVM2 on-disk metadata. Thin pools and thin volumes,
//! RAID, mirrors, snapshots, cache and VDO are refused per LV with `Error::Unsupported`; the
//! rest of the volume group stays usable. An LV on a missing PV fails with a clear error.

pub mod label;
pub mod metadata;

use crate::dev::{check_range, BlockDev};
use crate::error::{Error, Result};
use label::{Area, PvLabel, MDA_HEADER_SIZE, RAW_LOCN_IGNORED};
use metadata::Section;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest metadata text read from one metadata area.
const MAX_TEXT: u64 = 16 << 20;
/// Sanity caps on what one VG may hold.
const MAX_SEGMENTS: u64 = 100_000;
const MAX_STRIPES: u64 = 128;

/// A physical volume, as `pvs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvInfo {
    /// The device it was found on ("/dev/sda2"), or "[unknown]" for a PV the VG metadata
    /// lists but no disk holds.
    pub name: String,
    /// Dashed, as `pvs -o pv_uuid` prints it.
    pub uuid: String,
    pub vg_name: Option<String>,
    /// Device size the PV label (or VG metadata) records, in bytes.
    pub dev_size: u64,
    /// Start of the first extent, in bytes.
    pub pe_start: u64,
    pub pe_count: u64,
    pub missing: bool,
}

/// A volume group, as `vgs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VgInfo {
    pub name: String,
    pub uuid: String,
    pub seqno: u64,
    /// In bytes.
    pub extent_size: u64,
    pub extent_count: u64,
    pub free_count: u64,
    pub pv_count: usize,
    /// Visible LVs (as `vgs -o lv_count` counts them).
    pub lv_count: usize,
    pub missing_pv_count: usize,
}

impl VgInfo {
    pub fn size(&self) -> u64 {
        self.extent_count.saturating_mul(self.extent_size)
    }
    pub fn free(&self) -> u64 {
        self.free_count.saturating_mul(self.extent_size)
    }
}

/// One segment of an LV, as `lvs -o seg_start_pe,seg_size_pe,segtype,stripes,seg_pe_ranges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegInfo {
    pub start_extent: u64,
    pub extent_count: u64,
    /// "striped" (also for linear: one stripe), "thin", "thin-pool", "raid1", ...
    pub segtype: String,
    /// In bytes; 0 for a single stripe.
    pub stripe_size: u64,
    /// (PV device name, or the PV/LV key from the metadata when unknown; first extent).
    pub stripes: Vec<(String, u64)>,
}

/// A logical volume, as `lvs` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvInfo {
    pub vg_name: String,
    pub name: String,
    pub uuid: String,
    /// "/dev/VG/LV".
    pub path: String,
    pub size: u64,
    pub segments: Vec<SegInfo>,
    /// Why this LV cannot be read (unsupported segment type, missing PV, bad mapping).
    pub error: Option<String>,
}

enum LvState {
    Ready(Arc<dyn BlockDev>),
    Unsupported(String),
    Missing(String),
    Corrupt(String),
}

struct Lv {
    name: String,
    uuid: String,
    visible: bool,
    /// Pools are private: `lvs` in libguestfs leaves them out.
    pool: bool,
    size: u64,
    segments: Vec<SegInfo>,
    state: LvState,
}

struct VgPv {
    uuid: String,
    device: Option<(String, Arc<dyn BlockDev>)>,
    pe_start: u64,
    pe_count: u64,
    dev_size: u64,
}

struct Vg {
    name: String,
    uuid: String,
    seqno: u64,
    extent_size: u64,
    pvs: Vec<(String, VgPv)>,
    /// PV key ("pv0") -> index in `pvs`.
    pv_index: HashMap<String, usize>,
    lvs: Vec<Lv>,
    /// LV name -> index in `lvs` (lookups stay linear in the metadata size).
    lv_index: HashMap<String, usize>,
}

/// Everything LVM found on a set of devices.
#[derive(Default)]
pub struct Lvm {
    vgs: Vec<Vg>,
    orphans: Vec<PvInfo>,
    /// Problems met while scanning (a bad label checksum, a corrupt metadata area, a VG
    /// whose metadata does not parse), one line each.
    pub warnings: Vec<String>,
}

struct Candidate {
    vg_id: String,
    seqno: u64,
    root: Section,
}

struct Scanned {
    name: String,
    dev: Arc<dyn BlockDev>,
    label: PvLabel,
    best: Option<Candidate>,
}

/// Reads the text of one metadata area's committed metadata.
fn read_text(dev: &dyn BlockDev, area: Area) -> Result<Option<Vec<u8>>> {
    let Some(r) = label::mda_header(dev, area)? else {
        return Ok(None);
    };
    if r.flags & RAW_LOCN_IGNORED != 0 {
        return Ok(None);
    }
    let ring = area.size - MDA_HEADER_SIZE;
    if r.offset < MDA_HEADER_SIZE || r.offset >= area.size || r.size == 0 || r.size > ring {
        return Err(Error::Corrupt(format!(
            "LVM metadata area at offset {}: metadata of {} bytes at {} does not fit",
            area.offset, r.size, r.offset
        )));
    }
    if r.size > MAX_TEXT {
        return Err(Error::Unsupported(format!(
            "LVM metadata of {} bytes is larger than the {MAX_TEXT} bytes read",
            r.size
        )));
    }
    // The text may wrap around the end of the ring to just after the header.
    let first = r.size.min(area.size - r.offset);
    let mut text = vec![0u8; r.size as usize];
    dev.read_at(&mut text[..first as usize], area.offset + r.offset)?;
    if first < r.size {
        dev.read_at(&mut text[first as usize..], area.offset + MDA_HEADER_SIZE)?;
    }
    if label::lvm_crc_init(&text) != r.checksum {
        return Err(Error::Corrupt(format!(
            "LVM metadata at offset {}: checksum mismatch",
            area.offset + r.offset
        )));
    }
    Ok(Some(text))
}

fn candidate(text: &[u8]) -> Result<Candidate> {
    let root = metadata::parse(text)?;
    let vg = root
        .sections
        .first()
        .ok_or_else(|| Error::Corrupt("LVM metadata holds no volume group".into()))?;
    let vg_id = vg
        .str("id")
        .ok_or_else(|| Error::Corrupt(format!("LVM volume group {}: no id", vg.name)))?
        .to_string();
    let seqno = vg
        .uint("seqno")
        .ok_or_else(|| Error::Corrupt(format!("LVM volume group {}: no seqno", vg.name)))?;
    Ok(Candidate { vg_id, seqno, root })
}

/// LVM's rules for VG and LV names (the lexer already limits the characters).
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 127 && !n.starts_with('-') && n != "." && n != ".."
}

fn undashed(id: &str) -> String {
    id.chars().filter(|&c| c != '-').collect()
}

/// Scans `devices` (name, device) for PVs and assembles their volume groups. Never fails:
/// what cannot be used is left out with a warning.
pub fn scan(devices: &[(String, Arc<dyn BlockDev>)]) -> Lvm {
    let mut lvm = Lvm::default();
    let mut scanned = Vec::new();
    for (name, dev) in devices {
        let label = match label::read(&**dev) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                lvm.warnings.push(format!("{name}: {e}"));
                continue;
            }
        };
        let mut best: Option<Candidate> = None;
        for &area in &label.metadata_areas {
            let c = read_text(&**dev, area).and_then(|t| t.map(|t| candidate(&t)).transpose());
            match c {
                Ok(Some(c)) => {
                    if !matches!(&best, Some(b) if b.seqno >= c.seqno) {
                        best = Some(c);
                    }
                }
                Ok(None) => {}
                Err(e) => lvm.warnings.push(format!("{name}: {e}")),
            }
        }
        scanned.push(Scanned {
            name: name.clone(),
            dev: dev.clone(),
            label,
            best,
        });
    }

    // Newest metadata of each VG, by VG id.
    let mut newest: HashMap<String, Candidate> = HashMap::new();
    for s in scanned.iter_mut() {
        if let Some(c) = s.best.take() {
            match newest.get(&c.vg_id) {
                Some(old) if old.seqno >= c.seqno => {}
                _ => {
                    newest.insert(c.vg_id.clone(), c);
                }
            }
        }
    }
    // PV uuid -> device (the first one found; a duplicate is reported).
    let mut by_uuid: HashMap<String, (String, Arc<dyn BlockDev>)> = HashMap::new();
    for s in &scanned {
        if by_uuid.contains_key(&s.label.uuid) {
            lvm.warnings.push(format!(
                "{}: duplicate PV {}; using the first device with it",
                s.name,
                s.label.uuid_dashed()
            ));
            continue;
        }
        by_uuid.insert(s.label.uuid.clone(), (s.name.clone(), s.dev.clone()));
    }
    let mut vgs: Vec<Candidate> = newest.into_values().collect();
    vgs.sort_by(|a, b| {
        let n = |c: &Candidate| c.root.sections.first().map(|s| s.name.clone());
        n(a).cmp(&n(b))
    });
    for c in vgs {
        let Some(sec) = c.root.sections.first() else {
            continue;
        };
        match build_vg(sec, c.seqno, &by_uuid) {
            Ok(vg) => lvm.vgs.push(vg),
            Err(e) => lvm.warnings.push(format!("volume group {}: {e}", sec.name)),
        }
    }
    let used: std::collections::HashSet<(&str, &str)> = lvm
        .vgs
        .iter()
        .flat_map(|vg| &vg.pvs)
        .filter_map(|(_, p)| {
            p.device
                .as_ref()
                .map(|(n, _)| (n.as_str(), p.uuid.as_str()))
        })
        .collect();
    let mut orphans = Vec::new();
    for s in &scanned {
        let in_vg = used.contains(&(s.name.as_str(), s.label.uuid.as_str()));
        if !in_vg {
            let da = s.label.data_areas.first();
            orphans.push(PvInfo {
                name: s.name.clone(),
                uuid: s.label.uuid_dashed(),
                vg_name: None,
                dev_size: s.label.dev_size,
                pe_start: da.map_or(0, |a| a.offset),
                pe_count: 0,
                missing: false,
            });
        }
    }
    lvm.orphans = orphans;
    lvm
}

fn build_vg(
    sec: &Section,
    seqno: u64,
    by_uuid: &HashMap<String, (String, Arc<dyn BlockDev>)>,
) -> Result<Vg> {
    let bad = |m: String| Error::Corrupt(m);
    if !valid_name(&sec.name) {
        return Err(bad(format!("invalid volume group name \"{}\"", sec.name)));
    }
    let extent_sectors = sec
        .uint("extent_size")
        .filter(|&e| e > 0 && e <= 1 << 32)
        .ok_or_else(|| bad("extent_size missing or invalid".into()))?;
    let extent_size = extent_sectors * 512;
    let mut vg = Vg {
        name: sec.name.clone(),
        uuid: sec.str("id").unwrap_or_default().to_string(),
        seqno,
        extent_size,
        pvs: Vec::new(),
        pv_index: HashMap::new(),
        lvs: Vec::new(),
        lv_index: HashMap::new(),
    };
    if let Some(pvs) = sec.section("physical_volumes") {
        for p in &pvs.sections {
            let uuid = undashed(p.str("id").unwrap_or_default());
            let pe_start = p
                .uint("pe_start")
                .and_then(|s| s.checked_mul(512))
                .ok_or_else(|| bad(format!("PV {}: pe_start missing or invalid", p.name)))?;
            let pe_count = p
                .uint("pe_count")
                .ok_or_else(|| bad(format!("PV {}: pe_count missing or invalid", p.name)))?;
            let device = by_uuid.get(&uuid).cloned();
            vg.pv_index.entry(p.name.clone()).or_insert(vg.pvs.len());
            vg.pvs.push((
                p.name.clone(),
                VgPv {
                    uuid,
                    device,
                    pe_start,
                    pe_count,
                    dev_size: p.uint("dev_size").unwrap_or(0).saturating_mul(512),
                },
            ));
        }
    }
    let Some(lvs) = sec.section("logical_volumes") else {
        return Ok(vg);
    };
    // Copy-on-write stores of old-style snapshots: their bytes are not the snapshot's view.
    let mut cow: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for l in &lvs.sections {
        for s in &l.sections {
            if s.str("type") == Some("snapshot") {
                if let Some(c) = s.str("cow_store") {
                    cow.insert(c);
                }
            }
        }
    }
    for l in &lvs.sections {
        let lv = build_lv(&vg, l, cow.contains(l.name.as_str()));
        vg.lv_index.entry(lv.name.clone()).or_insert(vg.lvs.len());
        vg.lvs.push(lv);
    }
    Ok(vg)
}

fn unsupported_kind(t: &str) -> Option<&'static str> {
    Some(match t {
        "striped" | "linear" | "zero" => return None,
        "thin-pool" => "thin pool",
        "thin" => "thin volume",
        "mirror" => "mirror",
        "snapshot" => "snapshot",
        "cache" | "cache-pool" => "cache",
        "writecache" => "writecache",
        "vdo" | "vdo-pool" => "VDO",
        "integrity" => "integrity",
        "error" => "error",
        _ if t.starts_with("raid") => "RAID",
        _ => "unknown segment type",
    })
}

fn build_lv(vg: &Vg, l: &Section, is_cow: bool) -> Lv {
    let status = l.strs("status").unwrap_or_default();
    let mut lv = Lv {
        name: l.name.clone(),
        uuid: l.str("id").unwrap_or_default().to_string(),
        visible: status.contains(&"VISIBLE"),
        pool: false,
        size: 0,
        segments: Vec::new(),
        state: LvState::Corrupt(String::new()),
    };
    let what = format!("logical volume {}/{}", vg.name, l.name);
    if !valid_name(&l.name) {
        lv.state = LvState::Corrupt(format!("{what}: invalid name"));
        return lv;
    }
    match map_lv(vg, l, &what, &mut lv) {
        Ok(pieces) => {
            lv.state = if is_cow {
                LvState::Unsupported(format!(
                    "{what}: snapshot (copy-on-write store) volumes are not supported"
                ))
            } else {
                LvState::Ready(Arc::new(LvDev {
                    name: format!("/dev/{}/{}", vg.name, l.name),
                    size: lv.size,
                    pieces,
                }))
            };
        }
        Err(s) => lv.state = s,
    }
    lv
}

/// One contiguous run of the LV.
struct Piece {
    lv_start: u64,
    len: u64,
    /// Stripe size in bytes (len of one chunk); for one area, equal to `len`.
    chunk: u64,
    /// Where each stripe's data starts (device, byte offset) and how long it is.
    areas: Vec<(Arc<dyn BlockDev>, u64, u64)>,
}

/// Builds the segment list (for `lvs`) and the extent map; an unsupported or unmappable
/// segment is the LV's state.
fn map_lv(
    vg: &Vg,
    l: &Section,
    what: &str,
    lv: &mut Lv,
) -> std::result::Result<Vec<Piece>, LvState> {
    let corrupt = |m: String| LvState::Corrupt(format!("{what}: {m}"));
    let count = l.uint("segment_count").unwrap_or(0);
    if count == 0 || count > MAX_SEGMENTS {
        return Err(corrupt(format!("segment_count {count} is invalid")));
    }
    let by_name: HashMap<&str, &Section> = l
        .sections
        .iter()
        .rev()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut segs: Vec<&Section> = Vec::new();
    for i in 1..=count {
        match by_name.get(format!("segment{i}").as_str()) {
            Some(s) => segs.push(s),
            None => return Err(corrupt(format!("segment{i} is missing"))),
        }
    }
    segs.sort_by_key(|s| s.uint("start_extent").unwrap_or(0));
    let mut problem: Option<LvState> = None;
    let mut pieces = Vec::new();
    let mut next_extent = 0u64;
    for s in segs {
        let t = s.str("type").unwrap_or("").to_string();
        let start = s.uint("start_extent");
        let n = s.uint("extent_count").filter(|&n| n > 0);
        let (Some(start), Some(n)) = (start, n) else {
            return Err(corrupt("segment without start_extent/extent_count".into()));
        };
        if start != next_extent {
            return Err(corrupt(format!(
                "segment at extent {start} does not follow the previous one (extent {next_extent})"
            )));
        }
        next_extent = start
            .checked_add(n)
            .filter(|e| e.checked_mul(vg.extent_size).is_some())
            .ok_or_else(|| corrupt("extents overflow".into()))?;
        let mut info = SegInfo {
            start_extent: start,
            extent_count: n,
            segtype: t.clone(),
            stripe_size: 0,
            stripes: Vec::new(),
        };
        if matches!(t.as_str(), "thin-pool" | "cache-pool" | "vdo-pool") {
            lv.pool = true;
        }
        if let Some(kind) = unsupported_kind(&t) {
            if problem.is_none() {
                problem = Some(LvState::Unsupported(format!(
                    "{what}: {kind} volumes are not supported (segment type \"{t}\")"
                )));
            }
            lv.segments.push(info);
            continue;
        }
        if t == "zero" {
            lv.segments.push(info);
            pieces.push(Piece {
                lv_start: start * vg.extent_size,
                len: n * vg.extent_size,
                chunk: n * vg.extent_size,
                areas: Vec::new(),
            });
            continue;
        }
        let stripe_count = s
            .uint("stripe_count")
            .filter(|c| (1..=MAX_STRIPES).contains(c))
            .ok_or_else(|| corrupt("stripe_count missing or invalid".into()))?;
        if n % stripe_count != 0 {
            return Err(corrupt(format!(
                "{n} extents do not divide into {stripe_count} stripes"
            )));
        }
        let per_stripe = n / stripe_count;
        let len = n * vg.extent_size;
        let chunk = if stripe_count == 1 {
            len
        } else {
            s.uint("stripe_size")
                .filter(|&z| z > 0 && z.is_power_of_two() && z <= 1 << 32)
                .map(|z| z * 512)
                .ok_or_else(|| corrupt("stripe_size missing or invalid".into()))?
        };
        if stripe_count > 1 {
            info.stripe_size = chunk;
        }
        let list = match s.get("stripes") {
            Some(metadata::Value::List(v)) if v.len() as u64 == 2 * stripe_count => v,
            _ => return Err(corrupt("stripes list does not match stripe_count".into())),
        };
        let mut areas = Vec::new();
        for pair in list.chunks_exact(2) {
            let (metadata::Value::Str(pv), metadata::Value::Int(pe)) = (&pair[0], &pair[1]) else {
                return Err(corrupt("malformed stripes entry".into()));
            };
            let pe = u64::try_from(*pe).map_err(|_| corrupt("negative extent".into()))?;
            let Some((_, p)) = vg.pv_index.get(pv).and_then(|&i| vg.pvs.get(i)) else {
                info.stripes.push((pv.clone(), pe));
                if problem.is_none() {
                    problem = Some(LvState::Unsupported(format!(
                        "{what}: segments on another logical volume (\"{pv}\") are not supported"
                    )));
                }
                continue;
            };
            let Some((devname, dev)) = &p.device else {
                info.stripes.push((pv.clone(), pe));
                if problem.is_none() {
                    problem = Some(LvState::Missing(format!(
                        "{what}: needs physical volume {pv} ({}), which is missing",
                        label::dashed(&p.uuid)
                    )));
                }
                continue;
            };
            info.stripes.push((devname.clone(), pe));
            let end_pe = pe
                .checked_add(per_stripe)
                .filter(|&e| e <= p.pe_count)
                .ok_or_else(|| {
                    corrupt(format!(
                        "extents {pe}+{per_stripe} are past the {} extents of {pv}",
                        p.pe_count
                    ))
                })?;
            let off = pe
                .checked_mul(vg.extent_size)
                .and_then(|o| o.checked_add(p.pe_start))
                .ok_or_else(|| corrupt("extent offset overflows".into()))?;
            let area_len = (end_pe - pe) * vg.extent_size;
            check_range(devname, dev.size(), off, area_len)
                .map_err(|e| corrupt(format!("{pv}: {e}")))?;
            areas.push((dev.clone(), off, area_len));
        }
        lv.segments.push(info);
        pieces.push(Piece {
            lv_start: start * vg.extent_size,
            len,
            chunk,
            areas,
        });
    }
    lv.size = next_extent * vg.extent_size;
    if let Some(p) = problem {
        return Err(p);
    }
    Ok(pieces)
}

/// A logical volume's bytes: each read is split at segment and stripe-chunk boundaries and
/// sent to the PV holding that chunk (dm-stripe's mapping; one stripe is dm-linear).
struct LvDev {
    name: String,
    size: u64,
    pieces: Vec<Piece>,
}

impl BlockDev for LvDev {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(&self.name, self.size, off, buf.len() as u64)?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = off + done as u64;
            let i = self.pieces.partition_point(|p| p.lv_start + p.len <= pos);
            let Some(p) = self.pieces.get(i) else {
                return Err(Error::Corrupt(format!(
                    "{}: no segment at {pos}",
                    self.name
                )));
            };
            let rel = pos - p.lv_start;
            let within = rel % p.chunk;
            let n = ((p.chunk - within).min(p.len - rel)).min((buf.len() - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            if p.areas.is_empty() {
                out.fill(0);
            } else {
                let c = rel / p.chunk;
                let stripes = p.areas.len() as u64;
                let (dev, start, alen) = &p.areas[(c % stripes) as usize];
                let at = (c / stripes) * p.chunk + within;
                check_range(&self.name, *alen, at, n as u64)?;
                dev.read_at(out, start + at)?;
            }
            done += n;
        }
        Ok(())
    }
}

impl Lvm {
    /// The volume group described by metadata `text`, over `pvs` given as (PV UUID, with or
    /// without dashes; device name; device), as if the text had been read from their metadata
    /// areas. For fuzzing the metadata interpretation and the extent mapping past the
    /// checksums, and for tests.
    pub fn from_metadata(text: &[u8], pvs: &[(String, String, Arc<dyn BlockDev>)]) -> Result<Lvm> {
        let c = candidate(text)?;
        let by_uuid = pvs
            .iter()
            .map(|(u, n, d)| (undashed(u), (n.clone(), d.clone())))
            .collect();
        let sec = c
            .root
            .sections
            .first()
            .ok_or_else(|| Error::Corrupt("LVM metadata holds no volume group".into()))?;
        let vg = build_vg(sec, c.seqno, &by_uuid)?;
        Ok(Lvm {
            vgs: vec![vg],
            ..Lvm::default()
        })
    }

    pub fn pvs(&self) -> Vec<PvInfo> {
        let mut out = Vec::new();
        for vg in &self.vgs {
            for (_, p) in &vg.pvs {
                out.push(PvInfo {
                    name: p
                        .device
                        .as_ref()
                        .map_or_else(|| "[unknown]".to_string(), |(n, _)| n.clone()),
                    uuid: label::dashed(&p.uuid),
                    vg_name: Some(vg.name.clone()),
                    dev_size: p.dev_size,
                    pe_start: p.pe_start,
                    pe_count: p.pe_count,
                    missing: p.device.is_none(),
                });
            }
        }
        out.extend(self.orphans.iter().cloned());
        out
    }

    pub fn vgs(&self) -> Vec<VgInfo> {
        self.vgs
            .iter()
            .map(|vg| {
                let extent_count: u64 = vg.pvs.iter().map(|(_, p)| p.pe_count).sum();
                let used: u64 = vg
                    .lvs
                    .iter()
                    .flat_map(|l| &l.segments)
                    .filter(|s| unsupported_kind(&s.segtype).is_none() && s.segtype != "zero")
                    .map(|s| s.extent_count)
                    .sum();
                VgInfo {
                    name: vg.name.clone(),
                    uuid: vg.uuid.clone(),
                    seqno: vg.seqno,
                    extent_size: vg.extent_size,
                    extent_count,
                    free_count: extent_count.saturating_sub(used),
                    pv_count: vg.pvs.len(),
                    lv_count: vg.lvs.iter().filter(|l| l.visible).count(),
                    missing_pv_count: vg.pvs.iter().filter(|(_, p)| p.device.is_none()).count(),
                }
            })
            .collect()
    }

    /// Public LVs (visible, not pools), as libguestfs' `lvs` lists them, by VG then LV name.
    pub fn lvs(&self) -> Vec<LvInfo> {
        let mut out = Vec::new();
        for vg in &self.vgs {
            for lv in vg.lvs.iter().filter(|l| l.visible && !l.pool) {
                out.push(LvInfo {
                    vg_name: vg.name.clone(),
                    name: lv.name.clone(),
                    uuid: lv.uuid.clone(),
                    path: format!("/dev/{}/{}", vg.name, lv.name),
                    size: lv.size,
                    segments: lv.segments.clone(),
                    error: match &lv.state {
                        LvState::Ready(_) => None,
                        LvState::Unsupported(m) | LvState::Missing(m) | LvState::Corrupt(m) => {
                            Some(m.clone())
                        }
                    },
                });
            }
        }
        out.sort_by(|a, b| (&a.vg_name, &a.name).cmp(&(&b.vg_name, &b.name)));
        out
    }

    /// The device of LV `lv` in VG `vg` (public or hidden); `None` when there is no such LV.
    pub fn lv_device(&self, vg: &str, lv: &str) -> Option<Result<Arc<dyn BlockDev>>> {
        let vg = self.vgs.iter().find(|v| v.name == vg)?;
        let lv = vg.lv_index.get(lv).and_then(|&i| vg.lvs.get(i))?;
        Some(match &lv.state {
            LvState::Ready(d) => Ok(d.clone()),
            LvState::Unsupported(m) => Err(Error::Unsupported(m.clone())),
            LvState::Missing(m) => Err(Error::NotFound(m.clone())),
            LvState::Corrupt(m) => Err(Error::Corrupt(m.clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::MemDev;

    const UUID: &str = "AAAAAAbbbbCCCCddddEEEEffffGGGGGG";

    /// A PV of `size` bytes with its label in sector 1 and one metadata area at 4096 of
    /// `mda` bytes holding `text` at ring offset `at` (wrapping past the end of the ring).
    fn pv(size: usize, mda: u64, text: &[u8], at: u64) -> Vec<u8> {
        let mut d = vec![0u8; size];
        let l = 512;
        d[l..l + 8].copy_from_slice(b"LABELONE");
        d[l + 8..l + 16].copy_from_slice(&1u64.to_le_bytes());
        d[l + 20..l + 24].copy_from_slice(&32u32.to_le_bytes());
        d[l + 24..l + 32].copy_from_slice(b"LVM2 001");
        let h = l + 32;
        d[h..h + 32].copy_from_slice(UUID.as_bytes());
        d[h + 32..h + 40].copy_from_slice(&(size as u64).to_le_bytes());
        // Data area at 64 KiB, then the terminator; metadata area at 4096, terminator.
        d[h + 40..h + 48].copy_from_slice(&65536u64.to_le_bytes());
        d[h + 72..h + 80].copy_from_slice(&4096u64.to_le_bytes());
        d[h + 80..h + 88].copy_from_slice(&mda.to_le_bytes());
        let crc = label::lvm_crc_init(&d[l + 20..l + 512]);
        d[l + 16..l + 20].copy_from_slice(&crc.to_le_bytes());
        // Text: first part at `at`, the rest right after the mda header.
        let first = (text.len() as u64).min(mda - at) as usize;
        let m = 4096usize;
        d[m + at as usize..m + at as usize + first].copy_from_slice(&text[..first]);
        d[m + 512..m + 512 + text.len() - first].copy_from_slice(&text[first..]);
        d[m + 4..m + 20].copy_from_slice(label::MDA_MAGIC);
        d[m + 20..m + 24].copy_from_slice(&1u32.to_le_bytes());
        d[m + 24..m + 32].copy_from_slice(&4096u64.to_le_bytes());
        d[m + 32..m + 40].copy_from_slice(&mda.to_le_bytes());
        d[m + 40..m + 48].copy_from_slice(&at.to_le_bytes());
        d[m + 48..m + 56].copy_from_slice(&(text.len() as u64).to_le_bytes());
        d[m + 56..m + 60].copy_from_slice(&label::lvm_crc_init(text).to_le_bytes());
        let crc = label::lvm_crc_init(&d[m + 4..m + 512]);
        d[m..m + 4].copy_from_slice(&crc.to_le_bytes());
        d
    }

    fn text(seqno: u32, extra_lv: &str) -> String {
        format!(
            "vg {{\nid = \"vgid00-0000-0000-0000-0000-0000-000000\"\nseqno = {seqno}\n\
             extent_size = 8\nphysical_volumes {{\npv0 {{\nid = \"{}\"\npe_start = 128\npe_count = 16\n}}\n}}\n\
             logical_volumes {{\nlv {{\nid = \"x\"\nstatus = [\"VISIBLE\"]\nsegment_count = 1\n\
             segment1 {{\nstart_extent = 0\nextent_count = 2\ntype = \"striped\"\nstripe_count = 1\n\
             stripes = [\"pv0\", 3]\n}}\n}}\n{extra_lv}}}\n}}\n",
            label::dashed(UUID)
        )
    }

    #[test]
    fn metadata_wrapping_around_the_ring() {
        let t = text(5, "");
        // The text starts 100 bytes before the end of a 2 KiB ring and wraps.
        let mut d = pv(128 << 10, 2048, t.as_bytes(), 2048 - 100);
        for (i, b) in d[65536 + 3 * 4096..65536 + 5 * 4096].iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        let dev: Arc<dyn BlockDev> = Arc::new(MemDev(d));
        let lvm = scan(&[("/dev/sda".into(), dev)]);
        assert!(lvm.warnings.is_empty(), "{:?}", lvm.warnings);
        assert_eq!(lvm.vgs()[0].seqno, 5);
        let lv = lvm.lv_device("vg", "lv").unwrap().unwrap();
        assert_eq!(lv.size(), 8192);
        let mut b = vec![0u8; 8192];
        lv.read_at(&mut b, 0).unwrap();
        assert!(b.iter().enumerate().all(|(i, &x)| x == (i % 253) as u8));
    }

    #[test]
    fn hostile_metadata_is_refused_per_lv() {
        let bad_lvs = [
            // Past the PV's extents, inverted, absurd stripes, unknown PV, thin.
            "a {\nstatus = [\"VISIBLE\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 4\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 14]\n}\n}\n",
            "b {\nstatus = [\"VISIBLE\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 3\ntype = \"striped\"\nstripe_count = 2\nstripe_size = 8\nstripes = [\"pv0\", 0, \"pv0\", 4]\n}\n}\n",
            "c {\nstatus = [\"VISIBLE\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"nope\", 0]\n}\n}\n",
            "d {\nstatus = [\"VISIBLE\"]\nsegment_count = 2\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 0]\n}\n}\n",
            "e {\nstatus = [\"VISIBLE\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 18446744073709551615\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 0]\n}\n}\n",
            "f {\nstatus = [\"VISIBLE\"]\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = 1\ntype = \"raid1\"\n}\n}\n",
        ];
        let t = text(1, &bad_lvs.concat());
        let dev: Arc<dyn BlockDev> = Arc::new(MemDev(pv(128 << 10, 8192, t.as_bytes(), 512)));
        let lvm = scan(&[("/dev/sda".into(), dev)]);
        assert!(lvm.warnings.is_empty(), "{:?}", lvm.warnings);
        assert!(lvm.lv_device("vg", "lv").unwrap().is_ok());
        for n in ["a", "b", "c", "d", "e", "f"] {
            let e = lvm.lv_device("vg", n).unwrap().err().unwrap();
            assert!(
                matches!(e, Error::Corrupt(_) | Error::Unsupported(_)),
                "{n}: {e}"
            );
        }
        assert!(matches!(
            lvm.lv_device("vg", "f"),
            Some(Err(Error::Unsupported(m))) if m.contains("RAID")
        ));
    }
}
