//! ISO 9660 with Joliet and Rock Ridge, read-only.
//!
//! Written by hand: the `cdfs` crate (0.2) reads Rock Ridge but not Joliet names, and the
//! `iso9660` crate (0.1) has neither Joliet nor CE continuation handling; neither exposes
//! record locations for stable inode numbers. The format is small: the descriptor set
//! ([`descriptor`]), directory records ([`record`]) and SUSP/Rock Ridge ([`rock`]).
//!
//! Which tree and names are shown follows the Linux isofs driver with default options: Rock
//! Ridge when the primary tree's root carries an SP entry, else Joliet when there is a
//! Joliet descriptor, else plain names mapped (`map=normal`: lower case, ";1" dropped).
//! Without Rock Ridge every file and directory is mode 0555, nlink 1, owned by root.
//! An inode number is the byte offset of the entry's directory record on the device; the
//! root's is that of its "." record.

pub mod descriptor;
pub mod record;
pub mod rock;

use crate::dev::{check_range, BlockDev, CachedDev};
use crate::error::{corrupt, Error, Result};
use crate::fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs};
use descriptor::Descriptors;
use record::{Record, FLAG_ASSOCIATED, FLAG_MULTI_EXTENT, SECTOR};
use rock::Rock;
use std::sync::Arc;

/// Longest directory read (bytes); real ones are far smaller.
const MAX_DIR_BYTES: u64 = 64 << 20;
/// Sections of one multi-extent file (each up to 4 GiB).
const MAX_EXTENTS: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Rock Ridge, with the SP entry's skip length.
    Rock(u8),
    Joliet,
    Plain,
}

pub struct IsoFs {
    dev: Arc<dyn BlockDev>,
    bs: u64,
    names: Names,
    root: Ino,
    volume_blocks: u64,
    info: FsInfo,
}

/// One entry, resolved: its record(s) and what Rock Ridge says about it.
struct Node {
    rec: Record,
    rock: Option<Rock>,
    kind: FileType,
    /// Data sections (device offset, length): one, or several for a multi-extent file.
    extents: Vec<(u64, u64)>,
}

impl IsoFs {
    pub fn open(dev: Arc<dyn BlockDev>) -> Result<IsoFs> {
        let dev: Arc<dyn BlockDev> = Arc::new(CachedDev::new(dev, 4 << 20));
        let d = Descriptors::read(&*dev)?;
        let bs = d.block_size()?;
        let root_of = |desc: &[u8; 2048]| -> Result<Ino> {
            let r = Record::parse(&desc[156..190])?;
            if !r.is_dir() {
                return corrupt("iso9660: root directory record is not a directory");
            }
            Ok(r.data_offset(bs))
        };
        let mut fs = IsoFs {
            dev,
            bs,
            names: Names::Plain,
            root: root_of(&d.primary)?,
            volume_blocks: d.volume_blocks(),
            info: FsInfo {
                kind: "iso9660".into(),
                label: d.label(),
                uuid: d.uuid(),
            },
        };
        // Rock Ridge is announced by an SP entry first in the root's "." record.
        let dot = fs.record_at(fs.root)?;
        let sp = (dot.su.len() >= 7 && &dot.su[..2] == b"SP")
            .then(|| rock::parse(&*fs.dev, bs, &dot.su[..7]).ok())
            .flatten()
            .and_then(|r| r.sp);
        if let Some(skip) = sp {
            fs.names = Names::Rock(skip);
        } else if let Some(j) = &d.joliet {
            fs.names = Names::Joliet;
            fs.root = root_of(j)?;
            fs.record_at(fs.root)?;
        }
        Ok(fs)
    }

    pub fn names(&self) -> Names {
        self.names
    }

    /// The record at device offset `off`, which must not cross its 2048-byte sector.
    fn record_at(&self, off: u64) -> Result<Record> {
        let sector_end = (off / SECTOR + 1) * SECTOR;
        let len = sector_end.min(self.dev.size()).saturating_sub(off);
        if len == 0 {
            return Err(Error::Invalid(format!("iso9660: no inode {off}")));
        }
        let mut b = vec![0u8; len as usize];
        self.dev.read_at(&mut b, off)?;
        Record::parse(&b)
    }

