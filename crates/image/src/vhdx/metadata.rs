//! The metadata region (MS-VHDX 2.6): its table and the items virtkit knows, the parent
//! locator of differencing images included.

use super::bat::{MAX_BLOCK_SIZE, MAX_VIRTUAL_SIZE, MIN_BLOCK_SIZE};
use super::header::{le16, le32, le64, put16, put32, put64, Guid, BLOCK_64K, MIB};
use crate::error::{Error, Result};

pub const FILE_PARAMS_GUID: Guid = Guid::ms(
    0xcaa16737,
    0xfa36,
    0x4d43,
    [0xb3, 0xb6, 0x33, 0xf0, 0xaa, 0x44, 0xe7, 0x6b],
);
pub const VIRTUAL_SIZE_GUID: Guid = Guid::ms(
    0x2fa54224,
    0xcd1b,
    0x4876,
    [0xb2, 0x11, 0x5d, 0xbe, 0xd8, 0x3b, 0xf4, 0xb8],
);
pub const PAGE83_GUID: Guid = Guid::ms(
    0xbeca12ab,
    0xb2e6,
    0x4523,
    [0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46],
);
pub const LOGICAL_SECTOR_GUID: Guid = Guid::ms(
    0x8141bf1d,
    0xa96f,
    0x4709,
    [0xba, 0x47, 0xf2, 0x33, 0xa8, 0xfa, 0xab, 0x5f],
);
pub const PHYSICAL_SECTOR_GUID: Guid = Guid::ms(
    0xcda348c7,
    0x445d,
    0x4471,
    [0x9c, 0xc9, 0xe9, 0x88, 0x52, 0x51, 0xc5, 0x56],
);
pub const PARENT_LOCATOR_GUID: Guid = Guid::ms(
    0xa8d35f2d,
    0xb30b,
    0x454d,
    [0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c],
);
/// Locator type of a VHDX parent (the only one the specification defines).
pub const VHDX_PARENT_TYPE: Guid = Guid::ms(
    0xb04aefb7,
    0xd19e,
    0x4a81,
    [0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13],
);

const SIGNATURE: &[u8; 8] = b"metadata";
/// The table occupies the first 64 KiB of the region: a 32-byte header and 32-byte entries.
const TABLE_SIZE: usize = BLOCK_64K as usize;
pub const FLAG_IS_USER: u32 = 1;
pub const FLAG_IS_VIRTUAL_DISK: u32 = 2;
pub const FLAG_IS_REQUIRED: u32 = 4;
/// File parameters flags.
pub const LEAVE_BLOCKS_ALLOCATED: u32 = 1;
pub const HAS_PARENT: u32 = 2;
/// MS-VHDX: a metadata item is at most 1 MiB.
const MAX_ITEM: u32 = MIB as u32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLocator {
    pub locator_type: Guid,
    /// Key/value pairs in file order.
    pub entries: Vec<(String, String)>,
}

impl ParentLocator {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub block_size: u64,
    pub leave_allocated: bool,
    pub has_parent: bool,
    pub virtual_size: u64,
    pub logical_sector: u64,
    pub physical_sector: u64,
    pub page83: Guid,
    pub parent: Option<ParentLocator>,
}

type Reader<'a> = &'a dyn Fn(&mut [u8], u64) -> Result<()>;

fn bad(m: impl Into<String>) -> Error {
    Error::Corrupt(format!("VHDX metadata: {}", m.into()))
}

#[derive(Clone, Copy)]
struct Item {
    offset: u32,
    length: u32,
}

