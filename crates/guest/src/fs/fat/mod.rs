//! vfat: FAT12, FAT16 and FAT32 with VFAT long names, read-only.
//!
//! Written by hand rather than on the `fatfs` crate (0.3): its cluster iterator follows
//! chains without a length bound or loop check (a looping FAT hangs it), it needs a
//! Read+Write+Seek stream, and it does not expose what the trait needs (the location of an
//! entry for a stable inode number, the NT lower-case bits as Linux applies them). FAT is
//! small: the boot sector ([`bpb`]), the table ([`table`]) and directory entries ([`dir`]).
//!
//! What is shown follows what the Linux vfat driver shows with default mount options (as
//! libguestfs mounts it): mode 0755 for files and directories (umask 022), write bits off
//! for read-only files, uid/gid 0, times in UTC, directory sizes as allocated, nlink of a
//! directory = its subdirectories + 2, the root's inode number 1 and its times zero.
//! Other inode numbers are the byte offset of the entry's short (8.3) slot divided by 32.

pub mod bpb;
pub mod dir;
pub mod table;

use crate::dev::{BlockDev, CachedDev};
use crate::error::{corrupt, Error, Result};
use crate::fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs, Timespec};
use bpb::Geometry;
use dir::{Named, Short};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use table::Chain;

/// The kernel's FAT_MAX_DIR_SIZE: 65536 entries of 32 bytes.
const MAX_DIR_BYTES: u64 = 1 << 21;
const ROOT_INO: Ino = 1;
/// Chains kept for repeated reads of the same files.
const CHAIN_CACHE: usize = 16;

pub struct FatFs {
    dev: Arc<dyn BlockDev>,
    g: Geometry,
    label: Option<String>,
    chains: Mutex<VecDeque<ChainEntry>>,
}

/// A cached chain: (first cluster, clusters wanted) and the walk.
type ChainEntry = ((u32, u64), Arc<Chain>);

/// What an inode number stands for.
enum Node {
    Root,
    Entry { short: Short },
}

/// Where a directory's entries are.
enum DirSrc {
    Fixed(u64, u64),
    Chain(u32),
}

impl FatFs {
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<FatFs> {
        let dev: Arc<dyn BlockDev> = Arc::new(CachedDev::new(dev, 4 << 20));
        let mut b = [0u8; 512];
        if dev.size() < 512 {
            return corrupt("vfat: device smaller than a boot sector");
        }
        dev.read_at(&mut b, 0)?;
        let g = Geometry::parse(&b, dev.size())?;
        let mut fs = FatFs {
            dev,
            g,
            label: None,
            chains: Mutex::new(VecDeque::new()),
        };
        fs.label = fs.find_label();
        Ok(fs)
    }

    pub fn geometry(&self) -> &Geometry {
        &self.g
    }

    /// As blkid: the root directory's volume-label entry, else the boot sector's label
    /// unless it is "NO NAME". Trailing spaces trimmed.
    fn find_label(&self) -> Option<String> {
        let from_root = self.dir_slots(&self.root_src()).ok().and_then(|slots| {
            slots
                .iter()
                .take_while(|(_, b)| b[0] != 0)
                .find(|(_, b)| b[0] != 0xE5 && b[11] & 0x3F != 0x0F && b[11] & 0x18 == 0x08)
                .map(|(_, b)| {
                    let mut l = [0u8; 11];
                    l.copy_from_slice(&b[..11]);
                    if l[0] == 0x05 {
                        l[0] = 0xE5;
                    }
                    l
                })
        });
        let raw = from_root.or(self.g.label.filter(|l| l != b"NO NAME    "))?;
        let s = String::from_utf8_lossy(&raw)
            .trim_end_matches(' ')
            .to_string();
        (!s.is_empty()).then_some(s)
    }

    fn root_src(&self) -> DirSrc {
        match self.g.root_region {
            Some((off, len)) => DirSrc::Fixed(off, len),
            None => DirSrc::Chain(self.g.root_cluster),
        }
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        if ino == ROOT_INO {
            return Ok(Node::Root);
        }
        let first_slot = self.g.root_region.map_or(self.g.data_offset, |r| r.0);
        let off = match ino.checked_mul(32) {
            Some(o) if o >= first_slot && o + 32 <= self.dev.size() => o,
            _ => return Err(Error::Invalid(format!("vfat: no inode {ino}"))),
        };
        let mut b = [0u8; 32];
        self.dev.read_at(&mut b, off)?;
        let short = Short::parse(&b, self.g.kind);
        if b[0] == 0 || b[0] == 0xE5 || short.attr & ATTR_VOLUME != 0 || short.is_dot() {
            return Err(Error::NotFound(format!("vfat: inode {ino}")));
        }
        Ok(Node::Entry { short })
    }