    fn rock(&self, rec: &Record) -> Result<Option<Rock>> {
        let Names::Rock(skip) = self.names else {
            return Ok(None);
        };
        let su = rec.su.get(skip as usize..).unwrap_or(&[]);
        Ok(Some(rock::parse(&*self.dev, self.bs, su)?))
    }

    fn kind(rec: &Record, rock: &Option<Rock>) -> FileType {
        if rec.is_dir() || rock.as_ref().is_some_and(|r| r.cl.is_some()) {
            return FileType::Directory;
        }
        match rock.as_ref().and_then(|r| r.px) {
            Some(px) => match FileType::from_mode(px.mode) {
                FileType::Directory | FileType::Unknown => FileType::Regular,
                k => k,
            },
            None => FileType::Regular,
        }
    }

    fn name(&self, rec: &Record, rock: &Option<Rock>) -> Vec<u8> {
        match (self.names, rock.as_ref().and_then(|r| r.name.clone())) {
            (Names::Rock(_), Some(n)) => n,
            (Names::Joliet, _) => record::joliet_name(&rec.name),
            _ => record::plain_name(&rec.name),
        }
    }

    /// Resolves the entry whose record is at `ino`: a relocated directory's placeholder
    /// (CL) is resolved to the directory's own "." record; a multi-extent file's following
    /// records are collected.
    fn node(&self, ino: Ino) -> Result<Node> {
        let mut rec = self.record_at(ino)?;
        let mut rock = self.rock(&rec)?;
        let kind = Self::kind(&rec, &rock);
        if let Some(cl) = rock.as_ref().and_then(|r| r.cl) {
            let at = cl as u64 * self.bs;
            rec = self.record_at(at)?;
            if !rec.is_dir() || !rec.is_dot() {
                return corrupt(format!(
                    "iso9660: Rock Ridge child link at {ino} does not lead to a directory"
                ));
            }
            rock = self.rock(&rec)?;
        }
        let mut extents = vec![(rec.data_offset(self.bs), rec.size as u64)];
        let mut cur = rec.clone();
        let mut at = ino;
        while cur.flags & FLAG_MULTI_EXTENT != 0 && !rec.is_dir() {
            if extents.len() >= MAX_EXTENTS {
                return corrupt(format!("iso9660: inode {ino} has too many extents"));
            }
            at += cur.len as u64;
            // Padding (a zero length byte, or no room for a record) moves to the next sector.
            let mut first = [0u8; 1];
            if at % SECTOR > SECTOR - 34 || {
                self.dev.read_at(&mut first, at)?;
                first[0] == 0
            } {
                at = (at / SECTOR + 1) * SECTOR;
            }
            cur = self.record_at(at)?;
            if cur.name != rec.name {
                return corrupt(format!(
                    "iso9660: multi-extent file at {ino} continues with another file's record"
                ));
            }
            extents.push((cur.data_offset(self.bs), cur.size as u64));
        }
        Ok(Node {
            rec,
            rock,
            kind,
            extents,
        })
    }

    fn size_of(n: &Node) -> u64 {
        if let Some(t) = n.rock.as_ref().and_then(|r| r.symlink.as_ref()) {
            if n.kind == FileType::Symlink {
                return t.len() as u64;
            }
        }
        n.extents.iter().map(|e| e.1).sum()
    }
}

impl Filesystem for IsoFs {
    fn info(&self) -> FsInfo {
        self.info.clone()
    }

    fn root(&self) -> Ino {
        self.root
    }

