//! Shared harness for the qemu-img interoperability suite.
//!
//! * `vk(args)` runs `virtkit img ARGS` (or, with `VIRTKIT_TEST_IMG=/path/to/qemu-img`
//!   set, that program with ARGS — used to validate the suite against the oracle).
//! * `vk_link(args)` runs the binary through a symlink named `qemu-img`; returns
//!   `None` under the override so personality tests skip cleanly.
//! * `qemu_img(args)` / `qemu_io(args)` run the real tools.
//!
//! Every child runs with a timeout; a timed-out child is killed and reported.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// The oracle binaries; QEMU_IMG / QEMU_IO select another build (e.g. Debian's 7.2 unpacked
/// next to the system's 10.x) without touching /usr/bin.
pub fn qemu_img_bin() -> String {
    std::env::var("QEMU_IMG").unwrap_or_else(|_| "/usr/bin/qemu-img".into())
}
pub fn qemu_io_bin() -> String {
    std::env::var("QEMU_IO").unwrap_or_else(|_| "/usr/bin/qemu-io".into())
}

/// Default timeout for ordinary operations.
pub const TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout for operations on hostile input.
pub const HOSTILE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Out {
    pub cmdline: String,
    /// Exit code; `None` if killed by a signal (or timed out).
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Panic with full context unless the command exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.ok(),
            "command failed: {}\nexit: {:?} signal: {:?} timed_out: {}\nstdout:\n{}\nstderr:\n{}",
            self.cmdline,
            self.code,
            self.signal,
            self.timed_out,
            self.stdout,
            self.stderr
        );
        self
    }
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code for: {}\nsignal: {:?} timed_out: {}\nstdout:\n{}\nstderr:\n{}",
            self.cmdline,
            self.signal,
            self.timed_out,
            self.stdout,
            self.stderr
        );
        self
    }
    /// No panic, no signal death, no timeout.
    #[track_caller]
    pub fn assert_sane(&self) -> &Self {
        assert!(
            !self.timed_out,
            "timed out after {:?}: {}",
            self.elapsed, self.cmdline
        );
        assert!(
            self.signal.is_none(),
            "killed by signal {:?}: {}\nstderr:\n{}",
            self.signal,
            self.cmdline,
            self.stderr
        );
        assert_ne!(
            self.code,
            Some(101),
            "exit code 101 (panic?): {}\nstderr:\n{}",
            self.cmdline,
            self.stderr
        );
        assert!(
            !self.stderr.contains("panicked") && !self.stdout.contains("panicked"),
            "panic: {}\nstderr:\n{}",
            self.cmdline,
            self.stderr
        );
        assert!(
            !self.stderr.contains("RUST_BACKTRACE"),
            "panic: {}\nstderr:\n{}",
            self.cmdline,
            self.stderr
        );
        self
    }
    /// A failing command: non-zero exit, exactly one non-empty line on stderr.
    #[track_caller]
    pub fn assert_one_line_error(&self) -> &Self {
        self.assert_sane();
        assert!(
            !self.ok(),
            "expected failure but exited 0: {}\nstdout:\n{}",
            self.cmdline,
            self.stdout
        );
        self.assert_stderr_at_most_one_line();
        assert!(
            !self.stderr.trim().is_empty(),
            "failure without a message on stderr: {}",
            self.cmdline
        );
        self
    }
    #[track_caller]
    pub fn assert_stderr_at_most_one_line(&self) -> &Self {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(
            lines.len() <= 1,
            "expected at most one line on stderr from: {}\nexit: {:?}\nstderr:\n{}",
            self.cmdline,
            self.code,
            self.stderr
        );
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "bad JSON from {}: {e}\nstdout:\n{}\nstderr:\n{}",
                self.cmdline, self.stdout, self.stderr
            )
        })
    }
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Spawn `cmd` with piped stdout/stderr; wait at most `timeout`.
pub fn run_cmd(mut cmd: Command, timeout: Duration) -> Out {
    let cmdline = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmdline}: {e}"));
    let (so, se) = drain(&mut child);
    let (status, timed_out) = wait_timeout(&mut child, timeout);
    let stdout = so.join().unwrap();
    let stderr = se.join().unwrap();
    use std::os::unix::process::ExitStatusExt;
    Out {
        cmdline,
        code: status.code(),
        signal: if timed_out { None } else { status.signal() },
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        timed_out,
        elapsed: start.elapsed(),
    }
}

