//! Typed errors of the block layer. The binary adds the file name and prints them on one line.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file is not what its format promises (bad magic, field out of range, table past EOF...).
    #[error("{0}")]
    Corrupt(String),
    /// A valid image using a feature virtkit does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// The caller asked for something invalid (bad option, out-of-range offset).
    #[error("{0}")]
    Invalid(String),
    /// The image has the corrupt bit set or was opened read-only.
    #[error("{0}")]
    ReadOnly(String),
    /// An error inside another file of the chain; keeps that file's name.
    #[error("Could not open backing file: {path}: {source}")]
    Backing {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn corrupt<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Corrupt(msg.into()))
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(msg.into()))
}
