//! virtkit-image: the block layer. Disk images read and written exactly as QEMU does, behind
//! one driver trait, with positional I/O usable from several threads. Never prints, never exits.

pub mod chain;
pub mod convert;
pub mod create;
pub mod driver;
pub mod error;
pub mod fileio;
pub mod info;
pub mod map;
pub mod parallels;
pub mod qcow2;
pub mod qed;
pub mod raw;
pub mod size;
pub mod vdi;
pub mod vhdx;
pub mod vmdk;
pub mod vpc;

pub mod commit;
pub mod measure;
mod parallel;
pub mod qnum;
pub mod rebase;

pub use chain::{open, OpenOptions};
pub use driver::{Alloc, BlockDriver, CheckReport, Format, Preallocation, Repair, Status};
pub use error::{Error, Result};
