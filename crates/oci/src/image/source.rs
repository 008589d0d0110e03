//! Where image blobs come from: a directory (OCI image layout, or an unpacked docker-archive)
//! or a tar archive of either, read in place. An archive is indexed once (member name ->
//! offset and size, seeking over the data) and members are then read with positioned reads,
//! so multi-GiB `docker save` files are never copied or extracted.
//!
//! Member names come from untrusted manifests: they are normalized lexically and may not
//! leave the source (no `..` above the top, and in a directory no symlink leading outside).

use super::tar_reader::{Kind, Seekable, TarLimits, TarReader};
use super::ImageError;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Most members indexed in an archive, and their total name bytes.
const MAX_MEMBERS: usize = 1 << 20;
const MAX_NAME_BYTES: usize = 256 << 20;
/// Symlinks followed for one name.
const MAX_HOPS: usize = 16;

enum Member {
    File { offset: u64, size: u64 },
    HardLink(String),
    Symlink(Vec<u8>),
}

enum Kind2 {
    Dir(OwnedFd),
    Tar {
        file: File,
        members: HashMap<String, Member>,
    },
}

pub(crate) struct Source {
    kind: Kind2,
    /// The source path, for messages.
    pub label: String,
}

/// Lexically normalized member name (`./a//b/../c` -> `a/c`), `None` when it leaves the top
/// or names the top itself.
pub(crate) fn normalize_name(name: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(name).ok()?;
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

impl Source {
    pub fn open(path: &Path) -> Result<Source, ImageError> {
        let io_err = |source: io::Error| ImageError::Io {
            path: path.to_path_buf(),
            source,
        };
        let label = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(io_err)?;
        if meta.is_dir() {
            let fd = rustix::fs::open(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err(e.into()))?;
            return Ok(Source {
                kind: Kind2::Dir(fd),
                label,
            });
        }
        let mut file = File::open(path).map_err(io_err)?;
        let mut magic = [0u8; 512];
        let n = read_full(&mut file, &mut magic).map_err(io_err)?;
        let magic = &magic[..n];
        if magic.starts_with(&[0x1f, 0x8b]) || magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(ImageError::Invalid(format!(
                "{label}: a compressed archive; decompress it first (gunzip / unzstd): image \
                 archives are read in place, which needs random access"
            )));
        }
        if !looks_like_tar(magic) {
            return Err(ImageError::Invalid(format!(
                "{label}: neither a directory nor a tar archive (docker-archive or OCI layout)"
            )));
        }
        let file2 = file.try_clone().map_err(io_err)?;
        let members = index_tar(file2, &label)?;
        Ok(Source {
            kind: Kind2::Tar { file, members },
            label,
        })
    }

    fn blob_name(&self, name: &str) -> String {
        format!("{name} in {}", self.label)
    }

    fn err(&self, name: &str, msg: impl Into<String>) -> ImageError {
        ImageError::Blob {
            blob: self.blob_name(name),
            msg: msg.into(),
        }
    }

    /// Whether a member (regular file, possibly through links) exists.
    pub fn exists(&self, name: &str) -> bool {
        self.open_member(name).is_ok()
    }

    /// Opens a member for streaming; returns the reader and the member's size.
    pub fn open_member(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64), ImageError> {
        let norm = normalize_name(name.as_bytes())
            .ok_or_else(|| self.err(name, "member name leaves the image"))?;
        match &self.kind {
            Kind2::Dir(dir) => {
                let fd = rustix::fs::openat2(
                    dir,
                    norm.as_str(),
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|e| self.err(name, io::Error::from(e).to_string()))?;
                let file = File::from(fd);
                let meta = file.metadata().map_err(|e| self.err(name, e.to_string()))?;
                if !meta.is_file() {
                    return Err(self.err(name, "not a regular file"));
                }
                Ok((Box::new(file), meta.len()))
            }
            Kind2::Tar { file, members } => {
                let mut cur = norm;
                for _ in 0..MAX_HOPS {
                    match members.get(&cur) {
                        None => return Err(self.err(name, "no such member in the archive")),
                        Some(Member::File { offset, size }) => {
                            return Ok((
                                Box::new(MemberReader {
                                    file,
                                    pos: *offset,
                                    end: offset + size,
                                }),
                                *size,
                            ))
                        }
                        Some(Member::HardLink(t)) => cur = t.clone(),
                        Some(Member::Symlink(t)) => {
                            let mut joined = if t.first() == Some(&b'/') {
                                Vec::new()
                            } else {
                                match cur.rfind('/') {
                                    Some(i) => cur.as_bytes()[..i + 1].to_vec(),
                                    None => Vec::new(),
                                }
                            };
                            joined.extend_from_slice(t);
                            cur = normalize_name(&joined).ok_or_else(|| {
                                self.err(name, "symlink in the archive leads outside it")
                            })?;
                        }
                    }
                }
                Err(self.err(name, "too many links in the archive"))
            }
        }
    }

    /// Reads a whole (small) member, refusing more than `limit` bytes.
    pub fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let (r, size) = self.open_member(name)?;
        if size > limit {
            return Err(self.err(name, format!("{size} bytes, more than the {limit} allowed")));
        }
        let mut v = Vec::with_capacity(size as usize);
        r.take(limit + 1)
            .read_to_end(&mut v)
            .map_err(|e| self.err(name, e.to_string()))?;
        if v.len() as u64 > limit {
            return Err(self.err(name, format!("more than the {limit} bytes allowed")));
        }
        Ok(v)
    }

    /// Message label of a member.
    pub fn describe(&self, name: &str) -> String {
        self.blob_name(name)
    }
}