type Reader = std::thread::JoinHandle<Vec<u8>>;

fn drain(child: &mut Child) -> (Reader, Reader) {
    let mut o = child.stdout.take().unwrap();
    let mut e = child.stderr.take().unwrap();
    let so = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = o.read_to_end(&mut v);
        v
    });
    let se = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = e.read_to_end(&mut v);
        v
    });
    (so, se)
}

/// Poll until the child exits or the deadline passes (then SIGKILL it).
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> (std::process::ExitStatus, bool) {
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(1);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return (st, false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let st = child.wait().expect("wait after kill");
            return (st, true);
        }
        std::thread::sleep(sleep);
        sleep = (sleep * 2).min(Duration::from_millis(20));
    }
}

/// The program under test and the leading arguments that select the img personality.
pub fn vk_program() -> (PathBuf, Vec<String>) {
    match std::env::var_os("VIRTKIT_TEST_IMG") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), vec![]),
        _ => (
            PathBuf::from(env!("CARGO_BIN_EXE_virtkit")),
            vec!["img".to_string()],
        ),
    }
}

/// True when the suite runs against an override binary (e.g. the real qemu-img).
pub fn using_override() -> bool {
    std::env::var_os("VIRTKIT_TEST_IMG").is_some_and(|p| !p.is_empty())
}

pub fn vk_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let (prog, pre) = vk_program();
    let mut c = Command::new(prog);
    c.args(pre).args(args);
    c
}

/// `virtkit img ARGS`
pub fn vk<S: AsRef<OsStr>>(args: &[S]) -> Out {
    vk_t(args, TIMEOUT)
}

pub fn vk_t<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Out {
    let out = run_cmd(vk_command(args), timeout);
    out.assert_sane();
    out
}

/// Like `vk_t` but does not assert sanity (the caller inspects).
pub fn vk_raw<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> Out {
    run_cmd(vk_command(args), timeout)
}

/// Run the virtkit binary via a symlink named `qemu-img` (argv[0] personality).
/// Returns `None` when `VIRTKIT_TEST_IMG` overrides the binary.
pub fn vk_link<S: AsRef<OsStr>>(args: &[S]) -> Option<Out> {
    if using_override() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("qemu-img");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_virtkit"), &link).unwrap();
    let mut c = Command::new(&link);
    c.args(args);
    let out = run_cmd(c, TIMEOUT);
    out.assert_sane();
    Some(out)
}

pub fn qemu_img<S: AsRef<OsStr>>(args: &[S]) -> Out {
    let mut c = Command::new(qemu_img_bin());
    c.args(args);
    run_cmd(c, TIMEOUT)
}

pub fn qemu_io<S: AsRef<OsStr>>(args: &[S]) -> Out {
    let mut c = Command::new(qemu_io_bin());
    c.args(args);
    run_cmd(c, TIMEOUT)
}

/// qemu-io on an image with a list of commands (`-c` each); asserts success.
#[track_caller]
pub fn qio(fmt: &str, path: &Path, cmds: &[&str]) {
    let mut args: Vec<String> = vec!["-f".into(), fmt.into()];
    for c in cmds {
        args.push("-c".into());
        args.push((*c).into());
    }
    args.push(path.to_str().unwrap().into());
    let out = qemu_io(&args);
    out.assert_ok();
    assert!(
        !out.stdout.contains("error") && !out.stderr.contains("error"),
        "qemu-io reported an error: {}\n{}{}",
        out.cmdline,
        out.stdout,
        out.stderr
    );
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vk-test-")
        .tempdir()
        .unwrap()
}

