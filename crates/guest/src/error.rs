//! Typed errors. Messages name the device or path and the problem, so the binary can print
//! them as one line after its own prefix.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Image(#[from] virtkit_image::Error),
    /// On-disk structures that contradict themselves or point outside their device.
    #[error("{0}")]
    Corrupt(String),
    /// A valid structure this reader does not handle (a feature flag, thin LVM, ...).
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}: No such file or directory")]
    NotFound(String),
    #[error("{0}: Not a directory")]
    NotDir(String),
    #[error("{0}: Is a directory")]
    IsDir(String),
    #[error("{0}: Too many levels of symbolic links")]
    Loop(String),
    /// A bad request from the caller (an unknown device name, a relative path, ...).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `Err(Error::Corrupt(msg))`, for the many checks of on-disk fields.
pub fn corrupt<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::Corrupt(msg.into()))
}