    fn stat(&self, ino: Ino) -> Result<Stat> {
        let n = self.node(ino)?;
        let date = record::date7(&n.rec.date);
        let px = n.rock.as_ref().and_then(|r| r.px);
        let r = n.rock.clone().unwrap_or_default();
        let size = Self::size_of(&n);
        Ok(Stat {
            ino,
            kind: n.kind,
            mode: n.kind.mode_bits() | px.map_or(0o555, |p| p.mode & 0o7777),
            nlink: px.map_or(1, |p| p.nlink as u64),
            uid: px.map_or(0, |p| p.uid),
            gid: px.map_or(0, |p| p.gid),
            size,
            blocks: size.div_ceil(512),
            blksize: self.bs.min(1024) as u32,
            rdev: match n.kind {
                FileType::CharDevice | FileType::BlockDevice => r.rdev.unwrap_or(0),
                _ => 0,
            },
            atime: r.atime.unwrap_or(date),
            mtime: r.mtime.unwrap_or(date),
            ctime: r.ctime.unwrap_or(date),
            crtime: None,
        })
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<DirEntry>> {
        let n = self.node(ino)?;
        if n.kind != FileType::Directory {
            return Err(Error::NotDir(format!("iso9660: inode {ino}")));
        }
        let (start, len) = n.extents[0];
        if len > MAX_DIR_BYTES {
            return corrupt(format!("iso9660: directory at {start} claims {len} bytes"));
        }
        check_range("iso9660 directory", self.dev.size(), start, len)?;
        let mut buf = vec![0u8; len as usize];
        self.dev.read_at(&mut buf, start)?;
        let mut out = Vec::new();
        let mut pos = 0usize;
        let mut prev_multi: Option<Vec<u8>> = None;
        while pos < buf.len() {
            if buf[pos] == 0 {
                pos = (pos / SECTOR as usize + 1) * SECTOR as usize;
                continue;
            }
            let sector_end = ((pos / SECTOR as usize + 1) * SECTOR as usize).min(buf.len());
            let rec = Record::parse(&buf[pos..sector_end])?;
            let at = start + pos as u64;
            pos += rec.len;
            // Later sections of a multi-extent file are part of the first one's entry.
            let continues = prev_multi.as_deref() == Some(&rec.name[..]);
            prev_multi = (rec.flags & FLAG_MULTI_EXTENT != 0).then(|| rec.name.clone());
            if continues || rec.is_dot() || rec.flags & FLAG_ASSOCIATED != 0 {
                continue;
            }
            let rock = self.rock(&rec)?;
            if rock.as_ref().is_some_and(|r| r.re) {
                continue;
            }
            let name = self.name(&rec, &rock);
            if !crate::fs::valid_name(&name) || name == b"." || name == b".." {
                return corrupt(format!(
                    "iso9660: invalid name {:?} in the directory at {start}",
                    String::from_utf8_lossy(&name)
                ));
            }
            out.push(DirEntry {
                name,
                ino: at,
                kind: Self::kind(&rec, &rock),
            });
        }
        Ok(out)
    }

    /// Exact match, then ASCII case-insensitive for Joliet (the kernel's default `check=r`
    /// there; strict otherwise).
    fn lookup(&self, dir: Ino, name: &[u8]) -> Result<Option<DirEntry>> {
        let all = self.read_dir(dir)?;
        if let Some(e) = all.iter().find(|e| e.name == name) {
            return Ok(Some(e.clone()));
        }
        if self.names != Names::Joliet {
            return Ok(None);
        }
        Ok(all.into_iter().find(|e| e.name.eq_ignore_ascii_case(name)))
    }

    fn read(&self, ino: Ino, off: u64, buf: &mut [u8]) -> Result<usize> {
        let n = self.node(ino)?;
        match n.kind {
            FileType::Directory => return Err(Error::IsDir(format!("iso9660: inode {ino}"))),
            FileType::Regular => {}
            _ => return Ok(0),
        }
        let mut done = 0usize;
        let mut ext_start = 0u64; // file offset of the current section
        for &(dev_off, len) in &n.extents {
            if done == buf.len() {
                break;
            }
            let pos = off + done as u64;
            if pos < ext_start + len {
                let within = pos - ext_start;
                let take = ((len - within) as usize).min(buf.len() - done);
                check_range("iso9660 file data", self.dev.size(), dev_off, len)?;
                self.dev
                    .read_at(&mut buf[done..done + take], dev_off + within)?;
                done += take;
            }
            ext_start += len;
        }
        Ok(done)
    }

    fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let n = self.node(ino)?;
        match (n.kind, n.rock.and_then(|r| r.symlink)) {
            (FileType::Symlink, Some(t)) => Ok(t),
            (FileType::Symlink, None) => corrupt(format!("iso9660: symlink {ino} without SL")),
            _ => Err(Error::Invalid(format!(
                "iso9660: inode {ino} is not a symbolic link"
            ))),
        }
    }

    fn statfs(&self) -> Result<StatFs> {
        // The kernel's default 1 KiB block (mount option block=1024) is what statfs shows.
        let bsize = self.bs.min(1024);
        Ok(StatFs {
            bsize,
            blocks: self.volume_blocks * (self.bs / bsize),
            bfree: 0,
            bavail: 0,
            files: 0,
            ffree: 0,
            namemax: 255,
        })
    }
}