// ---------------------------------------------------------------------------
// Deterministic pseudo-random data
// ---------------------------------------------------------------------------

/// SplitMix64: tiny, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Image-like content: a mix of random, zero, constant-filled and
/// partly-zero chunks of 4 KiB..128 KiB (512-byte aligned).
pub fn gen_data(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut v = vec![0u8; size];
    let mut pos = 0;
    while pos < size {
        let len = (((rng.below(32) + 1) * 4096) as usize).min(size - pos);
        let chunk = &mut v[pos..pos + len];
        match rng.below(8) {
            0..=2 => rng.fill(chunk),
            3 | 4 => {} // zeros
            5 => chunk.fill(rng.below(255) as u8 + 1),
            6 => {
                // random with a zero hole in the middle, sector aligned
                rng.fill(chunk);
                let a = (len / 4) & !511;
                let b = (len * 3 / 4) & !511;
                chunk[a..b].fill(0);
            }
            _ => {
                // sparse single bytes: not zero, mostly compressible
                for i in (0..len).step_by(512) {
                    chunk[i] = rng.below(256) as u8;
                }
            }
        }
        pos += len;
    }
    v
}

/// Fully random bytes (incompressible).
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    Rng::new(seed).fill(&mut v);
    v
}

/// Write `data` as a raw image; zero runs of whole 4 KiB blocks become holes.
pub fn write_raw(path: &Path, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::File::create(path).unwrap();
    for (i, chunk) in data.chunks(4096).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        f.seek(SeekFrom::Start((i * 4096) as u64)).unwrap();
        f.write_all(chunk).unwrap();
    }
    f.set_len(data.len() as u64).unwrap();
}

pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Assert two byte buffers are equal, reporting the first differing offset.
#[track_caller]
pub fn assert_bytes_eq(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want.iter()).position(|(a, b)| a != b);
    panic!(
        "{what}: content differs (len got {} want {}, first differing offset {:?})",
        got.len(),
        want.len(),
        first
    );
}

// ---------------------------------------------------------------------------
// Oracle helpers
// ---------------------------------------------------------------------------

/// `qemu-img check` exit 0 (no errors, no leaks).
#[track_caller]
pub fn qemu_check_clean(path: &Path) {
    let out = qemu_img(&["check", s(path)]);
    assert!(
        out.ok(),
        "qemu-img check {} failed with {:?}\n{}{}",
        path.display(),
        out.code,
        out.stdout,
        out.stderr
    );
}

/// `qemu-img compare` (optionally with formats) reports identical images.
#[track_caller]
pub fn qemu_compare_identical(a: &Path, fa: &str, b: &Path, fb: &str) {
    let out = qemu_img(&["compare", "-f", fa, "-F", fb, s(a), s(b)]);
    assert!(
        out.ok(),
        "qemu-img compare {} {} not identical ({:?}):\n{}{}",
        a.display(),
        b.display(),
        out.code,
        out.stdout,
        out.stderr
    );
}

pub fn qemu_info_json(path: &Path) -> Value {
    let out = qemu_img(&["info", "--output=json", "-U", s(path)]);
    out.assert_ok();
    out.json()
}

/// Convert to raw with the real qemu-img and return the bytes.
pub fn qemu_to_raw(path: &Path, fmt: &str) -> Vec<u8> {
    let dir = tmp();
    let out = dir.path().join("oracle.raw");
    qemu_img(&["convert", "-f", fmt, "-O", "raw", s(path), s(&out)]).assert_ok();
    read(&out)
}

