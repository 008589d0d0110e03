//! A streaming tar reader for layer tars and image archives.
//!
//! Written by hand rather than with the `tar` crate because every byte here is hostile: the
//! crate reads GNU long names and PAX headers of any size into memory, and its raw mode (where we
//! could bound them ourselves) no longer applies a PAX `size`. Here every extended header is
//! capped, GNU sparse files and multi-volume archives are refused, PAX `size`/`uid`/`gid`/
//! `mtime`/`path`/`linkpath` and `SCHILY.xattr.*` are honoured, and entry data is streamed.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

const BLOCK: u64 = 512;

/// Bounds on the metadata of one entry.
#[derive(Clone, Debug)]
pub struct TarLimits {
    /// Longest path or link target (bytes), from any source (header, GNU long name, PAX).
    pub max_path: usize,
    /// Largest PAX extended header or GNU long name/link member.
    pub max_ext_header: u64,
    /// Most extended attributes on one entry.
    pub max_xattrs: usize,
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits {
            max_path: 4096,
            max_ext_header: 1 << 20,
            max_xattrs: 128,
        }
    }
}

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    HardLink,
    Symlink,
    Char,
    Block,
    Dir,
    Fifo,
    /// A type flag this reader does not know (the entry's data is skipped).
    Other(u8),
}

/// One member's metadata; its data is read from the [`TarReader`] itself.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    /// Target of a symlink or hard link (empty otherwise).
    pub link: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch and nanoseconds.
    pub mtime: (i64, u32),
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Offset of the entry's first header (extended headers included) in the stream.
    pub header_offset: u64,
    /// Offset of the entry's data in the stream.
    pub data_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("at offset {offset}: {msg}")]
    Format { offset: u64, msg: String },
    #[error("at offset {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

/// Where the archive comes from: anything readable, with a way to skip data.
pub trait TarInput: Read {
    fn skip(&mut self, n: u64) -> io::Result<()>;
}

/// A plain stream: skipping reads and discards.
pub struct Stream<R>(pub R);

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R: Read> TarInput for Stream<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.0).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside an entry",
            ));
        }
        Ok(())
    }
}

/// A seekable file: skipping seeks (archives of many GiB are indexed without reading them).
pub struct Seekable {
    file: File,
    len: u64,
}

impl Seekable {
    /// Reads from the start of `file`.
    pub fn new(mut file: File) -> io::Result<Seekable> {
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(0))?;
        Ok(Seekable { file, len })
    }
}

impl Read for Seekable {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

impl TarInput for Seekable {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let pos = self.file.stream_position()?;
        let end = pos
            .checked_add(n)
            .filter(|e| *e <= self.len)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "archive ends inside an entry")
            })?;
        self.file.seek(SeekFrom::Start(end))?;
        Ok(())
    }
}

/// PAX keys this reader applies (global ones too).
#[derive(Default, Clone)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
    uid: Option<u64>,
    gid: Option<u64>,
    mtime: Option<(i64, u32)>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub struct TarReader<R: TarInput> {
    inner: R,
    limits: TarLimits,
    /// Bytes consumed from `inner`.
    pos: u64,
    /// Data of the current entry not read yet, and the padding after it.
    remaining: u64,
    padding: u64,
    global: Pax,
    done: bool,
}

impl<R: TarInput> TarReader<R> {
    pub fn new(inner: R, limits: TarLimits) -> Self {
        TarReader {
            inner,
            limits,
            pos: 0,
            remaining: 0,
            padding: 0,
            global: Pax::default(),
            done: false,
        }
    }

