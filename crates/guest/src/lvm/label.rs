//! The LVM2 physical volume label: "LABELONE" in one of the first four 512-byte sectors,
//! followed by the pv_header (PV UUID, device size, data areas, metadata areas), and the
//! mda_header at the start of each metadata area (lib/format_text/layout.h in LVM2).

use crate::dev::BlockDev;
use crate::error::{Error, Result};
use crate::part::{le32, le64};

const SECTOR: u64 = 512;
/// LVM's CRC seed (INITIAL_CRC in lib/misc/crc.h).
const INITIAL_CRC: u32 = 0xf597_a6cf;
/// The mda_header magic (FMTT_MAGIC).
pub const MDA_MAGIC: &[u8; 16] =
    b"\x20\x4c\x56\x4d\x32\x20\x78\x5b\x35\x41\x25\x72\x30\x4e\x2a\x3e";
/// Most data or metadata areas accepted per PV (LVM writes one or two of each).
const MAX_AREAS: usize = 8;

/// LVM's CRC32: the reflected 0xEDB88320 polynomial of zlib, seeded with `initial` and
/// without the final inversion. crc32fast computes the zlib variant, which inverts before
/// and after; inverting around it gives LVM's.
pub fn lvm_crc(initial: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!initial);
    h.update(data);
    !h.finalize()
}

/// LVM's CRC of `data` from its standard seed.
pub fn lvm_crc_init(data: &[u8]) -> u32 {
    lvm_crc(INITIAL_CRC, data)
}

/// An area of the PV: byte offset from the start of the device and length (0 = to the end,
/// for the data area).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Area {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvLabel {
    /// Sector (0-3) the label was found in.
    pub sector: u64,
    /// The 32 characters of the PV UUID, without dashes.
    pub uuid: String,
    pub dev_size: u64,
    pub data_areas: Vec<Area>,
    pub metadata_areas: Vec<Area>,
}

impl PvLabel {
    /// The UUID as LVM and blkid print it: 6-4-4-4-4-4-6 characters.
    pub fn uuid_dashed(&self) -> String {
        dashed(&self.uuid)
    }
}

/// Inserts LVM's dashes into a 32-character id (anything else is returned as is).
pub fn dashed(id: &str) -> String {
    if id.len() != 32 || !id.is_ascii() {
        return id.to_string();
    }
    let mut s = String::with_capacity(38);
    let mut at = 0;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].iter().enumerate() {
        if i > 0 {
            s.push('-');
        }
        s.push_str(&id[at..at + n]);
        at += n;
    }
    s
}

/// Looks for the label in sectors 0-3. `Ok(None)`: not a PV. A label whose checksum or
/// fields are wrong is not a PV either (LVM ignores it too), except for a pv_header that
/// lies: that is corruption.
pub fn read(dev: &dyn BlockDev) -> Result<Option<PvLabel>> {
    for sector in 0..4u64 {
        let off = sector * SECTOR;
        if off + SECTOR > dev.size() {
            break;
        }
        let mut b = [0u8; 512];
        dev.read_at(&mut b, off)?;
        if &b[0..8] != b"LABELONE" || le64(&b, 8) != sector || &b[24..32] != b"LVM2 001" {
            continue;
        }
        if le32(&b, 16) != lvm_crc_init(&b[20..]) {
            continue;
        }
        return parse_pv_header(&b, sector).map(Some);
    }
    Ok(None)
}

fn parse_pv_header(b: &[u8; 512], sector: u64) -> Result<PvLabel> {
    let start = le32(b, 20) as usize;
    // uuid (32) + device size (8) + at least the two list terminators (2 * 16).
    if start < 32 || start + 72 > b.len() {
        return Err(Error::Corrupt(format!(
            "LVM label in sector {sector}: pv_header offset {start} is invalid"
        )));
    }
    let uuid_bytes = &b[start..start + 32];
    if !uuid_bytes.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Error::Corrupt(format!(
            "LVM label in sector {sector}: PV UUID is not 32 alphanumeric characters"
        )));
    }
    let uuid = String::from_utf8_lossy(uuid_bytes).into_owned();
    let dev_size = le64(b, start + 32);
    let mut at = start + 40;
    let mut lists = [Vec::new(), Vec::new()];
    for list in lists.iter_mut() {
        loop {
            if at + 16 > b.len() {
                return Err(Error::Corrupt(format!(
                    "LVM label in sector {sector}: area list runs past the label sector"
                )));
            }
            let (offset, size) = (le64(b, at), le64(b, at + 8));
            at += 16;
            if offset == 0 {
                break;
            }
            if list.len() == MAX_AREAS {
                return Err(Error::Corrupt(format!(
                    "LVM label in sector {sector}: more than {MAX_AREAS} areas"
                )));
            }
            list.push(Area { offset, size });
        }
    }
    let [data_areas, metadata_areas] = lists;
    Ok(PvLabel {
        sector,
        uuid,
        dev_size,
        data_areas,
        metadata_areas,
    })
}

/// The committed metadata location of one metadata area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLocn {
    /// Offset of the text from the start of the metadata area.
    pub offset: u64,
    pub size: u64,
    pub checksum: u32,
    pub flags: u32,
}

/// The raw_locn flag of an area whose metadata is to be ignored (pvchange --metadataignore).
pub const RAW_LOCN_IGNORED: u32 = 1;
/// Size of the mda_header at the start of each metadata area; the text ring follows it.
pub const MDA_HEADER_SIZE: u64 = 512;

/// Reads and checks the mda_header of `area`; returns the first raw_locn (the committed
/// metadata), or None when the area holds no metadata yet.
pub fn mda_header(dev: &dyn BlockDev, area: Area) -> Result<Option<RawLocn>> {
    let mut b = [0u8; 512];
    if area.size < 2 * MDA_HEADER_SIZE
        || !matches!(area.offset.checked_add(area.size), Some(e) if e <= dev.size())
    {
        return Err(Error::Corrupt(format!(
            "LVM metadata area of {} bytes at offset {} does not fit the device",
            area.size, area.offset
        )));
    }
    dev.read_at(&mut b, area.offset)?;
    if le32(&b, 0) != lvm_crc_init(&b[4..]) {
        return Err(Error::Corrupt(format!(
            "LVM metadata area header at offset {}: checksum mismatch",
            area.offset
        )));
    }
    if &b[4..20] != MDA_MAGIC || le32(&b, 20) != 1 {
        return Err(Error::Corrupt(format!(
            "LVM metadata area header at offset {}: bad magic or version",
            area.offset
        )));
    }
    if le64(&b, 24) != area.offset {
        return Err(Error::Corrupt(format!(
            "LVM metadata area header at offset {} says it starts at {}",
            area.offset,
            le64(&b, 24)
        )));
    }
    let r = RawLocn {
        offset: le64(&b, 40),
        size: le64(&b, 48),
        checksum: le32(&b, 56),
        flags: le32(&b, 60),
    };
    if r.offset == 0 {
        return Ok(None);
    }
    Ok(Some(r))
}