    fn dir_src(&self, ino: Ino, node: &Node) -> Result<DirSrc> {
        match node {
            Node::Root => Ok(self.root_src()),
            Node::Entry { short, .. } if short.is_dir() => {
                if !self.g.valid_cluster(short.first_cluster) {
                    return corrupt(format!(
                        "vfat: directory (inode {ino}) starts at invalid cluster {}",
                        short.first_cluster
                    ));
                }
                Ok(DirSrc::Chain(short.first_cluster))
            }
            Node::Entry { .. } => Err(Error::NotDir(format!("vfat: inode {ino}"))),
        }
    }

    /// Every 32-byte slot of a directory with its device offset (bounded by 2 MiB).
    fn dir_slots(&self, src: &DirSrc) -> Result<Vec<(u64, [u8; 32])>> {
        let regions: Vec<(u64, u64)> = match *src {
            DirSrc::Fixed(off, len) => vec![(off, len.min(MAX_DIR_BYTES))],
            DirSrc::Chain(first) => {
                let cs = self.g.cluster_size as u64;
                let cap = MAX_DIR_BYTES / cs + 1;
                let ch = table::walk(&*self.dev, &self.g, first, cap)?;
                if ch.clusters * cs > MAX_DIR_BYTES.max(cs) {
                    return corrupt(format!(
                        "vfat: directory at cluster {first} is larger than {MAX_DIR_BYTES} bytes"
                    ));
                }
                ch.runs
                    .iter()
                    .map(|&(c, n)| (self.g.cluster_offset(c), n as u64 * cs))
                    .collect()
            }
        };
        let mut out = Vec::new();
        for (off, len) in regions {
            let mut buf = vec![0u8; len as usize];
            self.dev.read_at(&mut buf, off)?;
            for (i, s) in buf.chunks_exact(32).enumerate() {
                let mut b = [0u8; 32];
                b.copy_from_slice(s);
                out.push((off + i as u64 * 32, b));
            }
        }
        Ok(out)
    }

    fn entries(&self, ino: Ino) -> Result<Vec<Named>> {
        let node = self.node(ino)?;
        let src = self.dir_src(ino, &node)?;
        let slots = self.dir_slots(&src)?;
        dir::parse(slots.iter().map(|(o, b)| (*o, b)), self.g.kind)
    }

    /// Allocated size of a directory, and its link count as the kernel computes it
    /// (short entries with the directory bit, "." and ".." included; +2 for the root).
    fn dir_size_links(&self, src: &DirSrc, root: bool) -> Result<(u64, u64)> {
        let slots = self.dir_slots(src)?;
        let subdirs = slots
            .iter()
            .filter(|(_, b)| b[0] != 0 && b[0] != 0xE5 && b[11] & ATTR_VOLUME == 0)
            .filter(|(_, b)| b[11] & dir::ATTR_DIR != 0)
            .count() as u64;
        let size = match src {
            DirSrc::Fixed(_, len) => *len,
            DirSrc::Chain(_) => slots.len() as u64 * 32,
        };
        Ok((size, if root { subdirs + 2 } else { subdirs }))
    }

    fn chain(&self, first: u32, need: u64) -> Result<Arc<Chain>> {
        let key = (first, need);
        let mut cache = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        drop(cache);
        let ch = Arc::new(table::walk(&*self.dev, &self.g, first, need)?);
        cache = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CHAIN_CACHE {
            cache.pop_front();
        }
        cache.push_back((key, ch.clone()));
        Ok(ch)
    }
}

/// Volume labels, and long-name slots (whose attribute 0x0F includes it).
const ATTR_VOLUME: u8 = dir::ATTR_VOLUME;

fn kind_of(short: &Short) -> FileType {
    if short.is_dir() {
        FileType::Directory
    } else {
        FileType::Regular
    }
}

impl Filesystem for FatFs {
    fn info(&self) -> FsInfo {
        FsInfo {
            kind: "vfat".into(),
            label: self.label.clone(),
            uuid: Some(format!(
                "{:04X}-{:04X}",
                self.g.serial >> 16,
                self.g.serial & 0xFFFF
            )),
        }
    }