    /// Bytes consumed from the input so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fmt_err(&self, msg: impl Into<String>) -> TarError {
        TarError::Format {
            offset: self.pos,
            msg: msg.into(),
        }
    }

    fn io_err(&self, source: io::Error) -> TarError {
        TarError::Io {
            offset: self.pos,
            source,
        }
    }

    fn skip_rest(&mut self) -> Result<(), TarError> {
        let n = self.remaining + self.padding;
        if n > 0 {
            self.inner.skip(n).map_err(|e| self.io_err(e))?;
            self.pos += n;
        }
        self.remaining = 0;
        self.padding = 0;
        Ok(())
    }

    /// Reads one 512-byte block; `None` at a clean end of input.
    fn read_block(&mut self) -> Result<Option<[u8; 512]>, TarError> {
        let mut b = [0u8; 512];
        let mut got = 0;
        while got < b.len() {
            match self.inner.read(&mut b[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        if got == 0 {
            return Ok(None);
        }
        if got < b.len() {
            return Err(self.fmt_err("archive ends inside a header block"));
        }
        self.pos += BLOCK;
        Ok(Some(b))
    }

    /// Reads the whole data of an extended-header member (bounded).
    fn read_member(&mut self, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > self.limits.max_ext_header {
            return Err(self.fmt_err(format!(
                "{what} of {size} bytes (limit {})",
                self.limits.max_ext_header
            )));
        }
        let mut v = Vec::with_capacity(size as usize);
        let got = (&mut self.inner)
            .take(size)
            .read_to_end(&mut v)
            .map_err(|e| self.io_err(e))?;
        self.pos += got as u64;
        if (got as u64) < size {
            return Err(self.fmt_err(format!("archive ends inside a {what}")));
        }
        let pad = padding(size);
        self.inner.skip(pad).map_err(|e| self.io_err(e))?;
        self.pos += pad;
        Ok(v)
    }

    /// The next member (extended headers folded in), or `None` at the end of the archive.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        if self.done {
            return Ok(None);
        }
        self.skip_rest()?;
        let header_offset = self.pos;
        let mut local = Pax::default();
        let mut have_local = false;
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let Some(h) = self.read_block()? else {
                // No end-of-archive blocks: accepted (as GNU tar does) only between members.
                if have_local || long_name.is_some() || long_link.is_some() {
                    return Err(self.fmt_err("archive ends after an extended header"));
                }
                self.done = true;
                return Ok(None);
            };
            if h.iter().all(|b| *b == 0) {
                if have_local || long_name.is_some() || long_link.is_some() {
                    return Err(self.fmt_err("end of archive after an extended header"));
                }
                self.done = true;
                return Ok(None);
            }
            self.check_sum(&h)?;
            let typ = h[156];
            let size = self.numeric(&h[124..136], "size")?;
            match typ {
                b'x' => {
                    if have_local {
                        return Err(self.fmt_err("two PAX headers for one member"));
                    }
                    let data = self.read_member(size, "PAX header")?;
                    self.parse_pax(&data, &mut local)?;
                    have_local = true;
                }
                b'g' => {
                    let data = self.read_member(size, "PAX global header")?;
                    let mut g = std::mem::take(&mut self.global);
                    let r = self.parse_pax(&data, &mut g);
                    self.global = g;
                    r?;
                }
                b'L' | b'K' => {
                    let what = if typ == b'L' {
                        "GNU long name"
                    } else {
                        "GNU long link"
                    };
                    let slot = if typ == b'L' { &long_name } else { &long_link };
                    if slot.is_some() {
                        return Err(self.fmt_err(format!("two {what} members for one member")));
                    }
                    let mut data = self.read_member(size, what)?;
                    if let Some(nul) = data.iter().position(|b| *b == 0) {
                        data.truncate(nul);
                    }
                    self.check_path_len(&data)?;
                    if typ == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                }
                b'S' => return Err(self.fmt_err("GNU sparse files are not supported")),
                b'M' => return Err(self.fmt_err("multi-volume archives are not supported")),
                b'N' => return Err(self.fmt_err("old GNU long names are not supported")),
                b'V' => {
                    // A volume label: no member.
                    self.remaining = size;
                    self.padding = padding(size);
                    self.skip_rest()?;
                }
                _ => {
                    return self
                        .member(&h, typ, size, header_offset, local, long_name, long_link)
                        .map(Some)
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn member(
        &mut self,
        h: &[u8; 512],
        typ: u8,
        header_size: u64,
        header_offset: u64,
        local: Pax,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, TarError> {
        let magic = &h[257..265];
        let ustar = &magic[..6] == b"ustar\0";
        let gnu = magic == b"ustar  \0";
        let mut path = cstr(&h[0..100]).to_vec();
        if ustar && !gnu {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
        }
        let mut link = cstr(&h[157..257]).to_vec();
        if let Some(n) = long_name {
            path = n;
        }
        if let Some(l) = long_link {
            link = l;
        }
        let mode = self.numeric(&h[100..108], "mode")?;
        let mut uid = self.numeric(&h[108..116], "uid")?;
        let mut gid = self.numeric(&h[116..124], "gid")?;
        let mut mtime = (self.signed(&h[136..148], "mtime")?, 0u32);
        let (mut dev_major, mut dev_minor) = (0, 0);
        if ustar || gnu {
            dev_major = self.numeric(&h[329..337], "devmajor")?;
            dev_minor = self.numeric(&h[337..345], "devminor")?;
        }
        let mut size = header_size;
        let mut xattrs = Vec::new();
        // Global values first, local ones override.
        for pax in [&self.global.clone(), &local] {
            if let Some(p) = &pax.path {
                path = p.clone();
            }
            if let Some(l) = &pax.linkpath {
                link = l.clone();
            }
            if let Some(s) = pax.size {
                size = s;
            }
            if let Some(u) = pax.uid {
                uid = u;
            }
            if let Some(g) = pax.gid {
                gid = g;
            }
            if let Some(t) = pax.mtime {
                mtime = t;
            }
            for (k, v) in &pax.xattrs {
                xattrs.retain(|(n, _): &(Vec<u8>, Vec<u8>)| n != k);
                xattrs.push((k.clone(), v.clone()));
            }
        }
        if xattrs.len() > self.limits.max_xattrs {
            return Err(self.fmt_err(format!(
                "{} extended attributes on one member (limit {})",
                xattrs.len(),
                self.limits.max_xattrs
            )));
        }
        self.check_path_len(&path)?;
        self.check_path_len(&link)?;
        let mut kind = match typ {
            b'0' | 0 | b'7' => Kind::File,
            b'1' => Kind::HardLink,
            b'2' => Kind::Symlink,
            b'3' => Kind::Char,
            b'4' => Kind::Block,
            b'5' => Kind::Dir,
            b'6' => Kind::Fifo,
            o => Kind::Other(o),
        };
        // Pre-POSIX archives mark directories by a trailing slash only.
        if kind == Kind::File && path.last() == Some(&b'/') {
            kind = Kind::Dir;
        }
        // Only regular files (and unknown types, which are skipped) carry data; a size on a
        // link or directory header is ignored by tar too, but it still occupies the archive.
        self.remaining = size;
        self.padding = padding(size);
        let to_u32 = |v: u64, what: &str| {
            u32::try_from(v).map_err(|_| self.fmt_err(format!("{what} {v} out of range")))
        };
        Ok(Entry {
            path,
            link,
            kind,
            mode: to_u32(mode, "mode")?,
            uid,
            gid,
            mtime,
            size,
            dev_major: to_u32(dev_major, "devmajor")?,
            dev_minor: to_u32(dev_minor, "devminor")?,
            xattrs,
            header_offset,
            data_offset: self.pos,
        })
    }

    fn check_path_len(&self, p: &[u8]) -> Result<(), TarError> {
        if p.len() > self.limits.max_path {
            return Err(self.fmt_err(format!(
                "path of {} bytes (limit {})",
                p.len(),
                self.limits.max_path
            )));
        }
        Ok(())
    }

    fn check_sum(&self, h: &[u8; 512]) -> Result<(), TarError> {
        let want = self.numeric(&h[148..156], "checksum")?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, b) in h.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { *b };
            unsigned += b as u64;
            signed += (b as i8) as i64;
        }
        if want != unsigned && want as i64 != signed {
            return Err(self.fmt_err("header checksum mismatch (not a tar archive?)"));
        }
        Ok(())
    }

    /// An octal or base-256 number field (unsigned).
    fn numeric(&self, f: &[u8], what: &str) -> Result<u64, TarError> {
        parse_numeric(f).ok_or_else(|| self.fmt_err(format!("bad {what} field")))
    }

    fn signed(&self, f: &[u8], what: &str) -> Result<i64, TarError> {
        if f.first() == Some(&0xff) && f.len() <= 12 {
            // Negative base-256 (times before 1970): two's complement over the field.
            let mut v: i128 = 0;
            for b in f {
                v = v * 256 + *b as i128;
            }
            v -= 1i128 << (8 * f.len());
            return i64::try_from(v).map_err(|_| self.fmt_err(format!("{what} out of range")));
        }
        let v = self.numeric(f, what)?;
        i64::try_from(v).map_err(|_| self.fmt_err(format!("{what} out of range")))
    }

    fn parse_pax(&self, data: &[u8], into: &mut Pax) -> Result<(), TarError> {
        let mut rest = data;
        while !rest.is_empty() {
            // "<len> <key>=<value>\n", len counting the whole record.
            let sp = rest
                .iter()
                .position(|b| *b == b' ')
                .filter(|p| *p > 0 && *p <= 20)
                .ok_or_else(|| self.fmt_err("bad PAX record length"))?;
            let len: usize = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse().ok())
                .filter(|l| *l > sp + 1 && *l <= rest.len())
                .ok_or_else(|| self.fmt_err("bad PAX record length"))?;
            let rec = &rest[sp + 1..len];
            rest = &rest[len..];
            let Some(rec) = rec.strip_suffix(b"\n") else {
                return Err(self.fmt_err("PAX record without newline"));
            };
            let eq = rec
                .iter()
                .position(|b| *b == b'=')
                .ok_or_else(|| self.fmt_err("PAX record without '='"))?;
            let (key, value) = (&rec[..eq], &rec[eq + 1..]);
            let num = |what: &str| -> Result<Option<u64>, TarError> {
                if value.is_empty() {
                    return Ok(None);
                }
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .map(Some)
                    .ok_or_else(|| self.fmt_err(format!("bad PAX {what}")))
            };
            match key {
                b"path" => {
                    self.check_path_len(value)?;
                    into.path = (!value.is_empty()).then(|| value.to_vec());
                }
                b"linkpath" => {
                    self.check_path_len(value)?;
                    into.linkpath = (!value.is_empty()).then(|| value.to_vec());
                }
                b"size" => into.size = num("size")?,
                b"uid" => into.uid = num("uid")?,
                b"gid" => into.gid = num("gid")?,
                b"mtime" => {
                    into.mtime = if value.is_empty() {
                        None
                    } else {
                        Some(parse_pax_time(value).ok_or_else(|| self.fmt_err("bad PAX mtime"))?)
                    }
                }
                k if k.starts_with(b"GNU.sparse.") => {
                    return Err(self.fmt_err("GNU sparse files are not supported"))
                }
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = &k[b"SCHILY.xattr.".len()..];
                    if name.is_empty() || name.contains(&0) || name.len() > 255 {
                        return Err(self.fmt_err("bad extended attribute name"));
                    }
                    into.xattrs.retain(|(n, _)| n != name);
                    if into.xattrs.len() >= self.limits.max_xattrs {
                        return Err(self.fmt_err(format!(
                            "more than {} extended attributes on one member",
                            self.limits.max_xattrs
                        )));
                    }
                    into.xattrs.push((name.to_vec(), value.to_vec()));
                }
                // atime, ctime, uname, gname, comment, charset, hdrcharset,
                // LIBARCHIVE.*, SCHILY.acl.* ...: not applied.
                _ => {}
            }
        }
        Ok(())
    }
}

