//! OVA archives: a POSIX tar of the descriptor, the manifest and the files it references.
//!
//! Reading indexes the archive once and hands out files by name; only regular files with
//! plain names are accepted (no directories to climb out of, no links, no device nodes, no
//! name twice), so extraction cannot write outside the directory the caller chose.

use crate::descriptor::check_package_name;
use crate::error::{invalid, Error, Result};
use crate::manifest::Hasher;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// More entries than this is not an appliance.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    /// Offset of the file's data in the archive.
    pub offset: u64,
    pub size: u64,
}

pub struct Package {
    file: File,
    pub entries: Vec<Entry>,
}

impl Package {
    pub fn open(path: &Path) -> Result<Package> {
        let file = File::open(path)?;
        let archive_len = file.metadata()?.len();
        let mut ar = tar::Archive::new(BufReader::new(file.try_clone()?));
        let mut entries: Vec<Entry> = Vec::new();
        // Seeks over file data rather than reading it: indexing a 20 GiB OVA is instant.
        let iter = ar
            .entries_with_seek()
            .map_err(|e| Error::Invalid(format!("not a tar archive: {e}")))?;
        for e in iter {
            let e = e.map_err(|e| Error::Invalid(format!("bad tar entry: {e}")))?;
            let raw_name = e
                .path()
                .map_err(|e| Error::Invalid(format!("bad tar entry name: {e}")))?
                .to_string_lossy()
                .into_owned();
            let name = raw_name.strip_prefix("./").unwrap_or(&raw_name).to_string();
            let kind = e.header().entry_type();
            if kind.is_dir() && (name.is_empty() || name == "." || name == "./") {
                continue;
            }
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return invalid(format!(
                    "entry '{}' is not a regular file (type {:?}); OVA packages hold plain files only",
                    raw_name.escape_debug(),
                    kind
                ));
            }
            check_package_name(&name)?;
            let size = e.size();
            let offset = e.raw_file_position();
            if offset.checked_add(size).is_none_or(|end| end > archive_len) {
                return invalid(format!(
                    "entry '{}' claims {size} bytes past the end of the archive",
                    name.escape_debug()
                ));
            }
            if entries.iter().any(|x| x.name == name) {
                return invalid(format!("the archive holds '{}' twice", name.escape_debug()));
            }
            entries.push(Entry { name, offset, size });
            if entries.len() > MAX_ENTRIES {
                return invalid("the archive has too many entries");
            }
        }
        if entries.is_empty() {
            return invalid("the archive is empty (not an OVA package)");
        }
        Ok(Package { file, entries })
    }

    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// A small file (descriptor, manifest) read whole; refused above `max` bytes.
    pub fn read_small(&self, e: &Entry, max: u64) -> Result<Vec<u8>> {
        if e.size > max {
            return invalid(format!(
                "'{}' is {} bytes, more than the {max} allowed",
                e.name.escape_debug(),
                e.size
            ));
        }
        let mut buf = vec![0u8; e.size as usize];
        let mut f = &self.file;
        f.seek(SeekFrom::Start(e.offset))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    /// Copies an entry's data to `out`, feeding `hasher`; `progress` gets the bytes done.
    pub fn copy_to(
        &self,
        e: &Entry,
        out: &mut dyn Write,
        mut hasher: Option<&mut Hasher>,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(e.offset))?;
        let mut left = e.size;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&buf[..n]);
            }
            out.write_all(&buf[..n])?;
            left -= n as u64;
            progress(e.size - left);
        }
        Ok(())
    }
}

/// Writes an OVA: `files` (name in the package, path on disk) in the order given, as POSIX
/// ustar entries (what VirtualBox and VMware's importers read).
pub fn write(out: &mut dyn Write, files: &[(String, &Path)]) -> Result<()> {
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut b = tar::Builder::new(out);
    for (name, path) in files {
        check_package_name(name)?;
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        let mut h = tar::Header::new_ustar();
        h.set_path(name)?;
        h.set_size(len);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &mut f)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}