/// Parses the metadata region at `region` (`len` bytes) through `read`.
pub fn parse(read: Reader, region: u64, len: u32) -> Result<Metadata> {
    if (len as usize) < TABLE_SIZE {
        return Err(bad(format!("region of {len} bytes is too small")));
    }
    let mut t = vec![0u8; TABLE_SIZE];
    read(&mut t, region)?;
    if &t[..8] != SIGNATURE {
        return Err(bad("bad signature"));
    }
    let count = le16(&t, 10) as usize;
    if count * 32 > TABLE_SIZE - 32 {
        return Err(bad(format!("{count} table entries")));
    }
    let known = [
        FILE_PARAMS_GUID,
        VIRTUAL_SIZE_GUID,
        PAGE83_GUID,
        LOGICAL_SECTOR_GUID,
        PHYSICAL_SECTOR_GUID,
        PARENT_LOCATOR_GUID,
    ];
    let mut items: [Option<Item>; 6] = [None; 6];
    for i in 0..count {
        let e = &t[32 + 32 * i..64 + 32 * i];
        let id = Guid::from_slice(e);
        let item = Item {
            offset: le32(e, 16),
            length: le32(e, 20),
        };
        let flags = le32(e, 24);
        match known.iter().position(|g| *g == id) {
            Some(k) => {
                if items[k].is_some() {
                    return Err(bad(format!("item {} appears twice", id.to_text())));
                }
                items[k] = Some(item);
            }
            None if flags & FLAG_IS_REQUIRED != 0 => {
                return Err(Error::Unsupported(format!(
                    "VHDX metadata item {} is required but unknown",
                    id.to_text()
                )))
            }
            None => {}
        }
    }
    let names = [
        "file parameters",
        "virtual disk size",
        "page 83 data",
        "logical sector size",
        "physical sector size",
    ];
    // Reads an item, checking that it lies inside the region and is long enough.
    let get = |k: usize, need: u32| -> Result<Vec<u8>> {
        let it = items[k].ok_or_else(|| bad(format!("the {} item is missing", names[k])))?;
        if it.length < need || it.length > MAX_ITEM {
            return Err(bad(format!(
                "the {} item has length {}",
                names[k], it.length
            )));
        }
        check_item(it, len)?;
        let mut b = vec![0u8; need as usize];
        read(&mut b, region + it.offset as u64)?;
        Ok(b)
    };
    let fp = get(0, 8)?;
    let vs = get(1, 8)?;
    let p83 = get(2, 16)?;
    let ls = get(3, 4)?;
    let ps = get(4, 4)?;
    let block_size = le32(&fp, 0) as u64;
    let bits = le32(&fp, 4);
    let md = Metadata {
        block_size,
        leave_allocated: bits & LEAVE_BLOCKS_ALLOCATED != 0,
        has_parent: bits & HAS_PARENT != 0,
        virtual_size: le64(&vs, 0),
        logical_sector: le32(&ls, 0) as u64,
        physical_sector: le32(&ps, 0) as u64,
        page83: Guid::from_slice(&p83),
        parent: None,
    };
    if !block_size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) {
        return Err(bad(format!("invalid block size {block_size}")));
    }
    if md.logical_sector != 512 && md.logical_sector != 4096 {
        return Err(Error::Unsupported(format!(
            "VHDX logical sector size {} is not supported",
            md.logical_sector
        )));
    }
    if md.virtual_size > MAX_VIRTUAL_SIZE {
        return Err(bad(format!(
            "virtual disk size {} exceeds 64 TiB",
            md.virtual_size
        )));
    }
    let parent = match (md.has_parent, items[5]) {
        (false, _) => None,
        (true, None) => return Err(bad("differencing image without a parent locator")),
        (true, Some(it)) => {
            if it.length > MAX_ITEM || it.length < 20 {
                return Err(bad(format!(
                    "the parent locator item has length {}",
                    it.length
                )));
            }
            check_item(it, len)?;
            let mut b = vec![0u8; it.length as usize];
            read(&mut b, region + it.offset as u64)?;
            Some(parse_locator(&b)?)
        }
    };
    Ok(Metadata { parent, ..md })
}

/// Items live after the table and inside the region.
fn check_item(it: Item, region_len: u32) -> Result<()> {
    if (it.offset as u64) < BLOCK_64K || it.offset as u64 + it.length as u64 > region_len as u64 {
        return Err(bad(format!(
            "item at offset {} of length {} lies outside the metadata region",
            it.offset, it.length
        )));
    }
    Ok(())
}

/// The parent locator item (MS-VHDX 2.6.2.6): a 20-byte header, 12-byte entries, UTF-16LE
/// keys and values at offsets relative to the item.
pub fn parse_locator(b: &[u8]) -> Result<ParentLocator> {
    let locator_type = Guid::from_slice(b);
    let n = le16(b, 18) as usize;
    if 20 + n * 12 > b.len() {
        return Err(bad(format!("parent locator with {n} entries does not fit")));
    }
    let text = |off: u32, len: u16| -> Result<String> {
        let (o, l) = (off as usize, len as usize);
        if l == 0 || l % 2 != 0 || o + l > b.len() {
            return Err(bad("parent locator entry out of range"));
        }
        let u: Vec<u16> = b[o..o + l]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(String::from_utf16_lossy(&u))
    };
    let mut entries = Vec::with_capacity(n);
    for i in 0..n {
        let e = &b[20 + 12 * i..32 + 12 * i];
        let k = text(le32(e, 0), le16(e, 8))?;
        let v = text(le32(e, 4), le16(e, 10))?;
        entries.push((k, v));
    }
    Ok(ParentLocator {
        locator_type,
        entries,
    })
}