impl<R: TarInput> Read for TarReader<R> {
    /// Reads the current entry's data; 0 at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside a member's data",
            ));
        }
        self.remaining -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// The bytes of a NUL-terminated field.
fn cstr(f: &[u8]) -> &[u8] {
    match f.iter().position(|b| *b == 0) {
        Some(n) => &f[..n],
        None => f,
    }
}

/// An unsigned numeric header field: octal (spaces or NULs around it) or GNU base-256.
pub fn parse_numeric(f: &[u8]) -> Option<u64> {
    if f.first().is_some_and(|b| b & 0x80 != 0) {
        if f[0] != 0x80 {
            return None; // negative
        }
        let mut v: u64 = 0;
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(v);
    }
    let s = cstr(f);
    let s = s.trim_ascii();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

/// A PAX time: decimal seconds, optional fraction, optional leading '-'.
fn parse_pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: u32 = 0;
    for (i, b) in frac.bytes().take(9).enumerate() {
        nanos += (b - b'0') as u32 * 10u32.pow(8 - i as u32);
    }
    if neg {
        // -1.5 is 1.5 seconds before the epoch: (-2, 0.5e9).
        if nanos > 0 {
            Some((-secs - 1, 1_000_000_000 - nanos))
        } else {
            Some((-secs, 0))
        }
    } else {
        Some((secs, nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_numeric(b"0000644\0"), Some(0o644));
        assert_eq!(parse_numeric(b"  755 \0"), Some(0o755));
        assert_eq!(parse_numeric(b"\0\0\0"), Some(0));
        assert_eq!(parse_numeric(b"12389"), None);
        assert_eq!(
            parse_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
        assert_eq!(parse_numeric(&[0xff, 0xff]), None);
        assert_eq!(parse_numeric(&[0x80; 12]), None);
        assert_eq!(
            parse_pax_time(b"1700000000.5"),
            Some((1700000000, 500_000_000))
        );
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
