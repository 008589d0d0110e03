//! virtkit-guest: read a guest's disks directly, in-process, with every byte treated as hostile.
//!
//! Layers, bottom up: [`dev`] (byte devices: an image from virtkit-image, a slice of one, an
//! LVM logical volume), partition tables, LVM2, filesystems behind the [`fs::Filesystem`]
//! trait, and the guest's mounted tree. Never prints, never exits.

pub mod dev;
pub mod error;
pub mod fs;
pub mod guest;
pub mod inspect;
pub mod lvm;
pub mod mounts;
pub mod part;
pub mod probe;

pub use dev::{BlockDev, ImageDev, Slice};
pub use error::{Error, Result};
pub use fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs, Timespec};
pub use guest::{Guest, PartInfo};
pub use lvm::{LvInfo, PvInfo, SegInfo, VgInfo};
pub use part::{Guid, PartTable, Partition, TableKind};
