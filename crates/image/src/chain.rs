//! Opening an image with its backing chain: format probing, backing paths resolved as QEMU
//! does, and loops refused.

use crate::driver::{BlockDriver, Format};
use crate::error::{Error, Result};
use crate::qcow2::Qcow2;
use crate::raw::Raw;
use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Chains deeper than this are refused rather than followed (a loop through differently
/// spelled paths cannot escape detection this way either).
pub const MAX_CHAIN_DEPTH: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    pub format: Option<Format>,
    pub writable: bool,
    /// Do not open the backing file (qemu-img's -U/unsafe paths, info without chain).
    pub no_backing: bool,
    /// Opened to be checked: a dirty image is not repaired on open (check reports it).
    pub for_check: bool,
}

/// Format of a file from its first bytes (qcow2 magic or raw).
pub fn probe(path: &Path) -> Result<Format> {
    let f = File::open(path)?;
    let mut b = [0u8; 4];
    crate::fileio::read_full(&f, &mut b, 0)?;
    Ok(if u32::from_be_bytes(b) == crate::qcow2::header::MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// QEMU's path_combine: a relative backing name is relative to the image's directory.
pub fn resolve_backing(image: &Path, backing: &str) -> PathBuf {
    let b = Path::new(backing);
    if b.is_absolute() {
        return b.to_path_buf();
    }
    match image.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(b),
        _ => b.to_path_buf(),
    }
}

pub fn open(path: &Path, o: &OpenOptions) -> Result<Box<dyn BlockDriver>> {
    let mut seen = HashSet::new();
    open_inner(path, o, o.format, o.writable, &mut seen, 0)
}

fn open_inner(
    path: &Path,
    o: &OpenOptions,
    format: Option<Format>,
    writable: bool,
    seen: &mut HashSet<PathBuf>,
    depth: usize,
) -> Result<Box<dyn BlockDriver>> {
    if depth > MAX_CHAIN_DEPTH {
        return Err(Error::Invalid("Backing chain is too deep".into()));
    }
    let canon = std::fs::canonicalize(path)?;
    if !seen.insert(canon) {
        return Err(Error::Invalid(format!(
            "Backing file loop: '{}' appears twice in the chain",
            path.display()
        )));
    }
    let format = match format {
        Some(f) => f,
        None => probe(path)?,
    };
    match format {
        Format::Raw => Ok(Box::new(Raw::open(path, writable)?)),
        Format::Qcow2 => {
            let opened = Qcow2::open_with(path, writable, depth == 0 && o.for_check)?;
            let mut img = opened.image;
            if let (Some(bf), false) = (opened.backing_file, o.no_backing) {
                let bpath = resolve_backing(path, &bf);
                let bfmt = match opened.backing_format.as_deref() {
                    None | Some("") => None,
                    Some(name) => Some(Format::from_name(name).ok_or_else(|| {
                        Error::Unsupported(format!("Unknown backing file format '{name}'"))
                    })?),
                };
                let b = open_inner(&bpath, o, bfmt, false, seen, depth + 1).map_err(|e| {
                    Error::Backing {
                        path: bpath.clone(),
                        source: Box::new(e),
                    }
                })?;
                img.set_backing(Some(b));
            }
            Ok(Box::new(img))
        }
    }
}
