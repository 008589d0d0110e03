//! virt-cat, and the file checksums guestfs_checksum computes (also for virt-ls --checksum
//! and guestfish's checksum).

use super::{api_err, parse, Common, COMMON_LONG};
use crate::getopt::Spec;
use sha1::Digest;
use std::io::Write;
use virtkit_guest::fs::FileType;
use virtkit_guest::mounts::{Mounts, Node};
use virtkit_guest::{Error, Result};

const USAGE: &str = "virt-cat: display files in a virtual machine
Usage:
  virt-cat [--options] -d domname file [file ...]
  virt-cat [--options] -a disk.img [-a disk.img ...] file [file ...]
Options:
  -a|--add image       Add image
  --format[=raw|..]    Force disk format for -a option
  --help               Display brief help
  -m|--mount dev[:mnt[:opts[:fstype]]]
                       Mount dev on mnt (if omitted, /)
  -V|--version         Display version and exit
For more information, see the manpage virt-cat(1).
";

pub fn run(prog: &str, args: &[String]) -> std::result::Result<i32, String> {
    let spec = Spec {
        short: "a:c:d:m:vVx",
        long: COMMON_LONG,
    };
    let mut c = Common::default();
    let Some(mut files) = parse(prog, &spec, args, &mut c, USAGE, &mut |_| Ok(false))? else {
        return Ok(0);
    };
    // Old-style syntax: disks, then the files (a word with a '/' that exists on the host
    // is a disk).
    if c.drives.is_empty() {
        while files.len() > 1 && std::path::Path::new(&files[0]).exists() {
            let d = files.remove(0);
            c.drives.push((d.into(), None));
        }
    }
    if files.is_empty() {
        return Err(format!("Try ‘{prog} --help’ for more information."));
    }
    c.need_drives(prog)?;
    let g = c.launch()?;
    let m = c.mount(prog, &g, true)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut errors = 0;
    for f in &files {
        if let Err(e) = download(&m, f, &mut out) {
            let _ = out.flush();
            eprintln!("{}", api_err("download", &e));
            errors += 1;
        }
    }
    out.flush()
        .map_err(|e| format!("{prog}: write error: {e}"))?;
    Ok(if errors == 0 { 0 } else { 1 })
}

/// Streams a regular file to `out` (guestfs_download).
pub fn download(m: &Mounts, path: &str, out: &mut dyn Write) -> Result<()> {
    let n = m.resolve(path, true)?;
    stream(m, n, path, &mut |b| out.write_all(b).map_err(Error::Io))
}

/// Feeds the content of a regular file node to `sink` in bounded chunks.
pub fn stream(
    m: &Mounts,
    n: Node,
    path: &str,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let st = m.stat_node(n)?;
    match st.kind {
        FileType::Regular => {}
        FileType::Directory => return Err(Error::IsDir(path.to_string())),
        _ => return Err(Error::Invalid(format!("{path}: not a regular file"))),
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < st.size {
        let want = ((st.size - off) as usize).min(buf.len());
        let got = m.read_node(n, off, &mut buf[..want])?;
        if got == 0 {
            break;
        }
        sink(&buf[..got])?;
        off += got as u64;
    }
    Ok(())
}

/// The checksum types guestfs_checksum knows.
pub fn checksum_kind(k: &str) -> Result<()> {
    match k {
        "crc" | "md5" | "sha1" | "sha224" | "sha256" | "sha384" | "sha512" => Ok(()),
        _ => Err(Error::Invalid(
            "unknown checksum type, expecting crc|md5|sha1|sha224|sha256|sha384|sha512".into(),
        )),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// guestfs_checksum: the hex digest, or for "crc" the POSIX cksum value.
pub fn checksum_node(m: &Mounts, n: Node, kind: &str) -> Result<String> {
    checksum_kind(kind)?;
    macro_rules! digest {
        ($h:expr) => {{
            let mut h = $h;
            stream(m, n, "file", &mut |b| {
                h.update(b);
                Ok(())
            })?;
            hex(&h.finalize())
        }};
    }
    Ok(match kind {
        "md5" => digest!(md5::Md5::new()),
        "sha1" => digest!(sha1::Sha1::new()),
        "sha224" => digest!(sha2::Sha224::new()),
        "sha256" => digest!(sha2::Sha256::new()),
        "sha384" => digest!(sha2::Sha384::new()),
        "sha512" => digest!(sha2::Sha512::new()),
        _ => {
            let mut c = Cksum::default();
            stream(m, n, "file", &mut |b| {
                c.update(b);
                Ok(())
            })?;
            c.finish().to_string()
        }
    })
}

/// POSIX `cksum` (CRC-32 with polynomial 0x04c11db7, MSB first, the length appended).
/// No crate computes this variant; it is a table and a loop.
#[derive(Default)]
pub struct Cksum {
    crc: u32,
    len: u64,
}

fn cksum_table() -> &'static [u32; 256] {
    static T: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = (i as u32) << 24;
            for _ in 0..8 {
                c = if c & 0x8000_0000 != 0 {
                    (c << 1) ^ 0x04c1_1db7
                } else {
                    c << 1
                };
            }
            *e = c;
        }
        t
    })
}

impl Cksum {
    pub fn update(&mut self, b: &[u8]) {
        let t = cksum_table();
        for &x in b {
            self.crc = (self.crc << 8) ^ t[((self.crc >> 24) as u8 ^ x) as usize];
        }
        self.len += b.len() as u64;
    }
    pub fn finish(mut self) -> u32 {
        let t = cksum_table();
        let mut n = self.len;
        while n != 0 {
            self.crc = (self.crc << 8) ^ t[((self.crc >> 24) as u8 ^ n as u8) as usize];
            n >>= 8;
        }
        !self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cksum_matches_coreutils() {
        // printf 'hello\n' | cksum  ->  3015617425 6
        let mut c = Cksum::default();
        c.update(b"hello\n");
        assert_eq!(c.finish(), 3_015_617_425);
        assert_eq!(Cksum::default().finish(), 4_294_967_295);
    }
}