    fn root(&self) -> Ino {
        ROOT_INO
    }

    fn stat(&self, ino: Ino) -> Result<Stat> {
        let node = self.node(ino)?;
        let cs = self.g.cluster_size as u64;
        let mut st = Stat {
            ino,
            kind: FileType::Directory,
            mode: 0o040755,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 0,
            blocks: 0,
            blksize: self.g.cluster_size,
            rdev: 0,
            atime: Timespec::default(),
            mtime: Timespec::default(),
            ctime: Timespec::default(),
            crtime: Some(Timespec::default()),
        };
        match &node {
            Node::Root => {
                let (size, links) = self.dir_size_links(&self.root_src(), true)?;
                st.size = size;
                st.nlink = links;
            }
            Node::Entry { short, .. } => {
                st.kind = kind_of(short);
                if short.is_dir() {
                    let (size, links) = self.dir_size_links(&self.dir_src(ino, &node)?, false)?;
                    st.size = size;
                    st.nlink = links;
                } else {
                    st.mode = if short.attr & dir::ATTR_RO != 0 {
                        0o100555
                    } else {
                        0o100755
                    };
                    st.size = short.size as u64;
                }
                st.mtime = dir::to_unix(short.wtime, short.wdate, 0);
                st.ctime = st.mtime;
                st.atime = dir::to_unix(0, short.adate, 0);
                st.crtime = Some(dir::to_unix(short.ctime, short.cdate, short.ctime_cs));
            }
        }
        st.blocks = st.size.div_ceil(cs) * cs / 512;
        Ok(st)
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        Ok(self
            .entries(ino)?
            .into_iter()
            .map(|n| DirEntry {
                name: n.name,
                ino: n.off / 32,
                kind: kind_of(&n.short),
            })
            .collect())
    }

    /// Exact match first, then ASCII case-insensitive as the vfat driver matches names.
    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        let all = self.read_dir(dir)?;
        if let Some(e) = all.iter().find(|e| e.name == name) {
            return Ok(Some(e.clone()));
        }
        Ok(all.into_iter().find(|e| e.name.eq_ignore_ascii_case(name)))
    }

    fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let short = match self.node(ino)? {
            Node::Root => return Err(Error::IsDir(format!("vfat: inode {ino}"))),
            Node::Entry { short, .. } if short.is_dir() => {
                return Err(Error::IsDir(format!("vfat: inode {ino}")))
            }
            Node::Entry { short, .. } => short,
        };
        let size = short.size as u64;
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let want = (size - off).min(buf.len() as u64);
        let cs = self.g.cluster_size as u64;
        let need = size.div_ceil(cs);
        if need > self.g.clusters as u64 {
            return corrupt(format!(
                "vfat: inode {ino}: size {size} is larger than the filesystem"
            ));
        }
        let ch = self.chain(short.first_cluster, need)?;
        if ch.clusters < need {
            return corrupt(format!(
                "vfat: inode {ino}: cluster chain of {} clusters is too short for {size} bytes",
                ch.clusters
            ));
        }
        let mut done = 0u64;
        let mut run_start = 0u64; // file offset of the current run
        for &(c, n) in &ch.runs {
            let run_len = n as u64 * cs;
            let pos = off + done;
            if done >= want {
                break;
            }
            if pos < run_start + run_len {
                let in_run = pos - run_start;
                let len = (run_len - in_run).min(want - done);
                let dst = &mut buf[done as usize..(done + len) as usize];
                self.dev.read_at(dst, self.g.cluster_offset(c) + in_run)?;
                done += len;
            }
            run_start += run_len;
        }
        Ok(done as usize)
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        Err(Error::Invalid(format!(
            "vfat: inode {ino} is not a symbolic link"
        )))
    }

    fn statfs(&self) -> Result<StatFs> {
        let free = table::count_free(&*self.dev, &self.g)?;
        Ok(StatFs {
            bsize: self.g.cluster_size as u64,
            blocks: self.g.clusters as u64,
            bfree: free,
            bavail: free,
            files: 0,
            ffree: 0,
            // FAT_LFN_LEN * NLS_MAX_CHARSET_SIZE, as the kernel reports it.
            namemax: 255 * 6,
        })
    }
}