/// A first block with a valid header checksum.
fn looks_like_tar(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    let Some(want) = super::tar_reader::parse_numeric(&block[148..156]) else {
        return false;
    };
    let sum: u64 = block[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u64
            }
        })
        .sum();
    sum == want
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Indexes a tar archive: regular files by offset, links by target. Later members replace
/// earlier ones of the same name, as extraction would.
fn index_tar(file: File, label: &str) -> Result<HashMap<String, Member>, ImageError> {
    let input = Seekable::new(file).map_err(|source| ImageError::Io {
        path: PathBuf::from(label),
        source,
    })?;
    let mut tar = TarReader::new(input, TarLimits::default());
    let mut members = HashMap::new();
    let mut name_bytes = 0usize;
    let tar_err = |source| ImageError::Tar {
        blob: label.to_string(),
        source,
    };
    while let Some(e) = tar.next_entry().map_err(tar_err)? {
        let Some(name) = normalize_name(&e.path) else {
            continue;
        };
        let m = match e.kind {
            Kind::File => Member::File {
                offset: e.data_offset,
                size: e.size,
            },
            Kind::HardLink => match normalize_name(&e.link) {
                Some(t) => Member::HardLink(t),
                None => continue,
            },
            Kind::Symlink => Member::Symlink(e.link.clone()),
            _ => continue,
        };
        name_bytes += name.len() + e.link.len();
        if members.len() >= MAX_MEMBERS || name_bytes > MAX_NAME_BYTES {
            return Err(ImageError::Invalid(format!(
                "{label}: more than {MAX_MEMBERS} members or {MAX_NAME_BYTES} bytes of names"
            )));
        }
        members.insert(name, m);
    }
    Ok(members)
}

/// Positioned reads of one archive member (several can be open at once).
struct MemberReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for MemberReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member truncated",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_name;

    #[test]
    fn names() {
        assert_eq!(normalize_name(b"./a//b/../c").as_deref(), Some("a/c"));
        assert_eq!(
            normalize_name(b"/blobs/sha256/x").as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(normalize_name(b"../x"), None);
        assert_eq!(normalize_name(b"a/../../x"), None);
        assert_eq!(normalize_name(b"./"), None);
    }
}
