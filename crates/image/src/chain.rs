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

/// How one layer is opened (what every format's `open` receives).
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenCtx {
    pub writable: bool,
    /// Opened to be checked: leave metadata as found (no dirty-image repair, no log replay
    /// that `check` should report first).
    pub for_check: bool,
}

/// One opened layer and the backing file its metadata names (not yet opened).
pub struct Opened {
    pub image: Box<dyn BlockDriver>,
    /// As stored in the image; relative names are resolved with [`resolve_backing`].
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

/// A format's test of a file's first bytes.
type Probe = fn(&[u8], &Path) -> bool;

/// Format of a file from its first bytes (raw when no format claims them).
pub fn probe(path: &Path) -> Result<Format> {
    let f = File::open(path)?;
    let len = crate::fileio::file_len(&f)?;
    let mut b = [0u8; 512];
    let n = len.min(512) as usize;
    crate::fileio::read_full(&f, &mut b[..n], 0)?;
    let head = &b[..n];
    if n >= 4 && u32::from_be_bytes([b[0], b[1], b[2], b[3]]) == crate::qcow2::header::MAGIC {
        return Ok(Format::Qcow2);
    }
    let probes: [(Format, Probe); 6] = [
        (Format::Vmdk, crate::vmdk::probe),
        (Format::Vdi, crate::vdi::probe),
        (Format::Vpc, crate::vpc::probe),
        (Format::Vhdx, crate::vhdx::probe),
        (Format::Qed, crate::qed::probe),
        (Format::Parallels, crate::parallels::probe),
    ];
    Ok(probes
        .iter()
        .find(|(_, p)| p(head, path))
        .map(|(f, _)| *f)
        .unwrap_or(Format::Raw))
}

/// Opens one layer of `format` without its backing file.
pub fn open_layer(path: &Path, format: Format, o: &OpenCtx) -> Result<Opened> {
    let plain = |image: Box<dyn BlockDriver>| Opened {
        image,
        backing_file: None,
        backing_format: None,
    };
    match format {
        Format::Raw => Ok(plain(Box::new(Raw::open(path, o.writable)?))),
        Format::Qcow2 => {
            let q = Qcow2::open_with(path, o.writable, o.for_check)?;
            Ok(Opened {
                image: Box::new(q.image),
                backing_file: q.backing_file,
                backing_format: q.backing_format,
            })
        }
        Format::Vmdk => crate::vmdk::open(path, o),
        Format::Vdi => crate::vdi::open(path, o),
        Format::Vpc => crate::vpc::open(path, o),
        Format::Vhdx => crate::vhdx::open(path, o),
        Format::Qed => crate::qed::open(path, o),
        Format::Parallels => crate::parallels::open(path, o),
    }
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
    let ctx = OpenCtx {
        writable,
        for_check: depth == 0 && o.for_check,
    };
    let opened = open_layer(path, format, &ctx)?;
    let mut img = opened.image;
    if let (Some(bf), false) = (opened.backing_file, o.no_backing) {
        let bpath = resolve_backing(path, &bf);
        let bfmt = match opened.backing_format.as_deref() {
            None | Some("") => None,
            Some(name) => Some(Format::from_name(name).ok_or_else(|| {
                Error::Unsupported(format!("Unknown backing file format '{name}'"))
            })?),
        };
        let b =
            open_inner(&bpath, o, bfmt, false, seen, depth + 1).map_err(|e| Error::Backing {
                path: bpath.clone(),
                source: Box::new(e),
            })?;
        img.set_backing(Some(b));
    }
    Ok(img)
}