/// Convert to raw with the tool under test and return the bytes.
pub fn vk_to_raw(path: &Path, fmt: &str) -> Vec<u8> {
    let dir = tmp();
    let out = dir.path().join("vk.raw");
    vk(&["convert", "-f", fmt, "-O", "raw", s(path), s(&out)]).assert_ok();
    read(&out)
}

/// Fields of `info --output=json` that are stable across qemu 7.2..10.x and
/// independent of host filesystem behaviour.
pub fn info_fields(v: &Value) -> Value {
    let mut m = serde_json::Map::new();
    for k in [
        "virtual-size",
        "format",
        "cluster-size",
        "backing-filename",
        "backing-filename-format",
        "full-backing-filename",
        "dirty-flag",
        "encrypted",
    ] {
        if let Some(x) = v.get(k) {
            m.insert(k.into(), x.clone());
        }
    }
    if let Some(d) = v.pointer("/format-specific/data") {
        let mut fs = serde_json::Map::new();
        for k in [
            "compat",
            "lazy-refcounts",
            "refcount-bits",
            "corrupt",
            "extended-l2",
            "compression-type",
            "data-file",
        ] {
            if let Some(x) = d.get(k) {
                fs.insert(k.into(), x.clone());
            }
        }
        m.insert("format-specific".into(), Value::Object(fs));
    }
    if let Some(snaps) = v.get("snapshots").and_then(|x| x.as_array()) {
        let list: Vec<Value> = snaps
            .iter()
            .map(|sn| {
                serde_json::json!({
                    "id": sn.get("id"),
                    "name": sn.get("name"),
                    "vm-state-size": sn.get("vm-state-size"),
                    "vm-clock-sec": sn.get("vm-clock-sec"),
                    "vm-clock-nsec": sn.get("vm-clock-nsec"),
                })
            })
            .collect();
        m.insert("snapshots".into(), Value::Array(list));
    }
    Value::Object(m)
}

/// One normalised extent of `map --output=json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub start: u64,
    pub length: u64,
    pub depth: u64,
    pub present: Option<bool>,
    pub zero: bool,
    pub data: bool,
    pub offset: Option<u64>,
}

/// Parse map JSON and merge adjacent extents with equal attributes (and
/// contiguous host offsets when `with_offsets`).
pub fn map_extents(v: &Value, with_offsets: bool) -> Vec<Extent> {
    let arr = v.as_array().expect("map output is a JSON array");
    let mut res: Vec<Extent> = Vec::new();
    for e in arr {
        let g = |k: &str| e.get(k).and_then(|x| x.as_u64());
        let b = |k: &str| e.get(k).and_then(|x| x.as_bool());
        let mut ext = Extent {
            start: g("start").expect("start"),
            length: g("length").expect("length"),
            depth: g("depth").expect("depth"),
            present: b("present"),
            zero: b("zero").expect("zero"),
            data: b("data").expect("data"),
            offset: g("offset"),
        };
        if !with_offsets {
            ext.offset = ext.offset.map(|_| 0);
        }
        if let Some(last) = res.last_mut() {
            let contiguous = match (last.offset, ext.offset) {
                (None, None) => true,
                (Some(a), Some(b)) => !with_offsets || a + last.length == b,
                _ => false,
            };
            if last.start + last.length == ext.start
                && last.depth == ext.depth
                && last.present == ext.present
                && last.zero == ext.zero
                && last.data == ext.data
                && contiguous
            {
                last.length += ext.length;
                continue;
            }
        }
        res.push(ext);
    }
    res
}

