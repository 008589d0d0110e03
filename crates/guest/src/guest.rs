//! A guest's disks with their partitions, LVM volumes and filesystems, named as libguestfs
//! names them inside its appliance: disks /dev/sda, /dev/sdb, ... /dev/sdz, /dev/sdaa, ...;
//! partitions /dev/sda1 (kernel numbering); logical volumes /dev/VG/LV. /dev/hdX, /dev/vdX
//! and /dev/xvdX are accepted for /dev/sdX, and /dev/mapper/VG-LV for /dev/VG/LV, as
//! libguestfs canonicalises them.

use crate::dev::{BlockDev, CachedDev, ImageDev, Slice};
use crate::error::{Error, Result};
use crate::fs::{Filesystem, FsInfo};
use crate::lvm::{self, LvInfo, Lvm, PvInfo, VgInfo};
use crate::part::{self, PartTable, Partition, TableKind};
use crate::probe;
use std::path::PathBuf;
use std::sync::Arc;

/// Page cache per disk, for partition tables, LVM metadata and filesystem metadata.
const DISK_CACHE: usize = 4 << 20;

/// A partition with its name, as `part-list` and `virt-filesystems --partitions --long`
/// report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// "/dev/sda1".
    pub name: String,
    /// The disk: "/dev/sda".
    pub device: String,
    pub table: TableKind,
    pub part: Partition,
    /// Why the partition cannot be read (it extends past the end of the disk).
    pub error: Option<String>,
}

struct Disk {
    name: String,
    dev: Arc<dyn BlockDev>,
    table: Option<PartTable>,
}

struct Part {
    info: PartInfo,
    dev: Option<Arc<dyn BlockDev>>,
}

pub struct Guest {
    disks: Vec<Disk>,
    parts: Vec<Part>,
    lvm: Lvm,
    warnings: Vec<String>,
}

/// "/dev/sd" + the bijective base-26 letters of `index` (0 = a, 25 = z, 26 = aa).
pub fn disk_name(index: usize) -> String {
    let mut n = index + 1;
    let mut letters = Vec::new();
    while n > 0 {
        n -= 1;
        letters.push(b'a' + (n % 26) as u8);
        n /= 26;
    }
    letters.reverse();
    format!("/dev/sd{}", String::from_utf8_lossy(&letters))
}

/// The disk index of letters "a".."z", "aa", ...; None when not letters or absurdly long.
fn disk_index(letters: &str) -> Option<usize> {
    if letters.is_empty() || letters.len() > 4 || !letters.bytes().all(|c| c.is_ascii_lowercase()) {
        return None;
    }
    let mut n = 0usize;
    for c in letters.bytes() {
        n = n * 26 + (c - b'a') as usize + 1;
    }
    Some(n - 1)
}

/// Splits a device-mapper name "VG-LV" (dashes inside names doubled) into VG and LV.
fn split_dm_name(s: &str) -> Option<(String, String)> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut vg = String::new();
    while i < b.len() {
        if b[i] == b'-' {
            if b.get(i + 1) == Some(&b'-') {
                vg.push('-');
                i += 2;
                continue;
            }
            let lv = s[i + 1..].replace("--", "-");
            return (!vg.is_empty() && !lv.is_empty()).then_some((vg, lv));
        }
        vg.push(b[i] as char);
        i += 1;
    }
    None
}

fn not_found(name: &str) -> Error {
    Error::NotFound(name.to_string())
}

impl Guest {
    /// Opens the disk images read-only, in order (/dev/sda first). A `None` format is probed.
    pub fn open(images: &[(PathBuf, Option<virtkit_image::Format>)]) -> Result<Guest> {
        let mut disks: Vec<Arc<dyn BlockDev>> = Vec::new();
        for (path, fmt) in images {
            let img: Arc<dyn BlockDev> = Arc::new(ImageDev::open(path, *fmt)?);
            disks.push(Arc::new(CachedDev::new(img, DISK_CACHE)));
        }
        Guest::from_devs(disks)
    }

