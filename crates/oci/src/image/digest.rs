//! Content digests: validation of `sha256:<hex>` strings (they become file names in blob
//! directories and in the layer store, so nothing else may pass) and hashing readers that
//! verify blobs while they stream.

use sha2::{Digest as _, Sha256};
use std::io::{self, Read};

/// A validated `sha256:` digest (64 lower-case hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(String);

impl Sha256Digest {
    /// Parses `sha256:<64 lower-case hex>`. Other algorithms are refused: every blob we read
    /// must be verifiable.
    pub fn parse(s: &str) -> Result<Self, String> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {s:?}: only sha256 digests are supported"))?;
        Self::from_hex(hex).ok_or_else(|| format!("digest {s:?}: not 64 lower-case hex digits"))
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| Sha256Digest(hex.to_string()))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    /// Digest of some bytes.
    pub fn of(data: &[u8]) -> Self {
        Sha256Digest(hex(&Sha256::digest(data)))
    }
}

impl std::fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The digest of everything read so far, and the byte count.
    pub fn finish(self) -> (Sha256Digest, u64) {
        (Sha256Digest(hex(&self.hasher.finalize())), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_hash() {
        let d = Sha256Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Sha256Digest::parse(&d.to_string()), Ok(d));
        assert!(Sha256Digest::parse("sha512:00").is_err());
        assert!(Sha256Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Sha256Digest::parse(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        )
        .is_err());
    }
}
