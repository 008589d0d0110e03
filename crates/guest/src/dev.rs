//! Byte devices the filesystems read from: a disk image (any format and backing chain that
//! virtkit-image opens), a slice of another device (a partition), a logical volume.
//!
//! Every read is range-checked against the device: a filesystem field that points past the
//! end of its partition is an error, never a read of the neighbouring partition.

use crate::error::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use virtkit_image::{BlockDriver, Format, OpenOptions};

/// A read-only random-access byte device.
pub trait BlockDev: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `off`. Reads that do not lie wholly inside the device fail.
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()>;
}

/// Checks that `len` bytes at `off` lie inside a device of `size` bytes.
pub fn check_range(what: &str, size: u64, off: u64, len: u64) -> Result<()> {
    match off.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::Corrupt(format!(
            "{what}: read of {len} bytes at offset {off} is outside the device ({size} bytes)"
        ))),
    }
}

impl<T: BlockDev + ?Sized> BlockDev for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        (**self).read_at(buf, off)
    }
}

/// A disk image opened read-only through the block layer.
pub struct ImageDev {
    img: Box<dyn BlockDriver>,
    name: String,
}

impl ImageDev {
    /// Opens `path` read-only; `format` None probes it (as `--format` unset does in
    /// libguestfs; raw is what an unknown file is).
    pub fn open(path: &Path, format: Option<Format>) -> Result<ImageDev> {
        let img = virtkit_image::open(
            path,
            &OpenOptions {
                format,
                writable: false,
                no_backing: false,
                for_check: false,
            },
        )?;
        Ok(ImageDev {
            img,
            name: path.display().to_string(),
        })
    }

    pub fn from_driver(img: Box<dyn BlockDriver>, name: String) -> ImageDev {
        ImageDev { img, name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl BlockDev for ImageDev {
    fn size(&self) -> u64 {
        self.img.virtual_size()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range(&self.name, self.size(), off, buf.len() as u64)?;
        Ok(self.img.read_at(buf, off)?)
    }
}

/// `len` bytes of another device starting at `start`: a partition, an LVM segment.
pub struct Slice {
    dev: Arc<dyn BlockDev>,
    start: u64,
    len: u64,
}

impl Slice {
    /// Fails when the slice does not lie inside `dev` (a partition table that lies).
    pub fn new(dev: Arc<dyn BlockDev>, start: u64, len: u64) -> Result<Slice> {
        match start.checked_add(len) {
            Some(end) if end <= dev.size() => Ok(Slice { dev, start, len }),
            _ => Err(Error::Corrupt(format!(
                "region of {len} bytes at offset {start} extends past the end of the device ({} bytes)",
                dev.size()
            ))),
        }
    }
    pub fn start(&self) -> u64 {
        self.start
    }
}

impl BlockDev for Slice {
    fn size(&self) -> u64 {
        self.len
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range("partition", self.len, off, buf.len() as u64)?;
        self.dev.read_at(buf, self.start + off)
    }
}

/// A bounded cache of 4 KiB pages in front of a device, for filesystem metadata that is read
/// again and again (superblocks, group descriptors, inode tables, directory blocks). Large
/// reads (file data) go around it.
pub struct CachedDev {
    dev: Arc<dyn BlockDev>,
    pages: Mutex<PageCache>,
}

const PAGE: u64 = 4096;
/// Reads at least this long bypass the cache.
const BYPASS: usize = 64 << 10;

struct PageCache {
    map: HashMap<u64, Arc<[u8]>>,
    order: VecDeque<u64>,
    max: usize,
}

impl CachedDev {
    /// `max_bytes` bounds the memory the cache holds (rounded to pages, at least one).
    pub fn new(dev: Arc<dyn BlockDev>, max_bytes: usize) -> CachedDev {
        CachedDev {
            dev,
            pages: Mutex::new(PageCache {
                map: HashMap::new(),
                order: VecDeque::new(),
                max: (max_bytes / PAGE as usize).max(1),
            }),
        }
    }

    fn page(&self, idx: u64) -> Result<Arc<[u8]>> {
        if let Some(p) = self.lock().map.get(&idx) {
            return Ok(p.clone());
        }
        let start = idx * PAGE;
        let len = PAGE.min(self.dev.size() - start) as usize;
        let mut v = vec![0u8; len];
        self.dev.read_at(&mut v, start)?;
        let p: Arc<[u8]> = v.into();
        let mut c = self.lock();
        if c.map.len() >= c.max {
            if let Some(old) = c.order.pop_front() {
                c.map.remove(&old);
            }
        }
        if c.map.insert(idx, p.clone()).is_none() {
            c.order.push_back(idx);
        }
        Ok(p)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PageCache> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BlockDev for CachedDev {
    fn size(&self) -> u64 {
        self.dev.size()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range("device", self.size(), off, buf.len() as u64)?;
        if buf.len() >= BYPASS {
            return self.dev.read_at(buf, off);
        }
        let mut pos = 0usize;
        while pos < buf.len() {
            let o = off + pos as u64;
            let p = self.page(o / PAGE)?;
            let in_page = (o % PAGE) as usize;
            let n = (p.len() - in_page).min(buf.len() - pos);
            buf[pos..pos + n].copy_from_slice(&p[in_page..in_page + n]);
            pos += n;
        }
        Ok(())
    }
}

/// A device held in memory (tests, fuzz targets: the bytes are the whole device).
pub struct MemDev(pub Vec<u8>);

impl BlockDev for MemDev {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        check_range("memory device", self.size(), off, buf.len() as u64)?;
        let o = off as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_cache_stay_in_range() {
        let data: Vec<u8> = (0..20000u32).map(|i| i as u8).collect();
        let mem: Arc<dyn BlockDev> = Arc::new(MemDev(data.clone()));
        assert!(Slice::new(mem.clone(), 10000, 10001).is_err());
        assert!(Slice::new(mem.clone(), u64::MAX, 2).is_err());
        let s: Arc<dyn BlockDev> = Arc::new(Slice::new(mem.clone(), 5000, 10000).unwrap());
        let c = CachedDev::new(s, 8192);
        let mut b = vec![0u8; 5000];
        c.read_at(&mut b, 4000).unwrap();
        assert_eq!(b, data[9000..14000]);
        c.read_at(&mut b, 4000).unwrap();
        assert_eq!(b, data[9000..14000]);
        assert!(c.read_at(&mut b, 5001).is_err());
        assert!(c.read_at(&mut b, u64::MAX - 10).is_err());
    }
}