    /// A guest made of these devices (tests, fuzzing). Partition tables and LVM metadata are
    /// read now; what is corrupt is left out and reported by [`Guest::warnings`].
    pub fn from_devs(disks: Vec<Arc<dyn BlockDev>>) -> Result<Guest> {
        let mut g = Guest {
            disks: Vec::new(),
            parts: Vec::new(),
            lvm: Lvm::default(),
            warnings: Vec::new(),
        };
        for (i, dev) in disks.into_iter().enumerate() {
            let name = disk_name(i);
            let table = match part::read(&*dev) {
                Ok(t) => t,
                Err(e) => {
                    g.warnings.push(format!("{name}: {e}"));
                    None
                }
            };
            if let Some(t) = &table {
                for w in &t.warnings {
                    g.warnings.push(format!("{name}: {w}"));
                }
                for p in &t.partitions {
                    let pname = format!("{name}{}", p.number);
                    let (start, len) = p.device_extent();
                    let (pdev, error) = match Slice::new(dev.clone(), start, len) {
                        Ok(s) => (Some(Arc::new(s) as Arc<dyn BlockDev>), None),
                        Err(e) => (None, Some(format!("{pname}: {e}"))),
                    };
                    g.parts.push(Part {
                        info: PartInfo {
                            name: pname,
                            device: name.clone(),
                            table: t.kind,
                            part: p.clone(),
                            error,
                        },
                        dev: pdev,
                    });
                }
            }
            g.disks.push(Disk { name, dev, table });
        }
        // PVs may be whole disks without partitions, or partitions.
        let mut candidates: Vec<(String, Arc<dyn BlockDev>)> = Vec::new();
        for d in &g.disks {
            if !g.has_partitions(&d.name) {
                candidates.push((d.name.clone(), d.dev.clone()));
            }
        }
        for p in &g.parts {
            if let (Some(dev), false) = (&p.dev, p.info.part.extended) {
                candidates.push((p.info.name.clone(), dev.clone()));
            }
        }
        g.lvm = lvm::scan(&candidates);
        g.warnings.extend(g.lvm.warnings.iter().cloned());
        Ok(g)
    }

    fn has_partitions(&self, disk: &str) -> bool {
        self.parts.iter().any(|p| p.info.device == disk)
    }

    /// The disks: /dev/sda, /dev/sdb, ...
    pub fn devices(&self) -> Vec<String> {
        self.disks.iter().map(|d| d.name.clone()).collect()
    }

    /// Every partition of every disk (extended ones included, as `list-partitions` does).
    pub fn partitions(&self) -> Vec<PartInfo> {
        self.parts.iter().map(|p| p.info.clone()).collect()
    }

    /// The partition table of a disk ("/dev/sda" or an alias), None when it has none.
    pub fn part_table(&self, disk: &str) -> Result<Option<&PartTable>> {
        let c = self.canonical_name(disk)?;
        self.disks
            .iter()
            .find(|d| d.name == c)
            .map(|d| d.table.as_ref())
            .ok_or_else(|| Error::Invalid(format!("{disk}: not a whole disk")))
    }

    pub fn vgs(&self) -> Vec<VgInfo> {
        self.lvm.vgs()
    }
    pub fn pvs(&self) -> Vec<PvInfo> {
        self.lvm.pvs()
    }
    /// Public LVs (not pools or hidden sub-volumes), with `error` set on those that cannot
    /// be read (thin, RAID, ... or a missing PV).
    pub fn lvs(&self) -> Vec<LvInfo> {
        self.lvm.lvs()
    }

    /// Problems found while reading tables and LVM metadata, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Like guestfish's list-filesystems: every disk without partitions, every partition
    /// that can hold one, every public LV, with what [`probe::probe`] finds ("unknown"
    /// included, also for LVs that cannot be read). PVs, LUKS containers, extended and LDM
    /// partitions are left out, as libguestfs does.
    pub fn filesystems(&self) -> Vec<(String, FsInfo)> {
        let unknown = || FsInfo {
            kind: "unknown".to_string(),
            ..FsInfo::default()
        };
        let mut out = Vec::new();
        let mut push = |name: &str, dev: Option<&Arc<dyn BlockDev>>| {
            let info = dev
                .and_then(|d| probe::probe(&**d).ok())
                .unwrap_or_else(unknown);
            if info.kind.ends_with("_member") || info.kind == "crypto_LUKS" {
                return;
            }
            out.push((name.to_string(), info));
        };
        for d in &self.disks {
            if !self.has_partitions(&d.name) {
                push(&d.name, Some(&d.dev));
            }
        }
        for p in &self.parts {
            if p.info.part.can_hold_filesystem() {
                push(&p.info.name, p.dev.as_ref());
            }
        }
        for lv in self.lvm.lvs() {
            let dev = self
                .lvm
                .lv_device(&lv.vg_name, &lv.name)
                .and_then(|r| r.ok());
            push(&lv.path, dev.as_ref());
        }
        out
    }

