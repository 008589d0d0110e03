//! Shared by the filesystem reader tests: walk a `Filesystem` and a host directory into the
//! same shape, run the real tools, make deterministic file contents.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use virtkit_guest::fs::{FileType, Filesystem, Stat};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
    Other(FileType),
}

/// Everything under the root: "/a/b" -> (stat, content). Bounded (depth and entries) so a
/// broken reader fails the test instead of hanging it.
pub fn walk(fs: &dyn Filesystem) -> BTreeMap<String, (Stat, Content)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), fs.root(), 0)];
    while let Some((path, ino, depth)) = stack.pop() {
        assert!(depth < 64, "{path}: too deep");
        for e in fs
            .read_dir(ino)
            .unwrap_or_else(|e| panic!("read_dir {path}: {e}"))
        {
            let name = String::from_utf8(e.name.clone()).expect("utf-8 name");
            let p = format!("{path}/{name}");
            let st = fs
                .stat(e.ino)
                .unwrap_or_else(|err| panic!("stat {p}: {err}"));
            assert_eq!(st.kind, e.kind, "{p}: kind in the directory and in stat");
            assert_eq!(st.ino, e.ino);
            let c = match st.kind {
                FileType::Directory => {
                    stack.push((p.clone(), e.ino, depth + 1));
                    Content::Dir
                }
                FileType::Regular => Content::File(read_all(fs, e.ino, st.size)),
                FileType::Symlink => Content::Link(fs.readlink(e.ino).unwrap()),
                k => Content::Other(k),
            };
            assert!(out.insert(p.clone(), (st, c)).is_none(), "{p} listed twice");
            assert!(out.len() < 100_000);
        }
    }
    out
}

/// Reads a whole file in odd-sized chunks (crossing cluster and extent boundaries).
pub fn read_all(fs: &dyn Filesystem, ino: u64, size: u64) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = vec![0u8; 70_001];
    loop {
        let n = fs.read(ino, data.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        assert!(data.len() as u64 <= size, "read past the size");
    }
    assert_eq!(data.len() as u64, size, "short read");
    data
}

/// The host tree in the same shape (symlinks not followed).
pub fn host_tree(root: &Path) -> BTreeMap<String, (std::fs::Metadata, Content)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((path, dir)) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = format!("{path}/{}", e.file_name().to_str().unwrap());
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let ft = md.file_type();
            let c = if ft.is_dir() {
                stack.push((p.clone(), e.path()));
                Content::Dir
            } else if ft.is_file() {
                Content::File(std::fs::read(e.path()).unwrap())
            } else if ft.is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                Content::Link(
                    std::fs::read_link(e.path())
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if ft.is_fifo() {
                Content::Other(FileType::Fifo)
            } else if ft.is_char_device() {
                Content::Other(FileType::CharDevice)
            } else if ft.is_block_device() {
                Content::Other(FileType::BlockDevice)
            } else {
                Content::Other(FileType::Socket)
            };
            out.insert(p, (md, c));
        }
    }
    out
}

/// Same paths, kinds and contents (files byte for byte, symlink targets).
pub fn assert_same_content<A, B>(
    ours: &BTreeMap<String, (A, Content)>,
    host: &BTreeMap<String, (B, Content)>,
) {
    let a: Vec<&String> = ours.keys().collect();
    let b: Vec<&String> = host.keys().collect();
    assert_eq!(a, b, "paths differ");
    for (p, (_, c)) in ours {
        assert!(&host[p].1 == c, "{p}: content differs");
    }
}

pub fn mode_of(md: &std::fs::Metadata) -> u32 {
    md.mode()
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough for data tests.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Deterministic byte flips over a region, for "corrupt anywhere, never panic" sweeps.
pub fn mutations(seed: u64, n: usize, len: usize) -> Vec<(usize, u8)> {
    let r = random_bytes(n * 8, seed);
    r.chunks(8)
        .map(|c| {
            let v = u64::from_le_bytes(c.try_into().unwrap());
            ((v as usize >> 8) % len, c[0] | 1)
        })
        .collect()
}

/// Walks whatever a (possibly corrupt) filesystem shows, with bounded work; errors are
/// fine, panics and hangs are not.
pub fn walk_hostile(fs: &dyn Filesystem) {
    let _ = fs.info();
    let _ = fs.statfs();
    let mut stack = vec![(fs.root(), 0)];
    let mut seen = 0;
    let mut buf = vec![0u8; 8192];
    while let Some((ino, depth)) = stack.pop() {
        let _ = fs.stat(ino);
        let Ok(entries) = fs.read_dir(ino) else {
            continue;
        };
        for e in entries.into_iter().take(64) {
            seen += 1;
            if seen > 2000 || depth > 16 {
                return;
            }
            let _ = fs.stat(e.ino);
            let _ = fs.readlink(e.ino);
            let _ = fs.read(e.ino, 0, &mut buf);
            let _ = fs.read(e.ino, 100_000, &mut buf);
            if e.kind == FileType::Directory {
                stack.push((e.ino, depth + 1));
            }
        }
    }
}
