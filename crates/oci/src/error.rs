//! The runtime's error type. Each layer (cgroups, seccomp, image) has its own typed error;
//! this one wraps them and adds the runtime's own cases.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("{0}")]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error("{0}")]
    Image(#[from] crate::image::ImageError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("container does not exist")]
    NotExist(String),
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;