pub fn fmt_extents(v: &[Extent]) -> String {
    v.iter()
        .map(|e| {
            format!(
                "  start={:#x} len={:#x} depth={} present={:?} zero={} data={} offset={:?}",
                e.start, e.length, e.depth, e.present, e.zero, e.data, e.offset
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
pub fn assert_extents_eq(what: &str, got: &[Extent], want: &[Extent]) {
    assert!(
        got == want,
        "{what}: map differs\n got:\n{}\n want:\n{}",
        fmt_extents(got),
        fmt_extents(want)
    );
}

pub fn qemu_map(path: &Path, fmt: &str) -> Value {
    let out = qemu_img(&["map", "--output=json", "-f", fmt, s(path)]);
    out.assert_ok();
    out.json()
}

pub fn vk_map(path: &Path, fmt: &str) -> Value {
    let out = vk(&["map", "--output=json", "-f", fmt, s(path)]);
    out.assert_ok();
    out.json()
}

/// Bytes mapped as data at depth 0 in `map` output.
pub fn top_data_bytes(v: &Value) -> u64 {
    map_extents(v, false)
        .iter()
        .filter(|e| e.depth == 0 && e.data)
        .map(|e| e.length)
        .sum()
}

/// SHA-like fingerprint is not needed; compare whole files.
pub fn file_snapshot(path: &Path) -> Vec<u8> {
    read(path)
}

// ---------------------------------------------------------------------------
// Big-endian field manipulation for crafted images
// ---------------------------------------------------------------------------

pub fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes(b[off..off + 2].try_into().unwrap())
}
pub fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().unwrap())
}
pub fn put_be16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_be_bytes());
}
pub fn put_be32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}
pub fn put_be64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

/// Offsets of qcow2 header fields (docs/interop/qcow2.txt).
pub mod hdr {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 4;
    pub const BACKING_FILE_OFFSET: usize = 8;
    pub const BACKING_FILE_SIZE: usize = 16;
    pub const CLUSTER_BITS: usize = 20;
    pub const SIZE: usize = 24;
    pub const CRYPT_METHOD: usize = 32;
    pub const L1_SIZE: usize = 36;
    pub const L1_TABLE_OFFSET: usize = 40;
    pub const REFCOUNT_TABLE_OFFSET: usize = 48;
    pub const REFCOUNT_TABLE_CLUSTERS: usize = 56;
    pub const NB_SNAPSHOTS: usize = 60;
    pub const SNAPSHOTS_OFFSET: usize = 64;
    pub const INCOMPATIBLE_FEATURES: usize = 72;
    pub const COMPATIBLE_FEATURES: usize = 80;
    pub const AUTOCLEAR_FEATURES: usize = 88;
    pub const REFCOUNT_ORDER: usize = 96;
    pub const HEADER_LENGTH: usize = 100;
    pub const COMPRESSION_TYPE: usize = 104;
}

/// (major, minor) of the oracle qemu-img, asked once per test binary; suites branch on it
/// where qemu-img 7.2 and 10.x print or behave differently.
pub fn qemu_version() -> (u32, u32) {
    static V: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        let out = qemu_img(&["--version"]);
        let v = out
            .stdout
            .split_whitespace()
            .nth(2)
            .expect("qemu-img --version prints a version")
            .to_string();
        let mut it = v.split('.').map(|x| x.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    })
}

pub fn qemu_major() -> u32 {
    qemu_version().0
}

pub fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
pub fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
pub fn put_le32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub fn put_le64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads through virtkit and qemu-img agree, and so do their maps (host offsets included).
#[track_caller]
pub fn same_read_and_map(path: &Path, fmt: &str) {
    let v = vk_to_raw(path, fmt);
    let q = qemu_to_raw(path, fmt);
    assert_bytes_eq(&format!("read {}", path.display()), &v, &q);
    let vm = map_extents(&vk_map(path, fmt), true);
    let qm = map_extents(&qemu_map(path, fmt), true);
    assert_extents_eq(&format!("map {}", path.display()), &vm, &qm);
}

/// Spawns `virtkit img ARGS`, SIGKILLs it after `delay`; whether it was still running then
/// (the crash tests of every writable format).
pub fn kill_after<S: AsRef<OsStr>>(args: &[S], delay: Duration) -> bool {
    let mut cmd = vk_command(args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
    running
}
