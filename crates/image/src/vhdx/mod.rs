//! vhdx images (not implemented yet: open and create report "unsupported").

pub mod create;

use crate::chain::{OpenCtx, Opened};
use crate::error::{Error, Result};
use std::path::Path;

/// Whether the file's first bytes (at most 512, fewer for shorter files) are a vhdx image.
pub fn probe(_head: &[u8], _path: &Path) -> bool {
    false
}

pub fn open(_path: &Path, _o: &OpenCtx) -> Result<Opened> {
    Err(Error::Unsupported(
        "The 'vhdx' format is not supported yet".into(),
    ))
}
