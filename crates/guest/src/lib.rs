//! virtkit-guest: read a guest's disks directly, in-process, with every byte treated as hostile.
//!
//! Layers, bottom up: [`dev`] (byte devices: an image from virtkit-image, a slice of one, an
//! LVM logical volume), partition tables, LVM2, filesystems behind the [`fs::Filesystem`]
//! trait, and the guest's mounted tree. Never prints, never exits.

pub mod dev;
pub mod error;
pub mod fs;
pub mod inspect;
pub mod mounts;

pub use dev::{BlockDev, ImageDev, Slice};
pub use error::{Error, Result};
pub use fs::{DirEntry, FileType, Filesystem, FsInfo, Ino, Stat, StatFs, Timespec};