    /// The libguestfs name of `name`: /dev/hdb2 and /dev/vdb2 are /dev/sdb2,
    /// /dev/mapper/VG-LV is /dev/VG/LV. Names of nothing in this guest are NotFound.
    pub fn canonical_name(&self, name: &str) -> Result<String> {
        let Some(rest) = name.strip_prefix("/dev/") else {
            return Err(not_found(name));
        };
        if let Some(dm) = rest.strip_prefix("mapper/") {
            if let Some((vg, lv)) = split_dm_name(dm) {
                if self.lvm.lv_device(&vg, &lv).is_some() {
                    return Ok(format!("/dev/{vg}/{lv}"));
                }
            }
            return Err(not_found(name));
        }
        for prefix in ["sd", "hd", "vd", "xvd"] {
            let Some(tail) = rest.strip_prefix(prefix) else {
                continue;
            };
            let split = tail
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(tail.len());
            let (letters, num) = tail.split_at(split);
            let Some(i) = disk_index(letters) else {
                continue;
            };
            if i >= self.disks.len() {
                return Err(not_found(name));
            }
            let canon = format!("{}{num}", disk_name(i));
            if num.is_empty() || self.parts.iter().any(|p| p.info.name == canon) {
                return Ok(canon);
            }
            return Err(not_found(name));
        }
        if let Some((vg, lv)) = rest.split_once('/') {
            if self.lvm.lv_device(vg, lv).is_some() {
                return Ok(name.to_string());
            }
        }
        Err(not_found(name))
    }

    /// The bytes of a disk, partition or LV. An LV that cannot be read gives its error
    /// (Unsupported for thin volumes and the like, NotFound for a missing PV).
    pub fn device(&self, name: &str) -> Result<Arc<dyn BlockDev>> {
        let c = self.canonical_name(name)?;
        if let Some(d) = self.disks.iter().find(|d| d.name == c) {
            return Ok(d.dev.clone());
        }
        if let Some(p) = self.parts.iter().find(|p| p.info.name == c) {
            return match (&p.dev, &p.info.error) {
                (Some(d), _) => Ok(d.clone()),
                (None, e) => Err(Error::Corrupt(e.clone().unwrap_or_else(|| c.clone()))),
            };
        }
        if let Some((vg, lv)) = c.strip_prefix("/dev/").and_then(|r| r.split_once('/')) {
            if let Some(r) = self.lvm.lv_device(vg, lv) {
                return r;
            }
        }
        Err(not_found(name))
    }

    /// Size in bytes (blockdev-getsize64, virt-filesystems --long).
    pub fn size(&self, name: &str) -> Result<u64> {
        Ok(self.device(name)?.size())
    }

    /// What blkid says about a device (vfs-type, vfs-label, vfs-uuid).
    pub fn probe(&self, name: &str) -> Result<FsInfo> {
        probe::probe(&*self.device(name)?)
    }

    /// Opens the filesystem on a device, of the kind probing finds.
    pub fn open_fs(&self, name: &str) -> Result<Arc<dyn Filesystem>> {
        let dev = self.device(name)?;
        let info = probe::probe(&*dev)?;
        if info.kind == "unknown" {
            return Err(Error::Unsupported(format!(
                "{name}: no filesystem found on this device"
            )));
        }
        crate::fs::open(dev, &info.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_names_round_trip() {
        for (i, n) in [
            (0, "a"),
            (25, "z"),
            (26, "aa"),
            (27, "ab"),
            (701, "zz"),
            (702, "aaa"),
        ] {
            assert_eq!(disk_name(i), format!("/dev/sd{n}"));
            assert_eq!(disk_index(n), Some(i));
        }
        assert_eq!(disk_index(""), None);
        assert_eq!(disk_index("aaaaa"), None);
    }

    #[test]
    fn dm_names() {
        assert_eq!(
            split_dm_name("vg-lv"),
            Some(("vg".to_string(), "lv".to_string()))
        );
        assert_eq!(
            split_dm_name("my--vg-my--lv--x"),
            Some(("my-vg".to_string(), "my-lv-x".to_string()))
        );
        assert_eq!(split_dm_name("novg"), None);
        assert_eq!(split_dm_name("-lv"), None);
    }
}
