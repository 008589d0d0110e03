//! OVF manifests (`.mf`): one `ALGO(file)= hexdigest` line per file of the package.

use crate::error::{invalid, Result};
use sha1::Digest;

/// Longest manifest accepted (a line per file; real ones are a few hundred bytes).
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
            Algo::Sha512 => "SHA512",
        }
    }
    fn from_name(s: &str) -> Option<Algo> {
        match s {
            "SHA1" => Some(Algo::Sha1),
            "SHA256" => Some(Algo::Sha256),
            "SHA512" => Some(Algo::Sha512),
            _ => None,
        }
    }
    fn digest_len(self) -> usize {
        match self {
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub algo: Algo,
    pub file: String,
    /// Lower-case hex digest.
    pub digest: String,
}

/// Parses a manifest. Blank lines are skipped; anything else must be a well-formed entry.
pub fn parse(text: &str) -> Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            invalid(format!(
                "manifest line {}: expected 'ALGO(file)= digest'",
                n + 1
            ))
        };
        let Some(open) = line.find('(') else {
            return bad();
        };
        let Some(close) = line.rfind(")=") else {
            return bad();
        };
        if close <= open {
            return bad();
        }
        let algo_name = &line[..open];
        let Some(algo) = Algo::from_name(algo_name) else {
            return invalid(format!(
                "manifest line {}: unsupported digest '{}' (SHA1, SHA256 or SHA512)",
                n + 1,
                algo_name.escape_debug()
            ));
        };
        let file = &line[open + 1..close];
        let digest = line[close + 2..].trim().to_ascii_lowercase();
        if digest.len() != 2 * algo.digest_len() || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(format!(
                "manifest line {}: '{}' is not a {} digest",
                n + 1,
                digest.escape_debug(),
                algo.name()
            ));
        }
        if out.iter().any(|e| e.file == file) {
            return invalid(format!("manifest lists '{}' twice", file.escape_debug()));
        }
        out.push(Entry {
            algo,
            file: file.to_string(),
            digest,
        });
    }
    Ok(out)
}

/// Writes a manifest in the form VMware's ovftool and VirtualBox write ("SHA1(f)= hex").
pub fn write(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}({})= {}\n", e.algo.name(), e.file, e.digest))
        .collect()
}

/// A running digest of one of the manifest algorithms.
pub enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }
    pub fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Digest of a whole file.
pub fn hash_file(path: &std::path::Path, algo: Algo) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::new(algo);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_spacings_and_round_trips() {
        let m = "SHA1(a.ovf)= da39a3ee5e6b4b0d3255bfef95601890afd80709\r\n\
                 SHA256(disk1.vmdk)=E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855\n";
        let e = parse(m).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].algo, Algo::Sha256);
        assert_eq!(e[1].file, "disk1.vmdk");
        assert!(e[1].digest.starts_with("e3b0c442"));
        assert_eq!(parse(&write(&e)).unwrap(), e);
    }

    #[test]
    fn empty_input_digests() {
        let mut h = Hasher::new(Algo::Sha256);
        h.update(b"");
        assert_eq!(
            h.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = Hasher::new(Algo::Sha1);
        h.update(b"abc");
        assert_eq!(h.hex(), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "MD5(a)= 00",
            "SHA1(a)= xyz",
            "SHA1 a = da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "SHA1(a)= da39a3ee5e6b4b0d3255bfef95601890afd8070",
            "SHA1(a)= da39a3ee5e6b4b0d3255bfef95601890afd80709\nSHA1(a)= da39a3ee5e6b4b0d3255bfef95601890afd80709",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
