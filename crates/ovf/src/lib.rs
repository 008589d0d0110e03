//! virtkit-ovf: OVF 1.x/2.x descriptors, manifests and OVA archives (DMTF DSP0243), and the
//! import/export of their disks through the virtkit block layer. Never prints, never exits.

pub mod archive;
pub mod descriptor;
pub mod error;
pub mod export;
pub mod import;
pub mod manifest;

pub use error::{Error, Result};
