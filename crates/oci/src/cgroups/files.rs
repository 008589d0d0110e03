//! One cgroup directory's files, behind a trait: the resource logic (v1.rs, v2.rs, devices.rs)
//! only ever talks to a `CgroupDir`, so it can be pointed at an in-memory fake (`MemDir`, used by
//! the unit tests and the fuzz target) instead of the host's cgroupfs (`Dir`).
//!
//! Cgroup files are kernel interfaces: each value must go in with one write(2) (the kernel parses
//! per write), files are never created (a missing file means a missing controller or knob), and
//! reads are bounded because a cgroup file is still untrusted input.

use super::CgroupError;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Longest cgroup file we read: memory.stat is a few KiB, cgroup.procs of a huge container a few
/// MiB; anything beyond this is not a cgroup file.
pub const MAX_READ: u64 = 16 << 20;

/// A cgroup directory: files read and written by name (a plain file name, never a path).
pub trait CgroupDir {
    /// Where it is, for messages (and for `Dir`, the real location).
    fn path(&self) -> &Path;
    /// The directory itself exists (a rootless container may not have been able to create it).
    fn is_present(&self) -> bool;
    fn read(&self, file: &str) -> io::Result<String>;
    /// One write(2) of `value` into the existing file `file`.
    fn write(&self, file: &str, value: &str) -> io::Result<()>;
    fn exists(&self, file: &str) -> bool;
    /// Attaches a BPF_PROG_TYPE_CGROUP_DEVICE program to this (v2) cgroup, replacing the
    /// program(s) attached before.
    fn attach_device_program(&self, prog: &[super::devices::Insn]) -> Result<(), CgroupError>;
}

/// Reads `file`, with the error naming the file.
pub fn read(dir: &dyn CgroupDir, file: &str) -> Result<String, CgroupError> {
    dir.read(file).map_err(|source| CgroupError::Io {
        op: "reading",
        path: dir.path().join(file),
        source,
    })
}

/// Reads `file` when it exists: `Ok(None)` for a missing file (a knob this kernel does not have).
pub fn read_opt(dir: &dyn CgroupDir, file: &str) -> Result<Option<String>, CgroupError> {
    match dir.read(file) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ENODEV: the controller went away under us (v1 hierarchies report it for files of
        // an unmounted subsystem).
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(source) => Err(CgroupError::Io {
            op: "reading",
            path: dir.path().join(file),
            source,
        }),
    }
}

/// Writes `value` into `file`, with the error naming both.
pub fn write(dir: &dyn CgroupDir, file: &str, value: &str) -> Result<(), CgroupError> {
    dir.write(file, value).map_err(|source| CgroupError::Write {
        path: dir.path().join(file),
        value: value.to_string(),
        source,
    })
}

/// A file name as the kernel takes it in a cgroup directory: one component.
pub fn check_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= 255
}

/// A real cgroup directory.
#[derive(Clone, Debug)]
pub struct Dir {
    path: PathBuf,
}

impl Dir {
    pub fn new(path: impl Into<PathBuf>) -> Dir {
        Dir { path: path.into() }
    }

    fn file(&self, file: &str) -> io::Result<PathBuf> {
        if !check_file_name(file) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{file:?} is not a cgroup file name"),
            ));
        }
        Ok(self.path.join(file))
    }
}

impl CgroupDir for Dir {
    fn path(&self) -> &Path {
        &self.path
    }

    fn is_present(&self) -> bool {
        self.path.is_dir()
    }

    fn read(&self, file: &str) -> io::Result<String> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.file(file)?)?;
        let mut buf = Vec::new();
        f.take(MAX_READ).read_to_end(&mut buf)?;
        String::from_utf8(buf).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "the content is not UTF-8 text")
        })
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(self.file(file)?)?;
        // One write(2): the kernel takes one value per write; a short write is an error.
        let n = f.write(value.as_bytes())?;
        if n != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write ({n} of {} bytes)", value.len()),
            ));
        }
        Ok(())
    }

    fn exists(&self, file: &str) -> bool {
        self.file(file).map(|p| p.exists()).unwrap_or(false)
    }

    fn attach_device_program(&self, prog: &[super::devices::Insn]) -> Result<(), CgroupError> {
        super::devices::bpf::attach(&self.path, prog)
    }
}

/// An in-memory cgroup directory: the files it has (name -> content) and the log of every
/// write, in order. Writes replace the content (cgroupfs would interpret them; tests look at
/// the log). A file missing from the map behaves as a missing knob (ENOENT); names listed in
/// `failing` fail with the given errno, to test error paths.
#[derive(Debug, Default)]
pub struct MemDir {
    pub path: PathBuf,
    pub present: bool,
    pub files: RefCell<BTreeMap<String, String>>,
    pub writes: RefCell<Vec<(String, String)>>,
    pub failing: BTreeMap<String, i32>,
    pub device_programs: RefCell<Vec<Vec<super::devices::Insn>>>,
}

impl MemDir {
    /// A present directory at `path` holding `files` (name, content).
    pub fn new(path: &str, files: &[(&str, &str)]) -> MemDir {
        MemDir {
            path: PathBuf::from(path),
            present: true,
            files: RefCell::new(
                files
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..MemDir::default()
        }
    }

    /// The values written to `file`, in order.
    pub fn written(&self, file: &str) -> Vec<String> {
        self.writes
            .borrow()
            .iter()
            .filter(|(f, _)| f == file)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl CgroupDir for MemDir {
    fn path(&self) -> &Path {
        &self.path
    }

    fn is_present(&self) -> bool {
        self.present
    }

    fn read(&self, file: &str) -> io::Result<String> {
        if let Some(e) = self.failing.get(file) {
            return Err(io::Error::from_raw_os_error(*e));
        }
        self.files
            .borrow()
            .get(file)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        if !check_file_name(file) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if let Some(e) = self.failing.get(file) {
            return Err(io::Error::from_raw_os_error(*e));
        }
        let mut files = self.files.borrow_mut();
        let Some(content) = files.get_mut(file) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        *content = format!("{value}\n");
        self.writes
            .borrow_mut()
            .push((file.to_string(), value.to_string()));
        Ok(())
    }

    fn exists(&self, file: &str) -> bool {
        self.files.borrow().contains_key(file)
    }

    fn attach_device_program(&self, prog: &[super::devices::Insn]) -> Result<(), CgroupError> {
        self.device_programs.borrow_mut().push(prog.to_vec());
        Ok(())
    }
}