/// The parent locator item for `entries` (what a differencing image stores).
pub fn locator_item(locator_type: Guid, entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = vec![0u8; 20 + 12 * entries.len()];
    b[..16].copy_from_slice(&locator_type.0);
    put16(&mut b, 18, entries.len() as u16);
    let add = |b: &mut Vec<u8>, s: &str| -> (u32, u16) {
        let off = b.len() as u32;
        for u in s.encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        (off, (b.len() as u32 - off) as u16)
    };
    for (i, (k, v)) in entries.iter().enumerate() {
        let (ko, kl) = add(&mut b, k);
        let (vo, vl) = add(&mut b, v);
        let at = 20 + 12 * i;
        put32(&mut b, at, ko);
        put32(&mut b, at + 4, vo);
        put16(&mut b, at + 8, kl);
        put16(&mut b, at + 10, vl);
    }
    b
}

/// The metadata table block and the items that follow it at 64 KiB, as QEMU writes them for
/// a new image: file parameters, virtual size, page 83, logical and physical sector size.
pub fn create_blocks(
    block_size: u32,
    fixed: bool,
    virtual_size: u64,
    sector_size: u32,
) -> (Vec<u8>, Vec<u8>) {
    let mut items = vec![0u8; 40];
    put32(&mut items, 0, block_size);
    put32(
        &mut items,
        4,
        if fixed { LEAVE_BLOCKS_ALLOCATED } else { 0 },
    );
    put64(&mut items, 8, virtual_size);
    items[16..32].copy_from_slice(&Guid::random().0);
    put32(&mut items, 32, sector_size);
    put32(&mut items, 36, sector_size);
    let mut t = vec![0u8; TABLE_SIZE];
    t[..8].copy_from_slice(SIGNATURE);
    let list: [(Guid, u32, u32); 5] = [
        (FILE_PARAMS_GUID, 8, FLAG_IS_REQUIRED),
        (
            VIRTUAL_SIZE_GUID,
            8,
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
        (PAGE83_GUID, 16, FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK),
        (
            LOGICAL_SECTOR_GUID,
            4,
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
        (
            PHYSICAL_SECTOR_GUID,
            4,
            FLAG_IS_REQUIRED | FLAG_IS_VIRTUAL_DISK,
        ),
    ];
    put16(&mut t, 10, list.len() as u16);
    let mut off = BLOCK_64K as u32;
    for (i, (g, len, flags)) in list.iter().enumerate() {
        let e = &mut t[32 + 32 * i..64 + 32 * i];
        e[..16].copy_from_slice(&g.0);
        put32(e, 16, off);
        put32(e, 20, *len);
        put32(e, 24, *flags);
        off += len;
    }
    (t, items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_round_trip() {
        let b = locator_item(
            VHDX_PARENT_TYPE,
            &[
                ("parent_linkage", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"),
                ("relative_path", ".\\base.vhdx"),
            ],
        );
        let l = parse_locator(&b).unwrap();
        assert_eq!(l.locator_type, VHDX_PARENT_TYPE);
        assert_eq!(l.get("relative_path"), Some(".\\base.vhdx"));
        assert!(parse_locator(&b[..30]).is_err());
    }

    #[test]
    fn created_metadata_parses() {
        let (t, items) = create_blocks(8 << 20, true, 100 << 20, 512);
        let mut region = vec![0u8; MIB as usize];
        region[..t.len()].copy_from_slice(&t);
        region[65536..65536 + items.len()].copy_from_slice(&items);
        let read = |buf: &mut [u8], off: u64| -> Result<()> {
            buf.copy_from_slice(&region[off as usize..off as usize + buf.len()]);
            Ok(())
        };
        let m = parse(&read, 0, MIB as u32).unwrap();
        assert_eq!(m.block_size, 8 << 20);
        assert!(m.leave_allocated && !m.has_parent);
        assert_eq!(m.virtual_size, 100 << 20);
        assert_eq!((m.logical_sector, m.physical_sector), (512, 512));
    }
}
