//! Typed errors of OVF/OVA handling. The binary adds context and prints them on one line.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The package or descriptor is malformed or lies (bad XML, missing file, hash mismatch).
    #[error("{0}")]
    Invalid(String),
    /// Valid OVF using something virtkit does not handle.
    #[error("{0}")]
    Unsupported(String),
    /// An error of the block layer while converting a disk.
    #[error("{0}")]
    Image(#[from] virtkit_image::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}
